//! Conformance server (in progress).
