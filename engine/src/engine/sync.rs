//! The engine's side of sync runs: the max-seq listing, deletion lists, and the pull replies,
//! applied to the conversations; what to pull and when is the pull planner's (`pulls`), and
//! this code hands it the held sets and limits it plans with. Coordination code of
//! [`Engine`], with the same rule as the rest of the core: no clock, no I/O, no randomness
//! but the seed's.

use std::collections::HashMap;

use crate::config::SyncPolicy;
use crate::model::{Conversation, ConversationId, Seq, ServerMessage, Timestamp};
use crate::output::{ConnectionState, Event};
use crate::protocol::{DeletionsEntry, MaxSeqEntry, PullRange, PulledRange, Request, ServerError};

use super::pulls::{HistoryRequest, PullChunk, PullLimits, PullPurpose};
use super::requests::InFlight;
use super::Engine;

impl Engine {
    pub(super) fn on_max_seqs(
        &mut self,
        now: Timestamp,
        entries: Vec<MaxSeqEntry>,
        has_more: bool,
    ) {
        tracing::debug!(entries = entries.len(), has_more, "max seq listing page");
        let last = entries.last().map(|e| e.conversation.clone());
        let mut deletions_missed = Vec::new();
        for entry in entries {
            let id = entry.conversation.clone();
            self.ensure_conversation(&id, Some(entry.kind));
            self.raise_floor(&id, entry.min_seq);
            // The listing deletes nothing itself (deletions come in their own reply).
            self.release(&id);
            let local_read = {
                let Some(conv) = self.conversations.get_mut(&id) else {
                    continue;
                };
                let mut touched = false;
                if conv.server_max_seq < entry.max_seq {
                    conv.server_max_seq = entry.max_seq;
                    touched = true;
                }
                if conv.last_activity < entry.last_activity {
                    conv.last_activity = entry.last_activity;
                    touched = true;
                }
                let read = conv.read_seq;
                if touched {
                    self.batch.touch(&id);
                }
                read
            };
            if entry.read_seq > local_read {
                self.set_read(&id, entry.read_seq);
            }
            if let Some(conv) = self.conversations.get_mut(&id) {
                // The server's word for seqs above the read seq that never count as unread,
                // covering what this device has not pulled. Only seqs not held are taken: for
                // held ones the device already knows.
                let hint = entry
                    .not_unread
                    .intersect(conv.read_seq.next(), conv.server_max_seq);
                for r in hint.ranges() {
                    for gap in conv.held.gaps_in(r.start, r.end) {
                        conv.not_unread.insert_range(gap.start, gap.end);
                    }
                }
            }
            if self
                .conversations
                .get(&id)
                .is_some_and(|c| c.deleted_above_floor() != entry.deleted_count)
            {
                deletions_missed.push(id.clone());
            }
            if local_read > entry.read_seq {
                // Read locally while offline (or the ack was lost): tell the server again.
                self.outbox.keep_read(&id, local_read);
            }
            self.recompute_unread(&id);
            let wants_pull = self
                .conversations
                .get(&id)
                .is_some_and(|c| self.policy_window(c).is_some());
            if wants_pull {
                self.pulls.add_candidate(entry.last_activity, id);
            }
        }
        let asked = self.request_deletions(now, &deletions_missed);
        self.cursor.deletions_asked(asked);
        let reads = self.outbox.reads();
        let already = self.requests.marking_read();
        for (conversation, seq) in reads {
            if !already.contains(&conversation) {
                self.request(
                    now,
                    InFlight::MarkRead(conversation.clone(), seq),
                    Request::MarkRead { conversation, seq },
                );
            }
        }
        if has_more {
            if let Some(after) = last {
                self.request(
                    now,
                    InFlight::MaxSeqs,
                    Request::GetMaxSeqs {
                        after: Some(after),
                        limit: self.config.max_seqs_page,
                        since: self.cursor.since(),
                    },
                );
                return;
            }
        }
        if self.cursor.is_delta() {
            // A delta lists only what changed on the server. What the engine itself still
            // misses (a pull cut short by a disconnect or a crash after the listing that
            // raised the max seq was stored) is in its own state: the held ranges and the
            // server max seq are stored, so the missing windows are found here, in memory.
            let wanting: Vec<(Timestamp, ConversationId)> = self
                .conversations
                .values()
                .filter(|c| self.policy_window(c).is_some())
                .map(|c| (c.last_activity, c.id.clone()))
                .collect();
            for (last_activity, id) in wanting {
                self.pulls.add_candidate(last_activity, id);
            }
        }
        self.cursor.listing_done();
        self.plan_sync();
    }

