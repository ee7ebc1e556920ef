//! [`SqliteServerStore`]: the reference server's [`ServerStore`] and [`AccountStore`] on
//! SQLite (rusqlite, bundled).
//!
//! It behaves exactly as [`crate::MemoryServerStore`] on every trait method, errors included
//! (a differential test runs thousands of random calls against both), so the core's rules and
//! tests hold over either.
//!
//! - Every mutating method is one `IMMEDIATE` transaction: it applies whole or not at all, and
//!   takes the write lock up front so a second process (an admin command on the same file)
//!   waits on the busy timeout instead of failing a lock upgrade midway. Inside a group
//!   ([`ServerStore::begin_group`]) each method runs in a savepoint of the group's one
//!   transaction instead: still whole or nothing, durable at the group's commit.
//! - The schema lives in numbered migrations (`server/migrations/NNN_name.sql`),
//!   version in `PRAGMA user_version`. A file that is not a server store, or is newer than
//!   this build, is refused with [`ServerStoreError::Corrupt`] or
//!   [`ServerStoreError::UnsupportedVersion`] before anything is written to it.
//! - Statements are prepared once and kept in rusqlite's statement cache.
//!
//! [`ServerStore`]: crate::ServerStore
//! [`ServerStore::begin_group`]: crate::ServerStore::begin_group
//! [`AccountStore`]: crate::AccountStore

use std::path::Path;
use std::time::Duration;

use rusqlite::config::DbConfig;
use rusqlite::{Connection, TransactionBehavior};

use crate::ServerStoreError;

mod codec;
mod migrations;
mod store;

#[cfg(test)]
mod tests;

pub use migrations::SERVER_SCHEMA_VERSION;

use codec::backend;

/// How many prepared statements the connection keeps: every statement of the store fits, so
/// none is ever re-parsed.
const STATEMENT_CACHE: usize = 64;

/// How much of the store file the connection maps into memory (SQLite's `mmap_size`): reads
/// of mapped pages copy nothing. A bound, not an allocation; the OS pages it in and out.
const MMAP_BYTES: i64 = 1 << 30;

/// When a commit is on disk, as SQLite's `PRAGMA synchronous` in WAL mode.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Durability {
    /// `synchronous = NORMAL`: a commit survives a crash of the process (it is in the WAL
    /// file), but a power loss or OS crash may lose the last commits. The store is never
    /// corrupted either way; it comes back at an earlier commit. Clients then resend what
    /// was not acked, and resends are idempotent, so this is the default.
    #[default]
    Normal,
    /// `synchronous = FULL`: every commit is synced to disk before it returns, so it also
    /// survives a power loss. Costs one fsync per mutating call.
    Full,
}

/// How [`SqliteServerStore::open_with`] sets up a file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SqliteServerOptions {
    /// When a commit is durable. Default: [`Durability::Normal`].
    pub durability: Durability,
    /// How long a statement waits for another connection's lock (an admin command writing the
    /// same file) before failing with [`ServerStoreError::Backend`]. Default: 5 s.
    pub busy_timeout: Duration,
}

impl Default for SqliteServerOptions {
    fn default() -> Self {
        Self {
            durability: Durability::Normal,
            busy_timeout: Duration::from_secs(5),
        }
    }
}

/// A [`crate::ServerStore`] and [`crate::AccountStore`] on one SQLite connection.
///
/// Not `Sync`: one owner (the server's core) drives it. Other processes may open the same
/// file at the same time; SQLite's locks and the busy timeout serialize their writes.
#[derive(Debug)]
pub struct SqliteServerStore {
    conn: Connection,
    /// Inside [`ServerStore::begin_group`]: calls run in savepoints of the group's transaction.
    in_group: bool,
}

impl SqliteServerStore {
    /// Opens the store at `path` with [`SqliteServerOptions::default`], creating the file and
    /// its schema if it does not exist. See [`SqliteServerStore::open_with`].
    pub fn open(path: &Path) -> Result<Self, ServerStoreError> {
        Self::open_with(path, &SqliteServerOptions::default())
    }

