//! The cluster subscriber's bookkeeping, without any I/O: which users this node wants, which of
//! their channels each cluster node has confirmed (`ssubscribe` pushes), which users are live
//! (every channel confirmed and acknowledged to the directory), and which lost a subscription
//! (a `sunsubscribe` the server sent by itself, or a dropped node connection) and so will be
//! acknowledged again as *re-subscribed*, with the cause.
//!
//! Everything is grouped by hash slot: a user's channels (`ws:{user}` and its durable channel)
//! share one slot by construction, and [`Subscriptions::plan`] answers the commands that bring
//! one slot to what is wanted, on the node serving it: SSUBSCRIBE what is missing there,
//! SUNSUBSCRIBE what is no longer wanted, and what is still subscribed on a node that stopped
//! serving the slot once the owner has confirmed it.

use std::collections::{HashMap, HashSet};

use super::topology::{Node, Topology};
use crate::broker::keys::{slot, UserKeys};
use crate::broker::{channel_name, RouteUser};
use crate::ids::UserId;

/// Why a user's subscription had to be made again (the `cause` label of
/// `ws_cluster_resubscriptions_total`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) enum Cause {
    /// Its slot moved to another primary (resharding).
    SlotMoved,
    /// Its primary failed over to a replica (manual failover, or the primary died).
    Failover,
    /// The connection to its primary dropped, and the same primary serves it again.
    Reconnect,
}

impl Cause {
    /// The metric label.
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Cause::SlotMoved => "slot_moved",
            Cause::Failover => "failover",
            Cause::Reconnect => "reconnect",
        }
    }
}

/// How a live user lost a subscription.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Loss {
    /// The node that had it.
    node: Node,
    /// True: the connection to that node dropped; false: the node sent `sunsubscribe`.
    disconnected: bool,
}

/// One subscription command: SSUBSCRIBE or SUNSUBSCRIBE of one channel.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Op {
    /// The channel's hash slot.
    pub slot: u16,
    /// The channel.
    pub channel: Vec<u8>,
    /// True: SSUBSCRIBE; false: SUNSUBSCRIBE.
    pub subscribe: bool,
}

/// What a confirmation changed.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Confirmed {
    /// Nothing for the directory.
    Nothing,
    /// A channel nobody wants is subscribed: plan its slot again (to unsubscribe it).
    Unwanted(u16),
    /// Every channel of a wanted user is subscribed: acknowledge it (`Some(cause)`: again, after
    /// a loss).
    Live(UserId, Option<Cause>),
}

/// What a removal (`sunsubscribe`, dropped connection) changed for one user.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Removed {
    /// Nothing that needs action.
    Nothing,
    /// A wanted user's channel is no longer subscribed: plan its slot again. `lost`: the user
    /// was live (its next acknowledgement is a re-subscription).
    Resubscribe {
        /// The slot to plan again.
        slot: u16,
        /// Whether a live user lost its subscription.
        lost: bool,
    },
}

/// Which nodes confirmed a user's channels (usually one each).
#[derive(Debug, Default)]
struct Confirmations {
    plain: Vec<Node>,
    durable: Vec<Node>,
}

impl Confirmations {
    fn nodes(&self, durable: bool) -> &Vec<Node> {
        if durable {
            &self.durable
        } else {
            &self.plain
        }
    }

    fn nodes_mut(&mut self, durable: bool) -> &mut Vec<Node> {
        if durable {
            &mut self.durable
        } else {
            &mut self.plain
        }
    }

    fn is_empty(&self) -> bool {
        self.plain.is_empty() && self.durable.is_empty()
    }
}

/// The subscriber's view of what is wanted and what each node has confirmed. Kept per user
/// (a channel is its user and whether it is the durable one), so a user costs about the same
/// here as in the standalone subscriber's set, whatever the number of channels.
pub(crate) struct Subscriptions {
    prefix: String,
    durable: bool,
    /// Wanted users, by slot.
    wanted: HashMap<u16, HashSet<UserId>>,
    /// Wanted users that are not live (waiting for confirmations); the others are live:
    /// every channel confirmed, acknowledged to the directory.
    pending: HashSet<UserId>,
    /// Users that were live and lost a subscription.
    lost: HashMap<UserId, Loss>,
    /// The nodes that confirmed each user's channels.
    confirmed: HashMap<UserId, Confirmations>,
    /// Users with a confirmed channel, by slot.
    by_slot: HashMap<u16, HashSet<UserId>>,
    /// Confirmed channels, by node.
    per_node: HashMap<Node, usize>,
    /// Slots with a confirmed channel that should go (unwanted, or on a node that is not the
    /// owner): planned again until it is gone.
    cleanup: HashSet<u16>,
}

