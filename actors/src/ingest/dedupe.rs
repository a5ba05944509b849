//! Event-id deduplication and the publish itself: exactly-once towards users on top of
//! at-least-once from Kafka.
//!
//! With the Redis broker, "publish unless seen" is one Lua script on the broker's Redis:
//! `SET {prefix}{event_id} d NX EX window`, and only if that set the key, `PUBLISH` the
//! notification on the user's channel. Marking and publishing happen together or not at all, so
//! neither a crash nor a lost reply between the two can make a duplicate or lose an event: a
//! retry (the same consumer after an error, or another replica after a crash or rebalance) finds
//! the mark exactly when the notification went out. Every replica shares the marks.
//!
//! With the in-process broker (one node), the marks live in a bounded in-process cache and the
//! notification goes through the [`Broker`] handle.

use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use bytes::Bytes;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use uuid::Uuid;

use super::cache::TtlCache;
use super::{DedupeConfig, IngestError};
use crate::broker::{channel_name, Broker, BrokerError};
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

/// Why a notification was neither published nor found a duplicate: retry.
#[derive(Debug, thiserror::Error)]
pub(crate) enum PublishError {
    /// The in-process broker refused the publish.
    #[error("{0}")]
    Broker(#[from] BrokerError),
    /// The broker's Redis is unreachable or failed the script.
    #[error("redis: {0}")]
    Redis(#[from] redis::RedisError),
}

/// The dedupe store, and how a notification is published through it.
pub(crate) enum Dedupe {
    /// Seen ids in process; publishes through the broker handle.
    Memory(Mutex<TtlCache<Uuid, ()>>),
    /// Seen ids in the broker's Redis; publishes in the same script.
    Redis {
        connection: ConnectionManager,
        key_prefix: String,
        channel_prefix: String,
        window_s: u64,
    },
}

impl Dedupe {
    pub(crate) fn new(config: &DedupeConfig) -> Result<Self, IngestError> {
        let Some(url) = &config.redis_url else {
            return Ok(Self::Memory(Mutex::new(TtlCache::new(
                config.cache_size,
                config.window,
            ))));
        };
        let client = redis::Client::open(url.as_str())?;
        let manager = ConnectionManagerConfig::new()
            .set_number_of_retries(0)
            .set_connection_timeout(Some(COMMAND_TIMEOUT))
            .set_response_timeout(Some(COMMAND_TIMEOUT));
        let connection = ConnectionManager::new_lazy_with_config(client, manager)?;
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
            Self::Memory(_) => "memory",
            Self::Redis { .. } => "redis",
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
            Self::Memory(seen) => {
                if seen
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .get(&event_id)
                    .is_some()
                {
                    return Ok(false);
                }
                broker.publish(vec![user.clone()], payload.clone()).await?;
                seen.lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .insert(event_id, ());
                Ok(true)
            }
            Self::Redis {
                connection,
                key_prefix,
                channel_prefix,
                window_s,
            } => {
                let channel = channel_name(channel_prefix, user);
                // EVAL (not EVALSHA): Redis caches the compiled script; it is ~150 bytes.
                let published: i64 = redis::cmd("EVAL")
                    .arg(PUBLISH_ONCE)
                    .arg(1)
                    .arg(format!("{key_prefix}{event_id}"))
                    .arg(channel)
                    .arg(payload.as_ref())
                    .arg(*window_s)
                    .query_async(&mut connection.clone())
                    .await?;
                Ok(published == 1)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use actix::Arbiter;
    use futures_util::StreamExt as _;

    use super::*;
    use crate::directory::{Directory, HubSettings};
    use crate::metrics::RelayMetrics;

    fn memory_broker() -> Broker {
        let hubs = HubSettings {
            max_sessions_per_user: 1,
            tracer: None,
        };
        let metrics = RelayMetrics::unregistered();
        let directory = Directory::start(&[Arbiter::current()], hubs, None, metrics.clone());
        Broker::memory(directory, &metrics)
    }

    fn config(redis_url: Option<String>) -> DedupeConfig {
        DedupeConfig {
            window: Duration::from_secs(60),
            redis_url,
            key_prefix: "seen:".into(),
            channel_prefix: "ws:".into(),
            cache_size: 10,
        }
    }

    #[actix_rt::test]
    async fn the_memory_store_publishes_an_id_once() {
        let broker = memory_broker();
        let dedupe = Dedupe::new(&config(None)).unwrap();
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
            Dedupe::new(&config(Some(url.clone()))).unwrap(),
            Dedupe::new(&config(Some(url))).unwrap(),
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
}
