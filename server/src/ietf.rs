//! The server side of the IETF "Resumable Uploads for HTTP" draft (rules R1–R19 in
//! `docs/protocols/ietf.md`), at interop versions 5 to 9, chosen per request by the
//! `Upload-Draft-Interop-Version` the client sends (R1). Its fields are read by the small
//! strict structured-field readers below, not by the client's parser.
//!
//! - Every request needs `Upload-Draft-Interop-Version: 5`…`9` (`400` otherwise); requests
//!   to an upload must repeat the version it was created with (`400`).
//! - `OPTIONS /ietf/files` answers `204` with `Upload-Limit` (R12).
//! - `POST /ietf/files` with `Upload-Complete: ?1` or `?0` creates an upload (R3); the length
//!   comes from `Upload-Length` or from `?1` with `Content-Length` (disagreeing: `400` with
//!   the inconsistent-length problem type from interop 7 on; above the largest size: `413`).
//!   Before reading the body it sends `104 Upload Resumption Supported` with `Location`,
//!   the interop version and `Upload-Limit` (R4). A body cut short keeps what arrived and is
//!   never complete (R16). `?1` with all bytes answers `200` with `Upload-Complete: ?1`;
//!   otherwise `201` with `Location`, `Upload-Offset`, `Upload-Complete: ?0` and `Upload-Limit`.
//! - `HEAD` answers `204` with `Upload-Offset`, `Upload-Complete`, `Upload-Length` when known,
//!   `Upload-Limit` and `Cache-Control: no-store` (R7).
//! - `PATCH` needs `Content-Type: application/partial-upload` from interop 6 on (`415`),
//!   `Upload-Offset` equal to the bytes held (`409` with the right `Upload-Offset`, and from
//!   interop 7 on a mismatching-upload-offset problem body, R10), `Upload-Complete`; a body
//!   past the length or [`ServerConfig::ietf_max_append_size`](crate::ServerConfig::ietf_max_append_size)
//!   is `413` with `Upload-Limit` (R12). It answers `204` with `Upload-Complete: ?0`, or `200`
//!   with `?1` when it completed the upload; `Upload-Offset` is on the answer before interop
//!   7, and from 7 on only when less than the whole body was kept (R19). An empty `?1` append to a complete upload replays `200`.
//! - `DELETE` answers `204` and forgets the upload (R13); later requests get `404`.
//! - An expired upload (past `max-age`, or by the `expire` fault) answers `410`.
//! - `GET` on an upload answers the bytes it holds.
//!
//! One request writes an upload at a time; another meeting it waits, then answers `423`.
//! Faults: kinds `ietf.options`, `ietf.create`, `ietf.head`, `ietf.append`, `ietf.delete`,
//! `ietf.other` (see [`crate::fault`]).

use std::collections::HashMap;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime};

use crate::blob::Blob;
use crate::fault::RequestKind;
use crate::http::{BodyState, Request, Response};
use crate::server::{Ctx, Outcome};
use crate::util;

/// Where the draft's paths start: the creation URL is `BASE/ietf/files`.
pub(crate) const PREFIX: &str = "/ietf/files";
const PARTIAL_UPLOAD: &str = "application/partial-upload";
const INTEROP: &str = "upload-draft-interop-version";
const BUSY_WAIT: Duration = Duration::from_secs(5);
const PROBLEM_OFFSET: &str =
    "https://iana.org/assignments/http-problem-types#mismatching-upload-offset";
const PROBLEM_LENGTH: &str =
    "https://iana.org/assignments/http-problem-types#inconsistent-upload-length";

/// Inspection of an upload of the draft.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct IetfUploadInfo {
    /// Its id (the last segment of its URL).
    pub id: String,
    /// The interop version it was created with.
    pub interop: u32,
    /// Its length, once known.
    pub length: Option<u64>,
    /// Bytes held: the `Upload-Offset` a `HEAD` answers.
    pub offset: u64,
    /// Whether the client completed it (`Upload-Complete: ?1` with every byte).
    pub complete: bool,
    /// Request-body bytes received on it (re-sent bytes count again).
    pub body_bytes_received: u64,
    /// Requests on it after the creation.
    pub requests: u64,
    /// `104` responses sent for it.
    pub interim_sent: u64,
}

