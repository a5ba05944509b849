//! The cluster control channel: commands one replica sends every other replica sharing the
//! Redis, today "disconnect these users". A [`ControlChannel`] publishes commands on
//! `{<prefix>}:control` (a name no user channel, plain or durable, can have) over a connection of
//! its own, and runs a small task holding its own pub/sub connection subscribed to that channel:
//! each command from another node is handed to this node's [`Directory`]. The sender acts on its
//! own sockets directly, so its own commands are ignored when they come back.
//!
//! The subscription is plain pub/sub: a command published while a replica is disconnected from
//! Redis does not reach it. The task reconnects with capped, jittered backoff.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt as _;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::Client;
use serde::{Deserialize, Serialize};

use crate::backoff::full_jitter;
use crate::directory::Directory;
use crate::ids::{NodeId, UserId};
use crate::leases::{client, LeaseError};

/// First reconnect delay ceiling of the subscription; doubles up to [`RECONNECT_CAP`].
const RECONNECT_BASE: Duration = Duration::from_millis(100);
/// Longest wait between two reconnects.
const RECONNECT_CAP: Duration = Duration::from_secs(2);
/// How long publishing a command may take.
const PUBLISH_TIMEOUT: Duration = Duration::from_secs(2);

/// A control channel failure.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ControlError {
    /// The Redis URL does not parse.
    #[error("invalid redis url: {0}")]
    InvalidUrl(#[source] LeaseError),
    /// Publishing failed.
    #[error("redis command failed: {0}")]
    Redis(#[from] redis::RedisError),
    /// Redis did not answer in time.
    #[error("redis did not answer within {0:?}")]
    Timeout(Duration),
}

/// A command on the control channel.
#[derive(Debug, Serialize, Deserialize)]
struct Command {
    /// The node that sent it.
    from: String,
    /// Close every socket of these users with 4003.
    disconnect: Disconnect,
}

#[derive(Debug, Serialize, Deserialize)]
struct Disconnect {
    user_ids: Vec<String>,
    reason: String,
}

/// Publishes commands to every replica and hands other replicas' commands to the directory.
#[derive(Clone)]
pub struct ControlChannel {
    publisher: ConnectionManager,
    channel: Arc<[u8]>,
    node: NodeId,
    subscribed: Arc<AtomicBool>,
}

impl ControlChannel {
    /// Starts the subscription task on the current arbiter and a lazy publishing connection.
    /// Fails only on a bad URL.
    pub fn start(
        url: &str,
        prefix: &str,
        node: NodeId,
        directory: Directory,
    ) -> Result<Self, ControlError> {
        let client = client(url).map_err(ControlError::InvalidUrl)?;
        let manager = ConnectionManagerConfig::new()
            .set_number_of_retries(1)
            .set_connection_timeout(Some(PUBLISH_TIMEOUT))
            .set_response_timeout(Some(PUBLISH_TIMEOUT));
        let publisher = ConnectionManager::new_lazy_with_config(client.clone(), manager)?;
        let channel: Arc<[u8]> = Arc::from(channel_name(prefix));
        let subscribed = Arc::new(AtomicBool::new(false));
        let listener = Listener {
            client,
            channel: Arc::clone(&channel),
            node: node.clone(),
            directory,
            subscribed: Arc::clone(&subscribed),
        };
        actix::spawn(listener.run());
        Ok(Self {
            publisher,
            channel,
            node,
            subscribed,
        })
    }

    /// Tells every other replica to close every socket of `users` with 4003 and `reason`.
    pub async fn disconnect(&self, users: &[UserId], reason: &str) -> Result<(), ControlError> {
        let command = Command {
            from: self.node.as_str().to_owned(),
            disconnect: Disconnect {
                user_ids: users.iter().map(|user| user.as_str().to_owned()).collect(),
                reason: reason.to_owned(),
            },
        };
        // A struct of strings always serialises.
        let payload = serde_json::to_vec(&command).unwrap_or_default();
        let mut connection = self.publisher.clone();
        let mut publish = redis::cmd("PUBLISH");
        publish.arg(&*self.channel).arg(payload);
        let publish = publish.query_async::<i64>(&mut connection);
        match tokio::time::timeout(PUBLISH_TIMEOUT, publish).await {
            Ok(published) => published.map(|_| ()).map_err(ControlError::from),
            Err(_) => Err(ControlError::Timeout(PUBLISH_TIMEOUT)),
        }
    }

    /// Whether the subscription is up now.
    pub fn is_subscribed(&self) -> bool {
        self.subscribed.load(Ordering::Acquire)
    }
}

/// `{<prefix>}:control`: starts with `{` (so no plain channel), and is no durable channel (those
/// are `{tag}` followed by a plain channel, or a plain channel in braces).
pub fn channel_name(prefix: &str) -> Vec<u8> {
    format!("{{{prefix}}}:control").into_bytes()
}

/// The subscription task.
struct Listener {
    client: Client,
    channel: Arc<[u8]>,
    node: NodeId,
    directory: Directory,
    subscribed: Arc<AtomicBool>,
}

impl Listener {
    /// Subscribes, hands over commands until the connection ends, and starts again.
    async fn run(self) {
        let mut attempt = 0;
        loop {
            match self.subscribe().await {
                Ok(pubsub) => {
                    attempt = 0;
                    self.subscribed.store(true, Ordering::Release);
                    self.listen(pubsub).await;
                    self.subscribed.store(false, Ordering::Release);
                    tracing::warn!("control channel subscription lost");
                }
                Err(error) => tracing::debug!(%error, "control channel: cannot subscribe"),
            }
            tokio::time::sleep(full_jitter(RECONNECT_BASE, RECONNECT_CAP, attempt)).await;
            attempt = attempt.saturating_add(1);
        }
    }

    async fn subscribe(&self) -> redis::RedisResult<redis::aio::PubSub> {
        let mut pubsub = self.client.get_async_pubsub().await?;
        pubsub.subscribe(&*self.channel).await?;
        Ok(pubsub)
    }

    async fn listen(&self, pubsub: redis::aio::PubSub) {
        let mut messages = pubsub.into_on_message();
        while let Some(message) = messages.next().await {
            self.on_command(message.get_payload_bytes());
        }
    }

    fn on_command(&self, payload: &[u8]) {
        let command: Command = match serde_json::from_slice(payload) {
            Ok(command) => command,
            Err(error) => {
                tracing::warn!(%error, "control channel: malformed command ignored");
                return;
            }
        };
        if command.from == self.node.as_str() {
            return;
        }
        let Disconnect { user_ids, reason } = command.disconnect;
        let users: Vec<UserId> = user_ids.iter().map(|id| UserId::new(id)).collect();
        tracing::info!(users = users.len(), from = %command.from, "disconnect command");
        self.directory.disconnect(&users, &reason);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_control_channel_is_no_user_channel() {
        assert_eq!(channel_name("ws:"), b"{ws:}:control");
        let durable = crate::broker::keys::UserKeys::of_channel(b"ws:control").durable_channel();
        assert_ne!(durable, channel_name("ws:"));
    }
}
