//! The run report: the workers' final reports merged (connects, latency, closes, loss, v2
//! positions, the series) with what the parent observed (server RSS, verify, publish, resume,
//! blip, drain, CPU).

use std::collections::BTreeMap;

use anyhow::anyhow;

use super::delivery::counter_deltas;
use super::shared::Shared;
use super::{secs_since, BlipStart, DrainStart, Observed, ResumeStart, Run};
use crate::hist::{self, Hist, Percentiles};
use crate::procfs::CpuUsage;
use crate::protocol::{ConnectReport, LossReport, V2Report, WorkerFinal};
use crate::report::{
    BlipSummary, ClosesSummary, ConnectSummary, DeliverySummary, DrainSummary, ResumeSummary,
    RunReport, Series, ServerSummary,
};

/// Builds the report of a finished run with `workers` worker processes.
pub(super) fn report(run: Run, workers: usize) -> anyhow::Result<RunReport> {
    let Run {
        cfg,
        epoch_us,
        started,
        shared,
        events,
        cpu,
        mut seen,
        ..
    } = run;
    let mut report = RunReport {
        label: cfg.label.clone(),
        config: cfg.echo(),
        workers,
        src_addrs: cfg.src_addrs.clone(),
        events,
        verify: seen.verify.take(),
        cpu,
        elapsed_s: started.elapsed().as_secs_f64(),
        ..RunReport::default()
    };
    let s = shared.borrow();
    let finals = s.finals();
    let connects: Vec<&ConnectReport> = finals.iter().map(|f| &f.connect).collect();
    report.connect = merge_connect(&connects, cfg.connect_concurrency)?;
    report.server = server_summary(cfg.server_pid, &seen, &s);
    let mut merged = Merged::of(&finals)?;
    report.latency = hist::percentiles(&merged.latency);
    if seen.publish.is_some() || cfg.verify {
        report.delivery = Some(merged.delivery(seen.publish_start_us));
    }
    report.publish = seen.publish.take();
    if let Some(drain) = &seen.drain {
        report.drain = Some(drain_summary(
            &merged.closes_at,
            &merged.closes.codes,
            epoch_us,
            drain,
        ));
    }
    if let Some(resume) = &seen.resume {
        report.resume = Some(resume_summary(
            resume, &finals, &merged, &report, epoch_us, &cfg, &seen,
        )?);
    }
    if let Some(blip) = &seen.blip {
        report.blip = blip_summary(blip, &merged, report.publish.as_ref(), epoch_us);
    }
    report.history_memory = seen.history_memory.take();
    report.v2 = merged.v2.take();
    report.closes = merged.closes;
    report.series = series(&finals, &s, cfg.bin_ms)?;
    report.latency_interval_p99_median_ms = median_interval_p99(&report.series);
    Ok(report)
}

/// The connect phases (or reconnect rounds) of every worker added up.
fn merge_connect(
    connects: &[&ConnectReport],
    concurrency: usize,
) -> anyhow::Result<ConnectSummary> {
    let mut c = ConnectSummary {
        concurrency,
        ..ConnectSummary::default()
    };
    let mut handshake = hist::precise()?;
    let (mut first, mut last) = (u64::MAX, 0u64);
    for w in connects {
        c.attempted += w.attempted;
        c.ok += w.ok;
        c.failed += w.failed;
        for (reason, n) in &w.failures {
            *c.failures.entry(reason.clone()).or_default() += n;
        }
        if w.first_start_us > 0 {
            first = first.min(w.first_start_us);
        }
        last = last.max(w.last_done_us);
        hist::merge_into(&mut handshake, &w.handshake_hist)?;
    }
    if first < last {
        c.seconds = (last - first) as f64 / 1e6;
        c.per_s = (c.ok as f64 / c.seconds).round();
    }
    c.handshake = hist::percentiles(&handshake);
    Ok(c)
}

