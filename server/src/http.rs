//! HTTP/1.1 on one connection: request heads (parsed by `httparse`, bounded), request bodies
//! (`Content-Length` or chunked, read in large blocks), responses.

use std::io::{self, Read, Write};
use std::net::TcpStream;
use std::ops::Range;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime};

use http::{HeaderMap, HeaderName, HeaderValue};

use crate::blob::Blob;
use crate::gcs::StoredObject;

/// The largest request head accepted (request line and headers); larger answers 431.
pub(crate) const MAX_HEAD: usize = 64 * 1024;
/// The most header fields accepted; more answers 431.
pub(crate) const MAX_HEADERS: usize = 100;
/// Scratch space for discarded body bytes.
const SCRATCH: usize = 256 * 1024;

/// One accepted connection with its read buffer.
pub(crate) struct Conn {
    pub(crate) stream: TcpStream,
    /// Close with a reset: no shutdown before the socket is closed (`SO_LINGER` 0 is set).
    pub(crate) reset: bool,
    buf: Vec<u8>,
    start: usize,
    end: usize,
    scratch: Vec<u8>,
}

/// How a request body is delimited.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Framing {
    /// `Content-Length: n` (no header: 0).
    Length(u64),
    /// `Transfer-Encoding: chunked`.
    Chunked,
}

/// A parsed request head.
#[derive(Debug)]
pub(crate) struct Request {
    pub(crate) method: String,
    /// The path, still percent-encoded, without the query.
    pub(crate) path: String,
    /// Query parameters, percent-decoded, in order.
    pub(crate) query: Vec<(String, String)>,
    pub(crate) headers: HeaderMap,
    pub(crate) framing: Framing,
    /// Whether the client allows the connection to be reused.
    pub(crate) keep_alive: bool,
    /// `Expect: 100-continue`.
    pub(crate) expect_continue: bool,
}

impl Request {
    /// The first query parameter called `name`.
    pub(crate) fn query_param(&self, name: &str) -> Option<&str> {
        self.query
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// A header as text (`None` if absent or not visible ASCII).
    pub(crate) fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// The declared body length, when known in advance.
    pub(crate) fn content_length(&self) -> Option<u64> {
        match self.framing {
            Framing::Length(n) => Some(n),
            Framing::Chunked => None,
        }
    }
}

/// Why no request head could be read.
#[derive(Debug)]
pub(crate) enum HeadError {
    /// The peer closed (or went idle) between requests: not an error.
    Closed,
    /// The head is larger than [`MAX_HEAD`] or has more than [`MAX_HEADERS`] fields: 431.
    TooLarge,
    /// Not HTTP/1.x, or a malformed or contradictory head: 400.
    Malformed(&'static str),
}

impl Conn {
    pub(crate) fn new(stream: TcpStream) -> Self {
        Conn {
            stream,
            reset: false,
            buf: vec![0; MAX_HEAD],
            start: 0,
            end: 0,
            scratch: Vec::new(),
        }
    }

    fn buffered(&self) -> &[u8] {
        &self.buf[self.start..self.end]
    }

