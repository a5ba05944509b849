//! `GET /api/v1/position?user_id=<id>`: a user's current history position, `{"epoch","offset"}`
//! (publish API key). A backend's state endpoint reads it *before* loading the state it
//! returns, so a v2 client resuming from that position misses nothing that falls between the
//! state and the stream (docs/FRONTEND.md, "refetch on reset"). 404 while history is off.

use actix_web::{web, HttpRequest, HttpResponse};
use serde::Deserialize;
use serde_json::json;
use ws_actors::{ErrorCode, UserId};

use super::publish::check_key;
use crate::correlation::CorrelationId;
use crate::errors::ApiError;
use crate::state::AppState;

#[derive(Deserialize)]
struct PositionQuery {
    user_id: String,
}

/// The position endpoint.
pub async fn position(
    req: HttpRequest,
    state: web::Data<AppState>,
    cid: CorrelationId,
) -> Result<HttpResponse, ApiError> {
    check_key(&req, &state, &cid)?;
    let Some(history) = state.history.as_ref() else {
        return Err(ApiError::new(ErrorCode::NotFound, "history is off", &cid));
    };
    let query = web::Query::<PositionQuery>::from_query(req.query_string())
        .ok()
        .filter(|q| !q.user_id.is_empty() && q.user_id.len() <= 256)
        .ok_or_else(|| {
            let message = "user_id must be given, 1 to 256 bytes";
            ApiError::new(ErrorCode::ValidationError, message, &cid)
        })?;
    let read = history
        .read(UserId::new(&query.user_id), 0, 0)
        .await
        .map_err(|error| {
            tracing::warn!(%error, correlation_id = cid.as_str(), "position read failed");
            ApiError::new(ErrorCode::ServiceUnavailable, "history unavailable", &cid)
        })?;
    Ok(HttpResponse::Ok().json(json!({ "epoch": read.epoch.as_str(), "offset": read.top })))
}
