//! The `LeaseKeeper` actor: this node's table of leases, and every write to Redis that is not a
//! connect's own acquire. It refreshes all of the node's leases every third of the lease, in
//! batches of [`BATCH`] (one script call each), gives released leases back as soon as they come
//! (batched while a write is in flight), and while Redis is unreachable probes it with backoff
//! (loading the scripts, which a restarted Redis has lost), then registers every lease again at
//! once.
//!
//! Writes go out one at a time, releases first: a release is never overtaken by a refresh of the
//! same lease that would bring it back to life.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use actix::prelude::*;
use tokio::sync::oneshot;

use super::store::{HeldLease, LeaseStore};
use super::{LeaseError, LeaseProtocol, Shared};
use crate::backoff::full_jitter;
use crate::ids::{ConnId, UserId};

/// Leases per refresh script call, and per release pipeline.
pub const BATCH: usize = 1000;
/// Released leases kept for a retry while Redis is unreachable; beyond that they just expire.
const MAX_PENDING_RELEASES: usize = 100_000;
/// First probe delay ceiling while Redis is unreachable; doubles up to [`PROBE_CAP`].
const PROBE_BASE: Duration = Duration::from_millis(100);
/// Longest wait between two probes.
const PROBE_CAP: Duration = Duration::from_secs(2);

/// A new lease of this node (taken in Redis, or admitted while Redis was unreachable).
#[derive(Message, Debug)]
#[rtype(result = "()")]
pub struct HoldLease {
    /// The socket.
    pub conn: ConnId,
    /// Its user.
    pub user: UserId,
    /// Its client protocol.
    pub protocol: LeaseProtocol,
    /// When it was taken, Redis time; `None` when Redis was unreachable (the node's clock).
    pub since_ms: Option<u64>,
}

/// The socket is gone: give its lease back.
#[derive(Message, Debug)]
#[rtype(result = "()")]
pub struct ReleaseLease {
    /// The socket.
    pub conn: ConnId,
    /// Its user.
    pub user: UserId,
}

/// A Redis call outside the keeper failed: Redis counts as unreachable until a probe answers.
#[derive(Message, Debug)]
#[rtype(result = "()")]
pub struct StoreFailed {
    /// What failed.
    pub error: LeaseError,
}

/// Gives every lease of the node back (shutdown); answered once that is done or has failed.
#[derive(Message, Debug)]
#[rtype(result = "()")]
pub struct ReleaseAll;

/// How many leases the keeper holds (tests).
#[derive(Message, Debug)]
#[rtype(result = "usize")]
pub struct HeldCount;

/// This node's leases and the writes that keep them.
pub struct LeaseKeeper {
    store: LeaseStore,
    shared: Arc<Shared>,
    refresh_every: Duration,
    held: HashMap<ConnId, HeldLease>,
    /// Released leases not yet given back to Redis.
    releases: Vec<(UserId, ConnId)>,
    /// Leases still to refresh in the current round.
    round: Vec<ConnId>,
    /// A write is in flight.
    busy: bool,
    probing: bool,
    /// Shutting down: no more refreshes.
    stopping: bool,
    /// Told when no release is pending any more.
    idle_waiters: Vec<oneshot::Sender<()>>,
}

impl LeaseKeeper {
    pub(super) fn new(store: LeaseStore, shared: Arc<Shared>, lease: Duration) -> Self {
        Self {
            store,
            shared,
            refresh_every: (lease / 3).max(Duration::from_millis(500)),
            held: HashMap::new(),
            releases: Vec::new(),
            round: Vec::new(),
            busy: false,
            probing: false,
            stopping: false,
            idle_waiters: Vec::new(),
        }
    }

    fn is_down(&self) -> bool {
        self.shared.down.load(Ordering::Acquire)
    }

    fn set_held_gauge(&self) {
        self.shared.metrics.leases_held.set(self.held.len() as i64);
    }

    /// Starts a refresh round over every lease held now (unless one is under way).
    fn start_round(&mut self, ctx: &mut Context<Self>) {
        if self.stopping || self.is_down() || !self.round.is_empty() {
            return;
        }
        self.round = self.held.keys().copied().collect();
        self.pump(ctx);
    }

    /// Sends the next write if none is in flight: pending releases first, then the next
    /// refresh batch.
    fn pump(&mut self, ctx: &mut Context<Self>) {
        if self.busy || self.is_down() {
            self.notify_idle();
            return;
        }
        if !self.releases.is_empty() {
            let take = self.releases.len().min(BATCH);
            let batch: Vec<_> = self.releases.drain(..take).collect();
            self.spawn_release(ctx, batch);
        } else if let Some(batch) = self.next_refresh_batch() {
            self.spawn_refresh(ctx, batch);
        } else {
            self.notify_idle();
        }
    }

    /// Up to [`BATCH`] leases of the round that are still held.
    fn next_refresh_batch(&mut self) -> Option<Vec<(ConnId, HeldLease)>> {
        let mut batch = Vec::new();
        while batch.len() < BATCH {
            let Some(conn) = self.round.pop() else { break };
            if let Some(lease) = self.held.get(&conn) {
                batch.push((conn, lease.clone()));
            }
        }
        (!batch.is_empty()).then_some(batch)
    }

    fn spawn_release(&mut self, ctx: &mut Context<Self>, batch: Vec<(UserId, ConnId)>) {
        self.busy = true;
        let store = self.store.clone();
        let work = async move {
            let result = store.release(&batch).await;
            (batch, result)
        };
        ctx.spawn(work.into_actor(self).map(|(batch, result), this, ctx| {
            this.busy = false;
            if let Err(error) = result {
                this.requeue_releases(batch);
                this.on_failure(ctx, &error);
            }
            this.pump(ctx);
        }));
    }

