//! The parent process of a run: splits the sockets into slices of at most
//! `--max-sockets-per-worker`, re-executes itself once per slice with `--worker`, then drives
//! the phases (connect, verify, hold, publish or drain), samples the server's RSS, prints
//! progress once a second, merges the workers' reports and writes the JSON report and SVG plot.
//!
//! Every phase has a deadline and the whole run is bounded by `--max-run-s`; workers are killed
//! when the parent drops them, and exit by themselves when the parent's pipe closes.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::net::IpAddr;
use std::process::Stdio;
use std::rc::Rc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context as _};
use futures_util::stream::FuturesUnordered;
use futures_util::StreamExt as _;
use serde_json::json;
use tokio::io::{AsyncBufReadExt as _, AsyncWriteExt as _, BufReader};
use tokio::process::{Child, ChildStdin};

use crate::hist::{self, Hist};
use crate::procfs::{self, CpuSnap, CpuUsage};
use crate::protocol::{Command, Event, LossReport, Tick, WorkerFinal, WorkerSpec};
use crate::publisher::{self, Channels, Sent};
use crate::report::{
    ConnectSummary, DeliverySummary, DrainSummary, PublishSummary, RunReport, Series,
    ServerSummary, VerifySummary,
};
use crate::svg;
use crate::util::{now_us, Flags, WsUrl};

/// Usage of the run mode.
pub const USAGE: &str = "\
loadgen [OPTIONS]   open users x sockets, then verify / hold / publish / drain, and report

Target and auth:
  --url URL                    ws://host:port/path of the server (required)
  --secret S                   HS256 secret (default: $LOADGEN_SECRET)
  --token-ttl-s N              token lifetime (3600)
  --user-prefix P              user ids are P-0 .. P-(users-1) (lg)
Sockets:
  --users N                    users (1000)
  --sockets-per-user K         sockets per user (1)
  --connect-concurrency N      connects in flight, all workers together (512)
  --connect-timeout-s N        per connect + upgrade (10)
  --src-addrs LIST|N|none      source addresses, e.g. 127.0.0.2,127.0.0.3, or N for
                               127.0.0.1..N (default: 4 for a loopback target, else none)
  --max-sockets-per-worker N   sockets per worker process (9000; the open-files cap is per process)
Publishing (needs --redis):
  --redis URL                  redis://host:port of the server's Redis
  --channel-prefix P           (ws:)
  --no-verify                  skip the round of one message per user that proves every socket
                               is subscribed before anything is timed
  --duration-s N               publish for N seconds (0: no publishing)
  --rate N                     messages/s; 0 = flat out (default 0)
  --payload BYTES              payload size (256)
  --pipeline N                 PUBLISHes per pipeline (512)
  --pipelines-in-flight N      pipelines awaiting replies at once (2)
  --max-in-flight N            flat out: deliveries published but not yet received (50000)
  --settle-s N                 after publishing, wait up to N s for stragglers (5)
Server:
  --server-pid PID             sample /proc/PID/status VmRSS, and the CPU time of its threads
  --redis-pid PID              also account the CPU time of redis-server
  --hold-s N                   keep the sockets idle N s after connect/verify (0)
  --drain                      after the hold, SIGTERM --server-pid and time the closes
  --drain-wait-s N             longest wait for the drain (60)
Output:
  --label TEXT                 scenario name in the report
  --out FILE.json              write the report (default: stdout)
  --svg FILE.svg               write the plot
  --bin-ms N                   time-series interval (1000)
  --max-run-s N                hard limit of the whole run (900)";

const SWITCHES: &[&str] = &["no-verify", "drain"];
const VALUED: &[&str] = &[
    "url",
    "secret",
    "token-ttl-s",
    "user-prefix",
    "users",
    "sockets-per-user",
    "connect-concurrency",
    "connect-timeout-s",
    "src-addrs",
    "max-sockets-per-worker",
    "redis",
    "channel-prefix",
    "duration-s",
    "rate",
    "payload",
    "pipeline",
    "pipelines-in-flight",
    "max-in-flight",
    "settle-s",
    "server-pid",
    "redis-pid",
    "hold-s",
    "drain-wait-s",
    "label",
    "out",
    "svg",
    "bin-ms",
    "max-run-s",
];

