//! `[kafka]` settings → the ingest's [`IngestConfig`] (cargo feature `kafka`).

use std::time::Duration;

use ws_actors::ingest::{DedupeConfig, IngestConfig, LookupConfig, OwnerSource, RouteConfig};

use super::{KafkaRoute, KafkaSettings};
use crate::config::RedisSettings;

impl KafkaSettings {
    /// The ingest's configuration: dedupe in the broker's Redis (shared by every replica), or in
    /// process with the in-process broker.
    pub fn ingest_config(&self, redis: &RedisSettings) -> IngestConfig {
        IngestConfig {
            brokers: self.brokers.clone(),
            group_id: self.group_id.clone(),
            client_id: self.client_id.clone(),
            dead_letter_topic: non_empty(&self.dead_letter_topic),
            auto_offset_reset: self.auto_offset_reset.clone(),
            commit_interval: Duration::from_millis(self.commit_interval_ms),
            session_timeout: Duration::from_millis(self.session_timeout_ms),
            properties: self
                .properties
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
            routes: self.routes.iter().map(KafkaRoute::route_config).collect(),
            dedupe: self.dedupe_config(redis),
            lookup: self.lookup_config(redis),
            backoff_max: Duration::from_millis(self.backoff_max_ms),
            resume_delay: Duration::from_millis(self.resume_delay_ms),
        }
    }

    /// Event ids remembered in the broker's Redis, or in process without one.
    fn dedupe_config(&self, redis: &RedisSettings) -> DedupeConfig {
        DedupeConfig {
            window: Duration::from_secs(self.dedupe_window_s),
            redis: redis.target(),
            key_prefix: self.dedupe_key_prefix.clone(),
            channel_prefix: redis.channel_prefix.clone(),
            cache_size: self.dedupe_cache_size,
        }
    }

    /// Owner lookups: a Redis only when a route reads one (`kafka.owner_redis_url`, else
    /// `redis.url`).
    fn lookup_config(&self, redis: &RedisSettings) -> LookupConfig {
        let reads_redis = self.routes.iter().any(|r| !r.owner_redis_key.is_empty());
        LookupConfig {
            redis_url: non_empty(&self.owner_redis_url)
                .or_else(|| non_empty(&redis.url))
                .filter(|_| reads_redis),
            cache_ttl: Duration::from_secs(self.lookup_cache_ttl_s),
            cache_size: self.lookup_cache_size,
            timeout: Duration::from_millis(self.lookup_timeout_ms),
            give_up_after: (self.lookup_give_up_s > 0)
                .then(|| Duration::from_secs(self.lookup_give_up_s)),
        }
    }
}

impl KafkaRoute {
    /// The ingest's form of this route (validated: exactly one owner source is set).
    fn route_config(&self) -> RouteConfig {
        RouteConfig {
            topic: self.topic.clone(),
            event_type: non_empty(&self.event_type),
            event: self.event.clone(),
            fields: self.fields.clone(),
            owner: self.owner_source(),
        }
    }

    /// The first owner source that is set.
    fn owner_source(&self) -> OwnerSource {
        if !self.user_pointer.is_empty() {
            OwnerSource::Pointer(self.user_pointer.clone())
        } else if !self.owner_redis_key.is_empty() {
            OwnerSource::RedisKey(self.owner_redis_key.clone())
        } else {
            OwnerSource::HttpUrl(self.owner_http_url.clone())
        }
    }
}

/// `None` for an empty string.
fn non_empty(s: &str) -> Option<String> {
    Some(s.to_owned()).filter(|s| !s.is_empty())
}
