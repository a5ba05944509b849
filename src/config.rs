//! Settings: every key of `settings.toml`, its default, where it is read from and what values it
//! accepts.
//!
//! [`Settings::load`] layers the defaults, then the TOML file, then `WS__SECTION__KEY`
//! environment variables (e.g. `WS__REDIS__URL` sets `redis.url`). [`Settings::validate`] then
//! checks every value. Every error is one line that names the offending key, so that bad
//! configuration stops start-up with a message an operator can act on; an unknown key is an
//! error too, so that a typo never silently does nothing.

use std::collections::HashMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use config::{Config, ConfigError, Environment, File, FileFormat};
use serde::de::{self, Deserializer, SeqAccess, Visitor};
use serde::Deserialize;

use crate::auth::{self, TokenValidator};

/// Name of the settings file looked for when no path is given.
pub const FILE_NAME: &str = "settings.toml";
/// Prefix of the environment overrides: `WS__SECTION__KEY`.
pub const ENV_PREFIX: &str = "WS";
/// Separator between prefix, section and key in environment overrides.
pub const ENV_SEPARATOR: &str = "__";

/// Smallest accepted `server.max_frame_bytes`.
const MIN_FRAME_BYTES: usize = 1024;
/// Largest accepted duration setting (one year): larger values overflow timer arithmetic.
const MAX_SECONDS: u64 = 365 * 24 * 3600;
/// Settings whose values must never appear in an error message.
const SECRET_KEYS: [&str; 2] = ["auth.jwt_secret", "api.publish_api_key"];

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
    /// `[shutdown]`: the drain on SIGTERM.
    pub shutdown: ShutdownSettings,
    /// `[api]`: the publish API.
    pub api: ApiSettings,
    /// `[telemetry]`: logs and traces.
    pub telemetry: TelemetrySettings,
}

/// `[server]`: listening socket and WebSocket endpoint.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ServerSettings {
    /// Address to listen on, `host:port`.
    pub bind: String,
    /// Path of the WebSocket endpoint; starts with `/`.
    pub ws_path: String,
    /// HTTP worker threads; 0 = one per CPU core.
    pub workers: usize,
    /// Largest client frame (and reassembled message), in bytes.
    pub max_frame_bytes: usize,
    /// Browser origins allowed to connect (`scheme://host[:port]`); empty allows every origin.
    #[serde(deserialize_with = "string_list")]
    pub allowed_origins: Vec<String>,
}

impl Default for ServerSettings {
    fn default() -> Self {
        Self {
            bind: "0.0.0.0:8080".into(),
            ws_path: "/ws".into(),
            workers: 0,
            max_frame_bytes: 65536,
            allowed_origins: Vec::new(),
        }
    }
}

/// `[auth]`: JWT validation. `Debug` never shows the secret.
#[derive(Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AuthSettings {
    /// Shared secret of the HMAC algorithms (HS256, HS384, HS512); at least 16 bytes.
    pub jwt_secret: String,
    /// PEM public key file of the RSA, EC or EdDSA algorithms.
    pub jwt_public_key_file: String,
    /// Accepted `alg` values, all of one key type.
    #[serde(deserialize_with = "string_list")]
    pub algorithms: Vec<String>,
    /// Required `iss` claim; empty = not checked.
    pub issuer: String,
    /// Required `aud` claim; empty = not checked.
    pub audience: String,
    /// Clock skew tolerated on `exp` and `nbf`, in seconds.
    pub leeway_s: u64,
    /// Close a session (code 4001) when its token expires.
    pub close_on_expiry: bool,
}

impl Default for AuthSettings {
    fn default() -> Self {
        Self {
            jwt_secret: String::new(),
            jwt_public_key_file: String::new(),
            algorithms: vec!["HS256".into()],
            issuer: String::new(),
            audience: String::new(),
            leeway_s: 0,
            close_on_expiry: true,
        }
    }
}

impl fmt::Debug for AuthSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AuthSettings")
            .field("jwt_secret", &redacted(&self.jwt_secret))
            .field("jwt_public_key_file", &self.jwt_public_key_file)
            .field("algorithms", &self.algorithms)
            .field("issuer", &self.issuer)
            .field("audience", &self.audience)
            .field("leeway_s", &self.leeway_s)
            .field("close_on_expiry", &self.close_on_expiry)
            .finish()
    }
}

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
        }
    }
}

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

