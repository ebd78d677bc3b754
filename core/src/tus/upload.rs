//! The tus 1.0 upload (rules U1–U15 in `docs/protocols/tus.md`): creation, appends, resume,
//! deferred length, checksums, expiry and termination, on the request engine.
//!
//! The whole state machine is in this file: [`TusUpload::poll_action`] decides the next step
//! from the phase, `classify` says what an answer means, and `transition` (one match) moves
//! the phase on. In words:
//!
//! ```text
//!  Discover ──OPTIONS 200/204 (U2)──▶ Create, or Head for a known upload URL
//!  Create ──POST, Upload-Length or Upload-Defer-Length: 1 (U6, U9), maybe the first bytes
//!           (U8)──▶ 201 + Location (+ Upload-Offset) ──▶ Patch
//!  Existing URL, Resume(state) ───────────────────────────────▶ Head
//!  Head ──200/204 + Upload-Offset (U3)──▶ Patch (from the server's offset)
//!  Patch ──204 + Upload-Offset (U4)──▶ Patch … until the offset is the source's length
//!  Patch ──409, 423, 408, 429, 5xx, transport failure (U14)──▶ Wait ──▶ Head
//!  Patch ──460 (U11)──▶ Patch (the same range, a bounded number of times)
//!  404/410 (403 on HEAD) ─▶ Done(SessionGone, or Expired past Upload-Expires) · 412 ─▶ Done(Server)
//!  offset beyond what was sent or the length ─▶ Done(Protocol) · cancel() ─▶ DELETE ─▶ Done(Cancelled)
//! ```
//!
//! # What the core trusts
//!
//! Only the server's `Upload-Offset`, checked: a resumed upload never takes the saved offset,
//! it asks with `HEAD` first (U15); an offset above the furthest byte ever sent, above the
//! source's length, or below one the server acknowledged earlier in this process is a
//! [`ProtocolViolation`]; an `Upload-Length` that differs from the source's is
//! [`ProtocolViolation::LengthDiffers`]. The upload succeeds only when the server's offset
//! equals the source's length and the server knows that length (U9): nothing more is
//! claimed than the server said it holds.
//!
//! # Reads
//!
//! The core asks for source bytes ([`Action::Read`]) only when it must see them before a
//! `PATCH`: to learn where a source of unknown size ends (the chunk and one byte more, so the
//! `PATCH` with the last bytes carries `Upload-Length`, U9), and, with a checksum, to compute
//! the chunk's `Upload-Checksum` (U11). A chunk re-sent after the server kept part of it is
//! read again for its new checksum; such a read starts at [`Upload::retained_from`] or above,
//! never below.
//!
//! # Example
//!
//! ```
//! use std::time::Instant;
//! use bytes::Bytes;
//! use resumable_core::tus::{TusConfig, TusStart, TusUpload};
//! use resumable_core::{Action, Upload};
//!
//! let source = b"hello tus".to_vec();
//! let mut config = TusConfig::new(Some(source.len() as u64));
//! config.chunk_size = 4;
//! let endpoint = "https://tus.example/files/".parse().unwrap();
//! let mut upload = TusUpload::new(TusStart::Create { endpoint }, config).unwrap();
//!
//! let (mut held, now) = (Vec::new(), Instant::now());
//! let done = loop {
//!     let send = match upload.poll_action(now) {
//!         Action::Send(send) => send,
//!         Action::Done(outcome) => break outcome,
//!         other => unreachable!("{other:?}"),
//!     };
//!     let reply = http::Response::builder().header("tus-resumable", "1.0.0");
//!     let reply = if send.request.method() == http::Method::POST {
//!         reply.status(201).header("location", "abc123")
//!     } else {
//!         let r = &send.body.source;
//!         held.extend_from_slice(&source[r.start as usize..r.end as usize]);
//!         reply.status(204).header("upload-offset", held.len().to_string())
//!     };
//!     upload.handle_response(now, send.id, reply.body(Bytes::new()).unwrap()).unwrap();
//! };
//! let done = done.expect("uploaded");
//! assert_eq!(done.size, 9);
//! assert_eq!(done.upload_url.expose(), "https://tus.example/files/abc123");
//! assert_eq!(held, source);
//! ```

use std::fmt;
use std::ops::Range;
use std::time::{Duration, Instant, SystemTime};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use bytes::Bytes;
use http::header::{CONTENT_LENGTH, CONTENT_TYPE, DATE};
use http::{HeaderMap, HeaderName, HeaderValue, Method, Response, StatusCode, Uri};
use sha1::{Digest as _, Sha1};

use super::metadata::{self, UPLOAD_LENGTH, UPLOAD_METADATA, UPLOAD_OFFSET};
use crate::action::{
    Action, Body, Progress, Read, RequestId, Stats, Transmit, TransportFailure, Upload,
};
use crate::engine::{Engine, Flight};
use crate::error::{Error, ProtocolViolation, RetryCause, UsageError};
use crate::response;
use crate::retry::{self, Attempt, RetryPolicy, Retrying};
use crate::secret::{RedactedHeaders, SessionUri, check_absolute_http};

/// `Tus-Resumable`: the protocol version, on every request but `OPTIONS` (U1).
pub const TUS_RESUMABLE: HeaderName = HeaderName::from_static("tus-resumable");
/// `Upload-Defer-Length: 1`: the length comes later (U9).
pub const UPLOAD_DEFER_LENGTH: HeaderName = HeaderName::from_static("upload-defer-length");
/// `Upload-Expires`: when the server may drop an unfinished upload (U10).
pub const UPLOAD_EXPIRES: HeaderName = HeaderName::from_static("upload-expires");
/// `Upload-Checksum`: `<algorithm> <base64 digest>` of a PATCH body (U11).
pub const UPLOAD_CHECKSUM: HeaderName = HeaderName::from_static("upload-checksum");
/// `Upload-Concat`: `partial`, or `final;<url> <url> …` (U13).
pub const UPLOAD_CONCAT: HeaderName = HeaderName::from_static("upload-concat");
/// `X-HTTP-Method-Override`: the method a `POST` stands for (U5).
pub const X_HTTP_METHOD_OVERRIDE: HeaderName = HeaderName::from_static("x-http-method-override");
/// The content type of a PATCH body (U4) and of data sent with the creation (U8).
pub const OFFSET_OCTET_STREAM: &str = "application/offset+octet-stream";
/// The protocol version this client speaks (U1).
pub const TUS_VERSION: &str = "1.0.0";
/// `460 Checksum Mismatch` (U11).
pub const CHECKSUM_MISMATCH: u16 = 460;
/// Bytes per PATCH by default: 8 MiB.
pub const DEFAULT_CHUNK_SIZE: u64 = 8 << 20;
/// How often a chunk the server found corrupt (460) is sent again before the upload gives up.
pub const DEFAULT_CHECKSUM_RESENDS: u32 = 3;
/// Longest `Upload-Expires` text kept (a date is 29 characters).
const MAX_EXPIRES_LEN: usize = 100;

