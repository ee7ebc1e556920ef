//! End to end over real WebSockets on loopback: the engine's [`Client`] (on tokio, over
//! [`MemoryStorage`]) with [`WsTransport`] against the reference server host
//! ([`Server`] over [`MemoryServerStore`]) listening on 127.0.0.1, plus raw clients that
//! misbehave on purpose.
//!
//! Every wait is bounded by a generous timeout (the machine may be loaded) and waits for an
//! event or a condition, never for a fixed time.

#![cfg(feature = "server")]
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test helpers: a failed setup step is a failed test"
)]

use std::collections::BTreeSet;
use std::future::Future;
use std::time::Duration;

use futures::StreamExt;
use tidemark_engine::{
    Client, ClientHandle, ClientMsgId, ContentKind, ConversationId, ConversationKind, DeviceId,
    Direction, EngineConfig, Event, EventStream, MemoryStorage, Message, MessageStatus, Seq,
    Storage, SyncPolicy, TokioRuntime, UserId,
};
use tidemark_transport::native::WsTransport;
use tidemark_transport::server::net::{wall_clock, Server, ServerHandle, ServerOptions};
use tidemark_transport::server::{issue_token, MemoryServerStore, ServerStore};
use tokio::task::JoinHandle;
use tokio::time::timeout;

/// The longest any single wait may take before the test fails.
const WAIT: Duration = Duration::from_secs(30);
/// How long to keep listening after the expected events, to catch duplicates.
const QUIET: Duration = Duration::from_millis(300);

type Host = ServerHandle<MemoryServerStore>;
type TestClient = Client<MemoryStorage, WsTransport, TokioRuntime>;

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
    handle: ClientHandle,
    events: EventStream,
    storage: MemoryStorage,
    task: JoinHandle<TestClient>,
    seen: Vec<Event>,
}

async fn start_device(url: &str, config: EngineConfig, token: &str) -> Device {
    let name = format!("{}/{}", config.user, config.device);
    let storage = MemoryStorage::new();
    let transport = WsTransport::new(url, config.user.clone(), config.device.clone(), token);
    let (mut client, events) =
        Client::start(config, storage.clone(), transport, TokioRuntime::new())
            .await
            .unwrap();
    let handle = client.handle();
    let task = tokio::spawn(async move {
        client.run().await;
        client
    });
    Device {
        name,
        handle,
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
            self.handle
                .send_message(conversation, ContentKind::Text, text(body)),
        )
        .await
        .expect("send_message timed out")
        .unwrap()
    }

    async fn stop(self) -> Vec<Event> {
        let mut this = self;
        timeout(WAIT, this.handle.shutdown())
            .await
            .expect("shutdown timed out");
        timeout(WAIT, this.task)
            .await
            .expect("run did not return after shutdown")
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
