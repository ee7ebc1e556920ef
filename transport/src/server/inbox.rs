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
    ServerError, ServerMessage, Timestamp, UserId,
};

use super::{AdminError, AppendOutcome, NewMessage, ServerStore, ServerStoreError};

/// One connection, as the host numbers them. Unique for the life of the core.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct ConnId(pub u64);

/// Server limits.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServerConfig {
    /// Most messages one pull response carries; the range where the cap is hit is cut short
    /// and later ranges are left out.
    pub max_pull_messages: usize,
    /// Largest accepted message content, in bytes.
    pub max_content_bytes: usize,
    /// Largest max-seq page; larger requested limits are cut to it.
    pub max_seqs_page: u32,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            max_pull_messages: 5_000,
            max_content_bytes: 64 * 1024,
            max_seqs_page: 1_000,
        }
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
        let response = match self.answer(now, conn, &session, req) {
            Ok(response) => response,
            // A store failure is the server's problem, not the client's: retry later.
            Err(err) => Response::Error(ServerError {
                code: "internal".into(),
                message: err.to_string(),
                permanent: false,
            }),
        };
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
            Request::GetMaxSeqs { after, limit } => self.max_seqs(&session.user, after, limit),
            Request::Pull { ranges } => self.pull(&session.user, &ranges),
            Request::Send {
                conversation,
                client_msg_id,
                kind,
                content,
                created_at,
            } => {
                if let Some(fault) = self.send_faults.pop_front() {
                    return Ok(Response::Error(fault));
                }
                if !self.store.is_member(&conversation, &session.user)? {
                    return Ok(not_member(&conversation));
                }
                if content.len() > self.config.max_content_bytes {
                    return Ok(Response::Error(ServerError {
                        code: "too_large".into(),
                        message: format!(
                            "content of {} bytes is over the limit of {}",
                            content.len(),
                            self.config.max_content_bytes
                        ),
                        permanent: true,
                    }));
                }
                let message = NewMessage {
                    conversation,
                    sender: session.user.clone(),
                    client_msg_id: client_msg_id.clone(),
                    kind,
                    content,
                    created_at,
                };
                let (seq, server_time) = match self.store.append(message, now)? {
                    // A resend: answer as the first time, and do not fan out again.
                    AppendOutcome::Duplicate(record) => (record.seq, record.server_time),
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

    fn max_seqs(
        &mut self,
        user: &UserId,
        after: Option<ConversationId>,
        limit: u32,
    ) -> Result<Response, ServerStoreError> {
        let limit = limit.clamp(1, self.config.max_seqs_page.max(1)) as usize;
        // One extra row tells whether another page follows.
        let mut ids = self
            .store
            .conversations_of(user, after.as_ref(), limit + 1)?;
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
        Ok(Response::MaxSeqs { entries, has_more })
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
        for m in self
            .store
            .messages(conversation, start, max_seq, usize::MAX)?
        {
            if &m.sender != user && m.kind.change_target().is_none() {
                out.remove_range(m.seq, m.seq);
            }
        }
        Ok(out)
    }

    fn pull(&mut self, user: &UserId, ranges: &[PullRange]) -> Result<Response, ServerStoreError> {
        // Refuse the whole request when any range is not readable: answering part of it
        // would look like a short reply and the client would ask again forever.
        for range in ranges {
            if !self.store.is_member(&range.conversation, user)? {
                return Ok(not_member(&range.conversation));
            }
        }
        let mut budget = self.config.max_pull_messages;
        let mut out = Vec::with_capacity(ranges.len());
        for range in ranges {
            if budget == 0 {
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
            // One message beyond the budget tells whether the cap cuts this range.
            let mut messages =
                self.store
                    .messages(&range.conversation, from, to, budget.saturating_add(1))?;
            let cut = messages.len() > budget;
            messages.truncate(budget);
            budget -= messages.len();
            // A cut reply covers up to the last message it carries; the budget was at least 1
            // here, so that message exists and `to >= from` holds.
            let covered_to = match messages.last() {
                Some(last) if cut => last.seq,
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
        }
        Ok(Response::Pulled { ranges: out })
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

    /// Fault hook: the next `n` send requests are answered with `error` before any rule runs
    /// (nothing is stored). Use `permanent: false` for transient failures.
    pub fn fail_next_sends(&mut self, n: usize, error: ServerError) {
        self.send_faults.extend(std::iter::repeat_n(error, n));
    }
}

fn not_member(conversation: &ConversationId) -> Response {
    Response::Error(ServerError {
        code: "not_member".into(),
        message: format!("not a member of {conversation}"),
        permanent: true,
    })
}
