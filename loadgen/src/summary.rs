//! `loadgen report --dir DIR`: turns the JSON reports that `bench/run.sh` wrote into one
//! Markdown page (results against the targets, per-scenario details, CPU split, plots), with an
//! optional hand-written notes file (profile findings) appended.

use std::fmt::Write as _;
use std::path::Path;

use anyhow::Context as _;
use serde_json::Value;

use crate::util::Flags;

/// Usage of the report mode.
pub const USAGE: &str = "\
loadgen report --dir DIR [--notes FILE.md] [--commit TEXT]
  Markdown summary of the scenario reports in DIR (idle-18k.json, unicast-flat.json, …) on stdout";

/// Looks up a dotted path (`a.b.c`, `rounds.0.flood`) in a JSON value.
fn at<'a>(v: &'a Value, path: &str) -> Option<&'a Value> {
    path.split('.')
        .try_fold(v, |v, key| match (v, key.parse::<usize>()) {
            (Value::Array(a), Ok(i)) => a.get(i),
            _ => v.get(key),
        })
}

fn num(v: &Value, path: &str) -> Option<f64> {
    at(v, path).and_then(Value::as_f64)
}

fn fmt(v: Option<f64>, decimals: usize) -> String {
    match v {
        None => "n/a".to_owned(),
        Some(x) if decimals == 0 => group(x.round() as i64),
        Some(x) => format!("{x:.decimals$}"),
    }
}

fn group(n: i64) -> String {
    let digits = n.unsigned_abs().to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    if n < 0 {
        format!("-{out}")
    } else {
        out
    }
}

fn verdict(ok: Option<bool>) -> &'static str {
    match ok {
        Some(true) => "met",
        Some(false) => "**missed**",
        None => "n/a",
    }
}

fn load(dir: &Path, name: &str) -> anyhow::Result<Option<Value>> {
    let path = dir.join(format!("{name}.json"));
    if !path.exists() {
        return Ok(None);
    }
    let text =
        std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
    let value =
        serde_json::from_str(&text).with_context(|| format!("parsing {}", path.display()))?;
    Ok(Some(value))
}

/// "a / b / c" of one field of `NAME.runs.json` (one entry per repeated run), if present.
fn runs(dir: &Path, name: &str, field: &str, decimals: usize) -> Option<String> {
    let text = std::fs::read_to_string(dir.join(format!("{name}.runs.json"))).ok()?;
    let runs: Vec<Value> = serde_json::from_str(&text).ok()?;
    Some(
        runs.iter()
            .map(|r| fmt(r.get(field).and_then(Value::as_f64), decimals))
            .collect::<Vec<_>>()
            .join(" / "),
    )
}

/// The sentence naming every repeated run of a scenario, or nothing.
fn runs_note(dir: &Path, name: &str) -> String {
    match (
        runs(dir, name, "p99_ms", 2),
        runs(dir, name, "steal_pct", 1),
        runs(dir, name, "other_processes_pct", 0),
    ) {
        (Some(p99), Some(steal), Some(other)) => format!(
            "; the median p99 of {} runs: p99 per run {p99} ms, host steal {steal} % of the machine, other processes {other} % of a core",
            p99.split(" / ").count()
        ),
        _ => String::new(),
    }
}

fn machine() -> String {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let cores = cpuinfo
        .lines()
        .filter(|l| l.starts_with("processor"))
        .count();
    let model = cpuinfo
        .lines()
        .find_map(|l| l.strip_prefix("model name"))
        .map(|m| m.trim_start_matches([' ', '\t', ':']).to_owned())
        .unwrap_or_else(|| "unknown CPU".to_owned());
    let mem_kb: f64 = std::fs::read_to_string("/proc/meminfo")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0.0);
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    format!(
        "{cores} cores ({model}), {:.0} GiB RAM, Linux {}",
        mem_kb / 1024.0 / 1024.0,
        kernel.trim()
    )
}

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

