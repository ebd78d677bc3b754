//! `TonServer`: a simulated Twitter TON resumable-upload server (rules T1–T6 in `docs/protocols`)
//! for the deterministic simulation: in-process, seeded, and on the driver's clock (the `now`
//! each request is handed in with; the server's wall clock is [`WALL_START`] plus the time
//! since the first request).
//!
//! Per request it draws a fate from its [`TonKnobs`] (per-mille rates): refuse, say the upload
//! is gone, lose the request before or after processing it, answer a retryable status (with or
//! without `Retry-After`), or process it; a processed chunk keeps all, none or a prefix of its
//! bytes rounded down to whole minimum chunks (T5). A `308` writes `Range` in either form TON
//! uses (`0-N` or `bytes=0-N`) and with either meaning of N (the last byte held, or the count),
//! so a client must read it as T5 says. Uploads expire at their `Expires` (T3): later requests
//! get 404/410. One lie ([`TonLie`]) may be armed; it is told once, only where the client can
//! detect it, and the exchange says which error it must cause.
//!
//! The server also checks the client: a gap, a chunk outside the limits (T4), a credential on a
//! chunk, a wrong `Content-Length` or `Content-Range` are recorded in
//! [`TonServer::violations`].

use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use http::{HeaderMap, Method, Request, Response, StatusCode, Uri};
use resumable_core::{Error, ProtocolViolation, TransportFailure};

use super::exchange::{Event, Exchange, Must};
use super::{RETRYABLE, SimRng};

/// Scheme and authority of the simulated TON host.
pub const TON_ORIGIN: &str = "https://ton.sim";
/// The bucket URL uploads start at (T2).
pub const TON_BUCKET: &str = "https://ton.sim/1.1/ton/bucket/sim";
const BUCKET_PATH: &str = "/1.1/ton/bucket/sim";
const CHUNK_LIMIT: u64 = 64 << 20;
/// The server's wall clock at its first request, in seconds since the Unix epoch (Nov 2014).
pub const WALL_START: u64 = 1_415_000_000;

/// How the server behaves, as per-mille rates tried in this order: refuse, gone, drop before,
/// drop after, retryable status; the rest are answered truthfully.
#[derive(Clone, Copy, Debug)]
pub struct TonKnobs {
    /// A final 400/403.
    pub refuse: u16,
    /// 404/410 on an upload: it is deleted.
    pub gone: u16,
    /// The request is lost before it reaches the server.
    pub drop_before: u16,
    /// The response is lost after the server processed the request.
    pub drop_after: u16,
    /// A retryable status (408, 429, 5xx).
    pub status: u16,
    /// A retryable status carries `Retry-After`.
    pub retry_after: u16,
    /// The longest `Retry-After`, in seconds.
    pub max_retry_after_secs: u64,
    /// A processed chunk keeps only a prefix (whole minimum chunks).
    pub partial: u16,
    /// `X-TON-Min-Chunk-Size` (T3).
    pub min_chunk: u64,
    /// `X-TON-Max-Chunk-Size` (T3).
    pub max_chunk: u64,
    /// Seconds from the start response to the upload's `Expires` (T3).
    pub expires_after_secs: u64,
    /// A 404/410 for an expired upload carries `Date` (without it, a client that restarted
    /// cannot tell expiry from deletion).
    pub date_on_gone: bool,
    /// The start response's `Location` names an upload that does not exist.
    pub wrong_location: u16,
}

