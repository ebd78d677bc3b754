//! The server: accepting, one thread per connection, routing, faults, inspection.

use std::collections::{HashMap, VecDeque};
use std::io;
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant, SystemTime};

use crate::compliance::{self, Compliance};
use crate::fault::{Fault, FaultScript, FaultSet, FaultState, RequestKind, RetryAfter};
use crate::gcs::{self, Gcs, GcsApi, ObjectInfo, Session, SessionInfo};
use crate::http::{Body, BodyState, Conn, HeadError, Request, Response};
use crate::ietf::{self, Ietf, IetfUploadInfo};
use crate::json_api::{self, Allowed, JsonRoute};
use crate::media::{self, MediaInfo, MediaRoute, MediaStore};
use crate::retry_test::{self, RetryTests};
use crate::ton::{self, Ton, TonRangeForm, TonUploadInfo};
use crate::tus::{self, Tus, TusUploadInfo};

/// The most connections served at once; more are closed on accept.
const MAX_CONNECTIONS: usize = 1024;
/// How long shutdown waits for threads before leaving them behind.
const JOIN_DEADLINE: Duration = Duration::from_secs(3);
/// How long the start of a media body is waited for to tell its command (a slower client
/// gets its request classified as `media.other`, or `media.append` for multipart).
const PEEK_WAIT: Duration = Duration::from_secs(2);

/// How a server is set up. Build it with `..Default::default()` so new fields do not break
/// callers.
#[derive(Clone, Debug)]
pub struct ServerConfig {
    /// Where to listen. Default `127.0.0.1:0` (any free port on loopback).
    pub listen: SocketAddr,
    /// The server fault script (see [`crate::fault`]). Default: none.
    pub faults: FaultScript,
    /// How long a GCS session lives (G3: a week). Default 7 days.
    pub session_ttl: Duration,
    /// How long a connection may stay silent (between requests, or mid-body) before the
    /// server closes it. Default 30 s.
    pub idle_timeout: Duration,
    /// The longest `stall` fault honoured. Default 60 s.
    pub max_stall: Duration,
    /// Compute MD5 of uploads (GCS reports `md5Hash`). MD5 costs about 1.5 ns per byte on
    /// one core, which bounds upload throughput below 1 GB/s; turn it off for benchmarks
    /// (`md5Hash` is then absent, as GCS leaves it out for composite objects). A client
    /// `x-goog-hash: md5=…` is still verified. Default on.
    pub md5: bool,
    /// Polls of a compliance job after its upload completed until it is `complete` (C3):
    /// `in_progress` before. Default 2.
    pub compliance_polls: u32,
    /// How long a compliance job's `upload_url` is valid (C2). Default 15 minutes.
    pub compliance_upload_ttl: Duration,
    /// Request log entries kept (the oldest are dropped). Default 100 000.
    pub log_capacity: usize,
    /// Bytes of upload storage to map and touch at start, and keep for reuse (for
    /// benchmarks: writing to fresh memory costs page faults and zeroing, slower than the
    /// network on a VM). Storage freed by [`Server::remove_object`] and finished sessions is
    /// recycled either way (up to 1 GiB, or this much if more). Default 0.
    pub warm_memory: u64,
    /// The largest object accepted; a larger one is answered `413` (objects are kept in
    /// memory). Default 16 GiB.
    pub max_object_size: u64,
    /// TON `X-TON-Min-Chunk-Size` (T3): every chunk but the last is a multiple of it.
    /// Default 256 KiB (262144), GCS's granule, so a client's chunk planning is exercised
    /// without forcing megabyte chunks on small test files.
    pub ton_min_chunk: u64,
    /// TON `X-TON-Max-Chunk-Size` (T3). Default 64 MiB − 1 (67108863): the largest chunk T4
    /// allows ("less than 64MB"); not a multiple of the minimum, so a client must round down.
    pub ton_max_chunk: u64,
    /// How long a TON upload lives when the start sends no `X-TON-Expires` (its `Expires`).
    /// Default 1 hour, as in the seed's example.
    pub ton_upload_ttl: Duration,
    /// How a TON `308` writes its `Range` (T5). Default [`TonRangeForm::Plain`], `0-N`, as
    /// documented; the `range-form` fault overrides it per request.
    pub ton_range_form: TonRangeForm,
    /// Refuse TON starts without `X-TON-Expires` (some buckets require it, T2). Default off.
    pub ton_require_expires: bool,
    /// How long a tus upload lives from its creation (`Upload-Expires`, U10); `None`: it
    /// does not expire. Default 24 hours.
    pub tus_upload_ttl: Option<Duration>,
    /// How long an upload of the resumable-upload draft lives from its creation (`max-age`
    /// in `Upload-Limit`, R11); `None`: it does not expire. Default 24 hours.
    pub ietf_upload_ttl: Option<Duration>,
    /// The resumable-upload draft's `max-append-size` (R11): larger creations and appends
    /// are answered `413`. Default none.
    pub ietf_max_append_size: Option<u64>,
    /// How long a media id lives after INIT (`expires_after_secs`, M1, M5). Default 86400 s.
    pub media_expires_after: Duration,
    /// When set, FINALIZE gives the id this long from its own answer (which says so in
    /// `expires_after_secs`), as X does: processing may then outlast INIT's figure (M5).
    /// Default none: the id keeps INIT's deadline.
    pub media_finalize_expires_after: Option<Duration>,
    /// The largest APPEND segment (M2). Default 5,000,000 bytes, the core's
    /// `MAX_SEGMENT_SIZE`.
    pub media_max_segment: u64,
    /// S3: the most parts one ListParts page lists (S5; S3's is 1,000). Default 1000.
    pub s3_list_page_size: u32,
    /// S3: the smallest part but the last that Complete accepts (S4; S3's is 5 MiB, the
    /// default).
    pub s3_min_part_size: u64,
    /// S3: a repeated Complete of a completed upload answers `404 NoSuchUpload` (as MinIO
    /// does) instead of the first answer again (as S3 does, S7). Default false.
    pub s3_repeat_complete_gone: bool,
    /// `media_category` values whose FINALIZE starts asynchronous processing (M3, M4).
    /// Default `tweet_video`, `tweet_gif`, `amplify_video`, `dm_video`, `dm_gif`.
    pub media_async_categories: Vec<String>,
    /// STATUS polls until asynchronous processing succeeds (M4): polls before it answer
    /// `in_progress`. Default 3.
    pub media_processing_polls: u32,
    /// `check_after_secs` in `processing_info` (M4). Default 1 (Twitter says 5 or more; a
    /// test server should not make clients wait).
    pub media_check_after_secs: u64,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            faults: FaultScript::default(),
            session_ttl: Duration::from_secs(7 * 24 * 3600),
            idle_timeout: Duration::from_secs(30),
            max_stall: Duration::from_secs(60),
            md5: true,
            compliance_polls: 2,
            compliance_upload_ttl: Duration::from_secs(15 * 60),
            log_capacity: 100_000,
            warm_memory: 0,
            max_object_size: 16 << 30,
            ton_min_chunk: 256 << 10,
            ton_max_chunk: (64 << 20) - 1,
            ton_upload_ttl: Duration::from_secs(3600),
            ton_range_form: TonRangeForm::Plain,
            ton_require_expires: false,
            tus_upload_ttl: Some(Duration::from_secs(24 * 3600)),
            ietf_upload_ttl: Some(Duration::from_secs(24 * 3600)),
            ietf_max_append_size: None,
            media_expires_after: Duration::from_secs(86_400),
            media_finalize_expires_after: None,
            media_max_segment: resumable_core::media::MAX_SEGMENT_SIZE,
            media_async_categories: [
                "tweet_video",
                "tweet_gif",
                "amplify_video",
                "dm_video",
                "dm_gif",
            ]
            .into_iter()
            .map(str::to_owned)
            .collect(),
            media_processing_polls: 3,
            s3_list_page_size: 1000,
            s3_min_part_size: 5 * 1024 * 1024,
            s3_repeat_complete_gone: false,
            media_check_after_secs: 1,
        }
    }
}

