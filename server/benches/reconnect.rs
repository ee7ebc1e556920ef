//! Reconnect: a device that is fully synced (and holds a sync token) goes offline, 100 of its
//! N conversations get a new message each, and it reconnects to the reference server over a
//! loopback WebSocket (SQLite stores on both sides), until `SyncFinished`.
//!
//! Measured per reconnect: the requests the device sent (round trips, by kind), the bytes the
//! server sent (each frame the device received, encoded again with the server's JSON form;
//! the encoding's own time is taken out of the times), the wall time from the connect to
//! `SyncFinished` (the reconnect), and from the app's start (the store opened and its
//! snapshot loaded, which grows with N whatever the protocol) to `SyncFinished`. Baseline, in the same run: the same reconnect without a token, i.e. the
//! paged listing of every conversation (what every reconnect cost before sync tokens). Also
//! the "nothing new" reconnect, with and without a token. The goal: at most 2 round trips and
//! bytes proportional to the 100 changes, whatever N.
//!
//! Defaults: N = 10,000 and 100,000 (`RECONNECT_SIZES`, comma separated), 100 changed
//! (`RECONNECT_CHANGED`). For each N the server's database (N conversations of alice and a
//! friend, one message each) and a device store synced from it are built once under
//! `target/bench-data/` and reused; each reconnect runs on copies, so all start alike.
//! Run: `cargo bench -p tidemark-server --features net --bench reconnect`.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "bench: a failed step is a failed run"
)]

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use futures::Stream;
use tidemark_engine::{
    ClientMsgId, ContentKind, ConversationId, ConversationKind, DeviceId, EngineConfig, Incoming,
    Push, Request, RequestId, RequestSink, Response, Storage, Timestamp, Transport, TransportError,
    UserId,
};
use tidemark_server::net::{ops, Server, ServerOptions};
use tidemark_server::{NewMessage, ServerStore, SqliteServerStore};
use tidemark_storage_sqlite::SqliteStorage;
use tidemark_transport::native::WsTransport;

const GROUP: u64 = 5_000;

fn conversation(c: u64) -> ConversationId {
    ConversationId(format!("conv{c:06}"))
}

fn text(conversation: ConversationId, sender: &str, id: String, at: u64) -> NewMessage {
    NewMessage {
        conversation,
        sender: UserId::from(sender),
        client_msg_id: ClientMsgId(id),
        kind: ContentKind::Text,
        content: b"an ordinary line of chat, about forty bytes".to_vec(),
        created_at: Timestamp(at),
    }
}

/// What a reconnect cost.
#[derive(Debug, Default)]
struct Cost {
    /// Requests sent until `SyncFinished`, by kind.
    requests: BTreeMap<&'static str, u64>,
    /// Bytes of the frames received until `SyncFinished`.
    bytes: u64,
    /// Connect to `SyncFinished`, without the time spent measuring the bytes: the reconnect.
    wall: Duration,
    /// Client start (store open, snapshot load) to `SyncFinished`: what a restarted app
    /// waits, also without the measuring.
    from_start: Duration,
}

impl Cost {
    fn round_trips(&self) -> u64 {
        self.requests.values().sum()
    }

    fn requests_text(&self) -> String {
        self.requests
            .iter()
            .map(|(k, v)| format!("{v} {k}"))
            .collect::<Vec<_>>()
            .join(" + ")
    }
}

// ----- a transport that counts -----

/// The server frame as the server encodes it, borrowed: serializes exactly as
/// `tidemark_transport::wire::ServerFrame` does, without cloning what arrived.
#[derive(serde::Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum FrameRef<'a> {
    Response {
        id: RequestId,
        response: &'a Response,
    },
    Push {
        push: &'a Push,
    },
}

/// Counts bytes written to it.
struct ByteCount(u64);

