//! The broker abstraction: where messages for users come from and where the publish API sends
//! them. The same directory and hubs are fed either by the in-process broker (a single node,
//! zero setup) or by Redis pub/sub (any number of replicas), on a standalone Redis (`redis`) or
//! on Redis Cluster with sharded pub/sub (`cluster`). A [`Broker`] is the handle the server
//! holds: a publisher and the broker's health. The broker knows the directory it feeds only as a
//! [`RouteSink`]; the server starts the directory and hands it over. [`conn`] is the one
//! command connection type every Redis user of the server shares ([`RedisConn`]: standalone or
//! cluster).

mod cluster;
pub mod conn;
pub mod durable;
pub mod keys;
mod memory;
mod publisher;
mod redis;
mod route;

use std::sync::Arc;

use bytes::Bytes;
use futures_util::future::BoxFuture;
use tokio::sync::watch;

pub use self::cluster::ClusterNodeHealth;
pub(crate) use self::cluster::{Node, NodeDialer};
pub use self::conn::{ConnOptions, RedisConn, RedisTarget};
pub use self::memory::MemoryPublisher;
pub use self::redis::{RedisConfig, RedisPublisher, RedisStart, RedisSubscriber};
pub use self::route::{channel_name, Interest, RouteSink, RouteUser};
use crate::ids::UserId;
use crate::metrics::RelayMetrics;

/// A broker failure, as seen by a publisher or the subscriber.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BrokerError {
    /// The Redis URL does not parse.
    #[error("invalid redis url: {0}")]
    InvalidUrl(#[source] ::redis::RedisError),
    /// A Redis command failed (connection down, timeout, error reply).
    #[error("redis command failed: {0}")]
    Redis(#[from] ::redis::RedisError),
    /// The process is shutting down: the store takes no more requests.
    #[error("shutting down")]
    Closed,
    /// Redis answered something the caller cannot read (e.g. a history function's reply).
    #[error("unexpected redis reply: {0}")]
    UnexpectedReply(String),
}

/// Whether the broker can deliver right now.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum BrokerHealth {
    /// Connected and subscribed.
    Up,
    /// Not connected yet, or lost: `reason` says why.
    Down {
        /// What went wrong, for /readyz and /healthz.
        reason: String,
    },
}

impl BrokerHealth {
    /// True when the broker can deliver.
    pub fn is_up(&self) -> bool {
        matches!(self, BrokerHealth::Up)
    }
}

/// Publishes messages to users through a broker. Each implementation documents its guarantee.
pub trait Publish: Send + Sync {
    /// Publishes `payload` to every user in `users`; resolves once the broker has taken them.
    fn publish(
        &self,
        users: Vec<UserId>,
        payload: Bytes,
    ) -> BoxFuture<'static, Result<(), BrokerError>>;
}

/// The server's handle on its broker.
#[derive(Clone)]
pub struct Broker {
    kind: &'static str,
    publisher: Arc<dyn Publish>,
    health: watch::Receiver<BrokerHealth>,
    /// On Redis Cluster: each node's state.
    cluster: Option<watch::Receiver<Vec<ClusterNodeHealth>>>,
}

impl Broker {
    /// The in-process broker: publishes go straight to `directory`, this node's hubs.
    pub fn memory(directory: impl RouteSink + 'static, metrics: &RelayMetrics) -> Broker {
        metrics.broker_connected.set(1);
        let (_, health) = watch::channel(BrokerHealth::Up);
        Broker {
            kind: "memory",
            publisher: Arc::new(MemoryPublisher::new(directory)),
            health,
            cluster: None,
        }
    }

    /// Redis pub/sub, started in two steps so that the directory can be started in between:
    /// the directory reports its [`Interest`] to [`RedisStart::interest`], then
    /// [`RedisStart::start`] gets the directory to feed. Connects lazily: Redis may be down now.
    pub fn redis(config: RedisConfig) -> Result<RedisStart, BrokerError> {
        RedisStart::new(config)
    }

    /// "memory" or "redis".
    pub fn kind(&self) -> &'static str {
        self.kind
    }

    /// The broker's health now.
    pub fn health(&self) -> BrokerHealth {
        self.health.borrow().clone()
    }

    /// On Redis Cluster, the state of the subscriber's link to each node; `None` otherwise.
    pub fn cluster_nodes(&self) -> Option<Vec<ClusterNodeHealth>> {
        self.cluster.as_ref().map(|nodes| nodes.borrow().clone())
    }

    /// Publishes `payload` to each of `users` (on whichever node holds their sockets).
    pub async fn publish(&self, users: Vec<UserId>, payload: Bytes) -> Result<(), BrokerError> {
        self.publisher.publish(users, payload).await
    }
}
