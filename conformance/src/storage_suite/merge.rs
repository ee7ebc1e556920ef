//! The merge rules of `WriteOp::PutMessages`: rows by client id and by seq, pending to sent,
//! no downgrade, conflicts rejected; `message_by_client_id` and `unsent_messages`.

use tidemark_engine::{
    ContentKind, Direction, Message, MessageStatus, Seq, Storage, Timestamp, UserId, WriteOp,
};

use super::fixtures::*;
use super::{assert_dumps_equal, dump_including, Backend, CaseResult};

/// `PutMessages` stores every field of every kind of message (custom, image, file, edit and
/// revoke messages, a pre-edited and a pre-revoked row, binary content, pending and failed
/// rows): pages, `message_by_client_id` and `unsent_messages` return them unchanged.
pub async fn put_message_round_trips_every_field<F: Backend>(factory: F) -> CaseResult {
    let store = factory.open(0).await?;
    let with_seq = vec![
        Message {
            kind: ContentKind::Custom("sticker/v2".to_owned()),
            content: (0..=255u8).collect(),
            sender: UserId::from("carol"),
            created_at: Timestamp(77),
            server_time: Some(Timestamp(88)),
            ..sent("c", "custom", 1)
        },
        Message {
            kind: ContentKind::Image,
            ..sent("c", "image", 2)
        },
        Message {
            kind: ContentKind::File,
            content: Vec::new(),
            ..sent("c", "file", 3)
        },
        Message {
            kind: ContentKind::Edit { target: Seq(1) },
            ..sent("c", "edit", 4)
        },
        Message {
            kind: ContentKind::Revoke { target: Seq(2) },
            content: Vec::new(),
            ..sent("c", "revoke", 5)
        },
        Message {
            edit_seq: Some(Seq(4)),
            content: b"already edited".to_vec(),
            ..sent("c", "pre-edited", 6)
        },
        Message {
            revoked: true,
            content: Vec::new(),
            ..sent("c", "pre-revoked", 7)
        },
    ];
    let unsent = vec![
        Message {
            kind: ContentKind::Custom("draft".to_owned()),
            ..pending("c", "pending", 10)
        },
        Message {
            status: MessageStatus::Failed {
                reason: "too large: 9 MB > 8 MB".to_owned(),
            },
            kind: ContentKind::File,
            ..pending("c", "failed", 11)
        },
    ];
    let mut all = with_seq.clone();
    all.extend(unsent.clone());
    apply(&store, vec![put_conv(conv("c", 1, 0, 7)), put(all.clone())]).await?;

    for direction in [Direction::After, Direction::Before] {
        assert_eq!(
            store.messages_page(&cid("c"), None, direction, 100).await?,
            with_seq,
            "page {direction:?}"
        );
    }
    for m in &all {
        assert_eq!(
            store
                .message_by_client_id(&cid("c"), &m.sender, &m.client_msg_id)
                .await?
                .as_ref(),
            Some(m),
            "message_by_client_id {}",
            m.client_msg_id
        );
    }
    assert_eq!(store.unsent_messages(&cid("c")).await?, unsent);
    store.check_integrity().await?;
    Ok(())
}

/// `message_by_client_id` finds pending, failed and sent rows, only in their own conversation;
/// unknown ids and rows deleted by a tombstone are `None`.
pub async fn message_by_client_id_finds_every_kind_of_row<F: Backend>(factory: F) -> CaseResult {
    let store = factory.open(0).await?;
    let p = pending("c", "p", 1);
    let f = failed("c", "f", 2);
    let s = sent("c", "s", 1);
    let other = sent("d", "p", 1);
    apply(
        &store,
        vec![
            put_conv(conv("c", 1, 0, 1)),
            put_conv(conv("d", 1, 0, 1)),
            put(vec![p.clone(), f.clone(), s.clone(), other.clone()]),
        ],
    )
    .await?;
    assert_eq!(row(&store, "c", "p").await?, Some(p));
    assert_eq!(row(&store, "c", "f").await?, Some(f));
    assert_eq!(row(&store, "c", "s").await?, Some(s));
    assert_eq!(row(&store, "d", "p").await?, Some(other));
    assert_eq!(row(&store, "d", "s").await?, None, "s is c's, not d's");
    assert_eq!(row(&store, "c", "unknown").await?, None);
    assert_eq!(row(&store, "unknown", "p").await?, None);

    apply(&store, vec![tombstones("c", 1, 1)]).await?;
    assert_eq!(row(&store, "c", "s").await?, None, "deleted by a tombstone");
    assert!(row(&store, "d", "p").await?.is_some(), "d is untouched");
    Ok(())
}