    /// Asks for the deletion lists of conversations whose deletion count changed; returns how
    /// many requests went out.
    pub(super) fn request_deletions(
        &mut self,
        now: Timestamp,
        conversations: &[ConversationId],
    ) -> u32 {
        let per_request = self.config.pull_max_conversations.max(1) as usize;
        let mut asked = 0;
        for chunk in conversations.chunks(per_request) {
            asked += 1;
            self.request(
                now,
                InFlight::Deletions,
                Request::GetDeletions {
                    conversations: chunk.to_vec(),
                },
            );
        }
        asked
    }

    pub(super) fn on_deletions(&mut self, entries: Vec<DeletionsEntry>) {
        for entry in entries {
            let id = entry.conversation;
            let Some(conv) = self.conversations.get_mut(&id) else {
                continue;
            };
            // Seqs beyond what is known to exist cannot be deleted; ignore such claims.
            let seqs = entry.seqs.intersect(Seq(1), conv.server_max_seq);
            self.ingest(&id, Vec::new(), &seqs);
        }
    }

    /// The range the sync policy wants pulled for `conv`, if any is missing.
    pub(super) fn policy_window(&self, conv: &Conversation) -> Option<(Seq, Seq)> {
        let floor = conv.server_min_seq.max(Seq(1));
        let top = conv.server_max_seq;
        if top < floor {
            return None;
        }
        let from = match self.config.policy {
            SyncPolicy::Full => floor,
            SyncPolicy::NewestFirst {
                per_conversation, ..
            } => Seq(top.0.saturating_sub(u64::from(per_conversation)) + 1).max(floor),
        };
        (!conv.held.contains_range(from, top)).then_some((from, top))
    }

    pub(super) fn plan_sync(&mut self) {
        let Some(candidates) = self.pulls.finish_listing() else {
            return;
        };
        let mut total = 0;
        for (_, id) in candidates {
            let Some(window) = self
                .conversations
                .get(&id)
                .and_then(|c| self.policy_window(c))
            else {
                continue;
            };
            self.skip_dispatch_below(&id, window.0);
            let queued = self.queue_pull(&id, window.0, window.1, PullPurpose::Sync, false);
            if queued > 0 {
                total += 1;
                self.pulls.sync_waits_for(id, queued);
            }
        }
        self.pulls.set_sync_total(total);
        tracing::debug!(conversations = total, "sync planned");
        self.batch.event(Event::SyncProgress { done: 0, total });
        self.check_sync_finished();
    }

    /// Messages below `from` are history from now on: they will not be announced as new.
    pub(super) fn skip_dispatch_below(&mut self, id: &ConversationId, from: Seq) {
        self.dispatch.skip_below(id, from);
        self.release(id);
    }

    /// Queues the seqs of `from..=to` that are neither held nor already requested, in chunks.
    /// Returns how many chunks were queued.
    pub(super) fn queue_pull(
        &mut self,
        id: &ConversationId,
        from: Seq,
        to: Seq,
        purpose: PullPurpose,
        front: bool,
    ) -> u32 {
        let Some(conv) = self.conversations.get(id) else {
            return 0;
        };
        let chunk_len = u64::from(self.config.pull_max_messages.max(1));
        self.pulls
            .queue(id, &conv.held, from, to, purpose, front, chunk_len)
    }

