//! Edits, revokes, tombstones and pending deletes.

use tidemark_engine::{Message, Seq, SeqRanges, Storage, WriteOp};

use super::fixtures::*;
use super::{assert_dumps_equal, dump_including, Backend, CaseResult};

/// The stored row `id` of conversation `c`, which must exist.
async fn must_row<S: Storage>(store: &S, id: &str) -> Result<Message, super::CaseError> {
    row(store, "c", id)
        .await?
        .ok_or_else(|| super::CaseError::Inconsistent(format!("no row {id} in c")))
}

/// `EditMessage` replaces the content and sets `edit_seq`, keeping every other field.
pub async fn edit_replaces_content<F: Backend>(factory: F) -> CaseResult {
    let store = factory.open(0).await?;
    let m = sent("c", "m", 3);
    apply(
        &store,
        vec![put_conv(conv("c", 1, 0, 10)), put(vec![m.clone()])],
    )
    .await?;
    apply(&store, vec![edit("c", 3, 7, b"new words")]).await?;
    let expected = Message {
        content: b"new words".to_vec(),
        edit_seq: Some(Seq(7)),
        ..m
    };
    assert_eq!(must_row(&store, "m").await?, expected);
    assert_eq!(
        store
            .messages_page(&cid("c"), None, tidemark_engine::Direction::After, 10)
            .await?,
        vec![expected]
    );
    store.check_integrity().await?;
    Ok(())
}

/// Only the author changes a message: an edit or revoke by anyone else leaves the row as it
/// was and is reported in [`tidemark_engine::Applied::refused_changes`], in the same batch
/// as an allowed one; a change of a missing target is a no-op, not a refusal.
pub async fn changes_by_another_sender_are_refused_and_reported<F: Backend>(
    factory: F,
) -> CaseResult {
    let store = factory.open(0).await?;
    let m = sent("c", "m", 3);
    apply(
        &store,
        vec![put_conv(conv("c", 1, 0, 10)), put(vec![m.clone()])],
    )
    .await?;
    let applied = apply(
        &store,
        vec![
            edit_by("mallory", "c", 3, 5, b"forged"),
            revoke_by("mallory", "c", 3, 6),
            edit_by("mallory", "c", 9, 7, b"missing target"),
        ],
    )
    .await?;
    let refused = |change_seq: u64| tidemark_engine::RefusedChange {
        conversation: cid("c"),
        target: Seq(3),
        change_seq: Seq(change_seq),
    };
    assert_eq!(applied.refused_changes, vec![refused(5), refused(6)]);
    assert_eq!(must_row(&store, "m").await?, m, "the row is unchanged");

    let applied = apply(&store, vec![edit("c", 3, 8, b"own words")]).await?;
    assert!(applied.refused_changes.is_empty());
    assert_eq!(must_row(&store, "m").await?.content, b"own words".to_vec());
    let applied = apply(&store, vec![revoke("c", 3)]).await?;
    assert!(applied.refused_changes.is_empty());
    assert!(must_row(&store, "m").await?.revoked);
    store.check_integrity().await?;
    Ok(())
}

/// Edits apply in seq order whatever order they arrive in: an older edit after a newer one is
/// ignored, the same edit again changes nothing, and within one batch the newest wins too.
pub async fn edits_apply_in_seq_order<F: Backend>(factory: F) -> CaseResult {
    let store = factory.open(0).await?;
    apply(
        &store,
        vec![put_conv(conv("c", 1, 0, 20)), put(vec![sent("c", "m", 3)])],
    )
    .await?;
    let state = |m: Message| (m.content, m.edit_seq);
    apply(&store, vec![edit("c", 3, 7, b"seven")]).await?;
    apply(&store, vec![edit("c", 3, 5, b"five")]).await?;
    assert_eq!(
        state(must_row(&store, "m").await?),
        (b"seven".to_vec(), Some(Seq(7))),
        "an older edit after a newer one is ignored"
    );
    apply(&store, vec![edit("c", 3, 9, b"nine")]).await?;
    apply(&store, vec![edit("c", 3, 9, b"nine")]).await?;
    assert_eq!(
        state(must_row(&store, "m").await?),
        (b"nine".to_vec(), Some(Seq(9)))
    );
    apply(
        &store,
        vec![edit("c", 3, 12, b"twelve"), edit("c", 3, 11, b"eleven")],
    )
    .await?;
    assert_eq!(
        state(must_row(&store, "m").await?),
        (b"twelve".to_vec(), Some(Seq(12))),
        "in one batch the newest edit wins"
    );
    Ok(())
}

