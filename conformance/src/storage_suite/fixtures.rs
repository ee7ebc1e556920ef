//! Test data and small helpers shared by the cases.

use tidemark_engine::{
    Applied, ClientMsgId, ContentKind, Conversation, ConversationCursor, ConversationId,
    ConversationKind, Direction, Message, MessageStatus, OutboxEntry, PendingChange, Seq,
    SeqRanges, Storage, StorageError, Timestamp, UserId, WriteBatch, WriteOp,
};

use super::{conversations_in_pages, CaseError};

pub(crate) fn cid(id: &str) -> ConversationId {
    ConversationId::from(id)
}

pub(crate) fn mid(id: &str) -> ClientMsgId {
    ClientMsgId::from(id)
}

/// A group conversation record with this activity and unread count, holding `1..=held_to`
/// (nothing for 0), server max seq `held_to`.
pub(crate) fn conv(id: &str, activity: u64, unread: u64, held_to: u64) -> Conversation {
    Conversation {
        server_max_seq: Seq(held_to),
        held: SeqRanges::from_range(Seq(1), Seq(held_to)),
        unread,
        last_activity: Timestamp(activity),
        ..Conversation::new(cid(id), ConversationKind::Group)
    }
}

/// A set of seqs from inclusive `(start, end)` pairs.
pub(crate) fn ranges(pairs: &[(u64, u64)]) -> SeqRanges {
    let mut set = SeqRanges::new();
    for &(start, end) in pairs {
        set.insert_range(Seq(start), Seq(end));
    }
    set
}

/// A message of this device, not acked yet.
pub(crate) fn pending(conv: &str, id: &str, at: u64) -> Message {
    Message {
        conversation: cid(conv),
        seq: None,
        client_msg_id: mid(id),
        sender: UserId::from("me"),
        kind: ContentKind::Text,
        content: format!("{id}, written at {at}").into_bytes(),
        created_at: Timestamp(at),
        server_time: None,
        status: MessageStatus::Pending,
        edit_seq: None,
        revoked: false,
    }
}

/// A send the server refused for good.
pub(crate) fn failed(conv: &str, id: &str, at: u64) -> Message {
    Message {
        status: MessageStatus::Failed {
            reason: "refused by the server".to_owned(),
        },
        ..pending(conv, id, at)
    }
}

/// Someone else's message at `seq`.
pub(crate) fn sent(conv: &str, id: &str, seq: u64) -> Message {
    Message {
        conversation: cid(conv),
        seq: Some(Seq(seq)),
        client_msg_id: mid(id),
        sender: UserId::from("bob"),
        kind: ContentKind::Text,
        content: format!("{id} at seq {seq}").into_bytes(),
        created_at: Timestamp(1_000 + seq % 1_000_000),
        server_time: Some(Timestamp(2_000_000 + seq % 1_000_000)),
        status: MessageStatus::Sent,
        edit_seq: None,
        revoked: false,
    }
}

/// `pending` as its ack makes it: the same row at `seq`.
pub(crate) fn acked(pending: &Message, seq: u64) -> Message {
    Message {
        seq: Some(Seq(seq)),
        server_time: Some(Timestamp(3_000_000 + seq % 1_000_000)),
        status: MessageStatus::Sent,
        ..pending.clone()
    }
}

/// `sent` messages `{conv}-{seq}` at these seqs.
pub(crate) fn sent_run(conv: &str, seqs: impl IntoIterator<Item = u64>) -> Vec<Message> {
    seqs.into_iter()
        .map(|s| sent(conv, &format!("{conv}-{s}"), s))
        .collect()
}

/// The outbox entry of `pending(conv, id, at)`.
pub(crate) fn outbox_entry(conv: &str, id: &str, at: u64) -> OutboxEntry {
    OutboxEntry {
        conversation: cid(conv),
        client_msg_id: mid(id),
        kind: ContentKind::Text,
        content: format!("{id}, written at {at}").into_bytes(),
        created_at: Timestamp(at),
        attempts: 0,
    }
}

