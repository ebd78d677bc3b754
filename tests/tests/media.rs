//! The media upload server side, v1.1 and v2, rule by rule (M1–M6), with a raw HTTP client;
//! then the core's `MediaUpload` (both API forms) driven over raw sockets against it, with
//! recoverable and fatal faults.

mod common;

use std::time::{Duration, SystemTime};

use common::*;
use resumable_core::media::{
    ApiForm, ApiVersion, MediaCompletion, MediaConfig, MediaUpload, ProcessingState,
};
use resumable_core::{Error, Upload as _};
use resumable_server::{RequestKind, Server, ServerConfig};

const URLENCODED: &str = "application/x-www-form-urlencoded";
const INIT3: &str = "command=INIT&total_bytes=3&media_type=image%2Fpng";

/// A urlencoded form (values here need escaping only for `/` and `,`).
fn form(fields: &[(&str, &str)]) -> String {
    fields
        .iter()
        .map(|(k, v)| format!("{k}={}", v.replace('/', "%2F").replace(',', "%2C")))
        .collect::<Vec<_>>()
        .join("&")
}

fn v1_post(server: &Server, fields: &[(&str, &str)], extra: &[(&str, &str)]) -> Resp {
    let mut headers = vec![("Content-Type", URLENCODED)];
    headers.extend_from_slice(extra);
    send(
        server.addr(),
        "POST",
        "/1.1/media/upload.json",
        &headers,
        form(fields).as_bytes(),
    )
    .unwrap()
}

/// v1.1 INIT (M1); returns the media id string.
fn v1_init(server: &Server, total: usize, media_type: &str, category: Option<&str>) -> String {
    let total = total.to_string();
    let mut fields = vec![
        ("command", "INIT"),
        ("total_bytes", total.as_str()),
        ("media_type", media_type),
    ];
    if let Some(c) = category {
        fields.push(("media_category", c));
    }
    let r = v1_post(server, &fields, &[]);
    assert_eq!(r.status, 200, "{}", r.text());
    r.json()["media_id_string"].as_str().unwrap().to_owned()
}

/// v1.1 APPEND (M2), multipart.
fn v1_append(
    server: &Server,
    id: &str,
    index: usize,
    segment: &[u8],
    extra: &[(&str, &str)],
) -> Resp {
    v1_append_result(server, id, index, segment, extra).unwrap()
}

fn v1_append_result(
    server: &Server,
    id: &str,
    index: usize,
    segment: &[u8],
    extra: &[(&str, &str)],
) -> std::io::Result<Resp> {
    let index = index.to_string();
    let (content_type, body) = multipart(&[
        ("command", b"APPEND"),
        ("media_id", id.as_bytes()),
        ("segment_index", index.as_bytes()),
        ("media", segment),
    ]);
    let mut headers = vec![("Content-Type", content_type.as_str())];
    headers.extend_from_slice(extra);
    send(
        server.addr(),
        "POST",
        "/1.1/media/upload.json",
        &headers,
        &body,
    )
}

fn v1_finalize(server: &Server, id: &str, extra: &[(&str, &str)]) -> Resp {
    v1_post(server, &[("command", "FINALIZE"), ("media_id", id)], extra)
}

fn v1_status(server: &Server, id: &str, extra: &[(&str, &str)]) -> Resp {
    send(
        server.addr(),
        "GET",
        &format!("/1.1/media/upload.json?command=STATUS&media_id={id}"),
        extra,
        b"",
    )
    .unwrap()
}

fn v2_init(server: &Server, json: &str) -> Resp {
    send(
        server.addr(),
        "POST",
        "/2/media/upload/initialize",
        &[("Content-Type", "application/json")],
        json.as_bytes(),
    )
    .unwrap()
}

fn v2_append(server: &Server, id: &str, index: usize, segment: &[u8]) -> Resp {
    let index = index.to_string();
    let (content_type, body) =
        multipart(&[("segment_index", index.as_bytes()), ("media", segment)]);
    send(
        server.addr(),
        "POST",
        &format!("/2/media/upload/{id}/append"),
        &[("Content-Type", content_type.as_str())],
        &body,
    )
    .unwrap()
}

fn v2_finalize(server: &Server, id: &str, extra: &[(&str, &str)]) -> Resp {
    send(
        server.addr(),
        "POST",
        &format!("/2/media/upload/{id}/finalize"),
        extra,
        b"",
    )
    .unwrap()
}

fn v2_status(server: &Server, id: &str) -> Resp {
    send(
        server.addr(),
        "GET",
        &format!("/2/media/upload?command=STATUS&media_id={id}"),
        &[],
        b"",
    )
    .unwrap()
}

fn quick_processing() -> ServerConfig {
    ServerConfig {
        media_check_after_secs: 0,
        ..ServerConfig::default()
    }
}

#[test]
fn v1_init_answers_a_media_id_beyond_2_53_as_a_string() {
    // M1
    let server = common::server();
    let r = v1_post(
        &server,
        &[
            ("command", "INIT"),
            ("total_bytes", "10240"),
            ("media_type", "video/mp4"),
            ("media_category", "tweet_video"),
            ("additional_owners", "123,456"),
        ],
        &[],
    );
    assert_eq!(r.status, 200, "{}", r.text());
    let v = r.json();
    let id = v["media_id_string"].as_str().unwrap();
    let number = v["media_id"].as_u64().expect("an exact 64-bit number");
    assert!(number > 1 << 53, "{number}");
    assert_eq!(number.to_string(), id);
    // A float-only reader would lose it: the string is the one to use.
    assert_ne!((number as f64) as u64, number);
    assert_eq!(v["media_key"], format!("7_{id}"));
    assert_eq!(v["expires_after_secs"], 86_400);
    let info = server.media_info(id).unwrap();
    assert_eq!(info.api, ApiForm::V1_1);
    assert_eq!(info.total_bytes, 10_240);
    assert_eq!(info.media_type, "video/mp4");
    assert_eq!(info.media_category.as_deref(), Some("tweet_video"));
    assert_eq!(info.additional_owners, ["123", "456"]);
    assert!(!info.finalized && !info.gone);
    let log = server.request_log();
    assert_eq!(log[0].kind, RequestKind::MediaInit);
    assert_eq!(log[0].upload_id.as_deref(), Some(id));
    // The fields may come in the query (the seed's example), and as multipart.
    let r = send(
        server.addr(),
        "POST",
        "/1.1/media/upload.json?command=INIT&total_bytes=5&media_type=image%2Fgif",
        &[],
        b"",
    )
    .unwrap();
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(r.json()["media_key"].as_str().unwrap().starts_with("16_"));
    let (ct, body) = multipart(&[
        ("command", b"INIT"),
        ("total_bytes", b"5"),
        ("media_type", b"image/png"),
    ]);
    let r = send(
        server.addr(),
        "POST",
        "/1.1/media/upload.json",
        &[("Content-Type", &ct)],
        &body,
    )
    .unwrap();
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(r.json()["media_key"].as_str().unwrap().starts_with("3_"));
    assert_eq!(server.request_log()[2].kind, RequestKind::MediaInit);
    assert_eq!(server.all_media().len(), 3);
}

