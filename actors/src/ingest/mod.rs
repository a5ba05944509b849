//! The Kafka ingest (cargo feature `kafka`): platform events consumed from Kafka become
//! notifications on their user's channel, published through the server's [`Broker`] so that
//! every replica's sockets get them.
//!
//! # What happens to one record
//! 1. The value is parsed as the platform's JSON envelope ([`envelope`]): `event_id` (UUID),
//!    `event_type`, `event_timestamp`, `source_service`, `correlation_id`, `data`, optional
//!    `metadata` (a W3C `traceparent` there continues the trace in the `kafka.ingest` span).
//! 2. The record's topic and `event_type` select a [`RouteConfig`]; the route says how to find
//!    the user ([`OwnerSource`]: a JSON pointer into the envelope, or an owner lookup by a key
//!    built from `data`, in Redis or over HTTP, cached in a bounded TTL cache) and which `data`
//!    fields the notification carries.
//! 3. The notification `{"event","event_id","correlation_id","timestamp","data"}` is published
//!    to the user unless its event id was published within the dedupe window. With history on
//!    (`history.size > 0`) it is published durably: appended to the user's history and given a
//!    position, so v2 clients can resume. With the Redis broker, marking the id and publishing
//!    are one atomic step on the broker's Redis (with history: the library's `ws_publish_once`,
//!    the mark in the user's hash slot; without: `SET NX EX` then `PUBLISH` on the user's plain
//!    channel, in one Lua script), so a crash or a retry can neither double nor lose it; with the
//!    in-process broker, the ids are in a bounded in-process cache and the notification goes into
//!    the in-process history (or through the [`Broker`](crate::Broker) handle without one).
//! 4. Only then is the record's offset stored for commit (at-least-once in, exactly-once out).
//!
//! A record that cannot become a notification (malformed envelope, unknown event type, no user,
//! owner not found, failed lookup) never blocks its partition: it is logged with its correlation
//! id, counted by reason, copied raw to the dead-letter topic when one is set, and committed.
//! An outage of Redis (dedupe, publish) or of the owner lookup pauses consumption instead: the
//! record is retried with capped, jittered backoff and nothing is dropped; the ingest's health
//! (for `/readyz`) is down meanwhile.
//!
//! # Layout
//! - `consumer`: the ingest actor and its consume loop; [`Ingest`], the server's handle.
//! - `kafka`: the Kafka clients, their callbacks, and the I/O the pipeline acts through.
//! - `pipeline`: the decisions for one record (behind a small I/O trait, unit-tested).
//! - `status`: the ingest's health for `/readyz`.
//! - `route`, [`envelope`], `lookup`, `dedupe`, `cache`, `backoff`, `metrics`: the pieces.
//!
//! Kafka types stay inside this module (inside `consumer` and `kafka`).

mod cache;
mod consumer;
mod dedupe;
pub mod envelope;
mod kafka;
mod lookup;
mod metrics;
mod pipeline;
mod route;
mod status;

use std::sync::Arc;
use std::time::Duration;

pub use self::consumer::Ingest;
pub use self::metrics::IngestMetrics;
pub use self::route::{parse_template, OwnerSource, Part, RouteConfig, RouteError, TemplateError};

