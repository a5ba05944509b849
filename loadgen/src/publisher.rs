//! Publishing through Redis: one multiplexed connection, commands sent in pipelines, messages
//! numbered round robin over the users so that every worker can tell, from the total alone,
//! what each of its sockets should have received. Plain `PUBLISH ws:<user>` (at-most-once), or
//! durable: `FCALL ws_publish 1 ws:<user> <payload>`, the Redis Function the server loads at
//! start-up, which appends to the user's history and publishes on its durable channel in one
//! atomic step and answers the message's position.
//!
//! With `--redis-cluster`, [`Conn`] publishes plainly with `SPUBLISH` instead, one pipeline per
//! primary (each command names one channel, so a pipeline may mix slots as long as its node
//! serves them all); durably with the same `FCALL ws_publish`, each sent to the primary owning
//! its key's slot (the server loads the library on every primary).

use std::sync::Arc;
use std::time::Duration;

use anyhow::{anyhow, Context as _};
use futures_util::future::try_join_all;
use redis::aio::MultiplexedConnection;
use redis::{AsyncConnectionConfig, Value};

use crate::payload;
use crate::util::now_us;

/// Opens a connection to `url` with timeouts suited to big pipelines on a busy machine.
pub async fn connect(url: &str) -> anyhow::Result<MultiplexedConnection> {
    let client = redis::Client::open(url).with_context(|| format!("redis URL {url:?}"))?;
    let config = AsyncConnectionConfig::new()
        .set_connection_timeout(Some(Duration::from_secs(5)))
        .set_response_timeout(Some(Duration::from_secs(30)));
    client
        .get_multiplexed_async_connection_with_config(&config)
        .await
        .with_context(|| format!("cannot connect to redis at {url}"))
}

/// Names the channel of every user of a run.
#[derive(Clone, Debug)]
pub struct Channels {
    /// `{channel_prefix}{user_prefix}-`.
    stem: String,
}

impl Channels {
    /// Channels `{channel_prefix}{user_prefix}-{index}`.
    pub fn new(channel_prefix: &str, user_prefix: &str) -> Self {
        Self {
            stem: format!("{channel_prefix}{user_prefix}-"),
        }
    }

    /// Channel of user `index`.
    pub fn of(&self, index: u64) -> String {
        format!("{}{index}", self.stem)
    }
}

/// How messages are published.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// `PUBLISH <channel> <payload>`: answers how many subscribers got it.
    Plain,
    /// `FCALL ws_publish 1 <channel> <payload>`: answers `[epoch, offset]`.
    Durable,
}

impl Mode {
    /// The command as Redis' `INFO commandstats` names it.
    pub fn command(self) -> &'static str {
        match self {
            Mode::Plain => "publish",
            Mode::Durable => "fcall",
        }
    }

    /// Adds the command publishing `payload` to `channel` to `pipe`.
    fn push(self, pipe: &mut redis::Pipeline, channel: String, payload: &[u8]) {
        match self {
            Mode::Plain => pipe.cmd("PUBLISH").arg(channel).arg(payload),
            Mode::Durable => pipe
                .cmd("FCALL")
                .arg("ws_publish")
                .arg(1)
                .arg(channel)
                .arg(payload),
        };
    }

    /// [`Mode::push`] for Redis Cluster: `SPUBLISH` (sharded pub/sub) instead of `PUBLISH`;
    /// the durable `FCALL` is the same (the caller sends it to the key's primary).
    fn push_sharded(self, pipe: &mut redis::Pipeline, channel: String, payload: &[u8]) {
        match self {
            Mode::Plain => {
                pipe.cmd("SPUBLISH").arg(channel).arg(payload);
            }
            Mode::Durable => self.push(pipe, channel, payload),
        }
    }

    /// How many of a pipeline's replies reached nobody: a plain publish's receiver count is 0;
    /// a durable publish must answer `[epoch, offset]` (and does not say who got it).
    fn to_nobody(self, replies: &[Value]) -> anyhow::Result<u64> {
        match self {
            Mode::Plain => Ok(replies
                .iter()
                .filter(|r| matches!(r, Value::Int(0)))
                .count() as u64),
            Mode::Durable => {
                if let Some(odd) = replies.iter().find(|r| !is_position(r)) {
                    anyhow::bail!("FCALL ws_publish answered {odd:?}, not [epoch, offset]");
                }
                Ok(0)
            }
        }
    }
}

