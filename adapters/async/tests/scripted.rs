//! The driver against a scripted GCS (a closure, no sockets) on `futures`' executor, with a
//! timer that only pretends to sleep: what the conformance runs cannot observe (exact
//! backoffs, request headers, how far reading runs ahead of sending).

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::rc::Rc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::StreamExt as _;
use futures::executor::block_on;
use http::{Method, Response};
use resumable_async::{
    BodyProgress as Progress, DriveError, Driver, Event, Exchange, READ_PIECE, RequestBody,
    SeekableSource, Source, SourceError, Timer, transport_fn,
};
use resumable_core::checksum::{Checksums, crc32c_base64};
use resumable_core::gcs::{GcsConfig, GcsUpload, Start};
use resumable_core::{Action, TransportFailure, Upload};

const KIB: u64 = 1024;
const CHUNK: u64 = 256 * KIB;
const SESSION: &str = "https://storage.example/upload/session?upload_id=secret-id";

fn data(len: u64) -> Vec<u8> {
    (0..len).map(|i| (i.wrapping_mul(31) % 253) as u8).collect()
}

fn upload(total: u64, chunk: u64, checksums: Checksums) -> GcsUpload {
    let mut config = GcsConfig::new(Some(total));
    config.chunk_size = chunk;
    config.checksums = checksums;
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
struct FakeTimer {
    now: Rc<Cell<Instant>>,
    sleeps: Rc<RefCell<Vec<Duration>>>,
}

impl FakeTimer {
    fn new() -> Self {
        FakeTimer {
            now: Rc::new(Cell::new(Instant::now())),
            sleeps: Rc::default(),
        }
    }
}

impl Timer for FakeTimer {
    fn now(&mut self) -> Instant {
        self.now.get()
    }

    async fn sleep_until(&mut self, deadline: Instant) {
        let now = self.now.get();
        if deadline > now {
            self.sleeps.borrow_mut().push(deadline - now);
            self.now.set(deadline);
        }
    }
}

/// What the scripted server does with the next chunk.
#[derive(Clone, Copy, Debug)]
enum Fault {
    Store,
    /// Store only this many bytes of the chunk (G5).
    Persist(usize),
    /// Read the body, store nothing, answer this status.
    Status(u16),
}

/// One request as the scripted server saw it.
#[derive(Clone, Debug)]
struct Seen {
    method: Method,
    content_range: Option<String>,
    content_length: Option<u64>,
    x_goog_hash: Option<String>,
    body: Vec<u8>,
    pieces: Vec<usize>,
}

/// A GCS-like server in memory (G1, G4–G7), with faults for the next chunks.
#[derive(Default)]
struct FakeGcs {
    stored: Vec<u8>,
    total: Option<u64>,
    faults: VecDeque<Fault>,
    log: Vec<Seen>,
    /// Called with the source offset reached, for every piece of a chunk received.
    on_piece: Option<Box<dyn FnMut(u64)>>,
}

type Shared = Rc<RefCell<FakeGcs>>;

async fn handle(server: Shared, request: http::Request<RequestBody>) -> Exchange {
    let header = |name: &str| {
        request
            .headers()
            .get(name)
            .map(|v| v.to_str().unwrap().to_owned())
    };
    let mut seen = Seen {
        method: request.method().clone(),
        content_range: header("content-range"),
        content_length: header("content-length").map(|v| v.parse().unwrap()),
        x_goog_hash: header("x-goog-hash"),
        body: Vec::new(),
        pieces: Vec::new(),
    };
    let start = seen.content_range.as_deref().and_then(|r| {
        r.strip_prefix("bytes ")?
            .split_once('-')?
            .0
            .parse::<u64>()
            .ok()
    });
    let mut body = request.into_body();
    assert_eq!(seen.content_length, Some(body.len()), "G4: Content-Length");
    while let Some(piece) = body.next().await {
        let Ok(piece) = piece else {
            server.borrow_mut().log.push(seen);
            return Err(TransportFailure::Other);
        };
        seen.pieces.push(piece.len());
        seen.body.extend_from_slice(&piece);
        if let (Some(start), Some(f)) = (start, server.borrow_mut().on_piece.as_mut()) {
            f(start + seen.body.len() as u64);
        }
    }
    assert_eq!(seen.body.len() as u64, body.len());
    let mut gcs = server.borrow_mut();
    let response = gcs.answer(&seen);
    gcs.log.push(seen);
    Ok(response.body(Bytes::new()).unwrap())
}

impl FakeGcs {
    fn answer(&mut self, seen: &Seen) -> http::response::Builder {
        if seen.method == Method::POST {
            return Response::builder().status(201).header("location", SESSION);
        }
        let range = seen.content_range.as_deref().expect("Content-Range");
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
            let fault = self.faults.pop_front().unwrap_or(Fault::Store);
            let keep = match fault {
                Fault::Store => seen.body.len(),
                Fault::Persist(n) => n.min(seen.body.len()),
                Fault::Status(status) => return Response::builder().status(status),
            };
            let already = self.stored.len() - start;
            if keep > already {
                self.stored.extend_from_slice(&seen.body[already..keep]);
            }
        }
        if self.total == Some(self.stored.len() as u64) {
            Response::builder().status(200)
        } else {
            let builder = Response::builder().status(308);
            match self.stored.len() {
                0 => builder,
                n => builder.header("range", format!("bytes=0-{}", n - 1)),
            }
        }
    }
}

