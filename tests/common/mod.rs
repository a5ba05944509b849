//! End-to-end test harness: a real `redis-server` and the real `websocket-service` binary, each
//! started on a free port per test and killed on drop, plus WebSocket, HTTP, Redis and JWT
//! helpers. Every wait has a deadline and panics with a message saying what it waited for; the
//! only bounded wait used as an assertion is [`WsClient::expect_silence`].
//!
//! HTTP goes through `awc`, so tests that start a [`Server`] run under `#[actix_web::test]`.

#![allow(dead_code)] // each test binary uses a different part of the harness

use std::collections::HashMap;
use std::fmt::Write as _;
use std::fs::File;
use std::future::Future;
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use futures_util::{SinkExt as _, StreamExt as _};
use jsonwebtoken::{encode, Algorithm, EncodingKey, Header};
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest as _;
use tokio_tungstenite::tungstenite::http::header::{
    HeaderName, HeaderValue, AUTHORIZATION, SEC_WEBSOCKET_PROTOCOL,
};
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::{self, Message};
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

/// The JWT secret every test server uses (unless a test says otherwise).
pub const SECRET: &str = "test-secret-0123456789abcdef";
/// The publish API key every test server uses (unless a test says otherwise).
pub const API_KEY: &str = "test-api-key";
/// The Redis channel prefix of the contract.
pub const PREFIX: &str = "ws:";
/// Default deadline for "this should happen soon" waits.
pub const DEADLINE: Duration = Duration::from_secs(5);
/// Deadline for a process to start answering.
pub const STARTUP_DEADLINE: Duration = Duration::from_secs(20);
/// Largest close reason a WebSocket close frame can carry.
pub const MAX_CLOSE_REASON: usize = 123;
/// How often polling waits look again.
const POLL: Duration = Duration::from_millis(25);

// ---------------------------------------------------------------------------------------------
// Waiting
// ---------------------------------------------------------------------------------------------

/// Polls `condition` until it holds, panicking with `what` after `deadline`.
pub async fn wait_until<F, Fut>(deadline: Duration, what: &str, mut condition: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    wait_for(deadline, what, || {
        let fut = condition();
        async move { fut.await.then_some(()) }
    })
    .await
}

/// Polls `probe` until it yields a value, panicking with `what` after `deadline`.
pub async fn wait_for<T, F, Fut>(deadline: Duration, what: &str, mut probe: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let start = Instant::now();
    loop {
        if let Some(value) = probe().await {
            return value;
        }
        if start.elapsed() >= deadline {
            panic!("timed out after {deadline:?} waiting for {what}");
        }
        tokio::time::sleep(POLL).await;
    }
}

/// A port nobody listens on right now (bound then released).
pub fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    listener.local_addr().expect("local_addr").port()
}

// ---------------------------------------------------------------------------------------------
// Redis
// ---------------------------------------------------------------------------------------------

/// A `redis-server` child process on its own port, killed on drop.
pub struct RedisServer {
    port: u16,
    child: Option<Child>,
    dir: tempfile::TempDir,
}

impl RedisServer {
    /// Starts `redis-server` on a free port and waits until it answers PING.
    pub async fn start() -> Self {
        Self::start_on(free_port()).await
    }

    /// Starts `redis-server` on `port` and waits until it answers PING.
    pub async fn start_on(port: u16) -> Self {
        let dir = tempfile::tempdir().expect("tempdir for redis");
        let mut redis = Self {
            port,
            child: None,
            dir,
        };
        redis.spawn().await;
        redis
    }

