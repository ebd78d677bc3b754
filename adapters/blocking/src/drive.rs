//! The driving loop: poll the upload, carry out its action, hand back the result.

use std::fmt;
use std::ops::Range;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use http::StatusCode;
use http::header::{CONTENT_LENGTH, TRANSFER_ENCODING};
use resumable_core::{Action, RequestId, Send as SendAction, TransportFailure, Upload, UsageError};

use crate::body::{Abort, BodySent, RequestBody};
use crate::source::{Source, SourceError};
use crate::transport::Transport;

/// The most source bytes handed to the core per `Read` action, and read per step from a
/// stream: 64 KiB.
pub const READ_PIECE: usize = 64 * 1024;

/// How often a wait looks at the interrupt flag.
const INTERRUPT_POLL: Duration = Duration::from_millis(100);

/// An error returned by a caller's hook; it ends the drive as [`DriveError::Hook`].
pub type HookError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// Why [`Driver::drive`] returned without the upload's output.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DriveError {
    /// The upload itself ended without success (the server refused, the session is gone,
    /// retries ran out…). Whether it can be resumed later: [`resumable_core::Error::is_resumable`].
    #[error(transparent)]
    Upload(#[from] resumable_core::Error),
    /// The source could not give the bytes the upload needs.
    #[error(transparent)]
    Source(#[from] SourceError),
    /// The upload refused an input from the driver: a bug in this driver or the core.
    #[error("driver error: {0}")]
    Usage(#[from] UsageError),
    /// The upload asked for something the driver cannot do (for example a request whose
    /// `Content-Length` differs from its body's length): a bug in the core.
    #[error("the upload broke the driver contract: {0}")]
    Contract(&'static str),
    /// The interrupt flag was raised. The upload was not cancelled: its session and saved
    /// resume state stay valid, and the upload can be resumed.
    #[error("interrupted")]
    Interrupted,
    /// The caller's hook returned an error.
    #[error("hook failed: {0}")]
    Hook(#[source] HookError),
}

impl From<Abort> for DriveError {
    fn from(abort: Abort) -> Self {
        match abort {
            Abort::Source(e) => DriveError::Source(e),
            Abort::Hook(e) => DriveError::Hook(e),
            Abort::Interrupted => DriveError::Interrupted,
            Abort::Usage(e) => DriveError::Usage(e),
        }
    }
}

/// How far a request body has been sent, in [`Event::Progress`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Progress {
    /// The request being sent.
    pub request: RequestId,
    /// Body bytes of this request handed to the transport so far.
    pub body_sent: u64,
    /// The body's length.
    pub body_len: u64,
    /// The source offset reached: the request's source range start plus its source bytes
    /// sent (a progress bar's position; it goes back when bytes are sent again).
    pub source_position: u64,
    /// Body bytes handed to the transport during this drive, over all requests (bytes sent
    /// again count again).
    pub total_sent: u64,
    /// Source bytes the server has acknowledged ([`Upload::persisted`]).
    pub persisted: u64,
}

/// What just happened, reported to the hook set with [`Driver::on_event`].
#[derive(Debug)]
#[non_exhaustive]
pub enum Event<'a> {
    /// Source bytes were handed to the upload for a `Read` action; an empty range says the
    /// source ends at its start.
    SourceRead {
        /// The bytes handed in.
        range: Range<u64>,
    },
    /// The request is about to be sent. The upload already counts its bytes as possibly
    /// stored: save its resume state now (GCS: [`resumable_core::gcs::GcsUpload::resume_state`]) so that a later
    /// run never resumes behind what the server may hold.
    Sending {
        /// The request (its URI and headers are secrets: `Debug` redacts them; do not log
        /// them otherwise).
        send: &'a SendAction,
    },
    /// Body bytes were handed to the transport.
    Progress(Progress),
    /// A response was handed to the upload (the persisted count may have changed: save the
    /// resume state).
    Response {
        /// The request it answered.
        request: RequestId,
        /// Its status.
        status: StatusCode,
    },
    /// A transport failure was handed to the upload; a retry (after a status query) follows
    /// if the retry policy allows.
    Failure {
        /// The request that failed.
        request: RequestId,
        /// How.
        failure: TransportFailure,
    },
    /// The upload waits until `until` before its next request (a retry backoff); reported
    /// once per wait.
    Waiting {
        /// When the wait ends.
        until: Instant,
    },
}

/// The driver's time: what `now` is, and how to wait. [`SystemClock`] is the real one; tests
/// inject a clock that only pretends to sleep.
pub trait Clock {
    /// The current instant, passed to every `poll_action` and `handle_*` call.
    fn now(&mut self) -> Instant;
    /// Blocks until `deadline` (returns at once if it has passed). The driver then polls
    /// again with [`Clock::now`].
    fn sleep_until(&mut self, deadline: Instant);
}

/// The real clock: [`Instant::now`] and [`std::thread::sleep`].
#[derive(Clone, Copy, Debug, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&mut self) -> Instant {
        Instant::now()
    }

    fn sleep_until(&mut self, deadline: Instant) {
        let now = Instant::now();
        if deadline > now {
            std::thread::sleep(deadline - now);
        }
    }
}

