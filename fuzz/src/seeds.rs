//! Seed inputs for every target, from the exchanges of the scripted tests (core/tests/*_scripted.rs)
//! and the property tests' faults. `cargo test --manifest-path fuzz/Cargo.toml --lib -- --ignored`
//! rewrites `fuzz/seeds/<target>/`; `scripts/fuzz` copies them into the corpus before a run.
//!
//! Script inputs are written with [`Enc`], which mirrors how `arbitrary` 1.x decodes the derived
//! types (little-endian integers, a `u32` picking an enum variant as `(x · n) >> 32`, a `true`
//! byte before each element of a `Vec` and a `false` one after the last); [`write`] decodes every
//! script again and fails if it does not come back equal, so a change of encoding is caught.

use std::path::{Path, PathBuf};

use arbitrary::{Arbitrary, Unstructured};

use super::*;

/// Writes inputs in the byte form `arbitrary` decodes.
#[derive(Default)]
struct Enc(Vec<u8>);

impl Enc {
    fn u8(&mut self, v: u8) {
        self.0.push(v);
    }
    fn u16(&mut self, v: u16) {
        self.0.extend_from_slice(&v.to_le_bytes());
    }
    fn u32(&mut self, v: u32) {
        self.0.extend_from_slice(&v.to_le_bytes());
    }
    fn bool(&mut self, v: bool) {
        self.u8(u8::from(v));
    }
    /// Variant `index` of an enum with `count` variants.
    fn variant(&mut self, index: u32, count: u32) {
        let x = (u64::from(index) << 32).div_ceil(u64::from(count));
        self.u32(u32::try_from(x).expect("below 2^32"));
    }
    fn blob(&mut self, bytes: &[u8]) {
        self.u16(u16::try_from(bytes.len()).expect("short"));
        self.0.extend_from_slice(bytes);
    }
    fn list<T>(&mut self, items: &[T], mut each: impl FnMut(&mut Self, &T)) {
        for item in items {
            self.bool(true);
            each(self, item);
        }
        self.bool(false);
    }
    fn answer(&mut self, a: &Answer) {
        self.u16(a.status);
        self.list(&a.headers, |e, h| {
            e.variant(h.name as u32, 11);
            e.blob(&h.value.0);
        });
        self.blob(&a.body.0);
    }
    fn step(&mut self, step: &Step) {
        match step {
            Step::Answer { which, answer } => {
                self.variant(0, 7);
                self.u8(*which);
                self.answer(answer);
            }
            Step::Fail { which, failure } => {
                self.variant(1, 7);
                self.u8(*which);
                self.variant(*failure as u32, 5);
            }
            Step::Stale { answer } => {
                self.variant(2, 7);
                self.answer(answer);
            }
            Step::Hold => self.variant(3, 7),
            Step::Restart => self.variant(4, 7),
            Step::Cancel => self.variant(5, 7),
            Step::Sleep { secs } => {
                self.variant(6, 7);
                self.u16(*secs);
            }
        }
    }
    fn steps(&mut self, steps: &[Step]) {
        self.list(steps, |e, s| e.step(s));
    }
    fn gcs(&mut self, script: &GcsScript) {
        let s = &script.setup;
        self.variant(s.begin as u32, 4);
        self.u32(s.len);
        self.bool(s.known_total);
        self.bool(s.two_granule_chunks);
        self.bool(s.md5);
        self.bool(s.no_308);
        self.u8(s.attempts);
        self.u32(s.persisted);
        self.u32(s.sent);
        self.steps(&script.steps);
    }
    fn ton(&mut self, script: &TonScript) {
        let s = &script.setup;
        self.variant(s.begin as u32, 3);
        self.u32(s.len);
        self.u32(s.chunk);
        self.bool(s.adaptive);
        self.bool(s.expires);
        self.u8(s.attempts);
        for v in [s.persisted, s.sent, s.min, s.max] {
            self.u32(v);
        }
        self.steps(&script.steps);
    }
    fn media(&mut self, script: &MediaScript) {
        let s = &script.setup;
        self.bool(s.v2);
        self.u32(s.len);
        self.u32(s.segment);
        self.u8(s.in_flight);
        self.u8(s.polls);
        self.u8(s.attempts);
        self.bool(s.resume);
        self.u16(s.next_segment);
        self.bool(s.finalized);
        self.steps(&script.steps);
    }
    fn compliance(&mut self, script: &ComplianceScript) {
        let s = &script.setup;
        self.bool(s.resumable);
        self.u32(s.len);
        self.bool(s.known_total);
        self.bool(s.users);
        self.u8(s.attempts);
        self.u8(s.interval);
        self.u16(s.deadline);
        self.steps(&script.steps);
    }
}

