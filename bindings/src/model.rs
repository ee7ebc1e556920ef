//! The records and enums the foreign side sees, and their conversions from the Rust API's
//! types. Ids are plain strings, seqs and times plain `u64` (times in milliseconds since the
//! Unix epoch): every language has those, and none of them needs a wrapper class per id.

use tidemark::storage::SeqRanges;
use tidemark::{Seq, Timestamp};

/// What a message is. Edits and revokes are messages too, with their own seq.
#[derive(Clone, Debug, PartialEq, Eq, uniffi::Enum)]
pub enum ContentKind {
    /// Plain text (UTF-8 in the content bytes).
    Text,
    /// An image reference.
    Image,
    /// A file reference.
    File,
    /// An app-defined kind; the content is opaque.
    Custom {
        /// The app's name for the kind.
        name: String,
    },
    /// Replaces the content of the message at `target`.
    Edit {
        /// Seq of the edited message.
        target: u64,
    },
    /// Withdraws the message at `target`.
    Revoke {
        /// Seq of the revoked message.
        target: u64,
    },
}

impl From<tidemark::ContentKind> for ContentKind {
    fn from(kind: tidemark::ContentKind) -> Self {
        match kind {
            tidemark::ContentKind::Text => Self::Text,
            tidemark::ContentKind::Image => Self::Image,
            tidemark::ContentKind::File => Self::File,
            tidemark::ContentKind::Custom(name) => Self::Custom { name },
            tidemark::ContentKind::Edit { target } => Self::Edit { target: target.0 },
            tidemark::ContentKind::Revoke { target } => Self::Revoke { target: target.0 },
        }
    }
}

impl From<ContentKind> for tidemark::ContentKind {
    fn from(kind: ContentKind) -> Self {
        match kind {
            ContentKind::Text => Self::Text,
            ContentKind::Image => Self::Image,
            ContentKind::File => Self::File,
            ContentKind::Custom { name } => Self::Custom(name),
            ContentKind::Edit { target } => Self::Edit {
                target: Seq(target),
            },
            ContentKind::Revoke { target } => Self::Revoke {
                target: Seq(target),
            },
        }
    }
}

/// Where a message is in its life.
#[derive(Clone, Debug, PartialEq, Eq, uniffi::Enum)]
pub enum MessageStatus {
    /// Stored locally, not acked by the server yet; no seq.
    Pending,
    /// On the server, with a seq.
    Sent,
    /// Refused for good, or given up.
    Failed {
        /// Why, as the server or the engine said it.
        reason: String,
    },
}

impl From<tidemark::MessageStatus> for MessageStatus {
    fn from(status: tidemark::MessageStatus) -> Self {
        match status {
            tidemark::MessageStatus::Pending => Self::Pending,
            tidemark::MessageStatus::Sent => Self::Sent,
            tidemark::MessageStatus::Failed { reason } => Self::Failed { reason },
        }
    }
}

/// A stored message.
#[derive(Clone, Debug, PartialEq, Eq, uniffi::Record)]
pub struct Message {
    /// The conversation it belongs to.
    pub conversation: String,
    /// The server's seq; none while pending or failed.
    pub seq: Option<u64>,
    /// The sender's id for it, unique per (sender, conversation).
    pub client_msg_id: String,
    /// Who sent it.
    pub sender: String,
    /// What it is.
    pub kind: ContentKind,
    /// The payload (UTF-8 text for `Text`).
    pub content: Vec<u8>,
    /// The sender's clock when it was created.
    pub created_at: u64,
    /// The server's time of acceptance.
    pub server_time: Option<u64>,
    /// Pending, sent or failed.
    pub status: MessageStatus,
    /// Seq of the edit whose content this is (none: never edited).
    pub edit_seq: Option<u64>,
    /// Set when a revoke withdrew it (the content is cleared).
    pub revoked: bool,
}

