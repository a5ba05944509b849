//! The directory: finds or creates the hub of a user. It is sharded by a hash of the user id
//! into `DirectoryShard` actors, each on its own arbiter, so that no single mailbox sees every
//! connect and every message. A shard owns the map from user to hub, starts hubs in its own
//! context, retires them when they empty, and tells the broker which channels it needs. Its
//! arbiter also runs the sessions of its users ([`Directory::arbiter_of`]), so that a
//! message crosses threads once, from the broker to the shard, in batches.

use std::collections::hash_map::DefaultHasher;
use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;

use crate::hub::{
    DrainHub, Fanout, Join, JoinRefusal, Leave, Retire, SessionControl, SessionLink, UserHub,
};
use crate::ids::{ConnId, UserId};
use crate::metrics::RelayMetrics;
use crate::payload::Payload;
use crate::trace::ForwardTracer;

/// Whether this node wants a user's broker channel. Sent to the broker subscriber in order, per
/// user, so the last one it received for a user is the truth.
#[derive(Message, Clone, Debug, PartialEq, Eq)]
#[rtype(result = "()")]
pub struct Interest {
    /// The user whose channel this is about.
    pub user: UserId,
    /// `true`: subscribe; `false`: unsubscribe.
    pub wanted: bool,
}

/// A new session asks to join its user's hub.
#[derive(Message, Debug)]
#[rtype(result = "()")]
pub struct Connect {
    /// The session's user.
    pub user: UserId,
    /// The session.
    pub conn: ConnId,
    /// How to reach it.
    pub link: SessionLink,
}

/// A session has stopped; its hub forgets it.
#[derive(Message, Debug)]
#[rtype(result = "()")]
pub struct Disconnect {
    /// The session's user.
    pub user: UserId,
    /// The session.
    pub conn: ConnId,
}

/// Whose broker message it is, as the broker has it: a user id, or the channel name it arrived
/// on (taken over without a copy) with the channel prefix to skip.
#[derive(Debug)]
pub enum RouteUser {
    /// A user id (in-process broker, publish API).
    Id(UserId),
    /// `ws:{user}` as received from Redis; the user id starts at `skip`.
    Channel {
        /// The whole channel name.
        name: String,
        /// Length of the channel prefix.
        skip: usize,
    },
}

impl RouteUser {
    /// The user of a channel named `prefix` + user id, or `None` for any other channel (or a
    /// name that is not UTF-8).
    pub fn from_channel(channel: Vec<u8>, prefix: &str) -> Option<Self> {
        if !channel.starts_with(prefix.as_bytes()) {
            return None;
        }
        let name = String::from_utf8(channel).ok()?;
        Some(RouteUser::Channel {
            name,
            skip: prefix.len(),
        })
    }

    /// The user id.
    pub fn as_str(&self) -> &str {
        match self {
            RouteUser::Id(user) => user.as_str(),
            RouteUser::Channel { name, skip } => name.get(*skip..).unwrap_or_default(),
        }
    }
}

/// Broker messages for users of one shard, in the order the broker delivered them.
#[derive(Message, Debug)]
#[rtype(result = "()")]
pub struct RouteBatch {
    /// Each user with its message.
    pub routes: Vec<(RouteUser, Payload)>,
    /// Their room in the shard's queue, given back when the batch is dropped.
    room: RouteRoom,
}

/// A hub reports that it has no session left after `joins_seen` joins.
#[derive(Message, Debug)]
#[rtype(result = "()")]
pub struct HubIdle {
    /// The hub's user.
    pub user: UserId,
    /// Joins the hub has handled; if the shard forwarded more, one is in flight.
    pub joins_seen: u64,
}

/// Starts the drain: refuse new sessions, drain every hub.
#[derive(Message, Clone, Copy, Debug)]
#[rtype(result = "()")]
pub struct DrainShard {
    /// The span over which the closes are spread.
    pub window: Duration,
}

/// How many hubs a shard holds.
#[derive(Message, Debug)]
#[rtype(result = "usize")]
pub struct HubCount;