#[test]
fn v1_init_refuses_bad_fields_with_twitter_errors() {
    // M1, M5: `{"errors":[{"code","message"}]}`, 38 missing, 44 invalid.
    let server = common::server();
    for (fields, code) in [
        (vec![("command", "INIT"), ("media_type", "video/mp4")], 38),
        (
            vec![
                ("command", "INIT"),
                ("total_bytes", "x"),
                ("media_type", "a/b"),
            ],
            44,
        ),
        (
            vec![
                ("command", "INIT"),
                ("total_bytes", "0"),
                ("media_type", "a/b"),
            ],
            44,
        ),
        (
            vec![
                ("command", "INIT"),
                ("total_bytes", "5000000001"),
                ("media_type", "a/b"),
            ],
            44,
        ),
        (vec![("command", "INIT"), ("total_bytes", "5")], 38),
        (
            vec![
                ("command", "INIT"),
                ("total_bytes", "5"),
                ("media_type", "a/b"),
                ("additional_owners", "1,x"),
            ],
            44,
        ),
        (vec![("command", "init")], 44),
        (vec![("command", "NOPE")], 44),
        (vec![("total_bytes", "5")], 38),
    ] {
        let r = v1_post(&server, &fields, &[]);
        assert_eq!(r.status, 400, "{fields:?}: {}", r.text());
        let v = r.json();
        assert_eq!(v["errors"][0]["code"], code, "{fields:?}: {v}");
        assert!(v["errors"][0]["message"].is_string());
    }
    assert!(server.all_media().is_empty());
    // Unknown commands cannot be classified: media.other.
    assert!(
        server
            .request_log()
            .iter()
            .any(|e| e.kind == RequestKind::MediaOther)
    );
}

#[test]
fn v1_append_takes_multipart_or_base64_and_answers_204() {
    // M2: 204 without a body; segment_index 0..=999; at most 5,000,000 bytes; appending an
    // index again replaces it.
    let server = common::server();
    let src = data(30);
    let id = v1_init(&server, src.len(), "image/png", None);
    let r = v1_append(&server, &id, 0, &src[..10], &[]);
    assert_eq!(r.status, 204, "{}", r.text());
    assert!(r.body.is_empty());
    assert_eq!(
        r.header("content-length"),
        None,
        "a 204 has no Content-Length"
    );
    // media_data, base64, in a urlencoded form; and again in the query (the seed's example).
    use base64::Engine as _;
    let b64 = base64::engine::general_purpose::STANDARD.encode(&src[10..20]);
    let r = v1_post(
        &server,
        &[
            ("command", "APPEND"),
            ("media_id", &id),
            ("segment_index", "1"),
            ("media_data", &b64.replace('+', "%2B").replace('=', "%3D")),
        ],
        &[],
    );
    assert_eq!(r.status, 204, "{}", r.text());
    let wrong = v1_append(&server, &id, 2, b"wrong bytes", &[]);
    assert_eq!(wrong.status, 204);
    let b64 = base64::engine::general_purpose::STANDARD.encode(&src[20..]);
    let r = send(
        server.addr(),
        "POST",
        &format!(
            "/1.1/media/upload.json?command=APPEND&media_id={id}&segment_index=2&media_data={}",
            b64.replace('+', "%2B")
                .replace('=', "%3D")
                .replace('/', "%2F")
        ),
        &[],
        b"",
    )
    .unwrap();
    assert_eq!(r.status, 204, "{}", r.text());
    let info = server.media_info(&id).unwrap();
    assert_eq!(info.segments, 3);
    assert_eq!(info.appends.get(&2), Some(&2));
    let log = server.request_log();
    assert!(log[1..].iter().all(|e| e.kind == RequestKind::MediaAppend));
    assert!(log[1..].iter().all(|e| e.upload_id.as_deref() == Some(&id)));
    let f = v1_finalize(&server, &id, &[]);
    assert_eq!(f.status, 200, "{}", f.text());
    assert_eq!(server.media(&id).unwrap(), src);

    // Refusals.
    let id = v1_init(&server, 10_000_000, "video/mp4", None);
    let too_big = vec![7u8; 5_000_001];
    let r = v1_append(&server, &id, 0, &too_big, &[]);
    assert_eq!(r.status, 400);
    assert_eq!(r.json()["errors"][0]["code"], 44);
    assert_eq!(v1_append(&server, &id, 0, &too_big[1..], &[]).status, 204);
    assert_eq!(v1_append(&server, &id, 1000, b"x", &[]).status, 400);
    let (ct, body) = multipart(&[
        ("command", b"APPEND"),
        ("media_id", id.as_bytes()),
        ("media", b"x"),
    ]);
    let r = send(
        server.addr(),
        "POST",
        "/1.1/media/upload.json",
        &[("Content-Type", &ct)],
        &body,
    )
    .unwrap();
    assert_eq!(
        (r.status, r.json()["errors"][0]["code"].as_i64()),
        (400, Some(38))
    );
    let (ct, body) = multipart(&[
        ("command", b"APPEND"),
        ("media_id", id.as_bytes()),
        ("segment_index", b"0"),
    ]);
    let r = send(
        server.addr(),
        "POST",
        "/1.1/media/upload.json",
        &[("Content-Type", &ct)],
        &body,
    )
    .unwrap();
    assert_eq!(
        (r.status, r.json()["errors"][0]["code"].as_i64()),
        (400, Some(38))
    );
    // An unknown id answers Twitter's other error shape (M5).
    let r = v1_append(&server, "1234", 0, b"x", &[]);
    assert_eq!(r.status, 400);
    assert_eq!(r.json()["request"], "/1.1/media/upload.json");
    assert!(r.json()["error"].is_string());
    // Multipart without a boundary, or not framed by it.
    for (ct, body) in [
        ("multipart/form-data", &b"--x\r\n"[..]),
        ("multipart/form-data; boundary=zz", b"garbage"),
        ("text/plain", b"command=APPEND"),
    ] {
        let r = send(
            server.addr(),
            "POST",
            "/1.1/media/upload.json",
            &[("Content-Type", ct)],
            body,
        )
        .unwrap();
        assert_eq!(r.status, 400, "{ct}");
        assert!(r.json()["errors"][0]["message"].is_string());
    }
}

