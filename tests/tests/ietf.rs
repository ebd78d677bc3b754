//! The conformance server's side of the resumable-upload draft, rule by rule (R1–R16) at the
//! interop versions it speaks, with a raw HTTP client; then the core's `IetfUpload` against
//! it, with the fault kinds, at interop 5, 6, 8 and 9.

mod common;

use std::io::{Read as _, Write as _};
use std::net::TcpStream;
use std::time::Instant;

use common::*;
use resumable_core::ietf::{IetfConfig, IetfStart, IetfUpload};
use resumable_core::{Action, Error, ProtocolViolation, Upload};
use resumable_server::{Server, ServerConfig};

fn v(n: u32) -> (&'static str, String) {
    ("Upload-Draft-Interop-Version", n.to_string())
}

fn req(server: &Server, method: &str, path: &str, headers: &[(&str, &str)], body: &[u8]) -> Resp {
    send(server.addr(), method, path, headers, body).unwrap()
}

fn create(server: &Server, interop: u32, headers: &[(&str, &str)], body: &[u8]) -> Resp {
    let iv = v(interop);
    let mut h = vec![(iv.0, iv.1.as_str())];
    h.extend_from_slice(headers);
    req(server, "POST", &target(&server.ietf_url()), &h, body)
}

fn append(
    server: &Server,
    interop: u32,
    path: &str,
    offset: u64,
    complete: bool,
    body: &[u8],
) -> Resp {
    let iv = v(interop);
    let off = offset.to_string();
    let mut h = vec![
        (iv.0, iv.1.as_str()),
        ("Upload-Offset", off.as_str()),
        ("Upload-Complete", if complete { "?1" } else { "?0" }),
    ];
    if interop >= 6 {
        h.push(("Content-Type", "application/partial-upload"));
    }
    req(server, "PATCH", path, &h, body)
}

fn head(server: &Server, interop: u32, path: &str) -> Resp {
    let iv = v(interop);
    req(server, "HEAD", path, &[(iv.0, iv.1.as_str())], b"")
}

#[test]
fn r1_every_request_needs_an_interop_version_the_server_speaks() {
    let server = server();
    let url = target(&server.ietf_url());
    for bad in [None, Some("4"), Some("10"), Some("?1"), Some("-6")] {
        let mut h = vec![("Upload-Complete", "?0"), ("Upload-Length", "3")];
        if let Some(b) = bad {
            h.push(("Upload-Draft-Interop-Version", b));
        }
        assert_eq!(req(&server, "POST", &url, &h, b"").status, 400, "{bad:?}");
    }
    assert!(server.ietf_uploads().is_empty());
    // An upload answers only at the version it was created with.
    let r = create(
        &server,
        8,
        &[("Upload-Complete", "?0"), ("Upload-Length", "3")],
        b"",
    );
    let path = target(r.header("location").unwrap());
    assert_eq!(head(&server, 9, &path).status, 400);
    assert_eq!(head(&server, 8, &path).status, 204);
}

#[test]
fn r4_the_creation_sends_a_104_with_location_version_and_limits_before_the_final_answer() {
    let server = server();
    let mut s = TcpStream::connect(server.addr()).unwrap();
    let request = format!(
        "POST /ietf/files HTTP/1.1\r\nHost: {}\r\nUpload-Draft-Interop-Version: 9\r\n\
         Upload-Complete: ?1\r\nContent-Length: 5\r\nConnection: close\r\n\r\nhello",
        server.addr()
    );
    s.write_all(request.as_bytes()).unwrap();
    let mut text = String::new();
    s.read_to_string(&mut text).unwrap();
    let lower = text.to_ascii_lowercase();
    assert!(text.starts_with("HTTP/1.1 104 "), "{text}");
    let interim = &lower[..lower.find("\r\n\r\n").unwrap()];
    assert!(
        interim.contains("upload-draft-interop-version: 9"),
        "{text}"
    );
    assert!(interim.contains("location: http://"), "{text}");
    assert!(interim.contains("upload-limit: min-size=0"), "{text}");
    let rest = &text[interim.len() + 4..];
    assert!(rest.starts_with("HTTP/1.1 200 "), "{rest}");
    assert!(rest.to_ascii_lowercase().contains("upload-complete: ?1"));
    let info = server.ietf_uploads().pop().unwrap();
    assert!(info.complete);
    assert_eq!(server.ietf_upload_bytes(&info.id).unwrap(), b"hello");
}

