//! The driving loop: the core's [`Pilot`] decides and keeps count; this file does the I/O
//! (source reads, sends, sleeps) as futures, with one request at a time or several at once
//! on one transport.

use std::fmt;
use std::future::Future;
use std::marker::PhantomData;
use std::pin::{Pin, pin};
use std::sync::{Mutex, PoisonError};
use std::task::Poll;
use std::time::Instant;

use resumable_core::driver::{
    DriveError, Event, HookError, Pilot, READ_PIECE, Sending, SourceError, Step, Stop,
};
use resumable_core::{Transmit, Upload};

use crate::body::{BodyError, BodyWriter, RequestBody};
use crate::source::Source;
use crate::timer::Timer;
use crate::transport::{Exchange, Transport};

/// The type of a driver without a hook (see [`Driver::new`]).
pub type NoHook<U> = fn(&U, &Event<'_>) -> Result<(), HookError>;

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
/// - the requests in flight are abandoned: their bodies end with an error, so the transport
///   closes the connection instead of completing a short request; the server keeps some
///   prefix of what arrived (never more than was sent);
/// - the resume state the hook saved at the last [`Event::Sending`] already covers them (the
///   upload counts a request's bytes as possibly stored from the moment it hands it out), so a
///   new upload from it first asks the server what it holds and goes on from there (G3, G6);
/// - or drive the same upload again with the same `Driver`: it reports the abandoned requests
///   to the upload as [`TransportFailure::Reset`](resumable_core::TransportFailure::Reset),
///   after which the upload queries the server (G8).
///
/// Source reads, sleeps and hooks leave nothing half-done when dropped.
pub struct Driver<U, T, H = NoHook<U>> {
    timer: T,
    on_event: H,
    pilot: Pilot,
    upload: PhantomData<fn(&U)>,
}

impl<U, T, H> fmt::Debug for Driver<U, T, H> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Driver")
            .field("pilot", &self.pilot)
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
            pilot: Pilot::new(READ_PIECE),
            upload: PhantomData,
        }
    }
}

