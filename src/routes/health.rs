//! Liveness (`/healthz`: the process answers, with broker state), readiness (`/readyz`: 503
//! while the broker is down or the node drains) and the Prometheus exposition (`/metrics`).

use actix_web::{web, HttpResponse};
use serde_json::json;
use ws_actors::{BrokerHealth, ErrorCode};

use crate::correlation::CorrelationId;
use crate::errors::ApiError;
use crate::state::AppState;

fn broker_json(state: &AppState) -> serde_json::Value {
    match state.broker.health() {
        BrokerHealth::Up => json!({"kind": state.broker.kind(), "state": "up"}),
        BrokerHealth::Down { reason } => {
            json!({"kind": state.broker.kind(), "state": "down", "reason": reason})
        }
    }
}

/// Liveness: 200 while the process runs, even when Redis is down (restarting would not help).
pub async fn healthz(state: web::Data<AppState>) -> HttpResponse {
    HttpResponse::Ok().json(json!({
        "status": "ok",
        "broker": broker_json(&state),
        "connections": state.limiter.open(),
        "max_connections": state.limiter.max(),
        "draining": state.drain.is_draining(),
    }))
}

/// Readiness: 200 when this node should get new sockets.
pub async fn readyz(
    state: web::Data<AppState>,
    cid: CorrelationId,
) -> Result<HttpResponse, ApiError> {
    if state.drain.is_draining() {
        return Err(ApiError::new(
            ErrorCode::ServiceUnavailable,
            "draining",
            &cid,
        ));
    }
    if let BrokerHealth::Down { reason } = state.broker.health() {
        let message = format!("broker down: {reason}");
        return Err(ApiError::new(ErrorCode::ServiceUnavailable, message, &cid)
            .with_details(json!({"broker": broker_json(&state)})));
    }
    Ok(HttpResponse::Ok().json(json!({"status": "ready", "broker": broker_json(&state)})))
}

/// The Prometheus text exposition.
pub async fn metrics(
    state: web::Data<AppState>,
    cid: CorrelationId,
) -> Result<HttpResponse, ApiError> {
    let text = state
        .metrics
        .encode()
        .map_err(|err| ApiError::new(ErrorCode::InternalError, err.to_string(), &cid))?;
    Ok(HttpResponse::Ok()
        .content_type("text/plain; version=0.0.4; charset=utf-8")
        .body(text))
}
