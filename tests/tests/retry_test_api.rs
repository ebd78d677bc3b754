//! The GCS JSON API surface around uploads and storage-testbench's fault interface (the
//! Retry Test API and `x-goog-emulator-instructions`), with a raw HTTP client: each
//! instruction's effect on the wire and on what the server stores. The last tests drive the
//! core's GCS upload through the same instructions.

mod common;

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use base64::Engine as _;
use common::*;
use md5::Digest as _;
use resumable_core::checksum::Checksums;
use resumable_core::gcs::{GcsConfig, GcsUpload, Start};
use resumable_server::Server;
use serde_json::{Value, json};

const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::STANDARD;

fn crc_b64(bytes: &[u8]) -> String {
    B64.encode(crc32c::crc32c(bytes).to_be_bytes())
}

fn md5_b64(bytes: &[u8]) -> String {
    B64.encode(md5::Md5::digest(bytes))
}

/// Creates a retry test and returns its id.
fn retry_test(server: &Server, instructions: Value) -> String {
    let body = json!({ "instructions": instructions }).to_string();
    let r = send(
        server.addr(),
        "POST",
        "/retry_test",
        &[("Content-Type", "application/json")],
        body.as_bytes(),
    )
    .unwrap();
    assert_eq!(r.status, 200, "{}", r.text());
    let v = r.json();
    assert_eq!(v["completed"], false);
    v["id"].as_str().unwrap().to_owned()
}

fn retry_state(server: &Server, id: &str) -> Value {
    let r = send(server.addr(), "GET", &format!("/retry_test/{id}"), &[], b"").unwrap();
    assert_eq!(r.status, 200, "{}", r.text());
    r.json()
}

/// A media upload (`uploadType=media`).
fn media_upload(server: &Server, name: &str, body: &[u8], extra: &[(&str, &str)]) -> Resp {
    send(
        server.addr(),
        "POST",
        &format!("/upload/storage/v1/b/bkt/o?uploadType=media&name={name}"),
        extra,
        body,
    )
    .unwrap()
}

/// Writes `head` and `body` on a fresh connection and reads until the server closes, a
/// reset, or `Content-Length` is met: (the bytes received, the error that ended it).
fn raw(addr: SocketAddr, head: &str, body: &[u8]) -> (Vec<u8>, Option<io::Error>) {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut bytes = head.as_bytes().to_vec();
    bytes.extend_from_slice(body);
    if let Err(e) = s.write_all(&bytes) {
        return (Vec::new(), Some(e));
    }
    let mut got = Vec::new();
    let mut buf = [0u8; 65536];
    loop {
        match s.read(&mut buf) {
            Ok(0) => return (got, None),
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e) => return (got, Some(e)),
        }
    }
}

/// Splits a raw answer into status, head text and body bytes.
fn split(answer: &[u8]) -> (u16, String, Vec<u8>) {
    let end = answer
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("a complete head");
    let head = String::from_utf8_lossy(&answer[..end]).into_owned();
    let status = head[9..12].parse().unwrap();
    (
        status,
        head.to_ascii_lowercase(),
        answer[end + 4..].to_vec(),
    )
}

// ---- the JSON API surface ----

#[test]
fn buckets_insert_get_list_and_delete() {
    let server = server();
    let insert = |name: &str| {
        send(
            server.addr(),
            "POST",
            "/storage/v1/b?project=test",
            &[("Content-Type", "application/json")],
            json!({ "name": name }).to_string().as_bytes(),
        )
        .unwrap()
    };
    let r = insert("photos");
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["name"], "photos");
    assert_eq!(r.json()["kind"], "storage#bucket");
    assert_eq!(insert("photos").status, 409);
    assert_eq!(insert("Bad Name").status, 400);
    let get = |b: &str| {
        send(
            server.addr(),
            "GET",
            &format!("/storage/v1/b/{b}"),
            &[],
            b"",
        )
        .unwrap()
    };
    assert_eq!(get("photos").status, 200);
    assert_eq!(get("nothing").status, 404);
    // An upload makes a bucket known without an insert.
    assert_eq!(media_upload(&server, "x", b"1", &[]).status, 200);
    assert_eq!(get("bkt").status, 200);
    let list = send(server.addr(), "GET", "/storage/v1/b?project=test", &[], b"").unwrap();
    let names: Vec<String> = list.json()["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["name"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(names, ["bkt", "photos"]);
    let delete = |b: &str| {
        send(
            server.addr(),
            "DELETE",
            &format!("/storage/v1/b/{b}"),
            &[],
            b"",
        )
        .unwrap()
    };
    assert_eq!(delete("bkt").status, 409, "not empty");
    assert_eq!(delete("photos").status, 204);
    assert_eq!(get("photos").status, 404);
}

