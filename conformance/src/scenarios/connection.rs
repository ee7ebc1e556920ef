//! Connection and process faults: silent servers, kicks, storage failures, lossy networks.

use tidemark_engine::{ConnectionState, ConversationKind, Event, Storage};

use super::{
    announced, check, conversation, count_events, stored_seqs, FaultyBackend, ScenarioError,
    ScenarioLog, ScenarioResult,
};
use crate::sim::{LinkConfig, RequestKind, Sim, SimConfig};
use crate::Backend;

/// The server goes silent without closing anything (a partition alice cannot see): her
/// heartbeat ping times out, she drops the connection and retries; once the network heals she
/// reconnects and pulls what she missed.
pub async fn silent_server_leads_to_reconnect<F: Backend>(factory: F) -> ScenarioResult {
    let mut sim = Sim::new(factory, 501);
    sim.create_conversation("g", ConversationKind::Group, ["alice", "bob"])?;
    let alice = sim
        .add_device("alice", "phone", |c| {
            c.heartbeat_interval_ms = 25_000;
            c.request_timeout_ms = 15_000;
        })
        .await?;
    sim.drive().await?;

    sim.partition(alice);
    sim.append_text("bob", "g", "are you there?")?;
    sim.append_text("bob", "g", "hello?")?;
    sim.drive_for(45_000).await?;
    let engine = sim
        .engine(alice)
        .ok_or_else(|| ScenarioError::Missing("engine".into()))?;
    assert_ne!(engine.connection_state(), ConnectionState::Connected);
    assert!(sim.requests(alice).count(RequestKind::Ping) >= 1);
    let start = SimConfig::default().start.0;
    let dropped_at = sim
        .device_events(alice)
        .into_iter()
        .find(|r| {
            r.event
                == Event::ConnectionChanged {
                    state: ConnectionState::Disconnected,
                }
        })
        .map(|r| r.time.0 - start);
    // Connected at 20 ms, pinged 25 s later, given up 15 s after that.
    assert!(
        dropped_at.is_some_and(|t| (40_000..41_000).contains(&t)),
        "{dropped_at:?}"
    );
    assert!(stored_seqs(&sim, alice, "g").await?.is_empty());

    sim.heal(alice);
    sim.drive().await?;
    check(&sim).await?;

    assert_eq!(stored_seqs(&sim, alice, "g").await?, [1, 2]);
    assert_eq!(announced(&sim, alice, "g"), [1, 2]);
    assert_eq!(conversation(&sim, alice, "g").await?.unread, 2);
    Ok(ScenarioLog::capture(&sim))
}

/// The server kicks alice's phone (logged in elsewhere): it stays offline for good, never
/// reconnecting, while bob carries on.
pub async fn kicked_device_stays_offline<F: Backend>(factory: F) -> ScenarioResult {
    let mut sim = Sim::new(factory, 7);
    sim.create_conversation("g", ConversationKind::Group, ["alice", "bob"])?;
    let alice = sim.add_device("alice", "phone", |_| {}).await?;
    let bob = sim.add_device("bob", "phone", |_| {}).await?;
    sim.drive().await?;
    assert!(sim.kick(alice, "logged in elsewhere"));
    sim.send_text(bob, "g", "hello?").await?;
    sim.drive().await?;
    sim.drive_for(120_000).await?;
    check(&sim).await?;

    assert!(sim.is_kicked(alice));
    assert!(!sim.is_connected(alice));
    let events = sim.device_events(alice);
    let kicked_at = events
        .iter()
        .position(|r| matches!(r.event, Event::Kicked { .. }))
        .ok_or_else(|| ScenarioError::Missing("Kicked event".into()))?;
    assert!(
        !events[kicked_at..].iter().any(|r| r.event
            == Event::ConnectionChanged {
                state: ConnectionState::Connecting
            }),
        "a kicked device reconnected"
    );
    assert_eq!(
        count_events(&sim, alice, |e| matches!(e, Event::Kicked { .. })),
        1
    );
    assert!(stored_seqs(&sim, alice, "g").await?.is_empty());
    assert_eq!(stored_seqs(&sim, bob, "g").await?, [1]);
    Ok(ScenarioLog::capture(&sim))
}

/// alice's store fails to commit the batch holding a new message: the engine stops, restarts
/// from what the store holds, resyncs, and the message is stored and announced after all.
pub async fn storage_failure_restarts_from_the_store<F: Backend>(factory: F) -> ScenarioResult {
    let mut sim = Sim::new(FaultyBackend::new(factory), 503);
    sim.create_conversation("g", ConversationKind::Group, ["alice", "bob"])?;
    let alice = sim.add_device("alice", "phone", |_| {}).await?;
    sim.drive().await?;
    sim.append_text("bob", "g", "before")?;
    sim.drive().await?;

    sim.factory().fail_next_applies(alice, 1);
    sim.append_text("bob", "g", "in the failed batch")?;
    sim.drive().await?;
    check(&sim).await?;

    assert_eq!(sim.process(alice), 1);
    assert_eq!(
        count_events(&sim, alice, |e| matches!(e, Event::StorageFailed { .. })),
        1
    );
    assert_eq!(stored_seqs(&sim, alice, "g").await?, [1, 2]);
    assert_eq!(announced(&sim, alice, "g"), [1, 2]);
    assert_eq!(conversation(&sim, alice, "g").await?.unread, 2);
    assert_eq!(sim.store(alice).total_unread().await?, 2);
    Ok(ScenarioLog::capture(&sim))
}

/// Frames are lost, duplicated and reordered in both directions while three users chat; once
/// the network heals everything converges: every send acked once, every device complete.
pub async fn lossy_network_converges<F: Backend>(factory: F) -> ScenarioResult {
    let mut sim = Sim::new(factory, 2);
    sim.create_conversation("g", ConversationKind::Group, ["alice", "bob", "carol"])?;
    sim.create_conversation("d", ConversationKind::Direct, ["alice", "bob"])?;
    let alice = sim.add_device("alice", "phone", |_| {}).await?;
    let bob = sim.add_device("bob", "phone", |_| {}).await?;
    let carol = sim.add_device("carol", "phone", |_| {}).await?;
    sim.drive().await?;
    sim.set_all_links(
        LinkConfig::new(20)
            .with_jitter(40)
            .with_loss(0.15)
            .with_duplicate(0.1),
    );
    for round in 0..5 {
        sim.send_text(alice, "g", &format!("a{round}")).await?;
        sim.send_text(bob, "d", &format!("b{round}")).await?;
        sim.append_text("carol", "g", &format!("c{round}"))?;
        sim.drive_for(700).await?;
    }
    sim.drive_for(60_000).await?;
    sim.heal_all().await?;
    sim.drive().await?;
    check(&sim).await?;

    let all_g: Vec<u64> = (1..=10).collect();
    for d in [alice, bob, carol] {
        assert_eq!(stored_seqs(&sim, d, "g").await?, all_g, "device {d}");
        assert!(sim.store(d).outbox().await?.is_empty(), "device {d}");
    }
    for d in [alice, bob] {
        assert_eq!(
            stored_seqs(&sim, d, "d").await?,
            [1, 2, 3, 4, 5],
            "device {d}"
        );
    }
    let sent = |d: usize| count_events(&sim, d, |e| matches!(e, Event::MessageSent { .. }));
    assert_eq!((sent(alice), sent(bob)), (5, 5));
    Ok(ScenarioLog::capture(&sim))
}
