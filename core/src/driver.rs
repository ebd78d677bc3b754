//! The half of a driver that does no I/O, shared by every driver: the events it reports, how
//! far a body has gone, the `Content-Length` contract, read sizing, and the requests it owes
//! an outcome.
//!
//! A driver is a loop around a [`Pilot`] that does only the I/O:
//!
//! 1. [`Pilot::start`] at the start of a drive; [`Pilot::next`] polls the upload and says what to do: a [`Step`].
//! 2. `Step::Read { offset, max }`: read up to `max` bytes at `offset`, hand them to
//!    [`Pilot::read`], and let the source drop what lies below [`Upload::retained_from`].
//! 3. `Step::Send(transmit)`: sign it if the caller wants, call [`Pilot::sending`] (which checks
//!    the `Content-Length` contract and returns a [`Sending`] to track the body), report
//!    [`Event::Sending`], and send it. As the transport takes body bytes, report them with
//!    [`Pilot::piece`] (source bytes, when the upload asked for them) and [`Pilot::taken`]
//!    (progress). When the exchange ends, hand its result to [`Pilot::outcome`].
//! 4. `Step::Wait { until, .. }`: sleep until `until`, or until a request in flight ends.
//!    `Step::Idle`: wait for a request in flight to end. Then poll again.
//! 5. `Step::Done(result)`: return it.
//!
//! Every call that changes the upload returns the [`Event`] to report to the caller's hook.
//! A driver stopped part-way (an interrupt, a dropped future) keeps its `Pilot`: at the start
//! of the next drive, [`Pilot::start`] makes [`Pilot::next`] tell the upload that the requests
//! it never got an outcome for failed ([`TransportFailure::Reset`], each a [`Step::Report`]),
//! so the upload asks the server what it holds.

use std::io;
use std::ops::Range;
use std::time::Instant;

use bytes::Bytes;
use http::StatusCode;
use http::header::{CONTENT_LENGTH, TRANSFER_ENCODING};

use crate::action::{Action, RequestId, Transmit, TransportFailure, Upload};
use crate::error::UsageError;

/// The most source bytes handed to the upload per `Read`, and read per body piece, by
/// default: 64 KiB.
pub const READ_PIECE: usize = 64 * 1024;

/// An error returned by a caller's hook; it ends the drive as [`DriveError::Hook`].
pub type HookError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// An error a stream source yielded.
pub type StreamError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// Why the source could not give the bytes the upload asked for.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SourceError {
    /// Reading (or seeking) the source failed.
    #[error("reading the source at byte {offset} failed: {source}")]
    Io {
        /// Where the read started.
        offset: u64,
        /// The I/O error.
        #[source]
        source: io::Error,
    },
    /// A stream source yielded an error.
    #[error("the source stream failed at byte {offset}: {source}")]
    Stream {
        /// The first byte not yet received.
        offset: u64,
        /// The stream's error.
        #[source]
        source: StreamError,
    },
    /// The source ended before the end of a range a request must send (it shrank, or is
    /// shorter than the size the upload was given).
    #[error("the source ended at byte {ended_at}, but a request needs its bytes up to {needed}")]
    Ended {
        /// Where the source ended.
        ended_at: u64,
        /// The end of the range that was needed.
        needed: u64,
    },
    /// A non-seekable source was asked for bytes it no longer keeps. The upload cannot go on
    /// from this stream; it could from a seekable copy of the data.
    #[error(
        "source bytes from {offset} are needed again, but a non-seekable source keeps only the \
         bytes from {window_start} on"
    )]
    NotBuffered {
        /// The first byte asked for.
        offset: u64,
        /// The first byte still kept.
        window_start: u64,
    },
}

