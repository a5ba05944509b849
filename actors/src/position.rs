//! Where a durable message sits in its user's history: an [`Epoch`] (which incarnation of the
//! history) and a dense offset. Shared by the history, the broker's durable channel and the
//! messages routed to sockets.

use std::fmt;
use std::sync::Arc;

/// Names one incarnation of a user's history: `[A-Za-z0-9_-]{1,32}`. Cheap to clone.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct Epoch(Arc<str>);

impl Epoch {
    /// Most bytes in an epoch.
    pub const MAX_LEN: usize = 32;

    /// Parses an epoch, refusing anything outside `[A-Za-z0-9_-]{1,32}`.
    pub fn parse(text: &str) -> Option<Self> {
        let valid = !text.is_empty()
            && text.len() <= Self::MAX_LEN
            && text
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
        valid.then(|| Self(Arc::from(text)))
    }

    /// The epoch as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Epoch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Epoch({})", &*self.0)
    }
}

impl fmt::Display for Epoch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Where a durable message sits in its user's history.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Position {
    /// The history's incarnation.
    pub epoch: Epoch,
    /// 1 for the first message of the epoch, then dense.
    pub offset: u64,
}

impl Position {
    /// Parses `<epoch>:<offset>` (the `since` query value).
    pub fn parse(text: &str) -> Option<Self> {
        let (epoch, offset) = text.rsplit_once(':')?;
        if offset.is_empty() || !offset.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        Some(Self {
            epoch: Epoch::parse(epoch)?,
            offset: offset.parse().ok()?,
        })
    }
}

impl fmt::Display for Position {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.epoch, self.offset)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positions_parse_from_since() {
        let position = Position::parse("k2f9-a_1:17").expect("valid");
        assert_eq!(position.epoch.as_str(), "k2f9-a_1");
        assert_eq!(position.offset, 17);
        assert_eq!(position.to_string(), "k2f9-a_1:17");
        for bad in [
            "",
            ":1",
            "e:",
            "e:-1",
            "e:1x",
            "e!:1",
            &format!("{}:1", "a".repeat(33)),
        ] {
            assert_eq!(Position::parse(bad), None, "{bad:?}");
        }
    }
}
