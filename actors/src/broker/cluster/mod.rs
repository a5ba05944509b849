//! The Redis Cluster subscriber: sharded pub/sub (`SSUBSCRIBE`), with re-subscription owned here.
//!
//! [`ClusterSubscriber`] keeps one RESP3 pub/sub link per primary (`links`), learns which
//! primary serves each hash slot from `CLUSTER SLOTS` (`topology`), and subscribes each wanted
//! user's channels (`ws:{user}`, and the durable channel when history is on: the same slot by
//! construction) on the primary serving their slot. Subscription changes are batched: one round
//! at a time, one pipeline per node, the commands of each slot grouped together and never a
//! command spanning slots (each SSUBSCRIBE names one channel: redis-rs 1.8.1 can wait for the
//! several confirmations of a multi-channel SSUBSCRIBE only on its own cluster connection, and a
//! refused one would leave a plain connection waiting for confirmations that never come).
//!
//! Why not redis-rs' cluster connection for pub/sub: when it reconnects a node or refreshes its
//! slot map it re-subscribes by itself, one SSUBSCRIBE per node naming every channel of that
//! node (refused with CROSSSLOT as soon as they span slots, and a single `Cmd` that the
//! multiplexed connection answers with the first confirmation only), and it only forwards the
//! `sunsubscribe` a node sends when its slot moves. That cannot be turned off while it has a push
//! sender, so the subscriber does not use it; it owns re-subscription entirely:
//!
//! - a node sends `sunsubscribe` for a channel still wanted (its slot moved, or the node was
//!   demoted by a failover): the slot map is read again (first from that node, which knows), and
//!   the slot's channels are subscribed on the primary now serving it;
//! - a node link drops (a crash, a network cut, a `CLIENT KILL`): its subscriptions are gone;
//!   the slot map is read again until a live primary serves those slots (the replica promoted
//!   after the cluster noticed the crash, or the same node once it answers again);
//! - a subscription answered `MOVED` goes to the node named, and the slot map is read again.
//!
//! Subscriptions are confirmed by the nodes' `ssubscribe` pushes (never by a command's reply,
//! which a stray push could shift); a user is acknowledged to the directory
//! (`RouteSink::channels_live`) once every channel of theirs is confirmed, with
//! `resubscribed = true` after a loss, so its live v2 sockets catch up from the history. A sweep
//! every [`SWEEP_EVERY`] plans again every slot that has not settled, so that a lost reply or
//! confirmation costs a second, never a subscription.
//!
//! Health: up while the slot map is known and the link to at least one primary answers (a
//! shard failing over is a partial outage, shown node by node: [`ClusterNodeHealth`] lists each
//! node for `/healthz`); down when no user could be served. Messages (`smessage` pushes) are routed
//! like the standalone subscriber's, without waiting on any socket.

mod links;
mod state;
mod topology;

use std::collections::{HashMap, HashSet};
use std::task::Poll;
use std::time::Duration;

use actix::prelude::*;
use futures_util::future::join_all;
use redis::aio::ConnectionManager;
use redis::{PushInfo, PushKind, Value};
use serde::Serialize;
use tokio::sync::{mpsc, watch};

use self::links::is_link_failure;
pub(crate) use self::links::NodeDialer;
use self::state::{Cause, Confirmed, Op, Removed, Subscriptions};
pub(crate) use self::topology::Node;
use self::topology::{parse_moved, Topology};
use super::redis::route_message;
use super::{BrokerError, BrokerHealth, Interest, RouteSink};
use crate::backoff::full_jitter;
use crate::ids::UserId;
use crate::metrics::RelayMetrics;

/// First retry delay (slot map reads, failed subscription rounds, link probes).
const RETRY_BASE: Duration = Duration::from_millis(100);
/// Longest retry delay: a failover is noticed within about this much of the cluster finishing it.
const RETRY_CAP: Duration = Duration::from_secs(1);
/// How often every link that is up is checked with PING.
const HEALTH_CHECK_EVERY: Duration = Duration::from_secs(2);
/// How often the slot map is read even when nothing happened (new nodes, missed changes).
const TOPOLOGY_EVERY: Duration = Duration::from_secs(10);
/// How often unsettled slots are planned again.
const SWEEP_EVERY: Duration = Duration::from_secs(1);
/// Most commands in one pipeline to one node.
const PIPELINE_MAX: usize = 2000;
/// Most pushes taken from the links' channel at once.
const PUSH_BATCH: usize = 256;

