//! [`Client`]: the runtime-agnostic async driver that runs an [`Engine`] against a
//! [`Storage`], a [`Transport`] and a [`Runtime`].
//!
//! The driver rule: after every input or command, drain [`Engine::poll_output`] until it
//! returns [`Output::Timeout`], carrying out each output in order; then wait for whichever
//! comes first: something from the server, a command from a [`ClientHandle`], or the timeout.
//! Writes are applied one at a time, in order, before the next output is looked at, so the
//! store is always at a commit boundary the engine knows of.
//!
//! When a write fails the engine stops. The client drops the connection and, after a short
//! delay, starts a new engine from a fresh [`Storage::load_snapshot`]: exactly what happens
//! after a crash, so a storage failure is recovered the same, well-tested way.
//!
//! Except when retrying cannot help: a store that reports damage
//! ([`StorageError::Corrupt`]), cannot be written ([`StorageError::ReadOnly`]: permissions,
//! read-only media, a file moved under the connection) or belongs to a newer build
//! ([`StorageError::UnsupportedVersion`]) would fail again after every restart, and a
//! restart into a damaged file would write into it. The client then stops for good
//! ([`Event::StoreUnusable`], [`ClientError::StoreUnusable`] for every command, connection
//! closed); the app recovers the store and starts a new client. A full disk
//! ([`StorageError::Full`]) and backend errors stay on the restart path: space can be
//! freed, a busy lock released, while the client waits with backoff.
//!
//! The client needs only `futures`. Apps run [`Client::run`] on their executor (for example
//! `tokio::spawn`) and talk to it through cloneable [`ClientHandle`]s; events arrive on an
//! [`EventStream`] and at registered [`EventListener`]s.

use std::fmt;
use std::pin::Pin;
use std::task::{Context, Poll};

use futures::channel::{mpsc, oneshot};
use futures::stream::FusedStream;
use futures::{FutureExt, Stream, StreamExt};

use crate::config::EngineConfig;
use crate::engine::{CommandError, Engine};
use crate::model::{ClientMsgId, ContentKind, ConversationId, Seq, Timestamp};
use crate::output::{Event, Output};
use crate::protocol::{Request, RequestId};
use crate::runtime::Runtime;
use crate::storage::{
    BatchId, SendOutsideWasm, Storage, StorageError, SyncOutsideWasm, WriteBatch,
};
use crate::transport::{Incoming, RequestSink, Transport, TransportError};

/// Why a [`ClientHandle`] command failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ClientError {
    /// The engine refused the command.
    #[error(transparent)]
    Command(#[from] CommandError),
    /// The store failed: reading for the command, or committing what the command wrote.
    /// In the second case the command had no effect (the engine restarts from the store).
    #[error(transparent)]
    Storage(#[from] StorageError),
    /// The client shut down (or was dropped) before answering.
    #[error("client is shut down")]
    Closed,
    /// The client stopped for good because its store cannot be used (see
    /// [`Event::StoreUnusable`]); no command will succeed until a new client runs on a
    /// recovered store.
    #[error("the store cannot be used: {error}")]
    StoreUnusable {
        /// The store's error, as text.
        error: String,
        /// Whether the store reported damage (recover it), rather than being unwritable.
        damaged: bool,
    },
}

/// Whether `e` is an error that retrying on the same store cannot heal, and if so whether it
/// means damage. `None` for the errors the restart path handles.
fn unusable(e: &StorageError) -> Option<bool> {
    match e {
        StorageError::Corrupt { .. } => Some(true),
        StorageError::ReadOnly { .. } | StorageError::UnsupportedVersion { .. } => Some(false),
        _ => None,
    }
}

/// Receives every event, as the callback alternative to [`EventStream`] (for SDKs whose host
/// language wants callbacks). Called on the driver loop: it must return quickly and must not
/// wait on the client.
pub trait EventListener: SendOutsideWasm + SyncOutsideWasm {
    /// One event, in the order the engine released it.
    fn on_event(&self, event: &Event);
}

impl<F> EventListener for F
where
    F: Fn(&Event) + SendOutsideWasm + SyncOutsideWasm,
{
    fn on_event(&self, event: &Event) {
        self(event);
    }
}

/// The events of a [`Client`], as a [`Stream`]. Unbounded, so a slow reader never stalls
/// sync; it ends when the client shuts down or is dropped.
#[derive(Debug)]
pub struct EventStream {
    rx: mpsc::UnboundedReceiver<Event>,
}

impl Stream for EventStream {
    type Item = Event;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Event>> {
        self.rx.poll_next_unpin(cx)
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        self.rx.size_hint()
    }
}

impl FusedStream for EventStream {
    fn is_terminated(&self) -> bool {
        self.rx.is_terminated()
    }
}

/// A command for the running loop, with the channel its answer goes back on.
enum Command {
    SendMessage {
        conversation: ConversationId,
        kind: ContentKind,
        content: Vec<u8>,
        reply: oneshot::Sender<Result<ClientMsgId, ClientError>>,
    },
    MarkRead {
        conversation: ConversationId,
        seq: Seq,
        reply: oneshot::Sender<Result<(), ClientError>>,
    },
    LoadHistory {
        conversation: ConversationId,
        before: Option<Seq>,
        limit: u32,
        reply: oneshot::Sender<Result<u64, ClientError>>,
    },
    Retry {
        conversation: ConversationId,
        client_msg_id: ClientMsgId,
        reply: oneshot::Sender<Result<(), ClientError>>,
    },
    Cancel {
        conversation: ConversationId,
        client_msg_id: ClientMsgId,
        reply: oneshot::Sender<Result<(), ClientError>>,
    },
    Shutdown {
        reply: oneshot::Sender<()>,
    },
}

/// Sends commands to a running [`Client`]. Cheap to clone; usable from any task.
///
/// Each method waits for the loop to carry the command out (the engine's part of it and the
/// writes it caused, not the network round trip: a sent message's fate arrives as an
/// [`Event`]). `Ok` means the command's effect is committed; if its write failed the answer is
/// [`ClientError::Storage`] and the command had no effect. Commands queued before
/// [`Client::run`] starts are carried out once it does.
#[derive(Clone)]
pub struct ClientHandle {
    tx: mpsc::UnboundedSender<Command>,
}

impl fmt::Debug for ClientHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientHandle")
            .field("closed", &self.tx.is_closed())
            .finish()
    }
}

