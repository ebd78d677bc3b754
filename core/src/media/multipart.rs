//! Request bodies of the media upload: `multipart/form-data` framing around an APPEND's
//! segment (M2), and `application/x-www-form-urlencoded` forms for v1.1 INIT and FINALIZE (M1,
//! M3).
//!
//! The segment is never copied: the core builds the multipart text before it (the fields and
//! the `media` part's header) and after it (the closing delimiter), and the driver sends
//! prefix, the source range, suffix. The boundary comes from a seed in the config (the core
//! has no randomness of its own) and is checked against the framing it delimits: a candidate
//! that occurs anywhere but in its delimiter lines is skipped for the next one.
//!
//! A media id is sent in up to 1000 APPENDs that differ only in `segment_index`, so the
//! framing is built once per media id ([`Framing::new`]) and each APPEND only writes its index
//! between two fixed pieces ([`Framing::prefix`]).

use std::fmt::Write as _;

use bytes::Bytes;
use http::HeaderValue;

/// The multipart framing of every APPEND of one media id: all of it but the value of
/// `segment_index`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Framing {
    /// `multipart/form-data; boundary=…`.
    pub(crate) content_type: HeaderValue,
    /// The fixed fields, then the `segment_index` part's header, ending where its value starts.
    head: Box<[u8]>,
    /// The CRLF that ends the index's value, then the `media` part's header, ending where the
    /// segment's bytes start.
    tail: Box<[u8]>,
    /// The CRLF that ends the segment and the closing delimiter (the same for every APPEND, so
    /// shared rather than copied).
    pub(crate) suffix: Bytes,
}

/// How many boundary candidates are tried before giving up. Field values are media ids and
/// numbers, which cannot hold eight different 42-character candidates.
const BOUNDARY_CANDIDATES: u64 = 8;

impl Framing {
    /// The framing of an APPEND: the text `fields` in order, then `segment_index`, then the
    /// `media` part with the segment's bytes. `None` only when no candidate boundary stays out
    /// of the framing text.
    ///
    /// Deterministic in `(seed, fields)`, so polling twice builds the same body.
    pub(crate) fn new(seed: u64, fields: &[(&str, &str)]) -> Option<Framing> {
        (0..BOUNDARY_CANDIDATES).find_map(|attempt| {
            let boundary = boundary(seed, attempt);
            let (head, tail, suffix) = framing_text(&boundary, fields);
            // Each delimiter line holds the boundary once: any other occurrence (inside a field
            // value) would cut the body short at the server. The index left out here is a line
            // of decimal digits between two CRLFs, which can neither hold the boundary nor
            // complete one, so this check holds for every segment.
            let clean = occurrences(head.as_bytes(), boundary.as_bytes()) == fields.len() + 1
                && occurrences(tail.as_bytes(), boundary.as_bytes()) == 1
                && occurrences(suffix.as_bytes(), boundary.as_bytes()) == 1;
            if !clean {
                return None;
            }
            let content_type = format!("multipart/form-data; boundary={boundary}");
            Some(Framing {
                content_type: HeaderValue::from_str(&content_type).ok()?,
                head: head.into_bytes().into_boxed_slice(),
                tail: tail.into_bytes().into_boxed_slice(),
                suffix: Bytes::from(suffix),
            })
        })
    }

    /// The body's text before segment `index`'s bytes: every field and the `media` part's
    /// header. One allocation, of exactly its length (`Bytes` keeps an exact `Vec` as it is;
    /// spare capacity would cost a second allocation).
    pub(crate) fn prefix(&self, index: u32) -> Bytes {
        let mut buf = [0u8; 20];
        let digits = crate::range::digits(u64::from(index), &mut buf);
        let mut prefix = Vec::with_capacity(self.head.len() + digits.len() + self.tail.len());
        prefix.extend_from_slice(&self.head);
        prefix.extend_from_slice(digits);
        prefix.extend_from_slice(&self.tail);
        Bytes::from(prefix)
    }
}

/// Candidate `attempt` for `seed`: `resumable-` and 32 hex digits (RFC 2046 allows 70
/// characters; these are all `bchars`).
fn boundary(seed: u64, attempt: u64) -> String {
    let mut state = seed ^ attempt.wrapping_mul(0xD1B5_4A32_D192_ED03);
    let high = splitmix64(&mut state);
    let low = splitmix64(&mut state);
    format!("resumable-{high:016x}{low:016x}")
}

