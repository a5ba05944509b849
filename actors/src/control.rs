//! The cluster control channel: commands one replica sends every other replica sharing the
//! Redis, today "disconnect these users". A [`ControlChannel`] publishes commands on
//! `{<prefix>}:control` (a name no user channel, plain or durable, can have) over a connection of
//! its own, and runs a small task holding its own pub/sub connection subscribed to that channel:
//! each command from another node is handed to this node's [`Directory`]. The sender acts on its
//! own sockets directly, so its own commands are ignored when they come back.
//!
//! On a standalone Redis this is plain pub/sub (`PUBLISH`/`SUBSCRIBE`). On Redis Cluster it is
//! sharded pub/sub (`SPUBLISH`/`SSUBSCRIBE`): the channel is one name, so one hash slot and one
//! primary. The task reads the slot map (`CLUSTER SLOTS`, from the seeds and every primary seen
//! since), holds one RESP3 link to the primary serving the channel's slot, and starts over (the
//! slot map read again) when that primary drops the subscription (`sunsubscribe`: the slot moved
//! or the primary was demoted), the link drops, or a health `PING` fails.
//!
//! A command published while a replica is disconnected from Redis (or while its subscription is
//! being moved) does not reach it. The task reconnects with capped, jittered backoff.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt as _;
use redis::{Client, PushKind, Value};
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;

use crate::backoff::full_jitter;
use crate::broker::keys::slot;
use crate::broker::{BrokerError, ConnOptions, Node, NodeDialer, RedisConn, RedisTarget};
use crate::directory::Directory;
use crate::ids::{NodeId, UserId};

/// First reconnect delay ceiling of the subscription; doubles up to [`RECONNECT_CAP`].
const RECONNECT_BASE: Duration = Duration::from_millis(100);
/// Longest wait between two reconnects.
const RECONNECT_CAP: Duration = Duration::from_secs(2);
/// How long publishing a command may take.
const PUBLISH_TIMEOUT: Duration = Duration::from_secs(2);
/// How often the sharded subscription's link is checked with `PING` (cluster mode).
const PING_EVERY: Duration = Duration::from_secs(2);
/// Most nodes remembered to ask for the slot map (the seeds first).
const KNOWN_NODES_MAX: usize = 64;

/// A control channel failure.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ControlError {
    /// The Redis URL (or a cluster node's) does not parse.
    #[error("invalid redis url: {0}")]
    InvalidUrl(#[source] BrokerError),
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
    publisher: RedisConn,
    /// `PUBLISH`, or `SPUBLISH` on a cluster.
    publish: &'static str,
    channel: Arc<[u8]>,
    node: NodeId,
    subscribed: Arc<AtomicBool>,
}

