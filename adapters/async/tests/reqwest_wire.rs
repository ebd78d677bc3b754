//! `ReqwestTransport` on the wire, against raw sockets on 127.0.0.1: what reaches the server
//! byte for byte (Content-Length, never chunked; redirects not followed), and how every kind
//! of failure is classified.

#![cfg(all(feature = "reqwest", feature = "tokio"))]

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::Duration;

use bytes::Bytes;
use common::{BUCKET, KIB, OBJECT, config, data, start_url, xml_start};
use resumable_async::{
    DriveError, Driver, Event, RequestBody, ReqwestOptions, ReqwestTransport, SeekableSource,
    TokioTimer, Transport,
};
use resumable_core::checksum::crc32c_base64;
use resumable_core::gcs::{GcsConfig, GcsUpload, Start};
use resumable_core::{RetryPolicy, TransportFailure};
use resumable_server::{Server, ServerConfig};

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

/// Reads a request head, then its body: `Content-Length` bytes, or a chunked body decoded.
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
    if !with_body {
        return Some(request);
    }
    if let Some(len) = request.header("content-length") {
        let len: usize = len.parse().ok()?;
        request.body.resize(len, 0);
        reader.read_exact(&mut request.body).ok()?;
    } else if request.header("transfer-encoding").is_some() {
        loop {
            let mut size = String::new();
            reader.read_line(&mut size).ok()?;
            let size = usize::from_str_radix(size.trim(), 16).ok()?;
            let mut piece = vec![0; size + 2];
            reader.read_exact(&mut piece).ok()?;
            if size == 0 {
                break;
            }
            request.body.extend_from_slice(&piece[..size]);
        }
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
fn serve(mut handler: impl FnMut(TcpStream, SocketAddr) + Send + 'static) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    thread::spawn(move || {
        for stream in listener.incoming() {
            match stream {
                Ok(stream) => handler(stream, addr),
                Err(_) => return,
            }
        }
    });
    addr
}

fn transport_with(io_timeout: Duration) -> ReqwestTransport {
    let mut options = ReqwestOptions::default();
    options.proxy_from_env = false;
    options.io_timeout = Some(io_timeout);
    ReqwestTransport::with_options(options).unwrap()
}

fn transport() -> ReqwestTransport {
    transport_with(Duration::from_secs(10))
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
}

/// A GCS-like server: XML start → 201 + Location; chunks → 308 + Range (with a `Location`
/// to a trap, which a redirect-following client would visit) or 200 + object resource.
/// A chunked request body is answered 400.
fn tiny_gcs(state: Arc<Mutex<GcsState>>) -> SocketAddr {
    serve(move |stream, addr| {
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
    })
}

fn upload_to(addr: SocketAddr, total: u64) -> GcsUpload {
    let mut config = GcsConfig::new(Some(total));
    config.chunk_size = 256 * 1024;
    // No retries: a followed redirect or a status turned into an error fails at once.
    config.retry = RetryPolicy::never();
    let start = Start::Xml {
        url: format!("http://{addr}/bucket/ids.txt?X-Goog-Signature=sig")
            .parse()
            .unwrap(),
        content_type: http::HeaderValue::from_static("text/plain"),
    };
    GcsUpload::new(start, config).unwrap()
}