/// `[api]`: the publish API. `Debug` never shows the key.
#[derive(Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ApiSettings {
    /// Key of `POST /api/v1/publish`; empty = the endpoint is disabled.
    pub publish_api_key: String,
}

impl fmt::Debug for ApiSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ApiSettings")
            .field("publish_api_key", &redacted(&self.publish_api_key))
            .finish()
    }
}

/// `[telemetry]`: logs and traces.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
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
}

impl Default for TelemetrySettings {
    fn default() -> Self {
        Self {
            service_name: "websocket-service".into(),
            otlp_endpoint: String::new(),
            log_format: LogFormat::Json,
            trace_user_id: TraceUserId::Hash,
        }
    }
}

/// What spans record of the user: `"hash"` (a stable 64-bit hash, to correlate a user's
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

/// Why settings could not be loaded or are not valid. `Display` is one line naming the key.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SettingsError {
    /// The settings file could not be read.
    #[error("cannot read config file {path:?}: {reason}")]
    ReadFile {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        reason: String,
    },
    /// The settings file is not valid TOML.
    #[error("invalid config file {path:?}: {reason}")]
    Syntax {
        /// The file.
        path: PathBuf,
        /// The parse error, on one line.
        reason: String,
    },
    /// A key that is no setting (usually a typo).
    #[error("unknown setting {key}: {reason}")]
    Unknown {
        /// `section.key`.
        key: String,
        /// Where it was found and what was expected.
        reason: String,
    },
    /// A value of the wrong type or out of range.
    #[error("invalid setting {key}: {reason}")]
    Invalid {
        /// `section.key`.
        key: String,
        /// What is wrong.
        reason: String,
    },
    /// A required value is not set.
    #[error("missing setting {key}: {reason}")]
    Missing {
        /// `section.key`.
        key: String,
        /// How to provide it.
        reason: String,
    },
    /// A file named by a setting could not be read.
    #[error("cannot read {key} {path:?}: {reason}")]
    ReadKeyFile {
        /// `section.key`.
        key: String,
        /// The file.
        path: PathBuf,
        /// The I/O error.
        reason: String,
    },
    /// Any other failure of the settings sources.
    #[error("invalid settings: {0}")]
    Other(String),
}

impl SettingsError {
    /// The offending `section.key`, when there is one.
    pub fn key(&self) -> Option<&str> {
        match self {
            Self::Unknown { key, .. }
            | Self::Invalid { key, .. }
            | Self::Missing { key, .. }
            | Self::ReadKeyFile { key, .. } => Some(key),
            Self::ReadFile { .. } | Self::Syntax { .. } | Self::Other(_) => None,
        }
    }

    /// An out-of-range or ill-formed value of `key`.
    pub(crate) fn invalid(key: &str, reason: impl Into<String>) -> Self {
        Self::Invalid {
            key: key.into(),
            reason: reason.into(),
        }
    }

    /// A required `key` that is not set.
    pub(crate) fn missing(key: &str, reason: impl Into<String>) -> Self {
        Self::Missing {
            key: key.into(),
            reason: reason.into(),
        }
    }

    /// The file named by `key` could not be read.
    pub(crate) fn read_key_file(key: &str, path: &Path, error: &std::io::Error) -> Self {
        Self::ReadKeyFile {
            key: key.into(),
            path: path.into(),
            reason: io_reason(error),
        }
    }
}

impl Settings {
    /// Reads defaults, then the TOML file, then `WS__SECTION__KEY` environment variables.
    ///
    /// `path = Some(p)`: `p` must exist and parse. `None`: `./settings.toml` if it exists, else
    /// `settings.toml` next to the current executable if it exists, else defaults only.
    pub fn load(path: Option<&Path>) -> Result<Settings, SettingsError> {
        Self::load_from(path, process_env()?)
    }

    /// Like [`Settings::load`], with `env` in place of the process environment.
    pub fn load_from(
        path: Option<&Path>,
        env: HashMap<String, String>,
    ) -> Result<Settings, SettingsError> {
        let file = path.map(Path::to_path_buf).or_else(default_file);
        build(file.as_deref(), env)
    }

    /// Checks every value. `dev = true` allows a missing `auth.jwt_secret` (the caller fills a
    /// random one). Reads `auth.jwt_public_key_file` when one is needed.
    pub fn validate(&self, dev: bool) -> Result<(), SettingsError> {
        self.server.validate()?;
        self.auth.validate(dev)?;
        self.redis.validate()?;
        self.limits.validate()?;
        self.shutdown.validate()?;
        self.telemetry.validate()
    }
}

