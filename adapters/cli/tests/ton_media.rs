//! `resumable ton` and `resumable media` end to end against the conformance server, with
//! faults (given to the server as a session script in a start/INIT header), resume after
//! `kill -9`, and `--json`.

mod common;

use std::process::Output;
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

// T2-T6: a resumable TON upload through faults (a drop mid-chunk, a 503 with Retry-After)
// ends byte-identical, and --json reports the stored object's location.
#[test]
fn ton_upload_with_faults() {
    let server = Server::start(ServerConfig::default()).unwrap();
    let s = Scratch::new();
    let bytes = data(1200 * KIB + 11, 1);
    let file = s.file("v.mp4", &bytes);
    let url = server.ton_bucket_url("ta_partner");
    let out = s.run(&[
        "ton",
        "--content-type",
        "video/mp4",
        "--chunk-size",
        "256KiB",
        "--json",
        "-H",
        "x-resumable-session-faults: ton.chunk#2=drop-after:100000; ton.chunk#3=status:503,retry-after:1",
        file.to_str().unwrap(),
        &url,
    ]);
    let j = json(&out);
    assert_eq!(j["protocol"], "ton");
    assert_eq!(j["bytes"], bytes.len() as u64);
    assert_eq!(j["status"], 201);
    assert_eq!(j["retries"], 2, "{j}");
    let location = j["location"].as_str().unwrap();
    assert!(
        location.contains("/1.1/ton/bucket/ta_partner/"),
        "{location}"
    );
    assert_eq!(server.ton_object("ta_partner", location).unwrap(), bytes);
    assert_eq!(s.state_files().len(), 0, "state removed on success");
}

// T1: --single uploads in one request.
#[test]
fn ton_single_request() {
    let server = Server::start(ServerConfig::default()).unwrap();
    let s = Scratch::new();
    let bytes = data(300 * KIB, 2);
    let file = s.file("a.bin", &bytes);
    let url = server.ton_bucket_url("b");
    let out = s.run(&[
        "ton",
        "--single",
        "--content-type",
        "application/octet-stream",
        "--json",
        file.to_str().unwrap(),
        &url,
    ]);
    let j = json(&out);
    assert_eq!(j["requests"], 1);
    let location = j["location"].as_str().unwrap();
    assert_eq!(server.ton_object("b", location).unwrap(), bytes);
}

