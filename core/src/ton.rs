//! Twitter TON (Twitter Object Nest) resumable upload (rules T1–T6 in `docs/protocols`).
//!
//! The whole state machine is in this file: [`TonUpload::poll_action`] decides the next step
//! from the state, and `handle_*` move the state on. In words:
//!
//! ```text
//!  Resumable ──POST ?resumable=true (T2)──▶ 201 + Location, min/max, Expires (T3) ──▶ Chunk
//!  Resume(state) ──────────────────────────────────────────────────────────────────▶ Chunk
//!  Chunk ──308 + Range (T5)──▶ Chunk (from what the server holds, resized to the rate, T4)
//!  Chunk ──201 + Location (T6)──▶ Done(Ok)
//!  Chunk ──transport failure, 408, 429, 5xx, 308 without progress (T6)──▶ Wait
//!  Wait ──backoff over──▶ Chunk (from the last acknowledged offset)
//!  Single ──POST, whole body (T1)──▶ 201 + Location ──▶ Done(Ok)
//!  404/410 ─▶ Done(SessionGone, or Expired past `Expires`) · final 4xx ─▶ Done(Server)
//!  bad Range, limits or Location ─▶ Done(Protocol) · cancel() ─▶ Done(Cancelled)
//! ```
//!
//! TON needs no [`crate::Action::Read`]: the total is declared up front (T2) and nothing is
//! checksummed, so the core only names byte ranges for the driver to send.
//!
//! # Chunk sizes (T4)
//!
//! The start response gives the server's minimum and maximum chunk sizes (T3). Every chunk is
//! at most the *cap* = min(max, 64 MiB − 1) (chunks are **under** 64 MiB), and every chunk but
//! the last is a multiple of the minimum. The chunk size is always
//! `fit(s) = max(min, ⌊min(s, cap) / min⌋ × min)`, and `s` is:
//!
//! - at first, the caller's [`TonConfig::chunk_size`];
//! - after every `308` to a chunk of `L` bytes that was handed out (in a `Send`) at `t0` and
//!   answered at `t1`: `L × target / (t1 − t0)`, the bytes that take `target`
//!   ([`TonConfig::chunk_time`], default [`DEFAULT_CHUNK_TIME`] = 20 s) at the rate just seen.
//!   TON asks for chunks that upload in about 30 s; 20 s leaves a margin for a rate that
//!   drops. A chunk answered at the instant it was handed out is too fast to measure and
//!   moves the size to the cap. The rate is measured from the driver's `now` (the core reads
//!   no clock), so it includes latency and makes chunks smaller, never larger;
//! - after a [`TransportFailure::Timeout`] of a chunk of `L` bytes: `L / 2` (the chunk did not
//!   make it in the driver's timeout, so it was too big for the link).
//!
//! With [`TonConfig::chunk_time`] `None` the size stays `fit(chunk_size)` throughout.
//!
//! # Reading `Range` (T5)
//!
//! A `308` says `Range: 0-N` (documented) or `Range: bytes=0-N`. TON documents N as "the
//! current uploaded length", while the same header elsewhere means "the last byte held", so
//! the server holds N or N+1 bytes. A reading is possible when it is at most what was ever
//! sent, not below what was acknowledged before, below the total (a `308` means the upload is
//! incomplete), and either the end of the chunk just sent (it agrees with what was sent) or a
//! multiple of the minimum chunk size (servers persist whole minimum chunks). The possible
//! reading is taken; no possible reading is [`ProtocolViolation::RangeUnreadable`] (or
//! `RangeBeyondSent` / `PersistedWentBackwards` when both readings are out of bounds). Both
//! readings can only be possible when the minimum chunk size is 1; then the smaller is taken,
//! because the larger may be a byte that is not proven stored ("never resume past a byte you
//! cannot prove was stored" outranks agreeing with what was sent: at worst one byte is sent
//! again). So that this always makes progress, chunks are at least 2 bytes long (see
//! [`ChunkLimits::fit`]). A `308` without `Range` means nothing is held.
//!
//! # After a failure (T6)
//!
//! TON documents no status query. After a transport failure or a retryable status the core
//! waits (see [`RetryPolicy`]) and then sends a chunk from the **last acknowledged offset**
//! again. That is safe: the server holds at least the acknowledged bytes, possibly some of the
//! failed chunk too; the re-sent bytes are the same source bytes at the same offsets, so
//! whether the server skips or overwrites what it already holds, the object is unchanged, and
//! its `308` then says how far it really got (read by T5 against everything ever sent). A
//! retried start or single-request `POST` may leave an orphaned upload or a second object on
//! the server, never a wrong one. If the response to the final chunk was lost after the server
//! completed, the re-sent chunk may be answered `201` again (success) or `404`/`410`
//! ([`Error::SessionGone`]: the object may exist; starting over uploads it again).
//!
//! # Expiry
//!
//! The start response's `Expires` (or the caller's `X-TON-Expires` when the server sends
//! none) is kept as text ([`TonUpload::expires`]) and in the resume state. The core has no
//! wall clock, so it never refuses to send because of it; it only explains a `404`/`410`: when
//! that response's `Date` is at or after the expiry, or (without a `Date`) the driver's `now`
//! is past the expiry as measured from the start response's own `Date`, the outcome is
//! [`Error::Expired`] instead of [`Error::SessionGone`]. `Expires` is read as an HTTP date,
//! also in TON's `… UTC` spelling.
//!
//! # Example
//!
//! The driving loop is the crate's (see the crate docs); here against a tiny in-memory server
//! that keeps whole 1 KiB units and answers in the documented `Range: 0-N` form:
//!
//! ```
//! use std::time::Instant;
//! use bytes::Bytes;
//! use http::HeaderValue;
//! use resumable_core::ton::{TonConfig, TonStart, TonUpload};
//! use resumable_core::{Action, Upload};
//!
//! let source = vec![1u8; 5000];
//! let mut config = TonConfig::new(HeaderValue::from_static("video/mp4"), source.len() as u64);
//! config.chunk_size = 2048;
//! let bucket_url = "https://ton.twitter.com/1.1/ton/bucket/ta_partner".parse().unwrap();
//! let mut upload = TonUpload::new(TonStart::Resumable { bucket_url }, config).unwrap();
//!
//! let (mut held, now) = (Vec::new(), Instant::now());
//! let done = loop {
//!     let send = match upload.poll_action(now) {
//!         Action::Send(send) => send,
//!         Action::Done(outcome) => break outcome,
//!         other => unreachable!("{other:?}"),
//!     };
//!     let reply = http::Response::builder();
//!     let reply = if send.request.method() == http::Method::POST {
//!         reply
//!             .status(201)
//!             .header("location", "/1.1/ton/bucket/ta_partner/f.mp4?resumable=true&resumeId=1")
//!             .header("x-ton-min-chunk-size", "1024")
//!             .header("x-ton-max-chunk-size", "4096")
//!     } else {
//!         let r = &send.body.source;
//!         held.extend_from_slice(&source[r.start as usize..r.end as usize]);
//!         if held.len() == source.len() {
//!             reply.status(201).header("location", "/1.1/ton/bucket/ta_partner/f.mp4")
//!         } else {
//!             reply.status(308).header("range", format!("0-{}", held.len()))
//!         }
//!     };
//!     let reply = reply.body(Bytes::new()).unwrap();
//!     upload.handle_response(now, send.id, reply).unwrap();
//! };
//! let stored = done.expect("uploaded");
//! assert_eq!(stored.location, "https://ton.twitter.com/1.1/ton/bucket/ta_partner/f.mp4");
//! assert_eq!(held, source);
//! ```
//!
//! # Authorization
//!
//! [`TonConfig::start_headers`] go on the start (or single) request only. TON signs every
//! request with OAuth 1.0a (T1), including each chunk `PUT`, and a signature covers the method
//! and URI of that request: a driver that signs adds `Authorization` to each [`Send`]'s
//! request itself.

