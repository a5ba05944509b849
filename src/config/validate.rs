//! Validation: [`Settings::validate`] runs each section's rules in order (the first failure is
//! reported); the rules several sections share (counts, durations, addresses) live here.

use std::fmt;
use std::net::SocketAddr;

use super::{Settings, SettingsError};

/// Largest accepted duration setting (one year): larger values overflow timer arithmetic.
pub(super) const MAX_SECONDS: u64 = 365 * 24 * 3600;

impl Settings {
    /// Checks every value. `dev = true` allows a missing `auth.jwt_secret` (the caller fills a
    /// random one). Reads `auth.jwt_public_key_file` when one is needed.
    pub fn validate(&self, dev: bool) -> Result<(), SettingsError> {
        self.server.validate()?;
        self.auth.validate(dev)?;
        self.redis.validate()?;
        self.limits.validate()?;
        self.history.validate()?;
        self.console.validate(dev)?;
        self.shutdown.validate()?;
        self.api.validate()?;
        self.telemetry.validate()?;
        self.kafka.validate(&self.redis)
    }
}

/// Fails unless `value >= min`.
pub(super) fn at_least<T: PartialOrd + fmt::Display>(
    key: &str,
    value: T,
    min: T,
) -> Result<(), SettingsError> {
    if value < min {
        return Err(SettingsError::invalid(
            key,
            format!("must be at least {min}, got {value}"),
        ));
    }
    Ok(())
}

/// A duration in seconds: at least 1, at most [`MAX_SECONDS`].
pub(super) fn seconds(key: &str, value: u64) -> Result<(), SettingsError> {
    at_least(key, value, 1)?;
    if value > MAX_SECONDS {
        let reason = format!("must be at most {MAX_SECONDS} (one year), got {value}");
        return Err(SettingsError::invalid(key, reason));
    }
    Ok(())
}

/// Milliseconds: at least `min`, at most [`MAX_SECONDS`] worth.
pub(super) fn milliseconds(key: &str, value: u64, min: u64) -> Result<(), SettingsError> {
    at_least(key, value, min)?;
    if value > MAX_SECONDS * 1000 {
        let reason = format!(
            "must be at most {} (one year), got {value}",
            MAX_SECONDS * 1000
        );
        return Err(SettingsError::invalid(key, reason));
    }
    Ok(())
}

/// `ip:port`, `[v6]:port` or `hostname:port`.
pub(super) fn is_bind_address(bind: &str) -> bool {
    if bind.parse::<SocketAddr>().is_ok() {
        return true;
    }
    bind.rsplit_once(':')
        .is_some_and(|(host, port)| is_hostname(host) && port.parse::<u16>().is_ok())
}

/// A DNS name or IPv4 literal: letters, digits, `-`, `.`, `_`.
pub(super) fn is_hostname(host: &str) -> bool {
    !host.is_empty()
        && host
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '_'))
}

#[cfg(test)]
mod tests;
