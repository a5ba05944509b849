//! What the console does to a user, behind one trait so that the implementation can change
//! without touching the routes: [`ConsoleActions::publish`] (a test message through the broker,
//! durable when a history is configured) and [`ConsoleActions::disconnect`] (close the user's
//! sockets with 4003).
//!
//! [`LocalActions`] disconnects the sockets on **this** replica only. The cluster-wide
//! disconnect (`POST /api/v1/disconnect`: every replica closes the user's sockets, through
//! Redis) replaces it by implementing the same trait; the console and its API stay as they are.

use std::sync::Arc;

use bytes::Bytes;
use futures_util::future::BoxFuture;
use ws_actors::history::{History, Position};
use ws_actors::{Broker, BrokerError, Directory, UserId};

/// What a publish did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Published {
    /// The message's place in the user's history, when it was published durably.
    pub position: Option<Position>,
}

/// What a disconnect did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Disconnected {
    /// Sockets told to close.
    pub sockets: usize,
    /// Where they were counted: `node` (this replica) or `cluster`.
    pub scope: &'static str,
}

/// Why an action failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ActionError {
    /// The broker (or the history store) refused or is unreachable.
    #[error("broker unavailable: {0}")]
    Broker(#[from] BrokerError),
    /// The node is shutting down: its directory no longer answers.
    #[error("the node is shutting down")]
    Stopped,
}

/// The console's actions on one user.
pub trait ConsoleActions: Send + Sync {
    /// Publishes `payload` to `user`, wherever the user's sockets are.
    fn publish(
        &self,
        user: UserId,
        payload: Bytes,
    ) -> BoxFuture<'static, Result<Published, ActionError>>;

    /// Closes `user`'s sockets with 4003, `reason` as the close message.
    fn disconnect(
        &self,
        user: UserId,
        reason: Arc<str>,
    ) -> BoxFuture<'static, Result<Disconnected, ActionError>>;
}

/// Publishes through this node's broker (durably through `history` when there is one) and
/// disconnects the sockets of this node.
pub struct LocalActions {
    /// The broker every publish goes through.
    pub broker: Broker,
    /// The hubs of this node.
    pub directory: Directory,
    /// The history store, when durable publishing is available.
    pub history: Option<Arc<dyn History>>,
}

impl ConsoleActions for LocalActions {
    fn publish(
        &self,
        user: UserId,
        payload: Bytes,
    ) -> BoxFuture<'static, Result<Published, ActionError>> {
        let broker = self.broker.clone();
        let history = self.history.clone();
        Box::pin(async move {
            let Some(history) = history else {
                broker.publish(vec![user], payload).await?;
                return Ok(Published { position: None });
            };
            let positions = history.publish(vec![user], payload, None).await?;
            Ok(Published {
                position: positions.into_iter().next(),
            })
        })
    }

    fn disconnect(
        &self,
        user: UserId,
        reason: Arc<str>,
    ) -> BoxFuture<'static, Result<Disconnected, ActionError>> {
        let directory = self.directory.clone();
        Box::pin(async move {
            let sockets = directory
                .disconnect(&user, reason)
                .await
                .map_err(|_| ActionError::Stopped)?;
            Ok(Disconnected {
                sockets,
                scope: "node",
            })
        })
    }
}
