//! The parent process of a run: splits the sockets into slices of at most
//! `--max-sockets-per-worker`, re-executes itself once per slice with `--worker`, then drives
//! the phases (connect, verify, hold, publish, resume or drain), samples the server's RSS,
//! prints progress once a second, merges the workers' reports and writes the JSON report and
//! SVG plot.
//!
//! Every phase has a deadline and the whole run is bounded by `--max-run-s`; workers are killed
//! when the parent drops them, and exit by themselves when the parent's pipe closes.
//!
//! Layout:
//! - `config`: the options, their checks and their echo in the report;
//! - `shared`: what the workers have reported so far ([`shared::Shared`]);
//! - `workers`: splitting the sockets, starting the worker processes, commanding them;
//! - `monitor`: the progress line and the RSS sampler;
//! - `phases`: one method of [`Run`] per phase (connect, verify, hold, publish, drain, finish);
//! - `delivery`: the resume phase, the Redis blip during publishing, the history's memory and
//!   the server's delivery counters;
//! - `merge`: the workers' final reports merged into the [`RunReport`];
//! - `plot`: the SVG of the report.

mod config;
mod delivery;
mod merge;
mod monitor;
mod phases;
mod plot;
mod shared;
mod workers;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use anyhow::{anyhow, Context as _};

use self::config::Config;
pub use self::config::USAGE;
use self::monitor::Monitors;
use self::shared::SharedRef;
use self::workers::{Worker, WorkerPlan};
use crate::procfs::{self, CpuSnap, CpuUsage};
use crate::publisher::{self, Channels};
use crate::report::{PublishSummary, RunReport, VerifySummary};
use crate::util::{self, now_us};

/// Entry point of the run mode.
pub async fn main(args: &[String]) -> anyhow::Result<()> {
    let cfg = Config::parse(args)?;
    let limit = Duration::from_secs(cfg.max_run_s);
    tokio::time::timeout(limit, run(cfg)).await.map_err(|_| {
        anyhow!(
            "the run exceeded --max-run-s {}s and was stopped",
            limit.as_secs()
        )
    })?
}

/// The phases in order, then the report.
async fn run(cfg: Config) -> anyhow::Result<()> {
    let mut run = Run::new(cfg);
    run.seen.rss_baseline = run.rss_baseline()?;
    let mut redis = match &run.cfg.redis {
        Some(url) => Some(publisher::connect_any(url, run.cfg.redis_cluster).await?),
        None => None,
    };
    let plan = WorkerPlan::new(&run.cfg);
    let mut workers = run.start_workers(&plan).await?;
    run.watch_cpu(&workers);
    let connect_snap = run.snap();
    let monitors = Monitors::start(&run.shared, run.epoch_us, run.cfg.server_pid);
    run.connect(plan.total_sockets, &connect_snap).await?;
    if let (true, Some(conn)) = (run.cfg.verify, redis.as_mut()) {
        run.verify(conn).await?;
    }
    run.hold().await?;
    if let (true, Some(conn)) = (run.cfg.duration_s > 0.0, redis.as_mut()) {
        run.publish(conn).await?;
        run.await_catch_ups().await;
        run.measure_history(conn).await?;
    }
    if let (true, Some(conn)) = (run.cfg.resume, redis.as_mut()) {
        run.resume(conn, &mut workers).await?;
    }
    if run.cfg.drain {
        run.drain().await?;
    }
    run.finish(&mut workers).await?;
    if run.seen.blip.is_some() {
        let after = run.scrape().await;
        if let Some(blip) = run.seen.blip.as_mut() {
            blip.metrics_after = Some(after);
        }
    }
    monitors.stop();
    run.seen.rss_end = run.cfg.server_pid.and_then(procfs::rss_kb);
    drop(workers);
    let output = Output::of(&run.cfg);
    let report = merge::report(run, plan.count)?;
    output.write(&report)
}

