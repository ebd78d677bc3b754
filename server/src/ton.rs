//! The server side of TON (Twitter Object Nest) uploads (T1–T6), as documented in the seed.
//!
//! - `POST /1.1/ton/bucket/{bucket}` with `Content-Type` and `Content-Length` (under 64 MiB)
//!   stores the body as a new object: `201` + `Location: /1.1/ton/bucket/{bucket}/{name}` (T1).
//! - `POST /1.1/ton/bucket/{bucket}?resumable=true` (T2) needs `Content-Length: 0`,
//!   `Content-Type`, `X-TON-Content-Type` equal to it (ASCII case and surrounding spaces
//!   aside), `X-TON-Content-Length` (1 byte to [`ServerConfig::max_object_size`](crate::ServerConfig::max_object_size)) and
//!   optionally `X-TON-Expires`, an RFC 1123 date at most 7 days ahead (also in TON's `… UTC`
//!   spelling; required when [`ServerConfig::ton_require_expires`](crate::ServerConfig::ton_require_expires) is set). It answers `201`
//!   (T3) with a **relative** `Location:
//!   /1.1/ton/bucket/{bucket}/{random}.{ext}?resumable=true&resumeId=N`,
//!   `X-TON-Min-Chunk-Size` and `X-TON-Max-Chunk-Size` ([`ServerConfig::ton_min_chunk`](crate::ServerConfig::ton_min_chunk),
//!   [`ServerConfig::ton_max_chunk`](crate::ServerConfig::ton_max_chunk)) and `Expires`: the `X-TON-Expires` given, else
//!   [`ServerConfig::ton_upload_ttl`](crate::ServerConfig::ton_upload_ttl) from now, written as TON does (`… UTC`). The extension
//!   comes from the content type (`video/mp4` → `mp4`, unknown → `bin`).
//! - `PUT Location` (T4) needs `Content-Type` equal to the upload's, `Content-Length`, and
//!   `Content-Range: bytes A-B/T` with `T` the declared total. A chunk must be under 64 MiB
//!   ([`resumable_core::ton::CHUNK_LIMIT`]; `413`, answered before reading it) and at most
//!   the maximum; every chunk but the last (the one ending at `T`) a multiple of the minimum.
//!   Any other chunk is `400`, and so is a chunk starting past the bytes held (a gap). Bytes
//!   resent below what is held are read and ignored. TON has no status query: `bytes */T` is
//!   `400`.
//! - A non-final chunk answers `308` with `Range` in [`ServerConfig::ton_range_form`](crate::ServerConfig::ton_range_form)
//!   (default [`TonRangeForm::Plain`], `Range: 0-N` with N the last byte held, as T5
//!   documents; no `Range` while nothing is held). The chunk that completes the upload
//!   answers `201` + `Location: /1.1/ton/bucket/{bucket}/{name}` (T6); a chunk sent after
//!   completion (a client whose `201` was lost) gets the same answer again.
//! - A body cut short (the client went away, or `drop-after`) keeps the received prefix
//!   rounded down to the minimum chunk size.
//! - An upload past its `Expires`, or expired by the `expire` fault, answers `404`.
//! - `GET /1.1/ton/bucket/{bucket}/{name}` answers a stored object's bytes.
//! - Errors are JSON `{"errors":[{"message":…}]}`.
//!
//! A request to a bucket path carrying `session-faults=SCRIPT` (or a start request carrying
//! `x-resumable-session-faults`) attaches a fault script to the upload (see [`crate::fault`]).

use std::collections::HashMap;
use std::fmt;
use std::ops::Range;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime};

use crate::parse::{ContentRange, content_range as parse_content_range};
use resumable_core::ton::CHUNK_LIMIT;
use serde_json::json;

use crate::blob::Blob;
use crate::fault::{FaultScript, FaultState};
use crate::http::{BodyState, Response, percent_decode, percent_encode};
use crate::server::{Ctx, Outcome};
use crate::util;

