//! OAuth 1.0a, HMAC-SHA1, user context (RFC 5849 section 3; rules T1, M1–M4, M7).
//!
//! What is signed (RFC 5849 3.4.1): the method; the base string URI (scheme and host in
//! lowercase, default port dropped, no query); and the normalised parameters — the `oauth_*`
//! protocol parameters, the query string's parameters and, only when the request says
//! `Content-Type: application/x-www-form-urlencoded`, the form body's fields. A multipart, JSON
//! or raw body is never signed (M7). Every name and value is percent-encoded with RFC 3986's
//! unreserved set (`A-Z a-z 0-9 - . _ ~`, uppercase hex), and the pairs are sorted by encoded
//! name, then encoded value.
//!
//! Each signed request gets a fresh `oauth_nonce` and `oauth_timestamp`, so a retry (which the
//! core hands out as a new `Transmit`) is signed anew.

use std::fmt;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use hmac::{Hmac, Mac};
use http::header::AUTHORIZATION;
use http::{HeaderValue, Method, Request, Uri};
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, percent_decode, percent_encode};
use resumable_core::Body;
use sha1::Sha1;

use crate::entropy::{NonceSource, OsNonce, SystemWallClock, WallClock};
use crate::scope::{Decision, Origin, SignScope, default_port};
use crate::signer::{SignError, Signed, Signer, form_body};

/// Everything but RFC 3986's unreserved characters is encoded (RFC 5849 3.6).
const ENCODE: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// The value of `oauth_signature_method`.
pub const SIGNATURE_METHOD: &str = "HMAC-SHA1";
/// The value of `oauth_version`.
pub const VERSION: &str = "1.0";

/// Percent-encodes `bytes` as OAuth 1.0a requires (RFC 5849 3.6): RFC 3986 unreserved
/// characters stay, every other byte becomes `%XX` with uppercase hex. For building base
/// strings and `Authorization` values by hand (tests, debugging a 401).
pub fn encode(bytes: &[u8]) -> String {
    percent_encode(bytes, ENCODE).to_string()
}

/// Decodes one `application/x-www-form-urlencoded` name or value: `+` is a space, `%XX` a
/// byte. Malformed escapes stay as they are.
pub(crate) fn form_decode(bytes: &[u8]) -> Vec<u8> {
    let spaced: Vec<u8> = bytes
        .iter()
        .map(|&b| if b == b'+' { b' ' } else { b })
        .collect();
    percent_decode(&spaced).collect()
}

/// Adds the encoded pairs of a query string or form body to `out` (RFC 5849 3.4.1.3.1: parsed
/// as `application/x-www-form-urlencoded`, then re-encoded by 3.6). Empty pieces (`a&&b`) are
/// no parameters; `a` and `a=` both have an empty value.
fn collect_pairs(text: &[u8], out: &mut Vec<(String, String)>) -> Result<(), SignError> {
    for piece in text.split(|&b| b == b'&').filter(|piece| !piece.is_empty()) {
        let (name, value) = match piece.iter().position(|&b| b == b'=') {
            Some(at) => (&piece[..at], &piece[at + 1..]),
            None => (piece, &[][..]),
        };
        let name = form_decode(name);
        if name.starts_with(b"oauth_") {
            return Err(SignError::ProtocolParameterInRequest);
        }
        out.push((encode(&name), encode(&form_decode(value))));
    }
    Ok(())
}

/// The base string URI of RFC 5849 3.4.1.2: scheme and host in lowercase, the port only when it
/// is not the scheme's default, the path as sent (`/` when empty), no query or fragment.
///
/// # Errors
/// [`SignError::UnsupportedUri`] unless `uri` is an absolute `http`/`https` URI.
pub fn base_string_uri(uri: &Uri) -> Result<String, SignError> {
    let origin = Origin::of(uri).ok_or(SignError::UnsupportedUri)?;
    let scheme = if origin.https { "https" } else { "http" };
    let mut text = format!("{scheme}://{}", origin.host);
    if origin.port != default_port(origin.https) {
        text.push_str(&format!(":{}", origin.port));
    }
    match uri.path() {
        "" => text.push('/'),
        path => text.push_str(path),
    }
    Ok(text)
}

