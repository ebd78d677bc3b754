//! The part plan of an S3 multipart upload (S4): how the object's bytes are cut into numbered
//! parts, decided once, before anything is sent.
//!
//! S3's limits: part numbers 1 to 10,000; every part but the last at least 5 MiB and every part
//! at most 5 GiB; so an object holds at most 10,000 × 5 GiB. [`PartPlan::new`] picks one part
//! size P for the whole upload:
//!
//! - for a known total, P = max(the caller's preferred size, 5 MiB, ⌈total / 10,000⌉), rounded
//!   up to a whole MiB, so the total always fits in 10,000 parts;
//! - for an unknown total, P = max(preferred, 5 MiB) rounded up to a whole MiB, and the object
//!   can be at most 10,000 × P: a source that needs part 10,001 gets
//!   [`PlanError::SourceTooLong`].
//!
//! Part n covers bytes `(n − 1) · P .. n · P` (the last part ends at the total). All arithmetic
//! is overflow-free for every `u64` input.

use std::ops::Range;

/// One mebibyte, the unit part sizes are rounded up to.
pub const MIB: u64 = 1024 * 1024;

/// The smallest size of every part but the last: 5 MiB (5,242,880 bytes, S4).
pub const MIN_PART_SIZE: u64 = 5 * MIB;

/// The largest size of any part: 5 GiB (5,368,709,120 bytes, S4).
pub const MAX_PART_SIZE: u64 = 5 * 1024 * MIB;

/// The highest part number, and so the most parts an upload can have (S3, S4).
pub const MAX_PARTS: u32 = 10_000;

/// The largest object a multipart upload can hold: 10,000 parts of 5 GiB (S4).
pub const MAX_OBJECT_SIZE: u64 = MAX_PARTS as u64 * MAX_PART_SIZE;

/// Why a plan cannot be made or cannot answer. Every variant is found before any byte is sent
/// (or, for [`PlanError::SourceTooLong`], before the part that would not fit).
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PlanError {
    /// The total is more than a multipart upload can hold.
    #[error("the object's {total} bytes are more than an upload in parts can hold ({max} bytes)")]
    ObjectTooLarge {
        /// The total given.
        total: u64,
        /// The most an upload can hold ([`MAX_OBJECT_SIZE`]).
        max: u64,
    },
    /// The preferred part size is more than the largest part allowed.
    #[error("a part size of {preferred} bytes is more than the largest part allowed ({max} bytes)")]
    PartSizeTooLarge {
        /// The size asked for.
        preferred: u64,
        /// The largest part allowed ([`MAX_PART_SIZE`]).
        max: u64,
    },
    /// A part number that is not in the plan (0, or past the last part of a known total).
    #[error("there is no part {part_number}: the parts are numbered 1 to {last}")]
    NoSuchPart {
        /// The part number asked for.
        part_number: u32,
        /// The last part number of the plan.
        last: u32,
    },
    /// An offset at or past the end of a known total.
    #[error("byte {offset} is past the end of the object ({total} bytes)")]
    PastEnd {
        /// The offset asked for.
        offset: u64,
        /// The object's size.
        total: u64,
    },
    /// A source of unknown size that goes on past what 10,000 parts of this size can hold: it
    /// would need part 10,001.
    #[error(
        "the source is longer than {limit} bytes, the most that 10,000 parts of {part_size} \
         bytes can hold; choose a larger part size"
    )]
    SourceTooLong {
        /// The most the plan can hold (10,000 × the part size).
        limit: u64,
        /// The plan's part size.
        part_size: u64,
    },
}

/// The part plan of one upload: the part size, and the total when it is known.
///
/// Make it with [`PartPlan::new`] before creating the upload; ask it for each part's byte range
/// ([`range`](Self::range)), for the number of parts ([`count`](Self::count)) and for the part
/// that holds an offset ([`part_at`](Self::part_at)). A plan rebuilt from a saved
/// [`total`](Self::total) and [`part_size`](Self::part_size) is the same plan.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PartPlan {
    part_size: u64,
    total: Option<u64>,
}

/// `size` rounded up to a whole MiB; `size` must be at most [`MAX_PART_SIZE`] (a whole MiB),
/// so the result is too and nothing overflows.
fn round_up_to_mib(size: u64) -> u64 {
    size.div_ceil(MIB).saturating_mul(MIB)
}

