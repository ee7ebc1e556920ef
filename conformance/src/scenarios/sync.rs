//! Seq alignment: logging in, reconnecting, pushes and gaps, sync policies, history.

use std::collections::BTreeSet;

use tidemark_engine::{ConversationId, ConversationKind, Event, Seq, Storage, SyncPolicy};

use super::{
    announced, check, cid, conversation, count_events, gaps, go_offline, pulled, stored_seqs,
    ScenarioLog, ScenarioResult,
};
use crate::server::ServerConfig;
use crate::sim::{LinkConfig, LinkDir, RequestKind, Sim, SimConfig};
use crate::Backend;

fn newest_first(per_conversation: u32, background_fill: bool) -> SyncPolicy {
    SyncPolicy::NewestFirst {
        per_conversation,
        background_fill,
    }
}

/// A fresh device of alice, who has a direct chat, a group and an empty group, logs in: one
/// max-seq page and one pull bring everything, her own message from elsewhere is read.
pub async fn fresh_login_small_account<F: Backend>(factory: F) -> ScenarioResult {
    let mut sim = Sim::new(factory, 101);
    sim.create_conversation("dm-bob", ConversationKind::Direct, ["alice", "bob"])?;
    sim.create_conversation("team", ConversationKind::Group, ["alice", "bob", "carol"])?;
    sim.create_conversation("quiet", ConversationKind::Group, ["alice", "carol"])?;
    sim.append_text("bob", "dm-bob", "hi alice")?;
    sim.append_text("bob", "dm-bob", "lunch?")?;
    sim.append_text("carol", "team", "standup in 5")?;
    sim.append_text("alice", "team", "on my way")?;
    sim.append_text("bob", "team", "coming")?;
    let phone = sim.add_device("alice", "phone", |_| {}).await?;
    sim.drive().await?;
    check(&sim).await?;

    let requests = sim.requests(phone);
    assert_eq!(requests.count(RequestKind::GetMaxSeqs), 1);
    assert_eq!(requests.count(RequestKind::Pull), 1);
    assert_eq!(
        pulled(&sim, phone),
        [("dm-bob".into(), 1, 2), ("team".into(), 1, 3)]
    );
    let dm = conversation(&sim, phone, "dm-bob").await?;
    let team = conversation(&sim, phone, "team").await?;
    let quiet = conversation(&sim, phone, "quiet").await?;
    assert_eq!(
        (dm.server_max_seq, dm.unread, dm.read_seq),
        (Seq(2), 2, Seq(0))
    );
    // Her own message (from another device) counts as read up to it.
    assert_eq!(
        (team.server_max_seq, team.unread, team.read_seq),
        (Seq(3), 1, Seq(2))
    );
    assert_eq!((quiet.server_max_seq, quiet.unread), (Seq(0), 0));
    assert_eq!(quiet.kind, ConversationKind::Group);
    assert_eq!(stored_seqs(&sim, phone, "dm-bob").await?, [1, 2]);
    assert_eq!(stored_seqs(&sim, phone, "team").await?, [1, 2, 3]);
    assert!(stored_seqs(&sim, phone, "quiet").await?.is_empty());
    assert_eq!(sim.store(phone).total_unread().await?, 3);
    assert_eq!(announced(&sim, phone, "dm-bob"), [1, 2]);
    assert_eq!(announced(&sim, phone, "team"), [1, 2, 3]);
    let list: Vec<String> = sim
        .store(phone)
        .conversations_page(None, 10)
        .await?
        .into_iter()
        .map(|c| c.id.to_string())
        .collect();
    assert_eq!(list, ["dm-bob", "team", "quiet"]);
    assert_eq!(count_events(&sim, phone, |e| *e == Event::SyncFinished), 1);
    Ok(ScenarioLog::capture(&sim))
}

