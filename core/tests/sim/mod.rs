//! `SimServer`: a simulated Google Cloud Storage resumable-upload server (rules G1–G11 in
//! `docs/protocols`), driven in-process: no sockets, no clock, no global randomness.
//!
//! The driver hands every request the core emits to [`SimServer::handle`] together with the
//! body bytes it would send, and gets back a [`Reply`]: a response or a transport failure. The
//! server keeps, per session, the bytes it has persisted, and for every request applies a
//! [`Fate`]: persist all of the body or only a prefix, answer a retryable status, lose the
//! request before or after processing it, say the session is gone, or refuse.
//!
//! Where the fates come from:
//! - a **script** first ([`SimServer::with_script`]), so a property test can generate the
//!   sequence and shrink it to a minimal failing one;
//! - then a **seeded generator** reading the [`Knobs`] (per-mille probabilities), so a
//!   deterministic simulation can run thousands of seeds: the same seed, knobs and client
//!   give the same exchange, byte for byte.
//!
//! A server built [`SimServer::with_lie`] is honest until its lie is applicable (after
//! skipping a number of chances), tells it once, and reports in [`Reply::lie`] which typed error
//! the client must end with.
//!
//! The server also checks the client: every request breaking G1–G6 (a gap, re-sent acknowledged
//! bytes, a non-final chunk that is not a multiple of 256 KiB, a wrong `Content-Length`, a
//! changed total, a wrong `x-goog-hash`, a credential sent to the session URI) is recorded in
//! [`SimServer::violations`]; an honest exchange must leave it empty.

// Each test binary that includes this module uses a different part of it.
#![allow(dead_code)]

// The TON, media and compliance servers of the deterministic simulation (tests/simulation.rs).
pub mod compliance;
pub mod exchange;
pub mod media;
pub mod ton;

use std::collections::VecDeque;
use std::time::{Duration, SystemTime};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Method, Request, Response, StatusCode};
use md5::Digest as _;
use resumable_core::{Error, IntegrityError, ProtocolViolation, TransportFailure};

/// GCS persists non-final data in multiples of this (G4, G5).
pub const GRANULE: u64 = 256 * 1024;
/// Scheme and authority of every URL the simulated server serves.
pub const ORIGIN: &str = "https://sim.example";
/// The XML / signed-URL start URL (G1).
pub const XML_START: &str = "https://sim.example/bucket/object.bin?X-Goog-Signature=SIMSIG";
/// The JSON API start URL (G2).
pub const JSON_START: &str =
    "https://sim.example/upload/storage/v1/b/bucket/o?uploadType=resumable&name=object.bin";
/// Statuses GCS documents as retryable (G8).
pub const RETRYABLE: [u16; 6] = [408, 429, 500, 502, 503, 504];

/// How much of a request's body the server keeps.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Persist {
    /// Every byte.
    All,
    /// None (a 308 then reports the unchanged offset).
    Nothing,
    /// `per_mille`/1000 of the body, rounded down to a multiple of 256 KiB from the start of
    /// the object, as GCS does; a final byte range kept whole stays whole (G5).
    Granules { per_mille: u16 },
    /// `per_mille`/1000 of the body, any byte count (G5: "may persist fewer bytes").
    Prefix { per_mille: u16 },
}

/// How a retryable answer asks the client to wait (G8).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RetryAfter {
    /// `Retry-After: N` (delta-seconds).
    Seconds(u64),
    /// `Retry-After: <HTTP-date>` N seconds after the response's `Date`.
    Date(u64),
}

impl RetryAfter {
    /// The wait this asks for.
    pub fn duration(self) -> Duration {
        match self {
            RetryAfter::Seconds(s) | RetryAfter::Date(s) => Duration::from_secs(s),
        }
    }
}

/// What the server does with one request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fate {
    /// Process it (keep `Persist` of a chunk) and answer truthfully: start → 200/201 +
    /// `Location`; session → 308 + `Range`, or 200/201 + the object once complete.
    Answer(Persist),
    /// Process it (keep `persist`), then answer a retryable status (G8).
    Status {
        status: u16,
        persist: Persist,
        retry_after: Option<RetryAfter>,
    },
    /// The request never reaches the server (nothing is stored, no session is created).
    DropBefore(TransportFailure),
    /// The server processes it (stores, creates the session, completes) but the response is
    /// lost: the client sees a transport failure.
    DropAfter {
        failure: TransportFailure,
        persist: Persist,
    },
    /// 404 or 410 (G9). On a start request this is a final refusal.
    Gone(u16),
    /// A final client error (400, 403, 412…): nothing is processed.
    Refuse(u16),
}

/// Which completions carry the JSON object resource (G7).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ObjectJson {
    /// Sessions started through the JSON API get the object resource; XML sessions get an
    /// empty body and `x-goog-hash` headers, as GCS does.
    ByApi,
    /// Every completion carries the object resource.
    Always,
    /// No completion does (only `x-goog-hash`).
    Never,
}

