//! The browser backends of the shared suites: one database per simulated device, named
//! uniquely per backend value so that tests (and model cases) never share a store, also
//! across runs on one origin. And what several test files run: a `tidemark::Client` on a
//! store.

#![allow(dead_code, reason = "each test file uses part of the support")]
#![allow(clippy::unwrap_used, reason = "tests fail loudly")]

use std::cell::Cell;

use futures::StreamExt;
use tidemark::runtime::BrowserRuntime;
use tidemark::{Client, ConversationId, ConversationKind, DeviceId, EngineConfig, Event, UserId};
use tidemark_conformance::loopback::LoopbackServer;
use tidemark_conformance::Backend;
use tidemark_engine::{ContentKind, Seq, Storage, StorageError};
use tidemark_storage_web::{FileLayer, OpenOptions, WebStorage};

thread_local! {
    static NEXT: Cell<u64> = const { Cell::new(0) };
}

/// Device `i`'s store is database `<prefix>-<i>` on one file layer.
pub struct WebDevices {
    prefix: String,
    layer: FileLayer,
}

impl WebDevices {
    /// Fresh databases on `layer`.
    pub fn new(layer: FileLayer) -> Self {
        let n = NEXT.with(|next| {
            let n = next.get();
            next.set(n + 1);
            n
        });
        // The clock keeps names apart across runs on one origin (a fixed test address).
        let run = js_sys::Date::now() as u64;
        Self {
            prefix: format!("t{run}-{n}"),
            layer,
        }
    }

    /// The database name of device `device`.
    pub fn name(&self, device: usize) -> String {
        format!("{}-{device}", self.prefix)
    }
}

#[async_trait::async_trait(?Send)]
impl Backend for WebDevices {
    type Store = WebStorage;

    // A crash in the simulation drops the store without closing it: the browser releases its
    // lock a moment later, so opens wait for the owner rather than fail.
    async fn open(&self, device: usize) -> Result<WebStorage, StorageError> {
        WebStorage::open(
            OpenOptions::new(self.name(device))
                .layer(self.layer)
                .wait_for_owner(true),
        )
        .await
    }

    async fn reopen(&self, device: usize, store: WebStorage) -> Result<WebStorage, StorageError> {
        store.close().await;
        self.open(device).await
    }
}

/// The seqs stored in conversation `chat`, ascending.
pub async fn stored_seqs(store: &WebStorage) -> Vec<u64> {
    let page = store
        .messages_page(
            &ConversationId::from("chat"),
            None,
            tidemark_engine::Direction::Before,
            1_000,
        )
        .await
        .unwrap();
    page.iter().filter_map(|m| m.seq).map(|s| s.0).collect()
}

/// A `tidemark::Client` on a store of `layer` syncs 50 messages from the loopback server
/// and sends one; after a restart (the store closed and opened again) the store holds what
/// the first run showed, and the client finds it all again.
pub async fn client_syncs_and_restarts(layer: FileLayer) {
    let server = LoopbackServer::new(BrowserRuntime::new());
    let (alice, bob) = (UserId::from("alice"), UserId::from("bob"));
    let chat = ConversationId::from("chat");
    server.create_user(&alice).unwrap();
    server.create_user(&bob).unwrap();
    server
        .create_conversation(
            &chat,
            ConversationKind::Direct,
            &[alice.clone(), bob.clone()],
        )
        .unwrap();
    for i in 0..50 {
        server
            .append_as(
                &bob,
                &chat,
                ContentKind::Text,
                format!("hi {i}").into_bytes(),
            )
            .unwrap();
    }
    let devices = WebDevices::new(layer);
    let phone = DeviceId::from("phone");

    let mut seen = Vec::new();
    for run in 0..2 {
        let store = WebStorage::open(OpenOptions::new(devices.name(0)).layer(layer))
            .await
            .unwrap();
        // Everything the last run showed is still there when the store opens again.
        assert_eq!(stored_seqs(&store).await, seen, "{layer:?} run {run}");
        let config = EngineConfig::new(alice.clone(), phone.clone());
        let transport = server.transport(alice.clone(), phone.clone());
        let (client, driver) = Client::start(config, store.clone(), transport, BrowserRuntime)
            .await
            .unwrap();
        let mut events = client.events();
        wasm_bindgen_futures::spawn_local(driver);
        while let Some(event) = events.next().await {
            if matches!(event, Event::SyncFinished) {
                break;
            }
        }
        if run == 0 {
            let id = client.send_text(&chat, "hello bob").await.unwrap();
            while let Some(event) = events.next().await {
                if matches!(&event, Event::MessageSent { client_msg_id, .. } if *client_msg_id == id)
                {
                    break;
                }
            }
        }
        let page = client
            .messages(&chat, None, tidemark::Direction::Before, 100)
            .await
            .unwrap();
        // The newest page at least (older ones fill in the background), ending with
        // alice's own message at seq 51.
        assert!(page.len() >= 21, "{layer:?} run {run}: {}", page.len());
        assert_eq!(page.last().unwrap().seq, Some(Seq(51)));
        // Sending read the conversation up to the sent message.
        assert_eq!(client.total_unread(), 0, "{layer:?} run {run}");
        seen = page.iter().filter_map(|m| m.seq).map(|s| s.0).collect();
        client.shutdown().await;
        drop(client);
        store.close().await;
    }
    let store = WebStorage::open(OpenOptions::new(devices.name(0)).layer(layer))
        .await
        .unwrap();
    store.check_integrity().await.unwrap();
    store.close().await;
}
