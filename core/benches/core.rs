//! The core alone (issue 9): simulated uploads of 1 GiB with no I/O at all, to measure what the
//! state machines cost per chunk cycle, in time and in heap allocations.
//!
//! A *chunk cycle* is what a driver does once per chunk: poll until the core hands out the
//! chunk's `Send`, hand in the body's source bytes when the `Send` asks for them (GCS with
//! checksums: 64 KiB at a time, as the drivers do while sending), then hand the server's
//! answer back (`308` + `Range` for GCS and TON, `204` for a media APPEND). The answers are built before the clock
//! starts, so building them is not counted; dropping them (inside the core) is.
//!
//! - GCS: 1 GiB in 256 KiB chunks (4096 cycles), with checksums off (the core's own cost) and
//!   with CRC32C (the default). CRC32C over the bytes is real work that any client does; it is
//!   measured alone too (`crc32c only`), so the core's cost without hashing is the difference.
//! - TON: 1 GiB in 256 KiB chunks (4096 cycles), the clock moving 20 s per chunk so the
//!   adaptive chunk size stays at 256 KiB (T4).
//! - Media v1.1: 1 GiB in 1000 APPEND segments (the most a media id takes; 1,073,742 bytes
//!   each).
//!
//! Before criterion runs, a summary is printed: the median time per chunk cycle over a few
//! uploads, and the heap allocations per cycle counted by the global allocator below (over
//! the steady cycles, the final one excluded, and over the whole upload). Targets: at most
//! 1 µs and 4 allocations per chunk cycle.
//!
//! Criterion then measures one whole upload's chunk cycles per iteration: its `time` is per
//! upload (4096 or 1000 cycles) and its `thrpt` is in chunk cycles per second (`elem/s`).
//!
//! `cargo bench -p resumable-core --bench core`. For profiling the bench binary (for example
//! with `valgrind --tool=callgrind` or `--tool=dhat`): `CORE_BENCH_SUMMARY_ONLY=1` prints the
//! summary without running criterion, `CORE_BENCH_ONLY=text` summarises only the scenarios
//! whose name contains `text`, and `CORE_BENCH_RUNS=n` times `n` uploads instead of 9.

use std::alloc::System;
use std::hint::black_box;
use std::time::{Duration, Instant};

use bytes::Bytes;
use criterion::{Criterion, SamplingMode, Throughput};
use http::{HeaderValue, Response};
use resumable_core::checksum::Checksums;
use resumable_core::gcs::{GcsConfig, GcsUpload, Start};
use resumable_core::media::{ApiVersion, MediaConfig, MediaUpload, SegmentPlan};
use resumable_core::ton::{TonConfig, TonStart, TonUpload};
use resumable_core::{Action, Upload};
use stats_alloc::{INSTRUMENTED_SYSTEM, Region, StatsAlloc};

// Counts every allocation of this process (two atomic adds per call; an allocation and free
// measured about 15 ns with and without it).
#[global_allocator]
static GLOBAL: &StatsAlloc<System> = &INSTRUMENTED_SYSTEM;

const TOTAL: u64 = 1 << 30;
const CHUNK: u64 = 256 << 10;
/// What the blocking driver hands the core per `Read` (`resumable_blocking::READ_PIECE`).
const READ_PIECE: u64 = 64 << 10;
/// Media segments are at least a thousandth of the file (M2).
const MEDIA_SEGMENT: u64 = 1 << 20;
const MEDIA_ID: &str = "1880028106020515840";

/// Source bytes handed to `handle_read`: a 256 KiB pattern, read at `offset % 256 KiB`.
fn source_pattern() -> Vec<u8> {
    (0..CHUNK)
        .map(|i| (i.wrapping_mul(131) >> 3) as u8)
        .collect()
}

fn answer(status: u16, headers: &[(&str, String)], body: impl Into<Bytes>) -> Response<Bytes> {
    let mut builder = Response::builder().status(status);
    for (name, value) in headers {
        builder = builder.header(*name, value.as_str());
    }
    builder.body(body.into()).expect("a valid response")
}

