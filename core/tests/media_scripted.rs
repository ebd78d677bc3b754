//! Scripted exchanges of the Twitter/X media upload: each test builds an upload, feeds it
//! responses, and asserts the exact requests (method, URI, headers, body prefix/range/suffix)
//! and the outcome. Rule ids from docs/protocols. APPEND bodies are checked by parsing the
//! assembled body (prefix + source bytes + suffix) with `multer`.

use std::convert::Infallible;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{HeaderValue, Method};
use resumable_core::media::{
    ApiForm, ApiVersion, MAX_SEGMENT_SIZE, MediaCompletion, MediaConfig, MediaUpload,
    ProcessingState, SegmentPlan, V1_1_ENDPOINT, V2_BASE,
};
use resumable_core::{
    Action, Error, IntegrityError, ProtocolViolation, RequestId, RetryCause, RetryPolicy, Transmit,
    TransportFailure, Upload, UsageError,
};

/// Beyond 2^53: a float would round it.
const ID: &str = "1880028106020515840";
const KEY: &str = "7_1880028106020515840";
const AUTH: &str = "OAuth oauth_consumer_key=\"k\", oauth_signature=\"SECRETSIG\"";
const FORM: &str = "application/x-www-form-urlencoded";

fn source(len: u64) -> Vec<u8> {
    (0..len).map(|i| (i * 31 % 251) as u8).collect()
}

fn no_jitter() -> RetryPolicy {
    let mut policy = RetryPolicy::default();
    policy.jitter = Duration::ZERO;
    policy
}

fn config(api: ApiVersion, total: u64, segment: u64) -> MediaConfig {
    let mut config = MediaConfig::new(api, total, "video/mp4");
    config.segment_size = segment;
    config.retry = no_jitter();
    config.boundary_seed = 42;
    config
        .headers
        .insert("authorization", HeaderValue::from_static(AUTH));
    config
}

/// One scripted exchange: the upload, its source, and a clock the test moves.
struct Exchange {
    upload: MediaUpload,
    form: ApiForm,
    source: Vec<u8>,
    now: Instant,
}

impl Exchange {
    fn new(config: MediaConfig) -> Self {
        let source = source(config.total);
        Exchange {
            form: config.api.form(),
            upload: MediaUpload::new(config).expect("valid upload"),
            source,
            now: Instant::now(),
        }
    }

    fn v1(total: u64, segment: u64) -> Self {
        Exchange::new(config(ApiVersion::v1_1(), total, segment))
    }

    fn v2(total: u64, segment: u64) -> Self {
        Exchange::new(config(ApiVersion::v2(), total, segment))
    }

    fn poll(&mut self) -> Action<MediaCompletion> {
        self.upload.poll_action(self.now)
    }

    fn send(&mut self) -> Transmit {
        match self.poll() {
            Action::Send(s) => s,
            other => panic!("expected a request, got {other:?}"),
        }
    }

    fn wait(&mut self) -> Instant {
        match self.poll() {
            Action::Wait(until) => until,
            other => panic!("expected Wait, got {other:?}"),
        }
    }

    fn done(&mut self) -> Result<MediaCompletion, Error> {
        match self.poll() {
            Action::Done(outcome) => outcome,
            other => panic!("expected Done, got {other:?}"),
        }
    }

    fn respond(&mut self, id: RequestId, status: u16, headers: &[(&str, &str)], body: &str) {
        self.upload
            .handle_response(self.now, id, response(status, headers, body))
            .expect("response accepted");
    }

    /// Sends INIT and answers it in the API's own shape (M1, M6).
    fn initialized(&mut self, expires_after_secs: u64) {
        let init = self.send();
        let body = match self.form {
            ApiForm::V1_1 => format!(
                r#"{{"media_id":{ID},"media_id_string":"{ID}","media_key":"{KEY}","expires_after_secs":{expires_after_secs}}}"#
            ),
            ApiForm::V2 => format!(
                r#"{{"data":{{"id":"{ID}","media_key":"{KEY}","expires_after_secs":{expires_after_secs}}}}}"#
            ),
        };
        self.respond(init.id, 200, &[("content-type", "application/json")], &body);
    }

    /// Answers every APPEND with an empty 2xx until FINALIZE is due, and returns it.
    fn append_all(&mut self) -> Transmit {
        loop {
            let s = self.send();
            if s.body.source.is_empty() {
                return s;
            }
            self.respond(s.id, 204, &[], "");
        }
    }
}

fn response(status: u16, headers: &[(&str, &str)], body: &str) -> http::Response<Bytes> {
    let mut b = http::Response::builder().status(status);
    for (k, v) in headers {
        b = b.header(*k, *v);
    }
    b.body(Bytes::copy_from_slice(body.as_bytes())).unwrap()
}

fn header<'a>(send: &'a Transmit, name: &str) -> Option<&'a str> {
    send.request
        .headers()
        .get(name)
        .map(|v| v.to_str().unwrap())
}

fn assemble(send: &Transmit, source: &[u8]) -> Vec<u8> {
    let r = &send.body.source;
    let mut body = send.body.prefix.to_vec();
    body.extend_from_slice(&source[r.start as usize..r.end as usize]);
    body.extend_from_slice(&send.body.suffix);
    body
}

/// One part of a parsed multipart body.
#[derive(Debug, PartialEq, Eq)]
struct Part {
    name: String,
    file_name: Option<String>,
    content_type: Option<String>,
    bytes: Vec<u8>,
}

/// Parses an APPEND's assembled body with `multer`, as a server would.
fn multipart(send: &Transmit, source: &[u8]) -> Vec<Part> {
    let content_type = header(send, "content-type").expect("Content-Type");
    let boundary = multer::parse_boundary(content_type).expect("a multipart Content-Type");
    let body = Bytes::from(assemble(send, source));
    let length = body.len().to_string();
    assert_eq!(header(send, "content-length"), Some(length.as_str()));
    let stream = futures::stream::once(async move { Ok::<Bytes, Infallible>(body) });
    let mut parts = multer::Multipart::new(stream, boundary);
    futures::executor::block_on(async {
        let mut out = Vec::new();
        while let Some(field) = parts.next_field().await.expect("well-formed multipart") {
            let name = field.name().unwrap_or_default().to_owned();
            let file_name = field.file_name().map(str::to_owned);
            let content_type = field.content_type().map(|m| m.to_string());
            let bytes = field.bytes().await.expect("a complete part").to_vec();
            out.push(Part {
                name,
                file_name,
                content_type,
                bytes,
            });
        }
        out
    })
}

