//! The settings file a test server gets: defaults suited to tests, one generic
//! [`TestSettings::set`] for any `section.key`, plus the process-level extras (`--dev`,
//! environment variables). Unknown keys are written as given: the server refuses them, so a typo
//! fails the test.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde_json::Value;

use super::redis::RedisServer;
use super::{API_KEY, PREFIX, SECRET};

/// A test server's settings: `section → key → value`, written as TOML.
#[derive(Clone, Debug)]
pub struct TestSettings {
    sections: BTreeMap<String, BTreeMap<String, Value>>,
    /// Whether the binary runs with `--dev`.
    pub(super) dev: bool,
    /// Extra environment variables for the server (`WS__SECTION__KEY` overrides, `RUST_LOG`).
    pub(super) env: Vec<(String, String)>,
}

impl Default for TestSettings {
    fn default() -> Self {
        let settings = Self {
            sections: BTreeMap::new(),
            dev: false,
            env: Vec::new(),
        };
        settings
            .set("server.ws_path", "/ws")
            .set("server.workers", 2)
            .set("auth.jwt_secret", SECRET)
            .set("auth.algorithms", ["HS256"])
            .set("auth.leeway_s", 0)
            .set("redis.url", "")
            .set("redis.channel_prefix", PREFIX)
            .set("api.publish_api_key", API_KEY)
            .set("telemetry.service_name", "websocket-service-test")
            .set("telemetry.otlp_endpoint", "")
            .set("telemetry.log_format", "json")
    }
}

impl TestSettings {
    /// Defaults: in-process broker, HS256 with [`SECRET`], API key [`API_KEY`], 2 workers.
    pub fn new() -> Self {
        Self::default()
    }

    /// Defaults, with Redis at `redis`.
    pub fn with_redis(redis: &RedisServer) -> Self {
        Self::new().set("redis.url", redis.url())
    }

    /// Sets `key` (`section.key`, e.g. `limits.max_connections`) to `value`: a string, number,
    /// bool or array of those.
    pub fn set(mut self, key: &str, value: impl Into<Value>) -> Self {
        let (section, name) = split_key(key);
        self.sections
            .entry(section.to_owned())
            .or_default()
            .insert(name.to_owned(), value.into());
        self
    }

    /// Writes no `key` at all (the server's default applies).
    pub fn unset(mut self, key: &str) -> Self {
        let (section, name) = split_key(key);
        if let Some(keys) = self.sections.get_mut(section) {
            keys.remove(name);
        }
        self
    }

    /// The value `key` is set to, if any.
    pub fn get(&self, key: &str) -> Option<&Value> {
        let (section, name) = split_key(key);
        self.sections.get(section)?.get(name)
    }

    /// A string setting (panics when it is unset or not a string).
    pub fn get_str(&self, key: &str) -> &str {
        self.get(key)
            .and_then(Value::as_str)
            .unwrap_or_else(|| panic!("test setting {key} is not a string"))
    }

    /// Runs the binary with `--dev`.
    pub fn dev(mut self) -> Self {
        self.dev = true;
        self
    }

    /// An extra environment variable for the server (e.g. a `WS__SECTION__KEY` override).
    pub fn env(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.env.push((key.into(), value.into()));
        self
    }

    /// The TOML settings file for a server bound to `bind`.
    pub fn to_toml(&self, bind: &str) -> String {
        let settings = self.clone().set("server.bind", bind);
        let mut out = String::new();
        for (section, keys) in &settings.sections {
            writeln!(out, "[{section}]").expect("write");
            for (key, value) in keys {
                writeln!(out, "{key} = {}", toml_value(key, value)).expect("write");
            }
            out.push('\n');
        }
        out
    }
}

/// `section.key` → (`section`, `key`).
fn split_key(key: &str) -> (&str, &str) {
    key.split_once('.')
        .unwrap_or_else(|| panic!("test setting {key:?} is not `section.key`"))
}

/// A JSON string, number, bool or array of those is also a valid TOML value.
fn toml_value(key: &str, value: &Value) -> String {
    match value {
        Value::Null | Value::Object(_) => panic!("test setting {key}: {value} has no TOML form"),
        Value::Array(items) => {
            let items: Vec<String> = items.iter().map(|item| toml_value(key, item)).collect();
            format!("[{}]", items.join(", "))
        }
        scalar => scalar.to_string(),
    }
}
