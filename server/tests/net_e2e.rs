//! End to end over real WebSockets on loopback: the engine's [`Client`] (on tokio, over
//! [`MemoryStorage`]) with [`WsTransport`] against the reference server host
//! ([`Server`] over [`MemoryServerStore`]) listening on 127.0.0.1, plus raw clients that
//! misbehave on purpose.
//!
//! Every wait is bounded by a generous timeout (the machine may be loaded) and waits for an
//! event or a condition, never for a fixed time.

#![cfg(feature = "net")]
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test helpers: a failed setup step is a failed test"
)]

use std::collections::BTreeSet;
use std::future::Future;
use std::time::Duration;

use futures::{SinkExt, StreamExt};
use tidemark::storage::{MemoryStorage, Storage};
use tidemark::transport::protocol::{ErrorCode, PullRange, Push, Request, RequestId, Response};
use tidemark::transport::Transport;
use tidemark::{
    Client, ClientMsgId, ContentKind, ConversationId, ConversationKind, DeviceId, Direction,
    EngineConfig, Event, EventStream, Message, MessageStatus, Seq, SyncPolicy, Timestamp,
    TokioRuntime, UserId,
};
use tidemark_server::net::{wall_clock, Server, ServerHandle, ServerOptions};
use tidemark_server::{issue_token, MemoryServerStore, NewMessage, ServerStore};
use tidemark_transport::native::{refusal_code, WsConnection, WsOptions, WsTransport};
use tidemark_transport::wire::{self, error_code, Limits, ServerFrame};
use tokio::task::JoinHandle;
use tokio::time::timeout;
use tokio_tungstenite::tungstenite::Message as WsMessage;

/// The longest any single wait may take before the test fails.
const WAIT: Duration = Duration::from_secs(30);
/// How long to keep listening after the expected events, to catch duplicates.
const QUIET: Duration = Duration::from_millis(300);

type Host = ServerHandle<MemoryServerStore>;

fn user(name: &str) -> UserId {
    UserId::from(name)
}

fn ab() -> ConversationId {
    ConversationId::from("ab")
}

fn text(s: &str) -> Vec<u8> {
    s.as_bytes().to_vec()
}

/// Users and their tokens.
struct Accounts {
    tokens: Vec<(String, String)>,
}

impl Accounts {
    fn token(&self, name: &str) -> String {
        self.tokens
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, t)| t.clone())
            .expect("a user of the fixture")
    }
}

/// A store with alice, bob and carol (with tokens) and the direct conversation `ab` of
/// alice and bob.
fn fixture() -> (MemoryServerStore, Accounts) {
    let mut store = MemoryServerStore::new();
    let mut tokens = Vec::new();
    for name in ["alice", "bob", "carol"] {
        store.create_user(&user(name)).unwrap();
        let token = issue_token(&mut store, &user(name), wall_clock(), None).unwrap();
        tokens.push((name.to_owned(), token));
    }
    store
        .create_conversation(
            &ab(),
            ConversationKind::Direct,
            &[user("alice"), user("bob")],
        )
        .unwrap();
    (store, Accounts { tokens })
}

async fn start_server(store: MemoryServerStore, options: ServerOptions) -> Host {
    Server::start(store, options).await.unwrap()
}

/// Short engine timings so reconnects happen within milliseconds; full sync.
fn config(name: &str, device: &str, seed: u64) -> EngineConfig {
    let mut config = EngineConfig::new(user(name), DeviceId::from(device));
    config.seed = seed;
    config.policy = SyncPolicy::Full;
    config.heartbeat_interval_ms = 1_000;
    config.request_timeout_ms = 10_000;
    config.reconnect_min_ms = 10;
    config.reconnect_max_ms = 200;
    config.send_retry_min_ms = 10;
    config
}

/// One running client.
struct Device {
    name: String,
    client: Client,
    events: EventStream,
    storage: MemoryStorage,
    task: JoinHandle<()>,
    seen: Vec<Event>,
}

async fn start_device(url: &str, config: EngineConfig, token: &str) -> Device {
    let name = format!("{}/{}", config.user, config.device);
    let storage = MemoryStorage::new();
    let transport = WsTransport::new(url, config.user.clone(), config.device.clone(), token);
    let (client, driver) = Client::start(config, storage.clone(), transport, TokioRuntime)
        .await
        .unwrap();
    let events = client.events();
    let task = tokio::spawn(driver);
    Device {
        name,
        client,
        events,
        storage,
        task,
        seen: Vec::new(),
    }
}

