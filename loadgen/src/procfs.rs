//! Reading another process from `/proc`: resident memory (`VmRSS`) and whether it still runs.

/// `VmRSS` of `pid` in KiB, if the process exists.
pub fn rss_kb(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}

/// Whether `pid` exists and is not a zombie (a zombie has exited; its parent has not reaped it).
pub fn alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/status")) {
        Err(_) => false,
        Ok(status) => !status
            .lines()
            .any(|l| l.starts_with("State:") && l.contains('Z')),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn reads_own_rss() {
        let me = std::process::id();
        assert!(super::rss_kb(me).unwrap_or(0) > 0);
        assert!(super::alive(me));
    }
}

/// Clock ticks per second of `/proc` CPU times (`getconf CLK_TCK`; 100 on every Linux
/// architecture the tool targets).
const CLK_TCK: f64 = 100.0;

/// `utime + stime` of `/proc/{path}/stat`, in clock ticks.
fn stat_ticks(path: &str) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{path}/stat")).ok()?;
    // The command name may contain spaces and parentheses: fields start after the last ')'.
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some(utime + stime)
}

/// CPU time of processes, of the server's threads and of the whole machine at one instant.
#[derive(Clone, Debug, Default)]
pub struct CpuSnap {
    at: Option<std::time::Instant>,
    procs: Vec<(String, u64)>,
    threads: std::collections::BTreeMap<u64, (String, u64)>,
    system: Vec<u64>,
    cores: usize,
    /// Names with a process that could not be read (exited): left out of the usage.
    missing: Vec<String>,
}

impl CpuSnap {
    /// Reads the CPU time of each named process in `procs` (a name may repeat: their times
    /// add up), and of every thread of `threads_of`.
    pub fn take(procs: &[(&str, u32)], threads_of: Option<u32>) -> Self {
        let mut snap = CpuSnap {
            at: Some(std::time::Instant::now()),
            ..CpuSnap::default()
        };
        for (name, pid) in procs {
            let Some(ticks) = stat_ticks(&pid.to_string()) else {
                snap.missing.push((*name).to_owned());
                continue;
            };
            match snap.procs.iter_mut().find(|(n, _)| n == name) {
                Some(entry) => entry.1 += ticks,
                None => snap.procs.push(((*name).to_owned(), ticks)),
            }
        }
        if let Some(pid) = threads_of {
            if let Ok(dir) = std::fs::read_dir(format!("/proc/{pid}/task")) {
                for entry in dir.flatten() {
                    let tid = entry.file_name().to_string_lossy().into_owned();
                    let Ok(tid_num) = tid.parse::<u64>() else {
                        continue;
                    };
                    let path = format!("{pid}/task/{tid}");
                    let name = std::fs::read_to_string(format!("/proc/{path}/comm"))
                        .unwrap_or_default()
                        .trim()
                        .to_owned();
                    if let Some(ticks) = stat_ticks(&path) {
                        snap.threads.insert(tid_num, (name, ticks));
                    }
                }
            }
        }
        if let Ok(stat) = std::fs::read_to_string("/proc/stat") {
            snap.cores = stat
                .lines()
                .filter(|l| l.starts_with("cpu") && !l.starts_with("cpu "))
                .count();
            if let Some(line) = stat.lines().find(|l| l.starts_with("cpu ")) {
                snap.system = line
                    .split_whitespace()
                    .skip(1)
                    .filter_map(|v| v.parse().ok())
                    .collect();
            }
        }
        snap
    }
}

/// CPU use between two snapshots, in percent of one core (200 = both cores of a 2-core box).
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct CpuUsage {
    /// Length of the window, seconds.
    pub seconds: f64,
    /// Per process (by name), % of one core (a process that exited before the end of the
    /// window is left out).
    pub processes: std::collections::BTreeMap<String, f64>,
    /// The server's busiest threads, `(name, % of one core)`.
    pub server_threads: Vec<(String, f64)>,
    /// The whole machine, % of all cores: user, nice, system, idle, iowait, irq, softirq, steal.
    pub machine: std::collections::BTreeMap<String, f64>,
    /// Cores of the machine.
    pub cores: usize,
    /// Approximate CPU of every other process on the machine (user + nice + system time of the
    /// machine minus the processes above), % of one core: other work sharing the cores.
    pub other_processes: f64,
}

impl CpuUsage {
    /// Usage from `a` to `b`.
    pub fn between(a: &CpuSnap, b: &CpuSnap) -> Self {
        let seconds = match (a.at, b.at) {
            (Some(x), Some(y)) => y.duration_since(x).as_secs_f64(),
            _ => 0.0,
        };
        let mut usage = CpuUsage {
            seconds: (seconds * 1000.0).round() / 1000.0,
            ..CpuUsage::default()
        };
        if seconds <= 0.0 {
            return usage;
        }
        let pct = |ticks: u64| ((ticks as f64 / CLK_TCK / seconds) * 1000.0).round() / 10.0;
        for (name, end) in b.procs.iter().filter(|(n, _)| !b.missing.contains(n)) {
            let start = a.procs.iter().find(|(n, _)| n == name).map_or(0, |p| p.1);
            usage
                .processes
                .insert(name.clone(), pct(end.saturating_sub(start)));
        }
        let mut threads: Vec<(String, f64)> = b
            .threads
            .iter()
            .map(|(tid, (name, end))| {
                let start = a.threads.get(tid).map_or(0, |t| t.1);
                (format!("{name} ({tid})"), pct(end.saturating_sub(start)))
            })
            .filter(|(_, p)| *p >= 0.5)
            .collect();
        threads.sort_by(|x, y| y.1.total_cmp(&x.1));
        threads.truncate(12);
        usage.server_threads = threads;
        let names = [
            "user", "nice", "system", "idle", "iowait", "irq", "softirq", "steal",
        ];
        let deltas: Vec<u64> = b
            .system
            .iter()
            .zip(a.system.iter().chain(std::iter::repeat(&0)))
            .map(|(y, x)| y.saturating_sub(*x))
            .take(names.len())
            .collect();
        let total: u64 = deltas.iter().sum();
        usage.cores = b.cores;
        if total > 0 {
            let busy = deltas.iter().take(3).sum::<u64>() as f64 / total as f64;
            let ours: f64 = usage.processes.values().sum();
            usage.other_processes =
                ((busy * b.cores as f64 * 100.0 - ours).max(0.0) * 10.0).round() / 10.0;
            for (name, d) in names.iter().zip(deltas) {
                usage.machine.insert(
                    (*name).to_owned(),
                    ((d as f64 / total as f64) * 1000.0).round() / 10.0,
                );
            }
        }
        usage
    }
}

#[cfg(test)]
mod cpu_tests {
    use super::*;

    #[test]
    fn measures_own_cpu() {
        let me = std::process::id();
        let a = CpuSnap::take(&[("me", me)], Some(me));
        let start = std::time::Instant::now();
        let mut x = 0u64;
        while start.elapsed() < std::time::Duration::from_millis(200) {
            x = x.wrapping_mul(31).wrapping_add(7);
        }
        std::hint::black_box(x);
        let b = CpuSnap::take(&[("me", me)], Some(me));
        let u = CpuUsage::between(&a, &b);
        assert!(u.processes["me"] > 20.0, "{u:?}");
        assert!(!u.server_threads.is_empty());
        assert!(u.machine.contains_key("idle"));
    }
}