/// One request as the server saw it.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct LogEntry {
    /// The method.
    pub method: String,
    /// The path, without the query.
    pub path: String,
    /// What kind of request the server took it for.
    pub kind: RequestKind,
    /// The `Content-Range` header, if any.
    pub content_range: Option<String>,
    /// The status answered; `None` when the connection was closed instead (drop faults,
    /// or a body cut short by the client).
    pub status: Option<u16>,
    /// Whether the answer was deliberately truncated (the `truncate` fault).
    pub truncated: bool,
    /// Request-body bytes received.
    pub body_bytes: u64,
    /// Whether an `Authorization` header was sent.
    pub authorization: bool,
    /// The session concerned, if any: a GCS `upload_id`, a TON `resumeId`, or a media id.
    pub upload_id: Option<String>,
    /// The faults applied, in script syntax (empty: none).
    pub faults: String,
}

/// State shared by the accept thread and the connection threads.
pub(crate) struct Shared {
    pub(crate) config: ServerConfig,
    pub(crate) addr: SocketAddr,
    pub(crate) base_url: String,
    stopped: Mutex<bool>,
    stop_cv: Condvar,
    pub(crate) body_bytes: AtomicU64,
    /// Requests being handled now, and the most there ever were at once.
    active: AtomicU64,
    peak_active: AtomicU64,
    faults: Mutex<FaultState>,
    log: Mutex<VecDeque<LogEntry>>,
    conns: Mutex<HashMap<u64, TcpStream>>,
    next_conn: AtomicU64,
    pub(crate) gcs: Gcs,
    pub(crate) compliance: Compliance,
    pub(crate) ton: Ton,
    pub(crate) tus: Tus,
    pub(crate) ietf: Ietf,
    pub(crate) media: MediaStore,
    pub(crate) s3: crate::s3::S3Store,
    pub(crate) retry_tests: RetryTests,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Shared {
    fn is_stopped(&self) -> bool {
        *lock(&self.stopped)
    }

    /// Sleeps up to `d`, waking early on shutdown.
    fn sleep(&self, d: Duration) {
        let guard = lock(&self.stopped);
        let _ = self
            .stop_cv
            .wait_timeout_while(guard, d, |stopped| !*stopped);
    }

    fn log(&self, entry: LogEntry) {
        let mut log = lock(&self.log);
        if self.config.log_capacity == 0 {
            return;
        }
        while log.len() >= self.config.log_capacity {
            log.pop_front();
        }
        log.push_back(entry);
    }
}

/// A request being handled.
pub(crate) struct Ctx<'a> {
    pub(crate) shared: &'a Shared,
    pub(crate) req: &'a Request,
    pub(crate) body: Body<'a>,
    pub(crate) faults: FaultSet,
    /// The session concerned (set by the handlers that create one: GCS session, TON upload,
    /// media id).
    pub(crate) upload_id: Option<String>,
}

impl Ctx<'_> {
    /// The origin for URLs the server hands out (session URIs, `selfLink`, `mediaLink`):
    /// `http://HOST:PORT` from the request's `Host` when it names a port (so URLs work under
    /// the name the client used), or when it names none and the server listens on port 80
    /// (the scheme's default, which a `Host` may leave out); the server's own address
    /// otherwise. A `Host` without its port (Google's Rust client sends `host: 127.0.0.1`)
    /// would send the next request to port 80.
    pub(crate) fn origin(&self) -> String {
        origin_for(
            self.req.header("host"),
            &self.shared.addr,
            &self.shared.base_url,
        )
    }
}

/// See [`Ctx::origin`].
fn origin_for(host: Option<&str>, listen: &SocketAddr, base_url: &str) -> String {
    match host.map(str::trim).and_then(crate::parse::host) {
        Some(crate::parse::Host {
            name,
            port: Some(port),
        }) => format!("http://{name}:{port}"),
        Some(h) if listen.port() == 80 => format!("http://{}", h.name),
        _ => base_url.to_owned(),
    }
}

/// What a handler decided.
pub(crate) enum Outcome {
    /// Answer.
    Respond(Response),
    /// Answer without reading the rest of the body, then close (for a body too large to
    /// accept).
    Close(Response),
    /// Close the connection without answering.
    Drop,
}

/// Where a request goes.
enum Route {
    Index,
    GcsStartJson(String),
    GcsStartXml(String, String),
    GcsSession(String, Option<Arc<Session>>),
    GcsSimplePut(String, String),
    GcsGetXml(String, String),
    Json(JsonRoute),
    RetryTestCreate,
    RetryTestList,
    RetryTestGet(String),
    RetryTestDelete(String),
    ComplianceCreate,
    ComplianceList,
    ComplianceStatus(String),
    ComplianceDownload(String),
    TonBucket(String),
    TonObject(String, String, Option<Arc<ton::Upload>>),
    /// A tus path: the upload's id (none: the creation URL) and the upload if it exists.
    Tus(Option<String>, Option<Arc<tus::Upload>>),
    /// A path of the resumable-upload draft: the upload's id (none: the creation URL) and the
    /// upload if it exists.
    Ietf(Option<String>, Option<Arc<ietf::Upload>>),
    Media(MediaRoute, Option<Arc<media::Media>>),
    S3(crate::s3::S3Route),
    NotFound,
    NotAllowed,
}