/// One run in progress: its options, its clock, the workers' shared view, and what its phases
/// have recorded so far.
struct Run {
    cfg: Config,
    /// Start of the run, µs since the Unix epoch (the workers' bins count from it).
    epoch_us: u64,
    started: Instant,
    shared: SharedRef,
    channels: Channels,
    /// Phase boundaries: `(name, seconds since start)`.
    events: Vec<(String, f64)>,
    /// CPU use per phase.
    cpu: BTreeMap<String, CpuUsage>,
    /// Processes whose CPU time is accounted: `(role, pid)`.
    watched: Vec<(&'static str, u32)>,
    seen: Observed,
}

/// What the phases measured, for the report.
#[derive(Default)]
struct Observed {
    rss_baseline: Option<u64>,
    rss_connected: Option<u64>,
    rss_after_hold: Option<u64>,
    rss_end: Option<u64>,
    /// Sockets open two seconds after the connect phase.
    open_after_connect: u64,
    verify: Option<VerifySummary>,
    publish: Option<PublishSummary>,
    /// When the publish phase started, µs since the Unix epoch (0: no publish phase).
    publish_start_us: u64,
    /// Index after the last message published (verification round included).
    published_end: u64,
    drain: Option<DrainStart>,
    /// Messages published as the resume's backlog.
    resume_backlog_published: u64,
    resume: Option<ResumeStart>,
    blip: Option<BlipStart>,
    history_memory: Option<crate::redis_info::HistoryMemory>,
}

/// The resume as the parent saw it.
struct ResumeStart {
    /// Sockets that dropped their connection.
    sockets: u64,
    /// When the reconnect command went, µs since the Unix epoch.
    reconnect_us: u64,
    /// How long the sockets were away, seconds.
    away_s: f64,
    /// When every socket had its backlog (None: not within the wait).
    done_us: Option<u64>,
    /// The server's delivery counters over the phase.
    server_metrics: delivery::Counters,
}

/// The blip as the parent saw it (`at_us` stays None when the publish phase ended first).
#[derive(Default)]
struct BlipStart {
    at_us: Option<u64>,
    killed: u64,
    published_before: u64,
    /// Publish phase over, µs since the Unix epoch.
    publish_end_us: u64,
    /// Catch-ups after the broker reconnect the server counted, and when the count last moved.
    catch_ups: f64,
    catch_ups_last_us: Option<u64>,
    metrics_before: delivery::Counters,
    metrics_after: Option<delivery::Counters>,
}

/// The drain as the parent saw it: when SIGTERM went, how many sockets were open then, and
/// when the server process was gone (if within `--drain-wait-s`).
struct DrainStart {
    sigterm_us: u64,
    open: u64,
    exit_us: Option<u64>,
}

impl Run {
    fn new(cfg: Config) -> Self {
        Self {
            epoch_us: now_us(),
            started: Instant::now(),
            shared: SharedRef::default(),
            channels: Channels::new(&cfg.channel_prefix, &cfg.user_prefix),
            events: Vec::new(),
            cpu: BTreeMap::new(),
            watched: Vec::new(),
            seen: Observed {
                published_end: if cfg.verify { cfg.users } else { 0 },
                ..Observed::default()
            },
            cfg,
        }
    }

    /// Seconds since the start of the run.
    fn now_s(&self) -> f64 {
        secs_since(self.epoch_us, now_us())
    }

    /// Records a phase boundary for the report and the plot.
    fn mark(&mut self, name: &str) {
        let at = self.now_s();
        self.events.push((name.to_owned(), at));
    }

    /// Names the current phase in the progress line, and says so.
    fn set_phase(&self, phase: &str) {
        self.shared.borrow_mut().phase = phase.to_owned();
        eprintln!("[{:7.1}s] phase: {phase}", self.now_s());
    }

    /// The server's RSS before anything, when `--server-pid` is given.
    fn rss_baseline(&self) -> anyhow::Result<Option<u64>> {
        self.cfg
            .server_pid
            .map(|pid| {
                procfs::rss_kb(pid).ok_or_else(|| anyhow!("no process {pid} (--server-pid)"))
            })
            .transpose()
    }

    /// Starts the worker processes (the connect phase begins as they start).
    async fn start_workers(&mut self, plan: &WorkerPlan) -> anyhow::Result<Vec<Worker>> {
        self.shared.borrow_mut().expect_workers(plan.count);
        eprintln!(
            "loadgen: {} users x {} sockets = {} sockets in {} worker(s), source addresses {:?}",
            self.cfg.users,
            self.cfg.sockets_per_user,
            plan.total_sockets,
            plan.count,
            self.cfg.src_addrs
        );
        let exe = std::env::current_exe().context("locating the loadgen executable")?;
        self.set_phase("connect");
        self.mark("connect");
        let mut started = Vec::with_capacity(plan.count);
        for id in 0..plan.count {
            let spec = plan.spec(&self.cfg, id, self.epoch_us);
            started.push(workers::spawn_worker(&exe, spec, self.shared.clone()).await?);
        }
        Ok(started)
    }

    /// CPU accounting: server (and its threads), redis, this process and its workers.
    fn watch_cpu(&mut self, workers: &[Worker]) {
        self.watched = vec![("loadgen", std::process::id())];
        self.watched
            .extend(workers.iter().filter_map(|w| w.pid).map(|p| ("loadgen", p)));
        if let Some(pid) = self.cfg.server_pid {
            self.watched.push(("server", pid));
        }
        if let Some(pid) = self.cfg.redis_pid {
            self.watched.push(("redis", pid));
        }
    }

    /// CPU times of the watched processes now.
    fn snap(&self) -> CpuSnap {
        CpuSnap::take(&self.watched, self.cfg.server_pid)
    }

    /// Records the CPU use of `phase` from `start` to now.
    fn account_cpu(&mut self, phase: &str, start: &CpuSnap) {
        let usage = CpuUsage::between(start, &self.snap());
        self.cpu.insert(phase.to_owned(), usage);
    }
}

/// Where the report goes: `--out` (else stdout) and `--svg`.
struct Output {
    json: Option<String>,
    svg: Option<String>,
}

impl Output {
    fn of(cfg: &Config) -> Self {
        Self {
            json: cfg.out.clone(),
            svg: cfg.svg.clone(),
        }
    }

    /// Prints the summary on stderr, then writes the JSON report and the plot.
    fn write(&self, report: &RunReport) -> anyhow::Result<()> {
        util::write_report(
            report,
            &report.summary(),
            self.json.as_deref(),
            self.svg.as_deref(),
            || plot::plot(report),
        )
    }
}

/// Seconds from `epoch_us` to `at_us`.
fn secs_since(epoch_us: u64, at_us: u64) -> f64 {
    at_us.saturating_sub(epoch_us) as f64 / 1e6
}

async fn sleep_s(s: f64) {
    tokio::time::sleep(Duration::from_secs_f64(s.max(0.0))).await;
}
