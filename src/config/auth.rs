//! `[auth]`: JWT validation settings, and how they become the [`TokenValidator`]. Auth reports
//! its own [`SetupError`]; this module names the setting each error is about.

use std::fmt;

use serde::Deserialize;

use super::de::string_list;
use super::{redacted, SettingsError};
use crate::auth::{self, SetupError, TokenValidator, ValidatorOptions};

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

impl AuthSettings {
    /// The token validator of these settings: reads `auth.jwt_public_key_file` when one is
    /// needed.
    pub fn token_validator(&self) -> Result<TokenValidator, SettingsError> {
        TokenValidator::new(&self.validator_options()).map_err(auth_settings_error)
    }

    /// What the validator is built from.
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

    /// Checks `[auth]` by building the validator once; `dev` allows a missing secret.
    pub(super) fn validate(&self, dev: bool) -> Result<(), SettingsError> {
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

#[cfg(test)]
mod tests;
