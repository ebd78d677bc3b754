//! The driver against scripted GCS exchanges (closures, no sockets): each test names the
//! behaviour it checks and the rule it comes from (docs/protocols).

use resumable_core::Upload as _;
use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::io::{Cursor, Read};
use std::rc::Rc;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Method, Request, Response};
use resumable_blocking::{
    BodyProgress as Progress, Clock, DriveError, Driver, Event, RequestBody, SeekableSource,
    SourceError, StreamSource, transport_fn,
};
use resumable_core::checksum::{Checksums, crc32c_base64};
use resumable_core::gcs::{GcsCompletion, GcsConfig, GcsUpload, HashedPrefix, ResumeState, Start};
use resumable_core::{SessionUri, TransportFailure};

const KIB: u64 = 1024;
const CHUNK: u64 = 256 * KIB;
const SESSION: &str = "https://storage.example/upload/session?upload_id=secret-id";

fn data(len: u64) -> Vec<u8> {
    (0..len).map(|i| (i.wrapping_mul(31) % 253) as u8).collect()
}

fn config(total: Option<u64>) -> GcsConfig {
    let mut config = GcsConfig::new(total);
    config.chunk_size = CHUNK;
    config
}

fn xml_upload(config: GcsConfig) -> GcsUpload {
    let start = Start::Xml {
        url: "https://storage.example/bucket/ids.txt?X-Goog-Signature=sig"
            .parse()
            .unwrap(),
        content_type: http::HeaderValue::from_static("text/plain"),
    };
    GcsUpload::new(start, config).unwrap()
}

/// A clock that only pretends to sleep, and remembers every sleep.
#[derive(Clone)]
struct FakeClock {
    now: Rc<Cell<Instant>>,
    sleeps: Rc<RefCell<Vec<Duration>>>,
}

impl FakeClock {
    fn new() -> Self {
        FakeClock {
            now: Rc::new(Cell::new(Instant::now())),
            sleeps: Rc::default(),
        }
    }

    fn slept(&self) -> Duration {
        self.sleeps.borrow().iter().sum()
    }
}

impl Clock for FakeClock {
    fn now(&mut self) -> Instant {
        self.now.get()
    }

    fn sleep_until(&mut self, deadline: Instant) {
        let now = self.now.get();
        if deadline > now {
            self.sleeps.borrow_mut().push(deadline - now);
            self.now.set(deadline);
        }
    }
}

/// What the scripted server does with the next chunk (a PUT carrying bytes).
#[derive(Clone, Copy, Debug)]
enum Fault {
    /// Store the whole chunk.
    Store,
    /// Store only this many bytes of the chunk (G5: a server may persist fewer).
    Persist(usize),
    /// Read the body, store nothing, answer this status.
    Status(u16),
    /// Read this many body bytes, store them, then drop the connection.
    ResetAfter(usize),
    /// Read the body, store nothing, answer 308 without `Range`.
    NoRange308,
}

/// One request as the scripted server saw it.
#[derive(Clone, Debug)]
struct Exchange {
    method: Method,
    content_range: Option<String>,
    content_length: Option<u64>,
    x_goog_hash: Option<String>,
    /// The body bytes read.
    body: Vec<u8>,
}

impl Exchange {
    /// The first byte of a chunk, from `bytes A-B/T`.
    fn chunk_start(&self) -> Option<u64> {
        let range = self.content_range.as_deref()?.strip_prefix("bytes ")?;
        let (span, _) = range.split_once('/')?;
        span.split_once('-')?.0.parse().ok()
    }

    fn is_query(&self) -> bool {
        self.method == Method::PUT
            && self
                .content_range
                .as_deref()
                .is_some_and(|r| r.starts_with("bytes */"))
            && self.body.is_empty()
    }
}

/// A GCS-like server in memory (G1, G4–G7), with a queue of faults for the next chunks.
#[derive(Default)]
struct FakeGcs {
    stored: Vec<u8>,
    total: Option<u64>,
    faults: VecDeque<Fault>,
    log: Vec<Exchange>,
}

impl FakeGcs {
    fn with_faults(faults: impl IntoIterator<Item = Fault>) -> Self {
        FakeGcs {
            faults: faults.into_iter().collect(),
            ..FakeGcs::default()
        }
    }

