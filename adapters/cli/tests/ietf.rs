//! `resumable ietf` end to end against the conformance server's side of the resumable-upload
//! draft, at interop 5, 6, 8 and 9: faults (drops mid-body keeping a prefix, 5xx, lost
//! answers, lies), resume after `kill -9`, an existing upload URL, `--cancel`, and the exit
//! codes.

mod common;

use std::process::Output;
use std::time::Duration;

use common::*;
use resumable_server::{FaultScript, Server, ServerConfig};

const KIB: usize = 1024;
const VERSIONS: [u32; 4] = [5, 6, 8, 9];

fn json(out: &Output) -> serde_json::Value {
    assert!(
        out.status.success(),
        "exit {:?}: {}",
        out.status.code(),
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

fn scripted(spec: &str) -> Server {
    Server::start(ServerConfig {
        faults: FaultScript::parse(spec).unwrap(),
        ..ServerConfig::default()
    })
    .unwrap()
}

// R6, R7, R9: through a drop mid-body (the server keeps what arrived), a 503 and a lost
// answer, each version's upload ends byte-identical, no acknowledged byte sent twice.
#[test]
fn ietf_upload_with_faults_at_each_interop_version() {
    for v in VERSIONS {
        let server = scripted(
            "ietf.append#2=drop-after:100000; ietf.append#3=status:503,retry-after:0; \
             ietf.append#5=drop-after:99999999",
        );
        let s = Scratch::new();
        let bytes = data(900 * KIB + 3, v as u8);
        let file = s.file("a.bin", &bytes);
        let version = v.to_string();
        let j = json(&s.run(&[
            "ietf",
            "--interop-version",
            &version,
            "--append-size",
            "256KiB",
            "--json",
            file.to_str().unwrap(),
            &server.ietf_url(),
        ]));
        assert_eq!(j["protocol"], "ietf");
        assert_eq!(j["interop_version"], v);
        assert_eq!(j["bytes"], bytes.len() as u64);
        let url = j["upload_url"].as_str().unwrap();
        assert_eq!(server.ietf_upload_bytes(url).unwrap(), bytes, "{v}");
        let info = server.ietf_upload(url).unwrap();
        assert!(info.complete);
        assert_eq!(info.interop, v);
        // The drop kept 100000 bytes of the second append and the lost answer's bytes were
        // found stored by HEAD: no stored byte reached the upload twice (the append the 503
        // stood in for was discarded before the upload saw it).
        assert_eq!(
            info.body_bytes_received,
            bytes.len() as u64,
            "{v}: {info:?}"
        );
        assert_eq!(s.state_files().len(), 0, "state removed on success");
    }
}

// R8: a server claiming more than was sent ends the upload (exit 1), and the upload is
// deleted.
#[test]
fn ietf_a_lying_server_fails_the_upload() {
    for v in [6, 9] {
        let server = scripted("ietf.append#1=lie:7");
        let s = Scratch::new();
        let file = s.file("l.bin", &data(300 * KIB, 9));
        let version = v.to_string();
        let out = s.run(&[
            "ietf",
            "--interop-version",
            &version,
            "--append-size",
            "128KiB",
            "--json",
            file.to_str().unwrap(),
            &server.ietf_url(),
        ]);
        assert_eq!(out.status.code(), Some(1), "{v}");
        let j: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(j["ok"], false);
        assert!(
            text(&out.stderr).contains("at most"),
            "{}",
            text(&out.stderr)
        );
        assert!(server.ietf_uploads().is_empty(), "{v}: deleted");
    }
}

// R7: kill -9 during a stalled append, run again: the same upload continues from what the
// server says it holds (HEAD), one creation in all, byte-identical.
#[test]
fn ietf_resumes_after_kill_9() {
    for v in [6, 9] {
        let server = scripted("ietf.append#2=stall:20s");
        let s = Scratch::new();
        let bytes = data(1024 * KIB + 5, 3);
        let file = s.file("k.bin", &bytes);
        let url = server.ietf_url();
        let version = v.to_string();
        let args = [
            "ietf",
            "--interop-version",
            version.as_str(),
            "--append-size",
            "256KiB",
            "--json",
            file.to_str().unwrap(),
            url.as_str(),
        ];
        let mut child = s.command(&args).spawn().unwrap();
        wait_until("the first append stored", || {
            server
                .ietf_uploads()
                .iter()
                .any(|u| u.offset >= 256 * KIB as u64)
        });
        std::thread::sleep(Duration::from_millis(100));
        child.kill().unwrap();
        let _ = child.wait();
        assert_eq!(s.state_files().len(), 1);
        let j = json(&s.run(&args));
        assert!(
            j["resumed_from"].as_u64().unwrap() >= 256 * KIB as u64,
            "{j}"
        );
        let upload_url = j["upload_url"].as_str().unwrap();
        assert_eq!(server.ietf_upload_bytes(upload_url).unwrap(), bytes);
        assert_eq!(server.ietf_uploads().len(), 1, "no second upload");
    }
}

// R7: --upload-url resumes an upload another client began.
#[test]
fn ietf_upload_url_resumes_an_existing_upload() {
    let server = scripted("ietf.append#2=status:400");
    let s = Scratch::new();
    let bytes = data(600 * KIB, 5);
    let file = s.file("e.bin", &bytes);
    let out = s.run(&[
        "ietf",
        "--append-size",
        "256KiB",
        "--state",
        "off",
        file.to_str().unwrap(),
        &server.ietf_url(),
    ]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    let info = server.ietf_uploads().pop().unwrap();
    assert_eq!(info.offset, 256 * KIB as u64);
    let url = format!("{}/{}", server.ietf_url(), info.id);
    let j = json(&s.run(&[
        "ietf",
        "--upload-url",
        "--append-size",
        "256KiB",
        "--json",
        file.to_str().unwrap(),
        &url,
    ]));
    assert_eq!(j["resumed_from"], 256 * KIB as u64);
    assert_eq!(server.ietf_upload_bytes(&url).unwrap(), bytes);
}

// R13: --cancel deletes the saved upload; with nothing saved it is bad usage (exit 2).
#[test]
fn ietf_cancel_deletes_the_saved_upload() {
    let server = scripted("ietf.append#2=stall:20s");
    let s = Scratch::new();
    let file = s.file("d.bin", &data(600 * KIB, 7));
    let url = server.ietf_url();
    let mut child = s
        .command(&[
            "ietf",
            "--append-size",
            "256KiB",
            file.to_str().unwrap(),
            &url,
        ])
        .spawn()
        .unwrap();
    wait_until("the first append stored", || {
        server.ietf_uploads().iter().any(|u| u.offset > 0)
    });
    std::thread::sleep(Duration::from_millis(100));
    child.kill().unwrap();
    let _ = child.wait();
    assert_eq!(s.state_files().len(), 1);
    let j = json(&s.run(&["ietf", "--cancel", "--json", file.to_str().unwrap(), &url]));
    assert_eq!(j["cancelled"], true);
    assert!(server.ietf_uploads().is_empty(), "deleted");
    assert_eq!(s.state_files().len(), 0);
    let out = s.run(&["ietf", "--cancel", file.to_str().unwrap(), &url]);
    assert_eq!(out.status.code(), Some(2));
}

// R1: only interop versions 5 to 9 are accepted; stdin is refused (the size must be known).
#[test]
fn ietf_bad_usage_exits_2() {
    let server = scripted("");
    let s = Scratch::new();
    let file = s.file("u.bin", b"abc");
    for bad in ["4", "10"] {
        let out = s.run(&[
            "ietf",
            "--interop-version",
            bad,
            file.to_str().unwrap(),
            &server.ietf_url(),
        ]);
        assert_eq!(out.status.code(), Some(2), "{bad}");
    }
    let out = s.run(&["ietf", "-", &server.ietf_url()]);
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("known size"));
}