/// One cluster node as the subscriber sees it, for `/healthz`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ClusterNodeHealth {
    /// `host:port`.
    pub address: String,
    /// Hash slots it serves (0: a node this process still has subscriptions on, e.g. a
    /// primary demoted by a failover, until they are moved).
    pub slots: usize,
    /// `up`, `down` or `connecting`.
    pub state: &'static str,
    /// Why it is down.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Channels this process is subscribed to there.
    pub channels: usize,
}

/// A pub/sub link's state.
#[derive(Clone, Debug, PartialEq, Eq)]
enum LinkState {
    Connecting,
    Up,
    Down(String),
}

/// The pub/sub link to one node.
struct Link {
    connection: ConnectionManager,
    state: LinkState,
    /// A PING is in flight.
    probing: bool,
    /// A PING is scheduled (the link is not up).
    retry_scheduled: bool,
    /// Failed PINGs in a row.
    failures: u32,
}

/// A cluster subscriber being started (see `RedisStart`).
pub(crate) struct ClusterStart {
    context: Context<ClusterSubscriber>,
    dialer: NodeDialer,
    pushes: mpsc::UnboundedSender<(Node, PushInfo)>,
    nodes: watch::Sender<Vec<ClusterNodeHealth>>,
}

impl ClusterStart {
    /// The subscriber's mailbox, for the seed nodes `seeds`; fails only on a bad URL.
    pub(crate) fn new(
        seeds: &[String],
    ) -> Result<(Self, watch::Receiver<Vec<ClusterNodeHealth>>), BrokerError> {
        let dialer = NodeDialer::new(seeds)?;
        let (pushes, push_rx) = mpsc::unbounded_channel();
        let (nodes, nodes_rx) = watch::channel(Vec::new());
        let mut context = Context::<ClusterSubscriber>::new();
        context.add_stream(push_batches(push_rx));
        let start = Self {
            context,
            dialer,
            pushes,
            nodes,
        };
        Ok((start, nodes_rx))
    }

    /// Where the directory reports which channels this node wants.
    pub(crate) fn interest(&self) -> Recipient<Interest> {
        self.context.address().recipient()
    }

    /// Runs the subscriber on the current arbiter.
    pub(crate) fn start(
        self,
        directory: Box<dyn RouteSink>,
        metrics: &RelayMetrics,
        health: watch::Sender<BrokerHealth>,
        prefix: String,
        durable: bool,
    ) {
        let subscriber = ClusterSubscriber {
            subs: Subscriptions::new(prefix.clone(), durable),
            prefix,
            directory,
            metrics: metrics.clone(),
            health,
            nodes: self.nodes,
            dialer: self.dialer,
            pushes: self.pushes,
            links: HashMap::new(),
            topology: None,
            topology_error: None,
            refreshing: false,
            awaiting_map: false,
            refresh_again: false,
            refresh_hint: None,
            refresh_attempt: 0,
            refresh_scheduled: false,
            dirty: HashSet::new(),
            flushing: false,
            retry_attempt: 0,
            retry_scheduled: false,
            was_up: false,
            ever_up: false,
        };
        self.context.run(subscriber);
    }
}

/// The links' pushes as batches of up to [`PUSH_BATCH`].
fn push_batches(
    mut rx: mpsc::UnboundedReceiver<(Node, PushInfo)>,
) -> impl futures_util::Stream<Item = Pushes> {
    futures_util::stream::poll_fn(move |cx| {
        let mut batch = Vec::new();
        match rx.poll_recv_many(cx, &mut batch, PUSH_BATCH) {
            Poll::Ready(0) => Poll::Ready(None),
            Poll::Ready(_) => Poll::Ready(Some(Pushes(batch))),
            Poll::Pending => Poll::Pending,
        }
    })
}

/// Pushes from the node links, each tagged with its node.
struct Pushes(Vec<(Node, PushInfo)>);

