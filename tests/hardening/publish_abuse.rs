//! Hardening regression tests: publish_abuse (issue #11, defect 4). The publish API must check
//! the key from the headers before it reads a body, refuse a body over the limit (declared or
//! streamed) with 413 and the error JSON, and bound how long a whole body may take (408). Each
//! test speaks raw HTTP/1.1 over TCP so that it controls when (and whether) body bytes are sent.

use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::tcp::OwnedWriteHalf;
use tokio::net::TcpStream;

use crate::common::{HttpReply, Server, TestSettings, API_KEY, DEADLINE};

const PUBLISH: &str = "/api/v1/publish";
/// The largest publish body accepted (actix's default payload limit, kept).
const MAX_BODY_BYTES: usize = 256 * 1024;

/// Opens a connection and sends a publish request head with `extra` header lines.
async fn send_head(server: &Server, extra: &[&str]) -> TcpStream {
    let mut stream = TcpStream::connect(("127.0.0.1", server.port()))
        .await
        .expect("connect to the server");
    let mut head = format!("POST {PUBLISH} HTTP/1.1\r\nHost: 127.0.0.1\r\n");
    for line in extra {
        head.push_str(line);
        head.push_str("\r\n");
    }
    head.push_str("Content-Type: application/json\r\n\r\n");
    stream
        .write_all(head.as_bytes())
        .await
        .expect("send the request head");
    stream
}

/// Reads one HTTP/1.1 response with a `Content-Length` body; panics after `deadline`.
async fn read_response<R: AsyncRead + Unpin>(reader: &mut R, deadline: Duration) -> HttpReply {
    let reading = async {
        let mut buf = Vec::new();
        loop {
            if let Some(reply) = parse_response(&buf) {
                return reply;
            }
            let mut chunk = [0u8; 4096];
            match reader.read(&mut chunk).await {
                Ok(0) => panic!(
                    "connection closed before a whole response: {:?}",
                    String::from_utf8_lossy(&buf)
                ),
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
                Err(e) => panic!("reading the response failed: {e}"),
            }
        }
    };
    tokio::time::timeout(deadline, reading)
        .await
        .unwrap_or_else(|_| panic!("no HTTP response within {deadline:?}"))
}

/// A complete response in `buf`, if there is one yet.
fn parse_response(buf: &[u8]) -> Option<HttpReply> {
    let end = buf.windows(4).position(|w| w == b"\r\n\r\n")?;
    let head = String::from_utf8_lossy(&buf[..end]);
    let mut lines = head.split("\r\n");
    let status = lines.next()?.split(' ').nth(1)?.parse().ok()?;
    let headers: Vec<(String, String)> = lines
        .filter_map(|line| line.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    let length: usize = headers
        .iter()
        .find(|(k, _)| k == "content-length")
        .and_then(|(_, v)| v.parse().ok())?;
    let body = buf.get(end + 4..end + 4 + length)?.to_vec();
    Some(HttpReply {
        status,
        headers,
        body,
    })
}

/// Asserts the server closes the connection (end of stream or reset) within [`DEADLINE`],
/// although the client never sent the body it announced.
async fn assert_closed<R: AsyncRead + Unpin>(reader: &mut R) {
    let closed = async {
        let mut sink = [0u8; 4096];
        loop {
            match reader.read(&mut sink).await {
                Ok(0) | Err(_) => return,
                Ok(_) => continue,
            }
        }
    };
    tokio::time::timeout(DEADLINE, closed)
        .await
        .unwrap_or_else(|_| panic!("the server kept the connection open for {DEADLINE:?}"));
}

/// Writes `chunk` every `every` until `total` bytes are written or the server stops reading.
async fn trickle(mut writer: OwnedWriteHalf, chunk: Vec<u8>, total: usize, every: Duration) {
    let mut written = 0;
    while written < total {
        if writer.write_all(&chunk).await.is_err() {
            return;
        }
        written += chunk.len();
        tokio::time::sleep(every).await;
    }
}

/// A keyless (or wrongly keyed) POST announcing a 250,000-byte body is answered 401 with the
/// error JSON before a single body byte is sent, and the connection is closed.
#[actix_web::test]
async fn unkeyed_post_is_refused_before_its_body_arrives() {
    let server = Server::start_in_process(TestSettings::new()).await;
    for key_header in [
        None,
        Some("X-API-Key: wrong-key"),
        Some("Authorization: Bearer nope"),
    ] {
        let mut headers = vec!["Content-Length: 250000"];
        headers.extend(key_header);
        let mut stream = send_head(&server, &headers).await;
        let reply = read_response(&mut stream, DEADLINE).await;
        reply.assert_error(401, "AUTHENTICATION_ERROR");
        assert_eq!(reply.header("connection"), Some("close"), "{key_header:?}");
        assert_closed(&mut stream).await;
    }
}

/// A keyed body slower than `api.body_timeout_s` is answered 408 with the error JSON (code
/// TIMEOUT) once the bound passes, while the client is still sending, and the connection closes.
#[actix_web::test]
async fn keyed_body_slower_than_the_bound_is_answered_408() {
    let server =
        Server::start_in_process(TestSettings::new().env("WS__API__BODY_TIMEOUT_S", "1")).await;
    let key = format!("X-API-Key: {API_KEY}");
    let stream = send_head(&server, &[&key, "Content-Length: 2000"]).await;
    let (mut reader, writer) = stream.into_split();
    // 20 bytes every 100 ms: the whole body would take 10 s.
    let sender = tokio::spawn(trickle(
        writer,
        vec![b' '; 20],
        2000,
        Duration::from_millis(100),
    ));
    let reply = read_response(&mut reader, Duration::from_secs(4)).await;
    reply.assert_error(408, "TIMEOUT");
    assert_closed(&mut reader).await;
    sender.abort();
}

/// A keyed POST declaring a body over the limit is answered 413 with the error JSON before any
/// body byte is sent.
#[actix_web::test]
async fn declared_oversized_body_is_refused_413_before_it_is_sent() {
    let server = Server::start_in_process(TestSettings::new()).await;
    let key = format!("X-API-Key: {API_KEY}");
    let length = format!("Content-Length: {}", MAX_BODY_BYTES + 1);
    let mut stream = send_head(&server, &[&key, &length]).await;
    let reply = read_response(&mut stream, DEADLINE).await;
    reply.assert_error(413, "VALIDATION_ERROR");
    assert_closed(&mut stream).await;
}

/// A keyed chunked body that grows past the limit is answered 413 with the error JSON.
#[actix_web::test]
async fn chunked_oversized_body_is_refused_413() {
    let server = Server::start_in_process(TestSettings::new()).await;
    let key = format!("X-API-Key: {API_KEY}");
    let stream = send_head(&server, &[&key, "Transfer-Encoding: chunked"]).await;
    let (mut reader, writer) = stream.into_split();
    // 16 KiB chunks, one more than the limit holds.
    let size = 16 * 1024;
    let mut chunk = format!("{size:x}\r\n").into_bytes();
    chunk.extend(std::iter::repeat_n(b' ', size));
    chunk.extend_from_slice(b"\r\n");
    let total = (MAX_BODY_BYTES / size + 1) * chunk.len();
    let sender = tokio::spawn(trickle(writer, chunk, total, Duration::from_millis(5)));
    let reply = read_response(&mut reader, DEADLINE).await;
    reply.assert_error(413, "VALIDATION_ERROR");
    assert_closed(&mut reader).await;
    sender.abort();
}
