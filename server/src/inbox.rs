//! [`ServerCore`]: the inbox server's rules, sans-IO.
//!
//! The core never reads a clock (server time is the `now` of each call), never touches a
//! socket and never spawns: a host feeds it connections and requests and drains
//! [`ServerCore::poll_output`] after every call, delivering each output to its connection in
//! order.

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use serde::{Deserialize, Serialize};
use tidemark_engine::{
    ClientMsgId, ContentKind, ConversationId, ConversationKind, DeletionsEntry, DeviceId,
    MaxSeqEntry, PullRange, PulledRange, Push, Request, RequestId, Response, Seq, SeqRanges,
    ServerError, ServerMessage, SyncToken, Timestamp, UserId,
};

use tidemark_engine::protocol::ErrorCode;

use tidemark_transport::wire::{size, Limits};

use crate::{
    AdminError, AppendOutcome, ChangeClock, NewMessage, SentRecord, ServerStore, ServerStoreError,
};

/// One connection, as the host numbers them. Unique for the life of the core.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct ConnId(pub u64);

/// Server limits. [`ServerConfig::check`] says whether they fit the wire's frame limits.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServerConfig {
    /// Most messages one pull response carries; the range where the cap is hit is cut short
    /// and later ranges are left out.
    pub max_pull_messages: usize,
    /// Most bytes of encoded messages one pull response carries (as
    /// [`tidemark_transport::wire::size::message`] estimates them), capped further by the client's
    /// `max_bytes`; cut like the count. A response carries at least one message when any is
    /// due, whatever its size.
    #[serde(default = "default_max_pull_bytes")]
    pub max_pull_bytes: usize,
    /// Largest accepted message content, in bytes.
    pub max_content_bytes: usize,
    /// Longest accepted client message id, in bytes.
    #[serde(default = "default_max_id_bytes")]
    pub max_id_bytes: usize,
    /// Longest accepted custom kind name, in bytes.
    #[serde(default = "default_max_id_bytes")]
    pub max_kind_name_bytes: usize,
    /// Largest max-seq page; larger requested limits are cut to it.
    pub max_seqs_page: u32,
}

/// 4 MiB, a sixteenth of the client transports' 64 MiB frame limit: with the single
/// message a reply may carry beyond the budget, the range headers and the missing seqs, a
/// reply stays far below the frame limit; written in seconds even on a slow mobile link
/// (the host's per-frame write timeout is 30 s); and the engine's four pulls in flight keep
/// up to 16 MiB on the way, enough to fill fast links.
fn default_max_pull_bytes() -> usize {
    4 * 1024 * 1024
}

/// The wire's id limit ([`Limits::max_id_bytes`]).
fn default_max_id_bytes() -> usize {
    128
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            max_pull_messages: 5_000,
            max_pull_bytes: default_max_pull_bytes(),
            max_content_bytes: 64 * 1024,
            max_id_bytes: default_max_id_bytes(),
            max_kind_name_bytes: default_max_id_bytes(),
            max_seqs_page: 1_000,
        }
    }
}

/// Why a [`ServerConfig`] cannot serve clients: a message or reply it allows would not fit
/// a frame, so a client could never send or receive it.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("server config: {0}")]
pub struct ServerConfigError(pub String);