impl ClientHandle {
    async fn request<V>(
        &self,
        make: impl FnOnce(oneshot::Sender<Result<V, ClientError>>) -> Command,
    ) -> Result<V, ClientError> {
        let (reply, answer) = oneshot::channel();
        self.tx
            .unbounded_send(make(reply))
            .map_err(|_| ClientError::Closed)?;
        // A dropped reply means the loop ended before answering.
        answer.await.unwrap_or(Err(ClientError::Closed))
    }

    /// Sends a message: it is stored as pending with its outbox entry before anything goes on
    /// the wire. Returns its client id once that is stored; [`Event::MessageSent`] or
    /// [`Event::SendFailed`] follows.
    pub async fn send_message(
        &self,
        conversation: ConversationId,
        kind: ContentKind,
        content: Vec<u8>,
    ) -> Result<ClientMsgId, ClientError> {
        self.request(|reply| Command::SendMessage {
            conversation,
            kind,
            content,
            reply,
        })
        .await
    }

    /// Marks a conversation read up to `seq`, locally at once and then on the server.
    pub async fn mark_read(
        &self,
        conversation: ConversationId,
        seq: Seq,
    ) -> Result<(), ClientError> {
        self.request(|reply| Command::MarkRead {
            conversation,
            seq,
            reply,
        })
        .await
    }

    /// Makes sure the `limit` seqs below `before` are held (with `None`: the newest `limit`
    /// seqs), pulling what is missing; to page back, pass the oldest seq the app shows.
    /// Returns the id that the matching [`Event::HistoryLoaded`] carries.
    pub async fn load_history(
        &self,
        conversation: ConversationId,
        before: Option<Seq>,
        limit: u32,
    ) -> Result<u64, ClientError> {
        self.request(|reply| Command::LoadHistory {
            conversation,
            before,
            limit,
            reply,
        })
        .await
    }

    /// Sends a failed message again under the same client id. The message is read from
    /// storage, so it must be stored (see [`Storage::message_by_client_id`]).
    pub async fn retry(
        &self,
        conversation: ConversationId,
        client_msg_id: ClientMsgId,
    ) -> Result<(), ClientError> {
        self.request(|reply| Command::Retry {
            conversation,
            client_msg_id,
            reply,
        })
        .await
    }

    /// Cancels a send that has not been acked.
    pub async fn cancel(
        &self,
        conversation: ConversationId,
        client_msg_id: ClientMsgId,
    ) -> Result<(), ClientError> {
        self.request(|reply| Command::Cancel {
            conversation,
            client_msg_id,
            reply,
        })
        .await
    }

    /// Stops the loop: the connection is closed, [`Client::run`] returns and event streams
    /// end. Returns once the loop has stopped (at once if it is already gone). Every later
    /// command fails with [`ClientError::Closed`].
    pub async fn shutdown(&self) {
        let (reply, done) = oneshot::channel();
        if self.tx.unbounded_send(Command::Shutdown { reply }).is_ok() {
            // Cancelled means the loop is gone, which is what we wait for.
            let _ = done.await;
        }
    }

    /// Whether the client has shut down (commands would fail).
    pub fn is_closed(&self) -> bool {
        self.tx.is_closed()
    }
}

/// Fans events out to streams and listeners.
#[derive(Default)]
struct Dispatcher {
    streams: Vec<mpsc::UnboundedSender<Event>>,
    listeners: Vec<Box<dyn EventListener>>,
}