/// Where TON paths start.
pub(crate) const PREFIX: &str = "/1.1/ton/bucket/";
/// How far ahead an `X-TON-Expires` may be (T2), plus a minute for clocks and rounding.
const MAX_EXPIRES_AHEAD: Duration = Duration::from_secs(7 * 24 * 3600 + 60);
/// How long a request waits for another request on the same upload to finish.
const BUSY_WAIT: Duration = Duration::from_secs(10);

/// How the `Range` of a TON `308` is written (T5).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum TonRangeForm {
    /// `Range: 0-N`, N the last byte held: the form TON documents (T5). The default.
    #[default]
    Plain,
    /// `Range: bytes=0-N`, N the last byte held (the HTTP and GCS form).
    Bytes,
    /// `Range: 0-L`, L the number of bytes held: the seed's literal words ("current uploaded
    /// length").
    Length,
}

impl TonRangeForm {
    /// The name used in fault specs: `plain`, `bytes` or `length`.
    pub fn name(self) -> &'static str {
        match self {
            TonRangeForm::Plain => "plain",
            TonRangeForm::Bytes => "bytes",
            TonRangeForm::Length => "length",
        }
    }

    /// Parses [`TonRangeForm::name`]'s output.
    pub(crate) fn parse(text: &str) -> Option<Self> {
        [
            TonRangeForm::Plain,
            TonRangeForm::Bytes,
            TonRangeForm::Length,
        ]
        .into_iter()
        .find(|f| f.name() == text)
    }

    /// The `Range` value for `held` bytes starting at `start` (`None`: no header).
    fn value(self, start: u64, held: u64) -> Option<String> {
        if held == 0 && start == 0 {
            return None;
        }
        let last = held.max(start.saturating_add(1)) - 1;
        Some(match self {
            TonRangeForm::Plain => format!("{start}-{last}"),
            TonRangeForm::Bytes => format!("bytes={start}-{last}"),
            TonRangeForm::Length => format!("{start}-{held}"),
        })
    }
}

impl fmt::Display for TonRangeForm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Inspection of a resumable TON upload.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct TonUploadInfo {
    /// The `resumeId` of its location.
    pub resume_id: String,
    /// The location the start answered (relative, as sent).
    pub location: String,
    /// Bucket.
    pub bucket: String,
    /// The object's name (`{random}.{ext}`), under which it is stored once complete.
    pub name: String,
    /// `X-TON-Content-Type`.
    pub content_type: String,
    /// `X-TON-Content-Length`.
    pub total: u64,
    /// Bytes held (the prefix a `308` reports).
    pub stored: u64,
    /// `X-TON-Min-Chunk-Size` answered.
    pub min_chunk: u64,
    /// `X-TON-Max-Chunk-Size` answered.
    pub max_chunk: u64,
    /// When it expires (`Expires`).
    pub expires: SystemTime,
    /// Request-body bytes received on its chunks (re-sent bytes count again).
    pub body_bytes_received: u64,
    /// Requests on it after the start.
    pub requests: u64,
    /// Whether the object is complete.
    pub complete: bool,
    /// Whether it is gone (expired).
    pub gone: bool,
}

/// A resumable upload.
pub(crate) struct Upload {
    pub(crate) resume_id: String,
    location: String,
    bucket: String,
    name: String,
    content_type: String,
    total: u64,
    min: u64,
    max: u64,
    expires: SystemTime,
    /// A session fault script.
    pub(crate) script: Option<FaultScript>,
    state: Mutex<UploadState>,
    cv: Condvar,
}

/// An upload's mutable part.
pub(crate) struct UploadState {
    stored: u64,
    /// The held bytes; `None` while a request is writing them.
    blob: Option<Blob>,
    completed: bool,
    expired: bool,
    pub(crate) body_bytes: u64,
    pub(crate) requests: u64,
    pub(crate) faults: FaultState,
}

