//! Scripted exchanges for TON: each test builds an upload, feeds it responses, and asserts the
//! exact requests (method, URI, headers, body range) and the outcome. Rule ids (T1–T6) are
//! from docs/protocols.

use std::ops::Range;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{HeaderValue, Method, StatusCode};
use resumable_core::ton::{
    CHUNK_LIMIT, ChunkLimits, TonCompletion, TonConfig, TonResumeState, TonStart, TonUpload,
};
use resumable_core::{
    Action, Error, ProtocolViolation, RequestId, RetryCause, RetryPolicy, SessionUri, Transmit,
    TransportFailure, Upload, UsageError,
};

const KIB: u64 = 1024;
const MIB: u64 = 1024 * 1024;
const BUCKET: &str = "https://ton.twitter.com/1.1/ton/bucket/ta_partner";
const START: &str = "https://ton.twitter.com/1.1/ton/bucket/ta_partner?resumable=true";
/// What the server sends (T3): a path relative to the host.
const LOCATION_PATH: &str =
    "/1.1/ton/bucket/ta_partner/SzFxGfAg_Zj.mp4?resumable=true&resumeId=SECRET28401873";
const LOCATION: &str = concat!(
    "https://ton.twitter.com",
    "/1.1/ton/bucket/ta_partner/SzFxGfAg_Zj.mp4?resumable=true&resumeId=SECRET28401873"
);
const OBJECT_PATH: &str = "/1.1/ton/bucket/ta_partner/SzFxGfAg_Zj.mp4";
const OBJECT: &str = "https://ton.twitter.com/1.1/ton/bucket/ta_partner/SzFxGfAg_Zj.mp4";
const EXPIRES: &str = "Wed, 05 Nov 2014 23:50:16 UTC";

/// One scripted exchange: the upload and a clock the test moves.
struct Exchange {
    upload: TonUpload,
    now: Instant,
}

impl Exchange {
    fn new(start: TonStart, config: TonConfig) -> Self {
        Exchange {
            upload: TonUpload::new(start, config).expect("valid upload"),
            now: Instant::now(),
        }
    }

    /// A resumable upload of `total` bytes with a fixed preferred chunk size.
    fn resumable(total: u64, chunk: u64) -> Self {
        Exchange::new(resumable(), fixed(total, chunk))
    }

    fn poll(&mut self) -> Action<TonCompletion> {
        self.upload.poll_action(self.now)
    }

    fn send(&mut self) -> Transmit {
        match self.poll() {
            Action::Send(s) => s,
            other => panic!("expected a request, got {other:?}"),
        }
    }

    fn done(&mut self) -> Result<TonCompletion, Error> {
        match self.poll() {
            Action::Done(outcome) => outcome,
            other => panic!("expected Done, got {other:?}"),
        }
    }

    fn wait(&mut self) -> Instant {
        match self.poll() {
            Action::Wait(until) => until,
            other => panic!("expected Wait, got {other:?}"),
        }
    }

    fn respond(&mut self, id: RequestId, status: u16, headers: &[(&str, &str)], body: &str) {
        self.upload
            .handle_response(self.now, id, response(status, headers, body))
            .expect("response accepted");
    }

    fn fail(&mut self, id: RequestId, failure: TransportFailure) {
        self.upload
            .handle_failure(self.now, id, failure)
            .expect("failure accepted");
    }

    /// Sends the start, answers 201 with the documented headers (T3) and the given limits,
    /// and returns the first chunk.
    fn started(&mut self, min: u64, max: u64) -> Transmit {
        let start = self.send();
        let (min, max) = (min.to_string(), max.to_string());
        self.respond(start.id, 201, &t3_headers(&min, &max), "");
        self.send()
    }

    /// Answers a chunk as a server that stored all of it, in the documented form (T5).
    fn ack(&mut self, send: &Transmit) {
        let last = send.body.source.end - 1;
        self.respond(send.id, 308, &[("range", &format!("0-{last}"))], "");
    }
}

fn resumable() -> TonStart {
    TonStart::Resumable {
        bucket_url: BUCKET.parse().unwrap(),
    }
}

fn config(total: u64) -> TonConfig {
    let mut config = TonConfig::new(HeaderValue::from_static("video/mp4"), total);
    config.retry = RetryPolicy::default().with_seed(7);
    config
}

/// A config whose chunk size does not adapt (`chunk_time: None`).
fn fixed(total: u64, chunk: u64) -> TonConfig {
    let mut config = config(total);
    config.chunk_size = chunk;
    config.chunk_time = None;
    config
}

fn t3_headers<'a>(min: &'a str, max: &'a str) -> Vec<(&'a str, &'a str)> {
    vec![
        ("location", LOCATION_PATH),
        ("x-ton-min-chunk-size", min),
        ("x-ton-max-chunk-size", max),
        ("expires", EXPIRES),
        ("date", "Wed, 05 Nov 2014 22:50:16 UTC"),
        ("content-length", "0"),
    ]
}

fn response(status: u16, headers: &[(&str, &str)], body: &str) -> http::Response<Bytes> {
    let mut b = http::Response::builder().status(status);
    for (k, v) in headers {
        b = b.header(*k, *v);
    }
    b.body(Bytes::copy_from_slice(body.as_bytes())).unwrap()
}

fn header<'a>(send: &'a Transmit, name: &str) -> Option<&'a str> {
    send.request
        .headers()
        .get(name)
        .map(|v| v.to_str().unwrap())
}

fn header_names(send: &Transmit) -> Vec<&str> {
    let mut names: Vec<&str> = send.request.headers().keys().map(|k| k.as_str()).collect();
    names.sort();
    names
}

/// T4: `PUT Location`, `Content-Type`, `Content-Range: bytes A-B/T`, `Content-Length`, the
/// source range as the body, and nothing else.
fn assert_chunk(send: &Transmit, range: Range<u64>, total: u64) {
    assert_eq!(send.request.method(), Method::PUT);
    assert_eq!(send.request.uri(), LOCATION);
    assert_eq!(
        header_names(send),
        ["content-length", "content-range", "content-type"]
    );
    assert_eq!(header(send, "content-type"), Some("video/mp4"));
    let content_range = format!("bytes {}-{}/{total}", range.start, range.end - 1);
    assert_eq!(header(send, "content-range"), Some(content_range.as_str()));
    let len = (range.end - range.start).to_string();
    assert_eq!(header(send, "content-length"), Some(len.as_str()));
    assert_eq!(send.body.source, range);
    assert!(send.body.prefix.is_empty() && send.body.suffix.is_empty());
}

