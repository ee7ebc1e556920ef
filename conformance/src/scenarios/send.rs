//! Inbox reconciliation of sends: acks, lost acks, crashes around the outbox, failures.

use tidemark_engine::{
    ClientMsgId, ConnectionState, ConversationKind, Event, Message, MessageStatus, Output, Request,
    Seq, Storage,
};

use super::{
    announced, check, cid, conversation, count_events, go_offline, server_error, server_max,
    ScenarioError, ScenarioLog, ScenarioResult,
};
use crate::sim::{RequestKind, Sim};
use crate::Backend;

/// Device `d`'s stored row for the send `id` in conversation `conv`.
async fn row<F: Backend>(
    sim: &Sim<F>,
    d: usize,
    conv: &str,
    id: &ClientMsgId,
) -> Result<Message, ScenarioError> {
    sim.store(d)
        .message_by_client_id(&cid(conv), sim.device_user(d), id)
        .await?
        .ok_or_else(|| ScenarioError::Missing(format!("device {d} has no row for {id}")))
}

fn sent_events<F: Backend>(sim: &Sim<F>, d: usize, id: &ClientMsgId) -> Vec<Seq> {
    sim.device_events(d)
        .into_iter()
        .filter_map(|r| match &r.event {
            Event::MessageSent {
                client_msg_id, seq, ..
            } if client_msg_id == id => Some(*seq),
            _ => None,
        })
        .collect()
}

fn failed_events<F: Backend>(sim: &Sim<F>, d: usize, id: &ClientMsgId) -> usize {
    count_events(
        sim,
        d,
        |e| matches!(e, Event::SendFailed { client_msg_id, .. } if client_msg_id == id),
    )
}

/// alice sends bob a message: the pending row and its outbox entry commit before the send goes
/// out; the ack makes the row sent at seq 1 with one `MessageSent`; bob receives it unread.
pub async fn send_and_ack<F: Backend>(factory: F) -> ScenarioResult {
    let mut sim = Sim::new(factory, 201);
    sim.create_conversation("dm", ConversationKind::Direct, ["alice", "bob"])?;
    let alice = sim.add_device("alice", "phone", |_| {}).await?;
    let bob = sim.add_device("bob", "phone", |_| {}).await?;
    sim.drive().await?;

    let id = sim.send_text(alice, "dm", "hello bob").await?;
    // On the wire now, not acked yet: the pending row and the outbox entry are durable.
    let pending = row(&sim, alice, "dm", &id).await?;
    assert_eq!(
        (pending.seq, &pending.status),
        (None, &MessageStatus::Pending)
    );
    assert_eq!(sim.store(alice).outbox().await?.len(), 1);
    assert_eq!(sim.requests(alice).count(RequestKind::Send), 1);

    sim.drive().await?;
    check(&sim).await?;

    let sent = row(&sim, alice, "dm", &id).await?;
    assert_eq!(
        (sent.seq, &sent.status),
        (Some(Seq(1)), &MessageStatus::Sent)
    );
    assert!(sim.store(alice).outbox().await?.is_empty());
    assert!(sim
        .store(alice)
        .unsent_messages(&cid("dm"))
        .await?
        .is_empty());
    assert_eq!(sent_events(&sim, alice, &id), [Seq(1)]);
    let mine = conversation(&sim, alice, "dm").await?;
    assert_eq!((mine.read_seq, mine.unread), (Seq(1), 0));
    assert!(announced(&sim, alice, "dm").is_empty());
    let theirs = conversation(&sim, bob, "dm").await?;
    assert_eq!((theirs.server_max_seq, theirs.unread), (Seq(1), 1));
    assert_eq!(announced(&sim, bob, "dm"), [1]);
    assert_eq!(sim.requests(alice).count(RequestKind::Send), 1);
    Ok(ScenarioLog::capture(&sim))
}

