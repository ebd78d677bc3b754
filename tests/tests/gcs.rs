//! The GCS server side, rule by rule (G1–G12), with a raw HTTP client.

mod common;

use std::time::Duration;

use common::*;
use md5::Digest as _;
use resumable_core::checksum;
use resumable_server::{GcsApi, ServerConfig};

fn crc(bytes: &[u8]) -> u32 {
    crc32c::crc32c(bytes)
}

fn md5_of(bytes: &[u8]) -> [u8; 16] {
    md5::Md5::digest(bytes).into()
}

#[test]
fn xml_start_answers_201_with_a_session_uri() {
    // G1
    let server = server();
    let url = server.gcs_xml_url("bucket", "dir/ids.txt");
    assert!(url.contains("X-Goog-Signature="), "{url}");
    let r = send(
        server.addr(),
        "POST",
        &target(&url),
        &[
            ("x-goog-resumable", "start"),
            ("Content-Type", "text/plain"),
        ],
        b"",
    )
    .unwrap();
    assert_eq!(r.status, 201);
    let location = r.header("location").unwrap();
    let prefix = format!(
        "{}/upload/storage/v1/b/bucket/o?uploadType=resumable&upload_id=",
        server.base_url()
    );
    assert!(location.starts_with(&prefix), "{location}");
    let id = &location[prefix.len()..];
    assert_eq!(r.header("x-guploader-uploadid"), Some(id));
    let info = server.session(location).unwrap();
    assert_eq!(info.upload_id, id);
    assert_eq!(info.api, GcsApi::Xml);
    assert_eq!(
        (info.bucket.as_str(), info.object.as_str()),
        ("bucket", "dir/ids.txt")
    );
    assert_eq!(info.stored, 0);
}

#[test]
fn xml_start_checks_the_signed_url_headers() {
    // G1: the signed headers must be sent, Authorization must not, x-goog-resumable: start.
    let server = server();
    let t = target(&server.gcs_xml_url("b", "o"));
    let no_resumable = send(
        server.addr(),
        "POST",
        &t,
        &[("Content-Type", "text/plain")],
        b"",
    );
    assert_eq!(no_resumable.unwrap().status, 400);
    let with_auth = send(
        server.addr(),
        "POST",
        &t,
        &[
            ("x-goog-resumable", "start"),
            ("Content-Type", "text/plain"),
            ("Authorization", "Bearer t"),
        ],
        b"",
    )
    .unwrap();
    assert_eq!(with_auth.status, 400);
    assert!(with_auth.text().contains("<Error>"), "{}", with_auth.text());
    let unsigned_type = send(
        server.addr(),
        "POST",
        &t,
        &[("x-goog-resumable", "start")],
        b"",
    );
    assert_eq!(unsigned_type.unwrap().status, 403);
    assert!(server.sessions().is_empty());
}

#[test]
fn json_start_answers_200_and_records_the_declared_length() {
    // G2
    let server = server();
    let r = send(
        server.addr(),
        "POST",
        &target(&server.gcs_json_url("bkt", "a b.bin")),
        &[
            ("Authorization", "Bearer token"),
            ("X-Upload-Content-Type", "image/png"),
            ("X-Upload-Content-Length", "1000"),
        ],
        b"",
    )
    .unwrap();
    assert_eq!(r.status, 200);
    let location = r.header("location").unwrap();
    assert!(location.contains("/upload/storage/v1/b/bkt/o?uploadType=resumable&upload_id="));
    let info = server.session(location).unwrap();
    assert_eq!(info.object, "a b.bin");
    assert_eq!(info.api, GcsApi::Json);
    assert_eq!(info.declared_length, Some(1000));
    assert!(server.request_log()[0].authorization);
}

#[test]
fn json_start_takes_the_name_from_metadata_and_rejects_bad_input() {
    // G2: optional JSON metadata body; name required; numeric X-Upload-Content-Length.
    let server = server();
    let t = "/upload/storage/v1/b/bkt/o?uploadType=resumable";
    let meta = br#"{"name":"from-meta.txt","contentType":"text/plain","metadata":{"k":"v"}}"#;
    let r = send(
        server.addr(),
        "POST",
        t,
        &[("Content-Type", "application/json; charset=UTF-8")],
        meta,
    )
    .unwrap();
    assert_eq!(r.status, 200, "{}", r.text());
    let session = target(r.header("location").unwrap());
    let done = send(
        server.addr(),
        "PUT",
        &session,
        &[("Content-Range", "bytes 0-2/3")],
        b"abc",
    )
    .unwrap();
    assert_eq!(done.status, 200);
    let v = done.json();
    assert_eq!(v["name"], "from-meta.txt");
    assert_eq!(v["contentType"], "text/plain");
    assert_eq!(v["metadata"]["k"], "v");

    for (headers, body, status) in [
        (vec![], &b""[..], 400),      // no name
        (vec![], &b"[1,2]"[..], 400), // not an object
        (vec![], &b"{"[..], 400),     // not JSON
        (
            vec![("X-Upload-Content-Length", "12x")],
            &b"{\"name\":\"n\"}"[..],
            400,
        ),
        (
            vec![("Authorization", "Basic abc")],
            &b"{\"name\":\"n\"}"[..],
            401,
        ),
    ] {
        let r = send(server.addr(), "POST", t, &headers, body).unwrap();
        assert_eq!(
            r.status,
            status,
            "{headers:?} {:?}",
            String::from_utf8_lossy(body)
        );
        assert!(r.json()["error"]["message"].is_string());
    }
    // A simple upload (uploadType=media) is a whole object in one request, as on GCS.
    let media = send(
        server.addr(),
        "POST",
        "/upload/storage/v1/b/bkt/o?uploadType=media&name=x",
        &[],
        b"",
    )
    .unwrap();
    assert_eq!(media.status, 200);
    assert_eq!(media.json()["size"], "0");
}

