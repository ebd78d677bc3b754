//! Deterministic simulation of the tus 1.0 upload (rules U1–U15 in `docs/protocols/tus.md`)
//! against a seeded simulated tus server on a simulated clock.
//!
//! # Running it
//!
//! ```text
//! cargo test -p resumable-core --test tus_simulation                    # 300 seeds
//! SIM_SEEDS=10000 cargo test -p resumable-core --test tus_simulation    # the full run
//! SIM_SEED=12345 cargo test -p resumable-core --test tus_simulation -- --nocapture
//! ```
//!
//! The switches are the other simulations' (`SIM_SEEDS`, `SIM_START`, `SIM_SEED`); the default
//! here is short, because the other protocols' 10,000 already run by default. With 2,000 seeds
//! or more every outcome of the fault model must be reached.
//!
//! # The fault model
//!
//! A seed draws the upload (size or unknown size, chunk size, checksum, creation with upload,
//! method override, discovery, retry budget) and the server. Per request the server may:
//! store all, none or any prefix of a body (and say so truthfully); lose the request before it
//! arrives, or process it and lose the answer; answer 408/423/429/5xx, having stored a prefix
//! or not; answer 460 to a checksummed PATCH (nothing stored); refuse (400/403); lose the
//! upload (404/410); let the upload expire (`Upload-Expires`, then 404/410 with a `Date`).
//! Servers differ in the optional headers they omit: `Upload-Length` and `Cache-Control` on
//! HEAD, `Upload-Expires`, `Tus-Version` on OPTIONS, `Tus-Resumable` on answers, the checksum
//! extension. Some seeds arm one lie, told once when it applies: an offset beyond what was sent
//! (HEAD or PATCH), a PATCH offset below where it started, an answer without `Upload-Offset`,
//! a HEAD with another `Upload-Length`, a creation without `Location`.
//!
//! The driver may crash at any request (the request reaches the server, its answer is lost) and
//! restart from the state it saved before that request; an expired state starts a new upload
//! (U10), and so does a creation whose answer never came.
//!
//! # Invariants, on every run
//!
//! 1. Success only when the server's upload holds exactly the source, its length is the
//!    source's, and the reported size is the source's (U3, U4, U9).
//! 2. `persisted()` never passes what the server holds for the upload, never decreases within
//!    a process; every PATCH starts at `persisted()` and at the server's offset (U4).
//! 3. Every request follows U1, U4–U6, U9, U11 (the server's own checks find nothing).
//! 4. Bounded: requests `<= (P + R + 1)(2A + K + 6)` with `P` progress events, `R` restarts,
//!    `A` the retry budget, `K` the checksum resends; waits `<=` requests `+ 1`.
//! 5. A typed error licensed by what happened (`RetriesExhausted` after retryable failures,
//!    `SessionGone`/`Expired` after the upload was lost or expired, `Server` after a refusal or
//!    too many 460s, `Unsupported` only when the server lacked what was asked, `Protocol` only
//!    after a lie); a lie ends the upload at once with the error it calls for.
//! 6. A stale answer is `UnknownRequest` and changes nothing; `Done` is sticky.

mod seeds;

use std::fmt::Write as _;
use std::time::{Duration, Instant, SystemTime};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use bytes::Bytes;
use http::{Method, Response};
use resumable_core::tus::{
    ChecksumAlgorithm, TusCompletion, TusConfig, TusResumeState, TusStart, TusUpload,
};
use resumable_core::{
    Action, Error, ProtocolViolation, RetryPolicy, Transmit, TransportFailure, Upload, UsageError,
};
use sha1::{Digest as _, Sha1};