struct HubEntry {
    addr: Addr<UserHub>,
    joins_sent: u64,
}

/// Settings every hub of a shard shares.
#[derive(Clone, Default)]
pub struct HubSettings {
    /// The per-user quota.
    pub max_sessions_per_user: usize,
    /// Makes forward spans; `None` when trace export is off.
    pub tracer: Option<Arc<dyn ForwardTracer>>,
}

/// One shard of the directory.
pub struct DirectoryShard {
    hubs: HashMap<UserId, HubEntry>,
    settings: HubSettings,
    interest: Option<Recipient<Interest>>,
    metrics: RelayMetrics,
    drain_window: Option<Duration>,
}

impl DirectoryShard {
    /// A shard that reports channel interest to `interest` (none for the in-process broker).
    pub fn new(
        settings: HubSettings,
        interest: Option<Recipient<Interest>>,
        metrics: RelayMetrics,
    ) -> Self {
        Self {
            hubs: HashMap::new(),
            settings,
            interest,
            metrics,
            drain_window: None,
        }
    }

    fn tell_interest(&self, user: &UserId, wanted: bool) {
        if let Some(interest) = &self.interest {
            interest.do_send(Interest {
                user: user.clone(),
                wanted,
            });
        }
    }

    fn start_hub(&self, user: &UserId, ctx: &mut Context<Self>) -> Addr<UserHub> {
        self.metrics.users_active.inc();
        self.tell_interest(user, true);
        UserHub::new(
            user.clone(),
            self.settings.clone(),
            ctx.address(),
            self.metrics.clone(),
        )
        .start()
    }
}

/// Messages from the broker that may wait for a shard before new ones are dropped (and counted):
/// when publishers outrun the node, memory stays bounded and the broker is still read at once.
/// Counted in messages, however they are packed into [`RouteBatch`] envelopes.
pub const ROUTE_QUEUE_MAX: usize = 65_536;
/// Most messages in one [`RouteBatch`]: one mailbox envelope and one wake-up of the shard's
/// thread carry up to this many.
pub const ROUTE_BATCH_MAX: usize = 64;

/// How many broker messages wait for one shard, shared by the senders and the batches in flight.
#[derive(Clone, Debug, Default)]
struct RouteQueue {
    queued: Arc<AtomicUsize>,
}

impl RouteQueue {
    /// Takes room for as many of `wanted` messages as fit under [`ROUTE_QUEUE_MAX`].
    fn reserve(&self, wanted: usize) -> RouteRoom {
        let mut granted = 0;
        // The closure always returns `Some`, so the update cannot fail.
        let _ = self
            .queued
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |queued| {
                granted = wanted.min(ROUTE_QUEUE_MAX.saturating_sub(queued));
                Some(queued + granted)
            });
        RouteRoom {
            queued: Arc::clone(&self.queued),
            granted,
        }
    }
}

/// Room for `granted` messages in a shard's queue; given back on drop, that is once the shard
/// has routed the batch carrying it (or the batch was lost with a stopped shard).
#[derive(Debug)]
struct RouteRoom {
    queued: Arc<AtomicUsize>,
    granted: usize,
}

impl Drop for RouteRoom {
    fn drop(&mut self) {
        self.queued.fetch_sub(self.granted, Ordering::AcqRel);
    }
}

/// The shard's mailbox itself is unbounded: the bound on broker messages is [`RouteQueue`]'s,
/// in messages, and everything else a shard receives is sent with `do_send`, which ignores a
/// mailbox's capacity anyway.
impl Actor for DirectoryShard {
    type Context = Context<Self>;
}

impl Handler<Connect> for DirectoryShard {
    type Result = ();

