//! Google Cloud Storage resumable upload (rules G1–G12 in `docs/protocols`), the protocol behind
//! Twitter's batch compliance `upload_url`.
//!
//! The whole state machine is in this file: [`GcsUpload::poll_action`] decides the next step
//! from the state, and `handle_*` move the state on. In words:
//!
//! ```text
//!  Start ──201/200 + Location──▶ Upload ──308 Range──▶ Upload … ──200/201──▶ Done(Ok)
//!    │                             │  ▲
//!    │                 failure/5xx │  │ 308 Range
//!    │                             ▼  │
//!    │                       Wait ─▶ Query (PUT bytes */T)
//!    └── Resume/Session (G3) ──────────▶ Query
//!  404/410 ─▶ Done(SessionGone) · final 4xx ─▶ Done(Server) · bad Range ─▶ Done(Protocol)
//!  cancel() ─▶ Cancel (DELETE) ──499──▶ Done(Cancelled)
//! ```
//!
//! The core checksums the source front to back. Bytes of a chunk it has not seen yet are
//! checksummed as they are sent, when the driver reports them ([`Transmit::report_sent`],
//! [`Upload::handle_sent`]); it asks for bytes with [`Action::Read`] only when it must see
//! them before a request: the final chunk (its headers carry the checksums), a chunk of a
//! source of unknown size (to learn where it ends), bytes a driver did not report, and, before
//! accepting a completion, any part of the source it has never seen.

use std::fmt;
use std::ops::Range;
use std::time::Instant;

use bytes::Bytes;
use http::header::{CONTENT_LENGTH, CONTENT_TYPE};
use http::{HeaderMap, HeaderName, HeaderValue, Method, Response, StatusCode, Uri};

use crate::action::{
    Action, Body, Progress, Read, RequestId, Stats, Transmit, TransportFailure, Upload,
};
use crate::checksum::{self, Checksums, Hasher};
use crate::chunk::{ChunkSize, GCS_GRANULE};
use crate::engine::Engine;
use crate::error::{Error, IntegrityError, ProtocolViolation, RetryCause, UsageError};
use crate::range::parse_decimal;
use crate::range::{RangeForm, content_range, parse_range};
use crate::response;
use crate::retry::{self, Attempt, RetryPolicy, Retrying};
use crate::secret::{SessionUri, check_absolute_http};

const X_GOOG_RESUMABLE: HeaderName = HeaderName::from_static("x-goog-resumable");
const X_GOOG_HASH: HeaderName = HeaderName::from_static("x-goog-hash");
const X_UPLOAD_CONTENT_TYPE: HeaderName = HeaderName::from_static("x-upload-content-type");
const X_UPLOAD_CONTENT_LENGTH: HeaderName = HeaderName::from_static("x-upload-content-length");
const X_GUPLOADER_NO_308: HeaderName = HeaderName::from_static("x-guploader-no-308");
const X_HTTP_STATUS_CODE_OVERRIDE: &str = "x-http-status-code-override";
const X_GOOG_STORED_CONTENT_LENGTH: &str = "x-goog-stored-content-length";
const PERMANENT_REDIRECT: u16 = 308;

/// The largest final request whose bytes the core reads before sending it, to put the whole
/// source's checksums in its `x-goog-hash` (G7): 16 MiB. A larger final request (one request
/// for a whole file, [`GcsConfig::ONE_REQUEST`]) is checksummed as it is sent and verified
/// against the checksums the completion reports instead, so the source is read once.
pub const HASH_HEADER_MAX: u64 = 16 << 20;

/// How the upload begins.
#[derive(Clone)]
pub enum Start {
    /// XML API or signed URL (G1): `POST url` with `x-goog-resumable: start`. Signed URLs sign
    /// exactly the headers sent, so add no extra headers unless the URL was signed with them.
    Xml {
        /// The upload URL (for example Twitter's compliance `upload_url`).
        url: Uri,
        /// The object's content type (signed URLs sign it; `text/plain` for compliance ids).
        content_type: HeaderValue,
    },
    /// JSON API (G2): `POST …/upload/storage/v1/b/BUCKET/o?uploadType=resumable[&name=N]`,
    /// usually with `Authorization` in [`GcsConfig::start_headers`].
    Json {
        /// The `uploadType=resumable` URL.
        url: Uri,
        /// The object's content type, sent as `X-Upload-Content-Type`.
        content_type: HeaderValue,
        /// Object metadata as a JSON document (for example `{"name":"ids.txt"}`), if any.
        metadata: Option<Bytes>,
    },
    /// An existing session whose history is unknown (G3): the first request is a status query.
    Session(SessionUri),
    /// A session saved from an earlier run with [`GcsUpload::resume_state`] (G3).
    Resume(ResumeState),
}

impl fmt::Debug for Start {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Start::Xml { .. } => "Start::Xml(<redacted>)",
            Start::Json { .. } => "Start::Json(<redacted>)",
            Start::Session(_) => "Start::Session(<redacted>)",
            Start::Resume(_) => "Start::Resume(<redacted>)",
        })
    }
}

/// Settings of one GCS upload.
#[derive(Clone)]
#[non_exhaustive]
pub struct GcsConfig {
    /// Bytes per request; a non-zero multiple of 256 KiB (G4), else [`GcsUpload::new`] fails
    /// with [`UsageError::ChunkSize`]. Default 8 MiB.
    pub chunk_size: u64,
    /// The source's size, or `None` for a stream whose end is learned by reading it.
    pub total: Option<u64>,
    /// Checksums computed over the source, sent in `x-goog-hash` and checked at the end.
    pub checksums: Checksums,
    /// Retry policy (G8).
    pub retry: RetryPolicy,
    /// Extra headers for the start request only (for example `Authorization` for the JSON
    /// API). Never sent to the session URI. Values are marked sensitive.
    pub start_headers: HeaderMap,
    /// A fingerprint of the source chosen by the caller (path, size, mtime…), kept in the
    /// resume state so a later run can tell whether the state belongs to the same source.
    pub fingerprint: String,
    /// Send `X-GUploader-No-308: yes`, asking the server to answer 200 + override (G11).
    pub no_308: bool,
    /// On resuming a saved state, read the source again from its start and compare it with
    /// the checksum the state recorded before anything is sent (default `true`): an input that
    /// changed since the interrupted run ends the upload with [`UsageError::SourceChanged`]
    /// instead of storing a mix of two inputs. With `false`, the saved checksum is continued
    /// unread: faster for a huge file, and the caller accepts that the stored object may mix
    /// two versions of it. Needs [`Checksums::crc32c`]: without it nothing can be compared,
    /// and only the caller's [`GcsConfig::fingerprint`] tells the source is the same.
    pub recheck_prefix: bool,
}

