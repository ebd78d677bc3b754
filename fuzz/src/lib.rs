//! What the fuzz targets share: the input types a script of server behaviour is decoded into
//! (with `arbitrary`), and [`drive`], the driving loop that feeds such a script to a state
//! machine and checks it. `scripts/fuzz` runs the targets; `fuzz/seeds/` holds their seed
//! inputs, written by the ignored test `seeds::write` (see the end of this file).
//!
//! What every state-machine run asserts, whatever the script says:
//! - no panic, on any answer (status, headers, body) or transport failure;
//! - bounded work: at most [`IDLE_BOUND`] actions between two inputs (a `Wait` always lies in
//!   the future, so the loop cannot spin);
//! - `persisted()` never decreases and never passes the source; no `Send` names bytes before
//!   it or past the source; no more requests in flight than the protocol allows;
//! - each request is handed out once, and `Idle` comes only with requests in flight;
//! - an answer for a request that is not in flight is a `UsageError::UnknownRequest` and
//!   changes nothing (the next poll is the same action);
//! - `Done` is sticky: polls repeat the outcome and every `handle_*` is `UsageError::Finished`.

#![forbid(unsafe_code)]

use std::fmt::Debug;
use std::time::{Duration, Instant};

use arbitrary::{Arbitrary, Unstructured};
use bytes::Bytes;
use http::{HeaderName, HeaderValue, StatusCode};
use resumable_core::compliance::{ComplianceConfig, ComplianceJob, JobType};
use resumable_core::gcs::{GcsConfig, GcsUpload, ResumeState, Start};
use resumable_core::ietf::limit;
use resumable_core::media::{ApiVersion, MediaConfig, MediaResumeState, MediaUpload};
use resumable_core::sfv;
use resumable_core::ton::{TonConfig, TonResumeState, TonStart, TonUpload};
use resumable_core::tus::metadata;
use resumable_core::{
    Action, RequestId, RetryPolicy, SessionUri, TransportFailure, Upload, UsageError,
};

/// Most actions between two inputs: a `Wait`, then a `Send`, a `Read` or `Done`.
pub const IDLE_BOUND: u32 = 4;

/// GCS's chunk granule (G4).
pub const GRANULE: u64 = 256 * 1024;

/// The largest GCS source the targets use: three granules and a bit (reads hand in zeros).
pub const GCS_MAX_LEN: u64 = 3 * GRANULE + 100;

static ZEROS: [u8; 2 * GRANULE as usize] = [0; 2 * GRANULE as usize];

// ---------------------------------------------------------------------------------------------
// Input types
// ---------------------------------------------------------------------------------------------

/// Bytes of a header value or a body: a little-endian `u16` length, then that many bytes (fewer
/// when the input ends first). Written by hand rather than derived, so seeds are easy to write.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Blob(pub Vec<u8>);

impl<'a> Arbitrary<'a> for Blob {
    fn arbitrary(u: &mut Unstructured<'a>) -> arbitrary::Result<Self> {
        let len = usize::from(u16::arbitrary(u)?);
        let take = len.min(u.len());
        Ok(Blob(u.bytes(take)?.to_vec()))
    }
}

/// The response headers the protocols read.
#[derive(Arbitrary, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Name {
    Range,
    Location,
    RetryAfter,
    Date,
    XGoogHash,
    StatusOverride,
    TonMinChunk,
    TonMaxChunk,
    Expires,
    RateLimitReset,
    ContentType,
}

impl Name {
    fn header(self) -> HeaderName {
        HeaderName::from_static(match self {
            Name::Range => "range",
            Name::Location => "location",
            Name::RetryAfter => "retry-after",
            Name::Date => "date",
            Name::XGoogHash => "x-goog-hash",
            Name::StatusOverride => "x-http-status-code-override",
            Name::TonMinChunk => "x-ton-min-chunk-size",
            Name::TonMaxChunk => "x-ton-max-chunk-size",
            Name::Expires => "expires",
            Name::RateLimitReset => "x-rate-limit-reset",
            Name::ContentType => "content-type",
        })
    }
}

/// One response header.
#[derive(Arbitrary, Clone, Debug, PartialEq, Eq)]
pub struct Header {
    pub name: Name,
    pub value: Blob,
}

/// One server answer. The status is `100 + status % 900`, so every input is a valid status.
#[derive(Arbitrary, Clone, Debug, PartialEq, Eq)]
pub struct Answer {
    pub status: u16,
    pub headers: Vec<Header>,
    pub body: Blob,
}

impl Answer {
    /// The HTTP response; header values that are not valid header bytes are left out.
    pub fn response(&self) -> http::Response<Bytes> {
        let status = StatusCode::from_u16(100 + self.status % 900).unwrap_or(StatusCode::OK);
        let mut response = http::Response::new(Bytes::from(self.body.0.clone()));
        *response.status_mut() = status;
        for header in &self.headers {
            if let Ok(value) = HeaderValue::from_bytes(&header.value.0) {
                response.headers_mut().append(header.name.header(), value);
            }
        }
        response
    }
}

/// A transport failure (every kind the driver may report).
#[derive(Arbitrary, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Failure {
    Connect,
    Reset,
    Timeout,
    Truncated,
    Other,
}

impl Failure {
    fn transport(self) -> TransportFailure {
        match self {
            Failure::Connect => TransportFailure::Connect,
            Failure::Reset => TransportFailure::Reset,
            Failure::Timeout => TransportFailure::Timeout,
            Failure::Truncated => TransportFailure::TruncatedResponse,
            Failure::Other => TransportFailure::Other,
        }
    }
}

