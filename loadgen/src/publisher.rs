//! Publishing through Redis: one multiplexed connection, `PUBLISH` commands sent in pipelines,
//! messages numbered round robin over the users so that every worker can tell, from the total
//! alone, what each of its sockets should have received. With `--redis-cluster`, [`Conn`]
//! publishes with `SPUBLISH` instead, one pipeline per primary (each command names one channel,
//! so a pipeline may mix slots as long as its node serves them all).

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

/// What one pipeline did.
#[derive(Debug, Default, Clone, Copy)]
pub struct Sent {
    /// Messages published.
    pub messages: u64,
    /// Of those, how many reached no subscriber (PUBLISH answered 0).
    pub to_nobody: u64,
}

/// Publishes messages `first..first + count` of the round-robin sequence over `users` users,
/// each payload `size` bytes stamped with the time of sending.
pub async fn publish_range(
    conn: &mut MultiplexedConnection,
    channels: &Channels,
    users: u64,
    first: u64,
    count: u64,
    size: usize,
) -> anyhow::Result<Sent> {
    if count == 0 || users == 0 {
        return Ok(Sent::default());
    }
    let mut pipe = redis::pipe();
    let mut body = Vec::with_capacity(size + 32);
    let ts = now_us();
    for i in first..first + count {
        payload::build(i / users, ts, size, &mut body);
        pipe.cmd("PUBLISH")
            .arg(channels.of(i % users))
            .arg(&body[..]);
    }
    let replies: Vec<i64> = pipe
        .query_async(conn)
        .await
        .context("redis PUBLISH pipeline")?;
    Ok(Sent {
        messages: count,
        to_nobody: replies.iter().filter(|&&r| r == 0).count() as u64,
    })
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
    /// SPUBLISHes `(channel, body)` pairs, one pipeline per primary, all at once; answers each
    /// one's receiver count in order.
    async fn spublish(&self, messages: Vec<(String, Vec<u8>)>) -> anyhow::Result<Vec<i64>> {
        let mut groups: Vec<(Vec<usize>, redis::Pipeline)> = (0..self.nodes.len())
            .map(|_| (Vec::new(), redis::pipe()))
            .collect();
        for (i, (channel, body)) in messages.iter().enumerate() {
            let node = self.owners[slot(channel.as_bytes())];
            groups[node].0.push(i);
            groups[node].1.cmd("SPUBLISH").arg(channel).arg(body);
        }
        let runs = groups
            .iter()
            .zip(&self.nodes)
            .filter(|((idx, _), _)| !idx.is_empty())
            .map(|((_, pipe), conn)| {
                let mut conn = conn.clone();
                async move {
                    pipe.query_async::<Vec<i64>>(&mut conn)
                        .await
                        .context("redis SPUBLISH pipeline")
                }
            });
        let results = try_join_all(runs).await?;
        let mut replies = vec![0i64; messages.len()];
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
        channels: &Channels,
        users: u64,
        first: u64,
        count: u64,
        size: usize,
    ) -> anyhow::Result<Sent> {
        match self {
            Conn::Single(conn) => publish_range(conn, channels, users, first, count, size).await,
            Conn::Cluster(cluster) => {
                let ts = now_us();
                let messages = (first..first + count)
                    .map(|i| {
                        let mut body = Vec::with_capacity(size + 32);
                        payload::build(i / users.max(1), ts, size, &mut body);
                        (channels.of(i % users.max(1)), body)
                    })
                    .collect();
                let replies = cluster.spublish(messages).await?;
                Ok(Sent {
                    messages: count,
                    to_nobody: replies.iter().filter(|&&r| r == 0).count() as u64,
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
                let replies = cluster.spublish(batch).await?;
                Ok(messages
                    .iter()
                    .zip(replies)
                    .filter(|(_, r)| *r == 0)
                    .map(|(&(user, _), _)| user)
                    .collect())
            }
        }
    }
}
