//! # tidemark-conformance
//!
//! Tidemark's shared test machinery:
//! - [`server`]: the inbox server's rules as a sans-IO core ([`server::ServerCore`]) over a
//!   synchronous store trait, with an in-memory store.
//! - [`sim`]: a deterministic simulation of devices (engine + store) talking to that server
//!   over a simulated network with latency, loss, duplication, reordering, partitions and
//!   crashes, on a fake clock.
//! - [`invariants`]: the checks every scenario ends with.
//!
//! Nothing here reads a clock, spawns a task or touches a socket, so the same scenarios run
//! natively (`#[tokio::test]`) and in a browser (wasm-bindgen-test).

#![warn(missing_docs)]

pub mod invariants;
pub mod server;
pub mod sim;