impl Upload {
    pub(crate) fn lock(&self) -> MutexGuard<'_, UploadState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn is_gone(&self, st: &UploadState) -> bool {
        st.expired || SystemTime::now() > self.expires
    }

    /// Takes the blob, waiting (boundedly) for a concurrent request to give it back.
    fn take_blob<'a>(
        &'a self,
        mut st: MutexGuard<'a, UploadState>,
    ) -> (MutexGuard<'a, UploadState>, Option<Blob>) {
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

    fn put_blob(&self, st: &mut UploadState, blob: Blob) {
        st.blob = Some(blob);
        self.cv.notify_all();
    }

    fn info(&self) -> TonUploadInfo {
        let st = self.lock();
        TonUploadInfo {
            resume_id: self.resume_id.clone(),
            location: self.location.clone(),
            bucket: self.bucket.clone(),
            name: self.name.clone(),
            content_type: self.content_type.clone(),
            total: self.total,
            stored: st.stored,
            min_chunk: self.min,
            max_chunk: self.max,
            expires: self.expires,
            body_bytes_received: st.body_bytes,
            requests: st.requests,
            complete: st.completed,
            gone: self.is_gone(&st),
        }
    }

    /// The stored object's location (T6).
    fn object_location(&self) -> String {
        object_location(&self.bucket, &self.name)
    }
}

/// A stored object.
struct TonObject {
    content_type: String,
    data: Blob,
}

/// All TON state of a server.
#[derive(Default)]
pub(crate) struct Ton {
    uploads: Mutex<HashMap<String, Arc<Upload>>>,
    objects: Mutex<HashMap<(String, String), Arc<TonObject>>>,
}

impl Ton {
    fn uploads(&self) -> MutexGuard<'_, HashMap<String, Arc<Upload>>> {
        self.uploads.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn objects(&self) -> MutexGuard<'_, HashMap<(String, String), Arc<TonObject>>> {
        self.objects.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// An upload by `resumeId` (gone ones too: the handler answers 404 for them).
    pub(crate) fn upload(&self, resume_id: &str) -> Option<Arc<Upload>> {
        self.uploads().get(resume_id).cloned()
    }

    /// Inspection of an upload, by location or `resumeId`.
    pub(crate) fn upload_info(&self, location_or_id: &str) -> Option<TonUploadInfo> {
        self.upload(&resume_id_of(location_or_id)).map(|u| u.info())
    }

    /// Inspection of every upload.
    pub(crate) fn all_uploads(&self) -> Vec<TonUploadInfo> {
        let uploads: Vec<Arc<Upload>> = self.uploads().values().cloned().collect();
        uploads.iter().map(|u| u.info()).collect()
    }

    /// Expires an upload now. Returns whether it existed.
    pub(crate) fn expire(&self, location_or_id: &str) -> bool {
        match self.upload(&resume_id_of(location_or_id)) {
            Some(u) => {
                u.lock().expired = true;
                true
            }
            None => false,
        }
    }

    /// A copy of the bytes an upload holds (its persisted prefix; the object's once complete).
    pub(crate) fn upload_bytes(&self, location_or_id: &str) -> Option<Vec<u8>> {
        let upload = self.upload(&resume_id_of(location_or_id))?;
        let st = upload.lock();
        if st.completed {
            drop(st);
            return self.object(&upload.bucket, &upload.name);
        }
        let (mut st, blob) = upload.take_blob(st);
        let blob = blob?;
        let out = blob.copy_range(0..st.stored);
        upload.put_blob(&mut st, blob);
        Some(out)
    }

    /// The bytes of a stored object, by name or location.
    pub(crate) fn object(&self, bucket: &str, name_or_location: &str) -> Option<Vec<u8>> {
        let name = object_name_of(bucket, name_or_location);
        self.objects()
            .get(&(bucket.to_owned(), name))
            .map(|o| o.data.to_vec())
    }

    /// Forgets an object. Returns whether it existed.
    pub(crate) fn remove_object(&self, bucket: &str, name_or_location: &str) -> bool {
        let name = object_name_of(bucket, name_or_location);
        self.objects().remove(&(bucket.to_owned(), name)).is_some()
    }

    /// Forgets uploads that are gone.
    fn purge(&self) {
        self.uploads().retain(|_, u| {
            let st = u.lock();
            !u.is_gone(&st)
        });
    }

