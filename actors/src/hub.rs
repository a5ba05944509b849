//! The `UserHub` actor: one per user with at least one open session on this node. It admits or
//! refuses sessions, fans every message out to the user's sessions, and tells its directory
//! shard (through a [`Recipient`] of [`HubIdle`]) when it has become empty so the shard can
//! retire it. It reaches its sessions through their [`SessionLink`]s, never by their type.
//!
//! The per-user quota is decided at the upgrade, by the node's
//! [`ConnectionLimiter`](crate::limiter::ConnectionLimiter), before a session exists (so a
//! refused socket holds no slot of the global cap). The hub keeps its own count as a backstop:
//! a seat is given back only after the session's leave is sent, so the hub never sees more than
//! the quota and never refuses a session the limiter admitted.
//!
//! For the operator console a hub also answers [`UserSessions`] (its sessions and since when);
//! [`DisconnectHub`] closes every session 4003 (the disconnect API and the console).

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use actix::prelude::*;

use crate::ids::{ConnId, UserId};
use crate::metrics::RelayMetrics;
use crate::payload::{Payload, Published};
use crate::position::Position;
use crate::session::{Deliver, JoinRefusal, SessionControl, SessionLink};
use crate::trace::{find_timestamp, find_traceparent, ForwardTracer};
use crate::v2;

/// Settings every hub of a shard shares.
#[derive(Clone, Default)]
pub struct HubSettings {
    /// The per-user quota.
    pub max_sessions_per_user: usize,
    /// Makes forward spans; `None` when trace export is off.
    pub tracer: Option<Arc<dyn ForwardTracer>>,
}

/// Asks a hub to admit a session. Forwarded by the directory shard.
#[derive(Message, Debug)]
#[rtype(result = "()")]
pub struct Join {
    /// The new session.
    pub conn: ConnId,
    /// How to reach it.
    pub link: SessionLink,
}

/// A session has stopped.
#[derive(Message, Debug)]
#[rtype(result = "()")]
pub struct Leave {
    /// The session that stopped.
    pub conn: ConnId,
}

/// A message for every session of the hub's user.
#[derive(Message, Clone, Debug)]
#[rtype(result = "()")]
pub struct Fanout {
    /// The message for each session.
    pub message: Published,
}

/// The user's broker channels are subscribed and acknowledged (`resubscribed`: again, after
/// the broker link was lost and came back). Forwarded by the shard.
#[derive(Message, Clone, Copy, Debug)]
#[rtype(result = "()")]
pub struct ChannelLive {
    /// The link came back after an outage: v2 sessions catch up on what they missed.
    pub resubscribed: bool,
}

/// Sent by the shard once it has forgotten the hub: the hub stops.
#[derive(Message, Debug)]
#[rtype(result = "()")]
pub struct Retire;

/// When each session of a draining hub closes, counted from now. Chosen by the drain
/// coordinator, which spreads the closes of the whole node over its window.
pub trait ClosePacing: Send + Sync + fmt::Debug {
    /// The delay before the next session's 1012 close.
    fn close_delay(&self) -> Duration;
}

/// Closes every session of the hub with 1012, each after a delay `pacing` chooses.
#[derive(Message, Clone, Debug)]
#[rtype(result = "()")]
pub struct DrainHub {
    /// The delay of each close.
    pub pacing: Arc<dyn ClosePacing>,
}

/// Closes every session of the hub with 4003 (the operator disconnected the user).
#[derive(Message, Clone, Debug)]
#[rtype(result = "()")]
pub struct DisconnectHub {
    /// The message of each close reason.
    pub reason: Arc<str>,
}

/// A hub reports to its shard that it has no session left after `joins_seen` joins.
#[derive(Message, Debug)]
#[rtype(result = "()")]
pub struct HubIdle {
    /// The hub's user.
    pub user: UserId,
    /// Joins the hub has handled; if the shard forwarded more, one is in flight.
    pub joins_seen: u64,
}

/// One session of a user on this node, as the console shows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SessionInfo {
    /// The connection.
    pub conn: ConnId,
    /// When the hub admitted it.
    pub since: SystemTime,
    /// The client protocol: `"legacy"` (raw payloads) or `"v2"`.
    pub protocol: &'static str,
    /// The last durable message this node handed to the user's sessions.
    pub last_position: Option<Position>,
}

/// Asks for the sessions of the hub's user (forwarded by the directory shard).
#[derive(Message, Clone, Debug)]
#[rtype(result = "Vec<SessionInfo>")]
pub struct UserSessions {
    /// The user.
    pub user: UserId,
}