use std::fmt;
use std::ops::Range;
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use http::header::{CONTENT_LENGTH, CONTENT_RANGE, CONTENT_TYPE, DATE, EXPIRES, RANGE};
use http::{HeaderMap, HeaderName, HeaderValue, Method, Response, StatusCode, Uri};

use crate::action::{Action, Body, Progress, RequestId, Stats, Transmit, TransportFailure, Upload};
use crate::chunk::{ChunkSize, round_down_to_granule, size_for_rate};
use crate::engine::{Engine, Flight};
use crate::error::{Error, ProtocolViolation, RetryCause, UsageError};
use crate::range::{RangeForm, content_range, parse_decimal, parse_range};
use crate::response;
use crate::retry::{self, Attempt, RetryPolicy, Retrying};
use crate::secret::{RedactedHeaders, RedactedUri, SessionUri, check_absolute_http};

const X_TON_CONTENT_TYPE: HeaderName = HeaderName::from_static("x-ton-content-type");
const X_TON_CONTENT_LENGTH: HeaderName = HeaderName::from_static("x-ton-content-length");
const X_TON_EXPIRES: HeaderName = HeaderName::from_static("x-ton-expires");
const X_TON_MIN_CHUNK_SIZE: &str = "x-ton-min-chunk-size";
const X_TON_MAX_CHUNK_SIZE: &str = "x-ton-max-chunk-size";
const RESUME_INCOMPLETE: u16 = 308;
/// Longest `Expires` text kept (a date is 29 characters).
const MAX_EXPIRES_LEN: usize = 100;

/// Chunks, and single-request uploads, must be smaller than this: 64 MiB (T1, T4).
pub const CHUNK_LIMIT: u64 = 64 << 20;

/// How long a chunk should take at the observed rate, by default. TON asks for chunks that
/// upload in about 30 s (T4); 20 s leaves a margin for a rate that drops.
pub const DEFAULT_CHUNK_TIME: Duration = Duration::from_secs(20);

/// How the upload begins.
#[derive(Clone)]
pub enum TonStart {
    /// A resumable upload (T2): `POST {bucket_url}?resumable=true`, then chunks (T4). The
    /// bucket URL is for example `https://ton.twitter.com/1.1/ton/bucket/ta_partner`; a query
    /// it already has is kept.
    Resumable {
        /// The bucket URL.
        bucket_url: Uri,
    },
    /// One `POST {bucket_url}` with the whole source as the body (T1); only for sources under
    /// 64 MiB. Nothing can be resumed: a failure re-sends the whole body.
    Single {
        /// The bucket URL.
        bucket_url: Uri,
    },
    /// An upload saved from an earlier run with [`TonUpload::resume_state`]: the first request
    /// is a chunk from the saved persisted offset (TON has no status query).
    Resume(TonResumeState),
}

impl fmt::Debug for TonStart {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TonStart::Resumable { bucket_url } => f
                .debug_struct("TonStart::Resumable")
                .field("bucket_url", &RedactedUri(bucket_url))
                .finish(),
            TonStart::Single { bucket_url } => f
                .debug_struct("TonStart::Single")
                .field("bucket_url", &RedactedUri(bucket_url))
                .finish(),
            TonStart::Resume(_) => f.write_str("TonStart::Resume(<redacted>)"),
        }
    }
}

