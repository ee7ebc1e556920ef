//! The native WebSocket client transport, on tokio and tokio-tungstenite.
//!
//! [`WsTransport`] is the [`Transport`] the engine's driver uses: every
//! [`Transport::connect`] opens a socket, sends the [`wire::hello`] handshake and waits for
//! [`ServerFrame::Welcome`]; a refusal comes back as [`TransportError::Refused`] carrying
//! `"<code>: <message>"` (see [`refusal_code`] to tell `unauthorized`, `token_expired` and
//! `unsupported_version` apart without parsing strings yourself).
//!
//! [`WsConnection`] is the same handshake without the engine's types on top: tests and tools
//! use it to send raw requests and read raw [`ServerFrame`]s, or split it into a
//! [`WsRequestSink`] and a [`WsFrames`] stream to pipeline many requests.

use std::fmt;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use futures::stream::{FusedStream, SplitSink, SplitStream};
use futures::{SinkExt, Stream, StreamExt};
use tidemark_engine::{
    DeviceId, Incoming, Request, RequestId, RequestSink, Timestamp, Transport, TransportError,
    UserId,
};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::{self, Message};
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

use crate::wire::{self, ClientFrame, Limits, ServerFrame};

/// The socket type of a client connection.
type Socket = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// How a [`WsTransport`] or [`WsConnection`] connects.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WsOptions {
    /// Longest wait for the TCP connect and the WebSocket upgrade.
    pub connect_timeout: Duration,
    /// Longest wait for the server's answer to the hello.
    pub handshake_timeout: Duration,
    /// What the client accepts from the server (also the socket's message size limit).
    pub limits: Limits,
}

impl Default for WsOptions {
    fn default() -> Self {
        Self {
            connect_timeout: Duration::from_secs(10),
            handshake_timeout: Duration::from_secs(10),
            limits: Limits::server_frames(),
        }
    }
}

pub use crate::wire::refusal_code;

/// A [`Transport`] over a WebSocket to a Tidemark server, for one (user, device, token).
#[derive(Clone)]
pub struct WsTransport {
    url: String,
    user: UserId,
    device: DeviceId,
    token: String,
    options: WsOptions,
}

impl fmt::Debug for WsTransport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never the token: debug output ends up in logs.
        f.debug_struct("WsTransport")
            .field("url", &self.url)
            .field("user", &self.user)
            .field("device", &self.device)
            .field("options", &self.options)
            .finish_non_exhaustive()
    }
}

impl WsTransport {
    /// A transport to `url` (`ws://host:port`) as `user` on `device`, with the default
    /// [`WsOptions`].
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
            options: WsOptions::default(),
        }
    }

    /// The same transport with these options.
    pub fn with_options(mut self, options: WsOptions) -> Self {
        self.options = options;
        self
    }

    /// Replaces the token (after the app obtained a new one); the next connect uses it.
    pub fn set_token(&mut self, token: impl Into<String>) {
        self.token = token.into();
    }

    /// The server's address.
    pub fn url(&self) -> &str {
        &self.url
    }
}

#[async_trait::async_trait]
impl Transport for WsTransport {
    type Sink = WsRequestSink;
    type Source = WsSource;

    /// Connects and authenticates. Fails with [`TransportError::Refused`] when the server
    /// refuses the hello (see [`refusal_code`]), with [`TransportError::Connection`] when the
    /// socket cannot be opened or the handshake times out.
    async fn connect(&mut self) -> Result<(Self::Sink, Self::Source), TransportError> {
        let conn = WsConnection::open(
            &self.url,
            &self.user,
            &self.device,
            &self.token,
            &self.options,
        )
        .await?;
        let (sink, frames) = conn.split();
        Ok((sink, WsSource::start(frames)))
    }
}

/// An authenticated WebSocket connection to a Tidemark server, below the engine's
/// [`Transport`]: raw requests out, raw [`ServerFrame`]s in.
pub struct WsConnection {
    socket: Socket,
    limits: Limits,
    server_time: Timestamp,
    /// Set once the stream has ended (socket closed or a fatal error yielded).
    done: bool,
}

impl fmt::Debug for WsConnection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WsConnection")
            .field("server_time", &self.server_time)
            .field("done", &self.done)
            .finish_non_exhaustive()
    }
}

