//! The sans-IO [`Engine`]: seq alignment, inbox reconciliation and event dispatch.
//!
//! # What it never does
//! Nothing under this module awaits, reads a clock, touches a socket or a file, spawns, or
//! draws randomness from anywhere but the seed: time comes in as a [`Timestamp`] with every
//! call, randomness from one [`SplitMix64`] seeded from [`EngineConfig::seed`] and the start
//! time, and everything the engine wants done leaves as an [`Output`]. The same inputs give the
//! same outputs in the same order, which is what the simulation and the snapshots rely on. It
//! reports its decisions through `tracing` (never message content or tokens); emitting an event
//! with no subscriber installed does nothing.
//!
//! # How it holds together
//! - Every input or command mutates the in-memory state and records the durable part of the
//!   change as ops of one [`WriteBatch`](crate::WriteBatch); the batch is emitted when the input
//!   returns. In-memory state runs ahead of storage, so batches must commit in order; if one
//!   fails the engine stops and the driver restarts it from a fresh snapshot, which is exactly
//!   crash recovery.
//! - Events ride on the batch that holds their data and are released by
//!   [`Engine::handle_batch_committed`]. Sends go on the wire only after their outbox entry
//!   committed.
//! - New-message dispatch uses a per-conversation *frontier*: the highest seq up to which
//!   everything was dispatched or deliberately skipped. A message is announced as new only when
//!   it lands above the frontier and every seq below it up to the frontier is held, so each
//!   conversation's new messages go out in seq order, once.
//!
//! # Parts
//! [`Engine`] holds the conversations (the in-memory mirror of what the store holds, with the
//! edits waiting for their target) and the connection state, and coordinates parts that each
//! own their state; a part never reaches into the engine or another part: what it needs from
//! them is passed in, and what it decides is handed back.
//! - `outbox`: sends and read marks until the server acks them, retries after transient errors.
//! - `dispatch`: the per-conversation frontiers and the messages waiting above them.
//! - `pulls`: the pull planner: the sync run, the pull queue and its chunks, the pulls in
//!   flight, the history loads waiting for them.
//! - `requests`: request ids, requests in flight and their deadlines, heartbeat, reconnect
//!   backoff.
//! - `batch`: the batch being built (ops and the events riding on it) and the uncommitted ones.
//! - `client_ids`: making and recognising this device's client ids.
//! - `changes`: edits and revokes waiting for their target.
//! - `cursor`: the server's sync token (change cursor): the `since` of the next listing, and
//!   when a new token may be stored (its run complete) or must not be (a read mark unacked).
//!
//! The engine's own code is split by input: this file holds the public inputs, commands,
//! `poll_output`, the connection and the sends; `sync` the listing, deletion lists and pull
//! replies; `ingest` messages, tombstones, changes, read state and unread counts.

use std::collections::{BTreeSet, HashMap, VecDeque};

use crate::config::EngineConfig;
use crate::containment;
use crate::model::{
    ClientMsgId, ContentKind, Conversation, ConversationId, Message, MessageStatus, OutboxEntry,
    Seq, ServerMessage, Timestamp,
};
use crate::output::{ConnectionState, Event, Output};
use crate::protocol::{Push, Request, RequestId, Response, ServerError};
use crate::rng::SplitMix64;
use crate::seq_ranges::SeqRanges;
use crate::storage::{Applied, BatchId, StorageError, SyncSnapshot, WriteOp};
use batch::Batches;
use changes::PendingChanges;
use client_ids::ClientIds;
use cursor::SyncCursor;
use dispatch::Frontiers;
use outbox::{Outbox, SendFailure};
use pulls::{PullPlanner, PullPurpose};
use requests::{InFlight, Requests};

mod batch;
mod changes;
mod client_ids;
mod cursor;
mod dispatch;
mod ingest;
mod outbox;
mod pulls;
mod requests;
mod sync;