    fn handle(&mut self, connect: Connect, ctx: &mut Context<Self>) {
        if self.drain_window.is_some() {
            connect
                .link
                .control
                .do_send(SessionControl::Refused(JoinRefusal::Draining));
            return;
        }
        if !self.hubs.contains_key(&connect.user) {
            let addr = self.start_hub(&connect.user, ctx);
            self.hubs.insert(
                connect.user.clone(),
                HubEntry {
                    addr,
                    joins_sent: 0,
                },
            );
        }
        let Some(entry) = self.hubs.get_mut(&connect.user) else {
            return;
        };
        entry.joins_sent += 1;
        entry.addr.do_send(Join {
            conn: connect.conn,
            link: connect.link,
        });
    }
}

impl Handler<Disconnect> for DirectoryShard {
    type Result = ();

    fn handle(&mut self, disconnect: Disconnect, _: &mut Context<Self>) {
        if let Some(entry) = self.hubs.get(&disconnect.user) {
            entry.addr.do_send(Leave {
                conn: disconnect.conn,
            });
        }
    }
}

impl DirectoryShard {
    /// Hands one message to the user's hub, or counts it dropped when the user has none here.
    fn route(&self, user: &str, payload: Payload) {
        self.metrics.message_size.observe(payload.len() as f64);
        match self.hubs.get(user) {
            Some(entry) => entry.addr.do_send(Fanout { payload }),
            None => self
                .metrics
                .messages_dropped
                .with_label_values(&["no_session"])
                .inc(),
        }
    }
}

impl Handler<RouteBatch> for DirectoryShard {
    type Result = ();

    fn handle(&mut self, batch: RouteBatch, _: &mut Context<Self>) {
        let RouteBatch { routes, room } = batch;
        for (user, payload) in routes {
            self.route(user.as_str(), payload);
        }
        drop(room); // routed: the queue has room for as many new messages
    }
}

impl Handler<HubIdle> for DirectoryShard {
    type Result = ();

    fn handle(&mut self, idle: HubIdle, _: &mut Context<Self>) {
        let Some(entry) = self.hubs.get(&idle.user) else {
            return;
        };
        if entry.joins_sent != idle.joins_seen {
            return; // a join is on its way to the hub: it is not empty for long
        }
        if let Some(entry) = self.hubs.remove(&idle.user) {
            entry.addr.do_send(Retire);
            self.metrics.users_active.dec();
            self.tell_interest(&idle.user, false);
        }
    }
}

impl Handler<DrainShard> for DirectoryShard {
    type Result = ();

    fn handle(&mut self, drain: DrainShard, _: &mut Context<Self>) {
        self.drain_window = Some(drain.window);
        for entry in self.hubs.values() {
            entry.addr.do_send(DrainHub {
                window: drain.window,
            });
        }
    }
}

impl Handler<HubCount> for DirectoryShard {
    type Result = usize;

    fn handle(&mut self, _: HubCount, _: &mut Context<Self>) -> usize {
        self.hubs.len()
    }
}

/// The handle everything else uses: routes each call to the shard of its user.
#[derive(Clone)]
pub struct Directory {
    shards: Arc<[Addr<DirectoryShard>]>,
    /// The broker messages waiting for each shard, by shard index.
    queues: Arc<[RouteQueue]>,
    /// The arbiter each shard (and so each of its hubs) runs on, by shard index.
    arbiters: Arc<[ArbiterHandle]>,
    metrics: RelayMetrics,
}

impl Directory {
    /// Starts one shard on each arbiter.
    pub fn start(
        arbiters: &[ArbiterHandle],
        settings: HubSettings,
        interest: Option<Recipient<Interest>>,
        metrics: RelayMetrics,
    ) -> Self {
        let shards = arbiters
            .iter()
            .map(|arbiter| {
                let (settings, interest, metrics) =
                    (settings.clone(), interest.clone(), metrics.clone());
                DirectoryShard::start_in_arbiter(arbiter, move |_| {
                    DirectoryShard::new(settings, interest, metrics)
                })
            })
            .collect();
        Self {
            shards,
            queues: arbiters.iter().map(|_| RouteQueue::default()).collect(),
            arbiters: Arc::from(arbiters),
            metrics,
        }
    }