#[test]
fn chunked_upload_of_known_size_completes_with_the_object_resource() {
    // G4, G5, G7
    let server = server();
    let session = json_session(&server, "bucket", "obj.bin");
    let total = 2 * KIB256 + 1000;
    let src = data(total);
    let mut conn = Conn::open(server.addr());

    let r = put_chunk(&mut conn, &session, &src, 0..KIB256, Some(total), &[]).unwrap();
    assert_eq!(r.status, 308);
    assert_eq!(r.header("range"), Some("bytes=0-262143"));
    assert!(r.body.is_empty());
    let r = put_chunk(
        &mut conn,
        &session,
        &src,
        KIB256..2 * KIB256,
        Some(total),
        &[],
    )
    .unwrap();
    assert_eq!(r.status, 308);
    assert_eq!(r.header("range"), Some("bytes=0-524287"));
    assert_eq!(server.session(&session).unwrap().stored, 2 * KIB256 as u64);

    let r = put_chunk(
        &mut conn,
        &session,
        &src,
        2 * KIB256..total,
        Some(total),
        &[],
    )
    .unwrap();
    assert_eq!(r.status, 200);
    let v = r.json();
    assert_eq!(v["kind"], "storage#object");
    assert_eq!(v["name"], "obj.bin");
    assert_eq!(v["bucket"], "bucket");
    assert_eq!(v["size"], total.to_string());
    assert_eq!(v["crc32c"], checksum::crc32c_base64(crc(&src)));
    assert_eq!(v["md5Hash"], checksum::md5_base64(&md5_of(&src)));
    assert!(v["generation"].as_str().unwrap().parse::<u64>().is_ok());
    let hash = format!(
        "crc32c={},md5={}",
        checksum::crc32c_base64(crc(&src)),
        checksum::md5_base64(&md5_of(&src))
    );
    assert_eq!(r.header("x-goog-hash"), Some(hash.as_str()));
    assert_eq!(server.object("bucket", "obj.bin"), Some(src.clone()));
    let info = server.object_info("bucket", "obj.bin").unwrap();
    assert_eq!((info.size, info.crc32c), (total as u64, crc(&src)));
    assert_eq!(server.body_bytes_received(), total as u64);
    let s = server.session(&session).unwrap();
    assert!(s.complete);
    assert_eq!(s.body_bytes_received, total as u64);
    assert_eq!(s.requests, 3);
}

#[test]
fn unknown_size_ends_with_a_final_empty_request() {
    // G4: `bytes A-B/*` while the total is unknown; `bytes */T` ends an upload on a boundary.
    let server = server();
    let session = json_session(&server, "b", "stream");
    let src = data(2 * KIB256);
    let mut conn = Conn::open(server.addr());
    for i in 0..2 {
        let r = put_chunk(
            &mut conn,
            &session,
            &src,
            i * KIB256..(i + 1) * KIB256,
            None,
            &[],
        )
        .unwrap();
        assert_eq!(r.status, 308);
        assert_eq!(
            r.header("range"),
            Some(format!("bytes=0-{}", (i + 1) * KIB256 - 1).as_str())
        );
    }
    let r = conn
        .request("PUT", &session, &[("Content-Range", "bytes */524288")], b"")
        .unwrap();
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["size"], "524288");
    assert_eq!(server.object("b", "stream").unwrap(), src);

    // …or with a last chunk that declares the total.
    let session = json_session(&server, "b", "stream2");
    let src = data(KIB256 + 5);
    put_chunk(&mut conn, &session, &src, 0..KIB256, None, &[]).unwrap();
    let r = put_chunk(
        &mut conn,
        &session,
        &src,
        KIB256..KIB256 + 5,
        Some(KIB256 + 5),
        &[],
    )
    .unwrap();
    assert_eq!(r.status, 200);
    assert_eq!(server.object("b", "stream2").unwrap(), src);
}

