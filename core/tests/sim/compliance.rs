//! `ComplianceServer`: a simulated X batch compliance API (rules C1–C3 in `docs/protocols`) for
//! the deterministic simulation, in-process, seeded and on the driver's clock (the server's
//! wall clock is [`WALL_START`] plus the time since its first request).
//!
//! `POST /2/compliance/jobs` creates a job whose `upload_url` is a signed URL of the simulated
//! GCS server ([`SimServer`], reused as it is): a resumable job's upload is a GCS session
//! started on it (G1, G4–G8), answered by that server with its own faults and lies; a one-`PUT`
//! job's upload is one `PUT` of the whole file, answered here. The upload URL refuses requests
//! from `upload_expires_at` on (the session it started lives on, G3). `GET
//! /2/compliance/jobs/{id}` reports `created` until the upload has arrived, then `in_progress`
//! for a drawn number of polls, then `complete` or `failed`; `expired` when the upload
//! arrived after `upload_expires_at`, or not at all by then.
//!
//! Per API request it draws a fate from its [`ComplianceKnobs`] (per-mille rates): refuse (a
//! final 4xx in the API's error shapes), lose the request before or after processing it, answer
//! a retryable status (429 with `x-rate-limit-reset`, sometimes `Retry-After` too; 5xx with
//! or without `Retry-After`), or answer, sometimes with a garbled or truncated body. One lie
//! ([`ApiLie`]) may be armed: a malformed job the client must refuse.
//!
//! The server checks the client: the API headers on every API request and on none to the
//! upload URL or the session (C2), the create body (C1), no second job once the client knows
//! one (a resumed job never creates another), a poll only after the upload arrived (C3), the
//! upload's form (one `PUT` only for a one-`PUT` job); breaches go to
//! [`ComplianceServer::violations`]. [`Pace`] checks the rate of the client's API requests (C3).

use std::collections::VecDeque;
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};
use resumable_core::TransportFailure;
use serde_json::{Value, json};

use super::exchange::{Event, Exchange, Must, gcs_event};
use super::{RETRYABLE, SimRng, SimServer, XML_START};

/// The simulated API's address (`api_base`).
pub const API_BASE: &str = "https://api.sim";
/// The API's authority.
const API_HOST: &str = "api.sim";
/// The jobs endpoint's path (C1).
const JOBS_PATH: &str = "/2/compliance/jobs";
/// The upload host (the simulated GCS server's).
const UPLOAD_HOST: &str = "sim.example";
/// The API headers the client is configured with: they must go with every API request and
/// with no request to the upload URL or the session (C2).
pub const API_HEADERS: [(&str, &str); 2] = [
    ("authorization", "Bearer sim-app-only"),
    ("x-sim-app", "compliance"),
];
/// The server's wall clock at its first request, in seconds since the Unix epoch (after the
/// simulated GCS server's `Date`s, which then never reach an upload URL's expiry).
pub const WALL_START: u64 = 1_800_000_000;
/// C3: the status endpoint allows this many requests per [`RATE_WINDOW`].
pub const RATE_LIMIT: usize = 150;
/// C3: 15 minutes.
pub const RATE_WINDOW: Duration = Duration::from_secs(15 * 60);

/// How a job ends once its upload has arrived and its `in_progress` polls are over.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum JobEnd {
    /// `complete`.
    Complete,
    /// `failed`.
    Failed,
}

/// A malformed job the server answers once, where the client can tell (C1, C3): it must end
/// with a protocol violation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ApiLie {
    /// A created job without `upload_url`.
    NoUploadUrl,
    /// A created job whose id cannot go in a URL.
    BadId,
    /// A created job of the other type.
    OtherType,
    /// A status answer about another job.
    OtherJob,
    /// A status answer with a status the API does not have.
    UnknownStatus,
}

/// Every lie, to pick from.
pub const API_LIES: [ApiLie; 5] = [
    ApiLie::NoUploadUrl,
    ApiLie::BadId,
    ApiLie::OtherType,
    ApiLie::OtherJob,
    ApiLie::UnknownStatus,
];

