//! Quota leases: each socket of a node that shares a Redis holds a lease there, so that the
//! per-user quota can count a user's sockets on every replica, and presence and the disconnect
//! API can count them too (DESIGN.md, "Cluster").
//!
//! - A connect takes its lease in one atomic script call ([`Leases::acquire`]): expired leases
//!   of the user are dropped, the rest counted, and the lease taken unless the limit is reached.
//!   Redis unreachable: the socket is admitted (fail open; the node's own quota still holds),
//!   counted in `ws_quota_fail_open_total`, and its lease registered once Redis is back.
//! - The [`LeaseGuard`] the connect gets gives the lease back when dropped (the socket's permit
//!   drops it as the session leaves its hub, or at the latest when the socket is gone).
//! - The `LeaseKeeper` actor (`keeper`) refreshes the node's leases in batches, releases them,
//!   and registers them again after an outage. A crashed node's leases expire after the lease.
//!
//! Beside this file: `store` (the Redis commands), `scripts` (the Lua scripts), `keeper` (the
//! actor), `metrics`. Nothing here knows sessions, hubs or HTTP.

mod keeper;
mod metrics;
mod scripts;
mod store;
#[cfg(test)]
mod tests;

use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;

#[cfg(test)]
use self::keeper::HeldCount;
use self::keeper::{HoldLease, ReleaseLease, StoreFailed};
pub use self::keeper::{LeaseKeeper, ReleaseAll, BATCH};
pub use self::metrics::{LeaseCounters, LeaseMetrics};
use self::store::LeaseStore;
use crate::broker::{BrokerError, RedisTarget};
use crate::ids::{ConnId, NodeId, UserId};

/// How long a connect waits for its lease before it is admitted without one (fail open).
const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(1);
/// How long a presence or disconnect count may take.
const COUNT_TIMEOUT: Duration = Duration::from_secs(2);

/// Where the leases live and how long one lasts.
#[derive(Clone, Debug)]
pub struct LeaseConfig {
    /// The Redis the leases live in: a standalone Redis or Redis Cluster (a user's two lease
    /// keys share one hash slot, that of the user's channel).
    pub target: RedisTarget,
    /// The channel prefix: a user's lease keys share the slot of its channel.
    pub channel_prefix: String,
    /// This node, in every lease it holds.
    pub node: NodeId,
    /// How long a lease lasts unless refreshed (`limits.quota_lease_s`).
    pub lease: Duration,
}

/// The client protocol a socket speaks, recorded in its lease's details.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LeaseProtocol {
    /// Raw payloads (the old service's contract).
    Legacy,
    /// JSON frames with positions (protocol v2).
    V2,
}

impl LeaseProtocol {
    /// `legacy` or `v2`, as in the lease details.
    pub fn as_str(self) -> &'static str {
        match self {
            LeaseProtocol::Legacy => "legacy",
            LeaseProtocol::V2 => "v2",
        }
    }
}

