//! Scripted tests of the tus parallel upload through concatenation (U13 in
//! `docs/protocols/tus.md`, with U2, U3, U11, U12, U14 and U15 where parts meet them): each
//! drives the core request by request and checks what it sends and how it reacts.

use std::time::{Duration, Instant, SystemTime};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use bytes::Bytes;
use http::{Method, Response};
use resumable_core::tus::{
    ChecksumAlgorithm, TusCompletion, TusConfig, TusParallelResumeState, TusParallelStart,
    TusParallelUpload,
};
use resumable_core::{
    Action, Error, ProtocolViolation, RetryPolicy, Transmit, TransportFailure, Upload, UsageError,
};
use sha1::{Digest as _, Sha1};

const ENDPOINT: &str = "https://tus.example/files/";
const ALL: &str = "creation,concatenation,termination,checksum";

fn config(total: u64, chunk: u64) -> TusConfig {
    let mut c = TusConfig::new(Some(total));
    c.chunk_size = chunk;
    c.retry = RetryPolicy::default();
    c.retry.jitter = Duration::ZERO;
    c
}

fn create(c: TusConfig, parts: u32) -> TusParallelUpload {
    TusParallelUpload::new(
        TusParallelStart::Create {
            endpoint: ENDPOINT.parse().unwrap(),
        },
        c,
        parts,
    )
    .unwrap()
}

fn resume(c: TusConfig, state: TusParallelResumeState) -> TusParallelUpload {
    TusParallelUpload::new(
        TusParallelStart::Resume {
            endpoint: ENDPOINT.parse().unwrap(),
            state,
            now: SystemTime::now(),
        },
        c,
        1,
    )
    .unwrap()
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

fn answer(u: &mut TusParallelUpload, now: Instant, t: &Transmit, status: u16, h: &[(&str, &str)]) {
    u.handle_response(now, t.id, response(status, h)).unwrap();
}

fn header<'a>(t: &'a Transmit, name: &str) -> Option<&'a str> {
    t.request.headers().get(name).map(|v| v.to_str().unwrap())
}

/// Every request the upload hands out before it goes idle (reads served from `source`, waits
/// jumped over when nothing is in flight).
fn sends(u: &mut TusParallelUpload, now: &mut Instant, source: &[u8]) -> Vec<Transmit> {
    let mut out = Vec::new();
    for _ in 0..10_000 {
        match u.poll_action(*now) {
            Action::Send(t) => out.push(t),
            Action::Read(r) => {
                let bytes = &source[r.range.start as usize..r.range.end as usize];
                u.handle_read(*now, r.range.start, bytes).unwrap();
            }
            Action::Wait(until) if out.is_empty() => *now = until,
            Action::Wait(_) | Action::Idle | Action::Done(_) => return out,
        }
    }
    panic!("no end to the requests")
}

fn one(u: &mut TusParallelUpload, now: &mut Instant, source: &[u8]) -> Transmit {
    let mut all = sends(u, now, source);
    assert_eq!(all.len(), 1, "{all:?}");
    all.remove(0)
}

fn done(u: &mut TusParallelUpload, now: Instant) -> Result<TusCompletion, Error> {
    match u.poll_action(now) {
        Action::Done(outcome) => outcome,
        other => panic!("expected the end, got {other:?}"),
    }
}

fn discover(u: &mut TusParallelUpload, now: &mut Instant, extensions: &str) {
    let options = one(u, now, &[]);
    assert_eq!(options.request.method(), Method::OPTIONS);
    answer(
        u,
        *now,
        &options,
        200,
        &[
            ("tus-version", "1.0.0"),
            ("tus-extension", extensions),
            ("tus-checksum-algorithm", "sha1"),
        ],
    );
}

/// The part a partial-upload URL `/files/p<start>` stands for.
fn url_of(start: u64) -> String {
    format!("https://tus.example/files/p{start}")
}

/// Answers the creations of partial uploads with `/files/p<start>`: a part is told apart by
/// its `Upload-Length` and the order the creations went out (ranges ascending).
fn create_parts(u: &mut TusParallelUpload, now: Instant, posts: &[Transmit]) {
    let ranges = u.part_ranges();
    assert_eq!(posts.len(), ranges.len());
    // Answered last first: the final must still name the parts in byte order.
    for (post, range) in posts.iter().zip(&ranges).rev() {
        assert_eq!(post.request.method(), Method::POST);
        let location = format!("/files/p{}", range.start);
        answer(u, now, post, 201, &[("location", &location)]);
    }
}

