//! `[console]`: the operator console at `/console` and its admin API key.

use std::fmt;

use serde::Deserialize;

use super::{redacted, SettingsError};

/// Shortest admin key accepted.
const MIN_KEY_BYTES: usize = 16;

/// `[console]`: the operator console. `Debug` never shows the key.
#[derive(Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ConsoleSettings {
    /// Serve `/console` and the admin API.
    pub enabled: bool,
    /// The admin key (`Authorization: Bearer <admin_key>`); required when enabled.
    pub admin_key: String,
    /// `--dev` only (never read from settings): the "try it" page may mint tokens for the demo
    /// user.
    #[serde(skip)]
    pub demo_tokens: bool,
}

impl fmt::Debug for ConsoleSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ConsoleSettings")
            .field("enabled", &self.enabled)
            .field("admin_key", &redacted(&self.admin_key))
            .field("demo_tokens", &self.demo_tokens)
            .finish()
    }
}

impl ConsoleSettings {
    /// Checks `[console]`: an admin key of at least 16 bytes when the console is on. `dev`
    /// allows a missing key (the caller makes a random one).
    pub(super) fn validate(&self, dev: bool) -> Result<(), SettingsError> {
        if !self.enabled || (dev && self.admin_key.is_empty()) {
            return Ok(());
        }
        if self.admin_key.is_empty() {
            return Err(SettingsError::invalid(
                "console.admin_key",
                "required when console.enabled is true (WS__CONSOLE__ADMIN_KEY)",
            ));
        }
        if self.admin_key.len() < MIN_KEY_BYTES {
            let reason = format!("must be at least {MIN_KEY_BYTES} bytes");
            return Err(SettingsError::invalid("console.admin_key", reason));
        }
        Ok(())
    }
}
