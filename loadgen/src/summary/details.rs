//! The "Scenarios" section: for each run-mode scenario present, its connect, server RSS,
//! publish, delivery, latency, drain and CPU lines, and its plot.

use std::fmt::Write as _;

use serde_json::Value;

use super::json::{at, fmt, num, raw};
use super::Reports;

/// Writes the section heading and the details of every run-mode scenario in `reports`.
pub(super) fn write(md: &mut String, r: &Reports) {
    let _ = writeln!(md, "\n## Scenarios\n");
    let runs = [
        ("idle-18k", &r.idle),
        ("idle-5k", &r.idle5),
        ("connect-burst", &r.burst),
        ("unicast-flat", &r.flat),
        ("unicast-20k", &r.rate),
        ("fanout", &r.fan),
        ("drain-10k", &r.drain),
        ("drain-5k", &r.drain5),
    ];
    for (name, v) in runs {
        if let Some(v) = v {
            scenario(md, name, v);
        }
    }
}

/// One scenario's heading, lines and plot.
fn scenario(md: &mut String, name: &str, v: &Value) {
    let label = at(v, "label").and_then(Value::as_str).unwrap_or(name);
    let _ = writeln!(md, "### {label}\n");
    connect(md, v);
    if at(v, "server").is_some_and(|s| !s.is_null()) {
        server(md, v);
    }
    if at(v, "publish").is_some_and(|s| !s.is_null()) {
        publish(md, v);
    }
    if at(v, "drain").is_some_and(|s| !s.is_null()) {
        drain(md, v);
    }
    for phase in ["connect", "publish", "drain"] {
        if let Some(line) = cpu_line(v, phase) {
            let _ = writeln!(md, "- {line}");
        }
    }
    let _ = writeln!(md, "\n![{name}]({name}.svg)\n");
}

/// The connect phase.
fn connect(md: &mut String, v: &Value) {
    let _ = writeln!(
        md,
        "- Connect: {} of {} in {} s = {} /s; handshake p50 {} ms, p99 {} ms, max {} ms; failures {}; {} worker process(es), source addresses {}.",
        fmt(num(v, "connect.ok"), 0),
        fmt(num(v, "connect.attempted"), 0),
        fmt(num(v, "connect.seconds"), 2),
        fmt(num(v, "connect.per_s"), 0),
        fmt(num(v, "connect.handshake.p50_ms"), 2),
        fmt(num(v, "connect.handshake.p99_ms"), 2),
        fmt(num(v, "connect.handshake.max_ms"), 2),
        at(v, "connect.failures").map_or_else(|| "{}".to_owned(), Value::to_string),
        fmt(num(v, "workers"), 0),
        raw(v, "src_addrs"),
    );
}

/// Server memory.
fn server(md: &mut String, v: &Value) {
    let _ = writeln!(
        md,
        "- Server RSS: baseline {} KiB, all connected {} KiB = {} KiB/socket; after verification{} {} KiB = {} KiB/socket; peak {} KiB.",
        fmt(num(v, "server.rss_baseline_kb"), 0),
        fmt(num(v, "server.rss_connected_kb"), 0),
        fmt(num(v, "server.kb_per_socket_connected"), 2),
        if num(v, "config.hold_s").unwrap_or(0.0) > 0.0 { " and hold" } else { "" },
        fmt(num(v, "server.rss_after_hold_kb"), 0),
        fmt(num(v, "server.kb_per_socket_after_hold"), 2),
        fmt(num(v, "server.rss_peak_kb"), 0),
    );
}

