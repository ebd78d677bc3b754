//! What the fuzz targets in `fuzz/` found, replayed as plain scripted tests (rule ids from
//! `docs/protocols`). Each was a core bug, fixed since.

use std::time::Instant;

use bytes::Bytes;
use resumable_core::gcs::{GcsConfig, GcsUpload, Start};
use resumable_core::{Action, Error, ProtocolViolation, SessionUri, Upload};

fn response(status: u16, headers: &[(&str, &str)]) -> http::Response<Bytes> {
    let mut response = http::Response::builder().status(status);
    for (name, value) in headers {
        response = response.header(*name, *value);
    }
    response.body(Bytes::new()).expect("valid response")
}

/// Found by `gcs_script` (its input, decoded: a bare session URI of unknown size, a 75,712-byte
/// source, 512 KiB chunks; the status query answered `308` + `Range: bytes=0-262143`).
///
/// G3, G5: a bare session has no history, so the first `Range` cannot be checked against what
/// was sent, and the core believes the server holds 262,144 bytes. Reading the source then
/// shows it has only 75,712: the claim is beyond anything that can have been sent, which G5
/// makes a protocol violation. The core goes on instead: `persisted()` stays past the total,
/// and it sends `Content-Range: bytes */75712` with a body range of 262144..262144, past the
/// source (the server decides what that means; the upload then ends in
/// `PrematureCompletion`, or in `RangeBeyondSent` only if the server repeats its claim). Its
/// resume state cannot be resumed either (`StateMismatch`: sent past the total).
#[test]
fn gcs_bare_session_claim_beyond_the_source() {
    let mut config = GcsConfig::new(None);
    config.chunk_size = 512 * 1024;
    let session = SessionUri::parse("https://storage.example/upload?upload_id=s").expect("uri");
    let mut upload = GcsUpload::new(Start::Session(session), config).expect("valid");
    let source = vec![7u8; 75_712];
    let total = source.len() as u64;
    let now = Instant::now();
    let mut answered = false;
    let outcome = loop {
        match upload.poll_action(now) {
            Action::Read(read) => {
                let start = (read.range.start as usize).min(source.len());
                let end = (read.range.end as usize).min(source.len()).max(start);
                upload
                    .handle_read(now, read.range.start, &source[start..end])
                    .expect("a read as asked");
            }
            Action::Send(send) => {
                // Once the source's end is known, no request may name bytes past it, and the
                // count of bytes held may not pass it (G5).
                if upload.total().is_some() {
                    assert!(
                        upload.persisted() <= total,
                        "persisted() = {} past the {total}-byte source",
                        upload.persisted()
                    );
                    assert!(
                        send.body.source.end <= total,
                        "a request for {:?} past the {total}-byte source",
                        send.body.source
                    );
                }
                let answer = if answered {
                    response(200, &[])
                } else {
                    response(308, &[("range", "bytes=0-262143")])
                };
                answered = true;
                upload
                    .handle_response(now, send.id, answer)
                    .expect("in flight");
            }
            Action::Wait(_) | Action::Idle => panic!("no failure was reported"),
            Action::Done(outcome) => break outcome,
        }
    };
    assert!(
        matches!(
            outcome,
            Err(Error::Protocol(ProtocolViolation::RangeBeyondSent {
                claimed: 262_144,
                ..
            }))
        ),
        "{outcome:?}"
    );
}
