//! Scripted exchanges of the Twitter/X batch compliance job (C1–C3, over G1–G8): each test
//! builds a job, feeds it responses, and asserts the exact requests (method, URI, headers,
//! body) and the outcome. Rule ids from docs/protocols.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Method};
use resumable_core::compliance::{
    CompletedJob, ComplianceConfig, ComplianceJob, ComplianceResumeState, JobError, JobStatus,
    JobType, MIN_POLL_INTERVAL, Phase, SavedPhase,
};
use resumable_core::{
    Action, Error, ProtocolViolation, RequestId, RetryCause, RetryPolicy, Transmit,
    TransportFailure, Upload, UsageError,
};

const ID: &str = "1425543269983784962";
const JOBS: &str = "https://api.x.com/2/compliance/jobs";
const BEARER: &str = "Bearer APP-ONLY-SECRET-TOKEN";
const UPLOAD_URL: &str = "https://storage.googleapis.com/twttr-tweet-compliance/1425543269983784962/submission/ids.txt?X-Goog-Algorithm=GOOG4-RSA-SHA256&X-Goog-Credential=x%40twttr.iam.gserviceaccount.com&X-Goog-Date=20210811T194255Z&X-Goog-Expires=900&X-Goog-SignedHeaders=content-type%3Bhost%3Bx-goog-resumable&X-Goog-Signature=UPLOADSIG0123";
const DOWNLOAD_URL: &str = "https://storage.googleapis.com/twttr-tweet-compliance/1425543269983784962/delivery/results.json?X-Goog-Algorithm=GOOG4-RSA-SHA256&X-Goog-Signature=DOWNLOADSIG4567";
const SESSION: &str =
    "https://storage.googleapis.com/upload/storage/v1/b/twttr/o?upload_id=SESSIONSECRET89";
const CREATED_AT: &str = "2021-08-11T19:42:55.000Z";
const UPLOAD_EXPIRES_AT: &str = "2021-08-11T19:57:55.000Z";
/// The create answer's `Date`: the job's `created_at`, 15 minutes before the upload expires.
const CREATED_DATE: &str = "Wed, 11 Aug 2021 19:42:55 GMT";
/// A `Date` within the upload URL's 15 minutes.
const IN_TIME: &str = "Wed, 11 Aug 2021 19:45:00 GMT";
/// A `Date` past `upload_expires_at`.
const TOO_LATE: &str = "Wed, 11 Aug 2021 19:58:00 GMT";
const KIB256: u64 = 256 * 1024;
const SECRETS: [&str; 4] = [
    "APP-ONLY-SECRET-TOKEN",
    "UPLOADSIG0123",
    "DOWNLOADSIG4567",
    "SESSIONSECRET89",
];

fn source(len: u64) -> Vec<u8> {
    // Newline-separated ids, as the upload carries (C2).
    let mut ids = Vec::new();
    let mut n = 1_000_000_000_000_000_000u64;
    while (ids.len() as u64) < len {
        ids.extend_from_slice(format!("{n}\n").as_bytes());
        n += 7;
    }
    ids.truncate(len as usize);
    ids
}

fn no_jitter() -> RetryPolicy {
    let mut policy = RetryPolicy::default();
    policy.jitter = Duration::ZERO;
    policy
}

fn config(total: u64) -> ComplianceConfig {
    let mut config = ComplianceConfig::new(JobType::Tweets, Some(total));
    config.chunk_size = KIB256;
    config.retry = no_jitter();
    config.fingerprint = "ids.txt|1".into();
    // Stands in for the driver's signer: API requests only.
    config
        .api_headers
        .insert("authorization", HeaderValue::from_static(BEARER));
    config
}

fn job_json(status: &str, resumable: bool) -> String {
    format!(
        r#"{{"data":{{"download_expires_at":"2021-08-18T19:42:55.000Z","status":"{status}","upload_url":"{UPLOAD_URL}","created_at":"{CREATED_AT}","resumable":{resumable},"id":"{ID}","type":"tweets","download_url":"{DOWNLOAD_URL}","upload_expires_at":"{UPLOAD_EXPIRES_AT}"}}}}"#
    )
}

fn response(status: u16, headers: &[(&str, &str)], body: &str) -> http::Response<Bytes> {
    let mut b = http::Response::builder().status(status);
    for (k, v) in headers {
        b = b.header(*k, *v);
    }
    b.body(Bytes::copy_from_slice(body.as_bytes())).unwrap()
}

fn header<'a>(send: &'a Transmit, name: &str) -> Option<&'a str> {
    send.request
        .headers()
        .get(name)
        .map(|v| v.to_str().unwrap())
}

fn header_names(send: &Transmit) -> Vec<&str> {
    let mut names: Vec<&str> = send.request.headers().keys().map(|k| k.as_str()).collect();
    names.sort_unstable();
    names
}

/// A request to the storage host, as the test's GCS saw it.
struct StorageRequest {
    method: Method,
    uri: String,
    headers: HeaderMap,
    source: std::ops::Range<u64>,
}

/// One scripted exchange: the job, its file, a clock the test moves, and a tiny GCS.
struct Exchange {
    job: ComplianceJob,
    source: Vec<u8>,
    now: Instant,
    /// What the GCS session holds.
    stored: Vec<u8>,
    /// Every request the storage host received.
    storage: Vec<StorageRequest>,
    /// Every request id handed out, in order (a `Send` polled again is listed once).
    ids: Vec<RequestId>,
    /// The `Date` the GCS answers carry.
    gcs_date: &'static str,
}

impl Exchange {
    fn new(config: ComplianceConfig) -> Self {
        let source = source(config.total.unwrap());
        Exchange::with(ComplianceJob::new(config).expect("valid job"), source)
    }

