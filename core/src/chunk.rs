//! Chunk planning shared by the protocols: which byte range goes in the next request.
//!
//! Rule (G4): every chunk but the last is a whole multiple of a granule (256 KiB for GCS; the
//! server's minimum chunk size for TON). A configured size that is not a multiple is
//! **rejected** with [`UsageError::ChunkSize`], never silently rounded, so a caller always
//! gets the chunk size it asked for; [`round_to_granule`] gives the nearest valid size for a
//! caller that wants to offer one.

use std::ops::Range;

use crate::error::UsageError;

/// GCS's chunk granule: non-final chunks are multiples of 256 KiB (G4).
pub const GCS_GRANULE: u64 = 256 * 1024;

/// A validated chunk size: a non-zero multiple of its granule.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ChunkSize(u64);

impl ChunkSize {
    /// Validates `size` against `granule`.
    ///
    /// # Errors
    /// [`UsageError::ChunkSize`] when `size` is zero or not a multiple of `granule`.
    pub fn new(size: u64, granule: u64) -> Result<Self, UsageError> {
        if size == 0 || granule == 0 {
            return Err(UsageError::ChunkSize {
                size,
                rule: "must be greater than zero",
            });
        }
        if !size.is_multiple_of(granule) {
            return Err(UsageError::ChunkSize {
                size,
                rule: "must be a multiple of the protocol's granule (256 KiB for GCS)",
            });
        }
        Ok(ChunkSize(size))
    }

    /// The size in bytes.
    pub fn get(self) -> u64 {
        self.0
    }

    /// The next chunk starting at `offset`: `chunk size` bytes, or up to `end` when the source
    /// ends sooner. Never longer than the chunk size, never past `end`.
    pub fn chunk_at(self, offset: u64, end: Option<u64>) -> Range<u64> {
        let full = offset.saturating_add(self.0);
        let stop = match end {
            Some(e) => full.min(e).max(offset),
            None => full,
        };
        offset..stop
    }
}

/// The multiple of `granule` nearest to `size` (at least one granule), for suggesting a valid
/// chunk size.
pub fn round_to_granule(size: u64, granule: u64) -> u64 {
    let granule = granule.max(1);
    let down = size / granule * granule;
    let up = down.saturating_add(granule);
    let nearest = if size - down <= up.saturating_sub(size) {
        down
    } else {
        up
    };
    nearest.max(granule)
}

/// The largest multiple of `granule` that is at most `size`, but at least one granule: for a
/// size computed at run time (TON's adaptive chunk size, T4), where rounding up could break an
/// upper limit. A caller whose limit is below one granule must handle that itself.
pub fn round_down_to_granule(size: u64, granule: u64) -> u64 {
    let granule = granule.max(1);
    (size / granule * granule).max(granule)
}

/// How many bytes take `target` to send at the rate seen when `bytes` took `elapsed`
/// (saturating; `u64::MAX` when `elapsed` is zero, that is, too fast to measure). For sizing
/// chunks to the link (T4: a chunk should upload in about 30 s).
pub fn size_for_rate(bytes: u64, elapsed: std::time::Duration, target: std::time::Duration) -> u64 {
    let elapsed = elapsed.as_nanos();
    if elapsed == 0 {
        return u64::MAX;
    }
    let size = u128::from(bytes).saturating_mul(target.as_nanos()) / elapsed;
    u64::try_from(size).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod rate_tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn rounding_down_stays_at_or_below_the_size_t4() {
        assert_eq!(round_down_to_granule(5000, 1024), 4096);
        assert_eq!(round_down_to_granule(4096, 1024), 4096);
        assert_eq!(round_down_to_granule(10, 1024), 1024);
        assert_eq!(round_down_to_granule(7, 0), 7);
    }

    #[test]
    fn size_for_rate_scales_to_the_target_t4() {
        let s = Duration::from_secs;
        assert_eq!(size_for_rate(1000, s(1), s(20)), 20_000);
        assert_eq!(size_for_rate(1 << 20, s(40), s(20)), 1 << 19);
        assert_eq!(size_for_rate(1, Duration::ZERO, s(20)), u64::MAX);
        assert_eq!(
            size_for_rate(u64::MAX, Duration::from_nanos(1), s(20)),
            u64::MAX
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gcs_chunk_sizes_must_be_multiples_of_256_kib_g4() {
        assert!(ChunkSize::new(GCS_GRANULE, GCS_GRANULE).is_ok());
        assert!(ChunkSize::new(8 << 20, GCS_GRANULE).is_ok());
        assert!(matches!(
            ChunkSize::new(300_000, GCS_GRANULE),
            Err(UsageError::ChunkSize { size: 300_000, .. })
        ));
        assert!(ChunkSize::new(0, GCS_GRANULE).is_err());
    }

    #[test]
    fn chunks_stop_at_the_end_of_the_source() {
        let c = ChunkSize::new(GCS_GRANULE, GCS_GRANULE).unwrap();
        assert_eq!(c.chunk_at(0, Some(10)), 0..10);
        assert_eq!(c.chunk_at(5, None), 5..5 + GCS_GRANULE);
        assert_eq!(c.chunk_at(10, Some(10)), 10..10);
        assert_eq!(c.chunk_at(u64::MAX - 1, None), u64::MAX - 1..u64::MAX);
    }

    #[test]
    fn rounding_suggests_the_nearest_multiple() {
        assert_eq!(round_to_granule(300_000, GCS_GRANULE), GCS_GRANULE);
        assert_eq!(round_to_granule(500_000, GCS_GRANULE), 2 * GCS_GRANULE);
        assert_eq!(round_to_granule(1, GCS_GRANULE), GCS_GRANULE);
    }
}