/// What a send writes: the pending row and its outbox entry.
pub(crate) fn send_ops(conv: &str, id: &str, at: u64) -> Vec<WriteOp> {
    vec![
        WriteOp::PutMessages(vec![pending(conv, id, at)]),
        WriteOp::PutOutbox(outbox_entry(conv, id, at)),
    ]
}

pub(crate) fn edit_change(conv: &str, seq: u64, target: u64, content: &str) -> PendingChange {
    PendingChange {
        conversation: cid(conv),
        seq: Seq(seq),
        target: Seq(target),
        sender: UserId::from("bob"),
        kind: ContentKind::Edit {
            target: Seq(target),
        },
        content: content.as_bytes().to_vec(),
    }
}

pub(crate) fn revoke_change(conv: &str, seq: u64, target: u64) -> PendingChange {
    PendingChange {
        conversation: cid(conv),
        seq: Seq(seq),
        target: Seq(target),
        sender: UserId::from("bob"),
        kind: ContentKind::Revoke {
            target: Seq(target),
        },
        content: Vec::new(),
    }
}

pub(crate) fn tombstones(conv: &str, start: u64, end: u64) -> WriteOp {
    WriteOp::PutTombstones {
        conversation: cid(conv),
        seqs: SeqRanges::from_range(Seq(start), Seq(end)),
    }
}

/// An edit by bob, the sender of [`sent`] messages.
pub(crate) fn edit(conv: &str, target: u64, edit_seq: u64, content: &[u8]) -> WriteOp {
    edit_by("bob", conv, target, edit_seq, content)
}

pub(crate) fn edit_by(
    sender: &str,
    conv: &str,
    target: u64,
    edit_seq: u64,
    content: &[u8],
) -> WriteOp {
    WriteOp::EditMessage {
        conversation: cid(conv),
        target: Seq(target),
        edit_seq: Seq(edit_seq),
        sender: UserId::from(sender),
        content: content.to_vec(),
    }
}

/// A revoke at `revoke_seq` by bob, the sender of [`sent`] messages.
pub(crate) fn revoke(conv: &str, target: u64) -> WriteOp {
    revoke_by("bob", conv, target, target + 100)
}

pub(crate) fn revoke_by(sender: &str, conv: &str, target: u64, revoke_seq: u64) -> WriteOp {
    WriteOp::RevokeMessage {
        conversation: cid(conv),
        target: Seq(target),
        revoke_seq: Seq(revoke_seq),
        sender: UserId::from(sender),
    }
}

pub(crate) fn delete_pending(conv: &str, id: &str) -> WriteOp {
    WriteOp::DeletePendingMessage {
        conversation: cid(conv),
        client_msg_id: mid(id),
    }
}

pub(crate) fn put(messages: Vec<Message>) -> WriteOp {
    WriteOp::PutMessages(messages)
}

pub(crate) fn put_conv(c: Conversation) -> WriteOp {
    WriteOp::PutConversation(c)
}

pub(crate) fn cursor(activity: u64, id: &str) -> ConversationCursor {
    ConversationCursor {
        last_activity: Timestamp(activity),
        id: cid(id),
    }
}

pub(crate) async fn apply<S: Storage>(
    store: &S,
    ops: Vec<WriteOp>,
) -> Result<Applied, StorageError> {
    store.apply(WriteBatch { ops }).await
}

/// Applies `ops` and asserts the batch is rejected with [`StorageError::Rejected`].
pub(crate) async fn expect_rejected<S: Storage>(store: &S, ops: Vec<WriteOp>, what: &str) {
    match store.apply(WriteBatch { ops }).await {
        Err(StorageError::Rejected(_)) => {}
        Err(other) => panic!("{what}: expected StorageError::Rejected, got {other:?}"),
        Ok(_) => panic!("{what}: expected StorageError::Rejected, the batch was accepted"),
    }
}

/// Asserts `check_integrity` reports [`StorageError::Corrupt`].
pub(crate) async fn expect_corrupt<S: Storage>(store: &S, what: &str) {
    match store.check_integrity().await {
        Err(StorageError::Corrupt { .. }) => {}
        Err(other) => panic!("{what}: expected StorageError::Corrupt, got {other:?}"),
        Ok(()) => panic!("{what}: check_integrity passed"),
    }
}

