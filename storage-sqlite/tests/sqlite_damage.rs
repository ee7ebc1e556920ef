//! Damaged stores (issue 9): a store that reports corruption stops taking writes, the
//! driver stops for good instead of restarting into it, and `recover` sets the files aside,
//! keeps the unsent messages and starts a fresh store that resyncs.

#![allow(
    clippy::unwrap_used,
    reason = "test helpers: a failed setup step is a failed test"
)]

mod support;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use support::{batch, cid, pending, sample_batch, sent, variant, Rng, TempDir};
use tidemark::storage::{MemoryStorage, OutboxEntry, Storage, WriteBatch, WriteOp};
use tidemark::testing::ManualRuntime;
use tidemark::transport::Transport;
use tidemark::{
    Client, ClientError, ClientMsgId, ContentKind, ConversationKind, DeviceId, EngineConfig, Event,
    EventStream, Message, StorageError, SyncState, Timestamp, UserId,
};
use tidemark_conformance::hooked::{ApplyHook, HookedStore};
use tidemark_conformance::loopback::LoopbackServer;
use tidemark_storage_sqlite::{recover, SqliteStorage};

const PAGE: usize = 4096;
const WAIT: Duration = Duration::from_secs(10);

/// `sample_batch` (with one unsent message and its outbox entry, `alpha`/`out-1`) plus 300
/// messages of 2 KiB, so the file has many pages.
fn big_batch() -> WriteBatch {
    let mut b = sample_batch();
    b.ops.push(WriteOp::PutConversation(support::conversation(
        "big", 1, 300,
    )));
    let msgs: Vec<Message> = (1..=300)
        .map(|s| {
            let mut m = sent("big", &format!("big-{s}"), s);
            m.content = vec![(s % 251) as u8; 2048];
            m
        })
        .collect();
    b.ops.push(WriteOp::PutMessages(msgs));
    b
}

fn out_1() -> OutboxEntry {
    OutboxEntry {
        conversation: cid("alpha"),
        client_msg_id: ClientMsgId::from("out-1"),
        kind: ContentKind::Text,
        content: b"body out-1".to_vec(),
        created_at: Timestamp(50),
        attempts: 2,
    }
}

/// A closed store at `path` holding [`big_batch`]; returns its bytes.
async fn write_store(path: &Path) -> Vec<u8> {
    let store = SqliteStorage::open(path).unwrap();
    store.apply(big_batch()).await.unwrap();
    drop(store);
    assert!(!sibling(path, "-wal").exists(), "closed cleanly");
    std::fs::read(path).unwrap()
}

fn sibling(path: &Path, suffix: &str) -> PathBuf {
    PathBuf::from(format!("{}{suffix}", path.display()))
}

fn random(n: usize, seed: u64) -> Vec<u8> {
    let mut rng = Rng::new(seed);
    (0..n).map(|_| rng.next_u64() as u8).collect()
}

fn with_last_page_random(bytes: &[u8]) -> Vec<u8> {
    let mut damaged = bytes.to_vec();
    let at = damaged.len() - PAGE;
    damaged[at..].copy_from_slice(&random(PAGE, 11));
    damaged
}

fn is_corrupt<T: std::fmt::Debug>(r: &Result<T, StorageError>) -> bool {
    matches!(r, Err(StorageError::Corrupt { .. }))
}

#[tokio::test]
async fn a_file_cut_short_by_one_byte_is_refused_at_open_and_left_alone() {
    let dir = TempDir::new("cut-one");
    let path = dir.file("store.db");
    let bytes = write_store(&path).await;
    let cut = &bytes[..bytes.len() - 1];
    std::fs::write(&path, cut).unwrap();

    let err = SqliteStorage::open(&path).unwrap_err();
    assert_eq!(variant(&err), "Corrupt", "{err}");
    assert!(err.to_string().contains("whole number"), "{err}");
    let err = SqliteStorage::open_read_only(&path).unwrap_err();
    assert_eq!(variant(&err), "Corrupt", "{err}");
    assert_eq!(std::fs::read(&path).unwrap(), cut);
}