/// How the upload begins.
#[derive(Clone)]
pub enum TusStart {
    /// Create a new upload at the server's creation URL (U6), for example
    /// `https://tus.example/files/`.
    Create {
        /// The creation URL.
        endpoint: Uri,
    },
    /// An upload URL from elsewhere whose history this process does not know: the first
    /// request (after discovery) is a `HEAD` (U3). Nothing bounds the server's offset but the
    /// source's length.
    Existing(SessionUri),
    /// An upload saved from an earlier run with [`TusUpload::resume_state`] (U15): the first
    /// request (after discovery) is a `HEAD`, and its offset, not the saved one, decides.
    Resume {
        /// The saved state.
        state: TusResumeState,
        /// The wall-clock time now, to check the upload's `Upload-Expires` against (U10).
        now: SystemTime,
    },
}

impl fmt::Debug for TusStart {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TusStart::Create { .. } => f.write_str("TusStart::Create { endpoint: <redacted> }"),
            TusStart::Existing(_) => f.write_str("TusStart::Existing(<redacted>)"),
            TusStart::Resume { .. } => f.write_str("TusStart::Resume(<redacted>)"),
        }
    }
}

/// A checksum algorithm for `Upload-Checksum` (U11).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ChecksumAlgorithm {
    /// SHA-1, the one every server offering the checksum extension must support.
    Sha1,
}

impl ChecksumAlgorithm {
    /// The name as `Tus-Checksum-Algorithm` and `Upload-Checksum` write it.
    pub fn name(self) -> &'static str {
        match self {
            ChecksumAlgorithm::Sha1 => "sha1",
        }
    }

    /// The algorithm named `name` (lower case, as tus writes it), if this crate has it.
    pub fn from_name(name: &str) -> Option<Self> {
        (name == "sha1").then_some(ChecksumAlgorithm::Sha1)
    }
}

/// Settings of one tus upload. Build with [`TusConfig::new`], change fields, then pass to
/// [`TusUpload::new`].
#[derive(Clone)]
#[non_exhaustive]
pub struct TusConfig {
    /// The source's size; `None` for a source of unknown size (a stream), which is created
    /// with `Upload-Defer-Length: 1` and gets its `Upload-Length` on the last PATCH (U9).
    pub total: Option<u64>,
    /// Bytes per PATCH (the last may be shorter). Must not be zero. Default
    /// [`DEFAULT_CHUNK_SIZE`].
    pub chunk_size: u64,
    /// `Upload-Metadata` pairs, in order (U7): keys are checked by [`TusUpload::new`].
    pub metadata: Vec<(String, Vec<u8>)>,
    /// Ask the server what it supports with `OPTIONS` first (U2), and use only what it offers.
    /// Default off: tus servers that need no discovery save a round trip.
    pub discover: bool,
    /// Send `Upload-Checksum` with every PATCH (U11). With discovery, the server must offer
    /// the algorithm, or the upload ends with [`Error::Unsupported`] before any data is sent.
    pub checksum: Option<ChecksumAlgorithm>,
    /// How often one chunk is sent again after `460 Checksum Mismatch`. Default
    /// [`DEFAULT_CHECKSUM_RESENDS`].
    pub max_checksum_resends: u32,
    /// Send the first chunk with the creation request (U8), when the size is known, no
    /// checksum is asked for, and (with discovery) the server offers `creation-with-upload`.
    pub creation_with_upload: bool,
    /// Send PATCH and DELETE as `POST` with `X-HTTP-Method-Override` (U5), for networks that
    /// pass no other methods.
    pub method_override: bool,
    /// Headers for every request, for example `Authorization` (tus servers check every
    /// request). Values are marked sensitive.
    pub headers: HeaderMap,
    /// Retry policy (U14).
    pub retry: RetryPolicy,
    /// A fingerprint of the source chosen by the caller (path, size, mtime…), kept in the
    /// resume state so a later run can tell whether the state belongs to the same source.
    pub fingerprint: String,
}

impl TusConfig {
    /// Defaults for a source of `total` bytes (`None`: unknown): 8 MiB PATCHes, no metadata,
    /// no discovery, no checksum, the default retry policy.
    pub fn new(total: Option<u64>) -> Self {
        TusConfig {
            total,
            chunk_size: DEFAULT_CHUNK_SIZE,
            metadata: Vec::new(),
            discover: false,
            checksum: None,
            max_checksum_resends: DEFAULT_CHECKSUM_RESENDS,
            creation_with_upload: false,
            method_override: false,
            headers: HeaderMap::new(),
            retry: RetryPolicy::default(),
            fingerprint: String::new(),
        }
    }
}

impl fmt::Debug for TusConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TusConfig")
            .field("total", &self.total)
            .field("chunk_size", &self.chunk_size)
            .field("metadata_pairs", &self.metadata.len())
            .field("discover", &self.discover)
            .field("checksum", &self.checksum)
            .field("creation_with_upload", &self.creation_with_upload)
            .field("method_override", &self.method_override)
            .field("headers", &RedactedHeaders(&self.headers))
            .field("retry", &self.retry)
            .finish_non_exhaustive()
    }
}

/// What a driver saves so a later run can resume the same upload (U15).
///
/// Get it from [`TusUpload::resume_state`] and save it whenever it changed, before sending
/// the next request; pass it back as [`TusStart::Resume`]. Check
/// [`TusResumeState::expired_at`] first: an expired upload must be started again (U10). It
/// holds the upload URL, a capability: store it with owner-only permissions.
#[derive(Clone, PartialEq, Eq, Debug)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct TusResumeState {
    /// The absolute upload URL (the creation answer's `Location`, resolved; U6).
    pub upload_url: SessionUri,
    /// The source's size, when known.
    pub total: Option<u64>,
    /// Whether the server has been told the length (`Upload-Length`, U6, U9), or a PATCH
    /// telling it was sent: a resumed upload whose HEAD still says `Upload-Defer-Length: 1`
    /// tells it again, one whose HEAD says nothing of the length takes it as told.
    pub length_declared: bool,
    /// The last offset the server acknowledged (for display: a resume asks the server, U15).
    pub persisted: u64,
    /// The end of the furthest byte ever sent to the upload: the server cannot hold more
    /// (U4). `None` for an upload URL whose history is unknown.
    pub sent: Option<u64>,
    /// The `Upload-Metadata` value the upload was created with (U7, U15).
    pub metadata: Option<String>,
    /// The server's latest `Upload-Expires` (U10).
    pub expires: Option<String>,
    /// The caller's fingerprint of the source (see [`TusConfig::fingerprint`]).
    pub fingerprint: String,
}

