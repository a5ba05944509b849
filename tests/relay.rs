//! End-to-end relay tests: a real `redis-server`, real sockets. Each test starts its own Redis
//! (when it needs one) and its own server, in-process on port 0, or as the real binary when the
//! test reads its log or runs `--dev`.

mod common;

use std::time::{Duration, Instant};

use common::*;
use futures_util::StreamExt as _;
use serde_json::{json, Value};

/// Short window for "this user receives nothing", used only after a positive delivery.
const SILENCE: Duration = Duration::from_millis(300);

/// A server with Redis, ready (readiness 200), and its Redis.
async fn redis_and_server(
    settings: impl FnOnce(TestSettings) -> TestSettings,
) -> (RedisServer, Server) {
    let redis = RedisServer::start().await;
    let server = Server::start_in_process(settings(TestSettings::with_redis(&redis))).await;
    server.wait_readyz(200, STARTUP_DEADLINE).await;
    (redis, server)
}

/// Publishes `payload` to `user` via Redis and asserts `n` subscribers got it.
async fn publish(redis: &RedisServer, user: &str, payload: &[u8], n: i64) {
    let receivers = redis.publish_to_user(user, payload).await;
    assert_eq!(
        receivers,
        n,
        "PUBLISH {} reached {receivers} subscribers",
        channel(user)
    );
}

/// A message published on `ws:{user}` arrives as one text frame with the exact bytes: a small
/// JSON payload, a 60 KB payload and a non-ASCII one; a non-UTF-8 payload arrives as a binary
/// frame with the exact bytes.
#[actix_web::test]
async fn redis_publish_arrives_byte_for_byte() {
    let (redis, server) = redis_and_server(|s| s).await;
    let mut alice = server.connect(&token("alice")).await;
    redis.wait_subscribed("alice", 1).await;

    let small = r#"{"type":"file_assigned","essay_id":42,"slot":"B"}"#.to_owned();
    let big = format!(
        r#"{{"blob":"{}"}}"#,
        "0123456789abcdef".repeat(60 * 1024 / 16)
    );
    assert!(big.len() > 60 * 1024);
    let accented = r#"{"msg":"Café crème, naïve façade — 🎉👩‍🏫 日本語 ñ ü"}"#.to_owned();
    for payload in [small, big, accented] {
        publish(&redis, "alice", payload.as_bytes(), 1).await;
        let got = alice.recv_text(DEADLINE).await;
        assert_eq!(got.len(), payload.len(), "payload length changed");
        assert_eq!(got, payload);
    }

    let raw: Vec<u8> = vec![0xff, 0xfe, 0x00, 0x80, b'{', 0xc3, 0x28, b'}'];
    assert!(std::str::from_utf8(&raw).is_err());
    publish(&redis, "alice", &raw, 1).await;
    assert_eq!(alice.recv_binary(DEADLINE).await, raw);
}

