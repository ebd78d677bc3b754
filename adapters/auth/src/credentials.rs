//! Credentials from the environment, for the command-line tool.
//!
//! | variable | kind |
//! |---|---|
//! | `X_BEARER_TOKEN` | [`CredentialKind::Bearer`]: app-only Bearer (compliance C1/C3) or an OAuth 2 user token (media v2 M6) |
//! | `X_CONSUMER_KEY`, `X_CONSUMER_SECRET`, `X_ACCESS_TOKEN`, `X_ACCESS_TOKEN_SECRET` | [`CredentialKind::OAuth1`]: OAuth 1.0a user context (TON, media) |
//! | `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, optional `AWS_SESSION_TOKEN`; `AWS_REGION` (else `AWS_DEFAULT_REGION`) | AWS Signature Version 4 for S3: [`crate::AwsCredentials::from_env`], [`crate::AwsRegion::from_env`] |
//!
//! An empty variable counts as unset. Errors name variables, never values; `Debug` and
//! `Display` of [`Credentials`] show only the kind.

use std::ffi::OsString;
use std::fmt;

use crate::bearer::{BearerSigner, BearerToken};
use crate::oauth1::{OAuth1Keys, OAuth1Signer};
use crate::scope::SignScope;
use crate::signer::AnySigner;

/// The app-only Bearer token (or OAuth 2 user token).
pub const BEARER_TOKEN: &str = "X_BEARER_TOKEN";
/// The OAuth 1.0a consumer (API) key.
pub const CONSUMER_KEY: &str = "X_CONSUMER_KEY";
/// The OAuth 1.0a consumer (API) secret.
pub const CONSUMER_SECRET: &str = "X_CONSUMER_SECRET";
/// The OAuth 1.0a access token.
pub const ACCESS_TOKEN: &str = "X_ACCESS_TOKEN";
/// The OAuth 1.0a access token secret.
pub const ACCESS_TOKEN_SECRET: &str = "X_ACCESS_TOKEN_SECRET";
/// The AWS access key ID (SigV4).
pub const AWS_ACCESS_KEY_ID: &str = "AWS_ACCESS_KEY_ID";
/// The AWS secret access key (SigV4).
pub const AWS_SECRET_ACCESS_KEY: &str = "AWS_SECRET_ACCESS_KEY";
/// The session token of temporary AWS credentials (optional).
pub const AWS_SESSION_TOKEN: &str = "AWS_SESSION_TOKEN";
/// The AWS region requests are signed for.
pub const AWS_REGION: &str = "AWS_REGION";
/// The AWS region when `AWS_REGION` is unset.
pub const AWS_DEFAULT_REGION: &str = "AWS_DEFAULT_REGION";

/// A credential value that cannot be used. Names what, never the value.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("unusable {what}: {why}")]
pub struct CredentialError {
    /// Which credential.
    pub what: &'static str,
    /// What is wrong with it.
    pub why: &'static str,
}

/// The kinds of credentials, as a command accepts them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum CredentialKind {
    /// `Authorization: Bearer` from `X_BEARER_TOKEN`.
    Bearer,
    /// OAuth 1.0a user context from `X_CONSUMER_KEY`, `X_CONSUMER_SECRET`, `X_ACCESS_TOKEN`
    /// and `X_ACCESS_TOKEN_SECRET`.
    OAuth1,
}

impl CredentialKind {
    /// The environment variables this kind is read from, all required.
    pub fn variables(self) -> &'static [&'static str] {
        match self {
            CredentialKind::Bearer => &[BEARER_TOKEN],
            CredentialKind::OAuth1 => &[
                CONSUMER_KEY,
                CONSUMER_SECRET,
                ACCESS_TOKEN,
                ACCESS_TOKEN_SECRET,
            ],
        }
    }
}

impl fmt::Display for CredentialKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            CredentialKind::Bearer => "Bearer token",
            CredentialKind::OAuth1 => "OAuth 1.0a user context",
        })
    }
}

/// Why credentials could not be read from the environment. Names variables, never values.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum EnvError {
    /// None of the accepted kinds has any of its variables set.
    #[error("no credentials in the environment: {}", describe_options(.accepted))]
    Missing {
        /// The kinds the command accepts, in its order of preference.
        accepted: Vec<CredentialKind>,
    },
    /// Some of a kind's variables are set, others not (likely a mistake, so no other kind is
    /// tried).
    #[error("incomplete {kind} credentials: set {}", .missing.join(", "))]
    Incomplete {
        /// The kind partly configured.
        kind: CredentialKind,
        /// Its variables that are unset or empty.
        missing: Vec<&'static str>,
    },
    /// A variable is set to something unusable.
    #[error("{variable} is not usable: {why}")]
    Invalid {
        /// The variable.
        variable: &'static str,
        /// What is wrong with its value.
        why: &'static str,
    },
}

