//! Checksums of uploads (CRC32C and MD5, G7) computed on a thread of their own, so that
//! hashing overlaps with reading the socket instead of following it.
//!
//! MD5 runs at about 1.5 ns a byte on one core: hashed after the body, it adds 1.5 s to a
//! 1 GiB upload. A [`Hasher`] takes the bytes as they are stored (shared segments of the
//! [`Blob`], no copy) and keeps the running digest; the request that completes the upload
//! waits only for the hashing still behind the socket. The digest always covers a prefix of
//! the stored bytes in order; a request that stores less than it read (a cut body, the
//! `persist` fault, a refused chunk) rewinds the hasher to a checkpoint ([`Hasher::reset`]).

use std::ops::Range;
use std::sync::Arc;
use std::sync::mpsc::{self, Receiver, Sender};
use std::thread;

use md5::Digest as _;

use crate::blob::Blob;

/// Bytes hashed per step: CRC32C and MD5 read the same bytes while they are in cache.
const STEP: usize = 64 * 1024;

/// A running CRC32C and (optionally) MD5.
#[derive(Clone, Default)]
pub(crate) struct Digest {
    pub(crate) crc32c: u32,
    pub(crate) md5: Option<md5::Md5>,
}

impl Digest {
    /// A fresh digest; with MD5 when `md5`.
    pub(crate) fn new(md5: bool) -> Digest {
        Digest {
            crc32c: 0,
            md5: md5.then(md5::Md5::new),
        }
    }

    /// Adds `bytes`.
    pub(crate) fn update(&mut self, bytes: &[u8]) {
        for step in bytes.chunks(STEP) {
            self.crc32c = crc32c::crc32c_append(self.crc32c, step);
            if let Some(m) = &mut self.md5 {
                m.update(step);
            }
        }
    }

    /// Adds the bytes `range` of `blob`.
    pub(crate) fn update_from(&mut self, blob: &Blob, range: Range<u64>) {
        blob.for_each_slice(range, |s| self.update(s));
    }

    /// The MD5 so far.
    pub(crate) fn md5_digest(&self) -> Option<[u8; 16]> {
        self.md5.clone().map(|m| m.finalize().into())
    }
}

/// Reads up to `max` body bytes into `blob` and returns their digest: on a hasher thread
/// as they arrive when MD5 is on and the body is large (at least `pipe_min` bytes, or of
/// unknown length), inline otherwise.
pub(crate) fn read_hashed(
    body: &mut crate::http::Body<'_>,
    length: Option<u64>,
    blob: &mut Blob,
    max: u64,
    md5: bool,
    pipe_min: u64,
) -> Digest {
    // CRC32C alone (0.13 ns a byte) is cheaper inline than on a thread competing for cores.
    let piped = if md5 && length.is_none_or(|n| n >= pipe_min) {
        Hasher::spawn(0, Digest::new(md5))
    } else {
        None
    };
    let Some(mut hasher) = piped else {
        body.read_into(blob, max);
        let mut d = Digest::new(md5);
        d.update_from(blob, 0..blob.len());
        return d;
    };
    let mut left = max;
    while left > 0 {
        let want = left.min(crate::blob::SEGMENT as u64);
        let got = body.read_into(blob, want);
        left -= got;
        let sealed = blob.sealed_len();
        hasher.feed(blob, hasher.fed()..sealed);
        if got < want {
            break;
        }
    }
    hasher.feed(blob, hasher.fed()..blob.len());
    hasher.digest().unwrap_or_default()
}

enum Job {
    /// Hash these bytes next.
    Data(Arc<Vec<u8>>, Range<usize>),
    /// Answer the digest after everything before.
    Checkpoint(Sender<(u64, Digest)>),
    /// Start over from this offset and digest.
    Reset(u64, Digest),
}

/// A digest computed on its own thread, fed in order.
pub(crate) struct Hasher {
    jobs: Sender<Job>,
    /// The offset of the end of the bytes fed so far.
    fed: u64,
}

