//! `GET /ws`: the WebSocket upgrade. Everything that can refuse a socket happens here, before a
//! session actor exists: draining (503 before the upgrade), origin, token, global cap (each an
//! upgrade followed at once by a close with the code and JSON reason of the contract, so that a
//! browser sees why). Only an accepted socket becomes a `Session`.

use std::time::{Duration, SystemTime};

use actix_web::http::header;
use actix_web::{web, HttpMessage, HttpRequest, HttpResponse};
use ws_actors::{CloseCode, CloseReason, ConnId, ErrorCode, Session, SessionParams, UserId};

use crate::auth::{AuthError, VerifiedToken};
use crate::correlation::CorrelationId;
use crate::errors::ApiError;
use crate::state::AppState;
use crate::telemetry::SPAN_TARGET;

/// The subprotocol that carries a token: `Sec-WebSocket-Protocol: bearer, <JWT>`.
const BEARER_PROTOCOL: &str = "bearer";
/// How long a refused socket is kept to deliver its close frame.
const REFUSAL_LINGER: Duration = Duration::from_secs(2);

/// Where the token came from; the subprotocol must be echoed in the 101 answer.
struct OfferedToken<'a> {
    token: Option<&'a str>,
    bearer_offered: bool,
}

fn offered_token(req: &HttpRequest) -> OfferedToken<'_> {
    let (bearer_offered, protocol_token) = protocol_token(req);
    let token = query_token(req)
        .or(protocol_token)
        .or_else(|| header_token(req));
    OfferedToken {
        token,
        bearer_offered,
    }
}

fn query_token(req: &HttpRequest) -> Option<&str> {
    req.query_string()
        .split('&')
        .find_map(|pair| pair.strip_prefix("token="))
        .filter(|token| !token.is_empty())
}

