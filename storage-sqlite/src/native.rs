//! Opening a store file natively: the platform settings the SQL layer leaves out.

use std::path::Path;
use std::time::Duration;

use rusqlite::{Connection, OpenFlags};
use tidemark_engine::StorageError;

use crate::sql::error::storage_error;
use crate::sql::migrations;
use crate::SqliteStorage;

/// How long a statement waits for another connection's lock before failing with
/// [`StorageError::Backend`] (SQLITE_BUSY). Only another process (an inspector, a second
/// app instance) can hold one: within this process every clone shares one connection.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

impl SqliteStorage {
    /// Opens the store at `path`, creating the file and its schema if it does not exist.
    ///
    /// Sets the journal to WAL (readers never block the writer, and a commit is one append)
    /// with `synchronous = NORMAL` (a commit survives an app crash; a power cut may lose the
    /// last commits but never corrupts the store: the engine then resumes from an earlier
    /// commit boundary, which its ingest is built for), a busy timeout, and foreign keys on.
    ///
    /// Reopening a path gives back everything committed. Errors: [`StorageError::Corrupt`]
    /// for a file that is not a database or not a Tidemark store, and damage found on open;
    /// [`StorageError::UnsupportedVersion`] for a store written by a newer build;
    /// [`StorageError::ReadOnly`] for a read-only file that needs a migration;
    /// [`StorageError::Backend`] when the file cannot be opened at all. On every error
    /// before the version check passes, nothing has been written to the file.
    pub fn open(path: impl AsRef<Path>) -> Result<Self, StorageError> {
        let conn = Connection::open(path.as_ref())
            .map_err(|e| storage_error(e, &format!("opening {}", path.as_ref().display())))?;
        Self::configure(conn)
    }

    /// Opens an existing store for reading only (an inspector, a second process): every
    /// [`tidemark_engine::Storage::apply`] fails with [`StorageError::ReadOnly`]. The store
    /// must be at this build's schema version.
    pub fn open_read_only(path: impl AsRef<Path>) -> Result<Self, StorageError> {
        let flags = OpenFlags::SQLITE_OPEN_READ_ONLY
            | OpenFlags::SQLITE_OPEN_URI
            | OpenFlags::SQLITE_OPEN_NO_MUTEX;
        let conn = Connection::open_with_flags(path.as_ref(), flags)
            .map_err(|e| storage_error(e, &format!("opening {}", path.as_ref().display())))?;
        Self::configure(conn)
    }

    fn configure(conn: Connection) -> Result<Self, StorageError> {
        conn.busy_timeout(BUSY_TIMEOUT)
            .map_err(|e| storage_error(e, "setting the busy timeout"))?;
        // No table has a foreign key yet; on, so a later migration's keys are enforced.
        conn.pragma_update(None, "foreign_keys", true)
            .map_err(|e| storage_error(e, "enabling foreign keys"))?;
        // Before the journal mode: switching it writes the file header, and a store that is
        // damaged, foreign or too new must be left exactly as it was.
        migrations::inspect(&conn)?;
        let read_only = conn
            .is_readonly(rusqlite::MAIN_DB)
            .map_err(|e| storage_error(e, "asking whether the store is writable"))?;
        // A read-only file (permissions) opens read-only without error: leave its journal mode.
        if !read_only {
            let mode: String = conn
                .pragma_update_and_check(None, "journal_mode", "wal", |r| r.get(0))
                .map_err(|e| storage_error(e, "switching to WAL"))?;
            if !mode.eq_ignore_ascii_case("wal") {
                return Err(StorageError::Backend {
                    detail: format!("the store cannot use WAL (journal mode {mode})"),
                    source: None,
                });
            }
            conn.pragma_update(None, "synchronous", "NORMAL")
                .map_err(|e| storage_error(e, "setting synchronous"))?;
        }
        Self::from_connection(conn)
    }
}
