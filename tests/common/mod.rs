//! End-to-end test harness: a real `redis-server` per test and a server per test (in this
//! process on a listener bound to port 0, or the real binary as a child process), each stopped
//! on drop, plus WebSocket, HTTP, Redis and JWT helpers. Every wait has a deadline and panics
//! with a message saying what it waited for; the only bounded wait used as an assertion is
//! [`WsClient::expect_silence`].
//!
//! HTTP goes through `awc`, so tests that start a [`Server`] run under `#[actix_web::test]`.
//!
//! # Layout
//! - `redis` — [`RedisServer`], the channel `ws:{user}`.
//! - `redis_cluster` — [`RedisCluster`]: six nodes, three primaries, failovers, slot moves.
//! - `settings` — [`TestSettings`]: the settings file, one generic `set("section.key", value)`.
//! - `server` — [`Server`]: in-process or a process; HTTP helpers.
//! - `http` — [`HttpReply`] and the error JSON of the contract.
//! - `sockets` — [`WsClient`]: connecting, reading frames, close frames, delivery probes.
//! - `tokens` — JWTs, good and bad.

#![allow(dead_code)] // each test binary uses a different part of the harness
#![allow(unused_imports)] // likewise for the re-exports

mod http;
mod redis;
mod redis_cluster;
mod server;
mod settings;
mod sockets;
mod tokens;

use std::future::Future;
use std::net::TcpListener;
use std::time::{Duration, Instant};

pub use self::http::HttpReply;
pub use self::redis::{channel, redis_url, RedisServer};
pub use self::redis_cluster::{RedisCluster, CLUSTER_DEADLINE};
pub use self::server::Server;
pub use self::settings::TestSettings;
pub use self::sockets::{
    publish_api_until_all_received, publish_api_until_received, Closed, Frame, TokenVia, WsClient,
    WsStream,
};
pub use self::tokens::*;

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