impl ServerConfig {
    /// Checks that everything these limits let through fits a frame: the largest send fits
    /// `client_frames` (what the server reads), the largest message and the largest pull
    /// reply fit [`Limits::server_frames`] (what the client transports read), and ids fit
    /// the wire's id limit. A server refuses to start with a config that fails.
    pub fn check(&self, client_frames: &Limits) -> Result<(), ServerConfigError> {
        let server_frames = Limits::server_frames();
        let id_limit = client_frames.max_id_bytes.min(server_frames.max_id_bytes);
        if self.max_id_bytes > id_limit || self.max_kind_name_bytes > id_limit {
            return Err(ServerConfigError(format!(
                "max_id_bytes {} and max_kind_name_bytes {} must be at most the wire's id \
                 limit of {id_limit}",
                self.max_id_bytes, self.max_kind_name_bytes
            )));
        }
        if self.max_pull_messages == 0 || self.max_pull_messages > server_frames.max_items {
            return Err(ServerConfigError(format!(
                "max_pull_messages {} must be 1 to {}, the most messages a client accepts \
                 in one range",
                self.max_pull_messages, server_frames.max_items
            )));
        }
        // The largest message: every id and the kind name at their limits, each byte of
        // them escaped.
        let long = "\u{1}".repeat(id_limit);
        let largest = size::message_parts(
            &long,
            &long,
            &long,
            &ContentKind::Custom(long.clone()),
            self.max_content_bytes,
        );
        // A send carries the message without seq and server time, plus its request id.
        let send = largest + size::RESPONSE_OVERHEAD;
        if send > client_frames.max_frame_bytes {
            return Err(ServerConfigError(format!(
                "max_content_bytes {} makes a send of up to {send} bytes, over the {} bytes \
                 of a client frame",
                self.max_content_bytes, client_frames.max_frame_bytes
            )));
        }
        // The messages of a reply stay within the byte budget, except a single message
        // over it; a range header per requested range (at most `max_items`) and the seqs
        // missing between messages (a range per message and range at most) come on top.
        let ranges = client_frames.max_items;
        let reply = size::RESPONSE_OVERHEAD
            + self.max_pull_bytes.max(largest)
            + ranges * size::pulled_range(&ConversationId(long.clone()))
            + (self.max_pull_messages + ranges) * size::SEQ_RANGE;
        if reply > server_frames.max_frame_bytes {
            return Err(ServerConfigError(format!(
                "max_pull_bytes {} and max_content_bytes {} make pull replies of up to \
                 {reply} bytes, over the {} bytes of a client's frame",
                self.max_pull_bytes, self.max_content_bytes, server_frames.max_frame_bytes
            )));
        }
        Ok(())
    }
}

/// Who is on a connection.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Session {
    /// The user.
    pub user: UserId,
    /// The device.
    pub device: DeviceId,
}

/// Something for the host to deliver.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ServerOutput {
    /// The answer to request `id` of connection `conn`.
    Respond {
        /// The connection.
        conn: ConnId,
        /// The request's id.
        id: RequestId,
        /// The answer.
        response: Response,
    },
    /// An unasked message for connection `conn`.
    Push {
        /// The connection.
        conn: ConnId,
        /// The message.
        push: Push,
    },
    /// The server ended connection `conn` (see [`ServerCore::kick`]): close it after
    /// delivering the outputs queued before this one. The core has forgotten the connection.
    Close {
        /// The connection.
        conn: ConnId,
    },
}

/// The inbox server's rules over a [`ServerStore`]. See the module docs.
///
/// Methods: connection lifecycle ([`ServerCore::connect`], [`ServerCore::disconnect`]),
/// [`ServerCore::handle_request`], [`ServerCore::poll_output`], getters, and an admin API
/// (users, conversations, appends by others, deletions, kicks, fault hooks) for tests and
/// operators.
#[derive(Debug)]
pub struct ServerCore<St: ServerStore> {
    store: St,
    config: ServerConfig,
    sessions: BTreeMap<ConnId, Session>,
    /// Online connections per user, for fan-out.
    online: BTreeMap<UserId, BTreeSet<ConnId>>,
    outputs: VecDeque<ServerOutput>,
    /// Errors the next sends answer with (fault injection), front first.
    send_faults: VecDeque<ServerError>,
    /// Sends a permanent fault refused, by connection and request id: a copy of the same
    /// request (a network that duplicates) gets the same answer rather than a second
    /// decision, which could store a send whose device was told it failed (a real permanent
    /// refusal belongs to the request). Only faults are kept, so the map stays as small as
    /// the fault plan; forgotten with the connection.
    refused_sends: BTreeMap<(ConnId, RequestId), (ClientMsgId, ServerError)>,
    /// Numbers the client ids of admin appends.
    admin_appends: u64,
}

impl<St: ServerStore> ServerCore<St> {
    /// A server over `store`.
    pub fn new(store: St, config: ServerConfig) -> Self {
        Self {
            store,
            config,
            sessions: BTreeMap::new(),
            online: BTreeMap::new(),
            outputs: VecDeque::new(),
            send_faults: VecDeque::new(),
            refused_sends: BTreeMap::new(),
            admin_appends: 0,
        }
    }

    // ----- getters -----

    /// The store, for reads (tests compare devices with it).
    pub fn store(&self) -> &St {
        &self.store
    }

    /// The store, for changes that bypass the rules (no pushes are sent).
    pub fn store_mut(&mut self) -> &mut St {
        &mut self.store
    }

    /// Gives the store back (a host shutting down returns it to its caller).
    pub fn into_store(self) -> St {
        self.store
    }

    /// The limits.
    pub fn config(&self) -> &ServerConfig {
        &self.config
    }

    /// Who is on `conn`, if it is connected.
    pub fn session(&self, conn: ConnId) -> Option<&Session> {
        self.sessions.get(&conn)
    }

