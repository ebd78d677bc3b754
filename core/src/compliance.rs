//! Twitter/X batch compliance job (rules C1–C3 in `docs/protocols`): create the job, upload the
//! ids to its `upload_url` through the [`gcs`](crate::gcs) state machine, and poll the job
//! until it is `complete`.
//!
//! The whole state machine is in this file: [`ComplianceJob::poll_action`] decides the next
//! step from the state, and `handle_*` move the state on. The upload is not re-implemented:
//! a resumable job's upload is an inner [`GcsUpload`] (G1, G4–G8) whose actions are handed
//! out as this job's own, under this job's request ids.
//!
//! ```text
//!  Create ──POST /2/compliance/jobs (C1)──▶ 2xx + data{id, upload_url, …}
//!    resumable: true  ──▶ Upload: GcsUpload, Start::Xml{upload_url, text/plain} (C2, G1–G8)
//!    resumable: false ──▶ Upload: one PUT upload_url, the whole file (C2)
//!  Upload done ──▶ Poll: GET /2/compliance/jobs/{id} (C3), at once, then after 10 s, 15 s,
//!                  22.5 s … growing ×1.5 up to 60 s
//!    created, in_progress ──▶ Wait ──▶ Poll
//!    complete ──▶ Done(Ok(CompletedJob))   (the driver downloads download_url)
//!    failed, expired ──▶ Done(Err(Compliance(JobError::Failed | JobError::Expired)))
//!    poll deadline passed ──▶ Done(Err(Compliance(JobError::PollDeadline)))
//!  any API request: transport failure, 408, 429, 5xx ──▶ Wait(backoff; 429: until
//!    x-rate-limit-reset / Retry-After) ──▶ the same request again
//!  final 4xx ──▶ Done(Err(Api | Server)) · malformed job ──▶ Done(Err(Protocol))
//!  upload_url past upload_expires_at, upload unfinished ──▶ Done(Err(Compliance(UploadUrlExpired)))
//! ```
//!
//! # Outcome
//!
//! [`Action::Done`] carries `Result<CompletedJob, Error>`. Besides the errors every upload of
//! this crate has (the network, a refusal, a protocol violation), the job's own verdict is
//! [`Error::Compliance`] with a [`JobError`]: it failed or expired, its upload URL expired, or
//! the poll deadline passed. [`Error::is_resumable`] says whether the saved state may be
//! resumed (after a poll deadline it may: the job may still complete).
//!
//! # Polling within the rate limit (C3)
//!
//! The status endpoint allows 150 requests per 15 minutes: one every 6 s on average. The first
//! poll goes out as soon as the upload is done (a small file may already be processed); then
//! the waits are [`ComplianceConfig::poll_interval`] (10 s by default), growing by half each
//! time up to [`ComplianceConfig::max_poll_interval`] (60 s); neither may be under
//! [`MIN_POLL_INTERVAL`] (6 s). A `429` waits until `x-rate-limit-reset` (read against the
//! answer's `Date`) or `Retry-After`, whichever is later. Polling stops after
//! [`ComplianceConfig::poll_deadline`], measured from the first poll of this process.
//!
//! # Credentials and capabilities
//!
//! Authorization is the driver's: it signs API requests (`POST /2/compliance/jobs`, `GET
//! /2/compliance/jobs/{id}`) with the app-only Bearer token, and never the requests to
//! `upload_url`, the session URI or `download_url`, which are capabilities of their own (C2).
//! [`ComplianceConfig::api_headers`] go to API requests only. `upload_url` and `download_url`
//! are held as [`CapabilityUrl`]s, whose `Debug` and `Display` never show them.
//!
//! # Resuming
//!
//! [`ComplianceJob::resume_state`] is a plain value ([`ComplianceResumeState`], serialisable
//! with the `serde` feature): the job, the phase, and the inner GCS [`ResumeState`]. A resumed
//! job never creates another job: in the upload phase it resumes the GCS session (a status
//! query first, G3) or, before a session existed, starts one on the same `upload_url`; in the
//! poll phase it polls at once. The upload URL lives 15 minutes (`upload_expires_at`): the core
//! has no clock, so before resuming the driver checks the state against its own
//! ([`ComplianceResumeState::check_upload_url`]); in any case, an answer to the unfinished
//! upload whose `Date` is at or after `upload_expires_at` ends the job with
//! [`JobError::UploadUrlExpired`].
//!
//! # Example
//!
//! ```
//! use std::time::Instant;
//! use bytes::Bytes;
//! use resumable_core::compliance::{ComplianceConfig, ComplianceJob, JobStatus, JobType};
//! use resumable_core::{Action, Upload};
//!
//! let ids = b"1460323737035677698\n1293593516040269825\n".to_vec();
//! let mut config = ComplianceConfig::new(JobType::Tweets, Some(ids.len() as u64));
//! config.resumable = false; // one PUT of the whole file to upload_url (C2)
//! let mut job = ComplianceJob::new(config).unwrap();
//! let data = r#"{"data":{"id":"1425543269983784962","type":"tweets","status":"STATUS",
//!   "resumable":false,"upload_url":"https://storage.example/up?X-Goog-Signature=a",
//!   "upload_expires_at":"2021-08-11T19:57:55.000Z",
//!   "download_url":"https://storage.example/down?X-Goog-Signature=b",
//!   "download_expires_at":"2021-08-18T19:42:55.000Z",
//!   "created_at":"2021-08-11T19:42:55.000Z"}}"#;
//!
//! let mut now = Instant::now(); // the driver owns the clock
//! let mut stored = Vec::new();
//! let outcome = loop {
//!     match job.poll_action(now) {
//!         Action::Send(send) => {
//!             // The driver signs API requests (Bearer) here, never the upload_url.
//!             let r = &send.body.source;
//!             stored.extend_from_slice(&ids[r.start as usize..r.end as usize]);
//!             let status = if send.request.method() == http::Method::PUT { "" }
//!                 else if stored.is_empty() { "created" } else { "complete" };
//!             let body = if status.is_empty() { String::new() } else { data.replace("STATUS", status) };
//!             let response = http::Response::builder().status(200).body(Bytes::from(body));
//!             job.handle_response(now, send.id, response.unwrap()).unwrap();
//!         }
//!         Action::Wait(until) => now = until, // a real driver sleeps until then
//!         Action::Idle => unreachable!("every request is answered before the next poll"),
//!         Action::Read(_) => unreachable!("a one-PUT job reads nothing"),
//!         Action::Done(outcome) => break outcome,
//!     }
//! };
//! let completed = outcome.expect("the job completed");
//! assert_eq!(completed.job.status, JobStatus::Complete);
//! assert_eq!(stored, ids);
//! // The results are at completed.job.download_url.expose(): GET it without credentials.
//! ```

use std::fmt;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::header::{CONTENT_LENGTH, CONTENT_TYPE};
use http::{HeaderMap, HeaderValue, Method, Response, Uri};
use serde_json::Value;

use crate::action::{Action, Body, Progress, RequestId, Stats, Transmit, TransportFailure, Upload};
use crate::checksum::Checksums;
use crate::chunk::{ChunkSize, GCS_GRANULE};
use crate::engine::Engine;
use crate::error::{Error, ProtocolViolation, RetryCause, UsageError};
use crate::gcs::{GcsCompletion, GcsConfig, GcsUpload, ResumeState, Start};
use crate::response;
use crate::retry::{self, Attempt, RetryPolicy, Retrying};
use crate::secret::{RedactedHeaders, check_absolute_http};

