//! The in-process broker: a publish is routed straight to this node's hubs. At-most-once, and
//! only to sockets on this node; the default when no Redis URL is configured.

use bytes::Bytes;
use futures_util::future::{self, BoxFuture};

use super::{BrokerError, Publish, RouteSink, RouteUser};
use crate::ids::UserId;
use crate::payload::{Payload, Published};

/// Publishes into this node's directory.
pub struct MemoryPublisher {
    directory: Box<dyn RouteSink>,
}

impl MemoryPublisher {
    /// A publisher feeding `directory`.
    pub fn new(directory: impl RouteSink + 'static) -> Self {
        Self {
            directory: Box::new(directory),
        }
    }
}

impl Publish for MemoryPublisher {
    fn publish(
        &self,
        users: Vec<UserId>,
        payload: Bytes,
    ) -> BoxFuture<'static, Result<(), BrokerError>> {
        let message = Published::from(Payload::from_bytes(payload));
        let routes = users
            .into_iter()
            .map(|user| (RouteUser::Id(user), message.clone()))
            .collect();
        self.directory.route_all(routes);
        Box::pin(future::ready(Ok(())))
    }
}
