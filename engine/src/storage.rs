//! The [`Storage`] trait: what the engine writes through and what apps read through.
//!
//! The engine describes every durable change as a [`WriteBatch`]; a backend applies a batch
//! atomically (all of it or none of it). The engine loads its whole working state once, at
//! start, with [`Storage::load_snapshot`].

use serde::{Deserialize, Serialize};

use crate::model::{
    ClientMsgId, Conversation, ConversationId, Message, OutboxEntry, PendingChange, Seq, Timestamp,
    UserId,
};
use crate::protocol::SyncToken;
use crate::seq_ranges::SeqRanges;

/// Identifies a write batch; the engine learns its fate by this id.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct BatchId(pub u64);

/// One durable change. Applied in order within a [`WriteBatch`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum WriteOp {
    /// Insert or replace the conversation's record (sync state and list entry).
    PutConversation(Conversation),
    /// Insert or merge messages. A message is the same row when its conversation, sender and
    /// client message id match (a pending send and its echo): client ids are unique per
    /// (sender, conversation) only, so two senders' messages with one client id are two rows.
    /// Re-applying the same message changes nothing. Merge rules every backend keeps:
    /// - a message at a tombstoned seq is not stored (the tombstone wins);
    /// - a seq held by a row of another (sender, client id), or a (sender, client id) stored
    ///   at another seq, rejects the batch ([`StorageError::Rejected`]);
    /// - a row without a seq (pending or failed) is replaced by the incoming message, so a
    ///   pending send becomes the sent row when its ack or echo arrives;
    /// - a row with a seq is never downgraded by a message without one, and keeps its fields
    ///   when put again, except that a revoke or a newer `edit_seq` carried by the incoming
    ///   copy is applied (revoke wins).
    PutMessages(Vec<Message>),
    /// Replace the content of the message at `target` with this edit's, unless the message is
    /// revoked or already carries an edit with a higher `edit_seq` (edits apply in seq order,
    /// and a revoke wins over every edit). A missing target is a no-op. A target written by
    /// another user than `sender` is left as it is and the edit is reported in
    /// [`Applied::refused_changes`] ([`may_change`]).
    EditMessage {
        /// The conversation.
        conversation: ConversationId,
        /// The edited message's seq.
        target: Seq,
        /// Seq of the edit message.
        edit_seq: Seq,
        /// Who sent the edit.
        sender: UserId,
        /// The new content.
        content: Vec<u8>,
    },
    /// Clear the content of the message at `target` and mark it revoked. A missing target is
    /// a no-op; a target written by another user than `sender` is left as it is and the
    /// revoke is reported in [`Applied::refused_changes`] ([`may_change`]).
    RevokeMessage {
        /// The conversation.
        conversation: ConversationId,
        /// The revoked message's seq.
        target: Seq,
        /// Seq of the revoke message.
        revoke_seq: Seq,
        /// Who sent the revoke.
        sender: UserId,
    },
    /// Record seqs that no longer exist on the server, deleting any stored message there.
    PutTombstones {
        /// The conversation.
        conversation: ConversationId,
        /// The seqs.
        seqs: SeqRanges,
    },
    /// Delete the message with this client id if it has no seq (a cancelled pending send).
    /// Rows without a seq are this device's own sends, so the sender is not named: every row
    /// of the conversation with this client id and no seq is deleted, rows with a seq never.
    DeletePendingMessage {
        /// The conversation.
        conversation: ConversationId,
        /// Its client id.
        client_msg_id: ClientMsgId,
    },
    /// Insert or replace an outbox entry (keyed by client message id: the outbox holds this
    /// device's sends only, whose ids are unique).
    PutOutbox(OutboxEntry),
    /// Remove an outbox entry.
    RemoveOutbox(ClientMsgId),
    /// Keep an edit/revoke whose target is not held yet (keyed by conversation and seq).
    PutPendingChange(PendingChange),
    /// Forget a pending change once applied.
    RemovePendingChange {
        /// The conversation.
        conversation: ConversationId,
        /// Seq of the change message.
        seq: Seq,
    },
    /// Replace the stored sync token (the server's change cursor); `None` removes it. The
    /// engine puts a new token in the batch that completes the data it covers, so a store
    /// never holds a token newer than its data (a crash before that batch committed keeps
    /// the old one), and removes it in the batch of a local change the server has not
    /// acknowledged yet (a read mark), so a restart lists everything and repairs it.
    PutSyncToken(Option<SyncToken>),
}

