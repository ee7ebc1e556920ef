//! Unit tests of the harness pieces that do not need a working engine.

use tidemark_engine::memory::MemoryStorage;
use tidemark_engine::{
    ConversationKind, Seq, SeqRanges, Storage, SyncPolicy, Timestamp, WriteBatch,
};

use super::*;
use crate::SharedBackend;

#[test]
fn rng_is_seeded_and_bounded() {
    let a: Vec<u64> = {
        let mut r = SimRng::new(42);
        (0..8).map(|_| r.next_u64()).collect()
    };
    let b: Vec<u64> = {
        let mut r = SimRng::new(42);
        (0..8).map(|_| r.next_u64()).collect()
    };
    assert_eq!(a, b);
    assert_ne!(a, {
        let mut r = SimRng::new(43);
        (0..8).map(|_| r.next_u64()).collect::<Vec<_>>()
    });
    let mut r = SimRng::new(1);
    assert!((0..10_000).all(|_| r.below(7) < 7));
    assert_eq!(r.below(0), 0);
    // Certain outcomes draw nothing.
    let before = r.clone();
    assert!(!r.chance(0.0));
    assert!(r.chance(1.0));
    assert_eq!(r, before);
    let hits = (0..10_000).filter(|_| r.chance(0.25)).count();
    assert!((2_200..2_800).contains(&hits), "{hits}");
}

/// Sends 1..=n over `link` one millisecond apart and returns the delivery order and times.
fn run_net(seed: u64, link: LinkConfig, n: u64) -> Vec<(Timestamp, u64)> {
    let mut rng = SimRng::new(seed);
    let mut net = Netem::new();
    for i in 1..=n {
        net.send(Timestamp(i), &mut rng, &link, i);
    }
    std::iter::from_fn(|| net.pop_next()).collect()
}

#[test]
fn netem_is_deterministic_for_a_seed() {
    let link = LinkConfig::new(20)
        .with_jitter(50)
        .with_loss(0.2)
        .with_duplicate(0.1);
    let a = run_net(9, link, 500);
    assert_eq!(a, run_net(9, link, 500));
    assert_ne!(a, run_net(10, link, 500));
    // Delivery times never go backwards, and every frame took latency..=latency+jitter.
    assert!(a.windows(2).all(|w| w[0].0 <= w[1].0));
    assert!(a.iter().all(|(t, i)| (20..=70).contains(&(t.0 - i))));
}

#[test]
fn netem_faults_have_their_rates() {
    let n = 10_000;
    let lossy = run_net(1, LinkConfig::new(5).with_loss(0.3), n);
    let lost = n as usize - lossy.len();
    assert!((2_700..3_300).contains(&lost), "{lost}");

    let dup = run_net(2, LinkConfig::new(5).with_duplicate(0.1), n);
    let extra = dup.len() - n as usize;
    assert!((800..1_200).contains(&extra), "{extra}");

    // No jitter: in order, exactly one latency later.
    let plain = run_net(3, LinkConfig::new(5), 100);
    assert!(plain.iter().all(|(t, i)| t.0 == i + 5));
    assert!(plain.windows(2).all(|w| w[0].1 < w[1].1));

    // Jitter reorders.
    let jittery = run_net(4, LinkConfig::new(5).with_jitter(30), 100);
    assert!(jittery.windows(2).any(|w| w[0].1 > w[1].1));
    let mut ids: Vec<u64> = jittery.iter().map(|(_, i)| *i).collect();
    ids.sort_unstable();
    assert_eq!(ids, (1..=100).collect::<Vec<_>>());
}

#[test]
fn netem_schedule_and_pop_due() {
    let mut net = Netem::new();
    net.schedule(Timestamp(10), "b");
    net.schedule(Timestamp(5), "a");
    net.schedule(Timestamp(10), "c");
    assert_eq!(net.next_time(), Some(Timestamp(5)));
    assert_eq!(net.pop_due(Timestamp(4)), None);
    assert_eq!(net.pop_due(Timestamp(5)), Some((Timestamp(5), "a")));
    net.retain(|s| *s != "b");
    assert_eq!(net.len(), 1);
    assert_eq!(net.pop_due(Timestamp(100)), Some((Timestamp(10), "c")));
    assert!(net.is_empty());
}

#[tokio::test]
async fn shared_factory_reopens_the_same_store() {
    let factory = SharedBackend::<MemoryStorage>::new();
    let a = factory.open(0).await.unwrap();
    let b = factory.open(0).await.unwrap();
    let other = factory.open(1).await.unwrap();
    a.apply(WriteBatch::default()).await.unwrap();
    let count = |s: &MemoryStorage| s.applied_batches();
    assert_eq!((count(&a), count(&b), count(&other)), (1, 1, 0));
}