impl TusResumeState {
    /// Whether the upload's `Upload-Expires` is at or before `now` (U10): the server may have
    /// dropped it, so start a new upload instead of resuming. False without an expiry (or
    /// with one that is not a date).
    pub fn expired_at(&self, now: SystemTime) -> bool {
        self.expires
            .as_deref()
            .and_then(|t| httpdate::parse_http_date(t.trim()).ok())
            .is_some_and(|at| now >= at)
    }
}

/// A finished tus upload.
#[derive(Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct TusCompletion {
    /// The upload URL (with tusd and @tus/server also where the file can be fetched; a
    /// capability, redacted in `Debug`).
    pub upload_url: SessionUri,
    /// The upload's size: the server's final `Upload-Offset`, equal to the source's length.
    pub size: u64,
    /// The status of the answer that proved completion (204 to a PATCH, 200/204 to a HEAD,
    /// 201 to a creation).
    pub status: StatusCode,
    /// The server's latest `Upload-Expires`, if any (U10).
    pub expires: Option<String>,
}

impl fmt::Debug for TusCompletion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TusCompletion")
            .field("upload_url", &self.upload_url)
            .field("size", &self.size)
            .field("status", &self.status)
            .field("expires", &self.expires)
            .finish()
    }
}

/// What the server said it supports in its `OPTIONS` answer (U2).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct TusServerInfo {
    /// `Tus-Version`, most preferred first (`None`: not sent).
    pub versions: Option<Vec<String>>,
    /// `Tus-Extension` (`None`: not sent, the core protocol only).
    pub extensions: Option<Vec<String>>,
    /// `Tus-Max-Size`.
    pub max_size: Option<u64>,
    /// `Tus-Checksum-Algorithm`.
    pub checksum_algorithms: Option<Vec<String>>,
}

impl TusServerInfo {
    /// Whether the server lists the extension `name`.
    pub fn offers(&self, name: &str) -> bool {
        self.extensions
            .as_ref()
            .is_some_and(|list| list.iter().any(|e| e == name))
    }

    pub(crate) fn read(headers: &HeaderMap) -> Result<Self, metadata::TusFieldError> {
        Ok(TusServerInfo {
            versions: metadata::tus_version(headers)?,
            extensions: metadata::tus_extension(headers)?,
            max_size: metadata::tus_max_size(headers)?,
            checksum_algorithms: metadata::tus_checksum_algorithm(headers)?,
        })
    }
}

/// The request kinds of this protocol.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Kind {
    /// U2: `OPTIONS` on the creation (or upload) URL.
    Options,
    /// U6, U8, U9: `POST` to the creation URL, with these source bytes (U8) or none.
    Create(Range<u64>),
    /// U3: `HEAD` on the upload URL.
    Head,
    /// U4: `PATCH` this range; `declare` carries `Upload-Length` (U9); with a checksum (U11).
    Patch {
        range: Range<u64>,
        declare: bool,
        checksum: Option<HeaderValue>,
    },
    /// U12: `DELETE` the upload.
    Delete,
}

/// Where the upload stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    /// U2: ask what the server supports.
    Discover,
    /// U6: create the upload.
    Create,
    /// U3: ask the server's offset.
    Head,
    /// U4: append from the acknowledged offset.
    Patch,
    /// U12: terminate the upload (after `cancel()`).
    Cancel,
}

/// What a HEAD says about the length (U3, U9).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum LengthInfo {
    /// `Upload-Length: n`.
    Known(u64),
    /// `Upload-Defer-Length: 1`.
    Deferred,
    /// Neither header (a lax server).
    Unsaid,
}

/// What an answer means.
enum Reply {
    /// U2: the server's capabilities.
    Discovered(TusServerInfo),
    /// U6, U8: the upload URL, and the bytes the creation stored.
    Created { url: SessionUri, offset: u64 },
    /// U3: the server's offset and what it says of the length.
    Offset { offset: u64, length: LengthInfo },
    /// U4: the server's offset after a PATCH.
    Appended(u64),
    /// U11: the server found the chunk's checksum wrong and kept none of it.
    ChecksumMismatch,
    /// U12: the upload is terminated (or was already gone).
    Deleted,
    /// U14: 404/410 (and 403 to a HEAD): the upload is gone.
    Gone(Error),
    /// U14: back off, then ask the server's offset (HEAD) before sending more.
    Recheck(RetryCause, Option<Duration>),
    /// Back off, then send the same kind of request again.
    Retry(RetryCause, Option<Duration>),
    /// The upload ends with this error.
    End(Error),
}

/// The checksum of one planned chunk, as its bytes are read (U11).
#[derive(Clone)]
struct ChunkDigest {
    range: Range<u64>,
    hashed_to: u64,
    hasher: Sha1,
    value: Option<HeaderValue>,
}

/// A read the core waits for, and what it is for.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Pending {
    /// Where a source of unknown size ends (U9).
    Length(Range<u64>),
    /// The bytes of the chunk `chunk`, for its checksum (U11).
    Hash {
        piece: Range<u64>,
        chunk: Range<u64>,
    },
}

impl Pending {
    fn range(&self) -> Range<u64> {
        match self {
            Pending::Length(r) | Pending::Hash { piece: r, .. } => r.clone(),
        }
    }
}

/// A tus 1.0 upload: a pure state machine the driver polls. See the crate docs for the loop,
/// [`Upload`] for the contract, and the module docs for the protocol decisions.
pub struct TusUpload {
    endpoint: Option<Uri>,
    chunk_size: u64,
    metadata: Option<HeaderValue>,
    checksum: Option<ChecksumAlgorithm>,
    max_checksum_resends: u32,
    creation_with_upload: bool,
    method_override: bool,
    headers: HeaderMap,
    fingerprint: String,

    phase: Phase,
    /// The upload URL, once created (or given).
    url: Option<SessionUri>,
    /// The source's size, once known (given, or a read found its end).
    total: Option<u64>,
    /// The size the caller gave.
    given_total: Option<u64>,
    /// The server's `Upload-Length` for a source whose size is not known yet.
    server_length: Option<u64>,
    /// The server has been told the length (U6, U9).
    length_declared: bool,
    /// A PATCH carrying `Upload-Length` was sent in this process (U9).
    declare_sent: bool,
    /// The offset the server acknowledged last in this process (U3, U4).
    persisted: u64,
    /// The end of the furthest byte ever sent (U4); `None`: unknown (an existing URL).
    sent: Option<u64>,
    /// The offset in the saved state, until the server's first answer (for the resume state).
    saved_persisted: u64,
    /// Source bytes known to exist (the reads of a source of unknown size, U9).
    seen: u64,
    digest: Option<ChunkDigest>,
    /// `460` answers to the current chunk (U11).
    checksum_resends: u32,
    /// The server's latest `Upload-Expires` (U10).
    expires: Option<String>,
    server: Option<TusServerInfo>,
    /// The upload was resumed or given: its first offset answer sets `Stats::resumed_from`.
    resuming: bool,
    /// One part of a parallel upload: created with `Upload-Concat: partial` (U13).
    concat_partial: bool,
    engine: Engine<Kind, TusCompletion>,
}

