//! The model-based property tests (`tidemark_conformance::model`) with each device's store in
//! its own SQLite file: a crash in the simulation reopens the file, so only what committed
//! survives.
//!
//! `PROPTEST_CASES` sets the number of cases (default 256). Long run:
//! `PROPTEST_CASES=20000 cargo test --release -p tidemark-storage-sqlite --test sqlite_model -- --nocapture`.
//! Failures are persisted to `storage-sqlite/proptest-regressions/sqlite_model.txt` (commit
//! it) and replayed first by every later run.

use tidemark_conformance::model;
use tidemark_conformance::sim::StoreFactory;
use tidemark_engine::StorageError;
use tidemark_storage_sqlite::SqliteStorage;

/// `device-<i>.db` files in one temporary directory (removed when the factory drops, at the
/// end of its case).
struct SqliteDeviceFiles {
    dir: tempfile::TempDir,
}

impl SqliteDeviceFiles {
    fn new() -> Self {
        Self {
            dir: tempfile::tempdir().expect("a temporary directory"),
        }
    }
}

#[async_trait::async_trait]
impl StoreFactory for SqliteDeviceFiles {
    type Store = SqliteStorage;

    async fn open(&self, device: usize) -> Result<SqliteStorage, StorageError> {
        SqliteStorage::open(self.dir.path().join(format!("device-{device}.db")))
    }
}

#[test]
fn sqlite_model() {
    model::run_model(
        SqliteDeviceFiles::new,
        model::config(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/proptest-regressions/sqlite_model.txt"
        )),
    );
}
