//! The Prometheus metrics that the actors update. Registered once into the server's registry;
//! every label value is from a fixed set (never a user id, token or path).

use std::ops::Deref;
use std::sync::Arc;

use prometheus::{Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGauge, Opts, Registry};

/// Metrics of connections, fan-out and the broker: one shared handle (every session holds a
/// clone, so a clone is one pointer, not a handle per metric).
#[derive(Clone, Debug)]
pub struct RelayMetrics(Arc<RelayCounters>);

impl Deref for RelayMetrics {
    type Target = RelayCounters;

    fn deref(&self) -> &RelayCounters {
        &self.0
    }
}

/// The metrics behind a [`RelayMetrics`] handle.
#[derive(Debug)]
pub struct RelayCounters {
    /// Open WebSocket sessions.
    pub connections_active: IntGauge,
    /// Users with at least one open session on this node.
    pub users_active: IntGauge,
    /// Upgrades by outcome: accepted, auth_failed, quota_user, quota_global, origin_refused, draining.
    pub connections_opened: IntCounterVec,
    /// Sessions closed, by close code.
    pub connections_closed: IntCounterVec,
    /// How long sessions lasted.
    pub connection_duration: Histogram,
    /// Messages written to sockets (the kernel has taken the whole frame); control frames never
    /// count. With `messages_dropped`, every message accepted for a socket counts exactly once.
    pub messages_forwarded: IntCounter,
    /// Payload bytes of the messages written to sockets.
    pub bytes_forwarded: IntCounter,
    /// Size of each message received from the broker.
    pub message_size: Histogram,
    /// Messages not delivered, by reason: slow_consumer (socket closed 4009), closed (socket
    /// closed or lost otherwise before writing it), no_session, overload (shard queue full),
    /// shutdown.
    pub messages_dropped: IntCounterVec,
    /// 1 while the broker connection is up.
    pub broker_connected: IntGauge,
    /// Broker reconnects.
    pub broker_reconnects: IntCounter,
    /// Broker channels this node is subscribed to.
    pub subscribed_channels: IntGauge,
    /// Redis Cluster: users whose subscription was made again, by cause (`slot_moved`,
    /// `failover`, `reconnect`).
    pub cluster_resubscriptions: IntCounterVec,
    /// From the payload's `ts` to the fan-out to sockets.
    pub publish_latency: Histogram,
    /// Durable publish requests, by source (`api`, `ingest`, `console`) and outcome (`ok`,
    /// `error`).
    pub durable_publishes: IntCounterVec,
    /// Messages appended to users' histories (one per user of a durable publish).
    pub history_appends: IntCounter,
    /// v2 resumes (connects with `since`), by outcome: recovered, epoch, ahead, too_far,
    /// trimmed.
    pub resumes: IntCounterVec,
    /// History messages sent by resumes and catch-ups.
    pub messages_replayed: IntCounter,
    /// Catch-ups of live v2 sockets, by cause: reconnect (the broker link came back), gap (an
    /// offset was skipped).
    pub catch_ups: IntCounterVec,
    /// `reset` frames sent to live v2 sockets, by reason.
    pub resets: IntCounterVec,
}