#[tokio::test]
async fn a_damaged_last_page_is_found_before_the_first_write() {
    let dir = TempDir::new("last-page");
    let path = dir.file("store.db");
    let damaged = with_last_page_random(&write_store(&path).await);
    std::fs::write(&path, &damaged).unwrap();

    // SQLite opens it: the damage is in a page nothing at open reads.
    let store = SqliteStorage::open(&path).unwrap();
    // The first write waits for the open check, which finds the damage: nothing written.
    let write = store
        .apply(batch(vec![WriteOp::PutMessages(vec![pending(
            "alpha", "new-1", 99,
        )])]))
        .await;
    assert!(is_corrupt(&write), "{write:?}");
    assert!(store.damage().is_some());
    assert!(is_corrupt(&store.wait_for_open_check()));
    drop(store);
    assert_eq!(std::fs::read(&path).unwrap(), damaged, "the file changed");
    let wal = std::fs::metadata(sibling(&path, "-wal")).map_or(0, |m| m.len());
    assert_eq!(wal, 0, "frames were written to the log");
}

#[tokio::test]
async fn corruption_found_by_a_read_makes_every_clone_refuse_writes() {
    let dir = TempDir::new("read-damage");
    let path = dir.file("store.db");
    write_store(&path).await;
    // A value no write of ours produces, in a page SQLite itself finds sound.
    let conn = rusqlite::Connection::open(&path).unwrap();
    conn.execute(
        "UPDATE conversations SET held = 'not ranges' WHERE id = 'beta'",
        [],
    )
    .unwrap();
    drop(conn);

    let store = SqliteStorage::open(&path).unwrap();
    store.wait_for_open_check().unwrap();
    let clone = store.clone();
    let write = || batch(vec![WriteOp::PutMessages(vec![pending("alpha", "n", 99)])]);
    clone.apply(write()).await.unwrap();
    assert!(store.damage().is_none());

    let read = store.conversation(&cid("beta")).await;
    assert!(is_corrupt(&read), "{read:?}");
    let refused = clone.apply(write()).await;
    match refused {
        Err(StorageError::Corrupt { detail, .. }) => {
            assert!(detail.contains("writes refused"), "{detail}")
        }
        other => panic!("a write after damage: {other:?}"),
    }
    assert!(clone.damage().unwrap().contains("beta"));
    // Reads of sound rows still work.
    assert!(store.conversation(&cid("alpha")).await.unwrap().is_some());
}

#[tokio::test]
async fn recover_sets_the_store_aside_and_keeps_the_unsent_messages() {
    for (name, damage) in [
        (
            "cut",
            (|b: &[u8]| b[..b.len() - 1].to_vec()) as fn(&[u8]) -> Vec<u8>,
        ),
        ("last-page", with_last_page_random),
    ] {
        let dir = TempDir::new(&format!("recover-{name}"));
        let path = dir.file("store.db");
        let damaged = damage(&write_store(&path).await);
        std::fs::write(&path, &damaged).unwrap();

        let report = recover(&path).unwrap();
        assert_eq!(report.moved, vec![report.set_aside.clone()], "{name}");
        assert!(
            report
                .set_aside
                .file_name()
                .unwrap()
                .to_string_lossy()
                .starts_with("store.db.damaged-"),
            "{report:?}"
        );
        assert_eq!(std::fs::read(&report.set_aside).unwrap(), damaged, "{name}");
        assert_eq!(
            (report.outbox_salvaged, report.outbox_lost),
            (1, 0),
            "{name}: {report:?}"
        );
        assert_eq!(report.salvage_problem, None, "{name}");

        // The fresh store holds the unsent message and nothing else; it passes its check.
        let fresh = SqliteStorage::open(&path).unwrap();
        fresh.wait_for_open_check().unwrap();
        assert_eq!(fresh.outbox().await.unwrap(), vec![out_1()]);
        let row = fresh
            .message_by_client_id(
                &cid("alpha"),
                &UserId::from("me"),
                &ClientMsgId::from("out-1"),
            )
            .await
            .unwrap();
        assert_eq!(row, Some(pending("alpha", "out-1", 50)), "{name}");
        assert!(fresh.conversations_page(None, 10).await.unwrap().is_empty());
        fresh.check_integrity().await.unwrap();
    }
}

