//! `POST /api/v1/disconnect {"user_ids":[…],"reason":"…"}`: closes every socket of those users on
//! every replica with 4003 AUTHENTICATION_ERROR (logout, locked account), the close reason's
//! message carrying `reason`. This node closes its own sockets directly and tells the others on
//! the control channel; the answer `{"disconnected":N}` counts those users' sockets across the
//! cluster from the leases at the time of the request (this node's own without Redis). The
//! publish API's key guards it, checked before the body is read.

use actix_web::{web, HttpRequest, HttpResponse};
use serde::Deserialize;
use serde_json::json;
use ws_actors::{ErrorCode, UserId};

use super::body::{self, BodyLimits};
use super::presence::{checked_users, connections};
use super::publish::check_key;
use crate::correlation::CorrelationId;
use crate::errors::ApiError;
use crate::state::AppState;

/// Longest reason accepted. The close reason shortens it further (on a character boundary) so
/// that the JSON fits a close frame: about 20 bytes remain beside a 36-byte correlation id.
const MAX_REASON_BYTES: usize = 200;
/// The close reason's message when the call gives none (short: see [`MAX_REASON_BYTES`]).
const DEFAULT_REASON: &str = "disconnected";

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct DisconnectRequest {
    user_ids: Vec<String>,
    #[serde(default)]
    reason: Option<String>,
}

/// The disconnect endpoint.
pub async fn disconnect(
    req: HttpRequest,
    payload: web::Payload,
    state: web::Data<AppState>,
    limits: web::Data<BodyLimits>,
    cid: CorrelationId,
) -> HttpResponse {
    if let Err(error) = check_key(&req, &state, &cid) {
        return body::refuse_unread(error, payload);
    }
    let body = match body::read_within(&req, payload, **limits, &cid).await {
        Ok(body) => body,
        Err(refusal) => return refusal,
    };
    match run(&body, &state, &cid).await {
        Ok(count) => HttpResponse::Ok().json(json!({ "disconnected": count })),
        Err(error) => HttpResponse::from_error(error),
    }
}

/// Counts, closes here, tells the other replicas; the count. A Redis failure still closes this
/// node's sockets, and answers 503 so that the caller retries.
async fn run(body: &[u8], state: &AppState, cid: &CorrelationId) -> Result<u64, ApiError> {
    let (users, reason) = parse(body, cid)?;
    disconnect_users(state, &users, &reason, cid).await
}

/// Closes every socket of `users` on every replica with 4003 and `reason` (shared by this API and
/// the operator console); answers their sockets across the cluster at the time of the call.
pub(crate) async fn disconnect_users(
    state: &AppState,
    users: &[UserId],
    reason: &str,
    cid: &CorrelationId,
) -> Result<u64, ApiError> {
    let counted = connections(state, users, cid).await;
    state.directory.disconnect(users, reason);
    let told = tell_replicas(state, users, reason, cid).await;
    let count: u64 = counted?.iter().sum();
    told?;
    let metrics = &state.metrics.leases;
    metrics.disconnect_users.inc_by(users.len() as u64);
    metrics.disconnect_sockets.inc_by(count);
    tracing::info!(
        users = users.len(),
        sockets = count,
        correlation_id = cid.as_str(),
        "disconnected by the API"
    );
    Ok(count)
}

/// Publishes the command to the other replicas (nothing to do without Redis).
async fn tell_replicas(
    state: &AppState,
    users: &[UserId],
    reason: &str,
    cid: &CorrelationId,
) -> Result<(), ApiError> {
    let Some(control) = &state.control else {
        return Ok(());
    };
    control.disconnect(users, reason).await.map_err(|error| {
        tracing::warn!(%error, correlation_id = cid.as_str(), "disconnect not published");
        ApiError::new(
            ErrorCode::ServiceUnavailable,
            "disconnected on this node only: the other replicas are unreachable",
            cid,
        )
    })
}

fn parse(body: &[u8], cid: &CorrelationId) -> Result<(Vec<UserId>, String), ApiError> {
    let invalid = |message: String| ApiError::new(ErrorCode::ValidationError, message, cid);
    let request: DisconnectRequest =
        serde_json::from_slice(body).map_err(|err| invalid(format!("malformed body: {err}")))?;
    let users = checked_users(&request.user_ids, cid)?;
    let reason = request.reason.unwrap_or_else(|| DEFAULT_REASON.to_owned());
    if reason.len() > MAX_REASON_BYTES {
        return Err(invalid(format!("reason over {MAX_REASON_BYTES} bytes")));
    }
    Ok((users, reason))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_reason_is_optional_and_bounded() {
        let cid = CorrelationId::generate();
        let (users, reason) = parse(br#"{"user_ids":["a","b","a"]}"#, &cid).expect("valid");
        assert_eq!(users, [UserId::new("a"), UserId::new("b")]);
        assert_eq!(reason, DEFAULT_REASON);
        let (_, reason) = parse(br#"{"user_ids":["a"],"reason":"logged out"}"#, &cid).unwrap();
        assert_eq!(reason, "logged out");
        let long = format!(r#"{{"user_ids":["a"],"reason":"{}"}}"#, "x".repeat(201));
        for body in [
            long.as_bytes(),
            br#"{"user_ids":[]}"#,
            br#"{"user_ids":["a"],"extra":1}"#,
            br#"{"reason":"x"}"#,
        ] {
            assert!(
                parse(body, &cid).is_err(),
                "{}",
                String::from_utf8_lossy(body)
            );
        }
    }
}
