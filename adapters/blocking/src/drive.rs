//! The driving loop: the core's [`Pilot`] decides and keeps count; this file does the I/O
//! (source reads, sends, sleeps), on this thread, or on one scoped thread per request when the
//! upload allows several in flight.

use std::io::Read;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::thread::Scope;
use std::time::Duration;

use bytes::{Buf as _, Bytes};
use resumable_core::driver::{
    DriveError, Event, HookError, Pilot, READ_PIECE, Sending, SourceError, Step, Stop,
};
use resumable_core::{RequestId, Transmit, TransportFailure, Upload};

use crate::body::{BodySent, RequestBody};
use crate::clock::{Clock, SystemClock};
use crate::source::Source;
use crate::transport::Transport;

/// How often a wait looks at the interrupt flag.
const INTERRUPT_POLL: Duration = Duration::from_millis(100);

type Exchange = Result<http::Response<bytes::Bytes>, TransportFailure>;
type EventHook<'a, U> = dyn FnMut(&U, &Event<'_>) -> Result<(), HookError> + 'a;
type SendHook<'a> = dyn FnMut(&mut Transmit) -> Result<(), HookError> + 'a;
type Fork = Box<dyn Transport + Send>;

/// What a request sent on its own thread reports back.
enum Report {
    /// The transport has taken this many body bytes.
    Taken(RequestId, u64),
    /// The exchange ended; the thread's transport comes back for the next request.
    Done(RequestId, Exchange, Option<Stop>, Fork),
}

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
    pilot: Pilot,
}

impl<U> std::fmt::Debug for Driver<'_, U> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut out = f.debug_struct("Driver");
        out.field("interrupt", &self.interrupt)
            .field("pilot", &self.pilot);
        out.finish_non_exhaustive()
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
            pilot: Pilot::new(READ_PIECE),
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
        hook: impl FnMut(&mut Transmit) -> Result<(), HookError> + 'a,
    ) -> Self {
        self.before_send = Box::new(hook);
        self
    }

    /// Hands at most `bytes` source bytes to the upload per `Read` action (default 64 KiB).
    pub fn read_piece(mut self, bytes: usize) -> Self {
        self.pilot = Pilot::new(bytes);
        self
    }
}

