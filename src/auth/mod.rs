//! JWT validation for WebSocket upgrades.
//!
//! A [`TokenValidator`] is built once from `[auth]` and checks each upgrade's token: the header's
//! `alg` must be in `auth.algorithms` (all of one key type, so that a token can never be checked
//! with a key of another family: the algorithm-confusion guard), the signature must verify, `exp`
//! and `sub` are required, `iss` and `aud` are checked when configured. `sub` becomes the user id.
//!
//! Public keys are read from a PEM file (`PUBLIC KEY`, or `RSA PUBLIC KEY`); the PEM and DER
//! decoding is done here because `jsonwebtoken` is built without its `use_pem` feature.
//!
//! Tokens never appear in errors or logs.

use std::fmt;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, AlgorithmFamily, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};

use crate::config::{AuthSettings, SettingsError};

/// Shortest accepted `auth.jwt_secret`, in bytes.
pub(crate) const MIN_SECRET_BYTES: usize = 16;
/// Largest accepted `auth.leeway_s`: leeway is for clock skew, not for extending tokens.
pub(crate) const MAX_LEEWAY_S: u64 = 3600;
/// Longest accepted `sub`, in bytes.
const MAX_SUBJECT_BYTES: usize = 256;
/// Longest accepted token, in bytes.
const MAX_TOKEN_BYTES: usize = 16 * 1024;
/// Accepted RSA modulus sizes, in bits.
const RSA_BITS: std::ops::RangeInclusive<usize> = 2048..=4096;

const SECRET_KEY: &str = "auth.jwt_secret";
const KEY_FILE_KEY: &str = "auth.jwt_public_key_file";
const ALGORITHMS_KEY: &str = "auth.algorithms";
const ALGORITHM_NAMES: &str =
    "HS256, HS384, HS512, RS256, RS384, RS512, ES256, ES384, PS256, PS384, PS512, EdDSA";

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

