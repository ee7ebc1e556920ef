//! Cold start: how long an app waits, from opening its store, for the first page of the
//! conversation list, and for the engine's start snapshot. Store: 10k conversations, 1M
//! messages (`COLD_START_CONVERSATIONS`, `COLD_START_MESSAGES` change it).
//!
//! Baseline, in the same run on the same file: plain rusqlite opening the file and running the
//! same page query by hand (`SELECT * … ORDER BY last_activity DESC, id LIMIT 50`, every
//! column read as a plain value), i.e. the
//! least any SQLite-backed store can do. The ratio is Tidemark's overhead over it (opening
//! checks, migrations check, WAL setup, row decoding). The design's target: the first page in
//! under 20 ms natively.
//!
//! The store is built once (about a minute in release) under `target/bench-data/` and reused.
//! Run: `cargo bench -p tidemark-storage-sqlite --bench cold_start`.

mod common;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::env_or;
use futures::executor::block_on;
use tidemark_engine::{
    ClientMsgId, ContentKind, Conversation, ConversationId, ConversationKind, LatestMessage,
    Message, MessageStatus, Seq, SeqRanges, Storage, Timestamp, UserId, WriteBatch, WriteOp,
};
use tidemark_storage_sqlite::SqliteStorage;

const PAGE: usize = 50;
const ROUNDS: usize = 30;

fn message(conv: &ConversationId, seq: u64) -> Message {
    Message {
        conversation: conv.clone(),
        seq: Some(Seq(seq)),
        client_msg_id: ClientMsgId(format!("{conv}-{seq}")),
        sender: UserId(format!("user{}", seq % 7)),
        kind: ContentKind::Text,
        content: format!("message {seq} of {conv}: some ordinary chat text").into_bytes(),
        created_at: Timestamp(1_000_000 + seq),
        server_time: Some(Timestamp(1_000_000 + seq)),
        status: MessageStatus::Sent,
        edit_seq: None,
        revoked: false,
    }
}

/// Builds the store unless a complete one is there already.
fn build(path: &Path, conversations: u64, per_conversation: u64) {
    let done = path.with_extension("complete");
    if done.exists() && path.exists() {
        return;
    }
    let _ = std::fs::remove_file(path);
    let started = Instant::now();
    let store = SqliteStorage::open(path).expect("open bench store");
    // One batch per 10 conversations: about the size of the engine's sync batches.
    for chunk in (0..conversations).collect::<Vec<_>>().chunks(10) {
        let mut ops = Vec::new();
        for &c in chunk {
            let id = ConversationId(format!("conv{c:05}"));
            let messages: Vec<Message> = (1..=per_conversation).map(|s| message(&id, s)).collect();
            let last = messages.last().cloned();
            let mut conversation = Conversation::new(id.clone(), ConversationKind::Direct);
            conversation.server_max_seq = Seq(per_conversation);
            conversation.held = SeqRanges::from_range(Seq(1), Seq(per_conversation));
            conversation.read_seq = Seq(per_conversation / 2);
            conversation.unread = per_conversation - per_conversation / 2;
            conversation.last_activity = Timestamp(1_000_000 + c * 13 % conversations);
            conversation.latest = last.as_ref().map(LatestMessage::of);
            ops.push(WriteOp::PutMessages(messages));
            ops.push(WriteOp::PutConversation(conversation));
        }
        block_on(store.apply(WriteBatch { ops })).expect("apply");
    }
    drop(store);
    std::fs::write(&done, b"").expect("marker");
    eprintln!(
        "built {} conversations x {} messages in {:.1} s",
        conversations,
        per_conversation,
        started.elapsed().as_secs_f64()
    );
}

fn median(mut samples: Vec<Duration>) -> Duration {
    samples.sort();
    samples[samples.len() / 2]
}

fn p95(mut samples: Vec<Duration>) -> Duration {
    samples.sort();
    samples[(samples.len() * 95 / 100).min(samples.len() - 1)]
}

/// Times `f` over `ROUNDS` rounds. A round that opened a `SqliteStorage` returns it, and the
/// store's background `quick_check` is awaited after the timing: each timed open then runs
/// beside exactly one check, its own, as an app's start does. Without this the checks of
/// earlier rounds (about 0.85 s of CPU each at 1M messages) pile up on the two cores and the
/// later rounds measure that.
fn measure(mut f: impl FnMut() -> Option<SqliteStorage>) -> Vec<Duration> {
    settle(f()); // warm the OS page cache: "cold" means a fresh process-level open, not a cold disk
    (0..ROUNDS)
        .map(|_| {
            let t = Instant::now();
            let store = f();
            let elapsed = t.elapsed();
            settle(store);
            elapsed
        })
        .collect()
}

/// Waits, untimed, for a store's background open check.
fn settle(store: Option<SqliteStorage>) {
    if let Some(store) = store {
        store
            .wait_for_open_check()
            .expect("the bench store is sound");
    }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

fn main() {
    // `cargo bench` passes `--bench`; a filter argument is ignored.
    let conversations = env_or("COLD_START_CONVERSATIONS", 10_000);
    let messages = env_or("COLD_START_MESSAGES", 1_000_000);
    let per_conversation = (messages / conversations).max(1);
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/bench-data");
    std::fs::create_dir_all(&dir).expect("bench dir");
    let path = dir.join(format!("cold_start-{conversations}-{per_conversation}.db"));
    build(&path, conversations, per_conversation);

    let tidemark_page = measure(|| {
        let store = SqliteStorage::open(&path).expect("open");
        let page = block_on(store.conversations_page(None, PAGE)).expect("page");
        assert_eq!(page.len(), PAGE.min(conversations as usize));
        Some(store)
    });
    let baseline_page = measure(|| {
        let conn = rusqlite::Connection::open(&path).expect("open");
        // Every column, read as plain SQLite values: what any store must at least fetch.
        let mut stmt = conn
            .prepare("SELECT * FROM conversations ORDER BY last_activity DESC, id ASC LIMIT ?1")
            .expect("prepare");
        let columns = stmt.column_count();
        let rows: Vec<Vec<rusqlite::types::Value>> = stmt
            .query_map([PAGE as i64], |row| {
                (0..columns).map(|i| row.get(i)).collect()
            })
            .expect("query")
            .collect::<Result<_, _>>()
            .expect("rows");
        assert_eq!(rows.len(), PAGE.min(conversations as usize));
        None
    });
    let snapshot = measure(|| {
        let store = SqliteStorage::open(&path).expect("open");
        let snap = block_on(store.load_snapshot()).expect("snapshot");
        assert_eq!(snap.conversations.len(), conversations as usize);
        Some(store)
    });

    let (t, b) = (median(tidemark_page.clone()), median(baseline_page.clone()));
    println!(
        "cold start, {conversations} conversations / {} messages, {ROUNDS} rounds (median, p95):",
        conversations * per_conversation
    );
    println!(
        "  open + first {PAGE} conversations: tidemark {:.2} ms (p95 {:.2}), plain rusqlite {:.2} ms (p95 {:.2}), ratio {:.2}x",
        ms(t),
        ms(p95(tidemark_page)),
        ms(b),
        ms(p95(baseline_page)),
        t.as_secs_f64() / b.as_secs_f64()
    );
    println!(
        "  open + load_snapshot ({conversations} conversations): tidemark {:.1} ms (p95 {:.1})",
        ms(median(snapshot.clone())),
        ms(p95(snapshot))
    );
}
