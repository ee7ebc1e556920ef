//! What the server benches share: the initial-sync account's messages, the server database
//! built from them, a client run to `SyncFinished`, the baseline insert, and the process's
//! CPU and memory figures.

#![allow(
    dead_code,
    reason = "each bench uses its own part of the shared helpers"
)]

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use futures::StreamExt;
use tidemark::TokioRuntime;
use tidemark_engine::{
    ClientMsgId, ContentKind, ConversationId, ConversationKind, DeviceId, EngineConfig, Event,
    Storage, SyncPolicy, Timestamp, Transport, UserId,
};
use tidemark_server::net::{ops, Server, ServerHandle, ServerOptions};
use tidemark_server::{NewMessage, ServerStore, SqliteServerStore};
use tidemark_storage_sqlite::SqliteStorage;
use tidemark_transport::native::WsTransport;

/// A positive number from the environment, or `default`.
pub fn env_or(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// The c-th conversation.
pub fn conversation(c: u64) -> ConversationId {
    ConversationId(format!("conv{c:05}"))
}

/// The i-th message: senders take turns; the text is ordinary chat length.
pub fn new_message(i: u64, conversations: u64) -> NewMessage {
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

/// Builds the server's database (alice, eight friends, `conversations` groups of all nine,
/// `messages` messages) unless a complete one is there.
pub fn build_server_db(path: &Path, conversations: u64, messages: u64) {
    build_once(path, |store| {
        store.create_user(&UserId::from("alice")).expect("alice");
        for f in 0..8 {
            store
                .create_user(&UserId(format!("friend{f}")))
                .expect("friend");
        }
        for c in 0..conversations {
            let mut members = vec![UserId::from("alice")];
            members.extend((0..8).map(|k| UserId(format!("friend{}", (c + k) % 8))));
            store
                .create_conversation(&conversation(c), ConversationKind::Group, &members)
                .expect("conversation");
        }
        append_all(store, messages, |i| new_message(i, conversations));
    });
}

/// Builds a server database at `path` with `fill` unless a complete one is there (a marker
/// file beside it says so, holding the schema version it was built at; a build cut short, or
/// made by a build with an older schema, is started again).
pub fn build_once(path: &Path, fill: impl FnOnce(&mut SqliteServerStore)) {
    let done = path.with_extension("complete");
    // The marker holds the schema version it was built at: a database from an older build
    // is built again rather than migrated in every run's copy.
    let version = tidemark_server::SERVER_SCHEMA_VERSION.to_string();
    if path.exists() && std::fs::read_to_string(&done).is_ok_and(|v| v == version) {
        return;
    }
    let _ = std::fs::remove_file(path);
    let started = Instant::now();
    let mut store = SqliteServerStore::open(path).expect("server store");
    fill(&mut store);
    drop(store);
    std::fs::write(&done, version).expect("marker");
    eprintln!(
        "built {} in {:.1} s",
        path.display(),
        started.elapsed().as_secs_f64()
    );
}

/// Appends messages `0..messages` made by `make` (message `i` at server time
/// 1_700_000_000_000 + i), in group commits of 5,000.
pub fn append_all(store: &mut SqliteServerStore, messages: u64, make: impl Fn(u64) -> NewMessage) {
    for chunk_start in (0..messages).step_by(5_000) {
        store.begin_group().expect("group");
        for i in chunk_start..(chunk_start + 5_000).min(messages) {
            store
                .append(make(i), Timestamp(1_700_000_000_000 + i))
                .expect("append");
        }
        store.commit_group().expect("commit");
    }
}

/// `target/bench-data/`, where the benches keep the databases they build once.
pub fn bench_data() -> PathBuf {
    let data = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/bench-data");
    std::fs::create_dir_all(&data).expect("bench dir");
    data
}

/// The multi-threaded tokio runtime the benches run servers and clients on.
pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime")
}

/// What the baseline insert took: wall time, and the CPU time of the inserting thread.
pub struct BaselineCost {
    /// Wall time of the inserts and commits.
    pub wall: Duration,
    /// CPU time of the same.
    pub cpu: Duration,
}

/// The baseline: the same rows, batched plain inserts (one prepared `INSERT` per row, 2,000
/// rows per transaction, a `UNIQUE (conversation, seq)` index, WAL, `synchronous=NORMAL`)
/// into a fresh file. The rows are made before the clock starts.
pub fn baseline_insert(dir: &Path, conversations: u64, messages: u64) -> BaselineCost {
    let rows = numbered((0..messages).map(|i| new_message(i, conversations)));
    insert_rows(dir, &rows, false)
}

/// `messages` in conversation order with their seqs (1, 2, ... per conversation, in the order
/// given): the order a pull-based sync receives them, and a plain insert's best case (the
/// unique index is appended to, not scattered into).
pub fn numbered(messages: impl Iterator<Item = NewMessage>) -> Vec<(NewMessage, i64)> {
    let mut rows: Vec<NewMessage> = messages.collect();
    rows.sort_by(|a, b| a.conversation.cmp(&b.conversation));
    let mut out: Vec<(NewMessage, i64)> = Vec::with_capacity(rows.len());
    for row in rows {
        let seq = match out.last() {
            Some((last, seq)) if last.conversation == row.conversation => seq + 1,
            _ => 1,
        };
        out.push((row, seq));
    }
    out
}

/// Inserts `rows` as [`baseline_insert`] does; with `conversation_rows`, each insert also
/// upserts its conversation's row (max seq, unread, last activity), as a store that keeps a
/// conversation list must.
pub fn insert_rows(
    dir: &Path,
    rows: &[(NewMessage, i64)],
    conversation_rows: bool,
) -> BaselineCost {
    let cpu_before = thread_cpu();
    let started = Instant::now();
    let mut conn = rusqlite::Connection::open(dir.join("baseline.db")).expect("open");
    conn.execute_batch(
        "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;
         CREATE TABLE conversations (
             id TEXT PRIMARY KEY, max_seq INTEGER NOT NULL, unread INTEGER NOT NULL,
             last_activity INTEGER NOT NULL);
         CREATE TABLE messages (
             id INTEGER PRIMARY KEY, conversation TEXT NOT NULL, seq INTEGER NOT NULL,
             client_msg_id TEXT NOT NULL, sender TEXT NOT NULL, kind TEXT NOT NULL,
             content BLOB NOT NULL, created_at INTEGER NOT NULL, server_time INTEGER NOT NULL,
             UNIQUE (conversation, seq));",
    )
    .expect("schema");
    for chunk in rows.chunks(2_000) {
        let tx = conn.transaction().expect("tx");
        {
            let mut insert = tx
                .prepare_cached(
                    "INSERT INTO messages (conversation, seq, client_msg_id, sender, kind,
                     content, created_at, server_time) VALUES (?1, ?2, ?3, ?4, 'text', ?5, ?6, ?6)",
                )
                .expect("prepare");
            let mut upsert = tx
                .prepare_cached(
                    "INSERT INTO conversations (id, max_seq, unread, last_activity)
                     VALUES (?1, ?2, ?2, ?3) ON CONFLICT (id) DO UPDATE SET
                     max_seq = excluded.max_seq, unread = excluded.unread,
                     last_activity = excluded.last_activity",
                )
                .expect("prepare");
            for (row, seq) in chunk {
                let at = row.created_at.0 as i64;
                insert
                    .execute(rusqlite::params![
                        row.conversation.0,
                        seq,
                        row.client_msg_id.0,
                        row.sender.0,
                        row.content,
                        at,
                    ])
                    .expect("insert");
                if conversation_rows {
                    upsert
                        .execute(rusqlite::params![row.conversation.0, seq, at])
                        .expect("upsert");
                }
            }
        }
        tx.commit().expect("commit");
    }
    // Measured before the connection closes (and checkpoints), as the sync's store stays open.
    BaselineCost {
        wall: started.elapsed(),
        cpu: thread_cpu().saturating_sub(cpu_before),
    }
}