// ---- building scripts ----

fn answer(status: u16, headers: &[(Name, &str)], body: &str) -> Step {
    Step::Answer {
        which: 0,
        answer: reply(status, headers, body),
    }
}

fn reply(status: u16, headers: &[(Name, &str)], body: &str) -> Answer {
    Answer {
        status: status - 100,
        headers: headers
            .iter()
            .map(|(name, value)| Header {
                name: *name,
                value: Blob(value.as_bytes().to_vec()),
            })
            .collect(),
        body: Blob(body.as_bytes().to_vec()),
    }
}

fn fail(failure: Failure) -> Step {
    Step::Fail { which: 0, failure }
}

const G: u32 = 262_144;
const DATE: &str = "Wed, 05 Nov 2014 23:40:16 GMT";
const OBJECT: &str = r#"{"kind":"storage#object","name":"o","bucket":"b","generation":"1","size":"600000","crc32c":"AAAAAA==","md5Hash":"1B2M2Y8AsgTpgAmY7PhCfg=="}"#;

fn gcs_scripts() -> Vec<(&'static str, GcsScript)> {
    use Name::*;
    let setup = GcsSetup {
        begin: GcsBegin::Xml,
        len: 600_000,
        known_total: true,
        two_granule_chunks: false,
        md5: false,
        no_308: false,
        attempts: 4,
        persisted: 0,
        sent: 0,
    };
    let loc = "https://storage.example/upload/storage/v1/b/b/o?upload_id=SECRET";
    let start = answer(201, &[(Location, loc)], "");
    let r1 = answer(308, &[(Range, "bytes=0-262143")], "");
    let r2 = answer(308, &[(Range, "bytes=0-524287")], "");
    let done = answer(200, &[(XGoogHash, "crc32c=AAAAAA==")], OBJECT);
    let busy = answer(
        503,
        &[(RetryAfter, "2")],
        r#"{"error":{"code":503,"message":"busy"}}"#,
    );
    vec![
        (
            "xml_happy",
            GcsScript {
                setup: setup.clone(),
                steps: vec![start.clone(), r1.clone(), r2.clone(), done.clone()],
            },
        ),
        (
            "json_unknown_size_no_308",
            GcsScript {
                setup: GcsSetup {
                    begin: GcsBegin::Json,
                    known_total: false,
                    no_308: true,
                    md5: true,
                    ..setup.clone()
                },
                steps: vec![
                    answer(200, &[(Location, "/upload/session?upload_id=SECRET")], ""),
                    answer(
                        200,
                        &[(StatusOverride, "308"), (Range, "bytes=0-262143")],
                        "",
                    ),
                    answer(
                        200,
                        &[(StatusOverride, "308"), (Range, "bytes=0-524287")],
                        "",
                    ),
                    done.clone(),
                ],
            },
        ),
        (
            "flaky",
            GcsScript {
                setup: setup.clone(),
                steps: vec![
                    start.clone(),
                    fail(Failure::Reset),
                    answer(308, &[], ""),
                    Step::Stale {
                        answer: reply(308, &[(Range, "bytes=0-599999")], ""),
                    },
                    busy.clone(),
                    answer(308, &[(Range, "bytes=0-100000")], ""),
                    fail(Failure::Timeout),
                    Step::Restart,
                    r1.clone(),
                    answer(
                        429,
                        &[(RetryAfter, "Wed, 05 Nov 2014 23:40:46 GMT"), (Date, DATE)],
                        "",
                    ),
                    r2.clone(),
                    Step::Hold,
                    fail(Failure::Truncated),
                    done.clone(),
                ],
            },
        ),
        (
            "lies",
            GcsScript {
                setup: setup.clone(),
                steps: vec![
                    start.clone(),
                    answer(308, &[(Range, "bytes=0-999999")], ""),
                    answer(308, &[(Range, "bytes=5-9")], ""),
                ],
            },
        ),
        (
            "resume_and_cancel",
            GcsScript {
                setup: GcsSetup {
                    begin: GcsBegin::Resume,
                    persisted: G,
                    sent: 2 * G,
                    ..setup.clone()
                },
                steps: vec![r1.clone(), Step::Cancel, answer(499, &[], "")],
            },
        ),
        (
            "bare_session_gone",
            GcsScript {
                setup: GcsSetup {
                    begin: GcsBegin::Session,
                    ..setup
                },
                steps: vec![
                    answer(308, &[(Range, "bytes=0-262143")], ""),
                    answer(410, &[], ""),
                ],
            },
        ),
    ]
}

