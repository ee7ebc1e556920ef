//! The pull planner: the sync run's listing and progress, the pull queue cut in chunks, the
//! pulls in flight, and the `load_history` calls waiting for them.
//!
//! Owns what is queued or asked (so nothing is asked twice), how many pulls are on the wire,
//! when a pull may go again after a transient error, the sync run's candidates and progress,
//! and the history loads counting their chunks. It never decides what a conversation holds
//! (the held set is passed in), never builds a request or emits (it hands the engine the
//! chunks of the next pull), and never reads a clock.

use std::collections::{HashMap, HashSet, VecDeque};

use crate::model::{ConversationId, Seq, Timestamp};
use crate::seq_ranges::SeqRanges;

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

/// The sync run started by a connect.
#[derive(Clone, Debug, Default)]
struct SyncRun {
    listing_done: bool,
    candidates: Vec<(Timestamp, ConversationId)>,
    total: u64,
    done: u64,
    /// Sync chunks still queued or in flight per conversation.
    outstanding: HashMap<ConversationId, u32>,
}

/// A `load_history` waiting for its pulls.
#[derive(Clone, Debug)]
pub(super) struct HistoryRequest {
    pub(super) conversation: ConversationId,
    pub(super) from: Seq,
    pub(super) to: Seq,
    outstanding: u32,
}

/// The limits a pull is cut by.
#[derive(Clone, Copy, Debug)]
pub(super) struct PullLimits {
    /// Pulls on the wire at once.
    pub(super) in_flight: u32,
    /// Seqs per pull (and per chunk).
    pub(super) messages: u64,
    /// Conversations per pull.
    pub(super) conversations: usize,
}

/// What the planner knows of pulls.
#[derive(Debug)]
pub(super) struct PullPlanner {
    sync: Option<SyncRun>,
    queue: VecDeque<PullChunk>,
    in_flight: u32,
    /// Seqs queued or in flight per conversation, so nothing is asked twice.
    requested: HashMap<ConversationId, SeqRanges>,
    retry_at: Option<Timestamp>,
    history: HashMap<u64, HistoryRequest>,
    next_history: u64,
}

impl PullPlanner {
    /// Nothing planned.
    pub(super) fn new() -> Self {
        Self {
            sync: None,
            queue: VecDeque::new(),
            in_flight: 0,
            requested: HashMap::new(),
            retry_at: None,
            history: HashMap::new(),
            next_history: 1,
        }
    }

    // ----- the sync run -----

    /// Whether a sync run is going.
    pub(super) fn is_syncing(&self) -> bool {
        self.sync.is_some()
    }

    /// Whether no chunk is queued.
    pub(super) fn queue_is_empty(&self) -> bool {
        self.queue.is_empty()
    }

    /// A sync run starts (after connect).
    pub(super) fn start_sync(&mut self) {
        self.sync = Some(SyncRun::default());
    }

    /// The listing found `id` (last active at `last_activity`) wanting a pull.
    pub(super) fn add_candidate(&mut self, last_activity: Timestamp, id: ConversationId) {
        if let Some(sync) = self.sync.as_mut() {
            sync.candidates.push((last_activity, id));
        }
    }

    /// The listing is complete: its candidates, most recently active first (ties by id, so
    /// runs are deterministic), each conversation once (a delta run may add one both from
    /// the listing and from the engine's own state). `None` without a sync run.
    pub(super) fn finish_listing(&mut self) -> Option<Vec<(Timestamp, ConversationId)>> {
        let sync = self.sync.as_mut()?;
        sync.listing_done = true;
        let mut candidates = std::mem::take(&mut sync.candidates);
        candidates.sort_by(|a, b| b.0.cmp(&a.0).then_with(|| a.1.cmp(&b.1)));
        let mut seen = HashSet::new();
        candidates.retain(|(_, id)| seen.insert(id.clone()));
        Some(candidates)
    }

    /// The sync run waits for `chunks` chunks of conversation `id`.
    pub(super) fn sync_waits_for(&mut self, id: ConversationId, chunks: u32) {
        if let Some(sync) = self.sync.as_mut() {
            sync.outstanding.insert(id, chunks);
        }
    }

