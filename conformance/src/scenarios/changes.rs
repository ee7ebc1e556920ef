//! Messages that change others (revokes, edits) and seqs that stop existing (deletions,
//! history floors).

use tidemark_engine::{ContentKind, ConversationKind, Event, Seq, SeqRanges, Storage, SyncPolicy};

use super::{
    announced, check, cid, conversation, count_events, gaps, messages, pulled, stored_seqs,
    ScenarioError, ScenarioLog, ScenarioResult,
};
use crate::sim::{LinkConfig, LinkDir, RequestKind, Sim};
use crate::Backend;

/// The seqs of every `MessagesDeleted` device `d` emitted, in order.
fn deletions<F: Backend>(sim: &Sim<F>, d: usize) -> Vec<SeqRanges> {
    sim.device_events(d)
        .into_iter()
        .filter_map(|r| match &r.event {
            Event::MessagesDeleted { seqs, .. } => Some(seqs.clone()),
            _ => None,
        })
        .collect()
}

/// Device `d`'s pending changes, through a fresh snapshot load.
async fn pending_changes<F: Backend>(sim: &Sim<F>, d: usize) -> Result<usize, ScenarioError> {
    Ok(sim.store(d).load_snapshot().await?.pending_changes.len())
}

/// The push of bob's message is lost; his revoke of it arrives first: it is kept as a pending
/// change, the gap is pulled, and the message lands (and is announced) already revoked.
pub async fn revoke_before_its_target<F: Backend>(factory: F) -> ScenarioResult {
    let mut sim = Sim::new(factory, 401);
    sim.create_conversation("g", ConversationKind::Group, ["alice", "bob"])?;
    let alice = sim.add_device("alice", "phone", |_| {}).await?;
    sim.drive().await?;
    sim.take_requests(alice);

    sim.set_link_dir(alice, LinkDir::ToDevice, LinkConfig::new(10).with_loss(1.0));
    sim.append_text("bob", "g", "something regrettable")?;
    sim.set_link_dir(alice, LinkDir::ToDevice, LinkConfig::default());
    sim.append_as(
        "bob",
        "g",
        ContentKind::Revoke { target: Seq(1) },
        Vec::new(),
    )?;
    // The revoke's push has landed; the pull of seq 1 is still on its way.
    sim.drive_for(15).await?;
    assert_eq!(pending_changes(&sim, alice).await?, 1);
    assert_eq!(stored_seqs(&sim, alice, "g").await?, [2]);
    sim.drive().await?;
    check(&sim).await?;

    assert_eq!(pulled(&sim, alice), [("g".into(), 1, 1)]);
    let stored = messages(&sim, alice, "g").await?;
    let target = stored
        .first()
        .ok_or_else(|| ScenarioError::Missing("seq 1".into()))?;
    assert_eq!(target.seq, Some(Seq(1)));
    assert!(target.revoked && target.content.is_empty());
    assert_eq!(stored.len(), 2);
    assert_eq!(pending_changes(&sim, alice).await?, 0);
    assert_eq!(announced(&sim, alice, "g"), [1]);
    // The target never existed unrevoked here, so nothing was updated.
    assert_eq!(
        count_events(&sim, alice, |e| matches!(e, Event::MessageUpdated { .. })),
        0
    );
    // The revoked message still counts; the revoke itself never does.
    assert_eq!(conversation(&sim, alice, "g").await?.unread, 1);
    Ok(ScenarioLog::capture(&sim))
}

/// A fresh device syncing the newest 2 gets bob's edit before the message it edits: the edit
/// waits as a pending change until `load_history` brings the target, which lands edited.
pub async fn edit_before_its_target<F: Backend>(factory: F) -> ScenarioResult {
    let mut sim = Sim::new(factory, 402);
    sim.create_conversation("g", ConversationKind::Group, ["alice", "bob"])?;
    sim.append_text("bob", "g", "meet at 5")?;
    sim.append_as(
        "bob",
        "g",
        ContentKind::Edit { target: Seq(1) },
        b"meet at 6".to_vec(),
    )?;
    sim.append_text("bob", "g", "see you")?;
    let alice = sim
        .add_device("alice", "phone", |c| {
            c.policy = SyncPolicy::NewestFirst {
                per_conversation: 2,
                background_fill: false,
            }
        })
        .await?;
    sim.drive().await?;
    assert_eq!(pending_changes(&sim, alice).await?, 1);
    assert_eq!(gaps(&conversation(&sim, alice, "g").await?), [(1, 1)]);

    let history = sim.load_history(alice, "g", None, 10).await?;
    sim.drive().await?;
    check(&sim).await?;

    let stored = messages(&sim, alice, "g").await?;
    let target = stored
        .first()
        .ok_or_else(|| ScenarioError::Missing("seq 1".into()))?;
    assert_eq!(target.seq, Some(Seq(1)));
    assert_eq!(target.content, b"meet at 6");
    assert_eq!((target.edit_seq, target.revoked), (Some(Seq(2)), false));
    assert_eq!(pending_changes(&sim, alice).await?, 0);
    assert!(gaps(&conversation(&sim, alice, "g").await?).is_empty());
    assert_eq!(announced(&sim, alice, "g"), [3]);
    assert_eq!(
        count_events(&sim, alice, |e| matches!(
            e,
            Event::HistoryLoaded { id, complete: true, .. } if *id == history
        )),
        1
    );
    assert_eq!(conversation(&sim, alice, "g").await?.unread, 2);
    Ok(ScenarioLog::capture(&sim))
}

