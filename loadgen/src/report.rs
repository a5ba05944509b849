//! The JSON report of a `loadgen` run (what `bench/` commits) and its one-screen text summary.

use std::collections::BTreeMap;

use serde::Serialize;

use crate::hist::Percentiles;
use crate::procfs::CpuUsage;
use crate::protocol::{LossReport, V2Report};
use crate::redis_info::{HistoryMemory, RedisCost};

/// The whole report of `loadgen` (the default run mode).
#[derive(Debug, Default, Serialize)]
pub struct RunReport {
    /// Free text naming the scenario.
    pub label: String,
    /// The options that shaped the run (never the secret).
    pub config: BTreeMap<String, serde_json::Value>,
    /// Worker processes used.
    pub workers: usize,
    /// Source addresses client sockets were bound to.
    pub src_addrs: Vec<String>,
    /// Connect phase.
    pub connect: ConnectSummary,
    /// Server memory, when `--server-pid` was given.
    pub server: Option<ServerSummary>,
    /// The verification round (one message per user, every socket must get it).
    pub verify: Option<VerifySummary>,
    /// Publishing phase.
    pub publish: Option<PublishSummary>,
    /// What arrived.
    pub delivery: Option<DeliverySummary>,
    /// Publish → receive latency of the timed messages.
    pub latency: Percentiles,
    /// Median over the intervals of the series of each interval's p99, ms: what an undisturbed
    /// second looks like, where the overall p99 is set by the worst seconds.
    pub latency_interval_p99_median_ms: f64,
    /// Closes seen by the clients.
    pub closes: ClosesSummary,
    /// The drain (SIGTERM) phase, when `--drain` was given.
    pub drain: Option<DrainSummary>,
    /// Protocol v2 frames and the per-socket position checks, when `--v2` was given.
    pub v2: Option<V2Report>,
    /// The resume phase, when `--resume` was given.
    pub resume: Option<ResumeSummary>,
    /// The Redis blip during the publish phase, when `--blip-at-s` was given.
    pub blip: Option<BlipSummary>,
    /// Memory of the users' histories after publishing durably, when `--history-sample` > 0.
    pub history_memory: Option<HistoryMemory>,
    /// Time series, one entry per bin.
    pub series: Series,
    /// Phase boundaries, seconds since start.
    pub events: Vec<(String, f64)>,
    /// CPU use per phase (`connect`, `publish`, `drain`), % of one core.
    pub cpu: BTreeMap<String, CpuUsage>,
    /// Wall time of the whole run, seconds.
    pub elapsed_s: f64,
}

/// Connect phase.
#[derive(Debug, Default, Serialize)]
pub struct ConnectSummary {
    /// Sockets tried.
    pub attempted: u64,
    /// Upgrades completed (HTTP 101).
    pub ok: u64,
    /// Failures.
    pub failed: u64,
    /// Failures by reason.
    pub failures: BTreeMap<String, u64>,
    /// From the first connect started to the last finished, seconds.
    pub seconds: f64,
    /// `ok / seconds`.
    pub per_s: f64,
    /// TCP connect + upgrade time.
    pub handshake: Percentiles,
    /// Connects in flight at once (all workers).
    pub concurrency: usize,
}

/// Server memory (VmRSS).
#[derive(Debug, Default, Serialize)]
pub struct ServerSummary {
    /// Server process id.
    pub pid: u32,
    /// Before any socket, KiB.
    pub rss_baseline_kb: u64,
    /// After every socket connected and a short settle, KiB.
    pub rss_connected_kb: u64,
    /// After the verification round and the hold, KiB.
    pub rss_after_hold_kb: Option<u64>,
    /// Largest sample, KiB.
    pub rss_peak_kb: u64,
    /// Last sample before the end, KiB.
    pub rss_end_kb: u64,
    /// `(connected - baseline) / open sockets`, KiB per socket.
    pub kb_per_socket_connected: f64,
    /// `(after hold - baseline) / open sockets`, KiB per socket.
    pub kb_per_socket_after_hold: Option<f64>,
    /// Sockets open when `rss_connected_kb` was read.
    pub sockets_open: u64,
}

/// The verification round.
#[derive(Debug, Default, Serialize)]
pub struct VerifySummary {
    /// Sockets that should have received the round.
    pub sockets: u64,
    /// Messages delivered in the round.
    pub delivered: u64,
    /// Time from first publish until every socket had it (or the wait ended), seconds.
    pub seconds: f64,
    /// PUBLISHes retried because the server had not subscribed the channel yet.
    pub retries: u64,
}