#[test]
fn media_upload_stores_the_bytes_and_answers_the_resource() {
    let server = server();
    let src = data(300_000);
    let r = media_upload(
        &server,
        "dir%2Fa.bin",
        &src,
        &[("Content-Type", "image/png")],
    );
    assert_eq!(r.status, 200, "{}", r.text());
    let v = r.json();
    assert_eq!(v["name"], "dir/a.bin");
    assert_eq!(v["bucket"], "bkt");
    assert_eq!(v["size"], "300000");
    assert_eq!(v["crc32c"], crc_b64(&src));
    assert_eq!(v["md5Hash"], md5_b64(&src));
    assert_eq!(v["contentType"], "image/png");
    let generation = v["generation"].as_str().unwrap().to_owned();
    assert_eq!(server.object("bkt", "dir/a.bin").unwrap(), src);
    // The metadata, by name (percent-encoded or not).
    for path in [
        "/storage/v1/b/bkt/o/dir%2Fa.bin",
        "/storage/v1/b/bkt/o/dir/a.bin",
    ] {
        let m = send(server.addr(), "GET", path, &[], b"").unwrap();
        assert_eq!(m.status, 200);
        assert_eq!(m.json()["generation"], generation.as_str());
        assert_eq!(m.json()["size"], "300000");
    }
    // ifGenerationMatch=0: only if there is no live object.
    let again = media_upload(&server, "dir%2Fa.bin&ifGenerationMatch=0", b"new", &[]);
    assert_eq!(again.status, 412);
    assert_eq!(again.json()["error"]["code"], 412);
    assert_eq!(server.object("bkt", "dir/a.bin").unwrap(), src);
    let fresh = media_upload(&server, "b.bin&ifGenerationMatch=0", b"new", &[]);
    assert_eq!(fresh.status, 200);
    // ifGenerationMatch=G: only that generation is replaced.
    let target = format!("dir%2Fa.bin&ifGenerationMatch={generation}");
    assert_eq!(media_upload(&server, &target, b"v2", &[]).status, 200);
    assert_eq!(media_upload(&server, &target, b"v3", &[]).status, 412);
    assert_eq!(server.object("bkt", "dir/a.bin").unwrap(), b"v2");
    // No name: 400.
    let r = send(
        server.addr(),
        "POST",
        "/upload/storage/v1/b/bkt/o?uploadType=media",
        &[],
        b"x",
    )
    .unwrap();
    assert_eq!(r.status, 400);
}

fn related(meta: &Value, media: &[u8]) -> (String, Vec<u8>) {
    let b = "===============7330845974216740156==";
    let mut body = format!(
        "--{b}\r\ncontent-type: application/json; charset=UTF-8\r\n\r\n{meta}\r\n--{b}\r\ncontent-type: text/csv\r\n\r\n"
    )
    .into_bytes();
    body.extend_from_slice(media);
    body.extend_from_slice(format!("\r\n--{b}--").as_bytes());
    (format!("multipart/related; boundary=\"{b}\""), body)
}

#[test]
fn multipart_upload_checks_the_checksums_in_its_metadata() {
    let server = server();
    let media = b"a,b\r\n--=====not a boundary\r\n1,2\r\n".repeat(1000);
    let post = |meta: Value| {
        let (ct, body) = related(&meta, &media);
        send(
            server.addr(),
            "POST",
            "/upload/storage/v1/b/bkt/o?uploadType=multipart",
            &[("Content-Type", &ct)],
            &body,
        )
        .unwrap()
    };
    let wrong = post(json!({"name": "t.csv", "crc32c": crc_b64(b"other")}));
    assert_eq!(wrong.status, 400, "{}", wrong.text());
    assert!(
        wrong.json()["error"]["message"]
            .as_str()
            .unwrap()
            .contains("CRC32C")
    );
    assert_eq!(server.object("bkt", "t.csv"), None);
    let wrong_md5 = post(json!({"name": "t.csv", "md5Hash": md5_b64(b"other")}));
    assert_eq!(wrong_md5.status, 400);
    let r = post(json!({
        "name": "t.csv",
        "crc32c": crc_b64(&media),
        "md5Hash": md5_b64(&media),
        "metadata": {"k": "v"},
    }));
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["contentType"], "text/csv");
    assert_eq!(r.json()["metadata"]["k"], "v");
    assert_eq!(server.object("bkt", "t.csv").unwrap(), media);
    // Not multipart/related, or not framed by its boundary: 400.
    let r = send(
        server.addr(),
        "POST",
        "/upload/storage/v1/b/bkt/o?uploadType=multipart",
        &[("Content-Type", "multipart/related; boundary=zz")],
        b"--zz\r\n\r\n{}\r\n",
    )
    .unwrap();
    assert_eq!(r.status, 400);
}

