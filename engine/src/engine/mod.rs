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
//!
//! This module holds the state, the public inputs, commands and `poll_output`; the private
//! halves live in `sync` (listing, pulls), `ingest` (messages, tombstones, changes, read
//! state), `outbox` (sends, acks, retries) and `dispatch` (in-order announcement, batching).

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};

use crate::config::{EngineConfig, SyncPolicy};
use crate::containment::{self, MessageVerdict};
use crate::model::{
    ClientMsgId, ContentKind, Conversation, ConversationId, ConversationKind, LatestMessage,
    Message, MessageStatus, OutboxEntry, PendingChange, Seq, ServerMessage, Timestamp, UserId,
};
use crate::output::{ConnectionState, Containment, Event, MessageChange, Output};
use crate::protocol::{
    DeletionsEntry, MaxSeqEntry, PullRange, PulledRange, Push, Request, RequestId, Response,
    ServerError,
};
use crate::seq_ranges::SeqRanges;
use crate::storage::{
    may_change, Applied, BatchId, RefusedChange, StorageError, SyncSnapshot, WriteBatch, WriteOp,
};

mod dispatch;
mod ingest;
mod outbox;
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
    /// Client ids made by this engine (continuing above the outbox's), part of each id so ids
    /// sort in creation order.
    sends_created: u64,
    /// Digest of the snapshot the engine started from, mixed into client ids.
    id_salt: u64,
    conversations: HashMap<ConversationId, Conversation>,
    dispatch: HashMap<ConversationId, Dispatch>,
    total_unread: u64,
    emitted_total_unread: u64,
    outbox: BTreeMap<ClientMsgId, OutboxState>,
    /// Changes keyed by (conversation, target seq), each list ascending by change seq.
    pending_changes: HashMap<(ConversationId, Seq), Vec<PendingChange>>,
    /// Read seqs set locally that the server has not acked yet.
    reads_to_send: BTreeMap<ConversationId, Seq>,
    /// Sends acked at a seq already held (so no row of theirs is stored): a later delivery of
    /// the same id elsewhere is not their echo, and `MessageSent` is not emitted again. Only a
    /// server contradicting itself fills it; process memory only.
    acked_at_held_seq: BTreeSet<ClientMsgId>,

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
        let id_salt = outbox::snapshot_digest(&snapshot);
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
            sends_created: 0,
            id_salt,
            conversations,
            dispatch,
            total_unread,
            emitted_total_unread: total_unread,
            outbox,
            pending_changes,
            reads_to_send: BTreeMap::new(),
            acked_at_held_seq: BTreeSet::new(),
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
        // Client ids go on from the highest counter of this device's ids in the outbox.
        engine.sends_created = engine
            .outbox
            .keys()
            .filter_map(|id| engine.own_id_counter(id))
            .max()
            .unwrap_or(0);
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
    pub fn handle_response(&mut self, now: Timestamp, id: RequestId, mut response: Response) {
        if self.stopped {
            return;
        }
        let Some(state) = self.requests.remove(&id) else {
            return;
        };
        if !containment::contain_response(&mut response) {
            response = Response::Error(unexpected());
        }
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
                self.events.push(Event::Kicked {
                    reason: reason.clone(),
                });
                self.drop_connection(now, &reason);
            }
        }
        self.after_input(now);
    }

    /// Batch `id` committed: releases its events and the sends waiting for it. `applied` is
    /// what the store reported ([`Storage::apply`](crate::Storage::apply)): an edit or revoke
    /// it refused is announced as [`Containment::ChangeRefused`], not as an update.
    pub fn handle_batch_committed(&mut self, now: Timestamp, id: BatchId, applied: &Applied) {
        if self.stopped {
            return;
        }
        // Batches commit in order; an id that is not the oldest is a driver bug we ignore
        // rather than release events for data that may not be durable.
        if self.uncommitted.front().map(|(b, _)| *b) != Some(id) {
            return;
        }
        let Some((_, mut pending)) = self.uncommitted.pop_front() else {
            return;
        };
        for refused in &applied.refused_changes {
            refuse_change_event(&mut pending.events, refused);
        }
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
        let client_msg_id = self.new_client_msg_id(now, conversation);
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
            // The pending row only: another sender's message may carry the same client id.
            if conv
                .latest
                .as_ref()
                .is_some_and(|l| l.seq.is_none() && &l.client_msg_id == client_msg_id)
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
        self.abandon_connection();
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

    /// Everything tied to the current connection goes: requests (late replies are ignored),
    /// pulls, the sync run, sends in flight (resent on the next connection) and history
    /// loads (finished with what is held). Schedules nothing.
    fn abandon_connection(&mut self) {
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
}

/// Turns the update event of a change the store refused into its containment event. Two
/// identical revokes of one target in one batch produce identical events, so which of them
/// is turned does not matter.
fn refuse_change_event(events: &mut [Event], refused: &RefusedChange) {
    let found = events.iter_mut().find(|e| match e {
        Event::MessageUpdated {
            conversation,
            seq,
            change,
        } => {
            conversation == &refused.conversation
                && *seq == refused.target
                && match change {
                    MessageChange::Edited { edit_seq, .. } => *edit_seq == refused.change_seq,
                    MessageChange::Revoked => true,
                }
        }
        _ => false,
    });
    if let Some(event) = found {
        *event = Event::MessageContained {
            conversation: refused.conversation.clone(),
            seq: refused.change_seq,
            containment: Containment::ChangeRefused {
                target: refused.target,
            },
        };
    }
}

fn unexpected() -> ServerError {
    ServerError::new(
        crate::protocol::ErrorCode::UnexpectedResponse,
        "the server answered with the wrong kind of response",
    )
}
