//! [`BrowserWsTransport`]: the engine's [`Transport`] on the browser's own `WebSocket`
//! (wasm32 only).
//!
//! The browser's socket is callback-driven: the `onmessage`, `onclose` and `onerror` handlers
//! push into an unbounded channel that the connection's [`Stream`] reads, and the handlers are
//! kept alive by a shared [`Socket`] that both halves hold. When both halves are dropped the
//! handlers are detached and the socket is closed, so no callback outlives the connection.
//!
//! The handshake is the same as the native transport's: send [`wire::hello`], wait for
//! [`ServerFrame::Welcome`]; a [`ServerFrame::Error`] instead is a
//! [`TransportError::Refused`] carrying the server's code.

use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll};

use futures::channel::{mpsc, oneshot};
use futures::{Stream, StreamExt};
use tidemark_engine::{
    DeviceId, Incoming, Request, RequestId, RequestSink, Transport, TransportError, UserId,
};
use wasm_bindgen::closure::Closure;
use wasm_bindgen::JsCast;
use web_sys::{CloseEvent, MessageEvent, WebSocket};

use crate::wire::{self, ClientFrame, Limits, ServerFrame};

/// What the socket's handlers report.
enum SocketEvent {
    Text(String),
    Binary,
    Closed { code: u16, reason: String },
    Error,
}

/// The socket and the handlers attached to it; detached and closed on drop.
struct Socket {
    ws: WebSocket,
    _on_open: Closure<dyn FnMut()>,
    _on_message: Closure<dyn FnMut(MessageEvent)>,
    _on_close: Closure<dyn FnMut(CloseEvent)>,
    _on_error: Closure<dyn FnMut()>,
}

impl Drop for Socket {
    fn drop(&mut self) {
        self.ws.set_onopen(None);
        self.ws.set_onmessage(None);
        self.ws.set_onclose(None);
        self.ws.set_onerror(None);
        // Closing a socket that is closing or closed is a no-op for the browser.
        let _ = self.ws.close();
    }
}

/// Connects one (user, device) to a Tidemark server through the browser's `WebSocket`.
#[derive(Clone, Debug)]
pub struct BrowserWsTransport {
    url: String,
    user: UserId,
    device: DeviceId,
    token: String,
    limits: Limits,
}

impl BrowserWsTransport {
    /// A transport for `url` (`ws://` or `wss://`) with the user's access token.
    pub fn new(
        url: impl Into<String>,
        user: UserId,
        device: DeviceId,
        token: impl Into<String>,
    ) -> Self {
        Self {
            url: url.into(),
            user,
            device,
            token: token.into(),
            limits: Limits::server_frames(),
        }
    }

    /// Replaces the limits applied to the server's frames.
    pub fn with_limits(mut self, limits: Limits) -> Self {
        self.limits = limits;
        self
    }
}

/// The sending half of a browser connection.
pub struct BrowserSink {
    socket: Rc<Socket>,
}

/// The receiving half of a browser connection.
pub struct BrowserSource {
    _socket: Rc<Socket>,
    events: mpsc::UnboundedReceiver<SocketEvent>,
    limits: Limits,
    done: bool,
}

fn send_text(ws: &WebSocket, text: &str) -> Result<(), TransportError> {
    ws.send_with_str(text)
        .map_err(|err| TransportError::Connection(format!("send failed: {err:?}")))
}

#[async_trait::async_trait(?Send)]
impl RequestSink for BrowserSink {
    async fn send(&mut self, id: RequestId, request: Request) -> Result<(), TransportError> {
        send_text(
            &self.socket.ws,
            &wire::encode(&ClientFrame::Request { id, request }),
        )
    }

    async fn close(&mut self) {
        let _ = self.socket.ws.close();
    }
}

/// What one socket event means for the engine: an item, the end, or nothing.
fn incoming(event: SocketEvent, limits: &Limits) -> Option<Result<Incoming, TransportError>> {
    match event {
        SocketEvent::Text(text) => match wire::decode_server(text.as_bytes(), limits) {
            Ok(frame) => Some(wire::incoming(frame)),
            Err(err) => Some(Err(TransportError::Protocol(err.to_string()))),
        },
        SocketEvent::Binary => Some(Err(TransportError::Protocol(
            "binary frame from the server".into(),
        ))),
        SocketEvent::Closed { code, reason } => Some(Err(TransportError::Connection(format!(
            "closed by the server ({code}): {reason}"
        )))),
        SocketEvent::Error => Some(Err(TransportError::Connection("socket error".into()))),
    }
}