// T5, T6: kill -9 during a stalled chunk, run again: the same upload continues from its
// saved state (one start), the object is byte-identical.
#[test]
fn ton_resumes_after_kill_9() {
    let server = Server::start(ServerConfig::default()).unwrap();
    let s = Scratch::new();
    let bytes = data(1024 * KIB + 5, 3);
    let file = s.file("k.bin", &bytes);
    let url = server.ton_bucket_url("b");
    let args = [
        "ton",
        "--content-type",
        "application/octet-stream",
        "--chunk-size",
        "256KiB",
        "--json",
        "-H",
        "x-resumable-session-faults: ton.chunk#2=stall:20s",
        file.to_str().unwrap(),
        url.as_str(),
    ];
    let mut child = s.command(&args).spawn().unwrap();
    wait_until("the first chunk stored", || {
        server
            .ton_uploads()
            .iter()
            .any(|u| u.stored >= 256 * KIB as u64)
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
    let location = j["location"].as_str().unwrap();
    assert_eq!(server.ton_object("b", location).unwrap(), bytes);
    assert_eq!(
        server.ton_uploads().len(),
        1,
        "no second upload was started"
    );
}

// M1-M4, M6: media in both API forms, with a category that processes over several STATUS
// polls, and an APPEND that fails once (retried with the same segment_index).
#[test]
fn media_uploads_in_both_forms_with_processing() {
    let server = Server::start(ServerConfig::default()).unwrap();
    let s = Scratch::new();
    let bytes = data(700 * KIB + 3, 4);
    let file = s.file("clip.mp4", &bytes);
    for (api, endpoint) in [
        ("v1", server.media_v1_url()),
        ("v2", server.media_v2_base()),
    ] {
        let out = s.run(&[
            "media",
            "--media-type",
            "video/mp4",
            "--category",
            "tweet_video",
            "--api",
            api,
            "--endpoint",
            &endpoint,
            "--segment-size",
            "256KiB",
            "--json",
            "-H",
            "x-resumable-session-faults: media.append#2=status:503",
            file.to_str().unwrap(),
        ]);
        let j = json(&out);
        assert_eq!(j["protocol"], "media");
        assert_eq!(j["api"], api);
        assert_eq!(j["bytes"], bytes.len() as u64);
        assert_eq!(j["processing"], "succeeded", "{j}");
        assert!(j["status_polls"].as_u64().unwrap() >= 1, "{j}");
        assert_eq!(j["retries"], 1, "{j}");
        let id = j["media_id"].as_str().unwrap();
        assert_eq!(server.media(id).unwrap(), bytes, "{api}");
        let info = server.media_info(id).unwrap();
        assert_eq!(info.segments, 3);
        assert_eq!(
            info.appends.get(&1),
            Some(&1),
            "segment 1 accepted once: {info:?}"
        );
        assert!(j["media_key"].is_string());
    }
}

// M2, issue 15: --parallel 4 keeps four APPENDs on their way at once (the first four stall
// together) and never more, a failed one is sent again with its segment_index, and the media
// is byte-identical. (Answers out of order are the simulation's.)
#[test]
fn media_parallel_appends_are_in_flight_together_and_land_in_place() {
    let server = Server::start(ServerConfig::default()).unwrap();
    let s = Scratch::new();
    let bytes = data(2 * 1024 * KIB + 5, 9);
    let file = s.file("clip.mp4", &bytes);
    let out = s.run(&[
        "media",
        "--media-type",
        "video/mp4",
        "--api",
        "v2",
        "--endpoint",
        &server.media_v2_base(),
        "--segment-size",
        "256KiB",
        "--parallel",
        "4",
        "--json",
        "-H",
        "x-resumable-session-faults: media.append#1..4=stall:300ms; media.append#6=status:503",
        file.to_str().unwrap(),
    ]);
    let j = json(&out);
    assert_eq!(j["retries"], 1, "{j}");
    let id = j["media_id"].as_str().unwrap();
    assert_eq!(server.media(id).unwrap(), bytes);
    let info = server.media_info(id).unwrap();
    assert_eq!(info.segments, 9);
    assert_eq!(
        server.peak_concurrent_requests(),
        4,
        "four APPENDs at once, never more"
    );

    let out = s.run(&["media", "--media-type", "video/mp4", "--parallel", "9", "x"]);
    assert_eq!(out.status.code(), Some(2), "more than 8 at once is refused");
}

// M6, issue 10: --api-base points every Twitter command at another host (here the local
// server): v2 under {base}/2/media/upload.
#[test]
fn media_api_base_targets_a_local_server() {
    let server = Server::start(ServerConfig::default()).unwrap();
    let s = Scratch::new();
    let bytes = data(300 * KIB, 7);
    let file = s.file("p.gif", &bytes);
    for api in ["v1", "v2"] {
        let out = s.run(&[
            "media",
            "--media-type",
            "image/gif",
            "--api",
            api,
            "--api-base",
            &server.base_url(),
            "--json",
            file.to_str().unwrap(),
        ]);
        let j = json(&out);
        assert_eq!(j["api"], api);
        let id = j["media_id"].as_str().unwrap();
        assert_eq!(server.media(id).unwrap(), bytes, "{api}");
    }
}

// M4: processing that fails is exit 1 with the server's error in words.
#[test]
fn media_processing_failure_exits_1() {
    let server = Server::start(ServerConfig::default()).unwrap();
    let s = Scratch::new();
    let file = s.file("bad.mp4", &data(10 * KIB, 5));
    let out = s.run(&[
        "media",
        "--media-type",
        "video/mp4",
        "--category",
        "tweet_video",
        "--endpoint",
        &server.media_v1_url(),
        "-H",
        "x-resumable-session-faults: media.finalize=fail-processing",
        file.to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("media processing failed"), "{err}");
}

// M2: a killed media upload resumes with the next unacknowledged segment of the same media id.
#[test]
fn media_resumes_after_kill_9() {
    let server = Server::start(ServerConfig::default()).unwrap();
    let s = Scratch::new();
    let bytes = data(1024 * KIB, 6);
    let file = s.file("m.gif", &bytes);
    let endpoint = server.media_v1_url();
    let args = [
        "media",
        "--media-type",
        "image/gif",
        "--endpoint",
        endpoint.as_str(),
        "--segment-size",
        "256KiB",
        "--json",
        "-H",
        "x-resumable-session-faults: media.append#3=stall:20s",
        file.to_str().unwrap(),
    ];
    let mut child = s.command(&args).spawn().unwrap();
    wait_until("two segments appended", || {
        server.all_media().iter().any(|m| m.appends.len() >= 2)
    });
    std::thread::sleep(Duration::from_millis(100));
    child.kill().unwrap();
    let _ = child.wait();

    let j = json(&s.run(&args));
    assert!(
        j["resumed_from"].as_u64().unwrap() >= 512 * KIB as u64,
        "{j}"
    );
    assert_eq!(
        server.all_media().len(),
        1,
        "the same media id, no second INIT"
    );
    let id = j["media_id"].as_str().unwrap();
    assert_eq!(server.media(id).unwrap(), bytes);
    let info = server.media_info(id).unwrap();
    assert_eq!(
        info.appends.get(&0),
        Some(&1),
        "segment 0 was not sent again"
    );
    assert_eq!(
        info.appends.get(&1),
        Some(&1),
        "segment 1 was not sent again"
    );
}

// Exit 2: TON and media need the size up front, so stdin is refused; bad URLs too.
#[test]
fn ton_and_media_refuse_stdin_and_bad_urls() {
    let s = Scratch::new();
    let out = s.run(&["ton", "--content-type", "a/b", "-", "http://127.0.0.1:9/b"]);
    assert_eq!(out.status.code(), Some(2));
    let out = s.run(&["media", "--media-type", "image/gif", "-"]);
    assert_eq!(out.status.code(), Some(2));
    let f = s.file("x", b"x");
    let out = s.run(&[
        "ton",
        "--content-type",
        "a/b",
        f.to_str().unwrap(),
        "ftp://x/b",
    ]);
    assert_eq!(out.status.code(), Some(2));
    let out = s.run(&[
        "media",
        "--media-type",
        "image/gif",
        "--endpoint",
        "nope",
        f.to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(2));
}

// Issue 19: without --api, media uses X API v2 (an upload.json --endpoint still means v1.1);
// the media type and category come from the file name when not given; against the real API,
// missing credentials are named before any request.
#[test]
fn media_defaults_to_v2_guesses_the_type_and_checks_credentials_first() {
    let server = Server::start(ServerConfig::default()).unwrap();
    let s = Scratch::new();
    let gif = s.file("loop.gif", &data(40 * KIB, 7));
    let out = s.run(&[
        "media",
        "--api-base",
        &server.base_url(),
        "--json",
        gif.to_str().unwrap(),
    ]);
    let j = json(&out);
    assert_eq!(j["api"], "v2");
    let info = server.media_info(j["media_id"].as_str().unwrap()).unwrap();
    assert_eq!(info.media_type, "image/gif");
    assert_eq!(info.media_category.as_deref(), Some("tweet_gif"));

    let out = s.run(&[
        "media",
        "--endpoint",
        &server.media_v1_url(),
        "--media-type",
        "image/gif",
        "--json",
        gif.to_str().unwrap(),
    ]);
    assert_eq!(json(&out)["api"], "v1", "an upload.json endpoint is v1.1");

    let unknown = s.file("notes.bin", b"x");
    let out = s.run(&[
        "media",
        "--api-base",
        &server.base_url(),
        unknown.to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("--media-type"),
        "{}",
        text(&out.stderr)
    );

    // Exit 2 (bad usage), not 1: the request to the real API was never tried.
    let out = s.run(&["media", gif.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    let err = text(&out.stderr);
    assert!(
        err.contains("X_BEARER_TOKEN") && err.contains("X_CONSUMER_KEY"),
        "{err}"
    );
}