/// The server stores alice's message but its ack is lost in a partition alice does not notice;
/// the request times out, and after the partition heals she resends under the same client id:
/// the server deduplicates, and she sees exactly one `MessageSent`.
pub async fn ack_lost_then_reconnect<F: Backend>(factory: F) -> ScenarioResult {
    let mut sim = Sim::new(factory, 202);
    sim.create_conversation("g", ConversationKind::Group, ["alice", "bob"])?;
    let alice = sim.add_device("alice", "phone", |_| {}).await?;
    let bob = sim.add_device("bob", "phone", |_| {}).await?;
    sim.drive().await?;

    let id = sim.send_text(alice, "g", "only once").await?;
    // The request reaches the server after 10 ms; the ack is on its way back.
    sim.drive_for(15).await?;
    assert_eq!(server_max(&sim, "g")?, 1);
    sim.partition(alice);
    sim.drive_for(20_000).await?;
    let engine = sim
        .engine(alice)
        .ok_or(ScenarioError::Missing("engine".into()))?;
    assert_ne!(engine.connection_state(), ConnectionState::Connected);
    let waiting = row(&sim, alice, "g", &id).await?;
    assert_eq!(waiting.status, MessageStatus::Pending);
    assert_eq!(sim.store(alice).outbox().await?.len(), 1);

    sim.heal(alice);
    sim.drive().await?;
    check(&sim).await?;

    assert_eq!(sim.requests(alice).count(RequestKind::Send), 2);
    assert_eq!(server_max(&sim, "g")?, 1);
    let sent = row(&sim, alice, "g", &id).await?;
    assert_eq!(
        (sent.seq, &sent.status),
        (Some(Seq(1)), &MessageStatus::Sent)
    );
    assert_eq!(sent_events(&sim, alice, &id), [Seq(1)]);
    assert!(sim.store(alice).outbox().await?.is_empty());
    assert_eq!(announced(&sim, bob, "g"), [1]);
    Ok(ScenarioLog::capture(&sim))
}

/// alice's app crashes after the outbox batch committed but before the send went out: the
/// restarted engine finds it in the outbox and sends it, once.
pub async fn crash_after_outbox_commit_before_send<F: Backend>(factory: F) -> ScenarioResult {
    let mut sim = Sim::new(factory, 203);
    sim.create_conversation("g", ConversationKind::Group, ["alice", "bob"])?;
    let alice = sim.add_device("alice", "phone", |_| {}).await?;
    let bob = sim.add_device("bob", "phone", |_| {}).await?;
    sim.drive().await?;

    sim.crash_before(alice, |o| {
        matches!(o, Output::Request(_, Request::Send { .. }))
    });
    let id = sim.send_text(alice, "g", "survives").await?;
    assert_eq!(sim.process(alice), 1);
    assert_eq!(sim.store(alice).outbox().await?.len(), 1);
    assert_eq!(
        row(&sim, alice, "g", &id).await?.status,
        MessageStatus::Pending
    );
    sim.drive().await?;
    check(&sim).await?;

    // The crash ate the first request: exactly one send reached the wire.
    assert_eq!(sim.requests(alice).count(RequestKind::Send), 1);
    let sent = row(&sim, alice, "g", &id).await?;
    assert_eq!(
        (sent.seq, &sent.status),
        (Some(Seq(1)), &MessageStatus::Sent)
    );
    assert_eq!(sent_events(&sim, alice, &id), [Seq(1)]);
    assert_eq!(server_max(&sim, "g")?, 1);
    assert!(sim.store(alice).outbox().await?.is_empty());
    assert_eq!(announced(&sim, bob, "g"), [1]);
    Ok(ScenarioLog::capture(&sim))
}

/// Offline, alice writes three messages, then her app restarts while still offline; back
/// online, the restarted engine sends all three, once each, in the order she wrote them.
pub async fn restart_with_pending_outbox<F: Backend>(factory: F) -> ScenarioResult {
    let mut sim = Sim::new(factory, 204);
    sim.create_conversation("g", ConversationKind::Group, ["alice", "bob"])?;
    let alice = sim.add_device("alice", "phone", |_| {}).await?;
    let bob = sim.add_device("bob", "phone", |_| {}).await?;
    sim.drive().await?;

    go_offline(&mut sim, alice).await?;
    sim.take_requests(alice);
    let mut ids = Vec::new();
    for text in ["first", "second", "third"] {
        ids.push(sim.send_text(alice, "g", text).await?);
        sim.drive_for(100).await?;
    }
    assert_eq!(sim.store(alice).outbox().await?.len(), 3);
    assert_eq!(sim.store(alice).unsent_messages(&cid("g")).await?.len(), 3);
    assert_eq!(sim.requests(alice).count(RequestKind::Send), 0);

    sim.crash(alice).await?;
    assert_eq!(sim.process(alice), 1);
    sim.drive_for(2_000).await?;
    sim.heal(alice);
    sim.drive().await?;
    check(&sim).await?;

    assert_eq!(sim.requests(alice).count(RequestKind::Send), 3);
    for (i, id) in ids.iter().enumerate() {
        let seq = Seq(i as u64 + 1);
        let sent = row(&sim, alice, "g", id).await?;
        assert_eq!((sent.seq, &sent.status), (Some(seq), &MessageStatus::Sent));
        assert_eq!(sent_events(&sim, alice, id), [seq]);
    }
    assert_eq!(server_max(&sim, "g")?, 3);
    assert!(sim.store(alice).outbox().await?.is_empty());
    assert_eq!(announced(&sim, bob, "g"), [1, 2, 3]);
    Ok(ScenarioLog::capture(&sim))
}

