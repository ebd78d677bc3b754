//! Property tests: `TonUpload` driven against thousands of random behaviours of a simulated TON
//! server (rules T1–T6 in `docs/protocols`): persistence of random multiples of the minimum chunk
//! size, both `Range` forms and both readings of N (T5), 408/429/5xx bursts with and without
//! `Retry-After`, requests lost before or after the server stored them, uploads that expire or
//! vanish, refusals, process restarts from the saved state, lies, and links of random speed.
//!
//! The server is *virtual*: it never holds bytes. The driver sends `source[body.source]`, so
//! the server checks that each chunk's `Content-Range` names exactly the body's source range and
//! starts no later than what it holds; then what it holds is exactly the source's first `held`
//! bytes, and "holds exactly the source" is `held == total` and complete. That lets a case use
//! chunks up to the 64 MiB cap without allocating them.
//!
//! What every case checks:
//! 1. `Done(Ok(c))` only if the server's upload at `c.location` holds exactly the source, with
//!    `c.size == total`.
//! 2. Otherwise `Done(Err(e))` with the typed error the last exchange calls for:
//!    `RetriesExhausted` (right attempt count and last cause), `SessionGone`, `Expired` (exactly
//!    when the server's `Date` is past `Expires`), `Server` (the refusal's status), or for a lie
//!    the matching `Protocol` violation. An honest server never causes a `Protocol` error.
//! 3. Bounded work: per process, at most `max_attempts + 1` requests in a row without progress,
//!    at most `2 + total/min` progress events; a hard cap backstops everything.
//! 4. No panic (proptest reports one as a failure).
//! 5. Every chunk: `PUT` to the location, `Content-Type`, `Content-Range` = body range,
//!    `Content-Length`; starts at `persisted()`, never past what the server holds; at most max,
//!    under 64 MiB, a multiple of min unless final (T4); its size is exactly what the adaptive
//!    rule gives (module docs of `ton`), and after a rate was measured it uploads in ≤ 20 s at
//!    the link's speed unless it is one minimum chunk.
//! 6. `persisted()` never exceeds what the server holds (T5: no byte is skipped).
//! 7. A request is handed out once (a poll while it is in flight is `Idle`), a wait is the same
//!    on every poll; after `Done`, polls repeat the outcome and `handle_*` are
//!    `UsageError::Finished`.

use std::collections::VecDeque;
use std::ops::Range;
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use http::{HeaderValue, Method, Request, Response, StatusCode};
use proptest::prelude::*;
use proptest::test_runner::TestCaseError;
use resumable_core::range::parse_content_range;
use resumable_core::ton::{TonCompletion, TonConfig, TonResumeState, TonStart, TonUpload};
use resumable_core::{
    Action, Error, ProtocolViolation, RetryCause, RetryPolicy, TransportFailure, Upload, UsageError,
};

const ORIGIN: &str = "https://ton.sim";
const BUCKET_PATH: &str = "/1.1/ton/bucket/sim";
const CHUNK_LIMIT: u64 = 64 << 20;
const TARGET: Duration = Duration::from_secs(20);
const RETRYABLE: [u16; 6] = [408, 429, 500, 502, 503, 504];
/// A backstop far above the stated bound, so a runaway loop fails instead of hanging.
const HARD_CAP: u64 = 50_000;
/// The simulated wall clock at the driver's first instant (a whole second).
const WALL_START_SECS: u64 = 1_415_000_000;

// ---------------------------------------------------------------------------------------------
// Cases
// ---------------------------------------------------------------------------------------------

/// How much of a chunk's body the server keeps.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Persist {
    All,
    Nothing,
    /// `per_mille`/1000 of the body, rounded down to a multiple of min from the start (T5).
    Part(u16),
}

/// What the server does with one request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Fate {
    /// Process it and answer truthfully (T3, T5, T6).
    Answer(Persist),
    /// Process it, then answer a retryable status (T6).
    Status {
        status: u16,
        persist: Persist,
        retry_after: Option<u64>,
    },
    /// The request never reaches the server.
    DropBefore(TransportFailure),
    /// The server processes it but the response is lost.
    DropAfter(TransportFailure, Persist),
    /// 404 or 410: the upload is deleted (on a start: the bucket is unknown).
    Gone(u16),
    /// A final client error.
    Refuse(u16),
}

/// One lie, told at the first chance after skipping some.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Lie {
    // T3
    NoMinChunk,
    NoMaxChunk,
    ZeroMinChunk,
    MinAboveMax,
    GarbageMaxChunk,
    NoStartLocation,
    // T5
    RangeBeyondSent,
    RangeNotFromZero,
    GarbageRange(usize),
    RangeBackwards,
    RangeUnreadable,
    // T6
    PrematureCompletion,
    NoFinalLocation,
    UnexpectedStatus,
}

impl Lie {
    fn expected(self, error: &Error) -> bool {
        use ProtocolViolation as V;
        let Error::Protocol(v) = error else {
            return false;
        };
        match self {
            Lie::NoMinChunk
            | Lie::NoMaxChunk
            | Lie::ZeroMinChunk
            | Lie::MinAboveMax
            | Lie::GarbageMaxChunk => matches!(v, V::ChunkLimits(_)),
            Lie::NoStartLocation | Lie::NoFinalLocation => *v == V::MissingLocation,
            Lie::RangeBeyondSent => matches!(v, V::RangeBeyondSent { .. }),
            Lie::RangeNotFromZero => matches!(v, V::RangeNotFromZero { .. }),
            Lie::GarbageRange(_) => *v == V::MalformedRange,
            Lie::RangeBackwards => matches!(v, V::PersistedWentBackwards { .. }),
            Lie::RangeUnreadable => matches!(v, V::RangeUnreadable { .. }),
            Lie::PrematureCompletion => matches!(v, V::PrematureCompletion { .. }),
            Lie::UnexpectedStatus => *v == V::UnexpectedStatus(StatusCode::FOUND),
        }
    }
}