/// What one pipeline did.
#[derive(Debug, Default, Clone, Copy)]
pub struct Sent {
    /// Messages published.
    pub messages: u64,
    /// Of those, how many reached no subscriber (PUBLISH answered 0; a durable publish does
    /// not say, and counts 0).
    pub to_nobody: u64,
}

/// Publishes messages `first..first + count` of the round-robin sequence over `users` users,
/// each payload `size` bytes stamped with the time of sending (or with 0 when `untimed`: the
/// receivers then count it but do not time it).
pub async fn publish_range(
    conn: &mut MultiplexedConnection,
    mode: Mode,
    channels: &Channels,
    range: std::ops::Range<u64>,
    users: u64,
    size: usize,
    untimed: bool,
) -> anyhow::Result<Sent> {
    if range.is_empty() || users == 0 {
        return Ok(Sent::default());
    }
    let count = range.end - range.start;
    let mut pipe = redis::pipe();
    let mut body = Vec::with_capacity(size + 32);
    let ts = if untimed { 0 } else { now_us() };
    for i in range {
        payload::build(i / users, ts, size, &mut body);
        mode.push(&mut pipe, channels.of(i % users), &body);
    }
    let to_nobody = match mode {
        Mode::Plain => {
            let replies: Vec<i64> = pipe
                .query_async(conn)
                .await
                .context("redis PUBLISH pipeline")?;
            replies.iter().filter(|&&r| r == 0).count() as u64
        }
        Mode::Durable => {
            // Every reply is [epoch, offset]; an error reply fails the whole pipeline.
            let replies: Vec<redis::Value> = pipe.query_async(conn).await.context(
                "redis FCALL ws_publish pipeline (is the server's history on, and the function loaded?)",
            )?;
            if let Some(odd) = replies.iter().find(|r| !is_position(r)) {
                anyhow::bail!("FCALL ws_publish answered {odd:?}, not [epoch, offset]");
            }
            0
        }
    };
    Ok(Sent {
        messages: count,
        to_nobody,
    })
}

/// Whether a reply of `ws_publish` is `[epoch, offset]`.
fn is_position(reply: &redis::Value) -> bool {
    matches!(
        reply,
        redis::Value::Array(items)
            if items.len() == 2 && matches!(items[1], redis::Value::Int(offset) if offset > 0)
    )
}

/// `CLIENT KILL TYPE pubsub`: drops every subscriber connection of the Redis server (the
/// servers' links for live messages) as a network blip would; answers how many were killed.
pub async fn kill_subscribers(conn: &mut MultiplexedConnection) -> anyhow::Result<u64> {
    redis::cmd("CLIENT")
        .arg("KILL")
        .arg("TYPE")
        .arg("pubsub")
        .query_async(conn)
        .await
        .context("redis CLIENT KILL TYPE pubsub")
}

/// Publishes one explicit list of `(user, seq)` messages; returns the users whose PUBLISH
/// reached nobody (not subscribed yet).
pub async fn publish_each(
    conn: &mut MultiplexedConnection,
    channels: &Channels,
    messages: &[(u64, u64)],
    size: usize,
) -> anyhow::Result<Vec<u64>> {
    let mut pipe = redis::pipe();
    let mut body = Vec::with_capacity(size + 32);
    let ts = now_us();
    for &(user, seq) in messages {
        payload::build(seq, ts, size, &mut body);
        pipe.cmd("PUBLISH").arg(channels.of(user)).arg(&body[..]);
    }
    let replies: Vec<i64> = pipe
        .query_async(conn)
        .await
        .context("redis PUBLISH pipeline")?;
    Ok(messages
        .iter()
        .zip(replies)
        .filter(|(_, r)| *r == 0)
        .map(|(&(user, _), _)| user)
        .collect())
}

