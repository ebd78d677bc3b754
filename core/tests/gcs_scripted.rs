//! Scripted exchanges: each test builds an upload, feeds it responses, and asserts the exact
//! requests (method, URI, headers, body range) and the outcome. Rule ids from docs/protocols.

use std::ops::Range;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Method, StatusCode};
use resumable_core::gcs::{GcsCompletion, GcsConfig, GcsUpload, ResumeState, Start};
use resumable_core::{
    Action, Error, IntegrityError, ProtocolViolation, RequestId, RetryCause, RetryPolicy,
    SessionUri, Transmit, TransportFailure, Upload, UsageError,
};

const KIB256: u64 = 256 * 1024;
const SESSION: &str =
    "https://storage.example/upload/storage/v1/b/bkt/o?uploadType=resumable&upload_id=SECRETID";
const SIGNED: &str = "https://storage.example/bkt/ids.txt?X-Goog-Signature=SECRETSIG";

fn source(len: u64) -> Vec<u8> {
    (0..len).map(|i| (i * 31 % 251) as u8).collect()
}

/// One scripted exchange: the upload, its source, and a clock the test moves.
struct Exchange {
    upload: GcsUpload,
    source: Vec<u8>,
    now: Instant,
    /// Every range handed in for a Read, in order.
    reads: Vec<Range<u64>>,
}

impl Exchange {
    fn new(start: Start, config: GcsConfig, source: Vec<u8>) -> Self {
        Exchange {
            upload: GcsUpload::new(start, config).expect("valid upload"),
            source,
            now: Instant::now(),
            reads: Vec::new(),
        }
    }

    fn xml(len: u64, chunk: u64) -> Self {
        let mut config = GcsConfig::new(Some(len));
        config.chunk_size = chunk;
        Exchange::new(xml_start(), config, source(len))
    }

    /// Polls, answering every Read from the source, until the upload sends or finishes.
    fn poll(&mut self) -> Action<GcsCompletion> {
        loop {
            match self.upload.poll_action(self.now) {
                Action::Read(read) => {
                    let end = (read.range.end as usize).min(self.source.len());
                    let start = (read.range.start as usize).min(end);
                    let bytes = self.source[start..end].to_vec();
                    self.upload
                        .handle_read(self.now, read.range.start, &bytes)
                        .expect("read accepted");
                    self.reads.push(read.range.start..end as u64);
                }
                other => return other,
            }
        }
    }

    fn send(&mut self) -> Transmit {
        match self.poll() {
            Action::Send(s) => s,
            other => panic!("expected a request, got {other:?}"),
        }
    }

    fn respond(&mut self, id: RequestId, status: u16, headers: &[(&str, &str)], body: &str) {
        self.upload
            .handle_response(self.now, id, response(status, headers, body))
            .expect("response accepted");
    }

    /// Sends the start, answers 201 + Location, and returns the first session request.
    fn started(&mut self) -> Transmit {
        let start = self.send();
        self.respond(start.id, 201, &[("location", SESSION)], "");
        self.send()
    }

