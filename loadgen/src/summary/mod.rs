//! `loadgen report --dir DIR`: turns the JSON reports that `bench/run.sh` wrote into one
//! Markdown page (results against the targets, per-scenario details, CPU split, plots), with an
//! optional hand-written notes file (profile findings) appended.
//!
//! Layout: `json` (lookups and number formatting), `targets` (the results table), `details`
//! (one section per run-mode scenario), `stuck` (the stuck-reader section).

mod details;
mod json;
mod stuck;
mod targets;

use std::fmt::Write as _;
use std::path::Path;

use serde_json::Value;

use self::json::load;
use crate::util::Flags;

/// Usage of the report mode.
pub const USAGE: &str = "\
loadgen report --dir DIR [--notes FILE.md] [--commit TEXT]
  Markdown summary of the scenario reports in DIR (idle-18k.json, unicast-flat.json, …) on stdout";

/// The scenario reports found in the bench directory (`None`: that scenario did not run).
struct Reports {
    idle: Option<Value>,
    idle5: Option<Value>,
    burst: Option<Value>,
    flat: Option<Value>,
    rate: Option<Value>,
    fan: Option<Value>,
    drain: Option<Value>,
    drain5: Option<Value>,
    stuck: Option<Value>,
}

impl Reports {
    /// Reads every scenario's `NAME.json` that exists in `dir`.
    fn load(dir: &Path) -> anyhow::Result<Self> {
        Ok(Self {
            idle: load(dir, "idle-18k")?,
            idle5: load(dir, "idle-5k")?,
            burst: load(dir, "connect-burst")?,
            flat: load(dir, "unicast-flat")?,
            rate: load(dir, "unicast-20k")?,
            fan: load(dir, "fanout")?,
            drain: load(dir, "drain-10k")?,
            drain5: load(dir, "drain-5k")?,
            stuck: load(dir, "stuck")?,
        })
    }
}

/// Entry point of `loadgen report`.
pub fn main(args: &[String]) -> anyhow::Result<()> {
    let f = Flags::parse(args, &[], &["dir", "notes", "commit"])?;
    let dir = Path::new(f.str("dir").unwrap_or("bench/results"));
    let mut md = String::new();
    intro(&mut md, f.str("commit"));
    let reports = Reports::load(dir)?;
    targets::write(&mut md, &reports, dir);
    details::write(&mut md, &reports);
    if let Some(v) = &reports.stuck {
        stuck::write(&mut md, v);
    }
    if let Some(notes) = f.str("notes") {
        if let Ok(text) = std::fs::read_to_string(notes) {
            let _ = writeln!(md, "{}", text.trim_end());
        }
    }
    print!("{md}");
    Ok(())
}

/// The title, the machine, the commit (if given) and the server settings of the bench.
fn intro(md: &mut String, commit: Option<&str>) {
    let _ = writeln!(md, "# Load bench report\n");
    let _ = writeln!(
        md,
        "Machine: {}. Client (`loadgen`, its worker processes), server and redis-server all share \
         these cores over loopback, so every number below is for the server with roughly half a \
         machine or less; the CPU lines say who used what. Bench processes ran at nice -10 when \
         run as root; \"other processes\" is CPU taken by unrelated work on the machine during the \
         phase.{}\n",
        machine(),
        commit
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
}

/// Cores, CPU model, memory and kernel of this machine.
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