/// The seeded generator's behaviour, once the script is used up. Probabilities are per mille
/// and are tried in this order: refuse, gone, drop before, drop after, retryable status; the
/// rest are answered truthfully. Each fate that keeps data keeps only a prefix with
/// probability `partial`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Knobs {
    /// A final 4xx (400/403/412).
    pub refuse: u16,
    /// 404/410 on the session (G9).
    pub gone: u16,
    /// The request is lost before it reaches the server.
    pub drop_before: u16,
    /// The response is lost after the server processed the request.
    pub drop_after: u16,
    /// A retryable status (408/429/500/502/503/504).
    pub status: u16,
    /// A retryable status carries `Retry-After`.
    pub retry_after: u16,
    /// The longest `Retry-After` the server asks for, in seconds.
    pub max_retry_after_secs: u64,
    /// A store keeps only a prefix of the body.
    pub partial: u16,
    /// Partial stores may keep any byte count (otherwise 256 KiB multiples only).
    pub arbitrary_prefix: bool,
    /// Answer `200` + `X-Http-Status-Code-Override: 308` when asked with `X-GUploader-No-308`
    /// (G11).
    pub honour_no_308: bool,
    /// Give `Location` as a path relative to the start URL.
    pub relative_location: bool,
    /// Which completions carry the object resource.
    pub object_json: ObjectJson,
    /// Report `md5Hash` (costs an MD5 over the object at completion).
    pub report_md5: bool,
    /// Write the object's `size` as a JSON number instead of GCS's string.
    pub numeric_size: bool,
}

impl Knobs {
    /// A server that never fails: every request is processed in full and answered truthfully.
    pub fn perfect() -> Self {
        Knobs {
            refuse: 0,
            gone: 0,
            drop_before: 0,
            drop_after: 0,
            status: 0,
            retry_after: 0,
            max_retry_after_secs: 0,
            partial: 0,
            arbitrary_prefix: false,
            honour_no_308: true,
            relative_location: false,
            object_json: ObjectJson::ByApi,
            report_md5: false,
            numeric_size: false,
        }
    }

    /// A flaky but live server, a starting point for deterministic simulation.
    pub fn flaky() -> Self {
        Knobs {
            drop_before: 50,
            drop_after: 50,
            status: 100,
            retry_after: 300,
            max_retry_after_secs: 30,
            partial: 300,
            arbitrary_prefix: true,
            ..Knobs::perfect()
        }
    }
}

/// A lie the server tells once (see [`SimServer::with_lie`]), and the typed error it must cause.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Lie {
    /// 308 claiming `extra` more bytes than the client ever sent (G5).
    RangeBeyondSent { extra: u64 },
    /// 308 whose `Range` starts at `start` ≥ 1 (G5).
    RangeNotFromZero { start: u64, len: u64 },
    /// 308 reporting `per_mille`/1000 (< 1) of the bytes acknowledged before (G5).
    RangeBackwards { per_mille: u16 },
    /// 308 with an unparsable `Range` (one of [`GARBAGE_RANGES`], by index).
    GarbageRange(usize),
    /// 200/201 before the client sent the whole source with its total (G7).
    CompleteEarly,
    /// At the final chunk: keep `per_mille`/1000 (< 1) of it, yet answer 200/201 with an honest
    /// object resource for the short object (G7).
    TruncatedObject { per_mille: u16 },
    /// A completion whose object resource reports the size off by `delta` (G7).
    WrongSize { delta: u64, bigger: bool },
    /// A completion whose CRC32C (object resource or `x-goog-hash`) is flipped by `xor` (G7).
    WrongCrc32c { xor: u32, in_header: bool },
    /// A completion whose MD5 is wrong (the client must compute MD5 for this to be caught).
    WrongMd5 { in_header: bool },
    /// 200/201 to the start with no usable `Location` (one of [`BAD_LOCATIONS`], by index).
    NoLocation(usize),
    /// A status the protocol has no place for on the session (e.g. 204, 302).
    OddStatus(u16),
    /// The first answer to a resumed client, which never sent the whole source: the session
    /// "completed" with other bytes of the source's length, answered 200 with `proof` of them:
    /// 0 nothing, 1 `x-goog-stored-content-length` (which matches the source's size), 2 that
    /// and `x-goog-hash`, 3 the object resource. The client must not call it a success (G3,
    /// G7).
    ForeignCompletion { proof: u8 },
}

/// Values of `Range` no parser may accept (`None` entries mean two `Range` headers).
pub const GARBAGE_RANGES: [Option<&[u8]>; 11] = [
    Some(b"bytes=abc"),
    Some(b"0-1023"),
    Some(b"bytes 0-1023"),
    Some(b"bytes=1023-0"),
    Some(b"bytes=-5"),
    Some(b"bytes=0-"),
    Some(b"bytes=0-18446744073709551615"),
    Some(b"bytes=0-1,3-4"),
    Some(b""),
    Some(b"bytes=0-1\xff"),
    None,
];

/// `Location` values that give no usable session URI (`None`: the header is absent; the
/// last entry is sent twice).
pub const BAD_LOCATIONS: [Option<&[u8]>; 7] = [
    None,
    Some(b""),
    Some(b"relative/path"),
    Some(b"ftp://sim.example/upload"),
    Some(b"//sim.example/upload"),
    Some(b"\xffnot-text"),
    Some(b"https://sim.example/twice"),
];

/// The error a lie must end the upload with.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Expect {
    /// Exactly this error.
    Exact(Error),
    /// `Error::Protocol(ProtocolViolation::PrematureCompletion { .. })`, any numbers.
    PrematureCompletion,
    /// Any `Error::Integrity` (what the server holds is not, or not provably, the source).
    Integrity,
}

impl Expect {
    /// Whether `error` is the one this lie must cause.
    pub fn accepts(&self, error: &Error) -> bool {
        match self {
            Expect::Exact(e) => e == error,
            Expect::PrematureCompletion => matches!(
                error,
                Error::Protocol(ProtocolViolation::PrematureCompletion { .. })
            ),
            Expect::Integrity => matches!(error, Error::Integrity(_)),
        }
    }
}