/// What a transport returns for one request.
type Exchange = Result<http::Response<bytes::Bytes>, TransportFailure>;

type EventHook<'a, U> = dyn FnMut(&U, &Event<'_>) -> Result<(), HookError> + 'a;
type SendHook<'a> = dyn FnMut(&mut SendAction) -> Result<(), HookError> + 'a;

/// Drives an [`Upload`] to its end over a [`Transport`], reading a [`Source`].
///
/// Build one with [`Driver::new`], add hooks, then call [`Driver::drive`]. The driver makes no
/// protocol decision: chunk sizes, headers, retries, waits and status queries all come from
/// the upload.
pub struct Driver<'a, U> {
    clock: Box<dyn Clock + 'a>,
    interrupt: Option<Arc<AtomicBool>>,
    on_event: Box<EventHook<'a, U>>,
    before_send: Box<SendHook<'a>>,
    read_piece: usize,
}

impl<U> fmt::Debug for Driver<'_, U> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Driver")
            .field("interrupt", &self.interrupt)
            .field("read_piece", &self.read_piece)
            .finish_non_exhaustive()
    }
}

impl<U> Default for Driver<'_, U> {
    fn default() -> Self {
        Self::new()
    }
}

impl<'a, U> Driver<'a, U> {
    /// A driver with the real clock, no interrupt flag and no hook. Add them with the methods
    /// below, then call [`Driver::drive`].
    pub fn new() -> Self {
        Driver {
            clock: Box::new(SystemClock),
            interrupt: None,
            on_event: Box::new(|_, _| Ok(())),
            before_send: Box::new(|_| Ok(())),
            read_piece: READ_PIECE,
        }
    }

    /// Uses `clock` for `now` and for waits (tests: a clock that does not really sleep).
    pub fn clock(mut self, clock: impl Clock + 'a) -> Self {
        self.clock = Box::new(clock);
        self
    }

    /// Checks `flag` between actions, while a body is sent and during waits (at least every
    /// 100 ms); once it is true, [`Driver::drive`] returns [`DriveError::Interrupted`] without
    /// cancelling the upload. Set it from a Ctrl-C handler, then save the resume state.
    pub fn interrupt(mut self, flag: Arc<AtomicBool>) -> Self {
        self.interrupt = Some(flag);
        self
    }

