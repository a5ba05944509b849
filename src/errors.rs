//! The HTTP error contract: every error body is
//! `{"error":{"code","message","correlation_id","service","timestamp","details"}}`, with the
//! status derived from the error code.

use std::time::SystemTime;

use actix_web::http::StatusCode;
use actix_web::{HttpResponse, ResponseError};
use serde::Serialize;
use ws_actors::ErrorCode;

use crate::correlation::CorrelationId;

/// The service name put in error bodies.
pub const SERVICE_NAME: &str = "websocket-service";

/// An error answered to an HTTP client.
#[derive(Debug, thiserror::Error)]
#[error("{code}: {message}")]
pub struct ApiError {
    code: ErrorCode,
    status: StatusCode,
    message: String,
    correlation_id: std::sync::Arc<str>,
    details: Option<Box<serde_json::Value>>,
}

impl ApiError {
    /// An error with the status that goes with `code`.
    pub fn new(
        code: ErrorCode,
        message: impl Into<String>,
        correlation_id: &CorrelationId,
    ) -> Self {
        Self {
            code,
            status: status_of(code),
            message: message.into(),
            correlation_id: correlation_id.shared(),
            details: None,
        }
    }

    /// Overrides the status (e.g. 422 for a well-formed but invalid body).
    pub fn with_status(mut self, status: StatusCode) -> Self {
        self.status = status;
        self
    }

    /// Adds machine-readable details.
    pub fn with_details(mut self, details: serde_json::Value) -> Self {
        self.details = Some(Box::new(details));
        self
    }
}

/// The status for each error code.
pub fn status_of(code: ErrorCode) -> StatusCode {
    match code {
        ErrorCode::AuthenticationError => StatusCode::UNAUTHORIZED,
        ErrorCode::ValidationError => StatusCode::BAD_REQUEST,
        ErrorCode::QuotaExceeded | ErrorCode::RateLimit => StatusCode::TOO_MANY_REQUESTS,
        ErrorCode::ServiceUnavailable => StatusCode::SERVICE_UNAVAILABLE,
        ErrorCode::ExternalServiceError => StatusCode::BAD_GATEWAY,
        ErrorCode::Timeout => StatusCode::GATEWAY_TIMEOUT,
        ErrorCode::NotFound => StatusCode::NOT_FOUND,
        _ => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

#[derive(Serialize)]
struct Envelope<'a> {
    error: Body<'a>,
}

#[derive(Serialize)]
struct Body<'a> {
    code: ErrorCode,
    message: &'a str,
    correlation_id: &'a str,
    service: &'static str,
    timestamp: String,
    details: serde_json::Value,
}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        self.status
    }

    fn error_response(&self) -> HttpResponse {
        HttpResponse::build(self.status)
            .content_type("application/json")
            .body(self.body())
    }
}

impl ApiError {
    /// The error JSON, as sent in the body.
    pub fn body(&self) -> Vec<u8> {
        let body = Envelope {
            error: Body {
                code: self.code,
                message: &self.message,
                correlation_id: &self.correlation_id,
                service: SERVICE_NAME,
                timestamp: humantime::format_rfc3339_millis(SystemTime::now()).to_string(),
                details: self
                    .details
                    .as_deref()
                    .cloned()
                    .unwrap_or_else(|| serde_json::json!({})),
            },
        };
        // A struct of strings and JSON values always serialises.
        serde_json::to_vec(&body).unwrap_or_default()
    }

    /// A complete HTTP/1.1 response carrying this error, for connections answered outside
    /// actix-web (refused WebSocket upgrades); the connection closes after it.
    pub fn http1_response(&self) -> Vec<u8> {
        let body = self.body();
        let mut response = format!(
            "HTTP/1.1 {} {}\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\
             x-correlation-id: {}\r\nconnection: close\r\n\r\n",
            self.status.as_u16(),
            self.status.canonical_reason().unwrap_or(""),
            body.len(),
            self.correlation_id,
        )
        .into_bytes();
        response.extend_from_slice(&body);
        response
    }
}

#[cfg(test)]
mod tests {
    use actix_web::body::to_bytes;

    use super::*;

    #[actix_web::test]
    async fn error_body_has_every_field() {
        let cid = CorrelationId::from_header("abc-123");
        let error = ApiError::new(ErrorCode::AuthenticationError, "bad key", &cid);
        assert_eq!(error.status_code(), StatusCode::UNAUTHORIZED);
        let body = to_bytes(error.error_response().into_body()).await.unwrap();
        let json: serde_json::Value = serde_json::from_slice(&body).unwrap();
        let error = &json["error"];
        assert_eq!(error["code"], "AUTHENTICATION_ERROR");
        assert_eq!(error["message"], "bad key");
        assert_eq!(error["correlation_id"], "abc-123");
        assert_eq!(error["service"], SERVICE_NAME);
        assert!(error["timestamp"].as_str().unwrap().ends_with('Z'));
        assert!(error["details"].is_object());
    }

    #[test]
    fn statuses_follow_codes() {
        assert_eq!(
            status_of(ErrorCode::ValidationError),
            StatusCode::BAD_REQUEST
        );
        assert_eq!(
            status_of(ErrorCode::QuotaExceeded),
            StatusCode::TOO_MANY_REQUESTS
        );
        assert_eq!(
            status_of(ErrorCode::ServiceUnavailable),
            StatusCode::SERVICE_UNAVAILABLE
        );
        assert_eq!(status_of(ErrorCode::NotFound), StatusCode::NOT_FOUND);
    }
}
