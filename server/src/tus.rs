//! The server side of tus 1.0 (rules U1–U15 in `docs/protocols/tus.md`), with the
//! extensions creation, creation-with-upload, creation-defer-length, checksum (sha1, md5),
//! expiration and termination.
//!
//! - `OPTIONS /tus/files/` (or an upload URL) answers `204` with `Tus-Version: 1.0.0`,
//!   `Tus-Extension`, `Tus-Max-Size` ([`ServerConfig::max_object_size`](crate::ServerConfig::max_object_size)) and
//!   `Tus-Checksum-Algorithm: sha1,md5` (U2). It needs no `Tus-Resumable`.
//! - Every other request needs `Tus-Resumable: 1.0.0`, else `412` with `Tus-Version` (U1);
//!   every answer carries `Tus-Resumable: 1.0.0`. A `POST` with `X-HTTP-Method-Override`
//!   is handled as the method it names (U5).
//! - `POST /tus/files/` creates an upload (U6): exactly one of `Upload-Length: N` and
//!   `Upload-Defer-Length: 1` (anything else is `400`; above the maximum size `413`), an
//!   optional `Upload-Metadata` checked strictly (U7), and either no body
//!   (`Content-Length: 0`) or the first bytes with `Content-Type:
//!   application/offset+octet-stream` (U8). It answers `201` with an absolute `Location:
//!   {origin}/tus/files/{random id}`, `Upload-Expires` (U10,
//!   [`ServerConfig::tus_upload_ttl`](crate::ServerConfig::tus_upload_ttl)) and, with data, `Upload-Offset`.
//! - `HEAD` on an upload answers `200` with `Upload-Offset`, `Upload-Length` or
//!   `Upload-Defer-Length: 1`, `Upload-Metadata` as sent, `Upload-Expires` and
//!   `Cache-Control: no-store` (U3).
//! - `PATCH` needs `Content-Type: application/offset+octet-stream` (`415` otherwise) and
//!   `Upload-Offset` equal to the bytes held (`409` otherwise, nothing changes); it may carry
//!   `Upload-Length` while the length is deferred (once, not below the offset: `400`), and
//!   `Upload-Checksum: ALGO BASE64` (U11: an unknown algorithm is `400`, a wrong digest
//!   `460`, and either way nothing of the body is kept). A body that would pass the length is
//!   `413`, answered before it is read. It answers `204` with the new `Upload-Offset` (U4). A
//!   body cut short keeps what arrived (without a checksum): the offset may then lie anywhere
//!   in the chunk. A `PATCH` with no bytes to a complete upload answers `204` and its offset.
//!   A request meeting another one writing the same upload waits, then answers `423`.
//! - `DELETE` answers `204` and forgets the upload (U12); later requests get `404`.
//! - An expired upload (past its `Upload-Expires`, or by the `expire` fault) answers `410`;
//!   an unknown one `404`.
//! - `GET` on an upload answers the bytes it holds.
//!
//! Faults (see [`crate::fault`]; kinds `tus.options`, `tus.create`, `tus.head`, `tus.patch`,
//! `tus.delete`, `tus.other`): `status`, `retry-after`, `stall`, `truncate` and `drop-after`
//! as everywhere (a `PATCH` cut by `drop-after` keeps the bytes that arrived, unless it
//! carried a checksum); `persist:N` keeps only the first `N` bytes of a `PATCH` body and
//! answers so; `lie[:N]` makes a `HEAD` or `PATCH` answer claim `N` more bytes than held;
//! `no-range` leaves `Upload-Offset` out of a `HEAD` or `PATCH` answer; `expire` expires the
//! upload before the request. A creation request carrying `session-faults=SCRIPT` (query) or
//! `x-resumable-session-faults` attaches a script to the upload it creates.

use std::collections::HashMap;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use md5::Digest as _;

use crate::blob::Blob;
use crate::fault::{FaultScript, FaultState, RequestKind};
use crate::http::{BodyState, Request, Response};
use crate::server::{Ctx, Outcome};
use crate::util;

