//! Token validation: the header (`alg` in the allow-list, no `crit`), the signature, the claims
//! (`exp` and `sub` required, `nbf`, `iss` and `aud` checked, the leeway on expiry), and the
//! user id a valid token yields. Also mints the HS256 tokens of `--dev` mode.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};

use super::keys::{allowed_algorithms, decoding_key};
use super::{AuthError, SetupError, ValidatorOptions, MAX_LEEWAY_S};

#[cfg(test)]
mod tests;

/// Longest accepted `sub`, in bytes.
const MAX_SUBJECT_BYTES: usize = 256;
/// Longest accepted token, in bytes.
const MAX_TOKEN_BYTES: usize = 16 * 1024;

/// Checks tokens against the configured key and claims. Cheap to clone.
#[derive(Clone)]
pub struct TokenValidator {
    inner: Arc<Inner>,
}

struct Inner {
    key: DecodingKey,
    validation: Validation,
}

/// What a valid token says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifiedToken {
    /// The `sub` claim, verbatim.
    pub user_id: String,
    /// When the token stops being accepted, in unix seconds: its `exp` plus `auth.leeway_s`.
    pub expires_at: u64,
}

/// The claims read from a token; the rest are checked by `jsonwebtoken` or ignored.
#[derive(Deserialize)]
struct Claims {
    #[serde(default)]
    sub: serde_json::Value,
    #[serde(default)]
    exp: serde_json::Value,
}

impl TokenValidator {
    /// Builds the validator: parses the algorithms, reads the secret or the public key file.
    pub fn new(options: &ValidatorOptions) -> Result<TokenValidator, SetupError> {
        let algorithms = allowed_algorithms(&options.algorithms)?;
        if options.leeway_s > MAX_LEEWAY_S {
            return Err(SetupError::LeewayTooLarge {
                leeway_s: options.leeway_s,
            });
        }
        let key = decoding_key(options, &algorithms)?;
        let validation = validation(options, algorithms);
        Ok(Self {
            inner: Arc::new(Inner { key, validation }),
        })
    }

    /// Checks `token` (empty = none offered).
    pub fn validate(&self, token: &str) -> Result<VerifiedToken, AuthError> {
        if token.is_empty() {
            return Err(AuthError::Missing);
        }
        if token.len() > MAX_TOKEN_BYTES {
            return Err(AuthError::Malformed);
        }
        let header = jsonwebtoken::decode_header(token).map_err(|_| AuthError::Malformed)?;
        refuse_critical_extensions(token)?;
        let validation = &self.inner.validation;
        if !validation.algorithms.contains(&header.alg) {
            return Err(AuthError::AlgorithmNotAllowed);
        }
        let data = jsonwebtoken::decode::<Claims>(token, &self.inner.key, validation)
            .map_err(|error| auth_error(error.kind()))?;
        let user_id = subject(&data.claims.sub)?;
        let exp = numeric_date(&data.claims.exp).ok_or(AuthError::MissingClaim("exp"))?;
        Ok(VerifiedToken {
            user_id,
            expires_at: exp.saturating_add(validation.leeway),
        })
    }
}

impl fmt::Debug for TokenValidator {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let validation = &self.inner.validation;
        f.debug_struct("TokenValidator")
            .field("algorithms", &validation.algorithms)
            .field("leeway", &validation.leeway)
            .finish_non_exhaustive()
    }
}

/// Signs an HS256 token for `user_id` valid for `ttl` (claims `sub`, `exp`, `iat`): for `--dev`
/// mode and tests. An empty secret is refused.
pub fn mint_hs256(
    secret: &str,
    user_id: &str,
    ttl: Duration,
) -> Result<String, jsonwebtoken::errors::Error> {
    #[derive(Serialize)]
    struct Minted<'a> {
        sub: &'a str,
        exp: u64,
        iat: u64,
    }
    if secret.is_empty() {
        return Err(ErrorKind::InvalidKeyFormat.into());
    }
    let iat = jsonwebtoken::get_current_timestamp();
    let claims = Minted {
        sub: user_id,
        exp: iat.saturating_add(ttl.as_secs()),
        iat,
    };
    let key = EncodingKey::from_secret(secret.as_bytes());
    jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &key)
}

