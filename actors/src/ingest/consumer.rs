//! The ingest actor: one Kafka consumer (a consumer-group member) on its own arbiter, taking one
//! record at a time through parse → route → owner → publish once (dedupe) → offset store, and
//! the dead-letter producer. Every Kafka type of the crate is in this file.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant, SystemTime};

use actix::prelude::*;
use bytes::Bytes;
use rdkafka::config::{ClientConfig, RDKafkaLogLevel};
use rdkafka::consumer::{
    BaseConsumer, CommitMode, Consumer, ConsumerContext, Rebalance, StreamConsumer,
};
use rdkafka::error::{KafkaError, KafkaResult, RDKafkaErrorCode};
use rdkafka::message::{BorrowedMessage, Header, Headers, Message, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::statistics::Statistics;
use rdkafka::topic_partition_list::TopicPartitionList;
use rdkafka::util::Timeout;
use rdkafka::ClientContext;
use tokio::sync::{oneshot, watch};
use tracing::Instrument as _;

use super::backoff::Backoff;
use super::dedupe::Dedupe;
use super::envelope::{correlation_id_of, Envelope};
use super::lookup::{LookupError, OwnerLookup};
use super::route::{LookupKey, Owner, Routes};
use super::{IngestConfig, IngestError, IngestMetrics, TraceHook};
use crate::broker::{Broker, BrokerHealth};
use crate::ids::UserId;

/// How often librdkafka reports statistics (consumer lag, broker connection states).
const STATS_INTERVAL: Duration = Duration::from_secs(5);
/// How long a graceful stop may take (final commit, leaving the group).
const STOP_TIMEOUT: Duration = Duration::from_secs(10);
/// How long the dead-letter producer tries to deliver one record before reporting failure.
const DEAD_LETTER_TIMEOUT: Duration = Duration::from_secs(10);
/// Longest error text copied into a dead-letter header.
const MAX_ERROR_HEADER: usize = 1000;

/// The running ingest: its health (for `/readyz`) and a way to stop it.
pub struct Ingest {
    health: watch::Receiver<BrokerHealth>,
    addr: Addr<IngestActor>,
    arbiter: Arbiter,
}

impl Ingest {
    /// Creates the consumer (joining group `config.group_id`, subscribed to every routed topic),
    /// the dead-letter producer, the lookups and the dedupe store, and starts consuming on a new
    /// arbiter. Kafka, Redis and the lookup service may be down now: the ingest waits for them.
    /// Must be called inside an actix system.
    pub fn start(
        config: IngestConfig,
        broker: Broker,
        metrics: IngestMetrics,
        trace: TraceHook,
    ) -> Result<Ingest, IngestError> {
        let routes = Routes::new(&config.routes).map_err(IngestError::Config)?;
        let topics = routes.topics();
        for topic in &topics {
            metrics.events_consumed.with_label_values(&[topic]);
            metrics.consumer_lag.with_label_values(&[topic]).set(0);
        }
        let (health_tx, health) = watch::channel(BrokerHealth::Down {
            reason: "connecting to kafka".into(),
        });
        let status = Arc::new(Status {
            health: health_tx,
            state: Mutex::new(State {
                kafka: Some("connecting to kafka".into()),
                paused: BTreeMap::new(),
            }),
            metrics: metrics.clone(),
        });
        let context = IngestContext {
            status: status.clone(),
            topics: topics.clone(),
        };
        let consumer: StreamConsumer<IngestContext> = consumer_config(&config)
            .create_with_context(context)
            .map_err(|e| IngestError::Kafka(e.to_string()))?;
        let names: Vec<&str> = topics.iter().map(String::as_str).collect();
        consumer
            .subscribe(&names)
            .map_err(|e| IngestError::Kafka(format!("subscribe to {names:?}: {e}")))?;
        let dead_letters = match &config.dead_letter_topic {
            Some(topic) => Some(DeadLetters::new(&config, topic)?),
            None => None,
        };
        let pipeline = Pipeline {
            lookup: OwnerLookup::new(&config.lookup)?,
            dedupe: Dedupe::new(&config.dedupe)?,
            consumer,
            routes,
            broker,
            dead_letters,
            metrics,
            status,
            trace,
            group_id: config.group_id.clone(),
            backoff_max: config.backoff_max,
            resume_delay: config.resume_delay,
            give_up: config.lookup.give_up_after,
        };
        tracing::info!(
            brokers = %config.brokers.join(","),
            group_id = %config.group_id,
            topics = ?topics,
            dedupe = pipeline.dedupe.kind(),
            dead_letter_topic = config.dead_letter_topic.as_deref().unwrap_or(""),
            "kafka ingest starting"
        );
        let arbiter = Arbiter::new();
        let (stop, stop_rx) = watch::channel(false);
        let (done_tx, done) = oneshot::channel();
        let addr = IngestActor::start_in_arbiter(&arbiter.handle(), move |_| IngestActor {
            run: Some((pipeline, stop_rx, done_tx)),
            stop,
            done: Some(done),
        });
        Ok(Ingest {
            health,
            addr,
            arbiter,
        })
    }

    /// The ingest's health now: up while connected to Kafka and not paused by an outage.
    pub fn health(&self) -> BrokerHealth {
        self.health.borrow().clone()
    }

    /// A receiver of health changes.
    pub fn health_receiver(&self) -> watch::Receiver<BrokerHealth> {
        self.health.clone()
    }

    /// Stops consuming, commits the offsets of what was published and leaves the group (so a
    /// replacement gets the partitions at once). Bounded by a timeout.
    pub async fn stop(self) {
        let stopped = tokio::time::timeout(STOP_TIMEOUT, self.addr.send(Stop)).await;
        if stopped.is_err() {
            tracing::warn!("kafka ingest did not stop within {STOP_TIMEOUT:?}");
        }
        self.arbiter.stop();
    }
}

/// The actor hosting the consumer loop on its arbiter.
struct IngestActor {
    run: Option<(Pipeline, watch::Receiver<bool>, oneshot::Sender<()>)>,
    stop: watch::Sender<bool>,
    done: Option<oneshot::Receiver<()>>,
}

impl Actor for IngestActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        let Some((pipeline, stop, done)) = self.run.take() else {
            return;
        };
        let run = async move {
            pipeline.run(stop).await;
            let _ = done.send(());
        };
        ctx.spawn(run.into_actor(self).map(|(), _, ctx| ctx.stop()));
    }
}