/// Everything the ingest needs to run; built by the server from its `[kafka]` settings.
#[derive(Clone, Debug)]
pub struct IngestConfig {
    /// Kafka bootstrap servers, `host:port` each.
    pub brokers: Vec<String>,
    /// Consumer group: replicas share the partitions of the routed topics.
    pub group_id: String,
    /// Kafka client id (logs and broker-side quotas).
    pub client_id: String,
    /// Where records that cannot become notifications are copied; `None`: nowhere (still logged
    /// and counted).
    pub dead_letter_topic: Option<String>,
    /// `earliest` or `latest`: where a group without a committed offset starts.
    pub auto_offset_reset: String,
    /// How often stored offsets are committed.
    pub commit_interval: Duration,
    /// Group session timeout: how long a crashed replica keeps its partitions.
    pub session_timeout: Duration,
    /// Extra librdkafka properties, applied last (e.g. `security.protocol`).
    pub properties: Vec<(String, String)>,
    /// The routes: which topics are consumed and what each event becomes.
    pub routes: Vec<RouteConfig>,
    /// Event-id deduplication.
    pub dedupe: DedupeConfig,
    /// Owner lookups.
    pub lookup: LookupConfig,
    /// Longest wait between retries while Redis or the owner lookup is down.
    pub backoff_max: Duration,
    /// After a broker outage, how long to wait once the broker is back before publishing again,
    /// so that every replica's subscriber has re-subscribed.
    pub resume_delay: Duration,
}

/// Where seen event ids are remembered.
#[derive(Clone, Debug)]
pub struct DedupeConfig {
    /// How long an event id is remembered.
    pub window: Duration,
    /// The server's broker Redis (shared by every replica; standalone or cluster); `None`: an
    /// in-process cache (a single node with the in-process broker).
    pub redis: Option<crate::broker::RedisTarget>,
    /// Prefix of the Redis keys (`{prefix}{event_id}`) when history is off; with history the
    /// marks are the users' dedupe records (`UserKeys::dedupe`).
    pub key_prefix: String,
    /// The broker's channel prefix: with Redis, a notification for user `u` is published on
    /// `{channel_prefix}{u}` by the same script that marks the event id.
    pub channel_prefix: String,
    /// Capacity of the in-process cache.
    pub cache_size: usize,
}

/// Owner lookups ([`OwnerSource::RedisKey`], [`OwnerSource::HttpUrl`]).
#[derive(Clone, Debug)]
pub struct LookupConfig {
    /// Redis holding the owner keys; `None` when no route reads Redis.
    pub redis_url: Option<String>,
    /// How long a found owner is cached.
    pub cache_ttl: Duration,
    /// How many owners are cached.
    pub cache_size: usize,
    /// Timeout of one lookup request.
    pub timeout: Duration,
    /// How long one event may wait for an unreachable lookup before it is dead-lettered
    /// (`lookup_unavailable`); `None`: wait as long as it takes.
    pub give_up_after: Option<Duration>,
}

/// Makes `kafka.ingest` spans children of the envelope's `traceparent`. The server installs one
/// (OpenTelemetry) only when trace export is on; without it no span is created.
pub trait TraceParent: Send + Sync {
    /// Sets the remote parent named by `traceparent` (W3C format) on `span`.
    fn set_parent(&self, span: &tracing::Span, traceparent: &str);
}

/// The optional tracing hook, shared.
pub type TraceHook = Option<Arc<dyn TraceParent>>;

/// Why the ingest could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum IngestError {
    /// A route the ingest cannot use (names the setting).
    #[error(transparent)]
    Routes(#[from] RouteError),
    /// librdkafka refused the consumer configuration.
    #[error("kafka client: {0}")]
    Kafka(#[source] rdkafka::error::KafkaError),
    /// librdkafka refused the subscription.
    #[error("kafka client: subscribe to {topics:?}: {source}")]
    Subscribe {
        /// The routed topics.
        topics: Vec<String>,
        /// Why.
        #[source]
        source: rdkafka::error::KafkaError,
    },
    /// librdkafka refused the dead-letter producer's configuration.
    #[error("kafka client: dead-letter producer: {0}")]
    DeadLetterProducer(#[source] rdkafka::error::KafkaError),
    /// A Redis URL that does not parse.
    #[error("redis: {0}")]
    Redis(#[from] redis::RedisError),
    /// The broker's Redis (standalone or cluster) cannot be set up.
    #[error("redis: {0}")]
    Broker(#[from] crate::broker::BrokerError),
    /// The owner lookup's HTTP client cannot be built.
    #[error("owner lookup HTTP client: {0}")]
    HttpClient(#[source] reqwest::Error),
}
