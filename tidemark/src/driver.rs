//! [`Driver`]: the future that runs an [`Engine`] against a [`Storage`], a [`Transport`] and a
//! [`Runtime`], for the [`Client`]s that command it.
//!
//! The driver rule: after every input or command, drain [`Engine::poll_output`] until it
//! returns [`Output::Timeout`], carrying out each output in order; then wait for whichever
//! comes first: a batch committed, something from the server, a command from a [`Client`],
//! or the timeout.
//!
//! Writes are applied one at a time, in the order the engine emitted them, so the store is
//! always at a commit boundary the engine knows of. The driver does not wait for a commit
//! before it goes on: while the store applies one batch (natively on its own thread, see
//! `SqliteStorage`), the engine reconciles the next server page, and its batch waits its turn.
//! The engine allows that (events and sends wait for their own batch's commit). At most
//! [`QUEUED_WRITES`] batches wait behind the one being applied; then the driver stops reading
//! the server until the store catches up, so memory stays bounded by a few pages. A store that
//! applies inline (the memory store) has finished when the driver first polls it, and then
//! nothing overlaps: each batch commits before the next output is looked at, as if awaited.
//! The browser store runs SQLite inline but then awaits IndexedDB or OPFS: the driver goes on
//! during that wait. A command first waits until every emitted batch committed, so it sees (and its
//! answer reports) a store that holds everything the engine did before it. After a failed
//! write the batches queued behind it are dropped unapplied: they were built on top of it.
//!
//! When a write fails the engine stops. The driver drops the connection and, after a short
//! delay, starts a new engine from a fresh [`Storage::load_snapshot`]: exactly what happens
//! after a crash, so a storage failure is recovered the same, well-tested way.
//!
//! Except when retrying cannot help: a store that reports damage
//! ([`StorageError::Corrupt`]), cannot be written ([`StorageError::ReadOnly`]: permissions,
//! read-only media, a file moved under the connection) or belongs to a newer build
//! ([`StorageError::UnsupportedVersion`]), has vanished ([`StorageError::Gone`]: evicted or
//! cleared by the user) or is held by another owner ([`StorageError::InUse`]) would fail
//! again after every restart, and a restart into a damaged file would write into it. The driver then stops for good
//! ([`Event::StoreUnusable`], [`ClientError::StoreUnusable`] for every command, connection
//! closed); the app recovers the store and starts a new client. A full disk
//! ([`StorageError::Full`]) and backend errors stay on the restart path: space can be
//! freed, a busy lock released, while the driver waits with backoff.
//!
//! It reports through `tracing`: a span per sync (from connect until caught up or
//! disconnected) and one per request (until its answer), with the decisions in between.
//! Never message content or tokens: ids, kinds, counts and error codes only.

use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use futures::channel::{mpsc, oneshot};
use futures::{FutureExt, StreamExt};
use tidemark_engine::protocol::{Request, RequestId, Response};
use tidemark_engine::storage::{BatchId, WriteBatch};
use tidemark_engine::transport::{Incoming, RequestSink};
use tidemark_engine::{
    Applied, ClientMsgId, CommandError, ConnectionState, ContentKind, ConversationId, Engine,
    EngineConfig, Event, Message, Output, Seq, Storage, StorageError, SyncSnapshot, Timestamp,
    Transport, TransportError,
};
use tracing::Span;

use crate::client::{lock, ClientError, HistoryLoaded, Hub, SharedHub, Status, SyncState};
use crate::runtime::{BoxFuture, Runtime};
use crate::Client;

/// Whether `e` is an error that retrying on the same store cannot heal, and if so whether it
/// means damage. `None` for the errors the restart path handles.
fn unusable(e: &StorageError) -> Option<bool> {
    match e {
        StorageError::Corrupt { .. } => Some(true),
        StorageError::ReadOnly { .. }
        | StorageError::UnsupportedVersion { .. }
        | StorageError::Gone { .. }
        | StorageError::InUse { .. } => Some(false),
        _ => None,
    }
}

/// How many batches may wait behind the one the store is applying before the driver stops
/// reading the server. One keeps the store busy (the next batch is ready when a commit ends)
/// and the engine no further ahead of the store than two server pages.
const QUEUED_WRITES: usize = 1;

