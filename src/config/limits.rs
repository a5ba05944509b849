//! `[limits]`: connection quotas, idle and heartbeat timeouts, and the send queue.

use serde::Deserialize;

use super::validate::{at_least, seconds};
use super::SettingsError;

/// `[limits]`: quotas and timeouts.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LimitSettings {
    /// Open sockets per user.
    pub max_connections_per_user: usize,
    /// Open sockets on this node.
    pub max_connections: usize,
    /// Close a socket silent for this long, in seconds.
    pub idle_timeout_s: u64,
    /// Ping every this many seconds.
    pub heartbeat_interval_s: u64,
    /// Close a socket whose pong is this late, in seconds.
    pub heartbeat_timeout_s: u64,
    /// Messages queued per socket before it is closed as a slow consumer.
    pub send_queue_max: usize,
    /// What `max_connections_per_user` counts: the user's sockets on every replica sharing the
    /// Redis (`cluster`, the default with Redis) or on this process (`node`).
    pub per_user_scope: QuotaScope,
    /// A socket's lease in Redis lasts this many seconds unless refreshed (a crashed replica's
    /// sockets stop counting after it).
    pub quota_lease_s: u64,
}

/// What the per-user quota counts.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum QuotaScope {
    /// Sockets on every replica sharing the Redis (this node's only, without Redis).
    #[default]
    Cluster,
    /// Sockets on this process.
    Node,
}

impl Default for LimitSettings {
    fn default() -> Self {
        Self {
            max_connections_per_user: 10,
            max_connections: 100_000,
            idle_timeout_s: 300,
            heartbeat_interval_s: 30,
            heartbeat_timeout_s: 10,
            send_queue_max: 256,
            per_user_scope: QuotaScope::Cluster,
            quota_lease_s: 30,
        }
    }
}

impl LimitSettings {
    /// Checks `[limits]`: every quota at least 1, every timeout within a year.
    pub(super) fn validate(&self) -> Result<(), SettingsError> {
        at_least(
            "limits.max_connections_per_user",
            self.max_connections_per_user,
            1,
        )?;
        at_least("limits.max_connections", self.max_connections, 1)?;
        seconds("limits.idle_timeout_s", self.idle_timeout_s)?;
        seconds("limits.heartbeat_interval_s", self.heartbeat_interval_s)?;
        seconds("limits.heartbeat_timeout_s", self.heartbeat_timeout_s)?;
        at_least("limits.send_queue_max", self.send_queue_max, 1)?;
        seconds("limits.quota_lease_s", self.quota_lease_s)?;
        at_least("limits.quota_lease_s", self.quota_lease_s, 3)
    }
}