/// The server's side of one simulated upload, built before anything is measured.
struct Answers {
    /// The answer to the start request (GCS, TON) or INIT (media).
    start: Response<Bytes>,
    /// One answer per chunk cycle, in order.
    cycles: Vec<Response<Bytes>>,
    /// Answers to the requests after the last cycle (media: FINALIZE).
    tail: Vec<Response<Bytes>>,
}

/// An upload past its start request, with the answers to its chunk cycles ready.
struct Prepared<U> {
    upload: U,
    answers: std::vec::IntoIter<Response<Bytes>>,
    tail: std::vec::IntoIter<Response<Bytes>>,
    now: Instant,
    /// How far the clock moves while a request is out (TON sizes chunks by the rate).
    step: Duration,
}

impl<U: Upload<Output: std::fmt::Debug>> Prepared<U> {
    /// Sends the start request of `upload` and hands in its answer.
    fn start(mut upload: U, answers: Answers, step: Duration) -> Self {
        let now = Instant::now();
        match upload.poll_action(now) {
            Action::Send(send) => upload
                .handle_response(now, send.id, answers.start)
                .expect("start accepted"),
            other => panic!("expected the start request, got {other:?}"),
        }
        Prepared {
            upload,
            answers: answers.cycles.into_iter(),
            tail: answers.tail.into_iter(),
            now,
            step,
        }
    }

    /// One chunk cycle: poll (and hand in reads) until the `Send`, then hand in its answer.
    fn cycle(&mut self, source: &[u8]) {
        loop {
            match self.upload.poll_action(self.now) {
                Action::Read(read) => {
                    let start = read.range.start;
                    let len = (read.range.end - start).min(READ_PIECE) as usize;
                    let at = (start % CHUNK) as usize;
                    let bytes = &source[at..(at + len).min(source.len())];
                    self.upload
                        .handle_read(self.now, start, bytes)
                        .expect("read accepted");
                }
                Action::Send(send) => {
                    let id = black_box(&send).id;
                    if send.report_sent {
                        // As the drivers do while the body goes out: its source bytes, in
                        // 64 KiB pieces (GCS checksums them here rather than in `Read`s).
                        let range = send.body.source.clone();
                        let mut at = range.start;
                        while at < range.end {
                            let len = (range.end - at).min(READ_PIECE);
                            let from = (at % CHUNK) as usize;
                            let bytes = &source[from..from + len as usize];
                            self.upload
                                .handle_sent(id, at, bytes)
                                .expect("sent bytes accepted");
                            at += len;
                        }
                    }
                    drop(send);
                    self.now += self.step;
                    let response = self.answers.next().expect("an answer per cycle");
                    self.upload
                        .handle_response(self.now, id, response)
                        .expect("answer accepted");
                    return;
                }
                Action::Wait(_) | Action::Idle | Action::Done(_) => {
                    panic!("unexpected action in a chunk cycle")
                }
            }
        }
    }

    /// Polls to the end (media: FINALIZE), checking that the upload succeeded.
    fn finish(mut self) -> U::Output {
        loop {
            match self.upload.poll_action(self.now) {
                Action::Send(send) => {
                    let response = self.tail.next().expect("an answer for the last requests");
                    self.upload
                        .handle_response(self.now, send.id, response)
                        .expect("answer accepted");
                }
                Action::Done(outcome) => return outcome.expect("the simulated upload succeeds"),
                other => panic!("unexpected action after the last cycle: {other:?}"),
            }
        }
    }
}

fn new_gcs(checksums: Checksums) -> GcsUpload {
    let mut config = GcsConfig::new(Some(TOTAL));
    config.chunk_size = CHUNK;
    config.checksums = checksums;
    let start = Start::Json {
        url: "https://storage.example/upload/storage/v1/b/bench/o?uploadType=resumable&name=o"
            .parse()
            .expect("a valid URL"),
        content_type: HeaderValue::from_static("application/octet-stream"),
        metadata: None,
    };
    GcsUpload::new(start, config).expect("a valid config")
}

