//! Hand-driven sans-IO flows: the engine against a scripted server, no storage, no I/O.
//! The full simulated-server scenarios live in tidemark-conformance.

mod common;

use common::{cfg, drain, msg};
use tidemark_engine::*;

fn connected_engine(entries: Vec<MaxSeqEntry>) -> (Engine, Vec<(RequestId, Request)>, Vec<Event>) {
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
    let (reqs, events) = drain(&mut engine, now);
    (engine, reqs, events)
}

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

#[test]
fn newest_first_pulls_window_and_announces_in_order() {
    let (mut engine, reqs, _) = connected_engine(vec![entry("a", 50)]);
    assert_eq!(reqs.len(), 1);
    let (id, Request::Pull { ranges, .. }) = &reqs[0] else {
        panic!("expected a pull: {reqs:?}")
    };
    assert_eq!(
        ranges,
        &vec![PullRange {
            conversation: "a".into(),
            from: Seq(31),
            to: Seq(50)
        }]
    );
    let messages = (31..=50).rev().map(|s| msg("a", s, "bob")).collect();
    engine.handle_response(
        Timestamp(2),
        *id,
        Response::Pulled {
            ranges: vec![PulledRange {
                conversation: "a".into(),
                from: Seq(31),
                to: Seq(50),
                messages,
                missing: SeqRanges::new(),
                min_seq: Seq(0),
                max_seq: Seq(50),
            }],
        },
    );
    let (_, events) = drain(&mut engine, Timestamp(2));
    let received: Vec<u64> = events
        .iter()
        .flat_map(|e| match e {
            Event::MessagesReceived { messages, .. } => {
                messages.iter().map(|m| m.seq.unwrap().0).collect()
            }
            _ => vec![],
        })
        .collect();
    assert_eq!(received, (31..=50).collect::<Vec<_>>());
    assert!(events.contains(&Event::SyncFinished));
    let conv = engine.conversation(&"a".into()).unwrap();
    assert_eq!(conv.gaps().len(), 1, "old history stays an explicit gap");
    assert_eq!(conv.unread, 50);
}

#[test]
fn push_beyond_next_is_held_back_until_the_gap_is_pulled() {
    let (mut engine, reqs, _) = connected_engine(vec![entry("a", 0)]);
    assert!(reqs.is_empty());
    let now = Timestamp(5);
    engine.handle_push(now, Push::Message(msg("a", 1, "bob")));
    let (_, events) = drain(&mut engine, now);
    assert!(events
        .iter()
        .any(|e| matches!(e, Event::MessagesReceived { .. })));
    engine.handle_push(now, Push::Message(msg("a", 4, "bob")));
    let (reqs, events) = drain(&mut engine, now);
    assert!(
        !events
            .iter()
            .any(|e| matches!(e, Event::MessagesReceived { .. })),
        "4 waits for 2..3"
    );
    let (id, Request::Pull { ranges, .. }) = &reqs[0] else {
        panic!()
    };
    assert_eq!((ranges[0].from, ranges[0].to), (Seq(2), Seq(3)));
    // A duplicate push changes nothing.
    engine.handle_push(now, Push::Message(msg("a", 4, "bob")));
    let (reqs2, events2) = drain(&mut engine, now);
    assert!(
        reqs2.is_empty() && events2.is_empty(),
        "{reqs2:?} {events2:?}"
    );
    engine.handle_response(
        now,
        *id,
        Response::Pulled {
            ranges: vec![PulledRange {
                conversation: "a".into(),
                from: Seq(2),
                to: Seq(3),
                messages: vec![msg("a", 2, "bob")],
                missing: SeqRanges::from_range(Seq(3), Seq(3)),
                min_seq: Seq(0),
                max_seq: Seq(4),
            }],
        },
    );
    let (_, events) = drain(&mut engine, now);
    let seqs: Vec<u64> = events
        .iter()
        .flat_map(|e| match e {
            Event::MessagesReceived { messages, .. } => {
                messages.iter().map(|m| m.seq.unwrap().0).collect()
            }
            _ => vec![],
        })
        .collect();
    assert_eq!(seqs, vec![2, 4]);
    assert_eq!(
        engine.conversation(&"a".into()).unwrap().unread,
        3,
        "tombstone 3 is not unread"
    );
}

#[test]
fn send_goes_out_after_commit_and_ack_marks_read() {
    let (mut engine, _, _) = connected_engine(vec![entry("a", 3)]);
    let now = Timestamp(9);
    let cid = engine
        .send_message(now, &"a".into(), ContentKind::Text, b"hi".to_vec())
        .unwrap();
    // The write comes before the request, and the request only after the commit.
    let Output::Write(batch, w) = engine.poll_output() else {
        panic!()
    };
    assert!(w.ops.iter().any(|op| matches!(op, WriteOp::PutOutbox(_))));
    assert!(matches!(engine.poll_output(), Output::Timeout(_)));
    engine.handle_batch_committed(now, batch, &Applied::default());
    let (reqs, _) = drain(&mut engine, now);
    let (id, Request::Send { client_msg_id, .. }) = reqs.last().unwrap() else {
        panic!("{reqs:?}")
    };
    assert_eq!(client_msg_id, &cid);
    engine.handle_response(
        now,
        *id,
        Response::SendAck {
            client_msg_id: cid.clone(),
            seq: Seq(4),
            server_time: now,
        },
    );
    let (_, events) = drain(&mut engine, now);
    assert!(events.contains(&Event::MessageSent {
        conversation: "a".into(),
        client_msg_id: cid,
        seq: Seq(4)
    }));
    let conv = engine.conversation(&"a".into()).unwrap();
    assert_eq!(conv.read_seq, Seq(4));
    assert_eq!(conv.unread, 0);
    assert!(engine.outbox().is_empty());
}
