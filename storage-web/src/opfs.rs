//! The OPFS file layer: SQLite on the access-handle pool VFS of sqlite-wasm-vfs (`sahpool`).
//!
//! Each database gets a pool of its own (its own OPFS directory and VFS name), so two tabs can
//! own two different databases: a pool holds synchronous access handles on every file of its
//! directory, and the browser lets only one context hold those. Sync access handles exist only
//! in dedicated workers. Each COMMIT is written through the handles and flushed before it
//! returns (with `synchronous=FULL`), so a committed batch is durable when `apply` returns; a
//! quota error in a write becomes `SQLITE_FULL`, which the SQL layer reports as
//! [`StorageError::Full`] with the batch rolled back.

use rsqlite_vfs::VfsFilesManager;
use rusqlite::{Connection, OpenFlags};
use sqlite_wasm_rs::WasmOsCallback;
use sqlite_wasm_vfs::sahpool::{self, OpfsSAHError, OpfsSAHPoolCfgBuilder, OpfsSAHPoolUtil};
use tidemark_engine::StorageError;

/// The SQLite file inside a database's pool.
const FILE: &str = "/tidemark.db";

/// Slots each pool holds: the database, its journal and one spare. Temporary files never
/// reach the pool (`temp_store=MEMORY`).
const POOL_SLOTS: usize = 3;

/// One database's pool, paused (its access handles released) when dropped.
pub(crate) struct OpfsPool {
    util: OpfsSAHPoolUtil,
}

impl std::fmt::Debug for OpfsPool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OpfsPool").finish_non_exhaustive()
    }
}

impl OpfsPool {
    /// Takes (installs or resumes) database `name`'s pool. The caller holds its owner lock.
    pub(crate) async fn take(name: &str) -> Result<Self, StorageError> {
        let vfs = vfs_name(name);
        let config = OpfsSAHPoolCfgBuilder::new()
            .vfs_name(&vfs)
            .directory(&format!("tidemark/{name}"))
            .initial_capacity(POOL_SLOTS)
            .build();
        let util = sahpool::install::<WasmOsCallback>(&config, false)
            .await
            .map_err(|e| pool_error("opening the OPFS pool", e))?;
        // A pool this worker used before is kept registered but paused: take its handles back.
        if util.is_paused() {
            util.resume()
                .await
                .map_err(|e| pool_error("resuming the OPFS pool", e))?;
        }
        Ok(Self { util })
    }

    /// Opens the database file in this pool, creating it if absent.
    pub(crate) fn connect(&self, name: &str) -> Result<Connection, StorageError> {
        Connection::open_with_flags_and_vfs(
            FILE,
            OpenFlags::SQLITE_OPEN_READ_WRITE
                | OpenFlags::SQLITE_OPEN_CREATE
                | OpenFlags::SQLITE_OPEN_NO_MUTEX,
            vfs_name(name).as_str(),
        )
        .map_err(|e| tidemark_storage_sqlite::storage_error(e, "opening the database in OPFS"))
    }

    /// Removes every file of the pool (the database and its journal). Its connections must
    /// be closed. The pool's empty slot files stay (a few KiB).
    pub(crate) fn clear(&self) -> Result<(), StorageError> {
        self.util
            .clear()
            .map_err(|e| pool_error("deleting the database from OPFS", e))
    }
}

impl Drop for OpfsPool {
    fn drop(&mut self) {
        // Releases the access handles so another tab or worker can take the pool once it
        // holds the owner lock. Fails only with a file still open, which the owner closed
        // before (the connection is dropped first); then the handles stay until this worker
        // ends, and the owner lock still keeps writers apart.
        let _ = self.util.pause();
    }
}

fn vfs_name(name: &str) -> String {
    format!("tidemark-opfs-{name}")
}

/// Maps the pool's errors: no OPFS here (not a dedicated worker, not a secure context) and
/// handles held by another context are their own cases; the rest keeps its text.
fn pool_error(doing: &str, e: OpfsSAHError) -> StorageError {
    match e {
        OpfsSAHError::Opfs { ref message, .. }
            if message.contains("NoModificationAllowedError") =>
        {
            StorageError::InUse {
                detail: format!("{doing}: another context holds the files ({e})"),
            }
        }
        e => StorageError::Backend {
            detail: format!("{doing}: {e}"),
            source: None,
        },
    }
}