/// A pending row becomes the sent row when its ack arrives (same client id, now with a seq):
/// one row equal to the incoming message, in pages, no longer unsent; a failed row becomes
/// sent the same way when a late echo arrives.
pub async fn pending_becomes_sent_on_ack<F: Backend>(factory: F) -> CaseResult {
    let store = factory.open(0).await?;
    let mut ops = vec![put_conv(conv("c", 1, 0, 2)), put(sent_run("c", 1..=2))];
    ops.extend(send_ops("c", "mine", 50));
    apply(&store, ops).await?;
    let p = pending("c", "mine", 50);
    assert_eq!(row(&store, "c", "mine").await?, Some(p.clone()));

    let ack = acked(&p, 3);
    apply(
        &store,
        vec![
            put_conv(conv("c", 1, 0, 3)),
            put(vec![ack.clone()]),
            tidemark_engine::WriteOp::RemoveOutbox(mid("mine")),
        ],
    )
    .await?;
    assert_eq!(row(&store, "c", "mine").await?, Some(ack.clone()));
    assert_eq!(all_seqs(&store, "c").await?, vec![1, 2, 3]);
    assert_eq!(
        store
            .messages_page(&cid("c"), None, Direction::Before, 1)
            .await?,
        vec![ack]
    );
    assert!(store.unsent_messages(&cid("c")).await?.is_empty());
    assert!(store.outbox().await?.is_empty());

    let f = failed("c", "late", 60);
    apply(&store, vec![put(vec![f.clone()])]).await?;
    let echo = acked(&f, 4);
    apply(
        &store,
        vec![put_conv(conv("c", 1, 0, 4)), put(vec![echo.clone()])],
    )
    .await?;
    assert_eq!(row(&store, "c", "late").await?, Some(echo));
    assert_eq!(all_seqs(&store, "c").await?, vec![1, 2, 3, 4]);
    assert!(store.unsent_messages(&cid("c")).await?.is_empty());
    store.check_integrity().await?;
    Ok(())
}

/// A message without a seq never downgrades a sent row: pending, failed and changed seq-less
/// copies put after the ack (in later batches or later in the same batch) leave it as it was.
pub async fn seqless_put_never_downgrades_a_sent_row<F: Backend>(factory: F) -> CaseResult {
    let store = factory.open(0).await?;
    let p = pending("c", "m", 5);
    let ack = acked(&p, 1);
    apply(
        &store,
        vec![put_conv(conv("c", 1, 0, 2)), put(vec![p.clone()])],
    )
    .await?;
    apply(&store, vec![put(vec![ack.clone()])]).await?;
    for copy in [
        p.clone(),
        failed("c", "m", 5),
        Message {
            content: b"other".to_vec(),
            created_at: Timestamp(99),
            ..p.clone()
        },
    ] {
        apply(&store, vec![put(vec![copy])]).await?;
        assert_eq!(row(&store, "c", "m").await?, Some(ack.clone()));
    }
    assert!(store.unsent_messages(&cid("c")).await?.is_empty());
    assert_eq!(all_seqs(&store, "c").await?, vec![1]);

    let q = pending("c", "n", 6);
    let q_ack = acked(&q, 2);
    apply(
        &store,
        vec![
            put(vec![q.clone()]),
            put(vec![q_ack.clone()]),
            put(vec![q.clone(), failed("c", "n", 6)]),
        ],
    )
    .await?;
    assert_eq!(row(&store, "c", "n").await?, Some(q_ack));
    assert!(store.unsent_messages(&cid("c")).await?.is_empty());
    store.check_integrity().await?;
    Ok(())
}

