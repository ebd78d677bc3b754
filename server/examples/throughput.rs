//! Measures how fast the conformance server accepts a GCS resumable upload over loopback.
//!
//! ```text
//! cargo run --release -p resumable-server --example throughput -- [TOTAL_MIB] [CHUNK_MIB]
//! ```
//!
//! A raw keep-alive client (one connection, no per-byte work: the same buffer is sent again
//! for every chunk) uploads `TOTAL_MIB` (default 2048) in chunks of `CHUNK_MIB` (default
//! 64) through a JSON API session and prints the rate of each run:
//! - MD5 off, cold memory: the first upload of a fresh process writes to memory never
//!   touched before (page faults and kernel zeroing, slow on a VM);
//! - MD5 off, warm memory (`ServerConfig::warm_memory`), three runs;
//! - MD5 on (at most 512 MiB): bound by MD5 itself.
//!
//! The server stores every byte and checksums it (CRC32C, and MD5 when on); each object is
//! checked for size and CRC32C (after the clock stops), then removed.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Instant;

use resumable_server::{Server, ServerConfig};

fn main() {
    let mut args = std::env::args().skip(1);
    let total_mib: u64 = args.next().and_then(|a| a.parse().ok()).unwrap_or(2048);
    let chunk_mib: u64 = args.next().and_then(|a| a.parse().ok()).unwrap_or(64);
    let total = total_mib << 20;
    let chunk = (chunk_mib << 20).min(total);
    // One chunk's worth of data, reused for every chunk.
    let data: Vec<u8> = (0..chunk).map(|i| (i * 31 % 251) as u8).collect();

    println!("upload of {total_mib} MiB in {chunk_mib} MiB chunks over loopback, one connection");
    for (md5, warm, runs, size) in [
        (false, false, 1, total),
        (false, true, 3, total),
        (true, true, 1, total.min(512 << 20)),
    ] {
        let server = Server::start(ServerConfig {
            md5,
            warm_memory: if warm { size } else { 0 },
            ..ServerConfig::default()
        })
        .expect("server starts");
        for run in 1..=runs {
            let seconds = upload(&server, &data, size);
            println!(
                "  md5 {:3}  memory {:4}  run {run}: {:7.1} MiB in {seconds:6.3} s = {:5.2} GB/s",
                if md5 { "on" } else { "off" },
                if warm { "warm" } else { "cold" },
                size as f64 / (1 << 20) as f64,
                size as f64 / seconds / 1e9
            );
        }
        server.shutdown();
    }
}

/// Uploads `size` bytes (repeating `data`) and returns the seconds taken by the chunks.
fn upload(server: &Server, data: &[u8], size: u64) -> f64 {
    let mut conn = TcpStream::connect(server.addr()).expect("connect");
    conn.set_nodelay(true).ok();
    let path = "/upload/storage/v1/b/bench/o?uploadType=resumable&name=big.bin";
    let head = format!(
        "POST {path} HTTP/1.1\r\nHost: {}\r\nX-Upload-Content-Length: {size}\r\nContent-Length: 0\r\n\r\n",
        server.addr()
    );
    conn.write_all(head.as_bytes()).expect("write");
    let (status, headers) = read_response(&mut conn);
    assert_eq!(status, 200, "start");
    let location = header(&headers, "location").expect("Location");
    let session_path = &location[location.find("/upload/").expect("path")..];

    let start = Instant::now();
    let mut offset = 0u64;
    while offset < size {
        let len = (data.len() as u64).min(size - offset);
        let body = &data[..len as usize];
        let head = format!(
            "PUT {session_path} HTTP/1.1\r\nHost: {}\r\nContent-Length: {len}\r\nContent-Range: bytes {offset}-{}/{size}\r\n\r\n",
            server.addr(),
            offset + len - 1
        );
        conn.write_all(head.as_bytes()).expect("write head");
        conn.write_all(body).expect("write body");
        let (status, _) = read_response(&mut conn);
        offset += len;
        let expected = if offset == size { 200 } else { 308 };
        assert_eq!(status, expected, "chunk ending at {offset}");
    }
    let seconds = start.elapsed().as_secs_f64();
    // The expected CRC32C, computed after the clock stopped.
    let mut crc = 0u32;
    let mut offset = 0u64;
    while offset < size {
        let len = (data.len() as u64).min(size - offset);
        crc = crc32c::crc32c_append(crc, &data[..len as usize]);
        offset += len;
    }
    let info = server.object_info("bench", "big.bin").expect("stored");
    assert_eq!(info.size, size);
    assert_eq!(info.crc32c, crc, "stored CRC32C");
    server.remove_object("bench", "big.bin");
    seconds
}

/// Reads one response: status, headers (body read and discarded).
fn read_response(conn: &mut TcpStream) -> (u16, Vec<(String, String)>) {
    let mut buf = Vec::new();
    let mut byte = [0u8; 1];
    while !buf.ends_with(b"\r\n\r\n") {
        let n = conn.read(&mut byte).expect("read");
        assert!(n == 1, "connection closed");
        buf.push(byte[0]);
    }
    let text = String::from_utf8_lossy(&buf);
    let mut lines = text.split("\r\n");
    let status = lines
        .next()
        .and_then(|l| l.split(' ').nth(1))
        .and_then(|s| s.parse().ok())
        .expect("status");
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    let len: usize = header(&headers, "content-length")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let mut body = vec![0; len];
    conn.read_exact(&mut body).expect("body");
    (status, headers)
}

fn header(headers: &[(String, String)], name: &str) -> Option<String> {
    headers
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.clone())
}
