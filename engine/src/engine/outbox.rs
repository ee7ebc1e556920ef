//! The outbox: this device's sends and read marks until the server acks them.
//!
//! Owns every send not yet acked or failed (whether its batch committed, whether it is on the
//! wire, when a transient error lets it go again, how many attempts it took), the sends this
//! process acked, and the read marks the server has not acked. It never builds a
//! request, writes or announces (it tells the engine what to send, write or announce), and
//! never reads a clock: `now` is passed in.

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use crate::model::{
    ClientMsgId, ConversationId, Message, MessageStatus, OutboxEntry, Seq, Timestamp, UserId,
};
use crate::protocol::ServerError;

/// An outbox entry and where it stands.
#[derive(Clone, Debug)]
struct OutboxState {
    entry: OutboxEntry,
    /// Its batch committed: it may go on the wire.
    committed: bool,
    in_flight: bool,
    /// After a transient error: not before this time.
    not_before: Option<Timestamp>,
}

/// What became of a send after an error reply.
#[derive(Debug)]
pub(super) enum SendFailure {
    /// Not in the outbox (cancelled, or acked by its echo): nothing to do.
    Unknown,
    /// Goes again later; the entry (with its attempts counted) is to be written.
    RetryLater(OutboxEntry),
    /// Given up (a permanent error, or too many attempts): removed from the outbox.
    GaveUp(OutboxEntry, ServerError),
}

/// How many acked sends the outbox remembers (about 64 bytes each: well under 1 MiB).
pub(super) const ACKED_REMEMBERED: usize = 10_000;

/// The sends and read marks waiting for the server's ack.
#[derive(Debug, Default)]
pub(super) struct Outbox {
    sends: BTreeMap<ClientMsgId, OutboxState>,
    /// Sends acked in this process (`MessageSent` emitted), by their ack or their echo: a later
    /// delivery of the same id at another seq is not their echo, and `MessageSent` is not
    /// emitted again. The store cannot tell: a send acked at a seq already held has no row,
    /// and a sent row goes when the server deletes its seq. Only a server contradicting
    /// itself delivers an acked id again; process memory only, the last
    /// [`ACKED_REMEMBERED`] of them, so memory stays bounded by conversations rather than by
    /// sends: an older one is forgotten as a restart forgets them all.
    acked: BTreeSet<ClientMsgId>,
    /// `acked` in the order acked, oldest first, to forget the oldest.
    acked_order: VecDeque<ClientMsgId>,
    /// Read seqs set locally that the server has not acked yet.
    reads: BTreeMap<ConversationId, Seq>,
}

impl Outbox {
    /// The outbox as stored: every entry committed, none on the wire.
    pub(super) fn from_stored(entries: Vec<OutboxEntry>) -> Self {
        let sends = entries
            .into_iter()
            .map(|entry| {
                (
                    entry.client_msg_id.clone(),
                    OutboxState {
                        entry,
                        committed: true,
                        in_flight: false,
                        not_before: None,
                    },
                )
            })
            .collect();
        Self {
            sends,
            ..Self::default()
        }
    }

    /// How many sends wait.
    pub(super) fn len(&self) -> usize {
        self.sends.len()
    }

    /// Whether no send waits.
    pub(super) fn is_empty(&self) -> bool {
        self.sends.is_empty()
    }

    /// Whether `id` is a send waiting here.
    pub(super) fn contains(&self, id: &ClientMsgId) -> bool {
        self.sends.contains_key(id)
    }

    /// The waiting send `id`.
    pub(super) fn entry(&self, id: &ClientMsgId) -> Option<&OutboxEntry> {
        self.sends.get(id).map(|o| &o.entry)
    }

    /// The waiting sends, oldest first.
    pub(super) fn entries(&self) -> Vec<&OutboxEntry> {
        let mut entries: Vec<&OutboxEntry> = self.sends.values().map(|o| &o.entry).collect();
        entries.sort_by(|a, b| {
            (a.created_at, &a.client_msg_id).cmp(&(b.created_at, &b.client_msg_id))
        });
        entries
    }

    /// A new send, whose batch has not committed yet.
    pub(super) fn add(&mut self, entry: OutboxEntry) {
        self.sends.insert(
            entry.client_msg_id.clone(),
            OutboxState {
                entry,
                committed: false,
                in_flight: false,
                not_before: None,
            },
        );
    }

    /// Takes send `id` out (cancelled).
    pub(super) fn remove(&mut self, id: &ClientMsgId) -> Option<OutboxEntry> {
        self.sends.remove(id).map(|o| o.entry)
    }

    /// The batch holding send `id` committed: it may go on the wire.
    pub(super) fn committed(&mut self, id: &ClientMsgId) {
        if let Some(state) = self.sends.get_mut(id) {
            state.committed = true;
        }
    }

    /// The sends that may go on the wire at `now`, oldest first, marked as on the wire.
    pub(super) fn take_ready(&mut self, now: Timestamp) -> Vec<OutboxEntry> {
        let mut ready: Vec<&mut OutboxState> = self
            .sends
            .values_mut()
            .filter(|o| o.committed && !o.in_flight && o.not_before.is_none_or(|t| t <= now))
            .collect();
        ready.sort_by(|a, b| {
            (a.entry.created_at, &a.entry.client_msg_id)
                .cmp(&(b.entry.created_at, &b.entry.client_msg_id))
        });
        ready
            .into_iter()
            .map(|state| {
                state.in_flight = true;
                state.not_before = None;
                state.entry.clone()
            })
            .collect()
    }

