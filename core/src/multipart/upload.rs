//! The S3 multipart upload itself (S1–S12 in `docs/protocols/s3.md`): a state machine on the
//! request engine, several parts in flight, resumable from a ledger of acknowledged parts.
//!
//! ```text
//!  CreateMultipartUpload ──200: UploadId──▶ parts (read each part once to CRC32C it, then
//!    UploadPart × N, up to `max_in_flight` at once, answered in any order; each answer's ETag
//!    and echoed x-amz-checksum-crc32c recorded in the ledger)
//!  every part acknowledged ──▶ CompleteMultipartUpload (parts in order, the object's
//!    FULL_OBJECT CRC32C) ──200 + result whose CRC32C is ours──▶ Done(Ok)
//!                        ──200 + result without a CRC32C──▶ HEAD ──CRC32C ours──▶ Done(Ok)
//!                        ──404 NoSuchUpload (a lost answer, retried)──▶ HEAD (S7)
//!                        ──200 whose body is <Error>──▶ as that error (S7)
//!  resume: ListParts (every page) ──▶ reconcile the ledger with what the server holds
//!    ──▶ parts not held (or held with another size or CRC32C) ──▶ as above
//!  500/503/SlowDown/RequestTimeout/transport failure ──▶ Wait(backoff) ──▶ the same request
//!    (SlowDown also halves the parts in flight, S10)
//!  cancel() ──▶ (requests in flight end) ──▶ AbortMultipartUpload ──▶ Done(Cancelled)
//! ```
//!
//! The core emits unsigned requests: sign each one right before sending it (AWS SigV4 with
//! `UNSIGNED-PAYLOAD`, S12; the part's integrity is its `x-amz-checksum-crc32c`).
//!
//! # Proof
//!
//! The upload succeeds only when the server shows the object's CRC32C and it is the one the
//! core computed from the bytes it read: the `FULL_OBJECT` CRC32C (or the `COMPOSITE` value of
//! the part CRCs) in Complete's answer, else in a HEAD of the object. A server that shows
//! neither gets [`IntegrityError::Unproven`].
//!
//! # Resuming
//!
//! [`S3ResumeState`] names the object (endpoint, bucket, key), the upload ID and the ledger of
//! acknowledged parts (number, size, ETag, CRC32C). A resumed upload first lists every part
//! the server holds (ListParts, all pages, S5) and keeps a part only when the server holds it
//! with the planned size and, where the server lists one, the same CRC32C; a part the server
//! holds that the ledger does not know (the ledger was saved before its answer) is read and
//! kept if its CRC32C matches. Every other part is sent again.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::header::{CONTENT_LENGTH, CONTENT_TYPE, ETAG};
use http::{HeaderMap, HeaderName, HeaderValue, Method, Response, StatusCode, Uri};

use super::checksum::{PartCrc32c, full_object_crc32c, parse_crc32c, part_crc32c};
use super::plan::{MAX_PARTS, MIB, MIN_PART_SIZE, PartPlan, PlanError};
use super::xml::{
    self, CompletedPart, ErrorAction, ListedPart, S3Answer, XmlError,
    complete_multipart_upload_body,
};
use crate::action::{
    Action, Body, Progress, Read, RequestId, Stats, Transmit, TransportFailure, Upload,
};
use crate::engine::Engine;
use crate::error::{Error, IntegrityError, ProtocolViolation, RetryCause, UsageError};
use crate::retry::{Attempt, RetryPolicy, Retrying};
use crate::secret::{RedactedHeaders, check_absolute_http};

/// The part size used when the caller names none: 8 MiB.
pub const DEFAULT_PART_SIZE: u64 = 8 * MIB;

/// Parts in flight at once by default.
pub const DEFAULT_MAX_IN_FLIGHT: u32 = 4;

/// The `max-parts` asked for on each ListParts page (S4: at most 1,000).
pub const LIST_PAGE_SIZE: u32 = 1000;

/// The longest object key S3 accepts, in bytes.
pub const MAX_KEY_LEN: usize = 1024;

/// The longest upload ID accepted from a server, in bytes.
pub const MAX_UPLOAD_ID_LEN: usize = 1024;

const CHECKSUM_ALGORITHM: HeaderName = HeaderName::from_static("x-amz-checksum-algorithm");
const CHECKSUM_TYPE: HeaderName = HeaderName::from_static("x-amz-checksum-type");
const CHECKSUM_CRC32C: HeaderName = HeaderName::from_static("x-amz-checksum-crc32c");
const CHECKSUM_MODE: HeaderName = HeaderName::from_static("x-amz-checksum-mode");
const MP_OBJECT_SIZE: HeaderName = HeaderName::from_static("x-amz-mp-object-size");

/// Settings of one multipart upload. Build with [`S3Config::new`], change fields, then pass to
/// [`S3Upload::new`] (or [`S3Upload::resume`]).
#[derive(Clone)]
#[non_exhaustive]
pub struct S3Config {
    /// The service endpoint, path-style (S1): `https://s3.<region>.amazonaws.com`, or a
    /// compatible server's base such as `http://127.0.0.1:9000` (a path is kept: requests go
    /// to `<endpoint>/<bucket>/<key>`). No query.
    pub endpoint: Uri,
    /// The bucket.
    pub bucket: String,
    /// The object key (1 to 1,024 bytes, no control characters); URI-encoded segment by
    /// segment in requests.
    pub key: String,
    /// The object's size in bytes.
    pub total: u64,
    /// Preferred part size (default [`DEFAULT_PART_SIZE`]); raised to fit 10,000 parts and to
    /// [`S3Config::min_part_size`], rounded up to a whole MiB (S4).
    pub part_size: u64,
    /// The server's smallest part but the last: 5 MiB on S3 (the default); lower only for a
    /// compatible server that allows it (see [`PartPlan::with_minimum`]).
    pub min_part_size: u64,
    /// Parts in flight at once (default [`DEFAULT_MAX_IN_FLIGHT`]).
    pub max_in_flight: u32,
    /// The object's `Content-Type`, sent on CreateMultipartUpload.
    pub content_type: Option<HeaderValue>,
    /// Headers for every request (values are marked sensitive; `Content-Type`,
    /// `Content-Length` and `x-amz-checksum-*` are the core's).
    pub headers: HeaderMap,
    /// Headers for CreateMultipartUpload only (`x-amz-meta-*`, `Cache-Control`,
    /// `x-amz-storage-class`…): the object's settings, captured at creation (S2).
    pub create_headers: HeaderMap,
    /// Retry policy for every request (S10).
    pub retry: RetryPolicy,
    /// A fingerprint of the source chosen by the caller, kept in the resume state.
    pub fingerprint: String,
}

