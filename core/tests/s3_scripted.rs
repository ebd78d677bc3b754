//! Scripted tests of the S3 multipart upload (`resumable_core::multipart::upload`), one or more
//! per rule S1–S11 of `docs/protocols/s3.md`, against the simulated server in `s3sim`.

mod s3sim;

use std::time::{Duration, Instant};

use bytes::Bytes;
use http::Response;
use resumable_core::multipart::upload::{
    LedgerPart, Proof, S3Completion, S3Config, S3ResumeState, S3Upload,
};
use resumable_core::{
    Action, Error, IntegrityError, RetryPolicy, Transmit, TransportFailure, Upload, UsageError,
};
use s3sim::{ENDPOINT, S3Lie, S3Sim};

const PART: u64 = 16 * 1024;

fn source(len: usize) -> Vec<u8> {
    (0..len)
        .map(|i| (i.wrapping_mul(131) ^ (i >> 9)) as u8)
        .collect()
}

fn config(total: u64) -> S3Config {
    let mut c = S3Config::new(ENDPOINT.parse().unwrap(), "b", "dir/obj.bin", total);
    c.part_size = PART;
    c.min_part_size = PART;
    c.max_in_flight = 3;
    c.fingerprint = "fp".into();
    c.retry.initial_backoff = Duration::from_millis(10);
    c.retry.jitter = Duration::ZERO;
    c
}

