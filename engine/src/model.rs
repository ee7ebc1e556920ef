//! Model types shared by the engine, storage backends, transports and the server.

use std::fmt;

use serde::{Deserialize, Serialize};

// `Seq` lives with the ranges built from it, so the dependency runs one way: the model
// uses seq ranges, seq ranges know nothing of the model.
pub use crate::seq_ranges::Seq;
use crate::seq_ranges::{SeqRange, SeqRanges};

/// Milliseconds since the Unix epoch. The engine never reads a clock: every input carries one.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize,
)]
#[serde(transparent)]
pub struct Timestamp(pub u64);

impl Timestamp {
    /// `self + millis`, saturating.
    pub fn plus_millis(self, millis: u64) -> Self {
        Self(self.0.saturating_add(millis))
    }
}

macro_rules! string_id {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        #[serde(transparent)]
        pub struct $name(pub String);

        impl $name {
            /// The id as a string slice.
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl From<&str> for $name {
            fn from(s: &str) -> Self {
                Self(s.to_owned())
            }
        }

        impl From<String> for $name {
            fn from(s: String) -> Self {
                Self(s)
            }
        }
    };
}

string_id!(
    /// A conversation's id, assigned by the server.
    ConversationId
);
string_id!(
    /// A user's id.
    UserId
);
string_id!(
    /// One device (login) of a user.
    DeviceId
);
string_id!(
    /// The id a sending client gives a message; with the sender it makes sends idempotent.
    ClientMsgId
);

/// Whether a conversation is one-to-one or a group.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum ConversationKind {
    /// Two members.
    #[default]
    Direct,
    /// Any number of members.
    Group,
}

/// What a message is. Edits, revokes and deletes are messages too (they take a seq) that change
/// an earlier message of the same conversation.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum ContentKind {
    /// Plain text (UTF-8 in the content bytes).
    Text,
    /// An image reference.
    Image,
    /// A file reference.
    File,
    /// An app-defined kind; the content is opaque.
    Custom(String),
    /// Replaces the content of the message at `target`.
    Edit {
        /// Seq of the message to edit.
        target: Seq,
    },
    /// Withdraws the message at `target` (its content is cleared, the row stays).
    Revoke {
        /// Seq of the message to revoke.
        target: Seq,
    },
}

impl ContentKind {
    /// The seq this message changes, for edits and revokes.
    pub fn change_target(&self) -> Option<Seq> {
        match self {
            ContentKind::Edit { target } | ContentKind::Revoke { target } => Some(*target),
            _ => None,
        }
    }
}

/// Where a message is in its life.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum MessageStatus {
    /// Written locally, not yet acked by the server. Has no seq.
    Pending,
    /// On the server, with a seq.
    Sent,
    /// The server refused it for good, or it was given up.
    Failed {
        /// Why, as the server or the engine said it.
        reason: String,
    },
}

/// A message as the engine, storage and app see it.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Message {
    /// The conversation it belongs to.
    pub conversation: ConversationId,
    /// Server seq; `None` while pending or failed.
    pub seq: Option<Seq>,
    /// Sender-chosen id, unique per (sender, conversation).
    pub client_msg_id: ClientMsgId,
    /// Who sent it.
    pub sender: UserId,
    /// What it is.
    pub kind: ContentKind,
    /// Opaque payload.
    #[serde(with = "crate::content_serde")]
    pub content: Vec<u8>,
    /// The sender's clock when it was created.
    pub created_at: Timestamp,
    /// The server's time of acceptance.
    pub server_time: Option<Timestamp>,
    /// Pending, sent or failed.
    pub status: MessageStatus,
    /// Seq of the edit whose content this is (`None`: never edited). Edits apply in seq
    /// order whatever order they arrive in: an edit with a lower seq than this one is stale.
    pub edit_seq: Option<Seq>,
    /// Set when a revoke withdrew it (content cleared).
    pub revoked: bool,
}

impl Message {
    /// Whether this message is an edit or revoke of another one.
    pub fn is_change(&self) -> bool {
        self.kind.change_target().is_some()
    }
}

/// A message as the server delivers it (by push or pull).
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct ServerMessage {
    /// The conversation.
    pub conversation: ConversationId,
    /// Its seq.
    pub seq: Seq,
    /// The sender's id for it.
    pub client_msg_id: ClientMsgId,
    /// Who sent it.
    pub sender: UserId,
    /// What it is.
    pub kind: ContentKind,
    /// Opaque payload.
    #[serde(with = "crate::content_serde")]
    pub content: Vec<u8>,
    /// The sender's clock at creation.
    pub created_at: Timestamp,
    /// The server's time of acceptance.
    pub server_time: Timestamp,
}

impl ServerMessage {
    /// The stored form of this message.
    pub fn into_message(self) -> Message {
        Message {
            conversation: self.conversation,
            seq: Some(self.seq),
            client_msg_id: self.client_msg_id,
            sender: self.sender,
            kind: self.kind,
            content: self.content,
            created_at: self.created_at,
            server_time: Some(self.server_time),
            status: MessageStatus::Sent,
            edit_seq: None,
            revoked: false,
        }
    }
}

