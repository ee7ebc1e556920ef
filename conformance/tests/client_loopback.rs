//! The async driver end to end: [`Client`] on tokio with [`TokioRuntime`], over
//! [`MemoryStorage`], talking to the real inbox rules ([`ServerCore`] over the memory server
//! store) through the in-process [`LoopbackServer`]. No sockets, real time: engine timings are
//! short and every wait is bounded, so a bug fails fast instead of hanging.
//!
//! [`ServerCore`]: tidemark_conformance::server::ServerCore

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test helpers: a failed setup step is a failed test"
)]

use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use tidemark::storage::{MemoryStorage, Storage};
use tidemark::transport::protocol::ServerError;
use tidemark::{
    Client, ClientError, ClientMsgId, CommandError, ConnectionState, ContentKind, ConversationId,
    ConversationKind, DeviceId, Direction, EngineConfig, Event, EventStream, HistoryLoaded,
    Message, MessageStatus, Seq, SyncPolicy, SyncState, TokioRuntime, UserId,
};
use tidemark_conformance::loopback::{LoopbackServer, LoopbackTransport};
use tokio::task::JoinHandle;
use tokio::time::{sleep, timeout};

/// The longest any single wait may take before the test fails.
const WAIT: Duration = Duration::from_secs(10);
/// How long to keep listening after the expected events, to catch duplicates.
const QUIET: Duration = Duration::from_millis(200);

type Server = LoopbackServer<TokioRuntime>;

fn user(name: &str) -> UserId {
    UserId::from(name)
}

fn conv() -> ConversationId {
    ConversationId::from("ab")
}

/// A server with alice and bob sharing the direct conversation `ab`.
fn server() -> Server {
    let server = LoopbackServer::new(TokioRuntime::new());
    server.create_user(&user("alice")).unwrap();
    server.create_user(&user("bob")).unwrap();
    server
        .create_conversation(
            &conv(),
            ConversationKind::Direct,
            &[user("alice"), user("bob")],
        )
        .unwrap();
    server
}

/// Short timings so reconnects, restarts and retries happen within milliseconds.
fn config(name: &str, seed: u64) -> EngineConfig {
    let mut config = EngineConfig::new(user(name), DeviceId::from(format!("{name}-phone")));
    config.seed = seed;
    config.heartbeat_interval_ms = 50;
    config.request_timeout_ms = 3_000;
    config.reconnect_min_ms = 10;
    config.reconnect_max_ms = 40;
    config.send_retry_min_ms = 10;
    config
}

/// One running client: its driver task, the client, its event stream and store.
struct Device {
    name: String,
    client: Client,
    events: EventStream,
    storage: MemoryStorage,
    task: JoinHandle<()>,
    /// Every event taken from the stream so far, in order.
    seen: Vec<Event>,
}

async fn start(server: &Server, name: &str, seed: u64, storage: MemoryStorage) -> Device {
    start_with(server, config(name, seed), storage, |_| {}).await
}