/// Where the run publishes: one Redis (`PUBLISH`) or a cluster (`SPUBLISH` per primary).
#[derive(Clone)]
pub enum Conn {
    /// One Redis.
    Single(MultiplexedConnection),
    /// Redis Cluster.
    Cluster(Arc<ClusterConns>),
}

/// A connection per primary of a cluster and who serves each slot (read once: the cluster must
/// not change during a run).
pub struct ClusterConns {
    owners: Vec<usize>,
    nodes: Vec<MultiplexedConnection>,
}

/// Connects to the Redis at `url`, or with `cluster` to the cluster `url` is a node of.
pub async fn connect_any(url: &str, cluster: bool) -> anyhow::Result<Conn> {
    let mut first = connect(url).await?;
    if !cluster {
        return Ok(Conn::Single(first));
    }
    let slots: Value = redis::cmd("CLUSTER")
        .arg("SLOTS")
        .query_async(&mut first)
        .await
        .context("CLUSTER SLOTS")?;
    let Value::Array(ranges) = slots else {
        return Err(anyhow!("CLUSTER SLOTS: {slots:?}"));
    };
    let mut names: Vec<String> = Vec::new();
    let mut owners = vec![usize::MAX; 16384];
    for range in ranges {
        let Value::Array(fields) = range else {
            continue;
        };
        let (Some(Value::Int(start)), Some(Value::Int(end)), Some(Value::Array(node))) =
            (fields.first(), fields.get(1), fields.get(2))
        else {
            continue;
        };
        let (Some(Value::BulkString(host)), Some(Value::Int(port))) = (node.first(), node.get(1))
        else {
            continue;
        };
        let name = format!("redis://{}:{port}", String::from_utf8_lossy(host));
        let index = match names.iter().position(|n| *n == name) {
            Some(index) => index,
            None => {
                names.push(name);
                names.len() - 1
            }
        };
        for slot in *start..=*end {
            if let Some(owner) = owners.get_mut(slot as usize) {
                *owner = index;
            }
        }
    }
    if owners.contains(&usize::MAX) {
        return Err(anyhow!("the cluster does not serve every slot"));
    }
    let mut nodes = Vec::with_capacity(names.len());
    for name in &names {
        nodes.push(connect(name).await?);
    }
    Ok(Conn::Cluster(Arc::new(ClusterConns { owners, nodes })))
}

/// Redis Cluster's hash slot of `key`.
fn slot(key: &[u8]) -> usize {
    let hashed = key
        .iter()
        .position(|&b| b == b'{')
        .and_then(|open| {
            let rest = &key[open + 1..];
            let close = rest.iter().position(|&b| b == b'}')?;
            (close > 0).then(|| &rest[..close])
        })
        .unwrap_or(key);
    let mut crc: u16 = 0;
    for &byte in hashed {
        crc ^= u16::from(byte) << 8;
        for _ in 0..8 {
            crc = if crc & 0x8000 != 0 {
                (crc << 1) ^ 0x1021
            } else {
                crc << 1
            };
        }
    }
    usize::from(crc % 16384)
}