    /// Calls `hook` with the upload after everything that happens (see [`Event`]): save the
    /// resume state on [`Event::Sending`] and [`Event::Response`], move a progress bar on
    /// [`Event::Progress`]. An error from the hook ends the drive with [`DriveError::Hook`].
    pub fn on_event(
        mut self,
        hook: impl FnMut(&U, &Event<'_>) -> Result<(), HookError> + 'a,
    ) -> Self {
        self.on_event = Box::new(hook);
        self
    }

    /// Calls `hook` on every request right before it is sent, retries included, to add what
    /// the core leaves to the caller: request signing (an `Authorization` header with a fresh
    /// nonce and timestamp each time). The hook must not change the body or its length. An
    /// error from the hook ends the drive with [`DriveError::Hook`] before anything is sent.
    pub fn before_send(
        mut self,
        hook: impl FnMut(&mut SendAction) -> Result<(), HookError> + 'a,
    ) -> Self {
        self.before_send = Box::new(hook);
        self
    }

    /// Hands at most `bytes` source bytes to the upload per `Read` action (default 64 KiB).
    pub fn read_piece(mut self, bytes: usize) -> Self {
        self.read_piece = bytes.max(1);
        self
    }

    fn interrupted(&self) -> bool {
        self.interrupt
            .as_ref()
            .is_some_and(|flag| flag.load(Ordering::SeqCst))
    }
}

impl<U: Upload> Driver<'_, U> {
    /// Runs the upload until it is done: polls it, reads what it asks from `source`, sends
    /// its requests with `transport`, sleeps through its waits, and hands every result back.
    ///
    /// Call it once per upload (calling it again continues the same upload). After an error,
    /// save [`resumable_core::gcs::GcsUpload::resume_state`] if the error allows a resume (`Interrupted`, or an
    /// [`DriveError::Upload`] error that [`resumable_core::Error::is_resumable`]).
    ///
    /// # Errors
    /// See [`DriveError`].
    pub fn drive<S, T>(
        &mut self,
        upload: &mut U,
        source: &mut S,
        transport: &mut T,
    ) -> Result<U::Output, DriveError>
    where
        S: Source + ?Sized,
        T: Transport + ?Sized,
    {
        let mut total_sent = 0u64;
        let mut last_wait = None;
        loop {
            if self.interrupted() {
                return Err(DriveError::Interrupted);
            }
            let now = self.clock.now();
            match upload.poll_action(now) {
                Action::Read(read) => {
                    let range = read.range;
                    if range.end <= range.start {
                        return Err(DriveError::Contract("asked to read an empty range"));
                    }
                    let max = usize::try_from(range.end - range.start)
                        .unwrap_or(usize::MAX)
                        .min(self.read_piece);
                    let bytes = source.read_at(range.start, max)?;
                    let bytes = &bytes[..bytes.len().min(max)];
                    upload.handle_read(now, range.start, bytes)?;
                    let got = range.start..range.start + bytes.len() as u64;
                    source.release(upload.retained_from());
                    (self.on_event)(upload, &Event::SourceRead { range: got })
                        .map_err(DriveError::Hook)?;
                }
                Action::Send(mut send) => {
                    (self.before_send)(&mut send).map_err(DriveError::Hook)?;
                    check_content_length(&mut send)?;
                    source.release(upload.retained_from());
                    (self.on_event)(upload, &Event::Sending { send: &send })
                        .map_err(DriveError::Hook)?;
                    let (result, abort) =
                        self.send(upload, &send, source, transport, &mut total_sent)?;
                    let now = self.clock.now();
                    let event = match result {
                        Ok(response) => {
                            let status = response.status();
                            upload.handle_response(now, send.id, response)?;
                            Event::Response {
                                request: send.id,
                                status,
                            }
                        }
                        Err(failure) => {
                            upload.handle_failure(now, send.id, failure)?;
                            Event::Failure {
                                request: send.id,
                                failure,
                            }
                        }
                    };
                    // The upload has the outcome either way; a stopped body is the reason to
                    // stop driving.
                    if let Some(abort) = abort {
                        return Err(abort.into());
                    }
                    source.release(upload.retained_from());
                    (self.on_event)(upload, &event).map_err(DriveError::Hook)?;
                }
                Action::Wait(until) => {
                    if last_wait != Some(until) {
                        last_wait = Some(until);
                        (self.on_event)(upload, &Event::Waiting { until })
                            .map_err(DriveError::Hook)?;
                    }
                    let deadline = match self.interrupt {
                        Some(_) => now
                            .checked_add(INTERRUPT_POLL)
                            .map_or(until, |step| step.min(until)),
                        None => until,
                    };
                    self.clock.sleep_until(deadline);
                }
                Action::Done(outcome) => return outcome.map_err(DriveError::Upload),
            }
        }
    }

