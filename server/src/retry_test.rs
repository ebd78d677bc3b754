//! storage-testbench's fault interface, so suites written for Google's testbench run
//! against this server unchanged: the Retry Test API and the `x-goog-emulator-instructions`
//! header. Each instruction is carried out with the server's own faults (see
//! [`crate::fault`]).
//!
//! # The Retry Test API
//!
//! - `POST /retry_test` with `{"instructions": {"storage.objects.insert": ["return-503",
//!   …], …}, "transport": "HTTP"}` → `200 {"id", "instructions", "completed": false,
//!   "transport": "HTTP"}`. An unknown operation or instruction, or another transport, is
//!   `400`.
//! - A request carrying `x-retry-test-id: ID` consumes the next instruction queued for its
//!   operation (below), when the instruction applies to it; once every queue is empty the
//!   test is `completed`. An unknown `ID` is `404`.
//! - Beyond the testbench: a resumable session whose start carried `x-retry-test-id` keeps
//!   the id, and its later requests act as if they carried it too (for clients that send
//!   extra headers on the start only, such as `resumable gcs -H`). A request's own header
//!   wins.
//! - `GET /retry_test/{id}` → the resource; `GET /retry_tests` → `{"retry_test": […]}`;
//!   `DELETE /retry_test/{id}` → `200`.
//!
//! Operations, by request:
//!
//! | operation | requests |
//! |---|---|
//! | `storage.buckets.list` / `.insert` | `GET` / `POST /storage/v1/b` |
//! | `storage.buckets.get` / `.delete` | `GET` / `DELETE /storage/v1/b/B` |
//! | `storage.objects.list` | `GET /storage/v1/b/B/o` |
//! | `storage.objects.get` | `GET /storage/v1/b/B/o/O` (resource or `alt=media`), `GET /download/storage/v1/…`, XML `GET /B/O` |
//! | `storage.objects.delete` | `DELETE /storage/v1/b/B/o/O` |
//! | `storage.objects.insert` | every upload request: media and multipart uploads, a resumable start (JSON or XML), each `PUT` on a session (chunks and status queries), XML `PUT /B/O` |
//!
//! # The mapping
//!
//! | instruction | applies to | effect, in the server's faults |
//! |---|---|---|
//! | `return-CODE` (e.g. `return-503`, `-408`, `-429`, `-500`) | any operation | `status:CODE`: the request is answered `CODE` in Google's error shape, its body read and discarded, nothing stored |
//! | `return-reset-connection` | any operation | `drop-after:0`, and the socket is closed with a reset (`SO_LINGER` 0): no answer, no body byte taken |
//! | `return-CODE-after-YK` (e.g. `return-503-after-256K`) | `storage.objects.insert` | on a session `PUT` whose bytes reach Y KiB: `persist:(Y KiB − chunk start)` (the session keeps exactly Y KiB), then the answer is replaced by `CODE`; on one that starts at or past Y KiB stored: `status:CODE`; on a media or multipart upload whose body is at least Y KiB: `status:CODE`. Not consumed (left queued) by requests that do not reach Y KiB, nor by a resumable start |
//! | `stall-for-Ts-after-YK` | `storage.objects.insert`: a session `PUT` reaching Y KiB, or a media or multipart upload of at least Y KiB, as above | the server reads the body up to Y KiB of the upload (a chunk starting past it: from its first byte), stops reading for T seconds (as `stall:T` does, but mid-body: the client's sends block), then reads on and handles the request as usual; a status query past Y KiB gets `stall:T` |
//! | | `storage.objects.get` | the answer's body pauses T seconds after its first Y KiB |
//! | `return-broken-stream-final-chunk-after-YB` | `storage.objects.insert`: the session `PUT` that completes the upload | `truncate:Y`: the object is stored, then the answer's head claims more body than is sent, Y bytes of it are sent and the connection closes. Consumed only by a completing request |
//! | `return-broken-stream` | any operation | the answer's body stops after 4 bytes and the connection closes (its head declares the whole body) |
//! | `return-broken-stream-after-YK` | `storage.objects.get` | as above, after Y KiB |
//!
//! Bounds: `CODE` is 200 to 599; Y and T are decimal (T at most
//! [`crate::fault::MAX_STALL_SPEC`], and a stall is cut to
//! [`ServerConfig::max_stall`](crate::ServerConfig::max_stall)).
//!
//! # `x-goog-emulator-instructions`
//!
//! The older per-request header (and its deprecated name `x-goog-testbench-instructions`);
//! it is not consumed, it acts on every request that carries it:
//!
//! | value | effect |
//! |---|---|
//! | `return-503-after-256K`, `…/retry-1`, `…/retry-2` | as `return-503-after-256K` above, on uploads; `…/retry-N` with N ≥ 3 does nothing (the client counts its retries) |
//! | `return-broken-stream` | downloads: the body stops after 1 MiB and the connection closes |
//! | `return-corrupted-data` | downloads: the first byte of the body is changed |
//! | `stall-always` | downloads: the body waits 10 s before its first byte |
//! | `stall-at-256KiB` | downloads: the body pauses 10 s after 256 KiB |

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::ops::Range;
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use serde_json::{Value, json};

