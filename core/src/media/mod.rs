//! Twitter/X `media/upload` chunked upload (rules M1–M7 in `docs/protocols`), in both API forms:
//! v1.1 (`upload.twitter.com/1.1/media/upload.json`, form fields, `media_id_string`) and X API
//! v2 (`api.x.com/2/media/upload/…`, JSON requests, `data`-wrapped answers).
//!
//! The whole state machine is in this file: [`MediaUpload::poll_action`] decides the next step
//! from the state, and `handle_*` move the state on. [`plan`] says which bytes each segment
//! carries; `multipart` frames them and `reply` reads the server's JSON.
//!
//! ```text
//!  INIT ──2xx: media id──▶ APPEND 0 … APPEND n-1 (any 2xx, body unread) ──▶ FINALIZE
//!  FINALIZE or STATUS answered 2xx, by its processing_info:
//!    none (FINALIZE only), or succeeded ──▶ Done(Ok)
//!    failed, or any `error` ─────────────▶ Done(ProcessingFailed)
//!    pending, in_progress ───────────────▶ Wait(check_after_secs) ──▶ STATUS
//!  any request: transport failure, 408, 429, 5xx ──▶ Wait(backoff) ──▶ the same request again
//!  final 4xx ──▶ Done(Api | Server) · expires_after_secs passed ──▶ Done(MediaExpired)
//!  more than max_status_polls "still processing" answers ──▶ Done(ProcessingUnfinished)
//! ```
//!
//! # Example
//!
//! The crate docs' loop, with a fake server standing in for Twitter:
//!
//! ```
//! use std::time::Instant;
//! use bytes::Bytes;
//! use resumable_core::media::{ApiVersion, MediaConfig, MediaUpload};
//! use resumable_core::{Action, Upload};
//!
//! let file = vec![7u8; 10];
//! let mut config = MediaConfig::new(ApiVersion::v1_1(), file.len() as u64, "image/gif");
//! config.segment_size = 4; // tiny, to show three APPENDs
//! config.headers.insert("authorization", "Bearer token".parse().unwrap());
//! let mut upload = MediaUpload::new(config).unwrap();
//!
//! let mut now = Instant::now(); // the driver owns the clock
//! let mut appended = Vec::new();
//! let outcome = loop {
//!     match upload.poll_action(now) {
//!         Action::Send(send) => {
//!             // Send `prefix`, the file's bytes in `source`, then `suffix`.
//!             let r = &send.body.source;
//!             appended.extend_from_slice(&file[r.start as usize..r.end as usize]);
//!             let body = if send.body.prefix.starts_with(b"command=INIT") {
//!                 r#"{"media_id_string":"1880028106020515840","expires_after_secs":86400}"#
//!             } else if send.body.prefix.starts_with(b"command=FINALIZE") {
//!                 r#"{"media_id_string":"1880028106020515840","size":10}"#
//!             } else {
//!                 "" // APPEND: any 2xx, often empty
//!             };
//!             let response = http::Response::builder().status(200).body(Bytes::from(body));
//!             upload.handle_response(now, send.id, response.unwrap()).unwrap();
//!         }
//!         Action::Wait(until) => now = until, // a real driver sleeps until then
//!         Action::Idle => unreachable!("every request is answered before the next poll"),
//!         Action::Read(_) => unreachable!("media uploads never ask to read"),
//!         Action::Done(outcome) => break outcome,
//!     }
//! };
//! assert_eq!(outcome.unwrap().media_id, "1880028106020515840");
//! assert_eq!(appended, file);
//! ```
//!
//! # Requests, and what OAuth 1.0a signs (M7)
//!
//! Signing is the driver's job; the core only decides where each field goes:
//!
//! | request | v1.1 | v2 | signed fields |
//! |---|---|---|---|
//! | INIT | `POST endpoint`, form `command=INIT&total_bytes&media_type[&media_category][&additional_owners]` | `POST base/initialize`, JSON | v1.1: the form fields; v2: none (JSON) |
//! | APPEND | `POST endpoint`, multipart `command`, `media_id`, `segment_index`, `media` | `POST base/{id}/append`, multipart `segment_index`, `media` | none (multipart) |
//! | FINALIZE | `POST endpoint`, form `command=FINALIZE&media_id` | `POST base/{id}/finalize`, empty | v1.1: the form fields |
//! | STATUS | `GET endpoint?command=STATUS&media_id=ID` | `GET base?command=STATUS&media_id=ID` | the query |
//!
//! A form body is always wholly in [`Body::prefix`], with `Content-Type:
//! application/x-www-form-urlencoded`: a signer reads its fields from there.
//!
//! # Several APPENDs at once
//!
//! [`MediaConfig::max_in_flight`] (default 1) lets the core hand out up to N APPENDs before
//! any answer. Each poll hands out a **new** `Send` while fewer than N are in flight and a
//! segment is due (the next segment to retry, else the next never-sent one), and `Idle` once N
//! are in flight or nothing is due: send each `Send` as it comes (on its own connection, or
//! concurrently on one client), and poll again after any answer. Answers may come back in any
//! order; a failed segment is sent again with the same `segment_index`. A retried segment may
//! start before a later segment already sent: ranges never start before [`Upload::persisted`],
//! but the crate-wide ordering of `Send` ranges holds only for N = 1. Both drivers in
//! `adapters/` do this; the command-line tool's `media --parallel N` sets N.
//!
//! # Resuming
//!
//! [`MediaUpload::resume_state`] is a plain value ([`MediaResumeState`], serialisable with the
//! `serde` feature). A resumed upload continues with the first segment not acknowledged (with
//! N > 1, later segments that were acknowledged are sent again: re-appending a received
//! `segment_index` is harmless to Twitter), or with STATUS when FINALIZE had already answered.
//! The expiry deadline is an [`Instant`], which cannot outlive the process: a resumed upload
//! has none of its own, and the state carries the server's wall-clock deadline
//! ([`MediaResumeState::expires_at_unix`]) for the driver to check against its clock.