impl From<tidemark::Message> for Message {
    fn from(m: tidemark::Message) -> Self {
        Self {
            conversation: m.conversation.0,
            seq: m.seq.map(|s| s.0),
            client_msg_id: m.client_msg_id.0,
            sender: m.sender.0,
            kind: m.kind.into(),
            content: m.content,
            created_at: m.created_at.0,
            server_time: m.server_time.map(|t| t.0),
            status: m.status.into(),
            edit_seq: m.edit_seq.map(|s| s.0),
            revoked: m.revoked,
        }
    }
}

/// Whether a conversation is one-to-one or a group.
#[derive(Clone, Copy, Debug, PartialEq, Eq, uniffi::Enum)]
pub enum ConversationKind {
    /// Two members.
    Direct,
    /// Any number of members.
    Group,
}

impl From<tidemark::ConversationKind> for ConversationKind {
    fn from(kind: tidemark::ConversationKind) -> Self {
        match kind {
            tidemark::ConversationKind::Direct => Self::Direct,
            tidemark::ConversationKind::Group => Self::Group,
        }
    }
}

/// The latest message of a conversation as the list shows it (content cut to a preview).
#[derive(Clone, Debug, PartialEq, Eq, uniffi::Record)]
pub struct LatestMessage {
    /// Its seq (none for a pending message of this device).
    pub seq: Option<u64>,
    /// Its client id.
    pub client_msg_id: String,
    /// Who sent it.
    pub sender: String,
    /// What it is.
    pub kind: ContentKind,
    /// The first bytes of its content (256 at most).
    pub preview: Vec<u8>,
    /// Server time, or creation time while pending.
    pub time: u64,
}

impl From<tidemark::LatestMessage> for LatestMessage {
    fn from(m: tidemark::LatestMessage) -> Self {
        Self {
            seq: m.seq.map(|s| s.0),
            client_msg_id: m.client_msg_id.0,
            sender: m.sender.0,
            kind: m.kind.into(),
            preview: m.preview,
            time: m.time.0,
        }
    }
}

/// A conversation's list entry and sync position.
#[derive(Clone, Debug, PartialEq, Eq, uniffi::Record)]
pub struct Conversation {
    /// Its id.
    pub id: String,
    /// Direct or group.
    pub kind: ConversationKind,
    /// The highest seq the server is known to have.
    pub server_max_seq: u64,
    /// The history floor: seqs below it are gone on the server.
    pub server_min_seq: u64,
    /// This user's read position.
    pub read_seq: u64,
    /// Unread messages.
    pub unread: u64,
    /// The newest displayable message.
    pub latest: Option<LatestMessage>,
    /// Orders the list, newest first.
    pub last_activity: u64,
    /// How many seqs this device holds (messages and known gaps on the server).
    pub held_count: u64,
}

impl From<tidemark::Conversation> for Conversation {
    fn from(c: tidemark::Conversation) -> Self {
        Self {
            held_count: c.held.count(),
            id: c.id.0,
            kind: c.kind.into(),
            server_max_seq: c.server_max_seq.0,
            server_min_seq: c.server_min_seq.0,
            read_seq: c.read_seq.0,
            unread: c.unread,
            latest: c.latest.map(Into::into),
            last_activity: c.last_activity.0,
        }
    }
}

/// Where a conversation-list page starts: after this entry, in newest-first order. Build it
/// from the last conversation of a page (its `last_activity` and `id`).
#[derive(Clone, Debug, PartialEq, Eq, uniffi::Record)]
pub struct ConversationCursor {
    /// `last_activity` of the last conversation of the previous page.
    pub last_activity: u64,
    /// Its id.
    pub id: String,
}

impl From<ConversationCursor> for tidemark::ConversationCursor {
    fn from(c: ConversationCursor) -> Self {
        Self {
            last_activity: Timestamp(c.last_activity),
            id: tidemark::ConversationId(c.id),
        }
    }
}

