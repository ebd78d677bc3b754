//! Which requests a signer may touch: [`SignScope`].
//!
//! Credentials go only to requests the caller marked as API requests, by origin and path
//! prefix ([`ApiPrefix`]). Two kinds of URI are never signed, whatever the prefixes say:
//!
//! - **capability URLs**, whose query makes them bearer capabilities of their own: GCS signed
//!   URLs (`X-Goog-Signature`, `X-Goog-Credential`, `GoogleAccessId`; G1, C2, C3's
//!   `download_url`), GCS session URIs (`upload_id`; G3–G10) and S3-style presigned URLs
//!   (`X-Amz-Signature`, `X-Amz-Credential`). A signed URL signs its headers: an added
//!   `Authorization` breaks it (G1), and would hand Twitter credentials to a storage host;
//! - **URIs the caller excluded** with [`SignScope::exclude`] (a [`SessionUri`] it holds) or
//!   [`SignScope::exclude_uri`] (for example a compliance job's `upload_url`).
//!
//! TON resume locations (`…?resumable=true&resumeId=N`, T3) are on the API host and the TON
//! documentation signs every chunk with OAuth 1.0a: they are API requests, in scope when the
//! TON origin is.

use std::fmt;

use http::Uri;
use resumable_core::SessionUri;

/// Query parameters (compared case-insensitively, after decoding) that make a URI a bearer
/// capability which must never carry an `Authorization` header.
const CAPABILITY_PARAMETERS: &[&str] = &[
    "x-goog-signature",
    "x-goog-credential",
    "googleaccessid",
    "upload_id",
    "x-amz-signature",
    "x-amz-credential",
];

/// Why [`ApiPrefix::parse`] refused a prefix. The prefix itself is not repeated.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ScopeError {
    /// The text is not an absolute `http://` or `https://` URL with a host, or it carries user
    /// information, a query or a fragment.
    #[error("invalid API prefix: {why}")]
    InvalidPrefix {
        /// What is wrong with it.
        why: &'static str,
    },
}

/// An origin (scheme, host, port) and path prefix whose requests are API requests, to be
/// signed. Build with [`ApiPrefix::parse`], add to a scope with [`SignScope::allow_prefix`].
#[derive(Clone, PartialEq, Eq)]
pub struct ApiPrefix {
    https: bool,
    host: String,
    port: u16,
    path: String,
}

impl ApiPrefix {
    /// Parses `https://host[:port][/path]` (or `http://` — a local test server). Host and
    /// scheme are compared case-insensitively and the default port may be left out; a request
    /// is covered when its path starts with `path` at a segment boundary (`/2` covers `/2` and
    /// `/2/compliance/jobs`, not `/20`). Without a path, the whole origin is covered.
    ///
    /// # Errors
    /// [`ScopeError::InvalidPrefix`] for anything else.
    pub fn parse(text: &str) -> Result<Self, ScopeError> {
        let invalid = |why| ScopeError::InvalidPrefix { why };
        if text.contains('#') {
            return Err(invalid("a fragment is not allowed"));
        }
        let uri: Uri = text.parse().map_err(|_| invalid("not a valid URL"))?;
        let origin = Origin::of(&uri).ok_or(invalid("must be an absolute http(s) URL"))?;
        if uri.authority().is_some_and(|a| a.as_str().contains('@')) {
            return Err(invalid("user information is not allowed"));
        }
        if uri.query().is_some() {
            return Err(invalid("a query is not allowed"));
        }
        let path = match uri.path() {
            "" => "/".to_owned(),
            path => path.to_owned(),
        };
        Ok(ApiPrefix {
            https: origin.https,
            host: origin.host,
            port: origin.port,
            path,
        })
    }

    /// Whether `uri` is under this prefix.
    pub fn covers(&self, uri: &Uri) -> bool {
        let Some(origin) = Origin::of(uri) else {
            return false;
        };
        if origin.https != self.https || origin.port != self.port || origin.host != self.host {
            return false;
        }
        let path = match uri.path() {
            "" => "/",
            path => path,
        };
        if self.path.ends_with('/') {
            path.starts_with(&self.path)
        } else {
            path == self.path
                || path
                    .strip_prefix(self.path.as_str())
                    .is_some_and(|rest| rest.starts_with('/'))
        }
    }
}

