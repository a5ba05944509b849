//! `[kafka]`: the Kafka ingest's settings and their rules; the routes are in `route`, the
//! conversion into the ingest's configuration in `ingest`.

#[cfg(feature = "kafka")]
mod ingest;
mod route;

#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, HashSet};

use serde::{Deserialize, Deserializer};

use self::route::topic_name;
pub use self::route::KafkaRoute;
use crate::config::de::{string_list, string_map, structured_or_json};
use crate::config::validate::{at_least, is_bind_address, milliseconds, seconds};
use crate::config::{RedisSettings, SettingsError};

/// `[kafka]`: the Kafka ingest. Platform events consumed from Kafka become notifications on
/// their user's channel; `routes` say which topics, which user and which fields. Off while
/// `brokers` is empty.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct KafkaSettings {
    /// Bootstrap servers, `host:port` each; empty = the ingest is off.
    #[serde(deserialize_with = "string_list")]
    pub brokers: Vec<String>,
    /// Consumer group (replicas share the partitions).
    pub group_id: String,
    /// Kafka client id.
    pub client_id: String,
    /// Topic that receives records that cannot become a notification; empty = none (they are
    /// still logged and counted).
    pub dead_letter_topic: String,
    /// `/readyz` answers 503 while the ingest is down or paused.
    pub required: bool,
    /// Where a group without a committed offset starts: `earliest` or `latest`.
    pub auto_offset_reset: String,
    /// How often the offsets of published events are committed, in milliseconds.
    pub commit_interval_ms: u64,
    /// Consumer group session timeout, in milliseconds.
    pub session_timeout_ms: u64,
    /// How long an event id is remembered to suppress duplicates, in seconds.
    pub dedupe_window_s: u64,
    /// Event ids remembered in process (with the in-process broker only).
    pub dedupe_cache_size: usize,
    /// Prefix of the dedupe keys in Redis when history is off (with history on, event ids are
    /// marked in their user's hash slot by `ws_publish_once`).
    pub dedupe_key_prefix: String,
    /// Redis holding the `owner_redis_key` keys; empty = `redis.url`.
    pub owner_redis_url: String,
    /// How long a looked-up owner is cached, in seconds (0 = not cached).
    pub lookup_cache_ttl_s: u64,
    /// How many looked-up owners are cached.
    pub lookup_cache_size: usize,
    /// Timeout of one owner lookup, in milliseconds.
    pub lookup_timeout_ms: u64,
    /// How long one event waits for an unreachable owner lookup before it is dead-lettered, in
    /// seconds (0 = wait as long as it takes).
    pub lookup_give_up_s: u64,
    /// Longest wait between retries while Redis or a lookup is down, in milliseconds.
    pub backoff_max_ms: u64,
    /// After a Redis outage, wait this long once it is back before publishing the backlog (so
    /// every replica has re-subscribed), in milliseconds.
    pub resume_delay_ms: u64,
    /// Extra librdkafka properties, e.g. `"security.protocol" = "sasl_plaintext"`.
    #[serde(deserialize_with = "string_map")]
    pub properties: BTreeMap<String, String>,
    /// The routes (`[[kafka.routes]]`); from the environment, a JSON array.
    #[serde(deserialize_with = "route_list")]
    pub routes: Vec<KafkaRoute>,
}

impl Default for KafkaSettings {
    fn default() -> Self {
        Self {
            brokers: Vec::new(),
            group_id: "websocket-service".into(),
            client_id: "websocket-service".into(),
            dead_letter_topic: String::new(),
            required: false,
            auto_offset_reset: "earliest".into(),
            commit_interval_ms: 1000,
            session_timeout_ms: 45_000,
            dedupe_window_s: 86_400,
            dedupe_cache_size: 100_000,
            dedupe_key_prefix: "ws:ingest:seen:".into(),
            owner_redis_url: String::new(),
            lookup_cache_ttl_s: 300,
            lookup_cache_size: 10_000,
            lookup_timeout_ms: 2000,
            lookup_give_up_s: 60,
            backoff_max_ms: 5000,
            resume_delay_ms: 5000,
            properties: BTreeMap::new(),
            routes: Vec::new(),
        }
    }
}

/// librdkafka properties the ingest sets itself (its delivery guarantee depends on them).
const MANAGED_KAFKA_PROPERTIES: [&str; 5] = [
    "bootstrap.servers",
    "group.id",
    "enable.auto.commit",
    "enable.auto.offset.store",
    "enable.partition.eof",
];

impl KafkaSettings {
    /// True when the ingest runs.
    pub fn enabled(&self) -> bool {
        !self.brokers.is_empty()
    }

    /// Checks every `[kafka]` key while the ingest is on (nothing while it is off), in the order
    /// of `settings.toml`.
    pub(in crate::config) fn validate(&self, redis: &RedisSettings) -> Result<(), SettingsError> {
        if !self.enabled() {
            return Ok(());
        }
        if !cfg!(feature = "kafka") {
            return Err(SettingsError::invalid(
                "kafka.brokers",
                "this build has no Kafka support (cargo feature `kafka`); leave it empty",
            ));
        }
        self.validate_client()?;
        self.validate_timing()?;
        self.validate_owner_redis(redis)?;
        self.validate_properties()?;
        self.validate_routes(redis)
    }