#[test]
fn r3_r5_a_careful_creation_answers_201_and_inconsistent_lengths_are_refused() {
    let server = server();
    let r = create(
        &server,
        9,
        &[("Upload-Complete", "?0"), ("Upload-Length", "10")],
        b"",
    );
    assert_eq!(r.status, 201);
    assert!(r.header("location").is_some());
    assert_eq!(r.header("upload-offset"), Some("0"));
    assert_eq!(r.header("upload-complete"), Some("?0"));
    assert!(r.header("upload-limit").unwrap().contains("max-age="));
    // Upload-Length and ?1 + Content-Length disagree.
    let r = create(
        &server,
        9,
        &[("Upload-Complete", "?1"), ("Upload-Length", "10")],
        b"abc",
    );
    assert_eq!(r.status, 400);
    assert!(r.text().contains("inconsistent-upload-length"));
    // Not a Boolean: not a resumable upload.
    let r = create(&server, 9, &[("Upload-Complete", "true")], b"abc");
    assert_eq!(r.status, 400);
    // Above the largest size.
    let small = server_with(ServerConfig {
        max_object_size: 4,
        ..ServerConfig::default()
    });
    let r = create(
        &small,
        9,
        &[("Upload-Complete", "?0"), ("Upload-Length", "5")],
        b"",
    );
    assert_eq!(r.status, 413);
    assert!(r.header("upload-limit").unwrap().contains("max-size=4"));
}

#[test]
fn r7_r9_r19_head_and_append_follow_the_offset_per_interop_version() {
    for interop in [5, 6, 7, 8, 9] {
        let server = server();
        let r = create(
            &server,
            interop,
            &[("Upload-Complete", "?0"), ("Upload-Length", "10")],
            b"",
        );
        let path = target(r.header("location").unwrap());
        let h = head(&server, interop, &path);
        assert_eq!(h.status, 204);
        assert_eq!(h.header("upload-offset"), Some("0"));
        assert_eq!(h.header("upload-complete"), Some("?0"));
        assert_eq!(h.header("upload-length"), Some("10"));
        assert_eq!(h.header("cache-control"), Some("no-store"));
        let key = if interop >= 7 { "max-age=" } else { "expires=" };
        assert!(h.header("upload-limit").unwrap().contains(key), "{interop}");
        let r = append(&server, interop, &path, 0, false, b"hello");
        assert_eq!(r.status, 204);
        assert_eq!(r.header("upload-complete"), Some("?0"));
        // Before 7 the append answer carries the offset; from 7 on it need not.
        let want = (interop < 7).then_some("5");
        assert_eq!(r.header("upload-offset"), want, "{interop}");
        let r = append(&server, interop, &path, 5, true, b"world");
        assert_eq!(r.status, 200);
        assert_eq!(r.header("upload-complete"), Some("?1"));
        assert_eq!(
            head(&server, interop, &path).header("upload-complete"),
            Some("?1")
        );
        assert_eq!(server.ietf_upload_bytes(&path).unwrap(), b"helloworld");
        // The final answer again, for a client that lost it (R7).
        assert_eq!(append(&server, interop, &path, 10, true, b"").status, 200);
    }
}

#[test]
fn r9_r19_from_interop_6_an_append_needs_partial_upload() {
    let server = server();
    let r = create(
        &server,
        6,
        &[("Upload-Complete", "?0"), ("Upload-Length", "3")],
        b"",
    );
    let path = target(r.header("location").unwrap());
    let r = req(
        &server,
        "PATCH",
        &path,
        &[
            ("Upload-Draft-Interop-Version", "6"),
            ("Upload-Offset", "0"),
            ("Upload-Complete", "?1"),
            ("Content-Type", "application/offset+octet-stream"),
        ],
        b"abc",
    );
    assert_eq!(r.status, 415);
    // Interop 5 needs none.
    let r = create(
        &server,
        5,
        &[("Upload-Complete", "?0"), ("Upload-Length", "3")],
        b"",
    );
    let path = target(r.header("location").unwrap());
    assert_eq!(append(&server, 5, &path, 0, true, b"abc").status, 200);
}

