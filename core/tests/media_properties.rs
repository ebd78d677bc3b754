//! Property tests: `MediaUpload` driven against thousands of random `SimMedia` server
//! behaviours (lost requests and responses, 5xx/408/429 bursts with and without
//! `x-rate-limit-reset`/`Retry-After`, one final refusal in any of the M5 shapes, processing
//! sequences of random length ending in `succeeded`, `failed` or an `error`), in both API forms
//! and with 1 to 4 APPENDs in flight. Rule ids are from `docs/protocols`.
//!
//! The driver is the crate docs' loop (poll, act, hand the result back), extended for several
//! requests in flight: it answers outstanding requests in random order and jumps the clock to
//! each `Action::Wait` instant. What every case checks:
//!
//! 1. `Done(Ok(c))` only if the server holds, for `c.media_id`, segments `0..n` that are
//!    exactly the plan's ranges of the source (so their concatenation is the source), FINALIZE
//!    was received after them, and processing is absent or ended `succeeded` (M2–M4).
//! 2. Otherwise `Done(Err(e))` with the typed error the exchange calls for: `Api`/`Server`
//!    equal to the refusal sent (M5), `ProcessingFailed` with the `error` fields sent (M4),
//!    `ProcessingUnfinished` only when the script is longer than the poll bound,
//!    `RetriesExhausted` with the right count and last cause, `Transport` only when transport
//!    failures are not retried, `MediaExpired` only with a short expiry. Never `Protocol`,
//!    `Integrity` or `Usage` from this honest server.
//! 3. Bounded work: with P the 2xx answers handed in (P ≤ 2 + n + the poll bound), A the retry
//!    budget and N the APPENDs in flight, requests ≤ P + (P + 1)(A + 1) + N.
//! 4. No panic (proptest reports one as a failure).
//! 5. Every APPEND: `segment_index` in `0..=999` and below the plan's count, its body parses as
//!    multipart with the expected fields, the `media` part is exactly the plan's range of the
//!    source, at most 5,000,000 bytes, and `Content-Length` is the body's length (M2, M6).
//! 6. No new request before a `check_after_secs` (M4) or a 429's reset/`Retry-After` (M5)
//!    has passed, nor before a failure's first backoff.
//! 7. Each request is handed out once; with N requests in flight and nothing new due, a poll is
//!    `Idle` (and so is the next).
//! 8. After `Done`, polls repeat the outcome and every `handle_*` is `UsageError::Finished`.

use std::collections::{BTreeMap, HashMap};
use std::convert::Infallible;
use std::time::{Duration, Instant, UNIX_EPOCH};

use bytes::Bytes;
use http::{HeaderValue, Method, StatusCode};
use proptest::prelude::*;
use proptest::test_runner::TestCaseError;
use resumable_core::media::{
    ApiForm, ApiVersion, MAX_SEGMENT_SIZE, MediaCompletion, MediaConfig, MediaUpload,
    ProcessingState, SegmentPlan,
};
use resumable_core::{
    Action, Error, RetryCause, RetryPolicy, Transmit, TransportFailure, Upload, UsageError,
};

const V1: &str = "https://upload.sim/1.1/media/upload.json";
const V2: &str = "https://api.sim/2/media/upload";
const AUTH: &str = "Bearer SIMTOKEN";
/// The server's clock at the test's `t0`, for `Date` and `x-rate-limit-reset`.
const EPOCH_AT_T0: u64 = 1_700_000_000;
/// A backstop far above the stated bound, so a runaway loop fails instead of hanging.
const HARD_CAP: u64 = 200_000;

// ---------------------------------------------------------------------------------------------
// Cases
// ---------------------------------------------------------------------------------------------

/// How processing ends (M4).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum End {
    Succeeded,
    /// `state: failed` without an `error`.
    Failed,
    /// An `error` object with `state: in_progress`: terminal all the same.
    ErrorInProgress,
    /// An `error` object with `state: failed`.
    ErrorFailed,
}

/// A pending step: `pending` or `in_progress`, with or without `check_after_secs`.
#[derive(Clone, Copy, Debug)]
struct Step {
    in_progress: bool,
    check_after: Option<u64>,
}

#[derive(Clone, Debug)]
struct Processing {
    steps: Vec<Step>,
    end: End,
}

/// The shapes a final refusal takes (M5).
#[derive(Clone, Copy, Debug)]
enum Refusal {
    V1Errors,
    V1RequestError,
    V2Problem,
    Html,
}

#[derive(Clone, Debug)]
struct Case {
    form: ApiForm,
    total: u64,
    segment: u64,
    in_flight: u32,
    max_attempts: u32,
    retry_transport: bool,
    /// Percent of requests that start a fault burst.
    fault_rate: u32,
    /// Longest burst of consecutive faults.
    burst: u32,
    /// Faults never exceed the retry budget in a row (the server heals).
    healing: bool,
    /// A final refusal instead of the answer to this request (counted from 0).
    refusal: Option<(u32, Refusal)>,
    processing: Option<Processing>,
    max_status_polls: u32,
    expires_after_secs: u64,
    seed: u64,
}

fn step() -> impl Strategy<Value = Step> {
    (any::<bool>(), prop::option::of(0u64..=8)).prop_map(|(in_progress, check_after)| Step {
        in_progress,
        check_after,
    })
}

fn end() -> impl Strategy<Value = End> {
    prop_oneof![
        3 => Just(End::Succeeded),
        1 => Just(End::Failed),
        1 => Just(End::ErrorInProgress),
        1 => Just(End::ErrorFailed),
    ]
}

