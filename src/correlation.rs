//! Correlation ids: taken from `X-Correlation-ID` when the client sends a sane one, made up
//! otherwise, stored in the request for handlers and echoed on every response. The same
//! middleware counts HTTP requests by route pattern and status (bounded labels, no raw paths).

use std::future::{ready, Ready};
use std::sync::Arc;
use std::time::Instant;

use actix_web::body::MessageBody;
use actix_web::dev::{Payload, ServiceRequest, ServiceResponse};
use actix_web::http::header::{HeaderMap, HeaderName, HeaderValue};
use actix_web::http::Method;
use actix_web::middleware::Next;
use actix_web::{web, Error, FromRequest, HttpMessage, HttpRequest};

use crate::http_spans::redacted_target;
use crate::metrics::HttpMetrics;

/// The header carrying the correlation id.
pub const HEADER: HeaderName = HeaderName::from_static("x-correlation-id");
/// The longest client-supplied correlation id kept as is.
const MAX_LEN: usize = 64;

/// One request's correlation id. Cheap to clone.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CorrelationId(Arc<str>);

impl CorrelationId {
    /// A fresh random id.
    pub fn generate() -> Self {
        Self(Arc::from(uuid::Uuid::new_v4().simple().to_string()))
    }

    /// The client's id when it is 1–64 characters of `[A-Za-z0-9._:-]`, else a fresh one.
    pub fn from_header(value: &str) -> Self {
        let sane = !value.is_empty()
            && value.len() <= MAX_LEN
            && value
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b':'));
        if sane {
            Self(Arc::from(value))
        } else {
            Self::generate()
        }
    }

    /// The id as a string.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The id of a request: its `X-Correlation-ID` when sane, else a fresh one.
    pub fn of_headers(headers: &HeaderMap) -> Self {
        headers
            .get(HEADER)
            .and_then(|value| value.to_str().ok())
            .map(CorrelationId::from_header)
            .unwrap_or_else(CorrelationId::generate)
    }

    /// The shared string, for actors.
    pub fn shared(&self) -> Arc<str> {
        Arc::clone(&self.0)
    }
}

fn of_request(req: &HttpRequest) -> CorrelationId {
    req.extensions()
        .get::<CorrelationId>()
        .cloned()
        .unwrap_or_else(CorrelationId::generate)
}

impl FromRequest for CorrelationId {
    type Error = Error;
    type Future = Ready<Result<Self, Error>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        ready(Ok(of_request(req)))
    }
}

/// Middleware: assigns the correlation id, echoes it, counts and logs the request.
pub async fn middleware(
    req: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<impl MessageBody>, Error> {
    let id = CorrelationId::of_headers(req.headers());
    req.extensions_mut().insert(id.clone());
    let metrics = req.app_data::<web::Data<HttpMetrics>>().cloned();
    let started = Instant::now();
    let method = req.method().clone();
    let target = redacted_target(req.path(), req.query_string());
    let mut response = next.call(req).await?;
    let route = response
        .request()
        .match_pattern()
        .unwrap_or_else(|| "unmatched".to_owned());
    let done = Finished {
        method: &method,
        route: &route,
        target: &target,
        status: response.status().as_u16(),
        id: &id,
        started,
    };
    done.record(metrics.as_ref().map(|metrics| metrics.get_ref()));
    if let Ok(value) = HeaderValue::from_str(id.as_str()) {
        response.headers_mut().insert(HEADER, value);
    }
    Ok(response)
}

/// A request that has been answered, as counted and logged.
pub struct Finished<'a> {
    /// The request method.
    pub method: &'a Method,
    /// The route pattern (never the raw path).
    pub route: &'a str,
    /// The path and query, query values redacted ([`redacted_target`]).
    pub target: &'a str,
    /// The answer's status.
    pub status: u16,
    /// The request's correlation id.
    pub id: &'a CorrelationId,
    /// When the request arrived.
    pub started: Instant,
}

impl Finished<'_> {
    /// Counts the request and writes its debug log line.
    pub fn record(&self, metrics: Option<&HttpMetrics>) {
        let elapsed = self.started.elapsed();
        if let Some(metrics) = metrics {
            metrics.observe(self.route, self.status, elapsed);
        }
        tracing::debug!(
            method = %self.method,
            route = %self.route,
            target = %self.target,
            status = self.status,
            correlation_id = self.id.as_str(),
            elapsed_ms = elapsed.as_millis() as u64,
            "http request"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sane_ids_are_kept_and_others_replaced() {
        assert_eq!(CorrelationId::from_header("abc-123").as_str(), "abc-123");
        let long = "a".repeat(65);
        assert_ne!(CorrelationId::from_header(&long).as_str(), long);
        assert_ne!(CorrelationId::from_header("a b\"c").as_str(), "a b\"c");
        assert_eq!(CorrelationId::generate().as_str().len(), 32);
    }
}
