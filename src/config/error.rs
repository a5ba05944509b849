//! [`SettingsError`]: why settings could not be loaded or are not valid, as one line naming the
//! key (start-up exits 78 with it).

use std::path::{Path, PathBuf};

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

/// An I/O error without the `(os error N)` suffix.
pub(super) fn io_reason(error: &std::io::Error) -> String {
    let text = error.to_string();
    match text.split_once(" (os error") {
        Some((reason, _)) => reason.to_owned(),
        None => text,
    }
}