    async fn spawn(&mut self) {
        assert!(self.child.is_none(), "redis-server already running");
        let log = File::create(self.dir.path().join("redis.log")).expect("redis log file");
        let child = Command::new("redis-server")
            .args(["--port", &self.port.to_string()])
            .args(["--bind", "127.0.0.1"])
            .args(["--save", ""])
            .args(["--appendonly", "no"])
            .arg("--dir")
            .arg(self.dir.path())
            .stdin(Stdio::null())
            .stdout(Stdio::from(log.try_clone().expect("clone log handle")))
            .stderr(Stdio::from(log))
            .spawn()
            .expect("cannot spawn redis-server (is it installed? apt-get install redis-server)");
        self.child = Some(child);
        let addr = SocketAddr::from(([127, 0, 0, 1], self.port));
        let start = Instant::now();
        loop {
            if ping(addr).await {
                return;
            }
            if let Some(status) = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                panic!(
                    "redis-server on port {} exited with {status} before answering PING:\n{}",
                    self.port,
                    self.log()
                );
            }
            if start.elapsed() >= STARTUP_DEADLINE {
                panic!(
                    "redis-server on port {} did not answer PING within {STARTUP_DEADLINE:?}:\n{}",
                    self.port,
                    self.log()
                );
            }
            tokio::time::sleep(POLL).await;
        }
    }

    /// The redis-server log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("redis.log")).unwrap_or_default()
    }

    /// The port it listens on.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// `redis://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        redis_url(self.port)
    }

    /// Kills the process (SIGKILL: an outage, not a shutdown) and reaps it.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Kills it if running, then starts it again on the same port.
    pub async fn restart(&mut self) {
        self.kill();
        self.spawn().await;
    }

    /// A fresh connection (a new one per call, so that it survives restarts).
    pub async fn conn(&self) -> redis::aio::MultiplexedConnection {
        redis::Client::open(self.url())
            .expect("redis url")
            .get_multiplexed_async_connection()
            .await
            .unwrap_or_else(|e| panic!("cannot connect to redis on port {}: {e}", self.port))
    }

    /// PUBLISHes raw bytes on `channel`; returns how many subscribers got it.
    pub async fn publish(&self, channel: &str, payload: &[u8]) -> i64 {
        redis::cmd("PUBLISH")
            .arg(channel)
            .arg(payload)
            .query_async(&mut self.conn().await)
            .await
            .unwrap_or_else(|e| panic!("PUBLISH {channel}: {e}"))
    }

    /// PUBLISHes raw bytes on `ws:{user}`; returns how many subscribers got it.
    pub async fn publish_to_user(&self, user: &str, payload: &[u8]) -> i64 {
        self.publish(&channel(user), payload).await
    }

    /// `PUBSUB CHANNELS pattern`, sorted.
    pub async fn channels(&self, pattern: &str) -> Vec<String> {
        let mut channels: Vec<String> = redis::cmd("PUBSUB")
            .arg("CHANNELS")
            .arg(pattern)
            .query_async(&mut self.conn().await)
            .await
            .unwrap_or_else(|e| panic!("PUBSUB CHANNELS {pattern}: {e}"));
        channels.sort();
        channels
    }

    /// `PUBSUB NUMSUB channel` (exact name: no glob matching).
    pub async fn numsub(&self, channel: &str) -> i64 {
        let counts: HashMap<String, i64> = redis::cmd("PUBSUB")
            .arg("NUMSUB")
            .arg(channel)
            .query_async(&mut self.conn().await)
            .await
            .unwrap_or_else(|e| panic!("PUBSUB NUMSUB {channel}: {e}"));
        counts.get(channel).copied().unwrap_or(0)
    }

    /// Waits until `ws:{user}` has at least `subscribers` subscribers.
    pub async fn wait_subscribed(&self, user: &str, subscribers: i64) {
        let channel = channel(user);
        let what = format!("PUBSUB NUMSUB {channel} >= {subscribers}");
        wait_until(DEADLINE, &what, || async {
            self.numsub(&channel).await >= subscribers
        })
        .await;
    }

    /// Waits until nobody subscribes to `ws:{user}` any more.
    pub async fn wait_unsubscribed(&self, user: &str) {
        let channel = channel(user);
        let what = format!("PUBSUB NUMSUB {channel} == 0");
        wait_until(DEADLINE, &what, || async {
            self.numsub(&channel).await == 0
        })
        .await;
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
    }
}

/// `redis://127.0.0.1:PORT`.
pub fn redis_url(port: u16) -> String {
    format!("redis://127.0.0.1:{port}")
}

/// The Redis channel of a user: `ws:{user}`.
pub fn channel(user: &str) -> String {
    format!("{PREFIX}{user}")
}

/// True when something on `addr` answers `PING` with `+PONG`.
async fn ping(addr: SocketAddr) -> bool {
    let attempt = async {
        let mut stream = TcpStream::connect(addr).await.ok()?;
        stream.write_all(b"PING\r\n").await.ok()?;
        let mut buf = [0u8; 16];
        let n = stream.read(&mut buf).await.ok()?;
        Some(buf[..n].starts_with(b"+PONG"))
    };
    matches!(
        tokio::time::timeout(Duration::from_secs(1), attempt).await,
        Ok(Some(true))
    )
}

// ---------------------------------------------------------------------------------------------
// Server settings
// ---------------------------------------------------------------------------------------------

/// One `key = value` line of a settings file (`None`: not written).
type Entry<'a> = (&'a str, Option<String>);

/// The settings file a test server gets: defaults suited to tests, a setter per key a test needs.
/// Only keys of the contract are written (the server refuses unknown keys).
#[derive(Clone, Debug)]
pub struct TestSettings {
    ws_path: String,
    workers: u32,
    max_frame_bytes: Option<u64>,
    allowed_origins: Option<Vec<String>>,
    jwt_secret: Option<String>,
    algorithms: Option<Vec<String>>,
    issuer: Option<String>,
    audience: Option<String>,
    leeway_s: Option<u64>,
    close_on_expiry: Option<bool>,
    redis_url: String,
    max_connections_per_user: Option<u64>,
    max_connections: Option<u64>,
    idle_timeout_s: Option<u64>,
    heartbeat_interval_s: Option<u64>,
    heartbeat_timeout_s: Option<u64>,
    send_queue_max: Option<u64>,
    drain_timeout_s: Option<u64>,
    publish_api_key: String,
    log_format: String,
    dev: bool,
    env: Vec<(String, String)>,
}

impl Default for TestSettings {
    fn default() -> Self {
        Self {
            ws_path: "/ws".into(),
            workers: 2,
            max_frame_bytes: None,
            allowed_origins: None,
            jwt_secret: Some(SECRET.into()),
            algorithms: Some(vec!["HS256".into()]),
            issuer: None,
            audience: None,
            leeway_s: Some(0),
            close_on_expiry: None,
            redis_url: String::new(),
            max_connections_per_user: None,
            max_connections: None,
            idle_timeout_s: None,
            heartbeat_interval_s: None,
            heartbeat_timeout_s: None,
            send_queue_max: None,
            drain_timeout_s: None,
            publish_api_key: API_KEY.into(),
            log_format: "json".into(),
            dev: false,
            env: Vec::new(),
        }
    }
}

