//! Per-user history: durable publishing with positions, and the reads a resume needs.
//!
//! A *durable* publish appends the message to its user's history and publishes it in one
//! atomic step, and gives it a [`Position`]: the user's [`Epoch`] (which incarnation of the
//! history) and a dense offset (1, 2, 3, …). The [`History`] trait is implemented twice: in
//! Redis (`redis`, a Redis Function: stream + meta record + durable channel) and in process
//! (`memory`, for the in-process broker), with the same semantics; [`HistoryStore`] names the
//! one the server runs.
//!
//! The contract (DESIGN.md, "Delivery guarantees"): an offset is never reused within an epoch;
//! the history keeps the last `size` messages and expires after `ttl` of quiet; a lost history
//! (Redis restarted empty, meta record deleted) comes back under a new epoch.

pub mod memory;
pub mod redis;

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures_util::future::BoxFuture;

pub use self::memory::MemoryHistory;
pub use self::redis::{library_source, RedisHistory};
pub use crate::broker::durable::{durable_message, parse_durable};
use crate::broker::BrokerError;
use crate::ids::UserId;
pub use crate::position::{Epoch, Position};

/// The history store the server runs, by kind: what needs more than the [`History`] trait
/// picks the store it knows (the Kafka ingest dedupes and publishes in one atomic step with
/// [`RedisHistory::publish_once`]). Cheap to clone.
#[derive(Clone)]
pub enum HistoryStore {
    /// In process, with the in-process broker.
    Memory(Arc<MemoryHistory>),
    /// In the broker's Redis.
    Redis(RedisHistory),
}

impl HistoryStore {
    /// The store behind the [`History`] trait.
    pub fn shared(&self) -> Arc<dyn History> {
        match self {
            Self::Memory(store) => Arc::clone(store) as Arc<dyn History>,
            Self::Redis(store) => Arc::new(store.clone()),
        }
    }
}

/// One message kept in a history.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HistoryEntry {
    /// Its offset in the epoch.
    pub offset: u64,
    /// The payload, bytes as published.
    pub payload: Bytes,
    /// When it was appended, in milliseconds since the Unix epoch (for the console).
    pub time_ms: u64,
}

/// A consistent snapshot of a user's history: its epoch and top offset, and the entries after
/// the offset asked for, read at the same instant.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HistoryRead {
    /// The current epoch (a fresh one is made when the user has no history at all).
    pub epoch: Epoch,
    /// The offset of the last message published in the epoch (0: none yet).
    pub top: u64,
    /// Entries with offset > the `after` asked for, ascending, at most the `max` asked for.
    /// They are the *kept* entries: when older ones were trimmed or expired, the first entry's
    /// offset is above `after + 1`.
    pub entries: Vec<HistoryEntry>,
}

/// How the history is kept: `size` messages per user, for `ttl` after the last append.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HistoryConfig {
    /// Messages kept per user.
    pub size: usize,
    /// The whole history of a quiet user expires after this.
    pub ttl: Duration,
}

/// How long a publish's `Idempotency-Key` is remembered.
pub const IDEMPOTENCY_WINDOW: Duration = Duration::from_secs(300);

/// The largest idempotency key accepted, in bytes.
pub const IDEMPOTENCY_KEY_MAX: usize = 128;

/// A user's history store: durable publishing and reads.
pub trait History: Send + Sync {
    /// Appends `payload` to the history of each of `users` and publishes it to them, each user
    /// in one atomic step; answers each user's position, in the order of `users`. With
    /// `idempotency_key`, a user already published under that key within
    /// [`IDEMPOTENCY_WINDOW`] gets its earlier position and nothing is published again.
    fn publish(
        &self,
        users: Vec<UserId>,
        payload: Bytes,
        idempotency_key: Option<String>,
    ) -> BoxFuture<'static, Result<Vec<Position>, BrokerError>>;

    /// Reads `user`'s epoch, top offset and up to `max` entries after offset `after` (in the
    /// current epoch), in one consistent snapshot.
    fn read(
        &self,
        user: UserId,
        after: u64,
        max: usize,
    ) -> BoxFuture<'static, Result<HistoryRead, BrokerError>>;

    /// Starts a new epoch for `user` unless the epoch already differs from `lost`: used when
    /// the server finds the top below an offset it handed out (a failover lost entries).
    /// Answers the epoch and top now in force.
    fn renew_epoch(
        &self,
        user: UserId,
        lost: Epoch,
    ) -> BoxFuture<'static, Result<(Epoch, u64), BrokerError>>;
}
