//! Request bodies of the media upload: `multipart/form-data` framing around an APPEND's
//! segment (M2), and `application/x-www-form-urlencoded` forms for v1.1 INIT and FINALIZE (M1,
//! M3).
//!
//! The segment is never copied: the core builds the multipart text before it (the fields and
//! the `media` part's header) and after it (the closing delimiter), and the driver sends
//! prefix, the source range, suffix. The boundary comes from a seed in the config (the core
//! has no randomness of its own) and is checked against the framing it delimits: a candidate
//! that occurs anywhere but in its delimiter lines is skipped for the next one.

use std::fmt::Write as _;

use bytes::Bytes;

/// The boundary and the framing around one segment.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Framing {
    /// The boundary, as it goes in `Content-Type: multipart/form-data; boundary=…`.
    pub(crate) boundary: String,
    /// Every field, then the `media` part's header, ending where the segment's bytes start.
    pub(crate) prefix: Bytes,
    /// The CRLF that ends the segment and the closing delimiter.
    pub(crate) suffix: Bytes,
}

/// How many boundary candidates are tried before giving up. Field values are media ids and
/// numbers, which cannot hold eight different 42-character candidates.
const BOUNDARY_CANDIDATES: u64 = 8;

/// The multipart framing of an APPEND: the text `fields` in order, then the `media` part with
/// the segment's bytes. `None` only when no candidate boundary stays out of the framing text.
///
/// Deterministic in `(seed, fields)`, so polling twice builds the same body.
pub(crate) fn frame(seed: u64, fields: &[(&str, &str)]) -> Option<Framing> {
    (0..BOUNDARY_CANDIDATES).find_map(|attempt| {
        let boundary = boundary(seed, attempt);
        let (prefix, suffix) = framing_text(&boundary, fields);
        // Each delimiter line holds the boundary once: any other occurrence (inside a field
        // value) would cut the body short at the server.
        let clean = occurrences(prefix.as_bytes(), boundary.as_bytes()) == fields.len() + 1
            && occurrences(suffix.as_bytes(), boundary.as_bytes()) == 1;
        clean.then(|| Framing {
            boundary,
            prefix: Bytes::from(prefix),
            suffix: Bytes::from(suffix),
        })
    })
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

fn framing_text(boundary: &str, fields: &[(&str, &str)]) -> (String, String) {
    let mut prefix = String::with_capacity(128 * (fields.len() + 1));
    // Writing to a String cannot fail.
    for (name, value) in fields {
        let _ = write!(
            prefix,
            "--{boundary}\r\nContent-Disposition: form-data; name=\"{name}\"\r\n\r\n{value}\r\n"
        );
    }
    let _ = write!(
        prefix,
        "--{boundary}\r\nContent-Disposition: form-data; name=\"media\"; filename=\"blob\"\r\n\
         Content-Type: application/octet-stream\r\n\r\n"
    );
    (prefix, format!("\r\n--{boundary}--\r\n"))
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

    #[test]
    fn framing_is_deterministic_and_well_formed_m2() {
        let fields = [
            ("command", "APPEND"),
            ("media_id", "42"),
            ("segment_index", "0"),
        ];
        let a = frame(7, &fields).unwrap();
        assert_eq!(a, frame(7, &fields).unwrap());
        assert_ne!(a.boundary, frame(8, &fields).unwrap().boundary);
        let prefix = std::str::from_utf8(&a.prefix).unwrap();
        assert!(prefix.starts_with(&format!("--{}\r\n", a.boundary)));
        assert!(prefix.ends_with("application/octet-stream\r\n\r\n"));
        assert_eq!(
            &a.suffix[..],
            format!("\r\n--{}--\r\n", a.boundary).as_bytes()
        );
    }

    #[test]
    fn a_value_holding_the_boundary_moves_to_the_next_candidate_m2() {
        let first = frame(1, &[("media_id", "1")]).unwrap().boundary;
        let hostile = frame(1, &[("media_id", &first)]).unwrap();
        assert_ne!(hostile.boundary, first);
        assert!(!first.contains(&hostile.boundary));
    }

    #[test]
    fn forms_percent_encode_values_m1() {
        let body = form(&[("media_type", "video/mp4"), ("additional_owners", "1,2")]);
        assert_eq!(&body[..], b"media_type=video%2Fmp4&additional_owners=1%2C2");
    }
}
