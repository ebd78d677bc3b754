#![no_main]

// S4: the part plan's invariants for arbitrary totals, part sizes, part numbers and offsets.
libfuzzer_sys::fuzz_target!(|data: &[u8]| resumable_fuzz::s3_plan(data));