// ---- U13 ----

#[test]
fn u13_parts_are_created_partial_and_sent_in_parallel_then_joined_in_byte_order() {
    let source: Vec<u8> = (0..10u8).collect();
    let mut c = config(10, 100);
    c.metadata = vec![("filename".into(), b"a.bin".to_vec())];
    let mut u = create(c, 3);
    assert_eq!(u.max_in_flight(), 3);
    let mut now = Instant::now();
    discover(&mut u, &mut now, ALL);

    // Three creations at once, each with its own length, none with metadata.
    let posts = sends(&mut u, &mut now, &source);
    assert_eq!(posts.len(), 3);
    assert_eq!(u.part_ranges(), vec![0..4, 4..7, 7..10]);
    for (post, len) in posts.iter().zip(["4", "3", "3"]) {
        assert_eq!(header(post, "upload-concat"), Some("partial"));
        assert_eq!(header(post, "upload-length"), Some(len));
        assert_eq!(header(post, "upload-metadata"), None);
        assert_eq!(header(post, "tus-resumable"), Some("1.0.0"));
    }
    create_parts(&mut u, now, &posts);

    // Three PATCHes at once, each at offset 0 of its own part, with that part's bytes.
    let patches = sends(&mut u, &mut now, &source);
    assert_eq!(patches.len(), 3);
    let mut seen: Vec<(String, std::ops::Range<u64>)> = patches
        .iter()
        .map(|p| (p.request.uri().to_string(), p.body.source.clone()))
        .collect();
    seen.sort_by_key(|(_, r)| r.start);
    assert_eq!(
        seen,
        vec![(url_of(0), 0..4), (url_of(4), 4..7), (url_of(7), 7..10)]
    );
    for p in &patches {
        assert_eq!(header(p, "upload-offset"), Some("0"));
        assert_eq!(header(p, "upload-concat"), None);
    }
    // Answered in any order.
    for i in [1, 2, 0] {
        let len = patches[i].body.source.end - patches[i].body.source.start;
        answer(
            &mut u,
            now,
            &patches[i],
            204,
            &[("upload-offset", &len.to_string())],
        );
    }

    let fin = one(&mut u, &mut now, &source);
    assert_eq!(fin.request.method(), Method::POST);
    assert_eq!(fin.request.uri().to_string(), ENDPOINT);
    let want = format!("final;{} {} {}", url_of(0), url_of(4), url_of(7));
    assert_eq!(header(&fin, "upload-concat"), Some(want.as_str()));
    assert_eq!(header(&fin, "upload-length"), None);
    assert_eq!(
        header(&fin, "upload-metadata"),
        Some(format!("filename {}", STANDARD.encode("a.bin")).as_str())
    );
    answer(&mut u, now, &fin, 201, &[("location", "/files/final")]);

    let head = one(&mut u, &mut now, &source);
    assert_eq!(head.request.method(), Method::HEAD);
    assert_eq!(head.request.uri(), "https://tus.example/files/final");
    answer(
        &mut u,
        now,
        &head,
        200,
        &[("upload-offset", "10"), ("upload-length", "10")],
    );
    let done = done(&mut u, now).unwrap();
    assert_eq!(done.size, 10);
    assert_eq!(
        done.upload_url.expose().to_string(),
        "https://tus.example/files/final"
    );
    assert_eq!(u.persisted(), 10);
    assert!(u.resume_state().is_none());
}

#[test]
fn u13_u2_without_concatenation_offered_the_upload_is_refused_before_any_data() {
    let mut u = create(config(10, 4), 2);
    let mut now = Instant::now();
    discover(&mut u, &mut now, "creation,termination");
    assert_eq!(
        done(&mut u, now),
        Err(Error::Unsupported("uploading parts in parallel"))
    );
    assert_eq!(u.stats().requests, 1);
    assert!(u.resume_state().is_none());
}

#[test]
fn u13_discovery_is_always_the_first_request() {
    let mut c = config(10, 4);
    c.discover = false;
    let mut u = create(c, 2);
    let mut now = Instant::now();
    let first = one(&mut u, &mut now, &[]);
    assert_eq!(first.request.method(), Method::OPTIONS);
    assert_eq!(header(&first, "tus-resumable"), None);
}

