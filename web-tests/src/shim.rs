//! TEMPORARY stand-in for `tidemark-storage-web`'s public API while that crate is being
//! written: the same names and signatures over `MemoryStorage`, so the harness builds and its
//! plumbing (worker, pages, server) can be exercised. Nothing persists. Deleted once the real
//! crate lands on main.

use tidemark::storage::{MemoryStorage, Storage};
use tidemark::StorageError;

/// Which file layer holds the database.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FileLayer {
    /// OPFS (dedicated worker only).
    Opfs,
    /// IndexedDB (any context).
    IndexedDb,
}

/// When `apply` returns.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Durability {
    /// Once the batch is on disk.
    #[default]
    Strict,
    /// Possibly before.
    Relaxed,
}

/// How to open a store.
#[derive(Clone, Debug)]
pub struct OpenOptions {
    layer: FileLayer,
}

impl OpenOptions {
    /// Options for database `name`.
    pub fn new(_name: &str) -> Self {
        Self {
            layer: FileLayer::Opfs,
        }
    }
    /// The file layer.
    pub fn layer(mut self, layer: FileLayer) -> Self {
        self.layer = layer;
        self
    }
    /// Wait for another owner to go.
    pub fn wait_for_owner(self, _wait: bool) -> Self {
        self
    }
    /// The durability.
    pub fn durability(self, _durability: Durability) -> Self {
        self
    }
}

/// The store.
#[derive(Clone)]
pub struct WebStorage {
    inner: MemoryStorage,
    layer: FileLayer,
}

impl WebStorage {
    /// Opens a store.
    pub async fn open(options: OpenOptions) -> Result<WebStorage, StorageError> {
        Ok(Self {
            inner: MemoryStorage::new(),
            layer: options.layer,
        })
    }
    /// Its layer.
    pub fn layer(&self) -> FileLayer {
        self.layer
    }
    /// Closes it.
    pub async fn close(self) {}
    /// Deletes a database.
    pub async fn delete(_name: &str, _layer: FileLayer) -> Result<(), StorageError> {
        Ok(())
    }
    /// The store as the trait.
    pub fn storage(&self) -> &dyn Storage {
        &self.inner
    }
    /// The store to hand to a client.
    pub fn into_storage(self) -> MemoryStorage {
        self.inner
    }
}
