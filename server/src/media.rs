//! The server side of Twitter/X chunked media uploads (M1–M6), v1.1 and v2.
//!
//! v1.1 (M1–M5), one endpoint, `/1.1/media/upload.json`:
//! - `POST` with `command=INIT|APPEND|FINALIZE` and the command's fields, taken from the
//!   query string and the body together: a urlencoded form, or `multipart/form-data` (each
//!   command accepts either; the seed's example even puts APPEND's fields in the query).
//!   STATUS is `GET ?command=STATUS&media_id=ID`. Commands are case-sensitive.
//! - INIT (M1): `total_bytes` (1 to [`ServerConfig::max_object_size`] and at most 1000
//!   segments' worth), `media_type`, optional `media_category` and `additional_owners`
//!   (comma-separated decimal ids) → `200` `{"media_id": N, "media_id_string": "N",
//!   "media_key", "expires_after_secs"}`. Ids are above 2^53, so the JSON number is exact
//!   only for clients that read 64-bit integers: `media_id_string` is the one to use.
//! - APPEND (M2): `media_id` (or `media_key`), `segment_index` (0–999) and the segment as
//!   `media` (raw bytes, a multipart part) or `media_data` (base64), at most
//!   [`ServerConfig::media_max_segment`] bytes (default 5,000,000, the core's
//!   [`resumable_core::media::MAX_SEGMENT_SIZE`]) → `204` without a body. Appending an index
//!   again replaces its segment.
//! - FINALIZE (M3): the segments must be `0..n` without a gap and add up to `total_bytes`,
//!   else `400`. Answers the media object with `size`; with `processing_info` when processing
//!   is asynchronous (below). FINALIZE again answers the same without moving processing on
//!   (a client whose answer was lost retries it).
//! - STATUS (M4): the media object with `processing_info`; each poll moves processing on.
//!
//! v2 (M6), below `/2/media/upload`, every answer wrapped in `{"data": …}`:
//! - `POST /2/media/upload/initialize`, a JSON body (`total_bytes`, `media_type`,
//!   `media_category`, `additional_owners` as an array of strings, `shared` as a boolean) →
//!   `{"data":{"id","media_key","expires_after_secs"}}`.
//! - `POST /2/media/upload/{id}/append`, multipart `segment_index` and `media` →
//!   `200 {"data":{"expires_at": EPOCH_SECONDS}}`.
//! - `POST /2/media/upload/{id}/finalize` → `{"data":{"id","media_key","size",
//!   "expires_after_secs","processing_info"?}}`.
//! - `GET /2/media/upload?command=STATUS&media_id=ID`.
//! - `POST /2/media/upload` with v1.1-style `command` fields works too, answered v2-style.
//!
//! Asynchronous processing: FINALIZE answers `processing_info {state: pending,
//! check_after_secs}` when the media's `media_category` is one of
//! [`ServerConfig::media_async_categories`] (default `tweet_video`, `tweet_gif`,
//! `amplify_video`, `dm_video`, `dm_gif`) or a processing fault asks for it (see
//! [`crate::fault`]). Each STATUS poll then answers `in_progress` with a growing
//! `progress_percent`, and poll number [`ServerConfig::media_processing_polls`] (default 3)
//! answers `succeeded` — or, when a fault says so, `failed` with `error {code, name,
//! message}`, or `in_progress` with that `error` (terminal, M4). Later polls repeat the final
//! answer. `check_after_secs` is [`ServerConfig::media_check_after_secs`] (default 1).
//!
//! Errors (M5): v1.1 answers `{"errors":[{"code","message"}]}` — code 38 for a missing
//! parameter, 44 for an invalid one, 324 for segments that do not add up, 88 for a rate limit,
//! 131 for server errors — except for a media id that is unknown or expired, which answers
//! `{"request":"/1.1/media/upload.json","error":…}` (Twitter uses both shapes). v2 answers
//! RFC 7807 problems `{"type","title","detail","status"}`. Media ids expire
//! [`ServerConfig::media_expires_after`] after INIT (default 86400 s): any use afterwards is
//! `400`.
//!
//! A media id created with the header `x-resumable-session-faults: SCRIPT` (or a
//! `session-faults=` query parameter) on INIT carries that fault script (see
//! [`crate::fault`]). Faults are chosen before a body is read, so the server tells a v1.1
//! request's command and media id from the query and the first 4 KiB of a
//! `Content-Length` body (waiting at most 2 s for them); a request it cannot tell (chunked
//! framing, fields past that point) counts as `media.other`, or `media.append` for a
//! multipart body, and meets no session script.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime};

use base64::Engine as _;
use resumable_core::media::{ApiForm, ProcessingState};
use serde_json::{Value, json};

use crate::fault::{FaultScript, FaultState, ProcessingEnd, RequestKind};
use crate::http::{Request, Response};
use crate::multipart::{self, FormError};
use crate::server::{Ctx, Outcome, ServerConfig};
use crate::util;