    /// The sync run pulls `total` conversations.
    pub(super) fn set_sync_total(&mut self, total: u64) {
        if let Some(sync) = self.sync.as_mut() {
            sync.total = total;
        }
    }

    /// The sync run's progress: conversations done, of how many.
    pub(super) fn sync_progress(&self) -> Option<(u64, u64)> {
        self.sync.as_ref().map(|s| (s.done, s.total))
    }

    /// Ends the sync run if its listing is done and nothing it pulls is outstanding; returns
    /// whether it ended.
    pub(super) fn take_finished_sync(&mut self) -> bool {
        let finished = self
            .sync
            .as_ref()
            .is_some_and(|s| s.listing_done && s.outstanding.is_empty());
        if finished {
            self.sync = None;
        }
        finished
    }

    // ----- history loads -----

    /// The id of the next `load_history` call.
    pub(super) fn next_history_id(&mut self) -> u64 {
        let id = self.next_history;
        self.next_history += 1;
        id
    }

    /// History load `id` waits for `from..=to` of `conversation`.
    pub(super) fn add_history(
        &mut self,
        id: u64,
        conversation: ConversationId,
        from: Seq,
        to: Seq,
    ) {
        self.history.insert(
            id,
            HistoryRequest {
                conversation,
                from,
                to,
                outstanding: 0,
            },
        );
    }

    /// History load `id` waits for `chunks` chunks.
    pub(super) fn history_waits_for(&mut self, id: u64, chunks: u32) {
        if let Some(h) = self.history.get_mut(&id) {
            h.outstanding = chunks;
        }
    }

    /// Takes history load `id` out: it is finished.
    pub(super) fn take_history(&mut self, id: u64) -> Option<HistoryRequest> {
        self.history.remove(&id)
    }

    // ----- the queue -----

    /// Queues the seqs of `from..=to` of `id` that are neither in `held` nor already
    /// requested, in chunks of at most `chunk_len` seqs, at the front when `front`. Returns
    /// how many chunks were queued.
    #[allow(clippy::too_many_arguments, reason = "each is one fact of the pull")]
    pub(super) fn queue(
        &mut self,
        id: &ConversationId,
        held: &SeqRanges,
        from: Seq,
        to: Seq,
        purpose: PullPurpose,
        front: bool,
        chunk_len: u64,
    ) -> u32 {
        let mut missing = SeqRanges::new();
        for gap in held.gaps_in(from, to) {
            missing.insert_range(gap.start, gap.end);
        }
        let requested = self.requested.entry(id.clone()).or_default();
        for r in requested.ranges() {
            missing.remove_range(r.start, r.end);
        }
        let mut chunks = Vec::new();
        for gap in missing.ranges() {
            requested.insert_range(gap.start, gap.end);
            let mut start = gap.start;
            loop {
                let end = Seq(start.0.saturating_add(chunk_len - 1)).min(gap.end);
                chunks.push(PullChunk {
                    conversation: id.clone(),
                    from: start,
                    to: end,
                    purpose,
                });
                if end == gap.end {
                    break;
                }
                start = end.next();
            }
        }
        // New messages are announced in seq order, so a conversation pulled newest-first would
        // hold every later chunk in memory until the oldest arrived: pull ascending. History
        // is not announced; its newest chunk (next to what the user is looking at) goes first.
        if matches!(purpose, PullPurpose::History(_)) {
            chunks.reverse();
        }
        let count = chunks.len() as u32;
        if front {
            for chunk in chunks.into_iter().rev() {
                self.queue.push_front(chunk);
            }
        } else {
            self.queue.extend(chunks);
        }
        if count > 0 {
            tracing::trace!(chunks = count, ?purpose, "pull queued");
        }
        count
    }

