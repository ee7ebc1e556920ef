//! Values in and out of columns, and rusqlite's errors as [`ServerStoreError`]s.
//!
//! Decoding never trusts the file: a negative seq, an unknown kind name or a hash of the wrong
//! length is [`ServerStoreError::Corrupt`], never a panic.

use rusqlite::{ErrorCode, Row};
use tidemark_engine::{ContentKind, ConversationId, ConversationKind, Seq, ServerMessage};

use crate::ServerStoreError;

/// Maps a rusqlite error by SQLite's primary result code, keeping it as the source.
pub(super) fn backend(e: rusqlite::Error, doing: &str) -> ServerStoreError {
    if matches!(
        e.sqlite_error_code(),
        Some(ErrorCode::NotADatabase | ErrorCode::DatabaseCorrupt)
    ) {
        return ServerStoreError::Corrupt {
            detail: format!("{doing}: {e}"),
            source: Some(Box::new(e)),
        };
    }
    match e {
        // A column of the wrong type or text that is not UTF-8 can only come from a damaged or
        // foreign file: the tables are STRICT and every write is ours.
        rusqlite::Error::FromSqlConversionFailure(..)
        | rusqlite::Error::InvalidColumnType(..)
        | rusqlite::Error::IntegralValueOutOfRange(..)
        | rusqlite::Error::Utf8Error(..) => ServerStoreError::Corrupt {
            detail: format!("{doing}: {e}"),
            source: Some(Box::new(e)),
        },
        e => ServerStoreError::Backend {
            detail: format!("{doing}: {e}"),
            source: Some(Box::new(e)),
        },
    }
}

/// A damaged value, found while decoding.
pub(super) fn corrupt(detail: impl Into<String>) -> ServerStoreError {
    ServerStoreError::Corrupt {
        detail: detail.into(),
        source: None,
    }
}

/// A u64 the store never compares in SQL (timestamps, read seqs, edit targets), stored bit for
/// bit so that every value round-trips, `u64::MAX` included.
pub(super) fn bits(v: u64) -> i64 {
    v.cast_signed()
}

/// The inverse of [`bits`].
pub(super) fn unbits(v: i64) -> u64 {
    v.cast_unsigned()
}

/// An assigned seq as stored: seqs grow by one per append, so one above `i64::MAX` cannot
/// happen; if it did, the call fails instead of storing it out of order.
pub(super) fn seq_col(seq: Seq) -> Result<i64, ServerStoreError> {
    i64::try_from(seq.0).map_err(|_| ServerStoreError::Backend {
        detail: format!("seq {} is above the largest seq SQLite stores", seq.0),
        source: None,
    })
}

/// A seq bound of a query: clamped, which is exact because no stored seq exceeds `i64::MAX`.
pub(super) fn bound(seq: Seq) -> i64 {
    i64::try_from(seq.0).unwrap_or(i64::MAX)
}

/// A page size as a LIMIT.
pub(super) fn limit(n: usize) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

/// A stored seq back: negative only in a damaged file.
pub(super) fn seq_from(v: i64, what: &str) -> Result<Seq, ServerStoreError> {
    u64::try_from(v)
        .map(Seq)
        .map_err(|_| corrupt(format!("{what} is negative ({v})")))
}

pub(super) fn kind_col(kind: ConversationKind) -> &'static str {
    match kind {
        ConversationKind::Direct => "direct",
        ConversationKind::Group => "group",
    }
}

pub(super) fn kind_from(name: &str) -> Result<ConversationKind, ServerStoreError> {
    match name {
        "direct" => Ok(ConversationKind::Direct),
        "group" => Ok(ConversationKind::Group),
        other => Err(corrupt(format!("unknown conversation kind {other:?}"))),
    }
}

/// A [`ContentKind`] as its three columns: name, custom name, target seq.
pub(super) fn content_kind_cols(kind: &ContentKind) -> (&'static str, Option<&str>, Option<i64>) {
    match kind {
        ContentKind::Text => ("text", None, None),
        ContentKind::Image => ("image", None, None),
        ContentKind::File => ("file", None, None),
        ContentKind::Custom(name) => ("custom", Some(name.as_str()), None),
        ContentKind::Edit { target } => ("edit", None, Some(bits(target.0))),
        ContentKind::Revoke { target } => ("revoke", None, Some(bits(target.0))),
    }
}

fn content_kind_from(
    kind: &str,
    name: Option<String>,
    target: Option<i64>,
) -> Result<ContentKind, ServerStoreError> {
    let target = |what: &str| {
        target
            .map(|t| Seq(unbits(t)))
            .ok_or_else(|| corrupt(format!("an {what} message has no target seq")))
    };
    Ok(match kind {
        "text" => ContentKind::Text,
        "image" => ContentKind::Image,
        "file" => ContentKind::File,
        "custom" => {
            ContentKind::Custom(name.ok_or_else(|| corrupt("a custom message has no kind name"))?)
        }
        "edit" => ContentKind::Edit {
            target: target("edit")?,
        },
        "revoke" => ContentKind::Revoke {
            target: target("revoke")?,
        },
        other => return Err(corrupt(format!("unknown message kind {other:?}"))),
    })
}

/// The message columns every message query selects, in the order [`message_from`] reads.
pub(super) const MESSAGE_COLUMNS: &str =
    "seq, client_msg_id, sender, kind, kind_name, target_seq, content, created_at, server_time";

/// Decodes a row of [`MESSAGE_COLUMNS`].
pub(super) fn message_from(
    conversation: &ConversationId,
    row: &Row<'_>,
) -> Result<ServerMessage, ServerStoreError> {
    let get_err = |e| backend(e, "reading a message");
    let kind: String = row.get(3).map_err(get_err)?;
    Ok(ServerMessage {
        conversation: conversation.clone(),
        seq: seq_from(row.get(0).map_err(get_err)?, "messages.seq")?,
        client_msg_id: row.get::<_, String>(1).map_err(get_err)?.into(),
        sender: row.get::<_, String>(2).map_err(get_err)?.into(),
        kind: content_kind_from(
            &kind,
            row.get(4).map_err(get_err)?,
            row.get(5).map_err(get_err)?,
        )?,
        content: row.get(6).map_err(get_err)?,
        created_at: tidemark_engine::Timestamp(unbits(row.get(7).map_err(get_err)?)),
        server_time: tidemark_engine::Timestamp(unbits(row.get(8).map_err(get_err)?)),
    })
}