/// A request sent at the same time as others, its body read whole beforehand.
struct Flight<F> {
    sending: Sending,
    writer: BodyWriter,
    response: Pin<Box<F>>,
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
            pilot: self.pilot,
            upload: PhantomData,
        }
    }

    /// Hands at most `bytes` source bytes to the upload per `Read` action and per body piece
    /// (default [`READ_PIECE`], 64 KiB).
    pub fn read_piece(mut self, bytes: usize) -> Self {
        self.pilot = Pilot::new(bytes);
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
    /// When the upload allows several requests in flight ([`Upload::max_in_flight`]), that
    /// many go out at once on `transport`, each body's source bytes read beforehand (memory
    /// holds up to that many bodies); otherwise one at a time, bodies streamed from the source.
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
        transport: &X,
    ) -> Result<U::Output, DriveError>
    where
        S: Source + ?Sized,
        X: Transport + ?Sized,
    {
        let together = upload.max_in_flight() > 1;
        let mut flights = Vec::new();
        self.pilot.start();
        loop {
            let now = self.timer.now();
            match self.pilot.next(upload, now) {
                Step::Read { offset, max } => {
                    let bytes = source.read_at(offset, max).await?;
                    let now = self.timer.now();
                    let event = self.pilot.read(upload, now, offset, &bytes)?;
                    source.release(upload.retained_from());
                    self.emit(upload, &event)?;
                }
                Step::Send(mut transmit) => {
                    let sending = self.pilot.sending(&mut transmit)?;
                    source.release(upload.retained_from());
                    self.emit(upload, &Event::Sending { send: &transmit })?;
                    if together {
                        let flight = self.launch(upload, source, transport, transmit, sending);
                        flights.push(flight.await?);
                    } else {
                        self.exchange(upload, transmit, sending, source, transport)
                            .await?;
                    }
                }
                Step::Wait { until, first } => {
                    if first {
                        self.emit(upload, &Event::Waiting { until })?;
                    }
                    if flights.is_empty() {
                        self.timer.sleep_until(until).await;
                    } else {
                        self.settle(upload, source, &mut flights, Some(until))
                            .await?;
                    }
                }
                Step::Idle => self.settle(upload, source, &mut flights, None).await?,
                Step::Report(event) => self.emit(upload, &event)?,
                Step::Done(outcome) => return outcome,
            }
        }
    }

    /// Reads the body of a request sent together with others and hands it to the transport.
    async fn launch<'x, S, X>(
        &mut self,
        upload: &mut U,
        source: &mut S,
        transport: &'x X,
        transmit: Transmit,
        sending: Sending,
    ) -> Result<Flight<impl Future<Output = Exchange> + 'x>, DriveError>
    where
        S: Source + ?Sized,
        X: Transport + ?Sized,
    {
        let (body, writer) = RequestBody::channel(sending.body_len, true);
        let pilot = &mut self.pilot;
        let piece = pilot.read_piece();
        let fed = feed(source, &sending, &writer, piece, |offset, bytes| {
            pilot.piece(upload, &sending, offset, bytes)
        });
        if let Err(stop) = fed.await {
            let now = self.timer.now();
            self.pilot.outcome(upload, now, sending.id, None)?;
            return Err(stop.into());
        }
        let (parts, ()) = transmit.request.into_parts();
        let response = Box::pin(transport.send(http::Request::from_parts(parts, body)));
        Ok(Flight {
            sending,
            writer,
            response,
        })
    }

    /// Feeds the requests in flight and reports their progress until one ends (its outcome
    /// handed to the upload) or `until` comes.
    async fn settle<S, F>(
        &mut self,
        upload: &mut U,
        source: &mut S,
        flights: &mut Vec<Flight<F>>,
        until: Option<Instant>,
    ) -> Result<(), DriveError>
    where
        S: Source + ?Sized,
        F: Future<Output = Exchange>,
    {
        let Driver {
            timer,
            on_event,
            pilot,
            ..
        } = self;
        let mut sleep = until.map(|until| Box::pin(timer.sleep_until(until)));
        let ended = std::future::poll_fn(|cx| {
            for (at, flight) in flights.iter_mut().enumerate() {
                let taken = flight.writer.poll_taken(cx);
                if let Some(event) = pilot.taken(&*upload, &mut flight.sending, taken)
                    && let Err(e) = on_event(&*upload, &event)
                {
                    return Poll::Ready(Err(DriveError::Hook(e)));
                }
                if let Poll::Ready(exchange) = flight.response.as_mut().poll(cx) {
                    return Poll::Ready(Ok(Some((at, exchange))));
                }
            }
            match sleep.as_mut().map(|sleep| sleep.as_mut().poll(cx)) {
                Some(Poll::Ready(())) => Poll::Ready(Ok(None)),
                _ => Poll::Pending,
            }
        })
        .await?;
        drop(sleep);
        let Some((at, exchange)) = ended else {
            return Ok(());
        };
        let flight = flights.swap_remove(at);
        let now = self.timer.now();
        let event = self
            .pilot
            .outcome(upload, now, flight.sending.id, Some(exchange))?;
        source.release(upload.retained_from());
        self.emit(upload, &event)
    }

    /// Sends one request while feeding its body from the source, reporting progress, and hands
    /// the outcome to the upload.
    async fn exchange<S, X>(
        &mut self,
        upload: &mut U,
        transmit: Transmit,
        mut sending: Sending,
        source: &mut S,
        transport: &X,
    ) -> Result<(), DriveError>
    where
        S: Source + ?Sized,
        X: Transport + ?Sized,
    {
        let id = sending.id;
        // Everything the exchange borrows ends with this block; `writer`, dropped last, stops a
        // body that is not complete: the transport never sees a short body end normally.
        let (exchange, stop) = {
            let (request_body, writer) = RequestBody::channel(sending.body_len, false);
            let (parts, ()) = transmit.request.into_parts();
            let response = transport.send(http::Request::from_parts(parts, request_body));
            let mut response = pin!(response);
            // The pump hands source pieces to the upload as it pushes them to the transport, and
            // progress reads the upload between polls of the pump: never at the same time, so the
            // lock (a Mutex, not a RefCell, to keep the future `Send`) is never contended.
            let piece = self.pilot.read_piece();
            let body = sending.clone();
            let shared = Mutex::new((&mut *upload, &mut self.pilot));
            let lock = || shared.lock().unwrap_or_else(PoisonError::into_inner);
            let pump = feed(source, &body, &writer, piece, |offset, bytes| {
                let (upload, pilot) = &mut *lock();
                pilot.piece(&mut **upload, &body, offset, bytes)
            });
            let mut pump = pin!(pump);
            let mut pumping = true;
            let on_event = &mut self.on_event;
            let mut report = |taken: u64| -> Result<(), HookError> {
                let (upload, pilot) = &mut *lock();
                match pilot.taken(&**upload, &mut sending, taken) {
                    Some(event) => on_event(&**upload, &event),
                    None => Ok(()),
                }
            };
            std::future::poll_fn(|cx| {
                if pumping {
                    match pump.as_mut().poll(cx) {
                        Poll::Ready(Ok(())) => pumping = false,
                        Poll::Ready(Err(stop)) => {
                            writer.stop(match stop {
                                Stop::Usage(_) => BodyError::REFUSED,
                                _ => BodyError::SOURCE,
                            });
                            return Poll::Ready((None, Some(stop)));
                        }
                        Poll::Pending => {}
                    }
                }
                if let Err(e) = report(writer.poll_taken(cx)) {
                    writer.stop(BodyError::HOOK);
                    return Poll::Ready((None, Some(Stop::Hook(e))));
                }
                match response.as_mut().poll(cx) {
                    // The transport may have taken the last pieces during this very poll.
                    Poll::Ready(exchange) => {
                        let stop = report(writer.poll_taken(cx)).err().map(Stop::Hook);
                        Poll::Ready((Some(exchange), stop))
                    }
                    Poll::Pending => Poll::Pending,
                }
            })
            .await
        };
        let now = self.timer.now();
        let event = self.pilot.outcome(upload, now, id, exchange)?;
        // The upload has the outcome either way; a stopped body is the reason to stop.
        if let Some(stop) = stop {
            return Err(stop.into());
        }
        source.release(upload.retained_from());
        self.emit(upload, &event)
    }
}

