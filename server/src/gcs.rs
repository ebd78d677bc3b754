//! The server side of GCS resumable uploads (G1–G12), as GCS behaves.
//!
//! Decisions where the rules leave a choice, each as GCS does it where known:
//! - Session URIs are `ORIGIN/upload/storage/v1/b/BUCKET/o?uploadType=resumable&upload_id=ID`
//!   for both APIs; any `PUT`/`DELETE` carrying `upload_id` reaches the session, whatever
//!   its path. ORIGIN is the request's `Host` when it names a port (or the server listens
//!   on 80), the server's own address otherwise: a `Host` without its port would send the
//!   next request to port 80.
//! - A JSON API start is accepted at `/upload/storage/v1/…` and
//!   `/resumable/upload/storage/v1/…`; its preconditions (`ifGenerationMatch=0`, …) are
//!   checked at the start and again at completion (`412`).
//! - A chunk that starts beyond what is stored (a gap) is answered `503` and stored nowhere:
//!   Google's upload front end answers a chunk past the persisted offset with 503, which a
//!   correct client meets with a status query (G8) and a resend from the persisted offset.
//! - Bytes resent below the stored offset are read and ignored (not compared).
//! - A non-final chunk whose length is not a multiple of 256 KiB is answered `400`.
//! - A body cut short (the client went away, or the `drop-after` fault) keeps the received
//!   prefix rounded down to 256 KiB; a body longer or shorter than its `Content-Range` (only
//!   possible with chunked framing) is `400` and stores nothing.
//! - Completion answers `200`. JSON API sessions send the object resource; XML sessions send
//!   an empty body (as the XML API does); both send `x-goog-hash`, `x-goog-generation` and
//!   `ETag`. A client `x-goog-hash` that disagrees with the data is `400` and the final
//!   request is not stored (the session stays where it was).
//! - `DELETE` answers `499` and the session is gone (`404`) from then on; so is an expired
//!   one (TTL or the `expire` fault).
//! - Two requests on one session at once: the second waits (up to 10 s) for the first to
//!   finish, then `503`.

use std::collections::HashMap;
use std::ops::Range;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime};

use md5::Digest as _;
use resumable_core::chunk::GCS_GRANULE;
use serde_json::{Value, json};

use crate::blob::Blob;
use crate::fault::{FaultScript, FaultState};
use crate::hash::{Digest, Hasher};
use crate::http::{BodyState, Response, percent_decode, percent_encode};
use crate::json_api::{Bucket, Preconditions};
use crate::parse::{self, ContentRange};
use crate::server::{Ctx, Outcome};
use crate::util;

/// The largest JSON metadata body of a JSON API start.
const MAX_METADATA: usize = 64 * 1024;
/// How long a request waits for another request on the same session to finish.
const BUSY_WAIT: Duration = Duration::from_secs(10);

/// Which API created a session.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GcsApi {
    /// The XML API or a signed URL (G1).
    Xml,
    /// The JSON API (G2).
    Json,
}

/// A completed object: its bytes and its metadata.
pub(crate) struct StoredObject {
    pub(crate) meta: Arc<ObjectMeta>,
    pub(crate) data: Blob,
}

impl std::ops::Deref for StoredObject {
    type Target = ObjectMeta;
    fn deref(&self) -> &ObjectMeta {
        &self.meta
    }
}

/// What is known of a completed object besides its bytes (a finished session keeps this, so
/// its bytes are freed when the object is replaced or removed).
pub(crate) struct ObjectMeta {
    pub(crate) bucket: String,
    pub(crate) name: String,
    pub(crate) content_type: String,
    pub(crate) size: u64,
    pub(crate) crc32c: u32,
    pub(crate) md5: Option<[u8; 16]>,
    pub(crate) generation: u64,
    pub(crate) created: SystemTime,
    pub(crate) metadata: Option<Value>,
}

impl ObjectMeta {
    pub(crate) fn size(&self) -> u64 {
        self.size
    }

    fn etag(&self) -> String {
        match self.md5 {
            Some(m) => m.iter().map(|b| format!("{b:02x}")).collect(),
            None => format!("{:08x}{:x}", self.crc32c, self.generation),
        }
    }

    fn x_goog_hash(&self) -> String {
        parse::goog_hash_value(self.crc32c, self.md5.as_ref())
    }

    /// The JSON API object resource (G7).
    pub(crate) fn resource(&self, origin: &str) -> Value {
        let b = percent_encode(&self.bucket);
        let n = percent_encode(&self.name);
        let time = util::rfc3339(self.created);
        let mut v = json!({
            "kind": "storage#object",
            "id": format!("{}/{}/{}", self.bucket, self.name, self.generation),
            "selfLink": format!("{origin}/storage/v1/b/{b}/o/{n}"),
            "mediaLink": format!(
                "{origin}/download/storage/v1/b/{b}/o/{n}?generation={}&alt=media",
                self.generation
            ),
            "name": self.name,
            "bucket": self.bucket,
            "generation": self.generation.to_string(),
            "metageneration": "1",
            "contentType": self.content_type,
            "storageClass": "STANDARD",
            "size": self.size().to_string(),
            "crc32c": parse::crc32c_base64(self.crc32c),
            "etag": self.etag(),
            "timeCreated": time,
            "updated": time,
            "timeStorageClassUpdated": time,
        });
        if let Some(m) = &self.md5 {
            v["md5Hash"] = Value::String(parse::md5_base64(m));
        }
        if let Some(meta) = &self.metadata {
            v["metadata"] = meta.clone();
        }
        v
    }

    /// The completion answer for a session of `api`; without `proof` (the `no-proof`
    /// fault), without anything the object could be checked by.
    fn completion(&self, api: GcsApi, origin: &str, proof: bool) -> Response {
        let r = object_headers(Response::new(200), self, proof);
        match api {
            GcsApi::Json => {
                let mut resource = self.resource(origin);
                if !proof && let Some(fields) = resource.as_object_mut() {
                    for key in ["size", "crc32c", "md5Hash"] {
                        fields.remove(key);
                    }
                }
                r.json(&resource)
            }
            GcsApi::Xml => r,
        }
    }
}