/// The Redis Cluster subscriber of this process.
pub struct ClusterSubscriber {
    subs: Subscriptions,
    prefix: String,
    directory: Box<dyn RouteSink>,
    metrics: RelayMetrics,
    health: watch::Sender<BrokerHealth>,
    nodes: watch::Sender<Vec<ClusterNodeHealth>>,
    dialer: NodeDialer,
    pushes: mpsc::UnboundedSender<(Node, PushInfo)>,
    links: HashMap<Node, Link>,
    topology: Option<Topology>,
    topology_error: Option<String>,
    /// A slot map read is in flight.
    refreshing: bool,
    /// Rounds wait for the slot map being read: a node dropped subscriptions by itself or
    /// answered MOVED, so the map is known stale (subscribing by it could land on a demoted
    /// primary, now a replica, which accepts SSUBSCRIBE).
    awaiting_map: bool,
    /// Another read was asked for meanwhile (`refresh_hint`: the node to ask first).
    refresh_again: bool,
    refresh_hint: Option<Node>,
    refresh_attempt: u32,
    refresh_scheduled: bool,
    /// Slots to plan in the next round.
    dirty: HashSet<u16>,
    /// A round of subscription commands is in flight.
    flushing: bool,
    retry_attempt: u32,
    retry_scheduled: bool,
    was_up: bool,
    ever_up: bool,
}

/// What one node answered to its part of a round.
struct NodeReplies {
    node: Node,
    ops: Vec<Op>,
    result: redis::RedisResult<Vec<Value>>,
}

impl ClusterSubscriber {
    fn link_up(&self, node: &Node) -> bool {
        self.links
            .get(node)
            .is_some_and(|link| link.state == LinkState::Up)
    }

    /// Opens the link to `node` (lazily) and probes it, unless it exists.
    fn ensure_link(&mut self, node: &Node, ctx: &mut Context<Self>) {
        if self.links.contains_key(node) {
            return;
        }
        match self.dialer.link(node, self.pushes.clone()) {
            Ok(connection) => {
                let link = Link {
                    connection,
                    state: LinkState::Connecting,
                    probing: false,
                    retry_scheduled: false,
                    failures: 0,
                };
                self.links.insert(node.clone(), link);
                self.probe(node.clone(), ctx);
            }
            Err(error) => tracing::warn!(%node, %error, "cannot open a link to a cluster node"),
        }
    }

    /// PINGs `node`'s link: an answer marks it up (and sends what waited for it); a failure
    /// marks it down (and tries again after a jittered, growing delay).
    fn probe(&mut self, node: Node, ctx: &mut Context<Self>) {
        let Some(link) = self.links.get_mut(&node) else {
            return;
        };
        if link.probing {
            return;
        }
        link.probing = true;
        let mut connection = link.connection.clone();
        let ping = async move {
            redis::cmd("PING")
                .query_async::<Value>(&mut connection)
                .await
        };
        ctx.spawn(ping.into_actor(self).map(move |result, this, ctx| {
            let Some(link) = this.links.get_mut(&node) else {
                return;
            };
            link.probing = false;
            let was_up = link.state == LinkState::Up;
            match result {
                Err(error) if is_link_failure(&error) => {
                    link.failures = link.failures.saturating_add(1);
                    this.link_down(&node, &format!("unreachable: {error}"), ctx);
                }
                // Any answer (even an error reply) means the link works.
                _ => {
                    link.failures = 0;
                    if !was_up {
                        link.state = LinkState::Up;
                        tracing::info!(%node, "cluster node link up");
                        this.update_health();
                        this.flush(ctx);
                    }
                }
            }
        }));
    }

    /// PINGs `node`'s link again after a jittered delay growing with its failures, unless a
    /// PING is already in flight or scheduled.
    fn probe_later(&mut self, node: &Node, ctx: &mut Context<Self>) {
        let Some(link) = self.links.get_mut(node) else {
            return;
        };
        if link.probing || link.retry_scheduled {
            return;
        }
        link.retry_scheduled = true;
        let delay = full_jitter(RETRY_BASE, RETRY_CAP, link.failures);
        let node = node.clone();
        ctx.run_later(delay, move |this, ctx| {
            let Some(link) = this.links.get_mut(&node) else {
                return;
            };
            link.retry_scheduled = false;
            if link.state != LinkState::Up {
                this.probe(node, ctx);
            }
        });
    }