/// A command the engine refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CommandError {
    /// No such conversation is known.
    #[error("unknown conversation {0}")]
    UnknownConversation(ConversationId),
    /// No such message is pending or failed.
    #[error("unknown message {0}")]
    UnknownMessage(ClientMsgId),
    /// The message is not in a state that allows this (e.g. retrying a sent message).
    #[error("message {0} cannot be retried: it is not failed")]
    NotFailed(ClientMsgId),
    /// The engine stopped after a storage failure; restart it from a snapshot.
    #[error("engine stopped after a storage failure")]
    Stopped,
    /// A send under a client id this device did not make for that conversation (see
    /// [`Engine::send_message_as`]).
    #[error("client id {0} was not made by this device for this conversation")]
    ForeignClientMsgId(ClientMsgId),
}

/// The sync state machine. See the crate docs for the driver rule.
#[derive(Debug)]
pub struct Engine {
    config: EngineConfig,
    /// The engine's one source of randomness (client ids, reconnect jitter), from the seed.
    rng: SplitMix64,
    client_ids: ClientIds,

    // What the store holds, in memory (ahead of it by the uncommitted batches).
    conversations: HashMap<ConversationId, Conversation>,
    /// The sum of the conversations' unread counts.
    total_unread: u64,
    pending_changes: PendingChanges,

    // The connection: its state, and whether the server kicked this device (no reconnect) or
    // a storage failure stopped the engine (nothing more until a restart).
    connection: ConnectionState,
    kicked: bool,
    stopped: bool,

    // The parts.
    outbox: Outbox,
    dispatch: Frontiers,
    requests: Requests,
    pulls: PullPlanner,
    cursor: SyncCursor,
    batch: Batches,
    /// What `poll_output` hands the driver next.
    outputs: VecDeque<Output>,
}

impl Engine {
    /// Starts from a snapshot loaded with [`crate::Storage::load_snapshot`]. With
    /// `connect_on_start` the first output is [`Output::Connect`].
    pub fn new(config: EngineConfig, snapshot: SyncSnapshot, now: Timestamp) -> Self {
        let sync_token = snapshot.sync_token.clone();
        let client_ids = ClientIds::new(
            &config.device,
            &snapshot,
            snapshot.outbox.iter().map(|e| &e.client_msg_id),
        );
        let mut conversations = HashMap::with_capacity(snapshot.conversations.len());
        let mut dispatch = Frontiers::default();
        let mut changed = BTreeSet::new();
        let mut total_unread = 0;
        for mut conv in snapshot.conversations {
            // Unread is derived; recomputing heals a store written by an older build.
            let unread = conv.compute_unread();
            if unread != conv.unread {
                conv.unread = unread;
                changed.insert(conv.id.clone());
            }
            total_unread += unread;
            dispatch.start(&conv.id, conv.held.max().unwrap_or(Seq(0)));
            conversations.insert(conv.id.clone(), conv);
        }
        let outbox = Outbox::from_stored(snapshot.outbox);
        let pending_changes = PendingChanges::from_stored(snapshot.pending_changes);
        let rng = SplitMix64::new(config.seed ^ now.0.rotate_left(32) ^ 0x9E37_79B9_7F4A_7C15);
        let connect = config.connect_on_start;
        let mut engine = Self {
            config,
            rng,
            client_ids,
            conversations,
            dispatch,
            total_unread,
            outbox,
            pending_changes,
            connection: ConnectionState::Disconnected,
            kicked: false,
            stopped: false,
            requests: Requests::new(),
            pulls: PullPlanner::new(),
            cursor: SyncCursor::new(sync_token),
            batch: Batches::new(changed, total_unread),
            outputs: VecDeque::new(),
        };
        if connect {
            engine.requests.reconnect_at_once(now);
        }
        engine.handle_timeout(now);
        engine
    }

    // ----- getters -----

    /// The configuration.
    pub fn config(&self) -> &EngineConfig {
        &self.config
    }

    /// Connection state.
    pub fn connection_state(&self) -> ConnectionState {
        self.connection
    }

    /// A conversation's state as the engine holds it (may be ahead of storage by the batches
    /// not yet committed).
    pub fn conversation(&self, id: &ConversationId) -> Option<&Conversation> {
        self.conversations.get(id)
    }

    /// How many conversations the engine knows.
    pub fn conversation_count(&self) -> usize {
        self.conversations.len()
    }

