//! [`History`] on Redis (>= 7.0): a Redis Function library, `ws_history`
//! (`ws_history.lua`), does every step of a durable publish atomically inside Redis.
//!
//! The server templates its settings (history size, ttl in seconds, the publish command:
//! `PUBLISH`, or `SPUBLISH` on Redis Cluster) into the library text ([`library_source`]) and
//! loads it with `FUNCTION LOAD REPLACE` at first use, and again whenever Redis answers that a
//! function does not exist (Redis restarted empty, `FUNCTION FLUSH`, a new primary that never
//! had it): then the call is retried once. On Redis Cluster the library is loaded on every
//! primary (functions replicate to replicas, so a promoted replica has it). Every replica
//! sharing a Redis must run with the same `[history]` settings (the last one to load the
//! library wins).
//!
//! Backends that talk to Redis directly publish durably with one command; `<channel>` is the
//! user's plain channel (`ws:alice`), the only key declared:
//!
//! ```text
//! FCALL ws_publish 1 <channel> <payload> [idempotency_key]     -> [epoch, offset]
//! FCALL ws_publish_once 1 <channel> <payload> <dedupe_id> <window_s>
//!                                                   -> [epoch, offset, 1 new | 0 duplicate]
//! FCALL ws_read 1 <channel> <after> <max>     -> [epoch, top, offset1, payload1, ms1, ...]
//! FCALL ws_renew_epoch 1 <channel> <lost_epoch>                -> [epoch, top]
//! FCALL_RO ws_names 1 <channel> [idempotency_key]  -> [durable, stream, meta[, idempotency]]
//! ```
//!
//! `ws_publish` appends to the user's stream (entry id `<offset>-0`, fields `d` payload and `t`
//! milliseconds, trimmed to the size), moves the meta record's `top`, renews both ttls, and
//! PUBLISHes `<epoch>:<offset>:<payload>` on the user's durable channel (see
//! [`super::parse_durable`]). The names are derived from the channel inside the function
//! exactly as `UserKeys::of_channel` derives them, so they share the channel's hash slot.
//! With an idempotency key already used for that user in the last 300 s it only answers the
//! earlier position. `ws_publish_once` is the Kafka ingest's publish: it does what `ws_publish`
//! does unless `dedupe_id` (the event id) was published to that user within `window_s` seconds,
//! checking and setting the dedupe record (in the user's slot too) in the same atomic step, and
//! then answers the stored position with 0. `ws_read` and `ws_renew_epoch` create the meta record when it is missing,
//! so the epoch they answer is the one the next publish uses.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures_util::future::BoxFuture;
use redis::{Cmd, ServerError, ServerErrorKind, Value};

use super::{Epoch, History, HistoryConfig, HistoryEntry, HistoryRead, Position};
use crate::broker::{channel_name, BrokerError, RedisConn};
use crate::ids::UserId;

/// The library's name in `FUNCTION LIST`.
pub const LIBRARY_NAME: &str = "ws_history";

/// The library before its settings are filled in.
const LIBRARY_TEMPLATE: &str = include_str!("ws_history.lua");

/// The largest integer handed to Lua, whose numbers are doubles (exact up to 2^53).
const MAX_LUA_INT: u64 = (1 << 53) - 1;

/// The most characters of an unexpected reply quoted in an error.
const QUOTED_REPLY: usize = 200;

/// The library text with `config` filled in: what the server loads with `FUNCTION LOAD`.
/// `cluster`: the functions publish with `SPUBLISH` (sharded pub/sub), else `PUBLISH`.
pub fn library_source(config: &HistoryConfig, cluster: bool) -> String {
    LIBRARY_TEMPLATE
        .replace("__SIZE__", &config.size.to_string())
        .replace("__TTL__", &ttl_seconds(config.ttl).to_string())
        .replace("__PUBLISH__", if cluster { "SPUBLISH" } else { "PUBLISH" })
}