/// Where a request goes; `peeked` is the start of its body for endpoints whose command is in
/// the body (media).
fn route(shared: &Shared, req: &Request, peeked: &[u8]) -> Route {
    let m = req.method.as_str();
    let path = req.path.as_str();
    // TON and media paths first: the GCS XML fallback would take them for BUCKET/OBJECT.
    let reserved = [
        ton::PREFIX,
        "/1.1/ton/",
        "/1.1/media/",
        "/2/media/",
        crate::s3::PREFIX,
        "/tus/",
        "/ietf/",
    ];
    if let Some(r) = crate::s3::route(req) {
        return Route::S3(r);
    }
    if let Some(id) = ietf::route_path(path) {
        let upload = id.as_deref().and_then(|id| shared.ietf.upload(id));
        return Route::Ietf(id, upload);
    }
    if let Some(id) = tus::route_path(path) {
        let upload = id.as_deref().and_then(|id| shared.tus.upload(id));
        return Route::Tus(id, upload);
    }
    if let Some(bucket) = ton::bucket_path(path) {
        return match m {
            "POST" => Route::TonBucket(bucket),
            _ => Route::NotAllowed,
        };
    }
    if let Some((bucket, name)) = ton::object_path(path) {
        return match m {
            "PUT" => {
                let upload = req
                    .query_param("resumeId")
                    .and_then(|id| shared.ton.upload(id));
                Route::TonObject(bucket, name, upload)
            }
            "GET" => Route::TonObject(bucket, name, None),
            _ => Route::NotAllowed,
        };
    }
    match media::route(req, peeked) {
        Some(Some(r)) => {
            let media = r.media_id().and_then(|id| shared.media.get(id));
            return Route::Media(r, media);
        }
        Some(None) => return Route::NotAllowed,
        None => {}
    }
    // Other paths below TON's and media's are theirs too: not GCS XML objects.
    if reserved.iter().any(|p| path.starts_with(p)) {
        return Route::NotFound;
    }
    if let Some(id) = req.query_param("upload_id") {
        return match m {
            "PUT" | "DELETE" => Route::GcsSession(id.to_owned(), shared.gcs.session(id)),
            _ => Route::NotAllowed,
        };
    }
    if path == "/2/compliance/jobs" {
        return match m {
            "POST" => Route::ComplianceCreate,
            "GET" => Route::ComplianceList,
            _ => Route::NotAllowed,
        };
    }
    if let Some(id) = path.strip_prefix("/2/compliance/jobs/") {
        return match m {
            "GET" => Route::ComplianceStatus(id.to_owned()),
            _ => Route::NotAllowed,
        };
    }
    if let Some(rest) = path.strip_prefix(compliance::RESULTS_PREFIX) {
        let id = rest.split('/').next().unwrap_or("").to_owned();
        return match m {
            "GET" => Route::ComplianceDownload(id),
            _ => Route::NotAllowed,
        };
    }
    if path == "/retry_test" {
        return match m {
            "POST" => Route::RetryTestCreate,
            _ => Route::NotAllowed,
        };
    }
    if path == "/retry_tests" {
        return match m {
            "GET" => Route::RetryTestList,
            _ => Route::NotAllowed,
        };
    }
    if let Some(id) = path.strip_prefix("/retry_test/") {
        return match m {
            "GET" => Route::RetryTestGet(id.to_owned()),
            "DELETE" => Route::RetryTestDelete(id.to_owned()),
            _ => Route::NotAllowed,
        };
    }
    match json_api::route(req) {
        Some(Ok(r)) => return Route::Json(r),
        Some(Err(Allowed::ResumableStart(bucket))) => return Route::GcsStartJson(bucket),
        Some(Err(_)) => return Route::NotAllowed,
        None => {}
    }
    if path == "/" {
        return match m {
            "GET" => Route::Index,
            _ => Route::NotAllowed,
        };
    }
    if let Some((b, o)) = gcs::xml_object_path(path) {
        return match m {
            "POST" => Route::GcsStartXml(b, o),
            "PUT" => Route::GcsSimplePut(b, o),
            "GET" => Route::GcsGetXml(b, o),
            _ => Route::NotAllowed,
        };
    }
    Route::NotFound
}

fn kind_of(route: &Route, req: &Request) -> RequestKind {
    match route {
        Route::GcsStartJson(_) | Route::GcsStartXml(..) => RequestKind::GcsStart,
        Route::GcsSession(..) if req.method == "DELETE" => RequestKind::GcsDelete,
        Route::GcsSession(..) => {
            let carries_bytes = match req.headers.get("content-range") {
                Some(v) => v
                    .to_str()
                    .ok()
                    .and_then(crate::parse::content_range)
                    .is_none_or(|cr| cr.range.is_some()),
                None => req.content_length() != Some(0),
            };
            if carries_bytes {
                RequestKind::GcsChunk
            } else {
                RequestKind::GcsQuery
            }
        }
        Route::GcsSimplePut(..) | Route::GcsGetXml(..) | Route::Json(_) => RequestKind::GcsOther,
        Route::ComplianceCreate => RequestKind::ComplianceCreate,
        Route::ComplianceList | Route::ComplianceStatus(_) => RequestKind::ComplianceStatus,
        Route::ComplianceDownload(_) => RequestKind::ComplianceDownload,
        Route::TonBucket(_) if req.query_param("resumable") == Some("true") => {
            RequestKind::TonStart
        }
        Route::TonBucket(_) => RequestKind::TonSingle,
        Route::TonObject(..) if req.method == "PUT" => RequestKind::TonChunk,
        Route::TonObject(..) => RequestKind::TonOther,
        Route::Media(r, _) => r.kind(),
        Route::S3(r) => r.kind(),
        Route::Tus(id, _) => tus::kind(req, id.is_some()),
        Route::Ietf(id, _) => ietf::kind(req, id.is_some()),
        Route::Index
        | Route::NotFound
        | Route::NotAllowed
        | Route::RetryTestCreate
        | Route::RetryTestList
        | Route::RetryTestGet(_)
        | Route::RetryTestDelete(_) => RequestKind::Other,
    }
}

/// The storage-testbench operation a request is (see [`crate::retry_test`]).
fn operation(route: &Route, req: &Request) -> Option<&'static str> {
    Some(match route {
        Route::GcsStartJson(_)
        | Route::GcsStartXml(..)
        | Route::GcsSimplePut(..)
        | Route::Json(JsonRoute::Upload(_)) => retry_test::INSERT,
        Route::GcsSession(..) if req.method == "PUT" => retry_test::INSERT,
        Route::GcsGetXml(..) | Route::Json(JsonRoute::ObjectGet { .. }) => retry_test::GET,
        Route::Json(JsonRoute::ObjectList(_)) => "storage.objects.list",
        Route::Json(JsonRoute::ObjectDelete(..)) => "storage.objects.delete",
        Route::Json(JsonRoute::BucketList) => "storage.buckets.list",
        Route::Json(JsonRoute::BucketInsert) => "storage.buckets.insert",
        Route::Json(JsonRoute::BucketGet(_)) => "storage.buckets.get",
        Route::Json(JsonRoute::BucketDelete(_)) => "storage.buckets.delete",
        _ => return None,
    })
}

/// What byte-offset instructions see of a request.
fn retry_view(route: &Route, req: &Request) -> retry_test::View {
    match route {
        Route::GcsSession(_, Some(session)) if req.method == "PUT" => {
            let stored = session.lock().stored;
            let range = match req.header("content-range") {
                Some(v) => crate::parse::content_range(v).and_then(|c| c.range),
                None => req.content_length().filter(|n| *n > 0).map(|n| 0..n),
            };
            retry_test::View::Chunk { stored, range }
        }
        Route::GcsSimplePut(..) | Route::Json(JsonRoute::Upload(_)) => {
            retry_test::View::Simple(req.content_length())
        }
        _ => retry_test::View::Other,
    }
}

/// What a request's session-scoped faults and counters belong to.
enum Scope {
    Gcs(Arc<Session>),
    Ton(Arc<ton::Upload>),
    Media(Arc<media::Media>),
    Tus(Arc<tus::Upload>),
}

impl Scope {
    fn of(route: &Route) -> Option<Scope> {
        match route {
            Route::GcsSession(_, Some(s)) => Some(Scope::Gcs(Arc::clone(s))),
            Route::TonObject(_, _, Some(u)) => Some(Scope::Ton(Arc::clone(u))),
            Route::Media(_, Some(m)) => Some(Scope::Media(Arc::clone(m))),
            Route::Tus(_, Some(u)) => Some(Scope::Tus(Arc::clone(u))),
            _ => None,
        }
    }

    /// Counts a request of `kind`: returns the repeated faults still owed and the faults the
    /// session script selects.
    fn select(&self, kind: RequestKind) -> (Vec<Fault>, Vec<Fault>) {
        fn pick(
            script: Option<&FaultScript>,
            state: &mut FaultState,
            kind: RequestKind,
        ) -> (Vec<Fault>, Vec<Fault>) {
            let picked = match script {
                Some(script) => script.select(state, kind),
                None => Vec::new(),
            };
            (state.repeat(&picked), picked)
        }
        match self {
            Scope::Gcs(s) => {
                let mut st = s.lock();
                st.requests += 1;
                pick(s.script.as_ref(), &mut st.faults, kind)
            }
            Scope::Ton(u) => {
                let mut st = u.lock();
                st.requests += 1;
                pick(u.script.as_ref(), &mut st.faults, kind)
            }
            Scope::Media(m) => {
                let mut st = m.lock();
                st.requests += 1;
                pick(m.script.as_ref(), &mut st.faults, kind)
            }
            Scope::Tus(u) => {
                let mut st = u.lock();
                st.requests += 1;
                pick(u.script.as_ref(), &mut st.faults, kind)
            }
        }
    }