impl Dispatcher {
    fn subscribe(&mut self) -> EventStream {
        let (tx, rx) = mpsc::unbounded();
        self.streams.push(tx);
        EventStream { rx }
    }

    fn dispatch(&mut self, event: Event) {
        for listener in &self.listeners {
            listener.on_event(&event);
        }
        // A stream whose reader is gone is forgotten.
        self.streams
            .retain(|tx| tx.unbounded_send(event.clone()).is_ok());
    }
}

/// An open connection.
struct Connection<T: Transport> {
    sink: T::Sink,
    source: T::Source,
}

/// What ended a wait.
enum Wake {
    Incoming(Option<Result<Incoming, TransportError>>),
    Command(Option<Command>),
    Timer,
}

/// When to start a new engine after the current one stopped on a storage failure.
#[derive(Debug, Default)]
struct Restart {
    /// Set while the engine is stopped.
    at: Option<Timestamp>,
    /// Restarts since the last successful commit; doubles the delay.
    failures: u32,
}

/// Runs an [`Engine`] against a [`Storage`], a [`Transport`] and a [`Runtime`].
///
/// Built with [`Client::start`], driven by [`Client::run`], commanded through
/// [`ClientHandle`]s. On native targets `run`'s future is `Send`, so it can be spawned.
pub struct Client<S: Storage, T: Transport, R: Runtime> {
    engine: Engine,
    storage: S,
    transport: T,
    runtime: R,
    connection: Option<Connection<T>>,
    commands: mpsc::UnboundedReceiver<Command>,
    /// Kept to mint handles; it also keeps the channel open while no handle exists.
    command_tx: mpsc::UnboundedSender<Command>,
    dispatch: Dispatcher,
    restart: Restart,
    /// Set when the store failed in a way no restart heals: (error text, damaged, announced).
    /// The engine stays stopped from then on.
    unusable: Option<(String, bool, bool)>,
    /// The error of the write that stopped the engine, for the command that caused it.
    write_failure: Option<StorageError>,
    /// Set from shutdown on: outputs that would reach the network are dropped, and `run`
    /// returns at once.
    closing: bool,
}

impl<S: Storage, T: Transport, R: Runtime> fmt::Debug for Client<S, T, R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Client")
            .field("engine", &self.engine)
            .field("connected", &self.connection.is_some())
            .field("restart", &self.restart)
            .field("unusable", &self.unusable)
            .finish_non_exhaustive()
    }
}

impl<S: Storage, T: Transport, R: Runtime> Client<S, T, R> {
    /// Loads the snapshot from `storage` and builds the engine. Nothing happens until
    /// [`Client::run`]; the returned stream receives every event from then on.
    pub async fn start(
        config: EngineConfig,
        storage: S,
        transport: T,
        runtime: R,
    ) -> Result<(Self, EventStream), StorageError> {
        let snapshot = storage.load_snapshot().await?;
        let engine = Engine::new(config, snapshot, runtime.now());
        let (command_tx, commands) = mpsc::unbounded();
        let mut client = Self {
            engine,
            storage,
            transport,
            runtime,
            connection: None,
            commands,
            command_tx,
            dispatch: Dispatcher::default(),
            restart: Restart::default(),
            unusable: None,
            write_failure: None,
            closing: false,
        };
        let events = client.dispatch.subscribe();
        Ok((client, events))
    }

    /// A handle to send commands to the loop.
    pub fn handle(&self) -> ClientHandle {
        ClientHandle {
            tx: self.command_tx.clone(),
        }
    }

    /// Another stream of events, from now on.
    pub fn subscribe(&mut self) -> EventStream {
        self.dispatch.subscribe()
    }

    /// Registers a listener that receives every event from now on.
    pub fn add_listener(&mut self, listener: Box<dyn EventListener>) {
        self.dispatch.listeners.push(listener);
    }

    /// The engine (for its getters: connection state, unread counts, ...).
    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    /// The store, for reads.
    pub fn storage(&self) -> &S {
        &self.storage
    }

    /// The runtime.
    pub fn runtime(&self) -> &R {
        &self.runtime
    }

    /// Whether the client stopped for good because its store cannot be used
    /// ([`Event::StoreUnusable`]): `Some(damaged)` then.
    pub fn store_unusable(&self) -> Option<bool> {
        self.unusable.as_ref().map(|(_, damaged, _)| *damaged)
    }