/// The signature base string of RFC 5849 3.4.1.1 for a request with `method` and `uri`, the
/// protocol parameters `protocol` (name, unencoded value; `oauth_signature` and `realm` left
/// out) and, when the request is a form post, its `application/x-www-form-urlencoded` body
/// `form` (see [`crate::form_body`]; `None` for any other body).
///
/// Signers call this for every request; it is public so a caller can compare it with a
/// server's, and test it against published vectors.
///
/// # Errors
/// [`SignError::UnsupportedUri`] unless `uri` is absolute http(s);
/// [`SignError::ProtocolParameterInRequest`] when the query or form has an `oauth_*` parameter.
pub fn signature_base_string(
    method: &Method,
    uri: &Uri,
    protocol: &[(&str, &str)],
    form: Option<&[u8]>,
) -> Result<String, SignError> {
    let base_uri = base_string_uri(uri)?;
    let mut pairs = Vec::new();
    if let Some(query) = uri.query() {
        collect_pairs(query.as_bytes(), &mut pairs)?;
    }
    if let Some(form) = form {
        collect_pairs(form, &mut pairs)?;
    }
    for (name, value) in protocol {
        pairs.push((encode(name.as_bytes()), encode(value.as_bytes())));
    }
    // 3.4.1.3.2: by encoded name, then encoded value, in byte order.
    pairs.sort_unstable();
    let mut normalized = String::new();
    for (i, (name, value)) in pairs.iter().enumerate() {
        if i > 0 {
            normalized.push('&');
        }
        normalized.push_str(name);
        normalized.push('=');
        normalized.push_str(value);
    }
    let method = method.as_str().to_ascii_uppercase();
    Ok(format!(
        "{}&{}&{}",
        encode(method.as_bytes()),
        encode(base_uri.as_bytes()),
        encode(normalized.as_bytes())
    ))
}

/// The HMAC-SHA1 signature of RFC 5849 3.4.2, base64-encoded: the key is
/// `encode(consumer_secret) & encode(token_secret)`.
fn hmac_sha1(base_string: &str, consumer_secret: &str, token_secret: &str) -> String {
    let key = format!(
        "{}&{}",
        encode(consumer_secret.as_bytes()),
        encode(token_secret.as_bytes())
    );
    // HMAC takes keys of any length; `new_from_slice` cannot fail for it.
    let mut mac = <Hmac<Sha1> as Mac>::new_from_slice(key.as_bytes())
        .unwrap_or_else(|_| unreachable!("HMAC accepts keys of any length"));
    mac.update(base_string.as_bytes());
    BASE64.encode(mac.finalize().into_bytes())
}

/// The four OAuth 1.0a user-context credentials: the app's consumer key and secret, and the
/// user's access token and secret.
///
/// Build with [`OAuth1Keys::new`] (or [`crate::Credentials::from_env`]), then hand to
/// [`OAuth1Signer::new`]. `Debug` shows none of them.
#[derive(Clone, PartialEq, Eq)]
pub struct OAuth1Keys {
    consumer_key: String,
    consumer_secret: String,
    token: String,
    token_secret: String,
}

impl OAuth1Keys {
    /// The credentials as issued (unencoded); the signer encodes them.
    pub fn new(
        consumer_key: impl Into<String>,
        consumer_secret: impl Into<String>,
        token: impl Into<String>,
        token_secret: impl Into<String>,
    ) -> Self {
        OAuth1Keys {
            consumer_key: consumer_key.into(),
            consumer_secret: consumer_secret.into(),
            token: token.into(),
            token_secret: token_secret.into(),
        }
    }
}

impl fmt::Debug for OAuth1Keys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("OAuth1Keys(<redacted>)")
    }
}

/// The `Authorization` value, and the base string it signs, for one request.
pub(crate) struct Authorization {
    pub(crate) header: String,
    #[cfg_attr(not(test), allow(dead_code))]
    pub(crate) base_string: String,
}

/// Signs `method uri [form]` with `keys`, `timestamp` and `nonce`: the pure heart of
/// [`OAuth1Signer`].
pub(crate) fn authorize(
    keys: &OAuth1Keys,
    method: &Method,
    uri: &Uri,
    form: Option<&[u8]>,
    timestamp: u64,
    nonce: &str,
) -> Result<Authorization, SignError> {
    let timestamp = timestamp.to_string();
    let protocol = [
        ("oauth_consumer_key", keys.consumer_key.as_str()),
        ("oauth_nonce", nonce),
        ("oauth_signature_method", SIGNATURE_METHOD),
        ("oauth_timestamp", timestamp.as_str()),
        ("oauth_token", keys.token.as_str()),
        ("oauth_version", VERSION),
    ];
    let base_string = signature_base_string(method, uri, &protocol, form)?;
    let signature = hmac_sha1(&base_string, &keys.consumer_secret, &keys.token_secret);
    let mut header = String::from("OAuth ");
    // Alphabetical, with the signature in its place (as Twitter's documentation shows it).
    let mut fields: Vec<(&str, &str)> = protocol.to_vec();
    fields.push(("oauth_signature", signature.as_str()));
    fields.sort_unstable_by_key(|(name, _)| *name);
    for (i, (name, value)) in fields.iter().enumerate() {
        if i > 0 {
            header.push_str(", ");
        }
        header.push_str(&format!(
            "{}=\"{}\"",
            encode(name.as_bytes()),
            encode(value.as_bytes())
        ));
    }
    Ok(Authorization {
        header,
        base_string,
    })
}

