//! The write side: one [`WriteBatch`] applied op by op inside the caller's transaction.
//!
//! The rules are [`tidemark_engine::MemoryStorage`]'s, op for op (see [`WriteOp`]). The merge
//! of [`WriteOp::PutMessages`] is done in Rust on the decoded row, as the memory store does
//! it, rather than in SQL: one statement of the rule is easier to keep equal to the reference
//! (the differential test checks it). A message at a seq that holds no row (one range scan per
//! conversation finds them) is first tried as a plain insert, which succeeds exactly when the
//! rule would store it unchanged; only the others pay the rule's lookups. Any error leaves the
//! transaction to be rolled back by the caller.

use std::sync::OnceLock;

use rusqlite::{params, Connection, OptionalExtension, Statement, ToSql};
use tidemark_engine::storage::{may_change, merge_put};
use tidemark_engine::{
    Applied, ClientMsgId, ConversationId, Message, RefusedChange, Seq, SeqRanges, StorageError,
    UserId, WriteBatch, WriteOp,
};

use super::codec::{
    bound, conversation_columns, decode_message, decode_tombstones, encode_ranges, int, key_of,
    message_columns, outbox_columns, pending_change_columns, ConversationRow, MessageRow,
    OutboxRow, PendingChangeRow, PLAIN_MESSAGE_COLUMNS, PLAIN_MESSAGE_VALUES,
};
use super::error::batch_error;

const PUT_CONVERSATION: &str = concat!(
    "INSERT INTO conversations (",
    conversation_columns!(),
    ") VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, ?18) \
     ON CONFLICT (id) DO UPDATE SET kind = excluded.kind, \
     server_max_seq = excluded.server_max_seq, server_min_seq = excluded.server_min_seq, \
     held = excluded.held, read_seq = excluded.read_seq, not_unread = excluded.not_unread, \
     unread = excluded.unread, last_activity = excluded.last_activity, \
     deleted = excluded.deleted, latest_seq = excluded.latest_seq, \
     latest_client_msg_id = excluded.latest_client_msg_id, \
     latest_sender = excluded.latest_sender, latest_kind = excluded.latest_kind, \
     latest_kind_name = excluded.latest_kind_name, \
     latest_target_seq = excluded.latest_target_seq, \
     latest_preview = excluded.latest_preview, latest_time = excluded.latest_time"
);
// A conversation's key in the message indexes (migration 005), and a new one. Keys are
// never deleted, so a key once read stays valid for the whole batch.
const CONVERSATION_KEY: &str = "SELECT key FROM conversation_keys WHERE id = ?1";
const NEW_CONVERSATION_KEY: &str = "INSERT INTO conversation_keys (id) VALUES (?1)";
// By key: the write path holds the key of the conversation it writes.
const MESSAGE_BY_CLIENT_ID: &str = concat!(
    "SELECT ",
    message_columns!(),
    " FROM messages WHERE conversation_key = ?1 AND sender = ?2 AND client_msg_id = ?3"
);
const SEQS_IN_SPAN: &str =
    "SELECT seq FROM messages WHERE conversation_key = ?1 AND seq BETWEEN ?2 AND ?3";
// A message at a free seq with an unknown id: a plain insert, which fails (and changes
// nothing) when the id is stored already. ?1 is the key, the rest the row ([`MessageRow::keyed_params`]).
const INSERT_NEW_MESSAGE: &str = concat!(
    "INSERT INTO messages (conversation_key, ",
    message_columns!(),
    ") VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15)"
);
const HOLDER_OF_SEQ: &str =
    "SELECT sender, client_msg_id FROM messages WHERE conversation_key = ?1 AND seq = ?2";
