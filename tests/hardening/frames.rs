//! Hardening regression tests: client frames on the wire (defects 1 and 3 of issue #11).
//!
//! A raw client writes exactly the bytes an attacker or a broken peer would (a header that
//! declares a huge payload and never sends it, invalid UTF-8, a fragmented ping, malformed
//! close frames) and reads the server's answer frame by frame.

use std::time::Duration;

use serde_json::Value;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;
use tokio::time::timeout;

use crate::common::*;

const MASK: [u8; 4] = [0x0A, 0xB1, 0x3C, 0x77];

/// A WebSocket client that writes raw frames.
struct RawWs {
    stream: TcpStream,
    buf: Vec<u8>,
}

impl RawWs {
    async fn connect(server: &Server, user: &str) -> Self {
        let mut stream = TcpStream::connect(("127.0.0.1", server.port()))
            .await
            .expect("connect");
        let request = format!(
            "GET /ws?token={} HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n\
             Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
             Sec-WebSocket-Version: 13\r\n\r\n",
            token(user)
        );
        stream
            .write_all(request.as_bytes())
            .await
            .expect("send upgrade");
        let mut client = Self {
            stream,
            buf: Vec::new(),
        };
        let head = client.read_http_head().await;
        assert!(head.starts_with("HTTP/1.1 101"), "upgrade refused: {head}");
        client
    }

    async fn read_http_head(&mut self) -> String {
        loop {
            if let Some(end) = self.buf.windows(4).position(|w| w == b"\r\n\r\n") {
                let head = String::from_utf8_lossy(&self.buf[..end]).into_owned();
                self.buf.drain(..end + 4);
                return head;
            }
            self.fill().await;
        }
    }

    async fn fill(&mut self) -> usize {
        let mut chunk = [0u8; 4096];
        let n = timeout(DEADLINE, self.stream.read(&mut chunk))
            .await
            .expect("the server answered within the deadline")
            .expect("read");
        self.buf.extend_from_slice(&chunk[..n]);
        n
    }

    /// Writes a masked frame header declaring `len` payload bytes.
    async fn send_header(&mut self, first: u8, len: u64) {
        let mut out = vec![first];
        match len {
            0..=125 => out.push(0x80 | len as u8),
            126..=0xFFFF => {
                out.push(0x80 | 126);
                out.extend_from_slice(&(len as u16).to_be_bytes());
            }
            _ => {
                out.push(0x80 | 127);
                out.extend_from_slice(&len.to_be_bytes());
            }
        }
        out.extend_from_slice(&MASK);
        self.send_raw(&out).await;
    }

    /// Writes a whole masked frame.
    async fn send_frame(&mut self, first: u8, payload: &[u8]) {
        self.send_header(first, payload.len() as u64).await;
        let masked: Vec<u8> = payload
            .iter()
            .enumerate()
            .map(|(i, b)| b ^ MASK[i % 4])
            .collect();
        self.send_raw(&masked).await;
    }

    /// Writes bytes the server may already have refused: once it has closed for an earlier
    /// frame, the write fails (broken pipe, reset) and what the test reads is its close frame.
    async fn send_raw(&mut self, bytes: &[u8]) {
        let _ = self.stream.write_all(bytes).await;
    }

    /// The next server frame: (first byte, payload). Server frames are unmasked.
    async fn next_frame(&mut self) -> (u8, Vec<u8>) {
        loop {
            if self.buf.len() >= 2 {
                let (len, at) = match self.buf[1] & 0x7F {
                    126 if self.buf.len() >= 4 => (
                        usize::from(u16::from_be_bytes([self.buf[2], self.buf[3]])),
                        4,
                    ),
                    126 | 127 => (usize::MAX, 0),
                    short => (usize::from(short), 2),
                };
                if at > 0 && self.buf.len() >= at + len {
                    let payload = self.buf[at..at + len].to_vec();
                    let first = self.buf[0];
                    self.buf.drain(..at + len);
                    return (first, payload);
                }
            }
            assert!(
                self.fill().await > 0,
                "connection closed without a close frame"
            );
        }
    }

    /// Skips pings and pongs; returns the close frame's code and reason as JSON.
    async fn expect_close(&mut self) -> (u16, Value) {
        loop {
            let (first, payload) = self.next_frame().await;
            if first & 0x0F != 0x8 {
                assert!(
                    first & 0x0F >= 0x9,
                    "unexpected data frame before the close"
                );
                continue;
            }
            assert!(payload.len() >= 2, "close frame without a code");
            let code = u16::from_be_bytes([payload[0], payload[1]]);
            let reason: Value = serde_json::from_slice(&payload[2..]).unwrap_or(Value::Null);
            return (code, reason);
        }
    }

