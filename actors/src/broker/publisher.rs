//! The Redis publisher: `PUBLISH` (or `SPUBLISH` on Redis Cluster) of plain messages on a
//! command connection of its own, which the users' histories share for durable publishes.

use bytes::Bytes;
use futures_util::future::BoxFuture;
use redis::Value;

use super::conn::{ConnOptions, RedisConn};
use super::redis::{RedisConfig, COMMAND_TIMEOUT};
use super::{channel_name, BrokerError, Publish};
use crate::ids::UserId;

/// Publishes on its own connection, so publishing never queues behind subscription traffic:
/// `PUBLISH`, or `SPUBLISH` on Redis Cluster (one pipeline per hash slot there).
pub struct RedisPublisher {
    pub(super) connection: RedisConn,
    command: &'static str,
    prefix: String,
}

impl RedisPublisher {
    /// A publisher that connects lazily (Redis may be down now).
    pub fn new(config: &RedisConfig) -> Result<Self, BrokerError> {
        let options = ConnOptions {
            timeout: COMMAND_TIMEOUT,
            retries: 1,
        };
        Ok(Self {
            connection: config.target.connect(options)?,
            command: config.target.publish_command(),
            prefix: config.channel_prefix.clone(),
        })
    }
}

impl Publish for RedisPublisher {
    fn publish(
        &self,
        users: Vec<UserId>,
        payload: Bytes,
    ) -> BoxFuture<'static, Result<(), BrokerError>> {
        let commands: Vec<redis::Cmd> = users
            .iter()
            .map(|user| {
                let mut command = redis::cmd(self.command);
                command
                    .arg(channel_name(&self.prefix, user))
                    .arg(payload.as_ref());
                command
            })
            .collect();
        let connection = self.connection.clone();
        Box::pin(async move {
            for reply in connection.run_each(&commands).await? {
                if let Value::ServerError(error) = reply {
                    return Err(BrokerError::Redis(error.into()));
                }
            }
            Ok(())
        })
    }
}
