//! [`tidemark_engine::Storage::check_integrity`]: SQLite's own check, then the memory store's
//! cross-checks in the memory store's order, so both backends name the same first problem.

use std::collections::HashMap;

use rusqlite::{Connection, Transaction, TransactionBehavior};
use tidemark_engine::{ConversationId, Seq, SeqRanges, StorageError};

use super::codec::{
    decode_conversation, decode_message, decode_outbox, decode_pending_change, decode_tombstones,
    message_columns,
};
use super::error::{corrupt, storage_error};
use super::migrations::{user_version, SCHEMA_VERSION};
use super::read::{ALL_CONVERSATIONS, OUTBOX, PENDING_CHANGES};

const ALL_TOMBSTONES: &str = "SELECT conversation, ranges FROM tombstones";
const ALL_MESSAGES: &str = concat!("SELECT ", message_columns!(), " FROM messages");
const SEQS: &str =
    "SELECT conversation, seq FROM messages WHERE seq IS NOT NULL ORDER BY conversation, seq";
// A message whose key is not its conversation's: its uniqueness was checked under another
// conversation (only damage or a bug of the write path does this).
const MISKEYED_MESSAGE: &str = "SELECT m.conversation, m.client_msg_id FROM messages m \
     WHERE m.conversation_key IS NOT \
     (SELECT k.key FROM conversation_keys k WHERE k.id = m.conversation) LIMIT 1";
// An outbox entry needs an unsent row of its conversation and client id (whatever the
// sender: the store does not know who "this device" is).
const ORPHAN_OUTBOX: &str = "SELECT o.client_msg_id FROM outbox o \
     WHERE NOT EXISTS (SELECT 1 FROM messages m WHERE m.conversation_key = \
     (SELECT key FROM conversation_keys k WHERE k.id = o.conversation) \
     AND m.seq IS NULL AND m.client_msg_id = o.client_msg_id) \
     ORDER BY o.client_msg_id LIMIT 1";

/// Checks the store; the first problem found is a [`StorageError::Corrupt`] describing it.
/// Reads everything: meant for tests and diagnostics, not for every start.
#[cfg(test)]
pub(crate) fn check(conn: &Connection) -> Result<(), StorageError> {
    check_classified(conn).map_err(|(e, _)| e)
}

/// [`check`], saying whether a problem is damage of the file (`true`: SQLite's own check,
/// rows that do not decode) or only rows that break the engine's rules between tables
/// (`false`: a message outside its held ranges, an orphan outbox entry). Only damage makes
/// the store refuse writes: the file itself is sound in the second case, and the memory
/// store, which reports the same findings, keeps taking writes too.
pub(crate) fn check_classified(conn: &Connection) -> Result<(), (StorageError, bool)> {
    // One read transaction: the cross-checks compare tables with each other.
    let tx = Transaction::new_unchecked(conn, TransactionBehavior::Deferred)
        .map_err(|e| (storage_error(e, "starting the integrity check"), false))?;
    let (held, tombstones) = damage_checks(&tx).map_err(|e| (e, true))?;
    cross_checks(&tx, &held, &tombstones).map_err(|e| (e, false))
}

type Ranges = HashMap<ConversationId, SeqRanges>;

/// SQLite's `PRAGMA quick_check`: every page and b-tree of the file is read and checked, in
/// time linear in the file's size, without the index-against-table comparison of
/// `integrity_check`. The first problems found are a [`StorageError::Corrupt`].
pub(crate) fn quick_check(conn: &Connection) -> Result<(), StorageError> {
    sqlite_check(conn, "PRAGMA quick_check(20)", "quick check")
}

fn sqlite_check(conn: &Connection, pragma: &str, name: &str) -> Result<(), StorageError> {
    let doing = format!("running the {name}");
    let mut stmt = conn.prepare(pragma).map_err(|e| storage_error(e, &doing))?;
    let problems: Vec<String> = stmt
        .query_map([], |r| r.get::<_, String>(0))
        .and_then(|rows| rows.collect())
        .map_err(|e| storage_error(e, &doing))?;
    if problems != ["ok"] {
        return Err(corrupt(format!("{name} failed: {}", problems.join("; "))));
    }
    Ok(())
}

