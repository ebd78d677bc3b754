//! Deterministic simulation: every upload (GCS, TON, media v1.1 and v2, the batch compliance
//! job) against a seeded simulated server on a simulated clock, 10,000 seeds per protocol by
//! default. Rule ids are from `docs/protocols`.
//!
//! # Running it
//!
//! ```text
//! cargo test -p resumable-core --test simulation                    # 10,000 seeds per protocol
//! SIM_SEEDS=100000 cargo test -p resumable-core --test simulation   # more seeds
//! SIM_SEED=12345 SIM_PROTOCOL=gcs cargo test -p resumable-core --test simulation -- --nocapture
//! scripts/soak                                                      # 1,000,000 per protocol
//! ```
//!
//! `SIM_SEED` runs that one seed (every failing seed is printed with this command) and prints
//! its transcript; `SIM_PROTOCOL` (`gcs`, `ton`, `media-v1`, `media-v2`, `compliance`) runs one
//! protocol; `SIM_START` is the first seed of a range; `SIM_THREADS` splits each protocol's
//! seeds over that many threads. A seed's run depends on nothing else (not the profile, the threads or
//! the other seeds): `a_seed_replays_exactly` checks it.
//!
//! # The fault model
//!
//! A seed draws the upload (size, chunk or segment size, how it starts, checksums, retry
//! policy), the server's behaviour and the driver's. Per request the server may:
//! - store all, none or a prefix of a chunk (GCS: any byte count or 256 KiB units; TON: whole
//!   minimum chunks; media: the segment or nothing), and report it truthfully;
//! - lose the request before it arrives, or process it and lose the response (connect, reset,
//!   timeout, truncated response);
//! - answer 408/429/5xx, alone or in bursts of up to 5 requests, with or without
//!   `Retry-After` (seconds or a date) or `x-rate-limit-reset`, having stored the chunk or not;
//! - refuse (4xx, in each protocol's error shapes), or say the session is gone (404/410);
//! - answer a `308` without `Range` (nothing stored), in both TON `Range` forms and meanings;
//! - garble bodies: garbage or truncated JSON on completions, error bodies, APPEND answers, and
//!   on the answers the client must parse (INIT, FINALIZE, STATUS);
//! - lie once, detectably: `Range` beyond what was sent, not from 0, backwards, unparsable or
//!   unreadable; completion before the last byte; a wrong size or checksum; missing, garbage or
//!   wrong `Location` and chunk limits; another media id; odd statuses;
//! - expire the session (GCS: 404 after a deadline; TON: `Expires`; media:
//!   `expires_after_secs`).
//!
//! The compliance job (C1–C3) meets a simulated X API (`sim/compliance.rs`) whose `upload_url`
//! is a signed URL of the same simulated GCS server, with its faults and lies (a resumable
//! job's upload is a GCS session on it; a one-`PUT` job's is one `PUT`, answered by the API's
//! server with the API's faults). Create answers carry `upload_url`, `resumable` (sometimes
//! `false` to a job created resumable, C2) and the timestamps; status answers go `created`,
//! then `in_progress` for up to 7 polls once the upload has arrived, then `complete` or
//! `failed`, or `expired` when the upload arrived after `upload_expires_at` (or not by then);
//! some carry only `id` and `status`. Per API request the server may refuse (a final 4xx in the
//! API's shapes), lose the request or the response, answer 429 with `x-rate-limit-reset`
//! (sometimes `Retry-After` too) or a 5xx with or without `Retry-After`, garble a 2xx body
//! (garbage, cut short, no `data`), or lie once (a job without `upload_url`, an id that cannot
//! go in a URL, a job of the other type, a status about another job or unknown). The upload URL
//! refuses requests from `upload_expires_at` on (2 s to 15 minutes after creation), with a
//! `Date` that says so; the session it started lives on (G3). Poll intervals (6–30 s, growing
//! to at most 2 minutes) and the poll deadline are drawn; the file may be a stream of unknown
//! size.
//!
//! The driver may: crash at any request (the request reaches the server, its response is lost)
//! and restart from the last saved resume state (GCS: sometimes from the bare session URI;
//! compliance: `ComplianceJob::resume`, even past the upload URL's expiry, after checking that
//! `check_upload_url` agrees with the server's clock); hand in reads in pieces; and feed stale answers: the last answer again (a duplicate), an
//! older request's answer (reordered), or an answer for an id never handed out. Media uploads
//! run with 1 to 3 APPENDs in flight, answered in random order. Every request takes simulated
//! time (5 ms plus the body at the link's speed; a timeout 30 s more); `Wait`s jump the clock.
//!
//! # Invariants, on every run
//!
//! 1. Success only when the server holds exactly the source (GCS: the session's bytes and its
//!    completion; TON: the stored object; media: the finalized segments in order, processing
//!    ended `succeeded`; compliance: the server said `complete` for the job, which it does only
//!    once the job's upload arrived, and every completed GCS session of the job, or its one
//!    `PUT`, holds exactly the ids file), and the reported size is the source's.
//! 2. No byte past an acknowledged range is assumed stored: after every input
//!    `persisted() <= held`, what the server holds for the session the client works on (its
//!    contiguous prefix); `persisted()` never decreases within a process and never passes the
//!    source; no request sends bytes below `persisted()`.
//! 3. Re-sent bytes are bounded:
//!    `resent <= lost + F·W·C + B`, where `resent` = source bytes in all request bodies minus
//!    the distinct source bytes ever sent; `lost` = bytes of request bodies the server did not
//!    keep and did not already hold (lost in transit, dropped by partial persistence);
//!    `F` = faults: lost responses, retryable statuses, refusals, crashes, and TON `Range`
//!    answers whose two readings both fit (T5, minimum chunk 1: the client may take the smaller
//!    and send one byte again);
//!    `W` = requests in flight at once (1, media up to 3); `C` = the largest chunk sent;
//!    `B` = media only: bytes of segments the server held past the saved `next_segment` at
//!    each crash (the resume state keeps the contiguous prefix, so a resumed upload sends them
//!    again). GCS is held to `resent <= lost` (no duplicate byte at all): it queries the server
//!    after every failure and restart (G8).
//! 4. Bounded steps: with `P` progress events (session created, `persisted()` grew, any media
//!    2xx), `R` restarts, `A` the retry budget: requests `<= (P + R + 1)(2A + 4) + W`; waits
//!    `<=` requests `+ 1`; reads `<= 20 (⌈S/chunk⌉ + 2)(R + 1)`; actions `<= 2·requests +
//!    waits + reads + 1`; `P` within the protocol's count of chunks, segments and polls.
//! 5. Time: every backoff `Wait` ends within the retry deadline of its run of failures (from
//!    the first failure after the last progress), every processing wait within
//!    `MAX_CHECK_AFTER`; total simulated time `<= (P + R + 1)·deadline + polls·MAX_CHECK_AFTER
//!    + requests·(30 s + 5 ms + C at the link's speed)`.
//! 6. A typed error otherwise, licensed by what happened: `RetriesExhausted` only after
//!    retryable failures, `Server`/`Api` only after a refusal, `SessionGone`/`Expired`/
//!    `MediaExpired` only after 404/410 or expiry, `Protocol`/`Integrity` only after a lie or a
//!    garbled body, `Processing*` only after processing said so; compliance: `Failed` and
//!    `Expired` only after the job's status said so, `UploadUrlExpired` only once the server's
//!    clock passed `upload_expires_at`, `PollDeadline` only after an unfinished status or failed
//!    polls; never `Usage`. A lie must end
//!    the upload with the error it calls for at once (for a GCS completion: once the rest of
//!    the source is read to check it, G7).
//! 7. A stale answer (duplicate, reordered, or never handed out) is
//!    `UsageError::UnknownRequest` and changes nothing (the upload's `Debug`, `persisted()` and
//!    resume state are the same after it).
//! 8. `Done` is sticky: polls repeat the outcome, every `handle_*` is `UsageError::Finished`.
//! 9. The simulated server's own checks of the client (G1–G6, T1–T6, M1–M6, C1–C3) find
//!    nothing, no panic happens, every request is handed out once, and `Idle` comes only with
//!    requests in flight. For compliance these include: no job is created twice (once the
//!    client has read a create answer, or resumed from a state, it never POSTs again); every
//!    API request carries the API headers and no request to `upload_url` or the session does
//!    (C2); the create body names the type and `resumable`, a resumable job is uploaded
//!    resumably whatever the answer said and a one-`PUT` job by one `PUT` (C2); no poll before
//!    the upload arrived; and the pace of polls (C3): after a status that finds the job
//!    unfinished the next API request waits the poll interval (never under 6 s), after a
//!    retryable answer what it asks for (`x-rate-limit-reset` against `Date`, or
//!    `Retry-After`, capped by the policy) and at least the first backoff, after a transport
//!    failure the first backoff; only a process's first API request (the first poll after the
//!    upload, a resumed job's poll) goes at once; at most 150 polls in any 15 minutes.
//!
//! A lie is judged by what the server saw, so in a run with a lie armed the driver neither
//! answers in the server's place (bursts) nor resumes from a bare session URI (which knows
//! nothing to contradict). Core bugs the simulation found are kept as regression tests at the
//! end of this file.

mod sim;

use std::borrow::Cow;
use std::fmt::{self, Debug, Write as _};
use std::ops::Range;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{HeaderValue, Method, Response};
use resumable_core::checksum::Checksums;
use resumable_core::compliance::{
    CompletedJob, ComplianceConfig, ComplianceJob, ComplianceResumeState, JobError, JobStatus,
    JobType, Phase, SavedPhase,
};
use resumable_core::gcs::{GcsCompletion, GcsConfig, GcsUpload, ResumeState, Start};
use resumable_core::media::{
    ApiVersion, MAX_CHECK_AFTER, MediaCompletion, MediaConfig, MediaResumeState, MediaUpload,
};
use resumable_core::ton::{TonCompletion, TonConfig, TonResumeState, TonStart, TonUpload};
use resumable_core::{
    Action, Error, RequestId, RetryPolicy, Transmit, TransportFailure, Upload, UsageError,
};
use sim::compliance::{
    API_BASE, API_HEADERS, API_LIES, ComplianceKnobs, ComplianceServer, JobEnd, Pace,
};
use sim::exchange::{Event, Exchange};
use sim::media::{
    MEDIA_LIES, MediaKnobs, MediaServer, Processing, ProcessingEnd, V1_ENDPOINT, V2_BASE,
};
use sim::ton::{TON_BUCKET, TON_LIES, TonKnobs, TonLie, TonServer};
use sim::{JSON_START, Knobs, Lie, ObjectJson, SimRng, SimServer, XML_START};

const G: u64 = sim::GRANULE;
const KIB: u64 = 1024;
/// A backstop far above every stated bound, so a runaway loop fails instead of hanging.
const HARD_CAP: u64 = 200_000;
/// Seeds per protocol in a default run.
const DEFAULT_SEEDS: u64 = 10_000;