    /// The connection went: nothing is on the wire any more (resent on the next one).
    pub(super) fn connection_lost(&mut self) {
        for state in self.sends.values_mut() {
            state.in_flight = false;
        }
    }

    /// When the earliest send waiting after a transient error may go again.
    pub(super) fn next_retry(&self) -> Option<Timestamp> {
        self.sends
            .values()
            .filter(|o| o.committed && !o.in_flight)
            .filter_map(|o| o.not_before)
            .min()
    }

    /// Send `id` got an error reply at `now`: given up when permanent or after
    /// `max_attempts`, else retried after a backoff from `retry_min_ms`.
    pub(super) fn send_failed(
        &mut self,
        now: Timestamp,
        id: &ClientMsgId,
        error: ServerError,
        max_attempts: u32,
        retry_min_ms: u64,
    ) -> SendFailure {
        let Some(state) = self.sends.get_mut(id) else {
            return SendFailure::Unknown;
        };
        state.in_flight = false;
        if error.permanent {
            return self.give_up(id, error);
        }
        state.entry.attempts += 1;
        if state.entry.attempts >= max_attempts {
            let error = ServerError {
                code: error.code,
                message: format!(
                    "gave up after {} attempts: {}",
                    state.entry.attempts, error.message
                ),
                permanent: true,
            };
            return self.give_up(id, error);
        }
        let exp = (state.entry.attempts - 1).min(16);
        let delay = retry_min_ms.saturating_mul(1 << exp);
        state.not_before = Some(now.plus_millis(delay));
        SendFailure::RetryLater(state.entry.clone())
    }

    fn give_up(&mut self, id: &ClientMsgId, error: ServerError) -> SendFailure {
        match self.sends.remove(id) {
            Some(state) => SendFailure::GaveUp(state.entry, error),
            None => SendFailure::Unknown,
        }
    }

    /// Send `id` was acked (by its ack or its echo; `MessageSent` is emitted): it leaves the
    /// outbox if still there, and a later copy of it is not its echo. Returns its entry.
    pub(super) fn acked(&mut self, id: &ClientMsgId) -> Option<OutboxEntry> {
        if self.acked.insert(id.clone()) {
            self.acked_order.push_back(id.clone());
            if self.acked_order.len() > ACKED_REMEMBERED {
                if let Some(oldest) = self.acked_order.pop_front() {
                    self.acked.remove(&oldest);
                }
            }
        }
        self.sends.remove(id).map(|o| o.entry)
    }

    /// Whether send `id` was acked in this process.
    pub(super) fn was_acked(&self, id: &ClientMsgId) -> bool {
        self.acked.contains(id)
    }

    /// A read mark up to `seq` in `conversation` to send (replacing a lower one).
    pub(super) fn mark_read(&mut self, conversation: &ConversationId, seq: Seq) {
        self.reads.insert(conversation.clone(), seq);
    }

    /// A read mark up to `seq` to send, unless one is already waiting.
    pub(super) fn keep_read(&mut self, conversation: &ConversationId, seq: Seq) {
        self.reads.entry(conversation.clone()).or_insert(seq);
    }

    /// The server holds `conversation` read up to `seq`: a waiting mark not above it is done.
    pub(super) fn read_acked(&mut self, conversation: &ConversationId, seq: Seq) {
        if self.reads.get(conversation).is_some_and(|s| *s <= seq) {
            self.reads.remove(conversation);
        }
    }

    /// Whether a read mark waits for the server's ack.
    pub(super) fn has_reads(&self) -> bool {
        !self.reads.is_empty()
    }

    /// The read marks waiting for the server's ack.
    pub(super) fn reads(&self) -> Vec<(ConversationId, Seq)> {
        self.reads.iter().map(|(c, s)| (c.clone(), *s)).collect()
    }
}

/// The pending row of `entry`, a send of `user`.
pub(super) fn pending_message(user: &UserId, entry: &OutboxEntry) -> Message {
    Message {
        conversation: entry.conversation.clone(),
        seq: None,
        client_msg_id: entry.client_msg_id.clone(),
        sender: user.clone(),
        kind: entry.kind.clone(),
        content: entry.content.clone(),
        created_at: entry.created_at,
        server_time: None,
        status: MessageStatus::Pending,
        edit_seq: None,
        revoked: false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn acked_sends_are_remembered_up_to_the_bound_oldest_forgotten_first() {
        let mut outbox = Outbox::default();
        let id = |i: usize| ClientMsgId::from(format!("d:{i}"));
        // Acking one send twice (its echo, then its ack) counts it once.
        outbox.acked(&id(0));
        outbox.acked(&id(0));
        for i in 1..=ACKED_REMEMBERED {
            outbox.acked(&id(i));
        }
        assert!(!outbox.was_acked(&id(0)), "the oldest is forgotten");
        assert!(outbox.was_acked(&id(1)));
        assert!(outbox.was_acked(&id(ACKED_REMEMBERED)));
        assert_eq!(outbox.acked.len(), ACKED_REMEMBERED);
        assert_eq!(outbox.acked_order.len(), ACKED_REMEMBERED);
    }
}
