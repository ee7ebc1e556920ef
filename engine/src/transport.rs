//! The [`Transport`] trait: how the driver reaches a server. Implementations live in
//! `tidemark-transport` (WebSocket), in `tidemark-conformance` (the in-process loopback) and in
//! test harnesses.

use futures::Stream;

use crate::protocol::{Push, Request, RequestId, Response};
use crate::storage::SendOutsideWasm;

/// Something the server sent.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Incoming {
    /// The answer to a request.
    Response(RequestId, Response),
    /// An unasked message.
    Push(Push),
}

/// A transport failure; the driver treats every one as a lost connection.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TransportError {
    /// Could not connect, or the connection dropped.
    #[error("connection failed: {0}")]
    Connection(String),
    /// The server refused the handshake (bad token, unknown version).
    #[error("handshake refused: {0}")]
    Refused(String),
    /// A frame could not be decoded or broke a limit.
    #[error("protocol error: {0}")]
    Protocol(String),
    /// The connection is closed.
    #[error("connection closed")]
    Closed,
}

/// The sending half of a connection.
#[cfg_attr(target_family = "wasm", async_trait::async_trait(?Send))]
#[cfg_attr(not(target_family = "wasm"), async_trait::async_trait)]
pub trait RequestSink: SendOutsideWasm {
    /// Puts one request on the wire.
    async fn send(&mut self, id: RequestId, request: Request) -> Result<(), TransportError>;
    /// Closes the connection; the receiving half then ends.
    async fn close(&mut self);
}

/// Opens connections to one server for one identity.
#[cfg_attr(target_family = "wasm", async_trait::async_trait(?Send))]
#[cfg_attr(not(target_family = "wasm"), async_trait::async_trait)]
pub trait Transport: SendOutsideWasm {
    /// The sending half.
    type Sink: RequestSink;
    /// The receiving half: responses and pushes until the connection ends.
    type Source: Stream<Item = Result<Incoming, TransportError>> + Unpin + SendOutsideWasm;

    /// Connects and authenticates.
    async fn connect(&mut self) -> Result<(Self::Sink, Self::Source), TransportError>;
}