impl TestSettings {
    /// Defaults: in-process broker, HS256 with [`SECRET`], API key [`API_KEY`], 2 workers.
    pub fn new() -> Self {
        Self::default()
    }

    /// Defaults, with Redis at `redis`.
    pub fn with_redis(redis: &RedisServer) -> Self {
        Self::new().redis_url(redis.url())
    }

    /// `redis.url` ("" = in-process broker).
    pub fn redis_url(mut self, url: impl Into<String>) -> Self {
        self.redis_url = url.into();
        self
    }

    /// `server.ws_path`.
    pub fn ws_path(mut self, path: impl Into<String>) -> Self {
        self.ws_path = path.into();
        self
    }

    /// `server.workers`.
    pub fn workers(mut self, workers: u32) -> Self {
        self.workers = workers;
        self
    }

    /// `server.max_frame_bytes`.
    pub fn max_frame_bytes(mut self, bytes: u64) -> Self {
        self.max_frame_bytes = Some(bytes);
        self
    }

    /// `server.allowed_origins`.
    pub fn allowed_origins(mut self, origins: &[&str]) -> Self {
        self.allowed_origins = Some(origins.iter().map(|o| o.to_string()).collect());
        self
    }

    /// `auth.jwt_secret`.
    pub fn jwt_secret(mut self, secret: impl Into<String>) -> Self {
        self.jwt_secret = Some(secret.into());
        self
    }

    /// Writes no `auth.jwt_secret` at all.
    pub fn no_jwt_secret(mut self) -> Self {
        self.jwt_secret = None;
        self
    }

    /// `auth.algorithms`.
    pub fn algorithms(mut self, algorithms: &[&str]) -> Self {
        self.algorithms = Some(algorithms.iter().map(|a| a.to_string()).collect());
        self
    }

    /// `auth.issuer`.
    pub fn issuer(mut self, issuer: impl Into<String>) -> Self {
        self.issuer = Some(issuer.into());
        self
    }

    /// `auth.audience`.
    pub fn audience(mut self, audience: impl Into<String>) -> Self {
        self.audience = Some(audience.into());
        self
    }

    /// `auth.leeway_s`.
    pub fn leeway_s(mut self, seconds: u64) -> Self {
        self.leeway_s = Some(seconds);
        self
    }

    /// `auth.close_on_expiry`.
    pub fn close_on_expiry(mut self, close: bool) -> Self {
        self.close_on_expiry = Some(close);
        self
    }

    /// `limits.max_connections_per_user`.
    pub fn max_connections_per_user(mut self, n: u64) -> Self {
        self.max_connections_per_user = Some(n);
        self
    }

    /// `limits.max_connections`.
    pub fn max_connections(mut self, n: u64) -> Self {
        self.max_connections = Some(n);
        self
    }

    /// `limits.idle_timeout_s`.
    pub fn idle_timeout_s(mut self, seconds: u64) -> Self {
        self.idle_timeout_s = Some(seconds);
        self
    }

    /// `limits.heartbeat_interval_s`.
    pub fn heartbeat_interval_s(mut self, seconds: u64) -> Self {
        self.heartbeat_interval_s = Some(seconds);
        self
    }

    /// `limits.heartbeat_timeout_s`.
    pub fn heartbeat_timeout_s(mut self, seconds: u64) -> Self {
        self.heartbeat_timeout_s = Some(seconds);
        self
    }

    /// `limits.send_queue_max`.
    pub fn send_queue_max(mut self, n: u64) -> Self {
        self.send_queue_max = Some(n);
        self
    }

    /// `shutdown.drain_timeout_s`.
    pub fn drain_timeout_s(mut self, seconds: u64) -> Self {
        self.drain_timeout_s = Some(seconds);
        self
    }

    /// `api.publish_api_key` ("" disables the publish API).
    pub fn publish_api_key(mut self, key: impl Into<String>) -> Self {
        self.publish_api_key = key.into();
        self
    }

    /// Runs the binary with `--dev`.
    pub fn dev(mut self) -> Self {
        self.dev = true;
        self
    }

    /// An extra environment variable for the server process (e.g. a `WS__SECTION__KEY` override).
    pub fn env(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.env.push((key.into(), value.into()));
        self
    }

