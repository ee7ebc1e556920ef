//! Close and reopen; `check_integrity`.

use tidemark_engine::{Storage, StorageError, WriteOp};

use super::fixtures::*;
use super::{
    assert_dumps_equal, conflicting_op, dump, dump_including, followup_ops, sample_batch,
    sample_conversation_ids, Backend, CaseResult,
};

/// Reopening a store nothing was written to gives an empty store that passes its integrity
/// check and takes writes.
pub async fn reopen_empty_store<F: Backend>(factory: F) -> CaseResult {
    let store = factory.open(0).await?;
    let empty = dump(&store).await?;
    let store = factory.reopen(0, store).await?;
    assert_dumps_equal(&empty, &dump(&store).await?, "empty store after reopen");
    store.check_integrity().await?;
    store.apply(sample_batch()).await?;
    assert_eq!(store.load_snapshot().await?.conversations.len(), 4);
    Ok(())
}

/// Close and reopen keeps everything (full dump equal, integrity passes); after the reopen new
/// writes merge with the old rows (an ack turns an old pending row sent, an old tombstone
/// blocks a put, an old edit survives a re-put, an old row's seq still rejects another id),
/// and a second reopen keeps those too.
pub async fn reopen_keeps_everything<F: Backend>(factory: F) -> CaseResult {
    let store = factory.open(0).await?;
    store.apply(sample_batch()).await?;
    apply(&store, followup_ops()).await?;
    let extra = sample_conversation_ids();
    let before = dump_including(&store, &extra).await?;
    let store = factory.reopen(0, store).await?;
    assert_dumps_equal(
        &before,
        &dump_including(&store, &extra).await?,
        "after reopen",
    );
    store.check_integrity().await?;

    let q = pending("gamma", "gamma-q", 950);
    apply(
        &store,
        vec![
            put_conv(conv("gamma", 960, 0, 1)),
            put(vec![acked(&q, 1)]),
            WriteOp::RemoveOutbox(mid("gamma-q")),
        ],
    )
    .await?;
    assert_eq!(row(&store, "gamma", "gamma-q").await?, Some(acked(&q, 1)));
    assert_eq!(unsent_ids(&store, "gamma").await?, strs(["gamma-p"]));
    apply(&store, vec![put(vec![sent("alpha", "late", 4)])]).await?;
    assert_eq!(row(&store, "alpha", "late").await?, None, "old tombstone");
    apply(&store, vec![put(vec![sent("beta", "beta-2", 2)])]).await?;
    assert_eq!(
        row(&store, "beta", "beta-2").await?.map(|m| m.content),
        Some(b"beta two, edited".to_vec()),
        "old edit"
    );
    expect_rejected(&store, vec![conflicting_op()], "beta-1's seq after reopen").await;

    let before = dump_including(&store, &extra).await?;
    let store = factory.reopen(0, store).await?;
    assert_dumps_equal(
        &before,
        &dump_including(&store, &extra).await?,
        "after a second reopen",
    );
    store.check_integrity().await?;
    Ok(())
}

/// A batch rejected before a close is not there after the reopen.
pub async fn reopen_after_rejected_batch<F: Backend>(factory: F) -> CaseResult {
    let store = factory.open(0).await?;
    store.apply(sample_batch()).await?;
    let extra = sample_conversation_ids();
    let before = dump_including(&store, &extra).await?;
    let mut bad = followup_ops();
    bad.push(conflicting_op());
    expect_rejected(&store, bad, "the follow-up batch ending in a conflict").await;
    let store = factory.reopen(0, store).await?;
    assert_dumps_equal(
        &before,
        &dump_including(&store, &extra).await?,
        "after a rejected batch and a reopen",
    );
    store.check_integrity().await?;
    Ok(())
}

