//! The reference server host: [`ServerCore`] behind real WebSockets, on tokio.
//!
//! Shape:
//! - One std thread owns the core and its store (the SQLite store does blocking I/O, which
//!   must not stall the async workers). It takes commands from a bounded channel
//!   (authenticate and connect, request, disconnect, admin closures, shutdown). It handles
//!   the commands already queued (up to 512) as one group commit
//!   ([`ServerStore::begin_group`]), then drains [`ServerCore::poll_output`] into the
//!   connections' outgoing queues: acks and pushes leave only after the group committed.
//! - One tokio task per connection: the WebSocket upgrade and the hello (with a timeout),
//!   then frames in (decoded with [`Limits::client_frames`], rate limited by a token bucket)
//!   and frames out (its bounded outgoing queue), a WebSocket ping every heartbeat and an
//!   idle timeout. A bad frame costs only its own connection.
//! - An accept task, which also runs the clean shutdown.
//!
//! Outgoing queues are bounded and filled with `try_send`: a connection that cannot keep up
//! is closed with [`error_code::SLOW_CONSUMER`] instead of making the core wait (or grow
//! without bound). Its client reconnects and pulls what it missed, which the inbox model makes
//! cheap and exact.
//!
//! Clean shutdown ([`ServerHandle::shutdown`]): stop accepting; every connection stops
//! reading (a request it read before is already queued for the core); the core handles every
//! queued command, then drops every outgoing queue; each connection writes what its queue
//! holds, then a [`error_code::SHUTDOWN`] error frame, and closes. An ack is only queued after
//! the store committed the change, so nothing acknowledged is lost, and a request without an
//! ack is retried by its client (sends are idempotent).
//!
//! Server time is the wall clock in milliseconds, never running backwards within one run.

pub mod cli;
mod conn;
mod core_thread;
mod messages;
pub mod ops;

use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tidemark_engine::Timestamp;
use tokio::net::TcpListener;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::{JoinHandle, JoinSet};

use crate::{AccountStore, ConnId, ServerConfig, ServerCore, ServerStore};
use tidemark_transport::wire::{error_code, Limits};

use messages::Command;

/// How the server listens, what it accepts and how it protects itself.
#[derive(Clone, Debug, PartialEq)]
pub struct ServerOptions {
    /// Where to listen; port 0 picks a free port (see [`ServerHandle::local_addr`]).
    pub listen: SocketAddr,
    /// The inbox rules' limits.
    pub core: ServerConfig,
    /// What the server accepts from clients. Frames up to twice `max_frame_bytes` are read
    /// and refused with [`error_code::TOO_LARGE`]; larger ones are cut off by the socket.
    pub limits: Limits,
    /// Requests per second each connection may make on average; `0` turns the limit off.
    /// Requests over it are answered `rate_limited` (not permanent) without reaching the
    /// core.
    pub rate_per_sec: u32,
    /// How many requests a connection may make in a burst.
    pub rate_burst: u32,
    /// How often the server pings each connection (WebSocket ping).
    pub heartbeat: Duration,
    /// A connection from which nothing (no frame, no pong) arrives for this long is closed
    /// with [`error_code::IDLE`].
    pub idle_timeout: Duration,
    /// Longest time from TCP accept to a hello (the WebSocket upgrade included).
    pub handshake_timeout: Duration,
    /// Longest time one frame may take to write; a client that does not read is closed.
    pub write_timeout: Duration,
    /// Frames waiting to be written per connection before it is closed as a slow consumer.
    pub outgoing_queue: usize,
    /// Commands (requests, connects, ...) waiting for the core before connections stop
    /// reading their sockets.
    pub core_queue: usize,
    /// How long a shutdown waits for connections to flush before dropping them.
    pub shutdown_grace: Duration,
}

impl Default for ServerOptions {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            core: ServerConfig::default(),
            limits: Limits::client_frames(),
            rate_per_sec: 1_000,
            rate_burst: 2_000,
            heartbeat: Duration::from_secs(20),
            idle_timeout: Duration::from_secs(60),
            handshake_timeout: Duration::from_secs(10),
            write_timeout: Duration::from_secs(30),
            outgoing_queue: 4_096,
            core_queue: 1_024,
            shutdown_grace: Duration::from_secs(10),
        }
    }
}