    fn with(job: ComplianceJob, source: Vec<u8>) -> Self {
        Exchange {
            job,
            source,
            now: Instant::now(),
            stored: Vec::new(),
            storage: Vec::new(),
            ids: Vec::new(),
            gcs_date: IN_TIME,
        }
    }

    fn poll(&mut self) -> Action<CompletedJob> {
        let action = self.job.poll_action(self.now);
        if let Action::Send(s) = &action
            && self.ids.last() != Some(&s.id)
        {
            assert!(!self.ids.contains(&s.id), "request id {:?} reused", s.id);
            self.ids.push(s.id);
        }
        action
    }

    /// The next request; reads asked for on the way (a resume reads the uploaded prefix
    /// again first, G3) are answered from the file.
    fn send(&mut self) -> Transmit {
        loop {
            match self.poll() {
                Action::Send(s) => return s,
                Action::Read(read) => {
                    let (a, b) = (read.range.start as usize, read.range.end as usize);
                    let bytes = self.source[a..b.min(self.source.len())].to_vec();
                    self.job
                        .handle_read(self.now, read.range.start, &bytes)
                        .unwrap();
                }
                other => panic!("expected a request, got {other:?}"),
            }
        }
    }

    fn wait(&mut self) -> Instant {
        match self.poll() {
            Action::Wait(until) => until,
            other => panic!("expected Wait, got {other:?}"),
        }
    }

    fn done(&mut self) -> Result<CompletedJob, Error> {
        match self.poll() {
            Action::Done(outcome) => outcome,
            other => panic!("expected Done, got {other:?}"),
        }
    }

    fn respond(&mut self, id: RequestId, status: u16, headers: &[(&str, &str)], body: &str) {
        self.job
            .handle_response(self.now, id, response(status, headers, body))
            .expect("response accepted");
    }

    /// Sends the create request and answers it (C1).
    fn created(&mut self, resumable: bool) {
        let create = self.send();
        assert_eq!(create.request.uri(), JOBS);
        self.respond(
            create.id,
            200,
            &[("content-type", "application/json"), ("date", CREATED_DATE)],
            &job_json("created", resumable),
        );
    }

    /// Answers one request to the storage host as GCS would (G1, G4–G6).
    fn answer_storage(&mut self, send: &Transmit) {
        let r = send.body.source.clone();
        self.storage.push(StorageRequest {
            method: send.request.method().clone(),
            uri: send.request.uri().to_string(),
            headers: send.request.headers().clone(),
            source: r.clone(),
        });
        let date = ("date", self.gcs_date);
        if send.request.method() == Method::POST {
            self.respond(send.id, 201, &[("location", SESSION), date], "");
            return;
        }
        let content_range = header(send, "content-range").unwrap_or("").to_owned();
        let total = content_range
            .rsplit('/')
            .next()
            .and_then(|t| t.parse::<u64>().ok());
        if !r.is_empty() {
            assert_eq!(
                r.start,
                self.stored.len() as u64,
                "chunks continue the stored bytes"
            );
            self.stored
                .extend_from_slice(&self.source[r.start as usize..r.end as usize]);
        }
        let held = self.stored.len() as u64;
        if total == Some(held) && held > 0 {
            self.respond(send.id, 200, &[date], "");
        } else if held == 0 {
            self.respond(send.id, 308, &[date], "");
        } else {
            let range = format!("bytes=0-{}", held - 1);
            self.respond(send.id, 308, &[("range", range.as_str()), date], "");
        }
    }

    /// Hands in every read and answers every storage request until the job sends an API
    /// request again; returns that request.
    fn upload_until_api(&mut self) -> Transmit {
        loop {
            match self.poll() {
                Action::Read(read) => {
                    let (a, b) = (read.range.start as usize, read.range.end as usize);
                    let bytes = self.source[a..b.min(self.source.len())].to_vec();
                    self.job
                        .handle_read(self.now, read.range.start, &bytes)
                        .unwrap();
                }
                Action::Send(send) if send.request.uri().host() == Some("api.x.com") => {
                    return send;
                }
                Action::Send(send) => self.answer_storage(&send),
                other => panic!("unexpected action during the upload: {other:?}"),
            }
        }
    }

    fn answer_poll(&mut self, send: &Transmit, status: &str) {
        assert_eq!(send.request.method(), Method::GET);
        assert_eq!(send.request.uri().to_string(), format!("{JOBS}/{ID}"));
        let body = job_json(status, true);
        self.respond(send.id, 200, &[("content-type", "application/json")], &body);
    }
}

fn completed(outcome: Result<CompletedJob, Error>) -> CompletedJob {
    outcome.expect("the job completed")
}

fn job_error(outcome: Result<CompletedJob, Error>) -> JobError {
    match outcome {
        Err(Error::Compliance(e)) => e,
        other => panic!("expected a job error, got {other:?}"),
    }
}

// ---------------------------------------------------------------------------------------------
// C1: creating the job
// ---------------------------------------------------------------------------------------------