// ---------------------------------------------------------------------------------------------
// Entry points
// ---------------------------------------------------------------------------------------------

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Protocol {
    Gcs,
    Ton,
    MediaV1,
    MediaV2,
    Compliance,
}

impl Protocol {
    fn name(self) -> &'static str {
        match self {
            Protocol::Gcs => "gcs",
            Protocol::Ton => "ton",
            Protocol::MediaV1 => "media-v1",
            Protocol::MediaV2 => "media-v2",
            Protocol::Compliance => "compliance",
        }
    }

    /// The outcomes a default run must reach (success, and each error kind the fault model
    /// can cause).
    fn outcomes(self) -> &'static [&'static str] {
        match self {
            Protocol::Gcs => &[
                "ok",
                "RetriesExhausted",
                "SessionGone",
                "Server",
                "Protocol",
                "Integrity",
            ],
            Protocol::Ton => &[
                "ok",
                "RetriesExhausted",
                "SessionGone",
                "Expired",
                "Server",
                "Protocol",
            ],
            Protocol::MediaV1 | Protocol::MediaV2 => &[
                "ok",
                "RetriesExhausted",
                "Api",
                "Protocol",
                "ProcessingFailed",
                "MediaExpired",
            ],
            Protocol::Compliance => &[
                "ok",
                "RetriesExhausted",
                "Api",
                "Protocol",
                "Integrity",
                "Failed",
                "UploadUrlExpired",
                "PollDeadline",
            ],
        }
    }

    /// One seeded run: `Ok` with its summary, or the invariant it broke. With `transcript`,
    /// every action and answer is recorded (in the summary, or after the error).
    fn run(self, seed: u64, transcript: bool) -> Result<Summary, String> {
        let mut rng = SimRng::new(seed ^ 0x51u64.wrapping_mul(self as u64 + 1) << 56);
        let setup = Setup::draw(&mut rng);
        match self {
            Protocol::Gcs => {
                Driver::new(GcsWorld::draw(&mut rng, &setup), setup, rng, transcript).run()
            }
            Protocol::Ton => {
                Driver::new(TonWorld::draw(&mut rng, &setup), setup, rng, transcript).run()
            }
            Protocol::MediaV1 | Protocol::MediaV2 => {
                let world = MediaWorld::draw(&mut rng, &setup, self == Protocol::MediaV2);
                Driver::new(world, setup, rng, transcript).run()
            }
            Protocol::Compliance => {
                let world = ComplianceWorld::draw(&mut rng, &setup);
                Driver::new(world, setup, rng, transcript).run()
            }
        }
    }
}

fn env_u64(name: &str) -> Option<u64> {
    let value = std::env::var(name).ok()?;
    Some(
        value
            .trim()
            .parse()
            .unwrap_or_else(|_| panic!("{name} must be a number")),
    )
}

/// Runs the protocol's seeds (see the module docs for the environment variables), reporting
/// every failing seed with the command that reproduces it.
fn simulate(protocol: Protocol) {
    if let Ok(only) = std::env::var("SIM_PROTOCOL")
        && only != protocol.name()
    {
        return;
    }
    if let Some(seed) = env_u64("SIM_SEED") {
        match catch(protocol, seed, true) {
            Ok(summary) => println!(
                "{}{} seed {seed}: {summary}",
                summary.transcript,
                protocol.name()
            ),
            Err(e) => panic!("{}", report(protocol, seed, &e)),
        }
        return;
    }
    let count = env_u64("SIM_SEEDS").unwrap_or(DEFAULT_SEEDS);
    let start = env_u64("SIM_START").unwrap_or(0);
    let threads = env_u64("SIM_THREADS").unwrap_or(1).clamp(1, 256);
    let began = Instant::now();
    // Each thread takes every `threads`-th seed; the results do not depend on the split.
    let parts: Vec<(Totals, Vec<u64>)> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..threads)
            .map(|t| {
                scope.spawn(move || {
                    let mut failures = Vec::new();
                    let mut totals = Totals::default();
                    let seeds = (start.saturating_add(t)..start.saturating_add(count))
                        .step_by(threads as usize);
                    for seed in seeds {
                        match catch(protocol, seed, false) {
                            Ok(summary) => totals.add(&summary),
                            Err(e) => {
                                eprintln!("{}", report(protocol, seed, &e));
                                failures.push(seed);
                                if failures.len() >= 20 {
                                    break;
                                }
                            }
                        }
                    }
                    (totals, failures)
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("a simulation thread"))
            .collect()
    });
    let mut failures = Vec::new();
    let mut totals = Totals::default();
    for (part, failed) in parts {
        totals.merge(part);
        failures.extend(failed);
    }
    println!(
        "{}: {count} seeds from {start} in {:.1?}: {totals}",
        protocol.name(),
        began.elapsed()
    );
    assert!(
        failures.is_empty(),
        "{} seeds of {} failed: {failures:?} (each printed above with its reproduction command)",
        failures.len(),
        protocol.name()
    );
    // The fault model reaches every outcome the protocol can end in.
    if count >= 2_000 {
        for kind in protocol.outcomes() {
            assert!(
                totals.outcomes.contains_key(*kind),
                "{}: no seed ended in {kind}: {:?}",
                protocol.name(),
                totals.outcomes
            );
        }
    }
}

fn catch(protocol: Protocol, seed: u64, transcript: bool) -> Result<Summary, String> {
    match catch_unwind(AssertUnwindSafe(|| protocol.run(seed, transcript))) {
        Ok(result) => result,
        Err(panic) => Err(format!(
            "panicked: {}",
            panic
                .downcast_ref::<String>()
                .map(String::as_str)
                .or_else(|| panic.downcast_ref::<&str>().copied())
                .unwrap_or("(no message)")
        )),
    }
}

fn report(protocol: Protocol, seed: u64, error: &str) -> String {
    format!(
        "SIMULATION FAILURE {} seed {seed}: {error}\n  reproduce: SIM_SEED={seed} SIM_PROTOCOL={} \
         cargo test -p resumable-core --test simulation -- --nocapture",
        protocol.name(),
        protocol.name()
    )
}

#[test]
fn gcs() {
    simulate(Protocol::Gcs);
}

#[test]
fn ton() {
    simulate(Protocol::Ton);
}

#[test]
fn media_v1() {
    simulate(Protocol::MediaV1);
}

#[test]
fn media_v2() {
    simulate(Protocol::MediaV2);
}

#[test]
fn compliance() {
    simulate(Protocol::Compliance);
}

/// A seed replays exactly: the same transcript (requests, answers, waits, outcome) twice.
#[test]
fn a_seed_replays_exactly() {
    if std::env::var_os("SIM_SEED").is_some() {
        return;
    }
    for protocol in [
        Protocol::Gcs,
        Protocol::Ton,
        Protocol::MediaV1,
        Protocol::MediaV2,
        Protocol::Compliance,
    ] {
        for seed in 0..40 {
            let a = protocol.run(seed, true).map(|s| s.transcript);
            let b = protocol.run(seed, true).map(|s| s.transcript);
            assert_eq!(a, b, "{} seed {seed} is not deterministic", protocol.name());
        }
    }
}

// ---------------------------------------------------------------------------------------------
// What a run draws besides the world
// ---------------------------------------------------------------------------------------------

/// The driver's and the retry policy's side of a run.
#[derive(Clone, Debug)]
struct Setup {
    policy: RetryPolicy,
    /// Per-mille chance that the process crashes at a request, and how many crashes at most.
    crash: u16,
    max_crashes: u32,
    /// Per-mille chance of a stale answer after each delivered one.
    stale: u16,
    /// Per-mille chance that a request starts a burst of 1 to 5 retryable statuses (G8, T6,
    /// M5), answered before the server sees the requests.
    burst: u16,
    /// The link's speed, in nanoseconds per byte.
    ns_per_byte: u64,
    /// Reads are sometimes handed in as shorter prefixes.
    piecewise_reads: bool,
    /// Per-mille rates of the server, scaled by the weather: 0 calm, 1 flaky, 2 stormy.
    weather: u16,
}

impl Setup {
    fn draw(rng: &mut SimRng) -> Setup {
        let mut policy = RetryPolicy::default().with_seed(rng.next_u64());
        policy.max_attempts = 2 + rng.below(9) as u32;
        policy.retry_deadline = Duration::from_secs(rng.pick(&[60, 120, 300, 600, 1200]));
        policy.max_retry_after = Duration::from_secs(rng.pick(&[30, 120, 3600]));
        policy.retry_transport = !rng.chance(30);
        Setup {
            policy,
            crash: rng.pick(&[0, 0, 10, 30, 80]),
            max_crashes: 1 + rng.below(3) as u32,
            stale: rng.pick(&[0, 50, 150]),
            burst: rng.pick(&[0, 0, 5, 20]),
            ns_per_byte: rng.pick(&[2, 20, 200, 2_000]),
            piecewise_reads: rng.chance(300),
            weather: rng.below(3) as u16,
        }
    }

    /// A per-mille rate for the weather: `calm` in calm weather, ×3 flaky, ×8 stormy.
    fn rate(&self, calm: u16) -> u16 {
        (calm * [1, 3, 8][self.weather as usize]).min(600)
    }

    /// The longest a request can take (a timeout plus the largest body).
    fn max_latency(&self, chunk: u64) -> Duration {
        Duration::from_secs(30) + self.latency(chunk)
    }

    fn latency(&self, bytes: u64) -> Duration {
        Duration::from_millis(5) + Duration::from_nanos(bytes.saturating_mul(self.ns_per_byte))
    }
}

/// The source bytes of every run: 4 MiB of fixed noise, each source a slice of it.
fn noise() -> &'static [u8] {
    static NOISE: OnceLock<Vec<u8>> = OnceLock::new();
    NOISE.get_or_init(|| {
        let mut rng = SimRng::new(0x5EED_5EED);
        (0..(4 << 20) / 8)
            .flat_map(|_| rng.next_u64().to_le_bytes())
            .collect()
    })
}

fn source(rng: &mut SimRng, len: u64) -> &'static [u8] {
    let all = noise();
    let offset = rng.below(all.len() as u64 - len + 1) as usize;
    &all[offset..offset + len as usize]
}

// ---------------------------------------------------------------------------------------------
// Worlds: a protocol's upload and simulated server
// ---------------------------------------------------------------------------------------------

/// One protocol's upload and simulated server, as the generic driver sees them.
trait World {
    type U: Upload<Output = Self::Output> + Debug;
    type Output: PartialEq + Debug;
    type State: Clone + Debug;

