#![no_main]
use resumable_core::range::{content_range, parse_content_range};

// G4, G6: a request `Content-Range`; what parses is written back the same way.
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    if let Some(parsed) = parse_content_range(data) {
        let written = content_range(parsed.range.clone().unwrap_or(0..0), parsed.total);
        assert_eq!(parse_content_range(written.as_bytes()), Some(parsed));
    }
});
