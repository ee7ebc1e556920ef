//! Every subcommand answers `--help` with exit 0.

use std::process::Command;

const BIN: &str = env!("CARGO_BIN_EXE_tidemark");

#[test]
fn every_subcommand_has_help() {
    let cases: &[&[&str]] = &[
        &["--help"],
        &["demo", "--help"],
        &["demo-client", "--help"],
        &["server", "--help"],
        &["server", "serve", "--help"],
        &["server", "create-user", "--help"],
        &["server", "token", "--help"],
        &["server", "create-conversation", "--help"],
        &["server", "add-member", "--help"],
        &["chat", "--help"],
        &["inspect", "--help"],
    ];
    for args in cases {
        let out = Command::new(BIN).args(*args).output().unwrap();
        assert!(
            out.status.success(),
            "{args:?} exited with {}: {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(text.contains("Usage:"), "{args:?} printed no usage: {text}");
    }
}

#[test]
fn unknown_subcommand_fails() {
    let out = Command::new(BIN).arg("frobnicate").output().unwrap();
    assert!(!out.status.success());
}