/// A fresh login to an account of 10,000 conversations (every fifth empty): max seqs come in
/// ten pages, pulls pack 200 conversations each, and only conversations with messages are
/// pulled.
pub async fn fresh_login_ten_thousand_conversations<F: Backend>(factory: F) -> ScenarioResult {
    let mut sim = Sim::new(factory, 102);
    sim.create_user("alice")?;
    sim.create_user("bob")?;
    let mut with_messages = BTreeSet::new();
    let mut total_unread = 0;
    for i in 0..10_000u64 {
        let id = format!("c{i:05}");
        sim.create_conversation(id.as_str(), ConversationKind::Direct, ["alice", "bob"])?;
        if i % 5 != 0 {
            for _ in 0..(1 + i % 3) {
                sim.append_text("bob", id.as_str(), "x")?;
            }
            total_unread += 1 + i % 3;
            with_messages.insert(ConversationId::from(id));
        }
    }
    let alice = sim
        .add_device("alice", "phone", |c| {
            c.max_seqs_page = 1_000;
            c.pull_max_conversations = 200;
            c.pull_max_messages = 2_000;
        })
        .await?;
    sim.drive().await?;
    check(&sim).await?;

    let requests = sim.requests(alice);
    assert_eq!(requests.count(RequestKind::GetMaxSeqs), 10);
    // 8,000 conversations at 200 per request.
    assert_eq!(requests.count(RequestKind::Pull), 40);
    assert_eq!(requests.pulled_conversations(), with_messages);
    assert!(requests
        .pulled()
        .iter()
        .all(|r| r.from == Seq(1) && r.to.0 <= 3));
    assert_eq!(sim.store(alice).total_unread().await?, total_unread);
    assert_eq!(stored_seqs(&sim, alice, "c00002").await?, [1, 2, 3]);
    let empty = conversation(&sim, alice, "c00005").await?;
    assert_eq!((empty.server_max_seq, empty.unread), (Seq(0), 0));
    Ok(ScenarioLog::capture(&sim))
}

/// alice's phone is offline while 10 of her 20 chats get more than the newest-5 window and 5
/// get a few messages: on reconnect one pull brings the newest 5 of the 15 changed chats, and
/// the holes stay explicit gaps (never announced as new).
pub async fn reconnect_after_offline_with_gaps<F: Backend>(factory: F) -> ScenarioResult {
    let mut sim = Sim::new(factory, 103);
    let ids: Vec<String> = (0..20).map(|i| format!("r{i:02}")).collect();
    for id in &ids {
        sim.create_conversation(id.as_str(), ConversationKind::Direct, ["alice", "bob"])?;
        sim.append_text("bob", id.as_str(), "old 1")?;
        sim.append_text("bob", id.as_str(), "old 2")?;
    }
    let alice = sim
        .add_device("alice", "phone", |c| c.policy = newest_first(5, false))
        .await?;
    sim.drive().await?;
    sim.take_requests(alice);

    go_offline(&mut sim, alice).await?;
    for (i, id) in ids.iter().enumerate() {
        let n = match i {
            0..10 => 12,
            10..15 => 3,
            _ => 0,
        };
        for k in 0..n {
            sim.append_text("bob", id.as_str(), &format!("new {k}"))?;
        }
    }
    sim.heal(alice);
    sim.drive().await?;
    check(&sim).await?;

    let requests = sim.requests(alice);
    assert_eq!(requests.count(RequestKind::GetMaxSeqs), 1);
    assert_eq!(requests.count(RequestKind::Pull), 1);
    let mut expected_pulls = Vec::new();
    for (i, id) in ids.iter().enumerate() {
        let conv = conversation(&sim, alice, id).await?;
        let seqs = stored_seqs(&sim, alice, id).await?;
        match i {
            0..10 => {
                assert_eq!(gaps(&conv), [(3, 9)], "{id}");
                assert_eq!(seqs, [1, 2, 10, 11, 12, 13, 14], "{id}");
                assert_eq!(
                    announced(&sim, alice, id),
                    [1, 2, 10, 11, 12, 13, 14],
                    "{id}"
                );
                // Seqs of the hole are someone's messages until pulled: they count.
                assert_eq!(conv.unread, 14, "{id}");
                expected_pulls.push((id.clone(), 10, 14));
            }
            10..15 => {
                assert!(gaps(&conv).is_empty(), "{id}");
                assert_eq!(seqs, [1, 2, 3, 4, 5], "{id}");
                assert_eq!(conv.unread, 5, "{id}");
                expected_pulls.push((id.clone(), 3, 5));
            }
            _ => {
                assert_eq!(seqs, [1, 2], "{id}");
                assert_eq!(conv.unread, 2, "{id}");
            }
        }
    }
    let mut actual = pulled(&sim, alice);
    actual.sort();
    assert_eq!(actual, expected_pulls);
    assert_eq!(sim.store(alice).total_unread().await?, 175);
    Ok(ScenarioLog::capture(&sim))
}

