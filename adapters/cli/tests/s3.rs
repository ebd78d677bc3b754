//! `resumable s3` end to end against the conformance server's S3 side, with faults from a
//! server script: several parts in parallel, an interrupted upload resumed from its state,
//! a lost Complete answer, SlowDown, an object without proof, an abort, SigV4 signing.

mod common;

use std::process::Output;

use common::*;
use resumable_server::{FaultScript, Server, ServerConfig};

const KIB: usize = 1024;
const PART: &str = "64KiB";

fn server(faults: &str, configure: impl FnOnce(&mut ServerConfig)) -> Server {
    let mut config = ServerConfig {
        faults: FaultScript::parse(faults).unwrap(),
        s3_min_part_size: 64 * KIB as u64,
        s3_list_page_size: 2,
        ..ServerConfig::default()
    };
    configure(&mut config);
    Server::start(config).unwrap()
}

fn upload(s: &Scratch, server: &Server, file: &str, extra: &[&str]) -> Output {
    let endpoint = server.s3_endpoint();
    let mut args = vec![
        "s3",
        file,
        "s3://bkt/dir/obj.bin",
        "--endpoint",
        endpoint.as_str(),
        "--part-size",
        PART,
        "--min-part-size",
        PART,
        "--json",
    ];
    args.extend_from_slice(extra);
    s.command(&args)
        .env_remove("AWS_ACCESS_KEY_ID")
        .env_remove("AWS_SECRET_ACCESS_KEY")
        .env_remove("AWS_SESSION_TOKEN")
        .output()
        .unwrap()
}

fn ok_json(out: &Output) -> serde_json::Value {
    assert!(
        out.status.success(),
        "exit {:?}: {}",
        out.status.code(),
        text(&out.stderr)
    );
    json_of(out)
}

fn parts_sent(server: &Server) -> usize {
    server
        .request_log()
        .iter()
        .filter(|e| e.kind.name() == "s3.part")
        .count()
}

// S2, S3, S6, S11: several parts in flight, completed in order, proven by the CRC32C.
#[test]
fn s3_uploads_in_parallel_parts_and_the_object_is_the_file() {
    // The first three parts are held a while before their answers, so they are in flight
    // together however fast the loopback is.
    let server = server("s3.part#1..3=stall:300ms", |_| {});
    let s = Scratch::new();
    let bytes = data(7 * 64 * KIB + 321, 3);
    let file = s.file("obj.bin", &bytes);
    let out = upload(&s, &server, file.to_str().unwrap(), &["--parallel", "3"]);
    let j = ok_json(&out);
    assert_eq!(j["protocol"], "s3");
    assert_eq!(j["bytes"], bytes.len() as u64);
    assert_eq!(j["parts"], 8);
    assert_eq!(j["verified"]["by"], "complete");
    assert_eq!(server.s3_object("bkt", "dir/obj.bin").unwrap(), bytes);
    assert_eq!(parts_sent(&server), 8);
    assert_eq!(
        server.peak_concurrent_requests(),
        3,
        "three parts went out at once, never more"
    );
    assert_eq!(s.state_files().len(), 0, "state removed on success");
}

// S4: an empty file is one empty part.
#[test]
fn s4_an_empty_file_uploads_as_one_empty_part() {
    let server = server("", |_| {});
    let s = Scratch::new();
    let file = s.file("empty.bin", b"");
    let j = ok_json(&upload(&s, &server, file.to_str().unwrap(), &[]));
    assert_eq!(j["bytes"], 0);
    assert_eq!(j["parts"], 1);
    assert_eq!(server.s3_object("bkt", "dir/obj.bin").unwrap(), b"");
}

// S5: an upload that fails part-way keeps its state; the next run lists the parts the
// server holds (several ListParts pages) and sends only the others.
#[test]
fn s5_a_failed_upload_resumes_from_its_state_and_sends_only_missing_parts() {
    let server = server("s3.part#4=drop-after:1k", |_| {});
    let s = Scratch::new();
    let bytes = data(6 * 64 * KIB + 5, 4);
    let file = s.file("obj.bin", &bytes);
    let path = file.to_str().unwrap();
    let first = upload(
        &s,
        &server,
        path,
        &["--parallel", "1", "--max-retries", "0"],
    );
    assert_eq!(first.status.code(), Some(1), "{}", text(&first.stderr));
    let failed = json_of(&first);
    assert_eq!(failed["resumable"], true, "{failed}");
    assert_eq!(failed["bytes_persisted"], 3 * 64 * KIB as u64);
    assert_eq!(s.state_files().len(), 1);
    let before = parts_sent(&server);
    assert_eq!(before, 4);

    let j = ok_json(&upload(&s, &server, path, &["--parallel", "2"]));
    assert_eq!(j["resumed_from"], 3 * 64 * KIB as u64);
    assert_eq!(parts_sent(&server) - before, 4, "parts 4 to 7 only");
    let lists = server
        .request_log()
        .iter()
        .filter(|e| e.kind.name() == "s3.list")
        .count();
    assert_eq!(lists, 2, "three parts held, two per page");
    assert_eq!(server.s3_object("bkt", "dir/obj.bin").unwrap(), bytes);
    assert_eq!(s.state_files().len(), 0);
}