fn chunk_limits(detail: &Error) -> bool {
    matches!(detail, Error::Protocol(ProtocolViolation::ChunkLimits(_)))
}

// T1: one POST to the bucket with the whole body, Content-Type and Content-Length; 201 with a
// relative Location is the outcome.
#[test]
fn t1_single_request_posts_the_whole_body() {
    let mut config = config(5000);
    config.expires = Some("Thu, 06 Nov 2014 22:50:16 GMT".into());
    config.start_headers.insert(
        "authorization",
        HeaderValue::from_static("OAuth oauth_signature=\"SECRETSIG\""),
    );
    let start = TonStart::Single {
        bucket_url: BUCKET.parse().unwrap(),
    };
    let mut ex = Exchange::new(start, config);
    let post = ex.send();
    assert_eq!(post.request.method(), Method::POST);
    assert_eq!(post.request.uri(), BUCKET);
    assert_eq!(
        header_names(&post),
        [
            "authorization",
            "content-length",
            "content-type",
            "x-ton-expires"
        ]
    );
    assert_eq!(header(&post, "content-type"), Some("video/mp4"));
    assert_eq!(header(&post, "content-length"), Some("5000"));
    assert_eq!(
        header(&post, "x-ton-expires"),
        Some("Thu, 06 Nov 2014 22:50:16 GMT")
    );
    assert_eq!(post.body.source, 0..5000);
    assert!(ex.upload.resume_state().is_none(), "nothing to resume (T1)");
    ex.respond(post.id, 201, &[("location", OBJECT_PATH)], "");
    let done = ex.done().expect("stored");
    assert_eq!(done.status, StatusCode::CREATED);
    assert_eq!(done.size, 5000);
    assert_eq!(done.location, OBJECT);
    assert_eq!(ex.upload.persisted(), 5000);
}

// T1: a failed single request is retried as a whole; 64 MiB or more is refused up front.
#[test]
fn t1_single_request_is_retried_whole_and_limited_to_under_64_mib() {
    let start = || TonStart::Single {
        bucket_url: BUCKET.parse().unwrap(),
    };
    let mut ex = Exchange::new(start(), config(10));
    let post = ex.send();
    ex.respond(post.id, 503, &[], "");
    ex.now = ex.wait();
    let again = ex.send();
    assert_eq!(again.request.method(), Method::POST);
    assert_eq!(again.body.source, 0..10);
    ex.respond(again.id, 201, &[("location", OBJECT_PATH)], "");
    assert_eq!(ex.done().unwrap().location, OBJECT);

    assert!(TonUpload::new(start(), config(CHUNK_LIMIT - 1)).is_ok());
    assert!(matches!(
        TonUpload::new(start(), config(CHUNK_LIMIT)),
        Err(UsageError::InvalidInput { .. })
    ));
}

// T2: the start request, exactly: POST ?resumable=true, Content-Length: 0, Content-Type and
// X-TON-Content-Type, X-TON-Content-Length, X-TON-Expires, and the caller's Authorization.
#[test]
fn t2_start_request_has_exactly_the_documented_headers() {
    let mut config = config(516_928_473);
    config.expires = Some(" Thu, 06 Nov 2014 22:50:16 GMT ".into());
    config.start_headers.insert(
        "authorization",
        HeaderValue::from_static("OAuth oauth_signature=\"SECRETSIG\""),
    );
    let mut ex = Exchange::new(resumable(), config);
    let start = ex.send();
    assert_eq!(start.request.method(), Method::POST);
    assert_eq!(start.request.uri(), START);
    assert_eq!(
        header_names(&start),
        [
            "authorization",
            "content-length",
            "content-type",
            "x-ton-content-length",
            "x-ton-content-type",
            "x-ton-expires"
        ]
    );
    assert_eq!(header(&start, "content-length"), Some("0"));
    assert_eq!(header(&start, "content-type"), Some("video/mp4"));
    assert_eq!(header(&start, "x-ton-content-type"), Some("video/mp4"));
    assert_eq!(header(&start, "x-ton-content-length"), Some("516928473"));
    assert_eq!(
        header(&start, "x-ton-expires"),
        Some("Thu, 06 Nov 2014 22:50:16 GMT")
    );
    assert!(start.body.is_empty());
    assert!(start.request.headers()["authorization"].is_sensitive());

    // Without X-TON-Expires, the header is left out.
    let mut ex = Exchange::resumable(10, KIB);
    assert_eq!(header(&ex.send(), "x-ton-expires"), None);
}

// T2: `resumable=true` is appended to a query the bucket URL already has, and not doubled.
#[test]
fn t2_resumable_is_added_to_any_query() {
    for (bucket, start) in [
        (BUCKET, START),
        (
            "https://ton.twitter.com/1.1/ton/bucket/b?x=1",
            "https://ton.twitter.com/1.1/ton/bucket/b?x=1&resumable=true",
        ),
        (
            "https://ton.twitter.com/1.1/ton/bucket/b?",
            "https://ton.twitter.com/1.1/ton/bucket/b?resumable=true",
        ),
        (
            "https://ton.twitter.com/1.1/ton/bucket/b?resumable=true",
            "https://ton.twitter.com/1.1/ton/bucket/b?resumable=true",
        ),
        (
            "http://127.0.0.1:8080/1.1/ton/bucket/b",
            "http://127.0.0.1:8080/1.1/ton/bucket/b?resumable=true",
        ),
    ] {
        let start_choice = TonStart::Resumable {
            bucket_url: bucket.parse().unwrap(),
        };
        let mut ex = Exchange::new(start_choice, config(10));
        assert_eq!(ex.send().request.uri(), start, "{bucket}");
    }
}

