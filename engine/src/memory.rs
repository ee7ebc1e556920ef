//! [`MemoryStorage`]: the reference in-memory [`Storage`].
//!
//! It is the executable statement of the storage contract: other backends are checked against
//! the same conformance suite, and the engine's own tests run on it. Clones share one store,
//! so a test can "crash" an engine (drop it) and start a new one on the same data.
//!
//! Atomicity is kept with an undo log: every mutation of a batch records the value it
//! replaced, and a failing op rolls the recorded changes back in reverse. That costs
//! proportionally to the batch, not to the store, so large sync tests stay fast.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::ops::Bound;
use std::sync::{Arc, Mutex, MutexGuard};

use crate::model::{
    ClientMsgId, Conversation, ConversationId, Message, OutboxEntry, PendingChange, Seq, Timestamp,
    UserId,
};
use crate::protocol::SyncToken;
use crate::seq_ranges::SeqRanges;
use crate::storage::{
    may_change, merge_put, Applied, ConversationCursor, Direction, RefusedChange, Storage,
    StorageError, SyncSnapshot, WriteBatch, WriteOp,
};

/// The reference in-memory [`Storage`]. Cheap to clone; clones share the same state.
///
/// Merge rules of [`WriteOp::PutMessages`] (the trait leaves some of them to the backend):
/// rows are keyed by (conversation, sender, client id);
/// - a message at a tombstoned seq is not stored (the tombstone wins);
/// - a message whose seq is held by a row of another (sender, client id) rejects the batch,
///   and so does a (sender, client id) already stored at a different seq;
/// - a row without a seq (pending or failed) is replaced by the incoming message, so a
///   pending send becomes the sent row when its ack or echo arrives;
/// - a row with a seq is never downgraded by a message without one, and keeps its fields when
///   the same message is put again, except that an incoming revoke or newer edit is applied
///   (so re-pulling an edited message does not undo the edit).
#[derive(Clone, Default)]
pub struct MemoryStorage {
    inner: Arc<Mutex<Inner>>,
}

impl fmt::Debug for MemoryStorage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The whole store can be large: say only what it holds.
        match self.inner.lock() {
            Ok(inner) => f
                .debug_struct("MemoryStorage")
                .field("conversations", &inner.state.conversations.len())
                .field("outbox", &inner.state.outbox.len())
                .field("applied_batches", &inner.applied)
                .finish_non_exhaustive(),
            Err(_) => f.write_str("MemoryStorage { <poisoned> }"),
        }
    }
}

#[derive(Default)]
struct Inner {
    state: State,
    /// Apply calls still to fail (fault injection).
    fail_applies: usize,
    /// Snapshot loads still to fail (fault injection).
    fail_loads: usize,
    /// Gates the next applies wait on (fault injection): each, once opened, lets its apply
    /// go on (`true`) or fails it (`false`).
    held_applies: std::collections::VecDeque<futures::channel::oneshot::Receiver<bool>>,
    /// Batches committed so far.
    applied: u64,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
struct State {
    conversations: BTreeMap<ConversationId, Conversation>,
    /// The conversation list order: newest activity first, then id ascending.
    list: BTreeSet<(Reverse<Timestamp>, ConversationId)>,
    messages: BTreeMap<ConversationId, ConvMessages>,
    tombstones: BTreeMap<ConversationId, SeqRanges>,
    outbox: BTreeMap<ClientMsgId, OutboxEntry>,
    pending_changes: BTreeMap<(ConversationId, Seq), PendingChange>,
    sync_token: Option<SyncToken>,
}

/// A row's key within its conversation: client ids are unique per (sender, conversation)
/// only. Ordered by client id first, so the rows of one client id are one range.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
struct MsgKey {
    client_msg_id: ClientMsgId,
    sender: UserId,
}

impl MsgKey {
    fn of(m: &Message) -> Self {
        Self {
            client_msg_id: m.client_msg_id.clone(),
            sender: m.sender.clone(),
        }
    }
}

/// One conversation's messages: rows by (client id, sender), plus an index of the rows with
/// a seq.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
struct ConvMessages {
    rows: BTreeMap<MsgKey, Message>,
    by_seq: BTreeMap<Seq, MsgKey>,
}

impl ConvMessages {
    fn at_seq(&self, seq: Seq) -> Option<&Message> {
        self.by_seq.get(&seq).and_then(|id| self.rows.get(id))
    }

    /// Every row with this client id, whatever its sender.
    fn with_client_id<'a>(&'a self, id: &ClientMsgId) -> impl Iterator<Item = &'a Message> + 'a {
        let start = MsgKey {
            client_msg_id: id.clone(),
            sender: UserId::from(""),
        };
        let id = id.clone();
        self.rows
            .range(start..)
            .take_while(move |(k, _)| k.client_msg_id == id)
            .map(|(_, m)| m)
    }
}

/// What a mutation replaced, to undo it.
enum Undo {
    Conversation(ConversationId, Option<Conversation>),
    Message(ConversationId, MsgKey, Option<Message>),
    Tombstones(ConversationId, Option<SeqRanges>),
    Outbox(ClientMsgId, Option<OutboxEntry>),
    PendingChange((ConversationId, Seq), Option<PendingChange>),
    SyncToken(Option<SyncToken>),
}

impl State {
    // The raw setters keep the indexes (`list`, `by_seq`) consistent and return what they
    // replaced; both forward changes and rollback go through them.

