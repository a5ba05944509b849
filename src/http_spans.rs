//! The root span of every HTTP request (tracing-actix-web), built so that it never carries a
//! token: the target is recorded with the `token` query value replaced by `[redacted]`, and no
//! header is recorded. An incoming W3C `traceparent` header becomes the span's parent.

use actix_web::body::MessageBody;
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::header::HeaderMap;
use actix_web::http::Method;
use actix_web::Error;
use tracing::Span;
use tracing_actix_web::{DefaultRootSpanBuilder, RootSpanBuilder};
use tracing_opentelemetry::OpenTelemetrySpanExt;

use crate::telemetry::remote_context;

/// Root spans with the token redacted.
pub struct RedactingRootSpan;

/// The request path and query with the value of every `token` parameter replaced.
pub fn redacted_target(path: &str, query: &str) -> String {
    if query.is_empty() {
        return path.to_owned();
    }
    let redacted: Vec<String> = query
        .split('&')
        .map(|pair| match pair.split_once('=') {
            Some((key, _)) if key.eq_ignore_ascii_case("token") => format!("{key}=[redacted]"),
            _ => pair.to_owned(),
        })
        .collect();
    format!("{path}?{}", redacted.join("&"))
}

/// The root span of one request: method, route pattern and redacted target, no header; an
/// incoming `traceparent` header becomes its parent.
pub fn request_span(method: &Method, route: &str, target: &str, headers: &HeaderMap) -> Span {
    let span = tracing::info_span!(
        "HTTP request",
        otel.name = %format!("{method} {route}"),
        otel.kind = "server",
        http.request.method = %method,
        http.route = %route,
        url.path_and_query = %target,
        http.status_code = tracing::field::Empty,
        otel.status_code = tracing::field::Empty,
        exception.message = tracing::field::Empty,
        exception.details = tracing::field::Empty,
    );
    let traceparent = headers
        .get("traceparent")
        .and_then(|value| value.to_str().ok());
    if let Some(traceparent) = traceparent {
        let _ = span.set_parent(remote_context(traceparent));
    }
    span
}

impl RootSpanBuilder for RedactingRootSpan {
    fn on_request_start(request: &ServiceRequest) -> Span {
        let target = redacted_target(request.path(), request.query_string());
        let route = request
            .match_pattern()
            .unwrap_or_else(|| "unmatched".to_owned());
        request_span(request.method(), &route, &target, request.headers())
    }

    fn on_request_end<B: MessageBody>(span: Span, outcome: &Result<ServiceResponse<B>, Error>) {
        DefaultRootSpanBuilder::on_request_end(span, outcome);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_values_are_redacted_and_the_rest_kept() {
        assert_eq!(redacted_target("/ws", ""), "/ws");
        assert_eq!(
            redacted_target("/ws", "token=abc.def.ghi&x=1"),
            "/ws?token=[redacted]&x=1"
        );
        assert_eq!(
            redacted_target("/ws", "a=1&TOKEN=zzz"),
            "/ws?a=1&TOKEN=[redacted]"
        );
    }
}
