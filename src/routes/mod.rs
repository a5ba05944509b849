//! HTTP routes: the WebSocket upgrade, health and readiness, metrics, the publish, position,
//! presence and disconnect APIs, and the JSON 404 for everything else.

mod bearer;
pub(crate) mod body;
pub(crate) mod disconnect;
mod health;
mod offer;
mod position;
mod presence;
mod publish;
mod ws;

pub use body::BodyLimits;
pub use health::IngestStatus;
pub use publish::MAX_BODY_BYTES as PUBLISH_MAX_BODY_BYTES;
pub use ws::{upgrade, UpgradeContext};

use actix_web::{web, HttpRequest, HttpResponse};
use ws_actors::ErrorCode;

use crate::correlation::CorrelationId;
use crate::errors::ApiError;

/// Registers every route; `ws_path` is where the WebSocket upgrade lives.
pub fn configure(cfg: &mut web::ServiceConfig, ws_path: &str) {
    cfg.route(ws_path, web::get().to(ws::not_an_upgrade))
        .route("/healthz", web::get().to(health::healthz))
        .route("/readyz", web::get().to(health::readyz))
        .route("/metrics", web::get().to(health::metrics))
        .route("/api/v1/publish", web::post().to(publish::publish))
        .route("/api/v1/position", web::get().to(position::position))
        .route("/api/v1/presence", web::get().to(presence::presence))
        .route("/api/v1/disconnect", web::post().to(disconnect::disconnect))
        .default_service(web::to(not_found));
}

async fn not_found(req: HttpRequest, cid: CorrelationId) -> Result<HttpResponse, ApiError> {
    let message = format!("no route for {} {}", req.method(), req.path());
    Err(ApiError::new(ErrorCode::NotFound, message, &cid))
}