    /// Reads more bytes into the buffer (after compacting it). `Ok(0)` at end of stream or
    /// when the buffer is full.
    fn fill(&mut self) -> io::Result<usize> {
        if self.start > 0 {
            self.buf.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
        }
        if self.end == self.buf.len() {
            return Ok(0);
        }
        loop {
            match self.stream.read(&mut self.buf[self.end..]) {
                Ok(n) => {
                    self.end += n;
                    return Ok(n);
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            }
        }
    }

    /// Reads and parses the next request head.
    pub(crate) fn read_head(&mut self) -> Result<Request, HeadError> {
        loop {
            if self.start < self.end {
                match parse_head(self.buffered()) {
                    Ok(Some((len, request))) => {
                        self.start += len;
                        return Ok(request);
                    }
                    Ok(None) => {
                        if self.end - self.start >= MAX_HEAD {
                            return Err(HeadError::TooLarge);
                        }
                    }
                    Err(e) => return Err(e),
                }
            }
            let had = self.end - self.start;
            match self.fill() {
                Ok(0) if had == 0 => return Err(HeadError::Closed),
                Ok(0) => return Err(HeadError::Malformed("the connection closed mid-head")),
                Ok(_) => {}
                Err(_) if had == 0 => return Err(HeadError::Closed),
                Err(_) => return Err(HeadError::Malformed("the connection failed mid-head")),
            }
        }
    }

    /// Buffers up to `want` bytes of what follows the request head (the start of its body)
    /// without consuming them, waiting at most `wait`, and returns what is buffered: fewer
    /// bytes when the peer closes, fails or is slower. `want` is capped by the buffer
    /// (64 KiB). The read timeout is `idle` again afterwards.
    pub(crate) fn peek(&mut self, want: usize, wait: Duration, idle: Duration) -> &[u8] {
        let want = want.min(self.buf.len());
        let deadline = Instant::now() + wait;
        while self.end - self.start < want {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() || self.stream.set_read_timeout(Some(left)).is_err() {
                break;
            }
            match self.fill() {
                Ok(0) | Err(_) => break,
                Ok(_) => {}
            }
        }
        let _ = self
            .stream
            .set_read_timeout(Some(idle.max(Duration::from_millis(1))));
        let n = (self.end - self.start).min(want);
        &self.buf[self.start..self.start + n]
    }

    /// Writes all of `bytes`.
    pub(crate) fn write_all(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.stream.write_all(bytes)?;
        self.stream.flush()
    }
}

/// `Ok(Some((head length, request)))`, `Ok(None)` when more bytes are needed.
fn parse_head(buf: &[u8]) -> Result<Option<(usize, Request)>, HeadError> {
    let mut fields = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut fields);
    let len = match req.parse(buf) {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(httparse::Error::TooManyHeaders) => return Err(HeadError::TooLarge),
        Err(_) => return Err(HeadError::Malformed("malformed request head")),
    };
    let method = req.method.unwrap_or("").to_owned();
    let target = req.path.unwrap_or("");
    let http10 = req.version == Some(0);
    let mut headers = HeaderMap::new();
    for h in req.headers.iter() {
        let name = HeaderName::from_bytes(h.name.as_bytes())
            .map_err(|_| HeadError::Malformed("bad header name"))?;
        let value = HeaderValue::from_bytes(h.value)
            .map_err(|_| HeadError::Malformed("bad header value"))?;
        headers.append(name, value);
    }
    let (path, raw_query) = match target.split_once('?') {
        Some((p, q)) => (p, q),
        None => (target, ""),
    };
    if !path.starts_with('/') {
        return Err(HeadError::Malformed("the request target must be a path"));
    }
    let query = parse_query(raw_query).ok_or(HeadError::Malformed("bad query string"))?;

    let chunked = match headers
        .get_all(http::header::TRANSFER_ENCODING)
        .iter()
        .count()
    {
        0 => false,
        1 => {
            let te = headers
                .get(http::header::TRANSFER_ENCODING)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("");
            if !te.trim().eq_ignore_ascii_case("chunked") {
                return Err(HeadError::Malformed("unsupported Transfer-Encoding"));
            }
            true
        }
        _ => return Err(HeadError::Malformed("repeated Transfer-Encoding")),
    };
    let mut lengths = headers.get_all(http::header::CONTENT_LENGTH).iter();
    let length = match (lengths.next(), lengths.next()) {
        (None, _) => None,
        (Some(v), None) => Some(
            v.to_str()
                .ok()
                .and_then(|s| parse_u64(s.trim()))
                .ok_or(HeadError::Malformed("bad Content-Length"))?,
        ),
        (Some(_), Some(_)) => return Err(HeadError::Malformed("repeated Content-Length")),
    };
    let framing = match (chunked, length) {
        (true, Some(_)) => {
            return Err(HeadError::Malformed(
                "both Content-Length and Transfer-Encoding",
            ));
        }
        (true, None) => Framing::Chunked,
        (false, n) => Framing::Length(n.unwrap_or(0)),
    };
    let connection = headers
        .get(http::header::CONNECTION)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_ascii_lowercase();
    let keep_alive = if http10 {
        connection.contains("keep-alive")
    } else {
        !connection.contains("close")
    };
    let expect_continue = headers
        .get(http::header::EXPECT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.trim().eq_ignore_ascii_case("100-continue"));
    Ok(Some((
        len,
        Request {
            method,
            path: path.to_owned(),
            query,
            headers,
            framing,
            keep_alive,
            expect_continue,
        },
    )))
}

/// Where a body stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum BodyState {
    /// More body bytes may follow.
    Open,
    /// The body ended as declared.
    Done,
    /// The body was cut short: the drop-after limit was reached, the peer closed or failed,
    /// or the chunked framing was malformed. The connection cannot be reused.
    Cut,
}

/// A request body being read from a connection.
pub(crate) struct Body<'c> {
    conn: &'c mut Conn,
    chunked: bool,
    /// Bytes left in the body (length framing) or in the current chunk (chunked).
    remaining: u64,
    /// Chunked: a CRLF ends the current chunk's data before the next size line.
    need_crlf: bool,
    state: BodyState,
    /// Stop after this many body bytes (the drop-after fault).
    limit: Option<u64>,
    /// Stop reading for a while once this many body bytes are in.
    pause: Option<Pause<'c>>,
    /// Read at most this fast (the rate fault).
    pace: Option<Pace<'c>>,
    received: u64,
    total_counter: &'c AtomicU64,
    continue_pending: bool,
}