/// A batch the store is applying: its id, and the apply to await.
type Applying = (BatchId, BoxFuture<'static, Result<Applied, StorageError>>);

/// The answer to a history load once it finished.
type HistoryReply = oneshot::Sender<Result<HistoryLoaded, ClientError>>;

/// A command for the driver, with the channel its answer goes back on.
pub(crate) enum Command {
    SendMessage {
        conversation: ConversationId,
        /// Set by `Client::send_message_as`: a repeatable send under this id.
        client_msg_id: Option<ClientMsgId>,
        kind: ContentKind,
        content: Vec<u8>,
        reply: oneshot::Sender<Result<ClientMsgId, ClientError>>,
    },
    NewClientMsgId {
        conversation: ConversationId,
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
        /// Answered once the load is committed, with the channel that carries its result.
        reply: oneshot::Sender<
            Result<oneshot::Receiver<Result<HistoryLoaded, ClientError>>, ClientError>,
        >,
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

/// An open connection.
struct Connection<T: Transport> {
    sink: T::Sink,
    source: T::Source,
}

/// What ended a wait.
enum Wake {
    Written(BatchId, Result<Applied, StorageError>),
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

/// The future that does a [`Client`]'s work: spawn it on any executor (it is `Send` on native
/// targets). It completes after [`Client::shutdown`], or when every clone of the client is
/// dropped (a clean shutdown too).
#[must_use = "the driver does nothing unless it is polled: spawn it"]
pub struct Driver {
    run: BoxFuture<'static, ()>,
}

impl fmt::Debug for Driver {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Driver").finish_non_exhaustive()
    }
}

impl Future for Driver {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        self.run.as_mut().poll(cx)
    }
}

impl Driver {
    /// Runs `state` until the driver stops.
    pub(crate) fn from_state<T: Transport + 'static, R: Runtime>(
        mut state: DriverState<T, R>,
    ) -> Self {
        Self {
            run: Box::pin(async move { state.run().await }),
        }
    }
}

/// A client and the state of its driver, sharing a command channel and a hub; the engine
/// starts from `snapshot`, which `storage` just gave.
#[cfg_attr(
    target_family = "wasm",
    allow(clippy::arc_with_non_send_sync, reason = "single-threaded on wasm32")
)]
pub(crate) fn pair<T: Transport, R: Runtime>(
    config: EngineConfig,
    snapshot: SyncSnapshot,
    storage: Arc<dyn Storage>,
    transport: T,
    runtime: R,
) -> (Client, DriverState<T, R>) {
    let user = config.user.clone();
    let engine = Engine::new(config, snapshot, runtime.now());
    let (command_tx, commands) = mpsc::unbounded();
    let hub = Arc::new(Mutex::new(Hub {
        streams: Vec::new(),
        listeners: Vec::new(),
        status: Status {
            connection: ConnectionState::Disconnected,
            sync: SyncState::Offline,
            total_unread: engine.total_unread(),
            pending_sends: engine.outbox_len(),
        },
    }));
    let client = Client::new(command_tx, Arc::clone(&storage), user, Arc::clone(&hub));
    let state = DriverState {
        engine,
        storage,
        transport,
        runtime,
        connection: None,
        commands,
        hub,
        restart: Restart::default(),
        unusable: None,
        write_failure: None,
        closing: false,
        history: HashMap::new(),
        sync_span: None,
        requests: HashMap::new(),
        applying: None,
        queued: VecDeque::new(),
    };
    (client, state)
}

/// The driver's state: the engine, what it runs against, and the bookkeeping of the loop.
pub(crate) struct DriverState<T: Transport, R: Runtime> {
    engine: Engine,
    storage: Arc<dyn Storage>,
    transport: T,
    runtime: R,
    connection: Option<Connection<T>>,
    commands: mpsc::UnboundedReceiver<Command>,
    hub: SharedHub,
    restart: Restart,
    /// Set when the store failed in a way no restart heals: (error text, damaged, announced).
    /// The engine stays stopped from then on.
    unusable: Option<(String, bool, bool)>,
    /// The error of the write that stopped the engine, for the command that caused it.
    write_failure: Option<StorageError>,
    /// Set from shutdown on: outputs that would reach the network are dropped.
    closing: bool,
    /// History loads waiting for their `HistoryLoaded`, by the engine's id.
    history: HashMap<u64, HistoryReply>,
    /// The current sync's span: from the connect until caught up or disconnected.
    sync_span: Option<Span>,
    /// A span per request on the wire, until its answer or the connection's end.
    requests: HashMap<RequestId, Span>,
    /// The batch the store is applying. `None` only while `queued` is empty.
    applying: Option<Applying>,
    /// Batches emitted after it, in order, waiting their turn.
    queued: VecDeque<(BatchId, WriteBatch)>,
}

