//! Where the bytes come from: anything `AsyncRead + AsyncSeek` (a file), read where asked, or
//! a `Stream` of `Bytes` (a pipe, a network body) of which only the bytes that may still be
//! sent are kept.
//!
//! The I/O traits are `futures-io`'s, the runtime-neutral ones: smol and async-std types
//! implement them directly, and tokio's types are adapted by [`SeekableSource::tokio`] (the
//! `tokio` feature) or `tokio_util::compat`.

use std::collections::VecDeque;
use std::future::Future;
use std::io::{self, SeekFrom};
use std::ops::Range;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::{Bytes, BytesMut};
use futures_core::Stream;
use futures_io::{AsyncRead, AsyncSeek};
use resumable_core::driver::{SourceError, StreamError};

/// The bytes of an upload, as the driver reads them.
///
/// The driver calls [`Source::read_at`] for each `Read` action (so the core can checksum the
/// bytes or find where the source ends) and, piece by piece, for the source part of each
/// request body while the transport sends it; it calls [`Source::release`] whenever it learns
/// that earlier bytes will not be asked for again. Implemented by [`SeekableSource`] and
/// [`StreamSource`].
///
/// `read_at` must be cancel-safe: if its future is dropped, a later call with any offset
/// still returns the right bytes.
pub trait Source {
    /// Up to `max` bytes of the source starting at `offset`: at least one byte, unless the
    /// source ends at `offset` (then none). `max` is at least 1.
    ///
    /// # Errors
    /// [`SourceError`] when the bytes cannot be read.
    fn read_at(
        &mut self,
        offset: u64,
        max: usize,
    ) -> impl Future<Output = Result<Bytes, SourceError>>;

    /// Tells the source that bytes before `offset` will not be asked for again (the server
    /// holds them, or no later request starts before `offset`), so it may drop them. Offsets
    /// never go back.
    fn release(&mut self, offset: u64) {
        let _ = offset;
    }
}

impl<S: Source + ?Sized> Source for &mut S {
    fn read_at(
        &mut self,
        offset: u64,
        max: usize,
    ) -> impl Future<Output = Result<Bytes, SourceError>> {
        (**self).read_at(offset, max)
    }

    fn release(&mut self, offset: u64) {
        (**self).release(offset)
    }
}

/// A source that can be read anywhere (a file, an in-memory cursor): every request body is
/// streamed from it in pieces of at most 64 KiB while the transport sends them, so memory does
/// not depend on the file's or the chunk's size.
///
/// Create it with [`SeekableSource::new`] (any `futures-io` `AsyncRead + AsyncSeek`, such as
/// `smol::fs::File` or `futures::io::Cursor`) or [`SeekableSource::tokio`] (a `tokio::fs::File`),
/// then pass it to the driver. Byte 0 of the upload is byte 0 of the reader.
#[derive(Debug)]
pub struct SeekableSource<R> {
    reader: R,
    /// Where the reader is, when known (saves a seek per sequential read). Unknown while a
    /// read or seek is under way, so a dropped future leads to a fresh seek.
    position: Option<u64>,
}

impl<R: AsyncRead + AsyncSeek + Unpin> SeekableSource<R> {
    /// Wraps a reader that can seek.
    pub fn new(reader: R) -> Self {
        SeekableSource {
            reader,
            position: None,
        }
    }

    /// The reader back.
    pub fn into_inner(self) -> R {
        self.reader
    }
}

#[cfg(feature = "tokio")]
impl<R> SeekableSource<tokio_util::compat::Compat<R>>
where
    R: tokio::io::AsyncRead + tokio::io::AsyncSeek + Unpin,
{
    /// Wraps a tokio reader that can seek (a `tokio::fs::File`), through `tokio_util::compat`.
    pub fn tokio(reader: R) -> Self {
        use tokio_util::compat::TokioAsyncReadCompatExt as _;
        SeekableSource::new(reader.compat())
    }
}

