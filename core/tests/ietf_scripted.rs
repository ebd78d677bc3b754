//! Scripted tests of the upload of the IETF resumable-upload draft, one or more per rule (R1–R19
//! in `docs/protocols/ietf.md`): each drives the core request by request and checks what it
//! sends and how it reacts.

use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Method, Response, StatusCode};
use resumable_core::ietf::{IetfConfig, IetfResumeState, IetfStart, IetfUpload};
use resumable_core::{
    Action, Error, ProtocolViolation, RetryPolicy, SessionUri, Transmit, TransportFailure, Upload,
    UsageError,
};

const ENDPOINT: &str = "https://up.example/files";
const UPLOAD: &str = "https://up.example/files/u1";

fn config(total: u64, append: u64, interop: u32) -> IetfConfig {
    let mut c = IetfConfig::new(total);
    c.append_size = append;
    c.interop_version = interop;
    c.retry = RetryPolicy::default();
    c.retry.jitter = Duration::ZERO;
    c
}

fn create(c: IetfConfig) -> IetfUpload {
    IetfUpload::new(
        IetfStart::Create {
            endpoint: ENDPOINT.parse().unwrap(),
        },
        c,
    )
    .unwrap()
}

fn existing(c: IetfConfig) -> IetfUpload {
    IetfUpload::new(IetfStart::Existing(SessionUri::parse(UPLOAD).unwrap()), c).unwrap()
}

/// The next request; waits are jumped over.
fn next(u: &mut IetfUpload, now: &mut Instant) -> Transmit {
    for _ in 0..100 {
        match u.poll_action(*now) {
            Action::Send(t) => return t,
            Action::Wait(until) => *now = until,
            other => panic!("expected a request, got {other:?}"),
        }
    }
    panic!("no request")
}

fn done(u: &mut IetfUpload, now: Instant) -> Result<resumable_core::ietf::IetfCompletion, Error> {
    match u.poll_action(now) {
        Action::Done(outcome) => outcome,
        other => panic!("expected the end, got {other:?}"),
    }
}

fn response(status: u16, headers: &[(&str, &str)]) -> Response<Bytes> {
    let mut b = Response::builder().status(status);
    for (k, v) in headers {
        b = b.header(*k, *v);
    }
    b.body(Bytes::new()).unwrap()
}

fn answer(u: &mut IetfUpload, now: Instant, t: &Transmit, status: u16, headers: &[(&str, &str)]) {
    u.handle_response(now, t.id, response(status, headers))
        .unwrap();
}

fn header<'a>(t: &'a Transmit, name: &str) -> Option<&'a str> {
    t.request.headers().get(name).and_then(|v| v.to_str().ok())
}

fn interim(headers: &[(&str, &str)]) -> Response<()> {
    let mut b = Response::builder().status(104);
    for (k, v) in headers {
        b = b.header(*k, *v);
    }
    b.body(()).unwrap()
}

/// Careful creation answered 201 with the upload URL.
fn created(u: &mut IetfUpload, now: &mut Instant) {
    let t = next(u, now);
    assert_eq!(t.request.method(), Method::POST);
    answer(u, *now, &t, 201, &[("location", "/files/u1")]);
}

#[test]
fn r1_every_request_carries_the_interop_version_and_only_5_to_9_are_accepted() {
    for v in [5, 6, 7, 8, 9] {
        let now0 = Instant::now();
        let mut now = now0;
        let mut u = create(config(10, 4, v));
        let mut seen = Vec::new();
        let outcome = loop {
            let t = match u.poll_action(now) {
                Action::Send(t) => t,
                Action::Wait(w) => {
                    now = w;
                    continue;
                }
                Action::Done(o) => break o,
                other => panic!("{other:?}"),
            };
            seen.push(header(&t, "upload-draft-interop-version").map(str::to_owned));
            if t.request.method() == Method::POST {
                answer(&mut u, now, &t, 201, &[("location", "/files/u1")]);
            } else {
                let end = t.body.source.end.to_string();
                answer(&mut u, now, &t, 204, &[("upload-offset", &end)]);
            }
        };
        outcome.unwrap();
        assert!(seen.len() >= 4);
        assert!(
            seen.iter()
                .all(|s| s.as_deref() == Some(v.to_string().as_str()))
        );
    }
    for bad in [3, 4, 10] {
        let r = IetfUpload::new(
            IetfStart::Create {
                endpoint: ENDPOINT.parse().unwrap(),
            },
            config(10, 4, bad),
        );
        assert!(matches!(r, Err(UsageError::InvalidInput { .. })), "{bad}");
    }
    assert_eq!(IetfConfig::new(1).interop_version, 9);
}