impl Subscriptions {
    /// Nothing wanted yet; channels are `prefix` + user id, plus the durable channel when
    /// `durable`.
    pub(crate) fn new(prefix: String, durable: bool) -> Self {
        Self {
            prefix,
            durable,
            wanted: HashMap::new(),
            pending: HashSet::new(),
            lost: HashMap::new(),
            confirmed: HashMap::new(),
            by_slot: HashMap::new(),
            per_node: HashMap::new(),
            cleanup: HashSet::new(),
        }
    }

    /// The hash slot of `user`'s channels.
    pub(crate) fn slot_of(&self, user: &UserId) -> u16 {
        slot(&channel_name(&self.prefix, user))
    }

    /// The channels of `user`: the plain one, and the durable one when history is on.
    #[cfg(test)]
    pub(crate) fn channels(&self, user: &UserId) -> Vec<Vec<u8>> {
        self.kinds()
            .map(|durable| self.channel(user, durable))
            .collect()
    }

    /// The kinds of channel each user has: plain (`false`), and durable (`true`) with history.
    fn kinds(&self) -> impl Iterator<Item = bool> {
        let with_durable = self.durable;
        [false, true]
            .into_iter()
            .filter(move |&durable| durable <= with_durable)
    }

    fn channel(&self, user: &UserId, durable: bool) -> Vec<u8> {
        let plain = channel_name(&self.prefix, user);
        if durable {
            UserKeys::of_channel(&plain).durable_channel()
        } else {
            plain
        }
    }

    /// The user of one of our channels, and whether it is the durable one.
    pub(crate) fn user_of(&self, channel: &[u8]) -> Option<(UserId, bool)> {
        let durable = channel.first() == Some(&b'{');
        let route = if durable {
            RouteUser::from_durable_channel(channel.to_vec(), &self.prefix)?
        } else {
            RouteUser::from_channel(channel.to_vec(), &self.prefix)?
        };
        Some((UserId::new(route.as_str()), durable))
    }

    fn is_wanted(&self, user: &UserId) -> bool {
        self.wanted
            .get(&self.slot_of(user))
            .is_some_and(|users| users.contains(user))
    }

    /// This node wants `user`'s channels; answers the slot to plan.
    pub(crate) fn want(&mut self, user: UserId) -> u16 {
        let slot = self.slot_of(&user);
        if self.wanted.entry(slot).or_default().insert(user.clone()) {
            self.pending.insert(user);
        }
        slot
    }

    /// This node no longer wants `user`'s channels; answers the slot to plan.
    pub(crate) fn unwant(&mut self, user: &UserId) -> u16 {
        let slot = self.slot_of(user);
        if let Some(users) = self.wanted.get_mut(&slot) {
            users.remove(user);
            if users.is_empty() {
                self.wanted.remove(&slot);
            }
        }
        self.pending.remove(user);
        self.lost.remove(user);
        if self.confirmed.contains_key(user) {
            self.cleanup.insert(slot);
        }
        slot
    }

    /// Wanted users.
    pub(crate) fn wanted_count(&self) -> usize {
        self.wanted.values().map(HashSet::len).sum()
    }

    /// Channels `node` has confirmed.
    pub(crate) fn channels_on(&self, node: &str) -> usize {
        self.per_node.get(node).copied().unwrap_or(0)
    }

    /// Slots with wanted users that are not live yet, or with subscriptions to clean up: what a
    /// periodic sweep plans again (in case a reply or a confirmation went astray).
    pub(crate) fn unsettled_slots(&self) -> HashSet<u16> {
        let mut slots: HashSet<u16> = self.pending.iter().map(|u| self.slot_of(u)).collect();
        slots.extend(self.cleanup.iter().copied());
        slots
    }

    /// Every slot with a wanted user or a confirmed channel.
    pub(crate) fn slots_in_use(&self) -> HashSet<u16> {
        self.wanted
            .keys()
            .chain(self.by_slot.keys())
            .copied()
            .collect()
    }

