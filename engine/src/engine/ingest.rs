//! The engine's ingest: applying messages, missing seqs, edits and revokes, read state and
//! unread to the conversations, and routing what follows to the parts (dispatch frontiers,
//! outbox, waiting changes, the batch being built). Coordination code of [`Engine`], with the
//! same rule as the rest of the core: no clock, no I/O, no randomness but the seed's.

use crate::containment::{self, MessageVerdict};
use crate::model::{
    ContentKind, Conversation, ConversationId, ConversationKind, LatestMessage, Message,
    PendingChange, Seq, ServerMessage, Timestamp, UserId,
};
use crate::output::{Containment, Event, MessageChange};
use crate::seq_ranges::SeqRanges;
use crate::storage::{may_change, WriteOp};

use super::Engine;

impl Engine {
    pub(super) fn ensure_conversation(
        &mut self,
        id: &ConversationId,
        kind: Option<ConversationKind>,
    ) {
        if let Some(conv) = self.conversations.get_mut(id) {
            if let Some(kind) = kind {
                if conv.kind != kind {
                    conv.kind = kind;
                    self.batch.touch(id);
                }
            }
            return;
        }
        self.conversations.insert(
            id.clone(),
            Conversation::new(id.clone(), kind.unwrap_or_default()),
        );
        self.dispatch.start(id, Seq(0));
        self.batch.touch(id);
    }

    /// The floor rose to `min_seq`: everything below is gone on the server.
    ///
    /// Does not release waiting messages: the seqs below the floor now count as held, which
    /// may complete the run below a waiting message, but the same input may still delete that
    /// message (a `Push::Deleted` or a pull reply carrying both a floor and missing seqs).
    /// The caller applies the rest of the input, whose `ingest` drops the deleted waiting
    /// entries and then releases, or calls [`Engine::release`] itself.
    pub(super) fn raise_floor(&mut self, id: &ConversationId, min_seq: Seq) {
        let Some(conv) = self.conversations.get_mut(id) else {
            return;
        };
        if min_seq <= conv.server_min_seq {
            return;
        }
        conv.server_min_seq = min_seq;
        self.batch.touch(id);
        if min_seq.0 <= 1 {
            return;
        }
        let below = SeqRanges::from_range(Seq(1), min_seq.prev());
        // Only messages this device held are announced as deleted.
        let mut gone = conv.held.intersect(Seq(1), min_seq.prev());
        for r in conv.deleted.ranges() {
            gone.remove_range(r.start, r.end);
        }
        conv.held.union_with(&below);
        conv.deleted.union_with(&below);
        if conv
            .latest
            .as_ref()
            .and_then(|l| l.seq)
            .is_some_and(|s| s < min_seq)
        {
            conv.latest = None;
        }
        self.batch.op(WriteOp::PutTombstones {
            conversation: id.clone(),
            seqs: below.clone(),
        });
        self.forget_changes_targeting(id, &below);
        self.dispatch.drop_below(id, min_seq);
        self.batch.unannounce(id, &below);
        if !gone.is_empty() {
            self.batch.event(Event::MessagesDeleted {
                conversation: id.clone(),
                seqs: gone,
            });
        }
        self.recompute_unread(id);
    }

    /// Changes whose target no longer exists will never apply: forget them.
    pub(super) fn forget_changes_targeting(&mut self, id: &ConversationId, gone: &SeqRanges) {
        for change in self.pending_changes.forget_targeting(id, gone) {
            self.batch.op(WriteOp::RemovePendingChange {
                conversation: change.conversation,
                seq: change.seq,
            });
        }
    }