// T2: a resumable upload needs a byte to put in a chunk; bad input is a usage error.
#[test]
fn t2_invalid_input_is_refused_up_front() {
    assert!(matches!(
        TonUpload::new(resumable(), config(0)),
        Err(UsageError::InvalidInput { .. })
    ));
    let relative = TonStart::Resumable {
        bucket_url: "/1.1/ton/bucket/b".parse().unwrap(),
    };
    assert!(matches!(
        TonUpload::new(relative, config(10)),
        Err(UsageError::InvalidInput { .. })
    ));
    let mut bad_expires = config(10);
    bad_expires.expires = Some("line\nbreak".into());
    assert!(matches!(
        TonUpload::new(resumable(), bad_expires),
        Err(UsageError::InvalidInput { .. })
    ));
    let mut zero_chunk = config(10);
    zero_chunk.chunk_size = 0;
    assert!(matches!(
        TonUpload::new(resumable(), zero_chunk),
        Err(UsageError::ChunkSize { size: 0, .. })
    ));
    // An empty file goes in one request (T1).
    let single = TonStart::Single {
        bucket_url: BUCKET.parse().unwrap(),
    };
    let mut ex = Exchange::new(single, config(0));
    let post = ex.send();
    assert_eq!(header(&post, "content-length"), Some("0"));
    assert!(post.body.is_empty());
}

// T3: the relative Location is resolved against the start URL; the limits and Expires are kept
// and exposed; the chunks go to the resolved location.
#[test]
fn t3_relative_location_limits_and_expires() {
    let mut ex = Exchange::resumable(10 * KIB, 4 * KIB);
    assert_eq!(ex.upload.expires(), None);
    let first = ex.started(KIB, 8 * KIB);
    assert_chunk(&first, 0..4 * KIB, 10 * KIB);
    assert_eq!(ex.upload.location().unwrap().expose(), LOCATION);
    assert_eq!(
        ex.upload.limits(),
        Some(ChunkLimits {
            min: KIB,
            max: 8 * KIB
        })
    );
    assert_eq!(ex.upload.expires(), Some(EXPIRES));
    let state = ex.upload.resume_state().expect("an upload exists");
    assert_eq!(state.location.expose(), LOCATION);
    assert_eq!((state.min_chunk, state.max_chunk), (KIB, 8 * KIB));
    assert_eq!(state.expires.as_deref(), Some(EXPIRES));
    assert_eq!((state.persisted, state.sent), (0, 4 * KIB));

    // An absolute Location is taken as it is.
    let mut ex = Exchange::resumable(10, KIB);
    let start = ex.send();
    ex.respond(
        start.id,
        201,
        &[
            ("location", "https://upload.example/u?resumeId=9"),
            ("x-ton-min-chunk-size", "1024"),
            ("x-ton-max-chunk-size", "2048"),
        ],
        "",
    );
    assert_eq!(
        ex.send().request.uri(),
        "https://upload.example/u?resumeId=9"
    );
    assert_eq!(ex.upload.expires(), None, "no Expires given by anyone");
}

// T3: missing, repeated, unparsable, zero or contradictory chunk sizes are typed errors.
#[test]
fn t3_unusable_chunk_sizes_are_typed_errors() {
    let cases: [&[(&str, &str)]; 9] = [
        &[("x-ton-max-chunk-size", "1024")],
        &[("x-ton-min-chunk-size", "1024")],
        &[
            ("x-ton-min-chunk-size", "abc"),
            ("x-ton-max-chunk-size", "1024"),
        ],
        &[
            ("x-ton-min-chunk-size", "-1"),
            ("x-ton-max-chunk-size", "1024"),
        ],
        &[
            ("x-ton-min-chunk-size", "0"),
            ("x-ton-max-chunk-size", "1024"),
        ],
        &[
            ("x-ton-min-chunk-size", "1024"),
            ("x-ton-max-chunk-size", "0"),
        ],
        &[
            ("x-ton-min-chunk-size", "4096"),
            ("x-ton-max-chunk-size", "1024"),
        ],
        &[
            ("x-ton-min-chunk-size", "1024"),
            ("x-ton-min-chunk-size", "1024"),
            ("x-ton-max-chunk-size", "4096"),
        ],
        &[
            ("x-ton-min-chunk-size", "99999999999999999999999"),
            ("x-ton-max-chunk-size", "4096"),
        ],
    ];
    for sizes in cases {
        let mut ex = Exchange::resumable(10 * KIB, KIB);
        let start = ex.send();
        let mut headers = vec![("location", LOCATION_PATH)];
        headers.extend_from_slice(sizes);
        ex.respond(start.id, 201, &headers, "");
        let err = ex.done().unwrap_err();
        assert!(chunk_limits(&err), "{sizes:?}: {err:?}");
        assert!(ex.upload.resume_state().is_none());
    }

    // No Location at all.
    let mut ex = Exchange::resumable(10, KIB);
    let start = ex.send();
    ex.respond(
        start.id,
        201,
        &[
            ("x-ton-min-chunk-size", "1024"),
            ("x-ton-max-chunk-size", "2048"),
        ],
        "",
    );
    assert_eq!(
        ex.done(),
        Err(Error::Protocol(ProtocolViolation::MissingLocation))
    );
}

// T3 + T4: a minimum of 64 MiB or more leaves no non-final chunk under 64 MiB: fine for a file
// that fits in one chunk, a typed error for a larger one.
#[test]
fn t3_a_minimum_of_64_mib_only_fits_a_one_chunk_file() {
    let (min, max) = (64 * MIB, 128 * MIB);
    let mut ex = Exchange::resumable(10 * MIB, MIB);
    let only = ex.started(min, max);
    assert_chunk(&only, 0..10 * MIB, 10 * MIB);

    let mut ex = Exchange::resumable(100 * MIB, MIB);
    let start = ex.send();
    let (min, max) = (min.to_string(), max.to_string());
    ex.respond(start.id, 201, &t3_headers(&min, &max), "");
    assert!(chunk_limits(&ex.done().unwrap_err()));
}

