//! Deterministic simulation of the upload of the IETF resumable-upload draft (rules R1–R19 in
//! `docs/protocols/ietf.md`) against a seeded simulated server on a simulated clock, in the
//! shape of the tus simulation and with the simulations' shared generator.
//!
//! # Running it
//!
//! ```text
//! cargo test -p resumable-core --test ietf_simulation                    # 300 seeds
//! SIM_SEEDS=10000 cargo test -p resumable-core --test ietf_simulation    # the full run
//! SIM_SEED=12345 cargo test -p resumable-core --test ietf_simulation -- --nocapture
//! ```
//!
//! With 2,000 seeds or more every outcome of the fault model must be reached.
//!
//! # The fault model
//!
//! A seed draws the upload (size, append size, interop version 5–9, whether the driver sees
//! 104s, discovery, retry budget) and the server. Per request the server may: store all, none
//! or any prefix of a body (and say so truthfully); lose the request before it arrives, or
//! process it and lose the answer; answer 5xx or 429, having stored a prefix or not; answer
//! 409 with its offset; answer 413 with a smaller `max-append-size`; refuse (400/403); lose the
//! upload (404/410); let it expire (`max-age`, then 404). Servers differ in the optional
//! headers they omit: `Upload-Offset` on append answers (from interop 7 on), `Upload-Limit`,
//! `Upload-Length` and `Upload-Complete` on `HEAD`, progress 104s. Some servers have a
//! `max-size` below the source. Some seeds arm one lie, told once when it applies: an offset
//! beyond what was sent (HEAD, append, 104), an offset below one acknowledged, a HEAD without
//! `Upload-Offset`, another `Upload-Length`, a creation without `Location`, completion claimed
//! short of the length.
//!
//! The driver may crash at any request (its answer is lost) and restart from the state it
//! saved before that request; without a state it creates a new upload.
//!
//! # Invariants, on every run
//!
//! 1. Success only when the server's upload holds exactly the source, is complete, and the
//!    reported size is the source's (R5, R7, R9).
//! 2. `persisted()` never passes what the server holds, never decreases within a process;
//!    every body starts at `persisted()` and at the server's offset (R8, R9).
//! 3. Every request follows R1, R3, R9, R11 (the server's own checks find nothing): the
//!    interop version, content types, offsets, lengths, append sizes within the limits.
//! 4. Bounded requests and waits.
//! 5. A typed error licensed by what happened; after a lie no request but a `DELETE`.
//! 6. A stale answer is `UnknownRequest` and changes nothing; `Done` is sticky.

mod seeds;
mod sim;

use std::fmt::Write as _;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Method, Response};
use resumable_core::ietf::{IetfCompletion, IetfConfig, IetfResumeState, IetfStart, IetfUpload};
use resumable_core::{
    Action, Error, ProtocolViolation, RetryPolicy, Transmit, TransportFailure, Upload, UsageError,
};
use sim::SimRng as Rng;

const DEFAULT_SEEDS: u64 = 300;
const ENDPOINT: &str = "https://rufh.sim/files";
const HARD_CAP: u64 = 100_000;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Lie {
    HeadBeyond,
    AppendBeyond,
    InterimBeyond,
    Backwards,
    HeadNoOffset,
    LengthDiffers,
    NoLocation,
    ShortComplete,
}

#[derive(Clone, Copy, Debug)]
struct Knobs {
    drop_before: u16,
    drop_after: u16,
    status: u16,
    partial: u16,
    conflict: u16,
    too_large: u16,
    refuse: u16,
    gone: u16,
    max_age: Option<u64>,
    max_size: Option<u64>,
    max_append: Option<u64>,
    omit_append_offset: bool,
    omit_limit: bool,
    omit_head_length: bool,
    omit_head_complete: bool,
    progress_104: bool,
}

#[derive(Clone, Debug)]
struct Stored {
    path: String,
    bytes: Vec<u8>,
    length: Option<u64>,
    complete: bool,
    expires_at: Option<u64>,
    gone: bool,
    /// The end of the furthest body that reached the server.
    reached: u64,
}

#[derive(Clone, Debug, Default)]
struct Happened {
    retryable: u64,
    refused: bool,
    gone: bool,
    expired: bool,
    too_large: bool,
    lie: Option<Lie>,
}