/// Why a drive returned without the upload's output.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DriveError {
    /// The upload itself ended without success (the server refused, the session is gone,
    /// retries ran out, it was cancelled…). Whether it can be resumed later:
    /// [`crate::Error::is_resumable`].
    #[error(transparent)]
    Upload(#[from] crate::Error),
    /// The source could not give the bytes the upload needs. The upload was told its request
    /// failed, so it stays resumable.
    #[error(transparent)]
    Source(#[from] SourceError),
    /// The upload refused an input from the driver: a bug in the driver or the core.
    #[error("driver error: {0}")]
    Usage(#[from] UsageError),
    /// The upload asked for something the driver cannot do (for example a request whose
    /// `Content-Length` differs from its body's length): a bug in the core.
    #[error("the upload broke the driver contract: {0}")]
    Contract(&'static str),
    /// The driver was interrupted (its interrupt flag was raised). The upload was not
    /// cancelled: its session and saved resume state stay valid, and it can be resumed.
    #[error("interrupted")]
    Interrupted,
    /// The caller's hook returned an error. If it came during a request, the request was
    /// stopped and the upload told so; the upload stays resumable.
    #[error("hook failed: {0}")]
    Hook(#[source] HookError),
}

/// Why a driver stopped a request body part-way, rather than the transport.
#[derive(Debug)]
#[non_exhaustive]
pub enum Stop {
    /// The source could not give the bytes the body needs.
    Source(SourceError),
    /// The caller's hook failed.
    Hook(HookError),
    /// The interrupt flag was raised.
    Interrupted,
    /// The upload refused the sent bytes the driver handed in: a driver bug.
    Usage(UsageError),
}

impl From<Stop> for DriveError {
    fn from(stop: Stop) -> Self {
        match stop {
            Stop::Source(e) => DriveError::Source(e),
            Stop::Hook(e) => DriveError::Hook(e),
            Stop::Interrupted => DriveError::Interrupted,
            Stop::Usage(e) => DriveError::Usage(e),
        }
    }
}

/// How far a request body has been sent, in [`Event::Progress`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct BodyProgress {
    /// The request being sent.
    pub request: RequestId,
    /// Body bytes of this request taken by the transport so far.
    pub body_sent: u64,
    /// The body's length.
    pub body_len: u64,
    /// The source offset reached: the request's source range start plus its source bytes
    /// sent (a progress bar's position; it goes back when bytes are sent again).
    pub source_position: u64,
    /// Body bytes taken by the transport during this drive, over all requests (bytes sent
    /// again count again).
    pub total_sent: u64,
    /// Source bytes the server has acknowledged ([`Upload::persisted`]).
    pub persisted: u64,
}

/// What just happened, reported to the caller's hook.
#[derive(Debug)]
#[non_exhaustive]
pub enum Event<'a> {
    /// Source bytes were handed to the upload for a `Read`; an empty range says the source
    /// ends at its start.
    SourceRead {
        /// The bytes handed in.
        range: Range<u64>,
    },
    /// The request is about to be sent: no byte of it has left yet. The upload already counts
    /// its bytes as possibly stored: save its resume state now ([`Upload::resume_state`]), so
    /// that a later run, after a crash or an interrupt, never resumes behind what the server
    /// may hold.
    Sending {
        /// The request (its URI and headers are secrets: `Debug` redacts them; do not log
        /// them otherwise).
        send: &'a Transmit,
    },
    /// The transport took more body bytes.
    Progress(BodyProgress),
    /// A response was handed to the upload (the persisted count may have changed: save the
    /// resume state).
    Response {
        /// The request it answered.
        request: RequestId,
        /// Its status.
        status: StatusCode,
    },
    /// A failure was handed to the upload: the transport's, or [`TransportFailure::Reset`] for
    /// a request the driver stopped. A retry (after a status query) follows if the retry
    /// policy allows.
    Failure {
        /// The request that failed.
        request: RequestId,
        /// How.
        failure: TransportFailure,
    },
    /// The upload waits until `until` before its next request (a retry backoff or a
    /// processing delay); reported once per wait.
    Waiting {
        /// When the wait ends.
        until: Instant,
    },
}

/// What the driver does next, from [`Pilot::next`].
#[derive(Debug)]
#[must_use = "the driver must carry out the step"]
#[allow(clippy::large_enum_variant)]
pub enum Step<T> {
    /// Read up to `max` source bytes at `offset` and hand them to [`Pilot::read`] (an empty
    /// slice: the source ends at `offset`).
    Read {
        /// Where to read.
        offset: u64,
        /// The most bytes to hand in (at least 1).
        max: usize,
    },
    /// Send this request: call [`Pilot::sending`] first (after signing it, if the caller
    /// wants), then hand the exchange's result to [`Pilot::outcome`].
    Send(Transmit),
    /// Nothing to do until `until` or until a request in flight ends, whichever is first.
    /// `first` is true the first time a wait until this instant is returned: report
    /// [`Event::Waiting`] then.
    Wait {
        /// When the wait ends.
        until: Instant,
        /// Whether this wait is new.
        first: bool,
    },
    /// Requests are in flight and nothing else is due: wait for one to end.
    Idle,
    /// Report this event (a request of an earlier drive, never answered, was handed to the
    /// upload as failed), then poll again.
    Report(Event<'static>),
    /// The upload is over.
    Done(Result<T, DriveError>),
}

/// A request being sent: what [`Pilot::piece`], [`Pilot::taken`] and [`Pilot::outcome`] need to
/// know about it.
#[derive(Clone, Debug)]
pub struct Sending {
    /// The request's id.
    pub id: RequestId,
    /// Its body's length.
    pub body_len: u64,
    /// The bytes before the source range.
    pub prefix: Bytes,
    /// The source range of the body.
    pub source: Range<u64>,
    /// The bytes after the source range.
    pub suffix: Bytes,
    /// Whether the upload wants the body's source bytes as they go out.
    pub report_sent: bool,
    taken: u64,
}

impl Sending {
    /// Body bytes the transport has taken so far.
    pub fn taken(&self) -> u64 {
        self.taken
    }
}

/// The driver's own bookkeeping around an [`Upload`]: see the [module docs](self).
#[derive(Debug)]
pub struct Pilot {
    read_piece: usize,
    total_sent: u64,
    last_wait: Option<Instant>,
    /// The time of the last [`Pilot::next`]: when a request handed out then starts.
    now: Option<Instant>,
    /// Requests handed to the transport whose outcome the upload has not been told, with when
    /// they started (for the logs).
    owed: Vec<(RequestId, Option<Instant>)>,
    /// Requests of an earlier drive that will never be answered, to report as failed.
    abandoned: Vec<RequestId>,
}

impl Default for Pilot {
    fn default() -> Self {
        Pilot::new(READ_PIECE)
    }
}

impl Pilot {
    /// A pilot handing the upload at most `read_piece` bytes per `Read` (at least 1).
    pub fn new(read_piece: usize) -> Self {
        Pilot {
            read_piece: read_piece.max(1),
            total_sent: 0,
            last_wait: None,
            now: None,
            owed: Vec::new(),
            abandoned: Vec::new(),
        }
    }

    /// The most bytes per `Read`, and per body piece.
    pub fn read_piece(&self) -> usize {
        self.read_piece
    }

    /// How many requests are out: handed to [`Pilot::sending`] and not yet to
    /// [`Pilot::outcome`].
    pub fn in_flight(&self) -> usize {
        self.owed.len()
    }

    /// Call at the start of every drive: requests still out from an earlier drive that
    /// stopped part-way (an interrupt, a dropped future) will never be answered, and the next
    /// calls of [`Pilot::next`] report them to the upload as failed.
    pub fn start(&mut self) {
        self.abandoned.extend(self.owed.drain(..).map(|(id, _)| id));
    }

    /// Polls `upload` and says what to do next. Call it when the driver has nothing else to
    /// do: at the start, after every step, and whenever a request in flight ends.
    pub fn next<U: Upload>(&mut self, upload: &mut U, now: Instant) -> Step<U::Output> {
        self.now = Some(now);
        if let Some(request) = self.abandoned.pop() {
            let failure = TransportFailure::Reset;
            // The upload may have ended meanwhile: nothing is owed then.
            if upload.handle_failure(now, request, failure).is_ok() {
                return Step::Report(Event::Failure { request, failure });
            }
        }
        match upload.poll_action(now) {
            Action::Read(read) => {
                let range = read.range;
                if range.end <= range.start {
                    return Step::Done(Err(DriveError::Contract("asked to read an empty range")));
                }
                let max = usize::try_from(range.end - range.start)
                    .unwrap_or(usize::MAX)
                    .min(self.read_piece);
                Step::Read {
                    offset: range.start,
                    max,
                }
            }
            Action::Send(transmit) => Step::Send(transmit),
            Action::Wait(until) => {
                let first = self.last_wait != Some(until);
                self.last_wait = Some(until);
                #[cfg(feature = "tracing")]
                if first {
                    log::wait(upload, now, until);
                }
                Step::Wait { until, first }
            }
            Action::Idle if self.owed.is_empty() => Step::Done(Err(DriveError::Contract(
                "the upload waits for an answer to a request the driver never got",
            ))),
            Action::Idle => Step::Idle,
            Action::Done(outcome) => Step::Done(outcome.map_err(DriveError::Upload)),
        }
    }

    /// Hands the bytes read for a [`Step::Read`] at `offset` to the upload (at most the step's
    /// `max` of them are used). Then let the source release what lies below
    /// [`Upload::retained_from`], and report the event.
    ///
    /// # Errors
    /// [`DriveError::Usage`] when the upload refuses them (a driver bug).
    pub fn read<U: Upload>(
        &mut self,
        upload: &mut U,
        now: Instant,
        offset: u64,
        bytes: &[u8],
    ) -> Result<Event<'static>, DriveError> {
        let bytes = &bytes[..bytes.len().min(self.read_piece)];
        upload.handle_read(now, offset, bytes)?;
        Ok(Event::SourceRead {
            range: offset..offset + bytes.len() as u64,
        })
    }

    /// The request is about to be handed to the transport (after the caller's signing hook):
    /// checks that it says `Content-Length: <body length>` (filling it in when missing) and
    /// carries no transfer coding, so every transport sends it length-delimited (G4), and
    /// counts it as out. Report [`Event::Sending`] next, then send it.
    ///
    /// # Errors
    /// [`DriveError::Contract`] when the request breaks the contract (a bug in the core or
    /// the caller's hook); it was not counted as out, so the upload is told nothing.
    pub fn sending(&mut self, transmit: &mut Transmit) -> Result<Sending, DriveError> {
        check_content_length(transmit)?;
        self.owed.push((transmit.id, self.now));
        #[cfg(feature = "tracing")]
        log::request(transmit);
        Ok(Sending {
            id: transmit.id,
            body_len: transmit.body.len(),
            prefix: transmit.body.prefix.clone(),
            source: transmit.body.source.clone(),
            suffix: transmit.body.suffix.clone(),
            report_sent: transmit.report_sent,
            taken: 0,
        })
    }

    /// Source bytes of the body of `sending`, starting at source `offset`, were handed to the
    /// transport: the upload sees them if it asked to ([`Transmit::report_sent`]).
    ///
    /// # Errors
    /// [`Stop::Usage`] when the upload refuses them (a driver bug): stop the body.
    pub fn piece<U: Upload>(
        &mut self,
        upload: &mut U,
        sending: &Sending,
        offset: u64,
        bytes: &[u8],
    ) -> Result<(), Stop> {
        if sending.report_sent && !bytes.is_empty() {
            upload
                .handle_sent(sending.id, offset, bytes)
                .map_err(Stop::Usage)?;
        }
        Ok(())
    }

    /// The transport has taken `taken` body bytes of `sending` so far: the progress event to
    /// report, if it moved.
    pub fn taken<U: Upload>(
        &mut self,
        upload: &U,
        sending: &mut Sending,
        taken: u64,
    ) -> Option<Event<'static>> {
        let taken = taken.min(sending.body_len);
        if taken <= sending.taken {
            return None;
        }
        self.total_sent += taken - sending.taken;
        sending.taken = taken;
        let source_len = sending.source.end.saturating_sub(sending.source.start);
        let source_sent = taken
            .saturating_sub(sending.prefix.len() as u64)
            .min(source_len);
        Some(Event::Progress(BodyProgress {
            request: sending.id,
            body_sent: taken,
            body_len: sending.body_len,
            source_position: sending.source.start + source_sent,
            total_sent: self.total_sent,
            persisted: upload.persisted(),
        }))
    }

    /// The exchange for `id` ended: hands its response, or its failure, to the upload. A
    /// request the driver stopped (`None`) failed as far as the upload can tell. Then let the
    /// source release what lies below [`Upload::retained_from`], and report the event.
    ///
    /// # Errors
    /// [`DriveError::Usage`] when the upload refuses it (a driver bug).
    pub fn outcome<U: Upload>(
        &mut self,
        upload: &mut U,
        now: Instant,
        id: RequestId,
        exchange: Option<Result<http::Response<Bytes>, TransportFailure>>,
    ) -> Result<Event<'static>, DriveError> {
        let started = match self.owed.iter().position(|owed| owed.0 == id) {
            Some(at) => self.owed.swap_remove(at).1,
            None => None,
        };
        let took = started.map(|t| now.saturating_duration_since(t));
        #[cfg(feature = "tracing")]
        log::outcome(id, took, &exchange);
        #[cfg(not(feature = "tracing"))]
        let _ = took;
        match exchange.unwrap_or(Err(TransportFailure::Reset)) {
            Ok(response) => {
                let status = response.status();
                upload.handle_response(now, id, response)?;
                Ok(Event::Response {
                    request: id,
                    status,
                })
            }
            Err(failure) => {
                upload.handle_failure(now, id, failure)?;
                Ok(Event::Failure {
                    request: id,
                    failure,
                })
            }
        }
    }
}