/// GCS's object headers (`x-goog-hash`, `x-goog-generation`, …, `ETag`) on `r`; without
/// `proof`, without the checksums and the stored length (the `no-proof` fault).
pub(crate) fn object_headers(r: Response, meta: &ObjectMeta, proof: bool) -> Response {
    let r = if proof {
        r.header("x-goog-hash", meta.x_goog_hash())
            .header("x-goog-stored-content-length", meta.size().to_string())
    } else {
        r
    };
    r.header("x-goog-generation", meta.generation.to_string())
        .header("x-goog-metageneration", "1")
        .header("x-goog-stored-content-encoding", "identity")
        .header("ETag", format!("\"{}\"", meta.etag()))
        .header("Last-Modified", httpdate::fmt_http_date(meta.created))
}

/// A resumable session.
pub(crate) struct Session {
    pub(crate) id: String,
    pub(crate) api: GcsApi,
    pub(crate) bucket: String,
    pub(crate) name: String,
    content_type: String,
    metadata: Option<Value>,
    /// The start's object preconditions, checked again at completion.
    preconditions: Preconditions,
    created: Instant,
    /// A session fault script (`session-faults=` on the start URL).
    pub(crate) script: Option<FaultScript>,
    /// The `x-retry-test-id` of the start: the session's requests consume that retry test's
    /// instructions even without the header (see [`crate::retry_test`]).
    pub(crate) retry_test: Option<String>,
    pub(crate) state: Mutex<SessionState>,
    cv: Condvar,
}

/// A session's mutable part.
pub(crate) struct SessionState {
    /// `X-Upload-Content-Length` from the start (G2).
    pub(crate) declared: Option<u64>,
    /// The total from a `Content-Range`.
    pub(crate) total: Option<u64>,
    /// Bytes persisted.
    pub(crate) stored: u64,
    /// The stored bytes; `None` while a request is writing them.
    blob: Option<Blob>,
    /// The checksums of the stored bytes, while no hasher thread keeps them.
    digest: Digest,
    /// The thread hashing the stored bytes (for large uploads); its digest is the truth
    /// while it exists.
    hasher: Option<Hasher>,
    pub(crate) completed: Option<Arc<ObjectMeta>>,
    pub(crate) expired: bool,
    pub(crate) body_bytes: u64,
    pub(crate) requests: u64,
    pub(crate) faults: FaultState,
}

impl Session {
    pub(crate) fn lock(&self) -> MutexGuard<'_, SessionState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Whether the session is gone (deleted, expired by fault, or past its TTL).
    pub(crate) fn is_gone(&self, st: &SessionState, ttl: Duration) -> bool {
        st.expired || self.created.elapsed() > ttl
    }

    /// Takes the blob, waiting for a concurrent request to give it back.
    fn take_blob<'a>(
        &'a self,
        mut st: MutexGuard<'a, SessionState>,
    ) -> (MutexGuard<'a, SessionState>, Option<Blob>) {
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

    fn put_blob(&self, st: &mut SessionState, blob: Blob) {
        st.blob = Some(blob);
        self.cv.notify_all();
    }
}

/// Inspection of a session.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct SessionInfo {
    /// The `upload_id`.
    pub upload_id: String,
    /// Which API created it.
    pub api: GcsApi,
    /// Bucket.
    pub bucket: String,
    /// Object name.
    pub object: String,
    /// Bytes persisted (the prefix a `308` reports).
    pub stored: u64,
    /// The total declared by a `Content-Range`, once declared.
    pub total: Option<u64>,
    /// `X-Upload-Content-Length` from the start, if given.
    pub declared_length: Option<u64>,
    /// Request-body bytes received on this session (re-sent bytes count again).
    pub body_bytes_received: u64,
    /// Requests on this session after the start.
    pub requests: u64,
    /// Whether the object is complete.
    pub complete: bool,
    /// Whether it is gone (deleted or expired).
    pub gone: bool,
}

/// Inspection of a stored object.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct ObjectInfo {
    /// Bucket.
    pub bucket: String,
    /// Object name.
    pub name: String,
    /// Size in bytes.
    pub size: u64,
    /// CRC32C of the bytes.
    pub crc32c: u32,
    /// MD5 of the bytes, when the server computes MD5.
    pub md5: Option<[u8; 16]>,
    /// Generation.
    pub generation: u64,
    /// Content type.
    pub content_type: String,
}

/// All GCS state of a server.
#[derive(Default)]
pub(crate) struct Gcs {
    sessions: Mutex<HashMap<String, Arc<Session>>>,
    objects: Mutex<HashMap<(String, String), Arc<StoredObject>>>,
    /// Buckets created by a bucket insert (others are known by their objects).
    buckets: Mutex<HashMap<String, Bucket>>,
    last_generation: Mutex<u64>,
}

impl Gcs {
    fn sessions(&self) -> MutexGuard<'_, HashMap<String, Arc<Session>>> {
        self.sessions.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn objects(&self) -> MutexGuard<'_, HashMap<(String, String), Arc<StoredObject>>> {
        self.objects.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A session by id (gone ones too: the handler answers 404 for them).
    pub(crate) fn session(&self, id: &str) -> Option<Arc<Session>> {
        self.sessions().get(id).cloned()
    }

    pub(crate) fn all_sessions(&self) -> Vec<Arc<Session>> {
        self.sessions().values().cloned().collect()
    }

    /// Forgets sessions that are gone, and their bytes.
    fn purge(&self, ttl: Duration) {
        self.sessions().retain(|_, s| {
            let st = s.lock();
            !s.is_gone(&st, ttl)
        });
    }

    pub(crate) fn object(&self, bucket: &str, name: &str) -> Option<Arc<StoredObject>> {
        self.objects()
            .get(&(bucket.to_owned(), name.to_owned()))
            .cloned()
    }

    pub(crate) fn remove_object(&self, bucket: &str, name: &str) -> bool {
        self.objects()
            .remove(&(bucket.to_owned(), name.to_owned()))
            .is_some()
    }

    /// Every object of `bucket`, in no particular order.
    pub(crate) fn objects_in(&self, bucket: &str) -> Vec<Arc<StoredObject>> {
        self.objects()
            .iter()
            .filter(|((b, _), _)| b == bucket)
            .map(|(_, o)| Arc::clone(o))
            .collect()
    }