    /// The source.
    fn source(&self) -> &'static [u8];
    /// A new upload: from `saved` (a restarted process), or from the start.
    fn build(&mut self, saved: Option<&Self::State>) -> Self::U;
    /// The state a driver saves.
    fn save(upload: &Self::U) -> Option<Self::State>;
    /// The server handles one request whose body is `body`, arriving at `now`.
    fn serve(&mut self, now: Instant, send: &Transmit, body: &[u8]) -> Exchange;
    /// The driver's process died before it read the last response.
    fn response_lost(&mut self) {}
    /// What the server holds for the session `upload` works on (its contiguous prefix).
    fn held(&self, upload: &Self::U) -> u64;
    /// A number that grows exactly when the core counts progress (besides any 2xx, when
    /// [`World::progress_on_success`]).
    fn mark(upload: &Self::U) -> u64;
    /// Every 2xx is progress (media).
    fn progress_on_success(&self) -> bool {
        false
    }
    /// A completion may be unprovable (GCS, G3, G7): a restart resumed from a bare session
    /// URI, so the client cannot vouch for what the server held, or a completion's body was
    /// garbled, so its checksums are lost.
    fn unprovable(&self) -> bool {
        false
    }
    /// Invariant 1 for a success.
    fn check_success(&self, upload: &Self::U, output: &Self::Output) -> Result<(), String>;
    /// The server's checks of the client.
    fn violations(&self) -> Vec<String>;
    /// Requests in flight at once.
    fn window(&self) -> u64 {
        1
    }
    /// The bound's `B` term for a crash with `saved` as the last saved state.
    fn resend_debt(&self, _saved: Option<&Self::State>) -> u64 {
        0
    }
    /// GCS: no byte the server holds is ever sent again.
    fn no_duplicates(&self) -> bool {
        false
    }
    /// The most progress events one process can make (for invariant 4).
    fn max_progress(&self) -> u64;
    /// The largest read the core may ask for.
    fn read_chunk(&self) -> u64 {
        u64::MAX
    }
    /// Errors this run may end in whatever happens (for example the media id's expiry).
    fn base_licenses(&self) -> Licenses {
        Licenses::default()
    }
    /// A lie is armed. Its server judges what the client knows by the requests it saw, so the
    /// driver then answers no request in the server's place (no bursts).
    fn lying(&self) -> bool;
    /// The upload handed out `send` at `now` (compliance: the pace of its polls, C3).
    fn handed_out(&mut self, _now: Instant, _send: &Transmit) {}
    /// The upload gets `outcome` for `send` at `now`: the server's answer, or the driver's own
    /// in a burst.
    fn answered(
        &mut self,
        _now: Instant,
        _send: &Transmit,
        _outcome: &Result<Response<Bytes>, TransportFailure>,
    ) {
    }
    /// Errors the state at the end licenses (compliance: the upload URL expired by the clock,
    /// which the client may find out by itself, C2).
    fn final_licenses(&self, _now: Instant, _upload: &Self::U, _licenses: &mut Licenses) {}
}

// ---- GCS ----

struct GcsWorld {
    sim: SimServer,
    source: &'static [u8],
    config: GcsConfig,
    start: Start,
    rng: SimRng,
    /// Per-mille chance that a restart resumes from the bare session URI (G3).
    bare: u16,
    /// The session's expiry, after the first request (G3: a week; here minutes).
    expires_after: Option<Duration>,
    t0: Option<Instant>,
    garble: u16,
    wrong_location: u16,
    bogus: Vec<String>,
    lying: bool,
    unprovable: bool,
}

impl GcsWorld {
    fn draw(rng: &mut SimRng, setup: &Setup) -> Self {
        // MD5 is slow without optimisation: runs that compute it upload less.
        let md5 = rng.chance(30);
        let len = match rng.below(10) {
            _ if md5 => rng.below(2 * G),
            0 => rng.below(1000),
            1 => G * rng.below(12),
            2 => G * (1 + rng.below(8)) + rng.pick(&[1, G - 1]),
            _ => rng.below(3 * 1024 * KIB + 1),
        };
        let source = source(rng, len);
        let known = !rng.chance(150);
        let mut config = GcsConfig::new(known.then_some(len));
        config.chunk_size = if rng.chance(200) { 2 * G } else { G };
        let crc32c = !rng.chance(100);
        config.checksums = Checksums { crc32c, md5 };
        config.retry = setup.policy.clone();
        config.no_308 = rng.chance(100);
        config.fingerprint = format!("sim:{len}");
        let content_type = HeaderValue::from_static("application/octet-stream");
        let start = if rng.chance(500) {
            Start::Xml {
                url: XML_START.parse().expect("url"),
                content_type,
            }
        } else {
            config.start_headers.insert(
                http::header::AUTHORIZATION,
                HeaderValue::from_static("Bearer sim"),
            );
            Start::Json {
                url: JSON_START.parse().expect("url"),
                content_type,
                metadata: rng
                    .chance(500)
                    .then(|| Bytes::from_static(br#"{"name":"object.bin"}"#)),
            }
        };
        let knobs = gcs_knobs(rng, setup, config.checksums.md5);
        let mut sim = SimServer::new(rng.next_u64(), knobs);
        let lying = rng.chance(120);
        if lying && let Some((lie, skip)) = gcs_lie(rng, config.checksums) {
            sim = sim.with_lie(lie, skip);
        }
        GcsWorld {
            sim,
            source,
            config,
            start,
            // A client resumed from a bare session URI knows nothing the server can contradict,
            // so a lie about what it was told is no lie to it (G3): no bare restarts then.
            bare: if lying { 0 } else { 200 },
            lying,
            expires_after: rng
                .chance(80)
                .then(|| Duration::from_secs(60 + rng.below(1200))),
            t0: None,
            garble: if rng.chance(300) { 150 } else { 0 },
            wrong_location: if rng.chance(30) { 200 } else { 0 },
            bogus: Vec::new(),
            rng: SimRng::new(rng.next_u64()),
            unprovable: false,
        }
    }
}

/// The simulated GCS server's behaviour for a run (the GCS upload's, and a compliance job's
/// upload URL's).
fn gcs_knobs(rng: &mut SimRng, setup: &Setup, md5: bool) -> Knobs {
    let mut knobs = Knobs::flaky();
    knobs.drop_before = setup.rate(10);
    knobs.drop_after = setup.rate(10);
    knobs.status = setup.rate(25);
    knobs.retry_after = 300;
    knobs.max_retry_after_secs = rng.pick(&[5, 30, 90]);
    knobs.partial = rng.pick(&[0, 100, 300, 600]);
    knobs.arbitrary_prefix = rng.chance(500);
    knobs.refuse = if rng.chance(150) { 4 } else { 0 };
    knobs.gone = if rng.chance(150) { 4 } else { 0 };
    knobs.honour_no_308 = rng.chance(800);
    knobs.relative_location = rng.chance(300);
    knobs.object_json = rng.pick(&[ObjectJson::ByApi, ObjectJson::Always, ObjectJson::Never]);
    knobs.report_md5 = md5;
    knobs.numeric_size = rng.chance(300);
    knobs
}

/// A lie for the simulated GCS server to tell once, after skipping some chances; `None` when
/// the one drawn is about a checksum the client does not compute (no lie it can detect).
fn gcs_lie(rng: &mut SimRng, checksums: Checksums) -> Option<(Lie, u32)> {
    let lies = [
        Lie::RangeBeyondSent {
            extra: 1 + rng.below(1000),
        },
        Lie::RangeNotFromZero {
            start: 1 + rng.below(100),
            len: rng.below(1000),
        },
        Lie::RangeBackwards {
            per_mille: rng.below(1000) as u16,
        },
        Lie::GarbageRange(rng.below(11) as usize),
        Lie::CompleteEarly,
        Lie::TruncatedObject {
            per_mille: rng.below(1000) as u16,
        },
        Lie::WrongSize {
            delta: 1 + rng.below(100),
            bigger: rng.chance(500),
        },
        Lie::WrongCrc32c {
            xor: 1 + rng.below(1 << 31) as u32,
            in_header: rng.chance(500),
        },
        Lie::WrongMd5 {
            in_header: rng.chance(500),
        },
        Lie::NoLocation(rng.below(7) as usize),
        Lie::OddStatus(rng.pick(&[204, 302, 307])),
        Lie::ForeignCompletion {
            proof: rng.below(4) as u8,
        },
    ];
    let lie = rng.pick(&lies);
    // A checksum the client does not compute is no lie it can detect.
    let detectable = match lie {
        Lie::WrongCrc32c { .. } => checksums.crc32c,
        Lie::WrongMd5 { .. } => checksums.md5,
        _ => true,
    };
    detectable.then(|| (lie, rng.below(4) as u32))
}

impl World for GcsWorld {
    type U = GcsUpload;
    type Output = GcsCompletion;
    type State = ResumeState;

    fn source(&self) -> &'static [u8] {
        self.source
    }

    fn build(&mut self, saved: Option<&ResumeState>) -> GcsUpload {
        // A resumed client bounds claims by the total until its session answers (G3).
        self.sim.set_resumed_client(saved.is_some());
        let start = match saved {
            Some(s) if self.rng.chance(self.bare) => {
                self.unprovable = true;
                Start::Session(s.session.clone())
            }
            Some(s) => Start::Resume(s.clone()),
            None => self.start.clone(),
        };
        GcsUpload::new(start, self.config.clone()).expect("a valid upload")
    }

    fn save(upload: &GcsUpload) -> Option<ResumeState> {
        upload.resume_state()
    }

    fn unprovable(&self) -> bool {
        self.unprovable
    }

    fn serve(&mut self, now: Instant, send: &Transmit, body: &[u8]) -> Exchange {
        let t0 = *self.t0.get_or_insert(now);
        let uri = send.request.uri();
        let text = uri.to_string();
        if self.bogus.contains(&text) {
            return Exchange::new(Ok(status_only(404)), Event::Gone);
        }
        let start = *send.request.method() == Method::POST;
        if !start && self.expires_after.is_some_and(|e| now >= t0 + e) {
            return Exchange::new(Ok(status_only(404)), Event::Expired);
        }
        let before = self.sim.session_at(uri).map(|s| s.stored.len() as u64);
        let reply = self.sim.handle(&send.request, body);
        let after = self.sim.session_at(uri).map(|s| s.stored.len() as u64);
        let (new, dup) = match (before, after) {
            (Some(b), Some(a)) => (a - b, overlap(&send.body.source, b)),
            _ => (0, 0),
        };
        let event = sim::exchange::gcs_event(&reply, start);
        let mut outcome = reply.outcome;
        if let (Ok(response), Event::Answered | Event::Retryable | Event::Refused) =
            (&mut outcome, &event)
        {
            let success = response.status().is_success();
            if start && success && self.rng.chance(self.wrong_location) {
                // A Location that names no session: the client cannot tell (G1).
                let bogus = format!(
                    "{}/upload/session?upload_id=bogus-{}",
                    sim::ORIGIN,
                    self.bogus.len()
                );
                response.headers_mut().insert(
                    http::header::LOCATION,
                    HeaderValue::from_str(&bogus).expect("valid"),
                );
                self.bogus.push(bogus);
            } else if (reply.completion || !success) && self.rng.chance(self.garble) {
                // A body cut short or replaced: an unverifiable completion, an unreadable error.
                let garbage = garble(&mut self.rng, response.body());
                *response.body_mut() = garbage;
                self.unprovable |= reply.completion;
            }
        }
        Exchange {
            outcome,
            event,
            new,
            dup,
            ambiguous: false,
        }
    }

    fn response_lost(&mut self) {
        self.sim.response_lost();
    }

    fn held(&self, upload: &GcsUpload) -> u64 {
        upload
            .session()
            .and_then(|s| self.sim.session_at(s.expose()))
            .map_or(0, |s| s.stored.len() as u64)
    }

    fn mark(upload: &GcsUpload) -> u64 {
        u64::from(upload.session().is_some()) + 2 * upload.persisted()
    }

    fn check_success(&self, upload: &GcsUpload, done: &GcsCompletion) -> Result<(), String> {
        let session = upload
            .session()
            .and_then(|s| self.sim.session_at(s.expose()))
            .ok_or("success without a session on the server")?;
        if session.completed.is_none() {
            return Err("success, but the server never completed the session".into());
        }
        if session.stored != self.source {
            return Err(format!(
                "success, but the server holds {} bytes that differ from the {}-byte source",
                session.stored.len(),
                self.source.len()
            ));
        }
        if done.size != self.source.len() as u64 {
            return Err(format!("success with size {}", done.size));
        }
        Ok(())
    }

    fn violations(&self) -> Vec<String> {
        self.sim.violations().to_vec()
    }

    fn no_duplicates(&self) -> bool {
        true
    }

    fn lying(&self) -> bool {
        self.lying
    }

    fn max_progress(&self) -> u64 {
        2 + self.source.len() as u64
    }

    fn read_chunk(&self) -> u64 {
        self.config.chunk_size
    }
}

// ---- TON ----

struct TonWorld {
    server: TonServer,
    source: &'static [u8],
    config: TonConfig,
    start: TonStart,
    lying: bool,
}

impl TonWorld {
    fn draw(rng: &mut SimRng, setup: &Setup) -> Self {
        let len = if rng.chance(100) {
            1 + rng.below(100)
        } else {
            1 + rng.below(1024 * KIB)
        };
        let source = source(rng, len);
        let min = rng.pick(&[1, 2, 3, 256, 1000, 1024, 4096, 16384]);
        // At most about 40 chunks of the largest size.
        let floor = len.div_ceil(40).div_ceil(min) * min;
        let max = (min * (1 + rng.below(64))).max(floor);
        let mut config = TonConfig::new(HeaderValue::from_static("video/mp4"), len);
        config.chunk_size = (min + rng.below(2 * max)).max(floor);
        if rng.chance(300) {
            config.chunk_time = None;
        }
        config.retry = setup.policy.clone();
        config.fingerprint = format!("sim:{len}");
        config.start_headers.insert(
            http::header::AUTHORIZATION,
            HeaderValue::from_static("OAuth sim"),
        );
        let bucket_url = TON_BUCKET.parse().expect("url");
        let start = if rng.chance(100) {
            TonStart::Single { bucket_url }
        } else {
            TonStart::Resumable { bucket_url }
        };
        let knobs = TonKnobs {
            refuse: if rng.chance(150) { 4 } else { 0 },
            gone: if rng.chance(150) { 4 } else { 0 },
            drop_before: setup.rate(10),
            drop_after: setup.rate(10),
            status: setup.rate(25),
            retry_after: 300,
            max_retry_after_secs: rng.pick(&[5, 30, 90]),
            partial: rng.pick(&[0, 100, 300, 600]),
            min_chunk: min,
            max_chunk: max,
            expires_after_secs: if rng.chance(100) {
                30 + rng.below(600)
            } else {
                7 * 86_400
            },
            date_on_gone: rng.chance(700),
            wrong_location: if rng.chance(30) { 200 } else { 0 },
        };
        let mut server = TonServer::new(rng.next_u64(), knobs);
        let lying = rng.chance(150);
        if lying {
            let lie = match rng.pick(&TON_LIES) {
                TonLie::GarbageRange(_) => TonLie::GarbageRange(rng.below(8) as usize),
                lie => lie,
            };
            server = server.with_lie(lie, rng.below(4) as u32);
        }
        TonWorld {
            server,
            source,
            config,
            start,
            lying,
        }
    }
}

impl World for TonWorld {
    type U = TonUpload;
    type Output = TonCompletion;
    type State = TonResumeState;