// C1: POST /2/compliance/jobs with a JSON body: type, name, resumable; API headers only.
#[test]
fn c1_create_is_a_json_post_with_type_name_and_resumable() {
    let mut c = config(10);
    c.name = Some("my \"job\"".into());
    let mut ex = Exchange::new(c);
    assert_eq!(ex.job.phase(), Phase::Create);
    let create = ex.send();
    assert_eq!(create.request.method(), Method::POST);
    assert_eq!(create.request.uri(), JOBS);
    let body = br#"{"type":"tweets","name":"my \"job\"","resumable":true}"#;
    assert_eq!(&create.body.prefix[..], &body[..]);
    assert!(create.body.source.is_empty() && create.body.suffix.is_empty());
    assert_eq!(header(&create, "content-type"), Some("application/json"));
    let length = body.len().to_string();
    assert_eq!(header(&create, "content-length"), Some(length.as_str()));
    assert_eq!(header(&create, "authorization"), Some(BEARER));
    assert!(create.request.headers()["authorization"].is_sensitive());
    // A request is handed out once: while it is in flight, a poll is Idle.
    assert!(matches!(ex.poll(), Action::Idle));

    // users, no name, a test server's base with a trailing slash.
    let mut c = ComplianceConfig::new(JobType::Users, Some(3));
    c.resumable = false;
    c.api_base = "http://127.0.0.1:8080/".parse().unwrap();
    let mut ex = Exchange::new(c);
    let create = ex.send();
    assert_eq!(
        create.request.uri(),
        "http://127.0.0.1:8080/2/compliance/jobs"
    );
    assert_eq!(
        &create.body.prefix[..],
        br#"{"type":"users","resumable":false}"#
    );
    assert_eq!(header(&create, "authorization"), None);
}

// C1: the answer's fields are required; a missing one is a typed protocol violation.
#[test]
fn c1_missing_fields_are_typed_errors() {
    let cases = [
        ("upload_url", "the job has no usable upload_url"),
        ("download_url", "the job has no usable download_url"),
        ("id", "the job has no usable id"),
        ("upload_expires_at", "the job has no upload_expires_at"),
        ("status", "the job has no known status"),
    ];
    for (field, why) in cases {
        let mut ex = Exchange::new(config(10));
        let create = ex.send();
        let mut v: serde_json::Value = serde_json::from_str(&job_json("created", true)).unwrap();
        v["data"].as_object_mut().unwrap().remove(field);
        ex.respond(create.id, 200, &[], &v.to_string());
        assert_eq!(
            ex.done().unwrap_err(),
            Error::Protocol(ProtocolViolation::MalformedResponse(why)),
            "{field}"
        );
        assert!(ex.job.resume_state().is_none(), "no job, nothing to resume");
    }
    let mut ex = Exchange::new(config(10));
    let create = ex.send();
    ex.respond(
        create.id,
        200,
        &[],
        r#"{"data":{"id":"1","type":"tweets"}}"#,
    );
    assert!(matches!(
        ex.done(),
        Err(Error::Protocol(ProtocolViolation::MalformedResponse(_)))
    ));
    // Not JSON at all.
    let mut ex = Exchange::new(config(10));
    let create = ex.send();
    ex.respond(create.id, 200, &[], "<html>");
    assert_eq!(
        ex.done().unwrap_err(),
        Error::Protocol(ProtocolViolation::MalformedResponse(
            "the job creation answer has no data object (C1)"
        ))
    );
}

// C1, M5: API refusals are Error::Api with the problem's fields; 5xx, 429 and transport
// failures are retried with the same request.
#[test]
fn c1_refusals_are_api_errors_and_failures_are_retried() {
    let mut ex = Exchange::new(config(10));
    let create = ex.send();
    ex.respond(
        create.id,
        401,
        &[],
        r#"{"title":"Unauthorized","type":"about:blank","status":401,"detail":"Unauthorized"}"#,
    );
    assert_eq!(
        ex.done().unwrap_err(),
        Error::Api {
            status: http::StatusCode::UNAUTHORIZED,
            code: None,
            problem: Some("about:blank".into()),
            message: Some("Unauthorized".into()),
        }
    );

    let mut ex = Exchange::new(config(10));
    let first = ex.send();
    ex.job
        .handle_failure(ex.now, first.id, TransportFailure::Reset)
        .unwrap();
    let until = ex.wait();
    assert_eq!(until - ex.now, Duration::from_secs(1));
    ex.now = until;
    let second = ex.send();
    assert_ne!(second.id, first.id);
    assert_eq!(second.body.prefix, first.body.prefix);
    ex.respond(second.id, 503, &[("retry-after", "5")], "");
    let until = ex.wait();
    assert_eq!(until - ex.now, Duration::from_secs(5), "Retry-After wins");
    ex.now = until;
    ex.created(true);
    assert_eq!(ex.job.phase(), Phase::Upload);
    assert_eq!(ex.job.job().unwrap().id, ID);
    assert_eq!(ex.job.stats().retries, 2);
}

// ---------------------------------------------------------------------------------------------
// C2: the upload, through GCS
// ---------------------------------------------------------------------------------------------

