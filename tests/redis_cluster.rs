//! Redis Cluster end to end (DESIGN.md, "Cluster" → Redis Cluster): a real six-node cluster
//! (three primaries, three replicas) on loopback, the real server with `redis.cluster_nodes`,
//! real sockets. Delivery through sharded pub/sub to users on every primary (user ids with
//! braces included), durable publishing and a v2 resume, and delivery on the same socket after a
//! manual failover, a primary's crash and a slot migration. Every wait has a deadline.

mod common;

use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use common::*;
use serde_json::{json, Value};
use ws_actors::broker::keys::slot;

/// How long delivery may take to resume after the cluster has finished a change.
const RESUME_DEADLINE: Duration = Duration::from_secs(15);

/// A server on `cluster` (history on unless `history` is false), ready.
async fn server_on(cluster: &RedisCluster, history: bool) -> Server {
    let mut settings = TestSettings::new().set("redis.cluster_nodes", cluster.urls());
    if !history {
        settings = settings.set("history.size", 0);
    }
    let server = Server::start_in_process(settings).await;
    server.wait_readyz(200, STARTUP_DEADLINE).await;
    server
}

/// The hash slot of `user`'s channel.
fn slot_of(user: &str) -> u16 {
    slot(channel(user).as_bytes())
}

/// A user id whose channel is served by the primary on `port` (`u-<prefix>-<n>`).
async fn user_on(cluster: &RedisCluster, port: u16, prefix: &str) -> String {
    for n in 0..10_000 {
        let user = format!("u-{prefix}-{n}");
        if cluster.primary_of(slot_of(&user)).await == port {
            return user;
        }
    }
    panic!("no user id hashes to the primary on {port}");
}

/// Whether a frame carries `text` (a legacy frame is the payload itself, a v2 frame a JSON
/// message whose `data` is it).
fn carries(frame: &str, text: &str) -> bool {
    frame == text
        || serde_json::from_str::<Value>(frame).is_ok_and(|v| v["data"].as_str() == Some(text))
}

/// Probe rounds so far: each round's probes are told apart from an earlier round's.
static ROUNDS: AtomicU32 = AtomicU32::new(0);

/// SPUBLISHes probes on `user`'s channel until `client` receives one (errors, e.g. during a
/// failover, are retried), then a marker, read past any late probe (of this round or an earlier
/// one). Answers how long until the first probe arrived. Panics after `deadline`.
async fn spublish_until_received(
    cluster: &RedisCluster,
    user: &str,
    client: &mut WsClient,
    deadline: Duration,
) -> Duration {
    let round = ROUNDS.fetch_add(1, Ordering::Relaxed);
    let prefix = format!("probe-{user}-r{round}-");
    let start = Instant::now();
    let mut attempt = 0u32;
    'probing: loop {
        assert!(
            start.elapsed() < deadline,
            "SPUBLISH probes did not reach {user} within {deadline:?}"
        );
        attempt += 1;
        let _ = cluster
            .spublish(&channel(user), format!("{prefix}{attempt}").as_bytes())
            .await;
        while let Some(frame) = client.next_frame(Duration::from_millis(150)).await {
            match frame {
                Frame::Text(text) if text.contains(&prefix) => break 'probing,
                Frame::Text(text) if text.contains("probe-") => {}
                other => panic!("while probing {user}: got {other:?}"),
            }
        }
    }
    let took = start.elapsed();
    let marker = format!("{prefix}end");
    cluster
        .spublish(&channel(user), marker.as_bytes())
        .await
        .unwrap_or_else(|e| panic!("SPUBLISH marker: {e}"));
    loop {
        let text = client.recv_text(DEADLINE).await;
        if carries(&text, &marker) {
            return took;
        }
        assert!(
            text.contains("probe-"),
            "unexpected {text:?} while probing {user}"
        );
    }
}

