//! The upload of the IETF "Resumable Uploads for HTTP" draft (rules R1–R19 in
//! `docs/protocols/ietf.md`) on the request engine, at a chosen interop version.
//!
//! The whole state machine is in this file: [`IetfUpload::poll_action`] decides the next step
//! from the phase, `classify` says what an answer means, and `transition` (one match) moves
//! the phase on. In words:
//!
//! ```text
//!  Discover ──OPTIONS 2xx (+ Upload-Limit, R12)──▶ Create
//!  Create, careful (R6) ──POST Upload-Complete: ?0, empty──▶ 201 + Location ──▶ Append
//!  Create, optimistic (R6) ──POST the first bytes (?1 when they are all)──▶ 2xx
//!        (104s hand in Location and progress, R4) ──▶ Append, or Done
//!  Existing URL, Resume(state) ──────────────────────────────────▶ Head
//!  Head ──2xx + Upload-Offset (R7)──▶ Append (from the server's offset), or Done (?1)
//!  Append ──PATCH application/partial-upload, Upload-Offset (R9)──▶ Append … ?1 ──▶ Done
//!  409 + Upload-Offset (R10) ──▶ Append from it · 413 (R12) ──▶ Append, smaller
//!  5xx, 429, transport failure ──▶ Wait ──▶ Head   (a creation without a URL: Create again)
//!  404/410 ─▶ Done(SessionGone, or Expired past max-age) · other 4xx ─▶ Done(Server)
//!  offset beyond what was sent or the length, a limit that rules the upload out ─▶ DELETE ─▶ Done(error)
//!  cancel() ─▶ DELETE (R13) ─▶ Done(Cancelled)
//! ```
//!
//! # Interop versions (R1, R19)
//!
//! Every request carries `Upload-Draft-Interop-Version` ([`IetfConfig::interop_version`],
//! 5 to 9, default [`LATEST_INTEROP_VERSION`]). What changes with it on the client's side:
//!
//! - from 6 on, an append carries `Content-Type: application/partial-upload` (before, none)
//!   and the creation carries `Upload-Length` (before, the length is only told by the request
//!   that completes the upload);
//! - from 7 on, a 2xx to an append need not carry `Upload-Offset`: the new offset is the
//!   request's offset plus its content length; before 7 such an answer makes the core ask the
//!   offset with `HEAD` instead of guessing;
//! - from 7 on, the lifetime limit is `max-age` in `Upload-Limit`, before it `expires`;
//! - a 104 counts only when it repeats the same interop version.
//!
//! # What the core trusts, and what the protocol can prove
//!
//! Only the server's offsets, checked: a resumed upload never takes the saved offset, it asks
//! with `HEAD` first (R7); an offset above the furthest byte ever sent, above the source's
//! length, or below one the server acknowledged earlier in this process is a
//! [`ProtocolViolation`] (R8), after which the upload is deleted on the server when its URL
//! is known; an `Upload-Length` that differs from the source's is
//! [`ProtocolViolation::LengthDiffers`].
//!
//! The upload succeeds only when the server has said it holds the whole source and that the
//! upload is complete: a 2xx to a request that carried `Upload-Complete: ?1` at the offset the
//! server accepted and reached the source's end (any `Upload-Offset` it carries must equal
//! the length), or a `HEAD` answering `Upload-Complete: ?1` with `Upload-Offset` equal to
//! the length. That is all the draft lets a client prove: the server stores *a* number of
//! bytes and says the representation is complete. It does not prove the bytes are the
//! source's (no digest of the stored representation is exchanged here; the draft's optional
//! `Repr-Digest` is not used), nor that the target resource processed them successfully
//! beyond the status of its own final response.
//!
//! # Strategies (R6)
//!
//! With [`IetfConfig::sees_informational`] false (the default, for HTTP stacks that do not
//! show 1xx responses), the creation is empty with `Upload-Complete: ?0`: the upload URL is
//! known before any byte is sent, so a lost connection never loses it. With it true, the
//! creation carries the first bytes (all of them when they fit one request, with
//! `Upload-Complete: ?1`), and the driver hands each 104 in with
//! [`IetfUpload::handle_informational`]; a creation that fails without a 104 is sent again
//! whole.
//!
//! # Example
//!
//! ```
//! use std::time::Instant;
//! use bytes::Bytes;
//! use resumable_core::ietf::{IetfConfig, IetfStart, IetfUpload};
//! use resumable_core::{Action, Upload};
//!
//! let source = b"hello draft".to_vec();
//! let mut config = IetfConfig::new(source.len() as u64);
//! config.append_size = 4;
//! let endpoint = "https://uploads.example/files".parse().unwrap();
//! let mut upload = IetfUpload::new(IetfStart::Create { endpoint }, config).unwrap();
//!
//! let (mut held, now) = (Vec::new(), Instant::now());
//! let done = loop {
//!     let send = match upload.poll_action(now) {
//!         Action::Send(send) => send,
//!         Action::Done(outcome) => break outcome,
//!         other => unreachable!("{other:?}"),
//!     };
//!     let reply = if send.request.method() == http::Method::POST {
//!         http::Response::builder().status(201).header("location", "/files/u1")
//!     } else {
//!         let r = &send.body.source;
//!         held.extend_from_slice(&source[r.start as usize..r.end as usize]);
//!         http::Response::builder().status(204)
//!     };
//!     upload.handle_response(now, send.id, reply.body(Bytes::new()).unwrap()).unwrap();
//! };
//! let done = done.expect("uploaded");
//! assert_eq!(done.size, 11);
//! assert_eq!(done.upload_url.unwrap().expose(), "https://uploads.example/files/u1");
//! assert_eq!(held, source);
//! ```

use std::fmt;
use std::ops::Range;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::header::{CONTENT_LENGTH, CONTENT_TYPE, LOCATION};
use http::{HeaderMap, HeaderName, HeaderValue, Method, Response, StatusCode, Uri};