    /// Sends pull requests while slots are free, packing many conversations per request.
    pub(super) fn pump_pulls(&mut self, now: Timestamp) {
        if self.connection != ConnectionState::Connected {
            return;
        }
        let limits = PullLimits {
            in_flight: self.config.pulls_in_flight.max(1),
            messages: u64::from(self.config.pull_max_messages.max(1)),
            conversations: self.config.pull_max_conversations.max(1) as usize,
        };
        while let Some(chunks) = self.pulls.next_pull(limits) {
            let ranges = chunks
                .iter()
                .map(|c| PullRange {
                    conversation: c.conversation.clone(),
                    from: c.from,
                    to: c.to,
                })
                .collect();
            // The byte budget travels with every pull: a server caps its reply by it, so no
            // conversation is too big to sync and no reply exceeds the frame limit.
            let max_bytes = Some(self.config.pull_max_bytes.max(1));
            self.request(
                now,
                InFlight::Pull(chunks),
                Request::Pull { ranges, max_bytes },
            );
        }
    }

    pub(super) fn on_pulled(
        &mut self,
        now: Timestamp,
        chunks: Vec<PullChunk>,
        ranges: Vec<PulledRange>,
    ) {
        let mut by_key: HashMap<(ConversationId, Seq), PulledRange> = ranges
            .into_iter()
            .map(|r| ((r.conversation.clone(), r.from), r))
            .collect();
        let mut sync_progress = false;
        // Whether the reply brought anything new, and the chunks it left out: a server that
        // hits its count or byte cap cuts that range and leaves out the ranges after it.
        let mut progressed = false;
        let mut left_out = Vec::new();
        for chunk in chunks {
            let id = chunk.conversation.clone();
            let before = self
                .conversations
                .get(&id)
                .map(|c| c.held.count_in(chunk.from, chunk.to));
            let Some(range) = by_key.remove(&(id.clone(), chunk.from)) else {
                left_out.push(chunk);
                continue;
            };
            self.raise_floor(&id, range.min_seq);
            if let Some(conv) = self.conversations.get_mut(&id) {
                if conv.server_max_seq < range.max_seq {
                    conv.server_max_seq = range.max_seq;
                    self.batch.touch(&id);
                }
            }
            // Only what lies inside the chunk counts: a server cannot make us claim more.
            let to = range.to.min(chunk.to);
            let messages: Vec<ServerMessage> = range
                .messages
                .into_iter()
                .filter(|m| m.conversation == id && m.seq >= chunk.from && m.seq <= to)
                .collect();
            let missing = range.missing.intersect(chunk.from, to);
            // Drops the waiting entries of missing seqs, then releases what the floor
            // and the messages completed.
            self.ingest(&id, messages, &missing);
            let after = self
                .conversations
                .get(&id)
                .map(|c| c.held.count_in(chunk.from, chunk.to));
            progressed |= after > before;
            // A capped reply leaves a remainder: ask again while the server makes progress.
            sync_progress |= self.pulled_chunk_done(chunk, after > before);
        }
        // The chunks the reply left out are asked again while replies make progress; a
        // reply that brought nothing ends them (until a later sync), so a server that never
        // answers them cannot keep the engine asking.
        let left_out_count = left_out.len();
        for chunk in left_out {
            sync_progress |= self.pulled_chunk_done(chunk, progressed);
        }
        tracing::debug!(progressed, left_out = left_out_count, "pull replied");
        if sync_progress {
            self.sync_progressed();
        }
        let _ = now;
        self.check_sync_finished();
    }

    /// Ends the request of a pulled chunk: queues what it still misses again when `retry`
    /// (the server made progress), else counts it done. Returns whether the sync progressed.
    fn pulled_chunk_done(&mut self, chunk: PullChunk, retry: bool) -> bool {
        let id = chunk.conversation.clone();
        self.pulls.unrequest(&chunk);
        let complete = self
            .conversations
            .get(&id)
            .is_none_or(|c| c.held.contains_range(chunk.from, chunk.to));
        let requeued = if retry && !complete {
            self.queue_pull(&id, chunk.from, chunk.to, chunk.purpose, true)
        } else {
            0
        };
        // The requeued chunks replace this one in the purpose's outstanding count.
        self.pulls
            .add_outstanding(&chunk, requeued.saturating_sub(1));
        requeued == 0 && self.chunk_done(&chunk)
    }