/// Settings of one TON upload. Build it with [`TonConfig::new`], change fields, and pass it
/// to [`TonUpload::new`].
#[derive(Clone)]
#[non_exhaustive]
pub struct TonConfig {
    /// The asset's content type, sent as `Content-Type` and `X-TON-Content-Type` (T2, T4).
    pub content_type: HeaderValue,
    /// The source's size in bytes, sent as `X-TON-Content-Length` (T2) and in every
    /// `Content-Range` (T4). TON needs it up front.
    pub total: u64,
    /// `X-TON-Expires`: when the server may drop the upload, as an RFC 1123 date
    /// (`Wed, 05 Nov 2014 23:50:16 GMT`), at most 7 days ahead; some buckets require it (T2).
    /// The core has no clock, so the caller formats it; it is sent as given (trimmed).
    pub expires: Option<String>,
    /// The preferred chunk size in bytes, used until a rate is measured; fitted to the
    /// server's limits (a multiple of the minimum, within the maximum, under 64 MiB). Must not
    /// be zero. Default 4 MiB.
    pub chunk_size: u64,
    /// How long a chunk should take at the observed rate; `None` keeps the chunk size fixed.
    /// Default [`DEFAULT_CHUNK_TIME`]. See the module docs for the rule.
    pub chunk_time: Option<Duration>,
    /// Retry policy (T6, as G8).
    pub retry: RetryPolicy,
    /// Extra headers for the start (or single) request only, for example `Authorization`.
    /// Never sent to the upload's location. Values are marked sensitive.
    pub start_headers: HeaderMap,
    /// A fingerprint of the source chosen by the caller (path, size, mtime…), kept in the
    /// resume state so a later run can tell whether the state belongs to the same source.
    pub fingerprint: String,
}

impl TonConfig {
    /// Defaults for a source of `total` bytes of `content_type`: 4 MiB first chunks adapting
    /// to a 20 s target, no `X-TON-Expires`, the default retry policy.
    pub fn new(content_type: HeaderValue, total: u64) -> Self {
        TonConfig {
            content_type,
            total,
            expires: None,
            chunk_size: 4 << 20,
            chunk_time: Some(DEFAULT_CHUNK_TIME),
            retry: RetryPolicy::default(),
            start_headers: HeaderMap::new(),
            fingerprint: String::new(),
        }
    }
}

impl fmt::Debug for TonConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TonConfig")
            .field("content_type", &self.content_type)
            .field("total", &self.total)
            .field("expires", &self.expires)
            .field("chunk_size", &self.chunk_size)
            .field("chunk_time", &self.chunk_time)
            .field("retry", &self.retry)
            .field("start_headers", &RedactedHeaders(&self.start_headers))
            .finish_non_exhaustive()
    }
}

/// The server's chunk-size limits from the start response (T3).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ChunkLimits {
    /// `X-TON-Min-Chunk-Size`: every chunk but the last is a multiple of it.
    pub min: u64,
    /// `X-TON-Max-Chunk-Size`: no chunk is larger.
    pub max: u64,
}

impl ChunkLimits {
    /// Checks limits for an upload of `total` bytes (T3, T4).
    ///
    /// # Errors
    /// [`ProtocolViolation::ChunkLimits`] when a size is zero, the minimum exceeds the maximum,
    /// or the upload needs more than one chunk but no multiple of the minimum is under 64 MiB.
    pub fn new(min: u64, max: u64, total: u64) -> Result<Self, ProtocolViolation> {
        if min == 0 {
            return Err(ProtocolViolation::ChunkLimits(
                "the minimum chunk size is zero",
            ));
        }
        if max == 0 {
            return Err(ProtocolViolation::ChunkLimits(
                "the maximum chunk size is zero",
            ));
        }
        if min > max {
            return Err(ProtocolViolation::ChunkLimits(
                "the minimum chunk size exceeds the maximum",
            ));
        }
        let limits = ChunkLimits { min, max };
        if total > limits.cap() && min > limits.cap() {
            return Err(ProtocolViolation::ChunkLimits(
                "no multiple of the minimum chunk size is under 64 MiB",
            ));
        }
        Ok(limits)
    }

    /// The largest chunk allowed: at most the maximum and under 64 MiB (T4).
    pub fn cap(self) -> u64 {
        self.max.min(CHUNK_LIMIT - 1)
    }

    /// The chunk size for a wanted `size`: rounded down to a multiple of the minimum, at most
    /// the cap, at least the minimum (T4), and at least 2 bytes: with a minimum of 1 a 308 to a
    /// 1-byte chunk can be read as no progress (T5), while a 2-byte chunk always moves on. Only
    /// a final chunk is cut shorter.
    pub fn fit(self, size: u64) -> u64 {
        round_down_to_granule(size.min(self.cap()), self.min).max(2.min(self.cap()))
    }
}

