//! The checks every scenario ends with: [`check`] compares each device's store (read only
//! through [`Storage`]) with the server's store (read only through [`ServerStore`]) and the
//! simulation's event log, and returns every violation found rather than panicking, so the
//! caller asserts with a full report.
//!
//! Safety checks hold at any time; liveness checks assume quiescence after
//! [`Sim::heal_all`] and [`Sim::drive`], and are skipped for devices that are deliberately
//! offline (partitioned, kicked, or dead).
//!
//! Safety, per device:
//! - no duplicate: one row per (conversation, seq), one per (sender, client id);
//! - held ranges never claim a seq (at or above the local floor) that is neither a stored
//!   message nor a tombstone, and no tombstone or local floor hides a message the server has;
//! - every stored message equals the server's (sender, client id, kind, times, content after
//!   the edits and revokes the device holds, applied in seq order; a revoke wins over edits;
//!   a change whose target is not below its own seq is malformed and ignored);
//! - no message shows text its author did not send: content marked edited is that of an
//!   edit by the message's own sender, and a revoke that cleared it is its sender's (a
//!   client never lets one member change another's message, whatever the server accepted);
//! - stored unread equals [`Conversation::compute_unread`] of the record, and the total
//!   equals the sum;
//! - the dispatch rules the harness checked while running (see [`crate::sim`]).
//!
//! Liveness, per online device:
//! - every conversation of the user is known with the server's max seq, floor and read seq;
//! - unread equals the server's truth: seqs in `(read_seq, max_seq]` at or above the floor,
//!   not deleted, not the user's own, not edits or revokes ([`expected_unread`]); the last
//!   `TotalUnreadChanged` of the current process equals the stored total;
//! - every send ended: acked (row sent at the server's seq, the server holds one copy, one
//!   `MessageSent`) or failed (one `SendFailed`), and the outbox is empty. A send whose
//!   batch never committed before a crash is gone, as in a real app. A crash of the
//!   device after the send excuses a missing event (it may have been lost between commit and
//!   delivery), never a second one.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use tidemark_engine::{
    ClientMsgId, Conversation, ConversationCursor, ConversationId, Direction, Event, Message,
    MessageStatus, Seq, SeqRanges, Storage, StorageError, UserId,
};

use crate::server::{ServerStore, ServerStoreError};
use crate::sim::Sim;
use crate::Backend;

/// Every invariant a scenario broke, one description per line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InvariantViolations {
    /// What was wrong, each naming its device, conversation and seq where it applies.
    pub violations: Vec<String>,
}

impl fmt::Display for InvariantViolations {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        const SHOWN: usize = 100;
        writeln!(f, "{} invariant violation(s):", self.violations.len())?;
        for v in self.violations.iter().take(SHOWN) {
            writeln!(f, "  - {v}")?;
        }
        if self.violations.len() > SHOWN {
            writeln!(f, "  ... and {} more", self.violations.len() - SHOWN)?;
        }
        Ok(())
    }
}

impl std::error::Error for InvariantViolations {}

impl<F: Backend> Sim<F> {
    /// Runs [`check`]: the end-state checks and the dispatch rules broken while running.
    pub async fn check_invariants(&self) -> Result<(), InvariantViolations> {
        check(self).await
    }
}

/// Runs every check on every device of `sim`. See the module docs.
pub async fn check<F: Backend>(sim: &Sim<F>) -> Result<(), InvariantViolations> {
    let mut violations: Vec<String> = sim.dispatch_violations().to_vec();
    for d in 0..sim.device_count() {
        let mut found = Vec::new();
        if let Err(err) = check_device(sim, d, &mut found).await {
            found.push(format!("reading failed: {err}"));
        }
        let user = sim.device_user(d);
        violations.extend(
            found
                .into_iter()
                .map(|v| format!("device {d} ({user}): {v}")),
        );
    }
    if violations.is_empty() {
        Ok(())
    } else {
        Err(InvariantViolations { violations })
    }
}

