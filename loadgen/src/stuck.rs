//! `loadgen stuck-reader`: one user's socket stops reading (a raw client with a small receive
//! buffer) while a flood is published to that user; another user's socket keeps receiving a
//! steady trickle. Reports the server's RSS before, during and after, whether the stuck socket
//! was closed (and with which code, as seen by the client and by the server's metrics), and
//! what the live user got meanwhile.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::rc::Rc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context as _};
use futures_util::StreamExt as _;
use serde::Serialize;
use serde_json::json;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::Message;

use crate::hist::{self, Percentiles};
use crate::procfs::{self, CpuSnap, CpuUsage};
use crate::publisher::{self, Channels};
use crate::rawws::{self, FrameScan};
use crate::svg;
use crate::token::Minter;
use crate::util::{now_us, Flags, WsUrl};

/// Usage of the stuck-reader mode.
pub const USAGE: &str = "\
loadgen stuck-reader [OPTIONS]   flood a user whose socket never reads; watch RSS and a live user
  --url URL            ws://host:port/path (required)
  --secret S           HS256 secret (default: $LOADGEN_SECRET)
  --redis URL          redis://host:port (required)
  --server-pid PID     server process, for VmRSS and CPU (required)
  --redis-pid PID      also account the CPU time of redis-server
  --flood N            messages published to the stuck user (200000)
  --payload BYTES      flood payload size (1024)
  --pipeline N         PUBLISHes per pipeline (512)
  --live-rate N        messages/s to the live user during the flood and the settle (200)
  --settle-s N         watch RSS this long after the flood (10)
  --read-after-s N     the stuck client reads again N s after the flood ends (1)
  --rounds N           repeat (new stuck socket, flood, settle) N times: leak or reuse? (2)
  --rcvbuf BYTES       receive buffer of the stuck socket (4096)
  --user-prefix P      users P-0 (stuck) and P-1 (live) (lgstuck)
  --channel-prefix P   (ws:)
  --metrics-path PATH  server metrics, same host and port as --url (/metrics)
  --label TEXT, --out FILE.json, --svg FILE.svg, --max-run-s N (300)";

const VALUED: &[&str] = &[
    "url",
    "secret",
    "redis",
    "server-pid",
    "redis-pid",
    "flood",
    "payload",
    "pipeline",
    "live-rate",
    "settle-s",
    "read-after-s",
    "rounds",
    "rcvbuf",
    "user-prefix",
    "channel-prefix",
    "metrics-path",
    "label",
    "out",
    "svg",
    "max-run-s",
];

/// Width of a series interval.
const BIN: Duration = Duration::from_millis(250);

/// The report of a stuck-reader run.
#[derive(Debug, Default, Serialize)]
pub struct StuckReport {
    /// Scenario name.
    pub label: String,
    /// Options.
    pub config: BTreeMap<String, serde_json::Value>,
    /// Server memory.
    pub rss: RssSummary,
    /// Each round: a fresh stuck socket, a flood, a settle.
    pub rounds: Vec<RoundSummary>,
    /// Counters from the server's /metrics (after minus before).
    pub server_metrics: BTreeMap<String, f64>,
    /// The live user.
    pub live: LiveSummary,
    /// Time series.
    pub series: StuckSeries,
    /// Phase boundaries, seconds since start.
    pub events: Vec<(String, f64)>,
}

/// Server memory (VmRSS, KiB).
#[derive(Debug, Default, Serialize)]
pub struct RssSummary {
    /// Before the flood (both sockets open).
    pub baseline_kb: u64,
    /// Largest sample during flood and settle.
    pub peak_kb: u64,
    /// At the end of the settle.
    pub after_kb: u64,
    /// `peak - baseline`.
    pub peak_over_baseline_kb: i64,
    /// `after - baseline`.
    pub after_over_baseline_kb: i64,
    /// `after <= baseline + max(10 % of baseline, 2048 KiB)`.
    pub back_near_baseline: bool,
    /// RSS at the end of each round's settle: flat from round to round means memory is reused
    /// (allocator caches, buffer capacity), growing means it leaks.
    pub after_each_round_kb: Vec<u64>,
}

