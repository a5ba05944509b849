//! One client socket of a worker: connect (bound to its source address, with a deadline and
//! a share of the connect concurrency), upgrade with its token, then read every message into
//! the worker's [`State`] until the socket closes. When the parent says so, the socket drops
//! its connection, waits, and connects again (a v2 socket with `since`, resuming after the last
//! message it received).

use std::cell::RefCell;
use std::net::{IpAddr, SocketAddr};
use std::rc::Rc;
use std::time::Duration;

use futures_util::StreamExt as _;
use tokio::net::{TcpSocket, TcpStream};
use tokio::sync::{watch, Semaphore};
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;

use super::state::State;
use crate::util::now_us;

/// Longest failure reason kept (the failure map must stay small).
const REASON_MAX: usize = 96;

/// Where and how socket `idx` of the worker connects.
pub(super) struct SocketPlan {
    pub(super) idx: usize,
    pub(super) target: SocketAddr,
    /// Source address to bind, if any.
    pub(super) src: Option<IpAddr>,
    /// URL of the upgrade request, token (and `v=2`) included; a resume adds `since`.
    pub(super) request: String,
    /// Connect + upgrade deadline.
    pub(super) timeout: Duration,
}

/// A client socket.
type Ws = WebSocketStream<TcpStream>;

/// TCP connect from `src` (reset on close, no delay) and the WebSocket upgrade.
async fn open(target: SocketAddr, src: Option<IpAddr>, request: String) -> Result<Ws, String> {
    let socket = if target.is_ipv4() {
        TcpSocket::new_v4()
    } else {
        TcpSocket::new_v6()
    }
    .map_err(|e| format!("socket: {e}"))?;
    if let Some(ip) = src {
        socket
            .bind(SocketAddr::new(ip, 0))
            .map_err(|e| format!("bind {ip}: {e}"))?;
    }
    // Closed with a reset when the run ends (the worker exits with its sockets open): a normal
    // close would leave every socket in TIME_WAIT on the client side for a minute, holding its
    // source port, and the next scenario's explicit binds would crawl through the few free ones.
    socket
        .set_zero_linger()
        .map_err(|e| format!("SO_LINGER: {e}"))?;
    let stream = socket
        .connect(target)
        .await
        .map_err(|e| format!("connect: {e}"))?;
    let _ = stream.set_nodelay(true);
    // Small buffers: thousands of sockets per process, small messages.
    let config = WebSocketConfig::default()
        .read_buffer_size(4096)
        .write_buffer_size(0);
    let (ws, _response) =
        tokio_tungstenite::client_async_with_config(request, stream, Some(config))
            .await
            .map_err(|e| match e {
                tokio_tungstenite::tungstenite::Error::Http(response) => {
                    format!("upgrade refused: HTTP {}", response.status())
                }
                other => format!("handshake: {other}"),
            })?;
    Ok(ws)
}

/// Opens the socket (holding a `gate` permit while connecting) and reads it until it closes;
/// while `away` says so, it is dropped, and connected again after.
pub(super) async fn socket_task(
    state: Rc<RefCell<State>>,
    gate: Rc<Semaphore>,
    plan: SocketPlan,
    mut away: watch::Receiver<bool>,
) {
    let mut request = plan.request.clone();
    let mut round = Round::First;
    loop {
        let Some(mut ws) = connect(&state, &gate, &plan, request, round).await else {
            return;
        };
        if read_until_closed(&state, plan.idx, &mut ws, &mut away).await == Ended::Closed {
            return;
        }
        // Dropped (a reset: zero linger), as a client losing its network would be.
        drop(ws);
        state.borrow_mut().on_away(plan.idx);
        if away.wait_for(|a| !*a).await.is_err() {
            return; // the worker is ending
        }
        request = match state.borrow().since(plan.idx) {
            Some(since) => format!("{}&since={since}", plan.request),
            None => plan.request.clone(),
        };
        round = Round::Reconnect;
    }
}

/// Which connect of a socket this is (they are accounted apart).
#[derive(Clone, Copy, PartialEq, Eq)]
enum Round {
    First,
    Reconnect,
}

/// One connect of socket `plan.idx` with `request`, accounted in `state`; `None` when it failed.
async fn connect(
    state: &RefCell<State>,
    gate: &Semaphore,
    plan: &SocketPlan,
    request: String,
    round: Round,
) -> Option<Ws> {
    let permit = gate.acquire().await;
    let started = now_us();
    match round {
        Round::First => state.borrow_mut().connect_started(started),
        Round::Reconnect => state.borrow_mut().reconnect_started(started),
    }
    let timeout = plan.timeout;
    let opened = match tokio::time::timeout(timeout, open(plan.target, plan.src, request)).await {
        Err(_) => Err(format!("timeout after {timeout:?}")),
        Ok(result) => result,
    };
    drop(permit);
    let (ws, result) = match opened {
        Ok(ws) => (Some(ws), Ok(())),
        Err(mut reason) => {
            reason.truncate(REASON_MAX);
            (None, Err(reason))
        }
    };
    let mut s = state.borrow_mut();
    match round {
        Round::First => s.connect_finished(plan.idx, started, result),
        Round::Reconnect => s.reconnect_finished(plan.idx, started, result),
    }
    ws
}

/// How a read ended.
#[derive(Debug, PartialEq, Eq)]
enum Ended {
    /// The connection is over (close frame, EOF or error), recorded in the state.
    Closed,
    /// The parent asked the socket to drop its connection.
    Away,
}

/// Resolves once `away` is true (never, when the worker is ending).
async fn until_away(away: &mut watch::Receiver<bool>) {
    if away.wait_for(|a| *a).await.is_err() {
        std::future::pending::<()>().await;
    }
}

/// Records every message and the close (code, or `eof`, or the error) of socket `idx`, until
/// it closes or `away` turns true.
async fn read_until_closed(
    state: &RefCell<State>,
    idx: usize,
    ws: &mut Ws,
    away: &mut watch::Receiver<bool>,
) -> Ended {
    let mut code = None;
    loop {
        let message = tokio::select! {
            biased; // messages first: the away check is only polled when there is none
            message = ws.next() => message,
            () = until_away(away), if code.is_none() => return Ended::Away,
        };
        let Some(message) = message else { break };
        match message {
            Ok(Message::Text(text)) => state.borrow_mut().on_frame(idx, text.as_bytes()),
            Ok(Message::Binary(bytes)) => state.borrow_mut().on_frame(idx, &bytes),
            Ok(Message::Close(frame)) => {
                let c = frame.map_or_else(|| "1005".to_owned(), |f| u16::from(f.code).to_string());
                // Record at the moment the close frame arrives; keep reading so that the
                // close handshake completes.
                state.borrow_mut().on_close(idx, c.clone());
                code = Some(c);
            }
            Ok(_) => {}
            Err(error) => {
                if code.is_none() {
                    let mut reason = format!("error: {error}");
                    reason.truncate(REASON_MAX);
                    code = Some(reason);
                }
                break;
            }
        }
    }
    state
        .borrow_mut()
        .on_close(idx, code.unwrap_or_else(|| "eof".to_owned()));
    Ended::Closed
}
