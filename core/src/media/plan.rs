//! The segment plan of a media upload (M2): how many APPENDs, and which bytes each carries.
//!
//! Rule: at most [`MAX_SEGMENTS`] segments, indexed `0..=999`; each at most
//! [`MAX_SEGMENT_SIZE`] bytes and all but the last exactly the plan's size, which is therefore
//! at least ⌈T/1000⌉. A file larger than 1000 × 5 MB cannot be planned and is refused with
//! [`UsageError::SourceTooLarge`] before anything is sent.

use std::ops::Range;

use crate::chunk::ChunkSize;
use crate::error::UsageError;

/// The most segments one media id takes: `segment_index` is `0..=999` (M2).
pub const MAX_SEGMENTS: u32 = 1000;

/// The largest segment, in bytes. Twitter documents "≤ 5 MB" for the `media` field (M2); this
/// is the literal SI reading, 5,000,000 bytes, which a server counting 5 MiB accepts too.
pub const MAX_SEGMENT_SIZE: u64 = 5_000_000;

/// The segment size used unless the caller prefers another: 4 MiB, what Twitter's own
/// large-video sample sends.
pub const DEFAULT_SEGMENT_SIZE: u64 = 4 * 1024 * 1024;

/// Which bytes of a source of `total` bytes go in each APPEND.
///
/// Built by [`crate::media::MediaUpload::new`] from the configured size; also usable on its
/// own (for example by a driver showing "segment 3 of 12").
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SegmentPlan {
    total: u64,
    size: ChunkSize,
    count: u32,
}

impl SegmentPlan {
    /// Plans `total` bytes with segments of `preferred` bytes, raised to ⌈total/1000⌉ when
    /// that many would not fit in 1000 segments (M2).
    ///
    /// # Errors
    /// [`UsageError::ChunkSize`] when `preferred` is 0 or above [`MAX_SEGMENT_SIZE`];
    /// [`UsageError::SourceTooLarge`] when `total` needs segments above the maximum;
    /// [`UsageError::InvalidInput`] for an empty source (Twitter has no empty media).
    pub fn new(total: u64, preferred: u64) -> Result<Self, UsageError> {
        check_size(preferred)?;
        let floor = min_segment_size(total)?;
        Self::with_size(total, preferred.max(floor))
    }

    /// Plans `total` bytes with segments of exactly `size` bytes (a resumed upload must keep
    /// the size its segment indexes were sent with).
    ///
    /// # Errors
    /// As [`SegmentPlan::new`], and [`UsageError::ChunkSize`] when `size` is below ⌈T/1000⌉.
    pub fn with_size(total: u64, size: u64) -> Result<Self, UsageError> {
        check_size(size)?;
        if size < min_segment_size(total)? {
            return Err(UsageError::ChunkSize {
                size,
                rule: "must be at least a thousandth of the file (at most 1000 segments, M2)",
            });
        }
        let count = u32::try_from(total.div_ceil(size)).unwrap_or(u32::MAX);
        let chunk = ChunkSize::new(size, 1)?;
        Ok(SegmentPlan {
            total,
            size: chunk,
            count,
        })
    }

    /// The source's size in bytes.
    pub fn total(&self) -> u64 {
        self.total
    }

    /// Bytes per segment (the last may be shorter).
    pub fn segment_size(&self) -> u64 {
        self.size.get()
    }

    /// How many segments (APPENDs) the source takes: `1..=1000`.
    pub fn count(&self) -> u32 {
        self.count
    }

    /// Where segment `index` starts; the source's size for `index >= count`.
    pub fn offset(&self, index: u32) -> u64 {
        u64::from(index)
            .saturating_mul(self.size.get())
            .min(self.total)
    }

    /// The byte range segment `index` carries, or `None` past the last segment.
    pub fn range(&self, index: u32) -> Option<Range<u64>> {
        (index < self.count).then(|| self.size.chunk_at(self.offset(index), Some(self.total)))
    }
}

/// ⌈T/1000⌉, the smallest size that fits `total` in 1000 segments.
fn min_segment_size(total: u64) -> Result<u64, UsageError> {
    if total == 0 {
        return Err(UsageError::InvalidInput {
            what: "total_bytes",
            why: "an empty file cannot be uploaded as media",
        });
    }
    let floor = total.div_ceil(u64::from(MAX_SEGMENTS));
    if floor > MAX_SEGMENT_SIZE {
        return Err(UsageError::SourceTooLarge {
            total,
            max: MAX_SEGMENT_SIZE * u64::from(MAX_SEGMENTS),
        });
    }
    Ok(floor)
}

fn check_size(size: u64) -> Result<(), UsageError> {
    if size == 0 {
        return Err(UsageError::ChunkSize {
            size,
            rule: "must be greater than zero",
        });
    }
    if size > MAX_SEGMENT_SIZE {
        return Err(UsageError::ChunkSize {
            size,
            rule: "must be at most 5,000,000 bytes (M2)",
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn segments_cover_the_source_m2() {
        let plan = SegmentPlan::new(10, 4).unwrap();
        assert_eq!(plan.count(), 3);
        assert_eq!(plan.range(0), Some(0..4));
        assert_eq!(plan.range(2), Some(8..10));
        assert_eq!(plan.range(3), None);
        assert_eq!(plan.offset(3), 10);
    }

    #[test]
    fn small_preferred_sizes_are_raised_to_fit_1000_segments_m2() {
        let plan = SegmentPlan::new(10_500, 1).unwrap();
        assert_eq!(plan.segment_size(), 11);
        assert_eq!(plan.count(), 955);
        let full = SegmentPlan::new(5_000_000_000, 1).unwrap();
        assert_eq!(
            (full.segment_size(), full.count()),
            (MAX_SEGMENT_SIZE, 1000)
        );
    }

    #[test]
    fn impossible_plans_are_usage_errors_m2() {
        assert!(matches!(
            SegmentPlan::new(5_000_000_001, MAX_SEGMENT_SIZE),
            Err(UsageError::SourceTooLarge { .. })
        ));
        assert!(matches!(
            SegmentPlan::new(1, MAX_SEGMENT_SIZE + 1),
            Err(UsageError::ChunkSize { .. })
        ));
        assert!(SegmentPlan::new(0, 1).is_err());
        assert!(SegmentPlan::new(1, 0).is_err());
        assert!(SegmentPlan::with_size(10_000, 9).is_err());
    }
}