    /// The TOML settings file for a server bound to `bind`.
    pub fn to_toml(&self, bind: &str) -> String {
        // JSON strings and arrays of strings are valid TOML values.
        let s = |v: &str| serde_json::to_string(v).expect("string");
        let list = |v: &[String]| serde_json::to_string(v).expect("list");
        let num = |v: u64| v.to_string();
        let sections: [(&str, Vec<Entry>); 7] = [
            (
                "server",
                vec![
                    ("bind", Some(s(bind))),
                    ("ws_path", Some(s(&self.ws_path))),
                    ("workers", Some(self.workers.to_string())),
                    ("max_frame_bytes", self.max_frame_bytes.map(num)),
                    ("allowed_origins", self.allowed_origins.as_deref().map(list)),
                ],
            ),
            (
                "auth",
                vec![
                    ("jwt_secret", self.jwt_secret.as_deref().map(s)),
                    ("algorithms", self.algorithms.as_deref().map(list)),
                    ("issuer", self.issuer.as_deref().map(s)),
                    ("audience", self.audience.as_deref().map(s)),
                    ("leeway_s", self.leeway_s.map(num)),
                    (
                        "close_on_expiry",
                        self.close_on_expiry.map(|v| v.to_string()),
                    ),
                ],
            ),
            (
                "redis",
                vec![
                    ("url", Some(s(&self.redis_url))),
                    ("channel_prefix", Some(s(PREFIX))),
                ],
            ),
            (
                "limits",
                vec![
                    (
                        "max_connections_per_user",
                        self.max_connections_per_user.map(num),
                    ),
                    ("max_connections", self.max_connections.map(num)),
                    ("idle_timeout_s", self.idle_timeout_s.map(num)),
                    ("heartbeat_interval_s", self.heartbeat_interval_s.map(num)),
                    ("heartbeat_timeout_s", self.heartbeat_timeout_s.map(num)),
                    ("send_queue_max", self.send_queue_max.map(num)),
                ],
            ),
            (
                "shutdown",
                vec![("drain_timeout_s", self.drain_timeout_s.map(num))],
            ),
            (
                "api",
                vec![("publish_api_key", Some(s(&self.publish_api_key)))],
            ),
            (
                "telemetry",
                vec![
                    ("service_name", Some(s("websocket-service-test"))),
                    ("otlp_endpoint", Some(s(""))),
                    ("log_format", Some(s(&self.log_format))),
                ],
            ),
        ];
        let mut out = String::new();
        for (section, keys) in sections {
            writeln!(out, "[{section}]").expect("write");
            for (key, value) in keys {
                if let Some(value) = value {
                    writeln!(out, "{key} = {value}").expect("write");
                }
            }
            out.push('\n');
        }
        out
    }
}

// ---------------------------------------------------------------------------------------------
// Server process
// ---------------------------------------------------------------------------------------------

/// An HTTP answer, read in full.
#[derive(Debug)]
pub struct HttpReply {
    /// Status code.
    pub status: u16,
    /// Headers, names lower-cased.
    pub headers: Vec<(String, String)>,
    /// Body bytes.
    pub body: Vec<u8>,
}

impl HttpReply {
    /// The first value of header `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        let name = name.to_ascii_lowercase();
        self.headers
            .iter()
            .find(|(k, _)| *k == name)
            .map(|(_, v)| v.as_str())
    }

    /// The body as text.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// The body as JSON (panics with the body when it is not JSON).
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!(
                "HTTP {} body is not JSON ({e}): {:?}",
                self.status,
                self.text()
            )
        })
    }

    /// Asserts the body is the contract's error JSON with `code`; returns the `error` object.
    pub fn assert_error(&self, status: u16, code: &str) -> Value {
        assert_eq!(
            self.status,
            status,
            "unexpected status, body: {}",
            self.text()
        );
        let body = self.json();
        let error = body
            .get("error")
            .unwrap_or_else(|| panic!("no `error` object in {body}"))
            .clone();
        for field in [
            "code",
            "message",
            "correlation_id",
            "service",
            "timestamp",
            "details",
        ] {
            assert!(
                error.get(field).is_some(),
                "error JSON lacks `{field}`: {body}"
            );
        }
        assert_eq!(error["code"], code, "error code in {body}");
        error
    }
}

/// The `websocket-service` binary as a child process on a free port, killed on drop. When a test
/// panics, drop prints the server's log so the failure can be diagnosed.
pub struct Server {
    child: Child,
    port: u16,
    dir: tempfile::TempDir,
    http: awc::Client,
    exit: Option<ExitStatus>,
    settings: TestSettings,
    api_key: String,
}

impl Server {
    /// Writes the settings, starts the binary and waits until `GET /healthz` answers 200.
    pub async fn start(settings: TestSettings) -> Self {
        let port = free_port();
        let dir = tempfile::tempdir().expect("tempdir for server");
        let config = dir.path().join("settings.toml");
        std::fs::write(&config, settings.to_toml(&format!("127.0.0.1:{port}")))
            .expect("write settings.toml");
        let log = File::create(dir.path().join("server.log")).expect("server log file");
        let mut command = Command::new(env!("CARGO_BIN_EXE_websocket-service"));
        command.arg("--config").arg(&config);
        if settings.dev {
            command.arg("--dev");
        }
        for (key, _) in std::env::vars() {
            if key.starts_with("WS__") {
                command.env_remove(key);
            }
        }
        command
            .envs(settings.env.iter().map(|(k, v)| (k, v)))
            .current_dir(dir.path())
            .stdin(Stdio::null())
            .stdout(Stdio::from(log.try_clone().expect("clone log handle")))
            .stderr(Stdio::from(log));
        let child = command.spawn().expect("spawn websocket-service");
        let http = awc::Client::builder()
            .timeout(Duration::from_secs(5))
            .finish();
        let mut server = Self {
            child,
            port,
            dir,
            http,
            exit: None,
            api_key: settings.publish_api_key.clone(),
            settings,
        };
        server.wait_healthy().await;
        server
    }

    async fn wait_healthy(&mut self) {
        let start = Instant::now();
        loop {
            if let Ok(reply) = self.try_get("/healthz").await {
                if reply.status == 200 {
                    return;
                }
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                self.exit = Some(status);
                panic!(
                    "server exited with {status} before /healthz answered 200\n--- settings.toml ---\n{}\n--- log ---\n{}",
                    self.settings_toml(),
                    self.log()
                );
            }
            if start.elapsed() >= STARTUP_DEADLINE {
                panic!(
                    "server did not answer /healthz 200 within {STARTUP_DEADLINE:?}\n--- log ---\n{}",
                    self.log()
                );
            }
            tokio::time::sleep(POLL).await;
        }
    }

