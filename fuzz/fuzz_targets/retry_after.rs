#![no_main]
use resumable_fuzz::split_line;

// G8: `Retry-After` (first line) against `Date` (second line).
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let (after, date) = split_line(data);
    let _ = resumable_core::retry::retry_after(&resumable_fuzz::headers(&[
        ("retry-after", after),
        ("date", date),
    ]));
});