#[test]
fn r10_a_wrong_offset_gets_409_with_the_right_one_and_a_problem_body() {
    let server = server();
    let r = create(
        &server,
        9,
        &[("Upload-Complete", "?0"), ("Upload-Length", "10")],
        b"",
    );
    let path = target(r.header("location").unwrap());
    append(&server, 9, &path, 0, false, b"abc");
    let r = append(&server, 9, &path, 1, false, b"x");
    assert_eq!(r.status, 409);
    assert_eq!(r.header("upload-offset"), Some("3"));
    assert_eq!(r.header("upload-complete"), Some("?0"));
    let body = r.json();
    assert!(
        body["type"]
            .as_str()
            .unwrap()
            .ends_with("#mismatching-upload-offset")
    );
    assert_eq!(body["expected-offset"], 3);
    assert_eq!(body["provided-offset"], 1);
    assert_eq!(server.ietf_upload(&path).unwrap().offset, 3);
}

#[test]
fn r11_r12_options_and_413_announce_max_append_size() {
    let server = server_with(ServerConfig {
        ietf_max_append_size: Some(4),
        ..ServerConfig::default()
    });
    let r = req(
        &server,
        "OPTIONS",
        &target(&server.ietf_url()),
        &[("Upload-Draft-Interop-Version", "8")],
        b"",
    );
    assert_eq!(r.status, 204);
    assert!(
        r.header("upload-limit")
            .unwrap()
            .contains("max-append-size=4")
    );
    let r = create(
        &server,
        8,
        &[("Upload-Complete", "?0"), ("Upload-Length", "10")],
        b"",
    );
    let path = target(r.header("location").unwrap());
    let r = append(&server, 8, &path, 0, false, b"hello");
    assert_eq!(r.status, 413);
    assert!(
        r.header("upload-limit")
            .unwrap()
            .contains("max-append-size=4")
    );
    assert_eq!(server.ietf_upload(&path).unwrap().offset, 0);
}

#[test]
fn r13_delete_forgets_the_upload() {
    let server = server();
    let r = create(
        &server,
        9,
        &[("Upload-Complete", "?0"), ("Upload-Length", "10")],
        b"",
    );
    let path = target(r.header("location").unwrap());
    assert_eq!(
        req(
            &server,
            "DELETE",
            &path,
            &[("Upload-Draft-Interop-Version", "9")],
            b""
        )
        .status,
        204
    );
    assert_eq!(head(&server, 9, &path).status, 404);
}

#[test]
fn r16_a_body_cut_short_keeps_its_prefix_and_is_not_complete() {
    let server = scripted("ietf.append#1=drop-after:3");
    let r = create(
        &server,
        9,
        &[("Upload-Complete", "?0"), ("Upload-Length", "10")],
        b"",
    );
    let path = target(r.header("location").unwrap());
    let iv = v(9);
    let r = send(
        server.addr(),
        "PATCH",
        &path,
        &[
            (iv.0, iv.1.as_str()),
            ("Upload-Offset", "0"),
            ("Upload-Complete", "?1"),
            ("Content-Type", "application/partial-upload"),
        ],
        b"0123456789",
    );
    assert!(r.is_err(), "the connection is closed");
    let info = server.ietf_upload(&path).unwrap();
    assert_eq!(info.offset, 3);
    assert!(!info.complete);
    assert_eq!(
        head(&server, 9, &path).header("upload-complete"),
        Some("?0")
    );
}

// ---- the core's client against the server ----

fn client(server: &Server, interop: u32, total: usize, append: u64) -> IetfUpload {
    let mut c = IetfConfig::new(total as u64);
    c.append_size = append;
    c.interop_version = interop;
    c.retry = fast_retries();
    IetfUpload::new(
        IetfStart::Create {
            endpoint: server.ietf_url().parse().unwrap(),
        },
        c,
    )
    .unwrap()
}