#[test]
fn downloads_serve_one_range_with_206_and_refuse_past_the_end_with_416() {
    let server = server();
    let src = data(1_000_000);
    assert_eq!(media_upload(&server, "d.bin", &src, &[]).status, 200);
    let get = |path: &str, range: Option<&str>| {
        let headers: Vec<(&str, &str)> = range.map(|r| ("Range", r)).into_iter().collect();
        send(server.addr(), "GET", path, &headers, b"").unwrap()
    };
    for path in [
        "/storage/v1/b/bkt/o/d.bin?alt=media",
        "/download/storage/v1/b/bkt/o/d.bin?alt=media",
        "/bkt/d.bin",
    ] {
        let whole = get(path, None);
        assert_eq!(whole.status, 200, "{path}");
        assert_eq!(whole.body, src, "{path}");
        assert_eq!(
            whole.header("x-goog-hash").unwrap(),
            format!("crc32c={},md5={}", crc_b64(&src), md5_b64(&src))
        );
        let part = get(path, Some("bytes=1000-1999"));
        assert_eq!(part.status, 206);
        assert_eq!(
            part.header("content-range"),
            Some("bytes 1000-1999/1000000")
        );
        assert_eq!(part.body, &src[1000..2000]);
        let tail = get(path, Some("bytes=-10"));
        assert_eq!(tail.status, 206);
        assert_eq!(tail.body, &src[src.len() - 10..]);
        let open = get(path, Some("bytes=999990-"));
        assert_eq!(open.body, &src[999_990..]);
        let past = get(path, Some("bytes=1000000-"));
        assert_eq!(past.status, 416);
        assert_eq!(past.header("content-range"), Some("bytes */1000000"));
        assert_eq!(get(path, Some("bytes=9-2")).status, 400);
    }
    assert_eq!(get("/storage/v1/b/bkt/o/none?alt=media", None).status, 404);
    // A generation that is not the live one: 404.
    assert_eq!(
        get("/storage/v1/b/bkt/o/d.bin?alt=media&generation=1", None).status,
        404
    );
}

