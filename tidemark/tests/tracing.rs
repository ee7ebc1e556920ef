//! The driver reports through `tracing`: a span per sync and per request, never message
//! content or tokens. Checked against a real server over WebSocket, with every level on.

#![cfg(not(target_family = "wasm"))]
#![allow(clippy::unwrap_used, reason = "tests fail loudly")]

use std::io::Write;
use std::sync::{Arc, Mutex};

use futures::StreamExt;
use tidemark::storage::MemoryStorage;
use tidemark::{
    Client, ConversationId, ConversationKind, DeviceId, EngineConfig, Event, TokioRuntime, UserId,
};
use tidemark_server::net::{wall_clock, Server, ServerOptions};
use tidemark_server::{issue_token, MemoryServerStore, ServerStore};
use tidemark_transport::native::WsTransport;

/// Everything logged, as text.
#[derive(Clone, Default)]
struct Log(Arc<Mutex<Vec<u8>>>);

impl Write for Log {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[tokio::test(flavor = "current_thread")]
async fn spans_per_sync_and_request_and_no_content_or_token() {
    let log = Log::default();
    let writer = log.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_ansi(false)
        .with_writer(move || writer.clone())
        .finish();
    // This thread runs the client (current_thread runtime); the server's own thread logs
    // elsewhere.
    let _guard = tracing::subscriber::set_default(subscriber);

    let (alice, chat) = (UserId::from("alice"), ConversationId::from("chat"));
    let mut store = MemoryServerStore::new();
    store.create_user(&alice).unwrap();
    store
        .create_conversation(&chat, ConversationKind::Group, std::slice::from_ref(&alice))
        .unwrap();
    let token = issue_token(&mut store, &alice, wall_clock(), None).unwrap();
    let server = Server::start(store, ServerOptions::default())
        .await
        .unwrap();
    let phone = DeviceId::from("phone");
    let transport = WsTransport::new(server.url(), alice.clone(), phone.clone(), token.clone());
    let config = EngineConfig::new(alice, phone);
    let (client, driver) = Client::start(config, MemoryStorage::new(), transport, TokioRuntime)
        .await
        .unwrap();
    let mut events = client.events();
    let driver = tokio::spawn(driver);
    while let Some(event) = events.next().await {
        if event == Event::SyncFinished {
            break;
        }
    }
    let secret = "the-secret-words-of-alice";
    let id = client.send_text(&chat, secret).await.unwrap();
    while let Some(event) = events.next().await {
        if matches!(&event, Event::MessageSent { client_msg_id, .. } if *client_msg_id == id) {
            break;
        }
    }
    client.shutdown().await;
    driver.await.unwrap();
    server.shutdown().await.unwrap();

    let text = String::from_utf8(log.0.lock().unwrap().clone()).unwrap();
    assert!(
        text.contains("sync: tidemark::driver: connected"),
        "a sync span:\n{text}"
    );
    assert!(
        text.contains("sync:request{id=1 kind=\"get_max_seqs\"}"),
        "the sync's requests in its span:\n{text}"
    );
    assert!(text.contains("sync over state=Synced"), "{text}");
    assert!(
        text.contains("kind=\"send\""),
        "a request span per send:\n{text}"
    );
    assert!(text.contains("answered"), "{text}");
    assert!(
        !text.contains(secret),
        "message content in the log:\n{text}"
    );
    assert!(!text.contains(&token), "a token in the log:\n{text}");
}