/// The server's answer to one request.
#[derive(Debug)]
pub struct Reply {
    /// The response, or the transport failure the driver reports instead.
    pub outcome: Result<Response<Bytes>, TransportFailure>,
    /// The fate applied.
    pub fate: Fate,
    /// The session the request went to (index into the server's sessions).
    pub session: Option<usize>,
    /// `Some` when this response is the server's lie: the error the client must end with.
    pub lie: Option<Expect>,
    /// The wait the response asked for with `Retry-After`.
    pub retry_after: Option<Duration>,
    /// The response is a completion (200/201 on the session).
    pub completion: bool,
    /// The completion carried the JSON object resource.
    pub object_json: bool,
}

/// One upload session on the server.
#[derive(Clone, Debug)]
pub struct Session {
    /// Path and query of the session URI (how requests find it).
    pub key: String,
    /// Created by a JSON API start (G2).
    pub json_api: bool,
    /// The bytes persisted so far.
    pub stored: Vec<u8>,
    /// The object's total size, once declared (`X-Upload-Content-Length` or `Content-Range`).
    pub total: Option<u64>,
    /// The completion status once the whole object is stored with its total declared.
    pub completed: Option<StatusCode>,
    /// The furthest byte end of any chunk addressed to this session, lost or not: the most
    /// the client can believe it sent.
    pub client_sent: u64,
    /// The persisted count last reported to the client in a delivered response.
    pub acked: u64,
    /// CRC32C and MD5 of `stored`, for the length they were computed at.
    checksums: Option<(usize, u32, Option<[u8; 16]>)>,
}

/// The simulated server. See the module docs.
#[derive(Debug)]
pub struct SimServer {
    knobs: Knobs,
    rng: SimRng,
    script: VecDeque<Fate>,
    lie: Option<Lie>,
    lie_skip: u32,
    told: Option<Expect>,
    sessions: Vec<Session>,
    violations: Vec<String>,
    requests: u64,
    /// Undo for [`SimServer::response_lost`]: the session and its `acked` before the last reply.
    last_ack: Option<(usize, u64)>,
    /// The client was resumed in a new process and has not had an answer yet: it bounds a
    /// claim by the total, not by what it sent (its saved state may be behind), so a claim
    /// beyond what was sent is a lie it can catch only past the total (G5, G3).
    resumed_client: bool,
}

/// A small seeded generator (splitmix64): the simulation's only source of randomness.
#[derive(Clone, Debug)]
pub struct SimRng(u64);

impl SimRng {
    /// A generator seeded with `seed`.
    pub fn new(seed: u64) -> Self {
        SimRng(seed)
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (`n` > 0).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n
    }

    /// True with probability `per_mille`/1000.
    pub fn chance(&mut self, per_mille: u16) -> bool {
        self.below(1000) < u64::from(per_mille)
    }

    /// One of `items` (non-empty).
    pub fn pick<T: Copy>(&mut self, items: &[T]) -> T {
        items[self.below(items.len() as u64) as usize]
    }
}

impl SimServer {
    /// A server whose fates come from a generator seeded with `seed`, behaving as `knobs` say.
    pub fn new(seed: u64, knobs: Knobs) -> Self {
        SimServer {
            knobs,
            rng: SimRng::new(seed),
            script: VecDeque::new(),
            lie: None,
            lie_skip: 0,
            resumed_client: false,
            told: None,
            sessions: Vec::new(),
            violations: Vec::new(),
            requests: 0,
            last_ack: None,
        }
    }

    /// Applies these fates to the first requests, in order, before the generator takes over.
    pub fn with_script(mut self, script: impl IntoIterator<Item = Fate>) -> Self {
        self.script = script.into_iter().collect();
        self
    }

    /// Tells `lie` once, at its `skip + 1`-th applicable chance (a request the server would
    /// otherwise answer truthfully, where the lie is detectable by the client).
    pub fn with_lie(mut self, lie: Lie, skip: u32) -> Self {
        self.lie = Some(lie);
        self.lie_skip = skip;
        self
    }

    /// The lie told so far, with the error it must cause.
    pub fn told(&self) -> Option<&Expect> {
        self.told.as_ref()
    }

    /// Client breaches of the protocol seen so far (empty for a correct client).
    pub fn violations(&self) -> &[String] {
        &self.violations
    }

    /// Every session created, in order.
    pub fn sessions(&self) -> &[Session] {
        &self.sessions
    }

    /// The session a URI names.
    pub fn session_at(&self, uri: &http::Uri) -> Option<&Session> {
        self.find(uri).map(|i| &self.sessions[i])
    }

    /// How many requests were handed in.
    pub fn requests(&self) -> u64 {
        self.requests
    }

    /// The client process restarted from a saved state (`true`), or had the first answer of
    /// its session since (`false`): see the `resumed_client` field.
    pub fn set_resumed_client(&mut self, resumed: bool) {
        self.resumed_client = resumed;
    }

    /// The driver lost the last response after all (its process died before reading it): the
    /// client never learned what it said.
    pub fn response_lost(&mut self) {
        if let Some((i, acked)) = self.last_ack.take() {
            self.sessions[i].acked = acked;
        }
    }