#[test]
fn empty_and_tiny_objects() {
    // G4, G7: a zero-byte object is `bytes */0`; a 1-byte one `bytes 0-0/1`.
    let server = server();
    let session = json_session(&server, "b", "empty");
    let r = send(
        server.addr(),
        "PUT",
        &session,
        &[("Content-Range", "bytes */0")],
        b"",
    )
    .unwrap();
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["size"], "0");
    assert_eq!(r.json()["crc32c"], "AAAAAA==");
    assert_eq!(server.object("b", "empty"), Some(vec![]));
    let session = json_session(&server, "b", "one");
    let r = send(
        server.addr(),
        "PUT",
        &session,
        &[("Content-Range", "bytes 0-0/1")],
        b"x",
    )
    .unwrap();
    assert_eq!(r.status, 200);
    assert_eq!(server.object("b", "one"), Some(b"x".to_vec()));
}

#[test]
fn a_fresh_session_answers_308_without_range() {
    // G5, G6: nothing stored → 308 and no Range; status queries with `*/T` and `*/*`.
    let server = server();
    let session = json_session(&server, "b", "o");
    for cr in ["bytes */*", "bytes */1000"] {
        let r = send(
            server.addr(),
            "PUT",
            &session,
            &[("Content-Range", cr)],
            b"",
        )
        .unwrap();
        assert_eq!(r.status, 308, "{cr}");
        assert_eq!(r.header("range"), None);
    }
    assert_eq!(server.session(&session).unwrap().total, Some(1000));
}

#[test]
fn status_query_reports_progress_then_completion() {
    // G6
    let server = server();
    let session = xml_session(&server, "b", "o");
    let src = data(KIB256 + 10);
    let mut conn = Conn::open(server.addr());
    put_chunk(&mut conn, &session, &src, 0..KIB256, Some(src.len()), &[]).unwrap();
    let q = conn
        .request("PUT", &session, &[("Content-Range", "bytes */262154")], b"")
        .unwrap();
    assert_eq!(q.status, 308);
    assert_eq!(q.header("range"), Some("bytes=0-262143"));
    let r = put_chunk(
        &mut conn,
        &session,
        &src,
        KIB256..src.len(),
        Some(src.len()),
        &[],
    )
    .unwrap();
    assert_eq!(r.status, 200);
    let q = conn
        .request("PUT", &session, &[("Content-Range", "bytes */*")], b"")
        .unwrap();
    assert_eq!(q.status, 200);
}

#[test]
fn xml_sessions_complete_with_headers_and_no_body() {
    // G7: the XML API answers completion with x-goog-hash and no JSON body.
    let server = server();
    let session = xml_session(&server, "b", "ids.txt");
    let src = b"1\n2\n3\n".to_vec();
    let r = send(
        server.addr(),
        "PUT",
        &session,
        &[("Content-Range", "bytes 0-5/6")],
        &src,
    )
    .unwrap();
    assert_eq!(r.status, 200);
    assert!(r.body.is_empty());
    let hash = r.header("x-goog-hash").unwrap();
    assert!(hash.contains(&format!("crc32c={}", checksum::crc32c_base64(crc(&src)))));
    assert_eq!(r.header("x-goog-stored-content-length"), Some("6"));
    assert!(r.header("x-goog-generation").is_some());
}

#[test]
fn content_range_is_validated_strictly() {
    // G4
    let server = server();
    let session = json_session(&server, "b", "o");
    let src = data(2 * KIB256);
    let mut conn = Conn::open(server.addr());
    let cases: &[(&str, &[u8], &str)] = &[
        ("bytes 0-9", b"0123456789", "malformed"),
        ("items 0-9/10", b"0123456789", "wrong unit"),
        ("bytes 9-0/10", b"0123456789", "reversed"),
        ("bytes 0-9/5", b"0123456789", "past total"),
        ("bytes 0-9/20", b"012345678", "Content-Length differs"),
        ("bytes 0-99/*", &src[..100], "non-final, not 256 KiB"),
        ("bytes 0-99/1000", &src[..100], "non-final, not 256 KiB"),
        ("bytes */5", b"abcde", "a status query with a body"),
    ];
    for (cr, body, why) in cases {
        let r = conn
            .request("PUT", &session, &[("Content-Range", cr)], body)
            .unwrap();
        assert_eq!(r.status, 400, "{why}: {}", r.text());
        assert!(r.json()["error"]["message"].is_string());
    }
    assert_eq!(server.session(&session).unwrap().stored, 0);

    // Totals must agree with each other and with what is stored.
    let r = put_chunk(&mut conn, &session, &src, 0..KIB256, Some(2 * KIB256), &[]).unwrap();
    assert_eq!(r.status, 308);
    for cr in [
        "bytes */600000",
        "bytes */100",
        "bytes 262144-524287/600000",
    ] {
        let body = if cr.starts_with("bytes */") {
            &[][..]
        } else {
            &src[KIB256..]
        };
        let r = conn
            .request("PUT", &session, &[("Content-Range", cr)], body)
            .unwrap();
        assert_eq!(r.status, 400, "{cr}");
    }
    assert_eq!(server.session(&session).unwrap().stored, KIB256 as u64);
}