#[tokio::test]
async fn recover_reports_what_it_can_from_garbage_and_never_panics() {
    let dir = TempDir::new("recover-garbage");
    let valid = dir.file("valid.db");
    let bytes = write_store(&valid).await;
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("random", random(8192, 5)),
        ("half", bytes[..bytes.len() / 2].to_vec()),
        ("header-only", bytes[..PAGE + 10].to_vec()),
        ("empty", Vec::new()),
    ];
    for (name, content) in cases {
        let path = dir.file(&format!("{name}.db"));
        std::fs::write(&path, &content).unwrap();
        let report = recover(&path).unwrap_or_else(|e| panic!("{name}: {e:?}"));
        assert_eq!(std::fs::read(&report.set_aside).unwrap(), content, "{name}");
        assert!(report.outbox_salvaged <= 1, "{name}: {report:?}");
        if name != "half" {
            assert_eq!(report.outbox_salvaged, 0, "{name}: {report:?}");
            assert!(report.salvage_problem.is_some(), "{name}: {report:?}");
        }
        let fresh = SqliteStorage::open(&path).unwrap();
        fresh.wait_for_open_check().unwrap();
        fresh.check_integrity().await.unwrap();
    }
    let missing = recover(dir.file("missing.db")).unwrap_err();
    assert_eq!(variant(&missing), "Backend");
}

#[tokio::test]
async fn recover_moves_the_log_with_the_store() {
    let dir = TempDir::new("recover-wal");
    let live = dir.file("live.db");
    let store = SqliteStorage::open(&live).unwrap();
    store.apply(big_batch()).await.unwrap();
    // A copy taken while the store is open is what a crash leaves: the outbox is in the
    // log only.
    let crashed = dir.file("crashed.db");
    for suffix in ["", "-wal", "-shm"] {
        std::fs::copy(sibling(&live, suffix), sibling(&crashed, suffix)).unwrap();
    }
    drop(store);
    assert!(std::fs::metadata(sibling(&crashed, "-wal")).unwrap().len() > 0);

    let report = recover(&crashed).unwrap();
    assert_eq!(
        report.moved,
        vec![
            report.set_aside.clone(),
            sibling(&report.set_aside, "-wal"),
            sibling(&report.set_aside, "-shm")
        ]
    );
    assert_eq!(report.outbox_salvaged, 1, "{report:?}");
    assert!(
        !sibling(&crashed, "-wal").exists(),
        "an old log beside the fresh store"
    );
    let fresh = SqliteStorage::open(&crashed).unwrap();
    assert_eq!(fresh.outbox().await.unwrap(), vec![out_1()]);
}

// ----- the driver -----

/// Fails every `apply` with `Corrupt` once armed; counts the attempts.
#[derive(Clone, Default)]
struct CorruptWhenArmed {
    armed: Arc<AtomicBool>,
    applies: Arc<AtomicUsize>,
}

impl ApplyHook for CorruptWhenArmed {
    fn before_apply(&self, _batch: &mut WriteBatch) -> Result<(), StorageError> {
        self.applies.fetch_add(1, Ordering::SeqCst);
        if self.armed.load(Ordering::SeqCst) {
            return Err(StorageError::Corrupt {
                detail: "injected".into(),
                source: None,
            });
        }
        Ok(())
    }
}

/// A server on the shared manual clock, with alice and bob in `ab`.
fn server(clock: &ManualRuntime) -> LoopbackServer<ManualRuntime> {
    let server = LoopbackServer::new(clock.clone());
    for u in ["alice", "bob"] {
        server.create_user(&UserId::from(u)).unwrap();
    }
    server
        .create_conversation(
            &cid("ab"),
            ConversationKind::Direct,
            &[UserId::from("alice"), UserId::from("bob")],
        )
        .unwrap();
    server
}

fn config() -> EngineConfig {
    let mut config = EngineConfig::new(UserId::from("alice"), DeviceId::from("phone"));
    config.reconnect_min_ms = 10;
    config.reconnect_max_ms = 40;
    config.heartbeat_interval_ms = 50;
    config
}

