//! `MediaServer`: a simulated Twitter/X `media/upload` server (rules M1–M6 in `docs/protocols`),
//! v1.1 or v2, for the deterministic simulation: in-process, seeded, and on the driver's clock
//! (the server's wall clock is [`WALL_START`] plus the time since its first request).
//!
//! Per request it draws a fate from its [`MediaKnobs`] (per-mille rates): refuse in one of the
//! M5 error shapes, lose the request before or after processing it, answer a retryable status
//! (429 with `x-rate-limit-reset`, others with or without `Retry-After`), or process it. An
//! APPEND that fails may or may not have stored its segment. FINALIZE starts processing (M4),
//! which STATUS walks through `in_progress` steps to `succeeded`, `failed` or an `error`. Media
//! ids expire `expires_after_secs` after INIT (M5); later requests are refused. One lie
//! ([`MediaLie`]) may be armed, told once where the client can detect it; answers the client
//! parses (INIT, FINALIZE, STATUS) may come back garbled.
//!
//! The server also checks the client: multipart framing and fields (M2), a FINALIZE with
//! segments missing (M3), STATUS before FINALIZE (M4), a missing credential, a wrong
//! `Content-Length`; breaches go to [`MediaServer::violations`].

use std::collections::BTreeMap;
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};
use resumable_core::{IntegrityError, ProtocolViolation, TransportFailure};
use serde_json::{Value, json};

use super::exchange::{Event, Exchange, Must};
use super::{RETRYABLE, SimRng};

/// The simulated v1.1 endpoint (M1).
pub const V1_ENDPOINT: &str = "https://upload.sim/1.1/media/upload.json";
/// The simulated v2 base (M6).
pub const V2_BASE: &str = "https://api.sim/2/media/upload";
/// The server's wall clock at its first request, in seconds since the Unix epoch.
pub const WALL_START: u64 = 1_700_000_000;

/// How processing goes after FINALIZE (M4).
#[derive(Clone, Debug)]
pub struct Processing {
    /// `check_after_secs` of each `pending`/`in_progress` answer, in order.
    pub steps: Vec<u64>,
    /// How it ends.
    pub end: ProcessingEnd,
}

/// The last processing answer (M4).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProcessingEnd {
    /// `state: succeeded`.
    Succeeded,
    /// `state: failed`.
    Failed,
    /// An `error` object while the state still says `in_progress`: terminal all the same.
    ErrorInProgress,
}

/// How the server behaves (per-mille rates, tried in this order: refuse, drop before, drop
/// after, retryable status; the rest are answered truthfully).
#[derive(Clone, Debug)]
pub struct MediaKnobs {
    /// A final refusal in one of the M5 shapes.
    pub refuse: u16,
    /// The request is lost before it reaches the server.
    pub drop_before: u16,
    /// The response is lost after the server processed the request.
    pub drop_after: u16,
    /// A retryable status (408, 429, 5xx).
    pub status: u16,
    /// A failed APPEND (drop after, retryable status) did not store its segment.
    pub unstored: u16,
    /// A retryable status carries `Retry-After` (429: `x-rate-limit-reset`).
    pub retry_after: u16,
    /// The longest wait asked for, in seconds.
    pub max_retry_after_secs: u64,
    /// A 2xx that the client parses comes back as garbage.
    pub garble: u16,
    /// `expires_after_secs` of INIT's answer.
    pub expires_after_secs: u64,
    /// What FINALIZE starts; `None`: the media is ready at once (M3).
    pub processing: Option<Processing>,
}

/// A lie the server tells once, where the client can detect it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MediaLie {
    /// INIT answers 2xx without a media id (M1).
    InitWithoutId,
    /// INIT answers a media id that cannot go in a URL.
    BadMediaId,
    /// FINALIZE or STATUS names another media id.
    OtherMediaId,
    /// FINALIZE reports a size that is not the file's (M3).
    WrongSize,
    /// `processing_info` is not an object (M4).
    ProcessingNotObject,
    /// STATUS answers without `processing_info` (M4).
    StatusWithoutInfo,
}

