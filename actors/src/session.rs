//! The `Session` actor: one WebSocket. It owns the socket's deadlines (heartbeat, idle, token
//! expiry), its bounded outbound queue and the close contract. It knows nothing of brokers: it
//! joins its user's hub through the directory and receives [`Deliver`] messages from it.
//!
//! Writing to the socket is done by a writer task that owns the `actix_ws::Session`, fed by a
//! bounded queue. A full queue means the client does not read: the session closes it with 4009
//! and drops what was queued, so one stuck client never holds memory or slows anyone else.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use actix::prelude::*;
use actix_ws::{AggregatedMessage, AggregatedMessageStream, ProtocolError};
use bytes::Bytes;
use tokio::sync::{mpsc, oneshot};

use crate::close::{CloseCode, CloseReason};
use crate::directory::Directory;
use crate::hub::{Deliver, JoinRefusal, SessionControl, SessionLink};
use crate::ids::{ConnId, UserId};
use crate::limiter::ConnectionPermit;
use crate::metrics::RelayMetrics;
use crate::payload::Payload;

/// How long a closing session may take to flush its queue and close frame to a slow client.
const FLUSH_DEADLINE: Duration = Duration::from_secs(5);
/// How long the writer keeps trying to hand a close frame to a stuck socket after its queue was
/// dropped; if the client reads again in that time it sees the 4009, else the socket is dropped.
const ABORT_CLOSE_DEADLINE: Duration = Duration::from_secs(5);

/// Per-session limits, shared by every session of the node.
#[derive(Clone, Debug)]
pub struct SessionConfig {
    /// How often the server pings.
    pub heartbeat_interval: Duration,
    /// How long a ping may go unanswered.
    pub heartbeat_timeout: Duration,
    /// How long the client may send nothing at all.
    pub idle_timeout: Duration,
    /// Frames that may wait for the socket before the client counts as stuck.
    pub send_queue_max: usize,
    /// Close with 4001 when the token expires.
    pub close_on_expiry: bool,
}

/// Everything a session is started with.
pub struct SessionParams {
    /// The authenticated user.
    pub user: UserId,
    /// This connection.
    pub conn: ConnId,
    /// Carried in every close reason and log line of this connection.
    pub correlation_id: Arc<str>,
    /// When the token expires.
    pub expires_at: SystemTime,
    /// The global-cap slot, released when the session is dropped.
    pub permit: ConnectionPermit,
    /// Shared limits.
    pub config: Arc<SessionConfig>,
    /// Where the user's hub is found.
    pub directory: Directory,
    /// Shared metrics.
    pub metrics: RelayMetrics,
}

/// What the writer task sends, in order.
#[derive(Debug)]
enum Outbound {
    Frame(Payload),
    Ping,
    Pong(Bytes),
    Close(CloseReason),
}

/// One WebSocket connection.
pub struct Session {
    params: SessionParams,
    outbound: mpsc::Sender<Outbound>,
    abort: Option<oneshot::Sender<CloseReason>>,
    started_at: Instant,
    last_heard: Instant,
    ping_sent_at: Option<Instant>,
    closing: bool,
}

impl Session {
    /// Starts the session actor and its writer task for an upgraded socket.
    pub fn start(
        params: SessionParams,
        socket: actix_ws::Session,
        incoming: AggregatedMessageStream,
    ) -> Addr<Session> {
        let (outbound, queue) = mpsc::channel(params.config.send_queue_max.max(1));
        let (abort, abort_rx) = oneshot::channel();
        actix::spawn(write_loop(socket, queue, abort_rx));
        let now = Instant::now();
        Session::create(move |ctx| {
            ctx.add_stream(incoming);
            Session {
                params,
                outbound,
                abort: Some(abort),
                started_at: now,
                last_heard: now,
                ping_sent_at: None,
                closing: false,
            }
        })
    }

    fn close(&mut self, ctx: &mut Context<Self>, code: CloseCode, message: &str) {
        if self.closing {
            return;
        }
        self.closing = true;
        let reason = CloseReason::new(code, message, &self.params.correlation_id);
        self.record_close(code.label());
        tracing::info!(
            conn = self.params.conn.get(),
            correlation_id = &*self.params.correlation_id,
            code = code.code(),
            message,
            "closing session"
        );
        match self.outbound.try_send(Outbound::Close(reason.clone())) {
            Ok(()) => self.arm_flush_deadline(reason),
            Err(_) => self.abort_writer(reason),
        }
        ctx.stop();
    }

