//! Each fault, injected per request (header or query), per session and per server script.

mod common;

use std::io::Write;
use std::time::{Duration, Instant};

use common::*;
use resumable_server::{FaultScript, ServerConfig};

fn scripted(spec: &str) -> resumable_server::Server {
    server_with(ServerConfig {
        faults: FaultScript::parse(spec).unwrap(),
        ..ServerConfig::default()
    })
}

#[test]
fn drop_after_keeps_the_received_prefix_rounded_down() {
    // G5, G8: the connection is closed mid-body without an answer; what arrived is kept,
    // rounded down to 256 KiB.
    let server = server();
    let session = json_session(&server, "b", "o");
    let src = data(4 * KIB256);
    let mut conn = Conn::open(server.addr());
    let cut = 2 * KIB256 + 1000;
    let r = put_chunk(
        &mut conn,
        &session,
        &src,
        0..4 * KIB256,
        Some(4 * KIB256),
        &[("x-resumable-fault", &format!("drop-after:{cut}"))],
    );
    assert!(r.is_err(), "no answer expected: {r:?}");
    let info = server.session(&session).unwrap();
    assert_eq!(info.stored, 2 * KIB256 as u64);
    assert_eq!(info.body_bytes_received, cut as u64);
    assert_eq!(server.session_bytes(&session).unwrap(), &src[..2 * KIB256]);
    let log = server.request_log();
    assert_eq!(log.last().unwrap().status, None);
    assert_eq!(log.last().unwrap().faults, format!("drop-after:{cut}"));
    // The status query tells the client where to resume.
    let q = send(
        server.addr(),
        "PUT",
        &session,
        &[("Content-Range", "bytes */1048576")],
        b"",
    )
    .unwrap();
    assert_eq!(q.header("range"), Some("bytes=0-524287"));
}

#[test]
fn drop_after_a_whole_body_loses_only_the_answer() {
    // G8: the request is processed, then the connection closes instead of answering.
    let server = server();
    let session = json_session(&server, "b", "o");
    let src = data(KIB256 + 7);
    let mut conn = Conn::open(server.addr());
    let r = put_chunk(
        &mut conn,
        &session,
        &src,
        0..src.len(),
        Some(src.len()),
        &[("x-resumable-fault", "drop-after:1m")],
    );
    assert!(r.is_err());
    assert_eq!(server.object("b", "o").unwrap(), src);
    // A status query (or a resend) now learns of the completion.
    let q = send(
        server.addr(),
        "PUT",
        &session,
        &[("Content-Range", "bytes */262151")],
        b"",
    )
    .unwrap();
    assert_eq!(q.status, 200);
}

#[test]
fn a_client_going_away_mid_body_is_like_drop_after() {
    // G5: a real disconnect keeps the received prefix rounded down to 256 KiB.
    let server = server();
    let session = json_session(&server, "b", "o");
    let src = data(3 * KIB256);
    let mut conn = Conn::open(server.addr());
    let head = format!(
        "PUT {session} HTTP/1.1\r\nHost: x\r\nContent-Range: bytes 0-786431/*\r\nContent-Length: 786432\r\n\r\n"
    );
    conn.stream.write_all(head.as_bytes()).unwrap();
    conn.stream.write_all(&src[..KIB256 + 5]).unwrap();
    drop(conn);
    let deadline = Instant::now() + Duration::from_secs(5);
    while server.request_log().len() < 2 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(5));
    }
    assert_eq!(server.session(&session).unwrap().stored, KIB256 as u64);
    assert_eq!(server.request_log()[1].status, None);
}

#[test]
fn persist_stores_less_and_says_so() {
    // G5: the server persists fewer bytes than were sent; the 308 Range says how many.
    let server = server();
    let session = json_session(&server, "b", "o");
    let src = data(4 * KIB256);
    let mut conn = Conn::open(server.addr());
    let r = put_chunk(
        &mut conn,
        &session,
        &src,
        0..3 * KIB256,
        Some(src.len()),
        &[("x-resumable-fault", "persist:256k")],
    )
    .unwrap();
    assert_eq!(r.status, 308);
    assert_eq!(r.header("range"), Some("bytes=0-262143"));
    assert_eq!(server.session(&session).unwrap().stored, KIB256 as u64);
    // persist:0 on a fresh prefix: a 308 without Range.
    let r = put_chunk(
        &mut conn,
        &session,
        &src,
        KIB256..2 * KIB256,
        Some(src.len()),
        &[("x-resumable-fault", "persist:0")],
    )
    .unwrap();
    assert_eq!(r.header("range"), Some("bytes=0-262143"));
    // Continue from the persisted offset: the upload completes byte for byte.
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
}

