//! Publishing through Redis: one multiplexed connection, `PUBLISH` commands sent in pipelines,
//! messages numbered round robin over the users so that every worker can tell, from the total
//! alone, what each of its sockets should have received.

use std::time::Duration;

use anyhow::Context as _;
use redis::aio::MultiplexedConnection;
use redis::AsyncConnectionConfig;

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