// C2, G1, G4, G7: a resumable job's upload is a GCS upload to upload_url: the start carries
// exactly the signed headers and no Authorization, the chunks go to the session, and then the
// job is polled (with Authorization) at once. Request ids never collide.
#[test]
fn c2_resumable_upload_goes_through_gcs_without_credentials() {
    let total = 2 * KIB256 + 1000;
    let mut ex = Exchange::new(config(total));
    ex.created(true);
    let poll = ex.upload_until_api();
    assert_eq!(ex.stored, ex.source, "GCS holds exactly the file");

    let start = &ex.storage[0];
    assert_eq!(start.method, Method::POST);
    assert_eq!(start.uri, UPLOAD_URL);
    let mut names: Vec<&str> = start.headers.keys().map(|k| k.as_str()).collect();
    names.sort_unstable();
    assert_eq!(
        names,
        ["content-length", "content-type", "x-goog-resumable"]
    );
    assert_eq!(start.headers["content-type"], "text/plain");
    assert_eq!(start.headers["content-length"], "0");
    assert_eq!(start.headers["x-goog-resumable"], "start");
    let chunks: Vec<(&str, std::ops::Range<u64>)> = ex.storage[1..]
        .iter()
        .map(|r| {
            assert_eq!(r.method, Method::PUT);
            assert_eq!(r.uri, SESSION);
            (
                r.headers["content-range"].to_str().unwrap(),
                r.source.clone(),
            )
        })
        .collect();
    let t = total;
    assert_eq!(
        chunks,
        [
            (format!("bytes 0-262143/{t}").as_str(), 0..KIB256),
            (
                format!("bytes 262144-524287/{t}").as_str(),
                KIB256..2 * KIB256
            ),
            (
                format!("bytes 524288-{}/{t}", t - 1).as_str(),
                2 * KIB256..t
            ),
        ]
    );
    assert!(
        ex.storage
            .iter()
            .all(|r| !r.headers.contains_key("authorization")),
        "no credentials on upload_url or the session (C2)"
    );

    // C3: the first poll at once, with the API headers.
    assert_eq!(ex.job.phase(), Phase::Poll);
    assert_eq!(ex.job.persisted(), total);
    assert_eq!(header(&poll, "authorization"), Some(BEARER));
    assert_eq!(header_names(&poll), ["authorization"]);
    assert!(poll.body.is_empty());
    ex.answer_poll(&poll, "complete");
    let done = completed(ex.done());
    assert_eq!(done.job.status, JobStatus::Complete);
    assert_eq!(done.job.download_url.expose(), DOWNLOAD_URL);
    assert_eq!(done.job.download_expires_at, "2021-08-18T19:42:55.000Z");
    assert_eq!(done.bytes, total);
    assert_eq!(done.polls, 1);
    assert_eq!(done.upload.as_ref().unwrap().size, total);
    let stats = ex.job.stats();
    assert_eq!(
        stats.requests,
        1 + 1 + 3 + 1,
        "create, start, 3 chunks, poll"
    );
    assert_eq!(stats.status_polls, 1);
    assert_eq!(stats.bytes_sent, total);
    let unique: HashSet<_> = ex.ids.iter().collect();
    assert_eq!(unique.len(), 6, "six distinct request ids");
    // Sticky.
    assert!(ex.done().is_ok());
    assert_eq!(
        ex.job
            .handle_response(ex.now, poll.id, response(200, &[], "")),
        Err(UsageError::Finished)
    );
}

// C2, G5, G8: faults in the upload are the GCS upload's business: a 503 on a chunk is
// followed by a status query, and the upload continues from what the server holds.
#[test]
fn c2_upload_faults_are_retried_by_the_gcs_rules() {
    let total = 2 * KIB256;
    let mut ex = Exchange::new(config(total));
    ex.created(true);
    // The start.
    let start = ex.send();
    ex.answer_storage(&start);
    loop {
        match ex.poll() {
            Action::Read(read) => {
                let bytes = ex.source[read.range.start as usize..read.range.end as usize].to_vec();
                ex.job
                    .handle_read(ex.now, read.range.start, &bytes)
                    .unwrap();
            }
            Action::Send(chunk) => {
                assert_eq!(
                    header(&chunk, "content-range"),
                    Some("bytes 0-262143/524288")
                );
                ex.respond(chunk.id, 503, &[("date", IN_TIME)], "");
                break;
            }
            other => panic!("{other:?}"),
        }
    }
    let until = ex.wait();
    ex.now = until;
    let query = ex.send();
    assert_eq!(header(&query, "content-range"), Some("bytes */524288"));
    assert_eq!(query.request.uri(), SESSION);
    assert_eq!(header(&query, "authorization"), None);
    ex.answer_storage(&query);
    let poll = ex.upload_until_api();
    assert_eq!(ex.stored, ex.source);
    ex.answer_poll(&poll, "complete");
    completed(ex.done());
    assert_eq!(ex.job.stats().retries, 1);
}

// C2: a job created resumable follows what was asked even when its answer says
// `resumable: false` (as seed 000 shows): the upload_url gets a resumable start, not one PUT.
#[test]
fn c2_a_resumable_job_is_uploaded_resumably_whatever_the_answer_says() {
    let total = 1000;
    let mut ex = Exchange::new(config(total));
    ex.created(false);
    let start = ex.send();
    assert_eq!(start.request.method(), Method::POST);
    assert_eq!(start.request.uri(), UPLOAD_URL);
    assert_eq!(header(&start, "x-goog-resumable"), Some("start"));
    assert!(start.body.is_empty());
    assert!(ex.job.job().unwrap().resumable);
}

// C2: a job asked for as not resumable takes the whole file in one PUT to upload_url, with
// Content-Type text/plain and no Authorization; a 503 sends the same PUT again. An answer
// that says `resumable: true` does not change what was asked.
#[test]
fn c2_non_resumable_job_takes_one_put() {
    let total = 1000;
    let mut c = config(total);
    c.resumable = false;
    let mut ex = Exchange::new(c);
    ex.created(true);
    let put = ex.send();
    assert_eq!(put.request.method(), Method::PUT);
    assert_eq!(put.request.uri(), UPLOAD_URL);
    assert_eq!(header_names(&put), ["content-length", "content-type"]);
    assert_eq!(header(&put, "content-type"), Some("text/plain"));
    assert_eq!(header(&put, "content-length"), Some("1000"));
    assert_eq!(put.body.source, 0..total);
    assert!(put.body.prefix.is_empty() && put.body.suffix.is_empty());
    ex.respond(put.id, 503, &[("date", IN_TIME)], "");
    ex.now = ex.wait();
    let again = ex.send();
    assert_eq!(again.body.source, 0..total);
    assert_eq!(header(&again, "authorization"), None);
    ex.respond(again.id, 200, &[("date", IN_TIME)], "");
    let poll = ex.send();
    assert_eq!(header(&poll, "authorization"), Some(BEARER));
    ex.answer_poll(&poll, "complete");
    let done = completed(ex.done());
    assert_eq!(done.bytes, total);
    assert!(done.upload.is_none());
    assert_eq!(ex.job.stats().bytes_sent, 2 * total);

    // A refusal of the PUT is the storage host's error.
    let mut c = config(10);
    c.resumable = false;
    let mut ex = Exchange::new(c);
    ex.created(false);
    let put = ex.send();
    ex.respond(
        put.id,
        403,
        &[("date", IN_TIME)],
        "<Error><Code>SignatureDoesNotMatch</Code><Message>Bad signature</Message></Error>",
    );
    assert_eq!(
        ex.done().unwrap_err(),
        Error::Server {
            status: http::StatusCode::FORBIDDEN,
            message: Some("Bad signature".into())
        }
    );

    // A stream of unknown size cannot be PUT in one request.
    let mut c = config(10);
    c.total = None;
    c.resumable = false;
    let mut ex = Exchange::with(ComplianceJob::new(c).unwrap(), source(10));
    ex.created(false);
    assert!(matches!(
        ex.done(),
        Err(Error::Usage(UsageError::InvalidInput {
            what: "source",
            ..
        }))
    ));
}