/// Stop consuming; answered once the consumer has committed and closed.
#[derive(Message)]
#[rtype(result = "()")]
struct Stop;

impl Handler<Stop> for IngestActor {
    type Result = ResponseFuture<()>;

    fn handle(&mut self, _: Stop, _: &mut Context<Self>) -> Self::Result {
        let _ = self.stop.send(true);
        let done = self.done.take();
        Box::pin(async move {
            if let Some(done) = done {
                let _ = done.await;
            }
        })
    }
}

/// The ingest's health, from Kafka's side (connection, assignment) and the pipeline's (paused by
/// an outage).
struct Status {
    health: watch::Sender<BrokerHealth>,
    state: Mutex<State>,
    metrics: IngestMetrics,
}

struct State {
    /// Why Kafka is not usable, if it is not.
    kafka: Option<String>,
    /// Dependencies that paused consumption, with why.
    paused: BTreeMap<&'static str, String>,
}

impl Status {
    fn update(&self, change: impl FnOnce(&mut State)) {
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        change(&mut state);
        let health = match (&state.kafka, state.paused.iter().next()) {
            (Some(reason), _) => BrokerHealth::Down {
                reason: reason.clone(),
            },
            (None, Some((dependency, reason))) => BrokerHealth::Down {
                reason: format!("consumption paused: {dependency} unavailable: {reason}"),
            },
            (None, None) => BrokerHealth::Up,
        };
        self.metrics.paused.set(i64::from(!state.paused.is_empty()));
        self.health.send_if_modified(|current| {
            let changed = *current != health;
            *current = health;
            changed
        });
    }

    fn kafka(&self, problem: Option<String>) {
        self.update(|state| state.kafka = problem);
    }
}