/// One step of a script.
#[derive(Arbitrary, Clone, Debug, PartialEq, Eq)]
pub enum Step {
    /// Answer the in-flight request number `which` (modulo how many are in flight).
    Answer { which: u8, answer: Answer },
    /// Report a transport failure for the in-flight request number `which`.
    Fail { which: u8, failure: Failure },
    /// An answer for a request that is not in flight (answered before, or never handed out).
    Stale { answer: Answer },
    /// Leave the newest request unanswered and poll again (several may be in flight).
    Hold,
    /// The process restarts: the upload is rebuilt from its resume state.
    Restart,
    /// The caller cancels.
    Cancel,
    /// `secs` seconds pass before the next poll.
    Sleep { secs: u16 },
}

/// How a GCS upload begins.
#[derive(Arbitrary, Clone, Copy, Debug, PartialEq, Eq)]
pub enum GcsBegin {
    Xml,
    Json,
    Session,
    Resume,
}

/// The GCS upload under test.
#[derive(Arbitrary, Clone, Debug, PartialEq, Eq)]
pub struct GcsSetup {
    pub begin: GcsBegin,
    /// Source length, modulo `GCS_MAX_LEN + 1`.
    pub len: u32,
    pub known_total: bool,
    pub two_granule_chunks: bool,
    pub md5: bool,
    pub no_308: bool,
    /// Retry budget, modulo 5.
    pub attempts: u8,
    /// For `Resume`: the saved persisted and sent offsets (modulo the length + 1).
    pub persisted: u32,
    pub sent: u32,
}

/// A GCS run: the upload and the script of answers.
#[derive(Arbitrary, Clone, Debug, PartialEq, Eq)]
pub struct GcsScript {
    pub setup: GcsSetup,
    pub steps: Vec<Step>,
}

/// How a TON upload begins.
#[derive(Arbitrary, Clone, Copy, Debug, PartialEq, Eq)]
pub enum TonBegin {
    Resumable,
    Single,
    Resume,
}

/// The TON upload under test. TON bodies are never read, so sizes may be large.
#[derive(Arbitrary, Clone, Debug, PartialEq, Eq)]
pub struct TonSetup {
    pub begin: TonBegin,
    pub len: u32,
    pub chunk: u32,
    pub adaptive: bool,
    pub expires: bool,
    pub attempts: u8,
    /// For `Resume`: persisted, sent, min and max chunk sizes.
    pub persisted: u32,
    pub sent: u32,
    pub min: u32,
    pub max: u32,
}

/// A TON run.
#[derive(Arbitrary, Clone, Debug, PartialEq, Eq)]
pub struct TonScript {
    pub setup: TonSetup,
    pub steps: Vec<Step>,
}

/// The media upload under test.
#[derive(Arbitrary, Clone, Debug, PartialEq, Eq)]
pub struct MediaSetup {
    pub v2: bool,
    pub len: u32,
    pub segment: u32,
    /// APPENDs in flight, 1 + this modulo 4.
    pub in_flight: u8,
    pub polls: u8,
    pub attempts: u8,
    /// Resume a media id (`next_segment`, `finalized`) instead of starting with INIT.
    pub resume: bool,
    pub next_segment: u16,
    pub finalized: bool,
}

/// A media run.
#[derive(Arbitrary, Clone, Debug, PartialEq, Eq)]
pub struct MediaScript {
    pub setup: MediaSetup,
    pub steps: Vec<Step>,
}

/// The compliance job under test (C1–C3). It always starts with the create request; a
/// `Restart` step resumes it from its own state (`ComplianceJob::resume`).
#[derive(Arbitrary, Clone, Debug, PartialEq, Eq)]
pub struct ComplianceSetup {
    /// A resumable upload (G1, G4–G8) rather than one `PUT` (C2).
    pub resumable: bool,
    /// Source length, modulo `GCS_MAX_LEN + 1`.
    pub len: u32,
    pub known_total: bool,
    /// A job of user ids rather than post ids.
    pub users: bool,
    pub attempts: u8,
    /// The poll interval: 6 s plus this, modulo 60, in seconds (C3).
    pub interval: u8,
    /// The poll deadline: 1 s plus this, in seconds.
    pub deadline: u16,
}

/// A compliance run.
#[derive(Arbitrary, Clone, Debug, PartialEq, Eq)]
pub struct ComplianceScript {
    pub setup: ComplianceSetup,
    pub steps: Vec<Step>,
}

// ---------------------------------------------------------------------------------------------
// The driving loop
// ---------------------------------------------------------------------------------------------

/// Builds a new upload from an upload's resume state (a restarted process).
pub type Restart<U> = Box<dyn Fn(&U) -> Option<U>>;

/// What [`drive`] needs to know about the upload besides the [`Upload`] trait.
pub struct Rig<U> {
    /// The source's length (reads past it hand in nothing; no `Send` may reach past it).
    pub source_len: u64,
    /// How many requests may be in flight at once.
    pub max_in_flight: usize,
    /// A new upload from `upload`'s resume state, as a restarted process would build it.
    pub restart: Restart<U>,
    /// Asks `upload` to cancel (`Upload::cancel`).
    pub cancel: Box<dyn Fn(&mut U)>,
    /// Skip the checks against the source's length: a GCS session of unknown size, bare or
    /// resumed, believes what the server claims until it reads the source's end (and then ends with
    /// `RangeBeyondSent`, see `gcs_bare_session_claim_beyond_the_source` in
    /// core/tests/fuzz_regressions.rs).
    pub unbounded: bool,
}

