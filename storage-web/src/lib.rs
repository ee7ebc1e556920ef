//! # tidemark-storage-web
//!
//! Tidemark's store in the browser (wasm32 only; natively this crate is empty).
#![cfg(target_family = "wasm")]
#![warn(missing_docs)]

mod idb;
