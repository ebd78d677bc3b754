#![no_main]
use resumable_fuzz::split_line;

// M5: `x-rate-limit-reset` (first line) against `Date` (second line).
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let (reset, date) = split_line(data);
    let _ = resumable_core::retry::rate_limit_reset(&resumable_fuzz::headers(&[
        ("x-rate-limit-reset", reset),
        ("date", date),
    ]));
});