/// The server refuses alice's message for good: the row is marked failed with one `SendFailed`
/// and leaves the outbox; once the cause is gone, `retry` sends it under the same client id.
pub async fn permanent_send_failure_then_retry<F: Backend>(factory: F) -> ScenarioResult {
    let mut sim = Sim::new(factory, 205);
    sim.create_conversation("g", ConversationKind::Group, ["alice", "bob"])?;
    let alice = sim.add_device("alice", "phone", |_| {}).await?;
    let bob = sim.add_device("bob", "phone", |_| {}).await?;
    sim.drive().await?;

    sim.fail_next_sends(1, server_error("forbidden", true));
    let id = sim.send_text(alice, "g", "try me again").await?;
    sim.drive().await?;
    let failed = row(&sim, alice, "g", &id).await?;
    assert_eq!(failed.seq, None);
    assert!(
        matches!(&failed.status, MessageStatus::Failed { reason } if reason.contains("forbidden")),
        "{:?}",
        failed.status
    );
    assert_eq!(failed_events(&sim, alice, &id), 1);
    assert!(sim.store(alice).outbox().await?.is_empty());
    assert_eq!(sim.store(alice).unsent_messages(&cid("g")).await?.len(), 1);
    assert_eq!(server_max(&sim, "g")?, 0);

    sim.retry(alice, &failed).await?;
    sim.drive().await?;
    check(&sim).await?;

    let sent = row(&sim, alice, "g", &id).await?;
    assert_eq!(
        (sent.seq, &sent.status),
        (Some(Seq(1)), &MessageStatus::Sent)
    );
    assert_eq!(sent_events(&sim, alice, &id), [Seq(1)]);
    assert_eq!(failed_events(&sim, alice, &id), 1);
    assert_eq!(sim.requests(alice).count(RequestKind::Send), 2);
    assert!(sim
        .store(alice)
        .unsent_messages(&cid("g"))
        .await?
        .is_empty());
    assert_eq!(announced(&sim, bob, "g"), [1]);
    Ok(ScenarioLog::capture(&sim))
}

/// The server is briefly unavailable: the send fails twice transiently and is retried after
/// 1 s, then 2 s, and the third attempt is acked.
pub async fn transient_send_failure_retried_with_backoff<F: Backend>(factory: F) -> ScenarioResult {
    let mut sim = Sim::new(factory, 206);
    sim.create_conversation("g", ConversationKind::Group, ["alice", "bob"])?;
    let alice = sim
        .add_device("alice", "phone", |c| c.send_retry_min_ms = 1_000)
        .await?;
    sim.drive().await?;

    sim.fail_next_sends(2, server_error("unavailable", false));
    let sent_at = sim.now();
    let id = sim.send_text(alice, "g", "eventually").await?;
    sim.drive().await?;
    check(&sim).await?;

    assert_eq!(sim.requests(alice).count(RequestKind::Send), 3);
    assert_eq!(failed_events(&sim, alice, &id), 0);
    assert_eq!(sent_events(&sim, alice, &id), [Seq(1)]);
    let acked_at = sim
        .device_events(alice)
        .into_iter()
        .find(|r| matches!(r.event, Event::MessageSent { .. }))
        .map(|r| r.time.0 - sent_at.0);
    // Two round trips plus the 1 s and 2 s backoffs, before the acked third round trip.
    assert!(
        acked_at.is_some_and(|t| (3_000..4_000).contains(&t)),
        "{acked_at:?}"
    );
    assert_eq!(
        row(&sim, alice, "g", &id).await?.status,
        MessageStatus::Sent
    );
    assert_eq!(server_max(&sim, "g")?, 1);
    Ok(ScenarioLog::capture(&sim))
}