impl S3Config {
    /// Defaults for an object of `total` bytes at `endpoint`/`bucket`/`key`: 8 MiB parts,
    /// four in flight, S3's 5 MiB minimum, the default retry policy.
    pub fn new(
        endpoint: Uri,
        bucket: impl Into<String>,
        key: impl Into<String>,
        total: u64,
    ) -> Self {
        S3Config {
            endpoint,
            bucket: bucket.into(),
            key: key.into(),
            total,
            part_size: DEFAULT_PART_SIZE,
            min_part_size: MIN_PART_SIZE,
            max_in_flight: DEFAULT_MAX_IN_FLIGHT,
            content_type: None,
            headers: HeaderMap::new(),
            create_headers: HeaderMap::new(),
            retry: RetryPolicy::default(),
            fingerprint: String::new(),
        }
    }
}

impl fmt::Debug for S3Config {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("S3Config")
            .field("endpoint", &crate::secret::RedactedUri(&self.endpoint))
            .field("bucket", &self.bucket)
            .field("key", &self.key)
            .field("total", &self.total)
            .field("part_size", &self.part_size)
            .field("min_part_size", &self.min_part_size)
            .field("max_in_flight", &self.max_in_flight)
            .field("headers", &RedactedHeaders(&self.headers))
            .field("create_headers", &RedactedHeaders(&self.create_headers))
            .finish_non_exhaustive()
    }
}

/// One acknowledged part in the resume ledger.
#[derive(Clone, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct LedgerPart {
    /// The part number, 1–10,000.
    pub part_number: u32,
    /// Its size in bytes.
    pub size: u64,
    /// The ETag its UploadPart answered, verbatim.
    pub etag: String,
    /// Its CRC32C, as sent in `x-amz-checksum-crc32c`.
    pub crc32c: u32,
}

/// What a driver saves so a later process can continue the same multipart upload.
///
/// Get it from [`S3Upload::resume_state`] and save it whenever it changed (before each
/// request); pass it to [`S3Upload::resume`] with a config for the same object and file.
#[derive(Clone, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct S3ResumeState {
    /// The endpoint the upload was created at (`scheme://authority/path`).
    pub endpoint: String,
    /// The bucket.
    pub bucket: String,
    /// The object key.
    pub key: String,
    /// The upload ID (S2).
    pub upload_id: String,
    /// The object's size.
    pub total: u64,
    /// The plan's part size: part numbers mean these byte ranges.
    pub part_size: u64,
    /// The parts the server acknowledged, in part order.
    pub parts: Vec<LedgerPart>,
    /// A CompleteMultipartUpload was sent: it may have succeeded (S7).
    pub completing: bool,
    /// The caller's fingerprint of the source (see [`S3Config::fingerprint`]).
    pub fingerprint: String,
}

/// How the object was shown to hold exactly the source's bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Proof {
    /// Complete's answer named the object's CRC32C, and it is the one computed.
    CompleteAnswer,
    /// A HEAD of the object named its CRC32C, and it is the one computed (Complete's answer
    /// had none, or the upload was gone after a Complete whose answer was lost, S7).
    Head,
}

/// A finished multipart upload: the object exists and holds the source's bytes.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct S3Completion {
    /// The bucket.
    pub bucket: String,
    /// The object key.
    pub key: String,
    /// The object's size.
    pub size: u64,
    /// How many parts it was joined from.
    pub parts: u32,
    /// The object's ETag (from Complete's answer, else the HEAD's), verbatim.
    pub etag: Option<String>,
    /// The object's `FULL_OBJECT` CRC32C, computed from the bytes read and confirmed.
    pub crc32c: u32,
    /// How it was confirmed.
    pub proof: Proof,
    /// The object's URL, when Complete's answer named one.
    pub location: Option<String>,
}

/// The request kinds of this protocol.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    /// S2.
    Create,
    /// S5: the page after this part-number marker.
    List(u32),
    /// S3: this part number.
    Part(u32),
    /// S6.
    Complete,
    /// S7: HEAD of the object.
    Head,
    /// S8.
    Abort,
}

/// Why the object is being checked with a HEAD.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum VerifyAfter {
    /// Complete answered success without a CRC32C.
    Completed,
    /// The upload was gone after a Complete that may have succeeded (S7).
    Gone,
}

/// Where the upload stands.
#[derive(Clone, Debug)]
enum Phase {
    /// S2: CreateMultipartUpload is due.
    Create,
    /// S5: resuming; the page after `marker` is due, `held` gathers what the pages listed.
    List {
        marker: u32,
        pages: u32,
        held: BTreeMap<u32, ListedPart>,
    },
    /// S3: parts are read and sent.
    Parts,
    /// S6: every part is acknowledged; Complete is due.
    Complete,
    /// S7: HEAD of the object is due.
    Verify(VerifyAfter),
    /// S8: AbortMultipartUpload is due.
    Abort,
}

/// What a part the server listed on resume said, to compare once the part is read.
#[derive(Clone, Debug)]
struct Listed {
    etag: String,
    crc32c: Option<u32>,
}

/// One planned part.
#[derive(Clone, Debug, Default)]
struct Slot {
    /// Its CRC32C, once read (or from the ledger).
    crc32c: Option<u32>,
    /// The ETag of its acknowledged upload: `Some` once acknowledged.
    etag: Option<String>,
    /// The server listed it on resume, unknown to the ledger: keep it if its CRC32C matches.
    listed: Option<Listed>,
}

/// A part being read to checksum it.
#[derive(Clone, Copy, Debug)]
struct Reading {
    part: u32,
    at: u64,
    end: u64,
    crc32c: u32,
}

/// The parts and their bookkeeping.
#[derive(Clone, Debug)]
struct Parts {
    slots: Vec<Slot>,
    acked_bytes: u64,
    acked_count: u32,
    /// The first part never handed out (acknowledged parts are skipped).
    next_new: u32,
    /// Parts whose upload failed, to send again.
    resend: BTreeSet<u32>,
    reading: Option<Reading>,
    /// The lowest part number not acknowledged, for `retained_from`.
    lowest_unacked: u32,
}

impl Parts {
    fn new(count: u32) -> Self {
        Parts {
            slots: vec![Slot::default(); count as usize],
            acked_bytes: 0,
            acked_count: 0,
            next_new: 1,
            resend: BTreeSet::new(),
            reading: None,
            lowest_unacked: 1,
        }
    }

    fn slot(&mut self, part: u32) -> Option<&mut Slot> {
        let index = usize::try_from(part.checked_sub(1)?).ok()?;
        self.slots.get_mut(index)
    }