/// The X API's address; `POST /2/compliance/jobs` and `GET /2/compliance/jobs/{id}` go below
/// it (C1, C3).
pub const DEFAULT_API_BASE: &str = "https://api.x.com";

/// The shortest wait allowed between status polls: 150 requests per 15 minutes (C3).
pub const MIN_POLL_INTERVAL: Duration = Duration::from_secs(6);

/// The default wait after the first status poll that finds the job unfinished.
pub const DEFAULT_POLL_INTERVAL: Duration = Duration::from_secs(10);

/// The default longest wait between status polls.
pub const DEFAULT_MAX_POLL_INTERVAL: Duration = Duration::from_secs(60);

/// The default poll deadline: how long a process polls an unfinished job before giving up
/// with [`JobError::PollDeadline`] (the job is not lost: resume to poll again).
pub const DEFAULT_POLL_DEADLINE: Duration = Duration::from_secs(2 * 3600);

/// The longest job `name` (C1).
pub const MAX_NAME_LEN: usize = 64;

/// Job ids go in a URL path: at most this long, `[0-9A-Za-z_-]` only (Twitter's are 1–19
/// digits).
const MAX_ID_LEN: usize = 64;

/// Server text kept from a job (timestamps, name) is at most this long.
const MAX_TEXT: usize = 200;

/// The content type of the uploaded ids (C2; the signed URL signs it).
const TEXT_PLAIN: &str = "text/plain";

/// What the job checks: post ids or user ids (C1 `type`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[cfg_attr(
    feature = "serde",
    derive(serde::Serialize, serde::Deserialize),
    serde(rename_all = "snake_case")
)]
pub enum JobType {
    /// `tweets`: the file holds post (Tweet) ids.
    Tweets,
    /// `users`: the file holds user ids.
    Users,
}

impl JobType {
    /// The API's name for it: `tweets` or `users`.
    pub fn as_str(self) -> &'static str {
        match self {
            JobType::Tweets => "tweets",
            JobType::Users => "users",
        }
    }

    /// Reads the API's name.
    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "tweets" => Some(JobType::Tweets),
            "users" => Some(JobType::Users),
            _ => None,
        }
    }
}

impl fmt::Display for JobType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Where a job stands (C3): `created` → `in_progress` → `complete` | `failed` | `expired`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[cfg_attr(
    feature = "serde",
    derive(serde::Serialize, serde::Deserialize),
    serde(rename_all = "snake_case")
)]
pub enum JobStatus {
    /// Created; the ids are not (all) in yet.
    Created,
    /// The ids are being checked.
    InProgress,
    /// Done: the results are at `download_url`.
    Complete,
    /// The job failed.
    Failed,
    /// No upload arrived before `upload_expires_at`.
    Expired,
}

impl JobStatus {
    /// The API's name for it.
    pub fn as_str(self) -> &'static str {
        match self {
            JobStatus::Created => "created",
            JobStatus::InProgress => "in_progress",
            JobStatus::Complete => "complete",
            JobStatus::Failed => "failed",
            JobStatus::Expired => "expired",
        }
    }

    /// Reads the API's name.
    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "created" => Some(JobStatus::Created),
            "in_progress" => Some(JobStatus::InProgress),
            "complete" => Some(JobStatus::Complete),
            "failed" => Some(JobStatus::Failed),
            "expired" => Some(JobStatus::Expired),
            _ => None,
        }
    }

    /// Whether the job is over (`complete`, `failed` or `expired`).
    pub fn is_final(self) -> bool {
        matches!(
            self,
            JobStatus::Complete | JobStatus::Failed | JobStatus::Expired
        )
    }
}

impl fmt::Display for JobStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A URL that is a capability of its own: a signed `upload_url` or `download_url` (C2, C3).
///
/// Whoever holds it can write the upload or read the results, so `Debug` and `Display` never
/// show it. Send requests to it without credentials; call [`CapabilityUrl::expose`] only to
/// send a request or to save resume state.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct CapabilityUrl(Uri);

impl CapabilityUrl {
    /// Wraps an absolute `http`/`https` URI.
    ///
    /// # Errors
    /// [`UsageError::InvalidInput`] when the URI is not absolute http(s).
    pub fn new(uri: Uri) -> Result<Self, UsageError> {
        check_absolute_http(&uri, "capability URL")?;
        Ok(CapabilityUrl(uri))
    }

    /// Parses one from text (an API answer, a saved state).
    ///
    /// # Errors
    /// [`UsageError::InvalidInput`] when it is not an absolute http(s) URI.
    pub fn parse(text: &str) -> Result<Self, UsageError> {
        let uri = text.parse::<Uri>().map_err(|_| UsageError::InvalidInput {
            what: "capability URL",
            why: "not a valid URI",
        })?;
        Self::new(uri)
    }

    /// The URL itself. It is a bearer capability: do not log it.
    pub fn expose(&self) -> &Uri {
        &self.0
    }
}

impl fmt::Debug for CapabilityUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("CapabilityUrl(<redacted>)")
    }
}

impl fmt::Display for CapabilityUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted capability URL>")
    }
}

#[cfg(feature = "serde")]
impl serde::Serialize for CapabilityUrl {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0.to_string())
    }
}

#[cfg(feature = "serde")]
impl<'de> serde::Deserialize<'de> for CapabilityUrl {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        CapabilityUrl::parse(&text).map_err(serde::de::Error::custom)
    }
}

/// A compliance job as the API describes it (C1, C3: the `data` object).
#[derive(Clone, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[non_exhaustive]
pub struct JobInfo {
    /// The job id (`id`).
    pub id: String,
    /// `type`.
    pub job_type: JobType,
    /// `name`, when the job has one.
    pub name: Option<String>,
    /// `status`, as of the latest answer.
    pub status: JobStatus,
    /// Whether the upload is resumable (G1) rather than one `PUT`: what was asked for at
    /// creation ([`ComplianceConfig::resumable`]), which the upload follows whatever the
    /// answer's own `resumable` said (C2).
    pub resumable: bool,
    /// `upload_url` (redacted in `Debug`).
    pub upload_url: CapabilityUrl,
    /// `upload_expires_at` (RFC 3339), as the server wrote it.
    pub upload_expires_at: String,
    /// `download_url` (redacted in `Debug`): GET it without credentials once complete.
    pub download_url: CapabilityUrl,
    /// `download_expires_at` (RFC 3339), as the server wrote it.
    pub download_expires_at: String,
    /// `created_at` (RFC 3339), as the server wrote it.
    pub created_at: String,
}

impl JobInfo {
    /// `upload_expires_at` in seconds since the Unix epoch, when it parses.
    pub fn upload_expires_unix(&self) -> Option<u64> {
        rfc3339_unix(&self.upload_expires_at)
    }

    /// `download_expires_at` in seconds since the Unix epoch, when it parses.
    pub fn download_expires_unix(&self) -> Option<u64> {
        rfc3339_unix(&self.download_expires_at)
    }
}

/// A job that reached `complete`: download its results next, from
/// [`JobInfo::download_url`], without credentials, before [`JobInfo::download_expires_at`].
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct CompletedJob {
    /// The job, as the last status answer described it.
    pub job: JobInfo,
    /// Bytes of ids uploaded (the file's size).
    pub bytes: u64,
    /// The GCS completion of a resumable upload done by this process (`None` for a one-`PUT`
    /// job, or when this process resumed after the upload).
    pub upload: Option<GcsCompletion>,
    /// Status answers read by this process.
    pub polls: u32,
}