/// alice holds 10,000 chats, goes offline, and 100 of them change: reconnecting takes exactly
/// one max-seq page (the delta since the sync token of the first sync, listing the 100
/// changed chats) and one pull, which asks for exactly the 100 changed chats.
pub async fn ten_thousand_conversations_hundred_changed<F: Backend>(factory: F) -> ScenarioResult {
    let mut sim = Sim::new(factory, 104);
    sim.create_user("alice")?;
    sim.create_user("bob")?;
    for i in 0..10_000u32 {
        let id = format!("c{i:05}");
        sim.create_conversation(id.as_str(), ConversationKind::Direct, ["alice", "bob"])?;
        sim.append_text("bob", id.as_str(), "hello")?;
    }
    let alice = sim.add_device("alice", "phone", |_| {}).await?;
    sim.drive().await?;
    assert_eq!(sim.requests(alice).count(RequestKind::GetMaxSeqs), 10);
    assert_eq!(sim.requests(alice).count(RequestKind::Pull), 50);
    sim.take_requests(alice);

    go_offline(&mut sim, alice).await?;
    let mut changed = BTreeSet::new();
    for i in (7..10_000u32).step_by(100) {
        let id = format!("c{i:05}");
        sim.append_text("bob", id.as_str(), "while you were away")?;
        changed.insert(ConversationId::from(id));
    }
    assert_eq!(changed.len(), 100);
    sim.heal(alice);
    sim.drive().await?;
    check(&sim).await?;

    let requests = sim.requests(alice);
    assert_eq!(requests.count(RequestKind::GetMaxSeqs), 1);
    assert_eq!(requests.count(RequestKind::Pull), 1);
    assert_eq!(requests.pulled_conversations(), changed);
    assert!(requests
        .pulled()
        .iter()
        .all(|r| (r.from, r.to) == (Seq(2), Seq(2))));
    assert_eq!(stored_seqs(&sim, alice, "c00107").await?, [1, 2]);
    assert_eq!(stored_seqs(&sim, alice, "c00108").await?, [1]);
    assert_eq!(announced(&sim, alice, "c00107"), [1, 2]);
    assert_eq!(sim.store(alice).total_unread().await?, 10_100);
    Ok(ScenarioLog::capture(&sim))
}

/// With the full-sync policy a fresh device pulls every message of every chat, in chunks of
/// 40, leaving no gap; everything is announced, in seq order.
pub async fn full_sync_policy_pulls_everything<F: Backend>(factory: F) -> ScenarioResult {
    let mut sim = Sim::new(factory, 105);
    for (id, n) in [("a", 100), ("b", 30), ("c", 1)] {
        sim.create_conversation(id, ConversationKind::Group, ["alice", "bob"])?;
        for k in 1..=n {
            sim.append_text("bob", id, &format!("{id}{k}"))?;
        }
    }
    let alice = sim
        .add_device("alice", "phone", |c| {
            c.policy = SyncPolicy::Full;
            c.pull_max_messages = 40;
        })
        .await?;
    sim.drive().await?;
    check(&sim).await?;

    // 131 messages at most 40 per request: four requests, no fewer possible.
    assert_eq!(sim.requests(alice).count(RequestKind::Pull), 4);
    assert_eq!(
        pulled(&sim, alice),
        [
            // Ascending within a conversation: announced in seq order without buffering.
            ("a".into(), 1, 40),
            ("a".into(), 41, 80),
            ("a".into(), 81, 100),
            ("b".into(), 1, 30),
            ("c".into(), 1, 1),
        ]
    );
    for (id, n) in [("a", 100u64), ("b", 30), ("c", 1)] {
        let conv = conversation(&sim, alice, id).await?;
        assert!(gaps(&conv).is_empty(), "{id}");
        let all: Vec<u64> = (1..=n).collect();
        assert_eq!(stored_seqs(&sim, alice, id).await?, all, "{id}");
        assert_eq!(announced(&sim, alice, id), all, "{id}");
        assert_eq!(conv.unread, n, "{id}");
    }
    Ok(ScenarioLog::capture(&sim))
}

/// The server caps a pull reply at 7 messages: the engine asks again for the rest while the
/// server makes progress, and ends with all 20 messages.
pub async fn capped_pull_replies_are_continued<F: Backend>(factory: F) -> ScenarioResult {
    let mut sim = Sim::with_config(
        factory,
        SimConfig {
            seed: 106,
            server: ServerConfig {
                max_pull_messages: 7,
                ..ServerConfig::default()
            },
            ..SimConfig::default()
        },
    );
    sim.create_conversation("g", ConversationKind::Group, ["alice", "bob"])?;
    for k in 1..=20 {
        sim.append_text("bob", "g", &format!("m{k}"))?;
    }
    let alice = sim
        .add_device("alice", "phone", |c| c.policy = SyncPolicy::Full)
        .await?;
    sim.drive().await?;
    check(&sim).await?;

    assert_eq!(
        pulled(&sim, alice),
        [
            ("g".into(), 1, 20),
            ("g".into(), 8, 20),
            ("g".into(), 15, 20)
        ]
    );
    let all: Vec<u64> = (1..=20).collect();
    assert_eq!(stored_seqs(&sim, alice, "g").await?, all);
    assert_eq!(announced(&sim, alice, "g"), all);
    assert!(gaps(&conversation(&sim, alice, "g").await?).is_empty());
    Ok(ScenarioLog::capture(&sim))
}