    fn is_acked(&self, part: u32) -> bool {
        part.checked_sub(1)
            .and_then(|i| self.slots.get(i as usize))
            .is_some_and(|s| s.etag.is_some())
    }

    /// Records part `part` of `len` bytes as held with `etag` (a later answer replaces the
    /// ETag: the newest upload of a number is the one S3 keeps, S3).
    fn ack(&mut self, part: u32, len: u64, etag: String) {
        let Some(slot) = self.slot(part) else { return };
        let first = slot.etag.is_none();
        slot.etag = Some(etag);
        slot.listed = None;
        if first {
            self.acked_bytes = self.acked_bytes.saturating_add(len);
            self.acked_count += 1;
        }
        let count = self.slots.len() as u32;
        while self.lowest_unacked <= count && self.is_acked(self.lowest_unacked) {
            self.lowest_unacked += 1;
        }
    }
}

/// An S3 multipart upload: a pure state machine the driver polls. See the crate docs for the
/// driving loop and [`Upload`] for the contract.
pub struct S3Upload {
    endpoint: String,
    bucket: String,
    key: String,
    /// `<endpoint>/<bucket>/<encoded key>`.
    object: String,
    plan: PartPlan,
    count: u32,
    content_type: Option<HeaderValue>,
    headers: HeaderMap,
    create_headers: HeaderMap,
    fingerprint: String,
    max_in_flight: usize,
    /// Lowered by SlowDown (S10).
    limit: usize,

    upload_id: Option<String>,
    completing: bool,
    /// The object's FULL_OBJECT CRC32C and the Complete body, once every part is held.
    complete: Option<(u32, Bytes)>,
    completed_etag: Option<String>,
    location: Option<String>,

    parts: Parts,
    /// A resumed upload's ledger, until ListParts has been reconciled with it (what a state
    /// saved before then must carry on).
    ledger: Option<BTreeMap<u32, LedgerPart>>,
    phase: Phase,
    engine: Engine<Kind, S3Completion>,
}

impl fmt::Debug for S3Upload {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("S3Upload")
            .field("bucket", &self.bucket)
            .field("key", &self.key)
            .field("plan", &self.plan)
            .field("phase", &self.phase)
            .field("acked_parts", &self.parts.acked_count)
            .field("in_flight", &self.engine.flights().len())
            .field("outcome", &self.engine.outcome())
            .finish_non_exhaustive()
    }
}

/// Whether `b` stays as it is in a URI path segment or query value (RFC 3986 unreserved).
fn unreserved(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~')
}