const AUTHOR_OF_SEQ: &str = concat!(
    "SELECT sender FROM messages WHERE conversation_key = ",
    key_of!("?1"),
    " AND seq = ?2"
);
// Insert or replace by (conversation, sender, client id): the merged row is written whole,
// whether it is new or replaces a pending one. The seq's holder was checked before, so the
// UNIQUE on (conversation, seq) only fires on a bug, and then as a rejection.
const PUT_MESSAGE: &str = concat!(
    "INSERT INTO messages (conversation_key, ",
    message_columns!(),
    ") VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15) \
     ON CONFLICT (conversation_key, sender, client_msg_id) DO UPDATE SET seq = excluded.seq, \
     kind = excluded.kind, kind_name = excluded.kind_name, \
     target_seq = excluded.target_seq, content = excluded.content, \
     created_at = excluded.created_at, server_time = excluded.server_time, \
     status = excluded.status, failure_reason = excluded.failure_reason, \
     edit_seq = excluded.edit_seq, revoked = excluded.revoked"
);
// The edit rule of `WriteOp::EditMessage` in one statement: not revoked, no newer edit.
const EDIT_MESSAGE: &str = concat!(
    "UPDATE messages SET content = ?4, edit_seq = ?3 WHERE conversation_key = ",
    key_of!("?1"),
    " AND seq = ?2 AND revoked = 0 AND (edit_seq IS NULL OR edit_seq < ?3)"
);
const REVOKE_MESSAGE: &str = concat!(
    "UPDATE messages SET content = X'', revoked = 1 WHERE conversation_key = ",
    key_of!("?1"),
    " AND seq = ?2"
);
const DELETE_SEQ_RANGE: &str = concat!(
    "DELETE FROM messages WHERE conversation_key = ",
    key_of!("?1"),
    " AND seq BETWEEN ?2 AND ?3"
);
const TOMBSTONES: &str = "SELECT conversation, ranges FROM tombstones WHERE conversation = ?1";
const PUT_TOMBSTONES: &str = "INSERT INTO tombstones (conversation, ranges) VALUES (?1, ?2) \
     ON CONFLICT (conversation) DO UPDATE SET ranges = excluded.ranges";
// Every unsent row with the client id: unsent rows are this device's own sends.
const DELETE_PENDING: &str = concat!(
    "DELETE FROM messages WHERE conversation_key = ",
    key_of!("?1"),
    " AND client_msg_id = ?2 AND seq IS NULL"
);
const PUT_OUTBOX: &str = concat!(
    "INSERT OR REPLACE INTO outbox (",
    outbox_columns!(),
    ") VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)"
);
const REMOVE_OUTBOX: &str = "DELETE FROM outbox WHERE client_msg_id = ?1";
const PUT_PENDING_CHANGE: &str = concat!(
    "INSERT OR REPLACE INTO pending_changes (",
    pending_change_columns!(),
    ") VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)"
);
const PUT_SYNC_TOKEN: &str =
    "INSERT INTO sync_token (id, token) VALUES (1, ?1) ON CONFLICT (id) DO UPDATE SET token = excluded.token";

const REMOVE_SYNC_TOKEN: &str = "DELETE FROM sync_token";

const REMOVE_PENDING_CHANGE: &str =
    "DELETE FROM pending_changes WHERE conversation = ?1 AND seq = ?2";

/// Applies every op of `batch` in order on `conn`, which must be inside a transaction the
/// caller commits on `Ok` and rolls back on `Err`. Returns what the merge rules left out.
pub(crate) fn apply_batch(conn: &Connection, batch: WriteBatch) -> Result<Applied, StorageError> {
    let mut applied = Applied::default();
    for op in batch.ops {
        apply_op(conn, op, &mut applied)?;
    }
    Ok(applied)
}

