//! `[telemetry]`: the service name, log format, trace export, and what spans record of the user.

use std::fmt;

use serde::Deserialize;

use super::{redacted, SettingsError};
use crate::auth;

/// `[telemetry]`: logs and traces. `Debug` never shows the user-id hash key.
#[derive(Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TelemetrySettings {
    /// `service.name` of traces and the `service` field of error bodies.
    pub service_name: String,
    /// OTLP collector URL; empty = tracing export off.
    pub otlp_endpoint: String,
    /// Log line format.
    pub log_format: LogFormat,
    /// Whether the `websocket.connect` span carries a hash of the user id or nothing of it.
    pub trace_user_id: TraceUserId,
    /// Secret key of that hash (HMAC-SHA256), at least 16 bytes; empty = derived from
    /// `auth.jwt_secret`, or random per process when there is none.
    pub trace_user_id_key: String,
}

impl Default for TelemetrySettings {
    fn default() -> Self {
        Self {
            service_name: "websocket-service".into(),
            otlp_endpoint: String::new(),
            log_format: LogFormat::Json,
            trace_user_id: TraceUserId::Hash,
            trace_user_id_key: String::new(),
        }
    }
}

impl fmt::Debug for TelemetrySettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TelemetrySettings")
            .field("service_name", &self.service_name)
            .field("otlp_endpoint", &self.otlp_endpoint)
            .field("log_format", &self.log_format)
            .field("trace_user_id", &self.trace_user_id)
            .field("trace_user_id_key", &redacted(&self.trace_user_id_key))
            .finish()
    }
}

/// What spans record of the user: `"hash"` (a keyed 64-bit hash, to correlate a user's
/// connections) or `"omit"` (nothing).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(try_from = "String")]
pub enum TraceUserId {
    /// A hash of the user id.
    #[default]
    Hash,
    /// Nothing.
    Omit,
}

impl TryFrom<String> for TraceUserId {
    type Error = String;

    fn try_from(value: String) -> Result<Self, Self::Error> {
        match value.to_ascii_lowercase().as_str() {
            "hash" => Ok(Self::Hash),
            "omit" => Ok(Self::Omit),
            _ => Err(format!("expected \"hash\" or \"omit\", got {value:?}")),
        }
    }
}

/// Log line format: `"json"` (production) or `"pretty"` (a terminal).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(try_from = "String")]
pub enum LogFormat {
    /// One JSON object per line.
    #[default]
    Json,
    /// Human-readable lines.
    Pretty,
}

impl TryFrom<String> for LogFormat {
    type Error = String;

    fn try_from(value: String) -> Result<Self, Self::Error> {
        match value.to_ascii_lowercase().as_str() {
            "json" => Ok(Self::Json),
            "pretty" => Ok(Self::Pretty),
            _ => Err(format!("expected \"json\" or \"pretty\", got {value:?}")),
        }
    }
}

impl TelemetrySettings {
    /// Checks `[telemetry]`: a service name, an http(s) collector (or none), the hash key length.
    pub(super) fn validate(&self) -> Result<(), SettingsError> {
        if self.service_name.trim().is_empty() {
            return Err(SettingsError::invalid(
                "telemetry.service_name",
                "must not be empty",
            ));
        }
        let endpoint = &self.otlp_endpoint;
        let is_url = ["http://", "https://"]
            .iter()
            .any(|scheme| endpoint.starts_with(scheme));
        if !(endpoint.is_empty() || is_url) {
            let reason = format!("expected an http:// or https:// URL, or empty, got {endpoint:?}");
            return Err(SettingsError::invalid("telemetry.otlp_endpoint", reason));
        }
        let key = &self.trace_user_id_key;
        if !key.is_empty() && key.len() < auth::MIN_SECRET_BYTES {
            let reason = format!(
                "must be at least {} bytes, got {}",
                auth::MIN_SECRET_BYTES,
                key.len()
            );
            return Err(SettingsError::invalid(
                "telemetry.trace_user_id_key",
                reason,
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests;