impl<R: AsyncRead + AsyncSeek + Unpin> Source for SeekableSource<R> {
    async fn read_at(&mut self, offset: u64, max: usize) -> Result<Bytes, SourceError> {
        if self.position != Some(offset) {
            self.position = None;
            let reader = &mut self.reader;
            std::future::poll_fn(|cx| {
                Pin::new(&mut *reader).poll_seek(cx, SeekFrom::Start(offset))
            })
            .await
            .map_err(|source| SourceError::Io { offset, source })?;
            self.position = Some(offset);
        }
        self.position = None;
        let mut buffer = BytesMut::zeroed(max);
        let reader = &mut self.reader;
        let n = std::future::poll_fn(|cx| {
            loop {
                match Pin::new(&mut *reader).poll_read(cx, &mut buffer[..]) {
                    Poll::Ready(Err(e)) if e.kind() == io::ErrorKind::Interrupted => continue,
                    other => return other,
                }
            }
        })
        .await
        .map_err(|source| SourceError::Io { offset, source })?;
        let n = n.min(max);
        buffer.truncate(n);
        self.position = Some(offset + n as u64);
        Ok(buffer.freeze())
    }
}

/// A source that can only be read once, front to back: a [`Stream`] of `Bytes` items (stdin
/// through a reader-to-stream adapter, a network body, a generator) whose size need not be
/// known.
///
/// It keeps a window of the bytes that may still have to be sent: from the start of the
/// latest request's range (or the server's persisted count, when later) to the furthest byte
/// received. Bytes before the window are dropped as the driver [releases](Source::release)
/// them, and bytes the server already holds are skipped, not kept, when a resumed upload reads
/// past them. With the GCS core the window stays within about two chunks (plus the rest of the
/// stream item it ends in: items are sliced, not copied). Asking for a dropped byte is a
/// [`SourceError::NotBuffered`], never a silent skip.
pub struct StreamSource<S> {
    stream: S,
    /// The bytes `window_start..window_start + window_len` of the stream, in items.
    window: VecDeque<Bytes>,
    window_start: u64,
    window_len: u64,
    /// Bytes before this may be dropped.
    floor: u64,
    /// The stream ended at the window's end.
    ended: bool,
    peak_window: u64,
}

impl<S, E> StreamSource<S>
where
    S: Stream<Item = Result<Bytes, E>> + Unpin,
    E: Into<StreamError>,
{
    /// Wraps a stream positioned at byte 0 of the upload. Pin a stream that is not `Unpin`
    /// with `Box::pin` first.
    pub fn new(stream: S) -> Self {
        StreamSource {
            stream,
            window: VecDeque::new(),
            window_start: 0,
            window_len: 0,
            floor: 0,
            ended: false,
            peak_window: 0,
        }
    }
}

impl<S> StreamSource<S> {
    /// The bytes of the stream currently kept.
    pub fn window(&self) -> Range<u64> {
        self.window_start..self.window_end()
    }

    /// The most bytes the window has held at once (for diagnostics and tests).
    pub fn peak_window(&self) -> u64 {
        self.peak_window
    }

    /// The stream back (positioned after the furthest item received).
    pub fn into_inner(self) -> S {
        self.stream
    }

    fn window_end(&self) -> u64 {
        self.window_start + self.window_len
    }

    /// Drops the kept bytes before `to`.
    fn trim(&mut self, to: u64) {
        while self.window_start < to {
            let Some(front) = self.window.front_mut() else {
                // Bytes not yet received are dropped when they arrive.
                break;
            };
            let drop = (to - self.window_start).min(front.len() as u64);
            if drop == front.len() as u64 {
                self.window.pop_front();
            } else {
                bytes::Buf::advance(front, drop as usize);
            }
            self.window_start += drop;
            self.window_len -= drop;
        }
    }

    /// The kept bytes from `offset` (inside the window), at most `max`, from one item.
    fn slice_at(&self, offset: u64, max: usize) -> Bytes {
        let mut at = self.window_start;
        for item in &self.window {
            let end = at + item.len() as u64;
            if offset < end {
                let start = (offset - at) as usize;
                let stop = item.len().min(start.saturating_add(max));
                return item.slice(start..stop);
            }
            at = end;
        }
        Bytes::new()
    }
}

