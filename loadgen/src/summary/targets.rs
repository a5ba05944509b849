//! The "Results against the targets" table: one row per measure of each scenario present,
//! with the target it is held to and whether it was met.

use std::fmt::Write as _;
use std::path::Path;

use serde_json::Value;

use super::json::{at, fmt, num, runs_note, verdict};
use super::Reports;

/// The table, written into a Markdown string.
struct Table<'a> {
    md: &'a mut String,
}

impl Table<'_> {
    /// One row: scenario, measure, result, target and the verdict of `ok`.
    fn row(&mut self, s: &str, m: &str, r: String, t: &str, ok: Option<bool>) {
        let _ = writeln!(self.md, "| {s} | {m} | {r} | {t} | {} |", verdict(ok));
    }
}

/// Writes the table header and a row per measure of every scenario in `reports`.
pub(super) fn write(md: &mut String, r: &Reports, dir: &Path) {
    let _ = writeln!(md, "## Results against the targets\n");
    let _ = writeln!(md, "| scenario | measure | result | target | verdict |");
    let _ = writeln!(md, "|---|---|---|---|---|");
    let mut t = Table { md };
    if let Some(v) = &r.idle {
        idle_18k(&mut t, v);
    }
    if let Some(v) = &r.idle5 {
        idle_5k(&mut t, v);
    }
    if let Some(v) = &r.burst {
        connect_burst(&mut t, v);
    }
    if let Some(v) = &r.flat {
        unicast_flat(&mut t, v);
    }
    if let Some(v) = &r.rate {
        unicast_rate(&mut t, v, dir);
    }
    if let Some(v) = &r.fan {
        fanout(&mut t, v, dir);
    }
    for (name, v) in [("4 drain 10k", &r.drain), ("4 drain 5k", &r.drain5)] {
        if let Some(v) = v {
            drain(&mut t, name, v);
        }
    }
    if let Some(v) = &r.stuck {
        stuck(&mut t, v);
    }
}

/// RSS per idle socket and connect rate with 18,000 sockets.
fn idle_18k(t: &mut Table<'_>, v: &Value) {
    let kb = num(v, "server.kb_per_socket_connected");
    t.row(
        "1 idle 18k",
        "server RSS per idle authenticated socket",
        format!(
            "{} KiB ({} KiB after each socket got one message)",
            fmt(kb, 2),
            fmt(num(v, "server.kb_per_socket_after_hold"), 2)
        ),
        "≤ 8 KB",
        kb.map(|k| k <= 8.0),
    );
    let r = num(v, "connect.per_s");
    t.row(
        "1 idle 18k",
        "new authenticated sockets/s (64 connects in flight)",
        format!(
            "{} /s ({} of {} in {} s, handshake p99 {} ms)",
            fmt(r, 0),
            fmt(num(v, "connect.ok"), 0),
            fmt(num(v, "connect.attempted"), 0),
            fmt(num(v, "connect.seconds"), 2),
            fmt(num(v, "connect.handshake.p99_ms"), 1)
        ),
        "≥ 10,000 /s",
        r.map(|r| r >= 10_000.0),
    );
}

/// RSS per idle socket with 5,000 sockets.
fn idle_5k(t: &mut Table<'_>, v: &Value) {
    t.row(
        "1 idle 5k",
        "server RSS per idle authenticated socket",
        format!(
            "{} KiB ({} MiB for 5,000 sockets over a {} MiB baseline)",
            fmt(num(v, "server.kb_per_socket_connected"), 2),
            fmt(num(v, "server.rss_connected_kb").map(|k| k / 1024.0), 1),
            fmt(num(v, "server.rss_baseline_kb").map(|k| k / 1024.0), 1)
        ),
        "≤ 8 KB",
        num(v, "server.kb_per_socket_connected").map(|k| k <= 8.0),
    );
}

/// Connect rate with 512 connects in flight.
fn connect_burst(t: &mut Table<'_>, v: &Value) {
    let r = num(v, "connect.per_s");
    t.row(
        "1 connect burst",
        "new sockets/s with 512 connects in flight",
        format!(
            "{} /s, handshake p99 {} ms, {} failed",
            fmt(r, 0),
            fmt(num(v, "connect.handshake.p99_ms"), 1),
            fmt(num(v, "connect.failed"), 0)
        ),
        "≥ 10,000 /s",
        r.map(|r| r >= 10_000.0),
    );
}

