//! What the integration tests share: the scenario suite as data (run on every executor
//! against the conformance server), the runner, and runtime-neutral helpers. No driver code:
//! every test drives through `resumable_async`.

#![allow(dead_code)]

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::StreamExt as _;
use http_body_util::BodyExt as _;
use resumable_async::{
    BodyProgress as Progress, DriveError, Driver, Event, Exchange, RequestBody, SeekableSource,
    SourceError, StreamSource, Timer, Transport,
};
use resumable_core::checksum::Checksums;
use resumable_core::gcs::{GcsCompletion, GcsConfig, GcsUpload};
use resumable_core::{Error, ProtocolViolation, RetryPolicy, TransportFailure};
use resumable_core::{Stats, Upload as _};
use resumable_server::{LogEntry, RequestKind, Server, ServerConfig};

pub const KIB: u64 = 1024;
pub const CHUNK: u64 = 256 * KIB;
pub const BUCKET: &str = "bucket";
pub const OBJECT: &str = "ids.txt";

pub fn data(len: u64) -> Vec<u8> {
    (0..len).map(|i| (i.wrapping_mul(31) % 253) as u8).collect()
}

/// G8 with waits short enough for tests: 10 ms doubling, no jitter.
pub fn fast_retries() -> RetryPolicy {
    let mut policy = RetryPolicy::default();
    policy.initial_backoff = Duration::from_millis(10);
    policy.max_backoff = Duration::from_millis(80);
    policy.jitter = Duration::ZERO;
    policy.max_retry_after = Duration::from_millis(50);
    policy
}

pub fn config(total: Option<u64>) -> GcsConfig {
    let mut config = GcsConfig::new(total);
    config.chunk_size = CHUNK;
    config.retry = fast_retries();
    config
}

/// The start URL of a session carrying the session fault script `faults` (see the
/// conformance server's fault grammar).
pub fn start_url(server: &Server, faults: &str) -> http::Uri {
    let mut url = server.gcs_xml_url(BUCKET, OBJECT);
    if !faults.is_empty() {
        url.push_str("&session-faults=");
        for b in faults.bytes() {
            if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
                url.push(b as char);
            } else {
                url.push_str(&format!("%{b:02X}"));
            }
        }
    }
    url.parse().unwrap()
}

pub fn xml_start(url: http::Uri) -> resumable_core::gcs::Start {
    resumable_core::gcs::Start::Xml {
        url,
        content_type: http::HeaderValue::from_static("text/plain"),
    }
}

/// The clock and sleep of smol (`async-io`'s timer).
#[derive(Clone, Copy, Debug, Default)]
pub struct SmolTimer;

impl Timer for SmolTimer {
    fn now(&mut self) -> Instant {
        Instant::now()
    }

    async fn sleep_until(&mut self, deadline: Instant) {
        smol::Timer::at(deadline).await;
    }
}

/// A future of the connection task, for the runtime to spawn.
pub type ConnTask = Pin<Box<dyn Future<Output = ()> + Send>>;

/// One request over a fresh hyper 1 HTTP/1.1 connection on `io` (any runtime's socket),
/// response body capped at 1 MiB: a second, independent transport for the suite.
pub async fn hyper_exchange<IO>(
    io: IO,
    spawn: impl FnOnce(ConnTask),
    request: http::Request<RequestBody>,
) -> Exchange
where
    IO: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let (mut parts, body) = request.into_parts();
    let authority = parts
        .uri
        .authority()
        .cloned()
        .ok_or(TransportFailure::Other)?;
    parts.headers.insert(
        http::header::HOST,
        authority
            .as_str()
            .parse()
            .map_err(|_| TransportFailure::Other)?,
    );
    // Origin-form on the request line, as a client talking to the origin sends it.
    parts.uri = parts
        .uri
        .path_and_query()
        .map_or("/", |p| p.as_str())
        .parse()
        .map_err(|_| TransportFailure::Other)?;
    let (mut sender, connection) = hyper::client::conn::http1::handshake(io)
        .await
        .map_err(|_| TransportFailure::Connect)?;
    spawn(Box::pin(async move {
        let _ = connection.await;
    }));
    let response = sender
        .send_request(http::Request::from_parts(parts, body))
        .await
        .map_err(|e| {
            if e.is_timeout() {
                TransportFailure::Timeout
            } else if e.is_incomplete_message() || e.is_canceled() || e.is_closed() {
                TransportFailure::Reset
            } else {
                TransportFailure::Other
            }
        })?;
    let (parts, body) = response.into_parts();
    let limited = http_body_util::Limited::new(body, resumable_core::response::MAX_PARSED_BODY);
    let body = limited
        .collect()
        .await
        .map_err(|_| TransportFailure::TruncatedResponse)?
        .to_bytes();
    Ok(http::Response::from_parts(parts, body))
}

