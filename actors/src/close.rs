//! The client-facing close contract: which close code means what, which error code goes with
//! it, and the JSON close reason that always parses and always fits in a close frame.

use std::fmt;

use serde::Serialize;

/// The most bytes a close reason may have (a control frame carries 125, two are the code).
pub const MAX_REASON_BYTES: usize = 123;

/// The longest correlation id kept in a close reason; longer ones are shortened.
const MAX_CORRELATION_ID_BYTES: usize = 40;

/// The error codes shared by close reasons and HTTP error bodies.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
#[non_exhaustive]
pub enum ErrorCode {
    AuthenticationError,
    ValidationError,
    ConnectionError,
    ExternalServiceError,
    ServiceUnavailable,
    QuotaExceeded,
    Timeout,
    RateLimit,
    NotFound,
    InternalError,
}

impl ErrorCode {
    /// The code as it appears on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::AuthenticationError => "AUTHENTICATION_ERROR",
            ErrorCode::ValidationError => "VALIDATION_ERROR",
            ErrorCode::ConnectionError => "CONNECTION_ERROR",
            ErrorCode::ExternalServiceError => "EXTERNAL_SERVICE_ERROR",
            ErrorCode::ServiceUnavailable => "SERVICE_UNAVAILABLE",
            ErrorCode::QuotaExceeded => "QUOTA_EXCEEDED",
            ErrorCode::Timeout => "TIMEOUT",
            ErrorCode::RateLimit => "RATE_LIMIT",
            ErrorCode::NotFound => "NOT_FOUND",
            ErrorCode::InternalError => "INTERNAL_ERROR",
        }
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why the server closes a socket; each maps to one WebSocket close code.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum CloseCode {
    /// 1000: normal close.
    Normal,
    /// 1002: the client broke the WebSocket protocol.
    ProtocolError,
    /// 1003: the client sent a binary frame.
    Unsupported,
    /// 1007: a text message or close reason from the client that is not UTF-8.
    InvalidPayload,
    /// 1008: authentication or origin refused; do not retry with the same token.
    PolicyViolation,
    /// 1009: a client frame over the size limit.
    TooBig,
    /// 1011: internal failure.
    Internal,
    /// 1011: a service the session needs (the history in Redis) is unavailable.
    ExternalService,
    /// 1012: the server is draining; reconnect with jitter.
    Restarting,
    /// 1013: the node is at its global connection cap.
    TryAgainLater,
    /// 4000: the user's connection quota is used up.
    UserQuota,
    /// 4001: the token expired during the session.
    TokenExpired,
    /// 4003: disconnected by the operator API (logout, account locked); do not reconnect with
    /// the same token.
    Disconnected,
    /// 4008: idle timeout or heartbeat lost.
    Timeout,
    /// 4009: the client does not read fast enough; its send queue is full.
    SlowConsumer,
}

impl CloseCode {
    /// The numeric WebSocket close code.
    pub fn code(self) -> u16 {
        match self {
            CloseCode::Normal => 1000,
            CloseCode::ProtocolError => 1002,
            CloseCode::Unsupported => 1003,
            CloseCode::InvalidPayload => 1007,
            CloseCode::PolicyViolation => 1008,
            CloseCode::TooBig => 1009,
            CloseCode::Internal | CloseCode::ExternalService => 1011,
            CloseCode::Restarting => 1012,
            CloseCode::TryAgainLater => 1013,
            CloseCode::UserQuota => 4000,
            CloseCode::TokenExpired => 4001,
            CloseCode::Disconnected => 4003,
            CloseCode::Timeout => 4008,
            CloseCode::SlowConsumer => 4009,
        }
    }

    /// The error code that goes with this close code in the reason.
    pub fn error_code(self) -> Option<ErrorCode> {
        match self {
            CloseCode::Normal => None,
            CloseCode::ProtocolError
            | CloseCode::Unsupported
            | CloseCode::InvalidPayload
            | CloseCode::TooBig => Some(ErrorCode::ValidationError),
            CloseCode::PolicyViolation | CloseCode::TokenExpired | CloseCode::Disconnected => {
                Some(ErrorCode::AuthenticationError)
            }
            CloseCode::Internal => Some(ErrorCode::ConnectionError),
            CloseCode::ExternalService => Some(ErrorCode::ExternalServiceError),
            CloseCode::Restarting => Some(ErrorCode::ServiceUnavailable),
            CloseCode::TryAgainLater | CloseCode::UserQuota => Some(ErrorCode::QuotaExceeded),
            CloseCode::Timeout => Some(ErrorCode::Timeout),
            CloseCode::SlowConsumer => Some(ErrorCode::RateLimit),
        }
    }

    /// A short label for metrics.
    pub fn label(self) -> &'static str {
        match self {
            CloseCode::Normal => "1000",
            CloseCode::ProtocolError => "1002",
            CloseCode::Unsupported => "1003",
            CloseCode::InvalidPayload => "1007",
            CloseCode::PolicyViolation => "1008",
            CloseCode::TooBig => "1009",
            CloseCode::Internal | CloseCode::ExternalService => "1011",
            CloseCode::Restarting => "1012",
            CloseCode::TryAgainLater => "1013",
            CloseCode::UserQuota => "4000",
            CloseCode::TokenExpired => "4001",
            CloseCode::Disconnected => "4003",
            CloseCode::Timeout => "4008",
            CloseCode::SlowConsumer => "4009",
        }
    }
}