    /// Handles one request whose body is `body` (the core's prefix, source range and suffix).
    pub fn handle(&mut self, request: &Request<()>, body: &[u8]) -> Reply {
        self.requests += 1;
        self.last_ack = None;
        if request
            .headers()
            .get(http::header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok())
            != Some(body.len() as u64)
        {
            self.violation("Content-Length is missing or differs from the body (G4)");
        }
        let mut reply = match *request.method() {
            Method::PUT => return self.put(request, body),
            Method::POST => self.start(request, body),
            Method::DELETE => self.delete(request),
            _ => {
                self.violation("unexpected method");
                self.plain(None, Fate::Refuse(405), 405)
            }
        };
        // Only a PUT to the session completes the object.
        reply.completion = false;
        reply.object_json = false;
        reply
    }

    // ---- requests ----

    fn start(&mut self, request: &Request<()>, body: &[u8]) -> Reply {
        let headers = request.headers();
        let uri = request.uri().to_string();
        // A signed URL may carry more query parameters after the signature (the simulated
        // compliance API names its job there).
        let xml = uri
            .strip_prefix(XML_START)
            .is_some_and(|rest| rest.is_empty() || rest.starts_with('&'));
        let json_api = if xml {
            // G1: exactly these headers, so a signed URL's signature holds.
            if headers.get("x-goog-resumable").map(HeaderValue::as_bytes) != Some(b"start") {
                self.violation("XML start without x-goog-resumable: start (G1)");
            }
            if !body.is_empty() || headers.contains_key(http::header::AUTHORIZATION) {
                self.violation("XML start with a body or Authorization (G1)");
            }
            false
        } else if uri == JSON_START {
            if !headers.contains_key("x-upload-content-type") {
                self.violation("JSON start without X-Upload-Content-Type (G2)");
            }
            true
        } else {
            self.violation("start request to an unknown URL");
            return self.plain(None, Fate::Refuse(404), 404);
        };
        let declared = headers
            .get("x-upload-content-length")
            .map(|v| v.to_str().ok().and_then(|v| v.parse::<u64>().ok()));
        if declared == Some(None) {
            self.violation("unparsable X-Upload-Content-Length (G2)");
        }
        let fate = self.next_fate(false);
        match fate {
            Fate::DropBefore(failure) => self.failure(None, fate, failure),
            Fate::Refuse(s) | Fate::Gone(s) => self.plain(None, fate, s),
            Fate::Status {
                status,
                retry_after,
                ..
            } => self.retryable(None, fate, status, retry_after),
            Fate::DropAfter { failure, .. } => {
                let i = self.create(json_api, declared.flatten());
                self.failure(Some(i), fate, failure)
            }
            Fate::Answer(_) => {
                let i = self.create(json_api, declared.flatten());
                let status = self.created_status();
                if let Some(Lie::NoLocation(which)) =
                    self.lie_now(|l| matches!(l, Lie::NoLocation(_)))
                {
                    let which = which % BAD_LOCATIONS.len();
                    let mut response = Response::builder().status(status);
                    if let Some(value) = BAD_LOCATIONS[which] {
                        let value = HeaderValue::from_bytes(value).expect("header bytes");
                        response = response.header(http::header::LOCATION, value.clone());
                        if which == BAD_LOCATIONS.len() - 1 {
                            response = response.header(http::header::LOCATION, value);
                        }
                    }
                    let expect = Expect::Exact(ProtocolViolation::MissingLocation.into());
                    return self.lie_reply(Some(i), fate, response.body(Bytes::new()), expect);
                }
                let key = &self.sessions[i].key;
                let location = if self.knobs.relative_location {
                    key.clone()
                } else {
                    format!("{ORIGIN}{key}")
                };
                let response = Response::builder()
                    .status(status)
                    .header(http::header::LOCATION, location)
                    .body(Bytes::new());
                self.reply(Some(i), fate, response)
            }
        }
    }

    fn put(&mut self, request: &Request<()>, body: &[u8]) -> Reply {
        let Some(i) = self.find(request.uri()) else {
            self.violation("request to an unknown session URI");
            return self.plain(None, Fate::Gone(404), 404);
        };
        let headers = request.headers();
        if headers.contains_key(http::header::AUTHORIZATION) {
            self.violation("credentials sent to the session URI (G1)");
        }
        let Some((range, total)) = headers
            .get(http::header::CONTENT_RANGE)
            .and_then(|v| parse_content_range(v.as_bytes()))
        else {
            self.violation("missing or malformed Content-Range (G4, G6)");
            return self.plain(Some(i), Fate::Refuse(400), 400);
        };
        let len = range.map_or(0, |(a, end)| end - a);
        if len != body.len() as u64 {
            self.violation("Content-Range length differs from the body (G4)");
            return self.plain(Some(i), Fate::Refuse(400), 400);
        }
        self.check_chunk(i, range, total);

        let fate = self.next_fate(true);
        let s = &mut self.sessions[i];
        if let Some((_, end)) = range {
            s.client_sent = s.client_sent.max(end);
        }
        let persist = match fate {
            Fate::DropBefore(failure) => return self.failure(Some(i), fate, failure),
            Fate::Gone(status) | Fate::Refuse(status) => return self.plain(Some(i), fate, status),
            Fate::Answer(p) => p,
            Fate::Status { persist, .. } | Fate::DropAfter { persist, .. } => persist,
        };

        // A lie at the final chunk keeps part of it, then claims the object is complete.
        let final_chunk =
            matches!((range, total), (Some((a, end)), Some(t)) if end == t && end > a);
        let truncate =
            if fate == Fate::Answer(persist) && final_chunk && self.sessions[i].completed.is_none()
            {
                self.lie_now(|l| matches!(l, Lie::TruncatedObject { .. }))
            } else {
                None
            };
        if let (Some(Lie::TruncatedObject { per_mille }), Some((a, end)), Some(t)) =
            (truncate, range, total)
        {
            let keep = (end - a) * u64::from(per_mille.min(999)) / 1000;
            self.store(i, a, &body[..keep as usize]);
            self.sessions[i].total.get_or_insert(t);
            let stored = self.sessions[i].stored.len() as u64;
            let status = self.created_status();
            let response = self.object_response(i, status, true, None);
            let expect = Expect::Exact(IntegrityError::Size { stored, sent: t }.into());
            return self.lie_reply(Some(i), fate, response, expect);
        }
        if let Some((a, end)) = range
            && self.sessions[i].completed.is_none()
        {
            let keep = self.kept(persist, a, end, total);
            self.store(i, a, &body[..keep as usize]);
        }
        if let Some(t) = total {
            self.sessions[i].total.get_or_insert(t);
        }
        self.maybe_complete(i, headers);

        match fate {
            Fate::DropAfter { failure, .. } => self.failure(Some(i), fate, failure),
            Fate::Status {
                status,
                retry_after,
                ..
            } => self.retryable(Some(i), fate, status, retry_after),
            _ => self.answer(i, fate, range, total, headers),
        }
    }