/// The ttl in whole seconds, rounded up, at least 1 (EXPIRE takes seconds).
fn ttl_seconds(ttl: Duration) -> u64 {
    let whole = ttl.as_secs() + u64::from(ttl.subsec_nanos() > 0);
    whole.max(1)
}

/// The history of every user, in Redis. Cheap to clone (a handle).
#[derive(Clone)]
pub struct RedisHistory {
    inner: Arc<Inner>,
}

struct Inner {
    connection: RedisConn,
    prefix: String,
    library: String,
    loaded: AtomicBool,
}

impl RedisHistory {
    /// A history on `connection` (e.g. the publisher's), for the channels `prefix` + user id.
    /// Loads the library at first use; on Redis Cluster its functions publish with `SPUBLISH`
    /// and it is loaded on every primary.
    pub fn new(
        connection: impl Into<RedisConn>,
        prefix: impl Into<String>,
        config: &HistoryConfig,
    ) -> Self {
        let connection = connection.into();
        let library = library_source(config, connection.is_cluster());
        Self {
            inner: Arc::new(Inner {
                connection,
                prefix: prefix.into(),
                library,
                loaded: AtomicBool::new(false),
            }),
        }
    }

    /// Loads (or replaces) the library now, e.g. at start-up so that backends can FCALL at
    /// once.
    pub async fn load_library(&self) -> Result<(), BrokerError> {
        self.inner.load().await
    }

    /// Publishes `payload` durably to `user` unless `dedupe_id` was published to that user
    /// within `window` (rounded up to whole seconds): the check, the append and the publish are
    /// one atomic step in Redis (`ws_publish_once`). Answers the position and `true` when
    /// published now, or the stored position and `false` for a duplicate.
    pub async fn publish_once(
        &self,
        user: &UserId,
        payload: &[u8],
        dedupe_id: &str,
        window: Duration,
    ) -> Result<(Position, bool), BrokerError> {
        let call = publish_once_call(self.channel(user), payload, dedupe_id, window);
        reply::position_once(self.inner.call_one(call).await?)
    }

    fn channel(&self, user: &UserId) -> Vec<u8> {
        channel_name(&self.inner.prefix, user)
    }
}

/// Whether `error` says the request could not be written at all (a connection that had already
/// died: broken pipe, not connected), so Redis never ran it and sending it again cannot
/// duplicate anything. A reset or an end of stream after the write is not: the call may have run.
/// redis-rs keeps the `io::ErrorKind` private (`as_io_error` is crate-only) but a dropped
/// connection's error names it, so the check reads its text.
fn never_sent(error: &BrokerError) -> bool {
    let BrokerError::Redis(error) = error else {
        return false;
    };
    let text = error.to_string().to_ascii_lowercase();
    error.is_connection_dropped()
        && (text.contains("broken pipe") || text.contains("not connected"))
}

impl Inner {
    /// `FUNCTION LOAD REPLACE` (on Redis Cluster redis-rs sends it to every primary and
    /// succeeds only when all of them did).
    async fn load(&self) -> Result<(), BrokerError> {
        redis::cmd("FUNCTION")
            .arg("LOAD")
            .arg("REPLACE")
            .arg(&self.library)
            .query_async::<Value>(&mut self.connection.clone())
            .await?;
        self.loaded.store(true, Ordering::Release);
        Ok(())
    }

    /// Runs `calls` in one round trip and answers their replies in order. Loads the library
    /// first if this handle never did, and again (then retries those calls once) when Redis
    /// answers that a function is missing: a call that failed so did nothing.
    async fn call_all(&self, calls: &[Cmd]) -> Result<Vec<Value>, BrokerError> {
        if !self.loaded.load(Ordering::Acquire) {
            self.load().await?;
        }
        let mut replies = match self.pipeline(calls.iter()).await {
            // The connection had died under us (Redis restarted): the calls never reached Redis,
            // so they are sent again once, on the connection the manager has made anew.
            Err(error) if never_sent(&error) => self.pipeline(calls.iter()).await?,
            other => other?,
        };
        let missing: Vec<usize> = (0..replies.len())
            .filter(|&i| is_missing_function(&replies[i]))
            .collect();
        if !missing.is_empty() {
            tracing::info!("redis lost the history functions (restarted empty?): reloading");
            self.load().await?;
            let again = self.pipeline(missing.iter().map(|&i| &calls[i])).await?;
            for (i, reply) in missing.into_iter().zip(again) {
                replies[i] = reply;
            }
        }
        replies.into_iter().map(server_error_to_err).collect()
    }