mod multipart;
pub mod plan;
mod reply;

use std::collections::BTreeSet;
use std::fmt;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::header::{CONTENT_LENGTH, CONTENT_TYPE};
use http::{HeaderMap, HeaderValue, Method, Response, Uri};

use crate::action::{Action, Body, Progress, RequestId, Stats, Transmit, TransportFailure, Upload};
use crate::engine::Engine;
use crate::error::{Error, IntegrityError, ProtocolViolation, RetryCause, UsageError};
use crate::response;
use crate::retry::{Attempt, RetryPolicy, Retrying};
use crate::secret::{RedactedHeaders, check_absolute_http};

pub use plan::{DEFAULT_SEGMENT_SIZE, MAX_SEGMENT_SIZE, MAX_SEGMENTS, SegmentPlan};

/// The v1.1 endpoint (M1).
pub const V1_1_ENDPOINT: &str = "https://upload.twitter.com/1.1/media/upload.json";

/// The X API v2 base (M6): `/initialize`, `/{id}/append`, `/{id}/finalize` go below it.
pub const V2_BASE: &str = "https://api.x.com/2/media/upload";

/// STATUS polls answered "still processing" before the upload gives up (M4): 600, an hour at
/// Twitter's usual five-second `check_after_secs`. The media id's expiry bounds them too.
pub const DEFAULT_MAX_STATUS_POLLS: u32 = 600;

/// The wait before a STATUS poll when `processing_info` gives no `check_after_secs` (M4).
pub const DEFAULT_CHECK_AFTER: Duration = Duration::from_secs(5);

/// The longest wait between STATUS polls; a longer `check_after_secs` is cut to this.
pub const MAX_CHECK_AFTER: Duration = Duration::from_secs(600);

const FORM_URLENCODED: &str = "application/x-www-form-urlencoded";

/// Which API the upload speaks, and where.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ApiVersion {
    /// v1.1 (M1–M5): every command goes to one endpoint.
    V1_1 {
        /// The endpoint, [`V1_1_ENDPOINT`] unless a test server stands in.
        endpoint: Uri,
    },
    /// X API v2 (M6): commands go to paths below `base`.
    V2 {
        /// The base, [`V2_BASE`] unless a test server stands in.
        base: Uri,
    },
}

impl ApiVersion {
    /// v1.1 at Twitter's endpoint.
    pub fn v1_1() -> Self {
        ApiVersion::V1_1 {
            endpoint: Uri::from_static(V1_1_ENDPOINT),
        }
    }

    /// v2 at X's endpoint.
    pub fn v2() -> Self {
        ApiVersion::V2 {
            base: Uri::from_static(V2_BASE),
        }
    }

    /// Which form, without the address (what a resume state records).
    pub fn form(&self) -> ApiForm {
        match self {
            ApiVersion::V1_1 { .. } => ApiForm::V1_1,
            ApiVersion::V2 { .. } => ApiForm::V2,
        }
    }
}

/// The API form of an upload, without its address.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub enum ApiForm {
    /// v1.1 (M1–M5).
    V1_1,
    /// X API v2 (M6).
    V2,
}

/// Settings of one media upload. Build with [`MediaConfig::new`], change fields, then pass to
/// [`MediaUpload::new`] (or [`MediaUpload::resume`]).
#[derive(Clone)]
#[non_exhaustive]
pub struct MediaConfig {
    /// The API form and its address.
    pub api: ApiVersion,
    /// The file's size in bytes (`total_bytes`): 1 to 5,000,000,000.
    pub total: u64,
    /// The file's MIME type (`media_type`), for example `video/mp4`.
    pub media_type: String,
    /// `media_category` (for example `tweet_video`, `dm_image`), if any.
    pub media_category: Option<String>,
    /// User ids (decimal) that may also use the media (`additional_owners`).
    pub additional_owners: Vec<String>,
    /// v2 `shared` (media usable in Direct Messages by others); v1.1 has no such field, so it
    /// must stay `false` there.
    pub shared: bool,
    /// Preferred bytes per APPEND, 1 to [`MAX_SEGMENT_SIZE`]; raised to ⌈total/1000⌉ when
    /// needed (M2). Default [`DEFAULT_SEGMENT_SIZE`].
    pub segment_size: u64,
    /// Retry policy for every request. Default: [`RetryPolicy::default`] with a 20-minute run
    /// deadline, so a 429 whose `x-rate-limit-reset` is the end of a 15-minute window is
    /// waited out (M5).
    pub retry: RetryPolicy,
    /// How many APPENDs may be in flight at once (default 1; see the module docs).
    pub max_in_flight: u32,
    /// STATUS answers of "still processing" allowed before giving up (M4); default
    /// [`DEFAULT_MAX_STATUS_POLLS`].
    pub max_status_polls: u32,
    /// Headers for every request, for example `Authorization` (OAuth 2 user token, or an
    /// OAuth 1.0a signature the driver adds per request instead). Values are marked sensitive
    /// and never shown by `Debug`. `Content-Type` and `Content-Length` are the core's.
    pub headers: HeaderMap,
    /// A fingerprint of the source chosen by the caller (path, size, mtime…), kept in the
    /// resume state so a later run can tell whether the state belongs to the same file.
    pub fingerprint: String,
    /// Seed of the multipart boundary. Drivers seed it from their own randomness, so a file
    /// cannot be crafted to contain it; tests use a constant for reproducible bodies.
    pub boundary_seed: u64,
}

impl MediaConfig {
    /// Defaults for a file of `total` bytes of type `media_type`: 4 MiB segments, one APPEND
    /// in flight, the default retry policy (with a deadline that outlasts a rate-limit window).
    pub fn new(api: ApiVersion, total: u64, media_type: impl Into<String>) -> Self {
        let retry = RetryPolicy {
            retry_deadline: Duration::from_secs(20 * 60),
            ..RetryPolicy::default()
        };
        MediaConfig {
            api,
            total,
            media_type: media_type.into(),
            media_category: None,
            additional_owners: Vec::new(),
            shared: false,
            segment_size: DEFAULT_SEGMENT_SIZE,
            retry,
            max_in_flight: 1,
            max_status_polls: DEFAULT_MAX_STATUS_POLLS,
            headers: HeaderMap::new(),
            fingerprint: String::new(),
            boundary_seed: 0x6D65_6469_6121_B0DE,
        }
    }
}

