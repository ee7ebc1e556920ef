//! The outbox: sends after commit, acks, transient retries, permanent failures.

use super::*;

impl Engine {
    pub(super) fn pending_message(&self, entry: &OutboxEntry) -> Message {
        Message {
            conversation: entry.conversation.clone(),
            seq: None,
            client_msg_id: entry.client_msg_id.clone(),
            sender: self.config.user.clone(),
            kind: entry.kind.clone(),
            content: entry.content.clone(),
            created_at: entry.created_at,
            server_time: None,
            status: MessageStatus::Pending,
            edit_seq: None,
            revoked: false,
        }
    }

    pub(super) fn send_ready_outbox(&mut self, now: Timestamp) {
        if self.connection != ConnectionState::Connected {
            return;
        }
        let mut ready: Vec<&OutboxState> = self
            .outbox
            .values()
            .filter(|o| o.committed && !o.in_flight && o.not_before.is_none_or(|t| t <= now))
            .collect();
        ready.sort_by(|a, b| {
            (a.entry.created_at, &a.entry.client_msg_id)
                .cmp(&(b.entry.created_at, &b.entry.client_msg_id))
        });
        let ready: Vec<OutboxEntry> = ready.into_iter().map(|o| o.entry.clone()).collect();
        for entry in ready {
            if let Some(state) = self.outbox.get_mut(&entry.client_msg_id) {
                state.in_flight = true;
                state.not_before = None;
            }
            self.request(
                now,
                InFlight::Send(entry.client_msg_id.clone()),
                Request::Send {
                    conversation: entry.conversation,
                    client_msg_id: entry.client_msg_id,
                    kind: entry.kind,
                    content: entry.content,
                    created_at: entry.created_at,
                },
            );
        }
    }

    pub(super) fn on_send_ack(
        &mut self,
        _now: Timestamp,
        client_msg_id: &ClientMsgId,
        seq: Seq,
        server_time: Timestamp,
    ) {
        let Some(state) = self.outbox.get(client_msg_id) else {
            // Cancelled, or its echo already acked it.
            return;
        };
        let entry = state.entry.clone();
        let message = ServerMessage {
            conversation: entry.conversation.clone(),
            seq,
            client_msg_id: entry.client_msg_id.clone(),
            sender: self.config.user.clone(),
            kind: entry.kind,
            content: entry.content,
            created_at: entry.created_at,
            server_time,
        };
        let id = entry.conversation;
        let held = self
            .conversations
            .get(&id)
            .is_some_and(|c| c.held.contains(seq));
        if held {
            // The seq is already held: a tombstone (deleted right after it was sent) or a
            // pull that raced the ack under another id. The held row is the truth; the send
            // itself succeeded.
            self.outbox.remove(client_msg_id);
            self.acked_at_held_seq.insert(client_msg_id.clone());
            self.ops.push(WriteOp::RemoveOutbox(client_msg_id.clone()));
            self.ops.push(WriteOp::DeletePendingMessage {
                conversation: id.clone(),
                client_msg_id: client_msg_id.clone(),
            });
            self.events.push(Event::MessageSent {
                conversation: id,
                client_msg_id: client_msg_id.clone(),
                seq,
            });
            return;
        }
        self.ingest(&id, vec![message], &SeqRanges::new());
        self.pull_gap_below_top(&id);
    }

    pub(super) fn on_send_error(
        &mut self,
        now: Timestamp,
        client_msg_id: &ClientMsgId,
        error: ServerError,
    ) {
        let Some(state) = self.outbox.get_mut(client_msg_id) else {
            return;
        };
        state.in_flight = false;
        if error.permanent {
            self.fail_send(client_msg_id, error);
            return;
        }
        state.entry.attempts += 1;
        if state.entry.attempts >= self.config.send_max_attempts {
            let error = ServerError {
                code: error.code,
                message: format!(
                    "gave up after {} attempts: {}",
                    state.entry.attempts, error.message
                ),
                permanent: true,
            };
            self.fail_send(client_msg_id, error);
            return;
        }
        let exp = (state.entry.attempts - 1).min(16);
        let delay = self.config.send_retry_min_ms.saturating_mul(1 << exp);
        state.not_before = Some(now.plus_millis(delay));
        let entry = state.entry.clone();
        self.ops.push(WriteOp::PutOutbox(entry));
    }

    pub(super) fn fail_send(&mut self, client_msg_id: &ClientMsgId, error: ServerError) {
        let Some(state) = self.outbox.remove(client_msg_id) else {
            return;
        };
        let mut message = self.pending_message(&state.entry);
        message.status = MessageStatus::Failed {
            reason: format!("{}: {}", error.code, error.message),
        };
        self.ops.push(WriteOp::PutMessages(vec![message]));
        self.ops.push(WriteOp::RemoveOutbox(client_msg_id.clone()));
        self.events.push(Event::SendFailed {
            conversation: state.entry.conversation,
            client_msg_id: client_msg_id.clone(),
            error,
        });
    }

