//! One Redis command connection for a standalone Redis and for Redis Cluster alike, so that the
//! publisher, the history, the Kafka ingest's dedupe and the console heartbeats do not care
//! which one the server runs against.
//!
//! [`RedisTarget`] says where Redis is (one URL, or the seed nodes of a cluster); its
//! [`RedisTarget::connect`] opens a lazy [`RedisConn`]: a connection manager on one Redis
//! (reconnects by itself), or a cluster connection (routes each command by the hash slot of its
//! key, follows `MOVED`/`ASK`, refreshes its slot map after a failover). `RedisConn` implements
//! [`redis::aio::ConnectionLike`], so `query_async(&mut conn)` works on either.
//!
//! What differs in a cluster, and how the callers handle it:
//! - a pipeline must stay within one hash slot: [`RedisConn::run_each`] runs a list of
//!   independent commands as one pipeline on a single Redis and as one pipeline per slot
//!   (concurrently) on a cluster;
//! - pub/sub is sharded: publishers use [`RedisTarget::publish_command`] (`SPUBLISH` on a
//!   cluster); the subscriber side lives in `broker::cluster`;
//! - commands without a key (`FUNCTION LOAD`, `PING`) are sent to every primary by redis-rs'
//!   own routing, and succeed only when every primary answered.
//!
//! Subscriptions never use a `RedisConn`: it is for commands only.

use std::collections::BTreeMap;
use std::time::Duration;

use futures_util::future::join_all;
use redis::aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig};
use redis::cluster::{ClusterClientBuilder, ClusterConfig};
use redis::cluster_async::ClusterConnection;
use redis::{Arg, Client, Cmd, IntoConnectionInfo, Pipeline, ProtocolVersion, RedisFuture, Value};

use super::keys::slot;
use super::BrokerError;

/// Where Redis is: one server, or a cluster reached through its seed nodes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RedisTarget {
    /// A standalone Redis (`redis://…` or `rediss://…`).
    Single(String),
    /// Redis Cluster: seed node URLs (any reachable one is enough to discover the rest).
    Cluster(Vec<String>),
}

/// How a [`RedisConn`] behaves when Redis is slow or away.
#[derive(Clone, Copy, Debug)]
pub struct ConnOptions {
    /// How long connecting, or one command, may take.
    pub timeout: Duration,
    /// How many times a failed command is retried (after reconnecting, or following a
    /// redirection in a cluster).
    pub retries: u32,
}

impl Default for ConnOptions {
    fn default() -> Self {
        Self {
            timeout: Duration::from_secs(3),
            retries: 1,
        }
    }
}

/// Fewest retries of a cluster command: enough to follow a `MOVED` and a refreshed slot map.
const CLUSTER_MIN_RETRIES: u32 = 3;

impl RedisTarget {
    /// True for Redis Cluster.
    pub fn is_cluster(&self) -> bool {
        matches!(self, RedisTarget::Cluster(_))
    }

    /// The command that publishes to a user's channel: `PUBLISH`, or `SPUBLISH` (sharded
    /// pub/sub) on a cluster.
    pub fn publish_command(&self) -> &'static str {
        if self.is_cluster() {
            "SPUBLISH"
        } else {
            "PUBLISH"
        }
    }

    /// Opens a connection that connects lazily (Redis may be down now); fails only on a URL
    /// that does not parse. Must be called inside a Tokio runtime.
    pub fn connect(&self, options: ConnOptions) -> Result<RedisConn, BrokerError> {
        match self {
            RedisTarget::Single(url) => {
                let client = Client::open(url.as_str()).map_err(BrokerError::InvalidUrl)?;
                let config = ConnectionManagerConfig::new()
                    .set_number_of_retries(options.retries as usize)
                    .set_connection_timeout(Some(options.timeout))
                    .set_response_timeout(Some(options.timeout));
                let manager = ConnectionManager::new_lazy_with_config(client, config)?;
                Ok(RedisConn::Single(manager))
            }
            RedisTarget::Cluster(nodes) => {
                let client = cluster_builder(nodes)?
                    .connection_timeout(options.timeout)
                    .response_timeout(options.timeout)
                    .retries(options.retries.max(CLUSTER_MIN_RETRIES))
                    .build()
                    .map_err(BrokerError::InvalidUrl)?;
                let connection = client.get_pending_async_connection_with_config(
                    ClusterConfig::new()
                        .set_connection_timeout(options.timeout)
                        .set_response_timeout(options.timeout),
                );
                Ok(RedisConn::Cluster(connection))
            }
        }
    }
}

