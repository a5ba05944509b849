//! See nothing lost across a server restart, in one command:
//!
//! ```sh
//! cargo run --release --example resume_demo            # needs redis-server on the PATH
//! cargo run --release --example resume_demo -- 50 400  # 50 clients, 400 messages/s in all
//! ```
//!
//! Starts its own `redis-server` on a free loopback port and the server (in this process) with
//! history on; connects protocol v2 clients (one user each); publishes durable messages to them
//! through Redis (`FCALL ws_publish`, the documented call for backends) at a steady rate; stops
//! the server (SIGTERM's drain: every socket closed 1012) and starts it again on the same port
//! while the publishing goes on. Each client reconnects with backoff and resumes with
//! `since=<epoch>:<offset>`. At the end it prints, per client and in all, the messages
//! published, received, lost and duplicated, and exits 1 unless nothing was lost or duplicated.

use std::net::{SocketAddr, TcpListener};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::StreamExt as _;
use serde_json::Value;
use tokio_tungstenite::tungstenite::Message;
use websocket_service::config::Settings;
use websocket_service::{Shutdown, ShutdownHandle};

const SECRET: &str = "resume-demo-secret-0123456789";
/// How long messages are published; the restart happens a third of the way in.
const PUBLISHING: Duration = Duration::from_secs(6);

/// What one client saw.
#[derive(Default)]
struct Seen {
    offsets: Vec<u64>,
    connects: u32,
    not_recovered: u32,
}

type Clients = Arc<Vec<Mutex<Seen>>>;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let clients: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(20);
    let rate: u64 = args.next().and_then(|a| a.parse().ok()).unwrap_or(200);
    let redis_port = free_port()?;
    let _redis = RedisProcess::start(redis_port)?;
    let addr = SocketAddr::from(([127, 0, 0, 1], free_port()?));
    let runtime = tokio::runtime::Runtime::new()?;
    runtime.block_on(demo(clients, rate, redis_port, addr))
}

async fn demo(
    clients: usize,
    rate: u64,
    redis_port: u16,
    addr: SocketAddr,
) -> Result<(), Box<dyn std::error::Error>> {
    let redis_url = format!("redis://127.0.0.1:{redis_port}");
    wait_for_redis(&redis_url).await?;
    let server = ServerThread::start(addr, &redis_url)?;
    wait_for_http(addr).await?;
    println!("server on {addr}, redis on :{redis_port}; {clients} v2 clients, {rate} msg/s");
    let seen: Clients = Arc::new((0..clients).map(|_| Mutex::new(Seen::default())).collect());
    let stop = Arc::new(Mutex::new(None::<Vec<u64>>));
    let tasks: Vec<_> = (0..clients)
        .map(|i| tokio::spawn(client(i, addr, seen.clone(), stop.clone())))
        .collect();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let publisher = tokio::spawn(publish(redis_url.clone(), clients, rate));
    tokio::time::sleep(PUBLISHING / 3).await;
    println!("restarting the server (drain: every socket closed 1012) while publishing goes on");
    let server = server.restart(addr, &redis_url)?;
    let last = publisher.await??;
    println!(
        "published {} messages; waiting for every client to catch up",
        last.iter().sum::<u64>()
    );
    *stop.lock().map_err(|_| "poisoned")? = Some(last.clone());
    for task in tasks {
        let _ = tokio::time::timeout(Duration::from_secs(15), task).await;
    }
    server.stop();
    report(&seen, &last)
}

/// Prints what each client got; an error unless every client got every message exactly once.
fn report(seen: &Clients, last: &[u64]) -> Result<(), Box<dyn std::error::Error>> {
    let (mut lost, mut duplicated, mut received, mut not_recovered) = (0, 0, 0, 0);
    for (i, seen) in seen.iter().enumerate() {
        let seen = seen.lock().map_err(|_| "poisoned")?;
        let unique: std::collections::BTreeSet<u64> = seen.offsets.iter().copied().collect();
        let client_lost = (1..=last[i]).filter(|o| !unique.contains(o)).count();
        let client_dup = seen.offsets.len() - unique.len();
        if client_lost + client_dup > 0 || i < 3 {
            println!(
                "  client {i:>3}: published {:>4}, received {:>4}, lost {client_lost}, \
                 duplicated {client_dup}, connections {}",
                last[i],
                seen.offsets.len(),
                seen.connects
            );
        }
        lost += client_lost;
        duplicated += client_dup;
        received += seen.offsets.len();
        not_recovered += seen.not_recovered;
    }
    println!(
        "all clients: published {}, received {received}, lost {lost}, duplicated {duplicated}, \
         resumes not recovered {not_recovered}",
        last.iter().sum::<u64>()
    );
    if lost + duplicated > 0 {
        return Err("messages were lost or duplicated".into());
    }
    println!("nothing lost, nothing duplicated");
    Ok(())
}