    fn add_body_bytes(&self, n: u64) {
        match self {
            Scope::Gcs(s) => s.lock().body_bytes += n,
            Scope::Ton(u) => u.lock().body_bytes += n,
            Scope::Media(m) => m.lock().body_bytes += n,
            Scope::Tus(u) => u.lock().body_bytes += n,
        }
    }

    fn id(&self) -> String {
        match self {
            Scope::Gcs(s) => s.id.clone(),
            Scope::Ton(u) => u.resume_id.clone(),
            Scope::Media(m) => m.id.clone(),
            Scope::Tus(u) => u.id.clone(),
        }
    }
}

/// A session fault script from a start request: the query parameter `session-faults` or the
/// header `x-resumable-session-faults`. `Err` names the parse error.
pub(crate) fn session_script(req: &Request) -> Result<Option<FaultScript>, String> {
    let spec = match (
        req.query_param("session-faults"),
        req.headers.get("x-resumable-session-faults"),
    ) {
        (Some(q), _) => q.to_owned(),
        (None, Some(h)) => h
            .to_str()
            .map_err(|_| "x-resumable-session-faults is not text".to_owned())?
            .to_owned(),
        (None, None) => return Ok(None),
    };
    FaultScript::parse(&spec)
        .map(Some)
        .map_err(|e| format!("session-faults: {e}"))
}

/// The per-request faults from the header and the query parameter.
fn request_faults(req: &Request) -> Result<Vec<Fault>, String> {
    let mut out = Vec::new();
    for value in req.headers.get_all("x-resumable-fault") {
        let text = value
            .to_str()
            .map_err(|_| "x-resumable-fault is not text".to_owned())?;
        out.extend(FaultScript::parse_faults(text).map_err(|e| format!("x-resumable-fault: {e}"))?);
    }
    if let Some(spec) = req.query_param("fault") {
        out.extend(FaultScript::parse_faults(spec).map_err(|e| format!("fault: {e}"))?);
    }
    Ok(out)
}

/// An answer standing in for the request (the `status` fault), in the error shape of the
/// protocol the request belongs to.
fn injected(
    route: &Route,
    kind: RequestKind,
    api: GcsApi,
    code: u16,
    faults: &FaultSet,
) -> Response {
    let message = format!("injected fault: status {code}");
    let mut r = match (route, kind) {
        (
            _,
            RequestKind::ComplianceCreate
            | RequestKind::ComplianceStatus
            | RequestKind::ComplianceDownload,
        ) => Response::new(code).json(&serde_json::json!({
            "title": if code == 429 { "Too Many Requests" } else { "Service Unavailable" },
            "detail": message,
            "type": "about:blank",
            "status": code,
        })),
        (Route::TonBucket(_) | Route::TonObject(..), _) => ton::error(code, &message),
        (Route::Media(r, _), _) => media::injected(r.is_v2(), code, &message),
        (Route::S3(_), _) => crate::s3::injected(code, &message),
        (Route::Tus(..), _) => tus::error(code, &message),
        (Route::Ietf(..), _) => ietf::error(code, &message),
        _ => gcs::error(api, code, &message),
    };
    let retry_after = match faults.retry_after {
        Some(r) => Some(r),
        None if code == 429 => Some(RetryAfter::Seconds(1)),
        None => None,
    };
    let now = SystemTime::now();
    let wait = match retry_after {
        Some(RetryAfter::Seconds(s)) => {
            r = r.header("Retry-After", s.to_string());
            Some(s)
        }
        Some(RetryAfter::Date(s)) => {
            r = r.header(
                "Retry-After",
                httpdate::fmt_http_date(now + Duration::from_secs(s)),
            );
            Some(s)
        }
        None => None,
    };
    // M5: Twitter's rate-limit headers; `x-rate-limit-reset` is epoch seconds (read against
    // the answer's `Date`).
    if let (429, Some(s)) = (code, wait) {
        let reset = crate::util::unix_secs(now) + s;
        r = r
            .header("x-rate-limit-limit", "150")
            .header("x-rate-limit-remaining", "0")
            .header("x-rate-limit-reset", reset.to_string());
    }
    r
}

fn dispatch(ctx: &mut Ctx<'_>, route: &Route) -> Outcome {
    match route {
        Route::Index => Outcome::Respond(Response::new(200).body(
            "text/plain; charset=utf-8",
            banner_text(ctx.shared).into_bytes(),
        )),
        Route::GcsStartJson(bucket) => gcs::start_json(ctx, bucket),
        Route::GcsStartXml(bucket, object) => gcs::start_xml(ctx, bucket, object),
        Route::GcsSession(_, None) => {
            Outcome::Respond(gcs::error(GcsApi::Json, 404, "No such upload"))
        }
        Route::GcsSession(_, Some(session)) => {
            let mut outcome = if ctx.req.method == "DELETE" {
                gcs::delete(ctx, session)
            } else {
                gcs::put(ctx, session)
            };
            if let Outcome::Respond(r) = &mut outcome {
                gcs::apply_no_308(ctx, r);
            }
            outcome
        }
        Route::GcsSimplePut(bucket, object) => gcs::simple_put(ctx, bucket, object),
        Route::GcsGetXml(bucket, object) => gcs::get_object(ctx, bucket, object),
        Route::Json(r) => json_api::handle(ctx, r),
        Route::RetryTestCreate => match ctx.body.read_small(64 * 1024) {
            Ok(body) => Outcome::Respond(retry_test::create(&ctx.shared.retry_tests, &body)),
            Err(true) => Outcome::Close(gcs::error(GcsApi::Json, 413, "retry test too large")),
            Err(false) => Outcome::Drop,
        },
        Route::RetryTestList => Outcome::Respond(retry_test::list(&ctx.shared.retry_tests)),
        Route::RetryTestGet(id) => Outcome::Respond(retry_test::get(&ctx.shared.retry_tests, id)),
        Route::RetryTestDelete(id) => {
            Outcome::Respond(retry_test::delete(&ctx.shared.retry_tests, id))
        }
        Route::ComplianceCreate => compliance::create(ctx),
        Route::ComplianceList => compliance::list(ctx),
        Route::ComplianceStatus(id) => compliance::status(ctx, id),
        Route::ComplianceDownload(id) => compliance::download(ctx, id),
        Route::TonBucket(bucket) if ctx.req.query_param("resumable") == Some("true") => {
            ton::start(ctx, bucket)
        }
        Route::TonBucket(bucket) => ton::single(ctx, bucket),
        Route::TonObject(bucket, name, Some(upload)) => ton::chunk(ctx, upload, bucket, name),
        Route::TonObject(..) if ctx.req.method == "PUT" => Outcome::Respond(ton::error(
            404,
            "no such upload: a chunk goes to the start's Location, with its resumeId (T4)",
        )),
        Route::TonObject(bucket, name, None) => ton::get_object(ctx, bucket, name),
        Route::Media(r, _) => media::handle(ctx, r),
        Route::S3(r) => crate::s3::handle(ctx, r),
        Route::Tus(id, upload) => tus::handle(ctx, id.as_deref(), upload.as_ref()),
        Route::Ietf(id, upload) => ietf::handle(ctx, id.as_deref(), upload.as_ref()),
        Route::NotFound => Outcome::Respond(
            Response::new(404).body("text/plain; charset=utf-8", b"not found\n".to_vec()),
        ),
        Route::NotAllowed => Outcome::Respond(Response::new(405).body(
            "text/plain; charset=utf-8",
            b"method not allowed\n".to_vec(),
        )),
    }
}

