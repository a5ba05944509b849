//! Who may use the console and its API, decided from the request's headers alone (before any
//! body is read):
//!
//! - `Authorization: Bearer <admin_key>`: scripts and curl. Compared in constant time (both
//!   sides hashed with SHA-256 first, so neither the content nor the length leaks). No CSRF
//!   token: a browser never attaches this header by itself.
//! - The console's session cookie, set by `POST /api/v1/admin/login` after the key was posted
//!   once: `HttpOnly`, `SameSite=Strict`, `Path=/`, and `Secure` (named `__Host-ws_console`)
//!   unless the request is plain HTTP to a loopback host (`localhost`, `127.0.0.0/8`, `[::1]`,
//!   e.g. a `kubectl port-forward`), where browsers would drop a `Secure` cookie; any other
//!   host must be served over HTTPS (by the ingress, which sets `X-Forwarded-Proto`). Every
//!   state-changing request with the cookie must carry the synchronizer token of the session in
//!   `X-CSRF-Token`.
//!
//! Sessions are stateless, so any replica sharing the admin key accepts them: the cookie is
//! `v1.<expiry>.<nonce>.<mac>`, an HMAC-SHA256 under a key derived from the admin key, and the
//! CSRF token is the HMAC of the cookie under the same key. A session ends at its expiry
//! ([`SESSION_TTL`]), at logout (the browser forgets it) or when the admin key changes.

use std::net::IpAddr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use actix_web::http::header;
use actix_web::HttpRequest;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};
use ws_actors::ErrorCode;

use crate::correlation::CorrelationId;
use crate::errors::ApiError;

type HmacSha256 = Hmac<Sha256>;

/// How long a console session lasts after login.
pub const SESSION_TTL: Duration = Duration::from_secs(8 * 3600);
/// The cookie's name over HTTPS (the `__Host-` prefix: `Secure`, `Path=/`, no `Domain`).
const SECURE_COOKIE: &str = "__Host-ws_console";
/// The cookie's name over plain HTTP on loopback.
const LOOPBACK_COOKIE: &str = "ws_console";
/// The header carrying the CSRF token.
pub const CSRF_HEADER: &str = "x-csrf-token";
/// Labels the session key derived from the admin key.
const SESSION_KEY_LABEL: &[u8] = b"websocket-service console session v1";

/// How a request was authorised (logged with each operator action; never the key).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Operator {
    /// `Authorization: Bearer <admin_key>`.
    Key,
    /// The console's session cookie (and its CSRF token for a state change).
    Session,
}

impl Operator {
    /// For logs.
    pub fn as_str(self) -> &'static str {
        match self {
            Operator::Key => "admin_key",
            Operator::Session => "console_session",
        }
    }
}

/// A freshly issued session.
pub struct Issued {
    /// The cookie's value.
    pub cookie: String,
    /// Its CSRF token.
    pub csrf: String,
    /// When it expires.
    pub expires: SystemTime,
}

/// The admin key, kept only as what is needed to check it and to sign sessions.
pub struct AdminAuth {
    key_digest: [u8; 32],
    /// HMAC-SHA256 keyed with the session key (derived from the admin key), cloned per use.
    session_mac: HmacSha256,
}

/// HMAC refused a key (it takes any length, so this does not happen).
#[derive(Debug, thiserror::Error)]
#[error("console.admin_key is not a usable HMAC key")]
pub struct UnusableKey;

impl AdminAuth {
    /// Derives what the console needs from `admin_key`.
    pub fn new(admin_key: &str) -> Result<Self, UnusableKey> {
        let mut derive =
            <HmacSha256 as Mac>::new_from_slice(admin_key.as_bytes()).map_err(|_| UnusableKey)?;
        derive.update(SESSION_KEY_LABEL);
        let session_key = derive.finalize().into_bytes();
        let session_mac =
            <HmacSha256 as Mac>::new_from_slice(&session_key).map_err(|_| UnusableKey)?;
        Ok(Self {
            key_digest: Sha256::digest(admin_key.as_bytes()).into(),
            session_mac,
        })
    }

    /// Whether `presented` is the admin key, compared in constant time.
    pub fn key_matches(&self, presented: &str) -> bool {
        let digest: [u8; 32] = Sha256::digest(presented.as_bytes()).into();
        constant_time_eq(&digest, &self.key_digest)
    }

    /// A new session valid from `now` for [`SESSION_TTL`].
    pub fn issue(&self, now: SystemTime) -> Issued {
        let expires = now + SESSION_TTL;
        let expiry = unix_seconds(expires);
        let nonce = uuid::Uuid::new_v4().simple();
        let body = format!("v1.{expiry}.{nonce}");
        let signature = URL_SAFE_NO_PAD.encode(self.sign(body.as_bytes()));
        let cookie = format!("{body}.{signature}");
        let csrf = self.csrf_of(&cookie);
        Issued {
            cookie,
            csrf,
            expires,
        }
    }