/// Newest-5 with background fill: the sync pulls the newest 5 of each chat and finishes, then
/// the old gaps are filled in chunks; history is never announced as new.
pub async fn background_fill_closes_old_gaps<F: Backend>(factory: F) -> ScenarioResult {
    let mut sim = Sim::new(factory, 107);
    for (id, n) in [("g", 30), ("h", 8)] {
        sim.create_conversation(id, ConversationKind::Group, ["alice", "bob"])?;
        for k in 1..=n {
            sim.append_text("bob", id, &format!("{id}{k}"))?;
        }
    }
    let alice = sim
        .add_device("alice", "phone", |c| {
            c.policy = newest_first(5, true);
            c.pull_max_messages = 10;
        })
        .await?;
    sim.drive().await?;
    check(&sim).await?;

    assert_eq!(
        pulled(&sim, alice),
        [
            // The sync: newest 5 of each, one request.
            ("g".into(), 26, 30),
            ("h".into(), 4, 8),
            // The fill, after SyncFinished: ascending, 10 per request.
            ("g".into(), 1, 10),
            ("g".into(), 11, 20),
            ("g".into(), 21, 25),
            ("h".into(), 1, 3),
        ]
    );
    assert_eq!(sim.requests(alice).count(RequestKind::Pull), 4);
    for (id, n) in [("g", 30u64), ("h", 8)] {
        assert!(
            gaps(&conversation(&sim, alice, id).await?).is_empty(),
            "{id}"
        );
        let all: Vec<u64> = (1..=n).collect();
        assert_eq!(stored_seqs(&sim, alice, id).await?, all, "{id}");
        let newest: Vec<u64> = (n - 4..=n).collect();
        assert_eq!(announced(&sim, alice, id), newest, "{id}");
    }
    Ok(ScenarioLog::capture(&sim))
}

/// Newest-10 leaves seqs 1..=40 of 50 as a gap; `load_history` below 41 for 15 pulls exactly
/// 26..=40; offline it reports incomplete at once; asked again online it pulls 21..=25.
pub async fn load_history_into_a_gap<F: Backend>(factory: F) -> ScenarioResult {
    let mut sim = Sim::new(factory, 108);
    sim.create_conversation("g", ConversationKind::Group, ["alice", "bob"])?;
    for k in 1..=50 {
        sim.append_text("bob", "g", &format!("m{k}"))?;
    }
    let alice = sim
        .add_device("alice", "phone", |c| c.policy = newest_first(10, false))
        .await?;
    sim.drive().await?;
    assert_eq!(gaps(&conversation(&sim, alice, "g").await?), [(1, 40)]);
    sim.take_requests(alice);

    let first = sim.load_history(alice, "g", Some(Seq(41)), 15).await?;
    sim.drive().await?;
    assert_eq!(pulled(&sim, alice), [("g".into(), 26, 40)]);
    assert_eq!(gaps(&conversation(&sim, alice, "g").await?), [(1, 25)]);

    go_offline(&mut sim, alice).await?;
    let offline = sim.load_history(alice, "g", Some(Seq(26)), 5).await?;
    sim.heal(alice);
    sim.drive().await?;
    let again = sim.load_history(alice, "g", Some(Seq(26)), 5).await?;
    sim.drive().await?;
    check(&sim).await?;

    assert_eq!(
        pulled(&sim, alice),
        [("g".into(), 26, 40), ("g".into(), 21, 25)]
    );
    let conv = conversation(&sim, alice, "g").await?;
    assert_eq!(gaps(&conv), [(1, 20)]);
    let held: Vec<u64> = (21..=50).collect();
    assert_eq!(stored_seqs(&sim, alice, "g").await?, held);
    let newest: Vec<u64> = (41..=50).collect();
    assert_eq!(announced(&sim, alice, "g"), newest);
    let loaded: Vec<(u64, bool)> = sim
        .device_events(alice)
        .into_iter()
        .filter_map(|r| match &r.event {
            Event::HistoryLoaded { id, complete, .. } => Some((*id, *complete)),
            _ => None,
        })
        .collect();
    assert_eq!(loaded, [(first, true), (offline, false), (again, true)]);
    Ok(ScenarioLog::capture(&sim))
}

