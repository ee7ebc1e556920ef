//! [`Reference`]: the model the system under test is held to.
//!
//! It holds what the server's inbox must contain (every message ever appended, with the
//! per-seq deletions and the history floor), each user's read position as bounds, every
//! send each device made and where it landed, and every `load_history` call. From it follow
//! what a device must show at quiescence: its policy window held with the right content,
//! unread counts, read seqs and the end of every send.
//!
//! Server appends by others are recorded when the transition makes them, with the seq the
//! model predicts (the next one). Device sends reach the server whenever the simulated
//! network delivers them, so the model learns their seqs by [`Reference::observe`] after
//! every transition — and checks, at the same time, that the server holds exactly what the
//! model says: every model message at its seq unless deleted or below the floor, nothing
//! else, each send at most once and only with the content the device sent.

use std::collections::{BTreeMap, BTreeSet};

use tidemark_engine::{ClientMsgId, ContentKind, ConversationId, Seq, ServerMessage, UserId};

use super::topology::{CONVERSATIONS, DEVICES};
use crate::server::{ServerStore, ServerStoreError};

/// A message as the model knows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RefMessage {
    /// Who sent it.
    pub sender: UserId,
    /// The sender's id for it.
    pub client_msg_id: ClientMsgId,
    /// What it is.
    pub kind: ContentKind,
    /// Its content as sent.
    pub content: Vec<u8>,
}

/// What a message must look like on a device that holds every change of it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ExpectedContent {
    /// Content after the edits (empty when revoked).
    pub content: Vec<u8>,
    /// The edit whose content it is (`None` when never edited, or revoked).
    pub edit_seq: Option<Seq>,
    /// Revoked.
    pub revoked: bool,
}

/// One conversation of the model's inbox.
#[derive(Clone, Debug)]
pub struct RefConversation {
    /// Its id.
    pub id: ConversationId,
    /// Its members.
    pub members: Vec<UserId>,
    /// Every message ever appended, by seq (deleted ones and those below the floor too).
    messages: BTreeMap<Seq, RefMessage>,
    /// Seqs deleted one by one.
    deleted: BTreeSet<Seq>,
    /// History floor (`Seq(0)`: none).
    floor: Seq,
    /// The target of the last edit or revoke, for [`super::Target::Again`].
    pub last_target: Option<Seq>,
}

impl RefConversation {
    /// Highest seq assigned.
    pub fn max(&self) -> Seq {
        self.messages.keys().next_back().copied().unwrap_or(Seq(0))
    }

    /// History floor as the server states it (`Seq(0)`: none).
    pub fn floor(&self) -> Seq {
        self.floor
    }

    /// The lowest seq that can exist (the floor, at least 1).
    pub fn lowest(&self) -> Seq {
        self.floor.max(Seq(1))
    }

    /// Whether `seq` was deleted one by one.
    pub fn is_deleted(&self, seq: Seq) -> bool {
        self.deleted.contains(&seq)
    }

    /// The message at `seq`, whether or not it still exists.
    pub fn ever(&self, seq: Seq) -> Option<&RefMessage> {
        self.messages.get(&seq)
    }

    /// The message at `seq` if it exists on the server now.
    pub fn live(&self, seq: Seq) -> Option<&RefMessage> {
        if seq < self.lowest() || self.deleted.contains(&seq) {
            return None;
        }
        self.messages.get(&seq)
    }

