//! Encoding of model values into columns and back.
//!
//! Decoding never trusts the file: every value is checked (ranges sorted and disjoint, known
//! kind and status names, non-negative integers, the columns of a variant present) and a bad
//! one is a [`StorageError::Corrupt`] naming the table, column and row, never a panic.

use rusqlite::{Row, ToSql};
use tidemark_engine::{
    ClientMsgId, ContentKind, Conversation, ConversationId, ConversationKind, LatestMessage,
    Message, MessageStatus, OutboxEntry, PendingChange, Seq, SeqRange, SeqRanges, StorageError,
    Timestamp, UserId,
};

use super::error::{corrupt, storage_error};

/// A u64 as SQLite's signed integer. Values above `i64::MAX` cannot be stored in order, so
/// the batch carrying one is rejected (no real seq, timestamp or count gets there).
pub(crate) fn int(v: u64, what: &str) -> Result<i64, StorageError> {
    i64::try_from(v).map_err(|_| {
        StorageError::Rejected(format!(
            "{what} {v} is above the largest value SQLite stores ({})",
            i64::MAX
        ))
    })
}

/// A u64 bound for a query: values above `i64::MAX` are clamped, which is exact for the
/// comparisons it is used in because no stored value exceeds `i64::MAX`.
pub(crate) fn bound(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

/// A page size as a SQL LIMIT.
pub(crate) fn limit(n: usize) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

/// Where a decoded value came from, for error messages: a table and the row's key (one or
/// two parts). Formatted only when something is wrong, so decoding allocates nothing for it.
#[derive(Clone, Copy)]
pub(crate) struct At<'a> {
    pub table: &'static str,
    pub key: &'a str,
    pub sub: Option<&'a str>,
}

impl At<'_> {
    fn bad(&self, column: &str, why: impl std::fmt::Display) -> StorageError {
        let key = match self.sub {
            Some(sub) => format!("{}/{sub}", self.key),
            None => self.key.to_owned(),
        };
        corrupt(format!(
            "{}.{column} of row {key:?} is invalid: {why}",
            self.table
        ))
    }
}

fn get<T: rusqlite::types::FromSql>(row: &Row<'_>, idx: usize) -> Result<T, StorageError> {
    row.get(idx).map_err(|e| storage_error(e, "reading a row"))
}

/// A text column borrowed from the row, for names that are matched, not kept.
fn text<'r>(row: &'r Row<'_>, idx: usize) -> Result<&'r str, StorageError> {
    row.get_ref(idx)
        .and_then(|v| v.as_str().map_err(Into::into))
        .map_err(|e| storage_error(e, "reading a row"))
}

fn uint(row: &Row<'_>, idx: usize, at: At<'_>, column: &str) -> Result<u64, StorageError> {
    let v: i64 = get(row, idx)?;
    u64::try_from(v).map_err(|_| at.bad(column, format!("negative value {v}")))
}

fn opt_uint(
    row: &Row<'_>,
    idx: usize,
    at: At<'_>,
    column: &str,
) -> Result<Option<u64>, StorageError> {
    let v: Option<i64> = get(row, idx)?;
    v.map(|v| u64::try_from(v).map_err(|_| at.bad(column, format!("negative value {v}"))))
        .transpose()
}

// --- seq ranges ------------------------------------------------------------------------------

/// `[[start,end],...]`: short, JSON (readable in the sqlite3 shell, usable by SQLite's json
/// functions), and quick to parse for 100k conversations at start ([`decode_ranges`]).
pub(crate) fn encode_ranges(set: &SeqRanges) -> String {
    use std::fmt::Write as _;
    let mut out = String::with_capacity(2 + set.ranges().len() * 12);
    out.push('[');
    for (i, r) in set.ranges().iter().enumerate() {
        let sep = if i > 0 { "," } else { "" };
        // Writing to a String cannot fail.
        let _ = write!(out, "{sep}[{},{}]", r.start.0, r.end.0);
    }
    out.push(']');
    out
}