    fn source(&self) -> &'static [u8] {
        self.source
    }

    fn build(&mut self, saved: Option<&TonResumeState>) -> TonUpload {
        let start = match saved {
            Some(s) => TonStart::Resume(s.clone()),
            None => self.start.clone(),
        };
        TonUpload::new(start, self.config.clone()).expect("a valid upload")
    }

    fn save(upload: &TonUpload) -> Option<TonResumeState> {
        upload.resume_state()
    }

    fn serve(&mut self, now: Instant, send: &Transmit, body: &[u8]) -> Exchange {
        self.server.handle(now, &send.request, body)
    }

    fn response_lost(&mut self) {
        self.server.response_lost();
    }

    fn held(&self, upload: &TonUpload) -> u64 {
        match upload.location() {
            Some(l) => self.server.held(l.expose()),
            // A single request (T1) stores a whole object or nothing.
            None => self.server.largest_object(),
        }
    }

    fn mark(upload: &TonUpload) -> u64 {
        u64::from(upload.location().is_some()) + 2 * upload.persisted()
    }

    fn check_success(&self, _upload: &TonUpload, done: &TonCompletion) -> Result<(), String> {
        let stored = self
            .server
            .object(&done.location)
            .ok_or("success, but the server has no object at the final Location")?;
        if stored != self.source {
            return Err(format!(
                "success, but the object's {} bytes differ from the {}-byte source",
                stored.len(),
                self.source.len()
            ));
        }
        if done.size != self.source.len() as u64 {
            return Err(format!("success with size {}", done.size));
        }
        Ok(())
    }

    fn violations(&self) -> Vec<String> {
        self.server.violations().to_vec()
    }

    fn max_progress(&self) -> u64 {
        2 + self.source.len() as u64
    }

    fn lying(&self) -> bool {
        self.lying
    }
}

// ---- media ----

struct MediaWorld {
    server: MediaServer,
    source: &'static [u8],
    config: MediaConfig,
    segments: u64,
    steps: u64,
    short_expiry: bool,
    lying: bool,
}

impl MediaWorld {
    fn draw(rng: &mut SimRng, setup: &Setup, v2: bool) -> Self {
        let len = 1 + rng.below(768 * KIB);
        let source = source(rng, len);
        let api = if v2 {
            ApiVersion::V2 {
                base: V2_BASE.parse().expect("url"),
            }
        } else {
            ApiVersion::V1_1 {
                endpoint: V1_ENDPOINT.parse().expect("url"),
            }
        };
        let mut config = MediaConfig::new(api, len, "video/mp4");
        let floor = len.div_ceil(40);
        config.segment_size = floor.max(1 + rng.below(64 * KIB));
        config.max_in_flight = rng.pick(&[1, 1, 2, 3, 4, 5, 6, 7, 8]);
        config.retry = setup.policy.clone();
        config.fingerprint = format!("sim:{len}");
        config.boundary_seed = rng.next_u64();
        config.headers.insert(
            http::header::AUTHORIZATION,
            HeaderValue::from_static("Bearer sim"),
        );
        let processing = rng.chance(600).then(|| Processing {
            steps: (0..rng.below(6)).map(|_| 1 + rng.below(10)).collect(),
            end: match rng.below(100) {
                0..85 => ProcessingEnd::Succeeded,
                85..93 => ProcessingEnd::Failed,
                _ => ProcessingEnd::ErrorInProgress,
            },
        });
        if rng.chance(100) {
            config.max_status_polls = 1 + rng.below(4) as u32;
        }
        let steps = processing.as_ref().map_or(0, |p| p.steps.len() as u64);
        let short_expiry = rng.chance(100);
        let knobs = MediaKnobs {
            refuse: if rng.chance(150) { 4 } else { 0 },
            drop_before: setup.rate(10),
            drop_after: setup.rate(10),
            status: setup.rate(25),
            unstored: 500,
            retry_after: 400,
            max_retry_after_secs: rng.pick(&[5, 30, 90]),
            garble: if rng.chance(100) { 100 } else { 0 },
            expires_after_secs: if short_expiry {
                30 + rng.below(600)
            } else {
                86_400
            },
            processing,
        };
        let mut server = MediaServer::new(v2, rng.next_u64(), knobs);
        let lying = rng.chance(100);
        if lying {
            server = server.with_lie(rng.pick(&MEDIA_LIES), rng.below(3) as u32);
        }
        let segments = len.div_ceil(config.segment_size);
        MediaWorld {
            server,
            source,
            config,
            segments,
            steps,
            short_expiry,
            lying,
        }
    }
}

impl World for MediaWorld {
    type U = MediaUpload;
    type Output = MediaCompletion;
    type State = MediaResumeState;

    fn source(&self) -> &'static [u8] {
        self.source
    }

    fn build(&mut self, saved: Option<&MediaResumeState>) -> MediaUpload {
        match saved {
            Some(s) => MediaUpload::resume(self.config.clone(), s.clone()),
            None => MediaUpload::new(self.config.clone()),
        }
        .expect("a valid upload")
    }

    fn save(upload: &MediaUpload) -> Option<MediaResumeState> {
        upload.resume_state()
    }

    fn serve(&mut self, now: Instant, send: &Transmit, body: &[u8]) -> Exchange {
        self.server.handle(now, &send.request, body)
    }

    fn held(&self, upload: &MediaUpload) -> u64 {
        upload.media_id().map_or(0, |id| self.server.held(id))
    }

    fn mark(upload: &MediaUpload) -> u64 {
        u64::from(upload.media_id().is_some()) + 2 * upload.persisted()
    }

    fn progress_on_success(&self) -> bool {
        true
    }

    fn check_success(&self, _upload: &MediaUpload, done: &MediaCompletion) -> Result<(), String> {
        let entry = self
            .server
            .entry(&done.media_id)
            .ok_or("success with a media id the server never gave")?;
        if !entry.ready {
            return Err("success, but processing did not succeed".into());
        }
        let assembled = self
            .server
            .assembled(&done.media_id)
            .ok_or("success, but the media was never finalized")?;
        if assembled != self.source {
            return Err(format!(
                "success, but the server assembled {} bytes that differ from the {}-byte source",
                assembled.len(),
                self.source.len()
            ));
        }
        if done.size != self.source.len() as u64 {
            return Err(format!("success with size {}", done.size));
        }
        Ok(())
    }

    fn violations(&self) -> Vec<String> {
        self.server.violations().to_vec()
    }

    fn window(&self) -> u64 {
        u64::from(self.config.max_in_flight)
    }

    fn resend_debt(&self, saved: Option<&MediaResumeState>) -> u64 {
        saved.map_or(0, |s| self.server.held_from(&s.media_id, s.next_segment))
    }

    fn max_progress(&self) -> u64 {
        // INIT, every APPEND (each acknowledged once), FINALIZE, the STATUS polls.
        2 + self.segments + self.steps + 1
    }

    fn base_licenses(&self) -> Licenses {
        Licenses {
            // M5: with a short expiry, the client gives up before a wait that passes it.
            media_expired: self.short_expiry,
            ..Licenses::default()
        }
    }

    fn lying(&self) -> bool {
        self.lying
    }
}

