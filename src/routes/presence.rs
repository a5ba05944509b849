//! `GET /api/v1/presence?user_ids=a,b`: whether users are online and how many sockets each holds,
//! across every replica sharing the Redis (counted from the unexpired quota leases, one round
//! trip), or on this node alone without Redis. Ids comma-separated or the parameter repeated,
//! URL-encoded, at most [`MAX_USERS`]. The publish API's key guards it (404 when none is
//! configured, 401 without it). Also home of what the disconnect API shares with it: bounded,
//! de-duplicated user id lists and the connection counts.

use std::collections::HashSet;

use actix_web::{web, HttpRequest, HttpResponse};
use serde_json::{json, Map, Value};
use ws_actors::{ErrorCode, UserId};

use super::publish::check_key;
use crate::correlation::CorrelationId;
use crate::errors::ApiError;
use crate::state::AppState;

/// Most users one call may name.
pub(super) const MAX_USERS: usize = 1000;
/// Longest user id accepted (same bound as a token's `sub`).
const MAX_USER_ID_BYTES: usize = 256;
/// The query parameter naming users.
const PARAMETER: &str = "user_ids";

/// The presence endpoint.
pub async fn presence(
    req: HttpRequest,
    state: web::Data<AppState>,
    cid: CorrelationId,
) -> Result<HttpResponse, ApiError> {
    check_key(&req, &state, &cid)?;
    let users = users_of_query(req.query_string(), &cid)?;
    let counts = connections(&state, &users, &cid).await?;
    Ok(HttpResponse::Ok().json(presence_json(&users, &counts)))
}

/// The users a query names (other parameters are ignored).
fn users_of_query(query: &str, cid: &CorrelationId) -> Result<Vec<UserId>, ApiError> {
    let invalid = |message: String| ApiError::new(ErrorCode::ValidationError, message, cid);
    let pairs = web::Query::<Vec<(String, String)>>::from_query(query)
        .map_err(|err| invalid(format!("malformed query: {err}")))?
        .into_inner();
    let ids: Vec<String> = pairs
        .iter()
        .filter(|(name, _)| name == PARAMETER)
        .flat_map(|(_, value)| value.split(','))
        .filter(|id| !id.is_empty())
        .map(str::to_owned)
        .collect();
    checked_users(&ids, cid)
}

/// `ids` as users, each once, in the order given: 400 for none, more than [`MAX_USERS`], or an
/// empty or overlong id.
pub(super) fn checked_users(ids: &[String], cid: &CorrelationId) -> Result<Vec<UserId>, ApiError> {
    let invalid = |message: String| ApiError::new(ErrorCode::ValidationError, message, cid);
    if ids.is_empty() || ids.len() > MAX_USERS {
        let message = format!("{PARAMETER} must name 1 to {MAX_USERS} users");
        return Err(invalid(message).with_details(json!({ "max_users": MAX_USERS })));
    }
    if let Some(bad) = ids
        .iter()
        .position(|id| id.is_empty() || id.len() > MAX_USER_ID_BYTES)
    {
        return Err(invalid(format!("{PARAMETER}[{bad}] is empty or too long")));
    }
    let mut seen = HashSet::new();
    Ok(ids
        .iter()
        .filter(|id| seen.insert(id.as_str()))
        .map(|id| UserId::new(id))
        .collect())
}

/// Each user's open sockets: across the cluster from the leases, or on this node without Redis.
/// 503 when Redis does not answer.
pub(super) async fn connections(
    state: &AppState,
    users: &[UserId],
    cid: &CorrelationId,
) -> Result<Vec<u64>, ApiError> {
    let Some(leases) = &state.leases else {
        let local = users.iter().map(|user| state.limiter.seats_of(user) as u64);
        return Ok(local.collect());
    };
    leases.count(users).await.map_err(|error| {
        tracing::warn!(%error, correlation_id = cid.as_str(), "lease count failed");
        ApiError::new(
            ErrorCode::ServiceUnavailable,
            "lease store unavailable",
            cid,
        )
    })
}

/// `{"<user>":{"online":…,"connections":…},…}` in the order given.
fn presence_json(users: &[UserId], counts: &[u64]) -> Value {
    let entries = users.iter().zip(counts).map(|(user, &count)| {
        let entry = json!({ "online": count > 0, "connections": count });
        (user.as_str().to_owned(), entry)
    });
    Value::Object(entries.collect::<Map<_, _>>())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ids(query: &str) -> Result<Vec<String>, u16> {
        let cid = CorrelationId::generate();
        users_of_query(query, &cid)
            .map(|users| users.iter().map(|u| u.as_str().to_owned()).collect())
            .map_err(|e| actix_web::ResponseError::status_code(&e).as_u16())
    }

    #[test]
    fn ids_are_comma_separated_repeated_and_url_decoded() {
        assert_eq!(ids("user_ids=a,b"), Ok(vec!["a".into(), "b".into()]));
        assert_eq!(
            ids("user_ids=a&other=1&user_ids=b%2Cc,a&user_ids=%C3%A9%20x"),
            Ok(vec!["a".into(), "b".into(), "c".into(), "é x".into()])
        );
    }

    #[test]
    fn none_too_many_or_overlong_ids_are_refused() {
        assert_eq!(ids(""), Err(400));
        assert_eq!(ids("user_ids=,"), Err(400));
        let many: Vec<String> = (0..=MAX_USERS).map(|i| format!("u{i}")).collect();
        assert_eq!(ids(&format!("user_ids={}", many.join(","))), Err(400));
        assert_eq!(ids(&format!("user_ids={}", "x".repeat(257))), Err(400));
        let most = &many[..MAX_USERS];
        assert_eq!(
            ids(&format!("user_ids={}", most.join(","))).map(|v| v.len()),
            Ok(1000)
        );
    }

    #[test]
    fn the_answer_keeps_the_order_given() {
        let users = [UserId::new("b"), UserId::new("a")];
        let json = presence_json(&users, &[0, 2]);
        assert_eq!(
            json.to_string(),
            r#"{"b":{"online":false,"connections":0},"a":{"online":true,"connections":2}}"#
        );
    }
}