use crate::fault::{Fault, MAX_STALL_SPEC};
use crate::gcs::{GcsApi, error};
use crate::http::{Delivery, Response};
use crate::util;

/// The operations a retry test may name: those this server serves.
pub(crate) const OPERATIONS: &[&str] = &[
    "storage.buckets.list",
    "storage.buckets.insert",
    "storage.buckets.get",
    "storage.buckets.delete",
    "storage.objects.list",
    "storage.objects.insert",
    "storage.objects.get",
    "storage.objects.delete",
];

/// The operation that uploads (the only one with byte-offset instructions).
pub(crate) const INSERT: &str = "storage.objects.insert";
/// The operation that downloads.
pub(crate) const GET: &str = "storage.objects.get";

/// One fault instruction of the testbench's vocabulary.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Instruction {
    /// `return-CODE`.
    Return(u16),
    /// `return-reset-connection`.
    ResetConnection,
    /// `return-broken-stream`.
    BrokenStream,
    /// `return-broken-stream-after-YK`, in bytes.
    BrokenStreamAfter(u64),
    /// `return-CODE-after-YK`, the offset in bytes.
    ReturnAfter(u16, u64),
    /// `return-broken-stream-final-chunk-after-YB`.
    BrokenFinalChunkAfter(u64),
    /// `stall-for-Ts-after-YK`, the offset in bytes.
    StallAfter(Duration, u64),
}

/// Parses one instruction; `None` for anything outside the vocabulary above.
pub(crate) fn parse_instruction(text: &str) -> Option<Instruction> {
    let kib = |v: &str| crate::parse::decimal(v)?.checked_mul(1024);
    let code = |v: &str| {
        crate::parse::decimal(v)
            .filter(|c| (200..=599).contains(c))
            .map(|c| c as u16)
    };
    if text == "return-reset-connection" {
        return Some(Instruction::ResetConnection);
    }
    if text == "return-broken-stream" {
        return Some(Instruction::BrokenStream);
    }
    if let Some(rest) = text.strip_prefix("return-broken-stream-final-chunk-after-") {
        let n = crate::parse::decimal(rest.strip_suffix('B')?)?;
        return Some(Instruction::BrokenFinalChunkAfter(n));
    }
    if let Some(rest) = text.strip_prefix("return-broken-stream-after-") {
        return Some(Instruction::BrokenStreamAfter(
            kib(rest.strip_suffix('K')?)?,
        ));
    }
    if let Some(rest) = text.strip_prefix("stall-for-") {
        let (secs, after) = rest.split_once("s-after-")?;
        let secs = Duration::from_secs(crate::parse::decimal(secs)?);
        if secs > MAX_STALL_SPEC {
            return None;
        }
        return Some(Instruction::StallAfter(
            secs,
            kib(after.strip_suffix('K')?)?,
        ));
    }
    let rest = text.strip_prefix("return-")?;
    match rest.split_once("-after-") {
        Some((c, after)) => Some(Instruction::ReturnAfter(
            code(c)?,
            kib(after.strip_suffix('K')?)?,
        )),
        None => Some(Instruction::Return(code(rest)?)),
    }
}

/// A retry test resource.
struct RetryTest {
    instructions: BTreeMap<String, VecDeque<String>>,
    completed: bool,
}

/// Every retry test of a server.
#[derive(Default)]
pub(crate) struct RetryTests {
    tests: Mutex<HashMap<String, RetryTest>>,
}

