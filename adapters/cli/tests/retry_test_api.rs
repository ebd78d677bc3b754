//! `resumable gcs` through storage-testbench's retry matrix, served by the conformance
//! server's Retry Test API: for each instruction (queued twice, so a retry meets it too) the
//! binary must retry through and store the right bytes, and the retry test must end
//! `completed` (every fault happened). The CLI sends extra headers (`-H`) on the start only;
//! the session keeps the start's `x-retry-test-id`, so its chunks consume the instructions
//! too.

use std::process::{Command, Stdio};

use resumable_server::{Server, ServerConfig};
use serde_json::{Value, json};

const BIN: &str = env!("CARGO_BIN_EXE_resumable");

fn data(len: usize) -> Vec<u8> {
    (0..len)
        .map(|i| (i * 31 % 251) as u8 ^ (i >> 13) as u8)
        .collect()
}

fn post_json(server: &Server, path: &str, body: &Value) -> Value {
    let url = format!("{}{path}", server.base_url());
    let mut r = ureq::post(&url)
        .header("Content-Type", "application/json")
        .send(body.to_string().as_bytes())
        .expect("POST");
    serde_json::from_slice(&r.body_mut().read_to_vec().unwrap()).unwrap()
}

fn get_json(server: &Server, path: &str) -> Value {
    let url = format!("{}{path}", server.base_url());
    let mut r = ureq::get(&url).call().expect("GET");
    serde_json::from_slice(&r.body_mut().read_to_vec().unwrap()).unwrap()
}

#[test]
fn resumable_gcs_passes_the_retry_matrix() {
    // G8: 408, 429, 500, 503, resets, mid-upload errors, stalls and a broken final answer.
    let server = Server::start(ServerConfig::default()).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let bytes = data(5 * 262_144 + 999);
    let file = dir.path().join("matrix.bin");
    std::fs::write(&file, &bytes).unwrap();
    let matrix = [
        "return-503",
        "return-408",
        "return-429",
        "return-500",
        "return-reset-connection",
        "return-503-after-256K",
        "return-500-after-768K",
        "stall-for-1s-after-256K",
        "return-broken-stream-final-chunk-after-10B",
    ];
    for (i, instruction) in matrix.iter().enumerate() {
        let test = post_json(
            &server,
            "/retry_test",
            &json!({"instructions": {"storage.objects.insert": [instruction, instruction]}}),
        );
        let id = test["id"].as_str().unwrap();
        let object = format!("matrix-{i}.bin");
        let url = server.gcs_json_url("b", &object);
        let out = Command::new(BIN)
            .args([
                "gcs",
                "--chunk-size",
                "256KiB",
                "--no-progress",
                "--json",
                "--max-retries",
                "6",
                "-H",
                &format!("x-retry-test-id: {id}"),
                file.to_str().unwrap(),
                &url,
            ])
            .env("XDG_STATE_HOME", dir.path().join("state"))
            .stdin(Stdio::null())
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{instruction}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let outcome: Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(outcome["bytes"], bytes.len() as u64, "{instruction}");
        assert_eq!(server.object("b", &object).unwrap(), bytes, "{instruction}");
        let state = get_json(&server, &format!("/retry_test/{id}"));
        assert_eq!(state["completed"], true, "{instruction}: {state}");
    }
}
