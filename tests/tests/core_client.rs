//! End to end: the sans-IO client of `resumable-core` (driven by a minimal loop over raw
//! sockets) against this server, with every fault kind. The object must be byte-identical,
//! or the error the expected typed one; the bytes the server received prove nothing the
//! server acknowledged was sent again.

mod common;

use std::time::{Duration, Instant};

use common::*;
use resumable_core::checksum::Checksums;
use resumable_core::gcs::{GcsCompletion, GcsConfig, GcsUpload, Start};
use resumable_core::{Action, Error, ProtocolViolation, RetryPolicy, Upload};
use resumable_server::{FaultScript, Server, ServerConfig};

fn fast_retries() -> RetryPolicy {
    let mut p = RetryPolicy::default();
    p.initial_backoff = Duration::from_millis(5);
    p.max_backoff = Duration::from_millis(20);
    p.jitter = Duration::ZERO;
    p.max_retry_after = Duration::from_millis(20);
    p
}

fn config(total: Option<u64>) -> GcsConfig {
    let mut c = GcsConfig::new(total);
    c.chunk_size = KIB256 as u64;
    c.retry = fast_retries();
    c.checksums = Checksums {
        crc32c: true,
        md5: true,
    };
    c
}

/// Runs an upload to completion (bounded by the core's retry budget).
fn drive(mut upload: GcsUpload, source: &[u8]) -> Result<GcsCompletion, Error> {
    core_drive(&mut upload, source)
}

fn json_start(server: &Server, name: &str) -> Start {
    Start::Json {
        url: server.gcs_json_url("b", name).parse().unwrap(),
        content_type: http::HeaderValue::from_static("application/octet-stream"),
        metadata: None,
    }
}

fn scripted(spec: &str) -> Server {
    server_with(ServerConfig {
        faults: FaultScript::parse(spec).unwrap(),
        ..ServerConfig::default()
    })
}

const SIZE: usize = 4 * KIB256 + 7;

#[test]
fn clean_uploads_xml_json_and_unknown_size() {
    // G1, G2, G4–G7
    let server = server();
    let src = data(SIZE);
    let xml = Start::Xml {
        url: server.gcs_xml_url("b", "xml").parse().unwrap(),
        content_type: http::HeaderValue::from_static("text/plain"),
    };
    let done = drive(
        GcsUpload::new(xml, config(Some(SIZE as u64))).unwrap(),
        &src,
    )
    .unwrap();
    assert_eq!(done.size, SIZE as u64);
    assert!(
        done.verified.crc32c && done.verified.md5,
        "{:?}",
        done.verified
    );
    assert_eq!(server.object("b", "xml").unwrap(), src);

    let done = drive(
        GcsUpload::new(json_start(&server, "json"), config(Some(SIZE as u64))).unwrap(),
        &src,
    )
    .unwrap();
    assert!(done.verified.size && done.verified.crc32c && done.verified.md5);
    assert_eq!(server.object("b", "json").unwrap(), src);

    let exact = data(2 * KIB256);
    drive(
        GcsUpload::new(json_start(&server, "unknown"), config(None)).unwrap(),
        &exact,
    )
    .unwrap();
    assert_eq!(server.object("b", "unknown").unwrap(), exact);
    // Nothing was sent twice.
    assert_eq!(
        server.body_bytes_received(),
        2 * SIZE as u64 + exact.len() as u64
    );
}

#[test]
fn every_recoverable_fault_ends_byte_identical() {
    // G5, G8: each fault, and exactly how many bytes had to be sent again.
    let src = data(SIZE);
    let cases: &[(&str, u64)] = &[
        ("gcs.chunk#2=drop-after:100000", 100_000),
        ("gcs.chunk#2=drop-after:10m", 0),
        ("gcs.chunk#2=persist:0", KIB256 as u64),
        ("gcs.chunk#2=status:503x2,retry-after:0", KIB256 as u64),
        ("gcs.chunk#1=status:429", KIB256 as u64),
        (
            "gcs.chunk#3=status:408; gcs.query#1=status:500",
            KIB256 as u64,
        ),
        ("gcs.chunk#3=truncate", 0),
        ("gcs.chunk#2=stall:50ms", 0),
        ("gcs.start#1=status:503", 0),
        ("gcs.chunk#5=drop-after:3", 3),
    ];
    for (spec, resent) in cases {
        let server = scripted(spec);
        let upload = GcsUpload::new(json_start(&server, "o"), config(Some(SIZE as u64))).unwrap();
        let done = drive(upload, &src).unwrap_or_else(|e| panic!("{spec}: {e}"));
        assert!(done.verified.crc32c && done.verified.md5, "{spec}");
        assert_eq!(server.object("b", "o").unwrap(), src, "{spec}");
        assert_eq!(
            server.body_bytes_received(),
            SIZE as u64 + resent,
            "{spec}: bytes received"
        );
    }
}

#[test]
fn no_308_mode_works_end_to_end() {
    // G11
    let server = server();
    let src = data(SIZE);
    let mut c = config(Some(SIZE as u64));
    c.no_308 = true;
    drive(GcsUpload::new(json_start(&server, "o"), c).unwrap(), &src).unwrap();
    assert_eq!(server.object("b", "o").unwrap(), src);
    let overridden = server
        .request_log()
        .iter()
        .filter(|e| e.status == Some(200) && e.kind == resumable_server::RequestKind::GcsChunk)
        .count();
    assert_eq!(overridden, 5);
}

