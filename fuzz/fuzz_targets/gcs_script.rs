#![no_main]

// GcsUpload fed an arbitrary script of answers and failures.
libfuzzer_sys::fuzz_target!(|script: resumable_fuzz::GcsScript| resumable_fuzz::run_gcs(&script));