/// A cluster client builder for `nodes`, each checked to be a Redis URL.
pub(crate) fn cluster_builder(nodes: &[String]) -> Result<ClusterClientBuilder, BrokerError> {
    let mut infos = Vec::with_capacity(nodes.len());
    for node in nodes {
        infos.push(
            node.as_str()
                .into_connection_info()
                .map_err(BrokerError::InvalidUrl)?,
        );
    }
    if infos.is_empty() {
        return Err(BrokerError::InvalidUrl(redis::RedisError::from((
            redis::ErrorKind::InvalidClientConfig,
            "no cluster node given",
        ))));
    }
    Ok(ClusterClientBuilder::new(infos).use_protocol(ProtocolVersion::RESP2))
}

/// A Redis command connection: a connection manager on one Redis, or a cluster connection.
/// Cheap to clone (a handle); every clone shares the same connections.
#[derive(Clone)]
pub enum RedisConn {
    /// One Redis.
    Single(ConnectionManager),
    /// Redis Cluster.
    Cluster(ClusterConnection),
}

impl RedisConn {
    /// True on Redis Cluster.
    pub fn is_cluster(&self) -> bool {
        matches!(self, RedisConn::Cluster(_))
    }

    /// Runs independent `commands` and answers each one's reply in order, an error reply as
    /// [`Value::ServerError`] (only a failure to reach Redis fails the whole call). One pipeline
    /// on a single Redis; on a cluster, one pipeline per hash slot, run concurrently (a pipeline
    /// may not span slots), with commands whose key this cannot tell run alone (`FCALL`/`EVAL`
    /// and the usual single-key commands are known).
    pub async fn run_each(&self, commands: &[Cmd]) -> Result<Vec<Value>, BrokerError> {
        if commands.is_empty() {
            return Ok(Vec::new());
        }
        let groups: Vec<Vec<usize>> = match self {
            RedisConn::Single(_) => vec![(0..commands.len()).collect()],
            RedisConn::Cluster(_) => slot_groups(commands),
        };
        let runs = groups.iter().map(|group| {
            let mut pipeline = redis::pipe();
            pipeline.ignore_errors();
            for &i in group {
                pipeline.add_command(commands[i].clone());
            }
            let mut connection = self.clone();
            async move { pipeline.query_async::<Vec<Value>>(&mut connection).await }
        });
        let results = join_all(runs).await;
        let mut replies: Vec<Option<Value>> = vec![None; commands.len()];
        for (group, result) in groups.iter().zip(results) {
            let values = result?;
            if values.len() != group.len() {
                return Err(BrokerError::UnexpectedReply(format!(
                    "{} replies to a pipeline of {} commands",
                    values.len(),
                    group.len()
                )));
            }
            for (&i, value) in group.iter().zip(values) {
                replies[i] = Some(value);
            }
        }
        replies
            .into_iter()
            .map(|reply| reply.ok_or_else(|| BrokerError::UnexpectedReply("no reply".into())))
            .collect()
    }
}