/// Runs a 2-part upload of `source` to the final HEAD, and returns it.
fn to_final_head(source: &[u8], now: &mut Instant) -> (TusParallelUpload, Transmit) {
    let mut u = create(config(source.len() as u64, 100), 2);
    discover(&mut u, now, ALL);
    let posts = sends(&mut u, now, source);
    create_parts(&mut u, *now, &posts);
    for p in sends(&mut u, now, source) {
        let len = p.body.source.end - p.body.source.start;
        answer(
            &mut u,
            *now,
            &p,
            204,
            &[("upload-offset", &len.to_string())],
        );
    }
    let fin = one(&mut u, now, source);
    answer(&mut u, *now, &fin, 201, &[("location", "/files/final")]);
    let head = one(&mut u, now, source);
    (u, head)
}

#[test]
fn u13_success_needs_the_finals_length_and_offset_both_equal_to_the_source() {
    let source = [7u8; 8];
    let mut now = Instant::now();
    let (mut u, head) = to_final_head(&source, &mut now);
    // Not joined yet: no Upload-Offset. Asked again after a wait, never success.
    answer(&mut u, now, &head, 200, &[("upload-length", "8")]);
    assert!(matches!(u.poll_action(now), Action::Wait(_)));
    let head = one(&mut u, &mut now, &source);
    assert_eq!(head.request.method(), Method::HEAD);
    // An offset short of the length: still not done.
    answer(
        &mut u,
        now,
        &head,
        204,
        &[("upload-offset", "4"), ("upload-length", "8")],
    );
    let head = one(&mut u, &mut now, &source);
    // The offset but no length: not proved.
    answer(&mut u, now, &head, 204, &[("upload-offset", "8")]);
    let head = one(&mut u, &mut now, &source);
    answer(
        &mut u,
        now,
        &head,
        204,
        &[("upload-offset", "8"), ("upload-length", "8")],
    );
    assert_eq!(done(&mut u, now).unwrap().size, 8);
}

#[test]
fn u13_a_final_of_another_length_or_beyond_it_is_a_protocol_violation() {
    let source = [7u8; 8];
    for (headers, want) in [
        (
            [("upload-offset", "9"), ("upload-length", "9")],
            ProtocolViolation::LengthDiffers {
                server: 9,
                source_len: 8,
            },
        ),
        (
            [("upload-offset", "9"), ("upload-length", "8")],
            ProtocolViolation::RangeBeyondSent {
                claimed: 9,
                sent: 8,
            },
        ),
    ] {
        let mut now = Instant::now();
        let (mut u, head) = to_final_head(&source, &mut now);
        answer(&mut u, now, &head, 200, &headers);
        assert_eq!(done(&mut u, now), Err(Error::Protocol(want)));
    }
}

#[test]
fn u13_a_final_that_never_joins_ends_when_the_retry_budget_is_spent() {
    let source = [7u8; 8];
    let mut now = Instant::now();
    let (mut u, mut head) = to_final_head(&source, &mut now);
    for _ in 0..1000 {
        answer(&mut u, now, &head, 200, &[("upload-length", "8")]);
        let next = sends(&mut u, &mut now, &source);
        match next.into_iter().next() {
            Some(t) => head = t,
            None => break,
        }
    }
    assert!(matches!(
        done(&mut u, now),
        Err(Error::RetriesExhausted { .. })
    ));
}

#[test]
fn u13_u14_a_part_gone_at_the_final_request_is_session_gone() {
    let source = [7u8; 8];
    let mut now = Instant::now();
    let mut u = create(config(8, 100), 2);
    discover(&mut u, &mut now, ALL);
    let posts = sends(&mut u, &mut now, &source);
    create_parts(&mut u, now, &posts);
    for p in sends(&mut u, &mut now, &source) {
        answer(&mut u, now, &p, 204, &[("upload-offset", "4")]);
    }
    let fin = one(&mut u, &mut now, &source);
    answer(&mut u, now, &fin, 404, &[]);
    assert!(matches!(
        done(&mut u, now),
        Err(Error::SessionGone { status }) if status == 404
    ));
}

