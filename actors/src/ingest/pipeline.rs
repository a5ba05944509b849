//! The decisions taken for one record, free of Kafka: parse, route, find the owner (waiting out
//! a lookup outage), publish once (waiting out a broker outage), or reject to the dead-letter
//! topic; pause and resume consumption with jittered backoff; store the offset only once the
//! record reached its end. What the decisions do to the world goes through [`IngestIo`], so
//! the rules are unit-tested without a broker (see `pipeline/tests.rs`).

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use tracing::Instrument as _;
use uuid::Uuid;

use super::dedupe::PublishError;
use super::envelope::{correlation_id_of, Envelope, EnvelopeError};
use super::lookup::LookupError;
use super::route::{LookupKey, MissingOwner, Owner, Routes};
use super::status::Status;
use super::{IngestConfig, IngestMetrics, TraceHook};
use crate::backoff::Backoff;
use crate::broker::BrokerHealth;
use crate::ids::UserId;

/// The dependencies a pause names (the `dependency` label and the health reason).
const BROKER: &str = "broker";
const LOOKUP: &str = "owner lookup";
const DEAD_LETTERS: &str = "dead-letter topic";

/// One consumed record, as the decisions see it.
#[derive(Clone, Debug)]
pub(crate) struct Record<'a> {
    pub(crate) topic: &'a str,
    pub(crate) partition: i32,
    pub(crate) offset: i64,
    pub(crate) key: Option<&'a [u8]>,
    /// The value; `None` for a tombstone.
    pub(crate) value: Option<&'a [u8]>,
    /// The record's headers, copied to its dead letter.
    pub(crate) headers: Vec<(&'a str, Option<&'a [u8]>)>,
}

impl Record<'_> {
    /// The value, empty for a tombstone.
    fn payload(&self) -> &[u8] {
        self.value.unwrap_or_default()
    }
}

/// What the decisions do to the world: the Kafka consumer and dead-letter producer, the owner
/// lookup, the dedupe store and the broker, and the clock.
pub(crate) trait IngestIo {
    /// Why a dead letter was not accepted.
    type SendError: std::fmt::Display;

    /// The owner of `key`: `Ok(None)` when there is none.
    async fn owner(&self, key: &LookupKey) -> Result<Option<UserId>, LookupError>;

    /// Whether the broker can deliver now.
    fn broker_health(&self) -> BrokerHealth;

    /// Publishes `payload` to `user` unless `event_id` was published within the dedupe window:
    /// `Ok(true)` published, `Ok(false)` a duplicate.
    async fn publish_once(
        &self,
        event_id: Uuid,
        user: &UserId,
        payload: &Bytes,
    ) -> Result<bool, PublishError>;

    /// The dead-letter topic, if rejected records are copied anywhere.
    fn dead_letter_topic(&self) -> Option<&str>;

    /// Copies `record`, raw, to the dead-letter topic with why it was rejected.
    async fn dead_letter(
        &self,
        record: &Record<'_>,
        rejection: &Rejection,
    ) -> Result<(), Self::SendError>;

    /// Stores `record`'s offset for the next commit (a failure is logged: the record is then
    /// redelivered, and the dedupe store suppresses it if it was published).
    fn store_offset(&self, record: &Record<'_>);

    /// Waits `delay`.
    async fn sleep(&self, delay: Duration);
}

/// Why a record did not become a notification; [`Rejection::label`] is the `reason` label and
/// the `dlq.reason` header, the text the `dlq.error` header.
#[derive(Debug, thiserror::Error)]
pub(crate) enum Rejection {
    /// Not an envelope.
    #[error("{0}")]
    Malformed(EnvelopeError),
    /// No route takes this topic and event type.
    #[error("no route for event type {event_type:?} on topic {topic}")]
    UnknownEventType { event_type: String, topic: String },
    /// The event lacks what finds its user.
    #[error("{0}")]
    MissingUser(MissingOwner),
    /// The lookup answered: no owner.
    #[error("no owner: {}", no_owner(.0))]
    OwnerNotFound(LookupKey),
    /// The lookup answered, but not with an owner.
    #[error("{0}")]
    LookupFailed(LookupError),
    /// The lookup stayed unreachable past `give_up_after`.
    #[error("{0}")]
    LookupUnavailable(LookupError),
}

impl Rejection {
    /// The `reason` label (one of [`super::metrics::DEAD_LETTER_REASONS`]).
    pub(crate) fn label(&self) -> &'static str {
        match self {
            Self::Malformed(_) => "malformed",
            Self::UnknownEventType { .. } => "unknown_event_type",
            Self::MissingUser(_) => "missing_user",
            Self::OwnerNotFound(_) => "owner_not_found",
            Self::LookupFailed(_) => "lookup_failed",
            Self::LookupUnavailable(_) => "lookup_unavailable",
        }
    }
}

