//! The IndexedDB file layer in a dedicated worker: rusqlite directly on the `tidemark-idb`
//! VFS (the tests shared with the main thread are in `idb_common`), and an ingest
//! measurement (run with `-- --nocapture` to see it).
#![cfg(target_family = "wasm")]
#![allow(clippy::unwrap_used, reason = "tests")]

use rusqlite::params;
use wasm_bindgen_test::{wasm_bindgen_test, wasm_bindgen_test_configure};

// The file layer itself (and the error type it uses), compiled into this test: its API is
// crate-private.
#[path = "../src/error.rs"]
mod error;
#[path = "../src/idb/mod.rs"]
#[allow(
    dead_code,
    reason = "the whole layer is compiled; these tests use part of it"
)]
mod idb;
mod idb_common;

use idb::IdbFile;
use idb_common::{connect, integrity};

wasm_bindgen_test_configure!(run_in_dedicated_worker);

const ROWS: i64 = 100_000;
const ROWS_PER_TRANSACTION: i64 = 2_000;

/// 100k rows of about 200 bytes, 2,000 per SQLite transaction, each followed by a flush.
#[wasm_bindgen_test]
async fn ingest_100k_rows_with_a_flush_after_each_transaction() {
    let started = js_sys::Date::now();
    let file = IdbFile::open("idb-ingest", "ingest.db").await.unwrap();
    let conn = connect("ingest.db");
    conn.execute_batch(
        "CREATE TABLE messages (conversation INTEGER NOT NULL, seq INTEGER NOT NULL, \
         body BLOB NOT NULL, PRIMARY KEY (conversation, seq))",
    )
    .unwrap();
    file.flush().await.unwrap();
    let opened = js_sys::Date::now();
    let body = vec![b'm'; 200];
    let (mut sql_ms, mut flush_ms, mut slowest_flush_ms) = (0.0, 0.0, 0.0_f64);
    for batch in 0..ROWS / ROWS_PER_TRANSACTION {
        let before = js_sys::Date::now();
        let tx = conn.unchecked_transaction().unwrap();
        {
            let mut insert = tx
                .prepare_cached(
                    "INSERT INTO messages (conversation, seq, body) VALUES (?1, ?2, ?3)",
                )
                .unwrap();
            for row in batch * ROWS_PER_TRANSACTION..(batch + 1) * ROWS_PER_TRANSACTION {
                insert.execute(params![row % 50, row, body]).unwrap();
            }
        }
        tx.commit().unwrap();
        let committed = js_sys::Date::now();
        file.flush().await.unwrap();
        let flushed = js_sys::Date::now();
        sql_ms += committed - before;
        flush_ms += flushed - committed;
        slowest_flush_ms = slowest_flush_ms.max(flushed - committed);
    }
    let ingested = js_sys::Date::now();
    let size = file.size();
    let memory = file.len();
    drop(conn);
    file.close();

    let reopen_started = js_sys::Date::now();
    let file = IdbFile::open("idb-ingest", "ingest.db").await.unwrap();
    let reopened = js_sys::Date::now();
    let conn = connect("ingest.db");
    let count: i64 = conn
        .query_row("SELECT count(*) FROM messages", [], |row| row.get(0))
        .unwrap();
    assert_eq!(count, ROWS);
    assert_eq!(integrity(&conn), "ok");
    wasm_bindgen_test::console_log!(
        "idb ingest: {ROWS} rows of 200 B, {ROWS_PER_TRANSACTION} per transaction, flush after each: \
         total {:.0} ms (SQLite {sql_ms:.0} ms, flushes {flush_ms:.0} ms, slowest flush \
         {slowest_flush_ms:.0} ms); open+create {:.0} ms; file {size} B, held in memory {memory} B; \
         reopen (load every chunk) {:.0} ms",
        ingested - opened,
        opened - started,
        reopened - reopen_started,
    );
    drop(conn);
    drop(file);
    IdbFile::delete("idb-ingest").await.unwrap();
}

#[wasm_bindgen_test]
fn these_tests_run_in_a_dedicated_worker() {
    use wasm_bindgen::JsCast;
    assert!(js_sys::global()
        .dyn_into::<web_sys::WorkerGlobalScope>()
        .is_ok());
}

/// How large a database the layer can hold: the whole file lives in the wasm heap. Grows a
/// database by 1 MiB blobs (64 per transaction, flushed after each) until SQLite or the
/// flush fails, and reports the size reached. Ignored by default (it writes gigabytes);
/// run with `-- --include-ignored --nocapture memory_limit`.
#[wasm_bindgen_test]
#[ignore = "writes gigabytes; run on demand"]
async fn memory_limit_of_a_database_held_in_memory() {
    let file = IdbFile::open("idb-limit", "limit.db").await.unwrap();
    let conn = connect("limit.db");
    conn.execute_batch("CREATE TABLE blobs (id INTEGER PRIMARY KEY, body BLOB NOT NULL)")
        .unwrap();
    let blob = vec![0x5a_u8; 1 << 20];
    let started = js_sys::Date::now();
    let mut id = 0_i64;
    let failure = 'grow: loop {
        let tx = conn.unchecked_transaction().unwrap();
        for _ in 0..64 {
            if let Err(error) = tx.execute(
                "INSERT INTO blobs (id, body) VALUES (?1, ?2)",
                params![id, blob],
            ) {
                break 'grow format!("insert: {error}");
            }
            id += 1;
        }
        if let Err(error) = tx.commit() {
            break 'grow format!("commit: {error}");
        }
        if let Err(error) = file.flush().await {
            break 'grow format!("flush: {error}");
        }
        if id % 512 == 0 {
            wasm_bindgen_test::console_log!(
                "idb limit: {} MiB flushed after {:.0} ms",
                file.size() >> 20,
                js_sys::Date::now() - started
            );
        }
    };
    wasm_bindgen_test::console_log!(
        "idb limit: stopped at {} MiB flushed ({} MiB held in memory) after {:.0} ms: {failure}",
        file.size() >> 20,
        file.len() >> 20,
        js_sys::Date::now() - started
    );
    drop(conn);
    drop(file);
    IdbFile::delete("idb-limit").await.unwrap();
}
