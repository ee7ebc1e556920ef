//! [`MemoryServerStore`]: the [`ServerStore`] of the simulated server, on `BTreeMap`s so every
//! iteration order is deterministic.

use std::collections::{BTreeMap, BTreeSet};

use tidemark_engine::{
    ClientMsgId, ConversationId, ConversationKind, DeviceId, Seq, SeqRanges, ServerMessage,
    Timestamp, UserId,
};

use crate::{
    AccountStore, AppendOutcome, ChangeClock, ConversationInfo, NewMessage, SentRecord,
    ServerStore, ServerStoreError, TokenHash,
};

/// An in-memory [`ServerStore`]. Cloning copies the whole inbox (handy to compare states).
#[derive(Clone, Debug)]
pub struct MemoryServerStore {
    users: BTreeMap<UserId, BTreeSet<DeviceId>>,
    conversations: BTreeMap<ConversationId, ConversationState>,
    /// user -> their conversations, so paging does not scan every conversation.
    memberships: BTreeMap<UserId, BTreeSet<ConversationId>>,
    sent: BTreeMap<(UserId, ClientMsgId), SentRecord>,
    read: BTreeMap<(UserId, ConversationId), Seq>,
    /// (user, token hash) -> expiry.
    tokens: BTreeMap<(UserId, TokenHash), Option<Timestamp>>,
    /// The change clock ([`ChangeClock`]): epoch, counter and token floor.
    clock: ChangeClock,
    /// (user, conversation) -> the change counter of the user's last change there (read
    /// seq, joining).
    member_changed: BTreeMap<(UserId, ConversationId), u64>,
}

impl Default for MemoryServerStore {
    fn default() -> Self {
        Self::new()
    }
}

#[derive(Clone, Debug)]
struct ConversationState {
    kind: ConversationKind,
    members: BTreeSet<UserId>,
    max_seq: Seq,
    min_seq: Seq,
    last_activity: Timestamp,
    /// Live messages only: deleting a seq or raising the floor removes its message.
    messages: BTreeMap<Seq, ServerMessage>,
    deleted: SeqRanges,
    /// The change counter of its last change.
    changed: u64,
}

impl MemoryServerStore {
    /// An empty inbox with a random change epoch (see [`ChangeClock::epoch`]).
    pub fn new() -> Self {
        let mut bytes = [0u8; 8];
        // Without OS randomness the epoch is 0: tokens still work, only a token of another
        // store with epoch 0 would be mistaken for one of this store.
        let epoch = match getrandom::fill(&mut bytes) {
            Ok(()) => u64::from_le_bytes(bytes),
            Err(_) => 0,
        };
        Self::with_epoch(epoch)
    }

    /// An empty inbox whose change epoch is `epoch` (deterministic runs, tests).
    pub fn with_epoch(epoch: u64) -> Self {
        Self {
            users: BTreeMap::new(),
            conversations: BTreeMap::new(),
            memberships: BTreeMap::new(),
            sent: BTreeMap::new(),
            read: BTreeMap::new(),
            tokens: BTreeMap::new(),
            clock: ChangeClock {
                epoch: format!("{epoch:016x}"),
                counter: 0,
                floor: 0,
            },
            member_changed: BTreeMap::new(),
        }
    }