    fn chunks(&self) -> Vec<&Exchange> {
        self.log.iter().filter(|e| !e.body.is_empty()).collect()
    }

    fn progress(&self) -> http::response::Builder {
        let builder = Response::builder().status(308);
        match self.stored.len() {
            0 => builder,
            n => builder.header("range", format!("bytes=0-{}", n - 1)),
        }
    }

    fn object(&self) -> Bytes {
        let crc = crc32c::crc32c(&self.stored);
        Bytes::from(format!(
            r#"{{"name":"ids.txt","size":"{}","crc32c":"{}"}}"#,
            self.stored.len(),
            crc32c_base64(crc)
        ))
    }

    fn is_complete(&self) -> bool {
        self.total == Some(self.stored.len() as u64)
    }

    fn handle(
        &mut self,
        request: &Request<()>,
        body: &mut RequestBody<'_>,
    ) -> Result<Response<Bytes>, TransportFailure> {
        let header = |name: &str| {
            request
                .headers()
                .get(name)
                .map(|v| v.to_str().unwrap().to_owned())
        };
        let mut exchange = Exchange {
            method: request.method().clone(),
            content_range: header("content-range"),
            content_length: header("content-length").map(|v| v.parse().unwrap()),
            x_goog_hash: header("x-goog-hash"),
            body: Vec::new(),
        };
        // The driver hands the transport a body of exactly Content-Length bytes (G4).
        assert_eq!(exchange.content_length, Some(body.len()));
        let fault = match (request.method(), exchange.chunk_start()) {
            (&Method::PUT, Some(_)) => self.faults.pop_front().unwrap_or(Fault::Store),
            _ => Fault::Store,
        };
        let read = match fault {
            Fault::ResetAfter(n) => body.take(n as u64).read_to_end(&mut exchange.body),
            _ => body.read_to_end(&mut exchange.body),
        };
        if read.is_err() {
            // Like a real transport: a body that cannot be read is a request that failed.
            self.log.push(exchange);
            return Err(TransportFailure::Other);
        }
        if !matches!(fault, Fault::ResetAfter(_)) {
            assert_eq!(exchange.body.len() as u64, body.len());
        }
        let response = self.answer(&exchange, fault);
        self.log.push(exchange);
        response.map(|(builder, body)| builder.body(body).unwrap())
    }

    fn answer(
        &mut self,
        exchange: &Exchange,
        fault: Fault,
    ) -> Result<(http::response::Builder, Bytes), TransportFailure> {
        match exchange.method {
            Method::POST => {
                return Ok((
                    Response::builder().status(201).header("location", SESSION),
                    Bytes::new(),
                ));
            }
            Method::DELETE => return Ok((Response::builder().status(499), Bytes::new())),
            _ => {}
        }
        let range = exchange.content_range.as_deref().expect("Content-Range");
        let (span, total) = range
            .strip_prefix("bytes ")
            .unwrap()
            .split_once('/')
            .unwrap();
        if total != "*" {
            self.total = Some(total.parse().unwrap());
        }
        if span != "*" {
            let start: usize = span.split_once('-').unwrap().0.parse().unwrap();
            assert!(
                start <= self.stored.len(),
                "a gap: chunk starts after the stored bytes"
            );
            let keep = match fault {
                Fault::Store | Fault::ResetAfter(_) => exchange.body.len(),
                Fault::Persist(n) => n.min(exchange.body.len()),
                Fault::Status(_) | Fault::NoRange308 => 0,
            };
            let already = self.stored.len() - start;
            if keep > already {
                self.stored.extend_from_slice(&exchange.body[already..keep]);
            }
            match fault {
                Fault::ResetAfter(_) => return Err(TransportFailure::Reset),
                Fault::Status(status) => {
                    return Ok((Response::builder().status(status), Bytes::new()));
                }
                Fault::NoRange308 => return Ok((Response::builder().status(308), Bytes::new())),
                Fault::Store | Fault::Persist(_) => {}
            }
        }
        if self.is_complete() {
            Ok((Response::builder().status(200), self.object()))
        } else {
            Ok((self.progress(), Bytes::new()))
        }
    }
}