    fn delete(&mut self, request: &Request<()>) -> Reply {
        // G10: cancelling answers 499.
        let i = self.find(request.uri());
        self.plain(i, Fate::Answer(Persist::Nothing), 499)
    }

    /// The truthful answer on the session, or the lie when one is due.
    fn answer(
        &mut self,
        i: usize,
        fate: Fate,
        range: Option<(u64, u64)>,
        total: Option<u64>,
        headers: &HeaderMap,
    ) -> Reply {
        let s = &self.sessions[i];
        let (sent, acked, completed, size) =
            (s.client_sent, s.acked, s.completed, s.stored.len() as u64);
        // Completion is legitimate only once the whole source was sent with its total (G7).
        let legit = match (range, total) {
            (Some((_, end)), Some(t)) => end == t,
            (None, Some(t)) => sent == t,
            _ => false,
        };
        if let Some(status) = completed {
            let lie = self.lie_now(|l| {
                matches!(
                    l,
                    Lie::WrongSize { .. } | Lie::WrongCrc32c { .. } | Lie::WrongMd5 { .. }
                )
            });
            let Some(lie) = lie else {
                let json = self.wants_json(i);
                let response = self.object_response(i, status, json, None);
                return self.reply(Some(i), fate, response);
            };
            let (crc, _) = self.checksums(i);
            let expect = match lie {
                Lie::WrongSize { delta, bigger } => IntegrityError::Size {
                    stored: wrong_size(size, delta, bigger),
                    sent: size,
                },
                Lie::WrongCrc32c { xor, .. } => IntegrityError::Crc32c {
                    server: crc ^ xor.max(1),
                    computed: crc,
                },
                _ => IntegrityError::Md5,
            };
            let response = self.object_response(i, status, true, Some(lie));
            return self.lie_reply(Some(i), fate, response, Expect::Exact(expect.into()));
        }
        let resumed_total = self
            .resumed_client
            .then(|| self.sessions[i].total.or(total))
            .flatten();
        let resumed_client = self.resumed_client;
        let lie = self.lie_now(|l| match l {
            // A resumed client bounds claims by the total: the lie must pass it.
            Lie::RangeBeyondSent { .. } if resumed_client => resumed_total.is_some(),
            Lie::RangeBeyondSent { .. }
            | Lie::RangeNotFromZero { .. }
            | Lie::GarbageRange(_)
            | Lie::OddStatus(_) => true,
            Lie::RangeBackwards { .. } => acked > 0,
            Lie::CompleteEarly => !legit,
            // Only where the client cannot vouch for the whole object (it never sent it).
            Lie::ForeignCompletion { .. } => resumed_total.is_some_and(|t| sent < t),
            _ => false,
        });
        let Some(lie) = lie else {
            return self.progress(i, fate, headers);
        };
        let mut response = Response::builder().status(308);
        let expect = match lie {
            Lie::RangeBeyondSent { extra } => {
                // A client that sent nothing may read `bytes=0-0` as "nothing" (an emulator
                // quirk the core accepts), so claim at least two bytes then.
                let sent = resumed_total.unwrap_or(sent);
                let claimed = sent + extra.max(if sent == 0 { 2 } else { 1 });
                response = response.header(http::header::RANGE, format!("bytes=0-{}", claimed - 1));
                ProtocolViolation::RangeBeyondSent { claimed, sent }
            }
            Lie::RangeNotFromZero { start, len } => {
                let start = start.max(1);
                response = response.header(
                    http::header::RANGE,
                    format!("bytes={start}-{}", start.saturating_add(len)),
                );
                ProtocolViolation::RangeNotFromZero { start }
            }
            Lie::RangeBackwards { per_mille } => {
                let now = acked * u64::from(per_mille.min(999)) / 1000;
                if now > 0 {
                    response = response.header(http::header::RANGE, format!("bytes=0-{}", now - 1));
                }
                ProtocolViolation::PersistedWentBackwards { before: acked, now }
            }
            Lie::GarbageRange(which) => {
                match GARBAGE_RANGES[which % GARBAGE_RANGES.len()] {
                    Some(value) => {
                        let value = HeaderValue::from_bytes(value).expect("header bytes");
                        response = response.header(http::header::RANGE, value);
                    }
                    None => {
                        response = response
                            .header(http::header::RANGE, "bytes=0-0")
                            .header(http::header::RANGE, "bytes=0-0");
                    }
                }
                ProtocolViolation::MalformedRange
            }
            Lie::OddStatus(status) => {
                response = response.status(status);
                ProtocolViolation::UnexpectedStatus(
                    StatusCode::from_u16(status).expect("valid status"),
                )
            }
            Lie::ForeignCompletion { proof } => {
                let total = resumed_total.unwrap_or(size);
                let status = self.created_status();
                let s = &mut self.sessions[i];
                // Other bytes of the source's length (the source is noise: these are not it).
                s.stored = (0..total).map(|b| (b % 7) as u8).collect();
                s.total = Some(total);
                s.checksums = None;
                s.completed = Some(status);
                let response = match proof {
                    0 => Response::builder().status(status).body(Bytes::new()),
                    1 => Response::builder()
                        .status(status)
                        .header("x-goog-stored-content-length", total.to_string())
                        .body(Bytes::new()),
                    2 => self.object_response(i, status, false, None).map(|mut r| {
                        r.headers_mut()
                            .insert("x-goog-stored-content-length", HeaderValue::from(total));
                        r
                    }),
                    _ => self.object_response(i, status, true, None),
                };
                return self.lie_reply(Some(i), fate, response, Expect::Integrity);
            }
            _ => {
                // CompleteEarly: an object resource that looks entirely plausible.
                let status = self.created_status();
                let response = self.object_response(i, status, true, None);
                return self.lie_reply(Some(i), fate, response, Expect::PrematureCompletion);
            }
        };
        let response = response.body(Bytes::new());
        self.lie_reply(Some(i), fate, response, Expect::Exact(expect.into()))
    }