/// Parses [`encode_ranges`]' form, checking the set's invariant.
///
/// A small parser of exactly that form (no whitespace, decimal u64s) rather than serde_json:
/// the snapshot decodes three sets per conversation, and this is several times faster. The
/// text stays valid JSON for SQLite's json functions and the sqlite3 shell.
pub(crate) fn decode_ranges(
    text: &str,
    at: At<'_>,
    column: &str,
) -> Result<SeqRanges, StorageError> {
    let bad = |why: &str| at.bad(column, format!("{why} in {text:?}"));
    let bytes = text.as_bytes();
    let mut pos = 0;
    let expect = |pos: &mut usize, b: u8| {
        if bytes.get(*pos) == Some(&b) {
            *pos += 1;
            true
        } else {
            false
        }
    };
    let number = |pos: &mut usize| -> Option<u64> {
        let start = *pos;
        let mut v: u64 = 0;
        while let Some(d) = bytes.get(*pos).filter(|b| b.is_ascii_digit()) {
            v = v.checked_mul(10)?.checked_add(u64::from(d - b'0'))?;
            *pos += 1;
        }
        (*pos > start).then_some(v)
    };
    if !expect(&mut pos, b'[') {
        return Err(bad("expected '['"));
    }
    let mut ranges = Vec::new();
    if !expect(&mut pos, b']') {
        loop {
            if !expect(&mut pos, b'[') {
                return Err(bad("expected '['"));
            }
            let start = number(&mut pos).ok_or_else(|| bad("expected a seq"))?;
            if !expect(&mut pos, b',') {
                return Err(bad("expected ','"));
            }
            let end = number(&mut pos).ok_or_else(|| bad("expected a seq"))?;
            if !expect(&mut pos, b']') {
                return Err(bad("expected ']'"));
            }
            ranges.push(SeqRange {
                start: Seq(start),
                end: Seq(end),
            });
            if expect(&mut pos, b']') {
                break;
            }
            if !expect(&mut pos, b',') {
                return Err(bad("expected ',' or ']'"));
            }
        }
    }
    if pos != bytes.len() {
        return Err(bad("trailing characters"));
    }
    SeqRanges::try_from(ranges).map_err(|e| at.bad(column, e))
}

fn ranges_col(
    row: &Row<'_>,
    idx: usize,
    at: At<'_>,
    column: &str,
) -> Result<SeqRanges, StorageError> {
    decode_ranges(text(row, idx)?, at, column)
}

// --- enums -----------------------------------------------------------------------------------

/// A [`ContentKind`] as three columns: name, custom name, target seq.
pub(crate) struct KindCols<'a> {
    pub kind: &'static str,
    pub name: Option<&'a str>,
    pub target: Option<i64>,
}

pub(crate) fn encode_kind(kind: &ContentKind) -> Result<KindCols<'_>, StorageError> {
    Ok(match kind {
        ContentKind::Text => KindCols {
            kind: "text",
            name: None,
            target: None,
        },
        ContentKind::Image => KindCols {
            kind: "image",
            name: None,
            target: None,
        },
        ContentKind::File => KindCols {
            kind: "file",
            name: None,
            target: None,
        },
        ContentKind::Custom(name) => KindCols {
            kind: "custom",
            name: Some(name),
            target: None,
        },
        ContentKind::Edit { target } => KindCols {
            kind: "edit",
            name: None,
            target: Some(int(target.0, "edit target seq")?),
        },
        ContentKind::Revoke { target } => KindCols {
            kind: "revoke",
            name: None,
            target: Some(int(target.0, "revoke target seq")?),
        },
    })
}

/// Reads the three kind columns starting at `idx`; `latest` names them `latest_*`.
fn kind_cols(
    row: &Row<'_>,
    idx: usize,
    at: At<'_>,
    latest: bool,
) -> Result<ContentKind, StorageError> {
    let (column, target_column) = if latest {
        ("latest_kind", "latest_target_seq")
    } else {
        ("kind", "target_seq")
    };
    let kind = text(row, idx)?;
    let name: Option<String> = get(row, idx + 1)?;
    let target = opt_uint(row, idx + 2, at, target_column)?;
    match (kind, name, target) {
        ("text", None, None) => Ok(ContentKind::Text),
        ("image", None, None) => Ok(ContentKind::Image),
        ("file", None, None) => Ok(ContentKind::File),
        ("custom", Some(name), None) => Ok(ContentKind::Custom(name)),
        ("edit", None, Some(t)) => Ok(ContentKind::Edit { target: Seq(t) }),
        ("revoke", None, Some(t)) => Ok(ContentKind::Revoke { target: Seq(t) }),
        (k, name, target) => Err(at.bad(
            column,
            format!("kind {k:?} with name {name:?} and target {target:?}"),
        )),
    }
}

pub(crate) fn encode_conversation_kind(kind: ConversationKind) -> &'static str {
    match kind {
        ConversationKind::Direct => "direct",
        ConversationKind::Group => "group",
    }
}