fn server(faults: impl IntoIterator<Item = Fault>) -> Shared {
    Rc::new(RefCell::new(FakeGcs {
        faults: faults.into_iter().collect(),
        ..FakeGcs::default()
    }))
}

/// The scripted server as a transport.
fn transport(server: &Shared) -> impl resumable_async::Transport + use<> {
    let server = server.clone();
    transport_fn(move |request| handle(server.clone(), request))
}

fn cursor(source: &[u8]) -> SeekableSource<futures::io::Cursor<Vec<u8>>> {
    SeekableSource::new(futures::io::Cursor::new(source.to_vec()))
}

// G8: a retryable 503 makes the upload wait (initial backoff 1 s plus up to 1 s of jitter,
// then doubled); the waits go through the timer, so nothing really sleeps; each is followed
// by a status query.
#[test]
fn a_retryable_503_waits_on_the_timer() {
    let source = data(300 * KIB);
    let mut upload = upload(source.len() as u64, CHUNK, Checksums::default());
    let server = server([Fault::Status(503), Fault::Status(503)]);
    let timer = FakeTimer::new();
    let real = Instant::now();
    block_on(Driver::new(timer.clone()).drive(
        &mut upload,
        &mut cursor(&source),
        &transport(&server),
    ))
    .unwrap();

    assert!(real.elapsed() < Duration::from_millis(900), "really slept");
    let sleeps = timer.sleeps.borrow().clone();
    assert_eq!(sleeps.len(), 2, "{sleeps:?}");
    assert!(sleeps[0] >= Duration::from_secs(1) && sleeps[0] <= Duration::from_secs(2));
    assert!(sleeps[1] >= Duration::from_secs(2) && sleeps[1] <= Duration::from_secs(3));
    let server = server.borrow();
    assert_eq!(server.stored, source);
    let failed = server
        .log
        .iter()
        .position(|s| s.body.len() as u64 == CHUNK)
        .unwrap();
    assert_eq!(
        server.log[failed + 1].content_range.as_deref(),
        Some("bytes */307200")
    );
    assert_eq!(upload.stats().retries, 2);
}