    /// Applies messages and known-missing seqs of one conversation: the idempotent heart of
    /// sync. Seqs already held change nothing.
    pub(super) fn ingest(
        &mut self,
        id: &ConversationId,
        mut messages: Vec<ServerMessage>,
        missing: &SeqRanges,
    ) {
        if !self.conversations.contains_key(id) {
            return;
        }
        messages.sort_by_key(|m| m.seq);
        messages.dedup_by_key(|m| m.seq);
        let me = self.config.user.clone();
        let mut to_store = Vec::new();
        // Edits and revokes go after the rows they change, in seq order.
        let mut later_ops = Vec::new();
        // Seqs held as tombstones by the containment rule (never stored as messages).
        let mut contained = SeqRanges::new();
        // The newest plain message so far, whose list entry is made once, after the loop
        // (or before anything else reads the entry), instead of once per message.
        let mut latest = LatestCandidate::default();
        for mut msg in messages {
            let seq = msg.seq;
            let Some(conv) = self.conversations.get_mut(id) else {
                return;
            };
            if conv.held.contains(seq) || seq < conv.server_min_seq {
                continue;
            }
            let verdict = containment::contain_message(&mut msg);
            let containment = match verdict {
                MessageVerdict::Store { clamped } => clamped,
                MessageVerdict::Skip(containment) => {
                    // Seq 0 is "nothing" in the protocol; only report a real seq.
                    if seq.0 != 0 {
                        self.contained(id, seq, containment);
                    }
                    continue;
                }
                MessageVerdict::Tombstone(containment) => {
                    conv.held.insert(seq);
                    if conv.server_max_seq < seq {
                        conv.server_max_seq = seq;
                    }
                    contained.insert(seq);
                    self.batch.touch(id);
                    self.mark_not_unread(id, seq);
                    self.dispatch.enqueue(id, seq, None);
                    self.contained(id, seq, containment);
                    continue;
                }
            };
            if let Some(containment) = containment {
                self.contained(id, seq, containment);
            }
            let Some(conv) = self.conversations.get_mut(id) else {
                return;
            };
            conv.held.insert(seq);
            if conv.server_max_seq < seq {
                conv.server_max_seq = seq;
            }
            self.batch.touch(id);
            let own = msg.sender == me;
            if own {
                self.client_ids.saw(&msg.client_msg_id);
            }
            // This device's send: still in the outbox for this conversation, or (an id not in
            // the outbox) one it gave up on (failed, or cancelled while on the wire) that
            // reached the server after all, known by the device prefix and the id's tag for
            // this conversation. Either way it is acked, never announced as received. An id of
            // the outbox arriving in another conversation is not the echo of that send.
            let in_outbox = self
                .outbox
                .entry(&msg.client_msg_id)
                .map(|e| &e.conversation == id);
            // A send already acked in this process has had its `MessageSent`: a later copy at
            // another seq (its row deleted since, or never stored) is not its echo.
            let echo_of_send = own
                && !self.outbox.was_acked(&msg.client_msg_id)
                && in_outbox.unwrap_or_else(|| self.client_ids.is_own_in(id, &msg.client_msg_id));
            let mut message = msg.into_message();
            // The row as it arrived; pending changes are ops applied after it.
            let stored = message.clone();
            if let Some(target) = message.kind.change_target() {
                // A change may edit the latest message's preview: the entry must be current.
                latest.flush(self, id, &to_store);
                self.mark_not_unread(id, seq);
                later_ops.extend(self.apply_or_keep_change(id, &message, target));
            } else {
                if own {
                    self.mark_not_unread(id, seq);
                }
                // Changes that arrived before this message: stored as ops after the row (so
                // the store keeps their seqs), and applied to the copy the app is told about.
                let mut changed = false;
                if !self.pending_changes.is_empty() {
                    if let Some(changes) = self.pending_changes.take(id, seq) {
                        for change in changes {
                            // The target is in hand: the author rule is checked here, and the
                            // store never sees a refused change.
                            if may_change(&message.sender, &change.sender) {
                                changed = true;
                                apply_change_to(
                                    &mut message,
                                    &change.kind,
                                    change.seq,
                                    &change.content,
                                );
                                later_ops.push(change_op(
                                    id,
                                    seq,
                                    &change.kind,
                                    change.seq,
                                    &change.sender,
                                    change.content,
                                ));
                            } else {
                                self.contained(
                                    id,
                                    change.seq,
                                    Containment::ChangeRefused { target: seq },
                                );
                            }
                            later_ops.push(WriteOp::RemovePendingChange {
                                conversation: id.clone(),
                                seq: change.seq,
                            });
                        }
                    }
                }
                if changed {
                    // The entry shows the changed copy, which is not the stored row.
                    latest.flush(self, id, &to_store);
                    self.set_latest(id, &message);
                } else {
                    latest.note(self.conversations.get(id), &message, to_store.len());
                }
            }
            if own {
                // The server marks a conversation read up to every message its user sends.
                self.set_read(id, seq);
            }
            if echo_of_send {
                if self.outbox.acked(&message.client_msg_id).is_some() {
                    self.batch
                        .op(WriteOp::RemoveOutbox(message.client_msg_id.clone()));
                }
                self.batch.event(Event::MessageSent {
                    conversation: id.clone(),
                    client_msg_id: message.client_msg_id.clone(),
                    seq,
                });
                self.dispatch.enqueue(id, seq, None);
            } else if !message.is_change() {
                // The last use of `message`: moved, not copied.
                self.dispatch.enqueue(id, seq, Some(message));
            } else {
                self.dispatch.enqueue(id, seq, None);
            }
            to_store.push(stored);
        }
        latest.flush(self, id, &to_store);
        if !to_store.is_empty() {
            self.batch.op(WriteOp::PutMessages(to_store));
        }
        if !contained.is_empty() {
            self.batch.op(WriteOp::PutTombstones {
                conversation: id.clone(),
                seqs: contained,
            });
        }
        self.batch.ops(later_ops);
        self.ingest_missing(id, missing);
        self.recompute_unread(id);
        self.release(id);
    }

