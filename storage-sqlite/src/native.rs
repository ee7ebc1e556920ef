//! Opening a store file natively: the platform settings the SQL layer leaves out, and the
//! checks for a damaged file that need the file itself.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use rusqlite::{Connection, OpenFlags};
use tidemark_engine::StorageError;

use crate::sql::error::{corrupt, storage_error};
use crate::sql::{integrity, migrations};
use crate::storage::Health;
use crate::SqliteStorage;

/// How long a statement waits for another connection's lock before failing with
/// [`StorageError::Backend`] (SQLITE_BUSY). Only another process (an inspector, a second
/// app instance) can hold one: within this process every clone shares one connection.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// `path` with `suffix` appended to its file name (`store.db` -> `store.db-wal`).
pub(crate) fn sibling(path: &Path, suffix: &str) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(suffix);
    PathBuf::from(name)
}

/// Whether a write-ahead log with content lies beside `path`: the previous session did not
/// close the store (or another process has it open), and the main file alone is not the
/// store.
fn has_wal(path: &Path) -> bool {
    std::fs::metadata(sibling(path, "-wal")).is_ok_and(|m| m.len() > 0)
}

/// The checks that cost nothing: a store file without a log must be a whole number of
/// pages and hold every page its header counts. SQLite itself reads a short last page as
/// zeros, so a file cut short by a few bytes opens and reads "fine" until the cut hits a
/// row. With a log beside it the file may legitimately lag its header (a checkpoint cut
/// short by a crash is finished from the log), so then SQLite decides.
///
/// `Ok(true)` when the file exists and is not empty (there is a store to check further).
fn check_file_shape(path: &Path) -> Result<bool, StorageError> {
    let Ok(mut file) = std::fs::File::open(path) else {
        // Missing (created by the open) or unreadable (the open reports it).
        return Ok(false);
    };
    let len = file.metadata().map(|m| m.len()).unwrap_or(0);
    if len == 0 {
        return Ok(false);
    }
    let mut header = [0u8; 100];
    if len < 100 || file.read_exact(&mut header).is_err() || &header[..16] != b"SQLite format 3\0" {
        // Not a database at all: SQLite's own refusal (NOTADB) says so at open.
        return Ok(true);
    }
    if has_wal(path) {
        return Ok(true);
    }
    // Big-endian page size at offset 16, where 1 stands for 65536.
    let page = match u16::from_be_bytes([header[16], header[17]]) {
        1 => 65_536,
        n => u64::from(n),
    };
    if page < 512 || !page.is_power_of_two() {
        return Err(corrupt(format!(
            "{}: the header's page size {page} is not valid",
            path.display()
        )));
    }
    if len % page != 0 {
        return Err(corrupt(format!(
            "{}: the file is {len} bytes, not a whole number of {page}-byte pages (cut short \
             or overwritten)",
            path.display()
        )));
    }
    // The header's page count (offset 28) is valid when the "version valid for" number
    // (offset 92) equals the change counter (offset 24).
    let counted = u32::from_be_bytes([header[28], header[29], header[30], header[31]]);
    if header[92..96] == header[24..28] && u64::from(counted) > len / page {
        return Err(corrupt(format!(
            "{}: the header counts {counted} pages but the file holds {} (cut short)",
            path.display(),
            len / page
        )));
    }
    Ok(true)
}

