//! # tidemark-storage-web
//!
//! Tidemark's `Storage` in the browser: `WebStorage`. The schema, migrations, queries and
//! batch rules are tidemark-storage-sqlite's SQL layer, the same code the native store runs,
//! on SQLite compiled to wasm32 (sqlite-wasm-rs), over a file layer chosen when the store is
//! opened (`FileLayer`: OPFS in a dedicated worker, or IndexedDB anywhere).
//!
//! (No links here: natively this page is all that is built, without those items.)
//!
//! wasm32 only: natively this crate is empty (the native store is tidemark-storage-sqlite).
#![cfg(target_family = "wasm")]
#![warn(missing_docs)]

mod error;
mod idb;
mod opfs;
mod owner;
mod store;

pub use store::{Durability, FileLayer, OpenOptions, WebStorage};

// The unit tests need IndexedDB: a browser worker, not the runner's default (Node).
#[cfg(test)]
wasm_bindgen_test::wasm_bindgen_test_configure!(run_in_dedicated_worker);