// ---- compliance ----

struct ComplianceWorld {
    server: ComplianceServer,
    pace: Pace,
    source: &'static [u8],
    config: ComplianceConfig,
    steps: u64,
    lying: bool,
    /// Where `ComplianceResumeState::check_upload_url` disagreed with the server's clock.
    disagreements: Vec<String>,
}

impl ComplianceWorld {
    fn draw(rng: &mut SimRng, setup: &Setup) -> Self {
        // An ids file of 20-byte lines (the bytes are noise: the protocol does not read them).
        let lines = rng.pick(&[20, 2_000, 30_000]);
        let len = 20 * (1 + rng.below(lines));
        let source = source(rng, len);
        let job_type = if rng.chance(500) {
            JobType::Tweets
        } else {
            JobType::Users
        };
        let resumable = !rng.chance(250);
        // A stream of unknown size can only go up resumably (C2).
        let known = !resumable || !rng.chance(150);
        let mut config = ComplianceConfig::new(job_type, known.then_some(len));
        config.api_base = API_BASE.parse().expect("url");
        config.resumable = resumable;
        if rng.chance(300) {
            config.name = Some("sim job".into());
        }
        config.chunk_size = if rng.chance(200) { 2 * G } else { G };
        let md5 = len < 2 * G && rng.chance(30);
        config.checksums = Checksums {
            crc32c: !rng.chance(100),
            md5,
        };
        config.retry = setup.policy.clone();
        config.poll_interval = Duration::from_secs(rng.pick(&[6, 10, 10, 30]));
        config.max_poll_interval = config
            .poll_interval
            .max(Duration::from_secs(rng.pick(&[6, 60, 60, 120])));
        if rng.chance(150) {
            config.poll_deadline = Duration::from_secs(30 + rng.below(300));
        }
        for (name, value) in API_HEADERS {
            config
                .api_headers
                .insert(name, HeaderValue::from_static(value));
        }
        config.fingerprint = format!("sim:{len}");
        let mut gcs = SimServer::new(rng.next_u64(), gcs_knobs(rng, setup, md5));
        let steps = rng.below(8);
        let knobs = ComplianceKnobs {
            job_type: job_type.as_str(),
            refuse: if rng.chance(150) { 4 } else { 0 },
            drop_before: setup.rate(10),
            drop_after: setup.rate(10),
            status: setup.rate(25),
            retry_after: 500,
            max_retry_after_secs: rng.pick(&[5, 30, 90]),
            garble: if rng.chance(100) { 100 } else { 0 },
            sparse: rng.pick(&[0, 300, 1000]),
            deny_resumable: rng.chance(200),
            // C2: about 15 minutes; a short life lets retries outlast it.
            upload_lifetime_secs: if rng.chance(150) {
                2 + rng.below(90)
            } else {
                900
            },
            steps: steps as u32,
            end: if rng.chance(100) {
                JobEnd::Failed
            } else {
                JobEnd::Complete
            },
        };
        // One lie at most: the upload's (a resumable job's GCS session) or the API's.
        let lying = rng.chance(120);
        let gcs_lying = lying && resumable && rng.chance(500);
        if gcs_lying && let Some((lie, skip)) = gcs_lie(rng, config.checksums) {
            gcs = gcs.with_lie(lie, skip);
        }
        let mut server = ComplianceServer::new(rng.next_u64(), knobs, gcs);
        if lying && !gcs_lying {
            server = server.with_lie(rng.pick(&API_LIES), rng.below(3) as u32);
        }
        ComplianceWorld {
            server,
            pace: Pace::new(
                config.poll_interval,
                setup.policy.initial_backoff,
                setup.policy.max_retry_after,
            ),
            source,
            config,
            steps,
            lying,
            disagreements: Vec::new(),
        }
    }
}

impl World for ComplianceWorld {
    type U = ComplianceJob;
    type Output = CompletedJob;
    type State = ComplianceResumeState;

    fn source(&self) -> &'static [u8] {
        self.source
    }

    fn build(&mut self, saved: Option<&ComplianceResumeState>) -> ComplianceJob {
        // C3: a new process polls at once.
        self.pace.restart();
        let Some(state) = saved else {
            return ComplianceJob::new(self.config.clone()).expect("a valid job");
        };
        self.server.client_resumed(state.gcs.is_some());
        // C2: a driver checks the state against its clock before resuming. This one resumes
        // anyway (the core must then meet the expired upload URL), but the check must agree
        // with the server's clock.
        let wall = self.server.wall_now();
        let expired = state.phase == SavedPhase::Upload
            && self
                .server
                .job(&state.job.id)
                .is_some_and(|j| wall >= j.expires_at);
        if state.check_upload_url(wall).is_err() != expired {
            self.disagreements.push(format!(
                "check_upload_url at {wall} says expired = {}, the server {expired} (C2)",
                !expired
            ));
        }
        ComplianceJob::resume(self.config.clone(), state.clone())
            .expect("a job resumes from its own state")
    }

    fn save(upload: &ComplianceJob) -> Option<ComplianceResumeState> {
        upload.resume_state()
    }

    fn serve(&mut self, now: Instant, send: &Transmit, body: &[u8]) -> Exchange {
        self.server.handle(now, &send.request, body)
    }

    fn response_lost(&mut self) {
        self.server.response_lost();
    }

    fn held(&self, upload: &ComplianceJob) -> u64 {
        if let Some(session) = upload.gcs().and_then(GcsUpload::session) {
            return self
                .server
                .gcs()
                .session_at(session.expose())
                .map_or(0, |s| s.stored.len() as u64);
        }
        upload.job().map_or(0, |j| self.server.uploaded(&j.id))
    }

    fn mark(upload: &ComplianceJob) -> u64 {
        // The job adopted (C1), the session created, bytes persisted, the upload done, each
        // status answer read (C3).
        let phase = match upload.phase() {
            Phase::Create => 0,
            Phase::Upload => 2,
            _ => 4,
        };
        let session = upload.gcs().map_or(0, |g| u64::from(g.session().is_some()));
        u64::from(upload.job().is_some())
            + phase
            + session
            + 2 * upload.persisted()
            + u64::from(upload.stats().status_polls)
    }

    fn check_success(&self, _upload: &ComplianceJob, done: &CompletedJob) -> Result<(), String> {
        let job = self
            .server
            .job(&done.job.id)
            .ok_or("success for a job the server never created")?;
        if job.status != Some("complete") {
            return Err(format!(
                "success, but the server says the job is {:?}",
                job.status
            ));
        }
        let held: Vec<&[u8]> = match &job.put {
            Some(put) => vec![put.as_slice()],
            None => self.server.completed_sessions(job).collect(),
        };
        if held.is_empty() {
            return Err("success, but no upload of the job arrived".into());
        }
        if let Some(other) = held.iter().find(|h| **h != self.source) {
            return Err(format!(
                "success, but the job's upload holds {} bytes that differ from the {}-byte source",
                other.len(),
                self.source.len()
            ));
        }
        if done.bytes != self.source.len() as u64 {
            return Err(format!("success with {} bytes", done.bytes));
        }
        if done.job.status != JobStatus::Complete || done.job.job_type != self.config.job_type {
            return Err(format!("success with the job {:?}", done.job));
        }
        Ok(())
    }

    fn violations(&self) -> Vec<String> {
        let mut all = self.server.violations();
        all.extend(self.pace.violations().iter().cloned());
        all.extend(self.disagreements.iter().cloned());
        all
    }

    fn no_duplicates(&self) -> bool {
        // A resumable upload is GCS's (G8); a one-PUT job sends the whole file again.
        self.config.resumable
    }

    fn max_progress(&self) -> u64 {
        // Create, the session, every byte, the upload done, each status answer.
        6 + self.source.len() as u64 + self.steps
    }

    fn read_chunk(&self) -> u64 {
        self.config.chunk_size
    }

    fn lying(&self) -> bool {
        self.lying
    }

    fn handed_out(&mut self, now: Instant, send: &Transmit) {
        self.pace.sent(now, &send.request);
    }

    fn answered(
        &mut self,
        now: Instant,
        send: &Transmit,
        outcome: &Result<Response<Bytes>, TransportFailure>,
    ) {
        self.pace.answered(now, &send.request, outcome);
    }

    fn final_licenses(&self, now: Instant, upload: &ComplianceJob, licenses: &mut Licenses) {
        // C2: the client may find by its own clock that the upload URL expired.
        licenses.upload_url_expired |= upload
            .job()
            .and_then(|j| self.server.job(&j.id))
            .is_some_and(|j| self.server.wall(now) >= j.expires_at);
    }
}

// ---------------------------------------------------------------------------------------------
// The driver
// ---------------------------------------------------------------------------------------------

/// The errors a run may end in, granted by what happened (invariant 6).
#[derive(Clone, Debug, Default)]
struct Licenses {
    /// The error a detected lie ended the upload with.
    lie: Option<Error>,
    exhausted: bool,
    transport: bool,
    server: bool,
    api: bool,
    gone: bool,
    expired: bool,
    media_expired: bool,
    protocol: bool,
    processing_failed: bool,
    unfinished: bool,
    /// A completion may be `Unproven`: see `World::unprovable` (G3, G7).
    unproven: bool,
    /// A lie was told whose answer a crash lost.
    lie_unseen: bool,
    job_failed: bool,
    job_expired: bool,
    upload_url_expired: bool,
}

impl Licenses {
    fn grant(&mut self, event: &Event, retry_transport: bool) {
        match event {
            Event::Transport => {
                self.exhausted = true;
                self.transport |= !retry_transport;
            }
            Event::Retryable => self.exhausted = true,
            Event::Refused => {
                self.server = true;
                self.api = true;
            }
            Event::Gone => self.gone = true,
            Event::Expired => {
                self.gone = true;
                self.expired = true;
                self.media_expired = true;
                self.api = true;
                self.server = true;
            }
            Event::Garbled => self.protocol = true,
            Event::ProcessingFailed => self.processing_failed = true,
            Event::Processing => self.unfinished = true,
            Event::JobFailed => self.job_failed = true,
            Event::JobExpired => self.job_expired = true,
            Event::UploadUrlExpired => self.upload_url_expired = true,
            Event::Answered | Event::Lie(_) => {}
        }
    }