    pub(super) fn ingest_missing(&mut self, id: &ConversationId, missing: &SeqRanges) {
        let Some(conv) = self.conversations.get_mut(id) else {
            return;
        };
        let mut new = SeqRanges::new();
        for r in missing.ranges() {
            for gap in conv.held.gaps_in(r.start.max(Seq(1)), r.end) {
                new.insert_range(gap.start, gap.end);
            }
        }
        // A deletion of a held message: the row goes, the seq stays held as a tombstone. Seqs
        // already known deleted change nothing (a deletion learned twice is announced once).
        let mut deleted_held = SeqRanges::new();
        for r in missing.ranges() {
            for h in conv.held.intersect(r.start, r.end).ranges() {
                deleted_held.insert_range(h.start, h.end);
            }
        }
        for r in conv.deleted.ranges() {
            deleted_held.remove_range(r.start, r.end);
        }
        if new.is_empty() && deleted_held.is_empty() {
            return;
        }
        conv.held.union_with(&new);
        if let Some(top) = new.max() {
            if conv.server_max_seq < top {
                conv.server_max_seq = top;
            }
        }
        let mut all = new.clone();
        all.union_with(&deleted_held);
        conv.deleted.union_with(&all);
        if conv
            .latest
            .as_ref()
            .and_then(|l| l.seq)
            .is_some_and(|s| all.contains(s))
        {
            conv.latest = None;
        }
        self.batch.touch(id);
        let read = conv.read_seq;
        let top = conv.server_max_seq;
        let above_read = all.intersect(read.next(), top);
        conv.not_unread.union_with(&above_read);
        self.dispatch.drop_in(id, &all);
        self.batch.unannounce(id, &all);
        self.forget_changes_targeting(id, &all);
        self.batch.op(WriteOp::PutTombstones {
            conversation: id.clone(),
            seqs: all.clone(),
        });
        if !deleted_held.is_empty() {
            self.batch.event(Event::MessagesDeleted {
                conversation: id.clone(),
                seqs: deleted_held,
            });
        }
    }

    /// An edit or revoke at `change.seq` targeting `target`: applied now if the target is
    /// held, else kept until it lands. Returns the op to append after the messages.
    pub(super) fn apply_or_keep_change(
        &mut self,
        id: &ConversationId,
        change: &Message,
        target: Seq,
    ) -> Option<WriteOp> {
        let seq = change.seq?;
        let conv = self.conversations.get(id)?;
        if target < conv.server_min_seq || target >= seq {
            // The target is gone, or the change is malformed (a change can only follow its
            // target): nothing to apply.
            return None;
        }
        if conv.held.contains(target) {
            // The store checks the author (it holds the target); the update event below is
            // turned into a refusal at commit if it does not apply.
            let op = change_op(
                id,
                target,
                &change.kind,
                seq,
                &change.sender,
                change.content.clone(),
            );
            let update = match change.kind {
                ContentKind::Revoke { .. } => MessageChange::Revoked,
                _ => MessageChange::Edited {
                    edit_seq: seq,
                    content: change.content.clone(),
                },
            };
            self.batch.event(Event::MessageUpdated {
                conversation: id.clone(),
                seq: target,
                change: update,
            });
            // The list entry holds the latest message's author, so its preview follows the
            // same rule as the store without asking it.
            if conv
                .latest
                .as_ref()
                .is_some_and(|l| l.seq == Some(target) && may_change(&l.sender, &change.sender))
            {
                if let Some(conv) = self.conversations.get_mut(id) {
                    if let Some(latest) = conv.latest.as_mut() {
                        match change.kind {
                            ContentKind::Revoke { .. } => latest.preview.clear(),
                            _ => {
                                let cut = change.content.len().min(LatestMessage::PREVIEW_BYTES);
                                latest.preview = change.content[..cut].to_vec();
                            }
                        }
                    }
                }
            }
            return Some(op);
        }
        let pending = PendingChange {
            conversation: id.clone(),
            seq,
            target,
            sender: change.sender.clone(),
            kind: change.kind.clone(),
            content: change.content.clone(),
        };
        self.pending_changes.keep(pending.clone());
        Some(WriteOp::PutPendingChange(pending))
    }

    /// Tells the app what the containment rule did with the message at `seq`.
    pub(super) fn contained(&mut self, id: &ConversationId, seq: Seq, containment: Containment) {
        self.batch.event(Event::MessageContained {
            conversation: id.clone(),
            seq,
            containment,
        });
    }

    pub(super) fn mark_not_unread(&mut self, id: &ConversationId, seq: Seq) {
        if let Some(conv) = self.conversations.get_mut(id) {
            if seq > conv.read_seq {
                conv.not_unread.insert(seq);
            }
        }
    }