impl<U: Upload> Driver<'_, U> {
    /// Runs the upload until it is done: polls it, reads what it asks from `source`, sends
    /// its requests with `transport`, sleeps through its waits, and hands every result back.
    ///
    /// When the upload allows several requests in flight ([`Upload::max_in_flight`]) and the
    /// transport can [fork](Transport::fork), each request goes out on its own thread and
    /// connection, its body's source bytes read beforehand (so memory holds up to that many
    /// bodies); otherwise requests go one at a time, their bodies streamed from the source.
    ///
    /// Call it once per upload; calling it again (after an interrupt) continues the same
    /// upload, reporting requests that never got an answer as failed. After an error, save
    /// [`Upload::resume_state`] if the error allows a resume (`Interrupted`, or an
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
        let forks = (upload.max_in_flight() > 1)
            .then(|| (0..upload.max_in_flight()).map_while(|_| transport.fork()))
            .into_iter()
            .flatten()
            .collect();
        let stop = AtomicBool::new(false);
        self.pilot.start();
        std::thread::scope(|scope| {
            let (reports, inbox) = mpsc::channel();
            let flights = Vec::new();
            let mut crew = Crew {
                forks,
                flights,
                stop: &stop,
                reports,
                inbox,
            };
            let result = self.run(scope, &mut crew, upload, source, transport);
            // Requests still out stop at their next body read; the next drive reports them
            // to the upload as failed.
            stop.store(true, Ordering::SeqCst);
            result
        })
    }

    fn run<'s, S, T>(
        &mut self,
        scope: &'s Scope<'s, '_>,
        crew: &mut Crew<'s>,
        upload: &mut U,
        source: &mut S,
        transport: &mut T,
    ) -> Result<U::Output, DriveError>
    where
        S: Source + ?Sized,
        T: Transport + ?Sized,
    {
        loop {
            if self
                .interrupt
                .as_ref()
                .is_some_and(|f| f.load(Ordering::SeqCst))
            {
                return Err(DriveError::Interrupted);
            }
            let now = self.clock.now();
            let wait = match self.pilot.next(upload, now) {
                Step::Read { offset, max } => {
                    let read = source.read_at(offset, max).map_err(DriveError::from);
                    let event = read.and_then(|b| self.pilot.read(upload, now, offset, b));
                    source.release(upload.retained_from());
                    self.emit(upload, &event?)?;
                    continue;
                }
                Step::Send(mut transmit) => {
                    (self.before_send)(&mut transmit).map_err(DriveError::Hook)?;
                    let sending = self.pilot.sending(&mut transmit)?;
                    self.emit(upload, &Event::Sending { send: &transmit })?;
                    match crew.forks.pop() {
                        None => self.send(upload, sending, &transmit, source, transport)?,
                        Some(fork) => match read_body(source, &sending) {
                            Ok(body) => {
                                self.pilot
                                    .piece(upload, &sending, sending.source.start, &body)?;
                                crew.launch(scope, fork, transmit.request, sending, body);
                            }
                            Err(e) => {
                                crew.forks.push(fork);
                                self.pilot.outcome(upload, now, sending.id, None)?;
                                return Err(e.into());
                            }
                        },
                    }
                    source.release(upload.retained_from());
                    continue;
                }
                Step::Wait { until, first } => {
                    if first {
                        self.emit(upload, &Event::Waiting { until })?;
                    }
                    let deadline = match self.interrupt {
                        Some(_) => until.min(now + INTERRUPT_POLL),
                        None => until,
                    };
                    if crew.flights.is_empty() {
                        self.clock.sleep_until(deadline);
                        continue;
                    }
                    deadline.saturating_duration_since(now)
                }
                Step::Idle => INTERRUPT_POLL,
                Step::Report(event) => {
                    self.emit(upload, &event)?;
                    continue;
                }
                Step::Done(result) => return result,
            };
            match crew.inbox.recv_timeout(wait) {
                Ok(Report::Taken(id, taken)) => {
                    if let Some(sending) = crew.flights.iter_mut().find(|s| s.id == id)
                        && let Some(event) = self.pilot.taken(upload, sending, taken)
                    {
                        self.emit(upload, &event)?;
                    }
                }
                Ok(Report::Done(id, exchange, stop, fork)) => {
                    crew.forks.push(fork);
                    crew.flights.retain(|s| s.id != id);
                    let now = self.clock.now();
                    let event = self.pilot.outcome(upload, now, id, Some(exchange))?;
                    source.release(upload.retained_from());
                    if let Some(stop) = stop {
                        return Err(stop.into());
                    }
                    self.emit(upload, &event)?;
                }
                Err(_) => {}
            }
        }
    }

    fn emit(&mut self, upload: &U, event: &Event<'_>) -> Result<(), DriveError> {
        (self.on_event)(upload, event).map_err(DriveError::Hook)
    }

    /// Sends one request on this thread, its body streamed from the source, and hands the
    /// outcome to the upload.
    fn send<S, T>(
        &mut self,
        upload: &mut U,
        mut sending: Sending,
        transmit: &Transmit,
        source: &mut S,
        transport: &mut T,
    ) -> Result<(), DriveError>
    where
        S: Source + ?Sized,
        T: Transport + ?Sized,
    {
        let range = sending.source.clone();
        let reader = match (range.start < range.end).then(|| source.range(range.clone())) {
            None => None,
            Some(Ok(reader)) => Some((reader, range.start, range.end - range.start)),
            Some(Err(e)) => {
                let now = self.clock.now();
                self.pilot.outcome(upload, now, sending.id, None)?;
                return Err(e.into());
            }
        };
        let interrupt = self.interrupt.as_deref();
        let (pilot, on_event) = (&mut self.pilot, &mut self.on_event);
        let (prefix, suffix, id) = (sending.prefix.clone(), sending.suffix.clone(), sending.id);
        let mut observe = |sent: BodySent<'_>| -> Result<(), Stop> {
            if interrupt.is_some_and(|flag| flag.load(Ordering::SeqCst)) {
                return Err(Stop::Interrupted);
            }
            pilot.piece(upload, &sending, sent.source_offset, sent.source_bytes)?;
            match pilot.taken(upload, &mut sending, sent.sent) {
                Some(event) => on_event(upload, &event).map_err(Stop::Hook),
                None => Ok(()),
            }
        };
        let mut body = RequestBody::new(prefix, reader, suffix, Some(&mut observe));
        let exchange = transport.send(&transmit.request, &mut body);
        let stop = body.take_abort();
        drop(body);
        let now = self.clock.now();
        let event = self.pilot.outcome(upload, now, id, Some(exchange))?;
        // The upload has the outcome either way; a stopped body is the reason to stop.
        if let Some(stop) = stop {
            return Err(stop.into());
        }
        source.release(upload.retained_from());
        self.emit(upload, &event)
    }
}