/// Every lie, to pick from.
pub const MEDIA_LIES: [MediaLie; 6] = [
    MediaLie::InitWithoutId,
    MediaLie::BadMediaId,
    MediaLie::OtherMediaId,
    MediaLie::WrongSize,
    MediaLie::ProcessingNotObject,
    MediaLie::StatusWithoutInfo,
];

/// One media id on the server.
#[derive(Clone, Debug)]
pub struct MediaEntry {
    /// The media id.
    pub id: String,
    /// `total_bytes` from INIT.
    pub total: u64,
    /// Segments received, by `segment_index`.
    pub segments: BTreeMap<u32, Vec<u8>>,
    /// FINALIZE was processed.
    pub finalized: bool,
    /// STATUS answers given (the position in the processing steps).
    pub status_step: usize,
    /// When the id expires, in wall-clock seconds.
    pub expires_at: u64,
    /// Processing ended `succeeded` (or there was none).
    pub ready: bool,
}

#[derive(Clone, Copy, Debug)]
enum Fate {
    Answer,
    Status {
        status: u16,
        stored: bool,
        wait: Option<u64>,
    },
    DropBefore(TransportFailure),
    DropAfter(TransportFailure, bool),
    Refuse,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Command {
    Init,
    Append,
    Finalize,
    Status,
}

/// The simulated media server. See the module docs.
#[derive(Debug)]
pub struct MediaServer {
    v2: bool,
    knobs: MediaKnobs,
    rng: SimRng,
    lie: Option<MediaLie>,
    lie_skip: u32,
    t0: Option<Instant>,
    media: Vec<MediaEntry>,
    violations: Vec<String>,
    requests: u64,
}

impl MediaServer {
    /// A v1.1 (or v2) server whose fates come from a generator seeded with `seed`.
    pub fn new(v2: bool, seed: u64, knobs: MediaKnobs) -> Self {
        MediaServer {
            v2,
            knobs,
            rng: SimRng::new(seed),
            lie: None,
            lie_skip: 0,
            t0: None,
            media: Vec::new(),
            violations: Vec::new(),
            requests: 0,
        }
    }

    /// Tells `lie` once, at its `skip + 1`-th applicable chance.
    pub fn with_lie(mut self, lie: MediaLie, skip: u32) -> Self {
        self.lie = Some(lie);
        self.lie_skip = skip;
        self
    }

    /// Client breaches of M1–M6 seen so far.
    pub fn violations(&self) -> &[String] {
        &self.violations
    }

    /// The media id `id`.
    pub fn entry(&self, id: &str) -> Option<&MediaEntry> {
        self.media.iter().find(|m| m.id == id)
    }

    /// Bytes of the segments `0..k` the server holds for `id` without a gap.
    pub fn held(&self, id: &str) -> u64 {
        self.entry(id).map_or(0, |m| {
            (0..)
                .map_while(|i| m.segments.get(&i))
                .map(|s| s.len() as u64)
                .sum()
        })
    }

    /// Bytes of segments the server holds for `id` from segment `from` on (what a client
    /// resumed at `from` sends again although the server has it).
    pub fn held_from(&self, id: &str, from: u32) -> u64 {
        self.entry(id).map_or(0, |m| {
            m.segments.range(from..).map(|(_, s)| s.len() as u64).sum()
        })
    }

    /// The file the server assembled for `id`: segments `0..n` in order, once finalized.
    pub fn assembled(&self, id: &str) -> Option<Vec<u8>> {
        let m = self.entry(id)?;
        m.finalized.then(|| {
            let mut file = Vec::with_capacity(m.total as usize);
            for segment in m.segments.values() {
                file.extend_from_slice(segment);
            }
            file
        })
    }

