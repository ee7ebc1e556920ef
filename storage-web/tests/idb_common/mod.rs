//! The IndexedDB file layer's tests, run in a dedicated worker (`idb_layer.rs`) and on the
//! main thread (`idb_layer_main_thread.rs`): rusqlite directly on the `tidemark-idb` VFS.

use js_sys::{Object, Reflect};
use rusqlite::{params, Connection, OpenFlags};
use tidemark_engine::StorageError;
use wasm_bindgen::{JsCast, JsValue};
use wasm_bindgen_test::wasm_bindgen_test;
use web_sys::{IdbDatabase, IdbTransactionMode};

use crate::error::JsErrorText;
use crate::idb::js::{indexed_db, storage_error, Completion, Watched};
use crate::idb::IdbFile;

/// A connection on the file with SQLite's defaults.
pub fn connect_with_defaults(file_name: &str) -> Connection {
    Connection::open_with_flags_and_vfs(
        file_name,
        OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_CREATE,
        IdbFile::VFS,
    )
    .unwrap()
}

/// Runs a pragma that reports its value.
pub fn pragma(conn: &Connection, sql: &str) -> String {
    conn.query_row(sql, [], |row| row.get(0)).unwrap()
}

/// A connection as the store opens it: in-memory journal, normal locking.
pub fn connect(file_name: &str) -> Connection {
    let conn = connect_with_defaults(file_name);
    assert_eq!(pragma(&conn, "PRAGMA journal_mode=MEMORY"), "memory");
    assert_eq!(pragma(&conn, "PRAGMA locking_mode=NORMAL"), "normal");
    conn
}

pub fn create_table(conn: &Connection) {
    conn.execute_batch("CREATE TABLE t (id INTEGER PRIMARY KEY, body TEXT NOT NULL)")
        .unwrap();
}

pub fn insert(conn: &Connection, id: i64) {
    conn.execute(
        "INSERT INTO t (id, body) VALUES (?1, ?2)",
        params![id, format!("row {id}")],
    )
    .unwrap();
}

pub fn ids(conn: &Connection) -> Vec<i64> {
    let mut stmt = conn.prepare("SELECT id FROM t ORDER BY id").unwrap();
    stmt.query_map([], |row| row.get(0))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap()
}

pub fn integrity(conn: &Connection) -> String {
    pragma(conn, "PRAGMA integrity_check")
}

/// Opens a raw IndexedDB connection, optionally at a newer version (which makes the file
/// layer's connection close on `versionchange`).
async fn raw_open(idb_name: &str, version: Option<u32>) -> IdbDatabase {
    let factory = indexed_db().unwrap();
    let request = match version {
        Some(version) => factory.open_with_u32(idb_name, version).unwrap(),
        None => factory.open(idb_name).unwrap(),
    };
    Watched::new(&request)
        .result()
        .await
        .unwrap()
        .unchecked_into()
}

/// A file whose table holds row 1 flushed and row 2 committed in SQLite only.
async fn one_flushed_row_and_one_not(idb_name: &str, file_name: &str) -> (IdbFile, Connection) {
    let file = IdbFile::open(idb_name, file_name).await.unwrap();
    let conn = connect(file_name);
    create_table(&conn);
    insert(&conn, 1);
    file.flush().await.unwrap();
    insert(&conn, 2);
    (file, conn)
}

#[wasm_bindgen_test]
async fn data_survives_flush_close_and_reopen() {
    let file = IdbFile::open("idb-reopen", "reopen.db").await.unwrap();
    let conn = connect("reopen.db");
    create_table(&conn);
    for id in 1..=3 {
        insert(&conn, id);
    }
    file.flush().await.unwrap();
    assert!(file.len() >= 2 * 4096);
    drop(conn);
    file.close();

    let file = IdbFile::open("idb-reopen", "reopen.db").await.unwrap();
    let conn = connect("reopen.db");
    assert_eq!(ids(&conn), vec![1, 2, 3]);
    assert_eq!(integrity(&conn), "ok");
    drop(conn);
    drop(file);
}

