//! Every shared suite (`tidemark_conformance::backend_suite!`) with each device's store in its
//! own SQLite file: the storage conformance cases (`storage::`, where "reopen" closes the
//! connection and opens the same file again), the sync scenarios (`scenarios::`, whose event
//! logs must equal the memory backend's: both compare with the same snapshots) and the model
//! (`model::run`). A crash in the simulation reopens the file, so only what committed survives.
//!
//! One test binary for all three: its tests run in parallel, so the long model run overlaps
//! the scenarios and the storage cases.
//!
//! `PROPTEST_CASES` sets the model's number of cases (default 256). Long run:
//! `PROPTEST_CASES=20000 cargo test --release -p tidemark-storage-sqlite --test sqlite_backend_suite model:: -- --nocapture`.
//! Model failures are persisted to `storage-sqlite/proptest-regressions/sqlite_model.txt`
//! (commit it) and replayed first by every later run.

use tidemark_conformance::Backend;
use tidemark_engine::StorageError;
use tidemark_storage_sqlite::SqliteStorage;

/// `device-<i>.db` files in one temporary directory (removed when the backend value drops, at
/// the end of its test or model case).
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
impl Backend for SqliteDeviceFiles {
    type Store = SqliteStorage;

    // The default `reopen` drops the handle, closing the connection (the last clone), so the
    // reopen sees only the file.
    async fn open(&self, device: usize) -> Result<SqliteStorage, StorageError> {
        SqliteStorage::open(self.dir.path().join(format!("device-{device}.db")))
    }
}

tidemark_conformance::backend_suite! {
    backend: SqliteDeviceFiles::new(),
    model_regressions: concat!(env!("CARGO_MANIFEST_DIR"), "/proptest-regressions/sqlite_model.txt"),
}