#[test]
fn x_upload_content_length_must_match_the_content_range() {
    // G2, G4
    let server = server();
    let r = send(
        server.addr(),
        "POST",
        &target(&server.gcs_json_url("b", "o")),
        &[("X-Upload-Content-Length", "300000")],
        b"",
    )
    .unwrap();
    let session = target(r.header("location").unwrap());
    let src = data(2 * KIB256);
    let mut conn = Conn::open(server.addr());
    let r = put_chunk(&mut conn, &session, &src, 0..KIB256, Some(300_001), &[]);
    assert_eq!(r.unwrap().status, 400);
    let r = put_chunk(&mut conn, &session, &src, 0..2 * KIB256, None, &[]);
    assert_eq!(r.unwrap().status, 400, "past the declared length");
    let r = put_chunk(&mut conn, &session, &src, 0..KIB256, None, &[]).unwrap();
    assert_eq!(r.status, 308);
    let r = put_chunk(
        &mut conn,
        &session,
        &src,
        KIB256..300_000,
        Some(300_000),
        &[],
    )
    .unwrap();
    assert_eq!(r.status, 200);
}

#[test]
fn only_a_request_declaring_the_total_completes() {
    // G4: `bytes A-B/*` reaching a known total stores the bytes; `bytes */T` completes.
    let server = server();
    let session = json_session(&server, "b", "o");
    let src = data(KIB256);
    let mut conn = Conn::open(server.addr());
    let q = conn
        .request("PUT", &session, &[("Content-Range", "bytes */262144")], b"")
        .unwrap();
    assert_eq!(q.status, 308);
    let r = put_chunk(&mut conn, &session, &src, 0..KIB256, None, &[]).unwrap();
    assert_eq!(r.status, 308);
    assert_eq!(server.object("b", "o"), None);
    let r = conn
        .request("PUT", &session, &[("Content-Range", "bytes */262144")], b"")
        .unwrap();
    assert_eq!(r.status, 200);
    assert_eq!(server.object("b", "o").unwrap(), src);
}

#[test]
fn resent_bytes_are_ignored() {
    // G5: a chunk overlapping what is stored: the overlap is ignored, the rest appended.
    let server = server();
    let session = json_session(&server, "b", "o");
    let src = data(3 * KIB256);
    let mut conn = Conn::open(server.addr());
    put_chunk(&mut conn, &session, &src, 0..2 * KIB256, None, &[]).unwrap();
    // A chunk entirely below what is stored changes nothing.
    let zeros = vec![0u8; KIB256];
    let r = put_chunk(&mut conn, &session, &zeros, 0..KIB256, None, &[]).unwrap();
    assert_eq!(r.status, 308);
    assert_eq!(r.header("range"), Some("bytes=0-524287"));
    let r = put_chunk(
        &mut conn,
        &session,
        &src,
        KIB256..3 * KIB256,
        Some(3 * KIB256),
        &[],
    )
    .unwrap();
    assert_eq!(r.status, 200);
    assert_eq!(server.object("b", "o").unwrap(), src);
    // Every byte received counts, the resent ones too.
    assert_eq!(server.body_bytes_received(), 5 * KIB256 as u64);
    assert_eq!(
        server.session(&session).unwrap().body_bytes_received,
        5 * KIB256 as u64
    );
}

#[test]
fn a_gap_is_rejected_with_503() {
    // G5, G8: a chunk starting past the stored offset is refused (503, as Google's front
    // end does) and nothing is stored.
    let server = server();
    let session = json_session(&server, "b", "o");
    let src = data(3 * KIB256);
    let mut conn = Conn::open(server.addr());
    put_chunk(&mut conn, &session, &src, 0..KIB256, None, &[]).unwrap();
    let r = put_chunk(&mut conn, &session, &src, 2 * KIB256..3 * KIB256, None, &[]).unwrap();
    assert_eq!(r.status, 503);
    assert_eq!(server.session(&session).unwrap().stored, KIB256 as u64);
    // The connection stays usable (the body was read).
    let q = conn
        .request("PUT", &session, &[("Content-Range", "bytes */*")], b"")
        .unwrap();
    assert_eq!(q.header("range"), Some("bytes=0-262143"));
}