/// Two of ten messages are deleted on the server: the online phone turns them into
/// tombstones (rows removed, no longer unread) and announces the deletion once.
pub async fn deleted_seqs_become_tombstones<F: Backend>(factory: F) -> ScenarioResult {
    let mut sim = Sim::new(factory, 403);
    sim.create_conversation("g", ConversationKind::Group, ["alice", "bob"])?;
    let phone = sim.add_device("alice", "phone", |_| {}).await?;
    for k in 1..=10 {
        sim.append_text("bob", "g", &format!("m{k}"))?;
    }
    sim.drive().await?;
    assert_eq!(conversation(&sim, phone, "g").await?.unread, 10);

    let deleted = SeqRanges::from_iter([Seq(4), Seq(9)]);
    sim.delete_seqs("g", &deleted)?;
    sim.drive().await?;
    check(&sim).await?;

    assert_eq!(sim.store(phone).tombstones(&cid("g")).await?, deleted);
    assert_eq!(
        stored_seqs(&sim, phone, "g").await?,
        [1, 2, 3, 5, 6, 7, 8, 10]
    );
    let conv = conversation(&sim, phone, "g").await?;
    assert!(gaps(&conv).is_empty());
    assert_eq!(conv.unread, 8);
    assert_eq!(deletions(&sim, phone), [deleted]);
    assert_eq!(announced(&sim, phone, "g"), (1..=10).collect::<Vec<_>>());
    Ok(ScenarioLog::capture(&sim))
}

/// The phone applied a pushed deletion of two seqs; after a reconnect it holds the same
/// tombstones and announces nothing again.
pub async fn known_deletions_are_not_announced_again<F: Backend>(factory: F) -> ScenarioResult {
    let mut sim = Sim::new(factory, 406);
    sim.create_conversation("g", ConversationKind::Group, ["alice", "bob"])?;
    let phone = sim.add_device("alice", "phone", |_| {}).await?;
    for k in 1..=10 {
        sim.append_text("bob", "g", &format!("m{k}"))?;
    }
    sim.drive().await?;
    let deleted = SeqRanges::from_iter([Seq(4), Seq(9)]);
    sim.delete_seqs("g", &deleted)?;
    sim.drive().await?;
    assert_eq!(deletions(&sim, phone), std::slice::from_ref(&deleted));

    sim.disconnect(phone).await?;
    sim.drive().await?;
    check(&sim).await?;

    assert_eq!(sim.store(phone).tombstones(&cid("g")).await?, deleted);
    assert_eq!(conversation(&sim, phone, "g").await?.unread, 8);
    assert_eq!(deletions(&sim, phone), [deleted]);
    Ok(ScenarioLog::capture(&sim))
}

/// A laptop logs in after two of ten messages were deleted: it learns them as tombstones (from
/// the deletion list and its pull), never announces them, and emits no `MessagesDeleted`: it
/// never held those messages.
pub async fn deletions_learned_at_login_are_not_announced<F: Backend>(
    factory: F,
) -> ScenarioResult {
    let mut sim = Sim::new(factory, 405);
    sim.create_conversation("g", ConversationKind::Group, ["alice", "bob"])?;
    for k in 1..=10 {
        sim.append_text("bob", "g", &format!("m{k}"))?;
    }
    let deleted = SeqRanges::from_iter([Seq(4), Seq(9)]);
    sim.delete_seqs("g", &deleted)?;
    let laptop = sim.add_device("alice", "laptop", |_| {}).await?;
    sim.drive().await?;
    check(&sim).await?;

    assert_eq!(sim.store(laptop).tombstones(&cid("g")).await?, deleted);
    assert_eq!(
        stored_seqs(&sim, laptop, "g").await?,
        [1, 2, 3, 5, 6, 7, 8, 10]
    );
    let conv = conversation(&sim, laptop, "g").await?;
    assert!(gaps(&conv).is_empty());
    assert_eq!(conv.unread, 8);
    assert_eq!(announced(&sim, laptop, "g"), [1, 2, 3, 5, 6, 7, 8, 10]);
    assert_eq!(deletions(&sim, laptop), Vec::<SeqRanges>::new());
    Ok(ScenarioLog::capture(&sim))
}

