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
        name: "003_messages_in_seq_order",
        sql: include_str!("../../migrations/003_messages_in_seq_order.sql"),
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
    migrate_to(conn, SERVER_SCHEMA_VERSION)
}

/// Brings the store to version `target` (at most [`SERVER_SCHEMA_VERSION`]); tests build
/// stores of an older version with it.
fn migrate_to(conn: &Connection, target: u64) -> Result<(), ServerStoreError> {
    if inspect(conn)? >= target {
        return Ok(());
    }
    for m in MIGRATIONS.iter().take_while(|m| m.version <= target) {
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
    fn a_version_2_store_keeps_every_message_in_version_3() {
        use crate::sqlite::SqliteServerStore;
        use crate::store::ServerStore;
        use tidemark_engine::{ConversationId, Seq};

        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("server.db");
        {
            let conn = Connection::open(&path).unwrap();
            migrate_to(&conn, 2).unwrap();
            assert_eq!(user_version(&conn).unwrap(), 2);
            // Two conversations whose appends interleave, as they do on a live server; one
            // message with every optional column set.
            conn.execute_batch(
                "INSERT INTO users (id) VALUES ('a'), ('b');
                 INSERT INTO conversations (id, kind, max_seq, min_seq, last_activity)
                 VALUES ('c1', 'group', 3, 1, 30), ('c2', 'direct', 2, 1, 20);
                 INSERT INTO members (user, conversation)
                 VALUES ('a', 'c1'), ('b', 'c1'), ('a', 'c2'), ('b', 'c2');
                 INSERT INTO messages (conversation, seq, client_msg_id, sender, kind, kind_name,
                     target_seq, content, created_at, server_time) VALUES
                 ('c1', 1, 'm1', 'a', 'text', NULL, NULL, X'6869', 1, 10),
                 ('c2', 1, 'm2', 'b', 'text', NULL, NULL, X'', 2, 11),
                 ('c1', 2, 'm3', 'b', 'custom', 'poll', NULL, X'00FF', 3, 12),
                 ('c2', 2, 'm4', 'a', 'text', NULL, NULL, X'21', 4, 13),
                 ('c1', 3, 'm5', 'a', 'edit', NULL, 1, X'686921', 5, 14);",
            )
            .unwrap();
        }
        let store = SqliteServerStore::open(&path).unwrap();
        let c1 = ConversationId::from("c1");
        let c2 = ConversationId::from("c2");
        let read = |c: &ConversationId| -> Vec<(u64, String, String, Vec<u8>)> {
            store
                .messages(c, Seq(1), Seq(10), 10)
                .unwrap()
                .into_iter()
                .map(|m| (m.seq.0, m.client_msg_id.0, m.sender.0, m.content))
                .collect()
        };
        assert_eq!(
            read(&c1),
            vec![
                (1, "m1".into(), "a".into(), b"hi".to_vec()),
                (2, "m3".into(), "b".into(), vec![0, 255]),
                (3, "m5".into(), "a".into(), b"hi!".to_vec()),
            ]
        );
        assert_eq!(
            read(&c2),
            vec![
                (1, "m2".into(), "b".into(), Vec::new()),
                (2, "m4".into(), "a".into(), b"!".to_vec()),
            ]
        );
        let edit = store.message(&c1, Seq(3)).unwrap().unwrap();
        assert_eq!(
            edit.kind,
            tidemark_engine::ContentKind::Edit { target: Seq(1) }
        );
        assert_eq!(edit.server_time.0, 14);
        drop(store);
        let conn = Connection::open(&path).unwrap();
        assert_eq!(user_version(&conn).unwrap(), SERVER_SCHEMA_VERSION);
        let ok: String = conn
            .query_row("PRAGMA integrity_check", [], |r| r.get(0))
            .unwrap();
        assert_eq!(ok, "ok");
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
}
