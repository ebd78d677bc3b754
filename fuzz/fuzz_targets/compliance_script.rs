#![no_main]

// ComplianceJob (C1–C3, and the GCS upload it nests) fed an arbitrary script of answers,
// failures, restarts and cancels.
libfuzzer_sys::fuzz_target!(|script: resumable_fuzz::ComplianceScript| {
    resumable_fuzz::run_compliance(&script)
});