    fn allow(&self, e: &Error) -> bool {
        if self.lie.as_ref() == Some(e) {
            return true;
        }
        match e {
            // G8: a server that asks to wait past the deadline ends a run of retries too.
            Error::RetriesExhausted { .. } | Error::WaitBeyondDeadline { .. } => self.exhausted,
            Error::Transport { .. } => self.transport,
            Error::Server { .. } => self.server,
            Error::Api { .. } => self.api,
            Error::SessionGone { .. } => self.gone,
            Error::Expired { .. } => self.expired,
            Error::MediaExpired { .. } => self.media_expired,
            Error::Protocol(_) => self.protocol,
            Error::ProcessingFailed { .. } => self.processing_failed,
            Error::ProcessingUnfinished { .. } => self.unfinished,
            // G7: see `World::unprovable`.
            Error::Integrity(resumable_core::IntegrityError::Unproven { .. }) if self.unproven => {
                true
            }
            Error::Integrity(_) => self.lie_unseen,
            Error::Compliance(JobError::Failed { .. }) => self.job_failed,
            Error::Compliance(JobError::Expired { .. }) => self.job_expired,
            Error::Compliance(JobError::UploadUrlExpired { .. }) => self.upload_url_expired,
            // C3: polling gave up on a job still unfinished, or on a run of failed polls.
            Error::Compliance(JobError::PollDeadline { .. }) => self.unfinished || self.exhausted,
            _ => false,
        }
    }
}

/// Counters of one run.
#[derive(Clone, Debug, Default)]
struct Counts {
    actions: u64,
    requests: u64,
    waits: u64,
    reads: u64,
    restarts: u64,
    progress: u64,
    faults: u64,
    /// Source bytes in request bodies, and the distinct ranges among them.
    sent: u64,
    covered: Vec<Range<u64>>,
    lost: u64,
    dup: u64,
    debt: u64,
    max_chunk: u64,
    processing_waits: u64,
    stale: u64,
}

impl Counts {
    fn distinct(&self) -> u64 {
        self.covered.iter().map(|r| r.end - r.start).sum()
    }

    fn cover(&mut self, range: &Range<u64>) {
        if range.is_empty() {
            return;
        }
        let mut merged = range.clone();
        self.covered.retain(|r| {
            if r.end < merged.start || r.start > merged.end {
                return true;
            }
            merged = merged.start.min(r.start)..merged.end.max(r.end);
            false
        });
        self.covered.push(merged);
    }
}

/// What a successful run reports: its outcome kind and counters (and its transcript, when
/// asked for).
#[derive(Debug)]
struct Summary {
    outcome: String,
    requests: u64,
    restarts: u64,
    faults: u64,
    resent: u64,
    stale: u64,
    lied: bool,
    transcript: String,
}

impl fmt::Display for Summary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} after {} requests, {} restarts, {} faults, {} stale answers, {} bytes re-sent{}",
            self.outcome,
            self.requests,
            self.restarts,
            self.faults,
            self.stale,
            self.resent,
            if self.lied { ", a lie detected" } else { "" }
        )
    }
}

/// Outcomes and counters over many runs.
#[derive(Default)]
struct Totals {
    runs: u64,
    outcomes: std::collections::BTreeMap<String, u64>,
    requests: u64,
    restarts: u64,
    faults: u64,
    stale: u64,
    lies: u64,
}

impl Totals {
    fn add(&mut self, s: &Summary) {
        self.runs += 1;
        *self.outcomes.entry(s.outcome.clone()).or_default() += 1;
        self.requests += s.requests;
        self.restarts += s.restarts;
        self.faults += s.faults;
        self.stale += s.stale;
        self.lies += u64::from(s.lied);
    }
}

impl Totals {
    fn merge(&mut self, other: Totals) {
        self.runs += other.runs;
        for (kind, n) in other.outcomes {
            *self.outcomes.entry(kind).or_default() += n;
        }
        self.requests += other.requests;
        self.restarts += other.restarts;
        self.faults += other.faults;
        self.stale += other.stale;
        self.lies += other.lies;
    }
}

impl fmt::Display for Totals {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} requests, {} faults, {} restarts, {} stale answers, {} lies detected; outcomes {:?}",
            self.requests, self.faults, self.restarts, self.stale, self.lies, self.outcomes
        )
    }
}

macro_rules! ensure {
    ($cond:expr, $($fmt:tt)+) => {
        if !$cond {
            return Err(format!($($fmt)+));
        }
    };
}

struct Driver<W: World> {
    world: W,
    setup: Setup,
    rng: SimRng,
    upload: W::U,
    source: &'static [u8],
    t0: Instant,
    now: Instant,
    last_input: Instant,
    saved: Option<W::State>,
    in_flight: Vec<Transmit>,
    /// Every request id this process's upload handed out (each must come once).
    handed: std::collections::HashSet<resumable_core::RequestId>,
    /// Ids answered in this process (candidates for a stale answer).
    answered: Vec<RequestId>,
    /// A copy of the last response handed in (for a duplicate).
    last_response: Option<Response<Bytes>>,
    persisted: u64,
    mark: u64,
    counts: Counts,
    licenses: Licenses,
    /// When the current run of failures began (invariant 5).
    run_start: Option<Instant>,
    /// The last input said processing goes on: the next wait is M4's.
    processing: bool,
    /// Requests left in the current burst of retryable statuses.
    burst_left: u64,
    transcript: Option<String>,
}

impl<W: World> Driver<W> {
    fn new(mut world: W, mut setup: Setup, rng: SimRng, transcript: bool) -> Self {
        if world.lying() {
            setup.burst = 0;
        }
        let upload = world.build(None);
        let now = Instant::now();
        let licenses = world.base_licenses();
        Driver {
            source: world.source(),
            persisted: upload.persisted(),
            mark: W::mark(&upload),
            world,
            setup,
            rng,
            upload,
            t0: now,
            now,
            last_input: now,
            saved: None,
            in_flight: Vec::new(),
            handed: std::collections::HashSet::new(),
            answered: Vec::new(),
            last_response: None,
            counts: Counts::default(),
            licenses,
            run_start: None,
            processing: false,
            burst_left: 0,
            transcript: transcript.then(String::new),
        }
    }

    fn note(&mut self, line: impl FnOnce(&Self) -> String) {
        if self.transcript.is_some() {
            let at = self.now - self.t0;
            let line = line(self);
            if let Some(t) = &mut self.transcript {
                let _ = writeln!(t, "{:>10.3}s {line}", at.as_secs_f64());
            }
        }
    }

    fn run(mut self) -> Result<Summary, String> {
        let result = self.drive();
        let transcript = self.transcript.take().unwrap_or_default();
        let outcome =
            result.map_err(|e| format!("{e}\n  after: {}\n{transcript}", self.counts_line()))?;
        Ok(Summary {
            outcome,
            requests: self.counts.requests,
            restarts: self.counts.restarts,
            faults: self.counts.faults,
            resent: self.counts.sent - self.counts.distinct(),
            stale: self.counts.stale,
            lied: self.licenses.lie.is_some(),
            transcript,
        })
    }

    fn counts_line(&self) -> String {
        let c = &self.counts;
        format!(
            "requests {} waits {} reads {} restarts {} progress {} faults {} sent {} distinct {} lost {} dup {} debt {} chunk {}; upload {:?}",
            c.requests,
            c.waits,
            c.reads,
            c.restarts,
            c.progress,
            c.faults,
            c.sent,
            c.distinct(),
            c.lost,
            c.dup,
            c.debt,
            c.max_chunk,
            self.upload
        )
    }

    /// The driving loop; returns the outcome's kind.
    fn drive(&mut self) -> Result<String, String> {
        loop {
            self.counts.actions += 1;
            ensure!(
                self.counts.actions < HARD_CAP,
                "runaway: {HARD_CAP} actions"
            );
            let action = self.upload.poll_action(self.now);
            match action {
                Action::Done(outcome) => return self.done(outcome),
                // Requests in flight and a backoff pending, or nothing more to send: answers
                // come first, in any order.
                Action::Wait(_) | Action::Idle if !self.in_flight.is_empty() => {
                    let i = self.rng.below(self.in_flight.len() as u64) as usize;
                    self.deliver(i)?;
                }
                Action::Idle => return Err("(9) Idle with nothing in flight".into()),
                Action::Wait(until) => self.wait(until)?,
                Action::Read(read) => self.read(read.range)?,
                Action::Send(send) => {
                    ensure!(
                        self.handed.insert(send.id),
                        "(9) request {:?} handed out again",
                        send.id
                    );
                    self.hand_out(send)?;
                }
            }
        }
    }

    fn wait(&mut self, until: Instant) -> Result<(), String> {
        ensure!(until > self.now, "a Wait that is not in the future");
        let policy = &self.setup.policy;
        if self.processing {
            // M4: check_after_secs, capped.
            ensure!(
                until - self.last_input <= MAX_CHECK_AFTER,
                "a processing wait of {:?}",
                until - self.last_input
            );
            self.counts.processing_waits += 1;
        } else {
            // The run began at its first failure; a wait still pending from a run that
            // progress has since ended began before the last input.
            let start = self.run_start.unwrap_or(self.last_input);
            ensure!(
                until <= start + policy.retry_deadline,
                "(5) a backoff ends {:?} after its run began, past the {:?} deadline",
                until - start,
                policy.retry_deadline
            );
            let longest = (policy.max_backoff + policy.jitter).max(policy.max_retry_after);
            ensure!(
                until - self.last_input <= longest,
                "(5) a single backoff of {:?}",
                until - self.last_input
            );
        }
        self.note(|d| format!("wait until +{:.3}s", (until - d.t0).as_secs_f64()));
        self.counts.waits += 1;
        self.now = until;
        Ok(())
    }

    fn read(&mut self, range: Range<u64>) -> Result<(), String> {
        let len = self.source.len() as u64;
        ensure!(
            range.start < range.end && range.end - range.start <= self.world.read_chunk(),
            "a read of {range:?}"
        );
        let end = range.end.min(len).max(range.start.min(len));
        let mut bytes = &self.source[range.start.min(len) as usize..end as usize];
        if self.setup.piecewise_reads && bytes.len() > 1 && self.rng.chance(300) {
            let keep = bytes.len().div_ceil(2) + self.rng.below(bytes.len() as u64 / 2) as usize;
            bytes = &bytes[..keep.min(bytes.len())];
        }
        self.note(|_| format!("read {range:?}: {} bytes", bytes.len()));
        let handed = self.upload.handle_read(self.now, range.start, bytes);
        ensure!(handed.is_ok(), "a read as asked was refused: {handed:?}");
        self.counts.reads += 1;
        self.last_input = self.now;
        self.processing = false;
        self.after_input()?;
        Ok(())
    }