impl WsConnection {
    /// Opens a socket to `url`, sends the hello and waits for the welcome. See
    /// [`Transport::connect`] of [`WsTransport`] for the errors.
    pub async fn open(
        url: &str,
        user: &UserId,
        device: &DeviceId,
        token: &str,
        options: &WsOptions,
    ) -> Result<Self, TransportError> {
        let config = WebSocketConfig::default()
            .max_message_size(Some(options.limits.max_frame_bytes))
            .max_frame_size(Some(options.limits.max_frame_bytes));
        let connect = tokio_tungstenite::connect_async_with_config(url, Some(config), true);
        let (mut socket, _) = match tokio::time::timeout(options.connect_timeout, connect).await {
            Ok(Ok(opened)) => opened,
            Ok(Err(err)) => {
                return Err(TransportError::Connection(format!(
                    "cannot connect to {url}: {err}"
                )))
            }
            Err(_) => {
                return Err(TransportError::Connection(format!(
                    "connecting to {url} timed out after {:?}",
                    options.connect_timeout
                )))
            }
        };
        let hello = wire::encode(&wire::hello(user, device, token));
        socket
            .send(Message::text(hello))
            .await
            .map_err(|err| TransportError::Connection(format!("sending the hello: {err}")))?;
        let mut conn = Self {
            socket,
            limits: options.limits.clone(),
            server_time: Timestamp(0),
            done: false,
        };
        let answer = tokio::time::timeout(options.handshake_timeout, conn.next_frame()).await;
        match answer {
            Ok(Some(Ok(ServerFrame::Welcome {
                version,
                server_time,
            }))) if version == wire::PROTOCOL_VERSION => {
                conn.server_time = server_time;
                Ok(conn)
            }
            Ok(Some(Ok(ServerFrame::Welcome { version, .. }))) => Err(TransportError::Protocol(
                format!("the server welcomed protocol version {version}"),
            )),
            Ok(Some(Ok(ServerFrame::Error { code, message, .. }))) => {
                conn.socket.close(None).await.ok();
                Err(TransportError::Refused(wire::error_text(&code, &message)))
            }
            Ok(Some(Ok(other))) => Err(TransportError::Protocol(format!(
                "expected a welcome, got {}",
                frame_kind(&other)
            ))),
            Ok(Some(Err(err))) => Err(err),
            Ok(None) => Err(TransportError::Connection(
                "the server closed the connection during the handshake".to_owned(),
            )),
            Err(_) => Err(TransportError::Connection(format!(
                "no answer to the hello within {:?}",
                options.handshake_timeout
            ))),
        }
    }

    /// The server's clock at the welcome.
    pub fn server_time(&self) -> Timestamp {
        self.server_time
    }

    /// Sends one request and flushes it.
    pub async fn send_request(
        &mut self,
        id: RequestId,
        request: Request,
    ) -> Result<(), TransportError> {
        send_frame(
            &mut self.socket,
            &ClientFrame::Request { id, request },
            true,
        )
        .await
    }

    /// Queues one request without flushing (see [`WsConnection::flush`]): many requests
    /// then go out in few writes.
    pub async fn feed_request(
        &mut self,
        id: RequestId,
        request: Request,
    ) -> Result<(), TransportError> {
        send_frame(
            &mut self.socket,
            &ClientFrame::Request { id, request },
            false,
        )
        .await
    }

    /// Writes whatever [`WsConnection::feed_request`] queued.
    pub async fn flush(&mut self) -> Result<(), TransportError> {
        self.socket.flush().await.map_err(connection_error)
    }

    /// The next frame from the server: `None` once the connection has ended. An undecodable
    /// frame is a [`TransportError::Protocol`] item (the connection goes on); socket
    /// failures are a [`TransportError::Connection`] item, then the end.
    pub async fn next_frame(&mut self) -> Option<Result<ServerFrame, TransportError>> {
        futures::future::poll_fn(|cx| {
            poll_frame(&mut self.socket, &self.limits, &mut self.done, cx)
        })
        .await
    }

    /// Closes the connection (a WebSocket close handshake, best effort).
    pub async fn close(&mut self) {
        self.socket.close(None).await.ok();
    }

