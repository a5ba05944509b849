//! A real `redis-server` for a test: spawned on a free loopback port, ready once it answers
//! PING (within a deadline), killed on drop. Plus a deadline-bounded wait for conditions.

use std::future::Future;
use std::net::{SocketAddr, TcpListener};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use redis::aio::{ConnectionManager, MultiplexedConnection};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;

/// How long redis-server gets to answer PING.
const STARTUP_DEADLINE: Duration = Duration::from_secs(10);
/// Ports tried before giving up (another process may take a port between choosing and binding).
const PORT_ATTEMPTS: usize = 5;
/// Pause between two checks of a condition.
pub const POLL: Duration = Duration::from_millis(20);

/// A `redis-server` child process on its own port, killed on drop.
pub struct RedisServer {
    port: u16,
    child: Child,
}

impl RedisServer {
    /// Starts `redis-server` (no persistence) on a free loopback port; panics if it never
    /// answers PING.
    pub async fn start() -> Self {
        for _ in 0..PORT_ATTEMPTS {
            if let Some(server) = Self::try_start(free_port()).await {
                return server;
            }
        }
        panic!("redis-server did not start on any of {PORT_ATTEMPTS} ports");
    }

    async fn try_start(port: u16) -> Option<Self> {
        let child = Command::new("redis-server")
            .args(["--port", &port.to_string()])
            .args(["--bind", "127.0.0.1"])
            .args(["--save", ""])
            .args(["--appendonly", "no"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("cannot spawn redis-server (is it installed?)");
        let mut server = Self { port, child };
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        let deadline = Instant::now() + STARTUP_DEADLINE;
        while Instant::now() < deadline {
            if ping(addr).await {
                return Some(server);
            }
            if server.child.try_wait().ok().flatten().is_some() {
                return None; // exited: most likely the port was taken
            }
            tokio::time::sleep(POLL).await;
        }
        panic!("redis-server on port {port} did not answer PING within {STARTUP_DEADLINE:?}");
    }

    /// `redis://127.0.0.1:PORT/?protocol=resp3`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/?protocol=resp3", self.port)
    }

    /// A client for this server (RESP3).
    pub fn client(&self) -> redis::Client {
        redis::Client::open(self.url()).expect("redis url")
    }

    /// A connection manager, as the server gives `RedisHistory`.
    pub async fn manager(&self) -> ConnectionManager {
        ConnectionManager::new(self.client())
            .await
            .expect("connection manager")
    }

    /// A plain connection for the test's own commands.
    pub async fn conn(&self) -> MultiplexedConnection {
        self.client()
            .get_multiplexed_async_connection()
            .await
            .expect("redis connection")
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A port nothing listens on right now.
fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind a free port");
    listener.local_addr().expect("local addr").port()
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

/// Polls `check` until it holds; panics naming `what` if it does not within `deadline`.
pub async fn wait_until<F, Fut>(deadline: Duration, what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let end = Instant::now() + deadline;
    loop {
        if check().await {
            return;
        }
        assert!(Instant::now() < end, "not within {deadline:?}: {what}");
        tokio::time::sleep(POLL).await;
    }
}