/// A lie the server tells once, where the client can detect it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TonLie {
    /// T3: no `X-TON-Min-Chunk-Size`.
    NoMinChunk,
    /// T3: a minimum of 0.
    ZeroMinChunk,
    /// T3: the minimum exceeds the maximum.
    MinAboveMax,
    /// T3: an unparsable maximum.
    GarbageMaxChunk,
    /// T3: no `Location`.
    NoStartLocation,
    /// T5: `Range` past the total (both readings are impossible).
    RangeBeyondTotal,
    /// T5: `Range` not from 0.
    RangeNotFromZero,
    /// T5: an unparsable `Range` (index into the garbage list).
    GarbageRange(usize),
    /// T5: a 308 without `Range` after bytes were acknowledged.
    NoRangeAfterAck,
    /// T5: `Range` well below what was acknowledged.
    RangeBackwards,
    /// T5: a count that is neither the chunk's end nor a multiple of the minimum.
    RangeUnreadable,
    /// T6: 201 before every byte was sent.
    PrematureCompletion,
    /// T6: the final 201 without `Location`.
    NoFinalLocation,
    /// A status TON has no place for (302).
    OddStatus,
}

/// Every lie, to pick from.
pub const TON_LIES: [TonLie; 14] = [
    TonLie::NoMinChunk,
    TonLie::ZeroMinChunk,
    TonLie::MinAboveMax,
    TonLie::GarbageMaxChunk,
    TonLie::NoStartLocation,
    TonLie::RangeBeyondTotal,
    TonLie::RangeNotFromZero,
    TonLie::GarbageRange(0),
    TonLie::NoRangeAfterAck,
    TonLie::RangeBackwards,
    TonLie::RangeUnreadable,
    TonLie::PrematureCompletion,
    TonLie::NoFinalLocation,
    TonLie::OddStatus,
];

const GARBAGE_RANGES: [&str; 6] = [
    "bytes 0-5",
    "0-",
    "abc",
    "-5",
    "0-18446744073709551615",
    "bytes=0-1,3-4",
];

/// One resumable upload on the server.
#[derive(Clone, Debug)]
pub struct TonStored {
    /// Path and query of its location.
    pub key: String,
    /// `X-TON-Content-Length`.
    pub total: u64,
    /// The bytes held, from the start.
    pub bytes: Vec<u8>,
    /// The stored object's path, once complete.
    pub object: Option<String>,
    /// The furthest byte end of any chunk addressed to it (lost or not).
    pub seen_end: u64,
    /// The count last reported in a delivered 308.
    pub reported: u64,
    /// Its expiry, in wall-clock seconds.
    pub expires_at: u64,
    /// Deleted (404/410 from now on).
    pub gone: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Persist {
    All,
    Nothing,
    Part(u16),
}

#[derive(Clone, Copy, Debug)]
enum Fate {
    Answer(Persist),
    Status {
        status: u16,
        persist: Persist,
        retry_after: Option<u64>,
    },
    DropBefore(TransportFailure),
    DropAfter(TransportFailure, Persist),
    Gone(u16),
    Refuse(u16),
}

/// The simulated TON server. See the module docs.
#[derive(Debug)]
pub struct TonServer {
    knobs: TonKnobs,
    rng: SimRng,
    lie: Option<TonLie>,
    lie_skip: u32,
    t0: Option<Instant>,
    uploads: Vec<TonStored>,
    /// Objects stored by single-request uploads (T1): path, bytes.
    objects: Vec<(String, Vec<u8>)>,
    violations: Vec<String>,
    requests: u64,
    last_report: Option<(usize, u64)>,
}

impl TonServer {
    /// A server whose fates come from a generator seeded with `seed`.
    pub fn new(seed: u64, knobs: TonKnobs) -> Self {
        TonServer {
            knobs,
            rng: SimRng::new(seed),
            lie: None,
            lie_skip: 0,
            t0: None,
            uploads: Vec::new(),
            objects: Vec::new(),
            violations: Vec::new(),
            requests: 0,
            last_report: None,
        }
    }

    /// Tells `lie` once, at its `skip + 1`-th applicable chance.
    pub fn with_lie(mut self, lie: TonLie, skip: u32) -> Self {
        self.lie = Some(lie);
        self.lie_skip = skip;
        self
    }

    /// Client breaches of T1–T6 seen so far.
    pub fn violations(&self) -> &[String] {
        &self.violations
    }

