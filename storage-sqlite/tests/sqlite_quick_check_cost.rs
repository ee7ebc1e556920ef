//! The measurement behind when a store runs `PRAGMA quick_check` (ARCHITECTURE.md, "Damaged
//! stores"): on a store of 10,000 conversations and 1,000,000 messages, how long a plain
//! open takes, the first conversation page, and `quick_check`.
//!
//! Ignored by default (building the store takes minutes); run:
//! `cargo test --release -p tidemark-storage-sqlite --test sqlite_quick_check_cost -- --ignored --nocapture`
//! The store is built once under the target directory and reused
//! (`QUICK_CHECK_MESSAGES` changes its size).

#![allow(
    clippy::unwrap_used,
    reason = "a measurement: a failed setup step is a failed run"
)]

use std::path::Path;
use std::time::{Duration, Instant};

use futures::executor::block_on;
use tidemark_engine::{
    ClientMsgId, ContentKind, Conversation, ConversationId, ConversationKind, LatestMessage,
    Message, MessageStatus, Seq, SeqRanges, Storage, Timestamp, UserId, WriteBatch, WriteOp,
};
use tidemark_storage_sqlite::SqliteStorage;

const CONVERSATIONS: u64 = 10_000;

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

/// The cold-start bench's store: `per` messages in each of 10,000 conversations.
fn build(path: &Path, per: u64) {
    let done = path.with_extension("complete");
    if done.exists() && path.exists() {
        return;
    }
    let _ = std::fs::remove_file(path);
    let started = Instant::now();
    let store = SqliteStorage::open(path).unwrap();
    for chunk in (0..CONVERSATIONS).collect::<Vec<_>>().chunks(10) {
        let mut ops = Vec::new();
        for &c in chunk {
            let id = ConversationId(format!("conv{c:05}"));
            let messages: Vec<Message> = (1..=per).map(|s| message(&id, s)).collect();
            let mut conversation = Conversation::new(id.clone(), ConversationKind::Direct);
            conversation.server_max_seq = Seq(per);
            conversation.held = SeqRanges::from_range(Seq(1), Seq(per));
            conversation.last_activity = Timestamp(1_000_000 + c * 13 % CONVERSATIONS);
            conversation.latest = messages.last().map(LatestMessage::of);
            ops.push(WriteOp::PutMessages(messages));
            ops.push(WriteOp::PutConversation(conversation));
        }
        block_on(store.apply(WriteBatch { ops })).unwrap();
    }
    drop(store);
    std::fs::write(&done, b"").unwrap();
    println!("built in {:.1} s", started.elapsed().as_secs_f64());
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

#[test]
#[ignore = "builds a 1M-message store; run by hand (see the file's doc)"]
fn quick_check_cost_on_a_million_messages() {
    let messages: u64 = std::env::var("QUICK_CHECK_MESSAGES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000_000);
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR"));
    let path = dir.join(format!("quick-check-{messages}.db"));
    build(&path, messages / CONVERSATIONS);
    let bytes = std::fs::metadata(&path).unwrap().len();

    let mut open = Vec::new();
    let mut first_page = Vec::new();
    let mut check = Vec::new();
    let mut open_check = Vec::new();
    for _ in 0..3 {
        // Open and the first list page: what an app waits for at start. The background
        // check starts at open and runs meanwhile.
        let t = Instant::now();
        let store = SqliteStorage::open(&path).unwrap();
        open.push(t.elapsed());
        let page = block_on(store.conversations_page(None, 50)).unwrap();
        assert_eq!(page.len(), 50);
        first_page.push(t.elapsed());
        // The background check's verdict, from open on.
        store.wait_for_open_check().unwrap();
        open_check.push(t.elapsed());
        // The same check on the store's own connection, alone.
        let t = Instant::now();
        store.quick_check().unwrap();
        check.push(t.elapsed());
    }
    println!(
        "store: {messages} messages, {CONVERSATIONS} conversations, {:.0} MiB",
        bytes as f64 / (1024.0 * 1024.0)
    );
    println!("open (median of 3): {:.1} ms", ms(median(open)));
    println!(
        "open + first page of 50 (median of 3): {:.1} ms",
        ms(median(first_page))
    );
    println!(
        "open until the background quick_check's verdict (median of 3): {:.0} ms",
        ms(median(open_check))
    );
    println!(
        "quick_check alone (median of 3): {:.0} ms",
        ms(median(check))
    );
}
