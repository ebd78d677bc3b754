//! Byte ranges on the wire: `Content-Range` on requests (G4, G6, T4) and the `Range` a server
//! answers with to say how much it holds (G5, T5). Shared by every protocol.

use std::io::Write as _;
use std::ops::Range;

use http::HeaderValue;

use crate::error::ProtocolViolation;

/// The `Content-Range` value for sending `range` of a source whose total is `total` (`None`
/// while unknown): `bytes A-B/T`, `bytes A-B/*`, or for an empty range (a status query or a
/// final empty request) `bytes */T` / `bytes */*` (G4, G6).
pub fn content_range(range: Range<u64>, total: Option<u64>) -> HeaderValue {
    // Written on the stack: the header value is the only allocation (one per request).
    let mut buf = [0u8; 80];
    let mut out = &mut buf[..];
    // Writing at most 6 + 20 + 1 + 20 + 1 + 20 bytes into 80 cannot fail.
    let _ = out.write_all(b"bytes ");
    if range.end > range.start {
        let _ = write!(out, "{}-{}/", range.start, range.end - 1);
    } else {
        let _ = out.write_all(b"*/");
    }
    let _ = match total {
        Some(t) => write!(out, "{t}"),
        None => out.write_all(b"*"),
    };
    let len = 80 - out.len();
    HeaderValue::from_bytes(&buf[..len]).unwrap_or_else(|_| HeaderValue::from_static("bytes */*"))
}

/// A decimal header value (`Content-Length`, `X-Upload-Content-Length`, …), written on the
/// stack so the value itself is the only allocation.
pub fn decimal(n: u64) -> HeaderValue {
    let mut buf = [0u8; 20];
    HeaderValue::from_bytes(digits(n, &mut buf)).unwrap_or_else(|_| HeaderValue::from_static("0"))
}

/// `n` in decimal, written into `buf` (no allocation); the digits are the returned slice.
pub(crate) fn digits(n: u64, buf: &mut [u8; 20]) -> &[u8] {
    let mut out = &mut buf[..];
    // u64::MAX has 20 digits: this cannot fail.
    let _ = write!(out, "{n}");
    let len = 20 - out.len();
    &buf[..len]
}

/// How a server's `Range` header may be written.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RangeForm {
    /// Only `bytes=0-N` (GCS, G5).
    BytesPrefix,
    /// `0-N` or `bytes=0-N` (TON documents the first, T5).
    BytesPrefixOptional,
}

/// Parses a server's progress `Range` header (`bytes=A-B`, B inclusive) into `(A, B + 1)`:
/// where the stored bytes start and how far they reach.
///
/// # Errors
/// [`ProtocolViolation::MalformedRange`] for anything else: not ASCII, missing the `bytes=`
/// prefix when `form` requires it, non-digits, `B < A`, numbers that overflow.
pub fn parse_range(value: &[u8], form: RangeForm) -> Result<(u64, u64), ProtocolViolation> {
    let text = std::str::from_utf8(value)
        .map_err(|_| ProtocolViolation::MalformedRange)?
        .trim();
    // Range units are case-insensitive (RFC 9110 §14.1): `Bytes=0-9` is `bytes=0-9`.
    let unit = text.get(..6).filter(|u| u.eq_ignore_ascii_case("bytes="));
    let spec = match unit.and_then(|_| text.get(6..)) {
        Some(rest) => rest,
        None if form == RangeForm::BytesPrefixOptional => text,
        None => return Err(ProtocolViolation::MalformedRange),
    };
    let (a, b) = spec
        .split_once('-')
        .ok_or(ProtocolViolation::MalformedRange)?;
    let a = parse_decimal(a.trim()).ok_or(ProtocolViolation::MalformedRange)?;
    let b = parse_decimal(b.trim()).ok_or(ProtocolViolation::MalformedRange)?;
    if b < a {
        return Err(ProtocolViolation::MalformedRange);
    }
    let end = b.checked_add(1).ok_or(ProtocolViolation::MalformedRange)?;
    Ok((a, end))
}

