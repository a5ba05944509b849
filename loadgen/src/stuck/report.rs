//! The report of `loadgen stuck-reader` (what `bench/` commits) and its one-screen text
//! summary.

use std::collections::BTreeMap;

use serde::Serialize;

use crate::hist::Percentiles;
use crate::procfs::CpuUsage;
use crate::rawws::FrameScan;

/// The report of a stuck-reader run.
#[derive(Debug, Default, Serialize)]
pub struct StuckReport {
    /// Scenario name.
    pub label: String,
    /// Options.
    pub config: BTreeMap<String, serde_json::Value>,
    /// Server memory.
    pub rss: RssSummary,
    /// Each round: a fresh stuck socket, a flood, a settle.
    pub rounds: Vec<RoundSummary>,
    /// Counters from the server's /metrics (after minus before).
    pub server_metrics: BTreeMap<String, f64>,
    /// The live user.
    pub live: LiveSummary,
    /// Time series.
    pub series: StuckSeries,
    /// Phase boundaries, seconds since start.
    pub events: Vec<(String, f64)>,
}

/// Server memory (VmRSS, KiB).
#[derive(Debug, Default, Serialize)]
pub struct RssSummary {
    /// Before the flood (both sockets open).
    pub baseline_kb: u64,
    /// Largest sample during flood and settle.
    pub peak_kb: u64,
    /// At the end of the settle.
    pub after_kb: u64,
    /// `peak - baseline`.
    pub peak_over_baseline_kb: i64,
    /// `after - baseline`.
    pub after_over_baseline_kb: i64,
    /// `after <= baseline + max(10 % of baseline, 2048 KiB)`.
    pub back_near_baseline: bool,
    /// RSS at the end of each round's settle: flat from round to round means memory is reused
    /// (allocator caches, buffer capacity), growing means it leaks.
    pub after_each_round_kb: Vec<u64>,
}

/// One round.
#[derive(Debug, Default, Serialize)]
pub struct RoundSummary {
    /// 1-based.
    pub round: usize,
    /// Before the flood, KiB.
    pub rss_before_kb: u64,
    /// Largest sample from the flood to the end of the settle, KiB.
    pub rss_peak_kb: u64,
    /// At the end of the settle, KiB.
    pub rss_after_kb: u64,
    /// The flood.
    pub flood: FloodSummary,
    /// What the stuck client found when it read again (`--read-after-s` after the flood).
    pub stuck_socket: FrameScan,
    /// CPU from the flood's start to the end of the settle, % of one core.
    pub cpu: CpuUsage,
}

/// The flood.
#[derive(Debug, Default, Serialize)]
pub struct FloodSummary {
    /// Messages published.
    pub messages: u64,
    /// Payload size.
    pub payload_bytes: usize,
    /// Publishing time, seconds.
    pub seconds: f64,
    /// Messages/s.
    pub per_s: f64,
    /// PUBLISHes that had a subscriber (the server still held the channel).
    pub reached_server: u64,
    /// PUBLISHes that had none (the server had unsubscribed after closing the socket).
    pub to_nobody: u64,
    /// Flood start → first PUBLISH with no subscriber, seconds.
    pub unsubscribed_after_s: Option<f64>,
}

/// The live user.
#[derive(Debug, Default, Serialize)]
pub struct LiveSummary {
    /// Messages published to it.
    pub published: u64,
    /// Distinct messages received.
    pub received: u64,
    /// Published during the flood.
    pub published_during_flood: u64,
    /// Of those, received.
    pub received_during_flood: u64,
    /// Latency of the messages published during the flood.
    pub latency_during_flood: Percentiles,
    /// Latency of every message.
    pub latency: Percentiles,
    /// Close of the live socket, if it was closed.
    pub closed: Option<String>,
}

/// Time series (`BIN` intervals).
#[derive(Debug, Default, Serialize)]
pub struct StuckSeries {
    /// Server RSS `(s, MiB)`.
    pub server_rss_mb: Vec<(f64, f64)>,
    /// Live deliveries per second `(s, n/s)`.
    pub live_delivered_per_s: Vec<(f64, f64)>,
    /// Flood messages published per second `(s, n/s)`.
    pub flood_published_per_s: Vec<(f64, f64)>,
    /// Live latency per interval: median `(s, ms)`.
    pub live_latency_p50_ms: Vec<(f64, f64)>,
    /// Live latency per interval: maximum `(s, ms)`.
    pub live_latency_max_ms: Vec<(f64, f64)>,
}

/// The one-screen text summary of `r`.
pub(super) fn summary(r: &StuckReport) -> String {
    let mut s = format!(
        "== {} ==\nserver RSS: baseline {} KiB, peak {} KiB (+{}), after the last settle {} KiB (+{}), after each round {:?}, back near baseline: {}\n",
        r.label,
        r.rss.baseline_kb,
        r.rss.peak_kb,
        r.rss.peak_over_baseline_kb,
        r.rss.after_kb,
        r.rss.after_over_baseline_kb,
        r.rss.after_each_round_kb,
        r.rss.back_near_baseline,
    );
    for round in &r.rounds {
        let (f, k) = (&round.flood, &round.stuck_socket);
        s += &format!(
            "round {}: flood {} x {} B in {:.2}s = {:.0}/s; {} reached the server, {} nobody (unsubscribed after {:?} s); RSS {} -> peak {} -> {} KiB; stuck client read {} bytes, {} text frames, close code {:?}, ended by {}\n",
            round.round,
            f.messages,
            f.payload_bytes,
            f.seconds,
            f.per_s,
            f.reached_server,
            f.to_nobody,
            f.unsubscribed_after_s,
            round.rss_before_kb,
            round.rss_peak_kb,
            round.rss_after_kb,
            k.bytes,
            k.text_frames,
            k.close_code,
            k.end,
        );
        s += &format!(
            "  cpu (% of one core): {:?}, other processes ~{:.0}\n",
            round.cpu.processes, round.cpu.other_processes
        );
    }
    s += &format!(
        "server metrics (delta): {:?}\nlive user: {} published, {} received; during the floods {} / {}, latency p50 {:.3} ms p99 {:.3} ms max {:.3} ms; closed {:?}\n",
        r.server_metrics,
        r.live.published,
        r.live.received,
        r.live.received_during_flood,
        r.live.published_during_flood,
        r.live.latency_during_flood.p50_ms,
        r.live.latency_during_flood.p99_ms,
        r.live.latency_during_flood.max_ms,
        r.live.closed,
    );
    s
}