/// Indexes of `commands` grouped by the hash slot of their key, in order; a command whose key
/// cannot be told is a group of its own.
fn slot_groups(commands: &[Cmd]) -> Vec<Vec<usize>> {
    let mut by_slot: BTreeMap<u16, Vec<usize>> = BTreeMap::new();
    let mut alone = Vec::new();
    for (i, command) in commands.iter().enumerate() {
        match key_of(command) {
            Some(key) => by_slot.entry(slot(key)).or_default().push(i),
            None => alone.push(vec![i]),
        }
    }
    by_slot.into_values().chain(alone).collect()
}

/// The key a command is routed by: the first key of `FCALL`/`EVAL` (after the key count), else
/// the first argument of a known single-key command; `None` for anything else.
fn key_of(command: &Cmd) -> Option<&[u8]> {
    let args: Vec<&[u8]> = command
        .args_iter()
        .filter_map(|arg| match arg {
            Arg::Simple(bytes) => Some(bytes),
            _ => None,
        })
        .collect();
    let name = args.first()?.to_ascii_uppercase();
    match name.as_slice() {
        b"FCALL" | b"FCALL_RO" | b"EVAL" | b"EVALSHA" | b"EVAL_RO" | b"EVALSHA_RO" => {
            let keys: usize = std::str::from_utf8(args.get(2)?).ok()?.parse().ok()?;
            (keys > 0).then(|| args.get(3).copied()).flatten()
        }
        b"PUBLISH" | b"SPUBLISH" | b"GET" | b"SET" | b"DEL" | b"EXPIRE" | b"PEXPIRE" | b"TTL"
        | b"ZADD" | b"ZREM" | b"ZCARD" | b"ZRANGEBYSCORE" | b"ZREMRANGEBYSCORE" | b"HSET"
        | b"HDEL" | b"HGET" | b"HGETALL" | b"SADD" | b"SREM" | b"SMEMBERS" | b"XADD"
        | b"XRANGE" | b"XLEN" => args.get(1).copied(),
        _ => None,
    }
}

impl From<ConnectionManager> for RedisConn {
    fn from(connection: ConnectionManager) -> Self {
        RedisConn::Single(connection)
    }
}

impl From<ClusterConnection> for RedisConn {
    fn from(connection: ClusterConnection) -> Self {
        RedisConn::Cluster(connection)
    }
}

impl ConnectionLike for RedisConn {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            RedisConn::Single(connection) => connection.req_packed_command(cmd),
            RedisConn::Cluster(connection) => connection.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        cmd: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            RedisConn::Single(connection) => connection.req_packed_commands(cmd, offset, count),
            RedisConn::Cluster(connection) => connection.req_packed_commands(cmd, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            RedisConn::Single(connection) => connection.get_db(),
            RedisConn::Cluster(connection) => connection.get_db(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands_group_by_the_slot_of_their_key() {
        let spublish = |channel: &str| {
            let mut cmd = redis::cmd("SPUBLISH");
            cmd.arg(channel).arg("x");
            cmd
        };
        let fcall = |key: &str| {
            let mut cmd = redis::cmd("FCALL");
            cmd.arg("ws_publish").arg(1).arg(key).arg("x");
            cmd
        };
        let commands = [
            spublish("ws:alice"),
            spublish("ws:bob"),
            fcall("ws:alice"),
            redis::cmd("PING"),
            spublish("{ws:alice}"),
        ];
        assert_ne!(slot(b"ws:alice"), slot(b"ws:bob"));
        let mut groups = slot_groups(&commands);
        groups.sort();
        // The durable channel `{ws:alice}` shares the plain channel's slot by construction.
        assert_eq!(groups, vec![vec![0, 2, 4], vec![1], vec![3]]);
    }

    #[test]
    fn the_publish_command_follows_the_mode() {
        assert_eq!(
            RedisTarget::Single("redis://x".into()).publish_command(),
            "PUBLISH"
        );
        let cluster = RedisTarget::Cluster(vec!["redis://x:1".into()]);
        assert_eq!(cluster.publish_command(), "SPUBLISH");
        assert!(cluster_builder(&[]).is_err());
        assert!(cluster_builder(&["not a url".into()]).is_err());
    }
}
