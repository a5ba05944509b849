//! Loading: where the settings file is looked for, the layers (defaults, then the file, then
//! `WS__SECTION__KEY` overrides) and how a failure of the `config` crate becomes one line that
//! names the key and where it was set (an unknown key is refused the same way).

use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};

use config::{Config, ConfigError, Environment, File, FileFormat};

use super::env::{process_env, var_of, ENV_PREFIX, ENV_SEPARATOR};
use super::error::io_reason;
use super::{Settings, SettingsError};

/// Name of the settings file looked for when no path is given.
pub const FILE_NAME: &str = "settings.toml";
/// Settings whose values must never appear in an error message.
const SECRET_KEYS: [&str; 3] = [
    "auth.jwt_secret",
    "api.publish_api_key",
    "telemetry.trace_user_id_key",
];

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
pub(super) fn build(
    file: Option<&Path>,
    env: HashMap<String, String>,
) -> Result<Settings, SettingsError> {
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
        } => type_error(key, expected, unexpected, sources),
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

/// A value of the wrong type at `key` (a secret's value is not repeated).
fn type_error(
    key: String,
    expected: &str,
    unexpected: impl fmt::Display,
    sources: &Sources<'_>,
) -> SettingsError {
    // Every integer setting is unsigned; `config` words it "an integer" for a bad string and "an
    // unsigned 64 bit or less integer" for a negative number.
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

/// An unknown `key`, with where it was set and the keys expected there.
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

#[cfg(test)]
mod tests;