    /// Handles one request whose body is `body`, arriving at `now`.
    pub fn handle(&mut self, now: Instant, request: &Request<()>, body: &[u8]) -> Exchange {
        self.t0.get_or_insert(now);
        self.requests += 1;
        let headers = request.headers();
        if !headers.contains_key("authorization") {
            self.violation("a request without the configured Authorization");
        }
        if *request.method() == Method::POST
            && headers
                .get("content-length")
                .and_then(|v| v.to_str().ok()?.parse::<u64>().ok())
                != Some(body.len() as u64)
        {
            self.violation("Content-Length is missing or differs from the body");
        }
        let Some((command, path_id)) = self.route(request, body) else {
            self.violation("a request the media API does not know");
            return self.refusal(400);
        };
        match command {
            Command::Init => self.init(now, body),
            Command::Append => self.append(now, request, body, path_id),
            Command::Finalize | Command::Status => {
                let id = match command {
                    Command::Status => request
                        .uri()
                        .query()
                        .and_then(|q| form_value(q.as_bytes(), "media_id")),
                    _ if self.v2 => path_id,
                    _ => form_value(body, "media_id"),
                };
                self.processing(now, command, id)
            }
        }
    }

    /// Which command a request is, and the media id in its path (v2).
    fn route(&self, request: &Request<()>, body: &[u8]) -> Option<(Command, Option<String>)> {
        let uri = request.uri();
        let base = if self.v2 { V2_BASE } else { V1_ENDPOINT };
        let base: http::Uri = base.parse().ok()?;
        if uri.authority() != base.authority() {
            return None;
        }
        let query = uri.query().unwrap_or("");
        if *request.method() == Method::GET {
            let status = uri.path() == base.path()
                && form_value(query.as_bytes(), "command").as_deref() == Some("STATUS");
            return status.then_some((Command::Status, None));
        }
        if *request.method() != Method::POST {
            return None;
        }
        if !self.v2 {
            if uri.path() != base.path() {
                return None;
            }
            if body.starts_with(b"--") {
                return Some((Command::Append, None));
            }
            return match form_value(body, "command")?.as_str() {
                "INIT" => Some((Command::Init, None)),
                "FINALIZE" => Some((Command::Finalize, None)),
                _ => None,
            };
        }
        let rest = uri.path().strip_prefix(base.path())?;
        if rest == "/initialize" {
            return Some((Command::Init, None));
        }
        let (id, action) = rest.strip_prefix('/')?.split_once('/')?;
        match action {
            "append" => Some((Command::Append, Some(id.to_owned()))),
            "finalize" => Some((Command::Finalize, Some(id.to_owned()))),
            _ => None,
        }
    }

    // ---- commands ----

    fn init(&mut self, now: Instant, body: &[u8]) -> Exchange {
        let total = if self.v2 {
            serde_json::from_slice::<Value>(body)
                .ok()
                .and_then(|v| v.get("total_bytes")?.as_u64())
        } else {
            form_value(body, "total_bytes").and_then(|t| t.parse().ok())
        };
        let Some(total) = total else {
            self.violation("INIT without total_bytes (M1, M6)");
            return self.refusal(400);
        };
        let fate = self.next_fate(false);
        match fate {
            Fate::Refuse => self.refusal(400),
            Fate::DropBefore(f) => Exchange::new(Err(f), Event::Transport),
            Fate::Status { status, wait, .. } => self.retryable(now, status, wait),
            Fate::DropAfter(f, _) => {
                self.create(now, total);
                Exchange::new(Err(f), Event::Transport)
            }
            Fate::Answer => {
                let i = self.create(now, total);
                let (id, expires) = (self.media[i].id.clone(), self.knobs.expires_after_secs);
                let lie =
                    self.lie_now(|l| matches!(l, MediaLie::InitWithoutId | MediaLie::BadMediaId));
                let mut media = json!({
                    "media_id_string": id,
                    "id": id,
                    "media_key": format!("7_{id}"),
                    "expires_after_secs": expires,
                });
                if !self.v2 {
                    media["media_id"] = json!(id.parse::<u64>().unwrap_or(0));
                }
                match lie {
                    Some(MediaLie::InitWithoutId) => {
                        media = json!({"media_key": "7_0", "expires_after_secs": expires})
                    }
                    Some(_) => {
                        media["media_id_string"] = json!("a/b");
                        media["id"] = json!("a/b");
                        media["media_id"] = json!(1.5);
                    }
                    None => {}
                }
                let event = if lie.is_some() {
                    Event::Lie(Must::protocol())
                } else {
                    Event::Answered
                };
                let date = self.date(now);
                self.ok(200, media, event, &[("date", date)])
            }
        }
    }