/// Options of a run.
#[derive(Debug, Clone)]
struct Config {
    url: String,
    secret: String,
    token_ttl_s: u64,
    user_prefix: String,
    users: u64,
    sockets_per_user: u64,
    connect_concurrency: usize,
    connect_timeout_s: u64,
    src_addrs: Vec<String>,
    max_sockets_per_worker: u64,
    redis: Option<String>,
    channel_prefix: String,
    verify: bool,
    duration_s: f64,
    rate: u64,
    payload: usize,
    pipeline: u64,
    pipelines_in_flight: usize,
    max_in_flight: u64,
    settle_s: f64,
    server_pid: Option<u32>,
    redis_pid: Option<u32>,
    hold_s: f64,
    drain: bool,
    drain_wait_s: f64,
    label: String,
    out: Option<String>,
    svg: Option<String>,
    bin_ms: u64,
    max_run_s: u64,
}

impl Config {
    fn parse(args: &[String]) -> anyhow::Result<Self> {
        let f = Flags::parse(args, SWITCHES, VALUED)?;
        let url = f
            .str("url")
            .ok_or_else(|| anyhow!("--url is required"))?
            .to_owned();
        let parsed = WsUrl::parse(&url)?;
        let secret = match f.str("secret") {
            Some(s) => s.to_owned(),
            None => std::env::var("LOADGEN_SECRET")
                .map_err(|_| anyhow!("--secret or $LOADGEN_SECRET is required"))?,
        };
        let users: u64 = f.num("users", 1000)?;
        let sockets_per_user: u64 = f.num("sockets-per-user", 1)?;
        if users == 0 || sockets_per_user == 0 {
            bail!("--users and --sockets-per-user must be at least 1");
        }
        let loopback = parsed
            .host
            .parse::<IpAddr>()
            .map(|ip| ip.is_loopback())
            .unwrap_or(parsed.host == "localhost");
        let src_addrs = match f.str("src-addrs") {
            None if loopback => (1..=4).map(|i| format!("127.0.0.{i}")).collect(),
            None | Some("none") => Vec::new(),
            Some(list) => match list.parse::<u8>() {
                Ok(n) => (1..=n).map(|i| format!("127.0.0.{i}")).collect(),
                Err(_) => list.split(',').map(|s| s.trim().to_owned()).collect(),
            },
        };
        for a in &src_addrs {
            a.parse::<IpAddr>()
                .with_context(|| format!("--src-addrs: {a:?} is not an IP address"))?;
        }
        let drain = f.switch("drain");
        let server_pid: Option<u32> = f.opt("server-pid")?;
        if drain && server_pid.is_none() {
            bail!("--drain needs --server-pid");
        }
        let redis = f.str("redis").map(str::to_owned);
        let duration_s: f64 = f.num("duration-s", 0.0)?;
        if duration_s > 0.0 && redis.is_none() {
            bail!("--duration-s needs --redis");
        }
        let max_sockets_per_worker: u64 = f.num("max-sockets-per-worker", 9000)?;
        if max_sockets_per_worker == 0 || max_sockets_per_worker > 18_000 {
            bail!("--max-sockets-per-worker must be 1..=18000");
        }
        Ok(Self {
            url,
            secret,
            token_ttl_s: f.num("token-ttl-s", 3600)?,
            user_prefix: f.str("user-prefix").unwrap_or("lg").to_owned(),
            users,
            sockets_per_user,
            connect_concurrency: f.num("connect-concurrency", 512)?,
            connect_timeout_s: f.num("connect-timeout-s", 10)?,
            src_addrs,
            max_sockets_per_worker,
            verify: redis.is_some() && !f.switch("no-verify"),
            redis,
            channel_prefix: f.str("channel-prefix").unwrap_or("ws:").to_owned(),
            duration_s,
            rate: f.num("rate", 0)?,
            payload: f.num("payload", 256)?,
            pipeline: f.num::<u64>("pipeline", 512)?.max(1),
            pipelines_in_flight: f.num::<usize>("pipelines-in-flight", 2)?.max(1),
            max_in_flight: f.num::<u64>("max-in-flight", 50_000)?.max(1),
            settle_s: f.num("settle-s", 5.0)?,
            server_pid,
            redis_pid: f.opt("redis-pid")?,
            hold_s: f.num("hold-s", 0.0)?,
            drain,
            drain_wait_s: f.num("drain-wait-s", 60.0)?,
            label: f.str("label").unwrap_or("loadgen run").to_owned(),
            out: f.str("out").map(str::to_owned),
            svg: f.str("svg").map(str::to_owned),
            bin_ms: f.num::<u64>("bin-ms", 1000)?.max(10),
            max_run_s: f.num("max-run-s", 900)?,
        })
    }