impl fmt::Display for ApiPrefix {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let scheme = if self.https { "https" } else { "http" };
        write!(f, "{scheme}://{}", self.host)?;
        if self.port != default_port(self.https) {
            write!(f, ":{}", self.port)?;
        }
        f.write_str(&self.path)
    }
}

impl fmt::Debug for ApiPrefix {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ApiPrefix({self})")
    }
}

/// What [`SignScope::decide`] says about a request URI.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Decision {
    /// An API request: sign it.
    Sign,
    /// Leave the request exactly as it is: add no credentials.
    Skip(SkipReason),
}

/// Why a request was left unsigned.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum SkipReason {
    /// The URI is a capability URL (a GCS signed URL or session URI, an S3 presigned URL): it
    /// must never carry credentials.
    CapabilityUrl,
    /// The caller excluded this URI ([`SignScope::exclude`], [`SignScope::exclude_uri`]).
    Excluded,
    /// No [`ApiPrefix`] of the scope covers the URI (or it is not an absolute http(s) URI).
    OutOfScope,
}

impl fmt::Display for SkipReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            SkipReason::CapabilityUrl => "a signed URL or session URI is never signed",
            SkipReason::Excluded => "the URI was excluded from signing",
            SkipReason::OutOfScope => "the URI is not an API request of this scope",
        })
    }
}

/// The rule saying which requests get credentials: those under one of the caller's
/// [`ApiPrefix`]es, except capability URLs and excluded URIs (see the [module docs](self)).
///
/// An empty scope ([`SignScope::new`]) signs nothing. Build the scope before driving, hand it
/// to the signer ([`crate::BearerSigner::new`], [`crate::OAuth1Signer::new`]); when a session
/// URI or signed URL becomes known mid-flow (a compliance job's `upload_url`), exclude it with
/// [`SignScope::add_exclusion`] on the signer's scope before sending to it — though capability
/// URLs are skipped anyway.
///
/// `Debug` shows the prefixes and only the number of exclusions (they are capabilities).
#[derive(Clone, Default)]
pub struct SignScope {
    allowed: Vec<ApiPrefix>,
    excluded: Vec<String>,
}

impl SignScope {
    /// A scope that signs nothing; add API prefixes with [`SignScope::allow`].
    pub fn new() -> Self {
        SignScope::default()
    }

    /// The Twitter/X API hosts of this project's protocols, over https: `api.x.com` (media v2
    /// M6, compliance C1/C3), `api.twitter.com`, `upload.twitter.com` (media v1.1 M1–M4) and
    /// `ton.twitter.com` (TON T1–T6). Add `--api-base` overrides with [`SignScope::allow`].
    pub fn twitter() -> Self {
        let mut scope = SignScope::new();
        for host in [
            "api.x.com",
            "api.twitter.com",
            "upload.twitter.com",
            "ton.twitter.com",
        ] {
            scope.allowed.push(ApiPrefix {
                https: true,
                host: host.to_owned(),
                port: 443,
                path: "/".to_owned(),
            });
        }
        scope
    }

    /// Adds an API prefix parsed from `prefix` (see [`ApiPrefix::parse`]), for example an
    /// `--api-base http://127.0.0.1:8080` override.
    ///
    /// # Errors
    /// [`ScopeError::InvalidPrefix`] when `prefix` is not a valid prefix.
    pub fn allow(self, prefix: &str) -> Result<Self, ScopeError> {
        Ok(self.allow_prefix(ApiPrefix::parse(prefix)?))
    }

    /// Adds an API prefix.
    pub fn allow_prefix(mut self, prefix: ApiPrefix) -> Self {
        if !self.allowed.contains(&prefix) {
            self.allowed.push(prefix);
        }
        self
    }

    /// Never signs requests to this session URI (compared without case in scheme and host,
    /// with the default port left out; path and query exactly).
    pub fn exclude(self, session: &SessionUri) -> Self {
        self.exclude_uri(session.expose())
    }

