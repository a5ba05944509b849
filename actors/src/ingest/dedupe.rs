//! Event-id deduplication and the publish itself: exactly-once towards users on top of
//! at-least-once from Kafka.
//!
//! With the Redis broker, "publish unless seen" is one atomic step in the broker's Redis, so
//! neither a crash nor a lost reply between marking and publishing can make a duplicate or lose
//! an event: a retry (the same consumer after an error, or another replica after a crash or
//! rebalance) finds the mark exactly when the notification went out. Every replica shares the
//! marks. With history on (`history.size > 0`) that step is the history library's
//! `ws_publish_once` ([`RedisHistory::publish_once`]): the mark (in the user's hash slot), the
//! append to the user's history and the publish on the durable channel, so v2 clients get a
//! position and can resume. With history off it is a Lua script: `SET {prefix}{event_id} d NX
//! EX window`, and only if that set the key, `PUBLISH` the notification on the plain channel.
//! On Redis Cluster a script may only touch its own hash slot, so there the mark is the user's
//! dedupe record (`UserKeys::dedupe`, in the channel's slot) and the script `SPUBLISH`es.
//!
//! With the in-process broker (one node), the marks live in a bounded in-process cache and the
//! notification goes into the in-process history (durable) or through the [`Broker`] handle
//! (history off).

use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use bytes::Bytes;
use uuid::Uuid;

use super::cache::TtlCache;
use super::{DedupeConfig, IngestError};
use crate::broker::keys::UserKeys;
use crate::broker::{channel_name, Broker, BrokerError, ConnOptions, RedisConn};
use crate::history::{History, HistoryStore, RedisHistory};
use crate::ids::UserId;

/// Timeout of one Redis command.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(3);

/// KEYS[1]: the dedupe key; ARGV: channel, payload, window in seconds. 1: published, 0: seen.
const PUBLISH_ONCE: &str = r"
if redis.call('SET', KEYS[1], 'd', 'NX', 'EX', ARGV[3]) then
  redis.call('PUBLISH', ARGV[1], ARGV[2])
  return 1
end
return 0
";

/// [`PUBLISH_ONCE`] on Redis Cluster: sharded pub/sub, and KEYS[1] in the channel's slot.
const SPUBLISH_ONCE: &str = r"
if redis.call('SET', KEYS[1], 'd', 'NX', 'EX', ARGV[3]) then
  redis.call('SPUBLISH', ARGV[1], ARGV[2])
  return 1
end
return 0
";

