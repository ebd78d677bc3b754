//! `resumable demo`: the embedded conformance server, a generated file, and uploads of it
//! through the same code as `resumable gcs`, `resumable ton` and `resumable media`, with faults
//! injected on the way, every stored object checked byte for byte.

use std::fs::File;
use std::io::{BufWriter, Write as _};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use clap::Args;
use http::{HeaderMap, HeaderValue};
use resumable_core::media::ProcessingState;
use resumable_server::{Server, ServerConfig};

use crate::Failure;
use resumable_core::chunk::GCS_GRANULE;

use crate::gcs::{self, Job, Report};
use crate::media::{self, Api, MediaArgs};
use crate::run::RunArgs;
use crate::size::{human, parse_size};
use crate::ton::{self, TonArgs};

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

/// One line of the summary.
struct Row {
    what: &'static str,
    bytes: u64,
    requests: u64,
    retries: u64,
    resumes: u32,
    resumed_from: u64,
    /// What was verified beyond the stored bytes.
    check: &'static str,
    identical: bool,
    /// Request-body bytes the server received for this upload (re-sent bytes count again).
    received: u64,
    elapsed: Duration,
}

/// Runs the demo.
pub fn run(args: DemoArgs, interrupt: Arc<AtomicBool>) -> Result<(), Failure> {
    let size = parse_size(&args.size).map_err(|e| Failure::usage(format!("--size: {e}")))?;
    let dir = tempdir()?;
    let file = dir.join("demo.bin");
    write_source(&file, size)
        .map_err(|e| Failure::usage(format!("cannot write {}: {e}", file.display())))?;
    let source = std::fs::read(&file)
        .map_err(|e| Failure::usage(format!("cannot read back the demo file: {e}")))?;
    let server = Server::start(ServerConfig::default())
        .map_err(|e| Failure::usage(format!("cannot start the embedded server: {e}")))?;
    println!("embedded conformance server at {}", server.base_url());
    println!(
        "uploading a generated file of {} ({size} bytes)\n",
        human(size)
    );
    let progress = !args.no_progress;
    // About eight chunks whatever the size, so every fault below lands inside the upload.
    let chunk = (size / 8 / GCS_GRANULE * GCS_GRANULE).clamp(GCS_GRANULE, 4 << 20);
    let mut rows = Vec::new();

    // 1. GCS, XML/signed-URL start (G1), with the network misbehaving: a connection dropped
    //    mid-chunk, two 503s with Retry-After, a chunk only partly persisted (G5, G8).
    let faults = format!(
        "gcs.chunk#2=drop-after:{}; gcs.chunk#4=status:503x2,retry-after:1; gcs.chunk#6=persist:{}",
        chunk / 2,
        chunk / 2
    );
    println!(
        "1. GCS XML/signed-URL upload in {} chunks; faults: {faults}",
        human(chunk)
    );
    let url = with_session_faults(&server.gcs_xml_url(BUCKET, "xml.bin"), &faults);
    let started = Instant::now();
    let report = gcs::execute(
        &job(&file, url, chunk, &dir.join("xml.state"), progress),
        interrupt.clone(),
    )?;
    rows.push(gcs_row(
        "GCS XML, faults",
        &report,
        0,
        &server,
        "xml.bin",
        &source,
        started,
    ));

    // 2. GCS, JSON API start (G2): the process "crashes" half-way (the driver is stopped, as
    //    by Ctrl-C or kill), then the same job runs again from its saved state (G3).
    println!("\n2. GCS JSON API upload, interrupted half-way, then resumed from its saved state");
    let job = job(
        &file,
        server.gcs_json_url(BUCKET, "json.bin"),
        chunk,
        &dir.join("json.state"),
        progress,
    );
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
        return Err(Failure::interrupted("demo stopped".into()));
    }
    let (report, resumes) = match first {
        Err(failure) if failure.is_interrupted() => {
            let held = server
                .sessions()
                .into_iter()
                .find(|s| s.object == "json.bin")
                .map_or(0, |s| s.stored);
            println!(
                "   interrupted with {} on the server; running the same job again",
                human(held)
            );
            (gcs::execute(&job, interrupt.clone())?, 1)
        }
        other => (other?, 0),
    };
    rows.push(gcs_row(
        "GCS JSON, interrupted",
        &report,
        resumes,
        &server,
        "json.bin",
        &source,
        started,
    ));

    // 3. TON (T2-T6): chunks sized to the server's minimum and the observed rate, through a
    //    dropped connection and a 429 with Retry-After.
    let faults = "ton.chunk#2=drop-after:100000; ton.chunk#3=status:429,retry-after:1";
    println!("\n3. TON resumable upload; faults: {faults}");
    let started = Instant::now();
    let ton_args = TonArgs {
        file: file.clone(),
        bucket_url: server.ton_bucket_url("demo"),
        content_type: Some("application/octet-stream".into()),
        expires: None,
        chunk_size: chunk.to_string(),
        single: false,
        headers: vec![format!("x-resumable-session-faults: {faults}")],
        json: false,
        run: RunArgs {
            state: Some(dir.join("ton.state")),
            no_progress: !progress,
            max_retries: 10,
            retry_deadline: None,
        },
    };
    let report = ton::execute(&ton_args, interrupt.clone())?;
    let location = report.done.location.to_string();
    rows.push(Row {
        what: "TON, faults",
        bytes: report.done.size,
        requests: report.stats.requests,
        retries: report.stats.retries,
        resumes: 0,
        resumed_from: 0,
        check: "-",
        identical: server.ton_object("demo", &location).as_deref() == Some(&source[..]),
        received: server
            .ton_uploads()
            .iter()
            .map(|u| u.body_bytes_received)
            .sum(),
        elapsed: started.elapsed(),
    });

    // 4. media/upload, X API v2 (M1-M6): APPEND segments, up to 4 on their way at once, one
    //    answered 503 (retried with the same segment_index), then FINALIZE and STATUS polls
    //    while the server processes.
    let faults = "media.append#2=status:503";
    println!(
        "\n4. media/upload (X API v2), tweet_video with processing, 4 segments at once; \
         faults: {faults}"
    );
    let started = Instant::now();
    let media_args = MediaArgs {
        file: file.clone(),
        media_type: Some("video/mp4".into()),
        category: Some("tweet_video".into()),
        api: Some(Api::V2),
        endpoint: Some(server.media_v2_base()),
        api_base: None,
        additional_owners: Vec::new(),
        segment_size: chunk.to_string(),
        parallel: 4,
        headers: vec![format!("x-resumable-session-faults: {faults}")],
        json: false,
        run: RunArgs {
            state: Some(dir.join("media.state")),
            no_progress: !progress,
            max_retries: 10,
            retry_deadline: None,
        },
    };
    let report = media::execute(&media_args, interrupt.clone())?;
    let processed = report
        .done
        .processing
        .as_ref()
        .is_some_and(|p| p.state == ProcessingState::Succeeded);
    let media = server.media_info(&report.done.media_id);
    rows.push(Row {
        what: "media v2, processing",
        bytes: report.done.size,
        requests: report.stats.requests,
        retries: report.stats.retries,
        resumes: 0,
        resumed_from: 0,
        check: if processed { "processed" } else { "-" },
        identical: server.media(&report.done.media_id).as_deref() == Some(&source[..]),
        received: media.map_or(0, |m| m.body_bytes_received),
        elapsed: started.elapsed(),
    });

    println!(
        "\n{:<22} {:>10} {:>9} {:>8} {:>8} {:>13} {:>10} {:>7}",
        "upload", "bytes", "requests", "retries", "resumes", "resumed from", "checked", "stored"
    );
    let mut all_good = true;
    for r in &rows {
        all_good &= r.identical;
        println!(
            "{:<22} {:>10} {:>9} {:>8} {:>8} {:>13} {:>10} {:>7}",
            r.what,
            r.bytes,
            r.requests,
            r.retries,
            r.resumes,
            human(r.resumed_from),
            r.check,
            if r.identical { "same" } else { "DIFFERS" }
        );
        println!(
            "{:<22} the server received {} of request bodies ({} again after faults) in {:.1} s",
            "",
            human(r.received),
            human(r.received.saturating_sub(r.bytes)),
            r.elapsed.as_secs_f64()
        );
    }
    server.shutdown();
    let _ = std::fs::remove_dir_all(&dir);
    if all_good {
        println!("\nevery stored object is byte-identical to the file");
        Ok(())
    } else {
        Err(Failure::upload(
            "integrity",
            vec!["a stored object differs from the source".into()],
        ))
    }
}

