//! AWS Signature Version 4 (`AWS4-HMAC-SHA256`) in the `Authorization` header, for S3 and
//! S3-compatible stores (rules S12, S13).
//!
//! Each request is signed on its own; nothing is multipart-specific. The signer sets
//! `x-amz-date` (UTC, `YYYYMMDDTHHMMSSZ`), `x-amz-content-sha256` (kept when the request already
//! carries one — a part's hex SHA-256 — else `UNSIGNED-PAYLOAD`), `x-amz-security-token` when
//! the credentials have a session token, and
//! `Authorization: AWS4-HMAC-SHA256 Credential=<key id>/<date>/<region>/<service>/aws4_request,
//! SignedHeaders=…, Signature=…`.
//!
//! The canonical request (S12) is, joined by newlines: the method; the path, each segment
//! percent-decoded and encoded again once with RFC 3986's unreserved set (S3 paths are not
//! normalised: empty segments and dots stay); the query, names and values decoded and encoded
//! the same way (`+` is a plus sign, not a space), sorted by name then value, a bare name
//! getting `=` (`uploads` → `uploads=`); the signed headers, one `name:value` line each in
//! name order — `host` (with the port when it is not the scheme's default), every `x-amz-*`
//! header, `content-type` and `content-md5` when present, and whatever
//! [`SigV4Signer::also_sign`] added — with values trimmed, inner runs of spaces and tabs made
//! one space, and several values of a name joined by `,`; a blank line; the signed header
//! names joined by `;`; and the payload hash.
//!
//! Presigned URLs (S13: `X-Amz-Signature` or `X-Amz-Credential` in the query) carry their own
//! signature: the [`SignScope`] skips them as capability URLs and the signer leaves them
//! exactly as they are, adding no header at all.

use std::ffi::OsString;
use std::fmt;

use hmac::{Hmac, Mac};
use http::header::{AUTHORIZATION, CONTENT_TYPE, HOST};
use http::{HeaderMap, HeaderName, HeaderValue, Method, Request, Uri};
use percent_encoding::percent_decode_str;
use resumable_core::Body;
use sha2::{Digest, Sha256};

use crate::credentials::{
    AWS_ACCESS_KEY_ID, AWS_DEFAULT_REGION, AWS_REGION, AWS_SECRET_ACCESS_KEY, AWS_SESSION_TOKEN,
    CredentialError,
};
use crate::entropy::{SystemWallClock, WallClock};
use crate::oauth1::encode;
use crate::scope::{Decision, Origin, SignScope, default_port};
use crate::signer::{SignError, Signed, Signer};

/// The algorithm name that opens the `Authorization` value and the string to sign.
pub const ALGORITHM: &str = "AWS4-HMAC-SHA256";
/// The `x-amz-content-sha256` value (and payload hash) of a request whose body is not hashed:
/// S3 then relies on `Content-MD5` or `x-amz-checksum-*` for integrity (S12).
pub const UNSIGNED_PAYLOAD: &str = "UNSIGNED-PAYLOAD";
/// The service S3 signs for, the default of [`SigV4Signer`].
pub const S3_SERVICE: &str = "s3";

const X_AMZ_DATE: HeaderName = HeaderName::from_static("x-amz-date");
const X_AMZ_CONTENT_SHA256: HeaderName = HeaderName::from_static("x-amz-content-sha256");
const X_AMZ_SECURITY_TOKEN: HeaderName = HeaderName::from_static("x-amz-security-token");
const CONTENT_MD5: HeaderName = HeaderName::from_static("content-md5");

/// The last second a four-digit `x-amz-date` can name: 9999-12-31T23:59:59Z.
const LAST_SECOND: u64 = 253_402_300_799;

// ---------------------------------------------------------------------------------------------
// Credentials, region and the environment

/// AWS credentials: an access key ID, its secret access key and, for temporary credentials, a
/// session token (sent as `x-amz-security-token` and signed).
///
/// Build with [`AwsCredentials::new`] (and [`AwsCredentials::with_session_token`]) or read them
/// with [`AwsCredentials::from_env`], then hand them to [`SigV4Signer::new`]. `Debug` shows
/// none of them, only whether there is a session token.
#[derive(Clone, PartialEq, Eq)]
pub struct AwsCredentials {
    access_key_id: String,
    secret_access_key: String,
    session_token: Option<String>,
}