/// `RevokeMessage` clears the content and marks the row revoked, keeping its identity; a revoke
/// after an edit wins, an edit after a revoke is ignored (also within one batch), and a
/// second revoke changes nothing.
pub async fn revoke_wins_over_edits<F: Backend>(factory: F) -> CaseResult {
    let store = factory.open(0).await?;
    let m = sent("c", "m", 3);
    let n = sent("c", "n", 4);
    apply(
        &store,
        vec![
            put_conv(conv("c", 1, 0, 20)),
            put(vec![m.clone(), n.clone()]),
        ],
    )
    .await?;
    apply(&store, vec![edit("c", 3, 5, b"five")]).await?;
    apply(&store, vec![revoke("c", 3)]).await?;
    let revoked = must_row(&store, "m").await?;
    assert!(revoked.revoked, "marked revoked");
    assert!(revoked.content.is_empty(), "content cleared");
    assert_eq!(
        (
            revoked.seq,
            &revoked.client_msg_id,
            &revoked.sender,
            &revoked.kind,
            revoked.created_at,
            revoked.server_time,
            &revoked.status,
        ),
        (
            m.seq,
            &m.client_msg_id,
            &m.sender,
            &m.kind,
            m.created_at,
            m.server_time,
            &m.status
        ),
        "identity kept"
    );
    apply(&store, vec![edit("c", 3, 9, b"late edit")]).await?;
    assert_eq!(
        must_row(&store, "m").await?,
        revoked,
        "an edit after a revoke"
    );
    apply(&store, vec![revoke("c", 3)]).await?;
    assert_eq!(must_row(&store, "m").await?, revoked, "a second revoke");

    apply(&store, vec![revoke("c", 4), edit("c", 4, 6, b"six")]).await?;
    let n_now = must_row(&store, "n").await?;
    assert!(n_now.revoked && n_now.content.is_empty(), "{n_now:?}");
    Ok(())
}

/// Edits and revokes of missing targets change nothing: an unknown seq, seq 0, an unknown
/// conversation, a seq that exists only in another conversation.
pub async fn changes_to_missing_targets_are_noops<F: Backend>(factory: F) -> CaseResult {
    let store = factory.open(0).await?;
    apply(
        &store,
        vec![
            put_conv(conv("c", 1, 0, 5)),
            put_conv(conv("d", 2, 0, 5)),
            put(vec![
                sent("c", "m", 2),
                pending("c", "p", 1),
                sent("d", "o", 3),
            ]),
        ],
    )
    .await?;
    let extra = [cid("c"), cid("d"), cid("nowhere")];
    let before = dump_including(&store, &extra).await?;
    apply(
        &store,
        vec![
            edit("c", 4, 9, b"x"),
            revoke("c", 4),
            edit("c", 0, 9, b"x"),
            revoke("c", 0),
            edit("nowhere", 2, 9, b"x"),
            revoke("nowhere", 2),
            edit("c", 3, 9, b"x"),
            revoke("c", 3),
        ],
    )
    .await?;
    assert_dumps_equal(
        &before,
        &dump_including(&store, &extra).await?,
        "after the no-ops",
    );
    assert_eq!(row(&store, "c", "p").await?, Some(pending("c", "p", 1)));
    store.check_integrity().await?;
    Ok(())
}

/// Re-putting an edited message keeps the edit; a copy carrying a newer edit applies it, a
/// copy carrying an older edit is ignored.
pub async fn reput_keeps_edits_and_newer_copy_applies<F: Backend>(factory: F) -> CaseResult {
    let store = factory.open(0).await?;
    let m = sent("c", "m", 3);
    apply(
        &store,
        vec![put_conv(conv("c", 1, 0, 20)), put(vec![m.clone()])],
    )
    .await?;
    apply(&store, vec![edit("c", 3, 7, b"seven")]).await?;
    let edited = Message {
        content: b"seven".to_vec(),
        edit_seq: Some(Seq(7)),
        ..m.clone()
    };
    apply(&store, vec![put(vec![m.clone()])]).await?;
    assert_eq!(
        must_row(&store, "m").await?,
        edited,
        "re-put of the original"
    );

    let older = Message {
        content: b"five".to_vec(),
        edit_seq: Some(Seq(5)),
        ..m.clone()
    };
    apply(&store, vec![put(vec![older])]).await?;
    assert_eq!(
        must_row(&store, "m").await?,
        edited,
        "a copy with an older edit"
    );

    let newer = Message {
        content: b"nine".to_vec(),
        edit_seq: Some(Seq(9)),
        ..m.clone()
    };
    apply(&store, vec![put(vec![newer.clone()])]).await?;
    assert_eq!(
        must_row(&store, "m").await?,
        newer,
        "a copy with a newer edit"
    );
    apply(&store, vec![put(vec![m])]).await?;
    assert_eq!(must_row(&store, "m").await?, newer, "the original again");
    Ok(())
}