/// Where tus paths start: the creation URL is `BASE/tus/files/`.
pub(crate) const PREFIX: &str = "/tus/files";
/// The extensions the server offers (U2).
const EXTENSIONS: &str =
    "creation,creation-with-upload,creation-defer-length,checksum,expiration,termination";
/// The checksum algorithms the server offers (U11).
const ALGORITHMS: &str = "sha1,md5";
const OFFSET_OCTET_STREAM: &str = "application/offset+octet-stream";
/// How long a request waits for another request on the same upload to finish.
const BUSY_WAIT: Duration = Duration::from_secs(5);
/// The most body bytes a checksummed PATCH may carry (it is held until verified).
const MAX_CHECKSUMMED: u64 = 256 << 20;

/// Inspection of a tus upload.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct TusUploadInfo {
    /// Its id (the last segment of its URL).
    pub id: String,
    /// Its path: `/tus/files/{id}`.
    pub path: String,
    /// `Upload-Length`, once known (U6, U9).
    pub length: Option<u64>,
    /// Bytes held: the `Upload-Offset` a HEAD answers.
    pub offset: u64,
    /// The `Upload-Metadata` value as sent at creation.
    pub metadata: Option<String>,
    /// The metadata, decoded: key and value bytes, in order.
    pub metadata_pairs: Vec<(String, Vec<u8>)>,
    /// When it expires (`Upload-Expires`), if it does.
    pub expires: Option<SystemTime>,
    /// Request-body bytes received on it (re-sent bytes count again).
    pub body_bytes_received: u64,
    /// Requests on it after the creation.
    pub requests: u64,
    /// `460` answers it gave (checksum mismatches).
    pub checksum_mismatches: u64,
    /// Whether every byte of a known length is held.
    pub complete: bool,
    /// Whether it is gone (expired).
    pub gone: bool,
}

/// A tus upload.
pub(crate) struct Upload {
    pub(crate) id: String,
    metadata: Option<String>,
    metadata_pairs: Vec<(String, Vec<u8>)>,
    /// A session fault script.
    pub(crate) script: Option<FaultScript>,
    state: Mutex<UploadState>,
    cv: Condvar,
}

/// An upload's mutable part.
pub(crate) struct UploadState {
    length: Option<u64>,
    stored: u64,
    /// The held bytes; `None` while a request is writing them.
    blob: Option<Blob>,
    expires: Option<SystemTime>,
    expired: bool,
    mismatches: u64,
    pub(crate) body_bytes: u64,
    pub(crate) requests: u64,
    pub(crate) faults: FaultState,
}

impl Upload {
    pub(crate) fn lock(&self) -> MutexGuard<'_, UploadState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn is_gone(st: &UploadState) -> bool {
        st.expired || st.expires.is_some_and(|e| SystemTime::now() >= e)
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

    fn info(&self) -> TusUploadInfo {
        let st = self.lock();
        TusUploadInfo {
            id: self.id.clone(),
            path: format!("{PREFIX}/{}", self.id),
            length: st.length,
            offset: st.stored,
            metadata: self.metadata.clone(),
            metadata_pairs: self.metadata_pairs.clone(),
            expires: st.expires,
            body_bytes_received: st.body_bytes,
            requests: st.requests,
            checksum_mismatches: st.mismatches,
            complete: st.length == Some(st.stored),
            gone: Self::is_gone(&st),
        }
    }
}

/// All tus state of a server.
#[derive(Default)]
pub(crate) struct Tus {
    uploads: Mutex<HashMap<String, Arc<Upload>>>,
}

impl Tus {
    fn uploads(&self) -> MutexGuard<'_, HashMap<String, Arc<Upload>>> {
        self.uploads.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// An upload by id (gone ones too: the handler answers 410 for them).
    pub(crate) fn upload(&self, id: &str) -> Option<Arc<Upload>> {
        self.uploads().get(id).cloned()
    }

    /// Inspection of an upload, by URL, path or id.
    pub(crate) fn upload_info(&self, url_or_id: &str) -> Option<TusUploadInfo> {
        self.upload(id_of(url_or_id)).map(|u| u.info())
    }