impl GcsConfig {
    /// A [`GcsConfig::chunk_size`] that sends the rest of the source in one request, as
    /// Google recommends for resumable uploads of a file: one streaming request, checksummed
    /// as it is sent; after a failure, a status query and one new request from what the
    /// server holds. Use it only when the driver can read any range of the source again (a
    /// file, a buffer): a driver of a stream must keep a whole request's bytes to retry it,
    /// so streams keep bounded chunks.
    pub const ONE_REQUEST: u64 = u64::MAX / GCS_GRANULE * GCS_GRANULE;

    /// Defaults for a source of `total` bytes (`None`: unknown): 8 MiB chunks, CRC32C,
    /// the default retry policy.
    pub fn new(total: Option<u64>) -> Self {
        GcsConfig {
            chunk_size: 8 << 20,
            total,
            checksums: Checksums::default(),
            retry: RetryPolicy::default(),
            start_headers: HeaderMap::new(),
            fingerprint: String::new(),
            no_308: false,
            recheck_prefix: true,
        }
    }
}

impl fmt::Debug for GcsConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GcsConfig")
            .field("chunk_size", &self.chunk_size)
            .field("total", &self.total)
            .field("checksums", &self.checksums)
            .field("retry", &self.retry)
            .field(
                "start_headers",
                &crate::secret::RedactedHeaders(&self.start_headers),
            )
            .field("no_308", &self.no_308)
            .field("recheck_prefix", &self.recheck_prefix)
            .finish_non_exhaustive()
    }
}

/// What a driver saves so a later run can resume the same session (G3).
///
/// Get it from [`GcsUpload::resume_state`] after every input and save it whenever it changed
/// (before sending the next request); pass it back as [`Start::Resume`]. It holds the session
/// URI, a bearer capability: store it with owner-only permissions.
#[derive(Clone, PartialEq, Eq, Debug)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct ResumeState {
    /// The session URI (redacted in `Debug`).
    pub session: SessionUri,
    /// The source's size, once known.
    pub total: Option<u64>,
    /// Bytes the server acknowledged holding.
    pub persisted: u64,
    /// The end of the furthest byte sent, as far as the saving run knew. A resumed run does
    /// not take it as a bound on what the server holds: a state saved before a power loss can
    /// be behind the server, which then holds more; the source's size is the bound (G5).
    /// `None` when unknown (a bare session URI, G3, that has not been queried yet).
    pub sent: Option<u64>,
    /// CRC32C of the source's first `len` bytes: a resumed run reads those bytes again and
    /// compares (see [`GcsConfig::recheck_prefix`]).
    pub crc32c: Option<HashedPrefix>,
    /// The caller's fingerprint of the source (see [`GcsConfig::fingerprint`]).
    pub fingerprint: String,
    /// The server held bytes, when this session was resumed from a bare session URI (or from
    /// a state it could not check), that no run of this upload is known to have sent: its
    /// completion must then be proven by a checksum (G7). Carried from run to run.
    #[cfg_attr(feature = "serde", serde(default))]
    pub foreign: bool,
}

/// A checksum of a prefix of the source.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct HashedPrefix {
    /// How many bytes from the start are covered.
    pub len: u64,
    /// Their CRC32C.
    pub crc32c: u32,
}

/// Fields of the GCS object resource returned on completion (JSON API, G7).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct ObjectResource {
    /// Object name.
    pub name: Option<String>,
    /// Bucket name.
    pub bucket: Option<String>,
    /// Object generation.
    pub generation: Option<String>,
    /// Size in bytes.
    pub size: Option<u64>,
    /// CRC32C, decoded from base64 big-endian.
    pub crc32c: Option<u32>,
    /// MD5, decoded from base64.
    pub md5: Option<[u8; 16]>,
    /// The object's media download link, if given.
    pub media_link: Option<String>,
}

/// Which checks of the stored object against the source were made at completion (G7).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Verification {
    /// The server reported a size and it equals the source's.
    pub size: bool,
    /// The server reported a CRC32C and it equals the source's.
    pub crc32c: bool,
    /// The server reported an MD5 and it equals the source's.
    pub md5: bool,
    /// The checksums compared were computed over the whole source as it is now, from its
    /// first byte. `false` when a resume continued a saved checksum without reading the
    /// uploaded part again ([`GcsConfig::recheck_prefix`] off): then the check proves the
    /// server holds what the runs sent, not that the source is unchanged.
    pub whole_source: bool,
}

/// A finished GCS upload.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct GcsCompletion {
    /// The final status (200 or 201).
    pub status: StatusCode,
    /// The object's size: every one of these bytes was acknowledged by the server.
    pub size: u64,
    /// The object resource, when the body carried one.
    pub object: Option<ObjectResource>,
    /// CRC32C computed over the source, when computed.
    pub crc32c: Option<u32>,
    /// MD5 computed over the source, when computed.
    pub md5: Option<[u8; 16]>,
    /// What was checked against the server's answer.
    pub verified: Verification,
    /// The final response body (at most [`response::MAX_PARSED_BODY`] bytes are kept).
    pub body: Bytes,
}

/// The request kinds of this protocol.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Kind {
    /// G1/G2.
    Start,
    /// G6: `PUT bytes */T`.
    Query,
    /// G4: a chunk, or the final empty `bytes */T` request (empty range, declares total).
    Chunk {
        range: Range<u64>,
        total: Option<u64>,
    },
    /// G10.
    Cancel,
}

/// Where the upload stands: what comes next, with what only that step needs.
#[derive(Clone, Debug)]
enum Phase {
    /// The start request is due (G1, G2).
    Start,
    /// A resumed upload reads the source again from its start and compares it with the saved
    /// checksum before it sends anything (G3).
    CheckPrefix(HashedPrefix),
    /// A status query is due (G6): first on a resumed session, and after every failure (G8).
    Query,
    /// The next chunk is due, from the persisted offset (G4, G5).
    Upload,
    /// The server said complete: the rest of the source is read, then the answer is checked
    /// against it (G7).
    Verify(Completing),
    /// The session is to be deleted (G10).
    Cancel,
}