/// Percent-encodes `text` into `out`, keeping unreserved bytes (and `/` when `slash`).
fn encode(out: &mut String, text: &str, slash: bool) {
    for &b in text.as_bytes() {
        if unreserved(b) || (slash && b == b'/') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
}

/// `scheme://authority/path` of `uri` without a trailing slash.
fn base_of(uri: &Uri) -> String {
    let scheme = uri.scheme_str().unwrap_or("https");
    let authority = uri.authority().map_or("", |a| a.as_str());
    format!("{scheme}://{authority}{}", uri.path().trim_end_matches('/'))
}

fn plan_error(e: PlanError) -> UsageError {
    match e {
        PlanError::ObjectTooLarge { total, max } => UsageError::SourceTooLarge { total, max },
        PlanError::PartSizeTooLarge { preferred, .. } => UsageError::ChunkSize {
            size: preferred,
            rule: "a part is at most 5 GiB (S4)",
        },
        _ => UsageError::InvalidInput {
            what: "part plan",
            why: "the object cannot be planned in parts",
        },
    }
}

/// The CRC32C of the concatenated big-endian part CRCs (the `COMPOSITE` value, S11).
fn composite(crcs: impl Iterator<Item = u32>) -> u32 {
    crcs.fold(0, |acc, c| crc32c::crc32c_append(acc, &c.to_be_bytes()))
}

/// Reads a non-negative decimal header, strictly.
fn decimal_header(headers: &HeaderMap, name: HeaderName) -> Option<Result<u64, ()>> {
    let value = headers.get(name)?;
    let text = value.to_str().map_err(|_| ());
    Some(text.and_then(|t| {
        if t.is_empty() || t.len() > 20 || !t.bytes().all(|b| b.is_ascii_digit()) {
            return Err(());
        }
        t.parse().map_err(|_| ())
    }))
}

impl S3Upload {
    /// Creates an upload of a new object: the first request is CreateMultipartUpload. Nothing
    /// is sent until the driver polls.
    ///
    /// # Errors
    /// [`UsageError`] before anything is sent: an object that cannot be planned in 10,000
    /// parts of at most 5 GiB ([`UsageError::SourceTooLarge`]), a part size over 5 GiB, an
    /// endpoint that is not absolute http(s) without a query, an empty or unusable bucket or
    /// key, or `max_in_flight` of 0.
    pub fn new(config: S3Config) -> Result<Self, UsageError> {
        let plan = PartPlan::with_minimum(Some(config.total), config.part_size, {
            config.min_part_size
        })
        .map_err(plan_error)?;
        Self::build(config, plan)
    }

    /// Continues an upload saved with [`S3Upload::resume_state`] by an earlier run: the first
    /// requests list the parts the server holds (S5), then only the parts it does not hold
    /// are sent. The state's part size wins over the config's.
    ///
    /// # Errors
    /// As [`S3Upload::new`], and [`UsageError::StateMismatch`] when the state belongs to
    /// another object (endpoint, bucket, key), another source (fingerprint, size), or is
    /// inconsistent (a ledger part outside the plan, of another size, listed twice).
    pub fn resume(config: S3Config, state: S3ResumeState) -> Result<Self, UsageError> {
        if state.fingerprint != config.fingerprint {
            return Err(UsageError::StateMismatch(
                "the source's fingerprint differs",
            ));
        }
        if state.total != config.total {
            return Err(UsageError::StateMismatch("the source's size differs"));
        }
        if state.endpoint != base_of(&config.endpoint)
            || state.bucket != config.bucket
            || state.key != config.key
        {
            return Err(UsageError::StateMismatch("it belongs to another object"));
        }
        let minimum = state.part_size.min(MIN_PART_SIZE);
        let plan = PartPlan::with_minimum(Some(state.total), state.part_size, minimum)
            .ok()
            .filter(|p| p.part_size() == state.part_size)
            .ok_or(UsageError::StateMismatch(
                "its part size cannot plan this file",
            ))?;
        let mut upload = Self::build(config, plan)?;
        if !valid_upload_id(&state.upload_id) {
            return Err(UsageError::StateMismatch("its upload ID is not usable"));
        }
        for part in &state.parts {
            let range = upload
                .plan
                .range(part.part_number)
                .map_err(|_| UsageError::StateMismatch("a part lies outside the plan"))?;
            if range.end - range.start != part.size {
                return Err(UsageError::StateMismatch(
                    "a part's size differs from the plan",
                ));
            }
            if part.etag.is_empty() || part.etag.chars().any(char::is_control) {
                return Err(UsageError::StateMismatch("a part's ETag is not usable"));
            }
            let slot = upload
                .parts
                .slot(part.part_number)
                .ok_or(UsageError::StateMismatch("a part lies outside the plan"))?;
            if slot.crc32c.is_some() {
                return Err(UsageError::StateMismatch("a part is listed twice"));
            }
            // The ledger's parts are claims until ListParts confirms them.
            slot.crc32c = Some(part.crc32c);
            slot.listed = None;
        }
        upload.ledger = Some(
            state
                .parts
                .into_iter()
                .map(|p| (p.part_number, p))
                .collect(),
        );
        upload.upload_id = Some(state.upload_id);
        upload.completing = state.completing;
        upload.phase = Phase::List {
            marker: 0,
            pages: 0,
            held: BTreeMap::new(),
        };
        Ok(upload)
    }

    fn build(config: S3Config, plan: PartPlan) -> Result<Self, UsageError> {
        check_absolute_http(&config.endpoint, "endpoint")?;
        if config.endpoint.query().is_some() {
            return Err(UsageError::InvalidInput {
                what: "endpoint",
                why: "must not have a query (the core adds its own)",
            });
        }
        let bucket_ok = !config.bucket.is_empty()
            && config.bucket.len() <= 255
            && config.bucket.bytes().all(unreserved);
        if !bucket_ok {
            return Err(UsageError::InvalidInput {
                what: "bucket",
                why: "must be 1 to 255 letters, digits, '.', '-', '_' or '~'",
            });
        }
        if config.key.is_empty()
            || config.key.len() > MAX_KEY_LEN
            || config.key.chars().any(char::is_control)
        {
            return Err(UsageError::InvalidInput {
                what: "object key",
                why: "must be 1 to 1024 bytes without control characters",
            });
        }
        if config.max_in_flight == 0 {
            return Err(UsageError::InvalidInput {
                what: "max_in_flight",
                why: "must be at least 1",
            });
        }
        let endpoint = base_of(&config.endpoint);
        let mut object = format!("{endpoint}/");
        encode(&mut object, &config.bucket, false);
        object.push('/');
        encode(&mut object, &config.key, true);
        if format!("{object}?uploads").parse::<Uri>().is_err() {
            return Err(UsageError::InvalidInput {
                what: "endpoint",
                why: "cannot be extended with the bucket and key",
            });
        }
        let mut headers = config.headers;
        let mut create_headers = config.create_headers;
        for value in headers.values_mut().chain(create_headers.values_mut()) {
            value.set_sensitive(true);
        }
        let count = plan.count().unwrap_or(1);
        let max_in_flight = usize::try_from(config.max_in_flight).unwrap_or(usize::MAX);
        Ok(S3Upload {
            endpoint,
            bucket: config.bucket,
            key: config.key,
            object,
            plan,
            count,
            content_type: config.content_type,
            headers,
            create_headers,
            fingerprint: config.fingerprint,
            max_in_flight,
            limit: max_in_flight,
            upload_id: None,
            completing: false,
            complete: None,
            completed_etag: None,
            location: None,
            parts: Parts::new(count),
            ledger: None,
            phase: Phase::Create,
            engine: Engine::new(config.retry),
        })
    }
}

/// Whether an upload ID from a server (or a state file) can go into a query: non-empty,
/// bounded, no control characters.
fn valid_upload_id(id: &str) -> bool {
    !id.is_empty() && id.len() <= MAX_UPLOAD_ID_LEN && !id.chars().any(char::is_control)
}

/// What a part step of the poll decided.
enum PartStep {
    Send(u32),
    Read(Read),
    Complete,
    Idle,
}

impl S3Upload {
    // ---- getters ----

    /// The part plan: how many parts, and which bytes each carries (S4).
    pub fn plan(&self) -> PartPlan {
        self.plan
    }

    /// The upload ID, once CreateMultipartUpload has answered (or from a resume state).
    pub fn upload_id(&self) -> Option<&str> {
        self.upload_id.as_deref()
    }

    /// Parts acknowledged so far.
    pub fn parts_acknowledged(&self) -> u32 {
        self.parts.acked_count
    }

    /// The resume state now (see `Upload::resume_state`): `None` before the upload ID is
    /// known and after success.
    fn state_now(&self) -> Option<S3ResumeState> {
        if matches!(self.engine.outcome(), Some(Ok(_))) {
            return None;
        }
        let upload_id = self.upload_id.clone()?;
        // Before ListParts has answered, the saved ledger is what there is to save.
        let parts = if let Some(ledger) = &self.ledger {
            ledger.values().cloned().collect()
        } else {
            self.parts
                .slots
                .iter()
                .zip(1u32..)
                .filter_map(|(slot, part_number)| {
                    let range = self.plan.range(part_number).ok()?;
                    Some(LedgerPart {
                        part_number,
                        size: range.end - range.start,
                        etag: slot.etag.clone()?,
                        crc32c: slot.crc32c?,
                    })
                })
                .collect()
        };
        Some(S3ResumeState {
            endpoint: self.endpoint.clone(),
            bucket: self.bucket.clone(),
            key: self.key.clone(),
            upload_id,
            total: self.plan.total().unwrap_or(0),
            part_size: self.plan.part_size(),
            parts,
            completing: self.completing,
            fingerprint: self.fingerprint.clone(),
        })
    }

    fn part_len(&self, part: u32) -> u64 {
        self.plan.range(part).map_or(0, |r| r.end - r.start)
    }

    fn uri(&self, kind: Kind) -> Uri {
        let mut query = String::new();
        let id = self.upload_id.as_deref().unwrap_or("");
        match kind {
            Kind::Create => query.push_str("uploads"),
            Kind::Part(n) => {
                query.push_str(&format!("partNumber={n}&uploadId="));
                encode(&mut query, id, false);
            }
            Kind::List(marker) => {
                query.push_str(&format!("max-parts={LIST_PAGE_SIZE}"));
                if marker > 0 {
                    query.push_str(&format!("&part-number-marker={marker}"));
                }
                query.push_str("&uploadId=");
                encode(&mut query, id, false);
            }
            Kind::Complete | Kind::Abort => {
                query.push_str("uploadId=");
                encode(&mut query, id, false);
            }
            Kind::Head => {}
        }
        let text = if query.is_empty() {
            self.object.clone()
        } else {
            format!("{}?{query}", self.object)
        };
        // `build` checked the object URL, and encoded queries keep it valid.
        text.parse().unwrap_or_default()
    }

    /// What the request `kind` was, for retry reports and errors.
    fn attempt(&self, kind: Kind) -> Attempt {
        let range = match kind {
            Kind::Part(n) => self.plan.range(n).ok(),
            _ => None,
        };
        Attempt::new(&self.uri(Kind::Head), range)
    }

    // ---- planning ----

    /// The next step of the parts phase.
    fn part_step(&mut self, in_flight: usize) -> PartStep {
        if self.parts.acked_count == self.count {
            return if in_flight == 0 {
                PartStep::Complete
            } else {
                PartStep::Idle
            };
        }
        if in_flight >= self.limit {
            return PartStep::Idle;
        }
        if let Some(part) = self.parts.resend.pop_first() {
            return PartStep::Send(part);
        }
        while self.parts.next_new <= self.count && self.parts.is_acked(self.parts.next_new) {
            self.parts.next_new += 1;
        }
        let part = self.parts.next_new;
        if part > self.count {
            return PartStep::Idle;
        }
        let Ok(range) = self.plan.range(part) else {
            return PartStep::Idle;
        };
        let known = self.parts.slot(part).and_then(|s| s.crc32c);
        if known.is_none() && range.is_empty() {
            // An empty part (the empty object's only part) needs no read.
            let crc = crc32c::crc32c(b"");
            if self.part_read(part, crc) {
                return self.part_step(in_flight);
            }
        } else if known.is_none() {
            let reading = match self.parts.reading {
                Some(r) if r.part == part => r,
                _ => Reading {
                    part,
                    at: range.start,
                    end: range.end,
                    crc32c: 0,
                },
            };
            self.parts.reading = Some(reading);
            return PartStep::Read(Read {
                range: reading.at..reading.end,
            });
        }
        self.parts.next_new += 1;
        PartStep::Send(part)
    }

    /// Part `part` has been read whole, with CRC32C `crc`. Returns whether it turned out to
    /// be held already (the server listed it with this CRC32C on resume).
    fn part_read(&mut self, part: u32, crc: u32) -> bool {
        let len = self.part_len(part);
        let Some(slot) = self.parts.slot(part) else {
            return false;
        };
        slot.crc32c = Some(crc);
        match slot.listed.take() {
            Some(listed) if listed.crc32c == Some(crc) => {
                self.parts.ack(part, len, listed.etag);
                true
            }
            _ => false,
        }
    }

    /// ListParts has been read to its last page (S5): keep a planned part only when the
    /// server holds it with the planned size and a CRC32C that agrees with ours.
    fn reconcile(&mut self, held: BTreeMap<u32, ListedPart>) {
        let ledger = self.ledger.take().unwrap_or_default();
        for part in 1..=self.count {
            let len = self.part_len(part);
            let Some(listed) = held.get(&part) else {
                // Not held (the server lost it, or the ledger was ahead): send it again.
                continue;
            };
            let Some(etag) = listed.etag.clone().filter(|e| !e.is_empty()) else {
                continue;
            };
            if listed.size != Some(len) {
                continue;
            }
            let server_crc = listed
                .checksums
                .crc32c()
                .and_then(parse_crc32c)
                .filter(|v| v.parts.is_none())
                .map(|v| v.crc32c);
            match (ledger.get(&part), server_crc) {
                // The ledger and the server agree on the bytes.
                (Some(ours), Some(theirs)) if ours.crc32c == theirs => {
                    self.parts.ack(part, len, etag);
                }
                // The server lists no CRC32C: only the ETag it gave our upload vouches.
                (Some(ours), None) if ours.etag == etag => self.parts.ack(part, len, etag),
                // A part unknown to the ledger: read it, and keep it if the CRC32Cs agree.
                (None, Some(theirs)) => {
                    if let Some(slot) = self.parts.slot(part) {
                        slot.listed = Some(Listed {
                            etag,
                            crc32c: Some(theirs),
                        });
                    }
                }
                // Another size, another CRC32C, or nothing to compare: never trusted.
                _ => {}
            }
        }
        self.engine.stats_mut().resumed_from = Some(self.parts.acked_bytes);
        self.phase = Phase::Parts;
    }

    // ---- answers ----

    fn finish(&mut self, outcome: Result<S3Completion, Error>) {
        self.engine.finish(outcome);
    }

    fn violation(&mut self, what: &'static str) {
        self.finish(Err(ProtocolViolation::MalformedResponse(what).into()));
    }

    /// Schedules the same request again after a retryable failure (a part: the same PUT,
    /// S3), or ends the upload when the retry budget is spent.
    fn retry(&mut self, now: Instant, kind: Kind, cause: RetryCause, after: Option<Duration>) {
        let attempt = self.attempt(kind);
        if !self.engine.retry(now, cause, after, attempt) {
            return;
        }
        if let Kind::Part(part) = kind {
            self.parts.resend.insert(part);
        }
    }

    /// An answer that is not a success, or a 200 whose body is `<Error>` (S7, S9).
    fn on_error(
        &mut self,
        now: Instant,
        kind: Kind,
        status: StatusCode,
        headers: &HeaderMap,
        error: Option<xml::S3Error>,
    ) {
        let action = match &error {
            Some(e) => e.action(status),
            None if self.engine.policy().retries_status(status) => ErrorAction::Retry,
            None if status == StatusCode::NOT_FOUND => ErrorAction::UploadGone,
            None => ErrorAction::Final,
        };
        let after = crate::retry::retry_after(headers);
        match (action, kind) {
            (ErrorAction::Retry, _) => self.retry(now, kind, RetryCause::Status(status), after),
            (ErrorAction::SlowDown, _) => {
                // S10: fewer requests per second, not only a later one.
                self.limit = (self.limit / 2).max(1);
                self.retry(now, kind, RetryCause::Status(status), after);
            }
            (ErrorAction::ResendPart, Kind::Part(_)) => {
                self.retry(now, kind, RetryCause::Status(status), None);
            }
            (ErrorAction::UploadGone, Kind::Abort) => self.finish(Err(Error::Cancelled)),
            // S7: a Complete that may have succeeded (its answer lost, then retried, or an
            // earlier run's): the object decides.
            (ErrorAction::UploadGone, Kind::Complete) => {
                self.phase = Phase::Verify(VerifyAfter::Gone);
            }
            (ErrorAction::UploadGone, Kind::Part(_) | Kind::List(_)) if self.completing => {
                self.phase = Phase::Verify(VerifyAfter::Gone);
            }
            (ErrorAction::UploadGone, Kind::Part(_) | Kind::List(_)) => {
                self.finish(Err(Error::SessionGone { status }));
            }
            _ => {
                let message = error
                    .map(|e| e.to_string())
                    .and_then(|m| crate::response::clean_text(&m, 200));
                self.finish(Err(Error::Server { status, message }));
            }
        }
    }

    /// A body that could not be read as the answer it should be: a cut or broken body is a
    /// transport failure (S7), anything else a protocol violation.
    fn on_unreadable(&mut self, now: Instant, kind: Kind, e: &XmlError, what: &'static str) {
        if e.counts_as_transport_failure() {
            let cause = RetryCause::Transport(TransportFailure::TruncatedResponse);
            self.retry(now, kind, cause, None);
        } else {
            self.violation(what);
        }
    }

    fn on_response(&mut self, now: Instant, kind: Kind, response: Response<Bytes>) {
        let (head, body) = response.into_parts();
        let status = head.status;
        let headers = &head.headers;
        if !status.is_success() {
            let error = match kind {
                Kind::Head => None,
                _ => xml::parse_error(&body).ok(),
            };
            if kind == Kind::Head {
                return self.on_head_refused(now, status, headers);
            }
            return self.on_error(now, kind, status, headers, error);
        }
        match kind {
            Kind::Create => match xml::parse_initiate_multipart_upload(&body) {
                Ok(S3Answer::Success(result)) => {
                    if !valid_upload_id(&result.upload_id) {
                        return self.violation("CreateMultipartUpload gave an unusable upload ID");
                    }
                    self.upload_id = Some(result.upload_id);
                    self.phase = Phase::Parts;
                    self.engine.progress();
                }
                Ok(S3Answer::Error(e)) => self.on_error(now, kind, status, headers, Some(e)),
                Err(e) => self.on_unreadable(
                    now,
                    kind,
                    &e,
                    "CreateMultipartUpload's answer is not an upload",
                ),
            },
            Kind::Part(part) => self.on_part(part, headers),
            Kind::List(marker) => self.on_list(now, marker, status, headers, &body),
            Kind::Complete => self.on_complete(now, status, headers, &body),
            Kind::Head => self.on_head(headers),
            Kind::Abort => self.finish(Err(Error::Cancelled)),
        }
    }

    /// UploadPart answered 2xx (S3): its ETag, and the CRC32C it echoes, which must be ours.
    fn on_part(&mut self, part: u32, headers: &HeaderMap) {
        let etag = headers
            .get(ETAG)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
            .filter(|e| !e.is_empty() && !e.chars().any(char::is_control));
        let Some(etag) = etag else {
            return self.violation("an UploadPart answer has no ETag");
        };
        let ours = self.parts.slot(part).and_then(|s| s.crc32c);
        if let Some(value) = headers.get(CHECKSUM_CRC32C) {
            let theirs = value
                .to_str()
                .ok()
                .and_then(parse_crc32c)
                .filter(|v| v.parts.is_none());
            match (theirs, ours) {
                (None, _) => {
                    return self
                        .violation("an UploadPart answer's x-amz-checksum-crc32c is unreadable");
                }
                (Some(theirs), Some(ours)) if theirs.crc32c != ours => {
                    return self.finish(Err(IntegrityError::Crc32c {
                        server: theirs.crc32c,
                        computed: ours,
                    }
                    .into()));
                }
                _ => {}
            }
        }
        let len = self.part_len(part);
        self.parts.ack(part, len, etag);
        self.engine.progress();
    }

    /// A ListParts page (S5): gather it, follow the next marker, reconcile after the last.
    fn on_list(
        &mut self,
        now: Instant,
        marker: u32,
        status: StatusCode,
        headers: &HeaderMap,
        body: &[u8],
    ) {
        let page = match xml::parse_list_parts(body) {
            Ok(S3Answer::Success(page)) => page,
            Ok(S3Answer::Error(e)) => {
                return self.on_error(now, Kind::List(marker), status, headers, Some(e));
            }
            Err(e) => {
                return self.on_unreadable(
                    now,
                    Kind::List(marker),
                    &e,
                    "a ListParts answer is not a list of parts",
                );
            }
        };
        if page
            .upload_id
            .as_deref()
            .is_some_and(|id| Some(id) != self.upload_id.as_deref())
        {
            return self.violation("a ListParts page names another upload");
        }
        let next = match page.next_page_marker() {
            Ok(next) => next,
            Err(_) => return self.violation("ListParts pagination does not advance"),
        };
        let Phase::List {
            marker: at,
            pages,
            held,
        } = &mut self.phase
        else {
            return;
        };
        for part in page.parts {
            held.insert(part.part_number, part);
        }
        *pages += 1;
        self.engine.progress();
        match next {
            // At most 10,000 part numbers, and each marker is past the last: bounded.
            Some(next) if next > *at && *pages <= MAX_PARTS => *at = next,
            Some(_) => self.violation("ListParts pagination does not advance"),
            None => {
                let held = std::mem::take(held);
                self.reconcile(held);
            }
        }
    }

    /// The object's CRC32C as the server shows it (`FULL_OBJECT`, or `COMPOSITE` with the
    /// part count), against ours (S11).
    fn check_object_crc(&self, value: &str) -> Result<(), Error> {
        let full = self.object_crc32c().ok_or(Error::Internal(
            "the object is checked before every part's CRC32C is known",
        ))?;
        let shown = parse_crc32c(value).ok_or(ProtocolViolation::MalformedResponse(
            "the object's CRC32C is unreadable",
        ))?;
        let (expected, parts_ok) = match shown.parts {
            None => (full, true),
            Some(n) => {
                let crcs = self.parts.slots.iter().map(|s| s.crc32c.unwrap_or(0));
                (composite(crcs), n == self.count)
            }
        };
        if shown.crc32c == expected && parts_ok {
            Ok(())
        } else {
            Err(IntegrityError::Crc32c {
                server: shown.crc32c,
                computed: expected,
            }
            .into())
        }
    }

    /// The object's FULL_OBJECT CRC32C from the parts' CRC32Cs, once all are known (a
    /// resumed upload whose Complete was sent has them all in its ledger).
    fn object_crc32c(&self) -> Option<u32> {
        if let Some((full, _)) = &self.complete {
            return Some(*full);
        }
        let parts: Option<Vec<PartCrc32c>> = self
            .parts
            .slots
            .iter()
            .zip(1u32..)
            .map(|(slot, n)| {
                Some(PartCrc32c {
                    crc32c: slot.crc32c?,
                    len: self.part_len(n),
                })
            })
            .collect();
        full_object_crc32c(&parts?).ok()
    }

    fn succeed(&mut self, proof: Proof, etag: Option<String>) {
        let completion = S3Completion {
            bucket: self.bucket.clone(),
            key: self.key.clone(),
            size: self.plan.total().unwrap_or(0),
            parts: self.count,
            etag: etag.or_else(|| self.completed_etag.clone()),
            crc32c: self.object_crc32c().unwrap_or(0),
            proof,
            location: self.location.clone(),
        };
        self.finish(Ok(completion));
    }

    /// Complete answered 2xx: an `<Error>` body is an error (S7); a result proves the object
    /// when its CRC32C is ours, else a HEAD must.
    fn on_complete(&mut self, now: Instant, status: StatusCode, headers: &HeaderMap, body: &[u8]) {
        let result = match xml::parse_complete_multipart_upload(body) {
            Ok(S3Answer::Success(result)) => result,
            Ok(S3Answer::Error(e)) => {
                return self.on_error(now, Kind::Complete, status, headers, Some(e));
            }
            Err(e) => {
                return self.on_unreadable(
                    now,
                    Kind::Complete,
                    &e,
                    "CompleteMultipartUpload's answer is not a completed object",
                );
            }
        };
        self.engine.progress();
        self.completed_etag = result.etag.clone();
        self.location = result.location.clone();
        match result.checksums.crc32c() {
            Some(value) => match self.check_object_crc(value) {
                Ok(()) => self.succeed(Proof::CompleteAnswer, result.etag),
                Err(e) => self.finish(Err(e)),
            },
            None => self.phase = Phase::Verify(VerifyAfter::Completed),
        }
    }

    /// HEAD answered 2xx (S7, S11): the object's size and CRC32C must be ours.
    fn on_head(&mut self, headers: &HeaderMap) {
        let after = match self.phase {
            Phase::Verify(after) => after,
            _ => VerifyAfter::Completed,
        };
        let total = self.plan.total().unwrap_or(0);
        match decimal_header(headers, CONTENT_LENGTH) {
            Some(Ok(size)) if size != total => {
                return self.finish(Err(match after {
                    VerifyAfter::Completed => IntegrityError::Size {
                        stored: size,
                        sent: total,
                    }
                    .into(),
                    // The upload is gone and the key holds something else (S7).
                    VerifyAfter::Gone => Error::SessionGone {
                        status: StatusCode::NOT_FOUND,
                    },
                }));
            }
            Some(Err(())) => return self.violation("a HEAD answer's Content-Length is unreadable"),
            _ => {}
        }
        let Some(value) = headers.get(CHECKSUM_CRC32C).and_then(|v| v.to_str().ok()) else {
            return self.finish(Err(IntegrityError::Unproven { size: total }.into()));
        };
        let value = value.to_owned();
        match (self.check_object_crc(&value), after) {
            (Ok(()), _) => {
                let etag = headers
                    .get(ETAG)
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_owned);
                let etag = self.completed_etag.clone().or(etag);
                self.succeed(Proof::Head, etag);
            }
            (Err(e), VerifyAfter::Completed) => self.finish(Err(e)),
            (Err(_), VerifyAfter::Gone) => self.finish(Err(Error::SessionGone {
                status: StatusCode::NOT_FOUND,
            })),
        }
    }

    /// HEAD answered a non-2xx (no body, S9).
    fn on_head_refused(&mut self, now: Instant, status: StatusCode, headers: &HeaderMap) {
        let after = match self.phase {
            Phase::Verify(after) => after,
            _ => VerifyAfter::Completed,
        };
        if self.engine.policy().retries_status(status) {
            let after = crate::retry::retry_after(headers);
            return self.retry(now, Kind::Head, RetryCause::Status(status), after);
        }
        match (status, after) {
            // No object and no upload: nothing was completed (S7).
            (StatusCode::NOT_FOUND, VerifyAfter::Gone) => {
                self.finish(Err(Error::SessionGone { status }))
            }
            (StatusCode::NOT_FOUND, VerifyAfter::Completed) => {
                self.finish(Err(ProtocolViolation::UnexpectedStatus(status).into()))
            }
            _ => self.finish(Err(Error::Server {
                status,
                message: None,
            })),
        }
    }

    // ---- requests ----

    /// The object's FULL_OBJECT CRC32C and the Complete body, built once all parts are held.
    fn prepare_complete(&mut self) -> Result<(), Error> {
        if self.complete.is_some() {
            return Ok(());
        }
        let mut crcs = Vec::with_capacity(self.count as usize);
        let mut listed = Vec::with_capacity(self.count as usize);
        for (slot, part_number) in self.parts.slots.iter().zip(1u32..) {
            let (Some(crc32c), Some(etag)) = (slot.crc32c, slot.etag.clone()) else {
                return Err(Error::Internal("Complete is due with a part not held"));
            };
            let len = self.plan.range(part_number).map_or(0, |r| r.end - r.start);
            crcs.push(PartCrc32c { crc32c, len });
            listed.push(CompletedPart {
                part_number,
                etag,
                crc32c: Some(crc32c),
            });
        }
        let full = full_object_crc32c(&crcs)
            .map_err(|_| Error::Internal("a planned part is longer than 5 GiB"))?;
        let body = complete_multipart_upload_body(&listed)
            .map_err(|_| Error::Internal("the Complete body cannot be written"))?;
        self.complete = Some((full, Bytes::from(body)));
        Ok(())
    }

    fn build_request(&self, id: RequestId, kind: Kind) -> Transmit {
        let mut headers = self.headers.clone();
        for name in [&CONTENT_TYPE, &CONTENT_LENGTH] {
            headers.remove(name);
        }
        for name in [
            &CHECKSUM_ALGORITHM,
            &CHECKSUM_TYPE,
            &CHECKSUM_CRC32C,
            &CHECKSUM_MODE,
        ] {
            headers.remove(name);
        }
        let (method, body) = match kind {
            Kind::Create => {
                for (name, value) in &self.create_headers {
                    headers.append(name, value.clone());
                }
                if let Some(content_type) = &self.content_type {
                    headers.insert(CONTENT_TYPE, content_type.clone());
                }
                // S2, S11: CRC32C of the whole object, computed from the parts' CRCs.
                headers.insert(CHECKSUM_ALGORITHM, HeaderValue::from_static("CRC32C"));
                headers.insert(CHECKSUM_TYPE, HeaderValue::from_static("FULL_OBJECT"));
                (Method::POST, Body::empty())
            }
            Kind::Part(part) => {
                let crc = self
                    .parts
                    .slots
                    .get(part as usize - 1)
                    .and_then(|s| s.crc32c)
                    .unwrap_or(0);
                if let Ok(value) = HeaderValue::from_str(&part_crc32c(crc)) {
                    headers.insert(CHECKSUM_CRC32C, value);
                }
                let range = self.plan.range(part).unwrap_or(0..0);
                (Method::PUT, Body::source(range))
            }
            Kind::List(_) => (Method::GET, Body::empty()),
            Kind::Complete => {
                let (full, body) = self.complete.clone().unwrap_or((0, Bytes::new()));
                headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/xml"));
                if let Ok(value) = HeaderValue::from_str(&part_crc32c(full)) {
                    headers.insert(CHECKSUM_CRC32C, value);
                }
                headers.insert(CHECKSUM_TYPE, HeaderValue::from_static("FULL_OBJECT"));
                headers.insert(
                    MP_OBJECT_SIZE,
                    crate::range::decimal(self.plan.total().unwrap_or(0)),
                );
                (Method::POST, Body::bytes(body))
            }
            Kind::Head => {
                headers.insert(CHECKSUM_MODE, HeaderValue::from_static("ENABLED"));
                (Method::HEAD, Body::empty())
            }
            Kind::Abort => (Method::DELETE, Body::empty()),
        };
        if matches!(method, Method::POST | Method::PUT) {
            headers.insert(CONTENT_LENGTH, crate::range::decimal(body.len()));
        }
        Transmit::new(id, method, self.uri(kind), headers, body)
    }
}

