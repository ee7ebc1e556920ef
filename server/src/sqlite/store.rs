//! The [`ServerStore`] and [`AccountStore`] methods of [`SqliteServerStore`].
//!
//! Each method mirrors [`crate::MemoryServerStore`]'s, checks and their order
//! included, so both stores return the same errors for the same calls. Reads run directly on
//! the connection; each write runs in one transaction ([`SqliteServerStore::write`]).

use rusqlite::{params, Connection, OptionalExtension};
use tidemark_engine::{
    ClientMsgId, ConversationId, ConversationKind, DeviceId, Seq, SeqRanges, ServerMessage,
    Timestamp, UserId,
};

use super::codec::{
    backend, bits, bound, content_kind_cols, corrupt, kind_col, kind_from, limit, message_from,
    seq_col, seq_from, unbits, MESSAGE_COLUMNS,
};
use super::SqliteServerStore;
use crate::{
    AccountStore, AppendOutcome, ChangeClock, ConversationInfo, NewMessage, SentRecord,
    ServerStore, ServerStoreError, TokenHash,
};

fn user_exists(conn: &Connection, user: &UserId) -> Result<bool, ServerStoreError> {
    conn.prepare_cached("SELECT 1 FROM users WHERE id = ?1")
        .and_then(|mut st| st.exists([user.as_str()]))
        .map_err(|e| backend(e, "looking up a user"))
}

fn require_user(conn: &Connection, user: &UserId) -> Result<(), ServerStoreError> {
    if user_exists(conn, user)? {
        Ok(())
    } else {
        Err(ServerStoreError::UnknownUser(user.clone()))
    }
}

fn conversation(
    conn: &Connection,
    id: &ConversationId,
) -> Result<Option<ConversationInfo>, ServerStoreError> {
    let row = conn
        .prepare_cached(
            "SELECT kind, max_seq, min_seq, last_activity FROM conversations WHERE id = ?1",
        )
        .and_then(|mut st| {
            st.query_row([id.as_str()], |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    r.get::<_, i64>(1)?,
                    r.get::<_, i64>(2)?,
                    r.get::<_, i64>(3)?,
                ))
            })
            .optional()
        })
        .map_err(|e| backend(e, "reading a conversation"))?;
    row.map(|(kind, max_seq, min_seq, last_activity)| {
        Ok(ConversationInfo {
            id: id.clone(),
            kind: kind_from(&kind)?,
            max_seq: seq_from(max_seq, "conversations.max_seq")?,
            min_seq: seq_from(min_seq, "conversations.min_seq")?,
            last_activity: Timestamp(unbits(last_activity)),
        })
    })
    .transpose()
}

fn require_conversation(
    conn: &Connection,
    id: &ConversationId,
) -> Result<ConversationInfo, ServerStoreError> {
    conversation(conn, id)?.ok_or_else(|| ServerStoreError::UnknownConversation(id.clone()))
}

/// The stored deleted ranges of the conversation that overlap `from..=to` (both as stored
/// integers), ascending.
///
/// Ranges are disjoint, so only the last one starting at or before `from` can reach into the
/// window from the left: the query seeks to it and then scans ranges starting up to `to`,
/// a range scan on the primary key whatever the number of ranges.
fn deleted_rows(
    conn: &Connection,
    id: &ConversationId,
    from: i64,
    to: i64,
) -> Result<Vec<(Seq, Seq)>, ServerStoreError> {
    let mut st = conn
        .prepare_cached(
            "SELECT first_seq, last_seq FROM deleted_ranges
             WHERE conversation = ?1 AND first_seq <= ?3 AND first_seq >= IFNULL(
                 (SELECT first_seq FROM deleted_ranges
                  WHERE conversation = ?1 AND first_seq <= ?2
                  ORDER BY first_seq DESC LIMIT 1),
                 ?2)
             ORDER BY first_seq",
        )
        .map_err(|e| backend(e, "reading deleted seqs"))?;
    let rows = st
        .query_map(params![id.as_str(), from, to], |r| {
            Ok((r.get::<_, i64>(0)?, r.get::<_, i64>(1)?))
        })
        .map_err(|e| backend(e, "reading deleted seqs"))?;
    let mut out = Vec::new();
    for row in rows {
        let (first, last) = row.map_err(|e| backend(e, "reading deleted seqs"))?;
        if last < from {
            continue;
        }
        let first = seq_from(first, "deleted_ranges.first_seq")?;
        let last = seq_from(last, "deleted_ranges.last_seq")?;
        if first > last {
            return Err(super::codec::corrupt(format!(
                "deleted range {}..={} of {id} is reversed",
                first.0, last.0
            )));
        }
        out.push((first, last));
    }
    Ok(out)
}

