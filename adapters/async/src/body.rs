//! The body of one request: a stream of pieces the driver reads from the source while the
//! transport sends them, of exactly `Content-Length` bytes, never more or fewer.
//!
//! The driver and the transport meet in a small bounded queue (two pieces of at most 64 KiB):
//! the driver reads the next piece only when the transport has taken one, so a chunk of any
//! size costs about 128 KiB of memory here, and the body is `'static`, `Send` and `Sync`, as
//! HTTP clients that poll bodies on their own tasks (hyper, reqwest) require.

use std::collections::VecDeque;
use std::fmt;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};

use bytes::Bytes;
use http_body::{Frame, SizeHint};

/// How many pieces may wait in the queue between the driver and the transport.
const QUEUE_PIECES: usize = 2;

/// Why a [`RequestBody`] ended with an error instead of its last byte: the driver stopped it.
///
/// A transport that gets this error from the body must fail the request (close the
/// connection) rather than send fewer bytes than `Content-Length` says; the driver has
/// already stopped waiting for its outcome.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("the request body was stopped by the driver: {reason}")]
pub struct BodyError {
    reason: &'static str,
}

impl BodyError {
    pub(crate) const SOURCE: BodyError = BodyError {
        reason: "the source could not give its bytes",
    };
    pub(crate) const HOOK: BodyError = BodyError {
        reason: "the caller's hook failed",
    };
    pub(crate) const REFUSED: BodyError = BodyError {
        reason: "the upload refused the bytes sent",
    };
    pub(crate) const DROPPED: BodyError = BodyError {
        reason: "the upload future was dropped",
    };
}

/// The state the driver's [`BodyWriter`] and the transport's [`RequestBody`] share.
#[derive(Default)]
struct Shared {
    queue: VecDeque<Bytes>,
    /// Bytes pushed by the writer.
    pushed: u64,
    /// Bytes handed to the transport.
    taken: u64,
    /// Every byte was pushed.
    finished: bool,
    /// The writer stopped early; the body reports this once, then ends.
    stopped: Option<BodyError>,
    /// The error was reported to the transport.
    reported: bool,
    /// The transport dropped the body.
    body_dropped: bool,
    /// Room for every piece: the body is read whole before it is sent.
    unbounded: bool,
    /// The transport, waiting for a piece.
    body_waker: Option<Waker>,
    /// The driver, waiting for room in the queue or for the transport to take a piece.
    writer_waker: Option<Waker>,
}

fn lock(shared: &Mutex<Shared>) -> MutexGuard<'_, Shared> {
    // A panic while holding the lock leaves plain counters behind: still consistent.
    shared
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// The body of one request, handed to a [`Transport`](crate::Transport) inside the
/// `http::Request`.
///
/// Its length is known up front ([`RequestBody::len`], also the request's `Content-Length`
/// header and this body's exact [`http_body::Body::size_hint`]); its bytes arrive while the
/// transport sends them. Poll it as an [`http_body::Body`] (hyper, `reqwest::Body::wrap`) or as
/// a [`futures_core::Stream`] of `Bytes` until it ends. An `Err(BodyError)` means the driver
/// stopped the upload mid-body: fail the request, never send it short.
pub struct RequestBody {
    shared: Arc<Mutex<Shared>>,
    len: u64,
}

impl RequestBody {
    /// A body that is exactly `bytes`, complete from the start (for transports' own tests,
    /// and for requests whose body the core built whole).
    pub fn from_bytes(bytes: impl Into<Bytes>) -> Self {
        let bytes = bytes.into();
        let len = bytes.len() as u64;
        let mut shared = Shared {
            pushed: len,
            finished: true,
            ..Shared::default()
        };
        if !bytes.is_empty() {
            shared.queue.push_back(bytes);
        }
        RequestBody {
            shared: Arc::new(Mutex::new(shared)),
            len,
        }
    }

    /// A body of `len` bytes fed by the returned writer; `whole`: the queue takes every piece
    /// at once (the body is read before it is sent), else two at a time.
    pub(crate) fn channel(len: u64, whole: bool) -> (RequestBody, BodyWriter) {
        let shared = Arc::new(Mutex::new(Shared {
            unbounded: whole,
            ..Shared::default()
        }));
        let writer = BodyWriter {
            shared: shared.clone(),
            len,
        };
        (RequestBody { shared, len }, writer)
    }