/// A close code with its JSON reason, ready to send.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CloseReason {
    /// Which close this is.
    pub code: CloseCode,
    /// `{"error_code":…,"message":…,"correlation_id":…}`, at most [`MAX_REASON_BYTES`]; empty
    /// for a normal close.
    pub reason: String,
}

impl CloseReason {
    /// Builds the close with a reason that is valid JSON and fits a close frame, shortening the
    /// message (and if need be the correlation id) on character boundaries.
    pub fn new(code: CloseCode, message: &str, correlation_id: &str) -> Self {
        let reason = match code.error_code() {
            Some(error_code) => reason_json(error_code, message, correlation_id),
            None => String::new(),
        };
        Self { code, reason }
    }

    /// A normal close (1000) with no reason.
    pub fn normal() -> Self {
        Self {
            code: CloseCode::Normal,
            reason: String::new(),
        }
    }
}

#[derive(Serialize)]
struct ReasonBody<'a> {
    error_code: &'static str,
    message: &'a str,
    correlation_id: &'a str,
}

/// Serialises the reason, shortening the message so that the whole fits in 123 bytes.
pub fn reason_json(error_code: ErrorCode, message: &str, correlation_id: &str) -> String {
    let correlation_id = take_escaped(correlation_id, MAX_CORRELATION_ID_BYTES);
    let skeleton = encode(error_code, "", correlation_id);
    let budget = MAX_REASON_BYTES.saturating_sub(skeleton.len());
    let message = take_escaped(message, budget);
    encode(error_code, message, correlation_id)
}

fn encode(error_code: ErrorCode, message: &str, correlation_id: &str) -> String {
    let body = ReasonBody {
        error_code: error_code.as_str(),
        message,
        correlation_id,
    };
    // Serialising a struct of strings cannot fail; fall back to a fixed valid reason anyway.
    serde_json::to_string(&body).unwrap_or_else(|_| format!(r#"{{"error_code":"{error_code}"}}"#))
}

/// The longest prefix of `text`, on a char boundary, whose JSON-escaped form fits `budget` bytes.
fn take_escaped(text: &str, budget: usize) -> &str {
    let mut used = 0;
    for (index, ch) in text.char_indices() {
        used += escaped_len(ch);
        if used > budget {
            return &text[..index];
        }
    }
    text
}

/// How many bytes serde_json writes for one char inside a string.
fn escaped_len(ch: char) -> usize {
    match ch {
        '"' | '\\' | '\u{8}' | '\u{c}' | '\n' | '\r' | '\t' => 2,
        c if (c as u32) < 0x20 => 6,
        c => c.len_utf8(),
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn reason_carries_code_message_and_correlation_id() {
        let close = CloseReason::new(CloseCode::UserQuota, "too many", "abc");
        assert_eq!(close.code.code(), 4000);
        let json: serde_json::Value = serde_json::from_str(&close.reason).unwrap();
        assert_eq!(json["error_code"], "QUOTA_EXCEEDED");
        assert_eq!(json["message"], "too many");
        assert_eq!(json["correlation_id"], "abc");
    }

    #[test]
    fn long_message_is_shortened_not_the_json() {
        let message = "é".repeat(200);
        let reason = reason_json(ErrorCode::ExternalServiceError, &message, "c");
        assert!(reason.len() <= MAX_REASON_BYTES);
        let json: serde_json::Value = serde_json::from_str(&reason).unwrap();
        assert!(json["message"].as_str().unwrap().starts_with("éé"));
    }

    #[test]
    fn normal_close_has_no_reason() {
        assert_eq!(CloseReason::normal().reason, "");
        assert_eq!(CloseReason::new(CloseCode::Normal, "bye", "c").reason, "");
    }

    #[test]
    fn every_close_code_but_normal_has_an_error_code() {
        let codes = [
            CloseCode::ProtocolError,
            CloseCode::Unsupported,
            CloseCode::InvalidPayload,
            CloseCode::PolicyViolation,
            CloseCode::TooBig,
            CloseCode::Internal,
            CloseCode::Restarting,
            CloseCode::TryAgainLater,
            CloseCode::UserQuota,
            CloseCode::TokenExpired,
            CloseCode::Disconnected,
            CloseCode::Timeout,
            CloseCode::SlowConsumer,
        ];
        for code in codes {
            assert!(code.error_code().is_some(), "{code:?}");
            assert_eq!(code.label(), code.code().to_string());
        }
    }

    proptest! {
        #[test]
        fn any_reason_is_json_within_the_limit(message in any::<String>(), correlation in any::<String>()) {
            for code in [ErrorCode::AuthenticationError, ErrorCode::ExternalServiceError, ErrorCode::Timeout] {
                let reason = reason_json(code, &message, &correlation);
                prop_assert!(reason.len() <= MAX_REASON_BYTES, "{} bytes", reason.len());
                let json: serde_json::Value = serde_json::from_str(&reason).unwrap();
                prop_assert_eq!(json["error_code"].as_str(), Some(code.as_str()));
                prop_assert!(message.starts_with(json["message"].as_str().unwrap()));
            }
        }
    }
}