/// SQLite's check, the version, and every row decoded; returns the held ranges and the
/// tombstones for the cross-checks.
fn damage_checks(conn: &Connection) -> Result<(Ranges, Ranges), StorageError> {
    sqlite_check(conn, "PRAGMA integrity_check(20)", "integrity check")?;
    let version = user_version(conn)?;
    if version != SCHEMA_VERSION {
        return Err(corrupt(format!(
            "schema version {version}, expected {SCHEMA_VERSION}"
        )));
    }

    // Every row decodes: bad values are found here rather than by the app.
    let mut held: HashMap<ConversationId, SeqRanges> = HashMap::new();
    each_row(conn, ALL_CONVERSATIONS, |row| {
        let c = decode_conversation(row)?;
        held.insert(c.id, c.held);
        Ok(())
    })?;
    let mut tombstones: HashMap<ConversationId, SeqRanges> = HashMap::new();
    each_row(conn, ALL_TOMBSTONES, |row| {
        let (conv, ranges) = decode_tombstones(row)?;
        tombstones.insert(conv, ranges);
        Ok(())
    })?;
    each_row(conn, ALL_MESSAGES, |row| decode_message(row).map(drop))?;
    let miskeyed: Option<(String, String)> = conn
        .prepare_cached(MISKEYED_MESSAGE)
        .and_then(|mut s| {
            let mut rows = s.query([])?;
            rows.next()?.map(|r| Ok((r.get(0)?, r.get(1)?))).transpose()
        })
        .map_err(|e| storage_error(e, "checking the message keys"))?;
    if let Some((conv, id)) = miskeyed {
        return Err(corrupt(format!(
            "{conv}: message {id} is filed under another conversation's key"
        )));
    }
    each_row(conn, OUTBOX, |row| decode_outbox(row).map(drop))?;
    each_row(conn, PENDING_CHANGES, |row| {
        decode_pending_change(row).map(drop)
    })?;
    Ok((held, tombstones))
}

fn cross_checks(conn: &Connection, held: &Ranges, tombstones: &Ranges) -> Result<(), StorageError> {
    // The memory store's cross-checks, in its order: by conversation, then seq.
    each_row(conn, SEQS, |row| {
        let conv: String = row.get(0).map_err(|e| storage_error(e, "reading a seq"))?;
        let seq: i64 = row.get(1).map_err(|e| storage_error(e, "reading a seq"))?;
        // Negative seqs failed to decode above.
        let seq = Seq(seq.unsigned_abs());
        let conv = ConversationId(conv);
        if held.get(&conv).is_none_or(|h| !h.contains(seq)) {
            return Err(corrupt(format!(
                "{conv}: message at seq {} is not within the held ranges",
                seq.0
            )));
        }
        if tombstones.get(&conv).is_some_and(|t| t.contains(seq)) {
            return Err(corrupt(format!(
                "{conv}: message at tombstoned seq {}",
                seq.0
            )));
        }
        Ok(())
    })?;
    let orphan: Option<String> = conn
        .prepare_cached(ORPHAN_OUTBOX)
        .and_then(|mut s| {
            let mut rows = s.query([])?;
            rows.next()?.map(|r| r.get(0)).transpose()
        })
        .map_err(|e| storage_error(e, "checking the outbox"))?;
    if let Some(id) = orphan {
        return Err(corrupt(format!("outbox entry {id} has no unsent row")));
    }
    Ok(())
}

fn each_row(
    conn: &Connection,
    sql: &str,
    mut f: impl FnMut(&rusqlite::Row<'_>) -> Result<(), StorageError>,
) -> Result<(), StorageError> {
    let mut stmt = conn
        .prepare_cached(sql)
        .map_err(|e| storage_error(e, "preparing the integrity check"))?;
    let mut rows = stmt
        .query([])
        .map_err(|e| storage_error(e, "running the integrity check"))?;
    while let Some(row) = rows
        .next()
        .map_err(|e| storage_error(e, "reading rows for the integrity check"))?
    {
        f(row)?;
    }
    Ok(())
}