const GARBAGE_RANGES: [&[u8]; 7] = [
    b"0-",
    b"abc",
    b"bytes=0-1,3-4",
    b"0-99999999999999999999999",
    b"-5",
    b"bytes 0-5",
    b"\xff0-1",
];

/// What a completed upload answers to a re-sent final chunk (its 201 was lost).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum AfterComplete {
    CreatedAgain,
    Gone,
}

#[derive(Clone, Debug)]
struct Case {
    single: bool,
    total: u64,
    min: u64,
    max: u64,
    preferred: u64,
    adaptive: bool,
    /// Bytes per second of the link; 0: instant (too fast to measure).
    bytes_per_sec: u64,
    latency_ms: u64,
    max_attempts: u32,
    jitter_ms: u64,
    retry_deadline_s: u64,
    seed: u64,
    /// `Range` N is the last byte (`0-(held−1)`) rather than the length (`0-held`) (T5).
    inclusive: bool,
    /// `bytes=` prefix: 0 never, 1 always, 2 alternating (T5).
    prefix: u8,
    dated_start: bool,
    dated_gone: bool,
    utc: bool,
    send_expires: bool,
    lifetime_s: u64,
    after_complete: AfterComplete,
    fates: Vec<Fate>,
    crash_at: Option<u32>,
    lie: Option<(Lie, u32)>,
}

fn persist() -> impl Strategy<Value = Persist> {
    prop_oneof![
        3 => Just(Persist::All),
        2 => Just(Persist::Nothing),
        4 => (1u16..1000).prop_map(Persist::Part),
    ]
}

fn failure() -> impl Strategy<Value = TransportFailure> {
    prop_oneof![
        Just(TransportFailure::Connect),
        Just(TransportFailure::Reset),
        Just(TransportFailure::Timeout),
        Just(TransportFailure::TruncatedResponse),
        Just(TransportFailure::Other),
    ]
}

fn fate(final_ones: bool) -> BoxedStrategy<Fate> {
    let retryable = (
        prop::sample::select(&RETRYABLE[..]),
        persist(),
        prop::option::weighted(0.3, 0u64..90),
    )
        .prop_map(|(status, persist, retry_after)| Fate::Status {
            status,
            persist,
            retry_after,
        });
    let base = prop_oneof![
        6 => persist().prop_map(Fate::Answer),
        3 => retryable,
        2 => failure().prop_map(Fate::DropBefore),
        2 => (failure(), persist()).prop_map(|(f, p)| Fate::DropAfter(f, p)),
    ];
    if final_ones {
        prop_oneof![
            20 => base,
            1 => prop_oneof![Just(404u16), Just(410)].prop_map(Fate::Gone),
            1 => prop_oneof![Just(400u16), Just(401), Just(403), Just(413)].prop_map(Fate::Refuse),
        ]
        .boxed()
    } else {
        base.boxed()
    }
}

fn lie() -> impl Strategy<Value = Lie> {
    prop_oneof![
        Just(Lie::NoMinChunk),
        Just(Lie::NoMaxChunk),
        Just(Lie::ZeroMinChunk),
        Just(Lie::MinAboveMax),
        Just(Lie::GarbageMaxChunk),
        Just(Lie::NoStartLocation),
        Just(Lie::RangeBeyondSent),
        Just(Lie::RangeNotFromZero),
        (0..GARBAGE_RANGES.len()).prop_map(Lie::GarbageRange),
        Just(Lie::RangeBackwards),
        Just(Lie::RangeUnreadable),
        Just(Lie::PrematureCompletion),
        Just(Lie::NoFinalLocation),
        Just(Lie::UnexpectedStatus),
    ]
}

prop_compose! {
    /// Sizes: mostly small (min 1–64 KiB), sometimes large (min up to 8 MiB, max past 64 MiB)
    /// so that the 64 MiB cap binds. Returns (single, total, min, max, preferred).
    fn sizes()(
        large in prop::bool::weighted(0.2),
        single in prop::bool::weighted(0.1),
        min_small in 1024u64..=65536,
        min_large in (1u64..=8).prop_map(|m| m << 20),
        max_units in 1u64..=24,
        max_extra in 0u64..1000,
        total_frac in 1u64..=40_000,
        preferred_frac in 1u64..=3000,
    ) -> (bool, u64, u64, u64, u64) {
        let min = if large { min_large } else { min_small };
        let max = min * max_units + max_extra * min / 1000;
        // Up to 40 minimum chunks (a single-request file stays under 64 MiB).
        let mut total = (min * total_frac / 1000).max(1);
        if single {
            total = total.min(CHUNK_LIMIT - 1);
        }
        let preferred = (max * preferred_frac / 1000).max(1);
        (single, total, min, max, preferred)
    }
}

prop_compose! {
    fn link()(
        adaptive in prop::bool::weighted(0.8),
        instant in prop::bool::weighted(0.1),
        bytes_per_sec in (16u64..=65536).prop_map(|k| k * 1024),
        latency_ms in 0u64..500,
    ) -> (bool, u64, u64) {
        (adaptive, if instant { 0 } else { bytes_per_sec }, latency_ms)
    }
}

prop_compose! {
    fn server_style()(
        inclusive in any::<bool>(),
        prefix in 0u8..3,
        dated_start in prop::bool::weighted(0.8),
        dated_gone in prop::bool::weighted(0.7),
        utc in any::<bool>(),
        send_expires in prop::bool::weighted(0.9),
        short_life in prop::bool::weighted(0.2),
        lifetime_s in 1u64..=120,
        gone_after in prop::bool::weighted(0.3),
    ) -> (bool, u8, bool, bool, bool, bool, u64, AfterComplete) {
        let lifetime_s = if short_life { lifetime_s } else { 7 * 24 * 3600 };
        let after = if gone_after { AfterComplete::Gone } else { AfterComplete::CreatedAgain };
        (inclusive, prefix, dated_start, dated_gone, utc, send_expires, lifetime_s, after)
    }
}