use super::limit::{self, UPLOAD_COMPLETE, UPLOAD_LENGTH, UPLOAD_OFFSET, UploadLimit};
use crate::action::{Action, Body, Progress, RequestId, Stats, Transmit, TransportFailure, Upload};
use crate::engine::{Engine, Flight};
use crate::error::{Error, ProtocolViolation, RetryCause, UsageError};
use crate::response;
use crate::retry::{self, Attempt, RetryPolicy, Retrying};
use crate::secret::{RedactedHeaders, SessionUri, check_absolute_http};
use crate::tus::upload::resolve_location;

/// `Upload-Draft-Interop-Version`: the draft revision's interop number, on every request and
/// on every 104 (R1).
pub const UPLOAD_DRAFT_INTEROP_VERSION: HeaderName =
    HeaderName::from_static("upload-draft-interop-version");
/// The content type of an append (R9), from interop version 6 on.
pub const PARTIAL_UPLOAD: &str = "application/partial-upload";
/// The oldest interop version this client speaks (draft -03).
pub const OLDEST_INTEROP_VERSION: u32 = 5;
/// The newest interop version this client speaks (draft -12 and later), the default.
pub const LATEST_INTEROP_VERSION: u32 = 9;
/// The first interop version whose append answers need not carry `Upload-Offset` (R19).
pub const OFFSET_OPTIONAL_SINCE: u32 = 7;
/// The first interop version whose appends carry `application/partial-upload` (R19).
pub const PARTIAL_UPLOAD_SINCE: u32 = 6;
/// Bytes per request by default: 8 MiB.
pub const DEFAULT_APPEND_SIZE: u64 = 8 << 20;
/// The largest sf-integer (fifteen digits, R2): no longer source can be described.
const MAX_SF_INTEGER: u64 = 999_999_999_999_999;

/// How the upload begins.
#[derive(Clone)]
pub enum IetfStart {
    /// Create a new upload by sending to the target resource (R3), for example
    /// `https://uploads.example/files`.
    Create {
        /// The target (creation) URL.
        endpoint: Uri,
    },
    /// An upload resource URL from elsewhere whose history this process does not know: the
    /// first request (after discovery) is a `HEAD` (R7). Nothing bounds the server's offset
    /// but the source's length.
    Existing(SessionUri),
    /// An upload saved from an earlier run with [`IetfUpload::resume_state`]: the first
    /// request (after discovery) is a `HEAD`, and its offset, not the saved one, decides.
    Resume(IetfResumeState),
}

impl fmt::Debug for IetfStart {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            IetfStart::Create { .. } => f.write_str("IetfStart::Create { endpoint: <redacted> }"),
            IetfStart::Existing(_) => f.write_str("IetfStart::Existing(<redacted>)"),
            IetfStart::Resume(_) => f.write_str("IetfStart::Resume(<redacted>)"),
        }
    }
}

/// Settings of one upload. Build with [`IetfConfig::new`], change fields, then pass to
/// [`IetfUpload::new`].
#[derive(Clone)]
#[non_exhaustive]
pub struct IetfConfig {
    /// The source's size in bytes.
    pub total: u64,
    /// The draft's interop version to speak (R1): 5 to 9. Default
    /// [`LATEST_INTEROP_VERSION`].
    pub interop_version: u32,
    /// Most source bytes per request (the server's `max-append-size` lowers it). Must not be
    /// zero. Default [`DEFAULT_APPEND_SIZE`].
    pub append_size: u64,
    /// Whether the driver shows this upload 104 responses through
    /// [`IetfUpload::handle_informational`]. False (the default): the creation is empty, so
    /// the upload URL is known before any data is sent (R6).
    pub sees_informational: bool,
    /// Ask the target's limits with `OPTIONS` before creating (R12). Default off: the
    /// creation answer carries them too.
    pub discover: bool,
    /// Headers for every request, for example `Authorization`. Values are marked sensitive.
    /// Representation metadata (`Content-Type`, `Content-Disposition`) belongs in
    /// [`IetfConfig::creation_headers`].
    pub headers: HeaderMap,
    /// Headers for the creation request only (R3: representation metadata such as
    /// `Content-Type` of the file). Values are marked sensitive.
    pub creation_headers: HeaderMap,
    /// Retry policy.
    pub retry: RetryPolicy,
    /// A fingerprint of the source chosen by the caller (path, size, mtime…), kept in the
    /// resume state so a later run can tell whether the state belongs to the same source.
    pub fingerprint: String,
}

impl IetfConfig {
    /// Defaults for a source of `total` bytes: interop version 9, 8 MiB per request, the
    /// careful strategy, no discovery, the default retry policy.
    pub fn new(total: u64) -> Self {
        IetfConfig {
            total,
            interop_version: LATEST_INTEROP_VERSION,
            append_size: DEFAULT_APPEND_SIZE,
            sees_informational: false,
            discover: false,
            headers: HeaderMap::new(),
            creation_headers: HeaderMap::new(),
            retry: RetryPolicy::default(),
            fingerprint: String::new(),
        }
    }
}

impl fmt::Debug for IetfConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("IetfConfig")
            .field("total", &self.total)
            .field("interop_version", &self.interop_version)
            .field("append_size", &self.append_size)
            .field("sees_informational", &self.sees_informational)
            .field("discover", &self.discover)
            .field("headers", &RedactedHeaders(&self.headers))
            .field("creation_headers", &RedactedHeaders(&self.creation_headers))
            .field("retry", &self.retry)
            .finish_non_exhaustive()
    }
}