/// A completion (200/201) held until the source has been read far enough to check it.
#[derive(Clone, Debug)]
struct Completing {
    status: StatusCode,
    body: Bytes,
    header_hash: checksum::GoogHash,
    /// `x-goog-stored-content-length`, when given (G7).
    stored_length: Option<u64>,
}

/// What an answer to a request means, read against the upload's state.
enum Reply {
    /// The start made a session (G1, G2).
    Created(SessionUri),
    /// The session holds this many bytes (308, or 200 + override, G5, G11).
    Progress(u64),
    /// The session says it is complete (G7).
    Complete(Completing),
    /// The session is gone (404/410, G9).
    Gone(StatusCode),
    /// A cancel was answered (G10).
    Cancelled,
    /// A retryable failure (G8).
    Retry(RetryCause, Option<std::time::Duration>),
    /// The upload ends with this error.
    End(Error),
}

#[derive(Clone)]
enum Begin {
    Xml {
        url: Uri,
        content_type: HeaderValue,
    },
    Json {
        url: Uri,
        content_type: HeaderValue,
        metadata: Option<Bytes>,
    },
    /// The session already exists.
    Existing,
}

/// The session, once it exists: where it is and what the server holds of it.
#[derive(Clone, Debug)]
struct Session {
    uri: SessionUri,
    /// Bytes the server acknowledged holding (G5).
    persisted: u64,
    /// Upper bound on what the server can hold: the end of the furthest byte sent in this run;
    /// `None` for a resumed session until its first answer (the source's size bounds it then).
    sent: Option<u64>,
    /// A resumed state's `sent`: not a bound (it may be behind the server), but when it is 0
    /// no run ever sent a byte, which reads gcp-storage-emulator's `bytes=0-0` (G5).
    saved_sent: Option<u64>,
    /// Until the session's first answer: how far from the start the server's bytes are known
    /// to be this source's (a resume's checked prefix; 0 for a bare session). `None` for a
    /// session this upload started, whose every byte it sent.
    vouched: Option<u64>,
    /// The server held bytes, when first asked, beyond what this upload can vouch for: a
    /// completion must then be proven by a checksum (G7).
    foreign: bool,
    /// Resumed (from a state or a bare URI), not started by this upload.
    resumed: bool,
}

/// What the core knows of the source: its size once known, and the checksums of the prefix
/// it has seen.
#[derive(Clone)]
struct Seen {
    total: Option<u64>,
    hasher: Hasher,
    /// The checksums are continued from a saved state, not computed from the first byte.
    continued: bool,
}

/// A GCS resumable upload: a pure state machine the driver polls. See the crate docs for the
/// driving loop and [`Upload`] for the contract.
pub struct GcsUpload {
    begin: Begin,
    chunk: ChunkSize,
    checksums: Checksums,
    start_headers: HeaderMap,
    fingerprint: String,
    no_308: bool,

    phase: Phase,
    session: Option<Session>,
    seen: Seen,
    engine: Engine<Kind, GcsCompletion>,
}

impl fmt::Debug for GcsUpload {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GcsUpload")
            .field("phase", &self.phase)
            .field("total", &self.seen.total)
            .field("persisted", &self.persisted())
            .field("sent", &self.session.as_ref().and_then(|s| s.sent))
            .field("in_flight", &self.engine.flights().len())
            .field("outcome", &self.engine.outcome())
            .finish_non_exhaustive()
    }
}

impl GcsUpload {
    /// Creates an upload. Nothing is sent until the driver polls.
    ///
    /// # Errors
    /// [`UsageError`] for a chunk size that is not a multiple of 256 KiB, a URL that is not
    /// absolute http(s), invalid start headers, or a resume state that does not fit `config`
    /// (different fingerprint or total).
    pub fn new(start: Start, config: GcsConfig) -> Result<Self, UsageError> {
        let chunk = ChunkSize::new(config.chunk_size, GCS_GRANULE)?;
        let mut start_headers = config.start_headers;
        for value in start_headers.values_mut() {
            value.set_sensitive(true);
        }
        let mut upload = GcsUpload {
            begin: Begin::Existing,
            chunk,
            checksums: config.checksums,
            start_headers,
            fingerprint: config.fingerprint,
            no_308: config.no_308,
            phase: Phase::Start,
            session: None,
            seen: Seen {
                total: config.total,
                hasher: Hasher::new(config.checksums),
                continued: false,
            },
            engine: Engine::new(config.retry),
        };
        match start {
            Start::Xml { url, content_type } => {
                check_absolute_http(&url, "upload URL")?;
                upload.begin = Begin::Xml { url, content_type };
            }
            Start::Json {
                url,
                content_type,
                metadata,
            } => {
                check_absolute_http(&url, "upload URL")?;
                upload.begin = Begin::Json {
                    url,
                    content_type,
                    metadata,
                };
            }
            Start::Session(uri) => {
                // A history this upload did not see: nothing the server holds is vouched for.
                upload.session = Some(Session {
                    uri,
                    persisted: 0,
                    sent: None,
                    saved_sent: None,
                    vouched: Some(0),
                    foreign: false,
                    resumed: true,
                });
                upload.phase = Phase::Query;
            }
            Start::Resume(state) => upload.adopt(state, config.recheck_prefix)?,
        }
        Ok(upload)
    }

