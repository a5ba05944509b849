//! The `Session` actor: one WebSocket. It owns the socket itself (the TCP stream, taken out of
//! the HTTP layer at the upgrade), its deadlines (heartbeat, idle, token expiry), its bounded
//! outbox and the close contract. It knows nothing of hubs, the directory or brokers: it joins
//! its user's hub through the [`HubLink`] the HTTP layer gives it and receives [`Deliver`]
//! messages from the hub; every message it accepts is in [`messages`].
//!
//! A session runs on the arbiter of its user's hub (the socket is moved there after the
//! upgrade), so a message goes from hub to session without crossing threads, and is written to
//! the socket at once, with no task or channel in between; when the kernel's send buffer is
//! full, frames wait in the [`Outbox`] and go out together once the socket is writable. An
//! outbox that reaches `send_queue_max` frames means the client does not read: the session
//! drops them and closes with 4009, so one stuck client never holds memory or slows anyone
//! else.
//!
//! Every message the hub hands to a session is counted exactly once: as forwarded when the
//! kernel has taken its whole frame, or as dropped, `slow_consumer` when the socket was closed
//! 4009 (the message that overflowed the outbox, those queued behind it, those arriving after),
//! `closed` when it closed or was lost for any other reason. Pings, pongs and close frames are
//! not messages and are never counted.
//!
//! Beside this file: [`messages`] (what a session accepts and sends), `deadlines` (the
//! heartbeat, idle and token-expiry timers) and `handoff` (how an upgraded socket reaches its
//! session's arbiter).

use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use actix::prelude::*;
use tokio::net::TcpStream;

use crate::client_frames::{ClientFrame, ClientFrames, ReadError};
use crate::close::{CloseCode, CloseReason};
use crate::ids::{ConnId, UserId};
use crate::limiter::ConnectionPermit;
use crate::metrics::RelayMetrics;
use crate::v2::Protocol;
use crate::wire::{Flushed, OutFrame, Outbox, Written};

mod deadlines;
mod handoff;
pub mod messages;
mod sync;

pub use handoff::{SpawnError, Upgraded};
pub use messages::{Deliver, HubLink, JoinHub, JoinRefusal, LeaveHub, SessionControl, SessionLink};
use sync::SyncState;
pub use sync::{HistoryAccess, READS_IN_FLIGHT};

/// How long a closing session may take to flush its outbox and close frame to a slow client.
const FLUSH_DEADLINE: Duration = Duration::from_secs(5);
/// How long the socket stays open after the close frame, for the client's close and FIN; then
/// the server drops the connection.
const CLOSE_LINGER: Duration = Duration::from_millis(200);

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
    /// Largest client frame, and largest message reassembled from continuations.
    pub max_frame_bytes: usize,
}

/// Everything a session is started with.
pub struct SessionParams {
    /// The authenticated user.
    pub user: UserId,
    /// This connection.
    pub conn: ConnId,
    /// Carried in every close reason and log line of this connection.
    pub correlation_id: Arc<str>,
    /// When the token expires; `None` when that is beyond any representable time (no expiry
    /// timer).
    pub expires_at: Option<SystemTime>,
    /// The user's quota seat (released when the session leaves its hub) and the global-cap slot
    /// (released when the session is dropped).
    pub permit: ConnectionPermit,
    /// Shared limits.
    pub config: Arc<SessionConfig>,
    /// How to reach the user's hub (from `Directory::hub_link`).
    pub hub: HubLink,
    /// Shared metrics.
    pub metrics: RelayMetrics,
    /// Raw payloads, or protocol v2 (with where it resumes from).
    pub protocol: Protocol,
    /// The user's history, for v2 resumes and catch-ups; `None` when history is off.
    pub history: Option<Arc<HistoryAccess>>,
}

/// Where a session is in its close.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    /// Delivering.
    Open,
    /// A close frame is queued; nothing else is.
    Closing,
    /// The close frame is written and our side shut; waiting for the client to hang up.
    Closed,
}

/// One WebSocket connection.
pub struct Session {
    params: SessionParams,
    socket: Rc<TcpStream>,
    outbox: Outbox,
    /// A wait for writability is pending.
    write_blocked: bool,
    started_at: Instant,
    last_heard: Instant,
    ping_sent_at: Option<Instant>,
    phase: Phase,
    /// Whether the hub has been told the session left.
    left: bool,
    /// Whether the close was counted (a session that ends without one counts as abnormal).
    close_recorded: bool,
    /// Whether the session was closed 4009: the messages it could not write were dropped
    /// because the client does not read.
    slow_consumer: bool,
    /// Where a v2 session stands in its user's history; `None` for a legacy session.
    sync: Option<Box<SyncState>>,
}