// T4: every chunk but the last is a multiple of min, each is at most max and under 64 MiB; the
// preferred size is rounded down to fit.
#[test]
fn t4_chunks_obey_min_max_and_64_mib() {
    // Preferred 1 GiB, max 200 MiB: the cap is 64 MiB − 1, rounded down to 12 × 5 MiB.
    let total = 150 * MIB;
    let mut ex = Exchange::resumable(total, 1024 * MIB);
    let c1 = ex.started(5 * MIB, 200 * MIB);
    assert_chunk(&c1, 0..60 * MIB, total);
    ex.ack(&c1);
    let c2 = ex.send();
    assert_chunk(&c2, 60 * MIB..120 * MIB, total);
    ex.ack(&c2);
    let c3 = ex.send();
    assert_chunk(&c3, 120 * MIB..total, total);
    ex.respond(c3.id, 201, &[("location", OBJECT_PATH)], "");
    assert_eq!(ex.done().unwrap().size, total);

    // (preferred, min, max) → chunk size.
    for (preferred, min, max, want) in [
        (7 * MIB, 5 * MIB, 200 * MIB, 5 * MIB), // rounded down to a multiple of min
        (KIB, 4 * KIB, 1024 * KIB, 4 * KIB),    // at least min
        (MIB, 4 * KIB, 10 * KIB, 8 * KIB),      // max is not a multiple of min
        (MIB, 4 * KIB, 4 * KIB, 4 * KIB),       // min = max
        (128 * MIB, MIB, 64 * MIB, 63 * MIB),   // max = 64 MiB is not under 64 MiB
    ] {
        let mut ex = Exchange::resumable(1000 * MIB, preferred);
        let c = ex.started(min, max);
        assert_eq!(c.body.source, 0..want, "{preferred} {min} {max}");
        assert_eq!(ex.upload.chunk_size(), Some(want));
    }
}

// T4: the chunk size follows the observed rate: L × 20 s / elapsed, fitted to the limits,
// measured from when the request was handed out to its response.
#[test]
fn t4_chunk_size_adapts_to_the_observed_rate() {
    let total = 1000 * MIB;
    let mut config = config(total);
    config.chunk_size = MIB;
    assert_eq!(config.chunk_time, Some(Duration::from_secs(20)));
    let mut ex = Exchange::new(resumable(), config);
    let c1 = ex.started(256 * KIB, 100 * MIB);
    assert_chunk(&c1, 0..MIB, total);

    // Polled again later: still in flight, and its clock started when it was handed out.
    ex.now += Duration::from_secs(1);
    assert!(matches!(ex.upload.poll_action(ex.now), Action::Idle));
    // 1 MiB in 2 s = 512 KiB/s → 10 MiB in 20 s.
    ex.now += Duration::from_secs(1);
    ex.ack(&c1);
    let c2 = ex.send();
    assert_chunk(&c2, MIB..11 * MIB, total);

    // 10 MiB in 40 s = 256 KiB/s → 5 MiB.
    ex.now += Duration::from_secs(40);
    ex.ack(&c2);
    let c3 = ex.send();
    assert_chunk(&c3, 11 * MIB..16 * MIB, total);

    // 5 MiB in 7 s → 14.28 MiB, rounded down to a multiple of 256 KiB: 14.25 MiB.
    ex.now += Duration::from_secs(7);
    ex.ack(&c3);
    let c4 = ex.send();
    let size = (5 * MIB * 20 / 7) / (256 * KIB) * (256 * KIB);
    assert_eq!(size, 14 * MIB + 256 * KIB);
    assert_chunk(&c4, 16 * MIB..16 * MIB + size, total);

    // Answered at once: too fast to measure, so the cap (64 MiB − 1 → 63.75 MiB).
    ex.ack(&c4);
    let c5 = ex.send();
    let start = 16 * MIB + size;
    assert_chunk(&c5, start..start + 63 * MIB + 768 * KIB, total);

    // Very slow: 63.75 MiB in 1 hour → below min, so min.
    ex.now += Duration::from_secs(3600);
    ex.ack(&c5);
    let c6 = ex.send();
    assert_eq!(c6.body.source.end - c6.body.source.start, 256 * KIB);
    assert_eq!(ex.upload.chunk_size(), Some(256 * KIB));
}

// T4: a chunk that timed out is halved for the retry (fitted to the limits); with adaptation
// off the size is fixed.
#[test]
fn t4_a_timed_out_chunk_is_halved() {
    let total = 100 * MIB;
    let mut config = config(total);
    config.chunk_size = 8 * MIB;
    let mut ex = Exchange::new(resumable(), config);
    let c1 = ex.started(MIB, 64 * MIB);
    assert_chunk(&c1, 0..8 * MIB, total);
    ex.fail(c1.id, TransportFailure::Timeout);
    ex.now = ex.wait();
    let again = ex.send();
    assert_chunk(&again, 0..4 * MIB, total);
    ex.fail(again.id, TransportFailure::Timeout);
    ex.now = ex.wait();
    let again = ex.send();
    assert_chunk(&again, 0..2 * MIB, total);

    // A reset says nothing about the size.
    ex.fail(again.id, TransportFailure::Reset);
    ex.now = ex.wait();
    assert_chunk(&ex.send(), 0..2 * MIB, total);

    let mut ex = Exchange::resumable(total, 8 * MIB);
    let c1 = ex.started(MIB, 64 * MIB);
    ex.fail(c1.id, TransportFailure::Timeout);
    ex.now = ex.wait();
    assert_chunk(&ex.send(), 0..8 * MIB, total);
}

// T5: both Range forms, `0-N` (documented) and `bytes=0-N`.
#[test]
fn t5_both_range_forms_are_read() {
    for (form, value) in [("documented", "0-4095"), ("bytes=", "bytes=0-4095")] {
        let mut ex = Exchange::resumable(10 * KIB, 4 * KIB);
        let c1 = ex.started(KIB, 8 * KIB);
        ex.respond(c1.id, 308, &[("range", value)], "");
        assert_eq!(ex.upload.persisted(), 4 * KIB, "{form}");
        assert_chunk(&ex.send(), 4 * KIB..8 * KIB, 10 * KIB);
    }
}

