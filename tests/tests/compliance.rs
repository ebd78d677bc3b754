//! Batch compliance jobs (C1–C3) driving the server's own GCS side (G1, G4–G7).

mod common;

use common::*;
use resumable_server::ServerConfig;

const BEARER: (&str, &str) = ("Authorization", "Bearer app-token");

fn create(server: &resumable_server::Server, body: &str) -> Resp {
    send(
        server.addr(),
        "POST",
        "/2/compliance/jobs",
        &[BEARER, ("Content-Type", "application/json")],
        body.as_bytes(),
    )
    .unwrap()
}

fn poll(server: &resumable_server::Server, id: &str) -> String {
    let r = send(
        server.addr(),
        "GET",
        &format!("/2/compliance/jobs/{id}"),
        &[BEARER],
        b"",
    )
    .unwrap();
    assert_eq!(r.status, 200);
    r.json()["data"]["status"].as_str().unwrap().to_owned()
}

#[test]
fn create_requires_a_bearer_token_and_a_type() {
    // C1
    let server = server();
    let r = send(
        server.addr(),
        "POST",
        "/2/compliance/jobs",
        &[("Content-Type", "application/json")],
        br#"{"type":"tweets"}"#,
    )
    .unwrap();
    assert_eq!(r.status, 401);
    assert_eq!(r.json()["status"], 401);
    for body in [
        r#"{"type":"likes"}"#,
        r#"{}"#,
        "nope",
        r#"{"type":"users","resumable":"yes"}"#,
    ] {
        let r = create(&server, body);
        assert_eq!(r.status, 400, "{body}");
        assert!(r.json()["errors"][0]["message"].is_string());
    }
}

#[test]
fn a_resumable_job_goes_created_in_progress_complete() {
    // C1, C2 (G1 + G4–G7 on upload_url), C3
    let server = server();
    let r = create(
        &server,
        r#"{"type":"tweets","name":"job one","resumable":true}"#,
    );
    assert_eq!(r.status, 200, "{}", r.text());
    let job = r.json()["data"].clone();
    assert_eq!(job["status"], "created");
    assert_eq!(job["type"], "tweets");
    assert_eq!(job["name"], "job one");
    assert_eq!(job["resumable"], true);
    for key in ["upload_expires_at", "download_expires_at", "created_at"] {
        let v = job[key].as_str().unwrap();
        assert!(v.ends_with(".000Z") || v.ends_with('Z'), "{key}: {v}");
    }
    let id = job["id"].as_str().unwrap().to_owned();
    assert!(
        id.bytes().all(|b| b.is_ascii_digit()) && id.len() == 19,
        "{id}"
    );
    let upload_url = job["upload_url"].as_str().unwrap();
    assert!(upload_url.starts_with(&server.base_url()));
    assert!(upload_url.contains("X-Goog-Signature="));
    assert_eq!(poll(&server, &id), "created");

    // The upload: G1 start (no Authorization), then chunks.
    let start = send(
        server.addr(),
        "POST",
        &target(upload_url),
        &[
            ("Content-Type", "text/plain"),
            ("Content-Length", "0"),
            ("x-goog-resumable", "start"),
        ],
        b"",
    )
    .unwrap();
    assert_eq!(start.status, 201);
    let session = target(start.header("location").unwrap());
    let ids: String = (1..=40_000u64)
        .map(|i| format!("{}\n", 1_000_000 + i))
        .collect();
    let ids = ids.into_bytes();
    let mut conn = Conn::open(server.addr());
    let r = put_chunk(&mut conn, &session, &ids, 0..KIB256, Some(ids.len()), &[]).unwrap();
    assert_eq!(r.status, 308);
    assert_eq!(poll(&server, &id), "created");
    let r = put_chunk(
        &mut conn,
        &session,
        &ids,
        KIB256..ids.len(),
        Some(ids.len()),
        &[],
    )
    .unwrap();
    assert_eq!(r.status, 200);

    // Before completion the results are not there.
    let download = job["download_url"].as_str().unwrap();
    assert_eq!(
        send(server.addr(), "GET", &target(download), &[], b"")
            .unwrap()
            .status,
        404
    );
    assert_eq!(poll(&server, &id), "in_progress");
    assert_eq!(poll(&server, &id), "complete");
    assert_eq!(poll(&server, &id), "complete");

    // C3: JSON Lines, no auth.
    let r = send(server.addr(), "GET", &target(download), &[], b"").unwrap();
    assert_eq!(r.status, 200);
    let lines: Vec<serde_json::Value> = r
        .text()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let expected = (1..=40_000u64).filter(|i| (1_000_000 + i) % 3 != 0).count();
    assert_eq!(lines.len(), expected);
    assert!(
        lines
            .iter()
            .all(|l| l["action"] == "delete" && l["reason"].is_string())
    );

    let list = send(
        server.addr(),
        "GET",
        "/2/compliance/jobs?type=tweets",
        &[BEARER],
        b"",
    )
    .unwrap();
    assert_eq!(list.json()["meta"]["result_count"], 1);
    let none = send(
        server.addr(),
        "GET",
        "/2/compliance/jobs?type=users",
        &[BEARER],
        b"",
    )
    .unwrap();
    assert_eq!(none.json()["meta"]["result_count"], 0);
}