    /// The session's expiry when `cookie` is one this key signed and it has not expired.
    pub fn verify(&self, cookie: &str, now: SystemTime) -> Option<SystemTime> {
        let (body, signature) = cookie.rsplit_once('.')?;
        let signature = URL_SAFE_NO_PAD.decode(signature).ok()?;
        let mut mac = self.session_mac.clone();
        mac.update(body.as_bytes());
        mac.verify_slice(&signature).ok()?;
        let mut parts = body.split('.');
        let (Some("v1"), Some(expiry)) = (parts.next(), parts.next()) else {
            return None;
        };
        let expires = UNIX_EPOCH.checked_add(Duration::from_secs(expiry.parse().ok()?))?;
        (expires > now).then_some(expires)
    }

    /// The CSRF token of the request's session, when it has a valid one.
    pub fn session_csrf(&self, req: &HttpRequest) -> Option<String> {
        let cookie = session_cookie(req)?;
        self.verify(cookie, SystemTime::now())?;
        Some(self.csrf_of(cookie))
    }

    /// The CSRF token of the session `cookie`.
    pub fn csrf_of(&self, cookie: &str) -> String {
        let mut input = b"csrf:".to_vec();
        input.extend_from_slice(cookie.as_bytes());
        URL_SAFE_NO_PAD.encode(self.sign(&input))
    }

    fn sign(&self, input: &[u8]) -> [u8; 32] {
        let mut mac = self.session_mac.clone();
        mac.update(input);
        mac.finalize().into_bytes().into()
    }

    /// Authorises `req`: the admin key, else a valid session (with its CSRF token when
    /// `changes_state`). 401 without either, 403 for a session without the right token.
    pub fn authorize(
        &self,
        req: &HttpRequest,
        changes_state: bool,
        cid: &CorrelationId,
    ) -> Result<Operator, ApiError> {
        if let Some(key) = bearer(req) {
            return if self.key_matches(key) {
                Ok(Operator::Key)
            } else {
                Err(unauthorized(cid))
            };
        }
        let Some(cookie) = session_cookie(req) else {
            return Err(unauthorized(cid));
        };
        if self.verify(cookie, SystemTime::now()).is_none() {
            return Err(unauthorized(cid));
        }
        if changes_state {
            let presented = req
                .headers()
                .get(CSRF_HEADER)
                .and_then(|value| value.to_str().ok())
                .unwrap_or("");
            let expected = self.csrf_of(cookie);
            if !constant_time_eq(presented.as_bytes(), expected.as_bytes()) {
                return Err(ApiError::new(
                    ErrorCode::AuthenticationError,
                    "missing or wrong CSRF token (X-CSRF-Token)",
                    cid,
                )
                .with_status(actix_web::http::StatusCode::FORBIDDEN));
            }
        }
        Ok(Operator::Session)
    }
}

fn unix_seconds(time: SystemTime) -> u64 {
    time.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

/// Compares without an early exit, so timing does not reveal how much matched.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// The 401 for a request without the admin key or a valid session.
pub fn unauthorized(cid: &CorrelationId) -> ApiError {
    ApiError::new(
        ErrorCode::AuthenticationError,
        "missing or wrong admin key (Authorization: Bearer <admin_key>) or console session",
        cid,
    )
}

fn bearer(req: &HttpRequest) -> Option<&str> {
    req.headers()
        .get(header::AUTHORIZATION)?
        .to_str()
        .ok()?
        .strip_prefix("Bearer ")
        .map(str::trim)
}

/// Whether the browser sees this request as plain HTTP to a loopback host (no `Secure`
/// cookie possible there); `X-Forwarded-Proto`/`Forwarded` are honoured.
fn plain_http_loopback(req: &HttpRequest) -> bool {
    let info = req.connection_info();
    info.scheme() == "http" && host_is_loopback(info.host())
}

/// `localhost`, `*.localhost`, or a loopback address, with or without a port.
fn host_is_loopback(host: &str) -> bool {
    let name = match host.strip_prefix('[') {
        Some(rest) => rest.split(']').next().unwrap_or(""),
        None => host.rsplit_once(':').map_or(host, |(name, _)| name),
    };
    let name = name.to_ascii_lowercase();
    name == "localhost"
        || name.ends_with(".localhost")
        || name.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

/// The cookie name in force for `req`.
fn cookie_name(req: &HttpRequest) -> &'static str {
    if plain_http_loopback(req) {
        LOOPBACK_COOKIE
    } else {
        SECURE_COOKIE
    }
}

/// The session cookie's value, under the name in force for this request.
fn session_cookie(req: &HttpRequest) -> Option<&str> {
    let name = cookie_name(req);
    req.headers()
        .get_all(header::COOKIE)
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(key, _)| *key == name)
        .map(|(_, value)| value)
}