    /// Seqs of existing messages, ascending.
    pub fn live_seqs(&self) -> impl Iterator<Item = Seq> + '_ {
        self.messages
            .range(self.lowest()..)
            .map(|(s, _)| *s)
            .filter(|s| !self.deleted.contains(s))
    }

    /// Every message ever appended (deleted ones and those below the floor too), by seq.
    pub fn all(&self) -> impl Iterator<Item = (Seq, &RefMessage)> + '_ {
        self.messages.iter().map(|(s, m)| (*s, m))
    }

    /// Seqs deleted one by one, ascending.
    pub fn deleted_seqs(&self) -> Vec<Seq> {
        self.deleted.iter().copied().collect()
    }

    /// Existing messages that are not edits or revokes (what may be deleted).
    pub fn plain(&self) -> Vec<Seq> {
        self.live_seqs()
            .filter(|s| {
                self.messages
                    .get(s)
                    .is_some_and(|m| m.kind.change_target().is_none())
            })
            .collect()
    }

    /// Existing text messages (what may be edited or revoked).
    pub fn texts(&self) -> Vec<Seq> {
        self.live_seqs()
            .filter(|s| {
                self.messages
                    .get(s)
                    .is_some_and(|m| m.kind == ContentKind::Text)
            })
            .collect()
    }

    /// `seq` after every edit and revoke of it by its author the model knows, in seq order;
    /// a revoke wins. A change by anyone else (which a correct server refuses) changes
    /// nothing: no message shows text its author did not send. `None` when `seq` does not
    /// exist now.
    pub fn expected(&self, seq: Seq) -> Option<ExpectedContent> {
        let original = self.live(seq)?;
        let mut out = ExpectedContent {
            content: original.content.clone(),
            edit_seq: None,
            revoked: false,
        };
        let by_author = self
            .messages
            .range(seq.next()..)
            .filter(|(_, m)| m.sender == original.sender);
        for (&s, m) in by_author {
            match m.kind {
                ContentKind::Revoke { target } if target == seq => {
                    out.revoked = true;
                    out.content.clear();
                    out.edit_seq = None;
                }
                ContentKind::Edit { target } if target == seq && !out.revoked => {
                    out.edit_seq = Some(s);
                    out.content.clone_from(&m.content);
                }
                _ => {}
            }
        }
        Some(out)
    }

    /// Whether a change of `target` of this kind (`revoke`) by its author exists at `change`.
    fn is_change_of(&self, change: Seq, target: Seq, revoke: bool) -> bool {
        let author = self.messages.get(&target).map(|m| &m.sender);
        change > target
            && self
                .messages
                .get(&change)
                .is_some_and(|m| Some(&m.sender) == author)
            && self.messages.get(&change).is_some_and(|m| match m.kind {
                ContentKind::Revoke { target: t } => revoke && t == target,
                ContentKind::Edit { target: t } => !revoke && t == target,
                _ => false,
            })
    }

    /// Whether content a device stored for `seq` (with its `edit_seq`/`revoked` marks) is
    /// what some set of the changes it may hold gives: the original, the content of the edit
    /// it names, or empty after a revoke. Returns what is wrong, if anything.
    pub fn explain_stored(
        &self,
        seq: Seq,
        content: &[u8],
        edit_seq: Option<Seq>,
        revoked: bool,
    ) -> Option<String> {
        let original = self.messages.get(&seq)?;
        if revoked {
            let any_revoke = self
                .messages
                .range(seq.next()..)
                .any(|(&s, _)| self.is_change_of(s, seq, true));
            if !any_revoke {
                return Some("revoked, but no revoke of it by its author exists".into());
            }
            if !content.is_empty() {
                return Some("revoked, but its content is not cleared".into());
            }
            return None;
        }
        match edit_seq {
            Some(e) => {
                if !self.is_change_of(e, seq, false) {
                    return Some(format!(
                        "says edited by seq {} ({:?}), which is no edit of it by its author {}: it shows text its author did not send",
                        e.0,
                        self.messages.get(&e).map(|m| (&m.sender, &m.kind)),
                        original.sender
                    ));
                }
                let edit = self.messages.get(&e).map(|m| m.content.as_slice());
                (edit != Some(content)).then(|| {
                    format!(
                        "content {:?} is not that of its edit at seq {}",
                        String::from_utf8_lossy(content),
                        e.0
                    )
                })
            }
            None => (original.content != content).then(|| {
                format!(
                    "content {:?}, but it was sent as {:?} and is not marked edited",
                    String::from_utf8_lossy(content),
                    String::from_utf8_lossy(&original.content)
                )
            }),
        }
    }
}

/// What the model knows of a user's read seq in a conversation.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ReadBounds {
    /// Reached for certain once everything is delivered: own messages on the server, and
    /// marks whose batch committed.
    pub certain: Seq,
    /// Never exceeded: every mark made, committed or not.
    pub possible: Seq,
}

/// A send a device made, as the model tracks it.
#[derive(Clone, Debug)]
pub struct RefSend {
    /// Device index.
    pub device: usize,
    /// Index into [`CONVERSATIONS`].
    pub conv: usize,
    /// The id the engine gave it.
    pub client_msg_id: ClientMsgId,
    /// What was sent.
    pub content: Vec<u8>,
    /// Where the server put it, once it did.
    pub landed: Option<Seq>,
}

/// A `load_history` call, as the model tracks it.
#[derive(Clone, Debug)]
pub struct RefHistory {
    /// Device index.
    pub device: usize,
    /// The device's process that took the call.
    pub process: u32,
    /// The id it returned.
    pub id: u64,
}

/// The model. See the module docs.
#[derive(Clone, Debug)]
pub struct Reference {
    conversations: Vec<RefConversation>,
    reads: BTreeMap<(UserId, usize), ReadBounds>,
    sends: Vec<RefSend>,
    histories: Vec<RefHistory>,
}

