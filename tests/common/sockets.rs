//! The client side of WebSockets: connecting with a token presented each way, reading frames
//! with deadlines, asserting the contract's close frames, and probing until a publish arrives.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use futures_util::{SinkExt as _, StreamExt as _};
use serde_json::Value;
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest as _;
use tokio_tungstenite::tungstenite::http::header::{
    HeaderName, HeaderValue, AUTHORIZATION, SEC_WEBSOCKET_PROTOCOL,
};
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::{self, Message};
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

use super::server::Server;
use super::{DEADLINE, MAX_CLOSE_REASON};

/// The client side of one WebSocket.
pub type WsStream = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// What the next read from a socket gave.
#[derive(Debug)]
pub enum Frame {
    /// A text message.
    Text(String),
    /// A binary message.
    Binary(Vec<u8>),
    /// A close frame (`None`: no code).
    Close(Option<(u16, String)>),
    /// The stream ended or failed without a close frame.
    Ended(String),
}

/// A closed socket's code, raw reason and the reason parsed as JSON.
#[derive(Debug)]
pub struct Closed {
    /// Close code.
    pub code: u16,
    /// Raw reason.
    pub reason: String,
    /// The reason parsed as JSON.
    pub json: Value,
}

/// A connected WebSocket client.
pub struct WsClient {
    ws: WsStream,
    /// The subprotocol the 101 answer selected, if any.
    pub protocol: Option<String>,
}

/// How a token is presented on the upgrade.
#[derive(Clone, Copy, Debug)]
pub enum TokenVia {
    /// `?token=`.
    Query,
    /// `Sec-WebSocket-Protocol: bearer, <JWT>`.
    Subprotocol,
    /// `Authorization: Bearer <JWT>`.
    Header,
}

impl WsClient {
    /// Connects to `url` (panics if the handshake fails).
    pub async fn connect(url: &str) -> Self {
        Self::try_connect(url, None, None)
            .await
            .unwrap_or_else(|e| panic!("WebSocket handshake with {url} failed: {e}"))
    }

    /// Connects to the server with `token` presented `via`.
    pub async fn connect_via(server: &Server, token: &str, via: TokenVia) -> Self {
        let result = match via {
            TokenVia::Query => Self::try_connect(&server.ws_url(token), None, None).await,
            TokenVia::Subprotocol => {
                let value = format!("bearer, {token}");
                Self::try_connect(&server.ws_base(), Some(&value), None).await
            }
            TokenVia::Header => {
                let value = format!("Bearer {token}");
                Self::try_connect(&server.ws_base(), None, Some(&value)).await
            }
        };
        result.unwrap_or_else(|e| panic!("WebSocket handshake ({via:?}) failed: {e}"))
    }

    /// Connects to `url`, with an optional `Sec-WebSocket-Protocol` and `Authorization` header.
    pub async fn try_connect(
        url: &str,
        protocol: Option<&str>,
        authorization: Option<&str>,
    ) -> Result<Self, tungstenite::Error> {
        let mut headers = Vec::new();
        if let Some(protocol) = protocol {
            headers.push((SEC_WEBSOCKET_PROTOCOL.as_str(), protocol));
        }
        if let Some(authorization) = authorization {
            headers.push((AUTHORIZATION.as_str(), authorization));
        }
        Self::try_connect_with_headers(url, &headers).await
    }