/// A pause in reading a body (storage-testbench's `stall-for-Ts-after-YK`).
struct Pause<'c> {
    at: u64,
    wait: Duration,
    sleep: &'c dyn Fn(Duration),
}

/// A body read at a fixed rate: after each read, sleep until the bytes read so far are due.
struct Pace<'c> {
    bytes_per_sec: u64,
    started: std::time::Instant,
    sleep: &'c dyn Fn(Duration),
}

/// The most read at once while pacing, so the rate holds over short spans too.
const PACE_PIECE: u64 = 64 * 1024;

impl<'c> Body<'c> {
    pub(crate) fn new(
        conn: &'c mut Conn,
        request: &Request,
        limit: Option<u64>,
        total_counter: &'c AtomicU64,
    ) -> Self {
        let (chunked, remaining, state) = match request.framing {
            Framing::Length(0) => (false, 0, BodyState::Done),
            Framing::Length(n) => (false, n, BodyState::Open),
            Framing::Chunked => (true, 0, BodyState::Open),
        };
        Body {
            conn,
            chunked,
            remaining,
            need_crlf: false,
            state,
            limit,
            pause: None,
            pace: None,
            received: 0,
            total_counter,
            continue_pending: request.expect_continue && state == BodyState::Open,
        }
    }

    /// Stops reading for `wait` (through `sleep`) once `at` body bytes are in.
    pub(crate) fn pause_at(&mut self, at: u64, wait: Duration, sleep: &'c dyn Fn(Duration)) {
        self.pause = Some(Pause { at, wait, sleep });
    }

    /// Reads the body at most `bytes_per_sec` (sleeping through `sleep`).
    pub(crate) fn pace(&mut self, bytes_per_sec: u64, sleep: &'c dyn Fn(Duration)) {
        self.pace = Some(Pace {
            bytes_per_sec: bytes_per_sec.max(1),
            started: std::time::Instant::now(),
            sleep,
        });
    }

    /// Body bytes read so far.
    pub(crate) fn received(&self) -> u64 {
        self.received
    }

    pub(crate) fn state(&self) -> BodyState {
        self.state
    }

    /// Answers `Expect: 100-continue` before the first body byte is read.
    fn send_continue(&mut self) {
        if self.continue_pending {
            self.continue_pending = false;
            if self
                .conn
                .write_all(b"HTTP/1.1 100 Continue\r\n\r\n")
                .is_err()
            {
                self.state = BodyState::Cut;
            }
        }
    }

    /// Writes an interim (1xx) response with these header lines before the body is read (the
    /// resumable-upload draft's `104`, R4). A failed write cuts the body.
    pub(crate) fn send_interim(&mut self, status: u16, reason: &str, headers: &[(&str, String)]) {
        let mut head = format!("HTTP/1.1 {status} {reason}\r\n");
        for (name, value) in headers {
            head.push_str(&format!("{name}: {value}\r\n"));
        }
        head.push_str("\r\n");
        if self.conn.write_all(head.as_bytes()).is_err() {
            self.state = BodyState::Cut;
        }
    }

    /// Makes `remaining` describe the next data bytes; `false` when there are none (the body
    /// ended or was cut).
    fn ready(&mut self) -> bool {
        self.send_continue();
        if self.state != BodyState::Open {
            return false;
        }
        if self.remaining > 0 {
            if self.limit.is_some_and(|l| self.received >= l) {
                self.state = BodyState::Cut;
                return false;
            }
            if self.pause.as_ref().is_some_and(|p| self.received >= p.at)
                && let Some(p) = self.pause.take()
            {
                (p.sleep)(p.wait);
            }
            return true;
        }
        if !self.chunked {
            self.state = BodyState::Done;
            return false;
        }
        match self.next_chunk() {
            Some(0) => {
                self.state = BodyState::Done;
                false
            }
            Some(n) => {
                self.remaining = n;
                self.ready()
            }
            None => {
                self.state = BodyState::Cut;
                false
            }
        }
    }

