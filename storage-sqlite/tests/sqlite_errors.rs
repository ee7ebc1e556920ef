//! Damaged, foreign, newer, read-only and full stores: each is a clear `StorageError` with
//! the SQLite error as its source, never a panic, and what was stored is not lost or changed.

#![allow(
    clippy::unwrap_used,
    reason = "test helpers: a failed setup step is a failed test"
)]

mod support;

use std::error::Error as _;
use std::fmt::Debug;
use std::path::Path;

use support::{
    assert_same_reads, batch, cid, client_ids, sample_batch, sent, variant, Rng, TempDir,
};
use tidemark_engine::{
    ClientMsgId, Direction, MemoryStorage, Message, SeqRanges, Storage, StorageError, UserId,
    WriteOp,
};
use tidemark_storage_sqlite::{SqliteStorage, SCHEMA_VERSION};

const CONVS: [&str; 4] = ["alpha", "beta", "gamma", "big"];

fn expect_variant<T: Debug>(r: Result<T, StorageError>, wanted: &str) -> StorageError {
    match r {
        Err(e) if variant(&e) == wanted => e,
        other => panic!("wanted {wanted}, got {other:?}"),
    }
}

/// `sample_batch` plus a conversation with 300 messages of 2 KiB, so the file has many pages.
fn big_batch() -> tidemark_engine::WriteBatch {
    let mut b = sample_batch();
    b.ops.push(WriteOp::PutConversation(support::conversation(
        "big", 1, 300,
    )));
    let msgs: Vec<Message> = (1..=300)
        .map(|s| {
            let mut m = sent("big", &format!("big-{s}"), s);
            m.content = vec![(s % 251) as u8; 2048];
            m
        })
        .collect();
    b.ops.push(WriteOp::PutMessages(msgs));
    b
}

/// Writes a store with [`big_batch`] at `path` and closes it; returns the reference copy.
async fn write_store(path: &Path) -> MemoryStorage {
    let store = SqliteStorage::open(path).unwrap();
    store.apply(big_batch()).await.unwrap();
    let memory = MemoryStorage::new();
    memory.apply(big_batch()).await.unwrap();
    memory
}

/// Reads everything through every method; each call must succeed or say `Corrupt`.
async fn read_all_or_corrupt(store: &SqliteStorage) -> usize {
    let mut corrupt = 0;
    let mut note = |r: Result<(), StorageError>| match r {
        Ok(()) => {}
        Err(e) if variant(&e) == "Corrupt" => corrupt += 1,
        Err(e) => panic!("a damaged store gave {e:?}, not Corrupt"),
    };
    note(store.load_snapshot().await.map(drop));
    note(store.total_unread().await.map(drop));
    note(store.outbox().await.map(drop));
    note(store.conversations_page(None, 100).await.map(drop));
    for conv in CONVS {
        let c = cid(conv);
        note(store.conversation(&c).await.map(drop));
        note(store.tombstones(&c).await.map(drop));
        note(store.unsent_messages(&c).await.map(drop));
        note(
            store
                .messages_page(&c, None, Direction::After, 1000)
                .await
                .map(drop),
        );
    }
    note(store.check_integrity().await);
    corrupt
}

#[tokio::test]
async fn a_file_that_is_not_a_database_is_corrupt_and_left_alone() {
    let dir = TempDir::new("garbage");
    let mut rng = Rng::new(7);
    let random: Vec<u8> = (0..8192).map(|_| rng.next_u64() as u8).collect();
    let text = b"these are my notes, not a database\n".repeat(40);
    for (name, bytes) in [("random.db", random), ("notes.db", text)] {
        let path = dir.file(name);
        std::fs::write(&path, &bytes).unwrap();
        let err = expect_variant(SqliteStorage::open(&path), "Corrupt");
        assert!(
            err.source().is_some(),
            "the rusqlite error is kept: {err:?}"
        );
        assert!(err.to_string().contains("corrupt"), "{err}");
        expect_variant(SqliteStorage::open_read_only(&path), "Corrupt");
        assert_eq!(std::fs::read(&path).unwrap(), bytes, "{name} was changed");
    }
}