    /// [`Engine::set_latest`] for a message known to be newer than the entry, with the
    /// newest time of the messages it stands for.
    fn set_latest_newer(&mut self, id: &ConversationId, message: &Message, time: Timestamp) {
        let Some(conv) = self.conversations.get_mut(id) else {
            return;
        };
        conv.latest = Some(LatestMessage::of(message));
        conv.last_activity = conv.last_activity.max(time);
        self.batch.touch(id);
    }

    pub(super) fn set_latest(&mut self, id: &ConversationId, message: &Message) {
        if self
            .conversations
            .get(id)
            .is_some_and(|conv| newer_than_entry(conv, message))
        {
            let time = message.server_time.unwrap_or(message.created_at);
            self.set_latest_newer(id, message, time);
        }
    }

    pub(super) fn set_read(&mut self, id: &ConversationId, seq: Seq) {
        let Some(conv) = self.conversations.get_mut(id) else {
            return;
        };
        if seq <= conv.read_seq {
            return;
        }
        conv.read_seq = seq;
        // Only seqs above the read seq matter for unread; dropping the rest bounds memory.
        conv.not_unread.remove_below(seq.next());
        self.batch.touch(id);
        self.recompute_unread(id);
    }

    pub(super) fn recompute_unread(&mut self, id: &ConversationId) {
        let Some(conv) = self.conversations.get_mut(id) else {
            return;
        };
        let unread = conv.compute_unread();
        if unread != conv.unread {
            self.total_unread = self.total_unread.saturating_sub(conv.unread) + unread;
            conv.unread = unread;
            self.batch.touch(id);
        }
    }
}

/// The storage op for an edit or revoke at `change_seq`, sent by `sender`, of the message at
/// `target`.
pub(super) fn change_op(
    conversation: &ConversationId,
    target: Seq,
    kind: &ContentKind,
    change_seq: Seq,
    sender: &UserId,
    content: Vec<u8>,
) -> WriteOp {
    match kind {
        ContentKind::Revoke { .. } => WriteOp::RevokeMessage {
            conversation: conversation.clone(),
            target,
            revoke_seq: change_seq,
            sender: sender.clone(),
        },
        _ => WriteOp::EditMessage {
            conversation: conversation.clone(),
            target,
            edit_seq: change_seq,
            sender: sender.clone(),
            content,
        },
    }
}

/// Applies an edit or revoke to an in-memory copy by the store's rules: edits in seq order,
/// revoke wins.
pub(super) fn apply_change_to(
    message: &mut Message,
    kind: &ContentKind,
    change_seq: Seq,
    content: &[u8],
) {
    if message.revoked {
        return;
    }
    match kind {
        ContentKind::Revoke { .. } => {
            message.revoked = true;
            message.content.clear();
        }
        _ if message.edit_seq.is_none_or(|e| e < change_seq) => {
            message.edit_seq = Some(change_seq);
            message.content = content.to_vec();
        }
        _ => {}
    }
}

/// Whether `message` takes the place of `conv`'s list entry: the rule of
/// [`Engine::set_latest`], also used to fold an ingest's messages ([`LatestCandidate`]).
fn newer_than_entry(conv: &Conversation, message: &Message) -> bool {
    match (&conv.latest, message.seq) {
        (None, _) => true,
        // A pending message of this device is the newest thing until a later seq lands.
        (Some(_), None) => true,
        (Some(latest), Some(seq)) => latest.seq.is_none_or(|s| seq >= s),
    }
}

/// The plain messages of one [`Engine::ingest`] that would each have become the list entry
/// in turn ([`Engine::set_latest`] per message), folded: only the last one's entry is made.
/// Seqs ascend within an ingest, so once a message is newer than the entry, every later
/// one is too; the entry itself does not change meanwhile (it is flushed before anything
/// else reads or writes it).
#[derive(Default)]
struct LatestCandidate {
    /// Index in the rows to store of the newest such message, and the newest time among
    /// them (the conversation's activity takes the maximum, as per message).
    newest: Option<(usize, Timestamp)>,
}

impl LatestCandidate {
    /// `message`, about to be stored at `index`, was ingested unchanged.
    fn note(&mut self, conv: Option<&Conversation>, message: &Message, index: usize) {
        if !conv.is_some_and(|conv| newer_than_entry(conv, message)) {
            return;
        }
        let time = message.server_time.unwrap_or(message.created_at);
        let time = self.newest.map_or(time, |(_, t)| t.max(time));
        self.newest = Some((index, time));
    }

    /// Makes the entry of the newest noted message, if any.
    fn flush(&mut self, engine: &mut Engine, id: &ConversationId, rows: &[Message]) {
        if let Some((index, time)) = self.newest.take() {
            if let Some(message) = rows.get(index) {
                engine.set_latest_newer(id, message, time);
            }
        }
    }
}