    fn hand_out(&mut self, send: Transmit) -> Result<(), String> {
        let range = send.body.source.clone();
        ensure!(
            range.start <= range.end && range.end <= self.source.len() as u64,
            "(2) a body range {range:?} outside the {}-byte source",
            self.source.len()
        );
        ensure!(
            range.is_empty() || range.start >= self.upload.persisted(),
            "(2) a body {range:?} below persisted() = {}",
            self.upload.persisted()
        );
        ensure!(
            (self.in_flight.len() as u64) < self.world.window(),
            "more than {} requests in flight",
            self.world.window()
        );
        self.note(|_| {
            format!(
                "send #{} {} {} {:?}",
                send.id.get(),
                send.request.method(),
                send.request.uri().path(),
                send.body
            )
        });
        self.counts.requests += 1;
        self.counts.sent += range.end - range.start;
        self.counts.max_chunk = self.counts.max_chunk.max(range.end - range.start);
        self.counts.cover(&range);
        self.world.handed_out(self.now, &send);
        // A driver saves the state once a request is handed out, before sending it.
        if let Some(state) = W::save(&self.upload) {
            self.saved = Some(state);
        }
        self.in_flight.push(send);
        if self.counts.restarts < u64::from(self.setup.max_crashes)
            && self.rng.chance(self.setup.crash)
        {
            self.crash()?;
        }
        Ok(())
    }

    /// The process dies: what is in flight reaches the server, the responses are lost, and a
    /// new process resumes from the saved state.
    fn crash(&mut self) -> Result<(), String> {
        for send in std::mem::take(&mut self.in_flight) {
            let body = body_bytes(self.source, &send);
            let exchange = self.world.serve(self.now, &send, &body);
            self.world.response_lost();
            // A lie whose answer the crash lost may have left the server holding another
            // object (G7): later honest answers show it.
            self.licenses.lie_unseen |= matches!(exchange.event, Event::Lie(_));
            self.account(&send, &exchange);
        }
        self.counts.restarts += 1;
        self.counts.faults += 1;
        self.counts.debt += self.world.resend_debt(self.saved.as_ref());
        self.note(|d| format!("crash; resume from {:?}", d.saved));
        self.upload = self.world.build(self.saved.as_ref());
        self.answered.clear();
        self.handed.clear();
        self.last_response = None;
        self.persisted = self.upload.persisted();
        self.mark = W::mark(&self.upload);
        self.run_start = None;
        self.processing = false;
        self.check_held()
    }

    /// Byte accounting of one exchange (invariant 3).
    fn account(&mut self, send: &Transmit, exchange: &Exchange) {
        let len = send.body.source_len();
        self.counts.lost += len.saturating_sub(exchange.new + exchange.dup);
        self.counts.dup += exchange.dup;
        let fault = matches!(
            exchange.event,
            Event::Transport | Event::Retryable | Event::Refused | Event::Gone | Event::Expired
        );
        self.counts.faults += u64::from(fault) + u64::from(exchange.ambiguous);
    }

    /// Sends the in-flight request `i` to the server and hands its answer in.
    /// Hands the body's source bytes to `handle_sent` in random pieces, as a driver does
    /// while sending: all of them, a prefix (the transport took only part), or none (a driver
    /// that does not report them; the upload must then read them).
    fn report_sent(&mut self, send: &Transmit) -> Result<(), String> {
        let range = send.body.source.clone();
        let upto = range.start
            + match self.rng.below(4) {
                0 => 0,
                1 => self.rng.below(range.end - range.start + 1),
                _ => range.end - range.start,
            };
        let mut at = range.start;
        while at < upto {
            let piece = (1 + self.rng.below(64 * 1024)).min(upto - at);
            let bytes = &self.source[at as usize..(at + piece) as usize];
            let handed = self.upload.handle_sent(send.id, at, bytes);
            ensure!(handed.is_ok(), "sent bytes were refused: {handed:?}");
            at += piece;
        }
        Ok(())
    }

    fn deliver(&mut self, i: usize) -> Result<(), String> {
        let send = self.in_flight.remove(i);
        if send.report_sent {
            self.report_sent(&send)?;
        }
        let body = body_bytes(self.source, &send);
        if self.burst_left == 0 && self.rng.chance(self.setup.burst) {
            self.burst_left = 1 + self.rng.below(5);
        }
        let exchange = if self.burst_left > 0 {
            self.burst_left -= 1;
            self.burst_answer()
        } else {
            self.world.serve(self.now, &send, &body)
        };
        let mut latency = self.setup.latency(body.len() as u64);
        if matches!(exchange.outcome, Err(TransportFailure::Timeout)) {
            latency += Duration::from_secs(30);
        }
        self.now += latency;
        self.world.answered(self.now, &send, &exchange.outcome);
        self.account(&send, &exchange);
        self.licenses
            .grant(&exchange.event, self.setup.policy.retry_transport);

        let success = matches!(&exchange.outcome, Ok(r) if r.status().is_success());
        self.note(|_| match &exchange.outcome {
            Ok(r) => format!(
                "answer #{}: {} {:?} ({:?}, new {}, dup {})",
                send.id.get(),
                r.status().as_u16(),
                r.headers().get("range"),
                exchange.event,
                exchange.new,
                exchange.dup
            ),
            Err(f) => format!("answer #{}: {f:?} ({:?})", send.id.get(), exchange.event),
        });
        let handed = match exchange.outcome {
            Ok(response) => {
                self.last_response = Some(copy(&response));
                self.upload.handle_response(self.now, send.id, response)
            }
            Err(failure) => {
                self.last_response = None;
                self.upload.handle_failure(self.now, send.id, failure)
            }
        };
        ensure!(
            handed.is_ok(),
            "the answer to request {} in flight was refused: {handed:?}",
            send.id.get()
        );
        self.answered.push(send.id);
        self.last_input = self.now;
        self.processing = matches!(exchange.event, Event::Processing);
        let mark = W::mark(&self.upload);
        let progressed = mark > self.mark || (success && self.world.progress_on_success());
        // What the core counts as a failed attempt: a lost response, a retryable status, or a
        // chunk answered without progress (G5, T5).
        let failed = matches!(exchange.event, Event::Transport | Event::Retryable)
            || (matches!(exchange.event, Event::Answered)
                && send.body.source_len() > 0
                && !progressed);
        if progressed {
            self.counts.progress += 1;
            self.run_start = None;
        } else if failed {
            self.licenses.exhausted = true;
            self.run_start.get_or_insert(self.now);
        }
        self.mark = mark;
        if let Event::Lie(must) = &exchange.event {
            // A lie the client can detect ends the upload with the matching error, at once or
            // (GCS, G7) once it has read the rest of the source to check a completion.
            loop {
                match self.upload.poll_action(self.now) {
                    Action::Read(read) => self.read(read.range)?,
                    Action::Done(Err(e)) if must.accepts(&e) => {
                        self.licenses.lie = Some(e);
                        return Ok(());
                    }
                    other => {
                        return Err(format!("after a lie that must end in {must:?}: {other:?}"));
                    }
                }
            }
        }
        self.after_input()?;
        if !self.answered.is_empty() && self.rng.chance(self.setup.stale) {
            self.stale()?;
        }
        Ok(())
    }

    /// One answer of a burst: a retryable status, with `Retry-After` in seconds, as a date, or
    /// not at all (G8).
    fn burst_answer(&mut self) -> Exchange {
        let status = self.rng.pick(&[408, 429, 500, 502, 503, 504]);
        let mut response = Response::builder().status(status);
        let secs = self.rng.below(20);
        match self.rng.below(3) {
            0 => response = response.header("retry-after", secs.to_string()),
            1 => {
                let date = std::time::SystemTime::UNIX_EPOCH + Duration::from_secs(1_600_000_000);
                response = response
                    .header("date", httpdate::fmt_http_date(date))
                    .header(
                        "retry-after",
                        httpdate::fmt_http_date(date + Duration::from_secs(secs)),
                    );
            }
            _ => {}
        }
        let response = response.body(Bytes::new()).expect("valid");
        Exchange::new(Ok(response), Event::Retryable)
    }

    /// Invariant 2 and the state a driver saves, after every input.
    fn after_input(&mut self) -> Result<(), String> {
        self.check_held()?;
        if let Some(state) = W::save(&self.upload) {
            self.saved = Some(state);
        }
        Ok(())
    }

    fn check_held(&mut self) -> Result<(), String> {
        let persisted = self.upload.persisted();
        ensure!(
            persisted >= self.persisted,
            "(2) persisted() went from {} down to {persisted}",
            self.persisted
        );
        ensure!(
            persisted <= self.source.len() as u64,
            "(2) persisted() = {persisted} passes the source"
        );
        let held = self.world.held(&self.upload);
        ensure!(
            persisted <= held,
            "(2) persisted() = {persisted}, but the server holds only {held} bytes"
        );
        self.persisted = persisted;
        Ok(())
    }

    /// Invariant 7: a duplicate, reordered or unknown answer is refused and changes nothing.
    fn stale(&mut self) -> Result<(), String> {
        self.counts.stale += 1;
        let id = match self.rng.below(3) {
            0 => *self.answered.last().expect("not empty"),
            1 => self.answered[self.rng.below(self.answered.len() as u64) as usize],
            _ => RequestId::new(u64::MAX - self.rng.below(1000)),
        };
        let look = |d: &Self| {
            format!(
                "{:?} {} {:?}",
                d.upload,
                d.upload.persisted(),
                W::save(&d.upload)
            )
        };
        let before = look(self);
        let result = match (&self.last_response, self.rng.chance(700)) {
            (Some(response), true) => self.upload.handle_response(self.now, id, copy(response)),
            _ => self
                .upload
                .handle_failure(self.now, id, TransportFailure::Reset),
        };
        self.note(|_| format!("stale answer for #{}: {result:?}", id.get()));
        ensure!(
            matches!(result, Err(UsageError::UnknownRequest(n)) if n == id.get())
                || result == Err(UsageError::Finished),
            "(7) a stale answer for request {} gave {result:?}",
            id.get()
        );
        ensure!(
            look(self) == before,
            "(7) a stale answer for request {} changed the upload",
            id.get()
        );
        Ok(())
    }

    /// The end of a run: invariants 1, 3, 4, 5, 6, 8 and 9.
    fn done(&mut self, outcome: Result<W::Output, Error>) -> Result<String, String> {
        self.note(|_| format!("done: {outcome:?}"));
        let kind = match &outcome {
            Ok(output) => {
                self.world.check_success(&self.upload, output)?;
                ensure!(
                    self.upload.persisted() == self.source.len() as u64,
                    "(1) success with persisted() = {}",
                    self.upload.persisted()
                );
                "ok".to_owned()
            }
            Err(e) => {
                self.licenses.unproven = self.world.unprovable();
                self.world
                    .final_licenses(self.now, &self.upload, &mut self.licenses);
                ensure!(
                    self.licenses.allow(e),
                    "(6) ended in {e:?}, which nothing that happened licenses ({:?})",
                    self.licenses
                );
                // A compliance job's own verdicts by name (C2, C3); other errors by kind.
                let text = match e {
                    Error::Compliance(job) => format!("{job:?}"),
                    _ => format!("{e:?}"),
                };
                text.split(['(', ' ', '{']).next().unwrap_or("").to_owned()
            }
        };
        // (8) Done is sticky.
        let later = self.now + Duration::from_secs(86_400);
        match self.upload.poll_action(later) {
            Action::Done(again) => ensure!(again == outcome, "(8) Done changed to {again:?}"),
            other => return Err(format!("(8) Done was followed by {other:?}")),
        }
        let finished = Err(UsageError::Finished);
        for id in [RequestId::new(0), RequestId::new(u64::MAX)] {
            ensure!(
                self.upload.handle_response(self.now, id, status_only(200)) == finished,
                "(8) a response after Done was not refused as Finished"
            );
            ensure!(
                self.upload
                    .handle_failure(self.now, id, TransportFailure::Reset)
                    == finished,
                "(8) a failure after Done was not refused as Finished"
            );
        }
        ensure!(
            self.upload.handle_read(self.now, 0, b"x") == finished,
            "(8) a read after Done was not refused as Finished"
        );
        // (9) The server found nothing wrong with the client.
        let violations = self.world.violations();
        ensure!(
            violations.is_empty(),
            "(9) the server saw protocol breaches: {violations:?}"
        );
        self.check_bounds()?;
        Ok(kind)
    }

