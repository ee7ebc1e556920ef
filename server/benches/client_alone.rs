//! The client alone: a fresh device syncs every message of its account from the reference
//! server running in ANOTHER process (the `tidemark-server` binary), so this process's CPU
//! time and memory are the client's: transport, decoding, engine and SQLite store.
//!
//! Printed per size: the client's CPU seconds (every thread of this process, from
//! `/proc/self/stat`), wall time, peak resident set (`VmHWM`, reset before the sync; each
//! size's client runs in a fresh process of this bench), and
//! messages per client CPU-second; beside it, in the same run, the CPU seconds of the plain
//! batched rusqlite insert of the same rows (`common::baseline_insert`), and the ratio of
//! client CPU per message to insert CPU per message (the design's target: <= 2). Two sizes in
//! one run (default 250,000 and 1,000,000 messages over 1,000 conversations) show whether the
//! peak grows with the number of messages.
//!
//! Run: `cargo bench -p tidemark-server --features net --bench client_alone`.
//! `CLIENT_ALONE_MESSAGES=200000,1000000` picks the sizes; `INITIAL_SYNC_CONVERSATIONS` the
//! conversations. The server databases are `initial_sync`'s, under `target/bench-data/`.

mod common;

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{
    baseline_insert, build_server_db, cpu_of, env_or, held_messages, peak_rss, process_cpu,
    reset_peak_rss, sync_fresh_device,
};
use tidemark_engine::UserId;
use tidemark_server::net::ops;
use tidemark_server::SqliteServerStore;

/// The reference server in its own process, killed when dropped.
struct ServerProcess {
    child: Child,
    url: String,
}