/// A parsed request `Content-Range` (used by servers and tests to check what a client sent).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ContentRange {
    /// The half-open range of bytes carried, or `None` for `bytes */T` (no bytes).
    pub range: Option<Range<u64>>,
    /// The declared total, or `None` for `*`.
    pub total: Option<u64>,
}

/// Parses a request `Content-Range`: `bytes A-B/T`, `bytes A-B/*`, `bytes */T` or `bytes */*`.
///
/// Returns `None` for anything else, including `B < A` and a range that reaches past `T`.
pub fn parse_content_range(value: &[u8]) -> Option<ContentRange> {
    let text = std::str::from_utf8(value).ok()?.trim();
    let rest = text.strip_prefix("bytes ")?.trim_start();
    let (span, total) = rest.split_once('/')?;
    let total = match total {
        "*" => None,
        t => Some(parse_decimal(t)?),
    };
    let range = match span {
        "*" => None,
        s => {
            let (a, b) = s.split_once('-')?;
            let a = parse_decimal(a)?;
            let b = parse_decimal(b)?;
            if b < a {
                return None;
            }
            let end = b.checked_add(1)?;
            if let Some(t) = total
                && end > t
            {
                return None;
            }
            Some(a..end)
        }
    };
    Some(ContentRange { range, total })
}

/// A non-negative decimal integer: ASCII digits only (no sign, no spaces), no overflow.
pub(crate) fn parse_decimal(s: &str) -> Option<u64> {
    if s.is_empty() || s.len() > 20 || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_range_forms_g4_g6() {
        assert_eq!(
            content_range(0..262144, Some(1000000)),
            "bytes 0-262143/1000000"
        );
        assert_eq!(content_range(262144..524288, None), "bytes 262144-524287/*");
        assert_eq!(content_range(7..7, Some(7)), "bytes */7");
        assert_eq!(content_range(0..0, None), "bytes */*");
        assert_eq!(content_range(0..0, Some(0)), "bytes */0");
    }

    #[test]
    fn range_parses_both_forms_g5_t5() {
        assert_eq!(
            parse_range(b"bytes=0-42", RangeForm::BytesPrefix),
            Ok((0, 43))
        );
        assert_eq!(
            parse_range(b"0-42", RangeForm::BytesPrefixOptional),
            Ok((0, 43))
        );
        assert_eq!(
            parse_range(b"bytes=0-42", RangeForm::BytesPrefixOptional),
            Ok((0, 43))
        );
        assert_eq!(
            parse_range(b"bytes=5-9", RangeForm::BytesPrefix),
            Ok((5, 10))
        );
    }

    #[test]
    fn range_rejects_malformed() {
        for bad in [
            &b"0-42"[..],
            b"bytes=",
            b"bytes=-5",
            b"bytes=5-",
            b"bytes=9-5",
            b"bytes=0-18446744073709551615",
            b"bytes=+1-2",
            b"bytes=0-1,3-4",
            b"\xff",
        ] {
            assert_eq!(
                parse_range(bad, RangeForm::BytesPrefix),
                Err(ProtocolViolation::MalformedRange),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn decimal_values() {
        assert_eq!(decimal(0), "0");
        assert_eq!(decimal(262144), "262144");
        assert_eq!(decimal(u64::MAX), "18446744073709551615");
    }

    #[test]
    fn content_range_round_trips() {
        for (range, total) in [
            (0..1, Some(1)),
            (5..10, None),
            (0..0, Some(0)),
            (3..3, None),
            (100..200, Some(200)),
        ] {
            let v = content_range(range.clone(), total);
            let parsed = parse_content_range(v.as_bytes()).unwrap();
            let expect = if range.is_empty() { None } else { Some(range) };
            assert_eq!(
                parsed,
                ContentRange {
                    range: expect,
                    total
                }
            );
        }
        assert_eq!(parse_content_range(b"bytes 0-10/5"), None);
        assert_eq!(parse_content_range(b"bytes 5-1/*"), None);
        assert_eq!(parse_content_range(b"items 0-1/2"), None);
    }
}