    fn set_conversation(
        &mut self,
        id: ConversationId,
        value: Option<Conversation>,
    ) -> Option<Conversation> {
        let prev = self.conversations.remove(&id);
        if let Some(p) = &prev {
            self.list.remove(&(Reverse(p.last_activity), id.clone()));
        }
        if let Some(c) = value {
            self.list.insert((Reverse(c.last_activity), id.clone()));
            self.conversations.insert(id, c);
        }
        prev
    }

    fn set_message(
        &mut self,
        conversation: ConversationId,
        id: MsgKey,
        value: Option<Message>,
    ) -> Option<Message> {
        let entry = self.messages.entry(conversation.clone()).or_default();
        let prev = entry.rows.remove(&id);
        if let Some(seq) = prev.as_ref().and_then(|p| p.seq) {
            if entry.by_seq.get(&seq) == Some(&id) {
                entry.by_seq.remove(&seq);
            }
        }
        if let Some(m) = value {
            if let Some(seq) = m.seq {
                entry.by_seq.insert(seq, id.clone());
            }
            entry.rows.insert(id, m);
        }
        if entry.rows.is_empty() {
            // Keep the state canonical so a rolled-back batch compares equal to before.
            self.messages.remove(&conversation);
        }
        prev
    }

    fn set_tombstones(
        &mut self,
        conversation: ConversationId,
        value: Option<SeqRanges>,
    ) -> Option<SeqRanges> {
        match value {
            Some(v) => self.tombstones.insert(conversation, v),
            None => self.tombstones.remove(&conversation),
        }
    }

    fn set_outbox(&mut self, id: ClientMsgId, value: Option<OutboxEntry>) -> Option<OutboxEntry> {
        match value {
            Some(v) => self.outbox.insert(id, v),
            None => self.outbox.remove(&id),
        }
    }

    fn set_pending_change(
        &mut self,
        key: (ConversationId, Seq),
        value: Option<PendingChange>,
    ) -> Option<PendingChange> {
        match value {
            Some(v) => self.pending_changes.insert(key, v),
            None => self.pending_changes.remove(&key),
        }
    }

    fn outbox_oldest_first(&self) -> Vec<OutboxEntry> {
        let mut out: Vec<OutboxEntry> = self.outbox.values().cloned().collect();
        out.sort_by(|a, b| (a.created_at, &a.client_msg_id).cmp(&(b.created_at, &b.client_msg_id)));
        out
    }
}

/// One batch being applied, with the undo log that makes it atomic.
struct Tx<'a> {
    state: &'a mut State,
    undo: Vec<Undo>,
    applied: Applied,
}

impl<'a> Tx<'a> {
    fn new(state: &'a mut State) -> Self {
        Self {
            state,
            undo: Vec::new(),
            applied: Applied::default(),
        }
    }

    /// The stored message at `target`, unless the change's `sender` may not change it (then
    /// the change is reported as refused).
    fn change_target(
        &mut self,
        conversation: &ConversationId,
        target: Seq,
        change_seq: Seq,
        sender: &UserId,
    ) -> Option<Message> {
        let old = self
            .state
            .messages
            .get(conversation)
            .and_then(|c| c.at_seq(target))?;
        if !may_change(&old.sender, sender) {
            self.applied.refused_changes.push(RefusedChange {
                conversation: conversation.clone(),
                target,
                change_seq,
            });
            return None;
        }
        Some(old.clone())
    }

    fn rollback(self) {
        let state = self.state;
        for undo in self.undo.into_iter().rev() {
            match undo {
                Undo::Conversation(id, v) => {
                    state.set_conversation(id, v);
                }
                Undo::Message(conv, id, v) => {
                    state.set_message(conv, id, v);
                }
                Undo::Tombstones(conv, v) => {
                    state.set_tombstones(conv, v);
                }
                Undo::Outbox(id, v) => {
                    state.set_outbox(id, v);
                }
                Undo::SyncToken(v) => {
                    state.sync_token = v;
                }
                Undo::PendingChange(key, v) => {
                    state.set_pending_change(key, v);
                }
            }
        }
    }

    fn set_message(&mut self, conv: &ConversationId, id: &MsgKey, value: Option<Message>) {
        let prev = self.state.set_message(conv.clone(), id.clone(), value);
        self.undo
            .push(Undo::Message(conv.clone(), id.clone(), prev));
    }

