//! The tus server side, rule by rule (U1–U12), with a raw HTTP client; then the core's
//! `TusUpload` driven over raw sockets against it, with the fault kinds.

mod common;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use common::*;
use md5::Digest as _;
use resumable_core::tus::{ChecksumAlgorithm, TusConfig, TusStart, TusUpload};
use resumable_core::{Error, ProtocolViolation};
use resumable_server::{Server, ServerConfig};

const V: (&str, &str) = ("Tus-Resumable", "1.0.0");

fn create(server: &Server, headers: &[(&str, &str)], body: &[u8]) -> Resp {
    let mut h = vec![V];
    h.extend_from_slice(headers);
    send(server.addr(), "POST", &target(&server.tus_url()), &h, body).unwrap()
}

fn new_upload(server: &Server, length: &str) -> String {
    let r = create(server, &[("Upload-Length", length)], b"");
    assert_eq!(r.status, 201, "{}", r.text());
    target(r.header("location").unwrap())
}

fn patch(server: &Server, path: &str, offset: u64, body: &[u8], extra: &[(&str, &str)]) -> Resp {
    let off = offset.to_string();
    let mut h = vec![
        V,
        ("Content-Type", "application/offset+octet-stream"),
        ("Upload-Offset", off.as_str()),
    ];
    h.extend_from_slice(extra);
    send(server.addr(), "PATCH", path, &h, body).unwrap()
}

fn head(server: &Server, path: &str) -> Resp {
    send(server.addr(), "HEAD", path, &[V], b"").unwrap()
}

#[test]
fn u1_requests_without_tus_resumable_get_412_and_every_answer_carries_it() {
    let server = server();
    let r = send(
        server.addr(),
        "POST",
        &target(&server.tus_url()),
        &[("Upload-Length", "3")],
        b"",
    )
    .unwrap();
    assert_eq!(r.status, 412);
    assert_eq!(r.header("tus-version"), Some("1.0.0"));
    assert!(server.tus_uploads().is_empty(), "not processed");
    let path = new_upload(&server, "3");
    assert_eq!(head(&server, &path).header("tus-resumable"), Some("1.0.0"));
}

#[test]
fn u2_options_lists_the_version_extensions_size_and_algorithms() {
    let server = server();
    let r = send(
        server.addr(),
        "OPTIONS",
        &target(&server.tus_url()),
        &[],
        b"",
    )
    .unwrap();
    assert_eq!(r.status, 204);
    assert_eq!(r.header("tus-version"), Some("1.0.0"));
    let ext = r.header("tus-extension").unwrap();
    for e in [
        "creation",
        "creation-with-upload",
        "creation-defer-length",
        "checksum",
        "expiration",
        "termination",
    ] {
        assert!(ext.split(',').any(|x| x == e), "{e}");
    }
    assert!(r.header("tus-checksum-algorithm").unwrap().contains("sha1"));
    assert!(r.header("tus-max-size").is_some());
}

#[test]
fn u3_u4_head_and_patch_follow_the_offset() {
    let server = server();
    let meta = format!("filename {}", STANDARD.encode("a.txt"));
    let r = create(
        &server,
        &[("Upload-Length", "10"), ("Upload-Metadata", &meta)],
        b"",
    );
    let path = target(r.header("location").unwrap());
    assert!(r.header("upload-expires").is_some(), "U10");
    let h = head(&server, &path);
    assert_eq!(h.status, 200);
    assert_eq!(h.header("upload-offset"), Some("0"));
    assert_eq!(h.header("upload-length"), Some("10"));
    assert_eq!(h.header("upload-metadata"), Some(meta.as_str()));
    assert_eq!(h.header("cache-control"), Some("no-store"));
    let r = patch(&server, &path, 0, b"hello", &[]);
    assert_eq!((r.status, r.header("upload-offset")), (204, Some("5")));
    // A wrong offset changes nothing.
    let r = patch(&server, &path, 3, b"xx", &[]);
    assert_eq!(r.status, 409);
    assert_eq!(head(&server, &path).header("upload-offset"), Some("5"));
    // Another content type.
    let r = send(
        server.addr(),
        "PATCH",
        &path,
        &[V, ("Upload-Offset", "5"), ("Content-Type", "text/plain")],
        b"x",
    )
    .unwrap();
    assert_eq!(r.status, 415);
    // Past the length: 413, before reading.
    assert_eq!(patch(&server, &path, 5, b"too many bytes", &[]).status, 413);
    assert_eq!(
        patch(&server, &path, 5, b" tus!", &[]).header("upload-offset"),
        Some("10")
    );
    assert_eq!(server.tus_upload_bytes(&path).unwrap(), b"hello tus!");
    let info = server.tus_upload(&path).unwrap();
    assert!(info.complete);
    assert_eq!(
        info.metadata_pairs,
        vec![("filename".to_owned(), b"a.txt".to_vec())]
    );
}

