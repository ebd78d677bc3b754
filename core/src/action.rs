//! What a driver is told to do next, and what it reports back.
//!
//! Every upload in this crate has the same rhythm, captured by the [`Upload`] trait: the driver
//! calls [`Upload::poll_action`] and carries out the [`Action`] it gets, then feeds the result
//! back with [`Upload::handle_read`], [`Upload::handle_response`] or [`Upload::handle_failure`],
//! and polls again, until it gets [`Action::Done`]. While a body is sent, the driver may also
//! hand its source bytes to [`Upload::handle_sent`] (when [`Transmit::report_sent`] asks for
//! them).
//!
//! # The loop, with several requests in flight
//!
//! Each [`Transmit`] is handed out **once**. An upload that allows several requests at once
//! ([`Upload::max_in_flight`] > 1, media APPENDs) hands out another on the next poll while it
//! has one due; a poll that has nothing to hand out answers [`Action::Idle`] (requests are in
//! flight: hand in one of their outcomes) or [`Action::Wait`] (nothing until then, or until an
//! outcome arrives). Outcomes may be handed in in any order. So a driver:
//!
//! 1. polls, and carries out every `Read` and `Send` it gets, polling again after each;
//! 2. on `Idle`, waits for any in-flight request to end, hands its outcome in, and polls;
//! 3. on `Wait(t)`, waits until `t` or until an in-flight request ends, whichever is first;
//! 4. stops on `Done`.
//!
//! A driver that sends one request at a time (sends it, hands in its outcome, then polls)
//! never sees `Idle`.

use std::fmt;
use std::ops::Range;
use std::time::Instant;

use bytes::Bytes;

use crate::error::{Error, UsageError};

/// Identifies one request handed out in an [`Action::Send`].
///
/// The driver passes it back with the response or failure so the core can match them; a
/// response with any other id is a [`UsageError::UnknownRequest`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RequestId(pub(crate) u64);

impl RequestId {
    /// An id with the given number, for [`Upload`] implementations outside this crate and for
    /// tests of drivers. An upload must never hand out the same id twice.
    pub fn new(number: u64) -> Self {
        RequestId(number)
    }

    /// The id as a number, for logs. Ids grow by one per request an upload hands out.
    pub fn get(self) -> u64 {
        self.0
    }
}

/// The body of a request: a prefix the core built, a byte range of the caller's source, and a
/// suffix the core built, sent in that order.
///
/// The source bytes are never copied into the core: the driver reads `source` from its own
/// data (a file, a buffer, a stream it kept) and sends `prefix`, those bytes and `suffix`.
#[derive(Clone, PartialEq, Eq, Default)]
pub struct Body {
    /// Bytes to send before the source range (JSON metadata, a multipart header).
    pub prefix: Bytes,
    /// The half-open byte range of the source to send; empty when no source bytes are sent.
    pub source: Range<u64>,
    /// Bytes to send after the source range (a multipart trailer).
    pub suffix: Bytes,
}

impl Body {
    /// A body with no bytes at all.
    pub fn empty() -> Self {
        Body::default()
    }

    /// A body that is exactly `source`, a range of the caller's source.
    pub fn source(source: Range<u64>) -> Self {
        Body {
            source,
            ..Body::default()
        }
    }

    /// A body made only of bytes the core built (for example JSON metadata).
    pub fn bytes(bytes: Bytes) -> Self {
        Body {
            prefix: bytes,
            ..Body::default()
        }
    }

    /// The number of source bytes in the body.
    pub fn source_len(&self) -> u64 {
        self.source.end.saturating_sub(self.source.start)
    }

    /// The total length of the body in bytes: what `Content-Length` says.
    pub fn len(&self) -> u64 {
        self.prefix.len() as u64 + self.source_len() + self.suffix.len() as u64
    }

    /// Whether the body has no bytes at all.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl fmt::Debug for Body {
    // The prefix may be caller metadata; show sizes, not contents.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Body")
            .field("prefix_len", &self.prefix.len())
            .field("source", &self.source)
            .field("suffix_len", &self.suffix.len())
            .finish()
    }
}