impl Upload for S3Upload {
    type Output = S3Completion;
    type State = S3ResumeState;

    fn poll_action(&mut self, now: Instant) -> Action<S3Completion> {
        if let Some(action) = self.engine.poll_head(now) {
            return action;
        }
        let in_flight = self.engine.flights().len();
        // Cancel (S8): once nothing is in flight, abort the upload if there is one. A
        // completion being checked is not undone.
        if self.engine.cancel_requested() && !matches!(self.phase, Phase::Abort | Phase::Verify(_))
        {
            if in_flight > 0 {
                return Action::Idle;
            }
            if self.upload_id.is_none() {
                self.finish(Err(Error::Cancelled));
                return self.poll_action(now);
            }
            self.phase = Phase::Abort;
        }
        let kind = match &self.phase {
            Phase::Parts => match self.part_step(in_flight) {
                PartStep::Send(part) => Kind::Part(part),
                PartStep::Read(read) => return Action::Read(read),
                PartStep::Idle => return self.engine.idle(),
                PartStep::Complete => {
                    if let Err(e) = self.prepare_complete() {
                        self.finish(Err(e));
                        return self.poll_action(now);
                    }
                    self.phase = Phase::Complete;
                    Kind::Complete
                }
            },
            _ if in_flight > 0 => return Action::Idle,
            Phase::Create => Kind::Create,
            Phase::List { marker, .. } => Kind::List(*marker),
            Phase::Complete => Kind::Complete,
            Phase::Verify(_) => Kind::Head,
            Phase::Abort => Kind::Abort,
        };
        if kind == Kind::Complete {
            // S7: from now on the upload may be complete even if no answer says so.
            self.completing = true;
        }
        let source_len = match kind {
            Kind::Part(part) => self.part_len(part),
            _ => 0,
        };
        let id = self.engine.hand_out(now, kind, source_len);
        Action::Send(self.build_request(id, kind))
    }

