//! Deterministic regression tests for engine bugs found by fuzzing
//! (fuzz/regressions/engine_inputs/, fuzz/README.md "Known bugs and regressions"), each the
//! reproducer's story told by hand against a scripted server.

mod common;

use common::{cfg, drain, msg};
use tidemark_engine::*;

fn entry(conv: &str, max: u64) -> MaxSeqEntry {
    MaxSeqEntry {
        conversation: ConversationId::from(conv),
        kind: ConversationKind::Direct,
        max_seq: Seq(max),
        min_seq: Seq(0),
        read_seq: Seq(0),
        last_activity: Timestamp(max),
        not_unread: SeqRanges::new(),
        deleted_count: 0,
    }
}

/// An engine connected and given the listing `entries`; returns the requests that followed.
fn listed_engine(entries: Vec<MaxSeqEntry>) -> (Engine, Vec<(RequestId, Request)>) {
    let now = Timestamp(1);
    let mut engine = Engine::new(cfg(), SyncSnapshot::default(), now);
    assert_eq!(engine.poll_output(), Output::Connect);
    engine.handle_connected(now);
    let (reqs, _) = drain(&mut engine, now);
    let (id, req) = &reqs[0];
    assert!(matches!(req, Request::GetMaxSeqs { after: None, .. }));
    engine.handle_response(
        now,
        *id,
        Response::MaxSeqs {
            entries,
            has_more: false,
            token: None,
            full: true,
        },
    );
    let (reqs, _) = drain(&mut engine, now);
    (engine, reqs)
}

/// An engine connected and synced to `entries` (nothing to pull: every max seq is 0).
fn connected_engine(entries: Vec<MaxSeqEntry>) -> Engine {
    listed_engine(entries).0
}

fn received_seqs(events: &[Event]) -> Vec<u64> {
    events
        .iter()
        .flat_map(|e| match e {
            Event::MessagesReceived { messages, .. } => messages
                .iter()
                .map(|m| m.seq.expect("announced with a seq").0)
                .collect(),
            _ => vec![],
        })
        .collect()
}

/// regressions/engine_inputs/announced-then-deleted: a push that both raises the floor past
/// the seqs a waiting message waits for and deletes that message must not announce it.
#[test]
fn deletion_raising_the_floor_does_not_announce_the_waiting_message_it_deletes() {
    let mut engine = connected_engine(vec![entry("a", 0)]);
    let now = Timestamp(5);
    engine.handle_push(now, Push::Message(msg("a", 3, "bob")));
    let (_, events) = drain(&mut engine, now);
    assert!(received_seqs(&events).is_empty(), "3 waits for 1..2");

    engine.handle_push(
        now,
        Push::Deleted {
            conversation: "a".into(),
            seqs: SeqRanges::from_range(Seq(3), Seq(3)),
            min_seq: Seq(3),
        },
    );
    let (_, events) = drain(&mut engine, now);
    assert_eq!(
        received_seqs(&events),
        Vec::<u64>::new(),
        "3 was deleted by the same push: {events:?}"
    );
    assert!(events.contains(&Event::MessagesDeleted {
        conversation: "a".into(),
        seqs: SeqRanges::from_range(Seq(3), Seq(3)),
    }));
    // Nothing waits any more: the next message is announced at once.
    engine.handle_push(now, Push::Message(msg("a", 4, "bob")));
    let (_, events) = drain(&mut engine, now);
    assert_eq!(received_seqs(&events), vec![4]);
}