pub(crate) struct Upload {
    id: String,
    interop: u32,
    state: Mutex<State>,
    cv: Condvar,
}

struct State {
    length: Option<u64>,
    stored: u64,
    complete: bool,
    blob: Option<Blob>,
    expires: Option<SystemTime>,
    expired: bool,
    body_bytes: u64,
    requests: u64,
    interim: u64,
}

impl Upload {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn is_gone(st: &State) -> bool {
        st.expired || (!st.complete && st.expires.is_some_and(|e| SystemTime::now() >= e))
    }

    fn take_blob<'a>(
        &'a self,
        mut st: MutexGuard<'a, State>,
    ) -> (MutexGuard<'a, State>, Option<Blob>) {
        let deadline = Instant::now() + BUSY_WAIT;
        while st.blob.is_none() {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return (st, None);
            }
            st = self
                .cv
                .wait_timeout(st, left)
                .map(|(g, _)| g)
                .unwrap_or_else(|e| e.into_inner().0);
        }
        let blob = st.blob.take();
        (st, blob)
    }

    fn put_blob(&self, st: &mut State, blob: Blob) {
        st.blob = Some(blob);
        self.cv.notify_all();
    }

    fn info(&self) -> IetfUploadInfo {
        let st = self.lock();
        IetfUploadInfo {
            id: self.id.clone(),
            interop: self.interop,
            length: st.length,
            offset: st.stored,
            complete: st.complete,
            body_bytes_received: st.body_bytes,
            requests: st.requests,
            interim_sent: st.interim,
        }
    }
}

/// All draft uploads of a server.
#[derive(Default)]
pub(crate) struct Ietf {
    uploads: Mutex<HashMap<String, Arc<Upload>>>,
}

impl Ietf {
    fn uploads(&self) -> MutexGuard<'_, HashMap<String, Arc<Upload>>> {
        self.uploads.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(crate) fn upload(&self, id: &str) -> Option<Arc<Upload>> {
        self.uploads().get(id).cloned()
    }

    /// Inspection of an upload, by URL, path or id.
    pub(crate) fn upload_info(&self, url_or_id: &str) -> Option<IetfUploadInfo> {
        self.upload(id_of(url_or_id)).map(|u| u.info())
    }

    /// Inspection of every upload.
    pub(crate) fn all_uploads(&self) -> Vec<IetfUploadInfo> {
        let uploads: Vec<Arc<Upload>> = self.uploads().values().cloned().collect();
        uploads.iter().map(|u| u.info()).collect()
    }

    /// A copy of the bytes an upload holds.
    pub(crate) fn upload_bytes(&self, url_or_id: &str) -> Option<Vec<u8>> {
        let upload = self.upload(id_of(url_or_id))?;
        let st = upload.lock();
        let (mut st, blob) = upload.take_blob(st);
        let blob = blob?;
        let out = blob.copy_range(0..st.stored);
        upload.put_blob(&mut st, blob);
        Some(out)
    }
}

fn id_of(url_or_id: &str) -> &str {
    let no_query = url_or_id.split(['?', '#']).next().unwrap_or_default();
    no_query.rsplit('/').next().unwrap_or_default()
}

/// Where a path goes: `Some(None)` is the creation URL, `Some(Some(id))` an upload.
pub(crate) fn route_path(path: &str) -> Option<Option<String>> {
    let rest = path.strip_prefix(PREFIX)?;
    match rest {
        "" | "/" => Some(None),
        _ => {
            let id = rest.strip_prefix('/')?;
            (!id.is_empty() && !id.contains('/')).then(|| Some(id.to_owned()))
        }
    }
}

/// The fault kind of a request to a draft path.
pub(crate) fn kind(req: &Request, on_upload: bool) -> RequestKind {
    match (req.method.as_str(), on_upload) {
        ("OPTIONS", _) => RequestKind::IetfOptions,
        ("POST", false) => RequestKind::IetfCreate,
        ("HEAD", true) => RequestKind::IetfHead,
        ("PATCH", true) => RequestKind::IetfAppend,
        ("DELETE", true) => RequestKind::IetfDelete,
        _ => RequestKind::IetfOther,
    }
}