impl ServerProcess {
    /// Starts `tidemark-server serve` on `db` at a free port; returns once it listens.
    fn start(db: &Path) -> Self {
        // `CLIENT_ALONE_SERVER_PREFIX="valgrind --tool=callgrind"` (or `perf record -g`)
        // profiles the server instead.
        let prefix = std::env::var("CLIENT_ALONE_SERVER_PREFIX").unwrap_or_default();
        let mut words: Vec<String> = prefix.split_whitespace().map(str::to_owned).collect();
        words.push(env!("CARGO_BIN_EXE_tidemark-server").to_owned());
        let mut child = Command::new(&words[0])
            .args(&words[1..])
            .args(["serve", "--listen", "127.0.0.1:0", "--rate", "0", "--db"])
            .arg(db)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start tidemark-server");
        let stdout = child.stdout.take().expect("server stdout");
        let mut line = String::new();
        BufReader::new(stdout)
            .read_line(&mut line)
            .expect("the server's first line");
        let url = line
            .trim()
            .strip_prefix("listening on ")
            .unwrap_or_else(|| panic!("unexpected first line from the server: {line}"))
            .to_owned();
        Self { child, url }
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        // Ctrl-C first: the server stops cleanly (and a profiler around it writes its data).
        let _ = Command::new("kill")
            .args(["-INT", &self.child.id().to_string()])
            .status();
        for _ in 0..100 {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// What one client sync cost.
struct ClientCost {
    wall: Duration,
    cpu: Duration,
    peak_rss: u64,
    /// The server process's CPU time from its start to the end of the sync.
    server_cpu: Duration,
}

/// A fresh device syncs everything from a server in another process.
fn client_sync(
    runtime: &tokio::runtime::Runtime,
    server_db: &Path,
    dir: &Path,
    messages: u64,
) -> ClientCost {
    let copy = dir.join("server.db");
    std::fs::copy(server_db, &copy).expect("copy server db");
    let token = {
        let mut store = SqliteServerStore::open(&copy).expect("server store");
        ops::token(&mut store, &UserId::from("alice"), None).expect("token")
    };
    let server = ServerProcess::start(&copy);

    reset_peak_rss();
    let cpu_before = process_cpu();
    let started = Instant::now();
    runtime.block_on(sync_fresh_device(
        server.url.clone(),
        token,
        &dir.join("alice.db"),
    ));
    let cost = ClientCost {
        wall: started.elapsed(),
        cpu: process_cpu().saturating_sub(cpu_before),
        peak_rss: peak_rss(),
        server_cpu: cpu_of(&server.child.id().to_string()),
    };
    drop(server);

    // The run counts only if everything arrived.
    let held = runtime.block_on(held_messages(&dir.join("alice.db")));
    assert_eq!(held, messages, "the device holds every message");
    cost
}

/// Runs [`client_sync`] for `messages` in a child process of this bench and reads its cost.
fn client_in_own_process(messages: u64) -> ClientCost {
    let out = Command::new(std::env::current_exe().expect("this bench's path"))
        .env("CLIENT_ALONE_ONE", messages.to_string())
        .stderr(Stdio::inherit())
        .output()
        .expect("run the client");
    assert!(out.status.success(), "the client run failed");
    let text = String::from_utf8(out.stdout).expect("utf-8");
    let line = text
        .lines()
        .find_map(|l| l.strip_prefix("client-cost "))
        .expect("the client's cost line");
    let n: Vec<u128> = line
        .split_whitespace()
        .map(|w| w.parse().expect("a number"))
        .collect();
    let duration = |ns: u128| Duration::from_nanos(u64::try_from(ns).expect("nanoseconds"));
    ClientCost {
        wall: duration(n[0]),
        cpu: duration(n[1]),
        peak_rss: u64::try_from(n[2]).expect("bytes"),
        server_cpu: duration(n[3]),
    }
}

fn main() {
    let conversations = env_or("INITIAL_SYNC_CONVERSATIONS", 1_000);
    let sizes: Vec<u64> = std::env::var("CLIENT_ALONE_MESSAGES")
        .ok()
        .map(|list| {
            list.split(',')
                .map(|n| n.trim().parse().expect("a number of messages"))
                .collect()
        })
        .unwrap_or_else(|| vec![250_000, 1_000_000]);
    let data = common::bench_data();

    // Each size's client runs in a fresh process of this bench (`CLIENT_ALONE_ONE`), so its
    // peak RSS holds nothing left over from another run; the baselines run here afterwards.
    if let Ok(one) = std::env::var("CLIENT_ALONE_ONE") {
        let messages: u64 = one.parse().expect("a number of messages");
        let server_db = data.join(format!("initial_sync-{conversations}-{messages}.server.db"));
        let runtime = common::runtime();
        let dir = tempfile::tempdir().expect("tempdir");
        let cost = client_sync(&runtime, &server_db, dir.path(), messages);
        println!(
            "client-cost {} {} {} {}",
            cost.wall.as_nanos(),
            cost.cpu.as_nanos(),
            cost.peak_rss,
            cost.server_cpu.as_nanos()
        );
        return;
    }
    let mut clients = Vec::new();
    for &messages in &sizes {
        let server_db = data.join(format!("initial_sync-{conversations}-{messages}.server.db"));
        build_server_db(&server_db, conversations, messages);
        clients.push(client_in_own_process(messages));
    }
    println!("the client alone (server in another process), {conversations} conversations:");
    for (&messages, client) in sizes.iter().zip(&clients) {
        let dir = tempfile::tempdir().expect("tempdir");
        let baseline = baseline_insert(dir.path(), conversations, messages);
        let per_cpu_second = messages as f64 / client.cpu.as_secs_f64();
        println!(
            "  {messages} messages: client {:.2} CPU-s, {:.2} s wall, peak RSS {:.1} MB, \
             {per_cpu_second:.0} msg per client CPU-second",
            client.cpu.as_secs_f64(),
            client.wall.as_secs_f64(),
            client.peak_rss as f64 / (1024.0 * 1024.0),
        );
        println!(
            "    (the server process: {:.2} CPU-s)",
            client.server_cpu.as_secs_f64()
        );
        println!(
            "    plain batched insert of the same rows: {:.2} CPU-s ({:.2} s wall); \
             client CPU per message / insert CPU per message: {:.2} (target <= 2)",
            baseline.cpu.as_secs_f64(),
            baseline.wall.as_secs_f64(),
            client.cpu.as_secs_f64() / baseline.cpu.as_secs_f64(),
        );
    }
}