/// Handles one request; returns whether the connection may be reused.
fn handle(shared: &Shared, conn: &mut Conn, mut req: Request) -> bool {
    // Media commands may be in the body: look at its start (without consuming it) to tell
    // the kind of request and the media id before faults are selected.
    let peeked = match media::wants_peek(&req, &shared.config) {
        Some(n) => {
            if req.expect_continue {
                req.expect_continue = false;
                if conn.write_all(b"HTTP/1.1 100 Continue\r\n\r\n").is_err() {
                    return false;
                }
            }
            conn.peek(n, PEEK_WAIT, shared.config.idle_timeout).to_vec()
        }
        None => Vec::new(),
    };
    let route = route(shared, &req, &peeked);
    let kind = kind_of(&route, &req);
    let scope = Scope::of(&route);
    let parsed = request_faults(&req);
    let request_faults = parsed.as_ref().cloned().unwrap_or_default();

    // Faults: repeats < server script < session script < this request.
    let mut faults = Vec::new();
    let server_script = {
        let mut st = lock(&shared.faults);
        let script = shared.config.faults.select(&mut st, kind);
        let fresh: Vec<Fault> = script.iter().chain(&request_faults).copied().collect();
        faults.extend(st.repeat(&fresh));
        script
    };
    let session_script = match &scope {
        Some(s) => {
            let (repeats, picked) = s.select(kind);
            faults.extend(repeats);
            picked
        }
        None => Vec::new(),
    };
    faults.extend(server_script);
    faults.extend(session_script);
    faults.extend(request_faults);
    // storage-testbench's instructions (x-retry-test-id, x-goog-emulator-instructions).
    let plan = retry_test::plan(
        &shared.retry_tests,
        &req.headers,
        operation(&route, &req),
        &retry_view(&route, &req),
        match &route {
            Route::GcsSession(_, Some(s)) => s.retry_test.as_deref(),
            _ => None,
        },
    );
    faults.extend(plan.faults.iter().copied());
    let fault_set = FaultSet::from_faults(&faults);

    let mut entry = LogEntry {
        method: req.method.clone(),
        path: req.path.clone(),
        kind,
        content_range: req.header("content-range").map(str::to_owned),
        status: None,
        truncated: false,
        body_bytes: 0,
        authorization: req.headers.contains_key("authorization"),
        upload_id: match (&route, &scope) {
            (Route::GcsSession(id, _), _) => Some(id.clone()),
            (_, Some(s)) => Some(s.id()),
            _ => None,
        },
        faults: fault_set.text.clone(),
    };
    let api = match &scope {
        Some(Scope::Gcs(s)) => s.api,
        _ => GcsApi::Json,
    };

    let pause_sleep = |d: Duration| shared.sleep(d.min(shared.config.max_stall));
    let mut ctx = Ctx {
        shared,
        req: &req,
        body: Body::new(conn, &req, fault_set.drop_after, &shared.body_bytes),
        faults: fault_set,
        upload_id: None,
    };
    let mut plan = plan;
    if let Some((at, wait)) = plan.body_pause {
        ctx.body.pause_at(at, wait, &pause_sleep);
    }
    let pace_sleep = |d: Duration| shared.sleep(d);
    if let Some(rate) = ctx.faults.rate {
        ctx.body.pace(rate, &pace_sleep);
    }
    let outcome = if let Err(message) = &parsed {
        ctx.body.drain();
        Outcome::Respond(Response::new(400).body(
            "text/plain; charset=utf-8",
            format!("{message}\n").into_bytes(),
        ))
    } else if let Some(r) = plan.refuse.take() {
        ctx.body.drain();
        Outcome::Respond(r)
    } else if let Some(code) = ctx.faults.status {
        ctx.body.drain();
        Outcome::Respond(injected(&route, kind, api, code, &ctx.faults))
    } else {
        dispatch(&mut ctx, &route)
    };
    // Instructions that act once the request was handled.
    let outcome = match (outcome, plan.answer_instead) {
        (Outcome::Respond(_), Some(code)) => {
            Outcome::Respond(injected(&route, kind, api, code, &ctx.faults))
        }
        (Outcome::Respond(r), None) => {
            if let (Some((n, id, op, text)), Route::GcsSession(..), 200 | 201) =
                (plan.on_completion.take(), &route, r.status)
            {
                ctx.faults.truncate = Some(n);
                shared.retry_tests.consume(&id, op, &text);
            }
            Outcome::Respond(r)
        }
        (other, _) => other,
    };
    if matches!(outcome, Outcome::Respond(_)) {
        ctx.body.drain();
    }
    let body_state = ctx.body.state();
    let received = ctx.body.received();
    let faults = std::mem::take(&mut ctx.faults);
    if entry.upload_id.is_none() {
        entry.upload_id = ctx.upload_id.take();
    }
    drop(ctx);

    entry.body_bytes = received;
    if let Some(s) = &scope {
        s.add_body_bytes(received);
    }
    if let Some(stall) = faults.stall {
        shared.sleep(stall.min(shared.config.max_stall));
    }
    let stopped = shared.is_stopped();
    let (response, close) = match outcome {
        // A server shutting down (perhaps mid-stall) answers no more.
        Outcome::Respond(r)
            if faults.drop_after.is_none() && body_state == BodyState::Done && !stopped =>
        {
            (r, false)
        }
        Outcome::Close(r) if faults.drop_after.is_none() && !stopped => (r, true),
        _ => {
            // Dropped: close without answering. (Logged first, so a client that sees the
            // connection close can already read the log.)
            shared.log(entry);
            if plan.reset {
                // A reset, not an orderly close: with SO_LINGER 0 the last close of the
                // socket sends RST (the connection thread closes it without a shutdown).
                let _ = socket2::SockRef::from(&conn.stream).set_linger(Some(Duration::ZERO));
                conn.reset = true;
            } else {
                let _ = conn.stream.shutdown(Shutdown::Both);
            }
            return false;
        }
    };
    let mut response = response;
    if plan.corrupt && matches!(response.status, 200 | 206) && response.body_len() > 0 {
        response.materialize();
        response.body[0] = response.body[0].wrapping_add(1);
    }
    entry.status = Some(response.status);
    if let Some(n) = faults.truncate {
        entry.truncated = true;
        let mut bytes = response.head_bytes(true, 1024);
        bytes.extend(response.body_prefix(n));
        shared.log(entry);
        let _ = conn.write_all(&bytes);
        let _ = conn.stream.shutdown(Shutdown::Both);
        return false;
    }
    let keep = req.keep_alive && !close && !shared.is_stopped();
    shared.log(entry);
    let delivery = plan.delivery;
    let cut = delivery.cut_after.is_some_and(|n| n < response.body_len());
    let written = response
        .write_to(&mut conn.stream, !keep, delivery, |d| {
            shared.sleep(d.min(shared.config.max_stall))
        })
        .is_ok();
    if cut {
        // A broken stream: the body stops short and the connection closes.
        let _ = conn.stream.shutdown(Shutdown::Both);
        return false;
    }
    if close && written {
        linger(conn);
    }
    keep && written
}