    /// Sum of unread counts.
    pub fn total_unread(&self) -> u64 {
        self.total_unread
    }

    /// Sends not yet acked or failed, oldest first.
    pub fn outbox(&self) -> Vec<&OutboxEntry> {
        self.outbox.entries()
    }

    /// How many sends are neither acked nor failed: `outbox().len()` without collecting and
    /// sorting them (the driver asks after every input).
    pub fn outbox_len(&self) -> usize {
        self.outbox.len()
    }

    /// Whether the engine stopped after a storage failure (restart it from a snapshot).
    pub fn is_stopped(&self) -> bool {
        self.stopped
    }

    /// Whether a sync run (after connect) is still going.
    pub fn is_syncing(&self) -> bool {
        self.pulls.is_syncing()
    }

    /// Whether nothing is in flight: no request, queued pull, uncommitted batch or output,
    /// and, while connected, no send waiting (for instance for a retry after a transient
    /// error). Unsent outbox entries do not count while disconnected.
    pub fn is_idle(&self) -> bool {
        let sends_waiting =
            self.connection == ConnectionState::Connected && !self.outbox.is_empty();
        !sends_waiting
            && self.requests.is_empty()
            && self.pulls.queue_is_empty()
            && !self.batch.has_uncommitted()
            && self.outputs.is_empty()
            && !self.pulls.is_syncing()
    }

    // ----- inputs -----

    /// The connection is up (after [`Output::Connect`]). Starts a sync run and resends the
    /// outbox and unacked read marks.
    ///
    /// Called while already connected (a driver breaking the contract, or a transport that
    /// reconnected on its own), it is a disconnect followed by a connect: the old connection's
    /// requests, pulls and sync run are dropped (late replies to them are ignored), and a new
    /// run starts, so its progress never mixes with the old one's.
    pub fn handle_connected(&mut self, now: Timestamp) {
        if self.stopped {
            return;
        }
        if self.connection == ConnectionState::Connected {
            self.abandon_connection();
        }
        tracing::debug!("connected: a sync run starts");
        self.connection = ConnectionState::Connected;
        self.requests
            .connected(now, self.config.heartbeat_interval_ms);
        self.batch.event(Event::ConnectionChanged {
            state: ConnectionState::Connected,
        });
        self.batch.event(Event::SyncStarted);
        self.pulls.start_sync();
        let since = self.cursor.start();
        self.request(
            now,
            InFlight::MaxSeqs,
            Request::GetMaxSeqs {
                after: None,
                limit: self.config.max_seqs_page,
                since,
            },
        );
        self.send_ready_outbox(now);
        for (conversation, seq) in self.outbox.reads() {
            self.request(
                now,
                InFlight::MarkRead(conversation.clone(), seq),
                Request::MarkRead { conversation, seq },
            );
        }
        self.flush();
    }

    /// The connection is down, or a connect failed. Schedules a reconnect with backoff.
    /// Harmless when already disconnected.
    pub fn handle_disconnected(&mut self, now: Timestamp, reason: &str) {
        if self.stopped || self.connection == ConnectionState::Disconnected {
            return;
        }
        // The transport's reason may carry addresses or more: not logged.
        let _ = reason;
        tracing::debug!("disconnected");
        self.connection_lost(now);
        self.flush();
    }