    /// One pipeline of `calls` (one per hash slot on Redis Cluster); each reply as Redis gave
    /// it, errors included.
    async fn pipeline<'a>(
        &self,
        calls: impl ExactSizeIterator<Item = &'a Cmd>,
    ) -> Result<Vec<Value>, BrokerError> {
        let calls: Vec<Cmd> = calls.cloned().collect();
        self.connection.run_each(&calls).await
    }

    async fn call_one(&self, call: Cmd) -> Result<Value, BrokerError> {
        let replies = self.call_all(std::slice::from_ref(&call)).await?;
        replies
            .into_iter()
            .next()
            .ok_or_else(|| BrokerError::UnexpectedReply("no reply".into()))
    }
}

/// Whether Redis refused a call because the function is not loaded.
fn is_missing_function(reply: &Value) -> bool {
    let Value::ServerError(error) = reply else {
        return false;
    };
    error.kind() == Some(ServerErrorKind::NoScript)
        || error
            .details()
            .is_some_and(|detail| detail.contains("Function not found"))
}

fn server_error_to_err(reply: Value) -> Result<Value, BrokerError> {
    match reply {
        Value::ServerError(error) => Err(redis_error(error)),
        reply => Ok(reply),
    }
}

fn redis_error(error: ServerError) -> BrokerError {
    BrokerError::Redis(error.into())
}

/// `FCALL ws_publish 1 <channel> <payload> [idempotency_key]`.
fn publish_call(channel: Vec<u8>, payload: &[u8], idempotency_key: Option<&str>) -> Cmd {
    let mut call = redis::cmd("FCALL");
    call.arg("ws_publish").arg(1).arg(channel).arg(payload);
    if let Some(key) = idempotency_key {
        call.arg(key);
    }
    call
}

/// `FCALL ws_publish_once 1 <channel> <payload> <dedupe_id> <window_s>`.
fn publish_once_call(channel: Vec<u8>, payload: &[u8], dedupe_id: &str, window: Duration) -> Cmd {
    let mut call = redis::cmd("FCALL");
    call.arg("ws_publish_once")
        .arg(1)
        .arg(channel)
        .arg(payload)
        .arg(dedupe_id)
        .arg(ttl_seconds(window).min(MAX_LUA_INT));
    call
}

/// `FCALL ws_read 1 <channel> <after> <max>`.
fn read_call(channel: Vec<u8>, after: u64, max: usize) -> Cmd {
    let max = u64::try_from(max).unwrap_or(MAX_LUA_INT).min(MAX_LUA_INT);
    let mut call = redis::cmd("FCALL");
    call.arg("ws_read")
        .arg(1)
        .arg(channel)
        .arg(after.min(MAX_LUA_INT))
        .arg(max);
    call
}

/// `FCALL ws_renew_epoch 1 <channel> <lost_epoch>`.
fn renew_call(channel: Vec<u8>, lost: &Epoch) -> Cmd {
    let mut call = redis::cmd("FCALL");
    call.arg("ws_renew_epoch")
        .arg(1)
        .arg(channel)
        .arg(lost.as_str());
    call
}

