//! Batches: atomicity, idempotency, order of ops.

use tidemark_engine::{MessageStatus, Seq, Storage, SyncToken, WriteBatch, WriteOp};

use super::fixtures::*;
use super::{
    assert_dumps_equal, conflicting_op, dump_including, followup_ops, sample_batch,
    sample_conversation_ids, Backend, CaseResult,
};

/// Every client id the sample and follow-up batches touch, by conversation.
const TOUCHED: [(&str, &str); 12] = [
    ("alpha", "alpha-1"),
    ("alpha", "alpha-2"),
    ("alpha", "alpha-3"),
    ("alpha", "alpha-7"),
    ("alpha", "alpha-p"),
    ("alpha", "alpha-f"),
    ("beta", "beta-1"),
    ("beta", "beta-2"),
    ("beta", "intruder"),
    ("gamma", "gamma-p"),
    ("gamma", "gamma-q"),
    ("delta", "delta-1"),
];

/// `apply` is atomic: a batch with every kind of op whose last op is rejected (a seq held by
/// another client id) returns `StorageError::Rejected` and leaves every read as it was: the
/// full dump and `message_by_client_id` of every id the batch touches.
pub async fn failed_batch_changes_nothing<F: Backend>(factory: F) -> CaseResult {
    let store = factory.open(0).await?;
    store.apply(sample_batch()).await?;
    let extra = sample_conversation_ids();
    let before = dump_including(&store, &extra).await?;
    let mut rows_before = Vec::new();
    for (conv, id) in TOUCHED {
        rows_before.push(row(&store, conv, id).await?);
    }

    let mut ops = followup_ops();
    ops.push(conflicting_op());
    expect_rejected(&store, ops, "the follow-up batch ending in a conflict").await;

    assert_dumps_equal(
        &before,
        &dump_including(&store, &extra).await?,
        "after a rejected batch",
    );
    for ((conv, id), was) in TOUCHED.iter().zip(rows_before) {
        assert_eq!(row(&store, conv, id).await?, was, "row {conv}/{id}");
    }
    store.check_integrity().await?;
    Ok(())
}

/// A batch rejected in the middle of a `PutMessages` list (a client id put at another seq),
/// after an ack and a new message earlier in the same list, leaves every read as it was.
pub async fn failed_batch_midway_changes_nothing<F: Backend>(factory: F) -> CaseResult {
    let store = factory.open(0).await?;
    store.apply(sample_batch()).await?;
    let extra = sample_conversation_ids();
    let before = dump_including(&store, &extra).await?;
    let p = pending("alpha", "alpha-p", 700);
    expect_rejected(
        &store,
        vec![
            put_conv(conv("alpha", 2_000, 9, 10)),
            tombstones("beta", 1, 1),
            put(vec![
                sent("alpha", "alpha-7", 7),
                acked(&p, 8),
                sent("alpha", "alpha-1", 9),
                sent("alpha", "alpha-10", 10),
            ]),
            WriteOp::RemoveOutbox(mid("alpha-p")),
        ],
        "alpha-1 put at seq 9",
    )
    .await;
    assert_dumps_equal(
        &before,
        &dump_including(&store, &extra).await?,
        "after a batch rejected midway",
    );
    assert_eq!(row(&store, "alpha", "alpha-p").await?, Some(p));
    assert_eq!(row(&store, "alpha", "alpha-7").await?, None);
    assert_eq!(row(&store, "alpha", "alpha-10").await?, None);
    assert!(row(&store, "beta", "beta-1").await?.is_some());
    Ok(())
}

/// After a rejected batch the store keeps working: the same batch without its bad op applies,
/// and reads show each of its effects.
pub async fn store_works_after_a_rejected_batch<F: Backend>(factory: F) -> CaseResult {
    let store = factory.open(0).await?;
    store.apply(sample_batch()).await?;
    let mut bad = followup_ops();
    bad.push(conflicting_op());
    expect_rejected(&store, bad, "the follow-up batch ending in a conflict").await;
    apply(&store, followup_ops()).await?;

    assert_eq!(all_seqs(&store, "alpha").await?, vec![1, 2, 5, 6, 7, 8]);
    let p = row(&store, "alpha", "alpha-p").await?;
    assert_eq!(
        p.map(|m| (m.seq, m.status)),
        Some((Some(Seq(8)), MessageStatus::Sent))
    );
    let one = row(&store, "alpha", "alpha-1").await?;
    assert_eq!(
        one.map(|m| (m.content, m.edit_seq)),
        Some((b"alpha one, edited".to_vec(), Some(Seq(9))))
    );
    let two = row(&store, "alpha", "alpha-2").await?;
    assert_eq!(
        two.map(|m| (m.revoked, m.content.is_empty())),
        Some((true, true))
    );
    assert_eq!(row(&store, "alpha", "alpha-f").await?, None);
    assert_eq!(store.tombstones(&cid("alpha")).await?, ranges(&[(3, 4)]));
    assert_eq!(outbox_ids(&store).await?, strs(["gamma-p", "gamma-q"]));
    assert_eq!(
        unsent_ids(&store, "gamma").await?,
        strs(["gamma-p", "gamma-q"])
    );
    assert_eq!(all_seqs(&store, "delta").await?, vec![1]);
    assert_eq!(row(&store, "beta", "intruder").await?, None);
    assert_eq!(
        store.load_snapshot().await?.pending_changes,
        vec![edit_change("delta", 5, 4, "delta four, edited")]
    );
    assert_eq!(store.total_unread().await?, 7);
    assert_eq!(
        walk_ids(&store, 2).await?,
        strs(["alpha", "beta", "gamma", "delta", "empty"])
    );
    store.check_integrity().await?;
    Ok(())
}