/// How the API behaves (per-mille rates, tried in this order: refuse, drop before, drop after,
/// retryable status; the rest are answered).
#[derive(Clone, Debug)]
pub struct ComplianceKnobs {
    /// `tweets` or `users`: what the client must ask for.
    pub job_type: &'static str,
    /// A final 4xx.
    pub refuse: u16,
    /// The request is lost before it reaches the server.
    pub drop_before: u16,
    /// The response is lost after the server processed it.
    pub drop_after: u16,
    /// A retryable status (408, 429, 5xx).
    pub status: u16,
    /// A retryable status names a wait (429: `x-rate-limit-reset`; others `Retry-After`).
    pub retry_after: u16,
    /// The longest wait asked for, in seconds.
    pub max_retry_after_secs: u64,
    /// A 2xx job answer comes back as garbage or cut short.
    pub garble: u16,
    /// A status answer carries only `id` and `status` (C3 allows it).
    pub sparse: u16,
    /// Create answers say `resumable: false` whatever was asked (C2: the client follows what
    /// it asked for).
    pub deny_resumable: bool,
    /// `upload_expires_at` is this long after creation (C2: about 15 minutes).
    pub upload_lifetime_secs: u64,
    /// `in_progress` answers once the upload has arrived, before the end.
    pub steps: u32,
    /// How the job ends.
    pub end: JobEnd,
}

/// One job on the server.
#[derive(Clone, Debug)]
pub struct Job {
    /// The job id.
    pub id: String,
    /// What the client asked for (C1).
    pub resumable: bool,
    /// `created_at`, in wall-clock seconds.
    pub created_at: u64,
    /// `upload_expires_at`, in wall-clock seconds.
    pub expires_at: u64,
    /// The GCS sessions started on its upload URL (indexes into the GCS server's sessions).
    pub sessions: Vec<usize>,
    /// What its one `PUT` stored.
    pub put: Option<Vec<u8>>,
    /// When its upload was complete, in wall-clock seconds.
    pub arrived: Option<u64>,
    /// `in_progress` answers left.
    pub steps_left: u32,
    /// The final status, once reached.
    pub status: Option<&'static str>,
}

/// The simulated compliance API and its upload server. See the module docs.
#[derive(Debug)]
pub struct ComplianceServer {
    knobs: ComplianceKnobs,
    rng: SimRng,
    gcs: SimServer,
    lie: Option<ApiLie>,
    lie_skip: u32,
    t0: Option<Instant>,
    last_now: Option<Instant>,
    jobs: Vec<Job>,
    violations: Vec<String>,
    requests: u64,
    /// The client has been told of a job (a create answer it read, or a resume state): it
    /// must never create another.
    client_knows_job: bool,
    /// `client_knows_job` before the last reply, for [`ComplianceServer::response_lost`].
    undo_knows: Option<bool>,
}

#[derive(Clone, Copy, Debug)]
enum Fate {
    Answer,
    Status { status: u16, wait: Option<u64> },
    DropBefore(TransportFailure),
    DropAfter(TransportFailure),
    Refuse(u16),
}

impl ComplianceServer {
    /// A server whose fates come from a generator seeded with `seed`; `gcs` serves the upload
    /// URLs.
    pub fn new(seed: u64, knobs: ComplianceKnobs, gcs: SimServer) -> Self {
        ComplianceServer {
            knobs,
            rng: SimRng::new(seed),
            gcs,
            lie: None,
            lie_skip: 0,
            t0: None,
            last_now: None,
            jobs: Vec::new(),
            violations: Vec::new(),
            requests: 0,
            client_knows_job: false,
            undo_knows: None,
        }
    }

    /// Tells `lie` once, at its `skip + 1`-th applicable chance.
    pub fn with_lie(mut self, lie: ApiLie, skip: u32) -> Self {
        self.lie = Some(lie);
        self.lie_skip = skip;
        self
    }

    /// The GCS server behind the upload URLs.
    pub fn gcs(&self) -> &SimServer {
        &self.gcs
    }

    /// Client breaches seen so far, the GCS server's included.
    pub fn violations(&self) -> Vec<String> {
        let mut all = self.violations.clone();
        all.extend(self.gcs.violations().iter().cloned());
        all
    }

    /// The job `id`.
    pub fn job(&self, id: &str) -> Option<&Job> {
        self.jobs.iter().find(|j| j.id == id)
    }

    /// The jobs created, in order.
    pub fn jobs(&self) -> &[Job] {
        &self.jobs
    }

