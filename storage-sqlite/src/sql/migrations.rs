//! The schema: numbered migrations in `migrations/NNN_name.sql`, applied in order.
//!
//! The version a store is at lives in `PRAGMA user_version`; migration N takes it from N-1
//! to N inside one transaction together with its statements, so a crash mid-migration
//! leaves the store at N-1. A store above [`SCHEMA_VERSION`] was written by a newer build and
//! is refused before anything is written to it.

use rusqlite::{Connection, Transaction, TransactionBehavior};
use tidemark_engine::StorageError;

use super::error::{corrupt, storage_error};

/// One migration: the version it brings the store to and its SQL.
struct Migration {
    version: u64,
    name: &'static str,
    sql: &'static str,
}

/// Every migration, in order. Append only: a shipped migration never changes.
const MIGRATIONS: &[Migration] = &[
    Migration {
        version: 1,
        name: "001_initial",
        sql: include_str!("../../migrations/001_initial.sql"),
    },
    Migration {
        version: 2,
        name: "002_messages_keyed_by_sender",
        sql: include_str!("../../migrations/002_messages_keyed_by_sender.sql"),
    },
    Migration {
        version: 3,
        name: "003_pending_change_sender",
        sql: include_str!("../../migrations/003_pending_change_sender.sql"),
    },
    Migration {
        version: 4,
        name: "004_sync_token",
        sql: include_str!("../../migrations/004_sync_token.sql"),
    },
    Migration {
        version: 5,
        name: "005_conversation_keys",
        sql: include_str!("../../migrations/005_conversation_keys.sql"),
    },
];

/// The schema version this build writes and the highest it can open.
pub const SCHEMA_VERSION: u64 = MIGRATIONS.len() as u64;

/// `PRAGMA application_id` of a Tidemark store ('TDMK'), set by migration 001.
pub(crate) const APPLICATION_ID: i64 = 0x5444_4D4B;

/// What [`inspect`] found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct StoreVersion {
    /// The store's schema version (0: empty, nothing created yet).
    pub found: u64,
}

impl StoreVersion {
    /// Whether migrations remain to be applied.
    pub(crate) fn needs_migration(self) -> bool {
        self.found < SCHEMA_VERSION
    }
}

/// Reads the store's version and checks that it is a Tidemark store this build can open.
/// Only reads: a store that fails here is left exactly as it was.
///
/// Errors: [`StorageError::Corrupt`] for a file that is not a database, or a database that is
/// not a Tidemark store; [`StorageError::UnsupportedVersion`] for a newer schema.
pub(crate) fn inspect(conn: &Connection) -> Result<StoreVersion, StorageError> {
    let found = user_version(conn)?;
    if found > SCHEMA_VERSION {
        return Err(StorageError::UnsupportedVersion {
            found,
            supported: SCHEMA_VERSION,
        });
    }
    let app_id: i64 = conn
        .pragma_query_value(None, "application_id", |r| r.get(0))
        .map_err(|e| storage_error(e, "reading the application id"))?;
    // Reading the schema parses page 1 and the schema table: damage there shows up now,
    // at open, rather than at the first query.
    let objects: i64 = conn
        .query_row("SELECT count(*) FROM sqlite_schema", [], |r| r.get(0))
        .map_err(|e| storage_error(e, "reading the schema"))?;
    if found == 0 {
        if objects > 0 || app_id != 0 {
            return Err(corrupt(format!(
                "not a Tidemark store: the database holds {objects} schema objects and \
                 application id {app_id:#x} but no Tidemark schema version"
            )));
        }
    } else if app_id != APPLICATION_ID {
        return Err(corrupt(format!(
            "not a Tidemark store: application id {app_id:#x}, expected {APPLICATION_ID:#x}"
        )));
    }
    Ok(StoreVersion { found })
}

