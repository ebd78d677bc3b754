//! Scripted tests of the tus 1.0 upload, one or more per rule (U1–U15 in
//! `docs/protocols/tus.md`): each drives the core request by request and checks what it sends
//! and how it reacts.

use std::time::{Duration, Instant, SystemTime};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use bytes::Bytes;
use http::{Method, Response, StatusCode};
use resumable_core::tus::{ChecksumAlgorithm, TusConfig, TusResumeState, TusStart, TusUpload};
use resumable_core::{
    Action, Error, ProtocolViolation, RetryPolicy, SessionUri, Transmit, TransportFailure, Upload,
    UsageError,
};
use sha1::{Digest as _, Sha1};

const ENDPOINT: &str = "https://tus.example/files/";
const UPLOAD: &str = "https://tus.example/files/abc";

fn config(total: Option<u64>, chunk: u64) -> TusConfig {
    let mut c = TusConfig::new(total);
    c.chunk_size = chunk;
    c.retry = RetryPolicy::default();
    c.retry.jitter = Duration::ZERO;
    c
}

fn create(c: TusConfig) -> TusUpload {
    TusUpload::new(
        TusStart::Create {
            endpoint: ENDPOINT.parse().unwrap(),
        },
        c,
    )
    .unwrap()
}

fn existing(c: TusConfig) -> TusUpload {
    TusUpload::new(TusStart::Existing(SessionUri::parse(UPLOAD).unwrap()), c).unwrap()
}

/// The next request; reads are served from `source` first. Waits are jumped over.
fn next(u: &mut TusUpload, now: &mut Instant, source: &[u8]) -> Transmit {
    for _ in 0..10_000 {
        match u.poll_action(*now) {
            Action::Send(t) => return t,
            Action::Read(r) => {
                let (a, b) = (r.range.start as usize, r.range.end as usize);
                let bytes = &source[a.min(source.len())..b.min(source.len())];
                u.handle_read(*now, r.range.start, bytes).unwrap();
            }
            Action::Wait(until) => *now = until,
            other => panic!("expected a request, got {other:?}"),
        }
    }
    panic!("no request after many reads")
}

fn done(u: &mut TusUpload, now: Instant) -> Result<resumable_core::tus::TusCompletion, Error> {
    match u.poll_action(now) {
        Action::Done(outcome) => outcome,
        other => panic!("expected the end, got {other:?}"),
    }
}

fn response(status: u16, headers: &[(&str, &str)]) -> Response<Bytes> {
    let mut b = Response::builder()
        .status(status)
        .header("tus-resumable", "1.0.0");
    for (k, v) in headers {
        b = b.header(*k, *v);
    }
    b.body(Bytes::new()).unwrap()
}

fn answer(u: &mut TusUpload, now: Instant, t: &Transmit, status: u16, headers: &[(&str, &str)]) {
    u.handle_response(now, t.id, response(status, headers))
        .unwrap();
}

fn header<'a>(t: &'a Transmit, name: &str) -> Option<&'a str> {
    t.request.headers().get(name).map(|v| v.to_str().unwrap())
}

fn created(u: &mut TusUpload, now: &mut Instant, source: &[u8]) {
    let post = next(u, now, source);
    assert_eq!(post.request.method(), Method::POST);
    answer(u, *now, &post, 201, &[("location", "/files/abc")]);
}

/// Answers every PATCH by storing all of it, until the end.
fn patch_to_end(
    u: &mut TusUpload,
    now: &mut Instant,
    source: &[u8],
    held: &mut Vec<u8>,
) -> Result<resumable_core::tus::TusCompletion, Error> {
    loop {
        match u.poll_action(*now) {
            Action::Done(outcome) => return outcome,
            Action::Read(r) => {
                let (a, b) = (r.range.start as usize, r.range.end as usize);
                let bytes = &source[a.min(source.len())..b.min(source.len())];
                u.handle_read(*now, r.range.start, bytes).unwrap();
            }
            Action::Wait(until) => *now = until,
            Action::Send(t) => {
                assert_eq!(t.request.method(), Method::PATCH);
                let offset: usize = header(&t, "upload-offset").unwrap().parse().unwrap();
                assert_eq!(offset, held.len(), "PATCH at the server's offset");
                let r = &t.body.source;
                held.extend_from_slice(&source[r.start as usize..r.end as usize]);
                let off = held.len().to_string();
                answer(u, *now, &t, 204, &[("upload-offset", &off)]);
            }
            Action::Idle => panic!("idle with one request at a time"),
        }
    }
}

// ---- U1 ----

