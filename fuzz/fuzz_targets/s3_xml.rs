#![no_main]

// S2, S5–S7, S9: every S3 multipart XML answer parser, and the Complete body writer.
libfuzzer_sys::fuzz_target!(|data: &[u8]| resumable_fuzz::s3_xml(data));
