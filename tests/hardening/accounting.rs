//! Hardening regression tests: accounting (issue #11, defect 8). Every message the node accepts
//! for a socket is counted exactly once: `ws_messages_forwarded_total` when the kernel has taken
//! its whole frame, or `ws_messages_dropped_total` with the reason it was not.

use serde_json::Value;

use crate::common::*;

/// Messages published to the stuck reader: 200 × 64 KiB is far more than the socket buffers
/// on both sides can hold.
const MESSAGES: usize = 200;
/// The outbox bound of the test server.
const SEND_QUEUE_MAX: u64 = 8;

/// `ws_messages_dropped_total` for `reason` (a series never touched counts 0).
async fn dropped(server: &Server, reason: &str) -> f64 {
    let series = format!(r#"ws_messages_dropped_total{{reason="{reason}"}}"#);
    server.metric(&series).await.unwrap_or(0.0)
}

/// `ws_messages_forwarded_total` plus `ws_messages_dropped_total` over every reason.
async fn accounted(server: &Server) -> f64 {
    let forwarded = server
        .metric("ws_messages_forwarded_total")
        .await
        .unwrap_or(0.0);
    let mut total = forwarded;
    for reason in [
        "slow_consumer",
        "closed",
        "no_session",
        "overload",
        "shutdown",
    ] {
        total += dropped(server, reason).await;
    }
    total
}

/// A client that does not read is closed 4009 once its queue is full. Of the N messages
/// published to its user (the only user of the node), each is counted once: forwarded if its
/// frame reached the socket (and the client, reading after the close, finds exactly those
/// before the 4009), else dropped: `slow_consumer` for the one that overflowed the queue and
/// those still queued behind it, `no_session` for those published after the socket left.
#[actix_web::test]
async fn stuck_reader_messages_are_each_counted_once() {
    let server = Server::start_in_process(
        TestSettings::new()
            .set("limits.send_queue_max", SEND_QUEUE_MAX)
            .set("server.workers", 1),
    )
    .await;
    let mut stuck = WsClient::connect_with_recv_buffer(&server.ws_url(&token("stuck")), 4096).await;
    wait_until(DEADLINE, "the stuck reader to be admitted", || async {
        server
            .metric(r#"ws_connections_opened_total{outcome="accepted"}"#)
            .await
            == Some(1.0)
    })
    .await;

    let blob = Value::String("s".repeat(64 * 1024));
    for _ in 0..MESSAGES {
        server.publish_api(&["stuck"], blob.clone()).await;
    }
    wait_until(DEADLINE, "a slow-consumer close in /metrics", || async {
        server
            .metric(r#"ws_connections_closed_total{code="4009"}"#)
            .await
            == Some(1.0)
    })
    .await;

    let mut received = 0usize;
    loop {
        match stuck.next_frame(DEADLINE).await {
            Some(Frame::Text(_)) => received += 1,
            Some(Frame::Close(Some((4009, _)))) => break,
            other => panic!("stuck reader: unexpected {other:?} after {received} messages"),
        }
    }

    let expected = MESSAGES as f64;
    wait_until(
        DEADLINE,
        "every published message to be accounted for",
        || async { accounted(&server).await >= expected },
    )
    .await;
    assert_eq!(
        accounted(&server).await,
        expected,
        "a message counted twice"
    );
    let forwarded = server.metric("ws_messages_forwarded_total").await;
    assert_eq!(
        forwarded,
        Some(received as f64),
        "forwarded must count the messages written to the socket, which the client read"
    );
    let slow = dropped(&server, "slow_consumer").await;
    assert!(
        slow >= SEND_QUEUE_MAX as f64,
        "the overflowing message and the queue behind the 4009 are slow_consumer drops: {slow}"
    );
}