    fn apply(&mut self, op: WriteOp) -> Result<(), StorageError> {
        match op {
            WriteOp::PutConversation(conv) => {
                let id = conv.id.clone();
                let prev = self.state.set_conversation(id.clone(), Some(conv));
                self.undo.push(Undo::Conversation(id, prev));
            }
            WriteOp::PutMessages(messages) => {
                for m in messages {
                    self.put_message(m)?;
                }
            }
            WriteOp::EditMessage {
                conversation,
                target,
                edit_seq,
                sender,
                content,
            } => {
                // A missing target is a no-op: the engine only edits what it holds. A revoked
                // row or a newer edit wins.
                if let Some(mut m) = self
                    .change_target(&conversation, target, edit_seq, &sender)
                    .filter(|m| !m.revoked && m.edit_seq.is_none_or(|e| e < edit_seq))
                {
                    m.content = content;
                    m.edit_seq = Some(edit_seq);
                    let id = MsgKey::of(&m);
                    self.set_message(&conversation, &id, Some(m));
                }
            }
            WriteOp::RevokeMessage {
                conversation,
                target,
                revoke_seq,
                sender,
            } => {
                if let Some(mut m) = self.change_target(&conversation, target, revoke_seq, &sender)
                {
                    m.content.clear();
                    m.revoked = true;
                    let id = MsgKey::of(&m);
                    self.set_message(&conversation, &id, Some(m));
                }
            }
            WriteOp::PutTombstones { conversation, seqs } => {
                if seqs.is_empty() {
                    return Ok(());
                }
                let victims: Vec<MsgKey> = match self.state.messages.get(&conversation) {
                    Some(c) => seqs
                        .ranges()
                        .iter()
                        .flat_map(|r| c.by_seq.range(r.start..=r.end).map(|(_, id)| id.clone()))
                        .collect(),
                    None => Vec::new(),
                };
                for id in victims {
                    self.set_message(&conversation, &id, None);
                }
                let mut all = self
                    .state
                    .tombstones
                    .get(&conversation)
                    .cloned()
                    .unwrap_or_default();
                all.union_with(&seqs);
                let prev = self.state.set_tombstones(conversation.clone(), Some(all));
                self.undo.push(Undo::Tombstones(conversation, prev));
            }
            WriteOp::DeletePendingMessage {
                conversation,
                client_msg_id,
            } => {
                // Every unsent row with this client id (they are this device's own sends).
                let unsent: Vec<MsgKey> = self
                    .state
                    .messages
                    .get(&conversation)
                    .map(|c| {
                        c.with_client_id(&client_msg_id)
                            .filter(|m| m.seq.is_none())
                            .map(MsgKey::of)
                            .collect()
                    })
                    .unwrap_or_default();
                for key in unsent {
                    self.set_message(&conversation, &key, None);
                }
            }
            WriteOp::PutOutbox(entry) => {
                let id = entry.client_msg_id.clone();
                let prev = self.state.set_outbox(id.clone(), Some(entry));
                self.undo.push(Undo::Outbox(id, prev));
            }
            WriteOp::RemoveOutbox(id) => {
                let prev = self.state.set_outbox(id.clone(), None);
                self.undo.push(Undo::Outbox(id, prev));
            }
            WriteOp::PutPendingChange(change) => {
                let key = (change.conversation.clone(), change.seq);
                let prev = self.state.set_pending_change(key.clone(), Some(change));
                self.undo.push(Undo::PendingChange(key, prev));
            }
            WriteOp::RemovePendingChange { conversation, seq } => {
                let key = (conversation, seq);
                let prev = self.state.set_pending_change(key.clone(), None);
                self.undo.push(Undo::PendingChange(key, prev));
            }
            WriteOp::PutSyncToken(token) => {
                let prev = std::mem::replace(&mut self.state.sync_token, token);
                self.undo.push(Undo::SyncToken(prev));
            }
        }
        Ok(())
    }

    fn put_message(&mut self, m: Message) -> Result<(), StorageError> {
        let conv = m.conversation.clone();
        let tombstoned = m.seq.is_some_and(|seq| {
            self.state
                .tombstones
                .get(&conv)
                .is_some_and(|t| t.contains(seq))
        });
        let rows = self.state.messages.get(&conv);
        let holder = m
            .seq
            .and_then(|seq| rows.and_then(|r| r.by_seq.get(&seq)))
            .map(|k| (&k.sender, &k.client_msg_id));
        let key = MsgKey::of(&m);
        let existing = rows.and_then(|r| r.rows.get(&key));
        if let Some(merged) = merge_put(existing, holder, tombstoned, m)? {
            self.set_message(&conv, &key, Some(merged));
        }
        Ok(())
    }
}

impl MemoryStorage {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    // Test support: behind the `testing` feature, so an app cannot call it by mistake.
    #[cfg(any(test, feature = "testing"))]
    /// Fault injection: the next `n` calls to [`Storage::apply`] return
    /// [`StorageError::Backend`] and change nothing. Replaces any count still pending.
    pub fn fail_next_applies(&self, n: usize) {
        self.lock_recovering().fail_applies = n;
    }

    // Test support: behind the `testing` feature, so an app cannot call it by mistake.
    #[cfg(any(test, feature = "testing"))]
    /// Fault injection: the next [`Storage::apply`] not yet held waits, as a store writing on
    /// a thread of its own does, until the returned sender is used: `true` lets it apply,
    /// `false` (or dropping the sender) fails it with [`StorageError::Backend`], changing
    /// nothing. Each call holds one more apply, in order.
    pub fn hold_next_apply(&self) -> futures::channel::oneshot::Sender<bool> {
        let (open, gate) = futures::channel::oneshot::channel();
        self.lock_recovering().held_applies.push_back(gate);
        open
    }

    // Test support: behind the `testing` feature, so an app cannot call it by mistake.
    #[cfg(any(test, feature = "testing"))]
    /// Fault injection: the next `n` calls to [`Storage::load_snapshot`] return
    /// [`StorageError::Backend`]. Replaces any count still pending.
    pub fn fail_next_loads(&self, n: usize) {
        self.lock_recovering().fail_loads = n;
    }

    // Test support: behind the `testing` feature, so an app cannot call it by mistake.
    #[cfg(any(test, feature = "testing"))]
    /// How many batches have committed, so a test can aim a fault at a commit boundary.
    pub fn applied_batches(&self) -> u64 {
        self.lock_recovering().applied
    }