fn run(
    upload: &mut GcsUpload,
    source: &[u8],
    server: &mut FakeGcs,
    clock: &FakeClock,
) -> Result<GcsCompletion, DriveError> {
    let mut transport = transport_fn(|request, body| server.handle(request, body));
    Driver::new().clock(clock.clone()).drive(
        upload,
        &mut SeekableSource::new(Cursor::new(source)),
        &mut transport,
    )
}

// G1, G4, G7: a whole upload: start, then every chunk once, in order, each with a
// Content-Length equal to the bytes sent, and the server ends up with exactly the source.
#[test]
fn full_upload_sends_every_chunk_once() {
    let source = data(600 * KIB);
    let mut upload = xml_upload(config(Some(source.len() as u64)));
    let mut server = FakeGcs::default();
    let clock = FakeClock::new();
    let completion = run(&mut upload, &source, &mut server, &clock).unwrap();

    assert_eq!(server.stored, source);
    assert_eq!(completion.size, source.len() as u64);
    assert!(completion.verified.crc32c && completion.verified.size);
    let ranges: Vec<_> = server
        .log
        .iter()
        .map(|e| (e.method.clone(), e.content_range.clone()))
        .collect();
    assert_eq!(
        ranges,
        vec![
            (Method::POST, None),
            (Method::PUT, Some("bytes 0-262143/614400".into())),
            (Method::PUT, Some("bytes 262144-524287/614400".into())),
            (Method::PUT, Some("bytes 524288-614399/614400".into())),
        ]
    );
    for exchange in &server.log {
        assert_eq!(exchange.content_length, Some(exchange.body.len() as u64));
    }
    assert!(clock.sleeps.borrow().is_empty());
}

// G7: the driver hands the core each body's source bytes as it sends them, so a file of
// known size is read once: only the final chunk is read ahead (its headers carry the
// checksum). Bytes sent again after a partial persistence or a reset are not checksummed
// twice: the CRC32C still matches the source.
#[test]
fn a_file_is_read_once_and_checksummed_as_it_is_sent() {
    let source = data(1000 * KIB);
    let mut upload = xml_upload(config(Some(source.len() as u64)));
    let mut server = FakeGcs::with_faults([Fault::Persist(200_000), Fault::ResetAfter(5000)]);
    let mut transport = transport_fn(|request, body| server.handle(request, body));
    let mut reads = Vec::new();
    let completion = Driver::new()
        .clock(FakeClock::new())
        .on_event(|_: &GcsUpload, event: &Event<'_>| {
            if let Event::SourceRead { range } = event {
                reads.push(range.clone());
            }
            Ok(())
        })
        .drive(
            &mut upload,
            &mut SeekableSource::new(Cursor::new(&source)),
            &mut transport,
        )
        .unwrap();

    assert_eq!(server.stored, source);
    assert_eq!(completion.crc32c, Some(crc32c::crc32c(&source)));
    assert!(completion.verified.crc32c);
    // The final chunk starts where the server's persisted count put it (200,000 + 5,000
    // bytes in, then whole chunks).
    let last = server
        .chunks()
        .last()
        .unwrap()
        .content_range
        .clone()
        .unwrap();
    let final_start = 205_000 + 3 * CHUNK;
    assert!(last.starts_with(&format!("bytes {final_start}-")), "{last}");
    assert_eq!(reads.first().map(|r| r.start), Some(final_start));
    assert_eq!(reads.last().map(|r| r.end), Some(source.len() as u64));
    assert!(reads.windows(2).all(|w| w[0].end == w[1].start));
}

// G5: the server persisted fewer bytes than sent (308 with a shorter Range): the next
// request re-sends exactly from the persisted offset, with those bytes.
#[test]
fn partial_persistence_resends_from_the_persisted_offset() {
    let source = data(600 * KIB);
    let mut upload = xml_upload(config(Some(source.len() as u64)));
    let mut server = FakeGcs::with_faults([Fault::Persist(100_000)]);
    let clock = FakeClock::new();
    run(&mut upload, &source, &mut server, &clock).unwrap();

    assert_eq!(server.stored, source);
    let chunks = server.chunks();
    assert_eq!(chunks[0].chunk_start(), Some(0));
    assert_eq!(chunks[1].chunk_start(), Some(100_000));
    assert_eq!(
        chunks[1].content_range.as_deref(),
        Some("bytes 100000-362143/614400")
    );
    assert_eq!(chunks[1].body, &source[100_000..100_000 + CHUNK as usize]);
}