impl fmt::Debug for MediaConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MediaConfig")
            .field("api", &self.api)
            .field("total", &self.total)
            .field("media_type", &self.media_type)
            .field("media_category", &self.media_category)
            .field("additional_owners", &self.additional_owners)
            .field("shared", &self.shared)
            .field("segment_size", &self.segment_size)
            .field("retry", &self.retry)
            .field("max_in_flight", &self.max_in_flight)
            .field("max_status_polls", &self.max_status_polls)
            .field("headers", &RedactedHeaders(&self.headers))
            .finish_non_exhaustive()
    }
}

/// What a driver saves so a later run can continue the same media id.
///
/// Get it from [`MediaUpload::resume_state`] after every input and save it whenever it
/// changed; pass it to [`MediaUpload::resume`] with the same config.
#[derive(Clone, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct MediaResumeState {
    /// The API form the media id belongs to.
    pub api: ApiForm,
    /// The media id (`media_id_string` / `data.id`).
    pub media_id: String,
    /// The media key, when the server gave one.
    pub media_key: Option<String>,
    /// The file's size.
    pub total: u64,
    /// Bytes per segment: segment indexes mean these byte ranges, so a resumed upload keeps it.
    pub segment_size: u64,
    /// The first segment not acknowledged: the resumed upload sends it first.
    pub next_segment: u32,
    /// Where that segment starts (`next_segment × segment_size`, or the total).
    pub next_offset: u64,
    /// FINALIZE was answered with `processing_info`: the resumed upload polls STATUS.
    pub finalized: bool,
    /// `expires_after_secs` from INIT's answer, if any.
    pub expires_after_secs: Option<u64>,
    /// When the media id expires, in seconds since the Unix epoch by the server's clock (INIT's
    /// `Date` plus `expires_after_secs`), when both were given. The core has no clock: compare
    /// it with yours before resuming, and start over once it has passed.
    pub expires_at_unix: Option<u64>,
    /// The caller's fingerprint of the source (see [`MediaConfig::fingerprint`]).
    pub fingerprint: String,
}

impl MediaResumeState {
    /// Whether the media id has expired at `unix_now` (seconds since the Unix epoch, by the
    /// caller's clock): check before resuming, and start a new upload (a new INIT) when it
    /// has, since an expired id takes no more APPENDs (M5). `false` when the state records no
    /// deadline.
    pub fn is_expired(&self, unix_now: u64) -> bool {
        self.expires_at_unix.is_some_and(|at| unix_now >= at)
    }
}

/// Where server-side processing stands (M4).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ProcessingState {
    /// Queued.
    Pending,
    /// Running.
    InProgress,
    /// Done: the media is ready.
    Succeeded,
    /// Failed: the media cannot be used.
    Failed,
}

/// The `processing_info` of a FINALIZE or STATUS answer (M4).
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct ProcessingInfo {
    /// `state`.
    pub state: ProcessingState,
    /// `check_after_secs`: when to ask again.
    pub check_after_secs: Option<u64>,
    /// `progress_percent`, 0–100.
    pub progress_percent: Option<u8>,
    /// `error`, which ends processing whatever the state says.
    pub error: Option<ProcessingError>,
}

/// The `error` object of `processing_info` (M4).
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct ProcessingError {
    /// `code`.
    pub code: Option<i64>,
    /// `name`, for example `InvalidMedia`.
    pub name: Option<String>,
    /// `message` (control characters removed, at most 200 characters).
    pub message: Option<String>,
}

/// A finished media upload: the media id is ready to attach to a post.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct MediaCompletion {
    /// The media id to attach.
    pub media_id: String,
    /// The media key, when the server gave one.
    pub media_key: Option<String>,
    /// The file's size: every segment of it was acknowledged.
    pub size: u64,
    /// The last `processing_info` (state `succeeded`), or `None` when FINALIZE reported no
    /// processing.
    pub processing: Option<ProcessingInfo>,
    /// The final answer's `expires_after_secs`: how long the media may still be attached.
    pub expires_after_secs: Option<u64>,
    /// The final answer's body (at most [`response::MAX_PARSED_BODY`] bytes are kept).
    pub body: Bytes,
}

/// The request kinds of this protocol.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    /// M1, M6.
    Init,
    /// M2: the segment index.
    Append(u32),
    /// M3.
    Finalize,
    /// M4.
    Status,
}

/// Where the upload stands, with what only that step needs.
#[derive(Clone, Debug)]
enum Phase {
    /// M1, M6: INIT is due.
    Init,
    /// M2: APPENDs, several at a time when allowed, answered in any order.
    Append(Segments),
    /// M3: every segment is acknowledged; FINALIZE is due.
    Finalize,
    /// M4: processing; STATUS is polled, with the latest `processing_info` (none yet for a
    /// resumed upload).
    Status(Option<ProcessingInfo>),
}

/// Which segments the server acknowledged, and which are due (M2).
#[derive(Clone, Debug)]
struct Segments {
    /// Per segment: acknowledged with a 2xx.
    acked: Vec<bool>,
    /// Segments `0..acked_prefix` are all acknowledged.
    acked_prefix: u32,
    /// The first segment never handed out.
    next_new: u32,
    /// Segments whose APPEND failed, to be sent again with the same index (M2).
    resend: BTreeSet<u32>,
}

impl Segments {
    /// `count` segments, of which the first `acked` are acknowledged.
    fn new(count: u32, acked: u32) -> Self {
        let mut segments = Segments {
            acked: vec![false; count as usize],
            acked_prefix: 0,
            next_new: acked,
            resend: BTreeSet::new(),
        };
        for index in 0..acked {
            segments.ack(index);
        }
        segments
    }

