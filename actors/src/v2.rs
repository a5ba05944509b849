//! The frames of client protocol v2 (DESIGN.md, "Client protocol v2"): every frame of a v2
//! socket is one JSON object. `welcome` first, then `message` frames (with `epoch`/`offset`
//! when durable) and `reset` when the history could not fill a gap. A payload that is a JSON
//! text is embedded as is under `data`; anything else becomes a JSON string.
//!
//! Encoded without a JSON tree: an epoch is `[A-Za-z0-9_-]`, needing no escape, and the payload
//! is checked once for JSON validity (only a v2 socket needs that parse).

use std::fmt::Write as _;

use bytestring::ByteString;
use serde::de::IgnoredAny;

use crate::history::Position;
use crate::payload::Payload;

/// Whether a socket speaks the raw protocol or v2, and where a v2 socket resumes from.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum Protocol {
    /// Every message as its raw payload bytes (the old service's contract).
    #[default]
    Legacy,
    /// JSON frames with positions; `since` is the position of the last message the client
    /// processed.
    V2 {
        /// Resume after this position.
        since: Option<Position>,
    },
}

impl Protocol {
    /// `"legacy"` or `"v2"`, for metrics, leases and the console.
    pub fn label(&self) -> &'static str {
        match self {
            Protocol::Legacy => "legacy",
            Protocol::V2 { .. } => "v2",
        }
    }
}

/// The first frame: the user's position, and whether the resume from `since` is complete.
pub fn welcome(position: &Position, recovered: Option<bool>) -> ByteString {
    let mut frame = format!(
        r#"{{"type":"welcome","epoch":"{}","offset":{}"#,
        position.epoch, position.offset
    );
    if let Some(recovered) = recovered {
        let _ = write!(frame, r#","recovered":{recovered}"#);
    }
    frame.push('}');
    ByteString::from(frame)
}

/// The welcome of a v2 socket when history is off: no position exists, and a resume is never
/// recovered.
pub fn welcome_unpositioned(recovered: Option<bool>) -> ByteString {
    match recovered {
        Some(recovered) => {
            ByteString::from(format!(r#"{{"type":"welcome","recovered":{recovered}}}"#))
        }
        None => ByteString::from_static(r#"{"type":"welcome"}"#),
    }
}

/// The user's history changed or could not fill a gap: refetch, messages continue after
/// `position`.
pub fn reset(position: &Position) -> ByteString {
    ByteString::from(format!(
        r#"{{"type":"reset","epoch":"{}","offset":{}}}"#,
        position.epoch, position.offset
    ))
}

/// A message frame: durable (with its position) or plain.
pub fn message(position: Option<&Position>, payload: &[u8]) -> ByteString {
    let mut frame = String::with_capacity(payload.len() + 64);
    frame.push_str(r#"{"type":"message","#);
    if let Some(position) = position {
        let _ = write!(
            frame,
            r#""epoch":"{}","offset":{},"#,
            position.epoch, position.offset
        );
    }
    frame.push_str(r#""data":"#);
    push_data(&mut frame, payload);
    frame.push('}');
    ByteString::from(frame)
}

/// A message frame for a payload as the broker delivered it.
pub fn message_of(position: Option<&Position>, payload: &Payload) -> ByteString {
    match payload {
        Payload::Text(text) => message(position, text.as_bytes()),
        Payload::Binary(bytes) => message(position, bytes),
    }
}

/// The payload itself when it is a JSON text, else the payload as a JSON string (bytes that
/// are not UTF-8 are replaced by U+FFFD).
fn push_data(frame: &mut String, payload: &[u8]) {
    match std::str::from_utf8(payload) {
        Ok(text) if serde_json::from_str::<IgnoredAny>(text).is_ok() => frame.push_str(text.trim()),
        Ok(text) => push_json_string(frame, text),
        Err(_) => push_json_string(frame, &String::from_utf8_lossy(payload)),
    }
}

fn push_json_string(frame: &mut String, text: &str) {
    match serde_json::to_string(text) {
        Ok(quoted) => frame.push_str(&quoted),
        Err(_) => frame.push_str("null"), // a &str always serialises
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::history::Epoch;

    fn at(offset: u64) -> Position {
        Position {
            epoch: Epoch::parse("e1").expect("valid"),
            offset,
        }
    }

    fn json(frame: &ByteString) -> serde_json::Value {
        serde_json::from_str(frame).expect("every frame is JSON")
    }

    #[test]
    fn frames_are_the_contract_json() {
        assert_eq!(
            json(&welcome(&at(7), None)),
            serde_json::json!({"type":"welcome","epoch":"e1","offset":7})
        );
        assert_eq!(
            json(&welcome(&at(7), Some(false)))["recovered"],
            serde_json::json!(false)
        );
        assert_eq!(
            json(&reset(&at(9))),
            serde_json::json!({"type":"reset","epoch":"e1","offset":9})
        );
        assert_eq!(
            json(&message(Some(&at(3)), br#" {"a": [1, "x"]} "#)),
            serde_json::json!({"type":"message","epoch":"e1","offset":3,"data":{"a":[1,"x"]}})
        );
        assert_eq!(
            json(&message(None, b"hello \"you\"\n")),
            serde_json::json!({"type":"message","data":"hello \"you\"\n"})
        );
        assert_eq!(
            json(&message(None, &[0xff, b'a'])),
            serde_json::json!({"type":"message","data":"\u{fffd}a"})
        );
        assert_eq!(
            json(&message(None, b"")),
            serde_json::json!({"type":"message","data":""})
        );
    }
}