    fn adopt(&mut self, state: ResumeState, recheck_prefix: bool) -> Result<(), UsageError> {
        if state.fingerprint != self.fingerprint {
            return Err(UsageError::StateMismatch(
                "the source's fingerprint differs",
            ));
        }
        match (self.seen.total, state.total) {
            (Some(a), Some(b)) if a != b => {
                return Err(UsageError::StateMismatch("the source's size differs"));
            }
            (None, Some(t)) => self.seen.total = Some(t),
            _ => {}
        }
        let sent_bound = state.sent.unwrap_or(u64::MAX);
        if state.persisted > sent_bound
            || self
                .seen
                .total
                .is_some_and(|t| state.sent.is_some_and(|s| s > t))
        {
            return Err(UsageError::StateMismatch("its offsets are inconsistent"));
        }
        let prefix = state
            .crc32c
            .filter(|p| self.checksums.crc32c && self.seen.total.is_none_or(|t| p.len <= t));
        let claimed_sent = state.sent.unwrap_or(0).max(state.persisted);
        let (phase, vouched) = match prefix {
            // The source is read again from its start and compared with the saved checksum
            // before anything is sent: a changed input is refused, not mixed in.
            Some(prefix) if (recheck_prefix || self.checksums.md5) && prefix.len > 0 => {
                (Phase::CheckPrefix(prefix), 0)
            }
            Some(prefix) if recheck_prefix || self.checksums.md5 => (Phase::Query, prefix.len),
            // The caller accepts the risk: the saved CRC32C is continued unread.
            Some(prefix) => {
                self.seen.hasher = Hasher::resume_crc32c(prefix.len, prefix.crc32c);
                self.seen.continued = true;
                (Phase::Query, claimed_sent)
            }
            // No checksum to compare (checksums are off): the caller's fingerprint is all a
            // resume can check, so what the state says was sent is taken as this source's.
            None => (Phase::Query, claimed_sent),
        };
        self.phase = phase;
        self.session = Some(Session {
            uri: state.session,
            persisted: state.persisted,
            // G5 within a run; across runs the saved `sent` may be behind the server (a state
            // saved before a power loss), so the source's size bounds what it may claim.
            sent: None,
            saved_sent: state.sent,
            vouched: Some(vouched),
            foreign: state.foreign,
            resumed: true,
        });
        Ok(())
    }

    /// This upload nested in another (a compliance job's): it hands out odd request ids, the
    /// outer upload even ones, so outcomes are routed by parity.
    pub(crate) fn nested(mut self) -> Self {
        self.engine.use_ids(1, 2);
        self
    }

    // ---- getters ----

    /// Bytes the server has acknowledged holding so far.
    pub fn persisted(&self) -> u64 {
        self.session.as_ref().map_or(0, |s| s.persisted)
    }

    /// The source's size, once known.
    pub fn total(&self) -> Option<u64> {
        self.seen.total
    }

    /// The session URI, once the start request has succeeded (a secret: do not log it).
    pub fn session(&self) -> Option<&SessionUri> {
        self.session.as_ref().map(|s| &s.uri)
    }

    // ---- inputs ----

    /// What the request `kind` was, for retry reports and errors.
    fn attempt(&self, kind: &Kind) -> Attempt {
        match (kind, &self.begin) {
            (Kind::Start, Begin::Xml { url, .. } | Begin::Json { url, .. }) => {
                Attempt::new(url, None)
            }
            (Kind::Chunk { range, .. }, _) => {
                Attempt::new(&self.session_uri(), Some(range.clone()))
            }
            _ => Attempt::new(&self.session_uri(), None),
        }
    }

    /// What the answer to `kind` means (G1–G11).
    fn classify(&self, kind: &Kind, response: &Response<Bytes>) -> Reply {
        let status = effective_status(response);
        let retryable = self.engine.policy().retries_status(status);
        let retry = || {
            Reply::Retry(
                RetryCause::Status(status),
                retry::retry_after(response.headers()),
            )
        };
        let refused = || Reply::End(response::final_error(status, response.body()));
        match kind {
            Kind::Start if status == StatusCode::OK || status == StatusCode::CREATED => {
                let base = match &self.begin {
                    Begin::Xml { url, .. } | Begin::Json { url, .. } => url,
                    Begin::Existing => {
                        return Reply::End(ProtocolViolation::UnexpectedStatus(status).into());
                    }
                };
                // `location` only yields absolute http(s), which SessionUri accepts.
                match response::location(response.headers(), base).and_then(|uri| {
                    SessionUri::new(uri).map_err(|_| ProtocolViolation::MissingLocation)
                }) {
                    Ok(uri) => Reply::Created(uri),
                    Err(v) => Reply::End(v.into()),
                }
            }
            Kind::Start if retryable => retry(),
            Kind::Start => refused(),
            // 499 is GCS's answer (G10); a session already gone is cancelled all the same.
            Kind::Cancel
                if status.as_u16() == 499
                    || status == StatusCode::NOT_FOUND
                    || status == StatusCode::GONE
                    || status.is_success() =>
            {
                Reply::Cancelled
            }
            Kind::Cancel if retryable => retry(),
            Kind::Cancel => refused(),
            Kind::Query | Kind::Chunk { .. } => {
                if status.as_u16() == PERMANENT_REDIRECT {
                    return match self.read_persisted(response.headers()) {
                        Ok(claimed) => Reply::Progress(claimed),
                        Err(v) => Reply::End(v.into()),
                    };
                }
                if status == StatusCode::OK || status == StatusCode::CREATED {
                    return match stored_length(response.headers()) {
                        Ok(stored_length) => {
                            let mut body = response.body().clone();
                            body.truncate(response::MAX_PARSED_BODY);
                            Reply::Complete(Completing {
                                status,
                                header_hash: checksum::parse_x_goog_hash(response.headers()),
                                stored_length,
                                body,
                            })
                        }
                        Err(v) => Reply::End(v.into()),
                    };
                }
                if status == StatusCode::NOT_FOUND || status == StatusCode::GONE {
                    return Reply::Gone(status);
                }
                if retryable { retry() } else { refused() }
            }
        }
    }

