//! A tus upload of one source in parallel parts, through the concatenation extension (U13 in
//! `docs/protocols/tus.md`): the source is split into N ranges, each uploaded as a partial
//! upload ([`TusUpload`] with `Upload-Concat: partial`), up to N requests in flight; then the
//! final upload `Upload-Concat: final;<url1> <url2> …` joins them in byte order.
//!
//! ```text
//!  Discover ──OPTIONS 200/204 listing creation and concatenation (U2)──▶ Parts
//!  Parts ── every part a TusUpload of its own range: POST partial, PATCH…, in parallel ──▶
//!           all parts complete ──▶ Final
//!  Final ──POST Upload-Concat: final;… (no Upload-Length, the metadata) ──201 + Location──▶
//!          FinalHead
//!  FinalHead ──HEAD: Upload-Length and Upload-Offset both the source's length──▶ Done(Ok)
//!            ──no Upload-Offset yet, or a smaller one (still joining)──▶ wait, HEAD again
//!  Resume(state) ──▶ Discover ──▶ Parts (each part HEADs its saved URL, U15), or FinalHead
//!                   when the final upload was created
//!  cancel() ──▶ each unfinished part DELETEs itself, then the finished parts and the final
//!               upload are DELETEd (U12), where the server offers termination
//! ```
//!
//! # What the core trusts
//!
//! Each part is a [`TusUpload`] and trusts its server's offsets no further (see its module).
//! The upload succeeds only when the final upload's `HEAD` says `Upload-Length` is the
//! source's length and `Upload-Offset` equals it. tus has no checksum of the whole object:
//! the final answer proves the server holds that many bytes, joined from parts each of which
//! the server acknowledged in full; with the checksum extension every PATCH's bytes were
//! checked as well (U11).
//!
//! Request ids: with N parts, the parallel upload's own requests (OPTIONS, the final POST and
//! HEAD, DELETEs) take the ids `0, N+1, 2(N+1), …`, and part `i` takes `i+1, i+1+(N+1), …`,
//! so an outcome is routed by its id alone.

use std::fmt;
use std::ops::Range;
use std::time::{Instant, SystemTime};

use bytes::Bytes;
use http::header::CONTENT_LENGTH;
use http::{HeaderMap, HeaderValue, Method, Response, StatusCode, Uri};

use super::metadata;
use super::upload::{
    TUS_RESUMABLE, TUS_VERSION, TusCompletion, TusConfig, TusResumeState, TusServerInfo, TusStart,
    TusUpload, UPLOAD_CONCAT, X_HTTP_METHOD_OVERRIDE, bad_offset, resolve_location,
};
use crate::action::{
    Action, Body, Progress, Read, RequestId, Stats, Transmit, TransportFailure, Upload,
};
use crate::engine::{Engine, Flight};
use crate::error::{Error, ProtocolViolation, RetryCause, UsageError};
use crate::response;
use crate::retry::{self, Attempt, Retrying};
use crate::secret::{RedactedHeaders, SessionUri, check_absolute_http};

/// The most parts one parallel upload may have.
pub const MAX_PARTS: u32 = 256;

/// How a parallel upload begins.
#[derive(Clone)]
pub enum TusParallelStart {
    /// Split the source and create the parts at the creation URL (U13).
    Create {
        /// The creation URL, for example `https://tus.example/files/`.
        endpoint: Uri,
    },
    /// Continue a parallel upload saved with [`TusParallelUpload::resume_state`] (U15): every
    /// part's saved URL is asked with `HEAD` first, or the final upload's when it exists.
    Resume {
        /// The creation URL the upload was started at (the final upload is created there).
        endpoint: Uri,
        /// The saved state.
        state: TusParallelResumeState,
        /// The wall-clock time now, to check the parts' `Upload-Expires` against (U10).
        now: SystemTime,
    },
}