    /// The settings file as written.
    pub fn settings_toml(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("settings.toml")).unwrap_or_default()
    }

    /// Everything the server printed (stdout and stderr) so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    /// Where the server's stdout and stderr go.
    pub fn log_path(&self) -> PathBuf {
        self.dir.path().join("server.log")
    }

    /// The temp directory of this server.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Its port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// `http://127.0.0.1:PORT`.
    pub fn http_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// The WebSocket URL without a token.
    pub fn ws_base(&self) -> String {
        format!("ws://127.0.0.1:{}{}", self.port, self.settings.ws_path)
    }

    /// The WebSocket URL with `?token=`.
    pub fn ws_url(&self, token: &str) -> String {
        format!("{}?token={token}", self.ws_base())
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Sends SIGTERM.
    pub fn sigterm(&self) {
        self.signal("TERM");
    }

    /// Sends a signal by name (TERM, INT, …) with `kill(1)`.
    pub fn signal(&self, name: &str) {
        let status = Command::new("kill")
            .arg(format!("-{name}"))
            .arg(self.pid().to_string())
            .status()
            .expect("run kill");
        assert!(status.success(), "kill -{name} {} failed", self.pid());
    }

    /// Waits for the process to exit, panicking after `deadline`.
    pub async fn wait_exit(&mut self, deadline: Duration) -> ExitStatus {
        if let Some(status) = self.exit {
            return status;
        }
        let start = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                self.exit = Some(status);
                return status;
            }
            if start.elapsed() >= deadline {
                panic!("server did not exit within {deadline:?}");
            }
            tokio::time::sleep(POLL).await;
        }
    }

    /// `GET path`, or the transport error.
    pub async fn try_get(&self, path: &str) -> Result<HttpReply, String> {
        let request = self.http.get(format!("{}{path}", self.http_url()));
        read_reply(request.send().await.map_err(|e| e.to_string())?).await
    }

    /// `GET path` (panics on a transport error).
    pub async fn get(&self, path: &str) -> HttpReply {
        self.try_get(path)
            .await
            .unwrap_or_else(|e| panic!("GET {path}: {e}"))
    }

    /// `POST path` with `headers` and `body` (panics on a transport error).
    pub async fn post(&self, path: &str, headers: &[(&str, &str)], body: &str) -> HttpReply {
        let mut request = self.http.post(format!("{}{path}", self.http_url()));
        for (name, value) in headers {
            request = request.insert_header((*name, *value));
        }
        let response = request
            .send_body(body.to_owned())
            .await
            .unwrap_or_else(|e| panic!("POST {path}: {e}"));
        read_reply(response)
            .await
            .unwrap_or_else(|e| panic!("POST {path}: {e}"))
    }

    /// The API key [`Server::publish_api`] presents (the configured one unless changed).
    pub fn set_api_key(&mut self, key: impl Into<String>) {
        self.api_key = key.into();
    }

    /// `POST /api/v1/publish` with the API key; asserts 200 `{"published": users.len()}`.
    pub async fn publish_api(&self, users: &[&str], data: Value) -> HttpReply {
        let body = json!({ "user_ids": users, "data": data }).to_string();
        let reply = self
            .post(
                "/api/v1/publish",
                &[
                    ("X-API-Key", self.api_key.as_str()),
                    ("Content-Type", "application/json"),
                ],
                &body,
            )
            .await;
        assert_eq!(reply.status, 200, "publish API: {}", reply.text());
        assert_eq!(reply.json(), json!({ "published": users.len() }));
        reply
    }

    /// The value of one series in `/metrics`, e.g. `ws_connections_active` or
    /// `ws_connections_closed_total{code="4009"}` (labels as the exposition writes them).
    pub async fn metric(&self, series: &str) -> Option<f64> {
        let reply = self.get("/metrics").await;
        assert_eq!(reply.status, 200, "GET /metrics: {}", reply.text());
        reply.text().lines().find_map(|line| {
            let value = line.strip_prefix(series)?.strip_prefix(' ')?;
            value.trim().parse().ok()
        })
    }

    /// Waits until `GET /readyz` answers `status`.
    pub async fn wait_readyz(&self, status: u16, deadline: Duration) -> HttpReply {
        let what = format!("GET /readyz to answer {status}");
        wait_for(deadline, &what, || async {
            self.try_get("/readyz")
                .await
                .ok()
                .filter(|r| r.status == status)
        })
        .await
    }

    /// Connects with `?token=` and panics if the handshake fails.
    pub async fn connect(&self, token: &str) -> WsClient {
        WsClient::connect(&self.ws_url(token)).await
    }
}

