#![no_main]

// U7: tus `Upload-Metadata`, read strictly and written from `key=value` lines.
libfuzzer_sys::fuzz_target!(|data: &[u8]| resumable_fuzz::upload_metadata(data));