#[wasm_bindgen_test]
async fn the_default_delete_journal_works_too() {
    let file = IdbFile::open("idb-journal", "journal.db").await.unwrap();
    let conn = connect_with_defaults("journal.db");
    assert_eq!(pragma(&conn, "PRAGMA journal_mode"), "delete");
    create_table(&conn);
    insert(&conn, 1);
    file.flush().await.unwrap();
    // A rolled-back transaction restores its pages from the (in-memory) journal.
    conn.execute_batch("BEGIN; INSERT INTO t VALUES (2, 'two'); ROLLBACK;")
        .unwrap();
    insert(&conn, 3);
    file.flush().await.unwrap();
    drop(conn);
    file.close();

    let file = IdbFile::open("idb-journal", "journal.db").await.unwrap();
    let conn = connect("journal.db");
    assert_eq!(ids(&conn), vec![1, 3]);
    assert_eq!(integrity(&conn), "ok");
    drop(conn);
    drop(file);
}

#[wasm_bindgen_test]
async fn many_commits_then_reopen() {
    let file = IdbFile::open("idb-many", "many.db").await.unwrap();
    let conn = connect("many.db");
    create_table(&conn);
    file.flush().await.unwrap();
    for batch in 0..40_i64 {
        let tx = conn.unchecked_transaction().unwrap();
        for id in batch * 50..(batch + 1) * 50 {
            tx.execute(
                "INSERT INTO t (id, body) VALUES (?1, ?2)",
                params![id, "x".repeat(300)],
            )
            .unwrap();
        }
        tx.commit().unwrap();
        // Deleting now and then shrinks pages and frees them: flushes write those too.
        if batch % 10 == 9 {
            conn.execute("DELETE FROM t WHERE id % 7 = 0", []).unwrap();
        }
        file.flush().await.unwrap();
    }
    let before = ids(&conn);
    // VACUUM shrinks the file: the flush deletes the chunks past its new end.
    conn.execute("DELETE FROM t WHERE id >= 1000", []).unwrap();
    conn.execute_batch("VACUUM").unwrap();
    file.flush().await.unwrap();
    let size = file.size();
    drop(conn);
    file.close();

    let file = IdbFile::open("idb-many", "many.db").await.unwrap();
    assert_eq!(file.size(), size);
    let conn = connect("many.db");
    let expected: Vec<i64> = before.into_iter().filter(|id| *id < 1000).collect();
    assert_eq!(ids(&conn), expected);
    assert_eq!(integrity(&conn), "ok");
    drop(conn);
    drop(file);
}

#[wasm_bindgen_test]
async fn revert_drops_a_committed_batch_from_the_connection() {
    let (file, conn) = one_flushed_row_and_one_not("idb-revert", "revert.db").await;
    assert_eq!(ids(&conn), vec![1, 2]);
    file.revert();
    // SQLite sees the header's change counter go back and drops its cached pages.
    assert_eq!(ids(&conn), vec![1]);
    // The connection goes on working from the reverted state.
    insert(&conn, 3);
    file.flush().await.unwrap();
    assert_eq!(ids(&conn), vec![1, 3]);
    assert_eq!(integrity(&conn), "ok");

    // A reverted schema change is undone too.
    conn.execute_batch("CREATE TABLE u (x); INSERT INTO u VALUES (1);")
        .unwrap();
    file.revert();
    assert!(conn
        .query_row("SELECT count(*) FROM u", [], |_| Ok(()))
        .is_err());
    assert_eq!(ids(&conn), vec![1, 3]);
    drop(conn);
    drop(file);
}