/// Pushes of seqs 2 and 3 are lost; the push of seq 4 is applied at once, the gap 2..=3
/// pulled, and 2, 3, 4 are announced together, in seq order.
pub async fn push_gap_is_pulled<F: Backend>(factory: F) -> ScenarioResult {
    let mut sim = Sim::new(factory, 109);
    sim.create_conversation("g", ConversationKind::Group, ["alice", "bob"])?;
    let alice = sim.add_device("alice", "phone", |_| {}).await?;
    sim.drive().await?;
    sim.append_text("bob", "g", "one")?;
    sim.drive().await?;
    sim.take_requests(alice);

    sim.set_link_dir(alice, LinkDir::ToDevice, LinkConfig::new(10).with_loss(1.0));
    sim.append_text("bob", "g", "two")?;
    sim.append_text("bob", "g", "three")?;
    sim.set_link_dir(alice, LinkDir::ToDevice, LinkConfig::default());
    sim.append_text("bob", "g", "four")?;
    sim.drive().await?;
    check(&sim).await?;

    assert_eq!(pulled(&sim, alice), [("g".into(), 2, 3)]);
    assert_eq!(sim.requests(alice).count(RequestKind::Pull), 1);
    assert_eq!(stored_seqs(&sim, alice, "g").await?, [1, 2, 3, 4]);
    assert_eq!(announced(&sim, alice, "g"), [1, 2, 3, 4]);
    let last = sim
        .device_events(alice)
        .into_iter()
        .rev()
        .find_map(|r| match &r.event {
            Event::MessagesReceived { messages, .. } => {
                Some(messages.iter().filter_map(|m| m.seq).collect::<Vec<_>>())
            }
            _ => None,
        });
    assert_eq!(last, Some(vec![Seq(2), Seq(3), Seq(4)]));
    assert_eq!(conversation(&sim, alice, "g").await?.unread, 4);
    Ok(ScenarioLog::capture(&sim))
}

/// Twelve pushes reach alice reordered and partly duplicated: every message is stored once and
/// announced once, in seq order across the whole log.
pub async fn duplicate_and_out_of_order_pushes<F: Backend>(factory: F) -> ScenarioResult {
    let mut sim = Sim::new(factory, 110);
    sim.create_conversation("g", ConversationKind::Group, ["alice", "bob"])?;
    let alice = sim.add_device("alice", "phone", |_| {}).await?;
    sim.drive().await?;
    sim.take_requests(alice);

    sim.set_link_dir(
        alice,
        LinkDir::ToDevice,
        LinkConfig::new(10).with_jitter(60).with_duplicate(0.5),
    );
    for k in 1..=12 {
        sim.append_text("bob", "g", &format!("m{k}"))?;
        sim.drive_for(3).await?;
    }
    sim.set_link_dir(alice, LinkDir::ToDevice, LinkConfig::default());
    sim.drive().await?;
    check(&sim).await?;

    let all: Vec<u64> = (1..=12).collect();
    assert_eq!(stored_seqs(&sim, alice, "g").await?, all);
    assert_eq!(announced(&sim, alice, "g"), all);
    // Some push overtook an earlier one: its gap was pulled.
    assert!(sim.requests(alice).count(RequestKind::Pull) >= 1);
    assert_eq!(conversation(&sim, alice, "g").await?.unread, 12);
    Ok(ScenarioLog::capture(&sim))
}

/// A chat created after alice logged in reaches her with the push of its first message: it is
/// stored, announced, counted unread and listed first, without a pull.
pub async fn new_conversation_arrives_by_push<F: Backend>(factory: F) -> ScenarioResult {
    let mut sim = Sim::new(factory, 111);
    sim.create_conversation("old", ConversationKind::Group, ["alice", "bob"])?;
    sim.append_text("bob", "old", "earlier")?;
    let alice = sim.add_device("alice", "phone", |_| {}).await?;
    sim.drive().await?;
    sim.take_requests(alice);
    sim.drive_for(1_000).await?;

    sim.create_conversation("dm-carol", ConversationKind::Direct, ["alice", "carol"])?;
    sim.append_text("carol", "dm-carol", "hey, new here")?;
    sim.drive().await?;
    check(&sim).await?;

    assert_eq!(sim.requests(alice).count(RequestKind::Pull), 0);
    let dm = conversation(&sim, alice, "dm-carol").await?;
    assert_eq!((dm.server_max_seq, dm.unread), (Seq(1), 1));
    assert_eq!(stored_seqs(&sim, alice, "dm-carol").await?, [1]);
    assert_eq!(announced(&sim, alice, "dm-carol"), [1]);
    let first = sim.store(alice).conversations_page(None, 1).await?;
    assert_eq!(first.first().map(|c| c.id.clone()), Some(cid("dm-carol")));
    assert_eq!(sim.store(alice).total_unread().await?, 2);
    Ok(ScenarioLog::capture(&sim))
}

