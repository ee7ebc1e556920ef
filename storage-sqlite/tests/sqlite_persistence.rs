//! What a store keeps: across close and reopen, across clones, after a failed batch; and
//! how fast a large store's snapshot loads.

#![allow(
    clippy::unwrap_used,
    reason = "test helpers: a failed setup step is a failed test"
)]

mod support;

use std::time::Instant;

use support::{
    assert_same_reads, batch, cid, client_ids, conversation, pending, random_batch, sample_batch,
    sent, Rng, TempDir,
};
use tidemark_engine::{
    ClientMsgId, ContentKind, Conversation, ConversationCursor, ConversationKind, LatestMessage,
    MemoryStorage, OutboxEntry, Seq, SeqRanges, Storage, StorageError, Timestamp, UserId, WriteOp,
};
use tidemark_storage_sqlite::SqliteStorage;

const CONVS: [&str; 6] = ["alpha", "beta", "gamma", "c1", "c2", "c3"];

/// Stores are handed to engines and tasks on any thread, and clones share one connection.
#[test]
fn the_store_is_send_sync_clone() {
    fn check<T: Storage + Clone + Send + Sync + 'static>() {}
    check::<SqliteStorage>();
}

#[tokio::test]
async fn close_and_reopen_keeps_everything() {
    let dir = TempDir::new("reopen");
    let path = dir.file("store.db");
    let memory = MemoryStorage::new();
    let ids: Vec<String> = client_ids()
        .into_iter()
        .chain(["out-1", "failed-1", "alpha-1", "beta-2"].map(String::from))
        .collect();
    {
        let store = SqliteStorage::open(&path).unwrap();
        store.apply(sample_batch()).await.unwrap();
        memory.apply(sample_batch()).await.unwrap();
        let mut rng = Rng::new(42);
        for _ in 0..40 {
            let b = random_batch(&mut rng, &client_ids());
            assert_eq!(
                store.apply(b.clone()).await.is_ok(),
                memory.apply(b).await.is_ok()
            );
        }
        assert_same_reads(&memory, &store, &CONVS, &ids, true, "before close").await;
    }
    // Every clone dropped: the connection is closed and the WAL checkpointed away.
    assert!(!dir.file("store.db-wal").exists());
    let reopened = SqliteStorage::open(&path).unwrap();
    assert_same_reads(&memory, &reopened, &CONVS, &ids, true, "after reopen").await;
    drop(reopened);
    // And once more, read-only.
    let read_only = SqliteStorage::open_read_only(&path).unwrap();
    assert_same_reads(&memory, &read_only, &CONVS, &ids, true, "read-only").await;
}

#[tokio::test]
async fn clones_share_one_connection() {
    let dir = TempDir::new("clones");
    let path = dir.file("store.db");
    let a = SqliteStorage::open(&path).unwrap();
    let b = a.clone();
    a.apply(batch(vec![WriteOp::PutConversation(conversation(
        "c", 1, 0,
    ))]))
    .await
    .unwrap();
    assert!(b.conversation(&cid("c")).await.unwrap().is_some());
    assert!(format!("{b:?}").contains("store.db"), "{b:?}");
    let memory = SqliteStorage::open_in_memory().unwrap();
    assert!(format!("{memory:?}").contains("SqliteStorage"));
}