/// The server stays unavailable: after `send_max_attempts` (3) transient failures the send
/// fails for good, with one `SendFailed`, and nothing reached the server.
pub async fn transient_send_failure_gives_up_after_max_attempts<F: Backend>(
    factory: F,
) -> ScenarioResult {
    let mut sim = Sim::new(factory, 207);
    sim.create_conversation("g", ConversationKind::Group, ["alice", "bob"])?;
    let alice = sim
        .add_device("alice", "phone", |c| c.send_max_attempts = 3)
        .await?;
    sim.drive().await?;

    sim.fail_next_sends(3, server_error("unavailable", false));
    let id = sim.send_text(alice, "g", "never arrives").await?;
    sim.drive().await?;
    check(&sim).await?;

    assert_eq!(sim.requests(alice).count(RequestKind::Send), 3);
    assert_eq!(failed_events(&sim, alice, &id), 1);
    assert!(sent_events(&sim, alice, &id).is_empty());
    let failed = row(&sim, alice, "g", &id).await?;
    assert!(
        matches!(&failed.status, MessageStatus::Failed { reason } if reason.contains("3 attempts")),
        "{:?}",
        failed.status
    );
    assert!(sim.store(alice).outbox().await?.is_empty());
    assert_eq!(server_max(&sim, "g")?, 0);
    Ok(ScenarioLog::capture(&sim))
}

/// Offline, alice writes a message and cancels it: the pending row and its outbox entry are
/// gone, and back online nothing is sent.
pub async fn cancel_pending_send<F: Backend>(factory: F) -> ScenarioResult {
    let mut sim = Sim::new(factory, 208);
    sim.create_conversation("g", ConversationKind::Group, ["alice", "bob"])?;
    let alice = sim.add_device("alice", "phone", |_| {}).await?;
    sim.drive().await?;

    go_offline(&mut sim, alice).await?;
    let id = sim.send_text(alice, "g", "oops, wrong chat").await?;
    assert_eq!(sim.store(alice).outbox().await?.len(), 1);
    sim.cancel(alice, "g", &id).await?;
    assert!(sim.store(alice).outbox().await?.is_empty());
    assert!(sim
        .store(alice)
        .message_by_client_id(&cid("g"), sim.device_user(alice), &id)
        .await?
        .is_none());
    sim.heal(alice);
    sim.drive().await?;
    check(&sim).await?;

    assert_eq!(sim.requests(alice).count(RequestKind::Send), 0);
    assert_eq!(server_max(&sim, "g")?, 0);
    let conv = conversation(&sim, alice, "g").await?;
    assert_eq!(conv.latest, None);
    assert!(sim
        .store(alice)
        .unsent_messages(&cid("g"))
        .await?
        .is_empty());
    Ok(ScenarioLog::capture(&sim))
}

/// Offline, alice fires off four messages within one millisecond; back online they reach the
/// server, and bob, in the order she wrote them.
pub async fn offline_sends_keep_their_order<F: Backend>(factory: F) -> ScenarioResult {
    let mut sim = Sim::new(factory, 209);
    sim.create_conversation("g", ConversationKind::Group, ["alice", "bob"])?;
    let alice = sim.add_device("alice", "phone", |_| {}).await?;
    let bob = sim.add_device("bob", "phone", |_| {}).await?;
    sim.drive().await?;

    go_offline(&mut sim, alice).await?;
    let mut ids = Vec::new();
    for text in ["one", "two", "three", "four"] {
        ids.push(sim.send_text(alice, "g", text).await?);
    }
    sim.heal(alice);
    sim.drive().await?;
    check(&sim).await?;

    let mut seqs = Vec::new();
    for id in &ids {
        seqs.push(row(&sim, alice, "g", id).await?.seq.map(|s| s.0));
    }
    assert_eq!(seqs, [Some(1), Some(2), Some(3), Some(4)]);
    assert_eq!(announced(&sim, bob, "g"), [1, 2, 3, 4]);
    Ok(ScenarioLog::capture(&sim))
}
