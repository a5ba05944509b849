//! End-to-end tests of what operators see: exact metric values after a scripted scenario, the
//! three `websocket.*` spans exported over OTLP/HTTP with a payload's `traceparent` as parent, and
//! logs that never contain a token, the JWT secret or the publish API key, at trace level, in both
//! log formats. The metrics test runs the server in-process (its own registry); the span and log
//! tests run the real binary, whose exporter and log they read.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::{Arc, Mutex};

use common::*;
use jsonwebtoken::Algorithm;
use serde_json::{json, Value};

/// After 3 accepted sockets, 1 auth failure, 1 quota refusal, 5 messages and 1 client close, the
/// exposition holds exactly the expected counter and gauge values.
#[actix_web::test]
async fn metrics_count_a_scripted_scenario_exactly() {
    let redis = RedisServer::start().await;
    let server = Server::start_in_process(
        TestSettings::with_redis(&redis).set("limits.max_connections_per_user", 2),
    )
    .await;
    let mut a1 = server.connect(&token("m-a")).await;
    let _a2 = server.connect(&token("m-a")).await;
    let mut b = server.connect(&token("m-b")).await;
    redis.wait_subscribed("m-a", 1).await;
    redis.wait_subscribed("m-b", 1).await;
    let mut refused = server.connect(&wrong_secret_token("m-c")).await;
    refused
        .expect_close_with(1008, "AUTHENTICATION_ERROR")
        .await;
    let mut over = server.connect(&token("m-a")).await;
    over.expect_close_with(4000, "QUOTA_EXCEEDED").await;
    wait_metric(
        &server,
        r#"ws_connections_opened_total{outcome="accepted"}"#,
        3.0,
    )
    .await;

    for seq in 0..5 {
        redis
            .publish_to_user("m-b", format!("msg-{seq}").as_bytes())
            .await;
    }
    for seq in 0..5 {
        assert_eq!(b.recv_text(DEADLINE).await, format!("msg-{seq}"));
    }
    a1.send(tokio_tungstenite::tungstenite::Message::Close(None))
        .await
        .expect("send close");
    wait_metric(
        &server,
        r#"ws_connections_closed_total{code="client"}"#,
        1.0,
    )
    .await;

    let expected = [
        (r#"ws_connections_opened_total{outcome="accepted"}"#, 3.0),
        (r#"ws_connections_opened_total{outcome="auth_failed"}"#, 1.0),
        (r#"ws_connections_opened_total{outcome="quota_user"}"#, 1.0),
        (r#"ws_connections_closed_total{code="4000"}"#, 1.0),
        (r#"ws_connections_closed_total{code="client"}"#, 1.0),
        ("ws_connections_active", 2.0),
        ("ws_users_active", 2.0),
        ("ws_messages_forwarded_total", 5.0),
        ("ws_bytes_forwarded_total", 25.0),
        ("ws_message_size_bytes_count", 5.0),
        ("ws_subscribed_channels", 2.0),
        ("ws_broker_connected", 1.0),
        ("ws_broker_reconnects_total", 0.0),
    ];
    for (series, value) in expected {
        assert_eq!(server.metric(series).await, Some(value), "{series}");
    }
    assert_eq!(
        server.metric("ws_connection_duration_seconds_count").await,
        Some(2.0)
    );
    let http = server.get("/metrics").await.text();
    assert!(http.contains(r#"http_requests_total{route="/metrics",status="200"}"#));
}

async fn wait_metric(server: &Server, series: &str, value: f64) {
    let what = format!("{series} to reach {value}");
    wait_until(DEADLINE, &what, || async {
        server.metric(series).await == Some(value)
    })
    .await;
}

/// A tiny OTLP/HTTP receiver: records the JSON body of every POST and answers 200 `{}`.
struct OtlpReceiver {
    port: u16,
    bodies: Arc<Mutex<Vec<Value>>>,
}

impl OtlpReceiver {
    fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind receiver");
        let port = listener.local_addr().expect("addr").port();
        let bodies = Arc::new(Mutex::new(Vec::new()));
        let sink = Arc::clone(&bodies);
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let sink = Arc::clone(&sink);
                std::thread::spawn(move || serve(stream, &sink));
            }
        });
        Self { port, bodies }
    }

    fn spans(&self) -> Vec<Value> {
        let bodies = self.bodies.lock().expect("lock").clone();
        bodies
            .iter()
            .flat_map(|body| {
                body["resourceSpans"]
                    .as_array()
                    .cloned()
                    .unwrap_or_default()
            })
            .flat_map(|rs| rs["scopeSpans"].as_array().cloned().unwrap_or_default())
            .flat_map(|ss| ss["spans"].as_array().cloned().unwrap_or_default())
            .collect()
    }
}

fn serve(stream: TcpStream, sink: &Mutex<Vec<Value>>) {
    let mut reader = BufReader::new(stream.try_clone().expect("clone"));
    let mut writer = stream;
    loop {
        let mut length = 0usize;
        let mut line = String::new();
        loop {
            line.clear();
            if reader.read_line(&mut line).unwrap_or(0) == 0 {
                return;
            }
            if line == "\r\n" {
                break;
            }
            if let Some((name, value)) = line.split_once(':') {
                if name.eq_ignore_ascii_case("content-length") {
                    length = value.trim().parse().unwrap_or(0);
                }
            }
        }
        let mut body = vec![0; length];
        if reader.read_exact(&mut body).is_err() {
            return;
        }
        if let Ok(json) = serde_json::from_slice(&body) {
            sink.lock().expect("lock").push(json);
        }
        let reply =
            "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n{}";
        if writer.write_all(reply.as_bytes()).is_err() {
            return;
        }
    }
}

fn span_named<'a>(spans: &'a [Value], name: &str) -> Option<&'a Value> {
    spans.iter().find(|span| span["name"] == name)
}

/// With an OTLP endpoint set, the connect, validate_token and forward_message spans are exported;
/// validate_token is a child of connect, and the forward span continues the trace named by the
/// payload's `traceparent` (under `metadata`).
#[actix_web::test]
async fn spans_are_exported_with_the_payload_traceparent_as_parent() {
    let receiver = OtlpReceiver::start();
    let endpoint = format!("http://127.0.0.1:{}", receiver.port);
    let mut server = Server::start(
        TestSettings::new()
            .set("shutdown.drain_timeout_s", 2)
            .env("WS__TELEMETRY__OTLP_ENDPOINT", endpoint)
            .env("OTEL_BSP_SCHEDULE_DELAY", "100"),
    )
    .await;
    let mut client = server.connect(&token("traced")).await;
    publish_api_until_received(&server, "traced", &mut client).await;
    let trace_id = "4bf92f3577b34da6a3ce929d0e0e4736";
    let parent_id = "00f067aa0ba902b7";
    let payload = json!({
        "event": "x",
        "metadata": {"traceparent": format!("00-{trace_id}-{parent_id}-01")}
    });
    server.publish_api(&["traced"], payload.clone()).await;
    assert_eq!(client.recv_text(DEADLINE).await, payload.to_string());
    client.close().await;
    server.sigterm();
    assert!(server.wait_exit(DEADLINE * 2).await.success());

    let spans = receiver.spans();
    let names: Vec<&str> = spans.iter().filter_map(|s| s["name"].as_str()).collect();
    let connect = span_named(&spans, "websocket.connect").unwrap_or_else(|| panic!("{names:?}"));
    let validate =
        span_named(&spans, "websocket.validate_token").unwrap_or_else(|| panic!("{names:?}"));
    assert_eq!(validate["parentSpanId"], connect["spanId"]);
    assert_eq!(validate["traceId"], connect["traceId"]);
    let forward = spans
        .iter()
        .find(|s| s["name"] == "websocket.forward_message" && s["traceId"] == trace_id)
        .unwrap_or_else(|| panic!("no forward span in the payload's trace: {spans:#?}"));
    assert_eq!(forward["parentSpanId"], parent_id);
    let body = serde_json::to_string(&spans).expect("json");
    assert!(
        !body.contains(&token("traced")[..20]),
        "a token prefix reached a span"
    );
}

const REDACTION_SECRET: &str = "redaction-secret-5f1c9a7e3b2d";
const REDACTION_KEY: &str = "redaction-api-key-8c4e2a6b0d";

fn redaction_token(sub: &str, secret: &str) -> String {
    let claims = json!({"sub": sub, "exp": now() + 3600});
    sign(Algorithm::HS256, secret, &claims)
}

async fn run_session_and_collect_log(log_format: &str) -> (String, Vec<String>) {
    let mut server = Server::start(
        TestSettings::new()
            .set("auth.jwt_secret", REDACTION_SECRET)
            .set("api.publish_api_key", REDACTION_KEY)
            .env("WS__TELEMETRY__LOG_FORMAT", log_format)
            .env("RUST_LOG", "trace"),
    )
    .await;
    server.set_api_key(REDACTION_KEY);
    let good = redaction_token("redact-user", REDACTION_SECRET);
    let bad = redaction_token("redact-user", "some-other-secret-0123456789");
    let mut client = WsClient::connect(&server.ws_url(&good)).await;
    publish_api_until_received(&server, "redact-user", &mut client).await;
    let mut refused = WsClient::connect(&server.ws_url(&bad)).await;
    refused
        .expect_close_with(1008, "AUTHENTICATION_ERROR")
        .await;
    let wrong_key = server
        .post("/api/v1/publish", &[("X-API-Key", "wrong")], "{}")
        .await;
    assert_eq!(wrong_key.status, 401);
    client.close().await;
    server.sigterm();
    assert!(server.wait_exit(DEADLINE * 2).await.success());
    (server.log(), vec![good, bad])
}

/// At trace level, in JSON and in pretty format, the log of a full session (query-string token,
/// an auth failure, publish API calls) contains no token, no secret and no API key, and the
/// request line shows the token as `[redacted]`.
#[actix_web::test]
async fn logs_never_contain_tokens_secrets_or_keys() {
    for format in ["json", "pretty"] {
        let (log, tokens) = run_session_and_collect_log(format).await;
        assert!(log.len() > 1000, "{format}: suspiciously short log:\n{log}");
        assert!(
            log.contains("token=[redacted]"),
            "{format}: the request target is not logged with the token redacted"
        );
        for secret in [REDACTION_SECRET, REDACTION_KEY] {
            assert!(!log.contains(secret), "{format}: log leaks {secret}");
        }
        for token in tokens {
            let signature = token.rsplit('.').next().expect("signature");
            assert!(
                !log.contains(signature),
                "{format}: log leaks a token signature"
            );
            assert!(
                !log.contains(&token[..30]),
                "{format}: log leaks a token header"
            );
        }
    }
}