    /// `node`'s link failed: everything subscribed there is gone. Reads the slot map again (the
    /// node may have failed over).
    fn link_down(&mut self, node: &Node, reason: &str, ctx: &mut Context<Self>) {
        if let Some(link) = self.links.get_mut(node) {
            if link.state == LinkState::Up {
                tracing::warn!(%node, reason, "cluster node link lost");
            }
            link.state = LinkState::Down(reason.to_owned());
        }
        let mut lost = false;
        for removed in self.subs.on_disconnected(node) {
            if let Removed::Resubscribe {
                slot,
                lost: was_live,
            } = removed
            {
                self.dirty.insert(slot);
                lost |= was_live;
            }
        }
        if lost {
            tracing::info!(%node, "subscriptions lost with the link: re-subscribing");
        }
        self.update_health();
        self.refresh_topology(None, ctx);
        self.probe_later(node, ctx);
    }

    fn on_pushes(&mut self, pushes: Vec<(Node, PushInfo)>, ctx: &mut Context<Self>) {
        let mut routes = Vec::with_capacity(pushes.len());
        let mut first = Vec::new();
        let mut again: Vec<(UserId, Cause)> = Vec::new();
        let mut refresh_from: Option<Node> = None;
        for (node, push) in pushes {
            match push.kind {
                PushKind::SMessage => routes.extend(route_message(&self.prefix, push.data)),
                PushKind::SSubscribe => {
                    let Some(channel) = first_channel(push.data) else {
                        continue;
                    };
                    match self
                        .subs
                        .on_subscribed(&node, &channel, self.topology.as_ref())
                    {
                        Confirmed::Nothing => {}
                        Confirmed::Unwanted(slot) => {
                            self.dirty.insert(slot);
                        }
                        Confirmed::Live(user, None) => first.push(user),
                        Confirmed::Live(user, Some(cause)) => again.push((user, cause)),
                    }
                }
                PushKind::SUnsubscribe => {
                    let Some(channel) = first_channel(push.data) else {
                        continue;
                    };
                    // A wanted channel no longer subscribed anywhere: the node dropped it by
                    // itself (its slot moved, or it was demoted), so the slot map is stale.
                    if let Removed::Resubscribe { slot, .. } =
                        self.subs.on_unsubscribed(&node, &channel)
                    {
                        self.dirty.insert(slot);
                        if refresh_from.is_none() {
                            tracing::info!(%node, "cluster node dropped our subscriptions (slot moved or failover)");
                            refresh_from = Some(node);
                        }
                    }
                }
                PushKind::Disconnection => {
                    self.directory.route_all(std::mem::take(&mut routes));
                    self.link_down(&node, "connection lost", ctx);
                }
                _ => {}
            }
        }
        self.directory.route_all(routes);
        self.acknowledge(first, again);
        match refresh_from {
            Some(node) => {
                self.awaiting_map = true;
                self.refresh_topology(Some(node), ctx);
            }
            None => self.flush(ctx),
        }
        self.update_health();
    }

    /// Tells the directory which users are live: `first` for the first time, `again` after a
    /// loss (their live v2 sockets catch up), counted by cause.
    fn acknowledge(&mut self, first: Vec<UserId>, again: Vec<(UserId, Cause)>) {
        if !first.is_empty() {
            self.directory.channels_live(first, false);
        }
        if !again.is_empty() {
            for (_, cause) in &again {
                self.metrics
                    .cluster_resubscriptions
                    .with_label_values(&[cause.as_str()])
                    .inc();
            }
            let users = again.into_iter().map(|(user, _)| user).collect();
            self.directory.channels_live(users, true);
        }
    }