/// Feeds `steps` to `upload` and checks the properties in the crate docs. Returns when the
/// upload is done or the script is used up.
pub fn drive<U>(mut upload: U, steps: &[Step], rig: &Rig<U>)
where
    U: Upload + Debug,
    U::Output: PartialEq + Debug,
{
    let mut now = Instant::now();
    let mut steps = steps.iter();
    let mut in_flight: Vec<RequestId> = Vec::new();
    let mut answered: Option<RequestId> = None;
    let mut persisted = upload.persisted();
    let mut idle = 0;
    loop {
        let action = upload.poll_action(now);
        idle += 1;
        assert!(idle <= IDLE_BOUND, "{idle} actions without input");
        match action {
            Action::Done(outcome) => return check_done(&mut upload, now, &outcome, steps),
            Action::Wait(until) => {
                assert!(until > now, "a Wait that is not in the future");
                now = until;
                continue;
            }
            Action::Read(read) => {
                let range = read.range;
                assert!(range.start < range.end, "an empty read");
                let end = range.end.min(rig.source_len).max(range.start);
                let len = usize::try_from(end - range.start).expect("small");
                assert!(len <= ZEROS.len(), "a read longer than a chunk");
                let handed = upload.handle_read(now, range.start, &ZEROS[..len]);
                assert_eq!(handed, Ok(()), "a read as asked was refused");
                idle = 0;
                continue;
            }
            Action::Send(send) => {
                let body = &send.body.source;
                assert!(body.start <= body.end, "an inverted body range");
                assert!(
                    body.end <= rig.source_len || rig.unbounded,
                    "a body past the source"
                );
                assert!(
                    body.start >= upload.persisted() || body.is_empty(),
                    "a body that re-sends acknowledged bytes"
                );
                assert!(!in_flight.contains(&send.id), "a request handed out twice");
                // A driver hands the body's source bytes in as it sends them; every third
                // request plays a driver that does not (the upload then reads them).
                if send.report_sent && send.id.get() % 3 != 0 {
                    let mut at = body.start;
                    while at < body.end {
                        let piece = (body.end - at).min(ZEROS.len() as u64);
                        let bytes = &ZEROS[..usize::try_from(piece).expect("small")];
                        let handed = upload.handle_sent(send.id, at, bytes);
                        assert_eq!(handed, Ok(()), "sent bytes were refused");
                        at += piece;
                    }
                }
                in_flight.push(send.id);
                assert!(in_flight.len() <= rig.max_in_flight, "too many in flight");
            }
            Action::Idle => assert!(!in_flight.is_empty(), "Idle with nothing in flight"),
        }
        let Some(step) = steps.next() else { return };
        idle = 0;
        match step {
            Step::Answer { which, answer } => {
                let id = in_flight.remove(usize::from(*which) % in_flight.len());
                let result = upload.handle_response(now, id, answer.response());
                assert_eq!(
                    result,
                    Ok(()),
                    "an answer to a request in flight was refused"
                );
                answered = Some(id);
            }
            Step::Fail { which, failure } => {
                let id = in_flight.remove(usize::from(*which) % in_flight.len());
                let result = upload.handle_failure(now, id, failure.transport());
                assert_eq!(
                    result,
                    Ok(()),
                    "a failure of a request in flight was refused"
                );
                answered = Some(id);
            }
            Step::Stale { answer } => {
                // With one request in flight a poll changes nothing; with several it may hand
                // out another, so then the upload's own `Debug` is compared.
                let single = rig.max_in_flight == 1;
                let look = |u: &mut U| {
                    let action = if single {
                        format!("{:?}", u.poll_action(now))
                    } else {
                        String::new()
                    };
                    format!("{action} {u:?} {}", u.persisted())
                };
                let before = look(&mut upload);
                let id = answered.unwrap_or(RequestId::new(u64::MAX));
                let result = upload.handle_response(now, id, answer.response());
                assert_eq!(result, Err(UsageError::UnknownRequest(id.get())));
                assert_eq!(
                    before,
                    look(&mut upload),
                    "a stale answer changed the upload"
                );
            }
            Step::Hold => {}
            Step::Restart => {
                if let Some(resumed) = (rig.restart)(&upload) {
                    // A new process: its ids start again, so no old id is known to be stale.
                    upload = resumed;
                    in_flight.clear();
                    answered = None;
                }
            }
            Step::Cancel => (rig.cancel)(&mut upload),
            Step::Sleep { secs } => now += Duration::from_secs(u64::from(*secs)),
        }
        let now_persisted = upload.persisted();
        assert!(now_persisted >= persisted, "persisted() went backwards");
        assert!(
            now_persisted <= rig.source_len || rig.unbounded,
            "persisted() passed the source"
        );
        persisted = now_persisted;
    }
}

/// `Done` is sticky: the same outcome again, and every input refused as `Finished`.
fn check_done<'s, U>(
    upload: &mut U,
    now: Instant,
    outcome: &Result<U::Output, resumable_core::Error>,
    rest: impl Iterator<Item = &'s Step>,
) where
    U: Upload,
    U::Output: PartialEq + Debug,
{
    // Every error's text is built without panicking.
    if let Err(e) = outcome {
        let _ = (e.to_string(), format!("{e:?}"), e.is_resumable());
    }
    let later = now + Duration::from_secs(3600);
    match upload.poll_action(later) {
        Action::Done(again) => assert_eq!(&again, outcome, "Done changed"),
        other => panic!("Done was not sticky: {other:?}"),
    }
    let finished = Err(UsageError::Finished);
    let ok = Bytes::new();
    for (n, step) in rest.take(4).enumerate() {
        let id = RequestId::new(n as u64);
        let response = match step {
            Step::Answer { answer, .. } | Step::Stale { answer } => answer.response(),
            _ => http::Response::new(ok.clone()),
        };
        assert_eq!(upload.handle_response(now, id, response), finished);
        assert_eq!(
            upload.handle_failure(now, id, TransportFailure::Reset),
            finished
        );
        assert_eq!(upload.handle_read(now, 0, b"x"), finished);
    }
    assert!(matches!(upload.poll_action(later), Action::Done(_)));
}