    /// Removes the object if it is still `generation`. Returns whether it was.
    pub(crate) fn remove_object_generation(
        &self,
        bucket: &str,
        name: &str,
        generation: u64,
    ) -> bool {
        let mut objects = self.objects();
        let key = (bucket.to_owned(), name.to_owned());
        if objects
            .get(&key)
            .is_some_and(|o| o.generation == generation)
        {
            let old = objects.remove(&key);
            drop(objects);
            drop(old);
            true
        } else {
            false
        }
    }

    fn bucket_map(&self) -> MutexGuard<'_, HashMap<String, Bucket>> {
        self.buckets.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Creates a bucket; `None` when one of that name was created before.
    pub(crate) fn insert_bucket(&self, name: &str) -> Option<Bucket> {
        let mut buckets = self.bucket_map();
        if buckets.contains_key(name) {
            return None;
        }
        let b = Bucket {
            name: name.to_owned(),
            created: SystemTime::now(),
        };
        buckets.insert(name.to_owned(), b.clone());
        Some(b)
    }

    /// A bucket that was created or holds an object.
    pub(crate) fn bucket(&self, name: &str) -> Option<Bucket> {
        if let Some(b) = self.bucket_map().get(name) {
            return Some(b.clone());
        }
        self.objects()
            .iter()
            .filter(|((b, _), _)| b == name)
            .map(|(_, o)| o.created)
            .min()
            .map(|created| Bucket {
                name: name.to_owned(),
                created,
            })
    }

    /// Every known bucket, by name.
    pub(crate) fn buckets(&self) -> Vec<Bucket> {
        let mut names: Vec<String> = self.bucket_map().keys().cloned().collect();
        names.extend(self.objects().keys().map(|(b, _)| b.clone()));
        names.sort();
        names.dedup();
        names.iter().filter_map(|n| self.bucket(n)).collect()
    }

    /// Forgets a created bucket.
    pub(crate) fn remove_bucket(&self, name: &str) {
        self.bucket_map().remove(name);
    }

    /// A generation number: microseconds since the epoch, strictly increasing.
    pub(crate) fn next_generation(&self) -> u64 {
        let now = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap_or_default()
            .as_micros() as u64;
        let mut last = self
            .last_generation
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        *last = now.max(*last + 1);
        *last
    }

    fn store(&self, meta: ObjectMeta, data: Blob) -> Arc<ObjectMeta> {
        let meta = Arc::new(meta);
        let object = Arc::new(StoredObject {
            meta: Arc::clone(&meta),
            data,
        });
        // The replaced object, if any, is dropped after the lock is released.
        let old = self
            .objects()
            .insert((meta.bucket.clone(), meta.name.clone()), object);
        drop(old);
        meta
    }

    /// Stores the object if `pre` holds against the live one (checked under the lock, so a
    /// concurrent upload cannot slip in between); gives the bytes back otherwise.
    pub(crate) fn store_if(
        &self,
        meta: ObjectMeta,
        data: Blob,
        pre: &Preconditions,
    ) -> Result<Arc<ObjectMeta>, Blob> {
        let meta = Arc::new(meta);
        let key = (meta.bucket.clone(), meta.name.clone());
        let mut objects = self.objects();
        if pre.check(objects.get(&key).map(|o| &*o.meta)).is_err() {
            return Err(data);
        }
        let object = Arc::new(StoredObject {
            meta: Arc::clone(&meta),
            data,
        });
        let old = objects.insert(key, object);
        // The replaced object, if any, is dropped after the lock is released.
        drop(objects);
        drop(old);
        Ok(meta)
    }
}

pub(crate) fn session_info(s: &Session, ttl: Duration) -> SessionInfo {
    let st = s.lock();
    SessionInfo {
        upload_id: s.id.clone(),
        api: s.api,
        bucket: s.bucket.clone(),
        object: s.name.clone(),
        stored: st.stored,
        total: st.total,
        declared_length: st.declared,
        body_bytes_received: st.body_bytes,
        requests: st.requests,
        complete: st.completed.is_some(),
        gone: s.is_gone(&st, ttl),
    }
}

pub(crate) fn object_info(o: &ObjectMeta) -> ObjectInfo {
    ObjectInfo {
        bucket: o.bucket.clone(),
        name: o.name.clone(),
        size: o.size(),
        crc32c: o.crc32c,
        md5: o.md5,
        generation: o.generation,
        content_type: o.content_type.clone(),
    }
}

// ---- errors ----

/// A GCS error answer, shaped for the API (JSON or XML).
pub(crate) fn error(api: GcsApi, status: u16, message: &str) -> Response {
    match api {
        GcsApi::Json => Response::new(status).json(&json!({
            "error": {
                "code": status,
                "message": message,
                "errors": [{"message": message, "domain": "global", "reason": reason(status)}],
            }
        })),
        GcsApi::Xml => {
            let code = match status {
                400 => "InvalidArgument",
                401 => "AuthenticationRequired",
                403 => "SignatureDoesNotMatch",
                404 => "NoSuchUpload",
                _ => "InternalError",
            };
            let text = message
                .replace('&', "&amp;")
                .replace('<', "&lt;")
                .replace('>', "&gt;");
            Response::new(status).body(
                "application/xml; charset=UTF-8",
                format!(
                    "<?xml version='1.0' encoding='UTF-8'?><Error><Code>{code}</Code><Message>{text}</Message></Error>"
                )
                .into_bytes(),
            )
        }
    }
}

fn reason(status: u16) -> &'static str {
    match status {
        400 => "invalid",
        401 => "required",
        403 => "forbidden",
        404 => "notFound",
        408 => "requestTimeout",
        429 => "rateLimitExceeded",
        503 => "backendError",
        _ => "error",
    }
}

// ---- start (G1, G2) ----

