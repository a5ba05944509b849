//! `POST /api/v1/publish`: backends without a Redis client publish to users through the
//! configured broker (so every replica delivers). Key in `X-API-Key` or `Authorization: Bearer`;
//! body `{"user_ids":[…],"data":…}`: a string is sent as is, any other JSON value compactly.
//!
//! The key is checked from the headers before the body is read (a caller without the key costs
//! no buffer and is answered at once), and the body is read within [`BodyLimits`].
//!
//! With history on, the publish is durable: each user's message is appended to its history and
//! published in one atomic step, and the answer carries each user's position. A failure answers
//! 503 (never 200 for a message that was not stored). An `Idempotency-Key` header makes a retry
//! within 5 minutes answer the same positions without publishing again.

use actix_web::{web, HttpRequest, HttpResponse};
use bytes::Bytes;
use serde::Deserialize;
use serde_json::json;
use ws_actors::history::{Position, IDEMPOTENCY_KEY_MAX};
use ws_actors::{ErrorCode, UserId};

use super::bearer::bearer_credential;
use super::body::{self, BodyLimits};
use crate::correlation::CorrelationId;
use crate::errors::ApiError;
use crate::state::AppState;

/// Largest publish body: actix-web's default payload limit, which the endpoint always had.
pub const MAX_BODY_BYTES: usize = 256 * 1024;
/// Most users one publish call may address.
const MAX_USERS: usize = 1000;
/// Longest user id accepted (same bound as a token's `sub`).
const MAX_USER_ID_BYTES: usize = 256;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PublishRequest {
    user_ids: Vec<String>,
    data: serde_json::Value,
}

/// The publish endpoint.
pub async fn publish(
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
    let idempotency_key = match idempotency_key(&req, &cid) {
        Ok(key) => key,
        Err(error) => return HttpResponse::from_error(error),
    };
    match deliver(&body, &state, idempotency_key, &cid).await {
        Ok(answer) => HttpResponse::Ok().json(answer),
        Err(error) => HttpResponse::from_error(error),
    }
}

/// The `Idempotency-Key` header: 1 to 128 visible ASCII characters, or none.
fn idempotency_key(req: &HttpRequest, cid: &CorrelationId) -> Result<Option<String>, ApiError> {
    let Some(value) = req.headers().get("idempotency-key") else {
        return Ok(None);
    };
    let key = value.to_str().ok().filter(|key| {
        !key.is_empty()
            && key.len() <= IDEMPOTENCY_KEY_MAX
            && key.bytes().all(|b| b.is_ascii_graphic())
    });
    match key {
        Some(key) => Ok(Some(key.to_owned())),
        None => Err(ApiError::new(
            ErrorCode::ValidationError,
            format!("Idempotency-Key must be 1 to {IDEMPOTENCY_KEY_MAX} visible ASCII characters"),
            cid,
        )),
    }
}

/// 404 when the API is disabled, 401 without the right key: decided from the headers alone.
/// Presence and disconnect are guarded by the same key.
pub(super) fn check_key(
    req: &HttpRequest,
    state: &AppState,
    cid: &CorrelationId,
) -> Result<(), ApiError> {
    let Some(expected) = state.publish_api_key.as_deref() else {
        return Err(ApiError::new(
            ErrorCode::NotFound,
            "publish API disabled",
            cid,
        ));
    };
    if !key_matches(req, expected) {
        return Err(ApiError::new(
            ErrorCode::AuthenticationError,
            "missing or wrong API key",
            cid,
        ));
    }
    Ok(())
}

/// Parses the body and publishes it: durably (with positions) when history is on, else plain.
async fn deliver(
    body: &[u8],
    state: &AppState,
    idempotency_key: Option<String>,
    cid: &CorrelationId,
) -> Result<serde_json::Value, ApiError> {
    let (users, payload) = parse(body, cid)?;
    let count = users.len();
    if state.history.is_some() {
        let positions = publish_durably(state, users, payload, idempotency_key, "api", cid).await?;
        return Ok(json!({ "published": count, "positions": positions }));
    }
    state.broker.publish(users, payload).await.map_err(|err| {
        tracing::warn!(error = %err, correlation_id = cid.as_str(), "publish failed");
        ApiError::new(ErrorCode::ServiceUnavailable, "broker unavailable", cid)
    })?;
    Ok(json!({ "published": count }))
}