/// Why a [`ServerHandle`] call failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum HostError {
    /// The server has shut down (or its core thread ended).
    #[error("the server has stopped")]
    Stopped,
    /// The admin closure panicked; the server goes on.
    #[error("the admin closure panicked")]
    AdminPanicked,
    /// The core thread panicked: the store is lost to this process.
    #[error("the server core thread panicked")]
    CorePanicked,
}

/// Starts servers; see [`Server::start`].
#[derive(Debug)]
pub struct Server;

impl Server {
    /// Binds `options.listen`, starts the core thread over `store` and the accept task, and
    /// returns a handle. Must be called inside a tokio runtime (any flavour).
    ///
    /// Fails with [`io::ErrorKind::InvalidInput`] (and nothing started) when the core's
    /// limits let through a message or reply that does not fit a frame
    /// ([`ServerConfig::check`]): clients could never send or receive it.
    pub async fn start<St>(store: St, options: ServerOptions) -> io::Result<ServerHandle<St>>
    where
        St: ServerStore + AccountStore + Send + 'static,
    {
        options
            .core
            .check(&options.limits)
            .map_err(|err| io::Error::new(io::ErrorKind::InvalidInput, err))?;
        let listener = TcpListener::bind(options.listen).await?;
        let local_addr = listener.local_addr()?;
        let (commands, command_rx) = mpsc::channel(options.core_queue.max(1));
        let connections = Arc::new(AtomicUsize::new(0));
        let core = ServerCore::new(store, options.core.clone());
        let core_thread = {
            let connections = connections.clone();
            std::thread::Builder::new()
                .name("tidemark-core".to_owned())
                .spawn(move || core_thread::run(core, command_rx, connections))?
        };
        let (shutdown, shutdown_rx) = watch::channel(false);
        let accept = tokio::spawn(accept_loop(
            listener,
            commands.clone(),
            shutdown_rx,
            Arc::new(options),
        ));
        tracing::info!(%local_addr, "tidemark server listening");
        Ok(ServerHandle {
            local_addr,
            commands,
            shutdown,
            accept: Some(accept),
            core_thread: Some(core_thread),
            connections,
        })
    }
}

/// A running server. Dropping it without [`ServerHandle::shutdown`] also shuts the server
/// down (in the background, dropping the store).
pub struct ServerHandle<St: ServerStore> {
    local_addr: SocketAddr,
    commands: mpsc::Sender<Command<St>>,
    shutdown: watch::Sender<bool>,
    accept: Option<JoinHandle<()>>,
    core_thread: Option<std::thread::JoinHandle<St>>,
    connections: Arc<AtomicUsize>,
}

impl<St: ServerStore> fmt::Debug for ServerHandle<St> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServerHandle")
            .field("local_addr", &self.local_addr)
            .field("connections", &self.connections.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}

impl<St> ServerHandle<St>
where
    St: ServerStore + AccountStore + Send + 'static,
{
    /// The address the server listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// The URL clients connect to: `ws://<local_addr>`.
    pub fn url(&self) -> String {
        format!("ws://{}", self.local_addr)
    }

    /// How many authenticated connections the core knows of.
    pub fn connections(&self) -> usize {
        self.connections.load(Ordering::Relaxed)
    }

    /// Runs `f` on the core thread with the core and the server time, then delivers every
    /// push it caused (admin appends, new conversations, kicks, ...). For admin actions and
    /// reads of the store.
    pub async fn admin<R, F>(&self, f: F) -> Result<R, HostError>
    where
        F: FnOnce(&mut ServerCore<St>, Timestamp) -> R + Send + 'static,
        R: Send + 'static,
    {
        let (reply, answer) = oneshot::channel();
        let job = Box::new(move |core: &mut ServerCore<St>, now: Timestamp| {
            // A panicking closure must not take the core (and every connection) down.
            let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| f(core, now)));
            let _ = reply.send(result.map_err(|_| HostError::AdminPanicked));
        });
        self.commands
            .send(Command::Admin(job))
            .await
            .map_err(|_| HostError::Stopped)?;
        answer.await.map_err(|_| HostError::Stopped)?
    }

    /// Shuts down cleanly (see the module docs) and returns the store.
    pub async fn shutdown(mut self) -> Result<St, HostError> {
        self.shutdown.send_replace(true);
        if let Some(accept) = self.accept.take() {
            if let Err(err) = accept.await {
                tracing::error!(%err, "the accept task failed");
            }
        }
        // The accept task normally sent this already; if it failed, the core still stops.
        let _ = self.commands.send(Command::Shutdown).await;
        let Some(thread) = self.core_thread.take() else {
            return Err(HostError::Stopped);
        };
        match tokio::task::spawn_blocking(move || thread.join()).await {
            Ok(Ok(store)) => {
                tracing::info!(addr = %self.local_addr, "tidemark server stopped");
                Ok(store)
            }
            _ => Err(HostError::CorePanicked),
        }
    }
}