fn policy(attempts: u8) -> RetryPolicy {
    let mut policy = RetryPolicy::default().with_seed(u64::from(attempts));
    policy.max_attempts = u32::from(attempts % 5);
    policy
}

const SESSION: &str = "https://storage.example/upload/storage/v1/b/b/o?upload_id=SECRET";

/// Runs a GCS script (G1–G11).
pub fn run_gcs(script: &GcsScript) {
    let s = &script.setup;
    let len = u64::from(s.len) % (GCS_MAX_LEN + 1);
    let mut config = GcsConfig::new(s.known_total.then_some(len));
    config.chunk_size = if s.two_granule_chunks { 2 } else { 1 } * GRANULE;
    config.checksums.md5 = s.md5;
    config.no_308 = s.no_308;
    config.retry = policy(s.attempts);
    let content_type = HeaderValue::from_static("application/octet-stream");
    let start = match s.begin {
        GcsBegin::Xml => Start::Xml {
            url: "https://storage.example/b/o?X-Goog-Signature=SECRET"
                .parse()
                .expect("url"),
            content_type,
        },
        GcsBegin::Json => {
            config.start_headers.insert(
                http::header::AUTHORIZATION,
                HeaderValue::from_static("Bearer SECRET"),
            );
            Start::Json {
                url: "https://storage.example/upload/storage/v1/b/b/o?uploadType=resumable"
                    .parse()
                    .expect("url"),
                content_type,
                metadata: Some(Bytes::from_static(br#"{"name":"o"}"#)),
            }
        }
        GcsBegin::Session => Start::Session(SessionUri::parse(SESSION).expect("uri")),
        GcsBegin::Resume => Start::Resume(ResumeState {
            session: SessionUri::parse(SESSION).expect("uri"),
            total: config.total,
            persisted: u64::from(s.persisted) % (len + 1),
            sent: Some(u64::from(s.sent) % (len + 1)),
            crc32c: None,
            fingerprint: String::new(),
            foreign: false,
        }),
    };
    // A session of unknown size, bare or resumed (a saved `sent` is only a floor: a driver
    // may have sent more after saving), believes the server's claim until it reads the
    // source's end.
    let unbounded = matches!(s.begin, GcsBegin::Session | GcsBegin::Resume) && !s.known_total;
    let Ok(upload) = GcsUpload::new(start, config.clone()) else {
        return;
    };
    let rig = Rig {
        source_len: len,
        max_in_flight: 1,
        restart: Box::new(move |u: &GcsUpload| {
            let state = u.resume_state()?;
            let resumed = GcsUpload::new(Start::Resume(state), config.clone());
            if unbounded {
                return resumed.ok();
            }
            Some(resumed.expect("an upload resumes from its own state"))
        }),
        cancel: Box::new(GcsUpload::cancel),
        unbounded,
    };
    drive(upload, &script.steps, &rig);
}

/// Runs a TON script (T1–T6).
pub fn run_ton(script: &TonScript) {
    let s = &script.setup;
    let len = u64::from(s.len);
    let mut config = TonConfig::new(HeaderValue::from_static("video/mp4"), len);
    config.chunk_size = u64::from(s.chunk);
    if !s.adaptive {
        config.chunk_time = None;
    }
    if s.expires {
        config.expires = Some("Wed, 05 Nov 2014 23:50:16 GMT".into());
    }
    config.retry = policy(s.attempts);
    config.start_headers.insert(
        http::header::AUTHORIZATION,
        HeaderValue::from_static("OAuth SECRET"),
    );
    let bucket_url = "https://ton.example/1.1/ton/bucket/b".parse().expect("url");
    let start = match s.begin {
        TonBegin::Resumable => TonStart::Resumable { bucket_url },
        TonBegin::Single => TonStart::Single { bucket_url },
        TonBegin::Resume => TonStart::Resume(TonResumeState {
            location: SessionUri::parse("https://ton.example/1.1/ton/bucket/b/f?resumeId=SECRET")
                .expect("uri"),
            total: len,
            persisted: u64::from(s.persisted),
            sent: u64::from(s.sent),
            min_chunk: u64::from(s.min),
            max_chunk: u64::from(s.max),
            expires: None,
            fingerprint: String::new(),
        }),
    };
    let Ok(upload) = TonUpload::new(start, config.clone()) else {
        return;
    };
    let rig = Rig {
        source_len: len,
        max_in_flight: 1,
        restart: Box::new(move |u: &TonUpload| {
            let state = u.resume_state()?;
            Some(
                TonUpload::new(TonStart::Resume(state), config.clone())
                    .expect("an upload resumes from its own state"),
            )
        }),
        cancel: Box::new(TonUpload::cancel),
        unbounded: false,
    };
    drive(upload, &script.steps, &rig);
}

/// Runs a media script (M1–M6).
pub fn run_media(script: &MediaScript) {
    let s = &script.setup;
    let len = u64::from(s.len);
    let api = if s.v2 {
        ApiVersion::v2()
    } else {
        ApiVersion::v1_1()
    };
    let mut config = MediaConfig::new(api, len, "video/mp4");
    config.segment_size = u64::from(s.segment);
    config.max_in_flight = 1 + u32::from(s.in_flight % 4);
    config.max_status_polls = u32::from(s.polls % 8);
    config.retry = policy(s.attempts);
    config.headers.insert(
        http::header::AUTHORIZATION,
        HeaderValue::from_static("Bearer SECRET"),
    );
    let upload = if s.resume {
        let Ok(plan) = resumable_core::media::SegmentPlan::new(len, config.segment_size) else {
            return;
        };
        let next_segment = u32::from(s.next_segment) % (plan.count() + 1);
        let state = MediaResumeState {
            api: config.api.form(),
            media_id: "710511363345354753".into(),
            media_key: None,
            total: len,
            segment_size: plan.segment_size(),
            next_segment,
            next_offset: plan.offset(next_segment),
            finalized: s.finalized,
            expires_after_secs: None,
            expires_at_unix: None,
            fingerprint: String::new(),
        };
        MediaUpload::resume(config.clone(), state)
    } else {
        MediaUpload::new(config.clone())
    };
    let Ok(upload) = upload else { return };
    let rig = Rig {
        source_len: len,
        max_in_flight: config.max_in_flight as usize,
        restart: Box::new(move |u: &MediaUpload| {
            let state = u.resume_state()?;
            Some(
                MediaUpload::resume(config.clone(), state)
                    .expect("an upload resumes from its own state"),
            )
        }),
        cancel: Box::new(MediaUpload::cancel),
        unbounded: false,
    };
    drive(upload, &script.steps, &rig);
}

/// Runs a compliance script (C1–C3, with G1–G8 for a resumable upload).
pub fn run_compliance(script: &ComplianceScript) {
    let s = &script.setup;
    let len = u64::from(s.len) % (GCS_MAX_LEN + 1);
    let job_type = if s.users {
        JobType::Users
    } else {
        JobType::Tweets
    };
    let mut config = ComplianceConfig::new(job_type, s.known_total.then_some(len));
    config.resumable = s.resumable;
    config.chunk_size = GRANULE;
    config.retry = policy(s.attempts);
    config.poll_interval = Duration::from_secs(6 + u64::from(s.interval % 60));
    config.max_poll_interval = config.poll_interval * 4;
    config.poll_deadline = Duration::from_secs(1 + u64::from(s.deadline));
    config.api_headers.insert(
        http::header::AUTHORIZATION,
        HeaderValue::from_static("Bearer SECRET"),
    );
    let Ok(job) = ComplianceJob::new(config.clone()) else {
        return;
    };
    // A resumable upload of unknown size, resumed, believes the server's claim until it reads
    // the source's end (as a GCS session does, see `Rig::unbounded`).
    let unbounded = s.resumable && !s.known_total;
    let rig = Rig {
        source_len: len,
        max_in_flight: 1,
        restart: Box::new(move |u: &ComplianceJob| {
            let state = u.resume_state()?;
            let resumed = ComplianceJob::resume(config.clone(), state);
            if unbounded {
                return resumed.ok();
            }
            Some(resumed.expect("a job resumes from its own state"))
        }),
        cancel: Box::new(ComplianceJob::cancel),
        unbounded,
    };
    drive(job, &script.steps, &rig);
}

// ---------------------------------------------------------------------------------------------
// Bodies and headers through the state machines
// ---------------------------------------------------------------------------------------------

/// Splits `data` at the first `\n` (the whole of it and nothing when there is none).
pub fn split_line(data: &[u8]) -> (&[u8], &[u8]) {
    match data.iter().position(|&b| b == b'\n') {
        Some(i) => (&data[..i], &data[i + 1..]),
        None => (data, &[]),
    }
}

/// A header map with each `(name, value)` whose value is valid header bytes.
pub fn headers(pairs: &[(&'static str, &[u8])]) -> http::HeaderMap {
    let mut map = http::HeaderMap::new();
    for (name, value) in pairs {
        if let Ok(value) = HeaderValue::from_bytes(value) {
            map.append(*name, value);
        }
    }
    map
}

/// A header map with one `name` header per line of `data` (lines that are not valid header
/// bytes are left out).
pub fn header_lines(name: &'static str, data: &[u8]) -> http::HeaderMap {
    let pairs: Vec<_> = data
        .split(|&b| b == b'\n')
        .map(|line| (name, line))
        .collect();
    headers(&pairs)
}

/// G7: a GCS completion whose `x-goog-hash` (the first line) and object resource body (the
/// rest) come from the input. The outcome is success with the source's size, or a typed error.
pub fn gcs_completion(data: &[u8]) {
    let (hash, body) = split_line(data);
    let len = 10;
    let mut config = GcsConfig::new(Some(len));
    config.chunk_size = GRANULE;
    config.checksums.md5 = true;
    let start = Start::Session(SessionUri::parse(SESSION).expect("uri"));
    let mut upload = GcsUpload::new(start, config).expect("valid");
    let now = Instant::now();
    loop {
        match upload.poll_action(now) {
            Action::Read(read) => {
                let end = usize::try_from(read.range.end.min(len)).expect("small");
                let start = usize::try_from(read.range.start).expect("small");
                upload
                    .handle_read(now, read.range.start, &ZEROS[start..end])
                    .expect("read");
            }
            Action::Send(send) => {
                let mut response = http::Response::new(Bytes::copy_from_slice(body));
                *response.status_mut() = StatusCode::OK;
                if let Ok(value) = HeaderValue::from_bytes(hash) {
                    response.headers_mut().insert("x-goog-hash", value);
                }
                upload
                    .handle_response(now, send.id, response)
                    .expect("in flight");
            }
            Action::Wait(_) | Action::Idle => panic!("no failure was reported"),
            Action::Done(Ok(done)) => {
                assert_eq!(done.size, len);
                return;
            }
            Action::Done(Err(e)) => {
                let _ = e.to_string();
                return;
            }
        }
    }
}

/// M1, M3–M5: one media answer whose body comes from the input, to INIT (first byte `% 4 ==
/// 0`), FINALIZE (1), STATUS (2) or as an error status (3); the second byte picks v1.1 or v2
/// and the status. Whatever the body, the upload ends or goes on without panicking.
pub fn media_answer(data: &[u8]) {
    let [which, form, body @ ..] = data else {
        return;
    };
    let api = if form & 1 == 0 {
        ApiVersion::v1_1()
    } else {
        ApiVersion::v2()
    };
    let mut config = MediaConfig::new(api, 10, "image/png");
    config.segment_size = 10;
    let ok = br#"{"media_id_string":"1","data":{"id":"1"},"processing_info":{"state":"pending","check_after_secs":1}}"#;
    let init = br#"{"media_id_string":"1","data":{"id":"1"}}"#;
    let target = which % 4;
    let mut upload = MediaUpload::new(config).expect("valid");
    let mut now = Instant::now();
    for n in 0..8 {
        let send = match upload.poll_action(now) {
            Action::Send(send) => send,
            Action::Wait(until) => {
                now = until;
                continue;
            }
            Action::Done(_) => return,
            Action::Idle => panic!("idle with every request answered"),
            Action::Read(_) => panic!("media never reads"),
        };
        // Request n: INIT, APPEND, FINALIZE, STATUS…
        let (status, bytes): (u16, &[u8]) = match (n, target) {
            (0, 0) | (2, 1) | (3, 2) => (200, body),
            (_, 3) if n == 2 => (400 + u16::from(form >> 1) % 200, body),
            (0, _) => (200, init),
            (1, _) => (204, b""),
            _ => (200, ok),
        };
        let mut response = http::Response::new(Bytes::copy_from_slice(bytes));
        *response.status_mut() = StatusCode::from_u16(status).expect("valid");
        upload
            .handle_response(now, send.id, response)
            .expect("in flight");
    }
}

/// T3: a TON start answered with `X-TON-Min-Chunk-Size`, `X-TON-Max-Chunk-Size`, `Location`,
/// `Expires` and `Date` taken from the input's first five lines, then chunks answered by an
/// honest server. Every chunk must obey the limits the upload accepted (T4).
pub fn ton_limits(data: &[u8]) {
    let (min, rest) = split_line(data);
    let (max, rest) = split_line(rest);
    let (location, rest) = split_line(rest);
    let (expires, rest) = split_line(rest);
    let (date, rest) = split_line(rest);
    let total = 1 + rest
        .iter()
        .fold(0u64, |t, &b| t.wrapping_mul(251).wrapping_add(u64::from(b)))
        % (1 << 30);
    let mut config = TonConfig::new(HeaderValue::from_static("video/mp4"), total);
    config.chunk_size = 1 << 20;
    let bucket_url = "https://ton.example/1.1/ton/bucket/b".parse().expect("url");
    let mut upload =
        TonUpload::new(TonStart::Resumable { bucket_url }, config).expect("valid config");
    let mut now = Instant::now();
    let mut held = 0u64;
    for n in 0..64 {
        let send = match upload.poll_action(now) {
            Action::Send(send) => send,
            Action::Wait(until) => {
                now = until;
                continue;
            }
            Action::Done(_) => return,
            Action::Idle => panic!("idle with every request answered"),
            Action::Read(_) => panic!("TON never reads"),
        };
        let mut response = http::Response::new(Bytes::new());
        if n == 0 {
            *response.status_mut() = StatusCode::CREATED;
            for (name, value) in [
                ("x-ton-min-chunk-size", min),
                ("x-ton-max-chunk-size", max),
                ("location", location),
                ("expires", expires),
                ("date", date),
            ] {
                if let Ok(value) = HeaderValue::from_bytes(value) {
                    response.headers_mut().insert(name, value);
                }
            }
        } else {
            let range = send.body.source.clone();
            let limits = upload
                .limits()
                .expect("limits are known once chunks are sent");
            let len = range.end - range.start;
            assert!(
                len > 0 && len <= limits.cap(),
                "a chunk outside the limits (T4)"
            );
            assert!(
                range.end == total || len % limits.min == 0,
                "a non-final chunk that is not a multiple of the minimum (T4)"
            );
            // T5: with a minimum of 1, `0-N` may mean N or N + 1 bytes held; the client takes
            // the smaller, proven reading and sends the byte in doubt again.
            assert!(
                range.start == held || (limits.min == 1 && range.start + 1 == held),
                "a chunk that does not continue the upload"
            );
            held = range.end;
            if held == total {
                *response.status_mut() = StatusCode::CREATED;
                response
                    .headers_mut()
                    .insert("location", HeaderValue::from_static("/1.1/ton/bucket/b/f"));
            } else {
                *response.status_mut() = StatusCode::PERMANENT_REDIRECT;
                let value = format!("0-{}", held - 1);
                response
                    .headers_mut()
                    .insert("range", HeaderValue::from_str(&value).expect("ascii"));
            }
        }
        now += Duration::from_secs(1);
        upload
            .handle_response(now, send.id, response)
            .expect("in flight");
    }
}

// ---------------------------------------------------------------------------------------------
// S3 multipart: the XML answers and the part plan
// ---------------------------------------------------------------------------------------------

/// S2, S5–S7, S9: every S3 multipart XML parser on the same body, then the Complete body
/// written from whatever parts a ListParts reading found. Each gives a result or a typed
/// error, within the documented bounds: an upload ID that is not empty, at most 1,000 parts a
/// page with numbers 1–10,000, a next-page marker that advances, text no longer than the caps.
pub fn s3_xml(data: &[u8]) {
    use resumable_core::multipart::xml::{
        self, CompletedPart, MAX_MESSAGE_LEN, MAX_PARTS_PER_PAGE, MAX_TEXT_LEN, S3Answer, S3Error,
    };
    let check_error = |e: &S3Error| {
        assert!(
            e.message
                .as_ref()
                .is_none_or(|m| m.len() <= MAX_MESSAGE_LEN)
        );
        assert!(e.code.as_str().len() <= MAX_TEXT_LEN);
        let _ = e.to_string();
        for status in [
            StatusCode::OK,
            StatusCode::NOT_FOUND,
            StatusCode::SERVICE_UNAVAILABLE,
        ] {
            let _ = e.action(status);
        }
    };
    let short = |text: &Option<String>| text.as_ref().is_none_or(|t| t.len() <= MAX_TEXT_LEN);

    match xml::parse_initiate_multipart_upload(data) {
        Ok(S3Answer::Success(r)) => {
            assert!(!r.upload_id.is_empty() && r.upload_id.len() <= MAX_TEXT_LEN);
            assert!(short(&r.bucket) && short(&r.key));
        }
        Ok(S3Answer::Error(e)) => check_error(&e),
        Err(e) => {
            let _ = (e.to_string(), e.counts_as_transport_failure());
        }
    }
    match xml::parse_list_parts(data) {
        Ok(S3Answer::Success(page)) => {
            assert!(page.parts.len() <= MAX_PARTS_PER_PAGE);
            assert!(
                page.parts
                    .iter()
                    .all(|p| (1..=10_000).contains(&p.part_number))
            );
            if let Ok(Some(next)) = page.next_page_marker() {
                assert!(next > page.part_number_marker.unwrap_or(0) && next < 10_000);
            }
            let parts: Vec<CompletedPart> = page
                .parts
                .iter()
                .filter_map(|p| {
                    Some(CompletedPart {
                        part_number: p.part_number,
                        etag: p.etag.clone()?,
                        crc32c: p
                            .checksums
                            .crc32c()
                            .and_then(resumable_core::multipart::checksum::parse_crc32c)
                            .map(|v| v.crc32c),
                    })
                })
                .collect();
            if let Ok(body) = xml::complete_multipart_upload_body(&parts) {
                assert!(!parts.is_empty() && body.len() <= xml::MAX_BODY_LEN);
            }
        }
        Ok(S3Answer::Error(e)) => check_error(&e),
        Err(_) => {}
    }
    match xml::parse_complete_multipart_upload(data) {
        Ok(S3Answer::Success(r)) => {
            assert!(short(&r.location) && short(&r.etag));
            assert!(r.checksums.iter().all(|(_, v)| v.len() <= MAX_TEXT_LEN));
        }
        Ok(S3Answer::Error(e)) => check_error(&e),
        Err(_) => {}
    }
    if let Ok(e) = xml::parse_error(data) {
        check_error(&e);
    }
}

/// S4: a part plan for an arbitrary total (known or not) and preferred size, probed at up to
/// 16 part numbers and offsets. A plan is refused exactly when the inputs are over S3's
/// limits; otherwise its part size is a whole MiB from 5 MiB to 5 GiB and at least the
/// preferred size, it has 1–10,000 parts that tile the object without gaps, every part but
/// the last is one part size long, `part_at` agrees with `range`, and rebuilding it from its
/// saved values gives the same plan.
pub fn s3_plan(data: &[u8]) {
    use resumable_core::multipart::plan::{
        MAX_OBJECT_SIZE, MAX_PART_SIZE, MAX_PARTS, MIB, MIN_PART_SIZE, PartPlan, PlanError,
    };
    let mut u = Unstructured::new(data);
    let (Ok(known), Ok(total), Ok(preferred)) = (
        u.arbitrary::<bool>(),
        u.arbitrary::<u64>(),
        u.arbitrary::<u64>(),
    ) else {
        return;
    };
    let total = known.then_some(total);
    let plan = match PartPlan::new(total, preferred) {
        Ok(plan) => plan,
        Err(PlanError::PartSizeTooLarge { .. }) => {
            assert!(preferred > MAX_PART_SIZE);
            return;
        }
        Err(PlanError::ObjectTooLarge { .. }) => {
            assert!(preferred <= MAX_PART_SIZE && total.is_some_and(|t| t > MAX_OBJECT_SIZE));
            return;
        }
        Err(e) => panic!("new refused with {e:?}"),
    };
    assert!(preferred <= MAX_PART_SIZE && total.is_none_or(|t| t <= MAX_OBJECT_SIZE));
    let p = plan.part_size();
    assert!(p % MIB == 0 && (MIN_PART_SIZE..=MAX_PART_SIZE).contains(&p) && p >= preferred);
    assert_eq!(PartPlan::new(plan.total(), p), Ok(plan));
    let last = plan.last_part_number();
    assert!((1..=MAX_PARTS).contains(&last));
    assert_eq!(plan.range(1).map(|r| r.start), Ok(0));
    if let Some(t) = total {
        assert_eq!(plan.range(last).map(|r| r.end), Ok(t));
        assert!(plan.range(last + 1).is_err());
    } else {
        assert!(matches!(
            plan.range(MAX_PARTS + 1),
            Err(PlanError::SourceTooLong { .. })
        ));
    }
    assert!(plan.range(0).is_err());
    for _ in 0..16 {
        let Ok(probe) = u.arbitrary::<u64>() else {
            break;
        };
        let n = 1 + u32::try_from(probe % u64::from(last)).expect("below 10,000");
        let range = plan.range(n).expect("a planned part");
        if n > 1 {
            assert_eq!(plan.range(n - 1).map(|r| r.end), Ok(range.start));
        }
        let len = range.end - range.start;
        assert!(if n < last { len == p } else { len <= p });
        if len > 0 {
            assert_eq!(plan.part_at(range.start), Ok(n));
            assert_eq!(plan.part_at(range.end - 1), Ok(n));
        }
        match plan.part_at(probe) {
            Ok(k) => assert!(plan.range(k).expect("a planned part").contains(&probe)),
            Err(PlanError::PastEnd { .. }) => assert!(total.is_some_and(|t| probe >= t)),
            Err(PlanError::SourceTooLong { .. }) => {
                assert!(total.is_none() && probe >= plan.max_object_size());
            }
            Err(e) => panic!("part_at refused with {e:?}"),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Structured fields (R2, R11) and tus metadata (U7)
// ---------------------------------------------------------------------------------------------

/// A parsed Item writes back, and what is written parses to the same Item and writes the same
/// text again (the canonical form is a fixed point).
fn check_item(item: &sfv::Item) {
    let text = sfv::serialize_item(item).expect("a parsed item can be written");
    assert_eq!(
        sfv::parse_item(text.as_bytes()).as_ref(),
        Ok(item),
        "{text:?}"
    );
}

/// The same for a Dictionary (an empty one is written by leaving the field out).
fn check_dictionary(dictionary: &sfv::Dictionary) {
    match sfv::serialize_dictionary(dictionary) {
        Ok(text) => assert_eq!(
            sfv::parse_dictionary(text.as_bytes()).as_ref(),
            Ok(dictionary),
            "{text:?}"
        ),
        Err(_) => assert!(dictionary.is_empty(), "a parsed dictionary can be written"),
    }
}

/// R2: the input as one Item field value, and as field lines of `Upload-Offset`,
/// `Upload-Length` and `Upload-Complete` (one per input line, combined as RFC 9651 asks).
/// Nothing panics; what parses round-trips through the writer; the typed readers agree with
/// the writers a client uses.
pub fn sfv_item(data: &[u8]) {
    if let Ok(item) = sfv::parse_item(data) {
        check_item(&item);
    }
    let offset = header_lines("upload-offset", data);
    if let Ok(Some(item)) = sfv::item_field(&offset, "upload-offset") {
        check_item(&item);
    }
    if let Ok(Some(n)) = limit::upload_offset(&offset) {
        let mut again = http::HeaderMap::new();
        again.insert(
            "upload-offset",
            sfv::integer(n).expect("a read offset fits"),
        );
        assert_eq!(limit::upload_offset(&again), Ok(Some(n)));
    }
    let _ = limit::upload_length(&header_lines("upload-length", data)).map_err(|e| e.to_string());
    if let Ok(Some(b)) = limit::upload_complete(&header_lines("upload-complete", data)) {
        let mut again = http::HeaderMap::new();
        again.insert("upload-complete", sfv::boolean(b));
        assert_eq!(limit::upload_complete(&again), Ok(Some(b)));
    }
}

/// R11: the input as one Dictionary (and List) field value, and as `Upload-Limit` field lines
/// read at interop 6 (`expires`) and 9 (`max-age`). What parses round-trips; limits a server
/// writes read back the same.
pub fn sfv_dictionary(data: &[u8]) {
    if let Ok(dictionary) = sfv::parse_dictionary(data) {
        check_dictionary(&dictionary);
    }
    if let Ok(list) = sfv::parse_list(data)
        && let Ok(text) = sfv::serialize_list(&list)
    {
        assert_eq!(sfv::parse_list(text.as_bytes()), Ok(list), "{text:?}");
    }
    let headers = header_lines("upload-limit", data);
    if let Ok(Some(dictionary)) = sfv::dictionary_field(&headers, "upload-limit") {
        check_dictionary(&dictionary);
    }
    for interop in [6, 9] {
        match limit::upload_limit(&headers, interop) {
            Ok(Some(limits)) => {
                if let Ok(value) = limits.header_value(interop) {
                    let mut again = http::HeaderMap::new();
                    again.insert("upload-limit", value);
                    assert_eq!(limit::upload_limit(&again, interop), Ok(Some(limits)));
                } else {
                    assert_eq!(limits, limit::UploadLimit::default());
                }
            }
            Ok(None) => {}
            Err(e) => {
                let _ = e.to_string();
            }
        }
    }
}

/// U7: the input as an `Upload-Metadata` value for the strict reader, and as pairs for the
/// writer (one `key=value` per line). What the reader takes, the writer writes back to the
/// same pairs; what the writer writes, the reader reads back; a refusal depends on the keys
/// alone, so it never shows a value.
pub fn upload_metadata(data: &[u8]) {
    if let Ok(pairs) = metadata::parse_upload_metadata(data) {
        let written =
            metadata::upload_metadata(pairs.iter().map(|(k, v)| (k.as_str(), v.as_slice())))
                .expect("keys the reader takes are keys the writer takes")
                .expect("one or more pairs");
        assert_eq!(
            metadata::parse_upload_metadata(written.as_bytes()),
            Ok(pairs)
        );
    }
    let _ = metadata::read_upload_metadata(&header_lines("upload-metadata", data));
    let mut pairs: Vec<(&str, &[u8])> = Vec::new();
    for line in data.split(|&b| b == b'\n') {
        let (key, value) = match line.iter().position(|&b| b == b'=') {
            Some(i) => (&line[..i], &line[i + 1..]),
            None => (line, &[][..]),
        };
        let Ok(key) = std::str::from_utf8(key) else {
            return;
        };
        pairs.push((key, value));
    }
    match metadata::upload_metadata(pairs.iter().copied()) {
        Ok(Some(value)) => {
            let read =
                metadata::parse_upload_metadata(value.as_bytes()).expect("written is readable");
            let expected: Vec<(String, Vec<u8>)> = pairs
                .iter()
                .map(|(k, v)| ((*k).to_owned(), v.to_vec()))
                .collect();
            assert_eq!(read, expected);
        }
        Ok(None) => assert!(pairs.is_empty()),
        Err(e) => {
            // A refusal depends on the keys alone, so it cannot show a value.
            let blank = pairs.iter().map(|(k, _)| (*k, &[][..]));
            assert_eq!(metadata::upload_metadata(blank), Err(e));
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Seeds
// ---------------------------------------------------------------------------------------------

#[cfg(test)]
mod seeds;