fn serve_connection(shared: &Shared, stream: TcpStream) {
    let idle = Some(shared.config.idle_timeout.max(Duration::from_millis(1)));
    let _ = stream.set_read_timeout(idle);
    let _ = stream.set_write_timeout(idle);
    let _ = stream.set_nodelay(true);
    let mut conn = Conn::new(stream);
    while !shared.is_stopped() {
        let req = match conn.read_head() {
            Ok(r) => r,
            Err(HeadError::Closed) => break,
            Err(HeadError::TooLarge) => {
                refuse(&mut conn, 431, "request head too large");
                break;
            }
            Err(HeadError::Malformed(why)) => {
                refuse(&mut conn, 400, why);
                break;
            }
        };
        let active = shared.active.fetch_add(1, Ordering::SeqCst) + 1;
        shared.peak_active.fetch_max(active, Ordering::SeqCst);
        let reuse = handle(shared, &mut conn, req);
        shared.active.fetch_sub(1, Ordering::SeqCst);
        if !reuse {
            break;
        }
    }
    if !conn.reset {
        let _ = conn.stream.shutdown(Shutdown::Both);
    }
}

/// Answers a request that cannot be read, then closes gracefully: stop writing, and read
/// (boundedly) what the client is still sending, so the answer is not lost to a reset.
fn refuse(conn: &mut Conn, status: u16, why: &str) {
    let r =
        Response::new(status).body("text/plain; charset=utf-8", format!("{why}\n").into_bytes());
    let mut bytes = r.head_bytes(true, 0);
    bytes.extend_from_slice(&r.body);
    if conn.write_all(&bytes).is_ok() {
        linger(conn);
    }
}

/// Closes gracefully after a final answer: stops writing, then reads (boundedly: 4 MiB or
/// half a second of silence) what the client is still sending, so that the answer is not
/// destroyed by a reset.
fn linger(conn: &mut Conn) {
    let _ = conn.stream.shutdown(Shutdown::Write);
    let _ = conn
        .stream
        .set_read_timeout(Some(Duration::from_millis(500)));
    let mut sink = [0u8; 16 * 1024];
    let mut left = 4usize << 20;
    while left > 0 {
        match io::Read::read(&mut conn.stream, &mut sink) {
            Ok(0) | Err(_) => break,
            Ok(n) => left = left.saturating_sub(n),
        }
    }
}

fn accept_loop(listener: TcpListener, shared: Arc<Shared>) {
    let mut threads: Vec<JoinHandle<()>> = Vec::new();
    loop {
        let accepted = listener.accept();
        if shared.is_stopped() {
            break;
        }
        threads.retain(|t| !t.is_finished());
        let stream = match accepted {
            Ok((stream, _)) => stream,
            Err(_) => {
                // Out of descriptors or similar: back off briefly.
                shared.sleep(Duration::from_millis(10));
                continue;
            }
        };
        if threads.len() >= MAX_CONNECTIONS {
            continue;
        }
        let id = shared.next_conn.fetch_add(1, Ordering::Relaxed);
        {
            let mut conns = lock(&shared.conns);
            if shared.is_stopped() {
                break;
            }
            if let Ok(clone) = stream.try_clone() {
                conns.insert(id, clone);
            }
        }
        let s = Arc::clone(&shared);
        let spawned = thread::Builder::new()
            .name(format!("conformance-conn-{id}"))
            .spawn(move || {
                serve_connection(&s, stream);
                lock(&s.conns).remove(&id);
            });
        match spawned {
            Ok(handle) => threads.push(handle),
            Err(_) => {
                lock(&shared.conns).remove(&id);
            }
        }
    }
    let deadline = Instant::now() + JOIN_DEADLINE;
    for t in threads {
        join_until(t, deadline);
    }
}

/// Joins `t` if it finishes before `deadline`; otherwise leaves it behind.
fn join_until(t: JoinHandle<()>, deadline: Instant) {
    while !t.is_finished() {
        if Instant::now() >= deadline {
            return;
        }
        thread::sleep(Duration::from_millis(2));
    }
    let _ = t.join();
}

/// A running conformance server. Stops on [`Server::shutdown`] or drop.
pub struct Server {
    shared: Arc<Shared>,
    accept: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for Server {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Server")
            .field("addr", &self.shared.addr)
            .finish_non_exhaustive()
    }
}

impl Server {
    /// Binds `config.listen` and starts serving on a background thread.
    ///
    /// # Errors
    /// When the address cannot be bound or the thread cannot be started.
    pub fn start(config: ServerConfig) -> io::Result<Server> {
        let listener = TcpListener::bind(config.listen)?;
        let addr = listener.local_addr()?;
        if config.warm_memory > 0 {
            crate::blob::warm(config.warm_memory);
        }
        let host = if addr.ip().is_unspecified() {
            SocketAddr::new(
                if addr.is_ipv4() {
                    std::net::Ipv4Addr::LOCALHOST.into()
                } else {
                    std::net::Ipv6Addr::LOCALHOST.into()
                },
                addr.port(),
            )
        } else {
            addr
        };
        let shared = Arc::new(Shared {
            config,
            addr: host,
            base_url: format!("http://{host}"),
            stopped: Mutex::new(false),
            stop_cv: Condvar::new(),
            body_bytes: AtomicU64::new(0),
            active: AtomicU64::new(0),
            peak_active: AtomicU64::new(0),
            faults: Mutex::new(FaultState::default()),
            log: Mutex::new(VecDeque::new()),
            conns: Mutex::new(HashMap::new()),
            next_conn: AtomicU64::new(0),
            gcs: Gcs::default(),
            compliance: Compliance::default(),
            ton: Ton::default(),
            tus: Tus::default(),
            ietf: Ietf::default(),
            media: MediaStore::default(),
            s3: crate::s3::S3Store::default(),
            retry_tests: RetryTests::default(),
        });
        let s = Arc::clone(&shared);
        let accept = thread::Builder::new()
            .name("conformance-accept".to_owned())
            .spawn(move || accept_loop(listener, s))?;
        Ok(Server {
            shared,
            accept: Some(accept),
        })
    }

    /// The address the server listens on (loopback when bound to an unspecified address).
    pub fn addr(&self) -> SocketAddr {
        self.shared.addr
    }

    /// `http://127.0.0.1:PORT`.
    pub fn base_url(&self) -> String {
        self.shared.base_url.clone()
    }

    /// A signed-URL-like XML start URL for `bucket`/`object` (G1): `POST` it with
    /// `x-goog-resumable: start`. It carries a fake `X-Goog-Signature` and signs
    /// `content-type;host;x-goog-resumable`, so those headers must be sent and
    /// `Authorization` must not. Valid for a week.
    pub fn gcs_xml_url(&self, bucket: &str, object: &str) -> String {
        gcs::signed_url(
            &self.shared.base_url,
            bucket,
            object,
            Duration::from_secs(7 * 24 * 3600),
            true,
        )
    }

    /// The JSON API start URL (G2):
    /// `BASE/upload/storage/v1/b/BUCKET/o?uploadType=resumable&name=OBJECT`.
    pub fn gcs_json_url(&self, bucket: &str, object: &str) -> String {
        format!(
            "{}/upload/storage/v1/b/{}/o?uploadType=resumable&name={}",
            self.shared.base_url,
            crate::http::percent_encode(bucket),
            crate::http::percent_encode(object)
        )
    }

    /// The compliance jobs endpoint (C1): `BASE/2/compliance/jobs`.
    pub fn compliance_url(&self) -> String {
        format!("{}/2/compliance/jobs", self.shared.base_url)
    }