#[tokio::test]
async fn a_truncated_database_is_corrupt_and_left_alone() {
    let dir = TempDir::new("truncated");
    let path = dir.file("store.db");
    write_store(&path).await;
    let bytes = std::fs::read(&path).unwrap();
    assert!(
        bytes.len() > 100 * 4096,
        "the store has many pages: {}",
        bytes.len()
    );

    for keep in [bytes.len() / 2, 3 * 4096, 4096 + 10] {
        let cut = dir.file(&format!("cut-{keep}.db"));
        std::fs::write(&cut, &bytes[..keep]).unwrap();
        match SqliteStorage::open(&cut) {
            Err(e) => {
                println!("cut at {keep}: open fails: {e}");
                expect_variant::<()>(Err(e), "Corrupt");
            }
            Ok(store) => {
                let found = read_all_or_corrupt(&store).await;
                println!("cut at {keep}: opens, {found} reads say Corrupt");
                assert!(found > 0, "cut at {keep}: damage unseen");
                expect_variant(store.check_integrity().await, "Corrupt");
            }
        }
        assert_eq!(
            std::fs::read(&cut).unwrap(),
            &bytes[..keep],
            "cut at {keep} was changed"
        );
    }
}

#[tokio::test]
async fn a_damaged_page_is_found_and_the_file_left_alone() {
    let dir = TempDir::new("damaged");
    let path = dir.file("store.db");
    write_store(&path).await;
    let mut bytes = std::fs::read(&path).unwrap();
    let page = 4096;
    let pages = bytes.len() / page;
    // A page in the middle (message rows or an index): garbage over all of it.
    let victim = pages / 2;
    bytes[victim * page..(victim + 1) * page].fill(0x5A);
    std::fs::write(&path, &bytes).unwrap();

    let store = SqliteStorage::open(&path).unwrap();
    let err = expect_variant(store.check_integrity().await, "Corrupt");
    assert!(err.to_string().contains("integrity check"), "{err}");
    read_all_or_corrupt(&store).await;
    drop(store);
    assert_eq!(
        std::fs::read(&path).unwrap(),
        bytes,
        "the damaged file was changed"
    );
}

#[tokio::test]
async fn damaged_values_are_corrupt_and_the_rest_still_reads() {
    let dir = TempDir::new("values");
    let path = dir.file("store.db");
    let memory = write_store(&path).await;
    {
        // Damage written behind the store's back, as a bad disk or another program would.
        let raw = rusqlite::Connection::open(&path).unwrap();
        raw.execute_batch(
            "UPDATE conversations SET held = '[[5,1]]' WHERE id = 'alpha';
             UPDATE messages SET kind = 'sticker' WHERE client_msg_id = 'beta-4';
             UPDATE messages SET seq = -4 WHERE client_msg_id = 'gamma-1';
             UPDATE outbox SET attempts = -1;
             UPDATE tombstones SET ranges = 'not json' WHERE conversation = 'gamma';",
        )
        .unwrap();
    }
    let store = SqliteStorage::open(&path).unwrap();
    let detail = |e: StorageError| e.to_string();
    let e = expect_variant(store.load_snapshot().await, "Corrupt");
    assert!(detail(e).contains("conversations.held"));
    expect_variant(store.conversation(&cid("alpha")).await, "Corrupt");
    expect_variant(
        store
            .messages_page(&cid("beta"), None, Direction::After, 100)
            .await,
        "Corrupt",
    );
    expect_variant(
        store
            .messages_page(&cid("gamma"), None, Direction::After, 100)
            .await,
        "Corrupt",
    );
    expect_variant(store.outbox().await, "Corrupt");
    expect_variant(store.tombstones(&cid("gamma")).await, "Corrupt");
    expect_variant(store.check_integrity().await, "Corrupt");

    // Everything not damaged reads as it was written.
    for conv in ["beta", "gamma", "big"] {
        assert_eq!(
            store.conversation(&cid(conv)).await.unwrap(),
            memory.conversation(&cid(conv)).await.unwrap()
        );
    }
    let id = ClientMsgId::from("alpha-1");
    assert_eq!(
        store
            .message_by_client_id(&cid("alpha"), &UserId::from("me"), &id)
            .await
            .unwrap(),
        memory
            .message_by_client_id(&cid("alpha"), &UserId::from("me"), &id)
            .await
            .unwrap()
    );
    assert_eq!(
        store
            .messages_page(&cid("big"), None, Direction::Before, 1000)
            .await
            .unwrap(),
        memory
            .messages_page(&cid("big"), None, Direction::Before, 1000)
            .await
            .unwrap()
    );
}

#[tokio::test]
async fn a_newer_schema_is_refused_and_left_alone() {
    let dir = TempDir::new("newer");
    let path = dir.file("store.db");
    write_store(&path).await;
    {
        let raw = rusqlite::Connection::open(&path).unwrap();
        raw.pragma_update(None, "user_version", SCHEMA_VERSION as i64 + 1)
            .unwrap();
        // Back to a rollback journal so the bytes checked below are the whole store.
        raw.pragma_update(None, "journal_mode", "DELETE").unwrap();
    }
    let bytes = std::fs::read(&path).unwrap();
    for r in [
        SqliteStorage::open(&path),
        SqliteStorage::open_read_only(&path),
    ] {
        match r {
            Err(StorageError::UnsupportedVersion { found, supported }) => {
                assert_eq!((found, supported), (SCHEMA_VERSION + 1, SCHEMA_VERSION));
            }
            other => panic!("wanted UnsupportedVersion, got {other:?}"),
        }
    }
    assert_eq!(
        std::fs::read(&path).unwrap(),
        bytes,
        "the newer store was changed"
    );
    // Not even the journal mode was switched: no WAL file appeared.
    assert!(!dir.file("store.db-wal").exists());
}