/// What happens to the request of a kind at its n-th occurrence (1-based).
#[derive(Clone, Copy, Debug)]
enum Fate {
    Answer,
    /// Lost before the server sees it.
    DropBefore,
    /// Processed, its answer lost.
    DropAfter,
    /// Answered with this status and S3 error code instead.
    Status(u16, &'static str),
    /// Processed, then answered 200 with this `<Error>` body (S7).
    ErrorIn200(&'static str),
}

/// Drives `upload` to its end: reads in pieces of at most 5000 bytes, keeps every request it
/// may have in flight, answers the newest first (out of order), and applies `fate`.
struct Run {
    most_in_flight: usize,
    sends: Vec<(&'static str, String)>,
    sent_parts: Vec<u32>,
}

fn drive(
    upload: &mut S3Upload,
    server: &mut S3Sim,
    data: &[u8],
    mut fate: impl FnMut(&'static str, u32) -> Fate,
    mut stop_after_sends: Option<usize>,
) -> (Option<Result<S3Completion, Error>>, Run) {
    let mut now = Instant::now();
    let mut in_flight: Vec<Transmit> = Vec::new();
    let mut seen: std::collections::HashMap<&'static str, u32> = Default::default();
    let mut run = Run {
        most_in_flight: 0,
        sends: Vec::new(),
        sent_parts: Vec::new(),
    };
    for _ in 0..100_000 {
        match upload.poll_action(now) {
            Action::Read(read) => {
                let end = read.range.end.min(read.range.start + 5000) as usize;
                let bytes = &data[read.range.start as usize..end.min(data.len())];
                upload.handle_read(now, read.range.start, bytes).unwrap();
            }
            Action::Send(send) => {
                let kind = S3Sim::kind(&send.request);
                run.sends.push((kind, send.request.uri().to_string()));
                if kind == "part" {
                    let q = send.request.uri().query().unwrap();
                    let n = q
                        .split('&')
                        .find_map(|p| p.strip_prefix("partNumber="))
                        .unwrap();
                    run.sent_parts.push(n.parse().unwrap());
                }
                in_flight.push(send);
                run.most_in_flight = run.most_in_flight.max(in_flight.len());
                if let Some(n) = stop_after_sends.as_mut() {
                    if *n == 0 {
                        return (None, run);
                    }
                    *n -= 1;
                }
            }
            Action::Idle | Action::Wait(_) if !in_flight.is_empty() => {
                let send = in_flight.pop().unwrap();
                let kind = S3Sim::kind(&send.request);
                let n = seen.entry(kind).or_default();
                *n += 1;
                let r = &send.body.source;
                let mut body = send.body.prefix.to_vec();
                body.extend_from_slice(&data[r.start as usize..r.end as usize]);
                body.extend_from_slice(&send.body.suffix);
                let outcome: Result<Response<Bytes>, TransportFailure> = match fate(kind, *n) {
                    Fate::Answer => Ok(server.handle(&send.request, &body)),
                    Fate::DropBefore => Err(TransportFailure::Reset),
                    Fate::DropAfter => {
                        server.handle(&send.request, &body);
                        Err(TransportFailure::Timeout)
                    }
                    Fate::Status(status, code) => Ok(s3sim::error(status, code)),
                    Fate::ErrorIn200(code) => {
                        server.handle(&send.request, &body);
                        let mut r = s3sim::error(200, code);
                        *r.status_mut() = http::StatusCode::OK;
                        Ok(r)
                    }
                };
                match outcome {
                    Ok(response) => upload.handle_response(now, send.id, response).unwrap(),
                    Err(f) => upload.handle_failure(now, send.id, f).unwrap(),
                }
            }
            Action::Wait(until) => now = until,
            Action::Idle => panic!("Idle with nothing in flight"),
            Action::Done(outcome) => return (Some(outcome), run),
        }
    }
    panic!("the upload did not end");
}

fn answer_all(_: &'static str, _: u32) -> Fate {
    Fate::Answer
}

fn object(server: &S3Sim) -> Vec<u8> {
    server
        .objects
        .get("/b/dir/obj.bin")
        .expect("object stored")
        .0
        .clone()
}

#[test]
fn s2_s3_s6_parts_go_in_parallel_are_answered_out_of_order_and_complete_in_order() {
    let data = source(5 * PART as usize + 123);
    let mut server = S3Sim::new();
    let mut upload = S3Upload::new(config(data.len() as u64)).unwrap();
    assert_eq!(upload.max_in_flight(), 3);
    let (outcome, run) = drive(&mut upload, &mut server, &data, answer_all, None);
    let done = outcome.unwrap().unwrap();
    assert_eq!(object(&server), data);
    assert_eq!(done.parts, 6);
    assert_eq!(done.size, data.len() as u64);
    assert_eq!(done.crc32c, crc32c::crc32c(&data));
    assert_eq!(done.proof, Proof::CompleteAnswer);
    assert_eq!(run.most_in_flight, 3, "up to max_in_flight parts at once");
    assert!(server.violations.is_empty(), "{:?}", server.violations);
    assert_eq!(upload.resume_state(), None, "no state after success");
}

#[test]
fn s1_path_style_url_with_the_key_encoded_per_segment() {
    let data = source(10);
    let mut c = config(10);
    c.key = "dir/a b+c~.txt".into();
    let mut upload = S3Upload::new(c).unwrap();
    let Action::Send(create) = upload.poll_action(Instant::now()) else {
        panic!()
    };
    assert_eq!(
        create.request.uri().to_string(),
        "https://s3.sim.example/b/dir/a%20b%2Bc~.txt?uploads"
    );
    assert_eq!(create.request.method(), http::Method::POST);
    assert_eq!(
        create.request.headers()["x-amz-checksum-type"],
        "FULL_OBJECT"
    );
    let _ = data;
}

#[test]
fn s4_an_empty_object_is_one_empty_part() {
    let mut server = S3Sim::new();
    let mut upload = S3Upload::new(config(0)).unwrap();
    let (outcome, run) = drive(&mut upload, &mut server, &[], answer_all, None);
    let done = outcome.unwrap().unwrap();
    assert_eq!(done.parts, 1);
    assert_eq!(run.sent_parts, [1]);
    assert_eq!(object(&server), b"");
    assert!(server.violations.is_empty(), "{:?}", server.violations);
}

#[test]
fn s4_a_too_large_object_is_refused_before_anything_is_sent() {
    let too_big = resumable_core::multipart::plan::MAX_OBJECT_SIZE + 1;
    assert!(matches!(
        S3Upload::new(config(too_big)),
        Err(UsageError::SourceTooLarge { .. })
    ));
}

#[test]
fn s3_a_part_whose_answer_echoes_another_crc32c_is_an_integrity_error() {
    let data = source(3 * PART as usize);
    let mut server = S3Sim::new();
    server.lie = Some(S3Lie::PartCrc);
    let mut upload = S3Upload::new(config(data.len() as u64)).unwrap();
    let (outcome, _) = drive(&mut upload, &mut server, &data, answer_all, None);
    assert!(matches!(
        outcome.unwrap(),
        Err(Error::Integrity(IntegrityError::Crc32c { .. }))
    ));
}

#[test]
fn s3_a_lost_part_answer_is_the_same_put_again() {
    let data = source(3 * PART as usize);
    let mut server = S3Sim::new();
    let mut upload = S3Upload::new(config(data.len() as u64)).unwrap();
    let fate = |kind, n| match (kind, n) {
        ("part", 1) => Fate::DropAfter,
        ("part", 2) => Fate::DropBefore,
        _ => Fate::Answer,
    };
    let (outcome, run) = drive(&mut upload, &mut server, &data, fate, None);
    outcome.unwrap().unwrap();
    assert_eq!(
        run.sent_parts.len(),
        5,
        "two parts sent twice: {:?}",
        run.sent_parts
    );
    assert_eq!(object(&server), data);
}

#[test]
fn s11_complete_naming_another_crc32c_is_an_integrity_error() {
    let data = source(2 * PART as usize);
    let mut server = S3Sim::new();
    server.lie = Some(S3Lie::ObjectCrc);
    let mut upload = S3Upload::new(config(data.len() as u64)).unwrap();
    let (outcome, _) = drive(&mut upload, &mut server, &data, answer_all, None);
    assert!(matches!(
        outcome.unwrap(),
        Err(Error::Integrity(IntegrityError::Crc32c { .. }))
    ));
}

#[test]
fn s7_a_complete_answer_without_crc32c_is_proven_by_head() {
    let data = source(2 * PART as usize + 1);
    let mut server = S3Sim::new();
    server.complete_without_crc = true;
    let mut upload = S3Upload::new(config(data.len() as u64)).unwrap();
    let (outcome, run) = drive(&mut upload, &mut server, &data, answer_all, None);
    let done = outcome.unwrap().unwrap();
    assert_eq!(done.proof, Proof::Head);
    assert_eq!(run.sends.last().unwrap().0, "head");
}

#[test]
fn s11_a_composite_crc32c_on_head_is_checked_against_the_part_crcs() {
    let data = source(3 * PART as usize + 9);
    let mut server = S3Sim::new();
    server.complete_without_crc = true;
    server.composite = true;
    let mut upload = S3Upload::new(config(data.len() as u64)).unwrap();
    let (outcome, _) = drive(&mut upload, &mut server, &data, answer_all, None);
    let done = outcome.unwrap().unwrap();
    assert_eq!(done.proof, Proof::Head);
    assert_eq!(done.crc32c, crc32c::crc32c(&data));
}

#[test]
fn s7_no_crc32c_anywhere_is_unproven() {
    let data = source(2 * PART as usize);
    let mut server = S3Sim::new();
    server.lie = Some(S3Lie::NoChecksum);
    let mut upload = S3Upload::new(config(data.len() as u64)).unwrap();
    let (outcome, _) = drive(&mut upload, &mut server, &data, answer_all, None);
    assert!(matches!(
        outcome.unwrap(),
        Err(Error::Integrity(IntegrityError::Unproven { .. }))
    ));
}

#[test]
fn s7_a_200_whose_body_is_an_error_is_an_error_and_internal_error_is_retried() {
    let data = source(2 * PART as usize);
    let mut server = S3Sim::new();
    let mut upload = S3Upload::new(config(data.len() as u64)).unwrap();
    // The first Complete is answered 200 + <Error>InternalError (S3 has not joined the
    // parts): retried; the second succeeds.
    let fate = |kind, n| match (kind, n) {
        ("complete", 1) => Fate::Status(200, "InternalError"),
        _ => Fate::Answer,
    };
    let (outcome, run) = drive(&mut upload, &mut server, &data, fate, None);
    outcome.unwrap().unwrap();
    assert_eq!(run.sends.iter().filter(|s| s.0 == "complete").count(), 2);

    // A final code inside a 200 ends the upload: never success.
    let mut server = S3Sim::new();
    let mut upload = S3Upload::new(config(data.len() as u64)).unwrap();
    let fate = |kind, _| match kind {
        "complete" => Fate::ErrorIn200("AccessDenied"),
        _ => Fate::Answer,
    };
    let (outcome, _) = drive(&mut upload, &mut server, &data, fate, None);
    assert!(matches!(outcome.unwrap(), Err(Error::Server { .. })));
}

#[test]
fn s7_a_lost_complete_answer_met_by_no_such_upload_is_resolved_by_head() {
    let data = source(3 * PART as usize + 7);
    let mut server = S3Sim::new();
    server.repeat_complete_gone = true;
    let mut upload = S3Upload::new(config(data.len() as u64)).unwrap();
    let fate = |kind, n| match (kind, n) {
        ("complete", 1) => Fate::DropAfter,
        _ => Fate::Answer,
    };
    let (outcome, run) = drive(&mut upload, &mut server, &data, fate, None);
    let done = outcome.unwrap().unwrap();
    assert_eq!(done.proof, Proof::Head);
    let kinds: Vec<&str> = run.sends.iter().map(|s| s.0).collect();
    assert_eq!(kinds[kinds.len() - 3..], ["complete", "complete", "head"]);
}

#[test]
fn s7_no_such_upload_and_no_object_is_session_gone() {
    let data = source(PART as usize);
    let mut server = S3Sim::new();
    let mut upload = S3Upload::new(config(data.len() as u64)).unwrap();
    let fate = |kind, _| match kind {
        "complete" => Fate::Status(404, "NoSuchUpload"),
        _ => Fate::Answer,
    };
    let (outcome, _) = drive(&mut upload, &mut server, &data, fate, None);
    assert!(matches!(outcome.unwrap(), Err(Error::SessionGone { .. })));
}

#[test]
fn s10_slowdown_is_retried_with_backoff_and_fewer_parts_in_flight() {
    let data = source(8 * PART as usize);
    let mut server = S3Sim::new();
    let mut c = config(data.len() as u64);
    c.max_in_flight = 4;
    let mut upload = S3Upload::new(c).unwrap();
    let fate = |kind, n| match (kind, n) {
        ("part", 1 | 2) => Fate::Status(503, "SlowDown"),
        _ => Fate::Answer,
    };
    let (outcome, _) = drive(&mut upload, &mut server, &data, fate, None);
    outcome.unwrap().unwrap();
    assert_eq!(upload.stats().retries, 2);
    assert_eq!(object(&server), data);
}

#[test]
fn s9_a_final_error_ends_the_upload_with_the_code() {
    let data = source(PART as usize);
    let mut server = S3Sim::new();
    let mut upload = S3Upload::new(config(data.len() as u64)).unwrap();
    let fate = |kind, _| match kind {
        "part" => Fate::Status(403, "AccessDenied"),
        _ => Fate::Answer,
    };
    let (outcome, _) = drive(&mut upload, &mut server, &data, fate, None);
    match outcome.unwrap() {
        Err(Error::Server { status, message }) => {
            assert_eq!(status, 403);
            assert!(message.unwrap().starts_with("AccessDenied"));
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn s9_no_such_upload_on_a_part_is_session_gone() {
    let data = source(PART as usize);
    let mut server = S3Sim::new();
    let mut upload = S3Upload::new(config(data.len() as u64)).unwrap();
    let fate = |kind, _| match kind {
        "part" => Fate::Status(404, "NoSuchUpload"),
        _ => Fate::Answer,
    };
    let (outcome, _) = drive(&mut upload, &mut server, &data, fate, None);
    assert!(matches!(outcome.unwrap(), Err(Error::SessionGone { .. })));
}

#[test]
fn s9_bad_digest_resends_the_part() {
    let data = source(2 * PART as usize);
    let mut server = S3Sim::new();
    let mut upload = S3Upload::new(config(data.len() as u64)).unwrap();
    let fate = |kind, n| match (kind, n) {
        ("part", 1) => Fate::Status(400, "BadDigest"),
        _ => Fate::Answer,
    };
    let (outcome, run) = drive(&mut upload, &mut server, &data, fate, None);
    outcome.unwrap().unwrap();
    assert_eq!(run.sent_parts.len(), 3);
}

/// Runs an upload until `sends` requests went out, then "crashes": the state saved is the
/// one the upload gives then, or `older` parts fewer (a ledger behind the server).
fn interrupted(
    server: &mut S3Sim,
    data: &[u8],
    sends: usize,
    drop_ledger_parts: usize,
) -> S3ResumeState {
    let mut upload = S3Upload::new(config(data.len() as u64)).unwrap();
    let (outcome, _) = drive(&mut upload, server, data, answer_all, Some(sends));
    assert!(outcome.is_none());
    let mut state = upload.resume_state().expect("a state once created");
    for _ in 0..drop_ledger_parts {
        state.parts.pop();
    }
    state
}

#[test]
fn s5_resume_lists_every_page_and_sends_only_parts_not_held() {
    let data = source(7 * PART as usize + 5);
    let mut server = S3Sim::new();
    server.page_size = 2;
    // Create + 6 parts out, 5 answered (newest first, so the ledger has a gap or two).
    let state = interrupted(&mut server, &data, 7, 0);
    let id = state.upload_id.clone();
    let held: Vec<u32> = server.uploads[&id].keys().copied().collect();
    assert!(!held.is_empty());
    let mut upload = S3Upload::resume(config(data.len() as u64), state).unwrap();
    let (outcome, run) = drive(&mut upload, &mut server, &data, answer_all, None);
    let done = outcome.unwrap().unwrap();
    assert_eq!(object(&server), data);
    assert_eq!(done.crc32c, crc32c::crc32c(&data));
    let lists = run.sends.iter().filter(|s| s.0 == "list").count();
    assert!(lists >= 2, "every page is read ({lists})");
    for part in &run.sent_parts {
        assert!(!held.contains(part), "part {part} was held and sent again");
    }
    assert_eq!(run.sent_parts.len(), 8 - held.len());
    assert!(server.violations.is_empty(), "{:?}", server.violations);
}

#[test]
fn s5_a_ledger_behind_the_server_keeps_the_parts_whose_crc32c_matches() {
    let data = source(6 * PART as usize);
    let mut server = S3Sim::new();
    server.page_size = 1;
    let state = interrupted(&mut server, &data, 6, 3);
    let id = state.upload_id.clone();
    let held = server.uploads[&id].len();
    let mut upload = S3Upload::resume(config(data.len() as u64), state).unwrap();
    let (outcome, run) = drive(&mut upload, &mut server, &data, answer_all, None);
    outcome.unwrap().unwrap();
    assert_eq!(run.sent_parts.len(), 6 - held, "{:?}", run.sent_parts);
    assert_eq!(object(&server), data);
}

#[test]
fn s5_a_part_listed_with_another_size_is_sent_again() {
    let data = source(3 * PART as usize);
    let mut server = S3Sim::new();
    let state = interrupted(&mut server, &data, 4, 0);
    let held = server.uploads[&state.upload_id].len();
    server.lie = Some(S3Lie::ListedSize);
    let mut upload = S3Upload::resume(config(data.len() as u64), state).unwrap();
    let (outcome, run) = drive(&mut upload, &mut server, &data, answer_all, None);
    outcome.unwrap().unwrap();
    assert_eq!(run.sent_parts.len(), 3 - held + 1);
    assert_eq!(object(&server), data);
}

#[test]
fn s5_s7_a_resumed_upload_whose_complete_succeeded_is_resolved_by_head() {
    let data = source(2 * PART as usize);
    let mut server = S3Sim::new();
    // Everything up to Complete, whose answer is lost; then the process dies.
    let fate = |kind, _| match kind {
        "complete" => Fate::DropAfter,
        _ => Fate::Answer,
    };
    let mut c = config(data.len() as u64);
    c.retry = RetryPolicy::never();
    let mut upload_once = S3Upload::new(c).unwrap();
    let (outcome, _) = drive(&mut upload_once, &mut server, &data, fate, None);
    assert!(outcome.unwrap().is_err());
    let state = upload_once.resume_state().unwrap();
    assert!(state.completing);
    let mut resumed = S3Upload::resume(config(data.len() as u64), state).unwrap();
    let (outcome, run) = drive(&mut resumed, &mut server, &data, answer_all, None);
    assert_eq!(outcome.unwrap().unwrap().proof, Proof::Head);
    assert_eq!(
        run.sends.iter().map(|s| s.0).collect::<Vec<_>>(),
        ["list", "head"]
    );
}

#[test]
fn s5_a_resume_state_for_another_object_or_file_is_refused() {
    let data = source(2 * PART as usize);
    let mut server = S3Sim::new();
    let state = interrupted(&mut server, &data, 2, 0);
    let mut other_key = config(data.len() as u64);
    other_key.key = "elsewhere".into();
    assert!(matches!(
        S3Upload::resume(other_key, state.clone()),
        Err(UsageError::StateMismatch(_))
    ));
    assert!(matches!(
        S3Upload::resume(config(data.len() as u64 + 1), state.clone()),
        Err(UsageError::StateMismatch(_))
    ));
    let mut bad = state.clone();
    bad.parts = vec![LedgerPart {
        part_number: 9,
        size: PART,
        etag: "\"x\"".into(),
        crc32c: 0,
    }];
    assert!(matches!(
        S3Upload::resume(config(data.len() as u64), bad),
        Err(UsageError::StateMismatch(_))
    ));
}

#[test]
fn s8_cancel_aborts_the_upload_once_nothing_is_in_flight() {
    let data = source(4 * PART as usize);
    let mut server = S3Sim::new();
    let state = interrupted(&mut server, &data, 3, 0);
    let id = state.upload_id.clone();
    let mut upload = S3Upload::resume(config(data.len() as u64), state).unwrap();
    upload.cancel();
    let (outcome, run) = drive(&mut upload, &mut server, &data, answer_all, None);
    assert_eq!(outcome.unwrap().unwrap_err(), Error::Cancelled);
    assert_eq!(run.sends.iter().map(|s| s.0).collect::<Vec<_>>(), ["abort"]);
    assert!(!server.uploads.contains_key(&id));
}

#[test]
fn s8_abort_of_an_upload_already_gone_is_done() {
    let data = source(PART as usize);
    let mut server = S3Sim::new();
    let state = interrupted(&mut server, &data, 1, 0);
    server.uploads.clear();
    let mut upload = S3Upload::resume(config(data.len() as u64), state).unwrap();
    upload.cancel();
    let (outcome, _) = drive(&mut upload, &mut server, &data, answer_all, None);
    assert_eq!(outcome.unwrap().unwrap_err(), Error::Cancelled);
}

#[test]
fn s12_the_core_sends_no_credentials_and_keeps_caller_headers_secret() {
    let mut c = config(10);
    c.headers
        .insert("x-amz-security-token", "SECRET-TOKEN".parse().unwrap());
    let mut upload = S3Upload::new(c).unwrap();
    let Action::Send(create) = upload.poll_action(Instant::now()) else {
        panic!()
    };
    assert!(!create.request.headers().contains_key("authorization"));
    assert!(create.request.headers()["x-amz-security-token"].is_sensitive());
    assert!(!format!("{create:?}").contains("SECRET-TOKEN"));
    assert!(!format!("{upload:?}").contains("SECRET-TOKEN"));
}