    /// 308 with the truthful `Range` (G5), or 200 + override when asked (G11).
    fn progress(&mut self, i: usize, fate: Fate, headers: &HeaderMap) -> Reply {
        // The client learns what the session holds: its bound is what it sent again.
        self.resumed_client = false;
        let stored = self.sessions[i].stored.len() as u64;
        let no_308 = self.knobs.honour_no_308
            && headers.get("x-guploader-no-308").map(HeaderValue::as_bytes) == Some(b"yes");
        let mut response = if no_308 {
            Response::builder()
                .status(200)
                .header("x-http-status-code-override", "308")
        } else {
            Response::builder().status(308)
        };
        // G5: no Range means nothing is stored.
        if stored > 0 {
            response = response.header(http::header::RANGE, format!("bytes=0-{}", stored - 1));
        }
        self.last_ack = Some((i, self.sessions[i].acked));
        self.sessions[i].acked = stored;
        self.reply(Some(i), fate, response.body(Bytes::new()))
    }

    // ---- state ----

    fn create(&mut self, json_api: bool, total: Option<u64>) -> usize {
        let n = self.sessions.len();
        let key = if json_api {
            format!("/upload/storage/v1/b/bucket/o?uploadType=resumable&upload_id=sess-{n}")
        } else {
            format!("/upload/session?upload_id=sess-{n}")
        };
        self.sessions.push(Session {
            key,
            json_api,
            stored: Vec::new(),
            total,
            completed: None,
            client_sent: 0,
            acked: 0,
            checksums: None,
        });
        n
    }

    fn find(&self, uri: &http::Uri) -> Option<usize> {
        if uri.scheme_str() != Some("https")
            || uri.authority().map(|a| a.as_str()) != Some("sim.example")
        {
            return None;
        }
        let key = uri.path_and_query()?.as_str();
        self.sessions.iter().position(|s| s.key == key)
    }

    /// G4/G5 checks of a session request against what the server holds.
    fn check_chunk(&mut self, i: usize, range: Option<(u64, u64)>, total: Option<u64>) {
        let s = &self.sessions[i];
        let stored = s.stored.len() as u64;
        let mut problems = Vec::new();
        if let (Some(t), Some(before)) = (total, s.total)
            && t != before
        {
            problems.push("the declared total changed (G4)");
        }
        if let Some((a, end)) = range {
            if total.is_some_and(|t| end > t) {
                problems.push("a chunk reaches past the declared total (G4)");
            }
            if total != Some(end) && (end - a) % GRANULE != 0 {
                problems.push("a non-final chunk is not a multiple of 256 KiB (G4)");
            }
            if a > stored && s.completed.is_none() {
                problems.push("a chunk starts past the persisted offset: a gap (G5)");
            }
            if a < s.acked {
                problems.push("a chunk re-sends bytes the server acknowledged (G5)");
            }
        }
        for p in problems {
            self.violation(p);
        }
    }

    /// How many bytes of `a..end` the server keeps.
    fn kept(&self, persist: Persist, a: u64, end: u64, total: Option<u64>) -> u64 {
        let len = end - a;
        match persist {
            Persist::All => len,
            Persist::Nothing => 0,
            Persist::Prefix { per_mille } => len * u64::from(per_mille.min(1000)) / 1000,
            Persist::Granules { per_mille } => {
                let reach = a + len * u64::from(per_mille.min(1000)) / 1000;
                if reach == end && total == Some(end) {
                    len
                } else {
                    (reach / GRANULE * GRANULE).saturating_sub(a)
                }
            }
        }
    }