#[test]
fn u13_u14_a_lost_patch_answer_re_heads_that_part_only_and_it_continues() {
    let source: Vec<u8> = (0..12u8).collect();
    let mut now = Instant::now();
    let mut u = create(config(12, 3), 2);
    discover(&mut u, &mut now, ALL);
    let posts = sends(&mut u, &mut now, &source);
    create_parts(&mut u, now, &posts);
    let patches = sends(&mut u, &mut now, &source);
    assert_eq!(patches.len(), 2);
    let (a, b) = (&patches[0], &patches[1]);
    // Part a's answer is lost (the server kept 2 of its 3 bytes); part b goes on.
    u.handle_failure(now, a.id, TransportFailure::Reset)
        .unwrap();
    answer(&mut u, now, b, 204, &[("upload-offset", "3")]);
    let next = sends(&mut u, &mut now, &source);
    // Part b sends its next chunk at once; part a waits for its back-off.
    assert_eq!(next.len(), 1);
    assert_eq!(next[0].request.method(), Method::PATCH);
    assert_eq!(next[0].request.uri(), b.request.uri());
    assert_eq!(header(&next[0], "upload-offset"), Some("3"));
    // After the wait, part a asks its offset before sending more.
    match u.poll_action(now) {
        Action::Wait(until) => now = until,
        other => panic!("{other:?}"),
    }
    let head = sends(&mut u, &mut now, &source);
    assert_eq!(head.len(), 1);
    assert_eq!(head[0].request.method(), Method::HEAD);
    assert_eq!(head[0].request.uri(), a.request.uri());
    answer(
        &mut u,
        now,
        &head[0],
        200,
        &[("upload-offset", "2"), ("upload-length", "6")],
    );
    let patch = one(&mut u, &mut now, &source);
    assert_eq!(header(&patch, "upload-offset"), Some("2"));
    assert_eq!(
        patch.body.source,
        a.body.source.start + 2..a.body.source.start + 5
    );
    assert!(u.last_retry().is_some());
}

#[test]
fn u13_u11_every_part_patch_carries_the_checksum_of_its_own_bytes() {
    let source: Vec<u8> = (0..10u8).map(|b| b * 3).collect();
    let mut c = config(10, 100);
    c.checksum = Some(ChecksumAlgorithm::Sha1);
    let mut u = create(c, 2);
    let mut now = Instant::now();
    discover(&mut u, &mut now, ALL);
    let posts = sends(&mut u, &mut now, &source);
    create_parts(&mut u, now, &posts);
    let patches = sends(&mut u, &mut now, &source);
    assert_eq!(patches.len(), 2);
    for p in &patches {
        let r = &p.body.source;
        let sum = STANDARD.encode(Sha1::digest(&source[r.start as usize..r.end as usize]));
        assert_eq!(
            header(p, "upload-checksum"),
            Some(format!("sha1 {sum}").as_str())
        );
    }
}

#[test]
fn u13_u11_a_checksum_the_server_lacks_is_refused_before_any_data() {
    let mut c = config(10, 100);
    c.checksum = Some(ChecksumAlgorithm::Sha1);
    let mut u = create(c, 2);
    let mut now = Instant::now();
    discover(&mut u, &mut now, "creation,concatenation");
    assert_eq!(
        done(&mut u, now),
        Err(Error::Unsupported("the checksum asked for"))
    );
}

// ---- U15 ----

