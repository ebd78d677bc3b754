//! `resumable-bench-driver FILE URL CHUNK crc32c|none`: one GCS upload of FILE through the
//! blocking driver alone (`resumable_blocking::drive` over ureq, the file read where asked),
//! started at the JSON API URL, with CRC32C on or off. Prints one JSON object: bytes,
//! requests, seconds.

use std::fs::File;
use std::process::ExitCode;
use std::time::Instant;

use resumable_blocking::{SeekableSource, UreqTransport};
use resumable_core::checksum::Checksums;
use resumable_core::Upload as _;
use resumable_core::gcs::{GcsConfig, GcsUpload, Start};

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [path, url, chunk, checksum] = args.as_slice() else {
        eprintln!("usage: resumable-bench-driver FILE URL CHUNK_BYTES crc32c|none");
        return ExitCode::from(2);
    };
    let (Ok(chunk), Ok(url)) = (chunk.parse::<u64>(), url.parse::<http::Uri>()) else {
        eprintln!("bad chunk size or URL");
        return ExitCode::from(2);
    };
    let file = match File::open(path) {
        Ok(f) => f,
        Err(e) => {
            eprintln!("{path}: {e}");
            return ExitCode::from(2);
        }
    };
    let total = file.metadata().map(|m| m.len()).ok();
    let mut config = GcsConfig::new(total);
    config.chunk_size = chunk;
    config.checksums = match checksum.as_str() {
        "none" => Checksums::NONE,
        _ => Checksums::default(),
    };
    let start = Start::Json {
        url,
        content_type: http::HeaderValue::from_static("application/octet-stream"),
        metadata: None,
    };
    let mut upload = match GcsUpload::new(start, config) {
        Ok(u) => u,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(2);
        }
    };
    let mut source = SeekableSource::new(file);
    let mut transport = UreqTransport::new();
    let started = Instant::now();
    match resumable_blocking::drive(&mut upload, &mut source, &mut transport) {
        Ok(done) => {
            println!(
                "{{\"bytes\":{},\"requests\":{},\"seconds\":{:.4}}}",
                done.size,
                upload.stats().requests,
                started.elapsed().as_secs_f64()
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("upload failed: {e}");
            ExitCode::from(1)
        }
    }
}