impl fmt::Debug for TusParallelStart {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TusParallelStart::Create { .. } => f.write_str("TusParallelStart::Create(<redacted>)"),
            TusParallelStart::Resume { .. } => f.write_str("TusParallelStart::Resume(<redacted>)"),
        }
    }
}

/// One part of a saved parallel upload: its range of the source and, once created, its own
/// saved state (URL, what the server acknowledged, expiry).
#[derive(Clone, PartialEq, Eq, Debug)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct TusPartState {
    /// Where the part starts in the source.
    pub start: u64,
    /// Where it ends (exclusive).
    pub end: u64,
    /// The part's upload; `None` before its creation was answered.
    pub upload: Option<TusResumeState>,
}

/// What a driver saves so a later run can resume a parallel upload (U13, U15).
///
/// Get it from [`TusParallelUpload::resume_state`], save it whenever it changed before sending
/// the next request, and pass it back as [`TusParallelStart::Resume`]. It holds upload URLs,
/// capabilities: store it with owner-only permissions. Check
/// [`TusParallelResumeState::expired_at`] first: an expired upload must be started again.
#[derive(Clone, PartialEq, Eq, Debug)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct TusParallelResumeState {
    /// The source's size.
    pub total: u64,
    /// The parts, in byte order, covering the source without gaps.
    pub parts: Vec<TusPartState>,
    /// The final upload's URL, once its creation was answered.
    pub final_url: Option<SessionUri>,
    /// The caller's fingerprint of the source.
    pub fingerprint: String,
}

impl TusParallelResumeState {
    /// Whether any part's `Upload-Expires` is at or before `now` (U10): start again then.
    pub fn expired_at(&self, now: SystemTime) -> bool {
        self.parts
            .iter()
            .filter_map(|p| p.upload.as_ref())
            .any(|u| u.expired_at(now))
    }
}

/// The parallel upload's own requests.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Kind {
    /// U2: `OPTIONS` on the creation URL.
    Options,
    /// U13: `POST` the final upload.
    Final,
    /// U3, U13: `HEAD` the final upload.
    Head,
    /// U12: `DELETE` a finished part or the final upload.
    Delete(SessionUri),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    Discover,
    Parts,
    Final,
    FinalHead,
    Cancel,
}

/// What an answer to one of the parallel upload's own requests means.
enum Reply {
    Discovered(TusServerInfo),
    Created(SessionUri),
    Joined(StatusCode),
    /// The final upload is not joined yet (or says nothing of its offset): ask again.
    NotYet,
    Deleted,
    Retry(RetryCause, Option<std::time::Duration>),
    End(Error),
}

/// One part: its range of the source and the upload that carries it.
struct Part {
    range: Range<u64>,
    upload: TusUpload,
}

/// Where the last retry was scheduled.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum RetrySource {
    Own,
    Part(usize),
}

/// A tus upload of one source in parallel parts joined by concatenation (U13): a pure state
/// machine the driver polls, with up to [`Upload::max_in_flight`] requests in flight. See the
/// module docs for the protocol and [`Upload`] for the driving contract.
pub struct TusParallelUpload {
    endpoint: Uri,
    total: u64,
    metadata: Option<HeaderValue>,
    method_override: bool,
    headers: HeaderMap,
    fingerprint: String,
    checksum: Option<super::upload::ChecksumAlgorithm>,
    parts: Vec<Part>,
    final_url: Option<SessionUri>,
    phase: Phase,
    server: Option<TusServerInfo>,
    /// The part whose read the driver was last asked for.
    reading: Option<usize>,
    /// The part polled first next time, so every part gets its turn.
    next_part: usize,
    /// DELETEs still to send after `cancel()`; `None` until the parts are over.
    deletes: Option<Vec<SessionUri>>,
    last_retry: Option<RetrySource>,
    resumed_final: bool,
    engine: Engine<Kind, TusCompletion>,
}