    /// Invariants 3, 4 and 5 (the formulas are in the module docs).
    fn check_bounds(&self) -> Result<(), String> {
        let c = &self.counts;
        let resent = c.sent - c.distinct();
        let w = self.world.window();
        if self.world.no_duplicates() {
            ensure!(
                c.dup == 0 && resent <= c.lost,
                "(3) GCS sent {} bytes the server held, re-sent {resent} with only {} lost",
                c.dup,
                c.lost
            );
        }
        let allowance = c.lost + c.faults * w * c.max_chunk + c.debt;
        ensure!(
            resent <= allowance,
            "(3) re-sent {resent} bytes > lost {} + faults {} × window {w} × chunk {} + debt {}",
            c.lost,
            c.faults,
            c.max_chunk,
            c.debt
        );
        let a = u64::from(self.setup.policy.max_attempts);
        let (p, r) = (c.progress, c.restarts);
        ensure!(
            p <= (r + 1) * self.world.max_progress(),
            "(4) {p} progress events with {r} restarts"
        );
        let requests = (p + r + 1) * (2 * a + 4) + w;
        ensure!(
            c.requests <= requests,
            "(4) {} requests > (P {p} + R {r} + 1)(2A + 4) + W = {requests}",
            c.requests
        );
        ensure!(c.waits <= c.requests + 1, "(4) {} waits", c.waits);
        let len = self.source.len() as u64;
        let chunks = len.div_ceil(self.world.read_chunk().min(len.max(1)));
        ensure!(
            c.reads <= 20 * (chunks + 2) * (r + 1),
            "(4) {} reads",
            c.reads
        );
        ensure!(
            c.actions <= 2 * c.requests + c.waits + c.reads + 1,
            "(4) {} actions",
            c.actions
        );
        let deadline = self.setup.policy.retry_deadline;
        let budget = deadline * u32::try_from(p + r + 1).unwrap_or(u32::MAX)
            + MAX_CHECK_AFTER * u32::try_from(c.processing_waits).unwrap_or(u32::MAX)
            + self.setup.max_latency(c.max_chunk) * u32::try_from(c.requests).unwrap_or(u32::MAX);
        let elapsed = self.now - self.t0;
        ensure!(
            elapsed <= budget,
            "(5) {elapsed:?} of simulated time > the {budget:?} the deadlines allow"
        );
        Ok(())
    }
}

// ---------------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------------

/// The body bytes the driver sends: prefix, the source range, suffix.
fn body_bytes<'s>(source: &'s [u8], send: &Transmit) -> Cow<'s, [u8]> {
    let body = &send.body;
    let range = &source[body.source.start as usize..body.source.end as usize];
    if body.prefix.is_empty() && body.suffix.is_empty() {
        Cow::Borrowed(range)
    } else {
        let mut all = Vec::with_capacity(body.len() as usize);
        all.extend_from_slice(&body.prefix);
        all.extend_from_slice(range);
        all.extend_from_slice(&body.suffix);
        Cow::Owned(all)
    }
}

/// Bytes of `range` below `held`.
fn overlap(range: &Range<u64>, held: u64) -> u64 {
    held.min(range.end).saturating_sub(range.start)
}

fn status_only(status: u16) -> Response<Bytes> {
    Response::builder()
        .status(status)
        .body(Bytes::new())
        .expect("valid")
}

/// A copy of a response (status, headers, body).
fn copy(response: &Response<Bytes>) -> Response<Bytes> {
    let mut copy = Response::new(response.body().clone());
    *copy.status_mut() = response.status();
    *copy.headers_mut() = response.headers().clone();
    copy
}

/// A body cut short, or replaced by bytes that are not JSON.
fn garble(rng: &mut SimRng, body: &Bytes) -> Bytes {
    if !body.is_empty() && rng.chance(500) {
        body.slice(..rng.below(body.len() as u64) as usize)
    } else {
        Bytes::from_static(b"\x00\xff<html>garbage")
    }
}

// ---------------------------------------------------------------------------------------------
// Core bugs the simulation found (fixed since; kept as regression tests)
// ---------------------------------------------------------------------------------------------

/// Found by TON seed 4676 (minimum chunk 1, a chunk of 3 bytes at 6..9 of which the server
/// kept 2, answered `Range: 0-8` in the count form TON documents).
///
/// T5: with a minimum chunk of 1 both readings of `0-N` fit whenever N + 1 is the chunk's end,
/// and the core takes N + 1 because it "agrees with what was sent". But TON documents N as the
/// uploaded length, so N may be all the server holds: byte N is then assumed stored although
/// nothing proves it ("never resume past a byte you cannot prove was stored"), the next chunk
/// starts past a gap, and `persisted()` exceeds what the server holds. Reading N here (one byte
/// sent again at worst) keeps the upload exact.
#[test]
fn ton_count_range_one_short_of_the_chunk() {
    let mut config = TonConfig::new(HeaderValue::from_static("video/mp4"), 10);
    config.chunk_size = 4;
    config.chunk_time = None;
    let bucket_url = TON_BUCKET.parse().expect("url");
    let mut upload = TonUpload::new(TonStart::Resumable { bucket_url }, config).expect("valid");
    let now = Instant::now();
    let answer = |status: u16, headers: &[(&str, &str)]| {
        let mut response = Response::builder().status(status);
        for (name, value) in headers {
            response = response.header(*name, *value);
        }
        response.body(Bytes::new()).expect("valid")
    };
    let Action::Send(start) = upload.poll_action(now) else {
        panic!("the start request first (T2)");
    };
    let started = answer(
        201,
        &[
            (
                "location",
                "/1.1/ton/bucket/sim/u.mp4?resumable=true&resumeId=1",
            ),
            ("x-ton-min-chunk-size", "1"),
            ("x-ton-max-chunk-size", "4"),
        ],
    );
    upload
        .handle_response(now, start.id, started)
        .expect("in flight");
    let Action::Send(chunk) = upload.poll_action(now) else {
        panic!("a chunk next (T4)");
    };
    assert_eq!(chunk.body.source, 0..4);
    // The server kept 3 of the 4 bytes and says so the way TON documents: N = the length.
    upload
        .handle_response(now, chunk.id, answer(308, &[("range", "0-3")]))
        .expect("in flight");
    assert!(
        upload.persisted() <= 3,
        "persisted() = {} although the server may hold only 3 bytes",
        upload.persisted()
    );
}

/// Found by compliance seed 1393 (a resumable job of unknown size: a stream; the process died
/// at its first status poll and resumed from the state it saved).
///
/// C2, C3: the job learns the stream's size from the GCS completion (G7), but did not keep
/// it: the state saved while polling had no size, so the resumed job set `persisted()` to 0
/// and reported the completed job with `bytes: 0`, although the server held the whole file
/// (and `persisted()` had gone down from the 40 bytes the first process acknowledged).
#[test]
fn compliance_stream_resumed_to_poll_keeps_its_size() {
    use base64::Engine as _;
    let ids = b"1460323737035677698\n1293593516040269825\n";
    let len = ids.len() as u64;
    let mut config = ComplianceConfig::new(JobType::Tweets, None);
    config.api_base = API_BASE.parse().expect("url");
    let mut job = ComplianceJob::new(config.clone()).expect("valid");
    let now = Instant::now();
    let job_data = |status: &str| {
        format!(
            r#"{{"data":{{"id":"1425543269983784962","type":"tweets","status":"{status}","resumable":true,"upload_url":"{XML_START}&job=0","upload_expires_at":"2021-08-11T19:57:55.000Z","download_url":"https://storage.sim/results/0.json?X-Goog-Signature=DOWN","download_expires_at":"2021-08-18T19:42:55.000Z","created_at":"2021-08-11T19:42:55.000Z"}}}}"#
        )
    };
    let answer = |status: u16, headers: &[(&str, String)], body: String| {
        let mut response = Response::builder().status(status);
        for (name, value) in headers {
            response = response.header(*name, value);
        }
        response.body(Bytes::from(body)).expect("valid")
    };
    let hash = format!(
        "crc32c={}",
        base64::engine::general_purpose::STANDARD.encode(crc32c::crc32c(ids).to_be_bytes())
    );
    // Create (C1), start the session (G1), send the stream (G4), complete it (G7); the first
    // status poll (C3) is never answered: the process dies.
    loop {
        match job.poll_action(now) {
            Action::Read(read) => {
                let start = read.range.start.min(len) as usize;
                let end = read.range.end.min(len) as usize;
                job.handle_read(now, read.range.start, &ids[start..end])
                    .expect("a read as asked");
            }
            Action::Send(send) if send.request.method() == Method::GET => break,
            Action::Send(send) => {
                let response = match (send.request.method(), send.request.uri().host()) {
                    (&Method::POST, Some("api.sim")) => answer(200, &[], job_data("created")),
                    (&Method::POST, _) => answer(
                        201,
                        &[(
                            "location",
                            "https://sim.example/upload/session?upload_id=s".into(),
                        )],
                        String::new(),
                    ),
                    _ => {
                        assert_eq!(send.body.source, 0..len, "the whole stream in one chunk");
                        answer(200, &[("x-goog-hash", hash.clone())], String::new())
                    }
                };
                job.handle_response(now, send.id, response)
                    .expect("in flight");
            }
            other => panic!("nothing fails here: {other:?}"),
        }
    }
    assert_eq!(job.persisted(), len);
    let state = job.resume_state().expect("a job to poll");
    assert_eq!(state.phase, SavedPhase::Poll);
    assert_eq!(
        state.total,
        Some(len),
        "the saved state keeps the stream's size"
    );
    let mut resumed = ComplianceJob::resume(config, state).expect("resumes");
    assert_eq!(
        resumed.persisted(),
        len,
        "the server holds the whole stream"
    );
    let Action::Send(poll) = resumed.poll_action(now) else {
        panic!("a resumed job polls at once (C3)");
    };
    resumed
        .handle_response(now, poll.id, answer(200, &[], job_data("complete")))
        .expect("in flight");
    match resumed.poll_action(now) {
        Action::Done(Ok(done)) => assert_eq!(done.bytes, len),
        other => panic!("the job completed: {other:?}"),
    }
}