    fn append(
        &mut self,
        now: Instant,
        request: &Request<()>,
        body: &[u8],
        path_id: Option<String>,
    ) -> Exchange {
        let parts = match multipart(request, body) {
            Ok(parts) => parts,
            Err(why) => {
                self.violation(&format!("APPEND body: {why} (M2)"));
                return self.refusal(400);
            }
        };
        let field = |name: &str| {
            parts
                .iter()
                .find(|(n, _)| n == name)
                .map(|(_, v)| String::from_utf8_lossy(v).into_owned())
        };
        let id = if self.v2 {
            path_id
        } else {
            if field("command").as_deref() != Some("APPEND") {
                self.violation("APPEND without command=APPEND (M2)");
            }
            field("media_id")
        };
        let index = field("segment_index").and_then(|s| s.parse::<u32>().ok());
        let media = parts.iter().find(|(n, _)| n == "media").map(|(_, v)| v);
        let (Some(index), Some(media)) = (index.filter(|&i| i < 1000), media) else {
            self.violation("APPEND without a segment_index in 0..=999 or media (M2)");
            return self.refusal(400);
        };
        if media.len() > 5_000_000 || media.is_empty() {
            self.violation("a segment that is empty or over 5 MB (M2)");
        }
        let media = media.clone();
        let Some(i) = id.and_then(|id| self.media.iter().position(|m| m.id == id)) else {
            self.violation("APPEND for a media id the server never gave");
            return self.refusal(400);
        };
        if self.wall(now) >= self.media[i].expires_at {
            return self.expired();
        }
        let len = media.len() as u64;
        let fate = self.next_fate(true);
        let stored = match fate {
            Fate::Refuse => return self.refusal(400),
            Fate::DropBefore(f) => return Exchange::new(Err(f), Event::Transport),
            Fate::Answer => true,
            Fate::DropAfter(_, stored) | Fate::Status { stored, .. } => stored,
        };
        let (mut new, mut dup) = (0, 0);
        if stored {
            let m = &mut self.media[i];
            match m.segments.insert(index, media.clone()) {
                Some(old) => {
                    dup = len;
                    if old != media {
                        self.violation("a segment re-sent with other bytes (M2)");
                    }
                }
                None => new = len,
            }
        }
        let mut exchange = match fate {
            Fate::DropAfter(f, _) => Exchange::new(Err(f), Event::Transport),
            Fate::Status { status, wait, .. } => self.retryable(now, status, wait),
            _ => {
                // M2: any 2xx, often empty; the client must not parse it, so it may be anything.
                let mut response = Response::builder().status(self.rng.pick(&[200, 202, 204]));
                let body = if self.rng.chance(self.knobs.garble) {
                    Bytes::from_static(b"\x00\xffnot json")
                } else if self.v2 {
                    response = response.header("content-type", "application/json");
                    Bytes::from(format!(
                        r#"{{"data":{{"expires_at":{}}}}}"#,
                        self.media[i].expires_at
                    ))
                } else {
                    Bytes::new()
                };
                Exchange::new(Ok(response.body(body).expect("valid")), Event::Answered)
            }
        };
        exchange.new = new;
        exchange.dup = dup;
        exchange
    }