fn sent_record(
    conn: &Connection,
    sender: &UserId,
    client_msg_id: &ClientMsgId,
) -> Result<Option<SentRecord>, ServerStoreError> {
    let row = conn
        .prepare_cached(
            "SELECT conversation, seq, server_time FROM sent
             WHERE sender = ?1 AND client_msg_id = ?2",
        )
        .and_then(|mut st| {
            st.query_row([sender.as_str(), client_msg_id.as_str()], |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    r.get::<_, i64>(1)?,
                    r.get::<_, i64>(2)?,
                ))
            })
            .optional()
        })
        .map_err(|e| backend(e, "reading the idempotency index"))?;
    row.map(|(conversation, seq, server_time)| {
        Ok(SentRecord {
            conversation: conversation.into(),
            seq: seq_from(seq, "sent.seq")?,
            server_time: Timestamp(unbits(server_time)),
        })
    })
    .transpose()
}

fn read_seq(
    conn: &Connection,
    user: &UserId,
    conversation: &ConversationId,
) -> Result<Seq, ServerStoreError> {
    let seq = conn
        .prepare_cached("SELECT seq FROM read_seqs WHERE user = ?1 AND conversation = ?2")
        .and_then(|mut st| {
            st.query_row([user.as_str(), conversation.as_str()], |r| {
                r.get::<_, i64>(0)
            })
            .optional()
        })
        .map_err(|e| backend(e, "reading a read seq"))?;
    Ok(Seq(seq.map_or(0, unbits)))
}

/// The user's (?1) conversations whose entry changed after counter value ?2, ascending,
/// after ?3 (NULL: from the start), at most ?4.
pub(super) const CHANGED_SINCE: &str = "SELECT id FROM (
     SELECT c.id AS id FROM conversations c INDEXED BY conversations_by_change
       CROSS JOIN members m ON m.user = ?1 AND m.conversation = c.id
      WHERE c.change_seq > ?2
     UNION
     SELECT conversation AS id FROM members
      WHERE user = ?1 AND change_seq > ?2
 )
 WHERE ?3 IS NULL OR id > ?3
 ORDER BY id LIMIT ?4";

/// Takes the next value of the change counter (inside the caller's write).
fn tick(conn: &Connection) -> Result<i64, ServerStoreError> {
    conn.prepare_cached(
        "UPDATE change_clock SET counter = counter + 1 WHERE id = 1 RETURNING counter",
    )
    .and_then(|mut st| st.query_row([], |r| r.get::<_, i64>(0)))
    .map_err(|e| backend(e, "advancing the change counter"))
}

/// Records that conversation `id` changed (its seqs, activity or deletions).
fn conversation_changed(conn: &Connection, id: &ConversationId) -> Result<(), ServerStoreError> {
    let changed = tick(conn)?;
    exec(
        conn,
        "UPDATE conversations SET change_seq = ?2 WHERE id = ?1",
        params![id.as_str(), changed],
        "recording a conversation change",
    )?;
    Ok(())
}

/// Records that `user`'s membership row of `id` changed (read seq, joining).
fn member_changed(
    conn: &Connection,
    user: &UserId,
    id: &ConversationId,
) -> Result<(), ServerStoreError> {
    let changed = tick(conn)?;
    exec(
        conn,
        "UPDATE members SET change_seq = ?3 WHERE user = ?1 AND conversation = ?2",
        params![user.as_str(), id.as_str(), changed],
        "recording a member change",
    )?;
    Ok(())
}