    /// Bytes held by the upload at `location` (0 when there is none).
    pub fn held(&self, location: &Uri) -> u64 {
        self.find(location)
            .map_or(0, |i| self.uploads[i].bytes.len() as u64)
    }

    /// The size of the largest object a single request stored (T1).
    pub fn largest_object(&self) -> u64 {
        self.objects
            .iter()
            .map(|(_, b)| b.len() as u64)
            .max()
            .unwrap_or(0)
    }

    /// The stored object at `location` (a completed upload's or a single request's).
    pub fn object(&self, location: &Uri) -> Option<&[u8]> {
        if location.authority().map(|a| a.as_str()) != Some("ton.sim") {
            return None;
        }
        let path = location.path_and_query()?.as_str();
        self.uploads
            .iter()
            .find(|u| u.object.as_deref() == Some(path))
            .map(|u| &u.bytes[..])
            .or_else(|| {
                self.objects
                    .iter()
                    .find(|(p, _)| p == path)
                    .map(|(_, b)| &b[..])
            })
    }

    /// The driver's process died before it read the last response: undo what it reported.
    pub fn response_lost(&mut self) {
        if let Some((i, reported)) = self.last_report.take() {
            self.uploads[i].reported = reported;
        }
    }

    /// Handles one request whose body is `body`, arriving at `now`.
    pub fn handle(&mut self, now: Instant, request: &Request<()>, body: &[u8]) -> Exchange {
        self.t0.get_or_insert(now);
        self.requests += 1;
        self.last_report = None;
        let headers = request.headers();
        if header_u64(headers, "content-length") != Some(body.len() as u64) {
            self.violation("Content-Length is missing or differs from the body");
        }
        let uri = request.uri();
        let resumable = uri.query().is_some_and(|q| q.contains("resumable=true"));
        match *request.method() {
            Method::POST if uri.path() == BUCKET_PATH && resumable => self.start(now, headers),
            Method::POST if uri.path() == BUCKET_PATH => self.single(headers, body),
            Method::PUT => self.chunk(now, request, body),
            _ => {
                self.violation("unexpected method or URL");
                refusal(405)
            }
        }
    }

    // ---- requests ----

    fn start(&mut self, now: Instant, headers: &HeaderMap) -> Exchange {
        let total = header_u64(headers, "x-ton-content-length");
        if total.is_none()
            || !headers.contains_key("x-ton-content-type")
            || !headers.contains_key("content-type")
        {
            self.violation("start without X-TON-Content-Length/-Type or Content-Type (T2)");
        }
        let total = total.unwrap_or(0);
        let fate = self.next_fate(false);
        match fate {
            Fate::DropBefore(f) => Exchange::new(Err(f), Event::Transport),
            Fate::Refuse(s) | Fate::Gone(s) => refusal(s),
            Fate::Status {
                status,
                retry_after,
                ..
            } => self.retryable(status, retry_after),
            Fate::DropAfter(f, _) => {
                self.create(now, total);
                Exchange::new(Err(f), Event::Transport)
            }
            Fate::Answer(_) => {
                let i = self.create(now, total);
                let k = self.knobs;
                let mut location = self.uploads[i].key.clone();
                if self.rng.chance(k.wrong_location) {
                    location = format!("{BUCKET_PATH}/nowhere.mp4?resumable=true&resumeId=0");
                } else if self.rng.chance(300) {
                    location = format!("{TON_ORIGIN}{location}");
                }
                let expires = self.date(self.uploads[i].expires_at, true);
                let date = self.date(self.wall(now), false);
                let mut min = k.min_chunk.to_string();
                let mut max = Some(k.max_chunk.to_string());
                let mut location = Some(location);
                let lie = self.lie_now(|l| {
                    matches!(
                        l,
                        TonLie::NoMinChunk
                            | TonLie::ZeroMinChunk
                            | TonLie::MinAboveMax
                            | TonLie::GarbageMaxChunk
                            | TonLie::NoStartLocation
                    )
                });
                match lie {
                    Some(TonLie::NoMinChunk) => min.clear(),
                    Some(TonLie::ZeroMinChunk) => min = "0".into(),
                    Some(TonLie::MinAboveMax) => {
                        min = (k.max_chunk + 1).to_string();
                        max = Some(k.max_chunk.to_string());
                    }
                    Some(TonLie::GarbageMaxChunk) => max = Some("12abc".into()),
                    Some(TonLie::NoStartLocation) => location = None,
                    _ => {}
                }
                let mut response = Response::builder()
                    .status(201)
                    .header("expires", expires)
                    .header("date", date);
                if !min.is_empty() {
                    response = response.header("x-ton-min-chunk-size", min);
                }
                if let Some(max) = max {
                    response = response.header("x-ton-max-chunk-size", max);
                }
                if let Some(location) = location {
                    response = response.header("location", location);
                }
                let event = if lie.is_some() {
                    Event::Lie(Must::protocol())
                } else {
                    Event::Answered
                };
                Exchange::new(Ok(response.body(Bytes::new()).expect("valid")), event)
            }
        }
    }