/// A set of changes applied atomically.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct WriteBatch {
    /// The changes, in order.
    pub ops: Vec<WriteOp>,
}

impl WriteBatch {
    /// Whether the batch holds no change.
    pub fn is_empty(&self) -> bool {
        self.ops.is_empty()
    }
}

/// What [`Storage::apply`] reports about a batch it committed: the parts of it that the
/// merge rules left out on purpose. The engine uses it to tell the app only what happened.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Applied {
    /// Edits and revokes not applied because their sender did not write the target.
    pub refused_changes: Vec<RefusedChange>,
}

/// An edit or revoke the store did not apply: its sender is not the target's author.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RefusedChange {
    /// The conversation.
    pub conversation: ConversationId,
    /// The seq of the message it tried to change.
    pub target: Seq,
    /// The seq of the edit or revoke message.
    pub change_seq: Seq,
}

/// The authority rule for edits and revokes, shared by the engine and every backend: only
/// the author of a message may change it. There are no roles (no admin or owner may edit or
/// revoke someone else's message); a server that refuses such changes never sends them, and
/// a client applies none that reach it anyway.
pub fn may_change(target_author: &UserId, change_sender: &UserId) -> bool {
    target_author == change_sender
}

/// Everything the engine needs to resume, loaded in one call. The order of `conversations`
/// and `pending_changes` is unspecified.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SyncSnapshot {
    /// Every conversation's record.
    pub conversations: Vec<Conversation>,
    /// Unacked sends, oldest first (by `created_at`, ties by client id).
    pub outbox: Vec<OutboxEntry>,
    /// Changes waiting for their targets.
    pub pending_changes: Vec<PendingChange>,
    /// The sync token of the last complete listing ([`WriteOp::PutSyncToken`]), if any.
    #[serde(default)]
    pub sync_token: Option<SyncToken>,
}

/// Where a conversation-list page starts: after this (last activity, id) in newest-first order.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConversationCursor {
    /// Last activity of the last conversation of the previous page.
    pub last_activity: Timestamp,
    /// Its id (breaks ties).
    pub id: ConversationId,
}

impl ConversationCursor {
    /// The cursor that continues after `conv`.
    pub fn after(conv: &Conversation) -> Self {
        Self {
            last_activity: conv.last_activity,
            id: conv.id.clone(),
        }
    }
}

/// Which way a message page goes from its anchor.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Direction {
    /// Seqs below the anchor, returned ascending (the newest `limit` of them).
    Before,
    /// Seqs above the anchor, returned ascending (the oldest `limit` of them).
    After,
}

/// A storage failure. Backends keep their own error as the source.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StorageError {
    /// The store's data is damaged or not a store at all.
    #[error("store is corrupt: {detail}")]
    Corrupt {
        /// What was wrong.
        detail: String,
        /// The backend's error.
        #[source]
        source: Option<Box<dyn std::error::Error + Send + Sync>>,
    },
    /// No space left.
    #[error("store is full")]
    Full {
        /// The backend's error.
        #[source]
        source: Option<Box<dyn std::error::Error + Send + Sync>>,
    },
    /// Written by a newer (or unknown) schema version.
    #[error("store schema version {found} is not supported (this build knows up to {supported})")]
    UnsupportedVersion {
        /// Version found in the store.
        found: u64,
        /// Highest version this build knows.
        supported: u64,
    },
    /// The store cannot be written (read-only file, permissions).
    #[error("store is read-only")]
    ReadOnly {
        /// The backend's error.
        #[source]
        source: Option<Box<dyn std::error::Error + Send + Sync>>,
    },
    /// The store's data is no longer there: the browser evicted it or the user cleared the
    /// site's data under a running store. Nothing of it can be trusted to be written any
    /// more; the app opens a fresh store and the engine resyncs it from the server.
    #[error("store is gone: {detail}")]
    Gone {
        /// What was found missing, and how.
        detail: String,
        /// The backend's error.
        #[source]
        source: Option<Box<dyn std::error::Error + Send + Sync>>,
    },
    /// Another owner (another tab, worker or process) holds the store, and this opener asked
    /// not to wait for it. Two owners never write one store.
    #[error("store is in use by another owner: {detail}")]
    InUse {
        /// Which store, and who is expected to hold it.
        detail: String,
    },
    /// A batch broke a constraint (for example two messages at one seq); nothing was applied.
    #[error("write rejected: {0}")]
    Rejected(String),
    /// Any other backend failure.
    #[error("storage backend error: {detail}")]
    Backend {
        /// What failed.
        detail: String,
        /// The backend's error.
        #[source]
        source: Option<Box<dyn std::error::Error + Send + Sync>>,
    },
}