    /// Reads the next chunk-size line (and, for the last chunk, the trailers). `None` when
    /// malformed or the connection failed.
    fn next_chunk(&mut self) -> Option<u64> {
        if self.need_crlf {
            self.read_line()?.is_empty().then_some(())?;
            self.need_crlf = false;
        }
        let line = self.read_line()?;
        let mut with_crlf = line;
        with_crlf.extend_from_slice(b"\r\n");
        let size = match httparse::parse_chunk_size(&with_crlf) {
            Ok(httparse::Status::Complete((_, size))) => size,
            _ => return None,
        };
        if size == 0 {
            // Trailers, up to an empty line; bounded by the head limit.
            let mut total = 0usize;
            loop {
                let line = self.read_line()?;
                total += line.len() + 2;
                if line.is_empty() {
                    break;
                }
                if total > MAX_HEAD {
                    return None;
                }
            }
        } else {
            self.need_crlf = true;
        }
        Some(size)
    }

    /// A CRLF- (or LF-) terminated line from the buffer, without the terminator; at most
    /// [`MAX_HEAD`] bytes.
    fn read_line(&mut self) -> Option<Vec<u8>> {
        loop {
            if let Some(pos) = self.conn.buffered().iter().position(|&b| b == b'\n') {
                let line = &self.conn.buffered()[..pos];
                let line = line.strip_suffix(b"\r").unwrap_or(line).to_vec();
                self.conn.start += pos + 1;
                return Some(line);
            }
            match self.conn.fill() {
                Ok(0) | Err(_) => return None,
                Ok(_) => {}
            }
        }
    }

    /// How many data bytes may be read now, at most `max`.
    fn allowance(&self, max: u64) -> u64 {
        let mut n = self.remaining.min(max);
        if let Some(limit) = self.limit {
            n = n.min(limit.saturating_sub(self.received));
        }
        if self.pace.is_some() {
            n = n.min(PACE_PIECE);
        }
        if let Some(p) = &self.pause {
            // Up to the pause (then `ready` waits and lifts it).
            if p.at > self.received {
                n = n.min(p.at - self.received);
            }
        }
        n
    }

    fn account(&mut self, n: u64) {
        self.received += n;
        self.remaining -= n;
        if let Some(p) = &self.pace {
            let due = Duration::from_secs_f64(self.received as f64 / p.bytes_per_sec as f64);
            if let Some(ahead) = due.checked_sub(p.started.elapsed()) {
                (p.sleep)(ahead);
            }
        }
        if !self.chunked && self.remaining == 0 && self.state == BodyState::Open {
            self.state = BodyState::Done;
        }
    }

    /// Whether more body bytes follow (for chunked framing this reads ahead to the next
    /// chunk-size line, so afterwards [`Body::state`] is exact).
    pub(crate) fn more(&mut self) -> bool {
        self.ready()
    }

    /// Appends up to `max` body bytes to `blob`, in large blocks straight from the socket.
    /// Returns how many were appended; fewer than `max` means the body ended or was cut
    /// (see [`Body::state`]).
    pub(crate) fn read_into(&mut self, blob: &mut Blob, max: u64) -> u64 {
        let mut done = 0u64;
        while done < max && self.ready() {
            let want = self.allowance(max - done);
            blob.reserve(want);
            // What is already buffered first, then directly from the socket.
            let buffered = self.conn.buffered();
            let from_buf = (buffered.len() as u64).min(want) as usize;
            if from_buf > 0 {
                blob.extend_from_slice(&buffered[..from_buf]);
                self.conn.start += from_buf;
                self.total_counter
                    .fetch_add(from_buf as u64, Ordering::Relaxed);
                self.account(from_buf as u64);
                done += from_buf as u64;
                continue;
            }
            let counter = self.total_counter;
            let filled = blob.fill_from(&mut self.conn.stream, want, |n| {
                counter.fetch_add(n, Ordering::Relaxed);
            });
            self.account(filled.read);
            done += filled.read;
            if filled.error.is_some() || filled.read < want {
                self.state = BodyState::Cut;
            }
        }
        done
    }

