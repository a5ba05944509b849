//! The client's side of the WebSocket wire (RFC 6455 §5): frames read from a session's own TCP
//! stream after the upgrade, validated as they arrive.
//!
//! Every rule is applied at the earliest byte that can break it, so a hostile client costs
//! at most one read chunk of memory:
//! - a frame header is judged on its own (reserved bits, opcodes, masking, control-frame rules,
//!   the 63-bit length) and a declared length over the limit is refused before any payload is
//!   read (a message arriving in continuations is refused as soon as its total would pass it);
//! - a data payload is never buffered whole: it is unmasked and checked chunk by chunk (text
//!   as UTF-8, incrementally, across fragments) and then let go, since the session uses no
//!   client content;
//! - only a control frame's payload (at most 125 bytes) is kept until complete, then judged:
//!   a close frame's code and UTF-8 reason, a ping's payload to echo.

use std::io;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{ready, Context, Poll};

use bytes::{Buf, Bytes, BytesMut};
use futures_util::Stream;
use tokio::net::TcpStream;

use crate::utf8::Utf8Stream;

/// How much to read at a time; the buffer is released again once its bytes are parsed.
const READ_CHUNK: usize = 2048;
/// The most payload a control frame may carry.
const MAX_CONTROL_PAYLOAD: u64 = 125;

/// What a client sent, as far as the session cares.
#[derive(Debug, PartialEq, Eq)]
pub enum ClientFrame {
    /// A complete, valid text message (its content is not used).
    Text,
    /// The header of a binary message's first frame (refused by the session).
    Binary,
    /// A ping, with the payload to echo.
    Ping(Bytes),
    /// A pong.
    Pong,
    /// A valid close frame: the client's code, if it sent one.
    Close(Option<u16>),
}

/// Why reading from a client stopped.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ReadError {
    /// A frame, or a message reassembled from continuations, over the size limit (1009).
    #[error("client frame over {limit} bytes")]
    TooBig {
        /// The limit in bytes.
        limit: usize,
    },
    /// A text message or a close reason that is not UTF-8 (1007).
    #[error("invalid UTF-8 in a text message or close reason")]
    InvalidUtf8,
    /// The client broke the WebSocket protocol (1002).
    #[error("websocket protocol error: {0}")]
    Protocol(&'static str),
    /// The connection failed.
    #[error("socket read failed: {0}")]
    Io(#[from] io::Error),
}

/// The kinds of frame of RFC 6455 §5.2.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum OpCode {
    Continuation,
    Text,
    Binary,
    Close,
    Ping,
    Pong,
}

impl OpCode {
    fn from_bits(bits: u8) -> Result<Self, ReadError> {
        match bits {
            0x0 => Ok(OpCode::Continuation),
            0x1 => Ok(OpCode::Text),
            0x2 => Ok(OpCode::Binary),
            0x8 => Ok(OpCode::Close),
            0x9 => Ok(OpCode::Ping),
            0xA => Ok(OpCode::Pong),
            _ => Err(ReadError::Protocol("reserved opcode")),
        }
    }

    fn is_control(self) -> bool {
        matches!(self, OpCode::Close | OpCode::Ping | OpCode::Pong)
    }
}

/// A decoded frame header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Header {
    fin: bool,
    opcode: OpCode,
    mask: [u8; 4],
    len: u64,
    /// Bytes the header took on the wire.
    size: usize,
}

impl Header {
    /// Decodes a client frame header from the start of `bytes`; `None` until it is complete.
    fn parse(bytes: &[u8]) -> Result<Option<Header>, ReadError> {
        let [first, second, ..] = *bytes else {
            return Ok(None);
        };
        if first & 0x70 != 0 {
            return Err(ReadError::Protocol("reserved bits set"));
        }
        let opcode = OpCode::from_bits(first & 0x0F)?;
        if second & 0x80 == 0 {
            return Err(ReadError::Protocol("unmasked client frame"));
        }
        let (len, len_size) = match second & 0x7F {
            126 => match bytes.get(2..4) {
                Some(&[a, b]) => (u64::from(u16::from_be_bytes([a, b])), 2),
                _ => return Ok(None),
            },
            127 => match bytes.get(2..10).and_then(|s| <[u8; 8]>::try_from(s).ok()) {
                Some(long) => (u64::from_be_bytes(long), 8),
                None => return Ok(None),
            },
            short => (u64::from(short), 0),
        };
        if len >> 63 != 0 {
            return Err(ReadError::Protocol("payload length with its top bit set"));
        }
        let mask_at = 2 + len_size;
        let Some(mask) = bytes
            .get(mask_at..mask_at + 4)
            .and_then(|s| <[u8; 4]>::try_from(s).ok())
        else {
            return Ok(None);
        };
        Ok(Some(Header {
            fin: first & 0x80 != 0,
            opcode,
            mask,
            len,
            size: mask_at + 4,
        }))
    }
}