    // Test support: behind the `testing` feature, so an app cannot call it by mistake.
    #[cfg(any(test, feature = "testing"))]
    /// Every stored message of a conversation, sent or not: those with a seq ascending, then
    /// the unsent ones oldest first. For invariant checks in tests.
    pub fn all_messages(&self, conversation: &ConversationId) -> Vec<Message> {
        let inner = self.lock_recovering();
        let Some(c) = inner.state.messages.get(conversation) else {
            return Vec::new();
        };
        let mut out: Vec<Message> = c
            .by_seq
            .values()
            .filter_map(|id| c.rows.get(id).cloned())
            .collect();
        out.extend(unsent(c));
        out
    }

    fn lock(&self) -> Result<MutexGuard<'_, Inner>, StorageError> {
        // A panic while holding the lock may have left a batch half applied: refuse to go on.
        self.inner.lock().map_err(|_| StorageError::Backend {
            detail: "memory store lock poisoned by a panic".to_owned(),
            source: None,
        })
    }

    /// For the test hooks, which only touch counters and read.
    #[cfg(any(test, feature = "testing"))]
    fn lock_recovering(&self) -> MutexGuard<'_, Inner> {
        self.inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn apply_sync(&self, batch: WriteBatch) -> Result<Applied, StorageError> {
        let mut inner = self.lock()?;
        if inner.fail_applies > 0 {
            inner.fail_applies -= 1;
            return Err(injected("apply"));
        }
        let mut tx = Tx::new(&mut inner.state);
        for op in batch.ops {
            if let Err(e) = tx.apply(op) {
                tx.rollback();
                return Err(e);
            }
        }
        let applied = std::mem::take(&mut tx.applied);
        drop(tx);
        inner.applied += 1;
        Ok(applied)
    }

    fn load_snapshot_sync(&self) -> Result<SyncSnapshot, StorageError> {
        let mut inner = self.lock()?;
        if inner.fail_loads > 0 {
            inner.fail_loads -= 1;
            return Err(injected("load_snapshot"));
        }
        let state = &inner.state;
        Ok(SyncSnapshot {
            conversations: state.conversations.values().cloned().collect(),
            outbox: state.outbox_oldest_first(),
            pending_changes: state.pending_changes.values().cloned().collect(),
            sync_token: state.sync_token.clone(),
        })
    }

    fn conversations_page_sync(
        &self,
        after: Option<ConversationCursor>,
        limit: usize,
    ) -> Result<Vec<Conversation>, StorageError> {
        let inner = self.lock()?;
        let state = &inner.state;
        let start = match after {
            Some(c) => Bound::Excluded((Reverse(c.last_activity), c.id)),
            None => Bound::Unbounded,
        };
        Ok(state
            .list
            .range((start, Bound::Unbounded))
            .take(limit)
            .filter_map(|(_, id)| state.conversations.get(id).cloned())
            .collect())
    }

    fn messages_page_sync(
        &self,
        conversation: &ConversationId,
        anchor: Option<Seq>,
        direction: Direction,
        limit: usize,
    ) -> Result<Vec<Message>, StorageError> {
        let inner = self.lock()?;
        let Some(c) = inner.state.messages.get(conversation) else {
            return Ok(Vec::new());
        };
        let range = match (direction, anchor) {
            (Direction::Before, Some(a)) => (Bound::Unbounded, Bound::Excluded(a)),
            (Direction::After, Some(a)) => (Bound::Excluded(a), Bound::Unbounded),
            (_, None) => (Bound::Unbounded, Bound::Unbounded),
        };
        let ids = c.by_seq.range(range);
        let mut out: Vec<Message> = match direction {
            Direction::Before => ids
                .rev()
                .take(limit)
                .filter_map(|(_, id)| c.rows.get(id).cloned())
                .collect(),
            Direction::After => ids
                .take(limit)
                .filter_map(|(_, id)| c.rows.get(id).cloned())
                .collect(),
        };
        if direction == Direction::Before {
            out.reverse();
        }
        Ok(out)
    }
}

/// Rows without a seq, oldest first (ties by client id).
fn unsent(c: &ConvMessages) -> Vec<Message> {
    let mut out: Vec<Message> = c
        .rows
        .values()
        .filter(|m| m.seq.is_none())
        .cloned()
        .collect();
    out.sort_by(|a, b| {
        (a.created_at, &a.client_msg_id, &a.sender).cmp(&(
            b.created_at,
            &b.client_msg_id,
            &b.sender,
        ))
    });
    out
}

fn injected(what: &str) -> StorageError {
    StorageError::Backend {
        detail: format!("injected {what} failure"),
        source: None,
    }
}

// The bodies are synchronous: the lock is never held across an await.
#[cfg_attr(target_family = "wasm", async_trait::async_trait(?Send))]
#[cfg_attr(not(target_family = "wasm"), async_trait::async_trait)]
impl Storage for MemoryStorage {
    async fn load_snapshot(&self) -> Result<SyncSnapshot, StorageError> {
        self.load_snapshot_sync()
    }

    async fn apply(&self, batch: WriteBatch) -> Result<Applied, StorageError> {
        let held = self.lock()?.held_applies.pop_front();
        if let Some(gate) = held {
            if gate.await != Ok(true) {
                return Err(injected("apply"));
            }
        }
        self.apply_sync(batch)
    }