/// One user's sessions on this node.
pub struct UserHub {
    user: UserId,
    sessions: HashMap<ConnId, SessionLink>,
    settings: HubSettings,
    /// The shard that holds this hub, told when the hub empties.
    shard: Recipient<HubIdle>,
    metrics: RelayMetrics,
    /// Joins handled so far; the shard compares it with the joins it forwarded.
    joins_seen: u64,
    draining: bool,
    /// The user's channels are subscribed (always, with the in-process broker).
    live: bool,
    /// How many sessions speak v2 (the hub then encodes each message's v2 frame once).
    v2_sessions: usize,
    /// The last durable message fanned out (for the console's lookup).
    last_position: Option<Position>,
}

impl UserHub {
    /// A hub for `user` with the shard's settings (quota, tracer), reporting to `shard` when
    /// it empties; `live` when its channels need no subscription (the in-process broker).
    pub fn new(
        user: UserId,
        settings: HubSettings,
        shard: Recipient<HubIdle>,
        metrics: RelayMetrics,
        live: bool,
    ) -> Self {
        Self {
            user,
            sessions: HashMap::new(),
            settings,
            shard,
            metrics,
            joins_seen: 0,
            draining: false,
            live,
            v2_sessions: 0,
            last_position: None,
        }
    }

    fn report_if_idle(&self) {
        if self.sessions.is_empty() {
            self.shard.do_send(HubIdle {
                user: self.user.clone(),
                joins_seen: self.joins_seen,
            });
        }
    }

    fn admit(&mut self, join: Join) {
        if self.draining {
            join.link
                .control
                .do_send(SessionControl::Refused(JoinRefusal::Draining));
            return;
        }
        if self.sessions.len() >= self.settings.max_sessions_per_user {
            join.link
                .control
                .do_send(SessionControl::Refused(JoinRefusal::UserQuota));
            return;
        }
        join.link.control.do_send(SessionControl::Joined);
        if self.live {
            join.link.control.do_send(SessionControl::Subscribed);
        }
        self.v2_sessions += usize::from(join.link.v2);
        self.sessions.insert(join.conn, join.link);
    }
}

impl UserHub {
    fn forward_span(&self, payload: &Payload) -> Option<tracing::Span> {
        let tracer = self.settings.tracer.as_ref()?;
        let traceparent = json_bytes(payload).and_then(find_traceparent);
        Some(tracer.forward_span(traceparent, payload.len(), self.sessions.len()))
    }

    fn observe_latency(&self, payload: &Payload) {
        let Some(published) = json_bytes(payload).and_then(find_timestamp) else {
            return;
        };
        if let Ok(latency) = SystemTime::now().duration_since(published) {
            self.metrics.publish_latency.observe(latency.as_secs_f64());
        }
    }
}

/// The payload's bytes when it looks like a JSON object (the only kind scanned for fields).
fn json_bytes(payload: &Payload) -> Option<&[u8]> {
    match payload {
        Payload::Text(text) if text.starts_with('{') => Some(text.as_bytes()),
        _ => None,
    }
}

impl Actor for UserHub {
    type Context = Context<Self>;
}

impl Handler<Join> for UserHub {
    type Result = ();

    fn handle(&mut self, join: Join, _: &mut Context<Self>) {
        self.joins_seen += 1;
        if join.link.control.connected() {
            self.admit(join);
        }
        self.report_if_idle();
    }
}

impl Handler<Leave> for UserHub {
    type Result = ();

    fn handle(&mut self, leave: Leave, _: &mut Context<Self>) {
        if let Some(link) = self.sessions.remove(&leave.conn) {
            self.v2_sessions -= usize::from(link.v2);
            self.report_if_idle();
        }
    }
}

impl Handler<Fanout> for UserHub {
    type Result = ();

    fn handle(&mut self, fanout: Fanout, _: &mut Context<Self>) {
        let _span = self
            .forward_span(&fanout.message.payload)
            .map(tracing::Span::entered);
        self.observe_latency(&fanout.message.payload);
        if self.sessions.is_empty() {
            self.count_dropped("no_session", 1);
            return;
        }
        if let Some(position) = &fanout.message.position {
            self.last_position = Some(position.clone());
        }
        let v2_frame = (self.v2_sessions > 0)
            .then(|| v2::message_of(fanout.message.position.as_ref(), &fanout.message.payload));
        // The last session takes the message itself: a user with one socket costs no clone.
        let mut message = Some(fanout.message);
        let mut links = self.sessions.values().peekable();
        let mut gone = 0;
        while let Some(link) = links.next() {
            let message = match links.peek() {
                Some(_) => message.clone(),
                None => message.take(),
            };
            match message {
                // A session counts what it is handed, as forwarded once written or as dropped.
                Some(message) if link.deliver.connected() => link.deliver.do_send(Deliver {
                    message,
                    v2_frame: link.v2.then(|| v2_frame.clone()).flatten(),
                }),
                // Stopped, its leave not yet here: nobody else will count this one.
                Some(_) => gone += 1,
                None => {}
            }
        }
        self.count_dropped("closed", gone);
    }
}