#[test]
fn u13_u15_resume_heads_every_part_and_continues_each_from_the_servers_offset() {
    let source: Vec<u8> = (0..12u8).collect();
    let mut now = Instant::now();
    let mut u = create(config(12, 2), 3);
    discover(&mut u, &mut now, ALL);
    let posts = sends(&mut u, &mut now, &source);
    // Only two of the three creations were answered before the crash.
    let ranges = u.part_ranges();
    answer(&mut u, now, &posts[0], 201, &[("location", "/files/p0")]);
    answer(&mut u, now, &posts[1], 201, &[("location", "/files/p4")]);
    let patches = sends(&mut u, &mut now, &source);
    assert_eq!(patches.len(), 2);
    answer(&mut u, now, &patches[0], 204, &[("upload-offset", "2")]);
    // The next PATCH of part p0 (bytes 2..4) goes out; then the process dies.
    let more = sends(&mut u, &mut now, &source);
    assert_eq!(more[0].body.source, 2..4);
    let state = u.resume_state().unwrap();
    assert_eq!(state.parts.len(), 3);
    assert_eq!(state.parts[0].upload.as_ref().unwrap().persisted, 2);
    assert!(state.parts[2].upload.is_none());
    assert_eq!(
        state
            .parts
            .iter()
            .map(|p| p.start..p.end)
            .collect::<Vec<_>>(),
        ranges
    );

    // A new process: discovery, then a HEAD per created part and a creation for the other.
    let mut u = resume(config(12, 2), state);
    discover(&mut u, &mut now, ALL);
    let first = sends(&mut u, &mut now, &source);
    let mut methods: Vec<(Method, Option<String>)> = first
        .iter()
        .map(|t| {
            (
                t.request.method().clone(),
                header(t, "upload-concat").map(String::from),
            )
        })
        .collect();
    methods.sort_by_key(|(m, _)| m.to_string());
    assert_eq!(
        methods,
        vec![
            (Method::HEAD, None),
            (Method::HEAD, None),
            (Method::POST, Some("partial".into()))
        ]
    );
    for t in &first {
        match t.request.method().as_str() {
            // Part p0 holds 3 (one byte more than acknowledged: PATCH 2..4 was in flight).
            "HEAD" if t.request.uri().path() == "/files/p0" => answer(
                &mut u,
                now,
                t,
                200,
                &[("upload-offset", "3"), ("upload-length", "4")],
            ),
            "HEAD" => answer(
                &mut u,
                now,
                t,
                200,
                &[("upload-offset", "0"), ("upload-length", "4")],
            ),
            _ => answer(&mut u, now, t, 201, &[("location", "/files/p8")]),
        }
    }
    let patches = sends(&mut u, &mut now, &source);
    let mut at: Vec<(String, Option<&str>, std::ops::Range<u64>)> = patches
        .iter()
        .map(|t| {
            (
                t.request.uri().path().to_owned(),
                header(t, "upload-offset"),
                t.body.source.clone(),
            )
        })
        .collect();
    at.sort_by_key(|(_, _, r)| r.start);
    assert_eq!(
        at,
        vec![
            ("/files/p0".into(), Some("3"), 3..4),
            ("/files/p4".into(), Some("0"), 4..6),
            ("/files/p8".into(), Some("0"), 8..10),
        ]
    );
}

#[test]
fn u13_u15_a_resumed_part_beyond_what_was_sent_is_a_violation() {
    let source: Vec<u8> = (0..8u8).collect();
    let mut now = Instant::now();
    let mut u = create(config(8, 2), 2);
    discover(&mut u, &mut now, ALL);
    let posts = sends(&mut u, &mut now, &source);
    create_parts(&mut u, now, &posts);
    let state = u.resume_state().unwrap();
    let mut u = resume(config(8, 2), state);
    discover(&mut u, &mut now, ALL);
    let heads = sends(&mut u, &mut now, &source);
    // Nothing was ever sent to the part, yet the server claims 1 byte.
    answer(
        &mut u,
        now,
        &heads[0],
        200,
        &[("upload-offset", "1"), ("upload-length", "4")],
    );
    assert_eq!(
        done(&mut u, now),
        Err(Error::Protocol(ProtocolViolation::RangeBeyondSent {
            claimed: 1,
            sent: 0
        }))
    );
}

#[test]
fn u13_u15_a_resumed_complete_part_is_asked_again_and_a_known_final_only_is_headed() {
    let source = [5u8; 8];
    let mut now = Instant::now();
    let (u, _head) = to_final_head(&source, &mut now);
    let state = u.resume_state().unwrap();
    assert!(state.final_url.is_some());
    assert!(
        state
            .parts
            .iter()
            .all(|p| p.upload.as_ref().unwrap().persisted == p.end - p.start)
    );
    // With the final upload known, the resume asks it alone.
    let mut u = resume(config(8, 100), state.clone());
    discover(&mut u, &mut now, ALL);
    let head = one(&mut u, &mut now, &source);
    assert_eq!(head.request.method(), Method::HEAD);
    assert_eq!(head.request.uri().path(), "/files/final");
    answer(
        &mut u,
        now,
        &head,
        200,
        &[("upload-offset", "8"), ("upload-length", "8")],
    );
    assert_eq!(done(&mut u, now).unwrap().size, 8);
    assert_eq!(u.stats().resumed_from, Some(8));

    // Without it, every complete part is asked again (never trusted from the state), then
    // the final goes.
    let mut state = state;
    state.final_url = None;
    let mut u = resume(config(8, 100), state);
    discover(&mut u, &mut now, ALL);
    let heads = sends(&mut u, &mut now, &source);
    assert_eq!(heads.len(), 2);
    for h in &heads {
        assert_eq!(h.request.method(), Method::HEAD);
        answer(
            &mut u,
            now,
            h,
            200,
            &[("upload-offset", "4"), ("upload-length", "4")],
        );
    }
    let fin = one(&mut u, &mut now, &source);
    assert!(header(&fin, "upload-concat").unwrap().starts_with("final;"));
}