/// Server memory, when `--server-pid` was given and sampled at the baseline and connected.
fn server_summary(pid: Option<u32>, seen: &Observed, s: &Shared) -> Option<ServerSummary> {
    let (Some(pid), Some(base), Some(conn)) = (pid, seen.rss_baseline, seen.rss_connected) else {
        return None;
    };
    let open = seen.open_after_connect;
    let per =
        |kb: u64| (kb.saturating_sub(base) as f64 / open.max(1) as f64 * 100.0).round() / 100.0;
    Some(ServerSummary {
        pid,
        rss_baseline_kb: base,
        rss_connected_kb: conn,
        rss_after_hold_kb: seen.rss_after_hold,
        rss_peak_kb: s.rss.iter().map(|r| r.1).max().unwrap_or(conn).max(conn),
        rss_end_kb: seen.rss_end.or(s.rss.last().map(|r| r.1)).unwrap_or(0),
        kb_per_socket_connected: per(conn),
        kb_per_socket_after_hold: seen.rss_after_hold.map(per),
        sockets_open: open,
    })
}

/// Latency, close times, close codes, loss and v2 positions of every worker added up.
struct Merged {
    latency: Hist,
    /// When each close arrived, µs since the start of the run.
    closes_at: Hist,
    closes: ClosesSummary,
    loss: LossReport,
    /// Receive time of the last timed message, µs since the Unix epoch.
    last_timed_us: u64,
    unparsed: u64,
    /// When each socket received its last new message, µs since the start of the run.
    last_messages: Hist,
    v2: Option<V2Report>,
}

impl Merged {
    fn of(finals: &[&WorkerFinal]) -> anyhow::Result<Self> {
        let mut m = Self {
            latency: hist::precise()?,
            closes_at: hist::precise()?,
            closes: ClosesSummary::default(),
            loss: LossReport::default(),
            last_timed_us: 0,
            unparsed: 0,
            last_messages: hist::precise()?,
            v2: None,
        };
        for f in finals {
            m.add(f)?;
        }
        Ok(m)
    }

    fn add(&mut self, f: &WorkerFinal) -> anyhow::Result<()> {
        hist::merge_into(&mut self.latency, &f.latency_hist)?;
        hist::merge_into(&mut self.closes_at, &f.close_hist)?;
        self.last_timed_us = self.last_timed_us.max(f.last_timed_us);
        self.unparsed += f.unparsed;
        for (code, n) in &f.close_codes {
            *self.closes.codes.entry(code.clone()).or_default() += n;
        }
        self.closes.open_at_end += f.open_at_end;
        if let Some(l) = &f.loss {
            add_loss(&mut self.loss, l);
        }
        if !f.last_message_hist.is_empty() {
            hist::merge_into(&mut self.last_messages, &f.last_message_hist)?;
        }
        if let Some(v2) = &f.v2 {
            self.v2.get_or_insert_with(V2Report::default).add(v2);
        }
        Ok(())
    }

    /// Per socket, from `from_us` (µs since the run's epoch) to its last new message, ms;
    /// sockets whose last message came before are left out.
    fn last_messages_after(&self, from_us: u64) -> anyhow::Result<Percentiles> {
        let mut h = hist::precise()?;
        for v in self.last_messages.iter_recorded() {
            let at = v.value_iterated_to();
            if at >= from_us {
                h.saturating_record_n((at - from_us).max(1), v.count_at_value());
            }
        }
        Ok(hist::percentiles(&h))
    }

    /// When the last socket received its last new message, µs since the run's epoch.
    fn last_message_at(&self) -> u64 {
        if self.last_messages.is_empty() {
            0
        } else {
            self.last_messages.max()
        }
    }

    /// What arrived, timed from the start of the publish phase (0 s without one).
    fn delivery(&self, publish_start_us: u64) -> DeliverySummary {
        let seconds = if publish_start_us > 0 {
            secs_since(publish_start_us, self.last_timed_us)
        } else {
            0.0
        };
        let delivered = self.latency.len();
        DeliverySummary {
            delivered,
            seconds,
            per_s: if seconds > 0.0 {
                delivered as f64 / seconds
            } else {
                0.0
            },
            loss: self.loss.clone(),
            unparsed: self.unparsed,
        }
    }
}

/// Server CPU in `cpu`'s window, seconds.
fn server_cpu_s(cpu: Option<&CpuUsage>) -> f64 {
    cpu.and_then(|u| Some(u.processes.get("server")? / 100.0 * u.seconds))
        .unwrap_or(0.0)
}

