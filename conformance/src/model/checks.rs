//! The model's own checks, read through [`Storage`] only.
//!
//! [`device_safety`] holds at every moment and runs after every transition: the store's
//! integrity check, no duplicate row, held ranges honest, unread consistent with the
//! record, every stored message one the server assigned there with content some subset of
//! its changes explains, every unsent row one of this device's own sends.
//!
//! [`device_at_quiescence`] runs after the final heal and drive: every conversation of the
//! user shows the model's max seq, floor, read seq and unread, the policy window is held with
//! the model's content (after every edit and revoke), deleted seqs in it are tombstones, and
//! every send of the device ended (acked at the seq the server gave it, or failed).

use std::collections::BTreeSet;

use tidemark_engine::{
    ClientMsgId, Conversation, ConversationCursor, Direction, Message, MessageStatus, Seq,
    SeqRanges, Storage, StorageError, SyncPolicy, UserId,
};

use super::reference::Reference;
use super::topology::DEVICES;

const PAGE: usize = 200;

/// Every conversation record of a store.
async fn conversations<S: Storage>(store: &S) -> Result<Vec<Conversation>, StorageError> {
    let mut out: Vec<Conversation> = Vec::new();
    let mut after = None;
    loop {
        let page = store.conversations_page(after.clone(), PAGE).await?;
        let full = page.len() == PAGE;
        after = page.last().map(ConversationCursor::after);
        out.extend(page);
        if !full {
            return Ok(out);
        }
    }
}

/// Every message with a seq of a conversation, ascending.
async fn messages<S: Storage>(
    store: &S,
    conversation: &tidemark_engine::ConversationId,
) -> Result<Vec<Message>, StorageError> {
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
            _ => return Ok(out),
        }
    }
}

/// Safety checks of device `d`'s store against the model. Appends what is wrong to `out`.
pub(crate) async fn device_safety<S: Storage>(
    store: &S,
    d: usize,
    reference: &Reference,
    out: &mut Vec<String>,
) -> Result<(), StorageError> {
    let user = UserId::from(DEVICES[d].user);
    if let Err(e) = store.check_integrity().await {
        out.push(format!("integrity check failed: {e}"));
    }
    let records = conversations(store).await?;
    let mut seen = BTreeSet::new();
    let mut sum = 0;
    for conv in &records {
        let id = &conv.id;
        if !seen.insert(id.clone()) {
            out.push(format!("{id}: listed twice"));
        }
        sum += conv.unread;
        if conv.unread != conv.compute_unread() {
            out.push(format!(
                "{id}: stored unread {} but the record's fields give {}",
                conv.unread,
                conv.compute_unread()
            ));
        }
        let Some(c) = reference.index_of(id) else {
            out.push(format!("{id}: no such conversation on the server"));
            continue;
        };
        let model = reference.conversation(c);
        if !model.members.contains(&user) {
            out.push(format!("{id}: {user} is not a member"));
        }
        if conv.server_max_seq > model.max() {
            out.push(format!(
                "{id}: max seq {} is beyond the server's {}",
                conv.server_max_seq.0,
                model.max().0
            ));
        }
        if conv.server_min_seq.max(Seq(1)) > model.lowest() {
            out.push(format!(
                "{id}: floor {} is above the server's {}",
                conv.server_min_seq.0,
                model.floor().0
            ));
        }

        let rows = messages(store, id).await?;
        let unsent = store.unsent_messages(id).await?;
        let tombstones = store.tombstones(id).await?;
        let mut by_seq = BTreeSet::new();
        let mut client_ids: BTreeSet<(&UserId, &ClientMsgId)> = BTreeSet::new();
        for m in rows.iter().chain(&unsent) {
            if !client_ids.insert((&m.sender, &m.client_msg_id)) {
                out.push(format!(
                    "{id}: two rows for {} of {}",
                    m.client_msg_id, m.sender
                ));
            }
        }
        for m in &rows {
            let Some(seq) = m.seq else {
                out.push(format!(
                    "{id}: a seq page returned {} without a seq",
                    m.client_msg_id
                ));
                continue;
            };
            if !by_seq.insert(seq) {
                out.push(format!("{id} seq {}: two rows", seq.0));
            }
            if m.status != MessageStatus::Sent {
                out.push(format!(
                    "{id} seq {}: status {:?} with a seq",
                    seq.0, m.status
                ));
            }
            if tombstones.contains(seq) {
                out.push(format!("{id} seq {}: a row and a tombstone", seq.0));
            }
            let Some(truth) = model.ever(seq) else {
                out.push(format!(
                    "{id} seq {}: stored, but the server never assigned it",
                    seq.0
                ));
                continue;
            };
            if truth.sender != m.sender
                || truth.client_msg_id != m.client_msg_id
                || truth.kind != m.kind
            {
                out.push(format!(
                    "{id} seq {}: stored as {} {} {:?}, but the server has {} {} {:?}",
                    seq.0,
                    m.sender,
                    m.client_msg_id,
                    m.kind,
                    truth.sender,
                    truth.client_msg_id,
                    truth.kind
                ));
                continue;
            }
            if let Some(problem) = model.explain_stored(seq, &m.content, m.edit_seq, m.revoked) {
                out.push(format!("{id} seq {}: {problem}", seq.0));
            }
        }
        for m in &unsent {
            if m.seq.is_some() || m.status == MessageStatus::Sent {
                out.push(format!(
                    "{id}: unsent row {} has seq {:?} and status {:?}",
                    m.client_msg_id, m.seq, m.status
                ));
            }
            let own = reference
                .sends()
                .iter()
                .any(|s| s.device == d && s.conv == c && s.client_msg_id == m.client_msg_id);
            if !own {
                out.push(format!(
                    "{id}: unsent row {} is not a send of this device",
                    m.client_msg_id
                ));
            }
        }
        // Held seqs at or above the floor are stored messages or tombstones.
        let mut known: SeqRanges = by_seq.iter().copied().collect();
        known.union_with(&tombstones);
        let floor = conv.server_min_seq.max(Seq(1));
        for r in conv.held.ranges() {
            for gap in known.gaps_in(r.start.max(floor), r.end) {
                out.push(format!(
                    "{id}: held claims {}..={}, but nothing is stored there",
                    gap.start.0, gap.end.0
                ));
            }
        }
        // A tombstone where the server still has the message hides it.
        for seq in tombstones.iter() {
            if model.live(seq).is_some() {
                out.push(format!(
                    "{id} seq {}: tombstoned, but the server still has it",
                    seq.0
                ));
            }
        }
    }
    let total = store.total_unread().await?;
    if total != sum {
        out.push(format!(
            "total unread {total}, but the conversations sum to {sum}"
        ));
    }
    for entry in store.outbox().await? {
        if store
            .message_by_client_id(&entry.conversation, &user, &entry.client_msg_id)
            .await?
            .is_none()
        {
            out.push(format!(
                "{}: outbox entry {} has no row",
                entry.conversation, entry.client_msg_id
            ));
        }
    }
    Ok(())
}

