//! The server store's schema: numbered migrations in `server/migrations/NNN_name.sql`,
//! applied in order.
//!
//! The version a store is at lives in `PRAGMA user_version`; migration N takes it from N-1 to
//! N inside one transaction together with its statements, so a crash mid-migration leaves the
//! store at N-1. A store above [`SERVER_SCHEMA_VERSION`] was written by a newer build and is
//! refused before anything is written to it.

use rusqlite::{Connection, Transaction, TransactionBehavior};

use super::codec::{backend, corrupt};
use crate::ServerStoreError;

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
        name: "002_change_cursor",
        sql: include_str!("../../migrations/002_change_cursor.sql"),
    },
    Migration {
        version: 3,
        name: "003_messages_clustered",
        sql: include_str!("../../migrations/003_messages_clustered.sql"),
    },
];

/// The schema version this build writes and the highest it opens.
pub const SERVER_SCHEMA_VERSION: u64 = MIGRATIONS.len() as u64;

/// `PRAGMA application_id` of a server store ('TDMS'), set by migration 001. The client's
/// store is 'TDMK', so neither opens the other's file.
pub(super) const APPLICATION_ID: i64 = 0x5444_4D53;

/// Reads the store's version and checks that it is a server store this build can open; returns
/// the version (0: an empty database, nothing created yet). Only reads: a file that fails here
/// is left exactly as it was.
pub(super) fn inspect(conn: &Connection) -> Result<u64, ServerStoreError> {
    // The first read of the file: a file that is not a database fails here (NotADatabase).
    let found = user_version(conn)?;
    if found > SERVER_SCHEMA_VERSION {
        return Err(ServerStoreError::UnsupportedVersion {
            found,
            supported: SERVER_SCHEMA_VERSION,
        });
    }
    let app_id: i64 = conn
        .pragma_query_value(None, "application_id", |r| r.get(0))
        .map_err(|e| backend(e, "reading the application id"))?;
    // Reading the schema parses page 1 and the schema table: damage there shows up now, at
    // open, rather than at the first query.
    let objects: i64 = conn
        .query_row("SELECT count(*) FROM sqlite_schema", [], |r| r.get(0))
        .map_err(|e| backend(e, "reading the schema"))?;
    if found == 0 {
        if objects > 0 || app_id != 0 {
            return Err(corrupt(format!(
                "not a Tidemark server store: the database holds {objects} schema objects and \
                 application id {app_id:#x} but no schema version"
            )));
        }
    } else if app_id != APPLICATION_ID {
        return Err(corrupt(format!(
            "not a Tidemark server store: application id {app_id:#x}, expected \
             {APPLICATION_ID:#x}"
        )));
    }
    Ok(found)
}

/// Brings the store to [`SERVER_SCHEMA_VERSION`], one transaction per migration. A store that
/// is current is not written to.
pub(super) fn migrate(conn: &Connection) -> Result<(), ServerStoreError> {
    if inspect(conn)? >= SERVER_SCHEMA_VERSION {
        return Ok(());
    }
    for m in MIGRATIONS {
        // IMMEDIATE: take the write lock before reading the version, so two processes opening
        // the same new file cannot both apply a migration.
        let tx = Transaction::new_unchecked(conn, TransactionBehavior::Immediate)
            .map_err(|e| backend(e, "starting a migration"))?;
        let current = inspect(&tx)?;
        if current >= m.version {
            continue;
        }
        let doing = format!("applying migration {}", m.name);
        tx.execute_batch(m.sql).map_err(|e| backend(e, &doing))?;
        // user_version is a 32-bit header field; versions are small.
        let version = i64::try_from(m.version).unwrap_or(i64::MAX);
        tx.pragma_update(None, "user_version", version)
            .map_err(|e| backend(e, &doing))?;
        tx.commit().map_err(|e| backend(e, &doing))?;
    }
    Ok(())
}

/// `PRAGMA user_version`, which SQLite keeps as a signed 32-bit number in the header.
pub(super) fn user_version(conn: &Connection) -> Result<u64, ServerStoreError> {
    let v: i64 = conn
        .pragma_query_value(None, "user_version", |r| r.get(0))
        .map_err(|e| backend(e, "reading the schema version"))?;
    // A negative value is a version above i32::MAX written by something else: read it as the
    // unsigned 32-bit number it is, which is certainly unsupported.
    Ok(u64::try_from(v).unwrap_or_else(|_| u64::from((v as i32).cast_unsigned())))
}