impl fmt::Debug for TusParallelUpload {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TusParallelUpload")
            .field("phase", &self.phase)
            .field("total", &self.total)
            .field("parts", &self.parts.len())
            .field("headers", &RedactedHeaders(&self.headers))
            .field("final_created", &self.final_url.is_some())
            .field("outcome", &self.engine.outcome())
            .finish_non_exhaustive()
    }
}

impl TusParallelUpload {
    /// Creates a parallel upload of `config.total` bytes in `parts` parts (fewer when the
    /// source has fewer bytes; a resumed upload keeps its saved parts). Every setting of
    /// `config` applies to each part, except the metadata, which goes on the final upload
    /// (U13); `config.discover` is implied: the server must list `concatenation`. Nothing is
    /// sent until the driver polls.
    ///
    /// # Errors
    /// [`UsageError`] for a source of unknown size, `parts` of 0 or above [`MAX_PARTS`], the
    /// errors of [`TusUpload::new`], or a resume state that does not fit (another fingerprint
    /// or size, parts that leave gaps, a part that expired).
    pub fn new(start: TusParallelStart, config: TusConfig, parts: u32) -> Result<Self, UsageError> {
        let Some(total) = config.total else {
            return Err(UsageError::InvalidInput {
                what: "source size",
                why: "a parallel upload needs the source's size",
            });
        };
        if parts == 0 || parts > MAX_PARTS {
            return Err(UsageError::InvalidInput {
                what: "parts",
                why: "must be between 1 and 256",
            });
        }
        let meta = metadata::upload_metadata(
            config
                .metadata
                .iter()
                .map(|(k, v)| (k.as_str(), v.as_slice())),
        )?;
        let (endpoint, saved, final_url, now) = match start {
            TusParallelStart::Create { endpoint } => (endpoint, None, None, SystemTime::UNIX_EPOCH),
            TusParallelStart::Resume {
                endpoint,
                state,
                now,
            } => {
                if state.fingerprint != config.fingerprint {
                    return Err(UsageError::StateMismatch(
                        "the source's fingerprint differs",
                    ));
                }
                if state.total != total {
                    return Err(UsageError::StateMismatch("the source's size differs"));
                }
                let count = state.parts.len();
                let contiguous = state.parts.first().is_some_and(|p| p.start == 0)
                    && state.parts.last().is_some_and(|p| p.end == total)
                    && state.parts.windows(2).all(|w| w[0].end == w[1].start)
                    && state.parts.iter().all(|p| p.start <= p.end);
                if count == 0 || count > MAX_PARTS as usize || !contiguous {
                    return Err(UsageError::StateMismatch(
                        "its parts do not cover the source",
                    ));
                }
                (endpoint, Some(state.parts), state.final_url, now)
            }
        };
        check_absolute_http(&endpoint, "creation URL")?;
        let ranges: Vec<Range<u64>> = match &saved {
            Some(parts) => parts.iter().map(|p| p.start..p.end).collect(),
            None => split(total, parts),
        };
        let mut saved = saved.map(|v| v.into_iter().map(|p| p.upload));
        let step = ranges.len() as u64 + 1;
        let mut built = Vec::with_capacity(ranges.len());
        for (i, range) in ranges.into_iter().enumerate() {
            let mut part_config = config.clone();
            part_config.total = Some(range.end - range.start);
            part_config.metadata = Vec::new();
            part_config.discover = false;
            let part_start = match saved.as_mut().and_then(|s| s.next()).flatten() {
                Some(state) => TusStart::Resume { state, now },
                None => TusStart::Create {
                    endpoint: endpoint.clone(),
                },
            };
            let mut upload = TusUpload::new(part_start, part_config)?;
            upload.make_partial(i as u64 + 1, step);
            built.push(Part { range, upload });
        }
        let mut headers = config.headers;
        for value in headers.values_mut() {
            value.set_sensitive(true);
        }
        let mut engine = Engine::new(config.retry);
        engine.use_ids(0, step);
        Ok(TusParallelUpload {
            endpoint,
            total,
            metadata: meta,
            method_override: config.method_override,
            headers,
            fingerprint: config.fingerprint,
            checksum: config.checksum,
            parts: built,
            resumed_final: final_url.is_some(),
            final_url,
            phase: Phase::Discover,
            server: None,
            reading: None,
            next_part: 0,
            deletes: None,
            last_retry: None,
            engine,
        })
    }