    /// The user's conversations strictly after `after`, ascending.
    fn memberships_after<'a>(
        &'a self,
        user: &UserId,
        after: Option<&'a ConversationId>,
    ) -> Result<impl Iterator<Item = &'a ConversationId> + 'a, ServerStoreError> {
        let set = match self.memberships.get(user) {
            Some(set) => Some(set),
            None => {
                self.require_user(user)?;
                None
            }
        };
        let lower = match after {
            Some(after) => std::ops::Bound::Excluded(after),
            None => std::ops::Bound::Unbounded,
        };
        Ok(set
            .into_iter()
            .flat_map(move |s| s.range::<ConversationId, _>((lower, std::ops::Bound::Unbounded))))
    }

    /// The next value of the change counter.
    fn tick(&mut self) -> u64 {
        self.clock.counter += 1;
        self.clock.counter
    }

    fn conv(&self, id: &ConversationId) -> Result<&ConversationState, ServerStoreError> {
        self.conversations
            .get(id)
            .ok_or_else(|| ServerStoreError::UnknownConversation(id.clone()))
    }

    fn conv_mut(
        &mut self,
        id: &ConversationId,
    ) -> Result<&mut ConversationState, ServerStoreError> {
        self.conversations
            .get_mut(id)
            .ok_or_else(|| ServerStoreError::UnknownConversation(id.clone()))
    }

    fn require_user(&self, user: &UserId) -> Result<(), ServerStoreError> {
        if self.users.contains_key(user) {
            Ok(())
        } else {
            Err(ServerStoreError::UnknownUser(user.clone()))
        }
    }
}

impl ServerStore for MemoryServerStore {
    fn create_user(&mut self, user: &UserId) -> Result<bool, ServerStoreError> {
        if self.users.contains_key(user) {
            return Ok(false);
        }
        self.users.insert(user.clone(), BTreeSet::new());
        Ok(true)
    }

    fn user_exists(&self, user: &UserId) -> Result<bool, ServerStoreError> {
        Ok(self.users.contains_key(user))
    }

    fn add_device(&mut self, user: &UserId, device: &DeviceId) -> Result<(), ServerStoreError> {
        self.users
            .get_mut(user)
            .ok_or_else(|| ServerStoreError::UnknownUser(user.clone()))?
            .insert(device.clone());
        Ok(())
    }

    fn devices(&self, user: &UserId) -> Result<Vec<DeviceId>, ServerStoreError> {
        Ok(self
            .users
            .get(user)
            .ok_or_else(|| ServerStoreError::UnknownUser(user.clone()))?
            .iter()
            .cloned()
            .collect())
    }

    fn create_conversation(
        &mut self,
        id: &ConversationId,
        kind: ConversationKind,
        members: &[UserId],
    ) -> Result<(), ServerStoreError> {
        if self.conversations.contains_key(id) {
            return Err(ServerStoreError::AlreadyExists(format!(
                "conversation {id}"
            )));
        }
        // Validate everything before the first change: a failed call leaves no trace.
        for user in members {
            self.require_user(user)?;
        }
        let changed = self.tick();
        for user in members {
            self.memberships
                .entry(user.clone())
                .or_default()
                .insert(id.clone());
            self.member_changed
                .insert((user.clone(), id.clone()), changed);
        }
        self.conversations.insert(
            id.clone(),
            ConversationState {
                kind,
                members: members.iter().cloned().collect(),
                max_seq: Seq(0),
                min_seq: Seq(0),
                last_activity: Timestamp(0),
                messages: BTreeMap::new(),
                deleted: SeqRanges::new(),
                changed,
            },
        );
        Ok(())
    }

    fn add_member(&mut self, id: &ConversationId, user: &UserId) -> Result<(), ServerStoreError> {
        self.require_user(user)?;
        if !self.conv_mut(id)?.members.insert(user.clone()) {
            return Ok(());
        }
        let changed = self.tick();
        self.member_changed
            .insert((user.clone(), id.clone()), changed);
        self.memberships
            .entry(user.clone())
            .or_default()
            .insert(id.clone());
        Ok(())
    }

    fn conversation(
        &self,
        id: &ConversationId,
    ) -> Result<Option<ConversationInfo>, ServerStoreError> {
        Ok(self.conversations.get(id).map(|c| ConversationInfo {
            id: id.clone(),
            kind: c.kind,
            max_seq: c.max_seq,
            min_seq: c.min_seq,
            last_activity: c.last_activity,
        }))
    }

