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

use crate::auth::{self, SetupError, TokenValidator, ValidatorOptions};

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
const SECRET_KEYS: [&str; 3] = [
    "auth.jwt_secret",
    "api.publish_api_key",
    "telemetry.trace_user_id_key",
];

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
    /// `[kafka]`: the Kafka ingest (off while `kafka.brokers` is empty).
    #[serde(default)]
    pub kafka: KafkaSettings,
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

/// `[kafka]`: the Kafka ingest. Platform events consumed from Kafka become notifications on
/// their user's channel; `routes` say which topics, which user and which fields. Off while
/// `brokers` is empty.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct KafkaSettings {
    /// Bootstrap servers, `host:port` each; empty = the ingest is off.
    #[serde(deserialize_with = "string_list")]
    pub brokers: Vec<String>,
    /// Consumer group (replicas share the partitions).
    pub group_id: String,
    /// Kafka client id.
    pub client_id: String,
    /// Topic that receives records that cannot become a notification; empty = none (they are
    /// still logged and counted).
    pub dead_letter_topic: String,
    /// `/readyz` answers 503 while the ingest is down or paused.
    pub required: bool,
    /// Where a group without a committed offset starts: `earliest` or `latest`.
    pub auto_offset_reset: String,
    /// How often the offsets of published events are committed, in milliseconds.
    pub commit_interval_ms: u64,
    /// Consumer group session timeout, in milliseconds.
    pub session_timeout_ms: u64,
    /// How long an event id is remembered to suppress duplicates, in seconds.
    pub dedupe_window_s: u64,
    /// Event ids remembered in process (with the in-process broker only).
    pub dedupe_cache_size: usize,
    /// Prefix of the dedupe keys in Redis.
    pub dedupe_key_prefix: String,
    /// Redis holding the `owner_redis_key` keys; empty = `redis.url`.
    pub owner_redis_url: String,
    /// How long a looked-up owner is cached, in seconds (0 = not cached).
    pub lookup_cache_ttl_s: u64,
    /// How many looked-up owners are cached.
    pub lookup_cache_size: usize,
    /// Timeout of one owner lookup, in milliseconds.
    pub lookup_timeout_ms: u64,
    /// How long one event waits for an unreachable owner lookup before it is dead-lettered, in
    /// seconds (0 = wait as long as it takes).
    pub lookup_give_up_s: u64,
    /// Longest wait between retries while Redis or a lookup is down, in milliseconds.
    pub backoff_max_ms: u64,
    /// After a Redis outage, wait this long once it is back before publishing the backlog (so
    /// every replica has re-subscribed), in milliseconds.
    pub resume_delay_ms: u64,
    /// Extra librdkafka properties, e.g. `"security.protocol" = "sasl_plaintext"`.
    #[serde(deserialize_with = "string_map")]
    pub properties: std::collections::BTreeMap<String, String>,
    /// The routes (`[[kafka.routes]]`); from the environment, a JSON array.
    #[serde(deserialize_with = "route_list")]
    pub routes: Vec<KafkaRoute>,
}

impl Default for KafkaSettings {
    fn default() -> Self {
        Self {
            brokers: Vec::new(),
            group_id: "websocket-service".into(),
            client_id: "websocket-service".into(),
            dead_letter_topic: String::new(),
            required: false,
            auto_offset_reset: "earliest".into(),
            commit_interval_ms: 1000,
            session_timeout_ms: 45_000,
            dedupe_window_s: 86_400,
            dedupe_cache_size: 100_000,
            dedupe_key_prefix: "ws:ingest:seen:".into(),
            owner_redis_url: String::new(),
            lookup_cache_ttl_s: 300,
            lookup_cache_size: 10_000,
            lookup_timeout_ms: 2000,
            lookup_give_up_s: 60,
            backoff_max_ms: 5000,
            resume_delay_ms: 5000,
            properties: std::collections::BTreeMap::new(),
            routes: Vec::new(),
        }
    }
}