// T5: Range: 0-N read so the count agrees with what was sent (N+1 = sent or N = sent), else
// the reading that is a multiple of min, else a typed error.
#[test]
fn t5_off_by_one_readings() {
    // (Range, persisted) after a chunk 0..4096 with min 1 KiB.
    for (range, persisted) in [
        ("0-4095", 4096), // N+1 = sent: N is the last byte
        ("0-4096", 4096), // N = sent: N is the length
        ("0-2047", 2048), // neither; N+1 is a multiple of min
        ("0-2048", 2048), // neither; N is a multiple of min
        ("0-0", 0),       // N = 0 bytes (a 0-byte claim is not progress)
    ] {
        let mut ex = Exchange::resumable(10 * KIB, 4 * KIB);
        let c1 = ex.started(KIB, 8 * KIB);
        ex.respond(c1.id, 308, &[("range", range)], "");
        assert_eq!(ex.upload.persisted(), persisted, "{range}");
        if persisted == 0 {
            ex.now = ex.wait();
        }
        assert_chunk(&ex.send(), persisted..persisted + 4 * KIB, 10 * KIB);
    }

    // Neither reading fits: typed error, and no byte is skipped.
    let mut ex = Exchange::resumable(10 * KIB, 4 * KIB);
    let c1 = ex.started(KIB, 8 * KIB);
    ex.respond(c1.id, 308, &[("range", "0-2500")], "");
    assert_eq!(
        ex.done(),
        Err(Error::Protocol(ProtocolViolation::RangeUnreadable {
            n: 2500,
            chunk_end: 4096,
            min_chunk: 1024
        }))
    );

    // After the last chunk a 308 means incomplete: `0-(T−1)` cannot mean all T bytes, so it
    // reads as T−1 when that is a multiple of min.
    let total = 4 * KIB + 1;
    let mut ex = Exchange::resumable(total, 8 * KIB);
    let last = ex.started(KIB, 8 * KIB);
    assert_chunk(&last, 0..total, total);
    ex.respond(last.id, 308, &[("range", "0-4096")], "");
    assert_eq!(ex.upload.persisted(), 4 * KIB);
    assert_chunk(&ex.send(), 4 * KIB..total, total);
    // …and claiming all of it on a 308 fits no reading.
    let mut ex = Exchange::resumable(10 * KIB + 7, 16 * KIB);
    let last = ex.started(KIB, 16 * KIB);
    ex.respond(last.id, 308, &[("range", "0-10246")], "");
    assert!(matches!(
        ex.done(),
        Err(Error::Protocol(ProtocolViolation::RangeUnreadable { .. }))
    ));
}

// T5: with a minimum chunk size of 1 both readings are possible; the smaller is the one that
// is proven ("never resume past a byte you cannot prove was stored"), so the byte in doubt is
// sent again rather than skipped (the simulation found a count-form server for which the
// larger reading skipped a byte).
#[test]
fn t5_ambiguous_reading_takes_the_smaller() {
    let mut ex = Exchange::resumable(100, 40);
    let c1 = ex.started(1, 100);
    assert_chunk(&c1, 0..40, 100);
    ex.respond(c1.id, 308, &[("range", "0-39")], "");
    assert_eq!(ex.upload.persisted(), 39);
    assert_chunk(&ex.send(), 39..79, 100);
}

// T4, T5: with a minimum chunk size of 1, chunks are at least 2 bytes, so even the smaller
// reading of a full acknowledgement moves on (a 1-byte chunk could be read as no progress).
#[test]
fn t4_chunks_are_at_least_two_bytes_with_a_minimum_of_one() {
    let mut ex = Exchange::resumable(10, 1);
    let c1 = ex.started(1, 100);
    assert_chunk(&c1, 0..2, 10);
    ex.respond(c1.id, 308, &[("range", "0-1")], "");
    assert_eq!(ex.upload.persisted(), 1);
    assert_chunk(&ex.send(), 1..3, 10);
}

// T5 (as G5): a Range not from 0, beyond what was sent, malformed, repeated, or going
// backwards is a protocol violation.
#[test]
fn t5_lying_ranges_are_protocol_violations() {
    let cases: [(&[(&str, &str)], ProtocolViolation); 5] = [
        (
            &[("range", "5-100")],
            ProtocolViolation::RangeNotFromZero { start: 5 },
        ),
        (
            &[("range", "0-5000")],
            ProtocolViolation::RangeBeyondSent {
                claimed: 5000,
                sent: 4096,
            },
        ),
        (&[("range", "bytes=0-x")], ProtocolViolation::MalformedRange),
        (&[("range", "items=0-1")], ProtocolViolation::MalformedRange),
        (
            &[("range", "0-1023"), ("range", "0-2047")],
            ProtocolViolation::MalformedRange,
        ),
    ];
    for (headers, violation) in cases {
        let mut ex = Exchange::resumable(10 * KIB, 4 * KIB);
        let c1 = ex.started(KIB, 8 * KIB);
        ex.respond(c1.id, 308, headers, "");
        assert_eq!(ex.done(), Err(Error::Protocol(violation)), "{headers:?}");
    }
    for later in [&[("range", "0-1023")][..], &[]] {
        let mut ex = Exchange::resumable(10 * KIB, 4 * KIB);
        let c1 = ex.started(KIB, 8 * KIB);
        ex.ack(&c1);
        let c2 = ex.send();
        ex.respond(c2.id, 308, later, "");
        let now = if later.is_empty() { 0 } else { 1024 };
        assert_eq!(
            ex.done(),
            Err(Error::Protocol(ProtocolViolation::PersistedWentBackwards {
                before: 4096,
                now
            })),
            "{later:?}"
        );
    }
}

// T5: 308 without Range means nothing is held: a bounded retry of the same chunk.
#[test]
fn t5_308_without_range_means_nothing_is_held() {
    let mut ex = Exchange::resumable(10 * KIB, 4 * KIB);
    let c1 = ex.started(KIB, 8 * KIB);
    ex.respond(c1.id, 308, &[], "");
    assert_eq!(ex.upload.persisted(), 0);
    ex.now = ex.wait();
    assert_chunk(&ex.send(), 0..4 * KIB, 10 * KIB);
    assert_eq!(ex.upload.stats().retries, 1);
}