    /// Splits the connection into a sending half and a stream of raw frames, usable from two
    /// tasks.
    pub fn split(self) -> (WsRequestSink, WsFrames) {
        let (sink, stream) = self.socket.split();
        (
            WsRequestSink { sink },
            WsFrames {
                stream,
                limits: self.limits,
                done: self.done,
            },
        )
    }
}

fn frame_kind(frame: &ServerFrame) -> &'static str {
    match frame {
        ServerFrame::Welcome { .. } => "a welcome",
        ServerFrame::Response { .. } => "a response",
        ServerFrame::Push { .. } => "a push",
        ServerFrame::Error { .. } => "an error",
    }
}

fn connection_error(err: tungstenite::Error) -> TransportError {
    match err {
        tungstenite::Error::ConnectionClosed | tungstenite::Error::AlreadyClosed => {
            TransportError::Closed
        }
        other => TransportError::Connection(other.to_string()),
    }
}

async fn send_frame<S>(sink: &mut S, frame: &ClientFrame, flush: bool) -> Result<(), TransportError>
where
    S: futures::Sink<Message, Error = tungstenite::Error> + Unpin,
{
    let text = Message::text(wire::encode(frame));
    if flush {
        sink.send(text).await.map_err(connection_error)
    } else {
        sink.feed(text).await.map_err(connection_error)
    }
}

/// One step of reading server frames from a socket stream; shared by [`WsConnection`] and
/// [`WsFrames`].
fn poll_frame<S>(
    stream: &mut S,
    limits: &Limits,
    done: &mut bool,
    cx: &mut Context<'_>,
) -> Poll<Option<Result<ServerFrame, TransportError>>>
where
    S: Stream<Item = Result<Message, tungstenite::Error>> + Unpin,
{
    if *done {
        return Poll::Ready(None);
    }
    loop {
        let message = match stream.poll_next_unpin(cx) {
            Poll::Pending => return Poll::Pending,
            Poll::Ready(None) => {
                *done = true;
                return Poll::Ready(None);
            }
            Poll::Ready(Some(Ok(message))) => message,
            Poll::Ready(Some(Err(err))) => {
                *done = true;
                return Poll::Ready(match err {
                    tungstenite::Error::ConnectionClosed | tungstenite::Error::AlreadyClosed => {
                        None
                    }
                    tungstenite::Error::Capacity(err) => Some(Err(TransportError::Protocol(
                        format!("the server sent a frame over the limit: {err}"),
                    ))),
                    other => Some(Err(TransportError::Connection(other.to_string()))),
                });
            }
        };
        match message {
            Message::Text(text) => {
                return Poll::Ready(Some(
                    wire::decode_server(text.as_bytes(), limits)
                        .map_err(|err| TransportError::Protocol(err.to_string())),
                ))
            }
            Message::Binary(_) => {
                return Poll::Ready(Some(Err(TransportError::Protocol(
                    "the server sent a binary frame".to_owned(),
                ))))
            }
            // tungstenite answers pings itself; nothing for the caller.
            Message::Ping(_) | Message::Pong(_) | Message::Frame(_) => continue,
            // Keep reading: the next read sends tungstenite's answer to the close, and the
            // stream ends when the server then closes the TCP connection. Stopping here
            // would leave the server waiting for that answer.
            Message::Close(_) => continue,
        }
    }
}

/// The sending half of a WebSocket connection; the engine's [`RequestSink`].
pub struct WsRequestSink {
    sink: SplitSink<Socket, Message>,
}

impl fmt::Debug for WsRequestSink {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WsRequestSink").finish_non_exhaustive()
    }
}

impl WsRequestSink {
    /// Queues one request without flushing; see [`WsRequestSink::flush`].
    pub async fn feed_request(
        &mut self,
        id: RequestId,
        request: Request,
    ) -> Result<(), TransportError> {
        send_frame(&mut self.sink, &ClientFrame::Request { id, request }, false).await
    }

    /// Writes what [`WsRequestSink::feed_request`] queued.
    pub async fn flush(&mut self) -> Result<(), TransportError> {
        self.sink.flush().await.map_err(connection_error)
    }
}

#[async_trait::async_trait]
impl RequestSink for WsRequestSink {
    /// Sends one request and flushes it.
    async fn send(&mut self, id: RequestId, request: Request) -> Result<(), TransportError> {
        send_frame(&mut self.sink, &ClientFrame::Request { id, request }, true).await
    }