    fn processing(&mut self, now: Instant, command: Command, id: Option<String>) -> Exchange {
        let Some(i) = id.and_then(|id| self.media.iter().position(|m| m.id == id)) else {
            self.violation("FINALIZE/STATUS for a media id the server never gave");
            return self.refusal(400);
        };
        if self.wall(now) >= self.media[i].expires_at {
            return self.expired();
        }
        let fate = self.next_fate(false);
        match fate {
            Fate::Refuse => return self.refusal(400),
            Fate::DropBefore(f) => return Exchange::new(Err(f), Event::Transport),
            Fate::Status { status, wait, .. } => return self.retryable(now, status, wait),
            // Processed; a lost response is decided below.
            Fate::Answer | Fate::DropAfter(..) => {}
        }
        let m = &self.media[i];
        let total = m.total;
        let held: u64 = m.segments.values().map(|s| s.len() as u64).sum();
        let contiguous = m.segments.keys().copied().eq(0..m.segments.len() as u32);
        if command == Command::Finalize && (!contiguous || held != total) {
            self.violation("FINALIZE with segments missing (M3)");
            return self.refusal(400);
        }
        if command == Command::Status && !m.finalized {
            self.violation("STATUS before FINALIZE (M4)");
            return self.refusal(400);
        }
        let id = m.id.clone();
        // What processing says now: FINALIZE starts it, each STATUS moves it one step.
        let steps = self.knobs.processing.clone();
        let step = if command == Command::Status {
            self.media[i].status_step += 1;
            self.media[i].status_step
        } else {
            0
        };
        self.media[i].finalized = true;
        let mut media = json!({"media_id_string": id, "id": id, "media_key": format!("7_{id}")});
        if command == Command::Finalize {
            media["size"] = json!(total);
            media["expires_after_secs"] = json!(self.knobs.expires_after_secs);
        }
        let mut event = Event::Answered;
        match &steps {
            None => self.media[i].ready = true,
            Some(p) if step < p.steps.len() => {
                let at = step;
                let state = if step == 0 { "pending" } else { "in_progress" };
                media["processing_info"] = json!({
                    "state": state,
                    "check_after_secs": p.steps[at],
                    "progress_percent": 10 * step,
                });
                event = Event::Processing;
            }
            Some(p) => match p.end {
                ProcessingEnd::Succeeded => {
                    self.media[i].ready = true;
                    media["processing_info"] =
                        json!({"state": "succeeded", "progress_percent": 100});
                }
                ProcessingEnd::Failed => {
                    media["processing_info"] = json!({"state": "failed"});
                    event = Event::ProcessingFailed;
                }
                ProcessingEnd::ErrorInProgress => {
                    media["processing_info"] = json!({
                        "state": "in_progress",
                        "error": {"code": 1, "name": "InvalidMedia", "message": "Unsupported media"},
                    });
                    event = Event::ProcessingFailed;
                }
            },
        }
        if let Fate::DropAfter(f, _) = fate {
            return Exchange::new(Err(f), Event::Transport);
        }
        let lie = self.lie_now(|l| match l {
            MediaLie::OtherMediaId | MediaLie::ProcessingNotObject => true,
            MediaLie::WrongSize => command == Command::Finalize,
            MediaLie::StatusWithoutInfo => command == Command::Status,
            _ => false,
        });
        if let Some(lie) = lie {
            let must = match lie {
                MediaLie::OtherMediaId => {
                    media["media_id_string"] = json!("999");
                    media["id"] = json!("999");
                    Must::protocol()
                }
                MediaLie::WrongSize => {
                    media["size"] = json!(total + 1);
                    Must::Be(
                        IntegrityError::Size {
                            stored: total + 1,
                            sent: total,
                        }
                        .into(),
                    )
                }
                MediaLie::ProcessingNotObject => {
                    media["processing_info"] = json!(3);
                    Must::protocol()
                }
                _ => {
                    if let Some(o) = media.as_object_mut() {
                        o.remove("processing_info");
                    }
                    Must::Be(
                        ProtocolViolation::MalformedResponse(
                            "STATUS answered without processing_info (M4)",
                        )
                        .into(),
                    )
                }
            };
            event = Event::Lie(must);
        } else if self.rng.chance(self.knobs.garble) {
            let response = Response::builder()
                .status(200)
                .body(Bytes::from_static(br#"{"media_id_string":"1","#))
                .expect("valid");
            return Exchange::new(Ok(response), Event::Garbled);
        }
        self.ok(200, media, event, &[])
    }

    // ---- state ----

    fn create(&mut self, now: Instant, total: u64) -> usize {
        let n = self.media.len();
        let expires_at = self.wall(now) + self.knobs.expires_after_secs;
        self.media.push(MediaEntry {
            id: (1_880_028_106_020_515_840u64 + n as u64).to_string(),
            total,
            segments: BTreeMap::new(),
            finalized: false,
            status_step: 0,
            expires_at,
            ready: false,
        });
        n
    }

    fn wall(&self, now: Instant) -> u64 {
        let since = self
            .t0
            .map_or(Duration::ZERO, |t0| now.saturating_duration_since(t0));
        WALL_START + since.as_secs()
    }

    fn date(&self, now: Instant) -> String {
        httpdate::fmt_http_date(SystemTime::UNIX_EPOCH + Duration::from_secs(self.wall(now)))
    }

    // ---- fates, lies, answers ----

    fn next_fate(&mut self, append: bool) -> Fate {
        let k = self.knobs.clone();
        let rng = &mut self.rng;
        if rng.chance(k.refuse) {
            return Fate::Refuse;
        }
        if rng.chance(k.drop_before) {
            return Fate::DropBefore(rng.pick(&[
                TransportFailure::Connect,
                TransportFailure::Reset,
                TransportFailure::Timeout,
                TransportFailure::Other,
            ]));
        }
        let stored = !(append && rng.chance(k.unstored));
        if rng.chance(k.drop_after) {
            let f = rng.pick(&[
                TransportFailure::Reset,
                TransportFailure::Timeout,
                TransportFailure::TruncatedResponse,
            ]);
            return Fate::DropAfter(f, stored);
        }
        if rng.chance(k.status) {
            let status = rng.pick(&RETRYABLE);
            let wait = rng
                .chance(k.retry_after)
                .then(|| rng.below(k.max_retry_after_secs + 1));
            return Fate::Status {
                status,
                stored,
                wait,
            };
        }
        Fate::Answer
    }

    fn lie_now(&mut self, applicable: impl Fn(MediaLie) -> bool) -> Option<MediaLie> {
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

    fn ok(
        &mut self,
        status: u16,
        media: Value,
        event: Event,
        headers: &[(&str, String)],
    ) -> Exchange {
        let body = if self.v2 {
            json!({ "data": media })
        } else {
            media
        };
        let mut response = Response::builder()
            .status(status)
            .header("content-type", "application/json");
        for (name, value) in headers {
            response = response.header(*name, value);
        }
        let response = response.body(Bytes::from(body.to_string())).expect("valid");
        Exchange::new(Ok(response), event)
    }

    /// A retryable status; 429 names the rate-limit reset, others may carry `Retry-After` (M5).
    fn retryable(&mut self, now: Instant, status: u16, wait: Option<u64>) -> Exchange {
        let mut response = Response::builder().status(status);
        if let Some(secs) = wait {
            if status == 429 {
                response = response
                    .header("date", self.date(now))
                    .header("x-rate-limit-reset", (self.wall(now) + secs).to_string());
            } else {
                response = response.header("retry-after", secs.to_string());
            }
        }
        let body = if self.v2 {
            r#"{"title":"Service Unavailable","detail":"try later","type":"about:blank"}"#
        } else {
            r#"{"errors":[{"code":131,"message":"Internal error"}]}"#
        };
        let response = response
            .body(Bytes::from_static(body.as_bytes()))
            .expect("valid");
        Exchange::new(Ok(response), Event::Retryable)
    }

    /// A final refusal in one of the M5 shapes (or a proxy's page).
    fn refusal(&mut self, status: u16) -> Exchange {
        let body: &'static [u8] = match self.rng.below(4) {
            0 => br#"{"errors":[{"code":324,"message":"Invalid media"}]}"#,
            1 => br#"{"request":"/1.1/media/upload.json","error":"Segments do not add up"}"#,
            2 => br#"{"type":"https://api.x.com/2/problems/invalid-request","title":"Invalid Request","detail":"bad media","status":400}"#,
            _ => b"<html><body>Bad Request</body></html>",
        };
        let response = Response::builder()
            .status(StatusCode::from_u16(status).expect("valid"))
            .body(Bytes::from_static(body))
            .expect("valid");
        Exchange::new(Ok(response), Event::Refused)
    }

    fn expired(&mut self) -> Exchange {
        let mut exchange = self.refusal(400);
        exchange.event = Event::Expired;
        exchange
    }

    fn violation(&mut self, what: &str) {
        self.violations
            .push(format!("request {}: {what}", self.requests));
    }
}

/// The value of `name` in a form (`a=1&b=2`), percent-decoded.
fn form_value(form: &[u8], name: &str) -> Option<String> {
    let text = std::str::from_utf8(form).ok()?;
    text.split('&').find_map(|pair| {
        let (n, v) = pair.split_once('=')?;
        (n == name).then(|| percent_decode(v))
    })
}

fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |b: u8| char::from(b).to_digit(16);
        match (
            bytes[i],
            bytes.get(i + 1).copied().and_then(hex),
            bytes.get(i + 2).copied().and_then(hex),
        ) {
            (b'%', Some(h), Some(l)) => {
                out.push((h * 16 + l) as u8);
                i += 3;
            }
            (b'+', _, _) => {
                out.push(b' ');
                i += 1;
            }
            (b, _, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The parts of a `multipart/form-data` body, `(name, content)`, in order (M2). The `media`
/// part must be the last one and end right before the closing delimiter.
fn multipart(request: &Request<()>, body: &[u8]) -> Result<Vec<(String, Vec<u8>)>, &'static str> {
    let content_type = request
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .ok_or("no Content-Type")?;
    let boundary = content_type
        .strip_prefix("multipart/form-data; boundary=")
        .ok_or("not multipart/form-data")?;
    let delimiter = format!("--{boundary}\r\n");
    let next = format!("\r\n--{boundary}");
    let closing = format!("\r\n--{boundary}--\r\n");
    let mut rest = body
        .strip_prefix(delimiter.as_bytes())
        .ok_or("no opening delimiter")?;
    let mut parts = Vec::new();
    loop {
        let end = find(rest, b"\r\n\r\n").ok_or("a part without a blank line")?;
        let head = std::str::from_utf8(&rest[..end]).map_err(|_| "a part header is not text")?;
        let name = head
            .split("name=\"")
            .nth(1)
            .and_then(|s| s.split('"').next())
            .ok_or("a part without a name")?
            .to_owned();
        let content = &rest[end + 4..];
        if name == "media" {
            let media = content
                .strip_suffix(closing.as_bytes())
                .ok_or("media is not the last part")?;
            parts.push((name, media.to_vec()));
            return Ok(parts);
        }
        let stop = find(content, next.as_bytes()).ok_or("a part that does not end")?;
        parts.push((name, content[..stop].to_vec()));
        rest = content[stop + next.len()..]
            .strip_prefix(b"\r\n")
            .ok_or("a part that is not followed by another")?;
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}
