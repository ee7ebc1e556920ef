//! The [`ServerStore`] trait: the inbox's durable state, as the server core needs it.
//!
//! Every method is synchronous and either fully applies or fails without effect, so an SQLite
//! implementation runs each one in a transaction. The store keeps data, not rules: membership
//! checks, limits and fan-out live in [`crate::ServerCore`].

use serde::{Deserialize, Serialize};
use tidemark_engine::{
    ClientMsgId, ContentKind, ConversationId, ConversationKind, DeviceId, Seq, SeqRanges,
    ServerMessage, Timestamp, UserId,
};

use crate::ServerStoreError;

/// A conversation's header: everything but its members and messages.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConversationInfo {
    /// Its id.
    pub id: ConversationId,
    /// Direct or group.
    pub kind: ConversationKind,
    /// Highest seq assigned (`Seq(0)`: no message yet).
    pub max_seq: Seq,
    /// History floor: seqs below it are gone (`Seq(0)`: no floor).
    pub min_seq: Seq,
    /// Server time of the last append (`Timestamp(0)`: never).
    pub last_activity: Timestamp,
}

/// A message to append; the store assigns its seq.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NewMessage {
    /// The conversation.
    pub conversation: ConversationId,
    /// Who sends it.
    pub sender: UserId,
    /// The sender's id for it; with the sender it is the idempotency key.
    pub client_msg_id: ClientMsgId,
    /// What it is.
    pub kind: ContentKind,
    /// Payload.
    pub content: Vec<u8>,
    /// The sender's clock at creation.
    pub created_at: Timestamp,
}

/// Where an accepted message went: the value of the idempotency index.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SentRecord {
    /// The conversation it was appended to.
    pub conversation: ConversationId,
    /// Its seq.
    pub seq: Seq,
    /// The server's time of acceptance.
    pub server_time: Timestamp,
}

/// What [`ServerStore::append`] did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AppendOutcome {
    /// Stored under a new seq.
    Appended(ServerMessage),
    /// (sender, client message id) was seen before: nothing was stored.
    Duplicate(SentRecord),
}

/// The store's change clock, read in one call: what a sync token is made of.
///
/// Every change to what a user's max-seq entry says (a conversation's max or min seq, last
/// activity or deletions; a member's read seq or joining) takes the next value of one
/// store-wide counter and records it on the row it changed. A token names the counter value
/// its listing was read at; what changed since has a higher value.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ChangeClock {
    /// Random per database, so a token of another database (or of this one before it was
    /// wiped) is never taken for one of this database.
    pub epoch: String,
    /// The value of the last change (0: none yet).
    pub counter: u64,
    /// Tokens below this value are expired: the change history they need is gone.
    pub floor: u64,
}

/// The inbox's durable state. See the module docs.
pub trait ServerStore {
    /// Creates a user. Returns `false` (and changes nothing) when it exists already.
    fn create_user(&mut self, user: &UserId) -> Result<bool, ServerStoreError>;

    /// Whether the user exists.
    fn user_exists(&self, user: &UserId) -> Result<bool, ServerStoreError>;

    /// Registers a device of an existing user (no-op when known).
    fn add_device(&mut self, user: &UserId, device: &DeviceId) -> Result<(), ServerStoreError>;

    /// The user's devices, ascending.
    fn devices(&self, user: &UserId) -> Result<Vec<DeviceId>, ServerStoreError>;

    /// Creates a conversation with these members (every one must exist).
    fn create_conversation(
        &mut self,
        id: &ConversationId,
        kind: ConversationKind,
        members: &[UserId],
    ) -> Result<(), ServerStoreError>;

    /// Adds a member (no-op when already one).
    fn add_member(&mut self, id: &ConversationId, user: &UserId) -> Result<(), ServerStoreError>;

    /// A conversation's header, `None` when unknown.
    fn conversation(
        &self,
        id: &ConversationId,
    ) -> Result<Option<ConversationInfo>, ServerStoreError>;

    /// A conversation's members, ascending.
    fn members(&self, id: &ConversationId) -> Result<Vec<UserId>, ServerStoreError>;

    /// Whether `user` is a member; `false` for an unknown conversation.
    fn is_member(&self, id: &ConversationId, user: &UserId) -> Result<bool, ServerStoreError>;

    /// Up to `limit` ids of the user's conversations, ascending, strictly after `after`.
    fn conversations_of(
        &self,
        user: &UserId,
        after: Option<&ConversationId>,
        limit: usize,
    ) -> Result<Vec<ConversationId>, ServerStoreError>;