/// `POST …/upload/storage/v1/b/BUCKET/o?uploadType=resumable[&name=N]` (G2).
pub(crate) fn start_json(ctx: &mut Ctx<'_>, bucket: &str) -> Outcome {
    let api = GcsApi::Json;
    let preconditions = match Preconditions::of(ctx.req) {
        Ok(p) => p,
        Err(message) => return Outcome::Respond(error(api, 400, &message)),
    };
    if let Some(auth) = ctx.req.header("authorization") {
        let token = auth.strip_prefix("Bearer ").map(str::trim).unwrap_or("");
        if token.is_empty() {
            return Outcome::Respond(error(api, 401, "Invalid Credentials"));
        }
    }
    let metadata = match ctx.body.read_small(MAX_METADATA) {
        Ok(bytes) if bytes.is_empty() => None,
        Ok(bytes) => match serde_json::from_slice::<Value>(&bytes) {
            Ok(v @ Value::Object(_)) => Some(v),
            _ => {
                return Outcome::Respond(error(api, 400, "the metadata body is not a JSON object"));
            }
        },
        Err(true) => return Outcome::Respond(error(api, 413, "metadata too large")),
        Err(false) => return Outcome::Drop,
    };
    let name = ctx.req.query_param("name").map(str::to_owned).or_else(|| {
        metadata
            .as_ref()
            .and_then(|m| m.get("name"))
            .and_then(Value::as_str)
            .map(str::to_owned)
    });
    let Some(name) = name.filter(|n| !n.is_empty()) else {
        return Outcome::Respond(error(api, 400, "Required: object name"));
    };
    let content_type = ctx
        .req
        .header("x-upload-content-type")
        .map(str::to_owned)
        .or_else(|| {
            metadata
                .as_ref()
                .and_then(|m| m.get("contentType"))
                .and_then(Value::as_str)
                .map(str::to_owned)
        })
        .unwrap_or_else(|| "application/octet-stream".to_owned());
    let declared = match ctx.req.header("x-upload-content-length") {
        None => None,
        Some(v) => match crate::http::parse_u64(v.trim()) {
            Some(n) => Some(n),
            None => {
                return Outcome::Respond(error(api, 400, "bad X-Upload-Content-Length"));
            }
        },
    };
    let custom = metadata.as_ref().and_then(|m| m.get("metadata")).cloned();
    if preconditions.any() {
        let live = ctx.shared.gcs.object(bucket, &name);
        if preconditions
            .check(live.as_deref().map(|o| &*o.meta))
            .is_err()
        {
            return Outcome::Respond(crate::json_api::precondition_failed());
        }
    }
    let start = Start {
        api,
        bucket,
        name: &name,
        content_type,
        declared,
        metadata: custom,
        preconditions,
    };
    create_session(ctx, start, 200)
}

/// `POST /BUCKET/OBJECT` with `x-goog-resumable: start` (G1); for a signed URL, checks that
/// the signed headers are present, that no `Authorization` is sent, and the expiry.
pub(crate) fn start_xml(ctx: &mut Ctx<'_>, bucket: &str, name: &str) -> Outcome {
    let api = GcsApi::Xml;
    if ctx.req.header("x-goog-resumable").map(str::trim) != Some("start") {
        return Outcome::Respond(error(
            api,
            400,
            "POST to an object needs x-goog-resumable: start",
        ));
    }
    if let Some(r) = check_signed(ctx, api) {
        return Outcome::Respond(r);
    }
    // The start carries no data (G1); any body is read and ignored.
    ctx.body.drain();
    if ctx.body.state() == BodyState::Cut {
        return Outcome::Drop;
    }
    let content_type = ctx
        .req
        .header("content-type")
        .unwrap_or("application/octet-stream")
        .to_owned();
    let start = Start {
        api,
        bucket,
        name,
        content_type,
        declared: None,
        metadata: None,
        preconditions: Preconditions::default(),
    };
    create_session(ctx, start, 201)
}

/// Signed-URL checks (G1, C2). `Some(answer)` when the request fails them.
fn check_signed(ctx: &Ctx<'_>, api: GcsApi) -> Option<Response> {
    ctx.req.query_param("X-Goog-Signature")?;
    if ctx.req.headers.contains_key("authorization") {
        return Some(error(
            api,
            400,
            "a signed URL request must not carry an Authorization header",
        ));
    }
    if let Some(signed) = ctx.req.query_param("X-Goog-SignedHeaders") {
        for h in signed.split(';').map(str::trim).filter(|h| !h.is_empty()) {
            if h != "host" && !ctx.req.headers.contains_key(h) {
                return Some(error(
                    api,
                    403,
                    &format!("SignatureDoesNotMatch: the signed header {h} is missing"),
                ));
            }
        }
    }
    let date = ctx
        .req
        .query_param("X-Goog-Date")
        .and_then(util::parse_goog_date);
    let expires = ctx
        .req
        .query_param("X-Goog-Expires")
        .and_then(crate::http::parse_u64);
    if let (Some(date), Some(expires)) = (date, expires)
        && SystemTime::now() > date + Duration::from_secs(expires)
    {
        return Some(error(api, 400, "ExpiredToken: the signed URL has expired"));
    }
    None
}

/// What a start request asks for.
struct Start<'a> {
    api: GcsApi,
    bucket: &'a str,
    name: &'a str,
    content_type: String,
    declared: Option<u64>,
    metadata: Option<Value>,
    preconditions: Preconditions,
}

fn create_session(ctx: &mut Ctx<'_>, start: Start<'_>, status: u16) -> Outcome {
    let Start {
        api,
        bucket,
        name,
        content_type,
        declared,
        metadata,
        preconditions,
    } = start;
    let script = match crate::server::session_script(ctx.req) {
        Ok(s) => s,
        Err(message) => return Outcome::Respond(error(api, 400, &message)),
    };
    let gcs = &ctx.shared.gcs;
    gcs.purge(ctx.shared.config.session_ttl);
    let id = util::random_id();
    let session = Arc::new(Session {
        id: id.clone(),
        api,
        bucket: bucket.to_owned(),
        name: name.to_owned(),
        content_type,
        metadata,
        preconditions,
        created: Instant::now(),
        script,
        retry_test: ctx
            .req
            .header("x-retry-test-id")
            .map(|id| id.trim().to_owned()),
        state: Mutex::new(SessionState {
            declared,
            total: None,
            stored: 0,
            blob: Some(Blob::default()),
            digest: Digest::new(ctx.shared.config.md5),
            hasher: None,
            completed: None,
            expired: false,
            body_bytes: 0,
            requests: 0,
            faults: FaultState::default(),
        }),
        cv: Condvar::new(),
    });
    gcs.sessions().insert(id.clone(), session);
    let location = format!(
        "{}/upload/storage/v1/b/{}/o?uploadType=resumable&upload_id={}",
        ctx.origin(),
        percent_encode(bucket),
        id
    );
    ctx.upload_id = Some(id.clone());
    Outcome::Respond(
        Response::new(status)
            .header("Location", location)
            .header("X-GUploader-UploadID", id),
    )
}