/// What a driver saves so a later run can resume the same upload.
///
/// Get it from [`TonUpload::resume_state`] after every input and after every `Send` is handed
/// out, and save it whenever it changed, before sending the request (so that `sent` is never
/// behind what the server may hold); pass it back as [`TonStart::Resume`]. It holds the
/// upload's location, a capability: store it with owner-only permissions.
#[derive(Clone, PartialEq, Eq, Debug)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct TonResumeState {
    /// The upload's location from the start response (T3), resolved (redacted in `Debug`).
    pub location: SessionUri,
    /// The source's size.
    pub total: u64,
    /// Bytes the server acknowledged holding (T5): a multiple of `min_chunk`.
    pub persisted: u64,
    /// The end of the furthest byte ever sent: the server cannot hold more than this (T5).
    pub sent: u64,
    /// `X-TON-Min-Chunk-Size` (T3).
    pub min_chunk: u64,
    /// `X-TON-Max-Chunk-Size` (T3).
    pub max_chunk: u64,
    /// The upload's expiry as the server wrote it (`Expires`, T3), or the caller's
    /// `X-TON-Expires` when the server sent none.
    pub expires: Option<String>,
    /// The caller's fingerprint of the source (see [`TonConfig::fingerprint`]).
    pub fingerprint: String,
}

/// A finished TON upload (T1, T6).
#[derive(Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct TonCompletion {
    /// The final status (201; 200 is accepted too).
    pub status: StatusCode,
    /// The object's size: every one of these bytes was acknowledged by the server.
    pub size: u64,
    /// Where the stored object is (the final `Location`, resolved against the request): save
    /// it for later Twitter API calls. Not a capability, but `Debug` hides its query.
    pub location: Uri,
}

impl fmt::Debug for TonCompletion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TonCompletion")
            .field("status", &self.status)
            .field("size", &self.size)
            .field("location", &RedactedUri(&self.location))
            .finish()
    }
}

/// The request kinds of this protocol.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Kind {
    /// T1: the whole source in one `POST`.
    Single,
    /// T2: `POST ?resumable=true`.
    Start,
    /// T4: `PUT location` with this range of the source.
    Chunk(Range<u64>),
}

/// Where the upload stands, with what only that step needs.
#[derive(Clone, Debug)]
enum Phase {
    /// T1: the whole source in one `POST` to the bucket URL.
    Single(Uri),
    /// T2: the start, to the bucket URL with `resumable=true`.
    Start(Uri),
    /// T4: chunks to the upload's location, within the server's limits (T3).
    Chunks(Located),
}

/// What the start response established (T3), for the chunks.
#[derive(Clone, Debug)]
struct Located {
    location: SessionUri,
    limits: ChunkLimits,
    /// The size of the next full chunk (T4, adapted to the rate).
    chunk: ChunkSize,
    /// The expiry on the driver's clock, measured from the start response's `Date`.
    expires_at: Option<Instant>,
}

/// What an answer to a request means.
enum Reply {
    /// `201`/`200` to the start (T3).
    Started(Response<Bytes>),
    /// `308` to a chunk: the server holds this many bytes (T5).
    Progress(u64),
    /// `201`/`200` that completes the upload (T1, T6), with the object's location.
    Complete(StatusCode, Uri),
    /// `404`/`410` to a chunk: gone, or expired (T6).
    Gone(Error),
    /// A retryable failure (T6).
    Retry(RetryCause, Option<Duration>),
    /// The upload ends with this error.
    End(Error),
}

/// A TON upload: a pure state machine the driver polls. See the crate docs for the driving
/// loop, [`Upload`] for the contract, and the module docs for the protocol decisions.
pub struct TonUpload {
    content_type: HeaderValue,
    total: u64,
    expires_header: Option<HeaderValue>,
    preferred_chunk: u64,
    chunk_time: Option<Duration>,
    start_headers: HeaderMap,
    fingerprint: String,

    phase: Phase,
    /// The upload's expiry as text (T3), or the caller's `X-TON-Expires`.
    expires: Option<String>,
    persisted: u64,
    /// Upper bound on what the server can hold (T5). A resumed upload takes it from the saved
    /// state: TON has no status query and no checksum, so a claim beyond it cannot be checked
    /// and is refused; a driver must save the state durably before every request.
    sent: u64,
    engine: Engine<Kind, TonCompletion>,
}

impl fmt::Debug for TonUpload {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TonUpload")
            .field("total", &self.total)
            .field("persisted", &self.persisted)
            .field("sent", &self.sent)
            .field("limits", &self.limits())
            .field("chunk", &self.chunk_size())
            .field("expires", &self.expires)
            .field("in_flight", &self.engine.flights().len())
            .field("wait_until", &self.engine.wait_until())
            .field("outcome", &self.engine.outcome())
            .finish_non_exhaustive()
    }
}