// G4, G5, G12: a real upload through reqwest: every body went out with Content-Length equal to
// the core's chunk, never chunked, though streamed in 64 KiB pieces; reqwest did not follow
// the 308s (no request to their Location); the server stores exactly the source.
#[tokio::test]
async fn bodies_go_out_with_content_length_never_chunked() {
    let source = data(700_000);
    let state = Arc::new(Mutex::new(GcsState {
        persist_first: Some(100_000),
        ..GcsState::default()
    }));
    let addr = tiny_gcs(state.clone());
    let mut upload = upload_to(addr, source.len() as u64);
    let mut file = SeekableSource::new(futures::io::Cursor::new(source.clone()));
    let completion = Driver::new(TokioTimer)
        .drive(&mut upload, &mut file, &transport())
        .await
        .unwrap();

    let state = state.lock().unwrap();
    assert_eq!(state.stored, source);
    assert_eq!(completion.size, source.len() as u64);
    assert!(completion.verified.crc32c && completion.verified.size);
    let ranges: Vec<_> = state
        .requests
        .iter()
        .map(|r| (r.method.as_str(), r.header("content-range")))
        .collect();
    assert_eq!(
        ranges,
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

/// Sends a body of three pieces of unknown size total with plain reqwest, declaring
/// `Content-Length` or not; what the server saw.
async fn plain_reqwest_stream(content_length: bool) -> Received {
    let seen = Arc::new(Mutex::new(None));
    let record = seen.clone();
    let addr = serve(move |stream, _| {
        let mut reader = BufReader::new(stream.try_clone().unwrap());
        let request = read_request(&mut reader, true);
        let mut stream = stream;
        write_response(&mut stream, 200, &[], b"");
        *record.lock().unwrap() = request;
    });
    let pieces =
        futures::stream::iter((0..3).map(|_| {
            Ok::<_, std::io::Error>(http_body::Frame::data(Bytes::from(vec![7u8; 1000])))
        }));
    let body = reqwest::Body::wrap(http_body_util::StreamBody::new(pieces));
    // A plain client, built as an application would (with this crate's `rustls` feature on,
    // reqwest then takes the process's default crypto provider).
    #[cfg(feature = "rustls")]
    let _ = rustls::crypto::ring::default_provider().install_default();
    let mut request = reqwest::Client::builder()
        .no_proxy()
        .build()
        .unwrap()
        .put(format!("http://{addr}/"))
        .body(body);
    if content_length {
        request = request.header("content-length", "3000");
    }
    request.send().await.unwrap();
    seen.lock().unwrap().clone().unwrap()
}

// How reqwest decides (why `ReqwestTransport` sets Content-Length itself): a streamed body
// of unknown size goes out chunked, unless the request carries Content-Length.
#[tokio::test]
async fn reqwest_chunks_a_streamed_body_unless_content_length_is_set() {
    let chunked = plain_reqwest_stream(false).await;
    assert_eq!(chunked.header("transfer-encoding"), Some("chunked"));
    assert!(chunked.header("content-length").is_none());
    assert_eq!(chunked.body.len(), 3000);

    let delimited = plain_reqwest_stream(true).await;
    assert!(delimited.header("transfer-encoding").is_none());
    assert_eq!(delimited.header("content-length"), Some("3000"));
    assert_eq!(delimited.body.len(), 3000);
}

// G12: a 4xx comes back as a response, not a reqwest error: the upload ends with the server's
// refusal and its message, after exactly one request (a transport failure would be retried).
#[tokio::test]
async fn a_4xx_is_a_response_not_an_error() {
    let state = Arc::new(Mutex::new(GcsState {
        refuse_start: Some(403),
        ..GcsState::default()
    }));
    let addr = tiny_gcs(state.clone());
    let mut upload = upload_to(addr, 10);
    let mut file = SeekableSource::new(futures::io::Cursor::new(vec![1u8; 10]));
    let result = Driver::new(TokioTimer)
        .drive(&mut upload, &mut file, &transport())
        .await;
    match result {
        Err(DriveError::Upload(resumable_core::Error::Server { status, message })) => {
            assert_eq!(status.as_u16(), 403);
            assert_eq!(message.as_deref(), Some("SignatureDoesNotMatch"));
        }
        other => panic!("expected the server's refusal, got {other:?}"),
    }
    assert_eq!(state.lock().unwrap().requests.len(), 1);
}

/// Sends a PUT with a body of `len` bytes; the response, or the failure.
async fn send(
    transport: &mut ReqwestTransport,
    addr: SocketAddr,
    len: usize,
) -> Result<http::Response<Bytes>, TransportFailure> {
    let request = http::Request::put(format!("http://{addr}/upload/session"))
        .header("content-length", len.to_string())
        .body(RequestBody::from_bytes(vec![5u8; len]))
        .unwrap();
    transport.send(request).await
}

async fn status(addr: SocketAddr) -> Result<u16, TransportFailure> {
    send(
        &mut transport_with(Duration::from_millis(500)),
        addr,
        100_000,
    )
    .await
    .map(|r| r.status().as_u16())
}

// G8: nothing listening: the connection was refused.
#[tokio::test]
async fn a_refused_connection_is_refused() {
    let addr = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    assert_eq!(status(addr).await, Err(TransportFailure::Refused));
}

// G8: a host name that does not resolve (`.invalid` never does) is told apart, so the core
// gives up on it quickly.
#[tokio::test]
async fn an_unresolvable_name_is_resolve() {
    let request = http::Request::put("http://no-such-host.invalid/upload/session")
        .header("content-length", "0")
        .body(RequestBody::from_bytes(Vec::new()))
        .unwrap();
    let result = transport_with(Duration::from_secs(5)).send(request).await;
    assert_eq!(
        result.map(|r| r.status().as_u16()),
        Err(TransportFailure::Resolve)
    );
}

// G8: the server reads the request head and hangs up without answering.
#[tokio::test]
async fn a_connection_closed_before_the_response_is_reset() {
    let addr = serve(|stream, _| {
        let mut reader = BufReader::new(stream);
        let _ = read_request(&mut reader, false);
    });
    assert_eq!(status(addr).await, Err(TransportFailure::Reset));
}

// G8: the server takes the whole request and never answers: the I/O timeout fires.
#[tokio::test]
async fn no_answer_within_the_io_timeout_is_timeout() {
    let addr = serve(|stream, _| {
        let mut reader = BufReader::new(stream);
        let _ = read_request(&mut reader, true);
        thread::sleep(Duration::from_secs(2));
    });
    assert_eq!(status(addr).await, Err(TransportFailure::Timeout));
}

// G8: the server stops reading the body (the connection stalls): the I/O timeout fires
// even though the request as a whole has no deadline.
#[tokio::test]
async fn a_stalled_body_is_timeout() {
    let addr = serve(|stream, _| {
        let mut reader = BufReader::new(stream);
        let _ = read_request(&mut reader, false);
        thread::sleep(Duration::from_secs(3));
    });
    let mut transport = transport_with(Duration::from_millis(300));
    let result = send(&mut transport, addr, 64 << 20).await;
    assert_eq!(result.err(), Some(TransportFailure::Timeout));
}

// G8: the response head arrives but its body ends before its Content-Length.
#[tokio::test]
async fn a_response_cut_short_is_truncated_response() {
    let addr = serve(|stream, _| {
        let mut reader = BufReader::new(stream.try_clone().unwrap());
        let _ = read_request(&mut reader, true);
        let mut stream = stream;
        let _ = stream.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n0123456789");
    });
    assert_eq!(status(addr).await, Err(TransportFailure::TruncatedResponse));
}

// A response body larger than the cap is cut at the cap (the core parses no more), and the
// status and headers still arrive.
#[tokio::test]
async fn a_large_response_body_is_capped() {
    let addr = serve(|stream, _| {
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
    let response = send(&mut transport(), addr, 10).await.unwrap();
    assert_eq!(response.status().as_u16(), 503);
    assert_eq!(response.headers()["retry-after"], "1");
    assert_eq!(
        response.body().len(),
        resumable_core::response::MAX_PARSED_BODY
    );
}

// The drive future over reqwest, tokio's timer and a `tokio::fs::File` is `Send`: it runs
// under `tokio::spawn` on a multi-threaded runtime, hook and all.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upload_runs_under_tokio_spawn() {
    let server = Server::start(ServerConfig::default()).unwrap();
    let source = data(700 * KIB);
    let path = std::env::temp_dir().join(format!("resumable-async-tokio-{}", std::process::id()));
    tokio::fs::write(&path, &source).await.unwrap();
    let file = tokio::fs::File::open(&path).await.unwrap();
    let upload = GcsUpload::new(
        xml_start(start_url(&server, "gcs.chunk#1=persist:5000")),
        config(Some(source.len() as u64)),
    )
    .unwrap();
    let saves = Arc::new(Mutex::new(0));
    let count = saves.clone();
    let task = tokio::spawn(async move {
        let mut upload = upload;
        let mut driver =
            Driver::new(TokioTimer).on_event(move |_: &GcsUpload, event: &Event<'_>| {
                if let Event::Sending { .. } = event {
                    *count.lock().unwrap() += 1;
                }
                Ok(())
            });
        driver
            .drive(&mut upload, &mut SeekableSource::tokio(file), &transport())
            .await
    });
    let completion = task.await.unwrap().unwrap();
    let _ = tokio::fs::remove_file(&path).await;
    assert_eq!(completion.size, source.len() as u64);
    assert_eq!(server.object(BUCKET, OBJECT).as_deref(), Some(&source[..]));
    assert_eq!(*saves.lock().unwrap(), 1 + 4);
}