/// One `[[kafka.routes]]` entry: a topic (and optionally one `event_type` on it), the
/// notification's `event` name, the `data` fields it carries and how its user is found (exactly
/// one of `user_pointer`, `owner_redis_key`, `owner_http_url`).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KafkaRoute {
    /// Kafka topic.
    pub topic: String,
    /// Envelope `event_type` taken by this route; empty = any type on the topic.
    #[serde(default)]
    pub event_type: String,
    /// The notification's `event` name.
    pub event: String,
    /// `data` fields copied into the notification; empty = all of `data`.
    #[serde(default, deserialize_with = "string_list")]
    pub fields: Vec<String>,
    /// JSON pointer to the user id in the envelope, e.g. `/metadata/user_id`.
    #[serde(default)]
    pub user_pointer: String,
    /// Redis key holding the user id, with `{field}`s from `data`, e.g. `batch_owner:{batch_id}`.
    #[serde(default)]
    pub owner_redis_key: String,
    /// HTTP URL answering `{"user_id": …}` (404: none), with `{field}`s from `data`.
    #[serde(default)]
    pub owner_http_url: String,
}

/// librdkafka properties the ingest sets itself (its delivery guarantee depends on them).
const MANAGED_KAFKA_PROPERTIES: [&str; 5] = [
    "bootstrap.servers",
    "group.id",
    "enable.auto.commit",
    "enable.auto.offset.store",
    "enable.partition.eof",
];

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
        self.api.validate()?;
        self.telemetry.validate()?;
        self.kafka.validate(&self.redis)
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
    /// The token validator of these settings: reads `auth.jwt_public_key_file` when one is
    /// needed.
    pub fn token_validator(&self) -> Result<TokenValidator, SettingsError> {
        TokenValidator::new(&self.validator_options()).map_err(auth_settings_error)
    }

    fn validator_options(&self) -> ValidatorOptions {
        ValidatorOptions {
            secret: self.jwt_secret.clone(),
            public_key_file: self.jwt_public_key_file.clone(),
            algorithms: self.algorithms.clone(),
            issuer: self.issuer.clone(),
            audience: self.audience.clone(),
            leeway_s: self.leeway_s,
        }
    }

    fn validate(&self, dev: bool) -> Result<(), SettingsError> {
        if !self.jwt_secret.is_empty() {
            auth::check_secret(&self.jwt_secret).map_err(auth_settings_error)?;
        }
        match TokenValidator::new(&self.validator_options()) {
            Err(SetupError::NoSecret) if dev => Ok(()),
            result => result.map(drop).map_err(auth_settings_error),
        }
    }
}