impl fmt::Debug for TusUpload {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TusUpload")
            .field("phase", &self.phase)
            .field("total", &self.total)
            .field("length_declared", &self.length_declared)
            .field("persisted", &self.persisted)
            .field("sent", &self.sent)
            .field("seen", &self.seen)
            .field("checksum_resends", &self.checksum_resends)
            .field("expires", &self.expires)
            .field("in_flight", &self.engine.flights().len())
            .field("wait_until", &self.engine.wait_until())
            .field("outcome", &self.engine.outcome())
            .finish_non_exhaustive()
    }
}

impl TusUpload {
    /// Creates an upload. Nothing is sent until the driver polls.
    ///
    /// # Errors
    /// [`UsageError`] for a zero chunk size, a metadata key tus does not allow (U7), a URL
    /// that is not absolute http(s), or a resume state that does not fit `config` (another
    /// fingerprint or size, inconsistent offsets) or whose `Upload-Expires` has passed (U10:
    /// start a new upload then).
    pub fn new(start: TusStart, config: TusConfig) -> Result<Self, UsageError> {
        if config.chunk_size == 0 {
            return Err(UsageError::ChunkSize {
                size: 0,
                rule: "must be greater than zero",
            });
        }
        let metadata = metadata::upload_metadata(
            config
                .metadata
                .iter()
                .map(|(k, v)| (k.as_str(), v.as_slice())),
        )?;
        let mut headers = config.headers;
        for value in headers.values_mut() {
            value.set_sensitive(true);
        }
        let mut upload = TusUpload {
            endpoint: None,
            chunk_size: config.chunk_size,
            metadata,
            checksum: config.checksum,
            max_checksum_resends: config.max_checksum_resends,
            creation_with_upload: config.creation_with_upload,
            method_override: config.method_override,
            headers,
            fingerprint: config.fingerprint,
            phase: Phase::Create,
            url: None,
            total: config.total,
            given_total: config.total,
            server_length: None,
            length_declared: false,
            declare_sent: false,
            persisted: 0,
            sent: Some(0),
            saved_persisted: 0,
            seen: 0,
            digest: None,
            checksum_resends: 0,
            expires: None,
            server: None,
            resuming: false,
            concat_partial: false,
            engine: Engine::new(config.retry),
        };
        match start {
            TusStart::Create { endpoint } => {
                check_absolute_http(&endpoint, "creation URL")?;
                upload.endpoint = Some(endpoint);
            }
            TusStart::Existing(url) => {
                upload.url = Some(url);
                upload.sent = None;
                // A server that says nothing of the length on HEAD is taken to know it
                // when the source's size is known (creation sends it by default, U6).
                upload.length_declared = upload.total.is_some();
                upload.phase = Phase::Head;
                upload.resuming = true;
            }
            TusStart::Resume { state, now } => {
                upload.adopt(state, now)?;
                upload.phase = Phase::Head;
                upload.resuming = true;
            }
        }
        if config.discover {
            upload.phase = Phase::Discover;
        }
        Ok(upload)
    }

    fn adopt(&mut self, state: TusResumeState, now: SystemTime) -> Result<(), UsageError> {
        if state.fingerprint != self.fingerprint {
            return Err(UsageError::StateMismatch(
                "the source's fingerprint differs",
            ));
        }
        if state.total != self.total {
            return Err(UsageError::StateMismatch("the source's size differs"));
        }
        if state.expired_at(now) {
            return Err(UsageError::StateMismatch(
                "the upload has expired on the server; start a new one",
            ));
        }
        let sent_ok = state
            .sent
            .is_none_or(|s| state.persisted <= s && self.total.is_none_or(|t| s <= t));
        if !sent_ok || self.total.is_some_and(|t| state.persisted > t) {
            return Err(UsageError::StateMismatch("its offsets are inconsistent"));
        }
        self.url = Some(state.upload_url);
        self.length_declared = state.length_declared;
        self.sent = state.sent;
        self.saved_persisted = state.persisted;
        self.expires = state.expires;
        Ok(())
    }

    /// Makes this upload one part of a parallel upload (U13): its creation carries
    /// `Upload-Concat: partial`, and it hands out the ids `first`, `first + step`, … .
    pub(crate) fn make_partial(&mut self, first: u64, step: u64) {
        self.concat_partial = true;
        self.engine.use_ids(first, step);
    }

    /// Takes what a parallel upload discovered as the server's capabilities (U2, U13).
    pub(crate) fn adopt_server(&mut self, info: TusServerInfo) {
        self.server = Some(info);
    }

    /// The completion, once this upload succeeded.
    pub(crate) fn completion(&self) -> Option<&TusCompletion> {
        self.engine.outcome().and_then(|o| o.as_ref().ok())
    }

    // ---- getters ----

    /// The upload URL, once the creation answered (or as given; a capability: do not log it).
    pub fn upload_url(&self) -> Option<&SessionUri> {
        self.url.as_ref()
    }

    /// The source's size, once known.
    pub fn total(&self) -> Option<u64> {
        self.total
    }

    /// The server's latest `Upload-Expires` text (U10): show it, and save it (it is in the
    /// resume state).
    pub fn expires(&self) -> Option<&str> {
        self.expires.as_deref()
    }

    /// What the server's `OPTIONS` answer listed, after discovery (U2).
    pub fn server_info(&self) -> Option<&TusServerInfo> {
        self.server.as_ref()
    }

    fn offers(&self, extension: &str) -> bool {
        self.server.as_ref().is_none_or(|s| s.offers(extension))
    }

    fn complete(&self) -> bool {
        self.length_declared && self.total == Some(self.persisted)
    }

    // ---- inputs ----

    /// What the request `kind` was, for retry reports and errors.
    fn attempt(&self, kind: &Kind) -> Attempt {
        let uri = self.uri_for(kind);
        let source = match kind {
            Kind::Create(range) | Kind::Patch { range, .. } => Some(range.clone()),
            _ => None,
        };
        Attempt::new(&uri, source)
    }

    fn uri_for(&self, kind: &Kind) -> Uri {
        match kind {
            Kind::Create(_) => self.endpoint.clone().unwrap_or_default(),
            Kind::Options => match &self.url {
                Some(url) => url.expose().clone(),
                None => self.endpoint.clone().unwrap_or_default(),
            },
            _ => self
                .url
                .as_ref()
                .map(|u| u.expose().clone())
                .unwrap_or_default(),
        }
    }