/// A request the driver must send now, handed out once.
///
/// Its source range never starts before [`Upload::retained_from`]: a driver of a stream may
/// drop the bytes below that.
///
/// Send `request` (method, URI, headers exactly as given) with the bytes of `body`, then report
/// the outcome with [`Upload::handle_response`] (any status, including 4xx/5xx and 308: do not
/// follow redirects or turn statuses into errors) or [`Upload::handle_failure`] (no complete
/// response arrived). Every `Transmit` handed out must get exactly one outcome, unless the
/// upload is over first.
pub struct Transmit {
    /// Pass this back with the response or failure.
    pub id: RequestId,
    /// Method, URI and headers. The URI may be a session URI (a bearer capability) and the
    /// headers may carry credentials: never log them; this type's `Debug` redacts them.
    pub request: http::Request<()>,
    /// What to send as the request body.
    pub body: Body,
    /// The upload wants to see this body's source bytes as they go out (GCS checksums them
    /// while they are sent rather than in a [`Read`] before): hand each piece to
    /// [`Upload::handle_sent`] as it is handed to the transport. A driver that does not is
    /// asked for the same bytes by a later [`Action::Read`] instead; nothing is lost, but the
    /// source is read twice.
    pub report_sent: bool,
}

impl Transmit {
    /// A request to hand out in [`Action::Send`], from its parts (for [`Upload`]
    /// implementations).
    pub fn new(
        id: RequestId,
        method: http::Method,
        uri: http::Uri,
        headers: http::HeaderMap,
        body: Body,
    ) -> Self {
        let mut request = http::Request::new(());
        *request.method_mut() = method;
        *request.uri_mut() = uri;
        *request.headers_mut() = headers;
        Transmit {
            id,
            request,
            body,
            report_sent: false,
        }
    }
}

impl fmt::Debug for Transmit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Transmit")
            .field("id", &self.id)
            .field("method", self.request.method())
            .field("uri", &crate::secret::RedactedUri(self.request.uri()))
            .field(
                "headers",
                &crate::secret::RedactedHeaders(self.request.headers()),
            )
            .field("body", &self.body)
            .field("report_sent", &self.report_sent)
            .finish()
    }
}

/// A range of the source the core needs to see before it can go on (to checksum it, or to
/// learn where a source of unknown size ends).
///
/// Hand the bytes in with [`Upload::handle_read`], starting at `range.start`: any non-empty
/// prefix of the range (the next poll asks for the rest), or an empty slice when the source
/// ends at `range.start` (which tells the core the total size). The range is never longer than
/// the upload's chunk size, and never starts before an earlier read's end (except tus with
/// checksums, which reads a re-sent chunk again, never below [`Upload::retained_from`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Read {
    /// The half-open byte range of the source to hand in.
    pub range: Range<u64>,
}

/// What the driver must do next. Returned by [`Upload::poll_action`].
#[derive(Debug)]
#[must_use = "the driver must carry out the action"]
// `Send` is the common case; boxing it would cost an allocation per request.
#[allow(clippy::large_enum_variant)]
pub enum Action<T> {
    /// Read this range of the source and hand it in with [`Upload::handle_read`].
    Read(Read),
    /// Send this request and hand in its response or failure. It is handed out once: poll
    /// again for the next action (possibly another request, when several may be in flight).
    Send(Transmit),
    /// Nothing to do until this instant (a retry backoff or a processing delay) or until an
    /// in-flight request's outcome is handed in, whichever comes first; then poll again.
    Wait(Instant),
    /// Requests are in flight and nothing else is due: hand in an outcome, then poll again.
    Idle,
    /// The upload is over: this is the outcome, and every later poll returns the same.
    Done(Result<T, Error>),
}