/// A seq-less row is replaced by a seq-less put: pending -> failed (the send gave up) ->
/// pending again with other content (a retry), each time exactly the incoming row.
pub async fn seqless_row_is_replaced_by_seqless_put<F: Backend>(factory: F) -> CaseResult {
    let store = factory.open(0).await?;
    let p = pending("c", "m", 5);
    apply(&store, vec![put(vec![p.clone()])]).await?;
    let f = Message {
        status: MessageStatus::Failed {
            reason: "gave up".to_owned(),
        },
        ..p.clone()
    };
    apply(&store, vec![put(vec![f.clone()])]).await?;
    assert_eq!(row(&store, "c", "m").await?, Some(f.clone()));
    assert_eq!(store.unsent_messages(&cid("c")).await?, vec![f]);

    let retry = Message {
        content: b"edited draft".to_vec(),
        created_at: Timestamp(9),
        ..p
    };
    apply(&store, vec![put(vec![retry.clone()])]).await?;
    assert_eq!(row(&store, "c", "m").await?, Some(retry.clone()));
    assert_eq!(store.unsent_messages(&cid("c")).await?, vec![retry]);
    Ok(())
}

/// `unsent_messages` holds only the seq-less rows of that conversation, oldest first, ties by
/// client id; acked and deleted rows leave it.
pub async fn unsent_messages_oldest_first<F: Backend>(factory: F) -> CaseResult {
    let store = factory.open(0).await?;
    let v = failed("c", "v", 2);
    let y = pending("c", "y", 3);
    apply(
        &store,
        vec![
            put_conv(conv("c", 1, 0, 2)),
            put(vec![
                y.clone(),
                pending("c", "x", 3),
                pending("c", "w", 1),
                v.clone(),
                sent("c", "s", 1),
                pending("d", "z", 0),
            ]),
        ],
    )
    .await?;
    assert_eq!(unsent_ids(&store, "c").await?, strs(["w", "v", "x", "y"]));
    assert_eq!(unsent_ids(&store, "d").await?, strs(["z"]));

    apply(&store, vec![put(vec![acked(&pending("c", "x", 3), 2)])]).await?;
    assert_eq!(unsent_ids(&store, "c").await?, strs(["w", "v", "y"]));
    apply(&store, vec![delete_pending("c", "w")]).await?;
    assert_eq!(store.unsent_messages(&cid("c")).await?, vec![v, y]);
    Ok(())
}

/// A sent message put again keeps its stored fields (content, kind, times) when the copy
/// carries no revoke and no newer edit. (The sender is part of the row's key: a copy from
/// another sender is another message, see `same_client_id_of_two_senders_is_two_rows`.)
pub async fn sent_row_keeps_its_fields_when_put_again<F: Backend>(factory: F) -> CaseResult {
    let store = factory.open(0).await?;
    let orig = sent("c", "m", 4);
    apply(
        &store,
        vec![put_conv(conv("c", 1, 0, 4)), put(vec![orig.clone()])],
    )
    .await?;
    let copy = Message {
        content: b"changed".to_vec(),
        kind: ContentKind::Image,
        created_at: Timestamp(1),
        server_time: Some(Timestamp(2)),
        ..orig.clone()
    };
    apply(&store, vec![put(vec![copy])]).await?;
    assert_eq!(row(&store, "c", "m").await?, Some(orig.clone()));
    assert_eq!(
        store
            .messages_page(&cid("c"), None, Direction::After, 10)
            .await?,
        vec![orig]
    );
    Ok(())
}

/// The same messages put twice (within one op, in two ops, in two batches) are one row each.
pub async fn same_message_twice_is_one_row<F: Backend>(factory: F) -> CaseResult {
    let store = factory.open(0).await?;
    let m1 = sent("c", "m1", 1);
    let m2 = sent("c", "m2", 2);
    let p = pending("c", "p", 3);
    apply(
        &store,
        vec![
            put_conv(conv("c", 1, 0, 2)),
            put(vec![
                m1.clone(),
                m1.clone(),
                m2.clone(),
                p.clone(),
                p.clone(),
            ]),
            put(vec![m2.clone(), m1.clone(), p.clone()]),
        ],
    )
    .await?;
    apply(&store, vec![put(vec![m1.clone(), m2.clone(), p.clone()])]).await?;
    assert_eq!(
        store
            .messages_page(&cid("c"), None, Direction::After, 10)
            .await?,
        vec![m1, m2]
    );
    assert_eq!(store.unsent_messages(&cid("c")).await?, vec![p]);
    store.check_integrity().await?;
    Ok(())
}

