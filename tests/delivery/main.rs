//! Delivery guarantees end to end (DESIGN.md, "Delivery guarantees"): durable publishing with
//! positions, protocol v2 (welcome, messages, resume with `since`, reset), legacy sockets
//! untouched, and no loss or duplicate across reconnects, Redis blips and a race with injected
//! delays. Real `redis-server`, real server, real sockets.

#[path = "../common/mod.rs"]
mod common;

mod blips;
mod protocol;
mod races;

use std::time::Duration;

use common::*;
use serde_json::{json, Value};

/// A v2 socket of `user`, resuming from `since` when given.
pub async fn connect_v2(server: &Server, user: &str, since: Option<&str>) -> WsClient {
    let mut url = format!("{}&v=2", server.ws_url(&token(user)));
    if let Some(since) = since {
        url.push_str("&since=");
        url.push_str(since);
    }
    WsClient::connect(&url).await
}

/// The next frame, which must be a JSON text frame.
pub async fn recv_json(client: &mut WsClient) -> Value {
    let text = client.recv_text(DEADLINE).await;
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"))
}

/// The welcome frame, checked for its shape; answers (epoch, offset, recovered).
pub async fn welcome(client: &mut WsClient) -> (String, u64, Option<bool>) {
    let frame = recv_json(client).await;
    assert_eq!(frame["type"], "welcome", "first frame: {frame}");
    let epoch = frame["epoch"].as_str().expect("epoch").to_owned();
    let offset = frame["offset"].as_u64().expect("offset");
    (epoch, offset, frame["recovered"].as_bool())
}

/// Publishes `data` durably to `user` through the API; answers its (epoch, offset).
pub async fn publish_durable(server: &Server, user: &str, data: Value) -> (String, u64) {
    let reply = server.publish_api(&[user], data).await;
    let position = &reply.json()["positions"][user];
    let epoch = position["epoch"].as_str().expect("a position epoch");
    (
        epoch.to_owned(),
        position["offset"].as_u64().expect("offset"),
    )
}

/// `FCALL ws_publish 1 ws:{user} <payload>`, the documented call for backends with a Redis
/// client; answers the offset.
pub async fn fcall_publish(
    conn: &mut redis::aio::MultiplexedConnection,
    user: &str,
    n: u64,
) -> u64 {
    let reply: (String, u64) = redis::cmd("FCALL")
        .arg("ws_publish")
        .arg(1)
        .arg(channel(user))
        .arg(json!({ "n": n }).to_string())
        .query_async(conn)
        .await
        .unwrap_or_else(|e| panic!("FCALL ws_publish: {e}"));
    reply.1
}

/// Reads v2 frames until a message at offset `last` arrived; answers every message offset in
/// order and every reset seen. Panics on a close or a silence longer than `DEADLINE`.
pub async fn read_until(client: &mut WsClient, last: u64) -> (Vec<u64>, Vec<Value>) {
    let (mut offsets, mut resets) = (Vec::new(), Vec::new());
    while offsets.last().is_none_or(|&o| o < last) {
        let frame = recv_json(client).await;
        match frame["type"].as_str() {
            Some("message") => offsets.push(frame["offset"].as_u64().expect("durable")),
            Some("reset") => resets.push(frame),
            _ => panic!("unexpected frame {frame}"),
        }
    }
    (offsets, resets)
}

/// Asserts `offsets` is exactly `from..=to`: nothing lost, nothing twice, in order.
pub fn assert_contiguous(offsets: &[u64], from: u64, to: u64) {
    let expected: Vec<u64> = (from..=to).collect();
    if offsets != expected {
        let dupes = offsets.len()
            - offsets
                .iter()
                .collect::<std::collections::HashSet<_>>()
                .len();
        panic!(
            "expected {from}..={to} once each, got {} offsets ({dupes} duplicated), first \
             differences: {:?}",
            offsets.len(),
            offsets
                .iter()
                .zip(&expected)
                .filter(|(a, b)| a != b)
                .take(5)
                .collect::<Vec<_>>()
        );
    }
}

/// A short pause only used to let a publisher run between a client's actions.
pub const STEP: Duration = Duration::from_millis(150);