// G7: the final chunk carries `x-goog-hash: crc32c=…` of the whole source; earlier chunks
// carry none.
#[test]
fn the_final_request_carries_x_goog_hash() {
    let source = data(600 * KIB);
    let mut upload = upload(source.len() as u64, CHUNK, Checksums::default());
    let server = server([]);
    let completion = block_on(resumable_async::drive(
        &mut upload,
        &mut cursor(&source),
        &transport(&server),
        FakeTimer::new(),
    ))
    .unwrap();
    assert!(completion.verified.size || completion.object.is_none());
    let crc = crc32c_base64(crc32c::crc32c(&source));
    let server = server.borrow();
    let chunks: Vec<_> = server.log.iter().filter(|s| !s.body.is_empty()).collect();
    let (last, earlier) = chunks.split_last().unwrap();
    assert_eq!(last.x_goog_hash.as_deref(), Some(&*format!("crc32c={crc}")));
    assert!(earlier.iter().all(|c| c.x_goog_hash.is_none()));
}

/// A source that remembers how far it has been read.
struct Tracked<S> {
    inner: S,
    read_end: Rc<Cell<u64>>,
}

impl<S: Source> Source for Tracked<S> {
    async fn read_at(&mut self, offset: u64, max: usize) -> Result<Bytes, SourceError> {
        let bytes = self.inner.read_at(offset, max).await?;
        let end = offset + bytes.len() as u64;
        self.read_end.set(self.read_end.get().max(end));
        Ok(bytes)
    }
}

// G4: a chunk is streamed, not buffered whole: the source is read in pieces of at most
// 64 KiB as the transport takes them, never more than three pieces ahead of what the
// transport received, whatever the chunk's size.
#[test]
fn a_chunk_is_streamed_as_the_transport_takes_it() {
    let chunk = 8 * 1024 * KIB;
    let source = data(chunk + 1000);
    // No checksums: the core reads nothing before a request, only the body reads.
    let mut upload = upload(source.len() as u64, chunk, Checksums::NONE);
    let server = server([]);
    let read_end = Rc::new(Cell::new(0));
    let ahead = Rc::new(Cell::new(0u64));
    {
        let (read_end, ahead) = (read_end.clone(), ahead.clone());
        server.borrow_mut().on_piece = Some(Box::new(move |position| {
            ahead.set(ahead.get().max(read_end.get() - position));
        }));
    }
    let mut source_reader = Tracked {
        inner: cursor(&source),
        read_end: read_end.clone(),
    };
    block_on(Driver::new(FakeTimer::new()).drive(
        &mut upload,
        &mut source_reader,
        &transport(&server),
    ))
    .unwrap();

    let server = server.borrow();
    assert_eq!(server.stored, source);
    let big = server
        .log
        .iter()
        .find(|s| s.body.len() as u64 == chunk)
        .unwrap();
    assert!(big.pieces.iter().all(|&n| n <= READ_PIECE));
    assert_eq!(big.pieces.len(), (chunk / READ_PIECE as u64) as usize);
    assert!(
        ahead.get() <= 3 * READ_PIECE as u64,
        "the source was read {} bytes ahead of the transport",
        ahead.get()
    );
}

// The core is handed at most 64 KiB per `Read` action (any non-empty prefix is accepted),
// and the driver reports the bytes it sends: with a known size only the final chunk is read
// ahead (for its x-goog-hash), the others are checksummed as they go out.
#[test]
fn reads_are_handed_to_the_core_in_64_kib_pieces_and_only_for_the_final_chunk() {
    let source = data(600 * KIB);
    let mut upload = upload(source.len() as u64, CHUNK, Checksums::default());
    let server = server([]);
    let mut reads = Vec::new();
    block_on(
        Driver::new(FakeTimer::new())
            .on_event(|_: &GcsUpload, event: &Event<'_>| {
                if let Event::SourceRead { range } = event {
                    reads.push(range.clone());
                }
                Ok(())
            })
            .drive(&mut upload, &mut cursor(&source), &transport(&server)),
    )
    .unwrap();
    assert!(reads.iter().all(|r| r.end - r.start <= READ_PIECE as u64));
    assert!(reads.windows(2).all(|w| w[0].end == w[1].start));
    let final_chunk = source.len() as u64 / CHUNK * CHUNK;
    assert_eq!(reads.first().unwrap().start, final_chunk);
    assert_eq!(reads.last().unwrap().end, source.len() as u64);
    let done = upload.poll_action(std::time::Instant::now());
    assert!(
        matches!(done, resumable_core::Action::Done(Ok(c)) if c.crc32c == Some(crc32c::crc32c(&source)))
    );
}