    /// The response to request `id`. Responses to requests of an earlier connection are
    /// ignored.
    pub fn handle_response(&mut self, now: Timestamp, id: RequestId, mut response: Response) {
        if self.stopped {
            return;
        }
        let Some(what) = self.requests.finish(id) else {
            return;
        };
        if !containment::contain_response(&mut response) {
            response = Response::Error(unexpected());
        }
        match (what, response) {
            (
                InFlight::MaxSeqs,
                Response::MaxSeqs {
                    entries,
                    has_more,
                    token,
                    full,
                },
            ) => {
                self.cursor.page(token, full);
                self.on_max_seqs(now, entries, has_more)
            }
            (InFlight::MaxSeqs, _) => {
                // Without the listing the sync cannot go on; a fresh connection retries it.
                self.drop_connection(now, "max seq listing refused");
            }
            (InFlight::Pull(chunks), Response::Pulled { ranges }) => {
                self.pulls.pull_answered();
                self.on_pulled(now, chunks, ranges);
            }
            (InFlight::Pull(chunks), Response::Error(error)) => {
                self.pulls.pull_answered();
                self.on_pull_error(now, chunks, &error);
            }
            (InFlight::Pull(chunks), _) => {
                self.pulls.pull_answered();
                self.on_pull_error(now, chunks, &unexpected());
            }
            (
                InFlight::Send(client_msg_id),
                Response::SendAck {
                    client_msg_id: acked,
                    seq,
                    server_time,
                },
            ) if acked == client_msg_id => self.on_send_ack(now, &client_msg_id, seq, server_time),
            (InFlight::Send(client_msg_id), Response::Error(error)) => {
                self.on_send_error(now, &client_msg_id, error)
            }
            (InFlight::Send(client_msg_id), _) => {
                self.on_send_error(now, &client_msg_id, unexpected())
            }
            (InFlight::MarkRead(conversation, seq), response) => {
                let done = match response {
                    Response::ReadAck { .. } => true,
                    Response::Error(e) => e.permanent,
                    _ => false,
                };
                if done {
                    self.outbox.read_acked(&conversation, seq);
                }
            }
            (InFlight::Deletions, Response::Deletions { entries }) => {
                self.on_deletions(entries);
                self.cursor.deletions_answered(true);
            }
            // Not fatal: the counts still differ, so the next listing asks again (and the
            // cursor keeps the old token, so a delta listing lists the conversation again).
            (InFlight::Deletions, _) => self.cursor.deletions_answered(false),
            (InFlight::Ping, _) => {}
        }
        self.after_input(now);
    }

    /// A push from the server.
    pub fn handle_push(&mut self, now: Timestamp, mut push: Push) {
        if self.stopped {
            return;
        }
        containment::contain_push(&mut push);
        match push {
            Push::Message(msg) => {
                let conversation = msg.conversation.clone();
                self.ensure_conversation(&conversation, None);
                self.ingest(&conversation, vec![msg], &SeqRanges::new());
                self.pull_gap_below_top(&conversation);
            }
            Push::ReadSeq { conversation, seq } => {
                if self.conversations.contains_key(&conversation) {
                    self.set_read(&conversation, seq);
                    self.outbox.read_acked(&conversation, seq);
                }
            }
            Push::Deleted {
                conversation,
                seqs,
                min_seq,
            } => {
                if self.conversations.contains_key(&conversation) {
                    // The floor first, then the deletions, and only then the release (in
                    // `ingest`): a waiting message this push deletes is never announced.
                    self.raise_floor(&conversation, min_seq);
                    self.ingest(&conversation, Vec::new(), &seqs);
                }
            }
            Push::Conversation { conversation, kind } => {
                self.ensure_conversation(&conversation, Some(kind));
            }
            Push::Kicked { reason } => {
                self.kicked = true;
                self.batch.event(Event::Kicked {
                    reason: reason.clone(),
                });
                self.drop_connection(now, &reason);
            }
        }
        self.after_input(now);
    }

    /// Batch `id` committed: releases its events and the sends waiting for it. `applied` is
    /// what the store reported ([`Storage::apply`](crate::Storage::apply)): an edit or revoke
    /// it refused is announced as [`Containment::ChangeRefused`](crate::Containment::ChangeRefused), not as an update.
    pub fn handle_batch_committed(&mut self, now: Timestamp, id: BatchId, applied: &Applied) {
        if self.stopped {
            return;
        }
        let Some(pending) = self.batch.committed(id, applied) else {
            return;
        };
        self.outputs
            .extend(pending.events.into_iter().map(Output::Event));
        for client_msg_id in &pending.send_after {
            self.outbox.committed(client_msg_id);
        }
        self.send_ready_outbox(now);
        self.flush();
    }