    /// Whether a failed status calls for a back-off (U14): the policy's list, and 409 and 423
    /// wherever the upload can ask its offset again.
    fn backs_off(&self, status: StatusCode) -> bool {
        self.engine.policy().retries_status(status)
            || status == StatusCode::CONFLICT
            || status.as_u16() == 423
    }

    /// What the answer to `kind` means (U1–U14).
    fn classify(&self, kind: &Kind, response: &Response<Bytes>) -> Reply {
        let status = response.status();
        let headers = response.headers();
        let after = || retry::retry_after(headers);
        let expired_or_gone = || {
            Reply::Gone(if self.is_expired(headers) {
                Error::Expired { status }
            } else {
                Error::SessionGone { status }
            })
        };
        if status == StatusCode::PRECONDITION_FAILED {
            // U1: the server does not speak 1.0.0; final, naming what it does speak.
            let message = metadata::tus_version(headers)
                .ok()
                .flatten()
                .filter(|v| !v.is_empty())
                .map(|v| format!("the server speaks tus version {}", v.join(", ")))
                .or_else(|| response::server_message(response.body()));
            return Reply::End(Error::Server { status, message });
        }
        match kind {
            Kind::Options if status == StatusCode::OK || status == StatusCode::NO_CONTENT => {
                match TusServerInfo::read(headers) {
                    Ok(info) => Reply::Discovered(info),
                    Err(_) => Reply::End(
                        ProtocolViolation::MalformedResponse(
                            "the OPTIONS answer has a malformed Tus-* header",
                        )
                        .into(),
                    ),
                }
            }
            Kind::Create(body) if status == StatusCode::CREATED => {
                let url = match resolve_location(headers, &self.uri_for(kind)) {
                    Ok(url) => url,
                    Err(v) => return Reply::End(v.into()),
                };
                // U8: the bytes the creation stored; none is the safe reading when absent.
                match metadata::upload_offset(headers) {
                    Ok(offset) => {
                        let offset = offset.unwrap_or(0);
                        if offset > body.end {
                            return Reply::End(
                                ProtocolViolation::RangeBeyondSent {
                                    claimed: offset,
                                    sent: body.end,
                                }
                                .into(),
                            );
                        }
                        Reply::Created { url, offset }
                    }
                    Err(_) => Reply::End(bad_offset()),
                }
            }
            Kind::Head if status == StatusCode::OK || status == StatusCode::NO_CONTENT => {
                let offset = match metadata::upload_offset(headers) {
                    Ok(Some(offset)) => offset,
                    _ => return Reply::End(bad_offset()),
                };
                let length = match metadata::upload_length(headers) {
                    Ok(Some(n)) => LengthInfo::Known(n),
                    Ok(None) if is_deferred(headers) => LengthInfo::Deferred,
                    Ok(None) => LengthInfo::Unsaid,
                    Err(_) => {
                        return Reply::End(
                            ProtocolViolation::MalformedResponse(
                                "the HEAD answer has a malformed Upload-Length",
                            )
                            .into(),
                        );
                    }
                };
                Reply::Offset { offset, length }
            }
            Kind::Patch { .. } if status.is_success() => match metadata::upload_offset(headers) {
                Ok(Some(offset)) => Reply::Appended(offset),
                _ => Reply::End(bad_offset()),
            },
            Kind::Patch { checksum, .. }
                if status.as_u16() == CHECKSUM_MISMATCH
                    || (checksum.is_some() && status == StatusCode::EXPECTATION_FAILED) =>
            {
                Reply::ChecksumMismatch
            }
            Kind::Delete
                if status.is_success()
                    || status == StatusCode::NOT_FOUND
                    || status == StatusCode::GONE =>
            {
                Reply::Deleted
            }
            Kind::Head | Kind::Patch { .. }
                if status == StatusCode::NOT_FOUND || status == StatusCode::GONE =>
            {
                expired_or_gone()
            }
            Kind::Head if status == StatusCode::FORBIDDEN => expired_or_gone(),
            Kind::Patch { .. } if self.backs_off(status) => {
                Reply::Recheck(RetryCause::Status(status), after())
            }
            Kind::Head | Kind::Delete if self.backs_off(status) => {
                Reply::Retry(RetryCause::Status(status), after())
            }
            Kind::Options | Kind::Create(_) if self.engine.policy().retries_status(status) => {
                Reply::Retry(RetryCause::Status(status), after())
            }
            Kind::Delete => Reply::Deleted,
            Kind::Options | Kind::Create(_) | Kind::Head | Kind::Patch { .. } => {
                Reply::End(response::final_error(status, response.body()))
            }
        }
    }

    /// Whether a 404/410 means the upload expired (U10): the answer's `Date` (the server's
    /// clock) is at or past the last `Upload-Expires`.
    fn is_expired(&self, headers: &HeaderMap) -> bool {
        let date = headers
            .get(DATE)
            .and_then(|v| v.to_str().ok())
            .and_then(|t| httpdate::parse_http_date(t.trim()).ok());
        let expiry = self
            .expires
            .as_deref()
            .and_then(|t| httpdate::parse_http_date(t.trim()).ok());
        matches!((date, expiry), (Some(d), Some(e)) if d >= e)
    }

    /// Keeps the answer's `Upload-Expires` (U10), when it is a date.
    fn note_expires(&mut self, headers: &HeaderMap) {
        let text = headers
            .get(UPLOAD_EXPIRES)
            .and_then(|v| v.to_str().ok())
            .map(|t| t.trim().chars().take(MAX_EXPIRES_LEN).collect::<String>())
            .filter(|t| httpdate::parse_http_date(t).is_ok());
        if text.is_some() {
            self.expires = text;
        }
    }

    /// Every transition of the protocol: what the answer (`reply`) to the request `flight`
    /// changes, and what comes next.
    fn transition(&mut self, now: Instant, flight: Flight<Kind>, reply: Reply) {
        match (flight.kind, reply) {
            (_, Reply::End(error) | Reply::Gone(error)) => self.engine.finish(Err(error)),
            (Kind::Options, Reply::Discovered(info)) => self.on_discovered(info),
            (Kind::Create(body), Reply::Created { url, offset }) => {
                self.url = Some(url);
                self.length_declared = self.total.is_some();
                self.sent = Some(self.sent.unwrap_or(0).max(body.end));
                self.persisted = offset;
                self.engine.progress();
                self.phase = Phase::Patch;
                self.finish_if_complete(StatusCode::CREATED);
            }
            (Kind::Head, Reply::Offset { offset, length }) => self.on_offset(offset, length),
            (Kind::Patch { range, declare, .. }, Reply::Appended(offset)) => {
                self.on_appended(now, range, declare, offset)
            }
            (Kind::Patch { range, .. }, Reply::ChecksumMismatch) => {
                // U11: nothing of the chunk was kept; the same range goes again, a bounded
                // number of times.
                self.checksum_resends += 1;
                if self.checksum_resends > self.max_checksum_resends {
                    self.engine.finish(Err(Error::Server {
                        status: StatusCode::from_u16(CHECKSUM_MISMATCH)
                            .unwrap_or(StatusCode::BAD_REQUEST),
                        message: Some(format!(
                            "the server found the checksum of bytes {}-{} wrong {} times",
                            range.start, range.end, self.checksum_resends
                        )),
                    }));
                }
            }
            (Kind::Delete, Reply::Deleted) => self.engine.finish(Err(Error::Cancelled)),
            (kind @ Kind::Patch { .. }, Reply::Recheck(cause, after)) => {
                // U14: never a blind resend: ask the offset once the wait is over.
                let attempt = self.attempt(&kind);
                if self.engine.retry(now, cause, after, attempt) {
                    self.phase = Phase::Head;
                }
            }
            (kind, Reply::Retry(cause, after)) => {
                let attempt = self.attempt(&kind);
                self.engine.retry(now, cause, after, attempt);
            }
            (_, _) => self
                .engine
                .finish(Err(Error::Internal("a tus answer outside its phase"))),
        }
    }