    fn ack(&mut self, index: u32) {
        if let Some(slot) = self.acked.get_mut(index as usize) {
            *slot = true;
        }
        while self.acked.get(self.acked_prefix as usize) == Some(&true) {
            self.acked_prefix += 1;
        }
    }

    /// The segment to hand out next, if one is due: a failed one first (M2: the same index
    /// again), else the first never sent.
    fn due(&self, count: u32) -> Option<u32> {
        self.resend
            .first()
            .copied()
            .or_else(|| (self.next_new < count).then_some(self.next_new))
    }

    fn all_acked(&self) -> bool {
        self.acked_prefix as usize == self.acked.len()
    }
}

/// The media id and the requests built from it (checked once, so building never fails).
struct Media {
    id: String,
    key: Option<String>,
    /// v1.1: the endpoint; v2: `base/{id}/append`.
    append: Uri,
    /// The multipart framing of every APPEND, which differ only in `segment_index` (M2).
    framing: multipart::Framing,
    /// The headers of every APPEND: the config's, the multipart `Content-Type`, and a
    /// `Content-Length` that each APPEND overwrites with its own (in place, so the map's order
    /// is that of the other requests).
    append_headers: HeaderMap,
    /// v1.1: the endpoint; v2: `base/{id}/finalize`.
    finalize: Uri,
    /// `…?command=STATUS&media_id=ID`.
    status: Uri,
}

/// A Twitter/X chunked media upload: a pure state machine the driver polls. See the crate
/// docs for the driving loop and [`Upload`] for the contract.
pub struct MediaUpload {
    api: ApiVersion,
    /// v1.1: the endpoint; v2: `base/initialize`.
    init: Uri,
    plan: SegmentPlan,
    media_type: String,
    media_category: Option<String>,
    additional_owners: Vec<String>,
    shared: bool,
    headers: HeaderMap,
    fingerprint: String,
    boundary_seed: u64,
    max_in_flight: usize,
    max_status_polls: u32,

    media: Option<Media>,
    expires_after_secs: Option<u64>,
    expires_at: Option<Instant>,
    expires_at_unix: Option<u64>,

    phase: Phase,
    engine: Engine<Kind, MediaCompletion>,
}

impl fmt::Debug for MediaUpload {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MediaUpload")
            .field("api", &self.api.form())
            .field("plan", &self.plan)
            .field("phase", &self.phase)
            .field("in_flight", &self.engine.flights().len())
            .field("outcome", &self.engine.outcome())
            .finish_non_exhaustive()
    }
}

impl MediaUpload {
    /// Creates an upload of a new media id: the first request will be INIT. Nothing is sent
    /// until the driver polls.
    ///
    /// # Errors
    /// [`UsageError`] before anything is sent: a file that cannot be planned in 1000 segments
    /// of at most 5 MB ([`UsageError::SourceTooLarge`]) or is empty, a segment size out of
    /// range, an address that is not absolute http(s) without a query, an empty or
    /// control-character `media_type`/`media_category`, an owner id that is not decimal,
    /// `shared` with v1.1, or `max_in_flight` of 0.
    pub fn new(config: MediaConfig) -> Result<Self, UsageError> {
        let plan = SegmentPlan::new(config.total, config.segment_size)?;
        Self::build_upload(config, plan)
    }

    /// Continues a media id saved with [`MediaUpload::resume_state`] by an earlier run: the
    /// first request is the first unacknowledged APPEND, FINALIZE when all were acknowledged,
    /// or STATUS when FINALIZE had answered. The state's segment size wins over the config's.
    ///
    /// # Errors
    /// As [`MediaUpload::new`], and [`UsageError::StateMismatch`] when the state belongs to
    /// another source (fingerprint, size), another API form, or is inconsistent.
    pub fn resume(config: MediaConfig, state: MediaResumeState) -> Result<Self, UsageError> {
        if state.fingerprint != config.fingerprint {
            return Err(UsageError::StateMismatch(
                "the source's fingerprint differs",
            ));
        }
        if state.total != config.total {
            return Err(UsageError::StateMismatch("the source's size differs"));
        }
        if state.api != config.api.form() {
            return Err(UsageError::StateMismatch("it belongs to another API form"));
        }
        let plan = SegmentPlan::with_size(config.total, state.segment_size)
            .map_err(|_| UsageError::StateMismatch("its segment size cannot plan this file"))?;
        if state.next_segment > plan.count() || state.next_offset != plan.offset(state.next_segment)
        {
            return Err(UsageError::StateMismatch("its offsets are inconsistent"));
        }
        if state.finalized && state.next_segment != plan.count() {
            return Err(UsageError::StateMismatch(
                "it was finalized with segments missing",
            ));
        }
        let mut upload = Self::build_upload(config, plan)?;
        let media = upload
            .media_for(state.media_id, state.media_key)
            .ok_or(UsageError::StateMismatch("its media id is not usable"))?;
        upload.media = Some(media);
        upload.expires_after_secs = state.expires_after_secs;
        upload.expires_at_unix = state.expires_at_unix;
        upload.phase = if state.finalized {
            Phase::Status(None)
        } else {
            Phase::Append(Segments::new(upload.plan.count(), state.next_segment))
        };
        Ok(upload)
    }