/// Messages arrive in chats a, b, c, then a again, and alice replies in b: the stored list is
/// ordered by last activity with each chat's latest message and unread count.
pub async fn conversation_list_stays_current<F: Backend>(factory: F) -> ScenarioResult {
    let mut sim = Sim::new(factory, 112);
    for id in ["a", "b", "c"] {
        sim.create_conversation(id, ConversationKind::Group, ["alice", "bob"])?;
    }
    let alice = sim.add_device("alice", "phone", |_| {}).await?;
    sim.drive().await?;
    for (id, text) in [("a", "a1"), ("b", "b1"), ("c", "c1"), ("a", "a2")] {
        sim.append_text("bob", id, text)?;
        sim.drive().await?;
        sim.drive_for(1_000).await?;
    }
    let order = |list: Vec<tidemark_engine::Conversation>| -> Vec<(String, u64, Vec<u8>)> {
        list.into_iter()
            .map(|c| {
                let preview = c.latest.map(|l| l.preview).unwrap_or_default();
                (c.id.to_string(), c.unread, preview)
            })
            .collect()
    };
    assert_eq!(
        order(sim.store(alice).conversations_page(None, 10).await?),
        [
            ("a".into(), 2, b"a2".to_vec()),
            ("c".into(), 1, b"c1".to_vec()),
            ("b".into(), 1, b"b1".to_vec()),
        ]
    );

    sim.send_text(alice, "b", "b2 from alice").await?;
    sim.drive().await?;
    check(&sim).await?;

    let list = sim.store(alice).conversations_page(None, 10).await?;
    let b = list
        .first()
        .ok_or_else(|| super::ScenarioError::Missing("empty conversation list".into()))?;
    assert_eq!(b.latest.as_ref().and_then(|l| l.seq), Some(Seq(2)));
    assert_eq!(
        order(list),
        [
            ("b".into(), 0, b"b2 from alice".to_vec()),
            ("a".into(), 2, b"a2".to_vec()),
            ("c".into(), 1, b"c1".to_vec()),
        ]
    );
    // Paging continues after the cursor.
    let first = sim.store(alice).conversations_page(None, 1).await?;
    let cursor = first
        .first()
        .map(tidemark_engine::ConversationCursor::after);
    let rest = sim.store(alice).conversations_page(cursor, 10).await?;
    let rest: Vec<String> = rest.into_iter().map(|c| c.id.to_string()).collect();
    assert_eq!(rest, ["a", "c"]);
    Ok(ScenarioLog::capture(&sim))
}

/// alice on two devices and bob chat in a group; everyone ends with everything, and alice's
/// read on her laptop clears her phone's unread too.
pub async fn two_users_exchange_messages<F: Backend>(factory: F) -> ScenarioResult {
    let mut sim = Sim::new(factory, 1);
    sim.create_conversation("g", ConversationKind::Group, ["alice", "bob"])?;
    let phone = sim.add_device("alice", "phone", |_| {}).await?;
    let laptop = sim.add_device("alice", "laptop", |_| {}).await?;
    let bob = sim.add_device("bob", "phone", |_| {}).await?;
    sim.append_text("bob", "g", "before anyone was online")?;
    sim.drive().await?;

    for i in 0..3 {
        sim.send_text(phone, "g", &format!("alice {i}")).await?;
    }
    sim.send_text(bob, "g", "bob 0").await?;
    sim.drive().await?;
    sim.mark_read(laptop, "g", Seq(5)).await?;
    sim.drive().await?;
    check(&sim).await?;

    for d in [phone, laptop, bob] {
        let conv = conversation(&sim, d, "g").await?;
        assert_eq!(conv.server_max_seq, Seq(5), "device {d}");
        assert_eq!(conv.unread, 0, "device {d}");
        assert_eq!(
            stored_seqs(&sim, d, "g").await?,
            [1, 2, 3, 4, 5],
            "device {d}"
        );
    }
    // The phone announces only what it did not send itself.
    assert_eq!(announced(&sim, phone, "g"), [1, 5]);
    assert_eq!(announced(&sim, laptop, "g"), [1, 2, 3, 4, 5]);
    assert_eq!(announced(&sim, bob, "g"), [1, 2, 3, 4]);
    Ok(ScenarioLog::capture(&sim))
}