impl TonUpload {
    /// Creates an upload. Nothing is sent until the driver polls.
    ///
    /// # Errors
    /// [`UsageError`] for a zero chunk size or chunk time, an `expires` that is not a valid
    /// header value, a URL that is not absolute http(s), an empty source for a resumable
    /// upload (T4 cannot express an empty chunk: use [`TonStart::Single`]), a source of 64 MiB
    /// or more for [`TonStart::Single`] (T1), or a resume state that does not fit `config`
    /// (different fingerprint or total, unusable limits or offsets).
    pub fn new(start: TonStart, config: TonConfig) -> Result<Self, UsageError> {
        if config.chunk_size == 0 {
            return Err(UsageError::ChunkSize {
                size: 0,
                rule: "must be greater than zero",
            });
        }
        if config.chunk_time == Some(Duration::ZERO) {
            return Err(UsageError::InvalidInput {
                what: "chunk time",
                why: "must be greater than zero",
            });
        }
        let expires_header = match &config.expires {
            Some(text) => Some(
                HeaderValue::from_str(text.trim())
                    .ok()
                    .filter(|v| !v.is_empty())
                    .ok_or(UsageError::InvalidInput {
                        what: "X-TON-Expires",
                        why: "not a valid, non-empty header value",
                    })?,
            ),
            None => None,
        };
        let mut start_headers = config.start_headers;
        for value in start_headers.values_mut() {
            value.set_sensitive(true);
        }
        let mut upload = TonUpload {
            phase: Phase::Start(Uri::default()),
            content_type: config.content_type,
            total: config.total,
            expires: config.expires.map(|e| e.trim().to_owned()),
            expires_header,
            preferred_chunk: config.chunk_size,
            chunk_time: config.chunk_time,
            start_headers,
            fingerprint: config.fingerprint,
            persisted: 0,
            sent: 0,
            engine: Engine::new(config.retry),
        };
        match start {
            TonStart::Resumable { bucket_url } => {
                check_absolute_http(&bucket_url, "bucket URL")?;
                if upload.total == 0 {
                    return Err(UsageError::InvalidInput {
                        what: "total size",
                        why: "a resumable upload needs a byte to send (T4); use TonStart::Single",
                    });
                }
                upload.phase = Phase::Start(resumable_url(&bucket_url)?);
            }
            TonStart::Single { bucket_url } => {
                check_absolute_http(&bucket_url, "bucket URL")?;
                if upload.total >= CHUNK_LIMIT {
                    return Err(UsageError::InvalidInput {
                        what: "total size",
                        why: "TON takes a file in one request only when it is under 64 MiB (T1)",
                    });
                }
                upload.phase = Phase::Single(bucket_url);
            }
            TonStart::Resume(state) => upload.adopt(state)?,
        }
        Ok(upload)
    }

    fn adopt(&mut self, state: TonResumeState) -> Result<(), UsageError> {
        if state.fingerprint != self.fingerprint {
            return Err(UsageError::StateMismatch(
                "the source's fingerprint differs",
            ));
        }
        if state.total != self.total {
            return Err(UsageError::StateMismatch("the source's size differs"));
        }
        let limits = ChunkLimits::new(state.min_chunk, state.max_chunk, state.total)
            .map_err(|_| UsageError::StateMismatch("its chunk-size limits are unusable"))?;
        if state.persisted > state.sent
            || state.sent > state.total
            || state.persisted >= state.total
            || !state.persisted.is_multiple_of(limits.min)
        {
            return Err(UsageError::StateMismatch("its offsets are inconsistent"));
        }
        self.phase = Phase::Chunks(Located {
            location: state.location,
            limits,
            chunk: ChunkSize::new(limits.fit(self.preferred_chunk), limits.min)?,
            expires_at: None,
        });
        self.persisted = state.persisted;
        self.sent = state.sent;
        if state.expires.is_some() {
            self.expires = state.expires;
        }
        self.engine.stats_mut().resumed_from = Some(state.persisted);
        Ok(())
    }

    // ---- getters ----

    /// Bytes the server has acknowledged holding so far (T5).
    pub fn persisted(&self) -> u64 {
        self.persisted
    }

    /// The source's size.
    pub fn total(&self) -> u64 {
        self.total
    }

    /// The upload's location, once the start request has succeeded (T3; a capability: do
    /// not log it).
    pub fn location(&self) -> Option<&SessionUri> {
        self.located().map(|l| &l.location)
    }

    /// The server's chunk-size limits, once known (T3).
    pub fn limits(&self) -> Option<ChunkLimits> {
        self.located().map(|l| l.limits)
    }

    /// The size the next full chunk will have, once the limits are known (T4).
    pub fn chunk_size(&self) -> Option<u64> {
        self.located().map(|l| l.chunk.get())
    }

    /// The upload's expiry as text: the start response's `Expires` (T3), else the caller's
    /// `X-TON-Expires`. Show it to the user, or compare it with the wall clock before
    /// resuming.
    pub fn expires(&self) -> Option<&str> {
        self.expires.as_deref()
    }

    fn located(&self) -> Option<&Located> {
        match &self.phase {
            Phase::Chunks(located) => Some(located),
            _ => None,
        }
    }

    // ---- inputs ----

    /// What the request `kind` was, for retry reports and errors.
    fn attempt(&self, kind: &Kind) -> Attempt {
        match (kind, &self.phase) {
            (Kind::Chunk(range), _) => Attempt::new(&self.location_uri(), Some(range.clone())),
            (Kind::Single, Phase::Single(url)) => Attempt::new(url, Some(0..self.total)),
            (_, Phase::Single(url) | Phase::Start(url)) => Attempt::new(url, None),
            (_, Phase::Chunks(_)) => Attempt::new(&self.location_uri(), None),
        }
    }

    /// What the answer to `kind` means (T1–T6).
    fn classify(&self, now: Instant, kind: &Kind, response: Response<Bytes>) -> Reply {
        let status = response.status();
        let success = status == StatusCode::CREATED || status == StatusCode::OK;
        let retry = || {
            Reply::Retry(
                RetryCause::Status(status),
                retry::retry_after(response.headers()),
            )
        };
        let retryable = self.engine.policy().retries_status(status);
        match kind {
            Kind::Single if success => match &self.phase {
                Phase::Single(url) => match response::location(response.headers(), url) {
                    Ok(location) => Reply::Complete(status, location),
                    Err(v) => Reply::End(v.into()),
                },
                _ => Reply::End(Error::Internal("a single request outside its phase")),
            },
            Kind::Start if success => Reply::Started(response),
            Kind::Single | Kind::Start if retryable => retry(),
            Kind::Single | Kind::Start => {
                Reply::End(response::final_error(status, response.body()))
            }
            Kind::Chunk(range) if status.as_u16() == RESUME_INCOMPLETE => {
                match self.read_persisted(response.headers(), range.end) {
                    Ok(claimed) => Reply::Progress(claimed),
                    Err(v) => Reply::End(v.into()),
                }
            }
            // T6: complete only once every byte was sent. Not necessarily by this chunk: when
            // the 201 to the last chunk was lost, a re-sent earlier range may get the 201.
            Kind::Chunk(_) if success && self.sent < self.total => Reply::End(
                ProtocolViolation::PrematureCompletion {
                    sent: self.sent,
                    total: self.total,
                }
                .into(),
            ),
            Kind::Chunk(_) if success => {
                match response::location(response.headers(), &self.location_uri()) {
                    Ok(location) => Reply::Complete(status, location),
                    Err(v) => Reply::End(v.into()),
                }
            }
            Kind::Chunk(_) if status == StatusCode::NOT_FOUND || status == StatusCode::GONE => {
                Reply::Gone(if self.is_expired(response.headers(), now) {
                    Error::Expired { status }
                } else {
                    Error::SessionGone { status }
                })
            }
            Kind::Chunk(_) if retryable => retry(),
            Kind::Chunk(_) => Reply::End(response::final_error(status, response.body())),
        }
    }