struct Server {
    rng: Rng,
    knobs: Knobs,
    interop: u32,
    uploads: Vec<Stored>,
    lie: Option<Lie>,
    lie_skip: u64,
    violations: Vec<String>,
    happened: Happened,
    source_len: u64,
    /// Requests other than DELETE that reached the server after its lie.
    after_lie: u64,
    handled: u64,
    lie_request: Option<u64>,
    /// The current `max-append-size` (lowered by 413s).
    max_append: Option<u64>,
}

/// A server's answer: the 104s it sent before, and the final response or a failure.
struct Exchange {
    interim: Vec<Response<()>>,
    last: Result<Response<Bytes>, TransportFailure>,
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
            return Fate::DropBefore(r.pick(&[TransportFailure::Connect, TransportFailure::Reset]));
        }
        if r.chance(k.drop_after) {
            return Fate::DropAfter(r.pick(&[TransportFailure::Reset, TransportFailure::Timeout]));
        }
        if r.chance(k.status) {
            return Fate::Status(r.pick(&[429, 500, 502, 503]));
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

    fn limit(&self) -> Option<String> {
        if self.knobs.omit_limit {
            return None;
        }
        let mut parts = vec!["min-size=0".to_owned()];
        if let Some(m) = self.knobs.max_size {
            parts.push(format!("max-size={m}"));
        }
        if let Some(m) = self.max_append {
            parts.push(format!("max-append-size={m}"));
        }
        if let Some(a) = self.knobs.max_age {
            let key = if self.interop >= 7 {
                "max-age"
            } else {
                "expires"
            };
            parts.push(format!("{key}={a}"));
        }
        Some(parts.join(", "))
    }

    fn final_(&self, status: u16) -> http::response::Builder {
        Response::builder().status(status)
    }

    fn with_limit(&self, b: http::response::Builder) -> http::response::Builder {
        match self.limit() {
            Some(l) => b.header("upload-limit", l),
            None => b,
        }
    }

    fn plain(&self, status: u16) -> Result<Response<Bytes>, TransportFailure> {
        Ok(self.final_(status).body(Bytes::new()).unwrap())
    }

    fn find(&self, t: &Transmit) -> Option<usize> {
        let uri = t.request.uri();
        if uri.authority().map(|a| a.as_str()) != Some("rufh.sim") {
            return None;
        }
        self.uploads.iter().position(|u| u.path == uri.path())
    }

    fn keep(&mut self, i: usize, body: &[u8]) -> usize {
        let keep = if self.rng.chance(self.knobs.partial) {
            self.rng.below(body.len() as u64 + 1) as usize
        } else {
            body.len()
        };
        self.uploads[i].bytes.extend_from_slice(&body[..keep]);
        keep
    }

    fn handle(&mut self, wall: u64, t: &Transmit, body: &[u8]) -> Exchange {
        self.handled += 1;
        let method = t.request.method().clone();
        if self.happened.lie.is_some() && method != Method::DELETE {
            self.after_lie += 1;
        }
        if Self::header(t, "upload-draft-interop-version") != Some(&self.interop.to_string()) {
            self.violations
                .push(format!("{method} without the interop version (R1)"));
        }
        let cl = Self::header(t, "content-length").and_then(|v| v.parse::<usize>().ok());
        if (method == Method::POST || method == Method::PATCH) && cl != Some(body.len()) {
            self.violations
                .push(format!("{method}: Content-Length {cl:?}"));
        }
        let mut interim = Vec::new();
        let last = match method {
            Method::OPTIONS => self
                .with_limit(self.final_(204))
                .body(Bytes::new())
                .map_err(|_| TransportFailure::Other),
            Method::POST => self.create(wall, t, body, &mut interim),
            Method::HEAD => self.head(wall, t),
            Method::PATCH => self.patch(wall, t, body, &mut interim),
            Method::DELETE => match self.find(t) {
                Some(i) => {
                    self.uploads[i].gone = true;
                    self.plain(204)
                }
                None => self.plain(404),
            },
            m => {
                self.violations.push(format!("unexpected method {m}"));
                self.plain(405)
            }
        };
        Exchange { interim, last }
    }

    fn interim(&self) -> http::response::Builder {
        Response::builder()
            .status(104)
            .header("upload-draft-interop-version", self.interop.to_string())
    }

    fn create(
        &mut self,
        wall: u64,
        t: &Transmit,
        body: &[u8],
        interim: &mut Vec<Response<()>>,
    ) -> Result<Response<Bytes>, TransportFailure> {
        let complete = Self::header(t, "upload-complete");
        let length = Self::header(t, "upload-length").and_then(|v| v.parse::<u64>().ok());
        let is_complete = complete == Some("?1");
        if complete != Some("?1") && complete != Some("?0") {
            self.violations
                .push("creation without Upload-Complete (R3)".into());
        }
        if let Some(n) = length
            && n != self.source_len
        {
            self.violations
                .push(format!("creation with Upload-Length {n} (R3)"));
        }
        if is_complete && body.len() as u64 != self.source_len {
            self.violations
                .push("?1 on a creation that is not the whole source (R3)".into());
        }
        let fate = self.fate(false);
        match fate {
            Fate::DropBefore(f) => return Err(f),
            Fate::Refuse(s) => {
                self.happened.refused = true;
                return self.plain(s);
            }
            Fate::Status(s) => {
                self.happened.retryable += 1;
                return self.plain(s);
            }
            _ => {}
        }
        let n = self.uploads.len();
        let length = length.or(is_complete.then_some(body.len() as u64));
        self.uploads.push(Stored {
            path: format!("/files/u{n}x{}", self.rng.below(1 << 30)),
            bytes: Vec::new(),
            length,
            complete: false,
            expires_at: self.knobs.max_age.map(|a| wall + a),
            gone: false,
            reached: body.len() as u64,
        });
        let location = format!("https://rufh.sim{}", self.uploads[n].path);
        let mut b = self.interim().header("location", &location);
        if let Some(l) = self.limit() {
            b = b.header("upload-limit", l);
        }
        interim.push(b.body(()).unwrap());
        if self.max_append.is_some_and(|m| (body.len() as u64) > m) {
            self.happened.too_large = true;
            return self
                .with_limit(self.final_(413))
                .body(Bytes::new())
                .map_err(|_| TransportFailure::Other);
        }
        let kept = self.keep(n, body) as u64;
        if self.knobs.progress_104 && kept > 0 {
            interim.push(
                self.interim()
                    .header("upload-offset", kept.to_string())
                    .body(())
                    .unwrap(),
            );
        }
        if let Fate::DropAfter(f) = fate {
            self.happened.retryable += 1;
            return Err(f);
        }
        if kept as usize != body.len() {
            // The server failed part-way.
            self.happened.retryable += 1;
            return self.plain(500);
        }
        if is_complete {
            self.uploads[n].complete = true;
            return self
                .final_(200)
                .header("upload-complete", "?1")
                .body(Bytes::new())
                .map_err(|_| TransportFailure::Other);
        }
        let mut b = self.with_limit(self.final_(201));
        if self.take_lie(|l| l == Lie::NoLocation).is_none() {
            b = b.header("location", location);
        }
        if !body.is_empty() || self.rng.chance(500) {
            b = b.header("upload-offset", kept.to_string());
        }
        b.header("upload-complete", "?0")
            .body(Bytes::new())
            .map_err(|_| TransportFailure::Other)
    }

    fn upload(&mut self, wall: u64, t: &Transmit) -> Result<usize, u16> {
        let Some(i) = self.find(t) else {
            self.violations.push("a request to an unknown URL".into());
            return Err(404);
        };
        if self.uploads[i].expires_at.is_some_and(|at| wall >= at) && !self.uploads[i].complete {
            self.uploads[i].gone = true;
            self.happened.expired = true;
        }
        if self.uploads[i].gone {
            self.happened.gone = true;
            return Err(404);
        }
        Ok(i)
    }

    fn head(&mut self, wall: u64, t: &Transmit) -> Result<Response<Bytes>, TransportFailure> {
        let i = match self.upload(wall, t) {
            Ok(i) => i,
            Err(s) => return self.plain(s),
        };
        match self.fate(true) {
            Fate::DropBefore(f) | Fate::DropAfter(f) => return Err(f),
            Fate::Status(s) => {
                self.happened.retryable += 1;
                return self.plain(s);
            }
            Fate::Gone(s) => {
                self.uploads[i].gone = true;
                self.happened.gone = true;
                return self.plain(s);
            }
            Fate::Refuse(_) | Fate::Answer => {}
        }
        let held = self.uploads[i].bytes.len() as u64;
        let source_len = self.source_len;
        let lie = self.take_lie(|l| match l {
            Lie::HeadBeyond | Lie::HeadNoOffset | Lie::LengthDiffers => true,
            Lie::ShortComplete => held < source_len,
            _ => false,
        });
        let status = self.rng.pick(&[200, 204]);
        let mut b = self.with_limit(self.final_(status));
        let offset = match lie {
            // Beyond every byte the client sent this upload.
            Some(Lie::HeadBeyond) => Some(self.uploads[i].reached + 1 + self.rng.below(5)),
            Some(Lie::HeadNoOffset) => None,
            _ => Some(held),
        };
        if let Some(o) = offset {
            b = b.header("upload-offset", o.to_string());
        }
        let complete = self.uploads[i].complete || lie == Some(Lie::ShortComplete);
        if !self.knobs.omit_head_complete || lie == Some(Lie::ShortComplete) {
            b = b.header("upload-complete", if complete { "?1" } else { "?0" });
        }
        match (lie, self.uploads[i].length) {
            (Some(Lie::LengthDiffers), _) => {
                b = b.header("upload-length", (self.source_len + 1).to_string())
            }
            (_, Some(n)) if !self.knobs.omit_head_length => {
                b = b.header("upload-length", n.to_string())
            }
            _ => {}
        }
        b.header("cache-control", "no-store")
            .body(Bytes::new())
            .map_err(|_| TransportFailure::Other)
    }

    fn patch(
        &mut self,
        wall: u64,
        t: &Transmit,
        body: &[u8],
        interim: &mut Vec<Response<()>>,
    ) -> Result<Response<Bytes>, TransportFailure> {
        let i = match self.upload(wall, t) {
            Ok(i) => i,
            Err(s) => return self.plain(s),
        };
        let want_ct = (self.interop >= 6).then_some("application/partial-upload");
        if Self::header(t, "content-type") != want_ct {
            self.violations.push(format!(
                "PATCH with Content-Type {:?} at {} (R9, R19)",
                Self::header(t, "content-type"),
                self.interop
            ));
        }
        let offset = Self::header(t, "upload-offset").and_then(|v| v.parse::<u64>().ok());
        let complete = Self::header(t, "upload-complete") == Some("?1");
        let held = self.uploads[i].bytes.len() as u64;
        let end = offset.unwrap_or(held) + body.len() as u64;
        self.uploads[i].reached = self.uploads[i].reached.max(end);
        if self.uploads[i].complete {
            if !self.knobs.omit_head_complete || !body.is_empty() || offset != Some(held) {
                self.violations
                    .push("an append to a complete upload (R7)".into());
            }
            // The client could not know (this server leaves Upload-Complete out of HEAD):
            // replay the final answer (R7).
            return self
                .final_(200)
                .header("upload-complete", "?1")
                .body(Bytes::new())
                .map_err(|_| TransportFailure::Other);
        }
        let fate = self.fate(true);
        if let Fate::DropBefore(f) = fate {
            return Err(f);
        }
        if offset != Some(held) {
            self.violations
                .push(format!("PATCH at {offset:?}, the server holds {held} (R9)"));
            return self
                .final_(409)
                .header("upload-offset", held.to_string())
                .body(Bytes::new())
                .map_err(|_| TransportFailure::Other);
        }
        let length = self.uploads[i]
            .length
            .or(complete.then_some(held + body.len() as u64));
        if held + body.len() as u64 > length.unwrap_or(u64::MAX)
            || (complete && held + body.len() as u64 != self.source_len)
        {
            self.violations
                .push("a PATCH past or short of the length (R9)".into());
        }
        self.uploads[i].length = length;
        if self.rng.chance(self.knobs.conflict) {
            // Newest wins (R14): as if another request had moved on; honest offset.
            self.happened.retryable += 1;
            return self
                .final_(409)
                .header("upload-offset", held.to_string())
                .header("upload-complete", "?0")
                .body(Bytes::new())
                .map_err(|_| TransportFailure::Other);
        }
        if self.max_append.is_some_and(|m| (body.len() as u64) > m) {
            // The server enforces its limit (R11, R12).
            self.happened.too_large = true;
            return self
                .with_limit(self.final_(413))
                .body(Bytes::new())
                .map_err(|_| TransportFailure::Other);
        }
        if !body.is_empty() && self.rng.chance(self.knobs.too_large) && body.len() > 1 {
            self.happened.too_large = true;
            self.max_append = Some((body.len() as u64 / 2).max(1));
            return self
                .with_limit(self.final_(413))
                .body(Bytes::new())
                .map_err(|_| TransportFailure::Other);
        }
        match fate {
            Fate::Refuse(s) => {
                self.happened.refused = true;
                return self.plain(s);
            }
            Fate::Gone(s) => {
                self.uploads[i].gone = true;
                self.happened.gone = true;
                return self.plain(s);
            }
            Fate::DropAfter(f) => {
                self.keep(i, body);
                self.happened.retryable += 1;
                return Err(f);
            }
            Fate::Status(s) => {
                if self.rng.chance(500) {
                    self.keep(i, body);
                }
                self.happened.retryable += 1;
                return self.plain(s);
            }
            Fate::DropBefore(_) | Fate::Answer => {}
        }
        let kept = self.keep(i, body) as u64;
        if self.knobs.progress_104 && kept > 0 {
            let lie = self.take_lie(|l| l == Lie::InterimBeyond);
            let shown = if lie.is_some() {
                held + body.len() as u64 + 1
            } else {
                held + kept
            };
            interim.push(
                self.interim()
                    .header("upload-offset", shown.to_string())
                    .body(())
                    .unwrap(),
            );
        }
        if kept < body.len() as u64 {
            self.happened.retryable += 1;
            return self.plain(503);
        }
        let new = held + kept;
        if complete && new == self.source_len {
            self.uploads[i].complete = true;
        }
        let lie = self.take_lie(|l| match l {
            Lie::AppendBeyond => true,
            Lie::Backwards => held > 0,
            _ => false,
        });
        let mut b = self.final_(if complete { 200 } else { 204 });
        let shown = match lie {
            Some(Lie::AppendBeyond) => Some(new + 1 + self.rng.below(3)),
            Some(Lie::Backwards) => Some(self.rng.below(held)),
            _ if self.knobs.omit_append_offset && self.interop >= 7 => None,
            _ => Some(new),
        };
        if let Some(o) = shown {
            b = b.header("upload-offset", o.to_string());
        }
        if self.interop >= 7 || complete {
            b = b.header("upload-complete", if complete { "?1" } else { "?0" });
        }
        b.body(Bytes::new()).map_err(|_| TransportFailure::Other)
    }
}