/// Starts a client for `config` (after `setup` saw it) and spawns its `run`.
async fn start_with(
    server: &Server,
    config: EngineConfig,
    storage: MemoryStorage,
    setup: impl FnOnce(&Client),
) -> Device {
    let name = format!("{}/{}", config.user, config.device);
    let transport: LoopbackTransport<TokioRuntime> =
        server.transport(config.user.clone(), config.device.clone());
    let (client, driver) = Client::start(config, storage.clone(), transport, TokioRuntime)
        .await
        .unwrap();
    let events = client.events();
    setup(&client);
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
            Ok(None) => panic!(
                "{}: stream ended waiting for {what}; saw {:#?}",
                self.name, self.seen
            ),
            Err(_) => panic!(
                "{}: timed out waiting for {what}; saw {:#?}",
                self.name, self.seen
            ),
        }
    }

    /// Like [`Device::wait_for`], but done at once if an event taken since `mark` (an index
    /// into `seen`) matches already.
    async fn wait_since(&mut self, mark: usize, what: &str, matches: impl Fn(&Event) -> bool) {
        if !self.seen[mark..].iter().any(&matches) {
            self.wait_for(what, matches).await;
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

    async fn disconnected(&mut self) {
        self.wait_for("Disconnected", |e| {
            *e == Event::ConnectionChanged {
                state: ConnectionState::Disconnected,
            }
        })
        .await;
    }

    /// Waits for the ack of `id` and returns its seq.
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

    /// Takes events until the messages announced as new in `ab` so far cover `seqs`.
    async fn received_seqs(&mut self, seqs: &[u64]) {
        loop {
            let have: Vec<u64> = received(&self.seen)
                .iter()
                .filter_map(|m| m.seq.map(|s| s.0))
                .collect();
            if seqs.iter().all(|s| have.contains(s)) {
                return;
            }
            self.wait_for("MessagesReceived", |e| {
                matches!(e, Event::MessagesReceived { .. })
            })
            .await;
        }
    }

    async fn send(&self, text: &str) -> ClientMsgId {
        timeout(WAIT, self.client.send_text(&conv(), text))
            .await
            .expect("send_message timed out")
            .unwrap()
    }

    /// Shuts the client down; returns it and the events the stream still yielded, after
    /// checking that the driver finished and the stream ended.
    async fn stop(mut self) -> (Client, Vec<Event>) {
        timeout(WAIT, self.client.shutdown())
            .await
            .expect("shutdown timed out");
        timeout(WAIT, self.task)
            .await
            .expect("the driver did not finish after shutdown")
            .expect("the driver task panicked");
        let rest: Vec<Event> = timeout(WAIT, self.events.by_ref().collect())
            .await
            .expect("the event stream did not end after shutdown");
        self.seen.extend(rest.iter().cloned());
        (self.client, self.seen)
    }
}

/// Every message announced as new in `ab`, in announcement order.
fn received(events: &[Event]) -> Vec<Message> {
    events
        .iter()
        .filter_map(|e| match e {
            Event::MessagesReceived {
                conversation,
                messages,
            } if *conversation == conv() => Some(messages.clone()),
            _ => None,
        })
        .flatten()
        .collect()
}

fn sent_count(events: &[Event], id: &ClientMsgId) -> usize {
    events
        .iter()
        .filter(|e| matches!(e, Event::MessageSent { client_msg_id, .. } if client_msg_id == id))
        .count()
}

/// The stored messages of `ab` with a seq, ascending, as (seq, sender, client id, content).
async fn stored(storage: &MemoryStorage) -> Vec<(u64, String, String, Vec<u8>)> {
    storage
        .messages_page(&conv(), None, Direction::Before, 1_000)
        .await
        .unwrap()
        .into_iter()
        .map(|m| {
            assert_eq!(
                m.status,
                MessageStatus::Sent,
                "a message with a seq is sent"
            );
            (
                m.seq.expect("paged messages have seqs").0,
                m.sender.0,
                m.client_msg_id.0,
                m.content,
            )
        })
        .collect()
}

/// What the server holds for `ab`, in the same form.
fn on_server(server: &Server) -> Vec<(u64, String, String, Vec<u8>)> {
    server
        .messages(&conv())
        .unwrap()
        .into_iter()
        .map(|m| (m.seq.0, m.sender.0, m.client_msg_id.0, m.content))
        .collect()
}

async fn unread(storage: &MemoryStorage) -> (u64, u64) {
    let conversation = storage
        .conversation(&conv())
        .await
        .unwrap()
        .expect("ab is stored");
    (conversation.unread, storage.total_unread().await.unwrap())
}

/// Polls `check` until it holds; fails after `WAIT`.
async fn eventually<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let polled = timeout(WAIT, async {
        while !check().await {
            sleep(Duration::from_millis(5)).await;
        }
    })
    .await;
    assert!(polled.is_ok(), "timed out waiting until {what}");
}

fn text(s: &str) -> Vec<u8> {
    s.as_bytes().to_vec()
}

// ----- (a) two users chat -----

