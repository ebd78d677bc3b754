//! The driver and `UreqTransport` against real sockets on 127.0.0.1: a tiny GCS-like server
//! (one thread, one request per connection) and a few misbehaving ones.

use resumable_core::Upload as _;
use std::io::{BufRead, BufReader, Cursor, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use resumable_blocking::{
    Clock, DriveError, Driver, RequestBody, SeekableSource, Transport, UreqOptions, UreqTransport,
};
use resumable_core::checksum::crc32c_base64;
use resumable_core::gcs::{GcsConfig, GcsUpload, Start};
use resumable_core::{RetryPolicy, TransportFailure};

/// One HTTP/1.1 request as read off the socket.
#[derive(Clone, Debug)]
struct Received {
    method: String,
    target: String,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Received {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// Reads a request head, then a `Content-Length` body (a chunked body is recorded as such
/// and not read: the driver must never send one).
fn read_request(reader: &mut BufReader<TcpStream>, with_body: bool) -> Option<Received> {
    let mut line = String::new();
    reader.read_line(&mut line).ok()?;
    let mut parts = line.split_whitespace();
    let method = parts.next()?.to_owned();
    let target = parts.next()?.to_owned();
    let mut headers = Vec::new();
    loop {
        let mut line = String::new();
        reader.read_line(&mut line).ok()?;
        let line = line.trim_end();
        if line.is_empty() {
            break;
        }
        let (name, value) = line.split_once(':')?;
        headers.push((name.trim().to_owned(), value.trim().to_owned()));
    }
    let mut request = Received {
        method,
        target,
        headers,
        body: Vec::new(),
    };
    if with_body && let Some(len) = request.header("content-length") {
        let len: usize = len.parse().ok()?;
        request.body.resize(len, 0);
        reader.read_exact(&mut request.body).ok()?;
    }
    Some(request)
}

fn write_response(stream: &mut TcpStream, status: u16, headers: &[(&str, String)], body: &[u8]) {
    let mut head = format!("HTTP/1.1 {status} Status\r\n");
    for (name, value) in headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    head.push_str(&format!(
        "Content-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    ));
    let _ = stream.write_all(head.as_bytes());
    let _ = stream.write_all(body);
    let _ = stream.flush();
}

/// Runs `handler` for every connection, one after the other, on a thread of its own.
fn serve(mut handler: impl FnMut(TcpStream) + Send + 'static) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    thread::spawn(move || {
        for stream in listener.incoming() {
            match stream {
                Ok(stream) => handler(stream),
                Err(_) => return,
            }
        }
    });
    addr
}

/// What the tiny GCS server holds and saw.
#[derive(Default)]
struct GcsState {
    stored: Vec<u8>,
    total: Option<u64>,
    requests: Vec<Received>,
    /// Store only this many bytes of the first chunk (G5).
    persist_first: Option<usize>,
    /// Answer the start with this status and a GCS error body instead of 201.
    refuse_start: Option<u16>,
    /// Answer the second chunk with this status, storing nothing.
    refuse_second_chunk: Option<u16>,
    chunks_seen: usize,
}

/// A GCS-like server: XML start → 201 + Location; chunks → 308 + Range (with a `Location`
/// to a trap, which a redirect-following client would visit) or 200 + object resource.
fn tiny_gcs(state: Arc<Mutex<GcsState>>) -> SocketAddr {
    let addr_cell: Arc<Mutex<Option<SocketAddr>>> = Arc::default();
    let addr_for_server = addr_cell.clone();
    let addr = serve(move |stream| {
        let addr = addr_for_server.lock().unwrap().unwrap();
        let mut reader = BufReader::new(stream.try_clone().unwrap());
        let mut stream = stream;
        let Some(request) = read_request(&mut reader, true) else {
            return;
        };
        let mut state = state.lock().unwrap();
        state.requests.push(request.clone());
        if request.header("transfer-encoding").is_some() {
            return write_response(&mut stream, 400, &[], b"chunked bodies are refused");
        }
        let session = format!("http://{addr}/upload/session?upload_id=abc");
        let trap = ("Location", format!("http://{addr}/trap"));
        match (request.method.as_str(), request.target.as_str()) {
            ("POST", target) if target.starts_with("/bucket/ids.txt?") => {
                if let Some(status) = state.refuse_start {
                    let body = br#"{"error":{"code":403,"message":"SignatureDoesNotMatch"}}"#;
                    return write_response(&mut stream, status, &[], body);
                }
                assert_eq!(request.header("x-goog-resumable"), Some("start"));
                write_response(&mut stream, 201, &[("Location", session)], b"");
            }
            ("PUT", "/upload/session?upload_id=abc") => {
                let range = request.header("content-range").unwrap().to_owned();
                let (span, total) = range
                    .strip_prefix("bytes ")
                    .unwrap()
                    .split_once('/')
                    .unwrap();
                if total != "*" {
                    state.total = Some(total.parse().unwrap());
                }
                if span != "*" {
                    state.chunks_seen += 1;
                    if state.chunks_seen == 2
                        && let Some(status) = state.refuse_second_chunk.take()
                    {
                        return write_response(&mut stream, status, &[], b"");
                    }
                    let start: usize = span.split_once('-').unwrap().0.parse().unwrap();
                    let mut keep = request.body.len();
                    if let Some(limit) = state.persist_first.take() {
                        keep = keep.min(limit);
                    }
                    let already = state.stored.len() - start;
                    if keep > already {
                        state.stored.extend_from_slice(&request.body[already..keep]);
                    }
                }
                if state.total == Some(state.stored.len() as u64) {
                    let body = format!(
                        r#"{{"name":"ids.txt","size":"{}","crc32c":"{}"}}"#,
                        state.stored.len(),
                        crc32c_base64(crc32c::crc32c(&state.stored))
                    );
                    write_response(&mut stream, 200, &[], body.as_bytes());
                } else {
                    let mut headers = vec![trap];
                    if !state.stored.is_empty() {
                        headers.push(("Range", format!("bytes=0-{}", state.stored.len() - 1)));
                    }
                    write_response(&mut stream, 308, &headers, b"");
                }
            }
            _ => write_response(&mut stream, 500, &[], b"unexpected request"),
        }
    });
    *addr_cell.lock().unwrap() = Some(addr);
    addr
}

fn loopback_transport() -> UreqTransport {
    let mut options = UreqOptions::default();
    options.proxy_from_env = false;
    options.io_timeout = Some(Duration::from_secs(10));
    UreqTransport::with_options(options)
}

fn upload_to(addr: SocketAddr, total: u64) -> GcsUpload {
    // No retries: a followed redirect or a status turned into an error fails at once.
    upload_with_retry(addr, total, RetryPolicy::never())
}

fn upload_with_retry(addr: SocketAddr, total: u64, retry: RetryPolicy) -> GcsUpload {
    let mut config = GcsConfig::new(Some(total));
    config.chunk_size = 256 * 1024;
    config.retry = retry;
    let start = Start::Xml {
        url: format!("http://{addr}/bucket/ids.txt?X-Goog-Signature=sig")
            .parse()
            .unwrap(),
        content_type: http::HeaderValue::from_static("text/plain"),
    };
    GcsUpload::new(start, config).unwrap()
}

// G1, G4, G5, G12: a real upload through ureq: the server stores exactly the source; ureq
// did not follow the 308s (no request to their Location); every body went out with
// Content-Length equal to the core's chunk, never chunked; partial persistence was re-sent
// from the persisted offset.
#[test]
fn a_real_upload_over_loopback_with_ureq() {
    let source: Vec<u8> = (0..700_000u32).map(|i| (i % 251) as u8).collect();
    let state = Arc::new(Mutex::new(GcsState {
        persist_first: Some(100_000),
        ..GcsState::default()
    }));
    let addr = tiny_gcs(state.clone());
    let mut upload = upload_to(addr, source.len() as u64);
    let completion = Driver::new()
        .drive(
            &mut upload,
            &mut SeekableSource::new(Cursor::new(&source)),
            &mut loopback_transport(),
        )
        .unwrap();

    let state = state.lock().unwrap();
    assert_eq!(state.stored, source);
    assert_eq!(completion.size, source.len() as u64);
    assert!(completion.verified.crc32c && completion.verified.size);
    let targets: Vec<_> = state
        .requests
        .iter()
        .map(|r| (r.method.as_str(), r.header("content-range")))
        .collect();
    assert_eq!(
        targets,
        vec![
            ("POST", None),
            ("PUT", Some("bytes 0-262143/700000")),
            ("PUT", Some("bytes 100000-362143/700000")),
            ("PUT", Some("bytes 362144-624287/700000")),
            ("PUT", Some("bytes 624288-699999/700000")),
        ]
    );
    assert!(state.requests.iter().all(|r| r.target != "/trap"));
    for request in &state.requests {
        assert!(request.header("transfer-encoding").is_none());
        let declared: usize = request.header("content-length").unwrap().parse().unwrap();
        assert_eq!(declared, request.body.len());
    }
}

/// Real time plus the waits it skipped: the backoff is not really slept.
#[derive(Default)]
struct SkipWaits {
    skipped: Duration,
}

impl Clock for SkipWaits {
    fn now(&mut self) -> Instant {
        Instant::now() + self.skipped
    }

    fn sleep_until(&mut self, deadline: Instant) {
        let now = self.now();
        self.skipped += deadline.saturating_duration_since(now);
    }
}

// G6, G8, G12: a retryable 503 over real sockets: after the (skipped) backoff the next request
// is a status query, `PUT` with `Content-Range: bytes */T` and `Content-Length: 0`, whose 308 is
// read (not followed) and the upload goes on from the persisted offset.
#[test]
fn a_retry_over_loopback_is_a_status_query() {
    let source: Vec<u8> = (0..700_000u32).map(|i| (i % 241) as u8).collect();
    let state = Arc::new(Mutex::new(GcsState {
        persist_first: Some(100_000),
        refuse_second_chunk: Some(503),
        ..GcsState::default()
    }));
    let addr = tiny_gcs(state.clone());
    let mut retry = RetryPolicy::default();
    retry.max_attempts = 1;
    let mut upload = upload_with_retry(addr, source.len() as u64, retry);
    Driver::new()
        .clock(SkipWaits::default())
        .drive(
            &mut upload,
            &mut SeekableSource::new(Cursor::new(&source)),
            &mut loopback_transport(),
        )
        .unwrap();

    let state = state.lock().unwrap();
    assert_eq!(state.stored, source);
    let requests: Vec<_> = state
        .requests
        .iter()
        .map(|r| {
            (
                r.method.as_str(),
                r.header("content-range"),
                r.header("content-length"),
            )
        })
        .collect();
    assert_eq!(
        requests[..5],
        [
            ("POST", None, Some("0")),
            ("PUT", Some("bytes 0-262143/700000"), Some("262144")),
            ("PUT", Some("bytes 100000-362143/700000"), Some("262144")),
            ("PUT", Some("bytes */700000"), Some("0")),
            ("PUT", Some("bytes 100000-362143/700000"), Some("262144")),
        ]
    );
    assert!(state.requests.iter().all(|r| r.target != "/trap"));
    assert_eq!(upload.stats().retries, 1);
}

// G12: a 4xx comes back as a response, not a ureq error: the upload ends with the server's
// refusal and its message, after exactly one request (a transport failure would be retried).
#[test]
fn a_4xx_is_a_response_not_an_error() {
    let state = Arc::new(Mutex::new(GcsState {
        refuse_start: Some(403),
        ..GcsState::default()
    }));
    let addr = tiny_gcs(state.clone());
    let mut upload = upload_to(addr, 10);
    let result = Driver::new().drive(
        &mut upload,
        &mut SeekableSource::new(Cursor::new(vec![1u8; 10])),
        &mut loopback_transport(),
    );
    match result {
        Err(DriveError::Upload(resumable_core::Error::Server { status, message })) => {
            assert_eq!(status.as_u16(), 403);
            assert_eq!(message.as_deref(), Some("SignatureDoesNotMatch"));
        }
        other => panic!("expected the server's refusal, got {other:?}"),
    }
    assert_eq!(state.lock().unwrap().requests.len(), 1);
}

fn put(addr: SocketAddr) -> http::Request<()> {
    http::Request::put(format!("http://{addr}/upload/session"))
        .header("content-length", "100000")
        .body(())
        .unwrap()
}

/// Sends a 100 000-byte PUT; the failure, or the status if a response came.
fn send(transport: &mut UreqTransport, addr: SocketAddr) -> Result<u16, TransportFailure> {
    send_full(transport, addr).map(|r| r.status().as_u16())
}

fn send_full(
    transport: &mut UreqTransport,
    addr: SocketAddr,
) -> Result<http::Response<bytes::Bytes>, TransportFailure> {
    let mut body = RequestBody::from_bytes(vec![5u8; 100_000]);
    transport.send(&put(addr), &mut body)
}

// G8: nothing listening: the connection was refused.
#[test]
fn a_refused_connection_is_refused() {
    let addr = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    assert_eq!(
        send(&mut loopback_transport(), addr),
        Err(TransportFailure::Refused)
    );
}

// G8: a host name that does not resolve (`.invalid` never does) is told apart from other
// connect failures, so the core gives up on it quickly.
#[test]
fn an_unresolvable_name_is_resolve() {
    let request = http::Request::put("http://no-such-host.invalid/upload/session")
        .header("content-length", "0")
        .body(())
        .unwrap();
    let mut body = RequestBody::from_bytes(Vec::new());
    assert_eq!(
        loopback_transport()
            .send(&request, &mut body)
            .map(|r| r.status()),
        Err(TransportFailure::Resolve)
    );
}

// G8: the server reads the request head and hangs up without answering.
#[test]
fn a_connection_closed_before_the_response_is_reset() {
    let addr = serve(|stream| {
        let mut reader = BufReader::new(stream);
        let _ = read_request(&mut reader, false);
    });
    assert_eq!(
        send(&mut loopback_transport(), addr),
        Err(TransportFailure::Reset)
    );
}

// G8: the server takes the request and never answers: the I/O timeout fires.
#[test]
fn no_answer_within_the_io_timeout_is_timeout() {
    let addr = serve(|stream| {
        let mut reader = BufReader::new(stream);
        let _ = read_request(&mut reader, true);
        thread::sleep(Duration::from_secs(2));
    });
    let mut options = UreqOptions::default();
    options.proxy_from_env = false;
    options.io_timeout = Some(Duration::from_millis(300));
    let mut transport = UreqTransport::with_options(options);
    assert_eq!(send(&mut transport, addr), Err(TransportFailure::Timeout));
}

// G8: the response head arrives but its body ends before its Content-Length.
#[test]
fn a_response_cut_short_is_truncated_response() {
    let addr = serve(|stream| {
        let mut reader = BufReader::new(stream.try_clone().unwrap());
        let _ = read_request(&mut reader, true);
        let mut stream = stream;
        let _ = stream.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n0123456789");
    });
    assert_eq!(
        send(&mut loopback_transport(), addr),
        Err(TransportFailure::TruncatedResponse)
    );
}

// A response body larger than the cap is cut at the cap (the core parses no more), and the
// status and headers still arrive.
#[test]
fn a_large_response_body_is_capped() {
    let addr = serve(|stream| {
        let mut reader = BufReader::new(stream.try_clone().unwrap());
        let _ = read_request(&mut reader, true);
        let mut stream = stream;
        write_response(
            &mut stream,
            503,
            &[("Retry-After", "1".into())],
            &vec![b'x'; 3 << 20],
        );
    });
    let response = send_full(&mut loopback_transport(), addr).unwrap();
    assert_eq!(response.status().as_u16(), 503);
    assert_eq!(response.headers()["retry-after"], "1");
    assert_eq!(
        response.body().len(),
        resumable_core::response::MAX_PARSED_BODY
    );
}
