//! The SQL layer: schema migrations, queries and batch application, written against
//! `&rusqlite::Connection` only.
//!
//! Nothing here knows where the database lives: no paths, no files, no platform pragmas
//! (journal mode, synchronous, busy timeout). The native opener (`crate::native`) and, later,
//! the browser backend (SQLite on sqlite-wasm-rs with an IndexedDB VFS) set those up and then
//! run this same code, so the schema and the rules exist once.
//!
//! Functions that must be atomic say whether they open their own transaction (reads that
//! span tables: snapshot, integrity check) or expect the caller's (a write batch).

pub(crate) mod codec;
pub(crate) mod error;
pub(crate) mod integrity;
pub(crate) mod migrations;
pub(crate) mod read;
pub(crate) mod write;