    /// The bytes the server holds as job `id`'s upload: what its one `PUT` stored, or the
    /// largest completed session on its upload URL.
    pub fn uploaded(&self, id: &str) -> u64 {
        let Some(job) = self.job(id) else { return 0 };
        if let Some(put) = &job.put {
            return put.len() as u64;
        }
        self.completed_sessions(job)
            .map(|s| s.len() as u64)
            .max()
            .unwrap_or(0)
    }

    /// The bytes of every completed session of `job`.
    pub fn completed_sessions<'a>(&'a self, job: &'a Job) -> impl Iterator<Item = &'a [u8]> {
        job.sessions.iter().filter_map(|&i| {
            let s = &self.gcs.sessions()[i];
            s.completed.is_some().then_some(s.stored.as_slice())
        })
    }

    /// A client process resumed from a saved state (which names a job), with a GCS session
    /// (`session`) or not.
    pub fn client_resumed(&mut self, session: bool) {
        self.client_knows_job = true;
        self.gcs.set_resumed_client(session);
    }

    /// The wall clock at the last request.
    pub fn wall_now(&self) -> u64 {
        self.last_now.map_or(WALL_START, |now| self.wall(now))
    }

    /// The driver lost the last response after all (its process died before reading it).
    pub fn response_lost(&mut self) {
        if let Some(knew) = self.undo_knows.take() {
            self.client_knows_job = knew;
        }
        self.gcs.response_lost();
    }

    /// Handles one request whose body is `body`, arriving at `now`.
    pub fn handle(&mut self, now: Instant, request: &Request<()>, body: &[u8]) -> Exchange {
        self.t0.get_or_insert(now);
        self.last_now = Some(now);
        self.requests += 1;
        self.undo_knows = None;
        let uri = request.uri();
        let headers = request.headers();
        let host = uri.authority().map(|a| a.as_str());
        let api_headers = API_HEADERS
            .iter()
            .filter(|(name, value)| headers.get(*name).is_some_and(|v| v == *value))
            .count();
        if host == Some(API_HOST) && uri.scheme_str() == Some("https") {
            if api_headers != API_HEADERS.len() {
                self.violation("an API request without the API headers (C1, C3)");
            }
            let path = uri.path();
            if *request.method() == Method::POST && path == JOBS_PATH && uri.query().is_none() {
                return self.create(now, request, body);
            }
            if *request.method() == Method::GET
                && let Some(id) = path
                    .strip_prefix(JOBS_PATH)
                    .and_then(|p| p.strip_prefix('/'))
            {
                let id = id.to_owned();
                return self.status(now, &id);
            }
            self.violation("a request the compliance API does not know");
            return self.refusal(404);
        }
        if host != Some(UPLOAD_HOST) {
            self.violation("a request to an unknown host");
            return self.refusal(404);
        }
        // C2: the upload URL and the session are capabilities: no API header goes to them.
        if API_HEADERS
            .iter()
            .any(|(name, _)| headers.contains_key(*name))
        {
            self.violation("an API header sent to the upload URL or the session (C2)");
        }
        let text = uri.to_string();
        let job = text
            .strip_prefix(XML_START)
            .and_then(|rest| rest.strip_prefix("&job="))
            .and_then(|n| n.parse::<usize>().ok())
            .filter(|&n| n < self.jobs.len());
        let Some(j) = job else {
            // A request to a session: the GCS server's (G4–G8).
            return self.forward_to_gcs(now, request, body, None);
        };
        if self.wall(now) >= self.jobs[j].expires_at {
            return self.upload_url_expired(now);
        }
        match *request.method() {
            Method::PUT => {
                if self.jobs[j].resumable {
                    self.violation("a one-PUT upload to a job created resumable (C2)");
                }
                self.put(now, j, request, body)
            }
            Method::POST => {
                if !self.jobs[j].resumable {
                    self.violation("a resumable start on a job created for one PUT (C2)");
                }
                self.forward_to_gcs(now, request, body, Some(j))
            }
            _ => {
                self.violation("an upload URL request that is neither PUT nor POST");
                self.refusal(405)
            }
        }
    }

    // ---- the API ----

