//! Shared by the auth unit tests: the test keys, a secret, token signers and options.

use std::io::Write as _;

use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine as _;
use jsonwebtoken::{get_current_timestamp, Algorithm, EncodingKey, Header};
use serde_json::{json, Value};

use super::public_key::pem_block;
use super::{TokenValidator, ValidatorOptions};

pub(super) const SECRET: &str = "0123456789abcdef0123456789abcdef";
pub(super) const RSA_PRIVATE: &str = include_str!("../testdata/rsa_private.pem");
pub(super) const RSA_PUBLIC: &str = include_str!("../testdata/rsa_public.pem");
pub(super) const RSA_PUBLIC_PKCS1: &str = include_str!("../testdata/rsa_public_pkcs1.pem");
pub(super) const EC_PRIVATE: &str = include_str!("../testdata/ec_private.pem");
pub(super) const EC_PUBLIC: &str = include_str!("../testdata/ec_public.pem");
pub(super) const ED_PRIVATE: &str = include_str!("../testdata/ed_private.pem");
pub(super) const ED_PUBLIC: &str = include_str!("../testdata/ed_public.pem");

pub(super) fn now() -> u64 {
    get_current_timestamp()
}

pub(super) fn claims(sub: &str, exp: u64) -> Value {
    json!({ "sub": sub, "exp": exp, "iat": now() })
}

pub(super) fn sign(algorithm: Algorithm, key: &EncodingKey, claims: &Value) -> String {
    jsonwebtoken::encode(&Header::new(algorithm), claims, key).unwrap()
}

pub(super) fn hs256(claims: &Value) -> String {
    sign(
        Algorithm::HS256,
        &EncodingKey::from_secret(SECRET.as_bytes()),
        claims,
    )
}

pub(super) fn hmac_options() -> ValidatorOptions {
    ValidatorOptions {
        secret: SECRET.into(),
        ..ValidatorOptions::default()
    }
}

pub(super) fn validator(options: &ValidatorOptions) -> TokenValidator {
    TokenValidator::new(options).unwrap()
}

/// The DER body of a test key file.
pub(super) fn der(pem: &str) -> Vec<u8> {
    pem_block(pem).unwrap().1
}

/// Options for `algorithm` with `pem` written to a key file (kept alive by the guard).
pub(super) fn key_options(algorithm: &str, pem: &str) -> (tempfile::TempDir, ValidatorOptions) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("key.pem");
    std::fs::File::create(&path)
        .unwrap()
        .write_all(pem.as_bytes())
        .unwrap();
    let options = ValidatorOptions {
        algorithms: vec![algorithm.into()],
        public_key_file: path.to_string_lossy().into_owned(),
        ..ValidatorOptions::default()
    };
    (dir, options)
}

/// Unpadded base64url, as JWS segments are written.
pub(super) fn base64url(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

/// `der` in a PEM block labelled `label`, its base64 on one line.
pub(super) fn armour(label: &str, der: &[u8]) -> String {
    let body = STANDARD.encode(der);
    format!("-----BEGIN {label}-----\n{body}\n-----END {label}-----\n")
}