    /// Every transition of the protocol: what the answer (`reply`) to the request `flight`
    /// changes, and what comes next. After a retryable failure the same kind of request is
    /// sent after the wait; for a chunk it starts at the last acknowledged offset (see the
    /// module docs).
    fn transition(&mut self, now: Instant, flight: Flight<Kind>, reply: Reply) {
        match (flight.kind, reply) {
            (_, Reply::End(error) | Reply::Gone(error)) => self.engine.finish(Err(error)),
            (_, Reply::Complete(status, location)) => {
                self.persisted = self.total;
                self.engine.finish(Ok(TonCompletion {
                    status,
                    size: self.total,
                    location,
                }));
            }
            (Kind::Start, Reply::Started(response)) => self.on_started(now, &response),
            (Kind::Chunk(range), Reply::Progress(claimed)) => {
                // The server took the whole chunk before answering: that is the rate (T4).
                if let Some(target) = self.chunk_time {
                    let elapsed = now.saturating_duration_since(flight.handed_out);
                    self.resize(size_for_rate(range.end - range.start, elapsed, target));
                }
                let progressed = claimed > self.persisted;
                self.persisted = claimed;
                if progressed {
                    self.engine.progress();
                } else {
                    // The server took a chunk and stored nothing new: retry, but count it so a
                    // server that never makes progress cannot keep us looping.
                    let attempt = self.attempt(&Kind::Chunk(range));
                    self.engine
                        .retry(now, RetryCause::NoProgress, None, attempt);
                }
            }
            (kind, Reply::Retry(cause, after)) => {
                // T4: a chunk that timed out was too big for the link: halve it.
                if let (
                    Kind::Chunk(range),
                    RetryCause::Transport(TransportFailure::Timeout),
                    Some(_),
                ) = (&kind, cause, self.chunk_time)
                {
                    self.resize((range.end - range.start) / 2);
                }
                let attempt = self.attempt(&kind);
                self.engine.retry(now, cause, after, attempt);
            }
            (_, Reply::Started(_) | Reply::Progress(_)) => self
                .engine
                .finish(Err(Error::Internal("a TON answer outside its phase"))),
        }
    }

    /// The start response (T3): the location, the chunk-size limits and the expiry.
    fn on_started(&mut self, now: Instant, response: &Response<Bytes>) {
        let headers = response.headers();
        let base = match &self.phase {
            Phase::Start(url) => url.clone(),
            _ => Uri::default(),
        };
        // `location` resolves TON's relative path against the start URL and yields only
        // absolute http(s), which `SessionUri` accepts.
        let location = match response::location(headers, &base)
            .and_then(|uri| SessionUri::new(uri).map_err(|_| ProtocolViolation::MissingLocation))
        {
            Ok(l) => l,
            Err(v) => return self.engine.finish(Err(v.into())),
        };
        let limits = chunk_size_header(headers, X_TON_MIN_CHUNK_SIZE)
            .and_then(|min| Ok((min, chunk_size_header(headers, X_TON_MAX_CHUNK_SIZE)?)))
            .and_then(|(min, max)| ChunkLimits::new(min, max, self.total));
        let limits = match limits {
            Ok(l) => l,
            Err(v) => return self.engine.finish(Err(v.into())),
        };
        let chunk = match ChunkSize::new(limits.fit(self.preferred_chunk), limits.min) {
            Ok(c) => c,
            Err(_) => {
                return self.engine.finish(Err(ProtocolViolation::ChunkLimits(
                    "no chunk size fits the limits",
                )
                .into()));
            }
        };
        let expires = headers
            .get(EXPIRES)
            .and_then(|v| v.to_str().ok())
            .map(|t| t.trim().chars().take(MAX_EXPIRES_LEN).collect::<String>())
            .filter(|t| !t.is_empty());
        if expires.is_some() {
            self.expires = expires;
        }
        // The expiry on the driver's clock: what was left of it when the server answered.
        let mut expires_at = None;
        let server_now = headers
            .get(DATE)
            .and_then(|v| v.to_str().ok())
            .and_then(parse_http_date);
        if let (Some(date), Some(expiry)) = (
            server_now,
            self.expires.as_deref().and_then(parse_http_date),
        ) {
            let left = expiry.duration_since(date).unwrap_or(Duration::ZERO);
            expires_at = now.checked_add(left);
        }
        self.phase = Phase::Chunks(Located {
            location,
            limits,
            chunk,
            expires_at,
        });
        self.engine.progress();
    }