    /// Drives the engine until a [`ClientHandle::shutdown`]. Borrows the client so a test or
    /// an app can inspect it afterwards; after a shutdown it returns at once.
    pub async fn run(&mut self) {
        // After a shutdown the command channel is closed for good (and `select!` would skip
        // the finished command stream, leaving nothing to end the wait).
        if self.closing {
            return;
        }
        loop {
            let mut deadline = self.drive().await;
            if self.unusable.is_some() {
                self.stop_for_good().await;
                // Nothing is due any more: only commands (answered with the error) and a
                // shutdown end the wait.
                deadline = Timestamp(u64::MAX);
            } else if self.engine.is_stopped() {
                deadline = self.schedule_restart().await;
            }
            let wake = if deadline <= self.runtime.now() {
                Wake::Timer
            } else {
                self.wait(deadline).await
            };
            match wake {
                Wake::Timer => self.on_timer().await,
                Wake::Command(Some(Command::Shutdown { reply })) => {
                    self.shut_down().await;
                    let _ = reply.send(());
                    return;
                }
                Wake::Command(Some(command)) => self.on_command(command).await,
                // Unreachable while the client holds a sender; ending is the safe answer.
                Wake::Command(None) => return,
                Wake::Incoming(incoming) => self.on_incoming(incoming).await,
            }
        }
    }

    /// Drains the engine's outputs, carrying each out; returns the timeout it ends with.
    async fn drive(&mut self) -> Timestamp {
        loop {
            let output = self.engine.poll_output();
            if let Some(deadline) = self.execute(output).await {
                return deadline;
            }
        }
    }

    /// Carries out one output; `Some(deadline)` for the final timeout.
    async fn execute(&mut self, output: Output) -> Option<Timestamp> {
        // A stopped engine's writes are discarded (the store stays at its last commit
        // boundary) and it gets no network: it is about to be replaced. On an unusable store
        // nothing is written or sent again (a read may have found the damage while the
        // engine still ran).
        let writable = !self.engine.is_stopped() && self.unusable.is_none();
        let live = writable && !self.closing;
        match output {
            Output::Timeout(deadline) => return Some(deadline),
            Output::Event(event) => self.dispatch.dispatch(event),
            Output::Connect if live => self.connect().await,
            Output::Request(id, request) if live => self.send_request(id, request).await,
            Output::Write(id, batch) if writable => self.write(id, batch).await,
            Output::Disconnect { reason } => {
                self.close_connection().await;
                self.engine.handle_disconnected(self.runtime.now(), &reason);
            }
            Output::Connect | Output::Request(..) | Output::Write(..) => {}
        }
        None
    }

    async fn connect(&mut self) {
        // A connect while connected replaces the connection.
        self.close_connection().await;
        match self.transport.connect().await {
            Ok((sink, source)) => {
                self.connection = Some(Connection { sink, source });
                self.engine.handle_connected(self.runtime.now());
            }
            Err(e) => self
                .engine
                .handle_disconnected(self.runtime.now(), &e.to_string()),
        }
    }

    async fn send_request(&mut self, id: RequestId, request: Request) {
        // Without a connection the engine has already been told it is down; a request it
        // queued before that is dropped and its own timeout covers it.
        let Some(conn) = self.connection.as_mut() else {
            return;
        };
        if let Err(e) = conn.sink.send(id, request).await {
            self.close_connection().await;
            self.engine
                .handle_disconnected(self.runtime.now(), &e.to_string());
        }
    }

    async fn write(&mut self, id: BatchId, batch: WriteBatch) {
        match self.storage.apply(batch).await {
            Ok(applied) => {
                self.restart.failures = 0;
                self.engine
                    .handle_batch_committed(self.runtime.now(), id, &applied);
            }
            Err(e) => {
                self.engine.handle_batch_failed(self.runtime.now(), id, &e);
                self.note_unusable(&e);
                self.write_failure = Some(e);
            }
        }
    }

    /// Carries out what a command just produced, so its answer can tell whether the command's
    /// writes committed. `Err` when one failed: the engine stopped and the command is lost.
    async fn commit(&mut self) -> Result<(), ClientError> {
        self.write_failure = None;
        // `run` drains again before it waits; a drained engine just repeats its timeout.
        self.drive().await;
        match self.write_failure.take() {
            Some(e) if self.engine.is_stopped() => Err(e.into()),
            _ => Ok(()),
        }
    }

    async fn close_connection(&mut self) {
        if let Some(mut conn) = self.connection.take() {
            conn.sink.close().await;
        }
    }

    /// Waits for the first of: server input, a command, the deadline.
    async fn wait(&mut self, deadline: Timestamp) -> Wake {
        let Self {
            connection,
            commands,
            runtime,
            ..
        } = self;
        let incoming = async {
            match connection.as_mut() {
                Some(conn) => conn.source.next().await,
                None => futures::future::pending().await,
            }
        };
        let timer = runtime.sleep_until(deadline);
        // Biased, so runs are deterministic under a simulated network: commands first (the
        // user waits on them), then the server. Timers cannot starve: `run` handles a passed
        // deadline before waiting again.
        futures::select_biased! {
            command = commands.next() => Wake::Command(command),
            incoming = incoming.fuse() => Wake::Incoming(incoming),
            () = timer.fuse() => Wake::Timer,
        }
    }

    async fn on_timer(&mut self) {
        let now = self.runtime.now();
        match self.restart.at {
            Some(at) if self.engine.is_stopped() => {
                if now >= at {
                    self.restart_engine().await;
                }
            }
            _ => self.engine.handle_timeout(now),
        }
    }