/// Signs API requests with OAuth 1.0a HMAC-SHA1 user context (TON T1, media v1.1 M1–M4 and
/// M7, media v2 M6), inside its [`SignScope`].
///
/// Build one per run with [`OAuth1Signer::new`]; tests inject a fixed clock and nonces with
/// [`OAuth1Signer::with_clock`] and [`OAuth1Signer::with_nonces`]. Then call
/// [`Signer::sign`] on every request right before it is sent — retries included, since each
/// needs a fresh nonce and timestamp. A signed request's `Authorization` header is replaced and
/// marked sensitive; a request outside the scope is left exactly as it was.
pub struct OAuth1Signer {
    keys: OAuth1Keys,
    scope: SignScope,
    clock: Box<dyn WallClock + Send>,
    nonces: Box<dyn NonceSource + Send>,
}

impl fmt::Debug for OAuth1Signer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OAuth1Signer")
            .field("keys", &self.keys)
            .field("scope", &self.scope)
            .finish_non_exhaustive()
    }
}

impl OAuth1Signer {
    /// A signer for the requests `scope` admits, with the system clock and OS-random nonces.
    pub fn new(keys: OAuth1Keys, scope: SignScope) -> Self {
        OAuth1Signer {
            keys,
            scope,
            clock: Box::new(SystemWallClock),
            nonces: Box::new(OsNonce),
        }
    }

    /// Takes `oauth_timestamp` from `clock` (tests: a closure returning a fixed time).
    pub fn with_clock(mut self, clock: impl WallClock + Send + 'static) -> Self {
        self.clock = Box::new(clock);
        self
    }

    /// Takes `oauth_nonce` from `nonces` (tests: a closure returning known nonces).
    pub fn with_nonces(mut self, nonces: impl NonceSource + Send + 'static) -> Self {
        self.nonces = Box::new(nonces);
        self
    }

    /// The scope this signer keeps to.
    pub fn scope(&self) -> &SignScope {
        &self.scope
    }

    /// The scope, to exclude a URI learnt mid-flow ([`SignScope::add_exclusion`]).
    pub fn scope_mut(&mut self) -> &mut SignScope {
        &mut self.scope
    }

    /// Signs a request whose body is not a core [`Body`]: `form` is its
    /// `application/x-www-form-urlencoded` body when it has one (and only then; a multipart,
    /// JSON or raw body is `None`, M7). Otherwise as [`Signer::sign`].
    ///
    /// # Errors
    /// As [`Signer::sign`].
    pub fn sign_with_form(
        &mut self,
        request: &mut Request<()>,
        form: Option<&[u8]>,
    ) -> Result<Signed, SignError> {
        if let Decision::Skip(reason) = self.scope.decide(request.uri()) {
            return Ok(Signed::Skipped(reason));
        }
        self.apply(request, form)
    }

    fn apply(
        &mut self,
        request: &mut Request<()>,
        form: Option<&[u8]>,
    ) -> Result<Signed, SignError> {
        let timestamp = self.clock.unix_seconds();
        if timestamp == 0 {
            return Err(SignError::ClockBeforeEpoch);
        }
        let nonce = self.nonces.nonce()?;
        if nonce.is_empty() {
            return Err(SignError::EmptyNonce);
        }
        let authorization = authorize(
            &self.keys,
            request.method(),
            request.uri(),
            form,
            timestamp,
            &nonce,
        )?;
        let mut value =
            HeaderValue::from_str(&authorization.header).map_err(|_| SignError::InvalidHeader)?;
        value.set_sensitive(true);
        request.headers_mut().insert(AUTHORIZATION, value);
        Ok(Signed::Applied)
    }
}

impl Signer for OAuth1Signer {
    fn sign(&mut self, request: &mut Request<()>, body: &Body) -> Result<Signed, SignError> {
        if let Decision::Skip(reason) = self.scope.decide(request.uri()) {
            return Ok(Signed::Skipped(reason));
        }
        let form = form_body(request, body)?;
        self.apply(request, form)
    }
}
