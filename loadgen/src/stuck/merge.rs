//! The stuck-reader report: the rounds, the server's RSS over them, the server's counters
//! (after minus before), what the live user got (during the floods and overall) and the time
//! series.

use std::collections::{BTreeMap, HashSet};

use super::report::{LiveSummary, RoundSummary, RssSummary, StuckReport, StuckSeries};
use super::round::BIN;
use super::watch::Live;
use super::Stuck;
use crate::hist;
use crate::rawws;

/// Server counters compared before and after: `(report key, metric, label)`.
const METRICS: &[(&str, &str, &str)] = &[
    (
        "closed_4009",
        "ws_connections_closed_total",
        "code=\"4009\"",
    ),
    (
        "dropped_slow_consumer",
        "ws_messages_dropped_total",
        "reason=\"slow_consumer\"",
    ),
    (
        "dropped_no_session",
        "ws_messages_dropped_total",
        "reason=\"no_session\"",
    ),
    ("dropped_total", "ws_messages_dropped_total", ""),
    ("forwarded", "ws_messages_forwarded_total", ""),
    ("broker_reconnects", "ws_broker_reconnects_total", ""),
];

/// Builds the report of a finished run from its `rounds` and the metrics scraped around them.
pub(super) fn report(
    stuck: Stuck,
    rounds: Vec<RoundSummary>,
    metrics_before: &str,
    metrics_after: &str,
) -> anyhow::Result<StuckReport> {
    let live = stuck.live.borrow();
    let published = stuck.live_published.borrow();
    Ok(StuckReport {
        label: stuck.cfg.label.clone(),
        config: stuck.cfg.echo(),
        rss: rss_summary(&rounds),
        rounds,
        server_metrics: metric_deltas(metrics_before, metrics_after),
        live: live_summary(&live, &published, &stuck.flood_windows)?,
        series: series(&stuck, &live),
        events: stuck.events.clone(),
    })
}

/// The server's RSS: baseline (before round 1's flood), peak, and after each round.
fn rss_summary(rounds: &[RoundSummary]) -> RssSummary {
    let baseline = rounds.first().map_or(0, |r| r.rss_before_kb);
    let after = rounds.last().map_or(baseline, |r| r.rss_after_kb);
    let peak = rounds.iter().map(|r| r.rss_peak_kb).max().unwrap_or(after);
    RssSummary {
        baseline_kb: baseline,
        peak_kb: peak,
        after_kb: after,
        peak_over_baseline_kb: peak as i64 - baseline as i64,
        after_over_baseline_kb: after as i64 - baseline as i64,
        back_near_baseline: after <= baseline + (baseline / 10).max(2048),
        after_each_round_kb: rounds.iter().map(|r| r.rss_after_kb).collect(),
    }
}

/// Each of `METRICS`: after minus before.
fn metric_deltas(before: &str, after: &str) -> BTreeMap<String, f64> {
    METRICS
        .iter()
        .map(|(key, name, label)| {
            let delta = rawws::metric(after, name, label) - rawws::metric(before, name, label);
            ((*key).to_owned(), delta)
        })
        .collect()
}

/// What the live user got: distinct messages, those published during a flood, and latency.
fn live_summary(
    live: &Live,
    published: &[(u64, f64)],
    flood_windows: &[(f64, f64)],
) -> anyhow::Result<LiveSummary> {
    let in_flood = |t: f64| flood_windows.iter().any(|(a, b)| t >= *a && t <= *b);
    let flood_seqs: HashSet<u64> = published
        .iter()
        .filter(|(_, t)| in_flood(*t))
        .map(|(s, _)| *s)
        .collect();
    let mut all = hist::precise()?;
    let mut during = hist::precise()?;
    let mut seen = HashSet::new();
    let mut received_during = 0;
    for &(seq, _, lat) in live.received.iter().filter(|r| r.0 > 0) {
        all.saturating_record(lat);
        if seen.insert(seq) && flood_seqs.contains(&seq) {
            during.saturating_record(lat);
            received_during += 1;
        }
    }
    Ok(LiveSummary {
        published: published.len() as u64,
        received: seen.len() as u64,
        published_during_flood: flood_seqs.len() as u64,
        received_during_flood: received_during,
        latency_during_flood: hist::percentiles(&during),
        latency: hist::percentiles(&all),
        closed: live.closed.clone(),
    })
}

/// The time series in `BIN` intervals: RSS, live deliveries, flood publishes, live latency.
fn series(stuck: &Stuck, live: &Live) -> StuckSeries {
    let bin_s = BIN.as_secs_f64();
    let mut live_bins: BTreeMap<u64, u64> = BTreeMap::new();
    let mut live_lat: BTreeMap<u64, Vec<u64>> = BTreeMap::new();
    for &(_, at_us, lat) in live.received.iter() {
        let bin = at_us.saturating_sub(stuck.epoch_us) / BIN.as_micros() as u64;
        *live_bins.entry(bin).or_default() += 1;
        live_lat.entry(bin).or_default().push(lat);
    }
    for v in live_lat.values_mut() {
        v.sort_unstable();
    }
    let lat_point = |pick: fn(&[u64]) -> u64| -> Vec<(f64, f64)> {
        live_lat
            .iter()
            .map(|(&b, v)| (b as f64 * bin_s + bin_s / 2.0, pick(v) as f64 / 1000.0))
            .collect()
    };
    let per_s = |bins: &BTreeMap<u64, u64>| -> Vec<(f64, f64)> {
        bins.iter()
            .map(|(&b, &n)| (b as f64 * bin_s, n as f64 / bin_s))
            .collect()
    };
    StuckSeries {
        server_rss_mb: stuck
            .rss
            .borrow()
            .iter()
            .map(|&(t, kb)| (t, (kb as f64 / 1024.0 * 10.0).round() / 10.0))
            .collect(),
        live_delivered_per_s: per_s(&live_bins),
        flood_published_per_s: per_s(&stuck.flood_bins),
        live_latency_p50_ms: lat_point(|v| v[v.len() / 2]),
        live_latency_max_ms: lat_point(|v| v[v.len() - 1]),
    }
}