impl Device {
    /// Takes events until one matches; fails on timeout or when the stream ends first.
    async fn wait_for(&mut self, what: &str, matches: impl Fn(&Event) -> bool) -> Event {
        let Self { events, seen, .. } = self;
        let found = timeout(WAIT, async {
            while let Some(event) = events.next().await {
                seen.push(event.clone());
                if matches(&event) {
                    return Some(event);
                }
            }
            None
        })
        .await;
        match found {
            Ok(Some(event)) => event,
            Ok(None) => panic!("{}: stream ended waiting for {what}", self.name),
            Err(_) => panic!(
                "{}: timed out waiting for {what}; saw {:#?}",
                self.name, self.seen
            ),
        }
    }

    /// Takes whatever arrives within `QUIET`.
    async fn settle(&mut self) {
        while let Ok(Some(event)) = timeout(QUIET, self.events.next()).await {
            self.seen.push(event);
        }
    }

    async fn synced(&mut self) {
        self.wait_for("SyncFinished", |e| matches!(e, Event::SyncFinished))
            .await;
    }

    async fn sent(&mut self, id: &ClientMsgId) -> Seq {
        let event = self
            .wait_for(
                "MessageSent",
                |e| matches!(e, Event::MessageSent { client_msg_id, .. } if client_msg_id == id),
            )
            .await;
        match event {
            Event::MessageSent { seq, .. } => seq,
            _ => unreachable!(),
        }
    }

    async fn send(&self, conversation: ConversationId, body: &str) -> ClientMsgId {
        timeout(
            WAIT,
            self.client
                .send_message(&conversation, ContentKind::Text, text(body)),
        )
        .await
        .expect("send_message timed out")
        .unwrap()
    }

    async fn stop(self) -> Vec<Event> {
        let mut this = self;
        timeout(WAIT, this.client.shutdown())
            .await
            .expect("shutdown timed out");
        timeout(WAIT, this.task)
            .await
            .expect("the driver did not finish after shutdown")
            .expect("the client task panicked");
        let rest: Vec<Event> = timeout(WAIT, this.events.by_ref().collect())
            .await
            .expect("the event stream did not end");
        this.seen.extend(rest);
        this.seen
    }
}

/// Every message announced as new, as (conversation, seq).
fn announced(events: &[Event]) -> Vec<(ConversationId, u64)> {
    events
        .iter()
        .filter_map(|e| match e {
            Event::MessagesReceived {
                conversation,
                messages,
            } => Some(
                messages
                    .iter()
                    .filter_map(|m: &Message| m.seq.map(|s| (conversation.clone(), s.0)))
                    .collect::<Vec<_>>(),
            ),
            _ => None,
        })
        .flatten()
        .collect()
}

type Row = (u64, String, String, Vec<u8>);

/// The stored messages of a conversation with a seq, ascending.
async fn stored(storage: &MemoryStorage, conversation: &ConversationId) -> Vec<Row> {
    storage
        .messages_page(conversation, None, Direction::Before, 100_000)
        .await
        .unwrap()
        .into_iter()
        .map(|m| {
            assert_eq!(m.status, MessageStatus::Sent);
            (
                m.seq.expect("paged messages have seqs").0,
                m.sender.0,
                m.client_msg_id.0,
                m.content,
            )
        })
        .collect()
}

/// What the server holds for a conversation, in the same form.
async fn on_server(host: &Host, conversation: &ConversationId) -> Vec<Row> {
    let conversation = conversation.clone();
    host.admin(move |core, _| {
        let store = core.store();
        let max = store.conversation(&conversation).unwrap().unwrap().max_seq;
        store
            .messages(&conversation, Seq(1), max, usize::MAX)
            .unwrap()
            .into_iter()
            .map(|m| (m.seq.0, m.sender.0, m.client_msg_id.0, m.content))
            .collect()
    })
    .await
    .unwrap()
}

