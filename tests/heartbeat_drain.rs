//! End-to-end tests of the heartbeat and the drain, measured on the wire: the ping cadence, the
//! 4008 close of a client that never answers pings (seen by a hand-written client that completes
//! the upgrade and then only reads raw frames), a quiet client that answers pings and so is never
//! idle, and a SIGTERM drain of 200 sockets with the last published message flushed before each
//! 1012 close and the closes spread over the drain window. Real sockets; the heartbeat tests run
//! the server in-process, the drain the real binary (it is started by SIGTERM and ends in an exit).

mod common;

use std::time::{Duration, Instant};

use common::*;
use futures_util::future::join_all;
use futures_util::StreamExt as _;
use serde_json::Value;
use tokio::io::{AsyncBufReadExt as _, AsyncReadExt as _, AsyncWriteExt as _, BufReader};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::Message;

// ---------------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------------

/// A tokio-tungstenite client whose every frame (pings included) the test sees. Reading answers
/// pings: tungstenite queues the pong and writes it at the start of the next read.
async fn connect_raw_ws(server: &Server, user: &str) -> WsStream {
    let url = server.ws_url(&token(user));
    let (ws, _) = tokio::time::timeout(DEADLINE, tokio_tungstenite::connect_async(url))
        .await
        .expect("WebSocket handshake timed out")
        .expect("WebSocket handshake failed");
    ws
}

/// The next message of `ws` within `deadline` (`None`: nothing arrived), panicking when the stream
/// fails or ends.
async fn next_message(ws: &mut WsStream, deadline: Duration) -> Option<Message> {
    match tokio::time::timeout(deadline, ws.next()).await {
        Err(_) => None,
        Ok(Some(Ok(message))) => Some(message),
        Ok(Some(Err(e))) => panic!("WebSocket read failed: {e}"),
        Ok(None) => panic!("WebSocket stream ended"),
    }
}

/// Publishes probes through the API until one reaches `ws` (proving the session has joined its
/// hub), skipping pings; a later probe that is still in flight is read off by a final marker.
async fn probe_until_received(server: &Server, user: &str, ws: &mut WsStream) {
    let prefix = format!("probe-{user}-");
    let start = Instant::now();
    let mut attempt = 0u32;
    'probing: loop {
        assert!(
            start.elapsed() < DEADLINE,
            "no probe reached {user} within {DEADLINE:?}"
        );
        attempt += 1;
        server
            .publish_api(&[user], Value::String(format!("{prefix}{attempt}")))
            .await;
        let window = Instant::now();
        while window.elapsed() < Duration::from_millis(100) {
            match next_message(ws, Duration::from_millis(100)).await {
                Some(Message::Text(text)) if text.as_str().starts_with(&prefix) => break 'probing,
                Some(Message::Ping(_) | Message::Pong(_)) => {}
                Some(other) => panic!("while probing {user}: unexpected {other:?}"),
                None => break,
            }
        }
    }
    let marker = format!("{prefix}end");
    server
        .publish_api(&[user], Value::String(marker.clone()))
        .await;
    loop {
        match next_message(ws, DEADLINE).await {
            Some(Message::Text(text)) if text.as_str() == marker => return,
            Some(Message::Text(text)) if text.as_str().starts_with(&prefix) => {}
            Some(Message::Ping(_) | Message::Pong(_)) => {}
            Some(other) => panic!("while probing {user}: unexpected {other:?}"),
            None => panic!("probe marker did not reach {user} within {DEADLINE:?}"),
        }
    }
}

/// Asserts a close reason is the contract's JSON (at most 123 bytes, valid JSON with
/// `error_code`, `message`, `correlation_id`) with `error_code`; returns it parsed.
fn assert_close_reason(code: u16, reason: &str, error_code: &str) -> Value {
    assert!(
        reason.len() <= MAX_CLOSE_REASON,
        "close {code} reason is {} bytes (max {MAX_CLOSE_REASON}): {reason}",
        reason.len()
    );
    let json: Value = serde_json::from_str(reason)
        .unwrap_or_else(|e| panic!("close {code} reason is not JSON ({e}): {reason:?}"));
    for field in ["error_code", "message", "correlation_id"] {
        assert!(
            json.get(field).is_some(),
            "close {code} reason lacks `{field}`: {reason}"
        );
    }
    assert_eq!(
        json["error_code"], error_code,
        "close {code} reason {reason}"
    );
    json
}