/// The max-seq path (found by the strict fuzz harness): a message pushed before the listing
/// waits for 1..10; one page lists its conversation twice (a misbehaving server), first with
/// the floor at 11 (which releases the message) and then at 119 (which deletes it). The
/// message is deleted within the same input, so it must not be announced.
#[test]
fn max_seq_page_raising_the_floor_twice_does_not_announce_a_message_it_deletes() {
    let now = Timestamp(1);
    let mut engine = Engine::new(cfg(), SyncSnapshot::default(), now);
    engine.handle_push(now, Push::Message(msg("a", 11, "bob")));
    let (_, events) = drain(&mut engine, now);
    assert!(received_seqs(&events).is_empty(), "11 waits for 1..10");
    engine.handle_connected(now);
    let (reqs, _) = drain(&mut engine, now);
    let (id, _) = reqs
        .iter()
        .find(|(_, r)| matches!(r, Request::GetMaxSeqs { .. }))
        .expect("the listing");
    let floor = |min: u64, max: u64| MaxSeqEntry {
        min_seq: Seq(min),
        ..entry("a", max)
    };
    engine.handle_response(
        now,
        *id,
        Response::MaxSeqs {
            entries: vec![floor(11, 11), floor(119, 119)],
            has_more: false,
            token: None,
            full: true,
        },
    );
    let (_, events) = drain(&mut engine, now);
    assert_eq!(
        received_seqs(&events),
        Vec::<u64>::new(),
        "11 was deleted by the same page: {events:?}"
    );
    assert!(events.contains(&Event::MessagesDeleted {
        conversation: "a".into(),
        seqs: SeqRanges::from_range(Seq(11), Seq(11)),
    }));
}

/// The same ordering in a pull reply: a message pushed while the sync pull of `1..=5` is in
/// flight waits for 1..2; the reply raises the floor to 3 (completing the run below it) and
/// reports 3..5 missing. 3 is deleted, never announced.
#[test]
fn pull_reply_raising_the_floor_does_not_announce_a_waiting_message_it_deletes() {
    let (mut engine, reqs) = listed_engine(vec![entry("a", 5)]);
    let (id, Request::Pull { ranges, .. }) = &reqs[0] else {
        panic!("expected the sync pull: {reqs:?}")
    };
    assert_eq!((ranges[0].from, ranges[0].to), (Seq(1), Seq(5)));
    let now = Timestamp(5);
    engine.handle_push(now, Push::Message(msg("a", 3, "bob")));
    let (_, events) = drain(&mut engine, now);
    assert!(received_seqs(&events).is_empty(), "3 waits for 1..2");

    engine.handle_response(
        now,
        *id,
        Response::Pulled {
            ranges: vec![PulledRange {
                conversation: "a".into(),
                from: Seq(1),
                to: Seq(5),
                messages: Vec::new(),
                missing: SeqRanges::from_range(Seq(3), Seq(5)),
                min_seq: Seq(3),
                max_seq: Seq(5),
            }],
        },
    );
    let (_, events) = drain(&mut engine, now);
    assert_eq!(received_seqs(&events), Vec::<u64>::new(), "{events:?}");
    assert!(events.contains(&Event::MessagesDeleted {
        conversation: "a".into(),
        seqs: SeqRanges::from_range(Seq(3), Seq(3)),
    }));
}

fn sync_progress(events: &[Event]) -> Vec<(u64, u64)> {
    events
        .iter()
        .filter_map(|e| match e {
            Event::SyncProgress { done, total } => Some((*done, *total)),
            _ => None,
        })
        .collect()
}

/// regressions/engine_inputs/connected-twice-sync-progress: `handle_connected` while already
/// connected is a disconnect and a connect. The first connection's listing, answered late,
/// is ignored instead of re-planning the second run, so progress never has `done > total`.
#[test]
fn connected_twice_restarts_the_sync_run() {
    let now = Timestamp(1);
    let mut engine = Engine::new(cfg(), SyncSnapshot::default(), now);
    assert_eq!(engine.poll_output(), Output::Connect);
    engine.handle_connected(now);
    let (reqs, _) = drain(&mut engine, now);
    let (first_listing, _) = reqs[0].clone();

    engine.handle_connected(now);
    let (reqs, events) = drain(&mut engine, now);
    let connection: Vec<&Event> = events
        .iter()
        .filter(|e| matches!(e, Event::ConnectionChanged { .. }))
        .collect();
    assert_eq!(
        connection,
        [
            &Event::ConnectionChanged {
                state: ConnectionState::Disconnected
            },
            &Event::ConnectionChanged {
                state: ConnectionState::Connected
            }
        ],
        "a disconnect and a connect"
    );
    let (second_listing, req) = reqs[0].clone();
    assert!(matches!(req, Request::GetMaxSeqs { after: None, .. }));
    assert_ne!(first_listing, second_listing);

    let listing = || Response::MaxSeqs {
        entries: vec![entry("a", 5)],
        has_more: false,
        token: None,
        full: true,
    };
    engine.handle_response(now, second_listing, listing());
    let (reqs, mut events) = drain(&mut engine, now);
    let (pull, Request::Pull { ranges, .. }) = &reqs[0] else {
        panic!("expected the sync pull: {reqs:?}")
    };
    // The first connection's listing comes back late: it belongs to no run.
    engine.handle_response(now, first_listing, listing());
    let (reqs, late) = drain(&mut engine, now);
    assert!(reqs.is_empty(), "{reqs:?}");
    events.extend(late);
    engine.handle_response(
        now,
        *pull,
        Response::Pulled {
            ranges: vec![PulledRange {
                conversation: "a".into(),
                from: ranges[0].from,
                to: ranges[0].to,
                messages: (1..=5).map(|s| msg("a", s, "bob")).collect(),
                missing: SeqRanges::new(),
                min_seq: Seq(0),
                max_seq: Seq(5),
            }],
        },
    );
    let (_, done) = drain(&mut engine, now);
    events.extend(done);
    assert_eq!(sync_progress(&events), vec![(0, 1), (1, 1)]);
    assert!(events.contains(&Event::SyncFinished));
    assert!(!engine.is_syncing());
}

