//! Initial sync: a fresh device pulls every message of its account from the reference server
//! over a loopback WebSocket into an SQLite store (`SyncPolicy::Full`), from start to
//! `SyncFinished`.
//!
//! Baseline, in the same run: a plain batched rusqlite insert of the same rows (one prepared
//! `INSERT` per row, 2,000 rows per transaction, a `UNIQUE (conversation, seq)` index, WAL,
//! `synchronous=NORMAL`, rows in conversation order, its fastest order) into a fresh file: what storing these messages costs with no
//! protocol, no network and no sync state. The design's target: Tidemark at no less than
//! half the baseline's rate (ratio >= 0.5).
//!
//! Defaults: 1,000 conversations, 1,000,000 messages (`INITIAL_SYNC_CONVERSATIONS`,
//! `INITIAL_SYNC_MESSAGES`). The server's database is built once under `target/bench-data/`
//! (group commits of 5,000 appends) and reused; each run copies it, so the runs start alike.
//! Run: `cargo bench -p tidemark-server --features net --bench initial_sync`.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use futures::StreamExt;
use tidemark::TokioRuntime;
use tidemark_engine::{
    ClientMsgId, ContentKind, ConversationId, ConversationKind, DeviceId, EngineConfig, Event,
    Storage, SyncPolicy, Timestamp, UserId,
};
use tidemark_server::net::{ops, Server, ServerOptions};
use tidemark_server::{NewMessage, ServerStore, SqliteServerStore};
use tidemark_storage_sqlite::SqliteStorage;
use tidemark_transport::native::WsTransport;