    fn store(&self, bucket: &str, name: &str, content_type: &str, data: Blob) {
        let object = Arc::new(TonObject {
            content_type: content_type.to_owned(),
            data,
        });
        // The replaced object, if any, is dropped after the lock is released.
        let old = self
            .objects()
            .insert((bucket.to_owned(), name.to_owned()), object);
        drop(old);
    }
}

/// The `resumeId` of a location, or the argument itself.
fn resume_id_of(location_or_id: &str) -> String {
    let query = location_or_id.split_once('?').map_or("", |(_, q)| q);
    crate::http::parse_query(query)
        .and_then(|q| q.into_iter().find(|(k, _)| k == "resumeId").map(|(_, v)| v))
        .unwrap_or_else(|| location_or_id.to_owned())
}

/// The object name in a location (`…/1.1/ton/bucket/{bucket}/{name}[?…]`), or the argument.
fn object_name_of(bucket: &str, name_or_location: &str) -> String {
    let prefix = format!("{PREFIX}{}/", percent_encode(bucket));
    match name_or_location.find(&prefix) {
        Some(at) => {
            let rest = &name_or_location[at + prefix.len()..];
            let rest = rest.split(['?', '#']).next().unwrap_or("");
            percent_decode(rest, false).unwrap_or_else(|| rest.to_owned())
        }
        None => name_or_location.to_owned(),
    }
}

/// `/1.1/ton/bucket/{bucket}/{name}`.
fn object_location(bucket: &str, name: &str) -> String {
    format!(
        "{PREFIX}{}/{}",
        percent_encode(bucket),
        percent_encode(name)
    )
}

/// `/1.1/ton/bucket/{bucket}` → the bucket.
pub(crate) fn bucket_path(path: &str) -> Option<String> {
    let bucket = path.strip_prefix(PREFIX)?;
    (!bucket.is_empty() && !bucket.contains('/'))
        .then(|| percent_decode(bucket, false))
        .flatten()
}

/// `/1.1/ton/bucket/{bucket}/{name}` → bucket and name.
pub(crate) fn object_path(path: &str) -> Option<(String, String)> {
    let rest = path.strip_prefix(PREFIX)?;
    let (bucket, name) = rest.split_once('/')?;
    if bucket.is_empty() || name.is_empty() || name.contains('/') {
        return None;
    }
    Some((percent_decode(bucket, false)?, percent_decode(name, false)?))
}

/// A TON error answer.
pub(crate) fn error(status: u16, message: &str) -> Response {
    Response::new(status).json(&json!({ "errors": [{ "message": message }] }))
}

/// An HTTP date in TON's spelling (T3: `Wed, 05 Nov 2014 23:50:16 UTC`).
fn ton_date(t: SystemTime) -> String {
    let text = httpdate::fmt_http_date(t);
    match text.strip_suffix("GMT") {
        Some(stem) => format!("{stem}UTC"),
        None => text,
    }
}

/// An RFC 1123 date, also spelled with `UTC` or `+0000` instead of `GMT`.
fn parse_date(text: &str) -> Option<SystemTime> {
    let text = text.trim();
    if let Ok(t) = httpdate::parse_http_date(text) {
        return Some(t);
    }
    let stem = text
        .strip_suffix("UTC")
        .or_else(|| text.strip_suffix("+0000"))?;
    httpdate::parse_http_date(&format!("{stem}GMT")).ok()
}

/// `X-TON-Expires` (T2): `Ok(None)` when absent, `Err(answer)` when unusable.
fn requested_expiry(ctx: &Ctx<'_>) -> Result<Option<SystemTime>, Response> {
    let Some(raw) = ctx.req.headers.get("x-ton-expires") else {
        return Ok(None);
    };
    let at = raw
        .to_str()
        .ok()
        .and_then(parse_date)
        .ok_or_else(|| error(400, "X-TON-Expires is not an RFC 1123 date (T2)"))?;
    let now = SystemTime::now();
    if at <= now {
        return Err(error(400, "X-TON-Expires is in the past"));
    }
    if at > now + MAX_EXPIRES_AHEAD {
        return Err(error(400, "X-TON-Expires is more than 7 days ahead (T2)"));
    }
    Ok(Some(at))
}

