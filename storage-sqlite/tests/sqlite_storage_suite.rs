//! The shared storage conformance suite (`tidemark_conformance::storage_suite`) on SQLite
//! files: every case runs on a fresh database file, and "reopen" closes the connection and
//! opens the same file again.

use std::path::PathBuf;

use tidemark_conformance::storage_suite::StorageFactory;
use tidemark_engine::StorageError;
use tidemark_storage_sqlite::SqliteStorage;

/// One database file in its own temporary directory (removed when the factory drops).
struct SqliteFileFactory {
    dir: tempfile::TempDir,
}

impl SqliteFileFactory {
    fn new() -> Self {
        Self {
            dir: tempfile::tempdir().expect("a temporary directory"),
        }
    }

    fn path(&self) -> PathBuf {
        self.dir.path().join("store.db")
    }
}

#[async_trait::async_trait]
impl StorageFactory for SqliteFileFactory {
    type Store = SqliteStorage;

    async fn create(&self) -> Result<SqliteStorage, StorageError> {
        SqliteStorage::open(self.path())
    }

    async fn reopen(&self, store: SqliteStorage) -> Result<SqliteStorage, StorageError> {
        // Dropping the last clone closes the connection; the reopen sees only the file.
        drop(store);
        SqliteStorage::open(self.path())
    }
}

tidemark_conformance::storage_suite!(SqliteFileFactory::new());
