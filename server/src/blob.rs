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
//!
//! Segments are reference-counted so that another thread (the checksum pipeline,
//! [`crate::hash`]) can read bytes already stored while more are appended: a segment
//! shared that way is never written again (appending starts a new segment), and cutting
//! into one copies it first.

use std::io::{self, Read};
use std::ops::Range;
use std::sync::{Arc, Mutex};

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

/// Gives a segment back to the pool (if full-size, no longer shared, and there is room) or
/// frees it.
fn recycle(seg: Arc<Vec<u8>>) {
    let Ok(mut seg) = Arc::try_unwrap(seg) else {
        // Still read elsewhere: freed by the last holder.
        return;
    };
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
    segments: Vec<Arc<Vec<u8>>>,
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

    /// Whether the last segment can take more bytes: it has room and is not shared.
    fn last_open(&mut self) -> bool {
        self.segments
            .last_mut()
            .and_then(Arc::get_mut)
            .is_some_and(|s| s.len() < s.capacity())
    }

    /// The last segment if it has room (and is not shared), else a new one sized for
    /// `expected` more bytes.
    fn segment_with_room(&mut self, expected: u64) -> &mut Vec<u8> {
        if !self.last_open() {
            let cap = usize::try_from(expected)
                .unwrap_or(SEGMENT)
                .clamp(MIN_SEGMENT, SEGMENT);
            // Anything sizeable gets a full (recycled, already mapped) segment.
            self.segments.push(Arc::new(if cap >= SEGMENT / 4 {
                new_full_segment()
            } else {
                Vec::with_capacity(cap)
            }));
        }
        let last = self.segments.len() - 1;
        // Unique: checked by `last_open`, or just made.
        Arc::make_mut(&mut self.segments[last])
    }

    /// How many leading bytes are in segments that will not be appended to (all but an
    /// open last segment): they can be handed to another thread.
    pub(crate) fn sealed_len(&mut self) -> u64 {
        if self.last_open() {
            self.len - self.segments.last().map_or(0, |s| s.len() as u64)
        } else {
            self.len
        }
    }

    /// Shared handles to the bytes in `range` (clamped to the stored length), segment by
    /// segment. The segments they share are no longer appended to.
    pub(crate) fn share(&self, range: Range<u64>) -> Vec<(Arc<Vec<u8>>, Range<usize>)> {
        let mut out = Vec::new();
        self.for_each_segment(range, |seg, r| out.push((Arc::clone(seg), r)));
        out
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
                // A shared segment is copied first (the other holder keeps its bytes).
                Arc::make_mut(seg).truncate(cut);
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
        self.for_each_segment(range, |seg, r| f(&seg[r]));
    }

    /// Calls `f` with each segment overlapping `range` and the part of it in `range`.
    fn for_each_segment(&self, range: Range<u64>, mut f: impl FnMut(&Arc<Vec<u8>>, Range<usize>)) {
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
                f(seg, a..b);
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
    fn shared_segments_are_never_written_again() {
        let mut blob = Blob::default();
        blob.extend_from_slice(b"abc");
        assert_eq!(blob.sealed_len(), 0, "the open segment is not sealed");
        let shared = blob.share(1..3);
        assert_eq!(shared.len(), 1);
        assert_eq!(&shared[0].0[shared[0].1.clone()], b"bc");
        assert_eq!(blob.sealed_len(), 3, "shared: sealed");
        blob.extend_from_slice(b"def");
        assert_eq!(blob.to_vec(), b"abcdef");
        assert_eq!(&shared[0].0[..], b"abc", "the shared bytes did not change");
        // Cutting into a shared segment copies it.
        let shared = blob.share(0..6);
        blob.truncate(4);
        assert_eq!(blob.to_vec(), b"abcd");
        let seen: Vec<u8> = shared
            .iter()
            .flat_map(|(s, r)| s[r.clone()].to_vec())
            .collect();
        assert_eq!(seen, b"abcdef");
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