#[test]
fn u5_a_post_with_method_override_is_the_method_it_names() {
    let server = server();
    let path = new_upload(&server, "3");
    let r = send(
        server.addr(),
        "POST",
        &path,
        &[
            V,
            ("X-HTTP-Method-Override", "PATCH"),
            ("Content-Type", "application/offset+octet-stream"),
            ("Upload-Offset", "0"),
        ],
        b"abc",
    )
    .unwrap();
    assert_eq!((r.status, r.header("upload-offset")), (204, Some("3")));
    let r = send(
        server.addr(),
        "POST",
        &path,
        &[V, ("X-HTTP-Method-Override", "DELETE")],
        b"",
    )
    .unwrap();
    assert_eq!(r.status, 204);
    assert_eq!(head(&server, &path).status, 404);
}

#[test]
fn u6_u7_creation_is_checked_strictly() {
    let server = server();
    for (headers, status) in [
        (&[][..], 400),
        (&[("Upload-Length", "3"), ("Upload-Defer-Length", "1")], 400),
        (&[("Upload-Defer-Length", "2")], 400),
        (&[("Upload-Length", "-3")], 400),
        (&[("Upload-Length", "3"), ("Upload-Metadata", "a b c")], 400),
        (
            &[("Upload-Length", "3"), ("Upload-Metadata", "k YQ==,k YQ==")],
            400,
        ),
        (&[("Upload-Length", "99999999999999999999")], 400),
    ] {
        assert_eq!(create(&server, headers, b"").status, status, "{headers:?}");
    }
    let small = server_with(ServerConfig {
        max_object_size: 10,
        ..ServerConfig::default()
    });
    assert_eq!(create(&small, &[("Upload-Length", "11")], b"").status, 413);
}

#[test]
fn u8_creation_with_upload_stores_the_first_bytes() {
    let server = server();
    let r = create(
        &server,
        &[
            ("Upload-Length", "6"),
            ("Content-Type", "application/offset+octet-stream"),
        ],
        b"abc",
    );
    assert_eq!((r.status, r.header("upload-offset")), (201, Some("3")));
    let path = target(r.header("location").unwrap());
    assert_eq!(server.tus_upload_bytes(&path).unwrap(), b"abc");
}

#[test]
fn u9_a_deferred_length_is_given_once_by_a_patch() {
    let server = server();
    let r = create(&server, &[("Upload-Defer-Length", "1")], b"");
    let path = target(r.header("location").unwrap());
    assert_eq!(
        head(&server, &path).header("upload-defer-length"),
        Some("1")
    );
    assert_eq!(
        patch(&server, &path, 0, b"ab", &[]).header("upload-offset"),
        Some("2")
    );
    assert_eq!(
        patch(&server, &path, 2, b"", &[("Upload-Length", "1")]).status,
        400,
        "below the offset"
    );
    assert_eq!(
        patch(&server, &path, 2, b"c", &[("Upload-Length", "3")]).status,
        204
    );
    let h = head(&server, &path);
    assert_eq!(
        (h.header("upload-length"), h.header("upload-defer-length")),
        (Some("3"), None)
    );
    assert_eq!(
        patch(&server, &path, 3, b"", &[("Upload-Length", "3")]).status,
        400,
        "already known"
    );
    assert_eq!(
        patch(&server, &path, 3, b"", &[]).status,
        204,
        "complete: unchanged"
    );
}

#[test]
fn u10_an_expired_upload_answers_410() {
    let server = server();
    let path = new_upload(&server, "3");
    assert!(server.expire_tus_upload(&path));
    assert_eq!(head(&server, &path).status, 410);
    assert_eq!(patch(&server, &path, 0, b"a", &[]).status, 410);
}

#[test]
fn u11_checksums_are_verified_and_a_mismatch_keeps_nothing() {
    let server = server();
    let path = new_upload(&server, "6");
    let md5 = format!("md5 {}", STANDARD.encode(md5::Md5::digest(b"abc")));
    assert_eq!(
        patch(&server, &path, 0, b"abc", &[("Upload-Checksum", &md5)]).status,
        204
    );
    let wrong = format!("md5 {}", STANDARD.encode(md5::Md5::digest(b"xyz")));
    assert_eq!(
        patch(&server, &path, 3, b"def", &[("Upload-Checksum", &wrong)]).status,
        460
    );
    assert_eq!(head(&server, &path).header("upload-offset"), Some("3"));
    assert_eq!(
        patch(
            &server,
            &path,
            3,
            b"def",
            &[("Upload-Checksum", "crc32 AAAAAA==")]
        )
        .status,
        400
    );
    assert_eq!(server.tus_upload(&path).unwrap().checksum_mismatches, 1);
}