/// The `Set-Cookie` value that stores `value` for `max_age` (zero: deletes the cookie).
pub fn set_cookie(req: &HttpRequest, value: &str, max_age: Duration) -> String {
    let secure = if plain_http_loopback(req) {
        ""
    } else {
        "; Secure"
    };
    format!(
        "{}={value}; Path=/; Max-Age={}; HttpOnly; SameSite=Strict{secure}",
        cookie_name(req),
        max_age.as_secs()
    )
}

#[cfg(test)]
mod tests {
    use actix_web::test::TestRequest;

    use super::*;

    const KEY: &str = "admin-key-0123456789";

    #[test]
    fn the_key_matches_only_itself() {
        let auth = AdminAuth::new(KEY).unwrap();
        assert!(auth.key_matches(KEY));
        assert!(!auth.key_matches("admin-key-012345678"));
        assert!(!auth.key_matches(""));
    }

    #[test]
    fn sessions_verify_until_expiry_and_only_under_their_key() {
        let auth = AdminAuth::new(KEY).unwrap();
        let now = SystemTime::now();
        let issued = auth.issue(now);
        assert!(auth.verify(&issued.cookie, now).is_some());
        assert!(auth.verify(&issued.cookie, issued.expires).is_none());
        assert!(AdminAuth::new("another-admin-key-000")
            .unwrap()
            .verify(&issued.cookie, now)
            .is_none());
        let forged = issued.cookie.replacen("v1.", "v1.9", 1);
        assert!(auth.verify(&forged, now).is_none());
        assert_eq!(auth.csrf_of(&issued.cookie), issued.csrf);
        assert_ne!(auth.csrf_of(&auth.issue(now).cookie), issued.csrf);
    }

    #[test]
    fn loopback_hosts_are_recognised() {
        for host in [
            "localhost",
            "localhost:8080",
            "127.0.0.1:1",
            "[::1]:80",
            "a.localhost",
        ] {
            assert!(host_is_loopback(host), "{host}");
        }
        for host in [
            "example.com",
            "10.0.0.1:80",
            "localhost.example.com",
            "[2001:db8::1]",
        ] {
            assert!(!host_is_loopback(host), "{host}");
        }
    }

    #[test]
    fn cookies_are_secure_unless_plain_http_on_loopback() {
        let local = TestRequest::default()
            .insert_header((header::HOST, "127.0.0.1:8080"))
            .to_http_request();
        let cookie = set_cookie(&local, "v", SESSION_TTL);
        assert_eq!(
            cookie,
            "ws_console=v; Path=/; Max-Age=28800; HttpOnly; SameSite=Strict"
        );
        let public = TestRequest::default()
            .insert_header((header::HOST, "console.example.com"))
            .insert_header(("x-forwarded-proto", "https"))
            .to_http_request();
        let cookie = set_cookie(&public, "v", SESSION_TTL);
        assert!(cookie.starts_with("__Host-ws_console=v; Path=/;"));
        assert!(cookie.ends_with("; HttpOnly; SameSite=Strict; Secure"));
        let forwarded = TestRequest::default()
            .insert_header((header::HOST, "localhost:8080"))
            .insert_header(("x-forwarded-proto", "https"))
            .to_http_request();
        assert!(set_cookie(&forwarded, "v", SESSION_TTL).ends_with("; Secure"));
    }

    #[test]
    fn a_session_needs_its_csrf_token_to_change_state() {
        let auth = AdminAuth::new(KEY).unwrap();
        let issued = auth.issue(SystemTime::now());
        let cid = CorrelationId::generate();
        let request = |csrf: Option<&str>| {
            let mut req = TestRequest::default()
                .insert_header((header::HOST, "localhost"))
                .insert_header((header::COOKIE, format!("a=b; ws_console={}", issued.cookie)));
            if let Some(csrf) = csrf {
                req = req.insert_header((CSRF_HEADER, csrf.to_owned()));
            }
            req.to_http_request()
        };
        assert_eq!(
            auth.authorize(&request(None), false, &cid).ok(),
            Some(Operator::Session)
        );
        let refused = auth.authorize(&request(None), true, &cid).unwrap_err();
        assert_eq!(actix_web::ResponseError::status_code(&refused), 403);
        assert!(auth.authorize(&request(Some("nope")), true, &cid).is_err());
        assert!(auth
            .authorize(&request(Some(&issued.csrf)), true, &cid)
            .is_ok());
        let keyed = TestRequest::default()
            .insert_header((header::AUTHORIZATION, format!("Bearer {KEY}")))
            .to_http_request();
        assert_eq!(auth.authorize(&keyed, true, &cid).ok(), Some(Operator::Key));
        let wrong = TestRequest::default()
            .insert_header((header::AUTHORIZATION, "Bearer wrong"))
            .to_http_request();
        let refused = auth.authorize(&wrong, false, &cid).unwrap_err();
        assert_eq!(actix_web::ResponseError::status_code(&refused), 401);
    }
}