/// A group created after alice logged in reaches her with the push of its first message: it
/// is stored as a group from the start, not only after the next max-seq listing.
pub async fn group_created_after_login_is_a_group<F: Backend>(factory: F) -> ScenarioResult {
    let mut sim = Sim::new(factory, 113);
    sim.create_conversation("old", ConversationKind::Group, ["alice", "bob"])?;
    let alice = sim.add_device("alice", "phone", |_| {}).await?;
    sim.drive().await?;

    sim.create_conversation("team", ConversationKind::Group, ["alice", "bob", "carol"])?;
    sim.append_text("bob", "team", "welcome to the team")?;
    sim.drive().await?;
    check(&sim).await?;

    let team = conversation(&sim, alice, "team").await?;
    assert_eq!(team.kind, ConversationKind::Group);
    assert_eq!(announced(&sim, alice, "team"), [1]);
    Ok(ScenarioLog::capture(&sim))
}

/// What the sync-token scenarios share: alice's phone, synced over 120 chats (three listing
/// pages of 50 on a fresh login), goes offline; then three chats get a message, one loses a
/// seq, and a new chat is created. Returns the phone's device index and the chats whose
/// entries changed.
async fn offline_while_a_few_chats_change<F: Backend>(
    sim: &mut Sim<F>,
) -> Result<(usize, BTreeSet<ConversationId>), super::ScenarioError> {
    for i in 0..120u32 {
        let id = format!("t{i:03}");
        sim.create_conversation(id.as_str(), ConversationKind::Direct, ["alice", "bob"])?;
        sim.append_text("bob", id.as_str(), "hello")?;
        sim.append_text("bob", id.as_str(), "again")?;
    }
    let alice = sim
        .add_device("alice", "phone", |c| c.max_seqs_page = 50)
        .await?;
    sim.drive().await?;
    assert_eq!(sim.requests(alice).count(RequestKind::GetMaxSeqs), 3);
    assert!(sim.store(alice).load_snapshot().await?.sync_token.is_some());
    sim.take_requests(alice);

    go_offline(sim, alice).await?;
    let mut changed = BTreeSet::new();
    for id in ["t005", "t061", "t119"] {
        sim.append_text("bob", id, "while you were away")?;
        changed.insert(cid(id));
    }
    sim.delete_seqs(
        "t030",
        &tidemark_engine::SeqRanges::from_range(Seq(1), Seq(1)),
    )?;
    changed.insert(cid("t030"));
    sim.create_conversation("t200", ConversationKind::Direct, ["alice", "bob"])?;
    sim.append_text("bob", "t200", "new chat")?;
    changed.insert(cid("t200"));
    Ok((alice, changed))
}

/// After the shared change set: alice's store matches the server everywhere that changed.
async fn changes_arrived<F: Backend>(
    sim: &Sim<F>,
    alice: usize,
) -> Result<(), super::ScenarioError> {
    for id in ["t005", "t061", "t119"] {
        assert_eq!(stored_seqs(sim, alice, id).await?, [1, 2, 3], "{id}");
        assert_eq!(announced(sim, alice, id), [1, 2, 3], "{id}");
    }
    assert_eq!(stored_seqs(sim, alice, "t030").await?, [2]);
    assert_eq!(stored_seqs(sim, alice, "t200").await?, [1]);
    assert_eq!(stored_seqs(sim, alice, "t031").await?, [1, 2]);
    assert_eq!(sim.store(alice).total_unread().await?, 120 * 2 + 3 - 1 + 1);
    Ok(())
}

/// alice reconnects after a few of her 120 chats changed: one delta page since her sync token
/// lists exactly the changed chats (the new one included), one deletion list and one pull
/// follow, and the store converges; a second reconnect with nothing new lists nothing.
pub async fn reconnect_with_sync_token_lists_only_changes<F: Backend>(
    factory: F,
) -> ScenarioResult {
    let mut sim = Sim::new(factory, 110);
    let (alice, changed) = offline_while_a_few_chats_change(&mut sim).await?;
    sim.heal(alice);
    sim.drive().await?;
    check(&sim).await?;
    let requests = sim.requests(alice);
    assert_eq!(requests.count(RequestKind::GetMaxSeqs), 1);
    assert_eq!(requests.count(RequestKind::GetDeletions), 1);
    assert_eq!(requests.count(RequestKind::Pull), 1);
    let mut pulled_and_deleted = requests.pulled_conversations();
    pulled_and_deleted.insert(cid("t030"));
    assert_eq!(pulled_and_deleted, changed);
    changes_arrived(&sim, alice).await?;

    sim.take_requests(alice);
    go_offline(&mut sim, alice).await?;
    sim.heal(alice);
    sim.drive().await?;
    check(&sim).await?;
    let requests = sim.requests(alice);
    assert_eq!(requests.count(RequestKind::GetMaxSeqs), 1);
    assert_eq!(requests.count(RequestKind::Pull), 0);
    Ok(ScenarioLog::capture(&sim))
}