    /// Batch `id` failed. The engine stops: its memory is ahead of the store, so the driver
    /// restarts it from a fresh snapshot, exactly as after a crash.
    pub fn handle_batch_failed(&mut self, now: Timestamp, id: BatchId, error: &StorageError) {
        let _ = now;
        if self.stopped {
            return;
        }
        tracing::debug!(batch = id.0, "engine stopped on a storage failure");
        self.stopped = true;
        self.outputs.clear();
        self.batch.forget_uncommitted();
        self.requests.forget_all();
        self.outputs.push_back(Output::Event(Event::StorageFailed {
            error: error.to_string(),
        }));
        if self.connection != ConnectionState::Disconnected {
            self.outputs.push_back(Output::Disconnect {
                reason: "storage failure".to_owned(),
            });
        }
        self.connection = ConnectionState::Disconnected;
    }

    /// Time passed: reconnects, heartbeats, request timeouts, send retries. Harmless when
    /// nothing is due.
    pub fn handle_timeout(&mut self, now: Timestamp) {
        if self.stopped {
            return;
        }
        match self.connection {
            ConnectionState::Disconnected => {
                if !self.kicked && self.requests.take_reconnect_due(now) {
                    tracing::debug!("connect decided");
                    self.connection = ConnectionState::Connecting;
                    self.outputs.push_back(Output::Connect);
                    self.batch.event(Event::ConnectionChanged {
                        state: ConnectionState::Connecting,
                    });
                }
            }
            ConnectionState::Connecting => {}
            ConnectionState::Connected => {
                if self.requests.timed_out(now) {
                    tracing::debug!("request timed out: dropping the connection");
                    self.drop_connection(now, "request timed out");
                } else {
                    if self
                        .requests
                        .ping_due(now, self.config.heartbeat_interval_ms)
                    {
                        self.request(now, InFlight::Ping, Request::Ping);
                    }
                    self.pulls.retry_due(now);
                    self.send_ready_outbox(now);
                }
            }
        }
        self.after_input(now);
    }

    // ----- commands -----

    /// Sends a message: the pending message and its outbox entry are written in one batch,
    /// and the request goes on the wire once that batch committed (and the connection is up).
    /// Returns the message's client id.
    pub fn send_message(
        &mut self,
        now: Timestamp,
        conversation: &ConversationId,
        kind: ContentKind,
        content: Vec<u8>,
    ) -> Result<ClientMsgId, CommandError> {
        let client_msg_id = self.new_client_msg_id(now, conversation)?;
        self.send_message_as(now, conversation, client_msg_id, kind, content)
    }

    /// A client id for a send in `conversation` that has not happened yet, for
    /// [`Engine::send_message_as`]. Nothing is written: an id that is never sent is simply
    /// never used. For a caller that must be able to repeat a send without doubling it (a
    /// browser tab whose call to the tab owning the engine may be cut off).
    pub fn new_client_msg_id(
        &mut self,
        now: Timestamp,
        conversation: &ConversationId,
    ) -> Result<ClientMsgId, CommandError> {
        self.check_running()?;
        if !self.conversations.contains_key(conversation) {
            return Err(CommandError::UnknownConversation(conversation.clone()));
        }
        let outbox = &self.outbox;
        Ok(self
            .client_ids
            .make(&mut self.rng, now, conversation, |id| outbox.contains(id)))
    }

    /// [`Engine::send_message`] under a client id from [`Engine::new_client_msg_id`] (of
    /// this engine or an earlier one of this device). Repeating it while the send is in the
    /// outbox changes nothing and returns the id again; the caller checks the store for a
    /// send that already left the outbox (acked or failed), as `tidemark::Client` does. An
    /// id this device did not make for this conversation is refused: the engine knows its
    /// own echoes by their ids.
    pub fn send_message_as(
        &mut self,
        now: Timestamp,
        conversation: &ConversationId,
        client_msg_id: ClientMsgId,
        kind: ContentKind,
        content: Vec<u8>,
    ) -> Result<ClientMsgId, CommandError> {
        self.check_running()?;
        if !self.conversations.contains_key(conversation) {
            return Err(CommandError::UnknownConversation(conversation.clone()));
        }
        if !self.client_ids.is_own_in(conversation, &client_msg_id) {
            return Err(CommandError::ForeignClientMsgId(client_msg_id));
        }
        if self.outbox.contains(&client_msg_id) {
            return Ok(client_msg_id);
        }
        self.client_ids.saw(&client_msg_id);
        let entry = OutboxEntry {
            conversation: conversation.clone(),
            client_msg_id: client_msg_id.clone(),
            kind,
            content,
            created_at: now,
            attempts: 0,
        };
        let message = self.pending_message(&entry);
        self.set_latest(conversation, &message);
        self.batch.op(WriteOp::PutMessages(vec![message]));
        self.batch.op(WriteOp::PutOutbox(entry.clone()));
        self.batch.send_after_commit(client_msg_id.clone());
        self.outbox.add(entry);
        self.after_input(now);
        Ok(client_msg_id)
    }