fn describe_options(accepted: &[CredentialKind]) -> String {
    if accepted.is_empty() {
        return "this command accepts no credentials".to_owned();
    }
    let options: Vec<String> = accepted
        .iter()
        .map(|kind| format!("{} ({kind})", kind.variables().join(", ")))
        .collect();
    format!("set {}", options.join(", or "))
}

/// Credentials for Twitter/X API requests. Read them with [`Credentials::from_env`] (or
/// [`Credentials::from_env_for`] when a command needs one kind), then turn them into a signer
/// with [`Credentials::into_signer`].
///
/// `Debug` and `Display` show the kind only.
#[derive(Clone, PartialEq, Eq)]
pub enum Credentials {
    /// `Authorization: Bearer TOKEN`.
    Bearer(BearerToken),
    /// OAuth 1.0a HMAC-SHA1 user context.
    OAuth1(OAuth1Keys),
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Credentials::{:?}(<redacted>)", self.kind())
    }
}

impl fmt::Display for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} credentials", self.kind())
    }
}

impl Credentials {
    /// Reads whichever credentials the environment holds: OAuth 1.0a user context when its four
    /// variables are set, else the Bearer token. For commands that accept either.
    ///
    /// # Errors
    /// See [`Credentials::from_env_for`].
    pub fn from_env() -> Result<Self, EnvError> {
        Self::from_env_for(&[CredentialKind::OAuth1, CredentialKind::Bearer])
    }

    /// Reads credentials of one of the `accepted` kinds, in that order of preference (the
    /// compliance command accepts only [`CredentialKind::Bearer`]; TON only
    /// [`CredentialKind::OAuth1`]). A kind with all its variables set wins; a kind with only
    /// some set is an error rather than a silent fallback.
    ///
    /// # Errors
    /// [`EnvError::Missing`] when no accepted kind is set at all, [`EnvError::Incomplete`]
    /// naming the unset variables of a partly set kind, [`EnvError::Invalid`] for a value that
    /// is not UTF-8 or not a valid token.
    pub fn from_env_for(accepted: &[CredentialKind]) -> Result<Self, EnvError> {
        Self::from_lookup(accepted, std::env::var_os)
    }

    /// [`Credentials::from_env_for`] reading variables through `lookup` instead of the process
    /// environment (tests, or a configuration file mapped to the same names).
    ///
    /// # Errors
    /// As [`Credentials::from_env_for`].
    pub fn from_lookup(
        accepted: &[CredentialKind],
        mut lookup: impl FnMut(&'static str) -> Option<OsString>,
    ) -> Result<Self, EnvError> {
        for &kind in accepted {
            let mut values = Vec::new();
            let mut missing = Vec::new();
            for &variable in kind.variables() {
                match lookup(variable) {
                    None => missing.push(variable),
                    Some(value) if value.is_empty() => missing.push(variable),
                    Some(value) => match value.into_string() {
                        Ok(text) => values.push(text),
                        Err(_) => {
                            return Err(EnvError::Invalid {
                                variable,
                                why: "it is not valid UTF-8",
                            });
                        }
                    },
                }
            }
            if missing.is_empty() {
                return Self::build(kind, values);
            }
            if missing.len() < kind.variables().len() {
                return Err(EnvError::Incomplete { kind, missing });
            }
        }
        Err(EnvError::Missing {
            accepted: accepted.to_vec(),
        })
    }

    fn build(kind: CredentialKind, values: Vec<String>) -> Result<Self, EnvError> {
        match kind {
            CredentialKind::Bearer => {
                let token = values.into_iter().next().unwrap_or_default();
                BearerToken::new(token)
                    .map(Credentials::Bearer)
                    .map_err(|e| EnvError::Invalid {
                        variable: BEARER_TOKEN,
                        why: e.why,
                    })
            }
            CredentialKind::OAuth1 => {
                let mut values = values.into_iter();
                let mut next = || values.next().unwrap_or_default();
                let (key, secret, token, token_secret) = (next(), next(), next(), next());
                Ok(Credentials::OAuth1(OAuth1Keys::new(
                    key,
                    secret,
                    token,
                    token_secret,
                )))
            }
        }
    }

    /// Which kind these are.
    pub fn kind(&self) -> CredentialKind {
        match self {
            Credentials::Bearer(_) => CredentialKind::Bearer,
            Credentials::OAuth1(_) => CredentialKind::OAuth1,
        }
    }

    /// A signer for the requests `scope` admits (system clock, OS-random nonces). Call
    /// [`crate::Signer::sign_send`] with it on every request before sending.
    pub fn into_signer(self, scope: SignScope) -> AnySigner {
        match self {
            Credentials::Bearer(token) => AnySigner::Bearer(BearerSigner::new(token, scope)),
            Credentials::OAuth1(keys) => AnySigner::OAuth1(OAuth1Signer::new(keys, scope)),
        }
    }
}