    /// Appends the part of `bytes` (which start at object offset `a`) beyond what is stored.
    fn store(&mut self, i: usize, a: u64, bytes: &[u8]) {
        let stored = self.sessions[i].stored.len() as u64;
        if a > stored {
            return; // a gap: nothing can be appended (reported by `check_chunk`)
        }
        let overlap = ((stored - a) as usize).min(bytes.len());
        if self.sessions[i].stored[a as usize..a as usize + overlap] != bytes[..overlap] {
            self.violation("a re-sent byte differs from the one stored");
        }
        self.sessions[i].stored.extend_from_slice(&bytes[overlap..]);
    }

    /// Completes the session once the whole declared object is stored, checking the client's
    /// `x-goog-hash` as GCS does (G7).
    fn maybe_complete(&mut self, i: usize, headers: &HeaderMap) {
        let s = &self.sessions[i];
        if s.completed.is_some() || s.total != Some(s.stored.len() as u64) {
            return;
        }
        let (crc, md5) = self.checksums(i);
        for value in headers.get_all("x-goog-hash") {
            for part in value.to_str().unwrap_or("").split(',') {
                let ok = match part.trim().split_once('=') {
                    Some(("crc32c", v)) => v == BASE64.encode(crc.to_be_bytes()),
                    Some(("md5", v)) => md5.is_none_or(|m| v == BASE64.encode(m)),
                    _ => false,
                };
                if !ok {
                    self.violation("x-goog-hash does not match the stored object (G7)");
                }
            }
        }
        let status = self.created_status();
        self.sessions[i].completed = Some(status);
    }

    fn checksums(&mut self, i: usize) -> (u32, Option<[u8; 16]>) {
        let report_md5 = self.knobs.report_md5;
        let s = &mut self.sessions[i];
        match s.checksums {
            Some((len, crc, md5)) if len == s.stored.len() => (crc, md5),
            _ => {
                let md5 = report_md5.then(|| md5::Md5::digest(&s.stored).into());
                let crc = crc32c::crc32c(&s.stored);
                s.checksums = Some((s.stored.len(), crc, md5));
                (crc, md5)
            }
        }
    }

    fn wants_json(&self, i: usize) -> bool {
        match self.knobs.object_json {
            ObjectJson::ByApi => self.sessions[i].json_api,
            ObjectJson::Always => true,
            ObjectJson::Never => false,
        }
    }

    /// 200/201 with the object resource (G7) or, without JSON, `x-goog-hash` headers; `lie`
    /// falsifies one field.
    fn object_response(
        &mut self,
        i: usize,
        status: StatusCode,
        json: bool,
        lie: Option<Lie>,
    ) -> Result<Response<Bytes>, http::Error> {
        let (crc, md5) = self.checksums(i);
        let s = &self.sessions[i];
        let size = s.stored.len() as u64;
        let mut object_crc = crc;
        let mut header_crc = crc;
        let mut object_md5 = md5;
        let mut header_md5 = md5;
        let mut object_size = size;
        match lie {
            Some(Lie::WrongSize { delta, bigger }) => object_size = wrong_size(size, delta, bigger),
            Some(Lie::WrongCrc32c { xor, in_header }) => {
                if in_header {
                    header_crc ^= xor.max(1);
                } else {
                    object_crc ^= xor.max(1);
                }
            }
            Some(Lie::WrongMd5 { in_header }) => {
                let mut wrong = md5.unwrap_or([0; 16]);
                wrong[0] ^= 0x5a;
                if in_header {
                    header_md5 = Some(wrong);
                } else {
                    object_md5 = Some(wrong);
                }
            }
            _ => {}
        }
        let mut response = Response::builder().status(status);
        let in_header = matches!(
            lie,
            Some(
                Lie::WrongCrc32c {
                    in_header: true,
                    ..
                } | Lie::WrongMd5 { in_header: true }
            )
        );
        // GCS sends one x-goog-hash header per checksum.
        if !json || in_header {
            response = response.header(
                "x-goog-hash",
                format!("crc32c={}", BASE64.encode(header_crc.to_be_bytes())),
            );
            if let Some(m) = header_md5 {
                response = response.header("x-goog-hash", format!("md5={}", BASE64.encode(m)));
            }
        }
        if !json {
            return response.body(Bytes::new());
        }
        let size_value = if self.knobs.numeric_size {
            serde_json::json!(object_size)
        } else {
            serde_json::json!(object_size.to_string())
        };
        let mut object = serde_json::json!({
            "kind": "storage#object",
            "id": format!("bucket/object.bin/{}", 1_700_000_000_000_000u64 + i as u64),
            "name": "object.bin",
            "bucket": "bucket",
            "generation": (1_700_000_000_000_000u64 + i as u64).to_string(),
            "contentType": "application/octet-stream",
            "size": size_value,
            "crc32c": BASE64.encode(object_crc.to_be_bytes()),
            "mediaLink": format!("{ORIGIN}/download/storage/v1/b/bucket/o/object.bin?alt=media"),
        });
        if let Some(m) = object_md5 {
            object["md5Hash"] = serde_json::json!(BASE64.encode(m));
        }
        response
            .header(
                http::header::CONTENT_TYPE,
                "application/json; charset=UTF-8",
            )
            .body(Bytes::from(object.to_string()))
    }

    // ---- fates and lies ----

