//! The message format of a user's durable channel (`UserKeys::durable_channel`): what the
//! `ws_publish` Redis Function publishes and the subscriber reads back.
//!
//! A message is `<epoch>:<offset>:<payload>`: the epoch (no `:` in it, see [`Epoch`]), the
//! offset in decimal, then the payload bytes exactly as published (they may hold anything,
//! colons included: only the first two colons separate fields).

use bytes::Bytes;

use crate::position::{Epoch, Position};

/// Splits a durable channel message into its position and its payload. The payload is a
/// slice of `body` (no copy). `None` for anything that is not `<epoch>:<offset>:<payload>`
/// with a valid epoch and a decimal offset that fits a `u64`.
pub fn parse_durable(body: Bytes) -> Option<(Position, Bytes)> {
    let epoch_end = memchr::memchr(b':', &body)?;
    let offset_start = epoch_end + 1;
    let offset_len = memchr::memchr(b':', body.get(offset_start..)?)?;
    let offset_end = offset_start + offset_len;
    let epoch = Epoch::parse(std::str::from_utf8(&body[..epoch_end]).ok()?)?;
    let offset = parse_offset(&body[offset_start..offset_end])?;
    let payload = body.slice(offset_end + 1..);
    Some((Position { epoch, offset }, payload))
}

/// A decimal `u64` with at least one digit and nothing else (no sign, no spaces).
fn parse_offset(digits: &[u8]) -> Option<u64> {
    if digits.is_empty() || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(digits).ok()?.parse().ok()
}

/// The durable channel message for `payload` at `position` (what `ws_publish` publishes).
pub fn durable_message(position: &Position, payload: &[u8]) -> Vec<u8> {
    let head = format!("{}:{}:", position.epoch, position.offset);
    [head.as_bytes(), payload].concat()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_message_splits_at_its_first_two_colons() {
        let body = Bytes::from_static(b"k2f9-a_1:17:{\"a\":\"b:c\"}");
        let (position, payload) = parse_durable(body.clone()).expect("valid");
        assert_eq!(position.to_string(), "k2f9-a_1:17");
        assert_eq!(&payload[..], b"{\"a\":\"b:c\"}");
        assert_eq!(payload.as_ptr(), body[12..].as_ptr(), "a slice, not a copy");
        assert_eq!(durable_message(&position, &payload), body.to_vec());
    }

    #[test]
    fn an_empty_or_binary_payload_reads_back() {
        let (position, payload) = parse_durable(Bytes::from_static(b"e:1:")).expect("valid");
        assert_eq!((position.offset, payload.len()), (1, 0));
        let (_, payload) = parse_durable(Bytes::from_static(b"e:2:\xff\x00:")).expect("valid");
        assert_eq!(&payload[..], b"\xff\x00:");
    }

    #[test]
    fn anything_else_is_refused() {
        for bad in [
            &b""[..],
            b"e",
            b"e:1",
            b":1:x",
            b"e::x",
            b"e:-1:x",
            b"e:1x:x",
            b"e!:1:x",
            b"e:99999999999999999999999:x",
        ] {
            assert_eq!(parse_durable(Bytes::from_static(bad)), None, "{bad:?}");
        }
    }
}
