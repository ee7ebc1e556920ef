//! # tidemark-transport
//!
//! How a Tidemark engine reaches an inbox server, and the reference server itself:
//! - [`wire`]: the wire protocol: versioned JSON frames over WebSocket (a handshake carrying the
//!   protocol version, user, device and token, then requests, responses and pushes), and a codec
//!   with strict validation and size limits.
//! - [`server`]: the inbox server's rules as a sans-IO core ([`server::ServerCore`]) over a
//!   synchronous store trait, with an in-memory store. The simulated server of
//!   `tidemark-conformance` and the reference server run this one core. With the `server`
//!   feature: the SQLite server store and the tokio WebSocket host.
//! - [`loopback`]: an in-process [`tidemark_engine::Transport`] over a shared server core.
//! - `native` (feature `native`): the WebSocket client transport on tokio.
//! - `browser` (wasm32 only): `BrowserWsTransport`, the client transport on the browser's
//!   `WebSocket`.

#![warn(missing_docs)]

#[cfg(target_family = "wasm")]
pub mod browser;
pub mod loopback;
#[cfg(feature = "native")]
pub mod native;
pub mod server;
pub mod wire;
