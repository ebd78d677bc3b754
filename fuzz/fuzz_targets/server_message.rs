#![no_main]

// Error bodies of every protocol: the message kept is short, trimmed text.
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let _ = resumable_core::response::json(data);
    if let Some(message) = resumable_core::response::server_message(data) {
        assert!(message.chars().count() <= 200 && !message.chars().any(char::is_control));
    }
});