// C2: the upload URL lives 15 minutes (upload_expires_at against the create answer's Date):
// past it, nothing more is written to it, and the job ends with a typed error.
#[test]
fn c2_upload_url_expiry_is_a_typed_error() {
    let expired = JobError::UploadUrlExpired {
        id: ID.into(),
        expires_at: UPLOAD_EXPIRES_AT.into(),
    };
    // In this process: 15 minutes after the create answer, by the driver's clock.
    let mut ex = Exchange::new(config(10));
    ex.created(true);
    ex.now += Duration::from_secs(900);
    assert_eq!(job_error(ex.done()), expired);
    assert!(ex.job.resume_state().is_none(), "nothing left to resume");
    assert!(ex.storage.is_empty(), "nothing was sent to the expired URL");

    // Just inside the window the start goes out.
    let mut ex = Exchange::new(config(10));
    ex.created(true);
    ex.now += Duration::from_secs(899);
    let start = ex.send();
    assert_eq!(start.request.method(), Method::POST);

    // By the server's clock: the start refused with a Date past the expiry.
    let mut ex = Exchange::new(config(10));
    ex.created(true);
    let start = ex.send();
    ex.respond(
        start.id,
        400,
        &[("date", TOO_LATE)],
        "<Error><Code>ExpiredToken</Code></Error>",
    );
    assert_eq!(job_error(ex.done()), expired);

    // A 308 past the expiry: the upload can no longer finish.
    let mut ex = Exchange::new(config(2 * KIB256));
    ex.created(true);
    let start = ex.send();
    ex.answer_storage(&start);
    ex.gcs_date = TOO_LATE;
    loop {
        match ex.poll() {
            Action::Read(read) => {
                let bytes = ex.source[read.range.start as usize..read.range.end as usize].to_vec();
                ex.job
                    .handle_read(ex.now, read.range.start, &bytes)
                    .unwrap();
            }
            Action::Send(chunk) => {
                ex.answer_storage(&chunk);
                break;
            }
            other => panic!("{other:?}"),
        }
    }
    assert_eq!(job_error(ex.done()), expired);

    // A completion arriving after the expiry still counts.
    let mut ex = Exchange::new(config(10));
    ex.created(true);
    ex.gcs_date = TOO_LATE;
    let poll = ex.upload_until_api();
    ex.answer_poll(&poll, "complete");
    completed(ex.done());
}

// ---------------------------------------------------------------------------------------------
// C3: polling
// ---------------------------------------------------------------------------------------------

/// A job whose upload is done and whose first poll is in hand.
fn polling(mut c: ComplianceConfig) -> (Exchange, Transmit) {
    c.resumable = false;
    let mut ex = Exchange::new(c);
    ex.created(false);
    let put = ex.send();
    ex.respond(put.id, 200, &[], "");
    let poll = ex.send();
    (ex, poll)
}

// C3: the first poll at once, then waits of 10 s growing by half to 60 s, never under 6 s
// (150 requests per 15 minutes); each poll is the same GET.
#[test]
fn c3_polls_back_off_within_the_rate_limit() {
    let (mut ex, mut poll) = polling(config(10));
    let mut waits = Vec::new();
    for status in [
        "created",
        "in_progress",
        "in_progress",
        "in_progress",
        "in_progress",
        "in_progress",
        "in_progress",
    ] {
        ex.answer_poll(&poll, status);
        assert_eq!(ex.job.job().unwrap().status.as_str(), status);
        let until = ex.wait();
        assert_eq!(ex.wait(), until, "polling again gives the same wait");
        waits.push((until - ex.now).as_millis());
        ex.now = until;
        poll = ex.send();
    }
    assert_eq!(
        waits,
        [10_000, 15_000, 22_500, 33_750, 50_625, 60_000, 60_000]
    );
    assert!(waits.iter().all(|&w| w >= MIN_POLL_INTERVAL.as_millis()));
    ex.answer_poll(&poll, "complete");
    let done = completed(ex.done());
    assert_eq!(done.polls, 8);
    assert_eq!(ex.job.stats().status_polls, 8);
}