    /// U2: the server's capabilities decide which extensions this upload may use.
    fn on_discovered(&mut self, info: TusServerInfo) {
        let creating = self.url.is_none();
        let refusal = if info
            .versions
            .as_ref()
            .is_some_and(|v| !v.iter().any(|v| v == TUS_VERSION))
        {
            Some("tus version 1.0.0")
        } else if creating && !info.offers("creation") {
            Some("creating uploads")
        } else if creating && self.total.is_none() && !info.offers("creation-defer-length") {
            Some("uploads of unknown size")
        } else if let Some(alg) = self.checksum
            && !(info.offers("checksum")
                && info
                    .checksum_algorithms
                    .as_ref()
                    .is_some_and(|a| a.iter().any(|a| a == alg.name())))
        {
            Some("the checksum asked for")
        } else if let (Some(max), Some(total)) = (info.max_size, self.total)
            && total > max
        {
            Some("uploads of this size")
        } else {
            None
        };
        self.server = Some(info);
        match refusal {
            Some(what) => self.engine.finish(Err(Error::Unsupported(what))),
            None => {
                self.engine.progress();
                self.phase = if creating { Phase::Create } else { Phase::Head };
            }
        }
    }

    /// U3: the server's offset decides, within what was sent and the length.
    fn on_offset(&mut self, offset: u64, length: LengthInfo) {
        match (length, self.total) {
            (LengthInfo::Known(n), Some(total)) if n != total => {
                return self.engine.finish(Err(ProtocolViolation::LengthDiffers {
                    server: n,
                    source_len: total,
                }
                .into()));
            }
            (LengthInfo::Known(n), None) => {
                if n < self.seen {
                    return self.engine.finish(Err(ProtocolViolation::LengthDiffers {
                        server: n,
                        source_len: self.seen,
                    }
                    .into()));
                }
                self.server_length = Some(n);
                self.length_declared = true;
            }
            (LengthInfo::Known(_), Some(_)) => self.length_declared = true,
            (LengthInfo::Deferred, _) => self.length_declared = false,
            // Neither header: a server that stopped saying `Upload-Defer-Length: 1` after a
            // PATCH that carried the length took it (U9).
            (LengthInfo::Unsaid, _) if self.declare_sent => self.length_declared = true,
            (LengthInfo::Unsaid, _) => {}
        }
        if let Some(bound) = self.offset_bound()
            && offset > bound
        {
            return self.engine.finish(Err(ProtocolViolation::RangeBeyondSent {
                claimed: offset,
                sent: bound,
            }
            .into()));
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
        if self.resuming {
            self.resuming = false;
            self.engine.stats_mut().resumed_from = Some(offset);
        }
        if offset > self.persisted {
            self.engine.progress();
        }
        self.persisted = offset;
        self.sent = Some(self.sent.unwrap_or(0).max(offset));
        self.phase = Phase::Patch;
        self.finish_if_complete(StatusCode::OK);
    }

    /// The most the server can hold: what was sent, the source's length, the server's own
    /// length for a source of unknown size.
    fn offset_bound(&self) -> Option<u64> {
        [self.sent, self.total, self.server_length]
            .into_iter()
            .flatten()
            .min()
    }

    /// U4: a PATCH's answer, between where it started and where its body ended.
    fn on_appended(&mut self, now: Instant, range: Range<u64>, declare: bool, offset: u64) {
        if offset > range.end {
            return self.engine.finish(Err(ProtocolViolation::RangeBeyondSent {
                claimed: offset,
                sent: range.end,
            }
            .into()));
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
        if declare {
            self.length_declared = true;
        }
        let progressed = offset > self.persisted || declare;
        self.persisted = offset;
        if progressed {
            self.checksum_resends = 0;
            self.engine.progress();
        } else {
            // Stored nothing of a non-empty body: count it, so a server that never stores
            // cannot keep the upload looping.
            let kind = Kind::Patch {
                range,
                declare,
                checksum: None,
            };
            let attempt = self.attempt(&kind);
            self.engine
                .retry(now, RetryCause::NoProgress, None, attempt);
        }
        self.finish_if_complete(StatusCode::NO_CONTENT);
    }

    fn finish_if_complete(&mut self, status: StatusCode) {
        if !self.complete() || self.engine.is_done() {
            return;
        }
        let Some(url) = self.url.clone() else {
            return self
                .engine
                .finish(Err(Error::Internal("complete without an upload URL")));
        };
        self.engine.withdraw_cancel();
        self.engine.finish(Ok(TusCompletion {
            upload_url: url,
            size: self.persisted,
            status,
            expires: self.expires.clone(),
        }));
    }

    // ---- planning ----

    /// The data the next PATCH carries (U4), once every read it needs is done.
    fn planned_range(&self) -> Range<u64> {
        let start = self.persisted;
        let full = start.saturating_add(self.chunk_size);
        let end = match self.total {
            Some(total) => full.min(total).max(start),
            None => full,
        };
        start..end
    }

    /// The source bytes the core must see before the next PATCH, if any.
    fn pending_read(&self) -> Option<Pending> {
        if self.phase != Phase::Patch || self.complete() {
            return None;
        }
        if self.total.is_none() {
            // U9: the chunk and one byte more, to learn whether this chunk is the last.
            let want = self
                .persisted
                .saturating_add(self.chunk_size)
                .saturating_add(1);
            if self.seen < want {
                let end = want.min(self.seen.saturating_add(self.chunk_size));
                return Some(Pending::Length(self.seen..end));
            }
        }
        self.checksum?;
        let chunk = self.planned_range();
        if chunk.is_empty() {
            return None;
        }
        let from = match &self.digest {
            Some(d) if d.range == chunk && d.value.is_some() => return None,
            Some(d) if d.range == chunk => d.hashed_to,
            _ => chunk.start,
        };
        let piece = from..chunk.end.min(from.saturating_add(self.chunk_size));
        Some(Pending::Hash { piece, chunk })
    }

    /// The next PATCH (U4, U9, U11).
    fn plan_patch(&self) -> Kind {
        let range = self.planned_range();
        let declare = !self.length_declared && self.total == Some(range.end);
        let checksum = self
            .digest
            .as_ref()
            .filter(|d| d.range == range)
            .and_then(|d| d.value.clone());
        Kind::Patch {
            range,
            declare,
            checksum,
        }
    }

    /// The creation (U6), with the first bytes when U8 applies.
    fn plan_create(&self) -> Kind {
        let with_data = self.creation_with_upload
            && self.checksum.is_none()
            && self.offers("creation-with-upload");
        match self.total {
            Some(total) if with_data => Kind::Create(0..total.min(self.chunk_size)),
            _ => Kind::Create(0..0),
        }
    }

    fn build(&self, id: RequestId, kind: &Kind) -> Transmit {
        let mut headers = HeaderMap::new();
        let uri = self.uri_for(kind);
        let (method, body) = match kind {
            Kind::Options => (Method::OPTIONS, Body::empty()),
            Kind::Create(range) => {
                match self.total {
                    Some(total) => headers.insert(UPLOAD_LENGTH, crate::range::decimal(total)),
                    None => headers.insert(UPLOAD_DEFER_LENGTH, HeaderValue::from_static("1")),
                };
                if let Some(m) = &self.metadata {
                    headers.insert(UPLOAD_METADATA, m.clone());
                }
                if self.concat_partial {
                    headers.insert(UPLOAD_CONCAT, HeaderValue::from_static("partial"));
                }
                if !range.is_empty() {
                    headers.insert(CONTENT_TYPE, HeaderValue::from_static(OFFSET_OCTET_STREAM));
                }
                (Method::POST, Body::source(range.clone()))
            }
            Kind::Head => (Method::HEAD, Body::empty()),
            Kind::Patch {
                range,
                declare,
                checksum,
            } => {
                headers.insert(CONTENT_TYPE, HeaderValue::from_static(OFFSET_OCTET_STREAM));
                headers.insert(UPLOAD_OFFSET, crate::range::decimal(range.start));
                if *declare && let Some(total) = self.total {
                    headers.insert(UPLOAD_LENGTH, crate::range::decimal(total));
                }
                if let Some(c) = checksum {
                    headers.insert(UPLOAD_CHECKSUM, c.clone());
                }
                (Method::PATCH, Body::source(range.clone()))
            }
            Kind::Delete => (Method::DELETE, Body::empty()),
        };
        if *kind != Kind::Head && *kind != Kind::Options {
            headers.insert(CONTENT_LENGTH, crate::range::decimal(body.len()));
        }
        if *kind != Kind::Options {
            headers.insert(TUS_RESUMABLE, HeaderValue::from_static(TUS_VERSION));
        }
        let method =
            if self.method_override && (method == Method::PATCH || method == Method::DELETE) {
                // U5: the header carries the method.
                let name = HeaderValue::from_str(method.as_str())
                    .unwrap_or(HeaderValue::from_static("PATCH"));
                headers.insert(X_HTTP_METHOD_OVERRIDE, name);
                Method::POST
            } else {
                method
            };
        for (name, value) in &self.headers {
            headers.append(name.clone(), value.clone());
        }
        Transmit::new(id, method, uri, headers, body)
    }

    /// Hands out the request `kind`.
    fn send(&mut self, now: Instant, kind: Kind) -> Action<TusCompletion> {
        if let Kind::Patch { declare: true, .. } = kind {
            self.declare_sent = true;
        }
        let source_len = match &kind {
            Kind::Create(range) | Kind::Patch { range, .. } => {
                self.sent = self.sent.map(|s| s.max(range.end));
                range.end - range.start
            }
            _ => 0,
        };
        let id = self.engine.hand_out(now, kind.clone(), source_len);
        Action::Send(self.build(id, &kind))
    }
}

impl Upload for TusUpload {
    type Output = TusCompletion;
    type State = TusResumeState;

    fn poll_action(&mut self, now: Instant) -> Action<TusCompletion> {
        if let Some(action) = self.engine.poll_head(now) {
            return action;
        }
        // One request at a time per upload URL (U4).
        if !self.engine.flights().is_empty() {
            return Action::Idle;
        }
        if self.engine.cancel_requested() && self.phase != Phase::Cancel {
            // U12: DELETE when there is an upload and the server terminates (or was not asked).
            if self.url.is_some() && self.offers("termination") {
                self.phase = Phase::Cancel;
            } else {
                self.engine.finish(Err(Error::Cancelled));
                return self.poll_action(now);
            }
        }
        if let Some(pending) = self.pending_read() {
            return Action::Read(Read {
                range: pending.range(),
            });
        }
        match self.phase {
            Phase::Discover => self.send(now, Kind::Options),
            Phase::Create => {
                let kind = self.plan_create();
                self.send(now, kind)
            }
            Phase::Head => self.send(now, Kind::Head),
            Phase::Patch => {
                let kind = self.plan_patch();
                match &kind {
                    Kind::Patch { range, declare, .. } if range.is_empty() && !declare => {
                        // Everything is stored and the length is known: completion was
                        // decided at the last answer, so this is a bug; end, do not loop.
                        self.engine.idle()
                    }
                    _ => self.send(now, kind),
                }
            }
            Phase::Cancel => self.send(now, Kind::Delete),
        }
    }

    fn persisted(&self) -> u64 {
        self.persisted
    }

    /// Below `persisted` only while a source of unknown size is read from its start to find
    /// its end (a resumed stream).
    fn retained_from(&self) -> u64 {
        if self.total.is_none() && !self.engine.is_done() {
            self.persisted.min(self.seen)
        } else {
            self.persisted
        }
    }

    /// What to save to resume this upload in a later process (U15); `None` before the
    /// creation answered and once the upload has succeeded.
    fn resume_state(&self) -> Option<TusResumeState> {
        if matches!(self.engine.outcome(), Some(Ok(_))) {
            return None;
        }
        let url = self.url.clone()?;
        Some(TusResumeState {
            upload_url: url,
            // The caller's size: a stream's size found by reading is found again on resume.
            total: self.given_total,
            length_declared: self.length_declared || self.declare_sent,
            persisted: self.persisted.max(if self.resuming {
                self.saved_persisted
            } else {
                0
            }),
            sent: self.sent,
            metadata: self
                .metadata
                .as_ref()
                .and_then(|m| m.to_str().ok())
                .map(str::to_owned),
            expires: self.expires.clone(),
            fingerprint: self.fingerprint.clone(),
        })
    }

    /// Asks the upload to stop: once no request is in flight, the next request is `DELETE`
    /// (U12) when the upload exists (and, after discovery, the server offers termination);
    /// then, or at once, the outcome is [`Error::Cancelled`]. A completion that arrives first
    /// still wins.
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
            total: self.total,
        }
    }

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
        let Some(pending) = expected else {
            return Err(UsageError::UnexpectedRead {
                offset,
                expected: "no read was asked for",
            });
        };
        let range = pending.range();
        if offset != range.start {
            return Err(UsageError::UnexpectedRead {
                offset,
                expected: "the read starts elsewhere",
            });
        }
        let (asked, given) = (range.end - range.start, bytes.len() as u64);
        if given > asked {
            return Err(UsageError::ReadTooLong { asked, given });
        }
        match pending {
            Pending::Length(_) if given == 0 => self.on_source_end(offset),
            Pending::Length(_) => self.seen += given,
            Pending::Hash { .. } if given == 0 => {
                let declared = self.total.unwrap_or(offset);
                self.engine.finish(Err(UsageError::SourceTooShort {
                    ended_at: offset,
                    declared,
                }
                .into()));
            }
            Pending::Hash { chunk, .. } => {
                let digest = match self.digest.take() {
                    Some(d) if d.range == chunk => d,
                    _ => ChunkDigest {
                        range: chunk.clone(),
                        hashed_to: chunk.start,
                        hasher: Sha1::new(),
                        value: None,
                    },
                };
                let mut digest = digest;
                digest.hasher.update(bytes);
                digest.hashed_to += given;
                if digest.hashed_to == chunk.end {
                    let sum = digest.hasher.clone().finalize();
                    let text = format!("sha1 {}", STANDARD.encode(sum));
                    digest.value = HeaderValue::from_str(&text).ok();
                }
                self.digest = Some(digest);
            }
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
        self.note_expires(response.headers());
        let reply = self.classify(&flight.kind, &response);
        self.transition(now, flight, reply);
        Ok(())
    }