impl std::io::Write for ByteCount {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0 += buf.len() as u64;
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[derive(Default)]
struct Counters {
    requests: BTreeMap<&'static str, u64>,
    bytes: u64,
    measuring: Duration,
    /// When the transport was first asked to connect.
    connected: Option<Instant>,
}

type Shared = Arc<Mutex<Counters>>;

struct Counting<T> {
    inner: T,
    counters: Shared,
}

struct CountingSink<S> {
    inner: S,
    counters: Shared,
}

struct CountingSource<S> {
    inner: S,
    counters: Shared,
}

fn kind(request: &Request) -> &'static str {
    match request {
        Request::GetMaxSeqs { .. } => "GetMaxSeqs",
        Request::Pull { .. } => "Pull",
        Request::Send { .. } => "Send",
        Request::GetDeletions { .. } => "GetDeletions",
        Request::MarkRead { .. } => "MarkRead",
        Request::Ping => "Ping",
    }
}

#[async_trait::async_trait]
impl<S: RequestSink> RequestSink for CountingSink<S> {
    async fn send(&mut self, id: RequestId, request: Request) -> Result<(), TransportError> {
        *self
            .counters
            .lock()
            .unwrap()
            .requests
            .entry(kind(&request))
            .or_default() += 1;
        self.inner.send(id, request).await
    }

    async fn close(&mut self) {
        self.inner.close().await;
    }
}

impl<S> Stream for CountingSource<S>
where
    S: Stream<Item = Result<Incoming, TransportError>> + Unpin,
{
    type Item = Result<Incoming, TransportError>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let polled = Pin::new(&mut self.inner).poll_next(cx);
        if let Poll::Ready(Some(Ok(incoming))) = &polled {
            let started = Instant::now();
            let frame = match incoming {
                Incoming::Response(id, response) => FrameRef::Response { id: *id, response },
                Incoming::Push(push) => FrameRef::Push { push },
            };
            let mut count = ByteCount(0);
            serde_json::to_writer(&mut count, &frame).unwrap();
            let mut counters = self.counters.lock().unwrap();
            counters.bytes += count.0;
            counters.measuring += started.elapsed();
        }
        polled
    }
}

#[async_trait::async_trait]
impl<T: Transport> Transport for Counting<T> {
    type Sink = CountingSink<T::Sink>;
    type Source = CountingSource<T::Source>;

    async fn connect(&mut self) -> Result<(Self::Sink, Self::Source), TransportError> {
        self.counters
            .lock()
            .unwrap()
            .connected
            .get_or_insert_with(Instant::now);
        let (sink, source) = self.inner.connect().await?;
        Ok((
            CountingSink {
                inner: sink,
                counters: self.counters.clone(),
            },
            CountingSource {
                inner: source,
                counters: self.counters.clone(),
            },
        ))
    }
}

// ----- building the data -----

/// Folds the WAL into the main file, so copying the main file copies everything.
fn checkpoint(path: &Path) {
    let conn = rusqlite::Connection::open(path).expect("open for checkpoint");
    conn.pragma_update(None, "wal_checkpoint", "TRUNCATE")
        .expect("checkpoint");
}

