//! Many seeds of random faults: lossy, duplicating, reordering links, disconnects, crashes
//! at random outputs, history floors, per-seq deletions, repeated edits and revokes of one
//! message, newest-first holes left open. Every run must end with the invariants holding.
//! `FAULT_SOUP_SEEDS` sets the number of seeds (default 1000).

#![allow(
    clippy::unwrap_used,
    reason = "test helpers: a failed setup step is a failed test"
)]

use tidemark_conformance::server::ServerStore;
use tidemark_conformance::sim::{LinkConfig, Sim, SimError, SimRng};
use tidemark_conformance::MemoryBackend;
use tidemark_engine::{ContentKind, ConversationKind, Output, Seq, SeqRanges, SyncPolicy, UserId};

async fn soup(seed: u64) -> Sim<MemoryBackend> {
    let mut rng = SimRng::new(seed ^ 0xF00D);
    let mut sim = Sim::new(MemoryBackend::new(), seed);
    sim.create_conversation("g", ConversationKind::Group, ["alice", "bob", "carol"])
        .unwrap();
    sim.create_conversation("d", ConversationKind::Direct, ["alice", "bob"])
        .unwrap();
    // One newest-first device leaves its holes open: unread must still match the server.
    let devices = [
        sim.add_device("alice", "phone", |c| {
            c.policy = SyncPolicy::NewestFirst {
                per_conversation: 5,
                background_fill: false,
            };
        })
        .await
        .unwrap(),
        sim.add_device("alice", "laptop", |c| c.policy = SyncPolicy::Full)
            .await
            .unwrap(),
        sim.add_device("bob", "phone", |c| {
            c.pull_max_messages = 3;
            c.policy = SyncPolicy::NewestFirst {
                per_conversation: 4,
                background_fill: true,
            };
        })
        .await
        .unwrap(),
    ];
    sim.drive().await.unwrap();
    sim.set_all_links(
        LinkConfig::new(15)
            .with_jitter(30)
            .with_loss(0.1)
            .with_duplicate(0.1),
    );
    let convs = ["g", "d"];
    for step in 0..60 {
        let d = devices[rng.below(devices.len() as u64) as usize];
        match rng.below(14) {
            10 => sim.crash(d).await.unwrap(),
            11 => {
                if sim.is_partitioned(d) {
                    sim.heal(d);
                } else {
                    sim.partition(d);
                }
            }
            12 => {
                // History of a conversation the device may not know yet.
                match sim.load_history(d, "g", None, 10).await {
                    Ok(_) | Err(SimError::Command { .. }) => {}
                    Err(e) => panic!("{e}"),
                }
            }
            0..=3 => {
                let conv = convs[rng.below(2) as usize];
                // A device that just crashed may not know the conversation again yet.
                match sim.send_text(d, conv, &format!("s{step}")).await {
                    Ok(_) | Err(SimError::Command { .. }) => {}
                    Err(e) => panic!("{e}"),
                }
            }
            4..=5 => {
                for i in 0..1 + rng.below(4) {
                    sim.append_text("carol", "g", &format!("c{step}.{i}"))
                        .unwrap();
                }
            }
            6 => {
                let max = sim
                    .engine(d)
                    .and_then(|e| e.conversation(&"g".into()).map(|c| c.server_max_seq));
                if let Some(max) = max {
                    sim.mark_read(d, "g", max).await.unwrap();
                }
            }
            7 => {
                // Crash at the next write or request, whichever comes first.
                let mut left = rng.below(4);
                sim.crash_before(d, move |o| {
                    if matches!(o, Output::Write(..) | Output::Request(..)) {
                        if left == 0 {
                            return true;
                        }
                        left -= 1;
                    }
                    false
                });
            }
            8 => sim.disconnect(d).await.unwrap(),
            9 => {
                if rng.below(2) == 0 {
                    sim.set_min_seq("g", Seq(1 + rng.below(5))).unwrap();
                } else {
                    // Delete a message, never an edit or revoke: deleting a change does not
                    // undo it on devices that applied it (ARCHITECTURE.md, "Known limits").
                    let texts: Vec<Seq> = sim
                        .server()
                        .store()
                        .messages(&"g".into(), Seq(1), Seq(u64::MAX), usize::MAX)
                        .unwrap()
                        .iter()
                        .filter(|m| m.kind.change_target().is_none())
                        .map(|m| m.seq)
                        .collect();
                    if !texts.is_empty() {
                        let seq = texts[rng.below(texts.len() as u64) as usize];
                        sim.delete_seqs("g", &SeqRanges::from_range(seq, seq))
                            .unwrap();
                    }
                }
            }
            _ => {
                // Edit or revoke a text message of the group, possibly again: edits must
                // apply in seq order and a revoke must win, whatever the arrival order.
                let all = sim
                    .server()
                    .store()
                    .messages(&"g".into(), Seq(1), Seq(u64::MAX), usize::MAX)
                    .unwrap();
                let texts: Vec<(Seq, UserId)> = all
                    .iter()
                    .filter(|m| m.kind == ContentKind::Text)
                    .map(|m| (m.seq, m.sender.clone()))
                    .collect();
                if !texts.is_empty() {
                    // Only the author may change a message: the change comes from them.
                    let (target, author) = texts[rng.below(texts.len() as u64) as usize].clone();
                    let kind = if rng.below(2) == 0 {
                        ContentKind::Edit { target }
                    } else {
                        ContentKind::Revoke { target }
                    };
                    let content = format!("edit{step}").into_bytes();
                    sim.append_as(author, "g", kind, content).unwrap();
                }
            }
        }
        sim.drive_for(rng.below(2_000)).await.unwrap();
    }
    sim
}

#[tokio::test]
async fn random_faults_keep_the_invariants() {
    let mut failures = Vec::new();
    let seeds: u64 = std::env::var("FAULT_SOUP_SEEDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1000);
    println!("fault soup: {seeds} seeds");
    for seed in 0..seeds {
        let mut sim = soup(seed).await;
        sim.heal_all().await.unwrap();
        if let Err(e) = sim.drive().await {
            failures.push(format!("seed {seed}: drive: {e}"));
            continue;
        }
        if let Err(v) = sim.check_invariants().await {
            failures.push(format!("seed {seed}: {v}"));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