    fn build_upload(config: MediaConfig, plan: SegmentPlan) -> Result<Self, UsageError> {
        let init = match &config.api {
            ApiVersion::V1_1 { endpoint } => {
                check_address(endpoint, "v1.1 endpoint")?;
                endpoint.clone()
            }
            ApiVersion::V2 { base } => {
                check_address(base, "v2 base")?;
                format!("{}/initialize", address(base))
                    .parse()
                    .map_err(|_| UsageError::InvalidInput {
                        what: "v2 base",
                        why: "cannot be extended with /initialize",
                    })?
            }
        };
        check_text(&config.media_type, "media_type")?;
        if let Some(category) = &config.media_category {
            check_text(category, "media_category")?;
        }
        let owner_ok = |id: &String| !id.is_empty() && id.bytes().all(|b| b.is_ascii_digit());
        if !config.additional_owners.iter().all(owner_ok) {
            return Err(UsageError::InvalidInput {
                what: "additional_owners",
                why: "each must be a decimal user id",
            });
        }
        if config.shared && config.api.form() == ApiForm::V1_1 {
            return Err(UsageError::InvalidInput {
                what: "shared",
                why: "only the v2 API has this field (M6)",
            });
        }
        if config.max_in_flight == 0 {
            return Err(UsageError::InvalidInput {
                what: "max_in_flight",
                why: "must be at least 1",
            });
        }
        let mut headers = config.headers;
        for value in headers.values_mut() {
            value.set_sensitive(true);
        }
        Ok(MediaUpload {
            api: config.api,
            init,
            plan,
            media_type: config.media_type,
            media_category: config.media_category,
            additional_owners: config.additional_owners,
            shared: config.shared,
            headers,
            fingerprint: config.fingerprint,
            boundary_seed: config.boundary_seed,
            max_in_flight: usize::try_from(config.max_in_flight).unwrap_or(usize::MAX),
            max_status_polls: config.max_status_polls,
            media: None,
            expires_after_secs: None,
            expires_at: None,
            expires_at_unix: None,
            phase: Phase::Init,
            engine: Engine::new(config.retry),
        })
    }

    // ---- getters ----

    /// The segment plan: how many APPENDs, and which bytes each carries (M2).
    pub fn plan(&self) -> SegmentPlan {
        self.plan
    }

    /// The media id, once INIT has answered (or from a resume state).
    pub fn media_id(&self) -> Option<&str> {
        self.media.as_ref().map(|m| m.id.as_str())
    }

    /// The media key, when the server gave one.
    pub fn media_key(&self) -> Option<&str> {
        self.media.as_ref().and_then(|m| m.key.as_deref())
    }

    /// The latest `processing_info` (for a progress display while polling STATUS).
    pub fn processing(&self) -> Option<&ProcessingInfo> {
        match &self.phase {
            Phase::Status(info) => info.as_ref(),
            _ => None,
        }
    }

    /// When the media id expires: INIT's answer time plus `expires_after_secs` (M5). `None`
    /// before INIT answered, when it gave no expiry, or for a resumed upload.
    pub fn expires_at(&self) -> Option<Instant> {
        self.expires_at
    }

    /// The resume state now (see `Upload::resume_state`).
    fn state_now(&self) -> Option<MediaResumeState> {
        if matches!(self.engine.outcome(), Some(Ok(_))) {
            return None;
        }
        let next_segment = self.acked_prefix();
        let media = self.media.as_ref()?;
        Some(MediaResumeState {
            api: self.api.form(),
            media_id: media.id.clone(),
            media_key: media.key.clone(),
            total: self.plan.total(),
            segment_size: self.plan.segment_size(),
            next_segment,
            next_offset: self.plan.offset(next_segment),
            finalized: matches!(self.phase, Phase::Status(_)),
            expires_after_secs: self.expires_after_secs,
            expires_at_unix: self.expires_at_unix,
            fingerprint: self.fingerprint.clone(),
        })
    }

    // ---- inputs ----

    /// Segments `0..n` are all acknowledged: `n` (all of them once FINALIZE is due).
    fn acked_prefix(&self) -> u32 {
        match &self.phase {
            Phase::Init => 0,
            Phase::Append(segments) => segments.acked_prefix,
            Phase::Finalize | Phase::Status(_) => self.plan.count(),
        }
    }

    fn finish(&mut self, outcome: Result<MediaCompletion, Error>) {
        self.engine.finish(outcome);
    }

    /// What the request `kind` was, for retry reports and errors.
    fn attempt(&self, kind: Kind) -> Attempt {
        let media = self.media.as_ref();
        match kind {
            Kind::Init => Attempt::new(&self.init, None),
            Kind::Append(index) => Attempt::new(
                media.map_or(&self.init, |m| &m.append),
                self.plan.range(index),
            ),
            Kind::Finalize => Attempt::new(media.map_or(&self.init, |m| &m.finalize), None),
            Kind::Status => Attempt::new(media.map_or(&self.init, |m| &m.status), None),
        }
    }

    /// Moves the media id's deadline to `secs` after `now` (M5): every answer that carries
    /// `expires_after_secs` says how long the id is still good for.
    fn set_expiry(&mut self, now: Instant, headers: &HeaderMap, secs: u64) {
        self.expires_after_secs = Some(secs);
        // An absurd value means no deadline.
        self.expires_at = now.checked_add(Duration::from_secs(secs));
        self.expires_at_unix = reply::date_secs(headers).and_then(|d| d.checked_add(secs));
    }

    /// Waits until `until` before the next new request, unless the media id expires first
    /// (then waiting is pointless: M5).
    fn wait(&mut self, until: Instant) {
        if self.expires_at.is_some_and(|at| until >= at) {
            return self.expired();
        }
        self.engine.wait_at_least(until);
    }

    fn expired(&mut self) {
        let after_secs = self.expires_after_secs.unwrap_or(0);
        self.finish(Err(Error::MediaExpired { after_secs }));
    }

    /// Schedules the same request again after a retryable failure (for an APPEND: the same
    /// `segment_index`, M2), or ends the upload when the retry budget is spent.
    fn retry(&mut self, now: Instant, kind: Kind, cause: RetryCause, after: Option<Duration>) {
        let attempt = self.attempt(kind);
        if !self.engine.retry(now, cause, after, attempt) {
            return;
        }
        if let (Kind::Append(index), Phase::Append(segments)) = (kind, &mut self.phase) {
            segments.resend.insert(index);
        }
        // M5: a wait past the expiry is pointless.
        if let Some(until) = self.engine.wait_until() {
            self.wait(until);
        }
    }

