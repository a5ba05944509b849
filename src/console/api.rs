//! The admin API (`/api/v1/admin/…`): every handler authorises from the headers first
//! (`Authorization: Bearer <admin_key>`, or the console session with its CSRF token for a state
//! change) and only then reads a body. Errors are the service's error JSON; operator actions
//! are logged with how the operator was authorised and the correlation id, never the key, and
//! the user only as `user.hash` (as on connect spans).

use std::time::{Duration, SystemTime};

use actix_web::http::{header, StatusCode};
use actix_web::{web, HttpRequest, HttpResponse};
use bytes::Bytes;
use serde::Deserialize;
use serde_json::{json, Value};
use ws_actors::{ErrorCode, UserId};

use super::auth::{set_cookie, unauthorized, Operator};
use super::{cluster_refusals, node_json, users, Console, DEMO_TOKEN_TTL};
use crate::correlation::CorrelationId;
use crate::errors::ApiError;
use crate::routes::body::{self, BodyLimits};
use crate::routes::disconnect::disconnect_users;
use crate::state::AppState;

/// Longest user id accepted (as the publish API and a token's `sub`).
const MAX_USER_ID_BYTES: usize = 256;
/// Longest disconnect reason accepted (the close frame shortens it further).
const MAX_REASON_BYTES: usize = 256;
/// Largest login body.
const LOGIN_MAX_BYTES: usize = 4096;
/// The close message of a disconnect without a reason.
const DEFAULT_REASON: &str = "disconnected by an operator";

type Answer = Result<HttpResponse, ApiError>;

fn invalid(message: impl Into<String>, cid: &CorrelationId) -> ApiError {
    ApiError::new(ErrorCode::ValidationError, message, cid)
}

/// An action's request: the operator authorised (a state change: CSRF checked) before the body
/// is read, then the JSON body within `limits`. An error is the answer to send.
async fn authorized_action<T: serde::de::DeserializeOwned>(
    req: &HttpRequest,
    payload: web::Payload,
    console: &Console,
    limits: BodyLimits,
    cid: &CorrelationId,
) -> Result<(Operator, T), HttpResponse> {
    let operator = match console.auth.authorize(req, true, cid) {
        Ok(operator) => operator,
        Err(error) => return Err(body::refuse_unread(error, payload)),
    };
    let request = json_body(req, payload, limits, cid).await?;
    Ok((operator, request))
}

/// Reads a JSON body within `limits`, after the caller has authorised the request.
async fn json_body<T: serde::de::DeserializeOwned>(
    req: &HttpRequest,
    payload: web::Payload,
    limits: BodyLimits,
    cid: &CorrelationId,
) -> Result<T, HttpResponse> {
    let bytes = body::read_within(req, payload, limits, cid).await?;
    serde_json::from_slice(&bytes)
        .map_err(|error| HttpResponse::from_error(invalid(format!("malformed body: {error}"), cid)))
}

fn user_id(id: &str, cid: &CorrelationId) -> Result<UserId, ApiError> {
    if id.is_empty() || id.len() > MAX_USER_ID_BYTES {
        return Err(invalid(
            format!("user_id must be 1 to {MAX_USER_ID_BYTES} bytes"),
            cid,
        ));
    }
    Ok(UserId::new(id))
}

