//! The environment overrides: `WS__SECTION__KEY` variables, read from the process, and the
//! mapping between a variable's name and the `section.key` it sets.

use std::collections::HashMap;

use super::SettingsError;

/// Prefix of the environment overrides: `WS__SECTION__KEY`.
pub const ENV_PREFIX: &str = "WS";
/// Separator between prefix, section and key in environment overrides.
pub const ENV_SEPARATOR: &str = "__";

/// The `WS__…` variables of the process (a non-UTF-8 value is an error, not silently skipped).
pub(super) fn process_env() -> Result<HashMap<String, String>, SettingsError> {
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
pub(super) fn var_of(key: &str) -> String {
    let key = key.split('[').next().unwrap_or(key);
    let path = key.replace('.', ENV_SEPARATOR).to_uppercase();
    format!("{ENV_PREFIX}{ENV_SEPARATOR}{path}")
}

#[cfg(test)]
mod tests;