// ---- the session (G3–G11) ----

/// The `308` for `stored` bytes (G5), shaped by the 308 faults, with G11 applied.
fn resume_incomplete(ctx: &Ctx<'_>, session: &Session, stored: u64) -> Response {
    let f = &ctx.faults;
    let claimed = stored.saturating_add(f.lie.unwrap_or(0));
    let start = f.range_start.unwrap_or(0);
    let mut r = Response::new(308).header("X-GUploader-UploadID", session.id.clone());
    if !f.no_range && (claimed > 0 || start > 0) {
        let end = claimed.max(start.saturating_add(1));
        r = r.header("Range", format!("bytes={start}-{}", end - 1));
    }
    r
}

/// G11: a client that sent `X-GUploader-No-308: yes` gets `200` with the override header.
pub(crate) fn apply_no_308(ctx: &Ctx<'_>, response: &mut Response) {
    let asked = ctx
        .req
        .header("x-guploader-no-308")
        .is_some_and(|v| v.trim().eq_ignore_ascii_case("yes"));
    if asked && response.status == 308 {
        response.status = 200;
        response
            .headers
            .push(("X-Http-Status-Code-Override".to_owned(), "308".to_owned()));
    }
}

/// `DELETE session` (G10): `499`, then the session is gone.
pub(crate) fn delete(ctx: &mut Ctx<'_>, session: &Arc<Session>) -> Outcome {
    let ttl = ctx.shared.config.session_ttl;
    let mut st = session.lock();
    if ctx.faults.expire {
        st.expired = true;
    }
    if session.is_gone(&st, ttl) {
        return Outcome::Respond(error(session.api, 404, "No such upload"));
    }
    st.expired = true;
    drop(st);
    Outcome::Respond(Response::new(499))
}

/// What a `PUT` on a session carries.
struct Put {
    /// The bytes in the body (`None`: none, `bytes */T`).
    range: Option<Range<u64>>,
    /// The declared total.
    total: Option<u64>,
    /// Whether the body length is known only at its end (chunked, no `Content-Range`).
    open_ended: bool,
}

/// `PUT session`: a chunk (G4), a status query (G6), or the final request (G7).
pub(crate) fn put(ctx: &mut Ctx<'_>, session: &Arc<Session>) -> Outcome {
    let api = session.api;
    let ttl = ctx.shared.config.session_ttl;
    let mut st = session.lock();
    if ctx.faults.expire {
        st.expired = true;
    }
    if session.is_gone(&st, ttl) {
        return Outcome::Respond(error(api, 404, "No such upload"));
    }
    if let Some(object) = &st.completed {
        // A PUT after completion answers with the object again.
        let object = Arc::clone(object);
        drop(st);
        return Outcome::Respond(object.completion(api, &ctx.origin(), !ctx.faults.no_proof));
    }
    let put = match parse_put(ctx) {
        Ok(p) => p,
        Err(message) => return Outcome::Respond(error(api, 400, &message)),
    };
    if let Some(t) = put.total {
        if st.declared.is_some_and(|d| d != t) {
            return Outcome::Respond(error(
                api,
                400,
                &format!(
                    "the Content-Range total {t} differs from X-Upload-Content-Length {}",
                    st.declared.unwrap_or(0)
                ),
            ));
        }
        if st.total.is_some_and(|old| old != t) {
            return Outcome::Respond(error(
                api,
                400,
                &format!(
                    "the Content-Range total {t} differs from the total declared before ({})",
                    st.total.unwrap_or(0)
                ),
            ));
        }
        if t < st.stored {
            return Outcome::Respond(error(
                api,
                400,
                &format!("the total {t} is less than the {} bytes stored", st.stored),
            ));
        }
    }
    let max = ctx.shared.config.max_object_size;
    if put.range.as_ref().is_some_and(|r| r.end > max) || put.total.is_some_and(|t| t > max) {
        return Outcome::Close(error(
            api,
            413,
            &format!("objects of this server are at most {max} bytes"),
        ));
    }
    let limit = put.total.or(st.total).or(st.declared);
    if let (Some(range), Some(limit)) = (&put.range, limit)
        && range.end > limit
    {
        return Outcome::Respond(error(
            api,
            400,
            &format!("the range ends past the object's size {limit}"),
        ));
    }
    match put.range.clone() {
        None if !put.open_ended => {
            // Status query or final empty request (G4, G6).
            match put.total {
                Some(t) if t == st.stored => {
                    let (st, blob) = session.take_blob(st);
                    finish(ctx, session, st, blob)
                }
                Some(t) => {
                    st.total = Some(t);
                    let stored = st.stored;
                    drop(st);
                    Outcome::Respond(resume_incomplete(ctx, session, stored))
                }
                None => {
                    let stored = st.stored;
                    drop(st);
                    Outcome::Respond(resume_incomplete(ctx, session, stored))
                }
            }
        }
        range => {
            let start = range.as_ref().map_or(0, |r| r.start);
            if start > st.stored {
                return Outcome::Respond(error(
                    api,
                    503,
                    &format!(
                        "the chunk starts at {start} but only {} bytes are stored",
                        st.stored
                    ),
                ));
            }
            if let (Some(r), false) = (&range, put.total == range.as_ref().map(|r| r.end)) {
                let len = r.end - r.start;
                if len % GCS_GRANULE != 0 {
                    return Outcome::Respond(error(
                        api,
                        400,
                        &format!(
                            "Invalid request. A non-final chunk must be a multiple of {GCS_GRANULE} bytes; this one has {len}."
                        ),
                    ));
                }
            }
            if let Some(t) = put.total {
                st.total = Some(t);
            }
            upload(ctx, session, st, range, put)
        }
    }
}

