//! `resumable demo`: the embedded conformance server, a generated file, and uploads through
//! the same code as `resumable gcs`, with faults injected on the way, checked byte for byte.

use std::fs::File;
use std::io::{BufWriter, Write as _};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use clap::Args;
use http::{HeaderMap, HeaderValue};
use resumable_conformance::{Server, ServerConfig};

use crate::Failure;
use crate::gcs::{self, Job, Report};
use crate::size::{human, parse_size};

/// Arguments of `resumable demo`.
#[derive(Args, Debug)]
pub struct DemoArgs {
    /// Size of the generated file, e.g. 32MiB.
    #[arg(long, value_name = "SIZE", default_value = "32MiB")]
    size: String,
    /// No progress bars.
    #[arg(long)]
    no_progress: bool,
}

const BUCKET: &str = "demo-bucket";
const CHUNK: u64 = 4 << 20;

/// One line of the summary.
struct Row {
    what: &'static str,
    report: Report,
    resumes: u32,
    identical: bool,
    received: u64,
    elapsed: Duration,
}

/// Runs the demo.
pub fn run(args: DemoArgs, interrupt: Arc<AtomicBool>) -> Result<(), Failure> {
    let size = parse_size(&args.size).map_err(|e| Failure::Usage(format!("--size: {e}")))?;
    let dir = tempdir()?;
    let file = dir.join("demo.bin");
    write_source(&file, size)
        .map_err(|e| Failure::Usage(format!("cannot write {}: {e}", file.display())))?;
    let source = std::fs::read(&file)
        .map_err(|e| Failure::Usage(format!("cannot read back the demo file: {e}")))?;
    let server = Server::start(ServerConfig::default())
        .map_err(|e| Failure::Usage(format!("cannot start the embedded server: {e}")))?;
    println!("embedded conformance server at {}", server.base_url());
    println!(
        "uploading {} ({size} bytes) in {} chunks\n",
        human(size),
        human(CHUNK)
    );

    let mut rows = Vec::new();

    // 1. XML/signed-URL start (G1), with the network misbehaving: a connection dropped
    //    mid-chunk, two 503s with Retry-After, a chunk only partly persisted (G5, G8).
    let faults = "gcs.chunk#2=drop-after:1MiB; gcs.chunk#4=status:503x2,retry-after:1; gcs.chunk#6=persist:256KiB";
    println!("1. GCS XML/signed-URL upload; faults: {faults}");
    let url = with_session_faults(&server.gcs_xml_url(BUCKET, "xml.bin"), faults);
    let job = job(&file, url, &dir.join("xml.state"), !args.no_progress);
    let started = Instant::now();
    let report = gcs::execute(&job, interrupt.clone())?;
    rows.push(row(
        "GCS XML, faults",
        report,
        0,
        &server,
        "xml.bin",
        &source,
        started,
    ));

    // 2. JSON API start (G2), the process "crashes" half-way (the driver is stopped as by
    //    Ctrl-C or kill), then the same job runs again from its saved state (G3).
    println!("\n2. GCS JSON API upload, interrupted half-way, then resumed from the saved state");
    let url = server.gcs_json_url(BUCKET, "json.bin");
    let job = self::job(&file, url, &dir.join("json.state"), !args.no_progress);
    let started = Instant::now();
    let crash = Arc::new(AtomicBool::new(false));
    let finished = AtomicBool::new(false);
    let first = std::thread::scope(|scope| {
        scope.spawn(|| watch_half(&server, "json.bin", size, &crash, &interrupt, &finished));
        let first = gcs::execute(&job, crash.clone());
        finished.store(true, Ordering::SeqCst);
        first
    });
    if interrupt.load(Ordering::SeqCst) {
        return Err(Failure::Interrupted("demo stopped".into()));
    }
    let resumes = match first {
        Err(Failure::Interrupted(_)) => {
            let held = server
                .sessions()
                .into_iter()
                .find(|s| s.object == "json.bin")
                .map_or(0, |s| s.stored);
            println!(
                "   interrupted with {} on the server; running the same job again",
                human(held)
            );
            1
        }
        Err(other) => return Err(other),
        Ok(_) => 0,
    };
    let report = if resumes == 1 {
        gcs::execute(&job, interrupt.clone())?
    } else {
        first?
    };
    rows.push(row(
        "GCS JSON, interrupted",
        report,
        resumes,
        &server,
        "json.bin",
        &source,
        started,
    ));

    println!(
        "\n{:<24} {:>10} {:>9} {:>8} {:>8} {:>13} {:>9} {:>7}",
        "upload", "bytes", "requests", "retries", "resumes", "resumed from", "crc32c", "stored"
    );
    let mut all_good = true;
    for r in &rows {
        let s = r.report.stats;
        let crc = if r.report.done.verified.crc32c {
            "verified"
        } else {
            "unchecked"
        };
        let stored = if r.identical { "same" } else { "DIFFERS" };
        all_good &= r.identical && r.report.done.verified.crc32c;
        println!(
            "{:<24} {:>10} {:>9} {:>8} {:>8} {:>13} {:>9} {:>7}",
            r.what,
            r.report.done.size,
            s.requests,
            s.retries,
            r.resumes,
            human(s.resumed_from.unwrap_or(0)),
            crc,
            stored
        );
        let resent = r.received.saturating_sub(size);
        println!(
            "{:<24} server received {} of bodies ({} sent again after faults) in {:.1} s",
            "",
            human(r.received),
            human(resent),
            r.elapsed.as_secs_f64()
        );
    }
    server.shutdown();
    let _ = std::fs::remove_dir_all(&dir);
    if all_good {
        println!("\nevery upload is byte-identical on the server and its CRC32C was verified");
        Ok(())
    } else {
        Err(Failure::Upload(vec![
            "a stored object differs from the source".into(),
        ]))
    }
}

