//! Liveness (`/healthz`: the process answers, with broker and lease store state), readiness (`/readyz`: 503
//! while the broker is down or the node drains, or while the Kafka ingest is down when
//! `kafka.required`) and the Prometheus exposition (`/metrics`).

use actix_web::{web, HttpResponse};
use serde_json::json;
use ws_actors::{BrokerHealth, ErrorCode, Leases};

use crate::correlation::CorrelationId;
use crate::errors::ApiError;
use crate::state::AppState;

/// The Kafka ingest's health, registered as app data while the ingest runs.
#[derive(Clone)]
pub struct IngestStatus {
    /// Up while consuming; down while Kafka is unreachable or an outage pauses consumption.
    pub health: tokio::sync::watch::Receiver<BrokerHealth>,
    /// `kafka.required`: readiness follows the ingest.
    pub required: bool,
}

fn ingest_json(ingest: &IngestStatus) -> serde_json::Value {
    match &*ingest.health.borrow() {
        BrokerHealth::Up => json!({"state": "up", "required": ingest.required}),
        BrokerHealth::Down { reason } => {
            json!({"state": "down", "reason": reason, "required": ingest.required})
        }
    }
}

/// The broker's state; on Redis Cluster also `cluster.nodes` (each node's address, slots,
/// link state — `up`, `down` with a reason, `connecting` — and the channels subscribed there)
/// and `cluster.degraded`: some slots have no primary or a primary's link is not up (the users
/// of those slots receive nothing until it is; the broker stays up while any primary is).
fn broker_json(state: &AppState) -> serde_json::Value {
    let mut json = match state.broker.health() {
        BrokerHealth::Up => json!({"kind": state.broker.kind(), "state": "up"}),
        BrokerHealth::Down { reason } => {
            json!({"kind": state.broker.kind(), "state": "down", "reason": reason})
        }
    };
    if let Some(nodes) = state.broker.cluster_nodes() {
        let served: usize = nodes.iter().map(|n| n.slots).sum();
        let degraded = served < usize::from(ws_actors::broker::keys::SLOTS)
            || nodes.iter().any(|n| n.slots > 0 && n.state != "up");
        json["cluster"] = json!({ "nodes": nodes, "degraded": degraded });
    }
    json
}

/// The lease store: up or down (connects fail open), the leases held, what the quota counts.
fn leases_json(leases: &Leases, cluster_scope: bool) -> serde_json::Value {
    let state = if leases.is_down() { "down" } else { "up" };
    let scope = if cluster_scope { "cluster" } else { "node" };
    json!({"state": state, "held": leases.held(), "quota_scope": scope})
}

/// Liveness: 200 while the process runs, even when Redis is down (restarting would not help).
pub async fn healthz(
    state: web::Data<AppState>,
    ingest: Option<web::Data<IngestStatus>>,
) -> HttpResponse {
    let mut body = json!({
        "status": "ok",
        "broker": broker_json(&state),
        "connections": state.limiter.open(),
        "max_connections": state.limiter.max(),
        "draining": state.drain.is_draining(),
    });
    if let Some(ingest) = ingest {
        body["kafka"] = ingest_json(&ingest);
    }
    if let Some(leases) = &state.leases {
        body["leases"] = leases_json(leases, state.cluster_quota.is_some());
    }
    if let Some(control) = &state.control {
        // Whether disconnect commands from other replicas reach this one now.
        body["control"] = json!({"subscribed": control.is_subscribed()});
    }
    HttpResponse::Ok().json(body)
}

/// Readiness: 200 when this node should get new sockets.
pub async fn readyz(
    state: web::Data<AppState>,
    ingest: Option<web::Data<IngestStatus>>,
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
    if let Some(ingest) = ingest.filter(|i| i.required) {
        if let BrokerHealth::Down { reason } = &*ingest.health.borrow() {
            let message = format!("kafka ingest down: {reason}");
            return Err(ApiError::new(ErrorCode::ServiceUnavailable, message, &cid)
                .with_details(json!({"kafka": ingest_json(&ingest)})));
        }
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
