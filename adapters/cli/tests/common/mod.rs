//! What the binary's end-to-end tests share: a scratch folder with its own state folder, the
//! binary, and views of the conformance server.

#![allow(dead_code)]

use std::path::PathBuf;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use resumable_server::Server;

pub const BIN: &str = env!("CARGO_BIN_EXE_resumable");
pub const MIB: usize = 1 << 20;

pub fn data(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u64 * 131 + seed as u64) as u8 ^ (i >> 11) as u8)
        .collect()
}

/// A scratch folder with a file to upload and its own state folder.
pub struct Scratch {
    dir: tempfile::TempDir,
}

impl Scratch {
    pub fn new() -> Self {
        Scratch {
            dir: tempfile::tempdir().unwrap(),
        }
    }

    pub fn file(&self, name: &str, bytes: &[u8]) -> PathBuf {
        let path = self.dir.path().join(name);
        std::fs::write(&path, bytes).unwrap();
        path
    }

    /// A path inside the scratch folder.
    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    pub fn state_home(&self) -> PathBuf {
        self.dir.path().join("state")
    }

    /// The resume states kept (not their lock files).
    pub fn state_files(&self) -> Vec<PathBuf> {
        match std::fs::read_dir(self.state_home().join("resumable")) {
            Ok(entries) => entries
                .map(|e| e.unwrap().path())
                .filter(|p| p.extension().is_some_and(|e| e == "json"))
                .collect(),
            Err(_) => Vec::new(),
        }
    }

    pub fn command(&self, args: &[&str]) -> Command {
        let mut c = Command::new(BIN);
        c.args(args)
            .env("XDG_STATE_HOME", self.state_home())
            // No real credentials: the local server needs none.
            .env_remove("X_CONSUMER_KEY")
            .env_remove("X_BEARER_TOKEN")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        c
    }

    pub fn run(&self, args: &[&str]) -> Output {
        self.command(args).output().unwrap()
    }
}

pub fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Adds a per-session fault script to a start URL.
pub fn with_faults(url: &str, script: &str) -> String {
    let encoded: String = script
        .bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect();
    format!("{url}&session-faults={encoded}")
}

pub fn stored(server: &Server, object: &str) -> u64 {
    server
        .sessions()
        .into_iter()
        .filter(|s| s.object == object)
        .map(|s| s.stored)
        .max()
        .unwrap_or(0)
}

pub fn received(server: &Server, object: &str) -> u64 {
    server
        .sessions()
        .into_iter()
        .filter(|s| s.object == object)
        .map(|s| s.body_bytes_received)
        .sum()
}

pub fn wait_until(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(5));
    }
}

pub fn starts(server: &Server) -> usize {
    server
        .request_log()
        .iter()
        .filter(|e| e.method == "POST")
        .count()
}

/// Sends `signal` (`INT`, `TERM`, `HUP`, `KILL`) to the process `pid`.
pub fn signal(pid: u32, signal: &str) {
    let status = Command::new("kill")
        .args([format!("-{signal}"), pid.to_string()])
        .status()
        .unwrap();
    assert!(status.success(), "kill -{signal} {pid}");
}

/// The one JSON object a run printed on stdout.
pub fn json_of(out: &Output) -> serde_json::Value {
    serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("stdout is not one JSON object ({e}): {}", text(&out.stdout)))
}
