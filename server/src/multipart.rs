//! Request forms of the media API: `multipart/form-data` (RFC 7578, framed as RFC 2046) and
//! `application/x-www-form-urlencoded`.
//!
//! A small synchronous parser of our own: the server is blocking and reads a whole (bounded)
//! body before parsing, so an async streaming parser would add a runtime for nothing. It is
//! bounded (at most [`MAX_PARTS`] parts, [`MAX_PART_HEAD`] bytes of headers each) and returns
//! typed errors for anything malformed; it never panics and never copies a part's data.

use std::fmt;

/// The most parts a form may have.
pub(crate) const MAX_PARTS: usize = 32;
/// The largest header block of one part.
pub(crate) const MAX_PART_HEAD: usize = 8 * 1024;
/// The longest boundary RFC 2046 allows.
const MAX_BOUNDARY: usize = 70;

/// One part of a multipart form.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Part<'a> {
    /// `Content-Disposition: form-data; name="…"`.
    pub(crate) name: String,
    /// The part's data, as sent.
    pub(crate) data: &'a [u8],
}

/// Why a form does not parse.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum FormError {
    /// `multipart/form-data` without a usable `boundary` parameter.
    Boundary,
    /// The body does not start with the boundary's delimiter, or is not terminated by the
    /// close delimiter.
    Framing,
    /// More than [`MAX_PARTS`] parts.
    TooManyParts,
    /// A part's headers are malformed, too long, or name no field.
    PartHead,
    /// A urlencoded form that is not UTF-8 or has a bad escape.
    Encoding,
}

impl fmt::Display for FormError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            FormError::Boundary => {
                "multipart/form-data needs a boundary parameter of 1 to 70 characters"
            }
            FormError::Framing => "the multipart body is not framed by its boundary",
            FormError::TooManyParts => "the form has too many parts",
            FormError::PartHead => {
                "a multipart part has malformed headers or no Content-Disposition name"
            }
            FormError::Encoding => "the form is not valid urlencoded UTF-8",
        })
    }
}

/// The media type of a `Content-Type` value, lowercased, without parameters.
pub(crate) fn essence(content_type: &str) -> String {
    content_type
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase()
}

/// The value of parameter `name` of a header value like `form-data; name="x"` (quotes
/// removed, `\"` unescaped).
fn parameter(value: &str, name: &str) -> Option<String> {
    let mut rest = value.split_once(';')?.1;
    loop {
        let (key, after) = rest.split_once('=')?;
        let key = key.trim();
        let after = after.trim_start();
        let (val, next) = if let Some(quoted) = after.strip_prefix('"') {
            // Up to the first unescaped quote.
            let mut out = String::new();
            let mut chars = quoted.char_indices();
            let mut end = None;
            while let Some((i, c)) = chars.next() {
                match c {
                    '\\' => {
                        if let Some((_, e)) = chars.next() {
                            out.push(e);
                        }
                    }
                    '"' => {
                        end = Some(i);
                        break;
                    }
                    c => out.push(c),
                }
            }
            let end = end?;
            let tail = &quoted[end + 1..];
            let next = tail.split_once(';').map(|(_, n)| n);
            (out, next)
        } else {
            match after.split_once(';') {
                Some((v, n)) => (v.trim().to_owned(), Some(n)),
                None => (after.trim().to_owned(), None),
            }
        };
        if key.eq_ignore_ascii_case(name) {
            return Some(val);
        }
        rest = next?;
    }
}

/// The boundary of a `multipart/form-data` content type.
pub(crate) fn boundary(content_type: &str) -> Result<String, FormError> {
    let b = parameter(content_type, "boundary").ok_or(FormError::Boundary)?;
    if b.is_empty() || b.len() > MAX_BOUNDARY || b.chars().any(|c| !c.is_ascii() || c.is_control())
    {
        return Err(FormError::Boundary);
    }
    Ok(b)
}

/// The first index of `needle` in `hay` at or after `from`.
fn find(hay: &[u8], needle: &[u8], from: usize) -> Option<usize> {
    let first = *needle.first()?;
    let mut at = from;
    while at + needle.len() <= hay.len() {
        let offset = hay[at..].iter().position(|&b| b == first)?;
        at += offset;
        if hay.get(at..at + needle.len())? == needle {
            return Some(at);
        }
        at += 1;
    }
    None
}