impl ClusterConns {
    /// Sends `(channel, body)` pairs in `mode` (SPUBLISH, or FCALL ws_publish with the channel
    /// as its key), one pipeline per primary, all at once; answers each one's reply in order.
    async fn send(
        &self,
        mode: Mode,
        messages: Vec<(String, Vec<u8>)>,
    ) -> anyhow::Result<Vec<Value>> {
        let mut groups: Vec<(Vec<usize>, redis::Pipeline)> = (0..self.nodes.len())
            .map(|_| (Vec::new(), redis::pipe()))
            .collect();
        for (i, (channel, body)) in messages.into_iter().enumerate() {
            let node = self.owners[slot(channel.as_bytes())];
            groups[node].0.push(i);
            mode.push_sharded(&mut groups[node].1, channel, &body);
        }
        let what = match mode {
            Mode::Plain => "redis SPUBLISH pipeline",
            Mode::Durable => "redis FCALL ws_publish pipeline (is the server's history on, and the function loaded on every primary?)",
        };
        let runs = groups
            .iter()
            .zip(&self.nodes)
            .filter(|((idx, _), _)| !idx.is_empty())
            .map(|((_, pipe), conn)| {
                let mut conn = conn.clone();
                async move {
                    pipe.query_async::<Vec<Value>>(&mut conn)
                        .await
                        .context(what)
                }
            });
        let results = try_join_all(runs).await?;
        let total = groups.iter().map(|(idx, _)| idx.len()).sum();
        let mut replies = vec![Value::Nil; total];
        let used = groups.iter().filter(|(idx, _)| !idx.is_empty());
        for ((idx, _), values) in used.zip(results) {
            for (&i, value) in idx.iter().zip(values) {
                replies[i] = value;
            }
        }
        Ok(replies)
    }
}

impl Conn {
    /// [`publish_range`] on either kind of Redis.
    pub async fn publish_range(
        &mut self,
        mode: Mode,
        channels: &Channels,
        range: std::ops::Range<u64>,
        users: u64,
        size: usize,
        untimed: bool,
    ) -> anyhow::Result<Sent> {
        match self {
            Conn::Single(conn) => {
                publish_range(conn, mode, channels, range, users, size, untimed).await
            }
            Conn::Cluster(cluster) => {
                if range.is_empty() || users == 0 {
                    return Ok(Sent::default());
                }
                let count = range.end - range.start;
                let ts = if untimed { 0 } else { now_us() };
                let messages = range
                    .map(|i| {
                        let mut body = Vec::with_capacity(size + 32);
                        payload::build(i / users, ts, size, &mut body);
                        (channels.of(i % users), body)
                    })
                    .collect();
                let replies = cluster.send(mode, messages).await?;
                Ok(Sent {
                    messages: count,
                    to_nobody: mode.to_nobody(&replies)?,
                })
            }
        }
    }

    /// [`publish_each`] on either kind of Redis.
    pub async fn publish_each(
        &mut self,
        channels: &Channels,
        messages: &[(u64, u64)],
        size: usize,
    ) -> anyhow::Result<Vec<u64>> {
        match self {
            Conn::Single(conn) => publish_each(conn, channels, messages, size).await,
            Conn::Cluster(cluster) => {
                let ts = now_us();
                let batch = messages
                    .iter()
                    .map(|&(user, seq)| {
                        let mut body = Vec::with_capacity(size + 32);
                        payload::build(seq, ts, size, &mut body);
                        (channels.of(user), body)
                    })
                    .collect();
                let replies = cluster.send(Mode::Plain, batch).await?;
                Ok(messages
                    .iter()
                    .zip(replies)
                    .filter(|(_, r)| matches!(r, Value::Int(0)))
                    .map(|(&(user, _), _)| user)
                    .collect())
            }
        }
    }

    /// [`kill_subscribers`] on the one Redis, or on every primary of the cluster; answers how
    /// many connections were killed in all.
    pub async fn kill_subscribers(&mut self) -> anyhow::Result<u64> {
        match self {
            Conn::Single(conn) => kill_subscribers(conn).await,
            Conn::Cluster(cluster) => {
                let mut killed = 0;
                for conn in &cluster.nodes {
                    killed += kill_subscribers(&mut conn.clone()).await?;
                }
                Ok(killed)
            }
        }
    }

    /// The connection to the one Redis, `None` on a cluster (for what is measured on a single
    /// Redis only: `INFO` accounting, history memory).
    pub fn single(&mut self) -> Option<&mut MultiplexedConnection> {
        match self {
            Conn::Single(conn) => Some(conn),
            Conn::Cluster(_) => None,
        }
    }
}