    /// Drops whatever is queued and closes the socket now.
    fn abort_writer(&mut self, reason: CloseReason) {
        if let Some(abort) = self.abort.take() {
            let _ = abort.send(reason);
        }
    }

    /// Gives the writer a bounded time to flush the queue and the close frame.
    fn arm_flush_deadline(&mut self, reason: CloseReason) {
        if let Some(mut abort) = self.abort.take() {
            actix::spawn(async move {
                tokio::select! {
                    _ = tokio::time::sleep(FLUSH_DEADLINE) => { let _ = abort.send(reason); }
                    _ = abort.closed() => {}
                }
            });
        }
    }

    fn record_close(&self, code_label: &str) {
        let metrics = &self.params.metrics;
        metrics
            .connections_closed
            .with_label_values(&[code_label])
            .inc();
    }

    fn heard(&mut self) {
        self.last_heard = Instant::now();
    }

    fn enqueue(&mut self, ctx: &mut Context<Self>, frame: Outbound) {
        match self.outbound.try_send(frame) {
            Ok(()) => {}
            Err(mpsc::error::TrySendError::Full(_)) => {
                self.params
                    .metrics
                    .messages_dropped
                    .with_label_values(&["slow_consumer"])
                    .inc();
                self.close(ctx, CloseCode::SlowConsumer, "send queue full");
            }
            Err(mpsc::error::TrySendError::Closed(_)) => ctx.stop(),
        }
    }

    fn schedule_heartbeat(&self, ctx: &mut Context<Self>) {
        let interval = self.params.config.heartbeat_interval;
        ctx.run_interval(interval, |session, ctx| session.send_ping(ctx));
    }

    fn send_ping(&mut self, ctx: &mut Context<Self>) {
        if self.ping_sent_at.is_none() {
            let sent_at = Instant::now();
            self.ping_sent_at = Some(sent_at);
            let timeout = self.params.config.heartbeat_timeout;
            ctx.run_later(timeout, move |session, ctx| {
                if session.ping_sent_at == Some(sent_at) {
                    session.close(ctx, CloseCode::Timeout, "heartbeat lost");
                }
            });
        }
        self.enqueue(ctx, Outbound::Ping);
    }

    fn schedule_idle_check(&self, ctx: &mut Context<Self>, after: Duration) {
        ctx.run_later(after, |session, ctx| {
            let idle = session.params.config.idle_timeout;
            let quiet = session.last_heard.elapsed();
            if quiet >= idle {
                session.close(ctx, CloseCode::Timeout, "idle timeout");
            } else {
                session.schedule_idle_check(ctx, idle - quiet);
            }
        });
    }

    fn schedule_expiry(&self, ctx: &mut Context<Self>) {
        if !self.params.config.close_on_expiry {
            return;
        }
        let left = self
            .params
            .expires_at
            .duration_since(SystemTime::now())
            .unwrap_or(Duration::ZERO);
        ctx.run_later(left, |session, ctx| {
            session.close(ctx, CloseCode::TokenExpired, "token expired");
        });
    }

    fn on_refused(&mut self, ctx: &mut Context<Self>, refusal: JoinRefusal) {
        let metrics = &self.params.metrics;
        match refusal {
            JoinRefusal::UserQuota => {
                metrics.opened("quota_user");
                self.close(ctx, CloseCode::UserQuota, "user connection quota");
            }
            JoinRefusal::Draining => {
                metrics.opened("draining");
                self.close(ctx, CloseCode::Restarting, "server draining");
            }
        }
    }

    fn on_client_frame(&mut self, ctx: &mut Context<Self>, message: AggregatedMessage) {
        self.heard();
        match message {
            AggregatedMessage::Text(_) => {}
            AggregatedMessage::Binary(_) => {
                self.close(ctx, CloseCode::Unsupported, "binary frames refused");
            }
            AggregatedMessage::Ping(bytes) => self.enqueue(ctx, Outbound::Pong(bytes)),
            AggregatedMessage::Pong(_) => self.ping_sent_at = None,
            AggregatedMessage::Close(_) => {
                self.closing = true;
                self.record_close("client");
                let _ = self
                    .outbound
                    .try_send(Outbound::Close(CloseReason::normal()));
                ctx.stop();
            }
        }
    }