/// Builds the server database and a device store synced from it, unless both are there.
fn build(runtime: &tokio::runtime::Runtime, data: &Path, conversations: u64) -> (PathBuf, PathBuf) {
    let server_db = data.join(format!("reconnect-{conversations}.server.db"));
    let client_db = data.join(format!("reconnect-{conversations}.client.db"));
    let done = data.join(format!("reconnect-{conversations}.complete"));
    if done.exists() && server_db.exists() && client_db.exists() {
        return (server_db, client_db);
    }
    for p in [&server_db, &client_db] {
        let _ = std::fs::remove_file(p);
        let _ = std::fs::remove_file(p.with_extension("db-wal"));
        let _ = std::fs::remove_file(p.with_extension("db-shm"));
    }
    let started = Instant::now();
    let mut store = SqliteServerStore::open(&server_db).expect("server store");
    store.create_user(&UserId::from("alice")).expect("alice");
    store.create_user(&UserId::from("friend")).expect("friend");
    for start in (0..conversations).step_by(GROUP as usize) {
        store.begin_group().expect("group");
        for c in start..(start + GROUP).min(conversations) {
            store
                .create_conversation(
                    &conversation(c),
                    ConversationKind::Direct,
                    &[UserId::from("alice"), UserId::from("friend")],
                )
                .expect("conversation");
            store
                .append(
                    text(conversation(c), "friend", format!("first{c}"), c),
                    Timestamp(1_700_000_000_000 + c),
                )
                .expect("append");
        }
        store.commit_group().expect("commit");
    }
    let built_server = started.elapsed();

    // The device's first login: a full listing and one pull per conversation's message.
    let started = Instant::now();
    runtime.block_on(async {
        let token = ops::token(&mut store, &UserId::from("alice"), None).expect("token");
        let server = Server::start(store, bench_options()).await.expect("server");
        let storage = SqliteStorage::open(&client_db).expect("client store");
        let cost = sync_once(server.url(), storage.clone(), token).await;
        let snapshot = storage.load_snapshot().await.expect("snapshot");
        assert_eq!(snapshot.conversations.len() as u64, conversations);
        assert!(
            snapshot.sync_token.is_some(),
            "the first login stores a token"
        );
        eprintln!(
            "  (first login of {conversations}: {} round trips, {:.2} s)",
            cost.round_trips(),
            cost.wall.as_secs_f64()
        );
        drop(storage);
        let _ = server.shutdown().await;
    });
    checkpoint(&server_db);
    checkpoint(&client_db);
    std::fs::write(&done, b"").expect("marker");
    eprintln!(
        "built {conversations} conversations: server database {:.1} s, device store {:.1} s",
        built_server.as_secs_f64(),
        started.elapsed().as_secs_f64()
    );
    (server_db, client_db)
}

fn bench_options() -> ServerOptions {
    ServerOptions {
        rate_per_sec: 0,
        ..ServerOptions::default()
    }
}

/// One connection of the device until `SyncFinished`.
async fn sync_once(url: String, storage: SqliteStorage, token: String) -> Cost {
    let mut config = EngineConfig::new(UserId::from("alice"), DeviceId::from("bench"));
    config.seed = 7;
    let counters = Shared::default();
    let transport = Counting {
        inner: WsTransport::new(url, UserId::from("alice"), DeviceId::from("bench"), token),
        counters: counters.clone(),
    };
    let started = Instant::now();
    common::run_until_synced(config, storage, transport, |finished| {
        let counters = std::mem::take(&mut *counters.lock().unwrap());
        let connected = counters.connected.unwrap_or(started);
        Cost {
            requests: counters.requests,
            bytes: counters.bytes,
            wall: (finished - connected).saturating_sub(counters.measuring),
            from_start: (finished - started).saturating_sub(counters.measuring),
        }
    })
    .await
}

/// The changed conversations: evenly spread.
fn changed(conversations: u64, count: u64) -> Vec<u64> {
    (0..count).map(|k| k * conversations / count).collect()
}

