//! Interop with a real third-party GCS server: gcp-storage-emulator from PyPI (JSON API only).
//! `scripts/test` (and so `.ci/run`) installs it, starts it and sets `GCS_EMULATOR_URL`; when
//! the variable is not set these tests say so and check nothing.
//!
//! The emulator's quirks the client must cope with: it answers `Range: bytes=0-0` to a status
//! query before any data (G5), closes the connection after every response, and rejects resent
//! bytes with 400 (so a resume must start exactly at the persisted offset).

use std::io::Write as _;
use std::path::PathBuf;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use resumable_blocking::{SeekableSource, UreqTransport};
use resumable_core::gcs::{GcsConfig, GcsUpload, Start};

const BIN: &str = env!("CARGO_BIN_EXE_resumable");
const BUCKET: &str = "test-bucket";

fn emulator() -> Option<String> {
    match std::env::var("GCS_EMULATOR_URL") {
        Ok(url) if !url.is_empty() => Some(url.trim_end_matches('/').to_owned()),
        _ => {
            eprintln!("skipped: GCS_EMULATOR_URL is not set (scripts/test sets it up)");
            None
        }
    }
}

fn data(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

fn start_url(base: &str, name: &str) -> String {
    format!("{base}/upload/storage/v1/b/{BUCKET}/o?uploadType=resumable&name={name}")
}

/// The object as the emulator serves it.
fn download(base: &str, name: &str) -> Vec<u8> {
    let url = format!("{base}/download/storage/v1/b/{BUCKET}/o/{name}?alt=media");
    let mut response = ureq::get(&url).call().expect("download");
    response
        .body_mut()
        .with_config()
        .limit(64 << 20)
        .read_to_vec()
        .expect("download body")
}

fn unique(prefix: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!("{prefix}-{}-{nanos}", std::process::id())
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn cli(state_home: &std::path::Path, args: &[&str], stdin: Option<&[u8]>) -> Output {
    let mut child = Command::new(BIN)
        .args(args)
        .env("XDG_STATE_HOME", state_home)
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    if let Some(bytes) = stdin {
        child.stdin.take().unwrap().write_all(bytes).unwrap();
    }
    child.wait_with_output().unwrap()
}

const SIZES: [usize; 5] = [0, 1, 256 * 1024 - 1, 256 * 1024, 5 * (1 << 20) + 7];

// G2, G4, G5, G7: the blocking driver against the emulator, known sizes, byte for byte.
#[test]
fn blocking_driver_uploads_every_size_to_the_emulator() {
    let Some(base) = emulator() else { return };
    for (i, len) in SIZES.into_iter().enumerate() {
        let bytes = data(len, i as u64 + 1);
        let name = unique(&format!("driver-{len}"));
        let start = Start::Json {
            url: start_url(&base, &name).parse().unwrap(),
            content_type: http::HeaderValue::from_static("application/octet-stream"),
            metadata: None,
        };
        let mut config = GcsConfig::new(Some(len as u64));
        config.chunk_size = 256 * 1024;
        let mut upload = GcsUpload::new(start, config).unwrap();
        let mut source = SeekableSource::new(std::io::Cursor::new(bytes.clone()));
        let done = resumable_blocking::drive(&mut upload, &mut source, &mut UreqTransport::new())
            .unwrap_or_else(|e| panic!("{len} bytes: {e}"));
        assert_eq!(done.size, len as u64);
        assert!(
            done.verified.size && done.verified.crc32c,
            "{len}: {:?}",
            done.verified
        );
        assert_eq!(download(&base, &name), bytes, "{len} bytes");
    }
}

// G4: the CLI, known size (a file) and unknown size (stdin), every size, byte for byte.
#[test]
fn cli_uploads_files_and_stdin_to_the_emulator() {
    let Some(base) = emulator() else { return };
    let dir = tempfile::tempdir().unwrap();
    for (i, len) in SIZES.into_iter().enumerate() {
        let bytes = data(len, 100 + i as u64);
        let path: PathBuf = dir.path().join(format!("f{len}.bin"));
        std::fs::write(&path, &bytes).unwrap();

        let name = unique(&format!("cli-file-{len}"));
        let url = start_url(&base, &name);
        let args = [
            "gcs",
            "--chunk-size",
            "256KiB",
            "--json",
            path.to_str().unwrap(),
            &url,
        ];
        let out = cli(dir.path(), &args, None);
        assert!(out.status.success(), "file {len}: {}", text(&out.stderr));
        assert_eq!(download(&base, &name), bytes, "file {len}");

        let name = unique(&format!("cli-stdin-{len}"));
        let url = start_url(&base, &name);
        let out = cli(
            dir.path(),
            &["gcs", "--chunk-size", "256KiB", "-", &url],
            Some(&bytes),
        );
        assert!(out.status.success(), "stdin {len}: {}", text(&out.stderr));
        assert_eq!(download(&base, &name), bytes, "stdin {len}");
    }
}

// G3, G5, G6: kill the CLI mid-upload, run it again: it resumes from what the emulator holds
// (which rejects any resent byte) and the object is byte-identical.
#[test]
fn cli_resumes_on_the_emulator_after_kill_9() {
    let Some(base) = emulator() else { return };
    let dir = tempfile::tempdir().unwrap();
    let bytes = data(24 << 20, 7);
    let path = dir.path().join("big.bin");
    std::fs::write(&path, &bytes).unwrap();
    let name = unique("cli-kill");
    let url = start_url(&base, &name);
    let state = dir.path().join("big.state");
    let args = [
        "gcs",
        "--chunk-size",
        "256KiB",
        "--json",
        "--state",
        state.to_str().unwrap(),
        path.to_str().unwrap(),
        &url,
    ];
    let mut child = Command::new(BIN)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // Kill once the saved state shows the emulator holding something.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let persisted = std::fs::read(&state)
            .ok()
            .and_then(|t| serde_json::from_slice::<serde_json::Value>(&t).ok())
            .and_then(|v| v["gcs"]["persisted"].as_u64())
            .unwrap_or(0);
        if persisted >= 512 * 1024 {
            break;
        }
        assert!(Instant::now() < deadline, "the upload made no progress");
        std::thread::sleep(Duration::from_millis(2));
    }
    child.kill().unwrap();
    let _ = child.wait();

    let out = cli(dir.path(), &args, None);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(json["resumed_from"].as_u64().unwrap() > 0, "{json}");
    assert_eq!(download(&base, &name), bytes);
    assert!(!state.exists(), "state removed on success");
}
