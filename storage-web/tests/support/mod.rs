//! The browser backends of the shared suites: one database per simulated device, named
//! uniquely per backend value so that tests (and model cases) never share a store, also
//! across runs on one origin.

use std::cell::Cell;

use tidemark_conformance::Backend;
use tidemark_engine::StorageError;
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