    /// Never signs requests to `uri` (as [`SignScope::exclude`]). A relative URI excludes
    /// nothing (it is never signed anyway).
    pub fn exclude_uri(mut self, uri: &Uri) -> Self {
        self.add_exclusion(uri);
        self
    }

    /// [`SignScope::exclude_uri`] on a scope a signer already holds (reach it with the
    /// signer's `scope_mut`): for a URI learnt mid-flow, before the first request to it.
    pub fn add_exclusion(&mut self, uri: &Uri) {
        if let Some(key) = exclusion_key(uri)
            && !self.excluded.contains(&key)
        {
            self.excluded.push(key);
        }
    }

    /// The API prefixes of this scope.
    pub fn prefixes(&self) -> &[ApiPrefix] {
        &self.allowed
    }

    /// Whether a request to `uri` may be signed. Signers call this first, on every request.
    pub fn decide(&self, uri: &Uri) -> Decision {
        if is_capability_url(uri) {
            return Decision::Skip(SkipReason::CapabilityUrl);
        }
        if let Some(key) = exclusion_key(uri)
            && self.excluded.contains(&key)
        {
            return Decision::Skip(SkipReason::Excluded);
        }
        if self.allowed.iter().any(|prefix| prefix.covers(uri)) {
            Decision::Sign
        } else {
            Decision::Skip(SkipReason::OutOfScope)
        }
    }
}

impl fmt::Debug for SignScope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SignScope")
            .field("allowed", &self.allowed)
            .field("excluded", &self.excluded.len())
            .finish()
    }
}

/// Whether `uri`'s query names a parameter that makes it a capability URL.
pub(crate) fn is_capability_url(uri: &Uri) -> bool {
    let Some(query) = uri.query() else {
        return false;
    };
    query
        .split('&')
        .filter(|pair| !pair.is_empty())
        .any(|pair| {
            let name = pair.split_once('=').map_or(pair, |(name, _)| name);
            let name = crate::oauth1::form_decode(name.as_bytes());
            CAPABILITY_PARAMETERS
                .iter()
                .any(|marker| name.eq_ignore_ascii_case(marker.as_bytes()))
        })
}

/// The scheme, lowercase host and effective port of an absolute http(s) URI.
pub(crate) struct Origin {
    pub(crate) https: bool,
    pub(crate) host: String,
    pub(crate) port: u16,
}

impl Origin {
    pub(crate) fn of(uri: &Uri) -> Option<Origin> {
        let https = match uri.scheme_str() {
            Some(s) if s.eq_ignore_ascii_case("https") => true,
            Some(s) if s.eq_ignore_ascii_case("http") => false,
            _ => return None,
        };
        let authority = uri.authority()?;
        let host = authority.host();
        if host.is_empty() {
            return None;
        }
        Some(Origin {
            https,
            host: host.to_ascii_lowercase(),
            port: authority.port_u16().unwrap_or(default_port(https)),
        })
    }
}

pub(crate) fn default_port(https: bool) -> u16 {
    if https { 443 } else { 80 }
}