// T6: the final chunk's 201 + Location (relative, resolved) is the outcome.
#[test]
fn t6_final_201_location_is_the_outcome() {
    let total = 10 * KIB;
    let mut ex = Exchange::resumable(total, 4 * KIB);
    let c1 = ex.started(KIB, 8 * KIB);
    assert_chunk(&c1, 0..4 * KIB, total);
    ex.ack(&c1);
    let c2 = ex.send();
    assert_chunk(&c2, 4 * KIB..8 * KIB, total);
    ex.respond(c2.id, 308, &[("range", "bytes=0-8191")], "");
    let c3 = ex.send();
    assert_chunk(&c3, 8 * KIB..total, total);
    ex.respond(
        c3.id,
        201,
        &[
            (
                "location",
                "/1.1/ton/bucket/ta_partner/SzFxGfAg_Zj.mp4?v=SECRETQ",
            ),
            ("content-length", "0"),
        ],
        "",
    );
    let done = ex.done().expect("complete");
    assert_eq!(done.status, StatusCode::CREATED);
    assert_eq!(done.size, total);
    assert_eq!(
        done.location,
        "https://ton.twitter.com/1.1/ton/bucket/ta_partner/SzFxGfAg_Zj.mp4?v=SECRETQ"
    );
    assert!(!format!("{done:?}").contains("SECRETQ"));
    assert_eq!(ex.upload.persisted(), total);
    assert!(ex.upload.resume_state().is_none(), "nothing left to resume");
    let stats = ex.upload.stats();
    assert_eq!(
        (stats.requests, stats.retries, stats.bytes_sent),
        (4, 0, total)
    );
    // Sticky: the same outcome again.
    assert_eq!(ex.done().unwrap().location, done.location);
}

// T6: completion before the last chunk, or without a Location, is a violation.
#[test]
fn t6_premature_or_location_less_completion_is_a_violation() {
    let mut ex = Exchange::resumable(10 * KIB, 4 * KIB);
    let c1 = ex.started(KIB, 8 * KIB);
    ex.respond(c1.id, 201, &[("location", OBJECT_PATH)], "");
    assert_eq!(
        ex.done(),
        Err(Error::Protocol(ProtocolViolation::PrematureCompletion {
            sent: 4 * KIB,
            total: 10 * KIB
        }))
    );
    let mut ex = Exchange::resumable(KIB, 4 * KIB);
    let only = ex.started(KIB, 8 * KIB);
    ex.respond(only.id, 201, &[], "");
    assert_eq!(
        ex.done(),
        Err(Error::Protocol(ProtocolViolation::MissingLocation))
    );
}

// T6: 4xx other than 408/429 are final, with the server's message; on the start too.
#[test]
fn t6_client_errors_are_final() {
    let mut ex = Exchange::resumable(10 * KIB, 4 * KIB);
    let c1 = ex.started(KIB, 8 * KIB);
    ex.respond(
        c1.id,
        400,
        &[("content-type", "application/json")],
        r#"{"errors":[{"code":3,"message":"Bad chunk"}]}"#,
    );
    let err = ex.done().unwrap_err();
    assert_eq!(
        err,
        Error::Server {
            status: StatusCode::BAD_REQUEST,
            message: Some("Bad chunk".into())
        }
    );
    assert!(!err.is_resumable());

    let mut ex = Exchange::resumable(10, KIB);
    let start = ex.send();
    ex.respond(start.id, 401, &[], "Could not authenticate you");
    assert_eq!(
        ex.done(),
        Err(Error::Server {
            status: StatusCode::UNAUTHORIZED,
            message: Some("Could not authenticate you".into())
        })
    );
    // A 404 on the start is the bucket, not the upload.
    let mut ex = Exchange::resumable(10, KIB);
    let start = ex.send();
    ex.respond(start.id, 404, &[], "");
    assert!(matches!(
        ex.done(),
        Err(Error::Server {
            status: StatusCode::NOT_FOUND,
            ..
        })
    ));
}

// T6: 408, 429 and 5xx are retried after the backoff, honouring Retry-After; the retry is
// the chunk from the last acknowledged offset (no status query exists).
#[test]
fn t6_retryable_statuses_honour_retry_after_and_resend_from_the_acknowledged_offset() {
    let total = 10 * KIB;
    let mut ex = Exchange::resumable(total, 4 * KIB);
    let c1 = ex.started(KIB, 8 * KIB);
    ex.ack(&c1);
    let c2 = ex.send();
    ex.respond(c2.id, 503, &[("retry-after", "30")], "");
    let until = ex.wait();
    assert!(until >= ex.now + Duration::from_secs(30) && until <= ex.now + Duration::from_secs(31));
    ex.now += Duration::from_secs(10);
    assert_eq!(ex.wait(), until, "polling early keeps waiting");
    ex.now = until;
    let again = ex.send();
    assert_chunk(&again, 4 * KIB..8 * KIB, total);

    // 429 with an HTTP-date Retry-After, measured against the response's Date.
    ex.respond(
        again.id,
        429,
        &[
            ("date", "Wed, 05 Nov 2014 23:00:00 GMT"),
            ("retry-after", "Wed, 05 Nov 2014 23:01:00 GMT"),
        ],
        "",
    );
    let until = ex.wait();
    assert!(until >= ex.now + Duration::from_secs(60));
    ex.now = until;
    let again = ex.send();
    assert_chunk(&again, 4 * KIB..8 * KIB, total);

    // 408: retried; the server had in fact stored the chunk, and says so on the re-send.
    ex.respond(again.id, 408, &[], "");
    ex.now = ex.wait();
    let again = ex.send();
    assert_chunk(&again, 4 * KIB..8 * KIB, total);
    ex.ack(&again);
    assert_eq!(ex.upload.persisted(), 8 * KIB);
    assert_eq!(ex.upload.stats().retries, 3);
}