/// Publishing phase.
#[derive(Debug, Default, Serialize)]
pub struct PublishSummary {
    /// `fixed` or `flat-out`.
    pub mode: String,
    /// Requested rate for `fixed`, messages/s.
    pub target_per_s: u64,
    /// Messages published in the phase (the verification round excluded).
    pub published: u64,
    /// Phase length, seconds.
    pub seconds: f64,
    /// `published / seconds`.
    pub per_s: f64,
    /// PUBLISHes that reached no subscriber.
    pub to_nobody: u64,
    /// Payload size, bytes.
    pub payload_bytes: usize,
    /// Sockets per user (each message is delivered this many times).
    pub fanout: u64,
    /// Published with `FCALL ws_publish` (history + durable channel) instead of `PUBLISH`.
    pub durable: bool,
    /// What publishing cost Redis (from its `INFO`), when it could be read.
    pub redis: Option<RedisCost>,
}

/// The resume phase: every socket dropped its connection, a backlog was published durably
/// while they were away, then every socket reconnected (v2: with `since`).
#[derive(Debug, Default, Serialize)]
pub struct ResumeSummary {
    /// Sockets dropped.
    pub sockets: u64,
    /// Messages published to each user while its sockets were away.
    pub backlog_per_user: u64,
    /// Messages published in the backlog.
    pub backlog_published: u64,
    /// From the disconnect to the reconnect, seconds.
    pub away_s: f64,
    /// The reconnects: attempts, failures, rate, handshake times.
    pub reconnect: ConnectSummary,
    /// From the reconnect command until every socket had its backlog (`None`: not within the
    /// wait), seconds.
    pub caught_up_after_s: Option<f64>,
    /// Per socket, from the reconnect command to its last new message, ms.
    pub per_socket_caught_up: Percentiles,
    /// Server CPU from the reconnect command until every socket had its backlog, seconds.
    pub server_cpu_s: f64,
    /// That CPU per reconnected socket, µs: TCP accept, upgrade, token, subscribe, history read,
    /// replay of the backlog.
    pub server_cpu_us_per_resume: f64,
    /// Server CPU per socket of the first connect phase (no `since`, nothing to replay), µs.
    pub server_cpu_us_per_connect: f64,
    /// The server's delivery counters over the phase (after minus before).
    pub server_metrics: BTreeMap<String, f64>,
}

/// A Redis blip: `CLIENT KILL TYPE pubsub` during the publish phase.
#[derive(Debug, Default, Serialize)]
pub struct BlipSummary {
    /// When the subscribers were killed, seconds since start.
    pub at_s: f64,
    /// Subscriber connections killed.
    pub killed: u64,
    /// Messages published in the phase before the kill.
    pub published_before: u64,
    /// Messages published in the phase after it.
    pub published_after: u64,
    /// From the kill to the end of publishing, seconds.
    pub publish_end_after_s: f64,
    /// From the kill until the last socket had its last message (every message published), s.
    pub caught_up_after_s: f64,
    /// Per socket, from the kill to its last new message, ms.
    pub per_socket_caught_up: Percentiles,
    /// Catch-ups the server started after its subscriber link came back
    /// (`ws_catch_ups_total{cause="reconnect"}`, polled every 20 ms).
    pub server_catch_ups: f64,
    /// From the kill to the last of them, seconds (the server spreads them over 2 s).
    pub server_catch_ups_done_after_s: Option<f64>,
    /// The server's delivery counters from the start of publishing to the end (after minus
    /// before).
    pub server_metrics: BTreeMap<String, f64>,
}

/// What arrived.
#[derive(Debug, Default, Serialize)]
pub struct DeliverySummary {
    /// Timed messages received (the phase's deliveries, duplicates included).
    pub delivered: u64,
    /// From the phase's start to the last timed delivery, seconds.
    pub seconds: f64,
    /// `delivered / seconds`.
    pub per_s: f64,
    /// Loss, duplicates and order, per socket, over the whole run (verification included).
    pub loss: LossReport,
    /// Bodies that were not loadgen payloads.
    pub unparsed: u64,
}

/// Closes seen by the clients.
#[derive(Debug, Default, Serialize)]
pub struct ClosesSummary {
    /// Close codes (or `eof`, `error: …`) and how many.
    pub codes: BTreeMap<String, u64>,
    /// Sockets still open when the workers reported.
    pub open_at_end: u64,
}

