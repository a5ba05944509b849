//! `[api]`: the publish API (its key and body timeout).

use std::fmt;

use serde::Deserialize;

use super::validate::seconds;
use super::{redacted, SettingsError};

/// `[api]`: the publish API. `Debug` never shows the key.
#[derive(Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ApiSettings {
    /// Key of `POST /api/v1/publish`; empty = the endpoint is disabled.
    pub publish_api_key: String,
    /// Longest a publish request's whole body may take to arrive (408 after).
    pub body_timeout_s: u64,
}

impl Default for ApiSettings {
    fn default() -> Self {
        Self {
            publish_api_key: String::new(),
            body_timeout_s: 10,
        }
    }
}

impl fmt::Debug for ApiSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ApiSettings")
            .field("publish_api_key", &redacted(&self.publish_api_key))
            .field("body_timeout_s", &self.body_timeout_s)
            .finish()
    }
}

impl ApiSettings {
    /// Checks `[api]`: the body timeout within a year.
    pub(super) fn validate(&self) -> Result<(), SettingsError> {
        seconds("api.body_timeout_s", self.body_timeout_s)
    }
}