/// The `tracing` events of a drive: targets `resumable::http` (a `debug` line per request and
/// per answer, an `info` line per failed exchange) and `resumable::retry` (an `info` line per
/// retry, a `debug` line per other wait). URIs and headers go through the redacting views of
/// [`crate::secret`]: no credential, signature, upload id or session URI appears.
#[cfg(feature = "tracing")]
mod log {
    use std::time::{Duration, Instant};

    use bytes::Bytes;

    use crate::action::{RequestId, Transmit, TransportFailure, Upload};
    use crate::secret::{LoggedHeaders, LoggedUri};

    pub(super) fn request(t: &Transmit) {
        tracing::debug!(
            target: "resumable::http",
            request = t.id.get(),
            body_bytes = t.body.len(),
            "> {} {} ({} body bytes) {}",
            t.request.method(),
            LoggedUri(t.request.uri()),
            t.body.len(),
            LoggedHeaders(t.request.headers()),
        );
    }

    pub(super) fn outcome(
        id: RequestId,
        took: Option<Duration>,
        exchange: &Option<Result<http::Response<Bytes>, TransportFailure>>,
    ) {
        let ms = took.map_or(0, |d| d.as_millis());
        match exchange {
            Some(Ok(response)) => tracing::debug!(
                target: "resumable::http",
                request = id.get(),
                status = response.status().as_u16(),
                ms,
                "< {} in {ms} ms ({} body bytes) {}",
                response.status(),
                response.body().len(),
                LoggedHeaders(response.headers()),
            ),
            Some(Err(failure)) => tracing::info!(
                target: "resumable::http",
                request = id.get(),
                ms,
                "request {} failed after {ms} ms: {failure}",
                id.get(),
            ),
            None => tracing::info!(
                target: "resumable::http",
                request = id.get(),
                "request {} was stopped before its answer",
                id.get(),
            ),
        }
    }