fn processing() -> impl Strategy<Value = Option<Processing>> {
    prop::option::weighted(
        0.7,
        (prop::collection::vec(step(), 0..=6), end())
            .prop_map(|(steps, end)| Processing { steps, end }),
    )
}

fn refusal() -> impl Strategy<Value = Refusal> {
    prop_oneof![
        Just(Refusal::V1Errors),
        Just(Refusal::V1RequestError),
        Just(Refusal::V2Problem),
        Just(Refusal::Html),
    ]
}

fn form() -> impl Strategy<Value = ApiForm> {
    prop_oneof![Just(ApiForm::V1_1), Just(ApiForm::V2)]
}

/// Any server: every fault, refusals, any processing script, short expiries.
fn any_case() -> impl Strategy<Value = Case> {
    (
        (form(), 1u64..=300, 1u64..=64, 1u32..=4),
        (0u32..=5, prop::bool::weighted(0.85), 0u32..=40, 1u32..=5),
        prop::option::weighted(0.2, (0u32..40, refusal())),
        (processing(), 1u32..=8),
        prop_oneof![4 => Just(86_400u64), 1 => 5u64..=120],
        any::<u64>(),
    )
        .prop_map(
            |(
                (form, total, segment, in_flight),
                (max_attempts, retry_transport, fault_rate, burst),
                refusal,
                (processing, max_status_polls),
                expires_after_secs,
                seed,
            )| Case {
                form,
                total,
                segment,
                in_flight,
                max_attempts,
                retry_transport,
                fault_rate,
                burst,
                healing: false,
                refusal,
                processing,
                max_status_polls,
                expires_after_secs,
                seed,
            },
        )
}

/// A server that heals: faults stay within the retry budget, no refusal, processing ends
/// `succeeded` within the poll bound, a long expiry. The upload must succeed.
fn healing_case() -> impl Strategy<Value = Case> {
    (any_case(), 1u32..=5, prop::collection::vec(step(), 0..=6)).prop_map(
        |(mut case, max_attempts, steps)| {
            case.healing = true;
            case.max_attempts = max_attempts;
            case.retry_transport = true;
            case.refusal = None;
            case.max_status_polls = case.max_status_polls.max(steps.len() as u32);
            case.processing = Some(Processing {
                steps,
                end: End::Succeeded,
            });
            case.expires_after_secs = 86_400;
            case
        },
    )
}

// ---------------------------------------------------------------------------------------------
// The simulated media server
// ---------------------------------------------------------------------------------------------

/// splitmix64: the server's and the driver's randomness, from the case's seed.
struct SimRng(u64);

impl SimRng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        if n == 0 { 0 } else { self.next() % n }
    }

    fn percent(&mut self, p: u32) -> bool {
        self.below(100) < u64::from(p)
    }
}

#[derive(Default)]
struct SimMedia {
    segments: BTreeMap<u32, Vec<u8>>,
    finalized: bool,
    /// The processing step last reported.
    step: usize,
}

/// What the server answered, as the driver must hand it in.
enum Reply {
    Response(http::Response<Bytes>),
    Failure(TransportFailure),
}

/// What the driver learns from an answer besides the answer itself.
#[derive(Default)]
struct Effects {
    /// No new request may start before this long after now (M4, M5).
    min_wait: Duration,
    /// The error this answer must end the upload with, when it is final.
    refusal: Option<Error>,
    /// Processing ended in failure with this error (M4).
    processing_failed: Option<Error>,
}

struct SimServer {
    case: Case,
    source: Vec<u8>,
    plan: SegmentPlan,
    rng: SimRng,
    medias: HashMap<String, SimMedia>,
    next_media: u64,
    requests: u32,
    /// Faults since the last 2xx answer delivered.
    faults_in_row: u32,
    burst_left: u32,
    violations: Vec<String>,
}

impl SimServer {
    fn new(case: &Case, source: Vec<u8>, plan: SegmentPlan) -> Self {
        SimServer {
            case: case.clone(),
            source,
            plan,
            rng: SimRng(case.seed ^ 0xA5A5_5A5A),
            medias: HashMap::new(),
            next_media: 0,
            requests: 0,
            faults_in_row: 0,
            burst_left: 0,
            violations: Vec::new(),
        }
    }

    fn violation(&mut self, what: String) -> Reply {
        self.violations.push(what);
        Reply::Response(json_response(400, "{}", &[]))
    }

    /// Answers one request at time `elapsed` since t0.
    fn handle(&mut self, send: &Transmit, elapsed: Duration) -> (Reply, Effects) {
        let number = self.requests;
        self.requests += 1;
        let mut effects = Effects::default();
        if self.case.refusal.is_some_and(|(at, _)| at == number) {
            let shape = self.case.refusal.map(|(_, s)| s).unwrap_or(Refusal::Html);
            let (response, error) = refusal_response(shape);
            effects.refusal = Some(error);
            return (Reply::Response(response), effects);
        }
        let may_fault = !self.case.healing || self.faults_in_row < self.case.max_attempts;
        let fault = may_fault && (self.burst_left > 0 || self.rng.percent(self.case.fault_rate));
        if fault {
            if self.burst_left == 0 {
                self.burst_left = self.rng.below(u64::from(self.case.burst)) as u32 + 1;
            }
            self.burst_left -= 1;
            self.faults_in_row += 1;
            return self.fault(send, elapsed, effects);
        }
        self.burst_left = 0;
        let reply = self.honest(send, elapsed, &mut effects);
        if let Reply::Response(r) = &reply
            && r.status().is_success()
        {
            self.faults_in_row = 0;
        }
        (reply, effects)
    }

