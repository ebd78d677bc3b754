//! The server's own strict parsers for the request headers it acts on.
//!
//! The server checks clients built on `resumable-core`, so it must not share the core's
//! parsers: a bug there would then be invisible (the client writes what the server reads
//! the same wrong way). These are small and exact, each to its grammar:
//!
//! | header | grammar | where |
//! |---|---|---|
//! | `Content-Range` | `bytes A-B/T`, `bytes A-B/*`, `bytes */T`, `bytes */*` (RFC 9110 §14.4, GCS G4/G6) | [`content_range`] |
//! | `Range` | one `bytes=A-B`, `bytes=A-` or `bytes=-N` (RFC 9110 §14.1.2) | [`byte_range`] |
//! | `x-goog-hash` | `crc32c=B64` / `md5=B64`, comma-separated, the header may repeat | [`goog_hash`] |
//! | `Host` | `reg-name / IPv4 / "[" IPv6 "]"`, then an optional `":" port` (RFC 9110 §7.2) | [`host`] |
//!
//! Anything outside the grammar is an error (never a guess): a leading `+`, spaces inside a
//! number, a number past `u64`, `B < A`, `B ≥ T`, base64 of the wrong length or without its
//! padding.

use std::ops::Range;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;

/// A non-negative decimal: one or more ASCII digits, nothing else, no overflow.
pub(crate) fn decimal(s: &str) -> Option<u64> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    // Leading zeros are allowed by `1*DIGIT`; skip them so a long run of zeros is not an
    // overflow.
    let digits = s.trim_start_matches('0');
    if digits.len() > 20 {
        return None;
    }
    if digits.is_empty() {
        return Some(0);
    }
    digits.parse().ok()
}

/// A parsed `Content-Range` of a request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct ContentRange {
    /// The bytes the body carries (`B` exclusive); `None` for `bytes */T`.
    pub(crate) range: Option<Range<u64>>,
    /// The complete length; `None` for `/*`.
    pub(crate) total: Option<u64>,
}

/// Parses a request `Content-Range` (see the module docs for the grammar). The range unit is
/// case-insensitive (RFC 9110 §14.1); one space separates it from the rest; no other
/// whitespace is allowed inside.
pub(crate) fn content_range(value: &str) -> Option<ContentRange> {
    let (unit, rest) = value.split_once(' ')?;
    if !unit.eq_ignore_ascii_case("bytes") {
        return None;
    }
    let (span, total) = rest.split_once('/')?;
    let total = match total {
        "*" => None,
        t => Some(decimal(t)?),
    };
    let range = match span {
        "*" => None,
        s => {
            let (a, b) = s.split_once('-')?;
            let (a, b) = (decimal(a)?, decimal(b)?);
            if b < a {
                return None;
            }
            let end = b.checked_add(1)?;
            if total.is_some_and(|t| end > t) {
                return None;
            }
            Some(a..end)
        }
    };
    Some(ContentRange { range, total })
}

/// What a download's `Range` asks for, against an object of `size` bytes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum ByteRange {
    /// No `Range`, or one this server ignores (several ranges, another unit): the whole
    /// object with `200`, as RFC 9110 allows.
    Whole,
    /// A satisfiable range: `206` with these bytes.
    Part(Range<u64>),
    /// A range that starts at or past the end (or a zero-length suffix): `416`.
    Unsatisfiable,
}