#[test]
fn r1_a_104_with_another_interop_version_is_ignored() {
    let mut now = Instant::now();
    let mut c = config(10, 10, 8);
    c.sees_informational = true;
    let mut u = create(c);
    let t = next(&mut u, &mut now);
    u.handle_informational(
        now,
        t.id,
        interim(&[
            ("location", "/files/u1"),
            ("upload-draft-interop-version", "6"),
        ]),
    )
    .unwrap();
    assert!(u.upload_url().is_none());
    u.handle_informational(
        now,
        t.id,
        interim(&[
            ("location", "/files/u1"),
            ("upload-draft-interop-version", "8"),
        ]),
    )
    .unwrap();
    assert_eq!(u.upload_url().unwrap().expose(), UPLOAD);
}

#[test]
fn r3_r6_careful_creation_is_empty_with_complete_false_and_the_length() {
    let mut now = Instant::now();
    let mut c = config(10, 100, 9);
    c.creation_headers
        .insert("content-type", "text/plain".parse().unwrap());
    let mut u = create(c);
    let t = next(&mut u, &mut now);
    assert_eq!(t.request.method(), Method::POST);
    assert_eq!(t.request.uri(), ENDPOINT);
    assert!(t.body.is_empty());
    assert_eq!(header(&t, "upload-complete"), Some("?0"));
    assert_eq!(header(&t, "upload-length"), Some("10"));
    assert_eq!(header(&t, "content-length"), Some("0"));
    assert_eq!(header(&t, "content-type"), Some("text/plain"));
    // The URL is saved before any byte is sent.
    answer(&mut u, now, &t, 201, &[("location", "/files/u1")]);
    assert_eq!(u.resume_state().unwrap().upload_url.expose(), UPLOAD);
    let t = next(&mut u, &mut now);
    assert_eq!(t.request.method(), Method::PATCH);
    assert_eq!(t.body.source, 0..10);
    // Representation metadata is only on the creation.
    assert_eq!(
        header(&t, "content-type"),
        Some("application/partial-upload")
    );
}

#[test]
fn r3_an_empty_source_is_one_creation_with_complete_true() {
    let mut now = Instant::now();
    let mut u = create(config(0, 100, 9));
    let t = next(&mut u, &mut now);
    assert_eq!(header(&t, "upload-complete"), Some("?1"));
    assert_eq!(header(&t, "upload-length"), Some("0"));
    answer(&mut u, now, &t, 200, &[]);
    let d = done(&mut u, now).unwrap();
    assert_eq!(d.size, 0);
}

#[test]
fn r4_r6_optimistic_creation_takes_location_and_progress_from_104s() {
    let mut now = Instant::now();
    let mut c = config(100, 1000, 9);
    c.sees_informational = true;
    let mut u = create(c);
    let t = next(&mut u, &mut now);
    assert_eq!(t.body.source, 0..100);
    assert_eq!(header(&t, "upload-complete"), Some("?1"));
    assert_eq!(header(&t, "content-length"), Some("100"));
    let v = [("upload-draft-interop-version", "9")];
    u.handle_informational(
        now,
        t.id,
        interim(&[
            v[0],
            ("location", "/files/u1"),
            ("upload-limit", "max-size=1000"),
        ]),
    )
    .unwrap();
    u.handle_informational(now, t.id, interim(&[v[0], ("upload-offset", "40")]))
        .unwrap();
    assert_eq!(u.persisted(), 40);
    assert_eq!(u.limits().max_size, Some(1000));
    // The connection drops: the URL from the 104 resumes it.
    u.handle_failure(now, t.id, TransportFailure::Reset)
        .unwrap();
    let t = next(&mut u, &mut now);
    assert_eq!(t.request.method(), Method::HEAD);
    assert_eq!(t.request.uri(), UPLOAD);
    answer(
        &mut u,
        now,
        &t,
        204,
        &[("upload-offset", "60"), ("upload-complete", "?0")],
    );
    let t = next(&mut u, &mut now);
    assert_eq!(t.body.source, 60..100);
    assert_eq!(header(&t, "upload-offset"), Some("60"));
    assert_eq!(header(&t, "upload-complete"), Some("?1"));
    answer(&mut u, now, &t, 200, &[("upload-complete", "?1")]);
    assert_eq!(done(&mut u, now).unwrap().size, 100);
}

