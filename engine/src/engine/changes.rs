//! The edits and revokes waiting for their target: a change can arrive before the message it
//! changes (a pull of a later range, a push), and is kept until the target lands.
//!
//! Owns the waiting changes, keyed by conversation and target seq, each list ascending by
//! change seq. It never applies a change, writes or announces: it hands the engine the
//! changes a landed target takes and the ones a deleted target drops, and the engine applies,
//! writes and announces them.

use std::collections::HashMap;

use crate::model::{ConversationId, PendingChange, Seq};
use crate::seq_ranges::SeqRanges;

/// The changes waiting for their target.
#[derive(Debug, Default)]
pub(super) struct PendingChanges {
    by_target: HashMap<(ConversationId, Seq), Vec<PendingChange>>,
}

impl PendingChanges {
    /// The changes as stored.
    pub(super) fn from_stored(changes: Vec<PendingChange>) -> Self {
        let mut by_target: HashMap<(ConversationId, Seq), Vec<PendingChange>> = HashMap::new();
        for change in changes {
            by_target
                .entry((change.conversation.clone(), change.target))
                .or_default()
                .push(change);
        }
        for list in by_target.values_mut() {
            list.sort_by_key(|c| c.seq);
        }
        Self { by_target }
    }

    /// Whether no change waits.
    pub(super) fn is_empty(&self) -> bool {
        self.by_target.is_empty()
    }

    /// Keeps `change` until its target lands.
    pub(super) fn keep(&mut self, change: PendingChange) {
        let list = self
            .by_target
            .entry((change.conversation.clone(), change.target))
            .or_default();
        list.push(change);
        list.sort_by_key(|c| c.seq);
    }

    /// The target at `seq` of `id` landed: the changes waiting for it, ascending by seq.
    pub(super) fn take(&mut self, id: &ConversationId, seq: Seq) -> Option<Vec<PendingChange>> {
        self.by_target.remove(&(id.clone(), seq))
    }

    /// The seqs of `gone` in `id` no longer exist: the changes targeting them will never
    /// apply, and are handed back to be removed from the store.
    pub(super) fn forget_targeting(
        &mut self,
        id: &ConversationId,
        gone: &SeqRanges,
    ) -> Vec<PendingChange> {
        let dropped: Vec<(ConversationId, Seq)> = self
            .by_target
            .keys()
            .filter(|(c, target)| c == id && gone.contains(*target))
            .cloned()
            .collect();
        dropped
            .into_iter()
            .flat_map(|key| self.by_target.remove(&key).unwrap_or_default())
            .collect()
    }
}