/// One v2 client: connects (with `since` once it has a position), records every offset, and
/// reconnects with backoff whenever the server closes it, until it has the last message.
async fn client(i: usize, addr: SocketAddr, seen: Clients, stop: Arc<Mutex<Option<Vec<u64>>>>) {
    let token = websocket_service::auth::mint_hs256(SECRET, &user(i), Duration::from_secs(3600))
        .unwrap_or_default();
    let mut since: Option<String> = None;
    let mut backoff = Duration::from_millis(100);
    loop {
        let done = |seen: &Seen| {
            let last = stop.lock().ok().and_then(|s| s.as_ref().map(|l| l[i]));
            last.is_some_and(|last| seen.offsets.last().copied().unwrap_or(0) >= last)
        };
        if seen[i].lock().map(|s| done(&s)).unwrap_or(true) {
            return;
        }
        let mut url = format!("ws://{addr}/ws?v=2&token={token}");
        if let Some(since) = &since {
            url.push_str(&format!("&since={since}"));
        }
        let Ok((mut ws, _)) = tokio_tungstenite::connect_async(&url).await else {
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(Duration::from_secs(1));
            continue;
        };
        backoff = Duration::from_millis(100);
        if let Ok(mut s) = seen[i].lock() {
            s.connects += 1;
        }
        loop {
            let text = match tokio::time::timeout(Duration::from_millis(300), ws.next()).await {
                Err(_) => String::new(), // silence: check whether it is done
                Ok(Some(Ok(Message::Text(text)))) => text.as_str().to_owned(),
                Ok(Some(Ok(_))) => continue,
                Ok(_) => break, // closed (the drain's 1012) or failed: reconnect
            };
            let frame: Value = serde_json::from_str(&text).unwrap_or_default();
            let Ok(mut s) = seen[i].lock() else { return };
            match frame["type"].as_str() {
                Some("welcome") if frame["recovered"] == false => s.not_recovered += 1,
                Some("message") => s.offsets.push(frame["offset"].as_u64().unwrap_or(0)),
                _ => {}
            }
            if frame["epoch"].is_string() {
                let offset = s.offsets.last().copied().or(frame["offset"].as_u64());
                since = Some(format!(
                    "{}:{}",
                    frame["epoch"].as_str().unwrap_or(""),
                    offset.unwrap_or(0)
                ));
            }
            if done(&s) {
                return;
            }
        }
    }
}

/// Publishes `{"n":…}` round-robin to every user at `rate` messages/s for [`PUBLISHING`];
/// answers each user's last offset.
async fn publish(url: String, users: usize, rate: u64) -> Result<Vec<u64>, redis::RedisError> {
    let mut conn = redis::Client::open(url)?
        .get_multiplexed_async_connection()
        .await?;
    let mut last = vec![0; users];
    let mut tick = tokio::time::interval(Duration::from_micros(1_000_000 / rate.max(1)));
    let started = Instant::now();
    let mut n = 0u64;
    while started.elapsed() < PUBLISHING {
        tick.tick().await;
        let i = (n % users as u64) as usize;
        let (_, offset): (String, u64) = redis::cmd("FCALL")
            .arg("ws_publish")
            .arg(1)
            .arg(format!("ws:{}", user(i)))
            .arg(format!(r#"{{"n":{n}}}"#))
            .query_async(&mut conn)
            .await?;
        last[i] = offset;
        n += 1;
    }
    Ok(last)
}

fn user(i: usize) -> String {
    format!("demo-{i}")
}

/// The server, run in this process on its own thread and actix system.
struct ServerThread {
    shutdown: ShutdownHandle,
    thread: std::thread::JoinHandle<()>,
}

impl ServerThread {
    fn start(addr: SocketAddr, redis_url: &str) -> std::io::Result<Self> {
        let mut settings = Settings::default();
        settings.auth.jwt_secret = SECRET.into();
        settings.redis.url = redis_url.into();
        settings.shutdown.drain_timeout_s = 2;
        let listener = TcpListener::bind(addr)?;
        let (shutdown, serve) = Shutdown::new();
        let thread = std::thread::spawn(move || {
            let system = actix_web::rt::System::new();
            if let Err(error) = system.block_on(websocket_service::run(settings, listener, serve)) {
                eprintln!("server failed: {error:#}");
            }
        });
        Ok(Self { shutdown, thread })
    }

    /// Drains (every socket closed 1012), waits for the exit, starts again on the same port.
    fn restart(self, addr: SocketAddr, redis_url: &str) -> std::io::Result<Self> {
        self.shutdown.trigger();
        let _ = self.thread.join();
        Self::start(addr, redis_url)
    }

    fn stop(self) {
        self.shutdown.trigger();
        self.shutdown.trigger();
        let _ = self.thread.join();
    }
}

/// A `redis-server` child on a loopback port, killed on drop.
struct RedisProcess(Child);

impl RedisProcess {
    fn start(port: u16) -> std::io::Result<Self> {
        let child = Command::new("redis-server")
            .args([
                "--port",
                &port.to_string(),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
            ])
            .args(["--appendonly", "no"])
            .stdout(Stdio::null())
            .spawn()
            .map_err(|e| {
                std::io::Error::other(format!("redis-server: {e} (apt-get install redis-server)"))
            })?;
        Ok(Self(child))
    }
}

impl Drop for RedisProcess {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> std::io::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

async fn wait_for_redis(url: &str) -> Result<(), Box<dyn std::error::Error>> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let client = redis::Client::open(url)?;
        if let Ok(mut conn) = client.get_multiplexed_async_connection().await {
            if redis::cmd("PING")
                .query_async::<String>(&mut conn)
                .await
                .is_ok()
            {
                return Ok(());
            }
        }
        if Instant::now() > deadline {
            return Err("redis-server did not start".into());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn wait_for_http(addr: SocketAddr) -> Result<(), Box<dyn std::error::Error>> {
    let deadline = Instant::now() + Duration::from_secs(10);
    while tokio::net::TcpStream::connect(addr).await.is_err() {
        if Instant::now() > deadline {
            return Err("the server did not start".into());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Ok(())
}
