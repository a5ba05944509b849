//! `[history]`: the per-user message history behind durable publishing and protocol v2 resume.

use serde::Deserialize;

use super::validate::{at_least, seconds};
use super::SettingsError;

/// Most messages kept per user (a bound on Redis memory per user).
const MAX_SIZE: usize = 100_000;

/// `[history]`: durable publishing and resume.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HistorySettings {
    /// Messages kept per user; 0 turns history and positions off.
    pub size: usize,
    /// A quiet user's whole history expires after this many seconds.
    pub ttl_s: u64,
    /// Most messages sent on one resume; more than that answers `recovered:false`.
    pub max_replay: usize,
}

impl Default for HistorySettings {
    fn default() -> Self {
        Self {
            size: 100,
            ttl_s: 900,
            max_replay: 100,
        }
    }
}

impl HistorySettings {
    /// Whether durable publishing and positions are on.
    pub fn enabled(&self) -> bool {
        self.size > 0
    }

    /// Checks `[history]`: a bounded size, a TTL within a year, a replay of at least one.
    pub(super) fn validate(&self) -> Result<(), SettingsError> {
        if self.size > MAX_SIZE {
            let reason = format!("must be at most {MAX_SIZE}, got {}", self.size);
            return Err(SettingsError::invalid("history.size", reason));
        }
        if !self.enabled() {
            return Ok(());
        }
        seconds("history.ttl_s", self.ttl_s)?;
        at_least("history.max_replay", self.max_replay, 1)
    }
}
