//! One connection's task: WebSocket upgrade, hello, then frames in and out.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use futures::{SinkExt, StreamExt};
use serde::Deserialize;
use tidemark_engine::protocol::ErrorCode;
use tidemark_engine::{Response, ServerError};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::time::{Instant, MissedTickBehavior};
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::{self, Message};
use tokio_tungstenite::WebSocketStream;

use super::messages::{Command, Outgoing, Refusal};
use super::{shutdown_reason, shutdown_signalled, ServerOptions};
use crate::{AccountStore, ConnId, ServerStore};
use tidemark_transport::wire::{
    self, error_code, ClientFrame, FrameError, ServerFrame, PROTOCOL_VERSION,
};

/// What a connection task needs besides its socket.
pub(crate) struct Context<St: ServerStore> {
    pub(crate) conn: ConnId,
    pub(crate) peer: SocketAddr,
    pub(crate) commands: mpsc::Sender<Command<St>>,
    pub(crate) shutdown: watch::Receiver<bool>,
    /// Held while the task reads its socket; see the accept loop.
    pub(crate) reading: Option<mpsc::Sender<()>>,
    pub(crate) options: Arc<ServerOptions>,
}

/// Whether to go on after a frame.
enum Flow {
    Continue,
    Stop,
}

/// The only fields of a hello the version check needs; anything else is ignored, so a newer
/// client's hello (with fields this version does not know) still gets a clear
/// `unsupported_version` instead of `malformed`.
#[derive(Deserialize)]
struct HelloPeek {
    #[serde(rename = "type")]
    kind: String,
    version: Option<u64>,
}

/// A per-connection token bucket.
struct RateLimit {
    /// Tokens per second; 0 means unlimited.
    rate: f64,
    burst: f64,
    tokens: f64,
    last: Instant,
}

impl RateLimit {
    fn new(rate_per_sec: u32, burst: u32) -> Self {
        let burst = f64::from(burst.max(1));
        Self {
            rate: f64::from(rate_per_sec),
            burst,
            tokens: burst,
            last: Instant::now(),
        }
    }