/// Why a job that was created and driven to the end did not complete.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum JobError {
    /// The job's status became `failed` (C3).
    #[error("compliance job {id} failed")]
    Failed {
        /// The job id.
        id: String,
    },
    /// The job's status became `expired`: no complete upload arrived before its upload URL
    /// expired (C2, C3).
    #[error("compliance job {id} expired: its ids were not uploaded before upload_expires_at")]
    Expired {
        /// The job id.
        id: String,
    },
    /// The upload URL expired (`upload_expires_at`, 15 minutes after creation, C2) before the
    /// upload finished: nothing more can be sent to it, so the job cannot complete.
    #[error(
        "the upload URL of compliance job {id} expired at {expires_at} before the upload finished; a new job is needed"
    )]
    UploadUrlExpired {
        /// The job id.
        id: String,
        /// `upload_expires_at`, as the server wrote it.
        expires_at: String,
    },
    /// The job was still unfinished when the poll deadline passed. It may still complete:
    /// resume from the saved state to poll again.
    #[error(
        "compliance job {id} is still {status} after {polls} status polls (poll deadline passed)"
    )]
    PollDeadline {
        /// The job id.
        id: String,
        /// Status answers read by this process.
        polls: u32,
        /// The last status seen.
        status: JobStatus,
    },
}

impl JobError {
    /// Whether polling the same job later may still see it complete (only after
    /// [`JobError::PollDeadline`]): keep the resume state then, discard it otherwise.
    pub fn is_resumable(&self) -> bool {
        matches!(self, JobError::PollDeadline { .. })
    }
}

/// The phase a job is in, for a progress display.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Phase {
    /// Creating the job (C1).
    Create,
    /// Uploading the ids (C2).
    Upload,
    /// Polling the job's status (C3).
    Poll,
    /// Over: [`Upload::poll_action`] returns [`Action::Done`].
    Done,
}

/// The phase a saved job resumes in.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[cfg_attr(
    feature = "serde",
    derive(serde::Serialize, serde::Deserialize),
    serde(rename_all = "snake_case")
)]
pub enum SavedPhase {
    /// The upload was unfinished.
    Upload,
    /// The upload was done: poll the job.
    Poll,
}

/// What a driver saves so a later run continues the same job.
///
/// Get it from [`ComplianceJob::resume_state`] after every input and save it whenever it
/// changed (before sending the next request); pass it to [`ComplianceJob::resume`] with a
/// config for the same file. It holds capabilities (`upload_url`, `download_url`, the GCS
/// session URI): store it with owner-only permissions.
#[derive(Clone, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct ComplianceResumeState {
    /// The job.
    pub job: JobInfo,
    /// Where it stood.
    pub phase: SavedPhase,
    /// The inner GCS upload's state, once a session exists (resumable jobs).
    pub gcs: Option<ResumeState>,
    /// The file's size, when known.
    pub total: Option<u64>,
    /// The caller's fingerprint of the file (see [`ComplianceConfig::fingerprint`]).
    pub fingerprint: String,
}

impl ComplianceResumeState {
    /// Checks, before resuming, that the upload can still go on at `unix_now` (seconds since
    /// the Unix epoch by the driver's clock): an unfinished upload whose `upload_expires_at`
    /// has passed cannot (C2), and the job will expire. A job past its upload is always fine.
    ///
    /// # Errors
    /// [`JobError::UploadUrlExpired`]: discard the state and create a new job.
    pub fn check_upload_url(&self, unix_now: u64) -> Result<(), JobError> {
        let expired = self.phase == SavedPhase::Upload
            && self
                .job
                .upload_expires_unix()
                .is_some_and(|e| unix_now >= e);
        if expired {
            return Err(JobError::UploadUrlExpired {
                id: self.job.id.clone(),
                expires_at: self.job.upload_expires_at.clone(),
            });
        }
        Ok(())
    }
}

/// Settings of one compliance job. Build with [`ComplianceConfig::new`], change fields, then
/// pass to [`ComplianceJob::new`] (or [`ComplianceJob::resume`]).
#[derive(Clone)]
#[non_exhaustive]
pub struct ComplianceConfig {
    /// The API's address, [`DEFAULT_API_BASE`] unless a test server stands in (absolute
    /// http(s), no query).
    pub api_base: Uri,
    /// `type` (C1).
    pub job_type: JobType,
    /// `name` (C1), at most [`MAX_NAME_LEN`] characters without control characters.
    pub name: Option<String>,
    /// Ask for a resumable upload URL (`resumable`, C1). Default true. The upload follows what
    /// was asked, whatever the answer's `resumable` says (C2).
    pub resumable: bool,
    /// The file's size; `None` for a stream (a one-`PUT` job then fails: its body must have a
    /// known length).
    pub total: Option<u64>,
    /// Bytes per GCS request of a resumable upload: a multiple of 256 KiB (G4). Default 8 MiB.
    pub chunk_size: u64,
    /// Checksums of the resumable upload (G7). Default CRC32C.
    pub checksums: Checksums,
    /// Retry policy of every request, the upload's included. Default: [`RetryPolicy::default`]
    /// with a 20-minute run deadline, so a 429 that waits for a 15-minute rate-limit window
    /// is waited out.
    pub retry: RetryPolicy,
    /// The wait after the first status answer that finds the job unfinished; later waits grow
    /// by half up to `max_poll_interval`. At least [`MIN_POLL_INTERVAL`]. Default 10 s.
    pub poll_interval: Duration,
    /// The longest wait between status polls, at least `poll_interval`. Default 60 s.
    pub max_poll_interval: Duration,
    /// How long this process polls an unfinished job, from its first poll. Default 2 hours.
    pub poll_deadline: Duration,
    /// Headers for the API requests only (create, status), for example a fixed
    /// `Authorization` when the driver does not sign. Never sent to `upload_url`, the session
    /// or `download_url`. Values are marked sensitive. `Content-Type` and `Content-Length`
    /// are the core's.
    pub api_headers: HeaderMap,
    /// A fingerprint of the file chosen by the caller (path, size, mtime…), kept in the resume
    /// state so a later run can tell whether the state belongs to the same file.
    pub fingerprint: String,
}

impl ComplianceConfig {
    /// Defaults for a job of `job_type` over a file of `total` bytes: [`DEFAULT_API_BASE`], a
    /// resumable upload in 8 MiB chunks with CRC32C, polls after 10 s growing to 60 s, a
    /// 2-hour poll deadline.
    pub fn new(job_type: JobType, total: Option<u64>) -> Self {
        let retry = RetryPolicy {
            retry_deadline: Duration::from_secs(20 * 60),
            ..RetryPolicy::default()
        };
        ComplianceConfig {
            api_base: Uri::from_static(DEFAULT_API_BASE),
            job_type,
            name: None,
            resumable: true,
            total,
            chunk_size: 8 << 20,
            checksums: Checksums::default(),
            retry,
            poll_interval: DEFAULT_POLL_INTERVAL,
            max_poll_interval: DEFAULT_MAX_POLL_INTERVAL,
            poll_deadline: DEFAULT_POLL_DEADLINE,
            api_headers: HeaderMap::new(),
            fingerprint: String::new(),
        }
    }
}

