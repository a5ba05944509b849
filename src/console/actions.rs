//! What the console does to a user, behind one trait so that the implementation can change
//! without touching the routes: [`ConsoleActions::publish`] (a test message through the broker,
//! durable when a history is configured). Disconnecting uses the cluster-wide disconnect of
//! `POST /api/v1/disconnect` (`routes::disconnect::disconnect_users`).

use std::sync::Arc;

use bytes::Bytes;
use futures_util::future::BoxFuture;
use ws_actors::history::{History, Position};
use ws_actors::{Broker, BrokerError, UserId};

/// What a publish did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Published {
    /// The message's place in the user's history, when it was published durably.
    pub position: Option<Position>,
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
}

/// Publishes through this node's broker (durably through `history` when there is one).
pub struct LocalActions {
    /// The broker every publish goes through.
    pub broker: Broker,
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
}