impl Stream for BrowserSource {
    type Item = Result<Incoming, TransportError>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = &mut *self;
        loop {
            if this.done {
                return Poll::Ready(None);
            }
            let Some(event) = futures::ready!(this.events.poll_next_unpin(cx)) else {
                return Poll::Ready(None);
            };
            let item = incoming(event, &this.limits);
            // Every error ends the connection for the driver: the stream ends after it.
            if matches!(item, Some(Err(_))) {
                this.done = true;
            }
            if let Some(item) = item {
                return Poll::Ready(Some(item));
            }
        }
    }
}

#[async_trait::async_trait(?Send)]
impl Transport for BrowserWsTransport {
    type Sink = BrowserSink;
    type Source = BrowserSource;

    async fn connect(&mut self) -> Result<(BrowserSink, BrowserSource), TransportError> {
        let ws = WebSocket::new(&self.url)
            .map_err(|err| TransportError::Connection(format!("bad url: {err:?}")))?;
        ws.set_binary_type(web_sys::BinaryType::Arraybuffer);
        let (tx, mut events) = mpsc::unbounded();
        let (open_tx, open_rx) = oneshot::channel::<()>();
        let mut open_tx = Some(open_tx);
        let on_open = Closure::<dyn FnMut()>::new(move || {
            if let Some(open) = open_tx.take() {
                let _ = open.send(());
            }
        });
        let on_message = {
            let tx = tx.clone();
            Closure::<dyn FnMut(MessageEvent)>::new(move |event: MessageEvent| {
                let item = match event.data().as_string() {
                    Some(text) => SocketEvent::Text(text),
                    None => SocketEvent::Binary,
                };
                let _ = tx.unbounded_send(item);
            })
        };
        let on_close = {
            let tx = tx.clone();
            Closure::<dyn FnMut(CloseEvent)>::new(move |event: CloseEvent| {
                let _ = tx.unbounded_send(SocketEvent::Closed {
                    code: event.code(),
                    reason: event.reason(),
                });
            })
        };
        let on_error = Closure::<dyn FnMut()>::new(move || {
            let _ = tx.unbounded_send(SocketEvent::Error);
        });
        ws.set_onopen(Some(on_open.as_ref().unchecked_ref()));
        ws.set_onmessage(Some(on_message.as_ref().unchecked_ref()));
        ws.set_onclose(Some(on_close.as_ref().unchecked_ref()));
        ws.set_onerror(Some(on_error.as_ref().unchecked_ref()));
        let socket = Rc::new(Socket {
            ws,
            _on_open: on_open,
            _on_message: on_message,
            _on_close: on_close,
            _on_error: on_error,
        });

        // Open, or the first error/close: whichever comes first.
        let opened = futures::future::select(open_rx, events.next()).await;
        match opened {
            futures::future::Either::Left((Ok(()), _)) => {}
            futures::future::Either::Left((Err(_), _)) => return Err(TransportError::Closed),
            futures::future::Either::Right((event, _)) => {
                return Err(match event.and_then(|e| incoming(e, &self.limits)) {
                    Some(Err(err)) => err,
                    _ => TransportError::Connection("socket failed to open".into()),
                });
            }
        }

        send_text(
            &socket.ws,
            &wire::encode(&wire::hello(&self.user, &self.device, &self.token)),
        )?;
        match events.next().await {
            Some(SocketEvent::Text(text)) => {
                match wire::decode_server(text.as_bytes(), &self.limits) {
                    Ok(ServerFrame::Welcome { .. }) => {}
                    Ok(ServerFrame::Error { code, message, .. }) => {
                        return Err(TransportError::Refused(wire::error_text(&code, &message)));
                    }
                    Ok(other) => {
                        return Err(TransportError::Protocol(format!(
                            "expected a welcome, got {other:?}"
                        )));
                    }
                    Err(err) => return Err(TransportError::Protocol(err.to_string())),
                }
            }
            Some(event) => {
                return Err(match incoming(event, &self.limits) {
                    Some(Err(err)) => err,
                    _ => TransportError::Protocol("expected a welcome".into()),
                });
            }
            None => return Err(TransportError::Closed),
        }

        Ok((
            BrowserSink {
                socket: Rc::clone(&socket),
            },
            BrowserSource {
                _socket: socket,
                events,
                limits: self.limits.clone(),
                done: false,
            },
        ))
    }
}
