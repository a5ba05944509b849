//! The `UserHub` actor: one per user with at least one open session on this node. It admits or
//! refuses sessions, fans every message out to the user's sessions, and tells its directory
//! shard when it has become empty so the shard can retire it.
//!
//! The per-user quota is decided at the upgrade, by the node's
//! [`ConnectionLimiter`](crate::limiter::ConnectionLimiter), before a session exists (so a
//! refused socket holds no slot of the global cap). The hub keeps its own count as a backstop:
//! a seat is given back only after the session's leave is sent, so the hub never sees more than
//! the quota and never refuses a session the limiter admitted.

use std::collections::HashMap;
use std::time::{Duration, SystemTime};

use actix::prelude::*;
use rand::Rng;

use crate::directory::{DirectoryShard, HubIdle, HubSettings};
use crate::ids::{ConnId, UserId};
use crate::metrics::RelayMetrics;
use crate::payload::Payload;
use crate::trace::{find_timestamp, find_traceparent};

/// A message for one session's socket. Sent on the hot path: carries a shared payload handle.
#[derive(Message, Clone, Debug)]
#[rtype(result = "()")]
pub struct Deliver {
    /// The bytes to send, shared with every other session of the user.
    pub payload: Payload,
}

/// Why a hub did not admit a session.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum JoinRefusal {
    /// The user already has `max_connections_per_user` sessions on this node.
    UserQuota,
    /// The node is draining and takes no new sessions.
    Draining,
}

/// What a hub (or shard) tells a session about its membership and its end.
#[derive(Message, Clone, Debug)]
#[rtype(result = "()")]
pub enum SessionControl {
    /// Admitted: deliveries follow.
    Joined,
    /// Not admitted: the session closes with the matching code.
    Refused(JoinRefusal),
    /// The node is draining: close with 1012 after this delay.
    Drain {
        /// When to close, counted from receipt, so that closes are spread over the window.
        after: Duration,
    },
}

/// The two ways a hub reaches one session.
#[derive(Clone, Debug)]
pub struct SessionLink {
    /// Hot path: messages to send.
    pub deliver: Recipient<Deliver>,
    /// Membership and drain.
    pub control: Recipient<SessionControl>,
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
    /// The bytes to send to each session.
    pub payload: Payload,
}

/// Sent by the shard once it has forgotten the hub: the hub stops.
#[derive(Message, Debug)]
#[rtype(result = "()")]
pub struct Retire;

/// Closes every session of the hub with 1012, at random times within `window`.
#[derive(Message, Clone, Copy, Debug)]
#[rtype(result = "()")]
pub struct DrainHub {
    /// The span over which the closes are spread.
    pub window: Duration,
}

/// How many sessions the hub holds (for tests and stats).
#[derive(Message, Debug)]
#[rtype(result = "usize")]
pub struct SessionCount;

/// One user's sessions on this node.
pub struct UserHub {
    user: UserId,
    sessions: HashMap<ConnId, SessionLink>,
    settings: HubSettings,
    shard: Addr<DirectoryShard>,
    metrics: RelayMetrics,
    /// Joins handled so far; the shard compares it with the joins it forwarded.
    joins_seen: u64,
    drain_window: Option<Duration>,
}

impl UserHub {
    /// A hub for `user` with the shard's settings (quota, tracer).
    pub fn new(
        user: UserId,
        settings: HubSettings,
        shard: Addr<DirectoryShard>,
        metrics: RelayMetrics,
    ) -> Self {
        Self {
            user,
            sessions: HashMap::new(),
            settings,
            shard,
            metrics,
            joins_seen: 0,
            drain_window: None,
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
        if self.drain_window.is_some() {
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
        if self.sessions.remove(&leave.conn).is_some() {
            self.report_if_idle();
        }
    }
}

impl Handler<Fanout> for UserHub {
    type Result = ();

    fn handle(&mut self, fanout: Fanout, _: &mut Context<Self>) {
        let _span = self
            .forward_span(&fanout.payload)
            .map(tracing::Span::entered);
        self.observe_latency(&fanout.payload);
        if self.sessions.is_empty() {
            self.count_dropped("no_session", 1);
            return;
        }
        // The last session takes the payload itself: a user with one socket costs no clone.
        let mut payload = Some(fanout.payload);
        let mut links = self.sessions.values().peekable();
        let mut gone = 0;
        while let Some(link) = links.next() {
            let payload = match links.peek() {
                Some(_) => payload.clone(),
                None => payload.take(),
            };
            match payload {
                // A session counts what it is handed, as forwarded once written or as dropped.
                Some(payload) if link.deliver.connected() => {
                    link.deliver.do_send(Deliver { payload })
                }
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
        self.drain_window = Some(drain.window);
        let mut rng = rand::rng();
        for link in self.sessions.values() {
            let after = spread_delay(&mut rng, drain.window);
            link.control.do_send(SessionControl::Drain { after });
        }
    }
}

/// A uniformly random point in `window`, so that a node's closes are spread evenly over it.
fn spread_delay(rng: &mut impl Rng, window: Duration) -> Duration {
    let millis = window.as_millis().min(u128::from(u64::MAX)) as u64;
    if millis == 0 {
        return Duration::ZERO;
    }
    Duration::from_millis(rng.random_range(0..millis))
}

impl Handler<Retire> for UserHub {
    type Result = ();

    fn handle(&mut self, _: Retire, ctx: &mut Context<Self>) {
        ctx.stop();
    }
}

impl Handler<SessionCount> for UserHub {
    type Result = usize;

    fn handle(&mut self, _: SessionCount, _: &mut Context<Self>) -> usize {
        self.sessions.len()
    }
}
