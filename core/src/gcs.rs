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
//! checksummed as they are sent, when the driver reports them ([`Send::report_sent`],
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

use crate::action::{Action, Body, Read, RequestId, Send, TransportFailure, Upload};
use crate::checksum::{self, Checksums, Hasher};
use crate::chunk::{ChunkSize, GCS_GRANULE};
use crate::error::{Error, IntegrityError, ProtocolViolation, RetryCause, UsageError};
use crate::range::parse_decimal;
use crate::range::{RangeForm, content_range, parse_range};
use crate::response;
use crate::retry::{self, Attempt, Backoff, RetryPolicy, Retrying};
use crate::secret::{SessionUri, check_absolute_http};

const X_GOOG_RESUMABLE: HeaderName = HeaderName::from_static("x-goog-resumable");
const X_GOOG_HASH: HeaderName = HeaderName::from_static("x-goog-hash");
const X_UPLOAD_CONTENT_TYPE: HeaderName = HeaderName::from_static("x-upload-content-type");
const X_UPLOAD_CONTENT_LENGTH: HeaderName = HeaderName::from_static("x-upload-content-length");
const X_GUPLOADER_NO_308: HeaderName = HeaderName::from_static("x-guploader-no-308");
const X_HTTP_STATUS_CODE_OVERRIDE: &str = "x-http-status-code-override";
const X_GOOG_STORED_CONTENT_LENGTH: &str = "x-goog-stored-content-length";
const PERMANENT_REDIRECT: u16 = 308;

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

/// Counters for reporting (the CLI's `--json`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    /// Requests handed out.
    pub requests: u64,
    /// Retries scheduled after failures.
    pub retries: u64,
    /// Source bytes handed out in request bodies (re-sent bytes count again).
    pub bytes_sent: u64,
    /// Bytes the server already held when a resumed upload's first status query answered.
    pub resumed_from: Option<u64>,
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

/// What comes next when no request is in flight and no wait is pending.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Next {
    Start,
    Query,
    Upload,
    Cancel,
    /// The server said complete; the rest of the source is read to check it (G7).
    Verify,
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

/// A GCS resumable upload: a pure state machine the driver polls. See the crate docs for the
/// driving loop and [`Upload`] for the contract.
pub struct GcsUpload {
    begin: Begin,
    chunk: ChunkSize,
    checksums: Checksums,
    start_headers: HeaderMap,
    fingerprint: String,
    no_308: bool,
    resumed: bool,
    /// A saved prefix checksum still to be compared with the source (a resume reads the
    /// source from its start first); also what `resume_state` reports until it is confirmed.
    prefix_check: Option<HashedPrefix>,
    /// Until the session's first answer: how far from the start the server's bytes are known
    /// to be this source's (a resume's checked prefix; 0 for a bare session). `None` for a
    /// session this upload started, whose every byte it sent.
    vouched: Option<u64>,
    /// The server held bytes, when first asked, beyond what this upload can vouch for: a
    /// completion must then be proven by a checksum (G7).
    foreign: bool,
    /// The checksums are continued from a saved state, not computed from the first byte.
    continued: bool,
    /// A resumed state's `sent`: not a bound (it may be behind the server), but when it is 0
    /// no run ever sent a byte, which reads gcp-storage-emulator's `bytes=0-0` (G5).
    saved_sent: Option<u64>,

    session: Option<SessionUri>,
    total: Option<u64>,
    persisted: u64,
    /// Upper bound on what the server can hold; `None` when resuming a bare session URI.
    sent: Option<u64>,
    hasher: Hasher,

    next: Next,
    in_flight: Option<(RequestId, Kind)>,
    wait_until: Option<Instant>,
    cancel_requested: bool,
    completing: Option<Completing>,
    outcome: Option<Result<GcsCompletion, Error>>,
    backoff: Backoff,
    next_id: u64,
    stats: Stats,
}