#[wasm_bindgen_test]
async fn a_database_deleted_under_the_file_fails_the_flush_as_gone() {
    let (file, conn) = one_flushed_row_and_one_not("idb-deleted", "deleted.db").await;
    // The delete is not blocked: the file layer closes its connection on versionchange.
    IdbFile::delete("idb-deleted").await.unwrap();
    assert!(file.gone().is_some());
    let error = file.flush().await.unwrap_err();
    assert!(matches!(error, StorageError::Gone { .. }), "{error:?}");
    // The file went back to the last flushed state, and the connection reads it.
    assert_eq!(ids(&conn), vec![1]);
    // Every later flush fails, even with nothing to write.
    insert(&conn, 3);
    let error = file.flush().await.unwrap_err();
    assert!(matches!(error, StorageError::Gone { .. }), "{error:?}");
    file.revert();
    assert_eq!(ids(&conn), vec![1]);
    drop(conn);
    file.close();

    // Nothing was stored: the database is new again.
    let file = IdbFile::open("idb-deleted", "deleted.db").await.unwrap();
    assert_eq!(file.size(), 0);
    drop(file);
}

#[wasm_bindgen_test]
async fn a_connection_closed_under_the_file_fails_the_flush_and_reopen_sees_the_last_flush() {
    let (file, conn) = one_flushed_row_and_one_not("idb-closed", "closed.db").await;
    // Another connection upgrading the database closes ours (versionchange); the data stays.
    let other = raw_open("idb-closed", Some(2)).await;
    other.close();
    let error = file.flush().await.unwrap_err();
    assert!(matches!(error, StorageError::Gone { .. }), "{error:?}");
    assert!(error.to_string().contains("idb-closed"), "{error}");
    assert_eq!(ids(&conn), vec![1]);
    assert_eq!(integrity(&conn), "ok");
    drop(conn);
    file.close();

    let file = IdbFile::open("idb-closed", "closed.db").await.unwrap();
    let conn = connect("closed.db");
    assert_eq!(ids(&conn), vec![1]);
    assert_eq!(integrity(&conn), "ok");
    insert(&conn, 4);
    file.flush().await.unwrap();
    drop(conn);
    drop(file);
}

/// Creates the database with one flushed table, then closes it.
async fn create_flushed(idb_name: &str, file_name: &str) {
    let file = IdbFile::open(idb_name, file_name).await.unwrap();
    let conn = connect(file_name);
    create_table(&conn);
    file.flush().await.unwrap();
    drop(conn);
    file.close();
}

/// Puts a record behind the file layer's back, as another build (or damage) would.
async fn raw_put(idb_name: &str, store: &str, key: &JsValue, value: &JsValue) {
    let db = raw_open(idb_name, None).await;
    let tx = db
        .transaction_with_str_and_mode(store, IdbTransactionMode::Readwrite)
        .unwrap();
    let done = Completion::new(&tx);
    tx.object_store(store)
        .unwrap()
        .put_with_key(value, key)
        .unwrap();
    done.done().await.unwrap();
    db.close();
}

#[wasm_bindgen_test]
async fn an_aborted_flush_is_a_backend_error_and_reverts_commits_made_meanwhile() {
    let (file, conn) = one_flushed_row_and_one_not("idb-abort", "abort.db").await;
    file.abort_next_flush();
    let mut flush = Box::pin(file.flush());
    // The flush waits for its transaction: a commit meanwhile is tracked against it.
    assert!(futures::poll!(&mut flush).is_pending());
    insert(&conn, 3);
    let error = flush.await.unwrap_err();
    match &error {
        StorageError::Backend { detail, .. } => assert!(detail.contains("AbortError"), "{detail}"),
        other => panic!("{other:?}"),
    }
    assert!(file.gone().is_none());
    assert_eq!(ids(&conn), vec![1]);
    assert_eq!(integrity(&conn), "ok");
    // Refused until reopened.
    insert(&conn, 4);
    let error = file.flush().await.unwrap_err();
    assert!(matches!(error, StorageError::Backend { .. }), "{error:?}");
    drop(conn);
    file.close();

    let file = IdbFile::open("idb-abort", "abort.db").await.unwrap();
    let conn = connect("abort.db");
    assert_eq!(ids(&conn), vec![1]);
    insert(&conn, 5);
    file.flush().await.unwrap();
    drop(conn);
    drop(file);
}