impl SqliteStorage {
    /// Opens the store at `path`, creating the file and its schema if it does not exist.
    ///
    /// Sets the journal to WAL (readers never block the writer, and a commit is one append)
    /// with `synchronous = NORMAL` (a commit survives an app crash; a power cut may lose the
    /// last commits but never corrupts the store: the engine then resumes from an earlier
    /// commit boundary, which its ingest is built for), a busy timeout, and foreign keys on.
    ///
    /// Damage: before SQLite opens an existing file, its shape is checked (a whole number of
    /// pages, as many as its header counts; this costs one read of 100 bytes); then a
    /// `PRAGMA quick_check` of the whole file starts on a second, read-only connection in a
    /// background thread. Reads do not wait for it (the first page of a big store shows at
    /// once), but the first [`tidemark_engine::Storage::apply`] with changes does (a batch
    /// of events alone writes nothing and does not wait): nothing is written
    /// until the file is known sound, and if the check finds damage every write fails with
    /// [`StorageError::Corrupt`] ([`SqliteStorage::wait_for_open_check`] waits for the
    /// verdict without writing). See [`crate::recover`] for the way back.
    ///
    /// Why in the background and at every open: on a store of 1M messages (173 MiB) the
    /// check takes 850 ms while opening takes 5 ms and the first list page 5.4 ms
    /// (`tests/sqlite_quick_check_cost.rs`, release, 2 shared cores), so running it before
    /// open returns would break the 20 ms cold-start target; running it only after an
    /// unclean shutdown (a `-wal` left behind) would miss damage done to a cleanly closed
    /// file (a bad sector, a bad copy), which SQLite does not notice until it reads the
    /// page, possibly after writing beside it. In the background the cost overlaps the
    /// connect and the first server round trip; the first write waits for what remains.
    ///
    /// Reopening a path gives back everything committed. Errors: [`StorageError::Corrupt`]
    /// for a file that is not a database or not a Tidemark store, and damage found on open;
    /// [`StorageError::UnsupportedVersion`] for a store written by a newer build;
    /// [`StorageError::ReadOnly`] for a read-only file that needs a migration;
    /// [`StorageError::Backend`] when the file cannot be opened at all. On every error
    /// before the version check passes, nothing has been written to the file.
    pub fn open(path: impl AsRef<Path>) -> Result<Self, StorageError> {
        let path = path.as_ref();
        let existing = check_file_shape(path)?;
        let conn = Connection::open(path)
            .map_err(|e| storage_error(e, &format!("opening {}", path.display())))?;
        let storage = Self::configure(conn)?;
        if existing {
            start_open_check(path, storage.health().clone());
        }
        Ok(storage)
    }

    /// Opens an existing store for reading only (an inspector, a second process): every
    /// [`tidemark_engine::Storage::apply`] fails with [`StorageError::ReadOnly`]. The store
    /// must be at this build's schema version. The file's shape is checked as in
    /// [`SqliteStorage::open`]; no background check runs (nothing is written).
    ///
    /// Leaves nothing beside the file: when no write-ahead log exists (no writer has the
    /// store open, and the last one closed it cleanly), the file is opened as immutable, so
    /// SQLite creates no `-wal` or `-shm` (a read-only connection could not remove them
    /// again). With a log present, it is read through the log as usual.
    pub fn open_read_only(path: impl AsRef<Path>) -> Result<Self, StorageError> {
        let path = path.as_ref();
        check_file_shape(path)?;
        let conn = read_only_connection(path)
            .map_err(|e| storage_error(e, &format!("opening {}", path.display())))?;
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

/// A read-only connection that leaves no `-wal` or `-shm` behind when none existed (see
/// [`SqliteStorage::open_read_only`]).
pub(crate) fn read_only_connection(path: &Path) -> rusqlite::Result<Connection> {
    let flags = OpenFlags::SQLITE_OPEN_READ_ONLY
        | OpenFlags::SQLITE_OPEN_URI
        | OpenFlags::SQLITE_OPEN_NO_MUTEX;
    if sibling(path, "-wal").exists() {
        Connection::open_with_flags(path, flags)
    } else {
        Connection::open_with_flags(immutable_uri(path), flags)
    }
}

/// `file:PATH?immutable=1`, with the characters a URI path cannot hold escaped.
fn immutable_uri(path: &Path) -> String {
    let mut uri = String::from("file:");
    for b in path.to_string_lossy().bytes() {
        match b {
            b'?' | b'#' | b'%' => uri.push_str(&format!("%{b:02X}")),
            _ => uri.push(char::from(b)),
        }
    }
    uri.push_str("?immutable=1");
    uri
}

/// Runs `PRAGMA quick_check` on a second connection in a thread and hands the verdict to
/// `health`; the store's writes wait for it. Only damage counts against the store: a check
/// that cannot run (no thread, the file cannot be opened twice) leaves the store as opened.
fn start_open_check(path: &Path, health: Arc<Health>) {
    health.start_check();
    let path = path.to_owned();
    let run = {
        let health = health.clone();
        move || health.finish_check(open_check(&path))
    };
    let spawned = std::thread::Builder::new()
        .name("tidemark-quick-check".into())
        .spawn(run);
    if spawned.is_err() {
        // Without a thread there is no check; writes must not wait for one.
        health.finish_check(Ok(()));
    }
}

fn open_check(path: &Path) -> Result<(), StorageError> {
    let flags = OpenFlags::SQLITE_OPEN_READ_ONLY
        | OpenFlags::SQLITE_OPEN_URI
        | OpenFlags::SQLITE_OPEN_NO_MUTEX;
    let Ok(conn) = Connection::open_with_flags(path, flags) else {
        return Ok(());
    };
    let _ = conn.busy_timeout(BUSY_TIMEOUT);
    match integrity::quick_check(&conn) {
        Err(e @ StorageError::Corrupt { .. }) => Err(e),
        _ => Ok(()),
    }
}