#[test]
fn r4_a_104_naming_another_location_ends_the_upload_and_deletes_it() {
    let mut now = Instant::now();
    let mut c = config(100, 1000, 9);
    c.sees_informational = true;
    let mut u = create(c);
    let t = next(&mut u, &mut now);
    let v = ("upload-draft-interop-version", "9");
    u.handle_informational(now, t.id, interim(&[v, ("location", "/files/u1")]))
        .unwrap();
    u.handle_informational(now, t.id, interim(&[v, ("location", "/files/u2")]))
        .unwrap();
    // The request is abandoned; whatever its end, the upload is deleted.
    assert!(matches!(u.poll_action(now), Action::Idle));
    answer(&mut u, now, &t, 201, &[("location", "/files/u2")]);
    let t = next(&mut u, &mut now);
    assert_eq!(t.request.method(), Method::DELETE);
    assert_eq!(t.request.uri(), UPLOAD);
    answer(&mut u, now, &t, 204, &[]);
    assert!(matches!(
        done(&mut u, now),
        Err(Error::Protocol(ProtocolViolation::MalformedResponse(_)))
    ));
}

#[test]
fn r5_an_optimistic_creation_failing_without_a_104_is_sent_again_whole() {
    let mut now = Instant::now();
    let mut c = config(50, 1000, 9);
    c.sees_informational = true;
    let mut u = create(c);
    let t = next(&mut u, &mut now);
    answer(&mut u, now, &t, 503, &[]);
    let t = next(&mut u, &mut now);
    assert_eq!(t.request.method(), Method::POST);
    assert_eq!(t.body.source, 0..50);
    answer(&mut u, now, &t, 201, &[("upload-complete", "?1")]);
    let d = done(&mut u, now).unwrap();
    assert_eq!(d.size, 50);
    assert!(d.upload_url.is_none());
}

#[test]
fn r5_a_refusal_with_complete_true_is_final() {
    let mut now = Instant::now();
    let mut u = create(config(10, 100, 9));
    created(&mut u, &mut now);
    let t = next(&mut u, &mut now);
    answer(&mut u, now, &t, 400, &[("upload-complete", "?1")]);
    assert!(matches!(done(&mut u, now), Err(Error::Server { .. })));
}

#[test]
fn r5_a_careful_201_without_location_is_a_violation() {
    let mut now = Instant::now();
    let mut u = create(config(10, 100, 9));
    let t = next(&mut u, &mut now);
    answer(&mut u, now, &t, 201, &[]);
    assert!(matches!(
        done(&mut u, now),
        Err(Error::Protocol(ProtocolViolation::MissingLocation))
    ));
}

#[test]
fn r7_resume_asks_with_head_and_the_servers_offset_decides() {
    let mut now = Instant::now();
    let state = IetfResumeState {
        upload_url: SessionUri::parse(UPLOAD).unwrap(),
        total: 100,
        interop_version: 8,
        persisted: 80,
        sent: Some(90),
        fingerprint: String::new(),
    };
    let mut u = IetfUpload::new(IetfStart::Resume(state.clone()), config(100, 1000, 8)).unwrap();
    let t = next(&mut u, &mut now);
    assert_eq!(t.request.method(), Method::HEAD);
    assert_eq!(header(&t, "upload-draft-interop-version"), Some("8"));
    answer(
        &mut u,
        now,
        &t,
        200,
        &[
            ("upload-offset", "30"),
            ("upload-complete", "?0"),
            ("upload-length", "100"),
        ],
    );
    assert_eq!(u.stats().resumed_from, Some(30));
    let t = next(&mut u, &mut now);
    assert_eq!(t.body.source, 30..100);
    // Another interop version does not fit the state.
    assert!(matches!(
        IetfUpload::new(IetfStart::Resume(state), config(100, 1000, 9)),
        Err(UsageError::StateMismatch(_))
    ));
}