    /// Connects to `url` with extra request headers.
    pub async fn try_connect_with_headers(
        url: &str,
        headers: &[(&str, &str)],
    ) -> Result<Self, tungstenite::Error> {
        let mut request = url.into_client_request()?;
        for (name, value) in headers {
            let name = HeaderName::from_bytes(name.as_bytes()).expect("header name");
            let value = HeaderValue::from_str(value).expect("header value");
            request.headers_mut().insert(name, value);
        }
        let connecting = tokio_tungstenite::connect_async(request);
        let (ws, response) = tokio::time::timeout(DEADLINE, connecting)
            .await
            .unwrap_or_else(|_| panic!("WebSocket handshake with {url} took over {DEADLINE:?}"))?;
        let protocol = response
            .headers()
            .get(SEC_WEBSOCKET_PROTOCOL)
            .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned());
        Ok(Self { ws, protocol })
    }

    /// The next text, binary or close frame (pings and pongs are skipped; tungstenite answers
    /// pings by itself), or `None` after `deadline`.
    pub async fn next_frame(&mut self, deadline: Duration) -> Option<Frame> {
        let read = async {
            loop {
                match self.ws.next().await {
                    None => return Frame::Ended("stream ended".into()),
                    Some(Err(e)) => return Frame::Ended(e.to_string()),
                    Some(Ok(Message::Text(text))) => return Frame::Text(text.as_str().to_owned()),
                    Some(Ok(Message::Binary(bytes))) => return Frame::Binary(bytes.to_vec()),
                    Some(Ok(Message::Close(frame))) => {
                        return Frame::Close(
                            frame.map(|f| (u16::from(f.code), f.reason.as_str().to_owned())),
                        )
                    }
                    Some(Ok(_)) => continue,
                }
            }
        };
        tokio::time::timeout(deadline, read).await.ok()
    }

    /// The next message, which must be a text frame.
    pub async fn recv_text(&mut self, deadline: Duration) -> String {
        match self.next_frame(deadline).await {
            Some(Frame::Text(text)) => text,
            Some(other) => panic!("expected a text frame, got {other:?}"),
            None => panic!("no text frame within {deadline:?}"),
        }
    }

    /// The next message, which must be a binary frame.
    pub async fn recv_binary(&mut self, deadline: Duration) -> Vec<u8> {
        match self.next_frame(deadline).await {
            Some(Frame::Binary(bytes)) => bytes,
            Some(other) => panic!("expected a binary frame, got {other:?}"),
            None => panic!("no binary frame within {deadline:?}"),
        }
    }

    /// The next message must be a close frame with a code and a reason that is valid JSON of at
    /// most 123 bytes holding `error_code`, `message` and `correlation_id`.
    pub async fn expect_close(&mut self, deadline: Duration) -> Closed {
        let (code, reason) = match self.next_frame(deadline).await {
            Some(Frame::Close(Some(close))) => close,
            Some(other) => panic!("expected a close frame with a code, got {other:?}"),
            None => panic!("no close frame within {deadline:?}"),
        };
        assert!(
            reason.len() <= MAX_CLOSE_REASON,
            "close reason is {} bytes (max {MAX_CLOSE_REASON}): {reason}",
            reason.len()
        );
        let json: Value = serde_json::from_str(&reason)
            .unwrap_or_else(|e| panic!("close {code} reason is not JSON ({e}): {reason:?}"));
        for field in ["error_code", "message", "correlation_id"] {
            assert!(
                json.get(field).is_some(),
                "close {code} reason lacks `{field}`: {reason}"
            );
        }
        Closed { code, reason, json }
    }

    /// Asserts a close with `code` and reason `error_code`; returns it.
    pub async fn expect_close_with(&mut self, code: u16, error_code: &str) -> Closed {
        let closed = self.expect_close(DEADLINE).await;
        assert_eq!(closed.code, code, "close code, reason {}", closed.reason);
        assert_eq!(
            closed.json["error_code"], error_code,
            "error_code in close reason {}",
            closed.reason
        );
        closed
    }

    /// Asserts nothing (no message, no close) arrives for `duration`. Only meaningful after a
    /// positive delivery elsewhere showed the message had every chance to arrive.
    pub async fn expect_silence(&mut self, duration: Duration) {
        if let Some(frame) = self.next_frame(duration).await {
            panic!("expected silence for {duration:?}, got {frame:?}");
        }
    }

    /// Sends a text frame.
    pub async fn send_text(&mut self, text: &str) {
        self.ws
            .send(Message::text(text.to_owned()))
            .await
            .expect("send text frame");
    }

    /// Sends a raw message.
    pub async fn send(&mut self, message: Message) -> Result<(), tungstenite::Error> {
        self.ws.send(message).await
    }

    /// Closes with 1000 and waits (bounded) for the server's answer.
    pub async fn close(mut self) {
        let frame = CloseFrame {
            code: CloseCode::Normal,
            reason: "".into(),
        };
        let _ = self.ws.send(Message::Close(Some(frame))).await;
        let drain = async { while let Some(Ok(_)) = self.ws.next().await {} };
        let _ = tokio::time::timeout(DEADLINE, drain).await;
    }

    /// Connects to `url` from a socket whose receive buffer is about `bytes` (the kernel doubles
    /// it and applies its minimum), so that a client that does not read fills up quickly. The
    /// client reads nothing until the test calls [`WsClient::next_frame`].
    pub async fn connect_with_recv_buffer(url: &str, bytes: u32) -> Self {
        let request = url.into_client_request().expect("WebSocket request");
        let host = request.uri().host().expect("host in url").to_owned();
        let port = request.uri().port_u16().expect("port in url");
        let address: SocketAddr = format!("{host}:{port}").parse().expect("ip:port in url");
        let socket = tokio::net::TcpSocket::new_v4().expect("client socket");
        socket.set_recv_buffer_size(bytes).expect("SO_RCVBUF");
        let stream = socket.connect(address).await.expect("TCP connect");
        let handshake = tokio_tungstenite::client_async(request, MaybeTlsStream::Plain(stream));
        let (ws, _) = tokio::time::timeout(DEADLINE, handshake)
            .await
            .unwrap_or_else(|_| panic!("WebSocket handshake with {url} took over {DEADLINE:?}"))
            .unwrap_or_else(|e| panic!("WebSocket handshake with {url} failed: {e}"));
        Self { ws, protocol: None }
    }
}