/// Polls `check` until it holds; fails after `WAIT`.
async fn eventually<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let polled = timeout(WAIT, async {
        while !check().await {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
    assert!(polled.is_ok(), "timed out waiting until {what}");
}

/// Appends `n` messages by `sender` to `conversation` through the host (pushed to whoever
/// is online).
async fn append(host: &Host, sender: &str, conversation: &ConversationId, n: usize) {
    let sender = user(sender);
    let conversation = conversation.clone();
    host.admin(move |core, now| {
        for i in 0..n {
            core.append_as(
                now,
                &sender,
                &conversation,
                ContentKind::Text,
                format!("{conversation} #{i}").into_bytes(),
            )
            .unwrap();
        }
    })
    .await
    .unwrap();
}

// ----- (a) a fresh device syncs many conversations -----

#[tokio::test]
async fn fresh_device_syncs_every_conversation() {
    let (mut store, accounts) = fixture();
    let conversations: Vec<ConversationId> = (0..12)
        .map(|i| ConversationId::from(format!("g{i:02}")))
        .collect();
    for id in &conversations {
        store
            .create_conversation(
                id,
                ConversationKind::Group,
                &[user("alice"), user("bob"), user("carol")],
            )
            .unwrap();
    }
    let host = start_server(store, ServerOptions::default()).await;
    for (i, id) in conversations.iter().enumerate() {
        append(
            &host,
            if i % 2 == 0 { "bob" } else { "carol" },
            id,
            5 + i * 7,
        )
        .await;
    }
    append(&host, "bob", &ab(), 3).await;

    let mut alice = start_device(
        &host.url(),
        config("alice", "phone", 1),
        &accounts.token("alice"),
    )
    .await;
    alice.synced().await;
    alice.settle().await;
    let mut total = 0;
    for id in conversations.iter().chain([&ab()]) {
        let expected = on_server(&host, id).await;
        total += expected.len();
        assert_eq!(
            stored(&alice.storage, id).await,
            expected,
            "conversation {id}"
        );
    }
    // Each message announced once.
    let seen = announced(&alice.seen);
    let unique: BTreeSet<_> = seen.iter().cloned().collect();
    assert_eq!(seen.len(), unique.len(), "no message announced twice");
    assert_eq!(seen.len(), total);
    assert_eq!(host.connections(), 1);
    alice.storage.check_integrity().await.unwrap();
    alice.stop().await;
    host.shutdown().await.unwrap();
}

/// Failure 2 of issue 9: 1,000 images of 64 KiB in one conversation made a pull reply over
/// the client's 64 MiB frame limit; the client asked for the same pull forever and the
/// other conversation in that pull stayed empty. Replies are now capped by bytes (the
/// server's and the client's budget), so both conversations sync, with default limits.
#[tokio::test]
async fn a_conversation_too_big_for_one_frame_syncs_with_the_others() {
    let (mut store, accounts) = fixture();
    let small = ConversationId::from("small");
    store
        .create_conversation(
            &small,
            ConversationKind::Group,
            &[user("alice"), user("bob")],
        )
        .unwrap();
    // The small conversation first, so the big one is the most recently active: it is
    // pulled first and the small one shares its pull.
    let t = wall_clock();
    for i in 0..3u64 {
        append_direct(
            &mut store,
            &small,
            "bob",
            i,
            ContentKind::Text,
            vec![b's'; 10],
            t,
        );
    }
    for i in 0..1_000u64 {
        let image = vec![(i % 251) as u8; 64 * 1024];
        append_direct(
            &mut store,
            &ab(),
            "alice",
            i,
            ContentKind::Image,
            image,
            t.plus_millis(1),
        );
    }
    let host = start_server(store, ServerOptions::default()).await;
    let started = std::time::Instant::now();
    let mut bob = start_device(
        &host.url(),
        config("bob", "phone", 7),
        &accounts.token("bob"),
    )
    .await;
    bob.synced().await;
    let elapsed = started.elapsed();
    for id in [ab(), small.clone()] {
        let expected = on_server(&host, &id).await;
        assert_eq!(
            stored(&bob.storage, &id).await,
            expected,
            "conversation {id}"
        );
    }
    assert_eq!(stored(&bob.storage, &ab()).await.len(), 1_000);
    assert_eq!(stored(&bob.storage, &small).await.len(), 3);
    println!("1,000 x 64 KiB + 3 small messages synced in {elapsed:?}");
    bob.stop().await;
    host.shutdown().await.unwrap();
}

/// Stores a message straight into the server store (before the host starts).
fn append_direct(
    store: &mut MemoryServerStore,
    conversation: &ConversationId,
    sender: &str,
    i: u64,
    kind: ContentKind,
    content: Vec<u8>,
    now: Timestamp,
) {
    let message = NewMessage {
        conversation: conversation.clone(),
        sender: user(sender),
        client_msg_id: ClientMsgId(format!("{conversation}-{i}")),
        kind,
        content,
        created_at: now,
    };
    store.append(message, now).unwrap();
}

// ----- (b) a send is acked and fanned out -----

#[tokio::test]
async fn send_is_acked_and_pushed_to_the_peer_and_the_senders_other_device() {
    let (store, accounts) = fixture();
    let host = start_server(store, ServerOptions::default()).await;
    let url = host.url();
    let mut phone = start_device(&url, config("alice", "phone", 1), &accounts.token("alice")).await;
    let mut laptop =
        start_device(&url, config("alice", "laptop", 2), &accounts.token("alice")).await;
    let mut bob = start_device(&url, config("bob", "bob-phone", 3), &accounts.token("bob")).await;
    phone.synced().await;
    laptop.synced().await;
    bob.synced().await;
    eventually("three connections", || async { host.connections() == 3 }).await;

    let id = phone.send(ab(), "hello over the wire").await;
    assert_eq!(phone.sent(&id).await, Seq(1));
    for device in [&mut bob, &mut laptop] {
        let event = device
            .wait_for("the message", |e| {
                matches!(e, Event::MessagesReceived { conversation, .. } if *conversation == ab())
            })
            .await;
        let Event::MessagesReceived { messages, .. } = event else {
            unreachable!()
        };
        assert_eq!(messages.len(), 1);
        assert_eq!(messages[0].client_msg_id, id);
        assert_eq!(messages[0].sender, user("alice"));
        assert_eq!(messages[0].content, text("hello over the wire"));
    }
    let expected = on_server(&host, &ab()).await;
    assert_eq!(expected.len(), 1);
    for device in [&mut phone, &mut laptop, &mut bob] {
        device.settle().await;
        assert_eq!(
            stored(&device.storage, &ab()).await,
            expected,
            "{}",
            device.name
        );
    }
    // Acked once, never announced to the sending device as received.
    let phone_seen = phone.stop().await;
    assert_eq!(
        phone_seen
            .iter()
            .filter(|e| matches!(e, Event::MessageSent { .. }))
            .count(),
        1
    );
    assert!(announced(&phone_seen).is_empty());
    laptop.stop().await;
    bob.stop().await;
    host.shutdown().await.unwrap();
}

// ----- (c) a read mark travels between a user's devices -----

#[tokio::test]
async fn read_mark_on_one_device_reaches_the_other() {
    let (store, accounts) = fixture();
    let host = start_server(store, ServerOptions::default()).await;
    let url = host.url();
    let mut phone = start_device(&url, config("alice", "phone", 1), &accounts.token("alice")).await;
    let mut laptop =
        start_device(&url, config("alice", "laptop", 2), &accounts.token("alice")).await;
    phone.synced().await;
    laptop.synced().await;
    append(&host, "bob", &ab(), 3).await;
    for device in [&mut phone, &mut laptop] {
        let storage = device.storage.clone();
        eventually("three unread", || {
            let storage = storage.clone();
            async move { storage.total_unread().await.unwrap() == 3 }
        })
        .await;
    }

    timeout(WAIT, phone.client.mark_read(&ab(), Seq(3)))
        .await
        .unwrap()
        .unwrap();
    laptop
        .wait_for("total unread 0", |e| {
            *e == Event::TotalUnreadChanged { total: 0 }
        })
        .await;
    assert_eq!(laptop.storage.total_unread().await.unwrap(), 0);
    let read = host
        .admin(|core, _| core.store().read_seq(&user("alice"), &ab()).unwrap())
        .await
        .unwrap();
    assert_eq!(read, Seq(3));
    phone.stop().await;
    laptop.stop().await;
    host.shutdown().await.unwrap();
}

// ----- (d) the server restarts in the middle of a sync -----

#[tokio::test]
async fn server_restart_mid_sync_loses_and_duplicates_nothing() {
    let (mut store, accounts) = fixture();
    let conversations: Vec<ConversationId> = (0..20)
        .map(|i| ConversationId::from(format!("r{i:02}")))
        .collect();
    for id in &conversations {
        store
            .create_conversation(id, ConversationKind::Group, &[user("alice"), user("bob")])
            .unwrap();
    }
    let host = start_server(store, ServerOptions::default()).await;
    let addr = host.local_addr();
    for id in &conversations {
        append(&host, "bob", id, 150).await;
    }
    // Small pulls, one at a time: the sync takes many round trips.
    let mut config = config("alice", "phone", 7);
    config.pull_max_messages = 50;
    config.pull_max_conversations = 1;
    config.pulls_in_flight = 1;
    let mut alice = start_device(&host.url(), config, &accounts.token("alice")).await;
    alice
        .wait_for("the first messages", |e| {
            matches!(e, Event::MessagesReceived { .. })
        })
        .await;
    // A send in flight across the restart, too.
    let id = alice.send(ab(), "across the restart").await;

    let store = host.shutdown().await.unwrap();
    let partial = announced(&alice.seen).len();
    let host = start_server(
        store,
        ServerOptions {
            listen: addr,
            ..ServerOptions::default()
        },
    )
    .await;
    assert_eq!(host.local_addr(), addr);

    alice.sent(&id).await;
    let mut expected = Vec::new();
    for id in conversations.iter().chain([&ab()]) {
        expected.push((id.clone(), on_server(&host, id).await));
    }
    let total: usize = expected.iter().map(|(_, rows)| rows.len()).sum();
    assert_eq!(total, 20 * 150 + 1);
    let storage = alice.storage.clone();
    eventually("the device holds everything", || {
        let storage = storage.clone();
        let expected = expected.clone();
        async move {
            for (id, rows) in &expected {
                if stored(&storage, id).await.len() != rows.len() {
                    return false;
                }
            }
            true
        }
    })
    .await;
    alice.settle().await;
    for (id, rows) in &expected {
        assert_eq!(&stored(&alice.storage, id).await, rows, "conversation {id}");
    }
    let seen = announced(&alice.seen);
    let unique: BTreeSet<_> = seen.iter().cloned().collect();
    assert_eq!(seen.len(), unique.len(), "no message announced twice");
    assert_eq!(
        seen.len(),
        20 * 150,
        "every other user's message announced once"
    );
    assert!(
        partial < seen.len(),
        "the restart happened before the sync ended"
    );
    let sent_events = alice
        .seen
        .iter()
        .filter(|e| matches!(e, Event::MessageSent { client_msg_id, .. } if *client_msg_id == id))
        .count();
    assert_eq!(sent_events, 1, "the send is acked exactly once");
    assert_eq!(
        on_server(&host, &ab())
            .await
            .iter()
            .filter(|row| row.2 == id.0)
            .count(),
        1,
        "the server holds one copy"
    );
    alice.storage.check_integrity().await.unwrap();
    alice.stop().await;
    host.shutdown().await.unwrap();
}

// ----- (e) authentication and membership -----

async fn refused_code(url: &str, name: &str, token: &str) -> String {
    let mut transport = WsTransport::new(url, user(name), DeviceId::from("d1"), token);
    match timeout(WAIT, transport.connect()).await.unwrap() {
        Ok(_) => panic!("{name} was let in"),
        Err(err) => {
            assert!(
                matches!(err, tidemark_engine::TransportError::Refused(_)),
                "{err:?}"
            );
            refusal_code(&err).expect("a server code").to_owned()
        }
    }
}

#[tokio::test]
async fn bad_tokens_are_refused_and_strangers_read_nothing() {
    let (mut store, accounts) = fixture();
    let expired = issue_token(&mut store, &user("alice"), Timestamp(1_000), Some(1)).unwrap();
    let host = start_server(store, ServerOptions::default()).await;
    let url = host.url();

    assert_eq!(
        refused_code(&url, "alice", &accounts.token("bob")).await,
        error_code::UNAUTHORIZED
    );
    assert_eq!(
        refused_code(&url, "alice", "not-a-token").await,
        error_code::UNAUTHORIZED
    );
    assert_eq!(
        refused_code(&url, "mallory", &accounts.token("bob")).await,
        error_code::UNAUTHORIZED
    );
    assert_eq!(
        refused_code(&url, "alice", &expired).await,
        error_code::TOKEN_EXPIRED
    );
    // An unknown user and a wrong token read the same: nothing tells which users exist.
    let mut unknown = WsTransport::new(&url, user("mallory"), DeviceId::from("d"), "x");
    let mut wrong = WsTransport::new(&url, user("alice"), DeviceId::from("d"), "x");
    let a = unknown.connect().await.err().unwrap().to_string();
    let b = wrong.connect().await.err().unwrap().to_string();
    assert_eq!(a, b);
    assert_eq!(host.connections(), 0);

    // Carol is no member of `ab`.
    append(&host, "alice", &ab(), 2).await;
    let mut carol = WsConnection::open(
        &url,
        &user("carol"),
        &DeviceId::from("c1"),
        &accounts.token("carol"),
        &WsOptions::default(),
    )
    .await
    .unwrap();
    let send = Request::Send {
        conversation: ab(),
        client_msg_id: ClientMsgId::from("c-1"),
        kind: ContentKind::Text,
        content: text("let me in"),
        created_at: wall_clock(),
    };
    let pull = Request::Pull {
        ranges: vec![PullRange {
            conversation: ab(),
            from: Seq(1),
            to: Seq(100),
        }],
        max_bytes: None,
    };
    let max_seqs = Request::GetMaxSeqs {
        after: None,
        limit: 100,
        since: None,
    };
    for (id, request) in [(1, send), (2, pull)] {
        carol.send_request(RequestId(id), request).await.unwrap();
        match next_frame(&mut carol).await {
            ServerFrame::Response {
                id: got,
                response: Response::Error(err),
            } => {
                assert_eq!(got, RequestId(id));
                assert_eq!(err.error_code(), Some(ErrorCode::NotMember));
                assert!(err.permanent);
            }
            other => panic!("expected not_member, got {other:?}"),
        }
    }
    carol.send_request(RequestId(3), max_seqs).await.unwrap();
    match next_frame(&mut carol).await {
        ServerFrame::Response {
            response: Response::MaxSeqs { entries, .. },
            ..
        } => assert!(
            entries.is_empty(),
            "carol sees no conversation: {entries:?}"
        ),
        other => panic!("expected max seqs, got {other:?}"),
    }
    assert_eq!(on_server(&host, &ab()).await.len(), 2, "nothing was stored");
    carol.close().await;
    host.shutdown().await.unwrap();
}

/// The next frame of a raw connection; fails on timeout or end.
async fn next_frame(conn: &mut WsConnection) -> ServerFrame {
    timeout(WAIT, conn.next_frame())
        .await
        .expect("no frame in time")
        .expect("the connection ended")
        .expect("an undecodable frame")
}

// ----- (f) misbehaving clients cost only their own connection -----

type RawSocket =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

async fn raw(url: &str) -> RawSocket {
    tokio_tungstenite::connect_async(url).await.unwrap().0
}

async fn raw_hello(url: &str, accounts: &Accounts, name: &str) -> RawSocket {
    let mut ws = raw(url).await;
    let hello = wire::hello(&user(name), &DeviceId::from("raw"), &accounts.token(name));
    ws.send(WsMessage::text(wire::encode(&hello)))
        .await
        .unwrap();
    match raw_next(&mut ws).await {
        Some(ServerFrame::Welcome { .. }) => ws,
        other => panic!("expected a welcome, got {other:?}"),
    }
}

/// The next server frame of a raw socket; `None` once it closed.
async fn raw_next(ws: &mut RawSocket) -> Option<ServerFrame> {
    timeout(WAIT, async {
        loop {
            match ws.next().await {
                Some(Ok(WsMessage::Text(t))) => {
                    return Some(
                        wire::decode_server(t.as_bytes(), &Limits::server_frames()).unwrap(),
                    )
                }
                // Read on after a close so tungstenite answers it; the end follows.
                None | Some(Err(_)) => return None,
                Some(Ok(_)) => {}
            }
        }
    })
    .await
    .expect("nothing from the server in time")
}

/// Expects a fatal error with `code` and then the end; with `may_cut`, the end alone is
/// also accepted (a frame far over the limit is cut off at its header, and the client may
/// see the reset before the error).
async fn expect_fatal(ws: &mut RawSocket, code: &str, may_cut: bool) {
    match raw_next(ws).await {
        Some(ServerFrame::Error {
            code: got, fatal, ..
        }) => {
            assert_eq!(got, code);
            assert!(fatal);
            assert!(raw_next(ws).await.is_none(), "closed after a fatal error");
        }
        None => assert!(may_cut, "expected a fatal {code}, got the end"),
        Some(other) => panic!("expected a fatal {code}, got {other:?}"),
    }
}

/// Bob is still served: a ping is answered and a message pushed.
async fn bob_is_fine(host: &Host, bob: &mut WsConnection, round: u64) {
    bob.send_request(RequestId(round), Request::Ping)
        .await
        .unwrap();
    assert!(matches!(
        next_frame(bob).await,
        ServerFrame::Response { id, response: Response::Pong { .. } } if id == RequestId(round)
    ));
    append(host, "alice", &ab(), 1).await;
    assert!(matches!(
        next_frame(bob).await,
        ServerFrame::Push {
            push: Push::Message(_)
        }
    ));
}

#[tokio::test]
async fn bad_frames_close_only_their_connection() {
    let (store, accounts) = fixture();
    let host = start_server(store, ServerOptions::default()).await;
    let url = host.url();
    let mut bob = WsConnection::open(
        &url,
        &user("bob"),
        &DeviceId::from("b1"),
        &accounts.token("bob"),
        &WsOptions::default(),
    )
    .await
    .unwrap();
    bob_is_fine(&host, &mut bob, 1).await;

    // Malformed and truncated JSON: a non-fatal error each; the connection goes on.
    let mut ws = raw_hello(&url, &accounts, "alice").await;
    for garbage in [
        "{not json",
        r#"{"type":"request","id":1,"request":{"Ping""#,
        r#"{"type":"request","id":1,"request":{"Pull":{"ranges":[{"conversation":"ab","from":5,"to":1}]}}}"#,
    ] {
        ws.send(WsMessage::text(garbage)).await.unwrap();
        match raw_next(&mut ws).await {
            Some(ServerFrame::Error { code, fatal, .. }) => {
                assert_eq!(code, error_code::MALFORMED);
                assert!(!fatal);
            }
            other => panic!("expected a malformed error, got {other:?}"),
        }
    }
    let ping = wire::ClientFrame::Request {
        id: RequestId(9),
        request: Request::Ping,
    };
    ws.send(WsMessage::text(wire::encode(&ping))).await.unwrap();
    assert!(matches!(
        raw_next(&mut ws).await,
        Some(ServerFrame::Response {
            id: RequestId(9),
            ..
        })
    ));
    ws.close(None).await.unwrap();
    bob_is_fine(&host, &mut bob, 2).await;

    // Oversized: just over the limit (read and refused) and far over it (cut off).
    for size in [300 * 1024, 4 * 1024 * 1024] {
        let mut ws = raw_hello(&url, &accounts, "alice").await;
        let big = format!(
            r#"{{"type":"request","id":1,"pad":"{}"}}"#,
            "x".repeat(size)
        );
        // The server may close before the whole frame is written.
        let _ = ws.send(WsMessage::text(big)).await;
        expect_fatal(&mut ws, error_code::TOO_LARGE, size > 512 * 1024).await;
        bob_is_fine(&host, &mut bob, 3).await;
    }

    // A binary frame.
    let mut ws = raw_hello(&url, &accounts, "alice").await;
    ws.send(WsMessage::binary(vec![0u8, 159, 146, 150]))
        .await
        .unwrap();
    expect_fatal(&mut ws, error_code::MALFORMED, false).await;
    bob_is_fine(&host, &mut bob, 4).await;

    // A hello of a newer protocol version (with a field this version does not know).
    let mut ws = raw(&url).await;
    ws.send(WsMessage::text(format!(
        r#"{{"type":"hello","version":2,"user":"alice","device":"d","token":"{}","compression":"zstd"}}"#,
        accounts.token("alice")
    )))
    .await
    .unwrap();
    expect_fatal(&mut ws, error_code::UNSUPPORTED_VERSION, false).await;

    // A request before the hello.
    let mut ws = raw(&url).await;
    ws.send(WsMessage::text(wire::encode(&ping))).await.unwrap();
    expect_fatal(&mut ws, error_code::PROTOCOL, false).await;

    // A second hello.
    let mut ws = raw_hello(&url, &accounts, "alice").await;
    let hello = wire::hello(
        &user("alice"),
        &DeviceId::from("raw"),
        &accounts.token("alice"),
    );
    ws.send(WsMessage::text(wire::encode(&hello)))
        .await
        .unwrap();
    expect_fatal(&mut ws, error_code::PROTOCOL, false).await;

    bob_is_fine(&host, &mut bob, 5).await;
    eventually("only bob is left", || async { host.connections() == 1 }).await;
    bob.close().await;
    host.shutdown().await.unwrap();
}

// ----- (g) rate limit -----

#[tokio::test]
async fn requests_over_the_rate_are_refused_not_dropped() {
    let (store, accounts) = fixture();
    let options = ServerOptions {
        rate_per_sec: 1,
        rate_burst: 3,
        ..ServerOptions::default()
    };
    let host = start_server(store, options).await;
    let mut conn = WsConnection::open(
        &host.url(),
        &user("bob"),
        &DeviceId::from("b1"),
        &accounts.token("bob"),
        &WsOptions::default(),
    )
    .await
    .unwrap();
    let started = tokio::time::Instant::now();
    for id in 1..=10 {
        conn.feed_request(RequestId(id), Request::Ping)
            .await
            .unwrap();
    }
    conn.flush().await.unwrap();
    let (mut pongs, mut limited) = (BTreeSet::new(), BTreeSet::new());
    while pongs.len() + limited.len() < 10 {
        match next_frame(&mut conn).await {
            ServerFrame::Response {
                id,
                response: Response::Pong { .. },
            } => assert!(pongs.insert(id)),
            ServerFrame::Response {
                id,
                response: Response::Error(err),
            } => {
                assert_eq!(err.error_code(), Some(ErrorCode::RateLimited));
                assert!(!err.permanent);
                assert!(limited.insert(id));
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    // The burst passes; then one token refills per second (a loaded machine may take a
    // while to read ten frames, so allow for the time it took).
    let allowed = 4.0 + started.elapsed().as_secs_f64();
    assert!(pongs.len() >= 3, "{pongs:?}");
    assert!(pongs.len() as f64 <= allowed, "{pongs:?}");
    assert!(pongs.contains(&RequestId(1)));
    assert!(!limited.is_empty());
    conn.close().await;
    host.shutdown().await.unwrap();
}

// ----- (h) idle timeout -----

#[tokio::test]
async fn a_silent_connection_is_closed() {
    let (store, accounts) = fixture();
    let options = ServerOptions {
        idle_timeout: Duration::from_millis(500),
        heartbeat: Duration::from_secs(3_600),
        ..ServerOptions::default()
    };
    let host = start_server(store, options).await;
    let opened = tokio::time::Instant::now();
    let mut conn = WsConnection::open(
        &host.url(),
        &user("bob"),
        &DeviceId::from("b1"),
        &accounts.token("bob"),
        &WsOptions::default(),
    )
    .await
    .unwrap();
    match next_frame(&mut conn).await {
        ServerFrame::Error { code, fatal, .. } => {
            assert_eq!(code, error_code::IDLE);
            assert!(fatal);
        }
        other => panic!("expected idle_timeout, got {other:?}"),
    }
    assert!(opened.elapsed() >= Duration::from_millis(400));
    assert!(timeout(WAIT, conn.next_frame()).await.unwrap().is_none());
    eventually("the connection is gone", || async {
        host.connections() == 0
    })
    .await;
    host.shutdown().await.unwrap();
}

// ----- clean shutdown -----

#[tokio::test]
async fn shutdown_answers_every_request_it_read() {
    let (store, accounts) = fixture();
    let host = start_server(store, ServerOptions::default()).await;
    let conn = WsConnection::open(
        &host.url(),
        &user("alice"),
        &DeviceId::from("a1"),
        &accounts.token("alice"),
        &WsOptions::default(),
    )
    .await
    .unwrap();
    let (mut sink, mut frames) = conn.split();
    let n = 200u64;
    for i in 0..n {
        let send = Request::Send {
            conversation: ab(),
            client_msg_id: ClientMsgId::from(format!("s-{i}")),
            kind: ContentKind::Text,
            content: text("pipelined"),
            created_at: wall_clock(),
        };
        sink.feed_request(RequestId(i), send).await.unwrap();
    }
    sink.flush().await.unwrap();
    // Shut down while the sends are in flight.
    let stopping = tokio::spawn(host.shutdown());
    let mut acked = BTreeSet::new();
    let mut shutdown_seen = false;
    while let Some(frame) = timeout(WAIT, frames.next()).await.unwrap() {
        match frame.unwrap() {
            ServerFrame::Response {
                id,
                response: Response::SendAck { .. },
            } => {
                assert!(!shutdown_seen, "nothing after the shutdown frame");
                assert!(acked.insert(id));
            }
            ServerFrame::Error { code, fatal, .. } => {
                assert_eq!(code, error_code::SHUTDOWN);
                assert!(fatal);
                shutdown_seen = true;
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    assert!(shutdown_seen);
    let store = timeout(WAIT, stopping).await.unwrap().unwrap().unwrap();
    let max = store.conversation(&ab()).unwrap().unwrap().max_seq;
    let stored = store.messages(&ab(), Seq(1), max, usize::MAX).unwrap();
    // Every stored send was acked, every ack is stored.
    assert_eq!(stored.len(), acked.len());
    assert!(acked.len() as u64 <= n);
}

// ----- slow consumers -----

#[tokio::test]
async fn a_connection_that_cannot_keep_up_is_closed_as_a_slow_consumer() {
    let (store, accounts) = fixture();
    let options = ServerOptions {
        outgoing_queue: 1,
        ..ServerOptions::default()
    };
    let host = start_server(store, options).await;
    let mut bob = WsConnection::open(
        &host.url(),
        &user("bob"),
        &DeviceId::from("b1"),
        &accounts.token("bob"),
        &WsOptions::default(),
    )
    .await
    .unwrap();
    // One admin call routes every push at once: the queue of one overflows.
    append(&host, "alice", &ab(), 2_000).await;
    let mut pushes = 0;
    let code = loop {
        match next_frame(&mut bob).await {
            ServerFrame::Push {
                push: Push::Message(_),
            } => pushes += 1,
            ServerFrame::Error { code, fatal, .. } => {
                assert!(fatal);
                break code;
            }
            other => panic!("unexpected {other:?}"),
        }
    };
    assert_eq!(code, error_code::SLOW_CONSUMER);
    assert!(pushes < 2_000);
    assert!(timeout(WAIT, bob.next_frame()).await.unwrap().is_none());
    eventually("bob is gone", || async { host.connections() == 0 }).await;
    // Everything is still on the server, to be pulled after reconnecting.
    assert_eq!(on_server(&host, &ab()).await.len(), 2_000);
    host.shutdown().await.unwrap();
}