fn splitmix64(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// The framing's three fixed pieces: the text before `segment_index`'s value, the text between
/// it and the segment's bytes, and the text after them.
fn framing_text(boundary: &str, fields: &[(&str, &str)]) -> (String, String, String) {
    let mut head = String::with_capacity(128 * (fields.len() + 1));
    for (name, value) in fields {
        push_part_header(&mut head, boundary, name);
        head.push_str(value);
        head.push_str("\r\n");
    }
    push_part_header(&mut head, boundary, "segment_index");
    let tail = format!(
        "\r\n--{boundary}\r\nContent-Disposition: form-data; name=\"media\"; filename=\"blob\"\r\n\
         Content-Type: application/octet-stream\r\n\r\n"
    );
    (head, tail, format!("\r\n--{boundary}--\r\n"))
}

/// The delimiter and header of the text field `name`, ending where its value starts.
fn push_part_header(out: &mut String, boundary: &str, name: &str) {
    // Writing to a String cannot fail.
    let _ = write!(
        out,
        "--{boundary}\r\nContent-Disposition: form-data; name=\"{name}\"\r\n\r\n"
    );
}

fn occurrences(haystack: &[u8], needle: &[u8]) -> usize {
    if needle.is_empty() {
        return 0;
    }
    haystack
        .windows(needle.len())
        .filter(|w| *w == needle)
        .count()
}

/// An `application/x-www-form-urlencoded` body. Values are percent-encoded with RFC 3986's
/// unreserved set, the encoding OAuth 1.0a signs with (M7), which every form decoder reads.
pub(crate) fn form(fields: &[(&str, &str)]) -> Bytes {
    let mut body = String::new();
    for (i, (name, value)) in fields.iter().enumerate() {
        if i > 0 {
            body.push('&');
        }
        percent_encode(&mut body, name);
        body.push('=');
        percent_encode(&mut body, value);
    }
    Bytes::from(body)
}

/// Percent-encodes everything but RFC 3986 unreserved characters (`A-Z a-z 0-9 - . _ ~`).
pub(crate) fn percent_encode(out: &mut String, text: &str) {
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(byte));
        } else {
            let _ = write!(out, "%{byte:02X}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn boundary_of(framing: &Framing) -> &str {
        let value = framing.content_type.to_str().unwrap();
        value
            .strip_prefix("multipart/form-data; boundary=")
            .unwrap()
    }

    #[test]
    fn framing_is_deterministic_and_well_formed_m2() {
        let fields = [("command", "APPEND"), ("media_id", "42")];
        let a = Framing::new(7, &fields).unwrap();
        assert_eq!(a, Framing::new(7, &fields).unwrap());
        assert_eq!(a.prefix(3), a.prefix(3));
        let b = boundary_of(&a);
        assert_ne!(b, boundary_of(&Framing::new(8, &fields).unwrap()));
        // Every index, however many digits, goes in its own field between the fixed ones.
        for index in [0, 9, 10, 999, u32::MAX] {
            let expected = format!(
                "--{b}\r\nContent-Disposition: form-data; name=\"command\"\r\n\r\nAPPEND\r\n\
                 --{b}\r\nContent-Disposition: form-data; name=\"media_id\"\r\n\r\n42\r\n\
                 --{b}\r\nContent-Disposition: form-data; name=\"segment_index\"\r\n\r\n\
                 {index}\r\n\
                 --{b}\r\nContent-Disposition: form-data; name=\"media\"; filename=\"blob\"\r\n\
                 Content-Type: application/octet-stream\r\n\r\n"
            );
            assert_eq!(&a.prefix(index)[..], expected.as_bytes());
        }
        assert_eq!(&a.suffix[..], format!("\r\n--{b}--\r\n").as_bytes());
    }

    #[test]
    fn a_value_holding_the_boundary_moves_to_the_next_candidate_m2() {
        let first = Framing::new(1, &[("media_id", "1")]).unwrap();
        let first = boundary_of(&first);
        let hostile = Framing::new(1, &[("media_id", first)]).unwrap();
        assert_ne!(boundary_of(&hostile), first);
        assert!(!first.contains(boundary_of(&hostile)));
    }

    #[test]
    fn forms_percent_encode_values_m1() {
        let body = form(&[("media_type", "video/mp4"), ("additional_owners", "1,2")]);
        assert_eq!(&body[..], b"media_type=video%2Fmp4&additional_owners=1%2C2");
    }
}