/// A reconnect on copies of the built stores: `changes` conversations get a message while
/// the device is away; `with_token` false removes the device's token first (the baseline).
fn reconnect(
    runtime: &tokio::runtime::Runtime,
    built: &(PathBuf, PathBuf),
    conversations: u64,
    changes: u64,
    with_token: bool,
) -> Cost {
    let dir = tempfile::tempdir().expect("tempdir");
    let server_db = dir.path().join("server.db");
    let client_db = dir.path().join("client.db");
    std::fs::copy(&built.0, &server_db).expect("copy server");
    std::fs::copy(&built.1, &client_db).expect("copy client");
    if !with_token {
        let conn = rusqlite::Connection::open(&client_db).expect("open client");
        conn.execute("DELETE FROM sync_token", [])
            .expect("remove the token");
    }
    let mut store = SqliteServerStore::open(&server_db).expect("server store");
    let targets = changed(conversations, changes);
    store.begin_group().expect("group");
    for &c in &targets {
        store
            .append(
                text(conversation(c), "friend", format!("away{c}"), c),
                Timestamp(1_800_000_000_000 + c),
            )
            .expect("append");
    }
    store.commit_group().expect("commit");
    let token = ops::token(&mut store, &UserId::from("alice"), None).expect("token");
    runtime.block_on(async {
        let server = Server::start(store, bench_options()).await.expect("server");
        let storage = SqliteStorage::open(&client_db).expect("client store");
        let cost = sync_once(server.url(), storage.clone(), token).await;
        // The run counts only if every change arrived.
        for &c in &targets {
            let conv = storage
                .conversation(&conversation(c))
                .await
                .expect("read")
                .expect("conversation");
            assert_eq!(conv.held.count(), 2, "{} holds both messages", conv.id);
        }
        drop(storage);
        let _ = server.shutdown().await;
        cost
    })
}

fn main() {
    let sizes: Vec<u64> = std::env::var("RECONNECT_SIZES")
        .ok()
        .map(|v| v.split(',').filter_map(|s| s.trim().parse().ok()).collect())
        .unwrap_or_else(|| vec![10_000, 100_000]);
    let changes = common::env_or("RECONNECT_CHANGED", 100);
    let data = common::bench_data();
    let runtime = common::runtime();

    let mut rows = Vec::new();
    for &n in &sizes {
        let built = build(&runtime, &data, n);
        let token = reconnect(&runtime, &built, n, changes, true);
        let paged = reconnect(&runtime, &built, n, changes, false);
        let idle_token = reconnect(&runtime, &built, n, 0, true);
        let idle_paged = reconnect(&runtime, &built, n, 0, false);
        rows.push((n, token, paged, idle_token, idle_paged));
    }

    println!("reconnect after {changes} of N conversations changed (loopback WebSocket, SQLite both sides):");
    let header = || {
        println!(
            "  {:>7} | {:<6} | {:>11} | {:<24} | {:>12} | {:>8} | {:>10}",
            "N", "mode", "round trips", "requests", "bytes in", "wall ms", "+start ms"
        );
    };
    let row = |n: &u64, mode: &str, cost: &Cost| {
        println!(
            "  {:>7} | {:<6} | {:>11} | {:<24} | {:>12} | {:>8.1} | {:>10.1}",
            n,
            mode,
            cost.round_trips(),
            cost.requests_text(),
            cost.bytes,
            cost.wall.as_secs_f64() * 1e3,
            cost.from_start.as_secs_f64() * 1e3
        );
    };
    header();
    for (n, token, paged, _, _) in &rows {
        for (mode, cost) in [("token", token), ("paged", paged)] {
            row(n, mode, cost);
        }
        println!(
            "  {:>7} | ratio paged/token: round trips {:.1}x, bytes {:.1}x, wall {:.1}x",
            n,
            paged.round_trips() as f64 / token.round_trips().max(1) as f64,
            paged.bytes as f64 / token.bytes.max(1) as f64,
            paged.wall.as_secs_f64() / token.wall.as_secs_f64().max(1e-9)
        );
    }
    println!("reconnect with nothing new:");
    header();
    for (n, _, _, idle_token, idle_paged) in &rows {
        for (mode, cost) in [("token", idle_token), ("paged", idle_paged)] {
            row(n, mode, cost);
        }
    }
    println!(
        "  wall: connect to SyncFinished; +start: from the app's start (store open, snapshot \
         load) to SyncFinished"
    );
    let worst = rows.iter().map(|r| r.1.round_trips()).max().unwrap_or(0);
    println!("  goal: <= 2 round trips with a token at every N: worst {worst}");
}