/// The next frame that is not a probe.
async fn recv_skipping_probes(client: &mut WsClient, deadline: Duration) -> String {
    loop {
        let text = client.recv_text(deadline).await;
        if !text.contains("probe-") {
            return text;
        }
    }
}

/// SPUBLISHes `payload` on `user`'s channel and asserts that `client` gets exactly it.
async fn spublish_and_receive(
    cluster: &RedisCluster,
    user: &str,
    client: &mut WsClient,
    payload: &str,
) {
    let receivers = cluster
        .spublish(&channel(user), payload.as_bytes())
        .await
        .unwrap_or_else(|e| panic!("SPUBLISH to {user}: {e}"));
    assert!(receivers >= 1, "SPUBLISH to {user} reached no subscriber");
    let got = recv_skipping_probes(client, DEADLINE).await;
    assert!(
        carries(&got, payload),
        "{user} got {got:?}, expected {payload:?}"
    );
}

/// `/healthz` → `broker.cluster.nodes`.
async fn cluster_nodes(server: &Server) -> Vec<Value> {
    let health = server.get("/healthz").await.json();
    health["broker"]["cluster"]["nodes"]
        .as_array()
        .unwrap_or_else(|| panic!("no broker.cluster.nodes in /healthz: {health}"))
        .clone()
}

/// A counter that may not be exported yet reads 0.
async fn metric_or_zero(server: &Server, series: &str) -> f64 {
    server.metric(series).await.unwrap_or(0.0)
}