    fn on_response(&mut self, now: Instant, kind: Kind, response: Response<Bytes>) {
        let status = response.status();
        if !status.is_success() {
            if self.engine.policy().retries_status(status) {
                // 429 names when the rate-limit window resets (M5); other statuses may carry
                // Retry-After.
                let after = reply::rate_limit_wait(response.headers());
                return self.retry(now, kind, RetryCause::Status(status), after);
            }
            return self.finish(Err(response::refusal(status, response.body())));
        }
        match kind {
            // M2: any 2xx, with any body or none, acknowledges the segment; never parse it.
            Kind::Append(index) => {
                if let Phase::Append(segments) = &mut self.phase {
                    segments.ack(index);
                }
                self.engine.progress();
            }
            Kind::Init => self.on_init(now, &response),
            Kind::Finalize | Kind::Status => self.on_processing(now, kind, response),
        }
    }

    /// INIT answered 2xx (M1, M6): adopt the media id and its expiry.
    fn on_init(&mut self, now: Instant, response: &Response<Bytes>) {
        let form = self.api.form();
        let body = response.body();
        let created = response::json(body).and_then(|v| reply::created(form, &v));
        let Some(created) = created else {
            let error = response::api_error(response.status(), body).unwrap_or(
                ProtocolViolation::MalformedResponse(
                    "INIT answered without a usable media id (M1)",
                )
                .into(),
            );
            return self.finish(Err(error));
        };
        let Some(media) = self.media_for(created.media_id, created.media_key) else {
            return self.finish(Err(ProtocolViolation::MalformedResponse(
                "INIT answered a media id that cannot be addressed (M1)",
            )
            .into()));
        };
        self.media = Some(media);
        if let Some(secs) = created.expires_after_secs {
            // M5: measured from when INIT's answer arrived.
            self.set_expiry(now, response.headers(), secs);
        }
        self.phase = Phase::Append(Segments::new(self.plan.count(), 0));
        self.engine.progress();
    }

    /// FINALIZE or STATUS answered 2xx (M3, M4).
    fn on_processing(&mut self, now: Instant, kind: Kind, response: Response<Bytes>) {
        let form = self.api.form();
        let status = response.status();
        let body = response.body().clone();
        let parsed = response::json(&body);
        let Some(media) = parsed.as_ref().and_then(|v| reply::media_object(form, v)) else {
            let error = response::api_error(status, &body).unwrap_or(
                ProtocolViolation::MalformedResponse("FINALIZE/STATUS answer is not media JSON")
                    .into(),
            );
            return self.finish(Err(error));
        };
        let named = reply::media_id(form, media);
        if named.is_none() && media.get("processing_info").is_none() && media.get("size").is_none()
        {
            // Not a description of the media: a 2xx carrying only `errors` is still an error
            // (M5), anything else breaks M3/M4.
            let error = response::api_error(status, &body).unwrap_or(
                ProtocolViolation::MalformedResponse(
                    "FINALIZE/STATUS answer does not describe the media",
                )
                .into(),
            );
            return self.finish(Err(error));
        }
        if named.is_some_and(|id| Some(id.as_str()) != self.media_id()) {
            return self.finish(Err(ProtocolViolation::MalformedResponse(
                "the answer names another media id",
            )
            .into()));
        }
        let total = self.plan.total();
        let size = media.get("size").and_then(serde_json::Value::as_u64);
        if let (Kind::Finalize, Some(stored)) = (kind, size)
            && stored != total
        {
            return self.finish(Err(IntegrityError::Size {
                stored,
                sent: total,
            }
            .into()));
        }
        if let (Some(m), Some(key)) = (&mut self.media, media.get("media_key"))
            && m.key.is_none()
        {
            m.key = key.as_str().filter(|k| k.len() <= 128).map(str::to_owned);
        }
        let expires_after_secs = media
            .get("expires_after_secs")
            .and_then(serde_json::Value::as_u64);
        // M5: a later answer's expiry replaces INIT's (processing can outlast the first one).
        if let Some(secs) = expires_after_secs {
            self.set_expiry(now, response.headers(), secs);
        }
        let info = match reply::processing_info(media) {
            Ok(info) => info,
            Err(v) => return self.finish(Err(v.into())),
        };
        self.engine.progress();
        let Some(info) = info else {
            if kind == Kind::Status {
                return self.finish(Err(ProtocolViolation::MalformedResponse(
                    "STATUS answered without processing_info (M4)",
                )
                .into()));
            }
            // M3: no processing_info means the media is ready.
            return self.complete(None, expires_after_secs, body);
        };
        if kind == Kind::Status {
            let stats = self.engine.stats_mut();
            stats.status_polls = stats.status_polls.saturating_add(1);
        }
        self.phase = Phase::Status(Some(info.clone()));
        // M4: an `error` is terminal even while the state says in_progress.
        if let Some(error) = &info.error {
            return self.finish(Err(Error::ProcessingFailed {
                code: error.code,
                name: error.name.clone(),
                message: error.message.clone(),
            }));
        }
        match info.state {
            ProcessingState::Succeeded => self.complete(Some(info), expires_after_secs, body),
            ProcessingState::Failed => self.finish(Err(Error::ProcessingFailed {
                code: None,
                name: None,
                message: None,
            })),
            ProcessingState::Pending | ProcessingState::InProgress => {
                let polls = self.engine.stats().status_polls;
                if polls >= self.max_status_polls {
                    return self.finish(Err(Error::ProcessingUnfinished { polls }));
                }
                let delay = info
                    .check_after_secs
                    .map_or(DEFAULT_CHECK_AFTER, Duration::from_secs)
                    .min(MAX_CHECK_AFTER);
                match now.checked_add(delay) {
                    Some(until) => self.wait(until),
                    None => self.expired(),
                }
            }
        }
    }

    fn complete(&mut self, processing: Option<ProcessingInfo>, expires: Option<u64>, body: Bytes) {
        let Some(media) = self.media.as_ref() else {
            return self.finish(Err(ProtocolViolation::MalformedResponse(
                "an answer arrived before INIT's",
            )
            .into()));
        };
        let body = if body.len() > response::MAX_PARSED_BODY {
            body.slice(..response::MAX_PARSED_BODY)
        } else {
            body
        };
        let completion = MediaCompletion {
            media_id: media.id.clone(),
            media_key: media.key.clone(),
            size: self.plan.total(),
            processing,
            expires_after_secs: expires,
            body,
        };
        self.finish(Ok(completion));
    }