/// A plain-text error answer.
pub(crate) fn error(status: u16, message: &str) -> Response {
    Response::new(status).body(
        "text/plain; charset=utf-8",
        format!("{message}\n").into_bytes(),
    )
}

fn problem(status: u16, interop: u32, kind: &str, detail: serde_json::Value) -> Response {
    if interop < 7 {
        return error(status, kind);
    }
    let mut body = serde_json::json!({ "type": kind, "title": "upload problem" });
    if let (Some(map), serde_json::Value::Object(extra)) = (body.as_object_mut(), detail) {
        map.extend(extra);
    }
    Response::new(status).body("application/problem+json", body.to_string().into_bytes())
}

// ---- strict structured-field readers (RFC 9651, the few forms the draft uses) ----

/// The one value of a header as text, with the surrounding spaces a field may have;
/// `Err` when repeated or not text.
fn single<'a>(req: &'a Request, name: &str) -> Result<Option<&'a str>, String> {
    let mut values = req.headers.get_all(name).iter();
    let Some(first) = values.next() else {
        return Ok(None);
    };
    if values.next().is_some() {
        return Err(format!("{name} appears more than once"));
    }
    first
        .to_str()
        .map(|t| Some(t.trim_matches(' ')))
        .map_err(|_| format!("{name} is not text"))
}

/// An sf-integer Item without parameters, non-negative: 1 to 15 digits (R2).
fn sf_non_negative(text: &str) -> Option<u64> {
    if text.is_empty() || text.len() > 15 || !text.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    text.parse().ok()
}

/// An sf-boolean Item without parameters: `?1` or `?0` (R2).
fn sf_boolean(text: &str) -> Option<bool> {
    match text {
        "?1" => Some(true),
        "?0" => Some(false),
        _ => None,
    }
}

fn integer_header(req: &Request, name: &str) -> Result<Option<u64>, String> {
    match single(req, name)? {
        None => Ok(None),
        Some(t) => sf_non_negative(t)
            .map(Some)
            .ok_or_else(|| format!("{name} must be a non-negative structured-field integer")),
    }
}

fn boolean_header(req: &Request, name: &str) -> Result<Option<bool>, String> {
    match single(req, name)? {
        None => Ok(None),
        Some(t) => sf_boolean(t)
            .map(Some)
            .ok_or_else(|| format!("{name} must be ?1 or ?0")),
    }
}

/// The interop version of a request (R1): 5 to 9.
fn interop_of(req: &Request) -> Result<u32, String> {
    match integer_header(req, INTEROP)? {
        Some(v @ 5..=9) => Ok(v as u32),
        Some(v) => Err(format!(
            "interop version {v} is not spoken here (5 to 9 are)"
        )),
        None => Err("Upload-Draft-Interop-Version is required".into()),
    }
}

/// `Upload-Limit` as this server announces it at `interop` (R11, R19).
fn limit_value(ctx: &Ctx<'_>, interop: u32, expires: Option<SystemTime>) -> String {
    let mut parts = vec![
        "min-size=0".to_owned(),
        format!(
            "max-size={}",
            ctx.shared.config.max_object_size.min(999_999_999_999_999)
        ),
    ];
    if let Some(m) = ctx.shared.config.ietf_max_append_size {
        parts.push(format!("max-append-size={m}"));
    }
    if let Some(at) = expires {
        let left = at
            .duration_since(SystemTime::now())
            .unwrap_or_default()
            .as_secs();
        let key = if interop >= 7 { "max-age" } else { "expires" };
        parts.push(format!("{key}={left}"));
    }
    parts.join(", ")
}

fn flag(b: bool) -> &'static str {
    if b { "?1" } else { "?0" }
}