/// A lease store failure.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LeaseError {
    /// The Redis URL does not parse.
    #[error("invalid redis url: {0}")]
    InvalidUrl(#[source] redis::RedisError),
    /// A Redis command failed (connection down, error reply).
    #[error("redis command failed: {0}")]
    Redis(#[from] redis::RedisError),
    /// Redis did not answer in time.
    #[error("redis did not answer within {0:?}")]
    Timeout(Duration),
    /// A script answered something else than it returns.
    #[error("unexpected reply to the {0} script")]
    UnexpectedReply(&'static str),
    /// A batch of commands failed as a whole (see [`crate::broker::RedisConn::run_each`]).
    #[error("redis batch failed: {0}")]
    Batch(#[source] BrokerError),
}

impl From<BrokerError> for LeaseError {
    fn from(error: BrokerError) -> Self {
        match error {
            BrokerError::InvalidUrl(error) => LeaseError::InvalidUrl(error),
            BrokerError::Redis(error) => LeaseError::Redis(error),
            other => LeaseError::Batch(other),
        }
    }
}

/// The user already holds the quota's worth of leases across the cluster.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("the user holds {held} leases, the quota's worth")]
pub struct QuotaReached {
    /// The user's unexpired leases at the time of the refusal.
    pub held: u64,
}

/// What the keeper and every handle share.
#[derive(Debug)]
struct Shared {
    /// Redis counts as unreachable: connects fail open at once, without a call.
    down: AtomicBool,
    metrics: LeaseMetrics,
}

/// The handle on this node's leases; cheap to clone.
#[derive(Clone)]
pub struct Leases {
    store: LeaseStore,
    keeper: Addr<LeaseKeeper>,
    shared: Arc<Shared>,
}

impl Leases {
    /// Starts the keeper on the current arbiter; connects lazily (Redis may be down now).
    /// Fails only on a bad URL.
    pub fn start(config: LeaseConfig, metrics: LeaseMetrics) -> Result<Self, LeaseError> {
        let store = LeaseStore::new(&config)?;
        let shared = Arc::new(Shared {
            down: AtomicBool::new(false),
            metrics,
        });
        let keeper = LeaseKeeper::new(store.clone(), Arc::clone(&shared), config.lease).start();
        Ok(Self {
            store,
            keeper,
            shared,
        })
    }

    /// Takes a lease for socket `conn` of `user`, refused when `limit` (the cluster quota;
    /// `None`: no limit, the lease only counts) is reached. Redis unreachable: admitted.
    pub async fn acquire(
        &self,
        user: &UserId,
        conn: ConnId,
        protocol: LeaseProtocol,
        limit: Option<usize>,
    ) -> Result<LeaseGuard, QuotaReached> {
        if !self.is_down() {
            let call = self.store.acquire(user, conn, protocol, limit);
            match tokio::time::timeout(ACQUIRE_TIMEOUT, call).await {
                Ok(Ok(acquired)) if acquired.admitted => {
                    return Ok(self.hold(user, conn, protocol, Some(acquired.now_ms)));
                }
                Ok(Ok(acquired)) => {
                    return Err(QuotaReached {
                        held: acquired.held,
                    })
                }
                Ok(Err(error)) => self.failed(error),
                Err(_) => self.failed(LeaseError::Timeout(ACQUIRE_TIMEOUT)),
            }
        }
        self.shared.metrics.fail_open.inc();
        Ok(self.hold(user, conn, protocol, None))
    }

    fn hold(
        &self,
        user: &UserId,
        conn: ConnId,
        protocol: LeaseProtocol,
        since_ms: Option<u64>,
    ) -> LeaseGuard {
        self.keeper.do_send(HoldLease {
            conn,
            user: user.clone(),
            protocol,
            since_ms,
        });
        LeaseGuard {
            keeper: self.keeper.clone().recipient(),
            user: user.clone(),
            conn,
        }
    }

    fn failed(&self, error: LeaseError) {
        self.keeper.do_send(StoreFailed { error });
    }

    /// Each user's unexpired leases across the cluster (its open sockets on every replica), in
    /// the order given: one round trip (on Redis Cluster, one concurrent call per hash slot).
    pub async fn count(&self, users: &[UserId]) -> Result<Vec<u64>, LeaseError> {
        match tokio::time::timeout(COUNT_TIMEOUT, self.store.count(users)).await {
            Ok(counted) => counted,
            Err(_) => Err(LeaseError::Timeout(COUNT_TIMEOUT)),
        }
    }

    /// Whether Redis counts as unreachable now (connects fail open).
    pub fn is_down(&self) -> bool {
        self.shared.down.load(Ordering::Acquire)
    }

    /// Leases this node holds now.
    pub fn held(&self) -> i64 {
        self.shared.metrics.leases_held.get()
    }

    /// Gives every lease back (shutdown), waiting at most `deadline`.
    pub async fn release_all(&self, deadline: Duration) {
        let _ = tokio::time::timeout(deadline, self.keeper.send(ReleaseAll)).await;
    }

    /// The keeper's address.
    #[cfg(test)]
    pub(crate) fn keeper(&self) -> &Addr<LeaseKeeper> {
        &self.keeper
    }
}

/// A socket's lease: given back when dropped.
pub struct LeaseGuard {
    keeper: Recipient<ReleaseLease>,
    user: UserId,
    conn: ConnId,
}

impl fmt::Debug for LeaseGuard {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LeaseGuard")
            .field("user", &self.user)
            .field("conn", &self.conn)
            .finish()
    }
}

impl Drop for LeaseGuard {
    fn drop(&mut self) {
        self.keeper.do_send(ReleaseLease {
            conn: self.conn,
            user: self.user.clone(),
        });
    }
}
