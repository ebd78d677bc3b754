//! Reading parts of responses that every protocol needs: `Location`, the server's own error
//! message, JSON bodies. Nothing here panics or trusts the server.

use http::{HeaderMap, StatusCode, Uri};
use serde_json::Value;

use crate::error::{Error, ProtocolViolation};

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
    clean_text(&raw, 200)
}

/// A status that ends an upload: the server refused (4xx/5xx), with its own message, or
/// answered with a status the protocol has no place for (1xx, an unexpected 2xx or 3xx).
pub(crate) fn final_error(status: StatusCode, body: &[u8]) -> Error {
    if status.is_client_error() || status.is_server_error() {
        Error::Server {
            status,
            message: server_message(body),
        }
    } else {
        ProtocolViolation::UnexpectedStatus(status).into()
    }
}

/// The error a refusing answer of the Twitter/X API ends a flow with (media M5, compliance):
/// [`Error::Api`] when the body has one of the API's error shapes, else [`final_error`] (GCS
/// XML on an upload URL, a proxy's page).
pub(crate) fn refusal(status: StatusCode, body: &[u8]) -> Error {
    api_error(status, body).unwrap_or_else(|| final_error(status, body))
}

/// [`Error::Api`] when `body` has one of the Twitter/X API's error shapes, whatever the status
/// (a 2xx may carry only `errors`): v1.1 `{"errors":[{code,message}]}` or `{"request","error"}`,
/// v2 RFC 7807 `{type,title,detail,status}`.
pub(crate) fn api_error(status: StatusCode, body: &[u8]) -> Option<Error> {
    let v = json(body)?;
    let first = v.get("errors").and_then(|e| e.get(0));
    let problem = v
        .get("type")
        .and_then(Value::as_str)
        .and_then(|t| clean_text(t, 200));
    let shaped = first.is_some()
        || v.get("error").is_some()
        || problem.is_some()
        || v.get("title").is_some()
        || v.get("detail").is_some();
    shaped.then(|| Error::Api {
        status,
        code: first.and_then(|e| e.get("code")).and_then(Value::as_i64),
        problem,
        message: server_message(body),
    })
}

/// Text from a server, made fit for an error: control characters removed, credentials
/// [redacted](redact), cut to `max` characters and trimmed; `None` when nothing is left.
pub(crate) fn clean_text(raw: &str, max: usize) -> Option<String> {
    let printable: String = raw.chars().filter(|c| !c.is_control()).collect();
    let clean: String = redact(&printable).chars().take(max).collect();
    let clean = clean.trim();
    (!clean.is_empty()).then(|| clean.to_owned())
}

/// Query parameters (and form or header parameters) whose values are credentials or bearer
/// capabilities: GCS session ids and signed-URL signatures, TON resume ids, S3 presigned
/// signatures, OAuth tokens and signatures, API keys. Compared in lower case.
const SECRET_PARAMS: &[&str] = &[
    "upload_id",
    "resumeid",
    "x-goog-signature",
    "x-goog-credential",
    "googleaccessid",
    "signature",
    "x-amz-signature",
    "x-amz-credential",
    "x-amz-security-token",
    "access_token",
    "oauth_token",
    "oauth_signature",
    "token",
    "key",
    "sig",
];

/// Words after which a credential follows (`Authorization` schemes).
const AUTH_SCHEMES: &[&str] = &["bearer", "basic"];

const REDACTED: &str = "<redacted>";

/// Removes what a server may echo back of a request's secrets from its error text: the query
/// (and userinfo) of every URL, the value of every [credential parameter](SECRET_PARAMS), and
/// the token after `Bearer` or `Basic`. The core's requests carry session URIs, signed URLs
/// and `Authorization` headers, and some servers quote the request in their error message.
pub(crate) fn redact(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut after_scheme = false;
    // Tokens split at whitespace, which is kept as it was.
    for (i, token) in text.split(' ').enumerate() {
        if i > 0 {
            out.push(' ');
        }
        if token.is_empty() {
            continue;
        }
        if after_scheme {
            out.push_str(REDACTED);
            after_scheme = false;
            continue;
        }
        let word = token.trim_matches(|c: char| !c.is_ascii_alphanumeric());
        after_scheme = AUTH_SCHEMES.iter().any(|s| word.eq_ignore_ascii_case(s));
        match token.find("://") {
            Some(at) => out.push_str(&redact_url(token, at)),
            None => out.push_str(&redact_params(token)),
        }
    }
    out
}

