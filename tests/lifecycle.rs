//! End-to-end tests of a session's life beyond plain relaying: graceful drain on SIGTERM, a Redis
//! outage mid-session, idle timeout, token expiry, oversized and binary client frames, origin
//! checks and slow consumers. Real `redis-server`, real sockets; the server runs in-process except
//! where a signal and the exit code are the subject (the real binary).

mod common;

use std::time::Duration;

use common::*;
use serde_json::Value;
use tokio_tungstenite::tungstenite::{self, Message};

/// SIGTERM drains: readiness turns 503, new upgrades get HTTP 503, every open socket is closed
/// with 1012 SERVICE_UNAVAILABLE, and the process exits 0 once they are gone.
#[actix_web::test]
async fn sigterm_drains_with_1012_and_exits_0() {
    let mut server = Server::start(TestSettings::new().set("shutdown.drain_timeout_s", 3)).await;
    let users = ["drain-1", "drain-2", "drain-3"];
    let mut clients = Vec::new();
    for user in users {
        let mut client = server.connect(&token(user)).await;
        publish_api_until_received(&server, user, &mut client).await;
        clients.push(client);
    }

    server.sigterm();
    let ready = server.wait_readyz(503, DEADLINE).await;
    ready.assert_error(503, "SERVICE_UNAVAILABLE");
    match WsClient::try_connect(&server.ws_url(&token("late")), None, None).await {
        Err(tungstenite::Error::Http(response)) => assert_eq!(response.status().as_u16(), 503),
        Err(other) => panic!("upgrade while draining: expected HTTP 503, got {other}"),
        Ok(_) => panic!("upgrade while draining was accepted"),
    }

    for client in &mut clients {
        client.expect_close_with(1012, "SERVICE_UNAVAILABLE").await;
    }
    let status = server.wait_exit(Duration::from_secs(10)).await;
    assert!(status.success(), "drained server exited with {status}");
}

/// A second SIGTERM during a long drain ends the process at once.
#[actix_web::test]
async fn second_signal_exits_at_once() {
    let mut server = Server::start(TestSettings::new().set("shutdown.drain_timeout_s", 60)).await;
    let mut client = server.connect(&token("stays")).await;
    publish_api_until_received(&server, "stays", &mut client).await;
    server.sigterm();
    server.wait_readyz(503, DEADLINE).await;
    server.sigterm();
    server.wait_exit(DEADLINE).await;
}

/// Shutdown as a value: triggering an in-process server's shutdown drains it as SIGTERM drains
/// the binary (readiness 503, open sockets closed 1012) and `run` returns once they are gone.
#[actix_web::test]
async fn shutdown_trigger_drains_an_in_process_server() {
    let settings = TestSettings::new().set("shutdown.drain_timeout_s", 3);
    let mut server = Server::start_in_process(settings).await;
    let mut client = server.connect(&token("drain-value")).await;
    publish_api_until_received(&server, "drain-value", &mut client).await;

    server.trigger_shutdown();
    server.wait_readyz(503, DEADLINE).await;
    client.expect_close_with(1012, "SERVICE_UNAVAILABLE").await;
    server.wait_stopped(Duration::from_secs(10)).await;
}

/// A second trigger during a long drain ends an in-process server at once.
#[actix_web::test]
async fn second_shutdown_trigger_stops_at_once() {
    let settings = TestSettings::new().set("shutdown.drain_timeout_s", 60);
    let mut server = Server::start_in_process(settings).await;
    let mut client = server.connect(&token("stays")).await;
    publish_api_until_received(&server, "stays", &mut client).await;
    server.trigger_shutdown();
    server.wait_readyz(503, DEADLINE).await;
    server.trigger_shutdown();
    server.wait_stopped(DEADLINE).await;
}

/// Redis going away mid-session: readiness turns 503 but sockets stay open; when Redis is back
/// the server re-subscribes, turns ready, and the same socket receives again.
#[actix_web::test]
async fn redis_outage_keeps_sockets_and_resubscribes() {
    let mut redis = RedisServer::start().await;
    let server = Server::start_in_process(TestSettings::with_redis(&redis)).await;
    server.wait_readyz(200, STARTUP_DEADLINE).await;
    let mut oscar = server.connect(&token("oscar")).await;
    redis.wait_subscribed("oscar", 1).await;
    redis.publish_to_user("oscar", b"before").await;
    assert_eq!(oscar.recv_text(DEADLINE).await, "before");

    redis.kill();
    server
        .wait_readyz(503, DEADLINE)
        .await
        .assert_error(503, "SERVICE_UNAVAILABLE");
    assert_eq!(
        server.get("/healthz").await.status,
        200,
        "liveness must stay 200"
    );

    redis.restart().await;
    server.wait_readyz(200, STARTUP_DEADLINE).await;
    redis.wait_subscribed("oscar", 1).await;
    assert_eq!(redis.publish_to_user("oscar", b"after").await, 1);
    assert_eq!(oscar.recv_text(DEADLINE).await, "after");

    let mut olga = server.connect(&token("olga")).await;
    redis.wait_subscribed("olga", 1).await;
    redis.publish_to_user("olga", b"new socket").await;
    assert_eq!(olga.recv_text(DEADLINE).await, "new socket");
}

