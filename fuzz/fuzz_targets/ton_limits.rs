#![no_main]

// T3, T4: `X-TON-Min/Max-Chunk-Size`, `Location`, `Expires` and `Date` of the start response.
libfuzzer_sys::fuzz_target!(|data: &[u8]| resumable_fuzz::ton_limits(data));