    /// The commands that bring `slot` to what is wanted when `owner` serves it, each with the
    /// node to send it to: SSUBSCRIBE on the owner each wanted channel it has not confirmed;
    /// SUNSUBSCRIBE each unwanted channel wherever it is confirmed, and each wanted channel on
    /// any other node once the owner has confirmed it (never before: no gap).
    pub(crate) fn plan(&mut self, slot: u16, owner: &Node) -> Vec<(Node, Op)> {
        let mut ops = Vec::new();
        for user in self.wanted.get(&slot).into_iter().flatten() {
            let confirmed = self.confirmed.get(user);
            for durable in self.kinds() {
                let on_owner = confirmed.is_some_and(|c| c.nodes(durable).contains(owner));
                if !on_owner {
                    let op = Op {
                        slot,
                        channel: self.channel(user, durable),
                        subscribe: true,
                    };
                    ops.push((owner.clone(), op));
                }
            }
        }
        let mut unsubscribes = Vec::new();
        for user in self.by_slot.get(&slot).into_iter().flatten() {
            let wanted = self.is_wanted(user);
            let Some(confirmed) = self.confirmed.get(user) else {
                continue;
            };
            for durable in [false, true] {
                let nodes = confirmed.nodes(durable);
                let on_owner = nodes.contains(owner);
                for node in nodes {
                    let stale = node != owner && on_owner;
                    if !wanted || stale {
                        let op = Op {
                            slot,
                            channel: self.channel(user, durable),
                            subscribe: false,
                        };
                        unsubscribes.push((node.clone(), op));
                    }
                }
            }
        }
        if unsubscribes.is_empty() {
            self.cleanup.remove(&slot);
        } else {
            self.cleanup.insert(slot);
        }
        ops.extend(unsubscribes);
        ops
    }

    /// `node` confirmed a subscription to `channel` (`ssubscribe` push).
    pub(crate) fn on_subscribed(
        &mut self,
        node: &Node,
        channel: &[u8],
        topology: Option<&Topology>,
    ) -> Confirmed {
        let slot = slot(channel);
        let Some((user, durable)) = self.user_of(channel) else {
            return Confirmed::Nothing;
        };
        let nodes = self
            .confirmed
            .entry(user.clone())
            .or_default()
            .nodes_mut(durable);
        if !nodes.contains(node) {
            nodes.push(node.clone());
            *self.per_node.entry(node.clone()).or_default() += 1;
            self.by_slot.entry(slot).or_default().insert(user.clone());
        }
        if !self.is_wanted(&user) {
            self.cleanup.insert(slot);
            return Confirmed::Unwanted(slot);
        }
        if !self.pending.contains(&user) || !self.fully_confirmed(&user) {
            return Confirmed::Nothing;
        }
        self.pending.remove(&user);
        let cause = self
            .lost
            .remove(&user)
            .map(|loss| cause(&loss, slot, topology));
        Confirmed::Live(user, cause)
    }

    /// `node` no longer has `channel` (`sunsubscribe` push, asked for or not, or a refused
    /// SUNSUBSCRIBE: the node does not serve that slot, so nothing is subscribed there).
    pub(crate) fn on_unsubscribed(&mut self, node: &Node, channel: &[u8]) -> Removed {
        let Some((user, durable)) = self.user_of(channel) else {
            return Removed::Nothing;
        };
        self.forget(node, &user, durable);
        self.after_removal(&user, node, false)
    }

    /// The connection to `node` dropped: it has none of our subscriptions any more. Answers
    /// what that changed, per affected user.
    pub(crate) fn on_disconnected(&mut self, node: &Node) -> Vec<Removed> {
        let users: Vec<UserId> = self
            .confirmed
            .iter()
            .filter(|(_, c)| c.plain.contains(node) || c.durable.contains(node))
            .map(|(user, _)| user.clone())
            .collect();
        users
            .iter()
            .map(|user| {
                self.forget(node, user, false);
                self.forget(node, user, true);
                self.after_removal(user, node, true)
            })
            .collect()
    }

    fn forget(&mut self, node: &Node, user: &UserId, durable: bool) {
        let Some(confirmed) = self.confirmed.get_mut(user) else {
            return;
        };
        let nodes = confirmed.nodes_mut(durable);
        let before = nodes.len();
        nodes.retain(|n| n != node);
        if nodes.len() < before {
            if let Some(count) = self.per_node.get_mut(node) {
                *count = count.saturating_sub(1);
                if *count == 0 {
                    self.per_node.remove(node);
                }
            }
        }
        if confirmed.is_empty() {
            self.confirmed.remove(user);
            let slot = self.slot_of(user);
            if let Some(users) = self.by_slot.get_mut(&slot) {
                users.remove(user);
                if users.is_empty() {
                    self.by_slot.remove(&slot);
                }
            }
        }
    }

    fn after_removal(&mut self, user: &UserId, node: &Node, disconnected: bool) -> Removed {
        if !self.is_wanted(user) || self.fully_confirmed(user) {
            return Removed::Nothing;
        }
        let slot = self.slot_of(user);
        let lost = self.pending.insert(user.clone());
        if lost {
            let loss = Loss {
                node: node.clone(),
                disconnected,
            };
            self.lost.insert(user.clone(), loss);
        }
        Removed::Resubscribe { slot, lost }
    }