// G8, G6: the connection drops part-way through a chunk: the next request is a status
// query (not a blind re-send), after a backoff on the injected clock, and the upload goes on
// from what the server says it holds.
#[test]
fn a_drop_mid_chunk_is_followed_by_a_status_query() {
    let source = data(600 * KIB);
    let mut upload = xml_upload(config(Some(source.len() as u64)));
    let mut server = FakeGcs::with_faults([Fault::ResetAfter(1000)]);
    let clock = FakeClock::new();
    run(&mut upload, &source, &mut server, &clock).unwrap();

    assert_eq!(server.stored, source);
    let dropped = server
        .log
        .iter()
        .position(|e| e.chunk_start() == Some(0))
        .unwrap();
    assert_eq!(server.log[dropped].body.len(), 1000);
    let next = &server.log[dropped + 1];
    assert!(next.is_query(), "expected a status query, got {next:?}");
    assert_eq!(next.content_range.as_deref(), Some("bytes */614400"));
    assert_eq!(next.content_length, Some(0));
    // The server held the 1000 bytes it read: the upload continues from there.
    assert_eq!(server.log[dropped + 2].chunk_start(), Some(1000));
    assert_eq!(clock.sleeps.borrow().len(), 1);
}

// G5: a 308 without Range means nothing is persisted: the chunk is sent again from byte 0.
#[test]
fn a_308_without_range_means_nothing_is_persisted() {
    let source = data(300 * KIB);
    let mut upload = xml_upload(config(Some(source.len() as u64)));
    let mut server = FakeGcs::with_faults([Fault::NoRange308]);
    let clock = FakeClock::new();
    run(&mut upload, &source, &mut server, &clock).unwrap();

    assert_eq!(server.stored, source);
    let chunks = server.chunks();
    assert_eq!(chunks[0].chunk_start(), Some(0));
    assert_eq!(chunks[1].chunk_start(), Some(0));
    assert_eq!(chunks[1].body, &source[..CHUNK as usize]);
}

// G8: a retryable 503 makes the upload wait (initial backoff 1 s plus up to 1 s of jitter);
// the wait goes through the injected clock, so nothing really sleeps; then a status query.
#[test]
fn a_retryable_503_waits_on_the_injected_clock() {
    let source = data(300 * KIB);
    let mut upload = xml_upload(config(Some(source.len() as u64)));
    let mut server = FakeGcs::with_faults([Fault::Status(503), Fault::Status(503)]);
    let clock = FakeClock::new();
    let real = Instant::now();
    run(&mut upload, &source, &mut server, &clock).unwrap();

    assert!(real.elapsed() < Duration::from_millis(900), "really slept");
    let sleeps = clock.sleeps.borrow().clone();
    assert_eq!(sleeps.len(), 2, "{sleeps:?}");
    assert!(sleeps[0] >= Duration::from_secs(1) && sleeps[0] <= Duration::from_secs(2));
    // The backoff doubles (G8): 2 s plus up to 1 s of jitter.
    assert!(sleeps[1] >= Duration::from_secs(2) && sleeps[1] <= Duration::from_secs(3));
    let failed = server
        .log
        .iter()
        .position(|e| e.chunk_start() == Some(0))
        .unwrap();
    assert!(server.log[failed + 1].is_query());
    assert_eq!(server.stored, source);
    assert_eq!(upload.stats().retries, 2);
}

/// A reader that cannot seek, handing out at most 10 000 bytes per read (like a pipe).
struct Pipe {
    data: Vec<u8>,
    at: usize,
}

impl Read for Pipe {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = buf.len().min(10_000).min(self.data.len() - self.at);
        buf[..n].copy_from_slice(&self.data[self.at..self.at + n]);
        self.at += n;
        Ok(n)
    }
}