    /// Reads the slot map (`hint` first, then live primaries, then the seeds); a read already
    /// in flight is followed by another.
    fn refresh_topology(&mut self, hint: Option<Node>, ctx: &mut Context<Self>) {
        if self.refreshing {
            self.refresh_again = true;
            if hint.is_some() {
                self.refresh_hint = hint;
            }
            return;
        }
        self.refreshing = true;
        let mut candidates: Vec<Node> = Vec::new();
        let mut push = |node: &Node| {
            if !candidates.contains(node) {
                candidates.push(node.clone());
            }
        };
        if let Some(node) = &hint {
            push(node);
        }
        let mut up: Vec<&Node> = self
            .links
            .iter()
            .filter(|(_, link)| link.state == LinkState::Up)
            .map(|(node, _)| node)
            .collect();
        up.sort();
        up.into_iter().for_each(&mut push);
        self.dialer.seeds().iter().for_each(&mut push);
        let mut known = self
            .topology
            .as_ref()
            .map(Topology::primaries)
            .unwrap_or_default();
        known.extend(self.links.keys().cloned());
        known.iter().for_each(&mut push);
        let dialer = self.dialer.clone();
        let read = async move {
            let mut errors = Vec::new();
            for node in candidates {
                match dialer.slots(&node).await {
                    Ok(topology) => return Ok(topology),
                    Err(error) => errors.push(error),
                }
            }
            Err(errors.join("; "))
        };
        ctx.spawn(read.into_actor(self).map(|result, this, ctx| {
            this.refreshing = false;
            this.awaiting_map = false;
            match result {
                Ok(topology) => this.apply_topology(topology, ctx),
                Err(error) => {
                    if this.topology_error.is_none() {
                        tracing::warn!(%error, "cannot read the cluster slot map");
                    }
                    this.topology_error = Some(error);
                    this.update_health();
                    this.refresh_later(ctx);
                }
            }
            if std::mem::take(&mut this.refresh_again) {
                let hint = this.refresh_hint.take();
                this.refresh_topology(hint, ctx);
            }
            this.flush(ctx);
        }));
    }

    /// Reads the slot map again after a jittered, growing delay (once per pending delay).
    fn refresh_later(&mut self, ctx: &mut Context<Self>) {
        if self.refresh_scheduled {
            return;
        }
        self.refresh_scheduled = true;
        let delay = full_jitter(RETRY_BASE, RETRY_CAP, self.refresh_attempt);
        self.refresh_attempt = self.refresh_attempt.saturating_add(1);
        ctx.run_later(delay, |this, ctx| {
            this.refresh_scheduled = false;
            this.refresh_topology(None, ctx);
        });
    }

    fn apply_topology(&mut self, topology: Topology, ctx: &mut Context<Self>) {
        let changed: Vec<u16> = self
            .subs
            .slots_in_use()
            .into_iter()
            .filter(|&slot| {
                self.topology.as_ref().and_then(|old| old.owner(slot)) != topology.owner(slot)
            })
            .collect();
        if self.topology.as_ref() != Some(&topology) {
            tracing::info!(
                primaries = topology.primaries().len(),
                moved_slots_in_use = changed.len(),
                "cluster slot map read"
            );
            // A new map: the next wait (if any) starts short again. An unchanged one while
            // slots wait for a primary (a crash not yet failed over) lets the reads slow down.
            self.refresh_attempt = 0;
        }
        self.dirty.extend(changed);
        let primaries = topology.primaries();
        self.topology = Some(topology);
        self.topology_error = None;
        for node in &primaries {
            self.ensure_link(node, ctx);
        }
        let subs = &self.subs;
        self.links
            .retain(|node, _| primaries.contains(node) || subs.channels_on(node) > 0);
        self.update_health();
    }

    /// Sends the pending subscription changes: one round at a time, one pipeline per node.
    /// Slots whose primary is unknown or unreachable wait (and the slot map is read again).
    fn flush(&mut self, ctx: &mut Context<Self>) {
        if self.flushing || self.awaiting_map || self.dirty.is_empty() {
            return;
        }
        let Some(topology) = self.topology.clone() else {
            self.refresh_later(ctx);
            return;
        };
        let mut by_node: HashMap<Node, Vec<Op>> = HashMap::new();
        let mut waiting = HashSet::new();
        let mut slots: Vec<u16> = self.dirty.drain().collect();
        slots.sort_unstable();
        for slot in slots {
            let Some(owner) = topology.owner(slot).cloned() else {
                waiting.insert(slot);
                continue;
            };
            if !self.link_up(&owner) {
                self.ensure_link(&owner, ctx);
                waiting.insert(slot);
                continue;
            }
            for (node, op) in self.subs.plan(slot, &owner) {
                if self.link_up(&node) {
                    by_node.entry(node).or_default().push(op);
                } else if op.subscribe || self.links.contains_key(&node) {
                    waiting.insert(slot);
                } else {
                    // Subscribed on a node this process has no link to any more: the link's
                    // end took the subscription with it.
                    self.subs.on_unsubscribed(&node, &op.channel);
                }
            }
        }
        if !waiting.is_empty() {
            self.dirty.extend(waiting);
            self.refresh_later(ctx);
        }
        if by_node.is_empty() {
            return;
        }
        self.flushing = true;
        let sends: Vec<_> = by_node
            .into_iter()
            .filter_map(|(node, ops)| {
                let connection = self.links.get(&node)?.connection.clone();
                Some(send_ops(node, ops, connection))
            })
            .collect();
        ctx.spawn(
            join_all(sends)
                .into_actor(self)
                .map(|replies, this, ctx| this.on_round_done(replies, ctx)),
        );
    }

