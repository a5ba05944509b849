//! One shard of the directory: the `DirectoryShard` actor owns the map from user to hub for the
//! users hashed to it, starts hubs in its own context, forwards joins and leaves, routes broker
//! messages to hubs, retires hubs when they empty, tells the broker which channels it needs,
//! and passes a drain on to every hub.

use std::collections::HashMap;
use std::sync::Arc;

use actix::prelude::*;

use super::queue::RouteRoom;
use crate::broker::{Interest, RouteUser};
use crate::hub::{
    ChannelLive, ClosePacing, DisconnectHub, DrainHub, Fanout, HubIdle, HubSettings, Join, Leave,
    Retire, UserHub,
};
use crate::ids::UserId;
use crate::metrics::RelayMetrics;
use crate::payload::Published;
use crate::session::{JoinHub, JoinRefusal, LeaveHub, SessionControl};

/// Broker messages for users of one shard, in the order the broker delivered them.
#[derive(Message, Debug)]
#[rtype(result = "()")]
pub(super) struct RouteBatch {
    /// Each user with its message.
    pub(super) routes: Vec<(RouteUser, Published)>,
    /// Their room in the shard's queue, given back when the batch is dropped.
    pub(super) room: RouteRoom,
}

/// The broker has subscribed (and the broker acknowledged) the channels of these users.
#[derive(Message, Debug)]
#[rtype(result = "()")]
pub(super) struct ChannelsLive {
    /// Users of this shard.
    pub(super) users: Vec<UserId>,
    /// Subscribed again after the broker link was lost.
    pub(super) resubscribed: bool,
}

/// Starts the drain: refuse new sessions, drain every hub.
#[derive(Message, Clone, Debug)]
#[rtype(result = "()")]
pub(super) struct DrainShard {
    /// When each session closes.
    pub(super) pacing: Arc<dyn ClosePacing>,
}

/// Closes every session of these users (of this shard) with 4003.
#[derive(Message, Debug)]
#[rtype(result = "()")]
pub(super) struct DisconnectUsers {
    /// The users, all hashed to this shard.
    pub(super) users: Vec<UserId>,
    /// The message of each close reason.
    pub(super) reason: Arc<str>,
}

struct HubEntry {
    addr: Addr<UserHub>,
    joins_sent: u64,
}

/// One shard of the directory.
pub struct DirectoryShard {
    hubs: HashMap<UserId, HubEntry>,
    settings: HubSettings,
    interest: Option<Recipient<Interest>>,
    metrics: RelayMetrics,
    draining: bool,
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
            draining: false,
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
            ctx.address().recipient(),
            self.metrics.clone(),
            self.interest.is_none(),
        )
        .start()
    }

    /// How many hubs this shard holds.
    #[cfg(any(test, feature = "test-support"))]
    pub(super) fn hub_count(&self) -> usize {
        self.hubs.len()
    }

    /// The hub of `user`, if the user has one here.
    pub(super) fn hub_of(&self, user: &UserId) -> Option<Addr<UserHub>> {
        self.hubs.get(user).map(|entry| entry.addr.clone())
    }

    /// Hands one message to the user's hub, or counts it dropped when the user has none here.
    fn route(&self, user: &str, message: Published) {
        self.metrics
            .message_size
            .observe(message.payload.len() as f64);
        match self.hubs.get(user) {
            Some(entry) => entry.addr.do_send(Fanout { message }),
            None => self
                .metrics
                .messages_dropped
                .with_label_values(&["no_session"])
                .inc(),
        }
    }
}

/// The shard's mailbox itself is unbounded: the bound on broker messages is the route queue's,
/// in messages, and everything else a shard receives is sent with `do_send`, which ignores a
/// mailbox's capacity anyway.
impl Actor for DirectoryShard {
    type Context = Context<Self>;
}

impl Handler<JoinHub> for DirectoryShard {
    type Result = ();

    fn handle(&mut self, join: JoinHub, ctx: &mut Context<Self>) {
        if self.draining {
            join.link
                .control
                .do_send(SessionControl::Refused(JoinRefusal::Draining));
            return;
        }
        if !self.hubs.contains_key(&join.user) {
            let addr = self.start_hub(&join.user, ctx);
            self.hubs.insert(
                join.user.clone(),
                HubEntry {
                    addr,
                    joins_sent: 0,
                },
            );
        }
        let Some(entry) = self.hubs.get_mut(&join.user) else {
            return;
        };
        entry.joins_sent += 1;
        entry.addr.do_send(Join {
            conn: join.conn,
            link: join.link,
        });
    }
}

impl Handler<LeaveHub> for DirectoryShard {
    type Result = ();

    fn handle(&mut self, leave: LeaveHub, _: &mut Context<Self>) {
        if let Some(entry) = self.hubs.get(&leave.user) {
            entry.addr.do_send(Leave { conn: leave.conn });
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

impl Handler<ChannelsLive> for DirectoryShard {
    type Result = ();

    fn handle(&mut self, live: ChannelsLive, _: &mut Context<Self>) {
        let resubscribed = live.resubscribed;
        for user in live.users {
            if let Some(entry) = self.hubs.get(&user) {
                entry.addr.do_send(ChannelLive { resubscribed });
            }
        }
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
        self.draining = true;
        for entry in self.hubs.values() {
            entry.addr.do_send(DrainHub {
                pacing: Arc::clone(&drain.pacing),
            });
        }
    }
}

impl Handler<DisconnectUsers> for DirectoryShard {
    type Result = ();

    fn handle(&mut self, disconnect: DisconnectUsers, _: &mut Context<Self>) {
        for user in &disconnect.users {
            if let Some(entry) = self.hubs.get(user) {
                let reason = Arc::clone(&disconnect.reason);
                entry.addr.do_send(DisconnectHub { reason });
            }
        }
    }
}
