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