    async fn on_incoming(&mut self, incoming: Option<Result<Incoming, TransportError>>) {
        let now = self.runtime.now();
        match incoming {
            Some(Ok(Incoming::Response(id, response))) => {
                self.engine.handle_response(now, id, response);
            }
            Some(Ok(Incoming::Push(push))) => self.engine.handle_push(now, push),
            Some(Err(e)) => {
                self.close_connection().await;
                self.engine.handle_disconnected(now, &e.to_string());
            }
            None => {
                self.close_connection().await;
                self.engine.handle_disconnected(now, "connection closed");
            }
        }
    }

    /// A command's answer: an accepted command is answered once its writes committed.
    async fn committed<V>(&mut self, result: Result<V, ClientError>) -> Result<V, ClientError> {
        let value = result?;
        self.commit().await?;
        Ok(value)
    }

    /// Remembers an error no restart heals; `run` then stops the client for good.
    fn note_unusable(&mut self, e: &StorageError) {
        if self.unusable.is_none() {
            if let Some(damaged) = unusable(e) {
                self.unusable = Some((e.to_string(), damaged, false));
            }
        }
    }

    /// The store is unusable: close the connection (the engine stopped, so it already asked
    /// for that; a restart would have too) and tell the app, once.
    async fn stop_for_good(&mut self) {
        let Some((error, damaged, announced)) = self.unusable.as_mut() else {
            return;
        };
        if *announced {
            return;
        }
        *announced = true;
        let event = Event::StoreUnusable {
            error: error.clone(),
            damaged: *damaged,
        };
        self.restart.at = None;
        self.close_connection().await;
        self.dispatch.dispatch(event);
    }

    /// The answer to every command once the store is unusable.
    fn refusal(&self) -> Option<ClientError> {
        self.unusable
            .as_ref()
            .map(|(error, damaged, _)| ClientError::StoreUnusable {
                error: error.clone(),
                damaged: *damaged,
            })
    }

    async fn on_command(&mut self, command: Command) {
        if let Some(refusal) = self.refusal() {
            // A reply whose caller is gone needs no answer.
            match command {
                Command::SendMessage { reply, .. } => drop(reply.send(Err(refusal))),
                Command::LoadHistory { reply, .. } => drop(reply.send(Err(refusal))),
                Command::MarkRead { reply, .. }
                | Command::Retry { reply, .. }
                | Command::Cancel { reply, .. } => drop(reply.send(Err(refusal))),
                Command::Shutdown { reply } => drop(reply.send(())),
            }
            return;
        }
        let now = self.runtime.now();
        match command {
            Command::SendMessage {
                conversation,
                kind,
                content,
                reply,
            } => {
                let result = self
                    .engine
                    .send_message(now, &conversation, kind, content)
                    .map_err(ClientError::from);
                let result = self.committed(result).await;
                let _ = reply.send(result);
            }
            Command::MarkRead {
                conversation,
                seq,
                reply,
            } => {
                let result = self.engine.mark_read(now, &conversation, seq);
                let result = self.committed(result.map_err(ClientError::from)).await;
                let _ = reply.send(result);
            }
            Command::LoadHistory {
                conversation,
                before,
                limit,
                reply,
            } => {
                let result = self.engine.load_history(now, &conversation, before, limit);
                let result = self.committed(result.map_err(ClientError::from)).await;
                let _ = reply.send(result);
            }
            Command::Retry {
                conversation,
                client_msg_id,
                reply,
            } => {
                // Every write so far has been applied, so the store has the failed message
                // (a send of this user's, so its row is keyed by the signed-in user).
                let me = self.engine.config().user.clone();
                let result = match self
                    .storage
                    .message_by_client_id(&conversation, &me, &client_msg_id)
                    .await
                {
                    Ok(Some(message)) => self
                        .engine
                        .retry(self.runtime.now(), &message)
                        .map_err(ClientError::from),
                    Ok(None) => Err(CommandError::UnknownMessage(client_msg_id).into()),
                    Err(e) => {
                        // A damaged store found by this read takes no more writes either.
                        self.note_unusable(&e);
                        Err(e.into())
                    }
                };
                let result = self.committed(result).await;
                let _ = reply.send(result);
            }
            Command::Cancel {
                conversation,
                client_msg_id,
                reply,
            } => {
                let result = self.engine.cancel(now, &conversation, &client_msg_id);
                let result = self.committed(result.map_err(ClientError::from)).await;
                let _ = reply.send(result);
            }
            Command::Shutdown { reply } => {
                // `run` handles shutdown itself; reaching here would be a logic slip, so
                // answer rather than leave the caller waiting.
                let _ = reply.send(());
            }
        }
    }

    /// The delay before restart number `failures + 1`: the reconnect backoff.
    fn restart_delay(&self) -> u64 {
        let config = self.engine.config();
        let factor = 1u64.checked_shl(self.restart.failures).unwrap_or(u64::MAX);
        config
            .reconnect_min_ms
            .saturating_mul(factor)
            .min(config.reconnect_max_ms.max(config.reconnect_min_ms))
    }

