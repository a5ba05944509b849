//! The WebSocket upgrade. actix-http hands every request that asks for `Upgrade: websocket`
//! here together with its TCP stream, so an accepted socket leaves the HTTP/1 dispatcher (and
//! its two 8 KiB buffers) for good and is owned by its `Session` actor alone.
//!
//! Everything that can refuse a socket happens before a session exists: a wrong path (404) or a
//! malformed upgrade (400), draining (503 before the upgrade), then origin, token, and the
//! per-user quota and global cap (decided together: a socket refused for its user's quota never
//! holds a slot of the global cap), then, with Redis, the socket's lease (the one asynchronous
//! step: one script call that also checks the cluster-wide quota), each answered by an upgrade
//! followed at once by a close with the code and JSON reason of the contract, so that a browser
//! sees why. Each upgrade request is counted and logged like any other HTTP request (route,
//! status, correlation id, the token redacted).

use std::net::Shutdown;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use actix_codec::Framed;
use actix_http::header;
use actix_http::{h1, Request, RequestHead};
use actix_web::web;
use bytes::Bytes;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tracing::Instrument as _;
use ws_actors::v2::Protocol;
use ws_actors::wire::OutFrame;
use ws_actors::{
    AdmissionRefusal, CloseCode, CloseReason, ConnId, ConnectionPermit, ErrorCode, LeaseProtocol,
    LingerSlot, QuotaReached, Session, SessionParams, Upgraded, UserId,
};

use super::offer::{offered_token, origin_allowed, requested_protocol};
use crate::auth::{AuthError, VerifiedToken};
use crate::correlation::{CorrelationId, Finished};
use crate::errors::ApiError;
use crate::http_spans::{redacted_target, request_span};
use crate::metrics::HttpMetrics;
use crate::state::AppState;
use crate::telemetry::SPAN_TARGET;

/// How long a refused connection is kept to deliver its answer and see the client hang up.
const REFUSAL_LINGER: Duration = Duration::from_secs(2);
/// The route label of upgrade requests to any other path.
const UNMATCHED: &str = "unmatched";

/// What the upgrade handler needs; one per HTTP worker, cheap to clone.
#[derive(Clone)]
pub struct UpgradeContext {
    /// The shared server state.
    pub state: web::Data<AppState>,
    /// Request counters.
    pub http_metrics: HttpMetrics,
    /// Where WebSockets are accepted (`server.ws_path`).
    pub ws_path: Arc<str>,
}

/// What becomes of one upgrade request.
enum Answer {
    /// An HTTP error; the connection closes after it.
    Error(ApiError),
    /// Upgraded and closed at once with this reason.
    Refuse {
        handshake: Bytes,
        close: CloseReason,
    },
    /// Upgraded: a session takes the socket.
    Accept {
        handshake: Bytes,
        params: Box<SessionParams>,
    },
}

impl Answer {
    fn status(&self) -> u16 {
        match self {
            Answer::Error(error) => actix_web::ResponseError::status_code(error).as_u16(),
            Answer::Refuse { .. } | Answer::Accept { .. } => 101,
        }
    }
}

/// The upgrade service: answers the request and hands the socket on. Never fails: every error
/// is answered to the client.
pub async fn upgrade(
    context: UpgradeContext,
    req: Request,
    framed: Framed<TcpStream, h1::Codec>,
) -> Result<(), actix_http::Error> {
    let started = Instant::now();
    let head = req.head();
    let cid = CorrelationId::of_headers(&head.headers);
    let route: &str = if head.uri.path() == &*context.ws_path {
        &context.ws_path
    } else {
        UNMATCHED
    };
    let target = redacted_target(head.uri.path(), head.uri.query().unwrap_or(""));
    let span = request_span(&head.method, route, &target, &head.headers);
    let answer = decide(&context, head, route, &cid)
        .instrument(span.clone())
        .await;
    let status = answer.status();
    span.record("http.status_code", status);
    let done = Finished {
        method: &head.method,
        route,
        target: &target,
        status,
        id: &cid,
        started,
    };
    span.in_scope(|| done.record(Some(&context.http_metrics)));
    let parts = framed.into_parts();
    // Whatever the HTTP layer had not yet written (answers to requests pipelined before this
    // one) goes out first.
    let mut out = parts.write_buf.to_vec();
    match answer {
        Answer::Error(error) => {
            out.extend_from_slice(&error.http1_response());
            let linger = context.state.limiter.try_linger();
            actix_web::rt::spawn(answer_and_close(parts.io, out.into(), linger));
        }
        Answer::Refuse { handshake, close } => {
            out.extend_from_slice(&handshake);
            OutFrame::close(&close).write_into(&mut out);
            let linger = context.state.limiter.try_linger();
            actix_web::rt::spawn(answer_and_close(parts.io, out.into(), linger));
        }
        Answer::Accept { handshake, params } => {
            let handshake = if out.is_empty() {
                handshake
            } else {
                out.extend_from_slice(&handshake);
                Bytes::from(out)
            };
            let upgraded = Upgraded {
                stream: parts.io,
                handshake,
                read_ahead: parts.read_buf,
            };
            if let Err(error) = Session::spawn(*params, upgraded) {
                tracing::warn!(correlation_id = cid.as_str(), %error, "session not started");
            }
        }
    }
    Ok(())
}