    fn handle_failure(
        &mut self,
        now: Instant,
        id: RequestId,
        failure: TransportFailure,
    ) -> Result<(), UsageError> {
        let flight = self.engine.take(id)?;
        let cause = RetryCause::Transport(failure);
        let reply = if matches!(flight.kind, Kind::Patch { .. }) {
            // U14: the server may have stored any prefix: ask before sending more.
            Reply::Recheck(cause, None)
        } else {
            // The same request again; a lost creation answer creates anew (the first upload
            // is orphaned, U8).
            Reply::Retry(cause, None)
        };
        self.transition(now, flight, reply);
        Ok(())
    }
}

impl TusUpload {
    /// A read found the end of a source of unknown size at `end` (U9).
    fn on_source_end(&mut self, end: u64) {
        if self.persisted > end {
            return self.engine.finish(Err(ProtocolViolation::RangeBeyondSent {
                claimed: self.persisted,
                sent: end,
            }
            .into()));
        }
        if let Some(n) = self.server_length
            && n != end
        {
            return self.engine.finish(Err(ProtocolViolation::LengthDiffers {
                server: n,
                source_len: end,
            }
            .into()));
        }
        self.total = Some(end);
        self.finish_if_complete(StatusCode::OK);
    }
}

pub(crate) fn bad_offset() -> Error {
    ProtocolViolation::MalformedResponse("the answer has no valid Upload-Offset").into()
}