    /// Starts the WebSocket close handshake; the receiving half ends when the server
    /// answers it.
    async fn close(&mut self) {
        self.sink.close().await.ok();
    }
}

/// The frames a server sends on one connection, after the welcome.
pub struct WsFrames {
    stream: SplitStream<Socket>,
    limits: Limits,
    done: bool,
}

impl fmt::Debug for WsFrames {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WsFrames")
            .field("done", &self.done)
            .finish_non_exhaustive()
    }
}

impl Stream for WsFrames {
    type Item = Result<ServerFrame, TransportError>;

    /// See [`WsConnection::next_frame`].
    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        poll_frame(&mut this.stream, &this.limits, &mut this.done, cx)
    }
}

impl FusedStream for WsFrames {
    fn is_terminated(&self) -> bool {
        self.done
    }
}

/// The receiving half of a [`WsTransport`] connection: responses and pushes, mapped by
/// [`wire::incoming`]. An undecodable frame is a [`TransportError::Protocol`] item; a server
/// error frame is a [`TransportError::Connection`] item carrying its code (see
/// [`refusal_code`]), and after a fatal one the stream ends; a closed socket is the end. The
/// driver drops the connection and resyncs on every error item.
///
/// Frames are read and decoded by a task of their own, a few frames ahead of the reader: a
/// pull reply is decoded while the engine stores the one before it, on another core when
/// there is one. The look-ahead is bounded (two decoded frames), so memory is too.
/// Dropping the source stops the task.
#[derive(Debug)]
pub struct WsSource {
    frames: tokio::sync::mpsc::Receiver<Result<ServerFrame, TransportError>>,
    reader: tokio::task::JoinHandle<()>,
    done: bool,
}

/// Decoded frames a [`WsSource`] holds before the reader takes them.
const DECODED_AHEAD: usize = 2;

impl WsSource {
    /// Starts the task that reads and decodes `frames`; must be called on a tokio runtime.
    fn start(mut frames: WsFrames) -> Self {
        let (tx, rx) = tokio::sync::mpsc::channel(DECODED_AHEAD);
        let reader = tokio::spawn(async move {
            loop {
                let item = tokio::select! {
                    () = tx.closed() => return,
                    item = frames.next() => item,
                };
                let Some(item) = item else { return };
                if tx.send(item).await.is_err() {
                    return;
                }
            }
        });
        Self {
            frames: rx,
            reader,
            done: false,
        }
    }
}

impl Drop for WsSource {
    fn drop(&mut self) {
        // The socket's reading half goes with the task, now rather than at the next frame.
        self.reader.abort();
    }
}

impl Stream for WsSource {
    type Item = Result<Incoming, TransportError>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        if this.done {
            return Poll::Ready(None);
        }
        let item = match this.frames.poll_recv(cx) {
            Poll::Pending => return Poll::Pending,
            Poll::Ready(None) => {
                this.done = true;
                return Poll::Ready(None);
            }
            Poll::Ready(Some(item)) => item,
        };
        Poll::Ready(Some(match item {
            Ok(frame) => {
                if matches!(frame, ServerFrame::Error { fatal: true, .. }) {
                    // The server closes the socket next; end here so nothing after the
                    // error is taken for part of this session.
                    this.done = true;
                }
                wire::incoming(frame)
            }
            Err(err) => Err(err),
        }))
    }
}

impl FusedStream for WsSource {
    fn is_terminated(&self) -> bool {
        self.done
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refusal_codes_are_read_back() {
        let refused = TransportError::Refused(wire::error_text(
            wire::error_code::TOKEN_EXPIRED,
            "too old: yes",
        ));
        assert_eq!(
            refusal_code(&refused),
            Some(wire::error_code::TOKEN_EXPIRED)
        );
        let shut = TransportError::Connection(wire::error_text(wire::error_code::SHUTDOWN, "bye"));
        assert_eq!(refusal_code(&shut), Some(wire::error_code::SHUTDOWN));
        let local = TransportError::Connection("cannot connect to ws://x: refused".to_owned());
        assert_eq!(refusal_code(&local), None);
        assert_eq!(refusal_code(&TransportError::Closed), None);
    }
}