fn no_owner(key: &LookupKey) -> String {
    match key {
        LookupKey::Redis(name) => format!("redis key {name} not set"),
        LookupKey::Http(url) => format!("GET {url} answered 404"),
    }
}

/// What became of one event.
enum Outcome {
    Published,
    Duplicate,
    Rejected(Rejection),
}

/// The decisions, and what they need; owned by the ingest actor's one future.
pub(crate) struct Pipeline<I> {
    io: I,
    routes: Routes,
    metrics: IngestMetrics,
    status: Arc<Status>,
    trace: TraceHook,
    group_id: String,
    backoff_max: Duration,
    resume_delay: Duration,
    give_up: Option<Duration>,
}

impl<I: IngestIo> Pipeline<I> {
    /// The pipeline of `config`'s routes, acting through `io`.
    pub(crate) fn new(
        io: I,
        routes: Routes,
        config: &IngestConfig,
        metrics: IngestMetrics,
        status: Arc<Status>,
        trace: TraceHook,
    ) -> Self {
        Self {
            io,
            routes,
            metrics,
            status,
            trace,
            group_id: config.group_id.clone(),
            backoff_max: config.backoff_max,
            resume_delay: config.resume_delay,
            give_up: config.lookup.give_up_after,
        }
    }

    /// The I/O the pipeline acts through.
    pub(crate) fn io(&self) -> &I {
        &self.io
    }

    /// Takes `record` to its end, then stores its offset: an offset is stored only once its
    /// notification is published (or suppressed as a duplicate, or the record dead-lettered).
    pub(crate) async fn process(&self, record: &Record<'_>) {
        self.handle(record).await;
        self.io.store_offset(record);
    }

    /// Takes one record to its end: published, suppressed as a duplicate or rejected.
    async fn handle(&self, record: &Record<'_>) {
        self.metrics
            .events_consumed
            .with_label_values(&[record.topic])
            .inc();
        let envelope = match Envelope::parse(record.payload()) {
            Ok(envelope) => envelope,
            Err(error) => {
                let correlation_id = correlation_id_of(record.payload());
                let rejection = Rejection::Malformed(error);
                return self
                    .reject(record, &rejection, correlation_id.as_deref())
                    .await;
            }
        };
        let span = self.span(record, &envelope);
        let outcome = self
            .deliver(record.topic, &envelope)
            .instrument(span.clone())
            .await;
        let (correlation_id, event_id) = (&envelope.correlation_id, envelope.event_id);
        match outcome {
            Outcome::Published => {
                span.record("outcome", "published");
                tracing::debug!(%correlation_id, %event_id, "notification published");
            }
            Outcome::Duplicate => {
                span.record("outcome", "duplicate");
                tracing::info!(%correlation_id, %event_id, "duplicate event suppressed");
            }
            Outcome::Rejected(rejection) => {
                span.record("outcome", rejection.label());
                self.reject(record, &rejection, Some(correlation_id))
                    .instrument(span)
                    .await;
            }
        }
    }

    /// The `kafka.ingest` span, child of the envelope's `traceparent`; only when tracing is on.
    fn span(&self, record: &Record<'_>, envelope: &Envelope) -> tracing::Span {
        let Some(trace) = &self.trace else {
            return tracing::Span::none();
        };
        let span = tracing::info_span!(
            target: "websocket",
            "kafka.ingest",
            messaging.system = "kafka",
            messaging.operation = "process",
            messaging.destination.name = record.topic,
            messaging.kafka.partition = record.partition,
            messaging.kafka.offset = record.offset,
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
            return Outcome::Rejected(Rejection::UnknownEventType {
                event_type: envelope.event_type.clone(),
                topic: topic.to_owned(),
            });
        };
        let user = match route.owner(envelope) {
            Owner::Known(user) => user,
            Owner::Missing(why) => return Outcome::Rejected(Rejection::MissingUser(why)),
            Owner::Lookup(key) => match self.look_up(key, envelope).await {
                Ok(user) => user,
                Err(rejection) => return Outcome::Rejected(rejection),
            },
        };
        let payload = Bytes::from(envelope.notification(&route.event, &route.fields));
        self.publish_once(envelope, user, payload).await
    }