/// Parses a request `Range` for an object of `size` bytes. `None` when it is malformed (the
/// caller answers `400`).
pub(crate) fn byte_range(value: Option<&str>, size: u64) -> Option<ByteRange> {
    let Some(value) = value else {
        return Some(ByteRange::Whole);
    };
    let (unit, set) = value.split_once('=')?;
    if !unit.eq_ignore_ascii_case("bytes") {
        return Some(ByteRange::Whole);
    }
    if set.contains(',') {
        // Several ranges: not served as multipart/byteranges; the whole object instead.
        return Some(ByteRange::Whole);
    }
    let (a, b) = set.split_once('-')?;
    match (a, b) {
        ("", n) => {
            let n = decimal(n)?;
            if n == 0 || size == 0 {
                return Some(ByteRange::Unsatisfiable);
            }
            Some(ByteRange::Part(size - n.min(size)..size))
        }
        (a, "") => {
            let a = decimal(a)?;
            Some(if a >= size {
                ByteRange::Unsatisfiable
            } else {
                ByteRange::Part(a..size)
            })
        }
        (a, b) => {
            let (a, b) = (decimal(a)?, decimal(b)?);
            if b < a {
                return None;
            }
            Some(if a >= size {
                ByteRange::Unsatisfiable
            } else {
                ByteRange::Part(a..b.saturating_add(1).min(size))
            })
        }
    }
}

/// Checksums a client claims in `x-goog-hash`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct GoogHash {
    /// The CRC32C, if given.
    pub(crate) crc32c: Option<u32>,
    /// The MD5, if given.
    pub(crate) md5: Option<[u8; 16]>,
}

/// Parses every `x-goog-hash` value. `Err` names the first malformed part: a known
/// algorithm (`crc32c`, `md5`) whose value is not the exact base64 of its digest, a part
/// without `=`, or one algorithm given twice with different values. Unknown algorithms are
/// skipped (GCS may add some).
pub(crate) fn goog_hash<'a>(values: impl Iterator<Item = &'a [u8]>) -> Result<GoogHash, String> {
    let mut out = GoogHash::default();
    for value in values {
        let text = std::str::from_utf8(value).map_err(|_| "x-goog-hash is not text".to_owned())?;
        for part in text.split(',') {
            let part = part.trim_matches([' ', '\t']);
            let (name, v) = part
                .split_once('=')
                .ok_or_else(|| format!("x-goog-hash part {part:?} is not NAME=BASE64"))?;
            match name {
                "crc32c" => {
                    let c = crc32c_from_base64(v).ok_or_else(|| {
                        format!("x-goog-hash crc32c {v:?} is not base64 of 4 bytes")
                    })?;
                    if out.crc32c.is_some_and(|old| old != c) {
                        return Err("x-goog-hash gives two different crc32c values".to_owned());
                    }
                    out.crc32c = Some(c);
                }
                "md5" => {
                    let m = md5_from_base64(v).ok_or_else(|| {
                        format!("x-goog-hash md5 {v:?} is not base64 of 16 bytes")
                    })?;
                    if out.md5.is_some_and(|old| old != m) {
                        return Err("x-goog-hash gives two different md5 values".to_owned());
                    }
                    out.md5 = Some(m);
                }
                _ => {}
            }
        }
    }
    Ok(out)
}

/// GCS's base64 of a big-endian CRC32C.
pub(crate) fn crc32c_base64(crc: u32) -> String {
    BASE64.encode(crc.to_be_bytes())
}

/// GCS's base64 of an MD5 digest.
pub(crate) fn md5_base64(md5: &[u8; 16]) -> String {
    BASE64.encode(md5)
}

/// Decodes [`crc32c_base64`]'s form: exactly 8 characters with padding.
pub(crate) fn crc32c_from_base64(text: &str) -> Option<u32> {
    if text.len() != 8 {
        return None;
    }
    let bytes: [u8; 4] = BASE64.decode(text).ok()?.try_into().ok()?;
    Some(u32::from_be_bytes(bytes))
}

/// Decodes [`md5_base64`]'s form: exactly 24 characters with padding.
pub(crate) fn md5_from_base64(text: &str) -> Option<[u8; 16]> {
    if text.len() != 24 {
        return None;
    }
    BASE64.decode(text).ok()?.try_into().ok()
}

/// The `x-goog-hash` value the server sends for an object.
pub(crate) fn goog_hash_value(crc32c: u32, md5: Option<&[u8; 16]>) -> String {
    match md5 {
        Some(m) => format!("crc32c={},md5={}", crc32c_base64(crc32c), md5_base64(m)),
        None => format!("crc32c={}", crc32c_base64(crc32c)),
    }
}