    /// Whether `conn` is connected.
    pub fn is_connected(&self, conn: ConnId) -> bool {
        self.sessions.contains_key(&conn)
    }

    /// The user's online connections, ascending.
    pub fn connections_of(&self, user: &UserId) -> Vec<ConnId> {
        self.online
            .get(user)
            .map(|set| set.iter().copied().collect())
            .unwrap_or_default()
    }

    /// Whether outputs wait to be drained.
    pub fn has_output(&self) -> bool {
        !self.outputs.is_empty()
    }

    // ----- connection lifecycle and requests -----

    /// An authenticated connection of `user` on `device` opened. Registers the device.
    /// Fails (and nothing changes) for an unknown user. Reusing a connected `conn` replaces its
    /// session.
    pub fn connect(
        &mut self,
        conn: ConnId,
        user: UserId,
        device: DeviceId,
    ) -> Result<(), ServerStoreError> {
        if !self.store.user_exists(&user)? {
            return Err(ServerStoreError::UnknownUser(user));
        }
        self.store.add_device(&user, &device)?;
        self.disconnect(conn);
        self.online.entry(user.clone()).or_default().insert(conn);
        self.sessions.insert(conn, Session { user, device });
        Ok(())
    }

    /// Connection `conn` closed. Nothing more is sent to it. Unknown connections are ignored.
    pub fn disconnect(&mut self, conn: ConnId) {
        self.refused_sends.retain(|(c, _), _| *c != conn);
        if let Some(session) = self.sessions.remove(&conn) {
            if let Some(set) = self.online.get_mut(&session.user) {
                set.remove(&conn);
                if set.is_empty() {
                    self.online.remove(&session.user);
                }
            }
        }
    }

    /// Request `id` arrived on `conn` at server time `now`. Exactly one
    /// [`ServerOutput::Respond`] for it is queued, before any push it causes. Requests on a
    /// connection that is not connected are dropped: there is no one to answer.
    pub fn handle_request(&mut self, now: Timestamp, conn: ConnId, id: RequestId, req: Request) {
        let Some(session) = self.sessions.get(&conn).cloned() else {
            return;
        };
        let mark = self.outputs.len();
        // A copy is the same request id on the same connection for the same send.
        let send_id = match &req {
            Request::Send { client_msg_id, .. } => Some(client_msg_id.clone()),
            _ => None,
        };
        let refused_before = send_id.as_ref().and_then(|cmid| {
            self.refused_sends
                .get(&(conn, id))
                .filter(|(refused, _)| refused == cmid)
                .map(|(_, e)| e.clone())
        });
        let faults_before = self.send_faults.len();
        let response = match refused_before {
            Some(refusal) => Response::Error(refusal),
            None => match self.answer(now, conn, &session, req) {
                Ok(response) => response,
                // A store failure is the server's problem, not the client's: retry later.
                Err(err) => Response::Error(ServerError::new(ErrorCode::Internal, err.to_string())),
            },
        };
        if let (Response::Error(e), Some(cmid)) = (&response, send_id) {
            if e.permanent && self.send_faults.len() < faults_before {
                self.refused_sends.insert((conn, id), (cmid, e.clone()));
            }
        }
        self.outputs
            .insert(mark, ServerOutput::Respond { conn, id, response });
    }

    /// The next output, in the order it must be delivered (per connection).
    pub fn poll_output(&mut self) -> Option<ServerOutput> {
        self.outputs.pop_front()
    }

