//! What connection tasks and the core thread send each other.
//!
//! Both sides import these types from here and neither imports the other, so a connection
//! task ([`super::conn`]) and the thread that owns the core ([`super::core_thread`]) depend
//! only on this vocabulary.

use tidemark_engine::{DeviceId, Request, RequestId, Timestamp, UserId};
use tidemark_transport::wire::ServerFrame;
use tokio::sync::{mpsc, oneshot};

use crate::{ConnId, ServerCore, ServerStore};

/// A job for the core thread.
pub(crate) type AdminJob<St> = Box<dyn FnOnce(&mut ServerCore<St>, Timestamp) + Send>;

/// What connections and the handle ask of the core thread.
///
/// No `Debug`: `Connect` carries a token, which must never reach a log.
pub(crate) enum Command<St: ServerStore> {
    /// Check the token and, when it is good, connect. The reply carries the server time of
    /// the welcome.
    Connect {
        conn: ConnId,
        user: UserId,
        device: DeviceId,
        token: String,
        /// Where the connection's frames go.
        outgoing: mpsc::Sender<Outgoing>,
        /// Fired to close the connection at once (slow consumer).
        kill: oneshot::Sender<Refusal>,
        reply: oneshot::Sender<Result<Timestamp, Refusal>>,
    },
    /// A request of an authenticated connection.
    Request {
        conn: ConnId,
        id: RequestId,
        request: Request,
    },
    /// The connection closed.
    Disconnect { conn: ConnId },
    /// Runs on the core; what it causes is routed.
    Admin(AdminJob<St>),
    /// Handle what is queued before this, then stop.
    Shutdown,
}

/// What the core thread sends a connection.
#[derive(Debug)]
pub(crate) enum Outgoing {
    /// A response or push to write.
    Frame(ServerFrame),
    /// Close after what came before (the core kicked the connection).
    Close,
}

/// A fatal error to send before closing: a [`ServerFrame::Error`] with `fatal: true`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Refusal {
    pub(crate) code: &'static str,
    pub(crate) message: String,
}

impl Refusal {
    pub(crate) fn new(code: &'static str, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
        }
    }

    /// The error frame that carries this refusal.
    pub(crate) fn frame(&self, fatal: bool) -> ServerFrame {
        ServerFrame::Error {
            code: self.code.to_owned(),
            message: self.message.clone(),
            fatal,
        }
    }
}
