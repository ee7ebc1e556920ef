//! What `WebStorage` adds to the SQL layer, in a dedicated worker of headless Chromium: one
//! owner per database (Web Locks), a database deleted under a running store, names, the
//! preferred layer, and a `tidemark::Client` running on each layer. (The shared suites are in
//! `web_suite_*.rs`; reload, browser restart, quota and two pages are in `web-tests/`.)

#![cfg(target_family = "wasm")]
#![allow(clippy::unwrap_used, reason = "tests fail loudly")]

mod support;

use support::{stored_seqs, WebDevices};
use tidemark::runtime::{BrowserRuntime, Runtime};
use tidemark::{ConversationId, ConversationKind, UserId};
use tidemark_engine::{
    ContentKind, Conversation, Message, MessageStatus, Seq, SeqRanges, Storage, StorageError,
    Timestamp, WriteBatch, WriteOp,
};
use tidemark_storage_web::{FileLayer, OpenOptions, WebStorage};
use wasm_bindgen::JsCast;
use wasm_bindgen_test::{wasm_bindgen_test, wasm_bindgen_test_configure};

wasm_bindgen_test_configure!(run_in_dedicated_worker);

const LAYERS: [FileLayer; 2] = [FileLayer::Opfs, FileLayer::IndexedDb];

/// A batch holding conversation `chat` with messages `seqs` (its held range `1..=last`).
fn batch(seqs: std::ops::RangeInclusive<u64>) -> WriteBatch {
    let chat = ConversationId::from("chat");
    let messages = seqs
        .clone()
        .map(|seq| Message {
            conversation: chat.clone(),
            seq: Some(Seq(seq)),
            client_msg_id: format!("m{seq}").as_str().into(),
            sender: UserId::from("bob"),
            kind: ContentKind::Text,
            content: format!("message {seq}").into_bytes(),
            created_at: Timestamp(seq),
            server_time: Some(Timestamp(seq)),
            status: MessageStatus::Sent,
            edit_seq: None,
            revoked: false,
        })
        .collect();
    let conversation = Conversation {
        server_max_seq: Seq(*seqs.end()),
        held: SeqRanges::from_range(Seq(1), Seq(*seqs.end())),
        ..Conversation::new(chat, ConversationKind::Group)
    };
    WriteBatch {
        ops: vec![
            WriteOp::PutMessages(messages),
            WriteOp::PutConversation(conversation),
        ],
    }
}

#[wasm_bindgen_test]
async fn a_second_opener_gets_in_use_and_a_waiting_one_gets_the_store_once_closed() {
    for layer in LAYERS {
        let devices = WebDevices::new(layer);
        let name = devices.name(0);
        let first = WebStorage::open(OpenOptions::new(&name).layer(layer))
            .await
            .unwrap();
        first.apply(batch(1..=3)).await.unwrap();

        let second = WebStorage::open(OpenOptions::new(&name).layer(layer)).await;
        assert!(
            matches!(second, Err(StorageError::InUse { .. })),
            "{layer:?}: {second:?}"
        );
        // Deleting an open database is refused the same way.
        let deleted = WebStorage::delete(&name, layer).await;
        assert!(
            matches!(deleted, Err(StorageError::InUse { .. })),
            "{deleted:?}"
        );

        // A waiting opener gets it as soon as the owner closes, with everything committed.
        let waiting = WebStorage::open(OpenOptions::new(&name).layer(layer).wait_for_owner(true));
        let close = async {
            let clock = BrowserRuntime::new();
            clock.sleep_until(clock.now().plus_millis(20)).await;
            first.close().await;
        };
        let (waited, ()) = futures::join!(waiting, close);
        let reopened = waited.unwrap();
        assert_eq!(stored_seqs(&reopened).await, [1, 2, 3], "{layer:?}");
        reopened.close().await;

        // Closed, it can be deleted; a later open starts empty.
        WebStorage::delete(&name, layer).await.unwrap();
        let fresh = WebStorage::open(OpenOptions::new(&name).layer(layer))
            .await
            .unwrap();
        assert_eq!(stored_seqs(&fresh).await, Vec::<u64>::new(), "{layer:?}");
        fresh.close().await;
    }
}

#[wasm_bindgen_test]
async fn an_indexeddb_database_deleted_under_a_running_store_is_gone_and_nothing_is_invented() {
    let devices = WebDevices::new(FileLayer::IndexedDb);
    let name = devices.name(0);
    let store = WebStorage::open(OpenOptions::new(&name).layer(FileLayer::IndexedDb))
        .await
        .unwrap();
    store.apply(batch(1..=2)).await.unwrap();

    // What "clear site data" or another context deleting the database does: our connection
    // gets `versionchange`, closes at once so the delete goes through, and the store knows.
    let factory = indexed_db();
    let request = factory
        .delete_database(&format!("tidemark-{name}"))
        .unwrap();
    wait_for_request(&request).await;

    let after = store.apply(batch(1..=4)).await;
    assert!(matches!(after, Err(StorageError::Gone { .. })), "{after:?}");
    // Every later write is refused too, never silently kept in memory.
    let again = store.apply(batch(1..=5)).await;
    assert!(again.is_err(), "{again:?}");
    store.close().await;

    // Reopened, the store is empty: the engine resyncs from the server.
    let reopened = WebStorage::open(OpenOptions::new(&name).layer(FileLayer::IndexedDb))
        .await
        .unwrap();
    assert_eq!(stored_seqs(&reopened).await, Vec::<u64>::new());
    reopened.close().await;
}