/// What a driver saves so a later run can resume the same upload.
///
/// Get it from [`IetfUpload::resume_state`] and save it whenever it changed, before sending
/// the next request; pass it back as [`IetfStart::Resume`]. It holds the upload resource's
/// URL, a capability: store it with owner-only permissions.
#[derive(Clone, PartialEq, Eq, Debug)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct IetfResumeState {
    /// The absolute upload resource URL (from a 104 or the creation answer, resolved).
    pub upload_url: SessionUri,
    /// The source's size.
    pub total: u64,
    /// The interop version the upload was created with (R1): a resume speaks the same.
    pub interop_version: u32,
    /// The last offset the server acknowledged (for display: a resume asks the server, R7).
    pub persisted: u64,
    /// The end of the furthest byte ever sent to the upload: the server cannot hold more
    /// (R8). `None` for an upload URL whose history is unknown.
    pub sent: Option<u64>,
    /// The caller's fingerprint of the source (see [`IetfConfig::fingerprint`]).
    pub fingerprint: String,
}

/// A finished upload.
#[derive(Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct IetfCompletion {
    /// The upload resource's URL (a capability, redacted in `Debug`); `None` when a creation
    /// that carried everything completed without the server naming one (no 104 seen).
    pub upload_url: Option<SessionUri>,
    /// The upload's size: the source's length, which the server's offset reached.
    pub size: u64,
    /// The status of the answer that proved completion (the target resource's own response
    /// to a completing request, or 200/204 to a `HEAD`).
    pub status: StatusCode,
    /// The body of that answer when it was the target resource's response (a `HEAD`'s is
    /// empty).
    pub body: Bytes,
}

impl fmt::Debug for IetfCompletion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("IetfCompletion")
            .field("upload_url", &self.upload_url)
            .field("size", &self.size)
            .field("status", &self.status)
            .field("body_len", &self.body.len())
            .finish()
    }
}

/// The request kinds of this protocol.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Kind {
    /// R12: `OPTIONS` on the target.
    Options,
    /// R3: the creation, with these source bytes; `complete` says `Upload-Complete: ?1`.
    Create { range: Range<u64>, complete: bool },
    /// R7: `HEAD` on the upload resource.
    Head,
    /// R9: `PATCH` this range; `complete` says `Upload-Complete: ?1`.
    Append { range: Range<u64>, complete: bool },
    /// R13: `DELETE` the upload resource.
    Delete,
}

/// Where the upload stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    /// R12: ask the target's limits.
    Discover,
    /// R3, R6: create the upload.
    Create,
    /// R7: ask the server's offset.
    Head,
    /// R9: append from the acknowledged offset.
    Append,
    /// R13: delete the upload resource (after `cancel()`, or to end after an error).
    Delete,
}

/// What an answer means.
enum Reply {
    /// R12: the target's limits (if it gave any).
    Discovered(Option<UploadLimit>),
    /// R5: a creation that did not complete the upload; the upload URL and the offset.
    Created { url: SessionUri, offset: u64 },
    /// R7: the server's offset and whether the upload is complete.
    Offset { offset: u64, complete: bool },
    /// R9: the server's offset after an append, or `None` (before interop 7): ask.
    Appended(Option<u64>),
    /// R5, R9: the server holds the whole source and the upload is complete.
    Completed { offset: Option<u64> },
    /// R10: the offset is not the server's; this one is (or none was given: ask).
    Conflict(Option<u64>),
    /// R12: the content was too large for the server.
    TooLarge,
    /// R13: deleted (or already gone).
    Deleted,
    /// Back off, then ask the offset with `HEAD` (or, without an upload URL, create again).
    Recheck(RetryCause, Option<Duration>),
    /// Back off, then send the same request again.
    Retry(RetryCause, Option<Duration>),
    /// The upload ends with this error (no `DELETE`).
    End(Error),
    /// The upload ends with this error, after deleting the upload resource when its URL is
    /// known (R8, R11).
    Abort(Error),
}

/// An upload of the resumable-upload draft: a pure state machine the driver polls. See the
/// crate docs for the loop, [`Upload`] for the contract, and the module docs for the
/// protocol decisions.
pub struct IetfUpload {
    endpoint: Option<Uri>,
    interop: u32,
    total: u64,
    append_size: u64,
    optimistic: bool,
    headers: HeaderMap,
    creation_headers: HeaderMap,
    fingerprint: String,

    phase: Phase,
    /// The upload resource's URL, once known (a 104, the creation answer, or given).
    url: Option<SessionUri>,
    /// The offset the server acknowledged last in this process.
    persisted: u64,
    /// The end of the furthest byte ever sent; `None`: unknown (an existing URL).
    sent: Option<u64>,
    /// The offset in the saved state, until the server's first answer.
    saved_persisted: u64,
    /// The server's limits, as learned (R11).
    limits: UploadLimit,
    /// When the upload resource's lifetime ends (`max-age`, R11).
    deadline: Option<Instant>,
    /// The append size after 413s (R12).
    shrunk: Option<u64>,
    /// The error to end with once the `DELETE` of an aborted upload is answered.
    abort: Option<Error>,
    /// The upload was resumed or given: its first offset answer sets `Stats::resumed_from`.
    resuming: bool,
    engine: Engine<Kind, IetfCompletion>,
}

impl fmt::Debug for IetfUpload {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("IetfUpload")
            .field("interop", &self.interop)
            .field("phase", &self.phase)
            .field("total", &self.total)
            .field("persisted", &self.persisted)
            .field("sent", &self.sent)
            .field("limits", &self.limits)
            .field("shrunk", &self.shrunk)
            .field("in_flight", &self.engine.flights().len())
            .field("wait_until", &self.engine.wait_until())
            .field("outcome", &self.engine.outcome())
            .finish_non_exhaustive()
    }
}

