//! The directory: finds or creates the hub of a user. It is sharded by a hash of the user id
//! into [`DirectoryShard`] actors, each on its own arbiter, so that no single mailbox sees every
//! connect and every message. [`Directory`] is the handle everything else uses: it sends each
//! call to the shard of its user. A shard's arbiter also runs the sessions of its users
//! ([`Directory::hub_link`]), so that a message crosses threads once, from the broker to the
//! shard, in batches.
//!
//! The directory is fed by the broker as its [`RouteSink`] and reports the channels it needs
//! as [`Interest`]; it reaches sessions only through the messages in `session::messages`.

mod queue;
mod sessions;
mod shard;
#[cfg(any(test, feature = "test-support"))]
mod test_support;

use std::collections::hash_map::DefaultHasher;
use std::hash::{Hash, Hasher};
use std::sync::Arc;

use actix::prelude::*;

use self::queue::RouteQueue;
pub use self::queue::{ROUTE_BATCH_MAX, ROUTE_QUEUE_MAX};
pub use self::shard::DirectoryShard;
use self::shard::{ChannelsLive, DisconnectUsers, DrainShard, RouteBatch};
use crate::broker::{Interest, RouteSink, RouteUser};
use crate::hub::ClosePacing;
/// The settings every hub shares; re-exported from [`crate::hub`] where they live.
pub use crate::hub::HubSettings;
use crate::ids::{ConnId, UserId};
use crate::metrics::RelayMetrics;
use crate::payload::Published;
use crate::session::{HubLink, JoinHub, LeaveHub, SessionLink};

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
    /// Starts one shard on each arbiter; the shards report channel interest to `interest`
    /// (none for the in-process broker).
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

    /// How a session of `user` reaches its hub: the user's shard, and the arbiter it runs on (a
    /// session started there gets its messages from the hub without crossing threads).
    pub fn hub_link(&self, user: &UserId) -> HubLink {
        let index = self.shard_index(user.as_str());
        let shard = &self.shards[index];
        HubLink {
            arbiter: self.arbiters[index].clone(),
            join: shard.clone().recipient(),
            leave: shard.clone().recipient(),
        }
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
        self.shard_of(&user).do_send(JoinHub { user, conn, link });
    }

    /// Tells the user's hub that a session has stopped.
    pub fn leave(&self, user: UserId, conn: ConnId) {
        self.shard_of(&user).do_send(LeaveHub { user, conn });
    }

    /// Hands many broker messages to their users' hubs: one envelope per shard for up to
    /// [`ROUTE_BATCH_MAX`] of them, in order per user. Never waits; what does not fit in a
    /// shard's queue of [`ROUTE_QUEUE_MAX`] messages is dropped and counted (`overload`).
    pub fn route_all(&self, routes: impl IntoIterator<Item = (RouteUser, Published)>) {
        let mut batches: Vec<Vec<(RouteUser, Published)>> =
            self.shards.iter().map(|_| Vec::new()).collect();
        for (user, message) in routes {
            let index = self.shard_index(user.as_str());
            batches[index].push((user, message));
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
    fn send_batch(&self, shard: usize, mut routes: Vec<(RouteUser, Published)>) {
        let room = self.queues[shard].reserve(routes.len());
        self.count_dropped("overload", routes.len() - room.granted());
        routes.truncate(room.granted());
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

    /// Tells the hubs of `users` that their channels are subscribed (`resubscribed`: again,
    /// after the broker link came back).
    pub fn channels_live(&self, users: Vec<UserId>, resubscribed: bool) {
        let mut by_shard: Vec<Vec<UserId>> = self.shards.iter().map(|_| Vec::new()).collect();
        for user in users {
            by_shard[self.shard_index(user.as_str())].push(user);
        }
        for (shard, users) in self.shards.iter().zip(by_shard) {
            if !users.is_empty() {
                shard.do_send(ChannelsLive {
                    users,
                    resubscribed,
                });
            }
        }
    }

    /// Closes every session of `users` on this node with 4003 and `reason` as the close
    /// reason's message: one message per shard that holds any of them.
    pub fn disconnect(&self, users: &[UserId], reason: &str) {
        let mut by_shard: Vec<Vec<UserId>> = self.shards.iter().map(|_| Vec::new()).collect();
        for user in users {
            by_shard[self.shard_index(user.as_str())].push(user.clone());
        }
        let reason: Arc<str> = Arc::from(reason);
        for (shard, users) in self.shards.iter().zip(by_shard) {
            if !users.is_empty() {
                let reason = Arc::clone(&reason);
                shard.do_send(DisconnectUsers { users, reason });
            }
        }
    }

    /// Starts the drain on every shard: new sessions are refused, and every session closes
    /// with 1012 after a delay `pacing` chooses.
    pub fn drain(&self, pacing: Arc<dyn ClosePacing>) {
        for shard in self.shards.iter() {
            shard.do_send(DrainShard {
                pacing: Arc::clone(&pacing),
            });
        }
    }
}

impl RouteSink for Directory {
    fn route_all(&self, routes: Vec<(RouteUser, Published)>) {
        Directory::route_all(self, routes);
    }

    fn channels_live(&self, users: Vec<UserId>, resubscribed: bool) {
        Directory::channels_live(self, users, resubscribed);
    }
}