impl fmt::Debug for GcsUpload {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GcsUpload")
            .field("next", &self.next)
            .field("total", &self.total)
            .field("persisted", &self.persisted)
            .field("sent", &self.sent)
            .field("in_flight", &self.in_flight)
            .field("outcome", &self.outcome)
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
        let recheck_prefix = config.recheck_prefix;
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
            resumed: false,
            prefix_check: None,
            vouched: None,
            foreign: false,
            continued: false,
            saved_sent: None,
            session: None,
            total: config.total,
            persisted: 0,
            sent: Some(0),
            hasher: Hasher::new(config.checksums),
            next: Next::Start,
            in_flight: None,
            wait_until: None,
            cancel_requested: false,
            completing: None,
            outcome: None,
            backoff: Backoff::new(config.retry),
            next_id: 0,
            stats: Stats::default(),
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
            Start::Session(session) => {
                upload.session = Some(session);
                upload.sent = None;
                upload.resumed = true;
                // A history this upload did not see: nothing the server holds is vouched for.
                upload.vouched = Some(0);
                upload.next = Next::Query;
            }
            Start::Resume(state) => upload.adopt(state, recheck_prefix)?,
        }
        Ok(upload)
    }

    fn adopt(&mut self, state: ResumeState, recheck_prefix: bool) -> Result<(), UsageError> {
        if state.fingerprint != self.fingerprint {
            return Err(UsageError::StateMismatch(
                "the source's fingerprint differs",
            ));
        }
        match (self.total, state.total) {
            (Some(a), Some(b)) if a != b => {
                return Err(UsageError::StateMismatch("the source's size differs"));
            }
            (None, Some(t)) => self.total = Some(t),
            _ => {}
        }
        let sent_bound = state.sent.unwrap_or(u64::MAX);
        if state.persisted > sent_bound
            || self
                .total
                .is_some_and(|t| state.sent.is_some_and(|s| s > t))
        {
            return Err(UsageError::StateMismatch("its offsets are inconsistent"));
        }
        let prefix = state
            .crc32c
            .filter(|p| self.checksums.crc32c && self.total.is_none_or(|t| p.len <= t));
        match prefix {
            // The source is read again from its start and compared with the saved checksum
            // before anything is sent: a changed input is refused, not mixed in.
            Some(prefix) if recheck_prefix || self.checksums.md5 => {
                self.prefix_check = (prefix.len > 0).then_some(prefix);
                self.vouched = Some(0);
            }
            // The caller accepts the risk: the saved CRC32C is continued unread.
            Some(prefix) => {
                self.hasher = Hasher::resume_crc32c(prefix.len, prefix.crc32c);
                self.continued = true;
                self.vouched = Some(state.sent.unwrap_or(0).max(state.persisted));
            }
            // No checksum to compare (checksums are off): the caller's fingerprint is all a
            // resume can check, so what the state says was sent is taken as this source's.
            None => self.vouched = Some(state.sent.unwrap_or(0).max(state.persisted)),
        }
        self.foreign = state.foreign;
        self.session = Some(state.session);
        self.persisted = state.persisted;
        // G5 within a run; across runs the saved `sent` may be behind the server (a state saved
        // before a power loss), so the source's size bounds what the server may claim.
        self.saved_sent = state.sent;
        self.sent = None;
        self.resumed = true;
        self.next = Next::Query;
        Ok(())
    }

    // ---- getters ----

    /// Bytes the server has acknowledged holding so far.
    pub fn persisted(&self) -> u64 {
        self.persisted
    }

    /// The source's size, once known.
    pub fn total(&self) -> Option<u64> {
        self.total
    }

    /// Counters for reporting.
    pub fn stats(&self) -> Stats {
        Stats {
            retries: self.backoff.total_retries(),
            ..self.stats
        }
    }

    /// The session URI, once the start request has succeeded (a secret: do not log it).
    pub fn session(&self) -> Option<&SessionUri> {
        self.session.as_ref()
    }

    /// What to save to resume this upload in a later process; `None` before a session exists
    /// or once the upload has succeeded (after an error, it is still there: resume it when
    /// [`Error::is_resumable`] says so, discard it otherwise). Save it whenever it changes, before sending the next
    /// request, so that `sent` is never behind what the server may hold.
    pub fn resume_state(&self) -> Option<ResumeState> {
        if matches!(self.outcome, Some(Ok(_))) {
            return None;
        }
        let session = self.session.clone()?;
        // Until the saved prefix is confirmed, it is still what the session holds: a source
        // that failed the comparison must not overwrite it.
        let crc32c = match self.prefix_check {
            Some(prefix) => Some(prefix),
            None => self.hasher.crc32c().map(|crc32c| HashedPrefix {
                len: self.hasher.len(),
                crc32c,
            }),
        };
        Some(ResumeState {
            session,
            total: self.total,
            persisted: self.persisted,
            // Until a resumed session's first answer, what the saved state said.
            sent: self.sent.or(self.saved_sent),
            crc32c,
            fingerprint: self.fingerprint.clone(),
            foreign: self.foreign,
        })
    }

    /// Asks for the session to be cancelled (G10): once no request is in flight, the next
    /// action is `DELETE session`, and the outcome is [`Error::Cancelled`]. Before a session
    /// exists, the upload ends at once. A completion that arrives first still wins.
    pub fn cancel(&mut self) {
        if self.outcome.is_none() && self.completing.is_none() {
            self.cancel_requested = true;
        }
    }

    // ---- inputs ----

    fn check_id(&self, id: RequestId) -> Result<Kind, UsageError> {
        if self.outcome.is_some() {
            return Err(UsageError::Finished);
        }
        match &self.in_flight {
            Some((current, kind)) if *current == id => Ok(kind.clone()),
            _ => Err(UsageError::UnknownRequest(id.0)),
        }
    }

    fn finish(&mut self, outcome: Result<GcsCompletion, Error>) {
        self.in_flight = None;
        self.wait_until = None;
        self.outcome = Some(outcome);
    }

    /// What the request `kind` was, for retry reports and errors.
    fn attempt(&self, kind: &Kind) -> Attempt {
        let range = match kind {
            Kind::Chunk { range, .. } => Some(range.clone()),
            _ => None,
        };
        match (kind, &self.begin) {
            (Kind::Start, Begin::Xml { url, .. } | Begin::Json { url, .. }) => {
                Attempt::new(url, None)
            }
            _ => Attempt::new(&self.session_uri(), range),
        }
    }

    /// Schedules a retry after a retryable failure of `kind`, or ends the upload when the
    /// budget is spent. After a failure on the session the next request is a status query
    /// (G8).
    fn retry(
        &mut self,
        now: Instant,
        kind: &Kind,
        cause: RetryCause,
        after: Option<std::time::Duration>,
    ) {
        let attempt = self.attempt(kind);
        match self.backoff.failure(now, cause, after, attempt) {
            Ok(until) => {
                self.wait_until = Some(until);
                if self.next == Next::Upload {
                    self.next = Next::Query;
                }
            }
            Err(e) => self.finish(Err(e)),
        }
    }

    fn on_response(&mut self, now: Instant, kind: Kind, response: Response<Bytes>) {
        let status = effective_status(&response);
        let retryable = self.backoff.policy().retries_status(status);
        match kind {
            Kind::Start => {
                if status == StatusCode::OK || status == StatusCode::CREATED {
                    let base = match &self.begin {
                        Begin::Xml { url, .. } | Begin::Json { url, .. } => url.clone(),
                        Begin::Existing => {
                            return self
                                .finish(Err(ProtocolViolation::UnexpectedStatus(status).into()));
                        }
                    };
                    match response::location(response.headers(), &base) {
                        Ok(uri) => {
                            // `location` only yields absolute http(s), which SessionUri accepts.
                            match SessionUri::new(uri) {
                                Ok(session) => {
                                    self.session = Some(session);
                                    self.next = Next::Upload;
                                    self.backoff.progress();
                                }
                                Err(_) => {
                                    self.finish(Err(ProtocolViolation::MissingLocation.into()))
                                }
                            }
                        }
                        Err(v) => self.finish(Err(v.into())),
                    }
                } else if retryable {
                    self.retry(
                        now,
                        &Kind::Start,
                        RetryCause::Status(status),
                        retry::retry_after(response.headers()),
                    );
                } else {
                    self.finish(Err(response::final_error(status, response.body())));
                }
            }
            Kind::Cancel => {
                // 499 is GCS's answer (G10); a session already gone is cancelled all the same.
                if status.as_u16() == 499
                    || status == StatusCode::NOT_FOUND
                    || status == StatusCode::GONE
                    || status.is_success()
                {
                    self.finish(Err(Error::Cancelled));
                } else if retryable {
                    self.retry(
                        now,
                        &Kind::Cancel,
                        RetryCause::Status(status),
                        retry::retry_after(response.headers()),
                    );
                } else {
                    self.finish(Err(response::final_error(status, response.body())));
                }
            }
            Kind::Query | Kind::Chunk { .. } => {
                self.on_session_response(now, kind, status, response)
            }
        }
    }

    fn on_session_response(
        &mut self,
        now: Instant,
        kind: Kind,
        status: StatusCode,
        response: Response<Bytes>,
    ) {
        if status.as_u16() == PERMANENT_REDIRECT {
            let claimed = match self.read_persisted(response.headers()) {
                Ok(c) => c,
                Err(v) => return self.finish(Err(v.into())),
            };
            if self.resumed && self.stats.resumed_from.is_none() {
                self.stats.resumed_from = Some(claimed);
            }
            // The first answer of a resumed or bare session: bytes held beyond what this
            // upload vouches for came from elsewhere, so completion needs a checksum (G7).
            if let Some(vouched) = self.vouched.take() {
                self.foreign |= claimed > vouched;
            }
            let progressed = claimed > self.persisted;
            self.persisted = claimed;
            // A bare session (G3) learns its first bound here.
            self.sent = Some(self.sent.map_or(claimed, |s| s.max(claimed)));
            self.next = Next::Upload;
            if progressed {
                self.backoff.progress();
            } else if matches!(kind, Kind::Chunk { .. }) {
                // The server took a chunk and stored nothing new: retry, but count it so a
                // server that never makes progress cannot keep us looping.
                self.retry(
                    now,
                    &kind,
                    RetryCause::NoProgress,
                    retry::retry_after(response.headers()),
                );
                if self.outcome.is_none() {
                    self.next = Next::Upload;
                }
            }
            return;
        }
        if status == StatusCode::OK || status == StatusCode::CREATED {
            return self.on_complete(kind, status, response);
        }
        if status == StatusCode::NOT_FOUND || status == StatusCode::GONE {
            return self.finish(Err(Error::SessionGone { status }));
        }
        if self.backoff.policy().retries_status(status) {
            self.next = Next::Upload;
            return self.retry(
                now,
                &kind,
                RetryCause::Status(status),
                retry::retry_after(response.headers()),
            );
        }
        self.finish(Err(response::final_error(status, response.body())))
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
        // gcp-storage-emulator answers `bytes=0-0` before any data: a byte that was never
        // sent cannot be stored, so that reading means nothing is (G5). GCS itself never
        // claims one byte of an unfinished upload (it persists 256 KiB units).
        if claimed == 1 && self.sent.or(self.saved_sent).or(self.total) == Some(0) {
            return Ok(0);
        }
        let bound = self.sent.or(self.total);
        let claimed = match bound {
            Some(sent) if claimed > sent => {
                return Err(ProtocolViolation::RangeBeyondSent { claimed, sent });
            }
            _ => claimed,
        };
        if let Some(total) = self.total
            && claimed > total
        {
            return Err(ProtocolViolation::RangeBeyondSent {
                claimed,
                sent: total,
            });
        }
        if claimed < self.persisted {
            return Err(ProtocolViolation::PersistedWentBackwards {
                before: self.persisted,
                now: claimed,
            });
        }
        Ok(claimed)
    }

    /// A 200/201 on the session (G7): accepted only once the whole source was sent with its
    /// total declared. It is checked against the object resource and `x-goog-hash` once the
    /// core has seen the whole source (a resumed upload reads what it has not seen first).
    fn on_complete(&mut self, kind: Kind, status: StatusCode, response: Response<Bytes>) {
        let premature = match &kind {
            Kind::Chunk {
                range,
                total: declared,
            } => declared.is_none_or(|t| range.end != t),
            // A bare session (G3) has no history: its size is learned by reading the source.
            _ => match (self.sent, self.total) {
                (None, _) => false,
                (Some(sent), Some(total)) => sent != total,
                (Some(_), None) => true,
            },
        };
        if premature {
            let sent = self.sent.unwrap_or(0);
            let total = self.total.unwrap_or(0);
            return self.finish(Err(
                ProtocolViolation::PrematureCompletion { sent, total }.into()
            ));
        }
        let stored_length = match stored_length(response.headers()) {
            Ok(length) => length,
            Err(v) => return self.finish(Err(v.into())),
        };
        let mut body = response.body().clone();
        body.truncate(response::MAX_PARSED_BODY);
        self.completing = Some(Completing {
            status,
            header_hash: checksum::parse_x_goog_hash(response.headers()),
            stored_length,
            body,
        });
        self.next = Next::Verify;
        self.wait_until = None;
        self.cancel_requested = false;
    }

    /// Checks a held completion against the source, once nothing is left to read.
    fn finish_completion(&mut self) {
        let Some(done) = self.completing.take() else {
            return;
        };
        let Some(total) = self.total else {
            let sent = self.sent.unwrap_or(0);
            return self.finish(Err(ProtocolViolation::PrematureCompletion {
                sent,
                total: 0,
            }
            .into()));
        };
        let object = match response::json(&done.body).map(|v| parse_object(&v)) {
            Some(Err(v)) => return self.finish(Err(v.into())),
            Some(Ok(object)) => Some(object),
            None => None,
        };
        let header_hash = done.header_hash;
        let covered = self.hasher.len() == total;
        let crc32c = self.hasher.crc32c().filter(|_| covered);
        let md5 = self.hasher.md5().filter(|_| covered);
        let mut verified = Verification {
            whole_source: !self.continued,
            ..Verification::default()
        };
        let stored_sizes = object
            .as_ref()
            .and_then(|o| o.size)
            .into_iter()
            .chain(done.stored_length);
        for stored in stored_sizes {
            if stored != total {
                return self.finish(Err(IntegrityError::Size {
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
            .chain(header_hash.crc32c);
        for server in server_crc {
            if let Some(computed) = crc32c {
                if server != computed {
                    return self.finish(Err(IntegrityError::Crc32c { server, computed }.into()));
                }
                verified.crc32c = true;
            }
        }
        let server_md5 = object
            .as_ref()
            .and_then(|o| o.md5)
            .into_iter()
            .chain(header_hash.md5);
        for server in server_md5 {
            if let Some(computed) = md5 {
                if server != computed {
                    return self.finish(Err(IntegrityError::Md5.into()));
                }
                verified.md5 = true;
            }
        }
        // The first answer of a resumed or bare session says the object is complete: it holds
        // the whole source, of which this upload vouches for only a prefix (G3, G7).
        if let Some(vouched) = self.vouched.take() {
            self.foreign |= total > vouched;
        }
        // A server holding bytes this upload did not send must prove it holds the source
        // exactly: a size alone does not (G7).
        if self.foreign && !(verified.crc32c || verified.md5) {
            return self.finish(Err(IntegrityError::Unproven { size: total }.into()));
        }
        self.persisted = total;
        self.finish(Ok(GcsCompletion {
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
        let prefix = self.prefix_check?;
        let seen = self.hasher.len();
        (seen < prefix.len).then(|| seen..prefix.len.min(seen.saturating_add(self.chunk.get())))
    }

    /// The source bytes the core must see before the next chunk, if any.
    fn pending_read(&self) -> Option<Range<u64>> {
        if let Some(range) = self.prefix_read() {
            return Some(range);
        }
        let seen = self.hasher.len();
        let want = match (self.next, self.total) {
            // Before a chunk of a source of unknown size: its bytes and one more, to find
            // whether it is the last (a stream that ends on the chunk's end is then sent as
            // `A-B/T`, with no empty request after it, G4) and to checksum them.
            (Next::Upload, None) => {
                let end = self.chunk.chunk_at(self.persisted, None).end;
                end.saturating_add(1)
            }
            // Before the final chunk: all of it, as `x-goog-hash` goes in its headers (G7).
            // Before any other chunk, only what precedes it: its own bytes are checksummed
            // as they are sent (`Upload::handle_sent`), and a driver that does not report
            // them is asked for them here, before the next chunk.
            (Next::Upload, Some(total)) if self.checksums.any() => {
                let chunk = self.chunk.chunk_at(self.persisted, Some(total));
                if chunk.end == total {
                    total
                } else {
                    chunk.start
                }
            }
            // Before accepting a completion: the rest of the source, to check it (G7).
            (Next::Verify, Some(total)) if self.checksums.any() => total,
            (Next::Verify, None) => seen.saturating_add(self.chunk.get()),
            _ => return None,
        };
        if seen >= want || self.total.is_some_and(|t| seen >= t) {
            return None;
        }
        Some(seen..want.min(seen.saturating_add(self.chunk.get())))
    }

    fn plan_chunk(&self) -> Kind {
        // The total is declared whenever it is known, `*` until then (G4); the range is empty
        // (`bytes */T`) when everything is stored but completion was not yet confirmed.
        let range = self.chunk.chunk_at(self.persisted, self.total);
        Kind::Chunk {
            range,
            total: self.total,
        }
    }

    fn build(&self, id: RequestId, kind: &Kind) -> Send {
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
                    if let Some(t) = self.total {
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
                headers.insert(http::header::CONTENT_RANGE, content_range(0..0, self.total));
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
                let is_final = *total == Some(range.end);
                if is_final
                    && self.hasher.len() == range.end
                    && let Some(v) = checksum::x_goog_hash(self.hasher.crc32c(), self.hasher.md5())
                {
                    headers.insert(X_GOOG_HASH, v);
                }
                report_sent = self.checksums.any() && self.hasher.len() < range.end;
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
        let mut send = Send::new(id, method, uri, headers, body);
        send.report_sent = report_sent;
        send
    }

    fn session_uri(&self) -> Uri {
        self.session
            .as_ref()
            .map(|s| s.expose().clone())
            .unwrap_or_default()
    }
}

impl Upload for GcsUpload {
    type Output = GcsCompletion;

    /// The last retry this upload scheduled: what failed, the wait, the attempt count.
    fn last_retry(&self) -> Option<&Retrying> {
        self.backoff.last_retry()
    }

    fn persisted(&self) -> u64 {
        self.persisted
    }

    /// Below `persisted` while the core still reads bytes the server holds: a resume's check
    /// of the uploaded prefix, or checksums over a prefix this run did not send.
    fn retained_from(&self) -> u64 {
        let reads_below = self.prefix_check.is_some()
            || self.checksums.any()
            || self.total.is_none()
            || self.next == Next::Verify;
        if reads_below && self.outcome.is_none() {
            self.persisted.min(self.hasher.len())
        } else {
            self.persisted
        }
    }

    fn poll_action(&mut self, now: Instant) -> Action<GcsCompletion> {
        self.backoff.observe_start(now);
        if let Some(outcome) = &self.outcome {
            return Action::Done(outcome.clone());
        }
        if let Some((id, kind)) = &self.in_flight {
            return Action::Send(self.build(*id, kind));
        }
        if self.cancel_requested && self.next != Next::Cancel {
            if self.session.is_none() {
                self.finish(Err(Error::Cancelled));
                return self.poll_action(now);
            }
            self.next = Next::Cancel;
            self.wait_until = None;
        }
        if let Some(until) = self.wait_until {
            if now < until {
                return Action::Wait(until);
            }
            self.wait_until = None;
        }
        if self.next != Next::Cancel
            && let Some(range) = self.prefix_read()
        {
            return Action::Read(Read { range });
        }
        let kind = match self.next {
            Next::Start => Kind::Start,
            Next::Query => Kind::Query,
            Next::Cancel => Kind::Cancel,
            Next::Upload => {
                if let Some(range) = self.pending_read() {
                    return Action::Read(Read { range });
                }
                self.plan_chunk()
            }
            Next::Verify => {
                if let Some(range) = self.pending_read() {
                    return Action::Read(Read { range });
                }
                self.finish_completion();
                return self.poll_action(now);
            }
        };
        if let Kind::Chunk { range, .. } = &kind {
            self.sent = self.sent.map(|s| s.max(range.end));
            self.stats.bytes_sent += range.end - range.start;
        }
        let id = RequestId(self.next_id);
        self.next_id += 1;
        self.stats.requests += 1;
        let send = self.build(id, &kind);
        self.in_flight = Some((id, kind));
        Action::Send(send)
    }

    fn handle_read(&mut self, _now: Instant, offset: u64, bytes: &[u8]) -> Result<(), UsageError> {
        if self.outcome.is_some() {
            return Err(UsageError::Finished);
        }
        let expected = if self.in_flight.is_some() || self.wait_until.is_some() {
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
        self.hasher.update(bytes);
        if let Some(prefix) = self.prefix_check {
            let seen = self.hasher.len();
            if given == 0 {
                // Shorter than what the interrupted run had already read.
                self.finish(Err(UsageError::SourceChanged { checked: seen }.into()));
            } else if seen == prefix.len {
                if self.hasher.crc32c() == Some(prefix.crc32c) {
                    self.prefix_check = None;
                    self.vouched = Some(prefix.len);
                } else {
                    self.finish(Err(UsageError::SourceChanged { checked: seen }.into()));
                }
            }
            return Ok(());
        }
        if given == 0 {
            let ended_at = offset;
            match self.total {
                // The source shrank: sending it would silently alter the upload.
                Some(declared) => {
                    self.finish(Err(UsageError::SourceTooShort { ended_at, declared }.into()))
                }
                // A bare session (G3) took the server's claim unchecked; a source that ends
                // below it shows the claim was beyond anything sent (G5).
                None if self.persisted > ended_at => {
                    self.finish(Err(ProtocolViolation::RangeBeyondSent {
                        claimed: self.persisted,
                        sent: ended_at,
                    }
                    .into()))
                }
                None => self.total = Some(ended_at),
            }
        }
        Ok(())
    }

    fn handle_sent(&mut self, id: RequestId, offset: u64, bytes: &[u8]) -> Result<(), UsageError> {
        if self.outcome.is_some() {
            return Err(UsageError::Finished);
        }
        let range = match &self.in_flight {
            Some((in_flight, Kind::Chunk { range, .. })) if *in_flight == id => range,
            Some((in_flight, _)) if *in_flight == id => {
                return Err(UsageError::UnexpectedRead {
                    offset,
                    expected: "the request sends no source bytes",
                });
            }
            _ => return Err(UsageError::UnknownRequest(id.get())),
        };
        let end = offset.checked_add(bytes.len() as u64);
        if offset < range.start || end.is_none_or(|end| end > range.end) {
            return Err(UsageError::UnexpectedRead {
                offset,
                expected: "the bytes lie outside the request's source range",
            });
        }
        let seen = self.hasher.len();
        if offset > seen {
            return Err(UsageError::UnexpectedRead {
                offset,
                expected: "sent bytes are handed in in order, without gaps",
            });
        }
        // Bytes seen before (by a read, or an earlier attempt at this range) are skipped.
        let skip = usize::try_from(seen - offset).unwrap_or(usize::MAX);
        if let Some(fresh) = bytes.get(skip..) {
            self.hasher.update(fresh);
        }
        Ok(())
    }

    fn handle_response(
        &mut self,
        now: Instant,
        id: RequestId,
        response: Response<Bytes>,
    ) -> Result<(), UsageError> {
        let kind = self.check_id(id)?;
        self.in_flight = None;
        self.on_response(now, kind, response);
        Ok(())
    }

    fn handle_failure(
        &mut self,
        now: Instant,
        id: RequestId,
        failure: TransportFailure,
    ) -> Result<(), UsageError> {
        let kind = self.check_id(id)?;
        self.in_flight = None;
        if !self.backoff.policy().retry_transport {
            let endpoint = self.attempt(&kind).endpoint;
            self.finish(Err(Error::Transport { failure, endpoint }));
            return Ok(());
        }
        if matches!(kind, Kind::Chunk { .. } | Kind::Query) {
            self.next = Next::Upload; // becomes a status query in `retry` (G8)
        }
        self.retry(now, &kind, RetryCause::Transport(failure), None);
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