const DEFAULT_SEEDS: u64 = 300;
const ORIGIN: &str = "https://tus.sim";
const ENDPOINT: &str = "https://tus.sim/files/";
const HARD_CAP: u64 = 100_000;
/// The simulated wall clock at the start (2023-11-14).
const WALL_START: u64 = 1_700_000_000;

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
    fn chance(&mut self, per_mille: u64) -> bool {
        self.below(1000) < per_mille
    }
    fn pick<T: Copy>(&mut self, items: &[T]) -> T {
        items[self.below(items.len() as u64) as usize]
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Lie {
    PatchBeyond,
    PatchBackwards,
    HeadBeyond,
    NoOffset,
    LengthDiffers,
    NoLocation,
}

/// The server's behaviour (per mille).
#[derive(Clone, Copy, Debug)]
struct Knobs {
    drop_before: u64,
    drop_after: u64,
    status: u64,
    partial: u64,
    mismatch: u64,
    refuse: u64,
    gone: u64,
    /// Seconds until an upload expires, if it does.
    expires_after: Option<u64>,
    omit_length: bool,
    omit_expires: bool,
    omit_version: bool,
    omit_resumable: bool,
    offers_checksum: bool,
    relative_location: bool,
}

#[derive(Clone, Debug)]
struct Stored {
    path: String,
    bytes: Vec<u8>,
    length: Option<u64>,
    expires_at: Option<u64>,
    gone: bool,
}

/// What happened, for licensing the outcome.
#[derive(Clone, Debug, Default)]
struct Happened {
    retryable: u64,
    kept_nothing: u64,
    mismatches: u64,
    refused: bool,
    gone: bool,
    expired: bool,
    lie: Option<Lie>,
    progress: u64,
}

struct Server {
    rng: Rng,
    knobs: Knobs,
    uploads: Vec<Stored>,
    lie: Option<Lie>,
    lie_skip: u64,
    violations: Vec<String>,
    happened: Happened,
    source_len: u64,
    /// Requests handled so far, and the one whose answer carried the lie.
    handled: u64,
    lie_request: Option<u64>,
    /// Requests that reached the server after its lie was delivered.
    after_lie: u64,
}

enum Fate {
    Answer,
    DropBefore(TransportFailure),
    DropAfter(TransportFailure),
    Status(u16),
    Refuse(u16),
    Gone(u16),
}

impl Server {
    fn header<'a>(t: &'a Transmit, name: &str) -> Option<&'a str> {
        t.request.headers().get(name).and_then(|v| v.to_str().ok())
    }

    fn violation(&mut self, what: String) {
        self.violations.push(what);
    }

    fn fate(&mut self, on_upload: bool) -> Fate {
        let k = self.knobs;
        let r = &mut self.rng;
        if r.chance(k.refuse) {
            return Fate::Refuse(r.pick(&[400, 403]));
        }
        if on_upload && r.chance(k.gone) {
            return Fate::Gone(r.pick(&[404, 410]));
        }
        if r.chance(k.drop_before) {
            self.happened.retryable += 1;
            return Fate::DropBefore(r.pick(&[
                TransportFailure::Connect,
                TransportFailure::Reset,
                TransportFailure::Timeout,
            ]));
        }
        if r.chance(k.drop_after) {
            return Fate::DropAfter(r.pick(&[
                TransportFailure::Reset,
                TransportFailure::Timeout,
                TransportFailure::TruncatedResponse,
            ]));
        }
        if r.chance(k.status) {
            return Fate::Status(r.pick(&[408, 423, 429, 500, 502, 503, 504]));
        }
        Fate::Answer
    }

    fn take_lie(&mut self, applies: impl Fn(Lie) -> bool) -> Option<Lie> {
        let lie = self.lie?;
        if !applies(lie) {
            return None;
        }
        if self.lie_skip > 0 {
            self.lie_skip -= 1;
            return None;
        }
        self.lie = None;
        self.happened.lie = Some(lie);
        self.lie_request = Some(self.handled);
        Some(lie)
    }

    fn response(&self, status: u16) -> http::response::Builder {
        let b = Response::builder().status(status);
        if self.knobs.omit_resumable {
            b
        } else {
            b.header("tus-resumable", "1.0.0")
        }
    }

    fn date(wall: u64) -> String {
        httpdate::fmt_http_date(SystemTime::UNIX_EPOCH + Duration::from_secs(wall))
    }

    fn find(&self, t: &Transmit) -> Option<usize> {
        let uri = t.request.uri();
        if uri.scheme_str() != Some("https")
            || uri.authority().map(|a| a.as_str()) != Some("tus.sim")
        {
            return None;
        }
        let path = uri.path_and_query()?.as_str();
        self.uploads.iter().position(|u| u.path == path)
    }

    /// Keeps a prefix of `body` at the upload's end, as a fate says; returns the bytes kept.
    fn keep(&mut self, i: usize, body: &[u8], whole: bool) -> usize {
        let keep = if whole || !self.rng.chance(self.knobs.partial) {
            body.len()
        } else {
            self.rng.below(body.len() as u64 + 1) as usize
        };
        if keep == 0 && !body.is_empty() {
            self.happened.kept_nothing += 1;
        }
        self.uploads[i].bytes.extend_from_slice(&body[..keep]);
        keep
    }

    fn handle(
        &mut self,
        wall: u64,
        t: &Transmit,
        body: &[u8],
    ) -> Result<Response<Bytes>, TransportFailure> {
        self.handled += 1;
        if self.happened.lie.is_some() {
            self.after_lie += 1;
        }
        let method = match (
            t.request.method(),
            Self::header(t, "x-http-method-override"),
        ) {
            (&Method::POST, Some(m)) => Method::from_bytes(m.as_bytes()).unwrap_or(Method::POST),
            (m, None) => m.clone(),
            (m, Some(_)) => {
                self.violation(format!("X-HTTP-Method-Override on {m}"));
                m.clone()
            }
        };
        if method != Method::OPTIONS && Self::header(t, "tus-resumable") != Some("1.0.0") {
            self.violation(format!("{method} without Tus-Resumable: 1.0.0 (U1)"));
        }
        if method != Method::HEAD && method != Method::OPTIONS {
            let cl = Self::header(t, "content-length").and_then(|v| v.parse::<usize>().ok());
            if cl != Some(body.len()) {
                self.violation(format!(
                    "{method}: Content-Length {cl:?} for {} bytes",
                    body.len()
                ));
            }
        }
        match method {
            Method::OPTIONS => self.options(),
            Method::POST => self.create(wall, t, body),
            Method::HEAD => self.head(wall, t),
            Method::PATCH => self.patch(wall, t, body),
            Method::DELETE => self.delete(t),
            m => {
                self.violation(format!("unexpected method {m}"));
                Ok(self.response(405).body(Bytes::new()).unwrap())
            }
        }
    }

    fn options(&mut self) -> Result<Response<Bytes>, TransportFailure> {
        match self.fate(false) {
            Fate::DropBefore(f) | Fate::DropAfter(f) => return Err(f),
            Fate::Status(s) if s != 423 => {
                self.happened.retryable += 1;
                return Ok(self.response(s).body(Bytes::new()).unwrap());
            }
            _ => {}
        }
        let mut ext =
            "creation,creation-with-upload,creation-defer-length,termination,expiration".to_owned();
        let mut b = self.response(204);
        if self.knobs.offers_checksum {
            ext.push_str(",checksum");
            b = b.header("tus-checksum-algorithm", "md5,sha1");
        }
        if !self.knobs.omit_version {
            b = b.header("tus-version", "1.0.0,0.2.2");
        }
        Ok(b.header("tus-extension", ext).body(Bytes::new()).unwrap())
    }

    fn create(
        &mut self,
        wall: u64,
        t: &Transmit,
        body: &[u8],
    ) -> Result<Response<Bytes>, TransportFailure> {
        if t.request.uri() != ENDPOINT {
            self.violation("creation to another URL".into());
        }
        let length = Self::header(t, "upload-length").and_then(|v| v.parse::<u64>().ok());
        let defer = Self::header(t, "upload-defer-length");
        match (length, defer) {
            (Some(n), None) if n == self.source_len => {}
            (None, Some("1")) => {}
            other => self.violation(format!("creation with length/defer {other:?} (U6, U9)")),
        }
        if !body.is_empty()
            && Self::header(t, "content-type") != Some("application/offset+octet-stream")
        {
            self.violation(
                "creation with data, but not application/offset+octet-stream (U8)".into(),
            );
        }
        let fate = self.fate(false);
        match fate {
            Fate::DropBefore(f) => return Err(f),
            Fate::Refuse(s) => {
                self.happened.refused = true;
                return Ok(self.response(s).body(Bytes::new()).unwrap());
            }
            Fate::Status(s) if s != 423 => {
                self.happened.retryable += 1;
                return Ok(self.response(s).body(Bytes::new()).unwrap());
            }
            _ => {}
        }
        let n = self.uploads.len();
        self.uploads.push(Stored {
            path: format!("/files/u{n}x{}", self.rng.below(1 << 30)),
            bytes: Vec::new(),
            length,
            expires_at: self.knobs.expires_after.map(|e| wall + e),
            gone: false,
        });
        let kept = self.keep(n, body, false);
        if let Fate::DropAfter(f) = fate {
            self.happened.retryable += 1;
            return Err(f);
        }
        let mut b = self.response(201);
        if self.take_lie(|l| l == Lie::NoLocation).is_none() {
            let path = self.uploads[n].path.clone();
            let location = if self.knobs.relative_location {
                path.trim_start_matches("/files/").to_owned()
            } else {
                format!("{ORIGIN}{path}")
            };
            b = b.header("location", location);
        }
        if !body.is_empty() {
            b = b.header("upload-offset", kept.to_string());
        }
        b = self.expires(b, n);
        Ok(b.body(Bytes::new()).unwrap())
    }

    fn expires(&self, b: http::response::Builder, i: usize) -> http::response::Builder {
        match (self.knobs.omit_expires, self.uploads[i].expires_at) {
            (false, Some(at)) => b.header("upload-expires", Self::date(at)),
            _ => b,
        }
    }

    /// The upload a request names, or the answer for a missing one.
    fn upload(&mut self, wall: u64, t: &Transmit) -> Result<usize, Box<Response<Bytes>>> {
        let Some(i) = self.find(t) else {
            self.violation("a request to an unknown URL".into());
            return Err(Box::new(self.response(404).body(Bytes::new()).unwrap()));
        };
        if self.uploads[i].expires_at.is_some_and(|at| wall >= at) {
            self.uploads[i].gone = true;
            self.happened.expired = true;
        }
        if self.uploads[i].gone {
            self.happened.gone = true;
            let status = self.rng.pick(&[404, 410]);
            let b = self.response(status).header("date", Self::date(wall));
            return Err(Box::new(b.body(Bytes::new()).unwrap()));
        }
        Ok(i)
    }

    fn head(&mut self, wall: u64, t: &Transmit) -> Result<Response<Bytes>, TransportFailure> {
        let i = match self.upload(wall, t) {
            Ok(i) => i,
            Err(r) => return Ok(*r),
        };
        match self.fate(true) {
            Fate::DropBefore(f) | Fate::DropAfter(f) => return Err(f),
            Fate::Status(s) => {
                self.happened.retryable += 1;
                return Ok(self.response(s).body(Bytes::new()).unwrap());
            }
            Fate::Gone(s) => {
                self.uploads[i].gone = true;
                self.happened.gone = true;
                return Ok(self.response(s).body(Bytes::new()).unwrap());
            }
            Fate::Refuse(_) | Fate::Answer => {}
        }
        let held = self.uploads[i].bytes.len() as u64;
        let total = self.source_len;
        let lie =
            self.take_lie(|l| matches!(l, Lie::HeadBeyond | Lie::NoOffset | Lie::LengthDiffers));
        let status = self.rng.pick(&[200, 204]);
        let mut b = self.response(status);
        match lie {
            Some(Lie::HeadBeyond) => {
                b = b.header("upload-offset", (total + 1 + self.rng.below(5)).to_string());
            }
            Some(Lie::NoOffset) => {}
            _ => b = b.header("upload-offset", held.to_string()),
        }
        match (lie, self.uploads[i].length) {
            (Some(Lie::LengthDiffers), _) => b = b.header("upload-length", (total + 1).to_string()),
            // A lax server leaves `Upload-Length` out; after a deferred length it still says
            // nothing, so `Upload-Defer-Length` has gone (U3, U9).
            (_, Some(n)) if !self.knobs.omit_length => b = b.header("upload-length", n.to_string()),
            (_, None) => b = b.header("upload-defer-length", "1"),
            _ => {}
        }
        if !self.knobs.omit_length {
            b = b.header("cache-control", "no-store");
        }
        Ok(b.body(Bytes::new()).unwrap())
    }

    fn patch(
        &mut self,
        wall: u64,
        t: &Transmit,
        body: &[u8],
    ) -> Result<Response<Bytes>, TransportFailure> {
        let i = match self.upload(wall, t) {
            Ok(i) => i,
            Err(r) => return Ok(*r),
        };
        if Self::header(t, "content-type") != Some("application/offset+octet-stream") {
            self.violation("PATCH without application/offset+octet-stream (U4)".into());
        }
        let offset = Self::header(t, "upload-offset").and_then(|v| v.parse::<u64>().ok());
        let held = self.uploads[i].bytes.len() as u64;
        let fate = self.fate(true);
        if let Fate::DropBefore(f) = fate {
            return Err(f);
        }
        if offset != Some(held) {
            // The client always asks before it sends again (U14): a wrong offset is its bug.
            self.violation(format!("PATCH at {offset:?}, the server holds {held} (U4)"));
            return Ok(self.response(409).body(Bytes::new()).unwrap());
        }
        let declared =
            Self::header(t, "upload-length").map(|v| (v.to_owned(), v.parse::<u64>().ok()));
        if let Some((v, n)) = &declared
            && (self.uploads[i].length.is_some() || *n != Some(self.source_len))
        {
            self.violation(format!("Upload-Length {v} on a PATCH (U9)"));
        }
        let length = declared.as_ref().map_or(self.uploads[i].length, |d| d.1);
        if held + body.len() as u64 > length.unwrap_or(u64::MAX) {
            self.violation("a PATCH past the length (U4)".into());
        }
        if let Some(sum) = Self::header(t, "upload-checksum") {
            let want = format!("sha1 {}", STANDARD.encode(Sha1::digest(body)));
            if sum != want {
                self.violation("a wrong Upload-Checksum (U11)".into());
            }
            if self.rng.chance(self.knobs.mismatch) {
                self.happened.mismatches += 1;
                return Ok(self.response(460).body(Bytes::new()).unwrap());
            }
        }
        match fate {
            Fate::Refuse(s) => {
                self.happened.refused = true;
                return Ok(self.response(s).body(Bytes::new()).unwrap());
            }
            Fate::Gone(s) => {
                self.uploads[i].gone = true;
                self.happened.gone = true;
                return Ok(self.response(s).body(Bytes::new()).unwrap());
            }
            _ if declared.is_some() => self.uploads[i].length = length,
            _ => {}
        }
        match fate {
            Fate::Refuse(_) | Fate::Gone(_) => {}
            Fate::DropAfter(f) => {
                self.keep(i, body, false);
                self.happened.retryable += 1;
                return Err(f);
            }
            Fate::Status(s) => {
                // Some of the body may have been stored before the server failed.
                if self.rng.chance(500) {
                    self.keep(i, body, false);
                }
                self.happened.retryable += 1;
                return Ok(self.response(s).body(Bytes::new()).unwrap());
            }
            Fate::DropBefore(_) | Fate::Answer => {}
        }
        let kept = self.keep(i, body, false) as u64;
        let lie = self.take_lie(|l| match l {
            Lie::PatchBeyond | Lie::NoOffset => true,
            Lie::PatchBackwards => held > 0,
            _ => false,
        });
        let mut b = self.response(204);
        b = match lie {
            Some(Lie::PatchBeyond) => {
                b.header("upload-offset", (held + body.len() as u64 + 1).to_string())
            }
            Some(Lie::PatchBackwards) => b.header("upload-offset", (held - 1).to_string()),
            Some(_) => b,
            None => b.header("upload-offset", (held + kept).to_string()),
        };
        b = self.expires(b, i);
        Ok(b.body(Bytes::new()).unwrap())
    }

    fn delete(&mut self, t: &Transmit) -> Result<Response<Bytes>, TransportFailure> {
        match self.find(t) {
            Some(i) => {
                self.uploads[i].gone = true;
                Ok(self.response(204).body(Bytes::new()).unwrap())
            }
            None => Ok(self.response(404).body(Bytes::new()).unwrap()),
        }
    }
}

