//! The batch being built: the durable half of an input (its [`WriteOp`]s), the events riding
//! on it, and the batches emitted but not yet committed.
//!
//! Owns what the current input recorded and what waits for a commit: events are released only
//! when the batch holding their data committed, and sends only go on the wire once their
//! outbox entry did. It never decides what to write (the engine records ops and events here),
//! never sees the store (it emits [`Output::Write`] and learns of the commit from the engine),
//! and holds no conversation state of its own: the conversations it writes are passed in.

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};

use crate::model::{ClientMsgId, Conversation, ConversationId, Message};
use crate::output::{Containment, Event, MessageChange, Output};
use crate::seq_ranges::SeqRanges;
use crate::storage::{Applied, BatchId, RefusedChange, WriteBatch, WriteOp};

/// Events and follow-ups waiting for a batch to commit.
#[derive(Debug, Default)]
pub(super) struct PendingCommit {
    /// Released to the app once the batch committed.
    pub(super) events: Vec<Event>,
    /// Sends whose outbox entry is in the batch: they may go on the wire once it committed.
    pub(super) send_after: Vec<ClientMsgId>,
}

/// The batch the current input builds, and the ones waiting for their commit.
#[derive(Debug)]
pub(super) struct Batches {
    ops: Vec<WriteOp>,
    events: Vec<Event>,
    send_after: Vec<ClientMsgId>,
    /// Conversations whose record changed: written (and announced) when the batch is emitted.
    changed: BTreeSet<ConversationId>,
    /// New messages released by dispatch, announced first.
    received: BTreeMap<ConversationId, Vec<Message>>,
    /// The total unread count last announced.
    announced_total_unread: u64,
    next_batch: u64,
    uncommitted: VecDeque<(BatchId, PendingCommit)>,
}

impl Batches {
    /// Nothing recorded yet. `changed` are conversations the engine already altered while
    /// starting (healed unread counts); `total_unread` is what the app is taken to know.
    pub(super) fn new(changed: BTreeSet<ConversationId>, total_unread: u64) -> Self {
        Self {
            ops: Vec::new(),
            events: Vec::new(),
            send_after: Vec::new(),
            changed,
            received: BTreeMap::new(),
            announced_total_unread: total_unread,
            next_batch: 1,
            uncommitted: VecDeque::new(),
        }
    }

    /// Records a write.
    pub(super) fn op(&mut self, op: WriteOp) {
        self.ops.push(op);
    }

    /// Records writes, in order.
    pub(super) fn ops(&mut self, ops: impl IntoIterator<Item = WriteOp>) {
        self.ops.extend(ops);
    }

    /// Records an event, released when the batch commits.
    pub(super) fn event(&mut self, event: Event) {
        self.events.push(event);
    }

    /// The record of conversation `id` changed: it is written with this batch.
    pub(super) fn touch(&mut self, id: &ConversationId) {
        // Called per message: copy the id only the first time.
        if !self.changed.contains(id) {
            self.changed.insert(id.clone());
        }
    }

    /// `id`'s outbox entry is in this batch: it may be sent once the batch committed.
    pub(super) fn send_after_commit(&mut self, id: ClientMsgId) {
        self.send_after.push(id);
    }

    /// Announces `message` as new in conversation `id`.
    pub(super) fn announce(&mut self, id: &ConversationId, message: Message) {
        // Called per message: copy the id only for the conversation's first.
        match self.received.get_mut(id) {
            Some(messages) => messages.push(message),
            None => {
                self.received.insert(id.clone(), vec![message]);
            }
        }
    }

    /// Takes back the announcements this input queued for messages it then deleted (a floor
    /// raised twice in one max-seq page, a deletion after a release): their rows are gone
    /// when the batch commits, so announcing them would send the app to a missing row.
    pub(super) fn unannounce(&mut self, id: &ConversationId, seqs: &SeqRanges) {
        if let Some(messages) = self.received.get_mut(id) {
            messages.retain(|m| m.seq.is_none_or(|s| !seqs.contains(s)));
        }
    }