#[test]
fn v1_finalize_checks_the_segments_and_answers_the_media() {
    // M3, M5: segments 0..n without a gap adding up to total_bytes; FINALIZE again is the same.
    let server = common::server();
    let src = data(25);
    let id = v1_init(&server, src.len(), "video/mp4", None);
    v1_append(&server, &id, 0, &src[..10], &[]);
    v1_append(&server, &id, 2, &src[20..], &[]);
    let r = v1_finalize(&server, &id, &[]);
    assert_eq!(r.status, 400);
    let v = r.json();
    assert_eq!(v["errors"][0]["code"], 324);
    assert!(
        v["errors"][0]["message"]
            .as_str()
            .unwrap()
            .contains("segment 1 is missing"),
        "{v}"
    );
    v1_append(&server, &id, 1, &src[10..19], &[]);
    let r = v1_finalize(&server, &id, &[]);
    assert_eq!(r.status, 400);
    assert!(
        r.text().contains("24 bytes for total_bytes 25"),
        "{}",
        r.text()
    );
    v1_append(&server, &id, 1, &src[10..20], &[]);
    let r = v1_finalize(&server, &id, &[]);
    assert_eq!(r.status, 200, "{}", r.text());
    let v = r.json();
    assert_eq!(v["media_id_string"], id.as_str());
    assert_eq!(v["size"], 25);
    assert_eq!(v["video"]["video_type"], "video/mp4");
    assert!(
        v.get("processing_info").is_none(),
        "ready: no processing (M3)"
    );
    assert!(v["expires_after_secs"].as_u64().unwrap() <= 86_400);
    assert_eq!(server.media(&id).unwrap(), src);
    let info = server.media_info(&id).unwrap();
    assert!(info.finalized);
    assert_eq!(
        info.appends.values().copied().collect::<Vec<_>>(),
        [1, 2, 1]
    );
    // Again: the same answer; APPEND after FINALIZE is refused.
    let again = v1_finalize(&server, &id, &[]);
    assert_eq!(again.status, 200);
    assert_eq!(again.json()["size"], 25);
    assert_eq!(v1_append(&server, &id, 0, b"x", &[]).status, 400);
    // STATUS of a ready media: the media, without processing_info.
    let s = v1_status(&server, &id, &[]);
    assert_eq!(s.status, 200);
    assert!(s.json().get("processing_info").is_none());
    // STATUS is a GET; the others POSTs; STATUS before FINALIZE is refused.
    let id = v1_init(&server, 5, "video/mp4", None);
    assert_eq!(v1_status(&server, &id, &[]).status, 400);
    let r = v1_post(&server, &[("command", "STATUS"), ("media_id", &id)], &[]);
    assert_eq!(r.status, 400);
    let r = send(
        server.addr(),
        "GET",
        &format!("/1.1/media/upload.json?command=FINALIZE&media_id={id}"),
        &[],
        b"",
    )
    .unwrap();
    assert_eq!(r.status, 400);
    assert_eq!(
        send(server.addr(), "PUT", "/1.1/media/upload.json", &[], b"")
            .unwrap()
            .status,
        405
    );
}

#[test]
fn processing_takes_several_status_polls_then_succeeds() {
    // M3, M4: a processing category answers pending, then in_progress with progress, then
    // succeeded after K polls (configurable); later polls repeat it.
    let server = server_with(ServerConfig {
        media_processing_polls: 4,
        media_check_after_secs: 2,
        ..ServerConfig::default()
    });
    let src = data(10);
    let id = v1_init(&server, src.len(), "video/mp4", Some("tweet_video"));
    v1_append(&server, &id, 0, &src, &[]);
    let f = v1_finalize(&server, &id, &[]).json();
    assert_eq!(
        f["processing_info"],
        serde_json::json!({"state": "pending", "check_after_secs": 2})
    );
    assert_eq!(
        server.media_info(&id).unwrap().processing,
        Some(ProcessingState::Pending)
    );
    let mut seen = Vec::new();
    for _ in 0..5 {
        let s = v1_status(&server, &id, &[]);
        assert_eq!(s.status, 200);
        let p = s.json()["processing_info"].clone();
        seen.push((
            p["state"].as_str().unwrap().to_owned(),
            p["progress_percent"].as_u64(),
        ));
    }
    assert_eq!(
        seen,
        [
            ("in_progress".to_owned(), Some(25)),
            ("in_progress".to_owned(), Some(50)),
            ("in_progress".to_owned(), Some(75)),
            ("succeeded".to_owned(), Some(100)),
            ("succeeded".to_owned(), Some(100)),
        ]
    );
    let info = server.media_info(&id).unwrap();
    assert_eq!(info.processing, Some(ProcessingState::Succeeded));
    assert_eq!(info.status_polls, 4);
    assert!(
        server
            .request_log()
            .iter()
            .filter(|e| e.kind == RequestKind::MediaStatus)
            .count()
            == 5
    );
    // Without a processing category, no processing; a fault asks for it, or turns it off.
    let id = v1_init(&server, 1, "image/png", None);
    v1_append(&server, &id, 0, b"x", &[]);
    let f = v1_finalize(&server, &id, &[("x-resumable-fault", "process:1")]).json();
    assert_eq!(f["processing_info"]["state"], "pending");
    assert_eq!(
        v1_status(&server, &id, &[]).json()["processing_info"]["state"],
        "succeeded"
    );
    let id = v1_init(&server, 1, "video/mp4", Some("tweet_video"));
    v1_append(&server, &id, 0, b"x", &[]);
    let f = v1_finalize(&server, &id, &[("x-resumable-fault", "process:0")]).json();
    assert!(f.get("processing_info").is_none(), "{f}");
}

