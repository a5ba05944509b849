//! Client protocol v2 frames as a loadgen socket reads them (README, "Protocol v2"): every frame
//! is one JSON object, `welcome` first, then `message` frames (`epoch` and `offset` when the
//! message is durable, `data` the payload itself when it is JSON, as loadgen's payloads are)
//! and `reset`.
//!
//! Message frames are read without a JSON tree: the server writes their fields in one order
//! (`type`, `epoch`, `offset`, `data`), so the position and the start of `data` are found by
//! prefix, and the payload's `seq` and `ts` by [`crate::payload::parse`] on the rest. Anything
//! else (the rare welcome and reset, or a message in another field order) goes through
//! `serde_json`.

use std::borrow::Cow;

use serde::Deserialize;

/// A durable message's position, or the user's position in a welcome or reset.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Position<'a> {
    /// The history's incarnation (`[A-Za-z0-9_-]`, no escapes).
    pub epoch: Cow<'a, str>,
    /// Dense offset within the epoch.
    pub offset: u64,
}

/// One v2 frame.
#[derive(Debug, PartialEq, Eq)]
pub enum Frame<'a> {
    /// The first frame: the user's position, and whether a `since` was recovered.
    Welcome {
        /// The user's position when the socket went live (absent when history is off).
        position: Option<Position<'a>>,
        /// `Some` when the socket connected with `since`.
        recovered: Option<bool>,
    },
    /// The history could not fill a gap: messages continue after `position`.
    Reset {
        /// Where messages continue from.
        position: Position<'a>,
    },
    /// A message: durable (with its position) or plain.
    Message {
        /// The position of a durable message.
        position: Option<Position<'a>>,
        /// The `data` member: the payload when it is JSON, else a JSON string.
        data: Cow<'a, [u8]>,
    },
}

/// Parses one frame; `None` when it is not a v2 frame.
pub fn parse(bytes: &[u8]) -> Option<Frame<'_>> {
    parse_message_fast(bytes).or_else(|| parse_slow(bytes))
}

/// A message frame in the server's field order.
fn parse_message_fast(bytes: &[u8]) -> Option<Frame<'_>> {
    let rest = bytes.strip_prefix(br#"{"type":"message","#)?;
    let (position, rest) = match rest.strip_prefix(br#""epoch":""#) {
        Some(rest) => {
            let end = rest.iter().position(|&b| b == b'"' || b == b'\\')?;
            let epoch = std::str::from_utf8(&rest[..end]).ok()?;
            let rest = rest[end..].strip_prefix(br#"","offset":"#)?;
            let digits = rest.iter().take_while(|b| b.is_ascii_digit()).count();
            let offset = std::str::from_utf8(&rest[..digits]).ok()?.parse().ok()?;
            let rest = rest[digits..].strip_prefix(b",")?;
            let position = Position {
                epoch: Cow::Borrowed(epoch),
                offset,
            };
            (Some(position), rest)
        }
        None => (None, rest),
    };
    let data = rest.strip_prefix(br#""data":"#)?.strip_suffix(b"}")?;
    Some(Frame::Message {
        position,
        data: Cow::Borrowed(data),
    })
}

/// The members a v2 frame may have.
#[derive(Deserialize)]
struct AnyFrame {
    #[serde(rename = "type")]
    kind: String,
    epoch: Option<String>,
    offset: Option<u64>,
    recovered: Option<bool>,
    data: Option<serde_json::Value>,
}

/// Any frame, through `serde_json`.
fn parse_slow(bytes: &[u8]) -> Option<Frame<'static>> {
    let frame: AnyFrame = serde_json::from_slice(bytes).ok()?;
    let position = match (frame.epoch, frame.offset) {
        (Some(epoch), Some(offset)) => Some(Position {
            epoch: Cow::Owned(epoch),
            offset,
        }),
        _ => None,
    };
    match frame.kind.as_str() {
        "welcome" => Some(Frame::Welcome {
            position,
            recovered: frame.recovered,
        }),
        "reset" => Some(Frame::Reset {
            position: position?,
        }),
        "message" => Some(Frame::Message {
            position,
            data: Cow::Owned(serde_json::to_vec(&frame.data?).ok()?),
        }),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(epoch: &str, offset: u64) -> Option<Position<'_>> {
        Some(Position {
            epoch: Cow::Borrowed(epoch),
            offset,
        })
    }

    #[test]
    fn reads_the_servers_frames() {
        let payload = br#"{"seq":3,"ts":17,"pad":"xx"}"#;
        let mut durable =
            br#"{"type":"message","epoch":"18c2f0a1b2c3d","offset":42,"data":"#.to_vec();
        durable.extend_from_slice(payload);
        durable.push(b'}');
        assert_eq!(
            parse(&durable),
            Some(Frame::Message {
                position: at("18c2f0a1b2c3d", 42),
                data: Cow::Borrowed(&payload[..]),
            })
        );
        let plain = br#"{"type":"message","data":"not json"}"#;
        assert_eq!(
            parse(plain),
            Some(Frame::Message {
                position: None,
                data: Cow::Borrowed(&br#""not json""#[..]),
            })
        );
        assert_eq!(
            parse(br#"{"type":"welcome","epoch":"e1","offset":7,"recovered":true}"#),
            Some(Frame::Welcome {
                position: at("e1", 7),
                recovered: Some(true),
            })
        );
        assert_eq!(
            parse(br#"{"type":"welcome"}"#),
            Some(Frame::Welcome {
                position: None,
                recovered: None,
            })
        );
        assert_eq!(
            parse(br#"{"type":"reset","epoch":"e2","offset":9}"#),
            Some(Frame::Reset {
                position: Position {
                    epoch: Cow::Borrowed("e2"),
                    offset: 9
                }
            })
        );
    }

    #[test]
    fn reads_other_field_orders_and_refuses_the_rest() {
        let frame = br#"{"data":{"seq":1,"ts":2},"offset":5,"epoch":"e","type":"message"}"#;
        let Some(Frame::Message { position, data }) = parse(frame) else {
            panic!("a message");
        };
        assert_eq!(position, at("e", 5));
        assert_eq!(crate::payload::parse(&data), Some((1, 2)));
        assert_eq!(parse(br#"{"seq":1,"ts":2}"#), None);
        assert_eq!(parse(b"plain text"), None);
        assert_eq!(parse(br#"{"type":"reset"}"#), None);
    }
}