// G4, G5: a non-seekable source of unknown size (stdin): the total is learned by reading,
// the last chunk declares it, partial persistence is re-sent from the kept window, and the
// window never holds more than about two chunks, whatever the source's size.
#[test]
fn a_stream_of_unknown_size_keeps_a_window_of_about_two_chunks() {
    let source = data(3 * 1024 * KIB + 12_345);
    let mut upload = xml_upload(config(None));
    let mut server = FakeGcs::with_faults([
        Fault::Store,
        Fault::Persist(200_000),
        Fault::Store,
        Fault::Persist(1),
        Fault::ResetAfter(5000),
    ]);
    let clock = FakeClock::new();
    let mut stream = StreamSource::new(Pipe {
        data: source.clone(),
        at: 0,
    });
    let mut transport = transport_fn(|request, body| server.handle(request, body));
    let completion = Driver::new()
        .clock(clock.clone())
        .drive(&mut upload, &mut stream, &mut transport)
        .unwrap();

    assert_eq!(server.stored, source);
    assert_eq!(completion.size, source.len() as u64);
    let chunks = server.chunks();
    let last = chunks.last().unwrap();
    assert!(
        last.content_range
            .as_deref()
            .unwrap()
            .ends_with(&format!("/{}", source.len()))
    );
    for chunk in &chunks[..chunks.len() - 1] {
        assert!(chunk.content_range.as_deref().unwrap().ends_with("/*"));
    }
    let peak = stream.peak_capacity() as u64;
    assert!(
        peak <= 2 * CHUNK + 64 * KIB,
        "the window grew to {peak} bytes"
    );
}

// G4: a stream whose size is a whole number of chunks: the core reads one byte past each
// chunk, so the last chunk itself declares the total and carries the checksum (G7), and no
// empty `bytes */T` request follows: one request per chunk.
#[test]
fn a_stream_ending_on_a_chunk_boundary_declares_the_total_on_its_last_chunk() {
    let source = data(2 * CHUNK);
    let mut upload = xml_upload(config(None));
    let mut server = FakeGcs::default();
    let clock = FakeClock::new();
    let mut stream = StreamSource::new(&source[..]);
    let mut transport = transport_fn(|request, body| server.handle(request, body));
    Driver::new()
        .clock(clock)
        .drive(&mut upload, &mut stream, &mut transport)
        .unwrap();

    assert_eq!(server.stored, source);
    let last = server.log.last().unwrap();
    assert_eq!(
        last.content_range.as_deref(),
        Some("bytes 262144-524287/524288")
    );
    assert_eq!(last.body, source[CHUNK as usize..]);
    assert_eq!(server.log.len(), 3, "the start and one request per chunk");
    let crc = crc32c_base64(crc32c::crc32c(&source));
    assert_eq!(last.x_goog_hash.as_deref(), Some(&*format!("crc32c={crc}")));
}

// G7: the final chunk carries `x-goog-hash: crc32c=…` of the whole source (so the server can
// check it); earlier chunks carry none.
#[test]
fn the_final_request_carries_x_goog_hash() {
    let source = data(600 * KIB);
    let mut upload = xml_upload(config(Some(source.len() as u64)));
    let mut server = FakeGcs::default();
    run(&mut upload, &source, &mut server, &FakeClock::new()).unwrap();

    let crc = crc32c_base64(crc32c::crc32c(&source));
    let chunks = server.chunks();
    let (last, earlier) = chunks.split_last().unwrap();
    assert_eq!(last.x_goog_hash.as_deref(), Some(&*format!("crc32c={crc}")));
    assert!(earlier.iter().all(|c| c.x_goog_hash.is_none()));
}