/// The user as operator logs show it: its keyed hash, or nothing.
fn user_hash(state: &AppState, user: &UserId) -> String {
    state
        .trace_user_hash
        .as_ref()
        .map(|hasher| hasher.hash(user.as_str()))
        .unwrap_or_default()
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct Login {
    key: String,
}

/// `POST /api/v1/admin/login` `{"key":"…"}`: the admin key, posted once (JSON only, so a
/// cross-site form cannot post it), answered with the session cookie and its CSRF token.
pub(super) async fn login(
    req: HttpRequest,
    payload: web::Payload,
    console: web::Data<Console>,
    limits: web::Data<BodyLimits>,
    cid: CorrelationId,
) -> HttpResponse {
    let is_json = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .is_some_and(|value| value.starts_with("application/json"));
    if !is_json {
        let error = invalid(
            "login takes a JSON body (Content-Type: application/json)",
            &cid,
        )
        .with_status(StatusCode::UNSUPPORTED_MEDIA_TYPE);
        return body::refuse_unread(error, payload);
    }
    let limits = BodyLimits {
        max_bytes: LOGIN_MAX_BYTES,
        ..**limits
    };
    let login: Login = match json_body(&req, payload, limits, &cid).await {
        Ok(login) => login,
        Err(refusal) => return refusal,
    };
    if !console.auth.key_matches(&login.key) {
        tracing::warn!(
            correlation_id = cid.as_str(),
            "console login refused: wrong admin key"
        );
        return HttpResponse::from_error(unauthorized(&cid));
    }
    let issued = console.auth.issue(SystemTime::now());
    tracing::info!(correlation_id = cid.as_str(), "console login");
    HttpResponse::Ok()
        .insert_header((
            header::SET_COOKIE,
            set_cookie(&req, &issued.cookie, super::SESSION_TTL),
        ))
        .json(json!({
            "csrf_token": issued.csrf,
            "expires_at": super::rfc3339(issued.expires),
        }))
}

/// `POST /api/v1/admin/logout`: the browser forgets the session.
pub(super) async fn logout(
    req: HttpRequest,
    console: web::Data<Console>,
    cid: CorrelationId,
) -> Answer {
    console.auth.authorize(&req, true, &cid)?;
    Ok(HttpResponse::Ok()
        .insert_header((header::SET_COOKIE, set_cookie(&req, "", Duration::ZERO)))
        .json(json!({ "logged_out": true })))
}

/// `GET /api/v1/admin/session`: whether the caller is signed in, its CSRF token (for a
/// session), and what this console offers.
pub(super) async fn session(
    req: HttpRequest,
    console: web::Data<Console>,
    state: web::Data<AppState>,
    cid: CorrelationId,
) -> Answer {
    let operator = console.auth.authorize(&req, false, &cid)?;
    let csrf = match operator {
        Operator::Session => console.auth.session_csrf(&req),
        Operator::Key => None,
    };
    Ok(HttpResponse::Ok().json(json!({
        "operator": operator.as_str(),
        "csrf_token": csrf,
        "node": state.node.as_str(),
        "history": state.history.is_some(),
        "demo_user": console.demo.as_ref().map(|demo| demo.user.as_str()),
        "ws_path": console.ws_path,
    })))
}

/// `GET /api/v1/admin/nodes`: every replica sharing the Redis (this one only without it).
pub(super) async fn nodes(
    req: HttpRequest,
    console: web::Data<Console>,
    state: web::Data<AppState>,
    cid: CorrelationId,
) -> Answer {
    console.auth.authorize(&req, false, &cid)?;
    let (nodes, cluster) = console.nodes(&state).await;
    let this = state.node.as_str();
    let nodes: Vec<Value> = nodes.iter().map(|node| node_json(node, this)).collect();
    Ok(HttpResponse::Ok().json(json!({ "nodes": nodes, "cluster": cluster })))
}

/// `GET /api/v1/admin/overview`: everything the overview shows, in one request (the page
/// polls it): the replicas, their totals and the refusals of the window.
pub(super) async fn overview(
    req: HttpRequest,
    console: web::Data<Console>,
    state: web::Data<AppState>,
    cid: CorrelationId,
) -> Answer {
    console.auth.authorize(&req, false, &cid)?;
    let (nodes, cluster) = console.nodes(&state).await;
    let this = state.node.as_str();
    let totals = json!({
        "nodes": nodes.len(),
        "connections": nodes.iter().map(|n| n.connections).sum::<u64>(),
        "users": nodes.iter().map(|n| n.users).sum::<u64>(),
        "messages_per_s": (nodes.iter().map(|n| n.messages_per_s).sum::<f64>() * 10.0).round() / 10.0,
        "draining": nodes.iter().filter(|n| n.draining).count(),
    });
    let refusals = cluster_refusals(&nodes);
    let nodes: Vec<Value> = nodes.iter().map(|node| node_json(node, this)).collect();
    Ok(HttpResponse::Ok().json(json!({
        "node": this,
        "nodes": nodes,
        "totals": totals,
        "refusals": refusals,
        "cluster": cluster,
    })))
}

/// `GET /api/v1/admin/refusals`: refused connections per minute and reason, every replica
/// summed, over the last 15 minutes.
pub(super) async fn refusals(
    req: HttpRequest,
    console: web::Data<Console>,
    state: web::Data<AppState>,
    cid: CorrelationId,
) -> Answer {
    console.auth.authorize(&req, false, &cid)?;
    let (nodes, cluster) = console.nodes(&state).await;
    let mut answer = cluster_refusals(&nodes);
    answer["cluster"] = cluster;
    Ok(HttpResponse::Ok().json(answer))
}

/// `GET /api/v1/admin/users/{user_id}`: the user's sockets on every replica and, with a
/// history store, the last messages.
pub(super) async fn user(
    req: HttpRequest,
    path: web::Path<String>,
    console: web::Data<Console>,
    state: web::Data<AppState>,
    cid: CorrelationId,
) -> Answer {
    console.auth.authorize(&req, false, &cid)?;
    let user = user_id(&path, &cid)?;
    Ok(HttpResponse::Ok().json(users::lookup(&state, &console, &user).await))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct PublishRequest {
    user_id: String,
    data: Value,
}

/// `POST /api/v1/admin/publish` `{"user_id","data"}`: a test message through the broker (a
/// string as is, any other JSON value compactly, as the publish API does).
pub(super) async fn publish(
    req: HttpRequest,
    payload: web::Payload,
    console: web::Data<Console>,
    state: web::Data<AppState>,
    limits: web::Data<BodyLimits>,
    cid: CorrelationId,
) -> HttpResponse {
    let (operator, request): (_, PublishRequest) =
        match authorized_action(&req, payload, &console, **limits, &cid).await {
            Ok(action) => action,
            Err(refusal) => return refusal,
        };
    let user = match user_id(&request.user_id, &cid) {
        Ok(user) => user,
        Err(error) => return HttpResponse::from_error(error),
    };
    let bytes = match &request.data {
        Value::String(text) => Bytes::from(text.clone()),
        other => Bytes::from(other.to_string()),
    };
    let size = bytes.len();
    let published = console.actions.publish(user.clone(), bytes).await;
    let outcome = if published.is_ok() {
        "published"
    } else {
        "failed"
    };
    tracing::info!(
        action = "publish",
        operator = operator.as_str(),
        correlation_id = cid.as_str(),
        user.hash = user_hash(&state, &user),
        bytes = size,
        outcome,
        "console action"
    );
    match published {
        Ok(published) => {
            let mut answer = json!({
                "published": { "user_id": user.as_str(), "bytes": size, "data": request.data },
                "correlation_id": cid.as_str(),
            });
            if let Some(position) = published.position {
                answer["position"] =
                    json!({ "epoch": position.epoch.as_str(), "offset": position.offset });
            }
            HttpResponse::Ok().json(answer)
        }
        Err(error) => HttpResponse::from_error(ApiError::new(
            ErrorCode::ServiceUnavailable,
            error.to_string(),
            &cid,
        )),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct DisconnectRequest {
    user_id: String,
    #[serde(default)]
    reason: Option<String>,
}

/// `POST /api/v1/admin/disconnect` `{"user_id","reason"}`: closes the user's sockets with 4003.
pub(super) async fn disconnect(
    req: HttpRequest,
    payload: web::Payload,
    console: web::Data<Console>,
    state: web::Data<AppState>,
    limits: web::Data<BodyLimits>,
    cid: CorrelationId,
) -> HttpResponse {
    let (operator, request): (_, DisconnectRequest) =
        match authorized_action(&req, payload, &console, **limits, &cid).await {
            Ok(action) => action,
            Err(refusal) => return refusal,
        };
    let user = match user_id(&request.user_id, &cid) {
        Ok(user) => user,
        Err(error) => return HttpResponse::from_error(error),
    };
    let reason = request
        .reason
        .filter(|reason| !reason.trim().is_empty())
        .unwrap_or_else(|| DEFAULT_REASON.to_owned());
    if reason.len() > MAX_REASON_BYTES {
        let message = format!("reason must be at most {MAX_REASON_BYTES} bytes");
        return HttpResponse::from_error(invalid(message, &cid));
    }
    // The same cluster-wide disconnect as `POST /api/v1/disconnect`.
    let done = disconnect_users(&state, std::slice::from_ref(&user), &reason, &cid).await;
    tracing::info!(
        action = "disconnect",
        operator = operator.as_str(),
        correlation_id = cid.as_str(),
        user.hash = user_hash(&state, &user),
        sockets = done.as_ref().map_or(0, |sockets| *sockets),
        outcome = if done.is_ok() {
            "disconnected"
        } else {
            "failed"
        },
        "console action"
    );
    let scope = if state.control.is_some() {
        "cluster"
    } else {
        "node"
    };
    match done {
        Ok(sockets) => HttpResponse::Ok().json(json!({
            "user_id": user.as_str(),
            "disconnected": sockets,
            "scope": scope,
            "close_code": 4003,
            "reason": reason,
            "correlation_id": cid.as_str(),
        })),
        Err(error) => HttpResponse::from_error(error),
    }
}

/// `POST /api/v1/admin/demo-token` (`--dev` only, 404 otherwise): a token for the demo user,
/// for the "try it" page.
pub(super) async fn demo_token(
    req: HttpRequest,
    console: web::Data<Console>,
    cid: CorrelationId,
) -> Answer {
    let Some(demo) = &console.demo else {
        return Err(ApiError::new(
            ErrorCode::NotFound,
            "demo tokens exist only with --dev",
            &cid,
        ));
    };
    console.auth.authorize(&req, true, &cid)?;
    let token = crate::auth::mint_hs256(&demo.secret, &demo.user, DEMO_TOKEN_TTL)
        .map_err(|error| ApiError::new(ErrorCode::InternalError, error.to_string(), &cid))?;
    Ok(HttpResponse::Ok().json(json!({ "user_id": demo.user, "token": token })))
}
