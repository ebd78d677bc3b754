//! Secrets stay secret: a credential planted in a session URI, a signed URL's query and an
//! `Authorization` header never shows in any error's `Display` or `Debug`, any `Action` (and
//! so any `Send`) `Debug`, any upload's, config's or start's `Debug`, or any resume state's
//! `Debug`, whichever way an upload ends. Response bodies kept by the core are capped. And
//! `core/` has no `unsafe` code.
//!
//! Each protocol is driven through every error kind a server or a caller can provoke; the
//! test checks that it saw them all, so a new way to fail cannot slip past unexamined.

use std::collections::BTreeSet;
use std::fmt::Debug;
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use http::{HeaderValue, Uri};
use resumable_core::checksum::Checksums;
use resumable_core::gcs::{GcsConfig, GcsUpload, ResumeState, Start};
use resumable_core::media::{ApiVersion, MediaConfig, MediaResumeState, MediaUpload};
use resumable_core::ton::{TonConfig, TonResumeState, TonStart, TonUpload};
use resumable_core::{
    Action, Error, RequestId, RetryPolicy, SessionUri, TransportFailure, Upload, UsageError,
};

/// The planted secret. Every place it goes is built from it.
const SECRET: &str = "S3CR3T-k9Qz7";

fn secret(text: &str) -> String {
    text.replace("{S}", SECRET)
}

/// Everything that was formatted, checked for the secret as it comes.
#[derive(Default)]
struct Witness {
    /// Error kinds seen (the variant name of `Error`, or `Usage` for a `UsageError`).
    kinds: BTreeSet<String>,
    checked: usize,
    /// Requests that really carry the secret (so the checks are not vacuous).
    carried: usize,
}

impl Witness {
    fn see(&mut self, what: &str, text: String) {
        assert!(
            !text.contains(SECRET),
            "{what} shows the planted secret: {text}"
        );
        self.checked += 1;
    }

    fn error(&mut self, e: &Error) {
        self.see("an error's Display", e.to_string());
        self.see("an error's Debug", format!("{e:?}"));
        let kind = format!("{e:?}");
        let kind = kind.split(['(', ' ', '{']).next().unwrap_or("");
        self.kinds.insert(kind.to_owned());
    }

    fn usage(&mut self, e: &UsageError) {
        self.see("a usage error's Display", e.to_string());
        self.see("a usage error's Debug", format!("{e:?}"));
        self.kinds.insert("Usage".into());
    }

    fn expect_kinds(&self, protocol: &str, kinds: &[&str]) {
        assert!(
            self.carried > 0,
            "{protocol}: no request carried the secret"
        );
        for kind in kinds {
            assert!(
                self.kinds.contains(*kind),
                "{protocol}: no scenario ended in {kind}; seen {:?}",
                self.kinds
            );
        }
    }
}