/// Writes `bytes`, ends our side, and with a `linger` slot waits (bounded) for the client to hang
/// up, so that the answer is read before the connection goes. Without one (too many refused
/// sockets linger already) the connection is closed once the answer is written: the socket's
/// descriptor is not held for a client that may never hang up.
async fn answer_and_close(mut stream: TcpStream, bytes: Bytes, linger: Option<LingerSlot>) {
    let answer = async {
        stream.write_all(&bytes).await?;
        socket2::SockRef::from(&stream).shutdown(Shutdown::Write)?;
        if linger.is_some() {
            let mut sink = [0u8; 512];
            while stream.read(&mut sink).await? > 0 {}
        }
        Ok::<(), std::io::Error>(())
    };
    let _ = tokio::time::timeout(REFUSAL_LINGER, answer).await;
}

/// A plain GET of the WebSocket path (no `Upgrade: websocket`, so actix-web routes it here):
/// 503 while draining, else 400.
pub async fn not_an_upgrade(
    state: web::Data<AppState>,
    cid: CorrelationId,
) -> Result<actix_web::HttpResponse, ApiError> {
    if state.drain.is_draining() {
        outcome(&state, "draining");
        return Err(ApiError::new(
            ErrorCode::ServiceUnavailable,
            "server draining",
            &cid,
        ));
    }
    Err(ApiError::new(
        ErrorCode::ValidationError,
        "not a valid WebSocket upgrade: no \"Upgrade: websocket\" header",
        &cid,
    ))
}

