//! The read side of [`tidemark_engine::Storage`], one function per trait method.
//!
//! Every statement goes through `prepare_cached`; the queries an app runs often (list pages,
//! message pages) seek an index, which `tests` below checks with `EXPLAIN QUERY PLAN`.

use rusqlite::{params, Connection, Transaction, TransactionBehavior};
use tidemark_engine::{
    ClientMsgId, Conversation, ConversationCursor, ConversationId, Direction, Message, OutboxEntry,
    PendingChange, Seq, SeqRanges, StorageError, SyncSnapshot, SyncToken, UserId,
};

use super::codec::{
    conversation_columns, decode_conversation, decode_message, decode_outbox,
    decode_pending_change, decode_tombstones, key_of, limit, message_columns, outbox_columns,
    pending_change_columns,
};
use super::error::storage_error;

pub(crate) const CONVERSATION: &str = concat!(
    "SELECT ",
    conversation_columns!(),
    " FROM conversations WHERE id = ?1"
);
pub(crate) const SYNC_TOKEN: &str = "SELECT token FROM sync_token WHERE id = 1";
pub(crate) const ALL_CONVERSATIONS: &str =
    concat!("SELECT ", conversation_columns!(), " FROM conversations");
pub(crate) const LIST_FIRST: &str = concat!(
    "SELECT ",
    conversation_columns!(),
    " FROM conversations ORDER BY last_activity DESC, id ASC LIMIT ?1"
);
// A cursor page is two seeks, not one OR: the list order mixes DESC and ASC, so no single
// row-value comparison describes "after the cursor", and an OR would make SQLite walk the
// index from the top. First the rest of the cursor's own activity (ids above the cursor's),
// then everything older.
pub(crate) const LIST_SAME_ACTIVITY: &str = concat!(
    "SELECT ",
    conversation_columns!(),
    " FROM conversations WHERE last_activity = ?1 AND id > ?2 ORDER BY id ASC LIMIT ?3"
);
pub(crate) const LIST_OLDER: &str = concat!(
    "SELECT ",
    conversation_columns!(),
    " FROM conversations WHERE last_activity < ?1 ORDER BY last_activity DESC, id ASC LIMIT ?2"
);
pub(crate) const MESSAGES_BEFORE: &str = concat!(
    "SELECT ",
    message_columns!(),
    " FROM messages WHERE conversation_key = ",
    key_of!("?1"),
    " AND seq < ?2 ORDER BY seq DESC LIMIT ?3"
);
pub(crate) const MESSAGES_NEWEST: &str = concat!(
    "SELECT ",
    message_columns!(),
    " FROM messages WHERE conversation_key = ",
    key_of!("?1"),
    " AND seq IS NOT NULL ORDER BY seq DESC LIMIT ?2"
);
pub(crate) const MESSAGES_AFTER: &str = concat!(
    "SELECT ",
    message_columns!(),
    " FROM messages WHERE conversation_key = ",
    key_of!("?1"),
    " AND seq > ?2 ORDER BY seq ASC LIMIT ?3"
);
pub(crate) const MESSAGES_OLDEST: &str = concat!(
    "SELECT ",
    message_columns!(),
    " FROM messages WHERE conversation_key = ",
    key_of!("?1"),
    " AND seq IS NOT NULL ORDER BY seq ASC LIMIT ?2"
);
pub(crate) const MESSAGE_BY_CLIENT_ID: &str = concat!(
    "SELECT ",
    message_columns!(),
    " FROM messages WHERE conversation_key = ",
    key_of!("?1"),
    " AND sender = ?2 AND client_msg_id = ?3"
);
pub(crate) const UNSENT: &str = concat!(
    "SELECT ",
    message_columns!(),
    " FROM messages WHERE conversation_key = ",
    key_of!("?1"),
    " AND seq IS NULL \
     ORDER BY created_at, client_msg_id, sender"
);
pub(crate) const OUTBOX: &str = concat!(
    "SELECT ",
    outbox_columns!(),
    " FROM outbox ORDER BY created_at, client_msg_id"
);
pub(crate) const PENDING_CHANGES: &str = concat!(
    "SELECT ",
    pending_change_columns!(),
    " FROM pending_changes ORDER BY conversation, seq"
);
pub(crate) const TOMBSTONES: &str =
    "SELECT conversation, ranges FROM tombstones WHERE conversation = ?1";
