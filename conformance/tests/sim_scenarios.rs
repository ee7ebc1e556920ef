//! Sync scenarios over the simulated network and server, with the memory store. Each ends
//! with the invariant check.

#![allow(
    clippy::unwrap_used,
    reason = "test helpers: a failed setup step is a failed test"
)]

use tidemark_conformance::server::ServerStore;
use tidemark_conformance::sim::{
    LinkConfig, LinkDir, MemoryStoreFactory, RequestKind, Sim, SimConfig,
};
use tidemark_engine::{
    ContentKind, ConversationId, ConversationKind, Event, Output, Request, Seq, SeqRanges,
    ServerError, Storage,
};

fn sim(seed: u64) -> Sim<MemoryStoreFactory> {
    Sim::new(MemoryStoreFactory::new(), seed)
}

async fn assert_invariants(sim: &Sim<MemoryStoreFactory>) {
    if let Err(violations) = sim.check_invariants().await {
        panic!("{violations}");
    }
}

/// alice on two devices and bob chat in a group; everyone ends with everything.
#[tokio::test]
async fn two_users_exchange_messages() {
    let mut sim = sim(1);
    sim.create_conversation("g", ConversationKind::Group, ["alice", "bob"])
        .unwrap();
    let phone = sim.add_device("alice", "phone", |_| {}).await.unwrap();
    let laptop = sim.add_device("alice", "laptop", |_| {}).await.unwrap();
    let bob = sim.add_device("bob", "phone", |_| {}).await.unwrap();
    sim.append_text("bob", "g", "before anyone was online")
        .unwrap();
    sim.drive().await.unwrap();

    for i in 0..3 {
        sim.send_text(phone, "g", &format!("alice {i}"))
            .await
            .unwrap();
    }
    sim.send_text(bob, "g", "bob 0").await.unwrap();
    sim.drive().await.unwrap();
    sim.mark_read(laptop, "g", Seq(5)).await.unwrap();
    sim.drive().await.unwrap();

    assert_invariants(&sim).await;
    let g = ConversationId::from("g");
    for d in [phone, laptop, bob] {
        let conv = sim.store(d).conversation(&g).await.unwrap().unwrap();
        assert_eq!(conv.server_max_seq, Seq(5), "device {d}");
    }
    insta::assert_yaml_snapshot!("two_users_exchange_messages", sim.events());
}

/// Loss, duplication and reordering in both directions, then healing: everything converges.
#[tokio::test]
async fn lossy_network_converges() {
    for seed in 0..4 {
        let mut sim = lossy_run(seed).await;
        sim.heal_all().await.unwrap();
        sim.drive().await.unwrap();
        assert_invariants(&sim).await;
    }
}

async fn lossy_run(seed: u64) -> Sim<MemoryStoreFactory> {
    let mut sim = sim(seed);
    sim.create_conversation("g", ConversationKind::Group, ["alice", "bob", "carol"])
        .unwrap();
    sim.create_conversation("d", ConversationKind::Direct, ["alice", "bob"])
        .unwrap();
    let alice = sim.add_device("alice", "phone", |_| {}).await.unwrap();
    let bob = sim.add_device("bob", "phone", |_| {}).await.unwrap();
    let _carol = sim.add_device("carol", "phone", |_| {}).await.unwrap();
    sim.drive().await.unwrap();
    sim.set_all_links(
        LinkConfig::new(20)
            .with_jitter(40)
            .with_loss(0.15)
            .with_duplicate(0.1),
    );
    for round in 0..5 {
        sim.send_text(alice, "g", &format!("a{round}"))
            .await
            .unwrap();
        sim.send_text(bob, "d", &format!("b{round}")).await.unwrap();
        sim.append_text("carol", "g", &format!("c{round}")).unwrap();
        sim.drive_for(700).await.unwrap();
    }
    sim.drive_for(60_000).await.unwrap();
    sim
}

/// The same seed replays the same run, event for event and request for request.
#[tokio::test]
async fn runs_are_deterministic() {
    let a = lossy_run(11).await;
    let b = lossy_run(11).await;
    assert_eq!(a.events(), b.events());
    for d in 0..a.device_count() {
        assert_eq!(a.requests(d), b.requests(d));
    }
}