    /// The parts' ranges of the source, in byte order.
    pub fn part_ranges(&self) -> Vec<Range<u64>> {
        self.parts.iter().map(|p| p.range.clone()).collect()
    }

    /// What the server's `OPTIONS` answer listed, after discovery (U2).
    pub fn server_info(&self) -> Option<&TusServerInfo> {
        self.server.as_ref()
    }

    fn offers(&self, extension: &str) -> bool {
        self.server.as_ref().is_none_or(|s| s.offers(extension))
    }

    fn uri_for(&self, kind: &Kind) -> Uri {
        match kind {
            Kind::Options | Kind::Final => self.endpoint.clone(),
            Kind::Head => self
                .final_url
                .as_ref()
                .map(|u| u.expose().clone())
                .unwrap_or_default(),
            Kind::Delete(url) => url.expose().clone(),
        }
    }

    fn build(&self, id: RequestId, kind: &Kind) -> Transmit {
        let mut headers = HeaderMap::new();
        let mut method = match kind {
            Kind::Options => Method::OPTIONS,
            Kind::Final | Kind::Delete(_) => {
                headers.insert(CONTENT_LENGTH, HeaderValue::from_static("0"));
                if *kind == Kind::Final {
                    Method::POST
                } else {
                    Method::DELETE
                }
            }
            Kind::Head => Method::HEAD,
        };
        if *kind == Kind::Final {
            // U13: the parts' URLs in byte order; no Upload-Length; the metadata here.
            let urls: Vec<String> = self
                .parts
                .iter()
                .filter_map(|p| p.upload.completion())
                .map(|c| c.upload_url.expose().to_string())
                .collect();
            if let Ok(mut value) = HeaderValue::from_str(&format!("final;{}", urls.join(" "))) {
                value.set_sensitive(true);
                headers.insert(UPLOAD_CONCAT, value);
            }
            if let Some(m) = &self.metadata {
                headers.insert(metadata::UPLOAD_METADATA, m.clone());
            }
        }
        if *kind != Kind::Options {
            headers.insert(TUS_RESUMABLE, HeaderValue::from_static(TUS_VERSION));
        }
        if self.method_override && method == Method::DELETE {
            // U5.
            headers.insert(X_HTTP_METHOD_OVERRIDE, HeaderValue::from_static("DELETE"));
            method = Method::POST;
        }
        for (name, value) in &self.headers {
            headers.append(name.clone(), value.clone());
        }
        Transmit::new(id, method, self.uri_for(kind), headers, Body::empty())
    }

    fn send(&mut self, now: Instant, kind: Kind) -> Action<TusCompletion> {
        let id = self.engine.hand_out(now, kind.clone(), 0);
        Action::Send(self.build(id, &kind))
    }

    /// Polls the parts in turn, from the one after the last that sent: the first request or
    /// read wins; otherwise the earliest wait, or idle while any is in flight. `None` once
    /// every part is over (each its own outcome).
    fn poll_parts(&mut self, now: Instant) -> Option<Action<TusCompletion>> {
        let n = self.parts.len();
        let mut wait: Option<Instant> = None;
        let mut busy = false;
        for k in 0..n {
            let i = (self.next_part + k) % n;
            let base = self.parts[i].range.start;
            match self.parts[i].upload.poll_action(now) {
                Action::Send(mut t) => {
                    let r = &t.body.source;
                    t.body.source = (r.start + base)..(r.end + base);
                    self.next_part = (i + 1) % n;
                    return Some(Action::Send(t));
                }
                Action::Read(r) => {
                    self.reading = Some(i);
                    return Some(Action::Read(Read {
                        range: (r.range.start + base)..(r.range.end + base),
                    }));
                }
                Action::Wait(until) => wait = Some(wait.map_or(until, |w| w.min(until))),
                Action::Idle => busy = true,
                Action::Done(Ok(_)) => {}
                Action::Done(Err(e)) if self.phase != Phase::Cancel => {
                    self.engine.finish(Err(e));
                    return self.engine.poll_head(now);
                }
                Action::Done(Err(_)) => {}
            }
        }
        match (wait, busy) {
            (Some(until), _) => Some(Action::Wait(until)),
            (None, true) => Some(Action::Idle),
            (None, false) => None,
        }
    }