impl IetfUpload {
    /// Creates an upload. Nothing is sent until the driver polls.
    ///
    /// # Errors
    /// [`UsageError`] for a zero append size, an interop version outside 5–9, a source longer
    /// than an sf-integer can say, a URL that is not absolute http(s), or a resume state that
    /// does not fit `config` (another fingerprint, size or interop version, inconsistent
    /// offsets).
    pub fn new(start: IetfStart, config: IetfConfig) -> Result<Self, UsageError> {
        if config.append_size == 0 {
            return Err(UsageError::ChunkSize {
                size: 0,
                rule: "must be greater than zero",
            });
        }
        if !(OLDEST_INTEROP_VERSION..=LATEST_INTEROP_VERSION).contains(&config.interop_version) {
            return Err(UsageError::InvalidInput {
                what: "interop version",
                why: "this client speaks versions 5 to 9",
            });
        }
        if config.total > MAX_SF_INTEGER {
            return Err(UsageError::SourceTooLarge {
                total: config.total,
                max: MAX_SF_INTEGER,
            });
        }
        let mut headers = config.headers;
        for value in headers.values_mut() {
            value.set_sensitive(true);
        }
        let mut creation_headers = config.creation_headers;
        for value in creation_headers.values_mut() {
            value.set_sensitive(true);
        }
        let mut upload = IetfUpload {
            endpoint: None,
            interop: config.interop_version,
            total: config.total,
            append_size: config.append_size,
            optimistic: config.sees_informational,
            headers,
            creation_headers,
            fingerprint: config.fingerprint,
            phase: Phase::Create,
            url: None,
            persisted: 0,
            sent: Some(0),
            saved_persisted: 0,
            limits: UploadLimit::default(),
            deadline: None,
            shrunk: None,
            abort: None,
            resuming: false,
            engine: Engine::new(config.retry),
        };
        match start {
            IetfStart::Create { endpoint } => {
                check_absolute_http(&endpoint, "creation URL")?;
                upload.endpoint = Some(endpoint);
                if config.discover {
                    upload.phase = Phase::Discover;
                }
            }
            IetfStart::Existing(url) => {
                upload.url = Some(url);
                upload.sent = None;
                upload.phase = Phase::Head;
                upload.resuming = true;
            }
            IetfStart::Resume(state) => {
                upload.adopt(state)?;
                upload.phase = Phase::Head;
                upload.resuming = true;
            }
        }
        Ok(upload)
    }

    fn adopt(&mut self, state: IetfResumeState) -> Result<(), UsageError> {
        if state.fingerprint != self.fingerprint {
            return Err(UsageError::StateMismatch(
                "the source's fingerprint differs",
            ));
        }
        if state.total != self.total {
            return Err(UsageError::StateMismatch("the source's size differs"));
        }
        if state.interop_version != self.interop {
            return Err(UsageError::StateMismatch(
                "the upload was created with another interop version",
            ));
        }
        let sent_ok = state
            .sent
            .is_none_or(|s| state.persisted <= s && s <= self.total);
        if !sent_ok || state.persisted > self.total {
            return Err(UsageError::StateMismatch("its offsets are inconsistent"));
        }
        self.url = Some(state.upload_url);
        self.sent = state.sent;
        self.saved_persisted = state.persisted;
        Ok(())
    }

    // ---- getters ----

    /// The upload resource's URL, once known (a capability: do not log it).
    pub fn upload_url(&self) -> Option<&SessionUri> {
        self.url.as_ref()
    }

    /// The interop version this upload speaks.
    pub fn interop_version(&self) -> u32 {
        self.interop
    }

    /// The server's limits as learned so far (R11): from `OPTIONS`, 104s, the creation
    /// answer and `HEAD`.
    pub fn limits(&self) -> &UploadLimit {
        &self.limits
    }

    /// When the upload resource's lifetime ends, if the server said (`max-age`, R11).
    pub fn deadline(&self) -> Option<Instant> {
        self.deadline
    }

    // ---- inputs ----

    /// Hand in an interim (1xx) response to the request `id` while it is in flight, when the
    /// driver's HTTP stack shows them (R4). A `104 Upload Resumption Supported` that repeats
    /// this upload's interop version gives the upload resource's URL (on a creation) and the
    /// server's progress (`Upload-Offset`: those bytes need not be sent again) and limits;
    /// anything else is ignored. Then keep waiting for the request's final response.
    ///
    /// A creation's 104s must all name the same `Location`, and the final answer must agree;
    /// otherwise the upload ends with a [`ProtocolViolation`] (and is deleted).
    ///
    /// # Errors
    /// [`UsageError`] when `id` is not in flight or the upload is over; nothing changes then.
    pub fn handle_informational(
        &mut self,
        now: Instant,
        id: RequestId,
        response: Response<()>,
    ) -> Result<(), UsageError> {
        let kind = self.engine.flight(id)?.kind.clone();
        let headers = response.headers();
        if response.status().as_u16() != 104 || !self.same_interop(headers) {
            return Ok(());
        }
        self.learn_limits(now, headers);
        let range = match &kind {
            Kind::Create { range, .. } => {
                if headers.contains_key(LOCATION) {
                    let base = self.endpoint.clone().unwrap_or_default();
                    match resolve_location(headers, &base) {
                        Ok(url) if self.url.as_ref().is_none_or(|u| *u == url) => {
                            self.url = Some(url);
                        }
                        Ok(_) => {
                            self.abort_now(location_changed());
                            return Ok(());
                        }
                        // A 104 without a usable URL gives nothing to resume with.
                        Err(_) => {}
                    }
                }
                range.clone()
            }
            Kind::Append { range, .. } => range.clone(),
            _ => return Ok(()),
        };
        // R4: an offset in a 104 acknowledges those bytes; past the body it is a lie.
        if let Ok(Some(offset)) = limit::upload_offset(headers) {
            if offset > range.end {
                self.abort_now(
                    ProtocolViolation::RangeBeyondSent {
                        claimed: offset,
                        sent: range.end,
                    }
                    .into(),
                );
            } else if offset > self.persisted && self.url.is_some() {
                self.persisted = offset;
                self.engine.progress();
            }
        }
        Ok(())
    }

    fn same_interop(&self, headers: &HeaderMap) -> bool {
        crate::sfv::item_field(headers, UPLOAD_DRAFT_INTEROP_VERSION)
            .ok()
            .flatten()
            .and_then(|item| item.bare.as_integer())
            .is_some_and(|n| n == i64::from(self.interop))
    }