impl AwsCredentials {
    /// Long-term (or MinIO-style) credentials as issued.
    ///
    /// # Errors
    /// [`CredentialError`] when the key ID is empty or has a character the `Credential=` field
    /// cannot carry (space, control, non-ASCII, `/` or `,`), or the secret is empty.
    pub fn new(
        access_key_id: impl Into<String>,
        secret_access_key: impl Into<String>,
    ) -> Result<Self, CredentialError> {
        let access_key_id = access_key_id.into();
        let secret_access_key = secret_access_key.into();
        check_access_key_id(&access_key_id)?;
        check_secret(&secret_access_key)?;
        Ok(AwsCredentials {
            access_key_id,
            secret_access_key,
            session_token: None,
        })
    }

    /// Adds the session token of temporary credentials (STS, SSO, an assumed role).
    ///
    /// # Errors
    /// [`CredentialError`] when it is empty or not visible ASCII (a header cannot carry it).
    pub fn with_session_token(mut self, token: impl Into<String>) -> Result<Self, CredentialError> {
        let token = token.into();
        let what = "AWS session token";
        if token.is_empty() {
            return Err(CredentialError {
                what,
                why: "it is empty",
            });
        }
        if !token.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(CredentialError {
                what,
                why: "it has a space, control or non-ASCII character",
            });
        }
        self.session_token = Some(token);
        Ok(self)
    }

    /// Whether these are temporary credentials with a session token.
    pub fn has_session_token(&self) -> bool {
        self.session_token.is_some()
    }

    /// Reads `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY` and, if set, `AWS_SESSION_TOKEN` from
    /// the process environment. An empty variable counts as unset.
    ///
    /// # Errors
    /// [`AwsEnvError::Missing`] when neither the key ID nor the secret is set (nor a token);
    /// [`AwsEnvError::Incomplete`] naming what is missing when only some are;
    /// [`AwsEnvError::Invalid`] for a value that is not UTF-8 or not usable.
    pub fn from_env() -> Result<Self, AwsEnvError> {
        Self::from_lookup(std::env::var_os)
    }

    /// [`AwsCredentials::from_env`] reading variables through `lookup` (tests, or a
    /// configuration file mapped to the same names).
    ///
    /// # Errors
    /// As [`AwsCredentials::from_env`].
    pub fn from_lookup(
        mut lookup: impl FnMut(&'static str) -> Option<OsString>,
    ) -> Result<Self, AwsEnvError> {
        let key_id = read(&mut lookup, AWS_ACCESS_KEY_ID)?;
        let secret = read(&mut lookup, AWS_SECRET_ACCESS_KEY)?;
        let token = read(&mut lookup, AWS_SESSION_TOKEN)?;
        let (key_id, secret) = match (key_id, secret) {
            (Some(key_id), Some(secret)) => (key_id, secret),
            (None, None) if token.is_none() => return Err(AwsEnvError::Missing),
            (key_id, secret) => {
                let mut missing = Vec::new();
                if key_id.is_none() {
                    missing.push(AWS_ACCESS_KEY_ID);
                }
                if secret.is_none() {
                    missing.push(AWS_SECRET_ACCESS_KEY);
                }
                return Err(AwsEnvError::Incomplete { missing });
            }
        };
        check_access_key_id(&key_id).map_err(invalid(AWS_ACCESS_KEY_ID))?;
        check_secret(&secret).map_err(invalid(AWS_SECRET_ACCESS_KEY))?;
        let credentials = AwsCredentials {
            access_key_id: key_id,
            secret_access_key: secret,
            session_token: None,
        };
        match token {
            None => Ok(credentials),
            Some(token) => credentials
                .with_session_token(token)
                .map_err(invalid(AWS_SESSION_TOKEN)),
        }
    }
}

impl fmt::Debug for AwsCredentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AwsCredentials")
            .field("keys", &"<redacted>")
            .field("session_token", &self.session_token.is_some())
            .finish()
    }
}

/// The region a request is signed for (`us-east-1`; MinIO and most compatible servers accept
/// `us-east-1` unless configured otherwise). It is part of the credential scope, so a wrong
/// one gives `403 SignatureDoesNotMatch` or `AuthorizationHeaderMalformed`.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct AwsRegion(String);