    fn answer(
        &mut self,
        now: Timestamp,
        conn: ConnId,
        session: &Session,
        req: Request,
    ) -> Result<Response, ServerStoreError> {
        match req {
            Request::GetMaxSeqs {
                after,
                limit,
                since,
            } => self.max_seqs(&session.user, after, limit, since.as_ref()),
            Request::Pull { ranges, max_bytes } => self.pull(&session.user, &ranges, max_bytes),
            Request::Send {
                conversation,
                client_msg_id,
                kind,
                content,
                created_at,
            } => self.send(
                now,
                conn,
                session,
                NewMessage {
                    conversation,
                    sender: session.user.clone(),
                    client_msg_id,
                    kind,
                    content,
                    created_at,
                },
            ),
            Request::MarkRead { conversation, seq } => {
                if !self.store.is_member(&conversation, &session.user)? {
                    return Ok(not_member(&conversation));
                }
                let info = self
                    .store
                    .conversation(&conversation)?
                    .ok_or_else(|| ServerStoreError::UnknownConversation(conversation.clone()))?;
                // Nobody can have read beyond the last message.
                let target = seq.min(info.max_seq);
                let before = self.store.read_seq(&session.user, &conversation)?;
                let after = self
                    .store
                    .set_read_seq(&session.user, &conversation, target)?;
                if after > before {
                    self.push_read_seq(&session.user, &conversation, after, Some(conn));
                }
                Ok(Response::ReadAck {
                    conversation,
                    seq: after,
                })
            }
            Request::GetDeletions { conversations } => {
                let mut entries = Vec::with_capacity(conversations.len());
                for conversation in conversations {
                    // Refused ones are simply left out: nothing about them leaks.
                    if !self.store.is_member(&conversation, &session.user)? {
                        continue;
                    }
                    let seqs = self.deleted_seqs(&conversation)?;
                    entries.push(DeletionsEntry {
                        deleted_count: seqs.count(),
                        conversation,
                        seqs,
                    });
                }
                Ok(Response::Deletions { entries })
            }
            Request::Ping => Ok(Response::Pong { server_time: now }),
        }
    }

    /// A send: idempotency first, then the rules, then the fault hook, then the append.
    ///
    /// A resend of a (sender, client id) already stored in this conversation is answered
    /// with its original ack before any other rule: the sender may have left the
    /// conversation since, the limits may have changed, the seq may be deleted; none of that
    /// makes the message unsent, and a refusal would make its device report a stored
    /// message as failed.
    fn send(
        &mut self,
        now: Timestamp,
        conn: ConnId,
        session: &Session,
        message: NewMessage,
    ) -> Result<Response, ServerStoreError> {
        if let Some(record) = self
            .store
            .sent_record(&session.user, &message.client_msg_id)?
        {
            return Ok(self.resend_answer(message.client_msg_id, &message.conversation, &record));
        }
        if !self.store.is_member(&message.conversation, &session.user)? {
            return Ok(not_member(&message.conversation));
        }
        if let Some(refusal) = self.refusal_of(&message)? {
            return Ok(Response::Error(refusal));
        }
        // The fault hook stands for a server failing to store: it only hits sends that
        // would store something new, never a resend of a stored message.
        if let Some(fault) = self.send_faults.pop_front() {
            return Ok(Response::Error(fault));
        }
        let client_msg_id = message.client_msg_id.clone();
        let conversation = message.conversation.clone();
        let (seq, server_time) = match self.store.append(message, now)? {
            // Known already (the store was changed behind the core's back): answer as the
            // check above does.
            AppendOutcome::Duplicate(record) => {
                return Ok(self.resend_answer(client_msg_id, &conversation, &record));
            }
            AppendOutcome::Appended(stored) => {
                self.after_append(&stored, Some(conn))?;
                (stored.seq, stored.server_time)
            }
        };
        Ok(Response::SendAck {
            client_msg_id,
            seq,
            server_time,
        })
    }

    /// The answer to a send whose (sender, client id) is stored: its original ack when it
    /// was stored in this conversation (nothing is fanned out again), a conflict otherwise.
    /// Acking a send to another conversation with the first one's seq would tell the sender
    /// a message was stored that was not.
    fn resend_answer(
        &self,
        client_msg_id: ClientMsgId,
        conversation: &ConversationId,
        record: &SentRecord,
    ) -> Response {
        if &record.conversation != conversation {
            return Response::Error(ServerError::new(
                ErrorCode::ClientIdConflict,
                format!(
                    "client message id {client_msg_id} was already used in another conversation"
                ),
            ));
        }
        Response::SendAck {
            client_msg_id,
            seq: record.seq,
            server_time: record.server_time,
        }
    }

