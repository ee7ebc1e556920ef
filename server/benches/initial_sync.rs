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

mod common;

use std::path::Path;
use std::time::Duration;

use common::{baseline_insert, build_server_db, env_or, held_messages, sync_fresh_device};

/// Tidemark: server up, a fresh device syncs everything; returns the time to `SyncFinished`.
async fn tidemark_sync(server_db: &Path, dir: &Path, messages: u64) -> Duration {
    let (server, token) = common::start_server(server_db, dir).await;
    let took = sync_fresh_device(server.url(), token, &dir.join("alice.db")).await;
    assert_eq!(
        held_messages(&dir.join("alice.db")).await,
        messages,
        "the device holds every message"
    );
    let _ = server.shutdown().await;
    took
}

fn main() {
    let conversations = env_or("INITIAL_SYNC_CONVERSATIONS", 1_000);
    let messages = env_or("INITIAL_SYNC_MESSAGES", 1_000_000);
    let data = common::bench_data();
    let server_db = data.join(format!("initial_sync-{conversations}-{messages}.server.db"));
    build_server_db(&server_db, conversations, messages);

    let runtime = common::runtime();
    let tidemark_dir = tempfile::tempdir().expect("tempdir");
    let tidemark = runtime.block_on(tidemark_sync(&server_db, tidemark_dir.path(), messages));
    let baseline_dir = tempfile::tempdir().expect("tempdir");
    let baseline = baseline_insert(baseline_dir.path(), conversations, messages).wall;

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