#[test]
fn unrecoverable_faults_end_with_the_typed_error() {
    // G5, G9: a lying or gone server is a typed error, never silent corruption.
    let src = data(SIZE);
    let run = |spec: &str| {
        let server = scripted(spec);
        let upload = GcsUpload::new(json_start(&server, "o"), config(Some(SIZE as u64))).unwrap();
        let outcome = drive(upload, &src);
        assert_eq!(server.object("b", "o"), None, "{spec}");
        outcome.unwrap_err()
    };
    assert!(matches!(
        run("gcs.chunk#2=expire"),
        Error::SessionGone { .. }
    ));
    assert!(matches!(
        run("gcs.chunk#1=lie"),
        Error::Protocol(ProtocolViolation::RangeBeyondSent { .. })
    ));
    assert!(matches!(
        run("gcs.chunk#1=range-start:5"),
        Error::Protocol(ProtocolViolation::RangeNotFromZero { start: 5 })
    ));
    assert!(matches!(
        run("gcs.chunk#2=no-range"),
        Error::Protocol(ProtocolViolation::PersistedWentBackwards { .. })
    ));
    assert!(matches!(
        run("gcs.chunk#2=status:400"),
        Error::Server { .. }
    ));
    assert!(matches!(
        run("gcs.put=status:503"),
        Error::RetriesExhausted { .. }
    ));
}

#[test]
fn cancel_deletes_the_session() {
    // G10
    let server = server();
    let src = data(SIZE);
    let mut upload = GcsUpload::new(json_start(&server, "o"), config(Some(SIZE as u64))).unwrap();
    // Run until the first chunk is acknowledged, then cancel.
    while upload.persisted() == 0 {
        match upload.poll_action(Instant::now()) {
            Action::Read(read) => {
                let (a, b) = (read.range.start as usize, read.range.end as usize);
                upload
                    .handle_read(Instant::now(), read.range.start, &src[a..b.min(SIZE)])
                    .unwrap();
            }
            Action::Send(send) => {
                let r = core_send(&send, &src).unwrap();
                upload.handle_response(Instant::now(), send.id, r).unwrap();
            }
            other => panic!("{other:?}"),
        }
    }
    let session = upload.session().unwrap().expose().to_string();
    upload.cancel();
    assert!(matches!(drive(upload, &src), Err(Error::Cancelled)));
    assert!(server.session(&session).unwrap().gone);
}

#[test]
fn a_crashed_client_resumes_from_the_persisted_offset() {
    // G3, G5: a client killed mid-chunk; a new process resumes from the session URI (and
    // from a saved state), sending only what the server does not hold.
    let src = data(SIZE);
    for saved_state in [false, true] {
        let server = server();
        let mut upload =
            GcsUpload::new(json_start(&server, "o"), config(Some(SIZE as u64))).unwrap();
        // Upload two chunks, then start the third and die after 1000 bytes of it.
        let mut state = None;
        loop {
            state = upload.resume_state().or(state);
            match upload.poll_action(Instant::now()) {
                Action::Read(read) => {
                    let (a, b) = (read.range.start as usize, read.range.end as usize);
                    upload
                        .handle_read(Instant::now(), read.range.start, &src[a..b.min(SIZE)])
                        .unwrap();
                }
                Action::Send(send) if send.body.source.start == 2 * KIB256 as u64 => {
                    let uri = send.request.uri().to_string();
                    let mut conn = Conn::open(server.addr());
                    let cr = send.request.headers()["content-range"].to_str().unwrap();
                    let head = format!(
                        "PUT {} HTTP/1.1\r\nHost: x\r\nContent-Range: {cr}\r\nContent-Length: {}\r\n\r\n",
                        target(&uri),
                        KIB256
                    );
                    use std::io::Write;
                    conn.stream.write_all(head.as_bytes()).unwrap();
                    conn.stream
                        .write_all(&src[2 * KIB256..2 * KIB256 + 1000])
                        .unwrap();
                    break;
                }
                Action::Send(send) => {
                    let r = core_send(&send, &src).unwrap();
                    upload.handle_response(Instant::now(), send.id, r).unwrap();
                }
                other => panic!("{other:?}"),
            }
        }
        let uri = upload.session().unwrap().clone();
        drop(upload);
        // Wait for the server to notice the disconnect.
        let deadline = Instant::now() + Duration::from_secs(5);
        while server.request_log().len() < 4 && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(5));
        }
        assert_eq!(
            server.session(&uri.expose().to_string()).unwrap().stored,
            2 * KIB256 as u64
        );
        let start = if saved_state {
            Start::Resume(state.expect("a saved state"))
        } else {
            Start::Session(uri)
        };
        let done = drive(
            GcsUpload::new(start, config(Some(SIZE as u64))).unwrap(),
            &src,
        )
        .unwrap();
        assert_eq!(done.size, SIZE as u64);
        assert_eq!(server.object("b", "o").unwrap(), src);
        // Received: the two chunks, 1000 bytes of the third, then everything from 512 KiB.
        assert_eq!(
            server.body_bytes_received(),
            SIZE as u64 + 1000,
            "saved state: {saved_state}"
        );
    }
}