impl StorageError {
    /// The variant's name (`"Full"`, `"Gone"`, `"InUse"`, ...): a stable code for bindings
    /// and tests, which must not depend on the message or the backend's source error.
    pub fn code(&self) -> &'static str {
        match self {
            StorageError::Corrupt { .. } => "Corrupt",
            StorageError::Full { .. } => "Full",
            StorageError::UnsupportedVersion { .. } => "UnsupportedVersion",
            StorageError::ReadOnly { .. } => "ReadOnly",
            StorageError::Gone { .. } => "Gone",
            StorageError::InUse { .. } => "InUse",
            StorageError::Rejected(_) => "Rejected",
            StorageError::Backend { .. } => "Backend",
        }
    }
}

/// The merge rule of [`WriteOp::PutMessages`] for one incoming message, shared by every
/// backend so they cannot drift apart. The backend looks up the row stored under the
/// incoming (conversation, sender, client id) (`existing`), the (sender, client id) of the
/// row holding the incoming seq (`seq_holder`, when there is one), and whether that seq is
/// tombstoned. Returns the row to store under the incoming key, `Ok(None)` when nothing
/// changes, or [`StorageError::Rejected`] on a conflict (the batch must then roll back).
pub fn merge_put(
    existing: Option<&Message>,
    seq_holder: Option<(&UserId, &ClientMsgId)>,
    tombstoned: bool,
    incoming: Message,
) -> Result<Option<Message>, StorageError> {
    if tombstoned {
        // The tombstone wins: the server said this seq no longer exists.
        return Ok(None);
    }
    if let (Some(seq), Some((sender, id))) = (incoming.seq, seq_holder) {
        if (sender, id) != (&incoming.sender, &incoming.client_msg_id) {
            return Err(StorageError::Rejected(format!(
                "seq {} of conversation {} is held by message {id} of {sender}, not {} of {}",
                seq.0, incoming.conversation, incoming.client_msg_id, incoming.sender
            )));
        }
    }
    let merged = match (existing, incoming.seq) {
        (None, _) => incoming,
        // Never downgrade a sent row to one without a seq.
        (Some(old), None) if old.seq.is_some() => return Ok(None),
        (Some(_), None) => incoming,
        (Some(old), Some(seq)) => match old.seq {
            // A pending (or failed) send becomes the sent row.
            None => incoming,
            Some(old_seq) if old_seq == seq => merge_sent(old, incoming),
            Some(old_seq) => {
                return Err(StorageError::Rejected(format!(
                    "message {} of {} in conversation {} is stored at seq {}, not {}",
                    incoming.client_msg_id,
                    incoming.sender,
                    incoming.conversation,
                    old_seq.0,
                    seq.0
                )));
            }
        },
    };
    Ok((existing != Some(&merged)).then_some(merged))
}

/// The same sent message put again: the stored row stays, and a revoke or a newer edit carried
/// by the incoming copy is applied (revoke wins over edit).
fn merge_sent(old: &Message, new: Message) -> Message {
    let mut out = old.clone();
    if out.revoked {
        return out;
    }
    if new.revoked {
        out.revoked = true;
        out.content.clear();
    } else if new.edit_seq > out.edit_seq {
        out.edit_seq = new.edit_seq;
        out.content = new.content;
    }
    out
}

/// `Send` on native targets, nothing on wasm32 (browser futures are not `Send`).
#[cfg(not(target_family = "wasm"))]
pub trait SendOutsideWasm: Send {}
#[cfg(not(target_family = "wasm"))]
impl<T: Send> SendOutsideWasm for T {}
/// `Send` on native targets, nothing on wasm32 (browser futures are not `Send`).
#[cfg(target_family = "wasm")]
pub trait SendOutsideWasm {}
#[cfg(target_family = "wasm")]
impl<T> SendOutsideWasm for T {}