    /// Every transition of the protocol: what the answer (`reply`) to the request `kind`
    /// changes, and what comes next.
    fn transition(&mut self, now: Instant, kind: Kind, reply: Reply) {
        match (kind, reply) {
            (_, Reply::End(error)) => self.engine.finish(Err(error)),
            (Kind::Start, Reply::Created(uri)) => {
                self.session = Some(Session {
                    uri,
                    persisted: 0,
                    sent: Some(0),
                    saved_sent: None,
                    vouched: None,
                    foreign: false,
                    resumed: false,
                });
                self.phase = Phase::Upload;
                self.engine.progress();
            }
            (Kind::Cancel, Reply::Cancelled) => self.engine.finish(Err(Error::Cancelled)),
            (kind @ (Kind::Start | Kind::Cancel), Reply::Retry(cause, after)) => {
                // The same request after the wait.
                let attempt = self.attempt(&kind);
                self.engine.retry(now, cause, after, attempt);
            }
            (kind @ (Kind::Query | Kind::Chunk { .. }), Reply::Progress(claimed)) => {
                let Some(session) = self.session.as_mut() else {
                    return self.stuck();
                };
                if session.resumed && self.engine.stats().resumed_from.is_none() {
                    self.engine.stats_mut().resumed_from = Some(claimed);
                }
                // The first answer of a resumed or bare session: bytes held beyond what this
                // upload vouches for came from elsewhere, so completion needs a checksum (G7).
                if let Some(vouched) = session.vouched.take() {
                    session.foreign |= claimed > vouched;
                }
                let progressed = claimed > session.persisted;
                session.persisted = claimed;
                // A bare session (G3) learns its first bound here.
                session.sent = Some(session.sent.map_or(claimed, |s| s.max(claimed)));
                self.phase = Phase::Upload;
                if progressed {
                    self.engine.progress();
                } else if matches!(kind, Kind::Chunk { .. }) {
                    // The server took a chunk and stored nothing new: retry it after a wait
                    // (the 308 said where it stands: no status query), but count it so a server
                    // that never makes progress cannot keep us looping.
                    let attempt = self.attempt(&kind);
                    self.engine
                        .retry(now, RetryCause::NoProgress, None, attempt);
                }
            }
            (kind @ (Kind::Query | Kind::Chunk { .. }), Reply::Complete(completing)) => {
                self.on_complete(&kind, completing)
            }
            (Kind::Query | Kind::Chunk { .. }, Reply::Gone(status)) => {
                self.engine.finish(Err(Error::SessionGone { status }))
            }
            (kind @ (Kind::Query | Kind::Chunk { .. }), Reply::Retry(cause, after)) => {
                // After a failure on the session the next request is a status query (G8).
                let attempt = self.attempt(&kind);
                if self.engine.retry(now, cause, after, attempt) {
                    self.phase = Phase::Query;
                }
            }
            // A start answered like a session request, a session request like a start: no
            // reply of `classify` for these kinds.
            (_, Reply::Created(_) | Reply::Progress(_) | Reply::Complete(_))
            | (_, Reply::Gone(_) | Reply::Cancelled) => self.stuck(),
        }
    }

    /// A state `classify` cannot produce: end rather than go on from it.
    fn stuck(&mut self) {
        self.engine.finish(Err(Error::Internal(
            "the GCS upload reached a state it has no transition for",
        )));
    }

    /// Reads the persisted count from a 308 (G5): no `Range` means 0; the range must start at
    /// 0, must not claim more than was sent, and must not go backwards.
    fn read_persisted(&self, headers: &HeaderMap) -> Result<u64, ProtocolViolation> {
        let mut ranges = headers.get_all(http::header::RANGE).iter();
        let claimed = match (ranges.next(), ranges.next()) {
            (None, _) => 0,
            (Some(_), Some(_)) => return Err(ProtocolViolation::MalformedRange),
            (Some(value), None) => {
                let (start, end) = parse_range(value.as_bytes(), RangeForm::BytesPrefix)?;
                if start != 0 {
                    return Err(ProtocolViolation::RangeNotFromZero { start });
                }
                end
            }
        };
        let session = self.session.as_ref();
        let sent = session.and_then(|s| s.sent);
        let persisted = session.map_or(0, |s| s.persisted);
        let total = self.seen.total;
        // gcp-storage-emulator answers `bytes=0-0` before any data: a byte that was never
        // sent cannot be stored, so that reading means nothing is (G5). GCS itself never
        // claims one byte of an unfinished upload (it persists 256 KiB units).
        let saved_sent = session.and_then(|s| s.saved_sent);
        if claimed == 1 && sent.or(saved_sent).or(total) == Some(0) {
            return Ok(0);
        }
        if let Some(bound) = sent.or(total)
            && claimed > bound
        {
            return Err(ProtocolViolation::RangeBeyondSent {
                claimed,
                sent: bound,
            });
        }
        if let Some(total) = total
            && claimed > total
        {
            return Err(ProtocolViolation::RangeBeyondSent {
                claimed,
                sent: total,
            });
        }
        if claimed < persisted {
            return Err(ProtocolViolation::PersistedWentBackwards {
                before: persisted,
                now: claimed,
            });
        }
        Ok(claimed)
    }

    /// A 200/201 on the session (G7): accepted only once the whole source was sent with its
    /// total declared. It is checked against the object resource and `x-goog-hash` once the
    /// core has seen the whole source (a resumed upload reads what it has not seen first).
    fn on_complete(&mut self, kind: &Kind, completing: Completing) {
        let sent = self.session.as_ref().and_then(|s| s.sent);
        let total = self.seen.total;
        let premature = match kind {
            Kind::Chunk {
                range,
                total: declared,
            } => declared.is_none_or(|t| range.end != t),
            // A bare or resumed session (G3) has no bound: its size is learned by reading.
            _ => match (sent, total) {
                (None, _) => false,
                (Some(sent), Some(total)) => sent != total,
                (Some(_), None) => true,
            },
        };
        if premature {
            return self
                .engine
                .finish(Err(ProtocolViolation::PrematureCompletion {
                    sent: sent.unwrap_or(0),
                    total: total.unwrap_or(0),
                }
                .into()));
        }
        self.phase = Phase::Verify(completing);
        self.engine.clear_wait();
        self.engine.withdraw_cancel();
    }

    /// Checks a held completion against the source, once nothing is left to read.
    fn finish_completion(&mut self, done: Completing) {
        let Some(total) = self.seen.total else {
            let sent = self.session.as_ref().and_then(|s| s.sent).unwrap_or(0);
            return self
                .engine
                .finish(Err(ProtocolViolation::PrematureCompletion {
                    sent,
                    total: 0,
                }
                .into()));
        };
        let object = match response::json(&done.body).map(|v| parse_object(&v)) {
            Some(Err(v)) => return self.engine.finish(Err(v.into())),
            Some(Ok(object)) => Some(object),
            None => None,
        };
        let hasher = &self.seen.hasher;
        let covered = hasher.len() == total;
        let crc32c = hasher.crc32c().filter(|_| covered);
        let md5 = hasher.md5().filter(|_| covered);
        let mut verified = Verification {
            whole_source: !self.seen.continued,
            ..Verification::default()
        };
        let stored_sizes = object
            .as_ref()
            .and_then(|o| o.size)
            .into_iter()
            .chain(done.stored_length);
        for stored in stored_sizes {
            if stored != total {
                return self.engine.finish(Err(IntegrityError::Size {
                    stored,
                    sent: total,
                }
                .into()));
            }
            verified.size = true;
        }
        let server_crc = object
            .as_ref()
            .and_then(|o| o.crc32c)
            .into_iter()
            .chain(done.header_hash.crc32c);
        for server in server_crc {
            if let Some(computed) = crc32c {
                if server != computed {
                    return self
                        .engine
                        .finish(Err(IntegrityError::Crc32c { server, computed }.into()));
                }
                verified.crc32c = true;
            }
        }
        let server_md5 = object
            .as_ref()
            .and_then(|o| o.md5)
            .into_iter()
            .chain(done.header_hash.md5);
        for server in server_md5 {
            if let Some(computed) = md5 {
                if server != computed {
                    return self.engine.finish(Err(IntegrityError::Md5.into()));
                }
                verified.md5 = true;
            }
        }
        let Some(session) = self.session.as_mut() else {
            return self.stuck();
        };
        // The first answer of a resumed or bare session says the object is complete: it holds
        // the whole source, of which this upload vouches for only a prefix (G3, G7).
        if let Some(vouched) = session.vouched.take() {
            session.foreign |= total > vouched;
        }
        // A server holding bytes this upload did not send must prove it holds the source
        // exactly: a size alone does not (G7).
        if session.foreign && !(verified.crc32c || verified.md5) {
            return self
                .engine
                .finish(Err(IntegrityError::Unproven { size: total }.into()));
        }
        session.persisted = total;
        self.engine.finish(Ok(GcsCompletion {
            status: done.status,
            size: total,
            object,
            crc32c,
            md5,
            verified,
            body: done.body,
        }));
    }