    async fn expect_close_with(&mut self, code: u16, error_code: &str) {
        let (got, reason) = self.expect_close().await;
        assert_eq!(got, code, "close code (reason {reason})");
        assert_eq!(reason["error_code"], error_code, "reason {reason}");
    }
}

/// Defect 1: a header declaring far more than `server.max_frame_bytes` is refused with 1009 at
/// once, from the header alone: the payload is never sent, and the close still comes.
#[actix_web::test]
async fn a_declared_length_over_the_limit_closes_1009_before_any_payload() {
    let server =
        Server::start_in_process(TestSettings::new().set("server.max_frame_bytes", 4096)).await;
    for declared in [1u64 << 40, (1u64 << 63) - 1, 4097] {
        let mut client = RawWs::connect(&server, "declares-huge").await;
        client.send_header(0x81, declared).await;
        client.expect_close_with(1009, "VALIDATION_ERROR").await;
    }
    // A message in continuations is refused as soon as the next header would pass the limit.
    let mut client = RawWs::connect(&server, "declares-huge").await;
    client.send_frame(0x01, &[b'a'; 3000]).await;
    client.send_header(0x00, 3000).await;
    client.expect_close_with(1009, "VALIDATION_ERROR").await;

    let mut healthy = server.connect(&token("bystander")).await;
    publish_api_until_received(&server, "bystander", &mut healthy).await;
}

/// Defect 3: invalid UTF-8 in a text message (whole, or split across fragments) closes 1007;
/// a valid message split mid-character does not.
#[actix_web::test]
async fn invalid_utf8_in_text_closes_1007() {
    let server = Server::start_in_process(TestSettings::new()).await;
    let mut client = RawWs::connect(&server, "utf8").await;
    client
        .send_frame(0x81, b"\xCE\xBA\xE1\xBD\xB9\xED\xA0\x80edited")
        .await;
    client.expect_close_with(1007, "VALIDATION_ERROR").await;

    let mut client = RawWs::connect(&server, "utf8").await;
    client.send_frame(0x01, b"ok \xF4").await;
    client.send_frame(0x80, b"\x90\x80\x80").await;
    client.expect_close_with(1007, "VALIDATION_ERROR").await;

    // "€" split across two fragments, then a ping: the message is valid, the ping answered.
    let mut client = RawWs::connect(&server, "utf8").await;
    client.send_frame(0x01, b"\xE2\x82").await;
    client.send_frame(0x80, b"\xAC").await;
    client.send_frame(0x89, b"still-open").await;
    let (first, payload) = client.next_frame().await;
    assert_eq!(
        (first, payload.as_slice()),
        (0x8A, &b"still-open"[..]),
        "pong"
    );
}

/// Defect 3: control-frame and close-frame rules (RFC 6455 §5.5, §7.4): a fragmented ping is
/// not answered but refused 1002; a close frame with a one-byte payload or a code no peer may
/// send is refused 1002; a close reason that is not UTF-8 is refused 1007; a valid close is
/// answered with a normal close.
#[actix_web::test]
async fn malformed_control_frames_close_1002_or_1007() {
    let server = Server::start_in_process(TestSettings::new()).await;
    let mut client = RawWs::connect(&server, "control").await;
    client.send_frame(0x09, b"frag").await;
    client.send_frame(0x80, b"ment").await;
    client.expect_close_with(1002, "VALIDATION_ERROR").await;

    let mut client = RawWs::connect(&server, "control").await;
    client.send_frame(0x88, b"\x03").await;
    client.expect_close_with(1002, "VALIDATION_ERROR").await;

    for code in [0u16, 999, 1004, 1005, 1006, 1015, 1016, 2999, 5000, 65535] {
        let mut client = RawWs::connect(&server, "control").await;
        client.send_frame(0x88, &code.to_be_bytes()).await;
        client.expect_close_with(1002, "VALIDATION_ERROR").await;
    }

    let mut client = RawWs::connect(&server, "control").await;
    client.send_frame(0x88, b"\x03\xE8\xFF\xFE").await;
    client.expect_close_with(1007, "VALIDATION_ERROR").await;

    let mut client = RawWs::connect(&server, "control").await;
    client.send_frame(0x88, b"\x0F\xA0bye").await; // 4000: an application code
    let (code, _) = client.expect_close().await;
    assert_eq!(code, 1000, "a valid close is answered with a normal close");

    let reply = timeout(Duration::from_secs(1), async {
        server.get("/healthz").await
    })
    .await;
    assert_eq!(reply.expect("healthz answers").status, 200);
}
