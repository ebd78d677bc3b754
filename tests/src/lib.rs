//! Cross-crate integration tests: the core and the drivers against the local server
//! (`resumable-server`), with a raw HTTP client for the server's own rules. The tests are in
//! `tests/`; this crate has no code of its own.