    // ---- planning ----

    /// The addresses of `id`, or `None` when it cannot be put in a URL as it is.
    fn media_for(&self, id: String, key: Option<String>) -> Option<Media> {
        if !reply::valid_media_id(&id) {
            return None;
        }
        let mut query = String::from("command=STATUS&media_id=");
        multipart::percent_encode(&mut query, &id);
        let (append, finalize, status) = match &self.api {
            ApiVersion::V1_1 { endpoint } => (
                endpoint.clone(),
                endpoint.clone(),
                format!("{}?{query}", address(endpoint)),
            ),
            ApiVersion::V2 { base } => {
                let base = address(base);
                (
                    format!("{base}/{id}/append").parse().ok()?,
                    format!("{base}/{id}/finalize").parse().ok()?,
                    format!("{base}?{query}"),
                )
            }
        };
        // An APPEND is sent up to 1000 times per media id, so all of it that does not depend
        // on the segment is built here, once. The framing must have a boundary for this id
        // (M2); digits of segment_index cannot change that, so one check covers every segment.
        let v1_1_fields = [("command", "APPEND"), ("media_id", id.as_str())];
        let fields: &[(&str, &str)] = match self.api.form() {
            ApiForm::V1_1 => &v1_1_fields,
            ApiForm::V2 => &[],
        };
        let framing = multipart::Framing::new(self.boundary_seed, fields)?;
        // Content-Length: a placeholder, which each APPEND overwrites with its own.
        let length = HeaderValue::from_static("0");
        let append_headers = self.headers_with(Some(framing.content_type.clone()), Some(length));
        Some(Media {
            id,
            key,
            append,
            framing,
            append_headers,
            finalize,
            status: status.parse().ok()?,
        })
    }

    /// The config's headers with the core's `Content-Type` and `Content-Length` (if any) in
    /// place of the caller's.
    fn headers_with(
        &self,
        content_type: Option<HeaderValue>,
        content_length: Option<HeaderValue>,
    ) -> HeaderMap {
        let mut headers = self.headers.clone();
        headers.remove(CONTENT_TYPE);
        headers.remove(CONTENT_LENGTH);
        if let Some(value) = content_type {
            headers.insert(CONTENT_TYPE, value);
        }
        if let Some(value) = content_length {
            headers.insert(CONTENT_LENGTH, value);
        }
        headers
    }

    fn build(&self, id: RequestId, kind: Kind) -> Transmit {
        if let (Kind::Append(index), Some(media)) = (kind, &self.media) {
            return self.build_append(id, index, media);
        }
        let empty = Uri::default();
        let media = self.media.as_ref();
        let media_id = media.map_or("", |m| m.id.as_str());
        let (method, uri, body, content_type) = match (kind, &self.api) {
            (Kind::Init, ApiVersion::V1_1 { .. }) => {
                // M1: form fields, which OAuth 1.0a signs (M7).
                let total = self.plan.total().to_string();
                let owners = self.additional_owners.join(",");
                let mut fields = vec![
                    ("command", "INIT"),
                    ("total_bytes", total.as_str()),
                    ("media_type", self.media_type.as_str()),
                ];
                if let Some(category) = &self.media_category {
                    fields.push(("media_category", category.as_str()));
                }
                if !owners.is_empty() {
                    fields.push(("additional_owners", owners.as_str()));
                }
                let body = Body::bytes(multipart::form(&fields));
                let content_type = HeaderValue::from_static(FORM_URLENCODED);
                (Method::POST, self.init.clone(), body, Some(content_type))
            }
            (Kind::Init, ApiVersion::V2 { .. }) => {
                // M6: JSON, `additional_owners` as an array, `shared` as a boolean.
                let mut json = serde_json::Map::new();
                json.insert("total_bytes".into(), self.plan.total().into());
                json.insert("media_type".into(), self.media_type.clone().into());
                if let Some(category) = &self.media_category {
                    json.insert("media_category".into(), category.clone().into());
                }
                if !self.additional_owners.is_empty() {
                    json.insert(
                        "additional_owners".into(),
                        self.additional_owners.clone().into(),
                    );
                }
                if self.shared {
                    json.insert("shared".into(), true.into());
                }
                let bytes = serde_json::to_vec(&json).unwrap_or_default();
                let content_type = HeaderValue::from_static("application/json");
                (
                    Method::POST,
                    self.init.clone(),
                    Body::bytes(Bytes::from(bytes)),
                    Some(content_type),
                )
            }
            // Unreachable: APPENDs start once INIT has named the media id (`build_append`). An
            // empty request would fail at the server rather than send a broken body.
            (Kind::Append(_), _) => (Method::POST, empty, Body::empty(), None),
            (Kind::Finalize, ApiVersion::V1_1 { endpoint }) => {
                // M3: form fields (signed, M7).
                let body = multipart::form(&[("command", "FINALIZE"), ("media_id", media_id)]);
                let content_type = HeaderValue::from_static(FORM_URLENCODED);
                (
                    Method::POST,
                    endpoint.clone(),
                    Body::bytes(body),
                    Some(content_type),
                )
            }
            (Kind::Finalize, ApiVersion::V2 { .. }) => {
                // M6: the id is in the path; no body.
                let uri = media.map_or_else(|| empty.clone(), |m| m.finalize.clone());
                (Method::POST, uri, Body::empty(), None)
            }
            (Kind::Status, _) => {
                // M4: a GET whose query OAuth 1.0a signs (M7).
                let uri = media.map_or_else(|| empty.clone(), |m| m.status.clone());
                (Method::GET, uri, Body::empty(), None)
            }
        };
        let length = (method == Method::POST).then(|| crate::range::decimal(body.len()));
        let headers = self.headers_with(content_type, length);
        Transmit::new(id, method, uri, headers, body)
    }

