//! The sans-IO [`Engine`]: seq alignment, inbox reconciliation and event dispatch.
//!
//! How it holds together:
//! - Every input or command mutates the in-memory state (conversations, outbox, pulls in
//!   flight) and records the durable part of the change as ops of one [`WriteBatch`]; the
//!   batch is emitted when the input returns. In-memory state runs ahead of storage, so
//!   batches must commit in order; if one fails the engine stops and the driver restarts it
//!   from a fresh snapshot, which is exactly crash recovery.
//! - Events ride on the batch that holds their data and are released by
//!   [`Engine::handle_batch_committed`]. Sends go on the wire only after their outbox entry
//!   committed.
//! - New-message dispatch uses a per-conversation *frontier*: the highest seq up to which
//!   everything was dispatched or deliberately skipped. A message is announced as new only when
//!   it lands above the frontier and every seq below it up to the frontier is held, so each
//!   conversation's new messages go out in seq order, once.

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};

use crate::config::{EngineConfig, SyncPolicy};
use crate::model::{
    ClientMsgId, ContentKind, Conversation, ConversationId, ConversationKind, LatestMessage,
    Message, MessageStatus, OutboxEntry, PendingChange, Seq, ServerMessage, Timestamp,
};
use crate::output::{ConnectionState, Event, MessageChange, Output};
use crate::protocol::{
    DeletionsEntry, MaxSeqEntry, PullRange, PulledRange, Push, Request, RequestId, Response,
    ServerError,
};
use crate::seq_ranges::SeqRanges;
use crate::storage::{BatchId, StorageError, SyncSnapshot, WriteBatch, WriteOp};

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
}

/// Why a range is being pulled; decides priority and what its completion means.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum PullPurpose {
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
struct PullChunk {
    conversation: ConversationId,
    from: Seq,
    to: Seq,
    purpose: PullPurpose,
}

/// What a request in flight was for.
#[derive(Clone, Debug)]
enum InFlight {
    MaxSeqs,
    Pull(Vec<PullChunk>),
    Send(ClientMsgId),
    MarkRead(ConversationId, Seq),
    Deletions,
    Ping,
}

#[derive(Clone, Debug)]
struct RequestState {
    what: InFlight,
    deadline: Timestamp,
}

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

/// Per-conversation dispatch bookkeeping (process memory only; see module docs).
#[derive(Clone, Debug, Default)]
struct Dispatch {
    frontier: Seq,
    /// Seqs above the frontier waiting for the seqs below them; `None` marks a seq that
    /// advances the frontier without an announcement (own acked message).
    waiting: BTreeMap<Seq, Option<Message>>,
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
struct HistoryRequest {
    conversation: ConversationId,
    from: Seq,
    to: Seq,
    outstanding: u32,
}

/// Events and follow-ups waiting for a batch to commit.
#[derive(Debug, Default)]
struct PendingCommit {
    events: Vec<Event>,
    send_after: Vec<ClientMsgId>,
}

/// The sync state machine. See the crate docs for the driver rule.
#[derive(Debug)]
pub struct Engine {
    config: EngineConfig,
    rng: u64,
    conversations: HashMap<ConversationId, Conversation>,
    dispatch: HashMap<ConversationId, Dispatch>,
    total_unread: u64,
    emitted_total_unread: u64,
    outbox: BTreeMap<ClientMsgId, OutboxState>,
    /// Changes keyed by (conversation, target seq), each list ascending by change seq.
    pending_changes: HashMap<(ConversationId, Seq), Vec<PendingChange>>,
    /// Read seqs set locally that the server has not acked yet.
    reads_to_send: BTreeMap<ConversationId, Seq>,

    connection: ConnectionState,
    kicked: bool,
    stopped: bool,
    reconnect_failures: u32,
    reconnect_at: Option<Timestamp>,
    next_ping_at: Option<Timestamp>,
    next_request: u64,
    requests: HashMap<RequestId, RequestState>,

    sync: Option<SyncRun>,
    pull_queue: VecDeque<PullChunk>,
    pulls_in_flight: u32,
    /// Seqs queued or in flight per conversation, so nothing is asked twice.
    requested: HashMap<ConversationId, SeqRanges>,
    pull_retry_at: Option<Timestamp>,
    history: HashMap<u64, HistoryRequest>,
    next_history: u64,

    next_batch: u64,
    uncommitted: VecDeque<(BatchId, PendingCommit)>,
    outputs: VecDeque<Output>,

    // The batch being built by the current input.
    ops: Vec<WriteOp>,
    events: Vec<Event>,
    send_after: Vec<ClientMsgId>,
    changed: BTreeSet<ConversationId>,
    received: BTreeMap<ConversationId, Vec<Message>>,
}

impl Engine {
    /// Starts from a snapshot loaded with [`crate::Storage::load_snapshot`]. With
    /// `connect_on_start` the first output is [`Output::Connect`].
    pub fn new(config: EngineConfig, snapshot: SyncSnapshot, now: Timestamp) -> Self {
        let mut conversations = HashMap::with_capacity(snapshot.conversations.len());
        let mut dispatch = HashMap::with_capacity(snapshot.conversations.len());
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
            dispatch.insert(
                conv.id.clone(),
                Dispatch {
                    frontier: conv.held.max().unwrap_or(Seq(0)),
                    waiting: BTreeMap::new(),
                },
            );
            conversations.insert(conv.id.clone(), conv);
        }
        let outbox = snapshot
            .outbox
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
        let mut pending_changes: HashMap<(ConversationId, Seq), Vec<PendingChange>> =
            HashMap::new();
        for change in snapshot.pending_changes {
            pending_changes
                .entry((change.conversation.clone(), change.target))
                .or_default()
                .push(change);
        }
        for list in pending_changes.values_mut() {
            list.sort_by_key(|c| c.seq);
        }
        let rng = config.seed ^ now.0.rotate_left(32) ^ 0x9E37_79B9_7F4A_7C15;
        let connect = config.connect_on_start;
        let mut engine = Self {
            config,
            rng,
            conversations,
            dispatch,
            total_unread,
            emitted_total_unread: total_unread,
            outbox,
            pending_changes,
            reads_to_send: BTreeMap::new(),
            connection: ConnectionState::Disconnected,
            kicked: false,
            stopped: false,
            reconnect_failures: 0,
            reconnect_at: None,
            next_ping_at: None,
            next_request: 1,
            requests: HashMap::new(),
            sync: None,
            pull_queue: VecDeque::new(),
            pulls_in_flight: 0,
            requested: HashMap::new(),
            pull_retry_at: None,
            history: HashMap::new(),
            next_history: 1,
            next_batch: 1,
            uncommitted: VecDeque::new(),
            outputs: VecDeque::new(),
            ops: Vec::new(),
            events: Vec::new(),
            send_after: Vec::new(),
            changed,
            received: BTreeMap::new(),
        };
        if connect {
            engine.reconnect_at = Some(now);
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
        let mut entries: Vec<&OutboxEntry> = self.outbox.values().map(|o| &o.entry).collect();
        entries.sort_by(|a, b| {
            (a.created_at, &a.client_msg_id).cmp(&(b.created_at, &b.client_msg_id))
        });
        entries
    }