#[test]
fn r7_a_head_saying_complete_ends_the_upload_without_sending() {
    let mut now = Instant::now();
    let mut u = existing(config(10, 100, 9));
    let t = next(&mut u, &mut now);
    answer(
        &mut u,
        now,
        &t,
        204,
        &[("upload-offset", "10"), ("upload-complete", "?1")],
    );
    assert_eq!(done(&mut u, now).unwrap().size, 10);
    assert_eq!(u.stats().requests, 1);
}

#[test]
fn r7_head_without_offset_is_a_violation_and_5xx_is_retried() {
    let mut now = Instant::now();
    let mut u = existing(config(10, 100, 9));
    let t = next(&mut u, &mut now);
    answer(&mut u, now, &t, 503, &[]);
    let t = next(&mut u, &mut now);
    assert_eq!(t.request.method(), Method::HEAD);
    answer(&mut u, now, &t, 204, &[("upload-complete", "?0")]);
    assert!(matches!(
        done(&mut u, now),
        Err(Error::Protocol(ProtocolViolation::MalformedResponse(_)))
    ));
    // An Upload-Offset that is not an sf-integer is not read as one (R2).
    let mut u = existing(config(10, 100, 9));
    let t = next(&mut u, &mut now);
    answer(&mut u, now, &t, 204, &[("upload-offset", "+5")]);
    assert!(matches!(done(&mut u, now), Err(Error::Protocol(_))));
}

#[test]
fn r7_a_head_with_another_length_is_a_typed_error() {
    let mut now = Instant::now();
    let mut u = existing(config(10, 100, 9));
    let t = next(&mut u, &mut now);
    answer(
        &mut u,
        now,
        &t,
        204,
        &[("upload-offset", "0"), ("upload-length", "11")],
    );
    // The upload is deleted first, then the error.
    let t = next(&mut u, &mut now);
    assert_eq!(t.request.method(), Method::DELETE);
    answer(&mut u, now, &t, 204, &[]);
    assert!(matches!(
        done(&mut u, now),
        Err(Error::Protocol(ProtocolViolation::LengthDiffers {
            server: 11,
            ..
        }))
    ));
}

#[test]
fn r8_an_offset_beyond_what_was_sent_is_the_servers_fault_and_the_upload_is_cancelled() {
    let mut now = Instant::now();
    let mut u = create(config(100, 10, 9));
    created(&mut u, &mut now);
    let t = next(&mut u, &mut now);
    assert_eq!(t.body.source, 0..10);
    u.handle_failure(now, t.id, TransportFailure::Timeout)
        .unwrap();
    let t = next(&mut u, &mut now);
    assert_eq!(t.request.method(), Method::HEAD);
    answer(&mut u, now, &t, 204, &[("upload-offset", "11")]);
    let t = next(&mut u, &mut now);
    assert_eq!(t.request.method(), Method::DELETE);
    answer(&mut u, now, &t, 204, &[]);
    assert!(matches!(
        done(&mut u, now),
        Err(Error::Protocol(ProtocolViolation::RangeBeyondSent {
            claimed: 11,
            sent: 10
        }))
    ));
}

#[test]
fn r8_an_offset_beyond_the_length_of_an_existing_upload_is_a_violation() {
    let mut now = Instant::now();
    let mut u = existing(config(10, 100, 9));
    let t = next(&mut u, &mut now);
    answer(&mut u, now, &t, 204, &[("upload-offset", "12")]);
    let t = next(&mut u, &mut now);
    assert_eq!(t.request.method(), Method::DELETE);
    u.handle_failure(now, t.id, TransportFailure::Reset)
        .unwrap();
    assert!(matches!(
        done(&mut u, now),
        Err(Error::Protocol(ProtocolViolation::RangeBeyondSent { .. }))
    ));
}

