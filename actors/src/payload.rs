//! A published message as it travels from the broker to every socket of a user: validated
//! once, shared by reference count, never copied per socket.

use bytes::Bytes;
use bytestring::ByteString;

use crate::position::Position;

/// One message for a user's sockets. Cloning clones a handle, not the bytes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Payload {
    /// Valid UTF-8: sent as a text frame, bytes unchanged.
    Text(ByteString),
    /// Anything else: sent as a binary frame, bytes unchanged.
    Binary(Bytes),
}

impl Payload {
    /// Classifies the bytes once: UTF-8 becomes a text frame, the rest a binary frame. The
    /// bytes are checked before they are wrapped, so that they are not cloned (a clone of
    /// bytes taken over from a `Vec` allocates).
    pub fn from_bytes(bytes: Bytes) -> Self {
        if std::str::from_utf8(&bytes).is_err() {
            return Payload::Binary(bytes);
        }
        match ByteString::try_from(bytes) {
            Ok(text) => Payload::Text(text),
            Err(_) => Payload::Binary(Bytes::new()), // checked above: cannot happen
        }
    }

    /// The payload's size in bytes.
    pub fn len(&self) -> usize {
        match self {
            Payload::Text(text) => text.len(),
            Payload::Binary(bytes) => bytes.len(),
        }
    }

    /// Whether the payload has no bytes.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// A message on its way to a user's sockets: the payload and, for a durable publish, its
/// position in the user's history. Cloning clones handles.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Published {
    /// The bytes as published.
    pub payload: Payload,
    /// Where a durable message sits in the user's history; `None` for a plain publish.
    pub position: Option<Position>,
}

impl Published {
    /// A durable message at `position`.
    pub fn durable(payload: Payload, position: Position) -> Self {
        Self {
            payload,
            position: Some(position),
        }
    }
}

impl From<Payload> for Published {
    fn from(payload: Payload) -> Self {
        Self {
            payload,
            position: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn utf8_is_text_and_the_rest_binary() {
        let text = Payload::from_bytes(Bytes::from_static("héllo 👋".as_bytes()));
        assert_eq!(text, Payload::Text(ByteString::from_static("héllo 👋")));
        let raw = Payload::from_bytes(Bytes::from_static(&[0xff, 0x00, 0xfe]));
        assert_eq!(
            raw,
            Payload::Binary(Bytes::from_static(&[0xff, 0x00, 0xfe]))
        );
        assert_eq!(raw.len(), 3);
    }
}