/// The drain phase.
#[derive(Debug, Default, Serialize)]
pub struct DrainSummary {
    /// Seconds since start when SIGTERM was sent.
    pub sigterm_at_s: f64,
    /// Sockets open when SIGTERM was sent.
    pub sockets_open: u64,
    /// SIGTERM → server process gone, seconds (None: still running at the end of the wait).
    pub server_exit_after_s: Option<f64>,
    /// SIGTERM → first close frame received, seconds.
    pub first_close_after_s: f64,
    /// SIGTERM → last close frame received, seconds.
    pub last_close_after_s: f64,
    /// Closes received after SIGTERM.
    pub closes: u64,
    /// Of those, with code 1012.
    pub closes_1012: u64,
    /// Whether every socket open at SIGTERM was closed with 1012.
    pub all_1012: bool,
    /// Closes per interval after SIGTERM: `(start s, count)`.
    pub close_histogram: Vec<(f64, u64)>,
    /// Width of a histogram interval, seconds.
    pub histogram_bin_s: f64,
}

/// Time series.
#[derive(Debug, Default, Serialize)]
pub struct Series {
    /// Bin width, seconds.
    pub bin_s: f64,
    /// Bin start, seconds since start.
    pub t_s: Vec<f64>,
    /// Messages received per second.
    pub delivered_per_s: Vec<f64>,
    /// Messages published per second.
    pub published_per_s: Vec<f64>,
    /// Closes received per second.
    pub closes_per_s: Vec<f64>,
    /// Latency median, ms (0: no timed message in the bin).
    pub p50_ms: Vec<f64>,
    /// Latency 99th percentile, ms.
    pub p99_ms: Vec<f64>,
    /// Latency maximum, ms.
    pub max_ms: Vec<f64>,
    /// Server RSS samples `(s, MiB)`.
    pub server_rss_mb: Vec<(f64, f64)>,
}

impl RunReport {
    /// A few lines for a terminal.
    pub fn summary(&self) -> String {
        let mut s = format!("== {} ==\n", self.label);
        s += &self.connect.summary();
        if let Some(sv) = &self.server {
            s += &sv.summary();
        }
        if let Some(v) = &self.verify {
            s += &format!(
                "verify: {}/{} sockets got their message in {:.2}s ({} retried publishes)\n",
                v.delivered, v.sockets, v.seconds, v.retries
            );
        }
        if let Some(p) = &self.publish {
            s += &format!(
                "publish ({}): {} in {:.2}s = {:.0}/s, {} to nobody\n",
                p.mode, p.published, p.seconds, p.per_s, p.to_nobody
            );
        }
        if let Some(d) = &self.delivery {
            s += &d.summary();
            s += &self.latency_summary();
        }
        if let Some(d) = &self.drain {
            s += &d.summary();
        }
        if let Some(v) = &self.v2 {
            s += &format!(
                "v2: {} welcomes ({} recovered, {} not), {} resets, {} durable + {} plain messages; offsets skipped {} ({} sockets), repeated {} ({} sockets), epoch changes {}, malformed {}\n",
                v.welcomes, v.recovered, v.not_recovered, v.resets, v.positioned, v.plain,
                v.offset_gaps, v.sockets_with_gaps, v.offset_repeats, v.sockets_with_repeats,
                v.epoch_changes, v.malformed
            );
        }
        if let Some(r) = self.publish.as_ref().and_then(|p| p.redis.as_ref()) {
            s += &format!(
                "redis: {} x{} at {:.2} µs/call; process CPU {:.2}s = {:.2} µs per message published; used_memory {:+} bytes\n",
                r.command, r.calls, r.usec_per_call, r.cpu_s, r.cpu_us_per_publish, r.used_memory_delta
            );
        }
        if let Some(m) = &self.history_memory {
            s += &format!(
                "history memory ({} users sampled, {} with history): {:.1} entries, stream {:.0} B + meta {:.0} B = {:.0} B per user ({:.1} B per entry)\n",
                m.users_sampled, m.users_with_history, m.entries_mean, m.stream_bytes_mean,
                m.meta_bytes_mean, m.per_user_bytes_mean, m.bytes_per_entry
            );
        }
        if let Some(r) = &self.resume {
            s += &format!(
                "resume: {} sockets away {:.1}s, backlog {}/user; reconnected {}/{} in {:.2}s; all caught up after {}; per socket p50 {:.0} ms p99 {:.0} ms; server CPU {:.2}s = {:.0} µs per resume (first connect {:.0} µs); metrics {:?}\n",
                r.sockets, r.away_s, r.backlog_per_user, r.reconnect.ok, r.reconnect.attempted,
                r.reconnect.seconds,
                r.caught_up_after_s.map_or_else(|| "(not within the wait)".to_owned(), |t| format!("{t:.2}s")),
                r.per_socket_caught_up.p50_ms, r.per_socket_caught_up.p99_ms,
                r.server_cpu_s, r.server_cpu_us_per_resume, r.server_cpu_us_per_connect, r.server_metrics
            );
        }
        if let Some(b) = &self.blip {
            s += &format!(
                "blip: {} subscriber connection(s) killed at {:.2}s ({} published before, {} after; publishing ended {:.2}s after); every socket had every message {:.2}s after the kill (per socket p50 {:.0} ms, p99 {:.0} ms); the server started {} catch-ups, the last {} after the kill; metrics {:?}\n",
                b.killed, b.at_s, b.published_before, b.published_after, b.publish_end_after_s,
                b.caught_up_after_s, b.per_socket_caught_up.p50_ms, b.per_socket_caught_up.p99_ms,
                b.server_catch_ups,
                b.server_catch_ups_done_after_s.map_or_else(|| "(unknown)".to_owned(), |t| format!("{t:.2}s")),
                b.server_metrics
            );
        }
        for (phase, u) in &self.cpu {
            s += &format!(
                "cpu during {phase} ({:.1}s, % of one core): {:?}, other processes ~{:.0}; machine % {:?}\n  busiest server threads: {:?}\n",
                u.seconds, u.processes, u.other_processes, u.machine, u.server_threads
            );
        }
        s += &format!(
            "close codes: {:?}; open at end {}\n",
            self.closes.codes, self.closes.open_at_end
        );
        s
    }

