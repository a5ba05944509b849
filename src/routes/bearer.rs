//! The `Authorization: Bearer <credential>` header (RFC 6750 §2.1), read the same way by every
//! route that accepts one: the WebSocket upgrade (a JWT) and the publish API (its key).

use actix_http::header::{self, HeaderMap};

/// The credential of an `Authorization: Bearer …` header, without surrounding spaces; `None`
/// when there is no such header, it is not ASCII, or its scheme is not `Bearer`.
pub(super) fn bearer_credential(headers: &HeaderMap) -> Option<&str> {
    headers
        .get(header::AUTHORIZATION)?
        .to_str()
        .ok()?
        .strip_prefix("Bearer ")
        .map(str::trim)
}

#[cfg(test)]
mod tests {
    use actix_http::header::HeaderValue;

    use super::*;

    fn with_authorization(value: &'static str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(header::AUTHORIZATION, HeaderValue::from_static(value));
        headers
    }

    #[test]
    fn reads_the_credential_of_a_bearer_header_only() {
        assert_eq!(
            bearer_credential(&with_authorization("Bearer abc.def")),
            Some("abc.def")
        );
        assert_eq!(
            bearer_credential(&with_authorization("Bearer  spaced ")),
            Some("spaced")
        );
        assert_eq!(bearer_credential(&with_authorization("Basic abc")), None);
        assert_eq!(bearer_credential(&HeaderMap::new()), None);
    }
}
