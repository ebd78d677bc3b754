//! Where the bytes come from: a seekable source (a file) read where asked, or a stream (stdin,
//! a pipe) of which only the bytes that may still be sent are kept.

use std::io::{self, Read, Seek, SeekFrom};
use std::ops::Range;

use resumable_core::driver::SourceError;

/// The bytes of an upload, as the driver reads them.
///
/// The driver calls [`Source::read_at`] for each `Read` action (to let the core checksum the
/// bytes or find where the source ends), [`Source::range`] for the source part of each request
/// body, and [`Source::release`] whenever it learns that earlier bytes will not be asked for
/// again. Implemented by [`SeekableSource`] (files) and [`StreamSource`] (stdin, pipes).
pub trait Source {
    /// Up to `max` bytes of the source starting at `offset` (at least one byte, unless the
    /// source ends at `offset`: then an empty slice). Valid until the next call.
    ///
    /// # Errors
    /// [`SourceError`] when the bytes cannot be read.
    fn read_at(&mut self, offset: u64, max: usize) -> Result<&[u8], SourceError>;

    /// A reader of the bytes `range` of the source, in order, for a request body. The driver
    /// reads at most `range`'s length from it; a reader that ends sooner makes the request
    /// fail with [`SourceError::Ended`].
    ///
    /// # Errors
    /// [`SourceError`] when the range cannot be read.
    fn range(&mut self, range: Range<u64>) -> Result<Box<dyn Read + '_>, SourceError>;

    /// Tells the source that bytes before `offset` will not be asked for again (the server
    /// holds them, or no later request starts before `offset`), so it may drop them. Offsets
    /// never go back.
    fn release(&mut self, offset: u64) {
        let _ = offset;
    }
}

impl<S: Source + ?Sized> Source for &mut S {
    fn read_at(&mut self, offset: u64, max: usize) -> Result<&[u8], SourceError> {
        (**self).read_at(offset, max)
    }

    fn range(&mut self, range: Range<u64>) -> Result<Box<dyn Read + '_>, SourceError> {
        (**self).range(range)
    }

    fn release(&mut self, offset: u64) {
        (**self).release(offset)
    }
}

/// Reads until `buf` has a byte or the reader ends, retrying interrupted reads.
fn read_some(reader: &mut (impl Read + ?Sized), buf: &mut [u8]) -> io::Result<usize> {
    loop {
        match reader.read(buf) {
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            other => return other,
        }
    }
}

/// A source that can be read anywhere (a file, an in-memory cursor): each request body is
/// streamed straight from it (seek, then read the range), so memory does not depend on the
/// file's or the chunk's size.
///
/// Create it with [`SeekableSource::new`] and pass it to the driver; the reader's position is
/// the driver's business while it runs.
#[derive(Debug)]
pub struct SeekableSource<R> {
    reader: R,
    /// Where the reader is, when known (saves a seek per sequential read).
    position: Option<u64>,
    buffer: Vec<u8>,
}

impl<R: Read + Seek> SeekableSource<R> {
    /// Wraps a reader that can seek. Byte 0 of the upload is byte 0 of the reader.
    pub fn new(reader: R) -> Self {
        SeekableSource {
            reader,
            position: None,
            buffer: Vec::new(),
        }
    }

    /// The reader back.
    pub fn into_inner(self) -> R {
        self.reader
    }

    fn seek_to(&mut self, offset: u64) -> Result<(), SourceError> {
        if self.position != Some(offset) {
            self.position = None;
            self.reader
                .seek(SeekFrom::Start(offset))
                .map_err(|source| SourceError::Io { offset, source })?;
            self.position = Some(offset);
        }
        Ok(())
    }
}

impl<R: Read + Seek> Source for SeekableSource<R> {
    fn read_at(&mut self, offset: u64, max: usize) -> Result<&[u8], SourceError> {
        self.seek_to(offset)?;
        if self.buffer.len() < max {
            self.buffer.resize(max, 0);
        }
        let n = match read_some(&mut self.reader, &mut self.buffer[..max]) {
            Ok(n) => n.min(max),
            Err(source) => {
                self.position = None;
                return Err(SourceError::Io { offset, source });
            }
        };
        self.position = Some(offset + n as u64);
        Ok(&self.buffer[..n])
    }

