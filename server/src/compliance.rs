//! Twitter's batch compliance jobs (C1–C3), driving this server's own GCS side.
//!
//! - `POST /2/compliance/jobs` (app-only `Authorization: Bearer …` required) with
//!   `{"type":"tweets"|"users","name"?,"resumable"?}` answers `200` with the job. Its
//!   `upload_url` is a signed-URL-like XML start URL of this server (bucket
//!   `compliance-uploads`, object `JOB/ids.txt`) valid 15 minutes (configurable); resumable
//!   jobs start a session there (G1), others `PUT` the whole file to it.
//! - `GET /2/compliance/jobs/{id}` answers `created` until the upload is complete, then
//!   `in_progress` for [`ServerConfig::compliance_polls`](crate::ServerConfig) − 1 polls, then
//!   `complete` (or `failed` when a line of the upload is not a numeric id); `expired` when
//!   nothing was uploaded before the upload URL expired. `GET /2/compliance/jobs?type=T`
//!   lists jobs.
//! - `download_url` (no auth) answers the results as JSON Lines once complete, `404` before.
//!   The results are deterministic: an id `n` gets a line when `n % 3 != 0`, with reason
//!   `["deleted", "suspended", "protected", "deactivated"][n % 4]`.

use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, SystemTime};

use serde_json::{Value, json};

use crate::http::Response;
use crate::server::{Ctx, Outcome};
use crate::util;

/// The bucket compliance uploads land in.
pub(crate) const UPLOAD_BUCKET: &str = "compliance-uploads";
/// The path prefix of download URLs.
pub(crate) const RESULTS_PREFIX: &str = "/compliance-results/";
/// How long results may be downloaded.
const DOWNLOAD_TTL: Duration = Duration::from_secs(7 * 24 * 3600);

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Status {
    Created,
    InProgress,
    Complete,
    Failed,
    Expired,
}

impl Status {
    fn as_str(self) -> &'static str {
        match self {
            Status::Created => "created",
            Status::InProgress => "in_progress",
            Status::Complete => "complete",
            Status::Failed => "failed",
            Status::Expired => "expired",
        }
    }
}

struct Job {
    id: String,
    kind: String,
    name: Option<String>,
    resumable: bool,
    created: SystemTime,
    upload_expires: SystemTime,
    upload_url: String,
    download_url: String,
    polls_after_upload: u32,
    status: Status,
    results: Option<Vec<u8>>,
}

impl Job {
    fn object_name(&self) -> String {
        format!("{}/ids.txt", self.id)
    }

    fn to_json(&self) -> Value {
        let mut v = json!({
            "id": self.id,
            "type": self.kind,
            "status": self.status.as_str(),
            "resumable": self.resumable,
            "upload_url": self.upload_url,
            "upload_expires_at": util::rfc3339(self.upload_expires),
            "download_url": self.download_url,
            "download_expires_at": util::rfc3339(self.created + DOWNLOAD_TTL),
            "created_at": util::rfc3339(self.created),
        });
        if let Some(n) = &self.name {
            v["name"] = Value::String(n.clone());
        }
        v
    }
}

/// All compliance state of a server.
#[derive(Default)]
pub(crate) struct Compliance {
    jobs: Mutex<Vec<Job>>,
}

impl Compliance {
    fn jobs(&self) -> MutexGuard<'_, Vec<Job>> {
        self.jobs.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// A Twitter API v2 problem (RFC 7807) answer.
fn problem(status: u16, title: &str, detail: &str) -> Response {
    Response::new(status).json(&json!({
        "title": title,
        "detail": detail,
        "type": "about:blank",
        "status": status,
    }))
}

fn invalid(message: &str) -> Response {
    Response::new(400).json(&json!({
        "errors": [{"message": message}],
        "title": "Invalid Request",
        "detail": "One or more parameters to your request was invalid.",
        "type": "https://api.twitter.com/2/problems/invalid-request",
    }))
}

/// App-only auth (C1): `Some(answer)` when missing.
fn check_bearer(ctx: &Ctx<'_>) -> Option<Response> {
    let ok = ctx
        .req
        .header("authorization")
        .and_then(|a| a.strip_prefix("Bearer "))
        .is_some_and(|t| !t.trim().is_empty());
    (!ok).then(|| problem(401, "Unauthorized", "Unauthorized"))
}

/// `POST /2/compliance/jobs` (C1).
pub(crate) fn create(ctx: &mut Ctx<'_>) -> Outcome {
    let body = match ctx.body.read_small(64 * 1024) {
        Ok(b) => b,
        Err(true) => return Outcome::Respond(invalid("the body is too large")),
        Err(false) => return Outcome::Drop,
    };
    if let Some(r) = check_bearer(ctx) {
        return Outcome::Respond(r);
    }
    let Ok(Value::Object(req)) = serde_json::from_slice::<Value>(&body) else {
        return Outcome::Respond(invalid("the body must be a JSON object"));
    };
    let kind = match req.get("type").and_then(Value::as_str) {
        Some(k @ ("tweets" | "users")) => k.to_owned(),
        _ => {
            return Outcome::Respond(invalid(
                "The `type` query parameter value must be one of [tweets, users]",
            ));
        }
    };
    let name = match req.get("name") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => Some(s.clone()),
        Some(_) => return Outcome::Respond(invalid("`name` must be a string")),
    };
    let resumable = match req.get("resumable") {
        None | Some(Value::Null) => false,
        Some(Value::Bool(b)) => *b,
        Some(_) => return Outcome::Respond(invalid("`resumable` must be a boolean")),
    };
    let id = format!(
        "{}",
        1_000_000_000_000_000_000 + util::random_u64() % 8_000_000_000_000_000_000
    );
    let origin = ctx.origin();
    let ttl = ctx.shared.config.compliance_upload_ttl;
    let created = SystemTime::now();
    let mut job = Job {
        id: id.clone(),
        kind,
        name,
        resumable,
        created,
        upload_expires: created + ttl,
        upload_url: String::new(),
        download_url: String::new(),
        polls_after_upload: 0,
        status: Status::Created,
        results: None,
    };
    job.upload_url =
        crate::gcs::signed_url(&origin, UPLOAD_BUCKET, &job.object_name(), ttl, resumable);
    job.download_url = format!(
        "{origin}{RESULTS_PREFIX}{id}/results.json?X-Goog-Algorithm=GOOG4-RSA-SHA256&X-Goog-Date={}&X-Goog-Expires={}&X-Goog-Signature={:016x}",
        util::goog_date(created),
        DOWNLOAD_TTL.as_secs(),
        util::random_u64()
    );
    let answer = json!({ "data": job.to_json() });
    ctx.shared.compliance.jobs().push(job);
    Outcome::Respond(Response::new(200).json(&answer))
}

