//! Protocol v2 frames and resume outcomes, and what legacy sockets see of durable messages.

use serde_json::json;

use super::*;

/// A fresh v2 socket is welcomed with the user's position, then gets durable messages with
/// their position and the payload under `data` (JSON as is, anything else as a string), and a
/// plain PUBLISH as a message without position. A legacy socket of the same user gets every
/// payload raw, byte for byte.
#[actix_web::test]
async fn v2_frames_carry_positions_and_legacy_sockets_get_raw_payloads() {
    let redis = RedisServer::start().await;
    let server = Server::start_in_process(TestSettings::with_redis(&redis)).await;
    server.wait_readyz(200, STARTUP_DEADLINE).await;
    let mut v2 = connect_v2(&server, "ana", None).await;
    let mut legacy = server.connect(&token("ana")).await;
    let (epoch, offset, recovered) = welcome(&mut v2).await;
    assert_eq!((offset, recovered), (0, None));
    redis.wait_subscribed("ana", 1).await;

    let (published_epoch, first) = publish_durable(&server, "ana", json!({"k": [1, 2]})).await;
    assert_eq!((published_epoch.as_str(), first), (epoch.as_str(), 1));
    let frame = recv_json(&mut v2).await;
    assert_eq!(
        frame,
        json!({"type": "message", "epoch": epoch, "offset": 1, "data": {"k": [1, 2]}})
    );
    assert_eq!(legacy.recv_text(DEADLINE).await, r#"{"k":[1,2]}"#);

    publish_durable(&server, "ana", json!("not json \"quoted\"")).await;
    assert_eq!(recv_json(&mut v2).await["data"], "not json \"quoted\"");
    assert_eq!(legacy.recv_text(DEADLINE).await, "not json \"quoted\"");

    redis.publish_to_user("ana", br#"{"plain":true}"#).await;
    let frame = recv_json(&mut v2).await;
    assert_eq!(frame, json!({"type": "message", "data": {"plain": true}}));
    assert_eq!(legacy.recv_text(DEADLINE).await, r#"{"plain":true}"#);

    // The documented call for backends with a Redis client.
    let offset = fcall_publish(&mut redis.conn().await, "ana", 3).await;
    assert_eq!(offset, 3);
    assert_eq!(recv_json(&mut v2).await["offset"], 3);
    assert_eq!(legacy.recv_text(DEADLINE).await, r#"{"n":3}"#);
}

/// The `notify.v2` subprotocol asks for v2 and is selected in the answer, beside the bearer
/// token; a malformed `since` or an unknown version is refused with 400 and the error JSON.
#[actix_web::test]
async fn v2_is_negotiated_by_subprotocol_and_bad_requests_are_refused() {
    let server = Server::start_in_process(TestSettings::new()).await;
    let offer = format!("bearer, {}, notify.v2", token("bo"));
    let mut client = WsClient::try_connect(&server.ws_base(), Some(&offer), None)
        .await
        .expect("handshake");
    assert_eq!(client.protocol.as_deref(), Some("notify.v2"));
    let (_, offset, _) = welcome(&mut client).await;
    assert_eq!(offset, 0);
    for query in ["v=3", "since=garbage", "since=e:1x", "v=1&since=e:1"] {
        let url = format!("{}&{query}", server.ws_url(&token("bo")));
        let Err(tokio_tungstenite::tungstenite::Error::Http(response)) =
            WsClient::try_connect(&url, None, None).await
        else {
            panic!("{query}: expected an HTTP refusal");
        };
        assert_eq!(response.status(), 400, "{query}");
    }
}

/// A resume replays exactly what was missed, then continues live; the in-process broker keeps
/// the same history as Redis would.
#[actix_web::test]
async fn a_resume_replays_what_was_missed_exactly_once() {
    let server = Server::start_in_process(TestSettings::new()).await;
    let mut client = connect_v2(&server, "cy", None).await;
    let (epoch, _, _) = welcome(&mut client).await;
    for n in 1..=3 {
        publish_durable(&server, "cy", json!({ "n": n })).await;
    }
    let (seen, _) = read_until(&mut client, 3).await;
    assert_contiguous(&seen, 1, 3);
    client.close().await;
    for n in 4..=7 {
        publish_durable(&server, "cy", json!({ "n": n })).await;
    }
    // A backend's state endpoint asks for the position before loading its state.
    let position = server
        .get_with("/api/v1/position?user_id=cy", &[("X-API-Key", API_KEY)])
        .await;
    assert_eq!(position.json(), json!({"epoch": epoch, "offset": 7}));
    let refused = server.get("/api/v1/position?user_id=cy").await;
    refused.assert_error(401, "AUTHENTICATION_ERROR");
    let mut client = connect_v2(&server, "cy", Some(&format!("{epoch}:3"))).await;
    let (again, top, recovered) = welcome(&mut client).await;
    assert_eq!(
        (again.as_str(), top, recovered),
        (epoch.as_str(), 7, Some(true))
    );
    publish_durable(&server, "cy", json!({ "n": 8 })).await;
    let (seen, resets) = read_until(&mut client, 8).await;
    assert_contiguous(&seen, 4, 8);
    assert!(resets.is_empty());
    let recovered = server
        .metric(r#"ws_resumes_total{outcome="recovered"}"#)
        .await;
    assert_eq!(recovered, Some(1.0));
}

/// Every position the history cannot serve is `recovered:false` with the current position, and
/// nothing is replayed: another epoch, an offset beyond the top, a trimmed history, more than
/// `max_replay` missing.
#[actix_web::test]
async fn positions_the_history_cannot_serve_are_not_recovered() {
    let redis = RedisServer::start().await;
    let settings = TestSettings::with_redis(&redis)
        .set("history.size", 3)
        .set("history.max_replay", 4);
    let server = Server::start_in_process(settings).await;
    server.wait_readyz(200, STARTUP_DEADLINE).await;
    let mut epoch = String::new();
    for n in 1..=10 {
        epoch = publish_durable(&server, "di", json!({ "n": n })).await.0;
    }
    // (offset, or another epoch when None; the outcome counted)
    for (offset, outcome) in [(None, "epoch"), (Some(6), "trimmed"), (Some(5), "too_far")] {
        let since = match offset {
            Some(offset) => format!("{epoch}:{offset}"),
            None => "other-epoch:3".to_owned(),
        };
        let mut client = connect_v2(&server, "di", Some(&since)).await;
        let (now, top, recovered) = welcome(&mut client).await;
        assert_eq!(
            (now.as_str(), top, recovered),
            (epoch.as_str(), 10, Some(false)),
            "{since}"
        );
        publish_durable(&server, "di", json!("next")).await;
        let frame = recv_json(&mut client).await;
        assert_eq!(
            frame["offset"],
            top + 1,
            "{since}: messages continue from the top"
        );
        epoch = frame["epoch"].as_str().unwrap_or_default().to_owned();
        let series = format!(r#"ws_resumes_total{{outcome="{outcome}"}}"#);
        assert_eq!(server.metric(&series).await, Some(1.0), "{since}");
        // Back to a top of 10 for the next case.
        redis::cmd("DEL")
            .arg("{ws:di}:m")
            .arg("{ws:di}:h")
            .query_async::<()>(&mut redis.conn().await)
            .await
            .expect("DEL");
        for n in 1..=10 {
            epoch = publish_durable(&server, "di", json!({ "n": n })).await.0;
        }
    }
    // Beyond the top of this epoch: the server had handed out more than the history holds (a
    // failover lost entries): a new epoch, never recovered.
    let mut client = connect_v2(&server, "di", Some(&format!("{epoch}:99"))).await;
    let (renewed, _, recovered) = welcome(&mut client).await;
    assert_eq!(recovered, Some(false));
    assert_ne!(renewed, epoch, "a lost offset starts a new epoch");
}

/// A retry with the same `Idempotency-Key` answers the same positions and publishes nothing
/// again; a bad key is refused 400.
#[actix_web::test]
async fn an_idempotent_retry_publishes_once() {
    let server = Server::start_in_process(TestSettings::new()).await;
    let mut client = connect_v2(&server, "ed", None).await;
    welcome(&mut client).await;
    let body = json!({"user_ids": ["ed", "fay"], "data": "once"}).to_string();
    let headers = [
        ("X-API-Key", API_KEY),
        ("Content-Type", "application/json"),
        ("Idempotency-Key", "order-42"),
    ];
    let first = server.post("/api/v1/publish", &headers, &body).await;
    let again = server.post("/api/v1/publish", &headers, &body).await;
    assert_eq!(first.status, 200, "{}", first.text());
    assert_eq!(first.json(), again.json());
    assert_eq!(first.json()["positions"]["fay"]["offset"], 1);
    assert_eq!(recv_json(&mut client).await["offset"], 1);
    client.expect_silence(Duration::from_millis(300)).await;
    let bad = [("X-API-Key", API_KEY), ("Idempotency-Key", "")];
    let reply = server.post("/api/v1/publish", &bad, &body).await;
    reply.assert_error(400, "VALIDATION_ERROR");
}

/// With Redis down a durable publish fails with 503 and the error JSON: never a 200 for a
/// message that was not stored.
#[actix_web::test]
async fn a_publish_that_was_not_stored_is_503() {
    let mut redis = RedisServer::start().await;
    let server = Server::start_in_process(TestSettings::with_redis(&redis)).await;
    server.wait_readyz(200, STARTUP_DEADLINE).await;
    redis.kill();
    let body = json!({"user_ids": ["gus"], "data": 1}).to_string();
    let headers = [("X-API-Key", API_KEY), ("Content-Type", "application/json")];
    let reply = server.post("/api/v1/publish", &headers, &body).await;
    reply.assert_error(503, "SERVICE_UNAVAILABLE");
}

/// A quiet user's history expires after `history.ttl_s`: a resume from before is not
/// recovered, and comes back under a new epoch.
#[actix_web::test]
async fn an_expired_history_is_not_recovered() {
    let redis = RedisServer::start().await;
    let settings = TestSettings::with_redis(&redis).set("history.ttl_s", 1);
    let server = Server::start_in_process(settings).await;
    server.wait_readyz(200, STARTUP_DEADLINE).await;
    let (epoch, offset) = publish_durable(&server, "eve", json!("soon gone")).await;
    wait_until(DEADLINE, "the history to expire", || async {
        let exists: i64 = redis::cmd("EXISTS")
            .arg("{ws:eve}:m")
            .arg("{ws:eve}:h")
            .query_async(&mut redis.conn().await)
            .await
            .expect("EXISTS");
        exists == 0
    })
    .await;
    let mut client = connect_v2(&server, "eve", Some(&format!("{epoch}:{}", offset - 1))).await;
    let (now, top, recovered) = welcome(&mut client).await;
    assert_eq!((top, recovered), (0, Some(false)));
    assert_ne!(now, epoch);
}
