//! The engine core alone: how many messages per second the sans-IO [`Engine`] reconciles
//! when nothing else costs anything: no network, no codec, no store (every write batch is
//! reported committed at once and dropped), a scripted server answering each request at once.
//!
//! A fresh device syncs 1,000 conversations of 1,000 messages each (`SyncPolicy::Full`, the
//! default pull sizes) from connect to `SyncFinished`; the answers are made as the requests
//! come. Baseline, in the same run: making the same answers and dropping them, the part of
//! the run that is the script's and not the engine's. Printed: both, the engine's share, and
//! its rate of messages reconciled per second.
//!
//! `ENGINE_CORE_CONVERSATIONS`, `ENGINE_CORE_MESSAGES` (per conversation) change the size.
//! Run: `cargo bench -p tidemark-engine --bench engine_core`.

use std::time::{Duration, Instant};

use tidemark_engine::testing::{Drain, Polled};
use tidemark_engine::{
    Applied, ClientMsgId, ContentKind, ConversationId, ConversationKind, DeviceId, Engine,
    EngineConfig, Event, MaxSeqEntry, Output, PullRange, PulledRange, Request, RequestId, Response,
    Seq, SeqRanges, ServerMessage, SyncPolicy, SyncSnapshot, Timestamp, UserId,
};

const START: u64 = 1_700_000_000_000;

fn env_or(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn conversation(c: u64) -> ConversationId {
    ConversationId(format!("conv{c:05}"))
}

/// Message `seq` of `conversation`, as the server would send it.
fn message(conversation: &ConversationId, seq: u64) -> ServerMessage {
    let sender = format!("friend{}", seq % 8);
    ServerMessage {
        conversation: conversation.clone(),
        seq: Seq(seq),
        client_msg_id: ClientMsgId(format!("{sender}:{seq:08}")),
        sender: UserId(sender),
        kind: ContentKind::Text,
        content: format!("message {seq}: an ordinary line of chat, about sixty bytes long")
            .into_bytes(),
        created_at: Timestamp(START + seq),
        server_time: Timestamp(START + seq),
    }
}

/// The scripted server's answer to a pull: every asked message, at most `limit` in all.
fn pulled(ranges: &[PullRange], max_seq: u64) -> Response {
    Response::Pulled {
        ranges: ranges
            .iter()
            .map(|r| PulledRange {
                conversation: r.conversation.clone(),
                from: r.from,
                to: r.to,
                messages: (r.from.0..=r.to.0)
                    .map(|s| message(&r.conversation, s))
                    .collect(),
                missing: SeqRanges::new(),
                min_seq: Seq(0),
                max_seq: Seq(max_seq),
            })
            .collect(),
    }
}

fn listing(conversations: u64, per_conversation: u64) -> Response {
    Response::MaxSeqs {
        entries: (0..conversations)
            .map(|c| MaxSeqEntry {
                conversation: conversation(c),
                kind: ConversationKind::Group,
                max_seq: Seq(per_conversation),
                min_seq: Seq(0),
                read_seq: Seq(0),
                last_activity: Timestamp(START + c),
                not_unread: SeqRanges::new(),
                deleted_count: 0,
            })
            .collect(),
        has_more: false,
        token: None,
        full: true,
    }
}

/// Runs the engine to `SyncFinished`; returns the time and the messages it announced.
fn engine_run(conversations: u64, per_conversation: u64) -> (Duration, u64) {
    let mut config = EngineConfig::new(UserId::from("alice"), DeviceId::from("bench"));
    config.policy = SyncPolicy::Full;
    config.seed = 7;
    config.max_seqs_page = u32::try_from(conversations).unwrap_or(u32::MAX);
    let now = Timestamp(START);
    let started = Instant::now();
    let mut engine = Engine::new(config, SyncSnapshot::default(), now);
    let mut announced = 0u64;
    let mut pending: Vec<(RequestId, Request)> = Vec::new();
    let mut finished = false;
    engine.handle_connected(now);
    while !finished {
        let mut drain = Drain::new(usize::MAX);
        loop {
            match drain.next(&mut engine).expect("the engine settles") {
                Polled::Idle(_) => break,
                Polled::Execute(Output::Write(id, batch)) => {
                    drop(batch);
                    engine.handle_batch_committed(now, id, &Applied::default());
                }
                Polled::Execute(Output::Request(id, request)) => pending.push((id, request)),
                Polled::Execute(Output::Event(Event::MessagesReceived { messages, .. })) => {
                    announced += messages.len() as u64;
                }
                Polled::Execute(Output::Event(Event::SyncFinished)) => finished = true,
                Polled::Execute(_) => {}
            }
        }
        if finished {
            break;
        }
        let Some((id, request)) = pending.pop() else {
            panic!("the engine is idle before SyncFinished");
        };
        let response = match request {
            Request::GetMaxSeqs { .. } => listing(conversations, per_conversation),
            Request::Pull { ranges, .. } => pulled(&ranges, per_conversation),
            other => panic!("unexpected request {other:?}"),
        };
        engine.handle_response(now, id, response);
    }
    (started.elapsed(), announced)
}

/// The baseline: the same answers made and dropped, in the same pull shapes.
fn script_only(conversations: u64, per_conversation: u64, pull_max: u64) -> Duration {
    let started = Instant::now();
    let mut made = 0u64;
    for c in 0..conversations {
        let id = conversation(c);
        let mut from = 1;
        while from <= per_conversation {
            let to = (from + pull_max - 1).min(per_conversation);
            let answer = pulled(
                &[PullRange {
                    conversation: id.clone(),
                    from: Seq(from),
                    to: Seq(to),
                }],
                per_conversation,
            );
            made += to - from + 1;
            drop(std::hint::black_box(answer));
            from = to + 1;
        }
    }
    assert_eq!(made, conversations * per_conversation);
    started.elapsed()
}

fn main() {
    let conversations = env_or("ENGINE_CORE_CONVERSATIONS", 1_000);
    let per_conversation = env_or("ENGINE_CORE_MESSAGES", 1_000);
    let messages = conversations * per_conversation;
    let pull_max = u64::from(
        EngineConfig::new(UserId::from("alice"), DeviceId::from("bench")).pull_max_messages,
    );

    let (total, announced) = engine_run(conversations, per_conversation);
    assert_eq!(announced, messages, "every message announced once");
    let script = script_only(conversations, per_conversation, pull_max);
    let engine = total.saturating_sub(script);

    let rate = |d: Duration| messages as f64 / d.as_secs_f64();
    println!("engine core alone, {messages} messages over {conversations} conversations:");
    println!(
        "  engine + scripted server: {:.0} ms; the script alone (make the answers, drop them): {:.0} ms",
        total.as_secs_f64() * 1000.0,
        script.as_secs_f64() * 1000.0
    );
    println!(
        "  the engine: {:.0} ms, {:.0} messages reconciled per second ({:.2} of the run)",
        engine.as_secs_f64() * 1000.0,
        rate(engine),
        engine.as_secs_f64() / total.as_secs_f64()
    );
}