// C3, M5: a 429 waits until x-rate-limit-reset (against the answer's Date) or Retry-After,
// whichever is later; 503s are retried with backoff.
#[test]
fn c3_rate_limited_polls_wait_for_the_window() {
    let (mut ex, poll) = polling(config(10));
    ex.respond(
        poll.id,
        429,
        &[
            ("date", "Wed, 11 Aug 2021 19:50:00 GMT"),
            ("x-rate-limit-reset", "1628711700"), // 19:55:00, five minutes on
            ("retry-after", "2"),
            ("content-type", "application/json"),
        ],
        r#"{"title":"Too Many Requests","detail":"Too Many Requests","type":"about:blank","status":429}"#,
    );
    let until = ex.wait();
    assert_eq!(until - ex.now, Duration::from_secs(300));
    ex.now = until;
    let poll = ex.send();
    ex.respond(poll.id, 429, &[("retry-after", "42")], "");
    let until = ex.wait();
    assert_eq!(until - ex.now, Duration::from_secs(42));
    ex.now = until;
    let poll = ex.send();
    ex.respond(poll.id, 503, &[], "");
    let until = ex.wait();
    assert_eq!(
        until - ex.now,
        Duration::from_secs(4),
        "the third failure in a row"
    );
    ex.now = until;
    let poll = ex.send();
    ex.job
        .handle_failure(ex.now, poll.id, TransportFailure::Timeout)
        .unwrap();
    ex.now = ex.wait();
    let poll = ex.send();
    ex.answer_poll(&poll, "complete");
    completed(ex.done());
    assert_eq!(ex.job.stats().retries, 4);
}

