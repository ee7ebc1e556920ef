//! How a send ends when its ack names a seq the device already holds as a tombstone (issue 9,
//! failure 6): the server deleted the message between the send and the ack the device got.

#![allow(
    clippy::unwrap_used,
    reason = "test helpers: a failed step is a failed test"
)]

#[allow(dead_code, reason = "this file uses only some of the shared helpers")]
mod common;

use common::cfg;
use futures::executor::block_on;
use tidemark_engine::*;

/// A scripted server that holds conversation `a` with one message at seq 1, deleted, sent
/// by this device as `sent`: answers the engine's requests until it asks nothing more.
/// With `ack_last`, a send is answered only once the deletion was answered (the device holds
/// the tombstone when the ack arrives); otherwise in the order asked. Returns the events,
/// every write the engine committed, and the requests.
fn serve(
    engine: &mut Engine,
    now: Timestamp,
    sent: &ClientMsgId,
    ack_last: bool,
) -> (Vec<Event>, Vec<WriteOp>, Vec<Request>) {
    let conv = ConversationId::from("a");
    let mut events = Vec::new();
    let mut writes = Vec::new();
    let mut asked = Vec::new();
    let mut deletions_told = false;
    let mut held_back = Vec::new();
    for _ in 0..50 {
        let mut requests = std::mem::take(&mut held_back);
        loop {
            match engine.poll_output() {
                Output::Timeout(_) => break,
                Output::Write(id, batch) => {
                    writes.extend(batch.ops);
                    engine.handle_batch_committed(now, id, &Applied::default());
                }
                Output::Request(id, r) => requests.push((id, r)),
                Output::Event(e) => events.push(e),
                Output::Connect | Output::Disconnect { .. } => {}
            }
        }
        if requests.is_empty() {
            return (events, writes, asked);
        }
        let told_before = deletions_told;
        for (id, request) in requests {
            if ack_last && !told_before && matches!(request, Request::Send { .. }) {
                held_back.push((id, request));
                continue;
            }
            asked.push(request.clone());
            let response = match request {
                Request::GetMaxSeqs { .. } => Response::MaxSeqs {
                    entries: vec![MaxSeqEntry {
                        conversation: conv.clone(),
                        kind: ConversationKind::Direct,
                        max_seq: Seq(1),
                        min_seq: Seq(0),
                        read_seq: Seq(1),
                        last_activity: now,
                        not_unread: SeqRanges::from_range(Seq(1), Seq(1)),
                        deleted_count: 1,
                    }],
                    has_more: false,
                    token: None,
                    full: true,
                },
                Request::GetDeletions { .. } => {
                    deletions_told = true;
                    Response::Deletions {
                        entries: vec![DeletionsEntry {
                            conversation: conv.clone(),
                            seqs: SeqRanges::from_range(Seq(1), Seq(1)),
                            deleted_count: 1,
                        }],
                    }
                }
                Request::Pull { ranges, .. } => Response::Pulled {
                    ranges: ranges
                        .into_iter()
                        .map(|r| PulledRange {
                            conversation: r.conversation,
                            from: r.from,
                            to: r.to.min(Seq(1)),
                            messages: Vec::new(),
                            missing: SeqRanges::from_range(r.from, r.to.min(Seq(1))),
                            min_seq: Seq(0),
                            max_seq: Seq(1),
                        })
                        .collect(),
                },
                // The resend: the server answers with the original ack (seq 1, deleted).
                Request::Send { client_msg_id, .. } => {
                    assert_eq!(&client_msg_id, sent);
                    Response::SendAck {
                        client_msg_id,
                        seq: Seq(1),
                        server_time: Timestamp(5),
                    }
                }
                Request::MarkRead { conversation, seq } => Response::ReadAck { conversation, seq },
                Request::Ping => Response::Pong { server_time: now },
            };
            engine.handle_response(now, id, response);
        }
    }
    panic!("the engine kept asking");
}

/// A device sends, loses the connection before the ack, the server deletes that seq; after
/// the reconnect the device learns the deletion and the resend is acked with the deleted seq.
/// The send ends cleanly: sent once, the pending row deleted (the tombstone wins), the outbox
/// empty; never pending, never failed.
#[test]
fn an_ack_at_a_tombstoned_seq_ends_the_send_cleanly() {
    send_acked_at_a_deleted_seq(true);
}