fn env_or(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn conversation(c: u64) -> ConversationId {
    ConversationId(format!("conv{c:05}"))
}

/// The i-th message: senders take turns; the text is ordinary chat length.
fn new_message(i: u64, conversations: u64) -> NewMessage {
    NewMessage {
        conversation: conversation(i % conversations),
        sender: UserId(format!("friend{}", i % 8)),
        client_msg_id: ClientMsgId(format!("friend{}:{i:08}", i % 8)),
        kind: ContentKind::Text,
        content: format!("message {i}: an ordinary line of chat, about sixty bytes long")
            .into_bytes(),
        created_at: Timestamp(1_700_000_000_000 + i),
    }
}

/// Builds the server's database unless a complete one is there.
fn build_server_db(path: &Path, conversations: u64, messages: u64) {
    let done = path.with_extension("complete");
    if done.exists() && path.exists() {
        return;
    }
    let _ = std::fs::remove_file(path);
    let started = Instant::now();
    let mut store = SqliteServerStore::open(path).expect("server store");
    store.create_user(&UserId::from("alice")).expect("alice");
    for f in 0..8 {
        store
            .create_user(&UserId(format!("friend{f}")))
            .expect("friend");
    }
    for c in 0..conversations {
        store
            .create_conversation(
                &conversation(c),
                ConversationKind::Group,
                &[
                    UserId::from("alice"),
                    UserId(format!("friend{}", c % 8)),
                    UserId(format!("friend{}", (c + 1) % 8)),
                    UserId(format!("friend{}", (c + 2) % 8)),
                    UserId(format!("friend{}", (c + 3) % 8)),
                    UserId(format!("friend{}", (c + 4) % 8)),
                    UserId(format!("friend{}", (c + 5) % 8)),
                    UserId(format!("friend{}", (c + 6) % 8)),
                    UserId(format!("friend{}", (c + 7) % 8)),
                ],
            )
            .expect("conversation");
    }
    for chunk_start in (0..messages).step_by(5_000) {
        store.begin_group().expect("group");
        for i in chunk_start..(chunk_start + 5_000).min(messages) {
            store
                .append(
                    new_message(i, conversations),
                    Timestamp(1_700_000_000_000 + i),
                )
                .expect("append");
        }
        store.commit_group().expect("commit");
    }
    drop(store);
    std::fs::write(&done, b"").expect("marker");
    eprintln!(
        "built the server database ({messages} messages) in {:.1} s",
        started.elapsed().as_secs_f64()
    );
}

/// Tidemark: server up, a fresh device syncs everything; returns the time to `SyncFinished`.
async fn tidemark_sync(server_db: &Path, dir: &Path, messages: u64) -> Duration {
    let copy = dir.join("server.db");
    std::fs::copy(server_db, &copy).expect("copy server db");
    let mut store = SqliteServerStore::open(&copy).expect("server store");
    let token = ops::token(&mut store, &UserId::from("alice"), None).expect("token");
    let options = ServerOptions {
        rate_per_sec: 0,
        ..ServerOptions::default()
    };
    let server = Server::start(store, options).await.expect("server");

    let storage = SqliteStorage::open(dir.join("alice.db")).expect("client store");
    let mut config = EngineConfig::new(UserId::from("alice"), DeviceId::from("bench"));
    config.policy = SyncPolicy::Full;
    config.seed = 7;
    let transport = WsTransport::new(
        server.url(),
        UserId::from("alice"),
        DeviceId::from("bench"),
        token,
    );
    let started = Instant::now();
    let (handle, driver) =
        tidemark::Client::start(config, storage.clone(), transport, TokioRuntime)
            .await
            .expect("client");
    let mut events = handle.events();
    let task = tokio::spawn(driver);
    while let Some(event) = events.next().await {
        if matches!(event, Event::SyncFinished) {
            break;
        }
    }
    let took = started.elapsed();
    handle.shutdown().await;
    let _ = task.await;

    // The run counts only if everything arrived.
    let mut held = 0;
    for conv in storage
        .load_snapshot()
        .await
        .expect("snapshot")
        .conversations
    {
        held += conv.held.count();
    }
    assert_eq!(held, messages, "the device holds every message");
    let _ = server.shutdown().await;
    took
}

/// The baseline: the same rows, batched plain inserts.
fn baseline_insert(dir: &Path, conversations: u64, messages: u64) -> Duration {
    // In conversation order, seqs ascending: the order a pull-based sync receives them, and
    // the baseline's best case (the unique index is appended to, not scattered into).
    let mut order: Vec<u64> = (0..messages).collect();
    order.sort_by_key(|i| (i % conversations, *i));
    let rows: Vec<NewMessage> = order
        .into_iter()
        .map(|i| new_message(i, conversations))
        .collect();
    let started = Instant::now();
    let mut conn = rusqlite::Connection::open(dir.join("baseline.db")).expect("open");
    conn.execute_batch(
        "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;
         CREATE TABLE messages (
             id INTEGER PRIMARY KEY, conversation TEXT NOT NULL, seq INTEGER NOT NULL,
             client_msg_id TEXT NOT NULL, sender TEXT NOT NULL, kind TEXT NOT NULL,
             content BLOB NOT NULL, created_at INTEGER NOT NULL, server_time INTEGER NOT NULL,
             UNIQUE (conversation, seq));",
    )
    .expect("schema");
    let mut seqs = vec![0i64; conversations as usize];
    for chunk in rows.chunks(2_000) {
        let tx = conn.transaction().expect("tx");
        {
            let mut insert = tx
                .prepare_cached(
                    "INSERT INTO messages (conversation, seq, client_msg_id, sender, kind,
                     content, created_at, server_time) VALUES (?1, ?2, ?3, ?4, 'text', ?5, ?6, ?6)",
                )
                .expect("prepare");
            for (offset, row) in chunk.iter().enumerate() {
                let c = (row.created_at.0 - 1_700_000_000_000) % conversations;
                seqs[c as usize] += 1;
                insert
                    .execute(rusqlite::params![
                        row.conversation.0,
                        seqs[c as usize],
                        row.client_msg_id.0,
                        row.sender.0,
                        row.content,
                        (row.created_at.0 + offset as u64) as i64,
                    ])
                    .expect("insert");
            }
        }
        tx.commit().expect("commit");
    }
    started.elapsed()
}

fn main() {
    let conversations = env_or("INITIAL_SYNC_CONVERSATIONS", 1_000);
    let messages = env_or("INITIAL_SYNC_MESSAGES", 1_000_000);
    let data = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/bench-data");
    std::fs::create_dir_all(&data).expect("bench dir");
    let server_db = data.join(format!("initial_sync-{conversations}-{messages}.server.db"));
    build_server_db(&server_db, conversations, messages);

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let tidemark_dir = tempfile::tempdir().expect("tempdir");
    let tidemark = runtime.block_on(tidemark_sync(&server_db, tidemark_dir.path(), messages));
    let baseline_dir = tempfile::tempdir().expect("tempdir");
    let baseline = baseline_insert(baseline_dir.path(), conversations, messages);

    let rate = |d: Duration| messages as f64 / d.as_secs_f64();
    println!("initial sync, {messages} messages over {conversations} conversations:");
    println!(
        "  tidemark (server -> loopback WebSocket -> engine -> SQLite): {:.2} s, {:.0} msg/s",
        tidemark.as_secs_f64(),
        rate(tidemark)
    );
    println!(
        "  baseline (plain batched rusqlite insert of the same rows):   {:.2} s, {:.0} msg/s",
        baseline.as_secs_f64(),
        rate(baseline)
    );
    println!(
        "  ratio (tidemark rate / baseline rate): {:.2} (target >= 0.5)",
        rate(tidemark) / rate(baseline)
    );
}