/// hyper over smol's sockets: the transport of the smol runs.
pub fn smol_hyper_transport() -> impl Transport {
    resumable_async::transport_fn(|request: http::Request<RequestBody>| async move {
        let authority = request
            .uri()
            .authority()
            .ok_or(TransportFailure::Other)?
            .to_string();
        let stream = smol::net::TcpStream::connect(authority)
            .await
            .map_err(|_| TransportFailure::Connect)?;
        let io = smol_hyper::rt::FuturesIo::new(stream);
        hyper_exchange(io, |task| smol::spawn(task).detach(), request).await
    })
}

/// How the scenario's source is given.
#[derive(Clone, Copy, Debug)]
pub enum Input {
    /// A seekable in-memory file, its size declared.
    Seekable,
    /// A seekable file shorter than the size declared to the upload.
    Claimed(u64),
    /// A stream of items of this many bytes, size unknown.
    Stream(usize),
}

/// One scenario of the suite: what the server does (a session fault script), what the
/// upload is given, and what must hold after the drive.
#[derive(Clone, Copy)]
pub struct Scenario {
    pub name: &'static str,
    /// The source's size.
    pub size: u64,
    pub input: Input,
    /// Compute CRC32C and MD5 (G7) rather than the default CRC32C.
    pub md5: bool,
    /// Checksums off (the core then reads nothing ahead of a request).
    pub no_checksums: bool,
    /// The session fault script.
    pub faults: &'static str,
    pub check: fn(&Run),
}

const BASE: Scenario = Scenario {
    name: "",
    size: 600 * KIB,
    input: Input::Seekable,
    md5: false,
    no_checksums: false,
    faults: "",
    check: |_| {},
};

/// An event, owned, as the hook saw it.
#[derive(Clone, Debug)]
pub enum Seen {
    Read(std::ops::Range<u64>),
    Sending { range: std::ops::Range<u64> },
    Progress(Progress),
    Response(u16),
    Failure(TransportFailure),
    Waiting { until: Instant, at: Instant },
}

/// What a scenario run produced.
pub struct Run {
    pub name: &'static str,
    pub source: Vec<u8>,
    pub result: Result<GcsCompletion, DriveError>,
    /// The object the server holds, if completed.
    pub stored: Option<Vec<u8>>,
    pub log: Vec<LogEntry>,
    pub stats: Stats,
    pub seen: Vec<Seen>,
    pub body_bytes_received: u64,
    pub peak_window: Option<u64>,
    pub elapsed: Duration,
}

impl Run {
    pub fn completed(&self) -> &GcsCompletion {
        match &self.result {
            Ok(c) => c,
            Err(e) => panic!("{}: expected success, got {e:?}", self.name),
        }
    }

    /// Success, and the server holds exactly the source.
    pub fn assert_exact(&self) {
        let completion = self.completed();
        assert_eq!(completion.size, self.source.len() as u64, "{}", self.name);
        assert!(
            self.stored.as_deref() == Some(&self.source[..]),
            "{}: the stored object differs from the source",
            self.name
        );
    }