    // ---- planning ----

    /// The part of a saved prefix still to be read and compared, if any (it comes before any
    /// request of a resumed upload).
    fn prefix_read(&self) -> Option<Range<u64>> {
        let Phase::CheckPrefix(prefix) = &self.phase else {
            return None;
        };
        let seen = self.seen.hasher.len();
        (seen < prefix.len).then(|| seen..prefix.len.min(seen.saturating_add(self.chunk.get())))
    }

    /// The source bytes the core must see before the next step, if any.
    fn pending_read(&self) -> Option<Range<u64>> {
        if let Some(range) = self.prefix_read() {
            return Some(range);
        }
        let seen = self.seen.hasher.len();
        let total = self.seen.total;
        let persisted = self.persisted();
        let want = match (&self.phase, total) {
            // Before a chunk of a source of unknown size: its bytes and one more, to find
            // whether it is the last (a stream that ends on the chunk's end is then sent as
            // `A-B/T`, with no empty request after it, G4) and to checksum them.
            (Phase::Upload, None) => {
                let end = self.chunk.chunk_at(persisted, None).end;
                end.saturating_add(1)
            }
            // Before a final chunk of at most `HASH_HEADER_MAX`: all of it, as `x-goog-hash`
            // goes in its headers and the server checks it before it creates the object (G7).
            // Before any other chunk, and a larger final one (reading it first would read the
            // source twice), only what precedes it: its own bytes are checksummed as they are
            // sent (`Upload::handle_sent`), and the completion's checksums are compared with
            // them (G7). A driver that does not report them is asked for them here, before
            // the next chunk, or before the completion is accepted.
            (Phase::Upload, Some(total)) if self.checksums.any() => {
                let chunk = self.chunk.chunk_at(persisted, Some(total));
                if chunk.end == total && chunk.end - chunk.start <= HASH_HEADER_MAX {
                    total
                } else {
                    chunk.start
                }
            }
            // Before accepting a completion: the rest of the source, to check it (G7).
            (Phase::Verify(_), Some(total)) if self.checksums.any() => total,
            (Phase::Verify(_), None) => seen.saturating_add(self.chunk.get()),
            _ => return None,
        };
        if seen >= want || total.is_some_and(|t| seen >= t) {
            return None;
        }
        Some(seen..want.min(seen.saturating_add(self.chunk.get())))
    }

    fn plan_chunk(&self) -> Kind {
        // The total is declared whenever it is known, `*` until then (G4); the range is empty
        // (`bytes */T`) when everything is stored but completion was not yet confirmed.
        let range = self.chunk.chunk_at(self.persisted(), self.seen.total);
        Kind::Chunk {
            range,
            total: self.seen.total,
        }
    }

    fn build(&self, id: RequestId, kind: &Kind) -> Transmit {
        let mut headers = HeaderMap::new();
        let mut report_sent = false;
        let (method, uri, body) = match kind {
            Kind::Start => match &self.begin {
                Begin::Xml { url, content_type } => {
                    // G1: exactly these headers (signed URLs sign them).
                    headers.insert(X_GOOG_RESUMABLE, HeaderValue::from_static("start"));
                    headers.insert(CONTENT_TYPE, content_type.clone());
                    headers.insert(CONTENT_LENGTH, HeaderValue::from_static("0"));
                    (Method::POST, url.clone(), Body::empty())
                }
                Begin::Json {
                    url,
                    content_type,
                    metadata,
                } => {
                    // G2.
                    headers.insert(X_UPLOAD_CONTENT_TYPE, content_type.clone());
                    if let Some(t) = self.seen.total {
                        headers.insert(X_UPLOAD_CONTENT_LENGTH, crate::range::decimal(t));
                    }
                    let body = match metadata {
                        Some(m) => {
                            headers.insert(
                                CONTENT_TYPE,
                                HeaderValue::from_static("application/json; charset=UTF-8"),
                            );
                            Body::bytes(m.clone())
                        }
                        None => Body::empty(),
                    };
                    headers.insert(CONTENT_LENGTH, crate::range::decimal(body.len()));
                    (Method::POST, url.clone(), body)
                }
                Begin::Existing => (Method::PUT, self.session_uri(), Body::empty()),
            },
            Kind::Query => {
                // G6.
                headers.insert(
                    http::header::CONTENT_RANGE,
                    content_range(0..0, self.seen.total),
                );
                headers.insert(CONTENT_LENGTH, HeaderValue::from_static("0"));
                (Method::PUT, self.session_uri(), Body::empty())
            }
            Kind::Chunk { range, total } => {
                // G4.
                headers.insert(
                    http::header::CONTENT_RANGE,
                    content_range(range.clone(), *total),
                );
                headers.insert(
                    CONTENT_LENGTH,
                    crate::range::decimal(range.end - range.start),
                );
                // The final request carries the whole source's checksums for the server (G7).
                let hasher = &self.seen.hasher;
                let is_final = *total == Some(range.end);
                if is_final
                    && hasher.len() == range.end
                    && let Some(v) = checksum::x_goog_hash(hasher.crc32c(), hasher.md5())
                {
                    headers.insert(X_GOOG_HASH, v);
                }
                report_sent = self.checksums.any() && hasher.len() < range.end;
                (Method::PUT, self.session_uri(), Body::source(range.clone()))
            }
            Kind::Cancel => {
                headers.insert(CONTENT_LENGTH, HeaderValue::from_static("0"));
                (Method::DELETE, self.session_uri(), Body::empty())
            }
        };
        if *kind == Kind::Start {
            for (name, value) in &self.start_headers {
                headers.append(name.clone(), value.clone());
            }
        } else if self.no_308 && *kind != Kind::Cancel {
            headers.insert(X_GUPLOADER_NO_308, HeaderValue::from_static("yes"));
        }
        let mut transmit = Transmit::new(id, method, uri, headers, body);
        transmit.report_sent = report_sent;
        transmit
    }