#[test]
fn status_repeats_for_k_requests_with_retry_after() {
    // G8: 503 for the next two requests, with Retry-After; nothing is stored meanwhile.
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
        &[("x-resumable-fault", "status:503x2,retry-after:3")],
    )
    .unwrap();
    assert_eq!(r.status, 503);
    assert_eq!(r.header("retry-after"), Some("3"));
    assert!(
        r.json()["error"]["message"]
            .as_str()
            .unwrap()
            .contains("injected")
    );
    let q = conn
        .request("PUT", &session, &[("Content-Range", "bytes */*")], b"")
        .unwrap();
    assert_eq!(q.status, 503);
    assert_eq!(q.header("retry-after"), Some("3"));
    let q = conn
        .request("PUT", &session, &[("Content-Range", "bytes */*")], b"")
        .unwrap();
    assert_eq!(q.status, 308);
    assert_eq!(q.header("range"), None);
    assert_eq!(server.session(&session).unwrap().stored, 0);
    assert_eq!(server.body_bytes_received(), KIB256 as u64);
}

#[test]
fn status_codes_408_429_500_and_retry_after_dates() {
    // G8: each retryable status; 429 carries Retry-After by default.
    let server = server();
    let session = json_session(&server, "b", "o");
    for (fault, status, retry_after) in [
        ("status:408", 408, None),
        ("status:429", 429, Some("1")),
        ("status:429,retry-after:0", 429, Some("0")),
        ("status:500", 500, None),
        ("status:502", 502, None),
        ("status:504", 504, None),
    ] {
        let r = send(
            server.addr(),
            "PUT",
            &session,
            &[("Content-Range", "bytes */*"), ("x-resumable-fault", fault)],
            b"",
        )
        .unwrap();
        assert_eq!(r.status, status, "{fault}");
        assert_eq!(r.header("retry-after"), retry_after, "{fault}");
    }
    let r = send(
        server.addr(),
        "PUT",
        &session,
        &[
            ("Content-Range", "bytes */*"),
            ("x-resumable-fault", "status:503,retry-after-date:30"),
        ],
        b"",
    )
    .unwrap();
    let date = httpdate::parse_http_date(r.header("retry-after").unwrap()).unwrap();
    let ahead = date.duration_since(std::time::SystemTime::now()).unwrap();
    assert!(ahead > Duration::from_secs(25) && ahead <= Duration::from_secs(31));
}

#[test]
fn stall_delays_the_answer() {
    // G8 (timeouts): the answer comes after the stall; the request was handled.
    let server = server();
    let session = json_session(&server, "b", "o");
    let t = Instant::now();
    let r = send(
        server.addr(),
        "PUT",
        &session,
        &[
            ("Content-Range", "bytes 0-2/3"),
            ("x-resumable-fault", "stall:300ms"),
        ],
        b"abc",
    )
    .unwrap();
    assert!(t.elapsed() >= Duration::from_millis(300));
    assert_eq!(r.status, 200);
}

#[test]
fn rate_paces_the_body_per_connection() {
    // Issue 16: `rate:R` reads a body at most R bytes per second; two connections at once each
    // get the rate, so together they take no longer than one.
    let server = server();
    let body = vec![7u8; 256 * 1024];
    let put = |object: &str| {
        let session = json_session(&server, "b", object);
        send(
            server.addr(),
            "PUT",
            &session,
            &[
                ("Content-Range", "bytes 0-262143/262144"),
                ("x-resumable-fault", "rate:1MiB"),
            ],
            &body,
        )
        .unwrap()
    };
    let t = Instant::now();
    assert_eq!(put("one").status, 200);
    let one = t.elapsed();
    assert!(
        one >= Duration::from_millis(240),
        "a quarter MiB at 1 MiB/s: {one:?}"
    );
    let t = Instant::now();
    std::thread::scope(|s| {
        let a = s.spawn(|| put("a"));
        let b = s.spawn(|| put("b"));
        assert_eq!(a.join().unwrap().status, 200);
        assert_eq!(b.join().unwrap().status, 200);
    });
    let two = t.elapsed();
    assert!(
        two < one * 2,
        "each connection has its own rate: {two:?} vs {one:?}"
    );
    assert_eq!(server.object("b", "a").unwrap(), body);
}

