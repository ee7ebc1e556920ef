//! # tidemark
//!
//! Tidemark keeps a local database of conversations and messages aligned with an IM server of
//! the inbox kind (every conversation has a server-assigned, strictly increasing seq). This
//! crate is what an app or an SDK embeds: a [`Client`] to command, read and listen, and the
//! [`Driver`] future that does the work on any executor. The rules live in the sans-IO
//! [`tidemark_engine`], as quinn's live in quinn-proto.
//!
//! An app that connects, sends a message and lists its conversations (the hidden lines
//! start a reference server for it):
//!
//! ```
//! # use tidemark_server::{issue_token, MemoryServerStore, ServerStore};
//! # use tidemark_server::net::{wall_clock, Server, ServerOptions};
//! use futures::StreamExt;
//! use tidemark::storage::MemoryStorage;
//! use tidemark::{Client, ConversationId, DeviceId, EngineConfig, Event, TokioRuntime, UserId};
//! use tidemark_transport::native::WsTransport;
//! async fn app(url: String, token: String) -> Result<(), Box<dyn std::error::Error>> {
//!     let (me, phone) = (UserId::from("alice"), DeviceId::from("phone"));
//!     let transport = WsTransport::new(url, me.clone(), phone.clone(), token);
//!     let store = MemoryStorage::new(); // a real app: SqliteStorage::open("alice.db")?
//!     let (client, driver) =
//!         Client::start(EngineConfig::new(me, phone), store, transport, TokioRuntime).await?;
//!     let mut events = client.events();
//!     tokio::spawn(driver);
//!     let mut sent = None;
//!     while let Some(event) = events.next().await {
//!         match event {
//!             Event::SyncFinished if sent.is_none() => {
//!                 let chat = ConversationId::from("chat");
//!                 sent = Some(client.send_text(&chat, "hello").await?);
//!             }
//!             Event::MessageSent { client_msg_id, .. } if Some(&client_msg_id) == sent.as_ref() => break,
//!             _ => {}
//!         }
//!     }
//!     for conversation in client.conversations(None, 20).await? {
//!         println!("{}: {} unread", conversation.id, conversation.unread);
//!     }
//!     client.shutdown().await;
//!     Ok(())
//! }
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! # let (alice, chat) = (UserId::from("alice"), ConversationId::from("chat"));
//! # let mut store = MemoryServerStore::new();
//! # store.create_user(&alice)?;
//! # store.create_conversation(&chat, tidemark::ConversationKind::Group, &[alice.clone()])?;
//! # let token = issue_token(&mut store, &alice, wall_clock(), None)?;
//! # let server = Server::start(store, ServerOptions::default()).await?;
//! # app(server.url(), token).await?;
//! # let store = server.shutdown().await?;
//! # let held = store.messages(&chat, tidemark::Seq(1), tidemark::Seq(9), 9)?;
//! # assert_eq!(held.len(), 1, "the server holds the message once");
//! # Ok(())
//! # }
//! ```
//!
//! What is where:
//! - the crate root: what an app needs: [`Client`], [`Driver`], the events, the model types
//!   and the configuration;
//! - [`storage`]: for authors of a storage backend (the [`storage::Storage`] trait, write
//!   batches, the reference [`storage::MemoryStorage`]);
//! - [`transport`]: for authors of a transport to a server (the [`transport::Transport`] trait
//!   and the abstract protocol);
//! - [`runtime`]: the clock-and-sleep seam the driver runs on ([`TokioRuntime`] with the
//!   `tokio` feature);
//! - `testing` (feature `testing`): a runtime whose clock moves only when told.

#![warn(missing_docs)]

mod client;
mod driver;
pub mod runtime;

pub use client::{Client, ClientError, EventListener, EventStream, HistoryLoaded, SyncState};
pub use driver::Driver;
#[cfg(feature = "tokio")]
pub use runtime::TokioRuntime;
pub use tidemark_engine::{
    ClientMsgId, CommandError, ConnectionState, Containment, ContentKind, Conversation,
    ConversationCursor, ConversationId, ConversationKind, DeviceId, Direction, EngineConfig, Event,
    LatestMessage, Message, MessageChange, MessageStatus, Seq, StorageError, SyncPolicy, Timestamp,
    UserId,
};

/// For authors of a storage backend: the trait the driver writes and reads through, its
/// batches and errors, and the reference in-memory store. A backend proves itself with the
/// conformance suite (`tidemark-conformance`).
pub mod storage {
    pub use tidemark_engine::model::{OutboxEntry, PendingChange};
    pub use tidemark_engine::seq_ranges::{SeqRange, SeqRanges};
    pub use tidemark_engine::storage::*;
    pub use tidemark_engine::MemoryStorage;
}

/// For authors of a transport: the trait the driver connects through and the abstract
/// protocol it carries (`docs/protocol.md` gives the reference server's wire form).
pub mod transport {
    pub use tidemark_engine::model::ServerMessage;
    pub use tidemark_engine::protocol;
    pub use tidemark_engine::transport::*;
}

#[cfg(any(test, feature = "testing"))]
pub mod testing;