    /// Why a new message of a member must not be stored, if it must not: a value that some
    /// store cannot hold or that breaks a limit, or an edit or revoke that is not the
    /// author's change of an ordinary message of this conversation. Every refusal is
    /// permanent: the same send can never succeed.
    fn refusal_of(&self, message: &NewMessage) -> Result<Option<ServerError>, ServerStoreError> {
        let limits = &self.config;
        let id = &message.client_msg_id.0;
        if id.is_empty() || id.len() > limits.max_id_bytes {
            return Ok(Some(ServerError::new(
                ErrorCode::InvalidValue,
                format!(
                    "a client message id of {} bytes (1 to {} allowed)",
                    id.len(),
                    limits.max_id_bytes
                ),
            )));
        }
        if let ContentKind::Custom(name) = &message.kind {
            if name.is_empty() || name.len() > limits.max_kind_name_bytes {
                return Ok(Some(ServerError::new(
                    ErrorCode::InvalidValue,
                    format!(
                        "a custom kind name of {} bytes (1 to {} allowed)",
                        name.len(),
                        limits.max_kind_name_bytes
                    ),
                )));
            }
        }
        // SQLite stores integers as i64; every store must hold every accepted value.
        if message.created_at.0 > MAX_STORABLE {
            return Ok(Some(ServerError::new(
                ErrorCode::InvalidValue,
                format!(
                    "created_at {} is above the largest storable time {MAX_STORABLE}",
                    message.created_at.0
                ),
            )));
        }
        if message.content.len() > limits.max_content_bytes {
            return Ok(Some(ServerError::new(
                ErrorCode::TooLarge,
                format!(
                    "content of {} bytes is over the limit of {}",
                    message.content.len(),
                    limits.max_content_bytes
                ),
            )));
        }
        let Some(target) = message.kind.change_target() else {
            return Ok(None);
        };
        let what = match message.kind {
            ContentKind::Revoke { .. } => "revoke",
            _ => "edit",
        };
        let invalid = |why: &str| {
            Ok(Some(ServerError::new(
                ErrorCode::InvalidTarget,
                format!(
                    "cannot {what} seq {} of {}: {why}",
                    target.0, message.conversation
                ),
            )))
        };
        // `message` finds only live messages: seq 0, seqs above the max seq (`u64::MAX`
        // included), deleted seqs and seqs below the floor have none.
        let Some(original) = self.store.message(&message.conversation, target)? else {
            return invalid("no such message");
        };
        if original.kind.change_target().is_some() {
            return invalid("it is itself an edit or revoke");
        }
        // No roles: only the author changes a message. A server with moderators would add
        // them here, and say so in docs/protocol.md.
        if original.sender != message.sender {
            return Ok(Some(ServerError::new(
                ErrorCode::NotAuthor,
                format!(
                    "cannot {what} seq {} of {}: only its author {} may",
                    target.0, message.conversation, original.sender
                ),
            )));
        }
        Ok(None)
    }

    /// A max-seq page: of every conversation of the user, or, with a `since` token this
    /// store made and still serves, of those whose entry may have changed since it.
    fn max_seqs(
        &mut self,
        user: &UserId,
        after: Option<ConversationId>,
        limit: u32,
        since: Option<&SyncToken>,
    ) -> Result<Response, ServerStoreError> {
        let limit = limit.clamp(1, self.config.max_seqs_page.max(1)) as usize;
        // The token is read before the entries, in the same turn of the core (nothing writes
        // in between): every change after it has a higher counter value.
        let clock = self.store.change_clock()?;
        let token = Some(sync_token_of(&clock));
        let since = since.and_then(|t| token_counter(&clock, t));
        // One extra row tells whether another page follows.
        let mut ids = match since {
            Some(since) => {
                self.store
                    .conversations_changed_since(user, since, after.as_ref(), limit + 1)?
            }
            None => self
                .store
                .conversations_of(user, after.as_ref(), limit + 1)?,
        };
        let has_more = ids.len() > limit;
        ids.truncate(limit);
        let mut entries = Vec::with_capacity(ids.len());
        for id in ids {
            let info = self
                .store
                .conversation(&id)?
                .ok_or_else(|| ServerStoreError::UnknownConversation(id.clone()))?;
            let read_seq = self.store.read_seq(user, &id)?;
            let not_unread = self.not_unread(user, &id, read_seq, info.max_seq)?;
            let deleted_count = self.deleted_seqs(&id)?.count();
            entries.push(MaxSeqEntry {
                read_seq,
                not_unread,
                deleted_count,
                conversation: id,
                kind: info.kind,
                max_seq: info.max_seq,
                min_seq: info.min_seq,
                last_activity: info.last_activity,
            });
        }
        Ok(Response::MaxSeqs {
            entries,
            has_more,
            token,
            full: since.is_none(),
        })
    }

    /// Every seq of the conversation deleted one by one, above the floor.
    fn deleted_seqs(&self, conversation: &ConversationId) -> Result<SeqRanges, ServerStoreError> {
        let Some(info) = self.store.conversation(conversation)? else {
            return Ok(SeqRanges::new());
        };
        self.store.deleted(conversation, Seq(1), info.max_seq)
    }