impl<St: ServerStore> Drop for ServerHandle<St> {
    fn drop(&mut self) {
        // Without a handle nobody could stop the server: stop it now. A no-op after
        // `shutdown`.
        self.shutdown.send_replace(true);
    }
}

/// Resolves once the shutdown flag is set (or its sender is gone, which means the same).
async fn shutdown_signalled(rx: &mut watch::Receiver<bool>) {
    let _ = rx.wait_for(|down| *down).await;
}

/// Accepts connections until shutdown, then runs the shutdown sequence.
async fn accept_loop<St>(
    listener: TcpListener,
    commands: mpsc::Sender<Command<St>>,
    mut shutdown: watch::Receiver<bool>,
    options: Arc<ServerOptions>,
) where
    St: ServerStore + AccountStore + Send + 'static,
{
    // Every connection task holds a clone of `reading` while it reads its socket; the
    // channel closes once all of them (and this loop) have stopped reading.
    let (reading, mut all_stopped_reading) = mpsc::channel::<()>(1);
    let mut tasks = JoinSet::new();
    let mut next_conn = 1u64;
    loop {
        tokio::select! {
            () = shutdown_signalled(&mut shutdown) => break,
            accepted = listener.accept() => match accepted {
                Ok((tcp, peer)) => {
                    // Small frames (acks, pushes) must not wait for Nagle.
                    if let Err(err) = tcp.set_nodelay(true) {
                        tracing::debug!(%peer, %err, "cannot set TCP_NODELAY");
                    }
                    let conn = ConnId(next_conn);
                    next_conn += 1;
                    tasks.spawn(conn::serve(conn::Context {
                        conn,
                        peer,
                        commands: commands.clone(),
                        shutdown: shutdown.clone(),
                        reading: Some(reading.clone()),
                        options: options.clone(),
                    }, tcp));
                }
                Err(err) => {
                    // Typically out of file descriptors: back off instead of spinning.
                    tracing::warn!(%err, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            },
            Some(done) = tasks.join_next(), if !tasks.is_empty() => {
                if let Err(err) = done {
                    tracing::error!(%err, "a connection task failed");
                }
            }
        }
    }
    drop(listener);
    drop(reading);
    tracing::info!("shutting down: no new connections; waiting for connections to stop reading");
    // `None` once every holder of `reading` dropped it: every request read is queued.
    let _ = all_stopped_reading.recv().await;
    let _ = commands.send(Command::Shutdown).await;
    drop(commands);
    let flushed = tokio::time::timeout(options.shutdown_grace, async {
        while let Some(done) = tasks.join_next().await {
            if let Err(err) = done {
                tracing::error!(%err, "a connection task failed");
            }
        }
    })
    .await;
    if flushed.is_err() {
        tracing::warn!(
            left = tasks.len(),
            "connections did not flush within the shutdown grace; dropping them"
        );
        tasks.abort_all();
    }
}

/// The server's clock: wall-clock milliseconds, never running backwards.
#[derive(Debug, Default)]
pub(crate) struct Clock {
    last: u64,
}

impl Clock {
    pub(crate) fn now(&mut self) -> Timestamp {
        self.last = self.last.max(wall_clock().0);
        Timestamp(self.last)
    }
}

/// Milliseconds since the Unix epoch (0 if the clock is set before it).
pub fn wall_clock() -> Timestamp {
    let since = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    Timestamp(u64::try_from(since.as_millis()).unwrap_or(u64::MAX))
}

/// The fatal error frame of a shutdown, as connections send it.
pub(crate) fn shutdown_reason() -> messages::Refusal {
    messages::Refusal::new(error_code::SHUTDOWN, "the server is shutting down")
}