// C3: a status answer needs only what polling uses (the id and the status); the fields it
// leaves out keep what the creation answer said.
#[test]
fn c3_a_sparse_status_answer_is_not_a_violation() {
    let mut c = config(10);
    c.resumable = false;
    let (mut ex, poll) = polling(c);
    ex.respond(
        poll.id,
        200,
        &[("date", IN_TIME)],
        &format!(r#"{{"data":{{"id":"{ID}","status":"in_progress"}}}}"#),
    );
    ex.now = ex.wait();
    let poll = ex.send();
    ex.respond(
        poll.id,
        200,
        &[("date", IN_TIME)],
        &format!(r#"{{"data":{{"id":"{ID}","status":"complete"}}}}"#),
    );
    let done = completed(ex.done());
    assert_eq!(
        done.job.status,
        resumable_core::compliance::JobStatus::Complete
    );
    assert!(
        done.job
            .download_url
            .expose()
            .to_string()
            .starts_with("https://")
    );
    // An answer about another job is still refused.
    let mut c = config(10);
    c.resumable = false;
    let (mut ex, poll) = polling(c);
    ex.respond(
        poll.id,
        200,
        &[],
        r#"{"data":{"id":"999","status":"complete"}}"#,
    );
    assert!(matches!(ex.done(), Err(Error::Protocol(_))));
}

// C3, G8: a poll that keeps failing ends with RetriesExhausted, which may be resumed later.
#[test]
fn c3_polls_give_up_after_the_retry_budget() {
    let mut c = config(10);
    c.retry.max_attempts = 1;
    let (mut ex, poll) = polling(c);
    ex.respond(poll.id, 503, &[], "");
    ex.now = ex.wait();
    let poll = ex.send();
    ex.respond(poll.id, 503, &[], "");
    let error = ex.done().unwrap_err();
    assert_eq!(
        error,
        Error::RetriesExhausted {
            attempts: 2,
            last: RetryCause::Status(http::StatusCode::SERVICE_UNAVAILABLE),
            endpoint: Some(resumable_core::Endpoint {
                host: "api.x.com".into(),
                port: 443
            }),
        }
    );
    assert!(error.is_resumable());
    assert_eq!(ex.job.resume_state().unwrap().phase, SavedPhase::Poll);
}

// C3: failed and expired jobs are typed job errors, and leave nothing to resume.
#[test]
fn c3_failed_and_expired_jobs_are_typed_errors() {
    for (status, error) in [
        ("failed", JobError::Failed { id: ID.into() }),
        ("expired", JobError::Expired { id: ID.into() }),
    ] {
        let (mut ex, poll) = polling(config(10));
        ex.answer_poll(&poll, status);
        let got = job_error(ex.done());
        assert_eq!(got, error);
        assert!(!got.is_resumable());
        assert!(got.to_string().contains(ID));
        assert!(ex.job.resume_state().is_none());
        assert_eq!(ex.job.phase(), Phase::Done);
    }
    // A 404 on the status endpoint is the API's error.
    let (mut ex, poll) = polling(config(10));
    ex.respond(
        poll.id,
        404,
        &[],
        r#"{"title":"Not Found Error","detail":"Could not find compliance job with id: [1].","type":"https://api.twitter.com/2/problems/resource-not-found","status":404}"#,
    );
    assert!(matches!(
        ex.done(),
        Err(Error::Api { status, message: Some(m), .. })
            if status == http::StatusCode::NOT_FOUND && m.starts_with("Could not find")
    ));
    // An answer about another job breaks C3.
    let (mut ex, poll) = polling(config(10));
    let other = job_json("complete", true).replace(ID, "1425543269983784963");
    ex.respond(poll.id, 200, &[], &other);
    assert!(matches!(
        ex.done(),
        Err(Error::Protocol(ProtocolViolation::MalformedResponse(_)))
    ));
}

// C3: polling is bounded by the poll deadline; the job is not lost (resume to poll again).
#[test]
fn c3_poll_deadline_ends_polling_but_keeps_the_job() {
    let mut c = config(10);
    c.poll_deadline = Duration::from_secs(30);
    let (mut ex, poll) = polling(c);
    ex.answer_poll(&poll, "in_progress"); // t = 0: wait 10 s
    ex.now = ex.wait();
    let poll = ex.send();
    ex.answer_poll(&poll, "in_progress"); // t = 10: wait 15 s
    ex.now = ex.wait();
    let poll = ex.send();
    ex.answer_poll(&poll, "in_progress"); // t = 25: 22.5 s would pass 30 s
    let error = job_error(ex.done());
    assert_eq!(
        error,
        JobError::PollDeadline {
            id: ID.into(),
            polls: 3,
            status: JobStatus::InProgress
        }
    );
    assert!(error.is_resumable());
    let state = ex.job.resume_state().expect("the job can be polled again");
    assert_eq!(state.phase, SavedPhase::Poll);

    // Intervals under the rate limit's 6 s are refused.
    let mut c = config(10);
    c.poll_interval = Duration::from_secs(5);
    assert!(matches!(
        ComplianceJob::new(c),
        Err(UsageError::InvalidInput {
            what: "poll interval",
            ..
        })
    ));
}

// ---------------------------------------------------------------------------------------------
// Resuming
// ---------------------------------------------------------------------------------------------

// G3, C2: a job interrupted mid-upload resumes the same job and session: a status query
// first, then the rest from what the server holds; no second job, no second session.
#[test]
fn resume_mid_upload_continues_the_same_job_and_session() {
    let total = 3 * KIB256;
    let mut ex = Exchange::new(config(total));
    ex.created(true);
    let start = ex.send();
    ex.answer_storage(&start);
    // One chunk acknowledged, the second in flight when the process dies.
    let mut chunks = 0;
    let state = loop {
        match ex.poll() {
            Action::Read(read) => {
                let bytes = ex.source[read.range.start as usize..read.range.end as usize].to_vec();
                ex.job
                    .handle_read(ex.now, read.range.start, &bytes)
                    .unwrap();
            }
            Action::Send(chunk) => {
                chunks += 1;
                if chunks == 2 {
                    // The driver saved the state before sending (the "Sending" event).
                    break ex.job.resume_state().unwrap();
                }
                ex.answer_storage(&chunk);
            }
            other => panic!("{other:?}"),
        }
    };
    assert_eq!(state.phase, SavedPhase::Upload);
    assert_eq!(state.job.id, ID);
    let gcs = state.gcs.as_ref().expect("the session is saved");
    assert_eq!(gcs.persisted, KIB256);
    assert_eq!(gcs.sent, Some(2 * KIB256));
    assert_eq!(state.check_upload_url(1_628_711_000), Ok(()));

    // A new process.
    let mut resumed = Exchange::with(
        ComplianceJob::resume(config(total), state.clone()).unwrap(),
        ex.source.clone(),
    );
    resumed.stored = ex.stored.clone();
    assert_eq!(resumed.job.phase(), Phase::Upload);
    let query = resumed.send();
    assert_eq!(query.request.method(), Method::PUT);
    assert_eq!(query.request.uri(), SESSION);
    assert_eq!(header(&query, "content-range"), Some("bytes */786432"));
    resumed.answer_storage(&query);
    let poll = resumed.upload_until_api();
    assert_eq!(resumed.stored, resumed.source);
    assert!(
        resumed
            .storage
            .iter()
            .all(|r| r.method != Method::POST && (r.source.is_empty() || r.source.start >= KIB256)),
        "no new session, no acknowledged byte sent again"
    );
    resumed.answer_poll(&poll, "complete");
    let done = completed(resumed.done());
    assert_eq!(done.bytes, total);
    assert_eq!(resumed.job.stats().resumed_from, Some(KIB256));

    // Resumed after the upload URL's 15 minutes: the driver's check says so.
    assert_eq!(
        state.check_upload_url(1_628_711_875),
        Err(JobError::UploadUrlExpired {
            id: ID.into(),
            expires_at: UPLOAD_EXPIRES_AT.into()
        })
    );
    // … and the server's Date says so too, should the driver not check.
    let mut late = Exchange::with(
        ComplianceJob::resume(config(total), state.clone()).unwrap(),
        ex.source.clone(),
    );
    late.stored = ex.stored.clone();
    late.gcs_date = TOO_LATE;
    let query = late.send();
    late.answer_storage(&query);
    assert!(matches!(
        job_error(late.done()),
        JobError::UploadUrlExpired { .. }
    ));

    // A state saved before the session existed starts one on the same upload_url.
    let mut early = state.clone();
    early.gcs = None;
    let mut again = Exchange::with(
        ComplianceJob::resume(config(total), early).unwrap(),
        ex.source.clone(),
    );
    let start = again.send();
    assert_eq!(start.request.method(), Method::POST);
    assert_eq!(start.request.uri(), UPLOAD_URL);
    assert_eq!(header(&start, "x-goog-resumable"), Some("start"));

    // A state for another file or type is refused.
    let mut other = config(total);
    other.fingerprint = "other".into();
    assert!(matches!(
        ComplianceJob::resume(other, state.clone()),
        Err(UsageError::StateMismatch(_))
    ));
    let mut users = config(total);
    users.job_type = JobType::Users;
    assert!(matches!(
        ComplianceJob::resume(users, state),
        Err(UsageError::StateMismatch(_))
    ));
}

// C3: a job interrupted while polling resumes by polling the same job at once.
#[test]
fn resume_mid_poll_polls_the_same_job() {
    let (mut ex, poll) = polling(config(10));
    ex.answer_poll(&poll, "in_progress");
    let state = ex.job.resume_state().unwrap();
    assert_eq!(state.phase, SavedPhase::Poll);
    assert!(state.gcs.is_none());
    assert_eq!(state.job.status, JobStatus::InProgress);
    assert_eq!(
        state.check_upload_url(u64::MAX),
        Ok(()),
        "the upload is done"
    );

    let mut resumed = Exchange::with(
        ComplianceJob::resume(config(10), state).unwrap(),
        source(10),
    );
    assert_eq!(resumed.job.phase(), Phase::Poll);
    assert_eq!(resumed.job.persisted(), 10);
    let poll = resumed.send();
    assert_eq!(poll.request.uri().to_string(), format!("{JOBS}/{ID}"));
    assert_eq!(header(&poll, "authorization"), Some(BEARER));
    resumed.answer_poll(&poll, "complete");
    let done = completed(resumed.done());
    assert_eq!(done.job.id, ID);
    assert_eq!(resumed.job.stats().requests, 1, "only the poll: no new job");
    // After completion the state is still there, so a driver can keep it until the results
    // are downloaded; resuming it polls once more.
    let kept = resumed.job.resume_state().unwrap();
    assert_eq!(kept.phase, SavedPhase::Poll);
}

// ---------------------------------------------------------------------------------------------
// Contract and secrets
// ---------------------------------------------------------------------------------------------

// Answers to requests that are not in flight, and reads that were not asked for, are usage
// errors that change nothing.
#[test]
fn stray_inputs_are_usage_errors() {
    let mut ex = Exchange::new(config(10));
    let create = ex.send();
    assert_eq!(
        ex.job
            .handle_response(ex.now, RequestId::new(99), response(200, &[], "")),
        Err(UsageError::UnknownRequest(99))
    );
    assert!(matches!(
        ex.job.handle_read(ex.now, 0, b"1\n"),
        Err(UsageError::UnexpectedRead { .. })
    ));
    // Nothing changed: the create is still the one request in flight.
    assert!(matches!(ex.poll(), Action::Idle));
    ex.respond(
        create.id,
        200,
        &[("content-type", "application/json"), ("date", CREATED_DATE)],
        &job_json("created", true),
    );
    let start = ex.send();
    // The start's answer, handed in twice.
    ex.answer_storage(&start);
    assert_eq!(
        ex.job.handle_response(
            ex.now,
            start.id,
            response(201, &[("location", SESSION)], "")
        ),
        Err(UsageError::UnknownRequest(start.id.get()))
    );
}

// Capabilities and credentials never show in Debug, Display or errors.
#[test]
fn secrets_are_absent_from_debug_and_errors() {
    let mut c = config(2 * KIB256);
    c.name = Some("nightly".into());
    let mut ex = Exchange::new(c);
    let create = ex.send();
    let mut shown = vec![format!("{create:?}"), format!("{:?}", ex.job)];
    ex.respond(
        create.id,
        200,
        &[("date", CREATED_DATE)],
        &job_json("created", true),
    );
    let start = ex.send();
    shown.push(format!("{start:?}"));
    ex.answer_storage(&start);
    let state: ComplianceResumeState = loop {
        match ex.poll() {
            Action::Read(read) => {
                let bytes = ex.source[read.range.start as usize..read.range.end as usize].to_vec();
                ex.job
                    .handle_read(ex.now, read.range.start, &bytes)
                    .unwrap();
            }
            Action::Send(chunk) => {
                shown.push(format!("{chunk:?}"));
                break ex.job.resume_state().unwrap();
            }
            other => panic!("{other:?}"),
        }
    };
    shown.push(format!("{state:?}"));
    shown.push(format!("{:?}", ex.job));
    shown.push(format!("{:?}", ex.job.job().unwrap()));
    shown.push(format!("{}", ex.job.job().unwrap().upload_url));
    shown.push(format!("{:?}", config(1)));
    let (mut done_ex, poll) = polling(config(10));
    shown.push(format!("{poll:?}"));
    done_ex.answer_poll(&poll, "complete");
    let outcome = done_ex.done();
    shown.push(format!("{outcome:?}"));
    for error in [
        JobError::Failed { id: ID.into() },
        JobError::UploadUrlExpired {
            id: ID.into(),
            expires_at: UPLOAD_EXPIRES_AT.into(),
        },
    ] {
        shown.push(error.to_string());
        shown.push(format!("{error:?}"));
    }
    for text in &shown {
        for secret in SECRETS {
            assert!(!text.contains(secret), "{secret} shown in {text}");
        }
    }
    assert!(
        shown.iter().any(|t| t.contains(ID)),
        "the job id is not a secret"
    );
}

// G6, G7, C3: a process killed right after the last chunk was answered 200 (before the job
// moved on to polling) does not upload the file a second time: the resumed job asks the
// session, which says complete, and polls.
#[test]
fn killed_after_the_last_chunk_resumes_without_sending_it_again() {
    let mut ex = Exchange::new(config(10));
    ex.created(true);
    let state = loop {
        match ex.poll() {
            Action::Read(read) => {
                let bytes = ex.source[read.range.start as usize..read.range.end as usize].to_vec();
                ex.job
                    .handle_read(ex.now, read.range.start, &bytes)
                    .unwrap();
            }
            Action::Send(send) => {
                let last = !send.body.source.is_empty();
                ex.answer_storage(&send);
                if last {
                    break ex.job.resume_state().unwrap();
                }
            }
            other => panic!("{other:?}"),
        }
    };
    let mut resumed = Exchange::with(
        ComplianceJob::resume(config(10), state.clone()).unwrap(),
        source(10),
    );
    resumed.stored = ex.stored.clone();
    if state.phase == SavedPhase::Upload {
        assert_eq!(state.gcs.as_ref().unwrap().sent, Some(10));
        let query = resumed.send();
        assert_eq!(header(&query, "content-range"), Some("bytes */10"));
        assert!(query.body.is_empty());
        resumed.answer_storage(&query);
    }
    let poll = resumed.upload_until_api();
    assert_eq!(poll.request.method(), Method::GET);
    assert!(resumed.storage.iter().all(|r| r.source.is_empty()));
    // Once the job has moved on, the state says so.
    assert_eq!(ex.upload_until_api().request.method(), Method::GET);
    assert_eq!(ex.job.resume_state().unwrap().phase, SavedPhase::Poll);
}