fn sent_events(events: &[Event]) -> Vec<(String, ClientMsgId, u64)> {
    events
        .iter()
        .filter_map(|e| match e {
            Event::MessageSent {
                conversation,
                client_msg_id,
                seq,
            } => Some((conversation.0.clone(), client_msg_id.clone(), seq.0)),
            _ => None,
        })
        .collect()
}

/// The echo of `id`, as the server delivers it in `conv` at `seq`.
fn own_message(conv: &str, seq: u64, id: &ClientMsgId) -> ServerMessage {
    ServerMessage {
        client_msg_id: id.clone(),
        ..msg(conv, seq, "me")
    }
}

/// regressions/engine_inputs/echo-in-other-conversation: a message of this user carrying the
/// id of a send made in `c` but delivered in `b` (and then `a`) is not that send's echo: the
/// outbox entry stays until the real ack in `c`, and `MessageSent` comes once, for `c`.
#[test]
fn own_client_id_in_another_conversation_is_not_an_echo() {
    let mut engine = connected_engine(vec![entry("a", 0), entry("b", 0), entry("c", 0)]);
    let now = Timestamp(5);
    let id = engine
        .send_message(now, &"c".into(), ContentKind::Text, b"hi".to_vec())
        .unwrap();
    let (reqs, _) = drain(&mut engine, now);
    let send = reqs
        .iter()
        .find_map(|(rid, r)| matches!(r, Request::Send { .. }).then_some(*rid))
        .expect("the send goes out");

    engine.handle_push(now, Push::Message(own_message("b", 1, &id)));
    let (_, events) = drain(&mut engine, now);
    assert!(sent_events(&events).is_empty(), "{events:?}");
    assert_eq!(received_seqs(&events), vec![1], "an own message of b");
    assert_eq!(engine.outbox().len(), 1, "the send in c is still waiting");
    assert_eq!(engine.outbox()[0].client_msg_id, id);

    engine.handle_response(
        now,
        send,
        Response::SendAck {
            client_msg_id: id.clone(),
            seq: Seq(1),
            server_time: Timestamp(7),
        },
    );
    let (_, events) = drain(&mut engine, now);
    assert_eq!(sent_events(&events), vec![("c".to_owned(), id.clone(), 1)]);
    assert!(engine.outbox().is_empty());

    // Once more in a: no longer in the outbox, and its tag is c's, so not an echo either.
    engine.handle_push(now, Push::Message(own_message("a", 1, &id)));
    let (_, events) = drain(&mut engine, now);
    assert!(sent_events(&events).is_empty(), "{events:?}");
    assert_eq!(received_seqs(&events), vec![1]);
}

