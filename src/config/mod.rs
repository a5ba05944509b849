//! Settings: every key of `settings.toml`, its default, where it is read from and what values it
//! accepts.
//!
//! [`Settings::load`] layers the defaults, then the TOML file, then `WS__SECTION__KEY`
//! environment variables (e.g. `WS__REDIS__URL` sets `redis.url`). [`Settings::validate`] then
//! checks every value. Every error is one line that names the offending key, so that bad
//! configuration stops start-up with a message an operator can act on; an unknown key is an
//! error too, so that a typo never silently does nothing.
//!
//! # Layout
//! - `load` — file lookup, the layered build and its errors (unknown keys refused).
//! - `env` — the `WS__SECTION__KEY` variables and the keys they name.
//! - `de` — lists and maps read from TOML or from one environment string.
//! - `validate` — [`Settings::validate`] and the rules every section shares.
//! - `error` — [`SettingsError`].
//! - `server`, `auth`, `redis`, `limits`, `history`, `console`, `shutdown`, `api`, `telemetry`,
//!   `kafka` — one `[section]` each: its keys, their defaults and their rules.

mod api;
mod auth;
mod console;
mod de;
mod env;
mod error;
mod history;
mod kafka;
mod limits;
mod load;
mod redis;
mod server;
mod shutdown;
mod telemetry;
mod validate;

#[cfg(test)]
mod test_support;
#[cfg(test)]
mod tests;

use serde::Deserialize;

pub use self::api::ApiSettings;
pub use self::auth::AuthSettings;
pub use self::console::ConsoleSettings;
pub use self::env::{ENV_PREFIX, ENV_SEPARATOR};
pub use self::error::SettingsError;
pub use self::history::HistorySettings;
pub use self::kafka::{KafkaRoute, KafkaSettings};
pub use self::limits::{LimitSettings, QuotaScope};
pub use self::load::FILE_NAME;
pub use self::redis::RedisSettings;
pub use self::server::ServerSettings;
pub use self::shutdown::ShutdownSettings;
pub use self::telemetry::{LogFormat, TelemetrySettings, TraceUserId};

/// All settings; each field is one `[section]` of `settings.toml`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Settings {
    /// `[server]`: listening socket and WebSocket endpoint.
    pub server: ServerSettings,
    /// `[auth]`: JWT validation.
    pub auth: AuthSettings,
    /// `[redis]`: the broker.
    pub redis: RedisSettings,
    /// `[limits]`: quotas and timeouts.
    pub limits: LimitSettings,
    /// `[history]`: per-user history, durable publishing and resume.
    pub history: HistorySettings,
    /// `[console]`: the operator console.
    pub console: ConsoleSettings,
    /// `[shutdown]`: the drain on SIGTERM.
    pub shutdown: ShutdownSettings,
    /// `[api]`: the publish API.
    pub api: ApiSettings,
    /// `[telemetry]`: logs and traces.
    pub telemetry: TelemetrySettings,
    /// `[kafka]`: the Kafka ingest (off while `kafka.brokers` is empty).
    #[serde(default)]
    pub kafka: KafkaSettings,
}

/// `[redacted]` for a set secret, `""` for an unset one (what `Debug` shows of a secret).
fn redacted(secret: &str) -> &'static str {
    if secret.is_empty() {
        ""
    } else {
        "[redacted]"
    }
}
