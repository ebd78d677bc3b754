//! The driving loop: poll the upload, carry out its action, hand back the result.

use std::fmt;
use std::future::Future;
use std::marker::PhantomData;
use std::ops::Range;
use std::pin::pin;
use std::sync::{Mutex, PoisonError};
use std::task::Poll;
use std::time::Instant;

use http::StatusCode;
use http::header::{CONTENT_LENGTH, TRANSFER_ENCODING};
use resumable_core::{Action, RequestId, Send as SendAction, TransportFailure, Upload, UsageError};

use crate::body::{BodyError, BodyWriter, RequestBody};
use crate::source::{Source, SourceError};
use crate::timer::Timer;
use crate::transport::{Exchange, Transport};

/// The most source bytes handed to the core per `Read` action, and put in a request body per
/// piece: 64 KiB.
pub const READ_PIECE: usize = 64 * 1024;

/// An error returned by a caller's hook; it ends the drive as [`DriveError::Hook`].
pub type HookError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// The type of a driver without a hook (see [`Driver::new`]).
pub type NoHook<U> = fn(&U, &Event<'_>) -> Result<(), HookError>;

/// Why [`Driver::drive`] returned without the upload's output.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DriveError {
    /// The upload itself ended without success (the server refused, the session is gone,
    /// retries ran out, it was cancelled…). Whether it can be resumed later:
    /// [`resumable_core::Error::is_resumable`].
    #[error(transparent)]
    Upload(#[from] resumable_core::Error),
    /// The source could not give the bytes the upload needs. The upload was told its request
    /// failed, so it stays resumable.
    #[error(transparent)]
    Source(#[from] SourceError),
    /// The upload refused an input from the driver: a bug in this driver or the core.
    #[error("driver error: {0}")]
    Usage(#[from] UsageError),
    /// The upload asked for something the driver cannot do (for example a request whose
    /// `Content-Length` differs from its body's length): a bug in the core.
    #[error("the upload broke the driver contract: {0}")]
    Contract(&'static str),
    /// The caller's hook returned an error. If it came during a request, the request was
    /// abandoned and the upload told so; the upload stays resumable.
    #[error("hook failed: {0}")]
    Hook(#[source] HookError),
}

/// How far a request body has been sent, in [`Event::Progress`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Progress {
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
    /// The request is about to be sent: no byte of it has left yet. The upload already
    /// counts its bytes as possibly stored: save its resume state now (GCS:
    /// [`resumable_core::gcs::GcsUpload::resume_state`]) so that a later run, after a crash
    /// or a dropped future, never resumes behind what the server may hold.
    Sending {
        /// The request (its URI and headers are secrets: `Debug` redacts them; do not log
        /// them otherwise).
        send: &'a SendAction,
    },
    /// The transport took more body bytes.
    Progress(Progress),
    /// A response was handed to the upload (the persisted count may have changed: save the
    /// resume state).
    Response {
        /// The request it answered.
        request: RequestId,
        /// Its status.
        status: StatusCode,
    },
    /// A failure was handed to the upload: the transport's, or [`TransportFailure::Reset`]
    /// for a request the driver abandoned (an earlier drive's future was dropped while it was
    /// in flight, or the source or hook failed during it). A retry (after a status query)
    /// follows if the retry policy allows.
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

/// Why a request was stopped by the driver, not by the transport.
enum Abort {
    Source(SourceError),
    Hook(HookError),
    /// The upload refused the sent bytes handed in: a driver bug.
    Usage(UsageError),
}

/// Drives an [`Upload`] to its end over a [`Transport`], reading a [`Source`], sleeping with a
/// [`Timer`], on any executor.
///
/// Build one with [`Driver::new`], add a hook with [`Driver::on_event`], then await
/// [`Driver::drive`]. The driver makes no protocol decision: chunk sizes, headers, retries,
/// waits and status queries all come from the upload.
///
/// # Cancellation
///
/// The future of [`Driver::drive`] may be dropped at any await point (a `select!` with a
/// Ctrl-C signal, a timeout); that is how an upload is interrupted. What happens then:
/// - the request in flight, if any, is abandoned: its body ends with an error, so the
///   transport closes the connection instead of completing a short request; the server keeps
///   some prefix of what arrived (never more than was sent);
/// - the resume state the hook saved at the last [`Event::Sending`] already covers that
///   request (the upload counts its bytes as possibly stored from the moment it hands the
///   request out), so a new upload from it (GCS: `Start::Resume`) first asks the server what it
///   holds and goes on from there (G3, G6);
/// - or drive the same upload again with the same `Driver`: it reports the abandoned request
///   to the upload as [`TransportFailure::Reset`], after which the upload queries the server
///   (G8). (A fresh `Driver` would send the abandoned request again as it was, which GCS also
///   accepts.)
///
/// Source reads, sleeps and hooks leave nothing half-done when dropped.
pub struct Driver<U, T, H = NoHook<U>> {
    timer: T,
    on_event: H,
    read_piece: usize,
    /// A request handed to the transport whose outcome the upload has not been told.
    abandoned: Option<Abandoned>,
    upload: PhantomData<fn(&U)>,
}

/// What identifies a request across drives: an upload polled again hands out the same request
/// (same id, method, URI and range) while its outcome is pending; the rest guards against a
/// driver reused for another upload, whose ids start over. (No `Debug`: the URI is a secret.)
#[derive(PartialEq, Eq)]
struct Abandoned {
    id: RequestId,
    method: http::Method,
    uri: http::Uri,
    content_range: Option<http::HeaderValue>,
}

impl Abandoned {
    fn of(send: &SendAction) -> Self {
        Abandoned {
            id: send.id,
            method: send.request.method().clone(),
            uri: send.request.uri().clone(),
            content_range: send
                .request
                .headers()
                .get(http::header::CONTENT_RANGE)
                .cloned(),
        }
    }
}

impl<U, T, H> fmt::Debug for Driver<U, T, H> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Driver")
            .field("read_piece", &self.read_piece)
            .field("abandoned", &self.abandoned.as_ref().map(|a| a.id))
            .finish_non_exhaustive()
    }
}

impl<U, T: Timer> Driver<U, T> {
    /// A driver that reads the time and sleeps with `timer` ([`TokioTimer`](crate::TokioTimer)
    /// on tokio), with no hook. Add one with [`Driver::on_event`], then call
    /// [`Driver::drive`].
    pub fn new(timer: T) -> Self {
        Driver {
            timer,
            on_event: |_, _| Ok(()),
            read_piece: READ_PIECE,
            abandoned: None,
            upload: PhantomData,
        }
    }
}

impl<U, T, H> Driver<U, T, H>
where
    H: FnMut(&U, &Event<'_>) -> Result<(), HookError>,
{
    /// Calls `hook` with the upload after everything that happens (see [`Event`]): save the
    /// resume state on [`Event::Sending`] and [`Event::Response`], move a progress bar on
    /// [`Event::Progress`]. It runs inside the upload future's poll: keep it short (a small
    /// file write is fine; hand anything slow to another task). An error from it ends the
    /// drive with [`DriveError::Hook`].
    pub fn on_event<H2>(self, hook: H2) -> Driver<U, T, H2>
    where
        H2: FnMut(&U, &Event<'_>) -> Result<(), HookError>,
    {
        Driver {
            timer: self.timer,
            on_event: hook,
            read_piece: self.read_piece,
            abandoned: self.abandoned,
            upload: PhantomData,
        }
    }

    /// Hands at most `bytes` source bytes to the upload per `Read` action and per body piece
    /// (default [`READ_PIECE`], 64 KiB).
    pub fn read_piece(mut self, bytes: usize) -> Self {
        self.read_piece = bytes.max(1);
        self
    }

    fn emit(&mut self, upload: &U, event: &Event<'_>) -> Result<(), DriveError> {
        (self.on_event)(upload, event).map_err(DriveError::Hook)
    }
}

impl<U, T, H> Driver<U, T, H>
where
    U: Upload,
    T: Timer,
    H: FnMut(&U, &Event<'_>) -> Result<(), HookError>,
{
    /// Runs the upload until it is done: polls it, reads what it asks from `source`, sends its
    /// requests with `transport` (feeding each body while it is sent), sleeps through its
    /// waits with the timer, and hands every result back.
    ///
    /// The returned future may be dropped at any await point; see the
    /// [type's documentation](Driver#cancellation) for what a later run must do. After an error,
    /// keep the resume state if the error allows a resume (a [`DriveError::Upload`] error that
    /// [`resumable_core::Error::is_resumable`], or any other kind but `Usage`/`Contract`).
    ///
    /// # Errors
    /// See [`DriveError`].
    pub async fn drive<S, X>(
        &mut self,
        upload: &mut U,
        source: &mut S,
        transport: &mut X,
    ) -> Result<U::Output, DriveError>
    where
        S: Source + ?Sized,
        X: Transport + ?Sized,
    {
        let mut total_sent = 0u64;
        let mut last_wait = None;
        loop {
            let now = self.timer.now();
            match upload.poll_action(now) {
                Action::Read(read) => {
                    let range = read.range;
                    if range.end <= range.start {
                        return Err(DriveError::Contract("asked to read an empty range"));
                    }
                    let max = usize::try_from(range.end - range.start)
                        .unwrap_or(usize::MAX)
                        .min(self.read_piece);
                    let bytes = source.read_at(range.start, max).await?;
                    let bytes = &bytes[..bytes.len().min(max)];
                    let now = self.timer.now();
                    upload.handle_read(now, range.start, bytes)?;
                    let got = range.start..range.start + bytes.len() as u64;
                    source.release(upload.retained_from());
                    self.emit(upload, &Event::SourceRead { range: got })?;
                }
                Action::Send(send) if self.abandoned.as_ref() == Some(&Abandoned::of(&send)) => {
                    // An earlier drive's future was dropped with this request in flight.
                    self.abandoned = None;
                    let failure = TransportFailure::Reset;
                    upload.handle_failure(now, send.id, failure)?;
                    let event = Event::Failure {
                        request: send.id,
                        failure,
                    };
                    self.emit(upload, &event)?;
                }
                Action::Send(mut send) => {
                    check_content_length(&mut send)?;
                    source.release(upload.retained_from());
                    self.emit(upload, &Event::Sending { send: &send })?;
                    let id = send.id;
                    self.abandoned = Some(Abandoned::of(&send));
                    let (result, abort) = self
                        .exchange(upload, send, source, transport, &mut total_sent)
                        .await;
                    self.abandoned = None;
                    let now = self.timer.now();
                    // A request the driver stopped failed, as far as the upload can tell.
                    let result = result.unwrap_or(Err(TransportFailure::Reset));
                    let event = match result {
                        Ok(response) => {
                            let status = response.status();
                            upload.handle_response(now, id, response)?;
                            Event::Response {
                                request: id,
                                status,
                            }
                        }
                        Err(failure) => {
                            upload.handle_failure(now, id, failure)?;
                            Event::Failure {
                                request: id,
                                failure,
                            }
                        }
                    };
                    match abort {
                        Some(Abort::Source(e)) => return Err(DriveError::Source(e)),
                        Some(Abort::Hook(e)) => return Err(DriveError::Hook(e)),
                        Some(Abort::Usage(e)) => return Err(DriveError::Usage(e)),
                        None => {}
                    }
                    source.release(upload.retained_from());
                    self.emit(upload, &event)?;
                }
                Action::Wait(until) => {
                    if last_wait != Some(until) {
                        last_wait = Some(until);
                        self.emit(upload, &Event::Waiting { until })?;
                    }
                    self.timer.sleep_until(until).await;
                }
                Action::Done(outcome) => return outcome.map_err(DriveError::Upload),
            }
        }
    }

    /// Sends one request while feeding its body from the source, reporting progress. Returns
    /// the transport's outcome (`None` when the driver stopped the request first) and why the
    /// driver stopped, if it did.
    async fn exchange<S, X>(
        &mut self,
        upload: &mut U,
        send: SendAction,
        source: &mut S,
        transport: &mut X,
        total_sent: &mut u64,
    ) -> (Option<Exchange>, Option<Abort>)
    where
        S: Source + ?Sized,
        X: Transport + ?Sized,
    {
        let SendAction {
            id,
            request,
            body,
            report_sent,
        } = send;
        let (request_body, writer) = RequestBody::channel(body.len());
        let (parts, ()) = request.into_parts();
        let response = transport.send(http::Request::from_parts(parts, request_body));
        let mut response = pin!(response);
        // The pump hands source pieces to the upload as it pushes them to the transport, and
        // `report` reads the upload between polls of the pump: never at the same time, so the
        // lock (a Mutex, not a RefCell, to keep the future `Send`) is never contended.
        let upload = Mutex::new(upload);
        let on_piece = |offset: u64, bytes: &[u8]| -> Result<(), UsageError> {
            if report_sent {
                let mut upload = upload.lock().unwrap_or_else(PoisonError::into_inner);
                upload.handle_sent(id, offset, bytes)?;
            }
            Ok(())
        };
        let pump = feed(source, &body, &writer, self.read_piece, on_piece);
        let mut pump = pin!(pump);
        let mut pumping = true;
        let mut reported = 0u64;
        let on_event = &mut self.on_event;
        // Reports the body bytes the transport took since the last report.
        let mut report = |taken: u64| -> Result<(), HookError> {
            if taken <= reported {
                return Ok(());
            }
            *total_sent += taken - reported;
            reported = taken;
            let source_sent = taken
                .saturating_sub(body.prefix.len() as u64)
                .min(body.source_len());
            let upload = upload.lock().unwrap_or_else(PoisonError::into_inner);
            let progress = Progress {
                request: id,
                body_sent: taken,
                body_len: body.len(),
                source_position: body.source.start + source_sent,
                total_sent: *total_sent,
                persisted: upload.persisted(),
            };
            on_event(&**upload, &Event::Progress(progress))
        };
        // `writer`, dropped when this returns, stops a body that is not complete: whatever
        // happened, the transport never sees a short body end normally.
        std::future::poll_fn(|cx| {
            if pumping {
                match pump.as_mut().poll(cx) {
                    Poll::Ready(Ok(())) => pumping = false,
                    Poll::Ready(Err(abort)) => {
                        writer.stop(match abort {
                            Abort::Usage(_) => BodyError::REFUSED,
                            _ => BodyError::SOURCE,
                        });
                        return Poll::Ready((None, Some(abort)));
                    }
                    Poll::Pending => {}
                }
            }
            if let Err(e) = report(writer.poll_taken(cx)) {
                writer.stop(BodyError::HOOK);
                return Poll::Ready((None, Some(Abort::Hook(e))));
            }
            match response.as_mut().poll(cx) {
                // The transport may have taken the last pieces during this very poll.
                Poll::Ready(exchange) => {
                    let abort = report(writer.poll_taken(cx)).err().map(Abort::Hook);
                    Poll::Ready((Some(exchange), abort))
                }
                Poll::Pending => Poll::Pending,
            }
        })
        .await
    }
}

/// Feeds `body` into the request body: the core's prefix, the source range read piece by
/// piece as the transport takes them (each handed to `on_piece` as it is pushed), the core's
/// suffix. Stops early, without error, when the transport drops the body.
async fn feed<S: Source + ?Sized>(
    source: &mut S,
    body: &resumable_core::Body,
    writer: &BodyWriter,
    piece: usize,
    mut on_piece: impl FnMut(u64, &[u8]) -> Result<(), UsageError>,
) -> Result<(), Abort> {
    if !body.prefix.is_empty() {
        if !writer.room().await {
            return Ok(());
        }
        writer.push(body.prefix.clone());
    }
    let range = body.source.clone();
    let mut at = range.start;
    while at < range.end {
        // Read only when the transport has room: memory stays at a few pieces.
        if !writer.room().await {
            return Ok(());
        }
        let max = usize::try_from(range.end - at)
            .unwrap_or(usize::MAX)
            .min(piece);
        let mut bytes = source.read_at(at, max).await.map_err(Abort::Source)?;
        if bytes.is_empty() {
            return Err(Abort::Source(SourceError::Ended {
                ended_at: at,
                needed: range.end,
            }));
        }
        bytes.truncate(max);
        on_piece(at, &bytes).map_err(Abort::Usage)?;
        at += bytes.len() as u64;
        writer.push(bytes);
    }
    if !body.suffix.is_empty() {
        if !writer.room().await {
            return Ok(());
        }
        writer.push(body.suffix.clone());
    }
    writer.finish();
    Ok(())
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

/// Drives `upload` to its end with `timer` and no hook: [`Driver::new`] then
/// [`Driver::drive`]. Use a [`Driver`] to save the resume state or show progress.
///
/// # Errors
/// See [`DriveError`].
pub async fn drive<U, S, X, T>(
    upload: &mut U,
    source: &mut S,
    transport: &mut X,
    timer: T,
) -> Result<U::Output, DriveError>
where
    U: Upload,
    S: Source + ?Sized,
    X: Transport + ?Sized,
    T: Timer,
{
    Driver::new(timer).drive(upload, source, transport).await
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

    // Error messages and events never carry URIs or header values.
    #[test]
    fn events_and_errors_name_no_secrets() {
        let send = start_request();
        let debug = format!("{:?}", Event::Sending { send: &send });
        assert!(!debug.contains("X-Goog-Signature"), "{debug}");
        let message = DriveError::Contract("a request carries Transfer-Encoding").to_string();
        assert!(!message.contains("storage.example"));
    }
}