/// A send given up on (cancelled while on the wire) whose echo arrives later, in its own
/// conversation, is still acked by the device prefix; in another conversation it is not.
#[test]
fn late_echo_of_a_cancelled_send_is_acked_only_in_its_conversation() {
    let mut engine = connected_engine(vec![entry("b", 0), entry("c", 0)]);
    let now = Timestamp(5);
    let id = engine
        .send_message(now, &"c".into(), ContentKind::Text, b"hi".to_vec())
        .unwrap();
    drain(&mut engine, now);
    engine.cancel(now, &"c".into(), &id).unwrap();
    drain(&mut engine, now);
    assert!(engine.outbox().is_empty());

    engine.handle_push(now, Push::Message(own_message("b", 1, &id)));
    let (_, events) = drain(&mut engine, now);
    assert!(sent_events(&events).is_empty(), "{events:?}");
    assert_eq!(received_seqs(&events), vec![1]);

    engine.handle_push(now, Push::Message(own_message("c", 1, &id)));
    let (_, events) = drain(&mut engine, now);
    assert_eq!(sent_events(&events), vec![("c".to_owned(), id, 1)]);
    assert!(received_seqs(&events).is_empty(), "acked, not received");
}

/// Drains outputs, applying writes to `store` and committing them.
async fn drain_into(engine: &mut Engine, store: &MemoryStorage, now: Timestamp) {
    let mut drain = testing::Drain::new(common::MAX_OUTPUTS);
    while let testing::Polled::Execute(output) = drain.next(engine).expect("the engine settles") {
        if let Output::Write(id, batch) = output {
            testing::apply_write(engine, store, now, id, batch)
                .await
                .expect("the store takes the batch");
        }
    }
}

/// regressions/engine_inputs/client-id-reused-after-restart: an engine restarted from the
/// store with the same seed in the same millisecond makes ids the previous one did not, in
/// another conversation and in the same one, and every outbox entry survives.
#[tokio::test]
async fn client_ids_do_not_repeat_after_a_restart_in_the_same_millisecond() {
    let mut config = cfg();
    config.connect_on_start = false;
    let now = Timestamp(1_000);
    let store = MemoryStorage::new();
    let snapshot = SyncSnapshot {
        conversations: ["a", "b", "c"]
            .map(|c| Conversation::new(c.into(), ConversationKind::Direct))
            .to_vec(),
        ..SyncSnapshot::default()
    };
    let put = WriteBatch {
        ops: snapshot
            .conversations
            .iter()
            .cloned()
            .map(WriteOp::PutConversation)
            .collect(),
    };
    store.apply(put).await.unwrap();

    let mut first = Engine::new(config.clone(), store.load_snapshot().await.unwrap(), now);
    let id_c = first
        .send_message(now, &"c".into(), ContentKind::Text, b"1".to_vec())
        .unwrap();
    drain_into(&mut first, &store, now).await;
    drop(first);

    let mut second = Engine::new(config.clone(), store.load_snapshot().await.unwrap(), now);
    let id_b = second
        .send_message(now, &"b".into(), ContentKind::Text, b"2".to_vec())
        .unwrap();
    let id_c2 = second
        .send_message(now, &"c".into(), ContentKind::Text, b"3".to_vec())
        .unwrap();
    drain_into(&mut second, &store, now).await;
    assert_ne!(id_b, id_c);
    assert_ne!(id_c2, id_c);
    assert_ne!(id_c2, id_b);
    let stored: Vec<ClientMsgId> = store
        .outbox()
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.client_msg_id)
        .collect();
    assert_eq!(stored, vec![id_c.clone(), id_b.clone(), id_c2.clone()]);
    store.check_integrity().await.unwrap();

    // The same again with nothing in the outbox but the first engine's send, restarted from
    // the very same snapshot: the counter goes on above the outbox's, so ids still differ
    // and still sort after the older send.
    let mut third = Engine::new(config, store.load_snapshot().await.unwrap(), now);
    let id = third
        .send_message(now, &"a".into(), ContentKind::Text, b"4".to_vec())
        .unwrap();
    assert!(![&id_c, &id_b, &id_c2].contains(&&id));
    assert!(id > id_c2, "{id} sorts after {id_c2}");
}

