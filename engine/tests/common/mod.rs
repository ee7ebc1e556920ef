//! Helpers shared by the engine's integration tests.

use tidemark_engine::*;

pub fn cfg() -> EngineConfig {
    let mut c = EngineConfig::new(UserId::from("me"), DeviceId::from("phone"));
    c.seed = 7;
    c
}

pub fn msg(conv: &str, seq: u64, sender: &str) -> ServerMessage {
    ServerMessage {
        conversation: ConversationId::from(conv),
        seq: Seq(seq),
        client_msg_id: ClientMsgId(format!("{sender}-{seq}")),
        sender: UserId::from(sender),
        kind: ContentKind::Text,
        content: format!("m{seq}").into_bytes(),
        created_at: Timestamp(seq),
        server_time: Timestamp(1000 + seq),
    }
}

/// Outputs one drain may give before a test calls the engine looping.
pub const MAX_OUTPUTS: usize = 100_000;

/// Drains outputs; commits every write at once (without a store); returns requests and
/// events.
pub fn drain(engine: &mut Engine, now: Timestamp) -> (Vec<(RequestId, Request)>, Vec<Event>) {
    let mut requests = Vec::new();
    let mut events = Vec::new();
    let mut drain = testing::Drain::new(MAX_OUTPUTS);
    loop {
        match drain.next(engine).expect("the engine settles") {
            testing::Polled::Idle(_) => return (requests, events),
            testing::Polled::Execute(output) => match output {
                Output::Write(id, _) => engine.handle_batch_committed(now, id, &Applied::default()),
                Output::Request(id, r) => requests.push((id, r)),
                Output::Event(e) => events.push(e),
                Output::Connect | Output::Disconnect { .. } | Output::Timeout(_) => {}
            },
        }
    }
}