    fn single(&mut self, headers: &HeaderMap, body: &[u8]) -> Exchange {
        if !headers.contains_key("content-type") {
            self.violation("single upload without Content-Type (T1)");
        }
        let fate = self.next_fate(false);
        let len = body.len() as u64;
        let store = |server: &mut TonServer| {
            let path = format!("{BUCKET_PATH}/single-{}.mp4", server.objects.len());
            server.objects.push((path.clone(), body.to_vec()));
            path
        };
        match fate {
            Fate::DropBefore(f) => Exchange::new(Err(f), Event::Transport),
            Fate::Refuse(s) | Fate::Gone(s) => refusal(s),
            Fate::Status {
                status,
                retry_after,
                ..
            } => self.retryable(status, retry_after),
            Fate::DropAfter(f, _) => {
                store(self);
                stored(Exchange::new(Err(f), Event::Transport), len, 0)
            }
            Fate::Answer(_) => {
                let path = store(self);
                let response = Response::builder()
                    .status(201)
                    .header("location", path)
                    .body(Bytes::new())
                    .expect("valid");
                stored(Exchange::new(Ok(response), Event::Answered), len, 0)
            }
        }
    }

    fn chunk(&mut self, now: Instant, request: &Request<()>, body: &[u8]) -> Exchange {
        let headers = request.headers();
        let Some(i) = self.find(request.uri()) else {
            return self.gone(now, 404, Event::Gone);
        };
        if self.uploads[i].gone {
            return self.gone(now, 404, Event::Gone);
        }
        if headers.contains_key("authorization") {
            self.violation("a credential on a chunk (start_headers are for the start only)");
        }
        let Some((a, end, t)) = headers
            .get("content-range")
            .and_then(|v| super::parse_content_range(v.as_bytes()))
            .and_then(|(range, total)| Some((range?.0, range?.1, total?)))
        else {
            self.violation("missing or malformed Content-Range (T4)");
            return refusal(400);
        };
        let (min, max) = (self.knobs.min_chunk, self.knobs.max_chunk);
        let u = &self.uploads[i];
        let (total, held) = (u.total, u.bytes.len() as u64);
        let len = end - a;
        let mut problems = Vec::new();
        if t != total {
            problems.push("Content-Range total differs from X-TON-Content-Length (T4)");
        }
        if len != body.len() as u64 {
            problems.push("Content-Range length differs from the body (T4)");
        }
        if len > max || len >= CHUNK_LIMIT {
            problems.push("a chunk above the maximum or 64 MiB (T4)");
        }
        if end != total && len % min != 0 {
            problems.push("a non-final chunk that is not a multiple of the minimum (T4)");
        }
        if a > held && u.object.is_none() {
            problems.push("a chunk starts past what the server holds: a gap (T5)");
        }
        let bad = !problems.is_empty();
        for p in problems {
            self.violation(p);
        }
        if bad {
            return refusal(400);
        }
        if let Some(path) = self.uploads[i].object.clone() {
            // The 201 to the last chunk was lost: this answers a re-sent chunk (T6).
            let response = Response::builder()
                .status(201)
                .header("location", path)
                .body(Bytes::new())
                .expect("valid");
            return stored(Exchange::new(Ok(response), Event::Answered), 0, len);
        }
        if self.wall(now) >= self.uploads[i].expires_at {
            self.uploads[i].gone = true;
            let status = self.rng.pick(&[404, 410]);
            return self.gone(now, status, Event::Expired);
        }
        let u = &mut self.uploads[i];
        u.seen_end = u.seen_end.max(end);
        let fate = self.next_fate(true);
        let persist = match fate {
            Fate::DropBefore(f) => return Exchange::new(Err(f), Event::Transport),
            Fate::Refuse(s) => return refusal(s),
            Fate::Gone(s) => {
                self.uploads[i].gone = true;
                return self.gone(now, s, Event::Gone);
            }
            Fate::Answer(p) | Fate::DropAfter(_, p) | Fate::Status { persist: p, .. } => p,
        };
        let (new, dup) = self.store(i, a, body, persist);
        let exchange = match fate {
            Fate::DropAfter(f, _) => Exchange::new(Err(f), Event::Transport),
            Fate::Status {
                status,
                retry_after,
                ..
            } => self.retryable(status, retry_after),
            _ => self.answer(i, end),
        };
        stored(exchange, new, dup)
    }