fn gcs_answers() -> Answers {
    let session = "https://storage.example/upload/storage/v1/b/bench/o?uploadType=resumable\
                   &upload_id=bench-session";
    let cycles = (1..=TOTAL / CHUNK)
        .map(|i| {
            let end = i * CHUNK;
            if end < TOTAL {
                answer(308, &[("range", format!("bytes=0-{}", end - 1))], "")
            } else {
                let json = "application/json".to_owned();
                let body = r#"{"bucket":"bench","name":"o","size":"1073741824"}"#;
                answer(200, &[("content-type", json)], body)
            }
        })
        .collect();
    Answers {
        start: answer(200, &[("location", session.to_owned())], ""),
        cycles,
        tail: Vec::new(),
    }
}

fn new_ton() -> TonUpload {
    let mut config = TonConfig::new(HeaderValue::from_static("video/mp4"), TOTAL);
    config.chunk_size = CHUNK;
    let bucket_url = "https://ton.example/1.1/ton/bucket/ta_partner"
        .parse()
        .expect("a valid URL");
    TonUpload::new(TonStart::Resumable { bucket_url }, config).expect("a valid config")
}

fn ton_answers() -> Answers {
    let location = "/1.1/ton/bucket/ta_partner/o.mp4?resumable=true&resumeId=1".to_owned();
    let start = answer(
        201,
        &[
            ("location", location),
            ("x-ton-min-chunk-size", CHUNK.to_string()),
            ("x-ton-max-chunk-size", ((64u64 << 20) - 1).to_string()),
        ],
        "",
    );
    let cycles = (1..=TOTAL / CHUNK)
        .map(|i| {
            let end = i * CHUNK;
            if end < TOTAL {
                answer(308, &[("range", format!("0-{}", end - 1))], "")
            } else {
                let location = "/1.1/ton/bucket/ta_partner/o.mp4".to_owned();
                answer(201, &[("location", location)], "")
            }
        })
        .collect();
    Answers {
        start,
        cycles,
        tail: Vec::new(),
    }
}

fn new_media() -> MediaUpload {
    let endpoint = "https://upload.example/1.1/media/upload.json"
        .parse()
        .expect("a valid URL");
    let mut config = MediaConfig::new(ApiVersion::V1_1 { endpoint }, TOTAL, "video/mp4");
    config.segment_size = MEDIA_SEGMENT; // raised to ⌈1 GiB / 1000⌉ (M2)
    MediaUpload::new(config).expect("a valid config")
}

