//! What a WebSocket upgrade request offers, read without side effects: its token (from the
//! `token` query parameter, the `bearer` subprotocol pair or `Authorization: Bearer`) and whether
//! its `Origin` is allowed.

use actix_http::header::{self, HeaderMap};
use actix_http::RequestHead;

use super::bearer::bearer_credential;

/// The subprotocol that carries a token: `Sec-WebSocket-Protocol: bearer, <JWT>`.
pub(super) const BEARER_PROTOCOL: &str = "bearer";

/// Where the token came from; the subprotocol must be echoed in the 101 answer.
pub(super) struct OfferedToken<'a> {
    pub(super) token: Option<&'a str>,
    pub(super) bearer_offered: bool,
}

pub(super) fn offered_token(head: &RequestHead) -> OfferedToken<'_> {
    let (bearer_offered, protocol_token) = protocol_token(&head.headers);
    let token = query_token(head.uri.query().unwrap_or(""))
        .or(protocol_token)
        .or_else(|| bearer_credential(&head.headers));
    OfferedToken {
        token,
        bearer_offered,
    }
}

fn query_token(query: &str) -> Option<&str> {
    query
        .split('&')
        .find_map(|pair| pair.strip_prefix("token="))
        .filter(|token| !token.is_empty())
}

/// `(bearer offered, token)` from `Sec-WebSocket-Protocol: bearer, <JWT>`.
fn protocol_token(headers: &HeaderMap) -> (bool, Option<&str>) {
    let mut offered = false;
    let mut token = None;
    for value in headers.get_all(header::SEC_WEBSOCKET_PROTOCOL) {
        let Ok(value) = value.to_str() else { continue };
        let mut parts = value.split(',').map(str::trim);
        while let Some(part) = parts.next() {
            if part == BEARER_PROTOCOL {
                offered = true;
                token = token.or(parts.next().filter(|t| !t.is_empty()));
            }
        }
    }
    (offered, token)
}

pub(super) fn origin_allowed(headers: &HeaderMap, allowed: &[String]) -> bool {
    if allowed.is_empty() {
        return true;
    }
    match headers.get(header::ORIGIN).map(|o| o.to_str()) {
        None => true, // not a browser: origin checks protect browsers only
        Some(Ok(origin)) => allowed.iter().any(|a| a.eq_ignore_ascii_case(origin)),
        Some(Err(_)) => false,
    }
}

#[cfg(test)]
mod tests {
    use actix_http::header::HeaderValue;
    use actix_web::test::TestRequest;

    use super::*;

    fn head_of(request: TestRequest) -> RequestHead {
        request.to_request().head().clone()
    }

    #[test]
    fn token_is_found_in_each_place() {
        let head = head_of(TestRequest::default().uri("/ws?a=1&token=abc"));
        assert_eq!(offered_token(&head).token, Some("abc"));
        let head = head_of(
            TestRequest::default().insert_header((header::SEC_WEBSOCKET_PROTOCOL, "bearer, xyz")),
        );
        let offered = offered_token(&head);
        assert_eq!(offered.token, Some("xyz"));
        assert!(offered.bearer_offered);
        let head =
            head_of(TestRequest::default().insert_header((header::AUTHORIZATION, "Bearer t0k")));
        assert_eq!(offered_token(&head).token, Some("t0k"));
        let head = head_of(TestRequest::default().uri("/ws"));
        assert_eq!(offered_token(&head).token, None);
    }

    #[test]
    fn origin_is_checked_only_when_configured() {
        let allowed = vec!["https://app.example".to_owned()];
        let mut good = HeaderMap::new();
        good.insert(
            header::ORIGIN,
            HeaderValue::from_static("https://app.example"),
        );
        let mut bad = HeaderMap::new();
        bad.insert(
            header::ORIGIN,
            HeaderValue::from_static("https://evil.example"),
        );
        assert!(origin_allowed(&good, &allowed));
        assert!(!origin_allowed(&bad, &allowed));
        assert!(origin_allowed(&bad, &[]));
    }
}