    pub(super) fn wait<U: Upload>(upload: &U, now: Instant, until: Instant) {
        let ms = until.saturating_duration_since(now).as_millis();
        match upload.last_retry().filter(|r| r.until == until) {
            Some(r) => tracing::info!(
                target: "resumable::retry",
                attempt = r.attempt,
                max_attempts = r.max_attempts,
                wait_ms = r.wait.as_millis(),
                "{}; retrying in {:.1} s, attempt {} of {}",
                r.cause_in_words(),
                r.wait.as_secs_f64(),
                r.attempt,
                r.max_attempts,
            ),
            None => tracing::debug!(target: "resumable::retry", wait_ms = ms, "waiting {ms} ms"),
        }
    }
}

/// The request must say `Content-Length: <body length>` and use no transfer coding (G4).
fn check_content_length(send: &mut Transmit) -> Result<(), DriveError> {
    let len = send.body.len();
    let headers = send.request.headers_mut();
    if headers.contains_key(TRANSFER_ENCODING) {
        return Err(DriveError::Contract("a request carries Transfer-Encoding"));
    }
    let mut values = headers.get_all(CONTENT_LENGTH).iter();
    match (values.next(), values.next()) {
        (None, _) => {
            headers.insert(CONTENT_LENGTH, len.into());
            Ok(())
        }
        (Some(value), None) => {
            let declared = value
                .to_str()
                .ok()
                .and_then(|text| text.trim().parse::<u64>().ok());
            if declared == Some(len) {
                Ok(())
            } else {
                Err(DriveError::Contract(
                    "a request's Content-Length differs from its body's length",
                ))
            }
        }
        (Some(_), Some(_)) => Err(DriveError::Contract(
            "a request carries several Content-Length headers",
        )),
    }
}

