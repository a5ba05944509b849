//! The Prometheus metrics of the cluster features built on leases: the per-user quota (refusals
//! by scope, fail-open admissions), the leases themselves (held, refresh round trips, store up),
//! and the disconnect API. Registered once into the server's registry, whether or not Redis is
//! configured (without Redis only the node-scope refusals move).

use std::ops::Deref;
use std::sync::Arc;

use prometheus::{IntCounter, IntCounterVec, IntGauge, Opts, Registry};

/// One shared handle on the lease metrics.
#[derive(Clone, Debug)]
pub struct LeaseMetrics(Arc<LeaseCounters>);

impl Deref for LeaseMetrics {
    type Target = LeaseCounters;

    fn deref(&self) -> &LeaseCounters {
        &self.0
    }
}

/// The metrics behind a [`LeaseMetrics`] handle.
#[derive(Debug)]
pub struct LeaseCounters {
    /// Leases this node holds (one per open socket while Redis is configured).
    pub leases_held: IntGauge,
    /// 1 while the lease store (Redis) answers.
    pub lease_store_up: IntGauge,
    /// Sockets refused for the per-user quota, by where it was decided: `node` (this process's
    /// count) or `cluster` (the leases in Redis).
    pub quota_refusals: IntCounterVec,
    /// Sockets admitted without a lease check because Redis was unreachable.
    pub fail_open: IntCounter,
    /// Redis round trips spent refreshing leases (one per batch).
    pub refresh_round_trips: IntCounter,
    /// Users named by disconnect API calls.
    pub disconnect_users: IntCounter,
    /// Sockets those calls disconnected across the cluster (counted from the leases).
    pub disconnect_sockets: IntCounter,
}

impl LeaseMetrics {
    /// Creates the metrics and registers them in `registry`.
    pub fn register(registry: &Registry) -> prometheus::Result<Self> {
        let counters = LeaseCounters {
            leases_held: IntGauge::new("ws_leases_held", "Quota leases this node holds in Redis")?,
            lease_store_up: IntGauge::new(
                "ws_lease_store_up",
                "1 while the lease store (Redis) answers",
            )?,
            quota_refusals: IntCounterVec::new(
                Opts::new(
                    "ws_quota_refusals_total",
                    "Sockets refused for the per-user quota, by scope",
                ),
                &["scope"],
            )?,
            fail_open: IntCounter::new(
                "ws_quota_fail_open_total",
                "Sockets admitted without the cluster quota check: Redis unreachable",
            )?,
            refresh_round_trips: IntCounter::new(
                "ws_lease_refresh_round_trips_total",
                "Redis round trips spent refreshing quota leases",
            )?,
            disconnect_users: IntCounter::new(
                "ws_disconnect_api_users_total",
                "Users named by disconnect API calls",
            )?,
            disconnect_sockets: IntCounter::new(
                "ws_disconnect_api_sockets_total",
                "Sockets disconnect API calls closed across the cluster",
            )?,
        };
        counters.register_all(registry)?;
        Ok(Self(Arc::new(counters)))
    }

    /// Metrics registered nowhere, for tests.
    pub fn unregistered() -> Self {
        // Registering into a throwaway registry cannot collide.
        Self::register(&Registry::new()).unwrap_or_else(|err| panic!("metrics: {err}"))
    }

    /// Counts a quota refusal decided at `scope` (`node` or `cluster`).
    pub fn quota_refused(&self, scope: &str) {
        self.quota_refusals.with_label_values(&[scope]).inc();
    }
}

impl LeaseCounters {
    fn register_all(&self, registry: &Registry) -> prometheus::Result<()> {
        registry.register(Box::new(self.leases_held.clone()))?;
        registry.register(Box::new(self.lease_store_up.clone()))?;
        registry.register(Box::new(self.quota_refusals.clone()))?;
        registry.register(Box::new(self.fail_open.clone()))?;
        registry.register(Box::new(self.refresh_round_trips.clone()))?;
        registry.register(Box::new(self.disconnect_users.clone()))?;
        registry.register(Box::new(self.disconnect_sockets.clone()))?;
        Ok(())
    }
}
