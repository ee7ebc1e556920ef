//! A big account's first login and its reconnects: 50,000 conversations (nine in ten direct,
//! one in ten a group of five), 200,000 messages, the reference server over a loopback
//! WebSocket, the client's SQLite store, the default sync policy (the newest 20 of every
//! conversation: here every message).
//!
//! Printed:
//! - first login: a fresh device from connect to `SyncFinished`, when its conversation list is
//!   complete (every conversation's latest message and unread count, checked after the run);
//!   beside it, in the same run, a plain batched rusqlite insert of the same messages and one
//!   row per conversation: what storing them costs with no protocol and no sync state;
//! - reconnect with nothing new: the same device started again on its store, from start to
//!   `SyncFinished`, and the requests it sent.
//!
//! Defaults: `FIRST_LOGIN_CONVERSATIONS=50000`, `FIRST_LOGIN_MESSAGES=200000`. The server's
//! database is built once under `target/bench-data/` and copied for each run.
//! Run: `cargo bench -p tidemark-server --features net --bench first_login`.

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use tidemark_engine::{
    ClientMsgId, ContentKind, ConversationId, ConversationKind, DeviceId, EngineConfig, Storage,
    Timestamp, UserId,
};
use tidemark_server::net::ServerHandle;
use tidemark_server::{NewMessage, ServerStore, SqliteServerStore};
use tidemark_storage_sqlite::SqliteStorage;
use tidemark_transport::native::WsTransport;

const FRIENDS: u64 = 64;
const START: u64 = 1_700_000_000_000;

fn conversation(c: u64) -> ConversationId {
    ConversationId(format!("c{c:06}"))
}

fn friend(f: u64) -> UserId {
    UserId(format!("friend{f}"))
}

/// Conversation `c`'s other members: one friend for a direct conversation, four for a group.
fn others(c: u64) -> Vec<UserId> {
    let size = if c.is_multiple_of(10) { 4 } else { 1 };
    (0..size).map(|k| friend((c + k) % FRIENDS)).collect()
}

/// The i-th message goes to conversation `i % conversations`, from one of its other members.
fn new_message(i: u64, conversations: u64) -> NewMessage {
    let c = i % conversations;
    let members = others(c);
    let sender = members[(i / conversations) as usize % members.len()].clone();
    NewMessage {
        conversation: conversation(c),
        client_msg_id: ClientMsgId(format!("{}:{i:08}", sender.0)),
        sender,
        kind: ContentKind::Text,
        content: format!("message {i}: an ordinary line of chat, about sixty bytes long")
            .into_bytes(),
        created_at: Timestamp(START + i),
    }
}

/// Builds the server's database unless a complete one is there.
fn build_server_db(path: &Path, conversations: u64, messages: u64) {
    common::build_once(path, |store| {
        store.create_user(&UserId::from("alice")).expect("alice");
        for f in 0..FRIENDS {
            store.create_user(&friend(f)).expect("friend");
        }
        store.begin_group().expect("group");
        for c in 0..conversations {
            let kind = if c.is_multiple_of(10) {
                ConversationKind::Group
            } else {
                ConversationKind::Direct
            };
            let mut members = vec![UserId::from("alice")];
            members.extend(others(c));
            store
                .create_conversation(&conversation(c), kind, &members)
                .expect("conversation");
        }
        store.commit_group().expect("commit");
        common::append_all(store, messages, |i| new_message(i, conversations));
    });
}

/// Starts alice's phone on `dir/alice.db` and runs it to `SyncFinished`; returns the time from
/// before the store opens (a cold start) to `SyncFinished`.
async fn sync_once(server: &ServerHandle<SqliteServerStore>, token: &str, dir: &Path) -> Duration {
    let started = Instant::now();
    let storage = SqliteStorage::open(dir.join("alice.db")).expect("client store");
    let mut config = EngineConfig::new(UserId::from("alice"), DeviceId::from("phone"));
    config.seed = 7;
    let transport = WsTransport::new(
        server.url(),
        UserId::from("alice"),
        DeviceId::from("phone"),
        token.to_owned(),
    );
    common::run_until_synced(config, storage, transport, |finished| finished - started).await
}

/// The run counts only if the conversation list is complete: every conversation holds its
/// latest message, and its unread count is all of its messages (alice sent none, read none).
async fn check_list(dir: &Path, conversations: u64, messages: u64) {
    let storage = SqliteStorage::open(dir.join("alice.db")).expect("client store");
    let snapshot = storage.load_snapshot().await.expect("snapshot");
    assert_eq!(snapshot.conversations.len() as u64, conversations);
    let mut held = 0;
    for conv in &snapshot.conversations {
        let c: u64 = conv.id.0[1..].parse().expect("conversation number");
        let expected = messages / conversations + u64::from(c < messages % conversations);
        assert_eq!(conv.server_max_seq.0, expected, "{}", conv.id.0);
        assert!(conv.held.contains(conv.server_max_seq), "{}", conv.id.0);
        assert_eq!(conv.unread, expected, "{}", conv.id.0);
        held += conv.held.count();
    }
    assert_eq!(held, messages, "the device holds every message");
}

/// The baseline: the same messages and one row per conversation, batched plain inserts.
fn baseline_insert(dir: &Path, conversations: u64, messages: u64) -> Duration {
    let rows = common::numbered((0..messages).map(|i| new_message(i, conversations)));
    common::insert_rows(dir, &rows, true).wall
}

fn main() {
    let conversations = common::env_or("FIRST_LOGIN_CONVERSATIONS", 50_000);
    let messages = common::env_or("FIRST_LOGIN_MESSAGES", 200_000);
    let data = common::bench_data();
    let server_db = data.join(format!("first_login-{conversations}-{messages}.server.db"));
    build_server_db(&server_db, conversations, messages);

    let runtime = common::runtime();
    let dir = tempfile::tempdir().expect("tempdir");
    let (first, again) = runtime.block_on(async {
        let (server, token) = common::start_server(&server_db, dir.path()).await;
        let first = sync_once(&server, &token, dir.path()).await;
        check_list(dir.path(), conversations, messages).await;
        let mut again = Vec::new();
        for _ in 0..5 {
            again.push(sync_once(&server, &token, dir.path()).await);
        }
        let _ = server.shutdown().await;
        (first, again)
    });
    let baseline_dir = tempfile::tempdir().expect("tempdir");
    let baseline = baseline_insert(baseline_dir.path(), conversations, messages);

    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    let rate = |d: Duration| messages as f64 / d.as_secs_f64();
    println!("{conversations} conversations, {messages} messages:");
    println!(
        "  first login (connect -> SyncFinished, list complete): {:.0} ms, {:.0} msg/s",
        ms(first),
        rate(first)
    );
    println!(
        "  baseline (plain batched rusqlite insert of the same messages and conversations): {:.0} ms, {:.0} msg/s",
        ms(baseline),
        rate(baseline)
    );
    println!(
        "  ratio (tidemark rate / baseline rate): {:.2} (target: first login < 3 s)",
        rate(first) / rate(baseline)
    );
    let mut again_ms: Vec<f64> = again.iter().map(|d| ms(*d)).collect();
    again_ms.sort_by(f64::total_cmp);
    println!(
        "  reconnect with nothing new (start on the store -> SyncFinished), {} runs: median {:.0} ms, min {:.0}, max {:.0} (target < 100 ms)",
        again_ms.len(),
        again_ms[again_ms.len() / 2],
        again_ms[0],
        again_ms[again_ms.len() - 1]
    );
}