/// A counter value as stored (the counter never gets near `i64::MAX`).
fn counter_col(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

/// A stored counter value; a negative one is damage.
fn counter_from(value: i64, column: &str) -> Result<u64, ServerStoreError> {
    u64::try_from(value).map_err(|_| corrupt(format!("{column} is negative: {value}")))
}

/// Runs a statement that changes rows, mapping its error.
fn exec(
    conn: &Connection,
    sql: &str,
    params: impl rusqlite::Params,
    doing: &str,
) -> Result<usize, ServerStoreError> {
    conn.prepare_cached(sql)
        .and_then(|mut st| st.execute(params))
        .map_err(|e| backend(e, doing))
}

impl ServerStore for SqliteServerStore {
    fn begin_group(&mut self) -> Result<(), ServerStoreError> {
        self.begin_group_tx()
    }

    fn commit_group(&mut self) -> Result<(), ServerStoreError> {
        self.commit_group_tx()
    }

    fn create_user(&mut self, user: &UserId) -> Result<bool, ServerStoreError> {
        self.write(|tx| {
            let added = exec(
                tx,
                "INSERT OR IGNORE INTO users (id) VALUES (?1)",
                [user.as_str()],
                "creating a user",
            )?;
            Ok(added == 1)
        })
    }

    fn user_exists(&self, user: &UserId) -> Result<bool, ServerStoreError> {
        user_exists(&self.conn, user)
    }

    fn add_device(&mut self, user: &UserId, device: &DeviceId) -> Result<(), ServerStoreError> {
        self.write(|tx| {
            require_user(tx, user)?;
            exec(
                tx,
                "INSERT OR IGNORE INTO devices (user, device) VALUES (?1, ?2)",
                [user.as_str(), device.as_str()],
                "adding a device",
            )?;
            Ok(())
        })
    }

    fn devices(&self, user: &UserId) -> Result<Vec<DeviceId>, ServerStoreError> {
        require_user(&self.conn, user)?;
        let mut st = self
            .conn
            .prepare_cached("SELECT device FROM devices WHERE user = ?1 ORDER BY device")
            .map_err(|e| backend(e, "reading devices"))?;
        let rows = st
            .query_map([user.as_str()], |r| r.get::<_, String>(0))
            .map_err(|e| backend(e, "reading devices"))?;
        rows.map(|r| r.map(DeviceId::from))
            .collect::<Result<_, _>>()
            .map_err(|e| backend(e, "reading devices"))
    }

    fn create_conversation(
        &mut self,
        id: &ConversationId,
        kind: ConversationKind,
        members: &[UserId],
    ) -> Result<(), ServerStoreError> {
        self.write(|tx| {
            if conversation(tx, id)?.is_some() {
                return Err(ServerStoreError::AlreadyExists(format!(
                    "conversation {id}"
                )));
            }
            for user in members {
                require_user(tx, user)?;
            }
            let changed = tick(tx)?;
            exec(
                tx,
                "INSERT INTO conversations (id, kind, max_seq, min_seq, last_activity, change_seq)
                 VALUES (?1, ?2, 0, 0, 0, ?3)",
                params![id.as_str(), kind_col(kind), changed],
                "creating a conversation",
            )?;
            for user in members {
                // OR IGNORE: a member listed twice is one member, as in a set.
                exec(
                    tx,
                    "INSERT OR IGNORE INTO members (user, conversation, change_seq)
                     VALUES (?1, ?2, ?3)",
                    params![user.as_str(), id.as_str(), changed],
                    "adding a member",
                )?;
            }
            Ok(())
        })
    }

    fn add_member(&mut self, id: &ConversationId, user: &UserId) -> Result<(), ServerStoreError> {
        self.write(|tx| {
            require_user(tx, user)?;
            require_conversation(tx, id)?;
            let added = exec(
                tx,
                "INSERT OR IGNORE INTO members (user, conversation) VALUES (?1, ?2)",
                [user.as_str(), id.as_str()],
                "adding a member",
            )?;
            if added == 1 {
                member_changed(tx, user, id)?;
            }
            Ok(())
        })
    }

    fn conversation(
        &self,
        id: &ConversationId,
    ) -> Result<Option<ConversationInfo>, ServerStoreError> {
        conversation(&self.conn, id)
    }

    fn members(&self, id: &ConversationId) -> Result<Vec<UserId>, ServerStoreError> {
        require_conversation(&self.conn, id)?;
        let mut st = self
            .conn
            .prepare_cached("SELECT user FROM members WHERE conversation = ?1 ORDER BY user")
            .map_err(|e| backend(e, "reading members"))?;
        let rows = st
            .query_map([id.as_str()], |r| r.get::<_, String>(0))
            .map_err(|e| backend(e, "reading members"))?;
        rows.map(|r| r.map(UserId::from))
            .collect::<Result<_, _>>()
            .map_err(|e| backend(e, "reading members"))
    }

    fn is_member(&self, id: &ConversationId, user: &UserId) -> Result<bool, ServerStoreError> {
        self.conn
            .prepare_cached("SELECT 1 FROM members WHERE user = ?1 AND conversation = ?2")
            .and_then(|mut st| st.exists([user.as_str(), id.as_str()]))
            .map_err(|e| backend(e, "checking membership"))
    }

    fn conversations_of(
        &self,
        user: &UserId,
        after: Option<&ConversationId>,
        limit_n: usize,
    ) -> Result<Vec<ConversationId>, ServerStoreError> {
        require_user(&self.conn, user)?;
        // Two statements rather than one with `IFNULL`, so each is a plain range scan of the
        // (user, conversation) primary key. The first leaves ?2 unused; it is bound to NULL.
        let (sql, after) = match after {
            Some(after) => (
                "SELECT conversation FROM members WHERE user = ?1 AND conversation > ?2
                 ORDER BY conversation LIMIT ?3",
                Some(after.as_str()),
            ),
            None => (
                "SELECT conversation FROM members WHERE user = ?1
                 ORDER BY conversation LIMIT ?3",
                None,
            ),
        };
        let mut st = self
            .conn
            .prepare_cached(sql)
            .map_err(|e| backend(e, "paging conversations"))?;
        let rows = st
            .query_map(params![user.as_str(), after, limit(limit_n)], |r| {
                r.get::<_, String>(0)
            })
            .map_err(|e| backend(e, "paging conversations"))?;
        rows.map(|r| r.map(ConversationId::from))
            .collect::<Result<_, _>>()
            .map_err(|e| backend(e, "paging conversations"))
    }

    fn append(
        &mut self,
        message: NewMessage,
        server_time: Timestamp,
    ) -> Result<AppendOutcome, ServerStoreError> {
        self.write(|tx| {
            // First, as the memory store does: a known key answers even for a conversation
            // that no longer accepts the message.
            if let Some(record) = sent_record(tx, &message.sender, &message.client_msg_id)? {
                return Ok(AppendOutcome::Duplicate(record));
            }
            // The seq is taken and the message, its idempotency row and the header change
            // are written in this one transaction: a crash or error in between leaves none.
            let seq = tx
                .prepare_cached(
                    "UPDATE conversations SET max_seq = max_seq + 1, last_activity = ?2
                     WHERE id = ?1 RETURNING max_seq",
                )
                .and_then(|mut st| {
                    st.query_row(
                        params![message.conversation.as_str(), bits(server_time.0)],
                        |r| r.get::<_, i64>(0),
                    )
                    .optional()
                })
                .map_err(|e| backend(e, "assigning a seq"))?
                .ok_or_else(|| {
                    ServerStoreError::UnknownConversation(message.conversation.clone())
                })?;
            let seq = seq_from(seq, "conversations.max_seq")?;
            conversation_changed(tx, &message.conversation)?;
            let (kind, kind_name, target) = content_kind_cols(&message.kind);
            exec(
                tx,
                "INSERT INTO messages (conversation, seq, client_msg_id, sender, kind, kind_name,
                     target_seq, content, created_at, server_time)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
                params![
                    message.conversation.as_str(),
                    seq_col(seq)?,
                    message.client_msg_id.as_str(),
                    message.sender.as_str(),
                    kind,
                    kind_name,
                    target,
                    message.content,
                    bits(message.created_at.0),
                    bits(server_time.0),
                ],
                "storing a message",
            )?;
            exec(
                tx,
                "INSERT INTO sent (sender, client_msg_id, conversation, seq, server_time)
                 VALUES (?1, ?2, ?3, ?4, ?5)",
                params![
                    message.sender.as_str(),
                    message.client_msg_id.as_str(),
                    message.conversation.as_str(),
                    seq_col(seq)?,
                    bits(server_time.0),
                ],
                "storing the idempotency entry",
            )?;
            Ok(AppendOutcome::Appended(ServerMessage {
                conversation: message.conversation,
                seq,
                client_msg_id: message.client_msg_id,
                sender: message.sender,
                kind: message.kind,
                content: message.content,
                created_at: message.created_at,
                server_time,
            }))
        })
    }

    fn sent_record(
        &self,
        sender: &UserId,
        client_msg_id: &ClientMsgId,
    ) -> Result<Option<SentRecord>, ServerStoreError> {
        sent_record(&self.conn, sender, client_msg_id)
    }

    fn message(
        &self,
        conversation: &ConversationId,
        seq: Seq,
    ) -> Result<Option<ServerMessage>, ServerStoreError> {
        require_conversation(&self.conn, conversation)?;
        let Ok(seq) = i64::try_from(seq.0) else {
            // No stored seq is that high.
            return Ok(None);
        };
        let sql =
            format!("SELECT {MESSAGE_COLUMNS} FROM messages WHERE conversation = ?1 AND seq = ?2");
        let mut st = self
            .conn
            .prepare_cached(&sql)
            .map_err(|e| backend(e, "reading a message"))?;
        let mut rows = st
            .query(params![conversation.as_str(), seq])
            .map_err(|e| backend(e, "reading a message"))?;
        match rows.next().map_err(|e| backend(e, "reading a message"))? {
            Some(row) => Ok(Some(message_from(conversation, row)?)),
            None => Ok(None),
        }
    }

    fn messages(
        &self,
        conversation: &ConversationId,
        from: Seq,
        to: Seq,
        limit_n: usize,
    ) -> Result<Vec<ServerMessage>, ServerStoreError> {
        require_conversation(&self.conn, conversation)?;
        if from > to {
            return Ok(Vec::new());
        }
        // A range scan of the (conversation, seq) index.
        let sql = format!(
            "SELECT {MESSAGE_COLUMNS} FROM messages
             WHERE conversation = ?1 AND seq BETWEEN ?2 AND ?3 ORDER BY seq LIMIT ?4"
        );
        let mut st = self
            .conn
            .prepare_cached(&sql)
            .map_err(|e| backend(e, "reading messages"))?;
        let mut rows = st
            .query(params![
                conversation.as_str(),
                bound(from),
                bound(to),
                limit(limit_n)
            ])
            .map_err(|e| backend(e, "reading messages"))?;
        let mut out = Vec::new();
        while let Some(row) = rows.next().map_err(|e| backend(e, "reading messages"))? {
            out.push(message_from(conversation, row)?);
        }
        Ok(out)
    }

    fn unread_seqs(
        &self,
        conversation: &ConversationId,
        user: &UserId,
        from: Seq,
        to: Seq,
    ) -> Result<Vec<Seq>, ServerStoreError> {
        require_conversation(&self.conn, conversation)?;
        if from > to {
            return Ok(Vec::new());
        }
        // The same range scan as `messages`, reading three small columns instead of whole
        // rows (contents included). The kinds are the codec's names of edits and revokes.
        let mut st = self
            .conn
            .prepare_cached(
                "SELECT seq FROM messages
                 WHERE conversation = ?1 AND seq BETWEEN ?2 AND ?3 AND sender <> ?4
                   AND kind NOT IN ('edit', 'revoke')
                 ORDER BY seq",
            )
            .map_err(|e| backend(e, "reading unread seqs"))?;
        let rows = st
            .query_map(
                params![conversation.as_str(), bound(from), bound(to), user.as_str()],
                |r| r.get::<_, i64>(0),
            )
            .map_err(|e| backend(e, "reading unread seqs"))?;
        let mut out = Vec::new();
        for seq in rows {
            let seq = seq.map_err(|e| backend(e, "reading unread seqs"))?;
            out.push(seq_from(seq, "messages.seq")?);
        }
        Ok(out)
    }

    fn deleted(
        &self,
        conversation: &ConversationId,
        from: Seq,
        to: Seq,
    ) -> Result<SeqRanges, ServerStoreError> {
        require_conversation(&self.conn, conversation)?;
        let mut out = SeqRanges::new();
        if from > to {
            return Ok(out);
        }
        for (first, last) in deleted_rows(&self.conn, conversation, bound(from), bound(to))? {
            out.insert_range(first.max(from), last.min(to));
        }
        Ok(out)
    }

    fn delete_seqs(
        &mut self,
        conversation: &ConversationId,
        seqs: &SeqRanges,
    ) -> Result<SeqRanges, ServerStoreError> {
        self.write(|tx| {
            let info = require_conversation(tx, conversation)?;
            let mut newly = SeqRanges::new();
            // The requested ranges are disjoint, so handling them one by one against the
            // table as it is after the previous one gives what the memory store computes
            // against the state before the call.
            for r in seqs.ranges() {
                let start = r.start.max(Seq(1));
                let end = r.end.min(info.max_seq);
                if start > end {
                    continue;
                }
                let (s, e) = (seq_col(start)?, seq_col(end)?);
                // Stored ranges overlapping or touching start..=end: they merge with it.
                let near = deleted_rows(tx, conversation, s - 1, e.saturating_add(1))?;
                let mut existing = SeqRanges::new();
                for (first, last) in &near {
                    existing.insert_range(*first, *last);
                }
                let gaps = existing.gaps_in(start, end);
                if gaps.is_empty() {
                    continue;
                }
                for gap in &gaps {
                    newly.insert_range(gap.start, gap.end);
                }
                let mut merged = (start, end);
                if let (Some(first), Some(last)) = (near.first(), near.last()) {
                    merged = (merged.0.min(first.0), merged.1.max(last.1));
                    exec(
                        tx,
                        "DELETE FROM deleted_ranges
                         WHERE conversation = ?1 AND first_seq BETWEEN ?2 AND ?3",
                        params![conversation.as_str(), seq_col(first.0)?, seq_col(last.0)?],
                        "merging deleted seqs",
                    )?;
                }
                exec(
                    tx,
                    "INSERT INTO deleted_ranges (conversation, first_seq, last_seq)
                     VALUES (?1, ?2, ?3)",
                    params![
                        conversation.as_str(),
                        seq_col(merged.0)?,
                        seq_col(merged.1)?
                    ],
                    "storing deleted seqs",
                )?;
                // History is gone: drop the bodies (already-deleted seqs have none).
                exec(
                    tx,
                    "DELETE FROM messages WHERE conversation = ?1 AND seq BETWEEN ?2 AND ?3",
                    params![conversation.as_str(), s, e],
                    "dropping deleted messages",
                )?;
            }
            if !newly.is_empty() {
                conversation_changed(tx, conversation)?;
            }
            Ok(newly)
        })
    }

    fn set_min_seq(
        &mut self,
        conversation: &ConversationId,
        min_seq: Seq,
    ) -> Result<Seq, ServerStoreError> {
        self.write(|tx| {
            let info = require_conversation(tx, conversation)?;
            let floor = min_seq.min(info.max_seq.next()).max(info.min_seq);
            if floor > info.min_seq {
                exec(
                    tx,
                    "UPDATE conversations SET min_seq = ?2 WHERE id = ?1",
                    params![conversation.as_str(), seq_col(floor)?],
                    "raising the floor",
                )?;
                // Messages below the old floor are gone already; this drops the rest.
                exec(
                    tx,
                    "DELETE FROM messages WHERE conversation = ?1 AND seq < ?2",
                    params![conversation.as_str(), seq_col(floor)?],
                    "dropping messages below the floor",
                )?;
                conversation_changed(tx, conversation)?;
            }
            Ok(floor)
        })
    }

    fn read_seq(
        &self,
        user: &UserId,
        conversation: &ConversationId,
    ) -> Result<Seq, ServerStoreError> {
        read_seq(&self.conn, user, conversation)
    }

    fn set_read_seq(
        &mut self,
        user: &UserId,
        conversation: &ConversationId,
        seq: Seq,
    ) -> Result<Seq, ServerStoreError> {
        self.write(|tx| {
            require_conversation(tx, conversation)?;
            require_user(tx, user)?;
            // The maximum is taken here, not in SQL: read seqs are stored bit for bit, which
            // SQL would compare as signed numbers.
            let before = read_seq(tx, user, conversation)?;
            if seq <= before {
                return Ok(before);
            }
            let kept = seq;
            member_changed(tx, user, conversation)?;
            exec(
                tx,
                "INSERT INTO read_seqs (user, conversation, seq) VALUES (?1, ?2, ?3)
                 ON CONFLICT (user, conversation) DO UPDATE SET seq = excluded.seq",
                params![user.as_str(), conversation.as_str(), bits(kept.0)],
                "storing a read seq",
            )?;
            Ok(kept)
        })
    }

    fn conversations_changed_since(
        &self,
        user: &UserId,
        since: u64,
        after: Option<&ConversationId>,
        limit_n: usize,
    ) -> Result<Vec<ConversationId>, ServerStoreError> {
        require_user(&self.conn, user)?;
        // The conversations changed since the token (by the change index, each checked for
        // membership by primary key) and the user's own member rows changed since it: the
        // work is what changed, not the account size. The join order is forced: without
        // statistics SQLite would rather walk all of the user's member rows.
        let mut st = self
            .conn
            .prepare_cached(CHANGED_SINCE)
            .map_err(|e| backend(e, "listing changed conversations"))?;
        let rows = st
            .query_map(
                params![
                    user.as_str(),
                    counter_col(since),
                    after.map(ConversationId::as_str),
                    limit(limit_n)
                ],
                |r| r.get::<_, String>(0),
            )
            .map_err(|e| backend(e, "listing changed conversations"))?;
        rows.map(|r| r.map(ConversationId::from))
            .collect::<Result<_, _>>()
            .map_err(|e| backend(e, "listing changed conversations"))
    }

    fn change_clock(&self) -> Result<ChangeClock, ServerStoreError> {
        let (epoch, counter, floor) = self
            .conn
            .prepare_cached("SELECT epoch, counter, floor FROM change_clock WHERE id = 1")
            .and_then(|mut st| {
                st.query_row([], |r| {
                    Ok((
                        r.get::<_, String>(0)?,
                        r.get::<_, i64>(1)?,
                        r.get::<_, i64>(2)?,
                    ))
                })
            })
            .map_err(|e| backend(e, "reading the change clock"))?;
        Ok(ChangeClock {
            epoch,
            counter: counter_from(counter, "change_clock.counter")?,
            floor: counter_from(floor, "change_clock.floor")?,
        })
    }

    fn raise_change_floor(&mut self, floor: u64) -> Result<u64, ServerStoreError> {
        let clock = self.change_clock()?;
        let floor = floor.min(clock.counter).max(clock.floor);
        self.write(|tx| {
            exec(
                tx,
                "UPDATE change_clock SET floor = ?1 WHERE id = 1",
                [counter_col(floor)],
                "raising the token floor",
            )?;
            Ok(floor)
        })
    }
}