    /// Seqs in `(read_seq, max_seq]` that do not count as unread for `user`: everything there
    /// except existing messages of other users that are not edits or revokes.
    fn not_unread(
        &self,
        user: &UserId,
        conversation: &ConversationId,
        read_seq: Seq,
        max_seq: Seq,
    ) -> Result<SeqRanges, ServerStoreError> {
        let start = read_seq.next();
        let mut out = SeqRanges::from_range(start, max_seq);
        if start > max_seq {
            return Ok(out);
        }
        for seq in self.store.unread_seqs(conversation, user, start, max_seq)? {
            out.remove_range(seq, seq);
        }
        Ok(out)
    }

    /// A pull, capped by message count and by bytes (the smaller of the server's and the
    /// client's budget). The range where a cap is hit ends at its last message carried and
    /// later ranges are left out; the client asks again for the rest. The first message of
    /// a reply is carried whatever its size, so every pull with a message due makes progress
    /// ([`ServerConfig::check`] makes sure one message always fits a frame).
    fn pull(
        &mut self,
        user: &UserId,
        ranges: &[PullRange],
        client_max_bytes: Option<u64>,
    ) -> Result<Response, ServerStoreError> {
        // Refuse the whole request when any range is not readable: answering part of it
        // would look like a short reply and the client would ask again forever.
        for range in ranges {
            if !self.store.is_member(&range.conversation, user)? {
                return Ok(not_member(&range.conversation));
            }
        }
        let client_bytes =
            client_max_bytes.map_or(usize::MAX, |b| usize::try_from(b).unwrap_or(usize::MAX));
        let mut budget = PullBudget {
            messages: self.config.max_pull_messages,
            bytes: self.config.max_pull_bytes.min(client_bytes),
            carried: 0,
        };
        let mut out = Vec::with_capacity(ranges.len());
        for range in ranges {
            if budget.messages == 0 {
                break;
            }
            let info = self
                .store
                .conversation(&range.conversation)?
                .ok_or_else(|| ServerStoreError::UnknownConversation(range.conversation.clone()))?;
            // Seq 0 never exists; nothing exists beyond the max seq.
            let from = range.from.max(Seq(1));
            let to = range.to.min(info.max_seq);
            if from > to {
                continue;
            }
            budget.bytes = budget
                .bytes
                .saturating_sub(size::pulled_range(&range.conversation));
            let (messages, cut) =
                self.messages_within(&range.conversation, from, to, &mut budget)?;
            // A cut reply covers up to the last message it carries. A range cut before its
            // first message is left out, as the ranges after it are.
            let covered_to = match messages.last() {
                Some(last) if cut => last.seq,
                None if cut => break,
                _ => to,
            };
            let present: SeqRanges = messages.iter().map(|m| m.seq).collect();
            let mut missing = SeqRanges::new();
            for gap in present.gaps_in(from, covered_to) {
                missing.insert_range(gap.start, gap.end);
            }
            out.push(PulledRange {
                conversation: range.conversation.clone(),
                from,
                to: covered_to,
                messages,
                missing,
                min_seq: info.min_seq,
                max_seq: info.max_seq,
            });
            if cut {
                break;
            }
        }
        Ok(Response::Pulled { ranges: out })
    }

    /// The messages of `from..=to` the budget allows, ascending, and whether the budget cut
    /// the range short. Reads the store in pages, so a cut after a few large messages does
    /// not load thousands.
    fn messages_within(
        &self,
        conversation: &ConversationId,
        from: Seq,
        to: Seq,
        budget: &mut PullBudget,
    ) -> Result<(Vec<ServerMessage>, bool), ServerStoreError> {
        const PAGE: usize = 256;
        let mut out = Vec::new();
        let mut next = from;
        loop {
            // One message beyond the count budget tells whether the cap cuts this range.
            let want = budget.messages.saturating_add(1).min(PAGE);
            let page = self.store.messages(conversation, next, to, want)?;
            let full = page.len() == want;
            for m in page {
                let bytes = size::message(&m);
                let fits = budget.messages > 0 && (bytes <= budget.bytes || budget.carried == 0);
                if !fits {
                    return Ok((out, true));
                }
                budget.messages -= 1;
                budget.bytes = budget.bytes.saturating_sub(bytes);
                budget.carried += 1;
                // Seqs stay far below u64::MAX (they grow by one per append and every store
                // holds them as i64), so `next` never wraps.
                next = m.seq.next();
                out.push(m);
            }
            if !full || next > to {
                return Ok((out, false));
            }
        }
    }