    /// Up to `limit` ids of the user's conversations, ascending, strictly after `after`,
    /// whose max-seq entry may have changed after change counter value `since`: the
    /// conversation changed, or the user's membership row did (read seq, joined).
    fn conversations_changed_since(
        &self,
        user: &UserId,
        since: u64,
        after: Option<&ConversationId>,
        limit: usize,
    ) -> Result<Vec<ConversationId>, ServerStoreError>;

    /// The change clock ([`ChangeClock`]).
    fn change_clock(&self) -> Result<ChangeClock, ServerStoreError>;

    /// Expires every token below `floor` (never lowers the floor; at most the counter: a
    /// token of the current counter misses nothing and stays served).
    /// A server that compacts its change history raises it; admins and tests may too.
    /// Returns the floor after the call.
    fn raise_change_floor(&mut self, floor: u64) -> Result<u64, ServerStoreError>;

    /// Appends a message under the conversation's next seq, atomically with its idempotency
    /// entry, unless (sender, client message id) is known: then nothing changes and the
    /// original placement is returned. Sets the conversation's last activity to `server_time`.
    fn append(
        &mut self,
        message: NewMessage,
        server_time: Timestamp,
    ) -> Result<AppendOutcome, ServerStoreError>;

    /// The idempotency index: where (sender, client message id) went, if anywhere.
    fn sent_record(
        &self,
        sender: &UserId,
        client_msg_id: &ClientMsgId,
    ) -> Result<Option<SentRecord>, ServerStoreError>;

    /// The existing message at `seq` (`None` when never assigned, deleted or below the floor).
    fn message(
        &self,
        conversation: &ConversationId,
        seq: Seq,
    ) -> Result<Option<ServerMessage>, ServerStoreError>;

    /// Up to `limit` existing messages with seqs in `from..=to`, ascending. Deleted seqs and
    /// seqs below the floor have none.
    fn messages(
        &self,
        conversation: &ConversationId,
        from: Seq,
        to: Seq,
        limit: usize,
    ) -> Result<Vec<ServerMessage>, ServerStoreError>;

    /// The seqs in `from..=to` of existing messages that count as unread for `user`: sent by
    /// another user, and not an edit or a revoke. What the max-seq listing subtracts from
    /// `(read_seq, max_seq]`; a store that can answer without reading the messages' contents
    /// should (on a first login every unread message is otherwise read twice: here and by
    /// the pull).
    fn unread_seqs(
        &self,
        conversation: &ConversationId,
        user: &UserId,
        from: Seq,
        to: Seq,
    ) -> Result<Vec<Seq>, ServerStoreError> {
        Ok(self
            .messages(conversation, from, to, usize::MAX)?
            .into_iter()
            .filter(|m| &m.sender != user && m.kind.change_target().is_none())
            .map(|m| m.seq)
            .collect())
    }

    /// The seqs in `from..=to` deleted one by one (the floor is not included).
    fn deleted(
        &self,
        conversation: &ConversationId,
        from: Seq,
        to: Seq,
    ) -> Result<SeqRanges, ServerStoreError>;

    /// Deletes these seqs (ignoring those above the max seq or already deleted) and returns the
    /// ones newly deleted.
    fn delete_seqs(
        &mut self,
        conversation: &ConversationId,
        seqs: &SeqRanges,
    ) -> Result<SeqRanges, ServerStoreError>;

    /// Raises the history floor to `min_seq` (never lowers it; at most max seq + 1) and drops
    /// the messages below it. Returns the floor after the call.
    fn set_min_seq(
        &mut self,
        conversation: &ConversationId,
        min_seq: Seq,
    ) -> Result<Seq, ServerStoreError>;

    /// The user's read seq in the conversation (`Seq(0)` when never set).
    fn read_seq(
        &self,
        user: &UserId,
        conversation: &ConversationId,
    ) -> Result<Seq, ServerStoreError>;

    /// Sets the user's read seq to the maximum of the stored one and `seq`; returns the result.
    fn set_read_seq(
        &mut self,
        user: &UserId,
        conversation: &ConversationId,
        seq: Seq,
    ) -> Result<Seq, ServerStoreError>;

    /// Starts a group commit: the calls until [`ServerStore::commit_group`] still apply whole
    /// or not at all one by one, and are visible to later calls at once, but become durable
    /// together at the commit. A host that answers (acks) a group's requests only after the
    /// commit pays for one durable commit per group instead of one per call. Without a
    /// group every call is durable when it returns. The default does nothing (a store
    /// without durability, like the memory store).
    fn begin_group(&mut self) -> Result<(), ServerStoreError> {
        Ok(())
    }

    /// Makes every call since [`ServerStore::begin_group`] durable. On an error none of them
    /// is stored: the host must not acknowledge them. Without an open group it does nothing.
    fn commit_group(&mut self) -> Result<(), ServerStoreError> {
        Ok(())
    }
}