impl PartPlan {
    /// Plans an upload of `total` bytes (`None` when the size is not known in advance), with
    /// parts of `preferred` bytes where the limits allow (0 means "the smallest allowed").
    ///
    /// # Errors
    /// [`PlanError::PartSizeTooLarge`] when `preferred` is over 5 GiB;
    /// [`PlanError::ObjectTooLarge`] when `total` is over 10,000 × 5 GiB.
    pub fn new(total: Option<u64>, preferred: u64) -> Result<Self, PlanError> {
        if preferred > MAX_PART_SIZE {
            return Err(PlanError::PartSizeTooLarge {
                preferred,
                max: MAX_PART_SIZE,
            });
        }
        // S4: P ≥ max(5 MiB, ⌈total / 10,000⌉), so the total fits in 10,000 parts.
        let needed = match total {
            Some(t) if t > MAX_OBJECT_SIZE => {
                return Err(PlanError::ObjectTooLarge {
                    total: t,
                    max: MAX_OBJECT_SIZE,
                });
            }
            Some(t) => t.div_ceil(u64::from(MAX_PARTS)),
            None => 0,
        };
        // Every term is at most MAX_PART_SIZE (a whole MiB), so the rounded size is too.
        let part_size = round_up_to_mib(preferred.max(MIN_PART_SIZE).max(needed));
        Ok(PartPlan { part_size, total })
    }

    /// Plans like [`PartPlan::new`], for a compatible server whose smallest part (every part
    /// but the last) is `min_part_size` bytes instead of S3's 5 MiB (S4: compatible servers
    /// keep other limits; moto's `S3_UPLOAD_PART_MIN_SIZE`, test servers). A part size of at
    /// least 1 MiB is rounded up to a whole MiB as [`PartPlan::new`] does; a smaller one is
    /// kept as it is. With `min_part_size` equal to [`MIN_PART_SIZE`] this is
    /// [`PartPlan::new`]. Real S3 answers parts below 5 MiB with `EntityTooSmall` at Complete.
    ///
    /// # Errors
    /// As [`PartPlan::new`]; [`PlanError::PartSizeTooLarge`] also when `min_part_size` is
    /// over 5 GiB.
    pub fn with_minimum(
        total: Option<u64>,
        preferred: u64,
        min_part_size: u64,
    ) -> Result<Self, PlanError> {
        if min_part_size >= MIN_PART_SIZE {
            let plan = Self::new(total, preferred.max(min_part_size))?;
            return Ok(plan);
        }
        if preferred > MAX_PART_SIZE {
            return Err(PlanError::PartSizeTooLarge {
                preferred,
                max: MAX_PART_SIZE,
            });
        }
        let needed = match total {
            Some(t) if t > MAX_OBJECT_SIZE => {
                return Err(PlanError::ObjectTooLarge {
                    total: t,
                    max: MAX_OBJECT_SIZE,
                });
            }
            Some(t) => t.div_ceil(u64::from(MAX_PARTS)),
            None => 0,
        };
        // Every term is at most MAX_PART_SIZE, so the size and its rounding are too.
        let size = preferred.max(min_part_size).max(needed).max(1);
        let part_size = if size >= MIB {
            round_up_to_mib(size)
        } else {
            size
        };
        Ok(PartPlan { part_size, total })
    }

    /// The size of every part but the last (a whole MiB, from 5 MiB to 5 GiB).
    pub fn part_size(&self) -> u64 {
        self.part_size
    }

    /// The object's size, when it was known in advance.
    pub fn total(&self) -> Option<u64> {
        self.total
    }

    /// The most bytes this plan can hold: the total when known, else 10,000 × the part size.
    pub fn max_object_size(&self) -> u64 {
        self.total
            .unwrap_or_else(|| u64::from(MAX_PARTS).saturating_mul(self.part_size))
    }

    /// How many parts a known total takes (at least 1: an empty object is one empty part,
    /// because Complete refuses an empty part list, S6); `None` for an unknown total.
    pub fn count(&self) -> Option<u32> {
        self.total.map(|total| {
            let parts = total.div_ceil(self.part_size).max(1);
            // `new` guarantees at most MAX_PARTS; the fallback is never taken.
            u32::try_from(parts).unwrap_or(MAX_PARTS)
        })
    }

    /// The last part number this plan may use: [`count`](Self::count) for a known total,
    /// else 10,000.
    pub fn last_part_number(&self) -> u32 {
        self.count().unwrap_or(MAX_PARTS)
    }