pub(crate) const SUM_UNREAD: &str = "SELECT sum(unread) FROM conversations";
pub(crate) const EACH_UNREAD: &str = "SELECT unread FROM conversations";

fn prepare<'c>(
    conn: &'c Connection,
    sql: &str,
) -> Result<rusqlite::CachedStatement<'c>, StorageError> {
    conn.prepare_cached(sql)
        .map_err(|e| storage_error(e, "preparing a query"))
}

/// Runs `stmt` and decodes every row; rusqlite's `query_map` would force decode errors into
/// rusqlite's error type, so the rows are walked by hand.
fn collect<T>(
    conn: &Connection,
    sql: &str,
    params: impl rusqlite::Params,
    decode: impl Fn(&rusqlite::Row<'_>) -> Result<T, StorageError>,
) -> Result<Vec<T>, StorageError> {
    let mut stmt = prepare(conn, sql)?;
    let mut rows = stmt
        .query(params)
        .map_err(|e| storage_error(e, "running a query"))?;
    let mut out = Vec::new();
    while let Some(row) = rows.next().map_err(|e| storage_error(e, "reading rows"))? {
        out.push(decode(row)?);
    }
    Ok(out)
}

fn first<T>(
    conn: &Connection,
    sql: &str,
    params: impl rusqlite::Params,
    decode: impl Fn(&rusqlite::Row<'_>) -> Result<T, StorageError>,
) -> Result<Option<T>, StorageError> {
    let mut stmt = prepare(conn, sql)?;
    let mut rows = stmt
        .query(params)
        .map_err(|e| storage_error(e, "running a query"))?;
    match rows.next().map_err(|e| storage_error(e, "reading rows"))? {
        Some(row) => decode(row).map(Some),
        None => Ok(None),
    }
}

/// [`tidemark_engine::Storage::load_snapshot`]: every conversation (by id), the outbox
/// (oldest first) and the pending changes (by conversation and seq), read in one transaction
/// so they agree with each other even if another connection writes.
pub(crate) fn load_snapshot(conn: &Connection) -> Result<SyncSnapshot, StorageError> {
    let tx = Transaction::new_unchecked(conn, TransactionBehavior::Deferred)
        .map_err(|e| storage_error(e, "starting a read"))?;
    // One pass in rowid order (the table's own b-tree), then a sort in memory: walking the id
    // index instead would cost a row lookup per conversation.
    let mut conversations = collect(&tx, ALL_CONVERSATIONS, [], decode_conversation)?;
    conversations.sort_unstable_by(|a, b| a.id.cmp(&b.id));
    let outbox = collect(&tx, OUTBOX, [], decode_outbox)?;
    let pending_changes: Vec<PendingChange> =
        collect(&tx, PENDING_CHANGES, [], decode_pending_change)?;
    let sync_token = first(&tx, SYNC_TOKEN, [], |row| {
        row.get::<_, String>(0)
            .map(SyncToken)
            .map_err(|e| storage_error(e, "reading the sync token"))
    })?;
    // Nothing was written: ending the read by rollback or commit is the same.
    drop(tx);
    Ok(SyncSnapshot {
        conversations,
        outbox,
        pending_changes,
        sync_token,
    })
}

/// [`tidemark_engine::Storage::conversation`].
pub(crate) fn conversation(
    conn: &Connection,
    id: &ConversationId,
) -> Result<Option<Conversation>, StorageError> {
    first(conn, CONVERSATION, [&id.0], decode_conversation)
}

/// [`tidemark_engine::Storage::conversations_page`].
pub(crate) fn conversations_page(
    conn: &Connection,
    after: Option<ConversationCursor>,
    n: usize,
) -> Result<Vec<Conversation>, StorageError> {
    if n == 0 {
        return Ok(Vec::new());
    }
    let Some(cursor) = after else {
        return collect(conn, LIST_FIRST, [limit(n)], decode_conversation);
    };
    let Ok(activity) = i64::try_from(cursor.last_activity.0) else {
        // The cursor is above every storable activity: every row comes after it.
        return collect(conn, LIST_FIRST, [limit(n)], decode_conversation);
    };
    let mut out = collect(
        conn,
        LIST_SAME_ACTIVITY,
        params![activity, cursor.id.0, limit(n)],
        decode_conversation,
    )?;
    if out.len() < n {
        let rest = limit(n - out.len());
        out.extend(collect(
            conn,
            LIST_OLDER,
            params![activity, rest],
            decode_conversation,
        )?);
    }
    Ok(out)
}

/// [`tidemark_engine::Storage::messages_page`].
pub(crate) fn messages_page(
    conn: &Connection,
    conversation: &ConversationId,
    anchor: Option<Seq>,
    direction: Direction,
    n: usize,
) -> Result<Vec<Message>, StorageError> {
    if n == 0 {
        return Ok(Vec::new());
    }
    let conv = &conversation.0;
    // An anchor above i64::MAX is beyond every stored seq: "before" it is everything and
    // "after" it nothing, exactly as the u64 comparison says.
    let anchor = anchor.map(|a| i64::try_from(a.0).ok());
    match (direction, anchor) {
        (Direction::Before, Some(Some(a))) => newest_first(collect(
            conn,
            MESSAGES_BEFORE,
            params![conv, a, limit(n)],
            decode_message,
        )?),
        (Direction::Before, None | Some(None)) => newest_first(collect(
            conn,
            MESSAGES_NEWEST,
            params![conv, limit(n)],
            decode_message,
        )?),
        (Direction::After, Some(Some(a))) => collect(
            conn,
            MESSAGES_AFTER,
            params![conv, a, limit(n)],
            decode_message,
        ),
        (Direction::After, Some(None)) => Ok(Vec::new()),
        (Direction::After, None) => collect(
            conn,
            MESSAGES_OLDEST,
            params![conv, limit(n)],
            decode_message,
        ),
    }
}

/// A "before" page is read newest first (to stop at the limit) and returned ascending.
fn newest_first(mut page: Vec<Message>) -> Result<Vec<Message>, StorageError> {
    page.reverse();
    Ok(page)
}

/// [`tidemark_engine::Storage::message_by_client_id`].
pub(crate) fn message_by_client_id(
    conn: &Connection,
    conversation: &ConversationId,
    sender: &UserId,
    client_msg_id: &ClientMsgId,
) -> Result<Option<Message>, StorageError> {
    first(
        conn,
        MESSAGE_BY_CLIENT_ID,
        [&conversation.0, &sender.0, &client_msg_id.0],
        decode_message,
    )
}

/// [`tidemark_engine::Storage::unsent_messages`].
pub(crate) fn unsent_messages(
    conn: &Connection,
    conversation: &ConversationId,
) -> Result<Vec<Message>, StorageError> {
    collect(conn, UNSENT, [&conversation.0], decode_message)
}

/// [`tidemark_engine::Storage::total_unread`], saturating like the memory store.
pub(crate) fn total_unread(conn: &Connection) -> Result<u64, StorageError> {
    // SQLite's sum() is exact until it overflows i64, when it fails; only then is the slow,
    // saturating walk needed.
    let sum: Result<Option<i64>, _> = prepare(conn, SUM_UNREAD)?.query_row([], |r| r.get(0));
    match sum {
        Ok(Some(v)) if v >= 0 => Ok(v.unsigned_abs()),
        Ok(None) => Ok(0),
        _ => {
            let each = collect(conn, EACH_UNREAD, [], |row| {
                let v: i64 = row.get(0).map_err(|e| storage_error(e, "reading unread"))?;
                u64::try_from(v).map_err(|_| {
                    super::error::corrupt(format!("conversations.unread is negative: {v}"))
                })
            })?;
            Ok(each.into_iter().fold(0u64, u64::saturating_add))
        }
    }
}

/// [`tidemark_engine::Storage::outbox`].
pub(crate) fn outbox(conn: &Connection) -> Result<Vec<OutboxEntry>, StorageError> {
    collect(conn, OUTBOX, [], decode_outbox)
}

/// [`tidemark_engine::Storage::tombstones`].
pub(crate) fn tombstones(
    conn: &Connection,
    conversation: &ConversationId,
) -> Result<SeqRanges, StorageError> {
    Ok(
        first(conn, TOMBSTONES, [&conversation.0], decode_tombstones)?
            .map(|(_, ranges)| ranges)
            .unwrap_or_default(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sql::migrations::migrate;

    /// The plan's detail lines, joined.
    fn plan(conn: &Connection, sql: &str, params: &[&dyn rusqlite::ToSql]) -> String {
        let mut stmt = conn.prepare(&format!("EXPLAIN QUERY PLAN {sql}")).unwrap();
        let rows = stmt
            .query_map(params, |r| r.get::<_, String>(3))
            .unwrap()
            .collect::<Result<Vec<_>, _>>()
            .unwrap();
        rows.join(" | ")
    }

    /// The queries an app runs per screen seek an index and never sort: no full scan of a
    /// table, no temporary b-tree. (The load and integrity queries read everything anyway.)
    #[test]
    fn page_queries_use_indexes() {
        let conn = Connection::open_in_memory().unwrap();
        migrate(&conn).unwrap();
        // As `SqliteStorage` runs them.
        conn.set_db_config(
            rusqlite::config::DbConfig::SQLITE_DBCONFIG_ENABLE_QPSG,
            true,
        )
        .unwrap();
        let (n, a, c, s) = (&10i64 as &dyn rusqlite::ToSql, &5i64, &"c", &3i64);
        let cases: [(&str, Vec<&dyn rusqlite::ToSql>, &str); 10] = [
            (CONVERSATION, vec![c], "SEARCH conversations USING INDEX"),
            (LIST_FIRST, vec![n], "SCAN conversations USING INDEX conversations_by_activity"),
            (
                LIST_SAME_ACTIVITY,
                vec![a, c, n],
                "SEARCH conversations USING INDEX conversations_by_activity (last_activity=? AND id>?)",
            ),
            (
                LIST_OLDER,
                vec![a, n],
                "SEARCH conversations USING INDEX conversations_by_activity (last_activity<?)",
            ),
            (MESSAGES_BEFORE, vec![c, s, n], "SEARCH messages USING INDEX"),
            (MESSAGES_NEWEST, vec![c, n], "SEARCH messages USING INDEX"),
            (MESSAGES_AFTER, vec![c, s, n], "SEARCH messages USING INDEX"),
            (MESSAGES_OLDEST, vec![c, n], "SEARCH messages USING INDEX"),
            (MESSAGE_BY_CLIENT_ID, vec![c, c, c], "SEARCH messages USING INDEX sqlite_autoindex_messages_1 (conversation_key=? AND sender=? AND client_msg_id=?)"),
            // Unsent rows are few (the outbox): found by the seq index, then sorted.
            (UNSENT, vec![c], "SEARCH messages USING INDEX sqlite_autoindex_messages_2 (conversation_key=? AND seq=?)"),
        ];
        // Stores never run ANALYZE, so the plans without statistics are the ones that count;
        // with statistics of a large store they must stay the same.
        for stats in [false, true] {
            if stats {
                conn.execute_batch(
                    "ANALYZE; \
                     INSERT INTO sqlite_stat1 VALUES \
                       ('conversations', 'conversations_by_activity', '100000 2 1'), \
                       ('conversations', 'sqlite_autoindex_conversations_1', '100000 1'), \
                       ('messages', 'sqlite_autoindex_messages_1', '1000000 100 2 1'), \
                       ('messages', 'sqlite_autoindex_messages_2', '1000000 100 1'), \
                               ('outbox', 'outbox_by_age', '10 1 1'); \
                     ANALYZE sqlite_schema;",
                )
                .unwrap();
            }
            for (sql, params, expected) in &cases {
                let got = plan(&conn, sql, params);
                assert!(
                    got.starts_with(expected),
                    "stats {stats}: {sql}\n  plan: {got}\n  wanted: {expected}"
                );
                if *sql != UNSENT {
                    assert!(!got.contains("TEMP B-TREE"), "{sql} sorts: {got}");
                }
            }
            let got = plan(&conn, OUTBOX, &[]);
            assert!(!got.contains("TEMP B-TREE"), "outbox sorts: {got}");
        }
    }
}
