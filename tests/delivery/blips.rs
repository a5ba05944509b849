//! Redis blips under durable publishing: the pub/sub link killed twice (every live v2 socket
//! catches up from the history, nothing lost, nothing twice, no socket closed), and Redis
//! restarted empty (a `reset` / `recovered:false`, never a wrong `true`).

use std::time::Duration;

use tokio::task::JoinHandle;

use super::*;

/// Publishes `count` messages to `user` with FCALL, about `per_second`, from its own
/// connection; answers the last offset.
fn publisher(
    redis: &RedisServer,
    user: &'static str,
    count: u64,
    per_second: u64,
) -> JoinHandle<u64> {
    let url = redis.url();
    tokio::spawn(async move {
        let client = redis::Client::open(url).expect("redis url");
        let mut conn = client
            .get_multiplexed_async_connection()
            .await
            .expect("publisher connection");
        let pause = Duration::from_micros(1_000_000 / per_second);
        let mut last = 0;
        for n in 0..count {
            last = fcall_publish(&mut conn, user, n).await;
            tokio::time::sleep(pause).await;
        }
        last
    })
}

async fn kill_pubsub_clients(redis: &RedisServer) -> u64 {
    redis::cmd("CLIENT")
        .arg("KILL")
        .arg("TYPE")
        .arg("pubsub")
        .query_async(&mut redis.conn().await)
        .await
        .expect("CLIENT KILL TYPE pubsub")
}

/// `CLIENT KILL TYPE pubsub` twice while messages are published durably: the v2 socket gets
/// every offset exactly once, in order, and is never closed; the catch-ups are counted.
#[actix_web::test]
async fn killing_the_pubsub_link_twice_loses_nothing() {
    let redis = RedisServer::start().await;
    let server = Server::start_in_process(TestSettings::with_redis(&redis)).await;
    server.wait_readyz(200, STARTUP_DEADLINE).await;
    let mut client = connect_v2(&server, "blip", None).await;
    let (_, start, _) = welcome(&mut client).await;
    redis.wait_subscribed("blip", 1).await;
    let publishing = publisher(&redis, "blip", 600, 300);
    for _ in 0..2 {
        tokio::time::sleep(Duration::from_millis(600)).await;
        assert!(
            kill_pubsub_clients(&redis).await >= 1,
            "the server's link was killed"
        );
        server.wait_readyz(200, STARTUP_DEADLINE).await;
    }
    let last = publishing.await.expect("publisher");
    let (seen, resets) = read_until(&mut client, last).await;
    assert_contiguous(&seen, start + 1, last);
    assert!(
        resets.is_empty(),
        "nothing was lost from the history: {resets:?}"
    );
    let reconnects = server.metric("ws_broker_reconnects_total").await;
    assert!(reconnects >= Some(2.0), "reconnects: {reconnects:?}");
    let catch_ups = server
        .metric(r#"ws_catch_ups_total{cause="reconnect"}"#)
        .await;
    assert!(catch_ups >= Some(1.0), "catch-ups: {catch_ups:?}");
}

/// Redis restarted empty: the live v2 socket is told with a `reset` (a new epoch), and a client
/// resuming from a position of the lost history is welcomed with `recovered:false`.
#[actix_web::test]
async fn redis_restarted_empty_resets_and_never_recovers() {
    let mut redis = RedisServer::start().await;
    let server = Server::start_in_process(TestSettings::with_redis(&redis)).await;
    server.wait_readyz(200, STARTUP_DEADLINE).await;
    let mut live = connect_v2(&server, "amy", None).await;
    let (old_epoch, _, _) = welcome(&mut live).await;
    for n in 1..=3 {
        publish_durable(&server, "amy", json!({ "n": n })).await;
    }
    read_until(&mut live, 3).await;
    redis.restart().await;
    server.wait_readyz(200, STARTUP_DEADLINE).await;
    let reset = recv_json(&mut live).await;
    assert_eq!(reset["type"], "reset", "{reset}");
    let new_epoch = reset["epoch"].as_str().expect("epoch").to_owned();
    assert_ne!(new_epoch, old_epoch);
    let mut resumed = connect_v2(&server, "amy", Some(&format!("{old_epoch}:3"))).await;
    let (epoch, _, recovered) = welcome(&mut resumed).await;
    assert_eq!(
        (epoch.as_str(), recovered),
        (new_epoch.as_str(), Some(false))
    );
    let (_, offset) = publish_durable(&server, "amy", json!("after")).await;
    for client in [&mut live, &mut resumed] {
        let frame = recv_json(client).await;
        assert_eq!(
            (frame["epoch"].as_str(), frame["offset"].as_u64()),
            (Some(new_epoch.as_str()), Some(offset))
        );
    }
}