/// Re-putting a revoked message keeps it revoked (also a copy carrying a newer edit); a copy
/// carrying a revoke revokes the stored row, over an edit too, and clears its content even if
/// the copy has some.
pub async fn reput_keeps_revoke_and_revoked_copy_revokes<F: Backend>(factory: F) -> CaseResult {
    let store = factory.open(0).await?;
    let a = sent("c", "a", 1);
    let b = sent("c", "b", 2);
    let c = sent("c", "c", 3);
    apply(
        &store,
        vec![
            put_conv(conv("c", 1, 0, 20)),
            put(vec![a.clone(), b.clone(), c.clone()]),
            revoke("c", 1),
            edit("c", 2, 5, b"b edited"),
        ],
    )
    .await?;
    let a_revoked = must_row(&store, "a").await?;
    apply(
        &store,
        vec![put(vec![
            a.clone(),
            Message {
                content: b"newer".to_vec(),
                edit_seq: Some(Seq(9)),
                ..a.clone()
            },
        ])],
    )
    .await?;
    assert_eq!(must_row(&store, "a").await?, a_revoked, "a stays revoked");
    assert!(a_revoked.revoked && a_revoked.content.is_empty());

    apply(
        &store,
        vec![put(vec![
            Message {
                revoked: true,
                content: Vec::new(),
                ..b.clone()
            },
            Message {
                revoked: true,
                ..c.clone()
            },
        ])],
    )
    .await?;
    for id in ["b", "c"] {
        let m = must_row(&store, id).await?;
        assert!(m.revoked, "{id} revoked by the copy");
        assert!(m.content.is_empty(), "{id}'s content cleared");
        assert_eq!(m.seq, Some(Seq(if id == "b" { 2 } else { 3 })));
    }
    Ok(())
}

/// A message at a tombstoned seq is not stored, whatever its client id, while the rest of its
/// batch applies (also when the tombstone comes earlier in the same batch).
pub async fn put_at_tombstoned_seq_is_not_stored<F: Backend>(factory: F) -> CaseResult {
    let store = factory.open(0).await?;
    apply(
        &store,
        vec![put_conv(conv("c", 1, 0, 10)), tombstones("c", 3, 5)],
    )
    .await?;
    apply(
        &store,
        vec![put(vec![
            sent("c", "a", 2),
            sent("c", "t", 4),
            sent("c", "c-3", 3),
            sent("c", "u", 6),
        ])],
    )
    .await?;
    assert_eq!(all_seqs(&store, "c").await?, vec![2, 6]);
    assert_eq!(row(&store, "c", "t").await?, None);
    assert_eq!(row(&store, "c", "c-3").await?, None);
    assert_eq!(
        store.tombstones(&cid("c")).await?,
        SeqRanges::from_range(Seq(3), Seq(5))
    );

    apply(
        &store,
        vec![
            tombstones("c", 8, 8),
            put(vec![sent("c", "v", 8), sent("c", "w", 9)]),
        ],
    )
    .await?;
    assert_eq!(all_seqs(&store, "c").await?, vec![2, 6, 9]);
    assert_eq!(row(&store, "c", "v").await?, None);
    store.check_integrity().await?;
    Ok(())
}