fn parse_put(ctx: &Ctx<'_>) -> Result<Put, String> {
    let length = ctx.req.content_length();
    let Some(value) = ctx.req.headers.get("content-range") else {
        // No Content-Range: the body is the whole object (as a single PUT).
        return Ok(match length {
            Some(0) => Put {
                range: None,
                total: Some(0),
                open_ended: false,
            },
            Some(n) => Put {
                range: Some(0..n),
                total: Some(n),
                open_ended: false,
            },
            None => Put {
                range: None,
                total: None,
                open_ended: true,
            },
        });
    };
    let ContentRange { range, total } = value
        .to_str()
        .ok()
        .and_then(parse::content_range)
        .ok_or_else(|| "Failed to parse Content-Range header.".to_owned())?;
    let carried = range.as_ref().map_or(0, |r| r.end - r.start);
    if let Some(n) = length
        && n != carried
    {
        return Err(format!(
            "Content-Length {n} does not match the Content-Range, which carries {carried} bytes"
        ));
    }
    Ok(Put {
        range,
        total,
        open_ended: false,
    })
}

/// Requests carrying at least this many bytes are hashed on the session's hasher thread
/// while they are read, when MD5 is on (smaller ones, and CRC32C alone, inline after the
/// body).
const PIPE_MIN: u64 = 4 << 20;

/// How a request's bytes are hashed.
enum Hashing {
    /// After the body, on this thread: the digest of the bytes stored before it.
    Inline(Digest),
    /// On the session's hasher thread, as the bytes arrive.
    Piped {
        hasher: Hasher,
        /// The digest of the bytes stored before this request, once asked for.
        start: StartDigest,
    },
}

/// The digest at the start of a request, from a hasher checkpoint.
enum StartDigest {
    Pending(std::sync::mpsc::Receiver<(u64, Digest)>),
    Known(Digest),
}

impl Hashing {
    /// The session's hashing for a request of `len` bytes (`None`: unknown) from `st`.
    fn take(st: &mut SessionState, len: Option<u64>) -> Hashing {
        let hasher = match st.hasher.take() {
            Some(h) => Some(h),
            // CRC32C alone is cheaper inline than on a thread that competes for the cores.
            None if st.digest.md5.is_some() && len.is_none_or(|n| n >= PIPE_MIN) => {
                Hasher::spawn(st.stored, st.digest.clone())
            }
            None => None,
        };
        match hasher {
            Some(hasher) => Hashing::Piped {
                start: StartDigest::Pending(hasher.checkpoint()),
                hasher,
            },
            None => Hashing::Inline(st.digest.clone()),
        }
    }

    /// Feeds the bytes of `blob` that will not change any more (piped only).
    fn feed_sealed(&mut self, blob: &mut Blob) {
        if let Hashing::Piped { hasher, .. } = self {
            let sealed = blob.sealed_len();
            let fed = hasher.fed();
            if sealed > fed {
                hasher.feed(blob, fed..sealed);
            }
        }
    }

    /// Makes the digest cover exactly `0..keep` of `blob` (`stored..keep` being this
    /// request's bytes).
    fn settle(&mut self, blob: &Blob, stored: u64, keep: u64) {
        match self {
            Hashing::Inline(d) => d.update_from(blob, stored..keep),
            Hashing::Piped { hasher, start } => {
                let fed = hasher.fed();
                if fed <= keep {
                    hasher.feed(blob, fed..keep);
                } else {
                    // More was hashed than is kept: back to the start, then the kept part.
                    let mut d = start.get();
                    d.update_from(blob, stored..keep);
                    hasher.reset(keep, d);
                }
            }
        }
    }

    /// Puts the session's hashing back as it was before the request (`stored` bytes).
    fn restore(self, st: &mut SessionState, stored: u64) {
        if let Hashing::Piped {
            mut hasher,
            mut start,
        } = self
        {
            if hasher.fed() != stored {
                hasher.reset(stored, start.get());
            }
            st.hasher = Some(hasher);
        }
    }

    /// Keeps the settled hashing in the session.
    fn commit(self, st: &mut SessionState) {
        match self {
            Hashing::Inline(d) => st.digest = d,
            Hashing::Piped { hasher, .. } => st.hasher = Some(hasher),
        }
    }

    /// The settled digest (waiting for the hasher thread).
    fn digest(&self) -> Digest {
        match self {
            Hashing::Inline(d) => d.clone(),
            // The thread cannot go away while its sender lives; were it gone, the empty
            // digest would show as a checksum mismatch, never as a silent success.
            Hashing::Piped { hasher, .. } => hasher.digest().unwrap_or_default(),
        }
    }
}

impl StartDigest {
    /// The digest (waiting for the checkpoint the first time).
    fn get(&mut self) -> Digest {
        if let StartDigest::Pending(rx) = self {
            let d = rx.recv().map(|(_, d)| d).unwrap_or_default();
            *self = StartDigest::Known(d);
        }
        match self {
            StartDigest::Known(d) => d.clone(),
            StartDigest::Pending(_) => Digest::default(),
        }
    }
}

/// Reads up to `n` body bytes into `blob`, feeding the hasher segment by segment.
fn read_body(ctx: &mut Ctx<'_>, blob: &mut Blob, n: u64, hashing: &mut Hashing) {
    if matches!(hashing, Hashing::Inline(_)) {
        ctx.body.read_into(blob, n);
        return;
    }
    let mut left = n;
    while left > 0 {
        let want = left.min(crate::blob::SEGMENT as u64);
        let got = ctx.body.read_into(blob, want);
        left -= got;
        hashing.feed_sealed(blob);
        if got < want {
            break;
        }
    }
}

