//! Many uploads at once in one process, on one reqwest client: the async driver's scale test
//! (`bench/run` runs it against `resumable serve`).
//!
//! ```text
//! cargo run --release -p resumable-async --example many_uploads -- BASE_URL [COUNT] [SIZE]
//! ```
//!
//! Starts COUNT (default 1000) GCS JSON API uploads of SIZE bytes (default 1 MiB) each to
//! `BASE_URL` (a `resumable serve` address) at the same time, each one request with CRC32C
//! checked by the completion. The sources are generated as they are read (a pattern that
//! differs per upload and per offset), so the process holds no copy of them and its memory is
//! the driver's own. Then every object is downloaded and compared with its pattern, byte for
//! byte. Prints one JSON line: uploads, bytes, seconds, uploads/s, MiB/s, the peak RSS during
//! the uploads, and whether all were identical. Exits 1 if any upload failed or differed.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Instant;

use bytes::Bytes;
use futures_io::{AsyncRead, AsyncSeek};
use resumable_async::{
    RequestBody, ReqwestOptions, ReqwestTransport, SeekableSource, TokioTimer, Transport as _,
};
use resumable_core::gcs::{GcsConfig, GcsUpload, Start};

/// The byte at `offset` of upload `index`: no period shorter than the object, so a chunk
/// stored at the wrong offset, or another upload's bytes, differ.
fn pattern(index: u64, offset: u64) -> u8 {
    let mut x = (index << 40) ^ offset ^ 0x9e37_79b9_7f4a_7c15;
    x ^= x >> 33;
    x = x.wrapping_mul(0xff51_afd7_ed55_8ccd);
    x ^= x >> 29;
    (x >> 24) as u8
}

/// A source of `len` pattern bytes, generated as they are read.
struct Pattern {
    index: u64,
    len: u64,
    at: u64,
}

impl AsyncRead for Pattern {
    fn poll_read(
        mut self: Pin<&mut Self>,
        _: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<io::Result<usize>> {
        let n = usize::try_from(self.len.saturating_sub(self.at))
            .unwrap_or(usize::MAX)
            .min(buf.len());
        for (i, b) in buf[..n].iter_mut().enumerate() {
            *b = pattern(self.index, self.at + i as u64);
        }
        self.at += n as u64;
        Poll::Ready(Ok(n))
    }
}

impl AsyncSeek for Pattern {
    fn poll_seek(
        mut self: Pin<&mut Self>,
        _: &mut Context<'_>,
        pos: io::SeekFrom,
    ) -> Poll<io::Result<u64>> {
        let to = match pos {
            io::SeekFrom::Start(n) => Some(n),
            io::SeekFrom::End(d) => self.len.checked_add_signed(d),
            io::SeekFrom::Current(d) => self.at.checked_add_signed(d),
        };
        Poll::Ready(match to {
            Some(n) => {
                self.at = n;
                Ok(n)
            }
            None => Err(io::Error::new(io::ErrorKind::InvalidInput, "seek before 0")),
        })
    }
}

/// The peak resident set size of this process so far, in KiB (Linux; 0 elsewhere).
fn peak_rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmHWM:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        })
        .unwrap_or(0)
}

fn object_name(index: u64) -> String {
    format!("many-{index:05}")
}

async fn upload(
    base: &str,
    index: u64,
    size: u64,
    transport: &ReqwestTransport,
) -> Result<(), String> {
    let url = format!(
        "{base}/upload/storage/v1/b/many/o?uploadType=resumable&name={}",
        object_name(index)
    );
    let start = Start::Json {
        url: url.parse().map_err(|e| format!("{e}"))?,
        content_type: http::HeaderValue::from_static("application/octet-stream"),
        metadata: None,
    };
    let mut config = GcsConfig::new(Some(size));
    config.chunk_size = GcsConfig::ONE_REQUEST;
    let mut upload = GcsUpload::new(start, config).map_err(|e| e.to_string())?;
    let mut source = SeekableSource::new(Pattern {
        index,
        len: size,
        at: 0,
    });
    let done = resumable_async::drive(&mut upload, &mut source, transport, TokioTimer)
        .await
        .map_err(|e| e.to_string())?;
    if done.size != size || !done.verified.crc32c {
        return Err(format!("upload {index}: not verified"));
    }
    Ok(())
}

async fn identical(client: &ReqwestTransport, base: &str, index: u64, size: u64) -> bool {
    let url = format!(
        "{base}/storage/v1/b/many/o/{}?alt=media",
        object_name(index)
    );
    let Ok(uri) = url.parse::<http::Uri>() else {
        return false;
    };
    // A few tries: the server may still be closing the uploads' connections.
    for attempt in 0..5 {
        let mut request = http::Request::new(RequestBody::from_bytes(Bytes::new()));
        *request.uri_mut() = uri.clone();
        request
            .headers_mut()
            .insert(http::header::CONTENT_LENGTH, 0.into());
        match client.send(request).await {
            Ok(response) => {
                let body = response.into_body();
                return body.len() as u64 == size
                    && body
                        .iter()
                        .enumerate()
                        .all(|(o, b)| *b == pattern(index, o as u64));
            }
            Err(e) if attempt == 4 => eprintln!("downloading {} failed: {e}", object_name(index)),
            Err(_) => tokio::time::sleep(std::time::Duration::from_millis(200)).await,
        }
    }
    false
}

#[tokio::main]
async fn main() {
    let mut args = std::env::args().skip(1);
    let Some(base) = args.next() else {
        eprintln!("usage: many_uploads BASE_URL [COUNT] [SIZE_BYTES]");
        std::process::exit(2);
    };
    let base = base.trim_end_matches('/').to_owned();
    let count: u64 = args.next().and_then(|a| a.parse().ok()).unwrap_or(1000);
    let size: u64 = args.next().and_then(|a| a.parse().ok()).unwrap_or(1 << 20);
    let transport = ReqwestTransport::new().expect("an HTTP client");

    let started = Instant::now();
    let tasks: Vec<_> = (0..count)
        .map(|index| {
            let (base, transport) = (base.clone(), transport.clone());
            tokio::spawn(async move { upload(&base, index, size, &transport).await })
        })
        .collect();
    let mut failures = Vec::new();
    for task in tasks {
        match task.await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => failures.push(e),
            Err(e) => failures.push(e.to_string()),
        }
    }
    let seconds = started.elapsed().as_secs_f64();
    let rss_kib = peak_rss_kib();
    // Close the uploads' pooled connections: the server serves at most 1024 at once.
    drop(transport);

    let mut options = ReqwestOptions::default();
    options.max_response_body = usize::try_from(size)
        .unwrap_or(usize::MAX)
        .saturating_add(1);
    let client = ReqwestTransport::with_options(options).expect("an HTTP client");
    let mut differ = 0u64;
    for index in 0..count {
        if !identical(&client, &base, index, size).await {
            differ += 1;
        }
    }
    let bytes = count * size;
    println!(
        "{{\"uploads\": {count}, \"bytes\": {bytes}, \"seconds\": {seconds:.3}, \
         \"uploads_per_s\": {:.1}, \"mib_per_s\": {:.1}, \"peak_rss_kib\": {rss_kib}, \
         \"failed\": {}, \"differ\": {differ}}}",
        count as f64 / seconds,
        bytes as f64 / seconds / 1_048_576.0,
        failures.len(),
    );
    for f in failures.iter().take(5) {
        eprintln!("failed: {f}");
    }
    if !failures.is_empty() || differ > 0 {
        std::process::exit(1);
    }
}