/// Which way a message page goes from its anchor (pages are ascending by seq either way).
#[derive(Clone, Copy, Debug, PartialEq, Eq, uniffi::Enum)]
pub enum Direction {
    /// The newest `limit` seqs below the anchor.
    Before,
    /// The oldest `limit` seqs above the anchor.
    After,
}

impl From<Direction> for tidemark::Direction {
    fn from(d: Direction) -> Self {
        match d {
            Direction::Before => Self::Before,
            Direction::After => Self::After,
        }
    }
}

/// Whether the client is connected to the server.
#[derive(Clone, Copy, Debug, PartialEq, Eq, uniffi::Enum)]
pub enum ConnectionState {
    /// Not connected; a reconnect is scheduled (or the client stopped).
    Disconnected,
    /// Connecting.
    Connecting,
    /// Connected.
    Connected,
}

impl From<tidemark::ConnectionState> for ConnectionState {
    fn from(s: tidemark::ConnectionState) -> Self {
        match s {
            tidemark::ConnectionState::Disconnected => Self::Disconnected,
            tidemark::ConnectionState::Connecting => Self::Connecting,
            tidemark::ConnectionState::Connected => Self::Connected,
        }
    }
}

/// Where the sync stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq, uniffi::Enum)]
pub enum SyncState {
    /// Not connected.
    Offline,
    /// Connected and catching up.
    Syncing,
    /// Connected and caught up; new messages arrive as pushes.
    Synced,
    /// Stopped for good: the store cannot be used.
    StoreUnusable {
        /// Whether the store reported damage.
        damaged: bool,
    },
}

impl From<tidemark::SyncState> for SyncState {
    fn from(s: tidemark::SyncState) -> Self {
        match s {
            tidemark::SyncState::Offline => Self::Offline,
            tidemark::SyncState::Syncing => Self::Syncing,
            tidemark::SyncState::Synced => Self::Synced,
            tidemark::SyncState::StoreUnusable { damaged } => Self::StoreUnusable { damaged },
        }
    }
}

/// The answer to a history load.
#[derive(Clone, Debug, PartialEq, Eq, uniffi::Record)]
pub struct HistoryLoaded {
    /// The conversation.
    pub conversation: String,
    /// Whether everything asked for is held now; false if the connection dropped first.
    pub complete: bool,
}

impl From<tidemark::HistoryLoaded> for HistoryLoaded {
    fn from(h: tidemark::HistoryLoaded) -> Self {
        Self {
            conversation: h.conversation.0,
            complete: h.complete,
        }
    }
}

/// What to pull after connecting.
#[derive(Clone, Copy, Debug, PartialEq, Eq, uniffi::Enum)]
pub enum SyncPolicy {
    /// The newest `per_conversation` messages of every conversation with news; older ones
    /// come with `load_history` (or in the background when `background_fill`).
    NewestFirst {
        /// Messages to pull per conversation.
        per_conversation: u32,
        /// Fill the remaining gaps after the newest messages are in.
        background_fill: bool,
    },
    /// Every missing message of every conversation.
    Full,
}

impl From<SyncPolicy> for tidemark::SyncPolicy {
    fn from(p: SyncPolicy) -> Self {
        match p {
            SyncPolicy::NewestFirst {
                per_conversation,
                background_fill,
            } => Self::NewestFirst {
                per_conversation,
                background_fill,
            },
            SyncPolicy::Full => Self::Full,
        }
    }
}

/// An inclusive range of seqs, `start..=end`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, uniffi::Record)]
pub struct SeqRange {
    /// The first seq.
    pub start: u64,
    /// The last seq (inclusive).
    pub end: u64,
}

/// The ranges of a set of seqs, ascending.
pub(crate) fn ranges(seqs: &SeqRanges) -> Vec<SeqRange> {
    seqs.ranges()
        .iter()
        .map(|r| SeqRange {
            start: r.start.0,
            end: r.end.0,
        })
        .collect()
}