/// The v1.1 endpoint's path (M1).
pub(crate) const V1_PATH: &str = "/1.1/media/upload.json";
/// The v2 base path (M6).
pub(crate) const V2_PATH: &str = "/2/media/upload";
/// The most segments a media id takes: `segment_index` is 0–999 (M2).
const MAX_SEGMENTS: u64 = 1000;
/// How many bytes of a POST body are looked at to tell its command before routing.
const PEEK: usize = 4096;
/// The largest JSON body of a v2 initialize.
const MAX_JSON: usize = 64 * 1024;
/// The most `additional_owners`.
const MAX_OWNERS: usize = 100;

/// Which API form a request speaks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Api {
    V1,
    V2,
}

/// A media command.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Command {
    Init,
    Append,
    Finalize,
    Status,
}

impl Command {
    /// A `command` value (case-sensitive, M1).
    fn parse(text: &str) -> Option<Self> {
        match text {
            "INIT" => Some(Command::Init),
            "APPEND" => Some(Command::Append),
            "FINALIZE" => Some(Command::Finalize),
            "STATUS" => Some(Command::Status),
            _ => None,
        }
    }

    fn kind(self) -> RequestKind {
        match self {
            Command::Init => RequestKind::MediaInit,
            Command::Append => RequestKind::MediaAppend,
            Command::Finalize => RequestKind::MediaFinalize,
            Command::Status => RequestKind::MediaStatus,
        }
    }
}

/// A media request, as routed before its body is read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct MediaRoute {
    api: Api,
    /// The command the path names (v2 paths), if any.
    fixed: Option<Command>,
    /// The media id the path names (v2 paths), if any.
    path_id: Option<String>,
    /// The command seen in the query or the first bytes of the body.
    seen_command: Option<Command>,
    /// The media id seen in the query or the first bytes of the body.
    seen_id: Option<String>,
}

impl MediaRoute {
    /// The kind of request, for fault selection.
    pub(crate) fn kind(&self) -> RequestKind {
        self.fixed
            .or(self.seen_command)
            .map_or(RequestKind::MediaOther, Command::kind)
    }

    /// The media id concerned, as far as known before the body is read.
    pub(crate) fn media_id(&self) -> Option<&str> {
        self.path_id.as_deref().or(self.seen_id.as_deref())
    }

    /// The API form, for error shapes.
    pub(crate) fn is_v2(&self) -> bool {
        self.api == Api::V2
    }
}

/// How many of a request's first body bytes should be looked at before routing: for a POST
/// to an endpoint whose command is in the body, of a length the handler will read.
pub(crate) fn wants_peek(req: &Request, config: &ServerConfig) -> Option<usize> {
    if req.method != "POST" || (req.path != V1_PATH && req.path != V2_PATH) {
        return None;
    }
    match req.content_length() {
        Some(n) if n > 0 && n <= max_body(config) => {
            Some(usize::try_from(n).unwrap_or(PEEK).min(PEEK))
        }
        _ => None,
    }
}

/// Routes a media path: `None` when it is not one, `Some(None)` when the method is wrong.
pub(crate) fn route(req: &Request, peeked: &[u8]) -> Option<Option<MediaRoute>> {
    let m = req.method.as_str();
    let path = req.path.as_str();
    let fixed = |api, fixed, path_id: Option<&str>| MediaRoute {
        api,
        fixed,
        path_id: path_id.map(str::to_owned),
        seen_command: None,
        seen_id: None,
    };
    if path == V1_PATH || path == V2_PATH {
        let api = if path == V1_PATH { Api::V1 } else { Api::V2 };
        return Some(matches!(m, "GET" | "POST").then(|| seen(api, req, peeked)));
    }
    let rest = path.strip_prefix(V2_PATH)?.strip_prefix('/')?;
    if rest == "initialize" {
        return Some((m == "POST").then(|| fixed(Api::V2, Some(Command::Init), None)));
    }
    let (id, action) = rest.split_once('/')?;
    let command = match action {
        "append" => Command::Append,
        "finalize" => Command::Finalize,
        _ => return None,
    };
    if id.is_empty() {
        return None;
    }
    Some((m == "POST").then(|| fixed(Api::V2, Some(command), Some(id))))
}

/// The command and media id of a request on a command endpoint, from its query and its
/// first body bytes.
fn seen(api: Api, req: &Request, peeked: &[u8]) -> MediaRoute {
    let mut command = req.query_param("command").map(str::to_owned);
    let mut id = req.query_param("media_id").map(str::to_owned);
    let content_type = multipart::essence(req.header("content-type").unwrap_or(""));
    let is_multipart = content_type == "multipart/form-data";
    if is_multipart {
        command = command.or_else(|| multipart::peek_field(peeked, "command"));
        id = id.or_else(|| multipart::peek_field(peeked, "media_id"));
    } else if content_type == "application/x-www-form-urlencoded" {
        let complete = req.content_length() == Some(peeked.len() as u64);
        command = command.or_else(|| multipart::peek_urlencoded(peeked, complete, "command"));
        id = id.or_else(|| multipart::peek_urlencoded(peeked, complete, "media_id"));
    }
    let seen_command = match command {
        Some(c) => Command::parse(&c),
        // A multipart POST without a visible command is an APPEND (the only multipart
        // command with bytes in it).
        None if is_multipart => Some(Command::Append),
        None => None,
    };
    MediaRoute {
        api,
        fixed: None,
        path_id: None,
        seen_command,
        seen_id: id,
    }
}