    fn fully_confirmed(&self, user: &UserId) -> bool {
        let Some(confirmed) = self.confirmed.get(user) else {
            return false;
        };
        self.kinds()
            .all(|durable| !confirmed.nodes(durable).is_empty())
    }
}

/// Why a subscription lost from `loss.node` had to be made again, by what the topology says
/// now: a node that sent `sunsubscribe` and still serves slots lost that slot to another primary
/// (slot moved); one that serves none was demoted (failover); a dropped connection to the node
/// that serves the slot again is a reconnect, to another node a failover.
fn cause(loss: &Loss, slot: u16, topology: Option<&Topology>) -> Cause {
    let Some(topology) = topology else {
        return Cause::Reconnect;
    };
    match (loss.disconnected, topology.is_primary(&loss.node)) {
        (false, true) => Cause::SlotMoved,
        (false, false) => Cause::Failover,
        (true, _) if topology.owner(slot) == Some(&loss.node) => Cause::Reconnect,
        (true, _) => Cause::Failover,
    }
}

#[cfg(test)]
mod tests {
    use redis::Value;

    use super::*;

    fn node(name: &str) -> Node {
        Node::from(name)
    }

    /// Two primaries: a serves slots 0..=8191, b the rest.
    fn topology(a: &str, b: &str) -> Topology {
        let range = |start: i64, end: i64, host_port: &str| {
            let (host, port) = host_port.rsplit_once(':').expect("host:port");
            Value::Array(vec![
                Value::Int(start),
                Value::Int(end),
                Value::Array(vec![
                    Value::BulkString(host.as_bytes().to_vec()),
                    Value::Int(port.parse().expect("port")),
                ]),
            ])
        };
        let reply = Value::Array(vec![range(0, 8191, a), range(8192, 16383, b)]);
        Topology::from_slots_reply(&reply, a).expect("valid")
    }

    fn subscribe_all(
        subs: &mut Subscriptions,
        ops: &[(Node, Op)],
        topo: &Topology,
    ) -> Vec<Confirmed> {
        ops.iter()
            .filter(|(_, op)| op.subscribe)
            .map(|(n, op)| subs.on_subscribed(n, &op.channel, Some(topo)))
            .collect()
    }

    #[test]
    fn a_user_is_live_once_both_channels_are_confirmed_on_its_slot_owner() {
        let mut subs = Subscriptions::new("ws:".into(), true);
        let alice = UserId::new("alice");
        let slot = subs.want(alice.clone());
        let topo = topology("h:1", "h:2");
        let owner = topo.owner(slot).expect("owner").clone();
        let ops = subs.plan(slot, &owner);
        assert_eq!(ops.len(), 2, "plain and durable channel: {ops:?}");
        assert!(ops
            .iter()
            .all(|(n, op)| *n == owner && op.subscribe && op.slot == slot));
        let first = subs.on_subscribed(&owner, &ops[0].1.channel, Some(&topo));
        assert_eq!(first, Confirmed::Nothing, "one of two channels");
        let second = subs.on_subscribed(&owner, &ops[1].1.channel, Some(&topo));
        assert_eq!(second, Confirmed::Live(alice.clone(), None));
        assert!(subs.plan(slot, &owner).is_empty(), "nothing left to do");
        assert_eq!(subs.channels_on(&owner), 2);
        assert_eq!(subs.wanted_count(), 1);
    }

    #[test]
    fn user_ids_with_braces_map_back_from_both_channels() {
        let subs = Subscriptions::new("ws:".into(), true);
        for id in ["{x}y", "a}b", "}", "{", "{}"] {
            let user = UserId::new(id);
            for channel in subs.channels(&user) {
                assert_eq!(
                    subs.user_of(&channel).map(|(u, _)| u),
                    Some(user.clone()),
                    "{id}"
                );
                assert_eq!(slot(&channel), subs.slot_of(&user), "{id}");
            }
        }
    }

