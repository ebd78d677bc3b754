#![no_main]

// TonUpload fed an arbitrary script of answers and failures.
libfuzzer_sys::fuzz_target!(|script: resumable_fuzz::TonScript| resumable_fuzz::run_ton(&script));