    /// Keeps the limits an answer announces (R11); a broken field is ignored as a whole.
    fn learn_limits(&mut self, now: Instant, headers: &HeaderMap) {
        if let Ok(Some(limits)) = limit::upload_limit(headers, self.interop) {
            if let Some(deadline) = limits.deadline(now) {
                self.deadline = Some(deadline);
            }
            self.limits = limits;
        }
    }

    /// What the request `kind` was, for retry reports and errors.
    fn attempt(&self, kind: &Kind) -> Attempt {
        let source = match kind {
            Kind::Create { range, .. } | Kind::Append { range, .. } => Some(range.clone()),
            _ => None,
        };
        Attempt::new(&self.uri_for(kind), source)
    }

    fn uri_for(&self, kind: &Kind) -> Uri {
        match kind {
            Kind::Options | Kind::Create { .. } => self.endpoint.clone().unwrap_or_default(),
            _ => self
                .url
                .as_ref()
                .map(|u| u.expose().clone())
                .unwrap_or_default(),
        }
    }

    /// The answer's `Upload-Offset`, `None` when absent; `Err` when present and unreadable.
    fn offset_of(headers: &HeaderMap) -> Result<Option<u64>, Error> {
        limit::upload_offset(headers).map_err(|_| {
            ProtocolViolation::MalformedResponse("the answer has an unreadable Upload-Offset")
                .into()
        })
    }

    /// Checks an `Upload-Length` the server sends against the source (R3).
    fn length_check(&self, headers: &HeaderMap) -> Option<Error> {
        match limit::upload_length(headers) {
            Ok(Some(n)) if n != self.total => Some(
                ProtocolViolation::LengthDiffers {
                    server: n,
                    source_len: self.total,
                }
                .into(),
            ),
            _ => None,
        }
    }

    fn gone(&self, now: Instant, status: StatusCode) -> Error {
        if self.deadline.is_some_and(|d| now >= d) {
            Error::Expired { status }
        } else {
            Error::SessionGone { status }
        }
    }

    /// What the answer to `kind` means (R5, R7, R9, R10, R12, R13).
    fn classify(&self, now: Instant, kind: &Kind, response: &Response<Bytes>) -> Reply {
        let status = response.status();
        let headers = response.headers();
        let after = || retry::retry_after(headers);
        let retryable =
            self.engine.policy().retries_status(status) || status == StatusCode::TOO_MANY_REQUESTS;
        let final_error = || Reply::End(response::final_error(status, response.body()));
        // R5, R9: an answer saying `Upload-Complete: ?1` is the target resource's own.
        let says_complete = matches!(limit::upload_complete(headers), Ok(Some(true)));
        if let Some(e) = self.length_check(headers)
            && !matches!(kind, Kind::Delete | Kind::Options)
            && (status.is_success() || status == StatusCode::CONFLICT)
        {
            return Reply::Abort(e);
        }
        match kind {
            Kind::Options if status.is_success() => {
                Reply::Discovered(limit::upload_limit(headers, self.interop).ok().flatten())
            }
            Kind::Options if retryable => Reply::Retry(RetryCause::Status(status), after()),
            // A target that does not answer OPTIONS may still take uploads.
            Kind::Options => Reply::Discovered(None),
            Kind::Create { complete, range } if status.is_success() => {
                let offset = match Self::offset_of(headers) {
                    Ok(o) => o,
                    Err(e) => return Reply::End(e),
                };
                if *complete {
                    return Reply::Completed { offset };
                }
                let base = self.endpoint.clone().unwrap_or_default();
                let url = match resolve_location(headers, &base) {
                    Ok(url) => url,
                    Err(v) => return Reply::End(v.into()),
                };
                if self.url.as_ref().is_some_and(|u| *u != url) {
                    return Reply::Abort(location_changed());
                }
                // R5: the bytes sent, unless the server says how many it kept.
                Reply::Created {
                    url,
                    offset: offset.unwrap_or(range.end),
                }
            }
            Kind::Create { .. } | Kind::Append { .. } if says_complete && !status.is_success() => {
                final_error()
            }
            Kind::Create { range, .. } if status == StatusCode::PAYLOAD_TOO_LARGE => {
                if range.is_empty() {
                    Reply::Abort(Error::Unsupported("uploads of this size"))
                } else {
                    Reply::TooLarge
                }
            }
            Kind::Create { .. } if retryable => Reply::Recheck(RetryCause::Status(status), after()),
            Kind::Create { .. } => final_error(),
            Kind::Head if status.is_success() => {
                let offset = match Self::offset_of(headers) {
                    Ok(Some(o)) => o,
                    Ok(None) => {
                        return Reply::End(
                            ProtocolViolation::MalformedResponse(
                                "the HEAD answer has no Upload-Offset",
                            )
                            .into(),
                        );
                    }
                    Err(e) => return Reply::End(e),
                };
                Reply::Offset {
                    offset,
                    complete: says_complete,
                }
            }
            Kind::Append { complete, range } if status.is_success() => {
                let offset = match Self::offset_of(headers) {
                    Ok(o) => o,
                    Err(e) => return Reply::End(e),
                };
                let explicitly_incomplete =
                    matches!(limit::upload_complete(headers), Ok(Some(false)));
                if *complete && !explicitly_incomplete {
                    Reply::Completed { offset }
                } else if self.interop < OFFSET_OPTIONAL_SINCE {
                    Reply::Appended(offset)
                } else {
                    // R9, R19: from interop 7 on, a 2xx without an offset appended it all.
                    Reply::Appended(Some(offset.unwrap_or(range.end)))
                }
            }
            Kind::Append { .. } if status == StatusCode::CONFLICT => match Self::offset_of(headers)
            {
                Ok(o) => Reply::Conflict(o),
                Err(e) => Reply::End(e),
            },
            Kind::Append { .. } if status == StatusCode::PAYLOAD_TOO_LARGE => Reply::TooLarge,
            Kind::Head | Kind::Append { .. }
                if status == StatusCode::NOT_FOUND || status == StatusCode::GONE =>
            {
                Reply::End(self.gone(now, status))
            }
            Kind::Append { .. } if retryable => Reply::Recheck(RetryCause::Status(status), after()),
            Kind::Head if retryable => Reply::Retry(RetryCause::Status(status), after()),
            Kind::Head | Kind::Append { .. } => final_error(),
            // R13: any 2xx, and 404/410 (already gone); other answers end it too.
            Kind::Delete if retryable && !status.is_success() && self.abort.is_none() => {
                Reply::Retry(RetryCause::Status(status), after())
            }
            Kind::Delete => Reply::Deleted,
        }
    }