#[tokio::test]
async fn two_users_chat_and_converge() {
    let server = server();
    let mut alice = start(&server, "alice", 1, MemoryStorage::new()).await;
    let mut bob = start(&server, "bob", 2, MemoryStorage::new()).await;
    alice.synced().await;
    bob.synced().await;

    // Alice sends; bob is told of it by push, alice of its ack.
    let hello = alice.send("hello bob").await;
    assert_eq!(alice.sent(&hello).await, Seq(1));
    bob.received_seqs(&[1]).await;
    let got = received(&bob.seen);
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].client_msg_id, hello);
    assert_eq!(got[0].sender, user("alice"));
    assert_eq!(got[0].content, text("hello bob"));
    assert_eq!(got[0].status, MessageStatus::Sent);
    // The event follows the commit: the store already has what it says.
    assert_eq!(unread(&bob.storage).await, (1, 1));
    assert_eq!(
        unread(&alice.storage).await,
        (0, 0),
        "own messages are never unread"
    );

    // Bob replies: sending marks his side read.
    let reply = bob.send("hi alice").await;
    assert_eq!(bob.sent(&reply).await, Seq(2));
    alice.received_seqs(&[2]).await;
    assert_eq!(unread(&bob.storage).await, (0, 0));
    assert_eq!(unread(&alice.storage).await, (1, 1));

    // Alice reads: locally at once (with an event) and then on the server.
    timeout(WAIT, alice.client.mark_read(&conv(), Seq(2)))
        .await
        .unwrap()
        .unwrap();
    alice
        .wait_for("total unread 0", |e| {
            *e == Event::TotalUnreadChanged { total: 0 }
        })
        .await;
    assert_eq!(unread(&alice.storage).await, (0, 0));
    eventually("the server has alice's read seq", || async {
        server.read_seq(&user("alice"), &conv()).unwrap() == Seq(2)
    })
    .await;
    assert_eq!(server.read_seq(&user("bob"), &conv()).unwrap(), Seq(2));

    // Both stores converge on the server's content.
    alice.settle().await;
    bob.settle().await;
    let expected = on_server(&server);
    assert_eq!(expected.len(), 2);
    assert_eq!(stored(&alice.storage).await, expected);
    assert_eq!(stored(&bob.storage).await, expected);
    // Each side is told of the other's message once and never of its own.
    assert_eq!(received(&alice.seen).len(), 1);
    assert_eq!(received(&bob.seen).len(), 1);
    assert_eq!(sent_count(&alice.seen, &hello), 1);
    assert_eq!(sent_count(&bob.seen, &reply), 1);
    for device in [&alice, &bob] {
        assert!(device.storage.outbox().await.unwrap().is_empty());
        device.storage.check_integrity().await.unwrap();
    }
    alice.stop().await;
    bob.stop().await;
}

// ----- (b) offline, then online -----

#[tokio::test]
async fn messages_sent_while_offline_are_synced_once_after_reconnect() {
    let server = server();
    let mut bob = start(&server, "bob", 2, MemoryStorage::new()).await;
    bob.synced().await;
    let first = server
        .append_as(&user("alice"), &conv(), ContentKind::Text, text("m1"))
        .unwrap();
    bob.received_seqs(&[1]).await;

    // The server goes down: bob's connection drops and reconnects are refused.
    server.set_down(true);
    assert_eq!(server.disconnect_user(&user("bob")), 1);
    bob.disconnected().await;
    let mark = bob.seen.len();
    let attempts = server.connect_attempts();
    let mut offline = Vec::new();
    for body in ["m2", "m3", "m4"] {
        offline.push(
            server
                .append_as(&user("alice"), &conv(), ContentKind::Text, text(body))
                .unwrap(),
        );
    }
    eventually("bob retried twice while down", || async {
        server.connect_attempts() >= attempts + 2
    })
    .await;
    assert_eq!(
        stored(&bob.storage).await.len(),
        1,
        "nothing arrives while down"
    );
    assert_eq!(server.connections_of(&user("bob")), 0);
    // A read mark made offline is applied locally and sent once the server is back.
    timeout(WAIT, bob.client.mark_read(&conv(), Seq(1)))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(server.read_seq(&user("bob"), &conv()).unwrap(), Seq(0));

    // Back up: bob reconnects and syncs what he missed.
    server.set_down(false);
    bob.synced().await;
    bob.received_seqs(&[2, 3, 4]).await;
    bob.settle().await;
    assert!(bob.seen[mark..].contains(&Event::ConnectionChanged {
        state: ConnectionState::Connected
    }));

    // Each message announced exactly once, in seq order, with its server content.
    let announced = received(&bob.seen);
    let expected: Vec<_> = std::iter::once(&first).chain(&offline).cloned().collect();
    assert_eq!(
        announced
            .iter()
            .map(|m| (m.seq, m.client_msg_id.clone(), m.content.clone()))
            .collect::<Vec<_>>(),
        expected
            .iter()
            .map(|m| (Some(m.seq), m.client_msg_id.clone(), m.content.clone()))
            .collect::<Vec<_>>(),
    );
    assert_eq!(stored(&bob.storage).await, on_server(&server));
    assert_eq!(unread(&bob.storage).await, (3, 3), "m1 was read offline");
    eventually("the offline read mark reached the server", || async {
        server.read_seq(&user("bob"), &conv()).unwrap() == Seq(1)
    })
    .await;
    bob.storage.check_integrity().await.unwrap();
    bob.stop().await;
}