/// A [`MessageStatus`] as status and failure reason.
/// `messages.status` of a sent message.
const SENT: &str = "sent";

pub(crate) fn encode_status(status: &MessageStatus) -> (&'static str, Option<&str>) {
    match status {
        MessageStatus::Pending => ("pending", None),
        MessageStatus::Sent => (SENT, None),
        MessageStatus::Failed { reason } => ("failed", Some(reason)),
    }
}

// --- rows ------------------------------------------------------------------------------------

/// Column list of [`decode_conversation`], as a literal so statements can be `concat!`ed.
macro_rules! conversation_columns {
    () => {
        "id, kind, server_max_seq, server_min_seq, held, read_seq, not_unread, unread, \
         last_activity, deleted, latest_seq, latest_client_msg_id, latest_sender, latest_kind, \
         latest_kind_name, latest_target_seq, latest_preview, latest_time"
    };
}
pub(crate) use conversation_columns;

/// Decodes a row selected with [`conversation_columns!`].
pub(crate) fn decode_conversation(row: &Row<'_>) -> Result<Conversation, StorageError> {
    let id: String = get(row, 0)?;
    let at = At {
        table: "conversations",
        key: &id,
        sub: None,
    };
    let kind = match text(row, 1)? {
        "direct" => ConversationKind::Direct,
        "group" => ConversationKind::Group,
        other => return Err(at.bad("kind", format!("unknown kind {other:?}"))),
    };
    let latest_id: Option<String> = get(row, 11)?;
    let latest = match latest_id {
        None => {
            // Every latest_* column is NULL together; anything else is damage.
            let sender: Option<String> = get(row, 12)?;
            let kind: Option<String> = get(row, 13)?;
            if sender.is_some() || kind.is_some() {
                return Err(at.bad("latest_client_msg_id", "NULL beside a latest message"));
            }
            None
        }
        Some(client_msg_id) => {
            let sender: Option<String> = get(row, 12)?;
            let preview: Option<Vec<u8>> = get(row, 16)?;
            let time = opt_uint(row, 17, at, "latest_time")?;
            let (Some(sender), Some(preview), Some(time)) = (sender, preview, time) else {
                return Err(at.bad("latest_*", "a latest message with missing columns"));
            };
            Some(LatestMessage {
                seq: opt_uint(row, 10, at, "latest_seq")?.map(Seq),
                client_msg_id: ClientMsgId(client_msg_id),
                sender: UserId(sender),
                kind: kind_cols(row, 13, at, true)?,
                preview,
                time: Timestamp(time),
            })
        }
    };
    Ok(Conversation {
        kind,
        server_max_seq: Seq(uint(row, 2, at, "server_max_seq")?),
        server_min_seq: Seq(uint(row, 3, at, "server_min_seq")?),
        held: ranges_col(row, 4, at, "held")?,
        read_seq: Seq(uint(row, 5, at, "read_seq")?),
        not_unread: ranges_col(row, 6, at, "not_unread")?,
        unread: uint(row, 7, at, "unread")?,
        last_activity: Timestamp(uint(row, 8, at, "last_activity")?),
        deleted: ranges_col(row, 9, at, "deleted")?,
        latest,
        id: ConversationId(id),
    })
}

/// Column list of [`decode_message`].
macro_rules! message_columns {
    () => {
        "conversation, seq, client_msg_id, sender, kind, kind_name, target_seq, content, \
         created_at, server_time, status, failure_reason, edit_seq, revoked"
    };
}
pub(crate) use message_columns;

/// The key of the conversation whose id is the parameter `$param` (`"?1"`), as a constant
/// subquery that SQLite runs once per execution: for statements that name a conversation by
/// id and seek the message indexes (keyed by `conversation_key` since migration 005). An id
/// without a key has no messages, and the subquery's NULL matches no row.
macro_rules! key_of {
    ($param:literal) => {
        concat!(
            "(SELECT key FROM conversation_keys WHERE id = ",
            $param,
            ")"
        )
    };
}
pub(crate) use key_of;

