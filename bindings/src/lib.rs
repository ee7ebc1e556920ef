//! # tidemark-ffi
//!
//! Tidemark's app-facing [`tidemark::Client`] for Kotlin, Swift and Python SDKs, exported with
//! uniffi (proc-macro style): the same engine, store and protocol as the Rust API, over a
//! SQLite file and the WebSocket transport. `docs/native-sdk.md` shows how to build it for
//! Android and iOS and what the generated API looks like.
//!
//! The foreign API:
//! - [`open_store`] opens a store file ([`recover_store`] sets a damaged one aside and keeps
//!   its unsent messages); [`start_client`] starts a [`TidemarkClient`] on it
//!   against a server ([`ClientConfig`]), with a [`ClientListener`] for the events
//!   ([`ClientEvent`]);
//! - the client's commands (send, edit, revoke, mark read, retry, cancel, load history) and
//!   reads (conversation and message pages, unread, connection and sync state);
//! - every failure is a [`TidemarkError`] with a stable code.
//!
//! Threads: the bindings own one tokio runtime per process (two workers) that runs every
//! driver and every call; the listener is called on one thread per client, in order.

uniffi::setup_scaffolding!();

mod client;
mod error;
mod events;
mod login;
mod model;
mod runtime;

pub use client::{
    open_store, recover_store, start_client, ClientConfig, RecoveryReport, Store, TidemarkClient,
};
pub use error::TidemarkError;
pub use events::ClientListener;
pub use model::{
    ClientEvent, ConnectionState, Containment, ContentKind, Conversation, ConversationCursor,
    ConversationKind, Direction, HistoryLoaded, LatestMessage, Message, MessageChange,
    MessageStatus, SeqRange, ServerError, SyncPolicy, SyncState,
};