/// One round.
#[derive(Debug, Default, Serialize)]
pub struct RoundSummary {
    /// 1-based.
    pub round: usize,
    /// Before the flood, KiB.
    pub rss_before_kb: u64,
    /// Largest sample from the flood to the end of the settle, KiB.
    pub rss_peak_kb: u64,
    /// At the end of the settle, KiB.
    pub rss_after_kb: u64,
    /// The flood.
    pub flood: FloodSummary,
    /// What the stuck client found when it read again (`--read-after-s` after the flood).
    pub stuck_socket: FrameScan,
    /// CPU from the flood's start to the end of the settle, % of one core.
    pub cpu: CpuUsage,
}

/// The flood.
#[derive(Debug, Default, Serialize)]
pub struct FloodSummary {
    /// Messages published.
    pub messages: u64,
    /// Payload size.
    pub payload_bytes: usize,
    /// Publishing time, seconds.
    pub seconds: f64,
    /// Messages/s.
    pub per_s: f64,
    /// PUBLISHes that had a subscriber (the server still held the channel).
    pub reached_server: u64,
    /// PUBLISHes that had none (the server had unsubscribed after closing the socket).
    pub to_nobody: u64,
    /// Flood start → first PUBLISH with no subscriber, seconds.
    pub unsubscribed_after_s: Option<f64>,
}

/// The live user.
#[derive(Debug, Default, Serialize)]
pub struct LiveSummary {
    /// Messages published to it.
    pub published: u64,
    /// Distinct messages received.
    pub received: u64,
    /// Published during the flood.
    pub published_during_flood: u64,
    /// Of those, received.
    pub received_during_flood: u64,
    /// Latency of the messages published during the flood.
    pub latency_during_flood: Percentiles,
    /// Latency of every message.
    pub latency: Percentiles,
    /// Close of the live socket, if it was closed.
    pub closed: Option<String>,
}

/// Time series (`BIN` intervals).
#[derive(Debug, Default, Serialize)]
pub struct StuckSeries {
    /// Server RSS `(s, MiB)`.
    pub server_rss_mb: Vec<(f64, f64)>,
    /// Live deliveries per second `(s, n/s)`.
    pub live_delivered_per_s: Vec<(f64, f64)>,
    /// Flood messages published per second `(s, n/s)`.
    pub flood_published_per_s: Vec<(f64, f64)>,
    /// Live latency per interval: median `(s, ms)`.
    pub live_latency_p50_ms: Vec<(f64, f64)>,
    /// Live latency per interval: maximum `(s, ms)`.
    pub live_latency_max_ms: Vec<(f64, f64)>,
}

#[derive(Default)]
struct Live {
    /// `(seq, receive time µs, latency µs)`.
    received: Vec<(u64, u64, u64)>,
    closed: Option<String>,
}

struct Config {
    url: WsUrl,
    secret: String,
    redis: String,
    pid: u32,
    redis_pid: Option<u32>,
    flood: u64,
    payload: usize,
    pipeline: u64,
    live_rate: u64,
    settle_s: f64,
    read_after_s: f64,
    rounds: usize,
    rcvbuf: u32,
    user_prefix: String,
    channel_prefix: String,
    metrics_path: String,
    label: String,
    out: Option<String>,
    svg: Option<String>,
    max_run_s: u64,
}