#[test]
fn object_list_folds_prefixes_and_pages() {
    let server = server();
    for name in ["a/1", "a/2", "a/b/3", "c", "d/4"] {
        assert_eq!(media_upload(&server, name, b"x", &[]).status, 200);
    }
    let list = |q: &str| {
        let r = send(
            server.addr(),
            "GET",
            &format!("/storage/v1/b/bkt/o?{q}"),
            &[],
            b"",
        )
        .unwrap();
        assert_eq!(r.status, 200, "{q}: {}", r.text());
        let v = r.json();
        let names: Vec<String> = v["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|o| o["name"].as_str().unwrap().to_owned())
            .collect();
        let prefixes: Vec<String> = v["prefixes"]
            .as_array()
            .map(|p| p.iter().map(|p| p.as_str().unwrap().to_owned()).collect())
            .unwrap_or_default();
        (
            names,
            prefixes,
            v["nextPageToken"].as_str().map(str::to_owned),
        )
    };
    let (names, prefixes, _) = list("prefix=a/");
    assert_eq!(names, ["a/1", "a/2", "a/b/3"]);
    assert!(prefixes.is_empty());
    let (names, prefixes, _) = list("delimiter=/");
    assert_eq!(names, ["c"]);
    assert_eq!(prefixes, ["a/", "d/"]);
    let (names, prefixes, _) = list("prefix=a/&delimiter=/");
    assert_eq!(names, ["a/1", "a/2"]);
    assert_eq!(prefixes, ["a/b/"]);
    // Pages of two: every name once, in order.
    let mut all = Vec::new();
    let mut token: Option<String> = None;
    for _ in 0..10 {
        let q = match &token {
            Some(t) => format!("maxResults=2&pageToken={t}"),
            None => "maxResults=2".to_owned(),
        };
        let (names, _, next) = list(&q);
        all.extend(names);
        token = next;
        if token.is_none() {
            break;
        }
    }
    assert_eq!(all, ["a/1", "a/2", "a/b/3", "c", "d/4"]);
    let r = send(server.addr(), "GET", "/storage/v1/b/none/o", &[], b"").unwrap();
    assert_eq!(r.status, 404);
}

#[test]
fn object_delete_answers_204_then_404() {
    let server = server();
    let r = media_upload(&server, "gone", b"x", &[]);
    let generation = r.json()["generation"].as_str().unwrap().to_owned();
    let delete = |q: &str| {
        send(
            server.addr(),
            "DELETE",
            &format!("/storage/v1/b/bkt/o/gone{q}"),
            &[],
            b"",
        )
        .unwrap()
        .status
    };
    assert_eq!(delete("?ifGenerationMatch=1"), 412);
    assert_eq!(delete(&format!("?ifGenerationMatch={generation}")), 204);
    assert_eq!(delete(""), 404);
    assert_eq!(server.object("bkt", "gone"), None);
}

#[test]
fn resumable_start_at_the_gcloud_path_with_a_host_without_port() {
    // G2 at /resumable/upload/… (gcloud storage); the session URI carries the listen port
    // even when the Host header has none (google-cloud-rust sends `host: 127.0.0.1`).
    let server = server();
    let head = "POST /resumable/upload/storage/v1/b/bkt/o?uploadType=resumable&name=r.bin&ifGenerationMatch=0 HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 0\r\nConnection: close\r\n\r\n";
    let (answer, _) = raw(server.addr(), head, b"");
    let (status, head, _) = split(&answer);
    assert_eq!(status, 200, "{head}");
    let location = head
        .lines()
        .find_map(|l| l.strip_prefix("location: "))
        .unwrap()
        .to_owned();
    assert!(
        location.starts_with(&format!("{}/upload/storage/v1/b/bkt/o?", server.base_url())),
        "{location}"
    );
    // The session works, and its completion checks ifGenerationMatch=0 again.
    let session = target(&location);
    let mut conn = Conn::open(server.addr());
    let src = data(KIB256 + 5);
    // Meanwhile another upload takes the name.
    assert_eq!(media_upload(&server, "r.bin", b"first", &[]).status, 200);
    let r = put_chunk(
        &mut conn,
        &session,
        &src,
        0..src.len(),
        Some(src.len()),
        &[],
    )
    .unwrap();
    assert_eq!(r.status, 412);
    assert_eq!(server.object("bkt", "r.bin").unwrap(), b"first");
    // A start whose precondition already fails is 412 at once.
    let r = send(
        server.addr(),
        "POST",
        "/upload/storage/v1/b/bkt/o?uploadType=resumable&name=r.bin&ifGenerationMatch=0",
        &[],
        b"",
    )
    .unwrap();
    assert_eq!(r.status, 412);
}

#[test]
fn errors_have_googles_json_shape() {
    let server = server();
    let r = send(
        server.addr(),
        "GET",
        "/storage/v1/b/bkt/o/missing",
        &[],
        b"",
    )
    .unwrap();
    assert_eq!(r.status, 404);
    let e = &r.json()["error"];
    assert_eq!(e["code"], 404);
    assert!(e["message"].is_string());
    assert_eq!(e["errors"][0]["reason"], "notFound");
    assert!(e["errors"][0]["message"].is_string());
    let r = send(
        server.addr(),
        "POST",
        "/upload/storage/v1/b/bkt/o?uploadType=other",
        &[],
        b"",
    )
    .unwrap();
    assert_eq!(r.status, 400);
    assert_eq!(r.json()["error"]["errors"][0]["reason"], "invalid");
}

// ---- the Retry Test API ----

#[test]
fn retry_tests_are_created_read_listed_and_deleted() {
    let server = server();
    let id = retry_test(
        &server,
        json!({"storage.objects.insert": ["return-503", "return-reset-connection"]}),
    );
    let v = retry_state(&server, &id);
    assert_eq!(v["id"], id.as_str());
    assert_eq!(
        v["instructions"]["storage.objects.insert"],
        json!(["return-503", "return-reset-connection"])
    );
    assert_eq!(v["transport"], "HTTP");
    let list = send(server.addr(), "GET", "/retry_tests", &[], b"").unwrap();
    assert_eq!(list.json()["retry_test"][0]["id"], id.as_str());
    for bad in [
        json!({"instructions": {"storage.objects.insert": ["return-x"]}}),
        json!({"instructions": {"storage.notifications.list": ["return-503"]}}),
        json!({"instructions": {}}),
        json!({"instructions": {"storage.objects.get": ["return-503"]}, "transport": "GRPC"}),
    ] {
        let r = send(
            server.addr(),
            "POST",
            "/retry_test",
            &[],
            bad.to_string().as_bytes(),
        )
        .unwrap();
        assert_eq!(r.status, 400, "{bad}");
    }
    // A request naming an unknown test is 404 and does nothing.
    let r = media_upload(&server, "x", b"1", &[("x-retry-test-id", "nope")]);
    assert_eq!(r.status, 404);
    assert_eq!(server.object("bkt", "x"), None);
    let r = send(
        server.addr(),
        "DELETE",
        &format!("/retry_test/{id}"),
        &[],
        b"",
    )
    .unwrap();
    assert_eq!(r.status, 200);
    let r = send(server.addr(), "GET", &format!("/retry_test/{id}"), &[], b"").unwrap();
    assert_eq!(r.status, 404);
}

#[test]
fn return_code_answers_the_next_request_of_its_operation_once() {
    let server = server();
    assert_eq!(media_upload(&server, "o", b"hello", &[]).status, 200);
    for code in [408u16, 429, 500, 503] {
        let id = retry_test(
            &server,
            json!({
                "storage.objects.insert": [format!("return-{code}")],
                "storage.objects.get": [format!("return-{code}")],
                "storage.buckets.get": [format!("return-{code}")],
            }),
        );
        let h = [("x-retry-test-id", id.as_str())];
        // An operation with nothing queued is untouched.
        let list = send(server.addr(), "GET", "/storage/v1/b/bkt/o", &h, b"").unwrap();
        assert_eq!(list.status, 200);
        let name = format!("up{code}");
        let first = media_upload(&server, &name, b"data", &h);
        assert_eq!(first.status, code);
        assert_eq!(first.json()["error"]["code"], code);
        assert_eq!(
            server.object("bkt", &name),
            None,
            "nothing stored on {code}"
        );
        assert_eq!(media_upload(&server, &name, b"data", &h).status, 200);
        for path in ["/storage/v1/b/bkt/o/o?alt=media", "/storage/v1/b/bkt"] {
            assert_eq!(
                send(server.addr(), "GET", path, &h, b"").unwrap().status,
                code
            );
            assert_eq!(
                send(server.addr(), "GET", path, &h, b"").unwrap().status,
                200
            );
        }
        assert_eq!(retry_state(&server, &id)["completed"], true);
    }
}

#[test]
fn return_reset_connection_resets_without_storing() {
    let server = server();
    let id = retry_test(
        &server,
        json!({"storage.objects.insert": ["return-reset-connection"], "storage.objects.get": ["return-reset-connection"]}),
    );
    let body = data(100_000);
    let head = format!(
        "POST /upload/storage/v1/b/bkt/o?uploadType=media&name=r HTTP/1.1\r\nHost: x:1\r\nx-retry-test-id: {id}\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    let (answer, err) = raw(server.addr(), &head, &body);
    assert!(answer.is_empty(), "no answer");
    let kind = err.map(|e| e.kind());
    assert!(
        matches!(
            kind,
            Some(io::ErrorKind::ConnectionReset | io::ErrorKind::BrokenPipe)
        ),
        "{kind:?}"
    );
    assert_eq!(server.object("bkt", "r"), None);
    // A GET has no body left unread, and is reset all the same (SO_LINGER 0).
    assert_eq!(media_upload(&server, "r", b"x", &[]).status, 200);
    let head =
        format!("GET /storage/v1/b/bkt/o/r HTTP/1.1\r\nHost: x:1\r\nx-retry-test-id: {id}\r\n\r\n");
    let (answer, err) = raw(server.addr(), &head, b"");
    assert!(answer.is_empty());
    assert_eq!(err.map(|e| e.kind()), Some(io::ErrorKind::ConnectionReset));
    assert_eq!(retry_state(&server, &id)["completed"], true);
}

#[test]
fn return_503_after_256k_keeps_exactly_256k_of_the_crossing_chunk() {
    let server = server();
    let id = retry_test(
        &server,
        json!({"storage.objects.insert": ["return-503-after-256K"]}),
    );
    let h = [("x-retry-test-id", id.as_str())];
    let src = data(4 * KIB256 + 9);
    // The start is an insert too, but does not reach 256 KiB: the instruction stays.
    let r = send(
        server.addr(),
        "POST",
        "/upload/storage/v1/b/bkt/o?uploadType=resumable&name=big",
        &h,
        b"",
    )
    .unwrap();
    assert_eq!(r.status, 200);
    let session = target(r.header("location").unwrap());
    assert_eq!(retry_state(&server, &id)["completed"], false);
    let mut conn = Conn::open(server.addr());
    let r = put_chunk(
        &mut conn,
        &session,
        &src,
        0..2 * KIB256,
        Some(src.len()),
        &h,
    )
    .unwrap();
    assert_eq!(r.status, 503);
    assert_eq!(server.session(&session).unwrap().stored, KIB256 as u64);
    assert_eq!(retry_state(&server, &id)["completed"], true);
    let q = conn
        .request("PUT", &session, &[("Content-Range", "bytes */*")], b"")
        .unwrap();
    assert_eq!(q.status, 308);
    assert_eq!(q.header("range"), Some("bytes=0-262143"));
    let r = put_chunk(
        &mut conn,
        &session,
        &src,
        KIB256..src.len(),
        Some(src.len()),
        &h,
    )
    .unwrap();
    assert_eq!(r.status, 200);
    assert_eq!(server.object("bkt", "big").unwrap(), src);
}

#[test]
fn stall_after_k_delays_uploads_and_pauses_downloads() {
    let server = server();
    let id = retry_test(
        &server,
        json!({
            "storage.objects.insert": ["stall-for-1s-after-256K"],
            "storage.objects.get": ["stall-for-1s-after-128K"],
        }),
    );
    let h = [("x-retry-test-id", id.as_str())];
    let src = data(3 * KIB256);
    // Below 256 KiB: not consumed, not delayed.
    let t = Instant::now();
    assert_eq!(media_upload(&server, "small", &src[..1000], &h).status, 200);
    assert!(t.elapsed() < Duration::from_millis(900));
    let t = Instant::now();
    assert_eq!(media_upload(&server, "s", &src, &h).status, 200);
    assert!(t.elapsed() >= Duration::from_secs(1), "{:?}", t.elapsed());
    assert_eq!(server.object("bkt", "s").unwrap(), src);
    // The download's head and first 128 KiB come at once, the rest a second later.
    let head = format!(
        "GET /storage/v1/b/bkt/o/s?alt=media HTTP/1.1\r\nHost: x:1\r\nx-retry-test-id: {id}\r\nConnection: close\r\n\r\n"
    );
    let mut s = TcpStream::connect(server.addr()).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(head.as_bytes()).unwrap();
    let t = Instant::now();
    let mut got = Vec::new();
    let mut buf = [0u8; 65536];
    let mut first_pause = None;
    loop {
        let before = Instant::now();
        let n = s.read(&mut buf).unwrap();
        if n == 0 {
            break;
        }
        if before.elapsed() >= Duration::from_millis(800) {
            first_pause.get_or_insert(got.len());
        }
        got.extend_from_slice(&buf[..n]);
    }
    assert!(t.elapsed() >= Duration::from_secs(1));
    let (status, head, body) = split(&got);
    assert_eq!(status, 200);
    assert_eq!(body, src);
    let paused_at = first_pause.expect("a pause") - (head.len() + 4);
    assert_eq!(paused_at, 128 * 1024);
    assert_eq!(retry_state(&server, &id)["completed"], true);
}

#[test]
fn broken_stream_final_chunk_waits_for_the_completing_chunk() {
    let server = server();
    let id = retry_test(
        &server,
        json!({"storage.objects.insert": ["return-broken-stream-final-chunk-after-10B"]}),
    );
    let h = [("x-retry-test-id", id.as_str())];
    let session = json_session(&server, "bkt", "f");
    let src = data(KIB256 + 100);
    let mut conn = Conn::open(server.addr());
    let r = put_chunk(&mut conn, &session, &src, 0..KIB256, Some(src.len()), &h).unwrap();
    assert_eq!(r.status, 308);
    assert_eq!(retry_state(&server, &id)["completed"], false);
    let head = format!(
        "PUT {session} HTTP/1.1\r\nHost: x:1\r\nx-retry-test-id: {id}\r\nContent-Range: bytes {}-{}/{}\r\nContent-Length: 100\r\n\r\n",
        KIB256,
        src.len() - 1,
        src.len()
    );
    let (answer, _) = raw(server.addr(), &head, &src[KIB256..]);
    let (status, head, body) = split(&answer);
    assert_eq!(status, 200);
    assert_eq!(
        body.len(),
        10,
        "10 bytes of the resource, then the connection closed"
    );
    let declared: usize = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length: "))
        .unwrap()
        .parse()
        .unwrap();
    assert!(declared > 10);
    assert_eq!(
        server.object("bkt", "f").unwrap(),
        src,
        "stored all the same"
    );
    assert_eq!(retry_state(&server, &id)["completed"], true);
    let q = Conn::open(server.addr())
        .request("PUT", &session, &[("Content-Range", "bytes */*")], b"")
        .unwrap();
    assert_eq!(q.status, 200);
    assert_eq!(q.json()["size"], src.len().to_string());
}

#[test]
fn broken_stream_downloads_stop_short_of_their_declared_length() {
    let server = server();
    let src = data(600_000);
    assert_eq!(media_upload(&server, "d", &src, &[]).status, 200);
    let id = retry_test(
        &server,
        json!({"storage.objects.get": ["return-broken-stream", "return-broken-stream-after-256K"]}),
    );
    let head = format!(
        "GET /download/storage/v1/b/bkt/o/d?alt=media HTTP/1.1\r\nHost: x:1\r\nx-retry-test-id: {id}\r\n\r\n"
    );
    for want in [4, 256 * 1024] {
        let (answer, _) = raw(server.addr(), &head, b"");
        let (status, head, body) = split(&answer);
        assert_eq!(status, 200);
        assert!(head.contains("content-length: 600000"), "{head}");
        assert_eq!(body, &src[..want]);
    }
    assert_eq!(retry_state(&server, &id)["completed"], true);
    let (answer, _) = raw(
        server.addr(),
        &head.replace("HTTP/1.1\r\n", "HTTP/1.1\r\nConnection: close\r\n"),
        b"",
    );
    assert_eq!(split(&answer).2, src, "whole once the test is consumed");
}

#[test]
fn emulator_instructions_act_on_every_request_that_carries_them() {
    let server = server();
    let src = data(2 * KIB256);
    assert_eq!(media_upload(&server, "e", &src, &[]).status, 200);
    let get = |value: &str| {
        send(
            server.addr(),
            "GET",
            "/storage/v1/b/bkt/o/e?alt=media",
            &[("x-goog-emulator-instructions", value)],
            b"",
        )
        .unwrap()
    };
    for _ in 0..2 {
        let r = get("return-corrupted-data");
        assert_eq!(r.body.len(), src.len());
        assert_ne!(r.body[0], src[0]);
        assert_eq!(r.body[1..], src[1..]);
    }
    // return-503-after-256K on a session: 256 KiB kept, 503; retry-3 lets it through.
    let session = json_session(&server, "bkt", "e2");
    let mut conn = Conn::open(server.addr());
    let h = [(
        "x-goog-emulator-instructions",
        "return-503-after-256K/retry-1",
    )];
    let r = put_chunk(&mut conn, &session, &src, 0..src.len(), Some(src.len()), &h).unwrap();
    assert_eq!(r.status, 503);
    assert_eq!(server.session(&session).unwrap().stored, KIB256 as u64);
    let h = [(
        "x-goog-emulator-instructions",
        "return-503-after-256K/retry-3",
    )];
    let r = put_chunk(
        &mut conn,
        &session,
        &src,
        KIB256..src.len(),
        Some(src.len()),
        &h,
    )
    .unwrap();
    assert_eq!(r.status, 200);
    assert_eq!(server.object("bkt", "e2").unwrap(), src);
}

#[test]
fn a_session_keeps_the_retry_test_id_of_its_start() {
    // For clients that send extra headers on the start only (resumable gcs -H).
    let server = server();
    let id = retry_test(
        &server,
        json!({"storage.objects.insert": ["return-500-after-256K"]}),
    );
    let r = send(
        server.addr(),
        "POST",
        "/upload/storage/v1/b/bkt/o?uploadType=resumable&name=k",
        &[("x-retry-test-id", &id)],
        b"",
    )
    .unwrap();
    let session = target(r.header("location").unwrap());
    let src = data(2 * KIB256);
    let mut conn = Conn::open(server.addr());
    let r = put_chunk(
        &mut conn,
        &session,
        &src,
        0..src.len(),
        Some(src.len()),
        &[],
    )
    .unwrap();
    assert_eq!(r.status, 500);
    assert_eq!(retry_state(&server, &id)["completed"], true);
}

// ---- the core's GCS upload through the retry matrix ----

/// Drives the core's GCS upload, adding `x-retry-test-id` to every request (as Google's
/// clients do with a session-wide header).
fn drive_with_test_id(
    mut upload: GcsUpload,
    source: &[u8],
    id: &str,
) -> resumable_core::gcs::GcsCompletion {
    let outcome = core_drive_with(&mut upload, source, |send| {
        send.request
            .headers_mut()
            .insert("x-retry-test-id", id.parse().unwrap());
    });
    outcome.expect("the upload completes")
}

#[test]
fn the_core_passes_the_retry_matrix() {
    // G8: every instruction is retried through, and the object is right.
    let server = server();
    let src = data(5 * KIB256 + 1234);
    let matrix = [
        "return-503",
        "return-408",
        "return-429",
        "return-500",
        "return-reset-connection",
        "return-503-after-256K",
        "return-500-after-512K",
        "stall-for-1s-after-256K",
        "return-broken-stream-final-chunk-after-10B",
    ];
    for (i, instruction) in matrix.iter().enumerate() {
        // Twice in a row, so a retry meets a fault too.
        let id = retry_test(
            &server,
            json!({"storage.objects.insert": [instruction, instruction]}),
        );
        let name = format!("core{i}");
        let mut config = GcsConfig::new(Some(src.len() as u64));
        config.chunk_size = KIB256 as u64;
        config.retry = fast_retries();
        config.checksums = Checksums {
            crc32c: true,
            md5: true,
        };
        let start = Start::Json {
            url: server.gcs_json_url("bkt", &name).parse().unwrap(),
            content_type: http::HeaderValue::from_static("application/octet-stream"),
            metadata: None,
        };
        let done = drive_with_test_id(GcsUpload::new(start, config).unwrap(), &src, &id);
        assert_eq!(done.size, src.len() as u64, "{instruction}");
        assert_eq!(server.object("bkt", &name).unwrap(), src, "{instruction}");
        assert_eq!(
            retry_state(&server, &id)["completed"],
            true,
            "{instruction}"
        );
    }
}

#[test]
fn large_chunks_are_hashed_while_read_and_rewound_when_less_is_kept() {
    // G5, G7: chunks of 4 MiB and more are hashed on a thread as they arrive; whatever a
    // request ends up keeping (all, a persisted prefix, a cut prefix, nothing), the object's
    // checksums are those of its bytes.
    const MIB: usize = 1 << 20;
    let server = server();
    let src = data(30 * MIB + 77);
    let total = Some(src.len());
    let session = json_session(&server, "bkt", "big");
    let mut conn = Conn::open(server.addr());
    // 0..12 MiB, of which only 5 MiB are kept (the 503 after 5120 KiB): more was hashed.
    let id = retry_test(
        &server,
        json!({"storage.objects.insert": ["return-503-after-5120K"]}),
    );
    let r = put_chunk(
        &mut conn,
        &session,
        &src,
        0..12 * MIB,
        total,
        &[("x-retry-test-id", &id)],
    )
    .unwrap();
    assert_eq!(r.status, 503);
    assert_eq!(server.session(&session).unwrap().stored, 5 * MIB as u64);
    // 5..20 MiB cut after 9 MiB of body: 14 MiB kept (a multiple of 256 KiB).
    let r = put_chunk(
        &mut conn,
        &session,
        &src,
        5 * MIB..20 * MIB,
        total,
        &[("x-resumable-fault", "drop-after:9MiB")],
    );
    assert!(r.is_err(), "the connection was dropped");
    assert_eq!(server.session(&session).unwrap().stored, 14 * MIB as u64);
    let mut conn = Conn::open(server.addr());
    // The final chunk with a wrong x-goog-hash: refused, nothing kept.
    let wrong = format!("crc32c={}", crc_b64(b"not it"));
    let r = put_chunk(
        &mut conn,
        &session,
        &src,
        14 * MIB..src.len(),
        total,
        &[("x-goog-hash", &wrong)],
    )
    .unwrap();
    assert_eq!(r.status, 400);
    assert_eq!(server.session(&session).unwrap().stored, 14 * MIB as u64);
    // Then right.
    let right = format!("crc32c={},md5={}", crc_b64(&src), md5_b64(&src));
    let r = put_chunk(
        &mut conn,
        &session,
        &src,
        14 * MIB..src.len(),
        total,
        &[("x-goog-hash", &right)],
    )
    .unwrap();
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["crc32c"], crc_b64(&src));
    assert_eq!(r.json()["md5Hash"], md5_b64(&src));
    assert!(server.object("bkt", "big").unwrap() == src);
    // A whole object in one request, and a media upload of 9 MB: hashed while read too.
    let session = json_session(&server, "bkt", "one");
    let r = put_chunk(&mut conn, &session, &src, 0..src.len(), total, &[]).unwrap();
    assert_eq!(r.json()["md5Hash"], md5_b64(&src));
    let r = media_upload(&server, "media", &src[..9_000_000], &[]);
    assert_eq!(r.json()["crc32c"], crc_b64(&src[..9_000_000]));
    assert_eq!(r.json()["md5Hash"], md5_b64(&src[..9_000_000]));
}

#[test]
fn stall_for_pauses_an_upload_mid_body_at_its_offset() {
    // The server takes exactly 256 KiB of the body, stops reading for the stall, then reads
    // on and stores the whole object.
    let server = server();
    let id = retry_test(
        &server,
        json!({"storage.objects.insert": ["stall-for-2s-after-256K"]}),
    );
    let src = data(4 << 20);
    let before = server.body_bytes_received();
    let addr = server.addr();
    let (id2, body) = (id.clone(), src.clone());
    let sender = std::thread::spawn(move || {
        let head = format!(
            "POST /upload/storage/v1/b/bkt/o?uploadType=media&name=p HTTP/1.1\r\nHost: x:1\r\nx-retry-test-id: {id2}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
            body.len()
        );
        raw(addr, &head, &body)
    });
    std::thread::sleep(Duration::from_millis(800));
    assert_eq!(
        server.body_bytes_received() - before,
        256 * 1024,
        "paused at 256 KiB"
    );
    let (answer, _) = sender.join().unwrap();
    assert_eq!(split(&answer).0, 200);
    assert_eq!(server.object("bkt", "p").unwrap(), src);
    assert_eq!(retry_state(&server, &id)["completed"], true);
}