// G3, G5: the resume state seen at `Sending` already counts the request's bytes as sent, so
// a state saved there never resumes behind what the server may hold.
#[test]
fn the_state_saved_at_sending_covers_the_request() {
    let source = data(600 * KIB);
    let mut upload = xml_upload(config(Some(source.len() as u64)));
    let mut server = FakeGcs::default();
    let mut checked = 0;
    let mut transport = transport_fn(|request, body| server.handle(request, body));
    Driver::new()
        .clock(FakeClock::new())
        .on_event(|upload: &GcsUpload, event: &Event<'_>| {
            if let Event::Sending { send } = event
                && !send.body.source.is_empty()
            {
                let state = upload.resume_state().expect("a session exists");
                assert!(state.sent >= Some(send.body.source.end));
                checked += 1;
            }
            Ok(())
        })
        .drive(
            &mut upload,
            &mut SeekableSource::new(Cursor::new(&source)),
            &mut transport,
        )
        .unwrap();
    assert_eq!(checked, 3);
}

// Progress: body bytes are counted as the transport reads them, and the persisted count is
// reported alongside; the last report has everything sent and acknowledged before the end.
#[test]
fn progress_counts_body_bytes_sent_and_bytes_persisted() {
    let source = data(600 * KIB);
    let mut upload = xml_upload(config(Some(source.len() as u64)));
    let mut server = FakeGcs::with_faults([Fault::Persist(100_000)]);
    let mut reports: Vec<Progress> = Vec::new();
    let mut transport = transport_fn(|request, body| server.handle(request, body));
    Driver::new()
        .clock(FakeClock::new())
        .on_event(|_: &GcsUpload, event: &Event<'_>| {
            if let Event::Progress(progress) = event {
                reports.push(*progress);
            }
            Ok(())
        })
        .drive(
            &mut upload,
            &mut SeekableSource::new(Cursor::new(&source)),
            &mut transport,
        )
        .unwrap();

    let body_bytes: u64 = server.log.iter().map(|e| e.body.len() as u64).sum();
    let last = reports.last().unwrap();
    assert_eq!(last.total_sent, body_bytes);
    assert_eq!(last.body_sent, last.body_len);
    assert_eq!(last.source_position, source.len() as u64);
    assert!(
        reports
            .windows(2)
            .all(|w| w[0].total_sent < w[1].total_sent)
    );
    assert!(reports.windows(2).all(|w| w[0].persisted <= w[1].persisted));
    // The re-send after partial persistence starts again at the persisted offset.
    assert!(
        reports
            .iter()
            .any(|p| p.persisted == 100_000 && p.source_position <= 100_000 + 64 * KIB)
    );
}

// G10 is not used on interrupt: the flag ends the drive between actions with `Interrupted`,
// no DELETE is sent, and the resume state is still there.
#[test]
fn an_interrupt_returns_without_cancelling_the_session() {
    let source = data(600 * KIB);
    let mut upload = xml_upload(config(Some(source.len() as u64)));
    let mut server = FakeGcs::default();
    let flag = Arc::new(AtomicBool::new(false));
    let raise = flag.clone();
    let mut transport = transport_fn(|request, body| server.handle(request, body));
    let result = Driver::new()
        .clock(FakeClock::new())
        .interrupt(flag)
        .on_event(move |_: &GcsUpload, event: &Event<'_>| {
            if let Event::Response { status, .. } = event
                && status.as_u16() == 308
            {
                raise.store(true, Ordering::SeqCst);
            }
            Ok(())
        })
        .drive(
            &mut upload,
            &mut SeekableSource::new(Cursor::new(&source)),
            &mut transport,
        );

    assert!(matches!(result, Err(DriveError::Interrupted)), "{result:?}");
    assert!(server.log.iter().all(|e| e.method != Method::DELETE));
    assert_eq!(server.log.len(), 2);
    let state = upload.resume_state().expect("resumable");
    assert_eq!(state.persisted, CHUNK);
}

// An interrupt raised while the upload waits for a retry ends the wait within a slice of at
// most 100 ms, not after the whole backoff.
#[test]
fn an_interrupt_during_a_wait_returns_promptly() {
    let source = data(300 * KIB);
    let mut upload = xml_upload(config(Some(source.len() as u64)));
    let mut server = FakeGcs::with_faults([Fault::Status(503)]);
    let flag = Arc::new(AtomicBool::new(false));
    let raise = flag.clone();
    let clock = FakeClock::new();
    let mut transport = transport_fn(|request, body| server.handle(request, body));
    let result = Driver::new()
        .clock(clock.clone())
        .interrupt(flag)
        .on_event(move |_: &GcsUpload, event: &Event<'_>| {
            if let Event::Waiting { .. } = event {
                raise.store(true, Ordering::SeqCst);
            }
            Ok(())
        })
        .drive(
            &mut upload,
            &mut SeekableSource::new(Cursor::new(&source)),
            &mut transport,
        );
    assert!(matches!(result, Err(DriveError::Interrupted)), "{result:?}");
    assert!(clock.slept() <= Duration::from_millis(100));
}