async fn next_matching(events: &mut EventStream, what: impl Fn(&Event) -> bool) -> Event {
    let seen = std::sync::Mutex::new(Vec::new());
    let found = async {
        loop {
            let e = events.next().await.expect("the stream ended");
            if what(&e) {
                return e;
            }
            seen.lock().unwrap().push(e);
        }
    };
    match futures::future::select(
        Box::pin(found),
        Box::pin(async {
            // In steps: a dropped wait leaves at most one step running, which the runtime's
            // shutdown waits for.
            for _ in 0..100 {
                sleep(WAIT / 100).await;
            }
        }),
    )
    .await
    {
        futures::future::Either::Left((e, _)) => e,
        futures::future::Either::Right(_) => {
            panic!("no such event in time; saw {:?}", seen.lock().unwrap())
        }
    }
}

/// Real time passing (the clients run on a manual clock, which this does not move).
async fn sleep(d: Duration) {
    tokio::task::spawn_blocking(move || std::thread::sleep(d))
        .await
        .unwrap();
}

#[tokio::test]
async fn a_client_stops_for_good_when_its_store_reports_corruption() {
    let clock = ManualRuntime::new(Timestamp(1_000));
    let server = server(&clock);
    let hook = CorruptWhenArmed::default();
    let storage = HookedStore::new(MemoryStorage::new(), hook.clone());
    let transport = server.transport(UserId::from("alice"), DeviceId::from("phone"));
    let (handle, mut events, task) = spawn_client(storage, transport, clock.clone())
        .await
        .unwrap();
    next_matching(&mut events, |e| matches!(e, Event::SyncFinished)).await;
    handle
        .send_message(&cid("ab"), ContentKind::Text, b"before".to_vec())
        .await
        .unwrap();
    next_matching(&mut events, |e| matches!(e, Event::MessageSent { .. })).await;

    hook.armed.store(true, Ordering::SeqCst);
    let failed = handle
        .send_message(&cid("ab"), ContentKind::Text, b"after".to_vec())
        .await;
    // The send's own write fails (or, if a write of the engine's came first, the client has
    // already stopped): either way a typed refusal.
    assert!(
        matches!(
            failed,
            Err(ClientError::Storage(StorageError::Corrupt { .. })
                | ClientError::StoreUnusable { damaged: true, .. })
        ),
        "{failed:?}"
    );
    let told = next_matching(&mut events, |e| matches!(e, Event::StoreUnusable { .. })).await;
    assert!(
        matches!(told, Event::StoreUnusable { damaged: true, .. }),
        "{told:?}"
    );

    // No restart: well past the restart delay, nothing more is written or connected, and
    // every command is refused with the reason.
    let applies = hook.applies.load(Ordering::SeqCst);
    let connects = server.connect_attempts();
    // Far past every restart delay on the client's clock, and real time for it to act.
    clock.advance(600_000);
    sleep(Duration::from_millis(300)).await;
    assert_eq!(
        hook.applies.load(Ordering::SeqCst),
        applies,
        "written again"
    );
    assert_eq!(server.connect_attempts(), connects, "reconnected");
    assert_eq!(server.connection_count(), 0, "the connection stays open");
    let refused = handle.mark_read(&cid("ab"), tidemark::Seq(1)).await;
    assert!(
        matches!(
            refused,
            Err(ClientError::StoreUnusable { damaged: true, .. })
        ),
        "{refused:?}"
    );
    let messages = server.messages(&cid("ab")).unwrap();
    assert_eq!(messages.len(), 1, "the failed send reached the server");

    assert_eq!(
        handle.sync_state(),
        SyncState::StoreUnusable { damaged: true }
    );
    handle.shutdown().await;
    task.await.unwrap();
}

/// Starts a client and spawns its driver: the client, its events from the start, the task.
async fn spawn_client(
    storage: impl Storage + 'static,
    transport: impl Transport + 'static,
    clock: ManualRuntime,
) -> Result<(Client, EventStream, tokio::task::JoinHandle<()>), StorageError> {
    let (client, driver) = Client::start(config(), storage, transport, clock).await?;
    let events = client.events();
    Ok((client, events, tokio::spawn(driver)))
}

