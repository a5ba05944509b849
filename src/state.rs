//! What every HTTP handler shares: the token validator, the broker handle, the directory, the
//! connection limiter, the quota leases and control channel (with Redis), the drain flag, the
//! metrics and the per-socket limits, this node's id and the history store.

use std::sync::Arc;

use ws_actors::control::ControlChannel;
use ws_actors::history::History;
use ws_actors::session::HistoryAccess;
use ws_actors::{Broker, ConnectionLimiter, Directory, DrainState, Leases, NodeId, SessionConfig};

use crate::auth::TokenValidator;
use crate::metrics::Metrics;

/// Shared, read-only state of the HTTP layer (the counters inside are atomics).
pub struct AppState {
    /// Checks JWTs.
    pub validator: TokenValidator,
    /// Publishes and feeds the hubs.
    pub broker: Broker,
    /// Finds the hub of each new session's user.
    pub directory: Directory,
    /// The global connection cap.
    pub limiter: ConnectionLimiter,
    /// The node's quota leases in Redis; `None` without Redis (no Redis calls at all).
    pub leases: Option<Leases>,
    /// The per-user quota the leases enforce across the cluster (`limits.per_user_scope =
    /// "cluster"` with Redis); `None`: the leases only count.
    pub cluster_quota: Option<usize>,
    /// Reaches the other replicas (disconnect); `None` without Redis.
    pub control: Option<ControlChannel>,
    /// Set once the drain begins.
    pub drain: DrainState,
    /// The registry.
    pub metrics: Metrics,
    /// Per-socket limits.
    pub session_config: Arc<SessionConfig>,
    /// Browser origins allowed to connect; empty allows all.
    pub allowed_origins: Vec<String>,
    /// The publish API key; `None` disables the endpoint.
    pub publish_api_key: Option<String>,
    /// The users' histories (durable publishing); `None` when `history.size` is 0.
    pub history: Option<Arc<dyn History>>,
    /// What v2 sessions read the history with; `None` when history is off.
    pub history_access: Option<Arc<HistoryAccess>>,
    /// Records a keyed hash of the user id on connect spans; `None`: nothing of it.
    pub trace_user_hash: Option<crate::telemetry::UserIdHasher>,
    /// This process among the replicas (heartbeats, leases, the console).
    pub node: NodeId,
}