    fn echo(&self) -> BTreeMap<String, serde_json::Value> {
        let mut m = BTreeMap::new();
        m.insert("url".into(), json!(self.url));
        m.insert("users".into(), json!(self.users));
        m.insert("sockets_per_user".into(), json!(self.sockets_per_user));
        m.insert(
            "connect_concurrency".into(),
            json!(self.connect_concurrency),
        );
        m.insert(
            "max_sockets_per_worker".into(),
            json!(self.max_sockets_per_worker),
        );
        m.insert("redis".into(), json!(self.redis));
        m.insert("verify".into(), json!(self.verify));
        m.insert("duration_s".into(), json!(self.duration_s));
        m.insert("rate".into(), json!(self.rate));
        m.insert("payload".into(), json!(self.payload));
        m.insert("pipeline".into(), json!(self.pipeline));
        m.insert(
            "pipelines_in_flight".into(),
            json!(self.pipelines_in_flight),
        );
        m.insert("max_in_flight".into(), json!(self.max_in_flight));
        m.insert("hold_s".into(), json!(self.hold_s));
        m.insert("drain".into(), json!(self.drain));
        m.insert("bin_ms".into(), json!(self.bin_ms));
        m
    }
}

/// What the parent knows while the run goes on (shared by its tasks; one thread).
#[derive(Default)]
struct Shared {
    ticks: Vec<Tick>,
    finals: Vec<Option<WorkerFinal>>,
    fatal: Option<String>,
    exited: Vec<bool>,
    phase: String,
    published: u64,
    to_nobody: u64,
    /// Messages published per series bin.
    published_bins: BTreeMap<u64, u64>,
    rss: Vec<(f64, u64)>,
}

impl Shared {
    fn total(&self) -> Tick {
        let mut t = Tick {
            connect_done: true,
            ..Tick::default()
        };
        for w in &self.ticks {
            t.connected += w.connected;
            t.failed += w.failed;
            t.connect_done &= w.connect_done;
            t.open += w.open;
            t.delivered += w.delivered;
            t.closed += w.closed;
        }
        t
    }

    fn check(&self) -> anyhow::Result<()> {
        if let Some(error) = &self.fatal {
            bail!("a worker failed: {error}");
        }
        if let Some(i) = self
            .exited
            .iter()
            .zip(&self.finals)
            .position(|(exited, fin)| *exited && fin.is_none())
        {
            bail!("worker {i} exited without reporting");
        }
        Ok(())
    }
}

type SharedRef = Rc<RefCell<Shared>>;

struct Worker {
    _child: Child,
    stdin: ChildStdin,
    pid: Option<u32>,
}

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

fn secs_since(epoch_us: u64, at_us: u64) -> f64 {
    at_us.saturating_sub(epoch_us) as f64 / 1e6
}

async fn sleep_s(s: f64) {
    tokio::time::sleep(Duration::from_secs_f64(s.max(0.0))).await;
}