    /// The byte range of part `part_number` (1-based). For a known total the last part ends at
    /// the total; for an unknown total every range is a whole part, and the driver ends the
    /// last one where the source ends.
    ///
    /// # Errors
    /// [`PlanError::NoSuchPart`] for part 0 or a part past the last of a known total;
    /// [`PlanError::SourceTooLong`] for part 10,001 and above of an unknown total.
    pub fn range(&self, part_number: u32) -> Result<Range<u64>, PlanError> {
        let last = self.last_part_number();
        if part_number == 0 || (self.total.is_some() && part_number > last) {
            return Err(PlanError::NoSuchPart { part_number, last });
        }
        if part_number > MAX_PARTS {
            return Err(self.too_long());
        }
        // (n − 1) · P ≤ 9,999 × 5 GiB and n · P ≤ 10,000 × 5 GiB: far below u64::MAX.
        let start = u64::from(part_number - 1).saturating_mul(self.part_size);
        let end = start.saturating_add(self.part_size);
        Ok(match self.total {
            Some(total) => start.min(total)..end.min(total),
            None => start..end,
        })
    }

    /// The part that holds byte `offset`.
    ///
    /// # Errors
    /// [`PlanError::PastEnd`] for an offset at or past a known total (so also for every offset
    /// of an empty object); [`PlanError::SourceTooLong`] for an offset past what 10,000 parts
    /// hold when the total is unknown.
    pub fn part_at(&self, offset: u64) -> Result<u32, PlanError> {
        match self.total {
            Some(total) if offset >= total => Err(PlanError::PastEnd { offset, total }),
            None if offset >= self.max_object_size() => Err(self.too_long()),
            _ => {
                let index = offset / self.part_size;
                // Below MAX_PARTS by the checks above; the fallback is never taken.
                Ok(u32::try_from(index).map_or(MAX_PARTS, |i| i.saturating_add(1)))
            }
        }
    }