/// The resume phase: the workers' reconnect rounds, when each socket had its backlog, and the
/// server's CPU per resume beside its CPU per first connect.
#[allow(clippy::too_many_arguments)]
fn resume_summary(
    resume: &ResumeStart,
    finals: &[&WorkerFinal],
    merged: &Merged,
    report: &RunReport,
    epoch_us: u64,
    cfg: &super::config::Config,
    seen: &Observed,
) -> anyhow::Result<ResumeSummary> {
    let rounds: Vec<&ConnectReport> = finals.iter().filter_map(|f| f.reconnect.as_ref()).collect();
    let reconnect = merge_connect(&rounds, cfg.connect_concurrency)?;
    let from = resume.reconnect_us.saturating_sub(epoch_us);
    let cpu_s = server_cpu_s(report.cpu.get("resume"));
    let connect_cpu_s = server_cpu_s(report.cpu.get("connect"));
    let per = |s: f64, n: u64| ((s * 1e6 / n.max(1) as f64) * 10.0).round() / 10.0;
    Ok(ResumeSummary {
        sockets: resume.sockets,
        backlog_per_user: cfg.resume_backlog,
        backlog_published: seen.resume_backlog_published,
        away_s: (resume.away_s * 1000.0).round() / 1000.0,
        caught_up_after_s: resume
            .done_us
            .map(|_| secs_since(from, merged.last_message_at())),
        per_socket_caught_up: merged.last_messages_after(from)?,
        server_cpu_s: (cpu_s * 1000.0).round() / 1000.0,
        server_cpu_us_per_resume: per(cpu_s, reconnect.ok),
        server_cpu_us_per_connect: per(connect_cpu_s, report.connect.ok),
        reconnect,
        server_metrics: resume.server_metrics.clone(),
    })
}

/// The blip: when every socket had every message, counted from the kill.
fn blip_summary(
    blip: &BlipStart,
    merged: &Merged,
    publish: Option<&crate::report::PublishSummary>,
    epoch_us: u64,
) -> Option<BlipSummary> {
    let at_us = blip.at_us?;
    let from = at_us.saturating_sub(epoch_us);
    let published = publish.map_or(0, |p| p.published);
    Some(BlipSummary {
        at_s: secs_since(epoch_us, at_us),
        killed: blip.killed,
        published_before: blip.published_before,
        published_after: published.saturating_sub(blip.published_before),
        publish_end_after_s: secs_since(at_us, blip.publish_end_us),
        caught_up_after_s: secs_since(from, merged.last_message_at()),
        per_socket_caught_up: merged.last_messages_after(from).ok()?,
        server_catch_ups: blip.catch_ups,
        server_catch_ups_done_after_s: blip.catch_ups_last_us.map(|t| secs_since(at_us, t)),
        server_metrics: blip
            .metrics_after
            .as_ref()
            .map(|after| counter_deltas(&blip.metrics_before, after))
            .unwrap_or_default(),
    })
}

/// Adds a worker's loss report to the run's.
fn add_loss(loss: &mut LossReport, l: &LossReport) {
    loss.sockets += l.sockets;
    loss.expected += l.expected;
    loss.received += l.received;
    loss.lost += l.lost;
    loss.sockets_with_loss += l.sockets_with_loss;
    loss.max_lost_per_socket = loss.max_lost_per_socket.max(l.max_lost_per_socket);
    loss.duplicates += l.duplicates;
    loss.sockets_with_duplicates += l.sockets_with_duplicates;
    loss.out_of_order += l.out_of_order;
    loss.closed_early += l.closed_early;
}