/// Deliveries per second, publishing flat out.
fn unicast_flat(t: &mut Table<'_>, v: &Value) {
    let d = num(v, "delivery.per_s");
    t.row(
        "2 unicast flat out",
        "deliveries/s",
        format!(
            "{} /s (published {} /s; lost {}, duplicates {})",
            fmt(d, 0),
            fmt(num(v, "publish.per_s"), 0),
            fmt(num(v, "delivery.loss.lost"), 0),
            fmt(num(v, "delivery.loss.duplicates"), 0)
        ),
        "≥ 150,000 /s",
        d.map(|d| d >= 150_000.0),
    );
}

/// Latency at 20,000 messages per second.
fn unicast_rate(t: &mut Table<'_>, v: &Value, dir: &Path) {
    let p99 = num(v, "latency.p99_ms");
    t.row(
        "2 unicast 20k/s",
        "publish → receive p99",
        format!(
            "{} ms (p50 {}, p99.9 {}, max {}; median per-second p99 {} ms; {} /s delivered, lost {}){}",
            fmt(p99, 2),
            fmt(num(v, "latency.p50_ms"), 2),
            fmt(num(v, "latency.p999_ms"), 2),
            fmt(num(v, "latency.max_ms"), 2),
            fmt(num(v, "latency_interval_p99_median_ms"), 2),
            fmt(num(v, "delivery.per_s"), 0),
            fmt(num(v, "delivery.loss.lost"), 0),
            runs_note(dir, "unicast-20k")
        ),
        "≤ 5 ms",
        p99.map(|p| p <= 5.0),
    );
}

/// Deliveries and latency with 10 sockets per user.
fn fanout(t: &mut Table<'_>, v: &Value, dir: &Path) {
    t.row(
        "3 fan-out 1k x 10",
        "deliveries/s, p99",
        format!(
            "{} /s, p99 {} ms (max {}; median per-second p99 {} ms), lost {}{}",
            fmt(num(v, "delivery.per_s"), 0),
            fmt(num(v, "latency.p99_ms"), 2),
            fmt(num(v, "latency.max_ms"), 2),
            fmt(num(v, "latency_interval_p99_median_ms"), 2),
            fmt(num(v, "delivery.loss.lost"), 0),
            runs_note(dir, "fanout")
        ),
        "(no target)",
        None,
    );
}

/// The drain: how the closes spread and whether all were 1012.
fn drain(t: &mut Table<'_>, name: &str, v: &Value) {
    t.row(
        name,
        "SIGTERM → last close; closes 1012",
        format!(
            "{} s (first close {} s, server exit {} s); {} of {} closed 1012",
            fmt(num(v, "drain.last_close_after_s"), 2),
            fmt(num(v, "drain.first_close_after_s"), 2),
            fmt(num(v, "drain.server_exit_after_s"), 2),
            fmt(num(v, "drain.closes_1012"), 0),
            fmt(num(v, "drain.sockets_open"), 0)
        ),
        "spread over the 10 s window, all 1012",
        at(v, "drain.all_1012").and_then(Value::as_bool),
    );
}

/// The stuck reader: closed with 4009, RSS back near baseline, the live user served.
fn stuck(t: &mut Table<'_>, v: &Value) {
    let rounds = at(v, "rounds")
        .and_then(Value::as_array)
        .map_or(0.0, |a| a.len() as f64);
    let closed = num(v, "server_metrics.closed_4009").map(|n| n >= rounds && rounds > 0.0);
    let back = at(v, "rss.back_near_baseline").and_then(Value::as_bool);
    let live_ok = match (
        num(v, "live.received_during_flood"),
        num(v, "live.published_during_flood"),
    ) {
        (Some(r), Some(p)) => Some(p > 0.0 && r >= p),
        _ => None,
    };
    t.row(
        "5 stuck reader",
        "closed 4009; RSS back near baseline; other user served",
        format!(
            "4009 closes {} in {} rounds (client saw {}); RSS {} → peak {} → {} MiB; live user got {} of {} during the floods (p99 {} ms)",
            fmt(num(v, "server_metrics.closed_4009"), 0),
            fmt(Some(rounds), 0),
            at(v, "rounds.0.stuck_socket.close_code")
                .map_or_else(|| "n/a".to_owned(), Value::to_string),
            fmt(num(v, "rss.baseline_kb").map(|k| k / 1024.0), 1),
            fmt(num(v, "rss.peak_kb").map(|k| k / 1024.0), 1),
            fmt(num(v, "rss.after_kb").map(|k| k / 1024.0), 1),
            fmt(num(v, "live.received_during_flood"), 0),
            fmt(num(v, "live.published_during_flood"), 0),
            fmt(num(v, "live.latency_during_flood.p99_ms"), 2)
        ),
        "closed 4009, RSS back, live unaffected",
        match (closed, back, live_ok) {
            (Some(a), Some(b), Some(c)) => Some(a && b && c),
            _ => None,
        },
    );
}