/// `PutTombstones` deletes stored messages at those seqs, and only those: other seqs, seq-less
/// rows and other conversations stay.
pub async fn tombstones_delete_stored_rows<F: Backend>(factory: F) -> CaseResult {
    let store = factory.open(0).await?;
    apply(
        &store,
        vec![
            put_conv(conv("c", 1, 0, 10)),
            put_conv(conv("d", 2, 0, 5)),
            put(sent_run("c", 1..=10)),
            put(sent_run("d", 1..=5)),
            put(vec![pending("c", "p", 1)]),
        ],
    )
    .await?;
    apply(&store, vec![tombstones("c", 3, 5), tombstones("c", 9, 9)]).await?;
    assert_eq!(all_seqs(&store, "c").await?, vec![1, 2, 6, 7, 8, 10]);
    for gone in ["c-3", "c-4", "c-5", "c-9"] {
        assert_eq!(row(&store, "c", gone).await?, None, "{gone}");
    }
    assert_eq!(row(&store, "c", "p").await?, Some(pending("c", "p", 1)));
    assert_eq!(all_seqs(&store, "d").await?, vec![1, 2, 3, 4, 5]);

    apply(&store, vec![tombstones("c", 11, 20)]).await?;
    assert_eq!(all_seqs(&store, "c").await?, vec![1, 2, 6, 7, 8, 10]);
    assert_eq!(
        store.tombstones(&cid("c")).await?,
        ranges(&[(3, 5), (9, 9), (11, 20)])
    );
    store.check_integrity().await?;
    Ok(())
}

/// `tombstones()` is the union of every `PutTombstones` of the conversation, coalesced, per
/// conversation; an empty set adds nothing.
pub async fn tombstones_accumulate_as_a_union<F: Backend>(factory: F) -> CaseResult {
    let store = factory.open(0).await?;
    for op in [
        tombstones("c", 1, 3),
        tombstones("c", 5, 5),
        tombstones("c", 4, 4),
    ] {
        apply(&store, vec![op]).await?;
    }
    assert_eq!(store.tombstones(&cid("c")).await?, ranges(&[(1, 5)]));
    apply(&store, vec![tombstones("c", 10, 12), tombstones("c", 2, 2)]).await?;
    assert_eq!(
        store.tombstones(&cid("c")).await?,
        ranges(&[(1, 5), (10, 12)])
    );
    apply(
        &store,
        vec![
            tombstones("d", 7, 7),
            WriteOp::PutTombstones {
                conversation: cid("e"),
                seqs: SeqRanges::new(),
            },
            tombstones("f", 1, 1),
            tombstones("f", 3, 3),
        ],
    )
    .await?;
    assert_eq!(store.tombstones(&cid("d")).await?, ranges(&[(7, 7)]));
    assert!(store.tombstones(&cid("e")).await?.is_empty());
    assert_eq!(
        store.tombstones(&cid("f")).await?,
        ranges(&[(1, 1), (3, 3)])
    );
    assert_eq!(
        store.tombstones(&cid("c")).await?,
        ranges(&[(1, 5), (10, 12)])
    );
    assert!(store.tombstones(&cid("C")).await?.is_empty());
    Ok(())
}

/// `DeletePendingMessage` removes a pending or a failed row, never a sent one (also one acked
/// earlier in the batch); unknown ids and other conversations' rows are left alone.
pub async fn delete_pending_touches_only_seqless_rows<F: Backend>(factory: F) -> CaseResult {
    let store = factory.open(0).await?;
    let s = sent("c", "s", 1);
    apply(
        &store,
        vec![
            put_conv(conv("c", 1, 0, 2)),
            put(vec![
                pending("c", "p", 1),
                failed("c", "f", 2),
                s.clone(),
                pending("d", "q", 1),
            ]),
        ],
    )
    .await?;
    apply(
        &store,
        vec![
            delete_pending("c", "s"),
            delete_pending("c", "q"),
            delete_pending("c", "unknown"),
        ],
    )
    .await?;
    assert_eq!(row(&store, "c", "s").await?, Some(s));
    assert_eq!(row(&store, "d", "q").await?, Some(pending("d", "q", 1)));
    assert_eq!(unsent_ids(&store, "c").await?, strs(["p", "f"]));

    apply(&store, vec![delete_pending("c", "p")]).await?;
    assert_eq!(row(&store, "c", "p").await?, None);
    assert_eq!(unsent_ids(&store, "c").await?, strs(["f"]));
    apply(&store, vec![delete_pending("c", "f")]).await?;
    assert!(store.unsent_messages(&cid("c")).await?.is_empty());

    let r = pending("c", "r", 5);
    apply(
        &store,
        vec![
            put(vec![r.clone()]),
            put(vec![acked(&r, 2)]),
            delete_pending("c", "r"),
        ],
    )
    .await?;
    assert_eq!(row(&store, "c", "r").await?, Some(acked(&r, 2)));
    assert_eq!(all_seqs(&store, "c").await?, vec![1, 2]);
    store.check_integrity().await?;
    Ok(())
}