impl Config {
    fn parse(args: &[String]) -> anyhow::Result<Self> {
        let f = Flags::parse(args, &[], VALUED)?;
        let need = |k: &str| {
            f.str(k)
                .map(str::to_owned)
                .ok_or_else(|| anyhow!("--{k} is required"))
        };
        Ok(Self {
            url: WsUrl::parse(&need("url")?)?,
            secret: match f.str("secret") {
                Some(s) => s.to_owned(),
                None => std::env::var("LOADGEN_SECRET")
                    .map_err(|_| anyhow!("--secret or $LOADGEN_SECRET is required"))?,
            },
            redis: need("redis")?,
            pid: f
                .opt("server-pid")?
                .ok_or_else(|| anyhow!("--server-pid is required"))?,
            redis_pid: f.opt("redis-pid")?,
            flood: f.num("flood", 200_000)?,
            payload: f.num("payload", 1024)?,
            pipeline: f.num::<u64>("pipeline", 512)?.max(1),
            live_rate: f.num::<u64>("live-rate", 200)?.max(1),
            settle_s: f.num("settle-s", 10.0)?,
            read_after_s: f.num("read-after-s", 1.0)?,
            rounds: f.num::<usize>("rounds", 2)?.clamp(1, 10),
            rcvbuf: f.num("rcvbuf", 4096)?,
            user_prefix: f.str("user-prefix").unwrap_or("lgstuck").to_owned(),
            channel_prefix: f.str("channel-prefix").unwrap_or("ws:").to_owned(),
            metrics_path: f.str("metrics-path").unwrap_or("/metrics").to_owned(),
            label: f.str("label").unwrap_or("stuck reader").to_owned(),
            out: f.str("out").map(str::to_owned),
            svg: f.str("svg").map(str::to_owned),
            max_run_s: f.num("max-run-s", 300)?,
        })
    }
}

/// Entry point of `loadgen stuck-reader`.
pub async fn main(args: &[String]) -> anyhow::Result<()> {
    let cfg = Config::parse(args)?;
    let limit = Duration::from_secs(cfg.max_run_s);
    tokio::task::LocalSet::new()
        .run_until(async {
            tokio::time::timeout(limit, run(cfg))
                .await
                .map_err(|_| anyhow!("the run exceeded --max-run-s {}s", limit.as_secs()))?
        })
        .await
}

/// Server counters compared before and after.
const METRICS: &[(&str, &str, &str)] = &[
    (
        "closed_4009",
        "ws_connections_closed_total",
        "code=\"4009\"",
    ),
    (
        "dropped_slow_consumer",
        "ws_messages_dropped_total",
        "reason=\"slow_consumer\"",
    ),
    (
        "dropped_no_session",
        "ws_messages_dropped_total",
        "reason=\"no_session\"",
    ),
    ("dropped_total", "ws_messages_dropped_total", ""),
    ("forwarded", "ws_messages_forwarded_total", ""),
    ("broker_reconnects", "ws_broker_reconnects_total", ""),
];

