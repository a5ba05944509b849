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
            snap.add_process(name, *pid);
        }
        if let Some(pid) = threads_of {
            snap.threads = thread_ticks(pid);
        }
        if let Ok(stat) = std::fs::read_to_string("/proc/stat") {
            (snap.cores, snap.system) = machine_ticks(&stat);
        }
        snap
    }

    /// Adds the CPU time of `pid` to `name`'s, or notes `name` missing when it is gone.
    fn add_process(&mut self, name: &str, pid: u32) {
        let Some(ticks) = stat_ticks(&pid.to_string()) else {
            self.missing.push(name.to_owned());
            return;
        };
        match self.procs.iter_mut().find(|(n, _)| n == name) {
            Some(entry) => entry.1 += ticks,
            None => self.procs.push((name.to_owned(), ticks)),
        }
    }
}

/// CPU time of every thread of `pid`: thread id → `(name, ticks)`.
fn thread_ticks(pid: u32) -> std::collections::BTreeMap<u64, (String, u64)> {
    let mut threads = std::collections::BTreeMap::new();
    let Ok(dir) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return threads;
    };
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
            threads.insert(tid_num, (name, ticks));
        }
    }
    threads
}

/// From `/proc/stat`: the number of cores, and the machine's `cpu` line (ticks per state).
fn machine_ticks(stat: &str) -> (usize, Vec<u64>) {
    let cores = stat
        .lines()
        .filter(|l| l.starts_with("cpu") && !l.starts_with("cpu "))
        .count();
    let system = stat
        .lines()
        .find(|l| l.starts_with("cpu "))
        .map(|line| {
            line.split_whitespace()
                .skip(1)
                .filter_map(|v| v.parse().ok())
                .collect()
        })
        .unwrap_or_default();
    (cores, system)
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

/// Names of the machine's CPU states, in `/proc/stat` order.
const MACHINE_STATES: [&str; 8] = [
    "user", "nice", "system", "idle", "iowait", "irq", "softirq", "steal",
];

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
        usage.server_threads = busiest_threads(a, b, pct);
        usage.cores = b.cores;
        usage.add_machine(a, b);
        usage
    }

    /// The machine's split over its CPU states, and the other processes' share.
    fn add_machine(&mut self, a: &CpuSnap, b: &CpuSnap) {
        let deltas: Vec<u64> = b
            .system
            .iter()
            .zip(a.system.iter().chain(std::iter::repeat(&0)))
            .map(|(y, x)| y.saturating_sub(*x))
            .take(MACHINE_STATES.len())
            .collect();
        let total: u64 = deltas.iter().sum();
        if total == 0 {
            return;
        }
        let busy = deltas.iter().take(3).sum::<u64>() as f64 / total as f64;
        let ours: f64 = self.processes.values().sum();
        self.other_processes =
            ((busy * b.cores as f64 * 100.0 - ours).max(0.0) * 10.0).round() / 10.0;
        for (name, d) in MACHINE_STATES.iter().zip(deltas) {
            self.machine.insert(
                (*name).to_owned(),
                ((d as f64 / total as f64) * 1000.0).round() / 10.0,
            );
        }
    }
}

/// The server's 12 busiest threads from `a` to `b` (at least 0.5 % of a core), busiest first.
fn busiest_threads(a: &CpuSnap, b: &CpuSnap, pct: impl Fn(u64) -> f64) -> Vec<(String, f64)> {
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
    threads
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