/// Whether two content types are the same (surrounding spaces and ASCII case aside).
fn same_type(a: &str, b: &str) -> bool {
    a.trim().eq_ignore_ascii_case(b.trim())
}

/// The file extension for a content type.
fn extension(content_type: &str) -> String {
    let essence = content_type
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    let known = match essence.as_str() {
        "video/mp4" => Some("mp4"),
        "video/quicktime" => Some("mov"),
        "image/jpeg" => Some("jpg"),
        "image/png" => Some("png"),
        "image/gif" => Some("gif"),
        "image/webp" => Some("webp"),
        "text/plain" => Some("txt"),
        "text/csv" => Some("csv"),
        "application/json" => Some("json"),
        "application/octet-stream" => Some("bin"),
        _ => None,
    };
    if let Some(ext) = known {
        return ext.to_owned();
    }
    let sub = essence.split_once('/').map_or("", |(_, s)| s);
    if !sub.is_empty() && sub.len() <= 8 && sub.bytes().all(|b| b.is_ascii_alphanumeric()) {
        sub.to_owned()
    } else {
        "bin".to_owned()
    }
}

/// A random name of 11 characters from `[A-Za-z0-9_-]`, like TON's `SzFxGfAg_Zj`.
fn random_name() -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-";
    let mut bits = util::random_u64();
    (0..11)
        .map(|_| {
            let c = ALPHABET[(bits & 63) as usize] as char;
            bits >>= 6;
            c
        })
        .collect()
}

/// The `Content-Type` of a request (T1, T2, T4): `Err(answer)` when missing.
fn content_type(ctx: &Ctx<'_>) -> Result<String, Response> {
    match ctx.req.header("content-type").map(str::trim) {
        Some(t) if !t.is_empty() => Ok(t.to_owned()),
        _ => Err(error(400, "Content-Type is required")),
    }
}

// ---- T1: single request ----

/// `POST /1.1/ton/bucket/{bucket}`: the whole file in one request (T1).
pub(crate) fn single(ctx: &mut Ctx<'_>, bucket: &str) -> Outcome {
    let content_type = match content_type(ctx) {
        Ok(t) => t,
        Err(r) => return Outcome::Respond(r),
    };
    let Some(length) = ctx.req.content_length() else {
        return Outcome::Close(error(411, "Content-Length is required (T1)"));
    };
    if length >= CHUNK_LIMIT {
        return Outcome::Close(error(
            413,
            "a single-request upload must be under 64 MiB: use a resumable upload (T1)",
        ));
    }
    if length > ctx.shared.config.max_object_size {
        return Outcome::Close(error(413, "the object is larger than this server accepts"));
    }
    if let Err(r) = requested_expiry(ctx) {
        return Outcome::Respond(r);
    }
    let mut blob = Blob::default();
    ctx.body.read_into(&mut blob, length);
    if ctx.body.state() != BodyState::Done {
        return Outcome::Drop;
    }
    let name = format!("{}.{}", random_name(), extension(&content_type));
    ctx.shared.ton.store(bucket, &name, &content_type, blob);
    Outcome::Respond(Response::new(201).header("Location", object_location(bucket, &name)))
}

// ---- T2, T3: start ----