/// Brings the store to [`SCHEMA_VERSION`], one transaction per migration. Call after
/// [`inspect`]; a store already current is not written to (so a read-only one opens).
pub(crate) fn migrate(conn: &Connection) -> Result<(), StorageError> {
    if !inspect(conn)?.needs_migration() {
        return Ok(());
    }
    for m in MIGRATIONS {
        // IMMEDIATE: take the write lock before reading the version, so two processes opening
        // the same new file cannot both apply the same migration.
        let tx = Transaction::new_unchecked(conn, TransactionBehavior::Immediate)
            .map_err(|e| storage_error(e, "starting a migration"))?;
        let current = user_version(&tx)?;
        if current > SCHEMA_VERSION {
            return Err(StorageError::UnsupportedVersion {
                found: current,
                supported: SCHEMA_VERSION,
            });
        }
        if current >= m.version {
            continue;
        }
        let doing = format!("applying migration {}", m.name);
        tx.execute_batch(m.sql)
            .map_err(|e| storage_error(e, &doing))?;
        // user_version is a 32-bit header field; versions are small.
        tx.pragma_update(None, "user_version", m.version as i64)
            .map_err(|e| storage_error(e, &doing))?;
        tx.commit().map_err(|e| storage_error(e, &doing))?;
    }
    Ok(())
}

