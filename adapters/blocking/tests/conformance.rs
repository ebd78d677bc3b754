//! The blocking driver over real sockets (ureq) against the conformance server, with every
//! GCS fault kind the server knows: each upload ends byte-identical on the server, or in the
//! typed error the fault calls for. Waits are skipped by a clock that only pretends to sleep.

use std::io::Cursor;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use http::StatusCode;
use resumable_blocking::{Clock, DriveError, Driver, SeekableSource, UreqTransport};
use resumable_core::gcs::{GcsConfig, GcsUpload, Start};
use resumable_core::{Error, ProtocolViolation, RetryCause};
use resumable_server::{Server, ServerConfig};

const CHUNK: u64 = 256 * 1024;

/// A clock whose sleeps move time forward without waiting.
#[derive(Clone)]
struct SkipClock(Arc<Mutex<Instant>>);

impl SkipClock {
    fn new() -> Self {
        SkipClock(Arc::new(Mutex::new(Instant::now())))
    }
}

impl Clock for SkipClock {
    fn now(&mut self) -> Instant {
        let mut t = self.0.lock().unwrap();
        // Real time still passes (requests take some), so never fall behind it.
        *t = (*t).max(Instant::now());
        *t
    }

    fn sleep_until(&mut self, deadline: Instant) {
        let mut t = self.0.lock().unwrap();
        *t = (*t).max(deadline);
    }
}

fn data(len: usize, seed: u64) -> Vec<u8> {
    (0..len as u64)
        .map(|i| (i.wrapping_mul(2654435761) >> 7) as u8 ^ seed as u8)
        .collect()
}