    /// The answer to a processed chunk ending at `chunk_end`: 201 once complete, else 308
    /// (T5, T6); or the armed lie.
    fn answer(&mut self, i: usize, chunk_end: u64) -> Exchange {
        let min = self.knobs.min_chunk;
        let u = &self.uploads[i];
        let (total, held, reported, seen) = (u.total, u.bytes.len() as u64, u.reported, u.seen_end);
        if held == total {
            let path = format!("{BUCKET_PATH}/object-{i}.mp4");
            self.uploads[i].object = Some(path.clone());
            let mut response = Response::builder().status(self.rng.pick(&[200, 201, 201]));
            let event = if self.lie_now(|l| l == TonLie::NoFinalLocation).is_some() {
                Event::Lie(Must::Be(ProtocolViolation::MissingLocation.into()))
            } else {
                response = response.header("location", path);
                Event::Answered
            };
            return Exchange::new(Ok(response.body(Bytes::new()).expect("valid")), event);
        }
        let unreadable = min >= 3
            && reported % min == 0
            && reported + 2 < total
            && reported + 2 <= seen
            && chunk_end != reported + 1
            && chunk_end != reported + 2;
        let lie = self.lie_now(|l| match l {
            TonLie::RangeBeyondTotal
            | TonLie::RangeNotFromZero
            | TonLie::GarbageRange(_)
            | TonLie::OddStatus => true,
            TonLie::NoRangeAfterAck => reported >= 2,
            TonLie::RangeBackwards => reported >= 4,
            TonLie::RangeUnreadable => unreadable,
            TonLie::PrematureCompletion => seen < total,
            _ => false,
        });
        let mut response = Response::builder().status(308);
        let mut ambiguous = false;
        match lie {
            None => {
                let bytes_prefix = if self.rng.chance(500) { "bytes=" } else { "" };
                // T5: N is the last byte held, or the count held; both occur.
                let last_byte = self.rng.chance(500);
                if held > 0 {
                    let n = if last_byte { held - 1 } else { held };
                    response = response.header("range", format!("{bytes_prefix}0-{n}"));
                    ambiguous = last_byte && min == 1;
                }
                self.last_report = Some((i, reported));
                self.uploads[i].reported = held;
            }
            Some(TonLie::RangeBeyondTotal) => {
                let n = total + self.rng.below(10);
                response = response.header("range", format!("0-{n}"));
            }
            Some(TonLie::RangeNotFromZero) => response = response.header("range", "bytes=5-9"),
            Some(TonLie::GarbageRange(_)) => {
                let garbage = self.rng.pick(&GARBAGE_RANGES);
                response = response.header("range", garbage);
                if self.rng.chance(200) {
                    response = response.header("range", "0-0");
                }
            }
            Some(TonLie::NoRangeAfterAck) => {}
            Some(TonLie::RangeBackwards) => {
                response = response.header("range", format!("0-{}", reported / 2 - 1));
            }
            Some(TonLie::RangeUnreadable) => {
                response = response.header("range", format!("0-{}", reported + 1));
            }
            Some(TonLie::PrematureCompletion) => {
                response = response
                    .status(201)
                    .header("location", format!("{BUCKET_PATH}/early.mp4"));
            }
            Some(_) => response = response.status(302).header("location", "/elsewhere"),
        }
        let event = match lie {
            None => Event::Answered,
            Some(TonLie::PrematureCompletion) => {
                Event::Lie(Must::Match("PrematureCompletion", |e| {
                    matches!(
                        e,
                        Error::Protocol(ProtocolViolation::PrematureCompletion { .. })
                    )
                }))
            }
            Some(_) => Event::Lie(Must::protocol()),
        };
        let mut exchange = Exchange::new(Ok(response.body(Bytes::new()).expect("valid")), event);
        exchange.ambiguous = ambiguous;
        exchange
    }

