//! Incremental UTF-8 validation of a text message that arrives in pieces (read chunks and
//! fragments), without keeping the message: only the bytes of one unfinished character are
//! carried from one piece to the next, and a byte that can start no valid sequence is refused
//! as soon as it arrives (RFC 6455 §8.1: fail the connection as soon as the data is invalid).

/// The UTF-8 state of one text message in progress.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Utf8Stream {
    /// The start of a character cut off at the end of the last piece.
    pending: [u8; 4],
    pending_len: usize,
}

/// The text is not UTF-8.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("invalid UTF-8")]
pub struct InvalidUtf8;

impl Utf8Stream {
    /// Checks the next piece of the message.
    pub fn feed(&mut self, mut bytes: &[u8]) -> Result<(), InvalidUtf8> {
        if self.pending_len > 0 {
            bytes = self.complete_pending(bytes)?;
            if self.pending_len > 0 {
                return Ok(());
            }
        }
        match std::str::from_utf8(bytes) {
            Ok(_) => Ok(()),
            Err(error) if error.error_len().is_some() => Err(InvalidUtf8),
            Err(error) => {
                let tail = &bytes[error.valid_up_to()..];
                self.pending[..tail.len()].copy_from_slice(tail);
                self.pending_len = tail.len();
                Ok(())
            }
        }
    }

    /// Whether the message so far ends on a character boundary.
    pub fn is_complete(&self) -> bool {
        self.pending_len == 0
    }

    /// Adds bytes to the unfinished character; returns what is left of `bytes` after it.
    fn complete_pending<'a>(&mut self, bytes: &'a [u8]) -> Result<&'a [u8], InvalidUtf8> {
        let width = sequence_width(self.pending[0]);
        let take = (width - self.pending_len).min(bytes.len());
        self.pending[self.pending_len..self.pending_len + take].copy_from_slice(&bytes[..take]);
        self.pending_len += take;
        match std::str::from_utf8(&self.pending[..self.pending_len]) {
            Ok(_) => self.pending_len = 0,
            Err(error) if error.error_len().is_some() => return Err(InvalidUtf8),
            Err(_) => {} // still a valid start: wait for more
        }
        Ok(&bytes[take..])
    }
}

/// How many bytes a sequence starting with `lead` has (the lead byte of a carried sequence is
/// always a valid one: `from_utf8` would have refused it otherwise).
fn sequence_width(lead: u8) -> usize {
    match lead {
        0xF0..=0xF7 => 4,
        0xE0..=0xEF => 3,
        _ => 2,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn check_in_pieces(bytes: &[u8], cuts: &[usize]) -> bool {
        let mut stream = Utf8Stream::default();
        let mut at = 0;
        for &cut in cuts {
            let cut = cut.clamp(at, bytes.len());
            if stream.feed(&bytes[at..cut]).is_err() {
                return false;
            }
            at = cut;
        }
        stream.feed(&bytes[at..]).is_ok() && stream.is_complete()
    }

    #[test]
    fn a_character_split_across_pieces_is_valid() {
        let text = "κόσμε €𝄞".as_bytes();
        for cut in 0..text.len() {
            assert!(check_in_pieces(text, &[cut]), "cut at {cut}");
        }
        let mut stream = Utf8Stream::default();
        for byte in "𝄞".as_bytes() {
            stream.feed(&[*byte]).expect("valid prefix");
        }
        assert!(stream.is_complete());
    }

    #[test]
    fn invalid_sequences_fail_as_soon_as_they_arrive() {
        let mut stream = Utf8Stream::default();
        stream.feed(b"ok \xED").expect("a valid lead byte");
        assert_eq!(stream.feed(b"\xA0"), Err(InvalidUtf8), "surrogate");
        assert_eq!(Utf8Stream::default().feed(b"\xC0\xAF"), Err(InvalidUtf8));
        assert_eq!(Utf8Stream::default().feed(b"\xF4\x90"), Err(InvalidUtf8));
        assert_eq!(Utf8Stream::default().feed(b"\xFF"), Err(InvalidUtf8));
    }

    #[test]
    fn a_message_ending_mid_character_is_incomplete() {
        let mut stream = Utf8Stream::default();
        stream.feed(b"abc\xE2\x82").expect("valid prefix");
        assert!(!stream.is_complete());
    }

    proptest! {
        #[test]
        fn pieces_agree_with_whole_validation(
            bytes in proptest::collection::vec(any::<u8>(), 0..64),
            cuts in proptest::collection::vec(0usize..64, 0..6),
        ) {
            let mut cuts = cuts;
            cuts.sort_unstable();
            prop_assert_eq!(check_in_pieces(&bytes, &cuts), std::str::from_utf8(&bytes).is_ok());
        }

        #[test]
        fn valid_text_in_any_pieces_is_valid(text in "\\PC{0,40}", cuts in proptest::collection::vec(0usize..160, 0..6)) {
            let mut cuts = cuts;
            cuts.sort_unstable();
            prop_assert!(check_in_pieces(text.as_bytes(), &cuts));
        }
    }
}