#[test]
fn the_client_x_goog_hash_is_verified() {
    // G7: a wrong x-goog-hash on the final chunk is 400 and the object is not stored.
    let server = server();
    let session = json_session(&server, "b", "o");
    let src = data(KIB256 + 3);
    let mut conn = Conn::open(server.addr());
    put_chunk(&mut conn, &session, &src, 0..KIB256, Some(src.len()), &[]).unwrap();
    let wrong = format!("crc32c={}", checksum::crc32c_base64(crc(&src) ^ 1));
    let r = put_chunk(
        &mut conn,
        &session,
        &src,
        KIB256..src.len(),
        Some(src.len()),
        &[("x-goog-hash", &wrong)],
    )
    .unwrap();
    assert_eq!(r.status, 400);
    assert_eq!(server.object("b", "o"), None);
    assert_eq!(server.session(&session).unwrap().stored, KIB256 as u64);
    let wrong_md5 = format!("md5={}", checksum::md5_base64(&[0; 16]));
    let r = put_chunk(
        &mut conn,
        &session,
        &src,
        KIB256..src.len(),
        Some(src.len()),
        &[("x-goog-hash", &wrong_md5)],
    )
    .unwrap();
    assert_eq!(r.status, 400);

    let right = format!(
        "crc32c={},md5={}",
        checksum::crc32c_base64(crc(&src)),
        checksum::md5_base64(&md5_of(&src))
    );
    let r = put_chunk(
        &mut conn,
        &session,
        &src,
        KIB256..src.len(),
        Some(src.len()),
        &[("x-goog-hash", &right)],
    )
    .unwrap();
    assert_eq!(r.status, 200);
    assert_eq!(server.object("b", "o").unwrap(), src);
}

#[test]
fn md5_can_be_turned_off_but_a_client_md5_is_still_checked() {
    // G7: without MD5 the resource has no md5Hash (as for composite objects).
    let server = server_with(ServerConfig {
        md5: false,
        ..ServerConfig::default()
    });
    let session = json_session(&server, "b", "o");
    let r = send(
        server.addr(),
        "PUT",
        &session,
        &[("Content-Range", "bytes 0-2/3")],
        b"abc",
    )
    .unwrap();
    assert_eq!(r.status, 200);
    assert!(r.json().get("md5Hash").is_none());
    assert_eq!(r.json()["crc32c"], checksum::crc32c_base64(crc(b"abc")));
    let session = json_session(&server, "b", "p");
    let wrong = format!("md5={}", checksum::md5_base64(&md5_of(b"abd")));
    let r = send(
        server.addr(),
        "PUT",
        &session,
        &[("Content-Range", "bytes 0-2/3"), ("x-goog-hash", &wrong)],
        b"abc",
    )
    .unwrap();
    assert_eq!(r.status, 400);
}

#[test]
fn a_put_after_completion_answers_200_with_the_metadata() {
    // G7, G6
    let server = server();
    let session = json_session(&server, "b", "o");
    let first = send(
        server.addr(),
        "PUT",
        &session,
        &[("Content-Range", "bytes 0-2/3")],
        b"abc",
    )
    .unwrap();
    assert_eq!(first.status, 200);
    let again = send(
        server.addr(),
        "PUT",
        &session,
        &[("Content-Range", "bytes 0-2/3")],
        b"xyz",
    )
    .unwrap();
    assert_eq!(again.status, 200);
    assert_eq!(again.json(), first.json());
    assert_eq!(server.object("b", "o").unwrap(), b"abc");
}

#[test]
fn delete_answers_499_then_404() {
    // G10, G9
    let server = server();
    let session = json_session(&server, "b", "o");
    let r = send(server.addr(), "DELETE", &session, &[], b"").unwrap();
    assert_eq!(r.status, 499);
    let r = send(server.addr(), "DELETE", &session, &[], b"").unwrap();
    assert_eq!(r.status, 404);
    let r = send(
        server.addr(),
        "PUT",
        &session,
        &[("Content-Range", "bytes */*")],
        b"",
    )
    .unwrap();
    assert_eq!(r.status, 404);
    assert!(server.session(&session).unwrap().gone);
    let unknown = "/upload/storage/v1/b/b/o?uploadType=resumable&upload_id=nope";
    let r = send(
        server.addr(),
        "PUT",
        unknown,
        &[("Content-Range", "bytes */*")],
        b"",
    )
    .unwrap();
    assert_eq!(r.status, 404);
}

#[test]
fn sessions_expire_after_their_ttl() {
    // G3, G9
    let server = server_with(ServerConfig {
        session_ttl: Duration::from_millis(150),
        ..ServerConfig::default()
    });
    let session = json_session(&server, "b", "o");
    let r = send(
        server.addr(),
        "PUT",
        &session,
        &[("Content-Range", "bytes */*")],
        b"",
    )
    .unwrap();
    assert_eq!(r.status, 308);
    std::thread::sleep(Duration::from_millis(300));
    let r = send(
        server.addr(),
        "PUT",
        &session,
        &[("Content-Range", "bytes */*")],
        b"",
    )
    .unwrap();
    assert_eq!(r.status, 404);
    // Gone sessions are forgotten when the next one starts.
    json_session(&server, "b", "p");
    assert!(server.session(&session).is_none());
}

