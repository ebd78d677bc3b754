//! A raw HTTP/1.1 test client: exact headers, exact bytes, and socket-level control.

#![allow(dead_code)]

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use resumable_server::{Server, ServerConfig};

/// A response as read off the wire.
#[derive(Debug)]
pub struct Resp {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Resp {
    /// The first header called `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {:?}", String::from_utf8_lossy(&self.body)))
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// One keep-alive connection.
pub struct Conn {
    pub stream: TcpStream,
    addr: SocketAddr,
    buf: Vec<u8>,
}

impl Conn {
    pub fn open(addr: SocketAddr) -> Conn {
        let stream = TcpStream::connect(addr).expect("connect");
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        stream.set_nodelay(true).unwrap();
        Conn {
            stream,
            addr,
            buf: Vec::new(),
        }
    }

    /// Writes a request: `headers` as given, plus `Host`, plus `Content-Length` unless a
    /// `content-length` or `transfer-encoding` header is given.
    pub fn write_request(
        &mut self,
        method: &str,
        target: &str,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> io::Result<()> {
        let mut head = format!("{method} {target} HTTP/1.1\r\nHost: {}\r\n", self.addr);
        let framed = headers.iter().any(|(k, _)| {
            k.eq_ignore_ascii_case("content-length") || k.eq_ignore_ascii_case("transfer-encoding")
        });
        for (k, v) in headers {
            head.push_str(&format!("{k}: {v}\r\n"));
        }
        if !framed {
            head.push_str(&format!("Content-Length: {}\r\n", body.len()));
        }
        head.push_str("\r\n");
        let mut bytes = head.into_bytes();
        bytes.extend_from_slice(body);
        self.stream.write_all(&bytes)
    }

    /// Reads one response head and its `Content-Length` body.
    pub fn read_response(&mut self) -> io::Result<Resp> {
        loop {
            let mut fields = [httparse::EMPTY_HEADER; 64];
            let mut resp = httparse::Response::new(&mut fields);
            if let httparse::Status::Complete(len) = resp
                .parse(&self.buf)
                .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e.to_string()))?
            {
                let status = resp.code.unwrap_or(0);
                let headers: Vec<(String, String)> = resp
                    .headers
                    .iter()
                    .map(|h| {
                        (
                            h.name.to_owned(),
                            String::from_utf8_lossy(h.value).into_owned(),
                        )
                    })
                    .collect();
                self.buf.drain(..len);
                // Interim answers (100 Continue, the resumable-upload draft's 104) are skipped.
                if (100..200).contains(&status) {
                    continue;
                }
                let body_len: usize = headers
                    .iter()
                    .find(|(k, _)| k.eq_ignore_ascii_case("content-length"))
                    .and_then(|(_, v)| v.parse().ok())
                    .unwrap_or(0);
                while self.buf.len() < body_len {
                    self.fill()?;
                }
                let body = self.buf.drain(..body_len).collect();
                return Ok(Resp {
                    status,
                    headers,
                    body,
                });
            }
            self.fill()?;
        }
    }

    fn fill(&mut self) -> io::Result<()> {
        let mut chunk = [0u8; 65536];
        let n = self.stream.read(&mut chunk)?;
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "connection closed",
            ));
        }
        self.buf.extend_from_slice(&chunk[..n]);
        Ok(())
    }

    pub fn request(
        &mut self,
        method: &str,
        target: &str,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> io::Result<Resp> {
        self.write_request(method, target, headers, body)?;
        self.read_response()
    }

    /// Whether the server closed the connection (reads end of stream or a reset).
    pub fn is_closed(&mut self) -> bool {
        let mut b = [0u8; 1];
        matches!(self.stream.read(&mut b), Ok(0) | Err(_))
    }
}

/// One request on a fresh connection.
pub fn send(
    addr: SocketAddr,
    method: &str,
    target: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> io::Result<Resp> {
    Conn::open(addr).request(method, target, headers, body)
}

/// The path and query of a URL on the server.
pub fn target(url: &str) -> String {
    let rest = url.strip_prefix("http://").expect("http URL");
    rest[rest.find('/').expect("path")..].to_owned()
}

pub fn server() -> Server {
    Server::start(ServerConfig::default()).expect("server starts")
}

pub fn server_with(config: ServerConfig) -> Server {
    Server::start(config).expect("server starts")
}

/// Starts a JSON API session (G2) and returns the session path (path and query).
pub fn json_session(server: &Server, bucket: &str, object: &str) -> String {
    let r = send(
        server.addr(),
        "POST",
        &target(&server.gcs_json_url(bucket, object)),
        &[("X-Upload-Content-Type", "application/octet-stream")],
        b"",
    )
    .expect("start");
    assert_eq!(r.status, 200, "{}", r.text());
    target(r.header("location").expect("Location"))
}

/// Starts an XML session (G1) and returns the session path.
pub fn xml_session(server: &Server, bucket: &str, object: &str) -> String {
    let r = send(
        server.addr(),
        "POST",
        &target(&server.gcs_xml_url(bucket, object)),
        &[
            ("x-goog-resumable", "start"),
            ("Content-Type", "text/plain"),
        ],
        b"",
    )
    .expect("start");
    assert_eq!(r.status, 201, "{}", r.text());
    target(r.header("location").expect("Location"))
}

/// `len` bytes of a fixed pattern.
pub fn data(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i * 7 % 253) as u8).collect()
}

