#![no_main]

// G7: the object resource and `x-goog-hash` of a completion.
libfuzzer_sys::fuzz_target!(|data: &[u8]| resumable_fuzz::gcs_completion(data));