/// The history floor rises to 6: the online phone drops seqs 1..=5 (tombstones, not unread),
/// and a laptop logging in later never pulls below the floor.
pub async fn history_floor_raised<F: Backend>(factory: F) -> ScenarioResult {
    let mut sim = Sim::new(factory, 404);
    sim.create_conversation("g", ConversationKind::Group, ["alice", "bob"])?;
    let phone = sim.add_device("alice", "phone", |_| {}).await?;
    for k in 1..=10 {
        sim.append_text("bob", "g", &format!("m{k}"))?;
    }
    sim.drive().await?;

    sim.set_min_seq("g", Seq(6))?;
    sim.drive().await?;
    let laptop = sim.add_device("alice", "laptop", |_| {}).await?;
    sim.drive().await?;
    check(&sim).await?;

    assert_eq!(pulled(&sim, laptop), [("g".into(), 6, 10)]);
    assert_eq!(sim.requests(laptop).count(RequestKind::Pull), 1);
    for d in [phone, laptop] {
        let conv = conversation(&sim, d, "g").await?;
        assert_eq!(conv.server_min_seq, Seq(6), "device {d}");
        assert_eq!(conv.unread, 5, "device {d}");
        assert!(gaps(&conv).is_empty(), "device {d}");
        assert_eq!(
            stored_seqs(&sim, d, "g").await?,
            [6, 7, 8, 9, 10],
            "device {d}"
        );
        assert_eq!(
            sim.store(d).tombstones(&cid("g")).await?,
            SeqRanges::from_range(Seq(1), Seq(5)),
            "device {d}"
        );
    }
    assert_eq!(announced(&sim, laptop, "g"), [6, 7, 8, 9, 10]);
    Ok(ScenarioLog::capture(&sim))
}

/// Deletions and a risen floor reach the online device by push; the partitioned one learns
/// both after healing: the floor from the max-seq listing, the deletions from the deletion
/// list its changed deletion count asks for.
pub async fn deletions_and_floors_converge<F: Backend>(factory: F) -> ScenarioResult {
    let mut sim = Sim::new(factory, 6);
    sim.create_conversation("g", ConversationKind::Group, ["alice", "bob"])?;
    let alice = sim.add_device("alice", "phone", |_| {}).await?;
    let bob = sim.add_device("bob", "phone", |_| {}).await?;
    for i in 0..10 {
        sim.append_text("bob", "g", &format!("m{i}"))?;
    }
    sim.drive().await?;
    sim.partition(bob);
    sim.delete_seqs("g", &SeqRanges::from_iter([Seq(4), Seq(9)]))?;
    sim.set_min_seq("g", Seq(3))?;
    sim.drive().await?;
    check(&sim).await?;
    let tombstones = sim.store(alice).tombstones(&cid("g")).await?;
    assert_eq!(
        tombstones,
        SeqRanges::from_iter([Seq(1), Seq(2), Seq(4), Seq(9)])
    );
    sim.heal_all().await?;
    sim.drive().await?;
    check(&sim).await?;

    assert_eq!(stored_seqs(&sim, alice, "g").await?, [3, 5, 6, 7, 8, 10]);
    let theirs = conversation(&sim, bob, "g").await?;
    assert_eq!(theirs.server_min_seq, Seq(3));
    assert_eq!(theirs.unread, 0);
    assert_eq!(sim.store(bob).tombstones(&cid("g")).await?, tombstones);
    assert_eq!(stored_seqs(&sim, bob, "g").await?, [3, 5, 6, 7, 8, 10]);
    assert_eq!(sim.requests(bob).count(RequestKind::GetDeletions), 1);
    assert_eq!(conversation(&sim, alice, "g").await?.unread, 6);
    Ok(ScenarioLog::capture(&sim))
}