/// One server frame as read by [`RawClient`].
#[derive(Debug)]
struct RawFrame {
    fin: bool,
    opcode: u8,
    payload: Vec<u8>,
}

const OP_CLOSE: u8 = 0x8;
const OP_PING: u8 = 0x9;

/// A client that completes the WebSocket upgrade by hand and then only reads raw frames: it never
/// answers a ping and never sends a frame of its own.
struct RawClient {
    stream: BufReader<TcpStream>,
}

impl RawClient {
    /// Sends the upgrade request for `?token=` and checks the 101 answer (status, `Upgrade`,
    /// `Sec-WebSocket-Accept` derived from our key).
    async fn connect(server: &Server, token: &str) -> Self {
        let key = "dGhlIHNhbXBsZSBub25jZQ==";
        let handshake = async {
            let mut tcp = TcpStream::connect(("127.0.0.1", server.port()))
                .await
                .expect("TCP connect");
            let request = format!(
                "GET /ws?token={token} HTTP/1.1\r\n\
                 Host: 127.0.0.1:{port}\r\n\
                 Upgrade: websocket\r\n\
                 Connection: Upgrade\r\n\
                 Sec-WebSocket-Key: {key}\r\n\
                 Sec-WebSocket-Version: 13\r\n\r\n",
                port = server.port()
            );
            tcp.write_all(request.as_bytes())
                .await
                .expect("write upgrade");
            let mut stream = BufReader::new(tcp);
            let mut head = Vec::new();
            loop {
                let mut line = String::new();
                let n = stream.read_line(&mut line).await.expect("read response");
                assert!(n > 0, "connection closed during the upgrade: {head:?}");
                if line == "\r\n" {
                    break;
                }
                head.push(line.trim_end().to_owned());
            }
            (stream, head)
        };
        let (stream, head) = tokio::time::timeout(DEADLINE, handshake)
            .await
            .expect("raw upgrade timed out");
        assert!(
            head.first().is_some_and(|status| status.contains(" 101 ")),
            "upgrade not answered 101: {head:?}"
        );
        let header = |name: &str| {
            head.iter().skip(1).find_map(|line| {
                let (k, v) = line.split_once(':')?;
                k.trim()
                    .eq_ignore_ascii_case(name)
                    .then(|| v.trim().to_owned())
            })
        };
        assert!(
            header("upgrade").is_some_and(|v| v.eq_ignore_ascii_case("websocket")),
            "no Upgrade: websocket in {head:?}"
        );
        assert_eq!(
            header("sec-websocket-accept").as_deref(),
            Some(derive_accept_key(key.as_bytes()).as_str()),
            "Sec-WebSocket-Accept in {head:?}"
        );
        Self { stream }
    }

    /// Reads one frame (server frames are unmasked).
    async fn read_frame(&mut self) -> std::io::Result<RawFrame> {
        let mut head = [0u8; 2];
        self.stream.read_exact(&mut head).await?;
        let fin = head[0] & 0x80 != 0;
        let opcode = head[0] & 0x0f;
        assert_eq!(head[1] & 0x80, 0, "server frames must not be masked");
        let len = match head[1] & 0x7f {
            126 => u64::from(self.stream.read_u16().await?),
            127 => self.stream.read_u64().await?,
            n => u64::from(n),
        };
        assert!(len <= 1 << 20, "implausible frame length {len}");
        let mut payload = vec![0u8; len as usize];
        self.stream.read_exact(&mut payload).await?;
        Ok(RawFrame {
            fin,
            opcode,
            payload,
        })
    }
}

