//! The demo end to end (small), and `inspect` on the store it leaves.

use std::process::Command;

const BIN: &str = env!("CARGO_BIN_EXE_tidemark");

#[test]
fn small_demo_verifies_and_its_store_inspects_clean() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(BIN)
        .args([
            "demo",
            "--conversations",
            "20",
            "--messages",
            "2000",
            "--dir",
        ])
        .arg(dir.path())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "demo failed ({}):\n{stdout}\n{stderr}",
        out.status
    );
    assert!(stdout.contains("verification: OK"), "{stdout}");
    // The kill landed mid-sync and the restart resumed from what was committed.
    assert!(stdout.contains("killed with SIGKILL"), "{stdout}");
    assert!(stdout.contains("resumed from"), "{stdout}");

    let db = dir.path().join("alice-phone.db");
    let out = Command::new(BIN).arg("inspect").arg(&db).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "inspect failed: {text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains("conversations: 20"), "{text}");
    assert!(text.contains("dm-00"), "{text}");
    assert!(text.contains("group-09"), "{text}");
    assert!(text.contains("integrity: ok"), "{text}");
    assert!(text.contains("outbox: 0"), "{text}");

    let out = Command::new(BIN)
        .args(["inspect", "--json"])
        .arg(&db)
        .output()
        .unwrap();
    assert!(out.status.success());
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(json["conversation_count"], 20);
    assert_eq!(json["integrity"], "ok");
    for c in json["conversations"].as_array().unwrap() {
        assert_eq!(c["gaps"], serde_json::json!([]), "{c}");
    }
}