    pub fn chunks(&self) -> Vec<&LogEntry> {
        self.log
            .iter()
            .filter(|e| e.kind == RequestKind::GcsChunk)
            .collect()
    }

    pub fn ranges(&self) -> Vec<(&str, Option<&str>)> {
        self.log
            .iter()
            .map(|e| (e.method.as_str(), e.content_range.as_deref()))
            .collect()
    }

    pub fn waits(&self) -> Vec<Duration> {
        self.seen
            .iter()
            .filter_map(|s| match s {
                Seen::Waiting { until, at } => Some(until.saturating_duration_since(*at)),
                _ => None,
            })
            .collect()
    }

    pub fn failures(&self) -> Vec<TransportFailure> {
        self.seen
            .iter()
            .filter_map(|s| match s {
                Seen::Failure(f) => Some(*f),
                _ => None,
            })
            .collect()
    }

    /// The log entry after the first one matching `pred`.
    pub fn after(&self, pred: impl Fn(&LogEntry) -> bool) -> &LogEntry {
        let i = self.log.iter().position(pred).expect("no such request");
        &self.log[i + 1]
    }
}

fn chunk_start(entry: &LogEntry) -> Option<u64> {
    let range = entry.content_range.as_deref()?.strip_prefix("bytes ")?;
    range.split_once('-')?.0.parse().ok()
}