/// Publishing, delivery and latency.
fn publish(md: &mut String, v: &Value) {
    let _ = writeln!(
        md,
        "- Publish ({}): {} in {} s = {} /s ({} to nobody), payload {} B, {} socket(s) per user.",
        at(v, "publish.mode").and_then(Value::as_str).unwrap_or("?"),
        fmt(num(v, "publish.published"), 0),
        fmt(num(v, "publish.seconds"), 2),
        fmt(num(v, "publish.per_s"), 0),
        fmt(num(v, "publish.to_nobody"), 0),
        fmt(num(v, "publish.payload_bytes"), 0),
        fmt(num(v, "publish.fanout"), 0),
    );
    let _ = writeln!(
        md,
        "- Delivered: {} in {} s = {} /s. Loss: {} of {} expected ({} sockets with loss, max {} per socket), duplicates {}, out of order {}.",
        fmt(num(v, "delivery.delivered"), 0),
        fmt(num(v, "delivery.seconds"), 2),
        fmt(num(v, "delivery.per_s"), 0),
        fmt(num(v, "delivery.loss.lost"), 0),
        fmt(num(v, "delivery.loss.expected"), 0),
        fmt(num(v, "delivery.loss.sockets_with_loss"), 0),
        fmt(num(v, "delivery.loss.max_lost_per_socket"), 0),
        fmt(num(v, "delivery.loss.duplicates"), 0),
        fmt(num(v, "delivery.loss.out_of_order"), 0),
    );
    let _ = writeln!(
        md,
        "- Latency publish → receive: p50 {} ms, p90 {} ms, p99 {} ms, p99.9 {} ms, max {} ms (n = {}); median of the per-interval p99s {} ms.",
        fmt(num(v, "latency.p50_ms"), 3),
        fmt(num(v, "latency.p90_ms"), 3),
        fmt(num(v, "latency.p99_ms"), 3),
        fmt(num(v, "latency.p999_ms"), 3),
        fmt(num(v, "latency.max_ms"), 3),
        fmt(num(v, "latency.count"), 0),
        fmt(num(v, "latency_interval_p99_median_ms"), 3),
    );
}

/// The drain and its closes per interval.
fn drain(md: &mut String, v: &Value) {
    let hist = at(v, "drain.close_histogram")
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(|b| Some(format!("{:.1}s: {}", b.get(0)?.as_f64()?, b.get(1)?)))
                .collect::<Vec<_>>()
                .join(", ")
        })
        .unwrap_or_default();
    let _ = writeln!(
        md,
        "- Drain: {} sockets open at SIGTERM; first close {} s, last close {} s after SIGTERM; server exited after {} s; {} closes, {} with 1012 (all 1012: {}); close codes {}.\n- Closes per {} s after SIGTERM: {hist}.",
        fmt(num(v, "drain.sockets_open"), 0),
        fmt(num(v, "drain.first_close_after_s"), 2),
        fmt(num(v, "drain.last_close_after_s"), 2),
        fmt(num(v, "drain.server_exit_after_s"), 2),
        fmt(num(v, "drain.closes"), 0),
        fmt(num(v, "drain.closes_1012"), 0),
        raw(v, "drain.all_1012"),
        raw(v, "closes.codes"),
        fmt(num(v, "drain.histogram_bin_s"), 1),
    );
}

/// The CPU line of `phase`, if the report has one.
fn cpu_line(v: &Value, phase: &str) -> Option<String> {
    let u = at(v, &format!("cpu.{phase}"))?;
    let p = |k: &str| fmt(num(u, &format!("processes.{k}")), 0);
    let threads = at(u, "server_threads")
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .take(5)
                .filter_map(|t| {
                    Some(format!(
                        "{} {:.0}%",
                        t.get(0)?.as_str()?,
                        t.get(1)?.as_f64()?
                    ))
                })
                .collect::<Vec<_>>()
                .join(", ")
        })
        .unwrap_or_default();
    Some(format!(
        "CPU during {phase} (% of one core; 200 = the whole machine): server {}, loadgen {}, redis {}, other processes ~{}; machine softirq {}%, steal {}%, idle {}%. Busiest server threads: {threads}.",
        p("server"),
        p("loadgen"),
        p("redis"),
        fmt(num(u, "other_processes"), 0),
        fmt(num(u, "machine.softirq"), 1),
        fmt(num(u, "machine.steal"), 1),
        fmt(num(u, "machine.idle"), 1),
    ))
}