    fn classify(&self, kind: &Kind, response: &Response<Bytes>) -> Reply {
        let status = response.status();
        let headers = response.headers();
        let after = || retry::retry_after(headers);
        let policy = self.engine.policy();
        let ok = status == StatusCode::OK || status == StatusCode::NO_CONTENT;
        if status == StatusCode::PRECONDITION_FAILED {
            // U1: final.
            let message = metadata::tus_version(headers)
                .ok()
                .flatten()
                .filter(|v| !v.is_empty())
                .map(|v| format!("the server speaks tus version {}", v.join(", ")));
            return Reply::End(Error::Server { status, message });
        }
        match kind {
            Kind::Options if ok => match TusServerInfo::read(headers) {
                Ok(info) => Reply::Discovered(info),
                Err(_) => Reply::End(
                    ProtocolViolation::MalformedResponse(
                        "the OPTIONS answer has a malformed Tus-* header",
                    )
                    .into(),
                ),
            },
            Kind::Final if status == StatusCode::CREATED => {
                match resolve_location(headers, &self.endpoint) {
                    Ok(url) => Reply::Created(url),
                    Err(v) => Reply::End(v.into()),
                }
            }
            Kind::Head if ok => {
                let length = match metadata::upload_length(headers) {
                    Ok(length) => length,
                    Err(_) => {
                        return Reply::End(
                            ProtocolViolation::MalformedResponse(
                                "the HEAD answer has a malformed Upload-Length",
                            )
                            .into(),
                        );
                    }
                };
                let offset = match metadata::upload_offset(headers) {
                    Ok(offset) => offset,
                    Err(_) => return Reply::End(bad_offset()),
                };
                if let Some(n) = length
                    && n != self.total
                {
                    return Reply::End(
                        ProtocolViolation::LengthDiffers {
                            server: n,
                            source_len: self.total,
                        }
                        .into(),
                    );
                }
                match offset {
                    Some(o) if o > self.total => Reply::End(
                        ProtocolViolation::RangeBeyondSent {
                            claimed: o,
                            sent: self.total,
                        }
                        .into(),
                    ),
                    // Success needs both: the server's length and its offset (U13).
                    Some(o) if o == self.total && length == Some(self.total) => {
                        Reply::Joined(status)
                    }
                    _ => Reply::NotYet,
                }
            }
            Kind::Delete(_)
                if status.is_success()
                    || status == StatusCode::NOT_FOUND
                    || status == StatusCode::GONE =>
            {
                Reply::Deleted
            }
            // U14: the final upload, or a part it names, is gone.
            Kind::Head | Kind::Final
                if status == StatusCode::NOT_FOUND
                    || status == StatusCode::GONE
                    || (status == StatusCode::FORBIDDEN && *kind == Kind::Head) =>
            {
                Reply::End(Error::SessionGone { status })
            }
            _ if policy.retries_status(status) || status.as_u16() == 423 => {
                Reply::Retry(RetryCause::Status(status), after())
            }
            Kind::Delete(_) => Reply::Deleted,
            Kind::Options | Kind::Final | Kind::Head => {
                Reply::End(response::final_error(status, response.body()))
            }
        }
    }