// ---- state ----

/// Asynchronous processing of a media (M4).
#[derive(Clone, Copy, Debug)]
struct Processing {
    /// STATUS polls answered so far.
    polls: u32,
    /// The poll whose answer is final.
    end_at: u32,
    end: ProcessingEnd,
    check_after: u64,
}

impl Processing {
    fn done(&self) -> bool {
        self.polls >= self.end_at
    }

    fn percent(&self) -> u64 {
        (u64::from(self.polls.min(self.end_at)) * 100)
            .checked_div(u64::from(self.end_at))
            .unwrap_or(100)
    }

    fn state(&self) -> ProcessingState {
        if self.done() {
            match self.end {
                ProcessingEnd::Succeeded => ProcessingState::Succeeded,
                ProcessingEnd::Failed => ProcessingState::Failed,
                ProcessingEnd::ErrorInProgress => ProcessingState::InProgress,
            }
        } else if self.polls == 0 {
            ProcessingState::Pending
        } else {
            ProcessingState::InProgress
        }
    }

    /// The `processing_info` object (M4).
    fn info(&self) -> Value {
        let error = json!({
            "code": 1,
            "name": "InvalidMedia",
            "message": "Unsupported video format",
        });
        match (self.done(), self.end) {
            (true, ProcessingEnd::Succeeded) => json!({
                "state": "succeeded",
                "progress_percent": 100,
            }),
            (true, ProcessingEnd::Failed) => json!({
                "state": "failed",
                "progress_percent": self.percent(),
                "error": error,
            }),
            (true, ProcessingEnd::ErrorInProgress) => json!({
                "state": "in_progress",
                "check_after_secs": self.check_after,
                "progress_percent": self.percent(),
                "error": error,
            }),
            (false, _) if self.polls == 0 => json!({
                "state": "pending",
                "check_after_secs": self.check_after,
            }),
            (false, _) => json!({
                "state": "in_progress",
                "check_after_secs": self.check_after,
                "progress_percent": self.percent(),
            }),
        }
    }
}

/// Inspection of a media id.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct MediaInfo {
    /// The media id (`media_id_string`, v2 `id`).
    pub media_id: String,
    /// The media key.
    pub media_key: String,
    /// Which API form created it.
    pub api: ApiForm,
    /// `total_bytes`.
    pub total_bytes: u64,
    /// `media_type`.
    pub media_type: String,
    /// `media_category`, if given.
    pub media_category: Option<String>,
    /// `additional_owners`.
    pub additional_owners: Vec<String>,
    /// v2 `shared`.
    pub shared: bool,
    /// Distinct segments appended (indexes ever accepted).
    pub segments: u32,
    /// Accepted APPENDs per `segment_index` (more than 1: the segment was sent again).
    pub appends: BTreeMap<u32, u32>,
    /// Whether FINALIZE succeeded.
    pub finalized: bool,
    /// Where processing stands, when it is asynchronous.
    pub processing: Option<ProcessingState>,
    /// STATUS polls answered while processing was unfinished.
    pub status_polls: u32,
    /// Whether the media id has expired.
    pub gone: bool,
    /// Request-body bytes received for it after INIT (multipart framing included).
    pub body_bytes_received: u64,
    /// Requests for it after INIT.
    pub requests: u64,
}

/// A media id.
pub(crate) struct Media {
    pub(crate) id: String,
    key: String,
    api: Api,
    total: u64,
    media_type: String,
    category: Option<String>,
    owners: Vec<String>,
    shared: bool,
    created: Instant,
    created_wall: SystemTime,
    ttl: Duration,
    /// A session fault script.
    pub(crate) script: Option<FaultScript>,
    state: Mutex<MediaState>,
}

/// A media id's mutable part.
pub(crate) struct MediaState {
    segments: BTreeMap<u32, Vec<u8>>,
    appends: BTreeMap<u32, u32>,
    /// The assembled bytes, once finalized.
    data: Option<Arc<Vec<u8>>>,
    processing: Option<Processing>,
    status_polls: u32,
    expired: bool,
    /// When the id expires, once FINALIZE moved it
    /// ([`ServerConfig::media_finalize_expires_after`](crate::ServerConfig)); else INIT's.
    deadline: Option<Instant>,
    pub(crate) body_bytes: u64,
    pub(crate) requests: u64,
    pub(crate) faults: FaultState,
}

impl Media {
    pub(crate) fn lock(&self) -> MutexGuard<'_, MediaState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// When the id expires: `ttl` after INIT, unless FINALIZE moved it.
    fn deadline(&self, st: &MediaState) -> Instant {
        st.deadline.unwrap_or(self.created + self.ttl)
    }

    fn is_gone(&self, st: &MediaState) -> bool {
        st.expired || Instant::now() > self.deadline(st)
    }

    /// Seconds left before the id expires (M5: every answer counts them down).
    fn expires_after_secs(&self, st: &MediaState) -> u64 {
        self.deadline(st)
            .saturating_duration_since(Instant::now())
            .as_secs()
    }