    fn create(&mut self, now: Instant, request: &Request<()>, body: &[u8]) -> Exchange {
        if self.client_knows_job {
            self.violation("a second job created by a client that has one (C1)");
        }
        let headers = request.headers();
        if headers
            .get("content-type")
            .is_none_or(|v| v != "application/json")
        {
            self.violation("a create request that is not application/json (C1)");
        }
        if content_length(request) != Some(body.len() as u64) {
            self.violation("Content-Length is missing or differs from the body");
        }
        let asked: Option<Value> = serde_json::from_slice(body).ok();
        let job_type = asked.as_ref().and_then(|v| v.get("type")?.as_str());
        if job_type != Some(self.knobs.job_type) {
            self.violation("a create request without the job's type (C1)");
        }
        let Some(resumable) = asked.as_ref().and_then(|v| v.get("resumable")?.as_bool()) else {
            self.violation("a create request without a boolean resumable (C1)");
            return self.refusal(400);
        };
        let fate = self.next_fate();
        match fate {
            Fate::Refuse(status) => self.refusal(status),
            Fate::DropBefore(f) => Exchange::new(Err(f), Event::Transport),
            Fate::Status { status, wait } => self.retryable(now, status, wait),
            Fate::DropAfter(f) => {
                self.new_job(now, resumable);
                Exchange::new(Err(f), Event::Transport)
            }
            Fate::Answer => {
                let j = self.new_job(now, resumable);
                let mut data = self.job_json(j, "created");
                if self.knobs.deny_resumable {
                    data["resumable"] = json!(false);
                }
                let lie = self.lie_now(|l| {
                    matches!(l, ApiLie::NoUploadUrl | ApiLie::BadId | ApiLie::OtherType)
                });
                match lie {
                    Some(ApiLie::NoUploadUrl) => {
                        if let Some(o) = data.as_object_mut() {
                            o.remove("upload_url");
                        }
                    }
                    Some(ApiLie::BadId) => data["id"] = json!("a/b"),
                    Some(_) => {
                        let other = if self.knobs.job_type == "tweets" {
                            "users"
                        } else {
                            "tweets"
                        };
                        data["type"] = json!(other);
                    }
                    None => {}
                }
                if lie.is_some() {
                    return self.ok(now, data, Event::Lie(Must::protocol()));
                }
                if self.rng.chance(self.knobs.garble) {
                    return self.garbled(now, data);
                }
                self.undo_knows = Some(self.client_knows_job);
                self.client_knows_job = true;
                self.ok(now, data, Event::Answered)
            }
        }
    }

    fn status(&mut self, now: Instant, id: &str) -> Exchange {
        let Some(j) = self.jobs.iter().position(|job| job.id == id) else {
            self.violation("a status poll for a job the server never created");
            return self.refusal(404);
        };
        if self.jobs[j].arrived.is_none() && self.wall(now) < self.jobs[j].expires_at {
            self.violation("a status poll before the job's upload was complete (C3)");
        }
        let fate = self.next_fate();
        match fate {
            Fate::Refuse(status) => return self.refusal(status),
            Fate::DropBefore(f) => return Exchange::new(Err(f), Event::Transport),
            Fate::Status { status, wait } => return self.retryable(now, status, wait),
            // Processed; a lost response is decided below.
            Fate::Answer | Fate::DropAfter(_) => {}
        }
        let status = self.advance(j, now);
        if let Fate::DropAfter(f) = fate {
            return Exchange::new(Err(f), Event::Transport);
        }
        let mut data = if self.rng.chance(self.knobs.sparse) {
            json!({"id": self.jobs[j].id, "status": status})
        } else {
            self.job_json(j, status)
        };
        let lie = self.lie_now(|l| matches!(l, ApiLie::OtherJob | ApiLie::UnknownStatus));
        match lie {
            Some(ApiLie::OtherJob) => data["id"] = json!("1"),
            Some(_) => data["status"] = json!("finished"),
            None => {}
        }
        if lie.is_some() {
            return self.ok(now, data, Event::Lie(Must::protocol()));
        }
        if self.rng.chance(self.knobs.garble) {
            return self.garbled(now, data);
        }
        let event = match status {
            "complete" => Event::Answered,
            "failed" => Event::JobFailed,
            "expired" => Event::JobExpired,
            _ => Event::Processing,
        };
        self.ok(now, data, event)
    }