    /// Every transition of the protocol: what the answer (`reply`) to the request `flight`
    /// changes, and what comes next.
    fn transition(
        &mut self,
        now: Instant,
        flight: Flight<Kind>,
        reply: Reply,
        body: Bytes,
        status: StatusCode,
    ) {
        match (flight.kind, reply) {
            (_, Reply::End(error)) => self.engine.finish(Err(error)),
            (_, Reply::Abort(error)) => self.abort_now(error),
            (Kind::Options, Reply::Discovered(limits)) => {
                if let Some(limits) = limits {
                    self.limits = limits;
                    if let Some(d) = limits.deadline(now) {
                        self.deadline = Some(d);
                    }
                }
                self.engine.progress();
                self.phase = Phase::Create;
                self.check_limits();
            }
            (Kind::Create { range, .. }, Reply::Created { url, offset }) => {
                if offset > range.end {
                    return self.abort_with_url(
                        url,
                        ProtocolViolation::RangeBeyondSent {
                            claimed: offset,
                            sent: range.end,
                        }
                        .into(),
                    );
                }
                self.url = Some(url);
                self.sent = Some(self.sent.unwrap_or(0).max(range.end));
                self.persisted = self.persisted.max(offset);
                self.engine.progress();
                self.phase = Phase::Append;
                self.check_limits();
            }
            (
                Kind::Create { range, .. } | Kind::Append { range, .. },
                Reply::Completed { offset },
            ) => {
                let offset = offset.unwrap_or(range.end);
                if offset > range.end {
                    return self.abort_now(
                        ProtocolViolation::RangeBeyondSent {
                            claimed: offset,
                            sent: range.end,
                        }
                        .into(),
                    );
                }
                if offset < range.start.max(self.persisted) {
                    return self
                        .engine
                        .finish(Err(ProtocolViolation::PersistedWentBackwards {
                            before: range.start.max(self.persisted),
                            now: offset,
                        }
                        .into()));
                }
                if offset != self.total || range.end != self.total {
                    return self.abort_now(
                        ProtocolViolation::PrematureCompletion {
                            sent: offset,
                            total: self.total,
                        }
                        .into(),
                    );
                }
                self.persisted = offset;
                self.succeed(status, body);
            }
            (Kind::Head, Reply::Offset { offset, complete }) => self.on_offset(offset, complete),
            (Kind::Append { range, complete }, Reply::Appended(offset)) => match offset {
                Some(offset) => self.on_appended(now, range, complete, offset),
                // Before interop 7 the offset must be there: ask rather than guess, and count
                // it, so a server that never says cannot keep the upload looping.
                None => {
                    let attempt = self.attempt(&Kind::Append { range, complete });
                    if self
                        .engine
                        .retry(now, RetryCause::NoProgress, None, attempt)
                    {
                        self.phase = Phase::Head;
                    }
                }
            },
            (kind @ Kind::Append { .. }, Reply::Conflict(offset)) => match offset {
                // R10: continue from the server's offset, within what was sent.
                Some(offset) => {
                    let progressed = offset > self.persisted;
                    self.on_offset(offset, false);
                    if !progressed && !self.engine.is_done() {
                        let attempt = self.attempt(&kind);
                        self.engine.retry(
                            now,
                            RetryCause::Status(StatusCode::CONFLICT),
                            None,
                            attempt,
                        );
                    }
                }
                None => {
                    let attempt = self.attempt(&kind);
                    if self.engine.retry(
                        now,
                        RetryCause::Status(StatusCode::CONFLICT),
                        None,
                        attempt,
                    ) {
                        self.phase = Phase::Head;
                    }
                }
            },
            (kind @ (Kind::Create { .. } | Kind::Append { .. }), Reply::TooLarge) => {
                self.on_too_large(now, &kind);
            }
            (Kind::Delete, Reply::Deleted) => {
                let error = self.abort.take().unwrap_or(Error::Cancelled);
                self.engine.finish(Err(error));
            }
            (kind, Reply::Recheck(cause, after)) => {
                let attempt = self.attempt(&kind);
                if self.engine.retry(now, cause, after, attempt) {
                    // Without an upload URL (no 104 gave one) the creation goes again whole.
                    self.phase = if self.url.is_some() {
                        Phase::Head
                    } else {
                        Phase::Create
                    };
                }
            }
            (kind, Reply::Retry(cause, after)) => {
                let attempt = self.attempt(&kind);
                self.engine.retry(now, cause, after, attempt);
            }
            (_, _) => self
                .engine
                .finish(Err(Error::Internal("an answer outside its phase"))),
        }
    }

    /// R11: limits that rule this upload out end it (and delete it when it exists).
    fn check_limits(&mut self) {
        let l = self.limits;
        if l.max_size.is_some_and(|max| self.total > max) {
            return self.abort_now(Error::Unsupported("uploads of this size"));
        }
        if let (Some(min), Some(max)) = (l.min_append_size, l.max_append_size)
            && min > max
        {
            self.abort_now(
                ProtocolViolation::ChunkLimits("min-append-size is above max-append-size").into(),
            );
        }
    }

