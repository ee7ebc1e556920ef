//! Failure 5 of issue 9: `chat` on a damaged store. With the last page of a valid store
//! overwritten by random bytes, or the file cut short by one byte, `chat` must write nothing
//! more into it and exit non-zero saying how to recover; `tidemark recover` sets the store
//! aside; `chat` on the fresh store syncs again.

#![allow(
    clippy::unwrap_used,
    reason = "test helpers: a failed setup step is a failed test"
)]

mod support;

use std::path::{Path, PathBuf};
use std::process::Command;

use support::{text, Server, BIN};
use tidemark_engine::rng::SplitMix64;

/// Random bytes (the workspace's PRNG), so the damage does not happen to look like a valid
/// page.
fn random_bytes(n: usize, seed: u64) -> Vec<u8> {
    let mut rng = SplitMix64::new(seed);
    (0..n).map(|_| rng.next_u64() as u8).collect()
}

/// Every file in `dir` whose name starts with `prefix`.
fn files_starting(dir: &Path, prefix: &str) -> Vec<PathBuf> {
    let mut found: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            p.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with(prefix))
        })
        .collect();
    found.sort();
    found
}

#[test]
fn chat_refuses_a_damaged_store_and_recover_brings_it_back() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path());

    // Alice sends; bob's store syncs the messages and closes cleanly.
    let mut input = String::from("/wait\n/open ab\n");
    for i in 1..=40 {
        input.push_str(&format!(
            "message {i} from alice, long enough to fill pages {}\n",
            "x".repeat(200)
        ));
    }
    let out = server.chat("alice", &dir.path().join("alice.db"), &input);
    assert!(out.status.success(), "{}", text(&out));
    let valid = dir.path().join("bob.db");
    let out = server.chat("bob", &valid, "/wait\n/quit\n");
    assert!(out.status.success(), "{}", text(&out));
    assert!(!Path::new(&format!("{}-wal", valid.display())).exists());
    let bytes = std::fs::read(&valid).unwrap();
    assert_eq!(bytes.len() % 4096, 0, "whole pages");

    let mut last_page = bytes.clone();
    let at = last_page.len() - 4096;
    last_page[at..].copy_from_slice(&random_bytes(4096, 9));
    let cut = bytes[..bytes.len() - 1].to_vec();

    for (name, damaged) in [("last-page", last_page), ("cut-by-one", cut)] {
        let case = dir.path().join(name);
        std::fs::create_dir(&case).unwrap();
        let db = case.join("bob.db");
        std::fs::write(&db, &damaged).unwrap();

        // chat refuses, says what to do, and writes nothing.
        let out = server.chat("bob", &db, "/wait\n/open ab\nstill here?\n/quit\n");
        let stderr = String::from_utf8_lossy(&out.stderr);
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(!out.status.success(), "{name}: {}", text(&out));
        assert!(stderr.contains("is damaged"), "{name}: {}", text(&out));
        assert!(
            stderr.contains(&format!("tidemark recover {}", db.display())),
            "{name}: {}",
            text(&out)
        );
        assert!(!stdout.contains("* sending"), "{name}: {}", text(&out));
        assert!(!stderr.contains("panicked"), "{name}: {}", text(&out));
        assert_eq!(
            std::fs::read(&db).unwrap(),
            damaged,
            "{name}: chat changed the damaged file"
        );
        let wal = std::fs::metadata(format!("{}-wal", db.display())).map_or(0, |m| m.len());
        assert_eq!(wal, 0, "{name}: chat wrote into the log");

        // recover sets the store aside, untouched, and starts a fresh one.
        let out = Command::new(BIN).arg("recover").arg(&db).output().unwrap();
        assert!(out.status.success(), "{name}: {}", text(&out));
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(stdout.contains("set aside: "), "{name}: {stdout}");
        assert!(
            stdout.contains("unsent messages kept: 0"),
            "{name}: {stdout}"
        );
        let aside = files_starting(&case, "bob.db.damaged-");
        assert!(!aside.is_empty(), "{name}: nothing set aside: {stdout}");
        assert_eq!(std::fs::read(&aside[0]).unwrap(), damaged, "{name}");

        // chat on the fresh store syncs alice's messages again.
        let out = server.chat("bob", &db, "/wait\n/open ab\n/quit\n");
        assert!(out.status.success(), "{name}: {}", text(&out));
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(stdout.contains("* synced"), "{name}: {stdout}");
        assert!(
            stdout.contains("alice: message 40 from alice"),
            "{name}: {stdout}"
        );
    }
}

#[test]
fn recover_leaves_a_sound_store_alone_unless_forced() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("sound.db");
    drop(tidemark_storage_sqlite::SqliteStorage::open(&db).unwrap());
    let before = std::fs::read(&db).unwrap();

    let out = Command::new(BIN).arg("recover").arg(&db).output().unwrap();
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("no damage found"),
        "{}",
        text(&out)
    );
    assert_eq!(std::fs::read(&db).unwrap(), before);
    assert!(files_starting(dir.path(), "sound.db.damaged-").is_empty());

    let out = Command::new(BIN)
        .args(["recover", "--force"])
        .arg(&db)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(files_starting(dir.path(), "sound.db.damaged-").len(), 1);
}
