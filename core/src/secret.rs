//! Values that are bearer capabilities or credentials, and the redacting views used by every
//! `Debug` in this crate.

use std::fmt;

use http::{HeaderMap, Uri};

/// The URI of an upload session (GCS session URI, TON resume location).
///
/// Whoever holds it can write to the upload, so it is a secret: `Debug` and `Display` never
/// show it. Call [`SessionUri::expose`] only to send a request or to save resume state.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct SessionUri(Uri);

impl SessionUri {
    /// Wraps an absolute `http`/`https` URI.
    ///
    /// # Errors
    /// [`crate::UsageError::InvalidInput`] when the URI is not absolute http(s).
    pub fn new(uri: Uri) -> Result<Self, crate::UsageError> {
        check_absolute_http(&uri, "session URI")?;
        Ok(SessionUri(uri))
    }

    /// Parses a session URI from text (for example from a saved state).
    ///
    /// # Errors
    /// [`crate::UsageError::InvalidInput`] when it is not an absolute http(s) URI.
    pub fn parse(text: &str) -> Result<Self, crate::UsageError> {
        let uri = text
            .parse::<Uri>()
            .map_err(|_| crate::UsageError::InvalidInput {
                what: "session URI",
                why: "not a valid URI",
            })?;
        Self::new(uri)
    }

    /// The URI itself. It is a bearer capability: do not log it.
    pub fn expose(&self) -> &Uri {
        &self.0
    }
}

impl fmt::Debug for SessionUri {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SessionUri(<redacted>)")
    }
}

impl fmt::Display for SessionUri {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted session URI>")
    }
}

#[cfg(feature = "serde")]
impl serde::Serialize for SessionUri {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0.to_string())
    }
}

#[cfg(feature = "serde")]
impl<'de> serde::Deserialize<'de> for SessionUri {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        SessionUri::parse(&text).map_err(serde::de::Error::custom)
    }
}

/// Fails unless `uri` is an absolute `http` or `https` URI.
pub(crate) fn check_absolute_http(uri: &Uri, what: &'static str) -> Result<(), crate::UsageError> {
    let scheme_ok = matches!(uri.scheme_str(), Some("http" | "https"));
    if !scheme_ok || uri.authority().is_none() {
        return Err(crate::UsageError::InvalidInput {
            what,
            why: "must be an absolute http:// or https:// URL",
        });
    }
    Ok(())
}

/// Shows a URI without its query string (which may hold a signature or upload id).
pub struct RedactedUri<'a>(pub &'a Uri);

impl fmt::Debug for RedactedUri<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl fmt::Display for RedactedUri<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(scheme) = self.0.scheme_str() {
            write!(f, "{scheme}://")?;
        }
        if let Some(authority) = self.0.authority() {
            // user:password@ never shown.
            write!(f, "{}", authority.host())?;
            if let Some(port) = authority.port_u16() {
                write!(f, ":{port}")?;
            }
        }
        f.write_str(self.0.path())?;
        if self.0.query().is_some() {
            f.write_str("?<redacted>")?;
        }
        Ok(())
    }
}

/// Shows a URI for a log line: as [`RedactedUri`], but with the query's parameter names, and
/// values only of the protocols' own bookkeeping parameters (`uploadType`, `name`, `command`,
/// …): a signature, an upload id or a token is never shown.
pub struct LoggedUri<'a>(pub &'a Uri);

impl fmt::Display for LoggedUri<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let Some(query) = self.0.query() else {
            return RedactedUri(self.0).fmt(f);
        };
        let without_query = match self.0.path_and_query() {
            Some(_) => {
                let mut parts = self.0.clone().into_parts();
                parts.path_and_query = self.0.path().parse().ok();
                Uri::from_parts(parts).ok()
            }
            None => None,
        };
        match &without_query {
            Some(uri) => RedactedUri(uri).fmt(f)?,
            None => f.write_str("<redacted>")?,
        }
        for (i, pair) in query.split('&').enumerate() {
            f.write_str(if i == 0 { "?" } else { "&" })?;
            match pair.split_once('=') {
                Some((name, value)) if SHOWN_QUERY.contains(&name) => {
                    write!(f, "{name}={value}")?;
                }
                Some((name, _)) if name.len() <= 64 && name.bytes().all(is_name_byte) => {
                    write!(f, "{name}=<redacted>")?;
                }
                _ => f.write_str("<redacted>")?,
            }
        }
        Ok(())
    }
}

/// Query parameters whose values are the protocols' own bookkeeping, safe to show.
const SHOWN_QUERY: &[&str] = &[
    "uploadType",
    "name",
    "alt",
    "command",
    "segment_index",
    "media_id",
    "media_category",
    "media_type",
    "total_bytes",
    "resumable",
    "partNumber",
    "uploads",
];

fn is_name_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.')
}