fn job(file: &Path, url: String, state: &Path, progress: bool) -> Job {
    Job {
        file: file.to_path_buf(),
        url,
        session: false,
        chunk: CHUNK,
        content_type: HeaderValue::from_static("application/octet-stream"),
        start_headers: HeaderMap::new(),
        state: Some(state.to_path_buf()),
        progress,
        max_retries: 10,
    }
}

fn row(
    what: &'static str,
    report: Report,
    resumes: u32,
    server: &Server,
    object: &str,
    source: &[u8],
    started: Instant,
) -> Row {
    let received = server
        .sessions()
        .into_iter()
        .filter(|s| s.object == object)
        .map(|s| s.body_bytes_received)
        .sum();
    Row {
        what,
        report,
        resumes,
        identical: server.object(BUCKET, object).as_deref() == Some(source),
        received,
        elapsed: started.elapsed(),
    }
}

/// Raises `crash` once the server holds half of `object`, or when Ctrl-C raised
/// `interrupt`; returns when the upload has `finished` either way.
fn watch_half(
    server: &Server,
    object: &str,
    size: u64,
    crash: &AtomicBool,
    interrupt: &AtomicBool,
    finished: &AtomicBool,
) {
    while !finished.load(Ordering::SeqCst) {
        let held = server
            .sessions()
            .into_iter()
            .find(|s| s.object == object)
            .map_or(0, |s| s.stored);
        if held >= size / 2 || interrupt.load(Ordering::SeqCst) {
            crash.store(true, Ordering::SeqCst);
            return;
        }
        std::thread::sleep(Duration::from_millis(2));
    }
}

/// Adds a per-session fault script to a start URL (see the conformance server's docs).
fn with_session_faults(url: &str, script: &str) -> String {
    let mut encoded = String::new();
    for b in script.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            encoded.push(b as char);
        } else {
            encoded.push_str(&format!("%{b:02X}"));
        }
    }
    let sep = if url.contains('?') { '&' } else { '?' };
    format!("{url}{sep}session-faults={encoded}")
}

/// Deterministic pseudo-random bytes (xorshift), written in 1 MiB blocks.
fn write_source(path: &Path, size: u64) -> std::io::Result<()> {
    let mut out = BufWriter::new(File::create(path)?);
    let mut state = 0x9E37_79B9_7F4A_7C15u64;
    let mut block = vec![0u8; 1 << 20];
    let mut left = size;
    while left > 0 {
        for word in block.chunks_mut(8) {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            let bytes = state.to_le_bytes();
            word.copy_from_slice(&bytes[..word.len()]);
        }
        let n = left.min(block.len() as u64) as usize;
        out.write_all(&block[..n])?;
        left -= n as u64;
    }
    out.flush()
}

fn tempdir() -> Result<std::path::PathBuf, Failure> {
    let dir = std::env::temp_dir().join(format!("resumable-demo-{}", std::process::id()));
    std::fs::create_dir_all(&dir)
        .map_err(|e| Failure::Usage(format!("cannot create {}: {e}", dir.display())))?;
    Ok(dir)
}