impl fmt::Debug for ComplianceConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ComplianceConfig")
            .field("api_base", &crate::secret::RedactedUri(&self.api_base))
            .field("job_type", &self.job_type)
            .field("name", &self.name)
            .field("resumable", &self.resumable)
            .field("total", &self.total)
            .field("chunk_size", &self.chunk_size)
            .field("retry", &self.retry)
            .field("poll_interval", &self.poll_interval)
            .field("max_poll_interval", &self.max_poll_interval)
            .field("poll_deadline", &self.poll_deadline)
            .field("api_headers", &RedactedHeaders(&self.api_headers))
            .finish_non_exhaustive()
    }
}

/// This job's own requests (the upload's are the inner GCS upload's).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    /// C1.
    Create,
    /// C2, a one-`PUT` job.
    Put,
    /// C3.
    Poll,
}

/// Where the job is.
enum Stage {
    Create,
    /// A resumable upload through GCS (C2, G1–G8).
    Gcs(Box<GcsUpload>),
    /// A one-`PUT` upload (C2).
    Put,
    Poll,
}

/// A Twitter/X batch compliance job: a pure state machine the driver polls. See the module
/// docs for the flow, the crate docs for the driving loop and [`Upload`] for the contract.
pub struct ComplianceJob {
    jobs_uri: Uri,
    job_type: JobType,
    name: Option<String>,
    resumable: bool,
    total: Option<u64>,
    gcs_config: GcsConfig,
    api_headers: HeaderMap,
    fingerprint: String,
    poll_interval: Duration,
    max_poll_interval: Duration,
    poll_deadline: Duration,

    job: Option<JobInfo>,
    /// `…/2/compliance/jobs/{id}`, once the job exists.
    status_uri: Option<Uri>,
    /// When the upload URL expires, by the driver's clock (from the create answer's `Date`);
    /// `None` for a resumed job.
    upload_deadline: Option<Instant>,

    stage: Stage,
    /// Bytes the server holds once the upload is done.
    uploaded: u64,
    completion: Option<GcsCompletion>,
    next_interval: Duration,
    poll_started: Option<Instant>,
    /// This job's own requests, under even ids (the inner upload's are odd: see
    /// `GcsUpload::nested`).
    engine: Engine<Kind, CompletedJob>,
    /// The inner upload's counters, kept once it is done.
    inner_stats: Stats,
}

impl fmt::Debug for ComplianceJob {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ComplianceJob")
            .field("job_type", &self.job_type)
            .field("phase", &self.phase())
            .field("job", &self.job)
            .field("in_flight", &self.engine.flights().len())
            .field("polls", &self.engine.stats().status_polls)
            .field("outcome", &self.engine.outcome())
            .finish_non_exhaustive()
    }
}

impl ComplianceJob {
    /// Creates a job flow whose first request is `POST /2/compliance/jobs` (C1). Nothing is
    /// sent until the driver polls.
    ///
    /// # Errors
    /// [`UsageError`] before anything is sent: an API base that is not absolute http(s)
    /// without a query, a `name` that is empty, too long or has control characters, a chunk
    /// size that is not a multiple of 256 KiB, poll intervals under [`MIN_POLL_INTERVAL`] or
    /// out of order, or a zero poll deadline.
    pub fn new(config: ComplianceConfig) -> Result<Self, UsageError> {
        ChunkSize::new(config.chunk_size, GCS_GRANULE)?;
        check_absolute_http(&config.api_base, "API base")?;
        if config.api_base.query().is_some() {
            return Err(UsageError::InvalidInput {
                what: "API base",
                why: "must not have a query (the core adds the paths)",
            });
        }
        let jobs_uri: Uri = format!("{}/2/compliance/jobs", address(&config.api_base))
            .parse()
            .map_err(|_| UsageError::InvalidInput {
                what: "API base",
                why: "cannot be extended with /2/compliance/jobs",
            })?;
        if let Some(name) = &config.name {
            let chars = name.chars().count();
            if name.trim().is_empty() || chars > MAX_NAME_LEN || name.chars().any(char::is_control)
            {
                return Err(UsageError::InvalidInput {
                    what: "job name",
                    why: "must be 1 to 64 characters without control characters",
                });
            }
        }
        if config.poll_interval < MIN_POLL_INTERVAL {
            return Err(UsageError::InvalidInput {
                what: "poll interval",
                why: "must be at least 6 s: the status endpoint allows 150 requests per 15 minutes (C3)",
            });
        }
        if config.max_poll_interval < config.poll_interval {
            return Err(UsageError::InvalidInput {
                what: "maximum poll interval",
                why: "must be at least the poll interval",
            });
        }
        if config.poll_deadline.is_zero() {
            return Err(UsageError::InvalidInput {
                what: "poll deadline",
                why: "must be greater than zero",
            });
        }
        let mut api_headers = config.api_headers;
        api_headers.remove(CONTENT_TYPE);
        api_headers.remove(CONTENT_LENGTH);
        for value in api_headers.values_mut() {
            value.set_sensitive(true);
        }
        let mut gcs_config = GcsConfig::new(config.total);
        gcs_config.chunk_size = config.chunk_size;
        gcs_config.checksums = config.checksums;
        gcs_config.retry = config.retry.clone();
        gcs_config.fingerprint = config.fingerprint.clone();
        let mut engine = Engine::new(config.retry);
        engine.use_ids(0, 2);
        Ok(ComplianceJob {
            jobs_uri,
            job_type: config.job_type,
            name: config.name,
            resumable: config.resumable,
            total: config.total,
            gcs_config,
            api_headers,
            fingerprint: config.fingerprint,
            poll_interval: config.poll_interval,
            max_poll_interval: config.max_poll_interval,
            poll_deadline: config.poll_deadline,
            job: None,
            status_uri: None,
            upload_deadline: None,
            stage: Stage::Create,
            uploaded: 0,
            completion: None,
            next_interval: config.poll_interval,
            poll_started: None,
            engine,
            inner_stats: Stats::default(),
        })
    }

    /// Continues a job saved with [`ComplianceJob::resume_state`] by an earlier run; no new
    /// job is created. In the upload phase the first request is the GCS session's status
    /// query (G3), or a new session on the same `upload_url` when none existed yet, or the
    /// one `PUT` again; in the poll phase it is a status poll. Check the state with
    /// [`ComplianceResumeState::check_upload_url`] first.
    ///
    /// # Errors
    /// As [`ComplianceJob::new`], and [`UsageError::StateMismatch`] when the state belongs to
    /// another file (fingerprint, size), a job of the other type, or is inconsistent.
    pub fn resume(
        config: ComplianceConfig,
        state: ComplianceResumeState,
    ) -> Result<Self, UsageError> {
        if state.fingerprint != config.fingerprint {
            return Err(UsageError::StateMismatch("the file's fingerprint differs"));
        }
        if state.job.job_type != config.job_type {
            return Err(UsageError::StateMismatch("it is a job of the other type"));
        }
        if let (Some(a), Some(b)) = (state.total, config.total)
            && a != b
        {
            return Err(UsageError::StateMismatch("the file's size differs"));
        }
        if !valid_id(&state.job.id) {
            return Err(UsageError::StateMismatch("its job id is not usable"));
        }
        if state.gcs.is_some() && (!state.job.resumable || state.phase != SavedPhase::Upload) {
            return Err(UsageError::StateMismatch(
                "it holds an upload session outside a resumable upload",
            ));
        }
        let mut job = Self::new(config)?;
        job.total = job.total.or(state.total);
        job.gcs_config.total = job.total;
        job.status_uri = Some(job.status_uri_for(&state.job.id)?);
        match state.phase {
            SavedPhase::Upload if state.job.resumable => {
                let start = match state.gcs {
                    Some(gcs) => Start::Resume(gcs),
                    None => xml_start(&state.job),
                };
                let upload = GcsUpload::new(start, job.gcs_config.clone())?.nested();
                job.stage = Stage::Gcs(Box::new(upload));
            }
            SavedPhase::Upload => job.stage = Stage::Put,
            SavedPhase::Poll => {
                job.uploaded = job.total.unwrap_or(0);
                job.stage = Stage::Poll;
            }
        }
        job.job = Some(state.job);
        Ok(job)
    }

