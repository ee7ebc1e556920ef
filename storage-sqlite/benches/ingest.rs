//! Ingest: what the client store's write path costs per message, next to a plain batched
//! rusqlite insert of the same rows in the same run.
//!
//! The store takes the batches an initial sync's pulls write: up to 1,000 messages per batch,
//! conversation after conversation (one `PutMessages` and one `PutConversation` per
//! conversation a batch touches, the conversation holding the seqs stored so far and the
//! latest message). The rows are the server benches' (`conv00042`, senders `friend0`..7,
//! client ids `friend3:00001234`, sixty bytes of text). The baseline is the server benches'
//! `insert_rows`: the same rows, one prepared `INSERT` per row, 2,000 rows per transaction, a
//! `UNIQUE (conversation, seq)` index, WAL, `synchronous=NORMAL`, no conversation rows.
//!
//! Prints CPU time (the whole process's: the store may write on a thread of its own) and
//! wall time per message row for both, and the ratio store ÷ baseline (the goal for
//! the client's CPU per message: <= 2x). Every batch and row is built before its clock starts.
//!
//! Run: `cargo bench -p tidemark-storage-sqlite --bench ingest`. Sizes:
//! `INGEST_CONVERSATIONS` (default 1,000), `INGEST_MESSAGES` (default 200,000; 1,000,000 for
//! the initial sync's account). `INGEST_ONLY=store` or `=baseline` runs one side alone, for
//! `valgrind --tool=callgrind` (instructions per row: divide by `INGEST_MESSAGES`).

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::env_or;
use futures::executor::block_on;
use tidemark_engine::{
    ClientMsgId, ContentKind, Conversation, ConversationId, ConversationKind, LatestMessage,
    Message, MessageStatus, Seq, SeqRanges, Storage, Timestamp, UserId, WriteBatch, WriteOp,
};
use tidemark_storage_sqlite::SqliteStorage;

/// Messages per batch: a pull's page.
const BATCH: usize = 1_000;

/// The i-th message of the account at `seq` of its conversation, as the server benches make
/// it and a sync stores it.
fn message(i: u64, conversations: u64, seq: u64) -> Message {
    let at = Timestamp(1_700_000_000_000 + i);
    Message {
        conversation: ConversationId(format!("conv{:05}", i % conversations)),
        seq: Some(Seq(seq)),
        client_msg_id: ClientMsgId(format!("friend{}:{i:08}", i % 8)),
        sender: UserId(format!("friend{}", i % 8)),
        kind: ContentKind::Text,
        content: format!("message {i}: an ordinary line of chat, about sixty bytes long")
            .into_bytes(),
        created_at: at,
        server_time: Some(at),
        status: MessageStatus::Sent,
        edit_seq: None,
        revoked: false,
    }
}

/// Every message, conversation after conversation, seqs 1, 2, ... within each.
fn messages(conversations: u64, count: u64) -> Vec<Message> {
    let mut out = Vec::with_capacity(usize::try_from(count).unwrap_or(0));
    for c in 0..conversations.min(count) {
        let mut seq = 0;
        let mut i = c;
        while i < count {
            seq += 1;
            out.push(message(i, conversations, seq));
            i += conversations;
        }
    }
    out
}

/// The batches a sync's pulls write for `all`: per batch of up to [`BATCH`] messages, each
/// conversation's run and then its record (held up to the run's last seq, that message the
/// latest, everything unread).
fn batches(all: &[Message]) -> Vec<WriteBatch> {
    all.chunks(BATCH)
        .map(|chunk| {
            let mut ops = Vec::new();
            for run in chunk.chunk_by(|a, b| a.conversation == b.conversation) {
                let last = &run[run.len() - 1];
                let top = last.seq.unwrap_or(Seq(0));
                let mut conv =
                    Conversation::new(last.conversation.clone(), ConversationKind::Group);
                conv.server_max_seq = top;
                conv.held = SeqRanges::from_range(Seq(1), top);
                conv.unread = top.0;
                conv.last_activity = last.created_at;
                conv.latest = Some(LatestMessage::of(last));
                ops.push(WriteOp::PutMessages(run.to_vec()));
                ops.push(WriteOp::PutConversation(conv));
            }
            WriteBatch { ops }
        })
        .collect()
}