/// The data message being received, across its fragments.
#[derive(Debug)]
struct Message {
    /// Payload bytes so far, all fragments.
    size: u64,
    /// The UTF-8 check of a text message; `None` for binary.
    utf8: Option<Utf8Stream>,
}

/// Where the decoder is within the current frame.
#[derive(Debug)]
enum State {
    /// Waiting for a frame header.
    Header,
    /// Inside a data frame's payload, which is checked and let go as it arrives.
    Data {
        fin: bool,
        mask: [u8; 4],
        /// Payload bytes of this frame already consumed (the mask's phase).
        done: u64,
        len: u64,
    },
    /// Waiting for a whole control frame (at most 125 bytes).
    Control {
        opcode: OpCode,
        mask: [u8; 4],
        len: usize,
    },
}

/// The RFC 6455 checks of one client's byte stream, independent of the socket.
#[derive(Debug)]
struct Decoder {
    max_size: usize,
    state: State,
    message: Option<Message>,
}

impl Decoder {
    fn new(max_size: usize) -> Self {
        Self {
            max_size,
            state: State::Header,
            message: None,
        }
    }

    /// Consumes what `buf` holds; returns the next frame the session must see, if complete.
    fn decode(&mut self, buf: &mut BytesMut) -> Result<Option<ClientFrame>, ReadError> {
        loop {
            let progress = match self.state {
                State::Header => self.on_header(buf)?,
                State::Data { .. } => self.on_data(buf)?,
                State::Control { .. } => self.on_control(buf)?,
            };
            match progress {
                Progress::Frame(frame) => return Ok(Some(frame)),
                Progress::Continue => {}
                Progress::NeedBytes => return Ok(None),
            }
        }
    }

    fn on_header(&mut self, buf: &mut BytesMut) -> Result<Progress, ReadError> {
        let Some(header) = Header::parse(buf)? else {
            return Ok(Progress::NeedBytes);
        };
        buf.advance(header.size);
        if header.opcode.is_control() {
            return self.start_control(header);
        }
        self.start_data(header)?;
        if header.opcode == OpCode::Binary {
            // Refused by the session before any of its payload is read.
            return Ok(Progress::Frame(ClientFrame::Binary));
        }
        // An empty final frame completes its message here.
        self.on_data(buf)
    }

    fn start_control(&mut self, header: Header) -> Result<Progress, ReadError> {
        if !header.fin {
            return Err(ReadError::Protocol("fragmented control frame"));
        }
        if header.len > MAX_CONTROL_PAYLOAD {
            return Err(ReadError::Protocol("control frame over 125 bytes"));
        }
        self.state = State::Control {
            opcode: header.opcode,
            mask: header.mask,
            len: header.len as usize,
        };
        Ok(Progress::Continue)
    }

    /// Checks a data frame's place in its message and the size limit before any payload.
    fn start_data(&mut self, header: Header) -> Result<(), ReadError> {
        let limit = self.max_size;
        let too_big = |size: u64| usize::try_from(size).map_or(true, |size| size > limit);
        match (header.opcode, self.message.as_mut()) {
            (OpCode::Continuation, None) => {
                return Err(ReadError::Protocol("continuation without a message"))
            }
            (OpCode::Continuation, Some(message)) => {
                message.size = message.size.saturating_add(header.len);
                if too_big(message.size) {
                    return Err(ReadError::TooBig { limit });
                }
            }
            (_, Some(_)) => return Err(ReadError::Protocol("new message inside a fragmented one")),
            (opcode, None) => {
                if too_big(header.len) {
                    return Err(ReadError::TooBig { limit });
                }
                let utf8 = (opcode == OpCode::Text).then(Utf8Stream::default);
                self.message = Some(Message {
                    size: header.len,
                    utf8,
                });
            }
        }
        self.state = State::Data {
            fin: header.fin,
            mask: header.mask,
            done: 0,
            len: header.len,
        };
        Ok(())
    }

    /// Unmasks and checks what has arrived of a data payload, then lets it go.
    fn on_data(&mut self, buf: &mut BytesMut) -> Result<Progress, ReadError> {
        let State::Data {
            fin,
            mask,
            done,
            len,
        } = &mut self.state
        else {
            return Ok(Progress::Continue);
        };
        let available = usize::try_from(*len - *done).map_or(buf.len(), |left| left.min(buf.len()));
        if available > 0 {
            let chunk = &mut buf[..available];
            unmask(chunk, *mask, *done);
            if let Some(utf8) = self.message.as_mut().and_then(|m| m.utf8.as_mut()) {
                utf8.feed(chunk).map_err(|_| ReadError::InvalidUtf8)?;
            }
            buf.advance(available);
            *done += available as u64;
        }
        if *done < *len {
            return Ok(Progress::NeedBytes);
        }
        let fin = *fin;
        self.state = State::Header;
        if !fin {
            return Ok(Progress::Continue);
        }
        self.finish_message()
    }