    /// The chunks of the next pull, if a slot is free, nothing waits for a retry and a chunk
    /// is queued: many conversations per pull, up to `limits`. The pull counts as in flight.
    pub(super) fn next_pull(&mut self, limits: PullLimits) -> Option<Vec<PullChunk>> {
        if self.retry_at.is_some() || self.in_flight >= limits.in_flight || self.queue.is_empty() {
            return None;
        }
        let mut chunks = Vec::new();
        let mut budget = limits.messages;
        while let Some(chunk) = self.queue.front() {
            let len = chunk.to.0 - chunk.from.0 + 1;
            if chunks.len() >= limits.conversations || (len > budget && !chunks.is_empty()) {
                break;
            }
            let Some(chunk) = self.queue.pop_front() else {
                break;
            };
            budget = budget.saturating_sub(len);
            chunks.push(chunk);
        }
        self.in_flight += 1;
        tracing::debug!(
            chunks = chunks.len(),
            queued = self.queue.len(),
            in_flight = self.in_flight,
            "pull planned"
        );
        Some(chunks)
    }

    /// A reply (or error) to a pull arrived: its slot is free.
    pub(super) fn pull_answered(&mut self) {
        self.in_flight -= 1;
    }

    /// `chunk` is no longer asked: its seqs may be queued again.
    pub(super) fn unrequest(&mut self, chunk: &PullChunk) {
        if let Some(r) = self.requested.get_mut(&chunk.conversation) {
            r.remove_range(chunk.from, chunk.to);
        }
    }

    /// A pull failed transiently: its chunks go back to the front, and no pull goes before
    /// `at`.
    pub(super) fn retry_later(&mut self, chunks: Vec<PullChunk>, at: Timestamp) {
        tracing::debug!(
            chunks = chunks.len(),
            "pull re-queued after a transient error"
        );
        for chunk in chunks.into_iter().rev() {
            self.queue.push_front(chunk);
        }
        self.retry_at = Some(at);
    }

    /// Time passed: pulls may go again once the retry time came.
    pub(super) fn retry_due(&mut self, now: Timestamp) {
        if self.retry_at.is_some_and(|t| t <= now) {
            self.retry_at = None;
        }
    }

    /// When pulls may go again after a transient error.
    pub(super) fn retry_deadline(&self) -> Option<Timestamp> {
        self.retry_at
    }

    /// `chunk` was replaced by `extra` more chunks than itself in its purpose's count.
    pub(super) fn add_outstanding(&mut self, chunk: &PullChunk, extra: u32) {
        if extra == 0 {
            return;
        }
        match chunk.purpose {
            PullPurpose::Sync => {
                if let Some(n) = self
                    .sync
                    .as_mut()
                    .and_then(|s| s.outstanding.get_mut(&chunk.conversation))
                {
                    *n += extra;
                }
            }
            PullPurpose::History(id) => {
                if let Some(h) = self.history.get_mut(&id) {
                    h.outstanding += extra;
                }
            }
            PullPurpose::Gap | PullPurpose::Fill => {}
        }
    }

    /// Bookkeeping when a chunk will not be asked again: whether sync progress moved, and
    /// the history load this chunk was the last of (taken out; the engine finishes it).
    pub(super) fn chunk_done(
        &mut self,
        chunk: &PullChunk,
    ) -> (bool, Option<(u64, HistoryRequest)>) {
        match chunk.purpose {
            PullPurpose::Sync => {
                let Some(sync) = self.sync.as_mut() else {
                    return (false, None);
                };
                let Some(left) = sync.outstanding.get_mut(&chunk.conversation) else {
                    return (false, None);
                };
                *left = left.saturating_sub(1);
                if *left == 0 {
                    sync.outstanding.remove(&chunk.conversation);
                    sync.done += 1;
                    return (true, None);
                }
                (false, None)
            }
            PullPurpose::History(id) => {
                if let Some(h) = self.history.get_mut(&id) {
                    h.outstanding = h.outstanding.saturating_sub(1);
                    if h.outstanding == 0 {
                        return (false, self.history.remove(&id).map(|h| (id, h)));
                    }
                }
                (false, None)
            }
            PullPurpose::Gap | PullPurpose::Fill => (false, None),
        }
    }

    /// The connection went: nothing is queued or in flight, the sync run is abandoned (the
    /// next connect lists again and re-plans). Returns the history loads that were waiting,
    /// for the engine to finish with what is held.
    pub(super) fn connection_lost(&mut self) -> Vec<(u64, HistoryRequest)> {
        self.in_flight = 0;
        self.queue.clear();
        self.requested.clear();
        self.retry_at = None;
        self.sync = None;
        self.history.drain().collect()
    }
}
