//! # tidemark-storage-sqlite
//!
//! Tidemark's [`Storage`](tidemark_engine::Storage) on SQLite (rusqlite): [`SqliteStorage`].
//!
//! Two layers:
//! - the SQL layer (`sql`, private): schema migrations (`migrations/NNN_name.sql`, applied
//!   in order, version in `PRAGMA user_version`), queries, batch application and the
//!   integrity check, written against `&rusqlite::Connection` only. It has no paths, files
//!   or platform pragmas, so the browser backend (SQLite compiled to wasm32 on
//!   sqlite-wasm-rs, persisted in IndexedDB) runs the same code through
//!   [`SqliteStorage::from_connection`].
//! - the native opener (`native`): a file path, WAL, `synchronous = NORMAL`, a busy
//!   timeout ([`SqliteStorage::open`], [`SqliteStorage::open_read_only`]).
//!
//! The store behaves as the engine's reference [`MemoryStorage`](tidemark_engine::MemoryStorage)
//! on every trait method (a differential test checks it). Errors map to
//! [`StorageError`](tidemark_engine::StorageError) by SQLite's result code: not a database
//! or corrupt -> `Corrupt`, disk full -> `Full`, read-only -> `ReadOnly`, a batch breaking a
//! constraint -> `Rejected`, a newer schema -> `UnsupportedVersion`, anything else ->
//! `Backend`; the rusqlite error is kept as the source. Bad data in the file is reported as
//! `Corrupt`, never a panic.
//!
//! Damaged files: [`SqliteStorage::open`] checks an existing file's shape at once and runs
//! `PRAGMA quick_check` in the background before the first write; a store that has reported
//! `Corrupt` anywhere refuses every later write ([`SqliteStorage::damage`]). The way back is
//! [`recover`]: the damaged files are set aside (renamed, never deleted), the unsent messages
//! salvaged as far as they read, and a fresh store started in their place for the engine to
//! resync from the server.

#![warn(missing_docs)]

#[cfg(not(target_family = "wasm"))]
mod native;
#[cfg(not(target_family = "wasm"))]
mod recover;
mod sql;
mod storage;
#[cfg(not(target_family = "wasm"))]
mod writer;

#[cfg(not(target_family = "wasm"))]
pub use recover::{recover, RecoveryReport};
pub use sql::error::storage_error;
pub use sql::migrations::SCHEMA_VERSION;
pub use storage::SqliteStorage;