/// The server's truth for `user`'s unread count in `conversation`: seqs in
/// `(read_seq, max_seq]` at or above the floor that hold a message (not deleted) which is not
/// the user's own and not an edit or revoke. `Conversation::compute_unread` on a device that
/// knows everything gives the same number.
pub fn expected_unread<St: ServerStore>(
    server: &St,
    user: &UserId,
    conversation: &ConversationId,
) -> Result<u64, ServerStoreError> {
    let Some(info) = server.conversation(conversation)? else {
        return Ok(0);
    };
    let read = server.read_seq(user, conversation)?;
    let start = read.next().max(info.min_seq);
    if start > info.max_seq {
        return Ok(0);
    }
    let messages = server.messages(conversation, start, info.max_seq, usize::MAX)?;
    Ok(messages
        .iter()
        .filter(|m| &m.sender != user && m.kind.change_target().is_none())
        .count() as u64)
}

/// A read that failed (a check cannot go on without it).
#[derive(Debug, thiserror::Error)]
enum ReadError {
    #[error("device storage: {0}")]
    Storage(#[from] StorageError),
    #[error("server store: {0}")]
    Server(#[from] ServerStoreError),
    #[error("{0}")]
    Paging(String),
}

const PAGE: usize = 500;

async fn check_device<F: Backend>(
    sim: &Sim<F>,
    d: usize,
    out: &mut Vec<String>,
) -> Result<(), ReadError> {
    let store = sim.store(d);
    let server = sim.server().store();
    let user = sim.device_user(d).clone();
    let online = sim.engine(d).is_some() && !sim.is_partitioned(d) && !sim.is_kicked(d);

    // The store's own consistency check (what `PRAGMA integrity_check` is for SQLite).
    if let Err(e) = store.check_integrity().await {
        out.push(format!("integrity check failed: {e}"));
    }

    let locals = all_conversations(store).await?;
    let mut local_by_id: BTreeMap<ConversationId, &Conversation> = BTreeMap::new();
    let mut sum_unread = 0u64;
    for conv in &locals {
        if local_by_id.insert(conv.id.clone(), conv).is_some() {
            out.push(format!(
                "{}: listed twice in the conversation list",
                conv.id
            ));
        }
        sum_unread += conv.unread;
        check_conversation(store, server, &user, conv, out).await?;
    }
    let total = store.total_unread().await?;
    if total != sum_unread {
        out.push(format!(
            "total unread {total} is not the sum of conversation unread counts {sum_unread}"
        ));
    }

    let outbox = store.outbox().await?;
    for entry in &outbox {
        let row = store
            .message_by_client_id(&entry.conversation, &user, &entry.client_msg_id)
            .await?;
        if row.is_none() {
            out.push(format!(
                "{}: outbox entry {} has no message row",
                entry.conversation, entry.client_msg_id
            ));
        }
    }

    if online {
        if !sim
            .engine(d)
            .is_some_and(|e| e.connection_state() == tidemark_engine::ConnectionState::Connected)
        {
            out.push("not connected at the end although online".into());
        }
        if !outbox.is_empty() {
            out.push(format!(
                "outbox holds {} entries at quiescence",
                outbox.len()
            ));
        }
        check_against_server(sim, d, &user, &local_by_id, total, out)?;
    }
    check_sends(sim, d, &user, &local_by_id, online, out).await?;
    Ok(())
}

/// Safety checks of one local conversation against its own rows and the server.
async fn check_conversation<S: Storage, St: ServerStore>(
    store: &S,
    server: &St,
    user: &UserId,
    conv: &Conversation,
    out: &mut Vec<String>,
) -> Result<(), ReadError> {
    let id = &conv.id;
    let Some(info) = server.conversation(id)? else {
        out.push(format!("{id}: unknown to the server"));
        return Ok(());
    };
    if !server.is_member(id, user)? {
        out.push(format!("{id}: the user is not a member on the server"));
    }
    if conv.server_max_seq > info.max_seq {
        out.push(format!(
            "{id}: local max seq {} is beyond the server's {}",
            conv.server_max_seq.0, info.max_seq.0
        ));
    }
    if conv.server_min_seq.max(Seq(1)) > info.min_seq.max(Seq(1)) {
        out.push(format!(
            "{id}: local floor {} is above the server's {}",
            conv.server_min_seq.0, info.min_seq.0
        ));
    }
    if conv.unread != conv.compute_unread() {
        out.push(format!(
            "{id}: stored unread {} but its own fields give {}",
            conv.unread,
            conv.compute_unread()
        ));
    }

    let rows = all_messages(store, id).await?;
    let unsent = store.unsent_messages(id).await?;
    let tombstones = store.tombstones(id).await?;

    let mut by_seq: BTreeMap<Seq, &Message> = BTreeMap::new();
    for m in &rows {
        if &m.conversation != id {
            out.push(format!("{id}: page returned a row of {}", m.conversation));
        }
        let Some(seq) = m.seq else {
            out.push(format!(
                "{id}: page returned {} without a seq",
                m.client_msg_id
            ));
            continue;
        };
        if m.status != MessageStatus::Sent {
            out.push(format!(
                "{id} seq {}: has a seq but status {:?}",
                seq.0, m.status
            ));
        }
        if by_seq.insert(seq, m).is_some() {
            out.push(format!("{id} seq {}: two rows", seq.0));
        }
    }
    let mut client_ids: BTreeSet<(&UserId, &ClientMsgId)> = BTreeSet::new();
    for m in rows.iter().chain(&unsent) {
        if !client_ids.insert((&m.sender, &m.client_msg_id)) {
            out.push(format!(
                "{id}: two rows for client id {} of {}",
                m.client_msg_id, m.sender
            ));
        }
    }
    for m in &unsent {
        if m.seq.is_some() || m.status == MessageStatus::Sent {
            out.push(format!(
                "{id}: unsent row {} has seq {:?} and status {:?}",
                m.client_msg_id, m.seq, m.status
            ));
        }
    }

    // Edits and revokes the device holds, by target, ascending by their own seq.
    let mut changes: BTreeMap<Seq, Vec<&Message>> = BTreeMap::new();
    for (&seq, m) in &by_seq {
        // A change can only follow its target; one that does not is malformed and ignored.
        if let Some(target) = m.kind.change_target().filter(|t| *t < seq) {
            changes.entry(target).or_default().push(m);
        }
    }
    for (&seq, m) in &by_seq {
        shows_only_its_authors_text(id, server, seq, m, &by_seq, info.max_seq, out)?;
    }
    for (&seq, m) in &by_seq {
        if tombstones.contains(seq) {
            out.push(format!(
                "{id} seq {}: both a message and a tombstone",
                seq.0
            ));
        }
        match server.message(id, seq)? {
            Some(truth) => compare_message(
                id,
                m,
                &truth,
                changes.get(&seq).map_or(&[][..], Vec::as_slice),
                out,
            ),
            None if seq > info.max_seq => out.push(format!(
                "{id} seq {}: stored but the server's max is {}",
                seq.0, info.max_seq.0
            )),
            // Deleted or below the floor on the server: a copy kept from before is allowed
            // (deletions are learned by push only).
            None => {}
        }
    }

    // Held seqs at or above the local floor must be stored messages or tombstones.
    let mut known: SeqRanges = by_seq.keys().copied().collect();
    known.union_with(&tombstones);
    let floor = conv.server_min_seq.max(Seq(1));
    for r in conv.held.ranges() {
        let start = r.start.max(floor);
        for gap in known.gaps_in(start, r.end) {
            out.push(format!(
                "{id}: held claims seqs {}..={} but neither a message nor a tombstone is stored",
                gap.start.0, gap.end.0
            ));
        }
    }
    // A tombstone where the server has a message is a lost message.
    for r in tombstones.ranges() {
        if let Some(m) = server.messages(id, r.start, r.end, 1)?.first() {
            out.push(format!(
                "{id} seq {}: tombstoned locally but the server has the message",
                m.seq.0
            ));
        }
    }
    Ok(())
}

/// No message shows text its author did not send: a stored message marked edited holds the
/// content of an edit of it by its own sender, and one marked revoked was revoked by its own
/// sender. The change is looked up on the device first, then on the server; a change found
/// in neither (deleted on the server, a documented limit) is not judged. Holds whatever the
/// server accepted: a client never lets one member change another's message.
fn shows_only_its_authors_text<St: ServerStore>(
    id: &ConversationId,
    server: &St,
    seq: Seq,
    m: &Message,
    by_seq: &BTreeMap<Seq, &Message>,
    server_max: Seq,
    out: &mut Vec<String>,
) -> Result<(), ReadError> {
    let change_at =
        |at: Seq| -> Result<Option<(UserId, tidemark_engine::ContentKind, Vec<u8>)>, ReadError> {
            if let Some(local) = by_seq.get(&at) {
                return Ok(Some((
                    local.sender.clone(),
                    local.kind.clone(),
                    local.content.clone(),
                )));
            }
            Ok(server
                .message(id, at)?
                .map(|t| (t.sender, t.kind, t.content)))
        };
    if m.revoked {
        let mut revokers = BTreeSet::new();
        for local in by_seq.range(seq.next()..).map(|(_, c)| *c) {
            if local.kind == (tidemark_engine::ContentKind::Revoke { target: seq }) {
                revokers.insert(local.sender.clone());
            }
        }
        if revokers.is_empty() && seq < server_max {
            for t in server.messages(id, seq.next(), server_max, usize::MAX)? {
                if t.kind == (tidemark_engine::ContentKind::Revoke { target: seq }) {
                    revokers.insert(t.sender);
                }
            }
        }
        if !revokers.is_empty() && !revokers.contains(&m.sender) {
            out.push(format!(
                "{id} seq {}: revoked by {revokers:?}, not by its author {}",
                seq.0, m.sender
            ));
        }
        return Ok(());
    }
    let Some(e) = m.edit_seq else {
        return Ok(());
    };
    let Some((sender, kind, content)) = change_at(e)? else {
        return Ok(());
    };
    if kind != (tidemark_engine::ContentKind::Edit { target: seq }) {
        out.push(format!(
            "{id} seq {}: marked edited by seq {}, which is {kind:?}, no edit of it",
            seq.0, e.0
        ));
    } else if sender != m.sender {
        out.push(format!(
            "{id} seq {}: shows text {:?} of an edit by {sender}, not by its author {}",
            seq.0,
            String::from_utf8_lossy(&m.content),
            m.sender
        ));
    } else if content != m.content {
        out.push(format!(
            "{id} seq {}: content {:?} is not that of its author's edit at seq {}",
            seq.0,
            String::from_utf8_lossy(&m.content),
            e.0
        ));
    }
    Ok(())
}

/// Compares a stored message with the server's `truth`, given the changes (edits, revokes)
/// the device holds for it in seq order (a revoke wins), and appends one line per difference
/// to `out`. Exported for tests that check a store against a server outside a [`Sim`] (the
/// SQLite kill test).
pub fn compare_message(
    id: &ConversationId,
    local: &Message,
    truth: &tidemark_engine::ServerMessage,
    changes: &[&Message],
    out: &mut Vec<String>,
) {
    let mut content = truth.content.clone();
    let mut edit_seq = None;
    let mut revoked = false;
    for change in changes {
        match change.kind {
            tidemark_engine::ContentKind::Revoke { .. } => {
                revoked = true;
                content.clear();
            }
            _ if !revoked => {
                edit_seq = change.seq;
                content.clone_from(&change.content);
            }
            _ => {}
        }
    }
    let seq = truth.seq.0;
    let mut differ = Vec::new();
    if local.sender != truth.sender {
        differ.push(format!("sender {} vs {}", local.sender, truth.sender));
    }
    if local.client_msg_id != truth.client_msg_id {
        differ.push(format!(
            "client id {} vs {}",
            local.client_msg_id, truth.client_msg_id
        ));
    }
    if local.kind != truth.kind {
        differ.push(format!("kind {:?} vs {:?}", local.kind, truth.kind));
    }
    if local.created_at != truth.created_at {
        differ.push(format!(
            "created_at {} vs {}",
            local.created_at.0, truth.created_at.0
        ));
    }
    if local.server_time != Some(truth.server_time) {
        differ.push(format!(
            "server_time {:?} vs {}",
            local.server_time, truth.server_time.0
        ));
    }
    if local.content != content {
        differ.push(format!(
            "content {:?} vs {:?}",
            String::from_utf8_lossy(&local.content),
            String::from_utf8_lossy(&content)
        ));
    }
    // Once revoked, which edit came last no longer matters (the content is gone).
    let local_edit = if local.revoked { None } else { local.edit_seq };
    let edit_seq = if revoked { None } else { edit_seq };
    if (local_edit, local.revoked) != (edit_seq, revoked) {
        differ.push(format!(
            "edit seq/revoked {:?} vs {:?}",
            (local_edit, local.revoked),
            (edit_seq, revoked)
        ));
    }
    if !differ.is_empty() {
        out.push(format!(
            "{id} seq {seq}: differs from the server: {}",
            differ.join(", ")
        ));
    }
}

/// Liveness: every server conversation of the user matches the device at quiescence.
fn check_against_server<F: Backend>(
    sim: &Sim<F>,
    d: usize,
    user: &UserId,
    local_by_id: &BTreeMap<ConversationId, &Conversation>,
    stored_total: u64,
    out: &mut Vec<String>,
) -> Result<(), ReadError> {
    let server = sim.server().store();
    let mut after: Option<ConversationId> = None;
    loop {
        let page = server.conversations_of(user, after.as_ref(), PAGE)?;
        for id in &page {
            let info = server
                .conversation(id)?
                .ok_or_else(|| ServerStoreError::UnknownConversation(id.clone()))?;
            let read = server.read_seq(user, id)?;
            let unread = expected_unread(server, user, id)?;
            let Some(local) = local_by_id.get(id) else {
                if info.max_seq > Seq(0) || read > Seq(0) {
                    out.push(format!(
                        "{id}: missing locally (server max {})",
                        info.max_seq.0
                    ));
                }
                continue;
            };
            if local.server_max_seq != info.max_seq {
                out.push(format!(
                    "{id}: local max seq {} but the server's is {}",
                    local.server_max_seq.0, info.max_seq.0
                ));
            }
            if local.server_min_seq.max(Seq(1)) != info.min_seq.max(Seq(1)) {
                out.push(format!(
                    "{id}: local floor {} but the server's is {}",
                    local.server_min_seq.0, info.min_seq.0
                ));
            }
            if local.read_seq != read {
                out.push(format!(
                    "{id}: local read seq {} but the server's is {}",
                    local.read_seq.0, read.0
                ));
            }
            if local.unread != unread {
                out.push(format!(
                    "{id}: unread {} but the server's truth is {unread}",
                    local.unread
                ));
            }
        }
        if page.len() < PAGE {
            break;
        }
        after = page.last().cloned();
    }
    let process = sim.process(d);
    let last_total = sim.events().iter().rev().find_map(|e| match e.event {
        Event::TotalUnreadChanged { total } if e.device == d && e.process == process => Some(total),
        _ => None,
    });
    if let Some(total) = last_total {
        if total != stored_total {
            out.push(format!(
                "last TotalUnreadChanged said {total} but the store says {stored_total}"
            ));
        }
    }
    Ok(())
}

/// How each send made through the simulation ended.
async fn check_sends<F: Backend>(
    sim: &Sim<F>,
    d: usize,
    user: &UserId,
    local_by_id: &BTreeMap<ConversationId, &Conversation>,
    online: bool,
    out: &mut Vec<String>,
) -> Result<(), ReadError> {
    let store = sim.store(d);
    let server = sim.server().store();
    let mut sent_events: BTreeMap<(&ConversationId, &ClientMsgId), Vec<Seq>> = BTreeMap::new();
    let mut failed_events: BTreeMap<(&ConversationId, &ClientMsgId), usize> = BTreeMap::new();
    for record in sim.events().iter().filter(|e| e.device == d) {
        match &record.event {
            Event::MessageSent {
                conversation,
                client_msg_id,
                seq,
            } => sent_events
                .entry((conversation, client_msg_id))
                .or_default()
                .push(*seq),
            Event::SendFailed {
                conversation,
                client_msg_id,
                ..
            } => {
                *failed_events
                    .entry((conversation, client_msg_id))
                    .or_default() += 1
            }
            _ => {}
        }
    }
    // Copies of each of the user's messages per conversation on the server.
    let mut copies: BTreeMap<ConversationId, BTreeMap<ClientMsgId, usize>> = BTreeMap::new();
    for send in sim.sends().iter().filter(|s| s.device == d) {
        let conv = &send.conversation;
        let cmid = &send.client_msg_id;
        let what = format!("{conv}: send {cmid}");
        if !copies.contains_key(conv) {
            let mut counts = BTreeMap::new();
            if let Some(info) = server.conversation(conv)? {
                for m in server.messages(conv, Seq(1), info.max_seq, usize::MAX)? {
                    if &m.sender == user {
                        *counts.entry(m.client_msg_id).or_insert(0) += 1;
                    }
                }
            }
            copies.insert(conv.clone(), counts);
        }
        let n_copies = copies
            .get(conv)
            .and_then(|c| c.get(cmid))
            .copied()
            .unwrap_or(0);
        if n_copies > 1 {
            out.push(format!("{what}: the server holds {n_copies} copies"));
        }
        let acks = sent_events
            .get(&(conv, cmid))
            .map_or(&[][..], Vec::as_slice);
        let fails = failed_events.get(&(conv, cmid)).copied().unwrap_or(0);
        if acks.len() > 1 {
            out.push(format!("{what}: MessageSent {} times", acks.len()));
        }
        if send.cancelled {
            continue;
        }
        let crashed_since = sim.process(d) > send.process;
        let record = server.sent_record(user, cmid)?;
        let row = store.message_by_client_id(conv, user, cmid).await?;
        let Some(row) = row else {
            // Gone on the server (deleted or below the floor): its row went with its
            // tombstone.
            let gone_on_server = match &record {
                Some(r) => server.message(&r.conversation, r.seq)?.is_none(),
                None => false,
            };
            // Lost to a crash before its batch committed: nothing was durable, which is the
            // app's risk, not a sync bug.
            let never_durable = !send.committed && crashed_since;
            if !gone_on_server && !never_durable {
                out.push(format!("{what}: no row (lost)"));
            }
            continue;
        };
        match &row.status {
            MessageStatus::Pending => {
                if online {
                    out.push(format!("{what}: still pending at quiescence"));
                }
            }
            MessageStatus::Sent => {
                match &record {
                    None => out.push(format!("{what}: marked sent but the server never got it")),
                    Some(r) if &r.conversation != conv || Some(r.seq) != row.seq => {
                        out.push(format!(
                            "{what}: stored at {:?} but the server put it at {} seq {}",
                            row.seq, r.conversation, r.seq.0
                        ))
                    }
                    Some(_) => {}
                }
                if acks.is_empty() && !crashed_since {
                    out.push(format!("{what}: acked without a MessageSent event"));
                }
                if let Some(&seq) = acks.first() {
                    if Some(seq) != row.seq {
                        out.push(format!(
                            "{what}: MessageSent said seq {} but the row has {:?}",
                            seq.0, row.seq
                        ));
                    }
                }
            }
            MessageStatus::Failed { .. } => {
                if fails == 0 && !crashed_since {
                    out.push(format!("{what}: failed without a SendFailed event"));
                }
                // Accepted after all and its seq is held: the echo should have merged into
                // this row.
                if let Some(r) = &record {
                    let held = local_by_id
                        .get(&r.conversation)
                        .is_some_and(|c| c.held.contains(r.seq));
                    if held && &r.conversation == conv {
                        out.push(format!(
                            "{what}: failed, yet the server holds it at seq {} which the device holds",
                            r.seq.0
                        ));
                    }
                }
            }
        }
    }
    Ok(())
}

/// Every conversation record, through the list pages.
async fn all_conversations<S: Storage>(store: &S) -> Result<Vec<Conversation>, ReadError> {
    let mut out = Vec::new();
    let mut seen = BTreeSet::new();
    let mut after = None;
    loop {
        let page = store.conversations_page(after.clone(), PAGE).await?;
        let full = page.len() == PAGE;
        let mut progressed = false;
        for conv in page {
            after = Some(ConversationCursor::after(&conv));
            progressed |= seen.insert(conv.id.clone());
            out.push(conv);
        }
        if !full {
            return Ok(out);
        }
        // A store that ignores the cursor would page forever.
        if !progressed {
            return Err(ReadError::Paging(
                "conversations_page returns the same page again".into(),
            ));
        }
    }
}

/// Every message with a seq of a conversation, ascending, through the message pages.
async fn all_messages<S: Storage>(
    store: &S,
    conversation: &ConversationId,
) -> Result<Vec<Message>, ReadError> {
    let mut out: Vec<Message> = Vec::new();
    let mut anchor = Seq(0);
    loop {
        let page = store
            .messages_page(conversation, Some(anchor), Direction::After, PAGE)
            .await?;
        let full = page.len() == PAGE;
        let last = page.last().and_then(|m| m.seq);
        out.extend(page);
        match last {
            Some(last) if full && last > anchor => anchor = last,
            Some(_) if full => {
                return Err(ReadError::Paging(format!(
                    "messages_page of {conversation} does not advance past seq {}",
                    anchor.0
                )))
            }
            _ => return Ok(out),
        }
    }
}
