//! # tidemark-engine
//!
//! The sans-IO core of Tidemark, a message sync engine for IM servers of the inbox kind (every
//! conversation has a server-assigned, strictly increasing seq).
//!
//! [`Engine`] never awaits, never reads a clock, never touches a socket or a file. Time comes in
//! as a [`Timestamp`] on every call; client message ids come from a seed in [`EngineConfig`].
//! Its methods fall in four groups:
//! - getters (`&self`): [`Engine::conversation`], [`Engine::total_unread`], ...
//! - inputs (`handle_*`): connected, disconnected, a response, a push, a batch committed or
//!   failed, a timeout. Spurious `handle_timeout` calls are harmless.
//! - commands: [`Engine::send_message`], [`Engine::mark_read`], [`Engine::load_history`],
//!   [`Engine::retry`], [`Engine::cancel`].
//! - output: [`Engine::poll_output`], drained until it returns [`Output::Timeout`].
//!
//! The rule for a driver: feed an input or a command, then drain `poll_output` until it returns
//! a timeout, then wait for the next input or that timeout. The `tidemark` crate's `Client`
//! is such a driver over the [`Storage`] and [`Transport`] traits: apps use that crate, as
//! quinn's users use quinn rather than quinn-proto.
//!
//! Events ([`Event`]) are released only after the write batch holding their data committed,
//! so an app that reads storage in its handler sees what the event says.

#![warn(missing_docs)]

pub mod config;
pub mod containment;
mod content_serde;
pub mod engine;
pub mod memory;
pub mod model;
pub mod output;
pub mod protocol;
pub mod rng;
pub mod seq_ranges;
pub mod storage;
#[cfg(feature = "testing")]
pub mod testing;
pub mod transport;

pub use config::{EngineConfig, SyncPolicy};
pub use engine::{CommandError, Engine};
pub use memory::MemoryStorage;
pub use model::{
    ClientMsgId, ContentKind, Conversation, ConversationId, ConversationKind, DeviceId,
    LatestMessage, Message, MessageStatus, OutboxEntry, PendingChange, Seq, ServerMessage,
    Timestamp, UserId,
};
pub use output::{ConnectionState, Containment, Event, MessageChange, Output};
pub use protocol::{
    DeletionsEntry, Identity, MaxSeqEntry, PullRange, PulledRange, Push, Request, RequestId,
    Response, ServerError, SyncToken,
};
pub use seq_ranges::{SeqRange, SeqRanges};
pub use storage::{
    Applied, BatchId, ConversationCursor, Direction, RefusedChange, Storage, StorageError,
    SyncSnapshot, WriteBatch, WriteOp,
};
pub use transport::{Incoming, RequestSink, Transport, TransportError};
