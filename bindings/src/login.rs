//! A [`Transport`] around the WebSocket one that notices login refusals. The engine treats
//! every failed connect alike (it retries with backoff); an app must hear that its token was
//! refused, at start as an exception and later as an event, and must be able to hand the
//! client a new token without restarting it.

use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use futures::channel::oneshot;
use tidemark::transport::{Transport, TransportError};
use tidemark_transport::native::{refusal_code, WsTransport};

use crate::ClientEvent;

/// The server codes that mean this login cannot succeed by retrying as it is.
const LOGIN_CODES: [&str; 3] = ["unauthorized", "token_expired", "unsupported_version"];

/// How the first connect of a client ended.
#[derive(Debug)]
pub(crate) enum FirstConnect {
    /// Connected and logged in.
    Connected,
    /// The server refused the login.
    Refused {
        /// The server's code (one of [`LOGIN_CODES`]).
        code: String,
        /// The server's detail.
        detail: String,
    },
    /// The server could not be reached (or refused for another reason): the client goes on
    /// offline and retries, as an offline-first client must.
    Failed,
}

/// What the transport shares with the client object.
pub(crate) struct LoginState {
    /// A token to use from the next connect on.
    new_token: Mutex<Option<String>>,
    /// Told once, after the first connect.
    first: Mutex<Option<oneshot::Sender<FirstConnect>>>,
    /// Where a refusal is announced, in order with the engine's events.
    announce: Box<dyn Fn(ClientEvent) + Send + Sync>,
}

impl LoginState {
    /// The state of a new client, and the receiver of its first connect's outcome.
    pub(crate) fn new(
        announce: impl Fn(ClientEvent) + Send + Sync + 'static,
    ) -> (Arc<Self>, oneshot::Receiver<FirstConnect>) {
        let (tx, rx) = oneshot::channel();
        let state = Self {
            new_token: Mutex::new(None),
            first: Mutex::new(Some(tx)),
            announce: Box::new(announce),
        };
        (Arc::new(state), rx)
    }

    /// Uses `token` from the next connect on.
    pub(crate) fn set_token(&self, token: String) {
        *lock(&self.new_token) = Some(token);
    }
}

/// Locks a mutex whose value (an optional token or sender) is consistent after any panic.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// [`WsTransport`] plus [`LoginState`].
pub(crate) struct LoginTransport {
    inner: WsTransport,
    state: Arc<LoginState>,
}

impl LoginTransport {
    /// Wraps `inner`.
    pub(crate) fn new(inner: WsTransport, state: Arc<LoginState>) -> Self {
        Self { inner, state }
    }
}

#[async_trait::async_trait]
impl Transport for LoginTransport {
    type Sink = <WsTransport as Transport>::Sink;
    type Source = <WsTransport as Transport>::Source;

    async fn connect(&mut self) -> Result<(Self::Sink, Self::Source), TransportError> {
        if let Some(token) = lock(&self.state.new_token).take() {
            self.inner.set_token(token);
        }
        let result = self.inner.connect().await;
        let outcome = match &result {
            Ok(_) => FirstConnect::Connected,
            Err(e) => match refusal_code(e).filter(|code| LOGIN_CODES.contains(code)) {
                Some(code) => {
                    let detail = e.to_string();
                    // Before the engine hears of the failed connect, so the app sees the
                    // refusal before the connection-state event it causes.
                    (self.state.announce)(ClientEvent::LoginRefused {
                        code: code.to_owned(),
                        detail: detail.clone(),
                    });
                    FirstConnect::Refused {
                        code: code.to_owned(),
                        detail,
                    }
                }
                None => FirstConnect::Failed,
            },
        };
        if let Some(first) = lock(&self.state.first).take() {
            // The starter may have stopped waiting (its timeout): nothing to tell then.
            let _ = first.send(outcome);
        }
        result
    }
}
