//! Publishing through Redis: one multiplexed connection, commands sent in pipelines, messages
//! numbered round robin over the users so that every worker can tell, from the total alone,
//! what each of its sockets should have received. Plain `PUBLISH ws:<user>` (at-most-once), or
//! durable: `FCALL ws_publish 1 ws:<user> <payload>`, the Redis Function the server loads at
//! start-up, which appends to the user's history and publishes on its durable channel in one
//! atomic step and answers the message's position.

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
