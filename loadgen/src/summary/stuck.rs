//! The stuck-reader section: server RSS over the rounds, each round's flood and what the stuck
//! client found, the server's counters, and what the live user got.

use std::fmt::Write as _;

use serde_json::Value;

use super::json::{at, fmt, num, raw};

/// Writes the stuck-reader scenario's heading, lines and plot.
pub(super) fn write(md: &mut String, v: &Value) {
    let label = at(v, "label").and_then(Value::as_str).unwrap_or("stuck");
    let _ = writeln!(md, "### {label}\n");
    let _ = writeln!(
        md,
        "- Server RSS: baseline {} KiB, peak {} KiB (+{}), {} s after the last flood {} KiB (+{}); after each round {}; back near baseline (≤ +10 % or +2 MiB): {}.",
        fmt(num(v, "rss.baseline_kb"), 0),
        fmt(num(v, "rss.peak_kb"), 0),
        fmt(num(v, "rss.peak_over_baseline_kb"), 0),
        fmt(num(v, "config.settle_s"), 0),
        fmt(num(v, "rss.after_kb"), 0),
        fmt(num(v, "rss.after_over_baseline_kb"), 0),
        raw(v, "rss.after_each_round_kb"),
        raw(v, "rss.back_near_baseline"),
    );
    let rounds = at(v, "rounds")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    for r in &rounds {
        round(md, v, r);
    }
    let _ = writeln!(
        md,
        "- Server metrics over the run (after − before): {}.",
        raw(v, "server_metrics"),
    );
    let _ = writeln!(
        md,
        "- Live user: {} of {} messages published during the floods received (p50 {} ms, p99 {} ms, max {} ms); {} of {} over the whole run; closed: {}.",
        fmt(num(v, "live.received_during_flood"), 0),
        fmt(num(v, "live.published_during_flood"), 0),
        fmt(num(v, "live.latency_during_flood.p50_ms"), 2),
        fmt(num(v, "live.latency_during_flood.p99_ms"), 2),
        fmt(num(v, "live.latency_during_flood.max_ms"), 2),
        fmt(num(v, "live.received"), 0),
        fmt(num(v, "live.published"), 0),
        raw(v, "live.closed"),
    );
    let _ = writeln!(md, "\n![stuck](stuck.svg)\n");
}

/// One round: the flood, RSS, what the stuck client read, and CPU.
fn round(md: &mut String, v: &Value, r: &Value) {
    let _ = writeln!(
        md,
        "- Round {}: flood {} × {} B in {} s = {} /s; {} reached the server's subscription, {} reached nobody (the server unsubscribed the user {} s into the flood). RSS {} → peak {} → {} KiB. The stuck client, reading again {} s after the flood: {} bytes, {} text frames, close code {}, ended by {}.",
        fmt(num(r, "round"), 0),
        fmt(num(r, "flood.messages"), 0),
        fmt(num(r, "flood.payload_bytes"), 0),
        fmt(num(r, "flood.seconds"), 2),
        fmt(num(r, "flood.per_s"), 0),
        fmt(num(r, "flood.reached_server"), 0),
        fmt(num(r, "flood.to_nobody"), 0),
        fmt(num(r, "flood.unsubscribed_after_s"), 3),
        fmt(num(r, "rss_before_kb"), 0),
        fmt(num(r, "rss_peak_kb"), 0),
        fmt(num(r, "rss_after_kb"), 0),
        fmt(num(v, "config.read_after_s"), 1),
        fmt(num(r, "stuck_socket.bytes"), 0),
        fmt(num(r, "stuck_socket.text_frames"), 0),
        raw(r, "stuck_socket.close_code"),
        at(r, "stuck_socket.end").and_then(Value::as_str).unwrap_or("?"),
    );
    let _ = writeln!(
        md,
        "  CPU from the flood to the end of the settle (% of one core): server {}, loadgen {}, redis {}, other processes ~{}.",
        fmt(num(r, "cpu.processes.server"), 0),
        fmt(num(r, "cpu.processes.loadgen"), 0),
        fmt(num(r, "cpu.processes.redis"), 0),
        fmt(num(r, "cpu.other_processes"), 0),
    );
}
