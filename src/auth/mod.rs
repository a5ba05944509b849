//! JWT validation for WebSocket upgrades.
//!
//! A [`TokenValidator`] is built once from [`ValidatorOptions`] (the `[auth]` settings) and
//! checks each upgrade's token: the header's `alg` must be in the allow-list (all of one key
//! type, so that a token can never be checked with a key of another family: the
//! algorithm-confusion guard), the signature must verify, `exp` and `sub` are required, `iss`
//! and `aud` are checked when configured. `sub` becomes the user id.
//!
//! Tokens never appear in errors or logs. This module does not know the settings: it reports a
//! [`SetupError`] and `config` names the setting.
//!
//! # Layout
//! - `token` — [`TokenValidator`]: header, signature and claim checks; [`mint_hs256`].
//! - `keys` — the algorithm allow-list, the HMAC secret, the public key file.
//! - `public_key` — parsing the PEM public key file (SPKI or PKCS#1).
//! - `error` — [`AuthError`] (a refused token) and [`SetupError`] (bad options).

mod error;
mod keys;
mod public_key;
mod token;

#[cfg(test)]
mod test_support;

pub use error::{AuthError, SetupError};
pub(crate) use keys::check_secret;
pub use public_key::KeyFileError;
pub use token::{mint_hs256, TokenValidator, VerifiedToken};

/// Shortest accepted HMAC secret, in bytes.
pub(crate) const MIN_SECRET_BYTES: usize = 16;
/// Largest accepted leeway: leeway is for clock skew, not for extending tokens.
pub(crate) const MAX_LEEWAY_S: u64 = 3600;
/// The algorithm names `jsonwebtoken` knows, for messages.
const ALGORITHM_NAMES: &str =
    "HS256, HS384, HS512, RS256, RS384, RS512, ES256, ES384, PS256, PS384, PS512, EdDSA";

/// What a [`TokenValidator`] is built from. `Debug` never shows the secret.
#[derive(Clone, PartialEq, Eq)]
pub struct ValidatorOptions {
    /// Shared secret of the HMAC algorithms (HS256, HS384, HS512); empty = none.
    pub secret: String,
    /// PEM public key file of the RSA, EC or EdDSA algorithms; empty = none.
    pub public_key_file: String,
    /// Accepted `alg` names, all of one key family.
    pub algorithms: Vec<String>,
    /// Required `iss` claim; empty = not checked.
    pub issuer: String,
    /// Required `aud` claim; empty = not checked.
    pub audience: String,
    /// Clock skew tolerated on `exp` and `nbf`, in seconds.
    pub leeway_s: u64,
}

impl Default for ValidatorOptions {
    /// HS256 with no secret yet.
    fn default() -> Self {
        Self {
            secret: String::new(),
            public_key_file: String::new(),
            algorithms: vec!["HS256".into()],
            issuer: String::new(),
            audience: String::new(),
            leeway_s: 0,
        }
    }
}

impl std::fmt::Debug for ValidatorOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ValidatorOptions")
            .field("public_key_file", &self.public_key_file)
            .field("algorithms", &self.algorithms)
            .field("issuer", &self.issuer)
            .field("audience", &self.audience)
            .field("leeway_s", &self.leeway_s)
            .finish_non_exhaustive()
    }
}