async fn run(cfg: Config) -> anyhow::Result<()> {
    let epoch = Instant::now();
    let epoch_us = now_us();
    let at = || epoch.elapsed().as_secs_f64();
    let mut events: Vec<(String, f64)> = Vec::new();
    let target = cfg.url.resolve().await?;
    let minter = Minter::new(&cfg.secret, 3600);
    let channels = Channels::new(&cfg.channel_prefix, &cfg.user_prefix);
    let (stuck_user, live_user) = (0u64, 1u64);
    let mut conn = publisher::connect(&cfg.redis).await?;
    let metrics_before = rawws::http_get(target, &cfg.url.authority, &cfg.metrics_path)
        .await
        .context("scraping the server's metrics")?;

    // The live socket, read continuously.
    let live_token = minter.mint(&format!("{}-{live_user}", cfg.user_prefix))?;
    let config = WebSocketConfig::default()
        .read_buffer_size(4096)
        .write_buffer_size(0);
    let (mut live_ws, _) = tokio_tungstenite::connect_async_with_config(
        cfg.url.with_token(&live_token),
        Some(config),
        true,
    )
    .await
    .context("opening the live socket")?;
    let live = Rc::new(RefCell::new(Live::default()));
    {
        let live = live.clone();
        tokio::task::spawn_local(async move {
            while let Some(message) = live_ws.next().await {
                let now = now_us();
                match message {
                    Ok(Message::Text(t)) => {
                        if let Some((seq, ts)) = crate::payload::parse(t.as_bytes()) {
                            live.borrow_mut().received.push((
                                seq,
                                now,
                                now.saturating_sub(ts).max(1),
                            ));
                        }
                    }
                    Ok(Message::Close(frame)) => {
                        live.borrow_mut().closed = Some(
                            frame.map_or_else(|| "1005".into(), |f| u16::from(f.code).to_string()),
                        );
                    }
                    Ok(_) => {}
                    Err(e) => {
                        live.borrow_mut()
                            .closed
                            .get_or_insert(format!("error: {e}"));
                        break;
                    }
                }
            }
        });
    }

    // The live user's channel subscribed (a probe that reaches nobody is retried).
    wait_subscribed(&mut conn, &channels, live_user).await?;

    // RSS sampler.
    let rss: Rc<RefCell<Vec<(f64, u64)>>> = Rc::default();
    let sampler = {
        let rss = rss.clone();
        let pid = cfg.pid;
        tokio::task::spawn_local(async move {
            let mut interval = tokio::time::interval(Duration::from_millis(100));
            loop {
                interval.tick().await;
                if let Some(kb) = procfs::rss_kb(pid) {
                    rss.borrow_mut().push((epoch.elapsed().as_secs_f64(), kb));
                }
            }
        })
    };

    // Live publisher: seq from 1 (0 was the probe), `live_rate` per second.
    let live_published = Rc::new(RefCell::new(Vec::<(u64, f64)>::new()));
    let live_pub = {
        let published = live_published.clone();
        let mut c = conn.clone();
        let ch = channels.clone();
        let rate = cfg.live_rate;
        tokio::task::spawn_local(async move {
            let start = Instant::now();
            let mut seq = 1u64;
            loop {
                tokio::time::sleep(Duration::from_millis(10)).await;
                let due = 1 + (rate as f64 * start.elapsed().as_secs_f64()) as u64;
                let batch: Vec<(u64, u64)> = (seq..due).map(|s| (live_user, s)).collect();
                if batch.is_empty() {
                    continue;
                }
                if publisher::publish_each(&mut c, &ch, &batch, 128)
                    .await
                    .is_err()
                {
                    return;
                }
                let t = epoch.elapsed().as_secs_f64();
                published
                    .borrow_mut()
                    .extend(batch.iter().map(|&(_, s)| (s, t)));
                seq = due;
            }
        })
    };

    let stuck_token = minter.mint(&format!("{}-{stuck_user}", cfg.user_prefix))?;
    let channel = channels.of(stuck_user);
    let mut watched = vec![("server", cfg.pid), ("loadgen", std::process::id())];
    if let Some(pid) = cfg.redis_pid {
        watched.push(("redis", pid));
    }
    let mut rounds = Vec::new();
    let mut flood_windows = Vec::new();
    let mut flood_bins: BTreeMap<u64, u64> = BTreeMap::new();
    let mut baseline = 0;
    for round in 1..=cfg.rounds {
        // The stuck socket: upgrade, then read nothing.
        let stuck = rawws::connect(target, &cfg.url, &stuck_token, cfg.rcvbuf).await?;
        wait_subscribed(&mut conn, &channels, stuck_user).await?;
        events.push((format!("round {round}: stuck socket open"), at()));
        tokio::time::sleep(Duration::from_secs(2)).await;
        let rss_before =
            procfs::rss_kb(cfg.pid).ok_or_else(|| anyhow!("no process {}", cfg.pid))?;
        if round == 1 {
            baseline = rss_before;
        }
        eprintln!(
            "[{:6.1}s] round {round}: both sockets open; server RSS {rss_before} KiB",
            at()
        );

        // Flood.
        let cpu_start = CpuSnap::take(&watched, Some(cfg.pid));
        events.push((format!("round {round}: flood"), at()));
        let flood_start = Instant::now();
        let flood_start_s = at();
        let mut flood = FloodSummary {
            payload_bytes: cfg.payload,
            ..FloodSummary::default()
        };
        let mut body = Vec::with_capacity(cfg.payload + 32);
        let mut last_report = Instant::now();
        while flood.messages < cfg.flood {
            let n = cfg.pipeline.min(cfg.flood - flood.messages);
            let mut pipe = redis::pipe();
            let ts = now_us();
            for i in 0..n {
                crate::payload::build(flood.messages + i + 1, ts, cfg.payload, &mut body);
                pipe.cmd("PUBLISH").arg(&channel).arg(&body[..]);
            }
            let replies: Vec<i64> = pipe
                .query_async(&mut conn)
                .await
                .context("flood PUBLISH pipeline")?;
            for r in replies {
                if r > 0 {
                    flood.reached_server += 1;
                } else {
                    flood.to_nobody += 1;
                    if flood.unsubscribed_after_s.is_none() {
                        flood.unsubscribed_after_s = Some(flood_start.elapsed().as_secs_f64());
                        events.push((format!("round {round}: unsubscribed"), at()));
                    }
                }
            }
            flood.messages += n;
            *flood_bins
                .entry((epoch.elapsed().as_micros() / BIN.as_micros()) as u64)
                .or_default() += n;
            if last_report.elapsed() >= Duration::from_secs(1) {
                last_report = Instant::now();
                eprintln!(
                    "[{:6.1}s] flood {} / {} published, {} reached the server | server RSS {} KiB | live received {}",
                    at(),
                    flood.messages,
                    cfg.flood,
                    flood.reached_server,
                    procfs::rss_kb(cfg.pid).unwrap_or(0),
                    live.borrow().received.len()
                );
            }
        }
        flood.seconds = flood_start.elapsed().as_secs_f64();
        flood.per_s = flood.messages as f64 / flood.seconds;
        let flood_end_s = at();
        flood_windows.push((flood_start_s, flood_end_s));
        events.push((format!("round {round}: flood end"), flood_end_s));
        eprintln!(
            "[{:6.1}s] round {round}: flood done, {} in {:.2}s; the stuck client reads again in {} s; settling {} s",
            at(),
            flood.messages,
            flood.seconds,
            cfg.read_after_s,
            cfg.settle_s
        );

        // The stuck client starts reading `read_after_s` after the flood: does a close frame
        // come, and with which code?
        let read_after = Duration::from_secs_f64(cfg.read_after_s);
        let reader = tokio::task::spawn_local(async move {
            tokio::time::sleep(read_after).await;
            rawws::read_all(stuck, Duration::from_secs(8), Duration::from_secs(30)).await
        });

        // Settle, watching RSS.
        let settle = Instant::now();
        while settle.elapsed().as_secs_f64() < cfg.settle_s {
            tokio::time::sleep(Duration::from_secs(1)).await;
            eprintln!(
                "[{:6.1}s] settle: server RSS {} KiB | live received {}",
                at(),
                procfs::rss_kb(cfg.pid).unwrap_or(0),
                live.borrow().received.len()
            );
        }
        let rss_after =
            procfs::rss_kb(cfg.pid).ok_or_else(|| anyhow!("server {} is gone", cfg.pid))?;
        let cpu = CpuUsage::between(&cpu_start, &CpuSnap::take(&watched, Some(cfg.pid)));
        let stuck_socket = reader
            .await
            .map_err(|e| anyhow!("stuck reader task: {e}"))?;
        events.push((format!("round {round}: settled"), at()));
        let rss_peak = rss
            .borrow()
            .iter()
            .filter(|(t, _)| *t >= flood_start_s)
            .map(|s| s.1)
            .max()
            .unwrap_or(rss_after);
        rounds.push(RoundSummary {
            round,
            rss_before_kb: rss_before,
            rss_peak_kb: rss_peak.max(rss_after),
            rss_after_kb: rss_after,
            flood,
            stuck_socket,
            cpu,
        });
    }
    live_pub.abort();
    sampler.abort();
    tokio::time::sleep(Duration::from_secs(1)).await;
    let metrics_after = rawws::http_get(target, &cfg.url.authority, &cfg.metrics_path)
        .await
        .context("scraping the server's metrics")?;

    // Report.
    let samples = rss.borrow().clone();
    let after = rounds.last().map_or(baseline, |r| r.rss_after_kb);
    let peak = rounds.iter().map(|r| r.rss_peak_kb).max().unwrap_or(after);
    let published = live_published.borrow().clone();
    let live = live.borrow();
    let in_flood = |t: f64| flood_windows.iter().any(|(a, b)| t >= *a && t <= *b);
    let flood_seqs: std::collections::HashSet<u64> = published
        .iter()
        .filter(|(_, t)| in_flood(*t))
        .map(|(s, _)| *s)
        .collect();
    let mut all = hist::precise()?;
    let mut during = hist::precise()?;
    let mut seen = std::collections::HashSet::new();
    let mut received_during = 0;
    for &(seq, _, lat) in live.received.iter().filter(|r| r.0 > 0) {
        all.saturating_record(lat);
        if seen.insert(seq) && flood_seqs.contains(&seq) {
            during.saturating_record(lat);
            received_during += 1;
        }
    }
    let mut report = StuckReport {
        label: cfg.label.clone(),
        config: [
            ("flood", json!(cfg.flood)),
            ("payload", json!(cfg.payload)),
            ("pipeline", json!(cfg.pipeline)),
            ("live_rate", json!(cfg.live_rate)),
            ("settle_s", json!(cfg.settle_s)),
            ("read_after_s", json!(cfg.read_after_s)),
            ("rounds", json!(cfg.rounds)),
            ("rcvbuf", json!(cfg.rcvbuf)),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v))
        .collect(),
        rss: RssSummary {
            baseline_kb: baseline,
            peak_kb: peak,
            after_kb: after,
            peak_over_baseline_kb: peak as i64 - baseline as i64,
            after_over_baseline_kb: after as i64 - baseline as i64,
            back_near_baseline: after <= baseline + (baseline / 10).max(2048),
            after_each_round_kb: rounds.iter().map(|r| r.rss_after_kb).collect(),
        },
        rounds,
        live: LiveSummary {
            published: published.len() as u64,
            received: seen.len() as u64,
            published_during_flood: flood_seqs.len() as u64,
            received_during_flood: received_during,
            latency_during_flood: hist::percentiles(&during),
            latency: hist::percentiles(&all),
            closed: live.closed.clone(),
        },
        events,
        ..StuckReport::default()
    };
    for (key, name, label) in METRICS {
        report.server_metrics.insert(
            (*key).to_owned(),
            rawws::metric(&metrics_after, name, label)
                - rawws::metric(&metrics_before, name, label),
        );
    }
    let bin_s = BIN.as_secs_f64();
    let mut live_bins: BTreeMap<u64, u64> = BTreeMap::new();
    let mut live_lat: BTreeMap<u64, Vec<u64>> = BTreeMap::new();
    for &(_, at_us, lat) in live.received.iter() {
        let bin = at_us.saturating_sub(epoch_us) / BIN.as_micros() as u64;
        *live_bins.entry(bin).or_default() += 1;
        live_lat.entry(bin).or_default().push(lat);
    }
    for v in live_lat.values_mut() {
        v.sort_unstable();
    }
    let lat_point = |pick: fn(&[u64]) -> u64| -> Vec<(f64, f64)> {
        live_lat
            .iter()
            .map(|(&b, v)| (b as f64 * bin_s + bin_s / 2.0, pick(v) as f64 / 1000.0))
            .collect()
    };
    report.series = StuckSeries {
        server_rss_mb: samples
            .iter()
            .map(|&(t, kb)| (t, (kb as f64 / 1024.0 * 10.0).round() / 10.0))
            .collect(),
        live_delivered_per_s: live_bins
            .iter()
            .map(|(&b, &n)| (b as f64 * bin_s, n as f64 / bin_s))
            .collect(),
        flood_published_per_s: flood_bins
            .iter()
            .map(|(&b, &n)| (b as f64 * bin_s, n as f64 / bin_s))
            .collect(),
        live_latency_p50_ms: lat_point(|v| v[v.len() / 2]),
        live_latency_max_ms: lat_point(|v| v[v.len() - 1]),
    };
    drop(live);
    eprint!("{}", summary(&report));
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

