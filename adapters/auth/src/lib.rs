//! Request signing for `resumable-core` drivers: `Authorization: Bearer` and OAuth 1.0a
//! HMAC-SHA1 user context, applied only to API requests.
//!
//! The core stays auth-agnostic: it emits each request as an
//! [`Action::Send`](resumable_core::Action::Send). A driver holds
//! a [`Signer`] and calls [`Signer::sign_send`] on every `Transmit` **right before sending it** —
//! retries included, since each is a new `Transmit` and OAuth 1.0a needs a fresh nonce and
//! timestamp per request. Signing is synchronous and does no I/O, so a blocking and an async
//! driver use it alike.
//!
//! Which requests get credentials is the [`SignScope`]'s decision: requests under the API
//! prefixes the caller marked, except capability URLs (GCS signed URLs and session URIs, S3
//! presigned URLs), which never carry an `Authorization` header (G1, C2), and URIs the caller
//! excluded.
//!
//! What OAuth 1.0a signs (M7): the method, the base string URI, the `oauth_*` protocol
//! parameters, the query string and — only for `Content-Type:
//! application/x-www-form-urlencoded` — the form fields, which the core always puts wholly in
//! [`Body::prefix`](resumable_core::Body::prefix) ([`form_body`]). Multipart, JSON and raw
//! bodies are never signed.
//!
//! # Example
//!
//! ```
//! use resumable_auth::{OAuth1Keys, OAuth1Signer, SignScope, Signed, Signer};
//! use resumable_core::media::{ApiVersion, MediaConfig, MediaUpload};
//! use resumable_core::{Action, Upload};
//! use std::time::Instant;
//!
//! let keys = OAuth1Keys::new("consumer-key", "consumer-secret", "token", "token-secret");
//! let mut signer = OAuth1Signer::new(keys, SignScope::twitter());
//!
//! let config = MediaConfig::new(ApiVersion::v1_1(), 10, "image/gif");
//! let mut upload = MediaUpload::new(config).unwrap();
//! let Action::Send(mut send) = upload.poll_action(Instant::now()) else { unreachable!() };
//! // INIT: a form post to upload.twitter.com, signed with its form fields.
//! assert_eq!(signer.sign_send(&mut send).unwrap(), Signed::Applied);
//! let authorization = &send.request.headers()["authorization"];
//! assert!(authorization.is_sensitive());
//! assert!(authorization.to_str().unwrap().starts_with("OAuth oauth_consumer_key="));
//! // … now send `send.request` with `send.body`, exactly as signed.
//! ```
//!
//! What SigV4 signs (S12) is in [`sigv4`]: each request on its own, with `x-amz-date`, the
//! request's `x-amz-content-sha256` (else `UNSIGNED-PAYLOAD`; the body is never read) and the
//! session token; presigned URLs (S13) are left alone.
//!
//! Credentials for the command-line tool come from the environment: [`Credentials::from_env`],
//! and for S3 [`AwsCredentials::from_env`] and [`AwsRegion::from_env`].
//! No `Debug`, `Display` or error of this crate shows a secret.

#![forbid(unsafe_code)]
#![deny(missing_docs)]

mod bearer;
mod credentials;
pub mod entropy;
pub mod oauth1;
pub mod scope;
mod signer;
pub mod sigv4;

pub use bearer::{BearerSigner, BearerToken};
pub use credentials::{
    ACCESS_TOKEN, ACCESS_TOKEN_SECRET, AWS_ACCESS_KEY_ID, AWS_DEFAULT_REGION, AWS_REGION,
    AWS_SECRET_ACCESS_KEY, AWS_SESSION_TOKEN, BEARER_TOKEN, CONSUMER_KEY, CONSUMER_SECRET,
    CredentialError, CredentialKind, Credentials, EnvError,
};
pub use entropy::{NonceSource, OsNonce, SystemWallClock, WallClock};
pub use oauth1::{OAuth1Keys, OAuth1Signer};
pub use scope::{ApiPrefix, Decision, ScopeError, SignScope, SkipReason};
pub use signer::{AnySigner, NoAuth, SignError, Signed, Signer, form_body};
pub use sigv4::{AwsCredentials, AwsEnvError, AwsRegion, SigV4Signer};

#[cfg(test)]
mod sigv4_tests;
#[cfg(test)]
mod tests;