impl RetryTests {
    fn lock(&self) -> MutexGuard<'_, HashMap<String, RetryTest>> {
        self.tests.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The next instruction of `id` for `operation`: `Err(())` when there is no such test.
    fn peek(&self, id: &str, operation: &str) -> Result<Option<String>, ()> {
        let tests = self.lock();
        let test = tests.get(id).ok_or(())?;
        Ok(test
            .instructions
            .get(operation)
            .and_then(|q| q.front())
            .cloned())
    }

    /// Removes the next instruction of `id` for `operation` if it is still `instruction`
    /// (a concurrent request may have taken it).
    pub(crate) fn consume(&self, id: &str, operation: &str, instruction: &str) {
        let mut tests = self.lock();
        let Some(test) = tests.get_mut(id) else {
            return;
        };
        if let Some(q) = test.instructions.get_mut(operation)
            && q.front().map(String::as_str) == Some(instruction)
        {
            q.pop_front();
        }
        if test.instructions.values().all(VecDeque::is_empty) {
            test.completed = true;
        }
    }
}

fn resource(id: &str, t: &RetryTest) -> Value {
    json!({
        "id": id,
        "instructions": t.instructions,
        "completed": t.completed,
        "transport": "HTTP",
    })
}

fn bad(message: &str) -> Response {
    error(GcsApi::Json, 400, message)
}

/// `POST /retry_test`.
pub(crate) fn create(tests: &RetryTests, body: &[u8]) -> Response {
    let Ok(Value::Object(payload)) = serde_json::from_slice::<Value>(body) else {
        return bad("the retry test is not a JSON object");
    };
    match payload.get("transport") {
        None => {}
        Some(Value::String(t)) if t.eq_ignore_ascii_case("HTTP") => {}
        Some(t) => {
            return bad(&format!(
                "transport {t}: this server serves HTTP only (no gRPC)"
            ));
        }
    }
    let Some(Value::Object(map)) = payload.get("instructions") else {
        return bad("instructions is not defined");
    };
    if map.is_empty() {
        return bad("instructions is not defined");
    }
    let mut instructions = BTreeMap::new();
    for (operation, list) in map {
        if !OPERATIONS.contains(&operation.as_str()) {
            return bad(&format!(
                "The requested method <{operation}> for fault injection is not served here (known: {})",
                OPERATIONS.join(", ")
            ));
        }
        let Value::Array(list) = list else {
            return bad(&format!("the instructions of {operation} are not a list"));
        };
        let mut queue = VecDeque::new();
        for item in list {
            let Some(text) = item.as_str() else {
                return bad(&format!("an instruction of {operation} is not a string"));
            };
            if parse_instruction(text).is_none() {
                return bad(&format!(
                    "The fault injection request <{text}> is not supported"
                ));
            }
            queue.push_back(text.to_owned());
        }
        instructions.insert(operation.clone(), queue);
    }
    let id = util::random_id();
    let test = RetryTest {
        completed: instructions.values().all(VecDeque::is_empty),
        instructions,
    };
    let r = resource(&id, &test);
    tests.lock().insert(id, test);
    Response::new(200).json(&r)
}

/// `GET /retry_test/{id}`.
pub(crate) fn get(tests: &RetryTests, id: &str) -> Response {
    match tests.lock().get(id) {
        Some(t) => Response::new(200).json(&resource(id, t)),
        None => not_found(id),
    }
}

/// `GET /retry_tests`.
pub(crate) fn list(tests: &RetryTests) -> Response {
    let tests = tests.lock();
    let mut ids: Vec<&String> = tests.keys().collect();
    ids.sort();
    let all: Vec<Value> = ids.iter().map(|id| resource(id, &tests[*id])).collect();
    Response::new(200).json(&json!({ "retry_test": all }))
}

/// `DELETE /retry_test/{id}`.
pub(crate) fn delete(tests: &RetryTests, id: &str) -> Response {
    match tests.lock().remove(id) {
        Some(_) => Response::new(200),
        None => not_found(id),
    }
}

fn not_found(id: &str) -> Response {
    error(GcsApi::Json, 404, &format!("Retry Test {id} not found"))
}

/// What a request is, as far as byte-offset instructions care.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum View {
    /// A `PUT` on a resumable session: the bytes stored before it, and the bytes it
    /// carries (`None`: a status query).
    Chunk {
        stored: u64,
        range: Option<Range<u64>>,
    },
    /// A media or multipart upload of this many bytes (when known).
    Simple(Option<u64>),
    /// Anything else.
    Other,
}