    fn requeue_releases(&mut self, batch: Vec<(UserId, ConnId)>) {
        let room = MAX_PENDING_RELEASES.saturating_sub(self.releases.len());
        self.releases.extend(batch.into_iter().take(room));
    }

    fn spawn_refresh(&mut self, ctx: &mut Context<Self>, batch: Vec<(ConnId, HeldLease)>) {
        self.busy = true;
        let store = self.store.clone();
        let work = async move { store.refresh(&batch).await };
        ctx.spawn(work.into_actor(self).map(|result, this, ctx| {
            this.busy = false;
            this.shared.metrics.refresh_round_trips.inc();
            if let Err(error) = result {
                this.on_failure(ctx, &error);
            }
            this.pump(ctx);
        }));
    }

    /// Redis failed: stop writing, probe until it answers.
    fn on_failure(&mut self, ctx: &mut Context<Self>, error: &LeaseError) {
        if !self.shared.down.swap(true, Ordering::AcqRel) {
            tracing::warn!(%error, "lease store unreachable: admitting on the node's own count");
            self.shared.metrics.lease_store_up.set(0);
        }
        self.round.clear();
        self.probe(ctx, 0);
    }

    fn probe(&mut self, ctx: &mut Context<Self>, attempt: u32) {
        if self.probing {
            return;
        }
        self.probing = true;
        let delay = full_jitter(PROBE_BASE, PROBE_CAP, attempt);
        ctx.run_later(delay, move |this, ctx| {
            let store = this.store.clone();
            let prepare = async move { store.prepare().await };
            ctx.spawn(prepare.into_actor(this).map(move |result, this, ctx| {
                this.probing = false;
                match result {
                    Ok(()) => this.on_reachable(ctx),
                    Err(_) => this.probe(ctx, attempt + 1),
                }
            }));
        });
    }

    /// Redis answers again: register every lease of the node again, at once.
    fn on_reachable(&mut self, ctx: &mut Context<Self>) {
        self.shared.down.store(false, Ordering::Release);
        self.shared.metrics.lease_store_up.set(1);
        tracing::info!(
            leases = self.held.len(),
            "lease store reachable: registering leases again"
        );
        self.start_round(ctx);
        self.pump(ctx);
    }

    fn notify_idle(&mut self) {
        let idle = self.releases.is_empty() && !self.busy;
        if idle || self.is_down() {
            for waiter in self.idle_waiters.drain(..) {
                let _ = waiter.send(());
            }
        }
    }
}

/// The node's clock in ms since the epoch (only for the `since_ms` of a lease admitted while
/// Redis was unreachable; expiries always use Redis time).
fn wall_clock_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |elapsed| {
            u64::try_from(elapsed.as_millis()).unwrap_or(u64::MAX)
        })
}

impl Actor for LeaseKeeper {
    type Context = Context<Self>;

    /// Loads the scripts at once (so that health is right from the start, the connection is
    /// made here, and a burst of first connects finds the scripts loaded), then refreshes every
    /// third of the lease.
    fn started(&mut self, ctx: &mut Context<Self>) {
        self.shared.metrics.lease_store_up.set(1);
        let store = self.store.clone();
        let prepare = async move { store.prepare().await };
        ctx.spawn(prepare.into_actor(self).map(|result, this, ctx| {
            if let Err(error) = result {
                this.on_failure(ctx, &error);
            }
        }));
        ctx.run_interval(self.refresh_every, |this, ctx| this.start_round(ctx));
    }
}

impl Handler<HoldLease> for LeaseKeeper {
    type Result = ();

    fn handle(&mut self, hold: HoldLease, _: &mut Context<Self>) {
        let lease = HeldLease {
            user: hold.user,
            protocol: hold.protocol,
            since_ms: hold.since_ms.unwrap_or_else(wall_clock_ms),
        };
        self.held.insert(hold.conn, lease);
        self.set_held_gauge();
    }
}

impl Handler<ReleaseLease> for LeaseKeeper {
    type Result = ();

    fn handle(&mut self, release: ReleaseLease, ctx: &mut Context<Self>) {
        if self.held.remove(&release.conn).is_none() {
            return;
        }
        self.set_held_gauge();
        if self.releases.len() < MAX_PENDING_RELEASES {
            self.releases.push((release.user, release.conn));
        }
        self.pump(ctx);
    }
}

impl Handler<StoreFailed> for LeaseKeeper {
    type Result = ();

    fn handle(&mut self, failed: StoreFailed, ctx: &mut Context<Self>) {
        self.on_failure(ctx, &failed.error);
    }
}

impl Handler<ReleaseAll> for LeaseKeeper {
    type Result = ResponseFuture<()>;

    fn handle(&mut self, _: ReleaseAll, ctx: &mut Context<Self>) -> Self::Result {
        self.stopping = true;
        self.round.clear();
        let all: Vec<_> = self
            .held
            .drain()
            .map(|(conn, lease)| (lease.user, conn))
            .collect();
        self.set_held_gauge();
        self.requeue_releases(all);
        let (tx, rx) = oneshot::channel();
        self.idle_waiters.push(tx);
        self.pump(ctx);
        Box::pin(async move {
            let _ = rx.await;
        })
    }
}

impl Handler<HeldCount> for LeaseKeeper {
    type Result = usize;

    fn handle(&mut self, _: HeldCount, _: &mut Context<Self>) -> usize {
        self.held.len()
    }
}