    fn on_round_done(&mut self, replies: Vec<NodeReplies>, ctx: &mut Context<Self>) {
        self.flushing = false;
        let mut failed = false;
        let mut moved_to: Option<Node> = None;
        for NodeReplies { node, ops, result } in replies {
            let values = match result {
                Ok(values) if values.len() == ops.len() => values,
                Ok(values) => {
                    tracing::warn!(%node, replies = values.len(), commands = ops.len(), "unexpected subscription replies");
                    failed = true;
                    self.dirty.extend(ops.iter().map(|op| op.slot));
                    continue;
                }
                Err(error) => {
                    failed = true;
                    self.dirty.extend(ops.iter().map(|op| op.slot));
                    if is_link_failure(&error) {
                        self.link_down(&node, &format!("subscription failed: {error}"), ctx);
                    } else {
                        tracing::warn!(%node, %error, "subscription round refused");
                    }
                    continue;
                }
            };
            for (op, value) in ops.into_iter().zip(values) {
                let Value::ServerError(error) = value else {
                    continue;
                };
                failed = true;
                self.dirty.insert(op.slot);
                if !op.subscribe {
                    // Refused (e.g. MOVED): the node does not serve that slot, so it holds no
                    // subscription to it any more.
                    self.subs.on_unsubscribed(&node, &op.channel);
                    continue;
                }
                match (error.code(), error.details().and_then(parse_moved)) {
                    ("MOVED", Some((slot, owner))) => {
                        if let Some(topology) = &mut self.topology {
                            topology.set_owner(slot, &owner);
                        }
                        self.ensure_link(&owner, ctx);
                        moved_to = Some(owner);
                    }
                    (code, _) => {
                        tracing::debug!(%node, code, "subscription refused; retrying");
                    }
                }
            }
        }
        self.metrics
            .subscribed_channels
            .set(self.subs.wanted_count() as i64);
        if let Some(owner) = moved_to {
            self.awaiting_map = true;
            self.refresh_topology(Some(owner), ctx);
        }
        if failed {
            self.retry_later(ctx);
        } else {
            self.retry_attempt = 0;
            self.flush(ctx);
        }
    }

    /// Flushes again after a jittered, growing delay.
    fn retry_later(&mut self, ctx: &mut Context<Self>) {
        if self.retry_scheduled {
            return;
        }
        self.retry_scheduled = true;
        let delay = full_jitter(RETRY_BASE, RETRY_CAP, self.retry_attempt);
        self.retry_attempt = self.retry_attempt.saturating_add(1);
        ctx.run_later(delay, |this, ctx| {
            this.retry_scheduled = false;
            this.flush(ctx);
        });
    }

    /// Publishes the broker's health and every node's.
    fn update_health(&mut self) {
        let mut nodes: Vec<Node> = self
            .topology
            .as_ref()
            .map(Topology::primaries)
            .unwrap_or_default();
        for node in self.links.keys() {
            if !nodes.contains(node) {
                nodes.push(node.clone());
            }
        }
        nodes.sort();
        let report: Vec<ClusterNodeHealth> = nodes
            .iter()
            .map(|node| {
                let slots = self.topology.as_ref().map_or(0, |t| t.slot_count(node));
                let (state, reason) = match self.links.get(node).map(|l| &l.state) {
                    Some(LinkState::Up) => ("up", None),
                    Some(LinkState::Down(reason)) => ("down", Some(reason.clone())),
                    Some(LinkState::Connecting) | None => ("connecting", None),
                };
                ClusterNodeHealth {
                    address: node.to_string(),
                    slots,
                    state,
                    reason,
                    channels: self.subs.channels_on(node),
                }
            })
            .collect();
        // Down only when no user can be served: one shard failing over (its primary down for
        // the cluster's failover time) must not turn every replica of the service unready at
        // once; `/healthz` shows such a partial outage node by node (`degraded`).
        let health = match &self.topology {
            None => BrokerHealth::Down {
                reason: match &self.topology_error {
                    Some(error) => format!("cluster slot map unknown: {error}"),
                    None => "connecting to redis cluster".to_owned(),
                },
            },
            Some(_) if !report.iter().any(|n| n.slots > 0 && n.state == "up") => {
                let reasons: Vec<String> = report
                    .iter()
                    .filter(|n| n.slots > 0)
                    .map(|n| {
                        let why = n.reason.as_deref().unwrap_or(n.state);
                        format!("{} {why}", n.address)
                    })
                    .collect();
                BrokerHealth::Down {
                    reason: format!("no cluster primary reachable: {}", reasons.join("; ")),
                }
            }
            Some(_) => BrokerHealth::Up,
        };
        let up = health.is_up();
        if up && !self.was_up {
            if self.ever_up {
                self.metrics.broker_reconnects.inc();
            }
            tracing::info!(
                primaries = report.iter().filter(|n| n.slots > 0).count(),
                "redis cluster subscriber up"
            );
            self.ever_up = true;
        }
        self.was_up = up;
        self.metrics.broker_connected.set(i64::from(up));
        self.health.send_if_modified(|current| {
            let changed = *current != health;
            *current = health;
            changed
        });
        self.nodes.send_if_modified(|current| {
            let changed = *current != report;
            *current = report;
            changed
        });
    }

