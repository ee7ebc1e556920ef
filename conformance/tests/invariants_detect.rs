//! The invariant checker finds what it promises to find: each test breaks one thing behind
//! the engine's back and expects the matching violation.

#![allow(
    clippy::unwrap_used,
    reason = "test helpers: a failed setup step is a failed test"
)]

use tidemark_conformance::server::ServerStore;
use tidemark_conformance::sim::Sim;
use tidemark_conformance::MemoryBackend;
use tidemark_engine::{ConversationKind, Seq, Storage, WriteBatch, WriteOp};

async fn synced() -> Sim<MemoryBackend> {
    let mut sim = Sim::new(MemoryBackend::new(), 21);
    sim.create_conversation("g", ConversationKind::Group, ["alice", "bob"])
        .unwrap();
    sim.add_device("alice", "phone", |_| {}).await.unwrap();
    for i in 0..5 {
        sim.append_text("bob", "g", &format!("m{i}")).unwrap();
    }
    sim.drive().await.unwrap();
    sim.check_invariants().await.unwrap();
    sim
}

async fn violations(sim: &Sim<MemoryBackend>) -> Vec<String> {
    match sim.check_invariants().await {
        Ok(()) => Vec::new(),
        Err(v) => v.violations,
    }
}

fn has(violations: &[String], needle: &str) -> bool {
    violations.iter().any(|v| v.contains(needle))
}

#[tokio::test]
async fn changed_content_is_found() {
    let sim = synced().await;
    let store = sim.store(0);
    let mut m = store
        .messages_page(&"g".into(), None, tidemark_engine::Direction::Before, 1)
        .await
        .unwrap()
        .remove(0);
    m.content = b"tampered".to_vec();
    // A put of a row with a seq keeps its fields; an edit op changes the content.
    store
        .apply(WriteBatch {
            ops: vec![WriteOp::EditMessage {
                conversation: "g".into(),
                target: m.seq.unwrap(),
                edit_seq: Seq(1_000),
                sender: m.sender.clone(),
                content: m.content.clone(),
            }],
        })
        .await
        .unwrap();
    let v = violations(&sim).await;
    assert!(has(&v, "differs from the server"), "{v:?}");
}

#[tokio::test]
async fn held_claims_without_rows_are_found() {
    let sim = synced().await;
    let store = sim.store(0);
    let mut conv = store.conversation(&"g".into()).await.unwrap().unwrap();
    conv.held.insert_range(Seq(1), Seq(9));
    conv.server_max_seq = Seq(9);
    store
        .apply(WriteBatch {
            ops: vec![WriteOp::PutConversation(conv)],
        })
        .await
        .unwrap();
    let v = violations(&sim).await;
    assert!(has(&v, "held claims seqs 6..=9"), "{v:?}");
    assert!(has(&v, "beyond the server's 5"), "{v:?}");
}

#[tokio::test]
async fn drifting_unread_counts_are_found() {
    let sim = synced().await;
    let store = sim.store(0);
    let mut conv = store.conversation(&"g".into()).await.unwrap().unwrap();
    conv.unread += 1;
    store
        .apply(WriteBatch {
            ops: vec![WriteOp::PutConversation(conv)],
        })
        .await
        .unwrap();
    let v = violations(&sim).await;
    assert!(has(&v, "but its own fields give"), "{v:?}");
    assert!(has(&v, "but the server's truth is"), "{v:?}");
}

#[tokio::test]
async fn a_device_behind_the_server_is_found() {
    let mut sim = synced().await;
    // Changed on the server without a push: the device cannot know.
    sim.server_mut()
        .store_mut()
        .set_read_seq(&"alice".into(), &"g".into(), Seq(3))
        .map(|_| ())
        .unwrap();
    let v = violations(&sim).await;
    assert!(has(&v, "local read seq 0 but the server's is 3"), "{v:?}");
    // Partitioned devices are only held to safety.
    sim.partition(0);
    assert!(violations(&sim).await.is_empty());
}

#[tokio::test]
async fn tombstones_hiding_messages_are_found() {
    let sim = synced().await;
    sim.store(0)
        .apply(WriteBatch {
            ops: vec![WriteOp::PutTombstones {
                conversation: "g".into(),
                seqs: [Seq(2)].into_iter().collect(),
            }],
        })
        .await
        .unwrap();
    let v = violations(&sim).await;
    assert!(
        has(&v, "tombstoned locally but the server has the message"),
        "{v:?}"
    );
}