// ----- (c) restart with a pending outbox -----

#[tokio::test]
async fn pending_send_survives_a_restart_and_is_acked_once() {
    let server = server();
    let storage = MemoryStorage::new();
    let mut alice = start(&server, "alice", 1, storage.clone()).await;
    alice.synced().await;

    server.set_down(true);
    server.disconnect_all();
    alice.disconnected().await;
    let id = alice.send("written offline").await;
    // Stored with its outbox entry by the time `send_message` returns.
    assert_eq!(storage.outbox().await.unwrap().len(), 1);
    let (_, events) = alice.stop().await;
    assert_eq!(sent_count(&events, &id), 0);
    assert!(on_server(&server).is_empty(), "nothing reached the server");
    let pending = storage
        .message_by_client_id(&conv(), &user("alice"), &id)
        .await
        .unwrap()
        .expect("the pending row is stored");
    assert_eq!(pending.status, MessageStatus::Pending);

    // A new process on the same store, a different seed: the outbox is resent.
    let mut alice = start(&server, "alice", 99, storage.clone()).await;
    server.set_down(false);
    assert_eq!(alice.sent(&id).await, Seq(1));
    alice
        .wait_since(0, "SyncFinished", |e| *e == Event::SyncFinished)
        .await;
    alice.settle().await;
    assert_eq!(sent_count(&alice.seen, &id), 1);
    let server_copy = on_server(&server);
    assert_eq!(server_copy.len(), 1, "the server holds exactly one copy");
    assert_eq!(server_copy[0].2, id.0);
    assert_eq!(stored(&storage).await, server_copy);
    assert!(storage.outbox().await.unwrap().is_empty());
    assert!(storage.unsent_messages(&conv()).await.unwrap().is_empty());
    assert!(
        received(&alice.seen).is_empty(),
        "an own send is not announced as received"
    );
    storage.check_integrity().await.unwrap();
    alice.stop().await;
}

#[tokio::test]
async fn send_whose_ack_was_lost_is_resent_after_restart_without_a_second_copy() {
    let server = server();
    let storage = MemoryStorage::new();
    let mut alice = start(&server, "alice", 1, storage.clone()).await;
    alice.synced().await;

    // The server stores the message but the ack never arrives.
    server.set_lose_responses(true);
    let id = alice.send("ack lost").await;
    eventually("the server stored the message", || async {
        on_server(&server).len() == 1
    })
    .await;
    let (_, events) = alice.stop().await;
    assert_eq!(sent_count(&events, &id), 0);
    assert_eq!(storage.outbox().await.unwrap().len(), 1);
    server.set_lose_responses(false);

    let mut alice = start(&server, "alice", 7, storage.clone()).await;
    assert_eq!(alice.sent(&id).await, Seq(1));
    alice
        .wait_since(0, "SyncFinished", |e| *e == Event::SyncFinished)
        .await;
    alice.settle().await;
    assert_eq!(sent_count(&alice.seen, &id), 1);
    let server_copy = on_server(&server);
    assert_eq!(server_copy.len(), 1, "the resend was deduplicated");
    assert_eq!(stored(&storage).await, server_copy);
    assert!(storage.outbox().await.unwrap().is_empty());
    assert!(storage.unsent_messages(&conv()).await.unwrap().is_empty());
    storage.check_integrity().await.unwrap();
    alice.stop().await;
}