// ---------------------------------------------------------------------------------------------
// Heartbeat
// ---------------------------------------------------------------------------------------------

/// The server pings every limits.heartbeat_interval_s: with 1 s, consecutive pings arrive between
/// 0.8 s and 1.6 s apart (three gaps measured).
#[actix_web::test]
async fn pings_arrive_every_heartbeat_interval() {
    const GAPS: usize = 3;
    let server = Server::start_in_process(
        TestSettings::new()
            .set("limits.heartbeat_interval_s", 1)
            .set("limits.heartbeat_timeout_s", 5)
            .set("limits.idle_timeout_s", 30),
    )
    .await;
    let mut ws = connect_raw_ws(&server, "cadence").await;
    let mut pings = Vec::new();
    let start = Instant::now();
    let deadline = Duration::from_secs(GAPS as u64 + 4);
    while pings.len() < GAPS + 1 {
        let left = deadline.saturating_sub(start.elapsed());
        match next_message(&mut ws, left).await {
            Some(Message::Ping(_)) => pings.push(Instant::now()),
            Some(other) => panic!("expected only pings, got {other:?} after {pings:?}"),
            None => panic!(
                "only {} pings within {deadline:?} (interval 1 s)",
                pings.len()
            ),
        }
    }
    let gaps: Vec<Duration> = pings.windows(2).map(|w| w[1] - w[0]).collect();
    println!("ping gaps: {gaps:?}");
    for gap in &gaps {
        assert!(
            (Duration::from_millis(800)..=Duration::from_millis(1600)).contains(gap),
            "ping gap {gap:?} outside [0.8 s, 1.6 s] (all gaps: {gaps:?})"
        );
    }
}

/// A client that completes the upgrade but never answers a ping is closed with 4008 TIMEOUT
/// ("heartbeat lost") about heartbeat_timeout_s after the first ping, long before the 30 s idle
/// timeout: the heartbeat, not the idle timer, closed it.
#[actix_web::test]
async fn unanswered_ping_closes_4008() {
    let server = Server::start_in_process(
        TestSettings::new()
            .set("limits.heartbeat_interval_s", 1)
            .set("limits.heartbeat_timeout_s", 1)
            .set("limits.idle_timeout_s", 30),
    )
    .await;
    let mut raw = RawClient::connect(&server, &token("mute")).await;
    let connected = Instant::now();
    let mut first_ping: Option<Instant> = None;
    let close = tokio::time::timeout(DEADLINE, async {
        loop {
            let frame = raw.read_frame().await.expect("read a server frame");
            assert!(frame.fin, "unexpected fragmented frame {frame:?}");
            match frame.opcode {
                OP_PING => {
                    first_ping.get_or_insert_with(Instant::now);
                }
                OP_CLOSE => return (frame, Instant::now()),
                _ => panic!("unexpected frame before the close: {frame:?}"),
            }
        }
    })
    .await;
    let (frame, closed_at) = close.unwrap_or_else(|_| {
        panic!("no close frame within {DEADLINE:?} of the upgrade (first ping: {first_ping:?})")
    });
    let first_ping = first_ping.expect("a close arrived before any ping");
    println!(
        "first ping after {:?}, close {:?} after it",
        first_ping - connected,
        closed_at - first_ping
    );
    assert!(
        frame.payload.len() >= 2,
        "close frame without a code: {frame:?}"
    );
    let code = u16::from_be_bytes([frame.payload[0], frame.payload[1]]);
    let reason = std::str::from_utf8(&frame.payload[2..]).expect("close reason is UTF-8");
    assert_eq!(code, 4008, "close code, reason {reason}");
    let json = assert_close_reason(code, reason, "TIMEOUT");
    assert!(
        json["message"]
            .as_str()
            .is_some_and(|m| m.contains("heartbeat")),
        "4008 should be for the heartbeat, not the idle timer: {reason}"
    );
    assert!(
        closed_at - first_ping >= Duration::from_millis(800),
        "closed {:?} after the first ping, before heartbeat_timeout_s (1 s)",
        closed_at - first_ping
    );
}

