//! The binary never claims what is not proven, never quietly resumes the wrong thing, and fails
//! in words a script can act on: end to end against the conformance server on 127.0.0.1
//! (and `.invalid` names, which never resolve: no traffic leaves the machine).

mod common;

use std::io::Write as _;
use std::path::Path;
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use common::*;
use resumable_server::{Server, ServerConfig};

const CHUNK: u64 = 256 * 1024;

/// Starts a session on `url` by hand (XML start) and returns its URI.
fn start_session(url: &str) -> String {
    let start = ureq::post(url)
        .header("x-goog-resumable", "start")
        .header("content-type", "application/octet-stream")
        .send_empty()
        .unwrap();
    start
        .headers()
        .get("location")
        .unwrap()
        .to_str()
        .unwrap()
        .to_owned()
}

/// Uploads `bytes` into the session in one final request.
fn complete_session(session: &str, bytes: &[u8]) {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .max_redirects(0)
        .build()
        .into();
    let range = format!("bytes 0-{}/{}", bytes.len() - 1, bytes.len());
    let r = agent
        .put(session)
        .header("content-range", &range)
        .send(bytes)
        .unwrap();
    assert_eq!(r.status(), 200);
}

/// Runs `args`, interrupting it with SIGINT once `ready` holds; returns its output.
fn interrupted(s: &Scratch, args: &[&str], stdin: Option<&[u8]>, ready: impl FnMut() -> bool) {
    let mut command = s.command(args);
    if stdin.is_some() {
        command.stdin(Stdio::piped());
    }
    let mut child: Child = command.spawn().unwrap();
    if let Some(bytes) = stdin {
        let mut pipe = child.stdin.take().unwrap();
        let bytes = bytes.to_vec();
        // A writer thread: the upload stalls, so the pipe would fill and block the test.
        std::thread::spawn(move || {
            let _ = pipe.write_all(&bytes);
        });
    }
    wait_until("the upload to get under way", ready);
    signal(child.id(), "INT");
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(130), "{}", text(&out.stderr));
}

fn run_with_stdin(s: &Scratch, args: &[&str], bytes: &[u8]) -> std::process::Output {
    let mut child = s.command(args).stdin(Stdio::piped()).spawn().unwrap();
    let mut pipe = child.stdin.take().unwrap();
    let bytes = bytes.to_vec();
    let writer = std::thread::spawn(move || {
        let _ = pipe.write_all(&bytes);
    });
    let out = child.wait_with_output().unwrap();
    let _ = writer.join();
    out
}

