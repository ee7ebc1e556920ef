//! # tidemark-transport
//!
//! How a Tidemark engine reaches an inbox server:
//! - [`wire`]: the wire protocol: versioned JSON frames over WebSocket (a handshake carrying the
//!   protocol version, user, device and token, then requests, responses and pushes), and a codec
//!   with strict validation and size limits.
//! - `native` (feature `native`): the WebSocket client transport on tokio.
//! - `browser` (wasm32 only): `BrowserWsTransport`, the client transport on the browser's
//!   `WebSocket`.
//!
//! The reference server that speaks this protocol is the `tidemark-server` crate; the
//! in-process loopback transport lives in `tidemark-conformance`, next to its users. A client
//! build of this crate compiles no server code.

#![warn(missing_docs)]

#[cfg(target_family = "wasm")]
pub mod browser;
#[cfg(feature = "native")]
pub mod native;
pub mod wire;