/// Why a notification was neither published nor found a duplicate: retry.
#[derive(Debug, thiserror::Error)]
pub(crate) enum PublishError {
    /// The broker or the history refused the publish (Redis unreachable, error reply).
    #[error("{0}")]
    Broker(#[from] BrokerError),
    /// The broker's Redis is unreachable or failed the script.
    #[error("redis: {0}")]
    Redis(#[from] redis::RedisError),
}

/// The dedupe store, and how a notification is published through it.
pub(crate) enum Dedupe {
    /// Seen ids in process; publishes into `history` when there is one (durable), else through
    /// the broker handle (plain).
    Memory {
        seen: Mutex<TtlCache<Uuid, ()>>,
        history: Option<Arc<dyn History>>,
    },
    /// History off: seen ids in the broker's Redis; publishes plainly in the same script.
    Redis {
        connection: RedisConn,
        key_prefix: String,
        channel_prefix: String,
        window_s: u64,
    },
    /// History on: seen ids in the user's slot of the broker's Redis; appends and publishes
    /// durably in the same function call.
    Durable {
        history: RedisHistory,
        window: Duration,
    },
}

impl Dedupe {
    /// The store for `config`: the history's when history is on (`history`: the server's
    /// store), else in the broker's Redis when there is one, else in process.
    pub(crate) fn new(
        config: &DedupeConfig,
        history: Option<HistoryStore>,
    ) -> Result<Self, IngestError> {
        match history {
            Some(HistoryStore::Redis(history)) => Ok(Self::Durable {
                history,
                window: config.window,
            }),
            Some(HistoryStore::Memory(store)) => Ok(Self::memory(config, Some(store as _))),
            None if config.redis.is_none() => Ok(Self::memory(config, None)),
            None => Self::plain_redis(config),
        }
    }

    fn memory(config: &DedupeConfig, history: Option<Arc<dyn History>>) -> Self {
        let seen = TtlCache::new(config.cache_size, config.window);
        Self::Memory {
            seen: Mutex::new(seen),
            history,
        }
    }

    fn plain_redis(config: &DedupeConfig) -> Result<Self, IngestError> {
        let Some(target) = &config.redis else {
            return Ok(Self::memory(config, None));
        };
        let options = ConnOptions {
            timeout: COMMAND_TIMEOUT,
            retries: 0,
        };
        let connection = target.connect(options)?;
        Ok(Self::Redis {
            connection,
            key_prefix: config.key_prefix.clone(),
            channel_prefix: config.channel_prefix.clone(),
            window_s: config.window.as_secs().max(1),
        })
    }

    /// "redis" or "memory".
    pub(crate) fn kind(&self) -> &'static str {
        match self {
            Self::Memory { .. } => "memory",
            Self::Redis { .. } | Self::Durable { .. } => "redis",
        }
    }

    /// Whether notifications are published durably (into the users' histories).
    pub(crate) fn durable(&self) -> bool {
        match self {
            Self::Memory { history, .. } => history.is_some(),
            Self::Redis { .. } => false,
            Self::Durable { .. } => true,
        }
    }

    /// Publishes `payload` to `user` unless `event_id` was published within the window.
    /// `Ok(true)`: published now; `Ok(false)`: a duplicate, not published; `Err`: neither
    /// happened (Redis unreachable): retry.
    pub(crate) async fn publish_once(
        &self,
        broker: &Broker,
        event_id: Uuid,
        user: &UserId,
        payload: &Bytes,
    ) -> Result<bool, PublishError> {
        match self {
            Self::Memory { seen, history } => {
                if seen_lock(seen).get(&event_id).is_some() {
                    return Ok(false);
                }
                publish_in_process(broker, history.as_deref(), user, payload).await?;
                seen_lock(seen).insert(event_id, ());
                Ok(true)
            }
            Self::Redis {
                connection,
                key_prefix,
                channel_prefix,
                window_s,
            } => {
                let channel = channel_name(channel_prefix, user);
                let key = if connection.is_cluster() {
                    UserKeys::of_channel(&channel).dedupe(&event_id.to_string())
                } else {
                    format!("{key_prefix}{event_id}").into_bytes()
                };
                Ok(plain_publish_once(connection, key, channel, payload, *window_s).await?)
            }
            Self::Durable { history, window } => {
                let id = event_id.to_string();
                let (_, new) = history.publish_once(user, payload, &id, *window).await?;
                Ok(new)
            }
        }
    }
}

fn seen_lock(seen: &Mutex<TtlCache<Uuid, ()>>) -> std::sync::MutexGuard<'_, TtlCache<Uuid, ()>> {
    seen.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Publishes in process: durably into `history` when there is one, else plainly.
async fn publish_in_process(
    broker: &Broker,
    history: Option<&dyn History>,
    user: &UserId,
    payload: &Bytes,
) -> Result<(), BrokerError> {
    match history {
        Some(history) => {
            history
                .publish(vec![user.clone()], payload.clone(), None)
                .await?;
        }
        None => broker.publish(vec![user.clone()], payload.clone()).await?,
    }
    Ok(())
}

/// One run of [`PUBLISH_ONCE`] (or [`SPUBLISH_ONCE`]): marks `key`, and if it was new,
/// publishes on `channel`. `Ok(true)`: published now; `Ok(false)`: the key was set already.
async fn plain_publish_once(
    connection: &RedisConn,
    key: Vec<u8>,
    channel: Vec<u8>,
    payload: &[u8],
    window_s: u64,
) -> Result<bool, redis::RedisError> {
    let script = if connection.is_cluster() {
        SPUBLISH_ONCE
    } else {
        PUBLISH_ONCE
    };
    // EVAL (not EVALSHA): Redis caches the compiled script; it is ~150 bytes.
    let published: i64 = redis::cmd("EVAL")
        .arg(script)
        .arg(1)
        .arg(key)
        .arg(channel)
        .arg(payload)
        .arg(window_s)
        .query_async(&mut connection.clone())
        .await?;
    Ok(published == 1)
}

#[cfg(test)]
mod tests {
    use actix::Arbiter;
    use futures_util::StreamExt as _;

