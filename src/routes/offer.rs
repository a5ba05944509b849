//! What a WebSocket upgrade request offers, read without side effects: its token (from the
//! `token` query parameter, the `bearer` subprotocol pair or `Authorization: Bearer`), the
//! protocol it asks for (`v=2`, the `notify.v2` subprotocol, `since=<epoch>:<offset>`) and
//! whether its `Origin` is allowed.

use actix_http::header::{self, HeaderMap};
use actix_http::RequestHead;

use ws_actors::history::Position;
use ws_actors::v2::Protocol;

use super::bearer::bearer_credential;

/// The subprotocol that carries a token: `Sec-WebSocket-Protocol: bearer, <JWT>`.
pub(super) const BEARER_PROTOCOL: &str = "bearer";
/// The subprotocol that asks for protocol v2.
pub(super) const V2_PROTOCOL: &str = "notify.v2";

/// Where the token came from, and the subprotocols offered (one is echoed in the 101 answer).
pub(super) struct OfferedToken<'a> {
    pub(super) token: Option<&'a str>,
    pub(super) bearer_offered: bool,
    pub(super) v2_offered: bool,
}

impl OfferedToken<'_> {
    /// The subprotocol the 101 answer selects: `notify.v2` when offered, else `bearer` when
    /// offered (a browser fails a handshake whose answer selects none of its offers).
    pub(super) fn selected_protocol(&self) -> Option<&'static str> {
        if self.v2_offered {
            Some(V2_PROTOCOL)
        } else if self.bearer_offered {
            Some(BEARER_PROTOCOL)
        } else {
            None
        }
    }
}

pub(super) fn offered_token(head: &RequestHead) -> OfferedToken<'_> {
    let offer = subprotocols(&head.headers);
    let token = query_value(head.uri.query().unwrap_or(""), "token")
        .or(offer.token)
        .or_else(|| bearer_credential(&head.headers));
    OfferedToken {
        token,
        bearer_offered: offer.bearer,
        v2_offered: offer.v2,
    }
}

/// The protocol the request asks for: v2 with `v=2`, the `notify.v2` subprotocol or a `since`;
/// legacy otherwise. An unknown `v` or a malformed `since` is an error (its message says why).
pub(super) fn requested_protocol(
    head: &RequestHead,
    v2_offered: bool,
) -> Result<Protocol, &'static str> {
    let query = head.uri.query().unwrap_or("");
    let version = query_value(query, "v");
    let since = match query_value(query, "since") {
        Some(since) => Some(parse_since(since).ok_or("since must be <epoch>:<offset>")?),
        None => None,
    };
    match version {
        None | Some("1") if !v2_offered && since.is_none() => Ok(Protocol::Legacy),
        None | Some("2") => Ok(Protocol::V2 { since }),
        Some("1") => Err("v=1 cannot be combined with notify.v2 or since"),
        Some(_) => Err("unknown protocol version: v must be 1 or 2"),
    }
}

/// `<epoch>:<offset>`, with the colon possibly percent-encoded.
fn parse_since(value: &str) -> Option<Position> {
    let decoded = value.replace("%3A", ":").replace("%3a", ":");
    Position::parse(&decoded)
}

fn query_value<'a>(query: &'a str, name: &str) -> Option<&'a str> {
    query
        .split('&')
        .find_map(|pair| pair.strip_prefix(name)?.strip_prefix('='))
        .filter(|value| !value.is_empty())
}

/// What `Sec-WebSocket-Protocol` offers: `bearer, <JWT>` and `notify.v2`.
struct Subprotocols<'a> {
    bearer: bool,
    token: Option<&'a str>,
    v2: bool,
}

fn subprotocols(headers: &HeaderMap) -> Subprotocols<'_> {
    let mut offer = Subprotocols {
        bearer: false,
        token: None,
        v2: false,
    };
    for value in headers.get_all(header::SEC_WEBSOCKET_PROTOCOL) {
        let Ok(value) = value.to_str() else { continue };
        let mut parts = value.split(',').map(str::trim);
        while let Some(part) = parts.next() {
            if part == V2_PROTOCOL {
                offer.v2 = true;
            } else if part == BEARER_PROTOCOL {
                offer.bearer = true;
                offer.token = offer.token.or(parts.next().filter(|t| !t.is_empty()));
            }
        }
    }
    offer
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
    fn v2_is_asked_by_query_subprotocol_or_since() {
        let protocol = |uri: &str, v2_offered: bool| {
            let head = head_of(TestRequest::default().uri(uri));
            requested_protocol(&head, v2_offered)
        };
        assert_eq!(protocol("/ws?token=t", false), Ok(Protocol::Legacy));
        assert_eq!(protocol("/ws?v=1", false), Ok(Protocol::Legacy));
        assert_eq!(protocol("/ws?v=2", false), Ok(Protocol::V2 { since: None }));
        assert_eq!(protocol("/ws", true), Ok(Protocol::V2 { since: None }));
        let since = Position::parse("e1:5");
        assert_eq!(
            protocol("/ws?since=e1:5", false),
            Ok(Protocol::V2 {
                since: since.clone()
            })
        );
        assert_eq!(
            protocol("/ws?since=e1%3A5&v=2", false),
            Ok(Protocol::V2 { since })
        );
        assert!(protocol("/ws?v=3", false).is_err());
        assert!(protocol("/ws?since=nope", false).is_err());
        assert!(protocol("/ws?v=1&since=e1:5", false).is_err());
        let head = head_of(
            TestRequest::default()
                .insert_header((header::SEC_WEBSOCKET_PROTOCOL, "notify.v2, bearer, xyz")),
        );
        let offered = offered_token(&head);
        assert_eq!(offered.token, Some("xyz"));
        assert_eq!(offered.selected_protocol(), Some(V2_PROTOCOL));
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
