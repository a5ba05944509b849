//! The options of a run: the usage text, `--flag` parsing with its cross-checks, and the echo
//! of the options that shaped the run into the report (never the secret).

use std::collections::BTreeMap;
use std::net::IpAddr;

use anyhow::{anyhow, bail, Context as _};
use serde_json::json;

use crate::util::{Flags, WsUrl};

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
  --v2                         sockets opt in to protocol v2 (v=2): frames unwrapped, each
                               socket's offsets checked (no gap, no repeat)
Publishing (needs --redis):
  --redis URL                  redis://host:port of the server's Redis
  --redis-cluster              --redis is a node of a Redis Cluster: SPUBLISH (or with --durable
                               FCALL ws_publish on the key's primary), one pipeline per primary;
                               --blip-at-s kills the subscribers of every primary; no Redis INFO
                               accounting, and --history-sample is refused
  --channel-prefix P           (ws:)
  --no-verify                  skip the round of one message per user that proves every socket
                               is subscribed before anything is timed
  --duration-s N               publish for N seconds (0: no publishing)
  --rate N                     messages/s; 0 = flat out (default 0)
  --payload BYTES              payload size (256)
  --durable                    publish with FCALL ws_publish 1 <channel> <payload> (history +
                               durable channel; the server must have history on) instead of
                               PUBLISH; the verification round stays a plain PUBLISH
  --pipeline N                 PUBLISHes per pipeline (512)
  --pipelines-in-flight N      pipelines awaiting replies at once (2)
  --max-in-flight N            flat out: deliveries published but not yet received (50000)
  --settle-s N                 after publishing, wait up to N s for stragglers (5)
  --history-sample N           after publishing durably, MEMORY USAGE of N users' history keys (0)
Delivery (protocol v2, durable publishing):
  --blip-at-s N                N s into publishing, CLIENT KILL TYPE pubsub (the server's
                               subscriber link drops); reports when every socket had every message
  --resume                     after the hold/publish: every socket drops its connection, a
                               backlog is published durably, every socket reconnects with
                               since=<epoch>:<offset>; reports server CPU per resume and the time
                               until every socket has its backlog (needs --v2 --durable)
  --resume-backlog N           messages per user published while the sockets are away (5)
  --resume-away-s N            how long the sockets stay away (2)
  --metrics-path PATH          server metrics, same host and port as --url (/metrics)
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

const SWITCHES: &[&str] = &[
    "no-verify",
    "drain",
    "redis-cluster",
    "durable",
    "v2",
    "resume",
];
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
    "history-sample",
    "blip-at-s",
    "resume-backlog",
    "resume-away-s",
    "metrics-path",
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
pub(super) struct Config {
    pub(super) url: String,
    pub(super) secret: String,
    pub(super) token_ttl_s: u64,
    pub(super) user_prefix: String,
    pub(super) users: u64,
    pub(super) sockets_per_user: u64,
    pub(super) connect_concurrency: usize,
    pub(super) connect_timeout_s: u64,
    pub(super) src_addrs: Vec<String>,
    pub(super) max_sockets_per_worker: u64,
    pub(super) redis: Option<String>,
    pub(super) redis_cluster: bool,
    pub(super) channel_prefix: String,
    pub(super) verify: bool,
    pub(super) duration_s: f64,
    pub(super) rate: u64,
    pub(super) payload: usize,
    pub(super) pipeline: u64,
    pub(super) pipelines_in_flight: usize,
    pub(super) max_in_flight: u64,
    pub(super) settle_s: f64,
    pub(super) durable: bool,
    pub(super) v2: bool,
    pub(super) history_sample: u64,
    pub(super) blip_at_s: Option<f64>,
    pub(super) resume: bool,
    pub(super) resume_backlog: u64,
    pub(super) resume_away_s: f64,
    pub(super) metrics_path: String,
    pub(super) server_pid: Option<u32>,
    pub(super) redis_pid: Option<u32>,
    pub(super) hold_s: f64,
    pub(super) drain: bool,
    pub(super) drain_wait_s: f64,
    pub(super) label: String,
    pub(super) out: Option<String>,
    pub(super) svg: Option<String>,
    pub(super) bin_ms: u64,
    pub(super) max_run_s: u64,
}

impl Config {
    /// Parses the command line of the run mode and checks the options that depend on others.
    pub(super) fn parse(args: &[String]) -> anyhow::Result<Self> {
        let f = Flags::parse(args, SWITCHES, VALUED)?;
        let url = f
            .str("url")
            .ok_or_else(|| anyhow!("--url is required"))?
            .to_owned();
        let parsed = WsUrl::parse(&url)?;
        let secret = f.secret()?;
        let users: u64 = f.num("users", 1000)?;
        let sockets_per_user: u64 = f.num("sockets-per-user", 1)?;
        if users == 0 || sockets_per_user == 0 {
            bail!("--users and --sockets-per-user must be at least 1");
        }
        let src_addrs = source_addresses(f.str("src-addrs"), &parsed.host)?;
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
        let durable = f.switch("durable");
        let v2 = f.switch("v2");
        let resume = f.switch("resume");
        if (durable || resume) && redis.is_none() {
            bail!("--durable and --resume need --redis");
        }
        if resume && !(v2 && durable) {
            bail!("--resume needs --v2 and --durable (a resume replays durable messages)");
        }
        let redis_cluster = f.switch("redis-cluster");
        let history_sample: u64 = f.num("history-sample", 0)?;
        if redis_cluster && history_sample > 0 {
            bail!("--history-sample needs a single Redis, not --redis-cluster");
        }
        let blip_at_s: Option<f64> = f.opt("blip-at-s")?;
        if let Some(at) = blip_at_s {
            if !(at > 0.0 && at < duration_s) {
                bail!("--blip-at-s must be within the publish phase (0 < N < --duration-s)");
            }
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
            redis_cluster,
            channel_prefix: f.str("channel-prefix").unwrap_or("ws:").to_owned(),
            duration_s,
            rate: f.num("rate", 0)?,
            payload: f.num("payload", 256)?,
            pipeline: f.num::<u64>("pipeline", 512)?.max(1),
            pipelines_in_flight: f.num::<usize>("pipelines-in-flight", 2)?.max(1),
            max_in_flight: f.num::<u64>("max-in-flight", 50_000)?.max(1),
            settle_s: f.num("settle-s", 5.0)?,
            durable,
            v2,
            history_sample,
            blip_at_s,
            resume,
            resume_backlog: f.num::<u64>("resume-backlog", 5)?.max(1),
            resume_away_s: f.num("resume-away-s", 2.0)?,
            metrics_path: f.str("metrics-path").unwrap_or("/metrics").to_owned(),
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

    /// The options that shaped the run, as the report's `config` (never the secret).
    pub(super) fn echo(&self) -> BTreeMap<String, serde_json::Value> {
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
        m.insert("redis_cluster".into(), json!(self.redis_cluster));
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
        m.insert("durable".into(), json!(self.durable));
        m.insert("v2".into(), json!(self.v2));
        m.insert("history_sample".into(), json!(self.history_sample));
        m.insert("blip_at_s".into(), json!(self.blip_at_s));
        m.insert("resume".into(), json!(self.resume));
        if self.resume {
            m.insert("resume_backlog".into(), json!(self.resume_backlog));
            m.insert("resume_away_s".into(), json!(self.resume_away_s));
        }
        m.insert("hold_s".into(), json!(self.hold_s));
        m.insert("drain".into(), json!(self.drain));
        m.insert("bin_ms".into(), json!(self.bin_ms));
        m
    }
}

/// `--src-addrs`: a list, `N` for 127.0.0.1..N, `none`, or by default 4 loopback addresses
/// when the target `host` is on loopback.
fn source_addresses(flag: Option<&str>, host: &str) -> anyhow::Result<Vec<String>> {
    let loopback = host
        .parse::<IpAddr>()
        .map(|ip| ip.is_loopback())
        .unwrap_or(host == "localhost");
    let src_addrs: Vec<String> = match flag {
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
    Ok(src_addrs)
}