/// `POST /1.1/ton/bucket/{bucket}?resumable=true` (T2) → `201` (T3).
pub(crate) fn start(ctx: &mut Ctx<'_>, bucket: &str) -> Outcome {
    let cfg = &ctx.shared.config;
    match ctx.req.headers.get("content-length") {
        None => return Outcome::Close(error(411, "Content-Length: 0 is required (T2)")),
        Some(_) if ctx.req.content_length() != Some(0) => {
            return Outcome::Close(error(
                400,
                "the start request carries no body: Content-Length: 0 (T2)",
            ));
        }
        Some(_) => {}
    }
    let content_type = match content_type(ctx) {
        Ok(t) => t,
        Err(r) => return Outcome::Respond(r),
    };
    match ctx.req.header("x-ton-content-type") {
        None => {
            return Outcome::Respond(error(400, "X-TON-Content-Type is required (T2)"));
        }
        Some(t) if !same_type(t, &content_type) => {
            return Outcome::Respond(error(
                400,
                "X-TON-Content-Type must be identical to Content-Type (T2)",
            ));
        }
        Some(_) => {}
    }
    let total = match ctx
        .req
        .header("x-ton-content-length")
        .map(|v| crate::http::parse_u64(v.trim()))
    {
        None => return Outcome::Respond(error(400, "X-TON-Content-Length is required (T2)")),
        Some(None) => {
            return Outcome::Respond(error(400, "X-TON-Content-Length is not a number"));
        }
        Some(Some(0)) => {
            return Outcome::Respond(error(
                400,
                "X-TON-Content-Length must be at least 1: use a single request for empty files",
            ));
        }
        Some(Some(t)) => t,
    };
    if total > cfg.max_object_size {
        return Outcome::Respond(error(413, "the object is larger than this server accepts"));
    }
    let expires = match requested_expiry(ctx) {
        Ok(Some(at)) => at,
        Ok(None) if cfg.ton_require_expires => {
            return Outcome::Respond(error(400, "this bucket requires X-TON-Expires (T2)"));
        }
        Ok(None) => SystemTime::now() + cfg.ton_upload_ttl,
        Err(r) => return Outcome::Respond(r),
    };
    let script = match crate::server::session_script(ctx.req) {
        Ok(s) => s,
        Err(message) => return Outcome::Respond(error(400, &message)),
    };
    let ton = &ctx.shared.ton;
    ton.purge();
    let name = format!("{}.{}", random_name(), extension(&content_type));
    let (min, max) = (cfg.ton_min_chunk.max(1), cfg.ton_max_chunk.max(1));
    let mut uploads = ton.uploads();
    // Eight-digit ids like the seed's; a collision takes the next number.
    let mut id = 10_000_000 + util::random_u64() % 90_000_000;
    while uploads.contains_key(&id.to_string()) {
        id += 1;
    }
    let resume_id = id.to_string();
    let location = format!(
        "{}?resumable=true&resumeId={resume_id}",
        object_location(bucket, &name)
    );
    uploads.insert(
        resume_id.clone(),
        Arc::new(Upload {
            resume_id: resume_id.clone(),
            location: location.clone(),
            bucket: bucket.to_owned(),
            name,
            content_type,
            total,
            min,
            max,
            expires,
            script,
            state: Mutex::new(UploadState {
                stored: 0,
                blob: Some(Blob::default()),
                completed: false,
                expired: false,
                body_bytes: 0,
                requests: 0,
                faults: FaultState::default(),
            }),
            cv: Condvar::new(),
        }),
    );
    drop(uploads);
    ctx.upload_id = Some(resume_id);
    Outcome::Respond(
        Response::new(201)
            .header("Location", location)
            .header("X-TON-Min-Chunk-Size", min.to_string())
            .header("X-TON-Max-Chunk-Size", max.to_string())
            .header("Expires", ton_date(expires)),
    )
}

// ---- T4–T6: chunks ----

/// The `308` for `stored` bytes (T5), shaped by the 308 faults.
fn resume_incomplete(ctx: &Ctx<'_>, stored: u64) -> Response {
    let f = &ctx.faults;
    let form = f.range_form.unwrap_or(ctx.shared.config.ton_range_form);
    let claimed = stored.saturating_add(f.lie.unwrap_or(0));
    let start = f.range_start.unwrap_or(0);
    let mut r = Response::new(308);
    if !f.no_range
        && let Some(value) = form.value(start, claimed)
    {
        r = r.header("Range", value);
    }
    r
}

/// The `201` of a complete upload (T6).
fn created(upload: &Upload) -> Response {
    Response::new(201).header("Location", upload.object_location())
}