/// The same when the ack arrives before the device learns of the deletion: the ack is
/// stored as the message, and the deletion then makes it a tombstone.
#[test]
fn an_ack_before_the_deletion_ends_the_send_cleanly() {
    send_acked_at_a_deleted_seq(false);
}

fn send_acked_at_a_deleted_seq(ack_last: bool) {
    let storage = MemoryStorage::new();
    let conv = ConversationId::from("a");
    let t = Timestamp(1);
    let mut engine = Engine::new(cfg(), SyncSnapshot::default(), t);
    assert_eq!(engine.poll_output(), Output::Connect);
    engine.handle_connected(t);
    // The conversation exists, empty, before the send.
    let mut first = None;
    loop {
        match engine.poll_output() {
            Output::Request(id, Request::GetMaxSeqs { .. }) => first = Some(id),
            Output::Write(id, _) => engine.handle_batch_committed(t, id, &Applied::default()),
            Output::Timeout(_) => break,
            _ => {}
        }
    }
    engine.handle_response(
        t,
        first.expect("a max-seq request"),
        Response::MaxSeqs {
            entries: vec![MaxSeqEntry {
                conversation: conv.clone(),
                kind: ConversationKind::Direct,
                max_seq: Seq(0),
                min_seq: Seq(0),
                read_seq: Seq(0),
                last_activity: Timestamp(0),
                not_unread: SeqRanges::new(),
                deleted_count: 0,
            }],
            has_more: false,
            token: None,
            full: true,
        },
    );
    let sent = engine
        .send_message(Timestamp(2), &conv, ContentKind::Text, b"hi".to_vec())
        .unwrap();
    // The send goes out; the connection drops before its ack.
    let mut went_out = false;
    loop {
        match engine.poll_output() {
            Output::Write(id, _) => {
                engine.handle_batch_committed(Timestamp(2), id, &Applied::default())
            }
            Output::Request(_, Request::Send { client_msg_id, .. }) => {
                went_out |= client_msg_id == sent;
            }
            Output::Timeout(_) => break,
            _ => {}
        }
    }
    assert!(went_out);
    engine.handle_disconnected(Timestamp(3), "gone");
    let later = Timestamp(60_000);
    engine.handle_timeout(later);
    engine.handle_connected(later);
    let (events, writes, asked) = serve(&mut engine, later, &sent, ack_last);
    block_on(storage.apply(WriteBatch {
        ops: writes.clone(),
    }))
    .unwrap();

    assert!(
        asked.iter().any(|r| matches!(r, Request::Send { .. })),
        "the send was resent: {asked:?}"
    );
    let sent_events: Vec<&Event> = events
        .iter()
        .filter(|e| matches!(e, Event::MessageSent { .. }))
        .collect();
    assert_eq!(
        sent_events,
        vec![&Event::MessageSent {
            conversation: conv.clone(),
            client_msg_id: sent.clone(),
            seq: Seq(1),
        }]
    );
    assert!(
        !events.iter().any(|e| matches!(e, Event::SendFailed { .. })),
        "{events:?}"
    );
    assert!(engine.outbox().is_empty());
    if ack_last {
        // The tombstone wins: the pending row goes.
        assert!(writes.contains(&WriteOp::DeletePendingMessage {
            conversation: conv.clone(),
            client_msg_id: sent.clone(),
        }));
    }
    assert!(writes.contains(&WriteOp::RemoveOutbox(sent.clone())));
    // The store holds no row of the send: not pending, not failed, not shown.
    let rows = block_on(storage.messages_page(&conv, None, Direction::Before, 100)).unwrap();
    assert!(
        !rows.iter().any(|m| m.client_msg_id == sent),
        "rows left: {rows:?}"
    );
    assert!(block_on(storage.outbox()).unwrap().is_empty());
    // Nothing left to resend after another reconnect.
    engine.handle_disconnected(later, "again");
    let again = Timestamp(120_000);
    engine.handle_timeout(again);
    engine.handle_connected(again);
    let (events, _, asked) = serve(&mut engine, again, &sent, ack_last);
    assert!(!asked.iter().any(|r| matches!(r, Request::Send { .. })));
    assert!(!events
        .iter()
        .any(|e| matches!(e, Event::MessageSent { .. } | Event::SendFailed { .. })));
}