#[test]
fn u12_delete_terminates() {
    let server = server();
    let path = new_upload(&server, "3");
    assert_eq!(
        send(server.addr(), "DELETE", &path, &[V], b"")
            .unwrap()
            .status,
        204
    );
    assert_eq!(head(&server, &path).status, 404);
    assert_eq!(patch(&server, &path, 0, b"a", &[]).status, 404);
}

// ---- the core's client against the server ----

fn client(server: &Server, total: usize, chunk: u64) -> TusUpload {
    let mut c = TusConfig::new(Some(total as u64));
    c.chunk_size = chunk;
    c.retry = fast_retries();
    c.metadata = vec![("filename".into(), b"f.bin".to_vec())];
    TusUpload::new(
        TusStart::Create {
            endpoint: server.tus_url().parse().unwrap(),
        },
        c,
    )
    .unwrap()
}

#[test]
fn the_core_uploads_through_every_fault_kind() {
    let src = data(300_000);
    let specs = [
        "",
        "tus.patch#2=drop-after:50000",
        "tus.patch#1=status:503x2; tus.head#1=status:500",
        "tus.patch#2=persist:1000",
        "tus.patch#3=stall:50ms,truncate",
        "tus.create#1=status:503",
        "tus.patch#1=drop-after:999999",
    ];
    for spec in specs {
        let server = scripted(spec);
        let mut upload = client(&server, src.len(), 64 * 1024);
        let done = core_drive(&mut upload, &src).unwrap_or_else(|e| panic!("{spec}: {e}"));
        assert_eq!(done.size, src.len() as u64);
        let path = done.upload_url.expose().path().to_owned();
        assert_eq!(server.tus_upload_bytes(&path).unwrap(), src, "{spec}");
    }
}

#[test]
fn the_core_sends_checksums_the_server_verifies_and_resends_after_460() {
    let src = data(100_000);
    // Two answers 460 (a mismatch as the client sees it: nothing stored), then a lock (423).
    let server = scripted("tus.patch#2..3=status:460; tus.patch#5=status:423");
    let mut c = TusConfig::new(Some(src.len() as u64));
    c.chunk_size = 30_000;
    c.retry = fast_retries();
    c.discover = true;
    c.checksum = Some(ChecksumAlgorithm::Sha1);
    let mut upload = TusUpload::new(
        TusStart::Create {
            endpoint: server.tus_url().parse().unwrap(),
        },
        c,
    )
    .unwrap();
    let done = core_drive(&mut upload, &src).unwrap();
    let path = done.upload_url.expose().path().to_owned();
    assert_eq!(server.tus_upload_bytes(&path).unwrap(), src);
    // Four chunks, two of them sent again after 460, one after 423: every checksum the
    // server checked was right.
    let info = server.tus_upload(&path).unwrap();
    assert_eq!(info.checksum_mismatches, 0);
    assert_eq!(
        info.body_bytes_received,
        src.len() as u64 + 2 * 30_000 + 30_000
    );
}

#[test]
fn the_core_ends_typed_on_lies_and_gone_uploads() {
    let src = data(100_000);
    for (spec, check) in [
        (
            "tus.patch#1=lie:5",
            (|e: &Error| {
                matches!(
                    e,
                    Error::Protocol(ProtocolViolation::RangeBeyondSent { .. })
                )
            }) as fn(&Error) -> bool,
        ),
        ("tus.patch#1=no-range", |e| {
            matches!(e, Error::Protocol(ProtocolViolation::MalformedResponse(_)))
        }),
        ("tus.patch#2=expire", |e| {
            matches!(e, Error::SessionGone { .. } | Error::Expired { .. })
        }),
        ("tus.patch#1=status:503; tus.head#1=lie", |e| {
            matches!(
                e,
                Error::Protocol(ProtocolViolation::RangeBeyondSent { .. })
            )
        }),
    ] {
        let server = scripted(spec);
        let mut upload = client(&server, src.len(), 40_000);
        let e = core_drive(&mut upload, &src).unwrap_err();
        assert!(check(&e), "{spec}: {e:?}");
    }
}