    /// R12: the content was too large; send less, unless it already was the least allowed.
    fn on_too_large(&mut self, now: Instant, kind: &Kind) {
        let (Kind::Create { range, .. } | Kind::Append { range, .. }) = kind else {
            return;
        };
        let len = range.end - range.start;
        let floor = self.limits.min_append_size.unwrap_or(1).max(1);
        let allowed = self.limits.max_append_size.filter(|&m| m < len);
        let next = match allowed {
            Some(max) => max.max(1),
            None if len > floor => (len / 2).max(floor),
            None => {
                return self.engine.finish(Err(Error::Server {
                    status: StatusCode::PAYLOAD_TOO_LARGE,
                    message: Some(format!(
                        "the server refused a request of {len} bytes, the least it allows"
                    )),
                }));
            }
        };
        self.shrunk = Some(next);
        if matches!(kind, Kind::Create { .. }) && self.url.is_some() {
            // A 104 named the upload: it exists; ask its offset, then append less.
            self.phase = Phase::Head;
        }
        let attempt = self.attempt(kind);
        self.engine.retry(
            now,
            RetryCause::Status(StatusCode::PAYLOAD_TOO_LARGE),
            Some(Duration::ZERO),
            attempt,
        );
        self.check_limits();
    }

    /// R7, R8, R10: the server's offset decides, within what was sent and the length.
    fn on_offset(&mut self, offset: u64, complete: bool) {
        let bound = self.sent.unwrap_or(self.total).min(self.total);
        if offset > bound {
            return self.abort_now(
                ProtocolViolation::RangeBeyondSent {
                    claimed: offset,
                    sent: bound,
                }
                .into(),
            );
        }
        if offset < self.persisted {
            return self
                .engine
                .finish(Err(ProtocolViolation::PersistedWentBackwards {
                    before: self.persisted,
                    now: offset,
                }
                .into()));
        }
        if complete && offset != self.total {
            return self.abort_now(
                ProtocolViolation::PrematureCompletion {
                    sent: offset,
                    total: self.total,
                }
                .into(),
            );
        }
        if self.resuming {
            self.resuming = false;
            self.engine.stats_mut().resumed_from = Some(offset);
        }
        if offset > self.persisted {
            self.engine.progress();
        }
        self.persisted = offset;
        self.sent = Some(self.sent.unwrap_or(0).max(offset));
        self.phase = Phase::Append;
        self.check_limits();
        if complete {
            // R7: the upload finished and its final answer was lost: nothing more to send.
            self.succeed(StatusCode::OK, Bytes::new());
        }
    }

    /// R9: an append's answer, between where it started and where its body ended.
    fn on_appended(&mut self, now: Instant, range: Range<u64>, complete: bool, offset: u64) {
        if offset > range.end {
            return self.abort_now(
                ProtocolViolation::RangeBeyondSent {
                    claimed: offset,
                    sent: range.end,
                }
                .into(),
            );
        }
        if offset < range.start {
            return self
                .engine
                .finish(Err(ProtocolViolation::PersistedWentBackwards {
                    before: range.start,
                    now: offset,
                }
                .into()));
        }
        let progressed = offset > self.persisted;
        self.persisted = offset;
        if progressed {
            self.engine.progress();
        } else {
            // Stored nothing (or a completing request the server did not complete): count
            // it, so a server that never stores cannot keep the upload looping.
            let attempt = self.attempt(&Kind::Append { range, complete });
            self.engine
                .retry(now, RetryCause::NoProgress, None, attempt);
        }
    }

    fn succeed(&mut self, status: StatusCode, body: Bytes) {
        self.engine.withdraw_cancel();
        self.engine.finish(Ok(IetfCompletion {
            upload_url: self.url.clone(),
            size: self.total,
            status,
            body,
        }));
    }

    /// Ends with `error`, deleting the upload resource first when its URL is known (R8, R11).
    fn abort_now(&mut self, error: Error) {
        if self.url.is_some() && !self.engine.is_done() {
            self.abort = Some(error);
            self.phase = Phase::Delete;
            self.engine.clear_wait();
        } else {
            self.engine.finish(Err(error));
        }
    }

    fn abort_with_url(&mut self, url: SessionUri, error: Error) {
        self.url = Some(url);
        self.abort_now(error);
    }

    // ---- planning ----

    /// The most source bytes the next request may carry (R11, R12).
    fn request_size(&self) -> u64 {
        let mut size = self.append_size;
        if let Some(max) = self.limits.max_append_size {
            size = size.min(max);
        }
        if let Some(shrunk) = self.shrunk {
            size = size.min(shrunk);
        }
        if let Some(min) = self.limits.min_append_size {
            size = size.max(min);
        }
        size.max(1)
    }

    /// The next append (R9): from the acknowledged offset, `?1` when it reaches the end.
    fn plan_append(&self) -> Kind {
        let start = self.persisted;
        let end = start.saturating_add(self.request_size()).min(self.total);
        Kind::Append {
            range: start..end,
            complete: end == self.total,
        }
    }

    /// The creation (R3, R6): careful (empty, `?0`), or optimistic with the first bytes.
    fn plan_create(&self) -> Kind {
        if self.total == 0 {
            return Kind::Create {
                range: 0..0,
                complete: true,
            };
        }
        if !self.optimistic {
            return Kind::Create {
                range: 0..0,
                complete: false,
            };
        }
        let end = self.request_size().min(self.total);
        Kind::Create {
            range: 0..end,
            complete: end == self.total,
        }
    }