    /// A TON bucket URL (T1, T2): `BASE/1.1/ton/bucket/BUCKET`. `POST` it for a single-request
    /// upload, or with `?resumable=true` to start a resumable one.
    pub fn ton_bucket_url(&self, bucket: &str) -> String {
        format!(
            "{}{}{}",
            self.shared.base_url,
            ton::PREFIX,
            crate::http::percent_encode(bucket)
        )
    }

    /// The bytes of a stored TON object, by name (`SzFxGfAg_Zj.mp4`) or by the `Location` the
    /// server answered (relative or absolute).
    pub fn ton_object(&self, bucket: &str, name_or_location: &str) -> Option<Vec<u8>> {
        self.shared.ton.object(bucket, name_or_location)
    }

    /// Forgets a stored TON object. Returns whether it existed.
    pub fn remove_ton_object(&self, bucket: &str, name_or_location: &str) -> bool {
        self.shared.ton.remove_object(bucket, name_or_location)
    }

    /// A resumable TON upload, by its location (`…?resumable=true&resumeId=N`) or `resumeId`.
    pub fn ton_upload(&self, location_or_resume_id: &str) -> Option<TonUploadInfo> {
        self.shared.ton.upload_info(location_or_resume_id)
    }

    /// The bytes a TON upload holds so far (its persisted prefix; all of them once complete).
    pub fn ton_upload_bytes(&self, location_or_resume_id: &str) -> Option<Vec<u8>> {
        self.shared.ton.upload_bytes(location_or_resume_id)
    }

    /// Every resumable TON upload, in no particular order.
    pub fn ton_uploads(&self) -> Vec<TonUploadInfo> {
        self.shared.ton.all_uploads()
    }

    /// Expires a TON upload now (as the `expire` fault does): it answers `404` from then on.
    /// Returns whether it existed.
    pub fn expire_ton_upload(&self, location_or_resume_id: &str) -> bool {
        self.shared.ton.expire(location_or_resume_id)
    }

    /// The tus creation URL (U6): `BASE/tus/files/`. `POST` it to create an upload;
    /// `OPTIONS` it for what the server supports (U2).
    pub fn tus_url(&self) -> String {
        format!("{}{}/", self.shared.base_url, tus::PREFIX)
    }

    /// A tus upload, by its URL, path or id.
    pub fn tus_upload(&self, url_or_id: &str) -> Option<TusUploadInfo> {
        self.shared.tus.upload_info(url_or_id)
    }

    /// The bytes a tus upload holds, by its URL, path or id.
    pub fn tus_upload_bytes(&self, url_or_id: &str) -> Option<Vec<u8>> {
        self.shared.tus.upload_bytes(url_or_id)
    }

    /// Every tus upload, in no particular order.
    pub fn tus_uploads(&self) -> Vec<TusUploadInfo> {
        self.shared.tus.all_uploads()
    }

    /// The creation URL of the resumable-upload draft (R3): `BASE/ietf/files`. `POST` it with
    /// `Upload-Complete` and `Upload-Draft-Interop-Version` to create an upload.
    pub fn ietf_url(&self) -> String {
        format!("{}{}", self.shared.base_url, ietf::PREFIX)
    }

    /// An upload of the resumable-upload draft, by its URL, path or id.
    pub fn ietf_upload(&self, url_or_id: &str) -> Option<IetfUploadInfo> {
        self.shared.ietf.upload_info(url_or_id)
    }

    /// The bytes an upload of the resumable-upload draft holds, by its URL, path or id.
    pub fn ietf_upload_bytes(&self, url_or_id: &str) -> Option<Vec<u8>> {
        self.shared.ietf.upload_bytes(url_or_id)
    }

    /// Every upload of the resumable-upload draft, in no particular order.
    pub fn ietf_uploads(&self) -> Vec<IetfUploadInfo> {
        self.shared.ietf.all_uploads()
    }

    /// Expires a tus upload now (as the `expire` fault does): it answers `410` from then on.
    /// Returns whether it existed.
    pub fn expire_tus_upload(&self, url_or_id: &str) -> bool {
        self.shared.tus.expire(url_or_id)
    }

    /// The v1.1 media endpoint (M1–M5): `BASE/1.1/media/upload.json`.
    pub fn media_v1_url(&self) -> String {
        format!("{}{}", self.shared.base_url, media::V1_PATH)
    }

    /// The v2 media base (M6): `BASE/2/media/upload` (`/initialize`, `/{id}/append`,
    /// `/{id}/finalize` below it; STATUS on it).
    pub fn media_v2_base(&self) -> String {
        format!("{}{}", self.shared.base_url, media::V2_PATH)
    }

    /// The S3 endpoint, path-style (S1): `BASE/s3`; objects are `BASE/s3/{bucket}/{key}`.
    pub fn s3_endpoint(&self) -> String {
        format!("{}/s3", self.shared.base_url)
    }

    /// The bytes of a completed S3 object (`None` before its upload completed).
    pub fn s3_object(&self, bucket: &str, key: &str) -> Option<Vec<u8>> {
        self.shared.s3.object(bucket, key)
    }

    /// The part numbers an open S3 multipart upload holds (`None`: no such upload).
    pub fn s3_upload_parts(&self, upload_id: &str) -> Option<Vec<u32>> {
        self.shared.s3.parts(upload_id)
    }

    /// The IDs of the open S3 multipart uploads.
    pub fn s3_uploads(&self) -> Vec<String> {
        self.shared.s3.uploads()
    }

    /// The assembled bytes of a finalized media id (`None` before FINALIZE succeeded).
    pub fn media(&self, media_id: &str) -> Option<Vec<u8>> {
        self.shared.media.bytes(media_id)
    }

    /// What the server knows of a media id: segments, APPENDs per segment, processing.
    pub fn media_info(&self, media_id: &str) -> Option<MediaInfo> {
        self.shared.media.info(media_id)
    }

    /// Every media id, in no particular order.
    pub fn all_media(&self) -> Vec<MediaInfo> {
        self.shared.media.all()
    }

    /// Expires a media id now (as the `expire` fault does). Returns whether it existed.
    pub fn expire_media(&self, media_id: &str) -> bool {
        self.shared.media.expire(media_id)
    }

    /// Forgets a media id and its bytes. Returns whether it existed.
    pub fn remove_media(&self, media_id: &str) -> bool {
        self.shared.media.remove(media_id)
    }

    /// The bytes of a completed object.
    pub fn object(&self, bucket: &str, object: &str) -> Option<Vec<u8>> {
        self.shared
            .gcs
            .object(bucket, object)
            .map(|o| o.data.to_vec())
    }

    /// What the server knows of a completed object.
    pub fn object_info(&self, bucket: &str, object: &str) -> Option<ObjectInfo> {
        self.shared
            .gcs
            .object(bucket, object)
            .map(|o| gcs::object_info(&o))
    }

    /// Forgets an object (to free memory in long benchmarks). Returns whether it existed.
    pub fn remove_object(&self, bucket: &str, object: &str) -> bool {
        self.shared.gcs.remove_object(bucket, object)
    }

    /// A session, by session URI or bare `upload_id`.
    pub fn session(&self, uri_or_id: &str) -> Option<SessionInfo> {
        let id = upload_id_of(uri_or_id);
        self.shared
            .gcs
            .session(&id)
            .map(|s| gcs::session_info(&s, self.shared.config.session_ttl))
    }

    /// The bytes a session holds so far (its persisted prefix).
    pub fn session_bytes(&self, uri_or_id: &str) -> Option<Vec<u8>> {
        let id = upload_id_of(uri_or_id);
        let session = self.shared.gcs.session(&id)?;
        let completed = session.lock().completed.clone();
        match completed {
            // The object's bytes, while it is still the current generation.
            Some(meta) => self
                .shared
                .gcs
                .object(&meta.bucket, &meta.name)
                .filter(|o| o.generation == meta.generation)
                .map(|o| o.data.to_vec()),
            None => gcs::session_bytes(&session),
        }
    }