/// The closes after SIGTERM: when the first and last came, how many, with which codes, and a
/// histogram in half-second intervals.
fn drain_summary(
    closes: &Hist,
    codes: &BTreeMap<String, u64>,
    epoch_us: u64,
    drain: &DrainStart,
) -> DrainSummary {
    let DrainStart {
        sigterm_us,
        open,
        exit_us,
    } = *drain;
    let sig_rel = sigterm_us.saturating_sub(epoch_us);
    let bin_s = 0.5;
    let mut histogram: BTreeMap<u64, u64> = BTreeMap::new();
    let (mut first, mut last, mut n) = (f64::INFINITY, 0f64, 0u64);
    for v in closes.iter_recorded() {
        let at = v.value_iterated_to();
        if at < sig_rel {
            continue;
        }
        let after = (at - sig_rel) as f64 / 1e6;
        first = first.min(after);
        last = last.max(after);
        n += v.count_at_value();
        *histogram.entry((after / bin_s) as u64).or_default() += v.count_at_value();
    }
    let closes_1012 = codes.get("1012").copied().unwrap_or(0);
    DrainSummary {
        sigterm_at_s: sig_rel as f64 / 1e6,
        sockets_open: open,
        server_exit_after_s: exit_us.map(|e| secs_since(sigterm_us, e)),
        first_close_after_s: if first.is_finite() { first } else { 0.0 },
        last_close_after_s: last,
        closes: n,
        closes_1012,
        all_1012: open > 0 && closes_1012 == open && codes.values().sum::<u64>() == open,
        close_histogram: histogram
            .into_iter()
            .map(|(b, c)| (b as f64 * bin_s, c))
            .collect(),
        histogram_bin_s: bin_s,
    }
}

/// One series bin of every worker added up.
#[derive(Default)]
struct Bin {
    delivered: u64,
    closes: u64,
    latency: Option<Hist>,
}

impl Bin {
    fn add_latency(&mut self, encoded: &str) -> anyhow::Result<()> {
        let h = hist::decode(encoded)?;
        match self.latency.as_mut() {
            Some(dst) => dst
                .add(&h)
                .map_err(|e| anyhow!("merging histograms: {e:?}"))?,
            None => self.latency = Some(h),
        }
        Ok(())
    }
}

/// The workers' bins added up, plus an empty bin wherever only publishing happened.
fn merge_bins(finals: &[&WorkerFinal], shared: &Shared) -> anyhow::Result<BTreeMap<u64, Bin>> {
    let mut bins: BTreeMap<u64, Bin> = BTreeMap::new();
    for f in finals {
        for b in &f.bins {
            let acc = bins.entry(b.bin).or_default();
            acc.delivered += b.delivered;
            acc.closes += b.closes;
            if !b.latency_hist.is_empty() {
                acc.add_latency(&b.latency_hist)?;
            }
        }
    }
    for &bin in shared.published_bins.keys() {
        bins.entry(bin).or_default();
    }
    Ok(bins)
}

/// The time series: one entry per `bin_ms` from the start to the last bin with anything in it.
fn series(finals: &[&WorkerFinal], shared: &Shared, bin_ms: u64) -> anyhow::Result<Series> {
    let bins = merge_bins(finals, shared)?;
    let bin_s = bin_ms as f64 / 1000.0;
    let mut out = Series {
        bin_s,
        ..Series::default()
    };
    let last = bins.keys().next_back().copied().unwrap_or(0);
    for bin in 0..=last {
        let acc = bins.get(&bin);
        out.t_s.push(bin as f64 * bin_s);
        out.delivered_per_s
            .push(acc.map_or(0.0, |a| a.delivered as f64 / bin_s));
        out.closes_per_s
            .push(acc.map_or(0.0, |a| a.closes as f64 / bin_s));
        out.published_per_s
            .push(shared.published_bins.get(&bin).copied().unwrap_or(0) as f64 / bin_s);
        let lat = acc.and_then(|a| a.latency.as_ref());
        let q = |q: f64| lat.map_or(0.0, |h| h.value_at_quantile(q) as f64 / 1000.0);
        out.p50_ms.push(q(0.5));
        out.p99_ms.push(q(0.99));
        out.max_ms
            .push(lat.map_or(0.0, |h| h.max() as f64 / 1000.0));
    }
    out.server_rss_mb = shared
        .rss
        .iter()
        .map(|&(t, kb)| (t, (kb as f64 / 1024.0 * 10.0).round() / 10.0))
        .collect();
    Ok(out)
}

/// The median of the intervals' p99s (intervals without timed messages left out).
fn median_interval_p99(series: &Series) -> f64 {
    let mut p99s: Vec<f64> = series.p99_ms.iter().copied().filter(|p| *p > 0.0).collect();
    p99s.sort_by(f64::total_cmp);
    p99s.get(p99s.len() / 2).copied().unwrap_or(0.0)
}