/// Appends and publishes `payload` to each of `users` (history must be on); answers
/// `{"<user>":{"epoch","offset"}}`. Shared by the publish API and the console.
pub async fn publish_durably(
    state: &AppState,
    users: Vec<UserId>,
    payload: bytes::Bytes,
    idempotency_key: Option<String>,
    source: &str,
    cid: &CorrelationId,
) -> Result<serde_json::Map<String, serde_json::Value>, ApiError> {
    let unavailable = || ApiError::new(ErrorCode::ServiceUnavailable, "history unavailable", cid);
    let history = state.history.as_ref().ok_or_else(unavailable)?;
    let relay = &state.metrics.relay;
    let result = history
        .publish(users.clone(), payload, idempotency_key)
        .await;
    let outcome = if result.is_ok() { "ok" } else { "error" };
    relay
        .durable_publishes
        .with_label_values(&[source, outcome])
        .inc();
    let positions = result.map_err(|err| {
        tracing::warn!(error = %err, correlation_id = cid.as_str(), "durable publish failed");
        unavailable()
    })?;
    relay.history_appends.inc_by(positions.len() as u64);
    Ok(users
        .iter()
        .zip(positions)
        .map(|(user, position)| (user.to_string(), position_json(&position)))
        .collect())
}

fn position_json(position: &Position) -> serde_json::Value {
    json!({ "epoch": position.epoch.as_str(), "offset": position.offset })
}

fn presented_key(req: &HttpRequest) -> Option<&str> {
    let headers = req.headers();
    if let Some(key) = headers.get("x-api-key") {
        return key.to_str().ok();
    }
    bearer_credential(headers)
}

fn key_matches(req: &HttpRequest, expected: &str) -> bool {
    presented_key(req).is_some_and(|key| constant_time_eq(key.as_bytes(), expected.as_bytes()))
}

/// Compares without an early exit, so timing does not reveal how much of a key matched.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn parse(body: &[u8], cid: &CorrelationId) -> Result<(Vec<UserId>, Bytes), ApiError> {
    let invalid = |message: String| ApiError::new(ErrorCode::ValidationError, message, cid);
    let request: PublishRequest =
        serde_json::from_slice(body).map_err(|err| invalid(format!("malformed body: {err}")))?;
    if request.user_ids.is_empty() || request.user_ids.len() > MAX_USERS {
        return Err(invalid(format!("user_ids must hold 1 to {MAX_USERS} ids")));
    }
    if let Some(bad) = request
        .user_ids
        .iter()
        .position(|id| id.is_empty() || id.len() > MAX_USER_ID_BYTES)
    {
        return Err(invalid(format!("user_ids[{bad}] is empty or too long")));
    }
    let payload = match request.data {
        serde_json::Value::String(text) => Bytes::from(text),
        other => Bytes::from(other.to_string()),
    };
    // A user named twice is published to once (a durable publish must not append twice).
    let mut seen = std::collections::HashSet::new();
    let users = request
        .user_ids
        .iter()
        .filter(|id| seen.insert(id.as_str()))
        .map(|id| UserId::new(id))
        .collect();
    Ok((users, payload))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strings_are_sent_as_is_and_values_compactly() {
        let cid = CorrelationId::generate();
        let (users, payload) =
            parse(br#"{"user_ids":["u1","u2"],"data":"hi \"there\""}"#, &cid).unwrap();
        assert_eq!(users.len(), 2);
        assert_eq!(&payload[..], br#"hi "there""#);
        let (_, payload) = parse(
            br#"{"user_ids":["u"],"data":{ "b": 1, "a": [1, 2] }}"#,
            &cid,
        )
        .unwrap();
        assert_eq!(&payload[..], br#"{"b":1,"a":[1,2]}"#);
    }

    #[test]
    fn bad_bodies_are_refused() {
        let cid = CorrelationId::generate();
        for body in [
            &b"not json"[..],
            br#"{"user_ids":[],"data":1}"#,
            br#"{"user_ids":[""],"data":1}"#,
            br#"{"data":1}"#,
            br#"{"user_ids":["u"]}"#,
            br#"{"user_ids":"u","data":1}"#,
        ] {
            assert!(
                parse(body, &cid).is_err(),
                "{}",
                String::from_utf8_lossy(body)
            );
        }
    }

    #[test]
    fn keys_compare_exactly() {
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"abcd"));
    }
}
