//! The pull planner.

use crate::model::{ConversationId, Seq};

/// Why a range is being pulled; decides priority and what its completion means.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum PullPurpose {
    /// Part of the sync after connecting.
    Sync,
    /// A gap below a pushed or acked message.
    Gap,
    /// A `load_history` call.
    History(u64),
    /// Background fill of old gaps after the sync finished.
    Fill,
}

/// One conversation's range queued or in flight.
#[derive(Clone, Debug)]
pub(super) struct PullChunk {
    pub(super) conversation: ConversationId,
    pub(super) from: Seq,
    pub(super) to: Seq,
    pub(super) purpose: PullPurpose,
}