    // ---- state ----

    fn create(&mut self, now: Instant, total: u64) -> usize {
        let n = self.uploads.len();
        let expires_at = self.wall(now) + self.knobs.expires_after_secs;
        self.uploads.push(TonStored {
            key: format!("{BUCKET_PATH}/upload-{n}.mp4?resumable=true&resumeId={n}"),
            total,
            bytes: Vec::new(),
            object: None,
            seen_end: 0,
            reported: 0,
            expires_at,
            gone: false,
        });
        n
    }

    fn find(&self, uri: &Uri) -> Option<usize> {
        if uri.scheme_str() != Some("https")
            || uri.authority().map(|a| a.as_str()) != Some("ton.sim")
        {
            return None;
        }
        let key = uri.path_and_query()?.as_str();
        self.uploads.iter().position(|u| u.key == key)
    }

    /// Keeps `persist` of `body` (source bytes from `a`), rounded down to whole minimum chunks
    /// unless the whole body is kept; returns (new, already held) byte counts.
    fn store(&mut self, i: usize, a: u64, body: &[u8], persist: Persist) -> (u64, u64) {
        let min = self.knobs.min_chunk;
        let len = body.len() as u64;
        let keep = match persist {
            Persist::All => len,
            Persist::Nothing => 0,
            Persist::Part(per_mille) => {
                let reach = a + len * u64::from(per_mille.min(1000)) / 1000;
                (reach / min * min).saturating_sub(a)
            }
        };
        let u = &mut self.uploads[i];
        let held = u.bytes.len() as u64;
        let overlap = held.saturating_sub(a).min(len);
        let same = u.bytes[a as usize..(a + overlap) as usize] == body[..overlap as usize];
        let new = (a + keep).saturating_sub(held);
        if keep > overlap {
            u.bytes
                .extend_from_slice(&body[overlap as usize..keep as usize]);
        }
        if !same {
            self.violation("a re-sent byte differs from the one held");
        }
        (new, overlap)
    }

    fn wall(&self, now: Instant) -> u64 {
        let since = self
            .t0
            .map_or(Duration::ZERO, |t0| now.saturating_duration_since(t0));
        WALL_START + since.as_secs()
    }