// T6: after a transport failure the same chunk is sent again from the last acknowledged
// offset; the server's answer (it may hold more, up to what was sent) moves the offset on.
#[test]
fn t6_transport_failure_resends_from_the_acknowledged_offset() {
    let total = 20 * KIB;
    let mut ex = Exchange::resumable(total, 8 * KIB);
    let c1 = ex.started(KIB, 8 * KIB);
    ex.ack(&c1);
    let c2 = ex.send();
    assert_chunk(&c2, 8 * KIB..16 * KIB, total);
    ex.fail(c2.id, TransportFailure::Reset);
    let until = ex.wait();
    assert!(until >= ex.now + Duration::from_secs(1) && until <= ex.now + Duration::from_secs(2));
    ex.now = until;
    let again = ex.send();
    assert_chunk(&again, 8 * KIB..16 * KIB, total);
    ex.ack(&again);
    let last = ex.send();
    assert_chunk(&last, 16 * KIB..total, total);
    // The final response is lost; the re-sent final chunk is answered 201 again.
    ex.fail(last.id, TransportFailure::TruncatedResponse);
    ex.now = ex.wait();
    let again = ex.send();
    assert_chunk(&again, 16 * KIB..total, total);
    ex.respond(again.id, 201, &[("location", OBJECT_PATH)], "");
    assert_eq!(ex.done().unwrap().location, OBJECT);
}

// T6 (as G8): the retry budget ends a run of failures with RetriesExhausted.
#[test]
fn t6_retry_budget_ends_in_retries_exhausted() {
    let mut config = fixed(10 * KIB, 4 * KIB);
    config.retry.max_attempts = 2;
    let mut ex = Exchange::new(resumable(), config);
    let c = ex.started(KIB, 8 * KIB);
    ex.respond(c.id, 500, &[], "");
    ex.now = ex.wait();
    let c = ex.send();
    ex.fail(c.id, TransportFailure::Connect);
    ex.now = ex.wait();
    let c = ex.send();
    ex.respond(c.id, 502, &[], "");
    let err = ex.done().unwrap_err();
    assert_eq!(
        err,
        Error::RetriesExhausted {
            attempts: 3,
            last: RetryCause::Status(StatusCode::BAD_GATEWAY),
            endpoint: Some(resumable_core::Endpoint {
                host: "ton.twitter.com".into(),
                port: 443
            }),
        }
    );
    assert!(err.is_resumable());
    assert_eq!(ex.upload.resume_state().unwrap().persisted, 0);

    // Transport failures are final when the policy says so.
    let mut config = fixed(10 * KIB, 4 * KIB);
    config.retry.retry_transport = false;
    let mut ex = Exchange::new(resumable(), config);
    let c = ex.started(KIB, 8 * KIB);
    ex.fail(c.id, TransportFailure::Timeout);
    assert!(matches!(
        ex.done(),
        Err(Error::Transport {
            failure: TransportFailure::Timeout,
            endpoint: Some(_)
        })
    ));
}

// T6: 404/410 on the upload: gone; at or after its Expires (by the server's Date, or by the
// driver's clock measured from the start response), expired.
#[test]
fn t6_gone_and_expired_uploads_are_typed_errors() {
    for status in [404, 410] {
        let code = StatusCode::from_u16(status).unwrap();
        // Before the expiry by the server's Date: gone.
        let mut ex = Exchange::resumable(10 * KIB, 4 * KIB);
        let c = ex.started(KIB, 8 * KIB);
        ex.respond(
            c.id,
            status,
            &[("date", "Wed, 05 Nov 2014 23:00:00 GMT")],
            "",
        );
        assert_eq!(ex.done(), Err(Error::SessionGone { status: code }));
        // At or after it: expired (TON's `UTC` spelling and the standard `GMT` one).
        for date in [EXPIRES, "Thu, 06 Nov 2014 00:00:00 GMT"] {
            let mut ex = Exchange::resumable(10 * KIB, 4 * KIB);
            let c = ex.started(KIB, 8 * KIB);
            ex.respond(c.id, status, &[("date", date)], "");
            let err = ex.done().unwrap_err();
            assert_eq!(err, Error::Expired { status: code });
            assert!(!err.is_resumable());
        }
        // No Date: the start said one hour was left; two hours later it is expired.
        let mut ex = Exchange::resumable(10 * KIB, 4 * KIB);
        let c = ex.started(KIB, 8 * KIB);
        ex.now += Duration::from_secs(7200);
        ex.respond(c.id, status, &[], "");
        assert_eq!(ex.done(), Err(Error::Expired { status: code }));
        // No Date and not yet expired: gone.
        let mut ex = Exchange::resumable(10 * KIB, 4 * KIB);
        let c = ex.started(KIB, 8 * KIB);
        ex.respond(c.id, status, &[], "");
        assert_eq!(ex.done(), Err(Error::SessionGone { status: code }));
    }
}

/// The state after the first 4 KiB chunk of a 10 KiB upload was acknowledged and the second
/// handed out.
fn saved_state(fingerprint: &str) -> TonResumeState {
    let mut config = fixed(10 * KIB, 4 * KIB);
    config.fingerprint = fingerprint.into();
    let mut ex = Exchange::new(resumable(), config);
    let c1 = ex.started(KIB, 8 * KIB);
    ex.ack(&c1);
    let _c2 = ex.send();
    ex.upload.resume_state().expect("an upload exists")
}

