#![no_main]

// G1, G2, T3: `Location` headers (one per line), resolved against the start URL.
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let base = http::Uri::from_static("https://ton.example/1.1/ton/bucket/b?resumable=true");
    let found =
        resumable_core::response::location(&resumable_fuzz::header_lines("location", data), &base);
    if let Ok(uri) = found {
        assert!(
            resumable_core::SessionUri::new(uri).is_ok(),
            "a Location that is no session URI"
        );
    }
});