struct Setup {
    source: Vec<u8>,
    config: IetfConfig,
    crash: u64,
    max_restarts: u32,
}

fn draw(rng: &mut Rng) -> (Setup, Server) {
    let len = match rng.below(10) {
        0 => 0,
        1 => 1 + rng.below(5),
        _ => 1 + rng.below(3000),
    } as usize;
    let source: Vec<u8> = (0..len).map(|i| (i * 31 + 7) as u8).collect();
    let mut config = IetfConfig::new(len as u64);
    config.interop_version = rng.pick(&[5, 6, 7, 8, 9]);
    config.append_size = 1 + rng.below(1200);
    config.sees_informational = rng.chance(500);
    config.discover = rng.chance(300);
    config.retry = RetryPolicy::default().with_seed(rng.next_u64());
    config.retry.max_attempts = rng.pick(&[2, 4, 6, 10]);
    let chatty = rng.chance(700);
    let p = |rng: &mut Rng, hi: u64| if chatty { rng.below(hi) as u16 } else { 0 };
    let knobs = Knobs {
        drop_before: p(rng, 80),
        drop_after: p(rng, 80),
        status: p(rng, 100),
        partial: p(rng, 400),
        conflict: p(rng, 40),
        too_large: p(rng, 40),
        refuse: if rng.chance(100) { 10 } else { 0 },
        gone: if rng.chance(100) { 10 } else { 0 },
        max_age: rng.chance(100).then(|| 1 + rng.below(30)),
        max_size: rng
            .chance(50)
            .then(|| (len as u64).saturating_sub(1 + rng.below(3))),
        max_append: rng.chance(300).then(|| 1 + rng.below(800)),
        omit_append_offset: rng.chance(400),
        omit_limit: rng.chance(300),
        omit_head_length: rng.chance(300),
        omit_head_complete: rng.chance(200),
        progress_104: rng.chance(400),
    };
    let lie = rng.chance(150).then(|| {
        rng.pick(&[
            Lie::HeadBeyond,
            Lie::AppendBeyond,
            Lie::InterimBeyond,
            Lie::Backwards,
            Lie::HeadNoOffset,
            Lie::LengthDiffers,
            Lie::NoLocation,
            Lie::ShortComplete,
        ])
    });
    // A 104's lie is only seen by a driver that sees 104s.
    let lie = lie.filter(|l| config.sees_informational || *l != Lie::InterimBeyond);
    let server = Server {
        rng: Rng::new(rng.next_u64()),
        knobs,
        interop: config.interop_version,
        uploads: Vec::new(),
        lie,
        lie_skip: rng.below(3),
        violations: Vec::new(),
        happened: Happened::default(),
        source_len: len as u64,
        after_lie: 0,
        handled: 0,
        lie_request: None,
        max_append: knobs.max_append,
    };
    let crash = if rng.chance(400) {
        1 + rng.below(40)
    } else {
        0
    };
    (
        Setup {
            source,
            config,
            crash,
            max_restarts: 3,
        },
        server,
    )
}