    fn transition(&mut self, now: Instant, flight: Flight<Kind>, reply: Reply) {
        let attempt = Attempt::new(&self.uri_for(&flight.kind), None);
        match (flight.kind, reply) {
            (_, Reply::End(e)) => self.engine.finish(Err(e)),
            (Kind::Options, Reply::Discovered(info)) => self.on_discovered(info),
            (Kind::Final, Reply::Created(url)) => {
                self.final_url = Some(url);
                self.engine.progress();
                self.phase = Phase::FinalHead;
            }
            (Kind::Head, Reply::Joined(status)) => {
                if self.resumed_final {
                    self.engine.stats_mut().resumed_from = Some(self.total);
                }
                let Some(url) = self.final_url.clone() else {
                    return self
                        .engine
                        .finish(Err(Error::Internal("joined without a final URL")));
                };
                self.engine.withdraw_cancel();
                self.engine.finish(Ok(TusCompletion {
                    upload_url: url,
                    size: self.total,
                    status,
                    expires: None,
                }));
            }
            (Kind::Head, Reply::NotYet) => {
                // The server is still joining the parts: ask again after a wait, a bounded
                // number of times.
                if self
                    .engine
                    .retry(now, RetryCause::NoProgress, None, attempt)
                {
                    self.last_retry = Some(RetrySource::Own);
                }
            }
            (Kind::Delete(_), Reply::Deleted) => {
                if let Some(list) = self.deletes.as_mut() {
                    list.remove(0);
                }
            }
            (_, Reply::Retry(cause, after)) => {
                self.engine.retry(now, cause, after, attempt);
                self.last_retry = Some(RetrySource::Own);
            }
            (_, _) => self.engine.finish(Err(Error::Internal(
                "a tus concatenation answer outside its phase",
            ))),
        }
    }

    /// U2, U13: the server must offer creation and concatenation (and what else is asked).
    fn on_discovered(&mut self, info: TusServerInfo) {
        let refusal = if info
            .versions
            .as_ref()
            .is_some_and(|v| !v.iter().any(|v| v == TUS_VERSION))
        {
            Some("tus version 1.0.0")
        } else if !info.offers("creation") {
            Some("creating uploads")
        } else if !info.offers("concatenation") {
            Some("uploading parts in parallel")
        } else if let Some(alg) = self.checksum
            && !(info.offers("checksum")
                && info
                    .checksum_algorithms
                    .as_ref()
                    .is_some_and(|a| a.iter().any(|a| a == alg.name())))
        {
            Some("the checksum asked for")
        } else if info.max_size.is_some_and(|max| self.total > max) {
            Some("uploads of this size")
        } else {
            None
        };
        for part in &mut self.parts {
            part.upload.adopt_server(info.clone());
        }
        self.server = Some(info);
        match refusal {
            Some(what) => self.engine.finish(Err(Error::Unsupported(what))),
            None => {
                self.engine.progress();
                self.phase = if self.final_url.is_some() {
                    Phase::FinalHead
                } else {
                    Phase::Parts
                };
            }
        }
    }

    /// The cancel phase: the parts end themselves; then the finished parts and the final
    /// upload are deleted, where the server terminates uploads (U12).
    fn poll_cancel(&mut self, now: Instant) -> Action<TusCompletion> {
        if let Some(action) = self.poll_parts(now) {
            return action;
        }
        if self.deletes.is_none() {
            let mut list: Vec<SessionUri> = Vec::new();
            if self.offers("termination") {
                list.extend(
                    self.parts
                        .iter()
                        .filter_map(|p| p.upload.completion())
                        .map(|c| c.upload_url.clone()),
                );
                list.extend(self.final_url.clone());
            }
            self.deletes = Some(list);
        }
        if !self.engine.flights().is_empty() {
            return Action::Idle;
        }
        match self.deletes.as_ref().and_then(|l| l.first()).cloned() {
            Some(url) => self.send(now, Kind::Delete(url)),
            None => {
                self.engine.finish(Err(Error::Cancelled));
                self.poll_action(now)
            }
        }
    }