#[test]
fn expire_session_makes_it_answer_404() {
    // G9
    let server = server();
    let session = json_session(&server, "b", "o");
    assert!(server.expire_session(&session));
    let r = send(
        server.addr(),
        "PUT",
        &session,
        &[("Content-Range", "bytes */*")],
        b"",
    )
    .unwrap();
    assert_eq!(r.status, 404);
    assert!(!server.expire_session("no-such-id"));
}

#[test]
fn no_308_asks_for_200_with_an_override() {
    // G11
    let server = server();
    let session = json_session(&server, "b", "o");
    let src = data(KIB256);
    let mut conn = Conn::open(server.addr());
    let r = put_chunk(
        &mut conn,
        &session,
        &src,
        0..KIB256,
        None,
        &[("X-GUploader-No-308", "yes")],
    )
    .unwrap();
    assert_eq!(r.status, 200);
    assert_eq!(r.header("x-http-status-code-override"), Some("308"));
    assert_eq!(r.header("range"), Some("bytes=0-262143"));
    // Without the header: a real 308.
    let q = conn
        .request("PUT", &session, &[("Content-Range", "bytes */*")], b"")
        .unwrap();
    assert_eq!(q.status, 308);
}

#[test]
fn ureq_without_redirects_sees_the_308() {
    // G12: 308 is not a redirect; ureq must be told not to follow it nor to fail on 4xx.
    let server = server();
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .max_redirects(0)
        .http_status_as_error(false)
        .build()
        .into();
    let start = agent
        .post(&server.gcs_xml_url("b", "o"))
        .header("x-goog-resumable", "start")
        .header("Content-Type", "text/plain")
        .send_empty()
        .unwrap();
    assert_eq!(start.status(), 201);
    let session = start.headers()["location"].to_str().unwrap().to_owned();
    let src = data(KIB256 + 1);
    let r = agent
        .put(&session)
        .header("Content-Range", "bytes 0-262143/262145")
        .send(&src[..KIB256])
        .unwrap();
    assert_eq!(r.status(), 308);
    assert_eq!(r.headers()["range"], "bytes=0-262143");
    let r = agent
        .put(&session)
        .header("Content-Range", "bytes 262144-262144/262145")
        .send(&src[KIB256..])
        .unwrap();
    assert_eq!(r.status(), 200);
    let bad = agent
        .put(&session.replace("upload_id=", "upload_id=x"))
        .header("Content-Range", "bytes */*")
        .send_empty()
        .unwrap();
    assert_eq!(bad.status(), 404);
    assert_eq!(server.object("b", "o").unwrap(), src);
}

#[test]
fn keep_alive_and_chunked_transfer_encoding() {
    // G4 over one connection, a chunk sent with Transfer-Encoding: chunked.
    let server = server();
    let session = json_session(&server, "b", "o");
    let src = data(KIB256 + 100);
    let mut conn = Conn::open(server.addr());
    let mut body = Vec::new();
    for piece in src[..KIB256].chunks(100_000) {
        body.extend_from_slice(format!("{:x};ext=1\r\n", piece.len()).as_bytes());
        body.extend_from_slice(piece);
        body.extend_from_slice(b"\r\n");
    }
    body.extend_from_slice(b"0\r\nX-Trailer: t\r\n\r\n");
    let r = conn
        .request(
            "PUT",
            &session,
            &[
                ("Content-Range", "bytes 0-262143/262244"),
                ("Transfer-Encoding", "chunked"),
            ],
            &body,
        )
        .unwrap();
    assert_eq!(r.status, 308, "{}", r.text());
    // A chunked body that does not match its Content-Range is refused, nothing stored.
    let r = conn
        .request(
            "PUT",
            &session,
            &[
                ("Content-Range", "bytes 262144-262243/262244"),
                ("Transfer-Encoding", "chunked"),
            ],
            b"5\r\nhello\r\n0\r\n\r\n",
        )
        .unwrap();
    assert_eq!(r.status, 400);
    let r = put_chunk(
        &mut conn,
        &session,
        &src,
        KIB256..src.len(),
        Some(src.len()),
        &[],
    )
    .unwrap();
    assert_eq!(r.status, 200);
    assert_eq!(server.object("b", "o").unwrap(), src);
    let log = server.request_log();
    assert_eq!(log.len(), 4);
}