    /// Inspection of every upload.
    pub(crate) fn all_uploads(&self) -> Vec<TusUploadInfo> {
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

    /// Expires an upload now. Returns whether it existed.
    pub(crate) fn expire(&self, url_or_id: &str) -> bool {
        match self.upload(id_of(url_or_id)) {
            Some(u) => {
                u.lock().expired = true;
                true
            }
            None => false,
        }
    }

    fn insert(&self, upload: Arc<Upload>) {
        let mut uploads = self.uploads();
        // Forget uploads that expired long enough ago for no client to ask again.
        let now = SystemTime::now();
        uploads.retain(|_, u| {
            let st = u.lock();
            st.expires
                .is_none_or(|e| now <= e + Duration::from_secs(3600))
        });
        uploads.insert(upload.id.clone(), upload);
    }

    fn remove(&self, id: &str) {
        self.uploads().remove(id);
    }
}

/// The id in a URL, path or bare id: what follows the last `/`, without a query.
fn id_of(url_or_id: &str) -> &str {
    let no_query = url_or_id.split(['?', '#']).next().unwrap_or_default();
    no_query.rsplit('/').next().unwrap_or_default()
}

/// Where a tus path goes: `Some(None)` is the creation URL, `Some(Some(id))` an upload.
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

/// The method a request stands for: the `X-HTTP-Method-Override` of a `POST` (U5).
pub(crate) fn method(req: &Request) -> &str {
    match (req.method.as_str(), req.header("x-http-method-override")) {
        ("POST", Some(m)) => m.trim(),
        (m, _) => m,
    }
}

/// The fault kind of a request to a tus path.
pub(crate) fn kind(req: &Request, on_upload: bool) -> RequestKind {
    match (method(req), on_upload) {
        ("OPTIONS", _) => RequestKind::TusOptions,
        ("POST", false) => RequestKind::TusCreate,
        ("HEAD", true) => RequestKind::TusHead,
        ("PATCH", true) => RequestKind::TusPatch,
        ("DELETE", true) => RequestKind::TusDelete,
        _ => RequestKind::TusOther,
    }
}

/// An answer with `Tus-Resumable` (U1) and a plain-text message.
pub(crate) fn error(status: u16, message: &str) -> Response {
    Response::new(status).header("Tus-Resumable", "1.0.0").body(
        "text/plain; charset=utf-8",
        format!("{message}\n").into_bytes(),
    )
}

fn answer(status: u16) -> Response {
    Response::new(status).header("Tus-Resumable", "1.0.0")
}

/// Handles a request to a tus path (`id`: the upload's, `upload`: it if it exists).
pub(crate) fn handle(ctx: &mut Ctx<'_>, id: Option<&str>, upload: Option<&Arc<Upload>>) -> Outcome {
    let method = method(ctx.req).to_owned();
    if ctx.req.method == "POST"
        && ctx.req.headers.contains_key("x-http-method-override")
        && !matches!(method.as_str(), "PATCH" | "DELETE" | "HEAD" | "POST")
    {
        return Outcome::Respond(error(
            400,
            "X-HTTP-Method-Override names no tus method (U5)",
        ));
    }
    if method == "OPTIONS" {
        return Outcome::Respond(options(ctx));
    }
    if method != "GET" && ctx.req.header("tus-resumable") != Some("1.0.0") {
        // U1: not processed; say which version is spoken.
        return Outcome::Respond(
            error(412, "Tus-Resumable: 1.0.0 is required (U1)").header("Tus-Version", "1.0.0"),
        );
    }
    let Some(id) = id else {
        return match method.as_str() {
            "POST" => create(ctx),
            _ => Outcome::Respond(error(405, "the creation URL takes POST and OPTIONS")),
        };
    };
    let Some(upload) = upload else {
        return Outcome::Respond(error(404, &format!("no upload {id}")));
    };
    ctx.upload_id = Some(upload.id.clone());
    {
        let mut st = upload.lock();
        if ctx.faults.expire {
            st.expired = true;
        }
        if Upload::is_gone(&st) {
            return Outcome::Respond(error(410, "the upload expired (U10)"));
        }
    }
    match method.as_str() {
        "HEAD" => Outcome::Respond(head(ctx, upload)),
        "PATCH" => patch(ctx, upload),
        "DELETE" => {
            ctx.shared.tus.remove(&upload.id);
            Outcome::Respond(answer(204))
        }
        "GET" => match ctx.shared.tus.upload_bytes(&upload.id) {
            Some(bytes) => Outcome::Respond(answer(200).body("application/octet-stream", bytes)),
            None => Outcome::Respond(error(423, "the upload is being written")),
        },
        _ => Outcome::Respond(error(
            405,
            "an upload URL takes HEAD, PATCH, DELETE, GET and OPTIONS",
        )),
    }
}

/// U2.
fn options(ctx: &Ctx<'_>) -> Response {
    answer(204)
        .header("Tus-Version", "1.0.0")
        .header("Tus-Extension", EXTENSIONS)
        .header(
            "Tus-Max-Size",
            ctx.shared.config.max_object_size.to_string(),
        )
        .header("Tus-Checksum-Algorithm", ALGORITHMS)
}

/// The one value of a header, as text; `Err` when repeated or not text.
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
        .map(|t| Some(t.trim_matches([' ', '\t'])))
        .map_err(|_| format!("{name} is not text"))
}