    /// The final fragment is in: a text message must end on a character boundary.
    fn finish_message(&mut self) -> Result<Progress, ReadError> {
        let Some(message) = self.message.take() else {
            return Ok(Progress::Continue);
        };
        match message.utf8 {
            Some(utf8) if !utf8.is_complete() => Err(ReadError::InvalidUtf8),
            Some(_) => Ok(Progress::Frame(ClientFrame::Text)),
            None => Ok(Progress::Continue), // announced at its first frame
        }
    }

    /// A control frame once its whole payload is in.
    fn on_control(&mut self, buf: &mut BytesMut) -> Result<Progress, ReadError> {
        let State::Control { opcode, mask, len } = self.state else {
            return Ok(Progress::Continue);
        };
        if buf.len() < len {
            return Ok(Progress::NeedBytes);
        }
        let mut payload = buf.split_to(len);
        unmask(&mut payload, mask, 0);
        self.state = State::Header;
        let frame = match opcode {
            OpCode::Ping => ClientFrame::Ping(payload.freeze()),
            OpCode::Pong => ClientFrame::Pong,
            _ => ClientFrame::Close(close_code(&payload)?),
        };
        Ok(Progress::Frame(frame))
    }
}

/// What one decoding step achieved.
enum Progress {
    Frame(ClientFrame),
    Continue,
    NeedBytes,
}

/// XORs `bytes` with `mask`, `offset` bytes into the payload.
fn unmask(bytes: &mut [u8], mask: [u8; 4], offset: u64) {
    let phase = (offset % 4) as usize;
    for (i, byte) in bytes.iter_mut().enumerate() {
        *byte ^= mask[(phase + i) % 4];
    }
}

/// The code of a client's close frame (RFC 6455 §5.5.1, §7.4): none, or a code a peer may
/// send, followed by a UTF-8 reason.
fn close_code(payload: &[u8]) -> Result<Option<u16>, ReadError> {
    match payload {
        [] => Ok(None),
        [_] => Err(ReadError::Protocol("close frame with a one-byte payload")),
        [high, low, reason @ ..] => {
            let code = u16::from_be_bytes([*high, *low]);
            if !close_code_allowed(code) {
                return Err(ReadError::Protocol("close code not allowed on the wire"));
            }
            std::str::from_utf8(reason).map_err(|_| ReadError::InvalidUtf8)?;
            Ok(Some(code))
        }
    }
}

/// Codes a peer may put in a close frame: the defined ones (not 1004–1006, 1015, which are
/// reserved or for local use only), the IANA-registered 1012–1014, and the 3000–4999 ranges.
fn close_code_allowed(code: u16) -> bool {
    matches!(code, 1000..=1003 | 1007..=1014 | 3000..=4999)
}

/// The client's frames on a socket shared with its session (single-threaded: `Rc`).
pub struct ClientFrames {
    socket: Rc<TcpStream>,
    buf: BytesMut,
    decoder: Decoder,
    done: bool,
}

impl ClientFrames {
    /// Reads `socket`, starting with `read_ahead` (bytes that came with the upgrade request).
    pub fn new(socket: Rc<TcpStream>, read_ahead: BytesMut, max_size: usize) -> Self {
        Self {
            socket,
            buf: read_ahead,
            decoder: Decoder::new(max_size),
            done: false,
        }
    }

    /// The next complete frame in the buffer, if there is one.
    fn parse(&mut self) -> Result<Option<ClientFrame>, ReadError> {
        let frame = self.decoder.decode(&mut self.buf);
        self.release_if_empty();
        frame
    }

    /// An idle socket holds no read buffer.
    fn release_if_empty(&mut self) {
        if self.buf.is_empty() && self.buf.capacity() > 0 {
            self.buf = BytesMut::new();
        }
    }

    /// Reads what the socket has; `Ok(false)` at end of stream.
    fn poll_fill(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<bool>> {
        loop {
            ready!(self.socket.poll_read_ready(cx))?;
            if self.buf.capacity() - self.buf.len() < READ_CHUNK / 2 {
                self.buf.reserve(READ_CHUNK);
            }
            match self.socket.try_read_buf(&mut self.buf) {
                Ok(0) => return Poll::Ready(Ok(false)),
                Ok(_) => return Poll::Ready(Ok(true)),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                Err(e) => return Poll::Ready(Err(e)),
            }
        }
    }
}

impl Stream for ClientFrames {
    type Item = Result<ClientFrame, ReadError>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        while !this.done {
            match this.parse() {
                Ok(Some(frame)) => return Poll::Ready(Some(Ok(frame))),
                Ok(None) => {}
                Err(error) => {
                    this.done = true;
                    return Poll::Ready(Some(Err(error)));
                }
            }
            match ready!(this.poll_fill(cx)) {
                Ok(true) => {}
                Ok(false) => this.done = true,
                Err(error) => {
                    this.done = true;
                    return Poll::Ready(Some(Err(error.into())));
                }
            }
        }
        Poll::Ready(None)
    }
}

#[cfg(test)]
mod tests;