/// `Sync` on native targets, nothing on wasm32.
#[cfg(not(target_family = "wasm"))]
pub trait SyncOutsideWasm: Sync {}
#[cfg(not(target_family = "wasm"))]
impl<T: Sync> SyncOutsideWasm for T {}
/// `Sync` on native targets, nothing on wasm32.
#[cfg(target_family = "wasm")]
pub trait SyncOutsideWasm {}
#[cfg(target_family = "wasm")]
impl<T> SyncOutsideWasm for T {}

/// A durable store of conversations, messages and sync state.
///
/// Contract every backend keeps (the conformance suite checks it):
/// - Numbers (seqs, timestamps, counts) up to `i64::MAX` are stored exactly; cursors and
///   anchors up to `u64::MAX` are accepted.
/// - `apply` is atomic: on error nothing of the batch is visible, and the store is as before.
/// - Applying the same batch twice leaves the same state as applying it once.
/// - Reads see every batch whose `apply` returned `Ok`.
#[cfg_attr(target_family = "wasm", async_trait::async_trait(?Send))]
#[cfg_attr(not(target_family = "wasm"), async_trait::async_trait)]
pub trait Storage: SendOutsideWasm + SyncOutsideWasm {
    /// Loads everything the engine needs to resume. Called once at start.
    async fn load_snapshot(&self) -> Result<SyncSnapshot, StorageError>;

    /// Applies a batch atomically and reports what its merge rules left out on purpose
    /// ([`Applied`]); on error nothing of the batch is applied.
    async fn apply(&self, batch: WriteBatch) -> Result<Applied, StorageError>;

    /// One conversation's record.
    async fn conversation(&self, id: &ConversationId)
        -> Result<Option<Conversation>, StorageError>;

    /// A page of the conversation list, newest activity first (ties by id ascending).
    async fn conversations_page(
        &self,
        after: Option<ConversationCursor>,
        limit: usize,
    ) -> Result<Vec<Conversation>, StorageError>;

    /// A page of a conversation's messages with seqs, ascending by seq. With
    /// `Direction::Before` and `anchor: None` it is the newest `limit` messages; with
    /// `Direction::After` and `anchor: None`, the oldest. Anchors up to `Seq(u64::MAX)` are
    /// valid and must not wrap.
    async fn messages_page(
        &self,
        conversation: &ConversationId,
        anchor: Option<Seq>,
        direction: Direction,
        limit: usize,
    ) -> Result<Vec<Message>, StorageError>;

    /// A message by its sender and client id (pending, sent or failed). Client ids are unique
    /// per (sender, conversation) only, so the sender is part of the key; this device's own
    /// sends (pending, failed, and their sent rows) are found with the signed-in user.
    async fn message_by_client_id(
        &self,
        conversation: &ConversationId,
        sender: &UserId,
        client_msg_id: &ClientMsgId,
    ) -> Result<Option<Message>, StorageError>;

    /// Messages without a seq (pending or failed), oldest first (by `created_at`, ties by
    /// client id, then sender).
    async fn unsent_messages(
        &self,
        conversation: &ConversationId,
    ) -> Result<Vec<Message>, StorageError>;

    /// Sum of every conversation's unread count.
    async fn total_unread(&self) -> Result<u64, StorageError>;

    /// The outbox, oldest first (by `created_at`, ties by client id).
    async fn outbox(&self) -> Result<Vec<OutboxEntry>, StorageError>;

    /// Seqs recorded as no longer existing on the server.
    async fn tombstones(&self, conversation: &ConversationId) -> Result<SeqRanges, StorageError>;

    /// Checks the store's own consistency (for SQLite, `PRAGMA integrity_check` plus the
    /// same cross-checks): every stored message's seq is within its conversation's held
    /// ranges, no message sits at a tombstoned seq, indexes agree with the rows, every outbox
    /// entry has an unsent row (of its conversation and client id). Returns [`StorageError::Corrupt`] describing the first
    /// problem. Meant for tests and diagnostics after a crash; it reads everything.
    async fn check_integrity(&self) -> Result<(), StorageError>;
}
