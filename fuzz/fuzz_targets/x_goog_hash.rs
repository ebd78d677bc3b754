#![no_main]

// G7: `x-goog-hash` headers (one per line).
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let _ = resumable_core::checksum::parse_x_goog_hash(&resumable_fuzz::header_lines(
        "x-goog-hash",
        data,
    ));
});