    /// The body's length in bytes: what the request's `Content-Length` says.
    pub fn len(&self) -> u64 {
        self.len
    }

    /// Whether the body has no bytes at all.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Bytes of this body handed out by polling it so far.
    pub fn sent(&self) -> u64 {
        lock(&self.shared).taken
    }

    fn poll_piece(&self, cx: &mut Context<'_>) -> Poll<Option<Result<Bytes, BodyError>>> {
        let mut shared = lock(&self.shared);
        if let Some(error) = shared.stopped {
            if shared.reported {
                return Poll::Ready(None);
            }
            shared.reported = true;
            return Poll::Ready(Some(Err(error)));
        }
        if let Some(piece) = shared.queue.pop_front() {
            shared.taken += piece.len() as u64;
            if let Some(waker) = shared.writer_waker.take() {
                waker.wake();
            }
            return Poll::Ready(Some(Ok(piece)));
        }
        if shared.finished {
            return Poll::Ready(None);
        }
        shared.body_waker = Some(cx.waker().clone());
        Poll::Pending
    }
}

impl http_body::Body for RequestBody {
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        self.poll_piece(cx)
            .map(|piece| piece.map(|r| r.map(Frame::data)))
    }

    fn is_end_stream(&self) -> bool {
        let shared = lock(&self.shared);
        shared.stopped.is_none() && shared.finished && shared.queue.is_empty()
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::with_exact(self.len)
    }
}

impl futures_core::Stream for RequestBody {
    type Item = Result<Bytes, BodyError>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.poll_piece(cx)
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        let shared = lock(&self.shared);
        let left = usize::try_from(self.len - shared.taken).unwrap_or(usize::MAX);
        (0, Some(left))
    }
}

impl Drop for RequestBody {
    fn drop(&mut self) {
        let mut shared = lock(&self.shared);
        shared.body_dropped = true;
        shared.queue.clear();
        if let Some(waker) = shared.writer_waker.take() {
            waker.wake();
        }
    }
}

impl fmt::Debug for RequestBody {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RequestBody")
            .field("len", &self.len)
            .field("sent", &self.sent())
            .finish_non_exhaustive()
    }
}

/// The driver's end of a [`RequestBody`]. Dropping it before every byte was pushed stops the
/// body with an error, so a dropped upload future never lets a request end short.
pub(crate) struct BodyWriter {
    shared: Arc<Mutex<Shared>>,
    len: u64,
}

impl BodyWriter {
    /// Ready when the queue has room for a piece (`true`), or when the transport dropped the
    /// body and wants no more (`false`).
    pub(crate) fn poll_room(&self, cx: &mut Context<'_>) -> Poll<bool> {
        let mut shared = lock(&self.shared);
        if shared.body_dropped {
            return Poll::Ready(false);
        }
        if shared.unbounded || shared.queue.len() < QUEUE_PIECES {
            return Poll::Ready(true);
        }
        shared.writer_waker = Some(cx.waker().clone());
        Poll::Pending
    }

    /// Waits for room in the queue; `false` when the transport dropped the body.
    pub(crate) async fn room(&self) -> bool {
        std::future::poll_fn(|cx| self.poll_room(cx)).await
    }

    /// Queues `piece`. The caller never pushes past the body's length.
    pub(crate) fn push(&self, piece: Bytes) {
        let mut shared = lock(&self.shared);
        if shared.body_dropped || piece.is_empty() {
            return;
        }
        debug_assert!(shared.pushed + piece.len() as u64 <= self.len);
        shared.pushed += piece.len() as u64;
        shared.queue.push_back(piece);
        if let Some(waker) = shared.body_waker.take() {
            waker.wake();
        }
    }

    /// Marks the body complete; it must hold exactly its length by now.
    pub(crate) fn finish(&self) {
        let mut shared = lock(&self.shared);
        if shared.body_dropped {
            return;
        }
        debug_assert_eq!(shared.pushed, self.len);
        if shared.pushed == self.len {
            shared.finished = true;
        } else {
            shared.stopped = Some(BodyError::SOURCE);
        }
        if let Some(waker) = shared.body_waker.take() {
            waker.wake();
        }
    }