/// The suite: the blocking driver's scenarios, each against the real conformance server.
pub fn scenarios() -> Vec<Scenario> {
    vec![
        // G1, G4, G7: start, then every chunk once, in order, Content-Length equal to the bytes
        // sent; the server ends up with exactly the source, and nothing was sent twice.
        Scenario {
            name: "full_upload",
            check: |run| {
                run.assert_exact();
                assert_eq!(
                    run.ranges(),
                    vec![
                        ("POST", None),
                        ("PUT", Some("bytes 0-262143/614400")),
                        ("PUT", Some("bytes 262144-524287/614400")),
                        ("PUT", Some("bytes 524288-614399/614400")),
                    ]
                );
                assert_eq!(run.body_bytes_received, run.source.len() as u64);
                assert!(run.waits().is_empty());
                assert!(run.completed().verified.crc32c);
            },
            ..BASE
        },
        // G5: the server persisted fewer bytes than sent: the next request re-sends exactly
        // from the persisted offset.
        Scenario {
            name: "partial_persistence",
            faults: "gcs.chunk#1=persist:100000",
            check: |run| {
                run.assert_exact();
                let chunks = run.chunks();
                assert_eq!(
                    chunks[1].content_range.as_deref(),
                    Some("bytes 100000-362143/614400")
                );
                assert_eq!(chunks[1].body_bytes, CHUNK);
            },
            ..BASE
        },
        // G8, G6: the connection drops part-way through a chunk: the next request is a status
        // query, not a blind re-send, and the upload goes on from what the server holds.
        Scenario {
            name: "drop_mid_chunk",
            size: 1024 * KIB,
            faults: "gcs.chunk#2=drop-after:100000",
            check: |run| {
                run.assert_exact();
                let next = run.after(|e| e.kind == RequestKind::GcsChunk && e.status.is_none());
                assert_eq!(next.kind, RequestKind::GcsQuery, "{next:?}");
                assert_eq!(next.content_range.as_deref(), Some("bytes */1048576"));
                // The cut-short chunk kept nothing (its prefix rounds down to 0 × 256 KiB).
                let resent = run.after(|e| e.kind == RequestKind::GcsQuery);
                assert_eq!(chunk_start(resent), Some(CHUNK));
                assert_eq!(run.failures().len(), 1);
                assert_eq!(run.waits().len(), 1);
            },
            ..BASE
        },
        // G5: a 308 without Range means nothing is persisted: the chunk is sent again from 0.
        Scenario {
            name: "no_range_308",
            size: 300 * KIB,
            faults: "gcs.chunk#1=no-range",
            check: |run| {
                run.assert_exact();
                let chunks = run.chunks();
                assert_eq!(chunk_start(chunks[0]), Some(0));
                assert_eq!(chunk_start(chunks[1]), Some(0));
                assert_eq!(chunks[1].body_bytes, CHUNK);
            },
            ..BASE
        },
        // G8: retryable 503s make the upload wait (10 ms, then 20 ms: the backoff doubles),
        // really, on the runtime's timer; after each, a status query.
        Scenario {
            name: "retryable_503_waits",
            size: 300 * KIB,
            faults: "gcs.chunk#1=status:503x2",
            check: |run| {
                run.assert_exact();
                assert_eq!(run.stats.retries, 2);
                let waits = run.waits();
                assert_eq!(waits.len(), 2, "{waits:?}");
                assert!(
                    waits[0] <= Duration::from_millis(10) && waits[1] <= Duration::from_millis(20)
                );
                assert!(waits[1] > Duration::from_millis(10), "{waits:?}");
                assert!(
                    run.elapsed >= Duration::from_millis(25),
                    "the waits were not slept"
                );
                let next = run.after(|e| e.status == Some(503));
                assert_eq!(next.kind, RequestKind::GcsQuery);
            },
            ..BASE
        },
        // G4, G5: a stream of unknown size: the total is learned by reading, only the last
        // chunk declares it, partial persistence and a drop are re-sent from the kept window,
        // and the window never holds more than about two chunks.
        Scenario {
            name: "unknown_size_stream",
            size: 3 * 1024 * KIB + 12_345,
            input: Input::Stream(10_000),
            faults: "gcs.chunk#2=persist:200000; gcs.chunk#4=persist:1; gcs.chunk#5=drop-after:5000",
            check: |run| {
                run.assert_exact();
                let chunks = run.chunks();
                let (last, earlier) = chunks.split_last().unwrap();
                let total = format!("/{}", run.source.len());
                assert!(last.content_range.as_deref().unwrap().ends_with(&total));
                assert!(
                    earlier
                        .iter()
                        .all(|c| c.content_range.as_deref().unwrap().ends_with("/*"))
                );
                let peak = run.peak_window.unwrap();
                assert!(
                    peak <= 2 * CHUNK + 10_000,
                    "the window grew to {peak} bytes"
                );
            },
            ..BASE
        },
        // G4, G7: a stream that ends on a chunk boundary: the core reads one byte past each
        // chunk, so the last chunk declares the total itself; no empty request follows.
        Scenario {
            name: "stream_ending_on_a_boundary",
            size: 2 * CHUNK,
            input: Input::Stream(64 * 1024),
            check: |run| {
                run.assert_exact();
                let last = run.log.last().unwrap();
                assert_eq!(
                    last.content_range.as_deref(),
                    Some("bytes 262144-524287/524288")
                );
                assert_eq!(last.body_bytes, CHUNK);
                assert_eq!(run.log.len(), 3, "the start and one request per chunk");
                assert!(run.completed().verified.crc32c);
            },
            ..BASE
        },
        // G7: the final request carries `x-goog-hash` with CRC32C and MD5 of the whole source
        // (the server answers 400 to one that disagrees), and the server's hashes match.
        Scenario {
            name: "final_checksums",
            md5: true,
            check: |run| {
                run.assert_exact();
                let verified = run.completed().verified;
                assert!(verified.crc32c && verified.md5, "{verified:?}");
                assert!(run.log.iter().all(|e| e.status != Some(400)));
            },
            ..BASE
        },
        // G9: the session is gone: the upload's own typed error, no retries.
        Scenario {
            name: "session_gone",
            size: 300 * KIB,
            faults: "gcs.chunk#1=expire",
            check: |run| {
                match &run.result {
                    Err(DriveError::Upload(Error::SessionGone { status })) => {
                        assert_eq!(status.as_u16(), 404)
                    }
                    other => panic!("expected SessionGone, got {other:?}"),
                }
                assert_eq!(run.log.len(), 2);
            },
            ..BASE
        },
        // G6, G7: the final chunk arrived but its response was lost: the status query finds
        // the upload complete, and nothing is sent again.
        Scenario {
            name: "lost_final_response",
            size: 300 * KIB,
            faults: "gcs.chunk#2=drop-after:1m",
            check: |run| {
                run.assert_exact();
                assert_eq!(run.log.last().unwrap().kind, RequestKind::GcsQuery);
                assert_eq!(run.body_bytes_received, run.source.len() as u64);
            },
            ..BASE
        },
        // G8: a response cut short is a transport failure (truncated), then a status query.
        Scenario {
            name: "truncated_response",
            size: 300 * KIB,
            faults: "gcs.chunk#1=truncate:10",
            check: |run| {
                run.assert_exact();
                assert_eq!(run.failures(), vec![TransportFailure::TruncatedResponse]);
                let next = run.after(|e| e.truncated);
                assert_eq!(next.kind, RequestKind::GcsQuery);
            },
            ..BASE
        },
        // G5: a 308 claiming more than was ever sent is a protocol violation, never a skip.
        Scenario {
            name: "range_beyond_sent",
            faults: "gcs.chunk#1=lie",
            check: |run| match &run.result {
                Err(DriveError::Upload(Error::Protocol(ProtocolViolation::RangeBeyondSent {
                    ..
                }))) => {}
                other => panic!("expected RangeBeyondSent, got {other:?}"),
            },
            ..BASE
        },
        // A source shorter than the size the upload was given fails with a typed error when a
        // body runs out, instead of sending short or hanging.
        Scenario {
            name: "source_shorter_than_declared",
            size: 500 * KIB,
            input: Input::Claimed(600 * KIB),
            no_checksums: true,
            check: |run| match &run.result {
                Err(DriveError::Source(SourceError::Ended { ended_at, needed })) => {
                    assert_eq!((*ended_at, *needed), (500 * KIB, 2 * CHUNK));
                    // The short request never completed on the server.
                    assert!(run.stored.is_none());
                }
                other => panic!("expected SourceError::Ended, got {other:?}"),
            },
            ..BASE
        },
        // G4, G7: an empty stream is an empty object: the only upload request is `bytes */0`.
        Scenario {
            name: "empty_stream",
            size: 0,
            input: Input::Stream(1000),
            check: |run| {
                run.assert_exact();
                assert_eq!(
                    run.ranges(),
                    vec![("POST", None), ("PUT", Some("bytes */0"))]
                );
            },
            ..BASE
        },
    ]
}