/// PUTs `body[range]` with `Content-Range: bytes A-B/total` (or `*`).
pub fn put_chunk(
    conn: &mut Conn,
    session: &str,
    body: &[u8],
    range: std::ops::Range<usize>,
    total: Option<usize>,
    extra: &[(&str, &str)],
) -> io::Result<Resp> {
    let cr = format!(
        "bytes {}-{}/{}",
        range.start,
        range.end - 1,
        total.map_or("*".to_owned(), |t| t.to_string())
    );
    let mut headers = vec![("Content-Range", cr.as_str())];
    headers.extend_from_slice(extra);
    conn.request("PUT", session, &headers, &body[range])
}

pub const KIB256: usize = 262_144;

// ---- driving the core's state machines (TON, media) over raw sockets ----

/// Sends one request of the core on a fresh connection: its head as given, its body as
/// `prefix`, the source range, `suffix`. A failure to write or read is a reset.
pub fn core_send(
    send: &resumable_core::Transmit,
    source: &[u8],
) -> Result<http::Response<bytes::Bytes>, resumable_core::TransportFailure> {
    use resumable_core::TransportFailure;
    let uri = send.request.uri();
    let addr: SocketAddr = uri
        .authority()
        .expect("absolute URI")
        .as_str()
        .parse()
        .expect("an IP:port authority");
    let target = uri.path_and_query().map_or("/", |p| p.as_str());
    let headers: Vec<(String, String)> = send
        .request
        .headers()
        .iter()
        .map(|(k, v)| (k.as_str().to_owned(), v.to_str().unwrap().to_owned()))
        .collect();
    let header_refs: Vec<(&str, &str)> = headers
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    let mut body = send.body.prefix.to_vec();
    let r = &send.body.source;
    body.extend_from_slice(&source[r.start as usize..r.end as usize]);
    body.extend_from_slice(&send.body.suffix);
    let mut conn = Conn::open(addr);
    conn.write_request(send.request.method().as_str(), target, &header_refs, &body)
        .map_err(|_| TransportFailure::Reset)?;
    let resp = conn.read_response().map_err(|_| TransportFailure::Reset)?;
    let mut builder = http::Response::builder().status(resp.status);
    for (k, v) in &resp.headers {
        builder = builder.header(k, v);
    }
    Ok(builder.body(bytes::Bytes::from(resp.body)).unwrap())
}

/// Runs an upload of the core to its end (bounded): sends its requests with [`core_send`],
/// sleeps through its waits (each at most 2 s), hands in reads of `source`.
pub fn core_drive<U: resumable_core::Upload>(
    upload: &mut U,
    source: &[u8],
) -> Result<U::Output, resumable_core::Error> {
    core_drive_with(upload, source, |_| {})
}

/// [`core_drive`], calling `sign` on every request before it is sent.
pub fn core_drive_with<U: resumable_core::Upload>(
    upload: &mut U,
    source: &[u8],
    mut sign: impl FnMut(&mut resumable_core::Transmit),
) -> Result<U::Output, resumable_core::Error> {
    use resumable_core::Action;
    use std::time::Instant;
    for _ in 0..10_000 {
        match upload.poll_action(Instant::now()) {
            Action::Read(read) => {
                let a = read.range.start as usize;
                let b = (read.range.end as usize).min(source.len());
                upload
                    .handle_read(Instant::now(), read.range.start, &source[a.min(b)..b])
                    .unwrap();
            }
            Action::Send(mut send) => {
                sign(&mut send);
                match core_send(&send, source) {
                    Ok(r) => upload.handle_response(Instant::now(), send.id, r).unwrap(),
                    Err(f) => upload.handle_failure(Instant::now(), send.id, f).unwrap(),
                }
            }
            Action::Wait(until) => std::thread::sleep(
                until
                    .saturating_duration_since(Instant::now())
                    .min(Duration::from_secs(2)),
            ),
            // One request at a time: one is never in flight when polling.
            Action::Idle => panic!("idle with no request in flight"),
            Action::Done(outcome) => return outcome,
        }
    }
    panic!("the upload did not end");
}

/// A retry policy for tests: short waits, no jitter, `Retry-After` capped at 20 ms.
pub fn fast_retries() -> resumable_core::RetryPolicy {
    let mut p = resumable_core::RetryPolicy::default();
    p.initial_backoff = Duration::from_millis(5);
    p.max_backoff = Duration::from_millis(20);
    p.jitter = Duration::ZERO;
    p.max_retry_after = Duration::from_millis(20);
    p
}

/// A server with a fault script.
pub fn scripted(spec: &str) -> Server {
    server_with(ServerConfig {
        faults: resumable_server::FaultScript::parse(spec).unwrap(),
        ..ServerConfig::default()
    })
}

/// A `multipart/form-data` body of `fields` (the `media` field gets a filename and a binary
/// type, as the core frames it): the `Content-Type` value and the body.
pub fn multipart(fields: &[(&str, &[u8])]) -> (String, Vec<u8>) {
    let boundary = "test-boundary-7e4f";
    let mut body = Vec::new();
    for (name, value) in fields {
        body.extend_from_slice(format!("--{boundary}\r\n").as_bytes());
        if *name == "media" {
            body.extend_from_slice(
                b"Content-Disposition: form-data; name=\"media\"; filename=\"blob\"\r\n\
                  Content-Type: application/octet-stream\r\n\r\n",
            );
        } else {
            body.extend_from_slice(
                format!("Content-Disposition: form-data; name=\"{name}\"\r\n\r\n").as_bytes(),
            );
        }
        body.extend_from_slice(value);
        body.extend_from_slice(b"\r\n");
    }
    body.extend_from_slice(format!("--{boundary}--\r\n").as_bytes());
    (format!("multipart/form-data; boundary={boundary}"), body)
}