/// `PRAGMA user_version`, which SQLite keeps as a signed 32-bit number in the header.
pub(crate) fn user_version(conn: &Connection) -> Result<u64, StorageError> {
    let v: i64 = conn
        .pragma_query_value(None, "user_version", |r| r.get(0))
        .map_err(|e| storage_error(e, "reading the schema version"))?;
    // A negative value is a version number above i32::MAX written by something else: read it
    // as the unsigned 32-bit number it is, which is certainly unsupported.
    Ok(u64::try_from(v).unwrap_or_else(|_| u64::from(v as i32 as u32)))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Messages of conversation `conv` matching `filter` (a WHERE tail), decoded as the read
    /// path decodes them, with SQL that every schema version understands.
    fn raw_messages(conn: &Connection, conv: &str, filter: &str) -> Vec<tidemark_engine::Message> {
        let sql = format!(
            "SELECT {} FROM messages WHERE conversation = '{conv}' AND {filter}",
            super::super::codec::message_columns!()
        );
        let mut stmt = conn.prepare(&sql).unwrap();
        let mut rows = stmt.query([]).unwrap();
        let mut out = Vec::new();
        while let Some(row) = rows.next().unwrap() {
            out.push(super::super::codec::decode_message(row).unwrap());
        }
        out
    }

    #[test]
    fn migrations_are_numbered_in_order() {
        for (i, m) in MIGRATIONS.iter().enumerate() {
            assert_eq!(m.version, i as u64 + 1);
            assert!(
                m.name.starts_with(&format!("{:03}_", m.version)),
                "{}",
                m.name
            );
        }
    }

    #[test]
    fn migrate_is_idempotent_and_sets_the_version() {
        let conn = Connection::open_in_memory().unwrap();
        assert_eq!(inspect(&conn).unwrap(), StoreVersion { found: 0 });
        migrate(&conn).unwrap();
        migrate(&conn).unwrap();
        assert_eq!(user_version(&conn).unwrap(), SCHEMA_VERSION);
        assert!(!inspect(&conn).unwrap().needs_migration());
    }

    #[test]
    fn foreign_databases_are_refused() {
        let conn = Connection::open_in_memory().unwrap();
        conn.execute_batch("CREATE TABLE other (x)").unwrap();
        assert!(matches!(inspect(&conn), Err(StorageError::Corrupt { .. })));
        assert!(matches!(migrate(&conn), Err(StorageError::Corrupt { .. })));

        let conn = Connection::open_in_memory().unwrap();
        conn.execute_batch("PRAGMA user_version = 1").unwrap();
        assert!(matches!(inspect(&conn), Err(StorageError::Corrupt { .. })));

        let conn = Connection::open_in_memory().unwrap();
        conn.execute_batch("PRAGMA user_version = -1").unwrap();
        assert!(matches!(
            inspect(&conn),
            Err(StorageError::UnsupportedVersion {
                found: 0xFFFF_FFFF,
                ..
            })
        ));
    }

    /// A store written at version 1 (messages keyed by conversation and client id) migrates
    /// to version 2 with every row intact, and then takes two senders' messages with one
    /// client id (fuzz: foreign-sender-same-client-id).
    #[test]
    fn version_1_store_migrates_with_its_data() {
        use tidemark_engine::{
            ClientMsgId, ConversationId, Direction, MessageStatus, Seq, UserId, WriteBatch, WriteOp,
        };

        let conn = Connection::open_in_memory().unwrap();
        let v1 = &MIGRATIONS[0];
        conn.execute_batch(&format!(
            "BEGIN; {} PRAGMA user_version = 1; COMMIT;",
            v1.sql
        ))
        .unwrap();
        assert_eq!(user_version(&conn).unwrap(), 1);
        // Rows as a version 1 build wrote them: a sent message, a pending send with its
        // outbox entry, a failed send, a tombstone and a pending change.
        conn.execute_batch(
            "INSERT INTO conversations (id, kind, server_max_seq, server_min_seq, held, \
               read_seq, not_unread, unread, last_activity, deleted) \
               VALUES ('c', 'group', 3, 0, '[[1,3]]', 1, '[]', 1, 9, '[[3,3]]'); \
             INSERT INTO messages (conversation, seq, client_msg_id, sender, kind, content, \
               created_at, server_time, status, revoked) \
               VALUES ('c', 1, 'x', 'bob', 'text', X'6869', 5, 6, 'sent', 0), \
                      ('c', 2, 'mine-1', 'me', 'text', X'', 7, 8, 'sent', 0); \
             INSERT INTO messages (conversation, seq, client_msg_id, sender, kind, content, \
               created_at, status, failure_reason, revoked) \
               VALUES ('c', NULL, 'mine-2', 'me', 'text', X'01', 10, 'pending', NULL, 0), \
                      ('c', NULL, 'mine-3', 'me', 'text', X'02', 11, 'failed', 'no', 0); \
             INSERT INTO outbox (client_msg_id, conversation, kind, content, created_at, \
               attempts) VALUES ('mine-2', 'c', 'text', X'01', 10, 0); \
             INSERT INTO tombstones (conversation, ranges) VALUES ('c', '[[3,3]]'); \
             INSERT INTO pending_changes (conversation, seq, target, kind, target_seq, content) \
               VALUES ('c', 9, 8, 'edit', 8, X'03');",
        )
        .unwrap();
        // The snapshot as this build reads it, less what later versions added (the pending
        // change's sender, from migration 003).
        let c = ConversationId::from("c");
        let conversations_before = super::super::read::conversations_page(&conn, None, 10).unwrap();
        let outbox_before = super::super::read::outbox(&conn).unwrap();
        let page = |conn: &Connection| {
            super::super::read::messages_page(conn, &c, None, Direction::After, 10).unwrap()
        };
        let unsent = |conn: &Connection| super::super::read::unsent_messages(conn, &c).unwrap();
        // The read path's message queries need version 5's keys: before the migration the
        // same rows are read by hand, in the same orders.
        let (page_before, unsent_before) = (
            raw_messages(&conn, "c", "seq IS NOT NULL ORDER BY seq"),
            raw_messages(
                &conn,
                "c",
                "seq IS NULL ORDER BY created_at, client_msg_id, sender",
            ),
        );
        assert_eq!(page_before.len(), 2);
        assert_eq!(unsent_before.len(), 2);

        migrate(&conn).unwrap();
        assert_eq!(user_version(&conn).unwrap(), SCHEMA_VERSION);
        assert_eq!(SCHEMA_VERSION, 5);
        let after = super::super::read::load_snapshot(&conn).unwrap();
        // Migration 004 adds the sync token, absent in an older store: the next connect
        // lists everything, as an older build did.
        assert_eq!(after.sync_token, None);
        assert_eq!(after.conversations, conversations_before);
        assert_eq!(after.outbox, outbox_before);
        // The change message at seq 9 was never stored: its sender cannot be known, and the
        // empty one matches no author, so the change never applies.
        assert_eq!(
            after.pending_changes,
            vec![tidemark_engine::PendingChange {
                conversation: c.clone(),
                seq: Seq(9),
                target: Seq(8),
                sender: UserId::from(""),
                kind: tidemark_engine::ContentKind::Edit { target: Seq(8) },
                content: vec![3],
            }]
        );
        assert_eq!(page(&conn), page_before);
        assert_eq!(unsent(&conn), unsent_before);
        assert!(matches!(
            unsent_before[1].status,
            MessageStatus::Failed { .. }
        ));
        let by_id = |sender: &str, id: &str| {
            super::super::read::message_by_client_id(
                &conn,
                &c,
                &UserId::from(sender),
                &ClientMsgId::from(id),
            )
            .unwrap()
        };
        assert_eq!(by_id("bob", "x").as_ref(), Some(&page_before[0]));
        assert_eq!(by_id("me", "mine-2").as_ref(), Some(&unsent_before[0]));
        assert_eq!(by_id("me", "x"), None);
        super::super::integrity::check(&conn).unwrap();

        // The new key: carol's message with bob's client id is a row of its own.
        let carols = tidemark_engine::Message {
            seq: Some(Seq(4)),
            sender: UserId::from("carol"),
            ..page_before[0].clone()
        };
        let mut conv = conversations_before[0].clone();
        conv.server_max_seq = Seq(4);
        conv.held.insert(Seq(4));
        let tx = Transaction::new_unchecked(&conn, TransactionBehavior::Immediate).unwrap();
        super::super::write::apply_batch(
            &tx,
            WriteBatch {
                ops: vec![
                    WriteOp::PutConversation(conv),
                    WriteOp::PutMessages(vec![carols.clone()]),
                ],
            },
        )
        .unwrap();
        tx.commit().unwrap();
        assert_eq!(by_id("carol", "x"), Some(carols));
        assert_eq!(by_id("bob", "x").as_ref(), Some(&page_before[0]));
        super::super::integrity::check(&conn).unwrap();
    }

    /// A new store in memory brought to `version` by the migrations up to it, as a build of
    /// that version left it.
    fn store_at(version: usize) -> Connection {
        let conn = Connection::open_in_memory().unwrap();
        apply_up_to(&conn, version);
        conn
    }

    /// Applies the migrations up to `version` to `conn`, as builds of those versions did.
    fn apply_up_to(conn: &Connection, version: usize) {
        for m in &MIGRATIONS[..version] {
            conn.execute_batch(&format!(
                "BEGIN; {} PRAGMA user_version = {}; COMMIT;",
                m.sql, m.version
            ))
            .unwrap();
        }
    }

    /// Migration 003 fills a pending change's sender from its change message, stored at the
    /// change's seq in the same batch as the pending change.
    #[test]
    fn version_2_pending_changes_learn_their_sender() {
        let conn = store_at(2);
        conn.execute_batch(
            "INSERT INTO messages (conversation, seq, client_msg_id, sender, kind, target_seq, \
               content, created_at, server_time, status, revoked) \
               VALUES ('c', 9, 'e', 'carol', 'edit', 8, X'03', 5, 6, 'sent', 0); \
             INSERT INTO pending_changes (conversation, seq, target, kind, target_seq, content) \
               VALUES ('c', 9, 8, 'edit', 8, X'03');",
        )
        .unwrap();
        migrate(&conn).unwrap();
        let changes = super::super::read::load_snapshot(&conn)
            .unwrap()
            .pending_changes;
        assert_eq!(changes.len(), 1);
        assert_eq!(changes[0].sender, tidemark_engine::UserId::from("carol"));
    }

    /// Every column of every message row, by rowid: what a migration must keep.
    fn message_rows(conn: &Connection) -> Vec<Vec<rusqlite::types::Value>> {
        let mut stmt = conn
            .prepare(
                "SELECT id, conversation, seq, client_msg_id, sender, kind, kind_name, \
                 target_seq, content, created_at, server_time, status, failure_reason, \
                 edit_seq, revoked FROM messages ORDER BY id",
            )
            .unwrap();
        let rows = stmt
            .query_map([], |r| (0..15).map(|i| r.get(i)).collect())
            .unwrap();
        rows.collect::<Result<_, _>>().unwrap()
    }

    /// A version 4 store (message indexes keyed by the conversation id as text) migrates to
    /// version 5 with every row intact, rowid and all, each filed under its conversation's
    /// key; reads find the rows, and the merge rules hold on them: one client id of two
    /// senders, the same ids in two conversations, a pending send and its echo, conflicts.
    #[test]
    fn version_4_store_migrates_to_conversation_keys() {
        use super::super::{integrity, read, write};
        use tidemark_engine::{
            ClientMsgId, ConversationId, Direction, MessageStatus, Seq, UserId, WriteBatch, WriteOp,
        };

        let conn = store_at(4);
        conn.execute_batch(
            "INSERT INTO conversations (id, kind, server_max_seq, server_min_seq, held, \
               read_seq, not_unread, unread, last_activity, deleted) \
               VALUES ('a', 'group', 3, 0, '[[1,3]]', 1, '[]', 2, 9, '[]'), \
                      ('b', 'direct', 4, 0, '[[1,2],[4,4]]', 0, '[]', 3, 8, '[[3,3]]'); \
             INSERT INTO messages (id, conversation, seq, client_msg_id, sender, kind, \
               kind_name, target_seq, content, created_at, server_time, status, \
               failure_reason, edit_seq, revoked) VALUES \
               (10, 'a', 1, 'x', 'bob', 'text', NULL, NULL, X'6869', 5, 6, 'sent', NULL, NULL, 0), \
               (11, 'a', 2, 'x', 'carol', 'custom', 'poll', NULL, X'01', 6, 7, 'sent', NULL, 3, 0), \
               (12, 'a', 3, 'y', 'carol', 'edit', NULL, 2, X'02', 7, 8, 'sent', NULL, NULL, 0), \
               (13, 'a', NULL, 'mine-1', 'me', 'text', NULL, NULL, X'03', 10, NULL, 'pending', NULL, NULL, 0), \
               (14, 'a', NULL, 'mine-2', 'me', 'text', NULL, NULL, X'04', 11, NULL, 'failed', 'no route', NULL, 0), \
               (20, 'b', 1, 'x', 'bob', 'text', NULL, NULL, X'', 5, 6, 'sent', NULL, NULL, 1), \
               (21, 'b', 2, 'mine-1', 'me', 'image', NULL, NULL, X'05', 9, 9, 'sent', NULL, NULL, 0), \
               (22, 'b', 4, 'z', 'dave', 'revoke', NULL, 1, X'', 9, 10, 'sent', NULL, NULL, 0); \
             INSERT INTO outbox (client_msg_id, conversation, kind, content, created_at, \
               attempts) VALUES ('mine-1', 'a', 'text', X'03', 10, 1); \
             INSERT INTO tombstones (conversation, ranges) VALUES ('b', '[[3,3]]');",
        )
        .unwrap();
        let rows_before = message_rows(&conn);
        let sent_before = raw_messages(&conn, "a", "seq IS NOT NULL ORDER BY seq");
        let unsent_before = raw_messages(&conn, "a", "seq IS NULL ORDER BY created_at");
        let snapshot_before = read::load_snapshot(&conn).unwrap();

        migrate(&conn).unwrap();
        assert_eq!(user_version(&conn).unwrap(), 5);
        assert_eq!(message_rows(&conn), rows_before);
        let keyed: Vec<(String, i64)> = conn
            .prepare("SELECT id, key FROM conversation_keys ORDER BY id")
            .unwrap()
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        assert_eq!(keyed.len(), 2);
        assert_ne!(keyed[0].1, keyed[1].1);
        let filed_elsewhere: i64 = conn
            .query_row(
                "SELECT count(*) FROM messages m JOIN conversation_keys k \
                 ON k.key = m.conversation_key WHERE k.id IS NOT m.conversation",
                [],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(filed_elsewhere, 0);
        integrity::check(&conn).unwrap();
        assert_eq!(read::load_snapshot(&conn).unwrap(), snapshot_before);

        let (a, b) = (ConversationId::from("a"), ConversationId::from("b"));
        assert_eq!(
            read::messages_page(&conn, &a, None, Direction::After, 10).unwrap(),
            sent_before
        );
        assert_eq!(read::unsent_messages(&conn, &a).unwrap(), unsent_before);
        let by_id = |conv: &ConversationId, sender: &str, id: &str| {
            read::message_by_client_id(&conn, conv, &UserId::from(sender), &ClientMsgId::from(id))
                .unwrap()
        };
        assert_eq!(by_id(&a, "carol", "x").as_ref(), Some(&sent_before[1]));
        assert_eq!(by_id(&a, "bob", "x").as_ref(), Some(&sent_before[0]));
        assert!(by_id(&b, "bob", "x").is_some_and(|m| m.revoked && m.seq == Some(Seq(1))));
        assert_eq!(by_id(&b, "carol", "x"), None);

        let apply = |ops: Vec<WriteOp>| {
            let tx = Transaction::new_unchecked(&conn, TransactionBehavior::Immediate).unwrap();
            let applied = write::apply_batch(&tx, WriteBatch { ops });
            if applied.is_ok() {
                tx.commit().unwrap();
            }
            applied
        };
        let at = |m: &tidemark_engine::Message, conv: &ConversationId, seq: u64| {
            tidemark_engine::Message {
                conversation: conv.clone(),
                seq: Some(Seq(seq)),
                status: MessageStatus::Sent,
                ..m.clone()
            }
        };
        // The echo of the pending send takes its row; bob's client id in b is carol's too.
        let echo = at(&unsent_before[0], &a, 4);
        let carols = at(&sent_before[1], &b, 5);
        apply(vec![WriteOp::PutMessages(vec![echo.clone()])]).unwrap();
        apply(vec![WriteOp::PutMessages(vec![carols.clone()])]).unwrap();
        assert_eq!(by_id(&a, "me", "mine-1"), Some(echo));
        assert_eq!(by_id(&b, "carol", "x"), Some(carols));
        assert_eq!(read::unsent_messages(&conn, &a).unwrap().len(), 1);
        let rowid: i64 = conn
            .query_row(
                "SELECT id FROM messages WHERE seq = 4 AND conversation = 'a'",
                [],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(rowid, 13, "the pending row became the sent one");
        // Conflicts with migrated rows are still refused: bob's x at another seq, and
        // another message at a held seq.
        for clash in [at(&sent_before[0], &a, 6), {
            let mut m = at(&sent_before[0], &a, 2);
            m.client_msg_id = ClientMsgId::from("other");
            m
        }] {
            assert!(matches!(
                apply(vec![WriteOp::PutMessages(vec![clash])]),
                Err(tidemark_engine::StorageError::Rejected(_))
            ));
        }
        // A conversation new since the migration gets a key of its own.
        let c = ConversationId::from("c");
        apply(vec![WriteOp::PutMessages(vec![at(&sent_before[0], &c, 1)])]).unwrap();
        assert_eq!(by_id(&c, "bob", "x").map(|m| m.conversation), Some(c));
        let keys: i64 = conn
            .query_row(
                "SELECT count(DISTINCT key) FROM conversation_keys",
                [],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(keys, 3);
    }

    /// How long migration 005 takes on a large version 4 store (1M messages over 1,000
    /// conversations, in a file): the one-time cost of the upgrade at the first open. A
    /// measurement, not a check: `cargo test --release -p tidemark-storage-sqlite --lib
    /// version_5_upgrade_cost -- --ignored --nocapture`.
    #[test]
    #[ignore = "a measurement; takes seconds in release"]
    fn version_5_upgrade_cost() {
        let dir = std::env::temp_dir().join(format!("tidemark-v5-cost-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("store.db");
        let conn = Connection::open(&path).unwrap();
        conn.execute_batch("PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL;")
            .unwrap();
        apply_up_to(&conn, 4);
        conn.execute_batch(
            "BEGIN; \
             WITH RECURSIVE i(n) AS (SELECT 0 UNION ALL SELECT n + 1 FROM i WHERE n < 999999) \
             INSERT INTO messages (conversation, seq, client_msg_id, sender, kind, content, \
               created_at, server_time, status, revoked) \
             SELECT printf('conv%05d', n % 1000), n / 1000 + 1, \
               printf('friend%d:%08d', n % 8, n), printf('friend%d', n % 8), 'text', \
               CAST(printf('message %d: an ordinary line of chat, about sixty bytes long', n) \
                 AS BLOB), n, n, 'sent', 0 FROM i ORDER BY n % 1000, n; \
             COMMIT;",
        )
        .unwrap();
        let started = std::time::Instant::now();
        migrate(&conn).unwrap();
        let took = started.elapsed();
        let rows: i64 = conn
            .query_row("SELECT count(*) FROM messages", [], |r| r.get(0))
            .unwrap();
        assert_eq!(rows, 1_000_000);
        println!("migration 005 of 1M messages: {:.2} s", took.as_secs_f64());
        drop(conn);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