    /// Where job `j` stands at `now`, one poll on (C3).
    fn advance(&mut self, j: usize, now: Instant) -> &'static str {
        let wall = self.wall(now);
        let (steps, end) = (self.knobs.steps, self.knobs.end);
        let job = &mut self.jobs[j];
        if let Some(status) = job.status {
            return status;
        }
        let status = match job.arrived {
            Some(at) if at >= job.expires_at => "expired",
            None if wall >= job.expires_at => "expired",
            None => return "created",
            Some(_) if job.steps_left > 0 => {
                job.steps_left -= 1;
                // The first answer after the upload may still say created.
                return if job.steps_left + 1 == steps && steps > 1 {
                    "created"
                } else {
                    "in_progress"
                };
            }
            Some(_) => match end {
                JobEnd::Complete => "complete",
                JobEnd::Failed => "failed",
            },
        };
        job.status = Some(status);
        status
    }

    fn new_job(&mut self, now: Instant, resumable: bool) -> usize {
        let n = self.jobs.len();
        let wall = self.wall(now);
        self.jobs.push(Job {
            id: (1_425_543_269_983_784_962u64 + n as u64).to_string(),
            resumable,
            created_at: wall,
            expires_at: wall + self.knobs.upload_lifetime_secs,
            sessions: Vec::new(),
            put: None,
            arrived: None,
            steps_left: self.knobs.steps,
            status: None,
        });
        n
    }

    /// The `data` object of job `j` with `status` (C1, C3).
    fn job_json(&self, j: usize, status: &str) -> Value {
        let job = &self.jobs[j];
        json!({
            "id": job.id,
            "type": self.knobs.job_type,
            "name": "sim job",
            "status": status,
            "resumable": job.resumable,
            "upload_url": format!("{XML_START}&job={j}"),
            "upload_expires_at": rfc3339(job.expires_at),
            "download_url": format!("https://storage.sim/results/{j}.json?X-Goog-Signature=DOWN"),
            "download_expires_at": rfc3339(job.created_at + 7 * 86_400),
            "created_at": rfc3339(job.created_at),
        })
    }

    // ---- the upload URL ----

    /// A request for the GCS server: a start on job `job`'s upload URL, or a session request.
    fn forward_to_gcs(
        &mut self,
        now: Instant,
        request: &Request<()>,
        body: &[u8],
        job: Option<usize>,
    ) -> Exchange {
        let uri = request.uri();
        let sessions = self.gcs.sessions().len();
        let before = self.gcs.session_at(uri).map(|s| s.stored.len() as u64);
        let reply = self.gcs.handle(request, body);
        let after = self.gcs.session_at(uri).map(|s| s.stored.len() as u64);
        if let Some(j) = job {
            self.jobs[j]
                .sessions
                .extend(sessions..self.gcs.sessions().len());
        }
        // A job's upload arrives when one of its sessions completes.
        let wall = self.wall(now);
        for j in 0..self.jobs.len() {
            let job = &self.jobs[j];
            if job.arrived.is_none()
                && job
                    .sessions
                    .iter()
                    .any(|&i| self.gcs.sessions()[i].completed.is_some())
            {
                self.jobs[j].arrived = Some(wall);
            }
        }
        let (new, dup) = match (before, after) {
            (Some(b), Some(a)) => (a - b, overlap(request, b)),
            _ => (0, 0),
        };
        let start = *request.method() == Method::POST;
        Exchange {
            event: gcs_event(&reply, start),
            outcome: reply.outcome,
            new,
            dup,
            ambiguous: false,
        }
    }

    /// A one-`PUT` upload of the whole file (C2).
    fn put(&mut self, now: Instant, j: usize, request: &Request<()>, body: &[u8]) -> Exchange {
        let headers = request.headers();
        if headers
            .get("content-type")
            .is_none_or(|v| v != "text/plain")
        {
            self.violation("a one-PUT upload that is not text/plain (C2)");
        }
        if content_length(request) != Some(body.len() as u64) {
            self.violation("Content-Length is missing or differs from the body");
        }
        if headers.contains_key("content-range") || headers.contains_key("x-goog-resumable") {
            self.violation("a one-PUT upload with resumable headers (C2)");
        }
        let fate = self.next_fate();
        let stored = match fate {
            Fate::Refuse(status) => return self.refusal(status),
            Fate::DropBefore(f) => return Exchange::new(Err(f), Event::Transport),
            Fate::Status { .. } => self.rng.chance(500),
            Fate::Answer | Fate::DropAfter(_) => true,
        };
        let len = body.len() as u64;
        let (mut new, mut dup) = (0, 0);
        if stored {
            let wall = self.wall(now);
            let job = &mut self.jobs[j];
            if job.put.as_deref() == Some(body) {
                dup = len;
            } else {
                new = len;
            }
            job.put = Some(body.to_vec());
            job.arrived.get_or_insert(wall);
        }
        let mut exchange = match fate {
            Fate::DropAfter(f) => Exchange::new(Err(f), Event::Transport),
            Fate::Status { status, wait } => self.retryable(now, status, wait),
            _ => {
                let response = Response::builder()
                    .status(200)
                    .header("date", self.date(now))
                    .body(Bytes::new())
                    .expect("valid");
                Exchange::new(Ok(response), Event::Answered)
            }
        };
        exchange.new = new;
        exchange.dup = dup;
        exchange
    }

    /// C2: the signed URL is past `upload_expires_at` (the answer's `Date` says so).
    fn upload_url_expired(&mut self, now: Instant) -> Exchange {
        let response = Response::builder()
            .status(400)
            .header("date", self.date(now))
            .header("content-type", "application/xml; charset=UTF-8")
            .body(Bytes::from_static(
                b"<?xml version='1.0' encoding='UTF-8'?><Error><Code>ExpiredToken</Code><Message>The provided token has expired.</Message></Error>",
            ))
            .expect("valid");
        Exchange::new(Ok(response), Event::UploadUrlExpired)
    }

    // ---- fates, answers ----

    fn next_fate(&mut self) -> Fate {
        let k = &self.knobs;
        let rng = &mut self.rng;
        if rng.chance(k.refuse) {
            return Fate::Refuse(rng.pick(&[400, 401, 403]));
        }
        if rng.chance(k.drop_before) {
            return Fate::DropBefore(rng.pick(&[
                TransportFailure::Connect,
                TransportFailure::Reset,
                TransportFailure::Timeout,
                TransportFailure::Other,
            ]));
        }
        if rng.chance(k.drop_after) {
            return Fate::DropAfter(rng.pick(&[
                TransportFailure::Reset,
                TransportFailure::Timeout,
                TransportFailure::TruncatedResponse,
            ]));
        }
        if rng.chance(k.status) {
            // C3: the rate limit is the usual reason here.
            let status = if rng.chance(400) {
                429
            } else {
                rng.pick(&RETRYABLE)
            };
            let wait = rng
                .chance(k.retry_after)
                .then(|| rng.below(k.max_retry_after_secs + 1));
            return Fate::Status { status, wait };
        }
        Fate::Answer
    }

    fn lie_now(&mut self, applicable: impl Fn(ApiLie) -> bool) -> Option<ApiLie> {
        let lie = self.lie?;
        if !applicable(lie) {
            return None;
        }
        if self.lie_skip > 0 {
            self.lie_skip -= 1;
            return None;
        }
        self.lie.take()
    }

    fn ok(&mut self, now: Instant, data: Value, event: Event) -> Exchange {
        let response = Response::builder()
            .status(200)
            .header("content-type", "application/json")
            .header("date", self.date(now))
            .body(Bytes::from(json!({ "data": data }).to_string()))
            .expect("valid");
        Exchange::new(Ok(response), event)
    }

    /// A 2xx whose body is garbage, cut short, or JSON without the `data` object.
    fn garbled(&mut self, now: Instant, data: Value) -> Exchange {
        let full = json!({ "data": data }).to_string();
        let body = match self.rng.below(3) {
            0 => Bytes::from_static(b"\x00\xff<html>garbage"),
            1 => {
                let cut = self.rng.below(full.len() as u64) as usize;
                Bytes::from(full[..cut].to_owned())
            }
            _ => Bytes::from(json!({ "meta": {"sent": self.date(now)} }).to_string()),
        };
        let response = Response::builder()
            .status(200)
            .header("content-type", "application/json")
            .body(body)
            .expect("valid");
        Exchange::new(Ok(response), Event::Garbled)
    }

    /// A retryable status; 429 names the rate-limit reset (and sometimes `Retry-After` too),
    /// others may carry `Retry-After` (C3).
    fn retryable(&mut self, now: Instant, status: u16, wait: Option<u64>) -> Exchange {
        let mut response = Response::builder()
            .status(status)
            .header("date", self.date(now));
        if let Some(secs) = wait {
            if status == 429 {
                response =
                    response.header("x-rate-limit-reset", (self.wall(now) + secs).to_string());
                if self.rng.chance(300) {
                    response = response.header("retry-after", self.rng.below(secs + 1).to_string());
                }
            } else {
                response = response.header("retry-after", secs.to_string());
            }
        }
        let body = if status == 429 {
            r#"{"title":"Too Many Requests","detail":"Too Many Requests","type":"about:blank","status":429}"#
        } else {
            r#"{"title":"Service Unavailable","detail":"Service Unavailable","type":"about:blank","status":503}"#
        };
        let response = response
            .body(Bytes::from_static(body.as_bytes()))
            .expect("valid");
        Exchange::new(Ok(response), Event::Retryable)
    }

    /// A final refusal in one of the API's shapes (or a proxy's page).
    fn refusal(&mut self, status: u16) -> Exchange {
        let body: &'static [u8] = match self.rng.below(3) {
            0 => br#"{"title":"Unauthorized","type":"about:blank","status":401,"detail":"Unauthorized"}"#,
            1 => br#"{"errors":[{"message":"Invalid Request","parameters":{"type":["x"]}}],"title":"Invalid Request","type":"https://api.x.com/2/problems/invalid-request"}"#,
            _ => b"<html><body>Forbidden</body></html>",
        };
        let response = Response::builder()
            .status(StatusCode::from_u16(status).expect("valid"))
            .body(Bytes::from_static(body))
            .expect("valid");
        Exchange::new(Ok(response), Event::Refused)
    }

    /// The server's wall clock at `now`, in seconds since the Unix epoch.
    pub fn wall(&self, now: Instant) -> u64 {
        let since = self
            .t0
            .map_or(Duration::ZERO, |t0| now.saturating_duration_since(t0));
        WALL_START + since.as_secs()
    }

    fn date(&self, now: Instant) -> String {
        httpdate::fmt_http_date(SystemTime::UNIX_EPOCH + Duration::from_secs(self.wall(now)))
    }

    fn violation(&mut self, what: &str) {
        self.violations
            .push(format!("compliance request {}: {what}", self.requests));
    }
}