    /// Reads and discards up to `max` body bytes; returns how many.
    pub(crate) fn discard(&mut self, max: u64) -> u64 {
        let mut done = 0u64;
        if self.conn.scratch.is_empty() {
            self.conn.scratch = vec![0; SCRATCH];
        }
        while done < max && self.ready() {
            let want = self.allowance(max - done);
            let buffered = self.conn.end - self.conn.start;
            let n = if buffered > 0 {
                let n = (buffered as u64).min(want) as usize;
                self.conn.start += n;
                n
            } else {
                let cap = (want as usize).min(SCRATCH);
                match self.conn.stream.read(&mut self.conn.scratch[..cap]) {
                    Ok(0) => {
                        self.state = BodyState::Cut;
                        0
                    }
                    Ok(n) => n,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    Err(_) => {
                        self.state = BodyState::Cut;
                        0
                    }
                }
            };
            self.total_counter.fetch_add(n as u64, Ordering::Relaxed);
            self.account(n as u64);
            done += n as u64;
        }
        done
    }

    /// Reads the whole body if it is at most `cap` bytes. `Err(true)` when larger (the rest
    /// stays unread), `Err(false)` when cut short.
    pub(crate) fn read_small(&mut self, cap: usize) -> Result<Vec<u8>, bool> {
        let mut blob = Blob::default();
        self.read_into(&mut blob, cap as u64);
        match self.state {
            BodyState::Done => Ok(blob.to_vec()),
            BodyState::Cut => Err(false),
            BodyState::Open => {
                // Exactly `cap` bytes read: the body is larger unless it ends right here.
                if self.more() {
                    Err(true)
                } else if self.state == BodyState::Done {
                    Ok(blob.to_vec())
                } else {
                    Err(false)
                }
            }
        }
    }

    /// Reads and discards the rest of the body.
    pub(crate) fn drain(&mut self) {
        while self.state == BodyState::Open {
            self.discard(u64::MAX);
        }
    }
}

/// A response to write.
#[derive(Debug)]
pub(crate) struct Response {
    pub(crate) status: u16,
    pub(crate) headers: Vec<(String, String)>,
    pub(crate) body: Vec<u8>,
    /// A body streamed from a stored object's bytes instead of `body` (downloads: no copy
    /// of the object is made).
    pub(crate) object: Option<ObjectBody>,
}

/// The bytes `range` of a stored object, as a response body.
pub(crate) struct ObjectBody {
    pub(crate) object: Arc<StoredObject>,
    pub(crate) range: Range<u64>,
}

impl std::fmt::Debug for ObjectBody {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ObjectBody")
            .field("range", &self.range)
            .finish_non_exhaustive()
    }
}

/// How a response body is written: whole, or cut or paused at an offset (fault injection).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Delivery {
    /// Write only this many body bytes (the head still declares the whole body), then stop.
    pub(crate) cut_after: Option<u64>,
    /// After this many body bytes, pause for the duration.
    pub(crate) stall_at: Option<(u64, Duration)>,
}

impl Response {
    pub(crate) fn new(status: u16) -> Self {
        Response {
            status,
            headers: Vec::new(),
            body: Vec::new(),
            object: None,
        }
    }

    /// Adds a header.
    pub(crate) fn header(mut self, name: &str, value: impl Into<String>) -> Self {
        self.headers.push((name.to_owned(), value.into()));
        self
    }

    /// Sets a JSON body.
    pub(crate) fn json(mut self, value: &serde_json::Value) -> Self {
        self.body = value.to_string().into_bytes();
        self.headers.push((
            "Content-Type".to_owned(),
            "application/json; charset=UTF-8".to_owned(),
        ));
        self
    }

    /// Sets a body with its type.
    pub(crate) fn body(mut self, content_type: &str, body: Vec<u8>) -> Self {
        self.body = body;
        self.headers
            .push(("Content-Type".to_owned(), content_type.to_owned()));
        self
    }

    /// Sets a body streamed from `object`'s bytes `range`, with its type.
    pub(crate) fn object_body(
        mut self,
        content_type: &str,
        object: Arc<StoredObject>,
        range: Range<u64>,
    ) -> Self {
        self.body = Vec::new();
        self.object = Some(ObjectBody { object, range });
        self.headers
            .push(("Content-Type".to_owned(), content_type.to_owned()));
        self
    }