fn encoded(script: &str) -> String {
    script
        .bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

/// Uploads 4 chunks + 100 bytes with `script` attached to the session; returns the outcome and
/// what the server holds for the object.
fn upload(
    server: &Server,
    name: &str,
    script: &str,
    max_attempts: u32,
) -> (Result<u64, DriveError>, Vec<u8>, Option<Vec<u8>>) {
    let bytes = data(4 * CHUNK as usize + 100, name.len() as u64);
    let url = format!(
        "{}&session-faults={}",
        server.gcs_xml_url("b", name),
        encoded(script)
    );
    let mut config = GcsConfig::new(Some(bytes.len() as u64));
    config.chunk_size = CHUNK;
    config.retry.max_attempts = max_attempts;
    let start = Start::Xml {
        url: url.parse().unwrap(),
        content_type: http::HeaderValue::from_static("application/octet-stream"),
    };
    let mut upload = GcsUpload::new(start, config).unwrap();
    let mut options = resumable_blocking::UreqOptions::default();
    options.io_timeout = Some(Duration::from_secs(5));
    let result = Driver::new()
        .clock(SkipClock::new())
        .drive(
            &mut upload,
            &mut SeekableSource::new(Cursor::new(bytes.clone())),
            &mut UreqTransport::with_options(options),
        )
        .map(|done| done.size);
    let stored = server.object("b", name);
    (result, bytes, stored)
}

// G5, G8: every fault a real network or server can recover from ends with the exact bytes.
#[test]
fn recoverable_faults_end_byte_identical() {
    let server = Server::start(ServerConfig::default()).unwrap();
    let cases = [
        ("drop", "gcs.chunk#2=drop-after:100000"),
        ("drop-whole", "gcs.chunk#2=drop-after:10MiB"),
        (
            "persist",
            "gcs.chunk#1=persist:100000; gcs.chunk#3=persist:0",
        ),
        ("408", "gcs.chunk#2=status:408"),
        ("429", "gcs.chunk#2=status:429x2"),
        ("500", "gcs.chunk#1=status:500"),
        ("503-after", "gcs.chunk#2=status:503,retry-after:3"),
        ("503-date", "gcs.chunk#2=status:503,retry-after-date:2"),
        (
            "query-503",
            "gcs.chunk#2=drop-after:1000; gcs.query#1=status:503",
        ),
        ("stall", "gcs.chunk#2=stall:200ms"),
        ("truncate", "gcs.chunk#3=truncate"),
        ("no-range-first", "gcs.chunk#1=no-range,persist:0"),
    ];
    for (name, script) in cases {
        let (result, bytes, stored) = upload(&server, name, script, 5);
        assert_eq!(
            result.as_ref().ok(),
            Some(&(bytes.len() as u64)),
            "{name}: {result:?}"
        );
        assert_eq!(stored.as_deref(), Some(&bytes[..]), "{name}: stored bytes");
        assert!(
            fault_applied(&server, name),
            "{name}: the fault never fired"
        );
    }
}

/// Whether the server applied a fault to a request of `object`'s sessions (or its start).
fn fault_applied(server: &Server, object: &str) -> bool {
    let ids: Vec<String> = server
        .sessions()
        .into_iter()
        .filter(|s| s.object == object)
        .map(|s| s.upload_id)
        .collect();
    server.request_log().iter().any(|e| {
        !e.faults.is_empty()
            && (e.upload_id.as_ref().is_some_and(|id| ids.contains(id))
                || (e.method == "POST" && e.path.ends_with(object)))
    })
}

// G8: a failed start is retried as a start (a session script cannot reach the start that
// creates the session, so this one is a server script).
#[test]
fn a_failed_start_is_retried() {
    let config = ServerConfig {
        faults: resumable_server::FaultScript::parse("gcs.start#1=status:503,retry-after:1")
            .unwrap(),
        ..ServerConfig::default()
    };
    let server = Server::start(config).unwrap();
    let (result, bytes, stored) = upload(&server, "start-503", "", 5);
    assert_eq!(result.ok(), Some(bytes.len() as u64));
    assert_eq!(stored.as_deref(), Some(&bytes[..]));
    let starts: Vec<_> = server
        .request_log()
        .into_iter()
        .filter(|e| e.method == "POST")
        .map(|e| e.status)
        .collect();
    assert_eq!(starts, [Some(503), Some(201)]);
}

// G5, G9, G8: faults that must end the upload end it with the matching typed error and never
// with success.
#[test]
fn fatal_faults_end_in_the_typed_error() {
    let server = Server::start(ServerConfig::default()).unwrap();
    let (result, _, stored) = upload(&server, "expire", "gcs.chunk#2=expire", 5);
    assert!(
        matches!(result, Err(DriveError::Upload(Error::SessionGone { .. }))),
        "expire: {result:?}"
    );
    assert_eq!(stored, None);

    let (result, _, _) = upload(&server, "lie", "gcs.chunk#2=lie", 5);
    assert!(
        matches!(
            result,
            Err(DriveError::Upload(Error::Protocol(
                ProtocolViolation::RangeBeyondSent { .. }
            )))
        ),
        "lie: {result:?}"
    );

    let (result, _, _) = upload(&server, "range-start", "gcs.chunk#2=range-start:5", 5);
    assert!(
        matches!(
            result,
            Err(DriveError::Upload(Error::Protocol(
                ProtocolViolation::RangeNotFromZero { .. }
            )))
        ),
        "range-start: {result:?}"
    );

    // After 256 KiB were acknowledged, a 308 without Range says 0: the server lost data.
    let (result, _, _) = upload(&server, "no-range", "gcs.chunk#2=no-range", 5);
    assert!(
        matches!(
            result,
            Err(DriveError::Upload(Error::Protocol(
                ProtocolViolation::PersistedWentBackwards { .. }
            )))
        ),
        "no-range: {result:?}"
    );

    let (result, _, _) = upload(&server, "400", "gcs.chunk#2=status:400", 5);
    assert!(
        matches!(
            result,
            Err(DriveError::Upload(Error::Server {
                status: StatusCode::BAD_REQUEST,
                ..
            }))
        ),
        "400: {result:?}"
    );

    let (result, _, stored) = upload(&server, "endless-503", "gcs.chunk#2=status:503x100", 2);
    assert!(
        matches!(
            result,
            Err(DriveError::Upload(Error::RetriesExhausted {
                attempts: 3,
                last: RetryCause::Status(StatusCode::SERVICE_UNAVAILABLE),
                ..
            }))
        ),
        "endless 503: {result:?}"
    );
    assert_eq!(stored, None);
}
