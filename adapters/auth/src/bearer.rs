//! `Authorization: Bearer TOKEN` (RFC 6750): the app-only bearer token of the compliance API
//! (C1, C3), or an OAuth 2 user token for media v2 (M6).

use std::fmt;

use http::header::AUTHORIZATION;
use http::{HeaderValue, Request};
use resumable_core::Body;

use crate::credentials::CredentialError;
use crate::scope::{Decision, SignScope};
use crate::signer::{SignError, Signed, Signer};

/// A bearer token: non-empty, visible ASCII without spaces (Twitter's app-only tokens contain
/// `%`, which is kept as it is). `Debug` never shows it.
#[derive(Clone, PartialEq, Eq)]
pub struct BearerToken(String);

impl BearerToken {
    /// Checks and wraps `token` as issued. Then build a [`BearerSigner`] with it.
    ///
    /// # Errors
    /// [`CredentialError`] when it is empty or has a space, control or non-ASCII character
    /// (which an `Authorization` header cannot carry).
    pub fn new(token: impl Into<String>) -> Result<Self, CredentialError> {
        let token = token.into();
        if token.is_empty() {
            return Err(CredentialError {
                what: "bearer token",
                why: "it is empty",
            });
        }
        if !token.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(CredentialError {
                what: "bearer token",
                why: "it has a space, control or non-ASCII character",
            });
        }
        Ok(BearerToken(token))
    }
}

impl fmt::Debug for BearerToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("BearerToken(<redacted>)")
    }
}

/// Signs API requests with `Authorization: Bearer TOKEN`, inside its [`SignScope`].
///
/// Build one with [`BearerSigner::new`], then call [`Signer::sign`] on every request right
/// before it is sent (retries too). A request outside the scope — a session URI, a signed
/// `upload_url` — is left exactly as it was.
pub struct BearerSigner {
    value: HeaderValue,
    scope: SignScope,
}

impl fmt::Debug for BearerSigner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BearerSigner")
            .field("token", &"<redacted>")
            .field("scope", &self.scope)
            .finish()
    }
}

impl BearerSigner {
    /// A signer adding `token` to the requests `scope` admits.
    pub fn new(token: BearerToken, scope: SignScope) -> Self {
        let mut value = HeaderValue::from_str(&format!("Bearer {}", token.0))
            .unwrap_or_else(|_| unreachable!("BearerToken::new admits only visible ASCII"));
        value.set_sensitive(true);
        BearerSigner { value, scope }
    }

    /// The scope this signer keeps to.
    pub fn scope(&self) -> &SignScope {
        &self.scope
    }

    /// The scope, to exclude a URI learnt mid-flow ([`SignScope::add_exclusion`]).
    pub fn scope_mut(&mut self) -> &mut SignScope {
        &mut self.scope
    }
}

impl Signer for BearerSigner {
    fn sign(&mut self, request: &mut Request<()>, _body: &Body) -> Result<Signed, SignError> {
        if let Decision::Skip(reason) = self.scope.decide(request.uri()) {
            return Ok(Signed::Skipped(reason));
        }
        request
            .headers_mut()
            .insert(AUTHORIZATION, self.value.clone());
        Ok(Signed::Applied)
    }
}