/// Headers whose values are protocol bookkeeping, safe to show in `Debug`.
const SHOWN_HEADERS: &[&str] = &[
    "content-length",
    "content-range",
    "content-type",
    "range",
    "x-goog-resumable",
    "x-goog-hash",
    "x-upload-content-type",
    "x-upload-content-length",
    "x-ton-content-type",
    "x-ton-content-length",
    "x-ton-expires",
    "x-ton-min-chunk-size",
    "x-ton-max-chunk-size",
    "x-goog-stored-content-length",
    "x-goog-generation",
    "x-http-status-code-override",
    "retry-after",
    "x-rate-limit-limit",
    "x-rate-limit-remaining",
    "x-rate-limit-reset",
    "date",
    "expires",
    "etag",
    "upload-offset",
    "upload-length",
    "upload-complete",
    "upload-limit",
    "tus-resumable",
];

/// Shows header names, and values only for the protocol's own bookkeeping headers.
pub struct RedactedHeaders<'a>(pub &'a HeaderMap);

impl fmt::Debug for RedactedHeaders<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut map = f.debug_map();
        for (name, value) in self.0 {
            if SHOWN_HEADERS.contains(&name.as_str()) && !value.is_sensitive() {
                map.entry(&name.as_str(), &value.to_str().unwrap_or("<binary>"));
            } else {
                map.entry(&name.as_str(), &"<redacted>");
            }
        }
        map.finish()
    }
}

/// Headers for a log line, `name: value; …`: values of the protocols' bookkeeping headers,
/// `Location` without its secrets (see [`LoggedUri`]), everything else (credentials, cookies,
/// values marked sensitive) as `<redacted>`.
pub struct LoggedHeaders<'a>(pub &'a HeaderMap);

impl fmt::Display for LoggedHeaders<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, (name, value)) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("; ")?;
            }
            let text = value.to_str().ok().filter(|_| !value.is_sensitive());
            match (name.as_str(), text) {
                (shown, Some(v)) if SHOWN_HEADERS.contains(&shown) => write!(f, "{shown}: {v}")?,
                ("location", Some(v)) => match v.parse::<Uri>() {
                    Ok(uri) => write!(f, "location: {}", LoggedUri(&uri))?,
                    Err(_) => f.write_str("location: <redacted>")?,
                },
                (other, _) => write!(f, "{other}: <redacted>")?,
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn session_uri_debug_and_display_hide_everything() {
        let s = SessionUri::parse("https://storage.example/upload?upload_id=SECRET123").unwrap();
        assert!(!format!("{s:?}").contains("SECRET123"));
        assert!(!format!("{s}").contains("SECRET123"));
        assert!(!format!("{s:?}").contains("storage.example"));
    }

    #[test]
    fn redacted_uri_drops_query_and_userinfo() {
        let uri: Uri = "https://user:pw@host.example:8443/a/b?sig=SECRET"
            .parse()
            .unwrap();
        let shown = RedactedUri(&uri).to_string();
        assert_eq!(shown, "https://host.example:8443/a/b?<redacted>");
    }

    #[test]
    fn logged_uri_shows_parameter_names_and_only_bookkeeping_values() {
        let uri: Uri = "https://u:pw@h.example/upload?uploadType=resumable&upload_id=SECRET&%41=B"
            .parse()
            .unwrap();
        let shown = LoggedUri(&uri).to_string();
        assert_eq!(
            shown,
            "https://h.example/upload?uploadType=resumable&upload_id=<redacted>&<redacted>"
        );
    }

    #[test]
    fn logged_headers_show_bookkeeping_and_hide_credentials_and_session_uris() {
        let mut h = HeaderMap::new();
        h.insert("authorization", "Bearer SECRET".parse().unwrap());
        h.insert("range", "bytes=0-9".parse().unwrap());
        h.insert(
            "location",
            "https://s.example/up?upload_id=SECRET2".parse().unwrap(),
        );
        let mut marked: http::HeaderValue = "bytes 0-1/2".parse().unwrap();
        marked.set_sensitive(true);
        h.insert("content-range", marked);
        let shown = LoggedHeaders(&h).to_string();
        assert!(!shown.contains("SECRET"), "{shown}");
        assert!(shown.contains("range: bytes=0-9"), "{shown}");
        assert!(
            shown.contains("location: https://s.example/up?upload_id=<redacted>"),
            "{shown}"
        );
        assert!(shown.contains("content-range: <redacted>"), "{shown}");
        assert!(shown.contains("authorization: <redacted>"), "{shown}");
    }

    #[test]
    fn redacted_headers_hide_authorization() {
        let mut h = HeaderMap::new();
        h.insert("authorization", "Bearer SECRET".parse().unwrap());
        h.insert("content-range", "bytes 0-1/2".parse().unwrap());
        let shown = format!("{:?}", RedactedHeaders(&h));
        assert!(!shown.contains("SECRET"));
        assert!(shown.contains("bytes 0-1/2"));
    }

    #[test]
    fn session_uri_rejects_relative_and_non_http() {
        assert!(SessionUri::parse("/relative/path").is_err());
        assert!(SessionUri::parse("ftp://host/x").is_err());
    }
}