pub fn scenario(name: &str) -> Scenario {
    scenarios()
        .into_iter()
        .find(|s| s.name == name)
        .unwrap_or_else(|| panic!("no scenario {name}"))
}

/// A stream of `data` in items of `item` bytes, yielding to the executor between items.
pub fn items(
    data: &[u8],
    item: usize,
) -> impl futures::Stream<Item = Result<Bytes, std::io::Error>> + Unpin + Send + 'static {
    let items: Vec<Bytes> = data
        .chunks(item.max(1))
        .map(Bytes::copy_from_slice)
        .collect();
    futures::stream::iter(items)
        .then(|item| async move {
            yield_now().await;
            Ok(item)
        })
        .boxed()
}

/// Returns `Pending` once: the stream is not all there at once.
pub async fn yield_now() {
    let mut yielded = false;
    std::future::poll_fn(|cx| {
        if yielded {
            std::task::Poll::Ready(())
        } else {
            yielded = true;
            cx.waker().wake_by_ref();
            std::task::Poll::Pending
        }
    })
    .await
}

/// Runs `scenario` against a fresh conformance server with `transport` and `timer`, on
/// whatever executor awaits it. Every `Sending` also checks that the resume state covers the
/// request (G3, G5).
pub async fn run_scenario<X: Transport, T: Timer>(
    scenario: &Scenario,
    transport: &mut X,
    timer: T,
) -> Run {
    let server = Server::start(ServerConfig::default()).unwrap();
    let source = data(scenario.size);
    let declared = match scenario.input {
        Input::Seekable => Some(scenario.size),
        Input::Claimed(size) => Some(size),
        Input::Stream(_) => None,
    };
    let mut config = config(declared);
    if scenario.md5 {
        config.checksums = Checksums {
            crc32c: true,
            md5: true,
        };
    }
    if scenario.no_checksums {
        config.checksums = Checksums::NONE;
    }
    let mut upload =
        GcsUpload::new(xml_start(start_url(&server, scenario.faults)), config).unwrap();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let record = seen.clone();
    let mut driver = Driver::new(timer).on_event(move |upload: &GcsUpload, event: &Event<'_>| {
        let mut seen = record.lock().unwrap();
        match event {
            Event::SourceRead { range } => seen.push(Seen::Read(range.clone())),
            Event::Sending { send } => {
                let range = send.body.source.clone();
                if !range.is_empty() {
                    let state = upload.resume_state().expect("a session exists");
                    assert!(state.sent >= Some(range.end), "the saved state is behind");
                }
                seen.push(Seen::Sending { range });
            }
            Event::Progress(p) => seen.push(Seen::Progress(*p)),
            Event::Response { status, .. } => seen.push(Seen::Response(status.as_u16())),
            Event::Failure { failure, .. } => seen.push(Seen::Failure(*failure)),
            Event::Waiting { until } => seen.push(Seen::Waiting {
                until: *until,
                at: Instant::now(),
            }),
            _ => {}
        }
        Ok(())
    });
    let started = Instant::now();
    let (result, peak_window) = match scenario.input {
        Input::Seekable | Input::Claimed(_) => {
            let mut file = SeekableSource::new(futures::io::Cursor::new(source.clone()));
            (driver.drive(&mut upload, &mut file, transport).await, None)
        }
        Input::Stream(item) => {
            let mut stream = StreamSource::new(items(&source, item));
            let result = driver.drive(&mut upload, &mut stream, transport).await;
            (result, Some(stream.peak_window()))
        }
    };
    let elapsed = started.elapsed();
    let seen = seen.lock().unwrap().clone();
    Run {
        name: scenario.name,
        source,
        result,
        stored: server.object(BUCKET, OBJECT),
        log: server.request_log(),
        stats: upload.stats(),
        seen,
        body_bytes_received: server.body_bytes_received(),
        peak_window,
        elapsed,
    }
}