#[test]
fn r8_an_offset_going_backwards_is_a_violation() {
    let mut now = Instant::now();
    let mut u = create(config(100, 10, 9));
    created(&mut u, &mut now);
    let t = next(&mut u, &mut now);
    answer(&mut u, now, &t, 204, &[("upload-offset", "10")]);
    let t = next(&mut u, &mut now);
    answer(&mut u, now, &t, 503, &[]);
    let t = next(&mut u, &mut now);
    assert_eq!(t.request.method(), Method::HEAD);
    answer(&mut u, now, &t, 204, &[("upload-offset", "5")]);
    assert!(matches!(
        done(&mut u, now),
        Err(Error::Protocol(ProtocolViolation::PersistedWentBackwards {
            before: 10,
            now: 5
        }))
    ));
}

#[test]
fn r9_r19_append_headers_follow_the_interop_version() {
    for (v, ct) in [
        (5, None),
        (6, Some("application/partial-upload")),
        (9, Some("application/partial-upload")),
    ] {
        let mut now = Instant::now();
        let mut u = create(config(20, 10, v));
        let t = next(&mut u, &mut now);
        // Before 6 the length goes with the completing request only.
        assert_eq!(
            header(&t, "upload-length").is_some(),
            v >= 6 || header(&t, "upload-complete") == Some("?0")
        );
        answer(&mut u, now, &t, 201, &[("location", UPLOAD)]);
        let t = next(&mut u, &mut now);
        assert_eq!(t.request.method(), Method::PATCH, "{v}");
        assert_eq!(t.request.uri(), UPLOAD);
        assert_eq!(header(&t, "content-type"), ct, "{v}");
        assert_eq!(header(&t, "upload-offset"), Some("0"));
        assert_eq!(header(&t, "upload-complete"), Some("?0"));
        assert_eq!(header(&t, "content-length"), Some("10"));
        answer(&mut u, now, &t, 204, &[("upload-offset", "10")]);
        let t = next(&mut u, &mut now);
        assert_eq!(t.body.source, 10..20);
        assert_eq!(header(&t, "upload-complete"), Some("?1"));
        answer(&mut u, now, &t, 204, &[("upload-offset", "20")]);
        assert_eq!(done(&mut u, now).unwrap().size, 20);
    }
}

#[test]
fn r9_r19_an_append_answer_without_offset_is_taken_from_7_on_and_asked_for_before() {
    // 9: the 2xx says appended; the offset is the request's end.
    let mut now = Instant::now();
    let mut u = create(config(20, 10, 9));
    created(&mut u, &mut now);
    let t = next(&mut u, &mut now);
    answer(&mut u, now, &t, 204, &[]);
    assert_eq!(u.persisted(), 10);
    let t = next(&mut u, &mut now);
    assert_eq!(t.request.method(), Method::PATCH);
    assert_eq!(t.body.source, 10..20);
    // 6: the offset is mandatory; without it the core asks.
    let mut u = create(config(20, 10, 6));
    created(&mut u, &mut now);
    let t = next(&mut u, &mut now);
    answer(&mut u, now, &t, 204, &[]);
    assert_eq!(u.persisted(), 0);
    let t = next(&mut u, &mut now);
    assert_eq!(t.request.method(), Method::HEAD);
}

#[test]
fn r9_a_completing_append_whose_offset_falls_short_is_not_success() {
    let mut now = Instant::now();
    let mut u = create(config(20, 100, 9));
    created(&mut u, &mut now);
    let t = next(&mut u, &mut now);
    answer(&mut u, now, &t, 200, &[("upload-offset", "15")]);
    let t = next(&mut u, &mut now);
    assert_eq!(t.request.method(), Method::DELETE);
    answer(&mut u, now, &t, 204, &[]);
    assert!(matches!(
        done(&mut u, now),
        Err(Error::Protocol(ProtocolViolation::PrematureCompletion {
            sent: 15,
            total: 20
        }))
    ));
}