fn is_deferred(headers: &HeaderMap) -> bool {
    headers
        .get(UPLOAD_DEFER_LENGTH)
        .is_some_and(|v| v.as_bytes().trim_ascii() == b"1")
}

/// The creation answer's `Location`, resolved against the creation URL as RFC 3986 §5.2
/// says (U6): absolute, network-path (`//host/p`), absolute-path (`/p`) and relative-path
/// (`p`, `../p`) references, with dot segments removed. The result must be absolute http(s).
///
/// # Errors
/// [`ProtocolViolation::MissingLocation`] when absent, repeated, not text or not usable.
pub fn resolve_location(headers: &HeaderMap, base: &Uri) -> Result<SessionUri, ProtocolViolation> {
    let missing = ProtocolViolation::MissingLocation;
    let mut values = headers.get_all(http::header::LOCATION).iter();
    let value = values.next().ok_or(missing.clone())?;
    if values.next().is_some() {
        return Err(missing);
    }
    let text = value.to_str().map_err(|_| missing.clone())?.trim();
    // The fragment is not part of what is requested.
    let text = text.split('#').next().unwrap_or_default();
    if text.is_empty() {
        return Err(missing);
    }
    let scheme = base.scheme_str().ok_or(missing.clone())?;
    let authority = base.authority().ok_or(missing.clone())?.as_str();
    let resolved = if has_scheme(text) {
        text.to_owned()
    } else if let Some(rest) = text.strip_prefix("//") {
        format!("{scheme}://{rest}")
    } else {
        let (path, query) = match text.split_once('?') {
            Some((p, q)) => (p, Some(q)),
            None => (text, None),
        };
        let merged = if path.starts_with('/') {
            path.to_owned()
        } else if path.is_empty() {
            base.path().to_owned()
        } else {
            let base_path = base.path();
            let dir = base_path.rfind('/').map_or("/", |at| &base_path[..=at]);
            format!("{dir}{path}")
        };
        let query = match (path.is_empty(), query) {
            (_, Some(q)) => format!("?{q}"),
            (true, None) => base.query().map(|q| format!("?{q}")).unwrap_or_default(),
            (false, None) => String::new(),
        };
        format!(
            "{scheme}://{authority}{}{query}",
            remove_dot_segments(&merged)
        )
    };
    let uri: Uri = resolved.parse().map_err(|_| missing.clone())?;
    SessionUri::new(uri).map_err(|_| missing)
}

/// Whether a reference starts with a scheme (`ALPHA *( ALPHA / DIGIT / "+" / "-" / "." ) ":"`).
fn has_scheme(text: &str) -> bool {
    let Some((scheme, _)) = text.split_once(':') else {
        return false;
    };
    let mut chars = scheme.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphabetic())
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'))
        && !scheme.contains('/')
}

/// RFC 3986 §5.2.4 on an absolute path.
fn remove_dot_segments(path: &str) -> String {
    let mut out: Vec<&str> = Vec::new();
    let segments: Vec<&str> = path.split('/').skip(1).collect();
    let last = segments.len().saturating_sub(1);
    for (i, segment) in segments.iter().enumerate() {
        match *segment {
            "." => {
                if i == last {
                    out.push("");
                }
            }
            ".." => {
                out.pop();
                if i == last {
                    out.push("");
                }
            }
            s => out.push(s),
        }
    }
    format!("/{}", out.join("/"))
}