    fn max_in_flight(&self) -> usize {
        self.max_in_flight
    }

    /// What to save to continue this upload in a later process; `None` before
    /// CreateMultipartUpload answered and once the upload has succeeded.
    fn resume_state(&self) -> Option<S3ResumeState> {
        self.state_now()
    }

    /// Asks the upload to stop: once no request is in flight, AbortMultipartUpload (S8) if the
    /// upload was created, then the outcome is [`Error::Cancelled`]. A completion that arrives
    /// first still wins.
    fn cancel(&mut self) {
        self.engine.request_cancel();
        self.engine.clear_wait();
    }

    fn stats(&self) -> Stats {
        self.engine.stats()
    }

    fn progress(&self) -> Progress {
        Progress {
            acknowledged: self.persisted(),
            in_flight: self.engine.in_flight_bytes(),
            total: self.plan.total(),
        }
    }

    /// Bytes of the acknowledged parts, wherever they lie.
    fn persisted(&self) -> u64 {
        self.parts.acked_bytes
    }

    /// The start of the lowest part not acknowledged (before a resumed upload has listed its
    /// parts: 0, since any part may have to be read).
    fn retained_from(&self) -> u64 {
        if matches!(self.phase, Phase::List { .. }) {
            return 0;
        }
        let total = self.plan.total().unwrap_or(0);
        match self.plan.range(self.parts.lowest_unacked) {
            Ok(range) if self.parts.lowest_unacked <= self.count => range.start.min(total),
            _ => total,
        }
    }

