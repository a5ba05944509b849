//! The platform's event envelope and the notification made from it. Pure functions: no I/O.
//!
//! Envelope (JSON object): `event_id` (UUID), `event_type`, `event_timestamp` (RFC 3339; an
//! offset-less time is UTC), `source_service`, `correlation_id`, `data` (object), optional
//! `metadata` (object; may carry a W3C `traceparent`).

use std::time::{Duration, SystemTime};

use serde_json::{Map, Value};
use uuid::Uuid;

/// A parsed envelope. `raw` keeps the whole document for JSON-pointer user lookups.
#[derive(Clone, Debug)]
pub struct Envelope {
    /// The event's id: the dedupe key.
    pub event_id: Uuid,
    /// What happened, e.g. `huleedu.essay.slot.assigned.v1`.
    pub event_type: String,
    /// When it happened.
    pub timestamp: SystemTime,
    /// The service that emitted it.
    pub source_service: String,
    /// Carried into the notification and every log line.
    pub correlation_id: String,
    /// The W3C trace context, from `metadata.traceparent` (or a top-level `traceparent`).
    pub traceparent: Option<String>,
    /// The whole envelope.
    pub raw: Value,
}

/// What is wrong with a record value; the text goes to the log and the dead letter.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum EnvelopeError {
    /// Not JSON at all.
    #[error("not a JSON document: {0}")]
    NotJson(#[source] serde_json::Error),
    /// JSON, but not an object.
    #[error("not a JSON object")]
    NotAnObject,
    /// A required text field is absent.
    #[error("`{0}` is missing")]
    Missing(&'static str),
    /// A required text field is empty or not a string.
    #[error("`{0}` is not a non-empty string")]
    NotText(&'static str),
    /// `event_id` is not a UUID.
    #[error("`event_id` is not a UUID: {0:?}")]
    EventId(String),
    /// `event_timestamp` is not RFC 3339.
    #[error("`event_timestamp` is not RFC 3339: {0:?}")]
    Timestamp(String),
    /// `data` is absent or not an object.
    #[error("`data` is missing or not an object")]
    Data,
    /// `metadata` is present but not an object.
    #[error("`metadata` is not an object")]
    Metadata,
}

impl Envelope {
    /// Parses a record value; the error says what is wrong, for the log and the dead letter.
    pub fn parse(bytes: &[u8]) -> Result<Self, EnvelopeError> {
        let raw: Value = serde_json::from_slice(bytes).map_err(EnvelopeError::NotJson)?;
        let object = raw.as_object().ok_or(EnvelopeError::NotAnObject)?;
        let text = |name: &'static str| match object.get(name) {
            Some(Value::String(s)) if !s.trim().is_empty() => Ok(s.clone()),
            Some(_) => Err(EnvelopeError::NotText(name)),
            None => Err(EnvelopeError::Missing(name)),
        };
        let event_id = text("event_id")?;
        let event_id = Uuid::parse_str(&event_id).map_err(|_| EnvelopeError::EventId(event_id))?;
        let event_type = text("event_type")?;
        let timestamp = text("event_timestamp")?;
        let timestamp = parse_timestamp(&timestamp).ok_or(EnvelopeError::Timestamp(timestamp))?;
        let source_service = text("source_service")?;
        let correlation_id = text("correlation_id")?;
        if !object.get("data").is_some_and(Value::is_object) {
            return Err(EnvelopeError::Data);
        }
        let metadata = object.get("metadata");
        if metadata.is_some_and(|m| !m.is_object() && !m.is_null()) {
            return Err(EnvelopeError::Metadata);
        }
        let traceparent = metadata
            .and_then(|m| m.get("traceparent"))
            .or_else(|| object.get("traceparent"))
            .and_then(Value::as_str)
            .filter(|tp| is_traceparent(tp))
            .map(str::to_owned);
        Ok(Self {
            event_id,
            event_type,
            timestamp,
            source_service,
            correlation_id,
            traceparent,
            raw,
        })
    }

    /// The `data` object.
    pub fn data(&self) -> &Map<String, Value> {
        static EMPTY: std::sync::OnceLock<Map<String, Value>> = std::sync::OnceLock::new();
        self.raw
            .get("data")
            .and_then(Value::as_object)
            .unwrap_or_else(|| EMPTY.get_or_init(Map::new))
    }

    /// The notification for a user: `{"event","event_id","correlation_id","timestamp","data"}`,
    /// with `data` holding `fields` of the envelope's data (all of it when `fields` is empty;
    /// a field the event lacks is left out).
    pub fn notification(&self, event: &str, fields: &[String]) -> Vec<u8> {
        let source = self.data();
        let data: Map<String, Value> = if fields.is_empty() {
            source.clone()
        } else {
            fields
                .iter()
                .filter_map(|f| source.get(f).map(|v| (f.clone(), v.clone())))
                .collect()
        };
        let mut out = Map::new();
        out.insert("event".into(), event.into());
        out.insert("event_id".into(), self.event_id.to_string().into());
        out.insert("correlation_id".into(), self.correlation_id.clone().into());
        out.insert("timestamp".into(), format_timestamp(self.timestamp).into());
        out.insert("data".into(), Value::Object(data));
        // A `Value` with string keys always serialises: the fallback is never taken.
        serde_json::to_vec(&Value::Object(out)).unwrap_or_default()
    }
}

/// The best-effort correlation id of a record that failed to parse, for its log line.
pub fn correlation_id_of(bytes: &[u8]) -> Option<String> {
    let value: Value = serde_json::from_slice(bytes).ok()?;
    value
        .get("correlation_id")
        .and_then(Value::as_str)
        .map(|s| s.chars().take(128).collect())
}

/// RFC 3339 in UTC with microseconds: `2026-01-02T03:04:05.678901Z`.
pub fn format_timestamp(time: SystemTime) -> String {
    humantime::format_rfc3339_micros(time).to_string()
}

/// An RFC 3339 timestamp with `Z`, a `±hh:mm` offset or (as Python's naive `isoformat()`
/// writes) no offset, read as UTC; `T` or a space between date and time; any fraction.
pub fn parse_timestamp(text: &str) -> Option<SystemTime> {
    let text = text.trim();
    if text.len() < 19 || !text.is_ascii() {
        return None;
    }
    let (local, offset) = split_offset(text)?;
    let utc = humantime::parse_rfc3339_weak(local).ok()?;
    if offset >= 0 {
        utc.checked_sub(Duration::from_secs(offset.unsigned_abs()))
    } else {
        utc.checked_add(Duration::from_secs(offset.unsigned_abs()))
    }
}

/// Splits `2026-01-02T03:04:05.6+02:00` into the local part and the offset in seconds.
fn split_offset(text: &str) -> Option<(&str, i64)> {
    if let Some(local) = text.strip_suffix(['Z', 'z']) {
        return Some((local, 0));
    }
    let time = &text[19..];
    let Some(at) = time.find(['+', '-']) else {
        return Some((text, 0));
    };
    let (local, offset) = text.split_at(19 + at);
    let (sign, hhmm) = offset.split_at(1);
    let (hh, mm) = hhmm
        .split_once(':')
        .unwrap_or((hhmm.get(..2)?, hhmm.get(2..)?));
    if hh.len() != 2 || mm.len() != 2 {
        return None;
    }
    let (hh, mm): (i64, i64) = (hh.parse().ok()?, mm.parse().ok()?);
    if hh > 23 || mm > 59 {
        return None;
    }
    let seconds = hh * 3600 + mm * 60;
    Some((local, if sign == "-" { -seconds } else { seconds }))
}

/// `vv-<32 hex>-<16 hex>-ff`.
fn is_traceparent(value: &str) -> bool {
    let parts: Vec<&str> = value.split('-').collect();
    parts.len() == 4
        && parts
            .iter()
            .zip([2, 32, 16, 2])
            .all(|(part, len)| part.len() == len && part.bytes().all(|b| b.is_ascii_hexdigit()))
}

#[cfg(test)]
mod tests {
    use std::time::UNIX_EPOCH;

    use serde_json::json;

    use super::*;

    const TP: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    fn slot_assigned() -> Value {
        json!({
            "event_id": "0b6f6a1c-3d7e-4a53-9a63-2f1c1d5e8a01",
            "event_type": "huleedu.essay.slot.assigned.v1",
            "event_timestamp": "2026-03-01T10:00:00.250000+00:00",
            "source_service": "essay_lifecycle_service",
            "correlation_id": "6f1c0e2a-64a1-4d8e-a3f0-2b7d2b9c4c11",
            "data": {
                "batch_id": "b-1", "essay_id": "e-1", "file_upload_id": "f-1",
                "text_storage_id": "t-1", "internal": "not forwarded"
            },
            "metadata": {"traceparent": TP, "user_id": "u-1"}
        })
    }

    #[test]
    fn the_essay_slot_assigned_notification_has_the_contract_shape() {
        let envelope = Envelope::parse(slot_assigned().to_string().as_bytes()).unwrap();
        let fields = ["batch_id", "essay_id", "file_upload_id", "text_storage_id"]
            .map(String::from)
            .to_vec();
        let text =
            String::from_utf8(envelope.notification("essay.slot.assigned", &fields)).unwrap();
        assert_eq!(
            text,
            r#"{"event":"essay.slot.assigned","event_id":"0b6f6a1c-3d7e-4a53-9a63-2f1c1d5e8a01","correlation_id":"6f1c0e2a-64a1-4d8e-a3f0-2b7d2b9c4c11","timestamp":"2026-03-01T10:00:00.250000Z","data":{"batch_id":"b-1","essay_id":"e-1","file_upload_id":"f-1","text_storage_id":"t-1"}}"#
        );
        assert_eq!(envelope.traceparent.as_deref(), Some(TP));
        assert_eq!(envelope.source_service, "essay_lifecycle_service");
        let all: Value = serde_json::from_slice(&envelope.notification("x", &[])).unwrap();
        assert_eq!(
            all["data"]["internal"], "not forwarded",
            "empty fields: all of data"
        );
    }

    #[test]
    fn malformed_envelopes_say_what_is_wrong() {
        type Mutation = fn(&mut Value);
        let cases: [(&str, Mutation); 7] = [
            ("not a JSON object", |v| *v = json!([1])),
            ("`event_id` is missing", |v| {
                v.as_object_mut().unwrap().remove("event_id");
            }),
            ("not a UUID", |v| v["event_id"] = json!("nope")),
            ("`event_type` is not a non-empty string", |v| {
                v["event_type"] = json!(" ")
            }),
            ("`event_timestamp` is not RFC 3339", |v| {
                v["event_timestamp"] = json!("yesterday")
            }),
            ("`data` is missing or not an object", |v| {
                v["data"] = json!("x")
            }),
            ("`metadata` is not an object", |v| v["metadata"] = json!(3)),
        ];
        for (expected, mutate) in cases {
            let mut value = slot_assigned();
            mutate(&mut value);
            let error = Envelope::parse(value.to_string().as_bytes())
                .unwrap_err()
                .to_string();
            assert!(error.contains(expected), "{expected:?} not in {error:?}");
        }
        assert!(Envelope::parse(b"{not json")
            .unwrap_err()
            .to_string()
            .starts_with("not a JSON document"));
        assert_eq!(
            correlation_id_of(br#"{"correlation_id":"c-9","data":1}"#).as_deref(),
            Some("c-9")
        );
    }

    #[test]
    fn timestamps_with_offsets_and_without() {
        let t = UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        assert_eq!(parse_timestamp("2023-11-14T22:13:20Z"), Some(t));
        assert_eq!(parse_timestamp("2023-11-14T22:13:20+00:00"), Some(t));
        assert_eq!(parse_timestamp("2023-11-15T00:13:20+02:00"), Some(t));
        assert_eq!(parse_timestamp("2023-11-14T20:13:20-0200"), Some(t));
        assert_eq!(parse_timestamp("2023-11-14 22:13:20"), Some(t));
        assert_eq!(
            parse_timestamp("2023-11-14T22:13:20.5Z"),
            Some(t + Duration::from_millis(500))
        );
        assert_eq!(parse_timestamp("2023-11-14T22:13:20+25:00"), None);
        assert_eq!(parse_timestamp("2023-11-14"), None);
        assert_eq!(format_timestamp(t), "2023-11-14T22:13:20.000000Z");
    }
}