/// Counts an upgrade outcome and records it on the connect span.
fn outcome(state: &AppState, outcome: &'static str) {
    state.metrics.relay.opened(outcome);
    tracing::Span::current().record("outcome", outcome);
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

/// Decides the request's fate; a request for the WebSocket path runs in `websocket.connect`.
async fn decide(
    context: &UpgradeContext,
    head: &RequestHead,
    route: &str,
    cid: &CorrelationId,
) -> Answer {
    if route == UNMATCHED || head.method != actix_http::Method::GET {
        let message = format!("no route for {} {}", head.method, head.uri.path());
        return Answer::Error(ApiError::new(ErrorCode::NotFound, message, cid));
    }
    let span = tracing::info_span!(
        target: SPAN_TARGET,
        "websocket.connect",
        correlation_id = cid.as_str(),
        conn.id = tracing::field::Empty,
        user.hash = tracing::field::Empty,
        outcome = tracing::field::Empty,
    );
    connect(&context.state, head, cid).instrument(span).await
}

async fn connect(state: &AppState, head: &RequestHead, cid: &CorrelationId) -> Answer {
    if state.drain.is_draining() {
        outcome(state, "draining");
        let error = ApiError::new(ErrorCode::ServiceUnavailable, "server draining", cid);
        return Answer::Error(error);
    }
    let offered = offered_token(head);
    let handshake = match handshake(head, offered.selected_protocol(), cid) {
        Ok(handshake) => handshake,
        Err(error) => return Answer::Error(error),
    };
    let protocol = match requested_protocol(head, offered.v2_offered) {
        Ok(protocol) => protocol,
        Err(message) => {
            outcome(state, "invalid_request");
            return Answer::Error(ApiError::new(ErrorCode::ValidationError, message, cid));
        }
    };
    let refuse = |code, message: &str| Answer::Refuse {
        handshake: handshake.clone(),
        close: CloseReason::new(code, message, cid.as_str()),
    };
    if !origin_allowed(&head.headers, &state.allowed_origins) {
        outcome(state, "origin_refused");
        return refuse(CloseCode::PolicyViolation, "origin refused");
    }
    let verified = match validate(state, offered.token) {
        Ok(verified) => verified,
        Err(error) => {
            outcome(state, "auth_failed");
            let reason = error.public_message();
            tracing::info!(correlation_id = cid.as_str(), reason, "token refused");
            return refuse(CloseCode::PolicyViolation, reason);
        }
    };
    if let Some(hasher) = &state.trace_user_hash {
        tracing::Span::current().record("user.hash", hasher.hash(&verified.user_id));
    }
    let user = UserId::new(&verified.user_id);
    let permit = match state.limiter.try_admit(&user) {
        Ok(permit) => permit,
        Err(refusal) => {
            if refusal == AdmissionRefusal::UserQuota {
                state.metrics.leases.quota_refused("node");
            }
            let (code, message) = count_refusal(state, refusal, cid);
            return refuse(code, message);
        }
    };
    let conn = ConnId::next();
    let permit = match take_lease(state, &user, conn, &protocol, permit).await {
        Ok(permit) => permit,
        Err(QuotaReached { held }) => {
            tracing::debug!(held, correlation_id = cid.as_str(), "cluster quota reached");
            state.metrics.leases.quota_refused("cluster");
            let (code, message) = count_refusal(state, AdmissionRefusal::UserQuota, cid);
            return refuse(code, message);
        }
    };
    let span = tracing::Span::current();
    span.record("conn.id", conn.get());
    span.record("outcome", "upgraded");
    tracing::debug!(
        conn = conn.get(),
        correlation_id = cid.as_str(),
        "session accepted"
    );
    let hub = state.directory.hub_link(&user);
    let params = SessionParams {
        user,
        conn,
        correlation_id: cid.shared(),
        expires_at: expiry_time(verified.expires_at),
        permit,
        config: state.session_config.clone(),
        hub,
        metrics: state.metrics.relay.clone(),
        history: match protocol {
            Protocol::V2 { .. } => state.history_access.clone(),
            Protocol::Legacy => None,
        },
        protocol,
    };
    Answer::Accept {
        handshake: handshake.clone(),
        params: Box::new(params),
    }
}

/// With Redis, the socket's lease, taken into its permit: refused when the user's sockets across
/// the cluster fill the quota (scope `cluster`); admitted without one when Redis is unreachable.
/// Without Redis, the permit as it is (no call).
async fn take_lease(
    state: &AppState,
    user: &UserId,
    conn: ConnId,
    protocol: &Protocol,
    permit: ConnectionPermit,
) -> Result<ConnectionPermit, QuotaReached> {
    let Some(leases) = &state.leases else {
        return Ok(permit);
    };
    let protocol = match protocol {
        Protocol::Legacy => LeaseProtocol::Legacy,
        Protocol::V2 { .. } => LeaseProtocol::V2,
    };
    let lease = leases
        .acquire(user, conn, protocol, state.cluster_quota)
        .await?;
    Ok(permit.with_lease(lease))
}

/// A token's expiry (unix seconds) as a time, or `None` when it is beyond what `SystemTime`
/// can hold (e.g. `exp` = 2^63): a far-future expiry, which arms no timer.
fn expiry_time(unix_seconds: u64) -> Option<SystemTime> {
    SystemTime::UNIX_EPOCH.checked_add(Duration::from_secs(unix_seconds))
}

/// Counts a socket the limiter refused and returns the close it gets.
fn count_refusal(
    state: &AppState,
    refusal: AdmissionRefusal,
    cid: &CorrelationId,
) -> (CloseCode, &'static str) {
    match refusal {
        AdmissionRefusal::NodeFull => {
            outcome(state, "quota_global");
            (CloseCode::TryAgainLater, "server full")
        }
        AdmissionRefusal::UserQuota => {
            outcome(state, "quota_user");
            count_as_closed_session(state, CloseCode::UserQuota, cid);
            (CloseCode::UserQuota, "user connection quota")
        }
    }
}

/// A quota refusal is still counted and logged as a session that closed at once (a close and a
/// duration), as it was when the user's hub refused it.
fn count_as_closed_session(state: &AppState, code: CloseCode, cid: &CorrelationId) {
    let relay = &state.metrics.relay;
    relay
        .connections_closed
        .with_label_values(&[code.label()])
        .inc();
    relay.connection_duration.observe(0.0);
    tracing::info!(
        correlation_id = cid.as_str(),
        code = code.code(),
        "refused: user connection quota"
    );
}

/// The 101 answer to a valid upgrade request (selecting `notify.v2` or `bearer` whenever one was
/// offered); a request that is no valid upgrade (including one over HTTP/1.0: RFC 6455 §4.1
/// needs HTTP/1.1 or later) gets a 400 with the error JSON.
fn handshake(
    head: &RequestHead,
    subprotocol: Option<&str>,
    cid: &CorrelationId,
) -> Result<Bytes, ApiError> {
    if head.version < actix_http::Version::HTTP_11 {
        return Err(ApiError::new(
            ErrorCode::ValidationError,
            "not a valid WebSocket upgrade: HTTP/1.1 or later is required",
            cid,
        ));
    }
    actix_http::ws::verify_handshake(head).map_err(|error| {
        ApiError::new(
            ErrorCode::ValidationError,
            format!("not a valid WebSocket upgrade: {error}"),
            cid,
        )
    })?;
    let key = head
        .headers
        .get(header::SEC_WEBSOCKET_KEY)
        .map(|key| key.as_bytes())
        .unwrap_or_default();
    let accept = actix_http::ws::hash_key(key);
    let mut answer = Vec::with_capacity(192);
    answer.extend_from_slice(
        b"HTTP/1.1 101 Switching Protocols\r\nupgrade: websocket\r\nconnection: Upgrade\r\n\
          sec-websocket-accept: ",
    );
    answer.extend_from_slice(&accept);
    if let Some(subprotocol) = subprotocol {
        answer.extend_from_slice(b"\r\nsec-websocket-protocol: ");
        answer.extend_from_slice(subprotocol.as_bytes());
    }
    answer.extend_from_slice(b"\r\nx-correlation-id: ");
    answer.extend_from_slice(cid.as_str().as_bytes());
    answer.extend_from_slice(b"\r\n\r\n");
    Ok(Bytes::from(answer))
}

#[cfg(test)]
mod tests {
    use actix_web::test::TestRequest;

    use super::*;

    fn head_of(request: TestRequest) -> RequestHead {
        request.to_request().head().clone()
    }

    #[test]
    fn the_101_answer_accepts_the_key_and_selects_bearer() {
        let head = head_of(
            TestRequest::default()
                .insert_header((header::UPGRADE, "websocket"))
                .insert_header((header::CONNECTION, "Upgrade"))
                .insert_header((header::SEC_WEBSOCKET_VERSION, "13"))
                .insert_header((header::SEC_WEBSOCKET_KEY, "dGhlIHNhbXBsZSBub25jZQ==")),
        );
        let cid = CorrelationId::from_header("cid-1");
        let answer = handshake(&head, Some("bearer"), &cid).expect("valid upgrade");
        let text = std::str::from_utf8(&answer).expect("ascii");
        assert!(text.starts_with("HTTP/1.1 101 "));
        // The example key and accept value of RFC 6455 section 1.3.
        assert!(text.contains("sec-websocket-accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n"));
        assert!(text.contains("sec-websocket-protocol: bearer\r\n"));
        assert!(text.ends_with("x-correlation-id: cid-1\r\n\r\n"));
        let plain = head_of(TestRequest::default());
        assert!(handshake(&plain, None, &cid).is_err());
        let mut http_1_0 = head.clone();
        http_1_0.version = actix_http::Version::HTTP_10;
        assert!(handshake(&http_1_0, None, &cid).is_err());
    }

    #[test]
    fn an_expiry_beyond_system_time_is_no_expiry() {
        assert_eq!(expiry_time(u64::MAX), None);
        assert_eq!(expiry_time(1 << 63), None);
        let in_2023 = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        assert_eq!(expiry_time(1_700_000_000), Some(in_2023));
        assert!(expiry_time(1 << 62).is_some(), "representable, if far");
    }
}