    /// The body's length in bytes.
    pub(crate) fn body_len(&self) -> u64 {
        match &self.object {
            Some(o) => o.range.end - o.range.start,
            None => self.body.len() as u64,
        }
    }

    /// The first `n` bytes of the body (all of it if shorter).
    pub(crate) fn body_prefix(&self, n: u64) -> Vec<u8> {
        match &self.object {
            Some(o) => {
                let end = o.range.start.saturating_add(n).min(o.range.end);
                o.object.data.copy_range(o.range.start..end)
            }
            None => {
                let n = usize::try_from(n)
                    .unwrap_or(usize::MAX)
                    .min(self.body.len());
                self.body[..n].to_vec()
            }
        }
    }

    /// Makes the body an owned copy (so a fault can change it).
    pub(crate) fn materialize(&mut self) {
        if self.object.is_some() {
            self.body = self.body_prefix(u64::MAX);
            self.object = None;
        }
    }

    /// Writes the head and the body to `out` as `delivery` says; `pause` is called to
    /// stall. Small bodies go out with the head in one write.
    pub(crate) fn write_to(
        &self,
        out: &mut impl Write,
        close: bool,
        delivery: Delivery,
        pause: impl Fn(Duration),
    ) -> io::Result<()> {
        let mut head = self.head_bytes(close, 0);
        let len = self.body_len();
        let limit = delivery.cut_after.unwrap_or(u64::MAX).min(len);
        let mut written = 0u64;
        let mut stall = delivery.stall_at.filter(|(at, _)| *at < limit);
        // One slice of the body, pausing once when the stall offset is reached.
        let mut send =
            |out: &mut dyn Write, mut slice: &[u8], head: &mut Vec<u8>| -> io::Result<()> {
                let room = limit.saturating_sub(written);
                slice = &slice[..usize::try_from(room).unwrap_or(usize::MAX).min(slice.len())];
                if let Some((at, d)) = stall
                    && at < written + slice.len() as u64
                {
                    let k = usize::try_from(at - written).unwrap_or(0);
                    head.extend_from_slice(&slice[..k]);
                    out.write_all(head)?;
                    out.flush()?;
                    head.clear();
                    written += k as u64;
                    slice = &slice[k..];
                    pause(d);
                    stall = None;
                }
                if head.len() + slice.len() <= 64 * 1024 {
                    head.extend_from_slice(slice);
                } else {
                    if !head.is_empty() {
                        out.write_all(head)?;
                        head.clear();
                    }
                    out.write_all(slice)?;
                }
                written += slice.len() as u64;
                Ok(())
            };
        match &self.object {
            Some(o) => {
                let mut result = Ok(());
                o.object.data.for_each_slice(o.range.clone(), |slice| {
                    if result.is_ok() {
                        result = send(out, slice, &mut head);
                    }
                });
                result?;
            }
            None => send(out, &self.body, &mut head)?,
        }
        out.write_all(&head)?;
        out.flush()
    }

    /// Serialises the head (with `Content-Length`, `Date`, and `Connection: close` when
    /// `close`), claiming `extra` more body bytes than the body has (for the truncate fault).
    pub(crate) fn head_bytes(&self, close: bool, extra: u64) -> Vec<u8> {
        let mut out = Vec::with_capacity(256);
        let _ = write!(out, "HTTP/1.1 {} {}\r\n", self.status, reason(self.status));
        for (name, value) in &self.headers {
            // Header values are built by this crate; strip CR/LF defensively anyway.
            let value: String = value.chars().filter(|c| *c != '\r' && *c != '\n').collect();
            let _ = write!(out, "{name}: {value}\r\n");
        }
        let len = self.body_len();
        // A handler that set Content-Length itself (an answer to HEAD: the length of what a
        // GET would send, with no body) keeps it.
        let own_length = self
            .headers
            .iter()
            .any(|(name, _)| name.eq_ignore_ascii_case("content-length"));
        // A 204 or 304 has no body and so no Content-Length (RFC 9110), unless a fault lies.
        if !own_length && (!matches!(self.status, 204 | 304) || extra > 0 || len > 0) {
            let _ = write!(out, "Content-Length: {}\r\n", len + extra);
        }
        let _ = write!(
            out,
            "Date: {}\r\n",
            httpdate::fmt_http_date(SystemTime::now())
        );
        if close {
            out.extend_from_slice(b"Connection: close\r\n");
        }
        out.extend_from_slice(b"\r\n");
        out
    }
}

