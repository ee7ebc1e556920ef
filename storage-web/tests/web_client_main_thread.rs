//! A `tidemark::Client` on the IndexedDB layer on a page's main thread (the driver on
//! `BrowserRuntime`, which uses the page's clock and timers), across a restart.

#![cfg(target_family = "wasm")]
#![allow(clippy::unwrap_used, reason = "tests fail loudly")]

mod support;

use tidemark_storage_web::FileLayer;
use wasm_bindgen_test::{wasm_bindgen_test, wasm_bindgen_test_configure};

wasm_bindgen_test_configure!(run_in_browser);

#[wasm_bindgen_test]
async fn a_client_on_a_page_syncs_into_indexeddb_and_finds_it_all_after_a_restart() {
    support::client_syncs_and_restarts(FileLayer::IndexedDb).await;
}