impl AwsRegion {
    /// Checks and wraps a region name.
    ///
    /// # Errors
    /// [`CredentialError`] unless it is non-empty ASCII letters, digits, `-`, `_` or `.`.
    pub fn new(name: impl Into<String>) -> Result<Self, CredentialError> {
        let name = name.into();
        check_scope_part(&name, "AWS region")?;
        Ok(AwsRegion(name))
    }

    /// The region name.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Reads `AWS_REGION`, else `AWS_DEFAULT_REGION`, from the process environment (an empty
    /// variable counts as unset).
    ///
    /// # Errors
    /// [`AwsEnvError::NoRegion`] when neither is set; [`AwsEnvError::Invalid`] for a value that
    /// is not UTF-8 or not a region name.
    pub fn from_env() -> Result<Self, AwsEnvError> {
        Self::from_lookup(std::env::var_os)
    }

    /// [`AwsRegion::from_env`] reading variables through `lookup`.
    ///
    /// # Errors
    /// As [`AwsRegion::from_env`].
    pub fn from_lookup(
        mut lookup: impl FnMut(&'static str) -> Option<OsString>,
    ) -> Result<Self, AwsEnvError> {
        for variable in [AWS_REGION, AWS_DEFAULT_REGION] {
            if let Some(name) = read(&mut lookup, variable)? {
                return AwsRegion::new(name).map_err(|e| AwsEnvError::Invalid {
                    variable,
                    why: e.why,
                });
            }
        }
        Err(AwsEnvError::NoRegion)
    }
}

impl fmt::Display for AwsRegion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Why AWS credentials or the region could not be read from the environment. Names variables,
/// never values.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum AwsEnvError {
    /// No AWS credential variable is set at all (a caller may then go unsigned, for example
    /// with presigned URLs).
    #[error(
        "no AWS credentials in the environment: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY"
    )]
    Missing,
    /// Some credential variables are set, others not (likely a mistake).
    #[error("incomplete AWS credentials: set {}", .missing.join(", "))]
    Incomplete {
        /// The variables that are unset or empty.
        missing: Vec<&'static str>,
    },
    /// Neither `AWS_REGION` nor `AWS_DEFAULT_REGION` is set.
    #[error("no AWS region in the environment: set AWS_REGION (or AWS_DEFAULT_REGION)")]
    NoRegion,
    /// A variable is set to something unusable.
    #[error("{variable} is not usable: {why}")]
    Invalid {
        /// The variable.
        variable: &'static str,
        /// What is wrong with its value.
        why: &'static str,
    },
}

/// Maps a check's error to [`AwsEnvError::Invalid`] naming `variable`.
fn invalid(variable: &'static str) -> impl Fn(CredentialError) -> AwsEnvError {
    move |e| AwsEnvError::Invalid {
        variable,
        why: e.why,
    }
}