/// The seqs of one `messages_page` call (checking each message has a seq and belongs there).
pub(crate) async fn page_seqs<S: Storage>(
    store: &S,
    conv: &str,
    anchor: Option<u64>,
    direction: Direction,
    limit: usize,
) -> Result<Vec<u64>, CaseError> {
    let page = store
        .messages_page(&cid(conv), anchor.map(Seq), direction, limit)
        .await?;
    if page.len() > limit {
        return Err(CaseError::Inconsistent(format!(
            "messages_page of {conv} returned {} messages for limit {limit}",
            page.len()
        )));
    }
    page.iter()
        .map(|m| match m.seq {
            Some(seq) if m.conversation == cid(conv) => Ok(seq.0),
            _ => Err(CaseError::Inconsistent(format!(
                "messages_page of {conv} returned {:?} of {:?} at {:?}",
                m.client_msg_id, m.conversation, m.seq
            ))),
        })
        .collect()
}

/// The seqs of every message of `conv` with a seq, read by [`super::messages_in_pages`].
pub(crate) async fn all_seqs<S: Storage>(store: &S, conv: &str) -> Result<Vec<u64>, CaseError> {
    Ok(
        super::messages_in_pages(store, &cid(conv), Direction::After, 1_000)
            .await?
            .iter()
            .filter_map(|m| m.seq.map(|s| s.0))
            .collect(),
    )
}

/// The ids of one `conversations_page` call.
pub(crate) async fn list_ids<S: Storage>(
    store: &S,
    after: Option<ConversationCursor>,
    limit: usize,
) -> Result<Vec<String>, CaseError> {
    let page = store.conversations_page(after, limit).await?;
    if page.len() > limit {
        return Err(CaseError::Inconsistent(format!(
            "conversations_page returned {} conversations for limit {limit}",
            page.len()
        )));
    }
    Ok(page.into_iter().map(|c| c.id.0).collect())
}

/// The ids of the whole list, read `limit` at a time.
pub(crate) async fn walk_ids<S: Storage>(
    store: &S,
    limit: usize,
) -> Result<Vec<String>, CaseError> {
    Ok(conversations_in_pages(store, limit)
        .await?
        .into_iter()
        .map(|c| c.id.0)
        .collect())
}

/// This device's user, the sender of [`pending`] and [`failed`] rows.
pub(crate) fn me() -> UserId {
    UserId::from("me")
}

/// The row with client id `id` of the fixtures' senders: this device's (`me`, the sender of
/// [`pending`] rows and their acks) if there is one, else `bob`'s (the sender of [`sent`]).
/// For a precise lookup, see [`row_of`].
pub(crate) async fn row<S: Storage>(
    store: &S,
    conv: &str,
    id: &str,
) -> Result<Option<Message>, CaseError> {
    match row_of(store, conv, "me", id).await? {
        Some(m) => Ok(Some(m)),
        None => row_of(store, conv, "bob", id).await,
    }
}

/// The row of `sender` with client id `id`.
pub(crate) async fn row_of<S: Storage>(
    store: &S,
    conv: &str,
    sender: &str,
    id: &str,
) -> Result<Option<Message>, CaseError> {
    Ok(store
        .message_by_client_id(&cid(conv), &UserId::from(sender), &mid(id))
        .await?)
}

pub(crate) async fn unsent_ids<S: Storage>(
    store: &S,
    conv: &str,
) -> Result<Vec<String>, CaseError> {
    Ok(store
        .unsent_messages(&cid(conv))
        .await?
        .into_iter()
        .map(|m| m.client_msg_id.0)
        .collect())
}

pub(crate) async fn outbox_ids<S: Storage>(store: &S) -> Result<Vec<String>, CaseError> {
    Ok(store
        .outbox()
        .await?
        .into_iter()
        .map(|e| e.client_msg_id.0)
        .collect())
}

/// `strs(["a", "b"])` as owned strings, to compare with id lists.
pub(crate) fn strs<const N: usize>(ids: [&str; N]) -> Vec<String> {
    ids.iter().map(|s| (*s).to_owned()).collect()
}

pub(crate) fn no_seqs() -> Vec<u64> {
    Vec::new()
}
