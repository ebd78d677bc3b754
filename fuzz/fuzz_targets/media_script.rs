#![no_main]

// MediaUpload (v1.1 and v2) fed an arbitrary script of answers and failures.
libfuzzer_sys::fuzz_target!(
    |script: resumable_fuzz::MediaScript| resumable_fuzz::run_media(&script)
);