/// Why a token was refused. `Display` is for logs; [`AuthError::public_message`] is for clients.
#[non_exhaustive]
#[derive(thiserror::Error, Debug, Clone, PartialEq, Eq)]
pub enum AuthError {
    /// No token was offered.
    #[error("no token")]
    Missing,
    /// Not a well-formed JWT (including `alg: none`).
    #[error("token is not a well-formed JWT")]
    Malformed,
    /// The header's `alg` is not in `auth.algorithms`.
    #[error("token algorithm is not allowed")]
    AlgorithmNotAllowed,
    /// The signature does not verify with the configured key.
    #[error("token signature does not verify")]
    BadSignature,
    /// `exp` has passed (beyond the leeway).
    #[error("token expired")]
    Expired,
    /// A required claim is absent.
    #[error("token has no {0} claim")]
    MissingClaim(&'static str),
    /// `iss` is not `auth.issuer`.
    #[error("token issuer does not match")]
    InvalidIssuer,
    /// `aud` does not include `auth.audience`.
    #[error("token audience does not match")]
    InvalidAudience,
    /// `sub` is empty, longer than 256 bytes or holds control characters.
    #[error("token subject is empty, too long or holds control characters")]
    InvalidSubject,
    /// `nbf` is in the future (beyond the leeway).
    #[error("token not valid yet")]
    NotYetValid,
    /// The header has `crit`: it names extensions that must be understood, and this server
    /// understands none (RFC 7515 §4.1.11).
    #[error("token header names critical extensions (crit)")]
    CriticalExtension,
}

impl AuthError {
    /// A short text for the client's close reason: at most 16 bytes.
    pub fn public_message(&self) -> &'static str {
        match self {
            Self::Missing => "token missing",
            Self::Malformed => "token malformed",
            Self::AlgorithmNotAllowed => "alg not allowed",
            Self::BadSignature => "bad signature",
            Self::Expired => "token expired",
            Self::MissingClaim("exp") => "missing exp",
            Self::MissingClaim("sub") => "missing sub",
            Self::MissingClaim("iss") => "missing iss",
            Self::MissingClaim("aud") => "missing aud",
            Self::MissingClaim("nbf") => "missing nbf",
            Self::MissingClaim(_) => "missing claim",
            Self::InvalidIssuer => "bad issuer",
            Self::InvalidAudience => "bad audience",
            Self::InvalidSubject => "bad subject",
            Self::NotYetValid => "not yet valid",
            Self::CriticalExtension => "crit unsupported",
        }
    }
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
    /// Builds the validator: parses `auth.algorithms`, reads the secret or the public key file.
    pub fn from_settings(auth: &AuthSettings) -> Result<TokenValidator, SettingsError> {
        let algorithms = allowed_algorithms(&auth.algorithms)?;
        if auth.leeway_s > MAX_LEEWAY_S {
            let reason = format!("must be at most {MAX_LEEWAY_S}, got {}", auth.leeway_s);
            return Err(SettingsError::invalid("auth.leeway_s", reason));
        }
        let key = decoding_key(auth, &algorithms)?;
        let validation = validation(auth, algorithms);
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

/// Fails when a set `auth.jwt_secret` is shorter than [`MIN_SECRET_BYTES`].
pub(crate) fn check_secret(secret: &str) -> Result<(), SettingsError> {
    if secret.len() < MIN_SECRET_BYTES {
        let reason = format!(
            "must be at least {MIN_SECRET_BYTES} bytes, got {}",
            secret.len()
        );
        return Err(SettingsError::invalid(SECRET_KEY, reason));
    }
    Ok(())
}

/// Parses `auth.algorithms`: known names, at least one, all of one key family.
fn allowed_algorithms(names: &[String]) -> Result<Vec<Algorithm>, SettingsError> {
    let mut algorithms = Vec::with_capacity(names.len());
    for name in names {
        let algorithm = name.parse::<Algorithm>().map_err(|_| {
            let reason = format!("unknown algorithm {name:?}; expected one of {ALGORITHM_NAMES}");
            SettingsError::invalid(ALGORITHMS_KEY, reason)
        })?;
        algorithms.push(algorithm);
    }
    let Some(first) = algorithms.first() else {
        let reason = format!("must list at least one of {ALGORITHM_NAMES}");
        return Err(SettingsError::invalid(ALGORITHMS_KEY, reason));
    };
    if algorithms.iter().any(|a| a.family() != first.family()) {
        let reason = format!(
            "{names:?} mixes key types; list HMAC (HS*), RSA (RS*, PS*), EC (ES*) or EdDSA \
             algorithms only, never several (algorithm confusion guard)"
        );
        return Err(SettingsError::invalid(ALGORITHMS_KEY, reason));
    }
    Ok(algorithms)
}

/// The secret or the public key of the algorithms' family.
fn decoding_key(
    auth: &AuthSettings,
    algorithms: &[Algorithm],
) -> Result<DecodingKey, SettingsError> {
    let family = algorithms
        .first()
        .map_or(AlgorithmFamily::Hmac, |a| a.family());
    if family == AlgorithmFamily::Hmac {
        return hmac_key(auth);
    }
    if auth.jwt_public_key_file.is_empty() {
        let reason = format!(
            "auth.algorithms {:?} need a PEM public key file",
            auth.algorithms
        );
        return Err(SettingsError::missing(KEY_FILE_KEY, reason));
    }
    let path = Path::new(&auth.jwt_public_key_file);
    let key = read_public_key(path)?;
    if key.family != family {
        let reason = format!(
            "{path:?} holds {} key, but auth.algorithms {:?} need {} key",
            family_name(key.family),
            auth.algorithms,
            family_name(family)
        );
        return Err(SettingsError::invalid(KEY_FILE_KEY, reason));
    }
    let key = key.decoding_key();
    probe(&key, algorithms, path)?;
    Ok(key)
}

fn hmac_key(auth: &AuthSettings) -> Result<DecodingKey, SettingsError> {
    if auth.jwt_secret.is_empty() && !auth.jwt_public_key_file.is_empty() {
        let reason = format!(
            "{:?} use auth.jwt_secret, not auth.jwt_public_key_file; list the key's algorithm \
             (RS256, ES256, EdDSA, …)",
            auth.algorithms
        );
        return Err(SettingsError::invalid(ALGORITHMS_KEY, reason));
    }
    if auth.jwt_secret.is_empty() {
        let reason = "set it (or auth.jwt_public_key_file), or run with --dev";
        return Err(SettingsError::missing(SECRET_KEY, reason));
    }
    check_secret(&auth.jwt_secret)?;
    Ok(DecodingKey::from_secret(auth.jwt_secret.as_bytes()))
}

/// Builds a verifier for each algorithm once, so that a key the crypto backend refuses (a point
/// off the curve, a P-256 key for ES384) fails at start-up rather than on every token.
fn probe(key: &DecodingKey, algorithms: &[Algorithm], path: &Path) -> Result<(), SettingsError> {
    for algorithm in algorithms {
        if jsonwebtoken::crypto::verify("", b"", key, *algorithm).is_err() {
            let reason = format!("{path:?} is not a valid {algorithm:?} public key");
            return Err(SettingsError::invalid(KEY_FILE_KEY, reason));
        }
    }
    Ok(())
}

fn validation(auth: &AuthSettings, algorithms: Vec<Algorithm>) -> Validation {
    let mut validation = Validation::new(Algorithm::HS256);
    validation.algorithms = algorithms;
    validation.leeway = auth.leeway_s;
    validation.validate_exp = true;
    validation.validate_nbf = true;
    let mut required = vec!["exp", "sub"];
    if !auth.issuer.is_empty() {
        validation.set_issuer(&[&auth.issuer]);
        required.push("iss");
    }
    if auth.audience.is_empty() {
        validation.validate_aud = false;
    } else {
        validation.set_audience(&[&auth.audience]);
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
/// too): this server understands no JWS extension. `jsonwebtoken` ignores `crit`, so the
/// header's JSON is read here.
fn refuse_critical_extensions(token: &str) -> Result<(), AuthError> {
    let encoded = token.split('.').next().unwrap_or_default();
    let json = base64url_decode(encoded).ok_or(AuthError::Malformed)?;
    let header: serde_json::Map<String, serde_json::Value> =
        serde_json::from_slice(&json).map_err(|_| AuthError::Malformed)?;
    if header.contains_key("crit") {
        return Err(AuthError::CriticalExtension);
    }
    Ok(())
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

// ---------------------------------------------------------------------------------------------
// Public key files: PEM armour, base64, the few DER structures of a public key
// ---------------------------------------------------------------------------------------------

/// A public key as `jsonwebtoken` takes it: PKCS#1 for RSA, the SEC1 point for EC, the 32 raw
/// bytes for Ed25519.
struct PublicKey {
    family: AlgorithmFamily,
    bytes: Vec<u8>,
}

impl PublicKey {
    fn decoding_key(&self) -> DecodingKey {
        match self.family {
            AlgorithmFamily::Rsa => DecodingKey::from_rsa_der(&self.bytes),
            AlgorithmFamily::Ec => DecodingKey::from_ec_der(&self.bytes),
            AlgorithmFamily::Ed => DecodingKey::from_ed_der(&self.bytes),
            AlgorithmFamily::Hmac => DecodingKey::from_secret(&self.bytes),
        }
    }
}

/// Reads and parses `auth.jwt_public_key_file`.
fn read_public_key(path: &Path) -> Result<PublicKey, SettingsError> {
    let bytes = std::fs::read(path)
        .map_err(|error| SettingsError::read_key_file(KEY_FILE_KEY, path, &error))?;
    let text = String::from_utf8_lossy(&bytes);
    parse_public_pem(&text)
        .map_err(|reason| SettingsError::invalid(KEY_FILE_KEY, format!("{path:?}: {reason}")))
}

/// Parses the first PEM block of `text` as a public key.
fn parse_public_pem(text: &str) -> Result<PublicKey, String> {
    let (label, der) =
        pem_block(text).ok_or("not a PEM file (expected -----BEGIN PUBLIC KEY-----)")?;
    match label {
        "PUBLIC KEY" => spki(&der),
        "RSA PUBLIC KEY" => rsa_key(&der),
        "CERTIFICATE" => Err("holds a certificate; give its public key \
                              (openssl x509 -pubkey -noout -in cert.pem)"
            .into()),
        label if label.ends_with("PRIVATE KEY") => Err("holds a private key; give the public key \
                                                         (openssl pkey -pubout -in key.pem)"
            .into()),
        label => Err(format!(
            "unsupported PEM block {label:?}, expected PUBLIC KEY"
        )),
    }
}

/// The label and decoded body of the first `-----BEGIN …-----` block.
fn pem_block(text: &str) -> Option<(&str, Vec<u8>)> {
    let start = text.find("-----BEGIN ")?;
    let rest = &text[start + "-----BEGIN ".len()..];
    let (label, rest) = rest.split_once("-----")?;
    let end = format!("-----END {label}-----");
    let (body, _) = rest.split_once(end.as_str())?;
    Some((label, base64_decode(body)?))
}

/// Standard base64 with optional padding; whitespace is skipped.
fn base64_decode(text: &str) -> Option<Vec<u8>> {
    let digits: Vec<u8> = text.bytes().filter(|b| !b.is_ascii_whitespace()).collect();
    let unpadded = digits
        .strip_suffix(b"==")
        .or_else(|| digits.strip_suffix(b"="));
    let digits = unpadded.unwrap_or(&digits);
    let mut out = Vec::with_capacity(digits.len() * 3 / 4);
    let (mut acc, mut bits) = (0u32, 0u32);
    for &digit in digits {
        acc = (acc << 6) | u32::from(sextet(digit)?);
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    Some(out)
}

/// Unpadded base64url (RFC 4648 §5), as JWS segments are written.
fn base64url_decode(text: &str) -> Option<Vec<u8>> {
    let standard_only = |b: u8| matches!(b, b'+' | b'/' | b'=') || b.is_ascii_whitespace();
    if text.bytes().any(standard_only) {
        return None;
    }
    base64_decode(&text.replace('-', "+").replace('_', "/"))
}

fn sextet(digit: u8) -> Option<u8> {
    match digit {
        b'A'..=b'Z' => Some(digit - b'A'),
        b'a'..=b'z' => Some(digit - b'a' + 26),
        b'0'..=b'9' => Some(digit - b'0' + 52),
        b'+' => Some(62),
        b'/' => Some(63),
        _ => None,
    }
}

const DER_INTEGER: u8 = 0x02;
const DER_BIT_STRING: u8 = 0x03;
const DER_OID: u8 = 0x06;
const DER_SEQUENCE: u8 = 0x30;
/// rsaEncryption, 1.2.840.113549.1.1.1.
const OID_RSA: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x01];
/// RSASSA-PSS, 1.2.840.113549.1.1.10.
const OID_RSA_PSS: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x0a];
/// id-ecPublicKey, 1.2.840.10045.2.1.
const OID_EC: &[u8] = &[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01];
/// id-Ed25519, 1.3.101.112.
const OID_ED25519: &[u8] = &[0x2b, 0x65, 0x70];
const BAD_DER: &str = "malformed key (bad DER inside the PEM block)";

/// Reads DER elements one after another.
struct Der<'a>(&'a [u8]);

impl<'a> Der<'a> {
    /// The contents of the next element, which must have tag `tag`.
    fn read(&mut self, tag: u8) -> Option<&'a [u8]> {
        let (&found, rest) = self.0.split_first()?;
        let (&first, mut rest) = rest.split_first()?;
        if found != tag {
            return None;
        }
        let len = if first < 0x80 {
            usize::from(first)
        } else {
            let size = usize::from(first & 0x7f);
            if size == 0 || size > 4 {
                return None;
            }
            let (len, tail) = rest.split_at_checked(size)?;
            rest = tail;
            len.iter().fold(0, |acc, &b| (acc << 8) | usize::from(b))
        };
        let (contents, tail) = rest.split_at_checked(len)?;
        self.0 = tail;
        Some(contents)
    }

    fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// A SubjectPublicKeyInfo (`PUBLIC KEY`): the algorithm OID picks the family.
fn spki(der: &[u8]) -> Result<PublicKey, String> {
    let (oid, key) = spki_parts(der).ok_or(BAD_DER)?;
    match oid {
        OID_RSA | OID_RSA_PSS => rsa_key(key),
        OID_EC if !key.is_empty() => Ok(PublicKey {
            family: AlgorithmFamily::Ec,
            bytes: key.to_vec(),
        }),
        OID_ED25519 if key.len() == 32 => Ok(PublicKey {
            family: AlgorithmFamily::Ed,
            bytes: key.to_vec(),
        }),
        OID_EC | OID_ED25519 => Err(BAD_DER.into()),
        _ => Err("unsupported key type; expected an RSA, EC (P-256, P-384) or Ed25519 key".into()),
    }
}

/// `(algorithm OID, key bits)` of a SubjectPublicKeyInfo.
fn spki_parts(der: &[u8]) -> Option<(&[u8], &[u8])> {
    let mut outer = Der(der);
    let mut info = Der(outer.read(DER_SEQUENCE)?);
    let oid = Der(info.read(DER_SEQUENCE)?).read(DER_OID)?;
    let (&unused_bits, key) = info.read(DER_BIT_STRING)?.split_first()?;
    (unused_bits == 0 && info.is_empty() && outer.is_empty()).then_some((oid, key))
}

/// A PKCS#1 RSAPublicKey: `SEQUENCE { n INTEGER, e INTEGER }` with a 2048 to 4096-bit modulus
/// and an exponent the `rsa` crate accepts (2 to 2^33 - 1).
fn rsa_key(der: &[u8]) -> Result<PublicKey, String> {
    let (modulus, exponent) = rsa_integers(der).ok_or(BAD_DER)?;
    if !(2..=33).contains(&bit_length(exponent)) {
        return Err("RSA key with an unsupported public exponent".into());
    }
    let bits = bit_length(modulus);
    if !RSA_BITS.contains(&bits) {
        return Err(format!(
            "RSA key of {bits} bits; expected 2048 to 4096 bits"
        ));
    }
    Ok(PublicKey {
        family: AlgorithmFamily::Rsa,
        bytes: der.to_vec(),
    })
}

/// `(modulus, exponent)`, big-endian.
fn rsa_integers(der: &[u8]) -> Option<(&[u8], &[u8])> {
    let mut outer = Der(der);
    let mut key = Der(outer.read(DER_SEQUENCE)?);
    let modulus = key.read(DER_INTEGER)?;
    let exponent = key.read(DER_INTEGER)?;
    (key.is_empty() && outer.is_empty()).then_some((modulus, exponent))
}

/// Bits of a big-endian unsigned integer, leading zeros excluded.
fn bit_length(be: &[u8]) -> usize {
    let digits = match be.iter().position(|&b| b != 0) {
        Some(first) => &be[first..],
        None => return 0,
    };
    let top = digits.first().map_or(0, |b| 8 - b.leading_zeros() as usize);
    (digits.len() - 1) * 8 + top
}

fn family_name(family: AlgorithmFamily) -> &'static str {
    match family {
        AlgorithmFamily::Hmac => "an HMAC",
        AlgorithmFamily::Rsa => "an RSA",
        AlgorithmFamily::Ec => "an EC",
        AlgorithmFamily::Ed => "an Ed25519",
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write as _;

    use jsonwebtoken::get_current_timestamp;
    use proptest::prelude::*;
    use serde_json::{json, Value};

    use super::*;

    const SECRET: &str = "0123456789abcdef0123456789abcdef";
    const RSA_PRIVATE: &str = include_str!("../testdata/rsa_private.pem");
    const RSA_PUBLIC: &str = include_str!("../testdata/rsa_public.pem");
    const RSA_PUBLIC_PKCS1: &str = include_str!("../testdata/rsa_public_pkcs1.pem");
    const EC_PRIVATE: &str = include_str!("../testdata/ec_private.pem");
    const EC_PUBLIC: &str = include_str!("../testdata/ec_public.pem");
    const ED_PRIVATE: &str = include_str!("../testdata/ed_private.pem");
    const ED_PUBLIC: &str = include_str!("../testdata/ed_public.pem");

    fn now() -> u64 {
        get_current_timestamp()
    }

    fn claims(sub: &str, exp: u64) -> Value {
        json!({ "sub": sub, "exp": exp, "iat": now() })
    }

    fn sign(algorithm: Algorithm, key: &EncodingKey, claims: &Value) -> String {
        jsonwebtoken::encode(&Header::new(algorithm), claims, key).unwrap()
    }

    fn hs256(claims: &Value) -> String {
        sign(
            Algorithm::HS256,
            &EncodingKey::from_secret(SECRET.as_bytes()),
            claims,
        )
    }

    fn hmac_settings() -> AuthSettings {
        AuthSettings {
            jwt_secret: SECRET.into(),
            ..AuthSettings::default()
        }
    }

    fn validator(auth: &AuthSettings) -> TokenValidator {
        TokenValidator::from_settings(auth).unwrap()
    }

    fn der(pem: &str) -> Vec<u8> {
        pem_block(pem).unwrap().1
    }

    /// `auth` for `algorithm` with `pem` written to a key file (kept alive by the guard).
    fn key_settings(algorithm: &str, pem: &str) -> (tempfile::TempDir, AuthSettings) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("key.pem");
        std::fs::File::create(&path)
            .unwrap()
            .write_all(pem.as_bytes())
            .unwrap();
        let auth = AuthSettings {
            algorithms: vec![algorithm.into()],
            jwt_public_key_file: path.to_string_lossy().into_owned(),
            ..AuthSettings::default()
        };
        (dir, auth)
    }

    fn base64(bytes: &[u8], url: bool) -> String {
        let alphabet: &[u8; 64] = if url {
            b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
        } else {
            b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
        };
        let mut out = String::new();
        for chunk in bytes.chunks(3) {
            let n = chunk
                .iter()
                .enumerate()
                .fold(0u32, |acc, (i, &b)| acc | u32::from(b) << (16 - 8 * i));
            for i in 0..=chunk.len() {
                out.push(char::from(alphabet[(n >> (18 - 6 * i) & 63) as usize]));
            }
        }
        if !url {
            while out.len() % 4 != 0 {
                out.push('=');
            }
        }
        out
    }

    fn armour(label: &str, der: &[u8]) -> String {
        let body = base64(der, false);
        format!("-----BEGIN {label}-----\n{body}\n-----END {label}-----\n")
    }

    fn unsigned_token(header: &str, claims: &Value) -> String {
        let header = base64(header.as_bytes(), true);
        let claims = base64(claims.to_string().as_bytes(), true);
        format!("{header}.{claims}.")
    }

    #[test]
    fn a_valid_hs256_token_is_accepted() {
        let exp = now() + 600;
        let verified = validator(&hmac_settings())
            .validate(&hs256(&claims("user-1", exp)))
            .unwrap();
        assert_eq!(
            verified,
            VerifiedToken {
                user_id: "user-1".into(),
                expires_at: exp
            }
        );
    }

    #[test]
    fn missing_and_malformed_tokens_are_refused() {
        let v = validator(&hmac_settings());
        assert_eq!(v.validate(""), Err(AuthError::Missing));
        for garbage in ["abc", "a.b.c", "...", "eyJhbGciOiJIUzI1NiJ9", "é.é.é"] {
            assert_eq!(v.validate(garbage), Err(AuthError::Malformed), "{garbage}");
        }
        let huge = format!("{}.e30.x", "a".repeat(MAX_TOKEN_BYTES));
        assert_eq!(v.validate(&huge), Err(AuthError::Malformed));
        let not_an_object = format!(
            "{}.{}.",
            base64(br#"{"alg":"HS256"}"#, true),
            base64(b"42", true)
        );
        assert!(v.validate(&not_an_object).is_err());
    }

    #[test]
    fn alg_none_is_refused() {
        let v = validator(&hmac_settings());
        let body = claims("user-1", now() + 600);
        for header in [
            r#"{"alg":"none","typ":"JWT"}"#,
            r#"{"alg":"None","typ":"JWT"}"#,
            r#"{"alg":"NONE"}"#,
            r#"{"typ":"JWT"}"#,
        ] {
            let token = unsigned_token(header, &body);
            let refusal = v.validate(&token).unwrap_err();
            assert!(
                matches!(
                    refusal,
                    AuthError::Malformed | AuthError::AlgorithmNotAllowed
                ),
                "{header}: {refusal:?}"
            );
        }
        let empty_signature = unsigned_token(r#"{"alg":"HS256","typ":"JWT"}"#, &body);
        assert!(v.validate(&empty_signature).is_err());
    }

    #[test]
    fn a_wrong_secret_is_a_bad_signature() {
        let token = sign(
            Algorithm::HS256,
            &EncodingKey::from_secret(b"another-secret-0123456789"),
            &claims("user-1", now() + 600),
        );
        assert_eq!(
            validator(&hmac_settings()).validate(&token),
            Err(AuthError::BadSignature)
        );
    }

    #[test]
    fn expiry_honours_the_leeway() {
        let token = hs256(&claims("user-1", now() - 5));
        assert_eq!(
            validator(&hmac_settings()).validate(&token),
            Err(AuthError::Expired)
        );
        let lenient = AuthSettings {
            leeway_s: 30,
            ..hmac_settings()
        };
        let verified = validator(&lenient).validate(&token).unwrap();
        assert!(verified.expires_at > now(), "deadline includes the leeway");
    }

    #[test]
    fn exp_and_sub_are_required() {
        let v = validator(&hmac_settings());
        let no_exp = hs256(&json!({ "sub": "user-1" }));
        assert_eq!(v.validate(&no_exp), Err(AuthError::MissingClaim("exp")));
        let no_sub = hs256(&json!({ "exp": now() + 600 }));
        assert_eq!(v.validate(&no_sub), Err(AuthError::MissingClaim("sub")));
        let numeric_sub = hs256(&json!({ "sub": 42, "exp": now() + 600 }));
        assert_eq!(
            v.validate(&numeric_sub),
            Err(AuthError::MissingClaim("sub"))
        );
        let text_exp = hs256(&json!({ "sub": "u", "exp": "soon" }));
        assert!(v.validate(&text_exp).is_err());
    }

    /// An HS256 token whose claims are `claims` verbatim (JSON text that `Value` cannot hold).
    fn hs256_raw(claims: &str) -> String {
        hs256_parts(r#"{"alg":"HS256","typ":"JWT"}"#, claims)
    }

    /// An HS256 token whose header is `header` verbatim.
    fn hs256_with_header(header: &str, claims: &Value) -> String {
        hs256_parts(header, &claims.to_string())
    }

    /// An HS256 token of `header` and `claims`, both JSON texts taken verbatim.
    fn hs256_parts(header: &str, claims: &str) -> String {
        let input = format!(
            "{}.{}",
            base64(header.as_bytes(), true),
            base64(claims.as_bytes(), true)
        );
        let key = EncodingKey::from_secret(SECRET.as_bytes());
        let signature = jsonwebtoken::crypto::sign(input.as_bytes(), &key, Algorithm::HS256);
        format!("{input}.{}", signature.unwrap())
    }

    #[test]
    fn any_crit_header_is_refused() {
        let v = validator(&hmac_settings());
        let body = claims("user-1", now() + 600);
        let plain = hs256_with_header(r#"{"alg":"HS256","typ":"JWT"}"#, &body);
        assert!(v.validate(&plain).is_ok(), "the helper signs valid tokens");
        for header in [
            r#"{"alg":"HS256","crit":["urn:example:ext"],"urn:example:ext":1}"#,
            r#"{"alg":"HS256","crit":["b64"],"b64":false}"#,
            r#"{"alg":"HS256","crit":[]}"#,
            r#"{"alg":"HS256","crit":null}"#,
            r#"{"crit":["exp"],"alg":"HS256","typ":"JWT"}"#,
        ] {
            let token = hs256_with_header(header, &body);
            assert_eq!(
                v.validate(&token),
                Err(AuthError::CriticalExtension),
                "{header}"
            );
        }
        let malformed = hs256_with_header(r#"{"alg":"HS256","crit":"b64"}"#, &body);
        assert!(v.validate(&malformed).is_err());
    }

    #[test]
    fn base64url_decodes_jws_segments_only() {
        assert_eq!(base64url_decode("-_8").unwrap(), [0xfb, 0xff]);
        assert_eq!(base64url_decode("eyJ9").unwrap(), b"{\"}");
        for not_url in ["+/8", "eyJ9=", "ey J9", "e*"] {
            assert!(base64url_decode(not_url).is_none(), "{not_url}");
        }
    }

    #[test]
    fn far_future_exps_are_accepted_and_saturate() {
        let lenient = validator(&AuthSettings {
            leeway_s: 30,
            ..hmac_settings()
        });
        for exp in [1u64 << 63, u64::MAX - 1, u64::MAX] {
            let verified = lenient.validate(&hs256(&claims("u", exp))).unwrap();
            assert_eq!(verified.expires_at, exp.saturating_add(30), "exp {exp}");
        }
        let float = hs256_raw(r#"{"sub":"u","exp":1.8e19}"#);
        assert_eq!(
            lenient.validate(&float).unwrap().expires_at,
            18_000_000_000_000_000_030
        );
        let exp = now() + 600;
        let fraction = hs256(&json!({ "sub": "u", "exp": exp as f64 + 0.4 }));
        assert_eq!(lenient.validate(&fraction).unwrap().expires_at, exp + 30);
    }

    #[test]
    fn exps_outside_the_numeric_date_range_are_refused() {
        let v = validator(&hmac_settings());
        for exp in [
            "-1",
            "-1.5",
            "-9223372036854775809",
            "18446744073709551616",
            "1e20",
            "1e400",
            "-1e400",
            "123456789012345678901234567890",
            "true",
            "null",
            "[1]",
        ] {
            let token = hs256_raw(&format!(r#"{{"sub":"u","exp":{exp}}}"#));
            let refusal = v.validate(&token).unwrap_err();
            assert!(
                matches!(
                    refusal,
                    AuthError::Malformed | AuthError::MissingClaim("exp")
                ),
                "exp {exp}: {refusal:?}"
            );
        }
    }

    #[test]
    fn a_future_nbf_is_not_yet_valid() {
        let token = hs256(&json!({ "sub": "u", "exp": now() + 600, "nbf": now() + 300 }));
        assert_eq!(
            validator(&hmac_settings()).validate(&token),
            Err(AuthError::NotYetValid)
        );
    }

    #[test]
    fn an_algorithm_outside_the_list_is_refused() {
        let token = sign(
            Algorithm::HS384,
            &EncodingKey::from_secret(SECRET.as_bytes()),
            &claims("user-1", now() + 600),
        );
        assert_eq!(
            validator(&hmac_settings()).validate(&token),
            Err(AuthError::AlgorithmNotAllowed)
        );
        let both = AuthSettings {
            algorithms: vec!["HS256".into(), "HS384".into()],
            ..hmac_settings()
        };
        assert!(validator(&both).validate(&token).is_ok());
    }

    #[test]
    fn rs256_is_accepted_with_the_public_key_file() {
        let token = sign(
            Algorithm::RS256,
            &EncodingKey::from_rsa_der(&der(RSA_PRIVATE)),
            &claims("user-rsa", now() + 600),
        );
        for public in [RSA_PUBLIC, RSA_PUBLIC_PKCS1] {
            let (_dir, auth) = key_settings("RS256", public);
            assert_eq!(
                validator(&auth).validate(&token).unwrap().user_id,
                "user-rsa"
            );
        }
        let (_dir, auth) = key_settings("PS256", RSA_PUBLIC);
        let pss = sign(
            Algorithm::PS256,
            &EncodingKey::from_rsa_der(&der(RSA_PRIVATE)),
            &claims("user-pss", now() + 600),
        );
        assert_eq!(validator(&auth).validate(&pss).unwrap().user_id, "user-pss");
        assert_eq!(
            validator(&auth).validate(&token),
            Err(AuthError::AlgorithmNotAllowed)
        );
    }

    #[test]
    fn es256_is_accepted_with_the_ec_public_key_file() {
        let (_dir, auth) = key_settings("ES256", EC_PUBLIC);
        let token = sign(
            Algorithm::ES256,
            &EncodingKey::from_ec_der(&der(EC_PRIVATE)),
            &claims("user-ec", now() + 600),
        );
        assert_eq!(
            validator(&auth).validate(&token).unwrap().user_id,
            "user-ec"
        );
        let forged = hs256(&claims("user-ec", now() + 600));
        assert_eq!(
            validator(&auth).validate(&forged),
            Err(AuthError::AlgorithmNotAllowed)
        );
    }

    #[test]
    fn eddsa_is_accepted_with_the_ed25519_public_key_file() {
        let (_dir, auth) = key_settings("EdDSA", ED_PUBLIC);
        let token = sign(
            Algorithm::EdDSA,
            &EncodingKey::from_ed_der(&der(ED_PRIVATE)),
            &claims("user-ed", now() + 600),
        );
        assert_eq!(
            validator(&auth).validate(&token).unwrap().user_id,
            "user-ed"
        );
    }

    #[test]
    fn algorithm_confusion_is_refused() {
        let (_dir, auth) = key_settings("RS256", RSA_PUBLIC);
        for secret in [RSA_PUBLIC.as_bytes().to_vec(), der(RSA_PUBLIC)] {
            let forged = sign(
                Algorithm::HS256,
                &EncodingKey::from_secret(&secret),
                &claims("admin", now() + 600),
            );
            assert_eq!(
                validator(&auth).validate(&forged),
                Err(AuthError::AlgorithmNotAllowed)
            );
        }
        let mixed = AuthSettings {
            algorithms: vec!["RS256".into(), "HS256".into()],
            jwt_secret: SECRET.into(),
            ..auth
        };
        let error = TokenValidator::from_settings(&mixed).unwrap_err();
        assert_eq!(error.key(), Some("auth.algorithms"));
    }

    #[test]
    fn issuer_and_audience_are_checked_when_configured() {
        let strict = AuthSettings {
            issuer: "https://issuer.example".into(),
            audience: "websocket".into(),
            ..hmac_settings()
        };
        let v = validator(&strict);
        let exp = now() + 600;
        let token = |iss: Value, aud: Value| {
            let mut body = claims("u", exp);
            body["iss"] = iss;
            body["aud"] = aud;
            hs256(&body)
        };
        let good = token(
            json!("https://issuer.example"),
            json!(["other", "websocket"]),
        );
        assert!(v.validate(&good).is_ok());
        let bad_iss = token(json!("https://evil.example"), json!("websocket"));
        assert_eq!(v.validate(&bad_iss), Err(AuthError::InvalidIssuer));
        let bad_aud = token(json!("https://issuer.example"), json!("other"));
        assert_eq!(v.validate(&bad_aud), Err(AuthError::InvalidAudience));
        let no_iss = hs256(&json!({ "sub": "u", "exp": exp, "aud": "websocket" }));
        assert_eq!(v.validate(&no_iss), Err(AuthError::MissingClaim("iss")));
        let no_aud = hs256(&json!({ "sub": "u", "exp": exp, "iss": "https://issuer.example" }));
        assert_eq!(v.validate(&no_aud), Err(AuthError::MissingClaim("aud")));
        let lax = validator(&hmac_settings());
        assert!(
            lax.validate(&bad_aud).is_ok(),
            "aud is ignored when not configured"
        );
    }

    #[test]
    fn subjects_are_taken_verbatim_or_refused() {
        let v = validator(&hmac_settings());
        let exp = now() + 600;
        let odd = "ws:*?[:é] user";
        assert_eq!(v.validate(&hs256(&claims(odd, exp))).unwrap().user_id, odd);
        let longest = "u".repeat(MAX_SUBJECT_BYTES);
        assert!(v.validate(&hs256(&claims(&longest, exp))).is_ok());
        for bad in ["", "user\n1", "user\u{7f}", "user\u{85}", &"u".repeat(300)] {
            let token = hs256(&claims(bad, exp));
            assert_eq!(
                v.validate(&token),
                Err(AuthError::InvalidSubject),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn public_messages_fit_the_close_reason() {
        let all = [
            AuthError::Missing,
            AuthError::Malformed,
            AuthError::AlgorithmNotAllowed,
            AuthError::BadSignature,
            AuthError::Expired,
            AuthError::MissingClaim("exp"),
            AuthError::MissingClaim("sub"),
            AuthError::MissingClaim("iss"),
            AuthError::MissingClaim("aud"),
            AuthError::MissingClaim("nbf"),
            AuthError::MissingClaim("other"),
            AuthError::InvalidIssuer,
            AuthError::InvalidAudience,
            AuthError::InvalidSubject,
            AuthError::NotYetValid,
            AuthError::CriticalExtension,
        ];
        for error in all {
            let message = error.public_message();
            assert!(!message.is_empty() && message.len() <= 16, "{message:?}");
        }
    }

    #[test]
    fn key_settings_errors_name_the_key() {
        let (_dir, auth) = key_settings("RS256", EC_PUBLIC);
        let error = TokenValidator::from_settings(&auth).unwrap_err();
        assert_eq!(error.key(), Some(KEY_FILE_KEY), "{error}");
        assert!(error.to_string().contains("holds an EC key"), "{error}");
        let (_dir, auth) = key_settings("ES384", EC_PUBLIC);
        let error = TokenValidator::from_settings(&auth).unwrap_err();
        assert!(error.to_string().contains("not a valid ES384"), "{error}");
        for pem in [
            RSA_PRIVATE,
            EC_PRIVATE,
            "not a key",
            "-----BEGIN PUBLIC KEY-----\n!!\n-----END PUBLIC KEY-----\n",
        ] {
            let (_dir, auth) = key_settings("RS256", pem);
            let error = TokenValidator::from_settings(&auth).unwrap_err();
            assert_eq!(error.key(), Some(KEY_FILE_KEY), "{error}");
            assert!(!error.to_string().contains('\n'), "{error}");
        }
        let (_dir, mut auth) = key_settings("RS256", RSA_PUBLIC);
        auth.jwt_public_key_file = "/nonexistent/key.pem".into();
        let error = TokenValidator::from_settings(&auth).unwrap_err();
        assert!(
            matches!(error, SettingsError::ReadKeyFile { .. }),
            "{error}"
        );
        auth.jwt_public_key_file.clear();
        let error = TokenValidator::from_settings(&auth).unwrap_err();
        assert!(
            error
                .to_string()
                .starts_with("missing setting auth.jwt_public_key_file"),
            "{error}"
        );
    }

    /// A PKCS#1 RSAPublicKey with a 129-byte modulus of `top` followed by zeros.
    fn pkcs1(top: u8, exponent: &[u8]) -> Vec<u8> {
        let mut body = vec![0x02, 0x81, 129, 0x00, top];
        body.resize(body.len() + 127, 0);
        body.extend([0x02, u8::try_from(exponent.len()).unwrap()]);
        body.extend(exponent);
        let mut der = vec![0x30, 0x81, u8::try_from(body.len()).unwrap()];
        der.extend(body);
        der
    }

    #[test]
    fn weak_or_odd_rsa_keys_are_refused() {
        let weak = pkcs1(0x80, &[0x01, 0x00, 0x01]);
        let error = rsa_key(&weak).err().unwrap();
        assert!(error.contains("1024 bits"), "{error}");
        assert!(parse_public_pem(&armour("RSA PUBLIC KEY", &weak)).is_err());
        let error = rsa_key(&pkcs1(0x80, &[0x01])).err().unwrap();
        assert!(error.contains("exponent"), "{error}");
        let mut trailing = der(RSA_PUBLIC_PKCS1);
        trailing.push(0);
        assert_eq!(rsa_key(&trailing).err().unwrap(), BAD_DER);
    }

    #[test]
    fn mint_hs256_round_trips() {
        let token = mint_hs256(SECRET, "demo-user", Duration::from_secs(60)).unwrap();
        let verified = validator(&hmac_settings()).validate(&token).unwrap();
        assert_eq!(verified.user_id, "demo-user");
        assert!(verified.expires_at >= now() + 59);
        assert!(mint_hs256("", "demo-user", Duration::from_secs(60)).is_err());
    }

    #[test]
    fn debug_does_not_show_the_secret() {
        let text = format!("{:?}", validator(&hmac_settings()));
        assert!(!text.contains(SECRET) && text.contains("HS256"), "{text}");
    }

    #[test]
    fn base64_decodes_what_it_should() {
        assert_eq!(base64_decode("aGVsbG8=").unwrap(), b"hello");
        assert_eq!(base64_decode("aGVs\nbG8").unwrap(), b"hello");
        assert_eq!(base64_decode("").unwrap(), b"");
        assert!(base64_decode("aGV*").is_none());
        assert_eq!(bit_length(&[0x00, 0x01, 0x00]), 9);
        assert_eq!(bit_length(&[0x00]), 0);
    }

    proptest! {
        #[test]
        fn base64_round_trips(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
            prop_assert_eq!(base64_decode(&base64(&bytes, false)).unwrap(), bytes);
        }

        #[test]
        fn any_key_file_content_is_handled(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
            for label in ["PUBLIC KEY", "RSA PUBLIC KEY"] {
                let _ = parse_public_pem(&armour(label, &bytes));
            }
        }

        #[test]
        fn corrupted_key_files_are_handled(
            which in 0..4usize,
            at in any::<proptest::sample::Index>(),
            byte in any::<u8>(),
            cut in any::<proptest::sample::Index>(),
        ) {
            let (pem, algorithm) = [
                (RSA_PUBLIC, Algorithm::RS256),
                (RSA_PUBLIC_PKCS1, Algorithm::PS256),
                (EC_PUBLIC, Algorithm::ES256),
                (ED_PUBLIC, Algorithm::EdDSA),
            ][which];
            let (label, mut bytes) = pem_block(pem).unwrap();
            let at = at.index(bytes.len());
            bytes[at] = byte;
            bytes.truncate(cut.index(bytes.len() + 1));
            if let Ok(key) = parse_public_pem(&armour(label, &bytes)) {
                let _ = probe(&key.decoding_key(), &[algorithm], Path::new("key.pem"));
            }
        }

        #[test]
        fn any_token_is_handled(token in "\\PC{0,64}", parts in proptest::collection::vec("[A-Za-z0-9_-]{0,40}", 0..5)) {
            let v = validator(&hmac_settings());
            prop_assert!(v.validate(&token).is_err());
            prop_assert!(v.validate(&parts.join(".")).is_err());
        }
    }
}
