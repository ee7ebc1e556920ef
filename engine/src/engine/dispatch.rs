//! In-order announcement of new messages, and turning an input into one batch.

use super::*;

impl Engine {
    pub(super) fn enqueue_dispatch(
        &mut self,
        id: &ConversationId,
        seq: Seq,
        message: Option<Message>,
    ) {
        let d = self.dispatch.entry(id.clone()).or_default();
        if seq > d.frontier {
            d.waiting.insert(seq, message);
        }
    }

    /// Announces waiting messages whose every lower seq (down to the frontier) is held.
    pub(super) fn release(&mut self, id: &ConversationId) {
        let Some(conv) = self.conversations.get(id) else {
            return;
        };
        let Some(d) = self.dispatch.get_mut(id) else {
            return;
        };
        loop {
            let next = d.frontier.next();
            match d.waiting.first_key_value().map(|(k, _)| *k) {
                Some(first) if conv.held.contains_range(next, first) => {
                    if let Some((seq, message)) = d.waiting.pop_first() {
                        d.frontier = seq;
                        if let Some(message) = message {
                            self.received.entry(id.clone()).or_default().push(message);
                        }
                    }
                }
                _ => {
                    // Jump over held seqs with nothing to announce (history, tombstones), but
                    // never past a waiting message.
                    if let Some(end) = conv.held.run_end(next) {
                        let stop = d.waiting.first_key_value().map(|(k, _)| k.prev());
                        let end = stop.map_or(end, |s| end.min(s));
                        if end > d.frontier {
                            d.frontier = end;
                            continue;
                        }
                    }
                    break;
                }
            }
        }
    }

    /// End of every input: start pulls that can go, then emit the batch.
    pub(super) fn after_input(&mut self, now: Timestamp) {
        self.pump_pulls(now);
        self.flush();
    }

    /// Takes back the announcements this input queued for messages it then deleted (a floor
    /// raised twice in one max-seq page, a deletion after a release): their rows are gone
    /// when the batch commits, so announcing them would send the app to a missing row.
    pub(super) fn unannounce(&mut self, id: &ConversationId, seqs: &SeqRanges) {
        if let Some(messages) = self.received.get_mut(id) {
            messages.retain(|m| m.seq.is_none_or(|s| !seqs.contains(s)));
        }
    }

    /// Turns what the current input recorded into one [`Output::Write`] carrying its events.
    pub(super) fn flush(&mut self) {
        let changed = std::mem::take(&mut self.changed);
        let mut changed_ids = Vec::with_capacity(changed.len());
        for id in changed {
            if let Some(conv) = self.conversations.get(&id) {
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
        if self.total_unread != self.emitted_total_unread {
            self.emitted_total_unread = self.total_unread;
            ordered.push(Event::TotalUnreadChanged {
                total: self.total_unread,
            });
        }
        let send_after = std::mem::take(&mut self.send_after);
        if !self.ops.is_empty() {
            let id = BatchId(self.next_batch);
            self.next_batch += 1;
            let batch = WriteBatch {
                ops: std::mem::take(&mut self.ops),
            };
            self.outputs.push_back(Output::Write(id, batch));
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
            self.outputs.extend(ordered.into_iter().map(Output::Event));
        }
    }
}
