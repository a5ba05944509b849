//! The leases inside an actix system with real messages: against a real `redis-server` (quota
//! across two nodes, release, refresh after a loss, release at shutdown) and against a Redis
//! that is not there (fail open).

use std::time::{Duration, Instant};

use redis::AsyncCommands as _;

use super::*;
use crate::broker::keys::UserKeys;

/// A `redis-server` on a free port for one test, killed on drop.
struct Redis(std::process::Child, u16);

impl Redis {
    async fn start() -> Self {
        let port = free_port();
        let child = std::process::Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .stdout(std::process::Stdio::null())
            .spawn()
            .expect("cannot spawn redis-server (apt-get install redis-server)");
        let redis = Self(child, port);
        eventually("redis-server to listen", || async {
            tokio::net::TcpStream::connect(("127.0.0.1", port))
                .await
                .is_ok()
        })
        .await;
        redis
    }

    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.1)
    }

    async fn conn(&self) -> redis::aio::MultiplexedConnection {
        let client = redis::Client::open(self.url()).expect("url");
        client
            .get_multiplexed_async_connection()
            .await
            .expect("connect")
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port()
}

/// Polls `condition` until it holds, panicking with `what` after five seconds.
async fn eventually<F, Fut>(what: &str, mut condition: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let start = Instant::now();
    while !condition().await {
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "timed out: {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn leases(url: &str, node: &str, metrics: &LeaseMetrics) -> Leases {
    let config = LeaseConfig {
        target: crate::broker::RedisTarget::Single(url.to_owned()),
        channel_prefix: "ws:".into(),
        node: NodeId::new(node),
        lease: Duration::from_secs(3),
    };
    Leases::start(config, metrics.clone()).expect("valid url")
}

async fn held(leases: &Leases) -> usize {
    leases.keeper().send(HeldCount).await.expect("keeper alive")
}

fn lease_keys(user: &str) -> UserKeys {
    UserKeys::of_user("ws:", &UserId::new(user))
}

/// Two nodes count the same user's leases: the quota holds across them, a released lease
/// frees its slot at once, and the lease's details are the console's JSON.
#[actix_rt::test]
async fn the_quota_counts_every_nodes_leases() {
    let redis = Redis::start().await;
    let metrics = LeaseMetrics::unregistered();
    let (a, b) = (
        leases(&redis.url(), "a", &metrics),
        leases(&redis.url(), "b", &metrics),
    );
    let user = UserId::new("u");
    let first = a
        .acquire(&user, ConnId::next(), LeaseProtocol::Legacy, Some(2))
        .await;
    let second = b
        .acquire(&user, ConnId::next(), LeaseProtocol::V2, Some(2))
        .await;
    let (first, second) = (first.expect("first"), second.expect("second"));
    let third = a
        .acquire(&user, ConnId::next(), LeaseProtocol::Legacy, Some(2))
        .await;
    assert_eq!(third.err(), Some(QuotaReached { held: 2 }));
    let counts = a.count(&[user.clone(), UserId::new("nobody")]).await;
    assert_eq!(counts.expect("count"), [2, 0]);

    let mut conn = redis.conn().await;
    let info: Vec<String> = conn
        .hvals(lease_keys("u").lease_info())
        .await
        .expect("HVALS");
    let info: Vec<serde_json::Value> = info
        .iter()
        .map(|i| serde_json::from_str(i).unwrap())
        .collect();
    assert!(info
        .iter()
        .any(|i| i["node"] == "b" && i["protocol"] == "v2"));
    assert!(info
        .iter()
        .all(|i| i["since_ms"].as_u64() > Some(1_600_000_000_000)));

    drop(first);
    eventually("the released lease to leave Redis", || async {
        a.count(std::slice::from_ref(&user)).await.ok() == Some(vec![1])
    })
    .await;
    let again = b
        .acquire(&user, ConnId::next(), LeaseProtocol::Legacy, Some(2))
        .await;
    assert!(again.is_ok(), "the freed slot is taken at once");
    assert_eq!(metrics.fail_open.get(), 0);
    drop(second);
}

/// Leases Redis lost (a restart, a flush) are registered again by the next refresh, which
/// refreshes every lease of the node in one script call.
#[actix_rt::test]
async fn a_refresh_registers_lost_leases_again() {
    let redis = Redis::start().await;
    let metrics = LeaseMetrics::unregistered();
    let node = leases(&redis.url(), "n", &metrics);
    let mut guards = Vec::new();
    for user in ["x", "y", "x"] {
        let user = UserId::new(user);
        guards.push(
            node.acquire(&user, ConnId::next(), LeaseProtocol::Legacy, None)
                .await,
        );
    }
    assert!(guards.iter().all(Result::is_ok));
    let mut conn = redis.conn().await;
    redis::cmd("FLUSHALL")
        .query_async::<()>(&mut conn)
        .await
        .expect("FLUSHALL");
    let (x, y) = (UserId::new("x"), UserId::new("y"));
    eventually("the refresh to register the leases again", || async {
        node.count(&[x.clone(), y.clone()]).await.ok() == Some(vec![2, 1])
    })
    .await;
    let ttl: i64 = conn.pttl(lease_keys("x").lease_info()).await.expect("PTTL");
    assert!(
        (1..=3000).contains(&ttl),
        "the details expire with the leases: {ttl}"
    );
    assert!(metrics.refresh_round_trips.get() >= 1);
}

/// Without Redis a connect is admitted at once, counted as fail-open; the keeper still holds the
/// lease (to register it later) until its guard is dropped.
#[actix_rt::test]
async fn an_unreachable_redis_fails_open() {
    let url = format!("redis://127.0.0.1:{}", free_port());
    let metrics = LeaseMetrics::unregistered();
    let node = leases(&url, "n", &metrics);
    let user = UserId::new("u");
    let first = node
        .acquire(&user, ConnId::next(), LeaseProtocol::Legacy, Some(1))
        .await;
    eventually("the store to count as down", || async { node.is_down() }).await;
    let started = Instant::now();
    let second = node
        .acquire(&user, ConnId::next(), LeaseProtocol::Legacy, Some(1))
        .await;
    assert!(
        started.elapsed() < Duration::from_millis(100),
        "no call while down"
    );
    assert!(first.is_ok() && second.is_ok());
    assert_eq!(metrics.fail_open.get(), 2);
    assert_eq!(held(&node).await, 2);
    assert!(node.count(&[user]).await.is_err());
    drop((first, second));
    assert_eq!(held(&node).await, 0);
    assert_eq!(metrics.leases_held.get(), 0);
}

/// At shutdown every lease still held is given back.
#[actix_rt::test]
async fn release_all_gives_every_lease_back() {
    let redis = Redis::start().await;
    let metrics = LeaseMetrics::unregistered();
    let node = leases(&redis.url(), "n", &metrics);
    let user = UserId::new("u");
    let guard = node
        .acquire(&user, ConnId::next(), LeaseProtocol::Legacy, None)
        .await;
    assert_eq!(
        node.count(std::slice::from_ref(&user))
            .await
            .expect("count"),
        [1]
    );
    node.release_all(Duration::from_secs(2)).await;
    assert_eq!(node.count(&[user]).await.expect("count"), [0]);
    drop(guard);
}