#[test]
fn stalls_are_capped_and_cut_short_by_shutdown() {
    // Every wait is bounded: max_stall caps a stall, shutdown interrupts it.
    let capped = server_with(ServerConfig {
        max_stall: Duration::from_millis(100),
        ..ServerConfig::default()
    });
    let t = Instant::now();
    let r = send(
        capped.addr(),
        "GET",
        "/",
        &[("x-resumable-fault", "stall:60s")],
        b"",
    )
    .unwrap();
    assert_eq!(r.status, 200);
    assert!(t.elapsed() < Duration::from_secs(5));

    let server = server();
    let addr = server.addr();
    let client = std::thread::spawn(move || {
        send(addr, "GET", "/", &[("x-resumable-fault", "stall:60s")], b"")
    });
    std::thread::sleep(Duration::from_millis(100));
    let t = Instant::now();
    server.shutdown();
    assert!(t.elapsed() < Duration::from_secs(3));
    assert!(client.join().unwrap().is_err());
}

#[test]
fn truncate_claims_a_body_and_closes() {
    // G8 (truncated response): the head promises more body than is sent; the chunk was
    // stored all the same.
    let server = server();
    let session = json_session(&server, "b", "o");
    let src = data(KIB256);
    let mut conn = Conn::open(server.addr());
    conn.write_request(
        "PUT",
        &session,
        &[
            ("Content-Range", "bytes 0-262143/*"),
            ("x-resumable-fault", "truncate"),
        ],
        &src,
    )
    .unwrap();
    let mut raw = Vec::new();
    std::io::Read::read_to_end(&mut conn.stream, &mut raw).unwrap();
    let text = String::from_utf8_lossy(&raw);
    assert!(text.starts_with("HTTP/1.1 308"), "{text}");
    assert!(text.contains("Content-Length: 1024\r\n"), "{text}");
    assert!(text.ends_with("\r\n\r\n"), "no body bytes: {text}");
    assert_eq!(server.session(&session).unwrap().stored, KIB256 as u64);
    assert!(server.request_log().last().unwrap().truncated);

    // truncate:N sends N bytes of the real body.
    let session = json_session(&server, "b", "p");
    let mut conn = Conn::open(server.addr());
    conn.write_request(
        "PUT",
        &session,
        &[
            ("Content-Range", "bytes 0-2/3"),
            ("x-resumable-fault", "truncate:5"),
        ],
        b"abc",
    )
    .unwrap();
    let mut raw = Vec::new();
    std::io::Read::read_to_end(&mut conn.stream, &mut raw).unwrap();
    let text = String::from_utf8_lossy(&raw);
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    let (_, body) = text.split_once("\r\n\r\n").unwrap();
    assert_eq!(body.len(), 5, "{text}");
    assert!(body.starts_with('{'), "{text}");
    assert_eq!(server.object("b", "p").unwrap(), b"abc");
}

#[test]
fn expire_makes_the_session_gone() {
    // G9
    let server = server();
    let session = json_session(&server, "b", "o");
    let r = send(
        server.addr(),
        "PUT",
        &session,
        &[
            ("Content-Range", "bytes */*"),
            ("x-resumable-fault", "expire"),
        ],
        b"",
    )
    .unwrap();
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
}

#[test]
fn no_range_lie_and_range_start_shape_the_308() {
    // G5: a 308 without Range while bytes are stored; a Range beyond what arrived; a Range
    // that does not start at 0.
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
        &[("x-resumable-fault", "no-range")],
    )
    .unwrap();
    assert_eq!(r.status, 308);
    assert_eq!(r.header("range"), None);
    assert_eq!(server.session(&session).unwrap().stored, KIB256 as u64);
    let q = |fault: &str, conn: &mut Conn| {
        conn.request(
            "PUT",
            &session,
            &[("Content-Range", "bytes */*"), ("x-resumable-fault", fault)],
            b"",
        )
        .unwrap()
    };
    assert_eq!(q("lie", &mut conn).header("range"), Some("bytes=0-524287"));
    assert_eq!(
        q("lie:10", &mut conn).header("range"),
        Some("bytes=0-262153")
    );
    assert_eq!(
        q("range-start:5", &mut conn).header("range"),
        Some("bytes=5-262143")
    );
    // The truth is unchanged.
    assert_eq!(
        q("persist:0", &mut conn).header("range"),
        Some("bytes=0-262143")
    );
    assert_eq!(server.body_bytes_received(), KIB256 as u64);
}

#[test]
fn the_fault_query_parameter_works_like_the_header() {
    // G8: `fault=` on the URL.
    let server = server();
    let session = json_session(&server, "b", "o");
    let r = send(
        server.addr(),
        "PUT",
        &format!("{session}&fault=status%3A429%2Cretry-after%3A7"),
        &[("Content-Range", "bytes */*")],
        b"",
    )
    .unwrap();
    assert_eq!(r.status, 429);
    assert_eq!(r.header("retry-after"), Some("7"));
}