/// CPU time of the calling thread so far (`/proc/thread-self/schedstat`, nanoseconds).
pub fn thread_cpu() -> Duration {
    let text = std::fs::read_to_string("/proc/thread-self/schedstat").expect("schedstat");
    let ns = text
        .split_whitespace()
        .next()
        .and_then(|n| n.parse().ok())
        .expect("schedstat's first field");
    Duration::from_nanos(ns)
}

/// CPU time (user and system) of the whole process so far, every thread included, ended ones
/// too (`/proc/self/stat`, in clock ticks of 10 ms).
pub fn process_cpu() -> Duration {
    cpu_of("self")
}

/// [`process_cpu`] of process `pid` (`"self"` or a number).
pub fn cpu_of(pid: &str) -> Duration {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("stat");
    // Fields after the command name, which is in parentheses and may hold spaces.
    let rest = &text[text.rfind(')').expect("stat's command") + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the whole line, 12 and 13 after the name.
    let ticks: u64 =
        fields[11].parse::<u64>().expect("utime") + fields[12].parse::<u64>().expect("stime");
    Duration::from_millis(ticks * 1_000 / clock_ticks_per_second())
}

fn clock_ticks_per_second() -> u64 {
    std::process::Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|out| String::from_utf8(out.stdout).ok())
        .and_then(|text| text.trim().parse().ok())
        .unwrap_or(100)
}

