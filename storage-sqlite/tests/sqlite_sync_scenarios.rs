//! Every sync scenario (`tidemark_conformance::scenarios`) with each device's store in its own
//! SQLite file. A crash in the simulation reopens the file, so only what committed survives.
//! The event logs must equal the memory backend's: both compare with the same snapshots.

use tidemark_conformance::sim::StoreFactory;
use tidemark_engine::StorageError;
use tidemark_storage_sqlite::SqliteStorage;

/// `device-<i>.db` files in one temporary directory.
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

tidemark_conformance::sync_scenarios!(SqliteDeviceFiles::new());