/// A header that must be a plain decimal (U3, U4, U6).
fn decimal_header(req: &Request, name: &str) -> Result<Option<u64>, String> {
    match single(req, name)? {
        None => Ok(None),
        Some(t) => crate::parse::decimal(t)
            .map(Some)
            .ok_or_else(|| format!("{name} must be a non-negative decimal number")),
    }
}

/// `Upload-Metadata` (U7), strictly: `key[ SP base64]` pairs separated by `,` (optional
/// whitespace around it), keys printable ASCII without space or comma, unique, values in the
/// standard base64 alphabet with padding.
fn parse_metadata(value: &str) -> Result<Vec<(String, Vec<u8>)>, String> {
    let mut out: Vec<(String, Vec<u8>)> = Vec::new();
    for (i, pair) in value.split(',').enumerate() {
        let pair = pair.trim_matches([' ', '\t']);
        let (key, encoded) = match pair.split_once(' ') {
            Some((k, v)) => (k, Some(v)),
            None => (pair, None),
        };
        if key.is_empty() || !key.bytes().all(|b| b.is_ascii_graphic() && b != b',') {
            return Err(format!(
                "Upload-Metadata pair {} has no valid key (U7)",
                i + 1
            ));
        }
        if out.iter().any(|(k, _)| k == key) {
            return Err(format!("Upload-Metadata repeats the key {key} (U7)"));
        }
        let value = match encoded {
            None => Vec::new(),
            Some(v) if v.is_empty() || v.contains(' ') => {
                return Err(format!("Upload-Metadata value of {key} is not base64 (U7)"));
            }
            Some(v) => BASE64
                .decode(v)
                .map_err(|_| format!("Upload-Metadata value of {key} is not padded base64 (U7)"))?,
        };
        out.push((key.to_owned(), value));
    }
    Ok(out)
}

/// `Upload-Checksum: ALGO BASE64` (U11): the algorithm and the digest bytes.
fn parse_checksum(value: &str) -> Result<(String, Vec<u8>), String> {
    let (algo, digest) = value
        .split_once(' ')
        .ok_or("Upload-Checksum must be 'algorithm base64' (U11)")?;
    if algo.is_empty()
        || !algo
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
    {
        return Err("Upload-Checksum names no algorithm (U11)".into());
    }
    let digest = BASE64
        .decode(digest)
        .map_err(|_| "Upload-Checksum's digest is not padded base64 (U11)".to_owned())?;
    Ok((algo.to_owned(), digest))
}

/// A digest being computed over a body.
enum Hasher {
    Sha1(sha1::Sha1),
    Md5(md5::Md5),
}

impl Hasher {
    fn new(algo: &str) -> Option<Self> {
        match algo {
            "sha1" => Some(Hasher::Sha1(sha1::Sha1::new())),
            "md5" => Some(Hasher::Md5(md5::Md5::new())),
            _ => None,
        }
    }