impl ServerSettings {
    fn validate(&self) -> Result<(), SettingsError> {
        if !is_bind_address(&self.bind) {
            let reason = format!("expected host:port, got {:?}", self.bind);
            return Err(SettingsError::invalid("server.bind", reason));
        }
        if !self.ws_path.starts_with('/') || self.ws_path.contains(['?', '#', ' ']) {
            let reason = format!(
                "expected a path starting with \"/\" (no space, ? or #), got {:?}",
                self.ws_path
            );
            return Err(SettingsError::invalid("server.ws_path", reason));
        }
        at_least(
            "server.max_frame_bytes",
            self.max_frame_bytes,
            MIN_FRAME_BYTES,
        )?;
        match self.allowed_origins.iter().find(|o| !is_origin(o)) {
            Some(origin) => Err(SettingsError::invalid(
                "server.allowed_origins",
                format!("expected scheme://host[:port] (no path), got {origin:?}"),
            )),
            None => Ok(()),
        }
    }
}

impl AuthSettings {
    fn validate(&self, dev: bool) -> Result<(), SettingsError> {
        if !self.jwt_secret.is_empty() {
            auth::check_secret(&self.jwt_secret)?;
        }
        match TokenValidator::from_settings(self) {
            Err(SettingsError::Missing { key, .. }) if dev && key == "auth.jwt_secret" => Ok(()),
            result => result.map(drop),
        }
    }
}

impl RedisSettings {
    fn validate(&self) -> Result<(), SettingsError> {
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

impl LimitSettings {
    fn validate(&self) -> Result<(), SettingsError> {
        at_least(
            "limits.max_connections_per_user",
            self.max_connections_per_user,
            1,
        )?;
        at_least("limits.max_connections", self.max_connections, 1)?;
        seconds("limits.idle_timeout_s", self.idle_timeout_s)?;
        seconds("limits.heartbeat_interval_s", self.heartbeat_interval_s)?;
        seconds("limits.heartbeat_timeout_s", self.heartbeat_timeout_s)?;
        at_least("limits.send_queue_max", self.send_queue_max, 1)
    }
}

impl ShutdownSettings {
    fn validate(&self) -> Result<(), SettingsError> {
        seconds("shutdown.drain_timeout_s", self.drain_timeout_s)
    }
}

impl TelemetrySettings {
    fn validate(&self) -> Result<(), SettingsError> {
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
        Ok(())
    }
}

/// `[redacted]` for a set secret, `""` for an unset one.
fn redacted(secret: &str) -> &'static str {
    if secret.is_empty() {
        ""
    } else {
        "[redacted]"
    }
}

/// Fails unless `value >= min`.
fn at_least<T: PartialOrd + fmt::Display>(
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
fn seconds(key: &str, value: u64) -> Result<(), SettingsError> {
    at_least(key, value, 1)?;
    if value > MAX_SECONDS {
        let reason = format!("must be at most {MAX_SECONDS} (one year), got {value}");
        return Err(SettingsError::invalid(key, reason));
    }
    Ok(())
}

/// `ip:port`, `[v6]:port` or `hostname:port`.
fn is_bind_address(bind: &str) -> bool {
    if bind.parse::<SocketAddr>().is_ok() {
        return true;
    }
    bind.rsplit_once(':')
        .is_some_and(|(host, port)| is_hostname(host) && port.parse::<u16>().is_ok())
}

/// A DNS name or IPv4 literal: letters, digits, `-`, `.`, `_`.
fn is_hostname(host: &str) -> bool {
    !host.is_empty()
        && host
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '_'))
}

/// `scheme://host[:port]`, as browsers send in `Origin` (no path, no trailing slash).
fn is_origin(origin: &str) -> bool {
    let Some((scheme, authority)) = origin.split_once("://") else {
        return false;
    };
    let scheme_ok = scheme.starts_with(|c: char| c.is_ascii_alphabetic())
        && scheme
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'));
    let (host, port) = match authority.strip_prefix('[') {
        Some(v6) => match v6.split_once(']') {
            Some((ip, rest)) => (ip.parse::<std::net::Ipv6Addr>().is_ok(), rest),
            None => (false, ""),
        },
        None => {
            let (host, port) = authority.split_at(authority.find(':').unwrap_or(authority.len()));
            (is_hostname(host), port)
        }
    };
    let port_ok = match port.strip_prefix(':') {
        Some(port) => port.parse::<u16>().is_ok(),
        None => port.is_empty(),
    };
    scheme_ok && host && port_ok
}