    /// Brokers, names, the dead-letter topic and where a new group starts.
    fn validate_client(&self) -> Result<(), SettingsError> {
        if let Some(broker) = self.brokers.iter().find(|b| !is_bind_address(b)) {
            let reason = format!("expected host:port, got {broker:?}");
            return Err(SettingsError::invalid("kafka.brokers", reason));
        }
        for (key, value) in [
            ("kafka.group_id", &self.group_id),
            ("kafka.client_id", &self.client_id),
            ("kafka.dedupe_key_prefix", &self.dedupe_key_prefix),
        ] {
            if value.trim().is_empty() {
                return Err(SettingsError::invalid(key, "must not be empty"));
            }
        }
        if !self.dead_letter_topic.is_empty() {
            topic_name("kafka.dead_letter_topic", &self.dead_letter_topic)?;
        }
        if !matches!(self.auto_offset_reset.as_str(), "earliest" | "latest") {
            let reason = format!(
                "expected \"earliest\" or \"latest\", got {:?}",
                self.auto_offset_reset
            );
            return Err(SettingsError::invalid("kafka.auto_offset_reset", reason));
        }
        Ok(())
    }

    /// Intervals, timeouts, windows and cache sizes (a 0 turns some of them off).
    fn validate_timing(&self) -> Result<(), SettingsError> {
        milliseconds("kafka.commit_interval_ms", self.commit_interval_ms, 1)?;
        milliseconds("kafka.session_timeout_ms", self.session_timeout_ms, 1000)?;
        seconds("kafka.dedupe_window_s", self.dedupe_window_s)?;
        at_least("kafka.dedupe_cache_size", self.dedupe_cache_size, 1)?;
        at_least("kafka.lookup_cache_size", self.lookup_cache_size, 1)?;
        if self.lookup_cache_ttl_s > 0 {
            seconds("kafka.lookup_cache_ttl_s", self.lookup_cache_ttl_s)?;
        }
        if self.lookup_give_up_s > 0 {
            seconds("kafka.lookup_give_up_s", self.lookup_give_up_s)?;
        }
        milliseconds("kafka.lookup_timeout_ms", self.lookup_timeout_ms, 1)?;
        milliseconds("kafka.backoff_max_ms", self.backoff_max_ms, 1)?;
        if self.resume_delay_ms > 0 {
            milliseconds("kafka.resume_delay_ms", self.resume_delay_ms, 1)?;
        }
        Ok(())
    }

    /// `kafka.owner_redis_url` follows the rules of `redis.url`.
    fn validate_owner_redis(&self, redis: &RedisSettings) -> Result<(), SettingsError> {
        let owner_redis = RedisSettings {
            url: self.owner_redis_url.clone(),
            channel_prefix: redis.channel_prefix.clone(),
            cluster_nodes: Vec::new(),
        };
        owner_redis.validate().map_err(|_| {
            SettingsError::invalid(
                "kafka.owner_redis_url",
                "expected redis://host[:port][/db] or rediss://…, or empty for redis.url",
            )
        })
    }

    /// Extra librdkafka properties may not replace the ones the ingest sets.
    fn validate_properties(&self) -> Result<(), SettingsError> {
        if let Some(key) = self
            .properties
            .keys()
            .find(|k| k.trim().is_empty() || MANAGED_KAFKA_PROPERTIES.contains(&k.as_str()))
        {
            let reason = format!("{key:?} is set by the ingest itself and cannot be overridden");
            return Err(SettingsError::invalid("kafka.properties", reason));
        }
        Ok(())
    }

    /// At least one route, each valid, and one route at most per topic and event type.
    fn validate_routes(&self, redis: &RedisSettings) -> Result<(), SettingsError> {
        if self.routes.is_empty() {
            return Err(SettingsError::missing(
                "kafka.routes",
                "add at least one [[kafka.routes]] when kafka.brokers is set",
            ));
        }
        let has_owner_redis = !self.owner_redis_url.is_empty() || !redis.url.is_empty();
        let mut seen = HashSet::new();
        for (i, route) in self.routes.iter().enumerate() {
            route.validate(i, has_owner_redis)?;
            if !seen.insert((&route.topic, &route.event_type)) {
                let reason = format!(
                    "a second route for topic {:?} and event type {:?}",
                    route.topic, route.event_type
                );
                return Err(SettingsError::invalid(
                    &format!("kafka.routes[{i}].event_type"),
                    reason,
                ));
            }
        }
        Ok(())
    }
}

/// Routes given as an array of tables (TOML) or as a JSON array string (environment).
fn route_list<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Vec<KafkaRoute>, D::Error> {
    structured_or_json(
        deserializer,
        "an array of route tables or a JSON array string",
    )
}
