//! The `resumable` binary end to end against the conformance server on 127.0.0.1: uploads,
//! exit codes, `--json`, secrets in output, and resuming after `kill -9` and Ctrl-C.

mod common;

use std::io::Write as _;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::*;
use resumable_server::{Server, ServerConfig};

// G1, G4, G7: a plain upload; the --json outcome has every documented field; the state file
// is removed on success.
#[test]
fn uploads_a_file_and_prints_the_json_outcome() {
    let server = Server::start(ServerConfig::default()).unwrap();
    let s = Scratch::new();
    let bytes = data(3 * MIB + 5, 1);
    let file = s.file("ids.txt", &bytes);
    let url = server.gcs_xml_url("b", "ids.txt");
    let out = s.run(&[
        "gcs",
        "--chunk-size",
        "1MiB",
        "--json",
        file.to_str().unwrap(),
        &url,
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(json["protocol"], "gcs");
    assert_eq!(json["bytes"], bytes.len() as u64);
    assert_eq!(json["status"], 200);
    assert_eq!(json["session"], "<redacted>");
    assert_eq!(json["requests"], 5, "one start and four chunks");
    assert_eq!(json["retries"], 0);
    assert_eq!(json["resumed_from"], 0);
    let crc = resumable_core::checksum::crc32c_base64(crc32c::crc32c(&bytes));
    assert_eq!(json["crc32c"], crc);
    assert!(json.get("location").is_some());
    assert_eq!(server.object("b", "ids.txt").unwrap(), bytes);
    assert!(s.state_files().is_empty(), "state removed on success");
    // The object type comes from the file name.
    assert_eq!(server.request_log()[0].method, "POST");
}

// G2: a JSON API URL is started with POST + X-Upload-*, and -H reaches the start only.
#[test]
fn json_api_url_with_a_header_and_no_secret_in_output() {
    let server = Server::start(ServerConfig::default()).unwrap();
    let s = Scratch::new();
    let bytes = data(700_000, 2);
    let file = s.file("a.bin", &bytes);
    let url = server.gcs_json_url("b", "a.bin");
    let out = s.run(&[
        "gcs",
        "--chunk-size",
        "256KiB",
        "-H",
        "Authorization: Bearer SECRET-TOKEN-123",
        file.to_str().unwrap(),
        &url,
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(server.object("b", "a.bin").unwrap(), bytes);
    let log = server.request_log();
    assert!(log[0].authorization, "the start carries Authorization");
    assert!(
        log[1..].iter().all(|e| !e.authorization),
        "the session URI is the capability"
    );
    let all = format!("{}{}", text(&out.stdout), text(&out.stderr));
    assert!(!all.contains("SECRET-TOKEN-123"));
    assert!(!all.contains("upload_id="));
    assert!(all.contains("uploaded"), "{all}");
}

// G5, G8: faults on the way (a drop mid-chunk, 503s with Retry-After, partial persistence)
// still end with the exact bytes, and the retries are counted.
#[test]
fn survives_faults_and_reports_retries() {
    let server = Server::start(ServerConfig::default()).unwrap();
    let s = Scratch::new();
    let bytes = data(2 * MIB + 17, 3);
    let file = s.file("f.bin", &bytes);
    let url = with_faults(
        &server.gcs_xml_url("b", "f.bin"),
        "gcs.chunk#1=drop-after:300000; gcs.chunk#3=status:503,retry-after:1; gcs.chunk#4=persist:256KiB",
    );
    let out = s.run(&[
        "gcs",
        "--chunk-size",
        "512KiB",
        "--json",
        file.to_str().unwrap(),
        &url,
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(json["retries"], 2, "the drop and the 503");
    assert_eq!(server.object("b", "f.bin").unwrap(), bytes);
    assert_eq!(starts(&server), 1);
}

// Exit code 2 with a one-line message for bad usage or input.
#[test]
fn bad_usage_exits_2_with_one_line() {
    let s = Scratch::new();
    let file = s.file("x", b"abc");
    let f = file.to_str().unwrap();
    let cases: [(&[&str], &str); 5] = [
        (&["gcs", f, "ftp://host/x"], "absolute http"),
        (&["gcs", f, "not a url"], "URL"),
        (
            &["gcs", "--chunk-size", "300KiB", f, "http://127.0.0.1:9/x"],
            "multiple of 256 KiB",
        ),
        (
            &["gcs", "--chunk-size", "lots", f, "http://127.0.0.1:9/x"],
            "not a size",
        ),
        (
            &["gcs", "/no/such/file", "http://127.0.0.1:9/x"],
            "cannot read",
        ),
    ];
    for (args, want) in cases {
        let out = s.run(args);
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        let err = text(&out.stderr);
        assert!(err.contains(want), "{args:?}: {err}");
        assert_eq!(err.trim_end().lines().count(), 1, "{args:?}: {err}");
    }
    let out = s.run(&["gcs", "-H", "no colon", f, "http://127.0.0.1:9/x"]);
    assert_eq!(out.status.code(), Some(2));
}

// Exit code 1 with the typed cause; a session that is gone (G9) is not offered for resume.
#[test]
fn failed_upload_exits_1_with_the_cause() {
    let server = Server::start(ServerConfig::default()).unwrap();
    let s = Scratch::new();
    let file = s.file("g.bin", &data(600_000, 4));
    let url = with_faults(&server.gcs_xml_url("b", "g.bin"), "gcs.chunk#2=expire");
    let out = s.run(&[
        "gcs",
        "--chunk-size",
        "256KiB",
        file.to_str().unwrap(),
        &url,
    ]);
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert!(err.contains("session is gone"), "{err}");
    assert!(err.contains("starts a new upload"), "{err}");
    assert!(!err.contains("upload_id="), "{err}");
    assert!(
        s.state_files().is_empty(),
        "a gone session's state is dropped"
    );
}

// Exit 1 with a resume hint when retries run out but the session lives (G8); the state is
// kept for the next run.
#[test]
fn exhausted_retries_exit_1_and_offer_to_resume() {
    let server = Server::start(ServerConfig::default()).unwrap();
    let s = Scratch::new();
    let file = s.file("h.bin", &data(600_000, 5));
    let url = with_faults(
        &server.gcs_xml_url("b", "h.bin"),
        "gcs.chunk#2=status:500x50",
    );
    let out = s.run(&[
        "gcs",
        "--chunk-size",
        "256KiB",
        "--max-retries",
        "1",
        file.to_str().unwrap(),
        &url,
    ]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    let err = text(&out.stderr);
    assert!(err.contains("gave up after 2 failed attempts"), "{err}");
    assert!(err.contains("run the same command again"), "{err}");
    assert_eq!(s.state_files().len(), 1, "the state is kept to resume");
}

// The heart of it: kill -9 mid-upload, run the same command again; it resumes through a
// status query (G3, G6), starts no new session, does not re-send acknowledged bytes, and the
// object is byte-identical.
#[test]
fn resumes_after_kill_9_without_resending_acknowledged_bytes() {
    let server = Server::start(ServerConfig::default()).unwrap();
    let s = Scratch::new();
    let chunk = 256 * 1024;
    let bytes = data(8 * chunk as usize + 999, 6);
    let file = s.file("k.bin", &bytes);
    // The fourth chunk stalls, so the kill lands while a chunk is in flight.
    let url = with_faults(&server.gcs_xml_url("b", "k.bin"), "gcs.chunk#4=stall:20s");
    let args = [
        "gcs",
        "--chunk-size",
        "256KiB",
        "--json",
        file.to_str().unwrap(),
        url.as_str(),
    ];
    let mut child: Child = s.command(&args).spawn().unwrap();
    wait_until("three chunks stored", || {
        stored(&server, "k.bin") >= 3 * chunk
    });
    std::thread::sleep(Duration::from_millis(100));
    child.kill().unwrap(); // SIGKILL: no chance to clean up
    let _ = child.wait();
    let held = stored(&server, "k.bin");
    assert_eq!(
        s.state_files().len(),
        1,
        "the state was saved before the kill"
    );

    let out = s.run(&args);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        json["resumed_from"], held,
        "resumed from what the server held"
    );
    assert_eq!(server.object("b", "k.bin").unwrap(), bytes);
    assert_eq!(starts(&server), 1, "no second session");
    // Every byte the server held when the first run died was never sent again: all bodies
    // received = the object + at most the chunk that was in flight.
    let total = received(&server, "k.bin");
    assert!(
        total <= bytes.len() as u64 + chunk,
        "received {total} body bytes for a {} byte object",
        bytes.len()
    );
    let second_run: Vec<_> = server
        .request_log()
        .into_iter()
        .filter(|e| e.method == "PUT")
        .collect();
    let first_after_kill = second_run
        .iter()
        .position(|e| {
            e.content_range
                .as_deref()
                .is_some_and(|r| r.starts_with("bytes */"))
        })
        .expect("a status query after the kill");
    assert!(
        first_after_kill >= 3,
        "the status query comes after the first run's chunks"
    );
    assert!(s.state_files().is_empty());
}

// Ctrl-C: exit 130 with the state saved, and the next run resumes.
#[test]
fn ctrl_c_exits_130_and_the_next_run_resumes() {
    let server = Server::start(ServerConfig::default()).unwrap();
    let s = Scratch::new();
    let chunk = 256 * 1024;
    let bytes = data(6 * chunk as usize, 7);
    let file = s.file("c.bin", &bytes);
    let url = with_faults(&server.gcs_xml_url("b", "c.bin"), "gcs.chunk#3=stall:3s");
    let args = [
        "gcs",
        "--chunk-size",
        "256KiB",
        "--json",
        file.to_str().unwrap(),
        url.as_str(),
    ];
    let child = s.command(&args).spawn().unwrap();
    wait_until("two chunks stored", || {
        stored(&server, "c.bin") >= 2 * chunk
    });
    let status = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(130), "{}", text(&out.stderr));
    assert!(text(&out.stderr).contains("run the same command again"));
    assert_eq!(s.state_files().len(), 1);

    let out = s.run(&args);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(json["resumed_from"].as_u64().unwrap() >= 2 * chunk);
    assert_eq!(server.object("b", "c.bin").unwrap(), bytes);
    assert_eq!(starts(&server), 1);
}

// G4: stdin of unknown size: `bytes A-B/*` until the end, then the total.
#[test]
fn uploads_stdin_of_unknown_size() {
    let server = Server::start(ServerConfig::default()).unwrap();
    let s = Scratch::new();
    let bytes = data(MIB + 300_000, 8);
    let url = server.gcs_xml_url("b", "stdin.bin");
    let mut child = s
        .command(&["gcs", "--chunk-size", "256KiB", "--json", "-", &url])
        .stdin(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(&bytes).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(server.object("b", "stdin.bin").unwrap(), bytes);
    let ranges: Vec<String> = server
        .request_log()
        .into_iter()
        .filter_map(|e| e.content_range)
        .collect();
    assert!(ranges[0].ends_with("/*"), "{ranges:?}");
    assert!(
        ranges
            .last()
            .unwrap()
            .ends_with(&format!("/{}", bytes.len()))
    );
    assert!(s.state_files().is_empty(), "stdin has no default state");
}

// G3: --session resumes an existing session URI given on the command line.
#[test]
fn session_flag_resumes_a_given_session_uri() {
    let server = Server::start(ServerConfig::default()).unwrap();
    let s = Scratch::new();
    let bytes = data(900_000, 9);
    let file = s.file("s.bin", &bytes);
    // Start a session by hand and store the first 256 KiB.
    let start = ureq::post(&server.gcs_xml_url("b", "s.bin"))
        .header("x-goog-resumable", "start")
        .header("content-type", "application/octet-stream")
        .send_empty()
        .unwrap();
    let session = start
        .headers()
        .get("location")
        .unwrap()
        .to_str()
        .unwrap()
        .to_owned();
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .max_redirects(0)
        .build()
        .into();
    let first = &bytes[..256 * 1024];
    let r = agent
        .put(&session)
        .header("content-range", &format!("bytes 0-262143/{}", bytes.len()))
        .send(first)
        .unwrap();
    assert_eq!(r.status(), 308);
    let out = s.run(&[
        "gcs",
        "--session",
        "--chunk-size",
        "256KiB",
        "--json",
        file.to_str().unwrap(),
        &session,
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(json["resumed_from"], 256 * 1024);
    assert_eq!(server.object("b", "s.bin").unwrap(), bytes);
    assert!(!text(&out.stderr).contains("upload_id"));
}