/// The process's peak resident set since it started or since [`reset_peak_rss`], in bytes.
pub fn peak_rss() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").expect("status");
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmHWM:"))
        .and_then(|kb| kb.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .expect("VmHWM")
        * 1024
}

/// Starts a new peak: the kernel sets the peak resident set to the current one.
pub fn reset_peak_rss() {
    std::fs::write("/proc/self/clear_refs", "5").expect("clear_refs");
}

/// The server on a copy of the prepared database, and alice's token.
pub async fn start_server(
    server_db: &Path,
    dir: &Path,
) -> (ServerHandle<SqliteServerStore>, String) {
    let copy = dir.join("server.db");
    std::fs::copy(server_db, &copy).expect("copy server db");
    let mut store = SqliteServerStore::open(&copy).expect("server store");
    let token = ops::token(&mut store, &UserId::from("alice"), None).expect("token");
    let options = ServerOptions {
        rate_per_sec: 0,
        ..ServerOptions::default()
    };
    let server = Server::start(store, options).await.expect("server");
    (server, token)
}

/// A fresh device (alice's "bench", [`SyncPolicy::Full`]) syncs everything from the server at
/// `url` into a new store at `store`; returns the time from the client's start to
/// `SyncFinished`. The client is shut down before returning.
pub async fn sync_fresh_device(url: String, token: String, store: &Path) -> Duration {
    let storage = SqliteStorage::open(store).expect("client store");
    let mut config = EngineConfig::new(UserId::from("alice"), DeviceId::from("bench"));
    config.policy = SyncPolicy::Full;
    config.seed = 7;
    let transport = WsTransport::new(url, UserId::from("alice"), DeviceId::from("bench"), token);
    let started = Instant::now();
    run_until_synced(config, storage, transport, |finished| finished - started).await
}

/// Starts a client on `storage` over `transport` and runs it until its first `SyncFinished`;
/// then calls `at_finish` with that moment (before anything else happens: the client is shut
/// down after it) and returns what it made.
pub async fn run_until_synced<T: Transport + 'static, R>(
    config: EngineConfig,
    storage: SqliteStorage,
    transport: T,
    at_finish: impl FnOnce(Instant) -> R,
) -> R {
    let (handle, driver) = tidemark::Client::start(config, storage, transport, TokioRuntime)
        .await
        .expect("client");
    let mut events = handle.events();
    let task = tokio::spawn(driver);
    while let Some(event) = events.next().await {
        if matches!(event, Event::SyncFinished) {
            break;
        }
    }
    let made = at_finish(Instant::now());
    handle.shutdown().await;
    let _ = task.await;
    made
}

/// How many messages the store at `store` holds (messages, tombstones and seqs known
/// missing): a run counts only if every message arrived.
pub async fn held_messages(store: &Path) -> u64 {
    let storage = SqliteStorage::open(store).expect("client store");
    let snapshot = storage.load_snapshot().await.expect("snapshot");
    snapshot.conversations.iter().map(|c| c.held.count()).sum()
}