/// Bytes of a session `PUT`'s body (by its `Content-Range`) the session already held.
fn overlap(request: &Request<()>, held: u64) -> u64 {
    request
        .headers()
        .get("content-range")
        .and_then(|v| super::parse_content_range(v.as_bytes()))
        .and_then(|(range, _)| range)
        .map_or(0, |(a, end)| held.min(end).saturating_sub(a))
}

fn content_length(request: &Request<()>) -> Option<u64> {
    request
        .headers()
        .get("content-length")?
        .to_str()
        .ok()?
        .parse()
        .ok()
}

/// Seconds since the Unix epoch as RFC 3339 (`2027-01-15T08:00:00.000Z`).
pub fn rfc3339(unix: u64) -> String {
    let (days, secs) = (unix / 86_400, unix % 86_400);
    // Civil from days (H. Hinnant's algorithm), for days since 1970-01-01.
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.000Z",
        secs / 3600,
        secs / 60 % 60,
        secs % 60
    )
}

/// C3: the pace of a client's API requests, from the requests it hands out and the answers it
/// gets (the server's, or the driver's own in a burst):
/// - after a status answer that finds the job unfinished, the next API request waits at least
///   the poll interval (never under 6 s);
/// - after a retryable answer, at least what it asks for (`x-rate-limit-reset` against its
///   `Date`, or `Retry-After`, whichever is later, capped by the policy's `max_retry_after`)
///   and at least the policy's first backoff; after a transport failure, the first backoff;
/// - the first request of a process (the first poll after the upload, a resumed job's poll)
///   goes at once;
/// - at most [`RATE_LIMIT`] status polls in any [`RATE_WINDOW`], over every process.
#[derive(Debug)]
pub struct Pace {
    poll_interval: Duration,
    max_retry_after: Duration,
    first_backoff: Duration,
    /// The last API answer of this process: when, the least wait before the next API
    /// request, and why.
    last: Option<(Instant, Duration, &'static str)>,
    polls: VecDeque<Instant>,
    violations: Vec<String>,
}

impl Pace {
    /// A check for a client polling every `poll_interval` at least, retrying by a policy whose
    /// first backoff is `first_backoff` and which caps a server's wait at `max_retry_after`.
    pub fn new(
        poll_interval: Duration,
        first_backoff: Duration,
        max_retry_after: Duration,
    ) -> Self {
        Pace {
            poll_interval,
            max_retry_after,
            first_backoff,
            last: None,
            polls: VecDeque::new(),
            violations: Vec::new(),
        }
    }