/// Entry point of `loadgen report`.
pub fn main(args: &[String]) -> anyhow::Result<()> {
    let f = Flags::parse(args, &[], &["dir", "notes", "commit"])?;
    let dir = Path::new(f.str("dir").unwrap_or("bench/results"));
    let mut md = String::new();
    let _ = writeln!(md, "# Load bench report\n");
    let _ = writeln!(
        md,
        "Machine: {}. Client (`loadgen`, its worker processes), server and redis-server all share \
         these cores over loopback, so every number below is for the server with roughly half a \
         machine or less; the CPU lines say who used what. Bench processes ran at nice -10 when \
         run as root; \"other processes\" is CPU taken by unrelated work on the machine during the \
         phase.{}\n",
        machine(),
        f.str("commit")
            .map(|c| format!(" Server and tool built from commit `{c}`."))
            .unwrap_or_default()
    );
    let _ = writeln!(
        md,
        "Server settings: workers 2, max_connections 50000, max_connections_per_user 20, \
         send_queue_max 1024, heartbeat 30 s, drain_timeout_s 10, Redis broker. redis-server runs \
         with `client-output-buffer-limit pubsub 0 0 0` (no limit), so Redis never cuts the \
         server's subscriber connection and the bench measures the server.\n"
    );

    let idle = load(dir, "idle-18k")?;
    let idle5 = load(dir, "idle-5k")?;
    let burst = load(dir, "connect-burst")?;
    let flat = load(dir, "unicast-flat")?;
    let rate = load(dir, "unicast-20k")?;
    let fan = load(dir, "fanout")?;
    let drain = load(dir, "drain-10k")?;
    let drain5 = load(dir, "drain-5k")?;
    let stuck = load(dir, "stuck")?;

    let _ = writeln!(md, "## Results against the targets\n");
    let _ = writeln!(md, "| scenario | measure | result | target | verdict |");
    let _ = writeln!(md, "|---|---|---|---|---|");
    let mut row = |s: &str, m: &str, r: String, t: &str, ok: Option<bool>| {
        let _ = writeln!(md, "| {s} | {m} | {r} | {t} | {} |", verdict(ok));
    };
    if let Some(v) = &idle {
        let kb = num(v, "server.kb_per_socket_connected");
        row(
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
        row(
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
    if let Some(v) = &idle5 {
        row(
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
    if let Some(v) = &burst {
        let r = num(v, "connect.per_s");
        row(
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
    if let Some(v) = &flat {
        let d = num(v, "delivery.per_s");
        row(
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
    if let Some(v) = &rate {
        let p99 = num(v, "latency.p99_ms");
        row(
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
    if let Some(v) = &fan {
        row(
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
    for (name, v) in [("4 drain 10k", &drain), ("4 drain 5k", &drain5)] {
        if let Some(v) = v {
            row(
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
    }
    if let Some(v) = &stuck {
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
        row(
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

    let _ = writeln!(md, "\n## Scenarios\n");
    let runs = [
        ("idle-18k", &idle),
        ("idle-5k", &idle5),
        ("connect-burst", &burst),
        ("unicast-flat", &flat),
        ("unicast-20k", &rate),
        ("fanout", &fan),
        ("drain-10k", &drain),
        ("drain-5k", &drain5),
    ];
    for (name, v) in runs {
        let Some(v) = v else { continue };
        let label = at(v, "label").and_then(Value::as_str).unwrap_or(name);
        let _ = writeln!(md, "### {label}\n");
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
            at(v, "src_addrs").map_or_else(String::new, Value::to_string),
        );
        if at(v, "server").is_some_and(|s| !s.is_null()) {
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
        if at(v, "publish").is_some_and(|s| !s.is_null()) {
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
        if at(v, "drain").is_some_and(|s| !s.is_null()) {
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
                at(v, "drain.all_1012").map_or_else(String::new, Value::to_string),
                at(v, "closes.codes").map_or_else(String::new, Value::to_string),
                fmt(num(v, "drain.histogram_bin_s"), 1),
            );
        }
        for phase in ["connect", "publish", "drain"] {
            if let Some(line) = cpu_line(v, phase) {
                let _ = writeln!(md, "- {line}");
            }
        }
        let _ = writeln!(md, "\n![{name}]({name}.svg)\n");
    }
    if let Some(v) = &stuck {
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
            at(v, "rss.after_each_round_kb").map_or_else(String::new, Value::to_string),
            at(v, "rss.back_near_baseline").map_or_else(String::new, Value::to_string),
        );
        let rounds = at(v, "rounds")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        for r in &rounds {
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
                at(r, "stuck_socket.close_code").map_or_else(String::new, Value::to_string),
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
        let _ = writeln!(
            md,
            "- Server metrics over the run (after − before): {}.",
            at(v, "server_metrics").map_or_else(String::new, Value::to_string),
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
            at(v, "live.closed").map_or_else(String::new, Value::to_string),
        );
        let _ = writeln!(md, "\n![stuck](stuck.svg)\n");
    }
    if let Some(notes) = f.str("notes") {
        if let Ok(text) = std::fs::read_to_string(notes) {
            let _ = writeln!(md, "{}", text.trim_end());
        }
    }
    print!("{md}");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_numbers() {
        assert_eq!(group(1234567), "1,234,567");
        assert_eq!(group(-12), "-12");
        assert_eq!(fmt(Some(1.234), 2), "1.23");
        assert_eq!(fmt(None, 2), "n/a");
        let v: Value = serde_json::json!({"a": {"b": 3}});
        assert_eq!(num(&v, "a.b"), Some(3.0));
        assert_eq!(num(&v, "a.c"), None);
    }
}
