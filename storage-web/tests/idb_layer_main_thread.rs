//! The IndexedDB file layer on a page's main thread (no worker): the same tests as in a
//! dedicated worker (`idb_layer.rs`).
#![cfg(target_family = "wasm")]
#![allow(clippy::unwrap_used, reason = "tests")]

use wasm_bindgen_test::wasm_bindgen_test_configure;

// The file layer itself (and the error type it uses), compiled into this test: its API is
// crate-private.
#[path = "../src/error.rs"]
mod error;
#[path = "../src/idb/mod.rs"]
#[allow(
    dead_code,
    reason = "the whole layer is compiled; these tests use part of it"
)]
mod idb;
mod idb_common;

wasm_bindgen_test_configure!(run_in_browser);

#[wasm_bindgen_test::wasm_bindgen_test]
fn these_tests_run_on_a_page_main_thread() {
    use wasm_bindgen::JsCast;
    assert!(js_sys::global().dyn_into::<web_sys::Window>().is_ok());
}