impl RelayMetrics {
    /// Creates the metrics and registers them in `registry`.
    pub fn register(registry: &Registry) -> prometheus::Result<Self> {
        let metrics = RelayCounters {
            connections_active: IntGauge::new("ws_connections_active", "Open WebSocket sessions")?,
            users_active: IntGauge::new(
                "ws_users_active",
                "Users with at least one open session on this node",
            )?,
            connections_opened: IntCounterVec::new(
                Opts::new(
                    "ws_connections_opened_total",
                    "WebSocket upgrades by outcome",
                ),
                &["outcome"],
            )?,
            connections_closed: IntCounterVec::new(
                Opts::new(
                    "ws_connections_closed_total",
                    "Sessions closed, by close code",
                ),
                &["code"],
            )?,
            connection_duration: Histogram::with_opts(
                HistogramOpts::new(
                    "ws_connection_duration_seconds",
                    "How long WebSocket sessions lasted",
                )
                .buckets(vec![
                    1.0, 5.0, 30.0, 60.0, 300.0, 900.0, 1800.0, 3600.0, 14400.0, 86400.0,
                ]),
            )?,
            messages_forwarded: IntCounter::new(
                "ws_messages_forwarded_total",
                "Messages written to WebSocket sockets",
            )?,
            bytes_forwarded: IntCounter::new(
                "ws_bytes_forwarded_total",
                "Payload bytes of messages written to WebSocket sockets",
            )?,
            message_size: Histogram::with_opts(
                HistogramOpts::new(
                    "ws_message_size_bytes",
                    "Size of messages received from the broker",
                )
                .buckets(prometheus::exponential_buckets(64.0, 4.0, 8)?),
            )?,
            messages_dropped: IntCounterVec::new(
                Opts::new(
                    "ws_messages_dropped_total",
                    "Messages not delivered, by reason",
                ),
                &["reason"],
            )?,
            broker_connected: IntGauge::new(
                "ws_broker_connected",
                "1 while the broker connection is up",
            )?,
            broker_reconnects: IntCounter::new(
                "ws_broker_reconnects_total",
                "Times the broker connection was re-established",
            )?,
            subscribed_channels: IntGauge::new(
                "ws_subscribed_channels",
                "Broker channels this node is subscribed to",
            )?,
            cluster_resubscriptions: IntCounterVec::new(
                Opts::new(
                    "ws_cluster_resubscriptions_total",
                    "Redis Cluster: users re-subscribed after losing their subscription, by cause",
                ),
                &["cause"],
            )?,
            publish_latency: Histogram::with_opts(
                HistogramOpts::new(
                    "ws_publish_to_send_seconds",
                    "Time from the payload's ts field to the fan-out to sockets",
                )
                .buckets(vec![
                    0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
                ]),
            )?,
            durable_publishes: IntCounterVec::new(
                Opts::new(
                    "ws_durable_publishes_total",
                    "Durable publish requests, by source and outcome",
                ),
                &["source", "outcome"],
            )?,
            history_appends: IntCounter::new(
                "ws_history_appends_total",
                "Messages appended to user histories",
            )?,
            resumes: IntCounterVec::new(
                Opts::new("ws_resumes_total", "Protocol v2 resumes by outcome"),
                &["outcome"],
            )?,
            messages_replayed: IntCounter::new(
                "ws_messages_replayed_total",
                "History messages sent by resumes and catch-ups",
            )?,
            catch_ups: IntCounterVec::new(
                Opts::new(
                    "ws_catch_ups_total",
                    "Catch-ups of live v2 sockets, by cause",
                ),
                &["cause"],
            )?,
            resets: IntCounterVec::new(
                Opts::new("ws_resets_total", "Reset frames sent to live v2 sockets"),
                &["reason"],
            )?,
        };
        metrics.register_all(registry)?;
        Ok(Self(Arc::new(metrics)))
    }

    /// Metrics registered nowhere, for actor tests.
    pub fn unregistered() -> Self {
        // Registering into a throwaway registry cannot collide.
        Self::register(&Registry::new()).unwrap_or_else(|err| panic!("metrics: {err}"))
    }

    /// Counts an upgrade outcome.
    pub fn opened(&self, outcome: &str) {
        self.connections_opened.with_label_values(&[outcome]).inc();
    }
}

impl RelayCounters {
    fn register_all(&self, registry: &Registry) -> prometheus::Result<()> {
        registry.register(Box::new(self.connections_active.clone()))?;
        registry.register(Box::new(self.users_active.clone()))?;
        registry.register(Box::new(self.connections_opened.clone()))?;
        registry.register(Box::new(self.connections_closed.clone()))?;
        registry.register(Box::new(self.connection_duration.clone()))?;
        registry.register(Box::new(self.messages_forwarded.clone()))?;
        registry.register(Box::new(self.bytes_forwarded.clone()))?;
        registry.register(Box::new(self.message_size.clone()))?;
        registry.register(Box::new(self.messages_dropped.clone()))?;
        registry.register(Box::new(self.broker_connected.clone()))?;
        registry.register(Box::new(self.broker_reconnects.clone()))?;
        registry.register(Box::new(self.subscribed_channels.clone()))?;
        registry.register(Box::new(self.cluster_resubscriptions.clone()))?;
        registry.register(Box::new(self.publish_latency.clone()))?;
        registry.register(Box::new(self.durable_publishes.clone()))?;
        registry.register(Box::new(self.history_appends.clone()))?;
        registry.register(Box::new(self.resumes.clone()))?;
        registry.register(Box::new(self.messages_replayed.clone()))?;
        registry.register(Box::new(self.catch_ups.clone()))?;
        registry.register(Box::new(self.resets.clone()))?;
        Ok(())
    }
}