fn exclusion_key(uri: &Uri) -> Option<String> {
    let origin = Origin::of(uri)?;
    let scheme = if origin.https { "https" } else { "http" };
    let path = match uri.path() {
        "" => "/",
        path => path,
    };
    let query = uri.query().map_or(String::new(), |q| format!("?{q}"));
    Some(format!(
        "{scheme}://{}:{}{path}{query}",
        origin.host, origin.port
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn uri(text: &str) -> Uri {
        text.parse().unwrap()
    }

    #[test]
    fn prefixes_cover_origin_and_path_segments() {
        let p = ApiPrefix::parse("HTTPS://API.X.com:443/2").unwrap();
        assert_eq!(p.to_string(), "https://api.x.com/2");
        assert!(p.covers(&uri("https://api.x.com/2")));
        assert!(p.covers(&uri("https://api.x.com/2/compliance/jobs?x=1")));
        assert!(p.covers(&uri("https://API.X.COM:443/2/media/upload")));
        assert!(!p.covers(&uri("https://api.x.com/20/x")));
        assert!(!p.covers(&uri("http://api.x.com/2/x")));
        assert!(!p.covers(&uri("https://api.x.com:8443/2/x")));
        assert!(!p.covers(&uri("https://evil.example/2/x")));
        assert!(!p.covers(&uri("/2/x")));

        let local = ApiPrefix::parse("http://127.0.0.1:8080").unwrap();
        assert!(local.covers(&uri("http://127.0.0.1:8080/2/compliance/jobs")));
        assert!(!local.covers(&uri("http://127.0.0.1:8081/2/compliance/jobs")));
        let slash = ApiPrefix::parse("https://h.example/1.1/").unwrap();
        assert!(slash.covers(&uri("https://h.example/1.1/media/upload.json")));
        assert!(!slash.covers(&uri("https://h.example/1.1")));
    }

    #[test]
    fn prefixes_refuse_userinfo_query_fragment_and_other_schemes() {
        for bad in [
            "https://u:p@api.x.com/",
            "https://api.x.com/?a=1",
            "https://api.x.com/#f",
            "ftp://api.x.com/",
            "/relative",
            "not a url",
        ] {
            assert!(ApiPrefix::parse(bad).is_err(), "{bad}");
        }
        let message = ApiPrefix::parse("https://u:SECRETPW@api.x.com/")
            .unwrap_err()
            .to_string();
        assert!(!message.contains("SECRETPW"));
    }

    // G1, G3-G10, C2, C3: capability URLs are never signed, even on an API origin (the
    // conformance server serves the API and its GCS side from one origin).
    #[test]
    fn capability_urls_are_skipped_even_on_api_origins() {
        let scope = SignScope::new().allow("http://127.0.0.1:9000").unwrap();
        for capability in [
            "http://127.0.0.1:9000/upload/storage/v1/b/b/o?uploadType=resumable&upload_id=ABC",
            "http://127.0.0.1:9000/b/o?X-Goog-Algorithm=GOOG4-RSA-SHA256&X-Goog-Signature=00",
            "http://127.0.0.1:9000/b/o?x-goog-credential=a%40b",
            "http://127.0.0.1:9000/b/o?GoogleAccessId=a&Expires=1&Signature=s",
            "http://127.0.0.1:9000/b/o?X-Amz-Signature=s",
            "http://127.0.0.1:9000/b/o?upload%5Fid=encoded-name",
        ] {
            assert_eq!(
                scope.decide(&uri(capability)),
                Decision::Skip(SkipReason::CapabilityUrl),
                "{capability}"
            );
        }
        assert_eq!(
            scope.decide(&uri("http://127.0.0.1:9000/2/compliance/jobs")),
            Decision::Sign
        );
        // T3: a TON resume location is an API request.
        let ton = SignScope::twitter();
        assert_eq!(
            ton.decide(&uri(
                "https://ton.twitter.com/1.1/ton/bucket/b/x.mp4?resumable=true&resumeId=28401873"
            )),
            Decision::Sign
        );
    }

    #[test]
    fn exclusions_and_out_of_scope() {
        let session = SessionUri::parse("https://API.x.com:443/custom/session/7").unwrap();
        let scope = SignScope::twitter().exclude(&session);
        assert_eq!(
            scope.decide(&uri("https://api.x.com/custom/session/7")),
            Decision::Skip(SkipReason::Excluded)
        );
        assert_eq!(
            scope.decide(&uri("https://api.x.com/custom/session/8")),
            Decision::Sign
        );
        assert_eq!(
            scope.decide(&uri("https://storage.googleapis.com/b/o")),
            Decision::Skip(SkipReason::OutOfScope)
        );
        assert_eq!(
            SignScope::new().decide(&uri("https://api.x.com/2/x")),
            Decision::Skip(SkipReason::OutOfScope)
        );
        let shown = format!("{scope:?}");
        assert!(!shown.contains("session/7"), "{shown}");
        assert!(shown.contains("api.x.com"), "{shown}");
    }
}