#[cfg(test)]
mod tests {
    use super::*;

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
        assert_eq!(inspect(&conn).unwrap(), 0);
        migrate(&conn).unwrap();
        migrate(&conn).unwrap();
        assert_eq!(user_version(&conn).unwrap(), SERVER_SCHEMA_VERSION);
        assert_eq!(inspect(&conn).unwrap(), SERVER_SCHEMA_VERSION);
    }

    #[test]
    fn foreign_and_newer_databases_are_refused() {
        let conn = Connection::open_in_memory().unwrap();
        conn.execute_batch("CREATE TABLE other (x)").unwrap();
        assert!(matches!(
            migrate(&conn),
            Err(ServerStoreError::Corrupt { .. })
        ));

        // The client's store (application id 'TDMK') at version 1.
        let conn = Connection::open_in_memory().unwrap();
        conn.execute_batch("PRAGMA application_id = 1413762379; PRAGMA user_version = 1")
            .unwrap();
        assert!(matches!(
            inspect(&conn),
            Err(ServerStoreError::Corrupt { .. })
        ));

        let conn = Connection::open_in_memory().unwrap();
        conn.execute_batch("PRAGMA user_version = -1").unwrap();
        assert!(matches!(
            inspect(&conn),
            Err(ServerStoreError::UnsupportedVersion {
                found: 0xFFFF_FFFF,
                ..
            })
        ));
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

    /// A version 2 store migrates to version 3 (messages keyed by (conversation, seq),
    /// WITHOUT ROWID) with every row and column intact, a long content included, and a pull's
    /// range query then reads the key's b-tree alone.
    #[test]
    fn version_2_messages_are_kept_in_conversation_order() {
        let conn = Connection::open_in_memory().unwrap();
        conn.pragma_update(None, "foreign_keys", true).unwrap();
        apply_up_to(&conn, 2);
        conn.execute_batch(
            "INSERT INTO conversations (id, kind, max_seq, min_seq, last_activity) \
               VALUES ('a', 'group', 3, 0, 9), ('b', 'direct', 2, 0, 8); \
             INSERT INTO messages (conversation, seq, client_msg_id, sender, kind, kind_name, \
               target_seq, content, created_at, server_time) VALUES \
               ('b', 1, 'x', 'bob', 'text', NULL, NULL, X'6869', 5, 6), \
               ('a', 1, 'x', 'bob', 'custom', 'poll', NULL, X'01', 5, 7), \
               ('a', 3, 'y', 'carol', 'edit', NULL, 1, X'02', -1, -2), \
               ('b', 2, 'z', 'dave', 'revoke', NULL, 1, X'', 9, 10);",
        )
        .unwrap();
        // A content far longer than a page's share of a WITHOUT ROWID row: overflow pages.
        let long: Vec<u8> = (0..40_000u32).map(|i| (i % 251) as u8).collect();
        conn.execute(
            "INSERT INTO messages (conversation, seq, client_msg_id, sender, kind, content, \
               created_at, server_time) VALUES ('a', 2, 'big', 'carol', 'file', ?1, 7, 8)",
            [&long],
        )
        .unwrap();
        let rows = |conn: &Connection| -> Vec<Vec<rusqlite::types::Value>> {
            let mut st = conn
                .prepare(
                    "SELECT conversation, seq, client_msg_id, sender, kind, kind_name, \
                     target_seq, content, created_at, server_time FROM messages \
                     ORDER BY conversation, seq",
                )
                .unwrap();
            let got = st
                .query_map([], |r| (0..10).map(|i| r.get(i)).collect())
                .unwrap();
            got.collect::<Result<_, _>>().unwrap()
        };
        let before = rows(&conn);
        assert_eq!(before.len(), 5);

        migrate(&conn).unwrap();
        assert_eq!(user_version(&conn).unwrap(), 3);
        assert_eq!(rows(&conn), before);
        let content: Vec<u8> = conn
            .query_row(
                "SELECT content FROM messages WHERE conversation = 'a' AND seq = 2",
                [],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(content, long);
        let plan: String = conn
            .query_row(
                "EXPLAIN QUERY PLAN SELECT content FROM messages \
                 WHERE conversation = 'a' AND seq BETWEEN 1 AND 3 ORDER BY seq",
                [],
                |r| r.get(3),
            )
            .unwrap();
        assert_eq!(
            plan,
            "SEARCH messages USING PRIMARY KEY (conversation=? AND seq>? AND seq<?)"
        );
        // The key is still unique, and the conversation still a foreign key.
        assert!(conn
            .execute(
                "INSERT INTO messages (conversation, seq, client_msg_id, sender, kind, content, \
                   created_at, server_time) VALUES ('a', 3, 'w', 'bob', 'text', X'', 1, 1)",
                [],
            )
            .is_err());
        assert!(conn
            .execute(
                "INSERT INTO messages (conversation, seq, client_msg_id, sender, kind, content, \
                   created_at, server_time) VALUES ('nope', 1, 'w', 'bob', 'text', X'', 1, 1)",
                [],
            )
            .is_err());
        let check: String = conn
            .query_row("PRAGMA integrity_check", [], |r| r.get(0))
            .unwrap();
        assert_eq!(check, "ok");
    }

    /// How long migration 003 takes on a large version 2 store (1M messages over 1,000
    /// conversations, in a file): the one-time cost of the upgrade at the first open. A
    /// measurement, not a check: `cargo test --release -p tidemark-server --features sqlite
    /// --lib version_3_upgrade_cost -- --ignored --nocapture`.
    #[test]
    #[ignore = "a measurement; takes seconds in release"]
    fn version_3_upgrade_cost() {
        let dir = std::env::temp_dir().join(format!("tidemark-srv-v3-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let conn = Connection::open(dir.join("server.db")).unwrap();
        conn.execute_batch("PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL;")
            .unwrap();
        apply_up_to(&conn, 2);
        // Appended as a server appends them: conversations interleaved.
        conn.execute_batch(
            "BEGIN; \
             WITH RECURSIVE i(n) AS (SELECT 0 UNION ALL SELECT n + 1 FROM i WHERE n < 999) \
             INSERT INTO conversations (id, kind, max_seq, min_seq, last_activity) \
             SELECT printf('conv%05d', n), 'group', 1000, 0, 0 FROM i; \
             WITH RECURSIVE i(n) AS (SELECT 0 UNION ALL SELECT n + 1 FROM i WHERE n < 999999) \
             INSERT INTO messages (conversation, seq, client_msg_id, sender, kind, content, \
               created_at, server_time) \
             SELECT printf('conv%05d', n % 1000), n / 1000 + 1, \
               printf('friend%d:%08d', n % 8, n), printf('friend%d', n % 8), 'text', \
               CAST(printf('message %d: an ordinary line of chat, about sixty bytes long', n) \
                 AS BLOB), n, n FROM i; \
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
        println!("migration 003 of 1M messages: {:.2} s", took.as_secs_f64());
        drop(conn);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