    async fn conversation(
        &self,
        id: &ConversationId,
    ) -> Result<Option<Conversation>, StorageError> {
        Ok(self.lock()?.state.conversations.get(id).cloned())
    }

    async fn conversations_page(
        &self,
        after: Option<ConversationCursor>,
        limit: usize,
    ) -> Result<Vec<Conversation>, StorageError> {
        self.conversations_page_sync(after, limit)
    }

    async fn messages_page(
        &self,
        conversation: &ConversationId,
        anchor: Option<Seq>,
        direction: Direction,
        limit: usize,
    ) -> Result<Vec<Message>, StorageError> {
        self.messages_page_sync(conversation, anchor, direction, limit)
    }

    async fn message_by_client_id(
        &self,
        conversation: &ConversationId,
        sender: &UserId,
        client_msg_id: &ClientMsgId,
    ) -> Result<Option<Message>, StorageError> {
        let key = MsgKey {
            client_msg_id: client_msg_id.clone(),
            sender: sender.clone(),
        };
        Ok(self
            .lock()?
            .state
            .messages
            .get(conversation)
            .and_then(|c| c.rows.get(&key))
            .cloned())
    }

    async fn unsent_messages(
        &self,
        conversation: &ConversationId,
    ) -> Result<Vec<Message>, StorageError> {
        Ok(self
            .lock()?
            .state
            .messages
            .get(conversation)
            .map(unsent)
            .unwrap_or_default())
    }

    async fn total_unread(&self) -> Result<u64, StorageError> {
        Ok(self
            .lock()?
            .state
            .conversations
            .values()
            .fold(0u64, |acc, c| acc.saturating_add(c.unread)))
    }

    async fn outbox(&self) -> Result<Vec<OutboxEntry>, StorageError> {
        Ok(self.lock()?.state.outbox_oldest_first())
    }

    async fn tombstones(&self, conversation: &ConversationId) -> Result<SeqRanges, StorageError> {
        Ok(self
            .lock()?
            .state
            .tombstones
            .get(conversation)
            .cloned()
            .unwrap_or_default())
    }

    async fn check_integrity(&self) -> Result<(), StorageError> {
        self.lock()?
            .state
            .check_integrity()
            .map_err(|detail| StorageError::Corrupt {
                detail,
                source: None,
            })
    }
}