/// What the instructions do to one request.
#[derive(Debug, Default)]
pub(crate) struct Plan {
    /// Faults added to the request's (they win over scripts).
    pub(crate) faults: Vec<Fault>,
    /// Handle the request, then answer this status instead.
    pub(crate) answer_instead: Option<u16>,
    /// Cut or pause the answer's body.
    pub(crate) delivery: Delivery,
    /// Stop reading the request's body for a while after this many of its bytes.
    pub(crate) body_pause: Option<(u64, Duration)>,
    /// Close with a reset instead of an orderly close.
    pub(crate) reset: bool,
    /// Change the first byte of the answer's body.
    pub(crate) corrupt: bool,
    /// `truncate:N` if the request completes the upload; then consume the instruction
    /// (test id, operation, instruction text).
    pub(crate) on_completion: Option<(u64, String, &'static str, String)>,
    /// Answer this instead of handling (an unknown retry test id).
    pub(crate) refuse: Option<Response>,
}

/// The plan for a request of `operation` (if it has one) with these headers; `session_id`
/// is the retry test id its session was started with, if any.
pub(crate) fn plan(
    tests: &RetryTests,
    headers: &http::HeaderMap,
    operation: Option<&'static str>,
    view: &View,
    session_id: Option<&str>,
) -> Plan {
    let mut plan = Plan::default();
    let Some(operation) = operation else {
        return plan;
    };
    if let Some(text) = emulator_instructions(headers) {
        emulator(&mut plan, operation, view, &text);
    }
    let Some(id) = headers
        .get("x-retry-test-id")
        .and_then(|v| v.to_str().ok())
        .or(session_id)
    else {
        return plan;
    };
    let id = id.trim().to_owned();
    let next = match tests.peek(&id, operation) {
        Ok(next) => next,
        Err(()) => {
            plan.refuse = Some(not_found(&id));
            return plan;
        }
    };
    let Some(text) = next else {
        return plan;
    };
    let Some(instruction) = parse_instruction(&text) else {
        return plan;
    };
    if apply(&mut plan, instruction, operation, view) {
        tests.consume(&id, operation, &text);
    } else if let Instruction::BrokenFinalChunkAfter(n) = instruction
        && operation == INSERT
        && matches!(view, View::Chunk { .. })
    {
        plan.on_completion = Some((n, id, operation, text));
    }
    plan
}

/// The `x-goog-emulator-instructions` value (or its deprecated name).
fn emulator_instructions(headers: &http::HeaderMap) -> Option<String> {
    headers
        .get("x-goog-emulator-instructions")
        .or_else(|| headers.get("x-goog-testbench-instructions"))
        .and_then(|v| v.to_str().ok())
        .map(|v| v.trim().to_owned())
}

/// Applies an `x-goog-emulator-instructions` value.
fn emulator(plan: &mut Plan, operation: &str, view: &View, text: &str) {
    const TEN_SECONDS: Duration = Duration::from_secs(10);
    let (base, retry) = match text.split_once("/retry-") {
        Some((b, n)) => (b, crate::parse::decimal(n)),
        None => (text, None),
    };
    match base {
        "return-503-after-256K" if operation == INSERT && retry.is_none_or(|n| n < 3) => {
            apply(
                plan,
                Instruction::ReturnAfter(503, 256 * 1024),
                operation,
                view,
            );
        }
        "return-broken-stream" if operation == GET => plan.delivery.cut_after = Some(1 << 20),
        "return-corrupted-data" if operation == GET => plan.corrupt = true,
        "stall-always" if operation == GET => plan.delivery.stall_at = Some((0, TEN_SECONDS)),
        "stall-at-256KiB" if operation == GET => {
            plan.delivery.stall_at = Some((256 * 1024, TEN_SECONDS));
        }
        _ => {}
    }
}

/// Adds what `instruction` does to this request to `plan`; `false` when it does not apply
/// (and so stays queued).
fn apply(plan: &mut Plan, instruction: Instruction, operation: &str, view: &View) -> bool {
    match instruction {
        Instruction::Return(code) => {
            plan.faults.push(Fault::Status { code, times: 1 });
            true
        }
        Instruction::ResetConnection => {
            plan.faults.push(Fault::DropAfter(0));
            plan.reset = true;
            true
        }
        Instruction::BrokenStream => {
            plan.delivery.cut_after = Some(4);
            true
        }
        Instruction::BrokenStreamAfter(n) if operation == GET => {
            plan.delivery.cut_after = Some(n);
            true
        }
        Instruction::StallAfter(d, n) if operation == GET => {
            plan.delivery.stall_at = Some((n, d));
            true
        }
        Instruction::StallAfter(d, n) if operation == INSERT => {
            let at = match (view, reach(view, n)) {
                (_, Reach::No) => return false,
                // No body to pause in (a status query): the answer waits instead.
                (View::Chunk { range: None, .. }, _) => {
                    plan.faults.push(Fault::Stall(d));
                    return true;
                }
                (View::Simple(_), _) => n,
                (_, Reach::Already) => 0,
                (_, Reach::Within(k)) => k,
            };
            plan.body_pause = Some((at, d));
            true
        }
        Instruction::ReturnAfter(code, n) if operation == INSERT => match reach(view, n) {
            Reach::Already => {
                plan.faults.push(Fault::Status { code, times: 1 });
                true
            }
            Reach::Within(keep) => {
                plan.faults.push(Fault::Persist(keep));
                plan.answer_instead = Some(code);
                true
            }
            Reach::No => false,
        },
        _ => false,
    }
}

/// Whether a request's upload reaches offset `n`.
enum Reach {
    /// The session already holds `n` bytes (or a simple upload's body is that long).
    Already,
    /// This chunk crosses `n`: keep this many of its bytes.
    Within(u64),
    /// It stays below `n`.
    No,
}

fn reach(view: &View, n: u64) -> Reach {
    match view {
        View::Chunk { stored, .. } if *stored >= n => Reach::Already,
        View::Chunk { range: Some(r), .. } if r.end >= n => Reach::Within(n - r.start.min(n)),
        View::Simple(Some(len)) if *len >= n => Reach::Already,
        _ => Reach::No,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn instructions_parse_exactly() {
        use Instruction::*;
        let cases = [
            ("return-503", Return(503)),
            ("return-408", Return(408)),
            ("return-reset-connection", ResetConnection),
            ("return-broken-stream", BrokenStream),
            (
                "return-broken-stream-after-256K",
                BrokenStreamAfter(256 * 1024),
            ),
            ("return-503-after-256K", ReturnAfter(503, 256 * 1024)),
            ("return-500-after-1K", ReturnAfter(500, 1024)),
            (
                "return-broken-stream-final-chunk-after-10B",
                BrokenFinalChunkAfter(10),
            ),
            (
                "stall-for-10s-after-12K",
                StallAfter(Duration::from_secs(10), 12 * 1024),
            ),
        ];
        for (text, want) in cases {
            assert_eq!(parse_instruction(text), Some(want), "{text}");
        }
        for bad in [
            "return-",
            "return-99",
            "return-600",
            "return-503-after-256",
            "return-503-after-K",
            "return-503-after-256KiB",
            "stall-for-10-after-12K",
            "stall-for-601s-after-1K",
            "return-broken-stream-final-chunk-after-10",
            "return-broken-stream-after-1",
            "redirect-send-token-T",
            "return-reset",
            "RETURN-503",
            " return-503",
        ] {
            assert_eq!(parse_instruction(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn after_k_instructions_act_where_the_upload_reaches_the_offset() {
        let k256 = 256 * 1024;
        let chunk = |stored, r: Option<Range<u64>>| View::Chunk { stored, range: r };
        // A chunk below the offset: not applied (stays queued).
        let mut p = Plan::default();
        assert!(!apply(
            &mut p,
            Instruction::ReturnAfter(503, k256),
            INSERT,
            &chunk(0, Some(0..k256 - 1))
        ));
        // A chunk crossing it: keeps exactly the bytes up to it, then 503.
        let mut p = Plan::default();
        assert!(apply(
            &mut p,
            Instruction::ReturnAfter(503, k256),
            INSERT,
            &chunk(0, Some(100..4 * k256))
        ));
        assert_eq!(p.faults, vec![Fault::Persist(k256 - 100)]);
        assert_eq!(p.answer_instead, Some(503));
        // Already past it: a plain 503, nothing stored.
        let mut p = Plan::default();
        assert!(apply(
            &mut p,
            Instruction::ReturnAfter(503, k256),
            INSERT,
            &chunk(k256, None)
        ));
        assert_eq!(
            p.faults,
            vec![Fault::Status {
                code: 503,
                times: 1
            }]
        );
        // Downloads do not take upload offsets; starts do not either.
        let mut p = Plan::default();
        assert!(!apply(
            &mut p,
            Instruction::ReturnAfter(503, k256),
            GET,
            &View::Other
        ));
        assert!(!apply(
            &mut p,
            Instruction::ReturnAfter(503, k256),
            INSERT,
            &View::Other
        ));
        // Stalls pause the body where the upload reaches the offset.
        let second = Duration::from_secs(1);
        let stall = Instruction::StallAfter(second, k256);
        let mut p = Plan::default();
        assert!(apply(&mut p, stall, INSERT, &View::Simple(Some(k256))));
        assert_eq!(p.body_pause, Some((k256, second)));
        let mut p = Plan::default();
        assert!(apply(&mut p, stall, INSERT, &chunk(0, Some(100..4 * k256))));
        assert_eq!(p.body_pause, Some((k256 - 100, second)));
        let mut p = Plan::default();
        assert!(apply(
            &mut p,
            stall,
            INSERT,
            &chunk(k256, Some(k256..2 * k256))
        ));
        assert_eq!(p.body_pause, Some((0, second)));
        assert!(!apply(&mut p, stall, INSERT, &View::Simple(Some(k256 - 1))));
        // A status query past the offset has no body: its answer waits.
        let mut p = Plan::default();
        assert!(apply(&mut p, stall, INSERT, &chunk(k256, None)));
        assert_eq!(p.faults, vec![Fault::Stall(second)]);
    }

    #[test]
    fn a_retry_test_is_consumed_in_order_then_completed() {
        let tests = RetryTests::default();
        let r = create(
            &tests,
            br#"{"instructions":{"storage.objects.get":["return-503","return-broken-stream"]}}"#,
        );
        assert_eq!(r.status, 200);
        let v: Value = serde_json::from_slice(&r.body).unwrap();
        let id = v["id"].as_str().unwrap().to_owned();
        assert_eq!(v["completed"], false);
        assert_eq!(v["transport"], "HTTP");
        let mut headers = http::HeaderMap::new();
        headers.insert("x-retry-test-id", id.parse().unwrap());
        let p = plan(&tests, &headers, Some(GET), &View::Other, None);
        assert_eq!(
            p.faults,
            vec![Fault::Status {
                code: 503,
                times: 1
            }]
        );
        // Another operation is untouched.
        let p = plan(&tests, &headers, Some(INSERT), &View::Other, None);
        assert!(p.faults.is_empty());
        let p = plan(&tests, &headers, Some(GET), &View::Other, None);
        assert_eq!(p.delivery.cut_after, Some(4));
        let v: Value = serde_json::from_slice(&get(&tests, &id).body).unwrap();
        assert_eq!(v["completed"], true);
        assert_eq!(v["instructions"]["storage.objects.get"], json!([]));
        // Unknown ids are 404, on the API and on requests.
        headers.insert("x-retry-test-id", "nope".parse().unwrap());
        assert_eq!(
            plan(&tests, &headers, Some(GET), &View::Other, None)
                .refuse
                .map(|r| r.status),
            Some(404)
        );
        assert_eq!(delete(&tests, &id).status, 200);
        assert_eq!(get(&tests, &id).status, 404);
    }

    #[test]
    fn bad_retry_tests_are_refused() {
        let tests = RetryTests::default();
        for body in [
            &b"[]"[..],
            b"{}",
            br#"{"instructions":{}}"#,
            br#"{"instructions":{"storage.objects.compose":["return-503"]}}"#,
            br#"{"instructions":{"storage.objects.get":["return-x"]}}"#,
            br#"{"instructions":{"storage.objects.get":"return-503"}}"#,
            br#"{"instructions":{"storage.objects.get":[503]}}"#,
            br#"{"instructions":{"storage.objects.get":["return-503"]},"transport":"GRPC"}"#,
        ] {
            assert_eq!(
                create(&tests, body).status,
                400,
                "{}",
                String::from_utf8_lossy(body)
            );
        }
    }
}
