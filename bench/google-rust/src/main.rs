//! Google's Rust client (`google-cloud-storage` 1.x) against `resumable serve`.
//!
//! ```text
//! resumable serve --listen 127.0.0.1:9090 &
//! cargo run --release --manifest-path bench/google-rust/Cargo.toml -- http://127.0.0.1:9090 [SIZE...]
//! ```
//!
//! For each size (default 20 MB and 1 GiB; `20MB`, `1GiB`, `300000` …) it uploads an object
//! of pseudo-random bytes with `write_object(…).send_unbuffered()` (above 16 MiB the crate
//! uses a resumable upload in 8 MiB chunks, with CRC32C), reads it back with
//! `read_object(…)`, comparing every byte as it arrives, and prints the upload and download
//! throughput and the process's peak RSS (`VmHWM`; it includes the source buffer).
//!
//! The crate has no emulator switch (no `STORAGE_EMULATOR_HOST`): the client is pointed at
//! the server with `with_endpoint(URL)` and given anonymous credentials, so no Google
//! account or token is involved. Exits 1 on any mismatch or error.

use std::time::Instant;

use google_cloud_auth::credentials::anonymous::Builder as Anonymous;
use google_cloud_storage::client::Storage;

const BUCKET: &str = "projects/_/buckets/google-rust";

fn parse_size(text: &str) -> Option<usize> {
    let digits_end = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (n, unit) = text.split_at(digits_end);
    let n: usize = n.parse().ok()?;
    let mul = match unit {
        "" | "B" => 1,
        "KB" => 1_000,
        "MB" => 1_000_000,
        "GB" => 1_000_000_000,
        "KiB" => 1 << 10,
        "MiB" => 1 << 20,
        "GiB" => 1 << 30,
        _ => return None,
    };
    n.checked_mul(mul)
}

/// `len` pseudo-random bytes (xorshift64*, fixed seed per size).
fn payload(len: usize) -> Vec<u8> {
    let mut x = 0x9E37_79B9_7F4A_7C15u64 ^ len as u64;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        out.extend_from_slice(&x.wrapping_mul(0x2545_F491_4F6C_DD1D).to_le_bytes());
    }
    out.truncate(len);
    out
}

/// Peak resident set size of this process, from /proc (KiB).
fn peak_rss_kib() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().strip_suffix("kB"))
        .and_then(|v| v.trim().parse().ok())
}

fn mb_s(bytes: usize, secs: f64) -> f64 {
    bytes as f64 / secs / 1e6
}

async fn round_trip(client: &Storage, size: usize) -> Result<(), String> {
    let data = bytes::Bytes::from(payload(size));
    let name = format!("bench-{size}.bin");
    let t = Instant::now();
    let object = client
        .write_object(BUCKET, &name, data.clone())
        .send_unbuffered()
        .await
        .map_err(|e| format!("upload of {size} bytes: {e}"))?;
    let up = t.elapsed().as_secs_f64();
    if object.size != size as i64 {
        return Err(format!("the server says {} bytes, {size} were sent", object.size));
    }
    let t = Instant::now();
    let mut read = client
        .read_object(BUCKET, &name)
        .send()
        .await
        .map_err(|e| format!("download of {name}: {e}"))?;
    let mut at = 0usize;
    while let Some(chunk) = read.next().await {
        let chunk = chunk.map_err(|e| format!("download of {name} at {at}: {e}"))?;
        let end = at + chunk.len();
        if end > size || chunk[..] != data[at..end] {
            return Err(format!("downloaded bytes {at}..{end} differ from the upload"));
        }
        at = end;
    }
    let down = t.elapsed().as_secs_f64();
    if at != size {
        return Err(format!("downloaded {at} bytes of {size}"));
    }
    println!(
        "{size:>11} bytes: upload {up:7.3} s = {:7.1} MB/s, download {down:7.3} s = {:7.1} MB/s, byte for byte equal; peak RSS {} MiB",
        mb_s(size, up),
        mb_s(size, down),
        peak_rss_kib().map_or("?".to_owned(), |k| (k / 1024).to_string()),
    );
    Ok(())
}

#[tokio::main]
async fn main() {
    let mut args = std::env::args().skip(1);
    let Some(url) = args.next() else {
        eprintln!("usage: google-rust-bench URL [SIZE...]   (e.g. http://127.0.0.1:9090 20MB 1GiB)");
        std::process::exit(2);
    };
    let mut sizes: Vec<usize> = Vec::new();
    for a in args {
        match parse_size(&a) {
            Some(n) => sizes.push(n),
            None => {
                eprintln!("not a size: {a}");
                std::process::exit(2);
            }
        }
    }
    if sizes.is_empty() {
        sizes = vec![20_000_000, 1 << 30];
    }
    let client = match Storage::builder()
        .with_endpoint(url.trim_end_matches('/'))
        .with_credentials(Anonymous::new().build())
        .build()
        .await
    {
        Ok(c) => c,
        Err(e) => {
            eprintln!("cannot build the client: {e}");
            std::process::exit(1);
        }
    };
    println!("google-cloud-storage 1.21.0 against {url}");
    for size in sizes {
        if let Err(e) = round_trip(&client, size).await {
            eprintln!("FAIL {e}");
            std::process::exit(1);
        }
    }
}