    fn info(&self) -> MediaInfo {
        let st = self.lock();
        MediaInfo {
            media_id: self.id.clone(),
            media_key: self.key.clone(),
            api: match self.api {
                Api::V1 => ApiForm::V1_1,
                Api::V2 => ApiForm::V2,
            },
            total_bytes: self.total,
            media_type: self.media_type.clone(),
            media_category: self.category.clone(),
            additional_owners: self.owners.clone(),
            shared: self.shared,
            segments: u32::try_from(st.appends.len()).unwrap_or(u32::MAX),
            appends: st.appends.clone(),
            finalized: st.data.is_some(),
            processing: st.processing.map(|p| p.state()),
            status_polls: st.status_polls,
            gone: self.is_gone(&st),
            body_bytes_received: st.body_bytes,
            requests: st.requests,
        }
    }

    /// The media object of a FINALIZE (`size`) or STATUS answer (M3, M4, M6).
    fn object(&self, st: &MediaState, api: Api, with_size: bool) -> Value {
        let mut media = serde_json::Map::new();
        match api {
            Api::V1 => {
                // A JSON number above 2^53: exact here, rounded by float-only clients (M1).
                let number = self.id.parse::<u64>().unwrap_or(0);
                media.insert("media_id".into(), number.into());
                media.insert("media_id_string".into(), self.id.clone().into());
            }
            Api::V2 => {
                media.insert("id".into(), self.id.clone().into());
            }
        }
        media.insert("media_key".into(), self.key.clone().into());
        if with_size {
            media.insert("size".into(), self.total.into());
        }
        media.insert(
            "expires_after_secs".into(),
            self.expires_after_secs(st).into(),
        );
        if api == Api::V1 && self.media_type.starts_with("video/") {
            media.insert("video".into(), json!({ "video_type": self.media_type }));
        }
        if let Some(p) = &st.processing {
            media.insert("processing_info".into(), p.info());
        }
        wrap(api, Value::Object(media))
    }
}

/// v2 answers are wrapped in `data` (M6).
fn wrap(api: Api, value: Value) -> Value {
    match api {
        Api::V1 => value,
        Api::V2 => json!({ "data": value }),
    }
}

/// All media state of a server.
#[derive(Default)]
pub(crate) struct MediaStore {
    media: Mutex<HashMap<String, Arc<Media>>>,
    keys: Mutex<HashMap<String, String>>,
}

impl MediaStore {
    fn media(&self) -> MutexGuard<'_, HashMap<String, Arc<Media>>> {
        self.media.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn keys(&self) -> MutexGuard<'_, HashMap<String, String>> {
        self.keys.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A media id (gone ones too: the handlers answer 400 for them).
    pub(crate) fn get(&self, id: &str) -> Option<Arc<Media>> {
        self.media().get(id).cloned()
    }

    fn by_key(&self, key: &str) -> Option<Arc<Media>> {
        let id = self.keys().get(key).cloned()?;
        self.get(&id)
    }

    /// Inspection of a media id.
    pub(crate) fn info(&self, id: &str) -> Option<MediaInfo> {
        self.get(id).map(|m| m.info())
    }

    /// Inspection of every media id.
    pub(crate) fn all(&self) -> Vec<MediaInfo> {
        let media: Vec<Arc<Media>> = self.media().values().cloned().collect();
        media.iter().map(|m| m.info()).collect()
    }

    /// The assembled bytes of a finalized media.
    pub(crate) fn bytes(&self, id: &str) -> Option<Vec<u8>> {
        let media = self.get(id)?;
        let data = media.lock().data.clone()?;
        Some(data.as_ref().clone())
    }

    /// Expires a media id now. Returns whether it existed.
    pub(crate) fn expire(&self, id: &str) -> bool {
        match self.get(id) {
            Some(m) => {
                m.lock().expired = true;
                true
            }
            None => false,
        }
    }

    /// Forgets a media id and its bytes. Returns whether it existed.
    pub(crate) fn remove(&self, id: &str) -> bool {
        let removed = self.media().remove(id);
        if let Some(m) = &removed {
            self.keys().remove(&m.key);
        }
        removed.is_some()
    }

    /// Forgets media ids that expired before being finalized (finalized media stay, like
    /// objects).
    fn purge(&self) {
        let mut gone = Vec::new();
        self.media().retain(|_, m| {
            let st = m.lock();
            let keep = st.data.is_some() || !m.is_gone(&st);
            if !keep {
                gone.push(m.key.clone());
            }
            keep
        });
        let mut keys = self.keys();
        for k in gone {
            keys.remove(&k);
        }
    }
}

// ---- errors ----

/// Twitter's v1.1 error code for a status of an injected or generic error.
fn code_for(status: u16) -> i64 {
    match status {
        429 => 88,
        500..=599 => 131,
        _ => 44,
    }
}