    use redis::aio::ConnectionManager;

    use super::*;
    use crate::directory::{Directory, HubSettings};
    use crate::history::{HistoryConfig, MemoryHistory};
    use crate::metrics::RelayMetrics;

    fn directory() -> (Directory, RelayMetrics) {
        let hubs = HubSettings {
            max_sessions_per_user: 1,
            tracer: None,
        };
        let metrics = RelayMetrics::unregistered();
        let directory = Directory::start(&[Arbiter::current()], hubs, None, metrics.clone());
        (directory, metrics)
    }

    fn memory_broker() -> Broker {
        let (directory, metrics) = directory();
        Broker::memory(directory, &metrics)
    }

    fn history_config() -> HistoryConfig {
        HistoryConfig {
            size: 10,
            ttl: Duration::from_secs(60),
        }
    }

    /// `dedupe.publish_once` of `id`, its error as text.
    async fn once(dedupe: &Dedupe, broker: &Broker, id: Uuid) -> Result<bool, String> {
        let (user, payload) = (UserId::new("u-1"), Bytes::from_static(b"{\"n\":1}"));
        dedupe
            .publish_once(broker, id, &user, &payload)
            .await
            .map_err(|e| e.to_string())
    }

    fn config(redis_url: Option<String>) -> DedupeConfig {
        DedupeConfig {
            window: Duration::from_secs(60),
            redis: redis_url.map(crate::broker::RedisTarget::Single),
            key_prefix: "seen:".into(),
            channel_prefix: "ws:".into(),
            cache_size: 10,
        }
    }

    #[actix_rt::test]
    async fn the_memory_store_publishes_an_id_once() {
        let broker = memory_broker();
        let dedupe = Dedupe::new(&config(None), None).unwrap();
        let (id, user, payload) = (Uuid::new_v4(), UserId::new("u"), Bytes::from("n"));
        assert_eq!(
            dedupe
                .publish_once(&broker, id, &user, &payload)
                .await
                .map_err(|e| e.to_string()),
            Ok(true)
        );
        assert_eq!(
            dedupe
                .publish_once(&broker, id, &user, &payload)
                .await
                .map_err(|e| e.to_string()),
            Ok(false)
        );
        let other = Uuid::new_v4();
        assert_eq!(
            dedupe
                .publish_once(&broker, other, &user, &payload)
                .await
                .map_err(|e| e.to_string()),
            Ok(true)
        );
        assert_eq!(dedupe.kind(), "memory");
    }

    #[actix_rt::test]
    async fn the_memory_store_publishes_an_id_once_into_the_history() {
        let (directory, metrics) = directory();
        let store = Arc::new(MemoryHistory::new(
            history_config(),
            Box::new(directory.clone()),
        ));
        let history = Some(HistoryStore::Memory(store.clone()));
        let dedupe = Dedupe::new(&config(None), history).unwrap();
        assert_eq!((dedupe.kind(), dedupe.durable()), ("memory", true));
        let broker = Broker::memory(directory, &metrics);
        let id = Uuid::new_v4();
        assert_eq!(once(&dedupe, &broker, id).await, Ok(true));
        assert_eq!(once(&dedupe, &broker, id).await, Ok(false));
        assert_eq!(once(&dedupe, &broker, Uuid::new_v4()).await, Ok(true));
        let read = store.read(UserId::new("u-1"), 0, 10).await.unwrap();
        let offsets: Vec<u64> = read.entries.iter().map(|e| e.offset).collect();
        assert_eq!(
            (read.top, offsets),
            (2, vec![1, 2]),
            "each event once, durably"
        );
    }

    /// A `redis-server` on a free port for one test, killed on drop.
    struct Redis(std::process::Child, u16);

    impl Redis {
        async fn start() -> Self {
            let port = std::net::TcpListener::bind("127.0.0.1:0")
                .and_then(|l| l.local_addr())
                .expect("free port")
                .port();
            let child = std::process::Command::new("redis-server")
                .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
                .args(["--save", "", "--appendonly", "no"])
                .stdout(std::process::Stdio::null())
                .spawn()
                .expect("cannot spawn redis-server (apt-get install redis-server)");
            let redis = Self(child, port);
            for _ in 0..400 {
                if tokio::net::TcpStream::connect(("127.0.0.1", port))
                    .await
                    .is_ok()
                {
                    return redis;
                }
                tokio::time::sleep(Duration::from_millis(25)).await;
            }
            panic!("redis-server did not listen on port {port}");
        }
    }