    fn status_uri_for(&self, id: &str) -> Result<Uri, UsageError> {
        format!("{}/{id}", self.jobs_uri)
            .parse()
            .map_err(|_| UsageError::StateMismatch("its job id is not usable"))
    }

    // ---- getters ----

    /// The phase the job is in (for a progress display).
    pub fn phase(&self) -> Phase {
        if self.engine.is_done() {
            return Phase::Done;
        }
        match self.stage {
            Stage::Create => Phase::Create,
            Stage::Gcs(_) | Stage::Put => Phase::Upload,
            Stage::Poll => Phase::Poll,
        }
    }

    /// The job, once created (or from a resume state), as the latest answer described it.
    pub fn job(&self) -> Option<&JobInfo> {
        self.job.as_ref()
    }

    /// The inner GCS upload, while a resumable upload is under way.
    pub fn gcs(&self) -> Option<&GcsUpload> {
        match &self.stage {
            Stage::Gcs(upload) => Some(upload),
            _ => None,
        }
    }

    /// The file's size, once known.
    pub fn total(&self) -> Option<u64> {
        match &self.stage {
            Stage::Gcs(upload) => upload.total(),
            _ => self.total,
        }
    }

    /// What to save to continue this job in a later process; `None` before the job exists,
    /// and once its verdict is final and not resumable (`failed`, `expired`, upload URL
    /// expired). After `complete` it is still there (phase poll: a resumed job polls once
    /// and completes again), so a driver can keep it until the results are downloaded; after
    /// an [`Error`], resume it when [`Error::is_resumable`] says so, discard it otherwise.
    /// Save it whenever it changes, before sending the next request.
    fn state_now(&self) -> Option<ComplianceResumeState> {
        let job = self.job.as_ref()?;
        if let Some(Err(Error::Compliance(e))) = self.engine.outcome()
            && !e.is_resumable()
        {
            return None;
        }
        let (phase, gcs) = match &self.stage {
            Stage::Create => return None,
            Stage::Gcs(upload) => match upload.resume_state() {
                Some(gcs) => (SavedPhase::Upload, Some(gcs)),
                // A session that leaves no state behind has completed (G7), even before the
                // next poll moves this job on: what remains is polling.
                None if upload.session().is_some() => (SavedPhase::Poll, None),
                None => (SavedPhase::Upload, None),
            },
            Stage::Put => (SavedPhase::Upload, None),
            Stage::Poll => (SavedPhase::Poll, None),
        };
        Some(ComplianceResumeState {
            job: job.clone(),
            phase,
            gcs,
            total: self.total(),
            fingerprint: self.fingerprint.clone(),
        })
    }

    // ---- inputs ----

    fn finish(&mut self, outcome: Result<CompletedJob, Error>) {
        self.engine.finish(outcome);
    }

    fn fail(&mut self, error: impl Into<Error>) {
        self.finish(Err(error.into()));
    }

    fn job_error(&mut self, error: JobError) {
        self.finish(Err(Error::Compliance(error)));
    }

    fn upload_url_expired(&mut self) {
        let (id, expires_at) = self
            .job
            .as_ref()
            .map(|j| (j.id.clone(), j.upload_expires_at.clone()))
            .unwrap_or_default();
        self.job_error(JobError::UploadUrlExpired { id, expires_at });
    }

    /// Whether an answer dated `headers`' `Date` came at or after the upload URL's expiry.
    fn past_upload_expiry(&self, headers: &HeaderMap) -> bool {
        let expires = self.job.as_ref().and_then(JobInfo::upload_expires_unix);
        matches!((date_unix(headers), expires), (Some(d), Some(e)) if d >= e)
    }

    /// What the request `kind` was, for retry reports and errors.
    fn attempt(&self, kind: Kind) -> Attempt {
        match kind {
            Kind::Create => Attempt::new(&self.jobs_uri, None),
            Kind::Put => match &self.job {
                Some(job) => {
                    Attempt::new(job.upload_url.expose(), Some(0..self.total.unwrap_or(0)))
                }
                None => Attempt::default(),
            },
            Kind::Poll => match &self.status_uri {
                Some(uri) => Attempt::new(uri, None),
                None => Attempt::default(),
            },
        }
    }

    /// Schedules the same request again after a retryable failure, or ends the flow when the
    /// retry budget is spent.
    fn retry(&mut self, now: Instant, kind: Kind, cause: RetryCause, after: Option<Duration>) {
        let attempt = self.attempt(kind);
        self.engine.retry(now, cause, after, attempt);
    }

    fn on_response(&mut self, now: Instant, kind: Kind, response: Response<Bytes>) {
        let status = response.status();
        if !status.is_success() {
            if self.engine.policy().retries_status(status) {
                // A 429 names when the rate-limit window resets (C3, M5); others may carry
                // Retry-After.
                let headers = response.headers();
                let after = retry::rate_limit_reset(headers).max(retry::retry_after(headers));
                return self.retry(now, kind, RetryCause::Status(status), after);
            }
            if kind == Kind::Put && self.past_upload_expiry(response.headers()) {
                return self.upload_url_expired();
            }
            return self.fail(response::refusal(status, response.body()));
        }
        match kind {
            Kind::Create => self.on_created(now, &response),
            Kind::Put => {
                // C2: any 2xx takes the whole file.
                self.engine.progress();
                self.upload_done(self.total.unwrap_or(0), None);
            }
            Kind::Poll => self.on_status(now, &response),
        }
    }

    /// The create answer (C1): adopt the job, then start its upload (C2).
    fn on_created(&mut self, now: Instant, response: &Response<Bytes>) {
        let job = match read_job(response) {
            Ok(job) => job,
            Err(e) => return self.fail(e),
        };
        if job.job_type != self.job_type {
            return self.fail(ProtocolViolation::MalformedResponse(
                "the job created is of the other type (C1)",
            ));
        }
        let status_uri = match self.status_uri_for(&job.id) {
            Ok(uri) => uri,
            Err(_) => {
                return self.fail(ProtocolViolation::MalformedResponse(
                    "the job id cannot be addressed (C1)",
                ));
            }
        };
        // C2: the upload URL lives 15 minutes; by the server's clock, from its Date (else the
        // job's created_at), turned into the driver's clock.
        let server_now = date_unix(response.headers()).or_else(|| rfc3339_unix(&job.created_at));
        if let (Some(expires), Some(server_now)) = (job.upload_expires_unix(), server_now) {
            self.upload_deadline =
                now.checked_add(Duration::from_secs(expires.saturating_sub(server_now)));
        }
        self.engine.progress();
        self.status_uri = Some(status_uri);
        // C2: the upload follows what was asked, whatever the answer's `resumable` says (an
        // answer may say `false` to a job created resumable, and its upload_url still takes a
        // resumable start).
        let mut job = job;
        job.resumable = self.resumable;
        let stage = if job.resumable {
            match GcsUpload::new(xml_start(&job), self.gcs_config.clone()) {
                Ok(upload) => Stage::Gcs(Box::new(upload.nested())),
                Err(e) => {
                    self.job = Some(job);
                    return self.fail(e);
                }
            }
        } else if self.total.is_none() {
            self.job = Some(job);
            return self.fail(UsageError::InvalidInput {
                what: "source",
                why: "the job is not resumable: its one PUT needs the file's size (C2)",
            });
        } else {
            Stage::Put
        };
        self.job = Some(job);
        self.stage = stage;
    }