    fn range(&mut self, range: Range<u64>) -> Result<Box<dyn Read + '_>, SourceError> {
        self.seek_to(range.start)?;
        // The body reader moves the position by an amount only it knows.
        self.position = None;
        let len = range.end.saturating_sub(range.start);
        Ok(Box::new((&mut self.reader).take(len)))
    }
}

/// A source that can only be read once, front to back (stdin, a pipe, a socket).
///
/// It keeps a window of the bytes that may still have to be sent: from the start of the
/// latest request's range (or the server's persisted count, when later) to the furthest byte
/// read. Bytes read for the core's `Read` actions stay in the window for the requests that
/// follow; bytes before the window are dropped as the driver [releases](Source::release) them.
/// With the GCS core the window stays within about two chunks. Asking for a dropped byte is a
/// [`SourceError::NotBuffered`], never a silent skip.
#[derive(Debug)]
pub struct StreamSource<R> {
    reader: R,
    /// The bytes `window_start..window_start + window.len()` of the stream.
    window: Vec<u8>,
    window_start: u64,
    /// Bytes before this may be dropped.
    floor: u64,
    /// The stream ended at the window's end.
    ended: bool,
    piece: usize,
    peak_capacity: usize,
}

impl<R: Read> StreamSource<R> {
    /// Wraps a reader positioned at byte 0 of the upload.
    pub fn new(reader: R) -> Self {
        StreamSource {
            reader,
            window: Vec::new(),
            window_start: 0,
            floor: 0,
            ended: false,
            piece: resumable_core::driver::READ_PIECE,
            peak_capacity: 0,
        }
    }

    /// The bytes of the stream currently kept.
    pub fn window(&self) -> Range<u64> {
        self.window_start..self.window_end()
    }

    /// The largest allocation the window has had, in bytes: what this source cost in memory
    /// (for diagnostics and tests).
    pub fn peak_capacity(&self) -> usize {
        self.peak_capacity
    }

    /// The reader back (positioned after the furthest byte read).
    pub fn into_inner(self) -> R {
        self.reader
    }

    fn window_end(&self) -> u64 {
        self.window_start + self.window.len() as u64
    }

    /// Drops the kept bytes before the floor.
    fn trim(&mut self) {
        let drop_to = self.floor.min(self.window_end());
        if drop_to > self.window_start {
            let n = (drop_to - self.window_start) as usize;
            self.window.drain(..n);
            self.window_start = drop_to;
        }
    }

    /// Reads one piece (`max` bytes, fewer only where the stream ends) from the stream onto
    /// the window's end; returns how many bytes came (0: the stream ended).
    fn read_piece(&mut self, max: usize) -> Result<usize, SourceError> {
        if self.ended || max == 0 {
            return Ok(0);
        }
        let offset = self.window_end();
        let old = self.window.len();
        // Exact growth: the window's allocation tracks what it holds, not powers of two.
        // `read_to_end` reads into the spare capacity without zero-filling it first, and
        // retries interrupted reads; bytes read before an error stay in the window.
        self.window.reserve_exact(max);
        let want = u64::try_from(max).unwrap_or(u64::MAX);
        let result = (&mut self.reader).take(want).read_to_end(&mut self.window);
        self.peak_capacity = self.peak_capacity.max(self.window.capacity());
        let n = self.window.len() - old;
        if let Err(source) = result {
            return Err(SourceError::Io {
                offset: offset + n as u64,
                source,
            });
        }
        if n < max {
            self.ended = true;
        }
        Ok(n)
    }

    /// Reads on until the window reaches `offset` (or the stream ends), dropping what falls
    /// below the floor as it goes.
    fn advance_to(&mut self, offset: u64) -> Result<(), SourceError> {
        while self.window_end() < offset && !self.ended {
            let left = offset - self.window_end();
            let max = usize::try_from(left).unwrap_or(usize::MAX).min(self.piece);
            self.read_piece(max)?;
            self.trim();
        }
        Ok(())
    }

    fn check_kept(&self, offset: u64) -> Result<(), SourceError> {
        if offset < self.window_start {
            return Err(SourceError::NotBuffered {
                offset,
                window_start: self.window_start,
            });
        }
        Ok(())
    }
}