async fn wait_until(
    shared: &SharedRef,
    limit: Duration,
    mut done: impl FnMut(&Shared) -> bool,
) -> anyhow::Result<bool> {
    let start = Instant::now();
    loop {
        {
            let s = shared.borrow();
            s.check()?;
            if done(&s) {
                return Ok(true);
            }
        }
        if start.elapsed() >= limit {
            return Ok(false);
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

async fn run(cfg: Config) -> anyhow::Result<()> {
    let epoch_us = now_us();
    let started = Instant::now();
    let shared: SharedRef = Rc::default();
    let mut events: Vec<(String, f64)> = Vec::new();
    let mark = |events: &mut Vec<(String, f64)>, name: &str| {
        events.push((name.to_owned(), secs_since(epoch_us, now_us())));
    };
    let set_phase = |phase: &str| {
        shared.borrow_mut().phase = phase.to_owned();
        eprintln!("[{:7.1}s] phase: {phase}", secs_since(epoch_us, now_us()));
    };

    // Server RSS before anything.
    let rss_baseline = match cfg.server_pid {
        Some(pid) => {
            Some(procfs::rss_kb(pid).ok_or_else(|| anyhow!("no process {pid} (--server-pid)"))?)
        }
        None => None,
    };
    let mut redis = match &cfg.redis {
        Some(url) => Some(publisher::connect(url).await?),
        None => None,
    };

    // Workers.
    let total_sockets = cfg.users * cfg.sockets_per_user;
    let users_per_worker = (cfg.max_sockets_per_worker / cfg.sockets_per_user).max(1);
    let worker_count = cfg.users.div_ceil(users_per_worker) as usize;
    let per_worker_concurrency = cfg.connect_concurrency.div_ceil(worker_count).max(1);
    {
        let mut s = shared.borrow_mut();
        s.ticks = vec![Tick::default(); worker_count];
        s.finals = vec![None; worker_count];
        s.exited = vec![false; worker_count];
    }
    eprintln!(
        "loadgen: {} users x {} sockets = {total_sockets} sockets in {worker_count} worker(s), source addresses {:?}",
        cfg.users, cfg.sockets_per_user, cfg.src_addrs
    );
    let exe = std::env::current_exe().context("locating the loadgen executable")?;
    let bin_us = cfg.bin_ms * 1000;
    let max_run_ms = cfg.max_run_s * 1000;
    let mut workers = Vec::with_capacity(worker_count);
    set_phase("connect");
    mark(&mut events, "connect");
    for id in 0..worker_count {
        let user_start = id as u64 * users_per_worker;
        let user_end = (user_start + users_per_worker).min(cfg.users);
        let spec = WorkerSpec {
            id,
            url: cfg.url.clone(),
            secret: cfg.secret.clone(),
            token_ttl_s: cfg.token_ttl_s,
            user_prefix: cfg.user_prefix.clone(),
            user_start,
            user_end,
            sockets_per_user: cfg.sockets_per_user,
            socket_offset: user_start * cfg.sockets_per_user,
            connect_concurrency: per_worker_concurrency,
            connect_timeout_ms: cfg.connect_timeout_s * 1000,
            src_addrs: cfg.src_addrs.clone(),
            epoch_us,
            bin_us,
            latency_from_seq: u64::from(cfg.verify),
            max_run_ms,
        };
        workers.push(spawn_worker(&exe, spec, shared.clone()).await?);
    }

    // CPU accounting: server (and its threads), redis, this process and its workers.
    let mut watched: Vec<(&str, u32)> = vec![("loadgen", std::process::id())];
    watched.extend(workers.iter().filter_map(|w| w.pid).map(|p| ("loadgen", p)));
    if let Some(pid) = cfg.server_pid {
        watched.push(("server", pid));
    }
    if let Some(pid) = cfg.redis_pid {
        watched.push(("redis", pid));
    }
    let snap = || CpuSnap::take(&watched, cfg.server_pid);
    let mut cpu = BTreeMap::new();
    let connect_snap = snap();

    // Progress and RSS sampling.
    let progress = tokio::task::spawn_local(progress(shared.clone(), epoch_us, cfg.server_pid));
    let sampler = cfg
        .server_pid
        .map(|pid| tokio::task::spawn_local(sample_rss(shared.clone(), epoch_us, pid)));

    // Connect.
    let connect_limit = Duration::from_secs(cfg.connect_timeout_s + 5)
        + Duration::from_secs_f64(total_sockets as f64 / 500.0);
    if !wait_until(&shared, connect_limit, |s| s.total().connect_done).await? {
        bail!("connect phase did not finish within {connect_limit:?}");
    }
    mark(&mut events, "connected");
    cpu.insert(
        "connect".to_owned(),
        CpuUsage::between(&connect_snap, &snap()),
    );
    let connected = shared.borrow().total();
    eprintln!(
        "[{:7.1}s] connected {} of {total_sockets} ({} failed)",
        started.elapsed().as_secs_f64(),
        connected.connected,
        connected.failed
    );
    sleep_s(2.0).await; // let the server settle (sessions join hubs, Redis subscribes)
    let open_after_connect = shared.borrow().total().open;
    let rss_connected = cfg.server_pid.and_then(procfs::rss_kb);

    // Verify: one message per user; every open socket must get it.
    let channels = Channels::new(&cfg.channel_prefix, &cfg.user_prefix);
    let mut verify = None;
    if let (true, Some(conn)) = (cfg.verify, redis.as_mut()) {
        set_phase("verify");
        let t0 = Instant::now();
        let mut pending: Vec<u64> = (0..cfg.users).collect();
        let mut retries = 0u64;
        let deadline = Instant::now() + Duration::from_secs(30);
        while !pending.is_empty() && Instant::now() < deadline {
            let mut missed = Vec::new();
            for chunk in pending.chunks(cfg.pipeline as usize) {
                let batch: Vec<(u64, u64)> = chunk.iter().map(|&u| (u, 0)).collect();
                missed.extend(publisher::publish_each(conn, &channels, &batch, cfg.payload).await?);
            }
            if !missed.is_empty() {
                retries += missed.len() as u64;
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            pending = missed;
        }
        if !pending.is_empty() {
            eprintln!(
                "warning: {} users never had a subscriber (not connected?)",
                pending.len()
            );
        }
        {
            let mut s = shared.borrow_mut();
            s.published = cfg.users;
        }
        let target = open_after_connect;
        let got = wait_until(&shared, Duration::from_secs(30), |s| {
            s.total().delivered >= target
        })
        .await?;
        let delivered = shared.borrow().total().delivered;
        if !got {
            eprintln!("warning: verification round: {delivered} of {target} sockets got it");
        }
        verify = Some(VerifySummary {
            sockets: target,
            delivered,
            seconds: t0.elapsed().as_secs_f64(),
            retries,
        });
        mark(&mut events, "verified");
    }

    if cfg.hold_s > 0.0 {
        set_phase("hold");
        sleep_s(cfg.hold_s).await;
        shared.borrow().check()?;
    }
    let rss_after_hold = if verify.is_some() || cfg.hold_s > 0.0 {
        cfg.server_pid.and_then(procfs::rss_kb)
    } else {
        None
    };

    // Publish.
    let first_index = if cfg.verify { cfg.users } else { 0 };
    let mut publish = None;
    let mut publish_start_us = 0;
    let mut next = first_index;
    if let (true, Some(conn)) = (cfg.duration_s > 0.0, redis.as_mut()) {
        set_phase(if cfg.rate > 0 {
            "publish (fixed rate)"
        } else {
            "publish (flat out)"
        });
        mark(&mut events, "publish");
        publish_start_us = now_us();
        let publish_snap = snap();
        let t0 = Instant::now();
        let live = shared.borrow().total().open.max(1);
        let per_message = live as f64 / cfg.users as f64;
        next = publish_phase(
            &cfg,
            conn,
            &channels,
            &shared,
            first_index,
            per_message,
            epoch_us,
        )
        .await?;
        let seconds = t0.elapsed().as_secs_f64();
        cpu.insert(
            "publish".to_owned(),
            CpuUsage::between(&publish_snap, &snap()),
        );
        mark(&mut events, "publish end");
        let to_nobody = shared.borrow().to_nobody;
        publish = Some(PublishSummary {
            mode: if cfg.rate > 0 { "fixed" } else { "flat-out" }.to_owned(),
            target_per_s: cfg.rate,
            published: next - first_index,
            seconds,
            per_s: (next - first_index) as f64 / seconds,
            to_nobody,
            payload_bytes: cfg.payload,
            fanout: cfg.sockets_per_user,
        });
    }

    // Drain.
    let mut drain_raw = None;
    if cfg.drain {
        let pid = cfg
            .server_pid
            .ok_or_else(|| anyhow!("--drain needs --server-pid"))?;
        set_phase("drain");
        let open = shared.borrow().total().open;
        let sigterm_us = now_us();
        let drain_snap = snap();
        mark(&mut events, "SIGTERM");
        let status = std::process::Command::new("kill")
            .args(["-TERM", &pid.to_string()])
            .status()
            .context("running kill -TERM")?;
        if !status.success() {
            bail!("kill -TERM {pid} failed: {status}");
        }
        let limit = Duration::from_secs_f64(cfg.drain_wait_s);
        let t0 = Instant::now();
        let mut exit_us = None;
        while t0.elapsed() < limit {
            shared.borrow().check()?;
            if exit_us.is_none() && !procfs::alive(pid) {
                exit_us = Some(now_us());
                mark(&mut events, "server exit");
            }
            if exit_us.is_some() && shared.borrow().total().open == 0 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        cpu.insert("drain".to_owned(), CpuUsage::between(&drain_snap, &snap()));
        drain_raw = Some((sigterm_us, open, exit_us));
    }

    // Finish: every worker reports.
    set_phase("report");
    let published = (cfg.verify || publish.is_some()).then_some(next);
    let command = Command::Finish {
        published,
        users: cfg.users,
        wait_ms: (cfg.settle_s * 1000.0) as u64,
    };
    let line = serde_json::to_string(&command).context("serialising a command")? + "\n";
    for w in &mut workers {
        w.stdin
            .write_all(line.as_bytes())
            .await
            .context("writing to a worker")?;
        w.stdin.flush().await.context("writing to a worker")?;
    }
    let finish_limit = Duration::from_secs_f64(cfg.settle_s + 30.0);
    if !wait_until(&shared, finish_limit, |s| {
        s.finals.iter().all(Option::is_some)
    })
    .await?
    {
        bail!("workers did not report within {finish_limit:?}");
    }
    progress.abort();
    if let Some(s) = sampler {
        s.abort();
    }
    let rss_end = cfg.server_pid.and_then(procfs::rss_kb);
    drop(workers);

    // Merge.
    let s = shared.borrow();
    let finals: Vec<&WorkerFinal> = s.finals.iter().flatten().collect();
    let mut report = RunReport {
        label: cfg.label.clone(),
        config: cfg.echo(),
        workers: worker_count,
        src_addrs: cfg.src_addrs.clone(),
        events,
        verify,
        cpu,
        elapsed_s: started.elapsed().as_secs_f64(),
        ..RunReport::default()
    };
    report.connect = merge_connect(&finals, cfg.connect_concurrency)?;
    if let (Some(pid), Some(base), Some(conn)) = (cfg.server_pid, rss_baseline, rss_connected) {
        let per = |kb: u64| {
            (kb.saturating_sub(base) as f64 / open_after_connect.max(1) as f64 * 100.0).round()
                / 100.0
        };
        report.server = Some(ServerSummary {
            pid,
            rss_baseline_kb: base,
            rss_connected_kb: conn,
            rss_after_hold_kb: rss_after_hold,
            rss_peak_kb: s.rss.iter().map(|r| r.1).max().unwrap_or(conn).max(conn),
            rss_end_kb: rss_end.or(s.rss.last().map(|r| r.1)).unwrap_or(0),
            kb_per_socket_connected: per(conn),
            kb_per_socket_after_hold: rss_after_hold.map(per),
            sockets_open: open_after_connect,
        });
    }
    let mut latency = hist::precise()?;
    let mut closes = hist::precise()?;
    let mut loss = LossReport::default();
    let (mut last_timed, mut unparsed) = (0u64, 0u64);
    for f in &finals {
        hist::merge_into(&mut latency, &f.latency_hist)?;
        hist::merge_into(&mut closes, &f.close_hist)?;
        last_timed = last_timed.max(f.last_timed_us);
        unparsed += f.unparsed;
        for (code, n) in &f.close_codes {
            *report.closes.codes.entry(code.clone()).or_default() += n;
        }
        report.closes.open_at_end += f.open_at_end;
        if let Some(l) = &f.loss {
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
    }
    report.latency = hist::percentiles(&latency);
    if publish.is_some() || cfg.verify {
        let seconds = if publish_start_us > 0 {
            secs_since(publish_start_us, last_timed)
        } else {
            0.0
        };
        report.delivery = Some(DeliverySummary {
            delivered: latency.len(),
            seconds,
            per_s: if seconds > 0.0 {
                latency.len() as f64 / seconds
            } else {
                0.0
            },
            loss,
            unparsed,
        });
    }
    report.publish = publish;
    if let Some((sigterm_us, open, exit_us)) = drain_raw {
        report.drain = Some(drain_summary(
            &closes,
            &report.closes.codes,
            epoch_us,
            sigterm_us,
            open,
            exit_us,
        ));
    }
    report.series = series(&finals, &s, epoch_us, cfg.bin_ms)?;
    let mut p99s: Vec<f64> = report
        .series
        .p99_ms
        .iter()
        .copied()
        .filter(|p| *p > 0.0)
        .collect();
    p99s.sort_by(f64::total_cmp);
    report.latency_interval_p99_median_ms = p99s.get(p99s.len() / 2).copied().unwrap_or(0.0);
    drop(s);

    eprint!("{}", report.summary());
    let text = serde_json::to_string_pretty(&report).context("serialising the report")?;
    match &cfg.out {
        Some(path) => {
            std::fs::write(path, text + "\n").with_context(|| format!("writing {path}"))?
        }
        None => println!("{text}"),
    }
    if let Some(path) = &cfg.svg {
        std::fs::write(path, plot(&report)).with_context(|| format!("writing {path}"))?;
    }
    Ok(())
}

async fn spawn_worker(
    exe: &std::path::Path,
    spec: WorkerSpec,
    shared: SharedRef,
) -> anyhow::Result<Worker> {
    let id = spec.id;
    let mut child = tokio::process::Command::new(exe)
        .arg("--worker")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()
        .with_context(|| format!("starting worker {id} ({})", exe.display()))?;
    let mut stdin = child
        .stdin
        .take()
        .ok_or_else(|| anyhow!("worker {id}: no stdin"))?;
    let stdout = child
        .stdout
        .take()
        .ok_or_else(|| anyhow!("worker {id}: no stdout"))?;
    let line = serde_json::to_string(&spec).context("serialising a worker spec")? + "\n";
    stdin
        .write_all(line.as_bytes())
        .await
        .with_context(|| format!("sending the spec to worker {id}"))?;
    stdin.flush().await.context("flushing a worker's stdin")?;
    tokio::task::spawn_local(async move {
        let mut lines = BufReader::new(stdout).lines();
        loop {
            match lines.next_line().await {
                Ok(Some(line)) => match serde_json::from_str::<Event>(&line) {
                    Ok(Event::Tick(t)) => shared.borrow_mut().ticks[id] = t,
                    Ok(Event::Final(f)) => shared.borrow_mut().finals[id] = Some(*f),
                    Ok(Event::Fatal { error }) => {
                        shared.borrow_mut().fatal = Some(format!("worker {id}: {error}"));
                    }
                    Err(e) => {
                        shared.borrow_mut().fatal =
                            Some(format!("worker {id}: bad line {line:?}: {e}"));
                    }
                },
                Ok(None) | Err(_) => {
                    shared.borrow_mut().exited[id] = true;
                    return;
                }
            }
        }
    });
    Ok(Worker {
        pid: child.id(),
        _child: child,
        stdin,
    })
}

async fn progress(shared: SharedRef, epoch_us: u64, pid: Option<u32>) {
    let mut interval = tokio::time::interval(Duration::from_secs(1));
    let (mut last_delivered, mut last_published) = (0u64, 0u64);
    interval.tick().await;
    loop {
        interval.tick().await;
        let s = shared.borrow();
        let t = s.total();
        let rss = pid.and_then(procfs::rss_kb).map_or_else(String::new, |kb| {
            format!(" | server RSS {:.1} MiB", kb as f64 / 1024.0)
        });
        eprintln!(
            "[{:7.1}s] {} | connected {} failed {} open {} closed {} | published {} (+{}/s) | delivered {} (+{}/s){rss}",
            secs_since(epoch_us, now_us()),
            s.phase,
            t.connected,
            t.failed,
            t.open,
            t.closed,
            s.published,
            s.published.saturating_sub(last_published),
            t.delivered,
            t.delivered.saturating_sub(last_delivered),
        );
        last_delivered = t.delivered;
        last_published = s.published;
    }
}

async fn sample_rss(shared: SharedRef, epoch_us: u64, pid: u32) {
    let mut interval = tokio::time::interval(Duration::from_millis(250));
    loop {
        interval.tick().await;
        if let Some(kb) = procfs::rss_kb(pid) {
            shared
                .borrow_mut()
                .rss
                .push((secs_since(epoch_us, now_us()), kb));
        }
    }
}

/// Publishes for `--duration-s`, at `--rate` or flat out (bounded by `--max-in-flight`);
/// returns the index after the last message published.
async fn publish_phase(
    cfg: &Config,
    conn: &mut redis::aio::MultiplexedConnection,
    channels: &Channels,
    shared: &SharedRef,
    first: u64,
    per_message: f64,
    epoch_us: u64,
) -> anyhow::Result<u64> {
    let start = Instant::now();
    let duration = Duration::from_secs_f64(cfg.duration_s);
    let bin_us = cfg.bin_ms * 1000;
    let mut next = first;
    let mut pending = FuturesUnordered::new();
    loop {
        let elapsed = start.elapsed();
        let running = elapsed < duration;
        while running && pending.len() < cfg.pipelines_in_flight {
            let budget = if cfg.rate > 0 {
                let due = first + (cfg.rate as f64 * elapsed.as_secs_f64()) as u64;
                due.saturating_sub(next).min(cfg.pipeline)
            } else {
                let delivered = shared.borrow().total().delivered as f64;
                let in_flight = (next as f64 * per_message - delivered).max(0.0);
                let room = (cfg.max_in_flight as f64 - in_flight).max(0.0) / per_message;
                (room as u64).min(cfg.pipeline)
            };
            if budget == 0 {
                break;
            }
            let mut c = conn.clone();
            let ch = channels.clone();
            let (users, size, from) = (cfg.users, cfg.payload, next);
            pending.push(async move {
                let sent = publisher::publish_range(&mut c, &ch, users, from, budget, size).await;
                (sent, now_us())
            });
            next += budget;
        }
        if pending.is_empty() {
            if !running {
                break;
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
            shared.borrow().check()?;
            continue;
        }
        tokio::select! {
            done = pending.next() => {
                if let Some((sent, at)) = done {
                    let Sent { messages, to_nobody } = sent?;
                    let mut s = shared.borrow_mut();
                    s.published += messages;
                    s.to_nobody += to_nobody;
                    *s.published_bins.entry(at.saturating_sub(epoch_us) / bin_us).or_default() += messages;
                }
            }
            _ = tokio::time::sleep(Duration::from_millis(1)) => {}
        }
    }
    Ok(next)
}

fn merge_connect(finals: &[&WorkerFinal], concurrency: usize) -> anyhow::Result<ConnectSummary> {
    let mut c = ConnectSummary {
        concurrency,
        ..ConnectSummary::default()
    };
    let mut handshake = hist::precise()?;
    let (mut first, mut last) = (u64::MAX, 0u64);
    for f in finals {
        let w = &f.connect;
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

fn drain_summary(
    closes: &Hist,
    codes: &BTreeMap<String, u64>,
    epoch_us: u64,
    sigterm_us: u64,
    open: u64,
    exit_us: Option<u64>,
) -> DrainSummary {
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

fn series(
    finals: &[&WorkerFinal],
    shared: &Shared,
    epoch_us: u64,
    bin_ms: u64,
) -> anyhow::Result<Series> {
    struct Acc {
        delivered: u64,
        closes: u64,
        latency: Option<Hist>,
    }
    let mut bins: BTreeMap<u64, Acc> = BTreeMap::new();
    for f in finals {
        for b in &f.bins {
            let acc = bins.entry(b.bin).or_insert(Acc {
                delivered: 0,
                closes: 0,
                latency: None,
            });
            acc.delivered += b.delivered;
            acc.closes += b.closes;
            if !b.latency_hist.is_empty() {
                let h = hist::decode(&b.latency_hist)?;
                match acc.latency.as_mut() {
                    Some(dst) => dst
                        .add(&h)
                        .map_err(|e| anyhow!("merging histograms: {e:?}"))?,
                    None => acc.latency = Some(h),
                }
            }
        }
    }
    for &bin in shared.published_bins.keys() {
        bins.entry(bin).or_insert(Acc {
            delivered: 0,
            closes: 0,
            latency: None,
        });
    }
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
    let _ = epoch_us;
    out.server_rss_mb = shared
        .rss
        .iter()
        .map(|&(t, kb)| (t, (kb as f64 / 1024.0 * 10.0).round() / 10.0))
        .collect();
    Ok(out)
}

fn plot(r: &RunReport) -> String {
    let s = &r.series;
    let mid = s.bin_s / 2.0;
    let pts = |v: &[f64]| -> Vec<(f64, f64)> {
        s.t_s
            .iter()
            .zip(v)
            .filter(|(_, y)| **y > 0.0)
            .map(|(t, y)| (t + mid, *y))
            .collect()
    };
    let line = |name: &str, points: Vec<(f64, f64)>| svg::Series {
        name: name.to_owned(),
        points,
        bar_width: None,
    };
    let mut panels = vec![
        svg::Panel {
            title: "Publish → receive latency per interval".into(),
            y_label: "ms (log)".into(),
            log_y: true,
            series: vec![
                line("p50", pts(&s.p50_ms)),
                line("p99", pts(&s.p99_ms)),
                line("max", pts(&s.max_ms)),
            ],
        },
        svg::Panel {
            title: "Messages per second".into(),
            y_label: "per second".into(),
            log_y: false,
            series: vec![
                line("delivered/s", pts(&s.delivered_per_s)),
                line("published/s", pts(&s.published_per_s)),
            ],
        },
    ];
    if s.closes_per_s.iter().any(|c| *c > 0.0) {
        panels.push(svg::Panel {
            title: "Closes received per second".into(),
            y_label: "closes/s".into(),
            log_y: false,
            series: vec![svg::Series {
                name: "closes/s".into(),
                points: s
                    .t_s
                    .iter()
                    .zip(&s.closes_per_s)
                    .filter(|(_, c)| **c > 0.0)
                    .map(|(t, c)| (*t, *c))
                    .collect(),
                bar_width: Some(s.bin_s),
            }],
        });
    }
    panels.push(svg::Panel {
        title: "Server RSS".into(),
        y_label: "MiB".into(),
        log_y: false,
        series: vec![line("VmRSS", s.server_rss_mb.clone())],
    });
    let markers: Vec<svg::Marker> = r
        .events
        .iter()
        .map(|(label, x)| svg::Marker {
            x: *x,
            label: label.clone(),
        })
        .collect();
    svg::render(&r.label, &panels, &markers)
}
