//! End-to-end tests of the cluster features (issue #14, standalone Redis): two server processes
//! on one `redis-server` share the per-user quota through leases, answer presence across both,
//! and disconnect a user's sockets on both; a killed replica's leases expire, and a Redis outage
//! admits connects on the node's own count, then registers the leases again. Plus the APIs'
//! key, bounds and no-Redis behaviour on an in-process server.

mod common;

use std::time::Duration;

use common::*;
use serde_json::{json, Value};
use ws_actors::broker::keys::UserKeys;
use ws_actors::UserId;

/// How long a lease lasts in these tests (the shortest the settings allow).
const LEASE_S: u64 = 3;
/// Short window for "this socket stays open", used only after a positive delivery.
const SILENCE: Duration = Duration::from_millis(300);

/// Settings of a replica sharing `redis`, with a per-user quota of `quota` across the cluster.
fn replica(redis: &RedisServer, quota: u64) -> TestSettings {
    TestSettings::with_redis(redis)
        .set("limits.max_connections_per_user", quota)
        .set("limits.quota_lease_s", LEASE_S)
}

/// Two replica processes on one Redis, both ready.
async fn two_replicas(redis: &RedisServer, quota: u64) -> (Server, Server) {
    two_replicas_with(replica(redis, quota)).await
}

/// Two replica processes with `settings`, both ready.
async fn two_replicas_with(settings: TestSettings) -> (Server, Server) {
    let a = Server::start(settings.clone()).await;
    let b = Server::start(settings).await;
    a.wait_readyz(200, STARTUP_DEADLINE).await;
    b.wait_readyz(200, STARTUP_DEADLINE).await;
    (a, b)
}

/// The API key header every API call presents.
fn key() -> [(&'static str, &'static str); 1] {
    [("X-API-Key", API_KEY)]
}

/// `GET /api/v1/presence?{query}` with the key; asserts 200 and returns the JSON.
async fn presence(server: &Server, query: &str) -> Value {
    let reply = server
        .get_with(&format!("/api/v1/presence?{query}"), &key())
        .await;
    assert_eq!(reply.status, 200, "presence: {}", reply.text());
    reply.json()
}

/// `POST /api/v1/disconnect` with the key and `body`.
async fn disconnect(server: &Server, body: &Value) -> HttpReply {
    let headers = [("X-API-Key", API_KEY), ("Content-Type", "application/json")];
    server
        .post("/api/v1/disconnect", &headers, &body.to_string())
        .await
}

/// How many sockets of `user` presence reports.
async fn connections(server: &Server, user: &str) -> u64 {
    presence(server, &format!("user_ids={user}")).await[user]["connections"]
        .as_u64()
        .expect("a count")
}

/// `ZCARD` of the user's lease set: every lease Redis holds, expired or not.
async fn leases_in_redis(redis: &RedisServer, user: &str) -> i64 {
    let key = UserKeys::of_user(PREFIX, &UserId::new(user)).leases();
    redis::cmd("ZCARD")
        .arg(key)
        .query_async(&mut redis.conn().await)
        .await
        .expect("ZCARD")
}

/// Connects `user` and asserts the socket is refused with 4000 QUOTA_EXCEEDED.
async fn expect_quota_refusal(server: &Server, user: &str) {
    let mut refused = server.connect(&token(user)).await;
    refused.expect_close_with(4000, "QUOTA_EXCEEDED").await;
}

