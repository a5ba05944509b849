//! What `run` starts before it serves: the directory and the broker that feeds it, the users'
//! history (in Redis or in process), and, with Redis, what the replicas coordinate through it:
//! the quota leases and the control channel.

use std::sync::Arc;
use std::time::Duration;

use actix::Arbiter;
use anyhow::Context as _;
use ws_actors::control::ControlChannel;
use ws_actors::history::{History, HistoryConfig, HistoryStore, MemoryHistory, RedisHistory};
use ws_actors::session::HistoryAccess;
use ws_actors::trace::ForwardTracer;
use ws_actors::{Broker, Directory, HubSettings, LeaseConfig, Leases, NodeId, RedisConfig};

use crate::config::{QuotaScope, Settings};
use crate::metrics::Metrics;

/// What [`start_broker`] starts: the broker, the directory it feeds, and the users' histories
/// (`None` when `history.size` is 0).
pub(crate) struct Started {
    pub(crate) broker: Broker,
    pub(crate) directory: Directory,
    pub(crate) history: Option<HistoryStore>,
}

/// How the history is kept, from `[history]`; `None` when it is off.
fn history_config(settings: &Settings) -> Option<HistoryConfig> {
    settings.history.enabled().then(|| HistoryConfig {
        size: settings.history.size,
        ttl: Duration::from_secs(settings.history.ttl_s),
    })
}

/// Starts the directory (one shard per arbiter), the broker that feeds it and the history.
pub(crate) fn start_broker(
    settings: &Settings,
    shards: &[Arbiter],
    metrics: &Metrics,
    tracer: Option<Arc<dyn ForwardTracer>>,
) -> anyhow::Result<Started> {
    let handles: Vec<_> = shards.iter().map(Arbiter::handle).collect();
    let hubs = HubSettings {
        max_sessions_per_user: settings.limits.max_connections_per_user,
        tracer,
    };
    let relay = &metrics.relay;
    let history = history_config(settings);
    let Some(target) = settings.redis.target() else {
        let directory = Directory::start(&handles, hubs, None, relay.clone());
        let history = history.map(|config| {
            let store = MemoryHistory::new(config, Box::new(directory.clone()));
            HistoryStore::Memory(Arc::new(store))
        });
        return Ok(Started {
            broker: Broker::memory(directory.clone(), relay),
            directory,
            history,
        });
    };
    let setting = if target.is_cluster() {
        "invalid setting redis.cluster_nodes"
    } else {
        "invalid setting redis.url"
    };
    let config = RedisConfig {
        target,
        channel_prefix: settings.redis.channel_prefix.clone(),
        durable: settings.history.enabled(),
    };
    let redis = Broker::redis(config).context(setting)?;
    let history = history.map(|config| {
        let prefix = settings.redis.channel_prefix.clone();
        let store = RedisHistory::new(redis.publisher_connection(), prefix, &config);
        load_history_library(store.clone());
        HistoryStore::Redis(store)
    });
    let directory = Directory::start(&handles, hubs, Some(redis.interest()), relay.clone());
    Ok(Started {
        broker: redis.start(directory.clone(), relay),
        directory,
        history,
    })
}

/// Loads the history's Redis Function at start-up, so that backends can `FCALL ws_publish` at
/// once. Redis may be down: the store loads it again on first use (and whenever it is missing).
fn load_history_library(store: RedisHistory) {
    actix_web::rt::spawn(async move {
        match store.load_library().await {
            Ok(()) => tracing::info!("history function library loaded"),
            Err(error) => tracing::warn!(%error, "history function library not loaded yet"),
        }
    });
}

/// What v2 sessions read the history with. `WS_DEBUG_RESUME_DELAY_MS="<before>,<after>"`
/// (a test aid) delays each history read after the subscription acknowledgement and before
/// the merge, to widen the windows the merge must close.
pub(crate) fn history_access(settings: &Settings, store: &Arc<dyn History>) -> HistoryAccess {
    let mut access = HistoryAccess::new(Arc::clone(store), settings.history.max_replay);
    if let Ok(delays) = std::env::var("WS_DEBUG_RESUME_DELAY_MS") {
        let mut parts = delays
            .split(',')
            .map(|ms| ms.trim().parse::<u64>().unwrap_or(0));
        let before = Duration::from_millis(parts.next().unwrap_or(0));
        let after = Duration::from_millis(parts.next().unwrap_or(0));
        tracing::warn!(
            ?before,
            ?after,
            "history reads delayed (WS_DEBUG_RESUME_DELAY_MS)"
        );
        access.debug_delays = (before, after);
    }
    access
}

/// What the replicas sharing a Redis coordinate through it: the quota leases and the control
/// channel. Both `None` without Redis.
pub(crate) struct Cluster {
    pub(crate) leases: Option<Leases>,
    pub(crate) control: Option<ControlChannel>,
    /// The cluster-wide per-user quota (`per_user_scope = "cluster"` with Redis).
    pub(crate) quota: Option<usize>,
}

/// How long the leases still held at exit may take to be given back.
pub(crate) const LEASE_RELEASE_GRACE: Duration = Duration::from_secs(1);

/// Starts the leases and the control channel when Redis is configured: a standalone Redis or
/// Redis Cluster alike.
pub(crate) fn start_cluster(
    settings: &Settings,
    directory: &Directory,
    metrics: &Metrics,
    node: &NodeId,
) -> anyhow::Result<Cluster> {
    let redis = &settings.redis;
    let Some(target) = redis.target() else {
        return Ok(Cluster {
            leases: None,
            control: None,
            quota: None,
        });
    };
    let setting = if target.is_cluster() {
        "invalid setting redis.cluster_nodes"
    } else {
        "invalid setting redis.url"
    };
    let config = LeaseConfig {
        target: target.clone(),
        channel_prefix: redis.channel_prefix.clone(),
        node: node.clone(),
        lease: Duration::from_secs(settings.limits.quota_lease_s),
    };
    let leases = Leases::start(config, metrics.leases.clone()).context(setting)?;
    let control = ControlChannel::start(
        &target,
        &redis.channel_prefix,
        node.clone(),
        directory.clone(),
    )
    .context(setting)?;
    let limits = &settings.limits;
    let quota =
        (limits.per_user_scope == QuotaScope::Cluster).then_some(limits.max_connections_per_user);
    Ok(Cluster {
        leases: Some(leases),
        control: Some(control),
        quota,
    })
}
