//! Fresh stores, conversation records and the unread total.

use tidemark_engine::{
    ContentKind, Conversation, ConversationKind, Direction, LatestMessage, Seq, Storage,
    SyncSnapshot, Timestamp, UserId, WriteBatch,
};

use super::fixtures::*;
use super::{assert_dumps_equal, dump, sample_batch, Backend, CaseResult};

/// A fresh store reads as empty through every method (snapshot, lookups, both list and
/// message pages at several anchors, unsent, unread, outbox, tombstones) and passes its
/// integrity check.
pub async fn empty_store_reads_empty<F: Backend>(factory: F) -> CaseResult {
    let store = factory.open(0).await?;
    let nobody = cid("nobody");
    assert_eq!(
        store.load_snapshot().await?,
        SyncSnapshot::default(),
        "snapshot of a fresh store"
    );
    assert_eq!(store.conversation(&nobody).await?, None);
    assert!(store.conversations_page(None, 10).await?.is_empty());
    assert!(store
        .conversations_page(Some(cursor(5, "x")), 10)
        .await?
        .is_empty());
    for direction in [Direction::Before, Direction::After] {
        for anchor in [None, Some(0), Some(1), Some(100)] {
            assert_eq!(
                page_seqs(&store, "nobody", anchor, direction, 10).await?,
                no_seqs(),
                "messages_page {direction:?} {anchor:?} of a fresh store"
            );
        }
    }
    assert_eq!(
        store
            .message_by_client_id(&nobody, &me(), &mid("m"))
            .await?,
        None
    );
    assert!(store.unsent_messages(&nobody).await?.is_empty());
    assert_eq!(store.total_unread().await?, 0);
    assert!(store.outbox().await?.is_empty());
    assert!(store.tombstones(&nobody).await?.is_empty());
    store.check_integrity().await?;
    Ok(())
}

/// An empty batch is accepted and changes nothing, on a fresh store and on a populated one.
pub async fn empty_batch_changes_nothing<F: Backend>(factory: F) -> CaseResult {
    let store = factory.open(0).await?;
    store.apply(WriteBatch::default()).await?;
    assert_eq!(store.load_snapshot().await?, SyncSnapshot::default());
    assert!(store.conversations_page(None, 10).await?.is_empty());

    store.apply(sample_batch()).await?;
    let before = dump(&store).await?;
    store.apply(WriteBatch::default()).await?;
    assert_dumps_equal(&before, &dump(&store).await?, "after an empty batch");
    store.check_integrity().await?;
    Ok(())
}

/// A conversation with every field set (several held ranges, floor, read seq, not-unread and
/// deleted sets, a latest message with a binary preview, activity).
fn full_conversation(id: &str) -> Conversation {
    Conversation {
        id: cid(id),
        kind: ConversationKind::Direct,
        server_max_seq: Seq(40),
        server_min_seq: Seq(3),
        held: ranges(&[(3, 10), (20, 25), (40, 40)]),
        read_seq: Seq(8),
        not_unread: ranges(&[(9, 9), (21, 22)]),
        unread: 17,
        latest: Some(LatestMessage {
            seq: Some(Seq(40)),
            client_msg_id: mid("latest"),
            sender: UserId::from("carol"),
            kind: ContentKind::Custom("poll".to_owned()),
            preview: vec![0, 1, 2, 254, 255, b'x'],
            time: Timestamp(12_345),
        }),
        last_activity: Timestamp(12_345),
        deleted: ranges(&[(3, 5)]),
    }
}

/// `PutConversation` stores every field: `conversation()`, the list page and the snapshot give
/// each record back unchanged (a full one, a bare one, one whose latest is a pending edit).
pub async fn put_conversation_round_trips_every_field<F: Backend>(factory: F) -> CaseResult {
    let store = factory.open(0).await?;
    let full = full_conversation("full");
    let bare = Conversation::new(cid("bare"), ConversationKind::Group);
    let pending_latest = Conversation {
        latest: Some(LatestMessage {
            seq: None,
            client_msg_id: mid("draft"),
            sender: UserId::from("me"),
            kind: ContentKind::Edit { target: Seq(2) },
            preview: Vec::new(),
            time: Timestamp(7),
        }),
        ..conv("pending-latest", 7, 0, 0)
    };
    let all = [full.clone(), bare.clone(), pending_latest.clone()];
    apply(&store, all.iter().cloned().map(put_conv).collect()).await?;

    for c in &all {
        assert_eq!(
            store.conversation(&c.id).await?.as_ref(),
            Some(c),
            "conversation {:?} read back",
            c.id
        );
    }
    assert_eq!(
        store.conversations_page(None, 10).await?,
        vec![full.clone(), pending_latest.clone(), bare.clone()],
        "the list holds the same records, newest first"
    );
    let mut snapshot = store.load_snapshot().await?;
    super::normalize_snapshot(&mut snapshot);
    assert_eq!(
        snapshot,
        SyncSnapshot {
            conversations: vec![bare, full, pending_latest],
            outbox: Vec::new(),
            pending_changes: Vec::new(),
            sync_token: None,
        }
    );
    assert_eq!(store.total_unread().await?, 17);
    store.check_integrity().await?;
    Ok(())
}