/// The latest message of a conversation, as the conversation list shows it. Content is cut to
/// [`LatestMessage::PREVIEW_BYTES`] so memory stays bounded by conversations, not payloads.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct LatestMessage {
    /// Its seq (`None` for a pending message of this device).
    pub seq: Option<Seq>,
    /// Its client id.
    pub client_msg_id: ClientMsgId,
    /// Who sent it.
    pub sender: UserId,
    /// What it is.
    pub kind: ContentKind,
    /// The first bytes of the content.
    pub preview: Vec<u8>,
    /// Server time, or creation time while pending.
    pub time: Timestamp,
}

impl LatestMessage {
    /// How many content bytes a preview keeps.
    pub const PREVIEW_BYTES: usize = 256;

    /// The preview of `msg`.
    pub fn of(msg: &Message) -> Self {
        let cut = msg.content.len().min(Self::PREVIEW_BYTES);
        Self {
            seq: msg.seq,
            client_msg_id: msg.client_msg_id.clone(),
            sender: msg.sender.clone(),
            kind: msg.kind.clone(),
            preview: if msg.revoked {
                Vec::new()
            } else {
                msg.content[..cut].to_vec()
            },
            time: msg.server_time.unwrap_or(msg.created_at),
        }
    }
}

/// A conversation's sync state and list entry, as stored and as loaded in the snapshot.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Conversation {
    /// Its id.
    pub id: ConversationId,
    /// Direct or group.
    pub kind: ConversationKind,
    /// Highest seq the server is known to have.
    pub server_max_seq: Seq,
    /// History floor: seqs below it are gone on the server (0 or 1: no floor).
    pub server_min_seq: Seq,
    /// Seqs this device holds: messages, tombstones, and seqs below the floor count as held
    /// once known missing. Never claims a seq whose message is not stored or known missing.
    pub held: SeqRanges,
    /// This user's read position.
    pub read_seq: Seq,
    /// Seqs above `read_seq` that never count as unread: own messages, edits/revokes and
    /// tombstones. Unread is derived from it (see [`Conversation::compute_unread`]).
    pub not_unread: SeqRanges,
    /// Unread count, kept current by the engine.
    pub unread: u64,
    /// The newest displayable message.
    pub latest: Option<LatestMessage>,
    /// Orders the conversation list, newest first.
    pub last_activity: Timestamp,
    /// Seqs known not to exist on the server: tombstones and everything below the floor.
    /// Held, never unread, never announced; a subset of `held`. Compared with the server's
    /// deletion count to learn deletions missed while offline.
    #[serde(default)]
    pub deleted: SeqRanges,
}

impl Conversation {
    /// A conversation with nothing known yet.
    pub fn new(id: ConversationId, kind: ConversationKind) -> Self {
        Self {
            id,
            kind,
            server_max_seq: Seq(0),
            server_min_seq: Seq(0),
            held: SeqRanges::new(),
            read_seq: Seq(0),
            not_unread: SeqRanges::new(),
            unread: 0,
            latest: None,
            last_activity: Timestamp(0),
            deleted: SeqRanges::new(),
        }
    }

    /// Unread = seqs in `(read_seq, server_max_seq]` that are not known to be own messages,
    /// changes or tombstones. Seqs not held yet count: they are someone's messages until we
    /// learn otherwise, which is what the server's own count says too.
    pub fn compute_unread(&self) -> u64 {
        if self.server_max_seq <= self.read_seq {
            return 0;
        }
        let start = self.read_seq.next().max(self.server_min_seq);
        if start > self.server_max_seq {
            return 0;
        }
        let span = self.server_max_seq.0 - start.0 + 1;
        span - self.not_unread.count_in(start, self.server_max_seq)
    }

    /// How many seqs at or above the floor this device knows as deleted; equal to the
    /// server's `deleted_count` when nothing was missed.
    pub fn deleted_above_floor(&self) -> u64 {
        self.deleted
            .count_in(self.server_min_seq.max(Seq(1)), self.server_max_seq)
    }

    /// Seqs in `[max(min_seq,1), server_max_seq]` not held: the gaps to pull.
    pub fn gaps(&self) -> Vec<SeqRange> {
        let floor = self.server_min_seq.max(Seq(1));
        self.held.gaps_in(floor, self.server_max_seq)
    }
}

/// A send waiting for its ack. Written in the same batch as the pending message, before
/// anything goes on the wire, so a crash at any point resends under the same client id.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct OutboxEntry {
    /// The conversation.
    pub conversation: ConversationId,
    /// The id the server deduplicates by.
    pub client_msg_id: ClientMsgId,
    /// What it is.
    pub kind: ContentKind,
    /// Payload.
    pub content: Vec<u8>,
    /// Creation time; also the outbox order.
    pub created_at: Timestamp,
    /// How many times it has been put on the wire.
    pub attempts: u32,
}

/// An edit or revoke whose target seq is not held yet. Kept (and stored) until the target
/// lands, then applied.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PendingChange {
    /// The conversation.
    pub conversation: ConversationId,
    /// Seq of the change message itself.
    pub seq: Seq,
    /// Seq of the message it changes.
    pub target: Seq,
    /// Who sent the change: it applies only to a target of the same author
    /// ([`crate::storage::may_change`]).
    pub sender: UserId,
    /// Edit or revoke.
    pub kind: ContentKind,
    /// New content for an edit.
    pub content: Vec<u8>,
}