/// How a stored message changed.
#[derive(Clone, Debug, PartialEq, Eq, uniffi::Enum)]
pub enum MessageChange {
    /// Its content was replaced (re-read the row when exactness matters: an edit older than
    /// the applied one is announced but not applied).
    Edited {
        /// Seq of the edit.
        edit_seq: u64,
        /// The new content.
        content: Vec<u8>,
    },
    /// Its content was withdrawn.
    Revoked,
}

impl From<tidemark::MessageChange> for MessageChange {
    fn from(c: tidemark::MessageChange) -> Self {
        match c {
            tidemark::MessageChange::Edited { edit_seq, content } => Self::Edited {
                edit_seq: edit_seq.0,
                content,
            },
            tidemark::MessageChange::Revoked => Self::Revoked,
        }
    }
}

/// What the client did with a delivered message it would not store or apply as it came.
#[derive(Clone, Debug, PartialEq, Eq, uniffi::Enum)]
pub enum Containment {
    /// Stored with these fields (comma-separated names) clamped.
    Clamped {
        /// The clamped fields.
        fields: String,
    },
    /// Its seq is held as a tombstone: never unread, never shown.
    Tombstoned {
        /// Why.
        reason: String,
    },
    /// Not held at all.
    Skipped {
        /// Why.
        reason: String,
    },
    /// An edit or revoke of someone else's message: stored, never applied.
    ChangeRefused {
        /// The seq it tried to change.
        target: u64,
    },
}

impl From<tidemark::Containment> for Containment {
    fn from(c: tidemark::Containment) -> Self {
        match c {
            tidemark::Containment::Clamped { fields } => Self::Clamped { fields },
            tidemark::Containment::Tombstoned { reason } => Self::Tombstoned { reason },
            tidemark::Containment::Skipped { reason } => Self::Skipped { reason },
            tidemark::Containment::ChangeRefused { target } => {
                Self::ChangeRefused { target: target.0 }
            }
        }
    }
}

/// Why the server (or the engine) refused a send.
#[derive(Clone, Debug, PartialEq, Eq, uniffi::Record)]
pub struct ServerError {
    /// The stable code (`not_member`, `too_large`, ...; docs/protocol.md lists them).
    pub code: String,
    /// Human-readable detail.
    pub message: String,
    /// Whether retrying cannot help.
    pub permanent: bool,
}

/// One event, in the order the engine released it; every event follows the commit of the
/// data it speaks of, so a read made on receiving it sees that data.
#[derive(Clone, Debug, PartialEq, Eq, uniffi::Enum)]
pub enum ClientEvent {
    /// New messages of one conversation, ascending by seq; each announced once.
    MessagesReceived {
        /// The conversation.
        conversation: String,
        /// The messages.
        messages: Vec<Message>,
    },
    /// A stored message was edited or revoked.
    MessageUpdated {
        /// The conversation.
        conversation: String,
        /// The changed message's seq.
        seq: u64,
        /// What happened.
        change: MessageChange,
    },
    /// Seqs no longer exist on the server; stored messages there were removed.
    MessagesDeleted {
        /// The conversation.
        conversation: String,
        /// The seqs.
        seqs: Vec<SeqRange>,
    },
    /// A delivered message was not stored or applied as it came.
    MessageContained {
        /// The conversation.
        conversation: String,
        /// The delivered message's seq.
        seq: u64,
        /// What the client did instead.
        containment: Containment,
    },
    /// A send was acked (exactly once per send).
    MessageSent {
        /// The conversation.
        conversation: String,
        /// The client id the send returned.
        client_msg_id: String,
        /// Its seq.
        seq: u64,
    },
    /// A send failed for good (`retry` sends it again).
    SendFailed {
        /// The conversation.
        conversation: String,
        /// The client id the send returned.
        client_msg_id: String,
        /// Why.
        error: ServerError,
    },
    /// These conversations' list entries changed.
    ConversationsChanged {
        /// Their ids, ascending.
        conversations: Vec<String>,
    },
    /// The total unread count changed.
    TotalUnreadChanged {
        /// The new total.
        total: u64,
    },
    /// A sync began (after a connect).
    SyncStarted,
    /// Sync progress, in conversations.
    SyncProgress {
        /// Conversations fully pulled.
        done: u64,
        /// Conversations to pull.
        total: u64,
    },
    /// Everything the sync policy wants is held.
    SyncFinished,
    /// The connection state changed.
    ConnectionChanged {
        /// The new state.
        state: ConnectionState,
    },
    /// A history load finished.
    HistoryLoaded {
        /// The engine's id of the load.
        id: u64,
        /// The conversation.
        conversation: String,
        /// Whether everything asked for is held now.
        complete: bool,
    },
    /// The server ended this session (no reconnect follows).
    Kicked {
        /// Why.
        reason: String,
    },
    /// A write failed; the client restarts from the store unless `StoreUnusable` follows.
    StorageFailed {
        /// The error, as text.
        error: String,
    },
    /// The store cannot be used any more: the client stopped for good.
    StoreUnusable {
        /// The error, as text.
        error: String,
        /// Whether the store reported damage.
        damaged: bool,
    },
    /// The server refused this device's login (a bad or expired token, an unsupported
    /// protocol version). The client keeps retrying with backoff: give it a new token with
    /// `set_token`, or shut it down.
    LoginRefused {
        /// The server's code: `unauthorized`, `token_expired` or `unsupported_version`.
        code: String,
        /// The server's detail.
        detail: String,
    },
}