/// A list given either as a sequence (TOML) or as one comma-separated string (environment).
fn string_list<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Vec<String>, D::Error> {
    deserializer.deserialize_any(StringList)
}

struct StringList;

impl<'de> Visitor<'de> for StringList {
    type Value = Vec<String>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a list of strings or a comma-separated string")
    }

    fn visit_str<E: de::Error>(self, value: &str) -> Result<Self::Value, E> {
        Ok(value
            .split(',')
            .map(str::trim)
            .filter(|item| !item.is_empty())
            .map(String::from)
            .collect())
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        let mut items = Vec::new();
        while let Some(item) = seq.next_element::<String>()? {
            items.push(item);
        }
        Ok(items)
    }
}

/// The `WS__…` variables of the process (a non-UTF-8 value is an error, not silently skipped).
fn process_env() -> Result<HashMap<String, String>, SettingsError> {
    let mut env = HashMap::new();
    for (name, value) in std::env::vars_os() {
        let Some(name) = name.to_str().filter(|n| is_override(n)) else {
            continue;
        };
        let value = value.into_string().map_err(|_| {
            SettingsError::invalid(&setting_of(name), format!("{name} is not valid UTF-8"))
        })?;
        env.insert(name.to_owned(), value);
    }
    Ok(env)
}

/// `WS__…`, in any case (keys from the environment are case-insensitive).
fn is_override(name: &str) -> bool {
    let prefix = format!("{ENV_PREFIX}{ENV_SEPARATOR}");
    name.get(..prefix.len())
        .is_some_and(|head| head.eq_ignore_ascii_case(&prefix))
}

/// `WS__SECTION__KEY` → `section.key`.
fn setting_of(var: &str) -> String {
    let prefix_len = ENV_PREFIX.len() + ENV_SEPARATOR.len();
    var.get(prefix_len..)
        .unwrap_or_default()
        .to_lowercase()
        .replace(ENV_SEPARATOR, ".")
}

/// `section.key` (or `section.key[2]`) → `WS__SECTION__KEY`.
fn var_of(key: &str) -> String {
    let key = key.split('[').next().unwrap_or(key);
    let path = key.replace('.', ENV_SEPARATOR).to_uppercase();
    format!("{ENV_PREFIX}{ENV_SEPARATOR}{path}")
}

/// `./settings.toml`, else `settings.toml` beside the executable, if either exists.
fn default_file() -> Option<PathBuf> {
    let local = PathBuf::from(FILE_NAME);
    if local.is_file() {
        return Some(local);
    }
    let beside = std::env::current_exe().ok()?.parent()?.join(FILE_NAME);
    beside.is_file().then_some(beside)
}

/// Where the layers came from, to say where a bad key was found.
struct Sources<'a> {
    file: Option<&'a Path>,
    env: HashMap<String, String>,
}

impl Sources<'_> {
    /// `from WS__X__Y` when the environment sets `key` (or a key below it), else `in "file"`.
    fn origin_of(&self, key: &str) -> Option<String> {
        let var = var_of(key);
        let below = format!("{var}{ENV_SEPARATOR}");
        let from_env = self.env.keys().find(|name| {
            name.eq_ignore_ascii_case(&var) || name.to_uppercase().starts_with(&below)
        });
        match (from_env, self.file) {
            (Some(name), _) => Some(format!("from {name}")),
            (None, Some(path)) => Some(format!("in {path:?}")),
            (None, None) => None,
        }
    }

    /// `origin_of(key)` as a ` (…)` suffix, or nothing.
    fn suffix(&self, key: &str) -> String {
        self.origin_of(key)
            .map(|origin| format!(" ({origin})"))
            .unwrap_or_default()
    }
}

/// Builds the layered configuration and deserializes it.
fn build(file: Option<&Path>, env: HashMap<String, String>) -> Result<Settings, SettingsError> {
    let mut builder = Config::builder();
    if let Some(path) = file {
        let text = std::fs::read_to_string(path).map_err(|error| SettingsError::ReadFile {
            path: path.into(),
            reason: io_reason(&error),
        })?;
        builder = builder.add_source(File::from_str(&text, FileFormat::Toml));
    }
    // Values stay strings (no `try_parsing`): `config` converts a string where a setting needs
    // a number or a boolean, and a numeric-looking secret such as "000123…" is kept verbatim.
    // Lists are split on commas by `string_list`.
    let overrides = Environment::with_prefix(ENV_PREFIX)
        .separator(ENV_SEPARATOR)
        .source(Some(env.clone()));
    let sources = Sources { file, env };
    builder
        .add_source(overrides)
        .build()
        .and_then(Config::try_deserialize)
        .map_err(|error| settings_error(error, &sources))
}