/// Handles a request to a draft path.
pub(crate) fn handle(ctx: &mut Ctx<'_>, id: Option<&str>, upload: Option<&Arc<Upload>>) -> Outcome {
    let interop = match interop_of(ctx.req) {
        Ok(v) => v,
        Err(e) => return Outcome::Respond(error(400, &e)),
    };
    let method = ctx.req.method.clone();
    let Some(id) = id else {
        return match method.as_str() {
            "OPTIONS" => Outcome::Respond(
                Response::new(204).header("Upload-Limit", limit_value(ctx, interop, None)),
            ),
            "POST" => create(ctx, interop),
            _ => Outcome::Respond(error(405, "the creation URL takes POST and OPTIONS")),
        };
    };
    let Some(upload) = upload else {
        return Outcome::Respond(error(404, &format!("no upload {id}")));
    };
    ctx.upload_id = Some(upload.id.clone());
    if upload.interop != interop {
        return Outcome::Respond(error(
            400,
            &format!(
                "the upload was created at interop version {}",
                upload.interop
            ),
        ));
    }
    {
        let mut st = upload.lock();
        st.requests += 1;
        if ctx.faults.expire {
            st.expired = true;
        }
        if Upload::is_gone(&st) {
            return Outcome::Respond(error(410, "the upload expired"));
        }
    }
    match method.as_str() {
        "HEAD" => Outcome::Respond(head(ctx, upload)),
        "PATCH" => append(ctx, upload),
        "DELETE" => {
            ctx.shared.ietf.uploads().remove(&upload.id);
            Outcome::Respond(Response::new(204))
        }
        "GET" => match ctx.shared.ietf.upload_bytes(&upload.id) {
            Some(bytes) => {
                Outcome::Respond(Response::new(200).body("application/octet-stream", bytes))
            }
            None => Outcome::Respond(error(423, "the upload is being written")),
        },
        _ => Outcome::Respond(error(405, "an upload takes HEAD, PATCH, DELETE and GET")),
    }
}

/// The creation (R3, R4, R5).
fn create(ctx: &mut Ctx<'_>, interop: u32) -> Outcome {
    let req = ctx.req;
    let complete = match boolean_header(req, "upload-complete") {
        Ok(Some(c)) => c,
        Ok(None) => {
            return Outcome::Respond(error(400, "a resumable creation needs Upload-Complete"));
        }
        Err(e) => return Outcome::Respond(error(400, &e)),
    };
    let declared = match integer_header(req, "upload-length") {
        Ok(l) => l,
        Err(e) => return Outcome::Respond(error(400, &e)),
    };
    let content_length = req.content_length();
    let implied = if complete { content_length } else { None };
    let length = match (declared, implied) {
        (Some(a), Some(b)) if a != b => {
            return Outcome::Close(problem(400, interop, PROBLEM_LENGTH, serde_json::json!({})));
        }
        (a, b) => a.or(b),
    };
    let max = ctx.shared.config.max_object_size;
    if length.is_some_and(|n| n > max) {
        return Outcome::Close(
            error(413, "the upload is larger than this server takes")
                .header("Upload-Limit", limit_value(ctx, interop, None)),
        );
    }
    if content_length.is_some_and(|n| length.is_some_and(|l| n > l)) {
        return Outcome::Close(problem(400, interop, PROBLEM_LENGTH, serde_json::json!({})));
    }
    if let (Some(m), Some(n)) = (ctx.shared.config.ietf_max_append_size, content_length)
        && n > m
    {
        return Outcome::Close(
            error(413, "the content is larger than max-append-size")
                .header("Upload-Limit", limit_value(ctx, interop, None)),
        );
    }
    let expires = ctx
        .shared
        .config
        .ietf_upload_ttl
        .map(|t| SystemTime::now() + t);
    let id = util::random_id();
    let upload = Arc::new(Upload {
        id: id.clone(),
        interop,
        state: Mutex::new(State {
            length,
            stored: 0,
            complete: false,
            blob: None,
            expires,
            expired: false,
            body_bytes: 0,
            requests: 0,
            interim: 1,
        }),
        cv: Condvar::new(),
    });
    ctx.upload_id = Some(id.clone());
    let location = format!("{}{PREFIX}/{id}", ctx.origin());
    ctx.shared
        .ietf
        .uploads()
        .insert(id.clone(), Arc::clone(&upload));
    // R4: the upload resource is announced before any byte is read.
    ctx.body.send_interim(
        104,
        "Upload Resumption Supported",
        &[
            ("Upload-Draft-Interop-Version", interop.to_string()),
            ("Location", location.clone()),
            ("Upload-Limit", limit_value(ctx, interop, expires)),
        ],
    );
    let mut blob = Blob::default();
    let cap = length.unwrap_or(max);
    let before = ctx.body.received();
    ctx.body.read_into(&mut blob, cap);
    let got = ctx.body.received() - before;
    let mut keep = blob.len();
    if let Some(p) = ctx.faults.persist
        && ctx.body.state() != BodyState::Cut
    {
        keep = keep.min(p);
    }
    blob.truncate(keep);
    let cut = ctx.body.state() == BodyState::Cut;
    let done = complete && !cut && Some(keep) == length;
    {
        let mut st = upload.lock();
        st.stored = keep;
        st.body_bytes += got;
        st.complete = done;
        upload.put_blob(&mut st, blob);
    }
    if cut {
        return Outcome::Drop;
    }
    if done {
        let mut r = Response::new(200)
            .header("Upload-Complete", "?1")
            .header("Location", location);
        if interop < 7 {
            r = r.header("Upload-Offset", keep.to_string());
        }
        return Outcome::Respond(r);
    }
    let mut r = Response::new(201)
        .header("Location", location)
        .header("Upload-Complete", "?0")
        .header("Upload-Limit", limit_value(ctx, interop, expires));
    if !ctx.faults.no_range {
        let claimed = keep + ctx.faults.lie.map_or(0, |n| n.max(1));
        r = r.header("Upload-Offset", claimed.to_string());
    }
    Outcome::Respond(r)
}

