#![no_main]

// R2: structured-field Items (`Upload-Offset`, `Upload-Length`, `Upload-Complete`), one field
// line per input line.
libfuzzer_sys::fuzz_target!(|data: &[u8]| resumable_fuzz::sfv_item(data));