impl Server {
    /// Ends the process the way an operator's double Ctrl-C does (the second signal exits at
    /// once), so that it exits normally (and an instrumented build writes its coverage); kills it
    /// if it is still there after a short grace.
    fn stop_quickly(&mut self) {
        for _ in 0..2 {
            let _ = Command::new("kill")
                .arg("-INT")
                .arg(self.pid().to_string())
                .status();
            std::thread::sleep(Duration::from_millis(20));
        }
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(2) {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if self.exit.is_none() {
            self.stop_quickly();
        }
        if std::thread::panicking() {
            eprintln!(
                "--- server log ({}) ---\n{}\n--- end of server log ---",
                self.log_path().display(),
                self.log()
            );
        }
    }
}

async fn read_reply<S>(mut response: awc::ClientResponse<S>) -> Result<HttpReply, String>
where
    S: futures_util::Stream<Item = Result<actix_web::web::Bytes, awc::error::PayloadError>> + Unpin,
{
    let status = response.status().as_u16();
    let headers = response
        .headers()
        .iter()
        .map(|(k, v)| {
            (
                k.as_str().to_ascii_lowercase(),
                String::from_utf8_lossy(v.as_bytes()).into_owned(),
            )
        })
        .collect();
    let body = response
        .body()
        .limit(16 * 1024 * 1024)
        .await
        .map_err(|e| e.to_string())?
        .to_vec();
    Ok(HttpReply {
        status,
        headers,
        body,
    })
}

// ---------------------------------------------------------------------------------------------
// WebSocket client
// ---------------------------------------------------------------------------------------------

/// The client side of one WebSocket.
pub type WsStream = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// What the next read from a socket gave.
#[derive(Debug)]
pub enum Frame {
    /// A text message.
    Text(String),
    /// A binary message.
    Binary(Vec<u8>),
    /// A close frame (`None`: no code).
    Close(Option<(u16, String)>),
    /// The stream ended or failed without a close frame.
    Ended(String),
}

/// A closed socket's code, raw reason and the reason parsed as JSON.
#[derive(Debug)]
pub struct Closed {
    /// Close code.
    pub code: u16,
    /// Raw reason.
    pub reason: String,
    /// The reason parsed as JSON.
    pub json: Value,
}

/// A connected WebSocket client.
pub struct WsClient {
    ws: WsStream,
    /// The subprotocol the 101 answer selected, if any.
    pub protocol: Option<String>,
}

/// How a token is presented on the upgrade.
#[derive(Clone, Copy, Debug)]
pub enum TokenVia {
    /// `?token=`.
    Query,
    /// `Sec-WebSocket-Protocol: bearer, <JWT>`.
    Subprotocol,
    /// `Authorization: Bearer <JWT>`.
    Header,
}

impl WsClient {
    /// Connects to `url` (panics if the handshake fails).
    pub async fn connect(url: &str) -> Self {
        Self::try_connect(url, None, None)
            .await
            .unwrap_or_else(|e| panic!("WebSocket handshake with {url} failed: {e}"))
    }

    /// Connects to the server with `token` presented `via`.
    pub async fn connect_via(server: &Server, token: &str, via: TokenVia) -> Self {
        let result = match via {
            TokenVia::Query => Self::try_connect(&server.ws_url(token), None, None).await,
            TokenVia::Subprotocol => {
                let value = format!("bearer, {token}");
                Self::try_connect(&server.ws_base(), Some(&value), None).await
            }
            TokenVia::Header => {
                let value = format!("Bearer {token}");
                Self::try_connect(&server.ws_base(), None, Some(&value)).await
            }
        };
        result.unwrap_or_else(|e| panic!("WebSocket handshake ({via:?}) failed: {e}"))
    }

    /// Connects to `url`, with an optional `Sec-WebSocket-Protocol` and `Authorization` header.
    pub async fn try_connect(
        url: &str,
        protocol: Option<&str>,
        authorization: Option<&str>,
    ) -> Result<Self, tungstenite::Error> {
        let mut headers = Vec::new();
        if let Some(protocol) = protocol {
            headers.push((SEC_WEBSOCKET_PROTOCOL.as_str(), protocol));
        }
        if let Some(authorization) = authorization {
            headers.push((AUTHORIZATION.as_str(), authorization));
        }
        Self::try_connect_with_headers(url, &headers).await
    }

    /// Connects to `url` with extra request headers.
    pub async fn try_connect_with_headers(
        url: &str,
        headers: &[(&str, &str)],
    ) -> Result<Self, tungstenite::Error> {
        let mut request = url.into_client_request()?;
        for (name, value) in headers {
            let name = HeaderName::from_bytes(name.as_bytes()).expect("header name");
            let value = HeaderValue::from_str(value).expect("header value");
            request.headers_mut().insert(name, value);
        }
        let connecting = tokio_tungstenite::connect_async(request);
        let (ws, response) = tokio::time::timeout(DEADLINE, connecting)
            .await
            .unwrap_or_else(|_| panic!("WebSocket handshake with {url} took over {DEADLINE:?}"))?;
        let protocol = response
            .headers()
            .get(SEC_WEBSOCKET_PROTOCOL)
            .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned());
        Ok(Self { ws, protocol })
    }

    /// The next text, binary or close frame (pings and pongs are skipped; tungstenite answers
    /// pings by itself), or `None` after `deadline`.
    pub async fn next_frame(&mut self, deadline: Duration) -> Option<Frame> {
        let read = async {
            loop {
                match self.ws.next().await {
                    None => return Frame::Ended("stream ended".into()),
                    Some(Err(e)) => return Frame::Ended(e.to_string()),
                    Some(Ok(Message::Text(text))) => return Frame::Text(text.as_str().to_owned()),
                    Some(Ok(Message::Binary(bytes))) => return Frame::Binary(bytes.to_vec()),
                    Some(Ok(Message::Close(frame))) => {
                        return Frame::Close(
                            frame.map(|f| (u16::from(f.code), f.reason.as_str().to_owned())),
                        )
                    }
                    Some(Ok(_)) => continue,
                }
            }
        };
        tokio::time::timeout(deadline, read).await.ok()
    }