impl<S, E> StreamSource<S>
where
    S: Stream<Item = Result<Bytes, E>> + Unpin,
    E: Into<StreamError>,
{
    /// Receives the next non-empty item onto the window's end; `false` when the stream ended.
    /// Cancel-safe: an item is either received whole or not at all.
    async fn pull(&mut self) -> Result<bool, SourceError> {
        loop {
            if self.ended {
                return Ok(false);
            }
            let stream = &mut self.stream;
            let item =
                std::future::poll_fn(|cx: &mut Context<'_>| Pin::new(&mut *stream).poll_next(cx))
                    .await;
            match item {
                None => {
                    self.ended = true;
                    return Ok(false);
                }
                Some(Err(e)) => {
                    return Err(SourceError::Stream {
                        offset: self.window_end(),
                        source: e.into(),
                    });
                }
                Some(Ok(bytes)) if bytes.is_empty() => continue,
                Some(Ok(bytes)) => {
                    self.window_len += bytes.len() as u64;
                    self.window.push_back(bytes);
                    self.peak_window = self.peak_window.max(self.window_len);
                    return Ok(true);
                }
            }
        }
    }
}

impl<S, E> Source for StreamSource<S>
where
    S: Stream<Item = Result<Bytes, E>> + Unpin,
    E: Into<StreamError>,
{
    async fn read_at(&mut self, offset: u64, max: usize) -> Result<Bytes, SourceError> {
        // Bytes below the floor are dropped, except those this read asks for (a resumed
        // upload re-reading from 0 to checksum its MD5 still gets them, once).
        let keep_from = self.floor.min(offset);
        self.trim(keep_from);
        if offset < self.window_start {
            return Err(SourceError::NotBuffered {
                offset,
                window_start: self.window_start,
            });
        }
        while self.window_end() <= offset {
            if !self.pull().await? {
                break;
            }
            self.trim(keep_from);
        }
        if self.window_end() < offset {
            return Err(SourceError::Ended {
                ended_at: self.window_end(),
                needed: offset,
            });
        }
        Ok(self.slice_at(offset, max))
    }

    fn release(&mut self, offset: u64) {
        self.floor = self.floor.max(offset);
        self.trim(self.floor);
    }
}

impl<S> std::fmt::Debug for StreamSource<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StreamSource")
            .field("window", &self.window())
            .field("floor", &self.floor)
            .field("ended", &self.ended)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::task::Waker;

    /// Runs a future that never waits (in-memory sources).
    fn now<F: Future>(future: F) -> F::Output {
        let mut future = std::pin::pin!(future);
        match future
            .as_mut()
            .poll(&mut Context::from_waker(Waker::noop()))
        {
            Poll::Ready(output) => output,
            Poll::Pending => panic!("an in-memory source waited"),
        }
    }

    fn bytes(n: usize) -> Vec<u8> {
        (0..n).map(|i| (i * 7 % 251) as u8).collect()
    }

    /// A stream of `data` in items of `item` bytes.
    fn items(data: &[u8], item: usize) -> impl Stream<Item = Result<Bytes, io::Error>> + Unpin {
        struct Items(VecDeque<Bytes>);
        impl Stream for Items {
            type Item = Result<Bytes, io::Error>;
            fn poll_next(
                mut self: Pin<&mut Self>,
                _: &mut Context<'_>,
            ) -> Poll<Option<Self::Item>> {
                Poll::Ready(self.0.pop_front().map(Ok))
            }
        }
        Items(data.chunks(item).map(Bytes::copy_from_slice).collect())
    }

    /// A cursor implementing futures-io's traits (no futures-util needed).
    struct Cursor(std::io::Cursor<Vec<u8>>);
    impl AsyncRead for Cursor {
        fn poll_read(
            mut self: Pin<&mut Self>,
            _: &mut Context<'_>,
            buf: &mut [u8],
        ) -> Poll<io::Result<usize>> {
            Poll::Ready(std::io::Read::read(&mut self.0, buf))
        }
    }
    impl AsyncSeek for Cursor {
        fn poll_seek(
            mut self: Pin<&mut Self>,
            _: &mut Context<'_>,
            pos: SeekFrom,
        ) -> Poll<io::Result<u64>> {
            Poll::Ready(std::io::Seek::seek(&mut self.0, pos))
        }
    }

    #[test]
    fn seekable_source_reads_any_range() {
        let data = bytes(1000);
        let mut source = SeekableSource::new(Cursor(std::io::Cursor::new(data.clone())));
        assert_eq!(now(source.read_at(10, 5)).unwrap(), &data[10..15]);
        assert_eq!(now(source.read_at(15, 5)).unwrap(), &data[15..20]);
        assert_eq!(now(source.read_at(900, 100)).unwrap(), &data[900..]);
        assert_eq!(now(source.read_at(0, 3)).unwrap(), &data[..3]);
        assert_eq!(now(source.read_at(998, 10)).unwrap(), &data[998..]);
        assert!(now(source.read_at(1000, 10)).unwrap().is_empty());
    }

    // G5: bytes read stay kept for the requests that follow (a stream cannot be read again),
    // and a request that starts before the window is a typed error.
    #[test]
    fn stream_source_keeps_read_bytes_until_released() {
        let data = bytes(1000);
        let mut source = StreamSource::new(items(&data, 300));
        // One item at a time: a read gets at most the rest of the item it starts in.
        assert_eq!(now(source.read_at(0, 400)).unwrap(), &data[..300]);
        assert_eq!(now(source.read_at(300, 400)).unwrap(), &data[300..600]);
        assert_eq!(now(source.read_at(100, 50)).unwrap(), &data[100..150]);
        source.release(250);
        assert_eq!(source.window(), 250..600);
        assert_eq!(now(source.read_at(250, 1000)).unwrap(), &data[250..300]);
        assert_eq!(now(source.read_at(600, 1000)).unwrap(), &data[600..900]);
        match now(source.read_at(249, 10)) {
            Err(SourceError::NotBuffered {
                offset: 249,
                window_start: 250,
            }) => {}
            other => panic!("expected NotBuffered, got {other:?}"),
        }
        assert_eq!(now(source.read_at(900, 1000)).unwrap(), &data[900..]);
        assert!(now(source.read_at(1000, 10)).unwrap().is_empty());
        assert!(matches!(
            now(source.read_at(1001, 10)),
            Err(SourceError::Ended {
                ended_at: 1000,
                needed: 1001
            })
        ));
    }

    // G3, G5: a resumed upload skips what the server holds without keeping it, but a read
    // below the floor (an MD5 re-read from 0) still gets fresh bytes.
    #[test]
    fn stream_source_skips_released_bytes_it_never_kept() {
        let data = bytes(1000);
        let mut source = StreamSource::new(items(&data, 100));
        source.release(500);
        assert_eq!(now(source.read_at(0, 50)).unwrap(), &data[..50]);
        assert_eq!(now(source.read_at(50, 100)).unwrap(), &data[50..100]);
        assert_eq!(now(source.read_at(550, 100)).unwrap(), &data[550..600]);
        assert_eq!(source.window(), 500..600);
        assert!(source.peak_window() <= 200, "{}", source.peak_window());
    }

    #[test]
    fn a_stream_error_is_typed() {
        struct Failing;
        impl Stream for Failing {
            type Item = Result<Bytes, io::Error>;
            fn poll_next(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<Option<Self::Item>> {
                Poll::Ready(Some(Err(io::Error::other("pipe broke"))))
            }
        }
        let mut source = StreamSource::new(Failing);
        match now(source.read_at(0, 10)) {
            Err(SourceError::Stream { offset: 0, source }) => {
                assert_eq!(source.to_string(), "pipe broke")
            }
            other => panic!("expected a stream error, got {other:?}"),
        }
    }
}