    fn done(&mut self) -> Result<GcsCompletion, Error> {
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

    /// Hands the first `len` source bytes of `send`'s body to `handle_sent`, in 64 KiB
    /// pieces, as a driver does while the body goes out.
    fn report(&mut self, send: &Transmit, len: u64) {
        let range = send.body.source.clone();
        let end = range.start + len.min(range.end - range.start);
        let mut at = range.start;
        while at < end {
            let piece = (end - at).min(64 * 1024);
            let bytes = &self.source[at as usize..(at + piece) as usize];
            self.upload
                .handle_sent(send.id, at, bytes)
                .expect("sent bytes accepted");
            at += piece;
        }
    }

    /// Checks that the final request carries the whole source's CRC32C (G7), answers it
    /// with the object, and checks the upload ends verified.
    fn complete_verified(&mut self, last: &Transmit) {
        let crc = resumable_core::checksum::crc32c_base64(crc32c::crc32c(&self.source));
        assert_eq!(
            header(last, "x-goog-hash"),
            Some(format!("crc32c={crc}").as_str())
        );
        let object = object_json(&self.source);
        self.respond(last.id, 200, &[], &object);
        assert!(self.done().unwrap().verified.crc32c);
    }

    /// Answers a chunk as a server that stored everything it got: 308 with the new Range.
    fn store_all(&mut self, send: &Transmit) {
        let end = send.body.source.end;
        self.respond(
            send.id,
            308,
            &[("range", &format!("bytes=0-{}", end - 1))],
            "",
        );
    }
}

fn xml_start() -> Start {
    Start::Xml {
        url: SIGNED.parse().unwrap(),
        content_type: HeaderValue::from_static("text/plain"),
    }
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

fn assert_chunk(send: &Transmit, range: Range<u64>, content_range: &str) {
    assert_eq!(send.request.method(), Method::PUT);
    assert_eq!(send.request.uri(), SESSION);
    assert_eq!(header(send, "content-range"), Some(content_range));
    let len = (range.end - range.start).to_string();
    assert_eq!(header(send, "content-length"), Some(len.as_str()));
    assert_eq!(send.body.source, range);
    assert!(send.body.prefix.is_empty() && send.body.suffix.is_empty());
}

fn assert_status_query(send: &Transmit, content_range: &str) {
    assert_eq!(send.request.method(), Method::PUT);
    assert_eq!(send.request.uri(), SESSION);
    assert_eq!(header(send, "content-range"), Some(content_range));
    assert_eq!(header(send, "content-length"), Some("0"));
    assert!(send.body.is_empty());
}

fn object_json(data: &[u8]) -> String {
    let crc = resumable_core::checksum::crc32c_base64(crc32c::crc32c(data));
    format!(
        r#"{{"kind":"storage#object","name":"ids.txt","bucket":"bkt","size":"{}","crc32c":"{crc}"}}"#,
        data.len()
    )
}

// G1: POST with exactly x-goog-resumable, Content-Type and Content-Length: 0; no Authorization.
#[test]
fn g1_xml_start_sends_exactly_the_signed_headers() {
    let mut ex = Exchange::xml(10, KIB256);
    let start = ex.send();
    assert_eq!(start.request.method(), Method::POST);
    assert_eq!(start.request.uri(), SIGNED);
    assert_eq!(
        header_names(&start),
        ["content-length", "content-type", "x-goog-resumable"]
    );
    assert_eq!(header(&start, "x-goog-resumable"), Some("start"));
    assert_eq!(header(&start, "content-type"), Some("text/plain"));
    assert_eq!(header(&start, "content-length"), Some("0"));
    assert!(start.body.is_empty());
    ex.respond(start.id, 201, &[("location", SESSION)], "");
    let chunk = ex.send();
    assert_chunk(&chunk, 0..10, "bytes 0-9/10");
}

// G2: JSON API start with metadata, X-Upload-*, Authorization on the start only; 200 accepted.
#[test]
fn g2_json_start_with_metadata_and_authorization_on_start_only() {
    let mut config = GcsConfig::new(Some(5));
    config.start_headers.insert(
        "authorization",
        HeaderValue::from_static("Bearer SECRETTOKEN"),
    );
    let start = Start::Json {
        url: "https://storage.example/upload/storage/v1/b/bkt/o?uploadType=resumable&name=a.bin"
            .parse()
            .unwrap(),
        content_type: HeaderValue::from_static("application/octet-stream"),
        metadata: Some(Bytes::from_static(br#"{"name":"a.bin"}"#)),
    };
    let mut ex = Exchange::new(start, config, source(5));
    let s = ex.send();
    assert_eq!(s.request.method(), Method::POST);
    assert_eq!(
        header(&s, "x-upload-content-type"),
        Some("application/octet-stream")
    );
    assert_eq!(header(&s, "x-upload-content-length"), Some("5"));
    assert_eq!(
        header(&s, "content-type"),
        Some("application/json; charset=UTF-8")
    );
    assert_eq!(header(&s, "content-length"), Some("16"));
    assert_eq!(header(&s, "authorization"), Some("Bearer SECRETTOKEN"));
    assert_eq!(&s.body.prefix[..], br#"{"name":"a.bin"}"#);
    assert!(s.body.source.is_empty());
    assert!(
        !format!("{s:?}").contains("SECRETTOKEN"),
        "Debug redacts credentials"
    );
    ex.respond(s.id, 200, &[("location", SESSION)], "");
    let chunk = ex.send();
    assert_chunk(&chunk, 0..5, "bytes 0-4/5");
    assert_eq!(
        header(&chunk, "authorization"),
        None,
        "the session URI is the capability"
    );
}

// G2: the size is unknown, so X-Upload-Content-Length is left out.
#[test]
fn g2_json_start_of_unknown_size_omits_the_length() {
    let start = Start::Json {
        url: "https://storage.example/upload/storage/v1/b/bkt/o?uploadType=resumable"
            .parse()
            .unwrap(),
        content_type: HeaderValue::from_static("text/plain"),
        metadata: None,
    };
    let mut ex = Exchange::new(start, GcsConfig::new(None), source(3));
    let s = ex.send();
    assert_eq!(header(&s, "x-upload-content-length"), None);
    assert_eq!(header(&s, "content-length"), Some("0"));
    assert_eq!(header(&s, "content-type"), None);
}

// G3: an existing session starts with a status query, then continues from what it holds.
#[test]
fn g3_existing_session_starts_with_a_status_query() {
    let len = 3 * KIB256;
    let mut config = GcsConfig::new(Some(len));
    config.chunk_size = KIB256;
    let mut ex = Exchange::new(
        Start::Session(SessionUri::parse(SESSION).unwrap()),
        config,
        source(len),
    );
    let q = ex.send();
    assert_status_query(&q, &format!("bytes */{len}"));
    ex.respond(
        q.id,
        308,
        &[("range", &format!("bytes=0-{}", KIB256 - 1))],
        "",
    );
    let chunk = ex.send();
    assert_chunk(
        &chunk,
        KIB256..2 * KIB256,
        &format!("bytes {}-{}/{len}", KIB256, 2 * KIB256 - 1),
    );
    assert_eq!(ex.upload.stats().resumed_from, Some(KIB256));
}

// G3: a saved state resumes the same session; a state for another source is refused.
#[test]
fn g3_saved_state_resumes_and_a_foreign_state_is_refused() {
    let len = 2 * KIB256 + 100;
    let mut config = GcsConfig::new(Some(len));
    config.chunk_size = KIB256;
    config.fingerprint = "file-a:size:mtime".into();
    let mut ex = Exchange::new(xml_start(), config.clone(), source(len));
    let first = ex.started();
    ex.store_all(&first);
    let state: ResumeState = ex.upload.resume_state().expect("a session exists");
    assert_eq!(state.persisted, KIB256);
    assert_eq!(state.total, Some(len));
    assert!(!format!("{state:?}").contains("SECRETID"));

    // A new process: the saved state, the same source.
    let mut again = Exchange::new(Start::Resume(state.clone()), config.clone(), source(len));
    let q = again.send();
    assert_status_query(&q, &format!("bytes */{len}"));
    again.respond(
        q.id,
        308,
        &[("range", &format!("bytes=0-{}", KIB256 - 1))],
        "",
    );
    let next = again.send();
    assert_eq!(
        next.body.source,
        KIB256..2 * KIB256,
        "acknowledged bytes are not re-sent"
    );

    let mut other = config;
    other.fingerprint = "file-b".into();
    assert!(matches!(
        GcsUpload::new(Start::Resume(state), other),
        Err(UsageError::StateMismatch(_))
    ));
}

// G4: non-final chunks are multiples of 256 KiB; the last is any size and carries x-goog-hash.
#[test]
fn g4_chunk_sequence_for_a_known_size() {
    let len = 600_000;
    let mut ex = Exchange::xml(len, KIB256);
    let c1 = ex.started();
    assert_chunk(&c1, 0..KIB256, "bytes 0-262143/600000");
    assert_eq!(header(&c1, "x-goog-hash"), None);
    ex.store_all(&c1);
    let c2 = ex.send();
    assert_chunk(&c2, KIB256..2 * KIB256, "bytes 262144-524287/600000");
    ex.store_all(&c2);
    let c3 = ex.send();
    assert_chunk(&c3, 2 * KIB256..len, "bytes 524288-599999/600000");
    let crc = resumable_core::checksum::crc32c_base64(crc32c::crc32c(&source(len)));
    assert_eq!(
        header(&c3, "x-goog-hash"),
        Some(format!("crc32c={crc}").as_str())
    );
    let body = object_json(&source(len));
    ex.respond(c3.id, 200, &[("content-type", "application/json")], &body);
    let done = ex.done().expect("complete");
    assert_eq!(done.size, len);
    assert!(done.verified.size && done.verified.crc32c);
    assert_eq!(ex.upload.stats().requests, 4);
    assert_eq!(ex.upload.stats().retries, 0);
}

// G4: a chunk size that is not a multiple of 256 KiB is rejected, not rounded.
#[test]
fn g4_unaligned_chunk_size_is_rejected() {
    let mut config = GcsConfig::new(Some(1));
    config.chunk_size = 300_000;
    assert!(matches!(
        GcsUpload::new(xml_start(), config),
        Err(UsageError::ChunkSize { size: 300_000, .. })
    ));
}

// G4: unknown size: `bytes A-B/*` until the source ends, then `bytes A-B/T` with the hash.
// The core reads one byte past each chunk before sending it, so a stream that ends exactly on
// a chunk boundary (or one byte past it) also declares its total on its last chunk, and no
// empty `bytes */T` request follows: the start and one request per chunk.
#[test]
fn g4_unknown_size_declares_the_total_on_the_last_chunk() {
    for len in [KIB256 + 1, KIB256 + 10, 2 * KIB256] {
        let mut config = GcsConfig::new(None);
        config.chunk_size = KIB256;
        let mut ex = Exchange::new(xml_start(), config, source(len));
        let c1 = ex.started();
        assert_chunk(&c1, 0..KIB256, "bytes 0-262143/*");
        ex.store_all(&c1);
        let last = ex.send();
        assert_chunk(
            &last,
            KIB256..len,
            &format!("bytes 262144-{}/{len}", len - 1),
        );
        ex.complete_verified(&last);
        assert_eq!(
            ex.upload.stats().requests,
            3,
            "{len}: one request per chunk"
        );
    }
}

// G7: with a known size, a chunk's bytes are checksummed as they are sent (the driver hands
// them to `handle_sent`); the core reads ahead only the final chunk, whose headers carry the
// whole source's checksum.
#[test]
fn g7_chunks_are_checksummed_while_sent_and_only_the_last_is_read_first() {
    let len = 3 * KIB256 + 10;
    let mut ex = Exchange::xml(len, KIB256);
    let mut c = ex.started();
    for _ in 0..3 {
        assert!(c.report_sent, "a non-final chunk asks for its sent bytes");
        ex.report(&c, KIB256);
        ex.store_all(&c);
        c = ex.send();
    }
    assert_chunk(&c, 3 * KIB256..len, &format!("bytes 786432-786441/{len}"));
    assert!(
        !c.report_sent,
        "the final chunk was read before it was built"
    );
    assert_eq!(
        ex.reads,
        vec![3 * KIB256..len],
        "only the final chunk is read ahead"
    );
    ex.complete_verified(&c);
}

// G7: a driver that does not report sent bytes loses nothing: the core asks to read each
// chunk's bytes before the next request (the source is then read twice).
#[test]
fn g7_unreported_sent_bytes_are_read_before_the_next_chunk() {
    let len = 2 * KIB256 + 5;
    let mut ex = Exchange::xml(len, KIB256);
    let c1 = ex.started();
    assert!(ex.reads.is_empty());
    ex.store_all(&c1);
    let c2 = ex.send();
    assert_eq!(ex.reads, vec![0..KIB256]);
    ex.store_all(&c2);
    let last = ex.send();
    // The unreported second chunk, then the final chunk (a read is at most a chunk long).
    assert_eq!(ex.reads, [0..KIB256, KIB256..2 * KIB256, 2 * KIB256..len]);
    ex.complete_verified(&last);
}

// G7 + G8: bytes reported during an attempt that failed are not checksummed twice when the
// retry sends them again; a driver error (unknown id, a gap, bytes outside the range, bytes
// for a request without a body) is a typed error that leaves the checksum as it was.
#[test]
fn g7_sent_bytes_count_once_across_retries_and_misuse_is_refused() {
    let len = KIB256 + 7;
    let mut ex = Exchange::xml(len, KIB256);
    let c1 = ex.started();
    ex.report(&c1, 100_000);
    assert_eq!(
        ex.upload.handle_sent(RequestId::new(99), 0, b"x"),
        Err(UsageError::UnknownRequest(99))
    );
    assert!(matches!(
        ex.upload.handle_sent(c1.id, 100_001, b"x"),
        Err(UsageError::UnexpectedRead {
            offset: 100_001,
            ..
        })
    ));
    assert!(matches!(
        ex.upload.handle_sent(c1.id, KIB256 - 1, b"xy"),
        Err(UsageError::UnexpectedRead { .. })
    ));
    ex.upload
        .handle_failure(ex.now, c1.id, TransportFailure::Reset)
        .unwrap();
    ex.now = ex.wait();
    let query = ex.send();
    assert_status_query(&query, &format!("bytes */{len}"));
    assert!(matches!(
        ex.upload.handle_sent(query.id, 0, b""),
        Err(UsageError::UnexpectedRead { .. })
    ));
    ex.respond(query.id, 308, &[], "");
    let again = ex.send();
    assert_chunk(&again, 0..KIB256, &format!("bytes 0-262143/{len}"));
    ex.report(&again, KIB256);
    ex.store_all(&again);
    let last = ex.send();
    ex.complete_verified(&last);
}

// G4: an empty source is one `bytes */0` request.
#[test]
fn g4_empty_source_is_a_single_empty_request() {
    let mut ex = Exchange::xml(0, KIB256);
    let only = ex.started();
    assert_status_query(&only, "bytes */0");
    ex.respond(only.id, 200, &[], &object_json(&[]));
    assert_eq!(ex.done().unwrap().size, 0);
}

// G5: 308 without Range means nothing is stored: send again from byte 0.
#[test]
fn g5_308_without_range_means_zero() {
    let mut ex = Exchange::xml(3 * KIB256, KIB256);
    let c1 = ex.started();
    ex.respond(c1.id, 308, &[], "");
    // No progress on a chunk counts as a failed attempt (bounded), then the same range again.
    let until = ex.wait();
    ex.now = until;
    let again = ex.send();
    assert_eq!(again.body.source, 0..KIB256);
}

// G5: the server may persist fewer bytes than sent: continue from what it holds.
#[test]
fn g5_partial_persistence_continues_from_the_persisted_offset() {
    let len = 4 * KIB256;
    let mut ex = Exchange::xml(len, 2 * KIB256);
    let c1 = ex.started();
    assert_eq!(c1.body.source, 0..2 * KIB256);
    ex.respond(c1.id, 308, &[("range", "bytes=0-262143")], "");
    let c2 = ex.send();
    assert_chunk(&c2, KIB256..3 * KIB256, "bytes 262144-786431/1048576");
    assert_eq!(ex.upload.persisted(), KIB256);
}

// G5: Range must start at 0, must not claim more than was sent, must not go backwards.
#[test]
fn g5_lying_ranges_are_protocol_violations() {
    let cases: [(&str, ProtocolViolation); 4] = [
        (
            "bytes=5-100",
            ProtocolViolation::RangeNotFromZero { start: 5 },
        ),
        (
            "bytes=0-300000",
            ProtocolViolation::RangeBeyondSent {
                claimed: 300_001,
                sent: KIB256,
            },
        ),
        ("bytes=0-x", ProtocolViolation::MalformedRange),
        ("0-100", ProtocolViolation::MalformedRange),
    ];
    for (range, violation) in cases {
        let mut ex = Exchange::xml(3 * KIB256, KIB256);
        let c1 = ex.started();
        ex.respond(c1.id, 308, &[("range", range)], "");
        assert_eq!(ex.done(), Err(Error::Protocol(violation)), "{range}");
    }
    let mut ex = Exchange::xml(3 * KIB256, KIB256);
    let c1 = ex.started();
    ex.store_all(&c1);
    let c2 = ex.send();
    ex.respond(c2.id, 308, &[("range", "bytes=0-99")], "");
    assert_eq!(
        ex.done(),
        Err(Error::Protocol(ProtocolViolation::PersistedWentBackwards {
            before: KIB256,
            now: 100
        }))
    );
}

// G5: `bytes=0-0` before any byte was sent (gcp-storage-emulator) means nothing is stored.
#[test]
fn g5_one_byte_claim_before_any_data_reads_as_zero() {
    let mut ex = Exchange::xml(10, KIB256);
    let c1 = ex.started();
    ex.upload
        .handle_failure(ex.now, c1.id, TransportFailure::Connect)
        .unwrap();
    ex.now = ex.wait();
    let q = ex.send();
    assert_status_query(&q, "bytes */10");
    // The chunk was handed out, so up to 10 bytes may be there; claim 1 byte of them.
    ex.respond(q.id, 308, &[("range", "bytes=0-0")], "");
    assert_eq!(ex.send().body.source, 1..10);

    // A fresh session queried before anything was sent.
    let state = ResumeState {
        session: SessionUri::parse(SESSION).unwrap(),
        total: Some(10),
        persisted: 0,
        sent: Some(0),
        crc32c: None,
        fingerprint: String::new(),
        foreign: false,
    };
    let mut ex = Exchange::new(Start::Resume(state), GcsConfig::new(Some(10)), source(10));
    let q = ex.send();
    ex.respond(q.id, 308, &[("range", "bytes=0-0")], "");
    assert_eq!(
        ex.send().body.source,
        0..10,
        "byte 0 was never sent, so it is not stored"
    );
}

// G6 + G8: after a transport failure the next request is a status query, not a resend.
#[test]
fn g8_transport_failure_is_followed_by_a_status_query() {
    let len = 2 * KIB256;
    let mut ex = Exchange::xml(len, KIB256);
    let c1 = ex.started();
    ex.upload
        .handle_failure(ex.now, c1.id, TransportFailure::Reset)
        .unwrap();
    let until = ex.wait();
    assert!(until >= ex.now + Duration::from_secs(1) && until <= ex.now + Duration::from_secs(2));
    ex.now = until;
    let q = ex.send();
    assert_status_query(&q, &format!("bytes */{len}"));
    ex.respond(q.id, 308, &[("range", "bytes=0-131071")], "");
    let next = ex.send();
    assert_eq!(next.body.source, 131_072..131_072 + KIB256);
    assert_eq!(ex.upload.stats().retries, 1);
}

// G6: a status query that finds the upload complete ends it (the final response was lost).
#[test]
fn g6_status_query_finds_the_upload_complete() {
    let len = 100;
    let mut ex = Exchange::xml(len, KIB256);
    let c1 = ex.started();
    ex.upload
        .handle_failure(ex.now, c1.id, TransportFailure::TruncatedResponse)
        .unwrap();
    ex.now = ex.wait();
    let q = ex.send();
    assert_status_query(&q, "bytes */100");
    ex.respond(q.id, 200, &[], &object_json(&source(len)));
    let done = ex.done().unwrap();
    assert_eq!(done.size, len);
    assert!(done.verified.crc32c);
}

// G7: a CRC32C or size that differs from the source is an integrity error, never success.
#[test]
fn g7_checksum_and_size_mismatches_are_integrity_errors() {
    let len = 50;
    let mut ex = Exchange::xml(len, KIB256);
    let c = ex.started();
    let mut wrong = source(len);
    wrong[7] ^= 1;
    ex.respond(c.id, 200, &[], &object_json(&wrong));
    assert!(matches!(
        ex.done(),
        Err(Error::Integrity(IntegrityError::Crc32c { .. }))
    ));

    let mut ex = Exchange::xml(len, KIB256);
    let c = ex.started();
    ex.respond(c.id, 200, &[], r#"{"size":"49"}"#);
    assert_eq!(
        ex.done(),
        Err(Error::Integrity(IntegrityError::Size {
            stored: 49,
            sent: 50
        }))
    );

    let mut ex = Exchange::xml(len, KIB256);
    let c = ex.started();
    ex.respond(c.id, 200, &[("x-goog-hash", "crc32c=AAAAAA==")], "");
    assert!(matches!(
        ex.done(),
        Err(Error::Integrity(IntegrityError::Crc32c { server: 0, .. }))
    ));
}

// G7: MD5 when enabled: sent in x-goog-hash and checked against md5Hash.
#[test]
fn g7_md5_is_sent_and_checked_when_enabled() {
    let len = 10;
    let mut config = GcsConfig::new(Some(len));
    config.checksums.md5 = true;
    let mut ex = Exchange::new(xml_start(), config, source(len));
    let c = ex.started();
    let hash = header(&c, "x-goog-hash").unwrap().to_owned();
    assert!(
        hash.starts_with("crc32c=") && hash.contains(",md5="),
        "{hash}"
    );
    ex.respond(
        c.id,
        200,
        &[],
        r#"{"size":"10","md5Hash":"1B2M2Y8AsgTpgAmY7PhCfg=="}"#,
    );
    assert_eq!(ex.done(), Err(Error::Integrity(IntegrityError::Md5)));
}

// G7: completion before the whole source was sent is a violation (the server skipped data).
#[test]
fn g7_premature_completion_is_a_violation() {
    let mut ex = Exchange::xml(2 * KIB256, KIB256);
    let c1 = ex.started();
    ex.respond(c1.id, 200, &[], "");
    assert_eq!(
        ex.done(),
        Err(Error::Protocol(ProtocolViolation::PrematureCompletion {
            sent: KIB256,
            total: 2 * KIB256
        }))
    );
}

// G8: Retry-After lengthens the wait; a 503 on a chunk is followed by a status query.
#[test]
fn g8_retry_after_is_honoured() {
    let mut ex = Exchange::xml(10, KIB256);
    let c = ex.started();
    ex.respond(c.id, 503, &[("retry-after", "30")], "");
    let until = ex.wait();
    assert!(until >= ex.now + Duration::from_secs(30) && until <= ex.now + Duration::from_secs(31));
    // Polling before the instant keeps waiting.
    ex.now += Duration::from_secs(10);
    assert_eq!(ex.wait(), until);
    ex.now = until;
    assert_status_query(&ex.send(), "bytes */10");
}

// G8: the attempt budget ends a run of failures with RetriesExhausted.
#[test]
fn g8_attempt_budget_ends_in_retries_exhausted() {
    let mut config = GcsConfig::new(Some(10));
    config.retry = RetryPolicy::default();
    config.retry.max_attempts = 2;
    let mut ex = Exchange::new(xml_start(), config, source(10));
    let start = ex.send();
    ex.respond(start.id, 500, &[], "");
    ex.now = ex.wait();
    let start = ex.send();
    assert_eq!(
        start.request.method(),
        Method::POST,
        "a failed start is retried as a start"
    );
    ex.respond(start.id, 429, &[], "");
    ex.now = ex.wait();
    let start = ex.send();
    ex.respond(start.id, 502, &[], "");
    assert_eq!(
        ex.done(),
        Err(Error::RetriesExhausted {
            attempts: 3,
            last: RetryCause::Status(StatusCode::BAD_GATEWAY),
            endpoint: Some(resumable_core::Endpoint {
                host: "storage.example".into(),
                port: 443
            }),
        })
    );
}

// G8: a 4xx that is not retryable ends the upload with the server's message.
#[test]
fn g8_final_client_errors_are_not_retried() {
    let mut ex = Exchange::xml(10, KIB256);
    let start = ex.send();
    ex.respond(
        start.id,
        403,
        &[],
        r#"{"error":{"code":403,"message":"Signature expired"}}"#,
    );
    let err = ex.done().unwrap_err();
    assert_eq!(
        err,
        Error::Server {
            status: StatusCode::FORBIDDEN,
            message: Some("Signature expired".into())
        }
    );
    assert!(!err.is_resumable());
}

// G9: 404 and 410 on the session mean it is gone.
#[test]
fn g9_session_gone() {
    for status in [404, 410] {
        let mut ex = Exchange::xml(10, KIB256);
        let c = ex.started();
        ex.respond(c.id, status, &[], "");
        assert_eq!(
            ex.done(),
            Err(Error::SessionGone {
                status: StatusCode::from_u16(status).unwrap()
            })
        );
    }
}

// G10: cancel sends DELETE to the session; 499 ends the upload as cancelled.
#[test]
fn g10_cancel_deletes_the_session() {
    let mut ex = Exchange::xml(3 * KIB256, KIB256);
    let c1 = ex.started();
    ex.upload.cancel();
    // The chunk in flight is still answered first.
    ex.store_all(&c1);
    let del = ex.send();
    assert_eq!(del.request.method(), Method::DELETE);
    assert_eq!(del.request.uri(), SESSION);
    ex.respond(del.id, 499, &[], "");
    assert_eq!(ex.done(), Err(Error::Cancelled));

    // Before a session exists, cancelling ends at once without a request.
    let mut ex = Exchange::xml(10, KIB256);
    ex.upload.cancel();
    assert_eq!(ex.done(), Err(Error::Cancelled));
}

// G11: 200 with X-Http-Status-Code-Override: 308 is a 308; the client can ask for it.
#[test]
fn g11_status_override_is_read_as_308() {
    let len = 2 * KIB256;
    let mut config = GcsConfig::new(Some(len));
    config.chunk_size = KIB256;
    config.no_308 = true;
    let mut ex = Exchange::new(xml_start(), config, source(len));
    let start = ex.send();
    assert_eq!(
        header(&start, "x-guploader-no-308"),
        None,
        "not on the signed start"
    );
    ex.respond(start.id, 201, &[("location", SESSION)], "");
    let c1 = ex.send();
    assert_eq!(header(&c1, "x-guploader-no-308"), Some("yes"));
    ex.respond(
        c1.id,
        200,
        &[
            ("x-http-status-code-override", "308"),
            ("range", "bytes=0-262143"),
        ],
        "",
    );
    let c2 = ex.send();
    assert_eq!(c2.body.source, KIB256..len);
}

// G1: a start answer without a usable Location is a violation.
#[test]
fn g1_start_without_location_is_a_violation() {
    let mut ex = Exchange::xml(10, KIB256);
    let start = ex.send();
    ex.respond(start.id, 201, &[], "");
    assert_eq!(
        ex.done(),
        Err(Error::Protocol(ProtocolViolation::MissingLocation))
    );
}

// A request is handed out once: polling again while it is in flight is Idle (and stays so),
// and its answer is what moves the upload on.
#[test]
fn a_request_is_handed_out_once() {
    let mut ex = Exchange::xml(10, KIB256);
    let a = ex.send();
    assert!(matches!(ex.poll(), Action::Idle));
    assert!(matches!(ex.poll(), Action::Idle));
    assert_eq!(ex.upload.stats().requests, 1);
    ex.respond(a.id, 201, &[("location", SESSION)], "");
    let b = ex.send();
    assert_ne!(a.id, b.id);
    assert_eq!(ex.upload.stats().requests, 2);
}

#[test]
fn misuse_is_a_typed_usage_error_and_failure_is_sticky() {
    let mut ex = Exchange::xml(10, KIB256);
    let start = ex.send();
    let wrong = RequestId::clone(&start.id);
    // A response for an id that is not in flight.
    ex.respond(start.id, 201, &[("location", SESSION)], "");
    assert_eq!(
        ex.upload
            .handle_response(ex.now, wrong, response(200, &[], "")),
        Err(UsageError::UnknownRequest(wrong.get()))
    );
    // Bytes that were not asked for.
    assert!(matches!(
        ex.upload.handle_read(ex.now, 5, b"x"),
        Err(UsageError::UnexpectedRead { offset: 5, .. })
    ));
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
fn a_source_shorter_than_declared_ends_the_upload() {
    let mut ex = Exchange::xml(100, KIB256);
    ex.source.truncate(60);
    let start = ex.send();
    ex.respond(start.id, 201, &[("location", SESSION)], "");
    assert_eq!(
        ex.done(),
        Err(Error::Usage(UsageError::SourceTooShort {
            ended_at: 60,
            declared: 100
        }))
    );
}

#[test]
fn secrets_never_appear_in_debug_or_errors() {
    let mut config = GcsConfig::new(Some(10));
    let mut h = HeaderMap::new();
    h.insert(
        "authorization",
        HeaderValue::from_static("Bearer SECRETTOKEN"),
    );
    config.start_headers = h;
    let mut ex = Exchange::new(xml_start(), config.clone(), source(10));
    let start = ex.send();
    let shown = format!("{start:?} {config:?} {:?}", xml_start());
    for secret in ["SECRETTOKEN", "SECRETSIG", "SECRETID"] {
        assert!(!shown.contains(secret), "{secret} in {shown}");
    }
    ex.respond(start.id, 201, &[("location", SESSION)], "");
    let c = ex.send();
    let shown = format!("{c:?} {:?} {:?}", ex.upload, ex.upload.resume_state());
    assert!(!shown.contains("SECRETID"), "{shown}");
    ex.respond(c.id, 400, &[], "bad");
    let err = ex.done().unwrap_err();
    assert!(!format!("{err} {err:?}").contains("SECRET"));
}

// ---------------------------------------------------------------------------------------------
// Trust: no success without proof, every resume checked (G3, G5, G7, G8)
// ---------------------------------------------------------------------------------------------

fn bare_session(len: u64, checksums: resumable_core::checksum::Checksums) -> Exchange {
    let mut config = GcsConfig::new(Some(len));
    config.chunk_size = KIB256;
    config.checksums = checksums;
    Exchange::new(
        Start::Session(SessionUri::parse(SESSION).unwrap()),
        config,
        source(len),
    )
}

fn crc_header(data: &[u8]) -> String {
    format!(
        "crc32c={}",
        resumable_core::checksum::crc32c_base64(crc32c::crc32c(data))
    )
}

// G3, G7: a bare session that already completed holding another, shorter object answers the
// status query 200 with an empty body (the XML API's way) and x-goog-stored-content-length:
// the size is compared, and the upload fails rather than claim the file was uploaded.
#[test]
fn g7_bare_session_completed_with_a_shorter_object_is_an_integrity_error() {
    let len = 1000;
    let mut ex = bare_session(len, Default::default());
    let q = ex.send();
    assert_status_query(&q, "bytes */1000");
    ex.respond(q.id, 200, &[("x-goog-stored-content-length", "600")], "");
    assert_eq!(
        ex.done(),
        Err(Error::Integrity(IntegrityError::Size {
            stored: 600,
            sent: 1000
        }))
    );
    assert_eq!(ex.upload.stats().bytes_sent, 0);
}

// G3, G7: the same completion with nothing to compare (no size, no checksum) proves nothing
// about a history this upload did not see: it is not a success.
#[test]
fn g7_bare_session_completion_without_proof_is_unproven() {
    let len = 1000;
    let mut ex = bare_session(len, Default::default());
    let q = ex.send();
    ex.respond(q.id, 200, &[], "");
    assert_eq!(
        ex.done(),
        Err(Error::Integrity(IntegrityError::Unproven { size: len }))
    );
    // A size that matches is still no proof of the bytes.
    let mut ex = bare_session(len, Default::default());
    let q = ex.send();
    ex.respond(q.id, 200, &[("x-goog-stored-content-length", "1000")], "");
    assert_eq!(
        ex.done(),
        Err(Error::Integrity(IntegrityError::Unproven { size: len }))
    );
}

// G3, G7: a bare session that completed with exactly the file proves it with its CRC32C:
// success, checked against the whole file (which the core reads to compare).
#[test]
fn g7_bare_session_completion_proven_by_its_checksum_succeeds() {
    let len = 1000;
    let mut ex = bare_session(len, Default::default());
    let q = ex.send();
    let hash = crc_header(&ex.source);
    ex.respond(
        q.id,
        200,
        &[
            ("x-goog-hash", hash.as_str()),
            ("x-goog-stored-content-length", "1000"),
        ],
        "",
    );
    let done = ex.done().expect("proven");
    assert!(done.verified.crc32c && done.verified.size && done.verified.whole_source);
    assert_eq!(ex.reads, vec![(0..1000)]);

    // Another object of the same size is caught by the checksum.
    let mut ex = bare_session(len, Default::default());
    let q = ex.send();
    let other = crc_header(&[9u8; 1000]);
    ex.respond(q.id, 200, &[("x-goog-hash", other.as_str())], "");
    assert!(matches!(
        ex.done(),
        Err(Error::Integrity(IntegrityError::Crc32c { .. }))
    ));
}

// G3, G7: a bare session holding a prefix this upload did not send: the rest is uploaded, and
// the completion must still prove the whole object; without checksums it cannot.
#[test]
fn g7_bare_session_with_a_foreign_prefix_needs_a_checksum_at_the_end() {
    let len = KIB256 + 10;
    let mut ex = bare_session(len, resumable_core::checksum::Checksums::NONE);
    let q = ex.send();
    ex.respond(
        q.id,
        308,
        &[("range", &format!("bytes=0-{}", KIB256 - 1))],
        "",
    );
    let last = ex.send();
    assert_eq!(last.body.source, KIB256..len);
    ex.respond(
        last.id,
        200,
        &[("x-goog-stored-content-length", "262154")],
        "",
    );
    assert_eq!(
        ex.done(),
        Err(Error::Integrity(IntegrityError::Unproven { size: len }))
    );
    let state = ex.upload.resume_state().expect("kept after an error");
    assert!(
        state.foreign,
        "the state carries that the prefix is unproven"
    );
}

/// A state saved by an interrupted run that had uploaded `persisted` bytes of `old` and
/// hashed `hashed` of them.
fn saved_after(old: &[u8], persisted: u64, hashed: u64) -> ResumeState {
    ResumeState {
        session: SessionUri::parse(SESSION).unwrap(),
        total: Some(old.len() as u64),
        persisted,
        sent: Some(persisted),
        crc32c: Some(resumable_core::gcs::HashedPrefix {
            len: hashed,
            crc32c: crc32c::crc32c(&old[..hashed as usize]),
        }),
        fingerprint: String::new(),
        foreign: false,
    }
}

// G3: a resume reads the already uploaded part of the source again and compares it with the
// saved checksum before sending anything; an input that changed is refused, and the saved
// state (the original input's checksum) is kept for a run with the original input.
#[test]
fn g3_resume_refuses_an_input_that_differs_from_the_interrupted_one() {
    let len = 3 * KIB256;
    let old = source(len);
    let state = saved_after(&old, KIB256, KIB256);
    let mut changed = old.clone();
    changed[10] ^= 0xff;
    let mut config = GcsConfig::new(Some(len));
    config.chunk_size = KIB256;
    let mut ex = Exchange::new(Start::Resume(state.clone()), config.clone(), changed);
    assert_eq!(
        ex.done(),
        Err(Error::Usage(UsageError::SourceChanged { checked: KIB256 }))
    );
    assert_eq!(ex.reads, vec![(0..KIB256)], "read, compared, nothing sent");
    assert_eq!(ex.upload.resume_state(), Some(state.clone()));

    // The original input passes the check, and the upload goes on from the server's offset.
    let mut ex = Exchange::new(Start::Resume(state.clone()), config.clone(), old.clone());
    let q = ex.send();
    assert_status_query(&q, &format!("bytes */{len}"));
    assert_eq!(ex.reads, vec![(0..KIB256)]);
    ex.respond(
        q.id,
        308,
        &[("range", &format!("bytes=0-{}", KIB256 - 1))],
        "",
    );
    let next = ex.send();
    assert_eq!(next.body.source, KIB256..2 * KIB256);

    // A stream that is shorter than what was already read is refused the same way.
    let mut stream = GcsConfig::new(None);
    stream.chunk_size = KIB256;
    let mut short = state.clone();
    short.total = None;
    let mut ex = Exchange::new(Start::Resume(short), stream, old[..100].to_vec());
    assert_eq!(
        ex.done(),
        Err(Error::Usage(UsageError::SourceChanged { checked: 100 }))
    );
}

// G3, G7: with the check turned off, the saved checksum is continued unread (the caller takes
// the risk); a completion then says its checksums did not cover the source as it is now.
#[test]
fn g3_resume_without_the_recheck_continues_the_saved_checksum() {
    let len = KIB256 + 10;
    let data = source(len);
    let state = saved_after(&data, KIB256, KIB256);
    let mut config = GcsConfig::new(Some(len));
    config.chunk_size = KIB256;
    config.recheck_prefix = false;
    let mut ex = Exchange::new(Start::Resume(state), config, data.clone());
    let q = ex.send();
    assert!(ex.reads.is_empty(), "the uploaded part is not read again");
    ex.respond(
        q.id,
        308,
        &[("range", &format!("bytes=0-{}", KIB256 - 1))],
        "",
    );
    let last = ex.send();
    assert_eq!(ex.reads, vec![(KIB256..len)]);
    let hash = crc_header(&data);
    assert_eq!(header(&last, "x-goog-hash"), Some(hash.as_str()));
    ex.respond(last.id, 200, &[("x-goog-hash", hash.as_str())], "");
    let done = ex.done().unwrap();
    assert!(done.verified.crc32c);
    assert!(!done.verified.whole_source);
}

// G3, G5: a state saved before a power loss can be behind the server, which then holds more
// than the state's `sent`: the resume goes on from what the server holds (the final checksum
// still guards it), nothing acknowledged is sent again, and the state is not lost.
#[test]
fn g5_a_stale_state_resumes_from_what_the_server_holds() {
    let len = 4 * KIB256;
    let data = source(len);
    let state = saved_after(&data, KIB256, KIB256);
    let mut config = GcsConfig::new(Some(len));
    config.chunk_size = KIB256;
    let mut ex = Exchange::new(Start::Resume(state), config, data.clone());
    let q = ex.send();
    ex.respond(
        q.id,
        308,
        &[("range", &format!("bytes=0-{}", 3 * KIB256 - 1))],
        "",
    );
    let last = ex.send();
    assert_eq!(
        last.body.source,
        3 * KIB256..len,
        "no acknowledged byte again"
    );
    // The bytes the state did not cover were read to checksum the whole object.
    assert_eq!(ex.reads.last().map(|r| r.end), Some(len));
    let hash = crc_header(&data);
    assert_eq!(header(&last, "x-goog-hash"), Some(hash.as_str()));
    ex.respond(last.id, 200, &[("x-goog-hash", hash.as_str())], "");
    assert!(ex.done().unwrap().verified.crc32c);
    // A claim beyond the whole source is still a violation.
    let state = saved_after(&data, KIB256, KIB256);
    let mut ex = Exchange::new(Start::Resume(state), GcsConfig::new(Some(len)), data);
    let q = ex.send();
    ex.respond(q.id, 308, &[("range", &format!("bytes=0-{len}"))], "");
    assert_eq!(
        ex.done(),
        Err(Error::Protocol(ProtocolViolation::RangeBeyondSent {
            claimed: len + 1,
            sent: len
        }))
    );
}

// G5 (RFC 9110 §14.1): range units are case-insensitive.
#[test]
fn g5_range_unit_is_case_insensitive() {
    let mut ex = Exchange::xml(2 * KIB256, KIB256);
    let c1 = ex.started();
    ex.report(&c1, KIB256);
    ex.respond(
        c1.id,
        308,
        &[("range", &format!("Bytes=0-{}", KIB256 - 1))],
        "",
    );
    assert_eq!(ex.upload.persisted(), KIB256);
}

// G7: an object resource whose size, crc32c or md5Hash is there but unreadable breaks the
// protocol; the check is not skipped.
#[test]
fn g7_unreadable_object_fields_are_violations() {
    for body in [
        r#"{"size":"ten"}"#,
        r#"{"size":-1}"#,
        r#"{"size":true}"#,
        r#"{"size":"10","crc32c":"not base64!"}"#,
        r#"{"size":"10","crc32c":7}"#,
        r#"{"size":"10","md5Hash":"AAAA"}"#,
    ] {
        let mut ex = Exchange::xml(10, KIB256);
        let last = ex.started();
        ex.respond(last.id, 200, &[], body);
        assert!(
            matches!(
                ex.done(),
                Err(Error::Protocol(ProtocolViolation::MalformedResponse(_)))
            ),
            "{body}"
        );
    }
    let mut ex = Exchange::xml(10, KIB256);
    let last = ex.started();
    ex.respond(last.id, 200, &[("x-goog-stored-content-length", "1O")], "");
    assert!(matches!(
        ex.done(),
        Err(Error::Protocol(ProtocolViolation::MalformedResponse(_)))
    ));
}

// G8: a Retry-After past the retry deadline ends the upload saying so (it can be resumed);
// with a longer deadline the same wait is honoured.
#[test]
fn g8_a_retry_after_past_the_deadline_is_named() {
    let run = |deadline: u64| {
        let mut config = GcsConfig::new(Some(10));
        config.retry.retry_deadline = Duration::from_secs(deadline);
        config.retry.jitter = Duration::ZERO;
        let mut ex = Exchange::new(xml_start(), config, source(10));
        let start = ex.send();
        ex.respond(start.id, 429, &[("retry-after", "900")], "");
        let t0 = ex.now;
        (ex.poll(), t0)
    };
    match run(600).0 {
        Action::Done(Err(e @ Error::WaitBeyondDeadline { .. })) => {
            assert!(e.is_resumable());
            assert_eq!(
                e.to_string(),
                "the server asked to wait 15 min (HTTP 429 Too Many Requests from storage.example), longer than the retry deadline of 10 min allows"
            );
        }
        other => panic!("expected WaitBeyondDeadline, got {other:?}"),
    }
    match run(1200) {
        (Action::Wait(until), t0) => assert_eq!(until - t0, Duration::from_secs(900)),
        (other, _) => panic!("expected the wait, got {other:?}"),
    }
}

// G8: a host name that does not resolve is retried once, soon, then named in the error; every
// retry is described (what failed, the wait, the attempt count).
#[test]
fn g8_an_unresolvable_host_fails_after_one_retry_and_names_the_host() {
    let mut config = GcsConfig::new(Some(10));
    config.retry.jitter = Duration::ZERO;
    let mut ex = Exchange::new(xml_start(), config, source(10));
    let start = ex.send();
    ex.upload
        .handle_failure(ex.now, start.id, TransportFailure::Resolve)
        .unwrap();
    let until = ex.wait();
    assert_eq!(until - ex.now, Duration::from_secs(1));
    let retry = ex.upload.last_retry().expect("described").clone();
    assert_eq!((retry.attempt, retry.max_attempts), (2, 11));
    assert_eq!(retry.until, until);
    assert_eq!(retry.endpoint.unwrap().host, "storage.example");
    ex.now = until;
    let start = ex.send();
    ex.upload
        .handle_failure(ex.now, start.id, TransportFailure::Resolve)
        .unwrap();
    let error = ex.done().unwrap_err();
    assert_eq!(error.to_string(), "could not resolve host storage.example");
    assert!(matches!(
        error,
        Error::Transport {
            failure: TransportFailure::Resolve,
            ..
        }
    ));
}

// G4, G7, issue 16: one request for the whole source (GcsConfig::ONE_REQUEST) larger than
// HASH_HEADER_MAX is sent at once, without reading the source first (no x-goog-hash: the
// checksum is only known once the last byte went out); its bytes are checksummed as they are
// sent, and the completion's CRC32C is compared with them: the source is read once.
#[test]
fn g7_one_large_request_is_hashed_on_the_way_out_and_verified_by_the_completion() {
    use resumable_core::gcs::HASH_HEADER_MAX;
    let len = HASH_HEADER_MAX + 4 * KIB256 + 3;
    let mut ex = Exchange::xml(len, GcsConfig::ONE_REQUEST);
    let c = ex.started();
    assert_eq!(c.body.source, 0..len, "the whole source in one request");
    assert!(ex.reads.is_empty(), "nothing read before sending");
    assert!(c.report_sent);
    assert_eq!(header(&c, "x-goog-hash"), None);
    ex.report(&c, len);
    let object = object_json(&ex.source);
    ex.respond(c.id, 200, &[], &object);
    let done = ex.done().unwrap();
    assert!(done.verified.crc32c);
    assert!(
        ex.reads.is_empty(),
        "the source was read once, as it was sent"
    );

    // The server stored something else: an integrity error, never success.
    let mut ex = Exchange::xml(len, GcsConfig::ONE_REQUEST);
    let c = ex.started();
    ex.report(&c, len);
    let mut other = ex.source.clone();
    other[12_345] ^= 0x40;
    ex.respond(c.id, 200, &[], &object_json(&other));
    assert!(matches!(
        ex.done(),
        Err(Error::Integrity(IntegrityError::Crc32c { .. }))
    ));

    // A request cut short: a status query, then one request for the rest of what the server
    // does not hold (still larger than HASH_HEADER_MAX, so again not read first); the bytes
    // sent again are not hashed twice.
    let mut ex = Exchange::xml(len, GcsConfig::ONE_REQUEST);
    let c = ex.started();
    ex.report(&c, 3 * KIB256 + 17);
    ex.upload
        .handle_failure(ex.now, c.id, TransportFailure::Reset)
        .unwrap();
    let wait = ex.wait();
    ex.now = wait;
    let q = ex.send();
    assert_eq!(
        header(&q, "content-range"),
        Some(format!("bytes */{len}").as_str())
    );
    ex.respond(
        q.id,
        308,
        &[("range", &format!("bytes=0-{}", 2 * KIB256 - 1))],
        "",
    );
    let rest = ex.send();
    assert_eq!(rest.body.source, 2 * KIB256..len);
    ex.report(&rest, len);
    ex.respond(rest.id, 200, &[], &object);
    assert!(ex.done().unwrap().verified.crc32c);
    assert!(ex.reads.is_empty());
}

// G7: a final request of at most HASH_HEADER_MAX is read first and carries x-goog-hash, so
// the server checks the object before it creates it.
#[test]
fn g7_a_small_final_request_still_carries_the_checksum_header() {
    let len = 3 * KIB256 + 5;
    let mut ex = Exchange::xml(len, GcsConfig::ONE_REQUEST);
    let c = ex.started();
    assert_eq!(c.body.source, 0..len);
    assert_eq!(
        ex.reads.last().map(|r| r.end),
        Some(len),
        "read before sending"
    );
    ex.complete_verified(&c);
}

// G4, G5, issue 16: a 5 TiB object planned end to end without overflow, no bytes moved (no
// checksums, so nothing is read): 1 GiB chunks, each declaring the total, the server
// persisting a little less than each chunk carried, then the completion with the size.
#[test]
fn g4_a_5_tib_object_is_planned_end_to_end_without_overflow() {
    const GIB: u64 = 1 << 30;
    let total = 5 * 1024 * GIB;
    let mut config = GcsConfig::new(Some(total));
    config.chunk_size = GIB;
    config.checksums = resumable_core::checksum::Checksums {
        crc32c: false,
        md5: false,
    };
    let mut ex = Exchange::new(xml_start(), config, Vec::new());
    let mut send = ex.started();
    let mut requests = 1u64;
    loop {
        let range = send.body.source.clone();
        assert!(range.end <= total && range.end - range.start <= GIB);
        assert_eq!(
            header(&send, "content-range"),
            Some(format!("bytes {}-{}/{total}", range.start, range.end - 1).as_str())
        );
        if range.end == total {
            let size = format!(r#"{{"size":"{total}"}}"#);
            ex.respond(send.id, 200, &[], &size);
            break;
        }
        // Every chunk persisted but its last 256 KiB, which the next chunk carries again.
        let held = range.end - KIB256;
        ex.respond(
            send.id,
            308,
            &[("range", &format!("bytes=0-{}", held - 1))],
            "",
        );
        assert_eq!(ex.upload.persisted(), held);
        send = ex.send();
        assert_eq!(send.body.source.start, held);
        requests += 1;
        assert!(requests < 10_000, "the plan does not end");
    }
    let done = ex.done().unwrap();
    assert_eq!(done.size, total);
    assert!(ex.reads.is_empty());
    assert_eq!(requests, total.div_ceil(GIB - KIB256));
}
