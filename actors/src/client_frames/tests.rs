//! Unit tests of the client frame decoder: each RFC 6455 rule on hand-built frames, fed whole
//! and byte by byte.

use super::*;

/// A masked client frame.
fn frame(first: u8, payload: &[u8]) -> Vec<u8> {
    let mask = [0x37, 0xFA, 0x21, 0x3D];
    let mut out = vec![first];
    match payload.len() {
        len @ 0..=125 => out.push(0x80 | len as u8),
        len @ 126..=0xFFFF => {
            out.push(0x80 | 126);
            out.extend_from_slice(&(len as u16).to_be_bytes());
        }
        len => {
            out.push(0x80 | 127);
            out.extend_from_slice(&(len as u64).to_be_bytes());
        }
    }
    out.extend_from_slice(&mask);
    out.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
    out
}

fn text(payload: &[u8]) -> Vec<u8> {
    frame(0x81, payload)
}

/// Every frame decoded from `bytes` fed at once, then the error that stopped decoding, if any.
fn decode_all(bytes: &[u8], max_size: usize) -> (Vec<ClientFrame>, Option<ReadError>) {
    let mut decoder = Decoder::new(max_size);
    let mut buf = BytesMut::from(bytes);
    let mut frames = Vec::new();
    loop {
        match decoder.decode(&mut buf) {
            Ok(Some(frame)) => frames.push(frame),
            Ok(None) => return (frames, None),
            Err(error) => return (frames, Some(error)),
        }
    }
}

/// The same, fed one byte at a time (as a slow network would).
fn decode_bytewise(bytes: &[u8], max_size: usize) -> (Vec<ClientFrame>, Option<ReadError>) {
    let mut decoder = Decoder::new(max_size);
    let mut buf = BytesMut::new();
    let mut frames = Vec::new();
    for byte in bytes {
        buf.extend_from_slice(&[*byte]);
        loop {
            match decoder.decode(&mut buf) {
                Ok(Some(frame)) => frames.push(frame),
                Ok(None) => break,
                Err(error) => return (frames, Some(error)),
            }
        }
    }
    (frames, None)
}

fn both(bytes: &[u8], max_size: usize) -> (Vec<ClientFrame>, Option<String>) {
    let (whole, whole_error) = decode_all(bytes, max_size);
    let (bytewise, bytewise_error) = decode_bytewise(bytes, max_size);
    assert_eq!(whole, bytewise, "whole and byte-by-byte decoding agree");
    let whole_error = whole_error.map(|e| e.to_string());
    assert_eq!(whole_error, bytewise_error.map(|e| e.to_string()));
    (whole, whole_error)
}

#[test]
fn text_binary_ping_pong_and_close_decode() {
    let mut bytes = text("héllo".as_bytes());
    bytes.extend(frame(0x82, b"\x00\xFF"));
    bytes.extend(frame(0x89, b"ping!"));
    bytes.extend(frame(0x8A, b""));
    bytes.extend(frame(0x88, b"\x03\xE8bye"));
    let (frames, error) = both(&bytes, 1024);
    assert!(error.is_none());
    assert_eq!(
        frames,
        [
            ClientFrame::Text,
            ClientFrame::Binary,
            ClientFrame::Ping(Bytes::from_static(b"ping!")),
            ClientFrame::Pong,
            ClientFrame::Close(Some(1000)),
        ]
    );
}

#[test]
fn a_fragmented_text_message_is_one_message_and_pings_may_interleave() {
    let mut bytes = frame(0x01, "€".as_bytes()[..1].as_ref());
    bytes.extend(frame(0x89, b"p"));
    bytes.extend(frame(0x00, &"€".as_bytes()[1..]));
    bytes.extend(frame(0x80, b"!"));
    let (frames, error) = both(&bytes, 1024);
    assert!(error.is_none(), "{error:?}");
    assert_eq!(
        frames,
        [
            ClientFrame::Ping(Bytes::from_static(b"p")),
            ClientFrame::Text
        ]
    );
}