/// Reads a chunk's body into the session and answers. The body is read and hashed without
/// the session lock (the blob is taken out meanwhile, so the session is busy).
fn upload<'a>(
    ctx: &mut Ctx<'_>,
    session: &'a Arc<Session>,
    st: MutexGuard<'a, SessionState>,
    range: Option<Range<u64>>,
    put: Put,
) -> Outcome {
    let api = session.api;
    let (mut st, blob) = session.take_blob(st);
    let Some(mut blob) = blob else {
        return Outcome::Respond(error(api, 503, "another request is writing this session"));
    };
    let stored = st.stored;
    let mut hashing = Hashing::take(
        &mut st,
        range.as_ref().map(|r| r.end.saturating_sub(stored)),
    );
    drop(st);

    // Give the blob back unchanged and answer `response`.
    let refuse = |mut blob: Blob, hashing: Hashing, response: Outcome| {
        blob.truncate(stored);
        let mut st = session.lock();
        hashing.restore(&mut st, stored);
        session.put_blob(&mut st, blob);
        response
    };

    // Read: bytes below `stored` are ignored, the rest goes straight into the blob.
    let max = ctx.shared.config.max_object_size;
    let (start, end) = match &range {
        Some(r) => (r.start, r.end),
        // Open-ended: one byte more than allowed tells an oversized body.
        None => (0, max.saturating_add(1)),
    };
    let skip = stored.min(end) - start;
    let skipped = ctx.body.discard(skip);
    if skipped == skip && end > stored {
        read_body(ctx, &mut blob, end - stored, &mut hashing);
    }
    let received_end = start + ctx.body.received();
    if received_end > max {
        let r = error(
            api,
            413,
            &format!("objects of this server are at most {max} bytes"),
        );
        return refuse(blob, hashing, Outcome::Close(r));
    }
    if ctx.body.state() == BodyState::Open {
        // Chunked framing: find out whether the body ends here.
        ctx.body.more();
    }
    let (keep, final_total) = match ctx.body.state() {
        // The connection broke mid-body: keep the prefix, rounded down to 256 KiB (G5).
        BodyState::Cut => ((received_end / GCS_GRANULE * GCS_GRANULE).max(stored), None),
        BodyState::Open => {
            // Chunked framing with more bytes than the range says.
            ctx.body.drain();
            let r = error(api, 400, "the body is longer than its Content-Range");
            return refuse(blob, hashing, Outcome::Respond(r));
        }
        BodyState::Done if put.open_ended => {
            if received_end < stored {
                let r = error(api, 400, "the body is shorter than what is stored");
                return refuse(blob, hashing, Outcome::Respond(r));
            }
            (received_end, Some(received_end))
        }
        BodyState::Done if received_end < end => {
            let r = error(api, 400, "the body is shorter than its Content-Range");
            return refuse(blob, hashing, Outcome::Respond(r));
        }
        BodyState::Done => {
            // The persist fault stores less than arrived (G5).
            let mut keep = end.max(stored);
            if let Some(p) = ctx.faults.persist {
                keep = keep.min(start.saturating_add(p)).max(stored);
            }
            // Only a request that declares the total completes the object (G4).
            (keep, put.total)
        }
    };
    blob.truncate(keep);
    hashing.settle(&blob, stored, keep);

    if final_total == Some(keep) {
        let digest = hashing.digest();
        let (crc, md5) = (digest.crc32c, digest.md5_digest());
        if let Some(r) = check_client_hash(ctx, api, &blob, crc, md5) {
            return refuse(blob, hashing, Outcome::Respond(r));
        }
        let st = session.lock();
        return complete(ctx, session, st, blob, crc, md5);
    }
    let mut st = session.lock();
    if st.expired {
        // Deleted or expired while the body was arriving.
        drop(st);
        return refuse(
            blob,
            hashing,
            Outcome::Respond(error(api, 404, "No such upload")),
        );
    }
    st.stored = keep;
    hashing.commit(&mut st);
    session.put_blob(&mut st, blob);
    drop(st);
    if ctx.body.state() == BodyState::Cut {
        return Outcome::Drop;
    }
    Outcome::Respond(resume_incomplete(ctx, session, keep))
}

/// Checks a client's `x-goog-hash` against the object's bytes (G7): `Some(answer)` when it
/// disagrees. Without MD5 state, a client MD5 is checked by hashing the blob.
fn check_client_hash(
    ctx: &Ctx<'_>,
    api: GcsApi,
    blob: &Blob,
    crc: u32,
    md5: Option<[u8; 16]>,
) -> Option<Response> {
    let claimed = match client_hash(ctx) {
        Ok(c) => c,
        Err(message) => return Some(error(api, 400, &message)),
    };
    let mut mismatch = claimed.crc32c.is_some_and(|c| c != crc);
    if let Some(want) = claimed.md5 {
        let have = md5.unwrap_or_else(|| {
            let mut m = md5::Md5::new();
            blob.for_each_slice(0..blob.len(), |s| m.update(s));
            m.finalize().into()
        });
        mismatch |= want != have;
    }
    mismatch.then(|| {
        error(
            api,
            400,
            "Provided CRC32C or MD5 (x-goog-hash) does not match the uploaded data",
        )
    })
}

/// The checksums a client claims in `x-goog-hash` (G7), strictly parsed.
fn client_hash(ctx: &Ctx<'_>) -> Result<parse::GoogHash, String> {
    parse::goog_hash(
        ctx.req
            .headers
            .get_all("x-goog-hash")
            .iter()
            .map(|v| v.as_bytes()),
    )
}

/// Completion by a final empty request `bytes */T` with T = stored (G4, G7).
fn finish(
    ctx: &mut Ctx<'_>,
    session: &Arc<Session>,
    st: MutexGuard<'_, SessionState>,
    blob: Option<Blob>,
) -> Outcome {
    let api = session.api;
    let Some(blob) = blob else {
        return Outcome::Respond(error(api, 503, "another request is writing this session"));
    };
    let mut st = st;
    let digest = match &st.hasher {
        Some(h) => h.digest().unwrap_or_default(),
        None => st.digest.clone(),
    };
    let (crc, md5) = (digest.crc32c, digest.md5_digest());
    if let Some(r) = check_client_hash(ctx, api, &blob, crc, md5) {
        session.put_blob(&mut st, blob);
        return Outcome::Respond(r);
    }
    complete(ctx, session, st, blob, crc, md5)
}