    /// PINGs every link that is up (a link that is not has its own retries).
    fn health_check(&mut self, ctx: &mut Context<Self>) {
        let up: Vec<Node> = self
            .links
            .iter()
            .filter(|(_, link)| link.state == LinkState::Up)
            .map(|(node, _)| node.clone())
            .collect();
        for node in up {
            self.probe(node, ctx);
        }
    }

    /// Plans again every slot that has not settled.
    fn sweep(&mut self, ctx: &mut Context<Self>) {
        if self.flushing {
            return;
        }
        let unsettled = self.subs.unsettled_slots();
        if !unsettled.is_empty() {
            self.dirty.extend(unsettled);
            self.flush(ctx);
        }
    }
}

/// The channel a `ssubscribe`/`sunsubscribe` push is about.
fn first_channel(data: Vec<Value>) -> Option<Vec<u8>> {
    match data.into_iter().next()? {
        Value::BulkString(channel) => Some(channel),
        _ => None,
    }
}

/// Sends `ops` to `node` in pipelines of at most [`PIPELINE_MAX`] commands, one channel per
/// command; answers each command's reply (errors as values).
async fn send_ops(node: Node, ops: Vec<Op>, mut connection: ConnectionManager) -> NodeReplies {
    let mut values = Vec::with_capacity(ops.len());
    for chunk in ops.chunks(PIPELINE_MAX) {
        let mut pipeline = redis::pipe();
        pipeline.ignore_errors();
        for op in chunk {
            let command = if op.subscribe {
                "SSUBSCRIBE"
            } else {
                "SUNSUBSCRIBE"
            };
            pipeline.cmd(command).arg(&op.channel);
        }
        match pipeline.query_async::<Vec<Value>>(&mut connection).await {
            Ok(replies) => values.extend(replies),
            Err(error) => {
                return NodeReplies {
                    node,
                    ops,
                    result: Err(error),
                }
            }
        }
    }
    NodeReplies {
        node,
        ops,
        result: Ok(values),
    }
}

impl Actor for ClusterSubscriber {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        ctx.run_interval(HEALTH_CHECK_EVERY, |this, ctx| this.health_check(ctx));
        ctx.run_interval(TOPOLOGY_EVERY, |this, ctx| this.refresh_topology(None, ctx));
        ctx.run_interval(SWEEP_EVERY, |this, ctx| this.sweep(ctx));
        self.update_health();
        self.refresh_topology(None, ctx);
    }
}

impl Handler<Interest> for ClusterSubscriber {
    type Result = ();

    fn handle(&mut self, interest: Interest, ctx: &mut Context<Self>) {
        let slot = if interest.wanted {
            self.subs.want(interest.user)
        } else {
            self.subs.unwant(&interest.user)
        };
        self.dirty.insert(slot);
        self.flush(ctx);
    }
}

impl StreamHandler<Pushes> for ClusterSubscriber {
    fn handle(&mut self, pushes: Pushes, ctx: &mut Context<Self>) {
        self.on_pushes(pushes.0, ctx);
    }
}