    /// Turns what the current input recorded into one [`Output::Write`] carrying its events,
    /// pushed to `outputs`. The changed conversations are written as `conversations` holds
    /// them; `total_unread` is announced if it moved.
    pub(super) fn emit(
        &mut self,
        conversations: &HashMap<ConversationId, Conversation>,
        total_unread: u64,
        outputs: &mut VecDeque<Output>,
    ) {
        let changed = std::mem::take(&mut self.changed);
        let mut changed_ids = Vec::with_capacity(changed.len());
        for id in changed {
            if let Some(conv) = conversations.get(&id) {
                self.ops.push(WriteOp::PutConversation(conv.clone()));
                changed_ids.push(id);
            }
        }
        // New messages first, then what they changed in the list, then progress and state.
        let mut ordered: Vec<Event> = std::mem::take(&mut self.received)
            .into_iter()
            .filter(|(_, messages)| !messages.is_empty())
            .map(|(conversation, messages)| Event::MessagesReceived {
                conversation,
                messages,
            })
            .collect();
        ordered.append(&mut self.events);
        if !changed_ids.is_empty() {
            ordered.push(Event::ConversationsChanged {
                conversations: changed_ids,
            });
        }
        if total_unread != self.announced_total_unread {
            self.announced_total_unread = total_unread;
            ordered.push(Event::TotalUnreadChanged {
                total: total_unread,
            });
        }
        let send_after = std::mem::take(&mut self.send_after);
        if !self.ops.is_empty() {
            let id = BatchId(self.next_batch);
            self.next_batch += 1;
            let batch = WriteBatch {
                ops: std::mem::take(&mut self.ops),
            };
            outputs.push_back(Output::Write(id, batch));
            self.uncommitted.push_back((
                id,
                PendingCommit {
                    events: ordered,
                    send_after,
                },
            ));
        } else if let Some((_, last)) = self.uncommitted.back_mut() {
            // Nothing new to write, but what the events speak of may still be in flight.
            last.events.extend(ordered);
            last.send_after.extend(send_after);
        } else {
            outputs.extend(ordered.into_iter().map(Output::Event));
        }
    }

    /// Batch `id` committed with `applied`: what waited for it, with the update events of
    /// changes the store refused turned into containment events. `None` when `id` is not the
    /// oldest uncommitted batch (batches commit in order; anything else is a driver bug,
    /// ignored rather than releasing events for data that may not be durable).
    pub(super) fn committed(&mut self, id: BatchId, applied: &Applied) -> Option<PendingCommit> {
        if self.uncommitted.front().map(|(b, _)| *b) != Some(id) {
            return None;
        }
        let (_, mut pending) = self.uncommitted.pop_front()?;
        for refused in &applied.refused_changes {
            refuse_change_event(&mut pending.events, refused);
        }
        Some(pending)
    }

    /// Forgets the batches waiting for their commit (the engine stopped).
    pub(super) fn forget_uncommitted(&mut self) {
        self.uncommitted.clear();
    }

    /// Whether a batch waits for its commit.
    pub(super) fn has_uncommitted(&self) -> bool {
        !self.uncommitted.is_empty()
    }
}

/// Turns the update event of a change the store refused into its containment event. Two
/// identical revokes of one target in one batch produce identical events, so which of them
/// is turned does not matter.
fn refuse_change_event(events: &mut [Event], refused: &RefusedChange) {
    let found = events.iter_mut().find(|e| match e {
        Event::MessageUpdated {
            conversation,
            seq,
            change,
        } => {
            conversation == &refused.conversation
                && *seq == refused.target
                && match change {
                    MessageChange::Edited { edit_seq, .. } => *edit_seq == refused.change_seq,
                    MessageChange::Revoked => true,
                }
        }
        _ => false,
    });
    if let Some(event) = found {
        *event = Event::MessageContained {
            conversation: refused.conversation.clone(),
            seq: refused.change_seq,
            containment: Containment::ChangeRefused {
                target: refused.target,
            },
        };
    }
}