#[test]
fn the_core_uploads_through_every_fault_kind_at_each_interop_version() {
    let src = data(200_000);
    let specs = [
        "",
        "ietf.append#2=drop-after:50000",
        "ietf.append#1=status:503x2; ietf.head#1=status:500",
        "ietf.append#2=persist:1000",
        "ietf.append#3=stall:50ms,truncate",
        "ietf.create#1=status:503",
        "ietf.create#1=drop-after:0",
        "ietf.append#1=drop-after:999999",
    ];
    for interop in [5, 6, 8, 9] {
        for spec in specs {
            let server = scripted(spec);
            let mut upload = client(&server, interop, src.len(), 64 * 1024);
            let done =
                core_drive(&mut upload, &src).unwrap_or_else(|e| panic!("{interop} {spec}: {e}"));
            assert_eq!(done.size, src.len() as u64);
            let path = done.upload_url.unwrap().expose().path().to_owned();
            let info = server.ietf_upload(&path).unwrap();
            assert!(info.complete, "{interop} {spec}");
            assert_eq!(info.interop, interop);
            assert_eq!(
                server.ietf_upload_bytes(&path).unwrap(),
                src,
                "{interop} {spec}"
            );
        }
    }
}

#[test]
fn the_core_obeys_max_append_size_from_the_server() {
    let src = data(50_000);
    let server = server_with(ServerConfig {
        ietf_max_append_size: Some(7_000),
        ..ServerConfig::default()
    });
    let mut upload = client(&server, 9, src.len(), 64 * 1024);
    let done = core_drive(&mut upload, &src).unwrap();
    let path = done.upload_url.unwrap().expose().path().to_owned();
    assert_eq!(server.ietf_upload_bytes(&path).unwrap(), src);
    // Every append within the limit: no byte was sent twice.
    assert_eq!(
        server.ietf_upload(&path).unwrap().body_bytes_received,
        src.len() as u64
    );
    assert_eq!(upload.stats().requests, 1 + 50_000u64.div_ceil(7_000));
}

#[test]
fn the_core_ends_typed_on_lies_and_gone_uploads() {
    let src = data(100_000);
    for interop in [6, 9] {
        for (spec, check) in [
            (
                "ietf.append#1=lie:5",
                (|e: &Error| {
                    matches!(
                        e,
                        Error::Protocol(ProtocolViolation::RangeBeyondSent { .. })
                    )
                }) as fn(&Error) -> bool,
            ),
            ("ietf.append#1=status:503; ietf.head#1=lie", |e| {
                matches!(
                    e,
                    Error::Protocol(ProtocolViolation::RangeBeyondSent { .. })
                )
            }),
            ("ietf.append#1=status:503; ietf.head#1=no-range", |e| {
                matches!(e, Error::Protocol(ProtocolViolation::MalformedResponse(_)))
            }),
            ("ietf.append#2=expire", |e| {
                matches!(e, Error::SessionGone { .. } | Error::Expired { .. })
            }),
            ("ietf.append=status:400", |e| {
                matches!(e, Error::Server { .. })
            }),
        ] {
            let server = scripted(spec);
            let mut upload = client(&server, interop, src.len(), 40_000);
            let e = core_drive(&mut upload, &src).unwrap_err();
            assert!(check(&e), "{interop} {spec}: {e:?}");
        }
    }
}

#[test]
fn the_core_cancels_with_delete() {
    let src = data(100_000);
    let server = server();
    let mut upload = client(&server, 9, src.len(), 30_000);
    let mut cancelled = false;
    let outcome = loop {
        match upload.poll_action(Instant::now()) {
            Action::Send(t) => {
                let r = core_send(&t, &src);
                match r {
                    Ok(r) => upload.handle_response(Instant::now(), t.id, r).unwrap(),
                    Err(f) => upload.handle_failure(Instant::now(), t.id, f).unwrap(),
                }
                if upload.persisted() > 0 && !cancelled {
                    cancelled = true;
                    upload.cancel();
                }
            }
            Action::Done(o) => break o,
            other => panic!("{other:?}"),
        }
    };
    assert!(matches!(outcome, Err(Error::Cancelled)));
    assert!(server.ietf_uploads().is_empty(), "deleted on the server");
}