fn apply_op(conn: &Connection, op: WriteOp, applied: &mut Applied) -> Result<(), StorageError> {
    match op {
        WriteOp::PutConversation(conv) => {
            let row = ConversationRow::new(&conv)?;
            conn.prepare_cached(PUT_CONVERSATION)
                .and_then(|mut s| s.execute(&row.params()[..]))
                .map_err(batch_error)?;
        }
        WriteOp::PutMessages(messages) => {
            // Taken from the cache once per op, not per row: a lookup hashes the whole SQL.
            let mut insert = conn
                .prepare_cached(INSERT_NEW_MESSAGE)
                .map_err(batch_error)?;
            // Runs of one conversation (an op usually holds one): its tombstones and the seqs
            // holding a row are read once per run, and the rows need no per-row lookups.
            for run in messages.chunk_by(|a, b| a.conversation == b.conversation) {
                put_run(conn, &mut insert, run)?;
            }
        }
        WriteOp::EditMessage {
            conversation,
            target,
            edit_seq,
            sender,
            content,
        } => {
            if !may_apply_change(conn, &conversation, target, edit_seq, &sender, applied)? {
                return Ok(());
            }
            let target = int(target.0, "edit target")?;
            let edit_seq = int(edit_seq.0, "edit seq")?;
            conn.prepare_cached(EDIT_MESSAGE)
                .and_then(|mut s| s.execute(params![conversation.0, target, edit_seq, content]))
                .map_err(batch_error)?;
        }
        WriteOp::RevokeMessage {
            conversation,
            target,
            revoke_seq,
            sender,
        } => {
            if !may_apply_change(conn, &conversation, target, revoke_seq, &sender, applied)? {
                return Ok(());
            }
            let target = int(target.0, "revoke target")?;
            conn.prepare_cached(REVOKE_MESSAGE)
                .and_then(|mut s| s.execute(params![conversation.0, target]))
                .map_err(batch_error)?;
        }
        WriteOp::PutTombstones { conversation, seqs } => {
            if seqs.is_empty() {
                return Ok(());
            }
            {
                let mut delete = conn.prepare_cached(DELETE_SEQ_RANGE).map_err(batch_error)?;
                for r in seqs.ranges() {
                    if i64::try_from(r.start.0).is_err() {
                        // Ranges are sorted: this one and the rest hold no stored seq.
                        break;
                    }
                    delete
                        .execute(params![conversation.0, bound(r.start.0), bound(r.end.0)])
                        .map_err(batch_error)?;
                }
            }
            let mut all = tombstones_of(conn, &conversation)?;
            all.union_with(&seqs);
            conn.prepare_cached(PUT_TOMBSTONES)
                .and_then(|mut s| s.execute(params![conversation.0, encode_ranges(&all)]))
                .map_err(batch_error)?;
        }
        WriteOp::DeletePendingMessage {
            conversation,
            client_msg_id,
        } => {
            conn.prepare_cached(DELETE_PENDING)
                .and_then(|mut s| s.execute(params![conversation.0, client_msg_id.0]))
                .map_err(batch_error)?;
        }
        WriteOp::PutOutbox(entry) => {
            let row = OutboxRow::new(&entry)?;
            conn.prepare_cached(PUT_OUTBOX)
                .and_then(|mut s| s.execute(&row.params()[..]))
                .map_err(batch_error)?;
        }
        WriteOp::RemoveOutbox(id) => {
            conn.prepare_cached(REMOVE_OUTBOX)
                .and_then(|mut s| s.execute([id.0]))
                .map_err(batch_error)?;
        }
        WriteOp::PutPendingChange(change) => {
            let row = PendingChangeRow::new(&change)?;
            conn.prepare_cached(PUT_PENDING_CHANGE)
                .and_then(|mut s| s.execute(&row.params()[..]))
                .map_err(batch_error)?;
        }
        WriteOp::RemovePendingChange { conversation, seq } => {
            // A seq above i64::MAX cannot have been stored.
            let Ok(seq) = i64::try_from(seq.0) else {
                return Ok(());
            };
            conn.prepare_cached(REMOVE_PENDING_CHANGE)
                .and_then(|mut s| s.execute(params![conversation.0, seq]))
                .map_err(batch_error)?;
        }
        WriteOp::PutSyncToken(Some(token)) => {
            conn.prepare_cached(PUT_SYNC_TOKEN)
                .and_then(|mut s| s.execute(params![token.0]))
                .map_err(batch_error)?;
        }
        WriteOp::PutSyncToken(None) => {
            conn.prepare_cached(REMOVE_SYNC_TOKEN)
                .and_then(|mut s| s.execute([]))
                .map_err(batch_error)?;
        }
    }
    Ok(())
}