    /// Takes a token if there is one.
    fn take(&mut self) -> bool {
        if self.rate <= 0.0 {
            return true;
        }
        let now = Instant::now();
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.last = now;
        self.tokens = (self.tokens + elapsed * self.rate).min(self.burst);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

/// A connection after the upgrade.
struct Connection<St: ServerStore> {
    ws: WebSocketStream<TcpStream>,
    ctx: Context<St>,
}

/// Serves one TCP connection until it closes.
pub(crate) async fn serve<St>(ctx: Context<St>, tcp: TcpStream)
where
    St: ServerStore + AccountStore + Send + 'static,
{
    let limits = &ctx.options.limits;
    // The socket reads frames up to twice the limit, so a moderately oversized frame is
    // read whole and refused with a clear `too_large` (and the connection closes cleanly);
    // beyond that the socket stops reading at the frame header.
    let hard_cap = limits.max_frame_bytes.saturating_mul(2);
    let config = WebSocketConfig::default()
        .max_message_size(Some(hard_cap))
        .max_frame_size(Some(hard_cap));
    let upgrade = tokio_tungstenite::accept_async_with_config(tcp, Some(config));
    let ws = match tokio::time::timeout(ctx.options.handshake_timeout, upgrade).await {
        Ok(Ok(ws)) => ws,
        Ok(Err(err)) => {
            tracing::debug!(conn = ctx.conn.0, peer = %ctx.peer, %err, "WebSocket upgrade failed");
            return;
        }
        Err(_) => {
            tracing::debug!(conn = ctx.conn.0, peer = %ctx.peer, "WebSocket upgrade timed out");
            return;
        }
    };
    let mut connection = Connection { ws, ctx };
    let Some((outgoing, kill)) = connection.handshake().await else {
        return;
    };
    let reason = connection.run(outgoing, kill).await;
    tracing::info!(conn = connection.ctx.conn.0, peer = %connection.ctx.peer, reason, "connection closed");
    // Harmless when the core forgot the connection already (or has stopped).
    let _ = connection
        .ctx
        .commands
        .send(Command::Disconnect {
            conn: connection.ctx.conn,
        })
        .await;
}

impl<St> Connection<St>
where
    St: ServerStore + AccountStore + Send + 'static,
{
    /// Waits for the hello and authenticates it. `None`: refused (the refusal was sent and
    /// the socket closed) or gone.
    async fn handshake(
        &mut self,
    ) -> Option<(mpsc::Receiver<Outgoing>, oneshot::Receiver<Refusal>)> {
        let deadline = Instant::now() + self.ctx.options.handshake_timeout;
        let text = loop {
            let message = tokio::select! {
                () = shutdown_signalled(&mut self.ctx.shutdown) => {
                    self.fail(&shutdown_reason()).await;
                    return None;
                }
                () = tokio::time::sleep_until(deadline) => {
                    self.fail(&Refusal::new(error_code::PROTOCOL, "no hello in time")).await;
                    return None;
                }
                message = self.ws.next() => message,
            };
            match message {
                None => return None,
                Some(Err(err)) => {
                    self.on_socket_error(err).await;
                    return None;
                }
                Some(Ok(Message::Text(text))) => break text,
                Some(Ok(Message::Binary(_))) => {
                    self.fail(&binary_refusal()).await;
                    return None;
                }
                Some(Ok(Message::Close(_))) => return None,
                Some(Ok(Message::Ping(_) | Message::Pong(_) | Message::Frame(_))) => {}
            }
        };
        let bytes = text.as_bytes();
        let limits = &self.ctx.options.limits;
        if bytes.len() <= limits.max_frame_bytes {
            if let Ok(peek) = serde_json::from_slice::<HelloPeek>(bytes) {
                if peek.kind == "hello"
                    && peek
                        .version
                        .is_some_and(|v| v != u64::from(PROTOCOL_VERSION))
                {
                    let refusal = Refusal::new(
                        error_code::UNSUPPORTED_VERSION,
                        format!("this server speaks protocol version {PROTOCOL_VERSION}"),
                    );
                    tracing::info!(conn = self.ctx.conn.0, peer = %self.ctx.peer, version = ?peek.version, "unsupported protocol version");
                    self.fail(&refusal).await;
                    return None;
                }
            }
        }
        let (user, device, token) = match wire::decode_client(bytes, limits) {
            Ok(ClientFrame::Hello {
                user,
                device,
                token,
                ..
            }) => (user, device, token),
            Ok(ClientFrame::Request { .. }) => {
                self.fail(&Refusal::new(
                    error_code::PROTOCOL,
                    "the first frame must be a hello",
                ))
                .await;
                return None;
            }
            Err(err) => {
                tracing::debug!(conn = self.ctx.conn.0, peer = %self.ctx.peer, %err, "bad hello");
                self.fail(&Refusal::new(err.code(), err.to_string())).await;
                return None;
            }
        };
        let (outgoing_tx, outgoing) = mpsc::channel(self.ctx.options.outgoing_queue.max(1));
        let (kill_tx, kill) = oneshot::channel();
        let (reply, answer) = oneshot::channel();
        let sent = self
            .ctx
            .commands
            .send(Command::Connect {
                conn: self.ctx.conn,
                user: user.clone(),
                device: device.clone(),
                token,
                outgoing: outgoing_tx,
                kill: kill_tx,
                reply,
            })
            .await;
        let answer = match sent {
            Ok(()) => answer.await.ok(),
            Err(_) => None,
        };
        match answer {
            Some(Ok(server_time)) => {
                let welcome = ServerFrame::Welcome {
                    version: PROTOCOL_VERSION,
                    server_time,
                };
                if self.write(&welcome).await.is_err() {
                    return None;
                }
                tracing::info!(conn = self.ctx.conn.0, peer = %self.ctx.peer, %user, %device, "connected");
                Some((outgoing, kill))
            }
            Some(Err(refusal)) => {
                tracing::warn!(conn = self.ctx.conn.0, peer = %self.ctx.peer, %user, %device, reason = refusal.code, "authentication failed");
                self.fail(&refusal).await;
                None
            }
            None => {
                self.fail(&shutdown_reason()).await;
                None
            }
        }
    }

    /// The session: frames in and out until the connection ends. Returns why it ended.
    async fn run(
        &mut self,
        mut outgoing: mpsc::Receiver<Outgoing>,
        mut kill: oneshot::Receiver<Refusal>,
    ) -> &'static str {
        let options = self.ctx.options.clone();
        let mut rate = RateLimit::new(options.rate_per_sec, options.rate_burst);
        let mut idle_deadline = Instant::now() + options.idle_timeout;
        let heartbeat = options.heartbeat.max(Duration::from_millis(10));
        let mut ping = tokio::time::interval_at(Instant::now() + heartbeat, heartbeat);
        ping.set_missed_tick_behavior(MissedTickBehavior::Delay);
        let mut kill_armed = true;
        loop {
            let reading = self.ctx.reading.is_some();
            tokio::select! {
                // The kill goes first: once fired, what is queued is moot.
                biased;
                refusal = &mut kill, if kill_armed => match refusal {
                    Ok(refusal) => {
                        self.fail(&refusal).await;
                        return refusal.code;
                    }
                    // The core dropped the route without a kill: the queue ends next.
                    Err(_) => kill_armed = false,
                },
                out = outgoing.recv() => match out {
                    Some(Outgoing::Frame(frame)) => {
                        if self.write(&frame).await.is_err() {
                            return "write failed";
                        }
                    }
                    Some(Outgoing::Close) => {
                        self.close().await;
                        return "kicked";
                    }
                    None => {
                        // The core let go of this connection: it is shutting down.
                        self.fail(&shutdown_reason()).await;
                        return error_code::SHUTDOWN;
                    }
                },
                () = shutdown_signalled(&mut self.ctx.shutdown), if reading => {
                    // Stop reading; what was read is queued for the core already. The core
                    // ends the queue once it has handled it.
                    self.ctx.reading = None;
                }
                message = self.ws.next(), if reading => {
                    idle_deadline = Instant::now() + options.idle_timeout;
                    if let Flow::Stop = self.on_message(message, &mut rate).await {
                        return "client closed or broke the protocol";
                    }
                }
                () = tokio::time::sleep_until(idle_deadline), if reading => {
                    self.fail(&Refusal::new(
                        error_code::IDLE,
                        format!("nothing received for {:?}", options.idle_timeout),
                    ))
                    .await;
                    return error_code::IDLE;
                }
                _ = ping.tick() => {
                    let sent = tokio::time::timeout(
                        options.write_timeout,
                        self.ws.send(Message::Ping(Default::default())),
                    )
                    .await;
                    if !matches!(sent, Ok(Ok(()))) {
                        return "ping failed";
                    }
                }
            }
        }
    }

    /// Handles one thing read from the socket.
    async fn on_message(
        &mut self,
        message: Option<Result<Message, tungstenite::Error>>,
        rate: &mut RateLimit,
    ) -> Flow {
        let text = match message {
            None | Some(Ok(Message::Close(_))) => return Flow::Stop,
            Some(Err(err)) => {
                self.on_socket_error(err).await;
                return Flow::Stop;
            }
            Some(Ok(Message::Text(text))) => text,
            Some(Ok(Message::Binary(_))) => {
                self.fail(&binary_refusal()).await;
                return Flow::Stop;
            }
            // Pongs answer our pings: the peer is alive, which resetting the idle deadline
            // already recorded.
            Some(Ok(Message::Ping(_) | Message::Pong(_) | Message::Frame(_))) => {
                return Flow::Continue
            }
        };
        match wire::decode_client(text.as_bytes(), &self.ctx.options.limits) {
            Ok(ClientFrame::Request { id, request }) => {
                if !rate.take() {
                    let refused = ServerFrame::Response {
                        id,
                        response: Response::Error(ServerError::new(
                            ErrorCode::RateLimited,
                            "too many requests; slow down",
                        )),
                    };
                    return match self.write(&refused).await {
                        Ok(()) => Flow::Continue,
                        Err(()) => Flow::Stop,
                    };
                }
                let queued = self
                    .ctx
                    .commands
                    .send(Command::Request {
                        conn: self.ctx.conn,
                        id,
                        request,
                    })
                    .await;
                if queued.is_err() {
                    self.fail(&shutdown_reason()).await;
                    return Flow::Stop;
                }
                Flow::Continue
            }
            Ok(ClientFrame::Hello { .. }) => {
                self.fail(&Refusal::new(error_code::PROTOCOL, "a second hello"))
                    .await;
                Flow::Stop
            }
            Err(err @ FrameError::TooLarge { .. }) => {
                tracing::debug!(conn = self.ctx.conn.0, %err, "frame too large");
                self.fail(&Refusal::new(err.code(), err.to_string())).await;
                Flow::Stop
            }
            Err(err) => {
                // A bad frame is the sender's mistake and costs only that frame.
                tracing::debug!(conn = self.ctx.conn.0, %err, "refused a frame");
                let refusal = Refusal::new(err.code(), err.to_string());
                match self.write(&refusal.frame(false)).await {
                    Ok(()) => Flow::Continue,
                    Err(()) => Flow::Stop,
                }
            }
        }
    }

    /// Answers a read failure of the socket, where an answer still makes sense.
    async fn on_socket_error(&mut self, err: tungstenite::Error) {
        let refusal = match &err {
            tungstenite::Error::ConnectionClosed | tungstenite::Error::AlreadyClosed => return,
            tungstenite::Error::Capacity(detail) => {
                Refusal::new(error_code::TOO_LARGE, detail.to_string())
            }
            tungstenite::Error::Utf8(_) => {
                Refusal::new(error_code::MALFORMED, "a text frame that is not UTF-8")
            }
            tungstenite::Error::Protocol(detail) => {
                Refusal::new(error_code::PROTOCOL, detail.to_string())
            }
            _ => {
                tracing::debug!(conn = self.ctx.conn.0, %err, "socket error");
                return;
            }
        };
        tracing::debug!(conn = self.ctx.conn.0, %err, "socket error");
        // Best effort: the socket may not be writable any more.
        self.fail(&refusal).await;
    }

    /// Writes one frame, within the write timeout.
    async fn write(&mut self, frame: &ServerFrame) -> Result<(), ()> {
        let text = Message::text(wire::encode(frame));
        match tokio::time::timeout(self.ctx.options.write_timeout, self.ws.send(text)).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(err)) => {
                tracing::debug!(conn = self.ctx.conn.0, %err, "write failed");
                Err(())
            }
            Err(_) => {
                tracing::info!(
                    conn = self.ctx.conn.0,
                    "write timed out: the client does not read"
                );
                Err(())
            }
        }
    }

    /// Sends a fatal error frame, then closes.
    async fn fail(&mut self, refusal: &Refusal) {
        tracing::debug!(conn = self.ctx.conn.0, code = refusal.code, message = %refusal.message, "closing with an error");
        if self.write(&refusal.frame(true)).await.is_ok() {
            self.close().await;
        }
    }

    /// Closes the WebSocket and waits (briefly) for the client's side of the close, so what
    /// was written is read before the TCP connection ends: closing with unread input pending
    /// makes the kernel reset the connection, and the client could lose the last frames.
    async fn close(&mut self) {
        self.ctx.reading = None;
        let grace = self.ctx.options.write_timeout.min(Duration::from_secs(5));
        let _ = tokio::time::timeout(grace, async {
            if self.ws.close(None).await.is_err() {
                return;
            }
            while let Some(Ok(_)) = self.ws.next().await {}
        })
        .await;
    }
}

fn binary_refusal() -> Refusal {
    Refusal::new(
        error_code::MALFORMED,
        "binary frames are not spoken here; frames are JSON text",
    )
}