#[tokio::test]
async fn a_failed_batch_changes_nothing() {
    let store = SqliteStorage::open_in_memory().unwrap();
    store.apply(sample_batch()).await.unwrap();
    let before = store.load_snapshot().await.unwrap();
    let err = store
        .apply(batch(vec![
            WriteOp::PutConversation(conversation("new", 9, 3)),
            WriteOp::PutOutbox(OutboxEntry {
                conversation: cid("new"),
                client_msg_id: ClientMsgId::from("o"),
                kind: ContentKind::Text,
                content: Vec::new(),
                created_at: Timestamp(1),
                attempts: 0,
            }),
            WriteOp::PutTombstones {
                conversation: cid("alpha"),
                seqs: SeqRanges::from_range(Seq(1), Seq(3)),
            },
            WriteOp::PutMessages(vec![pending("new", "p", 1), sent("new", "a", 1)]),
            // Seq 1 of "new" is now held by "a": a second message there breaks the batch.
            WriteOp::PutMessages(vec![sent("new", "b", 1)]),
        ]))
        .await
        .unwrap_err();
    assert!(matches!(err, StorageError::Rejected(_)), "{err:?}");
    assert_eq!(store.load_snapshot().await.unwrap(), before);
    assert!(store.conversation(&cid("new")).await.unwrap().is_none());
    assert!(store.tombstones(&cid("alpha")).await.unwrap().count() == 2);
    assert!(store
        .message_by_client_id(
            &cid("alpha"),
            &UserId::from("me"),
            &ClientMsgId::from("alpha-1")
        )
        .await
        .unwrap()
        .is_some());

    // A value SQLite cannot store in order is refused the same way.
    let err = store
        .apply(batch(vec![
            WriteOp::PutConversation(conversation("x", 1, 1)),
            WriteOp::PutMessages(vec![tidemark_engine::Message {
                seq: Some(Seq(u64::MAX)),
                ..sent("x", "huge", 1)
            }]),
        ]))
        .await
        .unwrap_err();
    assert!(matches!(err, StorageError::Rejected(_)), "{err:?}");
    assert_eq!(store.load_snapshot().await.unwrap(), before);
    store.check_integrity().await.unwrap();
}

/// A store of 100k conversations: the snapshot loads them all in one call. Prints the
/// times; asserts only the content (timing varies with the machine).
#[tokio::test]
async fn snapshot_of_100k_conversations() {
    const N: usize = 100_000;
    let dir = TempDir::new("snapshot");
    let path = dir.file("store.db");
    let convs: Vec<Conversation> = (0..N)
        .map(|i| {
            let id = format!("conv-{i:06}");
            let mut held = SeqRanges::from_range(Seq(1), Seq(40));
            held.insert_range(Seq(60), Seq(100 + i as u64 % 7));
            let latest = sent(&id, "latest", 100);
            Conversation {
                server_max_seq: Seq(120),
                held,
                read_seq: Seq(90),
                not_unread: SeqRanges::from_range(Seq(95), Seq(96)),
                unread: (i % 5) as u64,
                latest: Some(LatestMessage::of(&latest)),
                last_activity: Timestamp((i as u64 * 7919) % 1_000_003),
                ..Conversation::new(cid(&id), ConversationKind::Group)
            }
        })
        .collect();
    let started = Instant::now();
    {
        let store = SqliteStorage::open(&path).unwrap();
        let ops = convs
            .iter()
            .cloned()
            .map(WriteOp::PutConversation)
            .collect();
        store.apply(batch(ops)).await.unwrap();
    }
    let written = started.elapsed();

    let started = Instant::now();
    let store = SqliteStorage::open(&path).unwrap();
    let opened = started.elapsed();
    let started = Instant::now();
    let snapshot = store.load_snapshot().await.unwrap();
    let loaded = started.elapsed();
    let started = Instant::now();
    let page = store.conversations_page(None, 50).await.unwrap();
    let next = store
        .conversations_page(Some(ConversationCursor::after(&page[49])), 50)
        .await
        .unwrap();
    let paged = started.elapsed();
    println!(
        "100k conversations: write {written:?}, open {opened:?}, load_snapshot {loaded:?}, \
         two list pages {paged:?} ({} bytes on disk)",
        std::fs::metadata(&path).unwrap().len()
    );

    // Snapshot order is by id, as the memory store's.
    assert_eq!(snapshot.conversations, convs);
    let mut by_activity = convs;
    by_activity.sort_by(|a, b| {
        b.last_activity
            .cmp(&a.last_activity)
            .then_with(|| a.id.cmp(&b.id))
    });
    assert_eq!(page, by_activity[..50]);
    assert_eq!(next, by_activity[50..100]);
    assert_eq!(
        store.total_unread().await.unwrap(),
        (0..N as u64).map(|i| i % 5).sum::<u64>()
    );
}
