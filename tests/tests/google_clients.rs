//! Google's own clients against `resumable serve`: runs `scripts/peers/google`, which
//! installs the pinned `google-cloud-storage` (Python, from PyPI) in `.venv-google`, starts
//! the server, and checks uploads of 0 B to 40 MB (plain and through Retry Test API faults)
//! byte for byte, and `gcloud storage cp` of 20 MB when gcloud is installed.
//!
//! It needs the network to PyPI and a release build of the CLI, so it is ignored by
//! default: `cargo test -p resumable-tests --test google_clients -- --ignored google`.

use std::process::Command;

#[test]
#[ignore = "installs google-cloud-storage from PyPI and builds the CLI in release mode: run with -- --ignored google"]
fn google_python_client_and_gcloud_pass_against_resumable_serve() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let status = Command::new(root.join("scripts/peers/google"))
        .current_dir(&root)
        .status()
        .expect("scripts/peers/google runs");
    assert!(status.success(), "scripts/peers/google failed: {status}");
}