    /// APPEND `index` (M2): multipart around the segment's bytes, never copied into the core.
    /// A driver polls this once per segment, so everything but the segment index and the
    /// length was built with the media id: what is left allocates the prefix, the
    /// `Content-Length` value and the header map's two tables.
    fn build_append(&self, id: RequestId, index: u32, media: &Media) -> Transmit {
        let body = Body {
            prefix: media.framing.prefix(index),
            source: self.plan.range(index).unwrap_or(0..0),
            suffix: media.framing.suffix.clone(),
        };
        let mut headers = media.append_headers.clone();
        headers.insert(CONTENT_LENGTH, crate::range::decimal(body.len()));
        Transmit::new(id, Method::POST, media.append.clone(), headers, body)
    }
}

impl Upload for MediaUpload {
    type Output = MediaCompletion;
    type State = MediaResumeState;

    fn poll_action(&mut self, now: Instant) -> Action<MediaCompletion> {
        if let Some(action) = self.engine.poll_head(now) {
            return action;
        }
        let in_flight = self.engine.flights().len();
        // The engine ends the upload on a cancel once nothing is in flight: media/upload has
        // no way to delete a media id.
        if self.engine.cancel_requested() {
            if in_flight > 0 {
                return Action::Idle;
            }
            self.finish(Err(Error::Cancelled));
            return self.poll_action(now);
        }
        let kind = match &mut self.phase {
            // M2: up to `max_in_flight` APPENDs at once; each segment handed out once, a
            // failed one again with the same index.
            Phase::Append(segments) => {
                let due = (in_flight < self.max_in_flight)
                    .then(|| segments.due(self.plan.count()))
                    .flatten();
                match due {
                    Some(index) => {
                        segments.resend.remove(&index);
                        segments.next_new = segments.next_new.max(index + 1);
                        Kind::Append(index)
                    }
                    None if in_flight > 0 || !segments.all_acked() => {
                        return self.engine.idle();
                    }
                    // Every segment acknowledged (M3).
                    None => {
                        self.phase = Phase::Finalize;
                        Kind::Finalize
                    }
                }
            }
            _ if in_flight > 0 => return Action::Idle,
            Phase::Init => Kind::Init,
            Phase::Finalize => Kind::Finalize,
            Phase::Status(_) => Kind::Status,
        };
        // M5: no new request once the media id has expired.
        if self.expires_at.is_some_and(|at| now >= at) {
            self.expired();
            return self.poll_action(now);
        }
        let source_len = match kind {
            Kind::Append(index) => self.plan.range(index).map_or(0, |r| r.end - r.start),
            _ => 0,
        };
        let id = self.engine.hand_out(now, kind, source_len);
        Action::Send(self.build(id, kind))
    }

    fn max_in_flight(&self) -> usize {
        self.max_in_flight
    }

    /// Bytes of the acknowledged segments from the start (the contiguous prefix).
    fn persisted(&self) -> u64 {
        self.plan.offset(self.acked_prefix())
    }

    /// What to save to continue this media id in a later process; `None` before INIT answered
    /// or once the upload has succeeded. Save it (durably: the server cannot be asked which
    /// segments it holds) whenever it changes.
    fn resume_state(&self) -> Option<MediaResumeState> {
        self.state_now()
    }

    /// Asks the upload to stop: once no request is in flight, the outcome is
    /// [`Error::Cancelled`]. media/upload has no way to delete a media id; it expires on its
    /// own. A completion that arrives first still wins.
    fn cancel(&mut self) {
        self.engine.request_cancel();
        self.engine.clear_wait();
    }

    fn stats(&self) -> Stats {
        self.engine.stats()
    }

    fn progress(&self) -> Progress {
        Progress {
            acknowledged: self.persisted(),
            in_flight: self.engine.in_flight_bytes(),
            total: Some(self.plan.total()),
        }
    }

    /// The last retry this upload scheduled: what failed, the wait, the attempt count.
    fn last_retry(&self) -> Option<&Retrying> {
        self.engine.last_retry()
    }

    /// Media uploads never ask to read the source: always a [`UsageError`].
    fn handle_read(&mut self, _now: Instant, offset: u64, _bytes: &[u8]) -> Result<(), UsageError> {
        if self.engine.is_done() {
            return Err(UsageError::Finished);
        }
        Err(UsageError::UnexpectedRead {
            offset,
            expected: "media uploads never ask to read the source",
        })
    }

    fn handle_response(
        &mut self,
        now: Instant,
        id: RequestId,
        response: Response<Bytes>,
    ) -> Result<(), UsageError> {
        let kind = self.engine.take(id)?.kind;
        self.on_response(now, kind, response);
        Ok(())
    }

    fn handle_failure(
        &mut self,
        now: Instant,
        id: RequestId,
        failure: TransportFailure,
    ) -> Result<(), UsageError> {
        let kind = self.engine.take(id)?.kind;
        // The server may or may not have the request: send it again as it was (M2: an APPEND
        // keeps its segment_index; a received segment sent twice is harmless).
        self.retry(now, kind, RetryCause::Transport(failure), None);
        Ok(())
    }
}

/// `scheme://authority/path` without a trailing slash.
fn address(uri: &Uri) -> String {
    let scheme = uri.scheme_str().unwrap_or("https");
    let authority = uri.authority().map_or("", |a| a.as_str());
    format!("{scheme}://{authority}{}", uri.path().trim_end_matches('/'))
}

fn check_address(uri: &Uri, what: &'static str) -> Result<(), UsageError> {
    check_absolute_http(uri, what)?;
    if uri.query().is_some() {
        return Err(UsageError::InvalidInput {
            what,
            why: "must not have a query (the core adds its own)",
        });
    }
    Ok(())
}

fn check_text(text: &str, what: &'static str) -> Result<(), UsageError> {
    if text.trim().is_empty() || text.len() > 255 || text.chars().any(char::is_control) {
        return Err(UsageError::InvalidInput {
            what,
            why: "must be 1 to 255 characters of text without control characters",
        });
    }
    Ok(())
}
