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
            self.batch.op(WriteOp::RemoveOutbox(client_msg_id.clone()));
            self.batch.op(WriteOp::DeletePendingMessage {
                conversation: id.clone(),
                client_msg_id: client_msg_id.clone(),
            });
            self.batch.event(Event::MessageSent {
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
        self.batch.op(WriteOp::PutOutbox(entry));
    }

    pub(super) fn fail_send(&mut self, client_msg_id: &ClientMsgId, error: ServerError) {
        let Some(state) = self.outbox.remove(client_msg_id) else {
            return;
        };
        let mut message = self.pending_message(&state.entry);
        message.status = MessageStatus::Failed {
            reason: format!("{}: {}", error.code, error.message),
        };
        self.batch.op(WriteOp::PutMessages(vec![message]));
        self.batch.op(WriteOp::RemoveOutbox(client_msg_id.clone()));
        self.batch.event(Event::SendFailed {
            conversation: state.entry.conversation,
            client_msg_id: client_msg_id.clone(),
            error,
        });
    }
}