/// A v2 problem (RFC 7807, M5).
fn problem(status: u16, detail: &str) -> Value {
    let (kind, title) = match status {
        400 | 413 => (
            "https://api.twitter.com/2/problems/invalid-request",
            "Invalid Request",
        ),
        404 => (
            "https://api.twitter.com/2/problems/resource-not-found",
            "Not Found Error",
        ),
        429 => ("about:blank", "Too Many Requests"),
        500..=599 => ("about:blank", "Service Unavailable"),
        _ => ("about:blank", "Error"),
    };
    json!({ "type": kind, "title": title, "detail": detail, "status": status })
}

/// An error in the API's shape (M5): v1.1 `errors` with `code`, v2 RFC 7807.
fn error(api: Api, status: u16, code: i64, message: &str) -> Response {
    let body = match api {
        Api::V1 => json!({ "errors": [{ "code": code, "message": message }] }),
        Api::V2 => problem(status, message),
    };
    Response::new(status).json(&body)
}

/// An error answer standing in for a request (the `status` fault), shaped for its API.
pub(crate) fn injected(v2: bool, status: u16, message: &str) -> Response {
    let api = if v2 { Api::V2 } else { Api::V1 };
    error(api, status, code_for(status), message)
}

/// A media id that is unknown or expired: v1.1 answers Twitter's other error shape.
fn bad_media(api: Api, message: &str) -> Response {
    match api {
        Api::V1 => Response::new(400).json(&json!({ "request": V1_PATH, "error": message })),
        Api::V2 => Response::new(400).json(&problem(400, message)),
    }
}

fn missing(api: Api, name: &str) -> Response {
    error(api, 400, 38, &format!("{name} parameter is missing."))
}

fn invalid(api: Api, name: &str, why: &str) -> Response {
    error(api, 400, 44, &format!("{name} parameter is invalid: {why}"))
}

// ---- requests ----

/// The fields of a request: text fields from the query and the body, the `media` bytes, and
/// a v2 JSON body.
#[derive(Default)]
struct Fields {
    text: Vec<(String, String)>,
    media: Option<Vec<u8>>,
    json: Option<Value>,
}

