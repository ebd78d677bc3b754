//! Blocking driver (in progress).