    /// Marks a conversation read up to `seq` (clamped to the known max): applied locally at
    /// once, then sent (again after reconnect until the server acks it).
    pub fn mark_read(
        &mut self,
        now: Timestamp,
        conversation: &ConversationId,
        seq: Seq,
    ) -> Result<(), CommandError> {
        self.check_running()?;
        let Some(conv) = self.conversations.get(conversation) else {
            return Err(CommandError::UnknownConversation(conversation.clone()));
        };
        let seq = seq.min(conv.server_max_seq);
        if seq <= conv.read_seq {
            return Ok(());
        }
        self.set_read(conversation, seq);
        self.outbox.mark_read(conversation, seq);
        if self.connection == ConnectionState::Connected {
            self.request(
                now,
                InFlight::MarkRead(conversation.clone(), seq),
                Request::MarkRead {
                    conversation: conversation.clone(),
                    seq,
                },
            );
        }
        self.after_input(now);
        Ok(())
    }

    /// Makes sure the `limit` seqs below `before` (default: above the newest) are held,
    /// pulling what is missing. Returns an id; [`Event::HistoryLoaded`] with it follows,
    /// after which the app reads the page from storage.
    pub fn load_history(
        &mut self,
        now: Timestamp,
        conversation: &ConversationId,
        before: Option<Seq>,
        limit: u32,
    ) -> Result<u64, CommandError> {
        self.check_running()?;
        let Some(conv) = self.conversations.get(conversation) else {
            return Err(CommandError::UnknownConversation(conversation.clone()));
        };
        let id = self.pulls.next_history_id();
        let anchor = before
            .unwrap_or(conv.server_max_seq.next())
            .min(conv.server_max_seq.next());
        let floor = conv.server_min_seq.max(Seq(1));
        let to = anchor.prev();
        let from = Seq(anchor.0.saturating_sub(u64::from(limit))).max(floor);
        let gaps = if from <= to {
            conv.held.gaps_in(from, to)
        } else {
            Vec::new()
        };
        if gaps.is_empty() {
            self.batch.event(Event::HistoryLoaded {
                id,
                conversation: conversation.clone(),
                complete: true,
            });
        } else if self.connection != ConnectionState::Connected {
            self.batch.event(Event::HistoryLoaded {
                id,
                conversation: conversation.clone(),
                complete: false,
            });
        } else {
            self.pulls.add_history(id, conversation.clone(), from, to);
            let queued = self.queue_pull(conversation, from, to, PullPurpose::History(id), true);
            self.pulls.history_waits_for(id, queued);
            // Everything missing is already being pulled for another reason: wait for it.
            if queued == 0 {
                if let Some(h) = self.pulls.take_history(id) {
                    self.finish_history(id, h);
                }
            }
        }
        self.after_input(now);
        Ok(id)
    }