    /// A status answer (C3). Only what polling needs must be there: the job's id and status
    /// (and a download URL once complete, unless the creation answer gave one); fields the
    /// answer leaves out keep what the creation answer said.
    fn on_status(&mut self, now: Instant, response: &Response<Bytes>) {
        let Some(known) = self.job.as_ref() else {
            return self.fail(ProtocolViolation::MalformedResponse(
                "a status answer arrived before the job existed",
            ));
        };
        let job = match read_status(response, known) {
            Ok(job) => job,
            Err(e) => return self.fail(e),
        };
        let stats = self.engine.stats_mut();
        stats.status_polls = stats.status_polls.saturating_add(1);
        let polls = stats.status_polls;
        self.engine.progress();
        let status = job.status;
        let id = job.id.clone();
        self.job = Some(job);
        match status {
            JobStatus::Complete => {
                let Some(job) = self.job.clone() else { return };
                let completed = CompletedJob {
                    job,
                    bytes: self.uploaded,
                    upload: self.completion.clone(),
                    polls,
                };
                self.finish(Ok(completed));
            }
            JobStatus::Failed => self.job_error(JobError::Failed { id }),
            JobStatus::Expired => self.job_error(JobError::Expired { id }),
            JobStatus::Created | JobStatus::InProgress => {
                let wait = self.next_interval;
                self.next_interval = grow(self.next_interval).min(self.max_poll_interval);
                let deadline = self
                    .poll_started
                    .and_then(|s| s.checked_add(self.poll_deadline));
                match now.checked_add(wait) {
                    Some(at) if deadline.is_none_or(|d| at <= d) => self.engine.wait_at_least(at),
                    _ => self.job_error(JobError::PollDeadline { id, polls, status }),
                }
            }
        }
    }

    /// The upload is done: poll at once (C3).
    fn upload_done(&mut self, bytes: u64, completion: Option<GcsCompletion>) {
        self.uploaded = bytes;
        // A stream's size is known now: the resume state keeps it, so a job resumed to poll
        // still reports the bytes the server holds.
        self.total = self.total.or(Some(bytes));
        self.completion = completion;
        self.stage = Stage::Poll;
        self.engine.clear_wait();
        self.next_interval = self.poll_interval;
    }

    /// Polls the inner GCS upload and hands its action out as this job's.
    fn poll_inner(&mut self, now: Instant) -> Action<CompletedJob> {
        let Stage::Gcs(upload) = &mut self.stage else {
            return self.poll_action(now);
        };
        // C2: nothing new is written to an expired upload URL; a status query may still find
        // the upload complete.
        let expired = self.upload_deadline.is_some_and(|d| now >= d);
        match upload.poll_action(now) {
            Action::Read(read) => Action::Read(read),
            Action::Wait(until) => Action::Wait(until),
            Action::Idle => Action::Idle,
            Action::Send(send) => {
                let writes = send.body.source_len() > 0 || send.request.method() == Method::POST;
                if writes && expired {
                    self.keep_inner_stats();
                    self.upload_url_expired();
                    return self.poll_action(now);
                }
                Action::Send(send)
            }
            Action::Done(Ok(completion)) => {
                self.keep_inner_stats();
                self.upload_done(completion.size, Some(completion));
                self.poll_action(now)
            }
            Action::Done(Err(error)) => {
                self.keep_inner_stats();
                self.fail(error);
                self.poll_action(now)
            }
        }
    }

    /// Keeps the inner upload's counters before it is dropped.
    fn keep_inner_stats(&mut self) {
        if let Stage::Gcs(upload) = &self.stage {
            self.inner_stats = upload.stats();
        }
    }

    /// The inner upload, when `id` is one of its requests (odd ids, `GcsUpload::nested`).
    fn inner_for(&mut self, id: RequestId) -> Option<&mut GcsUpload> {
        match &mut self.stage {
            Stage::Gcs(upload) if id.get() % 2 == 1 => Some(upload),
            _ => None,
        }
    }

    // ---- building ----