// ----- (d) storage failure -----

#[tokio::test]
async fn storage_failure_restarts_the_engine_and_loses_nothing() {
    let server = server();
    let mut bob = start(&server, "bob", 2, MemoryStorage::new()).await;
    bob.synced().await;
    let attempts = server.connect_attempts();

    // The batch of the first push fails: the engine stops and drops its connection.
    bob.storage.fail_next_applies(1);
    server
        .append_as(&user("alice"), &conv(), ContentKind::Text, text("f1"))
        .unwrap();
    bob.wait_for("StorageFailed", |e| {
        matches!(e, Event::StorageFailed { .. })
    })
    .await;
    for body in ["f2", "f3"] {
        server
            .append_as(&user("alice"), &conv(), ContentKind::Text, text(body))
            .unwrap();
    }

    // A new engine from the store reconnects and pulls what the failed batch lost.
    bob.received_seqs(&[1, 2, 3]).await;
    bob.settle().await;
    assert!(
        server.connect_attempts() > attempts,
        "the new engine reconnected"
    );
    let announced: Vec<u64> = received(&bob.seen)
        .iter()
        .map(|m| m.seq.unwrap().0)
        .collect();
    assert_eq!(
        announced,
        [1, 2, 3],
        "each message announced exactly once, in order"
    );
    assert_eq!(stored(&bob.storage).await, on_server(&server));
    assert_eq!(unread(&bob.storage).await, (3, 3));
    bob.storage.check_integrity().await.unwrap();
    assert_eq!(bob.client.sync_state(), SyncState::Synced);
    assert_eq!(bob.client.total_unread(), 3);
    bob.stop().await;
}

// ----- (e) the listener sees what the stream sees -----

#[tokio::test]
async fn listener_receives_the_same_events_as_the_stream() {
    let server = server();
    let heard = Arc::new(Mutex::new(Vec::new()));
    let sink = heard.clone();
    let mut bob = start_with(
        &server,
        config("bob", 2),
        MemoryStorage::new(),
        move |client| {
            client.add_listener(move |event: &Event| {
                sink.lock().unwrap().push(event.clone());
            });
        },
    )
    .await;
    bob.synced().await;
    server
        .append_as(&user("alice"), &conv(), ContentKind::Text, text("one"))
        .unwrap();
    server
        .append_as(&user("alice"), &conv(), ContentKind::Text, text("two"))
        .unwrap();
    bob.received_seqs(&[1, 2]).await;
    let id = bob.send("three").await;
    bob.sent(&id).await;
    timeout(WAIT, bob.client.mark_read(&conv(), Seq(3)))
        .await
        .unwrap()
        .unwrap();
    let (_, streamed) = bob.stop().await;

    let heard = heard.lock().unwrap().clone();
    assert_eq!(heard, streamed);
    assert!(heard.contains(&Event::SyncFinished));
    assert_eq!(received(&heard).len(), 2);
    assert_eq!(sent_count(&heard, &id), 1);
    assert_eq!(
        heard.last(),
        Some(&Event::ConnectionChanged {
            state: ConnectionState::Disconnected
        })
    );
}

// ----- (f) shutdown -----

#[tokio::test]
async fn shutdown_ends_run_closes_the_stream_and_the_connection() {
    let server = server();
    let mut bob = start(&server, "bob", 2, MemoryStorage::new()).await;
    bob.synced().await;
    assert_eq!(server.connections_of(&user("bob")), 1);
    let other = bob.client.clone();

    let (_client, events) = bob.stop().await;
    assert_eq!(
        events.last(),
        Some(&Event::ConnectionChanged {
            state: ConnectionState::Disconnected
        })
    );
    assert_eq!(
        server.connections_of(&user("bob")),
        0,
        "the connection was closed"
    );
    assert!(other.is_closed());
    assert!(matches!(
        other
            .send_message(&conv(), ContentKind::Text, text("late"))
            .await,
        Err(ClientError::Closed)
    ));
    timeout(WAIT, other.shutdown())
        .await
        .expect("a second shutdown returns at once");
    // Nothing reconnects afterwards.
    let attempts = server.connect_attempts();
    sleep(QUIET).await;
    assert_eq!(server.connect_attempts(), attempts);
}