#[test]
fn r9_a_partial_store_after_a_failure_resends_from_the_servers_offset() {
    let mut now = Instant::now();
    let mut u = create(config(30, 30, 8));
    created(&mut u, &mut now);
    let t = next(&mut u, &mut now);
    u.handle_failure(now, t.id, TransportFailure::Reset)
        .unwrap();
    let t = next(&mut u, &mut now);
    assert_eq!(t.request.method(), Method::HEAD);
    answer(
        &mut u,
        now,
        &t,
        204,
        &[("upload-offset", "17"), ("upload-complete", "?0")],
    );
    let t = next(&mut u, &mut now);
    assert_eq!(t.body.source, 17..30);
    assert_eq!(header(&t, "upload-offset"), Some("17"));
}

#[test]
fn r10_a_409_with_the_servers_offset_continues_from_it() {
    let mut now = Instant::now();
    let mut u = create(config(30, 10, 9));
    created(&mut u, &mut now);
    let t = next(&mut u, &mut now);
    answer(
        &mut u,
        now,
        &t,
        409,
        &[("upload-offset", "4"), ("upload-complete", "?0")],
    );
    let t = next(&mut u, &mut now);
    assert_eq!(t.request.method(), Method::PATCH);
    assert_eq!(t.body.source, 4..14);
    // Without an offset: ask with HEAD.
    answer(&mut u, now, &t, 409, &[]);
    let t = next(&mut u, &mut now);
    assert_eq!(t.request.method(), Method::HEAD);
}

#[test]
fn r11_max_append_size_bounds_every_request_and_max_size_rules_the_upload_out() {
    let mut now = Instant::now();
    let mut u = create(config(25, 100, 9));
    let t = next(&mut u, &mut now);
    answer(
        &mut u,
        now,
        &t,
        201,
        &[
            ("location", "/files/u1"),
            ("upload-limit", "max-append-size=10, unknown=?1"),
        ],
    );
    let t = next(&mut u, &mut now);
    assert_eq!(t.body.source, 0..10);
    answer(&mut u, now, &t, 204, &[("upload-offset", "10")]);
    let t = next(&mut u, &mut now);
    assert_eq!(t.body.source, 10..20);

    let mut u = create(config(25, 100, 9));
    let t = next(&mut u, &mut now);
    answer(
        &mut u,
        now,
        &t,
        201,
        &[("location", "/files/u1"), ("upload-limit", "max-size=20")],
    );
    let t = next(&mut u, &mut now);
    assert_eq!(t.request.method(), Method::DELETE);
    answer(&mut u, now, &t, 204, &[]);
    assert!(matches!(done(&mut u, now), Err(Error::Unsupported(_))));

    // A limit of the wrong type voids the whole field.
    let mut u = create(config(25, 100, 9));
    let t = next(&mut u, &mut now);
    answer(
        &mut u,
        now,
        &t,
        201,
        &[
            ("location", "/files/u1"),
            ("upload-limit", "max-size=20, max-append-size=\"x\""),
        ],
    );
    let t = next(&mut u, &mut now);
    assert_eq!(t.body.source, 0..25);
}

#[test]
fn r11_r19_the_lifetime_is_expires_before_7_and_max_age_after_and_a_404_past_it_is_expiry() {
    for (v, key) in [(6, "expires"), (9, "max-age")] {
        let mut now = Instant::now();
        let start = now;
        let mut u = create(config(20, 10, v));
        let t = next(&mut u, &mut now);
        let limit = format!("{key}=60");
        answer(
            &mut u,
            now,
            &t,
            201,
            &[("location", "/files/u1"), ("upload-limit", &limit)],
        );
        assert_eq!(u.deadline(), Some(start + Duration::from_secs(60)), "{v}");
        let t = next(&mut u, &mut now);
        now += Duration::from_secs(61);
        answer(&mut u, now, &t, 404, &[]);
        assert!(matches!(done(&mut u, now), Err(Error::Expired { .. })));
    }
    // Before the deadline, 404 is a lost session.
    let mut now = Instant::now();
    let mut u = create(config(20, 10, 9));
    created(&mut u, &mut now);
    let t = next(&mut u, &mut now);
    answer(&mut u, now, &t, 410, &[]);
    assert!(matches!(done(&mut u, now), Err(Error::SessionGone { .. })));
}