/// Names the `[auth]` setting an auth [`SetupError`] is about.
fn auth_settings_error(error: SetupError) -> SettingsError {
    const SECRET: &str = "auth.jwt_secret";
    const KEY_FILE: &str = "auth.jwt_public_key_file";
    match error {
        SetupError::UnknownAlgorithm { .. }
        | SetupError::NoAlgorithm
        | SetupError::MixedKeyTypes { .. }
        | SetupError::KeyFileForHmac { .. } => {
            SettingsError::invalid("auth.algorithms", error.to_string())
        }
        SetupError::LeewayTooLarge { .. } => {
            SettingsError::invalid("auth.leeway_s", error.to_string())
        }
        SetupError::NoSecret => SettingsError::missing(SECRET, error.to_string()),
        SetupError::ShortSecret { .. } => SettingsError::invalid(SECRET, error.to_string()),
        SetupError::NoKeyFile { .. } => SettingsError::missing(KEY_FILE, error.to_string()),
        SetupError::ReadKeyFile { path, source } => {
            SettingsError::read_key_file(KEY_FILE, &path, &source)
        }
        SetupError::BadKeyFile { .. }
        | SetupError::WrongKeyType { .. }
        | SetupError::UnusableKey { .. } => SettingsError::invalid(KEY_FILE, error.to_string()),
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

impl ApiSettings {
    fn validate(&self) -> Result<(), SettingsError> {
        seconds("api.body_timeout_s", self.body_timeout_s)
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

impl KafkaSettings {
    /// True when the ingest runs.
    pub fn enabled(&self) -> bool {
        !self.brokers.is_empty()
    }

    fn validate(&self, redis: &RedisSettings) -> Result<(), SettingsError> {
        if !self.enabled() {
            return Ok(());
        }
        if !cfg!(feature = "kafka") {
            return Err(SettingsError::invalid(
                "kafka.brokers",
                "this build has no Kafka support (cargo feature `kafka`); leave it empty",
            ));
        }
        if let Some(broker) = self.brokers.iter().find(|b| !is_bind_address(b)) {
            let reason = format!("expected host:port, got {broker:?}");
            return Err(SettingsError::invalid("kafka.brokers", reason));
        }
        for (key, value) in [
            ("kafka.group_id", &self.group_id),
            ("kafka.client_id", &self.client_id),
            ("kafka.dedupe_key_prefix", &self.dedupe_key_prefix),
        ] {
            if value.trim().is_empty() {
                return Err(SettingsError::invalid(key, "must not be empty"));
            }
        }
        if !self.dead_letter_topic.is_empty() {
            topic_name("kafka.dead_letter_topic", &self.dead_letter_topic)?;
        }
        if !matches!(self.auto_offset_reset.as_str(), "earliest" | "latest") {
            let reason = format!(
                "expected \"earliest\" or \"latest\", got {:?}",
                self.auto_offset_reset
            );
            return Err(SettingsError::invalid("kafka.auto_offset_reset", reason));
        }
        milliseconds("kafka.commit_interval_ms", self.commit_interval_ms, 1)?;
        milliseconds("kafka.session_timeout_ms", self.session_timeout_ms, 1000)?;
        seconds("kafka.dedupe_window_s", self.dedupe_window_s)?;
        at_least("kafka.dedupe_cache_size", self.dedupe_cache_size, 1)?;
        at_least("kafka.lookup_cache_size", self.lookup_cache_size, 1)?;
        if self.lookup_cache_ttl_s > 0 {
            seconds("kafka.lookup_cache_ttl_s", self.lookup_cache_ttl_s)?;
        }
        if self.lookup_give_up_s > 0 {
            seconds("kafka.lookup_give_up_s", self.lookup_give_up_s)?;
        }
        milliseconds("kafka.lookup_timeout_ms", self.lookup_timeout_ms, 1)?;
        milliseconds("kafka.backoff_max_ms", self.backoff_max_ms, 1)?;
        if self.resume_delay_ms > 0 {
            milliseconds("kafka.resume_delay_ms", self.resume_delay_ms, 1)?;
        }
        let owner_redis = RedisSettings {
            url: self.owner_redis_url.clone(),
            channel_prefix: redis.channel_prefix.clone(),
        };
        owner_redis.validate().map_err(|_| {
            SettingsError::invalid(
                "kafka.owner_redis_url",
                "expected redis://host[:port][/db] or rediss://…, or empty for redis.url",
            )
        })?;
        if let Some(key) = self
            .properties
            .keys()
            .find(|k| k.trim().is_empty() || MANAGED_KAFKA_PROPERTIES.contains(&k.as_str()))
        {
            let reason = format!("{key:?} is set by the ingest itself and cannot be overridden");
            return Err(SettingsError::invalid("kafka.properties", reason));
        }
        if self.routes.is_empty() {
            return Err(SettingsError::missing(
                "kafka.routes",
                "add at least one [[kafka.routes]] when kafka.brokers is set",
            ));
        }
        let has_owner_redis = !self.owner_redis_url.is_empty() || !redis.url.is_empty();
        let mut seen = std::collections::HashSet::new();
        for (i, route) in self.routes.iter().enumerate() {
            route.validate(i, has_owner_redis)?;
            if !seen.insert((&route.topic, &route.event_type)) {
                let reason = format!(
                    "a second route for topic {:?} and event type {:?}",
                    route.topic, route.event_type
                );
                return Err(SettingsError::invalid(
                    &format!("kafka.routes[{i}].event_type"),
                    reason,
                ));
            }
        }
        Ok(())
    }

    /// The ingest's configuration: dedupe in the broker's Redis (shared by every replica), or in
    /// process with the in-process broker.
    #[cfg(feature = "kafka")]
    pub fn ingest_config(&self, redis: &RedisSettings) -> ws_actors::ingest::IngestConfig {
        use std::time::Duration;
        use ws_actors::ingest::{
            DedupeConfig, IngestConfig, LookupConfig, OwnerSource, RouteConfig,
        };

        let non_empty = |s: &str| Some(s.to_owned()).filter(|s| !s.is_empty());
        let routes = self
            .routes
            .iter()
            .map(|route| RouteConfig {
                topic: route.topic.clone(),
                event_type: non_empty(&route.event_type),
                event: route.event.clone(),
                fields: route.fields.clone(),
                owner: if !route.user_pointer.is_empty() {
                    OwnerSource::Pointer(route.user_pointer.clone())
                } else if !route.owner_redis_key.is_empty() {
                    OwnerSource::RedisKey(route.owner_redis_key.clone())
                } else {
                    OwnerSource::HttpUrl(route.owner_http_url.clone())
                },
            })
            .collect();
        let reads_redis = self.routes.iter().any(|r| !r.owner_redis_key.is_empty());
        IngestConfig {
            brokers: self.brokers.clone(),
            group_id: self.group_id.clone(),
            client_id: self.client_id.clone(),
            dead_letter_topic: non_empty(&self.dead_letter_topic),
            auto_offset_reset: self.auto_offset_reset.clone(),
            commit_interval: Duration::from_millis(self.commit_interval_ms),
            session_timeout: Duration::from_millis(self.session_timeout_ms),
            properties: self
                .properties
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
            routes,
            dedupe: DedupeConfig {
                window: Duration::from_secs(self.dedupe_window_s),
                redis_url: non_empty(&redis.url),
                key_prefix: self.dedupe_key_prefix.clone(),
                channel_prefix: redis.channel_prefix.clone(),
                cache_size: self.dedupe_cache_size,
            },
            lookup: LookupConfig {
                redis_url: non_empty(&self.owner_redis_url)
                    .or_else(|| non_empty(&redis.url))
                    .filter(|_| reads_redis),
                cache_ttl: Duration::from_secs(self.lookup_cache_ttl_s),
                cache_size: self.lookup_cache_size,
                timeout: Duration::from_millis(self.lookup_timeout_ms),
                give_up_after: (self.lookup_give_up_s > 0)
                    .then(|| Duration::from_secs(self.lookup_give_up_s)),
            },
            backoff_max: Duration::from_millis(self.backoff_max_ms),
            resume_delay: Duration::from_millis(self.resume_delay_ms),
        }
    }
}

impl KafkaRoute {
    fn validate(&self, i: usize, has_owner_redis: bool) -> Result<(), SettingsError> {
        let key = |name: &str| format!("kafka.routes[{i}].{name}");
        topic_name(&key("topic"), &self.topic)?;
        if self.event.trim().is_empty() {
            return Err(SettingsError::missing(
                &key("event"),
                "name the notification's event",
            ));
        }
        if self.fields.iter().any(|f| f.trim().is_empty()) {
            return Err(SettingsError::invalid(
                &key("fields"),
                "a field name is empty",
            ));
        }
        let sources = [
            ("user_pointer", &self.user_pointer),
            ("owner_redis_key", &self.owner_redis_key),
            ("owner_http_url", &self.owner_http_url),
        ];
        let set: Vec<&str> = sources
            .iter()
            .filter(|(_, v)| !v.is_empty())
            .map(|(name, _)| *name)
            .collect();
        if set.len() != 1 {
            let reason = format!(
                "set exactly one of user_pointer, owner_redis_key, owner_http_url (got {})",
                if set.is_empty() {
                    "none".to_owned()
                } else {
                    set.join(", ")
                }
            );
            return Err(SettingsError::invalid(
                &key(set.first().unwrap_or(&"user_pointer")),
                reason,
            ));
        }
        if !self.user_pointer.is_empty() && !self.user_pointer.starts_with('/') {
            let reason = format!(
                "expected a JSON pointer such as \"/metadata/user_id\", got {:?}",
                self.user_pointer
            );
            return Err(SettingsError::invalid(&key("user_pointer"), reason));
        }
        if !self.owner_redis_key.is_empty() {
            check_template(&key("owner_redis_key"), &self.owner_redis_key)?;
            if !has_owner_redis {
                return Err(SettingsError::missing(
                    &key("owner_redis_key"),
                    "set kafka.owner_redis_url (or redis.url) for Redis owner lookups",
                ));
            }
        }
        if !self.owner_http_url.is_empty() {
            check_template(&key("owner_http_url"), &self.owner_http_url)?;
            let rest = self
                .owner_http_url
                .strip_prefix("http://")
                .unwrap_or_default();
            if rest.is_empty() || rest.starts_with('/') || rest.starts_with('{') {
                let reason = format!(
                    "expected http://host[:port]/path…{{field}}… (plain HTTP: no TLS in this build), got {:?}",
                    self.owner_http_url
                );
                return Err(SettingsError::invalid(&key("owner_http_url"), reason));
            }
        }
        Ok(())
    }
}

/// A Kafka topic name: 1 to 249 of `[A-Za-z0-9._-]`, not `.` or `..`.
fn topic_name(key: &str, topic: &str) -> Result<(), SettingsError> {
    let valid = (1..=249).contains(&topic.len())
        && topic
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
        && topic != "."
        && topic != "..";
    if valid {
        Ok(())
    } else {
        let reason =
            format!("expected a Kafka topic name (1-249 of A-Z a-z 0-9 . _ -), got {topic:?}");
        Err(SettingsError::invalid(key, reason))
    }
}

/// A `{field}` template: braces balanced (`{{`/`}}` are literal), names of `[A-Za-z0-9_.-]`.
fn check_template(key: &str, template: &str) -> Result<(), SettingsError> {
    let mut chars = template.chars().peekable();
    let problem = loop {
        match chars.next() {
            None => return Ok(()),
            Some('{') if chars.peek() == Some(&'{') => {
                chars.next();
            }
            Some('}') if chars.peek() == Some(&'}') => {
                chars.next();
            }
            Some('{') => {
                let mut name = String::new();
                let closed = loop {
                    match chars.next() {
                        Some('}') => break true,
                        Some(c) if c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-') => {
                            name.push(c)
                        }
                        _ => break false,
                    }
                };
                if !closed || name.is_empty() {
                    break "a {field} must name a data field with A-Z a-z 0-9 _ . -";
                }
            }
            Some('}') => break "unmatched } (write }} for a literal brace)",
            Some(_) => {}
        }
    };
    let reason = format!("{problem}, got {template:?}");
    Err(SettingsError::invalid(key, reason))
}

/// Milliseconds: at least `min`, at most [`MAX_SECONDS`] worth.
fn milliseconds(key: &str, value: u64, min: u64) -> Result<(), SettingsError> {
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

/// A string map given as a table (TOML) or as a JSON object string (environment).
fn string_map<'de, D: Deserializer<'de>>(
    deserializer: D,
) -> Result<std::collections::BTreeMap<String, String>, D::Error> {
    deserializer.deserialize_any(JsonOr::<std::collections::BTreeMap<String, String>>::new(
        "a table of strings or a JSON object string",
    ))
}

/// Routes given as an array of tables (TOML) or as a JSON array string (environment).
fn route_list<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Vec<KafkaRoute>, D::Error> {
    deserializer.deserialize_any(JsonOr::<Vec<KafkaRoute>>::new(
        "an array of route tables or a JSON array string",
    ))
}

/// Deserializes `T` from its structured form, or from a string holding it as JSON.
struct JsonOr<T> {
    expecting: &'static str,
    _type: std::marker::PhantomData<T>,
}

impl<T> JsonOr<T> {
    fn new(expecting: &'static str) -> Self {
        Self {
            expecting,
            _type: std::marker::PhantomData,
        }
    }
}

impl<'de, T: serde::de::DeserializeOwned + Default> Visitor<'de> for JsonOr<T> {
    type Value = T;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.expecting)
    }

    fn visit_str<E: de::Error>(self, value: &str) -> Result<T, E> {
        if value.trim().is_empty() {
            return Ok(T::default());
        }
        serde_json::from_str(value).map_err(|e| E::custom(format!("invalid JSON: {e}")))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<T, A::Error> {
        T::deserialize(de::value::SeqAccessDeserializer::new(seq))
    }

    fn visit_map<A: de::MapAccess<'de>>(self, map: A) -> Result<T, A::Error> {
        T::deserialize(de::value::MapAccessDeserializer::new(map))
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
        assert_eq!(settings.api.body_timeout_s, 10);
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
    fn trace_user_id_key_is_a_secret_setting() {
        let key = "0123456789abcdef-trace";
        let vars = [("WS__TELEMETRY__TRACE_USER_ID_KEY", key)];
        let settings = load("", &vars).unwrap();
        assert_eq!(settings.telemetry.trace_user_id_key, key);
        assert!(settings.telemetry.validate().is_ok());
        let short = load("[telemetry]\ntrace_user_id_key = \"short-key\"\n", &[]).unwrap();
        let error = short.telemetry.validate().unwrap_err();
        let text = assert_names(&error, "telemetry.trace_user_id_key");
        assert!(!text.contains("short-key"), "{text}");
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
        let (_dir, path) = toml_file(include_str!("../../settings.toml"));
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

    /// What is wrong with a key file (or its absence) is reported under the key file setting.
    #[test]
    fn a_bad_or_absent_key_file_is_named() {
        let mut settings = valid();
        settings.auth.algorithms = vec!["RS256".into()];
        for content in ["not a key", include_str!("../testdata/ec_public.pem")] {
            let (_dir, path) = toml_file(content);
            settings.auth.jwt_public_key_file = path.to_string_lossy().into_owned();
            let error = settings.validate(false).unwrap_err();
            assert_eq!(error.key(), Some("auth.jwt_public_key_file"), "{error}");
            assert_names(&error, "auth.jwt_public_key_file");
        }
        settings.auth.jwt_public_key_file.clear();
        let error = settings.validate(false).unwrap_err();
        assert!(
            error
                .to_string()
                .starts_with("missing setting auth.jwt_public_key_file"),
            "{error}"
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
    fn a_zero_body_timeout_is_refused() {
        let mut settings = valid();
        settings.api.body_timeout_s = 0;
        let error = settings.validate(true).unwrap_err();
        assert_eq!(error.key(), Some("api.body_timeout_s"), "{error}");
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

    /// A valid configuration with the ingest on and one route owned through `owner`.
    fn with_kafka(owner: (&str, &str)) -> Settings {
        let mut settings = valid();
        settings.redis.url = "redis://127.0.0.1:6379".into();
        settings.kafka.brokers = vec!["kafka-0:9092".into(), "10.0.0.7:9093".into()];
        let mut route = KafkaRoute {
            topic: "huleedu.essay.lifecycle.essay.slot.assigned.v1".into(),
            event_type: String::new(),
            event: "essay.slot.assigned".into(),
            fields: vec!["batch_id".into()],
            user_pointer: String::new(),
            owner_redis_key: String::new(),
            owner_http_url: String::new(),
        };
        match owner.0 {
            "user_pointer" => route.user_pointer = owner.1.into(),
            "owner_redis_key" => route.owner_redis_key = owner.1.into(),
            _ => route.owner_http_url = owner.1.into(),
        }
        settings.kafka.routes = vec![route];
        settings
    }

    #[test]
    fn kafka_routes_load_from_the_file_and_from_the_environment() {
        let text = r#"
[kafka]
brokers = ["127.0.0.1:9092"]
dead_letter_topic = "ws.dlq"
required = true
properties = { "socket.keepalive.enable" = "true" }

[[kafka.routes]]
topic = "huleedu.essay.lifecycle.essay.slot.assigned.v1"
event_type = "huleedu.essay.slot.assigned.v1"
event = "essay.slot.assigned"
fields = ["batch_id", "essay_id", "file_upload_id", "text_storage_id"]
owner_redis_key = "batch_owner:{batch_id}"

[[kafka.routes]]
topic = "platform.other.v1"
event = "other"
user_pointer = "/metadata/user_id"
"#;
        let settings = load(text, &[("WS__REDIS__URL", "redis://r:6379")]).unwrap();
        settings.validate(true).unwrap();
        let kafka = &settings.kafka;
        assert!(kafka.enabled() && kafka.required);
        assert_eq!(kafka.brokers, ["127.0.0.1:9092"]);
        assert_eq!(kafka.routes.len(), 2);
        assert_eq!(kafka.routes[0].owner_redis_key, "batch_owner:{batch_id}");
        assert_eq!(kafka.routes[0].fields.len(), 4);
        assert_eq!(kafka.routes[1].user_pointer, "/metadata/user_id");
        assert_eq!(kafka.routes[1].event_type, "", "any type on the topic");
        assert_eq!(kafka.properties["socket.keepalive.enable"], "true");
        assert_eq!(
            kafka.group_id, "websocket-service",
            "untouched keys keep defaults"
        );

        let routes =
            r#"[{"topic":"t.v1","event":"e","owner_http_url":"http://owners:8080/b/{batch_id}"}]"#;
        let settings = build(
            None,
            env(&[
                ("WS__KAFKA__BROKERS", "a:9092,b:9092"),
                ("WS__KAFKA__ROUTES", routes),
                (
                    "WS__KAFKA__PROPERTIES",
                    r#"{"security.protocol":"sasl_plaintext"}"#,
                ),
                ("WS__KAFKA__DEDUPE_WINDOW_S", "60"),
            ]),
        )
        .unwrap();
        assert_eq!(settings.kafka.brokers, ["a:9092", "b:9092"]);
        assert_eq!(
            settings.kafka.routes[0].owner_http_url,
            "http://owners:8080/b/{batch_id}"
        );
        assert_eq!(
            settings.kafka.properties["security.protocol"],
            "sasl_plaintext"
        );
        assert_eq!(settings.kafka.dedupe_window_s, 60);
        let error = build(None, env(&[("WS__KAFKA__ROUTES", "[{")])).unwrap_err();
        assert_names(&error, "kafka.routes");
        let error = load(
            "[[kafka.routes]]\ntopic = \"t\"\nevent = \"e\"\nuser = \"x\"\n",
            &[],
        )
        .unwrap_err();
        assert!(error.to_string().contains("user"), "{error}");
    }

    #[test]
    fn every_kafka_rule_has_a_failing_case() {
        type Mutation = fn(&mut Settings);
        let cases: [(&str, Mutation); 22] = [
            ("kafka.brokers", |s| s.kafka.brokers = vec!["kafka".into()]),
            ("kafka.group_id", |s| s.kafka.group_id = " ".into()),
            ("kafka.client_id", |s| s.kafka.client_id.clear()),
            ("kafka.dead_letter_topic", |s| {
                s.kafka.dead_letter_topic = "dead letters".into()
            }),
            ("kafka.auto_offset_reset", |s| {
                s.kafka.auto_offset_reset = "smallest".into()
            }),
            ("kafka.commit_interval_ms", |s| {
                s.kafka.commit_interval_ms = 0
            }),
            ("kafka.session_timeout_ms", |s| {
                s.kafka.session_timeout_ms = 999
            }),
            ("kafka.dedupe_window_s", |s| s.kafka.dedupe_window_s = 0),
            ("kafka.dedupe_cache_size", |s| s.kafka.dedupe_cache_size = 0),
            ("kafka.lookup_cache_size", |s| s.kafka.lookup_cache_size = 0),
            ("kafka.lookup_timeout_ms", |s| s.kafka.lookup_timeout_ms = 0),
            ("kafka.backoff_max_ms", |s| s.kafka.backoff_max_ms = 0),
            ("kafka.owner_redis_url", |s| {
                s.kafka.owner_redis_url = "owners:6379".into()
            }),
            ("kafka.properties", |s| {
                s.kafka
                    .properties
                    .insert("enable.auto.offset.store".into(), "true".into());
            }),
            ("kafka.routes", |s| s.kafka.routes.clear()),
            ("kafka.routes[0].topic", |s| {
                s.kafka.routes[0].topic = "a/b".into()
            }),
            ("kafka.routes[0].event", |s| s.kafka.routes[0].event.clear()),
            ("kafka.routes[0].user_pointer", |s| {
                s.kafka.routes[0].user_pointer = "metadata.user_id".into()
            }),
            ("kafka.routes[0].user_pointer", |s| {
                s.kafka.routes[0].owner_redis_key = "k:{batch_id}".into()
            }),
            ("kafka.routes[0].event_type", |s| {
                let again = s.kafka.routes[0].clone();
                s.kafka.routes.push(again);
            }),
            ("kafka.routes[0].owner_redis_key", |s| {
                s.kafka.routes[0].user_pointer.clear();
                s.kafka.routes[0].owner_redis_key = "owner:{batch id}".into();
            }),
            ("kafka.routes[0].owner_http_url", |s| {
                s.kafka.routes[0].user_pointer.clear();
                s.kafka.routes[0].owner_http_url = "https://owners/{batch_id}".into();
            }),
        ];
        for (key, mutate) in cases {
            let mut settings = with_kafka(("user_pointer", "/metadata/user_id"));
            mutate(&mut settings);
            let error = settings.validate(true).unwrap_err();
            let expected = if key == "kafka.routes[0].event_type" {
                "kafka.routes[1].event_type"
            } else {
                key
            };
            assert_eq!(error.key(), Some(expected), "{error}");
            assert_names(&error, expected);
        }
        let mut settings = with_kafka(("owner_redis_key", "batch_owner:{batch_id}"));
        settings.redis.url.clear();
        let error = settings.validate(true).unwrap_err();
        assert_eq!(
            error.key(),
            Some("kafka.routes[0].owner_redis_key"),
            "{error}"
        );
        settings.kafka.owner_redis_url = "redis://owners:6379".into();
        settings.validate(true).unwrap();
        let mut off = valid();
        off.kafka.routes = with_kafka(("user_pointer", "")).kafka.routes;
        off.validate(true)
            .expect("nothing is checked while the ingest is off");
    }

    #[test]
    fn valid_kafka_settings_pass_and_convert() {
        for owner in [
            ("user_pointer", "/metadata/user_id"),
            ("owner_redis_key", "batch_owner:{batch_id}"),
            (
                "owner_http_url",
                "http://owners:8080/batches/{batch_id}/owner",
            ),
        ] {
            with_kafka(owner).validate(false).unwrap();
        }
        let mut settings = with_kafka(("owner_redis_key", "batch_owner:{batch_id}"));
        settings.kafka.dead_letter_topic = "platform.websocket.dead-letters.v1".into();
        settings.kafka.lookup_cache_ttl_s = 0;
        settings.kafka.lookup_give_up_s = 0;
        settings.kafka.resume_delay_ms = 0;
        settings.validate(false).unwrap();
        #[cfg(feature = "kafka")]
        {
            let config = settings.kafka.ingest_config(&settings.redis);
            assert_eq!(config.brokers.len(), 2);
            assert_eq!(
                config.dead_letter_topic.as_deref(),
                Some("platform.websocket.dead-letters.v1")
            );
            assert_eq!(
                config.dedupe.redis_url.as_deref(),
                Some("redis://127.0.0.1:6379")
            );
            assert_eq!(config.dedupe.channel_prefix, "ws:");
            assert_eq!(config.lookup.redis_url, config.dedupe.redis_url);
            assert_eq!(config.lookup.give_up_after, None);
            assert_eq!(config.routes[0].event_type, None);
            assert_eq!(
                config.routes[0].owner,
                ws_actors::ingest::OwnerSource::RedisKey("batch_owner:{batch_id}".into())
            );
            settings.redis.url.clear();
            settings.kafka.owner_redis_url = "redis://owners:6379".into();
            let config = settings.kafka.ingest_config(&settings.redis);
            assert_eq!(config.dedupe.redis_url, None, "in-process dedupe");
            assert_eq!(
                config.lookup.redis_url.as_deref(),
                Some("redis://owners:6379")
            );
        }
    }

    #[test]
    fn debug_hides_secrets() {
        let mut settings = valid();
        settings.api.publish_api_key = "publish-key-value".into();
        settings.telemetry.trace_user_id_key = "trace-key-value-0123".into();
        let text = format!("{settings:?}");
        assert!(
            !text.contains(SECRET)
                && !text.contains("publish-key-value")
                && !text.contains("trace-key-value"),
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
