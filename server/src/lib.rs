//! # tidemark-server
//!
//! Tidemark's reference inbox server: its rules as a sans-IO core over a synchronous store,
//! the stores, accounts and tokens, and (feature `net`) the tokio WebSocket host.
//!
//! [`ServerCore`] holds the rules (membership, limits, idempotent send, fan-out, read seqs,
//! pull paging); [`ServerStore`] holds the data. Two hosts run this one core, so tests and
//! the real server cannot drift apart:
//! - `tidemark-conformance` runs it over [`MemoryServerStore`] in its simulated network and
//!   in its in-process loopback transport;
//! - `net` (feature `net`) runs it over `SqliteServerStore` (feature `sqlite`) behind real
//!   WebSockets; the `tidemark-server` binary and `tidemark server` are its admin commands
//!   (`net::cli`).
//!
//! Without features the crate is the core, [`MemoryServerStore`] and the token functions:
//! no tokio, no SQLite, and it builds for wasm32.
//!
//! Rules, in short:
//! - `GetMaxSeqs` pages the user's conversations by id after a cursor.
//! - `Pull` answers each range of a conversation the user is a member of (any other range
//!   refuses the whole request with a permanent `not_member`), clamps ranges to the max seq,
//!   reports deleted and below-floor seqs as `missing`, and caps the messages per response
//!   by count and by bytes (the smaller of its own and the client's budget; the first
//!   message always goes).
//! - `Send` answers a resend of a stored (sender, client message id) with its original ack
//!   before any other rule (also after its seq was deleted), and refuses the id in another
//!   conversation; then checks membership, values every store holds (`created_at` up to
//!   `i64::MAX`, id and kind-name lengths), size, and that an edit or revoke is the author's
//!   change of a live, ordinary message of the conversation; assigns the next seq with the
//!   server's time, marks the conversation read for the sender, and pushes the message to
//!   every other online connection of every member. `docs/protocol.md` lists these as the
//!   promises a server makes.
//! - `MarkRead` keeps the maximum and tells the user's other connections.

#![warn(missing_docs)]

mod accounts;
mod error;
mod inbox;
mod memory;
#[cfg(feature = "net")]
pub mod net;
#[cfg(feature = "sqlite")]
mod sqlite;
mod store;

#[cfg(test)]
mod tests;

pub use accounts::{check_token, hash_token, issue_token, AccountStore, TokenCheck, TokenHash};
pub use error::{AdminError, ServerStoreError};
pub use inbox::{ConnId, ServerConfig, ServerConfigError, ServerCore, ServerOutput, Session};
pub use memory::MemoryServerStore;
#[cfg(feature = "sqlite")]
pub use sqlite::{Durability, SqliteServerOptions, SqliteServerStore, SERVER_SCHEMA_VERSION};
pub use store::{
    AppendOutcome, ChangeClock, ConversationInfo, NewMessage, SentRecord, ServerStore,
};
