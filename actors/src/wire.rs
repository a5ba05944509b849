//! The server's side of the WebSocket wire format, as a session writes it on its own TCP
//! stream after the upgrade (the client's side is `client_frames`).
//!
//! The socket leaves actix-http's HTTP/1 dispatcher at the upgrade (whose two 8 KiB buffers
//! would otherwise stay with it for its whole life), so per-socket memory is only what is in
//! flight:
//! - [`Outbox`]: the frames not yet taken by the kernel, each a small inline header plus a
//!   shared handle on the payload bytes (one published message is never copied per socket),
//!   written with one vectored write for as many frames as are queued.

use std::collections::VecDeque;
use std::io::{self, IoSlice};

use actix_http::ws::OpCode;
use bytes::Bytes;
use tokio::net::TcpStream;

use crate::close::CloseReason;
use crate::payload::Payload;

/// The longest server frame header: 2 bytes plus a 64-bit length (server frames are unmasked).
const MAX_HEAD: usize = 10;
/// How many slices one vectored write may carry (two per frame).
const MAX_SLICES: usize = 64;
/// An outbox that has grown past this many slots is given back once it empties.
const OUTBOX_KEEP: usize = 16;

/// One frame (or, for the handshake answer, raw bytes) waiting for the socket.
#[derive(Debug)]
pub struct OutFrame {
    head: [u8; MAX_HEAD],
    head_len: u8,
    /// Whether this is a published message (counted when written or dropped), not a control
    /// frame or the handshake.
    message: bool,
    body: Bytes,
}

impl OutFrame {
    /// Bytes sent as they are (the HTTP 101 answer).
    pub fn raw(bytes: Bytes) -> Self {
        Self {
            head: [0; MAX_HEAD],
            head_len: 0,
            message: false,
            body: bytes,
        }
    }

    /// A published message: a text frame for UTF-8, else a binary frame; the bytes are shared.
    pub fn message(payload: Payload) -> Self {
        let frame = match payload {
            Payload::Text(text) => Self::frame(OpCode::Text, text.into_bytes()),
            Payload::Binary(bytes) => Self::frame(OpCode::Binary, bytes),
        };
        Self {
            message: true,
            ..frame
        }
    }

    /// A ping with no payload.
    pub fn ping() -> Self {
        Self::frame(OpCode::Ping, Bytes::new())
    }

    /// The answer to a client's ping.
    pub fn pong(payload: Bytes) -> Self {
        Self::frame(OpCode::Pong, payload)
    }

    /// A close frame: the code, then the reason (already bounded to fit a control frame).
    pub fn close(reason: &CloseReason) -> Self {
        let mut body = Vec::with_capacity(2 + reason.reason.len());
        body.extend_from_slice(&reason.code.code().to_be_bytes());
        body.extend_from_slice(reason.reason.as_bytes());
        Self::frame(OpCode::Close, Bytes::from(body))
    }

    /// A final, unmasked frame of `opcode` carrying `body` (not counted as a message).
    pub fn frame(opcode: OpCode, body: Bytes) -> Self {
        let mut head = [0u8; MAX_HEAD];
        head[0] = 0x80 | u8::from(opcode);
        let len = body.len();
        let head_len = if len < 126 {
            head[1] = len as u8;
            2
        } else if let Ok(short) = u16::try_from(len) {
            head[1] = 126;
            head[2..4].copy_from_slice(&short.to_be_bytes());
            4
        } else {
            head[1] = 127;
            head[2..10].copy_from_slice(&(len as u64).to_be_bytes());
            10
        };
        Self {
            head,
            head_len,
            message: false,
            body,
        }
    }

    /// Appends the frame's bytes to `out` (for a refusal written in one piece).
    pub fn write_into(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(self.head());
        out.extend_from_slice(&self.body);
    }

    fn head(&self) -> &[u8] {
        &self.head[..usize::from(self.head_len)]
    }

    /// Bytes on the wire.
    pub fn wire_len(&self) -> usize {
        usize::from(self.head_len) + self.body.len()
    }

    /// Whether this is a published message rather than a control frame or the handshake.
    pub fn is_message(&self) -> bool {
        self.message
    }
}

/// Published messages whose frames the kernel has taken whole.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Written {
    /// How many.
    pub messages: u64,
    /// Their payload bytes (frame headers not included).
    pub payload_bytes: u64,
}

/// How far a flush got.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Flushed {
    /// Everything queued is with the kernel.
    All,
    /// The kernel's send buffer is full: wait until the socket is writable.
    Blocked,
}

/// The frames of one socket that the kernel has not taken yet, oldest first.
#[derive(Debug, Default)]
pub struct Outbox {
    frames: VecDeque<OutFrame>,
    /// Bytes of the first frame already written.
    written: usize,
    /// Messages written whole since [`Outbox::take_written`] last asked.
    written_messages: Written,
}

impl Outbox {
    /// Queues a frame behind the others.
    pub fn push(&mut self, frame: OutFrame) {
        self.frames.push_back(frame);
    }

    /// Frames waiting, counting one partly written.
    pub fn len(&self) -> usize {
        self.frames.len()
    }

