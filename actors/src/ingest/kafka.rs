//! The Kafka side of the ingest: the consumer's and the dead-letter producer's client
//! configuration, librdkafka's callbacks (logs, statistics, errors, rebalances, commits), and
//! [`KafkaIo`], through which the [`Pipeline`](super::pipeline::Pipeline) acts on Kafka, the
//! owner lookup, the dedupe store and the broker. Every rdkafka type of the crate is in this
//! file and in `consumer.rs`.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use rdkafka::config::{ClientConfig, RDKafkaLogLevel};
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext, Rebalance, StreamConsumer};
use rdkafka::error::{KafkaError, KafkaResult, RDKafkaErrorCode};
use rdkafka::message::{BorrowedMessage, Header, Headers, Message, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::statistics::Statistics;
use rdkafka::topic_partition_list::TopicPartitionList;
use rdkafka::util::Timeout;
use rdkafka::ClientContext;
use uuid::Uuid;

use super::dedupe::{Dedupe, PublishError};
use super::lookup::{LookupError, OwnerLookup};
use super::pipeline::{IngestIo, Record, Rejection};
use super::route::LookupKey;
use super::status::Status;
use super::{IngestConfig, IngestError};
use crate::broker::{Broker, BrokerHealth};
use crate::ids::UserId;

/// How often librdkafka reports statistics (consumer lag, broker connection states).
const STATS_INTERVAL: Duration = Duration::from_secs(5);
/// How long the dead-letter producer tries to deliver one record before reporting failure.
const DEAD_LETTER_TIMEOUT: Duration = Duration::from_secs(10);
/// Longest error text copied into a dead-letter header.
const MAX_ERROR_HEADER: usize = 1000;

/// The consumer of the ingest, with its callbacks.
pub(crate) type IngestConsumer = StreamConsumer<IngestContext>;

/// Everything the pipeline acts on.
pub(crate) struct KafkaIo {
    pub(crate) consumer: IngestConsumer,
    pub(crate) dead_letters: Option<DeadLetters>,
    pub(crate) lookup: OwnerLookup,
    pub(crate) dedupe: Dedupe,
    pub(crate) broker: Broker,
}

impl IngestIo for KafkaIo {
    type SendError = KafkaError;

    async fn owner(&self, key: &LookupKey) -> Result<Option<UserId>, LookupError> {
        self.lookup.owner(key).await
    }

    fn broker_health(&self) -> BrokerHealth {
        self.broker.health()
    }

    async fn publish_once(
        &self,
        event_id: Uuid,
        user: &UserId,
        payload: &Bytes,
    ) -> Result<bool, PublishError> {
        self.dedupe
            .publish_once(&self.broker, event_id, user, payload)
            .await
    }

    fn dead_letter_topic(&self) -> Option<&str> {
        self.dead_letters.as_ref().map(|d| d.topic.as_str())
    }

    async fn dead_letter(
        &self,
        record: &Record<'_>,
        rejection: &Rejection,
    ) -> Result<(), KafkaError> {
        match &self.dead_letters {
            Some(dead_letters) => dead_letters.send(record, rejection).await,
            None => Ok(()),
        }
    }

    fn store_offset(&self, record: &Record<'_>) {
        // `rd_kafka_offset_store` (as `store_offset_from_message`): librdkafka commits
        // `offset + 1`, the next record to read.
        let stored = self
            .consumer
            .store_offset(record.topic, record.partition, record.offset);
        if let Err(error) = stored {
            // The partition was revoked meanwhile: its next owner redelivers the record,
            // and the dedupe store suppresses it if it was published.
            tracing::warn!(%error, topic = record.topic, partition = record.partition,
                offset = record.offset, "kafka offset not stored");
        }
    }

    async fn sleep(&self, delay: Duration) {
        tokio::time::sleep(delay).await;
    }
}

/// The pipeline's view of a consumed message.
pub(crate) fn record_of<'a>(message: &'a BorrowedMessage<'a>) -> Record<'a> {
    let headers = message
        .headers()
        .map(|headers| headers.iter().map(|h| (h.key, h.value)).collect())
        .unwrap_or_default();
    Record {
        topic: message.topic(),
        partition: message.partition(),
        offset: message.offset(),
        key: message.key(),
        value: message.payload(),
        headers,
    }
}

/// librdkafka callbacks: logs, statistics (lag, connection state), errors, rebalances.
pub(crate) struct IngestContext {
    pub(crate) status: Arc<Status>,
    /// The routed topics, whose lag is reported.
    pub(crate) topics: Vec<String>,
}

impl ClientContext for IngestContext {
    fn log(&self, level: RDKafkaLogLevel, facility: &str, message: &str) {
        match level {
            RDKafkaLogLevel::Emerg
            | RDKafkaLogLevel::Alert
            | RDKafkaLogLevel::Critical
            | RDKafkaLogLevel::Error => tracing::error!(facility, "librdkafka: {message}"),
            RDKafkaLogLevel::Warning => tracing::warn!(facility, "librdkafka: {message}"),
            RDKafkaLogLevel::Notice | RDKafkaLogLevel::Info => {
                tracing::info!(facility, "librdkafka: {message}")
            }
            RDKafkaLogLevel::Debug => tracing::debug!(facility, "librdkafka: {message}"),
        }
    }

    fn stats(&self, statistics: Statistics) {
        for topic in &self.topics {
            let lag: i64 = statistics
                .topics
                .get(topic)
                .map(|t| {
                    t.partitions
                        .values()
                        .filter(|p| p.partition >= 0 && p.consumer_lag > 0)
                        .map(|p| p.consumer_lag)
                        .sum()
                })
                .unwrap_or(0);
            self.status
                .metrics()
                .consumer_lag
                .with_label_values(&[topic])
                .set(lag);
        }
        let connected = statistics.brokers.values().any(|b| b.state == "UP");
        if connected {
            self.status.kafka(None);
        } else {
            self.status
                .kafka(Some("kafka unreachable: no broker connection is up".into()));
        }
    }

    fn error(&self, error: KafkaError, reason: &str) {
        tracing::warn!(%error, reason, "kafka client error");
        if error.rdkafka_error_code() == Some(RDKafkaErrorCode::AllBrokersDown) {
            self.status
                .kafka(Some(format!("kafka unreachable: {reason}")));
        }
    }
}

impl ConsumerContext for IngestContext {
    fn post_rebalance(&self, _: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        match rebalance {
            Rebalance::Assign(partitions) => {
                tracing::info!(partitions = %describe(partitions), "kafka partitions assigned");
                self.status.kafka(None);
            }
            Rebalance::Revoke(partitions) => {
                tracing::info!(partitions = %describe(partitions), "kafka partitions revoked");
            }
            Rebalance::Error(error) => tracing::warn!(%error, "kafka rebalance failed"),
        }
    }

    fn commit_callback(&self, result: KafkaResult<()>, offsets: &TopicPartitionList) {
        match result {
            Ok(()) => tracing::debug!(offsets = %describe(offsets), "kafka offsets committed"),
            Err(KafkaError::ConsumerCommit(RDKafkaErrorCode::NoOffset)) => {}
            Err(error) => tracing::warn!(%error, "kafka offset commit failed"),
        }
    }
}

/// `topic/partition@offset, …` for logs.
fn describe(partitions: &TopicPartitionList) -> String {
    partitions
        .elements()
        .iter()
        .map(|p| match p.offset().to_raw() {
            Some(offset) if offset >= 0 => format!("{}/{}@{offset}", p.topic(), p.partition()),
            _ => format!("{}/{}", p.topic(), p.partition()),
        })
        .collect::<Vec<_>>()
        .join(", ")
}

fn millis(duration: Duration) -> String {
    duration.as_millis().max(1).to_string()
}

pub(crate) fn consumer_config(config: &IngestConfig) -> ClientConfig {
    let mut client = ClientConfig::new();
    client
        .set("bootstrap.servers", config.brokers.join(","))
        .set("group.id", &config.group_id)
        .set("client.id", &config.client_id)
        // At-least-once: an offset is stored only after its notification went to the broker;
        // stored offsets are committed in the background and on close.
        .set("enable.auto.commit", "true")
        .set("enable.auto.offset.store", "false")
        .set("auto.commit.interval.ms", millis(config.commit_interval))
        .set("auto.offset.reset", &config.auto_offset_reset)
        .set("session.timeout.ms", millis(config.session_timeout))
        .set(
            "heartbeat.interval.ms",
            millis((config.session_timeout / 3).min(Duration::from_secs(3))),
        )
        // While paused by an outage the consumer keeps its partitions (no replica could publish
        // either): do not let librdkafka evict it for not polling.
        .set("max.poll.interval.ms", "86400000")
        // Notifications are latency-sensitive and small.
        .set("fetch.wait.max.ms", "100")
        .set("queued.max.messages.kbytes", "16384")
        .set("enable.partition.eof", "false")
        .set("statistics.interval.ms", millis(STATS_INTERVAL))
        .set_log_level(RDKafkaLogLevel::Info);
    for (key, value) in &config.properties {
        client.set(key, value);
    }
    client
}

/// Copies rejected records, raw, to the dead-letter topic.
pub(crate) struct DeadLetters {
    producer: FutureProducer,
    topic: String,
    group_id: String,
}

impl DeadLetters {
    pub(crate) fn new(config: &IngestConfig, topic: &str) -> Result<Self, IngestError> {
        let mut client = ClientConfig::new();
        client
            .set("bootstrap.servers", config.brokers.join(","))
            .set("client.id", format!("{}-dead-letters", config.client_id))
            .set("acks", "all")
            .set("message.timeout.ms", millis(DEAD_LETTER_TIMEOUT))
            .set_log_level(RDKafkaLogLevel::Warning);
        for (key, value) in &config.properties {
            client.set(key, value);
        }
        let producer = client.create().map_err(IngestError::DeadLetterProducer)?;
        Ok(Self {
            producer,
            topic: topic.to_owned(),
            group_id: config.group_id.clone(),
        })
    }

    /// Sends a copy of `record` (key, value, headers) with `dlq.*` headers saying why.
    async fn send(&self, record: &Record<'_>, rejection: &Rejection) -> Result<(), KafkaError> {
        let mut headers = OwnedHeaders::new();
        for &(key, value) in &record.headers {
            headers = headers.insert(Header { key, value });
        }
        let error: String = rejection
            .to_string()
            .chars()
            .take(MAX_ERROR_HEADER)
            .collect();
        let partition = record.partition.to_string();
        let offset = record.offset.to_string();
        let dlq_headers: [(&str, &str); 6] = [
            ("dlq.reason", rejection.label()),
            ("dlq.error", error.as_str()),
            ("dlq.source.topic", record.topic),
            ("dlq.source.partition", partition.as_str()),
            ("dlq.source.offset", offset.as_str()),
            ("dlq.consumer.group", self.group_id.as_str()),
        ];
        for (key, value) in dlq_headers {
            headers = headers.insert(Header {
                key,
                value: Some(value),
            });
        }
        let mut copy = FutureRecord::<[u8], [u8]>::to(&self.topic).headers(headers);
        if let Some(key) = record.key {
            copy = copy.key(key);
        }
        if let Some(value) = record.value {
            copy = copy.payload(value);
        }
        self.producer
            .send(copy, Timeout::After(DEAD_LETTER_TIMEOUT))
            .await
            .map(drop)
            .map_err(|(error, _)| error)
    }
}