// ----- more paths through the driver -----

#[tokio::test]
async fn kicked_client_stays_disconnected() {
    let server = server();
    let mut bob = start(&server, "bob", 2, MemoryStorage::new()).await;
    bob.synced().await;
    assert_eq!(server.kick(&user("bob"), "signed in elsewhere"), 1);
    let event = bob
        .wait_for("Kicked", |e| matches!(e, Event::Kicked { .. }))
        .await;
    assert_eq!(
        event,
        Event::Kicked {
            reason: "signed in elsewhere".into()
        }
    );
    bob.disconnected().await;
    let attempts = server.connect_attempts();
    bob.settle().await;
    assert_eq!(
        server.connect_attempts(),
        attempts,
        "no reconnect after a kick"
    );
    assert_eq!(server.connections_of(&user("bob")), 0);
    bob.stop().await;
}

#[tokio::test]
async fn send_errors_retry_transient_and_fail_permanent_then_retry_by_handle() {
    let server = server();
    let mut alice = start(&server, "alice", 1, MemoryStorage::new()).await;
    alice.synced().await;

    // A transient error is retried after a backoff under the same id.
    server.fail_next_sends(
        1,
        ServerError {
            code: "busy".into(),
            message: "try later".into(),
            permanent: false,
        },
    );
    let first = alice.send("after a retry").await;
    assert_eq!(alice.sent(&first).await, Seq(1));

    // A permanent error fails the send; the app retries it through the handle.
    server.fail_next_sends(
        1,
        ServerError {
            code: "nope".into(),
            message: "refused".into(),
            permanent: true,
        },
    );
    let second = alice.send("refused once").await;
    alice
        .wait_for(
            "SendFailed",
            |e| matches!(e, Event::SendFailed { client_msg_id, .. } if *client_msg_id == second),
        )
        .await;
    let failed = alice
        .storage
        .message_by_client_id(&conv(), &user("alice"), &second)
        .await
        .unwrap()
        .unwrap();
    assert!(matches!(failed.status, MessageStatus::Failed { .. }));
    assert_eq!(on_server(&server).len(), 1);

    timeout(WAIT, alice.client.retry(&conv(), &second))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(alice.sent(&second).await, Seq(2));
    alice.settle().await;
    assert_eq!(sent_count(&alice.seen, &first), 1);
    assert_eq!(sent_count(&alice.seen, &second), 1);
    assert_eq!(stored(&alice.storage).await, on_server(&server));
    assert!(alice
        .storage
        .unsent_messages(&conv())
        .await
        .unwrap()
        .is_empty());
    alice.storage.check_integrity().await.unwrap();
    alice.stop().await;
}

#[tokio::test]
async fn two_devices_of_one_user_share_messages_and_read_state() {
    let server = server();
    let mut phone = start(&server, "alice", 1, MemoryStorage::new()).await;
    let mut laptop_config = config("alice", 3);
    laptop_config.device = DeviceId::from("alice-laptop");
    let mut laptop = start_with(&server, laptop_config, MemoryStorage::new(), |_| {}).await;
    let mut bob = start(&server, "bob", 2, MemoryStorage::new()).await;
    for device in [&mut phone, &mut laptop, &mut bob] {
        device.synced().await;
    }

    // Sent from the phone: the laptop stores it as alice's own message, never unread.
    let id = phone.send("from the phone").await;
    assert_eq!(phone.sent(&id).await, Seq(1));
    bob.received_seqs(&[1]).await;
    eventually("the laptop stored the phone's message", || async {
        stored(&laptop.storage).await.len() == 1
    })
    .await;
    assert_eq!(stored(&laptop.storage).await[0].2, id.0);
    assert_eq!(unread(&laptop.storage).await, (0, 0));

    // Bob answers: unread on both of alice's devices; read on the laptop clears the phone.
    let answer = bob.send("to both").await;
    assert_eq!(bob.sent(&answer).await, Seq(2));
    phone.received_seqs(&[2]).await;
    laptop.received_seqs(&[2]).await;
    assert_eq!(unread(&phone.storage).await, (1, 1));
    assert_eq!(unread(&laptop.storage).await, (1, 1));
    timeout(WAIT, laptop.client.mark_read(&conv(), Seq(2)))
        .await
        .unwrap()
        .unwrap();
    phone
        .wait_for("the read seq from the laptop", |e| {
            *e == Event::TotalUnreadChanged { total: 0 }
        })
        .await;
    assert_eq!(unread(&phone.storage).await, (0, 0));
    assert_eq!(
        phone
            .storage
            .conversation(&conv())
            .await
            .unwrap()
            .unwrap()
            .read_seq,
        Seq(2)
    );

    for device in [&mut phone, &mut laptop, &mut bob] {
        device.settle().await;
    }
    let expected = on_server(&server);
    for device in [&phone, &laptop, &bob] {
        assert_eq!(stored(&device.storage).await, expected, "{}", device.name);
        device.storage.check_integrity().await.unwrap();
    }
    assert_eq!(received(&bob.seen).len(), 1);
    assert_eq!(sent_count(&phone.seen, &id), 1);
    assert_eq!(
        sent_count(&laptop.seen, &id),
        0,
        "the laptop did not send it"
    );
    for device in [phone, laptop, bob] {
        device.stop().await;
    }
}