    /// Whether nothing waits.
    pub fn is_empty(&self) -> bool {
        self.frames.is_empty()
    }

    /// Messages waiting, counting one partly written (control frames are not counted).
    pub fn messages(&self) -> usize {
        self.frames.iter().filter(|frame| frame.message).count()
    }

    /// Drops every frame not yet started; a frame partly written is kept so the stream stays
    /// well formed. Returns how many of the dropped frames were messages.
    pub fn drop_unstarted(&mut self) -> usize {
        let keep = usize::from(self.written > 0);
        let dropped = self
            .frames
            .iter()
            .skip(keep)
            .filter(|frame| frame.message)
            .count();
        self.frames.truncate(keep);
        self.release_if_empty();
        dropped
    }

    /// The messages written whole since the last call.
    pub fn take_written(&mut self) -> Written {
        std::mem::take(&mut self.written_messages)
    }

    /// Writes as much as the kernel takes, several frames per system call.
    pub fn write_to(&mut self, socket: &TcpStream) -> io::Result<Flushed> {
        while !self.frames.is_empty() {
            let written = {
                let mut slices = [IoSlice::new(&[]); MAX_SLICES];
                let count = self.fill(&mut slices);
                match socket.try_write_vectored(&slices[..count]) {
                    Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                    Ok(n) => n,
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(Flushed::Blocked),
                    Err(e) => return Err(e),
                }
            };
            self.advance(written);
        }
        self.release_if_empty();
        Ok(Flushed::All)
    }

    /// The unwritten bytes of the first frames as slices; returns how many were filled.
    fn fill<'a>(&'a self, slices: &mut [IoSlice<'a>; MAX_SLICES]) -> usize {
        let mut count = 0;
        let mut skip = self.written;
        for frame in &self.frames {
            if count + 2 > MAX_SLICES {
                break;
            }
            let head = frame.head();
            if skip < head.len() {
                slices[count] = IoSlice::new(&head[skip..]);
                count += 1;
            }
            let body_skip = skip.saturating_sub(head.len());
            if body_skip < frame.body.len() {
                slices[count] = IoSlice::new(&frame.body[body_skip..]);
                count += 1;
            }
            skip = 0;
        }
        count
    }

    fn advance(&mut self, mut written: usize) {
        while let Some(frame) = self.frames.front() {
            let left = frame.wire_len() - self.written;
            if written < left {
                self.written += written;
                return;
            }
            written -= left;
            self.written = 0;
            if let Some(frame) = self.frames.pop_front() {
                self.count_written(&frame);
            }
        }
    }

    fn count_written(&mut self, frame: &OutFrame) {
        if frame.message {
            self.written_messages.messages += 1;
            self.written_messages.payload_bytes += frame.body.len() as u64;
        }
    }

    fn release_if_empty(&mut self) {
        if self.frames.is_empty() && self.frames.capacity() > OUTBOX_KEEP {
            self.frames = VecDeque::new();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::close::CloseCode;

    #[test]
    fn headers_use_the_shortest_length_encoding() {
        assert_eq!(
            OutFrame::frame(OpCode::Text, Bytes::from(vec![b'a'; 5])).head(),
            [0x81, 5]
        );
        let medium = OutFrame::frame(OpCode::Text, Bytes::from(vec![b'a'; 300]));
        assert_eq!(medium.head(), [0x81, 126, 1, 44]);
        let large = OutFrame::frame(OpCode::Binary, Bytes::from(vec![0; 70_000]));
        assert_eq!(large.head()[..2], [0x82, 127]);
        assert_eq!(
            u64::from_be_bytes(large.head()[2..].try_into().unwrap()),
            70_000
        );
        assert_eq!(large.wire_len(), 70_010);
    }

    #[test]
    fn close_frames_carry_code_then_reason() {
        let reason = CloseReason::new(CloseCode::SlowConsumer, "send queue full", "cid");
        let frame = OutFrame::close(&reason);
        assert_eq!(frame.head()[0], 0x88);
        assert_eq!(frame.body[..2], 4009u16.to_be_bytes());
        assert_eq!(&frame.body[2..], reason.reason.as_bytes());
    }

    #[test]
    fn partial_writes_resume_mid_frame() {
        let mut outbox = Outbox::default();
        outbox.push(OutFrame::frame(OpCode::Text, Bytes::from_static(b"hello")));
        outbox.push(OutFrame::frame(OpCode::Text, Bytes::from_static(b"world")));
        outbox.advance(4); // head and "he"
        let mut slices = [IoSlice::new(&[]); MAX_SLICES];
        let count = outbox.fill(&mut slices);
        let pending: Vec<u8> = slices[..count].iter().flat_map(|s| s.to_vec()).collect();
        assert_eq!(&pending[..3], b"llo");
        assert_eq!(pending[3..], [0x81, 5, b'w', b'o', b'r', b'l', b'd']);
        outbox.drop_unstarted();
        assert_eq!(outbox.len(), 1, "the frame being written is kept");
        outbox.advance(3);
        assert!(outbox.is_empty());
    }
}
