//! `resumable compliance` end to end against the conformance server's compliance jobs
//! (C1–C3) and its GCS side (G1–G8): the results and their summary, exit codes, faults in the
//! upload and in polling, no credentials on the upload URL, and continuing the same job after
//! `kill -9`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use resumable_server::{FaultScript, RequestKind, Server, ServerConfig};

const BIN: &str = env!("CARGO_BIN_EXE_resumable");
const TOKEN: &str = "app-only-SECRET-bearer-42";
const KIB256: u64 = 256 * 1024;

/// A scratch folder with the ids file and its own state folder.
struct Scratch {
    dir: tempfile::TempDir,
}

impl Scratch {
    fn new() -> Self {
        Scratch {
            dir: tempfile::tempdir().unwrap(),
        }
    }

    fn file(&self, name: &str, bytes: &[u8]) -> PathBuf {
        let path = self.dir.path().join(name);
        std::fs::write(&path, bytes).unwrap();
        path
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn state_home(&self) -> PathBuf {
        self.dir.path().join("state")
    }

    fn state_files(&self) -> Vec<PathBuf> {
        match std::fs::read_dir(self.state_home().join("resumable")) {
            Ok(entries) => entries
                .map(|e| e.unwrap().path())
                .filter(|p| p.extension().is_some_and(|e| e == "json"))
                .collect(),
            Err(_) => Vec::new(),
        }
    }

    fn command(&self, args: &[&str]) -> Command {
        let mut c = Command::new(BIN);
        c.args(args)
            .env("XDG_STATE_HOME", self.state_home())
            .env("X_BEARER_TOKEN", TOKEN)
            .env_remove("X_CONSUMER_KEY")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        c
    }

    fn run(&self, args: &[&str]) -> Output {
        self.command(args).output().unwrap()
    }
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn server(config: ServerConfig) -> Server {
    Server::start(config).unwrap()
}

fn with_faults(script: &str) -> ServerConfig {
    ServerConfig {
        faults: FaultScript::parse(script).unwrap(),
        compliance_polls: 1,
        ..ServerConfig::default()
    }
}

/// `count` numeric ids, one per line.
fn ids(count: u64) -> Vec<u8> {
    (1..=count)
        .map(|i| format!("{}\n", 1_000_000_000 + i * 7))
        .collect::<String>()
        .into_bytes()
}

/// What the server's results for `ids` are: id → reason, for ids with an action.
fn expected(ids: &[u8]) -> BTreeMap<String, String> {
    let reasons = ["deleted", "suspended", "protected", "deactivated"];
    std::str::from_utf8(ids)
        .unwrap()
        .lines()
        .map(|l| l.parse::<u64>().unwrap())
        .filter(|n| n % 3 != 0)
        .map(|n| (n.to_string(), reasons[(n % 4) as usize].to_owned()))
        .collect()
}

/// The results file as id → reason, checking every line's shape.
fn results(path: &Path) -> BTreeMap<String, String> {
    parse_results(&std::fs::read(path).unwrap())
}

fn parse_results(bytes: &[u8]) -> BTreeMap<String, String> {
    text(bytes)
        .lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            assert_eq!(v["action"], "delete", "{l}");
            (
                v["id"].as_str().unwrap().to_owned(),
                v["reason"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

fn count(server: &Server, kind: RequestKind) -> usize {
    server
        .request_log()
        .iter()
        .filter(|e| e.kind == kind)
        .count()
}

fn stored(server: &Server) -> u64 {
    server
        .sessions()
        .into_iter()
        .filter(|s| s.object.ends_with("/ids.txt"))
        .map(|s| s.stored)
        .max()
        .unwrap_or(0)
}

fn wait_until(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// C1–C3, G1: no Authorization on anything but the API requests, which all carry it.
fn assert_credentials_on_api_requests_only(server: &Server) {
    for entry in server.request_log() {
        let api = matches!(
            entry.kind,
            RequestKind::ComplianceCreate | RequestKind::ComplianceStatus
        );
        assert_eq!(
            entry.authorization, api,
            "{} {} ({:?})",
            entry.method, entry.path, entry.kind
        );
    }
}

fn assert_no_secrets(out: &Output) {
    let all = format!("{}{}", text(&out.stdout), text(&out.stderr));
    for secret in [TOKEN, "X-Goog-Signature", "upload_id="] {
        assert!(!all.contains(secret), "{secret} shown in: {all}");
    }
}

// C1, C2 (G1, G4, G7), C3: the whole flow; the results land in --out, the --json outcome and
// the stderr summary count them by action and reason; only API requests carry the token;
// the state file is gone at the end.
#[test]
fn runs_a_job_end_to_end_and_summarises_the_results() {
    let server = server(ServerConfig {
        compliance_polls: 1,
        ..ServerConfig::default()
    });
    let s = Scratch::new();
    let ids = ids(40_000);
    let file = s.file("ids.txt", &ids);
    let out_path = s.path("results.jsonl");
    let out = s.run(&[
        "compliance",
        file.to_str().unwrap(),
        "--type",
        "tweets",
        "--name",
        "nightly check",
        "--api-base",
        &server.compliance_url(),
        "--chunk-size",
        "256KiB",
        "--out",
        out_path.to_str().unwrap(),
        "--json",
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let want = expected(&ids);
    assert_eq!(results(&out_path), want);

    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(json["protocol"], "compliance");
    assert_eq!(json["type"], "tweets");
    assert_eq!(json["status"], "complete");
    assert_eq!(json["bytes"], ids.len() as u64);
    assert_eq!(json["results"], want.len() as u64);
    assert_eq!(json["actions"], serde_json::json!({"delete": want.len()}));
    let mut reasons = BTreeMap::new();
    for reason in want.values() {
        *reasons.entry(reason.clone()).or_insert(0u64) += 1;
    }
    assert_eq!(json["reasons"], serde_json::json!(reasons));
    assert_eq!(json["out"], out_path.to_str().unwrap());
    assert_eq!(json["resumed"], false);
    let chunks = ids.len().div_ceil(KIB256 as usize) as u64;
    // create, start, chunks, one poll, one download.
    assert_eq!(json["requests"], 2 + chunks + 2);
    assert_eq!(json["retries"], 0);
    let job_id = json["job_id"].as_str().unwrap();
    assert!(job_id.bytes().all(|b| b.is_ascii_digit()), "{job_id}");

    let err = text(&out.stderr);
    assert!(
        err.contains(&format!("created compliance job {job_id}")),
        "{err}"
    );
    assert!(
        err.contains(&format!(
            "compliance job {job_id}: complete (status poll 1)"
        )),
        "{err}"
    );
    assert!(
        err.contains(&format!("actions: delete {}", want.len())),
        "{err}"
    );
    assert!(err.contains("reasons: deactivated "), "{err}");

    assert_eq!(count(&server, RequestKind::ComplianceCreate), 1);
    assert_eq!(count(&server, RequestKind::GcsStart), 1);
    assert_eq!(count(&server, RequestKind::ComplianceDownload), 1);
    assert_credentials_on_api_requests_only(&server);
    assert_no_secrets(&out);
    assert!(
        s.state_files().is_empty(),
        "state removed after the download"
    );
}

// C3: an unfinished job is polled again after 10 s (never under 6 s: 150 requests per 15
// minutes), with each status shown; without --out the results go to stdout.
#[test]
fn polls_an_unfinished_job_and_writes_results_to_stdout() {
    let server = server(ServerConfig::default()); // complete on the second poll
    let s = Scratch::new();
    let ids = ids(100);
    let file = s.file("ids.txt", &ids);
    let started = Instant::now();
    let out = s.run(&[
        "compliance",
        file.to_str().unwrap(),
        "--type",
        "users",
        "--api-base",
        &server.base_url(),
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        started.elapsed() >= Duration::from_secs(10),
        "waited between polls"
    );
    assert_eq!(parse_results(&out.stdout), expected(&ids));
    let err = text(&out.stderr);
    assert!(err.contains(": in_progress (status poll 1)"), "{err}");
    assert!(err.contains("next status poll in 10 s"), "{err}");
    assert!(err.contains(": complete (status poll 2)"), "{err}");
    assert!(err.contains("written to stdout"), "{err}");
    assert_eq!(count(&server, RequestKind::ComplianceStatus), 2);
    assert_credentials_on_api_requests_only(&server);
}

// G5, G8 in the upload; C3 + G8 in polling: a chunk cut short, a 503 on a chunk and two 503s
// on the status poll are retried, and the results are still exact.
#[test]
fn survives_faults_in_the_upload_and_in_polling() {
    let server = server(with_faults(
        "gcs.chunk#2=drop-after:100000; gcs.chunk#3=status:503; compliance.status#1=status:503x2",
    ));
    let s = Scratch::new();
    let ids = ids(60_000);
    let file = s.file("ids.txt", &ids);
    let out_path = s.path("r.jsonl");
    let out = s.run(&[
        "compliance",
        file.to_str().unwrap(),
        "--type",
        "tweets",
        "--api-base",
        &server.base_url(),
        "--chunk-size",
        "256KiB",
        "--out",
        out_path.to_str().unwrap(),
        "--json",
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(results(&out_path), expected(&ids));
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(json["retries"].as_u64().unwrap() >= 4, "{json}");
    assert_eq!(json["polls"], 1, "503s are not status answers");
    assert_eq!(count(&server, RequestKind::ComplianceStatus), 3);
    assert_eq!(count(&server, RequestKind::ComplianceCreate), 1);
    assert_credentials_on_api_requests_only(&server);
    // Every retry is shown: what failed, on which bytes, the wait and the attempt count.
    let stderr = text(&out.stderr);
    assert!(
        stderr.lines().any(|l| l.contains(" on bytes ")
            && l.contains("; retrying in ")
            && l.contains(" attempt ")),
        "the cut chunk is shown: {stderr}"
    );
}

// C3, M5: a 429 on the status poll waits for x-rate-limit-reset / Retry-After.
#[test]
fn rate_limited_poll_waits_for_the_window() {
    let server = server(with_faults("compliance.status#1=status:429,retry-after:2"));
    let s = Scratch::new();
    let ids = ids(10);
    let file = s.file("ids.txt", &ids);
    let out_path = s.path("r.jsonl");
    let started = Instant::now();
    let out = s.run(&[
        "compliance",
        file.to_str().unwrap(),
        "--type",
        "tweets",
        "--api-base",
        &server.base_url(),
        "--out",
        out_path.to_str().unwrap(),
        "--json",
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(started.elapsed() >= Duration::from_secs(2));
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(json["retries"], 1);
    assert_eq!(results(&out_path), expected(&ids));
}

// Exit 2 for bad usage, with one clear line; the missing token is named, never shown.
#[test]
fn bad_usage_exits_2() {
    let server = server(ServerConfig::default());
    let s = Scratch::new();
    let file = s.file("ids.txt", &ids(3));
    let f = file.to_str().unwrap();
    let base = server.base_url();

    let mut c = s.command(&["compliance", f, "--type", "tweets", "--api-base", &base]);
    c.env_remove("X_BEARER_TOKEN");
    let out = c.output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = text(&out.stderr);
    assert!(err.contains("X_BEARER_TOKEN is not set"), "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");

    for (args, says) in [
        (
            vec!["compliance", f, "--type", "likes", "--api-base", &base],
            "likes",
        ),
        (
            vec![
                "compliance",
                f,
                "--type",
                "tweets",
                "--api-base",
                &base,
                "--json",
            ],
            "--out",
        ),
        (
            vec!["compliance", "-", "--type", "tweets", "--api-base", &base],
            "stdin",
        ),
        (
            vec![
                "compliance",
                f,
                "--type",
                "tweets",
                "--api-base",
                "ftp://x/",
            ],
            "http",
        ),
        (
            vec![
                "compliance",
                f,
                "--type",
                "tweets",
                "--api-base",
                &base,
                "--chunk-size",
                "1000",
            ],
            "256 KiB",
        ),
        (
            vec![
                "compliance",
                "/no/such/file",
                "--type",
                "tweets",
                "--api-base",
                &base,
            ],
            "cannot read",
        ),
    ] {
        let out = s.run(&args);
        assert_eq!(
            out.status.code(),
            Some(2),
            "{args:?}: {}",
            text(&out.stderr)
        );
        assert!(
            text(&out.stderr).contains(says),
            "{args:?}: {}",
            text(&out.stderr)
        );
    }
    assert!(server.request_log().is_empty(), "nothing was sent");
}

// C3: a job that fails is exit 1 with a typed message, and the state is dropped; a refused
// create names the stage.
#[test]
fn a_failed_job_and_a_refused_create_exit_1() {
    let server = server(with_faults(""));
    let s = Scratch::new();
    let file = s.file("ids.txt", b"123\nnot-an-id\n");
    let args = [
        "compliance",
        file.to_str().unwrap(),
        "--type",
        "tweets",
        "--api-base",
        &server.base_url(),
    ];
    let out = s.run(&args);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    let err = text(&out.stderr);
    assert!(
        err.contains("error: compliance job ") && err.contains(" failed"),
        "{err}"
    );
    assert!(err.contains("one numeric id per line"), "{err}");
    assert!(s.state_files().is_empty());
    assert!(out.stdout.is_empty());

    // C1: the create refused (a final 4xx): the stage is named, nothing is kept.
    let refusing = server_with_create_refused();
    let out = s.run(&[
        "compliance",
        file.to_str().unwrap(),
        "--type",
        "tweets",
        "--api-base",
        &refusing.base_url(),
    ]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    let err = text(&out.stderr);
    assert!(
        err.contains("error: creating the compliance job failed: API error 403"),
        "{err}"
    );
    assert!(s.state_files().is_empty());
    assert_no_secrets(&out);
}

fn server_with_create_refused() -> Server {
    server(with_faults("compliance.create=status:403"))
}

// C2: the upload URL lives 15 minutes; once it has expired nothing is written to it and the
// run says so (exit 1), dropping the job.
#[test]
fn an_expired_upload_url_is_a_typed_failure() {
    let server = server(ServerConfig {
        compliance_upload_ttl: Duration::ZERO,
        ..ServerConfig::default()
    });
    let s = Scratch::new();
    let file = s.file("ids.txt", &ids(10));
    let out = s.run(&[
        "compliance",
        file.to_str().unwrap(),
        "--type",
        "tweets",
        "--api-base",
        &server.base_url(),
    ]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    let err = text(&out.stderr);
    assert!(err.contains("upload URL of compliance job"), "{err}");
    assert!(err.contains("expired"), "{err}");
    assert!(err.contains("the next run creates a new job"), "{err}");
    assert_eq!(
        count(&server, RequestKind::GcsStart),
        0,
        "nothing sent to it"
    );
    assert!(s.state_files().is_empty());
}

// G3, C2: kill -9 mid-upload; the same command continues the same job and session: one job,
// one session, acknowledged bytes not sent again, exact results.
#[test]
fn kill_9_mid_upload_then_rerun_continues_the_same_job() {
    let server = server(with_faults("gcs.chunk#3=stall:20s"));
    let s = Scratch::new();
    let ids = ids(150_000); // about 1.6 MB: seven chunks of 256 KiB
    let file = s.file("ids.txt", &ids);
    let out_path = s.path("r.jsonl");
    let args = [
        "compliance",
        file.to_str().unwrap(),
        "--type",
        "tweets",
        "--api-base",
        &server.base_url(),
        "--chunk-size",
        "256KiB",
        "--out",
        out_path.to_str().unwrap(),
        "--json",
    ];
    let mut child: Child = s.command(&args).spawn().unwrap();
    wait_until("two chunks stored", || stored(&server) >= 2 * KIB256);
    std::thread::sleep(Duration::from_millis(200));
    child.kill().unwrap(); // SIGKILL
    let _ = child.wait();
    let held = stored(&server);
    assert_eq!(
        s.state_files().len(),
        1,
        "the job was saved before the kill"
    );
    let saved = std::fs::read_to_string(&s.state_files()[0]).unwrap();
    assert!(saved.contains("\"phase\": \"upload\""), "{saved}");
    assert!(!saved.contains(TOKEN), "the token is never saved");

    let out = s.run(&args);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(results(&out_path), expected(&ids));
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(json["resumed"], true);
    assert!(text(&out.stderr).contains("continuing compliance job"));
    assert!(
        saved.contains(json["job_id"].as_str().unwrap()),
        "the same job"
    );
    assert_eq!(count(&server, RequestKind::ComplianceCreate), 1, "one job");
    assert_eq!(count(&server, RequestKind::GcsStart), 1, "one session");
    let received: u64 = server
        .sessions()
        .iter()
        .map(|s| s.body_bytes_received)
        .sum();
    assert!(
        received <= ids.len() as u64 + KIB256,
        "received {received} bytes for {} (held {held} at the kill)",
        ids.len()
    );
    assert_credentials_on_api_requests_only(&server);
    assert!(s.state_files().is_empty());
}

// C3: kill -9 while polling; the rerun polls the same job and uploads nothing again.
#[test]
fn kill_9_mid_poll_then_rerun_polls_the_same_job() {
    let server = server(with_faults("compliance.status#1=stall:20s"));
    let s = Scratch::new();
    let ids = ids(1000);
    let file = s.file("ids.txt", &ids);
    let out_path = s.path("r.jsonl");
    let args = [
        "compliance",
        file.to_str().unwrap(),
        "--type",
        "users",
        "--api-base",
        &server.base_url(),
        "--out",
        out_path.to_str().unwrap(),
    ];
    let mut child: Child = s.command(&args).spawn().unwrap();
    wait_until("the job saved in its poll phase", || {
        s.state_files().first().is_some_and(|p| {
            std::fs::read_to_string(p).is_ok_and(|t| t.contains("\"phase\": \"poll\""))
        })
    });
    std::thread::sleep(Duration::from_millis(200));
    child.kill().unwrap();
    let _ = child.wait();
    let gcs_requests =
        count(&server, RequestKind::GcsChunk) + count(&server, RequestKind::GcsStart);

    let out = s.run(&args);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("polling it"),
        "{}",
        text(&out.stderr)
    );
    assert_eq!(results(&out_path), expected(&ids));
    assert_eq!(count(&server, RequestKind::ComplianceCreate), 1);
    assert_eq!(
        count(&server, RequestKind::GcsChunk) + count(&server, RequestKind::GcsStart),
        gcs_requests,
        "nothing uploaded again"
    );
    assert_credentials_on_api_requests_only(&server);
    assert!(s.state_files().is_empty());
}

// C3: a refused download is exit 1 naming the stage; the completed job is kept, and the same
// command downloads its results without creating another job.
#[test]
fn a_failed_download_keeps_the_job_for_the_next_run() {
    let server = server(with_faults("compliance.download#1=status:403"));
    let s = Scratch::new();
    let ids = ids(500);
    let file = s.file("ids.txt", &ids);
    let out_path = s.path("r.jsonl");
    let args = [
        "compliance",
        file.to_str().unwrap(),
        "--type",
        "tweets",
        "--api-base",
        &server.base_url(),
        "--out",
        out_path.to_str().unwrap(),
        "--json",
    ];
    let out = s.run(&args);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    let err = text(&out.stderr);
    assert!(
        err.contains("downloading the results of compliance job") && err.contains("HTTP 403"),
        "{err}"
    );
    assert!(err.contains("run the same command again"), "{err}");
    assert!(!out_path.exists(), "no partial results left behind");
    assert_eq!(s.state_files().len(), 1);

    let out = s.run(&args);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(results(&out_path), expected(&ids));
    assert_eq!(count(&server, RequestKind::ComplianceCreate), 1);
    assert_eq!(count(&server, RequestKind::ComplianceDownload), 2);
    assert_credentials_on_api_requests_only(&server);
    assert!(s.state_files().is_empty());
}