    fn update(&mut self, bytes: &[u8]) {
        match self {
            Hasher::Sha1(h) => h.update(bytes),
            Hasher::Md5(h) => h.update(bytes),
        }
    }

    fn finish(self) -> Vec<u8> {
        match self {
            Hasher::Sha1(h) => h.finalize().to_vec(),
            Hasher::Md5(h) => h.finalize().to_vec(),
        }
    }
}

fn with_expires(r: Response, expires: Option<SystemTime>) -> Response {
    match expires {
        Some(at) => r.header("Upload-Expires", httpdate::fmt_http_date(at)),
        None => r,
    }
}

/// `POST` to the creation URL (U6, U7, U8, U9).
fn create(ctx: &mut Ctx<'_>) -> Outcome {
    let req = ctx.req;
    let (length, defer) = match (
        decimal_header(req, "upload-length"),
        single(req, "upload-defer-length"),
    ) {
        (Err(e), _) | (_, Err(e)) => return Outcome::Respond(error(400, &e)),
        (Ok(l), Ok(d)) => (l, d),
    };
    let length = match (length, defer) {
        (Some(n), None) => Some(n),
        (None, Some("1")) => None,
        (Some(_), Some(_)) => {
            return Outcome::Respond(error(
                400,
                "Upload-Length and Upload-Defer-Length exclude each other (U6)",
            ));
        }
        (None, Some(_)) => {
            return Outcome::Respond(error(400, "Upload-Defer-Length must be 1 (U9)"));
        }
        (None, None) => {
            return Outcome::Respond(error(
                400,
                "a creation needs Upload-Length or Upload-Defer-Length: 1 (U6)",
            ));
        }
    };
    let max = ctx.shared.config.max_object_size;
    if length.is_some_and(|n| n > max) {
        return Outcome::Close(error(
            413,
            &format!("the largest upload is {max} bytes (U6)"),
        ));
    }
    let (metadata, pairs) = match single(req, "upload-metadata") {
        Err(e) => return Outcome::Respond(error(400, &e)),
        Ok(None) => (None, Vec::new()),
        Ok(Some(text)) => match parse_metadata(text) {
            Ok(pairs) => (Some(text.to_owned()), pairs),
            Err(e) => return Outcome::Respond(error(400, &e)),
        },
    };
    let has_body = req.content_length() != Some(0);
    if has_body && req.header("content-type") != Some(OFFSET_OCTET_STREAM) {
        return Outcome::Close(error(
            400,
            "data sent with the creation needs Content-Type: application/offset+octet-stream (U8)",
        ));
    }
    if has_body
        && let (Some(n), Some(len)) = (req.content_length(), length)
        && n > len
    {
        return Outcome::Close(error(413, "the data is longer than Upload-Length (U8)"));
    }
    let script = match crate::server::session_script(req) {
        Ok(s) => s,
        Err(e) => return Outcome::Respond(error(400, &e)),
    };
    let expires = ctx
        .shared
        .config
        .tus_upload_ttl
        .map(|ttl| SystemTime::now() + ttl);
    let id = util::random_id();
    let upload = Arc::new(Upload {
        id: id.clone(),
        metadata,
        metadata_pairs: pairs,
        script,
        state: Mutex::new(UploadState {
            length,
            stored: 0,
            blob: Some(Blob::default()),
            expires,
            expired: false,
            mismatches: 0,
            body_bytes: 0,
            requests: 0,
            faults: FaultState::default(),
        }),
        cv: Condvar::new(),
    });
    ctx.upload_id = Some(id.clone());
    let mut stored = 0;
    if has_body {
        let st = upload.lock();
        let (mut st, blob) = upload.take_blob(st);
        let mut blob = blob.unwrap_or_default();
        drop(st);
        let cap = length.unwrap_or(max);
        ctx.body.read_into(&mut blob, cap);
        stored = blob.len();
        st = upload.lock();
        st.stored = stored;
        upload.put_blob(&mut st, blob);
    }
    ctx.shared.tus.insert(Arc::clone(&upload));
    if ctx.body.state() == BodyState::Cut {
        return Outcome::Drop;
    }
    let mut r = answer(201).header("Location", format!("{}{PREFIX}/{id}", ctx.origin()));
    if has_body {
        r = r.header("Upload-Offset", stored.to_string());
    }
    Outcome::Respond(with_expires(r, expires))
}