    /// Reads the persisted count from a 308 (T5): see "Reading `Range`" in the module docs.
    fn read_persisted(
        &self,
        headers: &HeaderMap,
        chunk_end: u64,
    ) -> Result<u64, ProtocolViolation> {
        let mut ranges = headers.get_all(RANGE).iter();
        let end = match (ranges.next(), ranges.next()) {
            (None, _) => {
                // No Range: nothing is held, which must not undo an acknowledgement.
                if self.persisted > 0 {
                    return Err(ProtocolViolation::PersistedWentBackwards {
                        before: self.persisted,
                        now: 0,
                    });
                }
                return Ok(0);
            }
            (Some(_), Some(_)) => return Err(ProtocolViolation::MalformedRange),
            (Some(value), None) => {
                let (start, end) = parse_range(value.as_bytes(), RangeForm::BytesPrefixOptional)?;
                if start != 0 {
                    return Err(ProtocolViolation::RangeNotFromZero { start });
                }
                end
            }
        };
        // `parse_range` gives N+1 for `0-N`, and N+1 ≥ 1.
        let n = end - 1;
        let min = self.located().map_or(1, |l| l.limits.min);
        // T5: the server holds N+1 bytes (N is the last byte) or N (N is the length). Never
        // resume past a byte you cannot prove was stored: a reading counts only if it is at
        // most what was ever sent, not below what was acknowledged, short of the total (a 308
        // means incomplete), and agrees with the chunk sent (its end) or is a multiple of the
        // minimum chunk size (servers persist whole minimum chunks). Both can count only when
        // min = 1; then the smaller is the one that is proven.
        let possible = |held: u64| {
            held <= self.sent
                && held >= self.persisted
                && held < self.total
                && (held == chunk_end || held.is_multiple_of(min))
        };
        match (possible(n), possible(end)) {
            (true, _) => Ok(n),
            (false, true) => Ok(end),
            (false, false) if n > self.sent => Err(ProtocolViolation::RangeBeyondSent {
                claimed: n,
                sent: self.sent,
            }),
            (false, false) if end < self.persisted => {
                Err(ProtocolViolation::PersistedWentBackwards {
                    before: self.persisted,
                    now: end,
                })
            }
            (false, false) => Err(ProtocolViolation::RangeUnreadable {
                n,
                chunk_end,
                min_chunk: min,
            }),
        }
    }

    /// Whether a 404/410 means the upload expired: the server's `Date` (else the driver's
    /// clock, measured from the start response) is at or past the expiry.
    fn is_expired(&self, headers: &HeaderMap, now: Instant) -> bool {
        let server_now = headers
            .get(DATE)
            .and_then(|v| v.to_str().ok())
            .and_then(parse_http_date);
        let expiry = self.expires.as_deref().and_then(parse_http_date);
        match (server_now, expiry) {
            (Some(date), Some(expiry)) => date >= expiry,
            _ => self
                .located()
                .and_then(|l| l.expires_at)
                .is_some_and(|at| now >= at),
        }
    }

    // ---- planning ----

    /// Sets the chunk size to the fitted `wanted` (T4).
    fn resize(&mut self, wanted: u64) {
        if let Phase::Chunks(located) = &mut self.phase
            && let Ok(chunk) = ChunkSize::new(located.limits.fit(wanted), located.limits.min)
        {
            located.chunk = chunk;
        }
    }

    /// The next chunk (T4): from the last acknowledged offset, one chunk size long or up to
    /// the end of the source.
    fn plan_chunk(&self) -> Result<Range<u64>, ProtocolViolation> {
        let chunk = self
            .located()
            .map(|l| l.chunk)
            .ok_or(ProtocolViolation::ChunkLimits(
                "no chunk-size limits are known",
            ))?;
        let range = chunk.chunk_at(self.persisted, Some(self.total));
        if range.is_empty() {
            // Unreachable while `persisted < total`, which every 308 reading keeps.
            return Err(ProtocolViolation::PrematureCompletion {
                sent: self.sent,
                total: self.total,
            });
        }
        Ok(range)
    }

    fn build(&self, id: RequestId, kind: &Kind) -> Transmit {
        let mut headers = HeaderMap::new();
        let (method, uri, body) = match kind {
            Kind::Single => {
                // T1.
                headers.insert(CONTENT_TYPE, self.content_type.clone());
                headers.insert(CONTENT_LENGTH, crate::range::decimal(self.total));
                if let Some(e) = &self.expires_header {
                    headers.insert(X_TON_EXPIRES, e.clone());
                }
                let url = match &self.phase {
                    Phase::Single(url) => url.clone(),
                    _ => Uri::default(),
                };
                (Method::POST, url, Body::source(0..self.total))
            }
            Kind::Start => {
                // T2.
                headers.insert(CONTENT_LENGTH, HeaderValue::from_static("0"));
                headers.insert(CONTENT_TYPE, self.content_type.clone());
                headers.insert(X_TON_CONTENT_TYPE, self.content_type.clone());
                headers.insert(X_TON_CONTENT_LENGTH, crate::range::decimal(self.total));
                if let Some(e) = &self.expires_header {
                    headers.insert(X_TON_EXPIRES, e.clone());
                }
                let url = match &self.phase {
                    Phase::Start(url) => url.clone(),
                    _ => Uri::default(),
                };
                (Method::POST, url, Body::empty())
            }
            Kind::Chunk(range) => {
                // T4.
                headers.insert(CONTENT_TYPE, self.content_type.clone());
                headers.insert(
                    CONTENT_RANGE,
                    content_range(range.clone(), Some(self.total)),
                );
                headers.insert(
                    CONTENT_LENGTH,
                    crate::range::decimal(range.end - range.start),
                );
                (
                    Method::PUT,
                    self.location_uri(),
                    Body::source(range.clone()),
                )
            }
        };
        if matches!(kind, Kind::Single | Kind::Start) {
            for (name, value) in &self.start_headers {
                headers.append(name.clone(), value.clone());
            }
        }
        Transmit::new(id, method, uri, headers, body)
    }