    fn next_fate(&mut self, on_session: bool) -> Fate {
        if let Some(fate) = self.script.pop_front() {
            return fate;
        }
        let k = self.knobs;
        let rng = &mut self.rng;
        if rng.chance(k.refuse) {
            return Fate::Refuse(rng.pick(&[400, 403, 412]));
        }
        if on_session && rng.chance(k.gone) {
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
            let per_mille = rng.below(1001) as u16;
            match rng.below(3) {
                0 => Persist::Nothing,
                1 if k.arbitrary_prefix => Persist::Prefix { per_mille },
                _ => Persist::Granules { per_mille },
            }
        } else {
            Persist::All
        };
        if rng.chance(k.drop_after) {
            let failure = rng.pick(&[
                TransportFailure::Reset,
                TransportFailure::Timeout,
                TransportFailure::TruncatedResponse,
            ]);
            return Fate::DropAfter { failure, persist };
        }
        if rng.chance(k.status) {
            let status = rng.pick(&RETRYABLE);
            let retry_after = rng.chance(k.retry_after).then(|| {
                let secs = rng.below(k.max_retry_after_secs + 1);
                if rng.chance(500) {
                    RetryAfter::Seconds(secs)
                } else {
                    RetryAfter::Date(secs)
                }
            });
            return Fate::Status {
                status,
                persist,
                retry_after,
            };
        }
        Fate::Answer(persist)
    }

    /// The armed lie, if `applicable` says it fits here and its skips are used up.
    fn lie_now(&mut self, applicable: impl Fn(Lie) -> bool) -> Option<Lie> {
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

    fn created_status(&mut self) -> StatusCode {
        // G2: either start, and a completion, may answer 200 or 201.
        if self.rng.chance(500) {
            StatusCode::OK
        } else {
            StatusCode::CREATED
        }
    }

    fn violation(&mut self, what: &str) {
        self.violations
            .push(format!("request {}: {what}", self.requests));
    }

    // ---- replies ----

    fn reply(
        &mut self,
        session: Option<usize>,
        fate: Fate,
        response: Result<Response<Bytes>, http::Error>,
    ) -> Reply {
        let response = response.expect("the simulator builds valid responses");
        let completion = session.is_some()
            && matches!(response.status().as_u16(), 200 | 201)
            && !response
                .headers()
                .contains_key("x-http-status-code-override");
        let object_json = completion && !response.body().is_empty();
        Reply {
            outcome: Ok(response),
            fate,
            session,
            lie: None,
            retry_after: None,
            completion,
            object_json,
        }
    }

    fn lie_reply(
        &mut self,
        session: Option<usize>,
        fate: Fate,
        response: Result<Response<Bytes>, http::Error>,
        expect: Expect,
    ) -> Reply {
        self.told = Some(expect.clone());
        let mut reply = self.reply(session, fate, response);
        reply.lie = Some(expect);
        reply
    }

    fn plain(&mut self, session: Option<usize>, fate: Fate, status: u16) -> Reply {
        let body = Bytes::from(format!(
            "{{\"error\":{{\"code\":{status},\"message\":\"simulated {status}\"}}}}"
        ));
        let response = Response::builder()
            .status(status)
            .header(
                http::header::CONTENT_TYPE,
                "application/json; charset=UTF-8",
            )
            .body(body);
        self.reply(session, fate, response)
    }

    fn retryable(
        &mut self,
        session: Option<usize>,
        fate: Fate,
        status: u16,
        retry_after: Option<RetryAfter>,
    ) -> Reply {
        let mut response = Response::builder().status(status);
        // The Date header is the server's own clock: any fixed point will do.
        let date = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000 + self.requests);
        match retry_after {
            Some(RetryAfter::Seconds(s)) => {
                response = response.header("retry-after", s.to_string())
            }
            Some(RetryAfter::Date(s)) => {
                response = response
                    .header(http::header::DATE, httpdate::fmt_http_date(date))
                    .header(
                        "retry-after",
                        httpdate::fmt_http_date(date + Duration::from_secs(s)),
                    );
            }
            None => {}
        }
        let mut reply = self.reply(session, fate, response.body(Bytes::new()));
        reply.retry_after = retry_after.map(RetryAfter::duration);
        reply
    }

    fn failure(&mut self, session: Option<usize>, fate: Fate, failure: TransportFailure) -> Reply {
        Reply {
            outcome: Err(failure),
            fate,
            session,
            lie: None,
            retry_after: None,
            completion: false,
            object_json: false,
        }
    }
}

/// The size a [`Lie::WrongSize`] reports for an object of `size` bytes (never `size`).
fn wrong_size(size: u64, delta: u64, bigger: bool) -> u64 {
    let delta = delta.max(1);
    if bigger || size == 0 {
        size.saturating_add(delta)
    } else {
        size - delta.min(size)
    }
}

/// A half-open byte range `(start, end)` of the object.
pub type Span = (u64, u64);

/// Parses a request's `Content-Range` (G4, G6): `bytes A-B/T`, `bytes A-B/*`, `bytes */T`,
/// `bytes */*`, into the half-open range (if any) and the total (if declared). Written here
/// rather than taken from the core, so the simulator checks the core instead of agreeing with it.
pub fn parse_content_range(value: &[u8]) -> Option<(Option<Span>, Option<u64>)> {
    let text = std::str::from_utf8(value).ok()?.strip_prefix("bytes ")?;
    let (span, total) = text.split_once('/')?;
    let number = |s: &str| -> Option<u64> {
        (!s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()))
            .then(|| s.parse().ok())
            .flatten()
    };
    let total = if total == "*" {
        None
    } else {
        Some(number(total)?)
    };
    let range = if span == "*" {
        None
    } else {
        let (a, b) = span.split_once('-')?;
        let (a, b) = (number(a)?, number(b)?);
        if b < a {
            return None;
        }
        Some((a, b + 1))
    };
    Some((range, total))
}