/// Whether an edit or revoke by `sender` of the message at `target` goes ahead: `false` for
/// a missing target (a no-op) and for a target by another author, which is reported in
/// `applied` ([`may_change`]).
fn may_apply_change(
    conn: &Connection,
    conversation: &ConversationId,
    target: Seq,
    change_seq: Seq,
    sender: &UserId,
    applied: &mut Applied,
) -> Result<bool, StorageError> {
    // A target above i64::MAX is not stored: a no-op, like any missing target.
    let Ok(at) = i64::try_from(target.0) else {
        return Ok(false);
    };
    let author: Option<UserId> = conn
        .prepare_cached(AUTHOR_OF_SEQ)
        .and_then(|mut s| {
            s.query_row(params![conversation.0, at], |r| r.get(0).map(UserId))
                .optional()
        })
        .map_err(batch_error)?;
    match author {
        None => Ok(false),
        Some(author) if may_change(&author, sender) => Ok(true),
        Some(_) => {
            applied.refused_changes.push(RefusedChange {
                conversation: conversation.clone(),
                target,
                change_seq,
            });
            Ok(false)
        }
    }
}

fn tombstones_of(
    conn: &Connection,
    conversation: &ConversationId,
) -> Result<SeqRanges, StorageError> {
    let mut stmt = conn.prepare_cached(TOMBSTONES).map_err(batch_error)?;
    let mut rows = stmt.query([&conversation.0]).map_err(batch_error)?;
    match rows.next().map_err(batch_error)? {
        Some(row) => Ok(decode_tombstones(row)?.1),
        None => Ok(SeqRanges::new()),
    }
}

/// Stores `run`, messages of one conversation, by the memory store's rules. A message at a
/// seq that is neither tombstoned nor held by a row from before the op is first tried as a
/// plain insert; any other (and one whose insert meets a row of its seq or id, possibly
/// stored earlier in this op) goes through [`put_message`].
fn put_run(
    conn: &Connection,
    insert: &mut Statement<'_>,
    run: &[Message],
) -> Result<(), StorageError> {
    let Some(first) = run.first() else {
        return Ok(());
    };
    // Tombstones cannot change within one op.
    let tombstones = tombstones_of(conn, &first.conversation)?;
    let key = conversation_key(conn, &first.conversation)?;
    let occupied = occupied_seqs(conn, key, run)?;
    // Consecutive messages at free seqs, inserted CHUNK at a time.
    let mut fresh: Vec<&Message> = Vec::with_capacity(CHUNK);
    for m in run {
        let free = m.seq.is_some_and(|seq| {
            !tombstones.contains(seq)
                && i64::try_from(seq.0).is_ok_and(|s| occupied.binary_search(&s).is_err())
        });
        if free {
            fresh.push(m);
            if fresh.len() == CHUNK {
                insert_chunk(conn, key, &fresh)?;
                fresh.clear();
            }
            continue;
        }
        // What came before is stored first: the rule sees the rows in order.
        insert_each(conn, insert, key, &mut fresh)?;
        if m.seq.is_some_and(|seq| tombstones.contains(seq)) {
            continue;
        }
        put_message(conn, key, m.clone())?;
    }
    insert_each(conn, insert, key, &mut fresh)
}

/// Messages per multi-row insert of [`insert_chunk`]: one statement's start and end (cursors
/// opened and closed, the program halted and reset) for many rows.
const CHUNK: usize = 32;