#[tokio::test]
async fn a_foreign_sqlite_database_is_refused_and_left_alone() {
    let dir = TempDir::new("foreign");
    let path = dir.file("other.db");
    {
        let raw = rusqlite::Connection::open(&path).unwrap();
        raw.execute_batch("CREATE TABLE notes (body TEXT); INSERT INTO notes VALUES ('hi');")
            .unwrap();
    }
    let bytes = std::fs::read(&path).unwrap();
    let err = expect_variant(SqliteStorage::open(&path), "Corrupt");
    assert!(err.to_string().contains("not a Tidemark store"), "{err}");
    assert_eq!(std::fs::read(&path).unwrap(), bytes);
}

#[tokio::test]
async fn a_read_only_store_reads_and_refuses_writes() {
    let dir = TempDir::new("readonly");
    let path = dir.file("store.db");
    let memory = write_store(&path).await;
    let ids = client_ids();
    let write = batch(vec![
        WriteOp::PutConversation(support::conversation("delta", 5, 1)),
        WriteOp::PutMessages(vec![sent("delta", "new", 1)]),
    ]);

    // Opened read-only on purpose.
    let store = SqliteStorage::open_read_only(&path).unwrap();
    assert_same_reads(&memory, &store, &CONVS, &ids, false, "read-only").await;
    let err = expect_variant(store.apply(write.clone()).await, "ReadOnly");
    assert!(err.source().is_some());
    assert_same_reads(
        &memory,
        &store,
        &CONVS,
        &ids,
        false,
        "after the refused write",
    )
    .await;
    drop(store);

    // A file without write permission. Root ignores permissions: then there is nothing to
    // test here (the read-only open above covers the error path).
    let mut perm = std::fs::metadata(&path).unwrap().permissions();
    perm.set_readonly(true);
    std::fs::set_permissions(&path, perm).unwrap();
    if std::fs::OpenOptions::new().write(true).open(&path).is_ok() {
        println!("file permissions are not enforced for this user (root?): skipped chmod case");
        return;
    }
    let store = SqliteStorage::open(&path).unwrap();
    assert_same_reads(&memory, &store, &CONVS, &ids, false, "chmod read-only").await;
    expect_variant(store.apply(write).await, "ReadOnly");
}

#[tokio::test]
async fn a_full_disk_fails_the_batch_and_keeps_everything() {
    let dir = TempDir::new("full");
    let path = dir.file("store.db");
    let store = SqliteStorage::open(&path).unwrap();
    let memory = MemoryStorage::new();
    for s in [&store as &dyn Storage, &memory] {
        s.apply(sample_batch()).await.unwrap();
    }
    let ids = client_ids();

    // No room to grow: the next large batch cannot fit.
    let pages = store.set_max_page_count(1).unwrap();
    assert!(pages > 1);
    let mut big = batch(vec![WriteOp::PutTombstones {
        conversation: cid("alpha"),
        seqs: SeqRanges::from_range(tidemark_engine::Seq(1), tidemark_engine::Seq(3)),
    }]);
    big.ops.extend(big_batch().ops);
    let err = expect_variant(store.apply(big.clone()).await, "Full");
    assert!(err.source().is_some());
    assert_same_reads(&memory, &store, &support::CONVS, &ids, true, "after Full").await;
    assert_same_reads(&memory, &store, &CONVS, &ids, true, "after Full").await;
    store.check_integrity().await.unwrap();

    // Room again: the same batch commits.
    store.set_max_page_count(1 << 30).unwrap();
    store.apply(big.clone()).await.unwrap();
    memory.apply(big).await.unwrap();
    drop(store);
    let reopened = SqliteStorage::open(&path).unwrap();
    assert_same_reads(&memory, &reopened, &CONVS, &ids, false, "reopened").await;
    reopened.check_integrity().await.unwrap();
}

#[tokio::test]
async fn a_path_that_cannot_be_opened_is_a_backend_error() {
    let dir = TempDir::new("missing");
    let path = dir.file("no/such/dir/store.db");
    let err = expect_variant(SqliteStorage::open(&path), "Backend");
    assert!(err.source().is_some());
}