/// `(bearer offered, token)` from `Sec-WebSocket-Protocol: bearer, <JWT>`.
fn protocol_token(req: &HttpRequest) -> (bool, Option<&str>) {
    let mut offered = false;
    let mut token = None;
    for value in req.headers().get_all(header::SEC_WEBSOCKET_PROTOCOL) {
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

fn header_token(req: &HttpRequest) -> Option<&str> {
    req.headers()
        .get(header::AUTHORIZATION)?
        .to_str()
        .ok()?
        .strip_prefix("Bearer ")
        .map(str::trim)
}

fn origin_allowed(req: &HttpRequest, allowed: &[String]) -> bool {
    if allowed.is_empty() {
        return true;
    }
    match req.headers().get(header::ORIGIN).map(|o| o.to_str()) {
        None => true, // not a browser: origin checks protect browsers only
        Some(Ok(origin)) => allowed.iter().any(|a| a.eq_ignore_ascii_case(origin)),
        Some(Err(_)) => false,
    }
}

/// The upgrade handler, inside a `websocket.connect` span that records the outcome.
pub async fn upgrade(
    req: HttpRequest,
    body: web::Payload,
    state: web::Data<AppState>,
    cid: CorrelationId,
) -> Result<HttpResponse, actix_web::Error> {
    let span = tracing::info_span!(
        target: SPAN_TARGET,
        "websocket.connect",
        correlation_id = cid.as_str(),
        conn.id = tracing::field::Empty,
        user.hash = tracing::field::Empty,
        outcome = tracing::field::Empty,
    );
    span.in_scope(|| connect(&req, body, &state, &cid))
}

/// Counts an upgrade outcome and records it on the connect span.
fn outcome(state: &AppState, outcome: &'static str) {
    state.metrics.relay.opened(outcome);
    tracing::Span::current().record("outcome", outcome);
}

/// A stable, non-reversible tag for a user id in traces (never the id itself).
fn user_hash(user_id: &str) -> String {
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    std::hash::Hash::hash(user_id, &mut hasher);
    format!("{:016x}", std::hash::Hasher::finish(&hasher))
}

fn validate(state: &AppState, token: Option<&str>) -> Result<VerifiedToken, AuthError> {
    let span = tracing::info_span!(
        target: SPAN_TARGET,
        "websocket.validate_token",
        outcome = tracing::field::Empty,
    );
    span.in_scope(|| {
        let result = state.validator.validate(token.unwrap_or(""));
        let verdict = match &result {
            Ok(_) => "valid",
            Err(error) => error.public_message(),
        };
        tracing::Span::current().record("outcome", verdict);
        result
    })
}

fn connect(
    req: &HttpRequest,
    body: web::Payload,
    state: &AppState,
    cid: &CorrelationId,
) -> Result<HttpResponse, actix_web::Error> {
    if state.drain.is_draining() {
        outcome(state, "draining");
        return Err(ApiError::new(ErrorCode::ServiceUnavailable, "server draining", cid).into());
    }
    let offered = offered_token(req);
    let protocols: &[&str] = if offered.bearer_offered {
        &[BEARER_PROTOCOL]
    } else {
        &[]
    };
    if !origin_allowed(req, &state.allowed_origins) {
        outcome(state, "origin_refused");
        let close = CloseReason::new(CloseCode::PolicyViolation, "origin refused", cid.as_str());
        return refuse(req, body, protocols, close);
    }
    let verified = match validate(state, offered.token) {
        Ok(verified) => verified,
        Err(error) => {
            outcome(state, "auth_failed");
            let reason = error.public_message();
            tracing::info!(correlation_id = cid.as_str(), reason, "token refused");
            let close = CloseReason::new(CloseCode::PolicyViolation, reason, cid.as_str());
            return refuse(req, body, protocols, close);
        }
    };
    if state.trace_user_hash {
        tracing::Span::current().record("user.hash", user_hash(&verified.user_id));
    }
    let Some(permit) = state.limiter.try_acquire() else {
        outcome(state, "quota_global");
        let close = CloseReason::new(CloseCode::TryAgainLater, "server full", cid.as_str());
        return refuse(req, body, protocols, close);
    };
    let (response, socket, stream) = handshake(req, body, protocols)?;
    let incoming = stream
        .max_frame_size(state.max_frame_bytes)
        .aggregate_continuations()
        .max_continuation_size(state.max_frame_bytes);
    let conn = ConnId::next();
    let span = tracing::Span::current();
    span.record("conn.id", conn.get());
    span.record("outcome", "upgraded");
    tracing::debug!(
        conn = conn.get(),
        correlation_id = cid.as_str(),
        "session accepted"
    );
    let params = SessionParams {
        user: UserId::new(&verified.user_id),
        conn,
        correlation_id: cid.shared(),
        expires_at: SystemTime::UNIX_EPOCH + Duration::from_secs(verified.expires_at),
        permit,
        config: state.session_config.clone(),
        directory: state.broker.directory().clone(),
        metrics: state.metrics.relay.clone(),
    };
    Session::start(params, socket, incoming);
    Ok(response)
}

/// The WebSocket handshake; a request that is no valid upgrade gets a 400 with the error JSON.
fn handshake(
    req: &HttpRequest,
    body: web::Payload,
    protocols: &[&str],
) -> Result<(HttpResponse, actix_ws::Session, actix_ws::MessageStream), ApiError> {
    actix_ws::handle_with_protocols(req, body, protocols).map_err(|error| {
        let cid = req
            .extensions()
            .get::<CorrelationId>()
            .cloned()
            .unwrap_or_else(CorrelationId::generate);
        ApiError::new(
            ErrorCode::ValidationError,
            format!("not a valid WebSocket upgrade: {error}"),
            &cid,
        )
    })
}

/// Completes the upgrade only to close at once with `close`, so that the client sees the code
/// and reason; nothing of the socket outlives the close.
fn refuse(
    req: &HttpRequest,
    body: web::Payload,
    protocols: &[&str],
    close: CloseReason,
) -> Result<HttpResponse, actix_web::Error> {
    let (response, socket, mut stream) = handshake(req, body, protocols)?;
    let reason = actix_ws::CloseReason {
        code: close.code.code().into(),
        description: Some(close.reason),
    };
    actix_web::rt::spawn(async move {
        let _ = socket.close(Some(reason)).await;
        let drain = async { while stream.recv().await.is_some() {} };
        let _ = tokio::time::timeout(REFUSAL_LINGER, drain).await;
    });
    Ok(response)
}

#[cfg(test)]
mod tests {
    use actix_web::test::TestRequest;

    use super::*;

    #[test]
    fn token_is_found_in_each_place() {
        let req = TestRequest::default()
            .uri("/ws?a=1&token=abc")
            .to_http_request();
        assert_eq!(offered_token(&req).token, Some("abc"));
        let req = TestRequest::default()
            .insert_header((header::SEC_WEBSOCKET_PROTOCOL, "bearer, xyz"))
            .to_http_request();
        let offered = offered_token(&req);
        assert_eq!(offered.token, Some("xyz"));
        assert!(offered.bearer_offered);
        let req = TestRequest::default()
            .insert_header((header::AUTHORIZATION, "Bearer t0k"))
            .to_http_request();
        assert_eq!(offered_token(&req).token, Some("t0k"));
        let req = TestRequest::default().uri("/ws").to_http_request();
        assert_eq!(offered_token(&req).token, None);
    }

    #[test]
    fn origin_is_checked_only_when_configured() {
        let allowed = vec!["https://app.example".to_owned()];
        let good = TestRequest::default()
            .insert_header((header::ORIGIN, "https://app.example"))
            .to_http_request();
        let bad = TestRequest::default()
            .insert_header((header::ORIGIN, "https://evil.example"))
            .to_http_request();
        assert!(origin_allowed(&good, &allowed));
        assert!(!origin_allowed(&bad, &allowed));
        assert!(origin_allowed(&bad, &[]));
    }
}