// Resume: a saved state resumes the same upload with a chunk from the acknowledged offset (TON
// has no status query); the server may hold more, up to what was sent (T5).
#[test]
fn resume_from_a_saved_state() {
    let state = saved_state("movie.mp4:10240:1700000000");
    assert_eq!(
        state,
        TonResumeState {
            location: SessionUri::parse(LOCATION).unwrap(),
            total: 10 * KIB,
            persisted: 4 * KIB,
            sent: 8 * KIB,
            min_chunk: KIB,
            max_chunk: 8 * KIB,
            expires: Some(EXPIRES.into()),
            fingerprint: "movie.mp4:10240:1700000000".into(),
        }
    );
    let mut config = fixed(10 * KIB, 2 * KIB);
    config.fingerprint = state.fingerprint.clone();
    let mut ex = Exchange::new(TonStart::Resume(state.clone()), config.clone());
    assert_eq!(ex.upload.persisted(), 4 * KIB);
    assert_eq!(ex.upload.expires(), Some(EXPIRES));
    let first = ex.send();
    assert_chunk(&first, 4 * KIB..6 * KIB, 10 * KIB);
    // The server got all of the lost chunk (8 KiB): beyond this chunk but within `sent`.
    ex.respond(first.id, 308, &[("range", "0-8191")], "");
    assert_eq!(ex.upload.persisted(), 8 * KIB);
    let last = ex.send();
    assert_chunk(&last, 8 * KIB..10 * KIB, 10 * KIB);
    ex.respond(last.id, 201, &[("location", OBJECT_PATH)], "");
    assert_eq!(ex.done().unwrap().location, OBJECT);
    assert_eq!(ex.upload.stats().resumed_from, Some(4 * KIB));

    // T5: TON has no status query and no checksum, so a resumed upload cannot check a claim
    // beyond what its state says was sent: it is refused (never resume past a byte that is
    // not proven stored). A driver must therefore save the state durably before each request.
    let mut stale = state.clone();
    stale.sent = 4 * KIB;
    let mut ex = Exchange::new(TonStart::Resume(stale), config.clone());
    let first = ex.send();
    assert_chunk(&first, 4 * KIB..6 * KIB, 10 * KIB);
    ex.respond(first.id, 308, &[("range", "0-8191")], "");
    assert!(matches!(
        ex.done(),
        Err(Error::Protocol(ProtocolViolation::RangeBeyondSent { .. }))
    ));

    // A state for another source, or with impossible values, is refused.
    let mut other = config.clone();
    other.fingerprint = "other.mp4".into();
    assert_eq!(
        TonUpload::new(TonStart::Resume(state.clone()), other).err(),
        Some(UsageError::StateMismatch(
            "the source's fingerprint differs"
        ))
    );
    let mut other = config.clone();
    other.total += 1;
    assert!(matches!(
        TonUpload::new(TonStart::Resume(state.clone()), other),
        Err(UsageError::StateMismatch(_))
    ));
    for bad in [
        TonResumeState {
            persisted: 9 * KIB,
            ..state.clone()
        },
        TonResumeState {
            persisted: 1000,
            ..state.clone()
        },
        TonResumeState {
            sent: 11 * KIB,
            ..state.clone()
        },
        TonResumeState {
            min_chunk: 0,
            ..state.clone()
        },
        TonResumeState {
            min_chunk: 16 * KIB,
            ..state.clone()
        },
    ] {
        assert!(
            matches!(
                TonUpload::new(TonStart::Resume(bad.clone()), config.clone()),
                Err(UsageError::StateMismatch(_))
            ),
            "{bad:?}"
        );
    }
}

#[cfg(feature = "serde")]
#[test]
fn resume_state_round_trips_through_json() {
    let state = saved_state("f");
    let json = serde_json::to_string(&state).unwrap();
    assert!(json.contains(LOCATION), "saved as the real location");
    let back: TonResumeState = serde_json::from_str(&json).unwrap();
    assert_eq!(back, state);
}

// Secrets: the resume location and start headers never show in Debug, Display or errors.
#[test]
fn secrets_never_appear_in_debug_or_errors() {
    let mut config = config(10 * KIB);
    config.start_headers.insert(
        "authorization",
        HeaderValue::from_static("OAuth oauth_signature=\"SECRETSIG\""),
    );
    let start = TonStart::Resumable {
        bucket_url: "https://ton.twitter.com/1.1/ton/bucket/b?token=SECRETQUERY"
            .parse()
            .unwrap(),
    };
    let mut ex = Exchange::new(start.clone(), config.clone());
    let s = ex.send();
    let shown = format!("{s:?} {config:?} {start:?} {:?}", ex.upload);
    for secret in ["SECRETSIG", "SECRETQUERY"] {
        assert!(!shown.contains(secret), "{secret} in {shown}");
    }
    ex.respond(s.id, 201, &t3_headers("1024", "8192"), "");
    let c = ex.send();
    let state = ex.upload.resume_state().unwrap();
    let shown = format!(
        "{c:?} {:?} {state:?} {:?} {} {:?}",
        ex.upload,
        TonStart::Resume(state.clone()),
        state.location,
        ex.upload.location()
    );
    assert!(!shown.contains("SECRET"), "{shown}");
    ex.respond(c.id, 403, &[], "Forbidden");
    let err = ex.done().unwrap_err();
    assert!(!format!("{err} {err:?}").contains("SECRET"));
}

#[test]
// A request is handed out once: polling again while it is in flight is Idle.
fn a_request_is_handed_out_once() {
    let mut ex = Exchange::resumable(10 * KIB, 4 * KIB);
    let a = ex.send();
    assert!(matches!(ex.upload.poll_action(ex.now), Action::Idle));
    ex.respond(a.id, 201, &t3_headers("1024", "8192"), "");
    let c = ex.send();
    assert!(matches!(ex.upload.poll_action(ex.now), Action::Idle));
    assert_ne!(a.id, c.id);
    assert_eq!(ex.upload.stats().requests, 2);
}

#[test]
fn misuse_is_a_typed_usage_error_and_failure_is_sticky() {
    let mut ex = Exchange::resumable(10 * KIB, 4 * KIB);
    let start = ex.send();
    assert!(matches!(
        ex.upload.handle_read(ex.now, 0, b"x"),
        Err(UsageError::UnexpectedRead { offset: 0, .. })
    ));
    ex.respond(start.id, 201, &t3_headers("1024", "8192"), "");
    assert_eq!(
        ex.upload
            .handle_response(ex.now, start.id, response(308, &[], "")),
        Err(UsageError::UnknownRequest(start.id.get()))
    );
    let c = ex.send();
    ex.respond(c.id, 410, &[], "");
    let first = ex.done();
    assert_eq!(ex.done(), first);
    assert_eq!(
        ex.upload
            .handle_failure(ex.now, c.id, TransportFailure::Reset),
        Err(UsageError::Finished)
    );
    assert_eq!(
        ex.upload.handle_read(ex.now, 0, b""),
        Err(UsageError::Finished)
    );
}

#[test]
fn cancel_ends_the_upload_after_the_request_in_flight() {
    let mut ex = Exchange::resumable(10 * KIB, 4 * KIB);
    let c1 = ex.started(KIB, 8 * KIB);
    ex.upload.cancel();
    assert!(
        matches!(ex.upload.poll_action(ex.now), Action::Idle),
        "the request in flight is still answered first"
    );
    ex.ack(&c1);
    assert_eq!(ex.done(), Err(Error::Cancelled));
    let state = ex.upload.resume_state().expect("still resumable");
    assert_eq!(state.persisted, 4 * KIB);
}