fn ton_scripts() -> Vec<(&'static str, TonScript)> {
    use Name::*;
    let setup = TonSetup {
        begin: TonBegin::Resumable,
        len: 5000,
        chunk: 2048,
        adaptive: true,
        expires: false,
        attempts: 4,
        persisted: 0,
        sent: 0,
        min: 1024,
        max: 4096,
    };
    let start = answer(
        201,
        &[
            (
                Location,
                "/1.1/ton/bucket/b/f.mp4?resumable=true&resumeId=SECRET",
            ),
            (TonMinChunk, "1024"),
            (TonMaxChunk, "4096"),
            (Expires, "Wed, 05 Nov 2014 23:50:16 UTC"),
            (Date, DATE),
        ],
        "",
    );
    let done = answer(201, &[(Location, "/1.1/ton/bucket/b/f.mp4")], "");
    vec![
        (
            "happy",
            TonScript {
                setup: setup.clone(),
                steps: vec![
                    start.clone(),
                    answer(308, &[(Range, "0-2048")], ""),
                    answer(308, &[(Range, "bytes=0-4095")], ""),
                    done.clone(),
                ],
            },
        ),
        (
            "flaky",
            TonScript {
                setup: TonSetup {
                    expires: true,
                    ..setup.clone()
                },
                steps: vec![
                    answer(503, &[(RetryAfter, "3")], ""),
                    start.clone(),
                    fail(Failure::Timeout),
                    Step::Sleep { secs: 30 },
                    answer(308, &[(Range, "0-1023")], ""),
                    Step::Stale {
                        answer: reply(308, &[(Range, "0-4999")], ""),
                    },
                    Step::Restart,
                    answer(429, &[], ""),
                    answer(308, &[], ""),
                    answer(404, &[(Date, "Wed, 05 Nov 2014 23:55:00 GMT")], ""),
                ],
            },
        ),
        (
            "single",
            TonScript {
                setup: TonSetup {
                    begin: TonBegin::Single,
                    ..setup.clone()
                },
                steps: vec![fail(Failure::Connect), done.clone()],
            },
        ),
        (
            "resume_lies",
            TonScript {
                setup: TonSetup {
                    begin: TonBegin::Resume,
                    persisted: 1024,
                    sent: 3072,
                    ..setup
                },
                steps: vec![
                    answer(308, &[(Range, "0-9999")], ""),
                    answer(308, &[(Range, "0-1500")], ""),
                    answer(200, &[], ""),
                ],
            },
        ),
    ]
}