/// Parses a multipart body delimited by `boundary` into its parts, in order.
pub(crate) fn parse<'a>(body: &'a [u8], boundary: &str) -> Result<Vec<Part<'a>>, FormError> {
    let dash = format!("--{boundary}");
    let delimiter = format!("\r\n--{boundary}");
    // The first delimiter opens the body, or follows a preamble and CRLF.
    let mut at = if body.starts_with(dash.as_bytes()) {
        0
    } else {
        find(body, delimiter.as_bytes(), 0).ok_or(FormError::Framing)? + 2
    };
    let mut parts = Vec::new();
    loop {
        // `at` is at a delimiter line: `--boundary`, then `--` (the end) or CRLF.
        let mut p = at + dash.len();
        if body.get(p..p + 2) == Some(b"--") {
            return Ok(parts);
        }
        // Transport padding (RFC 2046) before the CRLF.
        while matches!(body.get(p), Some(b' ' | b'\t')) {
            p += 1;
        }
        if body.get(p..p + 2) != Some(b"\r\n") {
            return Err(FormError::Framing);
        }
        p += 2;
        if parts.len() == MAX_PARTS {
            return Err(FormError::TooManyParts);
        }
        // Headers up to an empty line; a part without headers starts with CRLF directly.
        let (head, data_start) = if body.get(p..p + 2) == Some(b"\r\n") {
            (&body[p..p], p + 2)
        } else {
            let window = &body[p..body.len().min(p + MAX_PART_HEAD + 4)];
            let end = find(window, b"\r\n\r\n", 0).ok_or(FormError::PartHead)?;
            (&body[p..p + end], p + end + 4)
        };
        let name = part_name(head)?;
        let next = find(body, delimiter.as_bytes(), data_start).ok_or(FormError::Framing)?;
        parts.push(Part {
            name,
            data: &body[data_start..next],
        });
        at = next + 2;
    }
}

/// The field name of a part, from its `Content-Disposition: form-data; name="…"`.
fn part_name(head: &[u8]) -> Result<String, FormError> {
    let head = std::str::from_utf8(head).map_err(|_| FormError::PartHead)?;
    for line in head.split("\r\n") {
        let (key, value) = line.split_once(':').ok_or(FormError::PartHead)?;
        if key.trim().eq_ignore_ascii_case("content-disposition") {
            if !essence(value).eq_ignore_ascii_case("form-data") {
                return Err(FormError::PartHead);
            }
            return parameter(value, "name")
                .filter(|n| !n.is_empty())
                .ok_or(FormError::PartHead);
        }
    }
    Err(FormError::PartHead)
}

/// Parses an `application/x-www-form-urlencoded` body into decoded pairs.
pub(crate) fn urlencoded(body: &[u8]) -> Result<Vec<(String, String)>, FormError> {
    let text = std::str::from_utf8(body).map_err(|_| FormError::Encoding)?;
    crate::http::parse_query(text.trim()).ok_or(FormError::Encoding)
}

/// The value of text field `name` as far as it can be seen in the first bytes of a
/// multipart body (to classify a request before reading it whole): the part's data up to
/// the next CRLF, if the part and that CRLF are within `start`.
pub(crate) fn peek_field(start: &[u8], name: &str) -> Option<String> {
    let quoted = format!("name=\"{name}\"");
    let at = find(start, quoted.as_bytes(), 0)?;
    let data = find(start, b"\r\n\r\n", at)? + 4;
    let end = find(start, b"\r\n", data)?;
    let value = std::str::from_utf8(&start[data..end]).ok()?;
    (value.len() <= 128).then(|| value.trim().to_owned())
}

/// The value of field `name` in the first bytes of a urlencoded body: only pairs followed by
/// `&` count unless `complete` (a cut pair could be a prefix of the real value).
pub(crate) fn peek_urlencoded(start: &[u8], complete: bool, name: &str) -> Option<String> {
    let text = std::str::from_utf8(start).ok()?;
    let text = if complete {
        text
    } else {
        &text[..text.rfind('&')?]
    };
    crate::http::parse_query(text.trim())?
        .into_iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v)
}

#[cfg(test)]
mod tests {
    use super::*;

    const BODY: &[u8] = b"preamble\r\n--XyZ\r\nContent-Disposition: form-data; name=\"command\"\r\n\r\nAPPEND\r\n--XyZ  \r\nContent-Disposition: form-data; name=\"media\"; filename=\"blob\"\r\nContent-Type: application/octet-stream\r\n\r\n\r\n--Xy\x00\r\n--XyZ--\r\nepilogue";