impl ControlChannel {
    /// Starts the subscription task on the current arbiter and a lazy publishing connection.
    /// Fails only on a bad URL.
    pub fn start(
        target: &RedisTarget,
        prefix: &str,
        node: NodeId,
        directory: Directory,
    ) -> Result<Self, ControlError> {
        let options = ConnOptions {
            timeout: PUBLISH_TIMEOUT,
            retries: 1,
        };
        let publisher = target.connect(options).map_err(ControlError::InvalidUrl)?;
        let channel: Arc<[u8]> = Arc::from(channel_name(prefix));
        let subscribed = Arc::new(AtomicBool::new(false));
        let listener = Listener {
            channel: Arc::clone(&channel),
            node: node.clone(),
            directory,
            subscribed: Arc::clone(&subscribed),
        };
        match target {
            RedisTarget::Single(url) => {
                let client = Client::open(url.as_str())
                    .map_err(|error| ControlError::InvalidUrl(BrokerError::InvalidUrl(error)))?;
                actix::spawn(listener.run_plain(client));
            }
            RedisTarget::Cluster(nodes) => {
                let dialer = NodeDialer::new(nodes).map_err(ControlError::InvalidUrl)?;
                actix::spawn(listener.run_sharded(dialer));
            }
        }
        Ok(Self {
            publisher,
            publish: target.publish_command(),
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
        let mut publish = redis::cmd(self.publish);
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
    channel: Arc<[u8]>,
    node: NodeId,
    directory: Directory,
    subscribed: Arc<AtomicBool>,
}

impl Listener {
    /// Standalone Redis: subscribes, hands over commands until the connection ends, and starts
    /// again.
    async fn run_plain(self, client: Client) {
        let mut attempt = 0;
        loop {
            match self.subscribe_plain(&client).await {
                Ok(pubsub) => {
                    attempt = 0;
                    self.subscribed.store(true, Ordering::Release);
                    self.listen_plain(pubsub).await;
                    self.subscribed.store(false, Ordering::Release);
                    tracing::warn!("control channel subscription lost");
                }
                Err(error) => tracing::debug!(%error, "control channel: cannot subscribe"),
            }
            tokio::time::sleep(full_jitter(RECONNECT_BASE, RECONNECT_CAP, attempt)).await;
            attempt = attempt.saturating_add(1);
        }
    }

    async fn subscribe_plain(&self, client: &Client) -> redis::RedisResult<redis::aio::PubSub> {
        let mut pubsub = client.get_async_pubsub().await?;
        pubsub.subscribe(&*self.channel).await?;
        Ok(pubsub)
    }

    async fn listen_plain(&self, pubsub: redis::aio::PubSub) {
        let mut messages = pubsub.into_on_message();
        while let Some(message) = messages.next().await {
            self.on_command(message.get_payload_bytes());
        }
    }

    /// Redis Cluster: finds the primary serving the channel's slot, subscribes there (sharded),
    /// hands over commands until that subscription ends, and starts again.
    async fn run_sharded(self, dialer: NodeDialer) {
        let slot = slot(&self.channel);
        let mut known: Vec<Node> = dialer.seeds().to_vec();
        let mut attempt = 0;
        loop {
            let result = match owner(&dialer, &mut known, slot).await {
                Ok(owner) => self.listen_sharded(&dialer, &owner).await,
                Err(error) => Err(error),
            };
            self.subscribed.store(false, Ordering::Release);
            match result {
                Ok(why) => {
                    attempt = 0;
                    tracing::warn!(why, "control channel subscription lost");
                }
                Err(error) => tracing::debug!(%error, "control channel: cannot subscribe"),
            }
            tokio::time::sleep(full_jitter(RECONNECT_BASE, RECONNECT_CAP, attempt)).await;
            attempt = attempt.saturating_add(1);
        }
    }

    /// Subscribes on `owner` and hands over commands; answers why the subscription ended, or
    /// an error when it never started.
    async fn listen_sharded(
        &self,
        dialer: &NodeDialer,
        owner: &Node,
    ) -> Result<&'static str, String> {
        let (pushes, mut received) = mpsc::unbounded_channel();
        let mut link = dialer.link(owner, pushes).map_err(|e| e.to_string())?;
        let mut subscribe = redis::pipe();
        subscribe
            .ignore_errors()
            .cmd("SSUBSCRIBE")
            .arg(&*self.channel);
        let replies = subscribe
            .query_async::<Vec<Value>>(&mut link)
            .await
            .map_err(|e| format!("{owner}: {e}"))?;
        if let Some(Value::ServerError(error)) = replies.first() {
            // MOVED (the slot map changed meanwhile) or the node is not ready: read it again.
            return Err(format!("{owner}: SSUBSCRIBE refused: {error:?}"));
        }
        self.subscribed.store(true, Ordering::Release);
        tracing::info!(%owner, "control channel subscribed (sharded)");
        let mut health = tokio::time::interval(PING_EVERY);
        health.tick().await;
        loop {
            tokio::select! {
                push = received.recv() => {
                    let Some((_, push)) = push else {
                        return Ok("link closed");
                    };
                    match push.kind {
                        PushKind::SMessage => {
                            if let Some(Value::BulkString(payload)) = push.data.get(1) {
                                self.on_command(payload);
                            }
                        }
                        PushKind::SUnsubscribe => {
                            return Ok("unsubscribed by the node (slot moved or failover)");
                        }
                        PushKind::Disconnection => return Ok("link dropped"),
                        _ => {}
                    }
                }
                _ = health.tick() => {
                    let ping = redis::cmd("PING");
                    let ping = ping.query_async::<Value>(&mut link);
                    if !matches!(tokio::time::timeout(PING_EVERY, ping).await, Ok(Ok(_))) {
                        return Ok("link does not answer");
                    }
                }
            }
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

/// The primary serving `slot`, from the first node in `known` that answers with a slot map in
/// which some primary serves it; every primary seen is added to `known` (the seeds may be gone).
async fn owner(dialer: &NodeDialer, known: &mut Vec<Node>, slot: u16) -> Result<Node, String> {
    let mut last = String::from("no cluster node given");
    let mut i = 0;
    while i < known.len() {
        let node = known[i].clone();
        i += 1;
        match dialer.slots(&node).await {
            Ok(topology) => {
                for primary in topology.primaries() {
                    if known.len() < KNOWN_NODES_MAX && !known.contains(&primary) {
                        known.push(primary);
                    }
                }
                match topology.owner(slot) {
                    Some(owner) => return Ok(owner.clone()),
                    None => last = format!("{node}: no primary serves slot {slot}"),
                }
            }
            Err(error) => last = error,
        }
    }
    Err(last)
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
