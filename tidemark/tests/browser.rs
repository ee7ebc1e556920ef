//! The driver in a browser: headless Chromium, in a dedicated worker (where the OPFS store
//! will run), on the browser's clock and timers (`BrowserRuntime`), against the in-process
//! loopback server. Run by `scripts/check.sh` with wasm-bindgen-test-runner.

#![cfg(target_family = "wasm")]
#![allow(clippy::unwrap_used, reason = "tests fail loudly")]

use futures::StreamExt;
use tidemark::runtime::{BrowserRuntime, Runtime};
use tidemark::storage::MemoryStorage;
use tidemark::{Client, ConversationId, ConversationKind, DeviceId, EngineConfig, Event, UserId};
use tidemark_conformance::loopback::LoopbackServer;
use wasm_bindgen_test::{wasm_bindgen_test, wasm_bindgen_test_configure};

wasm_bindgen_test_configure!(run_in_dedicated_worker);

#[wasm_bindgen_test]
async fn the_browser_clock_moves_and_sleeps_end_at_their_deadline() {
    let rt = BrowserRuntime::new();
    let start = rt.now();
    assert!(start.0 > 1_600_000_000_000, "wall clock in ms: {start:?}");
    rt.sleep_until(start.plus_millis(30)).await;
    assert!(rt.now().0 >= start.0 + 30, "woke early: {:?}", rt.now());
    // A passed deadline ends at once; a dropped sleep clears its timer.
    rt.sleep_until(start).await;
    drop(rt.sleep_until(tidemark::Timestamp(u64::MAX)));
}

#[wasm_bindgen_test]
async fn a_client_syncs_sends_and_lists_in_a_worker() {
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
    server
        .append_as(
            &bob,
            &chat,
            tidemark::ContentKind::Text,
            b"hi alice".to_vec(),
        )
        .unwrap();

    let phone = DeviceId::from("phone");
    let transport = server.transport(alice.clone(), phone.clone());
    let config = EngineConfig::new(alice, phone);
    let (client, driver) = Client::start(config, MemoryStorage::new(), transport, BrowserRuntime)
        .await
        .unwrap();
    let mut events = client.events();
    wasm_bindgen_futures::spawn_local(driver);

    let mut received = 0;
    while let Some(event) = events.next().await {
        match event {
            Event::MessagesReceived { messages, .. } => received += messages.len(),
            Event::SyncFinished => break,
            _ => {}
        }
    }
    assert_eq!(received, 1, "bob's message arrived");
    assert_eq!(client.total_unread(), 1, "and it is unread");
    let id = client.send_text(&chat, "hello bob").await.unwrap();
    while let Some(event) = events.next().await {
        if matches!(&event, Event::MessageSent { client_msg_id, .. } if *client_msg_id == id) {
            break;
        }
    }
    let list = client.conversations(None, 10).await.unwrap();
    assert_eq!(list.len(), 1);
    assert_eq!(list[0].server_max_seq, tidemark::Seq(2));
    let page = client
        .messages(&chat, None, tidemark::Direction::Before, 10)
        .await
        .unwrap();
    let texts: Vec<&[u8]> = page.iter().map(|m| m.content.as_slice()).collect();
    assert_eq!(texts, [&b"hi alice"[..], &b"hello bob"[..]]);
    client.shutdown().await;
    assert!(client.is_closed());
}