/// A `Host` value split into its host and optional port.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Host<'a> {
    /// The host as written (an IPv6 literal keeps its brackets).
    pub(crate) name: &'a str,
    /// The port, if the value has one.
    pub(crate) port: Option<u16>,
}

/// Parses a `Host` value (RFC 9110 §7.2 with RFC 3986's `host [ ":" port ]`): a reg-name of
/// letters, digits, `-`, `.`, `_` and `~` (no percent-escapes or sub-delims: no client of
/// this server needs them), a dotted IPv4, or a bracketed IPv6 literal; then an optional port
/// of 1 to 5 digits up to 65535. `None` for anything else, an empty port (`host:`) included.
pub(crate) fn host(value: &str) -> Option<Host<'_>> {
    if value.is_empty() || value.len() > 255 {
        return None;
    }
    let (name, port) = if value.starts_with('[') {
        let close = value.find(']')?;
        let (name, rest) = value.split_at(close + 1);
        let inner = &name[1..name.len() - 1];
        if inner.parse::<std::net::Ipv6Addr>().is_err() {
            return None;
        }
        match rest {
            "" => (name, None),
            r => (name, Some(r.strip_prefix(':')?)),
        }
    } else {
        match value.split_once(':') {
            Some((n, p)) => (n, Some(p)),
            None => (value, None),
        }
    };
    if !name.starts_with('[')
        && (name.is_empty()
            || !name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~')))
    {
        return None;
    }
    let port = match port {
        None => None,
        Some(p) if p.is_empty() || p.len() > 5 => return None,
        Some(p) => Some(u16::try_from(decimal(p)?).ok()?),
    };
    Some(Host { name, port })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_range_accepts_exactly_the_four_forms_g4_g6() {
        let ok = |v: &str, range: Option<Range<u64>>, total: Option<u64>| {
            assert_eq!(content_range(v), Some(ContentRange { range, total }), "{v}");
        };
        ok("bytes 0-9/10", Some(0..10), Some(10));
        ok("bytes 262144-524287/*", Some(262_144..524_288), None);
        ok("bytes */1000", None, Some(1000));
        ok("bytes */*", None, None);
        ok("BYTES 0-0/1", Some(0..1), Some(1));
        ok("bytes 00-01/002", Some(0..2), Some(2));
        ok(
            "bytes 18446744073709551613-18446744073709551613/18446744073709551614",
            Some(u64::MAX - 2..u64::MAX - 1),
            Some(u64::MAX - 1),
        );
        for bad in [
            "",
            "bytes",
            "bytes 0-9",
            "bytes  0-9/10",
            "bytes 0-9/10 ",
            " bytes 0-9/10",
            "bytes 0 -9/10",
            "bytes 0-9 /10",
            "bytes +0-9/10",
            "bytes 0-+9/10",
            "bytes 9-0/10",
            "bytes 0-10/10",
            "bytes 0-9/9",
            "bytes -9/10",
            "bytes 0-/10",
            "bytes 0-9/",
            "bytes */",
            "bytes **/*",
            "bytes 0-9/10/11",
            "bytes 0-99999999999999999999/*",
            "bytes 0-18446744073709551615/*",
            "octets 0-9/10",
            "bytes=0-9/10",
            "bytes 0x0-9/10",
            "bytes 1_0-20/30",
        ] {
            assert_eq!(content_range(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn decimal_is_digits_only_and_never_overflows() {
        assert_eq!(decimal("0"), Some(0));
        assert_eq!(decimal("000"), Some(0));
        assert_eq!(decimal("18446744073709551615"), Some(u64::MAX));
        assert_eq!(
            decimal("0000000000000000000000018446744073709551615"),
            Some(u64::MAX)
        );
        for bad in [
            "",
            "18446744073709551616",
            "-1",
            "+1",
            " 1",
            "1 ",
            "1e3",
            "١",
        ] {
            assert_eq!(decimal(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn byte_range_serves_one_range_and_refuses_what_is_unsatisfiable() {
        use ByteRange::*;
        assert_eq!(byte_range(None, 10), Some(Whole));
        assert_eq!(byte_range(Some("bytes=0-4"), 10), Some(Part(0..5)));
        assert_eq!(byte_range(Some("bytes=5-"), 10), Some(Part(5..10)));
        assert_eq!(byte_range(Some("bytes=-3"), 10), Some(Part(7..10)));
        assert_eq!(byte_range(Some("bytes=-30"), 10), Some(Part(0..10)));
        assert_eq!(byte_range(Some("bytes=8-100"), 10), Some(Part(8..10)));
        assert_eq!(byte_range(Some("bytes=10-"), 10), Some(Unsatisfiable));
        assert_eq!(byte_range(Some("bytes=-0"), 10), Some(Unsatisfiable));
        assert_eq!(byte_range(Some("bytes=0-"), 0), Some(Unsatisfiable));
        assert_eq!(byte_range(Some("bytes=0-1,4-5"), 10), Some(Whole));
        assert_eq!(byte_range(Some("items=0-1"), 10), Some(Whole));
        for bad in [
            "bytes=",
            "bytes=5-2",
            "bytes=a-b",
            "bytes=-",
            "bytes 0-4",
            "bytes=0-4-",
        ] {
            assert_eq!(byte_range(Some(bad), 10), None, "{bad:?}");
        }
    }

    #[test]
    fn goog_hash_reads_both_checksums_and_refuses_malformed_ones_g7() {
        let crc = crc32c_base64(0xe3069283);
        let md5 = md5_base64(&[7; 16]);
        let one = format!("crc32c={crc},md5={md5}");
        let h = goog_hash([one.as_bytes()].into_iter()).unwrap();
        assert_eq!(h.crc32c, Some(0xe3069283));
        assert_eq!(h.md5, Some([7; 16]));
        // Repeated headers, spaces after the comma, unknown algorithms.
        let a = format!("crc32c={crc}");
        let b = format!(" md5={md5}, sha9=zz");
        let h = goog_hash([a.as_bytes(), b.as_bytes()].into_iter()).unwrap();
        assert_eq!((h.crc32c, h.md5), (Some(0xe3069283), Some([7; 16])));
        assert_eq!(goog_hash(std::iter::empty()).unwrap(), GoogHash::default());
        for bad in [
            "crc32c=",
            "crc32c=AAAA",
            "crc32c=AAAAAA==x",
            "crc32c=4waSgw",
            "md5=AAAA",
            "crc32c",
            &format!("crc32c={crc},crc32c=AAAAAA=="),
        ] {
            assert!(goog_hash([bad.as_bytes()].into_iter()).is_err(), "{bad:?}");
        }
        // The same value twice is fine.
        let twice = format!("crc32c={crc},crc32c={crc}");
        assert!(goog_hash([twice.as_bytes()].into_iter()).is_ok());
        assert_eq!(
            goog_hash_value(1, None),
            format!("crc32c={}", crc32c_base64(1))
        );
    }

    #[test]
    fn host_needs_a_well_formed_name_and_port() {
        let h = |name, port| Some(Host { name, port });
        assert_eq!(host("127.0.0.1:8080"), h("127.0.0.1", Some(8080)));
        assert_eq!(host("127.0.0.1"), h("127.0.0.1", None));
        assert_eq!(host("localhost"), h("localhost", None));
        assert_eq!(host("storage.example:1"), h("storage.example", Some(1)));
        assert_eq!(host("[::1]:9000"), h("[::1]", Some(9000)));
        assert_eq!(host("[::1]"), h("[::1]", None));
        for bad in [
            "",
            "host:",
            "host:65536",
            "host:+1",
            "host:1:2",
            "ho st",
            "a/b",
            "[::1",
            "[zz]:1",
            "[::1]x",
            "[::1]:",
            ":80",
            "user@host",
        ] {
            assert_eq!(host(bad), None, "{bad:?}");
        }
    }
}