#[test]
fn processing_faults_fail_or_error_while_in_progress() {
    // M4: `failed` with an error object; an error object while `in_progress` (terminal).
    let server = server_with(quick_processing());
    let finalize_with = |fault: &str| {
        let id = v1_init(&server, 1, "video/mp4", Some("tweet_video"));
        v1_append(&server, &id, 0, b"x", &[]);
        let f = v1_finalize(&server, &id, &[("x-resumable-fault", fault)]);
        (id, f.json())
    };
    // Fails when it would have succeeded (poll 3).
    let (id, f) = finalize_with("fail-processing");
    assert_eq!(f["processing_info"]["state"], "pending");
    let states: Vec<String> = (0..3)
        .map(|_| {
            v1_status(&server, &id, &[]).json()["processing_info"]["state"]
                .as_str()
                .unwrap()
                .to_owned()
        })
        .collect();
    assert_eq!(states, ["in_progress", "in_progress", "failed"]);
    let last = v1_status(&server, &id, &[]).json();
    let error = &last["processing_info"]["error"];
    assert_eq!(error["code"], 1);
    assert_eq!(error["name"], "InvalidMedia");
    assert!(error["message"].is_string());
    assert_eq!(
        server.media_info(&id).unwrap().processing,
        Some(ProcessingState::Failed)
    );
    // FINALIZE itself answers failed.
    let (_, f) = finalize_with("fail-processing:0");
    assert_eq!(f["processing_info"]["state"], "failed");
    // An error while in_progress, at the first poll.
    let (id, _) = finalize_with("error-in-progress:1");
    let p = v1_status(&server, &id, &[]).json()["processing_info"].clone();
    assert_eq!(p["state"], "in_progress");
    assert_eq!(p["error"]["name"], "InvalidMedia");
    // A fault on STATUS decides from there: this answer (K = 0).
    let (id, _) = finalize_with("process:5");
    assert_eq!(
        v1_status(&server, &id, &[]).json()["processing_info"]["progress_percent"],
        20
    );
    let p = v1_status(&server, &id, &[("x-resumable-fault", "fail-processing:0")]).json();
    assert_eq!(p["processing_info"]["state"], "failed");
}

#[test]
fn v2_speaks_json_paths_and_data_wrapped_answers() {
    // M6
    let server = server_with(quick_processing());
    let src = data(12);
    let r = v2_init(
        &server,
        &format!(
            r#"{{"total_bytes":{},"media_type":"video/mp4","media_category":"amplify_video","additional_owners":["42"],"shared":true}}"#,
            src.len()
        ),
    );
    assert_eq!(r.status, 200, "{}", r.text());
    let v = r.json();
    let id = v["data"]["id"].as_str().unwrap().to_owned();
    assert!(id.parse::<u64>().unwrap() > 1 << 53);
    assert_eq!(v["data"]["media_key"], format!("7_{id}"));
    assert_eq!(v["data"]["expires_after_secs"], 86_400);
    let info = server.media_info(&id).unwrap();
    assert_eq!(info.api, ApiForm::V2);
    assert!(info.shared);
    assert_eq!(info.additional_owners, ["42"]);
    let a = v2_append(&server, &id, 0, &src[..6]);
    assert_eq!(a.status, 200, "{}", a.text());
    let expires_at = a.json()["data"]["expires_at"].as_u64().unwrap();
    let now = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    assert!(
        expires_at > now + 86_000 && expires_at <= now + 86_401,
        "{expires_at}"
    );
    v2_append(&server, &id, 1, &src[6..]);
    let f = v2_finalize(&server, &id, &[]);
    assert_eq!(f.status, 200, "{}", f.text());
    let d = &f.json()["data"];
    assert_eq!(d["id"], id.as_str());
    assert_eq!(d["size"], 12);
    assert_eq!(d["processing_info"]["state"], "pending");
    for want in ["in_progress", "in_progress", "succeeded"] {
        let s = v2_status(&server, &id);
        assert_eq!(s.status, 200);
        assert_eq!(s.json()["data"]["processing_info"]["state"], want);
        assert_eq!(s.json()["data"]["id"], id.as_str());
    }
    assert_eq!(server.media(&id).unwrap(), src);
    let kinds: Vec<RequestKind> = server.request_log().iter().map(|e| e.kind).collect();
    assert_eq!(
        &kinds[..4],
        [
            RequestKind::MediaInit,
            RequestKind::MediaAppend,
            RequestKind::MediaAppend,
            RequestKind::MediaFinalize
        ]
    );
    assert_eq!(kinds[4], RequestKind::MediaStatus);

    // v1.1-style commands on POST /2/media/upload answer v2-style.
    let r = send(
        server.addr(),
        "POST",
        "/2/media/upload",
        &[("Content-Type", URLENCODED)],
        b"command=INIT&total_bytes=3&media_type=image%2Fpng",
    )
    .unwrap();
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(r.json()["data"]["id"].is_string());
}

