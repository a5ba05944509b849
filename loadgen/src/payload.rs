//! The payload every published message carries: `{"seq":N,"ts":<unix micros>,"pad":"…"}`,
//! padded with `x` to the requested size, and a fast parser for the two numbers.

/// Writes the payload for `seq` stamped `ts_us` into `out` (cleared first), padded to `size`
/// bytes when `size` is large enough to hold the numbers.
pub fn build(seq: u64, ts_us: u64, size: usize, out: &mut Vec<u8>) {
    use std::io::Write as _;
    out.clear();
    // Writing into a Vec cannot fail.
    let _ = write!(out, "{{\"seq\":{seq},\"ts\":{ts_us},\"pad\":\"");
    let pad = size.saturating_sub(out.len() + 2);
    out.resize(out.len() + pad, b'x');
    out.extend_from_slice(b"\"}");
}

/// `(seq, ts)` from a payload made by [`build`]; `None` for anything else.
pub fn parse(bytes: &[u8]) -> Option<(u64, u64)> {
    let rest = bytes.strip_prefix(b"{\"seq\":")?;
    let (seq, rest) = number(rest)?;
    let rest = rest.strip_prefix(b",\"ts\":")?;
    let (ts, _) = number(rest)?;
    Some((seq, ts))
}

fn number(bytes: &[u8]) -> Option<(u64, &[u8])> {
    let digits = bytes.iter().take_while(|b| b.is_ascii_digit()).count();
    if digits == 0 || digits > 19 {
        return None;
    }
    let mut value = 0u64;
    for &b in &bytes[..digits] {
        value = value * 10 + u64::from(b - b'0');
    }
    Some((value, &bytes[digits..]))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The smallest payload holding `seq` and `ts`: `{"seq":,"ts":,"pad":""}` is 23 bytes.
    fn min_size(seq: u64, ts_us: u64) -> usize {
        23 + seq.to_string().len() + ts_us.to_string().len()
    }

    #[test]
    fn round_trips_and_pads() {
        let mut buf = Vec::new();
        build(42, 1_700_000_000_123_456, 256, &mut buf);
        assert_eq!(buf.len(), 256);
        assert_eq!(parse(&buf), Some((42, 1_700_000_000_123_456)));
        let v: serde_json::Value = serde_json::from_slice(&buf).unwrap();
        assert_eq!(v["seq"], 42);
        build(7, 9, 1, &mut buf);
        assert_eq!(buf.len(), min_size(7, 9));
        assert_eq!(parse(&buf), Some((7, 9)));
        assert_eq!(parse(b"{\"other\":1}"), None);
    }
}