    /// The engine stopped: drop its connection (the new engine's request ids would clash
    /// with the old one's) and set when to restart. Returns that time.
    async fn schedule_restart(&mut self) -> Timestamp {
        if let Some(at) = self.restart.at {
            return at;
        }
        self.close_connection().await;
        let at = self.runtime.now().plus_millis(self.restart_delay());
        self.restart.failures = self.restart.failures.saturating_add(1);
        self.restart.at = Some(at);
        at
    }

    /// Starts a new engine from what the store holds: the crash-recovery path.
    async fn restart_engine(&mut self) {
        match self.storage.load_snapshot().await {
            Ok(snapshot) => {
                let config = self.engine.config().clone();
                self.engine = Engine::new(config, snapshot, self.runtime.now());
                self.restart.at = None;
            }
            Err(e) => {
                self.note_unusable(&e);
                if self.unusable.is_some() {
                    // `run` stops the client for good and says why.
                    return;
                }
                // Tell the app, then try again later with a longer delay.
                self.dispatch.dispatch(Event::StorageFailed {
                    error: e.to_string(),
                });
                let at = self.runtime.now().plus_millis(self.restart_delay());
                self.restart.failures = self.restart.failures.saturating_add(1);
                self.restart.at = Some(at);
            }
        }
    }

