//! Growable byte storage for sessions and objects, filled straight from a socket.
//!
//! Bytes live in segments of at most [`SEGMENT`] bytes, so growing never copies what is
//! already stored (a `Vec` that doubles would copy a 1 GiB object once more at 1 GiB), and
//! reading a body is `read_to_end` into a segment's spare capacity: no zeroing, no copy
//! through an intermediate buffer.
//!
//! Full segments are recycled through a process-wide pool instead of going back to the
//! allocator: the first write to fresh memory costs a page fault and the kernel zeroing the
//! page, which on a VM runs at well under 1 GB/s and would bound upload throughput.
//! Recycled segments are already mapped. [`warm`] fills the pool ahead of time.

use std::io::{self, Read};
use std::ops::Range;
use std::sync::Mutex;

/// The largest segment.
pub(crate) const SEGMENT: usize = 8 << 20;
/// The smallest segment allocated for a body (small bodies do not reserve a whole segment).
const MIN_SEGMENT: usize = 64 << 10;

/// Recycled full-size segments (empty, with `SEGMENT` capacity, memory already touched).
static POOL: Mutex<Pool> = Mutex::new(Pool {
    segments: Vec::new(),
    limit: DEFAULT_POOL_LIMIT,
});

/// Bytes of recycled segments kept by default.
const DEFAULT_POOL_LIMIT: usize = 1 << 30;

struct Pool {
    segments: Vec<Vec<u8>>,
    /// The most segment bytes kept.
    limit: usize,
}

fn pool() -> std::sync::MutexGuard<'static, Pool> {
    POOL.lock().unwrap_or_else(|e| e.into_inner())
}

/// A full-size segment, recycled if possible.
fn new_full_segment() -> Vec<u8> {
    pool()
        .segments
        .pop()
        .unwrap_or_else(|| Vec::with_capacity(SEGMENT))
}

/// Gives a segment back to the pool (if full-size and there is room) or frees it.
fn recycle(mut seg: Vec<u8>) {
    if seg.capacity() != SEGMENT {
        return;
    }
    seg.clear();
    let mut pool = pool();
    if (pool.segments.len() + 1) * SEGMENT <= pool.limit {
        pool.segments.push(seg);
    }
}

/// Makes sure the pool holds at least `bytes` of touched segments (and may keep them), so
/// that uploads of that size never write to fresh memory.
pub(crate) fn warm(bytes: u64) {
    let want = usize::try_from(bytes.div_ceil(SEGMENT as u64)).unwrap_or(usize::MAX);
    let have = {
        let mut pool = pool();
        pool.limit = pool.limit.max(want.saturating_mul(SEGMENT));
        pool.segments.len()
    };
    let mut fresh = Vec::new();
    for _ in have..want {
        let mut seg = Vec::with_capacity(SEGMENT);
        // Touch every page now, so the kernel maps it before it is needed.
        seg.resize(SEGMENT, 0x5a);
        seg.clear();
        fresh.push(seg);
    }
    pool().segments.extend(fresh);
}

/// A byte string stored in segments.
#[derive(Default)]
pub(crate) struct Blob {
    segments: Vec<Vec<u8>>,
    len: u64,
}

/// How a [`Blob::fill_from`] ended.
pub(crate) struct Filled {
    /// Bytes appended.
    pub(crate) read: u64,
    /// Why it stopped short: an I/O error, or `None` with `read < asked` for end of stream.
    pub(crate) error: Option<io::Error>,
}

impl Blob {
    /// The stored length.
    pub(crate) fn len(&self) -> u64 {
        self.len
    }

    /// Appends `bytes`.
    pub(crate) fn extend_from_slice(&mut self, mut bytes: &[u8]) {
        while !bytes.is_empty() {
            let seg = self.segment_with_room(bytes.len() as u64);
            let room = seg.capacity() - seg.len();
            let n = room.min(bytes.len());
            seg.extend_from_slice(&bytes[..n]);
            bytes = &bytes[n..];
            self.len += n as u64;
        }
    }

    /// Makes room for about `expected` more bytes (so that a body read in pieces lands in
    /// segments sized for the whole body).
    pub(crate) fn reserve(&mut self, expected: u64) {
        self.segment_with_room(expected);
    }

    /// Appends up to `n` bytes read from `reader`, in large blocks. Stops early at end of
    /// stream or on an error; what was read before either stays appended. `progress` is
    /// called with the size of each block as it arrives.
    pub(crate) fn fill_from<R: Read>(
        &mut self,
        reader: &mut R,
        n: u64,
        mut progress: impl FnMut(u64),
    ) -> Filled {
        let mut read = 0u64;
        while read < n {
            let seg = self.segment_with_room(n - read);
            let room = (seg.capacity() - seg.len()) as u64;
            let want = room.min(n - read);
            let before = seg.len();
            // `Take` + `read_to_end` reads into the spare capacity without initialising it,
            // and keeps what it read when it fails.
            let result = reader.by_ref().take(want).read_to_end(seg);
            let got = (seg.len() - before) as u64;
            read += got;
            self.len += got;
            if got > 0 {
                progress(got);
            }
            match result {
                Err(error) => {
                    return Filled {
                        read,
                        error: Some(error),
                    };
                }
                Ok(_) if got < want => return Filled { read, error: None },
                Ok(_) => {}
            }
        }
        Filled { read, error: None }
    }