/// A crash after the outbox batch committed but before the send went out: the restarted
/// engine sends it, once.
#[tokio::test]
async fn crash_between_outbox_commit_and_send() {
    let mut sim = sim(3);
    sim.create_conversation("g", ConversationKind::Group, ["alice", "bob"])
        .unwrap();
    let alice = sim.add_device("alice", "phone", |_| {}).await.unwrap();
    let _bob = sim.add_device("bob", "phone", |_| {}).await.unwrap();
    sim.drive().await.unwrap();
    sim.crash_before(alice, |o| {
        matches!(o, Output::Request(_, Request::Send { .. }))
    });
    let id = sim.send_text(alice, "g", "survives").await.unwrap();
    assert_eq!(sim.process(alice), 1);
    sim.drive().await.unwrap();
    assert_invariants(&sim).await;
    let stored = sim
        .store(alice)
        .message_by_client_id(&"g".into(), &id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(stored.seq, Some(Seq(1)));
}

/// Acks are lost: the engine times out, reconnects and resends; the server deduplicates.
#[tokio::test]
async fn lost_acks_are_resent_and_deduplicated() {
    let mut sim = sim(4);
    sim.create_conversation("g", ConversationKind::Group, ["alice", "bob"])
        .unwrap();
    let alice = sim.add_device("alice", "phone", |_| {}).await.unwrap();
    let _bob = sim.add_device("bob", "phone", |_| {}).await.unwrap();
    sim.drive().await.unwrap();
    sim.set_link_dir(alice, LinkDir::ToDevice, LinkConfig::new(10).with_loss(1.0));
    sim.send_text(alice, "g", "once").await.unwrap();
    sim.drive_for(20_000).await.unwrap();
    assert!(sim.requests(alice).count(RequestKind::Send) >= 1);
    sim.heal_all().await.unwrap();
    sim.drive().await.unwrap();
    assert!(sim.requests(alice).count(RequestKind::Send) >= 2);
    let info = sim
        .server()
        .store()
        .conversation(&"g".into())
        .unwrap()
        .unwrap();
    assert_eq!(info.max_seq, Seq(1));
    assert_invariants(&sim).await;
}

/// Transient send errors are retried; permanent ones fail the send.
#[tokio::test]
async fn send_errors() {
    let mut sim = sim(5);
    sim.create_conversation("g", ConversationKind::Group, ["alice", "bob"])
        .unwrap();
    let alice = sim.add_device("alice", "phone", |_| {}).await.unwrap();
    sim.drive().await.unwrap();
    sim.fail_next_sends(
        2,
        ServerError {
            code: "unavailable".into(),
            message: "busy".into(),
            permanent: false,
        },
    );
    sim.send_text(alice, "g", "eventually").await.unwrap();
    sim.drive().await.unwrap();
    sim.fail_next_sends(
        1,
        ServerError {
            code: "forbidden".into(),
            message: "no".into(),
            permanent: true,
        },
    );
    let failed = sim.send_text(alice, "g", "never").await.unwrap();
    sim.drive().await.unwrap();
    assert_invariants(&sim).await;
    assert!(sim.events().iter().any(|e| matches!(
        &e.event,
        Event::SendFailed { client_msg_id, .. } if client_msg_id == &failed
    )));
}

/// Deletions and a risen floor reach online devices by push and offline ones by sync.
#[tokio::test]
async fn deletions_and_floors_converge() {
    let mut sim = sim(6);
    sim.create_conversation("g", ConversationKind::Group, ["alice", "bob"])
        .unwrap();
    let alice = sim.add_device("alice", "phone", |_| {}).await.unwrap();
    let bob = sim.add_device("bob", "phone", |_| {}).await.unwrap();
    for i in 0..10 {
        sim.append_text("bob", "g", &format!("m{i}")).unwrap();
    }
    sim.drive().await.unwrap();
    sim.partition(bob);
    sim.delete_seqs("g", &SeqRanges::from_iter([Seq(4), Seq(9)]))
        .unwrap();
    sim.set_min_seq("g", Seq(3)).unwrap();
    sim.drive().await.unwrap();
    assert_invariants(&sim).await;
    let tombstones = sim.store(alice).tombstones(&"g".into()).await.unwrap();
    assert!(tombstones.contains(Seq(4)) && tombstones.contains(Seq(9)));
    sim.heal_all().await.unwrap();
    sim.drive().await.unwrap();
    assert_invariants(&sim).await;
}

/// A kicked device stays offline; the others are unaffected.
#[tokio::test]
async fn kicked_device_stays_offline() {
    let mut sim = sim(7);
    sim.create_conversation("g", ConversationKind::Group, ["alice", "bob"])
        .unwrap();
    let alice = sim.add_device("alice", "phone", |_| {}).await.unwrap();
    let bob = sim.add_device("bob", "phone", |_| {}).await.unwrap();
    sim.drive().await.unwrap();
    assert!(sim.kick(alice, "logged in elsewhere"));
    sim.send_text(bob, "g", "hello?").await.unwrap();
    sim.drive().await.unwrap();
    assert!(sim.is_kicked(alice));
    assert!(!sim.is_connected(alice));
    assert_invariants(&sim).await;
}

/// 10k conversations: max seqs come in pages, pulls pack many conversations, and only
/// conversations with messages are pulled.
#[tokio::test]
async fn ten_thousand_conversations() {
    let mut sim = Sim::with_config(
        MemoryStoreFactory::new(),
        SimConfig {
            seed: 8,
            ..SimConfig::default()
        },
    );
    sim.create_user("alice").unwrap();
    sim.create_user("bob").unwrap();
    let mut with_messages = std::collections::BTreeSet::new();
    for i in 0..10_000u32 {
        let id = format!("c{i:05}");
        sim.create_conversation(id.as_str(), ConversationKind::Direct, ["alice", "bob"])
            .unwrap();
        // Every fifth conversation stays empty.
        if i % 5 != 0 {
            for _ in 0..(1 + i % 3) {
                sim.append_as("bob", id.as_str(), ContentKind::Text, b"x".to_vec())
                    .unwrap();
            }
            with_messages.insert(ConversationId::from(id));
        }
    }
    let alice = sim
        .add_device("alice", "phone", |c| {
            c.max_seqs_page = 1_000;
            c.pull_max_conversations = 200;
            c.pull_max_messages = 2_000;
        })
        .await
        .unwrap();
    sim.drive().await.unwrap();
    let requests = sim.requests(alice);
    assert_eq!(requests.count(RequestKind::GetMaxSeqs), 10);
    assert_eq!(requests.pulled_conversations(), with_messages);
    // 8,000 conversations at 200 per request.
    assert_eq!(requests.count(RequestKind::Pull), 40);
    assert!(requests
        .pulled()
        .iter()
        .all(|r| r.from == Seq(1) && r.to.0 <= 3));
    assert_invariants(&sim).await;
}

/// A failing batch stops the engine; the harness restarts it from the store and it recovers.
#[tokio::test]
async fn storage_failure_restarts_the_engine() {
    let mut sim = sim(9);
    sim.create_conversation("g", ConversationKind::Group, ["alice", "bob"])
        .unwrap();
    let alice = sim.add_device("alice", "phone", |_| {}).await.unwrap();
    sim.drive().await.unwrap();
    sim.store(alice).fail_next_applies(1);
    sim.append_text("bob", "g", "hi").unwrap();
    sim.drive().await.unwrap();
    assert_eq!(sim.process(alice), 1);
    assert!(sim
        .events()
        .iter()
        .any(|e| matches!(e.event, Event::StorageFailed { .. })));
    assert_invariants(&sim).await;
}

/// A deletion pushed while a device is offline is never learned again: neither max seqs nor
/// pulls of held ranges report it, so the device keeps the deleted message and counts it
/// unread. Ignored until the protocol makes deletions recoverable (for example a deletion
/// log or version per conversation in `MaxSeqEntry`).
#[tokio::test]
#[ignore = "protocol gap: a lost Push::Deleted is never recovered"]
async fn lost_deletion_push_is_never_learned() {
    let mut sim = sim(12);
    sim.create_conversation("g", ConversationKind::Group, ["alice", "bob"])
        .unwrap();
    let _alice = sim.add_device("alice", "phone", |_| {}).await.unwrap();
    for i in 0..3 {
        sim.append_text("bob", "g", &format!("m{i}")).unwrap();
    }
    sim.drive().await.unwrap();
    sim.partition(0);
    sim.delete_seqs("g", &SeqRanges::from_iter([Seq(2)]))
        .unwrap();
    sim.heal_all().await.unwrap();
    sim.drive().await.unwrap();
    assert_invariants(&sim).await;
}

/// An edit that follows a revoke of the same message must not bring its content back.
/// Known engine bug: the edit is applied to the revoked row (content restored, still flagged
/// revoked), while the pending-change path lets the revoke win.
#[tokio::test]
#[ignore = "engine bug: an edit after a revoke restores the content"]
async fn edit_after_revoke_keeps_it_revoked() {
    let mut sim = sim(13);
    sim.create_conversation("g", ConversationKind::Group, ["alice", "bob"])
        .unwrap();
    let _alice = sim.add_device("alice", "phone", |_| {}).await.unwrap();
    sim.drive().await.unwrap();
    sim.append_text("bob", "g", "original").unwrap();
    sim.drive().await.unwrap();
    sim.append_as(
        "bob",
        "g",
        ContentKind::Revoke { target: Seq(1) },
        Vec::new(),
    )
    .unwrap();
    sim.drive().await.unwrap();
    sim.append_as(
        "bob",
        "g",
        ContentKind::Edit { target: Seq(1) },
        b"back".to_vec(),
    )
    .unwrap();
    sim.drive().await.unwrap();
    assert_invariants(&sim).await;
}

/// Two edits of one message: the one with the higher seq wins, whatever the arrival order.
/// Known engine bug: edits apply in arrival order. Here the newer edit arrives first (the
/// newest-1 sync pulls it, it waits for its target), the older with `load_history`.
#[tokio::test]
#[ignore = "engine bug: edits apply in arrival order, not seq order"]
async fn edits_apply_in_seq_order() {
    let mut sim = sim(14);
    sim.create_conversation("g", ConversationKind::Group, ["alice", "bob"])
        .unwrap();
    sim.append_text("bob", "g", "original").unwrap();
    sim.append_as(
        "bob",
        "g",
        ContentKind::Edit { target: Seq(1) },
        b"older".to_vec(),
    )
    .unwrap();
    sim.append_as(
        "bob",
        "g",
        ContentKind::Edit { target: Seq(1) },
        b"newer".to_vec(),
    )
    .unwrap();
    let alice = sim
        .add_device("alice", "phone", |c| {
            c.policy = tidemark_engine::SyncPolicy::NewestFirst {
                per_conversation: 1,
                background_fill: false,
            }
        })
        .await
        .unwrap();
    sim.drive().await.unwrap();
    sim.load_history(alice, "g", None, 10).await.unwrap();
    sim.drive().await.unwrap();
    assert_invariants(&sim).await;
}

/// Newest-first without background fill leaves a hole; the engine counts every seq of the
/// hole above the read seq as unread, but the server knows some are edits or revokes, which
/// never count. Known gap: the device needs the hole's composition (or the server's count).
#[tokio::test]
#[ignore = "engine gap: unread counts edits/revokes in an unpulled hole"]
async fn unread_ignores_changes_in_an_unpulled_hole() {
    let mut sim = sim(15);
    sim.create_conversation("g", ConversationKind::Group, ["alice", "bob"])
        .unwrap();
    for i in 0..5 {
        sim.append_text("bob", "g", &format!("m{i}")).unwrap();
    }
    sim.append_as(
        "bob",
        "g",
        ContentKind::Edit { target: Seq(1) },
        b"e".to_vec(),
    )
    .unwrap();
    for i in 0..3 {
        sim.append_text("bob", "g", &format!("n{i}")).unwrap();
    }
    sim.add_device("alice", "phone", |c| {
        c.policy = tidemark_engine::SyncPolicy::NewestFirst {
            per_conversation: 2,
            background_fill: false,
        }
    })
    .await
    .unwrap();
    sim.drive().await.unwrap();
    assert_invariants(&sim).await;
}
