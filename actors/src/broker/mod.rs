//! The broker abstraction: where messages for users come from and where the publish API sends
//! them. The same directory and hubs are fed either by the in-process broker (a single node,
//! zero setup) or by Redis pub/sub (any number of replicas). A [`Broker`] is the handle the
//! server holds: a publisher, the broker's health, and the directory it feeds.

mod memory;
mod redis;

use std::sync::Arc;

use actix::ArbiterHandle;
use bytes::Bytes;
use futures_util::future::BoxFuture;
use tokio::sync::watch;

pub use self::memory::MemoryPublisher;
pub use self::redis::{RedisConfig, RedisPublisher, RedisSubscriber};
use crate::directory::{Directory, HubSettings};
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
    directory: Directory,
}

impl Broker {
    /// The in-process broker: publishes go straight to this node's hubs.
    pub fn start_memory(
        arbiters: &[ArbiterHandle],
        hubs: HubSettings,
        metrics: RelayMetrics,
    ) -> Broker {
        metrics.broker_connected.set(1);
        let directory = Directory::start(arbiters, hubs, None, metrics);
        let (_, health) = watch::channel(BrokerHealth::Up);
        Broker {
            kind: "memory",
            publisher: Arc::new(MemoryPublisher::new(directory.clone())),
            health,
            directory,
        }
    }

    /// Redis pub/sub: one subscriber connection for this process, started on the current
    /// arbiter; it connects (and reconnects) in the background, so Redis may be down now.
    pub fn start_redis(
        config: RedisConfig,
        arbiters: &[ArbiterHandle],
        hubs: HubSettings,
        metrics: RelayMetrics,
    ) -> Result<Broker, BrokerError> {
        let (subscriber, health) = RedisSubscriber::start(config.clone(), arbiters, hubs, metrics)?;
        Ok(Broker {
            kind: "redis",
            publisher: Arc::new(RedisPublisher::new(&config)?),
            health,
            directory: subscriber,
        })
    }

    /// "memory" or "redis".
    pub fn kind(&self) -> &'static str {
        self.kind
    }

    /// The broker's health now.
    pub fn health(&self) -> BrokerHealth {
        self.health.borrow().clone()
    }

    /// The directory this broker feeds.
    pub fn directory(&self) -> &Directory {
        &self.directory
    }

    /// Publishes `payload` to each of `users` (on whichever node holds their sockets).
    pub async fn publish(&self, users: Vec<UserId>, payload: Bytes) -> Result<(), BrokerError> {
        self.publisher.publish(users, payload).await
    }
}