/// Why no complete HTTP response arrived for a request.
///
/// The driver classifies its transport errors into these; all of them may mean the server
/// stored some, all or none of the body, so the core follows each with a status query. Two
/// of them will not go away by waiting ([`TransportFailure::is_lasting`]): the core retries
/// those once, then gives up.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum TransportFailure {
    /// The host name could not be resolved (DNS): a typo in the URL does not mend itself.
    Resolve,
    /// The server refused the connection (nothing listens on the port).
    Refused,
    /// The TLS handshake failed: for example, the server's certificate is not trusted.
    Tls,
    /// The connection could not be established for another reason (unreachable network…).
    Connect,
    /// The connection was reset or closed while sending the request or before a response.
    Reset,
    /// No response within the driver's timeout.
    Timeout,
    /// The response started but ended early (truncated headers or body).
    TruncatedResponse,
    /// Any other I/O failure of the transport.
    Other,
}

impl TransportFailure {
    /// Whether the failure will not go away by waiting (an unresolvable name, an untrusted
    /// certificate): the core retries it at most once, soon, and then ends the upload with
    /// [`crate::Error::Transport`].
    pub fn is_lasting(self) -> bool {
        matches!(self, TransportFailure::Resolve | TransportFailure::Tls)
    }
}

impl fmt::Display for TransportFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        TransportDisplay(*self, None).fmt(f)
    }
}

/// A transport failure in words, naming the server when it is known.
pub(crate) struct TransportDisplay<'a>(
    pub(crate) TransportFailure,
    pub(crate) Option<&'a crate::error::Endpoint>,
);

impl fmt::Display for TransportDisplay<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let Some(endpoint) = self.1 else {
            return f.write_str(match self.0 {
                TransportFailure::Resolve => "could not resolve the host name",
                TransportFailure::Refused => "connection refused",
                TransportFailure::Tls => "TLS handshake failed (certificate not trusted?)",
                TransportFailure::Connect => "could not connect",
                TransportFailure::Reset => "connection reset",
                TransportFailure::Timeout => "timed out",
                TransportFailure::TruncatedResponse => "truncated response",
                TransportFailure::Other => "transport error",
            });
        };
        let host = &endpoint.host;
        match self.0 {
            TransportFailure::Resolve => write!(f, "could not resolve host {host}"),
            TransportFailure::Refused => write!(f, "connection refused by {endpoint}"),
            TransportFailure::Tls => write!(
                f,
                "TLS handshake with {host} failed (certificate not trusted?)"
            ),
            TransportFailure::Connect => write!(f, "could not connect to {endpoint}"),
            TransportFailure::Reset => write!(f, "connection to {host} reset"),
            TransportFailure::Timeout => write!(f, "timed out waiting for {host}"),
            TransportFailure::TruncatedResponse => write!(f, "truncated response from {host}"),
            TransportFailure::Other => write!(f, "transport error talking to {host}"),
        }
    }
}

/// Counters every upload keeps, for reporting (the CLI's `--json`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Stats {
    /// Requests handed out.
    pub requests: u64,
    /// Retries scheduled after failures.
    pub retries: u64,
    /// Source bytes handed out in request bodies (re-sent bytes count again).
    pub bytes_sent: u64,
    /// What the server already held when a resumed upload learned it (its first answer).
    pub resumed_from: Option<u64>,
    /// Status answers read while the server processed the upload (media STATUS, M4;
    /// compliance job polls, C3).
    pub status_polls: u32,
}

/// How far an upload has come, for a progress display.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Progress {
    /// Source bytes the server acknowledged holding ([`Upload::persisted`]).
    pub acknowledged: u64,
    /// Source bytes handed out in requests that have not been answered yet (with several in
    /// flight, possibly beyond the acknowledged prefix).
    pub in_flight: u64,
    /// The source's size, once known.
    pub total: Option<u64>,
}

/// The interface every upload state machine in this crate implements, so one driver loop can
/// drive any of them.
///
/// The loop is in the [module docs](self): poll; carry out the action; hand in its result;
/// poll again. Each request is handed out once; an upload may have up to
/// [`Upload::max_in_flight`] of them out at a time.
pub trait Upload {
    /// What a successful upload reports.
    type Output;

    /// What a driver saves so a later process can resume the upload (serialisable with the
    /// `serde` feature; [`crate::SavedState`] holds any protocol's).
    type State: Clone + PartialEq + fmt::Debug;