/// With a quota of 2, one socket on each replica fills it: a third is refused with 4000 on
/// either. Once one closes, its lease is given back (not left to expire: the lease here lasts
/// 30 s) and a connect on the other replica is accepted.
#[actix_web::test]
async fn the_quota_counts_sockets_on_both_replicas() {
    let redis = RedisServer::start().await;
    let settings = replica(&redis, 2).set("limits.quota_lease_s", 30);
    let (a, b) = two_replicas_with(settings).await;
    let on_a = a.connect(&token("alice")).await;
    let mut on_b = b.connect(&token("alice")).await;
    assert_eq!(connections(&a, "alice").await, 2);

    expect_quota_refusal(&a, "alice").await;
    expect_quota_refusal(&b, "alice").await;
    let refused = a
        .metric(r#"ws_quota_refusals_total{scope="cluster"}"#)
        .await;
    assert_eq!(refused, Some(1.0));

    // The release is one asynchronous write after the close: wait for it, far below the lease.
    on_a.close().await;
    wait_until(
        DEADLINE,
        "the closed socket's lease to be given back",
        || async { connections(&b, "alice").await == 1 },
    )
    .await;
    let mut again = b.connect(&token("alice")).await;
    publish_api_until_all_received(&b, "alice", &mut [&mut again, &mut on_b]).await;
    assert_eq!(connections(&b, "alice").await, 2);
    expect_quota_refusal(&a, "alice").await;
}

/// A replica killed with SIGKILL cannot give its leases back: they hold the user's slots until
/// they expire (`limits.quota_lease_s`), then a connect on the other replica is accepted.
#[actix_web::test]
async fn a_killed_replicas_slots_are_freed_after_the_lease() {
    let redis = RedisServer::start().await;
    let (mut a, b) = two_replicas(&redis, 1).await;
    let _on_a = a.connect(&token("bob")).await;
    a.signal("KILL");
    a.wait_exit(DEADLINE).await;

    expect_quota_refusal(&b, "bob").await;
    let deadline = Duration::from_secs(LEASE_S * 4);
    wait_until(deadline, "bob's lease to expire", || async {
        connections(&b, "bob").await == 0
    })
    .await;
    let mut on_b = b.connect(&token("bob")).await;
    publish_api_until_received(&b, "bob", &mut on_b).await;
    assert_eq!(connections(&b, "bob").await, 1);
}

/// Redis down: connects are admitted up to the node's own quota (fail open, counted), the next
/// one refused by the node's count; once Redis is back, the node registers its leases again
/// and the sockets still receive.
#[actix_web::test]
async fn a_redis_outage_fails_open_and_the_leases_come_back() {
    let mut redis = RedisServer::start().await;
    let server = Server::start(replica(&redis, 2)).await;
    server.wait_readyz(200, STARTUP_DEADLINE).await;
    redis.kill();

    let mut first = server.connect(&token("carol")).await;
    let mut second = server.connect(&token("carol")).await;
    expect_quota_refusal(&server, "carol").await;
    assert_eq!(server.metric("ws_quota_fail_open_total").await, Some(2.0));
    assert_eq!(
        server
            .metric(r#"ws_quota_refusals_total{scope="node"}"#)
            .await,
        Some(1.0)
    );
    let health = server.get("/healthz").await.json();
    assert_eq!(health["leases"]["state"], "down", "{health}");

    redis.restart().await;
    let deadline = Duration::from_secs(15);
    wait_until(deadline, "the leases to be registered again", || async {
        leases_in_redis(&redis, "carol").await == 2
    })
    .await;
    server.wait_readyz(200, deadline).await;
    publish_api_until_all_received(&server, "carol", &mut [&mut first, &mut second]).await;
    assert_eq!(connections(&server, "carol").await, 2);
    let health = server.get("/healthz").await.json();
    assert_eq!(
        health["leases"],
        json!({"state": "up", "held": 2, "quota_scope": "cluster"})
    );
}

/// Presence counts a user's sockets on both replicas, from either; ids may be comma-separated
/// or repeated, and URL-encoded.
#[actix_web::test]
async fn presence_counts_sockets_on_both_replicas() {
    let redis = RedisServer::start().await;
    let (a, b) = two_replicas(&redis, 5).await;
    let _sockets = [
        a.connect(&token("dan")).await,
        b.connect(&token("dan")).await,
        b.connect(&token("é v")).await,
    ];
    let expected = json!({
        "dan": {"online": true, "connections": 2},
        "nobody": {"online": false, "connections": 0},
        "é v": {"online": true, "connections": 1},
    });
    let from_a = presence(&a, "user_ids=dan,nobody&user_ids=%C3%A9%20v").await;
    assert_eq!(from_a, expected);
    let from_b = presence(&b, "user_ids=dan&user_ids=nobody,%C3%A9+v").await;
    assert_eq!(from_b, expected);
}

/// A disconnect sent to one replica closes the user's sockets on both with 4003 and the reason,
/// counts them, and leaves another user's socket open.
#[actix_web::test]
async fn disconnect_closes_the_users_sockets_on_every_replica() {
    let redis = RedisServer::start().await;
    let (a, b) = two_replicas(&redis, 5).await;
    let mut on_a = a.connect(&token("erin")).await;
    let mut on_b = b.connect(&token("erin")).await;
    let mut other = a.connect(&token("frank")).await;
    publish_api_until_all_received(&a, "erin", &mut [&mut on_a, &mut on_b]).await;
    publish_api_until_received(&a, "frank", &mut other).await;

    let body = json!({"user_ids": ["erin"], "reason": "logged out"});
    let reply = disconnect(&b, &body).await;
    assert_eq!(reply.status, 200, "disconnect: {}", reply.text());
    assert_eq!(reply.json(), json!({"disconnected": 2}));
    for socket in [&mut on_a, &mut on_b] {
        let closed = socket.expect_close_with(4003, "AUTHENTICATION_ERROR").await;
        assert_eq!(closed.json["message"], "logged out");
    }
    other.expect_silence(SILENCE).await;
    publish_api_until_received(&a, "frank", &mut other).await;
    wait_until(DEADLINE, "erin's leases to be given back", || async {
        connections(&a, "erin").await == 0
    })
    .await;
    assert_eq!(b.metric("ws_disconnect_api_users_total").await, Some(1.0));
    assert_eq!(b.metric("ws_disconnect_api_sockets_total").await, Some(2.0));
}

/// Presence and disconnect take the publish API key (401 with the error JSON without it or with
/// a wrong one), name at most 1,000 users (400 beyond), and are 404 when no key is configured.
#[actix_web::test]
async fn the_apis_take_the_key_and_bound_the_users() {
    let redis = RedisServer::start().await;
    let server = Server::start_in_process(TestSettings::with_redis(&redis)).await;
    for headers in [&[][..], &[("X-API-Key", "wrong")][..]] {
        let reply = server
            .get_with("/api/v1/presence?user_ids=a", headers)
            .await;
        reply.assert_error(401, "AUTHENTICATION_ERROR");
        let reply = server
            .post("/api/v1/disconnect", headers, r#"{"user_ids":["a"]}"#)
            .await;
        reply.assert_error(401, "AUTHENTICATION_ERROR");
    }
    let authorization = format!("Bearer {API_KEY}");
    let bearer = [("Authorization", authorization.as_str())];
    let reply = server
        .get_with("/api/v1/presence?user_ids=a", &bearer)
        .await;
    assert_eq!(reply.status, 200, "{}", reply.text());

    let many: Vec<String> = (0..1001).map(|i| format!("u{i}")).collect();
    let reply = server
        .get_with(
            &format!("/api/v1/presence?user_ids={}", many.join(",")),
            &key(),
        )
        .await;
    reply.assert_error(400, "VALIDATION_ERROR");
    let reply = disconnect(&server, &json!({ "user_ids": many })).await;
    reply.assert_error(400, "VALIDATION_ERROR");
    let reply = server.get_with("/api/v1/presence", &key()).await;
    reply.assert_error(400, "VALIDATION_ERROR");

    let keyless = TestSettings::with_redis(&redis).set("api.publish_api_key", "");
    let keyless = Server::start_in_process(keyless).await;
    let reply = keyless
        .get_with("/api/v1/presence?user_ids=a", &key())
        .await;
    reply.assert_error(404, "NOT_FOUND");
    let reply = disconnect(&keyless, &json!({"user_ids": ["a"]})).await;
    reply.assert_error(404, "NOT_FOUND");
}

/// Without Redis, presence counts this node's sockets and disconnect closes them (4003).
#[actix_web::test]
async fn without_redis_presence_and_disconnect_are_local() {
    let server = Server::start_in_process(TestSettings::new()).await;
    let mut socket = server.connect(&token("gina")).await;
    publish_api_until_received(&server, "gina", &mut socket).await;
    let answer = presence(&server, "user_ids=gina,nobody").await;
    assert_eq!(answer["gina"], json!({"online": true, "connections": 1}));
    assert_eq!(answer["nobody"], json!({"online": false, "connections": 0}));
    let health = server.get("/healthz").await.json();
    assert!(health.get("leases").is_none(), "{health}");

    let reply = disconnect(&server, &json!({"user_ids": ["gina"]})).await;
    assert_eq!(reply.json(), json!({"disconnected": 1}));
    let closed = socket.expect_close_with(4003, "AUTHENTICATION_ERROR").await;
    assert_eq!(closed.json["message"], "disconnected");
}
