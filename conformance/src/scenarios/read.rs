//! Read state and unread counts across a user's devices.

use tidemark_engine::{ConversationKind, Event, Seq, Storage};

use super::{announced, check, cid, conversation, go_offline, ScenarioLog, ScenarioResult};
use crate::server::ServerStore;
use crate::sim::{RequestKind, Sim};
use crate::Backend;

fn last_total_unread<F: Backend>(sim: &Sim<F>, d: usize) -> Option<u64> {
    sim.device_events(d)
        .into_iter()
        .rev()
        .find_map(|r| match r.event {
            Event::TotalUnreadChanged { total } => Some(total),
            _ => None,
        })
}

/// bob writes three messages; alice reads them on her laptop, and the read-seq push brings her
/// phone's unread count to 0 without the phone asking anything.
pub async fn read_on_another_device<F: Backend>(factory: F) -> ScenarioResult {
    let mut sim = Sim::new(factory, 301);
    sim.create_conversation("g", ConversationKind::Group, ["alice", "bob"])?;
    let phone = sim.add_device("alice", "phone", |_| {}).await?;
    let laptop = sim.add_device("alice", "laptop", |_| {}).await?;
    sim.drive().await?;
    for k in 1..=3 {
        sim.append_text("bob", "g", &format!("m{k}"))?;
    }
    sim.drive().await?;
    for d in [phone, laptop] {
        assert_eq!(conversation(&sim, d, "g").await?.unread, 3, "device {d}");
    }
    sim.take_requests(phone);

    sim.mark_read(laptop, "g", Seq(3)).await?;
    sim.drive().await?;
    check(&sim).await?;

    for d in [phone, laptop] {
        let conv = conversation(&sim, d, "g").await?;
        assert_eq!((conv.read_seq, conv.unread), (Seq(3), 0), "device {d}");
        assert_eq!(sim.store(d).total_unread().await?, 0, "device {d}");
        assert_eq!(last_total_unread(&sim, d), Some(0), "device {d}");
    }
    assert_eq!(sim.requests(phone).count(RequestKind::MarkRead), 0);
    assert_eq!(sim.requests(laptop).count(RequestKind::MarkRead), 1);
    Ok(ScenarioLog::capture(&sim))
}

/// alice replies from her laptop and from a web session that is not a simulated device: none
/// of her own messages counts as unread on any of her devices (a new tablet included), while
/// bob counts them, and carol's later message counts for alice.
pub async fn own_messages_are_never_unread<F: Backend>(factory: F) -> ScenarioResult {
    let mut sim = Sim::new(factory, 302);
    sim.create_conversation("g", ConversationKind::Group, ["alice", "bob", "carol"])?;
    let phone = sim.add_device("alice", "phone", |_| {}).await?;
    let laptop = sim.add_device("alice", "laptop", |_| {}).await?;
    let bob = sim.add_device("bob", "phone", |_| {}).await?;
    sim.drive().await?;

    sim.append_text("bob", "g", "hi alice")?;
    sim.drive().await?;
    sim.send_text(laptop, "g", "hi bob, from my laptop").await?;
    sim.drive().await?;
    for d in [phone, laptop] {
        assert_eq!(conversation(&sim, d, "g").await?.unread, 0, "device {d}");
    }
    sim.append_text("alice", "g", "and from the web")?;
    sim.drive().await?;
    for d in [phone, laptop] {
        let conv = conversation(&sim, d, "g").await?;
        assert_eq!((conv.read_seq, conv.unread), (Seq(3), 0), "device {d}");
    }
    sim.append_text("carol", "g", "welcome back")?;
    sim.drive().await?;
    let tablet = sim.add_device("alice", "tablet", |_| {}).await?;
    sim.drive().await?;
    check(&sim).await?;

    for d in [phone, laptop, tablet] {
        let conv = conversation(&sim, d, "g").await?;
        assert_eq!((conv.read_seq, conv.unread), (Seq(3), 1), "device {d}");
        assert_eq!(sim.store(d).total_unread().await?, 1, "device {d}");
    }
    let theirs = conversation(&sim, bob, "g").await?;
    assert_eq!((theirs.read_seq, theirs.unread), (Seq(1), 3));
    // Own messages from elsewhere are new to a device; its own send is not.
    assert_eq!(announced(&sim, phone, "g"), [1, 2, 3, 4]);
    assert_eq!(announced(&sim, laptop, "g"), [1, 3, 4]);
    assert_eq!(announced(&sim, tablet, "g"), [1, 2, 3, 4]);
    Ok(ScenarioLog::capture(&sim))
}

/// alice reads a chat on her phone while offline: the unread count drops at once, and the read
/// reaches the server (and her laptop) once the phone reconnects.
pub async fn mark_read_offline_is_sent_after_reconnect<F: Backend>(factory: F) -> ScenarioResult {
    let mut sim = Sim::new(factory, 303);
    sim.create_conversation("g", ConversationKind::Group, ["alice", "bob"])?;
    let phone = sim.add_device("alice", "phone", |_| {}).await?;
    let laptop = sim.add_device("alice", "laptop", |_| {}).await?;
    for k in 1..=5 {
        sim.append_text("bob", "g", &format!("m{k}"))?;
    }
    sim.drive().await?;

    go_offline(&mut sim, phone).await?;
    sim.take_requests(phone);
    sim.mark_read(phone, "g", Seq(5)).await?;
    let conv = conversation(&sim, phone, "g").await?;
    assert_eq!((conv.read_seq, conv.unread), (Seq(5), 0));
    assert_eq!(sim.store(phone).total_unread().await?, 0);
    assert_eq!(sim.requests(phone).count(RequestKind::MarkRead), 0);
    let server_read = |sim: &Sim<F>| sim.server().store().read_seq(&"alice".into(), &cid("g"));
    assert_eq!(server_read(&sim)?, Seq(0));
    assert_eq!(conversation(&sim, laptop, "g").await?.unread, 5);

    sim.heal(phone);
    sim.drive().await?;
    check(&sim).await?;

    assert_eq!(sim.requests(phone).count(RequestKind::MarkRead), 1);
    assert_eq!(server_read(&sim)?, Seq(5));
    for d in [phone, laptop] {
        let conv = conversation(&sim, d, "g").await?;
        assert_eq!((conv.read_seq, conv.unread), (Seq(5), 0), "device {d}");
    }
    Ok(ScenarioLog::capture(&sim))
}
