//! The body of one request, streamed: the core's prefix, a range of the source, the core's
//! suffix, and never more or fewer bytes than `Content-Length` says.

use std::fmt;
use std::io::{self, Read};

use bytes::{Buf as _, Bytes};

use resumable_core::driver::{SourceError, Stop};

/// How far a body has been read, reported to the driver after every read.
#[derive(Clone, Copy, Debug)]
pub(crate) struct BodySent<'b> {
    /// Body bytes read so far.
    pub(crate) sent: u64,
    /// The source bytes this read handed to the transport (empty for prefix and suffix
    /// bytes), and the source offset where they start.
    pub(crate) source_bytes: &'b [u8],
    pub(crate) source_offset: u64,
}

/// Called as body bytes are handed to the transport; an error stops the body.
pub(crate) type BodyObserver<'a> = dyn FnMut(BodySent<'_>) -> Result<(), Stop> + 'a;

/// The body of one request, handed to [`Transport::send`](crate::Transport::send) as a
/// [`Read`] of exactly [`RequestBody::len`] bytes: the core's prefix, the source range, then
/// the core's suffix.
///
/// A transport reads it to the end while sending (the source bytes are streamed from the
/// source as they are read, never collected first), and must send it with
/// `Content-Length: len()` and no transfer coding. It reads fewer bytes only when the exchange
/// fails or the server answers before taking the whole body. If a read fails, the request
/// cannot be completed: return a [`TransportFailure`](resumable_core::TransportFailure) (the
/// driver then reports why the body failed, which takes precedence).
pub struct RequestBody<'a> {
    prefix: Bytes,
    source: Option<Box<dyn Read + 'a>>,
    source_start: u64,
    source_len: u64,
    source_sent: u64,
    suffix: Bytes,
    len: u64,
    sent: u64,
    observer: Option<&'a mut BodyObserver<'a>>,
    abort: Option<Stop>,
}

impl RequestBody<'static> {
    /// A body made of `bytes` alone, for testing a [`Transport`](crate::Transport) on its own;
    /// the driver builds the bodies it sends itself.
    pub fn from_bytes(bytes: impl Into<Bytes>) -> Self {
        let prefix = bytes.into();
        RequestBody {
            len: prefix.len() as u64,
            prefix,
            source: None,
            source_start: 0,
            source_len: 0,
            source_sent: 0,
            suffix: Bytes::new(),
            sent: 0,
            observer: None,
            abort: None,
        }
    }
}

impl<'a> RequestBody<'a> {
    /// A body of `prefix`, then `source_len` bytes from `source` (the source's bytes from
    /// `source_start`), then `suffix`.
    pub(crate) fn new(
        prefix: Bytes,
        source: Option<(Box<dyn Read + 'a>, u64, u64)>,
        suffix: Bytes,
        observer: Option<&'a mut BodyObserver<'a>>,
    ) -> Self {
        let (source, source_start, source_len) = match source {
            Some((reader, start, len)) if len > 0 => (Some(reader), start, len),
            _ => (None, 0, 0),
        };
        RequestBody {
            len: prefix.len() as u64 + source_len + suffix.len() as u64,
            prefix,
            source,
            source_start,
            source_len,
            source_sent: 0,
            suffix,
            sent: 0,
            observer,
            abort: None,
        }
    }

    /// The body's length in bytes: the `Content-Length` to send.
    pub fn len(&self) -> u64 {
        self.len
    }

    /// Whether the body has no bytes (send `Content-Length: 0`).
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// How many bytes have been read from the body so far.
    pub fn sent(&self) -> u64 {
        self.sent
    }

    /// Why the body was stopped, if it was; taken by the driver after the transport returns.
    pub(crate) fn take_abort(&mut self) -> Option<Stop> {
        self.abort.take()
    }

    fn stop(&mut self, abort: Stop, message: &'static str) -> io::Error {
        self.abort = Some(abort);
        // Not `Interrupted`: some readers retry on that kind.
        io::Error::other(message)
    }

    fn read_source(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let offset = self.source_start + self.source_sent;
        let Some(reader) = self.source.as_mut() else {
            return Ok(0);
        };
        let left = self.source_len - self.source_sent;
        let want = buf.len().min(usize::try_from(left).unwrap_or(usize::MAX));
        let result = loop {
            match reader.read(&mut buf[..want]) {
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                other => break other,
            }
        };
        match result {
            // A source that ends inside the range would leave the request short of its
            // Content-Length: stop, never pad or send short.
            Ok(0) => Err(self.stop(
                Stop::Source(SourceError::Ended {
                    ended_at: offset,
                    needed: self.source_start + self.source_len,
                }),
                "the source ended inside the request body",
            )),
            Ok(n) => {
                let n = n.min(want);
                self.source_sent += n as u64;
                Ok(n)
            }
            Err(source) => Err(self.stop(
                Stop::Source(SourceError::Io { offset, source }),
                "reading the source failed",
            )),
        }
    }
}

fn copy_from(part: &mut Bytes, buf: &mut [u8]) -> usize {
    let n = part.len().min(buf.len());
    buf[..n].copy_from_slice(&part[..n]);
    part.advance(n);
    n
}

impl Read for RequestBody<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.abort.is_some() {
            return Err(io::Error::other("the request body was stopped"));
        }
        if buf.is_empty() {
            return Ok(0);
        }
        let (n, from_source) = if !self.prefix.is_empty() {
            (copy_from(&mut self.prefix, buf), false)
        } else if self.source_sent < self.source_len {
            (self.read_source(buf)?, true)
        } else {
            (copy_from(&mut self.suffix, buf), false)
        };
        if n == 0 {
            return Ok(0);
        }
        self.sent += n as u64;
        if let Some(observer) = self.observer.as_mut() {
            let source_end = self.source_start + self.source_sent;
            let progress = BodySent {
                sent: self.sent,
                source_bytes: if from_source { &buf[..n] } else { &[] },
                source_offset: if from_source {
                    source_end - n as u64
                } else {
                    source_end
                },
            };
            if let Err(abort) = observer(progress) {
                return Err(self.stop(abort, "the request body was stopped by the driver"));
            }
        }
        Ok(n)
    }
}