/// The requests sent on their own threads: idle transports, the requests out, and how they
/// report back.
struct Crew<'s> {
    forks: Vec<Fork>,
    flights: Vec<Sending>,
    stop: &'s AtomicBool,
    reports: mpsc::Sender<Report>,
    inbox: mpsc::Receiver<Report>,
}

impl<'s> Crew<'s> {
    /// Sends `request` with `fork` on a thread of its own, reporting body progress and then
    /// the outcome (with the transport, for the next request).
    fn launch(
        &mut self,
        scope: &'s Scope<'s, '_>,
        mut fork: Fork,
        request: http::Request<()>,
        sending: Sending,
        bytes: Bytes,
    ) {
        let (stop, reports) = (self.stop, self.reports.clone());
        let (id, start, len) = (sending.id, sending.source.start, bytes.len() as u64);
        let (prefix, suffix) = (sending.prefix.clone(), sending.suffix.clone());
        self.flights.push(sending);
        scope.spawn(move || {
            let reader = (len > 0).then(|| (Box::new(bytes.reader()) as Box<dyn Read>, start, len));
            let progress = reports.clone();
            let mut observe = |sent: BodySent<'_>| -> Result<(), Stop> {
                if stop.load(Ordering::SeqCst) {
                    return Err(Stop::Interrupted);
                }
                // The driver may have stopped listening; the body then stops at its next read.
                let _ = progress.send(Report::Taken(id, sent.sent));
                Ok(())
            };
            let mut body = RequestBody::new(prefix, reader, suffix, Some(&mut observe));
            let exchange = fork.send(&request, &mut body);
            let stopped = body.take_abort();
            drop(body);
            let _ = reports.send(Report::Done(id, exchange, stopped, fork));
        });
    }
}

/// The source bytes of a body sent on its own thread, read whole beforehand.
fn read_body<S: Source + ?Sized>(source: &mut S, sending: &Sending) -> Result<Bytes, SourceError> {
    let range = sending.source.clone();
    let mut bytes = Vec::with_capacity(usize::try_from(range.end - range.start).unwrap_or(0));
    if range.start < range.end {
        let reader = source.range(range.clone())?;
        let read = reader.take(range.end - range.start).read_to_end(&mut bytes);
        read.map_err(|source| SourceError::Io {
            offset: range.start,
            source,
        })?;
    }
    let ended_at = range.start + bytes.len() as u64;
    if ended_at < range.end {
        return Err(SourceError::Ended {
            ended_at,
            needed: range.end,
        });
    }
    Ok(bytes.into())
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