impl History for RedisHistory {
    fn publish(
        &self,
        users: Vec<UserId>,
        payload: Bytes,
        idempotency_key: Option<String>,
    ) -> BoxFuture<'static, Result<Vec<Position>, BrokerError>> {
        let calls: Vec<Cmd> = users
            .iter()
            .map(|user| publish_call(self.channel(user), &payload, idempotency_key.as_deref()))
            .collect();
        let inner = self.inner.clone();
        Box::pin(async move {
            let replies = inner.call_all(&calls).await?;
            replies.into_iter().map(reply::position).collect()
        })
    }

    fn read(
        &self,
        user: UserId,
        after: u64,
        max: usize,
    ) -> BoxFuture<'static, Result<HistoryRead, BrokerError>> {
        let call = read_call(self.channel(&user), after, max);
        let inner = self.inner.clone();
        Box::pin(async move { reply::read(inner.call_one(call).await?) })
    }

    fn renew_epoch(
        &self,
        user: UserId,
        lost: Epoch,
    ) -> BoxFuture<'static, Result<(Epoch, u64), BrokerError>> {
        let call = renew_call(self.channel(&user), &lost);
        let inner = self.inner.clone();
        Box::pin(async move {
            let position = reply::position(inner.call_one(call).await?)?;
            Ok((position.epoch, position.offset))
        })
    }
}

/// Reading the functions' replies; anything of another shape is an error, never a panic.
mod reply {
    use super::*;

    fn malformed(what: &str, value: &Value) -> BrokerError {
        let mut quoted = format!("{value:?}");
        if quoted.len() > QUOTED_REPLY {
            let mut end = QUOTED_REPLY;
            while !quoted.is_char_boundary(end) {
                end -= 1;
            }
            quoted.truncate(end);
            quoted.push('…');
        }
        BrokerError::UnexpectedReply(format!("{what}: {quoted}"))
    }

    fn array(value: Value, what: &str) -> Result<Vec<Value>, BrokerError> {
        match value {
            Value::Array(items) => Ok(items),
            other => Err(malformed(what, &other)),
        }
    }

    fn epoch(value: &Value) -> Result<Epoch, BrokerError> {
        let text = match value {
            Value::BulkString(bytes) => std::str::from_utf8(bytes).ok(),
            Value::SimpleString(text) => Some(text.as_str()),
            _ => None,
        };
        text.and_then(Epoch::parse)
            .ok_or_else(|| malformed("not an epoch", value))
    }

    fn number(value: &Value) -> Result<u64, BrokerError> {
        let parsed = match value {
            Value::Int(n) => u64::try_from(*n).ok(),
            Value::BulkString(bytes) => {
                std::str::from_utf8(bytes).ok().and_then(|s| s.parse().ok())
            }
            _ => None,
        };
        parsed.ok_or_else(|| malformed("not an offset", value))
    }

    fn payload(value: Value) -> Result<Bytes, BrokerError> {
        match value {
            Value::BulkString(bytes) => Ok(Bytes::from(bytes)),
            other => Err(malformed("not a payload", &other)),
        }
    }

    /// `[epoch, offset]` (also `[epoch, top]`).
    pub(super) fn position(value: Value) -> Result<Position, BrokerError> {
        let items = array(value, "not [epoch, offset]")?;
        let [epoch_value, offset_value] = items.as_slice() else {
            return Err(malformed("not [epoch, offset]", &Value::Array(items)));
        };
        Ok(Position {
            epoch: epoch(epoch_value)?,
            offset: number(offset_value)?,
        })
    }

    /// `[epoch, offset, 1|0]`: the position, and whether it was published now.
    pub(super) fn position_once(value: Value) -> Result<(Position, bool), BrokerError> {
        let items = array(value, "not [epoch, offset, new]")?;
        let [epoch_value, offset_value, new_value] = items.as_slice() else {
            return Err(malformed("not [epoch, offset, new]", &Value::Array(items)));
        };
        let new = match number(new_value) {
            Ok(1) => true,
            Ok(0) => false,
            _ => return Err(malformed("not 1 or 0", new_value)),
        };
        let position = Position {
            epoch: epoch(epoch_value)?,
            offset: number(offset_value)?,
        };
        Ok((position, new))
    }