    /// What follows a new message: the sender has read up to it, every other online
    /// connection of every member gets it, the sender's other connections get the read seq.
    fn after_append(
        &mut self,
        message: &ServerMessage,
        origin: Option<ConnId>,
    ) -> Result<(), ServerStoreError> {
        let read = self
            .store
            .set_read_seq(&message.sender, &message.conversation, message.seq)?;
        for member in self.store.members(&message.conversation)? {
            for conn in self.connections_of(&member) {
                if Some(conn) != origin {
                    self.outputs.push_back(ServerOutput::Push {
                        conn,
                        push: Push::Message(message.clone()),
                    });
                }
            }
        }
        self.push_read_seq(&message.sender, &message.conversation, read, origin);
        Ok(())
    }

    fn push_read_seq(
        &mut self,
        user: &UserId,
        conversation: &ConversationId,
        seq: Seq,
        except: Option<ConnId>,
    ) {
        for conn in self.connections_of(user) {
            if Some(conn) != except {
                self.outputs.push_back(ServerOutput::Push {
                    conn,
                    push: Push::ReadSeq {
                        conversation: conversation.clone(),
                        seq,
                    },
                });
            }
        }
    }

    fn push_to_members(
        &mut self,
        conversation: &ConversationId,
        push: Push,
    ) -> Result<(), ServerStoreError> {
        for member in self.store.members(conversation)? {
            for conn in self.connections_of(&member) {
                self.outputs.push_back(ServerOutput::Push {
                    conn,
                    push: push.clone(),
                });
            }
        }
        Ok(())
    }

    // ----- admin API -----

    /// Creates a user; a no-op when it exists.
    pub fn create_user(&mut self, user: &UserId) -> Result<(), ServerStoreError> {
        self.store.create_user(user).map(|_| ())
    }

    /// Creates a conversation with these (existing) members and pushes
    /// [`Push::Conversation`] to every online member.
    pub fn create_conversation(
        &mut self,
        id: &ConversationId,
        kind: ConversationKind,
        members: &[UserId],
    ) -> Result<(), ServerStoreError> {
        self.store.create_conversation(id, kind, members)?;
        self.push_to_members(
            id,
            Push::Conversation {
                conversation: id.clone(),
                kind,
            },
        )
    }

    /// Adds an existing user to a conversation and pushes [`Push::Conversation`] to that
    /// user's online devices.
    pub fn add_member(
        &mut self,
        conversation: &ConversationId,
        user: &UserId,
    ) -> Result<(), ServerStoreError> {
        self.store.add_member(conversation, user)?;
        let info = self
            .store
            .conversation(conversation)?
            .ok_or_else(|| ServerStoreError::UnknownConversation(conversation.clone()))?;
        // Only the new member's devices learn of it; the others already know the conversation.
        for conn in self.connections_of(user) {
            self.outputs.push_back(ServerOutput::Push {
                conn,
                push: Push::Conversation {
                    conversation: conversation.clone(),
                    kind: info.kind,
                },
            });
        }
        Ok(())
    }

    /// Appends a message by `user` at server time `now` as if sent from a device that is not
    /// connected: it is fanned out to every online connection of every member (the user's
    /// included) and marks the conversation read for `user`, like a send. Its client id is
    /// `admin-N`.
    ///
    /// Only membership is checked: none of a send's value or authority checks. Tests use it
    /// to play a server that breaks its promises (a foreign edit, a target that does not
    /// exist), which clients must contain.
    pub fn append_as(
        &mut self,
        now: Timestamp,
        user: &UserId,
        conversation: &ConversationId,
        kind: ContentKind,
        content: Vec<u8>,
    ) -> Result<ServerMessage, AdminError> {
        if !self.store.is_member(conversation, user)? {
            return Err(AdminError::NotMember {
                user: user.clone(),
                conversation: conversation.clone(),
            });
        }
        self.admin_appends += 1;
        let message = NewMessage {
            conversation: conversation.clone(),
            sender: user.clone(),
            client_msg_id: ClientMsgId(format!("admin-{}", self.admin_appends)),
            kind,
            content,
            created_at: now,
        };
        match self.store.append(message, now)? {
            AppendOutcome::Appended(stored) => {
                self.after_append(&stored, None)?;
                Ok(stored)
            }
            // Admin ids are fresh unless the store was changed behind the core's back.
            AppendOutcome::Duplicate(record) => {
                Err(AdminError::Store(ServerStoreError::AlreadyExists(format!(
                    "admin message at seq {} of {}",
                    record.seq.0, record.conversation
                ))))
            }
        }
    }