#[derive(Default)]
struct Summary {
    outcome: String,
    requests: u64,
    restarts: u32,
    transcript: String,
}

fn kind(outcome: &Result<IetfCompletion, Error>) -> String {
    match outcome {
        Ok(_) => "ok".into(),
        Err(e) => {
            let dbg = format!("{e:?}");
            dbg.split(['(', ' ', '{']).next().unwrap_or("?").to_owned()
        }
    }
}

fn run(seed: u64, transcript: bool) -> Result<Summary, String> {
    let mut rng = Rng::new(seed ^ 0x7275_6668_0000_0000);
    let (setup, mut server) = draw(&mut rng);
    let source = &setup.source;
    let total = source.len() as u64;
    let t0 = Instant::now();
    let mut now = t0;
    let wall = |now: Instant| now.saturating_duration_since(t0).as_secs();
    let mut log = String::new();
    let mut summary = Summary::default();
    let mut saved: Option<IetfResumeState> = None;
    let fresh = || IetfStart::Create {
        endpoint: ENDPOINT.parse().unwrap(),
    };
    let mut upload = IetfUpload::new(fresh(), setup.config.clone())
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
        match upload.poll_action(now) {
            Action::Done(outcome) => break outcome,
            Action::Wait(until) => {
                if until < now {
                    return Err("a wait that is already over".into());
                }
                waits += 1;
                now = until.max(now + Duration::from_millis(1));
            }
            Action::Idle => return Err("Idle with nothing in flight".into()),
            Action::Read(_) => return Err("a read".into()),
            Action::Send(t) => {
                requests_total += 1;
                summary.requests += 1;
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
                let exchange = server.handle(wall(now), &t, body);
                now += Duration::from_millis(5 + r.end.saturating_sub(r.start) / 100);
                crash_at = crash_at.saturating_sub(1);
                // A process that has seen a lie is deleting the upload: it does not crash.
                let lie_seen =
                    server.happened.lie.is_some() && server.lie_request != Some(server.handled);
                if crash_at == 0
                    && setup.crash > 0
                    && summary.restarts < setup.max_restarts
                    && !lie_seen
                {
                    if server.lie_request == Some(server.handled) {
                        server.happened.lie = None;
                        server.lie_request = None;
                    }
                    summary.restarts += 1;
                    crash_at = setup.crash;
                    last_persisted = 0;
                    let start = match saved.clone() {
                        Some(state) => IetfStart::Resume(state),
                        None => fresh(),
                    };
                    let _ = writeln!(log, "-- crash, restart {}", summary.restarts);
                    upload = IetfUpload::new(start, setup.config.clone())
                        .map_err(|e| format!("restart failed: {e}"))?;
                    stale = None;
                    continue;
                }
                if setup.config.sees_informational {
                    for i in exchange.interim {
                        let _ = writeln!(log, "  ~> 104 {:?}", i.headers().get("upload-offset"));
                        match upload.handle_informational(now, t.id, i) {
                            Ok(())
                            | Err(UsageError::UnknownRequest(_))
                            | Err(UsageError::Finished) => {}
                            Err(e) => return Err(format!("104 refused: {e}")),
                        }
                    }
                } else if server.lie_request == Some(server.handled)
                    && server.happened.lie == Some(Lie::InterimBeyond)
                {
                    server.happened.lie = None;
                }
                match exchange.last {
                    Ok(response) => {
                        let _ = writeln!(log, "  -> {}", response.status());
                        let keep = rng.chance(100).then(|| (t.id, response.clone()));
                        match upload.handle_response(now, t.id, response) {
                            Ok(()) | Err(UsageError::Finished) => {}
                            Err(e) => return Err(format!("answer refused: {e}")),
                        }
                        if let Some(s) = keep {
                            stale = Some(s);
                        }
                    }
                    Err(f) => {
                        let _ = writeln!(log, "  -> {f:?}");
                        match upload.handle_failure(now, t.id, f) {
                            Ok(()) | Err(UsageError::Finished) => {}
                            Err(e) => return Err(format!("failure refused: {e}")),
                        }
                    }
                }
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
        let p = upload.persisted();
        if p < last_persisted {
            return Err(format!(
                "persisted went from {last_persisted} to {p}\n{log}"
            ));
        }
        if p > 0 && server.happened.lie.is_none() {
            last_persisted = p;
            let held = upload
                .upload_url()
                .and_then(|u| server.uploads.iter().find(|s| s.path == u.expose().path()))
                .map(|s| s.bytes.len() as u64);
            if held.is_none_or(|h| p > h) {
                return Err(format!(
                    "persisted {p} but the server holds {held:?}\n{log}"
                ));
            }
        }
    };
    summary.outcome = kind(&outcome);
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
            let stored = match &done.upload_url {
                Some(url) => server
                    .uploads
                    .iter()
                    .find(|s| s.path == url.expose().path()),
                // An optimistic creation that completed: the newest upload of the whole source.
                None => server.uploads.iter().rev().find(|s| s.complete),
            }
            .ok_or("success on an upload the server does not have")?;
            if stored.bytes != *source || !stored.complete || done.size != total {
                return Err(format!(
                    "success, but the server holds {} bytes (complete {}) of {total}\n{log}",
                    stored.bytes.len(),
                    stored.complete
                ));
            }
        }
        Err(e) => {
            let licensed = match e {
                Error::RetriesExhausted { .. } => {
                    h.retryable > 0 || h.too_large || server.knobs.partial > 0
                }
                Error::SessionGone { .. } | Error::Expired { .. } => h.gone || h.expired,
                Error::Server { status, .. } if status.as_u16() == 413 => h.too_large,
                Error::Server { .. } => h.refused,
                Error::Unsupported(_) => server.knobs.max_size.is_some_and(|m| m < total),
                Error::Protocol(v) => matches!(
                    (h.lie, v),
                    (
                        Some(Lie::HeadBeyond | Lie::AppendBeyond | Lie::InterimBeyond),
                        ProtocolViolation::RangeBeyondSent { .. },
                    ) | (
                        Some(Lie::Backwards),
                        ProtocolViolation::PersistedWentBackwards { .. }
                    ) | (
                        Some(Lie::HeadNoOffset),
                        ProtocolViolation::MalformedResponse(_)
                    ) | (
                        Some(Lie::LengthDiffers),
                        ProtocolViolation::LengthDiffers { .. }
                    ) | (Some(Lie::NoLocation), ProtocolViolation::MissingLocation)
                        | (
                            Some(Lie::ShortComplete),
                            ProtocolViolation::PrematureCompletion { .. }
                        )
                ),
                _ => false,
            };
            if !licensed {
                return Err(format!("unlicensed error {e:?} after {h:?}\n{log}"));
            }
        }
    }
    if server.after_lie > 0 {
        return Err(format!(
            "{} requests after the lie {:?}\n{log}",
            server.after_lie, h.lie
        ));
    }
    let a = u64::from(setup.config.retry.max_attempts);
    // 413s shrink the appends: count progress in the smallest size the server allowed.
    let size = setup
        .config
        .append_size
        .min(server.max_append.unwrap_or(u64::MAX))
        .max(1);
    let progress = total / size + total.min(64) + 4;
    let bound = (progress * 2 + u64::from(summary.restarts) + 4) * (2 * a + 8);
    if requests_total > bound {
        return Err(format!("{requests_total} requests, bound {bound}\n{log}"));
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
fn ietf() {
    seeds::run_seeds(
        "ietf",
        "ietf_simulation",
        DEFAULT_SEEDS,
        10,
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