#[tokio::test]
async fn harness_sets_up_devices_and_reports_state() {
    let mut sim = Sim::new(SharedBackend::<MemoryStorage>::new(), 5);
    sim.create_conversation("g", ConversationKind::Group, ["alice", "bob"])
        .unwrap();
    let alice = sim.add_device("alice", "phone", |_| {}).await.unwrap();
    let bob = sim
        .add_device("bob", "laptop", |c| c.connect_on_start = false)
        .await
        .unwrap();
    assert_eq!((alice, bob, sim.device_count()), (0, 1, 2));
    assert_eq!(sim.device_user(bob).as_str(), "bob");
    // Distinct engine seeds per device, whatever the engine does with them.
    let seeds: Vec<u64> = (0..2)
        .map(|d| sim.engine(d).unwrap().config().seed)
        .collect();
    assert_ne!(seeds[0], seeds[1]);
    assert!(!sim.engine(bob).unwrap().config().connect_on_start);
    // Server-side admin actions work without any engine.
    let m = sim.append_text("bob", "g", "hi").unwrap();
    assert_eq!(m.seq, Seq(1));
    assert_eq!(
        crate::invariants::expected_unread(sim.server().store(), &"alice".into(), &"g".into())
            .unwrap(),
        1
    );
    assert_eq!(
        crate::invariants::expected_unread(sim.server().store(), &"bob".into(), &"g".into())
            .unwrap(),
        0
    );
    sim.partition(bob);
    assert!(sim.is_partitioned(bob));
    sim.heal(bob);
    // A crash restarts the device as a new process.
    sim.crash(bob).await.unwrap();
    assert_eq!(sim.process(bob), 1);
    assert_ne!(sim.engine(bob).unwrap().config().seed, seeds[1]);
    sim.drive_for(1_000).await.unwrap();
    assert!(sim.now() >= SimConfig::default().start.plus_millis(1_000));
}

#[test]
fn expected_unread_follows_the_servers_truth() {
    use crate::server::{MemoryServerStore, ServerConfig, ServerCore, ServerStore};
    use tidemark_engine::ContentKind;
    let mut server = ServerCore::new(MemoryServerStore::new(), ServerConfig::default());
    for u in ["alice", "bob"] {
        server.create_user(&u.into()).unwrap();
    }
    let g: ConversationId = "g".into();
    server
        .create_conversation(&g, ConversationKind::Group, &["alice".into(), "bob".into()])
        .unwrap();
    let t = Timestamp(1);
    let bob = "bob".into();
    let alice = "alice".into();
    for _ in 0..5 {
        server
            .append_as(t, &bob, &g, ContentKind::Text, vec![])
            .unwrap(); // 1..=5
    }
    server
        .append_as(t, &alice, &g, ContentKind::Text, vec![])
        .unwrap(); // 6, own: read to 6
    server
        .append_as(t, &bob, &g, ContentKind::Text, vec![])
        .unwrap(); // 7
    server
        .append_as(t, &bob, &g, ContentKind::Edit { target: Seq(7) }, vec![])
        .unwrap(); // 8
    server
        .append_as(t, &bob, &g, ContentKind::Text, vec![])
        .unwrap(); // 9
    server
        .append_as(t, &alice, &g, ContentKind::Text, vec![])
        .unwrap(); // 10, read to 10
    server
        .append_as(t, &bob, &g, ContentKind::Text, vec![])
        .unwrap(); // 11
    server
        .append_as(t, &bob, &g, ContentKind::Text, vec![])
        .unwrap(); // 12
    let unread = |s: &ServerCore<MemoryServerStore>| {
        crate::invariants::expected_unread(s.store(), &alice, &g).unwrap()
    };
    assert_eq!(unread(&server), 2);
    server.store_mut().set_read_seq(&alice, &g, Seq(0)).unwrap();
    assert_eq!(unread(&server), 2, "the server keeps the maximum read seq");
    server
        .delete_seqs(&g, &SeqRanges::from_iter([Seq(12)]))
        .unwrap();
    assert_eq!(unread(&server), 1);
    server.set_min_seq(&g, Seq(12)).unwrap();
    assert_eq!(unread(&server), 0);
}

/// A simulation whose batches commit up to 30 ms after they are emitted (beyond a 20 ms round
/// trip), with bob's 300 messages in `g`, and alice's device (full sync, pulls of 50) added
/// to sync them. Returns the simulation and alice's device.
async fn late_commits() -> (Sim<SharedBackend<MemoryStorage>>, usize) {
    let config = SimConfig {
        seed: 11,
        commit_latency_ms: Some(30),
        ..SimConfig::default()
    };
    let mut sim = Sim::with_config(SharedBackend::<MemoryStorage>::new(), config);
    sim.create_conversation("g", ConversationKind::Group, ["alice", "bob"])
        .unwrap();
    for i in 0..300 {
        sim.append_text("bob", "g", &format!("m{i}")).unwrap();
    }
    let alice = sim
        .add_device("alice", "phone", |c| {
            c.policy = SyncPolicy::Full;
            c.pull_max_messages = 50;
        })
        .await
        .unwrap();
    (sim, alice)
}

#[tokio::test]
async fn with_late_commits_the_engine_goes_on_while_its_batches_are_in_flight() {
    let (mut sim, alice) = late_commits().await;
    let mut most_in_flight = 0;
    for _ in 0..10_000 {
        if sim.is_quiescent() {
            break;
        }
        assert!(sim.step().await.unwrap(), "{}", sim.describe_pending());
        most_in_flight = most_in_flight.max(sim.devices[alice].uncommitted.len());
    }
    assert!(sim.is_quiescent(), "{}", sim.describe_pending());
    assert!(
        most_in_flight >= 2,
        "at most {most_in_flight} batch in flight"
    );
    sim.check_invariants().await.unwrap();
}

#[tokio::test]
async fn a_crash_loses_the_batches_not_yet_committed_and_the_device_resyncs() {
    let (mut sim, alice) = late_commits().await;
    for _ in 0..10_000 {
        if sim.devices[alice].uncommitted.len() >= 2 {
            break;
        }
        assert!(sim.step().await.unwrap(), "{}", sim.describe_pending());
    }
    assert!(sim.devices[alice].uncommitted.len() >= 2);
    let committed = sim.store(alice).applied_batches();
    sim.crash(alice).await.unwrap();
    assert!(sim.devices[alice].uncommitted.is_empty());
    sim.drive().await.unwrap();
    assert!(sim.store(alice).applied_batches() > committed);
    sim.check_invariants().await.unwrap();
}