/// The reason phrase for a status (GCS and TON say "Resume Incomplete" for 308).
fn reason(status: u16) -> &'static str {
    match status {
        100 => "Continue",
        200 => "OK",
        201 => "Created",
        206 => "Partial Content",
        304 => "Not Modified",
        204 => "No Content",
        308 => "Resume Incomplete",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        409 => "Conflict",
        410 => "Gone",
        411 => "Length Required",
        412 => "Precondition Failed",
        416 => "Range Not Satisfiable",
        413 => "Payload Too Large",
        429 => "Too Many Requests",
        431 => "Request Header Fields Too Large",
        499 => "Client Closed Request",
        500 => "Internal Server Error",
        501 => "Not Implemented",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        _ => "Status",
    }
}

/// A non-negative decimal: ASCII digits only, no sign or spaces, no overflow.
pub(crate) fn parse_u64(s: &str) -> Option<u64> {
    if s.is_empty() || s.len() > 20 || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

/// Parses a query string into decoded pairs (`+` is a space). `None` on bad escapes.
pub(crate) fn parse_query(query: &str) -> Option<Vec<(String, String)>> {
    let mut out = Vec::new();
    for part in query.split('&').filter(|p| !p.is_empty()) {
        let (k, v) = part.split_once('=').unwrap_or((part, ""));
        out.push((percent_decode(k, true)?, percent_decode(v, true)?));
    }
    Some(out)
}

/// Decodes `%XX` escapes (and `+` as a space when `plus` is set). `None` on a bad escape or
/// a result that is not UTF-8.
pub(crate) fn percent_decode(s: &str, plus: bool) -> Option<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' => {
                let hex = bytes.get(i + 1..i + 3)?;
                let hex = std::str::from_utf8(hex).ok()?;
                out.push(u8::from_str_radix(hex, 16).ok()?);
                i += 3;
            }
            b'+' if plus => {
                out.push(b' ');
                i += 1;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8(out).ok()
}

/// Percent-encodes everything but RFC 3986 unreserved characters.
pub(crate) fn percent_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(b as char);
        } else {
            let _ = std::fmt::Write::write_fmt(&mut out, format_args!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percent_round_trip() {
        let name = "dir/ä b+c?.txt";
        let enc = percent_encode(name);
        assert_eq!(enc, "dir%2F%C3%A4%20b%2Bc%3F.txt");
        assert_eq!(percent_decode(&enc, true).as_deref(), Some(name));
        assert_eq!(percent_decode("a+b", true).as_deref(), Some("a b"));
        assert_eq!(percent_decode("a+b", false).as_deref(), Some("a+b"));
        assert_eq!(percent_decode("%zz", true), None);
        assert_eq!(percent_decode("%4", true), None);
    }

    #[test]
    fn heads_parse_and_reject() {
        let raw = b"PUT /a/b?x=1&y=%20z HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\n\r\nhello";
        let (len, r) = parse_head(raw).unwrap().unwrap();
        assert_eq!(len, raw.len() - 5);
        assert_eq!(r.method, "PUT");
        assert_eq!(r.path, "/a/b");
        assert_eq!(r.query_param("y"), Some(" z"));
        assert_eq!(r.framing, Framing::Length(5));
        assert!(r.keep_alive);
        assert!(
            parse_head(b"PUT / HTTP/1.1\r\nHost: h\r\n")
                .unwrap()
                .is_none()
        );
        for bad in [
            &b"PUT / HTTP/1.1\r\nContent-Length: x\r\n\r\n"[..],
            b"PUT / HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 1\r\n\r\n",
            b"PUT / HTTP/1.1\r\nTransfer-Encoding: gzip\r\n\r\n",
            b"PUT / HTTP/1.1\r\nTransfer-Encoding: chunked\r\nContent-Length: 1\r\n\r\n",
            b"PUT http://x/ HTTP/1.1\r\n\r\n",
            b"\x00\x01garbage\r\n\r\n",
        ] {
            assert!(
                matches!(parse_head(bad), Err(HeadError::Malformed(_))),
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
        let (_, r) = parse_head(b"GET / HTTP/1.0\r\n\r\n").unwrap().unwrap();
        assert!(!r.keep_alive);
    }
}