/// `check_integrity` passes on well-formed stores after every kind of op: fresh, the sample,
/// the follow-up, a tombstone over everything, revokes and edits, acks, deletes, removals.
pub async fn check_integrity_passes_on_a_well_formed_store<F: Backend>(factory: F) -> CaseResult {
    let store = factory.open(0).await?;
    store.check_integrity().await?;
    store.apply(sample_batch()).await?;
    store.check_integrity().await?;
    apply(&store, followup_ops()).await?;
    store.check_integrity().await?;
    let batches = vec![
        vec![tombstones("beta", 1, 100)],
        vec![revoke("alpha", 5), edit("alpha", 6, 20, b"six, edited")],
        vec![
            put_conv(conv("gamma", 960, 0, 2)),
            put(vec![acked(&pending("gamma", "gamma-p", 800), 1)]),
            WriteOp::RemoveOutbox(mid("gamma-p")),
            delete_pending("gamma", "gamma-q"),
            WriteOp::RemoveOutbox(mid("gamma-q")),
        ],
        vec![
            put_conv(conv("alpha", 1, 0, 100)),
            put(sent_run("alpha", 9..=100)),
        ],
    ];
    for (i, ops) in batches.into_iter().enumerate() {
        apply(&store, ops).await?;
        if let Err(err) = store.check_integrity().await {
            panic!("check_integrity failed after well-formed batch {i}: {err:?}");
        }
    }
    assert!(all_seqs(&store, "beta").await?.is_empty());
    assert!(store.outbox().await?.is_empty());
    Ok(())
}

/// Applies `ops` (which break an integrity rule) and, when the backend accepts them (it may
/// reject them instead), asserts `check_integrity` reports `Corrupt`; then applies `fix` and
/// asserts the store passes again.
async fn expect_caught<S: Storage>(
    store: &S,
    ops: Vec<WriteOp>,
    fix: Vec<WriteOp>,
    what: &str,
) -> CaseResult {
    match apply(store, ops).await {
        Ok(_) => {
            expect_corrupt(store, what).await;
            apply(store, fix).await?;
        }
        Err(StorageError::Rejected(_)) => {}
        Err(other) => panic!("{what}: the write failed with {other:?}"),
    }
    if let Err(err) = store.check_integrity().await {
        panic!("{what}: check_integrity still fails after the fix: {err:?}");
    }
    Ok(())
}

/// `check_integrity` reports a stored message outside its conversation's held ranges: above
/// them, left uncovered when a record shrinks its held ranges, and in a conversation without a
/// record; it passes again once the record covers them.
pub async fn check_integrity_reports_message_outside_held_ranges<F: Backend>(
    factory: F,
) -> CaseResult {
    let store = factory.open(0).await?;
    apply(
        &store,
        vec![put_conv(conv("c", 1, 0, 3)), put(sent_run("c", 1..=3))],
    )
    .await?;
    store.check_integrity().await?;
    expect_caught(
        &store,
        vec![put(vec![sent("c", "c-5", 5)])],
        vec![put_conv(conv("c", 1, 0, 5))],
        "a message at 5 with held 1..=3",
    )
    .await?;
    expect_caught(
        &store,
        vec![put_conv(conv("c", 1, 0, 2))],
        vec![put_conv(conv("c", 1, 0, 5))],
        "held shrunk to 1..=2 under messages up to 3",
    )
    .await?;
    expect_caught(
        &store,
        vec![put(vec![sent("orphan", "o", 1)])],
        vec![put_conv(conv("orphan", 1, 0, 1))],
        "a message of a conversation without a record",
    )
    .await?;
    Ok(())
}

/// `check_integrity` reports an outbox entry without its unsent row (no row at all, or the
/// row acked while the entry stayed); it passes again once the row is there or the entry gone.
pub async fn check_integrity_reports_outbox_entry_without_unsent_row<F: Backend>(
    factory: F,
) -> CaseResult {
    let store = factory.open(0).await?;
    apply(&store, vec![put_conv(conv("c", 1, 0, 1))]).await?;
    expect_caught(
        &store,
        vec![WriteOp::PutOutbox(outbox_entry("c", "o", 5))],
        vec![put(vec![pending("c", "o", 5)])],
        "an outbox entry without a row",
    )
    .await?;
    // Make sure the entry and its row are there whatever the backend did above.
    apply(&store, send_ops("c", "o", 5)).await?;
    store.check_integrity().await?;
    expect_caught(
        &store,
        vec![put(vec![acked(&pending("c", "o", 5), 1)])],
        vec![WriteOp::RemoveOutbox(mid("o"))],
        "an outbox entry whose row is acked",
    )
    .await?;
    Ok(())
}
