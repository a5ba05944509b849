//! The root span of every HTTP request (tracing-actix-web), built so that it never carries a
//! credential: the target is recorded with every query value redacted (see
//! [`redacted_target`]), and no header is recorded. An incoming W3C `traceparent` header becomes
//! the span's parent.

use actix_web::body::MessageBody;
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::header::HeaderMap;
use actix_web::http::Method;
use actix_web::Error;
use tracing::Span;
use tracing_actix_web::{DefaultRootSpanBuilder, RootSpanBuilder};
use tracing_opentelemetry::OpenTelemetrySpanExt;

use crate::telemetry::remote_context;

/// Root spans with the query values redacted.
pub struct RedactingRootSpan;

/// Query parameters whose values are logged as sent (names compared ignoring ASCII case): none
/// of them can carry a credential. Every other value is redacted, whatever its name.
pub const LOGGED_QUERY_PARAMETERS: [&str; 2] = ["v", "since"];

/// What a redacted query value is replaced with.
const REDACTED: &str = "[redacted]";

/// Paths that end in a user id (the console's user lookup): the id is logged as `[redacted]`,
/// as no log line or span carries a user id.
const USER_PATH_PREFIX: &str = "/api/v1/admin/users/";

/// The request path and query, as logged: the value of every query parameter not in
/// [`LOGGED_QUERY_PARAMETERS`] is replaced by `[redacted]` (a token, an API key, a password or
/// anything else a client put there), and a parameter without `=` is replaced whole; a user id
/// in the path ([`USER_PATH_PREFIX`]) is replaced too.
pub fn redacted_target(path: &str, query: &str) -> String {
    let redacted_path;
    let path = match path.strip_prefix(USER_PATH_PREFIX) {
        Some(user) if !user.is_empty() => {
            redacted_path = format!("{USER_PATH_PREFIX}{REDACTED}");
            redacted_path.as_str()
        }
        _ => path,
    };
    if query.is_empty() {
        return path.to_owned();
    }
    let redacted: Vec<String> = query.split('&').map(redacted_parameter).collect();
    format!("{path}?{}", redacted.join("&"))
}

fn redacted_parameter(parameter: &str) -> String {
    match parameter.split_once('=') {
        Some((name, _)) if !is_logged(name) => format!("{name}={REDACTED}"),
        Some(_) => parameter.to_owned(),
        None if parameter.is_empty() => String::new(),
        None => REDACTED.to_owned(),
    }
}

fn is_logged(name: &str) -> bool {
    LOGGED_QUERY_PARAMETERS
        .iter()
        .any(|logged| name.eq_ignore_ascii_case(logged))
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
    fn every_query_value_is_redacted_but_the_allowed_ones() {
        assert_eq!(redacted_target("/ws", ""), "/ws");
        assert_eq!(
            redacted_target("/ws", "token=abc.def.ghi&x=1"),
            "/ws?token=[redacted]&x=[redacted]"
        );
        assert_eq!(
            redacted_target("/ws", "access_token=a&API_KEY=b&sig=c&key=d"),
            "/ws?access_token=[redacted]&API_KEY=[redacted]&sig=[redacted]&key=[redacted]"
        );
        assert_eq!(
            redacted_target("/api", "v=2&SINCE=17&password=p"),
            "/api?v=2&SINCE=17&password=[redacted]"
        );
    }

    #[test]
    fn odd_queries_leak_nothing() {
        assert_eq!(redacted_target("/h", "eyJhbGciOi.x.y"), "/h?[redacted]");
        assert_eq!(
            redacted_target("/h", "a=&=b&&"),
            "/h?a=[redacted]&=[redacted]&&"
        );
        assert_eq!(redacted_target("/h", "%76=x"), "/h?%76=[redacted]");
        assert_eq!(redacted_target("/h", "token=a=b"), "/h?token=[redacted]");
    }

    #[test]
    fn the_user_id_of_a_console_lookup_is_redacted() {
        assert_eq!(
            redacted_target("/api/v1/admin/users/alice%40school", "x=1"),
            "/api/v1/admin/users/[redacted]?x=[redacted]"
        );
        assert_eq!(
            redacted_target("/api/v1/admin/users/", ""),
            "/api/v1/admin/users/"
        );
        assert_eq!(
            redacted_target("/api/v1/admin/nodes", ""),
            "/api/v1/admin/nodes"
        );
    }
}