    fn fault(
        &mut self,
        send: &Transmit,
        elapsed: Duration,
        mut effects: Effects,
    ) -> (Reply, Effects) {
        let date = date_at(elapsed);
        match self.rng.below(9) {
            0 => (Reply::Failure(TransportFailure::Connect), effects),
            1 => {
                // The server acts on the request; the answer is lost.
                let mut ignored = Effects::default();
                let _ = self.honest(send, elapsed, &mut ignored);
                (Reply::Failure(TransportFailure::Reset), effects)
            }
            2 => (Reply::Failure(TransportFailure::Timeout), effects),
            3 => {
                // 429 with the window's reset, measured against Date (M5).
                let wait = self.rng.below(60);
                let now = EPOCH_AT_T0 + elapsed.as_secs();
                let reset = (now + wait).to_string();
                effects.min_wait = Duration::from_secs(wait);
                let headers = [
                    ("date", date.as_str()),
                    ("x-rate-limit-reset", reset.as_str()),
                ];
                let body = r#"{"errors":[{"code":88,"message":"Rate limit exceeded"}]}"#;
                (Reply::Response(json_response(429, body, &headers)), effects)
            }
            4 => {
                let wait = self.rng.below(45);
                effects.min_wait = Duration::from_secs(wait);
                let after = wait.to_string();
                let headers = [("retry-after", after.as_str())];
                (Reply::Response(json_response(429, "", &headers)), effects)
            }
            5 => (Reply::Response(json_response(408, "", &[])), effects),
            n => {
                let status = [500, 502, 503, 504][(n as usize - 6).min(3)];
                let body = r#"{"errors":[{"code":131,"message":"Internal error"}]}"#;
                (Reply::Response(json_response(status, body, &[])), effects)
            }
        }
    }

    fn honest(&mut self, send: &Transmit, elapsed: Duration, effects: &mut Effects) -> Reply {
        if send
            .request
            .headers()
            .get("authorization")
            .map(|v| v.as_bytes())
            != Some(AUTH.as_bytes())
        {
            return self.violation("a request without the caller's Authorization".into());
        }
        let length = send.body.len().to_string();
        if send.request.method() == Method::POST
            && send
                .request
                .headers()
                .get("content-length")
                .map(|v| v.as_bytes())
                != Some(length.as_bytes())
        {
            return self.violation("Content-Length is not the body's length".into());
        }
        let uri = send.request.uri().to_string();
        let base = match self.case.form {
            ApiForm::V1_1 => V1,
            ApiForm::V2 => V2,
        };
        let path = uri.strip_prefix(base).unwrap_or("<elsewhere>").to_owned();
        match (self.case.form, send.request.method().clone(), path.as_str()) {
            (ApiForm::V1_1, Method::POST, "") => {
                let content_type = header(send, "content-type").unwrap_or_default();
                if content_type.starts_with("multipart/form-data") {
                    self.append(send, None)
                } else {
                    let fields = parse_form(&send.body.prefix);
                    match fields.get("command").map(String::as_str) {
                        Some("INIT") => self.init(&fields, elapsed),
                        Some("FINALIZE") => {
                            let id = fields.get("media_id").cloned().unwrap_or_default();
                            self.finalize(&id, effects)
                        }
                        other => self.violation(format!("unknown v1.1 command {other:?}")),
                    }
                }
            }
            (ApiForm::V2, Method::POST, "/initialize") => {
                let json: serde_json::Value =
                    serde_json::from_slice(&send.body.prefix).unwrap_or_default();
                let mut fields = HashMap::new();
                if let Some(t) = json.get("total_bytes").and_then(|v| v.as_u64()) {
                    fields.insert("total_bytes".to_owned(), t.to_string());
                }
                if let Some(t) = json.get("media_type").and_then(|v| v.as_str()) {
                    fields.insert("media_type".to_owned(), t.to_owned());
                }
                self.init(&fields, elapsed)
            }
            (ApiForm::V2, Method::POST, rest) if rest.ends_with("/append") => {
                let id = rest
                    .trim_start_matches('/')
                    .trim_end_matches("/append")
                    .to_owned();
                self.append(send, Some(id))
            }
            (ApiForm::V2, Method::POST, rest) if rest.ends_with("/finalize") => {
                let id = rest
                    .trim_start_matches('/')
                    .trim_end_matches("/finalize")
                    .to_owned();
                if !send.body.is_empty() {
                    return self.violation("v2 FINALIZE with a body".into());
                }
                self.finalize(&id, effects)
            }
            (_, Method::GET, query) if query.starts_with("?command=STATUS&media_id=") => {
                let id = query
                    .trim_start_matches("?command=STATUS&media_id=")
                    .to_owned();
                self.status(&id, effects)
            }
            (form, method, path) => self.violation(format!("{form:?} {method} {path}")),
        }
    }

    fn init(&mut self, fields: &HashMap<String, String>, elapsed: Duration) -> Reply {
        let total = self.plan.total().to_string();
        if fields.get("total_bytes") != Some(&total)
            || fields.get("media_type").map(String::as_str) != Some("video/mp4")
        {
            return self.violation(format!("INIT fields {fields:?}"));
        }
        self.next_media += 1;
        // Ids beyond 2^53, and now and then one holding characters the boundary uses.
        let id = if self.rng.percent(10) {
            format!("resumable-{}", self.next_media)
        } else {
            (1_880_028_106_020_515_840u64 + self.next_media).to_string()
        };
        self.medias.insert(id.clone(), SimMedia::default());
        let expires = self.case.expires_after_secs;
        let body = match self.case.form {
            ApiForm::V1_1 => format!(
                r#"{{"media_id_string":"{id}","media_key":"7_{id}","expires_after_secs":{expires}}}"#
            ),
            ApiForm::V2 => format!(
                r#"{{"data":{{"id":"{id}","media_key":"7_{id}","expires_after_secs":{expires}}}}}"#
            ),
        };
        let date = date_at(elapsed);
        Reply::Response(json_response(200, &body, &[("date", date.as_str())]))
    }