/// Decodes a row selected with [`message_columns!`].
pub(crate) fn decode_message(row: &Row<'_>) -> Result<Message, StorageError> {
    let conversation: String = get(row, 0)?;
    let client_msg_id: String = get(row, 2)?;
    let at = At {
        table: "messages",
        key: &conversation,
        sub: Some(&client_msg_id),
    };
    let reason: Option<String> = get(row, 11)?;
    let status = match (text(row, 10)?, reason) {
        ("pending", None) => MessageStatus::Pending,
        ("sent", None) => MessageStatus::Sent,
        ("failed", Some(reason)) => MessageStatus::Failed { reason },
        (s, r) => return Err(at.bad("status", format!("status {s:?} with failure reason {r:?}"))),
    };
    let revoked = match get::<i64>(row, 13)? {
        0 => false,
        1 => true,
        v => return Err(at.bad("revoked", format!("{v} is not 0 or 1"))),
    };
    Ok(Message {
        seq: opt_uint(row, 1, at, "seq")?.map(Seq),
        sender: UserId(get(row, 3)?),
        kind: kind_cols(row, 4, at, false)?,
        content: get(row, 7)?,
        created_at: Timestamp(uint(row, 8, at, "created_at")?),
        server_time: opt_uint(row, 9, at, "server_time")?.map(Timestamp),
        status,
        edit_seq: opt_uint(row, 12, at, "edit_seq")?.map(Seq),
        revoked,
        conversation: ConversationId(conversation),
        client_msg_id: ClientMsgId(client_msg_id),
    })
}

/// A message's columns, converted and borrowed, bound in [`message_columns!`] order.
pub(crate) struct MessageRow<'a> {
    m: &'a Message,
    seq: Option<i64>,
    kind: KindCols<'a>,
    status: &'static str,
    reason: Option<&'a str>,
    created_at: i64,
    server_time: Option<i64>,
    edit_seq: Option<i64>,
}

impl<'a> MessageRow<'a> {
    pub(crate) fn new(m: &'a Message) -> Result<Self, StorageError> {
        let (status, reason) = encode_status(&m.status);
        Ok(Self {
            m,
            seq: opt_int(m.seq.map(|s| s.0), "seq")?,
            kind: encode_kind(&m.kind)?,
            status,
            reason,
            created_at: int(m.created_at.0, "created_at")?,
            server_time: opt_int(m.server_time.map(|t| t.0), "server_time")?,
            edit_seq: opt_int(m.edit_seq.map(|s| s.0), "edit_seq")?,
        })
    }

    /// The columns after the conversation's key (`key`), bound as `?1` (statements that
    /// write a message name `conversation_key` before [`message_columns!`]).
    pub(crate) fn keyed_params<'s>(&'s self, key: &'s i64) -> [&'s dyn ToSql; 15] {
        let mut params: [&dyn ToSql; 15] = [key; 15];
        params[1] = &self.m.conversation.0;
        params[2..].copy_from_slice(&self.columns_after_conversation());
        params
    }

    /// The columns after the conversation (`seq` to `revoked`, in [`message_columns!`]
    /// order): a multi-row insert binds the conversation and its key once for every row.
    pub(crate) fn columns_after_conversation(&self) -> [&dyn ToSql; 13] {
        [
            &self.seq,
            &self.m.client_msg_id.0,
            &self.m.sender.0,
            &self.kind.kind,
            &self.kind.name,
            &self.kind.target,
            &self.m.content,
            &self.created_at,
            &self.server_time,
            &self.status,
            &self.reason,
            &self.edit_seq,
            &self.m.revoked,
        ]
    }

    /// For a plain sent message (no kind name or target, not failed, never edited or
    /// revoked: what a sync mostly stores) the columns that vary, in [`PLAIN_MESSAGE_COLUMNS`]
    /// order; the others are the literals [`PLAIN_MESSAGE_VALUES`]. Fewer bound values per row.
    pub(crate) fn plain_columns(&self) -> Option<[&dyn ToSql; 7]> {
        let plain = self.kind.name.is_none()
            && self.kind.target.is_none()
            && self.status == SENT
            && self.reason.is_none()
            && self.edit_seq.is_none()
            && !self.m.revoked;
        plain.then_some([
            &self.seq,
            &self.m.client_msg_id.0,
            &self.m.sender.0,
            &self.kind.kind,
            &self.m.content,
            &self.created_at,
            &self.server_time,
        ])
    }
}

/// The columns [`MessageRow::plain_columns`] binds, then those it leaves to
/// [`PLAIN_MESSAGE_VALUES`].
pub(crate) const PLAIN_MESSAGE_COLUMNS: &str = "seq, client_msg_id, sender, kind, content, \
     created_at, server_time, kind_name, target_seq, status, failure_reason, edit_seq, revoked";