impl<R: Read> Source for StreamSource<R> {
    fn read_at(&mut self, offset: u64, max: usize) -> Result<&[u8], SourceError> {
        self.trim();
        self.check_kept(offset)?;
        self.advance_to(offset)?;
        if self.window_end() < offset {
            return Err(SourceError::Ended {
                ended_at: self.window_end(),
                needed: offset,
            });
        }
        if self.window_end() == offset {
            // Fresh bytes; if they fall below the floor they are dropped on the next call.
            self.read_piece(max)?;
        }
        let start = (offset - self.window_start) as usize;
        let end = self.window.len().min(start.saturating_add(max));
        Ok(&self.window[start..end])
    }

    fn range(&mut self, range: Range<u64>) -> Result<Box<dyn Read + '_>, SourceError> {
        self.trim();
        self.check_kept(range.start)?;
        self.advance_to(range.end)?;
        if self.window_end() < range.end {
            return Err(SourceError::Ended {
                ended_at: self.window_end(),
                needed: range.end,
            });
        }
        let start = (range.start - self.window_start) as usize;
        let end = (range.end - self.window_start) as usize;
        Ok(Box::new(&self.window[start..end]))
    }

    fn release(&mut self, offset: u64) {
        self.floor = self.floor.max(offset);
        self.trim();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Cursor;

    fn bytes(n: usize) -> Vec<u8> {
        (0..n).map(|i| (i * 7 % 251) as u8).collect()
    }

    fn read_range(source: &mut dyn Source, range: Range<u64>) -> Vec<u8> {
        let mut out = Vec::new();
        source.range(range).unwrap().read_to_end(&mut out).unwrap();
        out
    }

    #[test]
    fn seekable_source_reads_and_streams_any_range() {
        let data = bytes(1000);
        let mut source = SeekableSource::new(Cursor::new(data.clone()));
        assert_eq!(source.read_at(10, 5).unwrap(), &data[10..15]);
        assert_eq!(source.read_at(15, 5).unwrap(), &data[15..20]);
        assert_eq!(read_range(&mut source, 900..1000), &data[900..]);
        assert_eq!(read_range(&mut source, 0..3), &data[..3]);
        assert_eq!(source.read_at(998, 10).unwrap(), &data[998..]);
        assert!(source.read_at(1000, 10).unwrap().is_empty());
    }

    // G5: bytes read for a Read action stay kept for the requests that follow (a stream cannot
    // be read again), and a request that starts before the window is a typed error.
    #[test]
    fn stream_source_keeps_read_bytes_until_released() {
        let data = bytes(1000);
        let mut source = StreamSource::new(&data[..]);
        assert_eq!(source.read_at(0, 400).unwrap(), &data[..400]);
        assert_eq!(read_range(&mut source, 0..600), &data[..600]);
        source.release(300);
        assert_eq!(source.window(), 300..600);
        assert_eq!(read_range(&mut source, 300..700), &data[300..700]);
        match source.range(299..400) {
            Err(SourceError::NotBuffered {
                offset: 299,
                window_start: 300,
            }) => {}
            other => panic!("expected NotBuffered, got {:?}", other.map(|_| ())),
        }
        assert!(matches!(
            source.read_at(0, 1),
            Err(SourceError::NotBuffered { .. })
        ));
    }

    #[test]
    fn stream_source_reads_ahead_and_drops_bytes_below_the_floor() {
        let data = bytes(1000);
        let mut source = StreamSource::new(&data[..]);
        source.release(500);
        // A read below the floor (an MD5 re-read from 0 on resume) still yields the bytes…
        assert_eq!(source.read_at(0, 100).unwrap(), &data[..100]);
        // …and a read that skips ahead keeps only what is at or above the floor.
        assert_eq!(source.read_at(550, 50).unwrap(), &data[550..600]);
        assert_eq!(source.window(), 500..600);
        assert_eq!(read_range(&mut source, 500..1000), &data[500..]);
        assert!(source.read_at(1000, 10).unwrap().is_empty());
        assert!(matches!(
            source.range(900..1001),
            Err(SourceError::Ended {
                ended_at: 1000,
                needed: 1001
            })
        ));
    }
}