impl Hasher {
    /// Starts a hasher whose digest `digest` covers the first `at` bytes. `None` when no
    /// thread can be started (the caller hashes inline).
    pub(crate) fn spawn(at: u64, digest: Digest) -> Option<Hasher> {
        let (jobs, rx) = mpsc::channel::<Job>();
        thread::Builder::new()
            .name("conformance-hash".to_owned())
            .spawn(move || run(rx, at, digest))
            .ok()?;
        Some(Hasher { jobs, fed: at })
    }

    /// The offset the bytes fed so far end at.
    pub(crate) fn fed(&self) -> u64 {
        self.fed
    }

    /// Feeds the bytes `range` of `blob` (which must start where the last feed ended).
    pub(crate) fn feed(&mut self, blob: &Blob, range: Range<u64>) {
        if range.start != self.fed || range.end <= range.start {
            return;
        }
        for (seg, r) in blob.share(range.clone()) {
            let _ = self.jobs.send(Job::Data(seg, r));
        }
        self.fed = range.end;
    }

    /// Asks for the digest once everything fed so far is hashed; the answer (offset,
    /// digest) arrives on the receiver. Dropping the receiver is fine.
    pub(crate) fn checkpoint(&self) -> Receiver<(u64, Digest)> {
        let (tx, rx) = mpsc::channel();
        let _ = self.jobs.send(Job::Checkpoint(tx));
        rx
    }

    /// The digest of everything fed, waiting for it.
    pub(crate) fn digest(&self) -> Option<Digest> {
        self.checkpoint().recv().ok().map(|(_, d)| d)
    }

    /// Starts over at `at` with `digest` (after the bytes already fed are hashed).
    pub(crate) fn reset(&mut self, at: u64, digest: Digest) {
        let _ = self.jobs.send(Job::Reset(at, digest));
        self.fed = at;
    }
}

fn run(rx: Receiver<Job>, mut at: u64, mut digest: Digest) {
    // Ends when the hasher is dropped (its sender with it).
    while let Ok(job) = rx.recv() {
        match job {
            Job::Data(seg, r) => {
                at += (r.end - r.start) as u64;
                digest.update(&seg[r]);
            }
            Job::Checkpoint(tx) => {
                let _ = tx.send((at, digest.clone()));
            }
            Job::Reset(offset, d) => {
                at = offset;
                digest = d;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn inline(bytes: &[u8]) -> (u32, Option<[u8; 16]>) {
        let mut d = Digest::new(true);
        d.update(bytes);
        (d.crc32c, d.md5_digest())
    }

    #[test]
    fn the_pipeline_hashes_what_was_fed_in_order_and_rewinds() {
        let data: Vec<u8> = (0..(20 << 20)).map(|i: u32| (i * 7 % 251) as u8).collect();
        let mut blob = Blob::default();
        let mut h = Hasher::spawn(0, Digest::new(true)).unwrap();
        // Fed in pieces as they arrive.
        let mut fed = 0;
        for piece in data[..15 << 20].chunks(3 << 20) {
            blob.extend_from_slice(piece);
            let sealed = blob.sealed_len();
            h.feed(&blob, fed..sealed);
            fed = sealed;
        }
        let end = blob.len();
        h.feed(&blob, fed..end);
        let check = h.checkpoint();
        let d = h.digest().unwrap();
        assert_eq!((d.crc32c, d.md5_digest()), inline(&data[..15 << 20]));
        assert_eq!(check.recv().unwrap().0, 15 << 20);
        // Stored less than read: rewind to the checkpoint and hash up to what is kept.
        blob.extend_from_slice(&data[15 << 20..]);
        h.feed(&blob, 15 << 20..20 << 20);
        blob.truncate(16 << 20);
        let mut back = d.clone();
        back.update_from(&blob, 15 << 20..16 << 20);
        h.reset(16 << 20, back);
        let d = h.digest().unwrap();
        assert_eq!((d.crc32c, d.md5_digest()), inline(&data[..16 << 20]));
        assert_eq!(blob.to_vec(), &data[..16 << 20]);
        // Feeds that do not continue where the last ended are ignored.
        h.feed(&blob, 0..10);
        assert_eq!(h.fed(), 16 << 20);
    }
}
