//! `[redis]`: the broker's Redis (a standalone `url`, or Redis Cluster's `cluster_nodes`; neither:
//! the in-process broker) and the channel prefix.

use serde::Deserialize;
use ws_actors::broker::RedisTarget;

use super::de::string_list;
use super::SettingsError;

/// `[redis]`: the broker.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RedisSettings {
    /// `redis://` or `rediss://` URL; empty = the in-process broker (single node).
    pub url: String,
    /// Channel of user `u` is `{channel_prefix}{u}`.
    pub channel_prefix: String,
    /// Redis Cluster seed nodes (`redis://host:port` each); non-empty: cluster mode with
    /// sharded pub/sub, and `url` is unused.
    #[serde(deserialize_with = "string_list")]
    pub cluster_nodes: Vec<String>,
}

impl Default for RedisSettings {
    fn default() -> Self {
        Self {
            url: String::new(),
            channel_prefix: "ws:".into(),
            cluster_nodes: Vec::new(),
        }
    }
}

impl RedisSettings {
    /// Checks `[redis]`: a `redis://` or `rediss://` URL (or none), and a channel prefix.
    pub(super) fn validate(&self) -> Result<(), SettingsError> {
        if !self.url.is_empty() && !is_redis_url(&self.url) {
            return Err(SettingsError::invalid(
                "redis.url",
                "expected redis://host[:port][/db] or rediss://…, or empty for the in-process broker",
            ));
        }
        if let Some(node) = self.cluster_nodes.iter().find(|node| !is_redis_url(node)) {
            let reason = format!("expected redis://host:port for each node, got {node:?}");
            return Err(SettingsError::invalid("redis.cluster_nodes", reason));
        }
        // Durable channels and history keys start with `{` (a hash tag), so no plain channel
        // may: a prefix starting with `{` could make a user's channel another's durable one.
        if self.channel_prefix.is_empty() || self.channel_prefix.starts_with('{') {
            return Err(SettingsError::invalid(
                "redis.channel_prefix",
                "must not be empty nor start with '{'",
            ));
        }
        Ok(())
    }

    /// Whether any Redis is configured (a URL or cluster nodes).
    pub fn configured(&self) -> bool {
        !self.url.is_empty() || !self.cluster_nodes.is_empty()
    }

    /// The Redis the server uses: the cluster when `cluster_nodes` is set (then `url` is
    /// unused), else the standalone `url`; `None` for the in-process broker.
    pub fn target(&self) -> Option<RedisTarget> {
        if !self.cluster_nodes.is_empty() {
            Some(RedisTarget::Cluster(self.cluster_nodes.clone()))
        } else if !self.url.is_empty() {
            Some(RedisTarget::Single(self.url.clone()))
        } else {
            None
        }
    }
}

/// `redis://…` or `rediss://…` with something after the scheme.
fn is_redis_url(url: &str) -> bool {
    ["redis://", "rediss://"]
        .iter()
        .any(|scheme| url.len() > scheme.len() && url.starts_with(scheme))
}