    fn members(&self, id: &ConversationId) -> Result<Vec<UserId>, ServerStoreError> {
        Ok(self.conv(id)?.members.iter().cloned().collect())
    }

    fn is_member(&self, id: &ConversationId, user: &UserId) -> Result<bool, ServerStoreError> {
        Ok(self
            .conversations
            .get(id)
            .is_some_and(|c| c.members.contains(user)))
    }

    fn conversations_of(
        &self,
        user: &UserId,
        after: Option<&ConversationId>,
        limit: usize,
    ) -> Result<Vec<ConversationId>, ServerStoreError> {
        Ok(self
            .memberships_after(user, after)?
            .take(limit)
            .cloned()
            .collect())
    }

    fn append(
        &mut self,
        message: NewMessage,
        server_time: Timestamp,
    ) -> Result<AppendOutcome, ServerStoreError> {
        let key = (message.sender.clone(), message.client_msg_id.clone());
        if let Some(record) = self.sent.get(&key) {
            return Ok(AppendOutcome::Duplicate(record.clone()));
        }
        self.conv(&message.conversation)?;
        let changed = self.tick();
        let conv = self.conv_mut(&message.conversation)?;
        let seq = conv.max_seq.next();
        conv.max_seq = seq;
        conv.last_activity = server_time;
        conv.changed = changed;
        let stored = ServerMessage {
            conversation: message.conversation,
            seq,
            client_msg_id: message.client_msg_id,
            sender: message.sender,
            kind: message.kind,
            content: message.content,
            created_at: message.created_at,
            server_time,
        };
        conv.messages.insert(seq, stored.clone());
        self.sent.insert(
            key,
            SentRecord {
                conversation: stored.conversation.clone(),
                seq,
                server_time,
            },
        );
        Ok(AppendOutcome::Appended(stored))
    }

    fn sent_record(
        &self,
        sender: &UserId,
        client_msg_id: &ClientMsgId,
    ) -> Result<Option<SentRecord>, ServerStoreError> {
        Ok(self
            .sent
            .get(&(sender.clone(), client_msg_id.clone()))
            .cloned())
    }

    fn message(
        &self,
        conversation: &ConversationId,
        seq: Seq,
    ) -> Result<Option<ServerMessage>, ServerStoreError> {
        Ok(self.conv(conversation)?.messages.get(&seq).cloned())
    }

    fn messages(
        &self,
        conversation: &ConversationId,
        from: Seq,
        to: Seq,
        limit: usize,
    ) -> Result<Vec<ServerMessage>, ServerStoreError> {
        let conv = self.conv(conversation)?;
        if from > to {
            return Ok(Vec::new());
        }
        Ok(conv
            .messages
            .range(from..=to)
            .take(limit)
            .map(|(_, m)| m.clone())
            .collect())
    }

    fn deleted(
        &self,
        conversation: &ConversationId,
        from: Seq,
        to: Seq,
    ) -> Result<SeqRanges, ServerStoreError> {
        let conv = self.conv(conversation)?;
        let mut out = SeqRanges::new();
        if from > to {
            return Ok(out);
        }
        let idx = conv.deleted.ranges().partition_point(|r| r.end < from);
        for r in conv.deleted.ranges()[idx..]
            .iter()
            .take_while(|r| r.start <= to)
        {
            out.insert_range(r.start.max(from), r.end.min(to));
        }
        Ok(out)
    }

    fn delete_seqs(
        &mut self,
        conversation: &ConversationId,
        seqs: &SeqRanges,
    ) -> Result<SeqRanges, ServerStoreError> {
        let next = self.clock.counter + 1;
        let conv = self.conv_mut(conversation)?;
        let mut newly = SeqRanges::new();
        for r in seqs.ranges() {
            let start = r.start.max(Seq(1));
            let end = r.end.min(conv.max_seq);
            if start > end {
                continue;
            }
            for gap in conv.deleted.gaps_in(start, end) {
                newly.insert_range(gap.start, gap.end);
            }
        }
        for r in newly.ranges() {
            conv.deleted.insert_range(r.start, r.end);
            // Split off and drop the message bodies in the range: history is gone.
            let mut tail = conv.messages.split_off(&r.start);
            let keep = tail.split_off(&r.end.next());
            conv.messages.extend(keep);
        }
        if !newly.is_empty() {
            conv.changed = next;
            self.clock.counter = next;
        }
        Ok(newly)
    }