prop_compose! {
    fn base_case(final_fates: bool, max_fates: usize)(
        (single, total, min, max, preferred) in sizes(),
        (adaptive, bytes_per_sec, latency_ms) in link(),
        max_attempts in 0u32..=6,
        jitter_ms in 0u64..=1000,
        seed in any::<u64>(),
        style in server_style(),
        fates in prop::collection::vec(fate(final_fates), 0..=max_fates),
        crash_at in prop::option::weighted(0.2, 0u32..30),
    ) -> Case {
        let (inclusive, prefix, dated_start, dated_gone, utc, send_expires, lifetime_s,
            after_complete) = style;
        Case {
            single, total, min, max, preferred, adaptive, bytes_per_sec, latency_ms,
            max_attempts, jitter_ms, retry_deadline_s: 600, seed, inclusive, prefix,
            dated_start, dated_gone, utc, send_expires, lifetime_s, after_complete,
            fates, crash_at, lie: None,
        }
    }
}

fn honest_case() -> impl Strategy<Value = Case> {
    base_case(true, 40)
}

fn lying_case() -> impl Strategy<Value = Case> {
    (base_case(true, 6), lie(), 0u32..6).prop_map(|(mut case, lie, skip)| {
        // A start is usually answered once: tell a start's lie at the first chance.
        let at_start = matches!(
            lie,
            Lie::NoMinChunk
                | Lie::NoMaxChunk
                | Lie::ZeroMinChunk
                | Lie::MinAboveMax
                | Lie::GarbageMaxChunk
                | Lie::NoStartLocation
        );
        case.lie = Some((lie, if at_start { 0 } else { skip }));
        case
    })
}

/// Faults that the retry budget covers: no refusals or deletions, at most `max_attempts`
/// faults in all, long-lived uploads, a completed upload that answers 201 again, generous
/// deadlines. The upload must succeed.
fn healing_case() -> impl Strategy<Value = Case> {
    (base_case(false, 8), 1u32..=8).prop_map(|(mut case, attempts)| {
        case.max_attempts = attempts.max(case.fates.len() as u32);
        case.lifetime_s = 7 * 24 * 3600;
        case.after_complete = AfterComplete::CreatedAgain;
        case.retry_deadline_s = 24 * 3600;
        case
    })
}

// ---------------------------------------------------------------------------------------------
// The simulated server
// ---------------------------------------------------------------------------------------------

#[derive(Debug)]
struct ServerUpload {
    total: u64,
    held: u64,
    /// The most this server has acknowledged in a 308.
    reported: u64,
    complete: bool,
    deleted: bool,
    expires_secs: u64,
}

#[derive(Debug)]
struct Object {
    path: String,
    size: u64,
}

/// How the last request ended, from the driver's point of view: what the outcome must be if
/// it is the last one.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Event {
    Progress,
    Retryable(RetryCause),
    Gone {
        status: u16,
        expired: bool,
        dated: bool,
    },
    Refused(u16),
    Lied(Lie),
}

struct Server<'c> {
    case: &'c Case,
    fates: VecDeque<Fate>,
    lie: Option<(Lie, u32)>,
    uploads: Vec<ServerUpload>,
    objects: Vec<Object>,
    violations: Vec<String>,
    /// The furthest byte end the client has handed out, per upload (the driver tells).
    handed_out: Vec<u64>,
    toggle: bool,
    rng: u64,
}

enum Reply {
    Response(Response<Bytes>),
    Failure(TransportFailure),
}

impl<'c> Server<'c> {
    fn new(case: &'c Case) -> Self {
        Server {
            case,
            fates: case.fates.iter().copied().collect(),
            lie: case.lie,
            uploads: Vec::new(),
            objects: Vec::new(),
            violations: Vec::new(),
            handed_out: Vec::new(),
            toggle: false,
            rng: case.seed ^ 0xA5A5_5A5A_1234_5678,
        }
    }