struct Setup {
    source: Vec<u8>,
    config: TusConfig,
    crash: u64,
    max_restarts: u32,
}

fn draw(rng: &mut Rng) -> (Setup, Server) {
    let len = match rng.below(6) {
        0 => 0,
        1 => rng.below(10),
        _ => rng.below(5_000),
    } as usize;
    let source: Vec<u8> = (0..len).map(|_| rng.next() as u8).collect();
    let known = rng.chance(700);
    let mut config = TusConfig::new(known.then_some(len as u64));
    config.chunk_size = rng.pick(&[1, 7, 64, 500, 1024, 4096]);
    config.discover = rng.chance(500);
    config.checksum = rng.chance(300).then_some(ChecksumAlgorithm::Sha1);
    config.creation_with_upload = rng.chance(300);
    config.method_override = rng.chance(200);
    config.max_checksum_resends = rng.pick(&[1, 3]);
    config.fingerprint = "sim".into();
    let mut retry = RetryPolicy::default().with_seed(rng.next());
    retry.max_attempts = rng.pick(&[2, 5, 10]);
    retry.retry_statuses = vec![408, 429, 500, 502, 503, 504];
    config.retry = retry;
    let faulty = rng.chance(800);
    let knobs = Knobs {
        drop_before: if faulty { rng.below(80) } else { 0 },
        drop_after: if faulty { rng.below(80) } else { 0 },
        status: if faulty { rng.below(120) } else { 0 },
        partial: if faulty { rng.below(500) } else { 0 },
        mismatch: if faulty { rng.below(150) } else { 0 },
        refuse: if rng.chance(100) { rng.below(20) } else { 0 },
        gone: if rng.chance(100) { rng.below(20) } else { 0 },
        expires_after: rng.chance(300).then(|| rng.pick(&[30, 120, 3_600, 86_400])),
        omit_length: rng.chance(200),
        omit_expires: rng.chance(300),
        omit_version: rng.chance(300),
        omit_resumable: rng.chance(200),
        offers_checksum: rng.chance(850),
        relative_location: rng.chance(500),
    };
    let lie = rng.chance(150).then(|| {
        rng.pick(&[
            Lie::PatchBeyond,
            Lie::PatchBackwards,
            Lie::HeadBeyond,
            Lie::NoOffset,
            Lie::LengthDiffers,
            Lie::NoLocation,
        ])
    });
    // Another length is only detectable at once against a size the client knows.
    let lie = lie.filter(|l| known || *l != Lie::LengthDiffers);
    let server = Server {
        rng: Rng(rng.next()),
        knobs,
        uploads: Vec::new(),
        lie,
        lie_skip: rng.below(4),
        violations: Vec::new(),
        happened: Happened::default(),
        source_len: len as u64,
        handled: 0,
        lie_request: None,
        after_lie: 0,
    };
    let crash = if rng.chance(400) { rng.below(60) } else { 0 };
    let setup = Setup {
        source,
        config,
        crash,
        max_restarts: 3,
    };
    (setup, server)
}

