#![no_main]

// M1, M3–M6: INIT, FINALIZE, STATUS and error bodies.
libfuzzer_sys::fuzz_target!(|data: &[u8]| resumable_fuzz::media_answer(data));