    /// Sends a failed message again under the same client id (the server deduplicates).
    /// `message` is the stored row, as read with [`crate::Storage::message_by_client_id`]
    /// (with the signed-in user as the sender).
    pub fn retry(&mut self, now: Timestamp, message: &Message) -> Result<(), CommandError> {
        self.check_running()?;
        if !self.conversations.contains_key(&message.conversation) {
            return Err(CommandError::UnknownConversation(
                message.conversation.clone(),
            ));
        }
        if !matches!(message.status, MessageStatus::Failed { .. }) || message.seq.is_some() {
            return Err(CommandError::NotFailed(message.client_msg_id.clone()));
        }
        if self.outbox.contains(&message.client_msg_id) {
            return Ok(());
        }
        let entry = OutboxEntry {
            conversation: message.conversation.clone(),
            client_msg_id: message.client_msg_id.clone(),
            kind: message.kind.clone(),
            content: message.content.clone(),
            created_at: message.created_at,
            attempts: 0,
        };
        let pending = self.pending_message(&entry);
        self.batch.op(WriteOp::PutMessages(vec![pending]));
        self.batch.op(WriteOp::PutOutbox(entry.clone()));
        self.batch.send_after_commit(entry.client_msg_id.clone());
        self.outbox.add(entry);
        self.after_input(now);
        Ok(())
    }

    /// Gives up a pending send: removes it from the outbox and deletes the pending row.
    /// Best effort: if it already reached the server, it comes back by sync and is acked
    /// (`MessageSent`) like any send of this device.
    pub fn cancel(
        &mut self,
        now: Timestamp,
        conversation: &ConversationId,
        client_msg_id: &ClientMsgId,
    ) -> Result<(), CommandError> {
        self.check_running()?;
        if self
            .outbox
            .entry(client_msg_id)
            .is_none_or(|e| &e.conversation != conversation)
        {
            return Err(CommandError::UnknownMessage(client_msg_id.clone()));
        }
        self.outbox.remove(client_msg_id);
        self.batch.op(WriteOp::RemoveOutbox(client_msg_id.clone()));
        self.batch.op(WriteOp::DeletePendingMessage {
            conversation: conversation.clone(),
            client_msg_id: client_msg_id.clone(),
        });
        if let Some(conv) = self.conversations.get_mut(conversation) {
            // The pending row only: another sender's message may carry the same client id.
            if conv
                .latest
                .as_ref()
                .is_some_and(|l| l.seq.is_none() && &l.client_msg_id == client_msg_id)
            {
                conv.latest = None;
                self.batch.touch(conversation);
            }
        }
        self.after_input(now);
        Ok(())
    }

    // ----- output -----

    /// The next thing to do. Drain until it returns [`Output::Timeout`].
    pub fn poll_output(&mut self) -> Output {
        if let Some(out) = self.outputs.pop_front() {
            return out;
        }
        Output::Timeout(self.next_deadline())
    }

    fn next_deadline(&self) -> Timestamp {
        if self.stopped {
            return Timestamp(u64::MAX);
        }
        let mut deadline = Timestamp(u64::MAX);
        let mut consider = |t: Option<Timestamp>| {
            if let Some(t) = t {
                deadline = deadline.min(t);
            }
        };
        match self.connection {
            ConnectionState::Disconnected if !self.kicked => {
                consider(self.requests.reconnect_deadline())
            }
            ConnectionState::Connected => {
                consider(self.requests.connected_deadline());
                consider(self.pulls.retry_deadline());
                consider(self.outbox.next_retry());
            }
            _ => {}
        }
        deadline
    }

    // ----- coordination -----

    /// End of every input: start pulls that can go, then emit the batch.
    fn after_input(&mut self, now: Timestamp) {
        self.pump_pulls(now);
        self.flush();
    }

    /// Turns what the current input recorded into one [`Output::Write`] carrying its events.
    fn flush(&mut self) {
        // The sync token rides on this batch when the cursor says so: a run just completed
        // (the batch holds the last of what it covers), or a read mark started or stopped
        // waiting for its ack.
        if let Some(token) = self.cursor.store_op(self.outbox.has_reads()) {
            self.batch.op(WriteOp::PutSyncToken(token));
        }
        self.batch
            .emit(&self.conversations, self.total_unread, &mut self.outputs);
    }

    /// Announces the waiting messages of `id` that what is held now lets through.
    fn release(&mut self, id: &ConversationId) {
        let Some(conv) = self.conversations.get(id) else {
            return;
        };
        for message in self.dispatch.release(id, &conv.held) {
            self.batch.announce(id, message);
        }
    }

    // ----- sends -----

