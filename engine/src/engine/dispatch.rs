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
                            self.batch.announce(id, message);
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

    /// Turns what the current input recorded into one [`Output::Write`] carrying its events.
    pub(super) fn flush(&mut self) {
        self.batch
            .emit(&self.conversations, self.total_unread, &mut self.outputs);
    }

    /// End of every input: start pulls that can go, then emit the batch.
    pub(super) fn after_input(&mut self, now: Timestamp) {
        self.pump_pulls(now);
        self.flush();
    }
}
