//! # tidemark-conformance
//!
//! Tidemark's shared test machinery:
//! - [`server`]: `tidemark-server` re-exported: the inbox server's rules as a sans-IO core
//!   ([`server::ServerCore`]) over a synchronous store trait, with an in-memory store.
//! - [`sim`]: a deterministic simulation of devices (engine + store) talking to that server
//!   over a simulated network with latency, loss, duplication, reordering, partitions and
//!   crashes, on a fake clock.
//! - [`invariants`]: the checks every scenario ends with.
//! - [`dispatch`]: the dispatch rules (when an event may announce a message), checked from what
//!   a driver executed, by the simulation and the `engine_inputs` fuzz target alike.
//! - [`hooked`]: any store with a hook around `apply` (fault injection, broken stores, progress
//!   marks).
//! - [`Backend`]: what a storage backend implements (open a device's store, reopen it) to run
//!   every suite below, and [`backend_suite!`], which expands them all into tests for it.
//! - [`scenarios`]: the sync scenario suite, generic over the backend, each scenario's event
//!   log compared with the shared snapshot in [`SNAPSHOT_DIR`].
//! - [`storage_suite`](mod@storage_suite): the storage conformance suite, generic over the
//!   backend; [`storage_suite::dump`] reads a whole store through the trait, for comparing
//!   stores.
//! - [`model`]: model-based property tests (proptest) of engine + storage + simulated server
//!   under faults, generic over the backend ([`model::run_model`]).
//! - [`loopback`]: an in-process [`tidemark_engine::Transport`] over a shared server core, for
//!   driving the async `Client` end to end without sockets.
//!
//! Nothing here reads a clock, spawns a task or touches a socket, so the same scenarios run
//! natively (`#[tokio::test]`) and in a browser (wasm-bindgen-test).

#![warn(missing_docs)]

mod backend;
pub mod dispatch;
pub mod hooked;
pub mod invariants;
pub mod loopback;
pub mod model;
pub mod scenarios;
pub mod sim;
pub mod storage_suite;

pub use backend::{Backend, MemoryBackend, SharedBackend};

/// The inbox server's sans-IO core and its in-memory store, from `tidemark-server` (the
/// reference server runs the same core), re-exported under the path the suites and their
/// users take, so a backend's tests need no second dependency for it.
pub use tidemark_server as server;

/// Where the sync scenarios' insta snapshots live: one directory for every backend, so the
/// memory, SQLite and browser stores are held to the same event logs.
pub const SNAPSHOT_DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/snapshots");

/// For [`backend_suite!`]: its users reach insta through this crate.
#[doc(hidden)]
pub use insta;
