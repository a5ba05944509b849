//! A real `redis-server` per test, on its own port and killed on drop, plus the Redis side of the
//! contract: the channel `ws:{user}`, PUBLISH and PUBSUB observations.

use std::collections::HashMap;
use std::fs::File;
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;

use super::{free_port, wait_until, DEADLINE, POLL, PREFIX, STARTUP_DEADLINE};

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
