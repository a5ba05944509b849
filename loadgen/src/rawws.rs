//! A bare WebSocket client over a raw TCP socket, for the stuck-reader scenario: it performs the
//! upgrade by hand with a small receive buffer and then reads nothing, so the server's writes
//! back up; later it reads whatever the kernel kept and parses the frames (counting text frames
//! and finding the close code). Also a minimal HTTP GET to scrape `/metrics`, and readers of
//! its samples.

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::{anyhow, bail, Context as _};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpSocket, TcpStream};

use crate::util::WsUrl;

/// Largest HTTP response head accepted.
const MAX_HEAD: usize = 16 * 1024;

/// An upgraded socket nobody reads, plus any bytes read past the response head.
pub struct RawClient {
    /// The socket.
    pub stream: TcpStream,
    /// Bytes after the 101 head (already the start of the frame stream).
    pub leftover: Vec<u8>,
}

/// Connects with a `rcvbuf`-byte receive buffer and completes the upgrade with `token`.
pub async fn connect(
    target: SocketAddr,
    url: &WsUrl,
    token: &str,
    rcvbuf: u32,
) -> anyhow::Result<RawClient> {
    let socket = if target.is_ipv4() {
        TcpSocket::new_v4()
    } else {
        TcpSocket::new_v6()
    }
    .context("socket")?;
    socket
        .set_recv_buffer_size(rcvbuf)
        .context("setting SO_RCVBUF")?;
    let mut stream = socket
        .connect(target)
        .await
        .with_context(|| format!("connecting to {target}"))?;
    let request = format!(
        "GET {} HTTP/1.1\r\nHost: {}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
        url.target_with_token(token),
        url.authority
    );
    stream
        .write_all(request.as_bytes())
        .await
        .context("sending the upgrade request")?;
    let mut buf = Vec::with_capacity(1024);
    let head_end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        if buf.len() > MAX_HEAD {
            bail!("upgrade response head larger than {MAX_HEAD} bytes");
        }
        let mut chunk = [0u8; 1024];
        let n = tokio::time::timeout(Duration::from_secs(10), stream.read(&mut chunk))
            .await
            .context("timed out waiting for the upgrade response")?
            .context("reading the upgrade response")?;
        if n == 0 {
            bail!("server closed the connection during the upgrade");
        }
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&buf[..head_end]);
    let status = head.lines().next().unwrap_or_default();
    if !status.contains(" 101 ") {
        bail!("upgrade refused: {status}");
    }
    Ok(RawClient {
        stream,
        leftover: buf[head_end..].to_vec(),
    })
}

/// What a raw client found when it finally read its socket.
#[derive(Debug, Default, Clone, serde::Serialize)]
pub struct FrameScan {
    /// Bytes read after the upgrade.
    pub bytes: u64,
    /// Text frames.
    pub text_frames: u64,
    /// Binary frames.
    pub binary_frames: u64,
    /// Ping, pong, continuation frames.
    pub other_frames: u64,
    /// Code of the close frame, if one arrived.
    pub close_code: Option<u16>,
    /// Reason of the close frame.
    pub close_reason: String,
    /// How the read ended: `eof`, `close frame`, `reset: …`, `idle timeout`, `time limit`.
    pub end: String,
}

/// Consumes every complete frame at the start of `buf` into `scan`.
pub fn parse_frames(buf: &mut Vec<u8>, scan: &mut FrameScan) {
    let mut at = 0;
    loop {
        let rest = &buf[at..];
        if rest.len() < 2 {
            break;
        }
        let opcode = rest[0] & 0x0f;
        let masked = rest[1] & 0x80 != 0;
        let (len, mut head) = match rest[1] & 0x7f {
            126 if rest.len() >= 4 => (u64::from(u16::from_be_bytes([rest[2], rest[3]])), 4),
            127 if rest.len() >= 10 => {
                let mut b = [0u8; 8];
                b.copy_from_slice(&rest[2..10]);
                (u64::from_be_bytes(b), 10)
            }
            126 | 127 => break,
            n => (u64::from(n), 2),
        };
        if masked {
            head += 4;
        }
        let Ok(len) = usize::try_from(len) else { break };
        if rest.len() < head + len {
            break;
        }
        let body = &rest[head..head + len];
        match opcode {
            0x1 => scan.text_frames += 1,
            0x2 => scan.binary_frames += 1,
            0x8 => {
                if body.len() >= 2 {
                    scan.close_code = Some(u16::from_be_bytes([body[0], body[1]]));
                    scan.close_reason = String::from_utf8_lossy(&body[2..]).into_owned();
                } else {
                    scan.close_code = Some(1005);
                }
            }
            _ => scan.other_frames += 1,
        }
        at += head + len;
    }
    buf.drain(..at);
}

