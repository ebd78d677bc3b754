//! `--log-http` and `-v` (issue 19): every request and answer on stderr, and no secret in any
//! of it: not the signed URL's signature, not an Authorization token or OAuth secret, not the
//! session URI's upload id.

mod common;

use common::*;
use resumable_server::{Server, ServerConfig};

const KIB: usize = 1024;

/// The value of query parameter `name` in `url`.
fn param<'a>(url: &'a str, name: &str) -> &'a str {
    let query = url.split_once('?').map_or("", |(_, q)| q);
    query
        .split('&')
        .find_map(|p| p.strip_prefix(name)?.strip_prefix('='))
        .unwrap_or_else(|| panic!("no {name} in {url}"))
}

#[test]
fn log_http_shows_every_exchange_and_no_secret() {
    let server = Server::start(ServerConfig::default()).unwrap();
    let s = Scratch::new();
    let bytes = data(600 * KIB, 5);
    let file = s.file("o.bin", &bytes);

    // A JSON API start with a planted token, a 503 and a retry.
    let url = with_faults(&server.gcs_json_url("b", "o.bin"), "gcs.chunk#2=status:503");
    let out = s.run(&[
        "gcs",
        "--log-http",
        "--chunk-size",
        "256KiB",
        "-H",
        "Authorization: Bearer PLANTED-TOKEN-123",
        file.to_str().unwrap(),
        &url,
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let log = format!("{}{}", text(&out.stderr), text(&out.stdout));
    let session = server.sessions().into_iter().next().unwrap();
    for secret in ["PLANTED-TOKEN-123", &session.upload_id] {
        assert!(!log.contains(secret), "a secret in the log: {log}");
    }
    let requests = log.lines().filter(|l| l.contains("> PUT ")).count();
    assert_eq!(
        requests, 5,
        "three chunks, a query after the 503, the chunk again: {log}"
    );
    assert!(log.contains("> POST "), "the start: {log}");
    assert!(log.contains("< 503 "), "the injected answer: {log}");
    assert!(log.contains("< 308 "), "{log}");
    assert!(
        log.contains("content-range: bytes 0-262143/614400"),
        "{log}"
    );
    assert!(log.contains("uploadType=resumable"), "{log}");
    assert!(log.contains("upload_id=<redacted>"), "{log}");
    assert!(log.contains("authorization: <redacted>"), "{log}");
    assert_eq!(server.object("b", "o.bin").unwrap(), bytes);

    // A signed XML start URL: its signature stays out.
    let url = server.gcs_xml_url("b", "x.bin");
    let signature = param(&url, "X-Goog-Signature").to_owned();
    let out = s.run(&["gcs", "--log-http", file.to_str().unwrap(), &url]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let log = text(&out.stderr);
    assert!(!log.contains(&signature), "the signature in the log: {log}");
    assert!(log.contains("X-Goog-Signature=<redacted>"), "{log}");

    // OAuth 1.0a on media: the consumer secret, the token secret and the signature stay out.
    let out = s
        .command(&[
            "media",
            "--log-http",
            "--api",
            "v1",
            "--endpoint",
            &server.media_v1_url(),
            "--media-type",
            "video/mp4",
            file.to_str().unwrap(),
        ])
        .env("X_CONSUMER_KEY", "ck-visible")
        .env("X_CONSUMER_SECRET", "PLANTED-CONSUMER-SECRET")
        .env("X_ACCESS_TOKEN", "PLANTED-ACCESS-TOKEN")
        .env("X_ACCESS_TOKEN_SECRET", "PLANTED-TOKEN-SECRET")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    let log = text(&out.stderr);
    for secret in [
        "PLANTED-CONSUMER-SECRET",
        "PLANTED-ACCESS-TOKEN",
        "PLANTED-TOKEN-SECRET",
        "oauth_signature",
    ] {
        assert!(!log.contains(secret), "a secret in the log: {log}");
    }
    let posts = log.lines().filter(|l| l.contains("> POST ")).count();
    assert_eq!(posts, 3, "INIT, one APPEND, FINALIZE: {log}");
}

#[test]
fn verbose_shows_failed_requests_and_retries_without_the_exchanges() {
    let server = Server::start(ServerConfig::default()).unwrap();
    let s = Scratch::new();
    let file = s.file("o.bin", &data(300 * KIB, 6));
    let url = with_faults(
        &server.gcs_json_url("b", "v.bin"),
        "gcs.chunk#1=drop-after:1000",
    );
    let out = s.run(&[
        "gcs",
        "-v",
        "--chunk-size",
        "256KiB",
        file.to_str().unwrap(),
        &url,
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let log = text(&out.stderr);
    assert!(log.contains("failed after"), "the cut request: {log}");
    assert!(log.contains("retrying in"), "the retry: {log}");
    assert!(
        !log.contains("> PUT"),
        "no exchanges without --log-http: {log}"
    );
}