/// Stores the object made of `blob` and marks the session complete.
fn complete(
    ctx: &Ctx<'_>,
    session: &Arc<Session>,
    mut st: MutexGuard<'_, SessionState>,
    blob: Blob,
    crc: u32,
    md5: Option<[u8; 16]>,
) -> Outcome {
    let api = session.api;
    if st.expired {
        session.put_blob(&mut st, Blob::default());
        return Outcome::Respond(error(api, 404, "No such upload"));
    }
    let size = blob.len();
    let meta = ObjectMeta {
        bucket: session.bucket.clone(),
        name: session.name.clone(),
        content_type: session.content_type.clone(),
        size,
        crc32c: crc,
        md5,
        generation: ctx.shared.gcs.next_generation(),
        created: SystemTime::now(),
        metadata: session.metadata.clone(),
    };
    let object = match ctx.shared.gcs.store_if(meta, blob, &session.preconditions) {
        Ok(object) => object,
        Err(mut blob) => {
            // The precondition no longer holds (another upload won): 412, and the session
            // stays as it was before this request (its checksums hashed again: a rare path).
            blob.truncate(st.stored);
            st.hasher = None;
            st.digest = Digest::new(ctx.shared.config.md5);
            let n = st.stored;
            st.digest.update_from(&blob, 0..n);
            session.put_blob(&mut st, blob);
            return Outcome::Respond(crate::json_api::precondition_failed());
        }
    };
    st.stored = size;
    st.hasher = None;
    st.total = Some(size);
    st.completed = Some(Arc::clone(&object));
    // The bytes now belong to the object; the session keeps an empty blob.
    session.put_blob(&mut st, Blob::default());
    drop(st);
    Outcome::Respond(object.completion(api, &ctx.origin(), !ctx.faults.no_proof))
}

// ---- objects: simple upload and download ----

/// `PUT /BUCKET/OBJECT` without a session: a single-request upload (C2's non-resumable
/// path). Answers like an XML completion.
pub(crate) fn simple_put(ctx: &mut Ctx<'_>, bucket: &str, name: &str) -> Outcome {
    let api = GcsApi::Xml;
    if let Some(r) = check_signed(ctx, api) {
        return Outcome::Respond(r);
    }
    let max = ctx.shared.config.max_object_size;
    let mut blob = Blob::default();
    let length = ctx.req.content_length();
    let md5_on = ctx.shared.config.md5;
    let digest = crate::hash::read_hashed(
        &mut ctx.body,
        length,
        &mut blob,
        max.saturating_add(1),
        md5_on,
        PIPE_MIN,
    );
    if blob.len() > max {
        return Outcome::Close(error(
            api,
            413,
            &format!("objects of this server are at most {max} bytes"),
        ));
    }
    if ctx.body.state() != BodyState::Done {
        return Outcome::Drop;
    }
    let (crc, md5) = (digest.crc32c, digest.md5_digest());
    let claimed = match client_hash(ctx) {
        Ok(c) => c,
        Err(message) => return Outcome::Respond(error(api, 400, &message)),
    };
    if claimed.crc32c.is_some_and(|c| c != crc)
        || (md5.is_some() && claimed.md5.is_some_and(|m| Some(m) != md5))
    {
        return Outcome::Respond(error(api, 400, "x-goog-hash does not match the data"));
    }
    let meta = ObjectMeta {
        bucket: bucket.to_owned(),
        name: name.to_owned(),
        content_type: ctx
            .req
            .header("content-type")
            .unwrap_or("application/octet-stream")
            .to_owned(),
        size: blob.len(),
        crc32c: crc,
        md5,
        generation: ctx.shared.gcs.next_generation(),
        created: SystemTime::now(),
        metadata: None,
    };
    let object = ctx.shared.gcs.store(meta, blob);
    Outcome::Respond(object.completion(api, &ctx.origin(), true))
}

/// `GET /BUCKET/OBJECT` (XML API): the bytes, with `Range` support.
pub(crate) fn get_object(ctx: &mut Ctx<'_>, bucket: &str, name: &str) -> Outcome {
    let Some(object) = ctx.shared.gcs.object(bucket, name) else {
        return Outcome::Respond(error(GcsApi::Xml, 404, "No such object"));
    };
    crate::json_api::download(ctx, object)
}

/// Splits the XML path `/BUCKET/OBJECT…` into bucket and object.
pub(crate) fn xml_object_path(path: &str) -> Option<(String, String)> {
    let rest = path.strip_prefix('/')?;
    let (bucket, object) = rest.split_once('/')?;
    if bucket.is_empty() || object.is_empty() {
        return None;
    }
    Some((
        percent_decode(bucket, false)?,
        percent_decode(object, false)?,
    ))
}

/// A signed-URL-like URL for `bucket`/`object` at `origin`, valid `expires`, signing
/// `content-type;host` and, for a resumable start, `x-goog-resumable`.
pub(crate) fn signed_url(
    origin: &str,
    bucket: &str,
    object: &str,
    expires: Duration,
    resumable: bool,
) -> String {
    let signed = if resumable {
        "content-type%3Bhost%3Bx-goog-resumable"
    } else {
        "content-type%3Bhost"
    };
    let object_path: Vec<String> = object.split('/').map(percent_encode).collect();
    format!(
        "{origin}/{}/{}?X-Goog-Algorithm=GOOG4-RSA-SHA256&X-Goog-Credential=conformance%40example.iam.gserviceaccount.com%2F{}%2Fauto%2Fstorage%2Fgoog4_request&X-Goog-Date={}&X-Goog-Expires={}&X-Goog-SignedHeaders={signed}&X-Goog-Signature={:016x}{:016x}",
        percent_encode(bucket),
        object_path.join("/"),
        &util::goog_date(SystemTime::now())[..8],
        util::goog_date(SystemTime::now()),
        expires.as_secs(),
        util::random_u64(),
        util::random_u64(),
    )
}

/// A copy of the bytes a session has persisted (waiting for a request writing it).
pub(crate) fn session_bytes(session: &Session) -> Option<Vec<u8>> {
    let st = session.lock();
    let (mut st, blob) = session.take_blob(st);
    let blob = blob?;
    let out = blob.copy_range(0..st.stored);
    session.put_blob(&mut st, blob);
    Some(out)
}