/// The server expired alice's sync token (its change history was compacted): the reconnect
/// gets the full listing (three pages), converges, and the token it brings makes the next
/// reconnect a delta again.
pub async fn expired_sync_token_falls_back_to_the_full_listing<F: Backend>(
    factory: F,
) -> ScenarioResult {
    use crate::server::ServerStore;
    let mut sim = Sim::new(factory, 111);
    let (alice, _) = offline_while_a_few_chats_change(&mut sim).await?;
    let counter = sim.server().store().change_clock()?.counter;
    sim.server_mut().store_mut().raise_change_floor(counter)?;
    sim.heal(alice);
    sim.drive().await?;
    check(&sim).await?;
    let requests = sim.requests(alice);
    assert_eq!(requests.count(RequestKind::GetMaxSeqs), 3);
    assert_eq!(requests.count(RequestKind::Pull), 1);
    changes_arrived(&sim, alice).await?;

    sim.take_requests(alice);
    go_offline(&mut sim, alice).await?;
    sim.append_text("bob", "t077", "later")?;
    sim.heal(alice);
    sim.drive().await?;
    check(&sim).await?;
    let requests = sim.requests(alice);
    assert_eq!(requests.count(RequestKind::GetMaxSeqs), 1);
    assert_eq!(
        requests.pulled_conversations(),
        BTreeSet::from([cid("t077")])
    );
    Ok(ScenarioLog::capture(&sim))
}

/// Whether `output` writes a new sync token.
fn writes_a_token(output: &tidemark_engine::Output) -> bool {
    matches!(output, tidemark_engine::Output::Write(_, batch)
        if batch.ops.iter().any(|op| matches!(op, tidemark_engine::WriteOp::PutSyncToken(Some(_)))))
}

/// alice's app crashes just before the batch holding the reconnect's new sync token commits
/// (the batch of the deletion list's reply): the restarted engine still holds the old token,
/// asks the same delta again and converges; nothing is lost or announced twice.
pub async fn crash_before_the_sync_token_commits<F: Backend>(factory: F) -> ScenarioResult {
    let mut sim = Sim::new(factory, 112);
    let (alice, _) = offline_while_a_few_chats_change(&mut sim).await?;
    let old = sim.store(alice).load_snapshot().await?.sync_token;
    sim.crash_before(alice, writes_a_token);
    // One delta per process: the second asks since the same old token.
    reconnect_through_the_crash(&mut sim, alice).await?;
    assert_ne!(sim.store(alice).load_snapshot().await?.sync_token, old);
    Ok(ScenarioLog::capture(&sim))
}

/// Heals `alice`, whose crash is armed, and checks that the restarted process converged
/// after one listing per process.
async fn reconnect_through_the_crash<F: Backend>(
    sim: &mut Sim<F>,
    alice: usize,
) -> Result<(), super::ScenarioError> {
    sim.heal(alice);
    sim.drive().await?;
    check(sim).await?;
    assert_eq!(sim.process(alice), 1);
    assert_eq!(sim.requests(alice).count(RequestKind::GetMaxSeqs), 2);
    changes_arrived(sim, alice).await
}

/// alice's app crashes just after the batch holding the reconnect's new sync token committed,
/// before the pull it planned went out: the restarted engine's delta lists nothing, and the
/// pulls come from its own stored state (server max seqs above what it holds); it converges
/// and nothing is lost or announced twice.
pub async fn crash_after_the_sync_token_commits<F: Backend>(factory: F) -> ScenarioResult {
    let mut sim = Sim::new(factory, 113);
    let (alice, _) = offline_while_a_few_chats_change(&mut sim).await?;
    let mut committed = false;
    sim.crash_before(alice, move |o| {
        if committed {
            return true;
        }
        committed = writes_a_token(o);
        false
    });
    reconnect_through_the_crash(&mut sim, alice).await?;
    Ok(ScenarioLog::capture(&sim))
}