/// `PutConversation` replaces the whole record: nothing of the old one (held ranges, latest,
/// not-unread, deleted, unread, kind) survives a put of a bare record with the same id, and
/// putting the full record again brings every field back.
pub async fn put_conversation_replaces_every_field<F: Backend>(factory: F) -> CaseResult {
    let store = factory.open(0).await?;
    let full = full_conversation("c");
    apply(&store, vec![put_conv(full.clone())]).await?;
    let bare = Conversation {
        last_activity: Timestamp(5),
        ..Conversation::new(cid("c"), ConversationKind::Group)
    };
    apply(&store, vec![put_conv(bare.clone())]).await?;
    assert_eq!(store.conversation(&cid("c")).await?, Some(bare.clone()));
    assert_eq!(
        store.conversations_page(None, 10).await?,
        vec![bare.clone()]
    );
    assert_eq!(store.load_snapshot().await?.conversations, vec![bare]);
    assert_eq!(store.total_unread().await?, 0);

    apply(&store, vec![put_conv(full.clone())]).await?;
    assert_eq!(store.conversation(&cid("c")).await?, Some(full.clone()));
    assert_eq!(store.load_snapshot().await?.conversations, vec![full]);
    assert_eq!(store.total_unread().await?, 17);
    Ok(())
}

/// Re-putting a conversation with another last activity moves it in the list: no stale entry
/// at its old position, no duplicate; a re-put with the same activity keeps its place and
/// takes the new fields.
pub async fn conversation_upsert_reorders_the_list<F: Backend>(factory: F) -> CaseResult {
    let store = factory.open(0).await?;
    apply(
        &store,
        vec![
            put_conv(conv("a", 100, 0, 0)),
            put_conv(conv("b", 200, 0, 0)),
            put_conv(conv("c", 300, 0, 0)),
        ],
    )
    .await?;
    assert_eq!(walk_ids(&store, 1).await?, strs(["c", "b", "a"]));

    apply(&store, vec![put_conv(conv("a", 400, 0, 0))]).await?;
    assert_eq!(walk_ids(&store, 1).await?, strs(["a", "c", "b"]));
    assert_eq!(list_ids(&store, None, 10).await?, strs(["a", "c", "b"]));

    apply(&store, vec![put_conv(conv("c", 50, 0, 0))]).await?;
    assert_eq!(walk_ids(&store, 2).await?, strs(["a", "b", "c"]));
    // Nothing is left at a's or c's old positions.
    assert_eq!(
        list_ids(&store, Some(cursor(100, "a")), 10).await?,
        strs(["c"])
    );
    assert_eq!(
        list_ids(&store, Some(cursor(300, "c")), 10).await?,
        strs(["b", "c"])
    );

    apply(&store, vec![put_conv(conv("b", 200, 9, 0))]).await?;
    assert_eq!(walk_ids(&store, 10).await?, strs(["a", "b", "c"]));
    assert_eq!(
        store.conversation(&cid("b")).await?.map(|c| c.unread),
        Some(9)
    );
    assert_eq!(store.load_snapshot().await?.conversations.len(), 3);
    assert_eq!(store.total_unread().await?, 9);
    Ok(())
}

/// Conversation ids match exactly: case, leading/trailing spaces, prefixes and Unicode
/// normalization forms (precomposed `é` vs `e` + combining accent) are distinct ids.
pub async fn conversation_ids_are_exact<F: Backend>(factory: F) -> CaseResult {
    let store = factory.open(0).await?;
    let ids = ["a", "A", "a ", " a", "ab", "\u{e9}", "e\u{301}"];
    let ops = ids
        .iter()
        .zip(1u64..)
        .map(|(id, unread)| put_conv(conv(id, 10, unread, 0)))
        .collect();
    apply(&store, ops).await?;
    for (id, unread) in ids.iter().zip(1u64..) {
        let c = store.conversation(&cid(id)).await?;
        assert_eq!(
            c.map(|c| (c.id.0, c.unread)),
            Some(((*id).to_owned(), unread)),
            "lookup of {id:?}"
        );
    }
    for absent in ["b", "", "a  ", "AB", "e"] {
        assert_eq!(store.conversation(&cid(absent)).await?, None, "{absent:?}");
    }
    assert_eq!(store.conversations_page(None, 100).await?.len(), ids.len());
    assert_eq!(store.total_unread().await?, 28);
    Ok(())
}

/// `total_unread` is the sum of every conversation's unread count (beyond `u32`), follows
/// upserts, counts conversations without messages, and is not moved by messages.
pub async fn total_unread_sums_conversations<F: Backend>(factory: F) -> CaseResult {
    let store = factory.open(0).await?;
    assert_eq!(store.total_unread().await?, 0);
    apply(&store, vec![put_conv(conv("x", 1, 3, 0))]).await?;
    assert_eq!(store.total_unread().await?, 3);
    apply(&store, vec![put_conv(conv("y", 2, 5_000_000_000, 0))]).await?;
    assert_eq!(store.total_unread().await?, 5_000_000_003);
    apply(&store, vec![put_conv(conv("x", 1, 0, 0))]).await?;
    assert_eq!(store.total_unread().await?, 5_000_000_000);
    apply(
        &store,
        vec![
            put_conv(conv("y", 2, 7, 0)),
            put_conv(conv("z", 3, 0, 3)),
            put(sent_run("z", 1..=3)),
        ],
    )
    .await?;
    assert_eq!(store.total_unread().await?, 7, "messages do not count");
    apply(&store, vec![put_conv(conv("y", 2, 0, 0))]).await?;
    assert_eq!(store.total_unread().await?, 0);
    Ok(())
}