    /// The last segment if it has room, else a new one sized for `expected` more bytes.
    fn segment_with_room(&mut self, expected: u64) -> &mut Vec<u8> {
        let full = self.segments.last().is_none_or(|s| s.len() == s.capacity());
        if full {
            let cap = usize::try_from(expected)
                .unwrap_or(SEGMENT)
                .clamp(MIN_SEGMENT, SEGMENT);
            // Anything sizeable gets a full (recycled, already mapped) segment.
            self.segments.push(if cap >= SEGMENT / 4 {
                new_full_segment()
            } else {
                Vec::with_capacity(cap)
            });
        }
        let last = self.segments.len() - 1;
        &mut self.segments[last]
    }

    /// Shortens to `len` bytes (no effect when already shorter).
    pub(crate) fn truncate(&mut self, len: u64) {
        if len >= self.len {
            return;
        }
        let mut start = 0u64;
        let mut keep = 0;
        for seg in &mut self.segments {
            let seg_len = seg.len() as u64;
            if start + seg_len <= len {
                start += seg_len;
                keep += 1;
                continue;
            }
            // `len - start < seg_len`, which fits in usize.
            let cut = usize::try_from(len - start).unwrap_or(seg.len());
            if cut > 0 {
                seg.truncate(cut);
                keep += 1;
            }
            break;
        }
        for seg in self.segments.drain(keep..) {
            recycle(seg);
        }
        self.len = len;
    }

    /// Calls `f` on consecutive slices covering `range` (clamped to the stored length).
    pub(crate) fn for_each_slice(&self, range: Range<u64>, mut f: impl FnMut(&[u8])) {
        let end = range.end.min(self.len);
        let mut pos = 0u64;
        for seg in &self.segments {
            let seg_start = pos;
            let seg_end = pos + seg.len() as u64;
            pos = seg_end;
            if seg_end <= range.start {
                continue;
            }
            if seg_start >= end {
                break;
            }
            let a = range.start.max(seg_start) - seg_start;
            let b = end.min(seg_end) - seg_start;
            // Both are within this segment, whose length fits in usize.
            if let (Ok(a), Ok(b)) = (usize::try_from(a), usize::try_from(b)) {
                f(&seg[a..b]);
            }
        }
    }

    /// A copy of the bytes in `range`.
    pub(crate) fn copy_range(&self, range: Range<u64>) -> Vec<u8> {
        let size = range.end.min(self.len).saturating_sub(range.start);
        let mut out = Vec::with_capacity(usize::try_from(size).unwrap_or(0));
        self.for_each_slice(range, |s| out.extend_from_slice(s));
        out
    }

    /// A copy of all the bytes.
    pub(crate) fn to_vec(&self) -> Vec<u8> {
        self.copy_range(0..self.len)
    }
}

impl Drop for Blob {
    fn drop(&mut self) {
        for seg in self.segments.drain(..) {
            recycle(seg);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fills_truncates_and_copies_across_segments() {
        let data: Vec<u8> = (0..(SEGMENT * 2 + 12345))
            .map(|i| (i % 251) as u8)
            .collect();
        let mut blob = Blob::default();
        let mut seen = 0;
        let filled = blob.fill_from(&mut &data[..], data.len() as u64, |n| seen += n);
        assert_eq!(filled.read, data.len() as u64);
        assert!(filled.error.is_none());
        assert_eq!(seen, data.len() as u64);
        assert_eq!(blob.to_vec(), data);
        assert_eq!(
            blob.copy_range(SEGMENT as u64 - 5..SEGMENT as u64 + 5),
            &data[SEGMENT - 5..SEGMENT + 5]
        );
        blob.truncate(SEGMENT as u64 + 7);
        assert_eq!(blob.len(), SEGMENT as u64 + 7);
        assert_eq!(blob.to_vec(), &data[..SEGMENT + 7]);
        blob.truncate(SEGMENT as u64);
        assert_eq!(blob.to_vec(), &data[..SEGMENT]);
        blob.extend_from_slice(b"xyz");
        assert_eq!(&blob.to_vec()[SEGMENT..], b"xyz");
        blob.truncate(0);
        assert_eq!(blob.len(), 0);
        assert!(blob.to_vec().is_empty());
    }

    #[test]
    fn short_source_stops_early() {
        let mut blob = Blob::default();
        let filled = blob.fill_from(&mut &b"abc"[..], 10, |_| {});
        assert_eq!(filled.read, 3);
        assert!(filled.error.is_none());
        assert_eq!(blob.to_vec(), b"abc");
    }
}