#[test]
fn a_non_resumable_job_takes_one_put() {
    // C2: one PUT of the whole file to upload_url; C3 with compliance_polls = 1.
    let server = server_with(ServerConfig {
        compliance_polls: 1,
        ..ServerConfig::default()
    });
    let job = create(&server, r#"{"type":"users"}"#).json()["data"].clone();
    assert_eq!(job["resumable"], false);
    let r = send(
        server.addr(),
        "PUT",
        &target(job["upload_url"].as_str().unwrap()),
        &[("Content-Type", "text/plain")],
        b"4\n5\n6\n",
    )
    .unwrap();
    assert_eq!(r.status, 200);
    let id = job["id"].as_str().unwrap();
    assert_eq!(poll(&server, id), "complete");
    let r = send(
        server.addr(),
        "GET",
        &target(job["download_url"].as_str().unwrap()),
        &[],
        b"",
    )
    .unwrap();
    // 4 and 5 have actions (n % 3 != 0); 6 has none.
    assert_eq!(r.text().lines().count(), 2);
}

#[test]
fn upload_url_refuses_authorization_and_bad_ids_fail_the_job() {
    // C2: no Authorization on upload_url; C3: `failed`.
    let server = server_with(ServerConfig {
        compliance_polls: 1,
        ..ServerConfig::default()
    });
    let job = create(&server, r#"{"type":"tweets","resumable":true}"#).json()["data"].clone();
    let url = target(job["upload_url"].as_str().unwrap());
    let r = send(
        server.addr(),
        "POST",
        &url,
        &[
            ("Content-Type", "text/plain"),
            ("x-goog-resumable", "start"),
            BEARER,
        ],
        b"",
    )
    .unwrap();
    assert_eq!(r.status, 400);
    let session = {
        let r = send(
            server.addr(),
            "POST",
            &url,
            &[
                ("Content-Type", "text/plain"),
                ("x-goog-resumable", "start"),
            ],
            b"",
        )
        .unwrap();
        target(r.header("location").unwrap())
    };
    send(
        server.addr(),
        "PUT",
        &session,
        &[("Content-Range", "bytes 0-5/6")],
        b"1\nabc\n",
    )
    .unwrap();
    assert_eq!(poll(&server, job["id"].as_str().unwrap()), "failed");
}

#[test]
fn upload_urls_expire() {
    // C2: upload_url is valid for 15 minutes (here: 1 s); then the job is `expired`.
    let server = server_with(ServerConfig {
        compliance_upload_ttl: std::time::Duration::from_secs(1),
        ..ServerConfig::default()
    });
    let job = create(&server, r#"{"type":"tweets","resumable":true}"#).json()["data"].clone();
    std::thread::sleep(std::time::Duration::from_millis(2100));
    let r = send(
        server.addr(),
        "POST",
        &target(job["upload_url"].as_str().unwrap()),
        &[
            ("Content-Type", "text/plain"),
            ("x-goog-resumable", "start"),
        ],
        b"",
    )
    .unwrap();
    assert_eq!(r.status, 400);
    assert_eq!(poll(&server, job["id"].as_str().unwrap()), "expired");
}

#[test]
fn compliance_faults_and_unknown_jobs() {
    // C3: 429 with rate-limit headers (150 requests / 15 min); unknown ids are 404.
    let server = server();
    let r = send(
        server.addr(),
        "GET",
        "/2/compliance/jobs/1",
        &[BEARER, ("x-resumable-fault", "status:429")],
        b"",
    )
    .unwrap();
    assert_eq!(r.status, 429);
    assert!(r.header("x-rate-limit-reset").is_some());
    let r = send(server.addr(), "GET", "/2/compliance/jobs/1", &[BEARER], b"").unwrap();
    assert_eq!(r.status, 404);
    let r = send(server.addr(), "GET", "/2/compliance/jobs/1", &[], b"").unwrap();
    assert_eq!(r.status, 401);
}