/// `INSERT` of [`CHUNK`] messages that skips any row meeting a stored seq or id (`ON
/// CONFLICT DO NOTHING`), for [`insert_chunk`]: the conversation's key `?1` and id `?2` are
/// bound once, then each row's [`MessageRow::columns_after_conversation`], or with `plain`
/// its [`MessageRow::plain_columns`].
fn insert_chunk_sql(plain: bool) -> &'static str {
    static SQL: OnceLock<String> = OnceLock::new();
    static PLAIN_SQL: OnceLock<String> = OnceLock::new();
    let build = |columns: &str, per_row: usize, literals: &str| {
        let row = format!("(?1, ?2{}{literals})", ", ?".repeat(per_row));
        format!(
            "INSERT INTO messages (conversation_key, conversation, {columns}) VALUES {} \
             ON CONFLICT DO NOTHING",
            vec![row; CHUNK].join(", ")
        )
    };
    if plain {
        PLAIN_SQL.get_or_init(|| {
            build(
                PLAIN_MESSAGE_COLUMNS,
                7,
                &format!(", {PLAIN_MESSAGE_VALUES}"),
            )
        })
    } else {
        SQL.get_or_init(|| {
            // message_columns!() less its first, the conversation.
            let columns = message_columns!().trim_start_matches("conversation, ");
            build(columns, 13, "")
        })
    }
}

/// Stores `chunk`, [`CHUNK`] messages at seqs free before the op, in one statement when each
/// is new (what the rule does with them in order). When any met a row (of its id, or of its
/// seq stored earlier in the chunk), the rule decides for each in order: a row the chunk
/// inserted is then met as itself and left as it is (putting a stored message again changes
/// nothing), and a conflict the rule rejects is rejected (the whole batch rolls back, so
/// which conflict is reported first is all that can differ).
fn insert_chunk(conn: &Connection, key: i64, chunk: &[&Message]) -> Result<(), StorageError> {
    let rows = chunk
        .iter()
        .map(|m| MessageRow::new(m))
        .collect::<Result<Vec<_>, _>>()?;
    let conversation = &chunk[0].conversation.0;
    let mut params: Vec<&dyn ToSql> = Vec::with_capacity(2 + 13 * CHUNK);
    params.push(&key);
    params.push(conversation);
    let plain = rows.iter().all(|r| r.plain_columns().is_some());
    for r in &rows {
        match r.plain_columns() {
            Some(columns) if plain => params.extend(columns),
            _ => params.extend(r.columns_after_conversation()),
        }
    }
    let inserted = conn
        .prepare_cached(insert_chunk_sql(plain))
        .and_then(|mut s| s.execute(&params[..]))
        .map_err(batch_error)?;
    if inserted < chunk.len() {
        for m in chunk {
            put_message(conn, key, (*m).clone())?;
        }
    }
    Ok(())
}

/// Stores the messages of `fresh` (at seqs free before the op) one by one, in order, and
/// empties it: each a plain insert, or the rule when the insert meets a row.
fn insert_each(
    conn: &Connection,
    insert: &mut Statement<'_>,
    key: i64,
    fresh: &mut Vec<&Message>,
) -> Result<(), StorageError> {
    for m in fresh.drain(..) {
        if !insert_new(insert, key, m)? {
            put_message(conn, key, m.clone())?;
        }
    }
    Ok(())
}

/// The key of `conversation` in the message indexes, given to it now if it has none.
fn conversation_key(conn: &Connection, conversation: &ConversationId) -> Result<i64, StorageError> {
    let known = conn
        .prepare_cached(CONVERSATION_KEY)
        .and_then(|mut s| s.query_row([&conversation.0], |r| r.get(0)).optional())
        .map_err(batch_error)?;
    if let Some(key) = known {
        return Ok(key);
    }
    conn.prepare_cached(NEW_CONVERSATION_KEY)
        .and_then(|mut s| s.insert([&conversation.0]))
        .map_err(batch_error)
}

