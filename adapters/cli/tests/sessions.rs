//! `resumable sessions` (issue 19): the kept resume states listed with what they are for and
//! how far they came; `--forget` and `--prune` remove them.

mod common;

use std::process::Command;

use common::*;
use resumable_server::{Server, ServerConfig};

const KIB: usize = 1024;

/// A GCS upload that stops after its first chunk (every later chunk answered 503, no
/// retries), leaving its state in the default folder.
fn interrupted_upload(s: &Scratch, server: &Server, name: &str) {
    let file = s.file(name, &data(600 * KIB, 3));
    let url = with_faults(&server.gcs_json_url("b", name), "gcs.chunk#2..=status:503");
    let out = s.run(&[
        "gcs",
        "--chunk-size",
        "256KiB",
        "--max-retries",
        "0",
        file.to_str().unwrap(),
        &url,
    ]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
}

#[test]
fn sessions_lists_forgets_and_prunes_kept_states() {
    let server = Server::start(ServerConfig::default()).unwrap();
    let s = Scratch::new();
    interrupted_upload(&s, &server, "one.bin");
    interrupted_upload(&s, &server, "two.bin");

    let out = s.run(&["sessions", "--json"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let list = json_of(&out);
    let list = list.as_array().unwrap();
    assert_eq!(list.len(), 2);
    for item in list {
        assert_eq!(item["protocol"], "gcs");
        assert_eq!(item["bytes_persisted"], 256 * 1024);
        assert_eq!(item["total"], 600 * 1024);
        assert_eq!(item["in_use"], false);
        assert_eq!(item["stale"], false);
        let destination = item["destination"].as_str().unwrap();
        assert!(
            destination.contains("/upload/storage/v1/b/b/o"),
            "{destination}"
        );
        assert!(!destination.contains("upload_id"), "{destination}");
    }
    let text_list = text(&s.run(&["sessions"]).stdout);
    assert_eq!(text_list.lines().count(), 2, "{text_list}");
    assert!(text_list.contains("256.0 KiB of 600.0 KiB"), "{text_list}");

    // --forget takes an id prefix.
    let id = list[0]["id"].as_str().unwrap();
    let out = s.run(&["sessions", "--forget", &id[..8]]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(s.state_files().len(), 1);
    let out = s.run(&["sessions", "--forget", "zz"]);
    assert_eq!(out.status.code(), Some(2), "too short an id");

    // --prune removes a state older than a week, and keeps a fresh one.
    interrupted_upload(&s, &server, "three.bin");
    let files = s.state_files();
    assert_eq!(files.len(), 2);
    let old = &files[0];
    let touched = Command::new("touch")
        .args(["-d", "8 days ago"])
        .arg(old)
        .status()
        .unwrap();
    assert!(touched.success());
    let out = s.run(&["sessions", "--prune"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).contains("removed 1 of 2"),
        "{}",
        text(&out.stdout)
    );
    let left = s.state_files();
    assert_eq!(left.len(), 1);
    assert_ne!(&left[0], old, "the old state went, the fresh one stayed");
}