/// `PUT Location`: a chunk (T4), answered `308` (T5) or `201` (T6).
pub(crate) fn chunk(ctx: &mut Ctx<'_>, upload: &Arc<Upload>, bucket: &str, name: &str) -> Outcome {
    let mut st = upload.lock();
    if ctx.faults.expire {
        st.expired = true;
    }
    if upload.is_gone(&st) || upload.bucket != bucket || upload.name != name {
        return Outcome::Respond(error(404, "no such upload (it may have expired)"));
    }
    if st.completed {
        drop(st);
        return Outcome::Respond(created(upload));
    }
    match ctx.req.header("content-type") {
        Some(t) if same_type(t, &upload.content_type) => {}
        _ => {
            return Outcome::Respond(error(
                400,
                "a chunk's Content-Type must be the upload's X-TON-Content-Type (T4)",
            ));
        }
    }
    let Some(length) = ctx.req.content_length() else {
        return Outcome::Close(error(411, "Content-Length is required (T4)"));
    };
    let Some(ContentRange { range, total }) = ctx
        .req
        .header("content-range")
        .and_then(parse_content_range)
    else {
        return Outcome::Respond(error(
            400,
            "Content-Range: bytes A-B/T is required and must parse (T4)",
        ));
    };
    let Some(range) = range else {
        return Outcome::Respond(error(
            400,
            "TON has no status query: every chunk carries bytes A-B (T4)",
        ));
    };
    if total != Some(upload.total) {
        return Outcome::Respond(error(
            400,
            &format!(
                "the Content-Range total must be X-TON-Content-Length ({})",
                upload.total
            ),
        ));
    }
    let len = range.end - range.start;
    if length != len {
        return Outcome::Respond(error(
            400,
            &format!("Content-Length {length} does not match the Content-Range ({len} bytes)"),
        ));
    }
    if len >= CHUNK_LIMIT {
        return Outcome::Close(error(413, "a chunk must be under 64 MiB (T4)"));
    }
    if len > upload.max {
        return Outcome::Respond(error(
            400,
            &format!(
                "a chunk may be at most X-TON-Max-Chunk-Size ({}) bytes; this one has {len} (T4)",
                upload.max
            ),
        ));
    }
    if range.end < upload.total && len % upload.min != 0 {
        return Outcome::Respond(error(
            400,
            &format!(
                "every chunk but the last must be a multiple of X-TON-Min-Chunk-Size ({}); this one has {len} (T4)",
                upload.min
            ),
        ));
    }
    if range.start > st.stored {
        return Outcome::Respond(error(
            400,
            &format!(
                "the chunk starts at {} but only {} bytes are held: no gaps",
                range.start, st.stored
            ),
        ));
    }
    write(ctx, upload, st, range)
}

/// Reads a chunk's body into the upload and answers. The body is read without the upload's
/// lock (the blob is taken out meanwhile, so the upload is busy).
fn write<'a>(
    ctx: &mut Ctx<'_>,
    upload: &'a Arc<Upload>,
    st: MutexGuard<'a, UploadState>,
    range: Range<u64>,
) -> Outcome {
    let (st, blob) = upload.take_blob(st);
    let Some(mut blob) = blob else {
        return Outcome::Respond(error(503, "another request is writing this upload"));
    };
    let stored = st.stored;
    drop(st);

    // Bytes below `stored` are ignored; the rest goes straight into the blob.
    let skip = stored.min(range.end) - range.start;
    let skipped = ctx.body.discard(skip);
    if skipped == skip && range.end > stored {
        ctx.body.read_into(&mut blob, range.end - stored);
    }
    let received_end = range.start + ctx.body.received();
    let keep = match ctx.body.state() {
        // Cut short: keep whole minimum chunks of what arrived.
        BodyState::Cut => (received_end / upload.min * upload.min)
            .max(stored)
            .min(range.end),
        BodyState::Open | BodyState::Done => {
            let mut keep = range.end.max(stored);
            if let Some(p) = ctx.faults.persist {
                keep = keep.min(range.start.saturating_add(p)).max(stored);
            }
            keep
        }
    };
    blob.truncate(keep);
    let mut st = upload.lock();
    if upload.is_gone(&st) {
        // Expired while the body was arriving.
        blob.truncate(stored);
        upload.put_blob(&mut st, blob);
        return Outcome::Respond(error(404, "no such upload (it may have expired)"));
    }
    st.stored = keep;
    if keep == upload.total {
        // Stored before the upload says complete, so inspection never sees one without the
        // other (the objects lock is only ever taken after an upload's).
        ctx.shared
            .ton
            .store(&upload.bucket, &upload.name, &upload.content_type, blob);
        st.completed = true;
        upload.put_blob(&mut st, Blob::default());
        drop(st);
        if ctx.body.state() == BodyState::Cut {
            return Outcome::Drop;
        }
        return Outcome::Respond(created(upload));
    }
    upload.put_blob(&mut st, blob);
    drop(st);
    if ctx.body.state() == BodyState::Cut {
        return Outcome::Drop;
    }
    Outcome::Respond(resume_incomplete(ctx, keep))
}