    fn session_uri(&self) -> Uri {
        self.session
            .as_ref()
            .map(|s| s.uri.expose().clone())
            .unwrap_or_default()
    }

    /// Hands out the request `kind` (counting what it sends toward `sent`, G5).
    fn send(&mut self, now: Instant, kind: Kind) -> Action<GcsCompletion> {
        let source_len = match &kind {
            Kind::Chunk { range, .. } => {
                if let Some(session) = self.session.as_mut() {
                    session.sent = session.sent.map(|s| s.max(range.end));
                }
                range.end - range.start
            }
            _ => 0,
        };
        let id = self.engine.hand_out(now, kind.clone(), source_len);
        Action::Send(self.build(id, &kind))
    }
}

impl Upload for GcsUpload {
    type Output = GcsCompletion;
    type State = ResumeState;

    fn poll_action(&mut self, now: Instant) -> Action<GcsCompletion> {
        if let Some(action) = self.engine.poll_head(now) {
            return action;
        }
        // One request at a time on a session (its chunks follow from each answer).
        if !self.engine.flights().is_empty() {
            return Action::Idle;
        }
        if self.engine.cancel_requested() && !matches!(self.phase, Phase::Verify(_) | Phase::Cancel)
        {
            if self.session.is_none() {
                self.engine.finish(Err(Error::Cancelled));
                return self.poll_action(now);
            }
            self.phase = Phase::Cancel;
        }
        if let Some(range) = self.pending_read() {
            return Action::Read(Read { range });
        }
        match &self.phase {
            Phase::Start => self.send(now, Kind::Start),
            // The prefix is all read (`pending_read` asks for it until then): `handle_read`
            // has compared it and moved on, or ended the upload.
            Phase::CheckPrefix(_) => self.engine.idle(),
            Phase::Query => self.send(now, Kind::Query),
            Phase::Upload => {
                let kind = self.plan_chunk();
                self.send(now, kind)
            }
            Phase::Verify(_) => {
                let Phase::Verify(done) = std::mem::replace(&mut self.phase, Phase::Upload) else {
                    return self.engine.idle();
                };
                self.finish_completion(done);
                self.poll_action(now)
            }
            Phase::Cancel => self.send(now, Kind::Cancel),
        }
    }

    fn persisted(&self) -> u64 {
        GcsUpload::persisted(self)
    }

    /// Below `persisted` while the core still reads bytes the server holds: a resume's check
    /// of the uploaded prefix, or checksums over a prefix this run did not send.
    fn retained_from(&self) -> u64 {
        let reads_below = matches!(self.phase, Phase::CheckPrefix(_) | Phase::Verify(_))
            || self.checksums.any()
            || self.seen.total.is_none();
        if reads_below && !self.engine.is_done() {
            self.persisted().min(self.seen.hasher.len())
        } else {
            self.persisted()
        }
    }

    /// What to save to resume this upload in a later process; `None` before a session exists
    /// or once the upload has succeeded.
    fn resume_state(&self) -> Option<ResumeState> {
        if matches!(self.engine.outcome(), Some(Ok(_))) {
            return None;
        }
        let session = self.session.as_ref()?;
        // Until the saved prefix is confirmed, it is still what the session holds: a source
        // that failed the comparison must not overwrite it.
        let crc32c = match &self.phase {
            Phase::CheckPrefix(prefix) => Some(*prefix),
            _ => self.seen.hasher.crc32c().map(|crc32c| HashedPrefix {
                len: self.seen.hasher.len(),
                crc32c,
            }),
        };
        Some(ResumeState {
            session: session.uri.clone(),
            total: self.seen.total,
            persisted: session.persisted,
            // Until a resumed session's first answer, what the saved state said.
            sent: session.sent.or(session.saved_sent),
            crc32c,
            fingerprint: self.fingerprint.clone(),
            foreign: session.foreign,
        })
    }

    /// Asks for the session to be cancelled (G10): once no request is in flight, the next
    /// request is `DELETE session`, and the outcome is [`Error::Cancelled`]. Before a session
    /// exists, the upload ends at once. A completion that arrives first still wins.
    fn cancel(&mut self) {
        if !matches!(self.phase, Phase::Verify(_)) {
            self.engine.request_cancel();
            self.engine.clear_wait();
        }
    }

    fn stats(&self) -> Stats {
        self.engine.stats()
    }

    fn progress(&self) -> Progress {
        Progress {
            acknowledged: self.persisted(),
            in_flight: self.engine.in_flight_bytes(),
            total: self.seen.total,
        }
    }

    /// The last retry this upload scheduled: what failed, the wait, the attempt count.
    fn last_retry(&self) -> Option<&Retrying> {
        self.engine.last_retry()
    }

