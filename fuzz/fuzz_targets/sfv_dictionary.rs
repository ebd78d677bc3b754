#![no_main]

// R11: structured-field Dictionaries and Lists, and `Upload-Limit` (one field line per line).
libfuzzer_sys::fuzz_target!(|data: &[u8]| resumable_fuzz::sfv_dictionary(data));