/// The seqs that held a row before the op within the span of seqs `run` (one conversation's
/// messages) writes, ascending: one range scan instead of a lookup per message (the common
/// case of a sync is a run of new messages at free seqs). Rows this op stores are not added:
/// a plain insert at their seq meets the `(conversation, seq)` constraint and falls back.
fn occupied_seqs(conn: &Connection, key: i64, run: &[Message]) -> Result<Vec<i64>, StorageError> {
    let mut seqs = run
        .iter()
        .filter_map(|m| m.seq.and_then(|s| i64::try_from(s.0).ok()));
    let Some(first) = seqs.next() else {
        return Ok(Vec::new());
    };
    let (from, to) = seqs.fold((first, first), |(lo, hi), s| (lo.min(s), hi.max(s)));
    let mut stmt = conn.prepare_cached(SEQS_IN_SPAN).map_err(batch_error)?;
    let mut seqs = stmt
        .query_map(params![key, from, to], |r| r.get::<_, i64>(0))
        .map_err(batch_error)?
        .collect::<Result<Vec<i64>, _>>()
        .map_err(batch_error)?;
    // Read in index order already: the sort only makes the binary search not depend on it.
    seqs.sort_unstable();
    Ok(seqs)
}

/// Stores `m` as a new row when no row has its (conversation, sender, client id) either:
/// what the merge rule does with no existing row and a free seq. Returns `false`, having
/// changed nothing, when such a row exists (then the full rule in [`put_message`] decides).
/// `insert` is [`INSERT_NEW_MESSAGE`]; `key` is the conversation's.
fn insert_new(insert: &mut Statement<'_>, key: i64, m: &Message) -> Result<bool, StorageError> {
    let row = MessageRow::new(m)?;
    let inserted = insert.execute(&row.keyed_params(&key)[..]);
    match inserted {
        Ok(_) => Ok(true),
        // The statement alone is undone (SQLite's ABORT); the transaction goes on.
        Err(e) if e.sqlite_error_code() == Some(rusqlite::ErrorCode::ConstraintViolation) => {
            Ok(false)
        }
        Err(e) => Err(batch_error(e)),
    }
}

/// One message of [`WriteOp::PutMessages`], by the memory store's rules.
/// `key` is the conversation's.
fn put_message(conn: &Connection, key: i64, m: Message) -> Result<(), StorageError> {
    let existing = stored_by_client_id(conn, key, &m.sender, &m.client_msg_id)?;
    // The row itself holding the seq is no conflict; only look further when it does not.
    let holder = match m.seq {
        Some(seq) if existing.as_ref().and_then(|e| e.seq) != Some(seq) => {
            holder_of(conn, key, seq)?.map(|(sender, id)| (UserId(sender), ClientMsgId(id)))
        }
        _ => None,
    };
    let holder = holder.as_ref().map(|(sender, id)| (sender, id));
    let Some(merged) = merge_put(existing.as_ref(), holder, false, m)? else {
        return Ok(());
    };
    let row = MessageRow::new(&merged)?;
    conn.prepare_cached(PUT_MESSAGE)
        .and_then(|mut s| s.execute(&row.keyed_params(&key)[..]))
        .map_err(batch_error)?;
    Ok(())
}

/// The stored row with this sender and client id.
fn stored_by_client_id(
    conn: &Connection,
    key: i64,
    sender: &UserId,
    client_msg_id: &ClientMsgId,
) -> Result<Option<Message>, StorageError> {
    let mut stmt = conn
        .prepare_cached(MESSAGE_BY_CLIENT_ID)
        .map_err(batch_error)?;
    let mut rows = stmt
        .query(params![key, sender.0, client_msg_id.0])
        .map_err(batch_error)?;
    match rows.next().map_err(batch_error)? {
        Some(row) => decode_message(row).map(Some),
        None => Ok(None),
    }
}

/// The sender and client id of the row at `seq`, if any.
fn holder_of(
    conn: &Connection,
    key: i64,
    seq: Seq,
) -> Result<Option<(String, String)>, StorageError> {
    let seq = int(seq.0, "seq")?;
    conn.prepare_cached(HOLDER_OF_SEQ)
        .and_then(|mut s| {
            s.query_row(params![key, seq], |r| Ok((r.get(0)?, r.get(1)?)))
                .optional()
        })
        .map_err(batch_error)
}