    fn handle_read(&mut self, _now: Instant, offset: u64, bytes: &[u8]) -> Result<(), UsageError> {
        if self.engine.is_done() {
            return Err(UsageError::Finished);
        }
        let expected = if !self.engine.flights().is_empty() || self.engine.wait_until().is_some() {
            None
        } else {
            self.pending_read()
        };
        let Some(range) = expected else {
            return Err(UsageError::UnexpectedRead {
                offset,
                expected: "no read was asked for",
            });
        };
        if offset != range.start {
            return Err(UsageError::UnexpectedRead {
                offset,
                expected: "the read starts elsewhere",
            });
        }
        let asked = range.end - range.start;
        let given = bytes.len() as u64;
        if given > asked {
            return Err(UsageError::ReadTooLong { asked, given });
        }
        self.seen.hasher.update(bytes);
        if let Phase::CheckPrefix(prefix) = self.phase {
            let seen = self.seen.hasher.len();
            if given == 0 {
                // Shorter than what the interrupted run had already read.
                self.engine
                    .finish(Err(UsageError::SourceChanged { checked: seen }.into()));
            } else if seen == prefix.len {
                if self.seen.hasher.crc32c() == Some(prefix.crc32c) {
                    if let Some(session) = self.session.as_mut() {
                        session.vouched = Some(prefix.len);
                    }
                    self.phase = Phase::Query;
                } else {
                    self.engine
                        .finish(Err(UsageError::SourceChanged { checked: seen }.into()));
                }
            }
            return Ok(());
        }
        if given == 0 {
            let ended_at = offset;
            let persisted = self.persisted();
            match self.seen.total {
                // The source shrank: sending it would silently alter the upload.
                Some(declared) => {
                    self.engine
                        .finish(Err(UsageError::SourceTooShort { ended_at, declared }.into()))
                }
                // A bare session (G3) took the server's claim unchecked; a source that ends
                // below it shows the claim was beyond anything sent (G5).
                None if persisted > ended_at => {
                    self.engine.finish(Err(ProtocolViolation::RangeBeyondSent {
                        claimed: persisted,
                        sent: ended_at,
                    }
                    .into()))
                }
                None => self.seen.total = Some(ended_at),
            }
        }
        Ok(())
    }

    fn handle_sent(&mut self, id: RequestId, offset: u64, bytes: &[u8]) -> Result<(), UsageError> {
        let range = match &self.engine.flight(id)?.kind {
            Kind::Chunk { range, .. } => range.clone(),
            _ => {
                return Err(UsageError::UnexpectedRead {
                    offset,
                    expected: "the request sends no source bytes",
                });
            }
        };
        let end = offset.checked_add(bytes.len() as u64);
        if offset < range.start || end.is_none_or(|end| end > range.end) {
            return Err(UsageError::UnexpectedRead {
                offset,
                expected: "the bytes lie outside the request's source range",
            });
        }
        let seen = self.seen.hasher.len();
        if offset > seen {
            return Err(UsageError::UnexpectedRead {
                offset,
                expected: "sent bytes are handed in in order, without gaps",
            });
        }
        // Bytes seen before (by a read, or an earlier attempt at this range) are skipped.
        let skip = usize::try_from(seen - offset).unwrap_or(usize::MAX);
        if let Some(fresh) = bytes.get(skip..) {
            self.seen.hasher.update(fresh);
        }
        Ok(())
    }

    fn handle_response(
        &mut self,
        now: Instant,
        id: RequestId,
        response: Response<Bytes>,
    ) -> Result<(), UsageError> {
        let flight = self.engine.take(id)?;
        let reply = self.classify(&flight.kind, &response);
        self.transition(now, flight.kind, reply);
        Ok(())
    }

    fn handle_failure(
        &mut self,
        now: Instant,
        id: RequestId,
        failure: TransportFailure,
    ) -> Result<(), UsageError> {
        let flight = self.engine.take(id)?;
        let reply = Reply::Retry(RetryCause::Transport(failure), None);
        self.transition(now, flight.kind, reply);
        Ok(())
    }
}

/// The status to act on: `200` with `X-Http-Status-Code-Override: 308` is a 308 (G11).
fn effective_status(response: &Response<Bytes>) -> StatusCode {
    let status = response.status();
    if status == StatusCode::OK
        && let Some(v) = response.headers().get(X_HTTP_STATUS_CODE_OVERRIDE)
        && v.as_bytes().trim_ascii() == b"308"
    {
        return StatusCode::PERMANENT_REDIRECT;
    }
    status
}

/// Reads the object resource of a JSON API completion (G7). A `size`, `crc32c` or `md5Hash`
/// that is there but does not parse is a protocol violation, not a check skipped.
fn parse_object(v: &serde_json::Value) -> Result<ObjectResource, ProtocolViolation> {
    let text = |key: &str| v.get(key).and_then(|x| x.as_str()).map(str::to_owned);
    let size = match v.get("size") {
        None | Some(serde_json::Value::Null) => None,
        Some(serde_json::Value::String(s)) => Some(parse_decimal(s).ok_or(
            ProtocolViolation::MalformedResponse("the object's size is not a number"),
        )?),
        Some(serde_json::Value::Number(n)) => Some(n.as_u64().ok_or(
            ProtocolViolation::MalformedResponse("the object's size is not a number"),
        )?),
        Some(_) => {
            return Err(ProtocolViolation::MalformedResponse(
                "the object's size is not a number",
            ));
        }
    };
    let checksum_field = |key: &str, why: &'static str| match v.get(key) {
        None | Some(serde_json::Value::Null) => Ok(None),
        Some(serde_json::Value::String(s)) => Ok(Some(s.clone())),
        Some(_) => Err(ProtocolViolation::MalformedResponse(why)),
    };
    const BAD_CRC: &str = "the object's crc32c is not a base64 CRC32C";
    const BAD_MD5: &str = "the object's md5Hash is not a base64 MD5";
    let crc32c = match checksum_field("crc32c", BAD_CRC)? {
        Some(s) => Some(
            checksum::parse_crc32c_base64(&s)
                .ok_or(ProtocolViolation::MalformedResponse(BAD_CRC))?,
        ),
        None => None,
    };
    let md5 = match checksum_field("md5Hash", BAD_MD5)? {
        Some(s) => Some(
            checksum::parse_md5_base64(&s).ok_or(ProtocolViolation::MalformedResponse(BAD_MD5))?,
        ),
        None => None,
    };
    Ok(ObjectResource {
        name: text("name"),
        bucket: text("bucket"),
        generation: text("generation"),
        size,
        crc32c,
        md5,
        media_link: text("mediaLink"),
    })
}

/// `x-goog-stored-content-length` of a completion (G7): the size of the stored object, once,
/// as a decimal; absent is `None`.
fn stored_length(headers: &HeaderMap) -> Result<Option<u64>, ProtocolViolation> {
    const BAD: ProtocolViolation =
        ProtocolViolation::MalformedResponse("x-goog-stored-content-length is not a number");
    let mut values = headers.get_all(X_GOOG_STORED_CONTENT_LENGTH).iter();
    match (values.next(), values.next()) {
        (None, _) => Ok(None),
        (Some(_), Some(_)) => Err(BAD),
        (Some(value), None) => value
            .to_str()
            .ok()
            .and_then(|t| parse_decimal(t.trim()))
            .map(Some)
            .ok_or(BAD),
    }
}