#[derive(Default)]
struct Summary {
    outcome: String,
    requests: u64,
    restarts: u32,
    transcript: String,
}

fn kind(outcome: &Result<TusCompletion, Error>) -> String {
    match outcome {
        Ok(_) => "ok".into(),
        Err(e) => {
            let dbg = format!("{e:?}");
            dbg.split(['(', ' ', '{']).next().unwrap_or("?").to_owned()
        }
    }
}

fn run(seed: u64, transcript: bool) -> Result<Summary, String> {
    let mut rng = Rng(seed ^ 0x7475_7300_0000_0000);
    let (setup, mut server) = draw(&mut rng);
    let source = &setup.source;
    let total = source.len() as u64;
    let t0 = Instant::now();
    let mut now = t0;
    let wall = |now: Instant| WALL_START + now.saturating_duration_since(t0).as_secs();
    let mut log = String::new();
    let mut summary = Summary::default();
    let mut saved: Option<TusResumeState> = None;
    let mut upload = TusUpload::new(
        TusStart::Create {
            endpoint: ENDPOINT.parse().unwrap(),
        },
        setup.config.clone(),
    )
    .map_err(|e| format!("construction failed: {e}"))?;
    let mut requests_total = 0u64;
    let mut waits = 0u64;
    let mut last_persisted = 0u64;
    let mut stale: Option<(resumable_core::RequestId, Response<Bytes>)> = None;
    let mut crash_at = setup.crash;
    let outcome = loop {
        if requests_total > HARD_CAP {
            return Err("runaway: more requests than the hard cap".into());
        }
        let action = upload.poll_action(now);
        match action {
            Action::Done(outcome) => break outcome,
            Action::Wait(until) => {
                if until <= now {
                    return Err("a wait that is already over".into());
                }
                waits += 1;
                now = until;
            }
            Action::Idle => return Err("Idle with nothing in flight".into()),
            Action::Read(r) => {
                if r.range.start < upload.retained_from() {
                    return Err("a read below retained_from".into());
                }
                let (a, b) = (
                    r.range.start.min(total) as usize,
                    r.range.end.min(total) as usize,
                );
                // Reads come in pieces sometimes.
                let b = if b > a + 1 && rng.chance(300) {
                    a + 1 + rng.below((b - a) as u64) as usize
                } else {
                    b
                };
                upload
                    .handle_read(now, r.range.start, &source[a..b.min(total as usize)])
                    .map_err(|e| format!("read refused: {e}"))?;
            }
            Action::Send(t) => {
                requests_total += 1;
                summary.requests += 1;
                // Save before the request, as the contract asks (U15).
                if let Some(state) = upload.resume_state() {
                    saved = Some(state);
                }
                let r = &t.body.source;
                if r.end > total || r.start > r.end {
                    return Err(format!("a body outside the source: {r:?}"));
                }
                if !r.is_empty() && r.start != upload.persisted() {
                    return Err(format!(
                        "a body from {} while {} is acknowledged",
                        r.start,
                        upload.persisted()
                    ));
                }
                let body = &source[r.start as usize..r.end as usize];
                let _ = writeln!(
                    log,
                    "{} {} {:?}",
                    t.request.method(),
                    t.request.uri().path(),
                    r
                );
                let reply = server.handle(wall(now), &t, body);
                now += Duration::from_millis(5 + r.end.saturating_sub(r.start) / 100);
                crash_at = crash_at.saturating_sub(1);
                if crash_at == 0 && setup.crash > 0 && summary.restarts < setup.max_restarts {
                    // The process dies: the answer is lost; a new one starts from the state.
                    // A lie in that answer was never seen.
                    if server.lie_request == Some(server.handled) {
                        server.happened.lie = None;
                        server.lie_request = None;
                    }
                    summary.restarts += 1;
                    crash_at = setup.crash;
                    last_persisted = 0;
                    let fresh = TusStart::Create {
                        endpoint: ENDPOINT.parse().unwrap(),
                    };
                    let start = match saved.clone() {
                        Some(state)
                            if state.expired_at(
                                SystemTime::UNIX_EPOCH + Duration::from_secs(wall(now)),
                            ) =>
                        {
                            fresh
                        }
                        Some(state) => TusStart::Resume {
                            state,
                            now: SystemTime::UNIX_EPOCH + Duration::from_secs(wall(now)),
                        },
                        None => fresh,
                    };
                    if matches!(start, TusStart::Create { .. }) {
                        saved = None;
                    }
                    let _ = writeln!(log, "-- crash, restart {}", summary.restarts);
                    upload = TusUpload::new(start, setup.config.clone())
                        .map_err(|e| format!("restart failed: {e}"))?;
                    stale = None;
                    continue;
                }
                match reply {
                    Ok(response) => {
                        let _ = writeln!(log, "  -> {}", response.status());
                        let keep = (rng.chance(100)).then(|| (t.id, response.clone()));
                        upload
                            .handle_response(now, t.id, response)
                            .map_err(|e| format!("answer refused: {e}"))?;
                        if let Some(s) = keep {
                            stale = Some(s);
                        }
                    }
                    Err(f) => {
                        let _ = writeln!(log, "  -> {f:?}");
                        upload
                            .handle_failure(now, t.id, f)
                            .map_err(|e| format!("failure refused: {e}"))?;
                    }
                }
                // A stale answer is refused and changes nothing (6).
                if let Some((id, response)) = stale.take().filter(|_| rng.chance(300)) {
                    let before = (format!("{upload:?}"), upload.resume_state());
                    match upload.handle_response(now, id, response) {
                        Err(UsageError::UnknownRequest(_)) | Err(UsageError::Finished) => {}
                        other => return Err(format!("a stale answer was taken: {other:?}")),
                    }
                    if before != (format!("{upload:?}"), upload.resume_state()) {
                        return Err("a stale answer changed the upload".into());
                    }
                }
            }
        }
        // Invariant 2.
        let p = upload.persisted();
        if p < last_persisted {
            return Err(format!("persisted went from {last_persisted} to {p}"));
        }
        if p > 0 {
            last_persisted = p;
            let held = upload
                .upload_url()
                .and_then(|u| server.uploads.iter().find(|s| s.path == u.expose().path()))
                .map(|s| s.bytes.len() as u64);
            if held.is_none_or(|h| p > h) {
                return Err(format!("persisted {p} but the server holds {held:?}"));
            }
        }
    };
    server.happened.progress = upload.stats().requests;
    summary.outcome = kind(&outcome);
    // Sticky (6).
    if !matches!(upload.poll_action(now), Action::Done(_)) {
        return Err("Done is not sticky".into());
    }
    if !server.violations.is_empty() {
        return Err(format!(
            "the server saw violations: {:?}\n{log}",
            server.violations
        ));
    }
    let h = &server.happened;
    match &outcome {
        Ok(done) => {
            if let Some(lie) = h.lie {
                return Err(format!("success after a lie {lie:?}\n{log}"));
            }
            let stored = server
                .uploads
                .iter()
                .find(|s| s.path == done.upload_url.expose().path())
                .ok_or("success on an upload the server does not have")?;
            if stored.bytes != *source || stored.length != Some(total) || done.size != total {
                return Err(format!(
                    "success, but the server holds {} bytes of length {:?} (source {total}), size {}\n{log}",
                    stored.bytes.len(),
                    stored.length,
                    done.size
                ));
            }
        }
        Err(e) => {
            let licensed = match e {
                Error::RetriesExhausted { .. } => h.retryable + h.kept_nothing > 0,
                Error::SessionGone { .. } | Error::Expired { .. } => h.gone || h.expired,
                Error::Server { status, .. } if status.as_u16() == 460 => h.mismatches > 0,
                Error::Server { .. } => h.refused,
                Error::Unsupported(_) => {
                    setup.config.checksum.is_some() && !server.knobs.offers_checksum
                }
                Error::Protocol(v) => matches!(
                    (h.lie, v),
                    (
                        Some(Lie::PatchBeyond | Lie::HeadBeyond),
                        ProtocolViolation::RangeBeyondSent { .. },
                    ) | (
                        Some(Lie::PatchBackwards),
                        ProtocolViolation::PersistedWentBackwards { .. },
                    ) | (Some(Lie::NoOffset), ProtocolViolation::MalformedResponse(_))
                        | (
                            Some(Lie::LengthDiffers),
                            ProtocolViolation::LengthDiffers { .. }
                        )
                        | (Some(Lie::NoLocation), ProtocolViolation::MissingLocation)
                ),
                _ => false,
            };
            if !licensed {
                return Err(format!("unlicensed error {e:?} after {h:?}\n{log}"));
            }
        }
    }
    // A lie ends the upload at once: no request after it.
    if server.after_lie > 0 {
        return Err(format!(
            "{} requests after the lie {:?}\n{log}",
            server.after_lie, h.lie
        ));
    }
    // Invariant 4.
    let a = u64::from(setup.config.retry.max_attempts);
    let k = u64::from(setup.config.max_checksum_resends);
    let progress = total / setup.config.chunk_size.max(1) + 2;
    let bound = (progress * 2 + u64::from(summary.restarts) + 4) * (2 * a + k + 6);
    if requests_total > bound {
        return Err(format!("{requests_total} requests, bound {bound}"));
    }
    if waits > requests_total + 1 {
        return Err(format!("{waits} waits for {requests_total} requests"));
    }
    if transcript {
        summary.transcript = log;
    }
    Ok(summary)
}

fn seeded(seed: u64, transcript: bool) -> Result<seeds::Seeded, String> {
    run(seed, transcript).map(|s| seeds::Seeded {
        outcome: s.outcome,
        requests: s.requests,
        restarts: s.restarts,
        transcript: s.transcript,
    })
}

#[test]
fn tus() {
    seeds::run_seeds(
        "tus",
        "tus_simulation",
        DEFAULT_SEEDS,
        20,
        &[
            "ok",
            "RetriesExhausted",
            "SessionGone",
            "Server",
            "Protocol",
            "Unsupported",
            "Expired",
        ],
        seeded,
    );
}

#[test]
fn a_seed_replays_exactly() {
    seeds::assert_replays_exactly(seeded);
}