/// With the in-process broker there is no subscription to observe, so readiness to receive is
/// proven by publishing probes through the API until one reaches `client`. Afterwards a final
/// marker is published and read, so that no late probe is left to confuse the caller.
pub async fn publish_api_until_received(server: &Server, user: &str, client: &mut WsClient) {
    publish_api_until_all_received(server, user, &mut [client]).await;
}

/// Like [`publish_api_until_received`], for several sockets of one user: probes until every
/// socket got one, then a marker that each reads (skipping late probes).
pub async fn publish_api_until_all_received(
    server: &Server,
    user: &str,
    clients: &mut [&mut WsClient],
) {
    let prefix = format!("probe-{user}-");
    let start = Instant::now();
    let mut attempt = 0u32;
    let mut received = vec![false; clients.len()];
    while received.contains(&false) {
        assert!(
            start.elapsed() < DEADLINE,
            "probes did not reach every socket of {user} within {DEADLINE:?}"
        );
        attempt += 1;
        let probe = format!("{prefix}{attempt}");
        server.publish_api(&[user], Value::String(probe)).await;
        for (client, got) in clients.iter_mut().zip(&mut received) {
            if *got {
                continue;
            }
            match client.next_frame(Duration::from_millis(100)).await {
                Some(Frame::Text(text)) if text.starts_with(&prefix) => *got = true,
                Some(other) => panic!("while probing delivery to {user}: got {other:?}"),
                None => {}
            }
        }
    }
    let marker = format!("{prefix}end");
    server
        .publish_api(&[user], Value::String(marker.clone()))
        .await;
    for client in clients.iter_mut() {
        loop {
            let text = client.recv_text(DEADLINE).await;
            if text == marker {
                break;
            }
            assert!(
                text.starts_with(&prefix),
                "unexpected message {text:?} while probing {user}"
            );
        }
    }
}