impl Fields {
    fn get(&self, name: &str) -> Option<&str> {
        self.text
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

/// The largest body accepted: a segment base64-encoded in a form, and some room for fields.
fn max_body(config: &ServerConfig) -> u64 {
    (config.media_max_segment.saturating_mul(4) / 3).saturating_add(64 * 1024)
}

/// Reads and parses the body into fields (with the query's).
fn read_fields(ctx: &mut Ctx<'_>, api: Api) -> Result<Fields, Outcome> {
    let cap = max_body(&ctx.shared.config);
    let too_large = || {
        Outcome::Close(error(
            api,
            413,
            code_for(413),
            "the request body is too large",
        ))
    };
    if ctx.req.content_length().is_some_and(|n| n > cap) {
        // Known too large: answered before reading it.
        return Err(too_large());
    }
    let body = match ctx
        .body
        .read_small(usize::try_from(cap).unwrap_or(usize::MAX))
    {
        Ok(b) => b,
        Err(true) => return Err(too_large()),
        Err(false) => return Err(Outcome::Drop),
    };
    let mut fields = Fields {
        text: ctx.req.query.clone(),
        ..Fields::default()
    };
    if body.is_empty() {
        return Ok(fields);
    }
    let content_type = ctx.req.header("content-type").unwrap_or("");
    let bad = |e: FormError| Outcome::Respond(error(api, 400, 44, &e.to_string()));
    match multipart::essence(content_type).as_str() {
        "multipart/form-data" => {
            let boundary = multipart::boundary(content_type).map_err(bad)?;
            for part in multipart::parse(&body, &boundary).map_err(bad)? {
                if part.name == "media" {
                    fields.media = Some(part.data.to_vec());
                    continue;
                }
                match std::str::from_utf8(part.data) {
                    Ok(text) if part.name == "media_data" || text.len() <= 4096 => {
                        fields.text.push((part.name, text.to_owned()));
                    }
                    _ => {
                        return Err(Outcome::Respond(invalid(
                            api,
                            &part.name,
                            "not short UTF-8 text",
                        )));
                    }
                }
            }
        }
        "application/x-www-form-urlencoded" => {
            fields
                .text
                .extend(multipart::urlencoded(&body).map_err(bad)?);
        }
        "application/json" if body.len() <= MAX_JSON => match serde_json::from_slice(&body) {
            Ok(v @ Value::Object(_)) => fields.json = Some(v),
            _ => {
                return Err(Outcome::Respond(error(
                    api,
                    400,
                    44,
                    "the body is not a JSON object",
                )));
            }
        },
        _ => {
            return Err(Outcome::Respond(error(
                api,
                400,
                44,
                "the body must be multipart/form-data, a urlencoded form or (v2 initialize) JSON",
            )));
        }
    }
    Ok(fields)
}

/// Handles a media request (any command, either API).
pub(crate) fn handle(ctx: &mut Ctx<'_>, route: &MediaRoute) -> Outcome {
    let api = route.api;
    let fields = match read_fields(ctx, api) {
        Ok(f) => f,
        Err(outcome) => return outcome,
    };
    let command = match route.fixed {
        Some(c) => c,
        None => match fields.get("command") {
            None => return Outcome::Respond(missing(api, "command")),
            Some(c) => match Command::parse(c) {
                Some(c) => c,
                None => {
                    return Outcome::Respond(invalid(
                        api,
                        "command",
                        "must be INIT, APPEND, FINALIZE or STATUS (case-sensitive)",
                    ));
                }
            },
        },
    };
    let get = ctx.req.method == "GET";
    if get != (command == Command::Status) {
        return Outcome::Respond(error(
            api,
            400,
            44,
            "STATUS is a GET; INIT, APPEND and FINALIZE are POSTs",
        ));
    }
    if command == Command::Init {
        return init(ctx, api, &fields);
    }
    // Every other command names a media id (v2: in the path; v1.1: media_id or media_key).
    let store = &ctx.shared.media;
    let media = match (
        route.path_id.as_deref(),
        fields.get("media_id"),
        fields.get("media_key"),
    ) {
        (Some(id), _, _) | (None, Some(id), _) => store.get(id),
        (None, None, Some(key)) => store.by_key(key),
        (None, None, None) => return Outcome::Respond(missing(api, "media_id")),
    };
    let Some(media) = media else {
        return Outcome::Respond(bad_media(api, "Invalid or expired mediaId."));
    };
    let mut st = media.lock();
    if ctx.faults.expire {
        st.expired = true;
    }
    if media.is_gone(&st) {
        return Outcome::Respond(bad_media(api, "Invalid or expired mediaId."));
    }
    match command {
        Command::Append => append(ctx, api, &media, st, fields),
        Command::Finalize => finalize(ctx, api, &media, st),
        Command::Status | Command::Init => status(ctx, api, &media, st),
    }
}

/// Text that may go in a media's fields: 1 to 255 characters, no control characters.
fn plain_text(text: &str) -> bool {
    !text.trim().is_empty() && text.len() <= 255 && !text.chars().any(char::is_control)
}

/// What INIT asks for.
struct InitFields {
    total: u64,
    media_type: String,
    category: Option<String>,
    owners: Vec<String>,
    shared: bool,
}

/// INIT's fields: v2 `initialize` from its JSON body (M6), else form fields (M1).
fn init_fields(api: Api, fields: &Fields) -> Result<InitFields, Response> {
    let digits = |s: &str| !s.is_empty() && s.len() <= 20 && s.bytes().all(|b| b.is_ascii_digit());
    if let Some(body) = &fields.json {
        let total = match body.get("total_bytes") {
            None => return Err(missing(api, "total_bytes")),
            Some(v) => v
                .as_u64()
                .ok_or_else(|| invalid(api, "total_bytes", "must be a positive integer"))?,
        };
        let media_type = match body.get("media_type") {
            None => return Err(missing(api, "media_type")),
            Some(v) => v
                .as_str()
                .filter(|t| plain_text(t))
                .ok_or_else(|| invalid(api, "media_type", "must be a MIME type"))?
                .to_owned(),
        };
        let category = match body.get("media_category") {
            None | Some(Value::Null) => None,
            Some(v) => Some(
                v.as_str()
                    .filter(|t| plain_text(t))
                    .ok_or_else(|| invalid(api, "media_category", "must be text"))?
                    .to_owned(),
            ),
        };
        let owners = match body.get("additional_owners") {
            None | Some(Value::Null) => Vec::new(),
            Some(Value::Array(items)) if items.len() <= MAX_OWNERS => items
                .iter()
                .map(|i| i.as_str().filter(|s| digits(s)).map(str::to_owned))
                .collect::<Option<Vec<_>>>()
                .ok_or_else(|| {
                    invalid(
                        api,
                        "additional_owners",
                        "must be an array of user id strings",
                    )
                })?,
            Some(_) => {
                return Err(invalid(
                    api,
                    "additional_owners",
                    "must be an array of at most 100 user id strings (M6)",
                ));
            }
        };
        let shared = match body.get("shared") {
            None | Some(Value::Null) => false,
            Some(Value::Bool(b)) => *b,
            Some(_) => return Err(invalid(api, "shared", "must be a boolean (M6)")),
        };
        return Ok(InitFields {
            total,
            media_type,
            category,
            owners,
            shared,
        });
    }
    let total = match fields.get("total_bytes") {
        None => return Err(missing(api, "total_bytes")),
        Some(t) => crate::http::parse_u64(t.trim())
            .ok_or_else(|| invalid(api, "total_bytes", "must be a positive integer"))?,
    };
    let media_type = match fields.get("media_type") {
        None => return Err(missing(api, "media_type")),
        Some(t) if plain_text(t) => t.trim().to_owned(),
        Some(_) => return Err(invalid(api, "media_type", "must be a MIME type")),
    };
    let category = match fields.get("media_category") {
        None => None,
        Some(c) if plain_text(c) => Some(c.trim().to_owned()),
        Some(_) => return Err(invalid(api, "media_category", "must be text")),
    };
    let owners: Vec<String> = match fields.get("additional_owners") {
        None | Some("") => Vec::new(),
        Some(list) => list.split(',').map(|s| s.trim().to_owned()).collect(),
    };
    if owners.len() > MAX_OWNERS || !owners.iter().all(|o| digits(o)) {
        return Err(invalid(
            api,
            "additional_owners",
            "must be at most 100 comma-separated user ids (M1)",
        ));
    }
    Ok(InitFields {
        total,
        media_type,
        category,
        owners,
        shared: false,
    })
}

/// INIT (M1) or v2 initialize (M6).
fn init(ctx: &mut Ctx<'_>, api: Api, fields: &Fields) -> Outcome {
    let cfg = &ctx.shared.config;
    let asked = match init_fields(api, fields) {
        Ok(f) => f,
        Err(r) => return Outcome::Respond(r),
    };
    let most = cfg
        .max_object_size
        .min(cfg.media_max_segment.saturating_mul(MAX_SEGMENTS));
    if asked.total == 0 || asked.total > most {
        return Outcome::Respond(invalid(
            api,
            "total_bytes",
            &format!("must be from 1 to {most} (1000 segments)"),
        ));
    }
    let script = match crate::server::session_script(ctx.req) {
        Ok(s) => s,
        Err(message) => return Outcome::Respond(invalid(api, "session-faults", &message)),
    };
    let store = &ctx.shared.media;
    store.purge();
    let prefix = if asked.media_type.eq_ignore_ascii_case("image/gif") {
        16
    } else if asked.media_type.starts_with("video/") {
        7
    } else {
        3
    };
    let mut media = store.media();
    // Ids in [2^60, 2^63): above 2^53 like Twitter's, so only the string form is safe (M1).
    let mut n = (1u64 << 60) + util::random_u64() % ((1u64 << 63) - (1u64 << 60));
    while media.contains_key(&n.to_string()) {
        n = n.wrapping_add(1).max(1 << 60);
    }
    let id = n.to_string();
    let key = format!("{prefix}_{id}");
    let ttl = cfg.media_expires_after;
    let entry = Arc::new(Media {
        id: id.clone(),
        key: key.clone(),
        api,
        total: asked.total,
        media_type: asked.media_type,
        category: asked.category,
        owners: asked.owners,
        shared: asked.shared,
        created: Instant::now(),
        created_wall: SystemTime::now(),
        ttl,
        script,
        state: Mutex::new(MediaState {
            segments: BTreeMap::new(),
            appends: BTreeMap::new(),
            data: None,
            processing: None,
            status_polls: 0,
            expired: false,
            deadline: None,
            body_bytes: 0,
            requests: 0,
            faults: FaultState::default(),
        }),
    });
    media.insert(id.clone(), entry);
    drop(media);
    store.keys().insert(key.clone(), id.clone());
    ctx.upload_id = Some(id.clone());
    let body = match api {
        Api::V1 => json!({
            "media_id": n,
            "media_id_string": id,
            "media_key": key,
            "expires_after_secs": ttl.as_secs(),
        }),
        Api::V2 => json!({ "data": {
            "id": id,
            "media_key": key,
            "expires_after_secs": ttl.as_secs(),
        }}),
    };
    Outcome::Respond(Response::new(200).json(&body))
}

/// APPEND (M2, M6).
fn append(
    ctx: &mut Ctx<'_>,
    api: Api,
    media: &Media,
    mut st: MutexGuard<'_, MediaState>,
    fields: Fields,
) -> Outcome {
    if st.data.is_some() {
        return Outcome::Respond(error(api, 400, 44, "the media is already finalized"));
    }
    let index = match fields.get("segment_index") {
        None => return Outcome::Respond(missing(api, "segment_index")),
        Some(i) => match crate::http::parse_u64(i.trim()) {
            Some(i) if i < MAX_SEGMENTS => i as u32,
            _ => {
                return Outcome::Respond(invalid(
                    api,
                    "segment_index",
                    "must be an integer from 0 to 999 (M2)",
                ));
            }
        },
    };
    let media_data = fields.get("media_data").map(str::to_owned);
    let mut segment = match (fields.media, media_data) {
        (Some(bytes), None) => bytes,
        (None, Some(b64)) => {
            let clean: String = b64.chars().filter(|c| !c.is_ascii_whitespace()).collect();
            match base64::engine::general_purpose::STANDARD.decode(clean) {
                Ok(bytes) => bytes,
                Err(_) => {
                    return Outcome::Respond(invalid(api, "media_data", "not base64"));
                }
            }
        }
        (Some(_), Some(_)) => {
            return Outcome::Respond(invalid(
                api,
                "media",
                "media and media_data cannot be used together",
            ));
        }
        (None, None) => return Outcome::Respond(missing(api, "media")),
    };
    let max = ctx.shared.config.media_max_segment;
    if segment.len() as u64 > max {
        return Outcome::Respond(invalid(
            api,
            "media",
            &format!(
                "a segment is at most {max} bytes; this one has {} (M2)",
                segment.len()
            ),
        ));
    }
    // The persist fault: keep only a prefix, and say nothing (M2: success is any 2xx).
    if let Some(p) = ctx.faults.persist {
        segment.truncate(usize::try_from(p).unwrap_or(usize::MAX));
    }
    st.segments.insert(index, segment);
    let appends = st.appends.entry(index).or_insert(0);
    *appends = appends.saturating_add(1);
    drop(st);
    match api {
        Api::V1 => Outcome::Respond(Response::new(204)),
        Api::V2 => {
            let expires_at = util::unix_secs(media.created_wall + media.ttl);
            Outcome::Respond(
                Response::new(200).json(&json!({ "data": { "expires_at": expires_at } })),
            )
        }
    }
}

/// FINALIZE (M3, M6).
fn finalize(
    ctx: &mut Ctx<'_>,
    api: Api,
    media: &Media,
    mut st: MutexGuard<'_, MediaState>,
) -> Outcome {
    if st.data.is_some() {
        // Again (the first answer was lost): the same answer, processing not moved on.
        return Outcome::Respond(Response::new(200).json(&media.object(&st, api, true)));
    }
    let count = st.segments.len();
    if let Some(missing) = (0..count as u32).find(|i| !st.segments.contains_key(i)) {
        return Outcome::Respond(error(
            api,
            400,
            324,
            &format!(
                "Segments do not add up to provided total file size: segment {missing} is missing."
            ),
        ));
    }
    let sum: u64 = st.segments.values().map(|s| s.len() as u64).sum();
    if sum != media.total {
        return Outcome::Respond(error(
            api,
            400,
            324,
            &format!(
                "Segments do not add up to provided total file size: {sum} bytes for total_bytes {}.",
                media.total
            ),
        ));
    }
    let mut data = Vec::with_capacity(usize::try_from(sum).unwrap_or(0));
    for segment in std::mem::take(&mut st.segments).into_values() {
        data.extend_from_slice(&segment);
    }
    st.data = Some(Arc::new(data));
    let cfg = &ctx.shared.config;
    if let Some(after) = cfg.media_finalize_expires_after {
        st.deadline = Instant::now().checked_add(after);
    }
    let by_category = media
        .category
        .as_ref()
        .is_some_and(|c| cfg.media_async_categories.iter().any(|a| a == c));
    let planned = cfg.media_processing_polls;
    let plan = match ctx.faults.processing {
        Some(f) if f.end == ProcessingEnd::Succeeded && f.polls == Some(0) => None,
        Some(f) => Some((f.end, f.polls.unwrap_or(planned))),
        None if by_category => Some((ProcessingEnd::Succeeded, planned)),
        None => None,
    };
    st.processing = plan.map(|(end, end_at)| Processing {
        polls: 0,
        end_at,
        end,
        check_after: cfg.media_check_after_secs,
    });
    Outcome::Respond(Response::new(200).json(&media.object(&st, api, true)))
}

/// STATUS (M4, M6): each poll moves unfinished processing on.
fn status(
    ctx: &mut Ctx<'_>,
    api: Api,
    media: &Media,
    mut st: MutexGuard<'_, MediaState>,
) -> Outcome {
    if st.data.is_none() {
        return Outcome::Respond(error(
            api,
            400,
            44,
            "the media is not finalized: STATUS follows FINALIZE (M4)",
        ));
    }
    let fault = ctx.faults.processing;
    let mut polled = false;
    if let Some(p) = &mut st.processing
        && !p.done()
    {
        p.polls = p.polls.saturating_add(1);
        polled = true;
        if let Some(f) = fault {
            p.end = f.end;
            if let Some(k) = f.polls {
                p.end_at = p.polls.saturating_add(k);
            }
        }
    }
    if polled {
        st.status_polls = st.status_polls.saturating_add(1);
    }
    Outcome::Respond(Response::new(200).json(&media.object(&st, api, false)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn processing(end_at: u32, end: ProcessingEnd) -> Processing {
        Processing {
            polls: 0,
            end_at,
            end,
            check_after: 2,
        }
    }

    #[test]
    fn processing_moves_from_pending_to_its_end_m4() {
        let mut p = processing(2, ProcessingEnd::Succeeded);
        assert_eq!(p.state(), ProcessingState::Pending);
        assert_eq!(p.info(), json!({"state": "pending", "check_after_secs": 2}));
        p.polls = 1;
        assert_eq!(p.state(), ProcessingState::InProgress);
        assert_eq!(p.info()["progress_percent"], 50);
        p.polls = 2;
        assert_eq!(p.state(), ProcessingState::Succeeded);
        assert_eq!(
            p.info(),
            json!({"state": "succeeded", "progress_percent": 100})
        );

        let mut p = processing(1, ProcessingEnd::Failed);
        p.polls = 1;
        assert_eq!(p.state(), ProcessingState::Failed);
        assert_eq!(p.info()["error"]["name"], "InvalidMedia");

        let p = processing(0, ProcessingEnd::ErrorInProgress);
        assert_eq!(p.state(), ProcessingState::InProgress);
        assert_eq!(p.info()["state"], "in_progress");
        assert_eq!(p.info()["error"]["code"], 1);
    }

    #[test]
    fn commands_are_case_sensitive_m1() {
        assert_eq!(Command::parse("APPEND"), Some(Command::Append));
        assert_eq!(Command::parse("append"), None);
        assert_eq!(code_for(429), 88);
        assert_eq!(problem(404, "x")["status"], 404);
    }
}
