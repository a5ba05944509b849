//! `loadgen stuck-reader`: one user's socket stops reading (a raw client with a small receive
//! buffer) while a flood is published to that user; another user's socket keeps receiving a
//! steady trickle. Reports the server's RSS before, during and after, whether the stuck socket
//! was closed (and with which code, as seen by the client and by the server's metrics), and
//! what the live user got meanwhile.
//!
//! Layout:
//! - `config`: the options;
//! - `watch`: the live socket's reader, the live publisher and the RSS sampler;
//! - `round`: one round (a fresh stuck socket, the flood, the settle), methods of [`Stuck`];
//! - `merge`: the rounds and the live user's record turned into the [`report::StuckReport`];
//! - `report`: the report's types and its text summary;
//! - `plot`: the SVG of the report.

mod config;
mod merge;
mod plot;
mod report;
mod round;
mod watch;

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::rc::Rc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context as _};
use redis::aio::MultiplexedConnection;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;

use self::config::Config;
pub use self::config::USAGE;
use self::report::StuckReport;
use self::watch::{Live, LivePublisher};
use crate::publisher::{self, Channels};
use crate::rawws;
use crate::token::{self, Minter};
use crate::util::{self, now_us};

/// The user whose socket never reads.
const STUCK_USER: u64 = 0;
/// The user whose socket keeps reading.
const LIVE_USER: u64 = 1;

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

/// Opens the live socket and starts its publisher and the RSS sampler, runs the rounds, then
/// reports.
async fn run(cfg: Config) -> anyhow::Result<()> {
    let mut stuck = Stuck::start(cfg).await?;
    let metrics_before = stuck.scrape_metrics().await?;
    stuck.open_live_socket().await?;
    let sampler = watch::spawn_rss_sampler(stuck.cfg.pid, stuck.epoch, stuck.rss.clone());
    let live_publisher = stuck.live_publisher().spawn();
    let mut rounds = Vec::with_capacity(stuck.cfg.rounds);
    for round in 1..=stuck.cfg.rounds {
        rounds.push(stuck.round(round).await?);
    }
    live_publisher.abort();
    sampler.abort();
    tokio::time::sleep(Duration::from_secs(1)).await;
    let metrics_after = stuck.scrape_metrics().await?;
    let (out, svg) = (stuck.cfg.out.clone(), stuck.cfg.svg.clone());
    let report = merge::report(stuck, rounds, &metrics_before, &metrics_after)?;
    write(&report, out.as_deref(), svg.as_deref())
}

/// A stuck-reader run in progress: its options, clock, Redis connection, and what the
/// watchers and the rounds have recorded so far.
struct Stuck {
    cfg: Config,
    epoch: Instant,
    /// `epoch` in µs since the Unix epoch (payload timestamps use that clock).
    epoch_us: u64,
    target: SocketAddr,
    minter: Minter,
    channels: Channels,
    conn: MultiplexedConnection,
    /// Phase boundaries: `(name, seconds since start)`.
    events: Vec<(String, f64)>,
    /// Processes whose CPU time is accounted: `(role, pid)`.
    watched: Vec<(&'static str, u32)>,
    live: Rc<RefCell<Live>>,
    /// `(seq, seconds since start)` of each message published to the live user.
    live_published: Rc<RefCell<Vec<(u64, f64)>>>,
    /// Server RSS samples `(seconds since start, KiB)`.
    rss: Rc<RefCell<Vec<(f64, u64)>>>,
    /// `(start, end)` of each flood, seconds since start.
    flood_windows: Vec<(f64, f64)>,
    /// Flood messages published per `round::BIN`.
    flood_bins: BTreeMap<u64, u64>,
}

impl Stuck {
    /// Resolves the target and connects to Redis.
    async fn start(cfg: Config) -> anyhow::Result<Self> {
        let epoch = Instant::now();
        let epoch_us = now_us();
        let target = cfg.url.resolve().await?;
        let conn = publisher::connect(&cfg.redis).await?;
        let mut watched = vec![("server", cfg.pid), ("loadgen", std::process::id())];
        if let Some(pid) = cfg.redis_pid {
            watched.push(("redis", pid));
        }
        Ok(Self {
            epoch,
            epoch_us,
            target,
            minter: Minter::new(&cfg.secret, 3600),
            channels: Channels::new(&cfg.channel_prefix, &cfg.user_prefix),
            conn,
            events: Vec::new(),
            watched,
            live: Rc::default(),
            live_published: Rc::default(),
            rss: Rc::default(),
            flood_windows: Vec::new(),
            flood_bins: BTreeMap::new(),
            cfg,
        })
    }

    /// Seconds since the start of the run.
    fn at(&self) -> f64 {
        self.epoch.elapsed().as_secs_f64()
    }

    /// Records an event for the report and the plot.
    fn mark(&mut self, name: String) {
        let at = self.at();
        self.events.push((name, at));
    }

    /// The user id of user number `user`.
    fn user_id(&self, user: u64) -> String {
        token::user_id(&self.cfg.user_prefix, user)
    }

    /// The server's `/metrics` text.
    async fn scrape_metrics(&self) -> anyhow::Result<String> {
        rawws::http_get(self.target, &self.cfg.url.authority, &self.cfg.metrics_path)
            .await
            .context("scraping the server's metrics")
    }

    /// Opens the live socket, reads it continuously, and waits until the server holds its
    /// channel.
    async fn open_live_socket(&mut self) -> anyhow::Result<()> {
        let token = self.minter.mint(&self.user_id(LIVE_USER))?;
        let config = WebSocketConfig::default()
            .read_buffer_size(4096)
            .write_buffer_size(0);
        let (ws, _) = tokio_tungstenite::connect_async_with_config(
            self.cfg.url.with_token(&token),
            Some(config),
            true,
        )
        .await
        .context("opening the live socket")?;
        watch::spawn_live_reader(ws, self.live.clone());
        wait_subscribed(&mut self.conn, &self.channels, LIVE_USER).await
    }

    /// The live user's publisher, `--live-rate` per second.
    fn live_publisher(&self) -> LivePublisher {
        LivePublisher {
            conn: self.conn.clone(),
            channels: self.channels.clone(),
            user: LIVE_USER,
            rate: self.cfg.live_rate,
            epoch: self.epoch,
            published: self.live_published.clone(),
        }
    }
}

/// Publishes a probe (seq 0) to `user` until the server holds its channel.
async fn wait_subscribed(
    conn: &mut MultiplexedConnection,
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

/// Prints the summary on stderr, then writes the JSON report (`--out`, else stdout) and the
/// plot (`--svg`).
fn write(report: &StuckReport, out: Option<&str>, svg: Option<&str>) -> anyhow::Result<()> {
    let summary = report::summary(report);
    util::write_report(report, &summary, out, svg, || plot::plot(report))
}