    /// The client's process restarted: its first API request goes at once.
    pub fn restart(&mut self) {
        self.last = None;
    }

    /// Breaches of C3's pace seen so far.
    pub fn violations(&self) -> &[String] {
        &self.violations
    }

    /// The client handed out `request` at `now`.
    pub fn sent(&mut self, now: Instant, request: &Request<()>) {
        if !is_api(request) {
            return;
        }
        if let Some((at, wait, why)) = self.last.take()
            && now < at + wait
        {
            self.violations.push(format!(
                "an API request {:?} after {why}, which asks for {wait:?} (C3)",
                now - at
            ));
        }
        if *request.method() == Method::GET {
            self.polls.push_back(now);
            while self.polls.front().is_some_and(|&t| t + RATE_WINDOW <= now) {
                self.polls.pop_front();
            }
            if self.polls.len() > RATE_LIMIT {
                self.violations.push(format!(
                    "{} status polls within 15 minutes (C3)",
                    self.polls.len()
                ));
            }
        }
    }

    /// The client got `outcome` for `request` at `now`.
    pub fn answered(
        &mut self,
        now: Instant,
        request: &Request<()>,
        outcome: &Result<Response<Bytes>, TransportFailure>,
    ) {
        if !is_api(request) {
            return;
        }
        let response = match outcome {
            Err(_) => {
                self.last = Some((now, self.first_backoff, "a transport failure"));
                return;
            }
            Ok(response) => response,
        };
        let status = response.status().as_u16();
        if RETRYABLE.contains(&status) {
            let asked = server_wait(response).min(self.max_retry_after);
            let why = if status == 429 {
                "a 429"
            } else {
                "a retryable status"
            };
            self.last = Some((now, asked.max(self.first_backoff), why));
            return;
        }
        let unfinished = response.status().is_success()
            && *request.method() == Method::GET
            && serde_json::from_slice::<Value>(response.body())
                .ok()
                .and_then(|v| v.get("data")?.get("status")?.as_str().map(str::to_owned))
                .is_some_and(|s| s == "created" || s == "in_progress");
        self.last = unfinished.then_some((
            now,
            self.poll_interval,
            "a status answer that finds the job unfinished",
        ));
    }
}

fn is_api(request: &Request<()>) -> bool {
    request.uri().authority().map(|a| a.as_str()) == Some(API_HOST)
}

/// The wait a retryable answer asks for: `x-rate-limit-reset` against `Date`, or
/// `Retry-After` (seconds, or a date against `Date`), whichever is later (C3, G8).
fn server_wait(response: &Response<Bytes>) -> Duration {
    let header = |name: &str| response.headers().get(name).and_then(|v| v.to_str().ok());
    let seconds = |text: &str| {
        let text = text.trim();
        (!text.is_empty() && text.bytes().all(|b| b.is_ascii_digit()))
            .then(|| text.parse::<u64>().ok())
            .flatten()
    };
    let date = header("date").and_then(|d| httpdate::parse_http_date(d.trim()).ok());
    let reset = match (header("x-rate-limit-reset").and_then(seconds), date) {
        (Some(reset), Some(date)) => (SystemTime::UNIX_EPOCH + Duration::from_secs(reset))
            .duration_since(date)
            .unwrap_or(Duration::ZERO),
        _ => Duration::ZERO,
    };
    let after = match header("retry-after") {
        Some(text) => match seconds(text) {
            Some(secs) => Duration::from_secs(secs),
            None => match (httpdate::parse_http_date(text.trim()).ok(), date) {
                (Some(at), Some(date)) => at.duration_since(date).unwrap_or(Duration::ZERO),
                _ => Duration::ZERO,
            },
        },
        None => Duration::ZERO,
    };
    reset.max(after)
}