impl Default for Reference {
    fn default() -> Self {
        Self::new()
    }
}

impl Reference {
    /// The model of an empty server with [`CONVERSATIONS`].
    pub fn new() -> Self {
        Self {
            conversations: CONVERSATIONS
                .iter()
                .map(|spec| RefConversation {
                    id: ConversationId::from(spec.id),
                    members: spec.members.iter().map(|&u| UserId::from(u)).collect(),
                    messages: BTreeMap::new(),
                    deleted: BTreeSet::new(),
                    floor: Seq(0),
                    last_target: None,
                })
                .collect(),
            reads: BTreeMap::new(),
            sends: Vec::new(),
            histories: Vec::new(),
        }
    }

    /// Conversation `c` (an index into [`CONVERSATIONS`]).
    pub fn conversation(&self, c: usize) -> &RefConversation {
        &self.conversations[c]
    }

    /// Every conversation, in [`CONVERSATIONS`] order.
    pub fn conversations(&self) -> &[RefConversation] {
        &self.conversations
    }

    /// The index of conversation `id`.
    pub fn index_of(&self, id: &ConversationId) -> Option<usize> {
        self.conversations.iter().position(|c| &c.id == id)
    }

    /// What the model knows of `user`'s read seq in conversation `c`.
    pub fn read(&self, user: &UserId, c: usize) -> ReadBounds {
        self.reads
            .get(&(user.clone(), c))
            .copied()
            .unwrap_or_default()
    }

    /// Every send made.
    pub fn sends(&self) -> &[RefSend] {
        &self.sends
    }

    /// Every `load_history` call made.
    pub fn histories(&self) -> &[RefHistory] {
        &self.histories
    }

    /// The server's unread count for `user` in conversation `c` at read seq `read`: existing
    /// messages above it that are neither the user's own nor edits or revokes.
    pub fn expected_unread(&self, user: &UserId, c: usize, read: Seq) -> u64 {
        let conv = &self.conversations[c];
        conv.live_seqs()
            .filter(|&s| s > read)
            .filter(|s| {
                conv.messages
                    .get(s)
                    .is_some_and(|m| &m.sender != user && m.kind.change_target().is_none())
            })
            .count() as u64
    }

    /// A server append the model was told of (appends by others, edits, revokes): it must be
    /// at the next seq, and it marks the conversation read for its sender.
    pub fn record_append(&mut self, c: usize, message: &ServerMessage) -> Result<(), String> {
        let conv = &mut self.conversations[c];
        let expected = conv.max().next();
        if message.seq != expected || message.conversation != conv.id {
            return Err(format!(
                "server append landed at {} seq {}; the model expects {} seq {}",
                message.conversation, message.seq.0, conv.id, expected.0
            ));
        }
        self.insert(c, message);
        Ok(())
    }

    fn insert(&mut self, c: usize, message: &ServerMessage) {
        let conv = &mut self.conversations[c];
        if let Some(target) = message.kind.change_target() {
            conv.last_target = Some(target);
        }
        conv.messages.insert(
            message.seq,
            RefMessage {
                sender: message.sender.clone(),
                client_msg_id: message.client_msg_id.clone(),
                kind: message.kind.clone(),
                content: message.content.clone(),
            },
        );
        // The server marks a conversation read for the sender of every message.
        let read = self.reads.entry((message.sender.clone(), c)).or_default();
        read.certain = read.certain.max(message.seq);
        read.possible = read.possible.max(message.seq);
    }

    /// A send device `device` made (the engine accepted it).
    pub fn record_send(
        &mut self,
        device: usize,
        c: usize,
        client_msg_id: ClientMsgId,
        content: Vec<u8>,
    ) {
        self.sends.push(RefSend {
            device,
            conv: c,
            client_msg_id,
            content,
            landed: None,
        });
    }

    /// A `mark_read` up to `seq` of `user` in conversation `c`; `certain` when its batch
    /// committed (no crash during the call).
    pub fn record_mark(&mut self, user: &UserId, c: usize, seq: Seq, certain: bool) {
        let read = self.reads.entry((user.clone(), c)).or_default();
        read.possible = read.possible.max(seq);
        if certain {
            read.certain = read.certain.max(seq);
        }
    }

    /// A `load_history` call that returned `id` in `process` of `device`.
    pub fn record_history(&mut self, device: usize, process: u32, id: u64) {
        self.histories.push(RefHistory {
            device,
            process,
            id,
        });
    }

    /// The server deleted `seq` of conversation `c`.
    pub fn record_delete(&mut self, c: usize, seq: Seq) {
        self.conversations[c].deleted.insert(seq);
    }