    fn on_protocol_error(&mut self, ctx: &mut Context<Self>, error: &ProtocolError) {
        if is_oversize(error) {
            self.close(ctx, CloseCode::TooBig, "frame too large");
        } else {
            self.close(ctx, CloseCode::ProtocolError, "protocol error");
        }
    }
}

fn is_oversize(error: &ProtocolError) -> bool {
    match error {
        ProtocolError::Overflow => true,
        ProtocolError::Io(io) => io.to_string().contains("maximum continuation size"),
        _ => false,
    }
}

impl Actor for Session {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        self.params.metrics.connections_active.inc();
        let address = ctx.address();
        let link = SessionLink {
            deliver: address.clone().recipient(),
            control: address.recipient(),
        };
        self.params
            .directory
            .connect(self.params.user.clone(), self.params.conn, link);
        self.schedule_heartbeat(ctx);
        self.schedule_idle_check(ctx, self.params.config.idle_timeout);
        self.schedule_expiry(ctx);
    }

    fn stopped(&mut self, _: &mut Context<Self>) {
        let metrics = &self.params.metrics;
        metrics.connections_active.dec();
        metrics
            .connection_duration
            .observe(self.started_at.elapsed().as_secs_f64());
        if !self.closing {
            self.record_close("abnormal");
        }
        self.params
            .directory
            .leave(self.params.user.clone(), self.params.conn);
    }
}

impl Handler<Deliver> for Session {
    type Result = ();

    fn handle(&mut self, deliver: Deliver, ctx: &mut Context<Self>) {
        if !self.closing {
            self.enqueue(ctx, Outbound::Frame(deliver.payload));
        }
    }
}

impl Handler<SessionControl> for Session {
    type Result = ();

    fn handle(&mut self, control: SessionControl, ctx: &mut Context<Self>) {
        match control {
            SessionControl::Joined => self.params.metrics.opened("accepted"),
            SessionControl::Refused(refusal) => self.on_refused(ctx, refusal),
            SessionControl::Drain { after } => {
                ctx.run_later(after, |session, ctx| {
                    session.close(ctx, CloseCode::Restarting, "server draining");
                });
            }
        }
    }
}

impl StreamHandler<Result<AggregatedMessage, ProtocolError>> for Session {
    fn handle(&mut self, item: Result<AggregatedMessage, ProtocolError>, ctx: &mut Context<Self>) {
        match item {
            Ok(message) => self.on_client_frame(ctx, message),
            Err(error) => self.on_protocol_error(ctx, &error),
        }
    }

    fn finished(&mut self, ctx: &mut Context<Self>) {
        ctx.stop();
    }
}

/// Owns the socket's sending half: writes queued frames in order until the queue closes or a
/// close frame is written; on abort, drops the queue and tries briefly to send the close.
async fn write_loop(
    mut socket: actix_ws::Session,
    mut queue: mpsc::Receiver<Outbound>,
    mut abort: oneshot::Receiver<CloseReason>,
) {
    let aborted = tokio::select! {
        biased;
        Ok(reason) = &mut abort => Some(reason),
        _ = pump(&mut socket, &mut queue) => None,
    };
    if let Some(reason) = aborted {
        drop(queue);
        let close = socket.close(Some(to_ws_reason(&reason)));
        let _ = tokio::time::timeout(ABORT_CLOSE_DEADLINE, close).await;
    }
}

async fn pump(
    socket: &mut actix_ws::Session,
    queue: &mut mpsc::Receiver<Outbound>,
) -> Result<(), actix_ws::Closed> {
    while let Some(frame) = queue.recv().await {
        match frame {
            Outbound::Frame(Payload::Text(text)) => socket.text(text).await?,
            Outbound::Frame(Payload::Binary(bytes)) => socket.binary(bytes).await?,
            Outbound::Ping => socket.ping(b"").await?,
            Outbound::Pong(bytes) => socket.pong(&bytes).await?,
            Outbound::Close(reason) => {
                return socket.clone().close(Some(to_ws_reason(&reason))).await;
            }
        }
    }
    Ok(())
}

fn to_ws_reason(reason: &CloseReason) -> actix_ws::CloseReason {
    actix_ws::CloseReason {
        code: reason.code.code().into(),
        description: (!reason.reason.is_empty()).then(|| reason.reason.clone()),
    }
}