    /// The next thing to do, given the current time. Never blocks, never panics.
    fn poll_action(&mut self, now: Instant) -> Action<Self::Output>;

    /// The most requests this upload may have in flight at once (a driver sizes its
    /// connections by it): 1 unless its protocol and settings allow more.
    fn max_in_flight(&self) -> usize {
        1
    }

    /// What to save to resume this upload in a later process, when there is something to
    /// resume: save it whenever it changes, before sending the next request. `None` before
    /// the upload exists on the server, and once it has succeeded. After an error it is still
    /// there: resume it when [`Error::is_resumable`] says so, discard it otherwise.
    fn resume_state(&self) -> Option<Self::State>;

    /// Asks the upload to stop: where the protocol can end the upload on the server, the next
    /// request does (GCS: `DELETE` the session, G10); otherwise, or once that is answered, the
    /// outcome is [`Error::Cancelled`]. A completion that arrives first still wins.
    fn cancel(&mut self);

    /// Counters for reporting.
    fn stats(&self) -> Stats;

    /// How far the upload has come.
    fn progress(&self) -> Progress;

    /// Source bytes the server has acknowledged holding, from the start: they are never sent
    /// again, and the count never decreases. For progress display. (A resumed upload may
    /// still ask to read bytes below it, to check them: see [`Upload::retained_from`].)
    fn persisted(&self) -> u64;

    /// The lowest source offset the upload may still ask to read or send: a driver of a
    /// non-seekable source may drop every byte below it. It never decreases, and is at most
    /// [`Upload::persisted`]; by default it is that.
    fn retained_from(&self) -> u64 {
        self.persisted()
    }

    /// Hand in source bytes asked for by an [`Action::Read`]: a non-empty prefix of the range,
    /// starting at `offset == range.start`; or an empty slice to say the source ends at
    /// `offset`. If the source's size was declared and it ends early, the upload ends with
    /// [`UsageError::SourceTooShort`] (sending it would alter what the user uploads).
    ///
    /// # Errors
    /// [`UsageError`] when nothing was asked, `offset` is not where the read starts, more bytes
    /// than asked are given, or the upload is over. The upload's state is unchanged then.
    fn handle_read(&mut self, now: Instant, offset: u64, bytes: &[u8]) -> Result<(), UsageError>;

    /// Hand in source bytes of the body of the request `id` as they are handed to the
    /// transport, when its [`Transmit::report_sent`] is set: in order, each piece starting where
    /// the previous one ended (a retried body starts again at its range's start), and before
    /// the request's response or failure is handed in. Bytes the upload has already seen are
    /// skipped. Uploads that never set the flag ignore the call.
    ///
    /// # Errors
    /// [`UsageError`] when `id` is not a request in flight, the bytes lie outside its source
    /// range or leave a gap, or the upload is over. The upload's state is unchanged then.
    fn handle_sent(&mut self, id: RequestId, offset: u64, bytes: &[u8]) -> Result<(), UsageError> {
        let _ = (id, offset, bytes);
        Ok(())
    }

    /// The last retry the upload scheduled (what failed, the wait, the attempt count), so a
    /// driver can show every retry when the [`Action::Wait`] it causes begins (its `until`
    /// equals the retry's). `None` before the first.
    fn last_retry(&self) -> Option<&crate::retry::Retrying> {
        None
    }

    /// Hand in the complete response to the request `id` (any status).
    ///
    /// # Errors
    /// [`UsageError`] when `id` is not a request in flight or the upload is over.
    fn handle_response(
        &mut self,
        now: Instant,
        id: RequestId,
        response: http::Response<Bytes>,
    ) -> Result<(), UsageError>;

    /// Report that the request `id` got no complete response.
    ///
    /// # Errors
    /// [`UsageError`] when `id` is not a request in flight or the upload is over.
    fn handle_failure(
        &mut self,
        now: Instant,
        id: RequestId,
        failure: TransportFailure,
    ) -> Result<(), UsageError>;
}