fn text_parts(parts: &[Part]) -> Vec<(&str, &str)> {
    parts
        .iter()
        .filter(|p| p.file_name.is_none())
        .map(|p| (p.name.as_str(), std::str::from_utf8(&p.bytes).unwrap()))
        .collect()
}

fn media_part(parts: &[Part]) -> &Part {
    let media: Vec<&Part> = parts.iter().filter(|p| p.name == "media").collect();
    assert_eq!(media.len(), 1, "exactly one media part");
    media[0]
}

fn status_uri(base: &str) -> String {
    format!("{base}?command=STATUS&media_id={ID}")
}

// ---------------------------------------------------------------------------------------------
// M1 / M6: INIT
// ---------------------------------------------------------------------------------------------

// M1: v1.1 INIT is a form POST with every field; the answer's media_id_string is the id.
#[test]
fn m1_v1_init_is_a_form_with_every_field() {
    let mut c = config(ApiVersion::v1_1(), 10, 4);
    c.media_category = Some("tweet_video".into());
    c.additional_owners = vec!["111".into(), "222".into()];
    let mut ex = Exchange::new(c);
    let init = ex.send();
    assert_eq!(init.request.method(), Method::POST);
    assert_eq!(init.request.uri(), V1_1_ENDPOINT);
    let form = b"command=INIT&total_bytes=10&media_type=video%2Fmp4&media_category=tweet_video&additional_owners=111%2C222";
    assert_eq!(&init.body.prefix[..], &form[..]);
    assert!(init.body.source.is_empty() && init.body.suffix.is_empty());
    assert_eq!(header(&init, "content-type"), Some(FORM));
    let length = form.len().to_string();
    assert_eq!(header(&init, "content-length"), Some(length.as_str()));
    assert_eq!(header(&init, "authorization"), Some(AUTH));
    // M1: a number past 2^53 may have been rounded on the way (here it was); the string wins.
    ex.respond(
        init.id,
        202,
        &[],
        &format!(r#"{{"media_id":1880028106020515800,"media_id_string":"{ID}","media_key":"{KEY}","expires_after_secs":86400}}"#),
    );
    assert_eq!(ex.upload.media_id(), Some(ID));
    assert_eq!(ex.upload.media_key(), Some(KEY));
    assert!(ex.upload.expires_at().is_some());
}

// M1: optional fields are left out when not set.
#[test]
fn m1_v1_init_minimal_form() {
    let mut ex = Exchange::v1(3, 4);
    let init = ex.send();
    assert_eq!(
        &init.body.prefix[..],
        b"command=INIT&total_bytes=3&media_type=video%2Fmp4"
    );
}

// M6: v2 INIT is JSON at /initialize, owners as an array and shared as a boolean; the answer
// is wrapped in `data`.
#[test]
fn m6_v2_init_is_json_with_owners_array_and_shared() {
    let mut c = config(ApiVersion::v2(), 10, 4);
    c.media_category = Some("amplify_video".into());
    c.additional_owners = vec!["111".into(), "222".into()];
    c.shared = true;
    let mut ex = Exchange::new(c);
    let init = ex.send();
    assert_eq!(init.request.method(), Method::POST);
    assert_eq!(init.request.uri(), &*format!("{V2_BASE}/initialize"));
    assert_eq!(header(&init, "content-type"), Some("application/json"));
    let length = init.body.len().to_string();
    assert_eq!(header(&init, "content-length"), Some(length.as_str()));
    let json: serde_json::Value = serde_json::from_slice(&init.body.prefix).unwrap();
    assert_eq!(
        json,
        serde_json::json!({
            "total_bytes": 10,
            "media_type": "video/mp4",
            "media_category": "amplify_video",
            "additional_owners": ["111", "222"],
            "shared": true,
        })
    );
    ex.respond(
        init.id,
        200,
        &[],
        &format!(r#"{{"data":{{"id":"{ID}","media_key":"{KEY}","expires_after_secs":1295999}}}}"#),
    );
    assert_eq!(ex.upload.media_id(), Some(ID));
    assert_eq!(ex.upload.media_key(), Some(KEY));
}

// M1/M6: an INIT answer without a usable id is a protocol violation; with an error body, a
// typed API error (M5).
#[test]
fn m1_init_without_a_media_id_is_typed() {
    for (body, want_api) in [
        (r#"{"media_key":"x"}"#, false),
        (r#"{"media_id_string":"12/../34"}"#, false),
        ("not json", false),
        (
            r#"{"errors":[{"code":131,"message":"Internal error"}]}"#,
            true,
        ),
    ] {
        let mut ex = Exchange::v1(3, 4);
        let init = ex.send();
        ex.respond(init.id, 200, &[], body);
        match ex.done() {
            Err(Error::Protocol(ProtocolViolation::MalformedResponse(_))) => assert!(!want_api),
            Err(Error::Api { code, .. }) => {
                assert!(want_api);
                assert_eq!(code, Some(131));
            }
            other => panic!("{body}: {other:?}"),
        }
    }
    // M6: v2 reads `data.id`, not a bare `id`.
    let mut ex = Exchange::v2(3, 4);
    let init = ex.send();
    ex.respond(init.id, 200, &[], &format!(r#"{{"id":"{ID}"}}"#));
    assert!(matches!(ex.done(), Err(Error::Protocol(_))));
}

// ---------------------------------------------------------------------------------------------
// M2: segment plan and APPEND
// ---------------------------------------------------------------------------------------------

// M2: each segment ≤ 5,000,000 bytes and ≥ ⌈T/1000⌉; at most 1000 segments.
#[test]
fn m2_segment_plan_bounds() {
    let plan = SegmentPlan::new(10, 4).unwrap();
    assert_eq!((plan.segment_size(), plan.count()), (4, 3));
    assert_eq!(plan.range(2), Some(8..10));
    let plan = SegmentPlan::new(3_000_001, 1).unwrap();
    assert_eq!((plan.segment_size(), plan.count()), (3001, 1000));
    let plan = SegmentPlan::new(5_000_000_000, 1 << 20).unwrap();
    assert_eq!(
        (plan.segment_size(), plan.count()),
        (MAX_SEGMENT_SIZE, 1000)
    );
    assert!(matches!(
        SegmentPlan::new(10, MAX_SEGMENT_SIZE + 1),
        Err(UsageError::ChunkSize { .. })
    ));
}

// M2: a file that cannot fit in 1000 segments of 5 MB is refused before anything is sent.
#[test]
fn m2_too_large_file_is_refused_before_sending() {
    for api in [ApiVersion::v1_1(), ApiVersion::v2()] {
        let c = MediaConfig::new(api, 5_000_000_001, "video/mp4");
        assert_eq!(
            MediaUpload::new(c).err(),
            Some(UsageError::SourceTooLarge {
                total: 5_000_000_001,
                max: 5_000_000_000
            })
        );
    }
    let c = MediaConfig::new(ApiVersion::v1_1(), 0, "video/mp4");
    assert!(matches!(
        MediaUpload::new(c),
        Err(UsageError::InvalidInput { .. })
    ));
}

// M2: v1.1 APPEND is multipart with command, media_id, segment_index and the raw media bytes;
// the segment is the source range between the core's prefix and suffix.
#[test]
fn m2_v1_append_multipart_framing_parses() {
    let mut ex = Exchange::v1(10, 4);
    ex.initialized(86400);
    for (index, range) in [(0u32, 0..4u64), (1, 4..8), (2, 8..10)] {
        let append = ex.send();
        assert_eq!(append.request.method(), Method::POST);
        assert_eq!(append.request.uri(), V1_1_ENDPOINT);
        assert_eq!(append.body.source, range.clone());
        assert_eq!(header(&append, "authorization"), Some(AUTH));
        let content_type = header(&append, "content-type").unwrap();
        let boundary = content_type
            .strip_prefix("multipart/form-data; boundary=")
            .expect("multipart content type");
        // The boundary occurs only on the delimiter lines (M2).
        let prefix = std::str::from_utf8(&append.body.prefix).unwrap();
        assert_eq!(prefix.matches(boundary).count(), 4);
        assert_eq!(
            &append.body.suffix[..],
            format!("\r\n--{boundary}--\r\n").as_bytes()
        );
        let parts = multipart(&append, &ex.source);
        let index_text = index.to_string();
        assert_eq!(
            text_parts(&parts),
            [
                ("command", "APPEND"),
                ("media_id", ID),
                ("segment_index", index_text.as_str())
            ]
        );
        let media = media_part(&parts);
        assert_eq!(
            media.bytes,
            &ex.source[range.start as usize..range.end as usize]
        );
        assert_eq!(
            media.content_type.as_deref(),
            Some("application/octet-stream")
        );
        assert_eq!(parts.last().unwrap().name, "media", "media comes last");
        ex.respond(append.id, 204, &[], "");
        assert_eq!(ex.upload.persisted(), range.end);
    }
}

// M6: v2 APPEND goes to /{id}/append with only segment_index and media.
#[test]
fn m6_v2_append_has_segment_index_and_media_only() {
    let mut ex = Exchange::v2(6, 4);
    ex.initialized(86400);
    let append = ex.send();
    assert_eq!(append.request.uri(), &*format!("{V2_BASE}/{ID}/append"));
    let parts = multipart(&append, &ex.source);
    assert_eq!(text_parts(&parts), [("segment_index", "0")]);
    assert_eq!(media_part(&parts).bytes, &ex.source[0..4]);
    // M6: the answer `{"data":{"expires_at":…}}` is not needed.
    ex.respond(append.id, 200, &[], r#"{"data":{"expires_at":1700000000}}"#);
    let second = ex.send();
    let parts = multipart(&second, &ex.source);
    assert_eq!(text_parts(&parts), [("segment_index", "1")]);
    assert_eq!(media_part(&parts).bytes, &ex.source[4..6]);
}

// M2: 1000 segments use indexes 0..=999, each of ⌈T/1000⌉ bytes.
#[test]
fn m2_a_thousand_segments_end_at_index_999() {
    let mut ex = Exchange::v1(2000, 1);
    ex.initialized(86400);
    let mut last = None;
    for index in 0..1000u64 {
        let append = ex.send();
        assert_eq!(append.body.source, index * 2..index * 2 + 2);
        if index == 0 || index == 999 {
            let parts = multipart(&append, &ex.source);
            let expected = index.to_string();
            assert_eq!(text_parts(&parts)[2], ("segment_index", expected.as_str()));
        }
        ex.respond(append.id, 200, &[], "");
        last = Some(append.body.source);
    }
    assert_eq!(last, Some(1998..2000));
    let finalize = ex.send();
    assert_eq!(
        &finalize.body.prefix[..],
        format!("command=FINALIZE&media_id={ID}").as_bytes()
    );
}

// M2: a failed APPEND (transport failure, 5xx, 408, 429) is sent again after a backoff wait,
// with the same segment_index and bytes.
#[test]
fn m2_failed_append_is_retried_with_the_same_segment_index() {
    let mut ex = Exchange::v1(8, 4);
    ex.initialized(86400);
    let first = ex.send();
    let parts = multipart(&first, &ex.source);
    ex.upload
        .handle_failure(ex.now, first.id, TransportFailure::Reset)
        .unwrap();
    let until = ex.wait();
    assert_eq!(until - ex.now, Duration::from_secs(1));
    assert!(
        matches!(ex.poll(), Action::Wait(u) if u == until),
        "idempotent"
    );
    ex.now = until;
    let mut previous = first;
    for status in [503, 408, 500] {
        let again = ex.send();
        assert_ne!(again.id, previous.id, "a new request id");
        assert_eq!(again.body, previous.body, "the same framing and range");
        assert_eq!(
            multipart(&again, &ex.source),
            parts,
            "the same segment_index"
        );
        ex.respond(again.id, status, &[], "");
        ex.now = ex.wait();
        previous = again;
    }
    let last = ex.send();
    assert_eq!(last.body.source, 0..4);
    ex.respond(last.id, 200, &[], "");
    assert_eq!(ex.upload.stats().retries, 4);
    assert_eq!(ex.send().body.source, 4..8);
}

// M2: any 2xx acknowledges an APPEND, whatever its body: v1.1 bodies are never parsed.
#[test]
fn m2_any_2xx_with_a_garbage_body_is_accepted() {
    let mut ex = Exchange::v1(12, 4);
    ex.initialized(86400);
    for (status, body) in [
        (200, "<html>not json"),
        (202, "{\"errors\":[{\"code\":1}]"),
        (204, ""),
    ] {
        let append = ex.send();
        ex.respond(append.id, status, &[("content-type", "text/html")], body);
    }
    assert_eq!(ex.upload.persisted(), 12);
    let finalize = ex.send();
    assert!(finalize.body.source.is_empty());
}

// M2 (optional part): up to N APPENDs in flight; polls hand out new segments until N are out,
// then repeat the oldest; a failed one is retried with its index; persisted is contiguous.
#[test]
fn m2_several_appends_in_flight() {
    let mut c = config(ApiVersion::v1_1(), 20, 4);
    c.max_in_flight = 3;
    let mut ex = Exchange::new(c);
    ex.initialized(86400);
    let s0 = ex.send();
    let s1 = ex.send();
    let s2 = ex.send();
    assert_eq!(
        [&s0.body.source, &s1.body.source, &s2.body.source],
        [&(0..4), &(4..8), &(8..12)]
    );
    // Saturated: each request is handed out once, so a poll now is Idle, and again.
    assert!(matches!(ex.poll(), Action::Idle));
    assert!(matches!(ex.poll(), Action::Idle));
    ex.respond(s1.id, 200, &[], "");
    assert_eq!(
        ex.upload.persisted(),
        0,
        "segment 0 is not acknowledged yet"
    );
    let s3 = ex.send();
    assert_eq!(s3.body.source, 12..16);
    ex.upload
        .handle_failure(ex.now, s0.id, TransportFailure::Timeout)
        .unwrap();
    let until = ex.wait();
    ex.respond(s2.id, 200, &[], ""); // answers still arrive during the wait
    assert!(matches!(ex.poll(), Action::Wait(u) if u == until));
    ex.now = until;
    let retry = ex.send();
    assert_eq!(retry.body.source, 0..4, "the failed segment first");
    assert_eq!(text_parts(&multipart(&retry, &ex.source))[2].1, "0");
    let s4 = ex.send();
    assert_eq!(s4.body.source, 16..20);
    assert!(
        matches!(ex.poll(), Action::Idle),
        "nothing new is due: Idle while three are in flight"
    );
    ex.respond(retry.id, 200, &[], "");
    assert_eq!(ex.upload.persisted(), 12);
    ex.respond(s3.id, 200, &[], "");
    ex.respond(s4.id, 200, &[], "");
    assert_eq!(ex.upload.persisted(), 20);
    let finalize = ex.send();
    assert_eq!(finalize.request.uri(), V1_1_ENDPOINT);
    assert!(finalize.body.source.is_empty());
}

// ---------------------------------------------------------------------------------------------
// M3 / M4: FINALIZE and STATUS
// ---------------------------------------------------------------------------------------------

// M3: v1.1 FINALIZE is a form; an answer without processing_info means the media is ready.
#[test]
fn m3_v1_finalize_without_processing_info_is_done() {
    let mut ex = Exchange::v1(5, 4);
    ex.initialized(86400);
    let finalize = ex.append_all();
    assert_eq!(finalize.request.method(), Method::POST);
    assert_eq!(finalize.request.uri(), V1_1_ENDPOINT);
    assert_eq!(header(&finalize, "content-type"), Some(FORM));
    let form = format!("command=FINALIZE&media_id={ID}");
    assert_eq!(&finalize.body.prefix[..], form.as_bytes());
    let length = form.len().to_string();
    assert_eq!(header(&finalize, "content-length"), Some(length.as_str()));
    let body = format!(
        r#"{{"media_id":{ID},"media_id_string":"{ID}","size":5,"expires_after_secs":86400,"image":{{"image_type":"image/jpeg"}}}}"#
    );
    ex.respond(finalize.id, 201, &[], &body);
    let done = ex.done().expect("ready");
    assert_eq!(done.media_id, ID);
    assert_eq!(done.media_key.as_deref(), Some(KEY));
    assert_eq!(done.size, 5);
    assert_eq!(done.processing, None);
    assert_eq!(done.expires_after_secs, Some(86400));
    assert_eq!(done.body, body.as_bytes());
    assert_eq!(ex.upload.persisted(), 5);
    assert_eq!(ex.upload.resume_state(), None, "nothing to resume");
}

// M6: v2 FINALIZE is an empty POST to /{id}/finalize; its answer is `data`-wrapped.
#[test]
fn m6_v2_finalize_is_an_empty_post() {
    let mut ex = Exchange::v2(5, 8);
    ex.initialized(86400);
    let finalize = ex.append_all();
    assert_eq!(finalize.request.method(), Method::POST);
    assert_eq!(finalize.request.uri(), &*format!("{V2_BASE}/{ID}/finalize"));
    assert!(finalize.body.is_empty());
    assert_eq!(header(&finalize, "content-length"), Some("0"));
    assert_eq!(header(&finalize, "content-type"), None);
    ex.respond(
        finalize.id,
        200,
        &[],
        &format!(r#"{{"data":{{"id":"{ID}","media_key":"{KEY}","size":5}}}}"#),
    );
    let done = ex.done().unwrap();
    assert_eq!((done.media_id.as_str(), done.size), (ID, 5));
}

// M3: a FINALIZE answer about another media id, or another size, is not accepted.
#[test]
fn m3_finalize_for_another_id_or_size_is_refused() {
    let mut ex = Exchange::v1(5, 8);
    ex.initialized(86400);
    let finalize = ex.append_all();
    ex.respond(finalize.id, 200, &[], r#"{"media_id_string":"1","size":5}"#);
    assert!(matches!(
        ex.done(),
        Err(Error::Protocol(ProtocolViolation::MalformedResponse(_)))
    ));
    let mut ex = Exchange::v1(5, 8);
    ex.initialized(86400);
    let finalize = ex.append_all();
    ex.respond(
        finalize.id,
        200,
        &[],
        &format!(r#"{{"media_id_string":"{ID}","size":4}}"#),
    );
    assert_eq!(
        ex.done(),
        Err(Error::Integrity(IntegrityError::Size {
            stored: 4,
            sent: 5
        }))
    );
    // M5: a 2xx that carries only `errors` does not describe the media: still an API error.
    let mut ex = Exchange::v1(5, 8);
    ex.initialized(86400);
    let finalize = ex.append_all();
    ex.respond(
        finalize.id,
        200,
        &[],
        r#"{"errors":[{"code":324,"message":"Invalid media."}]}"#,
    );
    assert!(matches!(
        ex.done(),
        Err(Error::Api { status, code: Some(324), .. }) if status == http::StatusCode::OK
    ));
}

// M4: pending → Wait(check_after_secs) → STATUS → in_progress → Wait → STATUS → succeeded.
#[test]
fn m4_v1_status_polls_wait_check_after_secs() {
    let mut ex = Exchange::v1(5, 8);
    ex.initialized(86400);
    let finalize = ex.append_all();
    ex.respond(
        finalize.id,
        200,
        &[],
        &format!(
            r#"{{"media_id_string":"{ID}","size":5,"processing_info":{{"state":"pending","check_after_secs":5}}}}"#
        ),
    );
    let until = ex.wait();
    assert_eq!(until - ex.now, Duration::from_secs(5));
    ex.now += Duration::from_secs(2);
    assert_eq!(ex.wait(), until, "early polls keep waiting");
    ex.now = until;
    let status = ex.send();
    assert_eq!(status.request.method(), Method::GET);
    assert_eq!(status.request.uri(), &*status_uri(V1_1_ENDPOINT));
    assert!(status.body.is_empty());
    assert_eq!(header(&status, "content-length"), None);
    assert_eq!(header(&status, "authorization"), Some(AUTH));
    ex.respond(
        status.id,
        200,
        &[],
        &format!(
            r#"{{"media_id_string":"{ID}","processing_info":{{"state":"in_progress","check_after_secs":10,"progress_percent":40}}}}"#
        ),
    );
    let info = ex.upload.processing().unwrap();
    assert_eq!(
        (info.state, info.progress_percent),
        (ProcessingState::InProgress, Some(40))
    );
    let until = ex.wait();
    assert_eq!(until - ex.now, Duration::from_secs(10));
    ex.now = until;
    let status = ex.send();
    assert_eq!(status.request.uri(), &*status_uri(V1_1_ENDPOINT));
    ex.respond(
        status.id,
        200,
        &[],
        &format!(
            r#"{{"media_id_string":"{ID}","processing_info":{{"state":"succeeded","progress_percent":100}}}}"#
        ),
    );
    let done = ex.done().unwrap();
    let info = done.processing.expect("processing reported");
    assert_eq!(info.state, ProcessingState::Succeeded);
    assert_eq!(ex.upload.stats().status_polls, 2);
}

// M4/M6: v2 STATUS is GET base?command=STATUS&media_id=ID, answered in `data`.
#[test]
fn m4_v2_status_poll() {
    let mut ex = Exchange::v2(5, 8);
    ex.initialized(86400);
    let finalize = ex.append_all();
    ex.respond(
        finalize.id,
        200,
        &[],
        r#"{"data":{"processing_info":{"state":"pending","check_after_secs":1}}}"#,
    );
    ex.now = ex.wait();
    let status = ex.send();
    assert_eq!(status.request.method(), Method::GET);
    assert_eq!(status.request.uri(), &*status_uri(V2_BASE));
    ex.respond(
        status.id,
        200,
        &[],
        &format!(r#"{{"data":{{"id":"{ID}","processing_info":{{"state":"succeeded"}}}}}}"#),
    );
    assert!(ex.done().is_ok());
}

// M4: an `error` object is terminal even while the state says in_progress.
#[test]
fn m4_error_during_in_progress_is_terminal() {
    let mut ex = Exchange::v1(5, 8);
    ex.initialized(86400);
    let finalize = ex.append_all();
    ex.respond(
        finalize.id,
        200,
        &[],
        r#"{"processing_info":{"state":"pending","check_after_secs":1}}"#,
    );
    ex.now = ex.wait();
    let status = ex.send();
    ex.respond(
        status.id,
        200,
        &[],
        r#"{"processing_info":{"state":"in_progress","check_after_secs":5,"progress_percent":30,"error":{"code":1,"name":"InvalidMedia","message":"Unsupported video format"}}}"#,
    );
    let want = Err(Error::ProcessingFailed {
        code: Some(1),
        name: Some("InvalidMedia".into()),
        message: Some("Unsupported video format".into()),
    });
    assert_eq!(ex.done(), want);
    assert_eq!(ex.done(), want, "sticky");
}

// M4: state `failed` ends the upload with a typed error.
#[test]
fn m4_failed_state_is_a_typed_error() {
    let mut ex = Exchange::v2(5, 8);
    ex.initialized(86400);
    let finalize = ex.append_all();
    ex.respond(
        finalize.id,
        200,
        &[],
        r#"{"data":{"processing_info":{"state":"failed","progress_percent":12}}}"#,
    );
    assert_eq!(
        ex.done(),
        Err(Error::ProcessingFailed {
            code: None,
            name: None,
            message: None
        })
    );
}

// M4: STATUS polls are bounded by max_status_polls.
#[test]
fn m4_status_polls_are_bounded() {
    let mut c = config(ApiVersion::v1_1(), 5, 8);
    c.max_status_polls = 3;
    let mut ex = Exchange::new(c);
    ex.initialized(86400);
    let pending = r#"{"processing_info":{"state":"in_progress","check_after_secs":1}}"#;
    let finalize = ex.append_all();
    ex.respond(finalize.id, 200, &[], pending);
    for _ in 0..3 {
        ex.now = ex.wait();
        let status = ex.send();
        ex.respond(status.id, 200, &[], pending);
    }
    assert_eq!(ex.done(), Err(Error::ProcessingUnfinished { polls: 3 }));
}

// M4: a retryable STATUS failure polls again after the backoff; a 2xx STATUS answer without
// processing_info is a violation.
#[test]
fn m4_status_failures_and_malformed_answers() {
    let mut ex = Exchange::v1(5, 8);
    ex.initialized(86400);
    let finalize = ex.append_all();
    ex.respond(
        finalize.id,
        200,
        &[],
        r#"{"processing_info":{"state":"pending"}}"#,
    );
    let until = ex.wait();
    assert_eq!(
        until - ex.now,
        Duration::from_secs(5),
        "default check_after"
    );
    ex.now = until;
    let status = ex.send();
    ex.respond(status.id, 503, &[], "");
    ex.now = ex.wait();
    let again = ex.send();
    assert_eq!(again.request.uri(), &*status_uri(V1_1_ENDPOINT));
    ex.respond(
        again.id,
        200,
        &[],
        &format!(r#"{{"media_id_string":"{ID}"}}"#),
    );
    assert!(matches!(
        ex.done(),
        Err(Error::Protocol(ProtocolViolation::MalformedResponse(_)))
    ));
}

// ---------------------------------------------------------------------------------------------
// M5: errors, rate limits, expiry
// ---------------------------------------------------------------------------------------------

// M5: 429 waits until x-rate-limit-reset, measured against the response's Date.
#[test]
fn m5_429_honours_x_rate_limit_reset() {
    let date = "Wed, 21 Oct 2015 07:28:00 GMT";
    let epoch = httpdate::parse_http_date(date)
        .unwrap()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let reset = (epoch + 300).to_string();
    let mut ex = Exchange::v1(8, 4);
    ex.initialized(86400);
    let append = ex.send();
    ex.respond(
        append.id,
        429,
        &[
            ("date", date),
            ("x-rate-limit-reset", &reset),
            ("x-rate-limit-remaining", "0"),
        ],
        r#"{"errors":[{"code":88,"message":"Rate limit exceeded"}]}"#,
    );
    let until = ex.wait();
    assert_eq!(until - ex.now, Duration::from_secs(300));
    ex.now = until;
    let again = ex.send();
    assert_eq!(again.body, append.body, "the same segment_index");
    // Retry-After is honoured too; the longer of the two wins.
    ex.respond(
        again.id,
        429,
        &[
            ("date", date),
            ("x-rate-limit-reset", &(epoch + 10).to_string()),
            ("retry-after", "30"),
        ],
        "",
    );
    assert_eq!(ex.wait() - ex.now, Duration::from_secs(30));
    assert_eq!(
        resumable_core::retry::rate_limit_reset(
            response(429, &[("x-rate-limit-reset", "1")], "").headers()
        ),
        None,
        "no Date, no measure"
    );
}

// M5: retries are bounded by the policy: exhausted retries end with the last cause.
#[test]
fn m5_exhausted_retries_name_the_last_cause() {
    let mut c = config(ApiVersion::v2(), 8, 4);
    c.retry.max_attempts = 1;
    let mut ex = Exchange::new(c);
    ex.initialized(86400);
    let append = ex.send();
    ex.respond(append.id, 500, &[], "");
    ex.now = ex.wait();
    let again = ex.send();
    ex.respond(again.id, 503, &[], "");
    assert_eq!(
        ex.done(),
        Err(Error::RetriesExhausted {
            attempts: 2,
            last: RetryCause::Status(http::StatusCode::SERVICE_UNAVAILABLE),
            endpoint: Some(resumable_core::Endpoint {
                host: "api.x.com".into(),
                port: 443
            }),
        })
    );
}

// M5: both v1.1 error shapes and v2 RFC 7807 problems become typed errors with status, code
// and message; a body of another shape is a plain server error.
#[test]
fn m5_error_shapes_are_typed() {
    let cases: [(ApiVersion, u16, &str, Error); 4] = [
        (
            ApiVersion::v1_1(),
            400,
            r#"{"errors":[{"code":324,"message":"Invalid media id."}]}"#,
            Error::Api {
                status: http::StatusCode::BAD_REQUEST,
                code: Some(324),
                problem: None,
                message: Some("Invalid media id.".into()),
            },
        ),
        (
            ApiVersion::v1_1(),
            400,
            r#"{"request":"/1.1/media/upload.json","error":"Segments do not add up to provided total file size."}"#,
            Error::Api {
                status: http::StatusCode::BAD_REQUEST,
                code: None,
                problem: None,
                message: Some("Segments do not add up to provided total file size.".into()),
            },
        ),
        (
            ApiVersion::v2(),
            403,
            r#"{"type":"https://api.twitter.com/2/problems/client-forbidden","title":"Client Forbidden","detail":"This request must be made using an approved developer account.","status":403}"#,
            Error::Api {
                status: http::StatusCode::FORBIDDEN,
                code: None,
                problem: Some("https://api.twitter.com/2/problems/client-forbidden".into()),
                message: Some(
                    "This request must be made using an approved developer account.".into(),
                ),
            },
        ),
        (
            ApiVersion::v2(),
            401,
            "<html>Unauthorized</html>",
            Error::Server {
                status: http::StatusCode::UNAUTHORIZED,
                message: None,
            },
        ),
    ];
    for (api, status, body, want) in cases {
        let mut ex = Exchange::new(config(api, 8, 4));
        ex.initialized(86400);
        let append = ex.send();
        ex.respond(append.id, status, &[], body);
        assert_eq!(ex.done(), Err(want.clone()));
        assert!(!want.to_string().is_empty());
    }
}

// M5: the media id expires expires_after_secs after INIT's answer: no request after that, and
// no wait that would end past it.
#[test]
fn m5_expiry_is_respected() {
    let mut ex = Exchange::v1(8, 4);
    ex.initialized(60);
    assert_eq!(
        ex.upload.expires_at(),
        Some(ex.now + Duration::from_secs(60))
    );
    let append = ex.send();
    ex.respond(append.id, 200, &[], "");
    ex.now += Duration::from_secs(60);
    assert_eq!(ex.done(), Err(Error::MediaExpired { after_secs: 60 }));

    // A processing wait that would end after the expiry ends the upload at once.
    let mut ex = Exchange::v2(4, 4);
    ex.initialized(30);
    let finalize = ex.append_all();
    ex.respond(
        finalize.id,
        200,
        &[],
        r#"{"data":{"processing_info":{"state":"pending","check_after_secs":45}}}"#,
    );
    assert_eq!(ex.done(), Err(Error::MediaExpired { after_secs: 30 }));
}

// M5: every answer that carries expires_after_secs moves the deadline: processing that
// outlasts INIT's expiry succeeds when FINALIZE and STATUS give the id more time.
#[test]
fn m5_later_answers_move_the_expiry() {
    let mut ex = Exchange::v2(4, 4);
    ex.initialized(60);
    let finalize = ex.append_all();
    ex.now += Duration::from_secs(50);
    ex.respond(
        finalize.id,
        200,
        &[],
        r#"{"data":{"id":"1880028106020515840","expires_after_secs":3600,"processing_info":{"state":"in_progress","check_after_secs":45}}}"#,
    );
    assert_eq!(
        ex.upload.expires_at(),
        Some(ex.now + Duration::from_secs(3600))
    );
    ex.now = ex.wait();
    let status = ex.send();
    ex.respond(
        status.id,
        200,
        &[],
        r#"{"data":{"id":"1880028106020515840","expires_after_secs":3550,"processing_info":{"state":"succeeded"}}}"#,
    );
    let done = ex.done().expect("processed before the moved deadline");
    assert_eq!(done.expires_after_secs, Some(3550));
}

// M5: a saved media id past its wall-clock expiry is not resumed (the caller checks with its
// clock; the core has none).
#[test]
fn m5_an_expired_resume_state_says_so() {
    let date = "Wed, 21 Oct 2015 07:28:00 GMT";
    let epoch = httpdate::parse_http_date(date)
        .unwrap()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let mut ex = Exchange::v1(8, 4);
    let init = ex.send();
    ex.respond(
        init.id,
        200,
        &[("date", date)],
        &format!(r#"{{"media_id_string":"{ID}","expires_after_secs":3600}}"#),
    );
    let state = ex.upload.resume_state().unwrap();
    assert!(!state.is_expired(epoch + 3599));
    assert!(state.is_expired(epoch + 3600));
    let mut undated = state;
    undated.expires_at_unix = None;
    assert!(
        !undated.is_expired(u64::MAX),
        "no deadline recorded, none assumed"
    );
}

// M5: the resume state carries the server's wall-clock expiry (INIT's Date + expires_after_secs).
#[test]
fn m5_resume_state_carries_the_servers_expiry() {
    let date = "Wed, 21 Oct 2015 07:28:00 GMT";
    let epoch = httpdate::parse_http_date(date)
        .unwrap()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let mut ex = Exchange::v1(8, 4);
    let init = ex.send();
    ex.respond(
        init.id,
        200,
        &[("date", date)],
        &format!(r#"{{"media_id_string":"{ID}","expires_after_secs":3600}}"#),
    );
    let state = ex.upload.resume_state().unwrap();
    assert_eq!(state.expires_after_secs, Some(3600));
    assert_eq!(state.expires_at_unix, Some(epoch + 3600));
}

// ---------------------------------------------------------------------------------------------
// M7: what a signer sees; resuming; the driving contract; secrets
// ---------------------------------------------------------------------------------------------

// M7: form-urlencoded requests carry the whole form in the prefix (signed); APPEND is
// multipart and v2 INIT is JSON (not signed); STATUS has its fields in the query (signed).
#[test]
fn m7_signed_fields_are_where_a_signer_looks() {
    let mut ex = Exchange::v1(4, 4);
    let init = ex.send();
    assert_eq!(header(&init, "content-type"), Some(FORM));
    assert!(init.body.source.is_empty() && init.body.suffix.is_empty());
    assert_eq!(init.request.uri().query(), None);
    ex.respond(
        init.id,
        200,
        &[],
        &format!(r#"{{"media_id_string":"{ID}"}}"#),
    );
    let append = ex.send();
    assert!(
        header(&append, "content-type")
            .unwrap()
            .starts_with("multipart/form-data; boundary=")
    );
    assert_eq!(append.request.uri().query(), None);
    ex.respond(append.id, 200, &[], "");
    let finalize = ex.send();
    assert_eq!(header(&finalize, "content-type"), Some(FORM));
    ex.respond(
        finalize.id,
        200,
        &[],
        r#"{"processing_info":{"state":"pending","check_after_secs":1}}"#,
    );
    ex.now = ex.wait();
    let status = ex.send();
    assert_eq!(
        status.request.uri().query(),
        Some(&*format!("command=STATUS&media_id={ID}"))
    );
    let mut v2 = Exchange::v2(4, 4);
    let init = v2.send();
    assert_eq!(header(&init, "content-type"), Some("application/json"));
}

// Resume: a saved state continues with the first unacknowledged segment; a state for another
// file or API form is refused; a finalized state polls STATUS.
#[test]
fn resume_continues_with_the_next_unacknowledged_segment() {
    let mut c = config(ApiVersion::v1_1(), 10, 4);
    c.fingerprint = "video.mp4:10:1700000000".into();
    let mut ex = Exchange::new(c.clone());
    ex.initialized(86400);
    let first = ex.send();
    ex.respond(first.id, 200, &[], "");
    let second = ex.send();
    ex.upload
        .handle_failure(ex.now, second.id, TransportFailure::Reset)
        .unwrap();
    let state = ex.upload.resume_state().unwrap();
    assert_eq!(
        (
            state.api,
            state.media_id.as_str(),
            state.media_key.as_deref()
        ),
        (ApiForm::V1_1, ID, Some(KEY))
    );
    assert_eq!(
        (state.next_segment, state.next_offset, state.segment_size),
        (1, 4, 4)
    );
    assert!(!state.finalized);

    // A new process: a different preferred size does not change the saved plan.
    let mut later = c.clone();
    later.segment_size = 3;
    let mut again = MediaUpload::resume(later, state.clone()).unwrap();
    assert_eq!(again.persisted(), 4);
    let Action::Send(next) = again.poll_action(Instant::now()) else {
        panic!("expected the next APPEND");
    };
    assert_eq!(next.body.source, 4..8);
    let parts = multipart(&next, &source(10));
    assert_eq!(text_parts(&parts)[2], ("segment_index", "1"));

    let mut other = c.clone();
    other.fingerprint = "another file".into();
    assert!(matches!(
        MediaUpload::resume(other, state.clone()),
        Err(UsageError::StateMismatch(_))
    ));
    let mut v2 = config(ApiVersion::v2(), 10, 4);
    v2.fingerprint = c.fingerprint.clone();
    assert!(matches!(
        MediaUpload::resume(v2, state.clone()),
        Err(UsageError::StateMismatch(_))
    ));

    // Finalized with processing pending: the resumed upload polls STATUS first.
    let mut ex = Exchange::new(c.clone());
    ex.initialized(86400);
    let finalize = ex.append_all();
    ex.respond(
        finalize.id,
        200,
        &[],
        r#"{"processing_info":{"state":"pending","check_after_secs":5}}"#,
    );
    let state = ex.upload.resume_state().unwrap();
    assert!(state.finalized);
    assert_eq!(state.next_segment, 3);
    let mut again = MediaUpload::resume(c, state).unwrap();
    let Action::Send(status) = again.poll_action(Instant::now()) else {
        panic!("expected STATUS");
    };
    assert_eq!(status.request.uri(), &*status_uri(V1_1_ENDPOINT));
}

#[cfg(feature = "serde")]
#[test]
fn resume_state_round_trips_through_json() {
    let mut ex = Exchange::v2(10, 4);
    ex.initialized(86400);
    let state = ex.upload.resume_state().unwrap();
    let text = serde_json::to_string(&state).unwrap();
    assert_eq!(
        serde_json::from_str::<resumable_core::media::MediaResumeState>(&text).unwrap(),
        state
    );
}

// The driving contract: polling twice gives the same request; misuse is a typed usage error;
// after Done, every call reports the same outcome.
#[test]
fn a_request_is_handed_out_once_misuse_is_typed_and_failure_is_sticky() {
    let mut ex = Exchange::v1(8, 4);
    let a = ex.send();
    assert!(matches!(ex.poll(), Action::Idle), "INIT is in flight");
    assert_eq!(
        ex.upload.handle_read(ex.now, 0, b"x"),
        Err(UsageError::UnexpectedRead {
            offset: 0,
            expected: "media uploads never ask to read the source"
        })
    );
    assert_eq!(
        ex.upload
            .handle_response(ex.now, RequestId::new(99), response(200, &[], "")),
        Err(UsageError::UnknownRequest(99))
    );
    ex.respond(
        a.id,
        400,
        &[],
        r#"{"errors":[{"code":38,"message":"media_type parameter is missing."}]}"#,
    );
    let outcome = ex.done();
    assert!(matches!(outcome, Err(Error::Api { code: Some(38), .. })));
    assert_eq!(ex.done(), outcome);
    assert_eq!(
        ex.upload
            .handle_response(ex.now, a.id, response(200, &[], "")),
        Err(UsageError::Finished)
    );
    assert_eq!(
        ex.upload
            .handle_failure(ex.now, a.id, TransportFailure::Reset),
        Err(UsageError::Finished)
    );
}

// Configuration errors are typed usage errors before anything is sent.
#[test]
fn bad_configuration_is_refused() {
    let with = |f: &dyn Fn(&mut MediaConfig)| {
        let mut c = config(ApiVersion::v1_1(), 10, 4);
        f(&mut c);
        MediaUpload::new(c).err()
    };
    assert!(with(&|c| c.shared = true).is_some(), "shared is v2-only");
    assert!(with(&|c| c.max_in_flight = 0).is_some());
    assert!(with(&|c| c.media_type = String::new()).is_some());
    assert!(with(&|c| c.media_type = "video/mp4\r\nX: y".into()).is_some());
    assert!(with(&|c| c.additional_owners = vec!["12,3".into()]).is_some());
    assert!(with(&|c| c.segment_size = 0).is_some());
    assert!(
        with(&|c| {
            c.api = ApiVersion::V1_1 {
                endpoint: "https://upload.example/media?x=1".parse().unwrap(),
            }
        })
        .is_some()
    );
    assert!(
        with(&|c| {
            c.api = ApiVersion::V2 {
                base: "/relative".parse().unwrap(),
            }
        })
        .is_some()
    );
    // A test server stands in for X: every address is built on its base.
    let mut ex = Exchange::new(config(
        ApiVersion::V2 {
            base: "http://127.0.0.1:8080/2/media/upload/".parse().unwrap(),
        },
        4,
        4,
    ));
    assert_eq!(
        ex.send().request.uri(),
        "http://127.0.0.1:8080/2/media/upload/initialize"
    );
}

// Secrets: credentials never appear in Debug of requests, configs, uploads or errors.
#[test]
fn secrets_never_appear_in_debug() {
    let c = config(ApiVersion::v1_1(), 8, 4);
    assert!(!format!("{c:?}").contains("SECRETSIG"));
    let mut ex = Exchange::new(c);
    let init = ex.send();
    assert!(!format!("{init:?}").contains("SECRETSIG"));
    ex.respond(
        init.id,
        200,
        &[],
        &format!(r#"{{"media_id_string":"{ID}"}}"#),
    );
    let append = ex.send();
    let shown = format!("{append:?}");
    assert!(!shown.contains("SECRETSIG"));
    assert!(
        shown.contains("multipart/form-data"),
        "bookkeeping headers stay visible"
    );
    ex.respond(
        append.id,
        401,
        &[],
        r#"{"errors":[{"code":32,"message":"Could not authenticate you."}]}"#,
    );
    let outcome = ex.done();
    assert!(!format!("{outcome:?}").contains("SECRETSIG"));
    assert!(!format!("{:?}", ex.upload).contains("SECRETSIG"));
    assert!(!format!("{:?}", ex.upload.resume_state()).contains("SECRETSIG"));
}