    impl Drop for Redis {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }

    #[actix_rt::test]
    async fn replicas_sharing_redis_publish_an_event_exactly_once() {
        let server = Redis::start().await;
        let url = format!("redis://127.0.0.1:{}", server.1);
        let client = redis::Client::open(url.clone()).unwrap();
        let mut pubsub = client.get_async_pubsub().await.unwrap();
        pubsub.subscribe("ws:u-1").await.unwrap();
        let broker = memory_broker();
        let (a, b) = (
            Dedupe::new(&config(Some(url.clone())), None).unwrap(),
            Dedupe::new(&config(Some(url)), None).unwrap(),
        );
        assert_eq!(a.kind(), "redis");
        let (id, user) = (Uuid::new_v4(), UserId::new("u-1"));
        let payload = Bytes::from_static(b"{\"event\":\"x\"}");
        let (first, second) = futures_util::join!(
            a.publish_once(&broker, id, &user, &payload),
            b.publish_once(&broker, id, &user, &payload)
        );
        let mut outcomes = [first.unwrap(), second.unwrap()];
        outcomes.sort();
        assert_eq!(outcomes, [false, true], "exactly one replica published");
        assert_eq!(
            a.publish_once(&broker, id, &user, &payload)
                .await
                .map_err(|e| e.to_string()),
            Ok(false)
        );
        let later = Uuid::new_v4();
        assert_eq!(
            b.publish_once(&broker, later, &user, &payload)
                .await
                .map_err(|e| e.to_string()),
            Ok(true)
        );

        let mut messages = pubsub.on_message();
        for _ in 0..2 {
            let message = tokio::time::timeout(Duration::from_secs(5), messages.next())
                .await
                .expect("a message")
                .expect("stream open");
            assert_eq!(message.get_payload_bytes(), payload.as_ref());
        }
        let extra = tokio::time::timeout(Duration::from_millis(200), messages.next()).await;
        assert!(extra.is_err(), "a third message was published");

        let mut connection = client.get_multiplexed_async_connection().await.unwrap();
        let ttl: i64 = redis::cmd("TTL")
            .arg(format!("seen:{id}"))
            .query_async(&mut connection)
            .await
            .unwrap();
        assert!(
            (1..=60).contains(&ttl),
            "the window is the key's expiry: {ttl}"
        );
    }

    #[actix_rt::test]
    async fn replicas_sharing_redis_publish_an_event_durably_exactly_once() {
        let server = Redis::start().await;
        let client = redis::Client::open(format!("redis://127.0.0.1:{}", server.1)).unwrap();
        let replica = || async {
            let manager = ConnectionManager::new(client.clone()).await.unwrap();
            let history = RedisHistory::new(manager, "ws:", &history_config());
            Dedupe::new(&config(None), Some(HistoryStore::Redis(history))).unwrap()
        };
        let (a, b) = (replica().await, replica().await);
        assert_eq!((a.kind(), a.durable()), ("redis", true));
        let broker = memory_broker();
        let id = Uuid::new_v4();
        let (first, second) = futures_util::join!(once(&a, &broker, id), once(&b, &broker, id));
        let mut outcomes = [first.unwrap(), second.unwrap()];
        outcomes.sort();
        assert_eq!(outcomes, [false, true], "exactly one replica published");
        assert_eq!(once(&b, &broker, Uuid::new_v4()).await, Ok(true));

        let mut connection = client.get_multiplexed_async_connection().await.unwrap();
        let keys = UserKeys::of_user("ws:", &UserId::new("u-1"));
        let entries: i64 = redis::cmd("XLEN")
            .arg(keys.stream())
            .query_async(&mut connection)
            .await
            .unwrap();
        assert_eq!(entries, 2, "each event appended once");
        let ttl: i64 = redis::cmd("TTL")
            .arg(keys.dedupe(&id.to_string()))
            .query_async(&mut connection)
            .await
            .unwrap();
        assert!(
            (1..=60).contains(&ttl),
            "the window is the mark's expiry: {ttl}"
        );
    }
}
