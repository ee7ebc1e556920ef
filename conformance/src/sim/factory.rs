//! [`StoreFactory`]: how the simulation opens (and, after a crash, reopens) a device's store.

use std::collections::BTreeMap;
use std::sync::{Mutex, PoisonError};

use tidemark_engine::storage::{SendOutsideWasm, SyncOutsideWasm};
use tidemark_engine::{MemoryStorage, Storage, StorageError};

/// Opens device stores for a [`super::Sim`]. Device `i` must get the same durable data on
/// every call: the first call opens an empty store, later calls reopen it after a crash
/// (everything committed is there; nothing else is).
#[cfg_attr(target_family = "wasm", async_trait::async_trait(?Send))]
#[cfg_attr(not(target_family = "wasm"), async_trait::async_trait)]
pub trait StoreFactory: SendOutsideWasm + SyncOutsideWasm {
    /// The store type.
    type Store: Storage;

    /// Opens device `device`'s store.
    async fn open(&self, device: usize) -> Result<Self::Store, StorageError>;
}

/// The memory backend's factory: one [`MemoryStorage`] per device, reopened as a clone.
pub type MemoryStoreFactory = SharedStoreFactory<MemoryStorage>;

/// A factory for stores whose clones share their data (an in-memory store behind an `Arc`):
/// it keeps one store per device and hands out clones, so a "reopen" sees exactly what was
/// committed. With the engine's `MemoryStorage` this is the memory backend's factory.
#[derive(Debug, Default)]
pub struct SharedStoreFactory<S> {
    stores: Mutex<BTreeMap<usize, S>>,
}

impl<S> SharedStoreFactory<S> {
    /// No store opened yet.
    pub fn new() -> Self {
        Self {
            stores: Mutex::new(BTreeMap::new()),
        }
    }
}

#[cfg_attr(target_family = "wasm", async_trait::async_trait(?Send))]
#[cfg_attr(not(target_family = "wasm"), async_trait::async_trait)]
impl<S> StoreFactory for SharedStoreFactory<S>
where
    S: Storage + Clone + Default + SendOutsideWasm + SyncOutsideWasm + 'static,
{
    type Store = S;

    async fn open(&self, device: usize) -> Result<S, StorageError> {
        // A panic elsewhere while the lock was held cannot leave the map half-changed.
        let mut stores = self.stores.lock().unwrap_or_else(PoisonError::into_inner);
        Ok(stores.entry(device).or_default().clone())
    }
}