impl UserHub {
    fn count_dropped(&self, reason: &str, messages: u64) {
        if messages > 0 {
            self.metrics
                .messages_dropped
                .with_label_values(&[reason])
                .inc_by(messages);
        }
    }
}

impl Handler<DrainHub> for UserHub {
    type Result = ();

    fn handle(&mut self, drain: DrainHub, _: &mut Context<Self>) {
        self.draining = true;
        for link in self.sessions.values() {
            let after = drain.pacing.close_delay();
            link.control.do_send(SessionControl::Drain { after });
        }
    }
}

impl Handler<ChannelLive> for UserHub {
    type Result = ();

    fn handle(&mut self, live: ChannelLive, _: &mut Context<Self>) {
        let first = !self.live;
        self.live = true;
        let control = match (first, live.resubscribed) {
            (true, _) => SessionControl::Subscribed,
            (false, true) => SessionControl::CatchUp,
            (false, false) => return,
        };
        for link in self.sessions.values().filter(|link| link.v2) {
            link.control.do_send(control.clone());
        }
    }
}

impl Handler<UserSessions> for UserHub {
    type Result = MessageResult<UserSessions>;

    fn handle(&mut self, _: UserSessions, _: &mut Context<Self>) -> Self::Result {
        let sessions = self.sessions.iter().map(|(&conn, link)| SessionInfo {
            conn,
            since: link.since,
            protocol: if link.v2 { "v2" } else { "legacy" },
            last_position: self.last_position.clone(),
        });
        MessageResult(sessions.collect())
    }
}

impl Handler<DisconnectHub> for UserHub {
    type Result = ();

    fn handle(&mut self, disconnect: DisconnectHub, _: &mut Context<Self>) {
        for link in self.sessions.values() {
            let reason = Arc::clone(&disconnect.reason);
            link.control.do_send(SessionControl::Disconnect { reason });
        }
    }
}

impl Handler<Retire> for UserHub {
    type Result = ();

    fn handle(&mut self, _: Retire, ctx: &mut Context<Self>) {
        ctx.stop();
    }
}

#[cfg(test)]
mod tests {
    use tokio::sync::mpsc;

    use super::*;

    /// Forwards what a hub sends (to a session, or to its shard) into a channel.
    struct Probe(mpsc::UnboundedSender<String>);

    impl Actor for Probe {
        type Context = Context<Self>;
    }

    impl Handler<SessionControl> for Probe {
        type Result = ();
        fn handle(&mut self, control: SessionControl, _: &mut Context<Self>) {
            let _ = self.0.send(format!("{control:?}"));
        }
    }

    impl Handler<Deliver> for Probe {
        type Result = ();
        fn handle(&mut self, _: Deliver, _: &mut Context<Self>) {}
    }

    impl Handler<HubIdle> for Probe {
        type Result = ();
        fn handle(&mut self, idle: HubIdle, _: &mut Context<Self>) {
            let _ = self
                .0
                .send(format!("idle {} after {}", idle.user, idle.joins_seen));
        }
    }

    /// Closes every session after the same delay.
    #[derive(Debug)]
    struct Fixed(Duration);

    impl ClosePacing for Fixed {
        fn close_delay(&self) -> Duration {
            self.0
        }
    }

    async fn next(rx: &mut mpsc::UnboundedReceiver<String>) -> String {
        tokio::time::timeout(Duration::from_secs(5), rx.recv())
            .await
            .expect("nothing received before the deadline")
            .expect("channel closed")
    }

    /// A hub reports to its shard through the recipient it was given, and a drain closes each
    /// session after the delay the pacing chooses.
    #[actix_rt::test]
    async fn hub_reports_idle_to_its_shard_and_applies_the_drain_pacing() {
        let (shard_tx, mut shard_rx) = mpsc::unbounded_channel();
        let shard = Probe(shard_tx).start();
        let settings = HubSettings {
            max_sessions_per_user: 1,
            tracer: None,
        };
        let metrics = RelayMetrics::unregistered();
        let hub =
            UserHub::new(UserId::new("u"), settings, shard.recipient(), metrics, true).start();
        let (session_tx, mut session_rx) = mpsc::unbounded_channel();
        let session = Probe(session_tx).start();
        let conn = ConnId::next();
        let link = SessionLink {
            deliver: session.clone().recipient(),
            control: session.recipient(),
            v2: false,
            since: SystemTime::now(),
        };
        hub.do_send(Join { conn, link });
        assert_eq!(next(&mut session_rx).await, "Joined");
        assert_eq!(next(&mut session_rx).await, "Subscribed");
        let pacing = Arc::new(Fixed(Duration::from_millis(7)));
        hub.do_send(DrainHub { pacing });
        assert_eq!(next(&mut session_rx).await, "Drain { after: 7ms }");
        hub.do_send(Leave { conn });
        assert_eq!(next(&mut shard_rx).await, "idle u after 1");
    }
}