impl fmt::Debug for RequestBody<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RequestBody")
            .field("len", &self.len)
            .field("sent", &self.sent)
            .field("source_start", &self.source_start)
            .field("source_len", &self.source_len)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn body_of<'a>(
        prefix: &'static [u8],
        source: &'a [u8],
        declared: u64,
        suffix: &'static [u8],
    ) -> RequestBody<'a> {
        RequestBody::new(
            Bytes::from_static(prefix),
            Some((Box::new(source), 100, declared)),
            Bytes::from_static(suffix),
            None,
        )
    }

    // G4: the body is prefix, then the source range, then suffix, exactly `len()` bytes.
    #[test]
    fn body_is_prefix_then_source_range_then_suffix() {
        let mut body = body_of(b"<head>", b"0123456789", 10, b"<tail>");
        assert_eq!(body.len(), 22);
        let mut out = Vec::new();
        // Small reads cross every boundary.
        let mut buf = [0u8; 3];
        loop {
            let n = body.read(&mut buf).unwrap();
            if n == 0 {
                break;
            }
            out.extend_from_slice(&buf[..n]);
        }
        assert_eq!(out, b"<head>0123456789<tail>");
        assert_eq!(body.sent(), 22);
        assert!(body.take_abort().is_none());
    }

    // G4: a source that ends inside the range stops the body with a typed reason instead of
    // sending fewer bytes than Content-Length (which would hang or corrupt the request).
    #[test]
    fn a_source_ending_inside_the_range_stops_the_body() {
        let mut body = body_of(b"", b"01234", 10, b"");
        let mut out = Vec::new();
        let err = body.read_to_end(&mut out).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::Other);
        assert_eq!(out, b"01234");
        match body.take_abort() {
            Some(Stop::Source(SourceError::Ended { ended_at, needed })) => {
                assert_eq!((ended_at, needed), (105, 110));
            }
            other => panic!("unexpected abort {other:?}"),
        }
    }

    #[test]
    fn a_source_longer_than_the_range_is_cut_at_the_range() {
        let mut body = body_of(b"", b"0123456789", 4, b"!");
        let mut out = Vec::new();
        body.read_to_end(&mut out).unwrap();
        assert_eq!(out, b"0123!");
    }

    #[test]
    fn from_bytes_is_the_bytes() {
        let mut body = RequestBody::from_bytes(&b"abc"[..]);
        assert_eq!(body.len(), 3);
        let mut out = Vec::new();
        body.read_to_end(&mut out).unwrap();
        assert_eq!(out, b"abc");
    }
}
