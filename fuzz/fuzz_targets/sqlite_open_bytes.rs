//! Arbitrary bytes as a store file.
//!
//! The bytes are written to a temp file and opened with `SqliteStorage::open_read_only` and
//! `SqliteStorage::open`. Each must return `Ok` or a clean `StorageError`: never a panic, never
//! a hang. A store that opens is then used as an app and the engine would: `load_snapshot`
//! (and an `Engine` started from it), `check_integrity`, a few reads, and one small `apply`;
//! each may fail with an error but must not panic.
//!
//! Seeds (`corpus/sqlite_open_bytes/`) are real stores with 512-byte pages made by
//! `cargo run --example gen_sqlite_seeds`, so mutations land in the schema, the rows and the
//! JSON range columns rather than only in the header.

#![no_main]

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use futures::executor::block_on;
use libfuzzer_sys::fuzz_target;
use tidemark_engine::{
    ClientMsgId, ContentKind, Conversation, ConversationId, ConversationKind, DeviceId, Direction,
    Engine, EngineConfig, Message, MessageStatus, Output, Seq, SeqRanges, Storage, Timestamp,
    UserId, WriteBatch, WriteOp,
};
use tidemark_storage_sqlite::SqliteStorage;

/// A directory of this process's own (libFuzzer may run several processes at once).
fn dir() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let d = std::env::temp_dir().join(format!("tidemark-fuzz-open-{}", std::process::id()));
        std::fs::create_dir_all(&d).expect("creating the temp dir");
        d
    })
}

fn write_store(path: &Path, data: &[u8]) {
    for suffix in ["", "-wal", "-shm", "-journal"] {
        let mut p = path.as_os_str().to_owned();
        p.push(suffix);
        let _ = std::fs::remove_file(PathBuf::from(p));
    }
    std::fs::write(path, data).expect("writing the temp store");
}

/// Uses an opened store as the app and the engine would. Errors are fine; panics are not.
fn exercise(store: &SqliteStorage, write: bool) {
    if let Ok(snapshot) = block_on(store.load_snapshot()) {
        let ids: Vec<ConversationId> = snapshot
            .conversations
            .iter()
            .take(4)
            .map(|c| c.id.clone())
            .collect();
        // The engine must start from whatever a store hands it.
        let config = EngineConfig::new(UserId::from("me"), DeviceId::from("d"));
        let mut engine = Engine::new(config, snapshot, Timestamp(1));
        for _ in 0..10_000 {
            if let Output::Timeout(_) = engine.poll_output() {
                break;
            }
        }
        for id in &ids {
            let _ = block_on(store.conversation(id));
            let _ = block_on(store.messages_page(id, None, Direction::Before, 5));
            let _ = block_on(store.messages_page(id, Some(Seq(3)), Direction::After, 5));
            let _ = block_on(store.unsent_messages(id));
            let _ = block_on(store.tombstones(id));
            let _ = block_on(store.message_by_client_id(
                id,
                &UserId::from("me"),
                &ClientMsgId::from("m1"),
            ));
        }
    }
    let _ = block_on(store.check_integrity());
    let _ = block_on(store.conversations_page(None, 10));
    let _ = block_on(store.total_unread());
    let _ = block_on(store.outbox());
    let id = ConversationId::from("fuzz");
    let _ = block_on(store.messages_page(&id, None, Direction::After, 3));
    if !write {
        return;
    }
    let mut conv = Conversation::new(id.clone(), ConversationKind::Group);
    conv.server_max_seq = Seq(2);
    conv.held = SeqRanges::from_range(Seq(1), Seq(2));
    let message = Message {
        conversation: id.clone(),
        seq: Some(Seq(2)),
        client_msg_id: ClientMsgId::from("fuzz-2"),
        sender: UserId::from("u1"),
        kind: ContentKind::Text,
        content: b"hi".to_vec(),
        created_at: Timestamp(5),
        server_time: Some(Timestamp(6)),
        status: MessageStatus::Sent,
        edit_seq: None,
        revoked: false,
    };
    let batch = WriteBatch {
        ops: vec![
            WriteOp::PutConversation(conv),
            WriteOp::PutMessages(vec![message]),
            WriteOp::PutTombstones {
                conversation: id.clone(),
                seqs: SeqRanges::from_range(Seq(1), Seq(1)),
            },
        ],
    };
    if block_on(store.apply(batch)).is_ok() {
        let _ = block_on(store.load_snapshot());
        let _ = block_on(store.messages_page(&id, None, Direction::Before, 3));
    }
}

fuzz_target!(|data: &[u8]| {
    let path = dir().join("store.db");

    write_store(&path, data);
    if let Ok(store) = SqliteStorage::open_read_only(&path) {
        exercise(&store, false);
    }

    write_store(&path, data);
    if let Ok(store) = SqliteStorage::open(&path) {
        exercise(&store, true);
    }
});
