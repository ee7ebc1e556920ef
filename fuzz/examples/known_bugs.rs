//! Plain reproductions of two engine/storage bugs the `engine_inputs` target found, both
//! fixed now (see README.md, "Known bugs and regressions"), without the fuzz harness; the
//! output shows the fixed behaviour (no announcement of the deleted message; both senders'
//! messages stored, the engine never stopped):
//!
//! ```text
//! cd fuzz && cargo run --example known_bugs
//! ```
//!
//! 1. `announced-then-deleted`: a message waiting for the seqs below it was announced and
//!    deleted in one batch; the app's `MessagesReceived` handler found no row.
//! 2. `foreign-sender-same-client-id`: two senders using the same client id in one
//!    conversation made the store refuse the second message for good; the engine stopped, and
//!    stopped again after a restart.

use futures::executor::block_on;
use tidemark_engine::*;

fn msg(conv: &str, seq: u64, sender: &str, id: &str) -> ServerMessage {
    ServerMessage {
        conversation: conv.into(),
        seq: Seq(seq),
        client_msg_id: id.into(),
        sender: sender.into(),
        kind: ContentKind::Text,
        content: b"x".to_vec(),
        created_at: Timestamp(1),
        server_time: Timestamp(1),
    }
}

/// Drains, applies writes, prints events. Returns false if a write was refused.
fn drain(e: &mut Engine, s: &MemoryStorage, now: u64) -> bool {
    loop {
        match e.poll_output() {
            Output::Timeout(_) => return true,
            Output::Write(id, b) => match block_on(s.apply(b)) {
                Ok(applied) => e.handle_batch_committed(Timestamp(now), id, &applied),
                Err(err) => {
                    println!("  store refused batch {id:?}: {err}");
                    e.handle_batch_failed(Timestamp(now), id, &err);
                }
            },
            Output::Event(ev) => match &ev {
                Event::MessagesReceived {
                    conversation,
                    messages,
                } => {
                    let seqs: Vec<u64> = messages.iter().map(|m| m.seq.unwrap().0).collect();
                    let rows: Vec<bool> = messages
                        .iter()
                        .map(|m| {
                            block_on(s.message_by_client_id(
                                conversation,
                                &m.sender,
                                &m.client_msg_id,
                            ))
                            .unwrap()
                            .is_some()
                        })
                        .collect();
                    println!(
                        "  event MessagesReceived {conversation} {seqs:?} row stored: {rows:?}"
                    );
                }
                other => println!("  event {other:?}"),
            },
            _ => {}
        }
    }
}

fn main() {
    let mut cfg = EngineConfig::new("me".into(), "d".into());
    cfg.connect_on_start = false;
    println!("1) announced then deleted");
    let s = MemoryStorage::new();
    let mut e = Engine::new(
        cfg.clone(),
        block_on(s.load_snapshot()).unwrap(),
        Timestamp(1),
    );
    drain(&mut e, &s, 1);
    e.handle_push(Timestamp(2), Push::Message(msg("c", 3, "u1", "m3")));
    drain(&mut e, &s, 2);
    e.handle_push(
        Timestamp(3),
        Push::Deleted {
            conversation: "c".into(),
            seqs: SeqRanges::from_range(Seq(3), Seq(3)),
            min_seq: Seq(3),
        },
    );
    drain(&mut e, &s, 3);

    println!("2) two senders, one client id");
    let s = MemoryStorage::new();
    let mut e = Engine::new(
        cfg.clone(),
        block_on(s.load_snapshot()).unwrap(),
        Timestamp(1),
    );
    drain(&mut e, &s, 1);
    e.handle_push(Timestamp(2), Push::Message(msg("g", 1, "u1", "1")));
    drain(&mut e, &s, 2);
    e.handle_push(Timestamp(3), Push::Message(msg("g", 2, "u2", "1")));
    drain(&mut e, &s, 3);
    println!("  stopped: {}", e.is_stopped());
    let mut e = Engine::new(
        cfg.clone(),
        block_on(s.load_snapshot()).unwrap(),
        Timestamp(10),
    );
    drain(&mut e, &s, 10);
    e.handle_push(Timestamp(11), Push::Message(msg("g", 2, "u2", "1")));
    drain(&mut e, &s, 11);
    println!("  after restart, stopped again: {}", e.is_stopped());
}