/// A client that sends nothing is closed 4008 TIMEOUT after limits.idle_timeout_s.
#[actix_web::test]
async fn idle_socket_is_closed_4008() {
    let server = Server::start_in_process(
        TestSettings::new()
            .set("limits.idle_timeout_s", 1)
            .set("limits.heartbeat_interval_s", 30)
            .set("limits.heartbeat_timeout_s", 10),
    )
    .await;
    let mut quiet = server.connect(&token("quiet")).await;
    quiet.expect_close_with(4008, "TIMEOUT").await;
}

/// With auth.close_on_expiry a session is closed 4001 AUTHENTICATION_ERROR when its token expires.
#[actix_web::test]
async fn token_expiry_closes_4001() {
    let server = Server::start_in_process(
        TestSettings::new()
            .set("auth.close_on_expiry", true)
            .set("auth.leeway_s", 0),
    )
    .await;
    let mut short = server
        .connect(&token_expiring("short-lived", now() + 2))
        .await;
    short.expect_close_with(4001, "AUTHENTICATION_ERROR").await;
}

/// A client text frame within the limit is ignored; one over server.max_frame_bytes closes the
/// socket with 1009 VALIDATION_ERROR; a binary client frame is refused with VALIDATION_ERROR.
#[actix_web::test]
async fn oversized_and_binary_client_frames_are_refused() {
    let server =
        Server::start_in_process(TestSettings::new().set("server.max_frame_bytes", 1024)).await;
    let mut client = server.connect(&token("talker")).await;
    publish_api_until_received(&server, "talker", &mut client).await;
    client.send_text(&"x".repeat(512)).await;
    server
        .publish_api(&["talker"], Value::String("still open".into()))
        .await;
    assert_eq!(client.recv_text(DEADLINE).await, "still open");
    client.send_text(&"x".repeat(4096)).await;
    client.expect_close_with(1009, "VALIDATION_ERROR").await;

    let mut binary = server.connect(&token("binary")).await;
    publish_api_until_received(&server, "binary", &mut binary).await;
    binary
        .send(Message::binary(vec![1u8, 2, 3]))
        .await
        .expect("send binary frame");
    let closed = binary.expect_close(DEADLINE).await;
    assert_ne!(closed.code, 1000, "{}", closed.reason);
    assert_eq!(
        closed.json["error_code"], "VALIDATION_ERROR",
        "{}",
        closed.reason
    );
}

/// With server.allowed_origins set, a browser upgrade from another origin is closed 1008; the
/// allowed origin and non-browser clients (no Origin) are accepted.
#[actix_web::test]
async fn foreign_origin_is_refused_1008() {
    let server = Server::start_in_process(
        TestSettings::new().set("server.allowed_origins", ["https://app.example"]),
    )
    .await;
    let url = server.ws_url(&token("olive"));
    let mut evil = WsClient::try_connect_with_headers(&url, &[("Origin", "https://evil.example")])
        .await
        .expect("upgrade accepted, then closed");
    evil.expect_close_with(1008, "AUTHENTICATION_ERROR").await;

    let mut good = WsClient::try_connect_with_headers(&url, &[("Origin", "https://app.example")])
        .await
        .expect("allowed origin");
    let mut tool = server.connect(&token("olive")).await;
    publish_api_until_all_received(&server, "olive", &mut [&mut good, &mut tool]).await;
    server
        .publish_api(&["olive"], Value::String("both".into()))
        .await;
    assert_eq!(good.recv_text(DEADLINE).await, "both");
    assert_eq!(tool.recv_text(DEADLINE).await, "both");
}

/// A client that stops reading while messages keep coming is cut off: its queue is dropped, the
/// drop is counted, other users are not affected, and when it reads again it finds what was
/// already in flight followed by a 4009 RATE_LIMIT close.
#[actix_web::test]
async fn slow_consumer_is_cut_off_and_counted() {
    const MESSAGES: usize = 400;
    let server = Server::start_in_process(
        TestSettings::new()
            .set("limits.send_queue_max", 8)
            .set("server.workers", 1),
    )
    .await;
    let mut slow = server.connect(&token("slow")).await;
    let mut fast = server.connect(&token("fast")).await;
    publish_api_until_received(&server, "slow", &mut slow).await;
    publish_api_until_received(&server, "fast", &mut fast).await;

    // 400 × 64 KB ≈ 26 MB: more than the kernel's socket buffers on both sides can hold.
    let blob = Value::String("z".repeat(64 * 1024));
    for _ in 0..MESSAGES {
        server.publish_api(&["slow"], blob.clone()).await;
    }
    wait_until(DEADLINE, "a slow-consumer close in /metrics", || async {
        server
            .metric(r#"ws_connections_closed_total{code="4009"}"#)
            .await
            .is_some_and(|n| n >= 1.0)
    })
    .await;
    let dropped = server
        .metric(r#"ws_messages_dropped_total{reason="slow_consumer"}"#)
        .await;
    assert!(
        dropped.is_some_and(|n| n >= 1.0),
        "drop not counted: {dropped:?}"
    );

    server
        .publish_api(&["fast"], Value::String("unaffected".into()))
        .await;
    assert_eq!(fast.recv_text(DEADLINE).await, "unaffected");

    let mut received = 0;
    loop {
        match slow.next_frame(DEADLINE).await {
            Some(Frame::Text(_)) => received += 1,
            Some(Frame::Close(Some((code, reason)))) => {
                assert_eq!(code, 4009, "{reason}");
                assert!(reason.contains("RATE_LIMIT"), "{reason}");
                break;
            }
            other => panic!("slow consumer: unexpected {other:?} after {received} messages"),
        }
    }
    assert!(
        received < MESSAGES,
        "every message reached the stuck client"
    );
}