    #[test]
    fn a_server_sunsubscribe_makes_a_live_user_resubscribe_with_its_cause() {
        let mut subs = Subscriptions::new("ws:".into(), false);
        let bob = UserId::new("bob");
        let slot = subs.want(bob.clone());
        let topo = topology("h:1", "h:2");
        let old = topo.owner(slot).expect("owner").clone();
        let ops = subs.plan(slot, &old);
        subscribe_all(&mut subs, &ops, &topo);
        let channel = ops[0].1.channel.clone();
        assert_eq!(
            subs.on_unsubscribed(&old, &channel),
            Removed::Resubscribe { slot, lost: true }
        );
        // The slot moved to the other primary, which still serves slots: slot_moved.
        let mut moved = topo.clone();
        let new = node(if &*old == "h:1" { "h:2" } else { "h:1" });
        moved.set_owner(slot, &new);
        let ops = subs.plan(slot, &new);
        assert_eq!(
            ops,
            vec![(
                new.clone(),
                Op {
                    slot,
                    channel: channel.clone(),
                    subscribe: true
                }
            )]
        );
        let confirmed = subscribe_all(&mut subs, &ops, &moved);
        assert_eq!(
            confirmed,
            vec![Confirmed::Live(bob.clone(), Some(Cause::SlotMoved))]
        );

        // The new owner is demoted (serves nothing after the failover): failover.
        assert!(matches!(
            subs.on_unsubscribed(&new, &channel),
            Removed::Resubscribe { lost: true, .. }
        ));
        let promoted = topology("h:3", "h:4");
        let owner = promoted.owner(slot).expect("owner").clone();
        let ops = subs.plan(slot, &owner);
        let confirmed = subscribe_all(&mut subs, &ops, &promoted);
        assert_eq!(
            confirmed,
            vec![Confirmed::Live(bob.clone(), Some(Cause::Failover))]
        );

        // The connection drops and the same node serves the slot again: reconnect.
        let removed = subs.on_disconnected(&owner);
        assert_eq!(removed, vec![Removed::Resubscribe { slot, lost: true }]);
        let ops = subs.plan(slot, &owner);
        let confirmed = subscribe_all(&mut subs, &ops, &promoted);
        assert_eq!(
            confirmed,
            vec![Confirmed::Live(bob, Some(Cause::Reconnect))]
        );
    }

    #[test]
    fn unwanted_channels_are_unsubscribed_and_stale_ones_only_after_the_owner_confirmed() {
        let mut subs = Subscriptions::new("ws:".into(), false);
        let carol = UserId::new("carol");
        let slot = subs.want(carol.clone());
        let topo = topology("h:1", "h:2");
        let owner = topo.owner(slot).expect("owner").clone();
        let stale = node("h:9");
        let channel = subs.channels(&carol).remove(0);
        // Subscribed on a node that no longer serves the slot (e.g. a demoted primary).
        subs.on_subscribed(&stale, &channel, Some(&topo));
        let ops = subs.plan(slot, &owner);
        assert_eq!(
            ops,
            vec![(
                owner.clone(),
                Op {
                    slot,
                    channel: channel.clone(),
                    subscribe: true
                }
            )],
            "the stale subscription stays until the owner has it"
        );
        subs.on_subscribed(&owner, &channel, Some(&topo));
        let ops = subs.plan(slot, &owner);
        assert_eq!(
            ops,
            vec![(
                stale.clone(),
                Op {
                    slot,
                    channel: channel.clone(),
                    subscribe: false
                }
            )]
        );
        assert_eq!(subs.unsettled_slots(), HashSet::from([slot]));
        assert_eq!(subs.on_unsubscribed(&stale, &channel), Removed::Nothing);
        assert!(subs.plan(slot, &owner).is_empty());
        assert!(subs.unsettled_slots().is_empty());

        subs.unwant(&carol);
        let ops = subs.plan(slot, &owner);
        assert_eq!(
            ops,
            vec![(
                owner.clone(),
                Op {
                    slot,
                    channel: channel.clone(),
                    subscribe: false
                }
            )]
        );
        assert_eq!(subs.on_unsubscribed(&owner, &channel), Removed::Nothing);
        assert!(subs.plan(slot, &owner).is_empty());
        assert_eq!(subs.channels_on(&owner), 0);
        assert!(subs.slots_in_use().is_empty());
    }

    #[test]
    fn a_user_wanted_again_after_leaving_is_a_first_subscription() {
        let mut subs = Subscriptions::new("ws:".into(), false);
        let dave = UserId::new("dave");
        let slot = subs.want(dave.clone());
        let topo = topology("h:1", "h:2");
        let owner = topo.owner(slot).expect("owner").clone();
        let ops = subs.plan(slot, &owner);
        subscribe_all(&mut subs, &ops, &topo);
        subs.on_disconnected(&owner);
        subs.unwant(&dave);
        subs.want(dave.clone());
        let ops = subs.plan(slot, &owner);
        let confirmed = subscribe_all(&mut subs, &ops, &topo);
        assert_eq!(confirmed, vec![Confirmed::Live(dave, None)]);
    }
}