/// The values of a plain sent message's last six [`PLAIN_MESSAGE_COLUMNS`].
pub(crate) const PLAIN_MESSAGE_VALUES: &str = "NULL, NULL, 'sent', NULL, NULL, 0";

/// A conversation's columns, converted and borrowed, bound in [`conversation_columns!`] order.
pub(crate) struct ConversationRow<'a> {
    c: &'a Conversation,
    kind: &'static str,
    ints: [i64; 5],
    ranges: [String; 3],
    latest_seq: Option<i64>,
    latest_client_msg_id: Option<&'a str>,
    latest_sender: Option<&'a str>,
    latest_kind: Option<&'static str>,
    latest_kind_name: Option<&'a str>,
    latest_target_seq: Option<i64>,
    latest_preview: Option<&'a [u8]>,
    latest_time: Option<i64>,
}

impl<'a> ConversationRow<'a> {
    pub(crate) fn new(c: &'a Conversation) -> Result<Self, StorageError> {
        let latest = c.latest.as_ref();
        let latest_kind = latest.map(|l| encode_kind(&l.kind)).transpose()?;
        Ok(Self {
            c,
            kind: encode_conversation_kind(c.kind),
            ints: [
                int(c.server_max_seq.0, "server_max_seq")?,
                int(c.server_min_seq.0, "server_min_seq")?,
                int(c.read_seq.0, "read_seq")?,
                int(c.unread, "unread")?,
                int(c.last_activity.0, "last_activity")?,
            ],
            ranges: [
                encode_ranges(&c.held),
                encode_ranges(&c.not_unread),
                encode_ranges(&c.deleted),
            ],
            latest_seq: opt_int(latest.and_then(|l| l.seq).map(|s| s.0), "latest seq")?,
            latest_client_msg_id: latest.map(|l| l.client_msg_id.as_str()),
            latest_sender: latest.map(|l| l.sender.as_str()),
            latest_kind: latest_kind.as_ref().map(|k| k.kind),
            latest_kind_name: latest_kind.as_ref().and_then(|k| k.name),
            latest_target_seq: latest_kind.as_ref().and_then(|k| k.target),
            latest_preview: latest.map(|l| l.preview.as_slice()),
            latest_time: opt_int(latest.map(|l| l.time.0), "latest time")?,
        })
    }

    pub(crate) fn params(&self) -> [&dyn ToSql; 18] {
        [
            &self.c.id.0,
            &self.kind,
            &self.ints[0],
            &self.ints[1],
            &self.ranges[0],
            &self.ints[2],
            &self.ranges[1],
            &self.ints[3],
            &self.ints[4],
            &self.ranges[2],
            &self.latest_seq,
            &self.latest_client_msg_id,
            &self.latest_sender,
            &self.latest_kind,
            &self.latest_kind_name,
            &self.latest_target_seq,
            &self.latest_preview,
            &self.latest_time,
        ]
    }
}

/// Column list of [`decode_outbox`].
macro_rules! outbox_columns {
    () => {
        "client_msg_id, conversation, kind, kind_name, target_seq, content, created_at, attempts"
    };
}
pub(crate) use outbox_columns;

/// Decodes a row selected with [`outbox_columns!`].
pub(crate) fn decode_outbox(row: &Row<'_>) -> Result<OutboxEntry, StorageError> {
    let client_msg_id: String = get(row, 0)?;
    let at = At {
        table: "outbox",
        key: &client_msg_id,
        sub: None,
    };
    let attempts = uint(row, 7, at, "attempts")?;
    Ok(OutboxEntry {
        conversation: ConversationId(get(row, 1)?),
        kind: kind_cols(row, 2, at, false)?,
        content: get(row, 5)?,
        created_at: Timestamp(uint(row, 6, at, "created_at")?),
        attempts: u32::try_from(attempts)
            .map_err(|_| at.bad("attempts", format!("{attempts} exceeds u32")))?,
        client_msg_id: ClientMsgId(client_msg_id),
    })
}

/// An outbox entry's columns, bound in [`outbox_columns!`] order.
pub(crate) struct OutboxRow<'a> {
    e: &'a OutboxEntry,
    kind: KindCols<'a>,
    created_at: i64,
}

impl<'a> OutboxRow<'a> {
    pub(crate) fn new(e: &'a OutboxEntry) -> Result<Self, StorageError> {
        Ok(Self {
            e,
            kind: encode_kind(&e.kind)?,
            created_at: int(e.created_at.0, "outbox created_at")?,
        })
    }