/// `HEAD` on an upload (U3).
fn head(ctx: &Ctx<'_>, upload: &Upload) -> Response {
    let st = upload.lock();
    let mut r = answer(200).header("Cache-Control", "no-store");
    if !ctx.faults.no_range {
        let offset = st.stored + ctx.faults.lie.map_or(0, |n| n.max(1));
        r = r.header("Upload-Offset", offset.to_string());
    }
    r = match st.length {
        Some(n) => r.header("Upload-Length", n.to_string()),
        None => r.header("Upload-Defer-Length", "1"),
    };
    if let Some(m) = &upload.metadata {
        r = r.header("Upload-Metadata", m.clone());
    }
    with_expires(r, st.expires)
}

/// `PATCH` on an upload (U4, U9, U11).
fn patch(ctx: &mut Ctx<'_>, upload: &Arc<Upload>) -> Outcome {
    let req = ctx.req;
    if req.header("content-type") != Some(OFFSET_OCTET_STREAM) {
        return Outcome::Respond(error(
            415,
            "a PATCH needs Content-Type: application/offset+octet-stream (U4)",
        ));
    }
    let offset = match decimal_header(req, "upload-offset") {
        Ok(Some(o)) => o,
        Ok(None) => return Outcome::Respond(error(400, "a PATCH needs Upload-Offset (U4)")),
        Err(e) => return Outcome::Respond(error(400, &e)),
    };
    let new_length = match decimal_header(req, "upload-length") {
        Ok(l) => l,
        Err(e) => return Outcome::Respond(error(400, &e)),
    };
    let checksum = match single(req, "upload-checksum") {
        Ok(None) => None,
        Ok(Some(text)) => match parse_checksum(text) {
            Ok((algo, digest)) => match Hasher::new(&algo) {
                Some(h) => Some((h, digest)),
                None => {
                    return Outcome::Respond(error(
                        400,
                        &format!("the checksum algorithm {algo} is not supported (U11)"),
                    ));
                }
            },
            Err(e) => return Outcome::Respond(error(400, &e)),
        },
        Err(e) => return Outcome::Respond(error(400, &e)),
    };
    let st = upload.lock();
    let (mut st, blob) = upload.take_blob(st);
    let Some(mut blob) = blob else {
        return Outcome::Close(error(423, "another request is writing this upload"));
    };
    let stored = st.stored;
    // Checks that change nothing when they fail: the blob goes back untouched.
    let refusal = if offset != stored {
        Some((
            409,
            format!("Upload-Offset is {offset}, but {stored} bytes are held (U4)"),
        ))
    } else if let Some(n) = new_length {
        match st.length {
            Some(_) => Some((400, "Upload-Length is already known (U9)".to_owned())),
            None if n < stored => Some((400, "Upload-Length is below the offset (U9)".to_owned())),
            None if n > ctx.shared.config.max_object_size => Some((
                413,
                "Upload-Length is above the largest upload (U9)".to_owned(),
            )),
            None => None,
        }
    } else {
        None
    };
    if let Some((status, message)) = refusal {
        upload.put_blob(&mut st, blob);
        return Outcome::Respond(error(status, &message));
    }
    let length = new_length.or(st.length);
    let room = length.map_or(ctx.shared.config.max_object_size, |n| n) - stored;
    if req.content_length().is_some_and(|n| n > room) {
        upload.put_blob(&mut st, blob);
        return Outcome::Close(error(413, "the body would pass Upload-Length (U4)"));
    }
    if checksum.is_some() && room > MAX_CHECKSUMMED && req.content_length().is_none() {
        upload.put_blob(&mut st, blob);
        return Outcome::Close(error(411, "a checksummed PATCH needs Content-Length"));
    }
    drop(st);

    let cap = room.min(if checksum.is_some() {
        MAX_CHECKSUMMED
    } else {
        u64::MAX
    });
    let mismatch = match checksum {
        Some((mut hasher, digest)) => {
            // U11: verified once the whole body is in; nothing is kept otherwise.
            let mut body = Blob::default();
            ctx.body.read_into(&mut body, cap);
            if ctx.body.more() {
                let mut st = upload.lock();
                upload.put_blob(&mut st, blob);
                return Outcome::Close(error(413, "the body would pass Upload-Length (U4)"));
            }
            if ctx.body.state() == BodyState::Cut {
                let mut st = upload.lock();
                upload.put_blob(&mut st, blob);
                return Outcome::Drop;
            }
            body.for_each_slice(0..body.len(), |s| hasher.update(s));
            if hasher.finish() == digest {
                body.for_each_slice(0..body.len(), |s| blob.extend_from_slice(s));
                false
            } else {
                true
            }
        }
        None => {
            ctx.body.read_into(&mut blob, cap);
            if ctx.body.state() == BodyState::Open && ctx.body.more() {
                blob.truncate(stored);
                let mut st = upload.lock();
                upload.put_blob(&mut st, blob);
                return Outcome::Close(error(413, "the body would pass Upload-Length (U4)"));
            }
            false
        }
    };
    let mut keep = blob.len();
    if let Some(p) = ctx.faults.persist
        && ctx.body.state() != BodyState::Cut
    {
        keep = keep.min(stored.saturating_add(p));
    }
    blob.truncate(keep);
    let mut st = upload.lock();
    if mismatch {
        st.mismatches += 1;
        upload.put_blob(&mut st, blob);
        return Outcome::Respond(error(
            460,
            "Checksum Mismatch: nothing of the body was kept (U11)",
        ));
    }
    st.stored = keep;
    if new_length.is_some() {
        st.length = new_length;
    }
    let expires = st.expires;
    upload.put_blob(&mut st, blob);
    drop(st);
    if ctx.body.state() == BodyState::Cut {
        return Outcome::Drop;
    }
    let mut r = answer(204);
    if !ctx.faults.no_range {
        let claimed = keep + ctx.faults.lie.map_or(0, |n| n.max(1));
        r = r.header("Upload-Offset", claimed.to_string());
    }
    Outcome::Respond(with_expires(r, expires))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metadata_is_read_strictly_u7() {
        assert_eq!(
            parse_metadata("filename d29ybGRfZG9taW5hdGlvbl9wbGFuLnBkZg==,is_confidential")
                .unwrap(),
            vec![
                ("filename".to_owned(), b"world_domination_plan.pdf".to_vec()),
                ("is_confidential".to_owned(), Vec::new())
            ]
        );
        assert_eq!(parse_metadata("a YQ== , b Yg==").unwrap().len(), 2);
        for bad in [
            "",
            "a YQ",
            "a YQ==,a Yg==",
            "a  YQ==",
            ",",
            "a YQ==,",
            "é YQ==",
        ] {
            assert!(parse_metadata(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn checksums_name_an_algorithm_and_a_padded_digest_u11() {
        let (algo, digest) = parse_checksum("sha1 Kq5sNclPz7QV2+lfQIuc6R7oRu0=").unwrap();
        assert_eq!((algo.as_str(), digest.len()), ("sha1", 20));
        for bad in [
            "sha1",
            "sha1  x",
            "SHA1 Kq5sNclPz7QV2+lfQIuc6R7oRu0=",
            " Kq5s",
            "sha1 Kq5sNclPz7QV2+lfQIuc6R7oRu0",
        ] {
            assert!(parse_checksum(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn paths_name_the_creation_url_or_an_upload() {
        assert_eq!(route_path("/tus/files"), Some(None));
        assert_eq!(route_path("/tus/files/"), Some(None));
        assert_eq!(route_path("/tus/files/abc"), Some(Some("abc".to_owned())));
        assert_eq!(route_path("/tus/files/a/b"), None);
        assert_eq!(route_path("/tus/filesx"), None);
        assert_eq!(id_of("http://h:1/tus/files/abc?x=1"), "abc");
    }
}