    /// The floor the server must report after raising conversation `c`'s to `to`: never
    /// lower, at most max seq + 1.
    pub fn floor_after_raise(&self, c: usize, to: Seq) -> Seq {
        let conv = &self.conversations[c];
        conv.floor.max(to.min(conv.max().next()))
    }

    /// The server raised conversation `c`'s floor to `floor`.
    pub fn record_floor(&mut self, c: usize, floor: Seq) {
        let conv = &mut self.conversations[c];
        conv.floor = conv.floor.max(floor);
    }

    /// Learns the device sends the server accepted since the last call, and compares the
    /// whole server inbox and its read seqs with the model. Returns every difference.
    pub fn observe<St: ServerStore>(
        &mut self,
        server: &St,
    ) -> Result<Vec<String>, ServerStoreError> {
        let mut out = Vec::new();
        for c in 0..self.conversations.len() {
            let id = self.conversations[c].id.clone();
            let Some(info) = server.conversation(&id)? else {
                out.push(format!("{id}: unknown to the server"));
                continue;
            };
            // New seqs: device sends delivered since the last look.
            let known_max = self.conversations[c].max();
            if info.max_seq > known_max {
                let new = server.messages(&id, known_max.next(), info.max_seq, usize::MAX)?;
                let present: BTreeSet<Seq> = new.iter().map(|m| m.seq).collect();
                for seq in (known_max.0 + 1..=info.max_seq.0).map(Seq) {
                    if !present.contains(&seq) {
                        out.push(format!(
                            "{id} seq {}: assigned since the last transition but already gone",
                            seq.0
                        ));
                    }
                }
                for message in &new {
                    if let Some(problem) = self.land(c, message) {
                        out.push(format!("{id} seq {}: {problem}", message.seq.0));
                    }
                    self.insert(c, message);
                }
            }
            let conv = &self.conversations[c];
            if info.max_seq != conv.max() {
                out.push(format!(
                    "{id}: server max seq {} but the model's is {}",
                    info.max_seq.0,
                    conv.max().0
                ));
            }
            if info.min_seq.max(Seq(1)) != conv.lowest() {
                out.push(format!(
                    "{id}: server floor {} but the model's is {}",
                    info.min_seq.0, conv.floor.0
                ));
            }
            let on_server = server.messages(&id, Seq(1), info.max_seq, usize::MAX)?;
            let server_seqs: BTreeSet<Seq> = on_server.iter().map(|m| m.seq).collect();
            for seq in conv.live_seqs() {
                if !server_seqs.contains(&seq) {
                    out.push(format!("{id} seq {}: the server lost it", seq.0));
                }
            }
            for m in &on_server {
                match conv.live(m.seq) {
                    None => out.push(format!(
                        "{id} seq {}: the server has it but it is deleted or below the floor",
                        m.seq.0
                    )),
                    Some(r) => {
                        if r.sender != m.sender
                            || r.client_msg_id != m.client_msg_id
                            || r.kind != m.kind
                            || r.content != m.content
                        {
                            out.push(format!(
                                "{id} seq {}: the server holds {:?}, the model {:?}",
                                m.seq.0, m, r
                            ));
                        }
                    }
                }
            }
            for user in &conv.members {
                let bounds = self.read(user, c);
                let read = server.read_seq(user, &id)?;
                if read > bounds.possible {
                    out.push(format!(
                        "{id}: {user}'s read seq on the server is {}, beyond every mark and own message ({})",
                        read.0, bounds.possible.0
                    ));
                }
            }
        }
        Ok(out)
    }

    /// Matches a message the server accepted from a device with the send it came from.
    fn land(&mut self, c: usize, message: &ServerMessage) -> Option<String> {
        let send = self.sends.iter_mut().find(|s| {
            s.client_msg_id == message.client_msg_id && DEVICES[s.device].user == message.sender.0
        });
        let Some(send) = send else {
            return Some(format!(
                "{} {} appeared on the server, but no device sent it",
                message.sender, message.client_msg_id
            ));
        };
        if send.conv != c {
            return Some(format!(
                "send {} was made in {}, but landed here",
                send.client_msg_id, CONVERSATIONS[send.conv].id
            ));
        }
        if let Some(first) = send.landed {
            return Some(format!(
                "send {} landed a second time (first at seq {})",
                send.client_msg_id, first.0
            ));
        }
        send.landed = Some(message.seq);
        if message.kind != ContentKind::Text || message.content != send.content {
            return Some(format!(
                "send {} landed with {:?} {:?}, not the text sent",
                send.client_msg_id,
                message.kind,
                String::from_utf8_lossy(&message.content)
            ));
        }
        None
    }
}