    /// The part an id belongs to (`None`: the parallel upload's own).
    fn route(&self, id: RequestId) -> Option<usize> {
        let step = self.parts.len() as u64 + 1;
        match id.get() % step {
            0 => None,
            i => Some(i as usize - 1),
        }
    }

    /// Notes where the last retry came from, after part `i` took an input.
    fn note_part_retry(&mut self, i: usize, before: u64) {
        if self.parts[i].upload.stats().retries > before {
            self.last_retry = Some(RetrySource::Part(i));
        }
    }
}

/// `total` bytes in `parts` ranges of nearly equal size (fewer ranges when there are fewer
/// bytes; one empty range for an empty source).
fn split(total: u64, parts: u32) -> Vec<Range<u64>> {
    let n = u64::from(parts).min(total.max(1));
    let (size, extra) = (total / n, total % n);
    let mut start = 0;
    (0..n)
        .map(|i| {
            let end = start + size + u64::from(i < extra);
            let r = start..end;
            start = end;
            r
        })
        .collect()
}

impl Upload for TusParallelUpload {
    type Output = TusCompletion;
    type State = TusParallelResumeState;

    fn poll_action(&mut self, now: Instant) -> Action<TusCompletion> {
        if let Some(action) = self.engine.poll_head(now) {
            return action;
        }
        if self.engine.cancel_requested() && self.phase != Phase::Cancel {
            if !self.engine.flights().is_empty() {
                return Action::Idle;
            }
            self.phase = Phase::Cancel;
            for part in &mut self.parts {
                part.upload.cancel();
            }
        }
        match self.phase {
            Phase::Discover | Phase::Final | Phase::FinalHead
                if !self.engine.flights().is_empty() =>
            {
                Action::Idle
            }
            Phase::Discover => self.send(now, Kind::Options),
            Phase::Parts => match self.poll_parts(now) {
                Some(action) => action,
                None => {
                    self.phase = Phase::Final;
                    self.poll_action(now)
                }
            },
            Phase::Final => self.send(now, Kind::Final),
            Phase::FinalHead => self.send(now, Kind::Head),
            Phase::Cancel => self.poll_cancel(now),
        }
    }

    /// One request per part at a time (U4), so as many as there are parts.
    fn max_in_flight(&self) -> usize {
        self.parts.len()
    }

    /// Every part's range and saved upload, and the final upload's URL once created (U15);
    /// `None` before anything exists on the server, and once the upload has succeeded.
    fn resume_state(&self) -> Option<TusParallelResumeState> {
        if matches!(self.engine.outcome(), Some(Ok(_))) {
            return None;
        }
        let parts: Vec<TusPartState> = self
            .parts
            .iter()
            .map(|p| {
                let len = p.range.end - p.range.start;
                let upload = match p.upload.completion() {
                    // The part is complete: saved as such, and asked again on resume.
                    Some(c) => Some(TusResumeState {
                        upload_url: c.upload_url.clone(),
                        total: Some(len),
                        length_declared: true,
                        persisted: len,
                        sent: Some(len),
                        metadata: None,
                        expires: c.expires.clone(),
                        fingerprint: self.fingerprint.clone(),
                    }),
                    None => p.upload.resume_state(),
                };
                TusPartState {
                    start: p.range.start,
                    end: p.range.end,
                    upload,
                }
            })
            .collect();
        if self.final_url.is_none() && parts.iter().all(|p| p.upload.is_none()) {
            return None;
        }
        Some(TusParallelResumeState {
            total: self.total,
            parts,
            final_url: self.final_url.clone(),
            fingerprint: self.fingerprint.clone(),
        })
    }

    /// Asks the upload to stop: once the requests in flight are answered, each unfinished
    /// part is DELETEd (U12), then the finished parts and the final upload, where the server
    /// offers termination; the outcome is [`Error::Cancelled`]. A completion that arrives
    /// first still wins.
    fn cancel(&mut self) {
        self.engine.request_cancel();
        self.engine.clear_wait();
    }