    fn latency_summary(&self) -> String {
        let p = &self.latency;
        format!(
            "latency ms: p50 {:.3} p90 {:.3} p99 {:.3} p99.9 {:.3} max {:.3} (n={}); median of the per-interval p99s {:.3}\n",
            p.p50_ms, p.p90_ms, p.p99_ms, p.p999_ms, p.max_ms, p.count, self.latency_interval_p99_median_ms
        )
    }
}

impl ConnectSummary {
    /// The connect line, then one line per failure reason.
    fn summary(&self) -> String {
        let c = self;
        let mut s = format!(
            "connect: {}/{} ok, {} failed in {:.2}s = {:.0}/s (handshake p50 {:.2} ms, p99 {:.2} ms)\n",
            c.ok, c.attempted, c.failed, c.seconds, c.per_s, c.handshake.p50_ms, c.handshake.p99_ms
        );
        for (reason, n) in &c.failures {
            s += &format!("  failure x{n}: {reason}\n");
        }
        s
    }
}

impl ServerSummary {
    /// The server RSS line.
    fn summary(&self) -> String {
        let sv = self;
        let mut s = format!(
            "server RSS: baseline {} KiB, connected {} KiB ({:.2} KiB/socket over {} sockets), peak {} KiB",
            sv.rss_baseline_kb, sv.rss_connected_kb, sv.kb_per_socket_connected, sv.sockets_open, sv.rss_peak_kb
        );
        if let (Some(kb), Some(per)) = (sv.rss_after_hold_kb, sv.kb_per_socket_after_hold) {
            s += &format!(", after verify+hold {kb} KiB ({per:.2} KiB/socket)");
        }
        s += "\n";
        s
    }
}

impl DeliverySummary {
    /// The delivery and loss line.
    fn summary(&self) -> String {
        let (d, l) = (self, &self.loss);
        format!(
            "delivered: {} in {:.2}s = {:.0}/s; lost {} ({} sockets, max {}/socket), duplicates {}, out of order {}\n",
            d.delivered, d.seconds, d.per_s, l.lost, l.sockets_with_loss, l.max_lost_per_socket, l.duplicates, l.out_of_order
        )
    }
}

impl DrainSummary {
    /// The drain line.
    fn summary(&self) -> String {
        let d = self;
        format!(
            "drain: {} open at SIGTERM; closes {} ({} with 1012, all 1012: {}), first {:.2}s last {:.2}s after SIGTERM; server exit after {}\n",
            d.sockets_open,
            d.closes,
            d.closes_1012,
            d.all_1012,
            d.first_close_after_s,
            d.last_close_after_s,
            d.server_exit_after_s
                .map_or_else(|| "(still running)".to_owned(), |t| format!("{t:.2}s"))
        )
    }
}
