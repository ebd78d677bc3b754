#![no_main]
use resumable_core::range::{RangeForm, parse_range};

// G5, T5: the `Range` of a 308, in both forms; a parsed range is never empty.
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    for form in [RangeForm::BytesPrefix, RangeForm::BytesPrefixOptional] {
        if let Ok((start, end)) = parse_range(data, form) {
            assert!(start < end);
        }
    }
});