/// Publishes a probe (seq 0) to `user` until the server holds its channel.
async fn wait_subscribed(
    conn: &mut redis::aio::MultiplexedConnection,
    channels: &Channels,
    user: u64,
) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let missed = publisher::publish_each(conn, channels, &[(user, 0)], 64).await?;
        if missed.is_empty() {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("the server never subscribed the channel of user {user}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn summary(r: &StuckReport) -> String {
    let mut s = format!(
        "== {} ==\nserver RSS: baseline {} KiB, peak {} KiB (+{}), after the last settle {} KiB (+{}), after each round {:?}, back near baseline: {}\n",
        r.label,
        r.rss.baseline_kb,
        r.rss.peak_kb,
        r.rss.peak_over_baseline_kb,
        r.rss.after_kb,
        r.rss.after_over_baseline_kb,
        r.rss.after_each_round_kb,
        r.rss.back_near_baseline,
    );
    for round in &r.rounds {
        let (f, k) = (&round.flood, &round.stuck_socket);
        s += &format!(
            "round {}: flood {} x {} B in {:.2}s = {:.0}/s; {} reached the server, {} nobody (unsubscribed after {:?} s); RSS {} -> peak {} -> {} KiB; stuck client read {} bytes, {} text frames, close code {:?}, ended by {}\n",
            round.round,
            f.messages,
            f.payload_bytes,
            f.seconds,
            f.per_s,
            f.reached_server,
            f.to_nobody,
            f.unsubscribed_after_s,
            round.rss_before_kb,
            round.rss_peak_kb,
            round.rss_after_kb,
            k.bytes,
            k.text_frames,
            k.close_code,
            k.end,
        );
        s += &format!(
            "  cpu (% of one core): {:?}, other processes ~{:.0}\n",
            round.cpu.processes, round.cpu.other_processes
        );
    }
    s += &format!(
        "server metrics (delta): {:?}\nlive user: {} published, {} received; during the floods {} / {}, latency p50 {:.3} ms p99 {:.3} ms max {:.3} ms; closed {:?}\n",
        r.server_metrics,
        r.live.published,
        r.live.received,
        r.live.received_during_flood,
        r.live.published_during_flood,
        r.live.latency_during_flood.p50_ms,
        r.live.latency_during_flood.p99_ms,
        r.live.latency_during_flood.max_ms,
        r.live.closed,
    );
    s
}

fn plot(r: &StuckReport) -> String {
    let line = |name: &str, points: &[(f64, f64)]| svg::Series {
        name: name.to_owned(),
        points: points.to_vec(),
        bar_width: None,
    };
    let panels = [
        svg::Panel {
            title: "Server RSS".into(),
            y_label: "MiB".into(),
            log_y: false,
            series: vec![line("VmRSS", &r.series.server_rss_mb)],
        },
        svg::Panel {
            title: "Messages per second".into(),
            y_label: "per second (log)".into(),
            log_y: true,
            series: vec![
                line("flood published/s", &r.series.flood_published_per_s),
                line("live delivered/s", &r.series.live_delivered_per_s),
            ],
        },
        svg::Panel {
            title: "Live user: publish → receive latency".into(),
            y_label: "ms (log)".into(),
            log_y: true,
            series: vec![
                line("median per 250 ms", &r.series.live_latency_p50_ms),
                line("max per 250 ms", &r.series.live_latency_max_ms),
            ],
        },
    ];
    // Only the flood starts: the other events are too close together to label.
    let markers: Vec<svg::Marker> = r
        .events
        .iter()
        .filter(|(label, _)| label.ends_with(": flood"))
        .map(|(label, x)| svg::Marker {
            x: *x,
            label: label.clone(),
        })
        .collect();
    svg::render(&r.label, &panels, &markers)
}