#[wasm_bindgen_test]
async fn a_connection_closed_without_an_event_fails_the_flush_as_gone() {
    let (file, conn) = one_flushed_row_and_one_not("idb-silent", "silent.db").await;
    file.close_connection_silently();
    let error = file.flush().await.unwrap_err();
    assert!(matches!(error, StorageError::Gone { .. }), "{error:?}");
    assert!(error.to_string().contains("InvalidStateError"), "{error}");
    assert_eq!(ids(&conn), vec![1]);
    drop(conn);
    drop(file);
}

#[wasm_bindgen_test]
async fn a_newer_layout_is_unsupported() {
    create_flushed("idb-layout", "layout.db").await;
    // Rewrite the meta record as a future build would.
    let meta = Object::new();
    Reflect::set(&meta, &"layout".into(), &JsValue::from_f64(99.0)).unwrap();
    Reflect::set(&meta, &"size".into(), &JsValue::from_f64(8192.0)).unwrap();
    raw_put("idb-layout", "meta", &"file".into(), &meta).await;
    let error = IdbFile::open("idb-layout", "layout.db")
        .await
        .err()
        .unwrap();
    assert!(
        matches!(
            error,
            StorageError::UnsupportedVersion {
                found: 99,
                supported: 1
            }
        ),
        "{error:?}"
    );
    // The failed open left the name free.
    IdbFile::delete("idb-layout").await.unwrap();
    let file = IdbFile::open("idb-layout", "layout.db").await.unwrap();
    assert_eq!(file.size(), 0);
    drop(file);
}

#[wasm_bindgen_test]
async fn a_stray_chunk_is_corrupt() {
    create_flushed("idb-stray", "stray.db").await;
    let chunk = js_sys::Uint8Array::new_with_length(4096);
    raw_put("idb-stray", "chunks", &JsValue::from_f64(999.0), &chunk).await;
    let error = IdbFile::open("idb-stray", "stray.db").await.err().unwrap();
    assert!(matches!(error, StorageError::Corrupt { .. }), "{error:?}");
}

#[wasm_bindgen_test]
async fn a_file_open_twice_in_one_context_is_in_use() {
    let file = IdbFile::open("idb-twice", "twice.db").await.unwrap();
    let error = IdbFile::open("idb-twice", "twice.db").await.err().unwrap();
    assert!(matches!(error, StorageError::InUse { .. }), "{error:?}");
    file.close();
    let again = IdbFile::open("idb-twice", "twice.db").await.unwrap();
    drop(again);
}

#[wasm_bindgen_test]
async fn a_blocked_delete_is_in_use_not_a_hang() {
    create_flushed("idb-blocked", "blocked.db").await;
    // A connection that ignores versionchange, as a careless other tab would.
    let holder = raw_open("idb-blocked", None).await;
    let error = IdbFile::delete("idb-blocked").await.unwrap_err();
    assert!(matches!(error, StorageError::InUse { .. }), "{error:?}");
    holder.close();
}

#[wasm_bindgen_test]
fn js_errors_map_to_typed_storage_errors() {
    // No way to exhaust the quota from wasm-bindgen-test: the mapping is checked as a unit.
    let quota = JsErrorText::new("QuotaExceededError", "The quota has been exceeded.");
    let error = storage_error("flush of x", quota.clone(), None, false);
    assert!(matches!(error, StorageError::Full { .. }), "{error:?}");
    let source = std::error::Error::source(&error).unwrap().to_string();
    assert!(source.contains("QuotaExceededError"), "{source}");

    let abort = JsErrorText::new("AbortError", "aborted");
    let error = storage_error("flush of x", abort.clone(), Some("deleted"), false);
    assert!(matches!(error, StorageError::Gone { .. }), "{error:?}");
    let error = storage_error("flush of x", abort, None, false);
    match error {
        StorageError::Backend { detail, .. } => {
            assert!(detail.contains("AbortError: aborted"), "{detail}")
        }
        other => panic!("{other:?}"),
    }
}