    /// A new client id for a send in `conversation`:
    /// `{device}:{time:012x}-{counter:06x}-{random:016x}-{tag:016x}`.
    ///
    /// - The device prefix marks this device's own sends, so an echo is known as one even
    ///   after the outbox forgot it (a send that failed here but reached the server).
    /// - Fixed-width time and counter: ids sort in creation order, so the outbox (ordered by
    ///   time, then id) resends same-millisecond messages in the order they were sent. The
    ///   counter continues above the outbox's ids after a restart.
    /// - The random part comes from the seed, the start time and a digest of the snapshot
    ///   the engine started from (see [`EngineConfig::seed`]).
    /// - The tag binds the id to its conversation ([`conversation_tag`]): an echo is
    ///   recognised by the prefix only in the conversation the send was made in.
    ///
    /// An id already in the outbox is never made again.
    pub(super) fn new_client_msg_id(
        &mut self,
        now: Timestamp,
        conversation: &ConversationId,
    ) -> ClientMsgId {
        loop {
            self.sends_created += 1;
            let r = self.next_random() ^ self.id_salt;
            let head = format!(
                "{}{:012x}-{:06x}-{:016x}",
                self.client_id_prefix(),
                now.0,
                self.sends_created,
                r
            );
            let id = ClientMsgId(format!(
                "{head}-{:016x}",
                conversation_tag(conversation, &head)
            ));
            if !self.outbox.contains_key(&id) {
                return id;
            }
        }
    }

    /// The prefix of every client id this device makes.
    pub(super) fn client_id_prefix(&self) -> String {
        format!("{}:", self.config.device)
    }

    /// Whether `id` was made by this device for a send in `conversation` (its prefix is this
    /// device's and its tag matches the conversation). Ids of other devices, of other
    /// conversations, and ids made before tags existed are not.
    pub(super) fn is_own_client_id_in(
        &self,
        conversation: &ConversationId,
        id: &ClientMsgId,
    ) -> bool {
        if !id.0.starts_with(&self.client_id_prefix()) {
            return false;
        }
        let Some((head, tag)) = id.0.rsplit_once('-') else {
            return false;
        };
        tag.len() == 16
            && u64::from_str_radix(tag, 16).is_ok_and(|t| t == conversation_tag(conversation, head))
    }

    /// The counter of an id this device made, if `id` is one.
    pub(super) fn own_id_counter(&self, id: &ClientMsgId) -> Option<u64> {
        let body = id.0.strip_prefix(&self.client_id_prefix())?;
        let counter = body.split('-').nth(1)?;
        u64::from_str_radix(counter, 16).ok()
    }

    /// splitmix64: deterministic per seed, good enough for ids and jitter.
    pub(super) fn next_random(&mut self) -> u64 {
        self.rng = self.rng.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.rng;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
}

/// FNV-1a over `bytes`, continuing from `hash`. Stable across builds and platforms: client
/// id tags are stored and checked by later builds.
pub(super) fn fnv1a(hash: u64, bytes: &[u8]) -> u64 {
    bytes.iter().fold(hash, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x0000_0100_0000_01B3)
    })
}

/// splitmix64's finalizer: spreads every input bit over the output.
pub(super) fn mix64(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

const FNV_OFFSET: u64 = 0xCBF2_9CE4_8422_2325;

/// The tag of a client id: a hash of the conversation and the id's other parts. Part of the
/// id format (stable), so it must never change.
pub(super) fn conversation_tag(conversation: &ConversationId, head: &str) -> u64 {
    let h = fnv1a(FNV_OFFSET, conversation.0.as_bytes());
    // A separator byte that is not UTF-8, so ("ab", "c") and ("a", "bc") differ.
    let h = fnv1a(h, &[0xFF]);
    mix64(fnv1a(h, head.as_bytes()))
}

/// A digest of what the engine starts from, mixed into the random part of client ids: an
/// engine restarted with the same seed in the same millisecond, but after any durable change
/// (a send changes its conversation's record and the outbox), makes other ids.
pub(super) fn snapshot_digest(snapshot: &SyncSnapshot) -> u64 {
    let mut outbox = FNV_OFFSET;
    for entry in &snapshot.outbox {
        outbox = fnv1a(outbox, entry.conversation.0.as_bytes());
        outbox = fnv1a(outbox, &[0xFF]);
        outbox = fnv1a(outbox, entry.client_msg_id.0.as_bytes());
        outbox = fnv1a(outbox, &[0xFF]);
    }
    // Conversations come in no particular order: combine their hashes by addition.
    let mut conversations = 0u64;
    for conv in &snapshot.conversations {
        let mut h = fnv1a(FNV_OFFSET, conv.id.0.as_bytes());
        h = fnv1a(h, &[0xFF]);
        for n in [
            conv.server_max_seq.0,
            conv.server_min_seq.0,
            conv.read_seq.0,
            conv.last_activity.0,
            conv.held.count(),
            conv.held.ranges().len() as u64,
            conv.deleted.count(),
        ] {
            h = fnv1a(h, &n.to_le_bytes());
        }
        if let Some(latest) = &conv.latest {
            h = fnv1a(h, latest.client_msg_id.0.as_bytes());
            h = fnv1a(h, &latest.seq.map_or(0, |s| s.0).to_le_bytes());
            h = fnv1a(h, &latest.time.0.to_le_bytes());
        }
        conversations = conversations.wrapping_add(mix64(h));
    }
    mix64(outbox ^ mix64(conversations) ^ snapshot.pending_changes.len() as u64)
}