    fn too_long(&self) -> PlanError {
        PlanError::SourceTooLong {
            limit: self.max_object_size(),
            part_size: self.part_size,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const GIB: u64 = 1024 * MIB;

    #[test]
    fn s4_a_smaller_server_minimum_allows_small_parts_and_still_fits_10000() {
        let plan = PartPlan::with_minimum(Some(100_000), 0, 16 * 1024).unwrap();
        assert_eq!(plan.part_size(), 16 * 1024);
        assert_eq!(plan.count(), Some(7));
        assert_eq!(plan.range(7), Ok(6 * 16 * 1024..100_000));
        // Never more than 10,000 parts, whatever the minimum.
        let plan = PartPlan::with_minimum(Some(MAX_OBJECT_SIZE), 1, 1).unwrap();
        assert_eq!(plan.count(), Some(MAX_PARTS));
        assert_eq!(plan.part_size(), MAX_PART_SIZE);
        // The default minimum is PartPlan::new.
        assert_eq!(
            PartPlan::with_minimum(Some(12 * MIB + 1), 0, MIN_PART_SIZE),
            PartPlan::new(Some(12 * MIB + 1), 0)
        );
        assert!(PartPlan::with_minimum(Some(1), MAX_PART_SIZE + 1, 1).is_err());
    }

    #[test]
    fn s4_limits_are_the_documented_numbers() {
        assert_eq!(MIN_PART_SIZE, 5_242_880);
        assert_eq!(MAX_PART_SIZE, 5_368_709_120);
        assert_eq!(MAX_OBJECT_SIZE, 53_687_091_200_000);
    }

    #[test]
    fn s4_small_total_uses_the_5_mib_minimum() {
        let plan = PartPlan::new(Some(12 * MIB + 1), 0).unwrap();
        assert_eq!(plan.part_size(), MIN_PART_SIZE);
        assert_eq!(plan.count(), Some(3));
        assert_eq!(plan.range(1), Ok(0..5 * MIB));
        assert_eq!(plan.range(2), Ok(5 * MIB..10 * MIB));
        assert_eq!(plan.range(3), Ok(10 * MIB..12 * MIB + 1));
        assert_eq!(
            plan.range(4),
            Err(PlanError::NoSuchPart {
                part_number: 4,
                last: 3
            })
        );
    }

    #[test]
    fn s4_preferred_size_is_kept_and_rounded_up_to_a_mib() {
        let plan = PartPlan::new(Some(100 * MIB), 8 * MIB).unwrap();
        assert_eq!(plan.part_size(), 8 * MIB);
        assert_eq!(plan.count(), Some(13));
        let plan = PartPlan::new(Some(100 * MIB), 8 * MIB + 1).unwrap();
        assert_eq!(plan.part_size(), 9 * MIB);
        // Below the minimum: raised to 5 MiB.
        assert_eq!(PartPlan::new(None, 1).unwrap().part_size(), MIN_PART_SIZE);
    }

    #[test]
    fn s4_large_total_grows_the_part_size_to_fit_10000_parts() {
        // 100 GiB / 10,000 = 10,737,418.24 B → 10,737,419 → rounded up to 11 MiB.
        let total = 100 * GIB;
        let plan = PartPlan::new(Some(total), 0).unwrap();
        assert_eq!(plan.part_size(), 11 * MIB);
        let count = plan.count().unwrap();
        assert!(count <= MAX_PARTS);
        assert_eq!(plan.range(count).unwrap().end, total);
        assert_eq!(u64::from(count), total.div_ceil(11 * MIB));
    }

    #[test]
    fn s4_the_largest_object_is_10000_parts_of_5_gib() {
        let plan = PartPlan::new(Some(MAX_OBJECT_SIZE), 0).unwrap();
        assert_eq!(plan.part_size(), MAX_PART_SIZE);
        assert_eq!(plan.count(), Some(MAX_PARTS));
        assert_eq!(
            plan.range(MAX_PARTS),
            Ok(MAX_OBJECT_SIZE - MAX_PART_SIZE..MAX_OBJECT_SIZE)
        );
        assert_eq!(plan.part_at(MAX_OBJECT_SIZE - 1), Ok(MAX_PARTS));
        assert_eq!(
            plan.part_at(MAX_OBJECT_SIZE),
            Err(PlanError::PastEnd {
                offset: MAX_OBJECT_SIZE,
                total: MAX_OBJECT_SIZE
            })
        );
    }

    #[test]
    fn s4_one_byte_more_than_the_largest_object_is_refused() {
        assert_eq!(
            PartPlan::new(Some(MAX_OBJECT_SIZE + 1), 0),
            Err(PlanError::ObjectTooLarge {
                total: MAX_OBJECT_SIZE + 1,
                max: MAX_OBJECT_SIZE
            })
        );
        assert!(matches!(
            PartPlan::new(Some(u64::MAX), 0),
            Err(PlanError::ObjectTooLarge { .. })
        ));
    }

    #[test]
    fn s4_preferred_size_over_5_gib_is_refused() {
        assert_eq!(
            PartPlan::new(Some(10), MAX_PART_SIZE + 1),
            Err(PlanError::PartSizeTooLarge {
                preferred: MAX_PART_SIZE + 1,
                max: MAX_PART_SIZE
            })
        );
        assert!(matches!(
            PartPlan::new(None, u64::MAX),
            Err(PlanError::PartSizeTooLarge { .. })
        ));
        assert_eq!(
            PartPlan::new(None, MAX_PART_SIZE).unwrap().part_size(),
            MAX_PART_SIZE
        );
    }

    #[test]
    fn s4_unknown_total_caps_the_object_and_refuses_part_10001() {
        let plan = PartPlan::new(None, 0).unwrap();
        assert_eq!(plan.count(), None);
        assert_eq!(plan.max_object_size(), 10_000 * MIN_PART_SIZE);
        assert_eq!(
            plan.range(MAX_PARTS),
            Ok(9_999 * MIN_PART_SIZE..10_000 * MIN_PART_SIZE)
        );
        let too_long = PlanError::SourceTooLong {
            limit: 10_000 * MIN_PART_SIZE,
            part_size: MIN_PART_SIZE,
        };
        assert_eq!(plan.range(MAX_PARTS + 1), Err(too_long));
        assert_eq!(plan.range(u32::MAX), Err(too_long));
        assert_eq!(plan.part_at(10_000 * MIN_PART_SIZE - 1), Ok(MAX_PARTS));
        assert_eq!(plan.part_at(10_000 * MIN_PART_SIZE), Err(too_long));
        assert_eq!(plan.part_at(u64::MAX), Err(too_long));
        // The largest unknown-size plan holds the largest object.
        let big = PartPlan::new(None, MAX_PART_SIZE).unwrap();
        assert_eq!(big.max_object_size(), MAX_OBJECT_SIZE);
        assert_eq!(big.part_at(u64::MAX).map(|_| ()), Err(big.too_long()));
    }

    #[test]
    fn s4_part_zero_does_not_exist() {
        for plan in [
            PartPlan::new(None, 0).unwrap(),
            PartPlan::new(Some(1), 0).unwrap(),
        ] {
            assert!(matches!(
                plan.range(0),
                Err(PlanError::NoSuchPart { part_number: 0, .. })
            ));
        }
    }

    #[test]
    fn s6_an_empty_object_is_one_empty_part() {
        let plan = PartPlan::new(Some(0), 0).unwrap();
        assert_eq!(plan.count(), Some(1));
        assert_eq!(plan.range(1), Ok(0..0));
        assert_eq!(
            plan.part_at(0),
            Err(PlanError::PastEnd {
                offset: 0,
                total: 0
            })
        );
    }

    #[test]
    fn s4_part_at_finds_the_part_holding_an_offset() {
        let plan = PartPlan::new(Some(20 * MIB), 0).unwrap();
        assert_eq!(plan.part_at(0), Ok(1));
        assert_eq!(plan.part_at(5 * MIB - 1), Ok(1));
        assert_eq!(plan.part_at(5 * MIB), Ok(2));
        assert_eq!(plan.part_at(20 * MIB - 1), Ok(4));
    }

    #[test]
    fn a_plan_rebuilt_from_its_saved_values_is_the_same_plan() {
        for (total, preferred) in [
            (Some(0), 0),
            (Some(100 * GIB), 7 * MIB + 3),
            (None, 64 * MIB),
            (Some(MAX_OBJECT_SIZE), 0),
        ] {
            let plan = PartPlan::new(total, preferred).unwrap();
            assert_eq!(PartPlan::new(plan.total(), plan.part_size()), Ok(plan));
        }
    }

    proptest! {
        // S4 for arbitrary inputs: a plan either is refused with the right error or cuts the
        // total into ≤ 10,000 contiguous parts, all of P bytes but the last, with P a whole MiB
        // from 5 MiB to 5 GiB and at least the preferred size.
        #[test]
        fn s4_plan_invariants(total in prop_oneof![
                Just(None),
                (0..=MAX_OBJECT_SIZE).prop_map(Some),
                any::<u64>().prop_map(Some),
            ],
            preferred in prop_oneof![0..=MAX_PART_SIZE, any::<u64>()],
            probe in any::<u64>(),
        ) {
            let plan = match PartPlan::new(total, preferred) {
                Ok(plan) => plan,
                Err(PlanError::PartSizeTooLarge { .. }) => {
                    prop_assert!(preferred > MAX_PART_SIZE);
                    return Ok(());
                }
                Err(PlanError::ObjectTooLarge { .. }) => {
                    prop_assert!(total.unwrap() > MAX_OBJECT_SIZE);
                    return Ok(());
                }
                Err(e) => panic!("unexpected {e:?}"),
            };
            prop_assert!(preferred <= MAX_PART_SIZE && total.is_none_or(|t| t <= MAX_OBJECT_SIZE));
            let p = plan.part_size();
            prop_assert!(p % MIB == 0 && (MIN_PART_SIZE..=MAX_PART_SIZE).contains(&p));
            prop_assert!(p >= preferred);
            let last = plan.last_part_number();
            prop_assert!((1..=MAX_PARTS).contains(&last));
            if let Some(t) = total {
                prop_assert_eq!(plan.range(last).unwrap().end, t);
                prop_assert_eq!(plan.range(1).unwrap().start, 0);
                // The smallest P that fits would need more than 10,000 parts one MiB lower.
                if p > MIN_PART_SIZE.max(preferred.div_ceil(MIB) * MIB) {
                    prop_assert!(t > u64::from(MAX_PARTS) * (p - MIB));
                }
            }
            // Any part: contiguous with the one before, P bytes unless it is the last.
            let n = 1 + u32::try_from(probe % u64::from(last)).unwrap();
            let range = plan.range(n).unwrap();
            if n > 1 {
                prop_assert_eq!(plan.range(n - 1).unwrap().end, range.start);
            }
            if n < last {
                prop_assert_eq!(range.end - range.start, p);
            } else {
                prop_assert!(range.end - range.start <= p);
            }
            // part_at agrees with range.
            if range.start < range.end {
                prop_assert_eq!(plan.part_at(range.start), Ok(n));
                prop_assert_eq!(plan.part_at(range.end - 1), Ok(n));
            }
            let offset = probe % plan.max_object_size().max(1);
            if let Ok(k) = plan.part_at(offset) {
                prop_assert!(plan.range(k).unwrap().contains(&offset));
            }
        }
    }
}