    pub(super) fn on_pull_error(
        &mut self,
        now: Timestamp,
        chunks: Vec<PullChunk>,
        error: &ServerError,
    ) {
        if error.permanent {
            // Refused (e.g. no longer a member): these gaps stay until a later sync.
            let mut progress = false;
            for chunk in &chunks {
                self.pulls.unrequest(chunk);
                progress |= self.chunk_done(chunk);
            }
            if progress {
                self.sync_progressed();
            }
            self.check_sync_finished();
        } else {
            self.pulls
                .retry_later(chunks, now.plus_millis(self.config.send_retry_min_ms));
        }
    }

    /// Bookkeeping when a chunk will not be asked again; finishes the history load it was
    /// the last of. Returns whether sync progress moved.
    fn chunk_done(&mut self, chunk: &PullChunk) -> bool {
        let (progressed, history) = self.pulls.chunk_done(chunk);
        if let Some((id, h)) = history {
            self.finish_history(id, h);
        }
        progressed
    }

    /// Announces the sync run's progress.
    fn sync_progressed(&mut self) {
        if let Some((done, total)) = self.pulls.sync_progress() {
            self.batch.event(Event::SyncProgress { done, total });
        }
    }

    /// History load `id` is finished: complete if everything it asked for is held.
    pub(super) fn finish_history(&mut self, id: u64, h: HistoryRequest) {
        let complete = self
            .conversations
            .get(&h.conversation)
            .is_some_and(|c| c.held.contains_range(h.from, h.to));
        self.batch.event(Event::HistoryLoaded {
            id,
            conversation: h.conversation,
            complete,
        });
    }

    pub(super) fn check_sync_finished(&mut self) {
        if !self.pulls.take_finished_sync() {
            return;
        }
        tracing::debug!("sync complete");
        self.batch.event(Event::SyncFinished);
        if let SyncPolicy::NewestFirst {
            background_fill: true,
            ..
        } = self.config.policy
        {
            let mut ids: Vec<(Timestamp, ConversationId)> = self
                .conversations
                .values()
                .filter(|c| !c.gaps().is_empty())
                .map(|c| (c.last_activity, c.id.clone()))
                .collect();
            ids.sort_by(|a, b| b.0.cmp(&a.0).then_with(|| a.1.cmp(&b.1)));
            for (_, id) in ids {
                let Some(conv) = self.conversations.get(&id) else {
                    continue;
                };
                let floor = conv.server_min_seq.max(Seq(1));
                let top = conv.server_max_seq;
                self.queue_pull(&id, floor, top, PullPurpose::Fill, false);
            }
        }
    }

    /// After a push: pull what is missing between the dispatch frontier and the newest seq,
    /// but no more than the policy would pull (an old hole stays an explicit gap).
    pub(super) fn pull_gap_below_top(&mut self, id: &ConversationId) {
        let Some(conv) = self.conversations.get(id) else {
            return;
        };
        let top = conv.server_max_seq;
        let floor = conv.server_min_seq.max(Seq(1));
        let frontier = self.dispatch.frontier(id);
        let mut from = frontier.next().max(floor);
        if let SyncPolicy::NewestFirst {
            per_conversation, ..
        } = self.config.policy
        {
            from = from.max(Seq(top.0.saturating_sub(u64::from(per_conversation)) + 1));
        }
        if from > top || conv.held.contains_range(from, top) {
            return;
        }
        self.skip_dispatch_below(id, from);
        if self.connection == ConnectionState::Connected {
            self.queue_pull(id, from, top, PullPurpose::Gap, true);
        }
    }
}