fn job(file: &Path, url: String, chunk: u64, state: &Path, progress: bool) -> Job {
    Job {
        file: file.to_path_buf(),
        url,
        session: false,
        chunk: Some(chunk),
        content_type: HeaderValue::from_static("application/octet-stream"),
        start_headers: HeaderMap::new(),
        recheck: true,
        run: RunArgs {
            state: Some(state.to_path_buf()),
            no_progress: !progress,
            max_retries: 10,
            retry_deadline: None,
        },
    }
}

fn gcs_row(
    what: &'static str,
    report: &Report,
    resumes: u32,
    server: &Server,
    object: &str,
    source: &[u8],
    started: Instant,
) -> Row {
    Row {
        what,
        bytes: report.done.size,
        requests: report.stats.requests,
        retries: report.stats.retries,
        resumes,
        resumed_from: report.stats.resumed_from.unwrap_or(0),
        check: if report.done.verified.crc32c {
            "crc32c"
        } else {
            "-"
        },
        identical: server.object(BUCKET, object).as_deref() == Some(source),
        received: server
            .sessions()
            .into_iter()
            .filter(|s| s.object == object)
            .map(|s| s.body_bytes_received)
            .sum(),
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

fn tempdir() -> Result<PathBuf, Failure> {
    let dir = std::env::temp_dir().join(format!("resumable-demo-{}", std::process::id()));
    std::fs::create_dir_all(&dir)
        .map_err(|e| Failure::usage(format!("cannot create {}: {e}", dir.display())))?;
    Ok(dir)
}
