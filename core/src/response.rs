//! Reading parts of responses that every protocol needs: `Location`, the server's own error
//! message, JSON bodies. Nothing here panics or trusts the server.

use http::{HeaderMap, Uri};

use crate::error::ProtocolViolation;

/// Bodies larger than this are not parsed (drivers should cap what they read at about this).
pub const MAX_PARSED_BODY: usize = 1 << 20;

/// Resolves a `Location` header against the URI of the request it answered (a relative path,
/// as TON sends, keeps the request's scheme and authority). Must yield absolute http(s).
///
/// # Errors
/// [`ProtocolViolation::MissingLocation`] when absent, repeated, not text, or not usable.
pub fn location(headers: &HeaderMap, base: &Uri) -> Result<Uri, ProtocolViolation> {
    let mut values = headers.get_all(http::header::LOCATION).iter();
    let value = values.next().ok_or(ProtocolViolation::MissingLocation)?;
    if values.next().is_some() {
        return Err(ProtocolViolation::MissingLocation);
    }
    let text = value
        .to_str()
        .map_err(|_| ProtocolViolation::MissingLocation)?
        .trim();
    if text.is_empty() {
        return Err(ProtocolViolation::MissingLocation);
    }
    let uri: Uri = text
        .parse()
        .map_err(|_| ProtocolViolation::MissingLocation)?;
    let resolved = if uri.scheme().is_some() {
        uri
    } else if text.starts_with('/') && !text.starts_with("//") {
        let mut parts = http::uri::Parts::default();
        parts.scheme = base.scheme().cloned();
        parts.authority = base.authority().cloned();
        parts.path_and_query = uri.path_and_query().cloned();
        Uri::from_parts(parts).map_err(|_| ProtocolViolation::MissingLocation)?
    } else {
        return Err(ProtocolViolation::MissingLocation);
    };
    crate::secret::check_absolute_http(&resolved, "Location")
        .map_err(|_| ProtocolViolation::MissingLocation)?;
    Ok(resolved)
}

/// Parses a JSON body, if it is small enough and is JSON.
pub fn json(body: &[u8]) -> Option<serde_json::Value> {
    if body.is_empty() || body.len() > MAX_PARSED_BODY {
        return None;
    }
    serde_json::from_slice(body).ok()
}

/// The server's own error message from a body, in any of the shapes the protocols use: GCS
/// JSON `{"error":{"message"}}`, Twitter `{"errors":[{"message"}]}` and `{"error":"..."}`,
/// RFC 7807 `{"detail"}`/`{"title"}`, GCS XML `<Message>`, or short plain text. Trimmed to
/// 200 characters with control characters removed.
pub fn server_message(body: &[u8]) -> Option<String> {
    let raw = if let Some(v) = json(body) {
        let pick = |v: &serde_json::Value| v.as_str().map(str::to_owned);
        pick(&v["error"]["message"])
            .or_else(|| pick(&v["errors"][0]["message"]))
            .or_else(|| pick(&v["detail"]))
            .or_else(|| pick(&v["title"]))
            .or_else(|| pick(&v["error"]))
    } else {
        let text = std::str::from_utf8(body.get(..body.len().min(4096))?).ok()?;
        if let Some(start) = text.find("<Message>") {
            let rest = &text[start + "<Message>".len()..];
            rest.find("</Message>").map(|end| rest[..end].to_owned())
        } else if !text.trim_start().starts_with('<') {
            text.lines().next().map(str::to_owned)
        } else {
            None
        }
    }?;
    let clean: String = raw.chars().filter(|c| !c.is_control()).take(200).collect();
    let clean = clean.trim().to_owned();
    (!clean.is_empty()).then_some(clean)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(loc: &[&str]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for l in loc {
            h.append("location", l.parse().unwrap());
        }
        h
    }

    #[test]
    fn location_absolute_and_relative_g1_t3() {
        let base: Uri = "https://ton.twitter.com/1.1/ton/bucket/b?resumable=true"
            .parse()
            .unwrap();
        let abs = location(&headers(&["https://x.example/s?id=1"]), &base).unwrap();
        assert_eq!(abs, "https://x.example/s?id=1");
        let rel = location(&headers(&["/1.1/ton/bucket/b/f.mp4?resumeId=2"]), &base).unwrap();
        assert_eq!(
            rel,
            "https://ton.twitter.com/1.1/ton/bucket/b/f.mp4?resumeId=2"
        );
    }

    #[test]
    fn location_missing_or_unusable_is_a_violation() {
        let base: Uri = "https://h.example/x".parse().unwrap();
        for bad in [
            &[][..],
            &["relative/path"],
            &["ftp://h/x"],
            &["//h/x"],
            &["a", "b"],
        ] {
            assert_eq!(
                location(&headers(bad), &base),
                Err(ProtocolViolation::MissingLocation),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn server_messages_in_every_shape() {
        let cases: [(&[u8], &str); 6] = [
            (
                br#"{"error":{"code":400,"message":"Bad chunk"}}"#,
                "Bad chunk",
            ),
            (
                br#"{"errors":[{"code":324,"message":"Bad media"}]}"#,
                "Bad media",
            ),
            (
                br#"{"title":"Invalid","detail":"too big","status":400}"#,
                "too big",
            ),
            (
                br#"{"request":"/1.1/x","error":"Segment missing"}"#,
                "Segment missing",
            ),
            (
                b"<Error><Code>X</Code><Message>Nope</Message></Error>",
                "Nope",
            ),
            (b"plain words\nsecond line", "plain words"),
        ];
        for (body, want) in cases {
            assert_eq!(server_message(body).as_deref(), Some(want));
        }
        assert_eq!(server_message(b""), None);
        assert_eq!(server_message(b"\x00\x01"), None);
    }
}
