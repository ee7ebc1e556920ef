//! What the engine asks its driver to do ([`Output`]) and tells the app ([`Event`]).

use serde::{Deserialize, Serialize};

use crate::model::{ClientMsgId, ConversationId, Message, Seq, Timestamp};
use crate::protocol::{Request, ServerError};
use crate::storage::{BatchId, WriteBatch};

/// One thing for the driver to do, drained with [`crate::Engine::poll_output`].
#[derive(Clone, Debug, PartialEq)]
pub enum Output {
    /// Open a connection to the server, then call `handle_connected` (or `handle_disconnected`
    /// when it fails).
    Connect,
    /// Close the connection (heartbeat lost, request timed out, kicked). The driver calls
    /// `handle_disconnected` once it is closed.
    Disconnect {
        /// Why, for logs.
        reason: String,
    },
    /// Put this request on the wire; feed its response to `handle_response` with the same id.
    Request(crate::protocol::RequestId, Request),
    /// Apply this batch atomically, in order after every earlier batch, then call
    /// `handle_batch_committed` or `handle_batch_failed` with the same id.
    Write(BatchId, WriteBatch),
    /// Deliver to the app. Every event follows the commit of the data it speaks of.
    Event(Event),
    /// Nothing more to do now: call `handle_timeout` at this time (or earlier on any input).
    Timeout(Timestamp),
}

/// Whether the engine is connected.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum ConnectionState {
    /// Not connected; a reconnect is scheduled (or the engine is stopped).
    Disconnected,
    /// A connect was requested and not answered yet.
    Connecting,
    /// Connected.
    Connected,
}

/// What the app is told. Serializable so test suites can snapshot event logs.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Event {
    /// New messages of one conversation, ascending by seq. Each message is announced as new at
    /// most once per process, and never one that was stored before.
    MessagesReceived {
        /// The conversation.
        conversation: ConversationId,
        /// The messages.
        messages: Vec<Message>,
    },
    /// A stored message changed (edited or revoked).
    MessageUpdated {
        /// The conversation.
        conversation: ConversationId,
        /// The changed message's seq.
        seq: Seq,
        /// What happened.
        change: MessageChange,
    },
    /// Seqs of a conversation no longer exist on the server (deleted, expired, below a risen
    /// history floor); any stored message there was removed.
    MessagesDeleted {
        /// The conversation.
        conversation: ConversationId,
        /// The seqs.
        seqs: crate::seq_ranges::SeqRanges,
    },
    /// Something the server delivered was not stored or applied as it came (see
    /// [`crate::containment`]): the sync goes on around it.
    MessageContained {
        /// The conversation.
        conversation: ConversationId,
        /// The seq of the delivered message.
        seq: Seq,
        /// What the client did instead.
        containment: Containment,
    },
    /// A send was acked (or its echo arrived first).
    MessageSent {
        /// The conversation.
        conversation: ConversationId,
        /// The message's client id.
        client_msg_id: ClientMsgId,
        /// Its seq.
        seq: Seq,
    },
    /// A send failed for good.
    SendFailed {
        /// The conversation.
        conversation: ConversationId,
        /// The message's client id.
        client_msg_id: ClientMsgId,
        /// The server's (or engine's) reason.
        error: ServerError,
    },
    /// These conversations' list entries changed (latest message, unread, activity, new).
    ConversationsChanged {
        /// The ids, ascending.
        conversations: Vec<ConversationId>,
    },
    /// The sum of unread counts changed.
    TotalUnreadChanged {
        /// The new total.
        total: u64,
    },
    /// A sync (after connect) began.
    SyncStarted,
    /// Sync progress in conversations.
    SyncProgress {
        /// Conversations fully pulled.
        done: u64,
        /// Conversations to pull.
        total: u64,
    },
    /// Everything the policy wants is held.
    SyncFinished,
    /// The connection state changed.
    ConnectionChanged {
        /// New state.
        state: ConnectionState,
    },
    /// A `load_history` finished.
    HistoryLoaded {
        /// The id `load_history` returned.
        id: u64,
        /// The conversation.
        conversation: ConversationId,
        /// Whether everything asked for (down to the floor) is now held; false if the
        /// connection dropped first.
        complete: bool,
    },
    /// The server ended this session.
    Kicked {
        /// Why.
        reason: String,
    },
    /// A batch failed to commit. The engine stopped; the driver restarts it from a fresh
    /// snapshot (the store is at the last commit boundary), unless the error cannot heal by
    /// retrying: then [`Event::StoreUnusable`] follows and nothing restarts.
    StorageFailed {
        /// The error, as text.
        error: String,
    },
    /// The store cannot be used any more and retrying cannot help: it reported damage
    /// ([`crate::StorageError::Corrupt`]), cannot be written (`ReadOnly`) or was written by a
    /// newer build (`UnsupportedVersion`). Follows the `StorageFailed` of the failing write
    /// (or comes alone when a restart's snapshot load failed so). The client stopped for
    /// good: the connection is closed, no restart follows, and every command answers
    /// `tidemark::ClientError::StoreUnusable`. When `damaged`, the way back is to set the
    /// store aside and start a fresh one (for SQLite `tidemark_storage_sqlite::recover`,
    /// which keeps the unsent messages), then start a new client, which resyncs.
    StoreUnusable {
        /// The error, as text.
        error: String,
        /// Whether the store reported damage (`Corrupt`); otherwise the file is intact but
        /// this build or this process cannot write it.
        damaged: bool,
    },
}

/// What the client did with a delivered message it would not store or apply as it came.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Containment {
    /// Stored with these values (comma-separated field names) clamped to
    /// [`crate::containment::MAX_STORABLE`].
    Clamped {
        /// The clamped fields.
        fields: String,
    },
    /// Its seq is held as a tombstone: accounted for, never unread, never shown.
    Tombstoned {
        /// Why.
        reason: String,
    },
    /// Not held at all: no store can hold its seq.
    Skipped {
        /// Why.
        reason: String,
    },
    /// An edit or revoke of a message its sender did not write: stored as a change message,
    /// never applied.
    ChangeRefused {
        /// The seq of the message it tried to change.
        target: Seq,
    },
}

/// How a message changed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum MessageChange {
    /// Content replaced. The stored row keeps the edit with the highest seq: an edit that
    /// arrives after a newer one (out of order) is announced but not applied, so re-read the
    /// row when exactness matters.
    Edited {
        /// Seq of the edit message.
        edit_seq: Seq,
        /// New content.
        content: Vec<u8>,
    },
    /// Content withdrawn.
    Revoked,
}