#[test]
fn v2_errors_are_rfc_7807_problems() {
    // M5, M6
    let server = common::server();
    for (body, field) in [
        (r#"{"media_type":"video/mp4"}"#, "total_bytes"),
        (
            r#"{"total_bytes":"5","media_type":"video/mp4"}"#,
            "total_bytes",
        ),
        (r#"{"total_bytes":5}"#, "media_type"),
        (
            r#"{"total_bytes":5,"media_type":"a/b","additional_owners":"1,2"}"#,
            "additional_owners",
        ),
        (
            r#"{"total_bytes":5,"media_type":"a/b","additional_owners":[1]}"#,
            "additional_owners",
        ),
        (
            r#"{"total_bytes":5,"media_type":"a/b","shared":"yes"}"#,
            "shared",
        ),
        ("[1]", "JSON object"),
        ("{", "JSON object"),
    ] {
        let r = v2_init(&server, body);
        assert_eq!(r.status, 400, "{body}");
        let v = r.json();
        assert_eq!(v["status"], 400);
        assert_eq!(
            v["type"],
            "https://api.twitter.com/2/problems/invalid-request"
        );
        assert_eq!(v["title"], "Invalid Request");
        assert!(v["detail"].as_str().unwrap().contains(field), "{body}: {v}");
    }
    let r = v2_append(&server, "1234", 0, b"x");
    assert_eq!(r.status, 400);
    assert!(r.json()["detail"].is_string());
    let id = v2_init(&server, r#"{"total_bytes":2,"media_type":"image/png"}"#).json()["data"]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    v2_append(&server, &id, 0, b"x");
    let r = v2_finalize(&server, &id, &[]);
    assert_eq!(r.status, 400);
    assert!(
        r.json()["detail"]
            .as_str()
            .unwrap()
            .contains("Segments do not add up")
    );
    assert_eq!(
        send(server.addr(), "GET", "/2/media/upload/initialize", &[], b"")
            .unwrap()
            .status,
        405
    );
    assert_eq!(
        send(server.addr(), "POST", "/2/media/upload/1/other", &[], b"")
            .unwrap()
            .status,
        404
    );
}

#[test]
fn rate_limits_carry_the_reset_and_a_date() {
    // M5: 429 with x-rate-limit-reset (epoch seconds), Retry-After and Date, in each shape.
    let server = common::server();
    let r = v1_post(
        &server,
        &[
            ("command", "INIT"),
            ("total_bytes", "5"),
            ("media_type", "a/b"),
        ],
        &[("x-resumable-fault", "status:429,retry-after:7")],
    );
    assert_eq!(r.status, 429);
    let now = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let reset: u64 = r.header("x-rate-limit-reset").unwrap().parse().unwrap();
    assert!(reset >= now + 6 && reset <= now + 7, "{reset} vs {now}");
    assert_eq!(r.header("retry-after"), Some("7"));
    assert_eq!(r.header("x-rate-limit-remaining"), Some("0"));
    let date = httpdate::parse_http_date(r.header("date").unwrap()).unwrap();
    assert!(date <= SystemTime::now());
    assert_eq!(r.json()["errors"][0]["code"], 88);
    assert!(server.all_media().is_empty(), "nothing was created");
    let r = send(
        server.addr(),
        "POST",
        "/2/media/upload/initialize",
        &[
            ("Content-Type", "application/json"),
            ("x-resumable-fault", "status:429"),
        ],
        br#"{"total_bytes":5,"media_type":"a/b"}"#,
    )
    .unwrap();
    assert_eq!(r.status, 429);
    assert!(r.header("x-rate-limit-reset").is_some());
    assert_eq!(r.json()["title"], "Too Many Requests");
    assert_eq!(r.json()["status"], 429);
    let r = v1_post(
        &server,
        &[
            ("command", "INIT"),
            ("total_bytes", "5"),
            ("media_type", "a/b"),
        ],
        &[("x-resumable-fault", "status:503")],
    );
    assert_eq!(
        (r.status, r.json()["errors"][0]["code"].as_i64()),
        (503, Some(131))
    );
}

#[test]
fn media_ids_expire() {
    // M5: after expires_after_secs (here 300 ms), by the expire fault, or by inspection.
    let server = server_with(ServerConfig {
        media_expires_after: Duration::from_millis(300),
        ..ServerConfig::default()
    });
    let id = v1_init(&server, 2, "image/png", None);
    assert_eq!(v1_append(&server, &id, 0, b"a", &[]).status, 204);
    std::thread::sleep(Duration::from_millis(400));
    let r = v1_append(&server, &id, 1, b"b", &[]);
    assert_eq!(r.status, 400);
    assert!(r.json()["error"].as_str().unwrap().contains("expired"));
    assert!(server.media_info(&id).unwrap().gone);

    let server = common::server();
    let id = v1_init(&server, 2, "image/png", None);
    let r = v1_append(&server, &id, 0, b"a", &[("x-resumable-fault", "expire")]);
    assert_eq!(r.status, 400);
    assert_eq!(v1_finalize(&server, &id, &[]).status, 400);
    let id = v1_init(&server, 1, "image/png", None);
    v1_append(&server, &id, 0, b"a", &[]);
    assert!(server.expire_media(&id));
    assert_eq!(v1_finalize(&server, &id, &[]).status, 400);
    assert!(server.remove_media(&id));
    assert!(server.media_info(&id).is_none());
}

#[test]
fn drop_after_and_persist_on_appends() {
    // M2: a cut APPEND stores nothing; a whole one whose answer is lost is stored; persist
    // keeps a prefix silently, so FINALIZE finds the segments short.
    let server = common::server();
    let src = data(200_000);
    let id = v1_init(&server, src.len(), "video/mp4", None);
    let r = v1_append_result(
        &server,
        &id,
        0,
        &src[..100_000],
        &[("x-resumable-fault", "drop-after:50000")],
    );
    assert!(r.is_err(), "no answer");
    let info = server.media_info(&id).unwrap();
    assert!(info.appends.is_empty(), "a cut segment is not stored");
    assert_eq!(info.body_bytes_received, 50_000);
    let last = server.request_log().pop().unwrap();
    assert_eq!((last.kind, last.status), (RequestKind::MediaAppend, None));
    let r = v1_append_result(
        &server,
        &id,
        0,
        &src[..100_000],
        &[("x-resumable-fault", "drop-after:10m")],
    );
    assert!(r.is_err(), "handled, but no answer");
    assert_eq!(server.media_info(&id).unwrap().appends.get(&0), Some(&1));
    let r = v1_append(
        &server,
        &id,
        1,
        &src[100_000..],
        &[("x-resumable-fault", "persist:10")],
    );
    assert_eq!(r.status, 204, "success all the same (M2)");
    let f = v1_finalize(&server, &id, &[]);
    assert_eq!(f.status, 400);
    assert_eq!(f.json()["errors"][0]["code"], 324);
    v1_append(&server, &id, 1, &src[100_000..], &[]);
    assert_eq!(v1_finalize(&server, &id, &[]).status, 200);
    assert_eq!(server.media(&id).unwrap(), src);
}

#[test]
fn scripts_select_media_requests_by_kind_and_per_media_id() {
    // M1–M4: server scripts count media kinds over both APIs; a session script (header on
    // INIT) counts its own media id's requests only, and the header on later requests is
    // ignored.
    let server =
        scripted("media.append#2=status:503; media.finalize#1=status:500; media#1=stall:1ms");
    let id = v1_init(&server, 2, "image/png", None);
    assert_eq!(v1_append(&server, &id, 0, b"a", &[]).status, 204);
    assert_eq!(v1_append(&server, &id, 1, b"b", &[]).status, 503);
    assert_eq!(v1_append(&server, &id, 1, b"b", &[]).status, 204);
    assert_eq!(v1_finalize(&server, &id, &[]).status, 500);
    assert_eq!(v1_finalize(&server, &id, &[]).status, 200);
    let faults: Vec<String> = server
        .request_log()
        .iter()
        .map(|e| e.faults.clone())
        .collect();
    assert_eq!(
        faults,
        ["stall:1ms", "", "status:503", "", "status:500", ""]
    );

    let server = common::server();
    let script = [("x-resumable-session-faults", "media.append#2=status:503")];
    let r = v1_post(
        &server,
        &[
            ("command", "INIT"),
            ("total_bytes", "3"),
            ("media_type", "image/png"),
        ],
        &script,
    );
    let scripted_id = r.json()["media_id_string"].as_str().unwrap().to_owned();
    let other = v1_init(&server, 3, "image/png", None);
    assert_eq!(v1_append(&server, &other, 0, b"a", &[]).status, 204);
    assert_eq!(v1_append(&server, &other, 1, b"b", &[]).status, 204);
    assert_eq!(
        v1_append(&server, &scripted_id, 0, b"a", &script).status,
        204
    );
    assert_eq!(
        v1_append(&server, &scripted_id, 1, b"b", &script).status,
        503
    );
    assert_eq!(
        v1_append(&server, &scripted_id, 1, b"b", &script).status,
        204
    );
    assert_eq!(server.media_info(&scripted_id).unwrap().requests, 3);
    let bad = v1_post(
        &server,
        &[
            ("command", "INIT"),
            ("total_bytes", "3"),
            ("media_type", "image/png"),
        ],
        &[("x-resumable-session-faults", "nope")],
    );
    assert_eq!(bad.status, 400);
    // Chunked framing hides the command until the body is read: media.other, still handled.
    let r = send(
        server.addr(),
        "POST",
        "/1.1/media/upload.json",
        &[
            ("Content-Type", URLENCODED),
            ("Transfer-Encoding", "chunked"),
        ],
        format!("{:x}\r\n{INIT3}\r\n0\r\n\r\n", INIT3.len()).as_bytes(),
    )
    .unwrap();
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(
        server.request_log().last().unwrap().kind,
        RequestKind::MediaOther
    );
}

#[test]
fn hostile_input_is_answered_not_panicked_on() {
    // Robustness: malformed forms and fields are 4xx; a body too large is 413; the server
    // stays up.
    let server = server_with(ServerConfig {
        media_max_segment: 1000,
        ..ServerConfig::default()
    });
    let id = v1_init(&server, 10, "image/png", None);
    let cases: Vec<(&str, Vec<u8>)> = vec![
        (
            "multipart/form-data; boundary=\"unterminated",
            b"--x".to_vec(),
        ),
        (
            "multipart/form-data; boundary=b",
            b"--b\r\nContent-Disposition: form-data\r\n\r\nx\r\n--b--".to_vec(),
        ),
        (
            "multipart/form-data; boundary=b",
            [b"--b\r\n".as_slice(), &[b'a'; 10_000]].concat(),
        ),
        (
            "application/x-www-form-urlencoded",
            b"command=APPEND&media_id=%zz".to_vec(),
        ),
        ("application/x-www-form-urlencoded", b"\xff\xfe".to_vec()),
        (
            "application/x-www-form-urlencoded",
            format!(
                "command=APPEND&media_id={id}&segment_index=99999999999999999999999&media_data=eA=="
            )
            .into_bytes(),
        ),
        (
            "application/x-www-form-urlencoded",
            format!("command=APPEND&media_id={id}&segment_index=0&media_data=!!!").into_bytes(),
        ),
        ("application/json", b"{\"command\":\"INIT\"}".to_vec()),
    ];
    for (ct, body) in cases {
        let r = send(
            server.addr(),
            "POST",
            "/1.1/media/upload.json",
            &[("Content-Type", ct)],
            &body,
        )
        .unwrap();
        assert!(
            (400..500).contains(&r.status),
            "{ct} {:?}: {}",
            String::from_utf8_lossy(&body[..body.len().min(40)]),
            r.status
        );
    }
    // A text field over 4 KiB in a multipart form.
    let long = vec![b'1'; 5000];
    let (ct, body) = multipart(&[("command", b"APPEND"), ("media_id", &long)]);
    let r = send(
        server.addr(),
        "POST",
        "/1.1/media/upload.json",
        &[("Content-Type", &ct)],
        &body,
    )
    .unwrap();
    assert_eq!(r.status, 400);
    // Larger than any segment could need: 413, answered without reading it all.
    let mut conn = Conn::open(server.addr());
    conn.write_request(
        "POST",
        "/1.1/media/upload.json",
        &[
            ("Content-Type", "multipart/form-data; boundary=b"),
            ("Content-Length", "100000000"),
        ],
        b"--b\r\n",
    )
    .unwrap();
    assert_eq!(conn.read_response().unwrap().status, 413);
    assert_eq!(
        send(server.addr(), "GET", "/", &[], b"").unwrap().status,
        200
    );
    assert_eq!(server.media_info(&id).unwrap().segments, 0);
}

// ---- the core's MediaUpload against this server ----

const SIZE: usize = 350_007;
const SEGMENT: u64 = 100_000;

fn apis(server: &Server) -> [ApiVersion; 2] {
    [
        ApiVersion::V1_1 {
            endpoint: server.media_v1_url().parse().unwrap(),
        },
        ApiVersion::V2 {
            base: server.media_v2_base().parse().unwrap(),
        },
    ]
}

fn media_config(api: ApiVersion, category: Option<&str>) -> MediaConfig {
    let mut c = MediaConfig::new(api, SIZE as u64, "video/mp4");
    c.segment_size = SEGMENT;
    c.media_category = category.map(str::to_owned);
    c.retry = fast_retries();
    c
}

fn core_upload(config: MediaConfig, src: &[u8]) -> Result<MediaCompletion, Error> {
    let mut upload = MediaUpload::new(config).unwrap();
    core_drive(&mut upload, src)
}

#[test]
fn the_core_uploads_in_both_api_forms() {
    // M1–M4, M6: byte-identical media, each segment sent once, processing followed to the end.
    let src = data(SIZE);
    let server = server_with(quick_processing());
    for api in apis(&server) {
        let form = api.form();
        let done = core_upload(media_config(api.clone(), None), &src).unwrap();
        assert_eq!(server.media(&done.media_id).unwrap(), src, "{form:?}");
        assert!(done.processing.is_none(), "{form:?}");
        let info = server.media_info(&done.media_id).unwrap();
        assert_eq!(info.api, form);
        assert_eq!(info.segments, 4);
        assert!(
            info.appends.values().all(|n| *n == 1),
            "{form:?}: nothing sent twice"
        );
        assert_eq!(done.media_key.as_deref(), Some(info.media_key.as_str()));

        let mut upload = MediaUpload::new(media_config(api, Some("tweet_video"))).unwrap();
        let done = core_drive(&mut upload, &src).unwrap();
        assert_eq!(server.media(&done.media_id).unwrap(), src);
        let p = done.processing.expect("asynchronous processing");
        assert_eq!(p.state, ProcessingState::Succeeded);
        assert_eq!(upload.stats().status_polls, 3, "{form:?}");
        assert_eq!(server.media_info(&done.media_id).unwrap().status_polls, 3);
    }
}

#[test]
fn every_recoverable_fault_ends_byte_identical() {
    // M2, M3, M4, M5: retried requests (an APPEND with the same segment_index), in both forms.
    let src = data(SIZE);
    // (spec, category, appends of segment 1 accepted)
    let cases: &[(&str, Option<&str>, u32)] = &[
        ("media.append#2=drop-after:1000", None, 1),
        ("media.append#2=drop-after:10m", None, 2),
        ("media.append#2=status:503x2,retry-after:0", None, 1),
        ("media.append#2=status:429,retry-after:0", None, 1),
        ("media.append#2=truncate", None, 2),
        ("media.append#2=stall:50ms", None, 1),
        ("media.init#1=status:500", None, 1),
        ("media.init#1=drop-after:10m", None, 1),
        ("media.finalize#1=drop-after:10m", None, 1),
        ("media.finalize#1=status:503", Some("tweet_video"), 1),
        ("media.status#2=status:503", Some("tweet_video"), 1),
        ("media.status#1=truncate", Some("tweet_video"), 1),
        ("media.status#1=process:1", Some("tweet_video"), 1),
    ];
    for (spec, category, appends) in cases {
        let server = server_with(ServerConfig {
            faults: resumable_server::FaultScript::parse(spec).unwrap(),
            ..quick_processing()
        });
        for api in apis(&server) {
            let form = api.form();
            let done = core_upload(media_config(api, *category), &src)
                .unwrap_or_else(|e| panic!("{spec} {form:?}: {e}"));
            assert_eq!(
                server.media(&done.media_id).unwrap(),
                src,
                "{spec} {form:?}"
            );
            let info = server.media_info(&done.media_id).unwrap();
            // Server-wide ordinals: only the first upload meets the fault.
            if form == ApiForm::V1_1 {
                assert_eq!(info.appends.get(&1), Some(appends), "{spec}");
            }
        }
    }
}

#[test]
fn unrecoverable_faults_end_with_the_typed_error() {
    // M4, M5: failed processing, errors in progress, short segments, expired ids and
    // refusals are typed errors, in both forms.
    let src = data(SIZE);
    let run = |spec: &str, api_v2: bool, category: Option<&str>| {
        let server = server_with(ServerConfig {
            faults: resumable_server::FaultScript::parse(spec).unwrap(),
            ..quick_processing()
        });
        let api = apis(&server)[usize::from(api_v2)].clone();
        core_upload(media_config(api, category), &src).unwrap_err()
    };
    for v2 in [false, true] {
        let e = run("media.finalize=fail-processing", v2, Some("tweet_video"));
        assert!(
            matches!(&e, Error::ProcessingFailed { code: Some(1), name: Some(n), message: Some(_) } if n == "InvalidMedia"),
            "{e:?}"
        );
        assert!(matches!(
            run("media.finalize=fail-processing:0", v2, None),
            Error::ProcessingFailed { .. }
        ));
        assert!(matches!(
            run(
                "media.status#2=error-in-progress:0",
                v2,
                Some("tweet_video")
            ),
            Error::ProcessingFailed { code: Some(1), .. }
        ));
        let e = run("media.append#1=persist:10", v2, None);
        match (&e, v2) {
            (
                Error::Api {
                    status,
                    code: Some(324),
                    problem: None,
                    ..
                },
                false,
            ) => {
                assert_eq!(*status, 400)
            }
            (
                Error::Api {
                    status,
                    problem: Some(p),
                    ..
                },
                true,
            ) => {
                assert_eq!(*status, 400);
                assert!(p.ends_with("invalid-request"), "{p}");
            }
            _ => panic!("{e:?}"),
        }
        assert!(
            matches!(run("media.append#2=expire", v2, None), Error::Api { status, .. } if status == 400)
        );
        assert!(matches!(
            run("media.append=status:503", v2, None),
            Error::RetriesExhausted { .. }
        ));
        let e = run("media.init=status:400", v2, None);
        assert!(
            matches!(&e, Error::Api { status, .. } if *status == 400),
            "{e:?}"
        );
    }
}

#[test]
fn slow_processing_and_short_lived_ids_end_typed() {
    // M4: more "still processing" answers than the client allows; M5: a media id that would
    // expire before the next STATUS is due.
    let src = data(SIZE);
    let server = server_with(ServerConfig {
        media_processing_polls: 5,
        ..quick_processing()
    });
    let mut config = media_config(apis(&server)[0].clone(), Some("tweet_video"));
    config.max_status_polls = 2;
    assert!(matches!(
        core_upload(config, &src),
        Err(Error::ProcessingUnfinished { polls: 2 })
    ));
    let server = server_with(ServerConfig {
        media_expires_after: Duration::from_secs(2),
        media_check_after_secs: 3,
        ..ServerConfig::default()
    });
    for api in apis(&server) {
        // The server's answers count its expiry down (M5: each moves the deadline), so the
        // last one gave at most the 2 s INIT did.
        assert!(matches!(
            core_upload(media_config(api, Some("tweet_video")), &src),
            Err(Error::MediaExpired { after_secs }) if after_secs <= 2
        ));
    }
}

#[test]
fn a_session_script_in_the_core_headers_hits_only_its_media() {
    // M2: the header rides on every request of the core; the server attaches it at INIT.
    let src = data(SIZE);
    let server = common::server();
    let api = apis(&server)[0].clone();
    let mut config = media_config(api.clone(), None);
    config.headers.insert(
        "x-resumable-session-faults",
        "media.append#2=drop-after:10m".parse().unwrap(),
    );
    let scripted_done = core_upload(config, &src).unwrap();
    let plain_done = core_upload(media_config(api, None), &src).unwrap();
    let scripted_info = server.media_info(&scripted_done.media_id).unwrap();
    let plain_info = server.media_info(&plain_done.media_id).unwrap();
    assert_eq!(scripted_info.appends.get(&1), Some(&2));
    assert_eq!(plain_info.appends.get(&1), Some(&1));
    assert_eq!(server.media(&scripted_done.media_id).unwrap(), src);
    assert_eq!(server.media(&plain_done.media_id).unwrap(), src);
}

#[test]
fn appends_in_flight_arriving_out_of_order_assemble_by_index() {
    // M2: the core hands out up to three APPENDs at once; the server gets them in reverse
    // order and assembles the media by segment_index.
    use resumable_core::{Action, Transmit, Upload};
    use std::time::Instant;
    let src = data(SIZE);
    let server = common::server();
    for api in apis(&server) {
        let mut config = media_config(api, None);
        config.max_in_flight = 3;
        let mut upload = MediaUpload::new(config).unwrap();
        let mut reordered = false;
        let outcome = 'run: loop {
            // Poll until the core has nothing more to hand out (saturated) or waits.
            let mut batch: Vec<Transmit> = Vec::new();
            loop {
                match upload.poll_action(Instant::now()) {
                    Action::Idle => break,
                    Action::Send(s) => {
                        let append = s.request.uri().path().ends_with("/append")
                            || s.body.source.end > s.body.source.start;
                        batch.push(s);
                        if !append {
                            break;
                        }
                    }
                    Action::Wait(until) => {
                        std::thread::sleep(until.saturating_duration_since(Instant::now()));
                        break;
                    }
                    Action::Done(outcome) => break 'run outcome,
                    Action::Read(_) => unreachable!("media never reads"),
                }
            }
            reordered |= batch.len() > 1;
            for s in batch.iter().rev() {
                match core_send(s, &src) {
                    Ok(r) => upload.handle_response(Instant::now(), s.id, r).unwrap(),
                    Err(f) => upload.handle_failure(Instant::now(), s.id, f).unwrap(),
                }
            }
        };
        assert!(reordered, "several APPENDs were in flight");
        let done = outcome.unwrap();
        assert_eq!(server.media(&done.media_id).unwrap(), src);
        let info = server.media_info(&done.media_id).unwrap();
        assert!(info.appends.values().all(|n| *n == 1), "{:?}", info.appends);
    }
}

#[test]
fn a_crashed_client_resumes_its_media_id() {
    // M2 and the resume state: after two acknowledged APPENDs the client dies; a new one
    // continues the same media id with the next segment, sending nothing twice.
    use resumable_core::{Action, Upload};
    use std::time::Instant;
    let src = data(SIZE);
    let server = common::server();
    for api in apis(&server) {
        let mut upload = MediaUpload::new(media_config(api.clone(), None)).unwrap();
        let mut state = None;
        while upload.persisted() < 2 * SEGMENT {
            match upload.poll_action(Instant::now()) {
                Action::Send(send) => {
                    let r = core_send(&send, &src).unwrap();
                    upload.handle_response(Instant::now(), send.id, r).unwrap();
                    state = upload.resume_state();
                }
                other => panic!("{other:?}"),
            }
        }
        drop(upload);
        let state = state.expect("a saved state");
        assert_eq!(state.next_segment, 2);
        let mut upload = MediaUpload::resume(media_config(api, None), state).unwrap();
        let done = core_drive(&mut upload, &src).unwrap();
        assert_eq!(server.media(&done.media_id).unwrap(), src);
        let info = server.media_info(&done.media_id).unwrap();
        assert_eq!(
            info.appends.values().copied().collect::<Vec<_>>(),
            [1, 1, 1, 1]
        );
    }
}