/// Feeds a body into the request body: the core's prefix, the source range read piece by
/// piece as the transport takes them (each handed to `on_piece` as it is pushed), the core's
/// suffix. Stops early, without error, when the transport drops the body.
async fn feed<S: Source + ?Sized>(
    source: &mut S,
    sending: &Sending,
    writer: &BodyWriter,
    piece: usize,
    mut on_piece: impl FnMut(u64, &[u8]) -> Result<(), Stop>,
) -> Result<(), Stop> {
    if !sending.prefix.is_empty() {
        if !writer.room().await {
            return Ok(());
        }
        writer.push(sending.prefix.clone());
    }
    let range = sending.source.clone();
    let mut at = range.start;
    while at < range.end {
        // Read only when the transport has room: memory stays at a few pieces.
        if !writer.room().await {
            return Ok(());
        }
        let max = usize::try_from(range.end - at)
            .unwrap_or(usize::MAX)
            .min(piece);
        let mut bytes = source.read_at(at, max).await.map_err(Stop::Source)?;
        if bytes.is_empty() {
            return Err(Stop::Source(SourceError::Ended {
                ended_at: at,
                needed: range.end,
            }));
        }
        bytes.truncate(max);
        on_piece(at, &bytes)?;
        at += bytes.len() as u64;
        writer.push(bytes);
    }
    if !sending.suffix.is_empty() {
        if !writer.room().await {
            return Ok(());
        }
        writer.push(sending.suffix.clone());
    }
    writer.finish();
    Ok(())
}

/// Drives `upload` to its end with `timer` and no hook: [`Driver::new`] then
/// [`Driver::drive`]. Use a [`Driver`] to save the resume state or show progress.
///
/// # Errors
/// See [`DriveError`].
pub async fn drive<U, S, X, T>(
    upload: &mut U,
    source: &mut S,
    transport: &X,
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