/// Applying the same batch twice leaves the same state as applying it once: the sample batch
/// (puts, tombstones, an edit, a revoke, outbox, pending change) and the follow-up batch (an
/// ack, a pending delete, removals).
pub async fn reapplying_a_batch_changes_nothing<F: Backend>(factory: F) -> CaseResult {
    let store = factory.open(0).await?;
    let extra = sample_conversation_ids();
    store.apply(sample_batch()).await?;
    let once = dump_including(&store, &extra).await?;
    store.apply(sample_batch()).await?;
    assert_dumps_equal(
        &once,
        &dump_including(&store, &extra).await?,
        "sample batch applied twice",
    );

    let followup = WriteBatch {
        ops: followup_ops(),
    };
    store.apply(followup.clone()).await?;
    let once = dump_including(&store, &extra).await?;
    store.apply(followup).await?;
    assert_dumps_equal(
        &once,
        &dump_including(&store, &extra).await?,
        "follow-up batch applied twice",
    );
    store.check_integrity().await?;
    Ok(())
}

/// Ops apply in order within a batch: put then remove is gone and remove then put is there
/// (outbox, pending change, pending row); a tombstone after a put deletes it, a put after a
/// tombstone is not stored; the later of two conversation puts wins; an edit before its
/// target's put is a no-op, after it applies.
pub async fn ops_apply_in_order_within_a_batch<F: Backend>(factory: F) -> CaseResult {
    let store = factory.open(0).await?;
    let remove_change = WriteOp::RemovePendingChange {
        conversation: cid("c"),
        seq: Seq(30),
    };
    let change = edit_change("c", 30, 29, "later");
    apply(
        &store,
        vec![
            put_conv(conv("c", 10, 1, 10)),
            WriteOp::PutOutbox(outbox_entry("c", "x", 1)),
            WriteOp::RemoveOutbox(mid("x")),
            WriteOp::RemoveOutbox(mid("y")),
            put(vec![pending("c", "y", 2)]),
            WriteOp::PutOutbox(outbox_entry("c", "y", 2)),
            put(vec![pending("c", "z", 3)]),
            delete_pending("c", "z"),
            WriteOp::PutPendingChange(change.clone()),
            remove_change.clone(),
            remove_change,
            WriteOp::PutPendingChange(change.clone()),
            put(vec![sent("c", "m3", 3)]),
            tombstones("c", 3, 3),
            tombstones("c", 5, 5),
            put(vec![sent("c", "m5", 5)]),
            edit("c", 7, 8, b"too early"),
            put(vec![sent("c", "m7", 7)]),
            edit("c", 9, 10, b"in time"),
            put(vec![sent("c", "m9", 9)]),
            edit("c", 9, 10, b"in time"),
            put_conv(conv("c", 20, 2, 10)),
        ],
    )
    .await?;
    assert_eq!(outbox_ids(&store).await?, strs(["y"]));
    assert_eq!(unsent_ids(&store, "c").await?, strs(["y"]));
    assert_eq!(store.load_snapshot().await?.pending_changes, vec![change]);
    assert_eq!(all_seqs(&store, "c").await?, vec![7, 9]);
    assert_eq!(row(&store, "c", "m7").await?, Some(sent("c", "m7", 7)));
    assert_eq!(
        row(&store, "c", "m9").await?.map(|m| m.content),
        Some(b"in time".to_vec())
    );
    assert_eq!(
        store.conversation(&cid("c")).await?,
        Some(conv("c", 20, 2, 10))
    );
    assert_eq!(store.total_unread().await?, 2);
    store.check_integrity().await?;
    Ok(())
}

/// The sync token commits atomically with its batch: a batch that stores it and is rejected
/// leaves the old token (and none of its data); a committed one returns it in the snapshot,
/// replacing the old one, also after reopening the store; `None` removes it.
pub async fn sync_token_commits_with_its_batch<F: Backend>(factory: F) -> CaseResult {
    let store = factory.open(0).await?;
    assert_eq!(store.load_snapshot().await?.sync_token, None, "a new store");
    let first = SyncToken::new("epoch.17");
    apply(
        &store,
        vec![
            put_conv(conv("alpha", 100, 1, 1)),
            WriteOp::PutSyncToken(Some(first.clone())),
        ],
    )
    .await?;
    assert_eq!(store.load_snapshot().await?.sync_token, Some(first.clone()));

    store.apply(sample_batch()).await?;
    let mut before = store.load_snapshot().await?;
    super::normalize_snapshot(&mut before);
    let mut ops = vec![WriteOp::PutSyncToken(Some(SyncToken::new("epoch.42")))];
    ops.extend(followup_ops());
    ops.push(conflicting_op());
    expect_rejected(&store, ops, "a batch with a token ending in a conflict").await;
    let mut after = store.load_snapshot().await?;
    super::normalize_snapshot(&mut after);
    assert_eq!(
        after.sync_token,
        Some(first),
        "the rejected batch's token is not kept"
    );
    assert_eq!(after, before, "nothing of the rejected batch is kept");

    // The longest token a server may send round-trips whole.
    let longest = SyncToken::new("t".repeat(SyncToken::MAX_BYTES));
    apply(&store, vec![WriteOp::PutSyncToken(Some(longest.clone()))]).await?;
    let store = factory.reopen(0, store).await?;
    assert_eq!(store.load_snapshot().await?.sync_token, Some(longest));
    // Removing it leaves none, removing it again changes nothing.
    apply(&store, vec![WriteOp::PutSyncToken(None)]).await?;
    assert_eq!(store.load_snapshot().await?.sync_token, None);
    apply(&store, vec![WriteOp::PutSyncToken(None)]).await?;
    assert_eq!(store.load_snapshot().await?.sync_token, None);
    store.check_integrity().await?;
    Ok(())
}