    #[test]
    fn parses_parts_with_binary_data() {
        let parts = parse(BODY, "XyZ").unwrap();
        assert_eq!(parts.len(), 2);
        assert_eq!(parts[0].name, "command");
        assert_eq!(parts[0].data, b"APPEND");
        assert_eq!(parts[1].name, "media");
        assert_eq!(parts[1].data, b"\r\n--Xy\x00");
        assert_eq!(peek_field(BODY, "command").as_deref(), Some("APPEND"));
        assert_eq!(peek_field(&BODY[..60], "command"), None);
    }

    #[test]
    fn boundaries_and_parameters() {
        assert_eq!(
            boundary("multipart/form-data; boundary=abc").as_deref(),
            Ok("abc")
        );
        assert_eq!(
            boundary("multipart/form-data; charset=x; boundary=\"a b;c\"").as_deref(),
            Ok("a b;c")
        );
        assert_eq!(boundary("multipart/form-data"), Err(FormError::Boundary));
        assert_eq!(
            boundary(&format!("multipart/form-data; boundary={}", "a".repeat(71))),
            Err(FormError::Boundary)
        );
        assert_eq!(
            parameter("form-data; name=\"a\\\"b\"; filename=f", "filename").as_deref(),
            Some("f")
        );
        assert_eq!(
            essence(" Multipart/Form-Data ; boundary=x"),
            "multipart/form-data"
        );
    }

    #[test]
    fn malformed_bodies_are_typed_errors() {
        let cases: &[(&[u8], FormError)] = &[
            (b"", FormError::Framing),
            (b"--XyZ", FormError::Framing),
            (
                b"--XyZ\r\nContent-Disposition: form-data; name=\"a\"\r\n\r\nno end",
                FormError::Framing,
            ),
            (b"--XyZ\r\nX: y\r\n\r\nv\r\n--XyZ--", FormError::PartHead),
            (
                b"--XyZ\r\nContent-Disposition: attachment; name=\"a\"\r\n\r\nv\r\n--XyZ--",
                FormError::PartHead,
            ),
            (
                b"--XyZ\r\nContent-Disposition: form-data\r\n\r\nv\r\n--XyZ--",
                FormError::PartHead,
            ),
            (
                b"--XyZ\r\nno colon\r\n\r\nv\r\n--XyZ--",
                FormError::PartHead,
            ),
            (
                b"--XyZ\r\nContent-Disposition: form-data; name=\"a\"",
                FormError::PartHead,
            ),
            (b"--XyZjunk", FormError::Framing),
        ];
        for (body, want) in cases {
            assert_eq!(
                parse(body, "XyZ"),
                Err(*want),
                "{:?}",
                String::from_utf8_lossy(body)
            );
        }
        let many: Vec<u8> = (0..=MAX_PARTS)
            .flat_map(|i| {
                format!("--b\r\nContent-Disposition: form-data; name=\"f{i}\"\r\n\r\nv\r\n")
                    .into_bytes()
            })
            .chain(b"--b--".iter().copied())
            .collect();
        assert_eq!(parse(&many, "b"), Err(FormError::TooManyParts));
        assert_eq!(
            parse(b"--b\r\n\r\nv\r\n--b--", "b"),
            Err(FormError::PartHead)
        );
    }

    #[test]
    fn urlencoded_forms() {
        assert_eq!(
            urlencoded(b"command=INIT&media_type=video%2Fmp4&x=a+b").unwrap(),
            vec![
                ("command".to_owned(), "INIT".to_owned()),
                ("media_type".to_owned(), "video/mp4".to_owned()),
                ("x".to_owned(), "a b".to_owned()),
            ]
        );
        assert_eq!(urlencoded(b"a=%zz"), Err(FormError::Encoding));
        assert_eq!(urlencoded(b"a=\xff"), Err(FormError::Encoding));
        assert_eq!(
            peek_urlencoded(b"command=FINALIZE&media_id=12", false, "command").as_deref(),
            Some("FINALIZE")
        );
        assert_eq!(
            peek_urlencoded(b"command=FINALIZE&media_id=12", false, "media_id"),
            None
        );
        assert_eq!(
            peek_urlencoded(b"command=FINALIZE&media_id=12", true, "media_id").as_deref(),
            Some("12")
        );
    }
}