    /// The next message, which must be a text frame.
    pub async fn recv_text(&mut self, deadline: Duration) -> String {
        match self.next_frame(deadline).await {
            Some(Frame::Text(text)) => text,
            Some(other) => panic!("expected a text frame, got {other:?}"),
            None => panic!("no text frame within {deadline:?}"),
        }
    }

    /// The next message, which must be a binary frame.
    pub async fn recv_binary(&mut self, deadline: Duration) -> Vec<u8> {
        match self.next_frame(deadline).await {
            Some(Frame::Binary(bytes)) => bytes,
            Some(other) => panic!("expected a binary frame, got {other:?}"),
            None => panic!("no binary frame within {deadline:?}"),
        }
    }

    /// The next message must be a close frame with a code and a reason that is valid JSON of at
    /// most 123 bytes holding `error_code`, `message` and `correlation_id`.
    pub async fn expect_close(&mut self, deadline: Duration) -> Closed {
        let (code, reason) = match self.next_frame(deadline).await {
            Some(Frame::Close(Some(close))) => close,
            Some(other) => panic!("expected a close frame with a code, got {other:?}"),
            None => panic!("no close frame within {deadline:?}"),
        };
        assert!(
            reason.len() <= MAX_CLOSE_REASON,
            "close reason is {} bytes (max {MAX_CLOSE_REASON}): {reason}",
            reason.len()
        );
        let json: Value = serde_json::from_str(&reason)
            .unwrap_or_else(|e| panic!("close {code} reason is not JSON ({e}): {reason:?}"));
        for field in ["error_code", "message", "correlation_id"] {
            assert!(
                json.get(field).is_some(),
                "close {code} reason lacks `{field}`: {reason}"
            );
        }
        Closed { code, reason, json }
    }

    /// Asserts a close with `code` and reason `error_code`; returns it.
    pub async fn expect_close_with(&mut self, code: u16, error_code: &str) -> Closed {
        let closed = self.expect_close(DEADLINE).await;
        assert_eq!(closed.code, code, "close code, reason {}", closed.reason);
        assert_eq!(
            closed.json["error_code"], error_code,
            "error_code in close reason {}",
            closed.reason
        );
        closed
    }

    /// Asserts nothing (no message, no close) arrives for `duration`. Only meaningful after a
    /// positive delivery elsewhere showed the message had every chance to arrive.
    pub async fn expect_silence(&mut self, duration: Duration) {
        if let Some(frame) = self.next_frame(duration).await {
            panic!("expected silence for {duration:?}, got {frame:?}");
        }
    }

    /// Sends a text frame.
    pub async fn send_text(&mut self, text: &str) {
        self.ws
            .send(Message::text(text.to_owned()))
            .await
            .expect("send text frame");
    }

    /// Sends a raw message.
    pub async fn send(&mut self, message: Message) -> Result<(), tungstenite::Error> {
        self.ws.send(message).await
    }

    /// Closes with 1000 and waits (bounded) for the server's answer.
    pub async fn close(mut self) {
        let frame = CloseFrame {
            code: CloseCode::Normal,
            reason: "".into(),
        };
        let _ = self.ws.send(Message::Close(Some(frame))).await;
        let drain = async { while let Some(Ok(_)) = self.ws.next().await {} };
        let _ = tokio::time::timeout(DEADLINE, drain).await;
    }
}

/// With the in-process broker there is no subscription to observe, so readiness to receive is
/// proven by publishing probes through the API until one reaches `client`. Afterwards a final
/// marker is published and read, so that no late probe is left to confuse the caller.
pub async fn publish_api_until_received(server: &Server, user: &str, client: &mut WsClient) {
    publish_api_until_all_received(server, user, &mut [client]).await;
}