fn media_answers() -> Answers {
    let init = format!(r#"{{"media_id_string":"{MEDIA_ID}","expires_after_secs":86400}}"#);
    let finalize = format!(r#"{{"media_id_string":"{MEDIA_ID}","size":{TOTAL}}}"#);
    let plan = SegmentPlan::new(TOTAL, MEDIA_SEGMENT).expect("1 GiB fits 1000 segments");
    Answers {
        start: answer(200, &[], init),
        cycles: (0..plan.count()).map(|_| answer(204, &[], "")).collect(),
        tail: vec![answer(200, &[], finalize)],
    }
}

#[derive(Clone, Copy)]
enum Scenario {
    GcsPlain,
    GcsCrc32c,
    Ton,
    Media,
}

impl Scenario {
    const ALL: [Scenario; 4] = [
        Scenario::GcsPlain,
        Scenario::GcsCrc32c,
        Scenario::Ton,
        Scenario::Media,
    ];

    fn name(self) -> &'static str {
        match self {
            Scenario::GcsPlain => "gcs, 256 KiB chunks, checksums off",
            Scenario::GcsCrc32c => "gcs, 256 KiB chunks, CRC32C (4 pieces of 64 KiB)",
            Scenario::Ton => "ton, 256 KiB chunks",
            Scenario::Media => "media v1.1, 1000 APPEND segments",
        }
    }

    fn answers(self) -> Answers {
        match self {
            Scenario::GcsPlain | Scenario::GcsCrc32c => gcs_answers(),
            Scenario::Ton => ton_answers(),
            Scenario::Media => media_answers(),
        }
    }

    /// Runs one whole upload with `answers`: creates it, sends its start request, lets
    /// `cycles` run its chunk cycles, and polls it to its successful end.
    fn run(self, answers: Answers, cycles: &mut dyn FnMut(&mut dyn Cycles)) {
        match self {
            Scenario::GcsPlain => run_one(new_gcs(Checksums::NONE), answers, ZERO, cycles),
            Scenario::GcsCrc32c => run_one(new_gcs(Checksums::default()), answers, ZERO, cycles),
            // A chunk answered 20 s after it was handed out keeps its size (T4: 20 s target).
            Scenario::Ton => run_one(new_ton(), answers, Duration::from_secs(20), cycles),
            Scenario::Media => run_one(new_media(), answers, ZERO, cycles),
        }
    }
}

const ZERO: Duration = Duration::ZERO;

/// A prepared upload, as the measuring code sees it.
trait Cycles {
    /// How many chunk cycles are left.
    fn left(&self) -> usize;
    fn cycle(&mut self, source: &[u8]);
}

impl<U: Upload<Output: std::fmt::Debug>> Cycles for Prepared<U> {
    fn left(&self) -> usize {
        self.answers.len()
    }
    fn cycle(&mut self, source: &[u8]) {
        Prepared::cycle(self, source)
    }
}

fn run_one<U: Upload<Output: std::fmt::Debug>>(
    upload: U,
    answers: Answers,
    step: Duration,
    cycles: &mut dyn FnMut(&mut dyn Cycles),
) {
    let mut prepared = Prepared::start(upload, answers, step);
    cycles(&mut prepared);
    black_box(prepared.finish());
}

/// The time of all chunk cycles of one upload, and their number.
fn time_cycles(scenario: Scenario, source: &[u8]) -> (Duration, usize) {
    let mut result = (Duration::ZERO, 0);
    scenario.run(scenario.answers(), &mut |p| {
        let n = p.left();
        let t = Instant::now();
        for _ in 0..n {
            p.cycle(source);
        }
        result = (t.elapsed(), n);
    });
    result
}

/// CRC32C of the bytes a GCS upload hands in, alone: `cycles` × 256 KiB in 64 KiB pieces.
fn crc32c_alone(source: &[u8], cycles: usize) -> u32 {
    let mut crc = 0;
    for _ in 0..cycles {
        for piece in source.chunks(READ_PIECE as usize) {
            crc = crc32c::crc32c_append(crc, black_box(piece));
        }
    }
    crc
}

struct Counted {
    /// Allocations (and reallocations) per steady cycle (the final cycle excluded).
    per_cycle: f64,
    bytes_per_cycle: f64,
    /// Allocations (and reallocations) of the whole upload, from building its config to `Done`.
    whole: usize,
}

fn allocations(stats: stats_alloc::Stats) -> usize {
    stats.allocations + stats.reallocations
}

fn count_allocations(scenario: Scenario, source: &[u8]) -> Counted {
    let answers = scenario.answers();
    let whole = Region::new(GLOBAL);
    let mut steady = None;
    scenario.run(answers, &mut |p| {
        let n = p.left() - 1;
        let region = Region::new(GLOBAL);
        for _ in 0..n {
            p.cycle(source);
        }
        steady = Some((region.change(), n));
        p.cycle(source);
    });
    let whole = allocations(whole.change());
    let (change, n) = steady.expect("cycles ran");
    Counted {
        per_cycle: allocations(change) as f64 / n as f64,
        bytes_per_cycle: change.bytes_allocated as f64 / n as f64,
        whole,
    }
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    let n = values.len();
    if n % 2 == 1 {
        values[n / 2]
    } else {
        (values[n / 2 - 1] + values[n / 2]) / 2.0
    }
}

fn mark(ok: bool) -> &'static str {
    if ok { "✓" } else { "✗" }
}

