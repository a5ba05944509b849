//! The ingest's Prometheus metrics, registered in the server's one registry. Label values come
//! from fixed sets: the configured topics and the dead-letter reasons.

use prometheus::{
    Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry,
};

/// Metrics of the Kafka ingest.
#[derive(Clone, Debug)]
pub struct IngestMetrics {
    /// Records consumed, by topic.
    pub events_consumed: IntCounterVec,
    /// Notifications handed to the broker.
    pub notifications_published: IntCounter,
    /// Events not published again because their id was seen within the dedupe window.
    pub duplicates_suppressed: IntCounter,
    /// Records that could not become a notification, by reason.
    pub dead_lettered: IntCounterVec,
    /// Records behind the partition ends on this replica, by topic.
    pub consumer_lag: IntGaugeVec,
    /// From the envelope's `event_timestamp` to the hand-off to the broker.
    pub event_to_publish: Histogram,
    /// 1 while consumption is paused by an outage (Redis, owner lookup, dead-letter topic).
    pub paused: IntGauge,
    /// Retries of a step that failed because a dependency was down, by dependency.
    pub retries: IntCounterVec,
}

/// Every dead-letter reason (label values of `ws_ingest_dead_lettered_total`).
pub const DEAD_LETTER_REASONS: [&str; 6] = [
    "malformed",
    "unknown_event_type",
    "missing_user",
    "owner_not_found",
    "lookup_failed",
    "lookup_unavailable",
];

impl IngestMetrics {
    /// Creates the metrics and registers them in `registry`.
    pub fn register(registry: &Registry) -> prometheus::Result<Self> {
        let metrics = Self {
            events_consumed: IntCounterVec::new(
                Opts::new(
                    "ws_ingest_events_consumed_total",
                    "Kafka records consumed, by topic",
                ),
                &["topic"],
            )?,
            notifications_published: IntCounter::new(
                "ws_ingest_notifications_published_total",
                "Notifications made from Kafka events and handed to the broker",
            )?,
            duplicates_suppressed: IntCounter::new(
                "ws_ingest_duplicates_suppressed_total",
                "Kafka events not published again: their event id was seen within the window",
            )?,
            dead_lettered: IntCounterVec::new(
                Opts::new(
                    "ws_ingest_dead_lettered_total",
                    "Kafka records that could not become a notification, by reason",
                ),
                &["reason"],
            )?,
            consumer_lag: IntGaugeVec::new(
                Opts::new(
                    "ws_ingest_consumer_lag",
                    "Records between this replica's position and the partition ends, by topic",
                ),
                &["topic"],
            )?,
            event_to_publish: Histogram::with_opts(
                HistogramOpts::new(
                    "ws_ingest_event_to_publish_seconds",
                    "From the event's timestamp to the notification's hand-off to the broker",
                )
                .buckets(vec![
                    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
                    30.0, 60.0,
                ]),
            )?,
            paused: IntGauge::new(
                "ws_ingest_paused",
                "1 while Kafka consumption is paused by an outage of Redis or the owner lookup",
            )?,
            retries: IntCounterVec::new(
                Opts::new(
                    "ws_ingest_retries_total",
                    "Retries while a dependency was down, by dependency",
                ),
                &["dependency"],
            )?,
        };
        registry.register(Box::new(metrics.events_consumed.clone()))?;
        registry.register(Box::new(metrics.notifications_published.clone()))?;
        registry.register(Box::new(metrics.duplicates_suppressed.clone()))?;
        registry.register(Box::new(metrics.dead_lettered.clone()))?;
        registry.register(Box::new(metrics.consumer_lag.clone()))?;
        registry.register(Box::new(metrics.event_to_publish.clone()))?;
        registry.register(Box::new(metrics.paused.clone()))?;
        registry.register(Box::new(metrics.retries.clone()))?;
        for reason in DEAD_LETTER_REASONS {
            metrics.dead_lettered.with_label_values(&[reason]);
        }
        Ok(metrics)
    }

    /// Metrics registered nowhere, for tests.
    pub fn unregistered() -> Self {
        Self::register(&Registry::new()).unwrap_or_else(|err| panic!("metrics: {err}"))
    }
}
