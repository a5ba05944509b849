//! The two ways auth fails: [`AuthError`], why a client's token is refused, and
//! [`SetupError`], why a [`TokenValidator`](super::TokenValidator) cannot be built from its
//! options (the caller, `config`, names the setting).

use std::path::PathBuf;

use jsonwebtoken::{Algorithm, AlgorithmFamily};

use super::public_key::KeyFileError;
use super::{ALGORITHM_NAMES, MAX_LEEWAY_S, MIN_SECRET_BYTES};

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

/// Why a [`TokenValidator`](super::TokenValidator) cannot be built. `Display` is the reason only,
/// on one line; which setting it is about is the caller's to say.
#[non_exhaustive]
#[derive(thiserror::Error, Debug)]
pub enum SetupError {
    /// An `algorithms` entry is no JWS algorithm name.
    #[error("unknown algorithm {name:?}; expected one of {ALGORITHM_NAMES}")]
    UnknownAlgorithm {
        /// The entry, verbatim.
        name: String,
    },
    /// `algorithms` is empty.
    #[error("must list at least one of {ALGORITHM_NAMES}")]
    NoAlgorithm,
    /// `algorithms` names several key families (the algorithm-confusion guard).
    #[error(
        "{algorithms:?} mixes key types; list HMAC (HS*), RSA (RS*, PS*), EC (ES*) or EdDSA \
         algorithms only, never several (algorithm confusion guard)"
    )]
    MixedKeyTypes {
        /// The configured names.
        algorithms: Vec<String>,
    },
    /// HMAC algorithms with a public key file and no secret.
    #[error(
        "{algorithms:?} use auth.jwt_secret, not auth.jwt_public_key_file; list the key's \
         algorithm (RS256, ES256, EdDSA, …)"
    )]
    KeyFileForHmac {
        /// The configured names.
        algorithms: Vec<String>,
    },
    /// `leeway_s` is above [`MAX_LEEWAY_S`].
    #[error("must be at most {MAX_LEEWAY_S}, got {leeway_s}")]
    LeewayTooLarge {
        /// The configured leeway.
        leeway_s: u64,
    },
    /// HMAC algorithms and no secret.
    #[error("set it (or auth.jwt_public_key_file), or run with --dev")]
    NoSecret,
    /// The secret is shorter than [`MIN_SECRET_BYTES`].
    #[error("must be at least {MIN_SECRET_BYTES} bytes, got {len}")]
    ShortSecret {
        /// Its length in bytes.
        len: usize,
    },
    /// RSA, EC or EdDSA algorithms and no public key file.
    #[error("auth.algorithms {algorithms:?} need a PEM public key file")]
    NoKeyFile {
        /// The configured names.
        algorithms: Vec<String>,
    },
    /// The public key file cannot be read.
    #[error("cannot read {path:?}: {source}")]
    ReadKeyFile {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The public key file holds no usable public key.
    #[error("{path:?}: {reason}")]
    BadKeyFile {
        /// The file.
        path: PathBuf,
        /// What is wrong with its content.
        reason: KeyFileError,
    },
    /// The public key is of another family than the algorithms.
    #[error(
        "{path:?} holds {} key, but auth.algorithms {algorithms:?} need {} key",
        family_name(*found),
        family_name(*needed)
    )]
    WrongKeyType {
        /// The file.
        path: PathBuf,
        /// The family of its key.
        found: AlgorithmFamily,
        /// The configured names.
        algorithms: Vec<String>,
        /// The family of the algorithms.
        needed: AlgorithmFamily,
    },
    /// The crypto backend refuses the key for one of the algorithms (a point off the curve, a
    /// P-256 key for ES384).
    #[error("{path:?} is not a valid {algorithm:?} public key")]
    UnusableKey {
        /// The file.
        path: PathBuf,
        /// The algorithm that cannot use it.
        algorithm: Algorithm,
    },
}

/// "an RSA", "an EC", … for the messages.
fn family_name(family: AlgorithmFamily) -> &'static str {
    match family {
        AlgorithmFamily::Hmac => "an HMAC",
        AlgorithmFamily::Rsa => "an RSA",
        AlgorithmFamily::Ec => "an EC",
        AlgorithmFamily::Ed => "an Ed25519",
    }
}
