//! Writes the seed stores of the `sqlite_open_bytes` target: real Tidemark stores with
//! 512-byte pages (so each is a few KiB), plus a foreign database and a store from a newer
//! schema version.
//!
//! ```text
//! cd fuzz && cargo run --example gen_sqlite_seeds -- corpus/sqlite_open_bytes
//! ```

use std::path::{Path, PathBuf};

use futures::executor::block_on;
use rusqlite::Connection;
use tidemark_engine::{
    ClientMsgId, ContentKind, Conversation, ConversationId, ConversationKind, LatestMessage,
    Message, MessageStatus, OutboxEntry, PendingChange, Seq, SeqRanges, Storage, Timestamp, UserId,
    WriteBatch, WriteOp,
};
use tidemark_storage_sqlite::SqliteStorage;

type Result<T> = std::result::Result<T, Box<dyn std::error::Error>>;

fn small_connection(path: &Path) -> Result<Connection> {
    let _ = std::fs::remove_file(path);
    let conn = Connection::open(path)?;
    conn.pragma_update(None, "page_size", 512)?;
    Ok(conn)
}

fn vacuum(path: &Path) -> Result<()> {
    let conn = Connection::open(path)?;
    conn.execute_batch("VACUUM")?;
    Ok(())
}

fn message(conv: &str, id: &str, seq: Option<u64>, kind: ContentKind) -> Message {
    Message {
        conversation: ConversationId::from(conv),
        seq: seq.map(Seq),
        client_msg_id: ClientMsgId::from(id),
        sender: UserId::from(if seq.is_some() { "u1" } else { "me" }),
        kind,
        content: format!("body {id}").into_bytes(),
        created_at: Timestamp(100 + seq.unwrap_or(50)),
        server_time: seq.map(|s| Timestamp(1000 + s)),
        status: if seq.is_some() {
            MessageStatus::Sent
        } else {
            MessageStatus::Pending
        },
        edit_seq: None,
        revoked: false,
    }
}

/// A small consistent store: two conversations with messages, a gap, tombstones, an edit, a
/// revoke, a pending send with its outbox entry, a failed send and a pending change.
fn sample() -> WriteBatch {
    let mut ops = Vec::new();
    for (i, name) in ["alpha", "beta"].into_iter().enumerate() {
        let mut held = SeqRanges::from_range(Seq(1), Seq(4));
        held.insert_range(Seq(7), Seq(9));
        let latest = message(name, &format!("{name}-9"), Some(9), ContentKind::Text);
        ops.push(WriteOp::PutConversation(Conversation {
            server_max_seq: Seq(9),
            server_min_seq: Seq(1),
            held,
            read_seq: Seq(3),
            not_unread: SeqRanges::from_range(Seq(8), Seq(8)),
            unread: 5,
            latest: Some(LatestMessage::of(&latest)),
            last_activity: Timestamp(1009 + i as u64),
            deleted: SeqRanges::from_range(Seq(4), Seq(4)),
            ..Conversation::new(ConversationId::from(name), ConversationKind::Group)
        }));
        let mut msgs: Vec<Message> = [1, 2, 3, 7, 9]
            .into_iter()
            .map(|s| message(name, &format!("{name}-{s}"), Some(s), ContentKind::Text))
            .collect();
        msgs.push(message(
            name,
            &format!("{name}-8"),
            Some(8),
            ContentKind::Edit { target: Seq(1) },
        ));
        msgs[1].kind = ContentKind::Custom("poll ✓".into());
        ops.push(WriteOp::PutMessages(msgs));
        ops.push(WriteOp::PutTombstones {
            conversation: ConversationId::from(name),
            seqs: SeqRanges::from_range(Seq(4), Seq(4)),
        });
        ops.push(WriteOp::EditMessage {
            conversation: ConversationId::from(name),
            target: Seq(1),
            edit_seq: Seq(8),
            sender: UserId::from("u1"),
            content: b"edited".to_vec(),
        });
    }
    ops.push(WriteOp::RevokeMessage {
        conversation: ConversationId::from("beta"),
        target: Seq(2),
        revoke_seq: Seq(9),
        sender: UserId::from("u1"),
    });
    let mut failed = message("alpha", "failed-1", None, ContentKind::Text);
    failed.status = MessageStatus::Failed {
        reason: "too large".into(),
    };
    ops.push(WriteOp::PutMessages(vec![
        message("alpha", "out-1", None, ContentKind::Image),
        failed,
    ]));
    ops.push(WriteOp::PutOutbox(OutboxEntry {
        conversation: ConversationId::from("alpha"),
        client_msg_id: ClientMsgId::from("out-1"),
        kind: ContentKind::Image,
        content: b"body out-1".to_vec(),
        created_at: Timestamp(150),
        attempts: 1,
    }));
    ops.push(WriteOp::PutPendingChange(PendingChange {
        conversation: ConversationId::from("beta"),
        seq: Seq(12),
        target: Seq(11),
        sender: UserId::from("u1"),
        kind: ContentKind::Revoke { target: Seq(11) },
        content: Vec::new(),
    }));
    WriteBatch { ops }
}

fn main() -> Result<()> {
    let out = PathBuf::from(
        std::env::args()
            .nth(1)
            .unwrap_or_else(|| "corpus/sqlite_open_bytes".to_owned()),
    );
    std::fs::create_dir_all(&out)?;

    // A fresh store: the schema only.
    let path = out.join("seed-empty-store");
    SqliteStorage::from_connection(small_connection(&path)?)?;
    vacuum(&path)?;

    // A store with a little of everything.
    let path = out.join("seed-sample-store");
    let store = SqliteStorage::from_connection(small_connection(&path)?)?;
    block_on(store.apply(sample()))?;
    block_on(store.check_integrity())?;
    drop(store);
    vacuum(&path)?;

    // A store from a newer schema version (refused untouched).
    let path = out.join("seed-newer-version");
    SqliteStorage::from_connection(small_connection(&path)?)?;
    Connection::open(&path)?.pragma_update(None, "user_version", 99)?;
    vacuum(&path)?;

    // A SQLite database that is not a Tidemark store.
    let path = out.join("seed-foreign-db");
    let conn = small_connection(&path)?;
    conn.execute_batch(
        "CREATE TABLE t (a INTEGER PRIMARY KEY, b TEXT); INSERT INTO t VALUES (1, 'x');",
    )?;
    drop(conn);

    for entry in std::fs::read_dir(&out)? {
        let entry = entry?;
        println!(
            "{} {} bytes",
            entry.path().display(),
            entry.metadata()?.len()
        );
    }
    Ok(())
}