    /// An HTTP date; `Expires` is written in TON's `UTC` spelling half of the time (T3).
    fn date(&mut self, wall: u64, may_say_utc: bool) -> String {
        let text = httpdate::fmt_http_date(SystemTime::UNIX_EPOCH + Duration::from_secs(wall));
        if may_say_utc && self.rng.chance(500) {
            text.replace("GMT", "UTC")
        } else {
            text
        }
    }

    // ---- fates, lies, answers ----

    fn next_fate(&mut self, on_upload: bool) -> Fate {
        let k = self.knobs;
        let rng = &mut self.rng;
        if rng.chance(k.refuse) {
            return Fate::Refuse(rng.pick(&[400, 403]));
        }
        if on_upload && rng.chance(k.gone) {
            return Fate::Gone(rng.pick(&[404, 410]));
        }
        if rng.chance(k.drop_before) {
            return Fate::DropBefore(rng.pick(&[
                TransportFailure::Connect,
                TransportFailure::Reset,
                TransportFailure::Timeout,
                TransportFailure::Other,
            ]));
        }
        let persist = if rng.chance(k.partial) {
            if rng.chance(300) {
                Persist::Nothing
            } else {
                Persist::Part(rng.below(1001) as u16)
            }
        } else {
            Persist::All
        };
        if rng.chance(k.drop_after) {
            let f = rng.pick(&[
                TransportFailure::Reset,
                TransportFailure::Timeout,
                TransportFailure::TruncatedResponse,
            ]);
            return Fate::DropAfter(f, persist);
        }
        if rng.chance(k.status) {
            let status = rng.pick(&RETRYABLE);
            let retry_after = rng
                .chance(k.retry_after)
                .then(|| rng.below(k.max_retry_after_secs + 1));
            return Fate::Status {
                status,
                persist,
                retry_after,
            };
        }
        Fate::Answer(persist)
    }

    fn lie_now(&mut self, applicable: impl Fn(TonLie) -> bool) -> Option<TonLie> {
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

    fn retryable(&mut self, status: u16, retry_after: Option<u64>) -> Exchange {
        let mut response = Response::builder().status(status);
        if let Some(secs) = retry_after {
            response = response.header("retry-after", secs.to_string());
        }
        let body = if self.rng.chance(300) {
            Bytes::from_static(b"<html><body>upstream busy</body></html>")
        } else {
            Bytes::new()
        };
        Exchange::new(Ok(response.body(body).expect("valid")), Event::Retryable)
    }

    fn gone(&mut self, now: Instant, status: u16, event: Event) -> Exchange {
        // Past an upload's `Expires`, a client may well read any 404/410 as expiry (T3).
        let wall = self.wall(now);
        let event = match event {
            Event::Gone if self.uploads.iter().any(|u| wall >= u.expires_at) => Event::Expired,
            event => event,
        };
        let mut response = Response::builder().status(status);
        if self.knobs.date_on_gone {
            response = response.header("date", self.date(self.wall(now), false));
        }
        Exchange::new(Ok(response.body(Bytes::new()).expect("valid")), event)
    }

    fn violation(&mut self, what: &str) {
        self.violations
            .push(format!("request {}: {what}", self.requests));
    }
}

fn refusal(status: u16) -> Exchange {
    let body = format!(r#"{{"errors":[{{"code":{status},"message":"simulated refusal"}}]}}"#);
    let response = Response::builder()
        .status(StatusCode::from_u16(status).expect("valid"))
        .body(Bytes::from(body))
        .expect("valid");
    Exchange::new(Ok(response), Event::Refused)
}

fn stored(mut exchange: Exchange, new: u64, dup: u64) -> Exchange {
    exchange.new = new;
    exchange.dup = dup;
    exchange
}

fn header_u64(headers: &HeaderMap, name: &str) -> Option<u64> {
    headers.get(name)?.to_str().ok()?.trim().parse().ok()
}