    fn last_retry(&self) -> Option<&Retrying> {
        self.engine.last_retry()
    }

    fn handle_read(&mut self, _now: Instant, offset: u64, bytes: &[u8]) -> Result<(), UsageError> {
        if self.engine.is_done() {
            return Err(UsageError::Finished);
        }
        let Some(mut reading) = self.parts.reading else {
            return Err(UsageError::UnexpectedRead {
                offset,
                expected: "no read was asked for",
            });
        };
        if offset != reading.at {
            return Err(UsageError::UnexpectedRead {
                offset,
                expected: "bytes starting where the read starts",
            });
        }
        let asked = reading.end - reading.at;
        let given = bytes.len() as u64;
        if given > asked {
            return Err(UsageError::ReadTooLong { asked, given });
        }
        if bytes.is_empty() {
            let declared = self.plan.total().unwrap_or(0);
            self.finish(Err(UsageError::SourceTooShort {
                ended_at: offset,
                declared,
            }
            .into()));
            return Ok(());
        }
        reading.crc32c = crc32c::crc32c_append(reading.crc32c, bytes);
        reading.at += given;
        if reading.at == reading.end {
            self.parts.reading = None;
            self.part_read(reading.part, reading.crc32c);
        } else {
            self.parts.reading = Some(reading);
        }
        Ok(())
    }

    fn handle_response(
        &mut self,
        now: Instant,
        id: RequestId,
        response: Response<Bytes>,
    ) -> Result<(), UsageError> {
        let kind = self.engine.take(id)?.kind;
        self.on_response(now, kind, response);
        Ok(())
    }

    fn handle_failure(
        &mut self,
        now: Instant,
        id: RequestId,
        failure: TransportFailure,
    ) -> Result<(), UsageError> {
        let kind = self.engine.take(id)?.kind;
        // The server may or may not have acted on it: the same request again (a part is the
        // same PUT, S3; a Complete may then meet NoSuchUpload, S7).
        self.retry(now, kind, RetryCause::Transport(failure), None);
        Ok(())
    }
}