/// What one side cost.
struct Cost {
    cpu: Duration,
    wall: Duration,
}

#[inline(never)] // A symbol of its own, for callgrind's --toggle-collect.
fn store_ingest(dir: &Path, batches: Vec<WriteBatch>) -> Cost {
    let path = dir.join("store.db");
    let store = SqliteStorage::open(&path).expect("open store");
    let cpu = process_cpu();
    let started = Instant::now();
    for batch in batches {
        block_on(store.apply(batch)).expect("apply");
    }
    let cost = Cost {
        cpu: process_cpu().saturating_sub(cpu),
        wall: started.elapsed(),
    };
    drop(store);
    cost
}

#[inline(never)] // A symbol of its own, for callgrind's --toggle-collect.
fn baseline_insert(dir: &Path, rows: &[Message]) -> Cost {
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
    let cpu = process_cpu();
    let started = Instant::now();
    for chunk in rows.chunks(2_000) {
        let tx = conn.transaction().expect("tx");
        {
            let mut insert = tx
                .prepare_cached(
                    "INSERT INTO messages (conversation, seq, client_msg_id, sender, kind,
                     content, created_at, server_time) VALUES (?1, ?2, ?3, ?4, 'text', ?5, ?6, ?6)",
                )
                .expect("prepare");
            for m in chunk {
                let seq = m.seq.map(|s| s.0 as i64);
                insert
                    .execute(rusqlite::params![
                        m.conversation.0,
                        seq,
                        m.client_msg_id.0,
                        m.sender.0,
                        m.content,
                        m.created_at.0 as i64,
                    ])
                    .expect("insert");
            }
        }
        tx.commit().expect("commit");
    }
    Cost {
        cpu: process_cpu().saturating_sub(cpu),
        wall: started.elapsed(),
    }
}

/// CPU time (user and system) of the whole process so far, every thread included
/// (`/proc/self/stat`, in clock ticks; 100 per second on Linux).
fn process_cpu() -> Duration {
    let text = std::fs::read_to_string("/proc/self/stat").expect("stat");
    let rest = &text[text.rfind(')').expect("stat's command") + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks: u64 =
        fields[11].parse::<u64>().expect("utime") + fields[12].parse::<u64>().expect("stime");
    Duration::from_millis(ticks * 10)
}

fn per_row(d: Duration, rows: usize) -> f64 {
    d.as_secs_f64() * 1e6 / rows as f64
}

fn main() {
    let conversations = env_or("INGEST_CONVERSATIONS", 1_000).max(1);
    let count = env_or("INGEST_MESSAGES", 200_000);
    let only = std::env::var("INGEST_ONLY").unwrap_or_default();
    let data = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/bench-data");
    std::fs::create_dir_all(&data).expect("bench dir");
    let dir = tempfile::tempdir_in(&data).expect("temp dir");
    let all = messages(conversations, count);
    let rows = all.len();
    println!("ingest: {rows} messages in {conversations} conversations, batches of {BATCH}");

    let baseline = (only != "store").then(|| baseline_insert(dir.path(), &all));
    let store = (only != "baseline").then(|| store_ingest(dir.path(), batches(&all)));
    for (name, cost) in [("baseline insert", &baseline), ("SqliteStorage", &store)] {
        if let Some(c) = cost {
            println!(
                "  {name:<16} {:>7.2} µs CPU/row  {:>7.2} µs wall/row  ({:.2} s CPU)",
                per_row(c.cpu, rows),
                per_row(c.wall, rows),
                c.cpu.as_secs_f64()
            );
        }
    }
    if let (Some(b), Some(s)) = (baseline, store) {
        println!(
            "  store ÷ baseline: CPU {:.2}x, wall {:.2}x",
            s.cpu.as_secs_f64() / b.cpu.as_secs_f64().max(1e-9),
            s.wall.as_secs_f64() / b.wall.as_secs_f64().max(1e-9)
        );
    }
}
