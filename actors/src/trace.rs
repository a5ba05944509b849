//! What the hot path knows of tracing and latency: a hook that makes the
//! `websocket.forward_message` span (the server installs one only when trace export is on, so it
//! costs nothing otherwise), and cheap byte scans that find a W3C `traceparent` and a publish
//! timestamp `ts` in a JSON payload without parsing it.

use std::sync::LazyLock;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use memchr::memmem::Finder;

/// Searchers built once: building one per message cost more than the search itself.
static TS_KEY: LazyLock<Finder<'static>> = LazyLock::new(|| Finder::new(b"\"ts\""));
static TRACEPARENT_KEY: LazyLock<Finder<'static>> =
    LazyLock::new(|| Finder::new(b"\"traceparent\""));

/// Makes the span of one message's fan-out. Implemented by the server with OpenTelemetry.
pub trait ForwardTracer: Send + Sync {
    /// A span for forwarding a message of `size` bytes to `fanout` sockets, child of
    /// `traceparent` when the payload carried one.
    fn forward_span(&self, traceparent: Option<&str>, size: usize, fanout: usize) -> tracing::Span;
}

/// The value of the first `"traceparent":"…"` in a JSON payload (top level or nested, e.g.
/// under `metadata`), when it has the W3C shape `vv-<32 hex>-<16 hex>-ff`.
pub fn find_traceparent(payload: &[u8]) -> Option<&str> {
    let value = string_value(payload, &TRACEPARENT_KEY)?;
    is_traceparent(value).then_some(value)
}

fn is_traceparent(value: &str) -> bool {
    let parts: Vec<&str> = value.split('-').collect();
    let lengths = [2, 32, 16, 2];
    parts.len() == 4
        && parts
            .iter()
            .zip(lengths)
            .all(|(part, len)| part.len() == len && part.bytes().all(|b| b.is_ascii_hexdigit()))
}

/// When the message was published, from a `"ts"` field: a number of Unix seconds, milliseconds
/// or microseconds (told apart by magnitude), or an RFC 3339 string.
pub fn find_timestamp(payload: &[u8]) -> Option<SystemTime> {
    let key = &*TS_KEY;
    let at = key.find(payload)?;
    let rest = skip_colon(&payload[at + key.needle().len()..])?;
    if let Some(text) = rest.strip_prefix(b"\"") {
        let end = memchr::memchr(b'"', text)?;
        let text = std::str::from_utf8(&text[..end]).ok()?;
        return humantime::parse_rfc3339_weak(text).ok();
    }
    let digits = rest.iter().take_while(|b| b.is_ascii_digit()).count();
    let number: u64 = std::str::from_utf8(&rest[..digits]).ok()?.parse().ok()?;
    Some(UNIX_EPOCH + from_magnitude(number))
}

fn from_magnitude(number: u64) -> Duration {
    if number >= 100_000_000_000_000 {
        Duration::from_micros(number)
    } else if number >= 100_000_000_000 {
        Duration::from_millis(number)
    } else {
        Duration::from_secs(number)
    }
}

fn skip_colon(bytes: &[u8]) -> Option<&[u8]> {
    let bytes = trim_start(bytes);
    let bytes = bytes.strip_prefix(b":")?;
    Some(trim_start(bytes))
}

fn trim_start(bytes: &[u8]) -> &[u8] {
    let skip = bytes.iter().take_while(|b| b.is_ascii_whitespace()).count();
    &bytes[skip..]
}

fn string_value<'a>(payload: &'a [u8], key: &Finder<'_>) -> Option<&'a str> {
    let at = key.find(payload)?;
    let rest = skip_colon(&payload[at + key.needle().len()..])?;
    let text = rest.strip_prefix(b"\"")?;
    let end = memchr::memchr(b'"', text)?;
    std::str::from_utf8(&text[..end]).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    const TP: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    #[test]
    fn traceparent_is_found_at_top_level_and_under_metadata() {
        let top = format!(r#"{{"traceparent":"{TP}","x":1}}"#);
        assert_eq!(find_traceparent(top.as_bytes()), Some(TP));
        let nested = format!(r#"{{"data":{{}},"metadata": {{ "traceparent" : "{TP}" }}}}"#);
        assert_eq!(find_traceparent(nested.as_bytes()), Some(TP));
        assert_eq!(find_traceparent(br#"{"traceparent":"nope"}"#), None);
        assert_eq!(find_traceparent(b"plain text"), None);
    }

    #[test]
    fn timestamps_in_each_unit_and_rfc3339() {
        let secs = UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        assert_eq!(find_timestamp(br#"{"ts":1700000000}"#), Some(secs));
        assert_eq!(find_timestamp(br#"{"ts": 1700000000000}"#), Some(secs));
        assert_eq!(
            find_timestamp(br#"{"ts":1700000000000000,"seq":1}"#),
            Some(secs)
        );
        assert_eq!(
            find_timestamp(br#"{"ts":"2023-11-14T22:13:20Z"}"#),
            Some(secs)
        );
        assert_eq!(find_timestamp(br#"{"seq":1}"#), None);
    }
}