// Progress: body bytes are counted as the transport takes them, with the persisted count
// alongside; the last report has everything sent.
#[test]
fn progress_counts_body_bytes_sent_and_bytes_persisted() {
    let source = data(600 * KIB);
    let mut upload = upload(source.len() as u64, CHUNK, Checksums::default());
    let server = server([Fault::Persist(100_000)]);
    let mut reports: Vec<Progress> = Vec::new();
    block_on(
        Driver::new(FakeTimer::new())
            .on_event(|_: &GcsUpload, event: &Event<'_>| {
                if let Event::Progress(progress) = event {
                    reports.push(*progress);
                }
                Ok(())
            })
            .drive(&mut upload, &mut cursor(&source), &transport(&server)),
    )
    .unwrap();

    let body_bytes: u64 = server
        .borrow()
        .log
        .iter()
        .map(|s| s.body.len() as u64)
        .sum();
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
    // The re-send after partial persistence starts again at the persisted offset (reports
    // come at least every two pieces: the most the transport can take between two polls).
    assert!(
        reports
            .iter()
            .any(|p| p.persisted == 100_000 && p.source_position <= 100_000 + 128 * KIB)
    );
}

// A hook that fails at `Sending` (the resume state could not be saved) ends the drive with
// its error before the request goes out.
#[test]
fn a_failing_hook_ends_the_drive_before_anything_is_sent() {
    let source = data(300 * KIB);
    let mut upload = upload(source.len() as u64, CHUNK, Checksums::default());
    let server = server([]);
    let result = block_on(
        Driver::new(FakeTimer::new())
            .on_event(|_: &GcsUpload, event: &Event<'_>| match event {
                Event::Sending { send } if !send.body.source.is_empty() => Err("disk full".into()),
                _ => Ok(()),
            })
            .drive(&mut upload, &mut cursor(&source), &transport(&server)),
    );
    assert!(matches!(&result, Err(DriveError::Hook(e)) if e.to_string() == "disk full"));
    assert!(server.borrow().log.iter().all(|s| s.body.is_empty()));
}

// A hook that fails while a body streams stops the body (the transport sees an error, never a
// short request), and the upload is told the request failed: it is not left in flight, and
// its next step is a backoff before a status query (G8).
#[test]
fn a_hook_failing_mid_body_abandons_the_request() {
    let source = data(600 * KIB);
    let mut upload = upload(source.len() as u64, CHUNK, Checksums::default());
    let server = server([]);
    let reached = Rc::new(Cell::new(0));
    let note = reached.clone();
    server.borrow_mut().on_piece = Some(Box::new(move |position| note.set(position)));
    let result = block_on(
        Driver::new(FakeTimer::new())
            .on_event(|_: &GcsUpload, event: &Event<'_>| match event {
                Event::Progress(p) if p.body_sent > 100_000 => Err("stop".into()),
                _ => Ok(()),
            })
            .drive(&mut upload, &mut cursor(&source), &transport(&server)),
    );
    assert!(matches!(&result, Err(DriveError::Hook(_))), "{result:?}");
    assert!(reached.get() < CHUNK, "the body was not stopped");
    let server = server.borrow();
    // The chunk never completed: only the start went through.
    assert_eq!(server.log.len(), 1);
    assert!(server.stored.is_empty());
    assert!(upload.resume_state().is_some());
    assert!(matches!(
        upload.poll_action(Instant::now()),
        Action::Wait(_)
    ));
}