    fn location_uri(&self) -> Uri {
        self.located()
            .map(|l| l.location.expose().clone())
            .unwrap_or_default()
    }
}

impl Upload for TonUpload {
    type Output = TonCompletion;
    type State = TonResumeState;

    fn poll_action(&mut self, now: Instant) -> Action<TonCompletion> {
        if let Some(action) = self.engine.poll_head(now) {
            return action;
        }
        if !self.engine.flights().is_empty() {
            return Action::Idle;
        }
        // TON documents no way to delete an upload: a cancel ends it here.
        if self.engine.cancel_requested() {
            self.engine.finish(Err(Error::Cancelled));
            return self.poll_action(now);
        }
        let kind = match &self.phase {
            Phase::Single(_) => Kind::Single,
            Phase::Start(_) => Kind::Start,
            Phase::Chunks(_) => match self.plan_chunk() {
                Ok(range) => Kind::Chunk(range),
                Err(v) => {
                    self.engine.finish(Err(v.into()));
                    return self.poll_action(now);
                }
            },
        };
        let source_len = match &kind {
            Kind::Single => self.total,
            Kind::Chunk(range) => {
                self.sent = self.sent.max(range.end);
                range.end - range.start
            }
            Kind::Start => 0,
        };
        let id = self.engine.hand_out(now, kind.clone(), source_len);
        Action::Send(self.build(id, &kind))
    }

    fn persisted(&self) -> u64 {
        self.persisted
    }

    /// What to save to resume this upload in a later process; `None` before the start
    /// response (T3), for a single-request upload, and once the upload has succeeded. Save it
    /// (durably: TON cannot be asked what it holds) before sending the next request.
    fn resume_state(&self) -> Option<TonResumeState> {
        if matches!(self.engine.outcome(), Some(Ok(_))) {
            return None;
        }
        let located = self.located()?;
        Some(TonResumeState {
            location: located.location.clone(),
            total: self.total,
            persisted: self.persisted,
            sent: self.sent,
            min_chunk: located.limits.min,
            max_chunk: located.limits.max,
            expires: self.expires.clone(),
            fingerprint: self.fingerprint.clone(),
        })
    }

    /// Asks the upload to stop: once no request is in flight, the outcome is
    /// [`Error::Cancelled`]. TON documents no way to delete an upload, so nothing is sent;
    /// the resume state stays valid until the upload expires. A completion that arrives first
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
            total: Some(self.total),
        }
    }

    /// The last retry this upload scheduled: what failed, the wait, the attempt count.
    fn last_retry(&self) -> Option<&Retrying> {
        self.engine.last_retry()
    }

    /// TON asks for no reads: this always fails with [`UsageError::UnexpectedRead`] (or
    /// [`UsageError::Finished`] once the upload is over).
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
        let reply = self.classify(now, &flight.kind, response);
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
        let reply = Reply::Retry(RetryCause::Transport(failure), None);
        self.transition(now, flight, reply);
        Ok(())
    }
}

/// `bucket_url` with `resumable=true` added to its query (T2), unless it is there already.
fn resumable_url(bucket_url: &Uri) -> Result<Uri, UsageError> {
    let invalid = UsageError::InvalidInput {
        what: "bucket URL",
        why: "cannot add resumable=true to it",
    };
    let path = bucket_url.path();
    let path_and_query = match bucket_url.query() {
        Some(q) if q.split('&').any(|pair| pair == "resumable=true") => format!("{path}?{q}"),
        Some(q) if !q.is_empty() => format!("{path}?{q}&resumable=true"),
        _ => format!("{path}?resumable=true"),
    };
    let mut parts = bucket_url.clone().into_parts();
    parts.path_and_query = Some(path_and_query.parse().map_err(|_| invalid.clone())?);
    Uri::from_parts(parts).map_err(|_| invalid)
}

/// A chunk-size header of the start response (T3): present once, a positive decimal.
fn chunk_size_header(headers: &HeaderMap, name: &'static str) -> Result<u64, ProtocolViolation> {
    let mut values = headers.get_all(name).iter();
    let what = if name == X_TON_MIN_CHUNK_SIZE {
        "X-TON-Min-Chunk-Size is missing, repeated or not a number"
    } else {
        "X-TON-Max-Chunk-Size is missing, repeated or not a number"
    };
    match (values.next(), values.next()) {
        (Some(v), None) => v
            .to_str()
            .ok()
            .and_then(|t| parse_decimal(t.trim()))
            .ok_or(ProtocolViolation::ChunkLimits(what)),
        _ => Err(ProtocolViolation::ChunkLimits(what)),
    }
}

/// An HTTP date, also in the `UTC` spelling TON writes `Expires` and `Date` in (T3:
/// `Wed, 05 Nov 2014 23:50:16 UTC`).
fn parse_http_date(text: &str) -> Option<SystemTime> {
    let text = text.trim();
    if let Ok(t) = httpdate::parse_http_date(text) {
        return Some(t);
    }
    let stem = text
        .strip_suffix("UTC")
        .or_else(|| text.strip_suffix("+0000"))?;
    httpdate::parse_http_date(&format!("{stem}GMT")).ok()
}