/// Every socket of a user receives each message; a socket of another user receives nothing.
#[actix_web::test]
async fn every_socket_of_a_user_receives_and_no_one_else() {
    let (redis, server) = redis_and_server(|s| s).await;
    let mut bobs = Vec::new();
    for _ in 0..3 {
        bobs.push(server.connect(&token("bob")).await);
    }
    let mut carol = server.connect(&token("carol")).await;
    redis.wait_subscribed("bob", 1).await;
    redis.wait_subscribed("carol", 1).await;

    // Every socket must have joined the hub before the real message: warm up until each got one.
    let mut sockets: Vec<&mut WsClient> = bobs.iter_mut().collect();
    publish_until_all_receive(&redis, "bob", &mut sockets).await;
    publish(&redis, "bob", br#"{"n":2}"#, 1).await;
    for bob in &mut bobs {
        assert_eq!(bob.recv_text(DEADLINE).await, r#"{"n":2}"#);
    }
    carol.expect_silence(SILENCE).await;

    // Carol's socket works: her own message is the first thing she gets.
    publish(&redis, "carol", b"for carol", 1).await;
    assert_eq!(carol.recv_text(DEADLINE).await, "for carol");
}

/// User ids with glob characters, separators or non-ASCII (`a*`, `a:b`, `é`) are channels of
/// their own: messages for `ws:ab`, `ws:a`, `ws:e` never reach them; each gets its own.
#[actix_web::test]
async fn glob_and_separator_user_ids_are_isolated() {
    let (redis, server) = redis_and_server(|s| s).await;
    let users = ["a*", "a:b", "é", "a?", "[a]"];
    let mut clients = Vec::new();
    for user in users {
        let token = token(user);
        clients.push(server.connect(&token).await);
        redis.wait_subscribed(user, 1).await;
    }
    // Published first: had any of these leaked, it would arrive before the user's own message.
    for decoy in [
        "ws:ab", "ws:a", "ws:e", "ws:a:", "ws:b", "ws:a*b", "ws:*", "ws:ax",
    ] {
        redis
            .publish(decoy, format!("decoy {decoy}").as_bytes())
            .await;
    }
    for user in users {
        publish(&redis, user, format!("for {user}").as_bytes(), 1).await;
    }
    for (user, client) in users.iter().zip(&mut clients) {
        assert_eq!(client.recv_text(DEADLINE).await, format!("for {user}"));
    }
}

/// Per-user quota: with max_connections_per_user = 2 a third socket of the same user is closed
/// 4000 with QUOTA_EXCEEDED, and the first two still receive.
#[actix_web::test]
async fn per_user_quota_closes_the_extra_socket_with_4000() {
    let (redis, server) = redis_and_server(|s| s.set("limits.max_connections_per_user", 2)).await;
    let mut first = server.connect(&token("dave")).await;
    let mut second = server.connect(&token("dave")).await;
    redis.wait_subscribed("dave", 1).await;
    // Both admitted before the third comes: each receives a message.
    publish_until_all_receive(&redis, "dave", &mut [&mut first, &mut second]).await;

    let mut third = server.connect(&token("dave")).await;
    let closed = third.expect_close_with(4000, "QUOTA_EXCEEDED").await;
    assert!(!closed.reason.contains(&token("dave")));

    publish(&redis, "dave", b"still here", 1).await;
    assert_eq!(first.recv_text(DEADLINE).await, "still here");
    assert_eq!(second.recv_text(DEADLINE).await, "still here");
}

/// Publishes numbered messages until every client received one, then a marker that each must
/// receive next (so no late message is left over).
async fn publish_until_all_receive(redis: &RedisServer, user: &str, clients: &mut [&mut WsClient]) {
    let start = Instant::now();
    let mut attempt = 0;
    let mut received = vec![false; clients.len()];
    while received.contains(&false) {
        assert!(
            start.elapsed() < DEADLINE,
            "not every socket of {user} received within {DEADLINE:?}"
        );
        attempt += 1;
        redis
            .publish_to_user(user, format!("warmup {attempt}").as_bytes())
            .await;
        for (client, got) in clients.iter_mut().zip(&mut received) {
            if !*got {
                if let Some(frame) = client.next_frame(Duration::from_millis(100)).await {
                    assert!(
                        matches!(&frame, Frame::Text(t) if t.starts_with("warmup ")),
                        "unexpected {frame:?}"
                    );
                    *got = true;
                }
            }
        }
    }
    redis.publish_to_user(user, b"warmup end").await;
    for client in clients.iter_mut() {
        loop {
            let text = client.recv_text(DEADLINE).await;
            if text == "warmup end" {
                break;
            }
            assert!(text.starts_with("warmup "), "unexpected {text:?}");
        }
    }
}

/// Global cap: with max_connections = 2 a third socket (another user) is closed 1013 with
/// QUOTA_EXCEEDED; once one socket closes, a new one is accepted.
#[actix_web::test]
async fn global_cap_closes_with_1013_and_frees_on_close() {
    let (redis, server) = redis_and_server(|s| s.set("limits.max_connections", 2)).await;
    let erin = server.connect(&token("erin")).await;
    let mut eve = server.connect(&token("eve")).await;
    redis.wait_subscribed("erin", 1).await;
    redis.wait_subscribed("eve", 1).await;

    let mut third = server.connect(&token("ezra")).await;
    third.expect_close_with(1013, "QUOTA_EXCEEDED").await;
    assert_eq!(redis.numsub(&channel("ezra")).await, 0);

    erin.close().await;
    redis.wait_unsubscribed("erin").await;

    // The permit is released when the session stops: retry until a socket is admitted.
    let start = Instant::now();
    let mut ezra = 'retry: loop {
        assert!(
            start.elapsed() < DEADLINE,
            "no new socket admitted within {DEADLINE:?} after one closed"
        );
        let mut client = server.connect(&token("ezra")).await;
        loop {
            match client.next_frame(Duration::from_millis(50)).await {
                Some(Frame::Close(Some((1013, _)))) => continue 'retry,
                Some(other) => panic!("unexpected {other:?} for a retried socket"),
                None if redis.numsub(&channel("ezra")).await >= 1 => break 'retry client,
                None if start.elapsed() < DEADLINE => continue,
                None => panic!("retried socket neither closed nor subscribed"),
            }
        }
    };
    publish(&redis, "ezra", b"welcome", 1).await;
    assert_eq!(ezra.recv_text(DEADLINE).await, "welcome");
    publish(&redis, "eve", b"still here", 1).await;
    assert_eq!(eve.recv_text(DEADLINE).await, "still here");
}

/// Every refused token (none, garbage, wrong secret, expired, no `exp`, HS384, `alg: none`) gets
/// the upgrade, then close 1008 with AUTHENTICATION_ERROR and a JSON reason of at most 123
/// bytes; no subscription is left behind, /metrics still answers, and no token is logged.
#[actix_web::test]
async fn refused_tokens_close_1008_and_leave_nothing_behind() {
    // A real process: the test reads the server's log.
    let redis = RedisServer::start().await;
    let server = Server::start(TestSettings::with_redis(&redis)).await;
    server.wait_readyz(200, STARTUP_DEADLINE).await;
    let cases = [
        ("garbage", "not-a-jwt".to_owned()),
        ("wrong secret", wrong_secret_token("mallory")),
        ("expired", expired_token("mallory")),
        ("no exp", no_exp_token("mallory")),
        ("HS384", hs384_token("mallory")),
        ("alg none", alg_none_token("mallory")),
    ];
    let mut none = WsClient::connect(&server.ws_base()).await;
    let closed = none.expect_close_with(1008, "AUTHENTICATION_ERROR").await;
    assert!(!closed.json["correlation_id"]
        .as_str()
        .unwrap_or("")
        .is_empty());
    for (case, token) in &cases {
        let mut client = WsClient::try_connect(&server.ws_url(token), None, None)
            .await
            .unwrap_or_else(|e| panic!("{case}: the upgrade must be accepted, got {e}"));
        let closed = client.expect_close(DEADLINE).await;
        assert_eq!(closed.code, 1008, "{case}: {}", closed.reason);
        assert_eq!(
            closed.json["error_code"], "AUTHENTICATION_ERROR",
            "{case}: {}",
            closed.reason
        );
    }

    assert_eq!(redis.channels("ws:*").await, Vec::<String>::new());
    let metrics = server.get("/metrics").await;
    assert_eq!(metrics.status, 200);
    assert!(
        metrics.text().contains("auth_failed"),
        "metrics do not count auth failures:\n{}",
        metrics.text()
    );
    let log = server.log();
    for (case, token) in cases.iter().skip(1) {
        assert!(
            !log.contains(token.as_str()),
            "{case} token appears in the log"
        );
    }
}

/// A token offered as `Sec-WebSocket-Protocol: bearer, <JWT>` works and the 101 answer selects
/// `bearer`; a bad token offered that way still gets `bearer` selected, then close 1008. A token
/// in `Authorization: Bearer` works too.
#[actix_web::test]
async fn token_via_subprotocol_and_authorization_header() {
    let (redis, server) = redis_and_server(|s| s).await;

    let mut frank = WsClient::connect_via(&server, &token("frank"), TokenVia::Subprotocol).await;
    assert_eq!(frank.protocol.as_deref(), Some("bearer"));
    redis.wait_subscribed("frank", 1).await;
    publish(&redis, "frank", b"via subprotocol", 1).await;
    assert_eq!(frank.recv_text(DEADLINE).await, "via subprotocol");

    let mut bad =
        WsClient::connect_via(&server, &expired_token("frank"), TokenVia::Subprotocol).await;
    assert_eq!(bad.protocol.as_deref(), Some("bearer"));
    bad.expect_close_with(1008, "AUTHENTICATION_ERROR").await;
    let mut garbage = WsClient::connect_via(&server, "garbage", TokenVia::Subprotocol).await;
    assert_eq!(garbage.protocol.as_deref(), Some("bearer"));
    garbage
        .expect_close_with(1008, "AUTHENTICATION_ERROR")
        .await;

    let mut grace = WsClient::connect_via(&server, &token("grace"), TokenVia::Header).await;
    assert_eq!(grace.protocol, None, "no subprotocol was offered");
    redis.wait_subscribed("grace", 1).await;
    publish(&redis, "grace", b"via header", 1).await;
    assert_eq!(grace.recv_text(DEADLINE).await, "via header");

    let mut bad =
        WsClient::connect_via(&server, &wrong_secret_token("grace"), TokenVia::Header).await;
    bad.expect_close_with(1008, "AUTHENTICATION_ERROR").await;
}

/// The user's channel stays subscribed while one of its sockets is open and is unsubscribed after
/// the last one closes (cleanly or by dropping the connection).
#[actix_web::test]
async fn channel_is_unsubscribed_after_the_last_socket() {
    let (redis, server) = redis_and_server(|s| s).await;
    let first = server.connect(&token("heidi")).await;
    let mut second = server.connect(&token("heidi")).await;
    redis.wait_subscribed("heidi", 1).await;

    first.close().await;
    // The remaining socket still gets messages through the subscription.
    let start = Instant::now();
    loop {
        assert!(start.elapsed() < DEADLINE, "second socket got nothing");
        redis.publish_to_user("heidi", b"still subscribed").await;
        if second
            .next_frame(Duration::from_millis(100))
            .await
            .is_some()
        {
            break;
        }
    }
    assert_eq!(redis.numsub(&channel("heidi")).await, 1);
    assert_eq!(redis.channels("ws:*").await, vec![channel("heidi")]);

    second.close().await;
    redis.wait_unsubscribed("heidi").await;
    assert_eq!(redis.channels("ws:*").await, Vec::<String>::new());

    // A socket that just disappears (no close frame) is cleaned up too.
    let judy = server.connect(&token("judy")).await;
    redis.wait_subscribed("judy", 1).await;
    drop(judy);
    redis.wait_unsubscribed("judy").await;
}

/// The publish API: a wrong or missing key is 401 AUTHENTICATION_ERROR, a malformed body 400
/// VALIDATION_ERROR (error JSON, X-Correlation-ID echoed and used); a valid call is 200
/// `{"published": N}`, goes through Redis, and the socket gets a string as is and a JSON value
/// compactly. With no API key configured the endpoint is not available. (History off: the plain
/// publish on `ws:{user}`; durable publishing is in tests/delivery.rs.)
#[actix_web::test]
async fn publish_api_authenticates_validates_and_delivers_through_redis() {
    let (redis, server) = redis_and_server(|s| s.set("history.size", 0)).await;
    let url = "/api/v1/publish";
    let body = r#"{"user_ids":["kate"],"data":"x"}"#;
    let json_type = ("Content-Type", "application/json");

    let reply = server
        .post(
            url,
            &[
                ("X-API-Key", "wrong-key"),
                ("X-Correlation-ID", "abc-123"),
                json_type,
            ],
            body,
        )
        .await;
    let error = reply.assert_error(401, "AUTHENTICATION_ERROR");
    assert_eq!(reply.header("x-correlation-id"), Some("abc-123"));
    assert_eq!(error["correlation_id"], "abc-123");

    let reply = server.post(url, &[json_type], body).await;
    reply.assert_error(401, "AUTHENTICATION_ERROR");
    assert!(reply
        .header("x-correlation-id")
        .is_some_and(|c| !c.is_empty()));

    for bad in [
        "{not json",
        r#"{"user_ids":"kate","data":1}"#,
        r#"{"data":1}"#,
        r#"{"user_ids":[],"data":1}"#,
    ] {
        let reply = server
            .post(
                url,
                &[
                    ("X-API-Key", API_KEY),
                    ("X-Correlation-ID", "abc-123"),
                    json_type,
                ],
                bad,
            )
            .await;
        let error = reply.assert_error(400, "VALIDATION_ERROR");
        assert_eq!(error["correlation_id"], "abc-123", "body {bad}");
    }

    // Watch the channel from the test, to see the API's message go through Redis.
    let mut watcher = redis::Client::open(redis.url())
        .expect("redis url")
        .get_async_pubsub()
        .await
        .expect("pubsub connection");
    watcher.subscribe(channel("kate")).await.expect("SUBSCRIBE");
    let mut kate = server.connect(&token("kate")).await;
    redis.wait_subscribed("kate", 2).await;
    let mut watched = watcher.on_message();

    let text = "plain \"text\", not re-encoded: é";
    server
        .publish_api(&["kate", "nobody"], Value::String(text.into()))
        .await;
    assert_eq!(kate.recv_text(DEADLINE).await, text);
    let seen = tokio::time::timeout(DEADLINE, watched.next())
        .await
        .expect("the API's message did not go through Redis")
        .expect("pubsub stream ended");
    assert_eq!(seen.get_channel_name(), channel("kate"));
    assert_eq!(seen.get_payload_bytes(), text.as_bytes());

    let object = r#"{"user_ids":["kate"],"data":{ "b" : 1, "a" : [1, 2], "s": "é" }}"#;
    let reply = server
        .post(
            url,
            &[("Authorization", &format!("Bearer {API_KEY}")), json_type],
            object,
        )
        .await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert_eq!(reply.json(), json!({"published": 1}));
    let got = kate.recv_text(DEADLINE).await;
    let value: Value = serde_json::from_str(&got).expect("object delivered as JSON");
    assert_eq!(value, json!({"b": 1, "a": [1, 2], "s": "é"}));
    assert_eq!(
        got,
        serde_json::to_string(&value).unwrap(),
        "not compact: {got}"
    );
    drop(watched);

    // No key configured: the endpoint is off.
    let off =
        Server::start_in_process(TestSettings::with_redis(&redis).set("api.publish_api_key", ""))
            .await;
    for headers in [&[json_type][..], &[("X-API-Key", ""), json_type][..]] {
        let reply = off.post(url, headers, body).await;
        assert_ne!(reply.status, 200);
        assert!(
            [403, 404].contains(&reply.status),
            "status {}: {}",
            reply.status,
            reply.text()
        );
        assert!(
            reply.json()["error"]["code"].is_string(),
            "{}",
            reply.text()
        );
    }
}

/// With no Redis URL the in-process broker relays: readiness is 200 and a message published by
/// the API reaches the socket.
#[actix_web::test]
async fn in_process_broker_relays_api_messages() {
    let server = Server::start_in_process(TestSettings::new()).await;
    server.wait_readyz(200, DEADLINE).await;
    let mut leo = server.connect(&token("leo")).await;
    let mut other = server.connect(&token("lea")).await;
    publish_api_until_received(&server, "leo", &mut leo).await;
    server
        .publish_api(&["leo"], json!({"k": "v", "n": [1, 2]}))
        .await;
    assert_eq!(leo.recv_text(DEADLINE).await, r#"{"k":"v","n":[1,2]}"#);
    other.expect_silence(SILENCE).await;
    let health = server.get("/healthz").await.json();
    assert_eq!(health["status"], "ok", "{health}");
}

/// Redis down at start-up: the server starts (liveness 200) but is not ready (503 JSON); once
/// Redis comes up on that port it becomes ready and relays.
#[actix_web::test]
async fn redis_down_at_start_then_up() {
    let port = free_port();
    let server =
        Server::start_in_process(TestSettings::new().set("redis.url", redis_url(port))).await;
    assert_eq!(server.get("/healthz").await.status, 200);
    let ready = server.get("/readyz").await;
    ready.assert_error(503, "SERVICE_UNAVAILABLE");

    let redis = RedisServer::start_on(port).await;
    server.wait_readyz(200, STARTUP_DEADLINE).await;
    let mut mike = server.connect(&token("mike")).await;
    redis.wait_subscribed("mike", 1).await;
    publish(&redis, "mike", b"redis is back", 1).await;
    assert_eq!(mike.recv_text(DEADLINE).await, "redis is back");
}

/// `--dev` starts with no secret and no Redis, prints a demo token, a `ws://` URL and an API key;
/// the printed URL connects and a message published with the printed key arrives.
#[actix_web::test]
async fn dev_mode_prints_a_working_token_url_and_key() {
    let mut server = Server::start(
        TestSettings::new()
            .unset("auth.jwt_secret")
            .set("api.publish_api_key", "")
            .dev(),
    )
    .await;
    let log = server.log();
    let words: Vec<&str> = log
        .split(|c: char| c.is_whitespace() || "'\"".contains(c))
        .filter(|w| !w.is_empty())
        .collect();
    let url = words
        .iter()
        .find(|w| w.starts_with("ws://"))
        .unwrap_or_else(|| panic!("no ws:// URL printed:\n{log}"))
        .to_string();
    let token = words
        .iter()
        .flat_map(|w| w.split(['=', '?', '&']))
        .find(|w| looks_like_jwt(w))
        .unwrap_or_else(|| panic!("no demo token printed:\n{log}"))
        .to_string();
    let key = log
        .split("X-API-Key: ")
        .nth(1)
        .and_then(|rest| {
            rest.split(|c: char| c.is_whitespace() || "'\"".contains(c))
                .next()
        })
        .filter(|k| !k.is_empty())
        .unwrap_or_else(|| panic!("no `X-API-Key: <key>` printed:\n{log}"))
        .to_string();
    let claims: Value =
        jsonwebtoken::dangerous::insecure_decode_claims(&token).expect("demo token claims");
    let user = claims["sub"]
        .as_str()
        .expect("demo token has a sub")
        .to_owned();

    let url = if url.contains("token=") {
        url
    } else {
        server.ws_url(&token)
    };
    let mut demo = WsClient::connect(&url).await;
    server.set_api_key(key);
    publish_api_until_received(&server, &user, &mut demo).await;
    server
        .publish_api(&[&user], json!({"hello": "world"}))
        .await;
    assert_eq!(demo.recv_text(DEADLINE).await, r#"{"hello":"world"}"#);
}

/// Unknown routes are 404 with the error JSON; /healthz reports status and broker; /metrics is
/// Prometheus text with the connection gauge.
#[actix_web::test]
async fn http_errors_health_and_metrics() {
    let server = Server::start_in_process(TestSettings::new()).await;
    let reply = server.get("/nope").await;
    reply.assert_error(404, "NOT_FOUND");
    assert!(reply.header("x-correlation-id").is_some());

    let health = server.get("/healthz").await;
    assert_eq!(health.status, 200);
    let health = health.json();
    assert!(health.get("status").is_some(), "{health}");
    assert!(health.get("broker").is_some(), "{health}");

    let _socket = server.connect(&token("nina")).await;
    let metrics = server.get("/metrics").await;
    assert_eq!(metrics.status, 200);
    assert!(
        metrics
            .header("content-type")
            .is_some_and(|c| c.starts_with("text/plain")),
        "{:?}",
        metrics.headers
    );
    let text = metrics.text();
    assert!(text.contains("ws_connections_active"), "{text}");
    assert!(
        text.contains("# TYPE ws_connections_active gauge"),
        "{text}"
    );
}

/// Sends `request` on a fresh connection and reads until the server hangs up or `done` says
/// enough arrived: what a client that speaks raw HTTP sees.
async fn raw_exchange(server: &Server, request: &[u8], done: impl Fn(&[u8]) -> bool) -> Vec<u8> {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", server.port()))
        .await
        .expect("connect");
    stream.write_all(request).await.expect("send request");
    let mut received = Vec::new();
    let read = async {
        let mut chunk = [0u8; 4096];
        while !done(&received) {
            match stream.read(&mut chunk).await {
                Ok(0) | Err(_) => break,
                Ok(n) => received.extend_from_slice(&chunk[..n]),
            }
        }
    };
    tokio::time::timeout(DEADLINE, read)
        .await
        .expect("the server neither answered nor hung up");
    received
}

/// Never enough: read until the server hangs up.
fn until_eof(_: &[u8]) -> bool {
    false
}

/// Splits a raw HTTP response into its head and body.
fn head_and_body(response: &[u8]) -> (String, Vec<u8>) {
    let end = response
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .unwrap_or_else(|| {
            panic!(
                "no response head in {:?}",
                String::from_utf8_lossy(response)
            )
        });
    let head = String::from_utf8_lossy(&response[..end]).to_ascii_lowercase();
    (head, response[end + 4..].to_vec())
}

fn upgrade_request(target: &str, extra_headers: &str) -> String {
    format!(
        "GET {target} HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Version: 13\r\n{extra_headers}\r\n"
    )
}

/// Upgrade requests are answered by the server itself, outside actix-web's routing: an upgrade
/// to another path is a 404 and a malformed one a 400, both with the error JSON and the
/// correlation id echoed; a plain GET of the WebSocket path is a 400; and frames a client sends
/// right behind its upgrade request, in the same packet, are read (a ping is answered).
#[actix_web::test]
async fn upgrade_answers_errors_as_json_and_reads_pipelined_frames() {
    let server = Server::start_in_process(TestSettings::new()).await;
    let key = "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n";

    let elsewhere = upgrade_request("/elsewhere", &format!("{key}X-Correlation-ID: up-1\r\n"));
    let (head, body) = head_and_body(&raw_exchange(&server, elsewhere.as_bytes(), until_eof).await);
    assert!(head.starts_with("http/1.1 404 "), "{head}");
    assert!(head.contains("x-correlation-id: up-1"), "{head}");
    let error: Value = serde_json::from_slice(&body).expect("error JSON");
    assert_eq!(error["error"]["code"], "NOT_FOUND", "{error}");
    assert_eq!(error["error"]["correlation_id"], "up-1", "{error}");

    let keyless = upgrade_request(&format!("/ws?token={}", token("raw")), "");
    let (head, body) = head_and_body(&raw_exchange(&server, keyless.as_bytes(), until_eof).await);
    assert!(head.starts_with("http/1.1 400 "), "{head}");
    let error: Value = serde_json::from_slice(&body).expect("error JSON");
    assert_eq!(error["error"]["code"], "VALIDATION_ERROR", "{error}");

    server
        .get("/ws")
        .await
        .assert_error(400, "VALIDATION_ERROR");

    // A masked ping with payload "hi" (mask 1,2,3,4) in the same write as the request.
    let mut request = upgrade_request(&format!("/ws?token={}", token("raw")), key).into_bytes();
    request.extend_from_slice(&[0x89, 0x82, 1, 2, 3, 4, b'h' ^ 1, b'i' ^ 2]);
    let head_and_pong = |bytes: &[u8]| {
        bytes
            .windows(4)
            .position(|w| w == b"\r\n\r\n")
            .is_some_and(|end| bytes.len() >= end + 4 + 4)
    };
    let response = raw_exchange(&server, &request, head_and_pong).await;
    let (head, frames) = head_and_body(&response);
    assert!(head.starts_with("http/1.1 101 "), "{head}");
    assert!(
        head.contains("sec-websocket-accept: s3pplmbitxaq9kygzzhzrbk+xoo="),
        "{head}"
    );
    assert_eq!(
        frames.get(..4),
        Some(&[0x8a, 2, b'h', b'i'][..]),
        "{frames:?}"
    );
}