/// A token holding a URL (`at` is where its `://` is): scheme, host and path are kept, the
/// userinfo, query and fragment are not.
fn redact_url(token: &str, at: usize) -> String {
    let (scheme, rest) = token.split_at(at + 3);
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (authority, rest) = rest.split_at(authority_end);
    let host = authority
        .rsplit_once('@')
        .map_or(authority, |(_, host)| host);
    let mut url = format!("{}{host}", redact_params(scheme));
    match rest.find(['?', '#']) {
        Some(cut) => {
            url.push_str(&rest[..cut]);
            url.push('?');
            url.push_str(REDACTED);
        }
        None => url.push_str(rest),
    }
    url
}

/// A token with the value of every credential parameter (`name=value`, the value ending at
/// `&`, `,`, `;` or a quote) replaced.
fn redact_params(token: &str) -> String {
    let lower = token.to_ascii_lowercase();
    let mut out = String::with_capacity(token.len());
    let mut copied = 0;
    let mut search = 0;
    while let Some(found) = lower[search..].find('=') {
        let eq = search + found;
        let name_start = lower[..eq]
            .char_indices()
            .rev()
            .find(|&(_, c)| !(c.is_ascii_alphanumeric() || c == '_' || c == '-'))
            .map_or(0, |(p, c)| p + c.len_utf8());
        let value_start = eq + 1;
        let quoted = lower[value_start..].starts_with('"');
        let value_from = value_start + usize::from(quoted);
        let value_end = lower[value_from..]
            .find(['&', ',', ';', '"', '\''])
            .map_or(lower.len(), |p| value_from + p);
        if SECRET_PARAMS.contains(&&lower[name_start..eq]) && value_end > value_from {
            out.push_str(&token[copied..value_from]);
            out.push_str(REDACTED);
            copied = value_end;
        }
        search = value_end.max(value_start);
    }
    out.push_str(&token[copied..]);
    out
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

    // Servers that quote the request in their error text must not put its secrets into our
    // errors: URL queries and userinfo, credential parameters, and Authorization tokens go.
    #[test]
    fn server_text_loses_the_secrets_it_echoes() {
        let cases = [
            (
                "Invalid request https://storage.example/upload/o?uploadType=resumable&upload_id=SEKRIT.",
                "Invalid request https://storage.example/upload/o?<redacted>",
            ),
            (
                "bad url http://user:SEKRIT@host.example:9000/b/o#frag",
                "bad url http://host.example:9000/b/o?<redacted>",
            ),
            (
                "header was Authorization: Bearer SEKRIT, which expired",
                "header was Authorization: Bearer <redacted> which expired",
            ),
            ("basic   SEKRIT", "basic   <redacted>"),
            (
                r#"OAuth oauth_consumer_key="ck", oauth_token="SEKRIT", oauth_signature="SEKRIT%3D""#,
                r#"OAuth oauth_consumer_key="ck", oauth_token="<redacted>", oauth_signature="<redacted>""#,
            ),
            (
                "upload_id=SEKRIT&name=o; X-Goog-Signature=SEKRIT",
                "upload_id=<redacted>&name=o; X-Goog-Signature=<redacted>",
            ),
            ("keyed=1 monkey=2 é=3 token=", "keyed=1 monkey=2 é=3 token="),
            ("Forbidden", "Forbidden"),
        ];
        for (text, want) in cases {
            assert_eq!(redact(text), want, "{text}");
            assert!(!redact(text).contains("SEKRIT"));
        }
        // Through the message extraction, JSON and plain text alike.
        let body = br#"{"error":{"message":"No session https://s.example/u?upload_id=SEKRIT"}}"#;
        assert_eq!(
            server_message(body).as_deref(),
            Some("No session https://s.example/u?<redacted>")
        );
        // Any text at all: no panic on multi-byte characters next to the delimiters.
        for text in [
            "é=é",
            "=é",
            "ü://",
            "a://é?é",
            "Bearer",
            "x=\"",
            "é\u{2028}=\"é",
        ] {
            let _ = redact(text);
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

    // M5 (media) and compliance: the API's error shapes become Error::Api, other refusals
    // Error::Server, and statuses the protocol has no place for a violation.
    #[test]
    fn error_shapes_m5() {
        let s = StatusCode::BAD_REQUEST;
        let e = refusal(s, br#"{"errors":[{"code":324,"message":"Bad media"}]}"#);
        assert_eq!(
            e,
            Error::Api {
                status: s,
                code: Some(324),
                problem: None,
                message: Some("Bad media".into())
            }
        );
        let e = refusal(
            s,
            br#"{"request":"/1.1/media/upload.json","error":"Segments"}"#,
        );
        assert!(matches!(e, Error::Api { code: None, message: Some(m), .. } if m == "Segments"));
        assert!(matches!(refusal(s, b"<html>"), Error::Server { .. }));
        assert!(matches!(
            refusal(StatusCode::FOUND, b""),
            Error::Protocol(ProtocolViolation::UnexpectedStatus(_))
        ));
    }
}