/// Users whose channels hash to each of the three primaries, and user ids with braces (`{x}y`
/// hashes by `x`; `a}b` has a lone `}`), all get what is SPUBLISHed on their channel, byte for
/// byte, and the publish API (history off: SPUBLISH) reaches all of them in one call.
/// `/healthz` shows each primary's link up with its slots.
#[actix_web::test]
async fn relays_to_users_on_every_primary() {
    let cluster = RedisCluster::start().await;
    let server = server_on(&cluster, false).await;

    let nodes = wait_for(DEADLINE, "every primary's link up in /healthz", || async {
        let health = server.get("/healthz").await.json();
        (health["broker"]["cluster"]["degraded"] == false).then_some(health)
    })
    .await["broker"]["cluster"]["nodes"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    assert_eq!(nodes.len(), 3, "three primaries: {nodes:?}");
    let slots: u64 = nodes.iter().map(|n| n["slots"].as_u64().unwrap_or(0)).sum();
    assert_eq!(slots, 16384, "every slot served: {nodes:?}");
    assert!(nodes.iter().all(|n| n["state"] == "up"), "{nodes:?}");

    let mut users = Vec::new();
    for (i, port) in cluster.primaries().await.into_iter().enumerate() {
        users.push(user_on(&cluster, port, &i.to_string()).await);
    }
    users.push("{x}y".to_owned());
    users.push("a}b".to_owned());
    let owners: std::collections::BTreeSet<u16> = {
        let mut owners = std::collections::BTreeSet::new();
        for user in &users[..3] {
            owners.insert(cluster.primary_of(slot_of(user)).await);
        }
        owners
    };
    assert_eq!(owners.len(), 3, "one user per primary");

    let mut clients = Vec::new();
    for user in &users {
        let mut client = server.connect(&token(user)).await;
        spublish_until_received(&cluster, user, &mut client, DEADLINE).await;
        clients.push(client);
    }
    for (user, client) in users.iter().zip(&mut clients) {
        let payload = json!({ "to": user, "text": "Café 🎉" }).to_string();
        spublish_and_receive(&cluster, user, client, &payload).await;
    }

    let ids: Vec<&str> = users.iter().map(String::as_str).collect();
    server.publish_api(&ids, json!({ "via": "api" })).await;
    for (user, client) in users.iter().zip(&mut clients) {
        let got = client.recv_text(DEADLINE).await;
        assert_eq!(got, r#"{"via":"api"}"#, "{user}");
    }
    let nodes = cluster_nodes(&server).await;
    let channels: u64 = nodes
        .iter()
        .map(|n| n["channels"].as_u64().unwrap_or(0))
        .sum();
    assert_eq!(
        channels,
        users.len() as u64,
        "one channel per user (history off): {nodes:?}"
    );
}

/// With history on, the publish API stores and publishes in one step on the user's primary
/// (the history library is loaded on every primary and publishes with SPUBLISH): a v2 socket
/// gets positioned messages, and a resume with `since` replays what it missed
/// (`recovered:true`). The documented `FCALL ws_publish` works through a cluster client too.
#[actix_web::test]
async fn durable_publish_and_resume_across_primaries() {
    let cluster = RedisCluster::start().await;
    let server = server_on(&cluster, true).await;
    let mut users = Vec::new();
    for (i, port) in cluster.primaries().await.into_iter().enumerate() {
        users.push(user_on(&cluster, port, &format!("d{i}")).await);
    }
    users.push("{x}y".to_owned());

    for user in &users {
        let url = format!("{}&v=2", server.ws_url(&token(user)));
        let mut client = WsClient::connect(&url).await;
        let welcome: Value = serde_json::from_str(&client.recv_text(DEADLINE).await).expect("json");
        assert_eq!(welcome["type"], "welcome", "{welcome}");
        spublish_until_received(&cluster, user, &mut client, DEADLINE).await;

        let reply = server
            .publish_api(&[user.as_str()], json!({ "n": 1 }))
            .await;
        let position = reply.json()["positions"][user.as_str()].clone();
        let epoch = position["epoch"].as_str().expect("epoch").to_owned();
        let first = position["offset"].as_u64().expect("offset");
        let frame: Value = serde_json::from_str(&client.recv_text(DEADLINE).await).expect("json");
        assert_eq!(
            (
                frame["type"].as_str(),
                frame["offset"].as_u64(),
                &frame["data"]
            ),
            (Some("message"), Some(first), &json!({ "n": 1 })),
            "{user}"
        );
        drop(client);

        // Missed while away: one through the API, one through FCALL on a cluster client.
        server
            .publish_api(&[user.as_str()], json!({ "n": 2 }))
            .await;
        let mut connection = cluster.client().await;
        let (fcall_epoch, third): (String, u64) = redis::cmd("FCALL")
            .arg("ws_publish")
            .arg(1)
            .arg(channel(user))
            .arg(json!({ "n": 3 }).to_string())
            .query_async(&mut connection)
            .await
            .unwrap_or_else(|e| panic!("FCALL ws_publish for {user}: {e}"));
        assert_eq!((fcall_epoch.as_str(), third), (epoch.as_str(), first + 2));

        let url = format!("{}&since={epoch}:{first}", server.ws_url(&token(user)));
        let mut resumed = WsClient::connect(&url).await;
        let welcome: Value =
            serde_json::from_str(&resumed.recv_text(DEADLINE).await).expect("json");
        assert_eq!(
            (welcome["type"].as_str(), welcome["recovered"].as_bool()),
            (Some("welcome"), Some(true)),
            "{user}: {welcome}"
        );
        for n in [2u64, 3] {
            let frame: Value =
                serde_json::from_str(&resumed.recv_text(DEADLINE).await).expect("json");
            assert_eq!(
                frame["offset"].as_u64(),
                Some(first + n - 1),
                "{user}: {frame}"
            );
            assert_eq!(frame["data"], json!({ "n": n }), "{user}");
        }
    }
}

/// `CLUSTER FAILOVER` on a replica of the primary serving a user: the demoted primary drops the
/// server's subscriptions, the server re-subscribes on the new primary, and the same sockets (a
/// legacy one and a v2 one) receive again within seconds, never closed; durable messages
/// published around the failover reach the v2 socket in order, without a duplicate.
#[actix_web::test]
async fn a_manual_failover_keeps_delivering_on_the_same_sockets() {
    let cluster = RedisCluster::start().await;
    let server = server_on(&cluster, true).await;
    let primary = cluster.primaries().await[0];
    let user = user_on(&cluster, primary, "f").await;
    let mut legacy = server.connect(&token(&user)).await;
    spublish_until_received(&cluster, &user, &mut legacy, DEADLINE).await;
    let url = format!("{}&v=2", server.ws_url(&token(&user)));
    let mut v2 = WsClient::connect(&url).await;
    let _welcome = v2.recv_text(DEADLINE).await;
    // The legacy socket sees these probes too: it skips them when it reads next.
    spublish_until_received(&cluster, &user, &mut v2, DEADLINE).await;

    let replica = cluster.replica_of(primary).await;
    cluster.failover(replica).await;
    assert_eq!(cluster.primary_of(slot_of(&user)).await, replica);

    // Durable messages: retried while the publish API answers 503 during the switch.
    let mut offsets = Vec::new();
    for n in 0..5 {
        let position = publish_durable_retrying(&server, &user, json!({ "after": n })).await;
        offsets.push(position);
    }
    let mut got = Vec::new();
    let start = Instant::now();
    while got.len() < offsets.len() {
        assert!(
            start.elapsed() < RESUME_DEADLINE,
            "v2 got {got:?} of {offsets:?}"
        );
        let frame: Value =
            serde_json::from_str(&v2.recv_text(RESUME_DEADLINE).await).expect("json");
        assert_ne!(frame["type"], "reset", "no history was lost: {frame}");
        if let Some(offset) = frame["offset"].as_u64() {
            got.push(offset);
        }
    }
    assert_eq!(got, offsets, "in order, no duplicate");
    // The legacy socket gets every message as its payload: the same five, in order.
    for n in 0..5 {
        let text = recv_skipping_probes(&mut legacy, RESUME_DEADLINE).await;
        assert_eq!(text, json!({ "after": n }).to_string());
    }

    let took = spublish_until_received(&cluster, &user, &mut legacy, RESUME_DEADLINE).await;
    eprintln!("manual failover: legacy socket receiving again {took:?} after the probes started");
    let payload = r#"{"after":"failover"}"#;
    spublish_and_receive(&cluster, &user, &mut legacy, payload).await;
    let frame = recv_skipping_probes(&mut v2, DEADLINE).await;
    assert_eq!(
        serde_json::from_str::<Value>(&frame).expect("json")["data"],
        json!({ "after": "failover" })
    );
    assert!(
        metric_or_zero(
            &server,
            r#"ws_cluster_resubscriptions_total{cause="failover"}"#
        )
        .await
            >= 1.0,
        "the re-subscription is counted as a failover"
    );
    server.wait_readyz(200, DEADLINE).await;
}

/// Publishes durably through the API, retrying while it answers 503 (the primary is switching);
/// answers the offset.
async fn publish_durable_retrying(server: &Server, user: &str, data: Value) -> u64 {
    let body = json!({ "user_ids": [user], "data": data }).to_string();
    let start = Instant::now();
    loop {
        let reply = server
            .post(
                "/api/v1/publish",
                &[("X-API-Key", API_KEY), ("Content-Type", "application/json")],
                &body,
            )
            .await;
        if reply.status == 200 {
            return reply.json()["positions"][user]["offset"]
                .as_u64()
                .expect("offset");
        }
        assert_eq!(reply.status, 503, "publish API: {}", reply.text());
        assert!(
            start.elapsed() < RESUME_DEADLINE,
            "publish API kept failing: {}",
            reply.text()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// `kill -9` of the primary serving a user: `/healthz` shows that node down and the cluster
/// degraded at once (the broker stays up and the node ready: other shards' users are served);
/// once its replica has taken over, the same socket receives again, without being closed, and
/// the dead node is gone from the report.
#[actix_web::test]
async fn a_primary_crash_fails_over_and_delivery_resumes() {
    let mut cluster = RedisCluster::start().await;
    let server = server_on(&cluster, true).await;
    let primary = cluster.primaries().await[1];
    let user = user_on(&cluster, primary, "k").await;
    let mut client = server.connect(&token(&user)).await;
    spublish_until_received(&cluster, &user, &mut client, DEADLINE).await;

    cluster.kill(primary);
    let killed = Instant::now();
    let dead = format!("127.0.0.1:{primary}");
    let health = wait_for(
        DEADLINE,
        "/healthz to show the dead primary down",
        || async {
            let health = server.get("/healthz").await.json();
            let cluster = &health["broker"]["cluster"];
            let down = cluster["nodes"].as_array().is_some_and(|nodes| {
                nodes
                    .iter()
                    .any(|n| n["address"] == dead.as_str() && n["state"] == "down")
            });
            (down && cluster["degraded"] == true).then_some(health)
        },
    )
    .await;
    assert_eq!(
        health["broker"]["state"], "up",
        "a partial outage keeps the broker up: {health}"
    );
    assert_eq!(
        server.get("/readyz").await.status,
        200,
        "and the node ready"
    );
    let owner = cluster.wait_taken_over(slot_of(&user), primary).await;
    assert_ne!(owner, primary);
    let took_over = killed.elapsed();
    let took = spublish_until_received(&cluster, &user, &mut client, RESUME_DEADLINE).await;
    eprintln!(
        "primary crash: replica took over after {took_over:?}, delivery resumed {took:?} later"
    );
    spublish_and_receive(&cluster, &user, &mut client, r#"{"after":"crash"}"#).await;

    let nodes = wait_for(RESUME_DEADLINE, "/healthz no longer degraded", || async {
        let health = server.get("/healthz").await.json();
        (health["broker"]["cluster"]["degraded"] == false).then_some(health)
    })
    .await["broker"]["cluster"]["nodes"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    assert!(
        nodes.iter().all(|n| n["address"] != dead.as_str()),
        "the dead primary is gone from the broker's nodes once replaced: {nodes:?}"
    );
    let resubscribed = metric_or_zero(
        &server,
        r#"ws_cluster_resubscriptions_total{cause="failover"}"#,
    )
    .await
        + metric_or_zero(
            &server,
            r#"ws_cluster_resubscriptions_total{cause="reconnect"}"#,
        )
        .await;
    assert!(resubscribed >= 1.0, "the re-subscription is counted");
}

/// The slot of a user's channel migrates to another primary (IMPORTING/MIGRATING, MIGRATE of its
/// history keys, SETSLOT NODE): the old primary drops the subscription, the server subscribes on
/// the new one, the same socket keeps receiving, and the user's history moved with the slot.
#[actix_web::test]
async fn a_slot_migration_keeps_delivering_on_the_same_socket() {
    let cluster = RedisCluster::start().await;
    let server = server_on(&cluster, true).await;
    let primaries = cluster.primaries().await;
    let (from, to) = (primaries[2], primaries[0]);
    let user = user_on(&cluster, from, "m").await;
    let url = format!("{}&v=2", server.ws_url(&token(&user)));
    let mut client = WsClient::connect(&url).await;
    let _welcome = client.recv_text(DEADLINE).await;
    spublish_until_received(&cluster, &user, &mut client, DEADLINE).await;
    let before = server
        .publish_api(&[user.as_str()], json!({ "n": "before" }))
        .await;
    let offset = before.json()["positions"][user.as_str()]["offset"]
        .as_u64()
        .expect("offset");
    let frame: Value = serde_json::from_str(&client.recv_text(DEADLINE).await).expect("json");
    assert_eq!(frame["offset"].as_u64(), Some(offset));

    cluster.migrate_slot(slot_of(&user), from, to).await;
    assert_eq!(cluster.primary_of(slot_of(&user)).await, to);

    let took = spublish_until_received(&cluster, &user, &mut client, RESUME_DEADLINE).await;
    eprintln!("slot migration: delivery resumed {took:?} after the cluster agreed");
    let after = publish_durable_retrying(&server, &user, json!({ "n": "after" })).await;
    assert_eq!(
        after,
        offset + 1,
        "the history moved with the slot: offsets continue"
    );
    let frame: Value = serde_json::from_str(&client.recv_text(DEADLINE).await).expect("json");
    assert_eq!(frame["offset"].as_u64(), Some(after), "{frame}");
    assert!(
        metric_or_zero(
            &server,
            r#"ws_cluster_resubscriptions_total{cause="slot_moved"}"#
        )
        .await
            >= 1.0,
        "the re-subscription is counted as a slot move"
    );
    let nodes = cluster_nodes(&server).await;
    let target = format!("127.0.0.1:{to}");
    let on_target = nodes
        .iter()
        .find(|n| n["address"] == target.as_str())
        .and_then(|n| n["channels"].as_u64());
    assert!(
        on_target.is_some_and(|c| c >= 2),
        "subscribed on the new primary: {nodes:?}"
    );
}

/// Two replicas share the cluster: a publish API call on one reaches a socket on the other
/// (SPUBLISH, history off), and the console of each lists both, from the heartbeats they write
/// under the `{ws-console}` hash tag.
#[actix_web::test]
async fn two_replicas_share_the_cluster() {
    const ADMIN_KEY: &str = "console-admin-key-0123456789";
    let cluster = RedisCluster::start().await;
    let replica = || async {
        let settings = TestSettings::new()
            .set("redis.cluster_nodes", cluster.urls())
            .set("history.size", 0)
            .set("console.enabled", true)
            .set("console.admin_key", ADMIN_KEY);
        let server = Server::start_in_process(settings).await;
        server.wait_readyz(200, STARTUP_DEADLINE).await;
        server
    };
    let (a, b) = (replica().await, replica().await);
    let mut socket = a.connect(&token("{shared}user")).await;
    spublish_until_received(&cluster, "{shared}user", &mut socket, DEADLINE).await;
    b.publish_api(&["{shared}user"], json!({ "from": "b" }))
        .await;
    assert_eq!(
        recv_skipping_probes(&mut socket, DEADLINE).await,
        r#"{"from":"b"}"#
    );

    let auth = format!("Bearer {ADMIN_KEY}");
    wait_until(DEADLINE, "each console to list both replicas", || async {
        let mut both = true;
        for server in [&a, &b] {
            let reply = server
                .get_with("/api/v1/admin/nodes", &[("Authorization", &auth)])
                .await;
            assert_eq!(reply.status, 200, "{}", reply.text());
            both &= reply.json()["nodes"].as_array().map(Vec::len) == Some(2);
        }
        both
    })
    .await;
}

/// The server's link to a primary is cut (`CLIENT KILL TYPE pubsub` on that primary, as a
/// network blip would): the link comes back, the user's channels are subscribed again on the
/// same primary, the same socket receives, and the re-subscription counts as a reconnect.
#[actix_web::test]
async fn a_dropped_link_to_a_primary_is_restored_and_resubscribed() {
    let cluster = RedisCluster::start().await;
    let server = server_on(&cluster, true).await;
    let primary = cluster.primaries().await[0];
    let user = user_on(&cluster, primary, "c").await;
    let mut client = server.connect(&token(&user)).await;
    spublish_until_received(&cluster, &user, &mut client, DEADLINE).await;

    let killed = cluster.kill_pubsub_clients(primary).await;
    assert!(
        killed >= 1,
        "the server's pub/sub link to {primary} was cut"
    );
    wait_until(
        DEADLINE,
        "the re-subscription to count as a reconnect",
        || async {
            metric_or_zero(
                &server,
                r#"ws_cluster_resubscriptions_total{cause="reconnect"}"#,
            )
            .await
                >= 1.0
        },
    )
    .await;
    spublish_until_received(&cluster, &user, &mut client, DEADLINE).await;
    spublish_and_receive(&cluster, &user, &mut client, r#"{"after":"blip"}"#).await;
}

/// `GET /api/v1/presence?user_ids=…` on `server` with the API key; asserts 200.
async fn presence_of(server: &Server, users: &[&str]) -> Value {
    let path = format!("/api/v1/presence?user_ids={}", users.join(","));
    let reply = server.get_with(&path, &[("X-API-Key", API_KEY)]).await;
    assert_eq!(reply.status, 200, "presence: {}", reply.text());
    reply.json()
}

/// Two server processes on the cluster share the leases and the control channel, for two users
/// whose slots sit on different primaries: the quota (2) counts sockets on both replicas (a third
/// is refused 4000 on either), presence counts both from either, and a disconnect sent to one
/// replica closes the users' sockets on both with 4003 (the other replica hears it through
/// SPUBLISH on the sharded control channel).
#[actix_web::test]
async fn leases_presence_and_disconnect_span_replicas_on_the_cluster() {
    let cluster = RedisCluster::start().await;
    let settings = TestSettings::new()
        .set("redis.cluster_nodes", cluster.urls())
        .set("history.size", 0)
        .set("limits.max_connections_per_user", 2)
        .set("limits.quota_lease_s", 30);
    let a = Server::start(settings.clone()).await;
    let b = Server::start(settings).await;
    a.wait_readyz(200, STARTUP_DEADLINE).await;
    b.wait_readyz(200, STARTUP_DEADLINE).await;
    let primaries = cluster.primaries().await;
    let first = user_on(&cluster, primaries[0], "q").await;
    let second = user_on(&cluster, primaries[1], "q").await;
    let (first, second) = (first.as_str(), second.as_str());
    assert_ne!(
        cluster.primary_of(slot_of(first)).await,
        cluster.primary_of(slot_of(second)).await
    );
    wait_until(
        DEADLINE,
        "both control channels to be subscribed",
        || async {
            let mut both = true;
            for server in [&a, &b] {
                both &= server.get("/healthz").await.json()["control"]["subscribed"] == true;
            }
            both
        },
    )
    .await;

    let mut sockets = Vec::new();
    for user in [first, second] {
        let mut on_a = a.connect(&token(user)).await;
        let mut on_b = b.connect(&token(user)).await;
        publish_api_until_all_received(&a, user, &mut [&mut on_a, &mut on_b]).await;
        sockets.extend([on_a, on_b]);
    }
    for (server, user) in [(&a, first), (&b, first), (&a, second), (&b, second)] {
        let mut refused = server.connect(&token(user)).await;
        refused.expect_close_with(4000, "QUOTA_EXCEEDED").await;
    }
    let expected = json!({
        first: {"online": true, "connections": 2},
        second: {"online": true, "connections": 2},
        "nobody": {"online": false, "connections": 0},
    });
    for server in [&a, &b] {
        assert_eq!(
            presence_of(server, &[first, second, "nobody"]).await,
            expected
        );
    }

    let body = json!({"user_ids": [first, second], "reason": "account locked"});
    let headers = [("X-API-Key", API_KEY), ("Content-Type", "application/json")];
    let reply = a
        .post("/api/v1/disconnect", &headers, &body.to_string())
        .await;
    assert_eq!(reply.status, 200, "disconnect: {}", reply.text());
    assert_eq!(reply.json(), json!({"disconnected": 4}));
    for socket in &mut sockets {
        let closed = socket.expect_close_with(4003, "AUTHENTICATION_ERROR").await;
        assert_eq!(closed.json["message"], "account locked");
    }
    wait_until(
        DEADLINE,
        "the closed sockets' leases to be given back",
        || async {
            presence_of(&b, &[first, second]).await
                == json!({
                    first: {"online": false, "connections": 0},
                    second: {"online": false, "connections": 0},
                })
        },
    )
    .await;
}
