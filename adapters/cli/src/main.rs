//! The `resumable` command-line tool (in progress).
fn main() {}
