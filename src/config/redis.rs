//! `[redis]`: the broker's Redis (empty: the in-process broker) and the channel prefix.

use serde::Deserialize;

use super::SettingsError;

/// `[redis]`: the broker.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RedisSettings {
    /// `redis://` or `rediss://` URL; empty = the in-process broker (single node).
    pub url: String,
    /// Channel of user `u` is `{channel_prefix}{u}`.
    pub channel_prefix: String,
}

impl Default for RedisSettings {
    fn default() -> Self {
        Self {
            url: String::new(),
            channel_prefix: "ws:".into(),
        }
    }
}

impl RedisSettings {
    /// Checks `[redis]`: a `redis://` or `rediss://` URL (or none), and a channel prefix.
    pub(super) fn validate(&self) -> Result<(), SettingsError> {
        let has_scheme = ["redis://", "rediss://"]
            .iter()
            .any(|scheme| self.url.len() > scheme.len() && self.url.starts_with(scheme));
        if !self.url.is_empty() && !has_scheme {
            return Err(SettingsError::invalid(
                "redis.url",
                "expected redis://host[:port][/db] or rediss://…, or empty for the in-process broker",
            ));
        }
        if self.channel_prefix.is_empty() {
            return Err(SettingsError::invalid(
                "redis.channel_prefix",
                "must not be empty",
            ));
        }
        Ok(())
    }
}
