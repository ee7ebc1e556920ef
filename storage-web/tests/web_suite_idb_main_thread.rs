//! Every shared suite (`tidemark_conformance::backend_suite!`: the storage cases, the sync
//! scenarios, the model) on the IndexedDB file layer, on the main thread of a page in
//! headless Chromium (the layer serves pages as well as workers).

#![cfg(target_family = "wasm")]

mod support;

use support::WebDevices;
use tidemark_storage_web::FileLayer;
use wasm_bindgen_test::wasm_bindgen_test_configure;

wasm_bindgen_test_configure!(run_in_browser);

tidemark_conformance::backend_suite! {
    #[wasm_bindgen_test::wasm_bindgen_test]
    backend: WebDevices::new(FileLayer::IndexedDb),
    model_regressions: "unused with a test attribute",
}