    /// Sends one request; returns the transport's outcome and why the body was stopped, if
    /// it was.
    fn send<S, T>(
        &mut self,
        upload: &mut U,
        send: &SendAction,
        source: &mut S,
        transport: &mut T,
        total_sent: &mut u64,
    ) -> Result<(Exchange, Option<Abort>), DriveError>
    where
        S: Source + ?Sized,
        T: Transport + ?Sized,
    {
        let range = send.body.source.clone();
        let reader = if range.start < range.end {
            Some((
                source.range(range.clone())?,
                range.start,
                range.end - range.start,
            ))
        } else {
            None
        };
        let interrupt = self.interrupt.as_deref();
        let on_event = &mut self.on_event;
        let request = send.id;
        let body_len = send.body.len();
        let report_sent = send.report_sent;
        let mut observe = |sent: BodySent<'_>| -> Result<(), Abort> {
            if interrupt.is_some_and(|flag| flag.load(Ordering::SeqCst)) {
                return Err(Abort::Interrupted);
            }
            if report_sent && !sent.source_bytes.is_empty() {
                let offset = sent.source_position - sent.source_bytes.len() as u64;
                upload
                    .handle_sent(request, offset, sent.source_bytes)
                    .map_err(Abort::Usage)?;
            }
            *total_sent += sent.delta;
            let progress = Progress {
                request,
                body_sent: sent.sent,
                body_len,
                source_position: sent.source_position,
                total_sent: *total_sent,
                persisted: upload.persisted(),
            };
            on_event(upload, &Event::Progress(progress)).map_err(Abort::Hook)
        };
        let mut body = RequestBody::new(
            send.body.prefix.clone(),
            reader,
            send.body.suffix.clone(),
            Some(&mut observe),
        );
        let result = transport.send(&send.request, &mut body);
        let abort = body.take_abort();
        Ok((result, abort))
    }
}

/// The request must say `Content-Length: <body length>` and use no transfer coding, so that
/// every transport sends the body length-delimited (G4).
fn check_content_length(send: &mut SendAction) -> Result<(), DriveError> {
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

/// Drives `upload` to its end with the real clock and no hooks: [`Driver::new`] then
/// [`Driver::drive`]. Use a [`Driver`] to save resume state, show progress or interrupt.
///
/// # Errors
/// See [`DriveError`].
pub fn drive<U, S, T>(
    upload: &mut U,
    source: &mut S,
    transport: &mut T,
) -> Result<U::Output, DriveError>
where
    U: Upload,
    S: Source + ?Sized,
    T: Transport + ?Sized,
{
    Driver::new().drive(upload, source, transport)
}

#[cfg(test)]
mod tests {
    use super::*;
    use resumable_core::gcs::{GcsConfig, GcsUpload, Start};

    /// The upload's first request (the XML start: `Content-Length: 0`, empty body).
    fn start_request() -> SendAction {
        let start = Start::Xml {
            url: "https://storage.example/b/o?X-Goog-Signature=x"
                .parse()
                .unwrap(),
            content_type: http::HeaderValue::from_static("text/plain"),
        };
        let mut upload = GcsUpload::new(start, GcsConfig::new(Some(10))).unwrap();
        match upload.poll_action(Instant::now()) {
            Action::Send(send) => send,
            other => panic!("expected the start request, got {other:?}"),
        }
    }

    // G4: a request goes out only if its Content-Length is its body's length; a missing one
    // is filled in, a wrong one, a repeated one or a transfer coding is the core's bug.
    #[test]
    fn content_length_must_match_the_body() {
        let mut send = start_request();
        assert!(check_content_length(&mut send).is_ok());

        send.request.headers_mut().remove(CONTENT_LENGTH);
        check_content_length(&mut send).unwrap();
        assert_eq!(send.request.headers()[CONTENT_LENGTH], "0");

        send.request
            .headers_mut()
            .insert(CONTENT_LENGTH, http::HeaderValue::from_static("5"));
        assert!(matches!(
            check_content_length(&mut send),
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
    }

    // Error messages never carry URIs or header values.
    #[test]
    fn error_messages_name_no_secrets() {
        let send = start_request();
        let debug = format!("{:?}", Event::Sending { send: &send });
        assert!(!debug.contains("X-Goog-Signature"), "{debug}");
        let message = DriveError::Contract("a request carries Transfer-Encoding").to_string();
        assert!(!message.contains("storage.example"));
    }
}