// Case 1, G3, G7: a bare session that already completed with another, shorter object: the
// status query's 200 says so in x-goog-stored-content-length; the upload fails (exit 1) after
// sending nothing, and says the object may differ. With no size and no checksum at all, it is
// unproven, never a success.
#[test]
fn a_bare_session_completed_with_another_object_is_not_a_success() {
    let server = Server::start(ServerConfig::default()).unwrap();
    let s = Scratch::new();
    let other = data(1000, 1);
    let file = s.file("mine.bin", &data(2000, 2));
    let f = file.to_str().unwrap();

    let session = start_session(&server.gcs_xml_url("b", "x.bin"));
    complete_session(&session, &other);
    let before = server.body_bytes_received();
    let out = s.run(&["gcs", "--session", "--json", f, &session]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    let err = text(&out.stderr);
    assert!(err.contains("server stored 1000 bytes, but 2000"), "{err}");
    assert!(err.contains("may differ from the input"), "{err}");
    let json = json_of(&out);
    assert_eq!(json["ok"], false);
    assert_eq!(json["error"]["kind"], "integrity");
    assert_eq!(server.body_bytes_received(), before, "nothing was sent");

    // The same, from a server whose answer proves nothing.
    let url = with_faults(&server.gcs_xml_url("b", "y.bin"), "gcs.query=no-proof");
    let session = start_session(&url);
    complete_session(&session, &other);
    let out = s.run(&["gcs", "--session", "--json", f, &session]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    assert_eq!(json_of(&out)["error"]["kind"], "unproven");
    assert!(text(&out.stderr).contains("gives no checksum"));

    // A bare session that holds exactly the file proves it with its checksum: success.
    let mine = std::fs::read(&file).unwrap();
    let session = start_session(&server.gcs_xml_url("b", "z.bin"));
    complete_session(&session, &mine);
    let out = s.run(&["gcs", "--session", "--json", f, &session]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(json_of(&out)["verified"]["crc32c"], true);
}

// Case 2, G3: an interrupted stdin upload resumed with different bytes on stdin is refused
// (exit 2) before anything is sent, the session is kept, and the original input then
// completes it, byte-identical.
#[test]
fn resuming_with_different_stdin_is_refused_and_keeps_the_session() {
    let server = Server::start(ServerConfig::default()).unwrap();
    let s = Scratch::new();
    let original = data(4 * MIB, 3);
    let mut changed = original.clone();
    changed[MIB / 2] ^= 0xff;
    let state = s.path("stdin.state");
    let url = with_faults(&server.gcs_xml_url("b", "s.bin"), "gcs.chunk#3=stall:20s");
    let args = [
        "gcs",
        "--chunk-size",
        "1MiB",
        "--state",
        state.to_str().unwrap(),
        "-",
        url.as_str(),
    ];
    // Interrupt only once the third chunk is wholly received and stalled: bytes of it still
    // in the socket when the client dies would otherwise be counted after the measurement.
    interrupted(&s, &args, Some(&original), || {
        stored(&server, "s.bin") >= 2 * MIB as u64 && received(&server, "s.bin") >= 3 * MIB as u64
    });
    let saved = std::fs::read(&state).unwrap();
    let received_before = received(&server, "s.bin");

    let out = run_with_stdin(&s, &args, &changed);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    let err = text(&out.stderr);
    assert!(
        err.contains("the input differs from the interrupted upload's"),
        "{err}"
    );
    assert!(err.contains("original input"), "{err}");
    assert_eq!(
        std::fs::read(&state).unwrap(),
        saved,
        "the state is kept as it was"
    );
    assert_eq!(
        received(&server, "s.bin"),
        received_before,
        "nothing was sent"
    );

    let out = run_with_stdin(&s, &args, &original);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(server.object("b", "s.bin").unwrap(), original);
}

// Case 2, G3: a file edited in place with its size and modification time kept: the resume
// reads the uploaded part again, finds it changed, and refuses; --no-resume-check skips
// the re-read (the user takes the risk).
#[test]
fn a_file_edited_in_place_is_caught_on_resume() {
    let server = Server::start(ServerConfig::default()).unwrap();
    let s = Scratch::new();
    let original = data(3 * MIB, 4);
    let file = s.file("e.bin", &original);
    let mtime = std::fs::metadata(&file).unwrap().modified().unwrap();
    let url = with_faults(&server.gcs_xml_url("b", "e.bin"), "gcs.chunk#3=stall:20s");
    let args = [
        "gcs",
        "--chunk-size",
        "256KiB",
        file.to_str().unwrap(),
        url.as_str(),
    ];
    interrupted(&s, &args, None, || stored(&server, "e.bin") >= 2 * CHUNK);
    let mut edited = original.clone();
    edited[100] ^= 1;
    std::fs::write(&file, &edited).unwrap();
    std::fs::File::options()
        .write(true)
        .open(&file)
        .unwrap()
        .set_modified(mtime)
        .unwrap();
    let out = s.run(&args);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    assert!(text(&out.stderr).contains("input differs"));
    assert_eq!(s.state_files().len(), 1, "the session is kept");

    // Put the original back: the resume goes on and completes.
    std::fs::write(&file, &original).unwrap();
    std::fs::File::options()
        .write(true)
        .open(&file)
        .unwrap()
        .set_modified(mtime)
        .unwrap();
    let out = s.run(&args);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(server.object("b", "e.bin").unwrap(), original);
}

// Case 3: a state is tied to what it is for: the same --state with another destination, or
// another protocol, is refused (exit 2) and the other upload is left alone.
#[test]
fn a_state_reused_for_another_upload_is_refused() {
    let server = Server::start(ServerConfig::default()).unwrap();
    let s = Scratch::new();
    let bytes = data(2 * MIB, 5);
    let file = s.file("a.bin", &bytes);
    let state = s.path("shared.state");
    let url_a = with_faults(&server.gcs_xml_url("b", "A.bin"), "gcs.chunk#3=stall:20s");
    let args_a = [
        "gcs",
        "--chunk-size",
        "256KiB",
        "--state",
        state.to_str().unwrap(),
        file.to_str().unwrap(),
        url_a.as_str(),
    ];
    interrupted(&s, &args_a, None, || stored(&server, "A.bin") >= 2 * CHUNK);

    let url_b = server.gcs_xml_url("b", "B.bin");
    let out = s.run(&[
        "gcs",
        "--json",
        "--state",
        state.to_str().unwrap(),
        file.to_str().unwrap(),
        &url_b,
    ]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    let err = text(&out.stderr);
    assert!(err.contains("belongs to an upload to"), "{err}");
    assert!(
        err.contains("/b/A.bin"),
        "names the other destination: {err}"
    );
    assert!(!err.contains("Signature"), "{err}");
    assert_eq!(json_of(&out)["error"]["kind"], "usage");
    assert!(server.object("b", "B.bin").is_none());
    assert!(
        server.object("b", "A.bin").is_none(),
        "A is not completed by B's run"
    );

    let out = s.run(&[
        "ton",
        "--content-type",
        "application/octet-stream",
        "--state",
        state.to_str().unwrap(),
        file.to_str().unwrap(),
        &server.ton_bucket_url("t"),
    ]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    assert!(text(&out.stderr).contains("a gcs upload, not this ton one"));

    // Its own upload resumes with it.
    let out = s.run(&args_a);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(server.object("b", "A.bin").unwrap(), bytes);
}

// Case 4, G3, G5: a state saved before a power loss is behind the server. Rolled back to an
// early copy in lock-step with the upload, the resume goes on from what the server holds:
// no acknowledged byte is sent again, and the state is not thrown away.
#[test]
fn a_stale_state_resumes_from_what_the_server_holds() {
    let server = Server::start(ServerConfig::default()).unwrap();
    let s = Scratch::new();
    let bytes = data(8 * CHUNK as usize + 500, 6);
    let file = s.file("p.bin", &bytes);
    let state = s.path("p.state");
    let url = with_faults(&server.gcs_xml_url("b", "p.bin"), "gcs.chunk#6=stall:20s");
    let args = [
        "gcs",
        "--chunk-size",
        "256KiB",
        "--json",
        "--state",
        state.to_str().unwrap(),
        file.to_str().unwrap(),
        url.as_str(),
    ];
    let mut child = s.command(&args).spawn().unwrap();
    // The lock-step: keep the state as it was once one chunk was acknowledged...
    let persisted = |text: &[u8]| -> u64 {
        serde_json::from_slice::<serde_json::Value>(text)
            .ok()
            .and_then(|v| v["gcs"]["persisted"].as_u64())
            .unwrap_or(0)
    };
    let mut early = Vec::new();
    wait_until("a state with one chunk acknowledged", || {
        early = std::fs::read(&state).unwrap_or_default();
        persisted(&early) >= CHUNK
    });
    // ...let the upload go on to five chunks, then cut the power (SIGKILL) and roll back.
    wait_until("five chunks stored", || {
        stored(&server, "p.bin") >= 5 * CHUNK
    });
    child.kill().unwrap();
    let _ = child.wait();
    wait_until("the server to finish the killed client's request", || {
        server.requests_in_progress() == 0
    });
    let held = stored(&server, "p.bin");
    assert!(persisted(&early) < held, "the copy is behind the server");
    std::fs::write(&state, &early).unwrap();
    let received_before = received(&server, "p.bin");

    let out = s.run(&args);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let json = json_of(&out);
    assert_eq!(json["resumed_from"], held, "from what the server holds");
    assert_eq!(json["verified"]["crc32c"], true);
    assert_eq!(server.object("b", "p.bin").unwrap(), bytes);
    assert_eq!(
        received(&server, "p.bin") - received_before,
        bytes.len() as u64 - held,
        "no acknowledged byte was sent again"
    );
    assert_eq!(starts(&server), 1, "the same session");
}

// Case 5, M5: FINALIZE gives the media id a later expiry than INIT did, and processing
// outlasts INIT's: the upload succeeds. A saved id whose expiry has passed is never sent an
// APPEND: the next run says so and starts with a new INIT.
#[test]
fn media_expiry_moves_with_the_answers_and_an_expired_id_starts_over() {
    let server = Server::start(ServerConfig {
        media_expires_after: Duration::from_secs(2),
        media_finalize_expires_after: Some(Duration::from_secs(3600)),
        media_check_after_secs: 1,
        media_processing_polls: 3,
        ..ServerConfig::default()
    })
    .unwrap();
    let s = Scratch::new();
    let bytes = data(600 * 1024, 7);
    let file = s.file("m.mp4", &bytes);
    let endpoint = server.media_v2_base();
    let out = s.run(&[
        "media",
        "--media-type",
        "video/mp4",
        "--category",
        "tweet_video",
        "--api",
        "v2",
        "--endpoint",
        &endpoint,
        "--json",
        file.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let json = json_of(&out);
    assert_eq!(json["processing"], "succeeded");
    assert_eq!(
        server.media(json["media_id"].as_str().unwrap()).unwrap(),
        bytes
    );

    // An interrupted upload whose saved id has expired (by the state's wall-clock expiry).
    let state = s.path("m.state");
    let stalled = Server::start(ServerConfig::default()).unwrap();
    let endpoint = stalled.media_v2_base();
    let args = [
        "media",
        "--media-type",
        "video/mp4",
        "--api",
        "v2",
        "--endpoint",
        endpoint.as_str(),
        "--segment-size",
        "256KiB",
        "--state",
        state.to_str().unwrap(),
        "-H",
        "x-resumable-session-faults: media.append#2=stall:20s",
        file.to_str().unwrap(),
    ];
    interrupted(&s, &args, None, || {
        stalled.all_media().iter().any(|m| m.segments >= 1)
    });
    let mut saved: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&state).unwrap()).unwrap();
    let old_id = saved["media"]["media_id"].as_str().unwrap().to_owned();
    saved["media"]["expires_at_unix"] = 1.into();
    std::fs::write(&state, serde_json::to_vec(&saved).unwrap()).unwrap();
    let appends_before = stalled.media_info(&old_id).unwrap().appends.len();

    // The same upload again, without the stall.
    let again: Vec<&str> = args
        .iter()
        .copied()
        .filter(|a| *a != "-H" && !a.starts_with("x-resumable-session-faults"))
        .collect();
    let out = s.run(&again);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(text(&out.stderr).contains("has expired; starting a new upload"));
    assert_eq!(
        stalled.media_info(&old_id).unwrap().appends.len(),
        appends_before,
        "no APPEND to the expired id"
    );
    assert_eq!(stalled.all_media().len(), 2, "a new INIT");
}

// Case 6, G8: a server that asks to wait past the retry deadline ends the upload at once,
// saying so (resumable, with how to wait longer); a longer --retry-deadline waits it out.
#[test]
fn a_retry_after_past_the_deadline_is_named_and_can_be_waited_out() {
    let server = Server::start(ServerConfig::default()).unwrap();
    let s = Scratch::new();
    let bytes = data(300_000, 8);
    let file = s.file("r.bin", &bytes);
    let faults = "gcs.chunk#1=status:429,retry-after:3";
    let url = with_faults(&server.gcs_xml_url("b", "r1.bin"), faults);
    let started = Instant::now();
    let out = s.run(&[
        "gcs",
        "--json",
        "--retry-deadline",
        "2s",
        file.to_str().unwrap(),
        &url,
    ]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    assert!(started.elapsed() < Duration::from_secs(3), "no waiting");
    let err = text(&out.stderr);
    assert!(err.contains("asked to wait 3.0 s"), "{err}");
    assert!(err.contains("retry deadline of 2.0 s"), "{err}");
    assert!(err.contains("--retry-deadline"), "{err}");
    let json = json_of(&out);
    assert_eq!(json["error"]["kind"], "wait_beyond_deadline");
    assert_eq!(json["resumable"], true);

    let url = with_faults(&server.gcs_xml_url("b", "r2.bin"), faults);
    let out = s.run(&[
        "gcs",
        "--retry-deadline",
        "1m",
        file.to_str().unwrap(),
        &url,
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let err = text(&out.stderr);
    assert!(
        err.contains("HTTP 429 Too Many Requests from 127.0.0.1 on bytes 0 B–")
            && err.contains("retrying in 3.0 s, attempt 2 of 11"),
        "every retry is shown: {err}"
    );
    assert_eq!(server.object("b", "r2.bin").unwrap(), bytes);
}

// --json on failure: one object of a stable shape, on stdout, with the text on stderr.
#[test]
fn json_failure_object_has_a_stable_shape() {
    let server = Server::start(ServerConfig::default()).unwrap();
    let s = Scratch::new();
    let file = s.file("j.bin", &data(600_000, 9));
    let url = with_faults(
        &server.gcs_xml_url("b", "j.bin"),
        "gcs.chunk#2=status:500x50",
    );
    let out = s.run(&[
        "gcs",
        "--json",
        "--chunk-size",
        "256KiB",
        "--max-retries",
        "0",
        file.to_str().unwrap(),
        &url,
    ]);
    assert_eq!(out.status.code(), Some(1));
    let json = json_of(&out);
    let keys: Vec<&str> = json
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    assert_eq!(
        keys,
        [
            "bytes_persisted",
            "error",
            "exit_code",
            "ok",
            "protocol",
            "resumable",
            "state_file"
        ]
    );
    assert_eq!(json["ok"], false);
    assert_eq!(json["protocol"], "gcs");
    assert_eq!(json["exit_code"], 1);
    assert_eq!(json["error"]["kind"], "retries_exhausted");
    assert!(
        json["error"]["message"]
            .as_str()
            .unwrap()
            .contains("HTTP 500")
    );
    assert!(json["error"]["hints"].as_array().unwrap().len() == 1);
    assert_eq!(json["resumable"], true);
    assert_eq!(json["bytes_persisted"], CHUNK);
    assert!(json["state_file"].as_str().unwrap().ends_with(".json"));
    // --max-retries 0: nothing promised a retry.
    assert!(
        !text(&out.stderr).contains("retrying"),
        "{}",
        text(&out.stderr)
    );

    // Bad input is reported the same way.
    let out = s.run(&[
        "gcs",
        "--json",
        file.to_str().unwrap(),
        "gs://bucket/object",
    ]);
    assert_eq!(out.status.code(), Some(2));
    let json = json_of(&out);
    assert_eq!(json["error"]["kind"], "usage");
    assert!(
        json["error"]["hints"][0]
            .as_str()
            .unwrap()
            .contains("gcloud storage sign-url")
    );
}

// SIGTERM and SIGHUP are Ctrl-C: the state is saved, a line says so, exit 143 / 129; the
// next run resumes.
#[test]
fn sigterm_and_sighup_save_the_state_and_exit_like_ctrl_c() {
    let server = Server::start(ServerConfig::default()).unwrap();
    let s = Scratch::new();
    for (sig, code, object, label) in [
        ("TERM", 143, "t.bin", "terminated:"),
        ("HUP", 129, "h.bin", "hung up:"),
    ] {
        let bytes = data(6 * CHUNK as usize, 10);
        let file = s.file(object, &bytes);
        let url = with_faults(&server.gcs_xml_url("b", object), "gcs.chunk#3=stall:20s");
        let args = [
            "gcs",
            "--chunk-size",
            "256KiB",
            "--json",
            file.to_str().unwrap(),
            url.as_str(),
        ];
        let child = s.command(&args).spawn().unwrap();
        wait_until("two chunks stored", || stored(&server, object) >= 2 * CHUNK);
        signal(child.id(), sig);
        let out = child.wait_with_output().unwrap();
        assert_eq!(out.status.code(), Some(code), "{}", text(&out.stderr));
        let err = text(&out.stderr);
        assert!(err.contains(label), "{err}");
        assert!(err.contains("run the same command again"), "{err}");
        let json = json_of(&out);
        assert_eq!(json["error"]["kind"], "interrupted");
        assert_eq!(json["exit_code"], code);
        assert_eq!(json["resumable"], true);
        let out = s.run(&args);
        assert!(out.status.success(), "{}", text(&out.stderr));
        assert_eq!(server.object("b", object).unwrap(), bytes);
    }
}

// A stdout that fails after a successful upload (here a full disk) is a one-line error, not a
// panic, and says the upload itself succeeded.
#[test]
fn a_failing_stdout_is_one_line_and_says_the_upload_succeeded() {
    if !Path::new("/dev/full").exists() {
        eprintln!("skipped: no /dev/full on this machine");
        return;
    }
    let server = Server::start(ServerConfig::default()).unwrap();
    let s = Scratch::new();
    let bytes = data(300_000, 11);
    let file = s.file("o.bin", &bytes);
    for json in [false, true] {
        let object = if json { "o2.bin" } else { "o1.bin" };
        let url = server.gcs_xml_url("b", object);
        let mut args = vec!["gcs", file.to_str().unwrap(), url.as_str()];
        if json {
            args.insert(1, "--json");
        }
        let out = s
            .command(&args)
            .stdout(std::fs::File::create("/dev/full").unwrap())
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(1));
        let err = text(&out.stderr);
        assert!(!err.contains("panicked"), "{err}");
        assert_eq!(err.trim_end().lines().count(), 1, "{err}");
        assert!(err.contains("the upload itself succeeded"), "{err}");
        assert_eq!(server.object("b", object).unwrap(), bytes);
    }
}

// Two runs with one state: the second exits 2 at once, naming the first's pid.
#[test]
fn a_second_run_on_the_same_state_is_refused_at_once() {
    let server = Server::start(ServerConfig::default()).unwrap();
    let s = Scratch::new();
    let file = s.file("l.bin", &data(4 * CHUNK as usize, 12));
    let url = with_faults(&server.gcs_xml_url("b", "l.bin"), "gcs.chunk#2=stall:20s");
    let args = [
        "gcs",
        "--chunk-size",
        "256KiB",
        file.to_str().unwrap(),
        url.as_str(),
    ];
    let mut first = s.command(&args).spawn().unwrap();
    wait_until("one chunk stored", || stored(&server, "l.bin") >= CHUNK);
    let started = Instant::now();
    let out = s.run(&args);
    assert!(started.elapsed() < Duration::from_secs(5));
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    let err = text(&out.stderr);
    assert!(
        err.contains(&format!("in use by pid {}", first.id())),
        "{err}"
    );
    first.kill().unwrap();
    let _ = first.wait();
    // The lock went with the process: the next run resumes.
    let out = s.run(&args);
    assert!(out.status.success(), "{}", text(&out.stderr));
}

// Network errors name the host and the cause; a name that does not resolve fails after one
// quick retry, within seconds, instead of minutes of silent retries.
#[test]
fn an_unresolvable_host_fails_fast_and_names_the_host() {
    let s = Scratch::new();
    let file = s.file("n.bin", &data(1000, 13));
    let started = Instant::now();
    let out = s.run(&[
        "gcs",
        "--json",
        file.to_str().unwrap(),
        "http://no-such-host.invalid/b/n.bin",
    ]);
    assert!(
        started.elapsed() < Duration::from_secs(15),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    let err = text(&out.stderr);
    assert!(
        err.contains("could not resolve host no-such-host.invalid"),
        "{err}"
    );
    assert_eq!(
        err.matches("attempt 2 of 11").count(),
        1,
        "one retry: {err}"
    );
    assert_eq!(json_of(&out)["error"]["kind"], "network");

    // A refused connection names the host and port.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let out = s.run(&[
        "gcs",
        "--max-retries",
        "0",
        file.to_str().unwrap(),
        &format!("http://127.0.0.1:{port}/b/n.bin"),
    ]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains(&format!("connection refused by 127.0.0.1:{port}")),
        "{}",
        text(&out.stderr)
    );
}

// Hints are true: a session URI without --session is refused with how to resume it.
#[test]
fn a_session_uri_without_the_flag_gets_a_hint() {
    let server = Server::start(ServerConfig::default()).unwrap();
    let s = Scratch::new();
    let file = s.file("u.bin", &data(1000, 14));
    let session = start_session(&server.gcs_xml_url("b", "u.bin"));
    let out = s.run(&["gcs", file.to_str().unwrap(), &session]);
    assert_eq!(out.status.code(), Some(2));
    let err = text(&out.stderr);
    assert!(err.contains("add --session"), "{err}");
    let id = session.split("upload_id=").nth(1).unwrap();
    assert!(!err.contains(id), "the session's id is a secret: {err}");
}