    fn stats(&self) -> Stats {
        let mut stats = self.engine.stats();
        let mut resumed: Option<u64> = stats.resumed_from;
        for part in &self.parts {
            let s = part.upload.stats();
            stats.requests += s.requests;
            stats.retries += s.retries;
            stats.bytes_sent += s.bytes_sent;
            stats.status_polls += s.status_polls;
            if self.engine.stats().resumed_from.is_none()
                && let Some(r) = s.resumed_from
            {
                resumed = Some(resumed.unwrap_or(0) + r);
            }
        }
        stats.resumed_from = resumed;
        stats
    }

    fn progress(&self) -> Progress {
        Progress {
            acknowledged: self.persisted(),
            in_flight: self
                .parts
                .iter()
                .map(|p| p.upload.progress().in_flight)
                .sum::<u64>()
                + self.engine.in_flight_bytes(),
            total: Some(self.total),
        }
    }

    fn persisted(&self) -> u64 {
        if matches!(self.engine.outcome(), Some(Ok(_))) {
            return self.total;
        }
        self.parts.iter().map(|p| p.upload.persisted()).sum()
    }

    /// The lowest offset an unfinished part may still read or send.
    fn retained_from(&self) -> u64 {
        self.parts
            .iter()
            .filter(|p| p.upload.completion().is_none())
            .map(|p| p.range.start + p.upload.retained_from())
            .min()
            .unwrap_or(self.total)
            .min(self.persisted())
    }

    fn last_retry(&self) -> Option<&Retrying> {
        match self.last_retry? {
            RetrySource::Own => self.engine.last_retry(),
            RetrySource::Part(i) => self.parts.get(i)?.upload.last_retry(),
        }
    }

    fn handle_read(&mut self, now: Instant, offset: u64, bytes: &[u8]) -> Result<(), UsageError> {
        if self.engine.is_done() {
            return Err(UsageError::Finished);
        }
        let Some(i) = self.reading else {
            return Err(UsageError::UnexpectedRead {
                offset,
                expected: "no read was asked for",
            });
        };
        let base = self.parts[i].range.start;
        if offset < base {
            return Err(UsageError::UnexpectedRead {
                offset,
                expected: "the read starts elsewhere",
            });
        }
        let before = self.parts[i].upload.stats().retries;
        self.parts[i]
            .upload
            .handle_read(now, offset - base, bytes)?;
        self.note_part_retry(i, before);
        Ok(())
    }

    fn handle_response(
        &mut self,
        now: Instant,
        id: RequestId,
        response: Response<Bytes>,
    ) -> Result<(), UsageError> {
        if self.engine.is_done() {
            return Err(UsageError::Finished);
        }
        match self.route(id) {
            None => {
                let flight = self.engine.take(id)?;
                let reply = self.classify(&flight.kind, &response);
                self.transition(now, flight, reply);
            }
            Some(i) => {
                let part = self
                    .parts
                    .get_mut(i)
                    .ok_or(UsageError::UnknownRequest(id.get()))?;
                let before = part.upload.stats().retries;
                part.upload.handle_response(now, id, response)?;
                self.note_part_retry(i, before);
            }
        }
        Ok(())
    }

    fn handle_failure(
        &mut self,
        now: Instant,
        id: RequestId,
        failure: TransportFailure,
    ) -> Result<(), UsageError> {
        if self.engine.is_done() {
            return Err(UsageError::Finished);
        }
        match self.route(id) {
            None => {
                let flight = self.engine.take(id)?;
                // Every own request may go again: a lost final answer creates another final
                // upload from the same parts (the first is orphaned).
                let reply = Reply::Retry(RetryCause::Transport(failure), None);
                self.transition(now, flight, reply);
            }
            Some(i) => {
                let part = self
                    .parts
                    .get_mut(i)
                    .ok_or(UsageError::UnknownRequest(id.get()))?;
                let before = part.upload.stats().retries;
                part.upload.handle_failure(now, id, failure)?;
                self.note_part_retry(i, before);
            }
        }
        Ok(())
    }
}