/// Maps a `config` error to one line naming the key.
fn settings_error(error: ConfigError, sources: &Sources<'_>) -> SettingsError {
    match error {
        ConfigError::FileParse { cause, .. } => SettingsError::Syntax {
            path: sources.file.map(Path::to_path_buf).unwrap_or_default(),
            reason: one_line(&cause.to_string()),
        },
        ConfigError::Type {
            unexpected,
            expected,
            key: Some(key),
            ..
        } => {
            // Every integer setting is unsigned; `config` words it "an integer" for a bad string
            // and "an unsigned 64 bit or less integer" for a negative number.
            let expected = if expected.contains("integer") {
                "an unsigned integer"
            } else {
                expected
            };
            let got = if SECRET_KEYS.contains(&key.as_str()) {
                String::new()
            } else {
                format!(", got {unexpected}")
            };
            let reason = format!("expected {expected}{got}{}", sources.suffix(&key));
            SettingsError::Invalid { key, reason }
        }
        ConfigError::At {
            error,
            key: Some(key),
            ..
        } => nested_error(*error, key, sources),
        ConfigError::Message(message) => match unknown_field(&message) {
            Some((field, expected)) => unknown(field, &expected, sources),
            None => SettingsError::Other(one_line(&message)),
        },
        other => SettingsError::Other(one_line(&other.to_string())),
    }
}

/// An error raised inside the value of `key` (a section, or a key of a section).
fn nested_error(error: ConfigError, key: String, sources: &Sources<'_>) -> SettingsError {
    let message = one_line(&error.to_string());
    match unknown_field(&message) {
        Some((field, expected)) => unknown(format!("{key}.{field}"), &expected, sources),
        None => {
            let reason = format!("{message}{}", sources.suffix(&key));
            SettingsError::Invalid { key, reason }
        }
    }
}

fn unknown(key: String, expected: &str, sources: &Sources<'_>) -> SettingsError {
    let reason = match sources.origin_of(&key) {
        Some(origin) => format!("{origin}; {expected}"),
        None => expected.to_owned(),
    };
    SettingsError::Unknown { key, reason }
}

/// `("foo", "expected one of a, b")` from serde's "unknown field `foo`, expected one of `a`, `b`".
fn unknown_field(message: &str) -> Option<(String, String)> {
    let rest = message.strip_prefix("unknown field `")?;
    let (field, expected) = rest.split_once('`')?;
    let expected = expected.trim_start_matches(", ").replace('`', "");
    Some((field.to_owned(), expected))
}

/// Joins a multi-line message (TOML errors quote the offending line) into one line.
fn one_line(message: &str) -> String {
    message
        .lines()
        .map(str::trim)
        .filter(|line| !line.is_empty() && !is_snippet(line))
        .collect::<Vec<_>>()
        .join(": ")
}

/// A source excerpt line of a TOML error: `|`, `3 | key = value` or `|     ^`.
fn is_snippet(line: &str) -> bool {
    line.trim_start_matches(|c: char| c.is_ascii_digit())
        .trim_start()
        .starts_with('|')
}