/// Like [`publish_api_until_received`], for several sockets of one user: probes until every
/// socket got one, then a marker that each reads (skipping late probes).
pub async fn publish_api_until_all_received(
    server: &Server,
    user: &str,
    clients: &mut [&mut WsClient],
) {
    let prefix = format!("probe-{user}-");
    let start = Instant::now();
    let mut attempt = 0u32;
    let mut received = vec![false; clients.len()];
    while received.contains(&false) {
        assert!(
            start.elapsed() < DEADLINE,
            "probes did not reach every socket of {user} within {DEADLINE:?}"
        );
        attempt += 1;
        let probe = format!("{prefix}{attempt}");
        server.publish_api(&[user], Value::String(probe)).await;
        for (client, got) in clients.iter_mut().zip(&mut received) {
            if *got {
                continue;
            }
            match client.next_frame(Duration::from_millis(100)).await {
                Some(Frame::Text(text)) if text.starts_with(&prefix) => *got = true,
                Some(other) => panic!("while probing delivery to {user}: got {other:?}"),
                None => {}
            }
        }
    }
    let marker = format!("{prefix}end");
    server
        .publish_api(&[user], Value::String(marker.clone()))
        .await;
    for client in clients.iter_mut() {
        loop {
            let text = client.recv_text(DEADLINE).await;
            if text == marker {
                break;
            }
            assert!(
                text.starts_with(&prefix),
                "unexpected message {text:?} while probing {user}"
            );
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Tokens
// ---------------------------------------------------------------------------------------------

/// Unix time in seconds.
pub fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
        .as_secs()
}

/// Signs `claims` with `alg` and `secret`.
pub fn sign(alg: Algorithm, secret: &str, claims: &Value) -> String {
    encode(
        &Header::new(alg),
        claims,
        &EncodingKey::from_secret(secret.as_bytes()),
    )
    .expect("sign JWT")
}

/// A valid HS256 token for `sub`, expiring in an hour.
pub fn token(sub: &str) -> String {
    token_expiring(sub, now() + 3600)
}

/// A valid-signature HS256 token for `sub` with `exp`.
pub fn token_expiring(sub: &str, exp: u64) -> String {
    sign(
        Algorithm::HS256,
        SECRET,
        &json!({ "sub": sub, "exp": exp, "iat": now() }),
    )
}

/// Expired an hour ago.
pub fn expired_token(sub: &str) -> String {
    token_expiring(sub, now() - 3600)
}

/// Signed with another secret.
pub fn wrong_secret_token(sub: &str) -> String {
    sign(
        Algorithm::HS256,
        "another-secret-0123456789abcdef",
        &json!({ "sub": sub, "exp": now() + 3600 }),
    )
}

/// No `exp` claim.
pub fn no_exp_token(sub: &str) -> String {
    sign(
        Algorithm::HS256,
        SECRET,
        &json!({ "sub": sub, "iat": now() }),
    )
}

/// HS384 with the right secret (algorithm not allowed).
pub fn hs384_token(sub: &str) -> String {
    sign(
        Algorithm::HS384,
        SECRET,
        &json!({ "sub": sub, "exp": now() + 3600 }),
    )
}

/// An unsigned token (`alg: none`), which must be refused.
pub fn alg_none_token(sub: &str) -> String {
    let header = base64url(br#"{"alg":"none","typ":"JWT"}"#);
    let claims = json!({ "sub": sub, "exp": now() + 3600 }).to_string();
    format!("{header}.{}.", base64url(claims.as_bytes()))
}

/// Unpadded base64url.
pub fn base64url(data: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut out = String::new();
    for chunk in data.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..=chunk.len() {
            out.push(char::from(ALPHABET[((n >> (18 - 6 * i)) & 63) as usize]));
        }
    }
    out
}

/// True when `s` looks like a compact JWS: three non-empty base64url parts, header starting `eyJ`.
pub fn looks_like_jwt(s: &str) -> bool {
    let parts: Vec<&str> = s.split('.').collect();
    parts.len() == 3
        && parts[0].starts_with("eyJ")
        && parts.iter().all(|p| {
            !p.is_empty()
                && p.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        })
}

// ---------------------------------------------------------------------------------------------
// accounting (issue #11, defect 8)
// ---------------------------------------------------------------------------------------------

impl WsClient {
    /// Connects to `url` from a socket whose receive buffer is about `bytes` (the kernel doubles
    /// it and applies its minimum), so that a client that does not read fills up quickly. The
    /// client reads nothing until the test calls [`WsClient::next_frame`].
    pub async fn connect_with_recv_buffer(url: &str, bytes: u32) -> Self {
        let request = url.into_client_request().expect("WebSocket request");
        let host = request.uri().host().expect("host in url").to_owned();
        let port = request.uri().port_u16().expect("port in url");
        let address: SocketAddr = format!("{host}:{port}").parse().expect("ip:port in url");
        let socket = tokio::net::TcpSocket::new_v4().expect("client socket");
        socket.set_recv_buffer_size(bytes).expect("SO_RCVBUF");
        let stream = socket.connect(address).await.expect("TCP connect");
        let handshake = tokio_tungstenite::client_async(request, MaybeTlsStream::Plain(stream));
        let (ws, _) = tokio::time::timeout(DEADLINE, handshake)
            .await
            .unwrap_or_else(|_| panic!("WebSocket handshake with {url} took over {DEADLINE:?}"))
            .unwrap_or_else(|e| panic!("WebSocket handshake with {url} failed: {e}"));
        Self { ws, protocol: None }
    }
}

// ---------------------------------------------------------------------------------------------
// limits (issue #11, defect 9): a server under an open-files limit
// ---------------------------------------------------------------------------------------------

impl Server {
    /// Like [`Server::start`], with the server started under the open-files limit `soft:hard`
    /// by `prlimit(1)` (util-linux), which execs it: the child's pid is the server's.
    pub async fn start_with_open_files(settings: TestSettings, soft: u64, hard: u64) -> Self {
        let port = free_port();
        let dir = tempfile::tempdir().expect("tempdir for server");
        let config = dir.path().join("settings.toml");
        std::fs::write(&config, settings.to_toml(&format!("127.0.0.1:{port}")))
            .expect("write settings.toml");
        let log = File::create(dir.path().join("server.log")).expect("server log file");
        let mut command = Command::new("prlimit");
        command
            .arg(format!("--nofile={soft}:{hard}"))
            .arg("--")
            .arg(env!("CARGO_BIN_EXE_websocket-service"))
            .arg("--config")
            .arg(&config)
            .envs(settings.env.iter().map(|(k, v)| (k, v)))
            .current_dir(dir.path())
            .stdin(Stdio::null())
            .stdout(Stdio::from(log.try_clone().expect("clone log handle")))
            .stderr(Stdio::from(log));
        for (key, _) in std::env::vars().filter(|(key, _)| key.starts_with("WS__")) {
            command.env_remove(key);
        }
        let mut server = Self {
            child: command.spawn().expect("spawn prlimit websocket-service"),
            port,
            dir,
            http: awc::Client::builder()
                .timeout(Duration::from_secs(5))
                .finish(),
            exit: None,
            api_key: settings.publish_api_key.clone(),
            settings,
        };
        server.wait_healthy().await;
        server
    }
}