/// Offset retrieval (R7).
fn head(ctx: &Ctx<'_>, upload: &Upload) -> Response {
    let st = upload.lock();
    let mut r = Response::new(204)
        .header("Cache-Control", "no-store")
        .header("Upload-Complete", flag(st.complete))
        .header("Upload-Limit", limit_value(ctx, upload.interop, st.expires));
    if !ctx.faults.no_range {
        let offset = st.stored + ctx.faults.lie.map_or(0, |n| n.max(1));
        r = r.header("Upload-Offset", offset.to_string());
    }
    if let Some(n) = st.length {
        r = r.header("Upload-Length", n.to_string());
    }
    r
}

/// Append (R9, R10, R12).
fn append(ctx: &mut Ctx<'_>, upload: &Arc<Upload>) -> Outcome {
    let req = ctx.req;
    let interop = upload.interop;
    if interop >= 6 && req.header("content-type").map(str::trim) != Some(PARTIAL_UPLOAD) {
        return Outcome::Close(error(
            415,
            "an append needs Content-Type: application/partial-upload",
        ));
    }
    let offset = match integer_header(req, "upload-offset") {
        Ok(Some(o)) => o,
        Ok(None) => return Outcome::Close(error(400, "an append needs Upload-Offset")),
        Err(e) => return Outcome::Close(error(400, &e)),
    };
    let complete = match boolean_header(req, "upload-complete") {
        Ok(Some(c)) => c,
        Ok(None) => return Outcome::Close(error(400, "an append needs Upload-Complete")),
        Err(e) => return Outcome::Close(error(400, &e)),
    };
    let declared = match integer_header(req, "upload-length") {
        Ok(l) => l,
        Err(e) => return Outcome::Close(error(400, &e)),
    };
    let content_length = req.content_length();
    let st = upload.lock();
    let (mut st, blob) = upload.take_blob(st);
    let Some(mut blob) = blob else {
        return Outcome::Close(error(423, "another request is writing this upload"));
    };
    let stored = st.stored;
    let expires = st.expires;
    let refuse = |st: &mut State, blob: Blob, r: Response| {
        upload.put_blob(st, blob);
        Outcome::Close(r)
    };
    if st.complete {
        if offset == stored && complete && content_length == Some(0) {
            // R7: the final answer again, for a client that lost it.
            upload.put_blob(&mut st, blob);
            return Outcome::Respond(Response::new(200).header("Upload-Complete", "?1"));
        }
        return refuse(&mut st, blob, error(400, "the upload is already complete"));
    }
    if offset != stored {
        let r = problem(
            409,
            interop,
            PROBLEM_OFFSET,
            serde_json::json!({ "expected-offset": stored, "provided-offset": offset }),
        )
        .header("Upload-Offset", stored.to_string())
        .header("Upload-Complete", "?0");
        return refuse(&mut st, blob, r);
    }
    let implied = match (complete, content_length) {
        (true, Some(n)) => Some(stored + n),
        _ => None,
    };
    let length = match (st.length, declared, implied) {
        (Some(a), Some(b), _) | (Some(a), _, Some(b)) | (None, Some(a), Some(b)) if a != b => {
            let r = problem(400, interop, PROBLEM_LENGTH, serde_json::json!({}));
            return refuse(&mut st, blob, r);
        }
        (a, b, c) => a.or(b).or(c),
    };
    let max = ctx.shared.config.max_object_size;
    if length.is_some_and(|n| n > max) {
        let r = error(413, "the upload is larger than this server takes")
            .header("Upload-Limit", limit_value(ctx, interop, expires));
        return refuse(&mut st, blob, r);
    }
    let room = length.unwrap_or(max).saturating_sub(stored);
    let too_big = content_length.is_some_and(|n| {
        n > room
            || ctx
                .shared
                .config
                .ietf_max_append_size
                .is_some_and(|m| n > m)
    });
    if too_big {
        let r = error(
            413,
            "the content is larger than the upload or max-append-size allow",
        )
        .header("Upload-Limit", limit_value(ctx, interop, expires));
        return refuse(&mut st, blob, r);
    }
    st.length = length;
    drop(st);
    let before = ctx.body.received();
    ctx.body.read_into(&mut blob, room);
    let got = ctx.body.received() - before;
    if ctx.body.state() == BodyState::Open && ctx.body.more() {
        blob.truncate(stored);
        let mut st = upload.lock();
        upload.put_blob(&mut st, blob);
        return Outcome::Close(error(413, "the body passes the upload's length"));
    }
    let cut = ctx.body.state() == BodyState::Cut;
    let mut keep = blob.len();
    if let Some(p) = ctx.faults.persist
        && !cut
    {
        keep = keep.min(stored.saturating_add(p));
    }
    blob.truncate(keep);
    let done = complete && !cut && Some(keep) == length;
    let mut st = upload.lock();
    st.stored = keep;
    st.body_bytes += got;
    st.complete = done;
    upload.put_blob(&mut st, blob);
    drop(st);
    if cut {
        return Outcome::Drop;
    }
    let mut r = if done {
        Response::new(200).header("Upload-Complete", "?1")
    } else {
        Response::new(204).header("Upload-Complete", "?0")
    };
    // R19: from interop 7 on the offset is left out when the whole body was kept (the 2xx
    // says so); when `persist` kept less, or a lie is told, it is said.
    let lie = ctx.faults.lie.map(|n| n.max(1));
    let kept_all = keep == stored + got;
    if !ctx.faults.no_range && (interop < 7 || lie.is_some() || !kept_all) {
        r = r.header("Upload-Offset", (keep + lie.unwrap_or(0)).to_string());
    }
    Outcome::Respond(r)
}

#[cfg(test)]
mod tests {
    use super::*;

    // R2: only the structured-field forms the draft defines are read.
    #[test]
    fn r2_fields_are_read_strictly() {
        assert_eq!(sf_non_negative("0"), Some(0));
        assert_eq!(
            sf_non_negative("999999999999999"),
            Some(999_999_999_999_999)
        );
        for bad in [
            "",
            "-1",
            "+1",
            "1.0",
            "1000000000000000",
            "1;a",
            "\"1\"",
            " 1",
        ] {
            assert_eq!(sf_non_negative(bad), None, "{bad:?}");
        }
        assert_eq!(sf_boolean("?1"), Some(true));
        assert_eq!(sf_boolean("?0"), Some(false));
        for bad in ["true", "1", "?true", "?2", ""] {
            assert_eq!(sf_boolean(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn paths_name_the_creation_url_or_an_upload() {
        assert_eq!(route_path("/ietf/files"), Some(None));
        assert_eq!(route_path("/ietf/files/abc"), Some(Some("abc".to_owned())));
        assert_eq!(route_path("/ietf/files/a/b"), None);
        assert_eq!(route_path("/ietf/filesx"), None);
        assert_eq!(id_of("http://h:1/ietf/files/abc?x=1"), "abc");
    }
}
