//! Helpers of the settings tests: settings files in temporary directories, environments as maps,
//! a valid baseline, and the one-line-naming-the-key assertion.

use std::collections::HashMap;
use std::io::Write as _;
use std::path::PathBuf;

use super::{Settings, SettingsError};

/// A valid `auth.jwt_secret`.
pub(super) const SECRET: &str = "0123456789abcdef0123456789abcdef";

/// An environment of `(name, value)` pairs.
pub(super) fn env(pairs: &[(&str, &str)]) -> HashMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

/// A settings file in a temporary directory (kept alive by the returned guard).
pub(super) fn toml_file(text: &str) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("settings.toml");
    std::fs::File::create(&path)
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    (dir, path)
}

/// Loads `text` as the settings file with `vars` as the environment.
pub(super) fn load(text: &str, vars: &[(&str, &str)]) -> Result<Settings, SettingsError> {
    let (_dir, path) = toml_file(text);
    Settings::load_from(Some(&path), env(vars))
}

/// Asserts the error is one line and names `key`; returns its text.
pub(super) fn assert_names(error: &SettingsError, key: &str) -> String {
    let text = error.to_string();
    assert!(!text.contains('\n'), "not one line: {text:?}");
    assert!(text.contains(key), "{text:?} does not name {key}");
    text
}

/// The defaults with a secret set: passes validation.
pub(super) fn valid() -> Settings {
    let mut settings = Settings::default();
    settings.auth.jwt_secret = SECRET.into();
    settings
}