#[wasm_bindgen_test]
async fn a_damaged_indexeddb_database_is_corrupt_and_can_be_deleted_and_started_again() {
    let devices = WebDevices::new(FileLayer::IndexedDb);
    let name = devices.name(0);
    let store = WebStorage::open(OpenOptions::new(&name).layer(FileLayer::IndexedDb))
        .await
        .unwrap();
    store.apply(batch(1..=2)).await.unwrap();
    store.close().await;

    // Garbage over the file's first page (its header), written straight into IndexedDB.
    let factory = indexed_db();
    let request = factory.open(&format!("tidemark-{name}")).unwrap();
    wait_for_request(&request).await;
    let db: web_sys::IdbDatabase = request.result().unwrap().dyn_into().unwrap();
    let tx = db
        .transaction_with_str_and_mode("chunks", web_sys::IdbTransactionMode::Readwrite)
        .unwrap();
    let garbage = js_sys::Uint8Array::new_with_length(4096);
    garbage.fill(0x5a, 0, 4096);
    tx.object_store("chunks")
        .unwrap()
        .put_with_key(&garbage, &0.into())
        .unwrap();
    let (done_tx, done_rx) = futures::channel::oneshot::channel::<()>();
    let done_tx = std::cell::RefCell::new(Some(done_tx));
    let on_complete = wasm_bindgen::closure::Closure::<dyn FnMut(web_sys::Event)>::new(move |_| {
        if let Some(tx) = done_tx.borrow_mut().take() {
            let _ = tx.send(());
        }
    });
    tx.set_oncomplete(Some(on_complete.as_ref().unchecked_ref()));
    done_rx.await.unwrap();
    db.close();

    let opened = WebStorage::open(OpenOptions::new(&name).layer(FileLayer::IndexedDb)).await;
    assert!(
        matches!(opened, Err(StorageError::Corrupt { .. })),
        "{opened:?}"
    );
    // The failed open let the lock go; the way back is to delete and resync.
    WebStorage::delete(&name, FileLayer::IndexedDb)
        .await
        .unwrap();
    let fresh = WebStorage::open(OpenOptions::new(&name).layer(FileLayer::IndexedDb))
        .await
        .unwrap();
    assert_eq!(stored_seqs(&fresh).await, Vec::<u64>::new());
    fresh.close().await;
}

#[wasm_bindgen_test]
async fn bad_names_are_refused_and_a_worker_prefers_opfs() {
    for name in ["", "a/b", "..", "x".repeat(65).as_str(), "naïve"] {
        let opened = WebStorage::open(OpenOptions::new(name)).await;
        assert!(
            matches!(&opened, Err(StorageError::Backend { detail, .. }) if detail.contains("invalid database name")),
            "{name:?}: {opened:?}"
        );
    }
    assert_eq!(FileLayer::preferred(), FileLayer::Opfs);
    let devices = WebDevices::new(FileLayer::Opfs);
    let store = WebStorage::open(OpenOptions::new(devices.name(0)))
        .await
        .unwrap();
    assert_eq!(store.layer(), FileLayer::Opfs);
    assert_eq!(store.memory_bytes(), 0);
    store.close().await;
}

#[wasm_bindgen_test]
async fn a_client_syncs_into_each_layer_and_finds_it_all_after_a_restart() {
    for layer in LAYERS {
        support::client_syncs_and_restarts(layer).await;
    }
}

/// Resolves once an IndexedDB request succeeded (or failed: the test then fails on what
/// follows).
async fn wait_for_request(request: &web_sys::IdbOpenDbRequest) {
    let (tx, rx) = futures::channel::oneshot::channel::<()>();
    let tx = std::rc::Rc::new(std::cell::RefCell::new(Some(tx)));
    let done = {
        let tx = tx.clone();
        wasm_bindgen::closure::Closure::<dyn FnMut(web_sys::Event)>::new(move |_| {
            if let Some(tx) = tx.borrow_mut().take() {
                let _ = tx.send(());
            }
        })
    };
    request.set_onsuccess(Some(done.as_ref().unchecked_ref()));
    request.set_onerror(Some(done.as_ref().unchecked_ref()));
    rx.await.unwrap();
}

/// This context's IndexedDB factory (a worker has no `window`).
fn indexed_db() -> web_sys::IdbFactory {
    js_sys::Reflect::get(&js_sys::global(), &"indexedDB".into())
        .unwrap()
        .dyn_into()
        .unwrap()
}