/// librdkafka callbacks: logs, statistics (lag, connection state), errors, rebalances.
struct IngestContext {
    status: Arc<Status>,
    topics: Vec<String>,
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
                .metrics
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

fn consumer_config(config: &IngestConfig) -> ClientConfig {
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
struct DeadLetters {
    producer: FutureProducer,
    topic: String,
    group_id: String,
}

impl DeadLetters {
    fn new(config: &IngestConfig, topic: &str) -> Result<Self, IngestError> {
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
        let producer = client
            .create()
            .map_err(|e| IngestError::Kafka(format!("dead-letter producer: {e}")))?;
        Ok(Self {
            producer,
            topic: topic.to_owned(),
            group_id: config.group_id.clone(),
        })
    }

    /// Sends a copy of `message` (key, value, headers) with `dlq.*` headers saying why.
    async fn send(
        &self,
        message: &BorrowedMessage<'_>,
        reason: &str,
        error: &str,
    ) -> Result<(), KafkaError> {
        let mut headers = OwnedHeaders::new();
        if let Some(original) = message.headers() {
            for header in original.iter() {
                headers = headers.insert(header);
            }
        }
        let error: String = error.chars().take(MAX_ERROR_HEADER).collect();
        let partition = message.partition().to_string();
        let offset = message.offset().to_string();
        let dlq_headers: [(&str, &str); 6] = [
            ("dlq.reason", reason),
            ("dlq.error", error.as_str()),
            ("dlq.source.topic", message.topic()),
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
        let mut record = FutureRecord::<[u8], [u8]>::to(&self.topic).headers(headers);
        if let Some(key) = message.key() {
            record = record.key(key);
        }
        if let Some(payload) = message.payload() {
            record = record.payload(payload);
        }
        self.producer
            .send(record, Timeout::After(DEAD_LETTER_TIMEOUT))
            .await
            .map(drop)
            .map_err(|(error, _)| error)
    }
}

/// Why a record did not become a notification (the `reason` label).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Reason {
    Malformed,
    UnknownEventType,
    MissingUser,
    OwnerNotFound,
    LookupFailed,
    LookupUnavailable,
}

impl Reason {
    fn label(self) -> &'static str {
        match self {
            Self::Malformed => "malformed",
            Self::UnknownEventType => "unknown_event_type",
            Self::MissingUser => "missing_user",
            Self::OwnerNotFound => "owner_not_found",
            Self::LookupFailed => "lookup_failed",
            Self::LookupUnavailable => "lookup_unavailable",
        }
    }
}

/// What became of one event.
enum Outcome {
    Published,
    Duplicate,
    Rejected(Reason, String),
}

/// Everything the loop needs; owned by the actor's one future.
struct Pipeline {
    consumer: StreamConsumer<IngestContext>,
    routes: Routes,
    lookup: OwnerLookup,
    dedupe: Dedupe,
    broker: Broker,
    dead_letters: Option<DeadLetters>,
    metrics: IngestMetrics,
    status: Arc<Status>,
    trace: TraceHook,
    group_id: String,
    backoff_max: Duration,
    resume_delay: Duration,
    give_up: Option<Duration>,
}

impl Pipeline {
    /// Consumes until `stop` turns true, then commits and closes the consumer.
    async fn run(self, mut stop: watch::Receiver<bool>) {
        loop {
            let received = tokio::select! {
                biased;
                _ = stop.changed() => break,
                received = self.consumer.recv() => received,
            };
            let message = match received {
                Ok(message) => message,
                Err(error) => {
                    let connectivity = matches!(
                        error.rdkafka_error_code(),
                        Some(
                            RDKafkaErrorCode::BrokerTransportFailure
                                | RDKafkaErrorCode::AllBrokersDown
                        )
                    );
                    if connectivity {
                        // Already reported by the client's error callback.
                        tracing::debug!(%error, "kafka consume error");
                    } else {
                        tracing::warn!(%error, "kafka consume error");
                    }
                    tokio::select! {
                        _ = stop.changed() => break,
                        () = tokio::time::sleep(Duration::from_millis(100)) => continue,
                    }
                }
            };
            tokio::select! {
                biased;
                _ = stop.changed() => break,
                () = self.handle(&message) => {}
            }
            if let Err(error) = self.consumer.store_offset_from_message(&message) {
                // The partition was revoked meanwhile: its next owner redelivers the record,
                // and the dedupe store suppresses it if it was published.
                tracing::warn!(%error, topic = message.topic(), partition = message.partition(),
                    offset = message.offset(), "kafka offset not stored");
            }
        }
        tracing::info!("kafka ingest stopping: committing offsets and leaving the group");
        match self.consumer.commit_consumer_state(CommitMode::Sync) {
            Ok(()) | Err(KafkaError::ConsumerCommit(RDKafkaErrorCode::NoOffset)) => {}
            Err(error) => tracing::warn!(%error, "final kafka offset commit failed"),
        }
        drop(self);
        tracing::info!("kafka ingest stopped");
    }