    /// Stops the body: the transport's next poll gets `error`.
    pub(crate) fn stop(&self, error: BodyError) {
        let mut shared = lock(&self.shared);
        if shared.finished && shared.queue.is_empty() {
            return;
        }
        shared.stopped.get_or_insert(error);
        shared.queue.clear();
        if let Some(waker) = shared.body_waker.take() {
            waker.wake();
        }
    }

    /// Bytes the transport has taken so far; wakes the current task when it takes more.
    pub(crate) fn poll_taken(&self, cx: &mut Context<'_>) -> u64 {
        let mut shared = lock(&self.shared);
        shared.writer_waker = Some(cx.waker().clone());
        shared.taken
    }
}

impl Drop for BodyWriter {
    fn drop(&mut self) {
        // An unfinished body must end in an error, never look complete.
        self.stop(BodyError::DROPPED);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures_core::Stream;
    use std::task::Waker;

    fn poll(body: &mut RequestBody) -> Poll<Option<Result<Bytes, BodyError>>> {
        let mut cx = Context::from_waker(Waker::noop());
        Pin::new(body).poll_next(&mut cx)
    }

    #[test]
    fn pieces_arrive_in_order_and_the_queue_is_bounded() {
        let (mut body, writer) = RequestBody::channel(6, false);
        let mut cx = Context::from_waker(Waker::noop());
        assert!(poll(&mut body).is_pending());
        assert_eq!(writer.poll_room(&mut cx), Poll::Ready(true));
        writer.push(Bytes::from_static(b"ab"));
        writer.push(Bytes::from_static(b"cd"));
        assert!(
            writer.poll_room(&mut cx).is_pending(),
            "two pieces fill the queue"
        );
        assert_eq!(
            poll(&mut body),
            Poll::Ready(Some(Ok(Bytes::from_static(b"ab"))))
        );
        assert_eq!(writer.poll_taken(&mut cx), 2);
        writer.push(Bytes::from_static(b"ef"));
        writer.finish();
        assert!(!http_body::Body::is_end_stream(&body));
        assert_eq!(
            poll(&mut body),
            Poll::Ready(Some(Ok(Bytes::from_static(b"cd"))))
        );
        assert_eq!(
            poll(&mut body),
            Poll::Ready(Some(Ok(Bytes::from_static(b"ef"))))
        );
        assert!(http_body::Body::is_end_stream(&body));
        assert_eq!(poll(&mut body), Poll::Ready(None));
        assert_eq!(body.sent(), 6);
        assert_eq!(http_body::Body::size_hint(&body).exact(), Some(6));
    }

    // G4: a writer dropped mid-body (the upload future was dropped) ends the body with an
    // error, so the transport closes the connection instead of finishing a short request.
    #[test]
    fn a_dropped_writer_stops_the_body_with_an_error() {
        let (mut body, writer) = RequestBody::channel(10, false);
        writer.push(Bytes::from_static(b"0123"));
        drop(writer);
        assert_eq!(poll(&mut body), Poll::Ready(Some(Err(BodyError::DROPPED))));
        assert_eq!(poll(&mut body), Poll::Ready(None));
        assert!(!http_body::Body::is_end_stream(&body));
    }

    #[test]
    fn a_dropped_body_tells_the_writer_to_stop() {
        let (body, writer) = RequestBody::channel(10, false);
        drop(body);
        let mut cx = Context::from_waker(Waker::noop());
        assert_eq!(writer.poll_room(&mut cx), Poll::Ready(false));
    }

    #[test]
    fn from_bytes_is_the_bytes() {
        let mut body = RequestBody::from_bytes(&b"abc"[..]);
        assert_eq!(body.len(), 3);
        assert_eq!(
            poll(&mut body),
            Poll::Ready(Some(Ok(Bytes::from_static(b"abc"))))
        );
        assert_eq!(poll(&mut body), Poll::Ready(None));
        let empty = RequestBody::from_bytes(Bytes::new());
        assert!(empty.is_empty() && http_body::Body::is_end_stream(&empty));
    }
}
