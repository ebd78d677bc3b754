//! The README's main command, `resumable demo`, runs to the end and every upload checks out.

use std::process::Command;

// G1-G12, T2-T6, M1-M6 through the embedded server: the demo's summary says every object is
// byte-identical, and each of its four uploads is in the table.
#[test]
fn demo_uploads_through_every_protocol_and_checks_the_bytes() {
    let out = Command::new(env!("CARGO_BIN_EXE_resumable"))
        .args(["demo", "--size", "3MiB", "--no-progress"])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let row = |label: &str| -> Vec<String> {
        let line = stdout
            .lines()
            .find(|l| l.starts_with(label))
            .unwrap_or_else(|| panic!("no row {label}: {stdout}"));
        assert!(line.trim_end().ends_with("same"), "{line}");
        line[label.len()..]
            .split_whitespace()
            .map(str::to_owned)
            .collect()
    };
    // Columns after the label: bytes, requests, retries, resumes, …
    let xml = row("GCS XML, faults");
    assert!(
        xml[2].parse::<u32>().unwrap() >= 3,
        "the faults fired: {xml:?}"
    );
    let json = row("GCS JSON, interrupted");
    assert_eq!(json[3], "1", "interrupted and resumed once: {json:?}");
    let ton = row("TON, faults");
    assert!(
        ton[2].parse::<u32>().unwrap() >= 2,
        "the faults fired: {ton:?}"
    );
    let media = row("media v2, processing");
    assert_eq!(media[2], "1", "the 503 on an APPEND: {media:?}");
    assert!(media.iter().any(|c| c == "processed"), "{media:?}");
    assert!(stdout.contains("every stored object is byte-identical to the file"));
}