/// A browser-like client that answers pings but sends nothing else is not idle: with
/// idle_timeout_s = 2 and pings every second it stays open for 4 s (twice the idle timeout) and
/// then still receives a message. Also shows tokio-tungstenite flushes its pongs while reading.
#[actix_web::test]
async fn pong_answering_client_is_not_idle() {
    const QUIET: Duration = Duration::from_secs(4);
    let server = Server::start_in_process(
        TestSettings::new()
            .set("limits.idle_timeout_s", 2)
            .set("limits.heartbeat_interval_s", 1)
            .set("limits.heartbeat_timeout_s", 5),
    )
    .await;
    let mut ws = connect_raw_ws(&server, "quiet-tab").await;
    probe_until_received(&server, "quiet-tab", &mut ws).await;

    // The bounded wait is the assertion: nothing but pings for twice the idle timeout.
    let start = Instant::now();
    let mut pings = 0;
    while start.elapsed() < QUIET {
        match next_message(&mut ws, QUIET.saturating_sub(start.elapsed())).await {
            Some(Message::Ping(_)) => pings += 1,
            Some(other) => panic!(
                "after {:?} of answering pings only: {other:?}",
                start.elapsed()
            ),
            None => break,
        }
    }
    assert!(pings >= 2, "only {pings} pings in {QUIET:?} (interval 1 s)");

    server
        .publish_api(&["quiet-tab"], Value::String("still here".into()))
        .await;
    loop {
        match next_message(&mut ws, DEADLINE).await {
            Some(Message::Text(text)) => {
                assert_eq!(text.as_str(), "still here");
                break;
            }
            Some(Message::Ping(_)) => {}
            Some(other) => panic!("expected the message, got {other:?}"),
            None => panic!("message not received within {DEADLINE:?}"),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Drain
// ---------------------------------------------------------------------------------------------

/// What one drained client saw.
#[derive(Debug)]
enum DrainSeen {
    /// The message, then a close frame at this instant with this code and reason.
    Closed {
        at: Instant,
        code: u16,
        reason: String,
    },
    /// Anything else (the close before the message, a missing close, a stray frame).
    Failed(String),
}

/// Reads what a client sees during the drain: the expected message, then the close.
async fn observe_drain(mut client: WsClient, expected: String, deadline: Duration) -> DrainSeen {
    match client.next_frame(deadline).await {
        Some(Frame::Text(text)) if text == expected => {}
        other => {
            return DrainSeen::Failed(format!(
                "expected {expected:?} before the close, got {other:?}"
            ))
        }
    }
    let outcome = match client.next_frame(deadline).await {
        Some(Frame::Close(Some((code, reason)))) => DrainSeen::Closed {
            at: Instant::now(),
            code,
            reason,
        },
        other => DrainSeen::Failed(format!(
            "got {expected:?}, then {other:?} instead of a close"
        )),
    };
    // Complete the closing handshake (tungstenite answers the close while reading).
    let _ = client.next_frame(Duration::from_secs(2)).await;
    outcome
}

/// SIGTERM with 200 open sockets: a message published to every user just before the signal
/// reaches each socket before its close; every close is 1012 SERVICE_UNAVAILABLE with a valid
/// JSON reason; the closes are spread over the drain window (at least 1 s from first to last, at
/// most 25% in any 0.5 s); /readyz answers 503 while sockets are still open; the process exits 0
/// within drain_timeout_s + 2 s.
#[actix_web::test]
async fn sigterm_flushes_then_spreads_1012_closes() {
    const USERS: usize = 200;
    const DRAIN_TIMEOUT_S: u64 = 4;
    const BUCKET: Duration = Duration::from_millis(500);
    let mut server =
        Server::start(TestSettings::new().set("shutdown.drain_timeout_s", DRAIN_TIMEOUT_S)).await;
    let users: Vec<String> = (0..USERS).map(|i| format!("drain-{i:03}")).collect();
    let mut clients = Vec::with_capacity(USERS);
    for user in &users {
        clients.push(server.connect(&token(user)).await);
    }
    // Every session has been admitted by its hub (so the message has a session to go to).
    let accepted = r#"ws_connections_opened_total{outcome="accepted"}"#;
    wait_until(DEADLINE, "every session admitted", || async {
        server.metric(accepted).await == Some(USERS as f64)
    })
    .await;

    // One request publishes the same message to all 200 users; the signal follows at once.
    // The in-process broker has routed it to the directory shards when the request returns, so
    // it is already queued for every session when the drain starts.
    let user_refs: Vec<&str> = users.iter().map(String::as_str).collect();
    let message = "last-before-drain".to_owned();
    server
        .publish_api(&user_refs, Value::String(message.clone()))
        .await;
    let sigterm_at = Instant::now();
    server.sigterm();

    let per_client = Duration::from_secs(DRAIN_TIMEOUT_S + 2);
    let observers = join_all(
        clients
            .into_iter()
            .map(|client| observe_drain(client, message.clone(), per_client)),
    );
    let readiness = async {
        server
            .wait_readyz(503, DEADLINE)
            .await
            .assert_error(503, "SERVICE_UNAVAILABLE");
        Instant::now()
    };
    let (outcomes, ready_503_at) = futures_util::join!(observers, readiness);

    let mut failures = Vec::new();
    let mut closes = Vec::new();
    for (user, outcome) in users.iter().zip(&outcomes) {
        match outcome {
            DrainSeen::Closed { at, code, reason } => {
                if *code != 1012 {
                    failures.push(format!("{user}: close {code} {reason}"));
                } else {
                    assert_close_reason(*code, reason, "SERVICE_UNAVAILABLE");
                }
                closes.push(*at - sigterm_at);
            }
            DrainSeen::Failed(why) => failures.push(format!("{user}: {why}")),
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {USERS} sockets misbehaved during the drain:\n{}",
        failures.len(),
        failures.join("\n")
    );

    closes.sort();
    let first = closes[0];
    let last = closes[closes.len() - 1];
    let mut histogram = vec![0usize; (last.as_nanos() / BUCKET.as_nanos()) as usize + 1];
    for close in &closes {
        histogram[(close.as_nanos() / BUCKET.as_nanos()) as usize] += 1;
    }
    println!("closes after SIGTERM: first {first:?}, last {last:?}");
    for (i, count) in histogram.iter().enumerate() {
        let from = BUCKET * i as u32;
        println!(
            "  [{:>4.1} s, {:>4.1} s): {count:>3} {}",
            from.as_secs_f64(),
            (from + BUCKET).as_secs_f64(),
            "#".repeat(*count / 2)
        );
    }
    println!(
        "/readyz 503 seen {:?} after SIGTERM",
        ready_503_at - sigterm_at
    );

    assert!(
        ready_503_at - sigterm_at < last,
        "/readyz turned 503 only after the last socket closed"
    );
    assert!(
        last - first >= Duration::from_secs(1),
        "closes not spread: first {first:?}, last {last:?} after SIGTERM"
    );
    let max = histogram.iter().copied().max().unwrap_or(0);
    assert!(
        max * 4 <= USERS,
        "{max} of {USERS} closes fell in one 0.5 s bucket: {histogram:?}"
    );

    let exit_deadline =
        Duration::from_secs(DRAIN_TIMEOUT_S + 2).saturating_sub(sigterm_at.elapsed());
    let status = server.wait_exit(exit_deadline).await;
    println!(
        "exited {:?} after SIGTERM with {status}",
        sigterm_at.elapsed()
    );
    for line in server.log().lines() {
        if ["drain started", "drain deadline", "shutting down"]
            .iter()
            .any(|event| line.contains(event))
        {
            println!("server: {line}");
        }
    }
    assert!(status.success(), "drained server exited with {status}");
}
