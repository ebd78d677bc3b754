//! `resumable tus` end to end against the conformance server's tus side, with faults (a
//! session script in a header on the creation request), resume after `kill -9`, an existing
//! upload URL, lost answers, checksum mismatches, stdin of unknown size, and `--cancel`.

mod common;

use std::io::Write as _;
use std::process::{Output, Stdio};
use std::time::Duration;

use common::*;
use resumable_server::{Server, ServerConfig};

const KIB: usize = 1024;

fn json(out: &Output) -> serde_json::Value {
    assert!(
        out.status.success(),
        "exit {:?}: {}",
        out.status.code(),
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

fn faults(script: &str) -> String {
    format!("x-resumable-session-faults: {script}")
}

fn server() -> Server {
    Server::start(ServerConfig::default()).unwrap()
}

// U4, U6, U7, U14: an upload through a drop mid-body (the server keeps what arrived) and a
// 503 ends byte-identical, with its metadata; --json says where it is.
#[test]
fn tus_upload_with_faults_and_metadata() {
    let server = server();
    let s = Scratch::new();
    let bytes = data(700 * KIB + 3, 1);
    let file = s.file("a.bin", &bytes);
    let out = s.run(&[
        "tus",
        "--chunk-size",
        "256KiB",
        "--metadata",
        "filename=a.bin",
        "--metadata",
        "filetype=application/octet-stream",
        "--json",
        "-H",
        &faults("tus.patch#2=drop-after:100000; tus.patch#3=status:503,retry-after:0"),
        file.to_str().unwrap(),
        &server.tus_url(),
    ]);
    let j = json(&out);
    assert_eq!(j["protocol"], "tus");
    assert_eq!(j["bytes"], bytes.len() as u64);
    assert_eq!(j["status"], 204);
    assert_eq!(j["retries"], 2, "{j}");
    let url = j["upload_url"].as_str().unwrap();
    assert_eq!(server.tus_upload_bytes(url).unwrap(), bytes);
    let info = server.tus_upload(url).unwrap();
    assert_eq!(
        info.metadata_pairs,
        vec![
            ("filename".to_owned(), b"a.bin".to_vec()),
            ("filetype".to_owned(), b"application/octet-stream".to_vec())
        ]
    );
    // The drop kept 100000 bytes of chunk 2: they were not sent again (U4); only the chunk
    // the 503 refused went twice.
    assert_eq!(
        info.body_bytes_received,
        bytes.len() as u64 + 256 * KIB as u64,
        "{info:?}"
    );
    assert_eq!(s.state_files().len(), 0, "state removed on success");
}

// U14: an answer lost after the server stored the chunk: the client asks (HEAD) and goes on;
// nothing is sent twice.
#[test]
fn tus_lost_answer_is_followed_by_head_not_a_resend() {
    let server = server();
    let s = Scratch::new();
    let bytes = data(600 * KIB, 2);
    let file = s.file("b.bin", &bytes);
    let j = json(&s.run(&[
        "tus",
        "--chunk-size",
        "256KiB",
        "--json",
        "-H",
        &faults("tus.patch#1=drop-after:99999999"),
        file.to_str().unwrap(),
        &server.tus_url(),
    ]));
    let url = j["upload_url"].as_str().unwrap();
    assert_eq!(server.tus_upload_bytes(url).unwrap(), bytes);
    let info = server.tus_upload(url).unwrap();
    assert_eq!(
        info.body_bytes_received,
        bytes.len() as u64,
        "no byte sent twice"
    );
    let heads = server
        .request_log()
        .iter()
        .filter(|e| e.method == "HEAD")
        .count();
    assert_eq!(heads, 1);
}

// U15: kill -9 during a stalled PATCH, run again: the same upload continues from what the
// server says it holds (HEAD), one creation in all, byte-identical.
#[test]
fn tus_resumes_after_kill_9() {
    let server = server();
    let s = Scratch::new();
    let bytes = data(1024 * KIB + 5, 3);
    let file = s.file("k.bin", &bytes);
    let url = server.tus_url();
    let script = faults("tus.patch#2=stall:20s");
    let args = [
        "tus",
        "--chunk-size",
        "256KiB",
        "--json",
        "-H",
        script.as_str(),
        file.to_str().unwrap(),
        url.as_str(),
    ];
    let mut child = s.command(&args).spawn().unwrap();
    wait_until("the first chunk stored", || {
        server
            .tus_uploads()
            .iter()
            .any(|u| u.offset >= 2 * 256 * KIB as u64)
    });
    std::thread::sleep(Duration::from_millis(100));
    child.kill().unwrap();
    let _ = child.wait();
    assert_eq!(s.state_files().len(), 1);

    let j = json(&s.run(&args));
    assert!(
        j["resumed_from"].as_u64().unwrap() >= 2 * 256 * KIB as u64,
        "{j}"
    );
    let upload_url = j["upload_url"].as_str().unwrap();
    assert_eq!(server.tus_upload_bytes(upload_url).unwrap(), bytes);
    assert_eq!(
        server.tus_uploads().len(),
        1,
        "no second upload was created"
    );
}

// U3, U11: an existing upload URL (here from a run that was refused part-way) is resumed
// with --upload-url, with SHA-1 on every PATCH and two 460 answers on the way.
#[test]
fn tus_upload_url_resume_with_checksums_through_mismatches() {
    let server = server();
    let s = Scratch::new();
    let bytes = data(500 * KIB + 1, 4);
    let file = s.file("c.bin", &bytes);
    let out = s.run(&[
        "tus",
        "--chunk-size",
        "128KiB",
        "--json",
        "-H",
        &faults("tus.patch#2=status:400; tus.patch#4..5=status:460"),
        file.to_str().unwrap(),
        &server.tus_url(),
    ]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    assert_eq!(json_of(&out)["error"]["kind"], "server_refused");
    let uploads = server.tus_uploads();
    assert_eq!(uploads.len(), 1);
    let upload_url = format!("{}{}", server.base_url(), uploads[0].path);

    let j = json(&s.run(&[
        "tus",
        "--upload-url",
        "--chunk-size",
        "128KiB",
        "--checksum",
        "sha1",
        "--json",
        file.to_str().unwrap(),
        &upload_url,
    ]));
    assert_eq!(j["resumed_from"], 128 * KIB as u64);
    assert_eq!(j["checksum"], "sha1");
    assert_eq!(server.tus_upload_bytes(&upload_url).unwrap(), bytes);
    assert_eq!(
        server.tus_upload(&upload_url).unwrap().checksum_mismatches,
        0
    );
}

// U9: stdin of unknown size is created with a deferred length, told on the last PATCH.
#[test]
fn tus_stdin_defers_the_length() {
    let server = server();
    let s = Scratch::new();
    let bytes = data(300 * KIB + 17, 5);
    let mut child = s
        .command(&[
            "tus",
            "--chunk-size",
            "64KiB",
            "--json",
            "-",
            &server.tus_url(),
        ])
        .stdin(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(&bytes).unwrap();
    let out = child.wait_with_output().unwrap();
    let j = json(&out);
    let url = j["upload_url"].as_str().unwrap();
    let info = server.tus_upload(url).unwrap();
    assert_eq!(info.length, Some(bytes.len() as u64));
    assert_eq!(server.tus_upload_bytes(url).unwrap(), bytes);
}

// U10, U14: an upload that expires mid-way ends with a typed error, and its state is dropped
// so the next run starts a new upload.
#[test]
fn tus_expired_upload_is_not_resumed() {
    let server = server();
    let s = Scratch::new();
    let bytes = data(400 * KIB, 6);
    let file = s.file("e.bin", &bytes);
    let out = s.run(&[
        "tus",
        "--chunk-size",
        "128KiB",
        "--json",
        "-H",
        &faults("tus.patch#2=expire"),
        file.to_str().unwrap(),
        &server.tus_url(),
    ]);
    assert_eq!(out.status.code(), Some(1));
    let j = json_of(&out);
    assert_eq!(j["error"]["kind"], "session_gone", "{j}");
    assert!(text(&out.stderr).contains("the next run starts a new upload"));
    assert_eq!(s.state_files().len(), 0);
}

// U12: --cancel removes the saved upload from the server and the state.
#[test]
fn tus_cancel_terminates_the_saved_upload() {
    let server = server();
    let s = Scratch::new();
    let bytes = data(600 * KIB, 7);
    let file = s.file("d.bin", &bytes);
    let url = server.tus_url();
    let script = faults("tus.patch#2=stall:20s");
    let mut child = s
        .command(&[
            "tus",
            "--chunk-size",
            "256KiB",
            "-H",
            &script,
            file.to_str().unwrap(),
            &url,
        ])
        .spawn()
        .unwrap();
    wait_until("the first chunk stored", || {
        server.tus_uploads().iter().any(|u| u.offset > 0)
    });
    std::thread::sleep(Duration::from_millis(100));
    child.kill().unwrap();
    let _ = child.wait();
    assert_eq!(s.state_files().len(), 1);

    let out = s.run(&["tus", "--cancel", "--json", file.to_str().unwrap(), &url]);
    let j = json(&out);
    assert_eq!(j["cancelled"], true);
    assert!(server.tus_uploads().is_empty(), "the upload was deleted");
    assert_eq!(s.state_files().len(), 0);
    // Nothing left to cancel.
    let out = s.run(&["tus", "--cancel", file.to_str().unwrap(), &url]);
    assert_eq!(out.status.code(), Some(2));
}