/// Moves a job on: `poll` counts a status request (C3).
fn advance(ctx: &Ctx<'_>, job: &mut Job, poll: bool) {
    if matches!(
        job.status,
        Status::Complete | Status::Failed | Status::Expired
    ) {
        return;
    }
    match ctx.shared.gcs.object(UPLOAD_BUCKET, &job.object_name()) {
        Some(object) => {
            if poll {
                job.polls_after_upload += 1;
            }
            job.status = Status::InProgress;
            if job.polls_after_upload >= ctx.shared.config.compliance_polls.max(1) {
                match results(&object.data.to_vec()) {
                    Some(r) => {
                        job.results = Some(r);
                        job.status = Status::Complete;
                    }
                    None => job.status = Status::Failed,
                }
            }
        }
        None if SystemTime::now() > job.upload_expires => job.status = Status::Expired,
        None => {}
    }
}

/// JSON Lines results for uploaded ids; `None` when a line is not an id.
fn results(upload: &[u8]) -> Option<Vec<u8>> {
    let text = std::str::from_utf8(upload).ok()?;
    let now = util::rfc3339(SystemTime::now());
    let mut out = Vec::new();
    for line in text.lines() {
        let line = line.trim();
        if line.is_empty() {
            continue;
        }
        if line.len() > 19 {
            return None;
        }
        let id = crate::http::parse_u64(line)?;
        if id % 3 == 0 {
            continue;
        }
        let reason = ["deleted", "suspended", "protected", "deactivated"][(id % 4) as usize];
        let v = json!({
            "id": line,
            "action": "delete",
            "created_at": now,
            "redacted_at": now,
            "reason": reason,
        });
        out.extend_from_slice(v.to_string().as_bytes());
        out.push(b'\n');
    }
    Some(out)
}

/// `GET /2/compliance/jobs/{id}` (C3).
pub(crate) fn status(ctx: &mut Ctx<'_>, id: &str) -> Outcome {
    if let Some(r) = check_bearer(ctx) {
        return Outcome::Respond(r);
    }
    let mut jobs = ctx.shared.compliance.jobs();
    let Some(job) = jobs.iter_mut().find(|j| j.id == id) else {
        return Outcome::Respond(problem(
            404,
            "Not Found Error",
            &format!("Could not find compliance job with id: [{id}]."),
        ));
    };
    advance(ctx, job, true);
    let answer = json!({ "data": job.to_json() });
    Outcome::Respond(Response::new(200).json(&answer))
}

/// `GET /2/compliance/jobs?type=T[&status=S]`.
pub(crate) fn list(ctx: &mut Ctx<'_>) -> Outcome {
    if let Some(r) = check_bearer(ctx) {
        return Outcome::Respond(r);
    }
    let Some(kind) = ctx
        .req
        .query_param("type")
        .filter(|t| *t == "tweets" || *t == "users")
        .map(str::to_owned)
    else {
        return Outcome::Respond(invalid(
            "The `type` query parameter value must be one of [tweets, users]",
        ));
    };
    let status = ctx.req.query_param("status").map(str::to_owned);
    let mut jobs = ctx.shared.compliance.jobs();
    let mut data = Vec::new();
    for job in jobs.iter_mut().filter(|j| j.kind == kind) {
        advance(ctx, job, false);
        if status.as_deref().is_none_or(|s| s == job.status.as_str()) {
            data.push(job.to_json());
        }
    }
    let count = data.len();
    Outcome::Respond(Response::new(200).json(&json!({
        "data": data,
        "meta": {"result_count": count},
    })))
}

/// `GET download_url` (C3): JSON Lines once complete.
pub(crate) fn download(ctx: &mut Ctx<'_>, id: &str) -> Outcome {
    let jobs = ctx.shared.compliance.jobs();
    let results = jobs
        .iter()
        .find(|j| j.id == id)
        .and_then(|j| j.results.clone());
    drop(jobs);
    match results {
        Some(r) => Outcome::Respond(Response::new(200).body("application/octet-stream", r)),
        None => Outcome::Respond(
            Response::new(404).body(
                "application/xml; charset=UTF-8",
                b"<?xml version='1.0' encoding='UTF-8'?><Error><Code>NoSuchKey</Code><Message>The specified key does not exist.</Message></Error>".to_vec(),
            ),
        ),
    }
}