#[tokio::test]
async fn newest_first_sync_then_history_through_the_handle() {
    let server = server();
    for n in 1..=6 {
        server
            .append_as(
                &user("alice"),
                &conv(),
                ContentKind::Text,
                text(&format!("h{n}")),
            )
            .unwrap();
    }
    let mut bob_config = config("bob", 2);
    bob_config.policy = SyncPolicy::NewestFirst {
        per_conversation: 2,
        background_fill: false,
    };
    let mut bob = start_with(&server, bob_config, MemoryStorage::new(), |_| {}).await;
    bob.synced().await;
    bob.settle().await;
    let seqs = |rows: Vec<(u64, String, String, Vec<u8>)>| -> Vec<u64> {
        rows.into_iter().map(|r| r.0).collect()
    };
    assert_eq!(
        seqs(stored(&bob.storage).await),
        [5, 6],
        "only the newest two"
    );
    assert!(
        received(&bob.seen).iter().all(|m| m.seq >= Some(Seq(5))),
        "history below the window is not announced as new"
    );
    assert_eq!(
        unread(&bob.storage).await,
        (6, 6),
        "unpulled seqs still count"
    );

    // Without an anchor: the newest `limit` seqs (4..=6), not the ones below the oldest held.
    // The awaited call returns when the seqs are held; the event still follows for apps
    // that read the stream.
    let loaded = timeout(WAIT, bob.client.load_history(&conv(), None, 3))
        .await
        .unwrap()
        .unwrap();
    let whole = HistoryLoaded {
        conversation: conv(),
        complete: true,
    };
    assert_eq!(loaded, whole);
    bob.wait_for("HistoryLoaded", |e| {
        matches!(e, Event::HistoryLoaded { complete: true, .. })
    })
    .await;
    assert_eq!(seqs(stored(&bob.storage).await), [4, 5, 6]);

    // Below an anchor: two more under seq 4.
    let loaded = timeout(WAIT, bob.client.load_history(&conv(), Some(Seq(4)), 2))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(loaded, whole);
    assert_eq!(seqs(stored(&bob.storage).await), [2, 3, 4, 5, 6]);

    // A limit beyond the first seq stops at it.
    let loaded = timeout(WAIT, bob.client.load_history(&conv(), Some(Seq(2)), 50))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(loaded, whole);
    bob.settle().await;
    assert_eq!(stored(&bob.storage).await, on_server(&server));
    assert!(
        received(&bob.seen).iter().all(|m| m.seq >= Some(Seq(5))),
        "loaded history is not announced as new"
    );
    assert_eq!(unread(&bob.storage).await, (6, 6));
    bob.storage.check_integrity().await.unwrap();
    bob.stop().await;
}

