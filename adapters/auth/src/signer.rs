//! The signing hook: [`Signer`], what it reports ([`Signed`], [`SignError`]), and which bodies
//! OAuth 1.0a signs ([`form_body`]).

use http::Request;
use http::header::CONTENT_TYPE;
use resumable_core::{Body, Transmit};

use crate::bearer::BearerSigner;
use crate::oauth1::OAuth1Signer;
use crate::scope::SkipReason;

/// The media type whose fields OAuth 1.0a signs (RFC 5849 3.4.1.3.1, M7).
const FORM_URLENCODED: &str = "application/x-www-form-urlencoded";

/// Adds credentials to the requests a driver is about to send.
///
/// The core stays auth-agnostic: it emits each request as an [`resumable_core::Transmit`] and the
/// driver calls [`Signer::sign_send`] (or [`Signer::sign`]) on it **right before sending it,
/// every time** — a retry is a new `Transmit` and must be signed again (OAuth 1.0a: a fresh nonce and
/// timestamp). Sign after any other change to the method, URI, `Content-Type` or body, then
/// send the request exactly as signed.
///
/// A signer decides per request, by its [`crate::SignScope`], whether the request is an API
/// request: only those get credentials; a session URI or signed URL never does. Signing is
/// synchronous CPU work with no I/O, so blocking and async drivers call it the same way; the
/// signers of this crate are `Send`.
pub trait Signer {
    /// Signs `request` in place when its URI is in scope, replacing any `Authorization`
    /// header (marked sensitive); leaves it untouched otherwise. `body` is what will be sent
    /// with it: OAuth 1.0a signs its fields only when it is a form ([`form_body`]).
    ///
    /// # Errors
    /// [`SignError`]; the request is then unchanged and must not be sent. A signing error is
    /// not a transport failure: end the drive rather than report it to the upload.
    fn sign(&mut self, request: &mut Request<()>, body: &Body) -> Result<Signed, SignError>;

    /// Signs the request of an [`Action::Send`](resumable_core::Action::Send): [`Signer::sign`]
    /// with its request and body.
    ///
    /// # Errors
    /// As [`Signer::sign`].
    fn sign_send(&mut self, send: &mut Transmit) -> Result<Signed, SignError> {
        self.sign(&mut send.request, &send.body)
    }
}

impl<S: Signer + ?Sized> Signer for &mut S {
    fn sign(&mut self, request: &mut Request<()>, body: &Body) -> Result<Signed, SignError> {
        (**self).sign(request, body)
    }
}

impl<S: Signer + ?Sized> Signer for Box<S> {
    fn sign(&mut self, request: &mut Request<()>, body: &Body) -> Result<Signed, SignError> {
        (**self).sign(request, body)
    }
}

/// What [`Signer::sign`] did. Either way, send the request next.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Signed {
    /// The request now carries credentials in `Authorization`.
    Applied,
    /// The request was left as it was, for this reason.
    Skipped(SkipReason),
}

/// Why a request could not be signed. Never contains a credential, URI or header value.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SignError {
    /// The request URI is not an absolute `http`/`https` URI.
    #[error("the request URI is not an absolute http(s) URI")]
    UnsupportedUri,
    /// The query string or form already has an `oauth_*` parameter; the signer puts the
    /// protocol parameters in `Authorization`, and a server refuses them twice.
    #[error("the request already carries an oauth_* parameter in its query or form")]
    ProtocolParameterInRequest,
    /// A form body must be wholly in [`Body::prefix`] (the core's contract), so that its
    /// fields can be signed; this one names source bytes or a suffix.
    #[error("a form-urlencoded body is not wholly in the body prefix")]
    FormNotInPrefix,
    /// The request has several `Content-Type` headers, so whether its body is a form is unclear.
    #[error("the request carries several Content-Type headers")]
    ConflictingContentType,
    /// The wall clock reads 1970 or earlier: the timestamp would be refused.
    #[error("the wall clock reads before 1970; cannot timestamp the request")]
    ClockBeforeEpoch,
    /// The nonce source gave an empty nonce.
    #[error("the nonce source gave an empty nonce")]
    EmptyNonce,
    /// The operating system's random source failed.
    #[error("no random bytes for the nonce")]
    Randomness,
    /// The generated `Authorization` value is not a valid header value.
    #[error("the generated Authorization value is not a valid header value")]
    InvalidHeader,
}

/// The body OAuth 1.0a signs the fields of, if any (RFC 5849 3.4.1.3.1, M7): `Some(bytes)`
/// when the request says `Content-Type: application/x-www-form-urlencoded` (parameters and case
/// ignored), `None` for every other body — multipart, JSON, raw bytes, or none.
///
/// The core builds every form body (media v1.1 INIT and FINALIZE) wholly in [`Body::prefix`]
/// with an empty source range and suffix, so the bytes are at hand without reading the
/// caller's source. [`crate::OAuth1Signer`] calls this; other signers need not.
///
/// # Errors
/// [`SignError::FormNotInPrefix`] for a form with source bytes or a suffix;
/// [`SignError::ConflictingContentType`] for several `Content-Type` headers.
pub fn form_body<'a>(request: &Request<()>, body: &'a Body) -> Result<Option<&'a [u8]>, SignError> {
    let mut values = request.headers().get_all(CONTENT_TYPE).iter();
    let Some(value) = values.next() else {
        return Ok(None);
    };
    if values.next().is_some() {
        return Err(SignError::ConflictingContentType);
    }
    let is_form = value.to_str().is_ok_and(|text| {
        let media_type = text.split(';').next().unwrap_or("").trim();
        media_type.eq_ignore_ascii_case(FORM_URLENCODED)
    });
    if !is_form {
        return Ok(None);
    }
    if body.source_len() != 0 || !body.suffix.is_empty() {
        return Err(SignError::FormNotInPrefix);
    }
    Ok(Some(&body.prefix))
}

/// A signer that signs nothing: every request is [`Signed::Skipped`] as out of scope. For
/// drivers that always take a signer, when no credentials are configured.
#[derive(Clone, Copy, Debug, Default)]
pub struct NoAuth;

impl Signer for NoAuth {
    fn sign(&mut self, _request: &mut Request<()>, _body: &Body) -> Result<Signed, SignError> {
        Ok(Signed::Skipped(SkipReason::OutOfScope))
    }
}

/// Any signer of this crate: what [`crate::Credentials::into_signer`] builds, or AWS SigV4
/// for S3 ([`crate::SigV4Signer`]).
#[derive(Debug)]
pub enum AnySigner {
    /// `Authorization: Bearer …`.
    Bearer(BearerSigner),
    /// OAuth 1.0a HMAC-SHA1 user context.
    OAuth1(OAuth1Signer),
    /// AWS Signature Version 4 (S12).
    SigV4(crate::sigv4::SigV4Signer),
}

impl AnySigner {
    /// The scope, to exclude a URI learnt mid-flow ([`crate::SignScope::add_exclusion`]).
    pub fn scope_mut(&mut self) -> &mut crate::SignScope {
        match self {
            AnySigner::Bearer(signer) => signer.scope_mut(),
            AnySigner::OAuth1(signer) => signer.scope_mut(),
            AnySigner::SigV4(signer) => signer.scope_mut(),
        }
    }
}

impl Signer for AnySigner {
    fn sign(&mut self, request: &mut Request<()>, body: &Body) -> Result<Signed, SignError> {
        match self {
            AnySigner::Bearer(signer) => signer.sign(request, body),
            AnySigner::OAuth1(signer) => signer.sign(request, body),
            AnySigner::SigV4(signer) => signer.sign(request, body),
        }
    }
}