#[test]
fn a_declared_length_over_the_limit_is_refused_from_the_header_alone() {
    for declared in [1025u64, 1 << 40, (1 << 63) - 1] {
        let mut header = vec![0x81, 0x80 | 127];
        header.extend_from_slice(&declared.to_be_bytes());
        header.extend_from_slice(&[1, 2, 3, 4]);
        let (_, error) = decode_all(&header, 1024);
        assert!(
            matches!(error, Some(ReadError::TooBig { limit: 1024 })),
            "{declared}: {error:?}"
        );
    }
}

#[test]
fn continuations_are_refused_once_their_total_passes_the_limit() {
    let mut bytes = frame(0x01, &[b'a'; 600]);
    let mut second = vec![0x00, 0x80 | 126];
    second.extend_from_slice(&600u16.to_be_bytes());
    second.extend_from_slice(&[0; 4]);
    bytes.extend(second);
    let (_, error) = decode_all(&bytes, 1024);
    assert!(matches!(error, Some(ReadError::TooBig { .. })), "{error:?}");
}

#[test]
fn protocol_violations_are_refused() {
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("reserved bit", frame(0xC1, b"x")),
        ("reserved opcode", frame(0x83, b"")),
        ("reserved control opcode", frame(0x8B, b"")),
        ("unmasked", vec![0x81, 0x01, b'x']),
        ("fragmented ping", frame(0x09, b"")),
        ("long ping", frame(0x89, &[0; 126])),
        ("continuation first", frame(0x80, b"x")),
        ("close with one byte", frame(0x88, b"\x03")),
        ("close code 999", frame(0x88, &999u16.to_be_bytes())),
        ("close code 1005", frame(0x88, &1005u16.to_be_bytes())),
        ("close code 1006", frame(0x88, &1006u16.to_be_bytes())),
        ("close code 1015", frame(0x88, &1015u16.to_be_bytes())),
        ("close code 5000", frame(0x88, &5000u16.to_be_bytes())),
        ("close code 65535", frame(0x88, &65535u16.to_be_bytes())),
    ];
    for (what, bytes) in cases {
        let (_, error) = both(&bytes, 1024);
        let error = error.unwrap_or_else(|| panic!("{what}: accepted"));
        assert!(error.contains("protocol error"), "{what}: {error}");
    }
    let mut top_bit = vec![0x81, 0x80 | 127, 0x80, 0, 0, 0, 0, 0, 0, 1];
    top_bit.extend_from_slice(&[0; 4]);
    assert!(matches!(
        decode_all(&top_bit, usize::MAX).1,
        Some(ReadError::Protocol(_))
    ));
    let mut nested = frame(0x01, b"a");
    nested.extend(text(b"b"));
    assert!(matches!(
        decode_all(&nested, 1024).1,
        Some(ReadError::Protocol(_))
    ));
}

#[test]
fn invalid_utf8_is_refused_in_messages_and_close_reasons() {
    let cases: Vec<(&str, Vec<u8>)> = vec![
        (
            "text",
            text(b"\xCE\xBA\xE1\xBD\xB9\xCF\x83\xCE\xBC\xCE\xB5\xED\xA0\x80edited"),
        ),
        ("ends mid-character", text(b"abc\xE2\x82")),
        ("close reason", frame(0x88, b"\x03\xE8\xFF")),
    ];
    for (what, bytes) in cases {
        let (_, error) = both(&bytes, 1024);
        assert_eq!(
            error.as_deref(),
            Some("invalid UTF-8 in a text message or close reason"),
            "{what}"
        );
    }
    let mut split = frame(0x01, b"\xF4\x90");
    split.extend(frame(0x80, b"\x80\x80"));
    assert!(matches!(
        decode_all(&split, 1024).1,
        Some(ReadError::InvalidUtf8)
    ));
}

#[test]
fn allowed_close_codes_are_accepted() {
    for code in [
        1000u16, 1001, 1002, 1003, 1007, 1011, 1012, 1014, 3000, 3999, 4000, 4999,
    ] {
        let (frames, error) = both(&frame(0x88, &code.to_be_bytes()), 1024);
        assert!(error.is_none(), "{code}: {error:?}");
        assert_eq!(frames, [ClientFrame::Close(Some(code))]);
    }
    assert_eq!(both(&frame(0x88, b""), 1024).0, [ClientFrame::Close(None)]);
}
