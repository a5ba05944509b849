//! JWT minting: HS256 tokens with the `sub` and `exp` claims the server requires, signed with
//! the deployment's shared secret; and the user ids of a run (`{user_prefix}-{index}`).

use anyhow::Context as _;
use jsonwebtoken::{encode, Algorithm, EncodingKey, Header};
use serde::Serialize;

#[derive(Serialize)]
struct Claims<'a> {
    sub: &'a str,
    exp: u64,
}

/// Mints tokens for any user id, all expiring at the same time.
pub struct Minter {
    key: EncodingKey,
    header: Header,
    exp: u64,
}

impl Minter {
    /// A minter for `secret` whose tokens expire `ttl_s` seconds from now.
    pub fn new(secret: &str, ttl_s: u64) -> Self {
        Self {
            key: EncodingKey::from_secret(secret.as_bytes()),
            header: Header::new(Algorithm::HS256),
            exp: crate::util::now_us() / 1_000_000 + ttl_s,
        }
    }

    /// A signed token for `user`.
    pub fn mint(&self, user: &str) -> anyhow::Result<String> {
        let claims = Claims {
            sub: user,
            exp: self.exp,
        };
        encode(&self.header, &claims, &self.key).context("signing a JWT")
    }
}

/// The user id of user number `index` of a run: `{user_prefix}-{index}`.
pub fn user_id(user_prefix: &str, index: u64) -> String {
    format!("{user_prefix}-{index}")
}