    /// Starts a single shard on the current arbiter (tests and tiny deployments).
    pub fn start_local(
        settings: HubSettings,
        interest: Option<Recipient<Interest>>,
        metrics: RelayMetrics,
    ) -> Self {
        let shard = DirectoryShard::new(settings, interest, metrics.clone()).start();
        Self {
            shards: Arc::from(vec![shard]),
            queues: Arc::from(vec![RouteQueue::default()]),
            arbiters: Arc::from(vec![Arbiter::current()]),
            metrics,
        }
    }

    /// The arbiter of the user's hub: a session started there gets its messages from the hub
    /// without crossing threads.
    pub fn arbiter_of(&self, user: &UserId) -> &ArbiterHandle {
        &self.arbiters[self.shard_index(user.as_str())]
    }

    fn shard_index(&self, user: &str) -> usize {
        let mut hasher = DefaultHasher::new();
        user.hash(&mut hasher);
        (hasher.finish() % self.shards.len() as u64) as usize
    }

    fn shard_of(&self, user: &UserId) -> &Addr<DirectoryShard> {
        &self.shards[self.shard_index(user.as_str())]
    }

    /// Asks the user's hub to admit a session; the answer goes to `link.control`.
    pub fn connect(&self, user: UserId, conn: ConnId, link: SessionLink) {
        self.shard_of(&user).do_send(Connect { user, conn, link });
    }

    /// Tells the user's hub that a session has stopped.
    pub fn leave(&self, user: UserId, conn: ConnId) {
        self.shard_of(&user).do_send(Disconnect { user, conn });
    }

    /// Hands a broker message to the user's hub, if the user has one here. Never waits: when
    /// the shard is [`ROUTE_QUEUE_MAX`] messages behind, the message is dropped and counted.
    pub fn route(&self, user: UserId, payload: Payload) {
        self.route_all([(RouteUser::Id(user), payload)]);
    }

    /// Hands many broker messages to their users' hubs: one envelope per shard for up to
    /// [`ROUTE_BATCH_MAX`] of them, in order per user. Never waits; what does not fit in a
    /// shard's queue of [`ROUTE_QUEUE_MAX`] messages is dropped and counted (`overload`).
    pub fn route_all(&self, routes: impl IntoIterator<Item = (RouteUser, Payload)>) {
        let mut batches: Vec<Vec<(RouteUser, Payload)>> =
            self.shards.iter().map(|_| Vec::new()).collect();
        for (user, payload) in routes {
            let index = self.shard_index(user.as_str());
            batches[index].push((user, payload));
            if batches[index].len() == ROUTE_BATCH_MAX {
                self.send_batch(index, std::mem::take(&mut batches[index]));
            }
        }
        for (index, batch) in batches.into_iter().enumerate() {
            if !batch.is_empty() {
                self.send_batch(index, batch);
            }
        }
    }

    /// Sends to a shard what its queue has room for; the rest is dropped and counted.
    fn send_batch(&self, shard: usize, mut routes: Vec<(RouteUser, Payload)>) {
        let room = self.queues[shard].reserve(routes.len());
        self.count_dropped("overload", routes.len() - room.granted);
        routes.truncate(room.granted);
        if routes.is_empty() {
            return;
        }
        let addr = &self.shards[shard];
        if !addr.connected() {
            self.count_dropped("shutdown", routes.len());
            return;
        }
        addr.do_send(RouteBatch { routes, room });
    }

    fn count_dropped(&self, reason: &str, messages: usize) {
        if messages > 0 {
            self.metrics
                .messages_dropped
                .with_label_values(&[reason])
                .inc_by(messages as u64);
        }
    }

    /// Starts the drain on every shard.
    pub fn drain(&self, window: Duration) {
        for shard in self.shards.iter() {
            shard.do_send(DrainShard { window });
        }
    }

    /// How many users have a hub on this node, summed over the shards.
    pub async fn hub_count(&self) -> Result<usize, MailboxError> {
        let mut total = 0;
        for shard in self.shards.iter() {
            total += shard.send(HubCount).await?;
        }
        Ok(total)
    }
}