/// `GET /1.1/ton/bucket/{bucket}/{name}`: a stored object's bytes.
pub(crate) fn get_object(ctx: &mut Ctx<'_>, bucket: &str, name: &str) -> Outcome {
    let object = ctx
        .shared
        .ton
        .objects()
        .get(&(bucket.to_owned(), name.to_owned()))
        .cloned();
    match object {
        Some(o) => Outcome::Respond(Response::new(200).body(&o.content_type, o.data.to_vec())),
        None => Outcome::Respond(error(404, "no such object")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn range_forms_t5() {
        assert_eq!(TonRangeForm::Plain.value(0, 0), None);
        assert_eq!(
            TonRangeForm::Plain.value(0, 262_144).as_deref(),
            Some("0-262143")
        );
        assert_eq!(
            TonRangeForm::Bytes.value(0, 262_144).as_deref(),
            Some("bytes=0-262143")
        );
        assert_eq!(
            TonRangeForm::Length.value(0, 262_144).as_deref(),
            Some("0-262144")
        );
        assert_eq!(TonRangeForm::Plain.value(5, 0).as_deref(), Some("5-5"));
        for f in [
            TonRangeForm::Plain,
            TonRangeForm::Bytes,
            TonRangeForm::Length,
        ] {
            assert_eq!(TonRangeForm::parse(f.name()), Some(f));
        }
    }

    #[test]
    fn names_dates_and_paths() {
        assert_eq!(extension("video/mp4"), "mp4");
        assert_eq!(extension("Image/JPEG; q=1"), "jpg");
        assert_eq!(extension("audio/x-wav"), "bin");
        assert_eq!(extension("audio/ogg"), "ogg");
        assert_eq!(random_name().len(), 11);
        let t = SystemTime::UNIX_EPOCH + Duration::from_secs(1_415_227_816);
        assert_eq!(ton_date(t), "Wed, 05 Nov 2014 22:50:16 UTC");
        assert_eq!(parse_date(&ton_date(t)), Some(t));
        assert_eq!(parse_date("Wed, 05 Nov 2014 22:50:16 GMT"), Some(t));
        assert_eq!(parse_date("tomorrow"), None);
        assert_eq!(
            bucket_path("/1.1/ton/bucket/ta_partner").as_deref(),
            Some("ta_partner")
        );
        assert_eq!(bucket_path("/1.1/ton/bucket/"), None);
        assert_eq!(
            object_path("/1.1/ton/bucket/b/x.mp4"),
            Some(("b".to_owned(), "x.mp4".to_owned()))
        );
        assert_eq!(object_path("/1.1/ton/bucket/b/x/y"), None);
        assert_eq!(
            object_name_of(
                "b",
                "http://h/1.1/ton/bucket/b/x.mp4?resumable=true&resumeId=1"
            ),
            "x.mp4"
        );
        assert_eq!(object_name_of("b", "x.mp4"), "x.mp4");
        assert_eq!(
            resume_id_of("/1.1/ton/bucket/b/x.mp4?resumable=true&resumeId=123"),
            "123"
        );
        assert_eq!(resume_id_of("123"), "123");
    }
}