fn validation(options: &ValidatorOptions, algorithms: Vec<Algorithm>) -> Validation {
    let mut validation = Validation::new(Algorithm::HS256);
    validation.algorithms = algorithms;
    validation.leeway = options.leeway_s;
    validation.validate_exp = true;
    validation.validate_nbf = true;
    let mut required = vec!["exp", "sub"];
    if !options.issuer.is_empty() {
        validation.set_issuer(&[&options.issuer]);
        required.push("iss");
    }
    if options.audience.is_empty() {
        validation.validate_aud = false;
    } else {
        validation.set_audience(&[&options.audience]);
        required.push("aud");
    }
    validation.set_required_spec_claims(&required);
    validation
}

/// Maps a `jsonwebtoken` failure to the refusal a client sees.
fn auth_error(kind: &ErrorKind) -> AuthError {
    match kind {
        ErrorKind::InvalidSignature => AuthError::BadSignature,
        ErrorKind::ExpiredSignature => AuthError::Expired,
        ErrorKind::ImmatureSignature => AuthError::NotYetValid,
        ErrorKind::InvalidIssuer => AuthError::InvalidIssuer,
        ErrorKind::InvalidAudience => AuthError::InvalidAudience,
        ErrorKind::InvalidSubject => AuthError::InvalidSubject,
        ErrorKind::MissingRequiredClaim(claim) => missing_claim(claim),
        ErrorKind::InvalidAlgorithm
        | ErrorKind::InvalidAlgorithmName
        | ErrorKind::UnsupportedAlgorithm => AuthError::AlgorithmNotAllowed,
        ErrorKind::InvalidEcdsaKey
        | ErrorKind::InvalidEddsaKey
        | ErrorKind::InvalidRsaKey(_)
        | ErrorKind::InvalidKeyFormat
        | ErrorKind::MissingAlgorithm
        | ErrorKind::Provider(_) => {
            tracing::error!(error = ?kind, "the configured JWT key cannot verify tokens");
            AuthError::BadSignature
        }
        _ => AuthError::Malformed,
    }
}

fn missing_claim(claim: &str) -> AuthError {
    match claim {
        "exp" => AuthError::MissingClaim("exp"),
        "sub" => AuthError::MissingClaim("sub"),
        "iss" => AuthError::MissingClaim("iss"),
        "aud" => AuthError::MissingClaim("aud"),
        "nbf" => AuthError::MissingClaim("nbf"),
        _ => AuthError::Malformed,
    }
}

/// Refuses a token whose header has a `crit` member at all (an empty, null or malformed one
/// too): this server understands no JWS extension. `jsonwebtoken` reads `"crit": null` as no
/// `crit`, so the header's JSON is read here.
fn refuse_critical_extensions(token: &str) -> Result<(), AuthError> {
    let json = header_json(token).ok_or(AuthError::Malformed)?;
    let header: serde_json::Map<String, serde_json::Value> =
        serde_json::from_slice(&json).map_err(|_| AuthError::Malformed)?;
    if header.contains_key("crit") {
        return Err(AuthError::CriticalExtension);
    }
    Ok(())
}

/// The decoded first segment of a JWS: unpadded base64url (RFC 7515 §2), as `jsonwebtoken`
/// decodes it.
fn header_json(token: &str) -> Option<Vec<u8>> {
    let encoded = token.split('.').next()?;
    URL_SAFE_NO_PAD.decode(encoded).ok()
}

/// The user id: `sub` as a non-empty string of at most 256 bytes without control characters.
/// Anything else is allowed verbatim (channel names are exact, never patterns).
fn subject(sub: &serde_json::Value) -> Result<String, AuthError> {
    let sub = sub.as_str().ok_or(AuthError::MissingClaim("sub"))?;
    if sub.is_empty() || sub.len() > MAX_SUBJECT_BYTES || sub.chars().any(char::is_control) {
        return Err(AuthError::InvalidSubject);
    }
    Ok(sub.to_owned())
}

/// A JWT NumericDate (integer or fraction of seconds) as whole seconds; a fraction beyond the
/// u64 range saturates (`as` casts saturate), a negative one is none.
fn numeric_date(value: &serde_json::Value) -> Option<u64> {
    value.as_u64().or_else(|| {
        value
            .as_f64()
            .filter(|f| f.is_finite() && *f >= 0.0)
            .map(|f| f.round() as u64)
    })
}