// A source shorter than the size the upload was given fails with a typed error when a body
// runs out (no checksums: the core never reads ahead), instead of sending short or hanging.
#[test]
fn a_source_shorter_than_declared_is_a_typed_error() {
    let source = data(500 * KIB);
    let mut config = config(Some(600 * KIB));
    config.checksums = Checksums::NONE;
    let mut upload = xml_upload(config);
    let mut server = FakeGcs::default();
    let result = run(&mut upload, &source, &mut server, &FakeClock::new());
    match result {
        Err(DriveError::Source(SourceError::Ended { ended_at, needed })) => {
            // The second chunk, 256 KiB..512 KiB, runs out at 500 KiB.
            assert_eq!((ended_at, needed), (500 * KIB, 2 * CHUNK));
        }
        other => panic!("expected SourceError::Ended, got {other:?}"),
    }
}

// G9: a final 4xx ends the drive with the upload's own typed error (a response, not a
// transport failure), without retries.
#[test]
fn a_session_gone_is_the_uploads_error() {
    let source = data(300 * KIB);
    let mut upload = xml_upload(config(Some(source.len() as u64)));
    let mut server = FakeGcs::with_faults([Fault::Status(410)]);
    let result = run(&mut upload, &source, &mut server, &FakeClock::new());
    match result {
        Err(DriveError::Upload(resumable_core::Error::SessionGone { status })) => {
            assert_eq!(status.as_u16(), 410)
        }
        other => panic!("expected SessionGone, got {other:?}"),
    }
    assert_eq!(server.log.len(), 2);
}

// A hook that fails (the resume state could not be saved) ends the drive with its error.
#[test]
fn a_failing_hook_ends_the_drive() {
    let source = data(300 * KIB);
    let mut upload = xml_upload(config(Some(source.len() as u64)));
    let mut server = FakeGcs::default();
    let mut transport = transport_fn(|request, body| server.handle(request, body));
    let result = Driver::new()
        .clock(FakeClock::new())
        .on_event(|_: &GcsUpload, event: &Event<'_>| match event {
            Event::Sending { send } if !send.body.source.is_empty() => Err("disk full".into()),
            _ => Ok(()),
        })
        .drive(
            &mut upload,
            &mut SeekableSource::new(Cursor::new(&source)),
            &mut transport,
        );
    assert!(matches!(&result, Err(DriveError::Hook(e)) if e.to_string() == "disk full"));
    // Nothing was sent after the state could not be saved.
    assert!(server.chunks().is_empty());
}

// G3, G5: resuming from a saved state with a stream (stdin piped again): the first request
// is a status query, acknowledged bytes are skipped in the stream (not kept, not re-sent),
// and the window stays small.
#[test]
fn resuming_a_stream_skips_acknowledged_bytes() {
    let source = data(2 * 1024 * KIB);
    let persisted = 1024 * KIB;
    let mut server = FakeGcs {
        stored: source[..persisted as usize].to_vec(),
        ..FakeGcs::default()
    };
    let state = ResumeState {
        session: SessionUri::parse(SESSION).unwrap(),
        total: None,
        persisted,
        sent: Some(persisted + CHUNK),
        crc32c: Some(HashedPrefix {
            len: persisted + 1000,
            crc32c: crc32c::crc32c(&source[..persisted as usize + 1000]),
        }),
        fingerprint: String::new(),
        foreign: false,
    };
    let mut upload = GcsUpload::new(Start::Resume(state), config(None)).unwrap();
    let mut stream = StreamSource::new(Pipe {
        data: source.clone(),
        at: 0,
    });
    let mut transport = transport_fn(|request, body| server.handle(request, body));
    let completion = Driver::new()
        .clock(FakeClock::new())
        .drive(&mut upload, &mut stream, &mut transport)
        .unwrap();

    assert_eq!(server.stored, source);
    assert!(completion.verified.crc32c);
    assert!(server.log[0].is_query());
    assert_eq!(server.chunks()[0].chunk_start(), Some(persisted));
    let peak = stream.peak_capacity() as u64;
    assert!(
        peak <= 2 * CHUNK + 64 * KIB,
        "the window grew to {peak} bytes"
    );
}