impl Session {
    /// Starts the session actor on the current arbiter.
    fn start(params: SessionParams, upgraded: Upgraded) -> Addr<Session> {
        let _ = upgraded.stream.set_nodelay(true);
        let socket = Rc::new(upgraded.stream);
        let frames = ClientFrames::new(
            Rc::clone(&socket),
            upgraded.read_ahead,
            params.config.max_frame_bytes,
        );
        let mut outbox = Outbox::default();
        if !upgraded.handshake.is_empty() {
            outbox.push(OutFrame::raw(upgraded.handshake));
        }
        let now = Instant::now();
        let sync = Session::initial_sync(&params).map(Box::new);
        Session::create(move |ctx| {
            ctx.add_stream(frames);
            Session {
                params,
                socket,
                outbox,
                write_blocked: false,
                started_at: now,
                last_heard: now,
                ping_sent_at: None,
                phase: Phase::Open,
                left: false,
                close_recorded: false,
                slow_consumer: false,
                sync,
            }
        })
    }

    /// Closes with `code`: what is queued still goes out (except for a slow consumer, whose
    /// queue is dropped), then the close frame, then the connection.
    fn close(&mut self, ctx: &mut Context<Self>, code: CloseCode, message: &str) {
        if self.phase != Phase::Open {
            return;
        }
        let reason = CloseReason::new(code, message, &self.params.correlation_id);
        self.record_close(code.label());
        tracing::info!(
            conn = self.params.conn.get(),
            correlation_id = &*self.params.correlation_id,
            code = code.code(),
            message,
            "closing session"
        );
        if code == CloseCode::SlowConsumer {
            self.slow_consumer = true;
            let dropped = self.outbox.drop_unstarted();
            self.count_undelivered(dropped);
        }
        self.send_close(ctx, &reason);
    }

    /// Queues the close frame, leaves the hub and bounds the time left to flush.
    fn send_close(&mut self, ctx: &mut Context<Self>, reason: &CloseReason) {
        self.phase = Phase::Closing;
        self.leave_hub();
        self.outbox.push(OutFrame::close(reason));
        ctx.run_later(FLUSH_DEADLINE, |_, ctx| ctx.stop());
        self.flush(ctx);
    }

    /// The session is over for everyone but the socket: the hub forgets it and the metrics
    /// count it closed (the socket itself may linger a moment to flush its close).
    fn leave_hub(&mut self) {
        if self.left {
            return;
        }
        self.left = true;
        self.params.hub.leave.do_send(LeaveHub {
            user: self.params.user.clone(),
            conn: self.params.conn,
        });
        // After the leave is sent: a session of the same user admitted on this seat joins the
        // hub after it.
        self.params.permit.release_user_seat();
        let metrics = &self.params.metrics;
        metrics.connections_active.dec();
        metrics
            .connection_duration
            .observe(self.started_at.elapsed().as_secs_f64());
    }

    fn record_close(&mut self, code_label: &str) {
        self.close_recorded = true;
        self.params
            .metrics
            .connections_closed
            .with_label_values(&[code_label])
            .inc();
    }

    /// Counts `messages` accepted for this socket that will never be written, by why.
    fn count_undelivered(&self, messages: usize) {
        if messages == 0 {
            return;
        }
        let reason = if self.slow_consumer {
            "slow_consumer"
        } else {
            "closed"
        };
        self.params
            .metrics
            .messages_dropped
            .with_label_values(&[reason])
            .inc_by(messages as u64);
    }

    /// Counts the messages whose frames the kernel has taken whole since the last flush.
    fn count_written(&mut self) {
        let Written {
            messages,
            payload_bytes,
        } = self.outbox.take_written();
        if messages > 0 {
            let metrics = &self.params.metrics;
            metrics.messages_forwarded.inc_by(messages);
            metrics.bytes_forwarded.inc_by(payload_bytes);
        }
    }

    /// Writes what the kernel takes now; waits for writability when it takes no more.
    fn flush(&mut self, ctx: &mut Context<Self>) {
        if self.write_blocked {
            return;
        }
        let flushed = self.outbox.write_to(&self.socket);
        self.count_written();
        match flushed {
            Ok(Flushed::All) => {
                if self.phase == Phase::Closing {
                    self.shut_down(ctx);
                }
            }
            Ok(Flushed::Blocked) => self.wait_writable(ctx),
            Err(error) => self.lost(ctx, &error),
        }
    }

    fn wait_writable(&mut self, ctx: &mut Context<Self>) {
        self.write_blocked = true;
        let socket = Rc::clone(&self.socket);
        let writable = async move { socket.writable().await };
        ctx.spawn(writable.into_actor(self).map(|result, session, ctx| {
            session.write_blocked = false;
            match result {
                Ok(()) => session.flush(ctx),
                Err(error) => session.lost(ctx, &error),
            }
        }));
    }

    /// The close frame is out: end our side and give the client a moment to hang up.
    fn shut_down(&mut self, ctx: &mut Context<Self>) {
        self.phase = Phase::Closed;
        let _ = socket2::SockRef::from(&*self.socket).shutdown(std::net::Shutdown::Write);
        ctx.run_later(CLOSE_LINGER, |_, ctx| ctx.stop());
    }