/// One variable: `None` when unset or empty.
fn read(
    lookup: &mut impl FnMut(&'static str) -> Option<OsString>,
    variable: &'static str,
) -> Result<Option<String>, AwsEnvError> {
    match lookup(variable) {
        None => Ok(None),
        Some(value) if value.is_empty() => Ok(None),
        Some(value) => value
            .into_string()
            .map(Some)
            .map_err(|_| AwsEnvError::Invalid {
                variable,
                why: "it is not valid UTF-8",
            }),
    }
}

fn check_access_key_id(key_id: &str) -> Result<(), CredentialError> {
    let what = "AWS access key ID";
    if key_id.is_empty() {
        return Err(CredentialError {
            what,
            why: "it is empty",
        });
    }
    // It is written into `Credential=<key id>/<scope>, …`.
    if !key_id
        .bytes()
        .all(|b| b.is_ascii_graphic() && b != b'/' && b != b',')
    {
        return Err(CredentialError {
            what,
            why: "it has a space, control, non-ASCII, '/' or ',' character",
        });
    }
    Ok(())
}

fn check_secret(secret: &str) -> Result<(), CredentialError> {
    if secret.is_empty() {
        return Err(CredentialError {
            what: "AWS secret access key",
            why: "it is empty",
        });
    }
    Ok(())
}

/// A region or service name goes into `Credential=…/<region>/<service>/…`: plain characters
/// only, so it can neither break the header nor the scope.
fn check_scope_part(name: &str, what: &'static str) -> Result<(), CredentialError> {
    if name.is_empty() {
        return Err(CredentialError {
            what,
            why: "it is empty",
        });
    }
    if !name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
    {
        return Err(CredentialError {
            what,
            why: "it may have only ASCII letters, digits, '-', '_' and '.'",
        });
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// The signer

/// Signs requests with AWS Signature Version 4 in the `Authorization` header (S12), inside its
/// [`SignScope`].
///
/// Build one with [`SigV4Signer::new`] (service `s3`, the system clock) or
/// [`SigV4Signer::from_env`]; change the service with [`SigV4Signer::with_service`], inject a
/// fixed clock in tests with [`SigV4Signer::with_clock`]. Then call [`Signer::sign`] on every
/// request right before it is sent — retries included, since each gets a fresh `x-amz-date`
/// (S3 refuses a request more than 15 minutes off its clock, `403 RequestTimeTooSkewed`).
///
/// The body is never read: the payload hash is the request's own `x-amz-content-sha256` when
/// it has one, else `UNSIGNED-PAYLOAD`. A presigned URL (S13) or any other URI the scope skips
/// is left exactly as it was. `Debug` shows no credential.
pub struct SigV4Signer {
    credentials: AwsCredentials,
    region: AwsRegion,
    service: String,
    scope: SignScope,
    clock: Box<dyn WallClock + Send>,
    also_signed: Vec<HeaderName>,
}

impl fmt::Debug for SigV4Signer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SigV4Signer")
            .field("credentials", &self.credentials)
            .field("region", &self.region)
            .field("service", &self.service)
            .field("scope", &self.scope)
            .field("also_signed", &self.also_signed)
            .finish_non_exhaustive()
    }
}

impl SigV4Signer {
    /// A signer for S3 in `region`, for the requests `scope` admits (for example
    /// `SignScope::new().allow("https://s3.eu-west-1.amazonaws.com")?`), with the system clock.
    pub fn new(credentials: AwsCredentials, region: AwsRegion, scope: SignScope) -> Self {
        SigV4Signer {
            credentials,
            region,
            service: S3_SERVICE.to_owned(),
            scope,
            clock: Box::new(SystemWallClock),
            also_signed: Vec::new(),
        }
    }

    /// [`SigV4Signer::new`] with credentials and region from the environment
    /// ([`AwsCredentials::from_env`], [`AwsRegion::from_env`]).
    ///
    /// # Errors
    /// As those two.
    pub fn from_env(scope: SignScope) -> Result<Self, AwsEnvError> {
        let credentials = AwsCredentials::from_env()?;
        let region = AwsRegion::from_env()?;
        Ok(SigV4Signer::new(credentials, region, scope))
    }

    /// Signs for another service than `s3` (the credential scope's service part).
    ///
    /// # Errors
    /// [`CredentialError`] unless it is non-empty ASCII letters, digits, `-`, `_` or `.`.
    pub fn with_service(mut self, service: &str) -> Result<Self, CredentialError> {
        check_scope_part(service, "AWS service name")?;
        self.service = service.to_owned();
        Ok(self)
    }

    /// Takes `x-amz-date` from `clock` (tests: a closure returning a fixed time).
    pub fn with_clock(mut self, clock: impl WallClock + Send + 'static) -> Self {
        self.clock = Box::new(clock);
        self
    }

    /// Also signs header `name` whenever a request carries it (for example `range` or `date`),
    /// besides `host`, every `x-amz-*`, `content-type` and `content-md5`. A signed header must
    /// reach the server unchanged, so add only headers no proxy rewrites. `authorization` is
    /// never signed.
    pub fn also_sign(mut self, name: HeaderName) -> Self {
        if name != AUTHORIZATION && !self.also_signed.contains(&name) {
            self.also_signed.push(name);
        }
        self
    }

    /// The region requests are signed for.
    pub fn region(&self) -> &AwsRegion {
        &self.region
    }

    /// The scope this signer keeps to.
    pub fn scope(&self) -> &SignScope {
        &self.scope
    }

    /// The scope, to exclude a URI learnt mid-flow ([`SignScope::add_exclusion`]).
    pub fn scope_mut(&mut self) -> &mut SignScope {
        &mut self.scope
    }

    /// The headers `request` gets when signed now, and its canonical request. Leaves `request`
    /// itself untouched, so an error changes nothing.
    pub(crate) fn prepare(&mut self, request: &Request<()>) -> Result<Prepared, SignError> {
        if Origin::of(request.uri()).is_none() {
            return Err(SignError::UnsupportedUri);
        }
        let date = AmzDate::from_unix(self.clock.unix_seconds())?;
        let mut headers = request.headers().clone();
        let mut hashes = headers.get_all(&X_AMZ_CONTENT_SHA256).iter();
        let payload_hash = match (hashes.next(), hashes.next()) {
            (None, _) => UNSIGNED_PAYLOAD.as_bytes().to_vec(),
            (Some(hash), None) => canonical_values(std::iter::once(hash)),
            // Which one S3 would take is unclear; refuse rather than guess.
            (Some(_), Some(_)) => return Err(SignError::InvalidHeader),
        };
        headers.insert(X_AMZ_DATE, header_value(&date.stamp, false)?);
        if !headers.contains_key(&X_AMZ_CONTENT_SHA256) {
            headers.insert(
                X_AMZ_CONTENT_SHA256,
                HeaderValue::from_static(UNSIGNED_PAYLOAD),
            );
        }
        if let Some(token) = &self.credentials.session_token {
            headers.insert(X_AMZ_SECURITY_TOKEN, header_value(token, true)?);
        }
        headers.remove(AUTHORIZATION);
        let canonical = canonical_request(
            request.method(),
            request.uri(),
            &headers,
            &self.also_signed,
            &payload_hash,
        )?;
        let authorization = authorization(
            &self.credentials,
            &date,
            self.region.as_str(),
            &self.service,
            &canonical,
        );
        headers.insert(AUTHORIZATION, header_value(&authorization, true)?);
        Ok(Prepared { headers, canonical })
    }
}

impl Signer for SigV4Signer {
    fn sign(&mut self, request: &mut Request<()>, _body: &Body) -> Result<Signed, SignError> {
        if let Decision::Skip(reason) = self.scope.decide(request.uri()) {
            return Ok(Signed::Skipped(reason));
        }
        let prepared = self.prepare(request)?;
        *request.headers_mut() = prepared.headers;
        Ok(Signed::Applied)
    }
}

/// What [`SigV4Signer::prepare`] computed for one request.
pub(crate) struct Prepared {
    /// The request's headers with `x-amz-date`, `x-amz-content-sha256`, the session token and
    /// `Authorization` set.
    pub(crate) headers: HeaderMap,
    #[cfg_attr(not(test), allow(dead_code))]
    pub(crate) canonical: CanonicalRequest,
}

fn header_value(text: &str, sensitive: bool) -> Result<HeaderValue, SignError> {
    let mut value = HeaderValue::from_str(text).map_err(|_| SignError::InvalidHeader)?;
    value.set_sensitive(sensitive);
    Ok(value)
}

// ---------------------------------------------------------------------------------------------
// The pure parts: dates, canonical request, string to sign, key and signature

/// A signing time: `YYYYMMDDTHHMMSSZ`, UTC.
pub(crate) struct AmzDate {
    pub(crate) stamp: String,
}

impl AmzDate {
    /// The time `seconds` after 1970-01-01T00:00:00Z.
    ///
    /// # Errors
    /// [`SignError::ClockBeforeEpoch`] for 0 (an unknown time) and for times after year 9999,
    /// which `x-amz-date` cannot write.
    pub(crate) fn from_unix(seconds: u64) -> Result<Self, SignError> {
        if seconds == 0 || seconds > LAST_SECOND {
            return Err(SignError::ClockBeforeEpoch);
        }
        let days = seconds / 86_400;
        let second_of_day = seconds % 86_400;
        let (year, month, day) = civil_from_days(days);
        Ok(AmzDate {
            stamp: format!(
                "{year:04}{month:02}{day:02}T{:02}{:02}{:02}Z",
                second_of_day / 3600,
                second_of_day / 60 % 60,
                second_of_day % 60
            ),
        })
    }

    /// `YYYYMMDD`, the date of the credential scope.
    pub(crate) fn day(&self) -> &str {
        self.stamp.get(..8).unwrap_or_default()
    }
}

/// The proleptic Gregorian (year, month, day) of day `days` after 1970-01-01 (H. Hinnant's
/// `civil_from_days`, for days ≥ 0).
fn civil_from_days(days: u64) -> (u64, u64, u64) {
    // Shift the epoch to 0000-03-01 so leap days fall at the end of each year.
    let z = days + 719_468;
    let era = z / 146_097;
    let day_of_era = z % 146_097;
    let year_of_era =
        (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let shifted_month = (5 * day_of_year + 2) / 153;
    let day = day_of_year - (153 * shifted_month + 2) / 5 + 1;
    let month = if shifted_month < 10 {
        shifted_month + 3
    } else {
        shifted_month - 9
    };
    let year = year_of_era + era * 400 + u64::from(month <= 2);
    (year, month, day)
}

/// A canonical request and its signed header list.
pub(crate) struct CanonicalRequest {
    /// The bytes hashed into the string to sign (header values may carry non-ASCII bytes).
    pub(crate) text: Vec<u8>,
    /// The signed header names, sorted, joined by `;`.
    pub(crate) signed_headers: String,
}

/// Whether header `name` is signed: every `x-amz-*`, `content-type`, `content-md5`, and those
/// in `also_signed`; never `authorization`. (`host` is handled on its own.)
fn is_signed(name: &HeaderName, also_signed: &[HeaderName]) -> bool {
    *name != AUTHORIZATION
        && *name != HOST
        && (name.as_str().starts_with("x-amz-")
            || *name == CONTENT_TYPE
            || *name == CONTENT_MD5
            || also_signed.contains(name))
}

/// The canonical request of S12 for `method uri` with `headers` (which must already hold
/// `x-amz-date` and the rest of what is to be signed) and `payload_hash`.
///
/// # Errors
/// [`SignError::UnsupportedUri`] without an absolute http(s) URI; [`SignError::InvalidHeader`]
/// for several `Host` headers.
pub(crate) fn canonical_request(
    method: &Method,
    uri: &Uri,
    headers: &HeaderMap,
    also_signed: &[HeaderName],
    payload_hash: &[u8],
) -> Result<CanonicalRequest, SignError> {
    let host = host_value(uri, headers)?;
    let mut lines: Vec<(&str, Vec<u8>)> = vec![("host", host)];
    for name in headers.keys() {
        if is_signed(name, also_signed) {
            lines.push((
                name.as_str(),
                canonical_values(headers.get_all(name).iter()),
            ));
        }
    }
    lines.sort_unstable_by(|a, b| a.0.cmp(b.0));

    let mut text = Vec::new();
    text.extend_from_slice(method.as_str().as_bytes());
    text.push(b'\n');
    text.extend_from_slice(canonical_uri(uri.path()).as_bytes());
    text.push(b'\n');
    text.extend_from_slice(canonical_query(uri.query()).as_bytes());
    text.push(b'\n');
    for (name, value) in &lines {
        text.extend_from_slice(name.as_bytes());
        text.push(b':');
        text.extend_from_slice(value);
        text.push(b'\n');
    }
    text.push(b'\n');
    let names: Vec<&str> = lines.iter().map(|(name, _)| *name).collect();
    let signed_headers = names.join(";");
    text.extend_from_slice(signed_headers.as_bytes());
    text.push(b'\n');
    text.extend_from_slice(payload_hash);
    Ok(CanonicalRequest {
        text,
        signed_headers,
    })
}

/// The `host` value: the request's own `Host` header if it has one (the driver sends that),
/// else the URI's host as written, with the port when it is not the scheme's default (as
/// drivers write `Host`).
fn host_value(uri: &Uri, headers: &HeaderMap) -> Result<Vec<u8>, SignError> {
    let origin = Origin::of(uri).ok_or(SignError::UnsupportedUri)?;
    let mut given = headers.get_all(HOST).iter();
    match (given.next(), given.next()) {
        (Some(value), None) => return Ok(canonical_values(std::iter::once(value))),
        (Some(_), Some(_)) => return Err(SignError::InvalidHeader),
        (None, _) => {}
    }
    let host = uri.authority().map_or("", |authority| authority.host());
    let mut value = host.as_bytes().to_vec();
    if origin.port != default_port(origin.https) {
        value.extend_from_slice(format!(":{}", origin.port).as_bytes());
    }
    Ok(value)
}

/// The values of one header, each trimmed with inner runs of spaces and tabs made one space,
/// joined by `,`.
fn canonical_values<'a>(values: impl Iterator<Item = &'a HeaderValue>) -> Vec<u8> {
    let mut out = Vec::new();
    for (i, value) in values.enumerate() {
        if i > 0 {
            out.push(b',');
        }
        let mut space_pending = false;
        let mut started = false;
        for &byte in value.as_bytes() {
            if byte == b' ' || byte == b'\t' {
                space_pending = started;
            } else {
                if space_pending {
                    out.push(b' ');
                    space_pending = false;
                }
                out.push(byte);
                started = true;
            }
        }
    }
    out
}

/// Decodes `%XX` escapes (malformed ones stay as they are; `+` stays a plus) and encodes again
/// with RFC 3986's unreserved set, uppercase hex.
fn reencode(text: &str) -> String {
    let bytes: Vec<u8> = percent_decode_str(text).collect();
    encode(&bytes)
}

/// The canonical URI (S12): each `/`-separated segment re-encoded once, nothing normalised.
fn canonical_uri(path: &str) -> String {
    if path.is_empty() {
        return "/".to_owned();
    }
    let segments: Vec<String> = path.split('/').map(reencode).collect();
    segments.join("/")
}

/// The canonical query (S12): `name=value` pairs re-encoded, sorted by name then value, joined
/// by `&`; a bare name gets an empty value; empty pieces (`a&&b`) are no parameters.
fn canonical_query(query: Option<&str>) -> String {
    let Some(query) = query else {
        return String::new();
    };
    let mut pairs: Vec<(String, String)> = query
        .split('&')
        .filter(|piece| !piece.is_empty())
        .map(|piece| {
            let (name, value) = piece.split_once('=').unwrap_or((piece, ""));
            (reencode(name), reencode(value))
        })
        .collect();
    pairs.sort_unstable();
    let pairs: Vec<String> = pairs
        .into_iter()
        .map(|(name, value)| format!("{name}={value}"))
        .collect();
    pairs.join("&")
}

/// The `Authorization` value for `canonical`, signed at `date` for `region` and `service`.
pub(crate) fn authorization(
    credentials: &AwsCredentials,
    date: &AmzDate,
    region: &str,
    service: &str,
    canonical: &CanonicalRequest,
) -> String {
    let scope = credential_scope(date, region, service);
    let string_to_sign = string_to_sign(date, &scope, &canonical.text);
    let key = signing_key(&credentials.secret_access_key, date.day(), region, service);
    let signature = hex(&hmac_sha256(&key, string_to_sign.as_bytes()));
    format!(
        "{ALGORITHM} Credential={}/{scope}, SignedHeaders={}, Signature={signature}",
        credentials.access_key_id, canonical.signed_headers
    )
}

/// `<date>/<region>/<service>/aws4_request`.
pub(crate) fn credential_scope(date: &AmzDate, region: &str, service: &str) -> String {
    format!("{}/{region}/{service}/aws4_request", date.day())
}

/// The string to sign: the algorithm, the time, the scope and the hex SHA-256 of the canonical
/// request, joined by newlines.
pub(crate) fn string_to_sign(date: &AmzDate, scope: &str, canonical: &[u8]) -> String {
    format!(
        "{ALGORITHM}\n{}\n{scope}\n{}",
        date.stamp,
        hex(&Sha256::digest(canonical))
    )
}

/// The signing key: HMAC-SHA256 chained over `"AWS4" + secret`, the date, region, service and
/// `aws4_request`.
pub(crate) fn signing_key(secret: &str, day: &str, region: &str, service: &str) -> [u8; 32] {
    let mut key = hmac_sha256(format!("AWS4{secret}").as_bytes(), day.as_bytes());
    for part in [region, service, "aws4_request"] {
        key = hmac_sha256(&key, part.as_bytes());
    }
    key
}

pub(crate) fn hmac_sha256(key: &[u8], data: &[u8]) -> [u8; 32] {
    // HMAC takes keys of any length; `new_from_slice` cannot fail for it.
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(key)
        .unwrap_or_else(|_| unreachable!("HMAC accepts keys of any length"));
    mac.update(data);
    mac.finalize().into_bytes().into()
}

/// Lowercase hexadecimal.
pub(crate) fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut text = String::with_capacity(bytes.len() * 2);
    for &byte in bytes {
        text.push(char::from(DIGITS[usize::from(byte >> 4)]));
        text.push(char::from(DIGITS[usize::from(byte & 0x0f)]));
    }
    text
}