    /// Takes one record to its end: published, suppressed as a duplicate or rejected.
    async fn handle(&self, message: &BorrowedMessage<'_>) {
        let topic = message.topic();
        self.metrics
            .events_consumed
            .with_label_values(&[topic])
            .inc();
        let payload = message.payload().unwrap_or_default();
        let envelope = match Envelope::parse(payload) {
            Ok(envelope) => envelope,
            Err(why) => {
                let correlation_id = correlation_id_of(payload);
                return self
                    .reject(message, Reason::Malformed, &why, correlation_id.as_deref())
                    .await;
            }
        };
        let span = self.span(message, &envelope);
        let outcome = self
            .deliver(topic, &envelope)
            .instrument(span.clone())
            .await;
        match outcome {
            Outcome::Published => {
                span.record("outcome", "published");
                tracing::debug!(correlation_id = %envelope.correlation_id,
                    event_id = %envelope.event_id, "notification published");
            }
            Outcome::Duplicate => {
                span.record("outcome", "duplicate");
                tracing::info!(correlation_id = %envelope.correlation_id,
                    event_id = %envelope.event_id, "duplicate event suppressed");
            }
            Outcome::Rejected(reason, why) => {
                span.record("outcome", reason.label());
                self.reject(message, reason, &why, Some(&envelope.correlation_id))
                    .instrument(span)
                    .await;
            }
        }
    }

    /// The `kafka.ingest` span, child of the envelope's `traceparent`; only when tracing is on.
    fn span(&self, message: &BorrowedMessage<'_>, envelope: &Envelope) -> tracing::Span {
        let Some(trace) = &self.trace else {
            return tracing::Span::none();
        };
        let span = tracing::info_span!(
            target: "websocket",
            "kafka.ingest",
            messaging.system = "kafka",
            messaging.operation = "process",
            messaging.destination.name = message.topic(),
            messaging.kafka.partition = message.partition(),
            messaging.kafka.offset = message.offset(),
            messaging.kafka.consumer.group = %self.group_id,
            event.id = %envelope.event_id,
            event.type = %envelope.event_type,
            correlation_id = %envelope.correlation_id,
            outcome = tracing::field::Empty,
        );
        if let Some(traceparent) = &envelope.traceparent {
            trace.set_parent(&span, traceparent);
        }
        span
    }

    /// Route, owner, claim, publish.
    async fn deliver(&self, topic: &str, envelope: &Envelope) -> Outcome {
        let Some(route) = self.routes.find(topic, &envelope.event_type) else {
            let why = format!(
                "no route for event type {:?} on topic {topic}",
                envelope.event_type
            );
            return Outcome::Rejected(Reason::UnknownEventType, why);
        };
        let user = match route.owner(envelope) {
            Owner::Known(user) => user,
            Owner::Missing(why) => return Outcome::Rejected(Reason::MissingUser, why),
            Owner::Lookup(key) => match self.look_up(&key, envelope).await {
                Ok(user) => user,
                Err((reason, why)) => return Outcome::Rejected(reason, why),
            },
        };
        let payload = Bytes::from(envelope.notification(&route.event, &route.fields));
        self.publish_once(envelope, user, payload).await
    }

    /// The owner of `key`, waiting out an unavailable lookup (up to the give-up time).
    async fn look_up(
        &self,
        key: &LookupKey,
        envelope: &Envelope,
    ) -> Result<UserId, (Reason, String)> {
        let started = Instant::now();
        let mut backoff = Backoff::new(self.backoff_max);
        loop {
            match self.lookup.owner(key).await {
                Ok(owner) => {
                    self.resume("owner lookup", envelope);
                    let no_owner = || {
                        let why = match key {
                            LookupKey::Redis(name) => format!("no owner: redis key {name} not set"),
                            LookupKey::Http(url) => format!("no owner: GET {url} answered 404"),
                        };
                        (Reason::OwnerNotFound, why)
                    };
                    return owner.ok_or_else(no_owner);
                }
                Err(LookupError::Failed(why)) => {
                    self.resume("owner lookup", envelope);
                    return Err((Reason::LookupFailed, why));
                }
                Err(LookupError::Unavailable(why)) => {
                    if self.give_up.is_some_and(|limit| started.elapsed() >= limit) {
                        self.resume("owner lookup", envelope);
                        return Err((Reason::LookupUnavailable, why));
                    }
                    self.pause("owner lookup", &why, envelope, &mut backoff)
                        .await;
                }
            }
        }
    }