/// An I/O error without the `(os error N)` suffix.
fn io_reason(error: &std::io::Error) -> String {
    let text = error.to_string();
    match text.split_once(" (os error") {
        Some((reason, _)) => reason.to_owned(),
        None => text,
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write as _;

    use super::*;

    const SECRET: &str = "0123456789abcdef0123456789abcdef";

    fn env(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    /// A settings file in a temporary directory (kept alive by the returned guard).
    fn toml_file(text: &str) -> (tempfile::TempDir, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("settings.toml");
        std::fs::File::create(&path)
            .unwrap()
            .write_all(text.as_bytes())
            .unwrap();
        (dir, path)
    }

    /// Loads `text` as the settings file with `vars` as the environment.
    fn load(text: &str, vars: &[(&str, &str)]) -> Result<Settings, SettingsError> {
        let (_dir, path) = toml_file(text);
        Settings::load_from(Some(&path), env(vars))
    }

    /// Asserts the error is one line and names `key`; returns its text.
    fn assert_names(error: &SettingsError, key: &str) -> String {
        let text = error.to_string();
        assert!(!text.contains('\n'), "not one line: {text:?}");
        assert!(text.contains(key), "{text:?} does not name {key}");
        text
    }

    fn valid() -> Settings {
        let mut settings = Settings::default();
        settings.auth.jwt_secret = SECRET.into();
        settings
    }

    #[test]
    fn defaults_load_without_file_or_environment() {
        let settings = build(None, HashMap::new()).unwrap();
        assert_eq!(settings, Settings::default());
        assert_eq!(settings.server.bind, "0.0.0.0:8080");
        assert_eq!(settings.server.ws_path, "/ws");
        assert_eq!(settings.auth.algorithms, ["HS256"]);
        assert!(settings.auth.close_on_expiry);
        assert_eq!(settings.redis.channel_prefix, "ws:");
        assert_eq!(settings.limits.max_connections, 100_000);
        assert_eq!(settings.shutdown.drain_timeout_s, 30);
        assert_eq!(settings.telemetry.log_format, LogFormat::Json);
    }

    #[test]
    fn the_file_overrides_defaults() {
        let settings = load(
            "[server]\nbind = \"127.0.0.1:9000\"\nallowed_origins = [\"https://a.example\"]\n\
             [limits]\nmax_connections = 7\n[telemetry]\nlog_format = \"pretty\"\n",
            &[],
        )
        .unwrap();
        assert_eq!(settings.server.bind, "127.0.0.1:9000");
        assert_eq!(settings.server.allowed_origins, ["https://a.example"]);
        assert_eq!(settings.limits.max_connections, 7);
        assert_eq!(
            settings.limits.max_connections_per_user, 10,
            "untouched key keeps its default"
        );
        assert_eq!(settings.telemetry.log_format, LogFormat::Pretty);
    }

    #[test]
    fn trace_user_id_is_hash_or_omit() {
        let settings = load("[telemetry]\ntrace_user_id = \"omit\"\n", &[]).unwrap();
        assert_eq!(settings.telemetry.trace_user_id, TraceUserId::Omit);
        assert_eq!(
            TelemetrySettings::default().trace_user_id,
            TraceUserId::Hash
        );
        assert!(load("[telemetry]\ntrace_user_id = \"plain\"\n", &[]).is_err());
    }

    #[test]
    fn the_environment_overrides_the_file() {
        let settings = load(
            "[limits]\nmax_connections = 7\n[redis]\nurl = \"redis://file:6379\"\n",
            &[
                ("WS__LIMITS__MAX_CONNECTIONS", "5"),
                ("ws__redis__url", ""),
                ("WS__AUTH__CLOSE_ON_EXPIRY", "false"),
                ("OTHER__LIMITS__MAX_CONNECTIONS", "9"),
            ],
        )
        .unwrap();
        assert_eq!(settings.limits.max_connections, 5);
        assert_eq!(settings.redis.url, "", "an empty variable clears the value");
        assert!(!settings.auth.close_on_expiry);
    }

    #[test]
    fn environment_lists_are_comma_separated() {
        let settings = build(
            None,
            env(&[
                (
                    "WS__SERVER__ALLOWED_ORIGINS",
                    "https://a.example, https://b.example:8443",
                ),
                ("WS__AUTH__ALGORITHMS", "RS256"),
            ]),
        )
        .unwrap();
        assert_eq!(
            settings.server.allowed_origins,
            ["https://a.example", "https://b.example:8443"]
        );
        assert_eq!(settings.auth.algorithms, ["RS256"]);
    }

    #[test]
    fn environment_strings_are_kept_verbatim() {
        let vars = [
            ("WS__AUTH__JWT_SECRET", "00012345678901234567890"),
            ("WS__API__PUBLISH_API_KEY", "1e3"),
            ("WS__AUTH__ISSUER", "true"),
        ];
        let settings = build(None, env(&vars)).unwrap();
        assert_eq!(settings.auth.jwt_secret, "00012345678901234567890");
        assert_eq!(settings.api.publish_api_key, "1e3");
        assert_eq!(settings.auth.issuer, "true");
    }

    #[test]
    fn a_bad_integer_in_the_environment_names_the_key_and_variable() {
        let error = build(None, env(&[("WS__LIMITS__MAX_CONNECTIONS", "abc")])).unwrap_err();
        let text = assert_names(&error, "limits.max_connections");
        assert_eq!(error.key(), Some("limits.max_connections"));
        assert!(
            text.starts_with(
                "invalid setting limits.max_connections: expected an unsigned integer"
            ),
            "{text}"
        );
        assert!(
            text.contains("\"abc\"") && text.contains("WS__LIMITS__MAX_CONNECTIONS"),
            "{text}"
        );
    }

    #[test]
    fn a_bad_value_in_the_file_names_the_key_and_file() {
        let error = load("[limits]\nidle_timeout_s = -1\n", &[]).unwrap_err();
        let text = assert_names(&error, "limits.idle_timeout_s");
        assert!(text.contains("settings.toml"), "{text}");
        let error = load("[telemetry]\nlog_format = \"xml\"\n", &[]).unwrap_err();
        let text = assert_names(&error, "telemetry.log_format");
        assert!(text.contains("\"json\" or \"pretty\""), "{text}");
        let error = load("[auth]\njwt_secret = [\"x\"]\n", &[]).unwrap_err();
        assert_names(&error, "auth.jwt_secret");
    }

    #[test]
    fn unknown_keys_are_errors_naming_them() {
        let error = load("[auth]\njwt_secre = \"x\"\n", &[]).unwrap_err();
        let text = assert_names(&error, "unknown setting auth.jwt_secre");
        assert!(text.contains("jwt_secret"), "lists the valid keys: {text}");
        let error = load("[serverr]\nbind = \"x\"\n", &[]).unwrap_err();
        assert_eq!(error.key(), Some("serverr"));
        let error = build(None, env(&[("WS__SERVER__BINDD", "x")])).unwrap_err();
        let text = assert_names(&error, "server.bindd");
        assert!(text.contains("WS__SERVER__BINDD"), "{text}");
    }

    #[test]
    fn file_errors_name_the_file() {
        let error = Settings::load_from(Some(Path::new("/nonexistent/x.toml")), HashMap::new())
            .unwrap_err();
        let text = error.to_string();
        assert!(
            text.starts_with("cannot read config file \"/nonexistent/x.toml\": "),
            "{text}"
        );
        let error = load("[server\nbind = 1\n", &[]).unwrap_err();
        let text = error.to_string();
        assert!(matches!(error, SettingsError::Syntax { .. }), "{text}");
        assert!(
            text.contains("settings.toml") && text.contains("line 1"),
            "{text}"
        );
        assert!(!text.contains('\n'), "{text:?}");
    }

    #[test]
    fn the_repository_settings_file_holds_the_defaults() {
        let (_dir, path) = toml_file(include_str!("../settings.toml"));
        let settings = Settings::load_from(Some(&path), HashMap::new()).unwrap();
        assert_eq!(settings, Settings::default());
        settings.validate(true).unwrap();
    }

    #[test]
    fn a_missing_secret_is_an_error_unless_dev() {
        let settings = Settings::default();
        let error = settings.validate(false).unwrap_err();
        assert_eq!(
            error.to_string(),
            "missing setting auth.jwt_secret: set it (or auth.jwt_public_key_file), or run with --dev"
        );
        settings.validate(true).unwrap();
        valid().validate(false).unwrap();
    }

    #[test]
    fn mixed_algorithm_families_are_refused() {
        let mut settings = valid();
        settings.auth.algorithms = vec!["HS256".into(), "RS256".into()];
        let error = settings.validate(true).unwrap_err();
        assert_names(&error, "auth.algorithms");
    }

    #[test]
    fn an_unreadable_key_file_is_named() {
        let mut settings = valid();
        settings.auth.algorithms = vec!["RS256".into()];
        settings.auth.jwt_public_key_file = "/nonexistent/key.pem".into();
        let error = settings.validate(false).unwrap_err();
        assert_eq!(
            error.to_string(),
            "cannot read auth.jwt_public_key_file \"/nonexistent/key.pem\": No such file or directory"
        );
    }

    #[test]
    fn every_rule_has_a_failing_case() {
        type Mutation = fn(&mut Settings);
        let cases: [(&str, Mutation); 30] = [
            ("server.bind", |s| s.server.bind = "8080".into()),
            ("server.bind", |s| s.server.bind = "host name:80".into()),
            ("server.bind", |s| s.server.bind = "localhost:99999".into()),
            ("server.ws_path", |s| s.server.ws_path = "ws".into()),
            ("server.max_frame_bytes", |s| {
                s.server.max_frame_bytes = 1023
            }),
            ("server.allowed_origins", |s| {
                s.server.allowed_origins = vec!["https://a.example/".into()]
            }),
            ("server.allowed_origins", |s| {
                s.server.allowed_origins = vec!["a.example".into()]
            }),
            ("server.allowed_origins", |s| {
                s.server.allowed_origins = vec!["https://a.example:x".into()]
            }),
            ("auth.algorithms", |s| s.auth.algorithms.clear()),
            ("auth.algorithms", |s| {
                s.auth.algorithms = vec!["none".into()]
            }),
            ("auth.algorithms", |s| {
                s.auth.algorithms = vec!["hs256".into()]
            }),
            ("auth.algorithms", |s| {
                s.auth.algorithms = vec!["RS256".into(), "ES256".into()]
            }),
            ("auth.jwt_secret", |s| s.auth.jwt_secret = "short".into()),
            ("auth.jwt_public_key_file", |s| {
                s.auth.algorithms = vec!["ES256".into()]
            }),
            ("auth.algorithms", |s| {
                s.auth.jwt_secret.clear();
                s.auth.jwt_public_key_file = "/k.pem".into();
            }),
            ("auth.leeway_s", |s| s.auth.leeway_s = 3601),
            ("redis.url", |s| {
                s.redis.url = "http://localhost:6379".into()
            }),
            ("redis.url", |s| s.redis.url = "redis://".into()),
            ("redis.channel_prefix", |s| s.redis.channel_prefix.clear()),
            ("limits.max_connections_per_user", |s| {
                s.limits.max_connections_per_user = 0
            }),
            ("limits.max_connections", |s| s.limits.max_connections = 0),
            ("limits.idle_timeout_s", |s| s.limits.idle_timeout_s = 0),
            ("limits.idle_timeout_s", |s| {
                s.limits.idle_timeout_s = u64::MAX
            }),
            ("limits.heartbeat_interval_s", |s| {
                s.limits.heartbeat_interval_s = 0
            }),
            ("limits.heartbeat_timeout_s", |s| {
                s.limits.heartbeat_timeout_s = 0
            }),
            ("limits.send_queue_max", |s| s.limits.send_queue_max = 0),
            ("shutdown.drain_timeout_s", |s| {
                s.shutdown.drain_timeout_s = 0
            }),
            ("telemetry.service_name", |s| {
                s.telemetry.service_name = " ".into()
            }),
            ("telemetry.otlp_endpoint", |s| {
                s.telemetry.otlp_endpoint = "collector:4317".into()
            }),
            ("auth.jwt_secret", |s| {
                s.auth.jwt_secret = "0123456789abcde".into()
            }),
        ];
        for (key, mutate) in cases {
            let mut settings = valid();
            mutate(&mut settings);
            let error = settings.validate(true).unwrap_err();
            assert_eq!(error.key(), Some(key), "{error}");
            assert_names(&error, key);
        }
    }

    #[test]
    fn boundary_values_are_accepted() {
        let mut settings = valid();
        settings.server.bind = "[::1]:0".into();
        settings.server.max_frame_bytes = 1024;
        settings.server.allowed_origins = vec![
            "https://app.example".into(),
            "http://localhost:3000".into(),
            "http://[::1]:8080".into(),
        ];
        settings.auth.jwt_secret = "0123456789abcdef".into();
        settings.auth.leeway_s = 3600;
        settings.redis.url = "rediss://user:pw@redis.example:6380/2".into();
        settings.limits.idle_timeout_s = MAX_SECONDS;
        settings.telemetry.otlp_endpoint = "http://collector:4317".into();
        settings.validate(false).unwrap();
        settings.server.bind = "localhost:8080".into();
        settings.validate(false).unwrap();
    }

    #[test]
    fn debug_hides_secrets() {
        let mut settings = valid();
        settings.api.publish_api_key = "publish-key-value".into();
        let text = format!("{settings:?}");
        assert!(
            !text.contains(SECRET) && !text.contains("publish-key-value"),
            "{text}"
        );
        assert!(text.contains("[redacted]"), "{text}");
        let text = format!("{:?}", Settings::default());
        assert!(
            !text.contains("[redacted]"),
            "unset secrets print as empty: {text}"
        );
    }

    #[test]
    fn variable_and_key_names_map_both_ways() {
        assert_eq!(
            setting_of("WS__LIMITS__MAX_CONNECTIONS"),
            "limits.max_connections"
        );
        assert_eq!(
            var_of("server.allowed_origins[1]"),
            "WS__SERVER__ALLOWED_ORIGINS"
        );
        assert!(is_override("ws__redis__url") && !is_override("WS_REDIS") && !is_override("W"));
    }
}