/// A seq held by a row with another client id rejects the batch (`StorageError::Rejected`):
/// the holder stays, the newcomer is not stored, and a pending row whose ack claims that seq
/// stays pending.
pub async fn seq_held_by_another_client_id_is_rejected<F: Backend>(factory: F) -> CaseResult {
    let store = factory.open(0).await?;
    let a = sent("c", "a", 2);
    let b = pending("c", "b", 7);
    apply(
        &store,
        vec![
            put_conv(conv("c", 1, 0, 3)),
            put(vec![a.clone(), b.clone()]),
        ],
    )
    .await?;
    let extra = [cid("c")];
    let before = dump_including(&store, &extra).await?;

    expect_rejected(
        &store,
        vec![put(vec![sent("c", "x", 2)])],
        "a new id at seq 2",
    )
    .await;
    expect_rejected(&store, vec![put(vec![acked(&b, 2)])], "b's ack at seq 2").await;
    assert_dumps_equal(
        &before,
        &dump_including(&store, &extra).await?,
        "after the rejections",
    );
    assert_eq!(row(&store, "c", "a").await?, Some(a));
    assert_eq!(row(&store, "c", "b").await?, Some(b));
    assert_eq!(row(&store, "c", "x").await?, None);
    Ok(())
}

/// A client id already stored at one seq, put again at another seq, rejects the batch; the row
/// stays at its seq.
pub async fn client_id_at_another_seq_is_rejected<F: Backend>(factory: F) -> CaseResult {
    let store = factory.open(0).await?;
    let a = sent("c", "a", 2);
    apply(
        &store,
        vec![put_conv(conv("c", 1, 0, 5)), put(vec![a.clone()])],
    )
    .await?;
    let extra = [cid("c")];
    let before = dump_including(&store, &extra).await?;
    expect_rejected(&store, vec![put(vec![sent("c", "a", 3)])], "a at seq 3").await;
    expect_rejected(&store, vec![put(vec![sent("c", "a", 1)])], "a at seq 1").await;
    assert_dumps_equal(
        &before,
        &dump_including(&store, &extra).await?,
        "after the rejections",
    );
    assert_eq!(row(&store, "c", "a").await?, Some(a));
    assert_eq!(all_seqs(&store, "c").await?, vec![2]);
    Ok(())
}

/// Conflicts inside one batch reject it and leave a fresh store empty: two ids at one seq in
/// one `PutMessages`, the same across two ops, and one id at two seqs.
pub async fn conflict_within_one_batch_is_rejected<F: Backend>(factory: F) -> CaseResult {
    let store = factory.open(0).await?;
    let extra = [cid("c")];
    let empty = dump_including(&store, &extra).await?;
    expect_rejected(
        &store,
        vec![
            put_conv(conv("c", 1, 0, 2)),
            put(vec![sent("c", "a", 1), sent("c", "b", 1)]),
        ],
        "two ids at seq 1 in one op",
    )
    .await;
    expect_rejected(
        &store,
        vec![
            put_conv(conv("c", 1, 0, 2)),
            put(vec![sent("c", "a", 1)]),
            put(vec![sent("c", "b", 1)]),
        ],
        "two ids at seq 1 in two ops",
    )
    .await;
    expect_rejected(
        &store,
        vec![put(vec![sent("c", "a", 1), sent("c", "a", 2)])],
        "one id at seqs 1 and 2",
    )
    .await;
    assert_dumps_equal(
        &empty,
        &dump_including(&store, &extra).await?,
        "after the rejections",
    );
    assert_eq!(row(&store, "c", "a").await?, None);
    assert_eq!(store.conversation(&cid("c")).await?, None);
    Ok(())
}

/// Client ids and seqs are per conversation: the same id and seq in two conversations are two
/// rows, and tombstones, edits and pending deletes of one leave the other alone.
pub async fn client_ids_and_seqs_are_per_conversation<F: Backend>(factory: F) -> CaseResult {
    let store = factory.open(0).await?;
    let rows = vec![
        sent("x", "m", 1),
        sent("y", "m", 1),
        sent("x", "n", 2),
        sent("y", "n", 2),
        pending("x", "p", 3),
        pending("y", "p", 3),
    ];
    apply(
        &store,
        vec![
            put_conv(conv("x", 1, 0, 2)),
            put_conv(conv("y", 2, 0, 2)),
            put(rows.clone()),
        ],
    )
    .await?;
    for m in &rows {
        assert_eq!(
            row(&store, m.conversation.as_str(), m.client_msg_id.as_str())
                .await?
                .as_ref(),
            Some(m)
        );
    }
    apply(
        &store,
        vec![
            tombstones("x", 1, 1),
            edit("x", 2, 5, b"x edited"),
            delete_pending("x", "p"),
        ],
    )
    .await?;
    assert_eq!(all_seqs(&store, "x").await?, vec![2]);
    assert_eq!(all_seqs(&store, "y").await?, vec![1, 2]);
    assert_eq!(row(&store, "y", "n").await?, Some(sent("y", "n", 2)));
    assert_eq!(
        row(&store, "x", "n").await?.map(|m| m.content),
        Some(b"x edited".to_vec())
    );
    assert_eq!(row(&store, "x", "p").await?, None);
    assert_eq!(row(&store, "y", "p").await?, Some(pending("y", "p", 3)));
    assert!(store.tombstones(&cid("y")).await?.is_empty());
    store.check_integrity().await?;
    Ok(())
}