    fn set_min_seq(
        &mut self,
        conversation: &ConversationId,
        min_seq: Seq,
    ) -> Result<Seq, ServerStoreError> {
        let next = self.clock.counter + 1;
        let conv = self.conv_mut(conversation)?;
        let floor = min_seq.min(conv.max_seq.next()).max(conv.min_seq);
        let raised = floor > conv.min_seq;
        if raised {
            conv.changed = next;
        }
        conv.min_seq = floor;
        conv.messages = conv.messages.split_off(&floor);
        if raised {
            self.clock.counter = next;
        }
        Ok(floor)
    }

    fn read_seq(
        &self,
        user: &UserId,
        conversation: &ConversationId,
    ) -> Result<Seq, ServerStoreError> {
        Ok(self
            .read
            .get(&(user.clone(), conversation.clone()))
            .copied()
            .unwrap_or_default())
    }

    fn set_read_seq(
        &mut self,
        user: &UserId,
        conversation: &ConversationId,
        seq: Seq,
    ) -> Result<Seq, ServerStoreError> {
        self.conv(conversation)?;
        self.require_user(user)?;
        let key = (user.clone(), conversation.clone());
        let before = self.read.get(&key).copied().unwrap_or_default();
        if seq <= before {
            return Ok(before);
        }
        self.read.insert(key.clone(), seq);
        let changed = self.tick();
        self.member_changed.insert(key, changed);
        Ok(seq)
    }

    fn conversations_changed_since(
        &self,
        user: &UserId,
        since: u64,
        after: Option<&ConversationId>,
        limit: usize,
    ) -> Result<Vec<ConversationId>, ServerStoreError> {
        // Every membership is looked at: the memory store serves simulations and small
        // servers; the SQLite store finds the changed ones through its indexes.
        Ok(self
            .memberships_after(user, after)?
            .filter(|id| {
                let conv_changed = self.conversations.get(*id).map_or(0, |c| c.changed);
                let member_changed = self
                    .member_changed
                    .get(&(user.clone(), (*id).clone()))
                    .copied()
                    .unwrap_or(0);
                conv_changed > since || member_changed > since
            })
            .take(limit)
            .cloned()
            .collect())
    }

    fn change_clock(&self) -> Result<ChangeClock, ServerStoreError> {
        Ok(self.clock.clone())
    }

    fn raise_change_floor(&mut self, floor: u64) -> Result<u64, ServerStoreError> {
        let floor = floor.min(self.clock.counter).max(self.clock.floor);
        self.clock.floor = floor;
        Ok(floor)
    }
}

impl AccountStore for MemoryServerStore {
    fn insert_token(
        &mut self,
        user: &UserId,
        hash: TokenHash,
        expires_at: Option<Timestamp>,
    ) -> Result<(), ServerStoreError> {
        self.require_user(user)?;
        self.tokens.insert((user.clone(), hash), expires_at);
        Ok(())
    }

    fn token_expiry(
        &self,
        user: &UserId,
        hash: &TokenHash,
    ) -> Result<Option<Option<Timestamp>>, ServerStoreError> {
        Ok(self.tokens.get(&(user.clone(), *hash)).copied())
    }

    fn revoke_tokens(&mut self, user: &UserId) -> Result<u64, ServerStoreError> {
        let before = self.tokens.len();
        self.tokens.retain(|(owner, _), _| owner != user);
        Ok((before - self.tokens.len()) as u64)
    }
}