    /// The connection failed under us: nothing more can be sent.
    fn lost(&mut self, ctx: &mut Context<Self>, error: &std::io::Error) {
        tracing::debug!(conn = self.params.conn.get(), %error, "socket lost");
        ctx.stop();
    }

    fn heard(&mut self) {
        self.last_heard = Instant::now();
    }

    /// Queues a frame unless the outbox is full, in which case the client is a slow consumer.
    /// A message that cannot be queued is counted as dropped; a control frame is not a message.
    fn enqueue(&mut self, ctx: &mut Context<Self>, frame: OutFrame) {
        let is_message = frame.is_message();
        if self.phase != Phase::Open {
            self.count_undelivered(usize::from(is_message));
            return;
        }
        if self.outbox.len() >= self.params.config.send_queue_max.max(1) {
            self.close(ctx, CloseCode::SlowConsumer, "send queue full");
            self.count_undelivered(usize::from(is_message));
            return;
        }
        self.outbox.push(frame);
        self.flush(ctx);
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

    fn on_client_frame(&mut self, ctx: &mut Context<Self>, frame: ClientFrame) {
        self.heard();
        match frame {
            ClientFrame::Text => {}
            ClientFrame::Binary => {
                self.close(ctx, CloseCode::Unsupported, "binary frames refused");
            }
            ClientFrame::Ping(bytes) => self.enqueue(ctx, OutFrame::pong(bytes)),
            ClientFrame::Pong => self.ping_sent_at = None,
            ClientFrame::Close(_) => self.on_client_close(ctx),
        }
    }

    /// The client's close: answered with a normal close, or, when it answers ours, the end.
    fn on_client_close(&mut self, ctx: &mut Context<Self>) {
        match self.phase {
            Phase::Open => {
                self.record_close("client");
                self.send_close(ctx, &CloseReason::normal());
            }
            Phase::Closing => {}
            Phase::Closed => ctx.stop(),
        }
    }

    fn on_read_error(&mut self, ctx: &mut Context<Self>, error: &ReadError) {
        match error {
            ReadError::TooBig { .. } => self.close(ctx, CloseCode::TooBig, "frame too large"),
            ReadError::InvalidUtf8 => {
                self.close(ctx, CloseCode::InvalidPayload, "text is not valid UTF-8");
            }
            ReadError::Protocol(detail) => {
                tracing::debug!(conn = self.params.conn.get(), detail, "protocol error");
                self.close(ctx, CloseCode::ProtocolError, "protocol error");
            }
            ReadError::Io(error) => self.lost(ctx, error),
        }
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
            v2: self.sync.is_some(),
            since: SystemTime::now(),
        };
        self.params.hub.join.do_send(JoinHub {
            user: self.params.user.clone(),
            conn: self.params.conn,
            link,
        });
        self.arm_deadlines(ctx);
        if matches!(self.sync.as_deref(), Some(SyncState::Unpositioned)) {
            self.welcome_unpositioned(ctx);
        }
        self.flush(ctx);
    }

    fn stopped(&mut self, _: &mut Context<Self>) {
        if !self.close_recorded {
            self.record_close("abnormal");
        }
        self.leave_hub();
        self.count_undelivered(self.outbox.messages());
    }
}

impl Handler<Deliver> for Session {
    type Result = ();

    fn handle(&mut self, deliver: Deliver, ctx: &mut Context<Self>) {
        if self.sync.is_some() {
            return self.deliver_v2(ctx, deliver);
        }
        self.enqueue(ctx, OutFrame::message(deliver.message.payload));
    }
}

impl Handler<SessionControl> for Session {
    type Result = ();

    fn handle(&mut self, control: SessionControl, ctx: &mut Context<Self>) {
        match control {
            SessionControl::Joined => self.params.metrics.opened("accepted"),
            SessionControl::Subscribed => self.on_subscribed(ctx),
            SessionControl::CatchUp => self.on_catch_up(ctx),
            SessionControl::Refused(refusal) => self.on_refused(ctx, refusal),
            SessionControl::Drain { after } => {
                ctx.run_later(after, |session, ctx| {
                    session.close(ctx, CloseCode::Restarting, "server draining");
                });
            }
            SessionControl::Disconnect { reason } => {
                self.close(ctx, CloseCode::Disconnected, &reason);
            }
        }
    }
}

impl StreamHandler<Result<ClientFrame, ReadError>> for Session {
    fn handle(&mut self, item: Result<ClientFrame, ReadError>, ctx: &mut Context<Self>) {
        match item {
            Ok(frame) => self.on_client_frame(ctx, frame),
            Err(error) => self.on_read_error(ctx, &error),
        }
    }

    /// The client hung up (or the read side failed): nothing more will come.
    fn finished(&mut self, ctx: &mut Context<Self>) {
        ctx.stop();
    }
}