#[test]
fn u1_every_request_but_options_carries_tus_resumable() {
    let source = vec![3u8; 10];
    let mut c = config(Some(10), 4);
    c.discover = true;
    let mut u = create(c);
    let mut now = Instant::now();
    let options = next(&mut u, &mut now, &source);
    assert_eq!(options.request.method(), Method::OPTIONS);
    assert_eq!(header(&options, "tus-resumable"), None);
    answer(
        &mut u,
        now,
        &options,
        204,
        &[
            ("tus-version", "1.0.0"),
            ("tus-extension", "creation,termination"),
        ],
    );
    let post = next(&mut u, &mut now, &source);
    assert_eq!(header(&post, "tus-resumable"), Some("1.0.0"));
    answer(&mut u, now, &post, 201, &[("location", UPLOAD)]);
    let patch = next(&mut u, &mut now, &source);
    assert_eq!(header(&patch, "tus-resumable"), Some("1.0.0"));
    u.cancel();
    answer(&mut u, now, &patch, 204, &[("upload-offset", "4")]);
    let delete = next(&mut u, &mut now, &source);
    assert_eq!(delete.request.method(), Method::DELETE);
    assert_eq!(header(&delete, "tus-resumable"), Some("1.0.0"));
}

#[test]
fn u1_412_is_final_and_names_the_servers_version() {
    let mut u = create(config(Some(10), 4));
    let mut now = Instant::now();
    let post = next(&mut u, &mut now, &[0; 10]);
    answer(&mut u, now, &post, 412, &[("tus-version", "0.2.2, 0.2.1")]);
    match done(&mut u, now) {
        Err(Error::Server { status, message }) => {
            assert_eq!(status, 412);
            assert_eq!(
                message.as_deref(),
                Some("the server speaks tus version 0.2.2, 0.2.1")
            );
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(u.stats().retries, 0);
}

// ---- U2 ----

#[test]
fn u2_discovery_accepts_200_and_204_and_uses_only_what_is_offered() {
    for status in [200, 204] {
        let source = vec![1u8; 6];
        let mut c = config(Some(6), 100);
        c.discover = true;
        c.creation_with_upload = true;
        let mut u = create(c);
        let mut now = Instant::now();
        let options = next(&mut u, &mut now, &source);
        // creation-with-upload is not offered: the POST carries no data.
        answer(
            &mut u,
            now,
            &options,
            status,
            &[("tus-version", "1.0.0"), ("tus-extension", "creation")],
        );
        let info = u.server_info().unwrap().clone();
        assert!(info.offers("creation") && !info.offers("termination"));
        let post = next(&mut u, &mut now, &source);
        assert!(post.body.is_empty(), "{status}");
        answer(&mut u, now, &post, 201, &[("location", UPLOAD)]);
        // termination is not offered: cancel sends no DELETE.
        let patch = next(&mut u, &mut now, &source);
        u.cancel();
        answer(&mut u, now, &patch, 204, &[("upload-offset", "3")]);
        assert_eq!(done(&mut u, now), Err(Error::Cancelled));
    }
}

/// A size, a checksum, the OPTIONS answer's headers and what the server lacks.
type Refusal = (
    Option<u64>,
    Option<ChecksumAlgorithm>,
    &'static [(&'static str, &'static str)],
    &'static str,
);

#[test]
fn u2_what_the_server_does_not_offer_ends_the_upload_before_any_data() {
    let cases: [Refusal; 5] = [
        (
            Some(5),
            None,
            &[("tus-version", "1.0.0")],
            "creating uploads",
        ),
        (
            None,
            None,
            &[("tus-extension", "creation")],
            "uploads of unknown size",
        ),
        (
            Some(5),
            Some(ChecksumAlgorithm::Sha1),
            &[
                ("tus-extension", "creation,checksum"),
                ("tus-checksum-algorithm", "md5"),
            ],
            "the checksum asked for",
        ),
        (
            Some(5),
            None,
            &[("tus-extension", "creation"), ("tus-max-size", "4")],
            "uploads of this size",
        ),
        (
            Some(5),
            None,
            &[("tus-version", "0.2.2"), ("tus-extension", "creation")],
            "tus version 1.0.0",
        ),
    ];
    for (total, checksum, headers, what) in cases {
        let mut c = config(total, 4);
        c.discover = true;
        c.checksum = checksum;
        let mut u = create(c);
        let mut now = Instant::now();
        let options = next(&mut u, &mut now, &[0; 5]);
        answer(&mut u, now, &options, 204, headers);
        assert_eq!(done(&mut u, now), Err(Error::Unsupported(what)));
        assert_eq!(u.stats().requests, 1);
    }
}

// ---- U3 ----

#[test]
fn u3_resume_asks_with_head_and_the_servers_offset_decides() {
    let source: Vec<u8> = (0..20).collect();
    let state = TusResumeState {
        upload_url: SessionUri::parse(UPLOAD).unwrap(),
        total: Some(20),
        length_declared: true,
        persisted: 12,
        sent: Some(16),
        metadata: None,
        expires: None,
        fingerprint: "f".into(),
    };
    let mut c = config(Some(20), 8);
    c.fingerprint = "f".into();
    let mut u = TusUpload::new(
        TusStart::Resume {
            state,
            now: SystemTime::now(),
        },
        c,
    )
    .unwrap();
    let mut now = Instant::now();
    let head = next(&mut u, &mut now, &source);
    assert_eq!(head.request.method(), Method::HEAD);
    assert_eq!(header(&head, "tus-resumable"), Some("1.0.0"));
    // The server holds less than the saved state says: its offset wins.
    answer(
        &mut u,
        now,
        &head,
        200,
        &[
            ("upload-offset", "5"),
            ("upload-length", "20"),
            ("cache-control", "no-store"),
        ],
    );
    assert_eq!(u.stats().resumed_from, Some(5));
    let mut held = source[..5].to_vec();
    let done = patch_to_end(&mut u, &mut now, &source, &mut held).unwrap();
    assert_eq!(held, source);
    assert_eq!(done.size, 20);
}

#[test]
fn u3_head_without_a_valid_offset_is_a_protocol_violation() {
    for headers in [
        &[][..],
        &[("upload-offset", "-1")],
        &[("upload-offset", "1"), ("upload-offset", "1")],
        &[("upload-offset", "x")],
    ] {
        let mut u = existing(config(Some(10), 4));
        let mut now = Instant::now();
        let head = next(&mut u, &mut now, &[0; 10]);
        let mut r = response(204, &[]);
        for (k, v) in headers {
            r.headers_mut().append(*k, v.parse().unwrap());
        }
        u.handle_response(now, head.id, r).unwrap();
        assert!(
            matches!(
                done(&mut u, now),
                Err(Error::Protocol(ProtocolViolation::MalformedResponse(_)))
            ),
            "{headers:?}"
        );
    }
}

#[test]
fn u3_an_offset_beyond_what_was_sent_or_the_length_is_the_servers_fault() {
    // Beyond the length (an upload URL of unknown history).
    let mut u = existing(config(Some(10), 4));
    let mut now = Instant::now();
    let head = next(&mut u, &mut now, &[0; 10]);
    answer(&mut u, now, &head, 200, &[("upload-offset", "11")]);
    assert_eq!(
        done(&mut u, now),
        Err(ProtocolViolation::RangeBeyondSent {
            claimed: 11,
            sent: 10
        }
        .into())
    );
    // Beyond what was sent, after a lost PATCH answer.
    let source = [7u8; 10];
    let mut u = create(config(Some(10), 4));
    let mut now = Instant::now();
    created(&mut u, &mut now, &source);
    let patch = next(&mut u, &mut now, &source);
    u.handle_failure(now, patch.id, TransportFailure::Reset)
        .unwrap();
    let head = next(&mut u, &mut now, &source);
    assert_eq!(head.request.method(), Method::HEAD);
    answer(
        &mut u,
        now,
        &head,
        200,
        &[("upload-offset", "5"), ("upload-length", "10")],
    );
    assert_eq!(
        done(&mut u, now),
        Err(ProtocolViolation::RangeBeyondSent {
            claimed: 5,
            sent: 4
        }
        .into())
    );
}

#[test]
fn u3_a_head_with_another_length_is_a_typed_error() {
    let mut u = existing(config(Some(10), 4));
    let mut now = Instant::now();
    let head = next(&mut u, &mut now, &[0; 10]);
    answer(
        &mut u,
        now,
        &head,
        200,
        &[("upload-offset", "0"), ("upload-length", "12")],
    );
    assert_eq!(
        done(&mut u, now),
        Err(ProtocolViolation::LengthDiffers {
            server: 12,
            source_len: 10
        }
        .into())
    );
}

#[test]
fn u3_an_upload_already_complete_finishes_without_sending() {
    let mut u = existing(config(Some(10), 4));
    let mut now = Instant::now();
    let head = next(&mut u, &mut now, &[0; 10]);
    // tusd's Content-Length on HEAD is the upload's length, not a body.
    answer(
        &mut u,
        now,
        &head,
        200,
        &[
            ("upload-offset", "10"),
            ("upload-length", "10"),
            ("content-length", "10"),
        ],
    );
    let done = done(&mut u, now).unwrap();
    assert_eq!((done.size, done.status.as_u16()), (10, 200));
    assert_eq!(u.stats().requests, 1);
}

#[test]
fn u3_an_unknown_upload_on_head_is_gone() {
    for status in [403, 404, 410] {
        let mut u = existing(config(Some(10), 4));
        let mut now = Instant::now();
        let head = next(&mut u, &mut now, &[0; 10]);
        answer(&mut u, now, &head, status, &[]);
        assert!(
            matches!(done(&mut u, now), Err(Error::SessionGone { .. })),
            "{status}"
        );
    }
}

// ---- U4 ----

#[test]
fn u4_patch_carries_offset_content_type_and_length_and_follows_partial_stores() {
    let source: Vec<u8> = (0..10).collect();
    let mut u = create(config(Some(10), 6));
    let mut now = Instant::now();
    created(&mut u, &mut now, &source);
    let patch = next(&mut u, &mut now, &source);
    assert_eq!(patch.request.method(), Method::PATCH);
    assert_eq!(patch.request.uri(), UPLOAD);
    assert_eq!(
        header(&patch, "content-type"),
        Some("application/offset+octet-stream")
    );
    assert_eq!(header(&patch, "upload-offset"), Some("0"));
    assert_eq!(header(&patch, "content-length"), Some("6"));
    assert_eq!(patch.body.source, 0..6);
    // The server kept 4 of the 6 bytes: the next PATCH starts there.
    answer(&mut u, now, &patch, 204, &[("upload-offset", "4")]);
    assert_eq!(u.persisted(), 4);
    let patch = next(&mut u, &mut now, &source);
    assert_eq!(patch.body.source, 4..10);
    assert_eq!(header(&patch, "upload-offset"), Some("4"));
    answer(&mut u, now, &patch, 204, &[("upload-offset", "10")]);
    assert_eq!(done(&mut u, now).unwrap().size, 10);
}

#[test]
fn u4_an_answer_beyond_the_body_or_backwards_is_a_violation() {
    for (offset, want) in [
        (
            "7",
            ProtocolViolation::RangeBeyondSent {
                claimed: 7,
                sent: 6,
            },
        ),
        (
            "1",
            ProtocolViolation::PersistedWentBackwards { before: 2, now: 1 },
        ),
    ] {
        let source = [0u8; 10];
        let mut u = create(config(Some(10), 4));
        let mut now = Instant::now();
        created(&mut u, &mut now, &source);
        let patch = next(&mut u, &mut now, &source);
        answer(&mut u, now, &patch, 204, &[("upload-offset", "2")]);
        let patch = next(&mut u, &mut now, &source);
        assert_eq!(patch.body.source, 2..6);
        answer(&mut u, now, &patch, 204, &[("upload-offset", offset)]);
        assert_eq!(done(&mut u, now), Err(want.into()));
    }
}

#[test]
fn u4_a_patch_answer_without_offset_is_a_violation() {
    let source = [0u8; 10];
    let mut u = create(config(Some(10), 4));
    let mut now = Instant::now();
    created(&mut u, &mut now, &source);
    let patch = next(&mut u, &mut now, &source);
    answer(&mut u, now, &patch, 204, &[]);
    assert!(matches!(
        done(&mut u, now),
        Err(Error::Protocol(ProtocolViolation::MalformedResponse(_)))
    ));
}

// ---- U5 ----

#[test]
fn u5_method_override_sends_post_with_the_method_in_a_header() {
    let source = [0u8; 10];
    let mut c = config(Some(10), 4);
    c.method_override = true;
    let mut u = create(c);
    let mut now = Instant::now();
    created(&mut u, &mut now, &source);
    let patch = next(&mut u, &mut now, &source);
    assert_eq!(patch.request.method(), Method::POST);
    assert_eq!(header(&patch, "x-http-method-override"), Some("PATCH"));
    assert_eq!(header(&patch, "upload-offset"), Some("0"));
    u.cancel();
    answer(&mut u, now, &patch, 204, &[("upload-offset", "4")]);
    let delete = next(&mut u, &mut now, &source);
    assert_eq!(delete.request.method(), Method::POST);
    assert_eq!(header(&delete, "x-http-method-override"), Some("DELETE"));
}

// ---- U6 ----

#[test]
fn u6_creation_declares_the_length_and_resolves_a_relative_location() {
    let cases = [
        ("abc", "https://tus.example/files/abc"),
        ("/other/abc?x=1", "https://tus.example/other/abc?x=1"),
        ("../up/abc", "https://tus.example/up/abc"),
        ("./abc#frag", "https://tus.example/files/abc"),
        ("//cdn.example/u/1", "https://cdn.example/u/1"),
        (
            "http://elsewhere.example:8080/u/2",
            "http://elsewhere.example:8080/u/2",
        ),
    ];
    for (location, want) in cases {
        let mut u = create(config(Some(10), 4));
        let mut now = Instant::now();
        let post = next(&mut u, &mut now, &[0; 10]);
        assert_eq!(post.request.uri(), ENDPOINT);
        assert_eq!(header(&post, "upload-length"), Some("10"));
        assert_eq!(header(&post, "upload-defer-length"), None);
        assert_eq!(header(&post, "content-length"), Some("0"));
        assert!(post.body.is_empty());
        answer(&mut u, now, &post, 201, &[("location", location)]);
        assert_eq!(u.upload_url().unwrap().expose(), want, "{location}");
        // No HEAD: a new upload is at offset 0.
        let patch = next(&mut u, &mut now, &[0; 10]);
        assert_eq!(patch.request.uri(), want);
        assert_eq!(header(&patch, "upload-offset"), Some("0"));
    }
}

#[test]
fn u6_a_201_without_a_usable_location_is_a_violation() {
    for headers in [&[][..], &[("location", "ftp://x/y")], &[("location", "")]] {
        let mut u = create(config(Some(10), 4));
        let mut now = Instant::now();
        let post = next(&mut u, &mut now, &[0; 10]);
        answer(&mut u, now, &post, 201, headers);
        assert_eq!(
            done(&mut u, now),
            Err(ProtocolViolation::MissingLocation.into())
        );
    }
}

#[test]
fn u6_an_empty_upload_is_complete_at_creation() {
    let mut u = create(config(Some(0), 4));
    let mut now = Instant::now();
    let post = next(&mut u, &mut now, &[]);
    assert_eq!(header(&post, "upload-length"), Some("0"));
    answer(&mut u, now, &post, 201, &[("location", UPLOAD)]);
    let done = done(&mut u, now).unwrap();
    assert_eq!((done.size, done.status.as_u16()), (0, 201));
}

#[test]
fn u6_a_refused_creation_is_final_and_a_5xx_is_retried() {
    let mut u = create(config(Some(10), 4));
    let mut now = Instant::now();
    let post = next(&mut u, &mut now, &[0; 10]);
    answer(&mut u, now, &post, 503, &[]);
    let post = next(&mut u, &mut now, &[0; 10]);
    assert_eq!(post.request.method(), Method::POST);
    answer(&mut u, now, &post, 413, &[]);
    assert!(matches!(done(&mut u, now), Err(Error::Server { status, .. }) if status == 413));
}

// ---- U7 ----

#[test]
fn u7_metadata_goes_on_the_creation_and_bad_keys_are_refused() {
    let mut c = config(Some(3), 4);
    c.metadata = vec![
        ("filename".into(), b"a b.txt".to_vec()),
        ("empty".into(), Vec::new()),
    ];
    let mut u = create(c);
    let mut now = Instant::now();
    let post = next(&mut u, &mut now, &[0; 3]);
    let want = format!("filename {},empty", STANDARD.encode("a b.txt"));
    assert_eq!(header(&post, "upload-metadata"), Some(want.as_str()));
    answer(&mut u, now, &post, 201, &[("location", UPLOAD)]);
    assert_eq!(
        u.resume_state().unwrap().metadata.as_deref(),
        Some(want.as_str())
    );

    for key in ["", "a b", "a,b", "é"] {
        let mut c = config(Some(3), 4);
        c.metadata = vec![(key.into(), b"v".to_vec())];
        let e = TusUpload::new(
            TusStart::Create {
                endpoint: ENDPOINT.parse().unwrap(),
            },
            c,
        )
        .unwrap_err();
        assert!(
            matches!(
                e,
                UsageError::InvalidInput {
                    what: "upload metadata",
                    ..
                }
            ),
            "{key:?}"
        );
    }
}

// ---- U8 ----

#[test]
fn u8_creation_with_upload_sends_the_first_chunk_and_reads_the_stored_offset() {
    let source: Vec<u8> = (0..10).collect();
    let mut c = config(Some(10), 6);
    c.creation_with_upload = true;
    let mut u = create(c);
    let mut now = Instant::now();
    let post = next(&mut u, &mut now, &source);
    assert_eq!(post.body.source, 0..6);
    assert_eq!(
        header(&post, "content-type"),
        Some("application/offset+octet-stream")
    );
    assert_eq!(header(&post, "content-length"), Some("6"));
    // The server kept only 3 bytes of the 6.
    answer(
        &mut u,
        now,
        &post,
        201,
        &[("location", UPLOAD), ("upload-offset", "3")],
    );
    assert_eq!(u.persisted(), 3);
    let patch = next(&mut u, &mut now, &source);
    assert_eq!(patch.body.source, 3..9);
    // A creation answer claiming more than the body is the server's fault.
    let mut c = config(Some(10), 6);
    c.creation_with_upload = true;
    let mut u = create(c);
    let post = next(&mut u, &mut now, &source);
    answer(
        &mut u,
        now,
        &post,
        201,
        &[("location", UPLOAD), ("upload-offset", "7")],
    );
    assert_eq!(
        done(&mut u, now),
        Err(ProtocolViolation::RangeBeyondSent {
            claimed: 7,
            sent: 6
        }
        .into())
    );
}

// ---- U9 ----

#[test]
fn u9_a_source_of_unknown_size_is_deferred_and_the_last_patch_declares_it() {
    for len in [0usize, 3, 8, 9, 17] {
        let source: Vec<u8> = (0..len as u8).collect();
        let mut u = create(config(None, 4));
        let mut now = Instant::now();
        let post = next(&mut u, &mut now, &source);
        assert_eq!(header(&post, "upload-defer-length"), Some("1"));
        assert_eq!(header(&post, "upload-length"), None);
        answer(&mut u, now, &post, 201, &[("location", UPLOAD)]);
        let mut held = Vec::new();
        let mut declared = Vec::new();
        let outcome = loop {
            match u.poll_action(now) {
                Action::Done(o) => break o,
                Action::Read(r) => {
                    let (a, b) = (r.range.start as usize, r.range.end as usize);
                    u.handle_read(now, r.range.start, &source[a.min(len)..b.min(len)])
                        .unwrap();
                }
                Action::Send(t) => {
                    declared.push(header(&t, "upload-length").map(str::to_owned));
                    let r = &t.body.source;
                    held.extend_from_slice(&source[r.start as usize..r.end as usize]);
                    let off = held.len().to_string();
                    answer(&mut u, now, &t, 204, &[("upload-offset", &off)]);
                }
                other => panic!("{other:?}"),
            }
        };
        assert_eq!(outcome.unwrap().size, len as u64);
        assert_eq!(held, source);
        // Only the last PATCH says the length, also when it carries the last bytes.
        let n = declared.len();
        assert_eq!(n, len.div_ceil(4).max(1), "{len}");
        assert_eq!(declared[n - 1].as_deref(), Some(len.to_string().as_str()));
        assert!(declared[..n - 1].iter().all(Option::is_none));
    }
}

#[test]
fn u9_a_deferred_upload_complete_on_head_still_declares_its_length() {
    let source = [5u8; 4];
    let mut u = existing(config(Some(4), 4));
    let mut now = Instant::now();
    let head = next(&mut u, &mut now, &source);
    answer(
        &mut u,
        now,
        &head,
        200,
        &[("upload-offset", "4"), ("upload-defer-length", "1")],
    );
    let patch = next(&mut u, &mut now, &source);
    assert!(patch.body.is_empty());
    assert_eq!(header(&patch, "upload-length"), Some("4"));
    assert_eq!(header(&patch, "upload-offset"), Some("4"));
    answer(&mut u, now, &patch, 204, &[("upload-offset", "4")]);
    assert_eq!(done(&mut u, now).unwrap().size, 4);
}

// ---- U10 ----

#[test]
fn u10_upload_expires_is_kept_and_an_expired_state_is_not_resumed() {
    let source = [0u8; 10];
    let mut c = config(Some(10), 4);
    c.fingerprint = "f".into();
    let mut u = create(c.clone());
    let mut now = Instant::now();
    let post = next(&mut u, &mut now, &source);
    answer(
        &mut u,
        now,
        &post,
        201,
        &[
            ("location", UPLOAD),
            ("upload-expires", "Wed, 25 Jun 2014 16:00:00 GMT"),
        ],
    );
    let patch = next(&mut u, &mut now, &source);
    answer(
        &mut u,
        now,
        &patch,
        204,
        &[
            ("upload-offset", "4"),
            ("upload-expires", "Thu, 26 Jun 2014 16:00:00 GMT"),
        ],
    );
    let state = u.resume_state().unwrap();
    assert_eq!(
        state.expires.as_deref(),
        Some("Thu, 26 Jun 2014 16:00:00 GMT")
    );
    let before = httpdate::parse_http_date("Thu, 26 Jun 2014 15:59:59 GMT").unwrap();
    let after = httpdate::parse_http_date("Thu, 26 Jun 2014 16:00:00 GMT").unwrap();
    assert!(!state.expired_at(before) && state.expired_at(after));
    assert!(
        TusUpload::new(
            TusStart::Resume {
                state: state.clone(),
                now: before
            },
            c.clone()
        )
        .is_ok()
    );
    assert_eq!(
        TusUpload::new(TusStart::Resume { state, now: after }, c).unwrap_err(),
        UsageError::StateMismatch("the upload has expired on the server; start a new one")
    );
}

#[test]
fn u10_a_404_past_the_expiry_says_expired() {
    let source = [0u8; 10];
    let mut u = create(config(Some(10), 4));
    let mut now = Instant::now();
    let post = next(&mut u, &mut now, &source);
    answer(
        &mut u,
        now,
        &post,
        201,
        &[
            ("location", UPLOAD),
            ("upload-expires", "Wed, 25 Jun 2014 16:00:00 GMT"),
        ],
    );
    let patch = next(&mut u, &mut now, &source);
    answer(
        &mut u,
        now,
        &patch,
        410,
        &[("date", "Wed, 25 Jun 2014 17:00:00 GMT")],
    );
    assert_eq!(
        done(&mut u, now),
        Err(Error::Expired {
            status: StatusCode::GONE
        })
    );
}

// ---- U11 ----

fn sha1_header(bytes: &[u8]) -> String {
    format!("sha1 {}", STANDARD.encode(Sha1::digest(bytes)))
}

#[test]
fn u11_each_patch_carries_the_sha1_of_its_body_and_460_resends_it() {
    let source: Vec<u8> = (0..10).map(|i| i * 7).collect();
    let mut c = config(Some(10), 6);
    c.checksum = Some(ChecksumAlgorithm::Sha1);
    let mut u = create(c);
    let mut now = Instant::now();
    created(&mut u, &mut now, &source);
    let patch = next(&mut u, &mut now, &source);
    assert_eq!(
        header(&patch, "upload-checksum"),
        Some(sha1_header(&source[0..6]).as_str())
    );
    answer(&mut u, now, &patch, 460, &[]);
    let again = next(&mut u, &mut now, &source);
    assert_eq!(again.body.source, 0..6);
    assert_eq!(
        header(&again, "upload-checksum"),
        header(&patch, "upload-checksum")
    );
    // Part of the chunk kept (say after a lost answer): the rest has its own checksum.
    answer(&mut u, now, &again, 204, &[("upload-offset", "2")]);
    let patch = next(&mut u, &mut now, &source);
    assert_eq!(patch.body.source, 2..8);
    assert_eq!(
        header(&patch, "upload-checksum"),
        Some(sha1_header(&source[2..8]).as_str())
    );
}

#[test]
fn u11_repeated_mismatches_end_the_upload() {
    let source = [9u8; 4];
    let mut c = config(Some(4), 4);
    c.checksum = Some(ChecksumAlgorithm::Sha1);
    c.max_checksum_resends = 2;
    let mut u = create(c);
    let mut now = Instant::now();
    created(&mut u, &mut now, &source);
    for _ in 0..3 {
        let patch = next(&mut u, &mut now, &source);
        answer(&mut u, now, &patch, 460, &[]);
    }
    assert!(
        matches!(done(&mut u, now), Err(Error::Server { status, .. }) if status.as_u16() == 460)
    );
}

// ---- U12 ----

#[test]
fn u12_cancel_deletes_the_upload_and_404_means_already_gone() {
    for status in [204, 404, 410] {
        let source = [0u8; 10];
        let mut u = create(config(Some(10), 4));
        let mut now = Instant::now();
        created(&mut u, &mut now, &source);
        u.cancel();
        let delete = next(&mut u, &mut now, &source);
        assert_eq!(delete.request.method(), Method::DELETE);
        assert_eq!(delete.request.uri(), UPLOAD);
        assert_eq!(header(&delete, "content-length"), Some("0"));
        answer(&mut u, now, &delete, status, &[]);
        assert_eq!(done(&mut u, now), Err(Error::Cancelled));
    }
    // Before the upload exists nothing is sent.
    let mut u = create(config(Some(10), 4));
    u.cancel();
    assert_eq!(done(&mut u, Instant::now()), Err(Error::Cancelled));
    assert_eq!(u.stats().requests, 0);
}

// ---- U14 ----

#[test]
fn u14_conflicts_locks_5xx_and_transport_failures_back_off_then_head() {
    for status in [Some(409), Some(423), Some(500), Some(503), Some(429), None] {
        let source: Vec<u8> = (0..10).collect();
        let mut u = create(config(Some(10), 4));
        let mut now = Instant::now();
        created(&mut u, &mut now, &source);
        let patch = next(&mut u, &mut now, &source);
        let t0 = now;
        match status {
            Some(s) => answer(&mut u, now, &patch, s, &[]),
            None => u
                .handle_failure(now, patch.id, TransportFailure::Timeout)
                .unwrap(),
        }
        assert!(matches!(u.poll_action(now), Action::Wait(_)), "{status:?}");
        let head = next(&mut u, &mut now, &source);
        assert!(now > t0, "waited first");
        assert_eq!(head.request.method(), Method::HEAD, "{status:?}");
        // The server kept 3 bytes of the failed chunk.
        answer(
            &mut u,
            now,
            &head,
            204,
            &[("upload-offset", "3"), ("upload-length", "10")],
        );
        let patch = next(&mut u, &mut now, &source);
        assert_eq!(patch.body.source, 3..7);
        assert_eq!(u.stats().retries, 1);
    }
}

#[test]
fn u14_gone_uploads_and_other_refusals_end_typed() {
    for (status, gone) in [
        (404, true),
        (410, true),
        (400, false),
        (403, false),
        (413, false),
    ] {
        let source = [0u8; 10];
        let mut u = create(config(Some(10), 4));
        let mut now = Instant::now();
        created(&mut u, &mut now, &source);
        let patch = next(&mut u, &mut now, &source);
        answer(&mut u, now, &patch, status, &[]);
        let outcome = done(&mut u, now);
        if gone {
            assert!(
                matches!(outcome, Err(Error::SessionGone { .. })),
                "{status}"
            );
            // Starting over is what is left: the error says so, and is not resumable.
            let e = outcome.unwrap_err();
            assert!(e.to_string().contains("must start again") && !e.is_resumable());
        } else {
            assert!(matches!(outcome, Err(Error::Server { .. })), "{status}");
        }
        assert_eq!(u.stats().retries, 0);
    }
}

#[test]
fn u14_a_server_that_never_stores_runs_out_of_retries() {
    let source = [0u8; 10];
    let mut c = config(Some(10), 4);
    c.retry.max_attempts = 3;
    let mut u = create(c);
    let mut now = Instant::now();
    created(&mut u, &mut now, &source);
    for _ in 0..50 {
        match u.poll_action(now) {
            Action::Send(t) if t.request.method() == Method::PATCH => {
                answer(&mut u, now, &t, 503, &[])
            }
            Action::Send(t) => answer(&mut u, now, &t, 200, &[("upload-offset", "0")]),
            Action::Wait(until) => now = until,
            Action::Done(o) => {
                assert!(
                    matches!(o, Err(Error::RetriesExhausted { attempts: 4, .. })),
                    "{o:?}"
                );
                return;
            }
            other => panic!("{other:?}"),
        }
    }
    panic!("did not give up");
}

// ---- U15 ----

#[test]
fn u15_the_resume_state_holds_what_a_restart_needs_and_must_fit() {
    let source = [0u8; 10];
    let mut c = config(Some(10), 4);
    c.fingerprint = "file|10|1".into();
    let mut u = create(c.clone());
    let mut now = Instant::now();
    assert_eq!(
        u.resume_state(),
        None,
        "nothing to resume before the creation"
    );
    let post = next(&mut u, &mut now, &source);
    answer(&mut u, now, &post, 201, &[("location", "abc")]);
    let patch = next(&mut u, &mut now, &source);
    let state = u.resume_state().unwrap();
    assert_eq!(state.upload_url.expose(), UPLOAD);
    assert_eq!(
        (state.total, state.length_declared, state.sent),
        (Some(10), true, Some(4))
    );
    answer(&mut u, now, &patch, 204, &[("upload-offset", "4")]);
    assert_eq!(u.resume_state().unwrap().persisted, 4);
    // Another file, another size: refused.
    let mut other = c.clone();
    other.fingerprint = "other".into();
    assert!(
        TusUpload::new(
            TusStart::Resume {
                state: state.clone(),
                now: SystemTime::now()
            },
            other
        )
        .is_err()
    );
    let mut other = config(Some(11), 4);
    other.fingerprint = c.fingerprint.clone();
    assert!(
        TusUpload::new(
            TusStart::Resume {
                state: state.clone(),
                now: SystemTime::now()
            },
            other
        )
        .is_err()
    );
    // Secrets stay out of Debug.
    assert!(!format!("{state:?} {u:?}").contains("tus.example"));
}

#[test]
fn u15_a_resumed_stream_reads_from_its_start_to_find_its_end() {
    let source: Vec<u8> = (0..10).collect();
    let state = TusResumeState {
        upload_url: SessionUri::parse(UPLOAD).unwrap(),
        total: None,
        length_declared: false,
        persisted: 6,
        sent: Some(8),
        metadata: None,
        expires: None,
        fingerprint: String::new(),
    };
    let mut u = TusUpload::new(
        TusStart::Resume {
            state,
            now: SystemTime::now(),
        },
        config(None, 4),
    )
    .unwrap();
    let mut now = Instant::now();
    let head = next(&mut u, &mut now, &source);
    answer(
        &mut u,
        now,
        &head,
        200,
        &[("upload-offset", "6"), ("upload-defer-length", "1")],
    );
    let mut held = source[..6].to_vec();
    assert_eq!(u.retained_from(), 0);
    let done = patch_to_end(&mut u, &mut now, &source, &mut held).unwrap();
    assert_eq!((done.size, held), (10, source));
}

// ---- the engine's rules, as tus uses them ----

#[test]
fn stale_answers_are_refused_without_effect() {
    let source = [0u8; 10];
    let mut u = create(config(Some(10), 4));
    let mut now = Instant::now();
    let post = next(&mut u, &mut now, &source);
    answer(&mut u, now, &post, 201, &[("location", UPLOAD)]);
    let before = format!("{u:?}");
    assert_eq!(
        u.handle_response(now, post.id, response(201, &[("location", UPLOAD)])),
        Err(UsageError::UnknownRequest(post.id.get()))
    );
    assert_eq!(format!("{u:?}"), before);
}

#[test]
fn u9_a_head_silent_on_the_length_after_the_declaring_patch_takes_it_as_told() {
    let source = [1u8; 6];
    let mut u = create(config(None, 8));
    let mut now = Instant::now();
    created(&mut u, &mut now, &source);
    let patch = next(&mut u, &mut now, &source);
    assert_eq!(header(&patch, "upload-length"), Some("6"));
    u.handle_failure(now, patch.id, TransportFailure::Reset)
        .unwrap();
    // The state a crash here would leave says the length went out.
    assert!(u.resume_state().unwrap().length_declared);
    let head = next(&mut u, &mut now, &source);
    // A lax server: neither Upload-Length nor Upload-Defer-Length.
    answer(&mut u, now, &head, 200, &[("upload-offset", "6")]);
    assert_eq!(done(&mut u, now).unwrap().size, 6);
    // While the server still says it is deferred, the length goes again.
    let mut u = create(config(None, 8));
    created(&mut u, &mut now, &source);
    let patch = next(&mut u, &mut now, &source);
    u.handle_failure(now, patch.id, TransportFailure::Reset)
        .unwrap();
    let head = next(&mut u, &mut now, &source);
    answer(
        &mut u,
        now,
        &head,
        200,
        &[("upload-offset", "6"), ("upload-defer-length", "1")],
    );
    let patch = next(&mut u, &mut now, &source);
    assert!(patch.body.is_empty());
    assert_eq!(header(&patch, "upload-length"), Some("6"));
}