    /// `[epoch, top, offset1, payload1, ms1, …]`.
    pub(super) fn read(value: Value) -> Result<HistoryRead, BrokerError> {
        let items = array(value, "not a history read")?;
        if items.len() < 2 || (items.len() - 2) % 3 != 0 {
            return Err(malformed("not a history read", &Value::Array(items)));
        }
        let mut items = items.into_iter();
        let head = (items.next(), items.next());
        let (Some(epoch_value), Some(top_value)) = head else {
            return Err(BrokerError::UnexpectedReply("empty history read".into()));
        };
        let mut entries = Vec::with_capacity(items.len() / 3);
        while let (Some(offset), Some(data), Some(time)) =
            (items.next(), items.next(), items.next())
        {
            entries.push(HistoryEntry {
                offset: number(&offset)?,
                payload: payload(data)?,
                time_ms: number(&time)?,
            });
        }
        Ok(HistoryRead {
            epoch: epoch(&epoch_value)?,
            top: number(&top_value)?,
            entries,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bulk(text: &str) -> Value {
        Value::BulkString(text.as_bytes().to_vec())
    }

    #[test]
    fn the_library_is_templated_with_the_settings() {
        let config = HistoryConfig {
            size: 42,
            ttl: Duration::from_millis(1500),
        };
        let source = library_source(&config, false);
        assert!(source.starts_with("#!lua name=ws_history\n"));
        assert!(source.contains("local SIZE = 42\n"));
        assert!(source.contains("local TTL = 2\n"));
        assert!(source.contains("local PUBLISH = 'PUBLISH'\n"));
        let sharded = library_source(&config, true);
        assert!(sharded.contains("local PUBLISH = 'SPUBLISH'\n"));
        assert!(!source.contains("__SIZE__") && !source.contains("__TTL__"));
        assert_eq!(ttl_seconds(Duration::ZERO), 1);
        assert_eq!(ttl_seconds(Duration::from_secs(3600)), 3600);
    }

    #[test]
    fn replies_parse_into_positions_and_reads() {
        let position = reply::position(Value::Array(vec![bulk("e1"), Value::Int(7)]));
        assert_eq!(position.expect("valid").to_string(), "e1:7");
        let read = reply::read(Value::Array(vec![
            bulk("e1"),
            Value::Int(9),
            Value::Int(8),
            bulk("x"),
            Value::Int(1000),
            Value::Int(9),
            bulk(""),
            Value::Int(1001),
        ]))
        .expect("valid");
        assert_eq!((read.epoch.as_str(), read.top), ("e1", 9));
        let offsets: Vec<u64> = read.entries.iter().map(|e| e.offset).collect();
        assert_eq!(offsets, [8, 9]);
        assert_eq!(read.entries[0].payload, Bytes::from_static(b"x"));
        assert_eq!(read.entries[1].time_ms, 1001);
    }

    #[test]
    fn publish_once_replies_say_whether_it_was_new() {
        let reply = |new| Value::Array(vec![bulk("e1"), Value::Int(7), Value::Int(new)]);
        let (position, new) = reply::position_once(reply(1)).expect("valid");
        assert_eq!((position.to_string(), new), ("e1:7".to_owned(), true));
        let (_, new) = reply::position_once(reply(0)).expect("valid");
        assert!(!new);
        for bad in [
            reply(2),
            Value::Array(vec![bulk("e1"), Value::Int(7)]),
            Value::Nil,
        ] {
            assert!(reply::position_once(bad.clone()).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn malformed_replies_are_errors() {
        let bad = [
            Value::Nil,
            Value::Array(vec![bulk("e1")]),
            Value::Array(vec![bulk("bad epoch!"), Value::Int(1)]),
            Value::Array(vec![bulk("e1"), Value::Int(-1)]),
            Value::Array(vec![bulk("e1"), Value::Int(1), Value::Int(1)]),
        ];
        for value in bad {
            assert!(reply::position(value.clone()).is_err(), "{value:?}");
            assert!(reply::read(value.clone()).is_err(), "{value:?}");
        }
        let wrong_payload = Value::Array(vec![
            bulk("e1"),
            Value::Int(1),
            Value::Int(1),
            Value::Int(5),
            Value::Int(0),
        ]);
        assert!(reply::read(wrong_payload).is_err());
    }
}