// S7: Complete is processed but its answer is lost; the retried Complete meets NoSuchUpload
// (as MinIO answers), and the object is checked with a HEAD instead of failing.
#[test]
fn s7_a_lost_complete_answer_is_resolved_by_checking_the_object() {
    let server = server("s3.complete#1=drop-after:1m", |c| {
        c.s3_repeat_complete_gone = true;
    });
    let s = Scratch::new();
    let bytes = data(2 * 64 * KIB + 9, 5);
    let file = s.file("obj.bin", &bytes);
    let j = ok_json(&upload(&s, &server, file.to_str().unwrap(), &[]));
    assert_eq!(j["verified"]["by"], "head");
    assert_eq!(j["retries"], 1);
    assert_eq!(server.s3_object("bkt", "dir/obj.bin").unwrap(), bytes);
}

// S9, S10: SlowDown 503s are retried with backoff.
#[test]
fn s10_slowdown_is_retried() {
    let server = server("s3.part#2=status:503", |_| {});
    let s = Scratch::new();
    let bytes = data(3 * 64 * KIB, 6);
    let file = s.file("obj.bin", &bytes);
    let j = ok_json(&upload(&s, &server, file.to_str().unwrap(), &[]));
    assert_eq!(j["retries"], 1);
    assert_eq!(server.s3_object("bkt", "dir/obj.bin").unwrap(), bytes);
}

// S7, S11: a server that shows the object's checksum nowhere does not get a success.
#[test]
fn s11_an_object_without_any_checksum_is_not_a_success() {
    let server = server("s3.complete=no-proof; s3.other=no-proof", |_| {});
    let s = Scratch::new();
    let file = s.file("obj.bin", &data(64 * KIB + 1, 7));
    let out = upload(&s, &server, file.to_str().unwrap(), &[]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(json_of(&out)["error"]["kind"], "unproven");
}

// S3: a server that stores less than the part and echoes that part's CRC32C is caught.
#[test]
fn s3_a_part_stored_short_is_an_integrity_failure() {
    let server = server("s3.part#1=persist:100", |_| {});
    let s = Scratch::new();
    let file = s.file("obj.bin", &data(2 * 64 * KIB, 8));
    let out = upload(&s, &server, file.to_str().unwrap(), &["--parallel", "1"]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(json_of(&out)["error"]["kind"], "integrity");
    assert!(server.s3_object("bkt", "dir/obj.bin").is_none());
}

// S8: --cancel aborts the saved upload: the server drops its parts and the state is removed.
#[test]
fn s8_cancel_aborts_the_saved_upload() {
    let server = server("s3.part#2=drop-after:1k", |_| {});
    let s = Scratch::new();
    let file = s.file("obj.bin", &data(4 * 64 * KIB, 9));
    let path = file.to_str().unwrap();
    let first = upload(
        &s,
        &server,
        path,
        &["--parallel", "1", "--max-retries", "0"],
    );
    assert_eq!(first.status.code(), Some(1));
    assert_eq!(server.s3_uploads().len(), 1);
    let j = ok_json(&upload(&s, &server, path, &["--cancel"]));
    assert_eq!(j["cancelled"], true);
    assert!(server.s3_uploads().is_empty(), "the upload was aborted");
    assert_eq!(s.state_files().len(), 0);
    // Nothing left to cancel.
    let again = upload(&s, &server, path, &["--cancel"]);
    assert_eq!(again.status.code(), Some(2));
}

// S12: with AWS credentials in the environment every request is signed; the secret never
// appears in the output.
#[test]
fn s12_requests_are_signed_with_the_environments_credentials() {
    let server = server("s3.part#1=status:403", |_| {});
    let s = Scratch::new();
    let file = s.file("obj.bin", &data(64 * KIB, 10));
    let endpoint = server.s3_endpoint();
    let out = s
        .command(&[
            "s3",
            file.to_str().unwrap(),
            "s3://bkt/k",
            "--endpoint",
            &endpoint,
            "--json",
        ])
        .env("AWS_ACCESS_KEY_ID", "AKIDEXAMPLE")
        .env(
            "AWS_SECRET_ACCESS_KEY",
            "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY",
        )
        .env("AWS_REGION", "eu-west-1")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    let all = format!("{}{}", text(&out.stdout), text(&out.stderr));
    assert!(!all.contains("wJalrXUtnFEMI"), "{all}");
    assert!(all.contains("AccessDenied"), "{all}");
    let log = server.request_log();
    assert!(!log.is_empty());
    assert!(log.iter().all(|e| e.authorization), "every request signed");
}