impl AccountStore for SqliteServerStore {
    fn insert_token(
        &mut self,
        user: &UserId,
        hash: TokenHash,
        expires_at: Option<Timestamp>,
    ) -> Result<(), ServerStoreError> {
        self.write(|tx| {
            require_user(tx, user)?;
            // The same hash again replaces the expiry, as the memory store's map insert does.
            exec(
                tx,
                "INSERT INTO tokens (user, hash, expires_at) VALUES (?1, ?2, ?3)
                 ON CONFLICT (user, hash) DO UPDATE SET expires_at = excluded.expires_at",
                params![
                    user.as_str(),
                    hash.as_slice(),
                    expires_at.map(|t| bits(t.0))
                ],
                "storing a token",
            )?;
            Ok(())
        })
    }

    fn token_expiry(
        &self,
        user: &UserId,
        hash: &TokenHash,
    ) -> Result<Option<Option<Timestamp>>, ServerStoreError> {
        let row = self
            .conn
            .prepare_cached("SELECT expires_at FROM tokens WHERE user = ?1 AND hash = ?2")
            .and_then(|mut st| {
                st.query_row(params![user.as_str(), hash.as_slice()], |r| {
                    r.get::<_, Option<i64>>(0)
                })
                .optional()
            })
            .map_err(|e| backend(e, "looking up a token"))?;
        Ok(row.map(|expiry| expiry.map(|t| Timestamp(unbits(t)))))
    }

    fn revoke_tokens(&mut self, user: &UserId) -> Result<u64, ServerStoreError> {
        self.write(|tx| {
            let removed = exec(
                tx,
                "DELETE FROM tokens WHERE user = ?1",
                [user.as_str()],
                "revoking tokens",
            )?;
            Ok(removed as u64)
        })
    }
}