/// Scenario names, for the executors' test lists.
pub fn names() -> Vec<&'static str> {
    scenarios().iter().map(|s| s.name).collect()
}

/// How a test goes on after dropping the upload future mid-chunk.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Resume {
    /// A new upload from the resume state saved at the last `Sending` (`Start::Resume`).
    FromSavedState,
    /// The same upload, driven again by the same driver.
    SameDriver,
}

/// The cancellation contract, on any executor: drop the upload future while a chunk's body is
/// streaming, then resume, and the server ends with exactly the source bytes (G3, G5, G6).
pub async fn drop_mid_chunk_then_resume<X, T>(resume: Resume, transport: &mut X, timer: T)
where
    X: Transport,
    T: Timer + Clone,
{
    use resumable_core::gcs::{ResumeState, Start};

    let server = Server::start(ServerConfig::default()).unwrap();
    let source = data(2048 * KIB);
    let make_config = || {
        let mut config = config(Some(source.len() as u64));
        config.chunk_size = 2 * CHUNK;
        config
    };
    let mut upload = GcsUpload::new(xml_start(start_url(&server, "")), make_config()).unwrap();
    let saved: Arc<Mutex<Option<ResumeState>>> = Arc::default();
    let save = saved.clone();
    let (signal, dropped) = futures::channel::oneshot::channel::<()>();
    let mut signal = Some(signal);
    let seen = Arc::new(Mutex::new(Vec::new()));
    let record = seen.clone();
    let mut driver =
        Driver::new(timer.clone()).on_event(move |upload: &GcsUpload, event: &Event<'_>| {
            match event {
                // The contract: save before every request, and after every response.
                Event::Sending { .. } | Event::Response { .. } => {
                    *save.lock().unwrap() = upload.resume_state();
                }
                // Half-way through the second chunk, pull the plug.
                Event::Progress(p) if p.source_position >= 2 * CHUNK + 300_000 => {
                    if let Some(signal) = signal.take() {
                        let _ = signal.send(());
                    }
                }
                Event::Failure { failure, .. } => record.lock().unwrap().push(*failure),
                _ => {}
            }
            Ok(())
        });
    let mut file = SeekableSource::new(futures::io::Cursor::new(source.clone()));
    {
        let drive = std::pin::pin!(driver.drive(&mut upload, &mut file, transport));
        match futures::future::select(drive, dropped).await {
            futures::future::Either::Left((result, _)) => {
                panic!("the upload ended before it was dropped: {result:?}")
            }
            // The drive future is dropped here, mid-body.
            futures::future::Either::Right(_) => {}
        }
    }
    let state = saved.lock().unwrap().clone().expect("a state was saved");
    assert_eq!(
        state.persisted,
        2 * CHUNK,
        "the first chunk was acknowledged"
    );
    assert!(
        state.sent >= Some(4 * CHUNK),
        "the state covers the dropped chunk"
    );
    assert!(server.object(BUCKET, OBJECT).is_none());

    let mut clock = timer.clone();
    let completion = match resume {
        Resume::FromSavedState => {
            let mut resumed = GcsUpload::new(Start::Resume(state), make_config()).unwrap();
            let first = Arc::new(Mutex::new(None));
            let note = first.clone();
            let mut driver =
                Driver::new(timer).on_event(move |_: &GcsUpload, event: &Event<'_>| {
                    let mut first = note.lock().unwrap();
                    if let (None, Event::Sending { send }) = (&*first, event) {
                        *first = send
                            .request
                            .headers()
                            .get("content-range")
                            .map(|v| v.to_str().unwrap().to_owned());
                    }
                    Ok(())
                });
            let mut file = SeekableSource::new(futures::io::Cursor::new(source.clone()));
            let completion = driver
                .drive(&mut resumed, &mut file, transport)
                .await
                .unwrap();
            // G3, G6: the resumed upload first asks the server what it holds.
            assert_eq!(
                first.lock().unwrap().as_deref(),
                Some(&*format!("bytes */{}", source.len()))
            );
            completion
        }
        Resume::SameDriver => {
            let mut file = SeekableSource::new(futures::io::Cursor::new(source.clone()));
            let completion = driver
                .drive(&mut upload, &mut file, transport)
                .await
                .unwrap();
            // The abandoned request was reported as failed, then the upload queried (G8).
            assert_eq!(seen.lock().unwrap()[0], TransportFailure::Reset);
            completion
        }
    };
    assert_eq!(completion.size, source.len() as u64);
    assert_eq!(server.object(BUCKET, OBJECT).as_deref(), Some(&source[..]));
    // Nothing acknowledged was sent twice: at most the dropped chunk again.
    assert!(server.body_bytes_received() <= source.len() as u64 + 2 * CHUNK);
    // When the server logged the dropped request, it ended mid-body, without an answer. (It
    // is not always logged: the drop can land before the request leaves the client, or the
    // client's connection task can outlive the future, so the server only notices later.)
    let mut cut = None;
    for _ in 0..50 {
        cut = server
            .request_log()
            .into_iter()
            .find(|e| e.status.is_none() && e.kind == RequestKind::GcsChunk);
        if cut.is_some() {
            break;
        }
        let now = clock.now();
        clock.sleep_until(now + Duration::from_millis(20)).await;
    }
    if let Some(cut) = cut {
        assert!(cut.body_bytes > 0 && cut.body_bytes < 2 * CHUNK, "{cut:?}");
    }
}