#[tokio::test]
async fn a_client_on_a_damaged_file_writes_nothing_and_a_recovered_one_resends() {
    let dir = TempDir::new("client-damaged");
    let path = dir.file("alice.db");
    let clock = ManualRuntime::new(Timestamp(1_000));
    let server = server(&clock);

    // Enough history that the synced file grows past the pages its schema freed (damage to
    // a free page is no damage: nothing reads it).
    for i in 0..200 {
        server
            .append_as(
                &UserId::from("bob"),
                &cid("ab"),
                ContentKind::Text,
                format!("{i:>1000}").into_bytes(),
            )
            .unwrap();
    }
    // Synced once, then a send made offline: only the device has it.
    let storage = SqliteStorage::open(&path).unwrap();
    let transport = server.transport(UserId::from("alice"), DeviceId::from("phone"));
    let (handle, mut events, task) = spawn_client(storage, transport, clock.clone())
        .await
        .unwrap();
    next_matching(&mut events, |e| matches!(e, Event::SyncFinished)).await;
    server.set_down(true);
    server.disconnect_all();
    next_matching(&mut events, |e| {
        matches!(
            e,
            Event::ConnectionChanged {
                state: tidemark::ConnectionState::Disconnected
            }
        )
    })
    .await;
    let id = handle
        .send_message(&cid("ab"), ContentKind::Text, b"kept".to_vec())
        .await
        .unwrap();
    handle.shutdown().await;
    task.await.unwrap();
    // The client reads from the store after a shutdown too: dropped, it closes the file.
    drop(handle);

    // The file is cut short; a client on it fails to open or is stopped before writing.
    let bytes = std::fs::read(&path).unwrap();
    let cut = bytes[..bytes.len() - 1].to_vec();
    std::fs::write(&path, &cut).unwrap();
    assert!(is_corrupt(&SqliteStorage::open(&path)));

    // The last page damaged instead: the store opens, the client starts, syncs, and its
    // first write is refused; it stops for good and the file is unchanged.
    let damaged = with_last_page_random(&bytes);
    std::fs::write(&path, &damaged).unwrap();
    server.set_down(false);
    server
        .append_as(
            &UserId::from("bob"),
            &cid("ab"),
            ContentKind::Text,
            b"hi".to_vec(),
        )
        .unwrap();
    let storage = SqliteStorage::open(&path).unwrap();
    let transport = server.transport(UserId::from("alice"), DeviceId::from("phone"));
    if let Ok((handle, mut events, task)) = spawn_client(storage, transport, clock.clone()).await {
        next_matching(&mut events, |e| matches!(e, Event::StoreUnusable { .. })).await;
        handle.shutdown().await;
        task.await.unwrap();
    }
    assert_eq!(
        std::fs::read(&path).unwrap(),
        damaged,
        "the damaged file changed"
    );

    // (Its outbox may have gone on the wire: sending reads, it does not write.)

    // Recovered, a new client sends the salvaged message; the server holds it once.
    std::fs::write(&path, &cut).unwrap();
    let report = recover(&path).unwrap();
    assert_eq!(report.outbox_salvaged, 1, "{report:?}");
    let storage = SqliteStorage::open(&path).unwrap();
    let transport = server.transport(UserId::from("alice"), DeviceId::from("phone"));
    let (handle, mut events, task) = spawn_client(storage.clone(), transport, clock.clone())
        .await
        .unwrap();
    let sent = next_matching(&mut events, |e| matches!(e, Event::MessageSent { .. })).await;
    assert!(
        matches!(&sent, Event::MessageSent { client_msg_id, .. } if *client_msg_id == id),
        "{sent:?}"
    );
    next_matching(&mut events, |e| matches!(e, Event::SyncFinished)).await;
    handle.shutdown().await;
    task.await.unwrap();
    let on_server: Vec<Vec<u8>> = server
        .messages(&cid("ab"))
        .unwrap()
        .into_iter()
        .map(|m| m.content)
        .collect();
    assert_eq!(on_server.len(), 202);
    assert_eq!(&on_server[200..], [b"hi".to_vec(), b"kept".to_vec()]);
    storage.check_integrity().await.unwrap();
}
