//! `[shutdown]`: the drain on SIGTERM.

use serde::Deserialize;

use super::validate::seconds;
use super::SettingsError;

/// `[shutdown]`: the drain on SIGTERM.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ShutdownSettings {
    /// Time to close every session before exiting, in seconds.
    pub drain_timeout_s: u64,
}

impl Default for ShutdownSettings {
    fn default() -> Self {
        Self {
            drain_timeout_s: 30,
        }
    }
}

impl ShutdownSettings {
    /// Checks `[shutdown]`: the drain timeout within a year.
    pub(super) fn validate(&self) -> Result<(), SettingsError> {
        seconds("shutdown.drain_timeout_s", self.drain_timeout_s)
    }
}