// G4, G7: an empty stream is an empty object: the total (0) is learned by reading, and the
// only upload request is `bytes */0`.
#[test]
fn an_empty_stream_uploads_an_empty_object() {
    let mut upload = xml_upload(config(None));
    let mut server = FakeGcs::default();
    let mut transport = transport_fn(|request, body| server.handle(request, body));
    let completion = Driver::new()
        .clock(FakeClock::new())
        .drive(&mut upload, &mut StreamSource::new(&[][..]), &mut transport)
        .unwrap();
    assert_eq!(completion.size, 0);
    let last = server.log.last().unwrap();
    assert_eq!(last.content_range.as_deref(), Some("bytes */0"));
    assert_eq!(server.log.len(), 2);
}

// G6, G7: the final chunk reached the server but its response was lost: the status query
// that follows finds the upload complete, and nothing is sent again.
#[test]
fn a_lost_final_response_is_recovered_by_a_status_query() {
    let source = data(300 * KIB);
    let mut upload = xml_upload(config(Some(source.len() as u64)));
    let last_len = source.len() - CHUNK as usize;
    let mut server = FakeGcs::with_faults([Fault::Store, Fault::ResetAfter(last_len)]);
    let completion = run(&mut upload, &source, &mut server, &FakeClock::new()).unwrap();

    assert_eq!(server.stored, source);
    assert_eq!(completion.size, source.len() as u64);
    assert!(server.log.last().unwrap().is_query());
    let sent: usize = server.log.iter().map(|e| e.body.len()).sum();
    assert_eq!(sent, source.len());
}

// The before-send hook (request signing) runs on every request, retries included, and what it
// adds reaches the transport; a failing hook stops the drive before anything is sent.
#[test]
fn before_send_runs_on_every_request_including_retries() {
    let source = data(300 * KIB);
    let mut upload = xml_upload(config(Some(source.len() as u64)));
    let mut server = FakeGcs::with_faults([Fault::Status(503)]);
    let mut seen = Vec::new();
    let mut transport = transport_fn(|request: &Request<()>, body: &mut RequestBody<'_>| {
        seen.push(
            request
                .headers()
                .get("x-signed")
                .map(|v| v.to_str().unwrap().to_owned()),
        );
        server.handle(request, body)
    });
    let mut count = 0u32;
    let result = Driver::new()
        .clock(FakeClock::new())
        .before_send(|send| {
            count += 1;
            send.request
                .headers_mut()
                .insert("x-signed", count.to_string().parse().unwrap());
            Ok(())
        })
        .drive(
            &mut upload,
            &mut SeekableSource::new(Cursor::new(&source)),
            &mut transport,
        );
    assert!(result.is_ok(), "{result:?}");
    let expected: Vec<_> = (1..=seen.len() as u32)
        .map(|n| Some(n.to_string()))
        .collect();
    assert_eq!(
        seen, expected,
        "a fresh hook call per request, retries included"
    );
    assert!(
        seen.len() >= 4,
        "start, chunk, 503, status query, chunks: {seen:?}"
    );

    let mut upload = xml_upload(config(Some(source.len() as u64)));
    let mut server = FakeGcs::default();
    let mut transport = transport_fn(|request, body| server.handle(request, body));
    let result = Driver::new()
        .clock(FakeClock::new())
        .before_send(|_| Err("no credentials".into()))
        .drive(
            &mut upload,
            &mut SeekableSource::new(Cursor::new(&source)),
            &mut transport,
        );
    assert!(matches!(&result, Err(DriveError::Hook(e)) if e.to_string() == "no credentials"));
    assert!(server.log.is_empty(), "nothing was sent");
}