/// The summary: time and allocations per chunk cycle, against the targets.
fn summary(source: &[u8]) {
    let runs: usize = std::env::var("CORE_BENCH_RUNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(9)
        .max(1);
    let only = std::env::var("CORE_BENCH_ONLY").unwrap_or_default();
    println!("core cost per chunk cycle: median of {runs} simulated 1 GiB uploads");
    println!("(targets: ≤ 1 µs and ≤ 4 allocations per chunk cycle)");
    // With CRC32C, each run also hashes the same bytes alone right after the upload, so the
    // core's cost without hashing is a difference of two times taken a moment apart.
    let mut crc_alone = Vec::new();
    let mut without_hashing = Vec::new();
    for scenario in Scenario::ALL {
        if !scenario.name().contains(only.as_str()) {
            continue;
        }
        let mut per_cycle = Vec::new();
        let mut cycles = 0;
        for _ in 0..runs {
            let (elapsed, n) = time_cycles(scenario, source);
            let ns = elapsed.as_nanos() as f64 / n as f64;
            per_cycle.push(ns);
            cycles = n;
            if let Scenario::GcsCrc32c = scenario {
                let t = Instant::now();
                black_box(crc32c_alone(source, n));
                let crc = t.elapsed().as_nanos() as f64 / n as f64;
                crc_alone.push(crc);
                without_hashing.push(ns - crc);
            }
        }
        let ns = median(per_cycle);
        let counted = count_allocations(scenario, source);
        println!(
            "  {:<48} {:>4} cycles {:>7.0} ns/cycle {} {:>5.2} allocations/cycle {} \
             ({:.0} bytes/cycle; {} in the whole upload)",
            scenario.name(),
            cycles,
            ns,
            mark(ns <= 1000.0),
            counted.per_cycle,
            mark(counted.per_cycle <= 4.0),
            counted.bytes_per_cycle,
            counted.whole,
        );
    }
    if !crc_alone.is_empty() {
        let crc_ns = median(crc_alone);
        println!(
            "  CRC32C of 256 KiB alone (64 KiB pieces): {crc_ns:.0} ns per chunk ({:.1} GB/s)",
            CHUNK as f64 / crc_ns
        );
        let core = median(without_hashing);
        println!(
            "  gcs with CRC32C minus CRC32C alone, per run (the core without hashing: 4 pieces \
             handed in and the chunk): {core:.0} ns/cycle {}",
            mark(core <= 1000.0)
        );
    }
    let t = Instant::now();
    const PAIRS: u32 = 1_000_000;
    for i in 0..PAIRS {
        drop(black_box(vec![i as u8; 48]));
    }
    println!(
        "  (for scale: one 48-byte allocation + free in this binary takes {:.1} ns)",
        t.elapsed().as_nanos() as f64 / f64::from(PAIRS)
    );
    println!();
}

fn benches(c: &mut Criterion, source: &[u8]) {
    let mut group = c.benchmark_group("gcs 1 GiB, 256 KiB chunks");
    group.throughput(Throughput::Elements(TOTAL / CHUNK));
    group.sample_size(20);
    group.bench_function("checksums off", |b| {
        b.iter_custom(|iters| {
            (0..iters)
                .map(|_| time_cycles(Scenario::GcsPlain, source).0)
                .sum()
        })
    });
    group.sample_size(10);
    group.sampling_mode(SamplingMode::Flat);
    group.bench_function("crc32c", |b| {
        b.iter_custom(|iters| {
            (0..iters)
                .map(|_| time_cycles(Scenario::GcsCrc32c, source).0)
                .sum()
        })
    });
    group.bench_function("crc32c only (no core)", |b| {
        b.iter(|| crc32c_alone(source, (TOTAL / CHUNK) as usize))
    });
    group.finish();

    let mut group = c.benchmark_group("ton 1 GiB, 256 KiB chunks");
    group.throughput(Throughput::Elements(TOTAL / CHUNK));
    group.sample_size(20);
    group.bench_function("chunks", |b| {
        b.iter_custom(|iters| {
            (0..iters)
                .map(|_| time_cycles(Scenario::Ton, source).0)
                .sum()
        })
    });
    group.finish();

    let mut group = c.benchmark_group("media v1.1 1 GiB, 1000 segments");
    group.throughput(Throughput::Elements(1000));
    group.sample_size(20);
    group.bench_function("append", |b| {
        b.iter_custom(|iters| {
            (0..iters)
                .map(|_| time_cycles(Scenario::Media, source).0)
                .sum()
        })
    });
    group.finish();
}

fn main() {
    let source = source_pattern();
    summary(&source);
    if std::env::var_os("CORE_BENCH_SUMMARY_ONLY").is_some() {
        return;
    }
    let mut criterion = Criterion::default().configure_from_args();
    benches(&mut criterion, &source);
    criterion.final_summary();
}