    /// Whether the engine stopped after a storage failure (restart it from a snapshot).
    pub fn is_stopped(&self) -> bool {
        self.stopped
    }

    /// Whether a sync run (after connect) is still going.
    pub fn is_syncing(&self) -> bool {
        self.sync.is_some()
    }

    /// Whether nothing is in flight: no request, queued pull, uncommitted batch or output,
    /// and, while connected, no send waiting (for instance for a retry after a transient
    /// error). Unsent outbox entries do not count while disconnected.
    pub fn is_idle(&self) -> bool {
        let sends_waiting =
            self.connection == ConnectionState::Connected && !self.outbox.is_empty();
        !sends_waiting
            && self.requests.is_empty()
            && self.pull_queue.is_empty()
            && self.uncommitted.is_empty()
            && self.outputs.is_empty()
            && self.sync.is_none()
    }

    // ----- inputs -----

    /// The connection is up (after [`Output::Connect`]). Starts a sync run and resends the
    /// outbox and unacked read marks.
    pub fn handle_connected(&mut self, now: Timestamp) {
        if self.stopped {
            return;
        }
        self.connection = ConnectionState::Connected;
        self.reconnect_at = None;
        self.reconnect_failures = 0;
        self.next_ping_at = Some(now.plus_millis(self.config.heartbeat_interval_ms));
        self.events.push(Event::ConnectionChanged {
            state: ConnectionState::Connected,
        });
        self.events.push(Event::SyncStarted);
        self.sync = Some(SyncRun::default());
        self.request(
            now,
            InFlight::MaxSeqs,
            Request::GetMaxSeqs {
                after: None,
                limit: self.config.max_seqs_page,
            },
        );
        self.send_ready_outbox(now);
        let reads: Vec<(ConversationId, Seq)> = self
            .reads_to_send
            .iter()
            .map(|(c, s)| (c.clone(), *s))
            .collect();
        for (conversation, seq) in reads {
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
        let _ = reason;
        self.connection_lost(now);
        self.flush();
    }

    /// The response to request `id`. Responses to requests of an earlier connection are
    /// ignored.
    pub fn handle_response(&mut self, now: Timestamp, id: RequestId, response: Response) {
        if self.stopped {
            return;
        }
        let Some(state) = self.requests.remove(&id) else {
            return;
        };
        match (state.what, response) {
            (InFlight::MaxSeqs, Response::MaxSeqs { entries, has_more }) => {
                self.on_max_seqs(now, entries, has_more)
            }
            (InFlight::MaxSeqs, _) => {
                // Without the listing the sync cannot go on; a fresh connection retries it.
                self.drop_connection(now, "max seq listing refused");
            }
            (InFlight::Pull(chunks), Response::Pulled { ranges }) => {
                self.pulls_in_flight -= 1;
                self.on_pulled(now, chunks, ranges);
            }
            (InFlight::Pull(chunks), Response::Error(error)) => {
                self.pulls_in_flight -= 1;
                self.on_pull_error(now, chunks, &error);
            }
            (InFlight::Pull(chunks), _) => {
                self.pulls_in_flight -= 1;
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
                if done
                    && self
                        .reads_to_send
                        .get(&conversation)
                        .is_some_and(|s| *s <= seq)
                {
                    self.reads_to_send.remove(&conversation);
                }
            }
            (InFlight::Deletions, Response::Deletions { entries }) => self.on_deletions(entries),
            // Not fatal: the counts still differ, so the next listing asks again.
            (InFlight::Deletions, _) | (InFlight::Ping, _) => {}
        }
        self.after_input(now);
    }

    /// A push from the server.
    pub fn handle_push(&mut self, now: Timestamp, push: Push) {
        if self.stopped {
            return;
        }
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
                    if self
                        .reads_to_send
                        .get(&conversation)
                        .is_some_and(|s| *s <= seq)
                    {
                        self.reads_to_send.remove(&conversation);
                    }
                }
            }
            Push::Deleted {
                conversation,
                seqs,
                min_seq,
            } => {
                if self.conversations.contains_key(&conversation) {
                    self.raise_floor(&conversation, min_seq);
                    self.ingest(&conversation, Vec::new(), &seqs);
                }
            }
            Push::Kicked { reason } => {
                self.kicked = true;
                self.events.push(Event::Kicked {
                    reason: reason.clone(),
                });
                self.drop_connection(now, &reason);
            }
        }
        self.after_input(now);
    }

    /// Batch `id` committed: releases its events and the sends waiting for it.
    pub fn handle_batch_committed(&mut self, now: Timestamp, id: BatchId) {
        if self.stopped {
            return;
        }
        // Batches commit in order; an id that is not the oldest is a driver bug we ignore
        // rather than release events for data that may not be durable.
        if self.uncommitted.front().map(|(b, _)| *b) != Some(id) {
            return;
        }
        let Some((_, pending)) = self.uncommitted.pop_front() else {
            return;
        };
        self.outputs
            .extend(pending.events.into_iter().map(Output::Event));
        for client_msg_id in pending.send_after {
            if let Some(state) = self.outbox.get_mut(&client_msg_id) {
                state.committed = true;
            }
        }
        self.send_ready_outbox(now);
        self.flush();
    }

    /// Batch `id` failed. The engine stops: its memory is ahead of the store, so the driver
    /// restarts it from a fresh snapshot, exactly as after a crash.
    pub fn handle_batch_failed(&mut self, now: Timestamp, id: BatchId, error: &StorageError) {
        let _ = (now, id);
        if self.stopped {
            return;
        }
        self.stopped = true;
        self.outputs.clear();
        self.uncommitted.clear();
        self.requests.clear();
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
                if !self.kicked && self.reconnect_at.is_some_and(|t| t <= now) {
                    self.reconnect_at = None;
                    self.connection = ConnectionState::Connecting;
                    self.outputs.push_back(Output::Connect);
                    self.events.push(Event::ConnectionChanged {
                        state: ConnectionState::Connecting,
                    });
                }
            }
            ConnectionState::Connecting => {}
            ConnectionState::Connected => {
                if self.requests.values().any(|r| r.deadline <= now) {
                    self.drop_connection(now, "request timed out");
                } else {
                    if self.next_ping_at.is_some_and(|t| t <= now) {
                        self.next_ping_at =
                            Some(now.plus_millis(self.config.heartbeat_interval_ms));
                        self.request(now, InFlight::Ping, Request::Ping);
                    }
                    if self.pull_retry_at.is_some_and(|t| t <= now) {
                        self.pull_retry_at = None;
                    }
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
        self.check_running()?;
        if !self.conversations.contains_key(conversation) {
            return Err(CommandError::UnknownConversation(conversation.clone()));
        }
        let client_msg_id = self.new_client_msg_id(now);
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
        self.ops.push(WriteOp::PutMessages(vec![message]));
        self.ops.push(WriteOp::PutOutbox(entry.clone()));
        self.send_after.push(client_msg_id.clone());
        self.outbox.insert(
            client_msg_id.clone(),
            OutboxState {
                entry,
                committed: false,
                in_flight: false,
                not_before: None,
            },
        );
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
        self.reads_to_send.insert(conversation.clone(), seq);
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
        let id = self.next_history;
        self.next_history += 1;
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
            self.events.push(Event::HistoryLoaded {
                id,
                conversation: conversation.clone(),
                complete: true,
            });
        } else if self.connection != ConnectionState::Connected {
            self.events.push(Event::HistoryLoaded {
                id,
                conversation: conversation.clone(),
                complete: false,
            });
        } else {
            self.history.insert(
                id,
                HistoryRequest {
                    conversation: conversation.clone(),
                    from,
                    to,
                    outstanding: 0,
                },
            );
            let queued = self.queue_pull(conversation, from, to, PullPurpose::History(id), true);
            if let Some(h) = self.history.get_mut(&id) {
                h.outstanding = queued;
            }
            // Everything missing is already being pulled for another reason: wait for it.
            if queued == 0 {
                self.finish_history_if_held(id);
            }
        }
        self.after_input(now);
        Ok(id)
    }

    /// Sends a failed message again under the same client id (the server deduplicates).
    /// `message` is the stored row, as read with [`crate::Storage::message_by_client_id`].
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
        if self.outbox.contains_key(&message.client_msg_id) {
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
        self.ops.push(WriteOp::PutMessages(vec![pending]));
        self.ops.push(WriteOp::PutOutbox(entry.clone()));
        self.send_after.push(entry.client_msg_id.clone());
        self.outbox.insert(
            entry.client_msg_id.clone(),
            OutboxState {
                entry,
                committed: false,
                in_flight: false,
                not_before: None,
            },
        );
        self.after_input(now);
        Ok(())
    }

    /// Gives up a pending send: removes it from the outbox and deletes the pending row.
    /// Best effort: if it already reached the server, it comes back by sync as a message of
    /// this user.
    pub fn cancel(
        &mut self,
        now: Timestamp,
        conversation: &ConversationId,
        client_msg_id: &ClientMsgId,
    ) -> Result<(), CommandError> {
        self.check_running()?;
        if self
            .outbox
            .get(client_msg_id)
            .is_none_or(|o| &o.entry.conversation != conversation)
        {
            return Err(CommandError::UnknownMessage(client_msg_id.clone()));
        }
        self.outbox.remove(client_msg_id);
        self.ops.push(WriteOp::RemoveOutbox(client_msg_id.clone()));
        self.ops.push(WriteOp::DeletePendingMessage {
            conversation: conversation.clone(),
            client_msg_id: client_msg_id.clone(),
        });
        if let Some(conv) = self.conversations.get_mut(conversation) {
            if conv
                .latest
                .as_ref()
                .is_some_and(|l| &l.client_msg_id == client_msg_id)
            {
                conv.latest = None;
                self.changed.insert(conversation.clone());
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
            ConnectionState::Disconnected if !self.kicked => consider(self.reconnect_at),
            ConnectionState::Connected => {
                consider(self.next_ping_at);
                consider(self.pull_retry_at);
                consider(self.requests.values().map(|r| r.deadline).min());
                consider(
                    self.outbox
                        .values()
                        .filter(|o| o.committed && !o.in_flight)
                        .filter_map(|o| o.not_before)
                        .min(),
                );
            }
            _ => {}
        }
        deadline
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
        self.outputs.push_back(Output::Disconnect {
            reason: reason.to_owned(),
        });
        self.connection_lost(now);
    }

    fn connection_lost(&mut self, now: Timestamp) {
        self.connection = ConnectionState::Disconnected;
        self.events.push(Event::ConnectionChanged {
            state: ConnectionState::Disconnected,
        });
        self.requests.clear();
        self.pulls_in_flight = 0;
        self.pull_queue.clear();
        self.requested.clear();
        self.pull_retry_at = None;
        self.next_ping_at = None;
        // The run is abandoned: the next connect lists max seqs again and re-plans.
        self.sync = None;
        for state in self.outbox.values_mut() {
            state.in_flight = false;
        }
        let history: Vec<(u64, HistoryRequest)> = self.history.drain().collect();
        for (id, h) in history {
            let complete = self
                .conversations
                .get(&h.conversation)
                .is_some_and(|c| c.held.contains_range(h.from, h.to));
            self.events.push(Event::HistoryLoaded {
                id,
                conversation: h.conversation,
                complete,
            });
        }
        if !self.kicked {
            let exp = self.reconnect_failures.min(16);
            let base = self
                .config
                .reconnect_min_ms
                .saturating_mul(1 << exp)
                .min(self.config.reconnect_max_ms);
            // Up to 25% jitter so a fleet of clients does not reconnect in lockstep.
            let jitter = if base >= 4 {
                self.next_random() % (base / 4)
            } else {
                0
            };
            self.reconnect_at = Some(now.plus_millis(base + jitter));
            self.reconnect_failures = self.reconnect_failures.saturating_add(1);
        }
    }

    fn request(&mut self, now: Timestamp, what: InFlight, request: Request) {
        let id = RequestId(self.next_request);
        self.next_request += 1;
        self.requests.insert(
            id,
            RequestState {
                what,
                deadline: now.plus_millis(self.config.request_timeout_ms),
            },
        );
        self.outputs.push_back(Output::Request(id, request));
    }

    // ----- sync: listing and pulls -----

    fn on_max_seqs(&mut self, now: Timestamp, entries: Vec<MaxSeqEntry>, has_more: bool) {
        let last = entries.last().map(|e| e.conversation.clone());
        let mut deletions_missed = Vec::new();
        for entry in entries {
            let id = entry.conversation.clone();
            self.ensure_conversation(&id, Some(entry.kind));
            self.raise_floor(&id, entry.min_seq);
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
                    self.changed.insert(id.clone());
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
                .is_some_and(|c| c.server_deleted_count != entry.deleted_count)
            {
                deletions_missed.push(id.clone());
            }
            if local_read > entry.read_seq {
                // Read locally while offline (or the ack was lost): tell the server again.
                self.reads_to_send.entry(id.clone()).or_insert(local_read);
            }
            self.recompute_unread(&id);
            let wants_pull = self
                .conversations
                .get(&id)
                .is_some_and(|c| self.policy_window(c).is_some());
            if wants_pull {
                if let Some(sync) = self.sync.as_mut() {
                    sync.candidates.push((entry.last_activity, id));
                }
            }
        }
        self.request_deletions(now, &deletions_missed);
        let reads: Vec<(ConversationId, Seq)> = self
            .reads_to_send
            .iter()
            .map(|(c, s)| (c.clone(), *s))
            .collect();
        let already: BTreeSet<ConversationId> = self
            .requests
            .values()
            .filter_map(|r| match &r.what {
                InFlight::MarkRead(c, _) => Some(c.clone()),
                _ => None,
            })
            .collect();
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
                    },
                );
                return;
            }
        }
        self.plan_sync();
    }

    /// Asks for the deletion lists of conversations whose deletion count changed.
    fn request_deletions(&mut self, now: Timestamp, conversations: &[ConversationId]) {
        let per_request = self.config.pull_max_conversations.max(1) as usize;
        for chunk in conversations.chunks(per_request) {
            self.request(
                now,
                InFlight::Deletions,
                Request::GetDeletions {
                    conversations: chunk.to_vec(),
                },
            );
        }
    }

    fn on_deletions(&mut self, entries: Vec<DeletionsEntry>) {
        for entry in entries {
            let id = entry.conversation;
            let Some(conv) = self.conversations.get_mut(&id) else {
                continue;
            };
            conv.server_deleted_count = entry.deleted_count;
            self.changed.insert(id.clone());
            // Seqs beyond what is known to exist cannot be deleted; ignore such claims.
            let seqs = entry.seqs.intersect(Seq(1), conv.server_max_seq);
            self.ingest(&id, Vec::new(), &seqs);
        }
    }

    /// The range the sync policy wants pulled for `conv`, if any is missing.
    fn policy_window(&self, conv: &Conversation) -> Option<(Seq, Seq)> {
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

    fn plan_sync(&mut self) {
        let Some(mut sync) = self.sync.take() else {
            return;
        };
        sync.listing_done = true;
        let mut candidates = std::mem::take(&mut sync.candidates);
        // Most recently active first; ties by id so runs are deterministic.
        candidates.sort_by(|a, b| b.0.cmp(&a.0).then_with(|| a.1.cmp(&b.1)));
        self.sync = Some(sync);
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
                if let Some(sync) = self.sync.as_mut() {
                    sync.outstanding.insert(id, queued);
                }
            }
        }
        if let Some(sync) = self.sync.as_mut() {
            sync.total = total;
        }
        self.events.push(Event::SyncProgress { done: 0, total });
        self.check_sync_finished();
    }

    /// Messages below `from` are history from now on: they will not be announced as new.
    fn skip_dispatch_below(&mut self, id: &ConversationId, from: Seq) {
        let d = self.dispatch.entry(id.clone()).or_default();
        if d.frontier < from.prev() {
            d.frontier = from.prev();
            let later = d.waiting.split_off(&from);
            d.waiting = later;
        }
        self.release(id);
    }

    /// Queues the seqs of `from..=to` that are neither held nor already requested, in chunks.
    /// Returns how many chunks were queued.
    fn queue_pull(
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
        let mut missing = SeqRanges::new();
        for gap in conv.held.gaps_in(from, to) {
            missing.insert_range(gap.start, gap.end);
        }
        let requested = self.requested.entry(id.clone()).or_default();
        for r in requested.ranges() {
            missing.remove_range(r.start, r.end);
        }
        let chunk_len = u64::from(self.config.pull_max_messages.max(1));
        let mut chunks = Vec::new();
        // Newest first within a conversation: the newest messages matter most.
        for gap in missing.ranges().iter().rev() {
            requested.insert_range(gap.start, gap.end);
            let mut end = gap.end;
            loop {
                let start = Seq(end.0.saturating_sub(chunk_len - 1)).max(gap.start);
                chunks.push(PullChunk {
                    conversation: id.clone(),
                    from: start,
                    to: end,
                    purpose,
                });
                if start == gap.start {
                    break;
                }
                end = start.prev();
            }
        }
        let count = chunks.len() as u32;
        if front {
            for chunk in chunks.into_iter().rev() {
                self.pull_queue.push_front(chunk);
            }
        } else {
            self.pull_queue.extend(chunks);
        }
        count
    }

    /// Sends pull requests while slots are free, packing many conversations per request.
    fn pump_pulls(&mut self, now: Timestamp) {
        if self.connection != ConnectionState::Connected || self.pull_retry_at.is_some() {
            return;
        }
        let max_messages = u64::from(self.config.pull_max_messages.max(1));
        let max_convs = self.config.pull_max_conversations.max(1) as usize;
        while self.pulls_in_flight < self.config.pulls_in_flight.max(1)
            && !self.pull_queue.is_empty()
        {
            let mut chunks = Vec::new();
            let mut budget = max_messages;
            while let Some(chunk) = self.pull_queue.front() {
                let len = chunk.to.0 - chunk.from.0 + 1;
                if chunks.len() >= max_convs || (len > budget && !chunks.is_empty()) {
                    break;
                }
                let Some(chunk) = self.pull_queue.pop_front() else {
                    break;
                };
                budget = budget.saturating_sub(len);
                chunks.push(chunk);
            }
            let ranges = chunks
                .iter()
                .map(|c| PullRange {
                    conversation: c.conversation.clone(),
                    from: c.from,
                    to: c.to,
                })
                .collect();
            self.pulls_in_flight += 1;
            self.request(now, InFlight::Pull(chunks), Request::Pull { ranges });
        }
    }

    fn on_pulled(&mut self, now: Timestamp, chunks: Vec<PullChunk>, ranges: Vec<PulledRange>) {
        let mut by_key: HashMap<(ConversationId, Seq), PulledRange> = ranges
            .into_iter()
            .map(|r| ((r.conversation.clone(), r.from), r))
            .collect();
        let mut sync_progress = false;
        for chunk in chunks {
            let id = chunk.conversation.clone();
            let before = self
                .conversations
                .get(&id)
                .map(|c| c.held.count_in(chunk.from, chunk.to));
            if let Some(range) = by_key.remove(&(id.clone(), chunk.from)) {
                self.raise_floor(&id, range.min_seq);
                if let Some(conv) = self.conversations.get_mut(&id) {
                    if conv.server_max_seq < range.max_seq {
                        conv.server_max_seq = range.max_seq;
                        self.changed.insert(id.clone());
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
                self.ingest(&id, messages, &missing);
            }
            if let Some(r) = self.requested.get_mut(&id) {
                r.remove_range(chunk.from, chunk.to);
            }
            let after = self
                .conversations
                .get(&id)
                .map(|c| c.held.count_in(chunk.from, chunk.to));
            let complete = self
                .conversations
                .get(&id)
                .is_none_or(|c| c.held.contains_range(chunk.from, chunk.to));
            // A capped reply leaves a remainder: ask again while the server makes progress.
            let requeued = if !complete && after > before {
                self.queue_pull(&id, chunk.from, chunk.to, chunk.purpose, true)
            } else {
                0
            };
            // The requeued chunks replace this one in the purpose's outstanding count.
            self.add_outstanding(&chunk, requeued.saturating_sub(1));
            if requeued == 0 {
                sync_progress |= self.chunk_done(&chunk);
            }
        }
        if sync_progress {
            if let Some(sync) = &self.sync {
                self.events.push(Event::SyncProgress {
                    done: sync.done,
                    total: sync.total,
                });
            }
        }
        let _ = now;
        self.check_sync_finished();
    }

    fn on_pull_error(&mut self, now: Timestamp, chunks: Vec<PullChunk>, error: &ServerError) {
        if error.permanent {
            // Refused (e.g. no longer a member): these gaps stay until a later sync.
            let mut progress = false;
            for chunk in &chunks {
                if let Some(r) = self.requested.get_mut(&chunk.conversation) {
                    r.remove_range(chunk.from, chunk.to);
                }
                progress |= self.chunk_done(chunk);
            }
            if progress {
                if let Some(sync) = &self.sync {
                    self.events.push(Event::SyncProgress {
                        done: sync.done,
                        total: sync.total,
                    });
                }
            }
            self.check_sync_finished();
        } else {
            for chunk in chunks.into_iter().rev() {
                self.pull_queue.push_front(chunk);
            }
            self.pull_retry_at = Some(now.plus_millis(self.config.send_retry_min_ms));
        }
    }

    fn add_outstanding(&mut self, chunk: &PullChunk, extra: u32) {
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

    /// Bookkeeping when a chunk will not be asked again. Returns whether sync progress moved.
    fn chunk_done(&mut self, chunk: &PullChunk) -> bool {
        match chunk.purpose {
            PullPurpose::Sync => {
                let Some(sync) = self.sync.as_mut() else {
                    return false;
                };
                let Some(left) = sync.outstanding.get_mut(&chunk.conversation) else {
                    return false;
                };
                *left = left.saturating_sub(1);
                if *left == 0 {
                    sync.outstanding.remove(&chunk.conversation);
                    sync.done += 1;
                    return true;
                }
                false
            }
            PullPurpose::History(id) => {
                if let Some(h) = self.history.get_mut(&id) {
                    h.outstanding = h.outstanding.saturating_sub(1);
                    if h.outstanding == 0 {
                        self.finish_history_if_held(id);
                    }
                }
                false
            }
            PullPurpose::Gap | PullPurpose::Fill => false,
        }
    }

    fn finish_history_if_held(&mut self, id: u64) {
        let Some(h) = self.history.remove(&id) else {
            return;
        };
        let complete = self
            .conversations
            .get(&h.conversation)
            .is_some_and(|c| c.held.contains_range(h.from, h.to));
        self.events.push(Event::HistoryLoaded {
            id,
            conversation: h.conversation,
            complete,
        });
    }

    fn check_sync_finished(&mut self) {
        let finished = self
            .sync
            .as_ref()
            .is_some_and(|s| s.listing_done && s.outstanding.is_empty());
        if !finished {
            return;
        }
        self.sync = None;
        self.events.push(Event::SyncFinished);
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
    fn pull_gap_below_top(&mut self, id: &ConversationId) {
        let Some(conv) = self.conversations.get(id) else {
            return;
        };
        let top = conv.server_max_seq;
        let floor = conv.server_min_seq.max(Seq(1));
        let frontier = self.dispatch.get(id).map_or(Seq(0), |d| d.frontier);
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

    // ----- ingest -----

    fn ensure_conversation(&mut self, id: &ConversationId, kind: Option<ConversationKind>) {
        if let Some(conv) = self.conversations.get_mut(id) {
            if let Some(kind) = kind {
                if conv.kind != kind {
                    conv.kind = kind;
                    self.changed.insert(id.clone());
                }
            }
            return;
        }
        self.conversations.insert(
            id.clone(),
            Conversation::new(id.clone(), kind.unwrap_or_default()),
        );
        self.dispatch.insert(id.clone(), Dispatch::default());
        self.changed.insert(id.clone());
    }

    /// The floor rose to `min_seq`: everything below is gone on the server.
    fn raise_floor(&mut self, id: &ConversationId, min_seq: Seq) {
        let Some(conv) = self.conversations.get_mut(id) else {
            return;
        };
        if min_seq <= conv.server_min_seq {
            return;
        }
        conv.server_min_seq = min_seq;
        self.changed.insert(id.clone());
        if min_seq.0 <= 1 {
            return;
        }
        let below = SeqRanges::from_range(Seq(1), min_seq.prev());
        conv.held.union_with(&below);
        if conv
            .latest
            .as_ref()
            .and_then(|l| l.seq)
            .is_some_and(|s| s < min_seq)
        {
            conv.latest = None;
        }
        self.ops.push(WriteOp::PutTombstones {
            conversation: id.clone(),
            seqs: below.clone(),
        });
        self.forget_changes_targeting(id, &below);
        if let Some(d) = self.dispatch.get_mut(id) {
            d.waiting.retain(|s, _| *s >= min_seq);
        }
        self.events.push(Event::MessagesDeleted {
            conversation: id.clone(),
            seqs: below,
        });
        self.recompute_unread(id);
        self.release(id);
    }

    /// Changes whose target no longer exists will never apply: forget them.
    fn forget_changes_targeting(&mut self, id: &ConversationId, gone: &SeqRanges) {
        let dropped: Vec<(ConversationId, Seq)> = self
            .pending_changes
            .keys()
            .filter(|(c, target)| c == id && gone.contains(*target))
            .cloned()
            .collect();
        for key in dropped {
            for change in self.pending_changes.remove(&key).unwrap_or_default() {
                self.ops.push(WriteOp::RemovePendingChange {
                    conversation: change.conversation,
                    seq: change.seq,
                });
            }
        }
    }

    /// Applies messages and known-missing seqs of one conversation: the idempotent heart of
    /// sync. Seqs already held change nothing.
    fn ingest(
        &mut self,
        id: &ConversationId,
        mut messages: Vec<ServerMessage>,
        missing: &SeqRanges,
    ) {
        if !self.conversations.contains_key(id) {
            return;
        }
        messages.sort_by_key(|m| m.seq);
        messages.dedup_by_key(|m| m.seq);
        let me = self.config.user.clone();
        let mut to_store = Vec::new();
        // Edits and revokes go after the rows they change, in seq order.
        let mut later_ops = Vec::new();
        for msg in messages {
            let seq = msg.seq;
            let Some(conv) = self.conversations.get_mut(id) else {
                return;
            };
            if seq.0 == 0 || conv.held.contains(seq) || seq < conv.server_min_seq {
                continue;
            }
            conv.held.insert(seq);
            if conv.server_max_seq < seq {
                conv.server_max_seq = seq;
            }
            self.changed.insert(id.clone());
            let own = msg.sender == me;
            let echo_of_send = own
                && self
                    .outbox
                    .get(&msg.client_msg_id)
                    .is_some_and(|o| &o.entry.conversation == id);
            let mut message = msg.into_message();
            // The row as it arrived; pending changes are ops applied after it.
            let stored = message.clone();
            if let Some(target) = message.kind.change_target() {
                self.mark_not_unread(id, seq);
                later_ops.extend(self.apply_or_keep_change(id, &message, target));
            } else {
                if own {
                    self.mark_not_unread(id, seq);
                }
                // Changes that arrived before this message: stored as ops after the row (so
                // the store keeps their seqs), and applied to the copy the app is told about.
                if !self.pending_changes.is_empty() {
                    if let Some(changes) = self.pending_changes.remove(&(id.clone(), seq)) {
                        for change in changes {
                            apply_change_to(
                                &mut message,
                                &change.kind,
                                change.seq,
                                &change.content,
                            );
                            later_ops.push(change_op(
                                id,
                                seq,
                                &change.kind,
                                change.seq,
                                change.content,
                            ));
                            later_ops.push(WriteOp::RemovePendingChange {
                                conversation: id.clone(),
                                seq: change.seq,
                            });
                        }
                    }
                }
                self.set_latest(id, &message);
            }
            if own {
                // The server marks a conversation read up to every message its user sends.
                self.set_read(id, seq);
            }
            if echo_of_send {
                self.outbox.remove(&message.client_msg_id);
                self.ops
                    .push(WriteOp::RemoveOutbox(message.client_msg_id.clone()));
                self.events.push(Event::MessageSent {
                    conversation: id.clone(),
                    client_msg_id: message.client_msg_id.clone(),
                    seq,
                });
                self.enqueue_dispatch(id, seq, None);
            } else if !message.is_change() {
                self.enqueue_dispatch(id, seq, Some(message.clone()));
            } else {
                self.enqueue_dispatch(id, seq, None);
            }
            to_store.push(stored);
        }
        if !to_store.is_empty() {
            self.ops.push(WriteOp::PutMessages(to_store));
        }
        self.ops.extend(later_ops);
        self.ingest_missing(id, missing);
        self.recompute_unread(id);
        self.release(id);
    }

    fn ingest_missing(&mut self, id: &ConversationId, missing: &SeqRanges) {
        let Some(conv) = self.conversations.get_mut(id) else {
            return;
        };
        let mut new = SeqRanges::new();
        for r in missing.ranges() {
            for gap in conv.held.gaps_in(r.start.max(Seq(1)), r.end) {
                new.insert_range(gap.start, gap.end);
            }
        }
        // A deletion of a held message: the row goes, the seq stays held as a tombstone.
        let mut deleted_held = SeqRanges::new();
        for r in missing.ranges() {
            for h in conv.held.intersect(r.start, r.end).ranges() {
                deleted_held.insert_range(h.start, h.end);
            }
        }
        if new.is_empty() && deleted_held.is_empty() {
            return;
        }
        conv.held.union_with(&new);
        if let Some(top) = new.max() {
            if conv.server_max_seq < top {
                conv.server_max_seq = top;
            }
        }
        let mut all = new.clone();
        all.union_with(&deleted_held);
        if conv
            .latest
            .as_ref()
            .and_then(|l| l.seq)
            .is_some_and(|s| all.contains(s))
        {
            conv.latest = None;
        }
        self.changed.insert(id.clone());
        let read = conv.read_seq;
        let top = conv.server_max_seq;
        let above_read = all.intersect(read.next(), top);
        conv.not_unread.union_with(&above_read);
        for s in all.ranges() {
            if let Some(d) = self.dispatch.get_mut(id) {
                let gone: Vec<Seq> = d.waiting.range(s.start..=s.end).map(|(k, _)| *k).collect();
                for k in gone {
                    d.waiting.remove(&k);
                }
            }
        }
        self.forget_changes_targeting(id, &all);
        self.ops.push(WriteOp::PutTombstones {
            conversation: id.clone(),
            seqs: all.clone(),
        });
        if !deleted_held.is_empty() {
            self.events.push(Event::MessagesDeleted {
                conversation: id.clone(),
                seqs: deleted_held,
            });
        }
    }

    /// An edit or revoke at `change.seq` targeting `target`: applied now if the target is
    /// held, else kept until it lands. Returns the op to append after the messages.
    fn apply_or_keep_change(
        &mut self,
        id: &ConversationId,
        change: &Message,
        target: Seq,
    ) -> Option<WriteOp> {
        let seq = change.seq?;
        let conv = self.conversations.get(id)?;
        if target < conv.server_min_seq || target >= seq {
            // The target is gone, or the change is malformed (a change can only follow its
            // target): nothing to apply.
            return None;
        }
        if conv.held.contains(target) {
            let op = change_op(id, target, &change.kind, seq, change.content.clone());
            let update = match change.kind {
                ContentKind::Revoke { .. } => MessageChange::Revoked,
                _ => MessageChange::Edited {
                    edit_seq: seq,
                    content: change.content.clone(),
                },
            };
            self.events.push(Event::MessageUpdated {
                conversation: id.clone(),
                seq: target,
                change: update,
            });
            if conv.latest.as_ref().and_then(|l| l.seq) == Some(target) {
                if let Some(conv) = self.conversations.get_mut(id) {
                    if let Some(latest) = conv.latest.as_mut() {
                        match change.kind {
                            ContentKind::Revoke { .. } => latest.preview.clear(),
                            _ => {
                                let cut = change.content.len().min(LatestMessage::PREVIEW_BYTES);
                                latest.preview = change.content[..cut].to_vec();
                            }
                        }
                    }
                }
            }
            return Some(op);
        }
        let pending = PendingChange {
            conversation: id.clone(),
            seq,
            target,
            kind: change.kind.clone(),
            content: change.content.clone(),
        };
        let list = self
            .pending_changes
            .entry((id.clone(), target))
            .or_default();
        list.push(pending.clone());
        list.sort_by_key(|c| c.seq);
        Some(WriteOp::PutPendingChange(pending))
    }

    fn mark_not_unread(&mut self, id: &ConversationId, seq: Seq) {
        if let Some(conv) = self.conversations.get_mut(id) {
            if seq > conv.read_seq {
                conv.not_unread.insert(seq);
            }
        }
    }

    fn set_latest(&mut self, id: &ConversationId, message: &Message) {
        let Some(conv) = self.conversations.get_mut(id) else {
            return;
        };
        let newer = match (&conv.latest, message.seq) {
            (None, _) => true,
            // A pending message of this device is the newest thing until a later seq lands.
            (Some(_), None) => true,
            (Some(latest), Some(seq)) => latest.seq.is_none_or(|s| seq >= s),
        };
        if newer {
            conv.latest = Some(LatestMessage::of(message));
            let time = message.server_time.unwrap_or(message.created_at);
            conv.last_activity = conv.last_activity.max(time);
            self.changed.insert(id.clone());
        }
    }

    fn set_read(&mut self, id: &ConversationId, seq: Seq) {
        let Some(conv) = self.conversations.get_mut(id) else {
            return;
        };
        if seq <= conv.read_seq {
            return;
        }
        conv.read_seq = seq;
        // Only seqs above the read seq matter for unread; dropping the rest bounds memory.
        conv.not_unread.remove_below(seq.next());
        self.changed.insert(id.clone());
        self.recompute_unread(id);
    }

    fn recompute_unread(&mut self, id: &ConversationId) {
        let Some(conv) = self.conversations.get_mut(id) else {
            return;
        };
        let unread = conv.compute_unread();
        if unread != conv.unread {
            self.total_unread = self.total_unread.saturating_sub(conv.unread) + unread;
            conv.unread = unread;
            self.changed.insert(id.clone());
        }
    }

    // ----- dispatch -----

    fn enqueue_dispatch(&mut self, id: &ConversationId, seq: Seq, message: Option<Message>) {
        let d = self.dispatch.entry(id.clone()).or_default();
        if seq > d.frontier {
            d.waiting.insert(seq, message);
        }
    }

    /// Announces waiting messages whose every lower seq (down to the frontier) is held.
    fn release(&mut self, id: &ConversationId) {
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
                            self.received.entry(id.clone()).or_default().push(message);
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

    // ----- outbox -----

    fn pending_message(&self, entry: &OutboxEntry) -> Message {
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

    fn send_ready_outbox(&mut self, now: Timestamp) {
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

    fn on_send_ack(
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

    fn on_send_error(&mut self, now: Timestamp, client_msg_id: &ClientMsgId, error: ServerError) {
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

    fn fail_send(&mut self, client_msg_id: &ClientMsgId, error: ServerError) {
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

    fn new_client_msg_id(&mut self, now: Timestamp) -> ClientMsgId {
        let r = self.next_random();
        ClientMsgId(format!("{:x}-{:016x}", now.0, r))
    }

    /// splitmix64: deterministic per seed, good enough for ids and jitter.
    fn next_random(&mut self) -> u64 {
        self.rng = self.rng.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.rng;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    // ----- batching -----

    /// End of every input: start pulls that can go, then emit the batch.
    fn after_input(&mut self, now: Timestamp) {
        self.pump_pulls(now);
        self.flush();
    }

    /// Turns what the current input recorded into one [`Output::Write`] carrying its events.
    fn flush(&mut self) {
        let changed = std::mem::take(&mut self.changed);
        let mut changed_ids = Vec::with_capacity(changed.len());
        for id in changed {
            if let Some(conv) = self.conversations.get(&id) {
                self.ops.push(WriteOp::PutConversation(conv.clone()));
                changed_ids.push(id);
            }
        }
        // New messages first, then what they changed in the list, then progress and state.
        let mut ordered: Vec<Event> = std::mem::take(&mut self.received)
            .into_iter()
            .filter(|(_, messages)| !messages.is_empty())
            .map(|(conversation, messages)| Event::MessagesReceived {
                conversation,
                messages,
            })
            .collect();
        ordered.append(&mut self.events);
        if !changed_ids.is_empty() {
            ordered.push(Event::ConversationsChanged {
                conversations: changed_ids,
            });
        }
        if self.total_unread != self.emitted_total_unread {
            self.emitted_total_unread = self.total_unread;
            ordered.push(Event::TotalUnreadChanged {
                total: self.total_unread,
            });
        }
        let send_after = std::mem::take(&mut self.send_after);
        if !self.ops.is_empty() {
            let id = BatchId(self.next_batch);
            self.next_batch += 1;
            let batch = WriteBatch {
                ops: std::mem::take(&mut self.ops),
            };
            self.outputs.push_back(Output::Write(id, batch));
            self.uncommitted.push_back((
                id,
                PendingCommit {
                    events: ordered,
                    send_after,
                },
            ));
        } else if let Some((_, last)) = self.uncommitted.back_mut() {
            // Nothing new to write, but what the events speak of may still be in flight.
            last.events.extend(ordered);
            last.send_after.extend(send_after);
        } else {
            self.outputs.extend(ordered.into_iter().map(Output::Event));
        }
    }
}

/// The storage op for an edit or revoke at `change_seq` of the message at `target`.
fn change_op(
    conversation: &ConversationId,
    target: Seq,
    kind: &ContentKind,
    change_seq: Seq,
    content: Vec<u8>,
) -> WriteOp {
    match kind {
        ContentKind::Revoke { .. } => WriteOp::RevokeMessage {
            conversation: conversation.clone(),
            target,
        },
        _ => WriteOp::EditMessage {
            conversation: conversation.clone(),
            target,
            edit_seq: change_seq,
            content,
        },
    }
}

/// Applies an edit or revoke to an in-memory copy by the store's rules: edits in seq order,
/// revoke wins.
fn apply_change_to(message: &mut Message, kind: &ContentKind, change_seq: Seq, content: &[u8]) {
    if message.revoked {
        return;
    }
    match kind {
        ContentKind::Revoke { .. } => {
            message.revoked = true;
            message.content.clear();
        }
        _ if message.edit_seq.is_none_or(|e| e < change_seq) => {
            message.edit_seq = Some(change_seq);
            message.content = content.to_vec();
        }
        _ => {}
    }
}

fn unexpected() -> ServerError {
    ServerError {
        code: "unexpected_response".to_owned(),
        message: "the server answered with the wrong kind of response".to_owned(),
        permanent: false,
    }
}