    fn append(&mut self, send: &Transmit, path_id: Option<String>) -> Reply {
        let parts = match multipart(send, &self.source) {
            Ok(parts) => parts,
            Err(e) => return self.violation(format!("APPEND body does not parse: {e}")),
        };
        let field = |name: &str| {
            parts
                .iter()
                .find(|(n, file, _)| n == name && !*file)
                .map(|(_, _, b)| String::from_utf8_lossy(b).into_owned())
        };
        let names: Vec<&str> = parts.iter().map(|(n, _, _)| n.as_str()).collect();
        let (expected_names, id): (&[&str], Option<String>) = match self.case.form {
            ApiForm::V1_1 => (
                &["command", "media_id", "segment_index", "media"],
                field("media_id"),
            ),
            ApiForm::V2 => (&["segment_index", "media"], path_id),
        };
        if names != expected_names {
            return self.violation(format!("APPEND fields {names:?}"));
        }
        if self.case.form == ApiForm::V1_1 && field("command").as_deref() != Some("APPEND") {
            return self.violation("APPEND without command=APPEND".into());
        }
        let Some(index) = field("segment_index").and_then(|s| s.parse::<u32>().ok()) else {
            return self.violation("segment_index is not a number".into());
        };
        if index > 999 || index >= self.plan.count() {
            return self.violation(format!("segment_index {index} out of range (M2)"));
        }
        let media = parts
            .iter()
            .find(|(n, file, _)| n == "media" && *file)
            .map(|(_, _, b)| b.clone())
            .unwrap_or_default();
        let range = self.plan.range(index).unwrap_or(0..0);
        if media.len() as u64 > MAX_SEGMENT_SIZE
            || media != self.source[range.start as usize..range.end as usize]
            || send.body.source != range
        {
            return self.violation(format!("segment {index} carries the wrong bytes"));
        }
        let Some(media_state) = id.as_ref().and_then(|id| self.medias.get_mut(id)) else {
            return self.violation(format!("APPEND to an unknown media id {id:?}"));
        };
        if media_state.finalized {
            return self.violation("APPEND after FINALIZE".into());
        }
        media_state.segments.insert(index, media);
        // M2: any 2xx, with any body or none.
        let (status, body) = match self.rng.below(4) {
            0 => (204, String::new()),
            1 => (200, "<html>ok</html>".to_owned()),
            2 => (202, r#"{"data":{"expires_at":1700086400}}"#.to_owned()),
            _ => (201, "\u{0}\u{1}garbage".to_owned()),
        };
        Reply::Response(json_response(status, &body, &[]))
    }

    fn processing_json(&self, step: usize, effects: &mut Effects) -> Option<String> {
        let processing = self.case.processing.as_ref()?;
        let json = match processing.steps.get(step) {
            Some(s) => {
                let state = if s.in_progress {
                    "in_progress"
                } else {
                    "pending"
                };
                effects.min_wait = Duration::from_secs(s.check_after.unwrap_or(5));
                match s.check_after {
                    Some(c) => format!(
                        r#"{{"state":"{state}","check_after_secs":{c},"progress_percent":{}}}"#,
                        step * 10
                    ),
                    None => format!(r#"{{"state":"{state}"}}"#),
                }
            }
            None => {
                let error = r#""error":{"code":1,"name":"InvalidMedia","message":"Unsupported"}"#;
                let failed = Error::ProcessingFailed {
                    code: Some(1),
                    name: Some("InvalidMedia".into()),
                    message: Some("Unsupported".into()),
                };
                match processing.end {
                    End::Succeeded => r#"{"state":"succeeded","progress_percent":100}"#.to_owned(),
                    End::Failed => {
                        effects.processing_failed = Some(Error::ProcessingFailed {
                            code: None,
                            name: None,
                            message: None,
                        });
                        r#"{"state":"failed"}"#.to_owned()
                    }
                    End::ErrorInProgress => {
                        effects.processing_failed = Some(failed);
                        format!(r#"{{"state":"in_progress","check_after_secs":5,{error}}}"#)
                    }
                    End::ErrorFailed => {
                        effects.processing_failed = Some(failed);
                        format!(r#"{{"state":"failed",{error}}}"#)
                    }
                }
            }
        };
        Some(json)
    }

    fn media_answer(&self, id: &str, processing: Option<String>) -> String {
        let total = self.plan.total();
        let info = processing
            .map(|p| format!(r#","processing_info":{p}"#))
            .unwrap_or_default();
        let media = match self.case.form {
            ApiForm::V1_1 => format!(r#"{{"media_id_string":"{id}","size":{total}{info}}}"#),
            ApiForm::V2 => format!(r#"{{"id":"{id}","size":{total}{info}}}"#),
        };
        match self.case.form {
            ApiForm::V1_1 => media,
            ApiForm::V2 => format!(r#"{{"data":{media}}}"#),
        }
    }

    fn finalize(&mut self, id: &str, effects: &mut Effects) -> Reply {
        let count = self.plan.count();
        let Some(media) = self.medias.get_mut(id) else {
            return self.violation(format!("FINALIZE of an unknown media id {id}"));
        };
        let complete = media.segments.keys().copied().eq(0..count);
        if !complete {
            return self.violation("FINALIZE before every segment arrived (M3)".into());
        }
        media.finalized = true;
        let step = media.step;
        let processing = self.processing_json(step, effects);
        Reply::Response(json_response(200, &self.media_answer(id, processing), &[]))
    }

    fn status(&mut self, id: &str, effects: &mut Effects) -> Reply {
        let Some(media) = self.medias.get_mut(id) else {
            return self.violation(format!("STATUS of an unknown media id {id}"));
        };
        if !media.finalized || self.case.processing.is_none() {
            return self.violation("STATUS without processing (M4)".into());
        }
        media.step += 1;
        let step = media.step;
        let processing = self.processing_json(step, effects);
        Reply::Response(json_response(200, &self.media_answer(id, processing), &[]))
    }
}

fn refusal_response(shape: Refusal) -> (http::Response<Bytes>, Error) {
    match shape {
        Refusal::V1Errors => (
            json_response(
                400,
                r#"{"errors":[{"code":324,"message":"Bad media."}]}"#,
                &[],
            ),
            Error::Api {
                status: StatusCode::BAD_REQUEST,
                code: Some(324),
                problem: None,
                message: Some("Bad media.".into()),
            },
        ),
        Refusal::V1RequestError => (
            json_response(
                400,
                r#"{"request":"/1.1/media/upload.json","error":"Invalid segment."}"#,
                &[],
            ),
            Error::Api {
                status: StatusCode::BAD_REQUEST,
                code: None,
                problem: None,
                message: Some("Invalid segment.".into()),
            },
        ),
        Refusal::V2Problem => (
            json_response(
                403,
                r#"{"type":"https://api.x.com/2/problems/forbidden","title":"Forbidden","detail":"Not allowed.","status":403}"#,
                &[],
            ),
            Error::Api {
                status: StatusCode::FORBIDDEN,
                code: None,
                problem: Some("https://api.x.com/2/problems/forbidden".into()),
                message: Some("Not allowed.".into()),
            },
        ),
        Refusal::Html => (
            json_response(401, "<html><body>denied</body></html>", &[]),
            Error::Server {
                status: StatusCode::UNAUTHORIZED,
                message: None,
            },
        ),
    }
}

fn json_response(status: u16, body: &str, headers: &[(&str, &str)]) -> http::Response<Bytes> {
    let mut b = http::Response::builder().status(status);
    for (k, v) in headers {
        b = b.header(*k, *v);
    }
    b.body(Bytes::copy_from_slice(body.as_bytes()))
        .expect("a valid test response")
}

fn date_at(elapsed: Duration) -> String {
    httpdate::fmt_http_date(UNIX_EPOCH + Duration::from_secs(EPOCH_AT_T0) + elapsed)
}

fn header<'a>(send: &'a Transmit, name: &str) -> Option<&'a str> {
    send.request
        .headers()
        .get(name)
        .and_then(|v| v.to_str().ok())
}

fn parse_form(body: &[u8]) -> HashMap<String, String> {
    let text = String::from_utf8_lossy(body);
    text.split('&')
        .filter_map(|pair| pair.split_once('='))
        .map(|(k, v)| (percent_decode(k), percent_decode(v)))
        .collect()
}

fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while let Some(&b) = bytes.get(i) {
        let escaped = bytes
            .get(i + 1..i + 3)
            .and_then(|hex| std::str::from_utf8(hex).ok())
            .and_then(|hex| u8::from_str_radix(hex, 16).ok());
        match (b, escaped) {
            (b'%', Some(decoded)) => {
                out.push(decoded);
                i += 3;
            }
            (b'+', _) => {
                out.push(b' ');
                i += 1;
            }
            (b, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Parses an APPEND's assembled body with `multer`: (name, is a file, bytes) per part.
fn multipart(send: &Transmit, source: &[u8]) -> Result<Vec<(String, bool, Vec<u8>)>, String> {
    let content_type = header(send, "content-type").ok_or("no Content-Type")?;
    let boundary = multer::parse_boundary(content_type).map_err(|e| e.to_string())?;
    let r = &send.body.source;
    let mut body = send.body.prefix.to_vec();
    body.extend_from_slice(
        source
            .get(r.start as usize..r.end as usize)
            .ok_or("range")?,
    );
    body.extend_from_slice(&send.body.suffix);
    let body = Bytes::from(body);
    let stream = futures::stream::once(async move { Ok::<Bytes, Infallible>(body) });
    let mut parts = multer::Multipart::new(stream, boundary);
    futures::executor::block_on(async {
        let mut out = Vec::new();
        while let Some(field) = parts.next_field().await.map_err(|e| e.to_string())? {
            let name = field.name().unwrap_or_default().to_owned();
            let file = field.file_name().is_some();
            let bytes = field.bytes().await.map_err(|e| e.to_string())?;
            out.push((name, file, bytes.to_vec()));
        }
        Ok(out)
    })
}

// ---------------------------------------------------------------------------------------------
// The driver
// ---------------------------------------------------------------------------------------------

fn upload_for(case: &Case) -> MediaUpload {
    let api = match case.form {
        ApiForm::V1_1 => ApiVersion::V1_1 {
            endpoint: V1.parse().expect("test URI"),
        },
        ApiForm::V2 => ApiVersion::V2 {
            base: V2.parse().expect("test URI"),
        },
    };
    let mut config = MediaConfig::new(api, case.total, "video/mp4");
    config.segment_size = case.segment;
    config.max_in_flight = case.in_flight;
    config.max_status_polls = case.max_status_polls;
    config.boundary_seed = case.seed;
    config
        .headers
        .insert("authorization", HeaderValue::from_static(AUTH));
    let mut retry = RetryPolicy::default().with_seed(case.seed);
    retry.max_attempts = case.max_attempts;
    retry.retry_transport = case.retry_transport;
    config.retry = retry;
    MediaUpload::new(config).expect("a valid case")
}

fn source(len: u64, seed: u64) -> Vec<u8> {
    let mut rng = SimRng(seed);
    (0..len).map(|_| rng.next() as u8).collect()
}

/// Runs one case to its end, checking (1)–(8); returns the outcome.
fn run(case: &Case) -> Result<Result<MediaCompletion, Error>, TestCaseError> {
    let source = source(case.total, case.seed);
    let mut upload = upload_for(case);
    let plan = upload.plan();
    let mut server = SimServer::new(case, source.clone(), plan);
    let mut rng = SimRng(case.seed ^ 0x5EED);
    let t0 = Instant::now();
    let mut now = t0;
    let mut outstanding: Vec<Transmit> = Vec::new();
    let mut not_before = t0;
    let mut requests = 0u64;
    let mut successes = 0u64;
    let mut failures_in_row = 0u32;
    let mut last_failure: Option<RetryCause> = None;
    let mut last_transport: Option<TransportFailure> = None;
    let mut refusal: Option<Error> = None;
    let mut processing_failed: Option<Error> = None;
    let mut iterations = 0u64;

    let outcome = loop {
        iterations += 1;
        prop_assert!(iterations < HARD_CAP, "runaway loop");
        let action = upload.poll_action(now);
        let answer_one = match action {
            Action::Done(outcome) => break outcome,
            Action::Read(read) => {
                return Err(TestCaseError::fail(format!("media never reads: {read:?}")));
            }
            // (7) Saturated, or nothing new is due: Idle only with requests in flight, and
            // the same on a re-poll.
            Action::Idle => {
                prop_assert!(!outstanding.is_empty(), "Idle with nothing in flight");
                prop_assert!(
                    matches!(upload.poll_action(now), Action::Idle),
                    "re-poll changed"
                );
                true
            }
            Action::Send(send) => {
                // (7) Each request is handed out once.
                prop_assert!(
                    !outstanding.iter().any(|s| s.id == send.id),
                    "request {:?} handed out again",
                    send.id
                );
                {
                    // (6) No new request before a wait the server asked for has passed.
                    prop_assert!(now >= not_before, "a request before its wait ended");
                    prop_assert!(outstanding.len() < case.in_flight as usize);
                    requests += 1;
                    check_send(&send, &plan, &source)?;
                    outstanding.push(send);
                    false
                }
            }
            Action::Wait(until) => {
                prop_assert!(until > now, "a Wait in the past");
                if outstanding.is_empty() || rng.below(3) == 0 {
                    now = until;
                    false
                } else {
                    true
                }
            }
        };
        if !answer_one || outstanding.is_empty() {
            continue;
        }
        let send = outstanding.remove(rng.below(outstanding.len() as u64) as usize);
        now += Duration::from_millis(rng.below(1500));
        let (reply, effects) = server.handle(&send, now - t0);
        if let Some(e) = effects.refusal {
            refusal = Some(e);
        }
        if let Some(e) = effects.processing_failed {
            processing_failed = Some(e);
        }
        match reply {
            Reply::Response(response) => {
                let status = response.status();
                if status.is_success() {
                    successes += 1;
                    failures_in_row = 0;
                    not_before = not_before.max(now + effects.min_wait);
                } else if status.as_u16() == 429
                    || status.as_u16() == 408
                    || status.is_server_error()
                {
                    failures_in_row += 1;
                    last_failure = Some(RetryCause::Status(status));
                    // The first backoff is 1 s; a 429's reset or Retry-After may be longer.
                    not_before = not_before.max(now + effects.min_wait.max(Duration::from_secs(1)));
                }
                prop_assert_eq!(upload.handle_response(now, send.id, response), Ok(()));
            }
            Reply::Failure(failure) => {
                failures_in_row += 1;
                last_failure = Some(RetryCause::Transport(failure));
                last_transport = Some(failure);
                not_before = not_before.max(now + Duration::from_secs(1));
                prop_assert_eq!(upload.handle_failure(now, send.id, failure), Ok(()));
            }
        }
    };

    prop_assert!(
        server.violations.is_empty(),
        "the server saw violations: {:?}",
        server.violations
    );
    // (3) Bounded work.
    let a = u64::from(case.max_attempts) + 1;
    prop_assert!(successes <= 2 + u64::from(plan.count()) + u64::from(case.max_status_polls));
    prop_assert!(
        requests <= successes + (successes + 1) * a + u64::from(case.in_flight),
        "{requests} requests for {successes} successes"
    );

    // (8) Sticky.
    match upload.poll_action(now) {
        Action::Done(again) => prop_assert_eq!(&again, &outcome),
        other => prop_assert!(false, "after Done: {other:?}"),
    }
    let late = resumable_core::RequestId::new(0);
    prop_assert_eq!(
        upload.handle_failure(now, late, TransportFailure::Reset),
        Err(UsageError::Finished)
    );

    match &outcome {
        Ok(done) => {
            // (1) The server holds exactly the source, and processing succeeded.
            let media = server.medias.get(&done.media_id);
            prop_assert!(media.is_some(), "Ok for an unknown media id");
            let media = media.expect("checked");
            prop_assert!(media.finalized);
            let mut joined = Vec::new();
            for (expected, (index, bytes)) in media.segments.iter().enumerate() {
                prop_assert_eq!(*index as usize, expected);
                prop_assert_eq!(
                    Some(joined.len() as u64..joined.len() as u64 + bytes.len() as u64),
                    plan.range(*index)
                );
                joined.extend_from_slice(bytes);
            }
            prop_assert!(joined == source, "the server's segments are not the source");
            prop_assert_eq!(done.size, case.total);
            prop_assert_eq!(upload.persisted(), case.total);
            match &case.processing {
                None => prop_assert_eq!(&done.processing, &None),
                Some(p) => {
                    prop_assert_eq!(p.end, End::Succeeded);
                    let state = done.processing.as_ref().map(|i| i.state);
                    prop_assert_eq!(state, Some(ProcessingState::Succeeded));
                }
            }
        }
        // (2) The typed error the exchange calls for.
        Err(e @ (Error::Api { .. } | Error::Server { .. })) => {
            prop_assert_eq!(
                Some(e),
                refusal.as_ref(),
                "a refusal the server did not send"
            );
        }
        Err(e @ Error::ProcessingFailed { .. }) => {
            prop_assert_eq!(Some(e), processing_failed.as_ref());
        }
        Err(Error::ProcessingUnfinished { polls }) => {
            let steps = case.processing.as_ref().map_or(0, |p| p.steps.len());
            prop_assert_eq!(*polls, case.max_status_polls);
            prop_assert!((case.max_status_polls as usize) < steps);
        }
        Err(Error::RetriesExhausted { attempts, last, .. }) => {
            prop_assert_eq!(*attempts, case.max_attempts + 1);
            prop_assert_eq!(failures_in_row, *attempts);
            prop_assert_eq!(Some(*last), last_failure);
        }
        Err(Error::Transport { failure, .. }) => {
            prop_assert!(!case.retry_transport);
            prop_assert_eq!(Some(*failure), last_transport);
        }
        Err(Error::MediaExpired { after_secs }) => {
            prop_assert_eq!(*after_secs, case.expires_after_secs);
            prop_assert!(case.expires_after_secs <= 120, "expired with a day to go");
        }
        Err(other) => prop_assert!(false, "an honest server caused {other:?}"),
    }
    Ok(outcome)
}

/// (5) What every request must look like.
fn check_send(send: &Transmit, plan: &SegmentPlan, source: &[u8]) -> Result<(), TestCaseError> {
    if send.body.source.is_empty() {
        return Ok(());
    }
    let range = send.body.source.clone();
    let index = (range.start / plan.segment_size()) as u32;
    prop_assert!(index <= 999 && index < plan.count());
    prop_assert_eq!(Some(range.clone()), plan.range(index));
    prop_assert!(range.end - range.start <= MAX_SEGMENT_SIZE);
    let parts = multipart(send, source).map_err(TestCaseError::fail)?;
    let index_field = parts
        .iter()
        .find(|(n, _, _)| n == "segment_index")
        .map(|(_, _, b)| b.clone());
    prop_assert_eq!(index_field, Some(index.to_string().into_bytes()));
    Ok(())
}

/// Bodies for the arbitrary-answers property: every shape the parsers meet, broken ones too.
const BODIES: &[&str] = &[
    "",
    "null",
    "[]",
    "{}",
    "\u{0}\u{ff}garbage",
    r#"{"media_id_string":"18800281060205158401234567890"}"#,
    r#"{"media_id_string":"42","media_key":"7_42","expires_after_secs":0}"#,
    r#"{"media_id":42,"expires_after_secs":18446744073709551615}"#,
    r#"{"media_id_string":"../../etc","size":1}"#,
    r#"{"data":{"id":"42","expires_after_secs":-1}}"#,
    r#"{"data":{"id":42,"size":"12"}}"#,
    r#"{"data":{"processing_info":{"state":"pending","check_after_secs":18446744073709551615}}}"#,
    r#"{"processing_info":{"state":"in_progress","check_after_secs":-3,"progress_percent":900}}"#,
    r#"{"processing_info":{"state":"succeeded"}}"#,
    r#"{"processing_info":{"state":"teleported"}}"#,
    r#"{"processing_info":{"error":{"code":"x","name":7}}}"#,
    r#"{"processing_info":[1,2]}"#,
    r#"{"data":{"processing_info":{"state":"failed","error":null}}}"#,
    r#"{"errors":[{"code":324,"message":"Bad"}]}"#,
    r#"{"errors":"not a list"}"#,
    r#"{"request":"/x","error":{"nested":true}}"#,
    r#"{"type":7,"title":["t"],"detail":"d","status":"400"}"#,
    "[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[",
];

/// Headers for the arbitrary-answers property.
const HEADERS: &[&[(&str, &str)]] = &[
    &[],
    &[("retry-after", "3")],
    &[("retry-after", "99999999999999999999")],
    &[
        ("x-rate-limit-reset", "4000000000"),
        ("date", "Wed, 21 Oct 2015 07:28:00 GMT"),
    ],
    &[
        ("x-rate-limit-reset", "1"),
        ("date", "Wed, 21 Oct 2015 07:28:00 GMT"),
    ],
    &[("x-rate-limit-reset", "-5"), ("date", "yesterday")],
    &[("date", "Wed, 21 Oct 2015 07:28:00 GMT")],
];

/// One answer of the arbitrary-answers property: a transport failure, or a status, a body
/// and headers from the pools above.
#[derive(Clone, Copy, Debug)]
struct Arbitrary {
    failure: bool,
    status: u16,
    body: usize,
    headers: usize,
}

fn arbitrary_answer() -> impl Strategy<Value = Arbitrary> {
    let status = prop_oneof![
        4 => prop::sample::select(vec![200u16, 201, 202, 204]),
        2 => prop::sample::select(vec![408u16, 429, 500, 503]),
        1 => prop::sample::select(vec![100u16, 302, 308, 400, 401, 404, 410, 499]),
    ];
    (
        prop::bool::weighted(0.1),
        status,
        0..BODIES.len(),
        0..HEADERS.len(),
    )
        .prop_map(|(failure, status, body, headers)| Arbitrary {
            failure,
            status,
            body,
            headers,
        })
}

/// Drives an upload against `answers` (repeated as needed): it must end, within the bound of
/// (3), with any outcome, never a panic, and stay finished (8).
fn run_arbitrary(case: &Case, answers: &[Arbitrary]) -> Result<(), TestCaseError> {
    let mut upload = upload_for(case);
    let plan = upload.plan();
    let mut rng = SimRng(case.seed);
    let mut now = Instant::now();
    let mut outstanding: Vec<Transmit> = Vec::new();
    let (mut requests, mut successes, mut iterations) = (0u64, 0u64, 0u64);
    let outcome = loop {
        iterations += 1;
        prop_assert!(iterations < HARD_CAP, "runaway loop");
        match upload.poll_action(now) {
            Action::Done(outcome) => break outcome,
            Action::Read(_) => prop_assert!(false, "media never reads"),
            Action::Wait(until) => {
                prop_assert!(until > now);
                if outstanding.is_empty() {
                    now = until;
                    continue;
                }
            }
            Action::Idle => prop_assert!(!outstanding.is_empty(), "Idle with nothing in flight"),
            Action::Send(send) => {
                prop_assert!(
                    !outstanding.iter().any(|s| s.id == send.id),
                    "handed out twice"
                );
                requests += 1;
                outstanding.push(send);
                continue;
            }
        }
        let send = outstanding.remove(rng.below(outstanding.len() as u64) as usize);
        let answer = answers[(requests as usize + outstanding.len()) % answers.len()];
        if answer.failure {
            prop_assert_eq!(
                upload.handle_failure(now, send.id, TransportFailure::Other),
                Ok(())
            );
            continue;
        }
        if (200..300).contains(&answer.status) {
            successes += 1;
        }
        let response = json_response(answer.status, BODIES[answer.body], HEADERS[answer.headers]);
        prop_assert_eq!(upload.handle_response(now, send.id, response), Ok(()));
    };
    let a = u64::from(case.max_attempts) + 1;
    let p = successes.min(2 + u64::from(plan.count()) + u64::from(case.max_status_polls));
    prop_assert!(requests <= p + (p + 1) * a + u64::from(case.in_flight));
    match upload.poll_action(now) {
        Action::Done(again) => prop_assert_eq!(again, outcome),
        other => prop_assert!(false, "after Done: {other:?}"),
    }
    Ok(())
}

fn config() -> ProptestConfig {
    ProptestConfig {
        cases: 2000,
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

proptest! {
    #![proptest_config(config())]

    /// (1)–(8) against a server with every fault it may have (M2–M5), in both forms (M6),
    /// with 1–4 APPENDs in flight.
    #[test]
    fn random_server_gets_the_source_or_a_typed_error(case in any_case()) {
        let _outcome = run(&case)?;
    }

    /// Liveness: faults within the retry budget, no refusal, processing that succeeds within
    /// the poll bound, a long expiry: the upload must succeed, with (1)–(8).
    #[test]
    fn healed_server_gets_the_whole_source(case in healing_case()) {
        let outcome = run(&case)?;
        prop_assert!(outcome.is_ok(), "gave up on a server that healed: {:?}", outcome);
    }

    /// No panic on any answer: arbitrary statuses, bodies (broken JSON, wrong types, huge
    /// numbers, deep nesting) and headers end the upload with some outcome, within (3).
    #[test]
    fn arbitrary_answers_never_panic(
        case in any_case(),
        answers in prop::collection::vec(arbitrary_answer(), 1..40),
    ) {
        run_arbitrary(&case, &answers)?;
    }

    /// M2: every plan is either within bounds and covers the file exactly, or the typed
    /// usage error the rules call for.
    #[test]
    fn segment_plans_are_within_bounds(
        total in prop_oneof![1u64..=10_000, 1u64..=6_000_000_000, Just(5_000_000_000u64), Just(5_000_000_001u64)],
        preferred in prop_oneof![1u64..=5_000, 1u64..=6_000_000, Just(MAX_SEGMENT_SIZE)],
    ) {
        match SegmentPlan::new(total, preferred) {
            Ok(plan) => {
                let size = plan.segment_size();
                prop_assert!(preferred <= MAX_SEGMENT_SIZE);
                prop_assert!(size >= preferred && size <= MAX_SEGMENT_SIZE);
                prop_assert!(size >= total.div_ceil(1000));
                prop_assert!(size == preferred || size == total.div_ceil(1000));
                prop_assert!(plan.count() >= 1 && plan.count() <= 1000);
                let last = plan.range(plan.count() - 1).expect("a last segment");
                prop_assert_eq!(last.end, total);
                prop_assert!(last.end - last.start >= 1 && last.end - last.start <= size);
                prop_assert_eq!(plan.range(0).map(|r| r.start), Some(0));
                prop_assert_eq!(plan.range(plan.count()), None);
            }
            Err(UsageError::SourceTooLarge { total: t, max }) => {
                prop_assert_eq!(t, total);
                prop_assert_eq!(max, 5_000_000_000);
                prop_assert!(total > 5_000_000_000);
            }
            Err(UsageError::ChunkSize { size, .. }) => {
                prop_assert_eq!(size, preferred);
                prop_assert!(preferred > MAX_SEGMENT_SIZE);
            }
            Err(other) => prop_assert!(false, "unexpected {other:?}"),
        }
    }
}