impl State {
    fn check_integrity(&self) -> Result<(), String> {
        let listed: BTreeSet<(Reverse<Timestamp>, ConversationId)> = self
            .conversations
            .values()
            .map(|c| (Reverse(c.last_activity), c.id.clone()))
            .collect();
        if listed != self.list {
            return Err("conversation list index disagrees with the conversations".to_owned());
        }
        for (conv, msgs) in &self.messages {
            let held = self.conversations.get(conv).map(|c| &c.held);
            let tombstones = self.tombstones.get(conv);
            for (seq, id) in &msgs.by_seq {
                if msgs.rows.get(id).and_then(|m| m.seq) != Some(*seq) {
                    return Err(format!(
                        "{conv}: seq index {} points at the wrong row",
                        seq.0
                    ));
                }
                if held.is_none_or(|h| !h.contains(*seq)) {
                    return Err(format!(
                        "{conv}: message at seq {} is not within the held ranges",
                        seq.0
                    ));
                }
                if tombstones.is_some_and(|t| t.contains(*seq)) {
                    return Err(format!("{conv}: message at tombstoned seq {}", seq.0));
                }
            }
            for (key, m) in &msgs.rows {
                let id = &key.client_msg_id;
                if &MsgKey::of(m) != key || &m.conversation != conv {
                    return Err(format!("{conv}: row {id} is keyed wrongly"));
                }
                if let Some(seq) = m.seq {
                    if msgs.by_seq.get(&seq) != Some(key) {
                        return Err(format!(
                            "{conv}: row {id} at seq {} is missing from the seq index",
                            seq.0
                        ));
                    }
                }
            }
        }
        for entry in self.outbox.values() {
            let unsent = self.messages.get(&entry.conversation).is_some_and(|c| {
                c.with_client_id(&entry.client_msg_id)
                    .any(|m| m.seq.is_none())
            });
            if !unsent {
                return Err(format!(
                    "outbox entry {} has no unsent row",
                    entry.client_msg_id
                ));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{ContentKind, ConversationKind, MessageStatus, UserId};
    use futures::executor::block_on;

    fn cid(s: &str) -> ConversationId {
        ConversationId::from(s)
    }

    fn pending(conv: &str, id: &str, at: u64) -> Message {
        Message {
            conversation: cid(conv),
            seq: None,
            client_msg_id: ClientMsgId::from(id),
            sender: UserId::from("me"),
            kind: ContentKind::Text,
            content: format!("body {id}").into_bytes(),
            created_at: Timestamp(at),
            server_time: None,
            status: MessageStatus::Pending,
            edit_seq: None,
            revoked: false,
        }
    }

    fn sent(conv: &str, id: &str, seq: u64) -> Message {
        Message {
            seq: Some(Seq(seq)),
            server_time: Some(Timestamp(1000 + seq)),
            status: MessageStatus::Sent,
            ..pending(conv, id, seq)
        }
    }

    fn conversation(id: &str, activity: u64, unread: u64) -> Conversation {
        Conversation {
            last_activity: Timestamp(activity),
            unread,
            ..Conversation::new(cid(id), ConversationKind::Group)
        }
    }

    fn batch(ops: Vec<WriteOp>) -> WriteBatch {
        WriteBatch { ops }
    }

    fn apply(store: &MemoryStorage, ops: Vec<WriteOp>) -> Result<Applied, StorageError> {
        block_on(store.apply(batch(ops)))
    }

    fn state(store: &MemoryStorage) -> State {
        store.inner.lock().unwrap().state.clone()
    }

    fn seqs_of(messages: &[Message]) -> Vec<u64> {
        messages.iter().map(|m| m.seq.unwrap().0).collect()
    }

    #[test]
    fn pending_becomes_sent_row_on_echo() {
        let store = MemoryStorage::new();
        let p = pending("c", "m1", 5);
        apply(&store, vec![WriteOp::PutMessages(vec![p.clone()])]).unwrap();
        let unsent = block_on(store.unsent_messages(&cid("c"))).unwrap();
        assert_eq!(unsent, vec![p.clone()]);

        let mut echo = sent("c", "m1", 7);
        echo.created_at = p.created_at;
        apply(&store, vec![WriteOp::PutMessages(vec![echo.clone()])]).unwrap();

        let all = store.all_messages(&cid("c"));
        assert_eq!(all, vec![echo.clone()], "one row, now sent");
        assert!(block_on(store.unsent_messages(&cid("c")))
            .unwrap()
            .is_empty());
        let by_id = block_on(store.message_by_client_id(
            &cid("c"),
            &UserId::from("me"),
            &ClientMsgId::from("m1"),
        ));
        assert_eq!(by_id.unwrap(), Some(echo));

        // A late seq-less put (say a stale failure) never downgrades the sent row.
        let mut failed = p;
        failed.status = MessageStatus::Failed {
            reason: "late".into(),
        };
        apply(&store, vec![WriteOp::PutMessages(vec![failed])]).unwrap();
        assert_eq!(store.all_messages(&cid("c"))[0].seq, Some(Seq(7)));
    }

    #[test]
    fn reapplying_a_batch_changes_nothing() {
        let store = MemoryStorage::new();
        let ops = vec![
            WriteOp::PutConversation(conversation("c", 10, 2)),
            WriteOp::PutMessages(vec![sent("c", "a", 1), sent("c", "b", 2)]),
            WriteOp::PutTombstones {
                conversation: cid("c"),
                seqs: SeqRanges::from_range(Seq(3), Seq(4)),
            },
            WriteOp::EditMessage {
                conversation: cid("c"),
                target: Seq(1),
                edit_seq: Seq(5),
                sender: UserId::from("me"),
                content: b"edited".to_vec(),
            },
            WriteOp::PutOutbox(OutboxEntry {
                conversation: cid("c"),
                client_msg_id: ClientMsgId::from("o"),
                kind: ContentKind::Text,
                content: vec![1],
                created_at: Timestamp(3),
                attempts: 0,
            }),
            WriteOp::PutPendingChange(PendingChange {
                conversation: cid("c"),
                seq: Seq(9),
                target: Seq(8),
                sender: UserId::from("me"),
                kind: ContentKind::Revoke { target: Seq(8) },
                content: Vec::new(),
            }),
        ];
        apply(&store, ops.clone()).unwrap();
        let once = state(&store);
        apply(&store, ops).unwrap();
        assert_eq!(state(&store), once);
        // The edit survived the re-put of the original message.
        let first = &store.all_messages(&cid("c"))[0];
        assert_eq!(first.content, b"edited");
        assert_eq!(first.edit_seq, Some(Seq(5)));
    }

    #[test]
    fn rejected_batch_changes_nothing() {
        let store = MemoryStorage::new();
        apply(&store, vec![WriteOp::PutMessages(vec![sent("c", "a", 1)])]).unwrap();
        let before = state(&store);
        let applied = store.applied_batches();

        let err = apply(
            &store,
            vec![
                WriteOp::PutConversation(conversation("c", 10, 1)),
                WriteOp::PutOutbox(OutboxEntry {
                    conversation: cid("c"),
                    client_msg_id: ClientMsgId::from("o"),
                    kind: ContentKind::Text,
                    content: Vec::new(),
                    created_at: Timestamp(1),
                    attempts: 0,
                }),
                WriteOp::PutTombstones {
                    conversation: cid("c"),
                    seqs: SeqRanges::from_range(Seq(5), Seq(5)),
                },
                WriteOp::PutMessages(vec![sent("c", "b", 2), sent("c", "other", 1)]),
            ],
        )
        .unwrap_err();
        assert!(matches!(err, StorageError::Rejected(_)), "{err:?}");
        assert_eq!(state(&store), before);
        assert_eq!(store.applied_batches(), applied);

        // The same client id at a second seq is rejected too.
        let err = apply(&store, vec![WriteOp::PutMessages(vec![sent("c", "a", 2)])]).unwrap_err();
        assert!(matches!(err, StorageError::Rejected(_)));
        assert_eq!(state(&store), before);
    }

    #[test]
    fn conflict_within_one_put_is_rejected() {
        let store = MemoryStorage::new();
        let err = apply(
            &store,
            vec![WriteOp::PutMessages(vec![
                sent("c", "a", 1),
                sent("c", "b", 1),
            ])],
        )
        .unwrap_err();
        assert!(matches!(err, StorageError::Rejected(_)));
        assert_eq!(state(&store), State::default());
    }

    #[test]
    fn a_held_apply_waits_for_its_gate_and_a_closed_one_changes_nothing() {
        let store = MemoryStorage::new();
        let (fail, pass) = (store.hold_next_apply(), store.hold_next_apply());
        let batch = || WriteBatch {
            ops: vec![WriteOp::PutConversation(conversation("c", 1, 0))],
        };
        let mut first = store.apply(batch());
        let waker = futures::task::noop_waker();
        let mut cx = std::task::Context::from_waker(&waker);
        assert!(first.as_mut().poll(&mut cx).is_pending());
        fail.send(false).unwrap();
        assert!(matches!(block_on(first), Err(StorageError::Backend { .. })));
        assert_eq!(state(&store), State::default());
        pass.send(true).unwrap();
        block_on(store.apply(batch())).unwrap();
        assert_eq!(store.applied_batches(), 1);
    }

    #[test]
    fn injected_failures_change_nothing() {
        let store = MemoryStorage::new();
        store.fail_next_applies(2);
        for _ in 0..2 {
            let err = apply(
                &store,
                vec![WriteOp::PutConversation(conversation("c", 1, 0))],
            );
            assert!(matches!(err, Err(StorageError::Backend { .. })));
        }
        assert_eq!(state(&store), State::default());
        apply(
            &store,
            vec![WriteOp::PutConversation(conversation("c", 1, 0))],
        )
        .unwrap();
        assert_eq!(store.applied_batches(), 1);

        store.fail_next_loads(1);
        assert!(block_on(store.load_snapshot()).is_err());
        assert_eq!(
            block_on(store.load_snapshot()).unwrap().conversations.len(),
            1
        );
    }

    #[test]
    fn tombstone_wins_and_deletes() {
        let store = MemoryStorage::new();
        apply(
            &store,
            vec![WriteOp::PutMessages(vec![
                sent("c", "a", 1),
                sent("c", "b", 2),
                sent("c", "c", 3),
            ])],
        )
        .unwrap();
        apply(
            &store,
            vec![WriteOp::PutTombstones {
                conversation: cid("c"),
                seqs: SeqRanges::from_range(Seq(2), Seq(4)),
            }],
        )
        .unwrap();
        assert_eq!(seqs_of(&store.all_messages(&cid("c"))), vec![1]);
        // A message arriving later at a tombstoned seq is not stored.
        apply(&store, vec![WriteOp::PutMessages(vec![sent("c", "d", 4)])]).unwrap();
        assert_eq!(seqs_of(&store.all_messages(&cid("c"))), vec![1]);
        let t = block_on(store.tombstones(&cid("c"))).unwrap();
        assert_eq!(t, SeqRanges::from_range(Seq(2), Seq(4)));
        assert!(block_on(store.tombstones(&cid("none"))).unwrap().is_empty());
    }

    #[test]
    fn edit_revoke_and_delete_pending() {
        let store = MemoryStorage::new();
        apply(
            &store,
            vec![WriteOp::PutMessages(vec![
                sent("c", "a", 1),
                pending("c", "p", 9),
            ])],
        )
        .unwrap();
        let before = state(&store);
        // Missing targets and sent rows are left alone.
        apply(
            &store,
            vec![
                WriteOp::EditMessage {
                    conversation: cid("c"),
                    target: Seq(7),
                    edit_seq: Seq(8),
                    sender: UserId::from("me"),
                    content: b"x".to_vec(),
                },
                WriteOp::RevokeMessage {
                    conversation: cid("zz"),
                    target: Seq(1),
                    revoke_seq: Seq(8),
                    sender: UserId::from("me"),
                },
                WriteOp::DeletePendingMessage {
                    conversation: cid("c"),
                    client_msg_id: ClientMsgId::from("a"),
                },
            ],
        )
        .unwrap();
        assert_eq!(state(&store), before);

        apply(
            &store,
            vec![
                WriteOp::RevokeMessage {
                    conversation: cid("c"),
                    target: Seq(1),
                    revoke_seq: Seq(10),
                    sender: UserId::from("me"),
                },
                WriteOp::DeletePendingMessage {
                    conversation: cid("c"),
                    client_msg_id: ClientMsgId::from("p"),
                },
            ],
        )
        .unwrap();
        let all = store.all_messages(&cid("c"));
        assert_eq!(all.len(), 1);
        assert!(all[0].revoked && all[0].content.is_empty());
        // Re-putting the original does not bring the content back.
        apply(&store, vec![WriteOp::PutMessages(vec![sent("c", "a", 1)])]).unwrap();
        assert!(store.all_messages(&cid("c"))[0].content.is_empty());
    }

    #[test]
    fn outbox_and_unsent_are_oldest_first() {
        let store = MemoryStorage::new();
        let entry = |id: &str, at: u64| OutboxEntry {
            conversation: cid("c"),
            client_msg_id: ClientMsgId::from(id),
            kind: ContentKind::Text,
            content: Vec::new(),
            created_at: Timestamp(at),
            attempts: 0,
        };
        apply(
            &store,
            vec![
                WriteOp::PutOutbox(entry("z", 1)),
                WriteOp::PutOutbox(entry("b", 2)),
                WriteOp::PutOutbox(entry("a", 2)),
                WriteOp::PutOutbox(entry("gone", 0)),
                WriteOp::RemoveOutbox(ClientMsgId::from("gone")),
                WriteOp::PutMessages(vec![
                    pending("c", "y", 3),
                    pending("c", "x", 3),
                    pending("c", "w", 1),
                ]),
            ],
        )
        .unwrap();
        let ids: Vec<String> = block_on(store.outbox())
            .unwrap()
            .into_iter()
            .map(|e| e.client_msg_id.0)
            .collect();
        assert_eq!(ids, ["z", "a", "b"]);
        let snapshot = block_on(store.load_snapshot()).unwrap();
        assert_eq!(snapshot.outbox, block_on(store.outbox()).unwrap());
        let unsent: Vec<String> = block_on(store.unsent_messages(&cid("c")))
            .unwrap()
            .into_iter()
            .map(|m| m.client_msg_id.0)
            .collect();
        assert_eq!(unsent, ["w", "x", "y"]);
    }

    #[test]
    fn conversation_pages_follow_the_cursor() {
        let store = MemoryStorage::new();
        apply(
            &store,
            vec![
                WriteOp::PutConversation(conversation("b", 5, 1)),
                WriteOp::PutConversation(conversation("a", 5, 2)),
                WriteOp::PutConversation(conversation("c", 9, 3)),
                WriteOp::PutConversation(conversation("d", 1, 4)),
                // Moving "d" to the top replaces its old position.
                WriteOp::PutConversation(conversation("d", 20, 4)),
            ],
        )
        .unwrap();
        let ids =
            |page: Vec<Conversation>| -> Vec<String> { page.into_iter().map(|c| c.id.0).collect() };
        let first = block_on(store.conversations_page(None, 2)).unwrap();
        let cursor = ConversationCursor::after(first.last().unwrap());
        assert_eq!(ids(first), ["d", "c"]);
        let second = block_on(store.conversations_page(Some(cursor), 2)).unwrap();
        let cursor = ConversationCursor::after(second.last().unwrap());
        assert_eq!(ids(second), ["a", "b"]);
        assert!(block_on(store.conversations_page(Some(cursor), 2))
            .unwrap()
            .is_empty());
        assert!(block_on(store.conversations_page(None, 0))
            .unwrap()
            .is_empty());
        // A cursor need not name a stored conversation.
        let cursor = ConversationCursor {
            last_activity: Timestamp(5),
            id: cid("aa"),
        };
        assert_eq!(
            ids(block_on(store.conversations_page(Some(cursor), 10)).unwrap()),
            ["b"]
        );
        assert_eq!(block_on(store.total_unread()).unwrap(), 10);
        assert_eq!(
            block_on(store.load_snapshot()).unwrap().conversations.len(),
            4
        );
    }

    #[test]
    fn message_pages_edges() {
        let store = MemoryStorage::new();
        let c = cid("c");
        assert!(
            block_on(store.messages_page(&c, None, Direction::Before, 10))
                .unwrap()
                .is_empty()
        );
        let mut msgs: Vec<Message> = (1..=10).map(|s| sent("c", &format!("m{s}"), s)).collect();
        msgs.push(pending("c", "p", 50));
        apply(&store, vec![WriteOp::PutMessages(msgs)]).unwrap();

        let page = |anchor: Option<u64>, dir: Direction, limit: usize| {
            seqs_of(&block_on(store.messages_page(&c, anchor.map(Seq), dir, limit)).unwrap())
        };
        assert_eq!(page(None, Direction::Before, 3), vec![8, 9, 10]);
        assert_eq!(page(Some(8), Direction::Before, 3), vec![5, 6, 7]);
        assert_eq!(page(Some(3), Direction::Before, 5), vec![1, 2]);
        assert_eq!(page(Some(1), Direction::Before, 5), Vec::<u64>::new());
        assert_eq!(page(None, Direction::After, 3), vec![1, 2, 3]);
        assert_eq!(page(Some(8), Direction::After, 5), vec![9, 10]);
        assert_eq!(page(Some(10), Direction::After, 5), Vec::<u64>::new());
        assert_eq!(page(Some(0), Direction::After, 2), vec![1, 2]);
        assert_eq!(page(None, Direction::Before, 0), Vec::<u64>::new());
        assert_eq!(
            page(None, Direction::Before, 100).len(),
            10,
            "pending excluded"
        );
    }

    #[test]
    fn clones_share_state() {
        let a = MemoryStorage::new();
        let b = a.clone();
        apply(&a, vec![WriteOp::PutConversation(conversation("c", 1, 0))]).unwrap();
        assert!(block_on(b.conversation(&cid("c"))).unwrap().is_some());
        b.fail_next_applies(1);
        assert!(apply(&a, vec![]).is_err());
        assert!(format!("{a:?}").contains("conversations: 1"));
    }

    #[test]
    fn pending_changes_round_trip() {
        let store = MemoryStorage::new();
        let change = PendingChange {
            conversation: cid("c"),
            seq: Seq(4),
            target: Seq(2),
            sender: UserId::from("me"),
            kind: ContentKind::Edit { target: Seq(2) },
            content: b"new".to_vec(),
        };
        apply(&store, vec![WriteOp::PutPendingChange(change.clone())]).unwrap();
        assert_eq!(
            block_on(store.load_snapshot()).unwrap().pending_changes,
            vec![change]
        );
        apply(
            &store,
            vec![WriteOp::RemovePendingChange {
                conversation: cid("c"),
                seq: Seq(4),
            }],
        )
        .unwrap();
        assert!(block_on(store.load_snapshot())
            .unwrap()
            .pending_changes
            .is_empty());
    }
}
