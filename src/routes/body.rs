//! Request bodies read by the handler itself rather than by an extractor, so that a request can
//! be refused from its headers before a byte of its body is read. The body is read with a size
//! cap (a declared `Content-Length` over it is refused at once) and a deadline for the whole
//! body. A request answered before its body was read in full gets `Connection: close`: the unread
//! rest cannot be skipped cheaply, so the connection is closed after the answer.

use std::pin::Pin;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use actix_web::body::{BodySize, MessageBody};
use actix_web::http::header::CONTENT_LENGTH;
use actix_web::http::{ConnectionType, StatusCode};
use actix_web::{web, HttpRequest, HttpResponse};
use bytes::{Bytes, BytesMut};
use futures_util::StreamExt as _;
use ws_actors::ErrorCode;

use crate::correlation::CorrelationId;
use crate::errors::ApiError;

/// How big a body may be and how long it may take to arrive.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BodyLimits {
    /// Most bytes accepted; more is answered 413.
    pub max_bytes: usize,
    /// Longest the whole body may take, from when the handler starts reading; longer is
    /// answered 408.
    pub timeout: Duration,
}

/// Why a body was not read in full.
enum Unread {
    TooLarge,
    Broken(actix_web::error::PayloadError),
}

/// Reads the whole body of `req` within `limits`. On failure, the answer to send (the error JSON,
/// and the connection closes after it).
pub async fn read_within(
    req: &HttpRequest,
    mut payload: web::Payload,
    limits: BodyLimits,
    cid: &CorrelationId,
) -> Result<Bytes, HttpResponse> {
    if declared_length(req).is_some_and(|length| length > limits.max_bytes) {
        return Err(refuse_unread(too_large(limits, cid), payload));
    }
    let collected =
        actix_web::rt::time::timeout(limits.timeout, collect(&mut payload, limits.max_bytes)).await;
    let error = match collected {
        Ok(Ok(body)) => return Ok(body.freeze()),
        Ok(Err(Unread::TooLarge)) => too_large(limits, cid),
        Ok(Err(Unread::Broken(err))) => ApiError::new(
            ErrorCode::ValidationError,
            format!("body incomplete: {err}"),
            cid,
        ),
        Err(_elapsed) => timed_out(limits, cid),
    };
    Err(refuse_unread(error, payload))
}

/// Answers `error` without reading the rest of the body, and closes the connection after the
/// answer.
pub fn refuse_unread(error: ApiError, unread: web::Payload) -> HttpResponse {
    HttpResponse::from_error(error)
        .map_body(|head, body| {
            head.set_connection_type(ConnectionType::Close);
            HoldingPayload {
                body,
                _unread: unread,
            }
        })
        .map_into_boxed_body()
}

fn declared_length(req: &HttpRequest) -> Option<usize> {
    req.headers()
        .get(CONTENT_LENGTH)?
        .to_str()
        .ok()?
        .parse()
        .ok()
}

async fn collect(payload: &mut web::Payload, max_bytes: usize) -> Result<BytesMut, Unread> {
    let mut body = BytesMut::new();
    while let Some(chunk) = payload.next().await {
        let chunk = chunk.map_err(Unread::Broken)?;
        if body.len() + chunk.len() > max_bytes {
            return Err(Unread::TooLarge);
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

fn too_large(limits: BodyLimits, cid: &CorrelationId) -> ApiError {
    let message = format!("body over {} bytes", limits.max_bytes);
    ApiError::new(ErrorCode::ValidationError, message, cid)
        .with_status(StatusCode::PAYLOAD_TOO_LARGE)
        .with_details(serde_json::json!({ "max_bytes": limits.max_bytes }))
}

fn timed_out(limits: BodyLimits, cid: &CorrelationId) -> ApiError {
    let message = format!(
        "body not received within {} s",
        limits.timeout.as_secs_f64()
    );
    ApiError::new(ErrorCode::Timeout, message, cid).with_status(StatusCode::REQUEST_TIMEOUT)
}

/// A response body that keeps the unread request payload alive until the answer is written.
/// actix-http closes a connection whose request payload is still unread when the answer ends
/// (after a linger of [`CLIENT_DISCONNECT_TIMEOUT`](crate::CLIENT_DISCONNECT_TIMEOUT)), but
/// drains a dropped chunked payload first, however slowly it comes; holding it makes it close in
/// every case.
///
/// The linger's deadline is computed from actix-http's cached clock (up to 500 ms stale), so it
/// can already have passed when its timer is first polled; that timer then never wakes the
/// connection and a silent client would hold it open. The body therefore wakes its connection
/// once the linger is over, so the deadline is seen.
struct HoldingPayload<B> {
    body: B,
    _unread: web::Payload,
}

/// When, after the answer's last byte, the connection is woken to see that its linger is over.
const LINGER_CHECK: Duration =
    crate::CLIENT_DISCONNECT_TIMEOUT.saturating_add(Duration::from_millis(100));

impl<B: MessageBody + Unpin> MessageBody for HoldingPayload<B> {
    type Error = B::Error;

    fn size(&self) -> BodySize {
        self.body.size()
    }

    fn poll_next(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Bytes, Self::Error>>> {
        let next = Pin::new(&mut self.get_mut().body).poll_next(cx);
        if let Poll::Ready(None) = next {
            wake_after(LINGER_CHECK, cx.waker().clone());
        }
        next
    }
}

fn wake_after(delay: Duration, waker: Waker) {
    actix_web::rt::spawn(async move {
        actix_web::rt::time::sleep(delay).await;
        waker.wake();
    });
}