/// Found by the strict harness in session 2 (regressions/engine_inputs/
/// own-id-pushed-after-uncommitted-restart): a send whose batch never committed is lost at a
/// restart in the same millisecond, so the new engine starts from the same snapshot and its
/// random part repeats. If a message with that id then arrives (the harness's server is free
/// to deliver any id), the next send must not take the id again: its pending row would merge
/// into the stored sent row and leave an outbox entry without a row.
#[tokio::test]
async fn a_new_send_never_takes_an_own_id_already_delivered() {
    let mut config = cfg();
    config.connect_on_start = false;
    let now = Timestamp(1_000);
    let store = MemoryStorage::new();
    let put = WriteBatch {
        ops: ["a", "b"]
            .map(|c| {
                WriteOp::PutConversation(Conversation::new(c.into(), ConversationKind::Direct))
            })
            .to_vec(),
    };
    store.apply(put).await.unwrap();

    // The first engine's send is never committed: nothing of it reaches the store.
    let mut first = Engine::new(config.clone(), store.load_snapshot().await.unwrap(), now);
    let lost = first
        .send_message(now, &"a".into(), ContentKind::Text, b"lost".to_vec())
        .unwrap();
    drop(first);

    let mut second = Engine::new(config.clone(), store.load_snapshot().await.unwrap(), now);
    let mut echo = msg("a", 1, "me");
    echo.client_msg_id = lost.clone();
    second.handle_push(now, Push::Message(echo));
    drain_into(&mut second, &store, now).await;
    let id = second
        .send_message(now, &"a".into(), ContentKind::Text, b"new".to_vec())
        .unwrap();
    drain_into(&mut second, &store, now).await;
    assert_ne!(id, lost, "the new send reused a delivered id");
    store.check_integrity().await.unwrap();
}

/// Drains outputs of a connected engine, applying writes to `store`; returns the requests
/// and the events, and panics if the store refuses a batch.
async fn drive(
    engine: &mut Engine,
    store: &MemoryStorage,
    now: Timestamp,
) -> (Vec<(RequestId, Request)>, Vec<Event>) {
    let mut requests = Vec::new();
    let mut events = Vec::new();
    let mut drain = testing::Drain::new(common::MAX_OUTPUTS);
    while let testing::Polled::Execute(output) = drain.next(engine).expect("the engine settles") {
        match output {
            Output::Write(id, batch) => {
                testing::apply_write(engine, store, now, id, batch)
                    .await
                    .expect("the store takes the batch");
                store
                    .check_integrity()
                    .await
                    .expect("the store stays consistent");
            }
            Output::Request(id, r) => requests.push((id, r)),
            Output::Event(e) => events.push(e),
            Output::Connect | Output::Disconnect { .. } | Output::Timeout(_) => {}
        }
    }
    (requests, events)
}

/// regressions/engine_inputs/foreign-sender-same-client-id: client ids are unique per
/// (sender, conversation) only. Another user's message carrying the client id of this
/// device's pending send is stored as its own row: the pending row and outbox entry stay, the
/// ack turns the pending row into the sent row, and a third user's message with the same id
/// is stored too (the engine never stops on a rejected batch).
#[tokio::test]
async fn another_senders_message_with_the_id_of_a_send_is_its_own_row() {
    let store = MemoryStorage::new();
    let now = Timestamp(1);
    let mut engine = Engine::new(cfg(), store.load_snapshot().await.unwrap(), now);
    assert_eq!(engine.poll_output(), Output::Connect);
    engine.handle_connected(now);
    let (reqs, _) = drive(&mut engine, &store, now).await;
    engine.handle_response(
        now,
        reqs[0].0,
        Response::MaxSeqs {
            entries: vec![entry("c", 0)],
            has_more: false,
            token: None,
            full: true,
        },
    );
    drive(&mut engine, &store, now).await;

    let id = engine
        .send_message(now, &"c".into(), ContentKind::Text, b"mine".to_vec())
        .unwrap();
    let (reqs, _) = drive(&mut engine, &store, now).await;
    let send = reqs
        .iter()
        .find_map(|(rid, r)| matches!(r, Request::Send { .. }).then_some(*rid))
        .expect("the send goes out");
    let c = ConversationId::from("c");
    let (me, bob, carol) = (
        UserId::from("me"),
        UserId::from("bob"),
        UserId::from("carol"),
    );

    let bobs = ServerMessage {
        client_msg_id: id.clone(),
        ..msg("c", 1, "bob")
    };
    engine.handle_push(now, Push::Message(bobs));
    let (_, events) = drive(&mut engine, &store, now).await;
    assert_eq!(received_seqs(&events), vec![1], "bob's message is received");
    assert!(sent_events(&events).is_empty());
    let pending = store.message_by_client_id(&c, &me, &id).await.unwrap();
    assert_eq!(pending.map(|m| m.status), Some(MessageStatus::Pending));
    let row = store.message_by_client_id(&c, &bob, &id).await.unwrap();
    assert_eq!(row.and_then(|m| m.seq), Some(Seq(1)));
    assert_eq!(store.outbox().await.unwrap().len(), 1);

    engine.handle_response(
        now,
        send,
        Response::SendAck {
            client_msg_id: id.clone(),
            seq: Seq(2),
            server_time: Timestamp(9),
        },
    );
    let (_, events) = drive(&mut engine, &store, now).await;
    assert_eq!(sent_events(&events), vec![("c".to_owned(), id.clone(), 2)]);
    let mine = store.message_by_client_id(&c, &me, &id).await.unwrap();
    assert_eq!(mine.and_then(|m| m.seq), Some(Seq(2)));

    let carols = ServerMessage {
        client_msg_id: id.clone(),
        ..msg("c", 3, "carol")
    };
    engine.handle_push(now, Push::Message(carols));
    let (_, events) = drive(&mut engine, &store, now).await;
    assert_eq!(received_seqs(&events), vec![3]);
    assert!(!engine.is_stopped());
    let row = store.message_by_client_id(&c, &carol, &id).await.unwrap();
    assert_eq!(row.and_then(|m| m.seq), Some(Seq(3)));
    assert!(store.outbox().await.unwrap().is_empty());
}

