//! `inspect` refuses what is not a Tidemark client store, with a message and exit 1.

use std::process::Command;

const BIN: &str = env!("CARGO_BIN_EXE_tidemark");

#[test]
fn inspect_refuses_what_is_not_a_store() {
    let dir = tempfile::tempdir().unwrap();
    let garbage = dir.path().join("garbage.db");
    let bytes: Vec<u8> = (0..8192u32)
        .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
        .collect();
    std::fs::write(&garbage, bytes).unwrap();
    let empty = dir.path().join("empty.db");
    std::fs::write(&empty, b"").unwrap();
    let missing = dir.path().join("missing.db");
    for path in [&garbage, &empty, &missing] {
        let out = Command::new(BIN).arg("inspect").arg(path).output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{}: {stderr}", path.display());
        assert!(stderr.starts_with("error: "), "{stderr}");
        assert!(stderr.contains(&*path.display().to_string()), "{stderr}");
        assert!(!stderr.contains("panicked"), "{stderr}");
    }
    // The garbage file is left as it was.
    assert_eq!(std::fs::read(&garbage).unwrap().len(), 8192);
}

#[test]
fn inspect_refuses_foreign_and_newer_stores() {
    let dir = tempfile::tempdir().unwrap();
    // A real SQLite database of some other program.
    let foreign = dir.path().join("foreign.db");
    let conn = rusqlite::Connection::open(&foreign).unwrap();
    conn.execute_batch("CREATE TABLE notes (id INTEGER PRIMARY KEY, body TEXT); INSERT INTO notes (body) VALUES ('hi');")
        .unwrap();
    drop(conn);
    // A Tidemark store from a newer build.
    let newer = dir.path().join("newer.db");
    drop(tidemark_storage_sqlite::SqliteStorage::open(&newer).unwrap());
    let conn = rusqlite::Connection::open(&newer).unwrap();
    conn.pragma_update(None, "user_version", 9_999).unwrap();
    drop(conn);

    let out = Command::new(BIN)
        .arg("inspect")
        .arg(&foreign)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("not a Tidemark client store"), "{stderr}");

    let out = Command::new(BIN)
        .arg("inspect")
        .arg(&newer)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("newer Tidemark"), "{stderr}");
}

#[test]
fn inspect_leaves_nothing_beside_the_store() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("store.db");
    drop(tidemark_storage_sqlite::SqliteStorage::open(&db).unwrap());
    let names = |dir: &std::path::Path| {
        let mut names: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    };
    assert_eq!(names(dir.path()), ["store.db"], "no log before");
    let before = std::fs::read(&db).unwrap();

    let out = Command::new(BIN).arg("inspect").arg(&db).output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("integrity: ok"));
    assert_eq!(names(dir.path()), ["store.db"], "inspect left files behind");
    assert_eq!(std::fs::read(&db).unwrap(), before);
}