/// Reads the socket until EOF, an error, `idle` without data, or `limit` in total, parsing
/// frames as they come.
pub async fn read_all(client: RawClient, idle: Duration, limit: Duration) -> FrameScan {
    let RawClient {
        mut stream,
        leftover,
    } = client;
    let mut scan = FrameScan {
        bytes: leftover.len() as u64,
        ..FrameScan::default()
    };
    let mut buf = leftover;
    parse_frames(&mut buf, &mut scan);
    let deadline = tokio::time::Instant::now() + limit;
    let mut chunk = vec![0u8; 64 * 1024];
    scan.end = loop {
        if tokio::time::Instant::now() >= deadline {
            break "time limit".to_owned();
        }
        match tokio::time::timeout(idle, stream.read(&mut chunk)).await {
            Err(_) => break "idle timeout".to_owned(),
            Ok(Ok(0)) => break "eof".to_owned(),
            Ok(Ok(n)) => {
                scan.bytes += n as u64;
                buf.extend_from_slice(&chunk[..n]);
                parse_frames(&mut buf, &mut scan);
                if scan.close_code.is_some() {
                    break "close frame".to_owned();
                }
            }
            Ok(Err(e)) => break format!("reset: {e}"),
        }
    };
    scan
}

/// `GET path` over HTTP/1.0; the body of a 200 answer.
pub async fn http_get(target: SocketAddr, authority: &str, path: &str) -> anyhow::Result<String> {
    let fetch = async {
        let mut stream = TcpStream::connect(target)
            .await
            .with_context(|| format!("connecting to {target}"))?;
        let request =
            format!("GET {path} HTTP/1.0\r\nHost: {authority}\r\nConnection: close\r\n\r\n");
        stream
            .write_all(request.as_bytes())
            .await
            .context("sending an HTTP request")?;
        let mut response = Vec::new();
        stream
            .read_to_end(&mut response)
            .await
            .context("reading an HTTP response")?;
        Ok::<_, anyhow::Error>(response)
    };
    let response = tokio::time::timeout(Duration::from_secs(10), fetch)
        .await
        .map_err(|_| anyhow!("GET {path}: no answer within 10 s"))??;
    let text = String::from_utf8_lossy(&response).into_owned();
    let (head, body) = text
        .split_once("\r\n\r\n")
        .ok_or_else(|| anyhow!("GET {path}: malformed response"))?;
    let status = head.lines().next().unwrap_or_default();
    if !status.contains(" 200 ") {
        bail!("GET {path}: {status}");
    }
    Ok(body.to_owned())
}

/// The value of the Prometheus sample `name` whose labels contain `label` (e.g.
/// `code="4009"`; empty: a sample without labels), 0 when absent.
pub fn metric(text: &str, name: &str, label: &str) -> f64 {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.rsplit_once(' '))
        .filter(|(series, _)| {
            let (n, labels) = series.split_once('{').unwrap_or((series, ""));
            n == name && (label.is_empty() || labels.contains(label))
        })
        .filter_map(|(_, v)| v.parse::<f64>().ok())
        .sum()
}

/// Every sample of the Prometheus metrics in `names`, keyed `name{labels}` (or `name`).
pub fn samples(text: &str, names: &[&str]) -> std::collections::BTreeMap<String, f64> {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.rsplit_once(' '))
        .filter(|(series, _)| {
            let name = series.split_once('{').map_or(*series, |(n, _)| n);
            names.contains(&name)
        })
        .filter_map(|(series, v)| Some((series.to_owned(), v.parse::<f64>().ok()?)))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_frames_across_chunks() {
        let mut scan = FrameScan::default();
        let mut buf = vec![0x81, 3, b'a', b'b', b'c', 0x81, 126, 0, 200];
        parse_frames(&mut buf, &mut scan);
        assert_eq!(scan.text_frames, 1);
        assert_eq!(buf.len(), 4);
        buf.extend(std::iter::repeat_n(b'x', 200));
        let mut close = vec![0x88, 4];
        close.extend_from_slice(&4009u16.to_be_bytes());
        close.extend_from_slice(b"{}");
        buf.extend(close);
        parse_frames(&mut buf, &mut scan);
        assert_eq!(scan.text_frames, 2);
        assert_eq!(scan.close_code, Some(4009));
        assert_eq!(scan.close_reason, "{}");
        assert!(buf.is_empty());
    }

    #[test]
    fn reads_prometheus_samples() {
        let text = "# HELP x\nws_connections_closed_total{code=\"4009\"} 2\nws_connections_closed_total{code=\"1012\"} 5\nup 1\n";
        assert_eq!(
            metric(text, "ws_connections_closed_total", "code=\"4009\""),
            2.0
        );
        assert_eq!(metric(text, "up", ""), 1.0);
        assert_eq!(metric(text, "missing", ""), 0.0);
        let s = samples(text, &["ws_connections_closed_total", "up"]);
        assert_eq!(s.len(), 3);
        assert_eq!(s["ws_connections_closed_total{code=\"1012\"}"], 5.0);
        assert_eq!(s["up"], 1.0);
    }
}