    /// Closes the connection, lets the engine record the disconnect (its writes and events
    /// still go out), then refuses further commands and ends the event streams.
    async fn shut_down(&mut self) {
        self.closing = true;
        let was_connected = self.connection.is_some();
        self.close_connection().await;
        if was_connected && !self.engine.is_stopped() {
            self.engine
                .handle_disconnected(self.runtime.now(), "client shut down");
        }
        self.drive().await;
        // Commands still queued are dropped: their callers get `ClientError::Closed`.
        self.commands.close();
        while let Some(Some(command)) = self.commands.next().now_or_never() {
            if let Command::Shutdown { reply } = command {
                let _ = reply.send(());
            }
        }
        self.dispatch.streams.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::memory::MemoryStorage;
    use crate::model::{Conversation, ConversationKind, DeviceId, UserId};
    use crate::protocol::{Push, Response};
    use crate::runtime::ManualRuntime;
    use crate::storage::WriteOp;
    use futures::executor::block_on;
    use std::sync::{Arc, Mutex};

    /// What the fake transport saw.
    #[derive(Default)]
    struct Wire {
        connects: usize,
        refuse: bool,
        sent: Vec<(RequestId, Request)>,
        closed: usize,
        /// Feeds the source of the latest connection.
        feed: Option<mpsc::UnboundedSender<Result<Incoming, TransportError>>>,
    }

    #[derive(Clone, Default)]
    struct FakeTransport(Arc<Mutex<Wire>>);

    struct FakeSink(Arc<Mutex<Wire>>);

    #[cfg_attr(target_family = "wasm", async_trait::async_trait(?Send))]
    #[cfg_attr(not(target_family = "wasm"), async_trait::async_trait)]
    impl RequestSink for FakeSink {
        async fn send(&mut self, id: RequestId, request: Request) -> Result<(), TransportError> {
            self.0.lock().unwrap().sent.push((id, request));
            Ok(())
        }
        async fn close(&mut self) {
            let mut wire = self.0.lock().unwrap();
            wire.closed += 1;
            wire.feed = None;
        }
    }

    #[cfg_attr(target_family = "wasm", async_trait::async_trait(?Send))]
    #[cfg_attr(not(target_family = "wasm"), async_trait::async_trait)]
    impl Transport for FakeTransport {
        type Sink = FakeSink;
        type Source = mpsc::UnboundedReceiver<Result<Incoming, TransportError>>;

        async fn connect(&mut self) -> Result<(Self::Sink, Self::Source), TransportError> {
            let mut wire = self.0.lock().unwrap();
            wire.connects += 1;
            if wire.refuse {
                return Err(TransportError::Refused("no".into()));
            }
            let (tx, rx) = mpsc::unbounded();
            wire.feed = Some(tx);
            Ok((FakeSink(self.0.clone()), rx))
        }
    }

    type TestClient = Client<MemoryStorage, FakeTransport, ManualRuntime>;

    fn config() -> EngineConfig {
        EngineConfig::new(UserId::from("me"), DeviceId::from("d1"))
    }

    fn start(storage: MemoryStorage) -> (TestClient, EventStream, FakeTransport) {
        let transport = FakeTransport::default();
        let runtime = ManualRuntime::new(Timestamp(1_000));
        let (client, events) =
            block_on(Client::start(config(), storage, transport.clone(), runtime)).unwrap();
        (client, events, transport)
    }

    /// `run`'s future must be spawnable on a multi-threaded executor.
    #[cfg(not(target_family = "wasm"))]
    #[test]
    fn run_future_is_send() {
        fn assert_send<F: std::future::Future + Send>(_: F) {}
        let (mut client, _events, _) = start(MemoryStorage::new());
        assert_send(client.run());
        let handle = client.handle();
        assert_send(handle.send_message(ConversationId::from("c"), ContentKind::Text, vec![]));
        assert_send(handle.shutdown());
    }

    #[test]
    fn start_loads_the_snapshot_and_reports_load_failure() {
        let storage = MemoryStorage::new();
        block_on(storage.apply(WriteBatch {
            ops: vec![WriteOp::PutConversation(Conversation::new(
                ConversationId::from("c"),
                ConversationKind::Direct,
            ))],
        }))
        .unwrap();
        let (client, _events, _) = start(storage.clone());
        assert_eq!(client.engine().config().user, UserId::from("me"));
        assert_eq!(client.storage().applied_batches(), 1);

        storage.fail_next_loads(1);
        let result = block_on(Client::start(
            config(),
            storage,
            FakeTransport::default(),
            ManualRuntime::default(),
        ));
        assert!(matches!(result, Err(StorageError::Backend { .. })));
    }

    #[test]
    fn shutdown_ends_run_and_closes_everything() {
        let (mut client, mut events, _) = start(MemoryStorage::new());
        let handle = client.handle();
        let other = handle.clone();
        block_on(async {
            futures::join!(client.run(), async {
                // A command before the shutdown still gets its answer.
                let retry = handle
                    .retry(ConversationId::from("c"), ClientMsgId::from("nope"))
                    .await;
                assert!(matches!(
                    retry,
                    Err(ClientError::Command(CommandError::UnknownMessage(_)))
                ));
                handle.shutdown().await;
            });
        });
        assert!(other.is_closed());
        let after = block_on(other.mark_read(ConversationId::from("c"), Seq(1)));
        assert!(matches!(after, Err(ClientError::Closed)));
        // Shutting down twice is fine, and a second run returns at once.
        block_on(other.shutdown());
        block_on(client.run());
        // The stream yields what was dispatched, then ends.
        let rest: Vec<Event> = block_on(events.by_ref().collect());
        assert_eq!(
            rest.last(),
            Some(&Event::ConnectionChanged {
                state: crate::output::ConnectionState::Disconnected
            })
        );
        assert!(events.is_terminated());
    }

    #[test]
    fn dropping_the_client_fails_queued_commands() {
        let (client, _events, _) = start(MemoryStorage::new());
        let handle = client.handle();
        let pending = handle.load_history(ConversationId::from("c"), None, 10);
        drop(client);
        assert!(matches!(block_on(pending), Err(ClientError::Closed)));
        block_on(handle.shutdown());
    }

    #[test]
    fn outputs_reach_storage_transport_and_listeners() {
        let storage = MemoryStorage::new();
        let (mut client, mut events, transport) = start(storage.clone());
        let seen = Arc::new(Mutex::new(Vec::new()));
        let sink = seen.clone();
        client.add_listener(Box::new(move |e: &Event| {
            sink.lock().unwrap().push(e.clone())
        }));

        block_on(async {
            // A write is applied.
            let conv = Conversation::new(ConversationId::from("c"), ConversationKind::Group);
            let batch = WriteBatch {
                ops: vec![WriteOp::PutConversation(conv.clone())],
            };
            assert_eq!(client.execute(Output::Write(BatchId(1), batch)).await, None);
            assert_eq!(
                storage.conversation(&conv.id).await.unwrap(),
                Some(conv.clone())
            );

            // Connect, then a request goes on the wire.
            client.execute(Output::Connect).await;
            assert!(client.connection.is_some());
            client
                .execute(Output::Request(RequestId(7), Request::Ping))
                .await;
            assert_eq!(
                transport.0.lock().unwrap().sent,
                vec![(RequestId(7), Request::Ping)]
            );

            // What the server sends ends a wait; so does the connection ending.
            let feed = transport.0.lock().unwrap().feed.clone().unwrap();
            let pong = Incoming::Response(
                RequestId(7),
                Response::Pong {
                    server_time: Timestamp(5),
                },
            );
            feed.unbounded_send(Ok(pong.clone())).unwrap();
            match client.wait(Timestamp(u64::MAX)).await {
                Wake::Incoming(Some(Ok(got))) => assert_eq!(got, pong),
                _ => panic!("expected the pong"),
            }
            drop(feed);
            client
                .execute(Output::Disconnect {
                    reason: "test".into(),
                })
                .await;
            assert!(client.connection.is_none());
            assert_eq!(transport.0.lock().unwrap().closed, 1);

            // A refused connect leaves no connection.
            transport.0.lock().unwrap().refuse = true;
            client.execute(Output::Connect).await;
            assert!(client.connection.is_none());
            assert_eq!(transport.0.lock().unwrap().connects, 2);

            // Events reach the stream and the listener, in order.
            client.execute(Output::Event(Event::SyncStarted)).await;
            client.execute(Output::Event(Event::SyncFinished)).await;
            assert_eq!(events.next().await, Some(Event::SyncStarted));
            assert_eq!(events.next().await, Some(Event::SyncFinished));
        });
        assert_eq!(
            *seen.lock().unwrap(),
            vec![Event::SyncStarted, Event::SyncFinished]
        );
        // With no connection a wait ends on the timer.
        let runtime = client.runtime().clone();
        let wake = block_on(async {
            let wait = client.wait(Timestamp(1_500));
            futures::pin_mut!(wait);
            assert!(futures::poll!(wait.as_mut()).is_pending());
            runtime.advance(500);
            wait.await
        });
        assert!(matches!(wake, Wake::Timer));
    }

    #[test]
    fn pushes_and_drops_are_fed_to_the_engine() {
        let (mut client, _events, transport) = start(MemoryStorage::new());
        block_on(async {
            client.execute(Output::Connect).await;
            let feed = transport.0.lock().unwrap().feed.clone().unwrap();
            feed.unbounded_send(Ok(Incoming::Push(Push::Kicked {
                reason: "bye".into(),
            })))
            .unwrap();
            let wake = client.wait(Timestamp(u64::MAX)).await;
            let Wake::Incoming(incoming) = wake else {
                panic!("expected the push");
            };
            client.on_incoming(incoming).await;
            feed.unbounded_send(Err(TransportError::Closed)).unwrap();
            let Wake::Incoming(incoming) = client.wait(Timestamp(u64::MAX)).await else {
                panic!("expected the error");
            };
            client.on_incoming(incoming).await;
            assert!(client.connection.is_none(), "an error drops the connection");
        });
    }

    fn drain(events: &mut EventStream) -> Vec<Event> {
        std::iter::from_fn(|| events.next().now_or_never().flatten()).collect()
    }

    #[test]
    fn storage_failure_restarts_the_engine_from_the_store() {
        use futures::executor::LocalPool;
        use futures::task::LocalSpawnExt;

        let storage = MemoryStorage::new();
        let conv = ConversationId::from("c");
        let record = Conversation::new(conv.clone(), ConversationKind::Direct);
        block_on(storage.apply(WriteBatch {
            ops: vec![WriteOp::PutConversation(record)],
        }))
        .unwrap();
        let mut config = config();
        config.connect_on_start = false;
        let runtime = ManualRuntime::new(Timestamp(1_000));
        let (mut client, mut events) = block_on(Client::start(
            config,
            storage.clone(),
            FakeTransport::default(),
            runtime.clone(),
        ))
        .unwrap();
        let handle = client.handle();
        let mut pool = LocalPool::new();
        let finished = pool
            .spawner()
            .spawn_local_with_handle(async move {
                client.run().await;
                client
            })
            .unwrap();
        let send = |text: &str| {
            handle.send_message(conv.clone(), ContentKind::Text, text.as_bytes().to_vec())
        };

        // The send's batch fails: the engine stops, nothing reaches the store, and the
        // caller is told (no MessageSent or SendFailed will follow an id it never got).
        storage.fail_next_applies(1);
        assert!(matches!(
            pool.run_until(send("lost")),
            Err(ClientError::Storage(StorageError::Backend { .. }))
        ));
        pool.run_until_stalled();
        assert!(drain(&mut events)
            .iter()
            .any(|e| matches!(e, Event::StorageFailed { .. })));
        assert!(storage.all_messages(&conv).is_empty());
        assert!(matches!(
            pool.run_until(send("refused")),
            Err(ClientError::Command(CommandError::Stopped))
        ));

        // After the restart delay a new engine runs from the store.
        runtime.advance(500);
        pool.run_until_stalled();
        let id = pool.run_until(send("kept")).unwrap();
        pool.run_until_stalled();
        let stored = storage.all_messages(&conv);
        assert_eq!(stored.len(), 1);
        assert_eq!(stored[0].client_msg_id, id);
        assert_eq!(stored[0].content, b"kept");

        pool.run_until(handle.shutdown());
        let client = pool.run_until(finished);
        assert!(!client.engine().is_stopped());
    }

    #[test]
    fn restart_delay_backs_off_to_the_cap() {
        let (mut client, _events, _) = start(MemoryStorage::new());
        let mut delays = Vec::new();
        for failures in [0, 1, 2, 10, 64, u32::MAX] {
            client.restart.failures = failures;
            delays.push(client.restart_delay());
        }
        assert_eq!(delays, [500, 1_000, 2_000, 30_000, 30_000, 30_000]);
    }

    #[test]
    fn dropped_streams_are_forgotten() {
        let mut dispatch = Dispatcher::default();
        let kept = dispatch.subscribe();
        drop(dispatch.subscribe());
        dispatch.dispatch(Event::SyncStarted);
        assert_eq!(dispatch.streams.len(), 1);
        drop(kept);
        dispatch.dispatch(Event::SyncStarted);
        assert!(dispatch.streams.is_empty());
    }
}