/// One answer of a script.
enum Answer {
    Status(u16, Vec<(&'static str, String)>, &'static str),
    Fail(TransportFailure),
    /// The caller cancels, then the next answer is given.
    Cancel,
}

fn status(code: u16, headers: &[(&'static str, &str)], body: &'static str) -> Answer {
    let headers = headers.iter().map(|(n, v)| (*n, secret(v))).collect();
    // Bodies may echo the secret too (a server quoting the request in its error text).
    let body: &'static str = if body.contains("{S}") {
        Box::leak(secret(body).into_boxed_str())
    } else {
        body
    };
    Answer::Status(code, headers, body)
}

fn response(
    code: u16,
    headers: &[(&'static str, String)],
    body: &'static str,
) -> http::Response<Bytes> {
    let mut r = http::Response::builder().status(code);
    for (name, value) in headers {
        r = r.header(*name, value.as_str());
    }
    r.body(Bytes::from_static(body.as_bytes())).expect("valid")
}

/// Drives `upload` with `script` (then 500s), formatting every action, the upload and its
/// resume state after each step, and feeding a wrong read and a stale answer on the way. Ends
/// when the upload is done.
fn drive<U>(
    w: &mut Witness,
    mut upload: U,
    script: Vec<Answer>,
    state: impl Fn(&U) -> String,
    cancel: impl Fn(&mut U),
) where
    U: Upload + Debug,
    U::Output: Debug,
{
    let mut script = script.into_iter();
    let mut now = Instant::now();
    for _ in 0..500 {
        let action = upload.poll_action(now);
        w.see("an Action's Debug", format!("{action:?}"));
        w.see("an upload's Debug", format!("{upload:?}"));
        w.see("a resume state's Debug", state(&upload));
        match action {
            Action::Done(outcome) => {
                if let Err(e) = &outcome {
                    w.error(e);
                }
                if let Err(e) =
                    upload.handle_response(now, RequestId::new(0), response(200, &[], ""))
                {
                    w.usage(&e);
                }
                return;
            }
            Action::Wait(until) => now = until,
            // Every request is answered before the next poll: nothing is ever in flight here.
            Action::Idle => panic!("idle with every request answered"),
            Action::Read(read) => {
                if let Err(e) = upload.handle_read(now, read.range.start + 1, b"x") {
                    w.usage(&e);
                }
                let len = (read.range.end - read.range.start).min(1 << 20) as usize;
                upload
                    .handle_read(now, read.range.start, &vec![0; len])
                    .expect("a read as asked");
            }
            Action::Send(send) => {
                let carried = send.request.uri().to_string().contains(SECRET)
                    || send
                        .request
                        .headers()
                        .values()
                        .any(|v| v.to_str().is_ok_and(|v| v.contains(SECRET)));
                w.carried += usize::from(carried);
                if let Err(e) =
                    upload.handle_response(now, RequestId::new(u64::MAX), response(200, &[], ""))
                {
                    w.usage(&e);
                }
                let mut next = script.next();
                while let Some(Answer::Cancel) = next {
                    cancel(&mut upload);
                    next = script.next();
                }
                let result = match next {
                    Some(Answer::Status(code, headers, body)) => {
                        upload.handle_response(now, send.id, response(code, &headers, body))
                    }
                    Some(Answer::Fail(f)) => upload.handle_failure(now, send.id, f),
                    Some(Answer::Cancel) => unreachable!(),
                    None => upload.handle_response(now, send.id, response(500, &[], "")),
                };
                result.expect("an answer to the request in flight");
            }
        }
    }
    panic!("the script did not end the upload: {upload:?}");
}

fn quick_retries() -> RetryPolicy {
    let mut policy = RetryPolicy::default();
    policy.max_attempts = 2;
    policy
}

// ---------------------------------------------------------------------------------------------
// GCS
// ---------------------------------------------------------------------------------------------

const GCS_SESSION: &str = "https://storage.example/upload/storage/v1/b/b/o?upload_id={S}";

fn gcs_config(len: u64) -> GcsConfig {
    let mut config = GcsConfig::new(Some(len));
    config.chunk_size = 256 * 1024;
    config.checksums = Checksums {
        crc32c: true,
        md5: true,
    };
    config.retry = quick_retries();
    config
}

fn gcs_xml() -> Start {
    Start::Xml {
        url: secret("https://storage.example/b/o?X-Goog-Credential=c&X-Goog-Signature={S}")
            .parse()
            .expect("url"),
        content_type: HeaderValue::from_static("text/plain"),
    }
}

fn gcs_json(config: &mut GcsConfig) -> Start {
    let mut bearer = HeaderValue::from_str(&secret("Bearer {S}")).expect("ascii");
    bearer.set_sensitive(false); // the core must mark it, not the caller
    config
        .start_headers
        .insert(http::header::AUTHORIZATION, bearer);
    Start::Json {
        url: "https://storage.example/upload/storage/v1/b/b/o?uploadType=resumable"
            .parse()
            .expect("url"),
        content_type: HeaderValue::from_static("text/plain"),
        metadata: Some(Bytes::from_static(br#"{"name":"o"}"#)),
    }
}

fn gcs_run(w: &mut Witness, start: Start, config: GcsConfig, script: Vec<Answer>) {
    w.see("a GCS start's Debug", format!("{start:?}"));
    w.see("a GCS config's Debug", format!("{config:?}"));
    let upload = GcsUpload::new(start, config).expect("valid");
    drive(
        w,
        upload,
        script,
        |u| format!("{:?}", u.resume_state()),
        GcsUpload::cancel,
    );
}

#[test]
fn gcs_errors_never_show_secrets() {
    let w = &mut Witness::default();
    let created = || status(201, &[("location", GCS_SESSION)], "");
    let ok = |body: &'static str, hash: &str| status(200, &[("x-goog-hash", hash)], body);
    let len = 300 * 1024;

    // Server (G8: a final 4xx, whose message is kept), SessionGone (G9).
    // The 403's message quotes the request, session URI and Authorization included.
    let echo = r#"{"error":{"message":"Forbidden: PUT https://storage.example/u?upload_id={S} (Authorization: Bearer {S})"}}"#;
    for (code, body) in [(403, echo), (410, "")] {
        gcs_run(
            w,
            gcs_xml(),
            gcs_config(len),
            vec![created(), status(code, &[], body)],
        );
    }
    // Protocol: a bad Range, one beyond what was sent, not from 0, an odd status (G5).
    for range in ["bytes=abc", "bytes=0-999999999", "bytes=5-9"] {
        gcs_run(
            w,
            gcs_xml(),
            gcs_config(len),
            vec![created(), status(308, &[("range", range)], "")],
        );
    }
    gcs_run(
        w,
        gcs_xml(),
        gcs_config(len),
        vec![created(), status(302, &[("location", GCS_SESSION)], "")],
    );
    // Protocol: no usable Location, including one that carries the secret (G1).
    for location in [
        None,
        Some("ftp://storage.example/x?upload_id={S}"),
        Some("//{S}/x"),
    ] {
        let headers: Vec<_> = location.iter().map(|l| ("location", *l)).collect();
        gcs_run(
            w,
            gcs_xml(),
            gcs_config(len),
            vec![status(201, &headers, "")],
        );
    }
    // Protocol: completion before every byte was sent (G7).
    gcs_run(w, gcs_xml(), gcs_config(len), vec![created(), ok("", "")]);
    // Integrity: size, CRC32C, MD5 (G7), through the JSON start with its Authorization.
    let bad_objects = [
        (r#"{"size":"7"}"#, ""),
        ("", "crc32c=AAAAAA=="),
        ("", "md5=1B2M2Y8AsgTpgAmY7PhCfg=="),
    ];
    for (body, hash) in bad_objects {
        let mut config = gcs_config(100);
        let start = gcs_json(&mut config);
        gcs_run(
            w,
            start,
            config,
            vec![
                status(200, &[("location", GCS_SESSION)], ""),
                ok(body, hash),
            ],
        );
    }
    // RetriesExhausted (G8), Transport (no transport retries), Cancelled (G10).
    gcs_run(
        w,
        gcs_xml(),
        gcs_config(len),
        vec![created(), status(503, &[("retry-after", "1")], "")],
    );
    let mut config = gcs_config(len);
    config.retry.retry_transport = false;
    gcs_run(
        w,
        gcs_xml(),
        config,
        vec![created(), Answer::Fail(TransportFailure::Reset)],
    );
    gcs_run(
        w,
        gcs_xml(),
        gcs_config(len),
        vec![
            created(),
            Answer::Cancel,
            status(308, &[("range", "bytes=0-262143")], ""),
            status(499, &[], ""),
        ],
    );
    // A bare session URI and a saved state, both holding the secret (G3).
    let session = SessionUri::parse(&secret(GCS_SESSION)).expect("uri");
    w.see("a SessionUri's Debug", format!("{session:?}"));
    w.see("a SessionUri's Display", session.to_string());
    gcs_run(
        w,
        Start::Session(session.clone()),
        gcs_config(len),
        vec![status(404, &[], "")],
    );
    let state = ResumeState {
        session,
        total: Some(len),
        persisted: 0,
        sent: Some(262_144),
        crc32c: None,
        fingerprint: String::new(),
        foreign: false,
    };
    w.see("a ResumeState's Debug", format!("{state:?}"));
    gcs_run(
        w,
        Start::Resume(state.clone()),
        gcs_config(len),
        vec![ok("", "")],
    );
    // Usage: a URL that is not http(s), a state that does not fit, a URI that does not parse.
    let bad = Start::Xml {
        url: secret("ftp://storage.example/o?X-Goog-Signature={S}")
            .parse()
            .expect("uri"),
        content_type: HeaderValue::from_static("text/plain"),
    };
    w.usage(&GcsUpload::new(bad, gcs_config(len)).expect_err("not http"));
    w.usage(&GcsUpload::new(Start::Resume(state), gcs_config(len + 1)).expect_err("mismatch"));
    w.usage(&SessionUri::parse(&secret("/relative?upload_id={S}")).expect_err("relative"));

    w.expect_kinds(
        "GCS",
        &[
            "Server",
            "SessionGone",
            "Protocol",
            "Integrity",
            "RetriesExhausted",
            "Transport",
            "Cancelled",
            "Usage",
        ],
    );
}

// ---------------------------------------------------------------------------------------------
// TON
// ---------------------------------------------------------------------------------------------

const TON_LOCATION: &str = "/1.1/ton/bucket/b/f.mp4?resumable=true&resumeId={S}";

fn ton_config(len: u64) -> TonConfig {
    let mut config = TonConfig::new(HeaderValue::from_static("video/mp4"), len);
    config.chunk_size = 1024;
    config.retry = quick_retries();
    config.expires = Some("Wed, 05 Nov 2014 23:50:16 GMT".into());
    config.start_headers.insert(
        http::header::AUTHORIZATION,
        HeaderValue::from_str(&secret(r#"OAuth oauth_token="t", oauth_signature="{S}""#))
            .expect("ascii"),
    );
    config
}

fn ton_bucket() -> Uri {
    secret("https://ton.example/1.1/ton/bucket/b?oauth_token={S}")
        .parse()
        .expect("url")
}

fn ton_run(w: &mut Witness, start: TonStart, config: TonConfig, script: Vec<Answer>) {
    w.see("a TON start's Debug", format!("{start:?}"));
    w.see("a TON config's Debug", format!("{config:?}"));
    let upload = TonUpload::new(start, config).expect("valid");
    drive(
        w,
        upload,
        script,
        |u| format!("{:?}", u.resume_state()),
        TonUpload::cancel,
    );
}

#[test]
fn ton_errors_never_show_secrets() {
    let w = &mut Witness::default();
    let started = || {
        status(
            201,
            &[
                ("location", TON_LOCATION),
                ("x-ton-min-chunk-size", "1024"),
                ("x-ton-max-chunk-size", "4096"),
                ("expires", "Wed, 05 Nov 2014 23:50:16 UTC"),
                ("date", "Wed, 05 Nov 2014 23:40:16 GMT"),
            ],
            "",
        )
    };
    let resumable = || TonStart::Resumable {
        bucket_url: ton_bucket(),
    };
    let len = 5000;

    // Server (T6: a final 4xx), SessionGone, Expired (a 404 dated past Expires, T3).
    for (code, headers) in [
        (403, vec![]),
        (404, vec![]),
        (410, vec![("date", "Thu, 06 Nov 2014 00:00:00 GMT")]),
    ] {
        ton_run(
            w,
            resumable(),
            ton_config(len),
            vec![
                started(),
                status(
                    code,
                    &headers,
                    r#"{"errors":[{"message":"no resumeId={S}"}]}"#,
                ),
            ],
        );
    }
    // Protocol: limits, Location, Range (T3, T5), premature completion (T6).
    ton_run(
        w,
        resumable(),
        ton_config(len),
        vec![status(201, &[("location", TON_LOCATION)], "")],
    );
    ton_run(
        w,
        resumable(),
        ton_config(len),
        vec![status(
            201,
            &[
                ("location", "ftp://ton.example/?resumeId={S}"),
                ("x-ton-min-chunk-size", "1"),
                ("x-ton-max-chunk-size", "9"),
            ],
            "",
        )],
    );
    for range in ["0-99999", "abc", "3-9", "0-1500"] {
        ton_run(
            w,
            resumable(),
            ton_config(len),
            vec![started(), status(308, &[("range", range)], "")],
        );
    }
    ton_run(
        w,
        resumable(),
        ton_config(len),
        vec![started(), status(201, &[("location", "/o")], "")],
    );
    // RetriesExhausted, Transport, Cancelled.
    ton_run(
        w,
        resumable(),
        ton_config(len),
        vec![started(), status(503, &[], "")],
    );
    let mut config = ton_config(len);
    config.retry.retry_transport = false;
    ton_run(
        w,
        resumable(),
        config,
        vec![Answer::Fail(TransportFailure::Timeout)],
    );
    ton_run(
        w,
        resumable(),
        ton_config(len),
        vec![
            started(),
            Answer::Cancel,
            status(308, &[("range", "0-1023")], ""),
        ],
    );
    // A single request (T1) refused, and a saved state holding the secret.
    ton_run(
        w,
        TonStart::Single {
            bucket_url: ton_bucket(),
        },
        ton_config(len),
        vec![status(400, &[], "bad")],
    );
    let state = TonResumeState {
        location: SessionUri::parse(&secret(
            "https://ton.example/1.1/ton/bucket/b/f?resumeId={S}",
        ))
        .expect("uri"),
        total: len,
        persisted: 1024,
        sent: 2048,
        min_chunk: 1024,
        max_chunk: 4096,
        expires: None,
        fingerprint: String::new(),
    };
    w.see("a TonResumeState's Debug", format!("{state:?}"));
    ton_run(
        w,
        TonStart::Resume(state.clone()),
        ton_config(len),
        vec![status(410, &[], "")],
    );
    // Usage: a bucket URL that is not http(s), a state that does not fit, a bad chunk size.
    let bad = TonStart::Resumable {
        bucket_url: secret("ftp://ton.example/b?oauth_token={S}")
            .parse()
            .expect("uri"),
    };
    w.usage(&TonUpload::new(bad, ton_config(len)).expect_err("not http"));
    w.usage(&TonUpload::new(TonStart::Resume(state), ton_config(len + 1)).expect_err("mismatch"));
    let mut config = ton_config(len);
    config.expires = Some(secret("{S}\n"));
    config.chunk_size = 0;
    w.usage(
        &TonUpload::new(
            TonStart::Resumable {
                bucket_url: ton_bucket(),
            },
            config,
        )
        .expect_err("chunk 0"),
    );

    w.expect_kinds(
        "TON",
        &[
            "Server",
            "SessionGone",
            "Expired",
            "Protocol",
            "RetriesExhausted",
            "Transport",
            "Cancelled",
            "Usage",
        ],
    );
}

// ---------------------------------------------------------------------------------------------
// media/upload
// ---------------------------------------------------------------------------------------------

fn media_config(api: ApiVersion) -> MediaConfig {
    let mut config = MediaConfig::new(api, 10, "video/mp4");
    config.segment_size = 4;
    config.retry = quick_retries();
    config.headers.insert(
        http::header::AUTHORIZATION,
        HeaderValue::from_str(&secret("Bearer {S}")).expect("ascii"),
    );
    config
}

fn media_run(w: &mut Witness, config: MediaConfig, script: Vec<Answer>) {
    w.see("a media config's Debug", format!("{config:?}"));
    let upload = MediaUpload::new(config).expect("valid");
    drive(
        w,
        upload,
        script,
        |u| format!("{:?}", u.resume_state()),
        |_| {},
    );
}

#[test]
fn media_errors_never_show_secrets() {
    let w = &mut Witness::default();
    let date = httpdate::fmt_http_date(SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000));
    for api in [ApiVersion::v1_1(), ApiVersion::v2()] {
        let v2 = matches!(api, ApiVersion::V2 { .. });
        let wrap = |media: &'static str, wrapped: &'static str| if v2 { wrapped } else { media };
        let init = || {
            status(
                200,
                &[],
                wrap(
                    r#"{"media_id_string":"42","expires_after_secs":60}"#,
                    r#"{"data":{"id":"42","expires_after_secs":60}}"#,
                ),
            )
        };
        let appended = || status(204, &[], "");
        let all = |last: Answer| vec![init(), appended(), appended(), appended(), last];
        let cfg = || media_config(api.clone());

        // Api (M5, both shapes) and Server (a proxy's page).
        media_run(
            w,
            cfg(),
            vec![status(
                400,
                &[],
                r#"{"errors":[{"code":324,"message":"Bad media for oauth_token={S}"}]}"#,
            )],
        );
        media_run(
            w,
            cfg(),
            vec![status(
                400,
                &[],
                r#"{"type":"about:blank","title":"Invalid","detail":"no https://x.example/?key={S}","status":400}"#,
            )],
        );
        media_run(w, cfg(), vec![status(403, &[], "<html>Forbidden</html>")]);
        // Protocol: INIT without a media id (M1); Integrity: FINALIZE's size (M3).
        media_run(w, cfg(), vec![status(200, &[], "{}")]);
        media_run(
            w,
            cfg(),
            all(status(
                200,
                &[],
                wrap(
                    r#"{"media_id_string":"42","size":9}"#,
                    r#"{"data":{"id":"42","size":9}}"#,
                ),
            )),
        );
        // ProcessingFailed, ProcessingUnfinished, MediaExpired (M4, M5).
        media_run(
            w,
            cfg(),
            all(status(
                200,
                &[],
                wrap(
                    r#"{"media_id_string":"42","processing_info":{"state":"failed","error":{"code":1,"name":"InvalidMedia","message":"no: Bearer {S}"}}}"#,
                    r#"{"data":{"id":"42","processing_info":{"state":"failed"}}}"#,
                ),
            )),
        );
        let pending = || {
            status(
                200,
                &[],
                wrap(
                    r#"{"media_id_string":"42","processing_info":{"state":"pending","check_after_secs":5}}"#,
                    r#"{"data":{"id":"42","processing_info":{"state":"pending","check_after_secs":5}}}"#,
                ),
            )
        };
        let mut config = cfg();
        config.max_status_polls = 0;
        media_run(
            w,
            config,
            vec![
                init(),
                appended(),
                appended(),
                appended(),
                pending(),
                pending(),
            ],
        );
        let long = || {
            status(
                200,
                &[],
                wrap(
                    r#"{"media_id_string":"42","processing_info":{"state":"pending","check_after_secs":90}}"#,
                    r#"{"data":{"id":"42","processing_info":{"state":"pending","check_after_secs":90}}}"#,
                ),
            )
        };
        media_run(w, cfg(), all(long()));
        // RetriesExhausted (429 with a reset, M5), Transport.
        media_run(
            w,
            cfg(),
            vec![
                init(),
                status(
                    429,
                    &[("x-rate-limit-reset", "1700000002"), ("date", &date)],
                    "",
                ),
            ],
        );
        let mut config = cfg();
        config.retry.retry_transport = false;
        media_run(w, config, vec![Answer::Fail(TransportFailure::Connect)]);
        // Usage: an endpoint with a (signed) query, a state that does not fit.
        let mut config = cfg();
        config.api = if v2 {
            ApiVersion::V2 {
                base: secret("https://api.example/2/media/upload?sig={S}")
                    .parse()
                    .expect("uri"),
            }
        } else {
            ApiVersion::V1_1 {
                endpoint: secret("https://upload.example/1.1/media/upload.json?sig={S}")
                    .parse()
                    .expect("uri"),
            }
        };
        w.usage(&MediaUpload::new(config).expect_err("a query"));
        let state = MediaResumeState {
            api: api.form(),
            media_id: "42".into(),
            media_key: None,
            total: 11,
            segment_size: 4,
            next_segment: 0,
            next_offset: 0,
            finalized: false,
            expires_after_secs: None,
            expires_at_unix: None,
            fingerprint: String::new(),
        };
        w.usage(&MediaUpload::resume(cfg(), state).expect_err("mismatch"));
    }
    w.expect_kinds(
        "media",
        &[
            "Api",
            "Server",
            "Protocol",
            "Integrity",
            "ProcessingFailed",
            "ProcessingUnfinished",
            "MediaExpired",
            "RetriesExhausted",
            "Transport",
            "Usage",
        ],
    );
}

// ---------------------------------------------------------------------------------------------
// Response bodies are capped
// ---------------------------------------------------------------------------------------------

/// A server cannot make the core keep an unbounded body: a completion keeps at most
/// `MAX_PARSED_BODY` bytes, an error message at most 200 characters.
#[test]
fn response_bodies_are_capped() {
    use resumable_core::response::MAX_PARSED_BODY;
    let huge = Bytes::from(vec![b'x'; 3 * MAX_PARSED_BODY]);
    let mut config = GcsConfig::new(Some(10));
    config.chunk_size = 256 * 1024;
    let mut upload = GcsUpload::new(gcs_xml(), config.clone()).expect("valid");
    let now = Instant::now();
    let mut answers = vec![
        response(201, &[("location", secret(GCS_SESSION))], ""),
        http::Response::builder()
            .status(200)
            .body(huge.clone())
            .expect("valid"),
    ]
    .into_iter();
    let done = loop {
        match upload.poll_action(now) {
            Action::Read(read) => upload
                .handle_read(now, read.range.start, &[0; 10])
                .expect("read"),
            Action::Send(send) => upload
                .handle_response(now, send.id, answers.next().expect("scripted"))
                .expect("in flight"),
            Action::Done(done) => break done.expect("complete"),
            Action::Wait(_) | Action::Idle => panic!("no failure, nothing in flight"),
        }
    };
    assert!(
        done.body.len() <= MAX_PARSED_BODY,
        "kept {} bytes",
        done.body.len()
    );

    let mut upload = GcsUpload::new(gcs_xml(), config).expect("valid");
    let Action::Send(start) = upload.poll_action(now) else {
        panic!("a start request")
    };
    let refused = http::Response::builder()
        .status(400)
        .body(huge)
        .expect("valid");
    upload
        .handle_response(now, start.id, refused)
        .expect("in flight");
    match upload.poll_action(now) {
        Action::Done(Err(Error::Server { message, .. })) => {
            let message = message.expect("the body's first line");
            assert!(
                message.chars().count() <= 200,
                "{} characters",
                message.len()
            );
        }
        other => panic!("{other:?}"),
    }
}

// ---------------------------------------------------------------------------------------------
// No unsafe code
// ---------------------------------------------------------------------------------------------

#[test]
fn core_forbids_unsafe_code() {
    let lib = include_str!("../src/lib.rs");
    assert!(
        lib.lines().any(|l| l.trim() == "#![forbid(unsafe_code)]"),
        "core/src/lib.rs must say #![forbid(unsafe_code)]"
    );
    // And no file of the crate asks for it anyway (forbid cannot be allowed back, but a
    // reader should not have to know that).
    let mut dirs = vec![std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("src")];
    let mut files = 0;
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).expect("core/src is readable") {
            let path = entry.expect("entry").path();
            if path.is_dir() {
                dirs.push(path);
            } else if path.extension().is_some_and(|e| e == "rs") {
                let text = std::fs::read_to_string(&path).expect("source is text");
                for (n, line) in text.lines().enumerate() {
                    let code = line.split("//").next().unwrap_or("");
                    assert!(
                        ![
                            "unsafe {",
                            "unsafe fn",
                            "unsafe impl",
                            "unsafe extern",
                            "allow(unsafe"
                        ]
                        .iter()
                        .any(|u| code.contains(u)),
                        "{}:{}: unsafe code",
                        path.display(),
                        n + 1
                    );
                }
                files += 1;
            }
        }
    }
    assert!(files >= 10, "only {files} source files found");
}