    /// Publishes unless the event id was published before; while Redis (or the local
    /// subscriber) is down the record waits, with backoff, instead of being dropped.
    async fn publish_once(&self, envelope: &Envelope, user: UserId, payload: Bytes) -> Outcome {
        let mut backoff = Backoff::new(self.backoff_max);
        let mut recovering = false;
        loop {
            if let BrokerHealth::Down { reason } = self.broker.health() {
                self.pause("broker", &reason, envelope, &mut backoff).await;
                recovering = true;
                continue;
            }
            if recovering {
                // Back after an outage: give every replica's subscriber time to re-subscribe,
                // or the backlog would be published to channels nobody listens to yet.
                tokio::time::sleep(self.resume_delay).await;
                recovering = false;
                continue;
            }
            let published = self
                .dedupe
                .publish_once(&self.broker, envelope.event_id, &user, &payload)
                .await;
            match published {
                Ok(true) => break,
                Ok(false) => {
                    self.resume("broker", envelope);
                    self.metrics.duplicates_suppressed.inc();
                    return Outcome::Duplicate;
                }
                Err(error) => {
                    self.pause("broker", &error, envelope, &mut backoff).await;
                    recovering = true;
                }
            }
        }
        self.resume("broker", envelope);
        self.metrics.notifications_published.inc();
        if let Ok(age) = SystemTime::now().duration_since(envelope.timestamp) {
            self.metrics.event_to_publish.observe(age.as_secs_f64());
        }
        Outcome::Published
    }

    /// Counts and logs a rejected record and copies it to the dead-letter topic (retrying while
    /// Kafka refuses it), so that it is committed and the partition moves on.
    async fn reject(
        &self,
        message: &BorrowedMessage<'_>,
        reason: Reason,
        why: &str,
        correlation_id: Option<&str>,
    ) {
        self.metrics
            .dead_lettered
            .with_label_values(&[reason.label()])
            .inc();
        let correlation_id = correlation_id.unwrap_or("-");
        tracing::warn!(
            correlation_id,
            topic = message.topic(),
            partition = message.partition(),
            offset = message.offset(),
            reason = reason.label(),
            error = why,
            dead_letter_topic = self.dead_letters.as_ref().map_or("", |d| d.topic.as_str()),
            "kafka record rejected"
        );
        let Some(dead_letters) = &self.dead_letters else {
            return;
        };
        let mut backoff = Backoff::new(self.backoff_max);
        loop {
            match dead_letters.send(message, reason.label(), why).await {
                Ok(()) => break,
                Err(error) => {
                    let note = Note(correlation_id);
                    self.pause("dead-letter topic", &error.to_string(), &note, &mut backoff)
                        .await;
                }
            }
        }
        self.resume("dead-letter topic", &Note(correlation_id));
    }

    /// Marks consumption paused by `dependency` and waits the next backoff delay.
    async fn pause(
        &self,
        dependency: &'static str,
        why: &str,
        event: &impl Correlated,
        backoff: &mut Backoff,
    ) {
        let first = backoff.attempts() == 0;
        let delay = backoff.next_delay();
        self.metrics.retries.with_label_values(&[dependency]).inc();
        let mut newly = false;
        self.status.update(|state| {
            newly = state.paused.insert(dependency, why.to_owned()).is_none();
        });
        if newly || first {
            tracing::warn!(
                correlation_id = event.correlation_id(),
                dependency,
                error = why,
                "kafka consumption paused: retrying with backoff"
            );
        } else {
            tracing::debug!(dependency, error = why, ?delay, "still unavailable");
        }
        tokio::time::sleep(delay).await;
    }

    /// Clears a pause by `dependency`, if there was one.
    fn resume(&self, dependency: &'static str, event: &impl Correlated) {
        let mut was_paused = false;
        self.status.update(|state| {
            was_paused = state.paused.remove(dependency).is_some();
        });
        if was_paused {
            tracing::info!(
                correlation_id = event.correlation_id(),
                dependency,
                "kafka consumption resumed"
            );
        }
    }
}

/// Something with a correlation id for log lines.
trait Correlated {
    fn correlation_id(&self) -> &str;
}

impl Correlated for Envelope {
    fn correlation_id(&self) -> &str {
        &self.correlation_id
    }
}

struct Note<'a>(&'a str);

impl Correlated for Note<'_> {
    fn correlation_id(&self) -> &str {
        self.0
    }
}