#[test]
fn u15_a_state_whose_parts_leave_a_gap_or_another_source_is_refused() {
    let source = [5u8; 8];
    let mut now = Instant::now();
    let (u, _) = to_final_head(&source, &mut now);
    let state = u.resume_state().unwrap();
    let mut gap = state.clone();
    gap.parts[1].start += 1;
    let mut other = state.clone();
    other.fingerprint = "another file".into();
    for (bad, why) in [
        (gap, "its parts do not cover the source"),
        (other, "the source's fingerprint differs"),
    ] {
        let r = TusParallelUpload::new(
            TusParallelStart::Resume {
                endpoint: ENDPOINT.parse().unwrap(),
                state: bad,
                now: SystemTime::now(),
            },
            config(8, 100),
            2,
        );
        assert_eq!(r.err(), Some(UsageError::StateMismatch(why)));
    }
    let r = TusParallelUpload::new(
        TusParallelStart::Create {
            endpoint: ENDPOINT.parse().unwrap(),
        },
        TusConfig::new(None),
        2,
    );
    assert!(matches!(r, Err(UsageError::InvalidInput { .. })));
}

// ---- U12 ----

#[test]
fn u13_u12_cancel_deletes_every_part_and_the_final() {
    let source: Vec<u8> = (0..9u8).collect();
    let mut now = Instant::now();
    let mut u = create(config(9, 2), 3);
    discover(&mut u, &mut now, ALL);
    let posts = sends(&mut u, &mut now, &source);
    create_parts(&mut u, now, &posts);
    let patches = sends(&mut u, &mut now, &source);
    u.cancel();
    // The three PATCHes in flight are answered (2 of each part's 3 bytes): nothing more is
    // sent, and each part DELETEs itself.
    for p in &patches {
        answer(&mut u, now, p, 204, &[("upload-offset", "2")]);
    }
    let deletes = sends(&mut u, &mut now, &source);
    let mut paths: Vec<String> = deletes
        .iter()
        .map(|d| {
            assert_eq!(d.request.method(), Method::DELETE);
            assert_eq!(header(d, "tus-resumable"), Some("1.0.0"));
            d.request.uri().path().to_owned()
        })
        .collect();
    paths.sort();
    assert_eq!(paths, ["/files/p0", "/files/p3", "/files/p6"]);
    for d in &deletes {
        answer(&mut u, now, d, 204, &[]);
    }
    assert_eq!(done(&mut u, now), Err(Error::Cancelled));
}

#[test]
fn u13_u12_cancel_after_the_final_exists_deletes_the_finished_parts_and_it() {
    let source = [5u8; 8];
    let mut now = Instant::now();
    let (mut u, head) = to_final_head(&source, &mut now);
    u.cancel();
    answer(&mut u, now, &head, 200, &[("upload-length", "8")]);
    let mut paths = Vec::new();
    for _ in 0..3 {
        let d = one(&mut u, &mut now, &source);
        assert_eq!(d.request.method(), Method::DELETE);
        paths.push(d.request.uri().path().to_owned());
        answer(&mut u, now, &d, 204, &[]);
    }
    assert_eq!(paths, ["/files/p0", "/files/p4", "/files/final"]);
    assert_eq!(done(&mut u, now), Err(Error::Cancelled));
}

#[test]
fn u13_u12_without_termination_cancel_sends_nothing() {
    let source = [5u8; 8];
    let mut now = Instant::now();
    let mut u = create(config(8, 100), 2);
    discover(&mut u, &mut now, "creation,concatenation");
    let posts = sends(&mut u, &mut now, &source);
    create_parts(&mut u, now, &posts);
    u.cancel();
    assert!(sends(&mut u, &mut now, &source).is_empty());
    assert_eq!(done(&mut u, now), Err(Error::Cancelled));
}