    fn build(&self, id: RequestId, kind: &Kind) -> Transmit {
        let mut headers = HeaderMap::new();
        let uri = self.uri_for(kind);
        let flag = |b: bool| HeaderValue::from_static(if b { "?1" } else { "?0" });
        let (method, body) = match kind {
            Kind::Options => (Method::OPTIONS, Body::empty()),
            Kind::Create { range, complete } => {
                headers.insert(UPLOAD_COMPLETE, flag(*complete));
                if self.interop >= PARTIAL_UPLOAD_SINCE || !*complete {
                    headers.insert(UPLOAD_LENGTH, crate::range::decimal(self.total));
                }
                for (name, value) in &self.creation_headers {
                    headers.append(name.clone(), value.clone());
                }
                (Method::POST, Body::source(range.clone()))
            }
            Kind::Head => (Method::HEAD, Body::empty()),
            Kind::Append { range, complete } => {
                if self.interop >= PARTIAL_UPLOAD_SINCE {
                    headers.insert(CONTENT_TYPE, HeaderValue::from_static(PARTIAL_UPLOAD));
                }
                headers.insert(UPLOAD_OFFSET, crate::range::decimal(range.start));
                headers.insert(UPLOAD_COMPLETE, flag(*complete));
                (Method::PATCH, Body::source(range.clone()))
            }
            Kind::Delete => (Method::DELETE, Body::empty()),
        };
        if matches!(kind, Kind::Create { .. } | Kind::Append { .. }) {
            headers.insert(CONTENT_LENGTH, crate::range::decimal(body.len()));
        }
        headers.insert(
            UPLOAD_DRAFT_INTEROP_VERSION,
            crate::range::decimal(u64::from(self.interop)),
        );
        for (name, value) in &self.headers {
            headers.append(name.clone(), value.clone());
        }
        Transmit::new(id, method, uri, headers, body)
    }

    /// Hands out the request `kind`.
    fn send(&mut self, now: Instant, kind: Kind) -> Action<IetfCompletion> {
        let source_len = match &kind {
            Kind::Create { range, .. } | Kind::Append { range, .. } => {
                self.sent = self.sent.map(|s| s.max(range.end));
                range.end - range.start
            }
            _ => 0,
        };
        let id = self.engine.hand_out(now, kind.clone(), source_len);
        Action::Send(self.build(id, &kind))
    }
}

fn location_changed() -> Error {
    ProtocolViolation::MalformedResponse("the server named two different upload URLs").into()
}

impl Upload for IetfUpload {
    type Output = IetfCompletion;
    type State = IetfResumeState;

    fn poll_action(&mut self, now: Instant) -> Action<IetfCompletion> {
        if let Some(action) = self.engine.poll_head(now) {
            return action;
        }
        // One request at a time per upload resource (R14).
        if !self.engine.flights().is_empty() {
            return Action::Idle;
        }
        if self.engine.cancel_requested() && self.phase != Phase::Delete {
            if self.url.is_some() {
                self.phase = Phase::Delete;
            } else {
                self.engine.finish(Err(Error::Cancelled));
                return self.poll_action(now);
            }
        }
        match self.phase {
            Phase::Discover => self.send(now, Kind::Options),
            Phase::Create => {
                let kind = self.plan_create();
                self.send(now, kind)
            }
            Phase::Head => self.send(now, Kind::Head),
            Phase::Append => {
                let kind = self.plan_append();
                self.send(now, kind)
            }
            Phase::Delete => self.send(now, Kind::Delete),
        }
    }

    fn persisted(&self) -> u64 {
        self.persisted
    }

    /// What to save to resume this upload in a later process; `None` before the upload
    /// resource's URL is known and once the upload has succeeded.
    fn resume_state(&self) -> Option<IetfResumeState> {
        if matches!(self.engine.outcome(), Some(Ok(_))) {
            return None;
        }
        let url = self.url.clone()?;
        Some(IetfResumeState {
            upload_url: url,
            total: self.total,
            interop_version: self.interop,
            persisted: self.persisted.max(if self.resuming {
                self.saved_persisted
            } else {
                0
            }),
            sent: self.sent,
            fingerprint: self.fingerprint.clone(),
        })
    }

    /// Asks the upload to stop: once no request is in flight, the next request is `DELETE`
    /// (R13) when the upload resource's URL is known; then, or at once, the outcome is
    /// [`Error::Cancelled`]. A completion that arrives first still wins.
    fn cancel(&mut self) {
        self.engine.request_cancel();
        self.engine.clear_wait();
    }

    fn stats(&self) -> Stats {
        self.engine.stats()
    }

    fn progress(&self) -> Progress {
        Progress {
            acknowledged: self.persisted,
            in_flight: self.engine.in_flight_bytes(),
            total: Some(self.total),
        }
    }

    fn last_retry(&self) -> Option<&Retrying> {
        self.engine.last_retry()
    }

    /// This upload never asks to read: every answer it sends is from ranges it hands out.
    fn handle_read(&mut self, _now: Instant, offset: u64, _bytes: &[u8]) -> Result<(), UsageError> {
        if self.engine.is_done() {
            return Err(UsageError::Finished);
        }
        Err(UsageError::UnexpectedRead {
            offset,
            expected: "no read was asked for",
        })
    }

    fn handle_response(
        &mut self,
        now: Instant,
        id: RequestId,
        response: Response<Bytes>,
    ) -> Result<(), UsageError> {
        let flight = self.engine.take(id)?;
        if self.abort.is_some() && flight.kind != Kind::Delete {
            // A 104 already decided to abort (R4): the DELETE comes next, whatever this says.
            return Ok(());
        }
        if flight.kind != Kind::Delete {
            self.learn_limits(now, response.headers());
        }
        let reply = self.classify(now, &flight.kind, &response);
        let status = response.status();
        self.transition(now, flight, reply, response.into_body(), status);
        Ok(())
    }

    fn handle_failure(
        &mut self,
        now: Instant,
        id: RequestId,
        failure: TransportFailure,
    ) -> Result<(), UsageError> {
        let flight = self.engine.take(id)?;
        if self.abort.is_some() && flight.kind != Kind::Delete {
            return Ok(());
        }
        let cause = RetryCause::Transport(failure);
        let reply = if flight.kind == Kind::Delete && self.abort.is_some() {
            Reply::Deleted
        } else if matches!(flight.kind, Kind::Create { .. } | Kind::Append { .. }) {
            // The server may have stored any prefix: ask before sending more (R7).
            Reply::Recheck(cause, None)
        } else {
            Reply::Retry(cause, None)
        };
        self.transition(now, flight, reply, Bytes::new(), StatusCode::OK);
        Ok(())
    }
}