#[test]
fn expect_100_continue_is_honoured() {
    // G4: a client waiting for 100 Continue before the body.
    let server = server();
    let session = json_session(&server, "b", "o");
    let mut conn = Conn::open(server.addr());
    use std::io::{Read, Write};
    let head = format!(
        "PUT {session} HTTP/1.1\r\nHost: x\r\nContent-Range: bytes 0-2/3\r\nContent-Length: 3\r\nExpect: 100-continue\r\n\r\n"
    );
    conn.stream.write_all(head.as_bytes()).unwrap();
    let mut interim = [0u8; 25];
    conn.stream.read_exact(&mut interim).unwrap();
    assert_eq!(&interim, b"HTTP/1.1 100 Continue\r\n\r\n");
    conn.stream.write_all(b"abc").unwrap();
    assert_eq!(conn.read_response().unwrap().status, 200);
}

#[test]
fn a_single_put_without_content_range_uploads_everything() {
    // G4 (the compliance guide's first PUT has no Content-Range), and C2's non-resumable PUT.
    let server = server();
    let session = xml_session(&server, "b", "whole");
    let r = send(
        server.addr(),
        "PUT",
        &session,
        &[("Content-Type", "text/plain")],
        b"1\n2\n",
    )
    .unwrap();
    assert_eq!(r.status, 200);
    assert_eq!(server.object("b", "whole").unwrap(), b"1\n2\n");
    let r = send(
        server.addr(),
        "PUT",
        "/b/simple",
        &[("Content-Type", "text/plain")],
        b"42\n",
    )
    .unwrap();
    assert_eq!(r.status, 200);
    assert_eq!(server.object("b", "simple").unwrap(), b"42\n");
}

#[test]
fn objects_can_be_downloaded() {
    // G7: what was stored can be read back (media and metadata).
    let server = server();
    let session = json_session(&server, "my bucket", "dir/o.bin");
    send(
        server.addr(),
        "PUT",
        &session,
        &[("Content-Range", "bytes 0-3/4")],
        b"data",
    )
    .unwrap();
    let r = send(
        server.addr(),
        "GET",
        "/download/storage/v1/b/my%20bucket/o/dir%2Fo.bin?alt=media",
        &[],
        b"",
    )
    .unwrap();
    assert_eq!((r.status, r.body.as_slice()), (200, &b"data"[..]));
    let r = send(
        server.addr(),
        "GET",
        "/storage/v1/b/my%20bucket/o/dir%2Fo.bin",
        &[],
        b"",
    )
    .unwrap();
    assert_eq!(r.json()["size"], "4");
    let r = send(server.addr(), "GET", "/my%20bucket/dir/o.bin", &[], b"").unwrap();
    assert_eq!(r.body, b"data");
    let r = send(
        server.addr(),
        "GET",
        "/download/storage/v1/b/x/o/none",
        &[],
        b"",
    )
    .unwrap();
    assert_eq!(r.status, 404);
    assert!(server.remove_object("my bucket", "dir/o.bin"));
    assert_eq!(server.object("my bucket", "dir/o.bin"), None);
}

#[test]
fn inspection_reports_the_stored_prefix_and_the_request_log() {
    // G5: what a session holds, and what was asked of the server.
    let server = server();
    let session = json_session(&server, "b", "o");
    let src = data(2 * KIB256);
    let mut conn = Conn::open(server.addr());
    put_chunk(&mut conn, &session, &src, 0..KIB256, None, &[]).unwrap();
    assert_eq!(server.session_bytes(&session).unwrap(), &src[..KIB256]);
    let id = server.session(&session).unwrap().upload_id;
    assert_eq!(server.session(&id).unwrap().stored, KIB256 as u64);
    let log = server.request_log();
    assert_eq!(log.len(), 2);
    assert_eq!(log[0].method, "POST");
    assert_eq!(log[0].path, "/upload/storage/v1/b/b/o");
    assert_eq!(log[0].status, Some(200));
    assert_eq!(log[0].upload_id.as_deref(), Some(id.as_str()));
    assert_eq!(log[1].method, "PUT");
    assert_eq!(log[1].content_range.as_deref(), Some("bytes 0-262143/*"));
    assert_eq!(log[1].status, Some(308));
    assert_eq!(log[1].body_bytes, KIB256 as u64);
    assert_eq!(log[1].kind, resumable_server::RequestKind::GcsChunk);
    server.clear_request_log();
    assert!(server.request_log().is_empty());
    assert_eq!(server.sessions().len(), 1);
    assert!(server.banner().contains(&server.base_url()));
}