    pub(crate) fn params(&self) -> [&dyn ToSql; 8] {
        [
            &self.e.client_msg_id.0,
            &self.e.conversation.0,
            &self.kind.kind,
            &self.kind.name,
            &self.kind.target,
            &self.e.content,
            &self.created_at,
            &self.e.attempts,
        ]
    }
}

/// Column list of [`decode_pending_change`].
macro_rules! pending_change_columns {
    () => {
        "conversation, seq, target, kind, kind_name, target_seq, content, sender"
    };
}
pub(crate) use pending_change_columns;

/// Decodes a row selected with [`pending_change_columns!`].
pub(crate) fn decode_pending_change(row: &Row<'_>) -> Result<PendingChange, StorageError> {
    let conversation: String = get(row, 0)?;
    let seq: i64 = get(row, 1)?;
    let seq_text = seq.to_string();
    let at = At {
        table: "pending_changes",
        key: &conversation,
        sub: Some(&seq_text),
    };
    Ok(PendingChange {
        seq: Seq(uint(row, 1, at, "seq")?),
        target: Seq(uint(row, 2, at, "target")?),
        kind: kind_cols(row, 3, at, false)?,
        content: get(row, 6)?,
        sender: UserId(get(row, 7)?),
        conversation: ConversationId(conversation),
    })
}

/// A pending change's columns, bound in [`pending_change_columns!`] order.
pub(crate) struct PendingChangeRow<'a> {
    c: &'a PendingChange,
    seq: i64,
    target: i64,
    kind: KindCols<'a>,
}

impl<'a> PendingChangeRow<'a> {
    pub(crate) fn new(c: &'a PendingChange) -> Result<Self, StorageError> {
        Ok(Self {
            c,
            seq: int(c.seq.0, "pending change seq")?,
            target: int(c.target.0, "pending change target")?,
            kind: encode_kind(&c.kind)?,
        })
    }

    pub(crate) fn params(&self) -> [&dyn ToSql; 8] {
        [
            &self.c.conversation.0,
            &self.seq,
            &self.target,
            &self.kind.kind,
            &self.kind.name,
            &self.kind.target,
            &self.c.content,
            &self.c.sender.0,
        ]
    }
}

/// Decodes a tombstones row: (conversation, ranges).
pub(crate) fn decode_tombstones(
    row: &Row<'_>,
) -> Result<(ConversationId, SeqRanges), StorageError> {
    let conversation: String = get(row, 0)?;
    let ranges = ranges_col(
        row,
        1,
        At {
            table: "tombstones",
            key: &conversation,
            sub: None,
        },
        "ranges",
    )?;
    Ok((ConversationId(conversation), ranges))
}

fn opt_int(v: Option<u64>, what: &str) -> Result<Option<i64>, StorageError> {
    v.map(|v| int(v, what)).transpose()
}

#[cfg(test)]
mod tests {
    use super::*;

    const AT: At<'static> = At {
        table: "t",
        key: "k",
        sub: None,
    };

    #[test]
    fn ranges_round_trip_and_reject_damage() {
        let mut set = SeqRanges::new();
        assert_eq!(encode_ranges(&set), "[]");
        set.insert_range(Seq(1), Seq(5));
        set.insert_range(Seq(9), Seq(u64::MAX));
        let text = encode_ranges(&set);
        assert_eq!(text, format!("[[1,5],[9,{}]]", u64::MAX));
        assert_eq!(decode_ranges(&text, AT, "c").unwrap(), set);
        let too_big = format!("[[1,{}0]]", u64::MAX);
        for bad in [
            "",
            "[",
            "[[1]]",
            "[[5,1]]",
            "[[1,3],[4,6]]",
            "[[3,4],[1,1]]",
            "{}",
            "[[-1,2]]",
            "[[1,2]] ",
            "[[1,2],]",
            "[[1,2]",
            "[[1,,2]]",
            "[[,2]]",
            "[]]",
            &too_big,
        ] {
            let err = decode_ranges(bad, AT, "c").unwrap_err();
            assert!(
                matches!(err, StorageError::Corrupt { .. }),
                "{bad}: {err:?}"
            );
        }
    }

    #[test]
    fn integers_above_i64_are_rejected_not_wrapped() {
        assert_eq!(int(7, "x").unwrap(), 7);
        assert!(matches!(int(u64::MAX, "x"), Err(StorageError::Rejected(_))));
        assert_eq!(bound(u64::MAX), i64::MAX);
        assert_eq!(limit(usize::MAX), i64::MAX);
    }
}