fn media_scripts() -> Vec<(&'static str, MediaScript)> {
    use Name::*;
    let setup = MediaSetup {
        v2: false,
        len: 10,
        segment: 4,
        in_flight: 0,
        polls: 5,
        attempts: 4,
        resume: false,
        next_segment: 0,
        finalized: false,
    };
    let init = answer(
        200,
        &[(Date, DATE)],
        r#"{"media_id":1880028106020515840,"media_id_string":"1880028106020515840","media_key":"7_1880028106020515840","expires_after_secs":86400}"#,
    );
    let append = answer(204, &[], "");
    let pending = answer(
        200,
        &[],
        r#"{"media_id_string":"1880028106020515840","size":10,"processing_info":{"state":"pending","check_after_secs":5}}"#,
    );
    let progress = answer(
        200,
        &[],
        r#"{"media_id_string":"1880028106020515840","processing_info":{"state":"in_progress","check_after_secs":1,"progress_percent":40}}"#,
    );
    let succeeded = answer(
        200,
        &[],
        r#"{"media_id_string":"1880028106020515840","processing_info":{"state":"succeeded","progress_percent":100}}"#,
    );
    let v2 = |body: &str| answer(200, &[], &format!(r#"{{"data":{body}}}"#));
    vec![
        (
            "v1_happy",
            MediaScript {
                setup: setup.clone(),
                steps: vec![
                    init.clone(),
                    append.clone(),
                    append.clone(),
                    append.clone(),
                    pending,
                    progress,
                    succeeded,
                ],
            },
        ),
        (
            "v2_in_flight_reordered",
            MediaScript {
                setup: MediaSetup {
                    v2: true,
                    in_flight: 2,
                    ..setup.clone()
                },
                steps: vec![
                    v2(
                        r#"{"id":"1880028106020515840","media_key":"7_1","expires_after_secs":86400}"#,
                    ),
                    Step::Hold,
                    Step::Hold,
                    Step::Answer {
                        which: 2,
                        answer: reply(200, &[], r#"{"data":{"expires_at":1700000000}}"#),
                    },
                    fail(Failure::Reset),
                    answer(429, &[(RateLimitReset, "1415231000"), (Date, DATE)], ""),
                    append.clone(),
                    Step::Stale {
                        answer: reply(204, &[], ""),
                    },
                    append.clone(),
                    v2(
                        r#"{"id":"1880028106020515840","processing_info":{"state":"failed","error":{"code":1,"name":"InvalidMedia","message":"Unsupported"}}}"#,
                    ),
                ],
            },
        ),
        (
            "v1_errors",
            MediaScript {
                setup: setup.clone(),
                steps: vec![
                    init,
                    Step::Restart,
                    append,
                    answer(
                        400,
                        &[],
                        r#"{"errors":[{"code":324,"message":"Bad media"}]}"#,
                    ),
                ],
            },
        ),
        (
            "v2_resume_status",
            MediaScript {
                setup: MediaSetup {
                    v2: true,
                    resume: true,
                    next_segment: 3,
                    finalized: true,
                    ..setup
                },
                steps: vec![
                    answer(
                        503,
                        &[],
                        r#"{"title":"Service Unavailable","detail":"later","type":"about:blank","status":503}"#,
                    ),
                    v2(r#"{"id":"710511363345354753","processing_info":{"state":"succeeded"}}"#),
                ],
            },
        ),
    ]
}

/// CRC32C (Castagnoli) of `len` zero bytes, bit by bit: what the driving loop's reads hand in.
fn crc32c_of_zeros(len: usize) -> u32 {
    let mut crc = !0u32;
    for _ in 0..len * 8 {
        crc = if crc & 1 == 1 {
            (crc >> 1) ^ 0x82F6_3B78
        } else {
            crc >> 1
        };
    }
    !crc
}

fn compliance_scripts() -> Vec<(&'static str, ComplianceScript)> {
    use Name::*;
    let setup = ComplianceSetup {
        resumable: true,
        len: 600_000,
        known_total: true,
        users: false,
        attempts: 4,
        interval: 4,
        deadline: 3600,
    };
    // C1, C3: a job as the API describes it, its upload URL expiring at 23:55:00.
    let job = |status: &str, resumable: bool| {
        format!(
            r#"{{"data":{{"id":"1425543269983784962","type":"tweets","status":"{status}","resumable":{resumable},"upload_url":"https://storage.example/b/ids.txt?X-Goog-Signature=SECRET","upload_expires_at":"2014-11-05T23:55:00.000Z","download_url":"https://storage.example/b/results.json?X-Goog-Signature=SECRET","download_expires_at":"2014-11-12T23:40:00.000Z","created_at":"2014-11-05T23:40:00.000Z"}}}}"#
        )
    };
    let api = |status: u16, body: &str| {
        answer(
            status,
            &[(Date, DATE), (ContentType, "application/json")],
            body,
        )
    };
    let created = api(200, &job("created", true));
    let in_progress = api(200, &job("in_progress", true));
    let complete = api(200, &job("complete", true));
    let start = answer(
        201,
        &[(
            Location,
            "https://storage.example/upload/session?upload_id=SECRET",
        )],
        "",
    );
    let r1 = answer(308, &[(Range, "bytes=0-262143")], "");
    let r2 = answer(308, &[(Range, "bytes=0-524287")], "");
    let hash = |len: usize| {
        format!(
            "crc32c={}",
            resumable_core::checksum::crc32c_base64(crc32c_of_zeros(len))
        )
    };
    let stored = answer(200, &[(XGoogHash, &hash(600_000))], "");
    let rate_limited = answer(
        429,
        &[(RateLimitReset, "1415231000"), (Date, DATE)],
        r#"{"title":"Too Many Requests","detail":"Too Many Requests","type":"about:blank","status":429}"#,
    );
    vec![
        (
            "resumable_happy",
            ComplianceScript {
                setup: setup.clone(),
                steps: vec![
                    created.clone(),
                    start.clone(),
                    r1.clone(),
                    r2.clone(),
                    stored.clone(),
                    in_progress.clone(),
                    complete.clone(),
                ],
            },
        ),
        (
            "one_put_flaky",
            ComplianceScript {
                setup: ComplianceSetup {
                    resumable: false,
                    len: 40,
                    ..setup.clone()
                },
                steps: vec![
                    fail(Failure::Reset),
                    api(200, &job("created", false)),
                    answer(503, &[(RetryAfter, "2")], ""),
                    fail(Failure::Truncated),
                    answer(200, &[], ""),
                    rate_limited,
                    Step::Stale {
                        answer: reply(200, &[], &job("complete", false)),
                    },
                    api(
                        200,
                        r#"{"data":{"id":"1425543269983784962","status":"created"}}"#,
                    ),
                    api(200, &job("complete", false)),
                ],
            },
        ),
        (
            "restarts",
            ComplianceScript {
                setup: setup.clone(),
                steps: vec![
                    created.clone(),
                    start.clone(),
                    r1.clone(),
                    Step::Restart,
                    r1.clone(),
                    r2,
                    fail(Failure::Timeout),
                    Step::Restart,
                    stored,
                    Step::Restart,
                    complete.clone(),
                ],
            },
        ),
        (
            "stream_resumed_to_poll",
            ComplianceScript {
                setup: ComplianceSetup {
                    len: 1000,
                    known_total: false,
                    ..setup.clone()
                },
                steps: vec![
                    created.clone(),
                    start.clone(),
                    answer(200, &[(XGoogHash, &hash(1000))], ""),
                    Step::Restart,
                    in_progress,
                    Step::Sleep { secs: 30 },
                    complete,
                ],
            },
        ),
        (
            "upload_url_expired",
            ComplianceScript {
                setup: setup.clone(),
                steps: vec![
                    created.clone(),
                    start,
                    answer(403, &[(Date, "Wed, 05 Nov 2014 23:56:00 GMT")], ""),
                ],
            },
        ),
        (
            "malformed_and_cancel",
            ComplianceScript {
                setup: ComplianceSetup {
                    users: true,
                    ..setup.clone()
                },
                steps: vec![
                    api(
                        200,
                        r#"{"data":{"id":"1","type":"users","status":"created"}}"#,
                    ),
                    Step::Cancel,
                ],
            },
        ),
        (
            "failed_while_polling",
            ComplianceScript {
                setup: ComplianceSetup {
                    resumable: false,
                    len: 20,
                    ..setup
                },
                steps: vec![
                    api(200, &job("created", false)),
                    answer(200, &[], ""),
                    api(200, &job("in_progress", false)),
                    Step::Cancel,
                    api(200, &job("failed", false)),
                ],
            },
        ),
    ]
}

fn raw_seeds() -> Vec<(&'static str, Vec<Vec<u8>>)> {
    let lines = |items: &[&str]| items.iter().map(|s| s.as_bytes().to_vec()).collect();
    // s3_plan: a `bool` (total known), the total and the preferred size as little-endian
    // `u64`s, then the probes.
    let plan = |known: bool, total: u64, preferred: u64, probes: &[u64]| {
        let mut v = vec![u8::from(known)];
        for x in [total, preferred].iter().chain(probes) {
            v.extend_from_slice(&x.to_le_bytes());
        }
        v
    };
    const MIB: u64 = 1 << 20;
    const MAX_OBJECT: u64 = 10_000 * 5 * 1024 * MIB;
    let media = |which: u8, form: u8, body: &str| {
        let mut v = vec![which, form];
        v.extend_from_slice(body.as_bytes());
        v
    };
    vec![
        (
            "parse_range",
            lines(&[
                "bytes=0-262143",
                "0-1023",
                "bytes=0-0",
                "bytes=5-9",
                " bytes=0-42 ",
                "bytes=abc",
                "bytes=0-18446744073709551615",
                "bytes=0-1,3-4",
            ]),
        ),
        (
            "parse_content_range",
            lines(&[
                "bytes 0-262143/1000000",
                "bytes 262144-524287/*",
                "bytes */7",
                "bytes */*",
                "bytes 0-10/5",
            ]),
        ),
        (
            "retry_after",
            lines(&[
                "120",
                "Wed, 21 Oct 2015 07:28:30 GMT\nWed, 21 Oct 2015 07:28:00 GMT",
                "Sunday, 06-Nov-94 08:49:37 GMT\nSun Nov  6 08:49:37 1994",
                "soon",
            ]),
        ),
        (
            "rate_limit_reset",
            lines(&[
                "1415231000\nWed, 05 Nov 2014 23:40:16 GMT",
                "0\nWed, 05 Nov 2014 23:40:16 GMT",
            ]),
        ),
        (
            "location",
            lines(&[
                "https://storage.googleapis.com/upload/storage/v1/b/bucket/o?uploadType=resumable&upload_id=ABC",
                "/1.1/ton/bucket/b/f.mp4?resumable=true&resumeId=1",
                "//h/x",
                "ftp://h/x",
                "https://a.example/x\nhttps://b.example/y",
            ]),
        ),
        (
            "x_goog_hash",
            lines(&[
                "crc32c=AAAAAA==,md5=1B2M2Y8AsgTpgAmY7PhCfg==",
                "crc32c=AAAAAA==\nmd5=1B2M2Y8AsgTpgAmY7PhCfg==",
                "crc32c=not base64",
            ]),
        ),
        (
            "sfv_item",
            lines(&[
                "42",
                "999999999999999\n1000000000000000",
                "?1",
                "?0;x=1",
                "true",
                "5; foo=bar; q=1.5",
                "\"hello \\\"world\\\"\"",
                ":cHJldGVuZCB0aGlzIGlzIGJpbmFyeSBjb250ZW50Lg==:",
                "@1659578233",
                "%\"display %c3%bcsers\"",
                "-1\n42",
            ]),
        ),
        (
            "sfv_dictionary",
            lines(&[
                "max-size=1000000, min-size=0, max-append-size=100000, min-append-size=10, max-age=3600",
                "max-size=5\nexpires=60",
                "max-size=\"5\", future=?1",
                "a=(1 2), b=3, c=4;aa=bb, d=(5 6);valid",
                "en=\"Applepie\", da=:w4ZibGV0w6ZydGU=:",
                "a=?0, b, c; foo=bar",
                "a=1,\tb=2 ,c=3,",
            ]),
        ),
        (
            "upload_metadata",
            lines(&[
                "filename d29ybGRfZG9taW5hdGlvbl9wbGFuLnBkZg==,is_confidential",
                "a YQ== , b ,c Yw==",
                "filename=report.pdf\nfiletype=application/pdf\nempty=",
                "a YQ,a YQ==",
                "key with space=x\nk=v",
            ]),
        ),
        (
            "server_message",
            lines(&[
                r#"{"error":{"code":400,"message":"Bad chunk"}}"#,
                r#"{"errors":[{"code":324,"message":"Bad media"}]}"#,
                r#"{"title":"Invalid","detail":"too big","status":400}"#,
                r#"{"request":"/1.1/x","error":"Segment missing"}"#,
                "<Error><Code>X</Code><Message>Nope</Message></Error>",
                "plain words\nsecond line",
            ]),
        ),
        (
            "gcs_completion",
            vec![
                format!("crc32c=AAAAAA==\n{OBJECT}").into_bytes(),
                br#"crc32c=y3XSeA==,md5=pzbrRtp4uXXBpxtttX+KCg==
{"size":10,"crc32c":"y3XSeA=="}"#
                    .to_vec(),
                b"\n{\"size\":\"10\"".to_vec(),
            ],
        ),
        (
            "media_answer",
            vec![
                media(
                    0,
                    0,
                    r#"{"media_id":1,"media_id_string":"1","expires_after_secs":60}"#,
                ),
                media(
                    0,
                    1,
                    r#"{"data":{"id":"1","media_key":"3_1","expires_after_secs":60}}"#,
                ),
                media(
                    1,
                    0,
                    r#"{"media_id_string":"1","size":10,"processing_info":{"state":"pending","check_after_secs":5}}"#,
                ),
                media(
                    2,
                    1,
                    r#"{"data":{"id":"1","processing_info":{"state":"in_progress","error":{"code":1,"name":"InvalidMedia","message":"x"}}}}"#,
                ),
                media(3, 0, r#"{"errors":[{"code":324,"message":"Bad media"}]}"#),
                media(
                    3,
                    1,
                    r#"{"type":"about:blank","title":"Invalid","detail":"too big","status":400}"#,
                ),
            ],
        ),
        (
            "s3_xml",
            lines(&[
                r#"<?xml version="1.0" encoding="UTF-8"?>
<InitiateMultipartUploadResult xmlns="http://s3.amazonaws.com/doc/2006-03-01/"><Bucket>b</Bucket><Key>a &amp; b</Key><UploadId>VXBsb2FkIElE</UploadId></InitiateMultipartUploadResult>"#,
                r#"<ListPartsResult xmlns="http://s3.amazonaws.com/doc/2006-03-01/"><Bucket>b</Bucket><Key>k</Key><UploadId>u</UploadId><PartNumberMarker>0</PartNumberMarker><NextPartNumberMarker>2</NextPartNumberMarker><MaxParts>2</MaxParts><IsTruncated>true</IsTruncated><Part><PartNumber>1</PartNumber><ETag>"7778aef83f66abc1fa1e8477f296d394"</ETag><Size>5242880</Size><ChecksumCRC32C>ipE2qg==</ChecksumCRC32C></Part><Part><PartNumber>2</PartNumber><ETag>&quot;aaaa&quot;</ETag><Size>10</Size></Part></ListPartsResult>"#,
                "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<ListPartsResult>\n  <Owner>\n    <ID>75aa</ID>\n  </Owner>\n  <PartNumberMarker></PartNumberMarker>\n  <IsTruncated>false</IsTruncated>\n  <Part>\n    <PartNumber>3</PartNumber>\n    <Size>17</Size>\n  </Part>\n</ListPartsResult>",
                r#"<CompleteMultipartUploadResult xmlns="http://s3.amazonaws.com/doc/2006-03-01/"><Location>https://b.s3.amazonaws.com/k</Location><Bucket>b</Bucket><Key>k</Key><ETag>"3858f62230ac3c915f300c664312c11f-9"</ETag><ChecksumCRC32C>ipE2qg==-9</ChecksumCRC32C><ChecksumType>COMPOSITE</ChecksumType></CompleteMultipartUploadResult>"#,
                "   \n\n   <?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Error><Code>InternalError</Code><Message>We encountered an internal error. Please try again.</Message><RequestId>1</RequestId></Error>",
                r#"<Error><Code>SignatureDoesNotMatch</Code><Message>no</Message><StringToSign>AWS4-HMAC-SHA256</StringToSign></Error>"#,
                "<CompleteMultipartUploadResult><ETag>\"x",
                r#"<s3:ListPartsResult xmlns:s3="http://doc.s3.amazonaws.com/2006-03-01"><s3:Part><s3:PartNumber>10000</s3:PartNumber><s3:ETag><![CDATA["e"]]></s3:ETag></s3:Part></s3:ListPartsResult>"#,
            ]),
        ),
        (
            "s3_plan",
            vec![
                plan(true, 12 * MIB + 1, 0, &[0, 1, 2, 5 * MIB, 12 * MIB]),
                plan(true, MAX_OBJECT, 0, &[9_999, MAX_OBJECT - 1, MAX_OBJECT]),
                plan(true, MAX_OBJECT + 1, 0, &[]),
                plan(true, 0, 0, &[0, 1]),
                plan(true, 100 << 30, 7 * MIB + 3, &[u64::MAX, 1 << 40]),
                plan(
                    false,
                    0,
                    0,
                    &[9_999, 10_000 * 5 * MIB - 1, 10_000 * 5 * MIB],
                ),
                plan(false, 0, 5 << 30, &[u64::MAX]),
                plan(false, 0, (5 << 30) + 1, &[]),
                plan(true, u64::MAX, u64::MAX, &[u64::MAX]),
            ],
        ),
        (
            "ton_limits",
            lines(&[
                "1024\n4096\n/1.1/ton/bucket/b/f.mp4?resumable=true&resumeId=1\nWed, 05 Nov 2014 23:50:16 UTC\nWed, 05 Nov 2014 23:40:16 GMT\nabc",
                "1\n67108864\nhttps://ton.example/x\n\n\n\u{1}",
                "0\n5\n/x\n",
            ]),
        ),
    ]
}

fn dir(target: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("seeds")
        .join(target);
    std::fs::create_dir_all(&dir).expect("create seeds dir");
    dir
}

fn put(target: &str, name: &str, bytes: &[u8]) {
    std::fs::write(dir(target).join(name), bytes).expect("write seed");
}

/// Writes `fuzz/seeds/<target>/` for every target, checking that each script decodes back.
#[test]
#[ignore = "writes fuzz/seeds; run by hand after changing the input types"]
fn write() {
    for (name, script) in gcs_scripts() {
        let mut e = Enc::default();
        e.gcs(&script);
        let back = GcsScript::arbitrary_take_rest(Unstructured::new(&e.0)).expect("decodes");
        assert_eq!(
            back, script,
            "{name}: the encoding no longer matches arbitrary's"
        );
        run_gcs(&script);
        put("gcs_script", name, &e.0);
    }
    for (name, script) in ton_scripts() {
        let mut e = Enc::default();
        e.ton(&script);
        let back = TonScript::arbitrary_take_rest(Unstructured::new(&e.0)).expect("decodes");
        assert_eq!(
            back, script,
            "{name}: the encoding no longer matches arbitrary's"
        );
        run_ton(&script);
        put("ton_script", name, &e.0);
    }
    for (name, script) in media_scripts() {
        let mut e = Enc::default();
        e.media(&script);
        let back = MediaScript::arbitrary_take_rest(Unstructured::new(&e.0)).expect("decodes");
        assert_eq!(
            back, script,
            "{name}: the encoding no longer matches arbitrary's"
        );
        run_media(&script);
        put("media_script", name, &e.0);
    }
    for (name, script) in compliance_scripts() {
        let mut e = Enc::default();
        e.compliance(&script);
        let back = ComplianceScript::arbitrary_take_rest(Unstructured::new(&e.0)).expect("decodes");
        assert_eq!(
            back, script,
            "{name}: the encoding no longer matches arbitrary's"
        );
        run_compliance(&script);
        put("compliance_script", name, &e.0);
    }
    for (target, inputs) in raw_seeds() {
        for (n, input) in inputs.iter().enumerate() {
            // The S3 harnesses assert their invariants: every seed must pass them.
            match target {
                "s3_xml" => s3_xml(input),
                "s3_plan" => s3_plan(input),
                _ => {}
            }
            put(target, &format!("seed-{n}"), input);
        }
    }
}