    /// The owner of `key`, waiting out an unavailable lookup (up to the give-up time).
    async fn look_up(&self, key: LookupKey, envelope: &Envelope) -> Result<UserId, Rejection> {
        let started = Instant::now();
        let mut backoff = Backoff::new(self.backoff_max);
        let correlation_id = envelope.correlation_id.as_str();
        loop {
            let error = match self.io.owner(&key).await {
                Ok(owner) => {
                    self.resume(LOOKUP, correlation_id);
                    return owner.ok_or(Rejection::OwnerNotFound(key));
                }
                Err(error) => error,
            };
            if !error.is_outage() {
                self.resume(LOOKUP, correlation_id);
                return Err(Rejection::LookupFailed(error));
            }
            if self.give_up.is_some_and(|limit| started.elapsed() >= limit) {
                self.resume(LOOKUP, correlation_id);
                return Err(Rejection::LookupUnavailable(error));
            }
            let why = error.to_string();
            self.pause(LOOKUP, &why, correlation_id, &mut backoff).await;
        }
    }

    /// Publishes unless the event id was published before; while Redis (or the local
    /// subscriber) is down the record waits, with backoff, instead of being dropped.
    async fn publish_once(&self, envelope: &Envelope, user: UserId, payload: Bytes) -> Outcome {
        let correlation_id = envelope.correlation_id.as_str();
        let mut backoff = Backoff::new(self.backoff_max);
        let mut recovering = false;
        loop {
            if let BrokerHealth::Down { reason } = self.io.broker_health() {
                self.pause(BROKER, &reason, correlation_id, &mut backoff)
                    .await;
                recovering = true;
                continue;
            }
            if recovering {
                // Back after an outage: give every replica's subscriber time to re-subscribe,
                // or the backlog would be published to channels nobody listens to yet.
                self.io.sleep(self.resume_delay).await;
                recovering = false;
                continue;
            }
            let published = self
                .io
                .publish_once(envelope.event_id, &user, &payload)
                .await;
            match published {
                Ok(true) => break,
                Ok(false) => {
                    self.resume(BROKER, correlation_id);
                    self.metrics.duplicates_suppressed.inc();
                    return Outcome::Duplicate;
                }
                Err(error) => {
                    let why = error.to_string();
                    self.pause(BROKER, &why, correlation_id, &mut backoff).await;
                    recovering = true;
                }
            }
        }
        self.resume(BROKER, correlation_id);
        self.published(envelope);
        Outcome::Published
    }

    /// Counts a published notification and its age.
    fn published(&self, envelope: &Envelope) {
        self.metrics.notifications_published.inc();
        if let Ok(age) = SystemTime::now().duration_since(envelope.timestamp) {
            self.metrics.event_to_publish.observe(age.as_secs_f64());
        }
    }

    /// Counts and logs a rejected record and copies it to the dead-letter topic (retrying while
    /// Kafka refuses it), so that it is committed and the partition moves on.
    async fn reject(
        &self,
        record: &Record<'_>,
        rejection: &Rejection,
        correlation_id: Option<&str>,
    ) {
        let reason = rejection.label();
        self.metrics
            .dead_lettered
            .with_label_values(&[reason])
            .inc();
        let correlation_id = correlation_id.unwrap_or("-");
        tracing::warn!(
            correlation_id,
            topic = record.topic,
            partition = record.partition,
            offset = record.offset,
            reason,
            error = %rejection,
            dead_letter_topic = self.io.dead_letter_topic().unwrap_or(""),
            "kafka record rejected"
        );
        if self.io.dead_letter_topic().is_none() {
            return;
        }
        let mut backoff = Backoff::new(self.backoff_max);
        while let Err(error) = self.io.dead_letter(record, rejection).await {
            let why = error.to_string();
            self.pause(DEAD_LETTERS, &why, correlation_id, &mut backoff)
                .await;
        }
        self.resume(DEAD_LETTERS, correlation_id);
    }

    /// Marks consumption paused by `dependency` and waits the next backoff delay.
    async fn pause(
        &self,
        dependency: &'static str,
        why: &str,
        correlation_id: &str,
        backoff: &mut Backoff,
    ) {
        let first = backoff.attempts() == 0;
        let delay = backoff.next_delay();
        self.metrics.retries.with_label_values(&[dependency]).inc();
        let newly = self.status.pause(dependency, why);
        if newly || first {
            tracing::warn!(
                correlation_id,
                dependency,
                error = why,
                "kafka consumption paused: retrying with backoff"
            );
        } else {
            tracing::debug!(dependency, error = why, ?delay, "still unavailable");
        }
        self.io.sleep(delay).await;
    }

    /// Clears a pause by `dependency`, if there was one.
    fn resume(&self, dependency: &'static str, correlation_id: &str) {
        if self.status.resume(dependency) {
            tracing::info!(correlation_id, dependency, "kafka consumption resumed");
        }
    }
}

#[cfg(test)]
mod tests;