/// What device `d` (online, after heal and drive) must show. `server_read` gives the
/// server's read seq of the device's user per conversation index.
pub(crate) async fn device_at_quiescence<S: Storage>(
    store: &S,
    d: usize,
    reference: &Reference,
    server_read: impl Fn(usize) -> Seq,
    out: &mut Vec<String>,
) -> Result<(), StorageError> {
    let spec = &DEVICES[d];
    let user = UserId::from(spec.user);
    let mut sum = 0;
    for c in spec.conversations() {
        let model = reference.conversation(c);
        let id = &model.id;
        let read = server_read(c);
        let unread = reference.expected_unread(&user, c, read);
        sum += unread;
        let Some(conv) = store.conversation(id).await? else {
            if model.max() > Seq(0) || read > Seq(0) {
                out.push(format!("{id}: missing (server max {})", model.max().0));
            }
            continue;
        };
        if conv.server_max_seq != model.max() {
            out.push(format!(
                "{id}: max seq {}, the model's {}",
                conv.server_max_seq.0,
                model.max().0
            ));
        }
        if conv.server_min_seq.max(Seq(1)) != model.lowest() {
            out.push(format!(
                "{id}: floor {}, the model's {}",
                conv.server_min_seq.0,
                model.floor().0
            ));
        }
        if conv.read_seq != read {
            out.push(format!(
                "{id}: read seq {}, the server's {}",
                conv.read_seq.0, read.0
            ));
        }
        if conv.unread != unread {
            out.push(format!(
                "{id}: unread {}, the model's {unread}",
                conv.unread
            ));
        }
        // The policy window: what this device must hold.
        let top = model.max();
        let from = match spec.policy {
            SyncPolicy::Full
            | SyncPolicy::NewestFirst {
                background_fill: true,
                ..
            } => model.lowest(),
            SyncPolicy::NewestFirst {
                per_conversation, ..
            } => Seq(top.0.saturating_sub(u64::from(per_conversation)) + 1).max(model.lowest()),
        };
        if from > top {
            continue;
        }
        if !conv.held.contains_range(from, top) {
            let gaps: Vec<String> = conv
                .held
                .gaps_in(from, top)
                .iter()
                .map(|g| format!("{}..={}", g.start.0, g.end.0))
                .collect();
            out.push(format!(
                "{id}: policy window {}..={} not held (missing {})",
                from.0,
                top.0,
                gaps.join(", ")
            ));
        }
        let tombstones = store.tombstones(id).await?;
        let rows = messages(store, id).await?;
        for seq in (from.0..=top.0).map(Seq) {
            let row = rows.iter().find(|m| m.seq == Some(seq));
            match model.expected(seq) {
                Some(expected) => match row {
                    None => out.push(format!("{id} seq {}: in the window but not stored", seq.0)),
                    Some(m) => {
                        let edit = if m.revoked { None } else { m.edit_seq };
                        if m.content != expected.content
                            || edit != expected.edit_seq
                            || m.revoked != expected.revoked
                        {
                            out.push(format!(
                                "{id} seq {}: holds {:?} (edit {:?}, revoked {}), the model {:?} (edit {:?}, revoked {})",
                                seq.0,
                                String::from_utf8_lossy(&m.content),
                                edit.map(|s| s.0),
                                m.revoked,
                                String::from_utf8_lossy(&expected.content),
                                expected.edit_seq.map(|s| s.0),
                                expected.revoked
                            ));
                        }
                    }
                },
                None => {
                    if model.is_deleted(seq) && !tombstones.contains(seq) {
                        out.push(format!(
                            "{id} seq {}: deleted on the server but no tombstone",
                            seq.0
                        ));
                    }
                }
            }
        }
    }
    let total = store.total_unread().await?;
    if total != sum {
        out.push(format!("total unread {total}, the model's {sum}"));
    }
    Ok(())
}