    /// Every session, in no particular order.
    pub fn sessions(&self) -> Vec<SessionInfo> {
        self.shared
            .gcs
            .all_sessions()
            .iter()
            .map(|s| gcs::session_info(s, self.shared.config.session_ttl))
            .collect()
    }

    /// Expires a session now (as the `expire` fault does). Returns whether it existed.
    pub fn expire_session(&self, uri_or_id: &str) -> bool {
        match self.shared.gcs.session(&upload_id_of(uri_or_id)) {
            Some(s) => {
                s.lock().expired = true;
                true
            }
            None => false,
        }
    }

    /// All request-body bytes ever received, on every connection and protocol (including
    /// bytes that were discarded: re-sent, cut short, or answered by an injected status; for
    /// media, the multipart framing too).
    pub fn body_bytes_received(&self) -> u64 {
        self.shared.body_bytes.load(Ordering::Relaxed)
    }

    /// The most requests the server was handling at the same time (from reading a request's
    /// head to writing its answer), since it started: how many a client had in flight.
    pub fn peak_concurrent_requests(&self) -> u64 {
        self.shared.peak_active.load(Ordering::SeqCst)
    }

    /// How many requests the server is handling right now (from reading a request's head to
    /// writing its answer). Tests that kill a client wait for this to reach 0 before they
    /// measure what the server holds: bytes still in the socket are read after the kill.
    pub fn requests_in_progress(&self) -> u64 {
        self.shared.active.load(Ordering::SeqCst)
    }

    /// The request log, oldest first.
    pub fn request_log(&self) -> Vec<LogEntry> {
        lock(&self.shared.log).iter().cloned().collect()
    }

    /// Empties the request log.
    pub fn clear_request_log(&self) {
        lock(&self.shared.log).clear();
    }

    /// A multi-line description of the endpoints, printed by `resumable serve`.
    pub fn banner(&self) -> String {
        banner_text(&self.shared)
    }

    /// Stops the server: closes the listener and every connection, interrupts stalls, and
    /// waits (boundedly) for the threads. Also done on drop.
    pub fn shutdown(self) {
        drop(self);
    }

    fn stop(&mut self) {
        {
            let mut stopped = lock(&self.shared.stopped);
            if *stopped {
                return;
            }
            *stopped = true;
        }
        self.shared.stop_cv.notify_all();
        // Wake the accept thread.
        let _ = TcpStream::connect_timeout(&self.shared.addr, Duration::from_secs(1));
        for stream in lock(&self.shared.conns).values() {
            let _ = stream.shutdown(Shutdown::Both);
        }
        if let Some(t) = self.accept.take() {
            join_until(t, Instant::now() + JOIN_DEADLINE + Duration::from_secs(1));
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The `upload_id` of a session URI, or the argument itself.
fn upload_id_of(uri_or_id: &str) -> String {
    let query = uri_or_id.split_once('?').map_or("", |(_, q)| q);
    crate::http::parse_query(query)
        .and_then(|q| {
            q.into_iter()
                .find(|(k, _)| k == "upload_id")
                .map(|(_, v)| v)
        })
        .unwrap_or_else(|| uri_or_id.to_owned())
}

fn banner_text(shared: &Shared) -> String {
    let base = &shared.base_url;
    let faults = if shared.config.faults.is_empty() {
        "none".to_owned()
    } else {
        shared.config.faults.to_string()
    };
    format!(
        "resumable conformance server on {base}\n\
         \x20 GCS XML / signed URL start (G1): POST {xml}\n\
         \x20     with x-goog-resumable: start and Content-Type (any BUCKET/OBJECT path works)\n\
         \x20 GCS JSON API start (G2):         POST {base}/upload/storage/v1/b/BUCKET/o?uploadType=resumable&name=OBJECT\n\
         \x20 GCS download:                    GET  {base}/download/storage/v1/b/BUCKET/o/OBJECT?alt=media\n\
         \x20 GCS JSON API (Google's clients):  {base}/storage/v1/b[/BUCKET[/o[/OBJECT]]], uploadType=media|multipart|resumable\n\
         \x20     e.g. STORAGE_EMULATOR_HOST={base} for google-cloud-storage (Python)\n\
         \x20 Retry Test API (storage-testbench): POST {base}/retry_test, then x-retry-test-id: ID\n\
         \x20 Compliance jobs (C1-C3):         POST {base}/2/compliance/jobs  (Authorization: Bearer <any>)\n\
         \x20 TON single upload (T1):          POST {base}/1.1/ton/bucket/BUCKET  (Content-Type, Content-Length < 64 MiB)\n\
         \x20 TON resumable start (T2-T6):     POST {base}/1.1/ton/bucket/BUCKET?resumable=true\n\
         \x20     chunks: min {min}, max {max} bytes; 308 Range form: {form}\n\
         \x20 Media v1.1 (M1-M5):              {base}{v1}  (command=INIT|APPEND|FINALIZE, GET command=STATUS)\n\
         \x20 Media v2 (M6):                   POST {base}{v2}/initialize, then {v2}/ID/append, {v2}/ID/finalize\n\
         \x20                                  GET  {base}{v2}?command=STATUS&media_id=ID\n\
         \x20     processing: {categories} take {polls} STATUS polls\n\
         \x20 tus 1.0 (U1-U15):                POST {base}/tus/files/  (OPTIONS for the extensions)\n\
         \x20 Faults: {faults}\n\
         \x20     per request: header x-resumable-fault: FAULTS or query fault=FAULTS;\n\
         \x20     per session: session-faults=SCRIPT on a start URL, or header\n\
         \x20     x-resumable-session-faults: SCRIPT on a start (GCS, TON) or INIT (media)\n",
        xml = gcs::signed_url(
            base,
            "BUCKET",
            "OBJECT",
            Duration::from_secs(7 * 24 * 3600),
            true
        ),
        min = shared.config.ton_min_chunk,
        max = shared.config.ton_max_chunk,
        form = shared.config.ton_range_form,
        v1 = media::V1_PATH,
        v2 = media::V2_PATH,
        categories = if shared.config.media_async_categories.is_empty() {
            "no categories".to_owned()
        } else {
            shared.config.media_async_categories.join(", ")
        },
        polls = shared.config.media_processing_polls,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn session_origin_never_loses_the_port() {
        let listen: SocketAddr = "127.0.0.1:4567".parse().unwrap();
        let base = "http://127.0.0.1:4567";
        let o = |host| origin_for(host, &listen, base);
        // A Host with a port is the name the client used.
        assert_eq!(o(Some("localhost:4567")), "http://localhost:4567");
        assert_eq!(o(Some("[::1]:4567")), "http://[::1]:4567");
        // Without one (google-cloud-rust sends `host: 127.0.0.1`) the listen address wins.
        assert_eq!(o(Some("127.0.0.1")), base);
        assert_eq!(o(Some("localhost")), base);
        // Malformed or absent: the listen address.
        assert_eq!(o(Some("a b:1")), base);
        assert_eq!(o(Some("host:")), base);
        assert_eq!(o(None), base);
        // On port 80 a Host may leave the port out.
        let listen80: SocketAddr = "127.0.0.1:80".parse().unwrap();
        assert_eq!(
            origin_for(Some("storage.test"), &listen80, "http://127.0.0.1:80"),
            "http://storage.test"
        );
    }
}