#[tokio::test]
async fn cancelled_offline_send_never_reaches_the_server() {
    let server = server();
    let mut alice = start(&server, "alice", 1, MemoryStorage::new()).await;
    alice.synced().await;
    server.set_down(true);
    server.disconnect_all();
    alice.disconnected().await;

    let id = alice.send("changed my mind").await;
    timeout(WAIT, alice.client.cancel(&conv(), &id))
        .await
        .unwrap()
        .unwrap();
    assert!(matches!(
        alice.client.cancel(&conv(), &id).await,
        Err(ClientError::Command(CommandError::UnknownMessage(_)))
    ));
    assert!(alice.storage.outbox().await.unwrap().is_empty());
    assert_eq!(
        alice
            .storage
            .message_by_client_id(&conv(), &user("alice"), &id)
            .await
            .unwrap(),
        None
    );

    server.set_down(false);
    alice.synced().await;
    alice.settle().await;
    assert!(on_server(&server).is_empty());
    assert_eq!(sent_count(&alice.seen, &id), 0);
    alice.storage.check_integrity().await.unwrap();
    alice.stop().await;
}

#[tokio::test]
async fn send_whose_batch_fails_is_refused_and_the_next_send_works() {
    let server = server();
    let mut alice = start(&server, "alice", 1, MemoryStorage::new()).await;
    alice.synced().await;

    // The pending row and outbox entry never commit: the caller must not get an id that no
    // MessageSent or SendFailed will ever follow.
    alice.storage.fail_next_applies(1);
    let lost = timeout(
        WAIT,
        alice
            .client
            .send_message(&conv(), ContentKind::Text, text("never stored")),
    )
    .await
    .expect("send_message timed out");
    if let Ok(id) = &lost {
        alice
            .wait_for("MessageSent or SendFailed for the lost send", |e| match e {
                Event::MessageSent { client_msg_id, .. }
                | Event::SendFailed { client_msg_id, .. } => client_msg_id == id,
                _ => false,
            })
            .await;
    }
    assert!(
        matches!(lost, Err(ClientError::Storage(_))),
        "a send whose batch failed is refused: {lost:?}"
    );
    alice
        .wait_for("StorageFailed", |e| {
            matches!(e, Event::StorageFailed { .. })
        })
        .await;
    assert!(alice.storage.outbox().await.unwrap().is_empty());

    // After the restart from the store, sending works again and nothing of the lost one
    // reaches the server.
    alice
        .wait_for("reconnected", |e| {
            *e == Event::ConnectionChanged {
                state: ConnectionState::Connected,
            }
        })
        .await;
    let kept = alice.send("stored").await;
    assert!(
        alice
            .storage
            .message_by_client_id(&conv(), &user("alice"), &kept)
            .await
            .unwrap()
            .is_some(),
        "an accepted send is stored when send_message returns"
    );
    assert_eq!(alice.sent(&kept).await, Seq(1));
    alice.settle().await;
    let server_copy = on_server(&server);
    assert_eq!(server_copy.len(), 1);
    assert_eq!(server_copy[0].2, kept.0);
    assert_eq!(stored(&alice.storage).await, server_copy);
    alice.storage.check_integrity().await.unwrap();
    alice.stop().await;
}

#[tokio::test]
async fn cancel_whose_batch_fails_is_refused_and_the_send_goes_ahead() {
    let server = server();
    let mut alice = start(&server, "alice", 1, MemoryStorage::new()).await;
    alice.synced().await;
    server.set_down(true);
    server.disconnect_all();
    alice.disconnected().await;
    let id = alice.send("cancel me").await;

    alice.storage.fail_next_applies(1);
    let cancelled = timeout(WAIT, alice.client.cancel(&conv(), &id))
        .await
        .expect("cancel timed out");
    assert!(
        matches!(cancelled, Err(ClientError::Storage(_))),
        "a cancel that did not commit is refused: {cancelled:?}"
    );
    alice
        .wait_for("StorageFailed", |e| {
            matches!(e, Event::StorageFailed { .. })
        })
        .await;
    assert_eq!(alice.storage.outbox().await.unwrap().len(), 1);

    // The cancel had no effect: the restarted engine sends the message once.
    server.set_down(false);
    assert_eq!(alice.sent(&id).await, Seq(1));
    alice.settle().await;
    assert_eq!(sent_count(&alice.seen, &id), 1);
    assert_eq!(on_server(&server).len(), 1);
    assert_eq!(stored(&alice.storage).await, on_server(&server));
    alice.storage.check_integrity().await.unwrap();
    alice.stop().await;
}