    /// Opens the store at `path`, creating the file and its schema if it does not exist, and
    /// brings an older schema up to date.
    ///
    /// Sets the journal to WAL (readers never block the writer, a commit is one append),
    /// `synchronous` from [`SqliteServerOptions::durability`], the busy timeout, and foreign
    /// keys on. Reopening a path gives back everything committed.
    ///
    /// Errors: [`ServerStoreError::Corrupt`] for a file that is not an SQLite database or not
    /// a server store; [`ServerStoreError::UnsupportedVersion`] for a store written by a newer
    /// build; [`ServerStoreError::Backend`] when the file cannot be opened at all. Either of
    /// the first two is found before anything is written: the file is left byte for byte.
    pub fn open_with(path: &Path, options: &SqliteServerOptions) -> Result<Self, ServerStoreError> {
        let conn = Connection::open(path)
            .map_err(|e| backend(e, &format!("opening {}", path.display())))?;
        conn.busy_timeout(options.busy_timeout)
            .map_err(|e| backend(e, "setting the busy timeout"))?;
        Self::prepare(&conn)?;
        // After the check: switching the journal mode writes the file header, and a file that
        // is foreign, damaged or too new must be left exactly as it was.
        let mode: String = conn
            .pragma_update_and_check(None, "journal_mode", "wal", |r| r.get(0))
            .map_err(|e| backend(e, "switching to WAL"))?;
        if !mode.eq_ignore_ascii_case("wal") {
            return Err(ServerStoreError::Backend {
                detail: format!("the server store cannot use WAL (journal mode {mode})"),
                source: None,
            });
        }
        let synchronous = match options.durability {
            Durability::Normal => "NORMAL",
            Durability::Full => "FULL",
        };
        conn.pragma_update(None, "synchronous", synchronous)
            .map_err(|e| backend(e, "setting synchronous"))?;
        // Pull replies read long runs of message pages: mapped, SQLite reads them in place
        // instead of copying each page out of the OS cache with a read call.
        conn.pragma_update(None, "mmap_size", MMAP_BYTES)
            .map_err(|e| backend(e, "setting the mmap size"))?;
        migrations::migrate(&conn)?;
        Ok(Self {
            conn,
            in_group: false,
        })
    }

    /// A new empty store in memory (tests, the simulated server): the same schema and SQL as
    /// a file, gone when dropped.
    pub fn open_in_memory() -> Result<Self, ServerStoreError> {
        let conn =
            Connection::open_in_memory().map_err(|e| backend(e, "opening an in-memory store"))?;
        Self::prepare(&conn)?;
        migrations::migrate(&conn)?;
        Ok(Self {
            conn,
            in_group: false,
        })
    }

    /// The schema version of the open store (always [`SERVER_SCHEMA_VERSION`] once open).
    pub fn schema_version(&self) -> Result<u64, ServerStoreError> {
        migrations::user_version(&self.conn)
    }

    /// Settings that write nothing, then the check that this is a store we may open.
    fn prepare(conn: &Connection) -> Result<(), ServerStoreError> {
        conn.set_prepared_statement_cache_capacity(STATEMENT_CACHE);
        // Plans that do not depend on bound values. Without this SQLite marks a statement
        // whose plan might use a parameter's value (a `LIMIT ?`, a bound range) to be parsed
        // and planned again whenever that parameter changes: every pull and max-seq page
        // re-prepared its statements (about half the core thread's instructions). Our
        // statements' plans are the same for every value.
        conn.set_db_config(DbConfig::SQLITE_DBCONFIG_ENABLE_QPSG, true)
            .map_err(|e| backend(e, "enabling the query planner stability guarantee"))?;
        // The schema's references (members, messages, tokens ... to users and conversations)
        // are checked on every write: a bug in the store fails its call rather than leaving
        // rows that point nowhere.
        conn.pragma_update(None, "foreign_keys", true)
            .map_err(|e| backend(e, "enabling foreign keys"))?;
        migrations::inspect(conn)?;
        Ok(())
    }

    /// Runs `f` in one `IMMEDIATE` transaction: committed when it returns `Ok`, rolled back
    /// (dropped) when it returns `Err`, so a failing call leaves no trace. Inside a group
    /// ([`ServerStore::begin_group`]) it runs in a savepoint instead: a failing call still
    /// leaves no trace, and the group's commit makes every call durable at once.
    fn write<T>(
        &mut self,
        f: impl FnOnce(&Connection) -> Result<T, ServerStoreError>,
    ) -> Result<T, ServerStoreError> {
        if self.in_group {
            let sp = self
                .conn
                .savepoint()
                .map_err(|e| backend(e, "starting a savepoint"))?;
            let out = f(&sp)?;
            sp.commit()
                .map_err(|e| backend(e, "releasing a savepoint"))?;
            return Ok(out);
        }
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(|e| backend(e, "starting a transaction"))?;
        let out = f(&tx)?;
        tx.commit().map_err(|e| backend(e, "committing"))?;
        Ok(out)
    }

    /// Opens the group's transaction (see [`ServerStore::begin_group`]).
    fn begin_group_tx(&mut self) -> Result<(), ServerStoreError> {
        if self.in_group {
            return Ok(());
        }
        // Every command the core thread handles opens and commits a group: the two
        // statements are prepared once, not parsed per command.
        self.conn
            .prepare_cached("BEGIN IMMEDIATE")
            .and_then(|mut st| st.execute([]))
            .map_err(|e| backend(e, "starting a group"))?;
        self.in_group = true;
        Ok(())
    }

    /// Commits the group's transaction; on failure it is rolled back, so either every call of
    /// the group is stored or none is.
    fn commit_group_tx(&mut self) -> Result<(), ServerStoreError> {
        if !self.in_group {
            return Ok(());
        }
        self.in_group = false;
        let committed = self
            .conn
            .prepare_cached("COMMIT")
            .and_then(|mut st| st.execute([]));
        if let Err(err) = committed {
            // A failed COMMIT can leave the transaction open (SQLITE_BUSY): end it.
            let _ = self.conn.execute_batch("ROLLBACK");
            return Err(backend(err, "committing a group"));
        }
        Ok(())
    }
}