    /// Deletes these seqs and pushes [`Push::Deleted`] with the newly deleted ones to every
    /// online member. Returns the newly deleted seqs.
    pub fn delete_seqs(
        &mut self,
        conversation: &ConversationId,
        seqs: &SeqRanges,
    ) -> Result<SeqRanges, AdminError> {
        let newly = self.store.delete_seqs(conversation, seqs)?;
        if !newly.is_empty() {
            let info = self
                .store
                .conversation(conversation)?
                .ok_or_else(|| ServerStoreError::UnknownConversation(conversation.clone()))?;
            self.push_to_members(
                conversation,
                Push::Deleted {
                    conversation: conversation.clone(),
                    seqs: newly.clone(),
                    min_seq: info.min_seq,
                },
            )?;
        }
        Ok(newly)
    }

    /// Raises the history floor (never lowers it) and, when it rose, pushes
    /// [`Push::Deleted`] with the new floor (and no individual seqs) to every online member.
    /// Returns the floor after the call.
    pub fn set_min_seq(
        &mut self,
        conversation: &ConversationId,
        min_seq: Seq,
    ) -> Result<Seq, AdminError> {
        let before = self
            .store
            .conversation(conversation)?
            .ok_or_else(|| ServerStoreError::UnknownConversation(conversation.clone()))?
            .min_seq;
        let floor = self.store.set_min_seq(conversation, min_seq)?;
        if floor > before {
            self.push_to_members(
                conversation,
                Push::Deleted {
                    conversation: conversation.clone(),
                    seqs: SeqRanges::new(),
                    min_seq: floor,
                },
            )?;
        }
        Ok(floor)
    }

    /// Expires every sync token below change counter value `floor` (see
    /// [`ServerStore::raise_change_floor`]): a device presenting one gets the full listing.
    /// A server raises it when it compacts its change history; returns the floor after the
    /// call.
    pub fn expire_sync_tokens(&mut self, floor: u64) -> Result<u64, AdminError> {
        Ok(self.store.raise_change_floor(floor)?)
    }

    /// Expires every sync token older than the last change: the next listing of every
    /// device holding one is full. (A token of the current counter misses nothing.)
    pub fn expire_all_sync_tokens(&mut self) -> Result<u64, AdminError> {
        let counter = self.store.change_clock()?.counter;
        self.expire_sync_tokens(counter)
    }

    /// Ends a session: pushes [`Push::Kicked`] to `conn`, then [`ServerOutput::Close`], and
    /// forgets the connection. Returns whether it was connected.
    pub fn kick(&mut self, conn: ConnId, reason: &str) -> bool {
        if !self.is_connected(conn) {
            return false;
        }
        self.outputs.push_back(ServerOutput::Push {
            conn,
            push: Push::Kicked {
                reason: reason.to_owned(),
            },
        });
        self.outputs.push_back(ServerOutput::Close { conn });
        self.disconnect(conn);
        true
    }

    /// Fault hook: the next `n` sends that would store a new message are answered with
    /// `error` instead (nothing is stored), as a server failing to store them would. Resends
    /// of stored messages and sends the rules refuse do not take a fault: a correct server
    /// never refuses a resend of a message it holds. Use `permanent: false` for transient
    /// failures.
    pub fn fail_next_sends(&mut self, n: usize, error: ServerError) {
        self.send_faults.extend(std::iter::repeat_n(error, n));
    }
}

/// The sync token naming `clock`'s current counter: `<epoch>.<counter>`.
fn sync_token_of(clock: &ChangeClock) -> SyncToken {
    SyncToken::new(format!("{}.{}", clock.epoch, clock.counter))
}

/// The counter value `token` names, when it is one of this store's and still served: same
/// epoch, not below the floor, not beyond the counter (a token from the future comes from
/// a restored backup or a forgery). Anything else is unknown and gets the full listing.
fn token_counter(clock: &ChangeClock, token: &SyncToken) -> Option<u64> {
    if !token.fits() {
        return None;
    }
    let (epoch, counter) = token.as_str().split_once('.')?;
    if epoch != clock.epoch || !counter.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let counter: u64 = counter.parse().ok()?;
    (clock.floor..=clock.counter)
        .contains(&counter)
        .then_some(counter)
}

fn not_member(conversation: &ConversationId) -> Response {
    Response::Error(ServerError::new(
        ErrorCode::NotMember,
        format!("not a member of {conversation}"),
    ))
}

/// What a pull reply may still carry.
struct PullBudget {
    messages: usize,
    bytes: usize,
    /// Messages carried so far in the reply: the first is carried whatever its size.
    carried: usize,
}

/// The largest time every store holds: SQLite's integers are i64.
const MAX_STORABLE: u64 = i64::MAX as u64;
