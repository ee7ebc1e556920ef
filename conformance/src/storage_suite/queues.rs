//! The outbox, pending changes and the snapshot.

use tidemark_engine::{OutboxEntry, Storage, SyncSnapshot, Timestamp, WriteOp};

use super::fixtures::*;
use super::{
    followup_alpha, followup_ops, normalize_snapshot, sample_batch, sample_conversations,
    sample_outbox, sample_pending_change, Backend, CaseResult,
};

/// `outbox()` is oldest first by `created_at`, ties by client id, across conversations, and the
/// snapshot's outbox is the same list.
pub async fn outbox_orders_by_created_at_then_client_id<F: Backend>(factory: F) -> CaseResult {
    let store = factory.open(0).await?;
    let sends = [
        ("c", "z", 1),
        ("c", "b", 2),
        ("d", "a", 2),
        ("c", "m", 0),
        ("d", "y", 5),
    ];
    let ops = sends
        .iter()
        .flat_map(|(conv, id, at)| send_ops(conv, id, *at))
        .collect();
    apply(&store, ops).await?;
    let expected: Vec<OutboxEntry> = [
        ("c", "m", 0),
        ("c", "z", 1),
        ("d", "a", 2),
        ("c", "b", 2),
        ("d", "y", 5),
    ]
    .iter()
    .map(|(conv, id, at)| outbox_entry(conv, id, *at))
    .collect();
    assert_eq!(store.outbox().await?, expected);
    assert_eq!(store.load_snapshot().await?.outbox, expected);
    store.check_integrity().await?;
    Ok(())
}

/// `PutOutbox` with a known client id replaces the entry (attempts, and a new `created_at`
/// moves it); `RemoveOutbox` removes it and leaves its message row; removing an unknown or
/// already removed id is a no-op.
pub async fn outbox_put_replaces_and_remove_removes<F: Backend>(factory: F) -> CaseResult {
    let store = factory.open(0).await?;
    let mut ops = Vec::new();
    for (id, at) in [("a", 1), ("b", 2), ("c", 3)] {
        ops.extend(send_ops("conv", id, at));
    }
    apply(&store, ops).await?;
    let a_retried = OutboxEntry {
        attempts: 3,
        ..outbox_entry("conv", "a", 1)
    };
    apply(&store, vec![WriteOp::PutOutbox(a_retried.clone())]).await?;
    assert_eq!(store.outbox().await?.first(), Some(&a_retried));
    assert_eq!(store.outbox().await?.len(), 3);

    let b_later = OutboxEntry {
        created_at: Timestamp(10),
        ..outbox_entry("conv", "b", 2)
    };
    apply(&store, vec![WriteOp::PutOutbox(b_later.clone())]).await?;
    assert_eq!(outbox_ids(&store).await?, strs(["a", "c", "b"]));

    apply(&store, vec![WriteOp::RemoveOutbox(mid("c"))]).await?;
    assert_eq!(outbox_ids(&store).await?, strs(["a", "b"]));
    apply(
        &store,
        vec![
            WriteOp::RemoveOutbox(mid("c")),
            WriteOp::RemoveOutbox(mid("unknown")),
        ],
    )
    .await?;
    assert_eq!(store.outbox().await?, vec![a_retried, b_later]);
    assert_eq!(store.load_snapshot().await?.outbox, store.outbox().await?);
    assert_eq!(unsent_ids(&store, "conv").await?, strs(["a", "b", "c"]));
    store.check_integrity().await?;
    Ok(())
}

/// Pending changes are kept by (conversation, seq): put, replace, remove one (others, and the
/// same seq in another conversation, stay); the snapshot holds exactly the current ones; they
/// create no message row.
pub async fn pending_changes_put_replace_remove<F: Backend>(factory: F) -> CaseResult {
    let store = factory.open(0).await?;
    let c5 = edit_change("c", 5, 3, "c five");
    let c6 = revoke_change("c", 6, 3);
    let d5 = edit_change("d", 5, 3, "d five");
    apply(
        &store,
        vec![
            WriteOp::PutPendingChange(c5.clone()),
            WriteOp::PutPendingChange(c6.clone()),
            WriteOp::PutPendingChange(d5.clone()),
        ],
    )
    .await?;
    let changes = |mut s: SyncSnapshot| {
        normalize_snapshot(&mut s);
        s.pending_changes
    };
    assert_eq!(
        changes(store.load_snapshot().await?),
        vec![c5, c6.clone(), d5.clone()]
    );

    let c5_again = edit_change("c", 5, 4, "c five, again");
    apply(&store, vec![WriteOp::PutPendingChange(c5_again.clone())]).await?;
    assert_eq!(
        changes(store.load_snapshot().await?),
        vec![c5_again, c6.clone(), d5.clone()]
    );

    let remove = |conv: &str, seq: u64| WriteOp::RemovePendingChange {
        conversation: cid(conv),
        seq: tidemark_engine::Seq(seq),
    };
    apply(
        &store,
        vec![remove("c", 5), remove("c", 99), remove("e", 5)],
    )
    .await?;
    assert_eq!(changes(store.load_snapshot().await?), vec![c6.clone(), d5]);
    apply(&store, vec![remove("d", 5)]).await?;
    assert_eq!(changes(store.load_snapshot().await?), vec![c6]);

    assert!(all_seqs(&store, "c").await?.is_empty());
    assert!(store.unsent_messages(&cid("c")).await?.is_empty());
    assert!(store.load_snapshot().await?.conversations.is_empty());
    Ok(())
}

/// `load_snapshot` returns exactly what was written: every conversation record (the last put
/// of each), the outbox oldest first, the pending changes; after a follow-up batch exactly the
/// new state; two loads agree; every snapshot record equals `conversation()`.
pub async fn load_snapshot_returns_exactly_what_was_written<F: Backend>(factory: F) -> CaseResult {
    let store = factory.open(0).await?;
    store.apply(sample_batch()).await?;
    let mut conversations = sample_conversations();
    conversations.sort_by(|a, b| a.id.cmp(&b.id));
    let expected = SyncSnapshot {
        conversations,
        outbox: sample_outbox(),
        pending_changes: vec![sample_pending_change()],
        sync_token: None,
    };
    let mut snapshot = store.load_snapshot().await?;
    normalize_snapshot(&mut snapshot);
    assert_eq!(snapshot, expected, "after the sample batch");

    apply(&store, followup_ops()).await?;
    let mut conversations: Vec<_> = sample_conversations()
        .into_iter()
        .filter(|c| c.id.as_str() != "alpha")
        .chain([followup_alpha(), conv("delta", 50, 1, 1)])
        .collect();
    conversations.sort_by(|a, b| a.id.cmp(&b.id));
    let expected = SyncSnapshot {
        conversations,
        outbox: vec![
            outbox_entry("gamma", "gamma-p", 800),
            outbox_entry("gamma", "gamma-q", 950),
        ],
        pending_changes: vec![edit_change("delta", 5, 4, "delta four, edited")],
        sync_token: None,
    };
    let mut snapshot = store.load_snapshot().await?;
    normalize_snapshot(&mut snapshot);
    assert_eq!(snapshot, expected, "after the follow-up batch");
    let mut again = store.load_snapshot().await?;
    normalize_snapshot(&mut again);
    assert_eq!(again, snapshot, "a second load");
    for c in &snapshot.conversations {
        assert_eq!(store.conversation(&c.id).await?.as_ref(), Some(c));
    }
    assert_eq!(store.total_unread().await?, 7);
    Ok(())
}