#[test]
fn a_bad_fault_spec_is_a_400_with_the_reason() {
    let server = server();
    let session = json_session(&server, "b", "o");
    let r = send(
        server.addr(),
        "PUT",
        &session,
        &[
            ("Content-Range", "bytes */*"),
            ("x-resumable-fault", "explode"),
        ],
        b"",
    )
    .unwrap();
    assert_eq!(r.status, 400);
    assert!(r.text().contains("unknown fault"), "{}", r.text());
}

#[test]
fn a_server_script_selects_requests_by_kind_and_ordinal() {
    // G8: `gcs.chunk#2=…` hits the second chunk only; `gcs.query#1..2` the first two
    // queries; ordinals count over the whole server.
    let server = scripted(
        "gcs.chunk#2=status:503,retry-after:1; gcs.query#1..2=stall:1ms; gcs.start#3=status:500",
    );
    let session = json_session(&server, "b", "o");
    let src = data(3 * KIB256);
    let mut conn = Conn::open(server.addr());
    let r = put_chunk(&mut conn, &session, &src, 0..KIB256, None, &[]).unwrap();
    assert_eq!(r.status, 308);
    let r = put_chunk(&mut conn, &session, &src, KIB256..2 * KIB256, None, &[]).unwrap();
    assert_eq!(r.status, 503);
    assert_eq!(r.header("retry-after"), Some("1"));
    let r = put_chunk(&mut conn, &session, &src, KIB256..2 * KIB256, None, &[]).unwrap();
    assert_eq!(r.status, 308);
    let log = server.request_log();
    assert_eq!(log[2].faults, "status:503,retry-after:1");
    assert_eq!(log[3].faults, "");
    for _ in 0..3 {
        conn.request("PUT", &session, &[("Content-Range", "bytes */*")], b"")
            .unwrap();
    }
    let faults: Vec<String> = server.request_log()[4..]
        .iter()
        .map(|e| e.faults.clone())
        .collect();
    assert_eq!(faults, ["stall:1ms", "stall:1ms", ""]);
    json_session(&server, "b", "p");
    let third = send(
        server.addr(),
        "POST",
        &target(&server.gcs_json_url("b", "q")),
        &[],
        b"",
    )
    .unwrap();
    assert_eq!(third.status, 500);
    assert!(server.banner().contains("gcs.chunk#2=status:503"));
}

#[test]
fn a_session_script_counts_that_sessions_requests() {
    // G8: `session-faults=` on the start URL; ordinals per session.
    let server = server();
    let start = format!(
        "{}&session-faults=gcs.chunk%232%3Ddrop-after%3A100000",
        target(&server.gcs_json_url("b", "o"))
    );
    let r = send(server.addr(), "POST", &start, &[], b"").unwrap();
    assert_eq!(r.status, 200);
    let session = target(r.header("location").unwrap());
    let other = json_session(&server, "b", "other");
    let src = data(2 * KIB256);
    let mut conn = Conn::open(server.addr());
    // Another session's chunks do not count.
    put_chunk(&mut conn, &other, &src, 0..KIB256, None, &[]).unwrap();
    put_chunk(&mut conn, &other, &src, KIB256..2 * KIB256, None, &[]).unwrap();
    assert_eq!(
        put_chunk(&mut conn, &session, &src, 0..KIB256, None, &[])
            .unwrap()
            .status,
        308
    );
    assert!(put_chunk(&mut conn, &session, &src, KIB256..2 * KIB256, None, &[]).is_err());
    assert_eq!(server.session(&session).unwrap().stored, KIB256 as u64);
    let bad = send(
        server.addr(),
        "POST",
        &format!(
            "{}&session-faults=nope",
            target(&server.gcs_json_url("b", "x"))
        ),
        &[],
        b"",
    )
    .unwrap();
    assert_eq!(bad.status, 400);
}

#[test]
fn faults_apply_to_starts_and_deletes_too() {
    // G8 on G1 and G10 requests.
    let server = scripted("gcs.delete#1=status:503x2");
    let r = send(
        server.addr(),
        "POST",
        &target(&server.gcs_xml_url("b", "o")),
        &[
            ("x-goog-resumable", "start"),
            ("Content-Type", "text/plain"),
            ("x-resumable-fault", "status:429"),
        ],
        b"",
    )
    .unwrap();
    assert_eq!(r.status, 429);
    assert!(r.text().contains("<Error>") || r.text().contains("error"));
    assert!(server.sessions().is_empty());
    let session = xml_session(&server, "b", "o");
    assert_eq!(
        send(server.addr(), "DELETE", &session, &[], b"")
            .unwrap()
            .status,
        503
    );
    assert_eq!(
        send(server.addr(), "DELETE", &session, &[], b"")
            .unwrap()
            .status,
        503
    );
    assert_eq!(
        send(server.addr(), "DELETE", &session, &[], b"")
            .unwrap()
            .status,
        499
    );
}
