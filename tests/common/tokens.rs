//! JWTs for tests: valid HS256 tokens for [`SECRET`], and every kind of bad token a server
//! must refuse.

use std::time::{SystemTime, UNIX_EPOCH};

use jsonwebtoken::{encode, Algorithm, EncodingKey, Header};
use serde_json::{json, Value};

use super::SECRET;

/// Unix time in seconds.
pub fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
        .as_secs()
}

/// Signs `claims` with `alg` and `secret`.
pub fn sign(alg: Algorithm, secret: &str, claims: &Value) -> String {
    encode(
        &Header::new(alg),
        claims,
        &EncodingKey::from_secret(secret.as_bytes()),
    )
    .expect("sign JWT")
}

/// A valid HS256 token for `sub`, expiring in an hour.
pub fn token(sub: &str) -> String {
    token_expiring(sub, now() + 3600)
}

/// A valid-signature HS256 token for `sub` with `exp`.
pub fn token_expiring(sub: &str, exp: u64) -> String {
    sign(
        Algorithm::HS256,
        SECRET,
        &json!({ "sub": sub, "exp": exp, "iat": now() }),
    )
}

/// Expired an hour ago.
pub fn expired_token(sub: &str) -> String {
    token_expiring(sub, now() - 3600)
}

/// Signed with another secret.
pub fn wrong_secret_token(sub: &str) -> String {
    sign(
        Algorithm::HS256,
        "another-secret-0123456789abcdef",
        &json!({ "sub": sub, "exp": now() + 3600 }),
    )
}

/// No `exp` claim.
pub fn no_exp_token(sub: &str) -> String {
    sign(
        Algorithm::HS256,
        SECRET,
        &json!({ "sub": sub, "iat": now() }),
    )
}

/// HS384 with the right secret (algorithm not allowed).
pub fn hs384_token(sub: &str) -> String {
    sign(
        Algorithm::HS384,
        SECRET,
        &json!({ "sub": sub, "exp": now() + 3600 }),
    )
}

/// An unsigned token (`alg: none`), which must be refused.
pub fn alg_none_token(sub: &str) -> String {
    let header = base64url(br#"{"alg":"none","typ":"JWT"}"#);
    let claims = json!({ "sub": sub, "exp": now() + 3600 }).to_string();
    format!("{header}.{}.", base64url(claims.as_bytes()))
}

/// Unpadded base64url.
pub fn base64url(data: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut out = String::new();
    for chunk in data.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..=chunk.len() {
            out.push(char::from(ALPHABET[((n >> (18 - 6 * i)) & 63) as usize]));
        }
    }
    out
}

/// True when `s` looks like a compact JWS: three non-empty base64url parts, header starting `eyJ`.
pub fn looks_like_jwt(s: &str) -> bool {
    let parts: Vec<&str> = s.split('.').collect();
    parts.len() == 3
        && parts[0].starts_with("eyJ")
        && parts.iter().all(|p| {
            !p.is_empty()
                && p.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        })
}