/// Where a progress bar stands, however many requests are in flight: the acknowledged
/// prefix ([`Upload::persisted`]), plus the source bytes of answered requests above it, plus
/// what each request in flight has sent so far. With one request in flight it is that
/// request's [`BodyProgress::source_position`]; with several it does not jump back and forth
/// between them.
///
/// Feed it every [`Event`] with the upload's persisted count at that moment; each call returns
/// the position to show. It is for display only: what the upload holds is `persisted`.
#[derive(Clone, Debug, Default)]
pub struct Position {
    /// Requests in flight: their source range and the source bytes sent so far.
    flights: Vec<(RequestId, Range<u64>, u64)>,
    /// Source ranges of requests answered with a success, not yet below `persisted`.
    answered: Vec<Range<u64>>,
}

impl Position {
    /// Takes in `event` and returns the position to show.
    pub fn observe(&mut self, event: &Event<'_>, persisted: u64) -> u64 {
        match event {
            Event::Sending { send } => {
                self.flights.retain(|f| f.0 != send.id);
                self.flights.push((send.id, send.body.source.clone(), 0));
            }
            Event::Progress(p) => {
                if let Some(f) = self.flights.iter_mut().find(|f| f.0 == p.request) {
                    f.2 = p.source_position.saturating_sub(f.1.start);
                }
            }
            Event::Response { request, status } => {
                if let Some(at) = self.flights.iter().position(|f| f.0 == *request) {
                    let (_, range, _) = self.flights.swap_remove(at);
                    if status.is_success() && !range.is_empty() && !self.answered.contains(&range) {
                        self.answered.push(range);
                    }
                }
            }
            Event::Failure { request, .. } => self.flights.retain(|f| f.0 != *request),
            _ => {}
        }
        self.answered.retain(|r| r.end > persisted);
        let above = |r: &Range<u64>| r.end.saturating_sub(r.start.max(persisted));
        let answered: u64 = self.answered.iter().map(above).sum();
        let sending: u64 = self
            .flights
            .iter()
            .map(|(_, r, sent)| above(&(r.start..r.end.min(r.start.saturating_add(*sent)))))
            .sum();
        persisted.saturating_add(answered).saturating_add(sending)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gcs::{GcsConfig, GcsUpload, Start};

    fn gcs(size: u64) -> GcsUpload {
        let start = Start::Xml {
            url: "https://storage.example/b/o?X-Goog-Signature=x"
                .parse()
                .unwrap(),
            content_type: http::HeaderValue::from_static("text/plain"),
        };
        GcsUpload::new(start, GcsConfig::new(Some(size))).unwrap()
    }

    /// The upload's first request (the XML start: `Content-Length: 0`, empty body).
    fn start_request() -> Transmit {
        match Pilot::default().next(&mut gcs(10), Instant::now()) {
            Step::Send(send) => send,
            other => panic!("expected the start request, got {other:?}"),
        }
    }

    // G4: a request goes out only if its Content-Length is its body's length; a missing one
    // is filled in, a wrong one, a repeated one or a transfer coding is the core's bug.
    #[test]
    fn content_length_must_match_the_body() {
        let mut pilot = Pilot::default();
        let mut send = start_request();
        assert!(pilot.sending(&mut send).is_ok());

        send.request.headers_mut().remove(CONTENT_LENGTH);
        check_content_length(&mut send).unwrap();
        assert_eq!(send.request.headers()[CONTENT_LENGTH], "0");

        send.request
            .headers_mut()
            .insert(CONTENT_LENGTH, http::HeaderValue::from_static("5"));
        assert!(matches!(
            pilot.sending(&mut send),
            Err(DriveError::Contract(_))
        ));

        let mut send = start_request();
        send.request
            .headers_mut()
            .append(CONTENT_LENGTH, http::HeaderValue::from_static("0"));
        assert!(matches!(
            check_content_length(&mut send),
            Err(DriveError::Contract(_))
        ));

        let mut send = start_request();
        send.request
            .headers_mut()
            .insert(TRANSFER_ENCODING, http::HeaderValue::from_static("chunked"));
        assert!(matches!(
            check_content_length(&mut send),
            Err(DriveError::Contract(_))
        ));
        // Two checked sends, one refused: only the checked ones are owed an outcome.
        assert_eq!(pilot.in_flight(), 1);
    }

    // Events and errors never carry URIs or header values.
    #[test]
    fn events_and_errors_name_no_secrets() {
        let send = start_request();
        let debug = format!("{:?}", Event::Sending { send: &send });
        assert!(!debug.contains("X-Goog-Signature"), "{debug}");
        let message = DriveError::Contract("a request carries Transfer-Encoding").to_string();
        assert!(!message.contains("storage.example"));
    }

    // A read is never longer than the piece size, and what is handed in is cut to it.
    #[test]
    fn reads_are_sized_to_the_piece() {
        let start = Start::Xml {
            url: "https://storage.example/b/o?X-Goog-Signature=x"
                .parse()
                .unwrap(),
            content_type: http::HeaderValue::from_static("text/plain"),
        };
        // A source of unknown size: the upload reads before it sends.
        let mut upload = GcsUpload::new(start, GcsConfig::new(None)).unwrap();
        let mut pilot = Pilot::new(100);
        let now = Instant::now();
        for _ in 0..4 {
            match pilot.next(&mut upload, now) {
                Step::Read { offset, max } => {
                    assert_eq!(max, 100);
                    let event = pilot.read(&mut upload, now, offset, &[0; 300]).unwrap();
                    let Event::SourceRead { range } = event else {
                        panic!("not a read event");
                    };
                    assert_eq!(range, offset..offset + 100);
                    return;
                }
                Step::Send(mut send) => {
                    let sending = pilot.sending(&mut send).unwrap();
                    let response = http::Response::builder()
                        .status(201)
                        .header("location", "https://storage.example/s?upload_id=1")
                        .body(Bytes::new())
                        .unwrap();
                    pilot
                        .outcome(&mut upload, now, sending.id, Some(Ok(response)))
                        .unwrap();
                }
                other => panic!("unexpected {other:?}"),
            }
        }
        panic!("the upload never asked to read");
    }

    // Progress counts each body byte once, across requests, and says where in the source the
    // body has come.
    #[test]
    fn progress_counts_taken_bytes_once() {
        let mut pilot = Pilot::default();
        let upload = gcs(10);
        let mut send = start_request();
        send.body = crate::Body {
            prefix: Bytes::from_static(b"ab"),
            source: 100..110,
            suffix: Bytes::from_static(b"z"),
        };
        send.request.headers_mut().remove(CONTENT_LENGTH);
        let mut sending = pilot.sending(&mut send).unwrap();
        let Some(Event::Progress(p)) = pilot.taken(&upload, &mut sending, 5) else {
            panic!("no progress");
        };
        assert_eq!((p.body_sent, p.source_position, p.total_sent), (5, 103, 5));
        assert!(pilot.taken(&upload, &mut sending, 5).is_none());
        let Some(Event::Progress(p)) = pilot.taken(&upload, &mut sending, 99) else {
            panic!("no progress");
        };
        assert_eq!(
            (p.body_sent, p.source_position, p.total_sent),
            (13, 110, 13)
        );
    }

    // A request the driver handed out but never reported (a dropped future, an interrupt) is
    // reported as failed at the start of the next drive, so the upload queries the server
    // instead of waiting forever (G8).
    #[test]
    fn owed_requests_fail_at_the_next_drive() {
        let mut pilot = Pilot::default();
        let mut upload = gcs(10);
        let now = Instant::now();
        pilot.start();
        let Step::Send(mut send) = pilot.next(&mut upload, now) else {
            panic!("expected the start");
        };
        let sending = pilot.sending(&mut send).unwrap();
        // The drive stops here; the next one starts.
        assert_eq!(pilot.in_flight(), 1);
        pilot.start();
        match pilot.next(&mut upload, now) {
            Step::Report(Event::Failure { request, failure }) => {
                assert_eq!((request, failure), (sending.id, TransportFailure::Reset));
            }
            other => panic!("expected the abandoned request's failure, got {other:?}"),
        }
        assert_eq!(pilot.in_flight(), 0);
        let step = pilot.next(&mut upload, now);
        assert!(
            matches!(step, Step::Wait { .. } | Step::Send(_)),
            "the upload retries the start: {step:?}"
        );
        assert_eq!(upload.stats().retries, 1);
    }

    #[test]
    fn position_adds_up_requests_in_flight_and_answered_above_the_prefix() {
        let transmit = |n: u64, range: Range<u64>| {
            Transmit::new(
                RequestId::new(n),
                http::Method::POST,
                "http://media.example/upload".parse().unwrap(),
                http::HeaderMap::new(),
                crate::action::Body::source(range),
            )
        };
        let progress = |n: u64, source_position: u64| {
            Event::Progress(BodyProgress {
                request: RequestId::new(n),
                body_sent: 0,
                body_len: 0,
                source_position,
                total_sent: 0,
                persisted: 0,
            })
        };
        let ok = |n: u64| Event::Response {
            request: RequestId::new(n),
            status: StatusCode::NO_CONTENT,
        };
        let (a, b, c) = (transmit(1, 0..10), transmit(2, 10..20), transmit(3, 20..30));
        let mut p = Position::default();
        p.observe(&Event::Sending { send: &a }, 0);
        p.observe(&Event::Sending { send: &b }, 0);
        p.observe(&progress(1, 5), 0);
        assert_eq!(
            p.observe(&progress(2, 17), 0),
            12,
            "5 of the first, 7 of the second"
        );
        assert_eq!(
            p.observe(&ok(2), 0),
            15,
            "the second answered, above the prefix"
        );
        assert_eq!(p.observe(&ok(1), 20), 20, "both below the prefix now");
        p.observe(&Event::Sending { send: &c }, 20);
        assert_eq!(p.observe(&progress(3, 24), 20), 24);
        let failed = Event::Failure {
            request: RequestId::new(3),
            failure: TransportFailure::Reset,
        };
        assert_eq!(
            p.observe(&failed, 20),
            20,
            "a failed request's bytes are taken back"
        );
    }
}