    fn random(&mut self) -> u64 {
        self.rng = self.rng.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.rng;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn next_fate(&mut self) -> Fate {
        self.fates.pop_front().unwrap_or(Fate::Answer(Persist::All))
    }

    /// Whether to tell the lie now, if `applies`.
    fn lie_now(&mut self, applies: impl Fn(Lie) -> bool) -> Option<Lie> {
        let (lie, skip) = self.lie?;
        if !applies(lie) {
            return None;
        }
        if skip > 0 {
            self.lie = Some((lie, skip - 1));
            return None;
        }
        self.lie = None;
        Some(lie)
    }

    fn violation(&mut self, what: String) {
        self.violations.push(what);
    }

    fn date(&self, wall: SystemTime) -> String {
        let text = httpdate::fmt_http_date(wall);
        if self.case.utc {
            text.replace("GMT", "UTC")
        } else {
            text
        }
    }

    fn upload_path(id: usize) -> String {
        format!("{BUCKET_PATH}/{id}.bin?resumable=true&resumeId={id}")
    }

    fn upload_at(uri: &http::Uri) -> Option<usize> {
        let query = uri.query()?;
        let id = query.split('&').find_map(|p| p.strip_prefix("resumeId="))?;
        let id: usize = id.parse().ok()?;
        (uri.path() == format!("{BUCKET_PATH}/{id}.bin")).then_some(id)
    }

    /// The driver handed out a chunk ending at `end` for upload `id`.
    fn note_handed_out(&mut self, id: usize, end: u64) {
        if let Some(h) = self.handed_out.get_mut(id) {
            *h = (*h).max(end);
        }
    }

    fn handle(
        &mut self,
        request: &Request<()>,
        body: Range<u64>,
        wall: SystemTime,
    ) -> (Reply, Event) {
        let uri = request.uri();
        if uri.scheme_str() != Some("https")
            || uri.authority().map(|a| a.as_str()) != Some("ton.sim")
        {
            self.violation(format!("request to another host: {uri}"));
        }
        match *request.method() {
            Method::POST if uri.path() == BUCKET_PATH => {
                if uri.query() == Some("resumable=true") {
                    self.start(request, body, wall)
                } else {
                    self.single(request, body)
                }
            }
            Method::PUT => self.chunk(request, body, wall),
            _ => {
                self.violation(format!("unexpected request {} {uri}", request.method()));
                (status_reply(400, vec![]), Event::Refused(400))
            }
        }
    }

    fn check_header(&mut self, request: &Request<()>, name: &str, want: Option<&str>) {
        let got = request.headers().get(name).and_then(|v| v.to_str().ok());
        if got != want {
            self.violation(format!("{name}: {got:?}, want {want:?}"));
        }
    }

    /// T2 → T3.
    fn start(
        &mut self,
        request: &Request<()>,
        body: Range<u64>,
        wall: SystemTime,
    ) -> (Reply, Event) {
        let total = self.case.total.to_string();
        self.check_header(request, "content-length", Some("0"));
        self.check_header(request, "content-type", Some("video/mp4"));
        self.check_header(request, "x-ton-content-type", Some("video/mp4"));
        self.check_header(request, "x-ton-content-length", Some(&total));
        self.check_header(request, "authorization", Some("OAuth sim"));
        if !body.is_empty() {
            self.violation("start with a body".into());
        }
        let fate = self.next_fate();
        let create = |s: &mut Self| {
            let now_secs = secs(wall);
            s.uploads.push(ServerUpload {
                total: s.case.total,
                held: 0,
                reported: 0,
                complete: false,
                deleted: false,
                expires_secs: now_secs + s.case.lifetime_s,
            });
            s.handed_out.push(0);
            s.uploads.len() - 1
        };
        match fate {
            Fate::Answer(_) => {
                let id = create(self);
                let lie = self.lie_now(|l| {
                    matches!(
                        l,
                        Lie::NoMinChunk
                            | Lie::NoMaxChunk
                            | Lie::ZeroMinChunk
                            | Lie::MinAboveMax
                            | Lie::GarbageMaxChunk
                            | Lie::NoStartLocation
                    )
                });
                let mut min = self.case.min.to_string();
                let mut max = self.case.max.to_string();
                let mut location = Some(Self::upload_path(id));
                match lie {
                    Some(Lie::ZeroMinChunk) => min = "0".into(),
                    Some(Lie::MinAboveMax) => min = (self.case.max + 1).to_string(),
                    Some(Lie::GarbageMaxChunk) => max = "lots".into(),
                    Some(Lie::NoStartLocation) => location = None,
                    _ => {}
                }
                let mut headers = Vec::new();
                if let Some(l) = location {
                    headers.push(("location".to_owned(), l));
                }
                if lie != Some(Lie::NoMinChunk) {
                    headers.push(("x-ton-min-chunk-size".into(), min));
                }
                if lie != Some(Lie::NoMaxChunk) {
                    headers.push(("x-ton-max-chunk-size".into(), max));
                }
                if self.case.send_expires {
                    let expires =
                        SystemTime::UNIX_EPOCH + Duration::from_secs(self.uploads[id].expires_secs);
                    headers.push(("expires".into(), self.date(expires)));
                }
                if self.case.dated_start {
                    headers.push(("date".into(), self.date(wall)));
                }
                headers.push(("content-length".into(), "0".into()));
                let event = lie.map_or(Event::Progress, Event::Lied);
                (status_reply(201, headers), event)
            }
            Fate::Status {
                status,
                retry_after,
                ..
            } => retryable_reply(status, retry_after),
            Fate::DropBefore(f) => (
                Reply::Failure(f),
                Event::Retryable(RetryCause::Transport(f)),
            ),
            Fate::DropAfter(f, _) => {
                create(self);
                (
                    Reply::Failure(f),
                    Event::Retryable(RetryCause::Transport(f)),
                )
            }
            // On the start, 404 is an unknown bucket: a plain refusal.
            Fate::Gone(s) | Fate::Refuse(s) => (status_reply(s, vec![]), Event::Refused(s)),
        }
    }

    /// T1.
    fn single(&mut self, request: &Request<()>, body: Range<u64>) -> (Reply, Event) {
        let total = self.case.total;
        if !self.case.single {
            self.violation("single request in a resumable case".into());
        }
        self.check_header(request, "content-type", Some("video/mp4"));
        self.check_header(request, "content-length", Some(&total.to_string()));
        self.check_header(request, "authorization", Some("OAuth sim"));
        if body != (0..total) || total >= CHUNK_LIMIT {
            self.violation(format!("single request body {body:?} of {total}"));
        }
        let store = |s: &mut Self| {
            let path = format!("{BUCKET_PATH}/object-{}.bin", s.objects.len());
            s.objects.push(Object {
                path: path.clone(),
                size: body.end - body.start,
            });
            path
        };
        match self.next_fate() {
            Fate::Answer(_) => {
                let path = store(self);
                self.completion(path)
            }
            Fate::Status {
                status,
                persist,
                retry_after,
            } => {
                if persist != Persist::Nothing {
                    store(self);
                }
                retryable_reply(status, retry_after)
            }
            Fate::DropBefore(f) => (
                Reply::Failure(f),
                Event::Retryable(RetryCause::Transport(f)),
            ),
            Fate::DropAfter(f, _) => {
                store(self);
                (
                    Reply::Failure(f),
                    Event::Retryable(RetryCause::Transport(f)),
                )
            }
            Fate::Gone(s) | Fate::Refuse(s) => (status_reply(s, vec![]), Event::Refused(s)),
        }
    }

    /// A 201 + Location (T1, T6), or the lie about it.
    fn completion(&mut self, path: String) -> (Reply, Event) {
        let lie = self.lie_now(|l| l == Lie::NoFinalLocation);
        let headers = if lie.is_some() {
            vec![]
        } else {
            vec![("location".into(), path)]
        };
        (
            status_reply(201, headers),
            lie.map_or(Event::Progress, Event::Lied),
        )
    }

    /// T4 → T5/T6.
    fn chunk(
        &mut self,
        request: &Request<()>,
        body: Range<u64>,
        wall: SystemTime,
    ) -> (Reply, Event) {
        let Some(id) = Self::upload_at(request.uri()).filter(|&id| id < self.uploads.len()) else {
            self.violation(format!("PUT to an unknown upload {}", request.uri()));
            return (status_reply(404, vec![]), Event::Refused(404));
        };
        let (min, max, total) = (self.case.min, self.case.max, self.case.total);
        self.check_header(request, "content-type", Some("video/mp4"));
        self.check_header(request, "authorization", None);
        let len = body.end - body.start;
        self.check_header(request, "content-length", Some(&len.to_string()));
        let declared = request
            .headers()
            .get("content-range")
            .and_then(|v| parse_content_range(v.as_bytes()));
        match declared {
            Some(cr) if cr.range.as_ref() == Some(&body) && cr.total == Some(total) => {}
            other => self.violation(format!("Content-Range {other:?} for body {body:?}")),
        }
        if len == 0
            || len >= CHUNK_LIMIT
            || len > max
            || (body.end < total && !len.is_multiple_of(min))
        {
            self.violation(format!(
                "chunk {body:?} breaks min {min} / max {max} / 64 MiB"
            ));
        }
        let (held, complete) = (self.uploads[id].held, self.uploads[id].complete);
        if body.start > held && !complete {
            self.violation(format!("gap: chunk {body:?} but only {held} held"));
        }
        let upload = &self.uploads[id];

        // An expired upload is gone (T3 Expires), whatever the fate.
        let now_secs = secs(wall);
        if now_secs >= upload.expires_secs || upload.deleted {
            let expired = now_secs >= upload.expires_secs;
            let status = if self.random().is_multiple_of(2) {
                404
            } else {
                410
            };
            let mut headers = vec![];
            if self.case.dated_gone {
                headers.push(("date".into(), self.date(wall)));
            }
            // The client can tell expiry only from a Date and an Expires it was given.
            let dated = self.case.dated_gone && self.case.send_expires;
            return (
                status_reply(status, headers),
                Event::Gone {
                    status,
                    expired,
                    dated,
                },
            );
        }
        if upload.complete {
            // The 201 for the final chunk was lost and it came again.
            return match self.case.after_complete {
                AfterComplete::CreatedAgain => (
                    status_reply(
                        201,
                        vec![("location".into(), format!("{BUCKET_PATH}/{id}.bin"))],
                    ),
                    Event::Progress,
                ),
                AfterComplete::Gone => (
                    status_reply(404, vec![]),
                    Event::Gone {
                        status: 404,
                        expired: false,
                        dated: false,
                    },
                ),
            };
        }

        let fate = self.next_fate();
        let persist = match fate {
            Fate::Answer(p) | Fate::Status { persist: p, .. } | Fate::DropAfter(_, p) => Some(p),
            Fate::DropBefore(_) | Fate::Gone(_) | Fate::Refuse(_) => None,
        };
        let before = self.uploads[id].held;
        if let Some(p) = persist {
            self.store(id, body.clone(), p);
        }
        let progressed = self.uploads[id].held > self.uploads[id].reported;
        match fate {
            Fate::Answer(_) => self.progress_reply(id, body, progressed, before),
            Fate::Status {
                status,
                retry_after,
                ..
            } => retryable_reply(status, retry_after),
            Fate::DropBefore(f) | Fate::DropAfter(f, _) => (
                Reply::Failure(f),
                Event::Retryable(RetryCause::Transport(f)),
            ),
            Fate::Gone(s) => {
                self.uploads[id].deleted = true;
                let mut headers = vec![];
                if self.case.dated_gone {
                    headers.push(("date".into(), self.date(wall)));
                }
                let dated = self.case.dated_gone && self.case.send_expires;
                (
                    status_reply(s, headers),
                    Event::Gone {
                        status: s,
                        expired: false,
                        dated,
                    },
                )
            }
            Fate::Refuse(s) => (
                status_reply(s, vec![("content-type".into(), "application/json".into())])
                    .with_body(r#"{"errors":[{"code":1,"message":"refused"}]}"#),
                Event::Refused(s),
            ),
        }
    }

    fn store(&mut self, id: usize, body: Range<u64>, persist: Persist) {
        let min = self.case.min;
        let upload = &mut self.uploads[id];
        if body.start > upload.held {
            return; // a gap (already a violation): keep nothing
        }
        let kept_end = match persist {
            Persist::All => body.end,
            Persist::Nothing => body.start,
            Persist::Part(pm) => {
                let end = body.start + (body.end - body.start) * u64::from(pm) / 1000;
                end / min * min
            }
        };
        upload.held = upload.held.max(kept_end);
        if upload.held == upload.total {
            upload.complete = true;
        }
    }

    /// The truthful answer to a processed chunk, or the lie about it: 308 + Range (T5), or 201
    /// + Location once complete (T6).
    fn progress_reply(
        &mut self,
        id: usize,
        body: Range<u64>,
        progressed: bool,
        _before: u64,
    ) -> (Reply, Event) {
        let (min, total) = (self.case.min, self.case.total);
        let upload = &self.uploads[id];
        let (held, reported, complete) = (upload.held, upload.reported, upload.complete);
        let sent = self.handed_out.get(id).copied().unwrap_or(0);
        if complete {
            if let Some(lie) = self.lie_now(|l| l == Lie::UnexpectedStatus) {
                return (status_reply(302, vec![]), Event::Lied(lie));
            }
            return self.completion(format!("{BUCKET_PATH}/{id}.bin"));
        }
        let chunk_len = body.end - body.start;
        let lie = self.lie_now(|l| match l {
            Lie::RangeBeyondSent | Lie::RangeNotFromZero | Lie::GarbageRange(_) => true,
            Lie::UnexpectedStatus => true,
            Lie::RangeBackwards => reported >= min && body.start == reported,
            Lie::RangeUnreadable => chunk_len >= 4 && body.start == reported,
            Lie::PrematureCompletion => sent < total,
            _ => false,
        });
        let range: Option<Vec<u8>> = match lie {
            Some(Lie::UnexpectedStatus) => {
                return (
                    status_reply(302, vec![]),
                    Event::Lied(Lie::UnexpectedStatus),
                );
            }
            Some(Lie::PrematureCompletion) => {
                let headers = vec![("location".into(), format!("{BUCKET_PATH}/{id}.bin"))];
                return (
                    status_reply(201, headers),
                    Event::Lied(Lie::PrematureCompletion),
                );
            }
            Some(Lie::RangeBeyondSent) => {
                let n = sent + 1 + self.random() % (2 * min);
                Some(self.range_value(n))
            }
            Some(Lie::RangeNotFromZero) => {
                let start = 1 + self.random() % 100;
                Some(format!("{start}-{}", start + held).into_bytes())
            }
            Some(Lie::GarbageRange(i)) => Some(GARBAGE_RANGES[i].to_vec()),
            Some(Lie::RangeBackwards) => self.held_range(reported - min),
            // N and N+1 are 1 and 2 past a multiple of min: neither reading fits.
            Some(Lie::RangeUnreadable) => Some(self.range_value(reported + 1)),
            _ => self.held_range(held),
        };
        if let Some(lie) = lie {
            let headers = range
                .map(|r| vec![("range".to_owned(), r)])
                .unwrap_or_default();
            return (status_reply_bytes(308, headers), Event::Lied(lie));
        }
        self.uploads[id].reported = held;
        let event = if progressed {
            Event::Progress
        } else {
            Event::Retryable(RetryCause::NoProgress)
        };
        let headers = range
            .map(|r| vec![("range".to_owned(), r)])
            .unwrap_or_default();
        (status_reply_bytes(308, headers), event)
    }

    /// `Range` for holding `held` bytes in this server's reading of N (T5); none for nothing
    /// held when N is the last byte.
    fn held_range(&mut self, held: u64) -> Option<Vec<u8>> {
        if self.case.inclusive {
            (held > 0).then(|| self.range_value(held - 1))
        } else {
            Some(self.range_value(held))
        }
    }

    /// `0-N` or `bytes=0-N` as this server writes it (T5).
    fn range_value(&mut self, n: u64) -> Vec<u8> {
        let prefixed = match self.case.prefix {
            0 => false,
            1 => true,
            _ => {
                self.toggle = !self.toggle;
                self.toggle
            }
        };
        let p = if prefixed { "bytes=" } else { "" };
        format!("{p}0-{n}").into_bytes()
    }
}

fn secs(wall: SystemTime) -> u64 {
    wall.duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

trait WithBody {
    fn with_body(self, body: &str) -> Reply;
}

impl WithBody for Reply {
    fn with_body(self, body: &str) -> Reply {
        match self {
            Reply::Response(r) => {
                let (parts, _) = r.into_parts();
                Reply::Response(Response::from_parts(
                    parts,
                    Bytes::copy_from_slice(body.as_bytes()),
                ))
            }
            other => other,
        }
    }
}

fn status_reply(status: u16, headers: Vec<(String, String)>) -> Reply {
    status_reply_bytes(
        status,
        headers
            .into_iter()
            .map(|(k, v)| (k, v.into_bytes()))
            .collect(),
    )
}

fn status_reply_bytes(status: u16, headers: Vec<(String, Vec<u8>)>) -> Reply {
    let mut response = Response::new(Bytes::new());
    *response.status_mut() = StatusCode::from_u16(status).unwrap();
    for (name, value) in headers {
        let name = http::HeaderName::from_bytes(name.as_bytes()).unwrap();
        response
            .headers_mut()
            .append(name, HeaderValue::from_bytes(&value).unwrap());
    }
    Reply::Response(response)
}

fn retryable_reply(status: u16, retry_after: Option<u64>) -> (Reply, Event) {
    let headers = retry_after
        .map(|s| vec![("retry-after".to_owned(), s.to_string())])
        .unwrap_or_default();
    (
        status_reply(status, headers),
        Event::Retryable(RetryCause::Status(StatusCode::from_u16(status).unwrap())),
    )
}

// ---------------------------------------------------------------------------------------------
// The driver
// ---------------------------------------------------------------------------------------------

fn fit(case: &Case, size: u64) -> u64 {
    let cap = case.max.min(CHUNK_LIMIT - 1);
    (size.min(cap) / case.min * case.min).max(case.min)
}

/// The adaptive rule, computed independently of the core (module docs of `ton`).
fn rate_size(len: u64, elapsed: Duration) -> u64 {
    let nanos = elapsed.as_nanos();
    if nanos == 0 {
        return u64::MAX;
    }
    u64::try_from(u128::from(len) * TARGET.as_nanos() / nanos).unwrap_or(u64::MAX)
}

fn config(case: &Case) -> TonConfig {
    let mut config = TonConfig::new(HeaderValue::from_static("video/mp4"), case.total);
    config.chunk_size = case.preferred;
    config.chunk_time = case.adaptive.then_some(TARGET);
    config.fingerprint = format!("sim-{}", case.total);
    config
        .start_headers
        .insert("authorization", HeaderValue::from_static("OAuth sim"));
    let mut retry = RetryPolicy::default().with_seed(case.seed);
    retry.max_attempts = case.max_attempts;
    retry.jitter = Duration::from_millis(case.jitter_ms);
    retry.retry_deadline = Duration::from_secs(case.retry_deadline_s);
    retry.max_retry_after = Duration::from_secs(120);
    config.retry = retry;
    config
}

fn build(case: &Case, saved: Option<TonResumeState>) -> Result<TonUpload, TestCaseError> {
    let bucket_url: http::Uri = format!("{ORIGIN}{BUCKET_PATH}").parse().unwrap();
    let start = match saved {
        Some(state) => TonStart::Resume(state),
        None if case.single => TonStart::Single { bucket_url },
        None => TonStart::Resumable { bucket_url },
    };
    TonUpload::new(start, config(case))
        .map_err(|e| TestCaseError::fail(format!("building the upload: {e:?}")))
}

struct Ending {
    outcome: Result<TonCompletion, Error>,
    lie_told: bool,
}

fn transfer_time(case: &Case, len: u64) -> Duration {
    let mut d = Duration::from_millis(case.latency_ms);
    if case.bytes_per_sec > 0 {
        d += Duration::from_nanos(
            u64::try_from(u128::from(len) * 1_000_000_000 / u128::from(case.bytes_per_sec))
                .unwrap_or(u64::MAX),
        );
    }
    d
}

fn run(case: &Case) -> Result<Ending, TestCaseError> {
    let mut server = Server::new(case);
    let mut upload = build(case, None)?;
    let t0 = Instant::now();
    let mut now = t0;
    let wall = |now: Instant| {
        SystemTime::UNIX_EPOCH + Duration::from_secs(WALL_START_SECS) + now.duration_since(t0)
    };
    let mut saved: Option<TonResumeState> = None;
    let mut last: Option<Event> = None;
    let mut lie_told = false;
    let mut requests: u32 = 0;
    // Per process incarnation:
    let mut in_a_row = 0u32;
    let mut failures_in_run = 0u32;
    let mut progress_events = 0u64;
    let mut expected_chunk: Option<u64> = None;
    let mut measured = false;
    let mut crashed = false;
    let a = case.max_attempts;

    // A poll hands out each request once: one taken to look ahead is kept for the next turn.
    let mut pending: Option<Action<TonCompletion>> = None;
    for _ in 0..HARD_CAP {
        let action = pending.take().unwrap_or_else(|| upload.poll_action(now));
        match action {
            Action::Read(read) => {
                return Err(TestCaseError::fail(format!(
                    "TON asked for a read {read:?}"
                )));
            }
            Action::Wait(until) => {
                prop_assert!(until > now, "a wait that is already over");
                match upload.poll_action(now) {
                    Action::Wait(again) => prop_assert_eq!(again, until),
                    other => prop_assert!(false, "second poll differs: {:?}", other),
                }
                now = until;
            }
            Action::Done(outcome) => {
                if let Err(Error::RetriesExhausted { attempts, .. }) = &outcome {
                    prop_assert_eq!(*attempts, failures_in_run, "attempts in the failed run");
                }
                check_done(case, &server, &mut upload, now, &outcome, last, lie_told)?;
                prop_assert!(
                    server.violations.is_empty(),
                    "client broke the protocol: {:?}",
                    server.violations
                );
                return Ok(Ending { outcome, lie_told });
            }
            Action::Idle => prop_assert!(false, "Idle with nothing in flight"),
            Action::Send(send) => {
                // (7) A request is handed out once: while it is in flight, a poll is Idle.
                match upload.poll_action(now) {
                    Action::Idle => {}
                    other => prop_assert!(false, "a second poll gave {:?}", other),
                }
                // Save before sending, so `sent` is never behind what the server may hold.
                if let Some(state) = upload.resume_state() {
                    saved = Some(state);
                }
                requests += 1;
                in_a_row += 1;
                prop_assert!(
                    in_a_row <= a + 1,
                    "{} requests in a row without progress (max_attempts {})",
                    in_a_row,
                    a
                );
                let body = send.body.source.clone();
                let len = body.end - body.start;
                let is_chunk = send.request.method() == Method::PUT;
                let upload_id = Server::upload_at(send.request.uri());
                if is_chunk {
                    // (5) Chunks start at the acknowledged offset and follow the size rule.
                    prop_assert_eq!(body.start, upload.persisted());
                    prop_assert!(len > 0 && len < CHUNK_LIMIT && len <= case.max);
                    prop_assert!(body.end == case.total || len % case.min == 0);
                    let size = expected_chunk.unwrap_or_else(|| fit(case, case.preferred));
                    prop_assert_eq!(len, size.min(case.total - body.start), "chunk size rule");
                    prop_assert_eq!(upload.chunk_size(), Some(size));
                    if measured && case.adaptive && case.bytes_per_sec > 0 && len > case.min {
                        let secs = len as f64 / case.bytes_per_sec as f64;
                        prop_assert!(secs <= 20.0 + 1e-6, "a {}-byte chunk takes {}s", len, secs);
                    }
                    if let Some(id) = upload_id {
                        server.note_handed_out(id, body.end);
                    }
                }
                let handed_out_at = now;
                let elapsed = transfer_time(case, len);
                now += elapsed;
                let persisted_before = upload.persisted();
                let had_location = upload.location().is_some();
                let (reply, event) = server.handle(&send.request, body.clone(), wall(now));

                if case.crash_at == Some(requests) && !crashed {
                    // The process dies with this request's response unread (the server did
                    // its part), and a new one resumes from the saved state.
                    crashed = true;
                    upload = build(case, saved.clone())?;
                    last = None;
                    in_a_row = 0;
                    failures_in_run = 0;
                    progress_events = 0;
                    measured = false;
                    expected_chunk = saved.as_ref().map(|_| fit(case, case.preferred));
                    if let Event::Lied(_) = event {
                        // An unheard lie is no lie; the server's next answers are honest.
                    }
                    continue;
                }
                if let Event::Lied(_) = event {
                    lie_told = true;
                }
                let was_308 = matches!(&reply, Reply::Response(r) if r.status().as_u16() == 308);
                let timed_out = matches!(reply, Reply::Failure(TransportFailure::Timeout));
                match reply {
                    Reply::Response(r) => upload
                        .handle_response(now, send.id, r)
                        .map_err(|e| TestCaseError::fail(format!("{e:?}")))?,
                    Reply::Failure(f) => upload
                        .handle_failure(now, send.id, f)
                        .map_err(|e| TestCaseError::fail(format!("{e:?}")))?,
                }
                last = Some(event);
                if let Some(state) = upload.resume_state() {
                    saved = Some(state);
                }
                let next = upload.poll_action(now);
                let done = matches!(next, Action::Done(_));
                pending = Some(next);

                // Progress and the bound on it (3).
                let progressed = upload.persisted() > persisted_before
                    || (!had_location && upload.location().is_some());
                if progressed {
                    in_a_row = 0;
                    failures_in_run = 0;
                    progress_events += 1;
                    prop_assert!(progress_events <= 2 + case.total / case.min);
                } else if matches!(event, Event::Retryable(_)) {
                    failures_in_run += 1;
                }
                if !had_location && upload.location().is_some() {
                    expected_chunk = Some(fit(case, case.preferred));
                }
                // (5) The size rule, computed independently.
                if is_chunk && !done && case.adaptive {
                    if was_308 {
                        expected_chunk = Some(fit(case, rate_size(len, now - handed_out_at)));
                        measured = true;
                    } else if timed_out {
                        expected_chunk = Some(fit(case, len / 2));
                    }
                }
                // (6) Never more than the server holds.
                if let Some(id) = upload_id.or_else(|| {
                    upload
                        .location()
                        .and_then(|l| Server::upload_at(l.expose()))
                }) && let Some(u) = server.uploads.get(id)
                {
                    prop_assert!(
                        upload.persisted() <= u.held || lie_told,
                        "persisted {} but the server holds {}",
                        upload.persisted(),
                        u.held
                    );
                }
            }
        }
    }
    Err(TestCaseError::fail("no outcome within the hard cap"))
}

/// (1), (2), (7).
fn check_done(
    case: &Case,
    server: &Server<'_>,
    upload: &mut TonUpload,
    now: Instant,
    outcome: &Result<TonCompletion, Error>,
    last: Option<Event>,
    lie_told: bool,
) -> Result<(), TestCaseError> {
    match outcome {
        Ok(c) => {
            prop_assert!(!lie_told, "Ok after a lie");
            prop_assert_eq!(c.size, case.total);
            prop_assert_eq!(upload.persisted(), case.total);
            let path = c.location.path();
            prop_assert_eq!(c.location.authority().map(|a| a.as_str()), Some("ton.sim"));
            if case.single {
                let object = server.objects.iter().find(|o| o.path == path);
                prop_assert!(
                    object.is_some_and(|o| o.size == case.total),
                    "no such object"
                );
            } else {
                let id = path
                    .strip_prefix(&format!("{BUCKET_PATH}/"))
                    .and_then(|p| p.strip_suffix(".bin"))
                    .and_then(|p| p.parse::<usize>().ok());
                let held = id.and_then(|id| server.uploads.get(id));
                prop_assert!(
                    held.is_some_and(|u| u.complete && u.held == case.total),
                    "the server does not hold the source at {}",
                    path
                );
            }
        }
        Err(e) => {
            let fits = match (e, last) {
                (_, Some(Event::Lied(lie))) => lie.expected(e),
                (Error::RetriesExhausted { last: cause, .. }, Some(Event::Retryable(c))) => {
                    *cause == c
                }
                // G8: the server's Retry-After would carry the run past its deadline (a slow
                // link spent most of it).
                (Error::WaitBeyondDeadline { last: cause, .. }, Some(Event::Retryable(c))) => {
                    *cause == c
                }
                (
                    Error::SessionGone { status },
                    Some(Event::Gone {
                        status: s,
                        expired,
                        dated,
                    }),
                ) => status.as_u16() == s && !(expired && dated),
                (
                    Error::Expired { status },
                    Some(Event::Gone {
                        status: s, expired, ..
                    }),
                ) => status.as_u16() == s && expired,
                (Error::Server { status, .. }, Some(Event::Refused(s))) => status.as_u16() == s,
                _ => false,
            };
            prop_assert!(fits, "outcome {:?} after {:?}", e, last);
        }
    }
    // (7) Sticky.
    match upload.poll_action(now) {
        Action::Done(again) => prop_assert_eq!(&again, outcome),
        other => prop_assert!(false, "after Done: {:?}", other),
    }
    prop_assert_eq!(
        upload.handle_failure(
            now,
            resumable_core::RequestId::new(0),
            TransportFailure::Reset
        ),
        Err(UsageError::Finished)
    );
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Properties
// ---------------------------------------------------------------------------------------------

/// Cases are cheap (the server is virtual): 10,000 per property run in about a second.
fn config_cases(cases: u32) -> ProptestConfig {
    ProptestConfig {
        cases,
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

proptest! {
    #![proptest_config(config_cases(10_000))]

    /// (1)–(7) against an honest server with every fault it may have (T1–T6): partial
    /// persistence in multiples of min, both Range forms and readings, lost requests and
    /// responses, retryable statuses with and without Retry-After, deletion and expiry,
    /// refusals, a process restart from the saved state. Never a Protocol error.
    #[test]
    fn honest_server_gets_the_source_or_a_typed_error(case in honest_case()) {
        let ending = run(&case)?;
        if let Err(Error::Protocol(v)) = &ending.outcome {
            prop_assert!(false, "an honest server caused {:?}", v);
        }
    }

    /// A server that lies once (T3 limits or Location; T5 Range beyond what was sent, not from
    /// 0, malformed, backwards, fitting no reading; T6 early or Location-less completion, an
    /// unexpected status) ends the upload with the matching Protocol error, never Ok.
    #[test]
    fn lying_server_ends_in_the_matching_typed_error(case in lying_case()) {
        let ending = run(&case)?;
        if ending.lie_told {
            prop_assert!(ending.outcome.is_err(), "a lie ended in Ok");
        }
    }

    /// Liveness: faults within the retry budget (T6) never stop the upload: it succeeds, with
    /// (1)–(7).
    #[test]
    fn healed_server_gets_the_whole_source(case in healing_case()) {
        let ending = run(&case)?;
        prop_assert!(
            ending.outcome.is_ok(),
            "gave up on a server that healed: {:?}",
            ending.outcome
        );
    }
}