#[test]
fn hostile_input_is_answered_not_panicked_on() {
    // Robustness: bad heads are 400/431, the server stays up.
    use std::io::Write;
    let server = server();
    let cases: Vec<(Vec<u8>, u16)> = vec![
        (b"\x00\x01\x02 garbage\r\n\r\n".to_vec(), 400),
        (
            b"PUT / HTTP/1.1\r\nContent-Length: -1\r\n\r\n".to_vec(),
            400,
        ),
        (
            b"PUT / HTTP/1.1\r\nContent-Length: 99999999999999999999999\r\n\r\n".to_vec(),
            400,
        ),
        (
            b"PUT / HTTP/1.1\r\nTransfer-Encoding: gzip\r\n\r\n".to_vec(),
            400,
        ),
        (
            format!("GET /{} HTTP/1.1\r\n\r\n", "a".repeat(70_000)).into_bytes(),
            431,
        ),
        (
            format!("GET / HTTP/1.1\r\n{}\r\n", "X-A: b\r\n".repeat(200)).into_bytes(),
            431,
        ),
    ];
    for (raw, status) in cases {
        let mut conn = Conn::open(server.addr());
        conn.stream.write_all(&raw).unwrap();
        let r = conn.read_response().unwrap();
        assert_eq!(
            r.status,
            status,
            "{:?}",
            String::from_utf8_lossy(&raw[..40.min(raw.len())])
        );
        assert!(conn.is_closed());
    }
    // A chunked body with a bad size line: the connection is closed, nothing stored.
    let session = json_session(&server, "b", "o");
    let mut conn = Conn::open(server.addr());
    conn.write_request(
        "PUT",
        &session,
        &[
            ("Content-Range", "bytes 0-4/5"),
            ("Transfer-Encoding", "chunked"),
        ],
        b"zz\r\nhello\r\n0\r\n\r\n",
    )
    .unwrap();
    assert!(conn.read_response().is_err());
    assert_eq!(server.session(&session).unwrap().stored, 0);
    // Unknown paths and methods.
    assert_eq!(
        send(server.addr(), "GET", "/nowhere", &[], b"")
            .unwrap()
            .status,
        404
    );
    assert_eq!(
        send(server.addr(), "PATCH", "/b/o", &[], b"")
            .unwrap()
            .status,
        405
    );
    assert_eq!(
        send(server.addr(), "GET", "/", &[], b"").unwrap().status,
        200
    );
}

#[test]
fn sessions_run_in_parallel() {
    // G4 on several connections at once.
    let server = server();
    let threads: Vec<_> = (0..4)
        .map(|i| {
            let session = json_session(&server, "b", &format!("o{i}"));
            let addr = server.addr();
            std::thread::spawn(move || {
                let src = data(3 * KIB256 + i + 1);
                let mut conn = Conn::open(addr);
                for c in 0..3 {
                    let r = put_chunk(
                        &mut conn,
                        &session,
                        &src,
                        c * KIB256..(c + 1) * KIB256,
                        None,
                        &[],
                    )
                    .unwrap();
                    assert_eq!(r.status, 308);
                }
                let r = put_chunk(
                    &mut conn,
                    &session,
                    &src,
                    3 * KIB256..src.len(),
                    Some(src.len()),
                    &[],
                )
                .unwrap();
                assert_eq!(r.status, 200);
                src
            })
        })
        .collect();
    for (i, t) in threads.into_iter().enumerate() {
        let src = t.join().unwrap();
        assert_eq!(server.object("b", &format!("o{i}")).unwrap(), src);
    }
}

#[test]
fn shutdown_does_not_hang_with_open_connections() {
    // Threads end on shutdown, even with idle keep-alive connections and a body mid-way.
    let server = server();
    let session = json_session(&server, "b", "o");
    let _idle = Conn::open(server.addr());
    let mut busy = Conn::open(server.addr());
    busy.write_request(
        "PUT",
        &session,
        &[
            ("Content-Range", "bytes 0-262143/*"),
            ("Content-Length", "262144"),
        ],
        b"partial",
    )
    .unwrap();
    std::thread::sleep(Duration::from_millis(50));
    let t = std::time::Instant::now();
    server.shutdown();
    assert!(t.elapsed() < Duration::from_secs(3), "{:?}", t.elapsed());
}

#[test]
fn objects_larger_than_the_limit_are_refused() {
    // Bounded memory: max_object_size, for declared sizes and for open-ended bodies.
    let server = server_with(ServerConfig {
        max_object_size: 100,
        ..ServerConfig::default()
    });
    let session = json_session(&server, "b", "o");
    let r = send(
        server.addr(),
        "PUT",
        &session,
        &[("Content-Range", "bytes 0-199/200")],
        &data(200),
    )
    .unwrap();
    assert_eq!(r.status, 413);
    let r = send(
        server.addr(),
        "PUT",
        &session,
        &[("Transfer-Encoding", "chunked")],
        b"c8\r\nxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx\r\n0\r\n\r\n",
    )
    .unwrap();
    assert_eq!(r.status, 413);
    assert_eq!(server.session(&session).unwrap().stored, 0);
    let r = send(server.addr(), "PUT", "/b/simple", &[], &data(101)).unwrap();
    assert_eq!(r.status, 413);
    let r = send(server.addr(), "PUT", "/b/simple", &[], &data(100)).unwrap();
    assert_eq!(r.status, 200);
}