/// A send acked at a seq already held (the held row wins, `MessageSent` at that seq) and then
/// delivered again at another seq by a server contradicting itself: `MessageSent` is not
/// emitted a second time (within the process: the engine remembers such acks in memory only).
#[test]
fn send_acked_at_a_held_seq_is_sent_once() {
    let mut engine = connected_engine(vec![entry("c", 0)]);
    let now = Timestamp(5);
    engine.handle_push(now, Push::Message(msg("c", 1, "bob")));
    drain(&mut engine, now);
    let id = engine
        .send_message(now, &"c".into(), ContentKind::Text, b"hi".to_vec())
        .unwrap();
    let (reqs, _) = drain(&mut engine, now);
    let send = reqs
        .iter()
        .find_map(|(rid, r)| matches!(r, Request::Send { .. }).then_some(*rid))
        .expect("the send goes out");
    engine.handle_response(
        now,
        send,
        Response::SendAck {
            client_msg_id: id.clone(),
            seq: Seq(1),
            server_time: Timestamp(7),
        },
    );
    let (_, events) = drain(&mut engine, now);
    assert_eq!(sent_events(&events), vec![("c".to_owned(), id.clone(), 1)]);
    engine.handle_push(now, Push::Message(own_message("c", 2, &id)));
    let (_, events) = drain(&mut engine, now);
    assert!(sent_events(&events).is_empty(), "{events:?}");
    assert_eq!(received_seqs(&events), vec![2]);
}

/// regressions/engine_inputs/sent-again-after-its-row-was-deleted: a send acked by its echo,
/// whose row the server then deletes, delivered again at another seq by a server
/// contradicting itself: `MessageSent` is not emitted a second time. Nothing in the store
/// shows the ack any more (the row went with its seq), so the engine remembers every send it
/// acked in memory; across a restart the repeat is the known limit (ARCHITECTURE.md).
#[test]
fn send_acked_then_deleted_is_sent_once() {
    let mut engine = connected_engine(vec![entry("b", 0)]);
    let now = Timestamp(5);
    let id = engine
        .send_message(now, &"b".into(), ContentKind::Text, b"hi".to_vec())
        .unwrap();
    drain(&mut engine, now);
    engine.handle_push(now, Push::Message(own_message("b", 1, &id)));
    let (_, events) = drain(&mut engine, now);
    assert_eq!(sent_events(&events), vec![("b".to_owned(), id.clone(), 1)]);
    assert!(engine.outbox().is_empty());

    engine.handle_push(
        now,
        Push::Deleted {
            conversation: "b".into(),
            seqs: SeqRanges::from_range(Seq(1), Seq(1)),
            min_seq: Seq(0),
        },
    );
    drain(&mut engine, now);
    engine.handle_push(now, Push::Message(own_message("b", 2, &id)));
    let (_, events) = drain(&mut engine, now);
    assert!(sent_events(&events).is_empty(), "{events:?}");
    assert_eq!(
        received_seqs(&events),
        vec![2],
        "an own message, not an echo"
    );
}