#[test]
fn r12_options_discovers_limits_and_413_makes_appends_smaller() {
    let mut now = Instant::now();
    let mut c = config(100, 100, 9);
    c.discover = true;
    let mut u = create(c);
    let t = next(&mut u, &mut now);
    assert_eq!(t.request.method(), Method::OPTIONS);
    assert_eq!(t.request.uri(), ENDPOINT);
    answer(
        &mut u,
        now,
        &t,
        204,
        &[("upload-limit", "min-size=0, max-append-size=40")],
    );
    created(&mut u, &mut now);
    let t = next(&mut u, &mut now);
    assert_eq!(t.body.source, 0..40);
    // 413 without limits: half.
    answer(&mut u, now, &t, 413, &[]);
    let t = next(&mut u, &mut now);
    assert_eq!(t.body.source, 0..20);
    // 413 with limits: within them.
    answer(
        &mut u,
        now,
        &t,
        413,
        &[("upload-limit", "max-append-size=8")],
    );
    let t = next(&mut u, &mut now);
    assert_eq!(t.body.source, 0..8);
    answer(&mut u, now, &t, 204, &[("upload-offset", "8")]);
    let t = next(&mut u, &mut now);
    assert_eq!(t.body.source, 8..16);
}

#[test]
fn r12_a_413_at_the_least_size_allowed_is_final() {
    let mut now = Instant::now();
    let mut u = create(config(100, 100, 9));
    let t = next(&mut u, &mut now);
    answer(
        &mut u,
        now,
        &t,
        201,
        &[
            ("location", "/files/u1"),
            ("upload-limit", "min-append-size=50"),
        ],
    );
    let t = next(&mut u, &mut now);
    assert_eq!(t.body.source, 0..100);
    answer(&mut u, now, &t, 413, &[]);
    let t = next(&mut u, &mut now);
    assert_eq!(t.body.source, 0..50);
    answer(&mut u, now, &t, 413, &[]);
    assert!(
        matches!(done(&mut u, now), Err(Error::Server { status, .. }) if status == StatusCode::PAYLOAD_TOO_LARGE)
    );
}

#[test]
fn r13_cancel_deletes_the_upload_and_404_means_already_gone() {
    let mut now = Instant::now();
    let mut u = create(config(100, 10, 9));
    created(&mut u, &mut now);
    let t = next(&mut u, &mut now);
    answer(&mut u, now, &t, 204, &[("upload-offset", "10")]);
    u.cancel();
    let t = next(&mut u, &mut now);
    assert_eq!(t.request.method(), Method::DELETE);
    assert_eq!(t.request.uri(), UPLOAD);
    assert_eq!(header(&t, "upload-draft-interop-version"), Some("9"));
    answer(&mut u, now, &t, 404, &[]);
    assert!(matches!(done(&mut u, now), Err(Error::Cancelled)));
    // Before the upload exists there is nothing to delete.
    let mut u = create(config(100, 10, 9));
    u.cancel();
    assert!(matches!(done(&mut u, now), Err(Error::Cancelled)));
}

#[test]
fn r14_one_request_at_a_time_and_stale_answers_change_nothing() {
    let mut now = Instant::now();
    let mut u = create(config(100, 10, 9));
    let t = next(&mut u, &mut now);
    assert!(matches!(u.poll_action(now), Action::Idle));
    answer(&mut u, now, &t, 201, &[("location", "/files/u1")]);
    assert!(matches!(
        u.handle_response(now, t.id, response(201, &[])),
        Err(UsageError::UnknownRequest(_))
    ));
    assert!(matches!(
        u.handle_informational(now, t.id, interim(&[])),
        Err(UsageError::UnknownRequest(_))
    ));
}

#[test]
fn r2_debug_output_never_shows_the_upload_url_or_credentials() {
    let mut now = Instant::now();
    let mut c = config(10, 10, 9);
    c.headers
        .insert("authorization", "Bearer sekrit".parse().unwrap());
    let mut u = create(c.clone());
    created(&mut u, &mut now);
    let t = next(&mut u, &mut now);
    let text = format!("{u:?} {c:?} {t:?}");
    assert!(!text.contains("sekrit"), "{text}");
    let state = format!("{u:?} {:?}", u.resume_state());
    assert!(!state.contains("/files/u1"), "{state}");
}