    /// Puts every send that may go on the wire now.
    fn send_ready_outbox(&mut self, now: Timestamp) {
        if self.connection != ConnectionState::Connected {
            return;
        }
        for entry in self.outbox.take_ready(now) {
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

    fn on_send_ack(
        &mut self,
        _now: Timestamp,
        client_msg_id: &ClientMsgId,
        seq: Seq,
        server_time: Timestamp,
    ) {
        let Some(entry) = self.outbox.entry(client_msg_id).cloned() else {
            // Cancelled, or its echo already acked it.
            return;
        };
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
            self.outbox.acked(client_msg_id);
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

    fn on_send_error(&mut self, now: Timestamp, client_msg_id: &ClientMsgId, error: ServerError) {
        match self.outbox.send_failed(
            now,
            client_msg_id,
            error,
            self.config.send_max_attempts,
            self.config.send_retry_min_ms,
        ) {
            SendFailure::Unknown => {}
            SendFailure::RetryLater(entry) => self.batch.op(WriteOp::PutOutbox(entry)),
            SendFailure::GaveUp(entry, error) => self.fail_send(entry, error),
        }
    }

    /// The send of `entry` (already out of the outbox) failed for good.
    fn fail_send(&mut self, entry: OutboxEntry, error: ServerError) {
        let mut message = self.pending_message(&entry);
        message.status = MessageStatus::Failed {
            reason: format!("{}: {}", error.code, error.message),
        };
        self.batch.op(WriteOp::PutMessages(vec![message]));
        self.batch
            .op(WriteOp::RemoveOutbox(entry.client_msg_id.clone()));
        self.batch.event(Event::SendFailed {
            conversation: entry.conversation,
            client_msg_id: entry.client_msg_id,
            error,
        });
    }

    /// The pending row of a send of this device.
    fn pending_message(&self, entry: &OutboxEntry) -> Message {
        outbox::pending_message(&self.config.user, entry)
    }

    // ----- connection -----

    fn check_running(&self) -> Result<(), CommandError> {
        if self.stopped {
            Err(CommandError::Stopped)
        } else {
            Ok(())
        }
    }

    /// The engine decided the connection is dead: tell the driver and clean up as if it
    /// reported the disconnect.
    fn drop_connection(&mut self, now: Timestamp, reason: &str) {
        if self.connection == ConnectionState::Disconnected {
            return;
        }
        // A kick's reason is the server's free text: only the engine's own reasons are logged.
        let reason_logged = if self.kicked { "kicked" } else { reason };
        tracing::debug!(reason = reason_logged, "disconnect decided");
        self.outputs.push_back(Output::Disconnect {
            reason: reason.to_owned(),
        });
        self.connection_lost(now);
    }

    fn connection_lost(&mut self, now: Timestamp) {
        self.abandon_connection();
        if !self.kicked {
            self.requests.schedule_reconnect(
                now,
                self.config.reconnect_min_ms,
                self.config.reconnect_max_ms,
                &mut self.rng,
            );
        }
    }

    /// Everything tied to the current connection goes: requests (late replies are ignored),
    /// pulls, the sync run, sends in flight (resent on the next connection) and history
    /// loads (finished with what is held). Schedules nothing.
    fn abandon_connection(&mut self) {
        self.connection = ConnectionState::Disconnected;
        self.batch.event(Event::ConnectionChanged {
            state: ConnectionState::Disconnected,
        });
        self.requests.disconnected();
        self.cursor.abandon();
        // The run is abandoned: the next connect lists max seqs again and re-plans.
        let history = self.pulls.connection_lost();
        self.outbox.connection_lost();
        for (id, h) in history {
            self.finish_history(id, h);
        }
    }

    fn request(&mut self, now: Timestamp, what: InFlight, request: Request) {
        let id = self
            .requests
            .start(now, self.config.request_timeout_ms, what);
        self.outputs.push_back(Output::Request(id, request));
    }
}

fn unexpected() -> ServerError {
    ServerError::new(
        crate::protocol::ErrorCode::UnexpectedResponse,
        "the server answered with the wrong kind of response",
    )
}
