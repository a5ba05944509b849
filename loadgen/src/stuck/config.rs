//! The options of `loadgen stuck-reader`: the usage text and `--flag` parsing.

use std::collections::BTreeMap;

use anyhow::anyhow;
use serde_json::json;

use crate::util::{Flags, WsUrl};

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

/// Options of a stuck-reader run.
pub(super) struct Config {
    pub(super) url: WsUrl,
    pub(super) secret: String,
    pub(super) redis: String,
    pub(super) pid: u32,
    pub(super) redis_pid: Option<u32>,
    pub(super) flood: u64,
    pub(super) payload: usize,
    pub(super) pipeline: u64,
    pub(super) live_rate: u64,
    pub(super) settle_s: f64,
    pub(super) read_after_s: f64,
    pub(super) rounds: usize,
    pub(super) rcvbuf: u32,
    pub(super) user_prefix: String,
    pub(super) channel_prefix: String,
    pub(super) metrics_path: String,
    pub(super) label: String,
    pub(super) out: Option<String>,
    pub(super) svg: Option<String>,
    pub(super) max_run_s: u64,
}

impl Config {
    /// Parses the command line of the stuck-reader mode.
    pub(super) fn parse(args: &[String]) -> anyhow::Result<Self> {
        let f = Flags::parse(args, &[], VALUED)?;
        let need = |k: &str| {
            f.str(k)
                .map(str::to_owned)
                .ok_or_else(|| anyhow!("--{k} is required"))
        };
        Ok(Self {
            url: WsUrl::parse(&need("url")?)?,
            secret: f.secret()?,
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

    /// The options that shaped the run, as the report's `config`.
    pub(super) fn echo(&self) -> BTreeMap<String, serde_json::Value> {
        [
            ("flood", json!(self.flood)),
            ("payload", json!(self.payload)),
            ("pipeline", json!(self.pipeline)),
            ("live_rate", json!(self.live_rate)),
            ("settle_s", json!(self.settle_s)),
            ("read_after_s", json!(self.read_after_s)),
            ("rounds", json!(self.rounds)),
            ("rcvbuf", json!(self.rcvbuf)),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v))
        .collect()
    }
}