impl ClientEvent {
    /// The foreign form of an engine event. Exhaustive on purpose: a new Rust event must
    /// get its foreign form here before the bindings build again.
    pub(crate) fn from_event(event: &tidemark::Event) -> Self {
        use tidemark::Event as E;
        match event.clone() {
            E::MessagesReceived {
                conversation,
                messages,
            } => Self::MessagesReceived {
                conversation: conversation.0,
                messages: messages.into_iter().map(Into::into).collect(),
            },
            E::MessageUpdated {
                conversation,
                seq,
                change,
            } => Self::MessageUpdated {
                conversation: conversation.0,
                seq: seq.0,
                change: change.into(),
            },
            E::MessagesDeleted { conversation, seqs } => Self::MessagesDeleted {
                conversation: conversation.0,
                seqs: ranges(&seqs),
            },
            E::MessageContained {
                conversation,
                seq,
                containment,
            } => Self::MessageContained {
                conversation: conversation.0,
                seq: seq.0,
                containment: containment.into(),
            },
            E::MessageSent {
                conversation,
                client_msg_id,
                seq,
            } => Self::MessageSent {
                conversation: conversation.0,
                client_msg_id: client_msg_id.0,
                seq: seq.0,
            },
            E::SendFailed {
                conversation,
                client_msg_id,
                error,
            } => Self::SendFailed {
                conversation: conversation.0,
                client_msg_id: client_msg_id.0,
                error: ServerError {
                    code: error.code,
                    message: error.message,
                    permanent: error.permanent,
                },
            },
            E::ConversationsChanged { conversations } => Self::ConversationsChanged {
                conversations: conversations.into_iter().map(|c| c.0).collect(),
            },
            E::TotalUnreadChanged { total } => Self::TotalUnreadChanged { total },
            E::SyncStarted => Self::SyncStarted,
            E::SyncProgress { done, total } => Self::SyncProgress { done, total },
            E::SyncFinished => Self::SyncFinished,
            E::ConnectionChanged { state } => Self::ConnectionChanged {
                state: state.into(),
            },
            E::HistoryLoaded {
                id,
                conversation,
                complete,
            } => Self::HistoryLoaded {
                id,
                conversation: conversation.0,
                complete,
            },
            E::Kicked { reason } => Self::Kicked { reason },
            E::StorageFailed { error } => Self::StorageFailed { error },
            E::StoreUnusable { error, damaged } => Self::StoreUnusable { error, damaged },
        }
    }
}