/// Client ids are unique per (sender, conversation) only: rows are keyed by (conversation,
/// sender, client id). Another user's message with the id of this device's pending send is a
/// row of its own (the pending row and its outbox entry stay, and the pending row still
/// becomes the sent row at its ack); a third sender's copy is a third row; conflicts stay
/// per (sender, client id) and per seq. (fuzz: foreign-sender-same-client-id)
pub async fn same_client_id_of_two_senders_is_two_rows<F: Backend>(factory: F) -> CaseResult {
    let store = factory.open(0).await?;
    let mut ops = vec![put_conv(conv("c", 1, 0, 5))];
    ops.extend(send_ops("c", "x", 50));
    apply(&store, ops).await?;
    let p = pending("c", "x", 50);
    let theirs = sent("c", "x", 1);
    assert_eq!(theirs.sender, UserId::from("bob"));
    apply(&store, vec![put(vec![theirs.clone()])]).await?;
    assert_eq!(row_of(&store, "c", "me", "x").await?, Some(p.clone()));
    assert_eq!(row_of(&store, "c", "bob", "x").await?, Some(theirs.clone()));
    assert_eq!(row_of(&store, "c", "carol", "x").await?, None);
    assert_eq!(unsent_ids(&store, "c").await?, ["x"]);
    assert_eq!(outbox_ids(&store).await?, ["x"]);
    store.check_integrity().await?;

    // The ack turns this device's row into the sent row; bob's stays where it is.
    let mine = acked(&p, 2);
    let carols = Message {
        sender: UserId::from("carol"),
        ..sent("c", "x", 3)
    };
    apply(
        &store,
        vec![
            put(vec![mine.clone(), carols.clone()]),
            WriteOp::RemoveOutbox(mid("x")),
        ],
    )
    .await?;
    assert_eq!(row_of(&store, "c", "me", "x").await?, Some(mine.clone()));
    assert_eq!(row_of(&store, "c", "bob", "x").await?, Some(theirs.clone()));
    assert_eq!(
        row_of(&store, "c", "carol", "x").await?,
        Some(carols.clone())
    );
    assert_eq!(
        store
            .messages_page(&cid("c"), None, Direction::After, 10)
            .await?,
        vec![theirs.clone(), mine.clone(), carols.clone()]
    );
    assert!(unsent_ids(&store, "c").await?.is_empty());
    store.check_integrity().await?;

    // Conflicts are still conflicts: bob's x at another seq, and another sender at a held seq.
    let extra = [cid("c")];
    let before = dump_including(&store, &extra).await?;
    expect_rejected(
        &store,
        vec![put(vec![sent("c", "x", 4)])],
        "bob's x at seq 4",
    )
    .await;
    let dave_at_1 = Message {
        sender: UserId::from("dave"),
        ..sent("c", "x", 1)
    };
    expect_rejected(
        &store,
        vec![put(vec![dave_at_1])],
        "dave's x at bob's seq 1",
    )
    .await;
    assert_dumps_equal(
        &before,
        &dump_including(&store, &extra).await?,
        "after the rejections",
    );

    // A tombstone deletes the row at its seq only; a pending delete touches no sent row.
    apply(
        &store,
        vec![tombstones("c", 1, 1), delete_pending("c", "x")],
    )
    .await?;
    assert_eq!(row_of(&store, "c", "bob", "x").await?, None);
    assert_eq!(row_of(&store, "c", "me", "x").await?, Some(mine));
    assert_eq!(row_of(&store, "c", "carol", "x").await?, Some(carols));
    store.check_integrity().await?;
    Ok(())
}
