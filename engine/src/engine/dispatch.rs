//! The dispatch frontiers: in-order announcement of new messages, once each.
//!
//! Owns, per conversation, the *frontier* (the highest seq up to which everything was
//! announced or deliberately skipped) and the messages waiting above it for the seqs below
//! them. A message is released when every seq from the frontier up to it is held, so each
//! conversation's new messages go out in seq order. Process memory only: after a restart the
//! frontier starts at the highest held seq.
//!
//! It never decides what is held (the conversation's held set is passed in), never writes
//! and never emits: it hands the released messages to the engine, which announces them.

use std::collections::{BTreeMap, HashMap};

use crate::model::{ConversationId, Message, Seq};
use crate::seq_ranges::SeqRanges;

/// One conversation's frontier and what waits above it.
#[derive(Clone, Debug, Default)]
struct Frontier {
    frontier: Seq,
    /// Seqs above the frontier waiting for the seqs below them; `None` marks a seq that
    /// advances the frontier without an announcement (own acked message).
    waiting: BTreeMap<Seq, Option<Message>>,
}

/// The frontiers of every conversation.
#[derive(Debug, Default)]
pub(super) struct Frontiers {
    by_conversation: HashMap<ConversationId, Frontier>,
}

impl Frontiers {
    /// Starts conversation `id` with everything up to `frontier` taken as announced
    /// (replacing what it had).
    pub(super) fn start(&mut self, id: &ConversationId, frontier: Seq) {
        self.by_conversation.insert(
            id.clone(),
            Frontier {
                frontier,
                waiting: BTreeMap::new(),
            },
        );
    }

    /// The seq up to which conversation `id` was announced or skipped.
    pub(super) fn frontier(&self, id: &ConversationId) -> Seq {
        self.by_conversation.get(id).map_or(Seq(0), |d| d.frontier)
    }

    /// `seq` landed: it waits for the seqs below it, to be announced as `message` (or to
    /// advance the frontier silently when `None`). Seqs at or below the frontier are ignored.
    pub(super) fn enqueue(&mut self, id: &ConversationId, seq: Seq, message: Option<Message>) {
        // Called per message: copy the id only for a conversation not seen before.
        if !self.by_conversation.contains_key(id) {
            self.by_conversation.insert(id.clone(), Default::default());
        }
        if let Some(d) = self.by_conversation.get_mut(id) {
            if seq > d.frontier {
                d.waiting.insert(seq, message);
            }
        }
    }

    /// Releases the waiting messages whose every lower seq (down to the frontier) is in
    /// `held`, in seq order.
    pub(super) fn release(&mut self, id: &ConversationId, held: &SeqRanges) -> Vec<Message> {
        let mut released = Vec::new();
        let Some(d) = self.by_conversation.get_mut(id) else {
            return released;
        };
        loop {
            let next = d.frontier.next();
            match d.waiting.first_key_value().map(|(k, _)| *k) {
                Some(first) if held.contains_range(next, first) => {
                    if let Some((seq, message)) = d.waiting.pop_first() {
                        d.frontier = seq;
                        released.extend(message);
                    }
                }
                _ => {
                    // Jump over held seqs with nothing to announce (history, tombstones), but
                    // never past a waiting message.
                    if let Some(end) = held.run_end(next) {
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
        released
    }

    /// Messages below `from` are history from now on: they will not be announced as new.
    /// Releases nothing itself.
    pub(super) fn skip_below(&mut self, id: &ConversationId, from: Seq) {
        let d = self.by_conversation.entry(id.clone()).or_default();
        if d.frontier < from.prev() {
            d.frontier = from.prev();
            let later = d.waiting.split_off(&from);
            d.waiting = later;
        }
    }

    /// The floor rose to `min_seq`: what waits below it is gone.
    pub(super) fn drop_below(&mut self, id: &ConversationId, min_seq: Seq) {
        if let Some(d) = self.by_conversation.get_mut(id) {
            d.waiting.retain(|s, _| *s >= min_seq);
        }
    }

    /// The seqs of `gone` were deleted (or never existed): what waits at them is dropped.
    pub(super) fn drop_in(&mut self, id: &ConversationId, gone: &SeqRanges) {
        for s in gone.ranges() {
            if let Some(d) = self.by_conversation.get_mut(id) {
                let dropped: Vec<Seq> = d.waiting.range(s.start..=s.end).map(|(k, _)| *k).collect();
                for k in dropped {
                    d.waiting.remove(&k);
                }
            }
        }
    }
}
