//! The bound on broker messages waiting for one directory shard: a count shared by the senders
//! and the batches in flight, in messages however they are packed into envelopes.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

/// Messages from the broker that may wait for a shard before new ones are dropped (and counted):
/// when publishers outrun the node, memory stays bounded and the broker is still read at once.
/// Counted in messages, however they are packed into route batches.
pub const ROUTE_QUEUE_MAX: usize = 65_536;
/// Most messages in one route batch: one mailbox envelope and one wake-up of the shard's thread
/// carry up to this many.
pub const ROUTE_BATCH_MAX: usize = 64;

/// How many broker messages wait for one shard, shared by the senders and the batches in flight.
#[derive(Clone, Debug, Default)]
pub(super) struct RouteQueue {
    queued: Arc<AtomicUsize>,
}

impl RouteQueue {
    /// Takes room for as many of `wanted` messages as fit under [`ROUTE_QUEUE_MAX`].
    pub(super) fn reserve(&self, wanted: usize) -> RouteRoom {
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
pub(super) struct RouteRoom {
    queued: Arc<AtomicUsize>,
    granted: usize,
}

impl RouteRoom {
    /// How many messages this room holds.
    pub(super) fn granted(&self) -> usize {
        self.granted
    }
}

impl Drop for RouteRoom {
    fn drop(&mut self) {
        self.queued.fetch_sub(self.granted, Ordering::AcqRel);
    }
}