    fn build(&self, id: RequestId, kind: Kind) -> Transmit {
        let empty = Uri::default();
        let (method, uri, mut headers, body) = match kind {
            Kind::Create => {
                // C1: JSON, app-only auth added by the driver.
                let mut json = format!(r#"{{"type":"{}""#, self.job_type.as_str());
                if let Some(name) = &self.name {
                    let quoted = serde_json::to_string(name).unwrap_or_else(|_| "\"\"".into());
                    json.push_str(&format!(r#","name":{quoted}"#));
                }
                json.push_str(&format!(r#","resumable":{}}}"#, self.resumable));
                let mut headers = self.api_headers.clone();
                headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
                (
                    Method::POST,
                    self.jobs_uri.clone(),
                    headers,
                    Body::bytes(Bytes::from(json)),
                )
            }
            Kind::Put => {
                // C2: the whole file in one PUT, with exactly the signed headers, no
                // credentials.
                let total = self.total.unwrap_or(0);
                let mut headers = HeaderMap::new();
                headers.insert(CONTENT_TYPE, HeaderValue::from_static(TEXT_PLAIN));
                let uri = self
                    .job
                    .as_ref()
                    .map_or_else(|| empty.clone(), |j| j.upload_url.expose().clone());
                (Method::PUT, uri, headers, Body::source(0..total))
            }
            Kind::Poll => {
                // C3.
                let uri = self.status_uri.clone().unwrap_or_else(|| empty.clone());
                (Method::GET, uri, self.api_headers.clone(), Body::empty())
            }
        };
        if method != Method::GET {
            headers.insert(CONTENT_LENGTH, crate::range::decimal(body.len()));
        }
        Transmit::new(id, method, uri, headers, body)
    }
}

impl Upload for ComplianceJob {
    /// The job's verdict (see the module docs): `Ok` once `complete`, else a [`JobError`].
    type Output = CompletedJob;
    type State = ComplianceResumeState;

    fn poll_action(&mut self, now: Instant) -> Action<CompletedJob> {
        if let Some(action) = self.engine.poll_head(now) {
            return action;
        }
        if !self.engine.flights().is_empty() {
            return Action::Idle;
        }
        // A job cannot be deleted through the API (C1–C3): a cancel ends the flow here, and
        // an upload under way ends with it.
        if self.engine.cancel_requested() {
            self.keep_inner_stats();
            self.finish(Err(Error::Cancelled));
            return self.poll_action(now);
        }
        let kind = match self.stage {
            Stage::Gcs(_) => return self.poll_inner(now),
            Stage::Create => Kind::Create,
            Stage::Put => {
                // C2: nothing is written to an expired upload URL.
                if self.upload_deadline.is_some_and(|d| now >= d) {
                    self.upload_url_expired();
                    return self.poll_action(now);
                }
                Kind::Put
            }
            Stage::Poll => {
                let started = *self.poll_started.get_or_insert(now);
                // C3: a run of retries may outlast the poll deadline too.
                if started
                    .checked_add(self.poll_deadline)
                    .is_none_or(|d| now > d)
                {
                    let (id, status) = self
                        .job
                        .as_ref()
                        .map(|j| (j.id.clone(), j.status))
                        .unwrap_or((String::new(), JobStatus::Created));
                    let polls = self.engine.stats().status_polls;
                    self.job_error(JobError::PollDeadline { id, polls, status });
                    return self.poll_action(now);
                }
                Kind::Poll
            }
        };
        let source_len = if kind == Kind::Put {
            self.total.unwrap_or(0)
        } else {
            0
        };
        let id = self.engine.hand_out(now, kind, source_len);
        Action::Send(self.build(id, kind))
    }

    /// Bytes of ids the server has acknowledged: the inner upload's count while it runs, the
    /// whole file once the upload is done.
    fn persisted(&self) -> u64 {
        match &self.stage {
            Stage::Create | Stage::Put => 0,
            Stage::Gcs(upload) => upload.persisted(),
            Stage::Poll => self.uploaded,
        }
    }

    fn retained_from(&self) -> u64 {
        match &self.stage {
            Stage::Gcs(upload) => upload.retained_from(),
            _ => self.persisted(),
        }
    }

    /// What to save to continue this job in a later process; `None` before the job exists,
    /// and once its verdict is final and not resumable (`failed`, `expired`, upload URL
    /// expired). After `complete` it is still there (phase poll: a resumed job polls once
    /// and completes again), so a driver can keep it until the results are downloaded.
    fn resume_state(&self) -> Option<ComplianceResumeState> {
        self.state_now()
    }

    /// Asks the flow to stop: once no request is in flight, the outcome is
    /// [`Error::Cancelled`]. The API has no way to delete a job; it expires on its own. A
    /// verdict that arrives first still wins.
    fn cancel(&mut self) {
        self.engine.request_cancel();
        self.engine.clear_wait();
    }

    /// The job's requests and its upload's together.
    fn stats(&self) -> Stats {
        let inner = match &self.stage {
            Stage::Gcs(upload) => upload.stats(),
            _ => self.inner_stats,
        };
        let own = self.engine.stats();
        Stats {
            requests: own.requests + inner.requests,
            retries: own.retries + inner.retries,
            bytes_sent: own.bytes_sent + inner.bytes_sent,
            resumed_from: inner.resumed_from,
            status_polls: own.status_polls,
        }
    }

    fn progress(&self) -> Progress {
        match &self.stage {
            Stage::Gcs(upload) => upload.progress(),
            _ => Progress {
                acknowledged: self.persisted(),
                in_flight: self.engine.in_flight_bytes(),
                total: self.total(),
            },
        }
    }

    /// The last retry of the job's own requests or of its upload: what failed, the wait, the
    /// attempt count.
    fn last_retry(&self) -> Option<&Retrying> {
        let own = self.engine.last_retry();
        let inner = match &self.stage {
            Stage::Gcs(upload) => upload.last_retry(),
            _ => None,
        };
        match (own, inner) {
            (Some(a), Some(b)) => Some(if a.until >= b.until { a } else { b }),
            (a, b) => a.or(b),
        }
    }

    fn handle_read(&mut self, now: Instant, offset: u64, bytes: &[u8]) -> Result<(), UsageError> {
        if self.engine.is_done() {
            return Err(UsageError::Finished);
        }
        match &mut self.stage {
            Stage::Gcs(upload) => upload.handle_read(now, offset, bytes),
            _ => Err(UsageError::UnexpectedRead {
                offset,
                expected: "only a resumable upload asks to read the file",
            }),
        }
    }

    fn handle_sent(&mut self, id: RequestId, offset: u64, bytes: &[u8]) -> Result<(), UsageError> {
        if self.engine.is_done() {
            return Err(UsageError::Finished);
        }
        match self.inner_for(id) {
            Some(upload) => upload.handle_sent(id, offset, bytes),
            None => Err(UsageError::UnknownRequest(id.get())),
        }
    }

    fn handle_response(
        &mut self,
        now: Instant,
        id: RequestId,
        response: Response<Bytes>,
    ) -> Result<(), UsageError> {
        if self.engine.is_done() {
            return Err(UsageError::Finished);
        }
        // C2: an answer short of completion at or after the upload URL's expiry means the
        // upload cannot finish.
        let expired =
            !response.status().is_success() && self.past_upload_expiry(response.headers());
        if let Some(upload) = self.inner_for(id) {
            upload.handle_response(now, id, response)?;
            if expired {
                self.keep_inner_stats();
                self.upload_url_expired();
            }
            return Ok(());
        }
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
        if self.engine.is_done() {
            return Err(UsageError::Finished);
        }
        if let Some(upload) = self.inner_for(id) {
            return upload.handle_failure(now, id, failure);
        }
        let kind = self.engine.take(id)?.kind;
        // The request may or may not have arrived: send it again as it was (a retried create
        // may leave an orphaned job, never a wrong one).
        self.retry(now, kind, RetryCause::Transport(failure), None);
        Ok(())
    }
}

/// The G1 start of a resumable job's upload: `upload_url`, `Content-Type: text/plain` (C2).
fn xml_start(job: &JobInfo) -> Start {
    Start::Xml {
        url: job.upload_url.expose().clone(),
        content_type: HeaderValue::from_static(TEXT_PLAIN),
    }
}

/// The next wait between polls: half as long again (10, 15, 22.5, 33.75 … s).
fn grow(interval: Duration) -> Duration {
    interval.saturating_add(interval / 2)
}

/// Reads a job answer (C1, C3): a 2xx whose body is `{"data":{…}}`. A 2xx carrying only
/// `errors` is an API error.
fn read_job(response: &Response<Bytes>) -> Result<JobInfo, Error> {
    let body = response.body();
    let data = response::json(body).and_then(|v| v.get("data").filter(|d| d.is_object()).cloned());
    let Some(data) = data else {
        return Err(
            response::api_error(response.status(), body).unwrap_or_else(|| {
                ProtocolViolation::MalformedResponse(
                    "the job creation answer has no data object (C1)",
                )
                .into()
            }),
        );
    };
    parse_job(&data).map_err(Error::from)
}

/// Reads a status answer (C3) over what is `known` of the job: `id` and `status` must be
/// there; `type`, `download_url` and the timestamps replace what is known when present and
/// well formed; an answer about another job is a violation.
fn read_status(response: &Response<Bytes>, known: &JobInfo) -> Result<JobInfo, Error> {
    let body = response.body();
    let data = response::json(body).and_then(|v| v.get("data").filter(|d| d.is_object()).cloned());
    let Some(data) = data else {
        return Err(
            response::api_error(response.status(), body).unwrap_or_else(|| {
                ProtocolViolation::MalformedResponse(
                    "the job status answer has no data object (C3)",
                )
                .into()
            }),
        );
    };
    let text = |key: &str| data.get(key).and_then(Value::as_str);
    let missing = ProtocolViolation::MalformedResponse;
    let id = text("id").ok_or(missing("the job status answer has no id (C3)"))?;
    let status = text("status")
        .and_then(JobStatus::parse)
        .ok_or(missing("the job status answer has no known status (C3)"))?;
    let job_type = match text("type") {
        Some(t) => JobType::parse(t).ok_or(missing("the job has no known type"))?,
        None => known.job_type,
    };
    if id != known.id || job_type != known.job_type {
        return Err(missing("the status answer describes another job (C3)").into());
    }
    let mut job = known.clone();
    job.status = status;
    if let Some(url) = text("download_url").and_then(|u| CapabilityUrl::parse(u).ok()) {
        job.download_url = url;
    }
    let stamp = |key: &str| {
        text(key)
            .filter(|t| t.len() <= MAX_TEXT && !t.chars().any(char::is_control))
            .map(str::to_owned)
    };
    if let Some(at) = stamp("download_expires_at") {
        job.download_expires_at = at;
    }
    Ok(job)
}

/// The `data` object of a job answer. Every field the API marks required must be there.
fn parse_job(data: &Value) -> Result<JobInfo, ProtocolViolation> {
    let missing = ProtocolViolation::MalformedResponse;
    let text = |key: &str| data.get(key).and_then(Value::as_str);
    let id = text("id")
        .filter(|id| valid_id(id))
        .ok_or(missing("the job has no usable id"))?
        .to_owned();
    let job_type = text("type")
        .and_then(JobType::parse)
        .ok_or(missing("the job has no known type"))?;
    let status = text("status")
        .and_then(JobStatus::parse)
        .ok_or(missing("the job has no known status"))?;
    let resumable = match data.get("resumable") {
        None | Some(Value::Null) => false,
        Some(Value::Bool(b)) => *b,
        Some(_) => return Err(missing("the job's resumable is not a boolean")),
    };
    let upload_url = text("upload_url")
        .and_then(|u| CapabilityUrl::parse(u).ok())
        .ok_or(missing("the job has no usable upload_url"))?;
    let download_url = text("download_url")
        .and_then(|u| CapabilityUrl::parse(u).ok())
        .ok_or(missing("the job has no usable download_url"))?;
    let stamp = |key: &str, why: &'static str| {
        text(key)
            .filter(|t| t.len() <= MAX_TEXT && !t.chars().any(char::is_control))
            .map(str::to_owned)
            .ok_or(missing(why))
    };
    let upload_expires_at = stamp("upload_expires_at", "the job has no upload_expires_at")?;
    let download_expires_at = stamp("download_expires_at", "the job has no download_expires_at")?;
    let created_at = stamp("created_at", "the job has no created_at")?;
    let name = text("name").and_then(|n| {
        let clean: String = n
            .chars()
            .filter(|c| !c.is_control())
            .take(MAX_TEXT)
            .collect();
        (!clean.is_empty()).then_some(clean)
    });
    Ok(JobInfo {
        id,
        job_type,
        name,
        status,
        resumable,
        upload_url,
        upload_expires_at,
        download_url,
        download_expires_at,
        created_at,
    })
}

fn valid_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= MAX_ID_LEN
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

/// `scheme://authority/path` without a trailing slash.
fn address(uri: &Uri) -> String {
    let scheme = uri.scheme_str().unwrap_or("https");
    let authority = uri.authority().map_or("", |a| a.as_str());
    format!("{scheme}://{authority}{}", uri.path().trim_end_matches('/'))
}

/// The response's `Date` as seconds since the Unix epoch, if it has a usable one.
fn date_unix(headers: &HeaderMap) -> Option<u64> {
    let date = headers.get(http::header::DATE)?.to_str().ok()?;
    let at = httpdate::parse_http_date(date.trim()).ok()?;
    Some(at.duration_since(std::time::UNIX_EPOCH).ok()?.as_secs())
}

/// An RFC 3339 timestamp (`2021-08-11T19:57:55.000Z`, or with a `±HH:MM` offset) as whole
/// seconds since the Unix epoch; `None` when malformed or before 1970.
fn rfc3339_unix(text: &str) -> Option<u64> {
    let b = text.trim().as_bytes();
    let digits = |at: usize, len: usize| -> Option<i64> {
        let s = b.get(at..at + len)?;
        if !s.iter().all(u8::is_ascii_digit) {
            return None;
        }
        Some(s.iter().fold(0i64, |n, d| n * 10 + i64::from(d - b'0')))
    };
    let separators = [(4, b'-'), (7, b'-'), (13, b':'), (16, b':')];
    if separators.iter().any(|&(at, c)| b.get(at) != Some(&c))
        || !matches!(b.get(10), Some(b'T' | b't' | b' '))
    {
        return None;
    }
    let (year, month, day) = (digits(0, 4)?, digits(5, 2)?, digits(8, 2)?);
    let (hour, minute, second) = (digits(11, 2)?, digits(14, 2)?, digits(17, 2)?);
    if !(1..=12).contains(&month)
        || !(1..=days_in_month(year, month)).contains(&day)
        || hour > 23
        || minute > 59
        || second > 60
    {
        return None;
    }
    let mut rest = b.get(19..)?;
    if let Some(fraction) = rest.strip_prefix(b".") {
        let n = fraction.iter().take_while(|c| c.is_ascii_digit()).count();
        if n == 0 {
            return None;
        }
        rest = &fraction[n..];
    }
    let offset = match rest {
        [b'Z' | b'z'] => 0,
        [sign @ (b'+' | b'-'), h1, h2, b':', m1, m2] => {
            let two = |a: u8, b: u8| -> Option<i64> {
                (a.is_ascii_digit() && b.is_ascii_digit())
                    .then(|| i64::from(a - b'0') * 10 + i64::from(b - b'0'))
            };
            let (h, m) = (two(*h1, *h2)?, two(*m1, *m2)?);
            if h > 23 || m > 59 {
                return None;
            }
            let minutes = h * 60 + m;
            if *sign == b'+' {
                minutes * 60
            } else {
                -minutes * 60
            }
        }
        _ => return None,
    };
    let days = days_from_civil(year, month, day);
    let seconds = days * 86_400 + hour * 3600 + minute * 60 + second - offset;
    u64::try_from(seconds).ok()
}

fn days_in_month(year: i64, month: i64) -> i64 {
    match month {
        2 if (year % 4 == 0 && year % 100 != 0) || year % 400 == 0 => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Days from 1970-01-01 to the given date of the proleptic Gregorian calendar.
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_timestamps() {
        assert_eq!(rfc3339_unix("1970-01-01T00:00:00Z"), Some(0));
        assert_eq!(
            rfc3339_unix("2021-08-11T19:57:55.000Z"),
            Some(1_628_711_875)
        );
        assert_eq!(
            rfc3339_unix("2021-08-11T21:57:55+02:00"),
            Some(1_628_711_875)
        );
        assert_eq!(rfc3339_unix("2024-02-29T00:00:00Z"), Some(1_709_164_800));
        for bad in [
            "",
            "2021-08-11",
            "2021-08-11T19:57:55",
            "2021-13-11T19:57:55Z",
            "2023-02-29T00:00:00Z",
            "2021-08-11T19:57:55.Z",
            "2021-08-11T19:57:55Zjunk",
            "1969-12-31T23:59:59Z",
            "2021-08-11T19:57:55+2:00",
            "２０２１-08-11T19:57:55Z",
        ] {
            assert_eq!(rfc3339_unix(bad), None, "{bad}");
        }
    }

    #[test]
    fn poll_waits_grow_by_half_to_the_cap() {
        let mut wait = DEFAULT_POLL_INTERVAL;
        let mut seen = Vec::new();
        for _ in 0..7 {
            seen.push(wait.as_millis());
            wait = grow(wait).min(DEFAULT_MAX_POLL_INTERVAL);
        }
        assert_eq!(
            seen,
            [10_000, 15_000, 22_500, 33_750, 50_625, 60_000, 60_000]
        );
    }

    #[test]
    fn capability_urls_never_show() {
        let url =
            CapabilityUrl::parse("https://storage.example/o?X-Goog-Signature=SECRET").unwrap();
        assert!(!format!("{url:?}").contains("SECRET"));
        assert!(!format!("{url}").contains("storage"));
        assert!(CapabilityUrl::parse("/relative").is_err());
    }
}