impl<T: Transport, R: Runtime> DriverState<T, R> {
    /// Drives the engine until a shutdown, or until every client is dropped.
    async fn run(&mut self) {
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
                Wake::Written(id, result) => {
                    self.applying = None;
                    self.written(id, result);
                    self.start_write();
                }
                Wake::Timer => self.on_timer().await,
                Wake::Command(Some(Command::Shutdown { reply })) => {
                    self.shut_down().await;
                    let _ = reply.send(());
                    return;
                }
                Wake::Command(Some(command)) => self.on_command(command).await,
                // Every client is gone: nobody can command or read any more.
                Wake::Command(None) => {
                    self.shut_down().await;
                    return;
                }
                Wake::Incoming(incoming) => self.on_incoming(incoming).await,
            }
        }
    }

    /// Drains the engine's outputs, carrying each out; returns the timeout it ends with.
    async fn drive(&mut self) -> Timestamp {
        loop {
            let output = self.engine.poll_output();
            if let Some(deadline) = self.execute(output).await {
                self.publish();
                return deadline;
            }
        }
    }

    /// Publishes the engine's state for the client's synchronous getters, and closes the sync
    /// span once the sync is over.
    fn publish(&mut self) {
        let connection = self.engine.connection_state();
        let sync = match &self.unusable {
            Some((_, damaged, _)) => SyncState::StoreUnusable { damaged: *damaged },
            None if connection != ConnectionState::Connected || self.engine.is_stopped() => {
                SyncState::Offline
            }
            None if self.engine.is_syncing() => SyncState::Syncing,
            None => SyncState::Synced,
        };
        if sync != SyncState::Syncing {
            if let Some(span) = self.sync_span.take() {
                span.in_scope(|| tracing::info!(state = ?sync, "sync over"));
            }
        }
        lock(&self.hub).status = Status {
            connection,
            sync,
            total_unread: self.engine.total_unread(),
            pending_sends: self.engine.outbox_len(),
        };
    }

    /// Hands an event to the app: answers the history load it ends, then streams and
    /// listeners (called outside the lock, so a listener may use the client's getters).
    fn dispatch(&mut self, event: Event) {
        if let Event::HistoryLoaded {
            id,
            conversation,
            complete,
        } = &event
        {
            if let Some(reply) = self.history.remove(id) {
                let _ = reply.send(Ok(HistoryLoaded {
                    conversation: conversation.clone(),
                    complete: *complete,
                }));
            }
        }
        let listeners = {
            let mut hub = lock(&self.hub);
            let listeners = hub.listeners.clone();
            // A stream whose reader is gone is forgotten. With no listener to read it after
            // the streams, the last stream takes the event itself: a sync's events carry every
            // message, and the usual app has one stream.
            let mut streams = std::mem::take(&mut hub.streams);
            let last = if listeners.is_empty() {
                streams.pop()
            } else {
                None
            };
            streams.retain(|tx| tx.unbounded_send(event.clone()).is_ok());
            match last {
                Some(tx) => {
                    if tx.unbounded_send(event).is_ok() {
                        streams.push(tx);
                    }
                    hub.streams = streams;
                    return;
                }
                None => hub.streams = streams,
            }
            listeners
        };
        for listener in listeners {
            listener.on_event(&event);
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
            Output::Event(event) => self.dispatch(event),
            Output::Connect if live => self.connect().await,
            Output::Request(id, request) if live => self.send_request(id, request).await,
            Output::Write(id, batch) if writable => {
                self.queued.push_back((id, batch));
                self.start_write();
            }
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
        let span = tracing::info_span!("sync");
        match self.transport.connect().await {
            Ok((sink, source)) => {
                span.in_scope(|| tracing::info!("connected"));
                self.sync_span = Some(span);
                self.connection = Some(Connection { sink, source });
                self.engine.handle_connected(self.runtime.now());
            }
            Err(e) => {
                span.in_scope(|| tracing::info!(error = %e, "connect failed"));
                self.engine
                    .handle_disconnected(self.runtime.now(), &e.to_string());
            }
        }
    }

    async fn send_request(&mut self, id: RequestId, request: Request) {
        // Without a connection the engine has already been told it is down; a request it
        // queued before that is dropped and its own timeout covers it.
        let Some(conn) = self.connection.as_mut() else {
            return;
        };
        let span = tracing::debug_span!(
            parent: self.sync_span.as_ref().and_then(Span::id),
            "request",
            id = id.0,
            kind = request_kind(&request),
        );
        span.in_scope(|| tracing::debug!("sent"));
        self.requests.insert(id, span);
        if let Err(e) = conn.sink.send(id, request).await {
            self.close_connection().await;
            self.engine
                .handle_disconnected(self.runtime.now(), &e.to_string());
        }
    }

    /// Hands the next queued batch to the store when it is not applying one. The apply is
    /// polled once at once: a store with a writer thread starts on the batch now, while the
    /// driver goes on; a store that applies inline is done here, as if awaited.
    fn start_write(&mut self) {
        while self.applying.is_none() {
            let Some((id, batch)) = self.queued.pop_front() else {
                return;
            };
            let storage = Arc::clone(&self.storage);
            let mut apply: BoxFuture<'static, _> =
                Box::pin(async move { storage.apply(batch).await });
            // The real waker is registered when `wait` polls it again.
            let mut cx = Context::from_waker(futures::task::noop_waker_ref());
            match apply.as_mut().poll(&mut cx) {
                Poll::Ready(result) => self.written(id, result),
                Poll::Pending => self.applying = Some((id, apply)),
            }
        }
    }

    /// Batch `id` was applied with `result`: the engine learns of it. After a failure the
    /// engine stops, and the batches queued behind are dropped unapplied: they build on the
    /// failed one, so applying them would leave the store at no commit boundary at all.
    fn written(&mut self, id: BatchId, result: Result<Applied, StorageError>) {
        match result {
            Ok(applied) => {
                self.restart.failures = 0;
                self.engine
                    .handle_batch_committed(self.runtime.now(), id, &applied);
            }
            Err(e) => {
                tracing::warn!(batch = id.0, error = %e, "write failed: the engine stops");
                self.queued.clear();
                self.engine.handle_batch_failed(self.runtime.now(), id, &e);
                self.note_unusable(&e);
                self.write_failure = Some(e);
            }
        }
    }

    /// Drains the engine and waits until the store has committed every batch emitted so far
    /// (or one failed), carrying out what each commit releases.
    async fn flush(&mut self) {
        loop {
            self.drive().await;
            let Some((id, apply)) = self.applying.take() else {
                return;
            };
            let result = apply.await;
            self.written(id, result);
            self.start_write();
        }
    }

    /// Carries out what a command just produced, so its answer can tell whether the command's
    /// writes committed. `Err` when one failed: the engine stopped and the command is lost.
    async fn commit(&mut self) -> Result<(), ClientError> {
        self.write_failure = None;
        // `run` drains again before it waits; a drained engine just repeats its timeout.
        self.flush().await;
        match self.write_failure.take() {
            Some(e) if self.engine.is_stopped() => Err(e.into()),
            _ => Ok(()),
        }
    }

    async fn close_connection(&mut self) {
        if let Some(mut conn) = self.connection.take() {
            conn.sink.close().await;
            // Requests of a closed connection get no answer; the engine times them out or
            // asks again on the next one.
            for (_, span) in self.requests.drain() {
                span.in_scope(|| tracing::debug!("unanswered: connection closed"));
            }
            if let Some(span) = self.sync_span.take() {
                span.in_scope(|| tracing::info!("disconnected"));
            }
        }
    }

    /// Waits for the first of: a commit, server input, a command, the deadline. Server input
    /// waits while [`QUEUED_WRITES`] batches wait for the store.
    async fn wait(&mut self, deadline: Timestamp) -> Wake {
        let Self {
            connection,
            commands,
            runtime,
            applying,
            queued,
            ..
        } = self;
        let written = async {
            match applying.as_mut() {
                Some((id, apply)) => Wake::Written(*id, apply.await),
                None => futures::future::pending().await,
            }
        };
        let incoming = async {
            match connection.as_mut() {
                Some(conn) if queued.len() < QUEUED_WRITES => conn.source.next().await,
                _ => futures::future::pending().await,
            }
        };
        let timer = runtime.sleep_until(deadline);
        // Biased, so runs are deterministic under a simulated network: commands first (the
        // user waits on them), then commits (they release events and sends), then the
        // server. Timers cannot starve: `run` handles a passed deadline before waiting again.
        futures::select_biased! {
            command = commands.next() => Wake::Command(command),
            written = written.fuse() => written,
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
                if let Some(span) = self.requests.remove(&id) {
                    span.in_scope(|| match &response {
                        Response::Error(e) => tracing::debug!(code = %e.code, "refused"),
                        _ => tracing::debug!("answered"),
                    });
                }
                self.engine.handle_response(now, id, response);
            }
            Some(Ok(Incoming::Push(push))) => self.engine.handle_push(now, push),
            Some(Err(e)) => {
                tracing::info!(error = %e, "connection failed");
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
                tracing::error!(error = %e, damaged, "the store cannot be used: stopping for good");
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
        self.publish();
        self.dispatch(event);
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
        // Every batch so far commits first: reads of the store (`own_stored`) see all the
        // engine did, and a failure is seen before the command runs on a stopped engine.
        self.flush().await;
        if let Some(refusal) = self.refusal() {
            // A reply whose caller is gone needs no answer.
            match command {
                Command::SendMessage { reply, .. } | Command::NewClientMsgId { reply, .. } => {
                    drop(reply.send(Err(refusal)))
                }
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
                client_msg_id: None,
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
            Command::SendMessage {
                conversation,
                client_msg_id: Some(client_msg_id),
                kind,
                content,
                reply,
            } => {
                // A send under this id that already left the outbox (acked or failed) is in
                // the store: then this is a repeat.
                let result = match self.own_stored(&conversation, &client_msg_id).await {
                    Ok(Some(_)) => Ok(client_msg_id),
                    Ok(None) => self
                        .engine
                        .send_message_as(now, &conversation, client_msg_id, kind, content)
                        .map_err(ClientError::from),
                    Err(e) => Err(e),
                };
                let result = self.committed(result).await;
                let _ = reply.send(result);
            }
            Command::NewClientMsgId {
                conversation,
                reply,
            } => {
                let result = self.engine.new_client_msg_id(now, &conversation);
                let _ = reply.send(result.map_err(ClientError::from));
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
                let result = match self.engine.load_history(now, &conversation, before, limit) {
                    Ok(id) => {
                        // Registered before the commit: a load that needs no pull finishes
                        // (and emits its event) while the commit drains the engine.
                        let (done, answer) = oneshot::channel();
                        self.history.insert(id, done);
                        match self.commit().await {
                            Ok(()) => Ok(answer),
                            Err(e) => {
                                self.history.remove(&id);
                                Err(e)
                            }
                        }
                    }
                    Err(e) => Err(e.into()),
                };
                let _ = reply.send(result);
            }
            Command::Retry {
                conversation,
                client_msg_id,
                reply,
            } => {
                // The store has the failed message.
                let result = match self.own_stored(&conversation, &client_msg_id).await {
                    Ok(Some(message)) => self
                        .engine
                        .retry(self.runtime.now(), &message)
                        .map_err(ClientError::from),
                    Ok(None) => Err(CommandError::UnknownMessage(client_msg_id).into()),
                    Err(e) => Err(e),
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

    /// This user's stored message by its client id. Every write so far has been applied
    /// (`on_command` flushed), so the store has every send this engine made (its row keyed by
    /// the signed-in user).
    async fn own_stored(
        &mut self,
        conversation: &ConversationId,
        client_msg_id: &ClientMsgId,
    ) -> Result<Option<Message>, ClientError> {
        let me = self.engine.config().user.clone();
        let found = self
            .storage
            .message_by_client_id(conversation, &me, client_msg_id)
            .await;
        found.map_err(|e| {
            // A damaged store found by this read takes no more writes either.
            self.note_unusable(&e);
            e.into()
        })
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
                tracing::info!("engine restarted from the store");
                // The new engine knows nothing of the old one's history loads.
                for (_, reply) in self.history.drain() {
                    let _ = reply.send(Err(ClientError::Restarted));
                }
            }
            Err(e) => {
                self.note_unusable(&e);
                if self.unusable.is_some() {
                    // `run` stops the client for good and says why.
                    return;
                }
                // Tell the app, then try again later with a longer delay.
                tracing::warn!(error = %e, "restart: the store could not be loaded");
                self.dispatch(Event::StorageFailed {
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
        // Everything the engine emitted commits before the driver ends.
        self.flush().await;
        // Commands still queued are dropped: their callers get `ClientError::Closed`.
        self.commands.close();
        while let Some(Some(command)) = self.commands.next().now_or_never() {
            if let Command::Shutdown { reply } = command {
                let _ = reply.send(());
            }
        }
        lock(&self.hub).streams.clear();
        self.publish();
    }
}

/// A request's kind, for tracing (never its content).
fn request_kind(request: &Request) -> &'static str {
    match request {
        Request::GetMaxSeqs { .. } => "get_max_seqs",
        Request::Pull { .. } => "pull",
        Request::Send { .. } => "send",
        Request::GetDeletions { .. } => "get_deletions",
        Request::MarkRead { .. } => "mark_read",
        Request::Ping => "ping",
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "tests fail loudly")]

    use super::*;
    use crate::testing::ManualRuntime;
    use crate::EventStream;
    use futures::executor::block_on;
    use futures::stream::FusedStream;
    use tidemark_engine::protocol::Push;
    use tidemark_engine::storage::WriteOp;
    use tidemark_engine::{
        Conversation, ConversationKind, DeviceId, MemoryStorage, MessageStatus, UserId,
    };

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

    #[test]
    fn a_vanished_or_owned_store_stops_the_client_and_a_full_one_restarts_it() {
        let gone = StorageError::Gone {
            detail: "IndexedDB database deleted".into(),
            source: None,
        };
        let in_use = StorageError::InUse {
            detail: "another tab".into(),
        };
        let full = StorageError::Full { source: None };
        // Retrying on the same store cannot bring back what vanished, nor take it from its
        // owner: the client stops, without claiming damage. A full store may free space.
        assert_eq!(unusable(&gone), Some(false));
        assert_eq!(unusable(&in_use), Some(false));
        assert_eq!(unusable(&full), None);
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

    type TestState = DriverState<FakeTransport, ManualRuntime>;

    fn config() -> EngineConfig {
        EngineConfig::new(UserId::from("me"), DeviceId::from("d1"))
    }

    /// A client and its driver's state, for tests that step the driver by hand.
    fn start(storage: MemoryStorage) -> (TestState, Client, EventStream, FakeTransport) {
        let transport = FakeTransport::default();
        let runtime = ManualRuntime::new(Timestamp(1_000));
        let snapshot = block_on(storage.load_snapshot()).unwrap();
        let (client, state) = pair(
            config(),
            snapshot,
            Arc::new(storage),
            transport.clone(),
            runtime,
        );
        let events = client.events();
        (state, client, events, transport)
    }

    fn put_conversation(id: &str) -> WriteBatch {
        let conv = Conversation::new(ConversationId::from(id), ConversationKind::Group);
        WriteBatch {
            ops: vec![WriteOp::PutConversation(conv)],
        }
    }

    /// Steps `state` through one wait that must end with a commit, as `run` does.
    async fn commit_next(state: &mut TestState) -> (BatchId, bool) {
        let Wake::Written(id, result) = state.wait(Timestamp(u64::MAX)).await else {
            panic!("expected a commit");
        };
        let ok = result.is_ok();
        state.applying = None;
        state.written(id, result);
        state.start_write();
        (id, ok)
    }

    #[test]
    fn the_driver_goes_on_while_a_batch_commits_and_reads_the_server_again_when_it_is_done() {
        let store = MemoryStorage::new();
        let (open_first, open_second) = (store.hold_next_apply(), store.hold_next_apply());
        let (mut state, _client, _events, transport) = start(store.clone());
        block_on(async {
            state.execute(Output::Connect).await;
            let feed = transport.0.lock().unwrap().feed.clone().unwrap();
            // The first batch is handed to the store, which is still at it: the driver goes
            // on, and what follows it reaches the wire before it committed.
            state
                .execute(Output::Write(BatchId(1), put_conversation("a")))
                .await;
            assert!(state.applying.is_some());
            state
                .execute(Output::Write(BatchId(2), put_conversation("b")))
                .await;
            state
                .execute(Output::Request(RequestId(7), Request::Ping))
                .await;
            assert_eq!(transport.0.lock().unwrap().sent.len(), 1);
            assert_eq!(store.applied_batches(), 0);

            // A batch waits behind the one being applied: the server is not read meanwhile.
            let pong = Incoming::Response(
                RequestId(7),
                Response::Pong {
                    server_time: Timestamp(5),
                },
            );
            feed.unbounded_send(Ok(pong.clone())).unwrap();
            {
                let wait = state.wait(Timestamp(u64::MAX));
                futures::pin_mut!(wait);
                assert!(futures::poll!(wait.as_mut()).is_pending());
            }

            // They commit in order; once none waits, the server is read again.
            open_first.send(true).unwrap();
            assert_eq!(commit_next(&mut state).await, (BatchId(1), true));
            assert!(state.queued.is_empty() && state.applying.is_some());
            open_second.send(true).unwrap();
            assert_eq!(commit_next(&mut state).await, (BatchId(2), true));
            assert_eq!(store.applied_batches(), 2);
            match state.wait(Timestamp(u64::MAX)).await {
                Wake::Incoming(Some(Ok(got))) => assert_eq!(got, pong),
                _ => panic!("expected the pong"),
            }
        });
    }

    #[test]
    fn after_a_failed_batch_the_ones_behind_it_are_dropped_unapplied() {
        let store = MemoryStorage::new();
        let open_first = store.hold_next_apply();
        let (mut state, _client, _events, _) = start(store.clone());
        block_on(async {
            state
                .execute(Output::Write(BatchId(1), put_conversation("a")))
                .await;
            state
                .execute(Output::Write(BatchId(2), put_conversation("b")))
                .await;
            open_first.send(false).unwrap();
            assert_eq!(commit_next(&mut state).await, (BatchId(1), false));
            // The second batch was built on the first: applying it alone would leave the
            // store at no commit boundary the engine ever knew.
            assert!(state.queued.is_empty() && state.applying.is_none());
            assert!(state.engine.is_stopped());
            assert_eq!(store.applied_batches(), 0);
            let b = ConversationId::from("b");
            assert_eq!(store.conversation(&b).await.unwrap(), None);
        });
    }

    #[test]
    fn a_command_waits_until_every_batch_before_it_committed() {
        use futures::executor::LocalPool;
        use futures::task::LocalSpawnExt;

        let store = MemoryStorage::new();
        let chat = ConversationId::from("c");
        block_on(store.apply(put_conversation("c"))).unwrap();
        let open_first = store.hold_next_apply();
        let mut config = config();
        config.connect_on_start = false;
        let runtime = ManualRuntime::new(Timestamp(1_000));
        let (client, driver) = block_on(Client::start(
            config,
            store.clone(),
            FakeTransport::default(),
            runtime,
        ))
        .unwrap();
        let mut pool = LocalPool::new();
        let finished = pool.spawner().spawn_local_with_handle(driver).unwrap();
        // The send's batch is held at the store: the send is not answered until it commits.
        let send = client.send_text(&chat, "hello");
        futures::pin_mut!(send);
        assert!(pool
            .run_until(async { futures::poll!(send.as_mut()) })
            .is_pending());
        pool.run_until_stalled();
        assert!(pool
            .run_until(async { futures::poll!(send.as_mut()) })
            .is_pending());
        assert!(store.all_messages(&chat).is_empty());
        open_first.send(true).unwrap();
        let id = pool.run_until(send).unwrap();
        assert_eq!(store.all_messages(&chat)[0].client_msg_id, id);
        pool.run_until(client.shutdown());
        pool.run_until(finished);
    }

    /// The driver must be spawnable on a multi-threaded executor, and the client usable
    /// from any thread.
    #[cfg(not(target_family = "wasm"))]
    #[test]
    fn driver_and_client_are_send() {
        fn assert_send<F: std::future::Future + Send>(_: F) {}
        fn assert_send_sync<C: Send + Sync + Clone>(_: &C) {}
        let (client, driver) = block_on(Client::start(
            config(),
            MemoryStorage::new(),
            FakeTransport::default(),
            ManualRuntime::default(),
        ))
        .unwrap();
        assert_send_sync(&client);
        assert_send(driver);
        let chat = ConversationId::from("c");
        assert_send(client.send_message(&chat, ContentKind::Text, vec![]));
        assert_send(client.load_history(&chat, None, 1));
        assert_send(client.conversations(None, 1));
        assert_send(client.shutdown());
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
        let (state, client, _events, _) = start(storage.clone());
        assert_eq!(client.user(), &UserId::from("me"));
        assert_eq!(state.engine.conversation_count(), 1);
        assert_eq!(storage.applied_batches(), 1);
        // Reads go to the store.
        let listed = block_on(client.conversations(None, 10)).unwrap();
        assert_eq!(listed.len(), 1);

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
    fn shutdown_ends_the_driver_and_closes_everything() {
        let (state, client, mut events, _) = start(MemoryStorage::new());
        let handle = client.clone();
        let other = client.clone();
        drop(client);
        block_on(async {
            futures::join!(Driver::from_state(state), async {
                // A command before the shutdown still gets its answer.
                let retry = handle
                    .retry(&ConversationId::from("c"), &ClientMsgId::from("nope"))
                    .await;
                assert!(matches!(
                    retry,
                    Err(ClientError::Command(CommandError::UnknownMessage(_)))
                ));
                handle.shutdown().await;
            });
        });
        assert!(other.is_closed());
        let after = block_on(other.mark_read(&ConversationId::from("c"), Seq(1)));
        assert!(matches!(after, Err(ClientError::Closed)));
        // Shutting down twice is fine.
        block_on(other.shutdown());
        assert_eq!(other.sync_state(), SyncState::Offline);
        // The stream yields what was dispatched, then ends.
        let rest: Vec<Event> = block_on(events.by_ref().collect());
        assert_eq!(
            rest.last(),
            Some(&Event::ConnectionChanged {
                state: ConnectionState::Disconnected
            })
        );
        assert!(events.is_terminated());
    }

    #[test]
    fn dropping_the_driver_fails_queued_commands() {
        let (state, client, _events, _) = start(MemoryStorage::new());
        let chat = ConversationId::from("c");
        let pending = client.load_history(&chat, None, 10);
        drop(Driver::from_state(state));
        assert!(matches!(block_on(pending), Err(ClientError::Closed)));
        block_on(client.shutdown());
        assert!(client.is_closed());
    }

    #[test]
    fn dropping_every_client_ends_the_driver() {
        let (state, client, mut events, _) = start(MemoryStorage::new());
        let other = client.clone();
        drop(client);
        drop(other);
        block_on(Driver::from_state(state));
        // It shut down cleanly: the streams ended.
        block_on(events.by_ref().collect::<Vec<_>>());
        assert!(events.is_terminated());
    }

    #[test]
    fn load_history_waits_for_its_result_and_state_is_published() {
        use futures::executor::LocalPool;
        use futures::task::LocalSpawnExt;

        let storage = MemoryStorage::new();
        // Three seqs on the server, none read: 3 unread.
        let mut busy = Conversation::new(ConversationId::from("busy"), ConversationKind::Direct);
        busy.server_min_seq = Seq(1);
        busy.server_max_seq = Seq(3);
        let chat = ConversationId::from("c");
        let empty = Conversation::new(chat.clone(), ConversationKind::Direct);
        block_on(storage.apply(WriteBatch {
            ops: vec![
                WriteOp::PutConversation(busy),
                WriteOp::PutConversation(empty),
            ],
        }))
        .unwrap();
        let (state, client, _events, transport) = start(storage);
        // Published from the snapshot before the driver ever runs.
        assert_eq!(client.total_unread(), 3);
        assert_eq!(client.sync_state(), SyncState::Offline);
        let mut pool = LocalPool::new();
        pool.spawner()
            .spawn_local(Driver::from_state(state))
            .unwrap();
        pool.run_until_stalled();
        // connect_on_start: connected, listing what changed.
        assert_eq!(client.connection_state(), ConnectionState::Connected);
        assert_eq!(client.sync_state(), SyncState::Syncing);
        assert_eq!(transport.0.lock().unwrap().connects, 1);

        // Nothing is held and the server's max seq is unknown (0): the load finishes at
        // once, complete, and the awaited call returns that.
        let loaded = pool
            .run_until(client.load_history(&chat, None, 10))
            .unwrap();
        assert_eq!(
            loaded,
            HistoryLoaded {
                conversation: chat.clone(),
                complete: true
            }
        );
        // A conversation the engine does not know is refused.
        let unknown = pool.run_until(client.load_history(&ConversationId::from("x"), None, 1));
        assert!(
            matches!(unknown, Err(ClientError::Command(_))),
            "{unknown:?}"
        );
        pool.run_until(client.shutdown());
    }

    #[test]
    fn outputs_reach_storage_transport_and_listeners() {
        let storage = MemoryStorage::new();
        let (mut client, handle, mut events, transport) = start(storage.clone());
        let seen = Arc::new(Mutex::new(Vec::new()));
        let sink = seen.clone();
        handle.add_listener(move |e: &Event| sink.lock().unwrap().push(e.clone()));

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
        let runtime = client.runtime.clone();
        let wake = block_on(async {
            let wait = client.wait(Timestamp(1_500));
            futures::pin_mut!(wait);
            assert!(futures::poll!(wait.as_mut()).is_pending());
            runtime.advance(500);
            wait.await
        });
        assert!(matches!(wake, Wake::Timer));
    }

    /// Runs `work` with the driver of a client on `storage` (which holds conversation `c`).
    fn with_client<F, Fut, T>(storage: &MemoryStorage, work: F) -> T
    where
        F: FnOnce(Client) -> Fut,
        Fut: std::future::Future<Output = T>,
    {
        let runtime = ManualRuntime::new(Timestamp(1_000));
        let start = Client::start(config(), storage.clone(), FakeTransport::default(), runtime);
        let (client, driver) = block_on(start).unwrap();
        block_on(async move {
            let work = async {
                let answer = work(client.clone()).await;
                client.shutdown().await;
                answer
            };
            futures::join!(driver, work).1
        })
    }

    #[test]
    fn a_send_under_a_reserved_id_is_stored_once_however_often_it_is_repeated() {
        let storage = MemoryStorage::new();
        let chat = ConversationId::from("c");
        let conv = Conversation::new(chat.clone(), ConversationKind::Group);
        let batch = WriteBatch {
            ops: vec![WriteOp::PutConversation(conv)],
        };
        block_on(storage.apply(batch)).unwrap();
        let text = || b"hello".to_vec();
        let chat_ = chat.clone();
        let id = with_client(&storage, |client| async move {
            let chat = chat_;
            let id = client.new_client_msg_id(&chat).await.unwrap();
            for _ in 0..3 {
                let sent = client.send_message_as(&chat, id.clone(), ContentKind::Text, text());
                assert_eq!(sent.await.unwrap(), id);
            }
            let unsent = client.unsent_messages(&chat).await.unwrap();
            assert_eq!(unsent.len(), 1, "one pending row");
            assert_eq!(unsent[0].client_msg_id, id);
            // Ids the engine would not know as its own echoes are refused.
            let other = ConversationId::from("c2");
            for (conversation, foreign) in [
                (&chat, ClientMsgId::from("d2:1-2-3-4")),
                (
                    &chat,
                    ClientMsgId::from(id.0.replace("d1:", "d2:").as_str()),
                ),
            ] {
                let refused =
                    client.send_message_as(conversation, foreign, ContentKind::Text, text());
                assert!(matches!(
                    refused.await,
                    Err(ClientError::Command(CommandError::ForeignClientMsgId(_)))
                ));
            }
            let unknown = client.send_message_as(&other, id.clone(), ContentKind::Text, text());
            assert!(matches!(
                unknown.await,
                Err(ClientError::Command(CommandError::UnknownConversation(_)))
            ));
            id
        });
        // A new client on the same store (a restart, or another tab taking over) finds the
        // send in its outbox; once the send left the outbox (acked), in the store.
        let again = (chat.clone(), id.clone());
        with_client(&storage, |client| async move {
            let (chat, id) = again;
            let sent = client.send_message_as(&chat, id.clone(), ContentKind::Text, text());
            assert_eq!(sent.await.unwrap(), id);
            assert_eq!(client.unsent_messages(&chat).await.unwrap().len(), 1);
        });
        let mut acked = block_on(storage.unsent_messages(&chat)).unwrap().remove(0);
        acked.seq = Some(Seq(1));
        acked.status = MessageStatus::Sent;
        let batch = WriteBatch {
            ops: vec![
                WriteOp::DeletePendingMessage {
                    conversation: chat.clone(),
                    client_msg_id: id.clone(),
                },
                WriteOp::PutMessages(vec![acked]),
                WriteOp::RemoveOutbox(id.clone()),
            ],
        };
        block_on(storage.apply(batch)).unwrap();
        let again = (chat.clone(), id.clone());
        with_client(&storage, |client| async move {
            let (chat, id) = again;
            let sent = client.send_message_as(&chat, id.clone(), ContentKind::Text, text());
            assert_eq!(sent.await.unwrap(), id);
            assert!(client.unsent_messages(&chat).await.unwrap().is_empty());
            assert_eq!(client.pending_sends(), 0);
        });
    }

    #[test]
    fn pushes_and_drops_are_fed_to_the_engine() {
        let (mut client, _handle, _events, transport) = start(MemoryStorage::new());
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
        let (handle, driver) = block_on(Client::start(
            config,
            storage.clone(),
            FakeTransport::default(),
            runtime.clone(),
        ))
        .unwrap();
        let mut events = handle.events();
        let mut pool = LocalPool::new();
        let finished = pool.spawner().spawn_local_with_handle(driver).unwrap();
        let send = |text: &'static str| handle.send_text(&conv, text);

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
        pool.run_until(finished);
    }

    #[test]
    fn restart_delay_backs_off_to_the_cap() {
        let (mut client, _handle, _events, _) = start(MemoryStorage::new());
        let mut delays = Vec::new();
        for failures in [0, 1, 2, 10, 64, u32::MAX] {
            client.restart.failures = failures;
            delays.push(client.restart_delay());
        }
        assert_eq!(delays, [500, 1_000, 2_000, 30_000, 30_000, 30_000]);
    }

    #[test]
    fn dropped_streams_are_forgotten() {
        let (mut state, client, events, _) = start(MemoryStorage::new());
        drop(events);
        let kept = client.events();
        drop(client.events());
        state.dispatch(Event::SyncStarted);
        assert_eq!(lock(&state.hub).streams.len(), 1);
        drop(kept);
        state.dispatch(Event::SyncStarted);
        assert!(lock(&state.hub).streams.is_empty());
    }
}
