//! [`Client`]: what an app holds. Cheap to clone, no generics: commands go to the
//! [`Driver`](crate::Driver) over a channel, reads go to the store, state comes from what the
//! driver last published.

use std::fmt;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll};

use futures::channel::{mpsc, oneshot};
use futures::stream::FusedStream;
use futures::{Stream, StreamExt};
use tidemark_engine::storage::{SendOutsideWasm, SyncOutsideWasm};
use tidemark_engine::{
    ClientMsgId, CommandError, ConnectionState, ContentKind, Conversation, ConversationCursor,
    ConversationId, Direction, EngineConfig, Event, Message, Seq, Storage, StorageError, Transport,
    UserId,
};

use crate::driver::{Command, Driver};
use crate::runtime::Runtime;

/// Why a [`Client`] command or read failed.
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
    /// The driver stopped (shut down, or dropped) before answering.
    #[error("client is shut down")]
    Closed,
    /// The engine restarted from the store (after a failed write) before a history load
    /// finished; nothing of the load is lost: ask again.
    #[error("the engine restarted before the history load finished")]
    Restarted,
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

/// Receives every event, as the callback alternative to [`EventStream`] (for SDKs whose host
/// language wants callbacks). Called on the driver: it must return quickly and must not wait
/// on the client.
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
/// sync; it ends when the driver stops.
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

/// Where the sync stands, as the driver last published it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SyncState {
    /// Not connected (a reconnect is scheduled, or the engine is restarting).
    Offline,
    /// Connected and catching up: listing what changed, pulling.
    Syncing,
    /// Connected and caught up; new messages arrive as pushes.
    Synced,
    /// Stopped for good: the store cannot be used ([`Event::StoreUnusable`]).
    StoreUnusable {
        /// Whether the store reported damage.
        damaged: bool,
    },
}

/// The answer to [`Client::load_history`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HistoryLoaded {
    /// The conversation.
    pub conversation: ConversationId,
    /// Whether everything asked for (down to the history floor) is now held; false if the
    /// connection dropped first (the held part stays; ask again after a reconnect).
    pub complete: bool,
}

/// What the driver publishes after every step, for the synchronous getters.
#[derive(Clone, Debug)]
pub(crate) struct Status {
    pub(crate) connection: ConnectionState,
    pub(crate) sync: SyncState,
    pub(crate) total_unread: u64,
    pub(crate) pending_sends: usize,
}

/// The state a [`Client`] and its [`Driver`] share: event subscribers and the published
/// status. Locked briefly; listeners are called outside the lock.
pub(crate) struct Hub {
    pub(crate) streams: Vec<mpsc::UnboundedSender<Event>>,
    pub(crate) listeners: Vec<Arc<dyn EventListener>>,
    pub(crate) status: Status,
}

/// The [`Hub`] behind its lock.
pub(crate) type SharedHub = Arc<Mutex<Hub>>;

/// Locks the hub. Its state (subscriber lists, a status) is consistent after any panic.
pub(crate) fn lock(hub: &Mutex<Hub>) -> MutexGuard<'_, Hub> {
    hub.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Tidemark for an app: commands, reads and events of one signed-in user on one device.
///
/// Cheap to clone (an `Arc`), `Send + Sync` on native targets, no type parameters: bindings
/// (wasm-bindgen, uniffi) wrap it as it is. [`Client::start`] returns it with its [`Driver`],
/// the future that does the work; spawn that on any executor. When every clone of the client
/// is dropped, the driver shuts down cleanly.
///
/// Commands return once their effect is committed to the store (not after the network round
/// trip: a sent message's fate arrives as [`Event::MessageSent`] or [`Event::SendFailed`]). If a
/// command's write failed the answer is [`ClientError::Storage`] and the command had no
/// effect. Commands issued before the driver is first polled are carried out once it is.
#[derive(Clone)]
pub struct Client {
    inner: Arc<Inner>,
}

struct Inner {
    commands: mpsc::UnboundedSender<Command>,
    storage: Arc<dyn Storage>,
    user: UserId,
    hub: SharedHub,
}

impl fmt::Debug for Client {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Client")
            .field("user", &self.inner.user)
            .field("closed", &self.inner.commands.is_closed())
            .finish_non_exhaustive()
    }
}

impl Client {
    /// Loads the engine's snapshot from `storage` and returns the client with its driver.
    /// Nothing happens until the driver is polled: spawn it (`tokio::spawn(driver)`, or
    /// `wasm_bindgen_futures::spawn_local(driver)` in a browser). Subscribe with
    /// [`Client::events`] before spawning to see every event.
    pub async fn start<S, T, R>(
        config: EngineConfig,
        storage: S,
        transport: T,
        runtime: R,
    ) -> Result<(Client, Driver), StorageError>
    where
        S: Storage + 'static,
        T: Transport + 'static,
        R: Runtime,
    {
        let storage: Arc<dyn Storage> = Arc::new(storage);
        let snapshot = storage.load_snapshot().await?;
        let (client, state) = crate::driver::pair(config, snapshot, storage, transport, runtime);
        Ok((client, Driver::from_state(state)))
    }

    /// A client over the driver's command channel and hub.
    // On wasm32 nothing is Send (one thread); the Arc is for cheap clones, not for threads.
    #[cfg_attr(
        target_family = "wasm",
        allow(clippy::arc_with_non_send_sync, reason = "single-threaded on wasm32")
    )]
    pub(crate) fn new(
        commands: mpsc::UnboundedSender<Command>,
        storage: Arc<dyn Storage>,
        user: UserId,
        hub: SharedHub,
    ) -> Self {
        Client {
            inner: Arc::new(Inner {
                commands,
                storage,
                user,
                hub,
            }),
        }
    }

    async fn request<V>(
        &self,
        make: impl FnOnce(oneshot::Sender<Result<V, ClientError>>) -> Command,
    ) -> Result<V, ClientError> {
        let (reply, answer) = oneshot::channel();
        self.inner
            .commands
            .unbounded_send(make(reply))
            .map_err(|_| ClientError::Closed)?;
        // A dropped reply means the driver ended before answering.
        answer.await.unwrap_or(Err(ClientError::Closed))
    }

    // Commands.

    /// Sends a message of any kind: it is stored as pending with its outbox entry before
    /// anything goes on the wire. Returns its client id once that is stored;
    /// [`Event::MessageSent`] or [`Event::SendFailed`] follows.
    pub async fn send_message(
        &self,
        conversation: &ConversationId,
        kind: ContentKind,
        content: Vec<u8>,
    ) -> Result<ClientMsgId, ClientError> {
        self.send(conversation, None, kind, content).await
    }

    async fn send(
        &self,
        conversation: &ConversationId,
        client_msg_id: Option<ClientMsgId>,
        kind: ContentKind,
        content: Vec<u8>,
    ) -> Result<ClientMsgId, ClientError> {
        let conversation = conversation.clone();
        self.request(|reply| Command::SendMessage {
            conversation,
            client_msg_id,
            kind,
            content,
            reply,
        })
        .await
    }

    /// A client id for a send in `conversation` that has not happened yet, for
    /// [`Client::send_message_as`]. Nothing is stored.
    pub async fn new_client_msg_id(
        &self,
        conversation: &ConversationId,
    ) -> Result<ClientMsgId, ClientError> {
        let conversation = conversation.clone();
        self.request(|reply| Command::NewClientMsgId {
            conversation,
            reply,
        })
        .await
    }

    /// [`Client::send_message`] under an id from [`Client::new_client_msg_id`] (of this
    /// client or an earlier one on the same device), and repeatable: when a send under this id
    /// is already stored (pending, acked or failed) nothing changes and the id is returned
    /// again. For a caller that cannot know whether an earlier attempt arrived (a call
    /// across browser tabs, cut off when the tab owning the client closed). An id made by
    /// another device or for another conversation is refused
    /// ([`CommandError::ForeignClientMsgId`]).
    pub async fn send_message_as(
        &self,
        conversation: &ConversationId,
        client_msg_id: ClientMsgId,
        kind: ContentKind,
        content: Vec<u8>,
    ) -> Result<ClientMsgId, ClientError> {
        self.send(conversation, Some(client_msg_id), kind, content)
            .await
    }

    /// Sends a text message (see [`Client::send_message`]).
    pub async fn send_text(
        &self,
        conversation: &ConversationId,
        text: &str,
    ) -> Result<ClientMsgId, ClientError> {
        self.send_message(conversation, ContentKind::Text, text.as_bytes().to_vec())
            .await
    }

    /// Replaces the content of this user's message at `target`. An edit is itself a message
    /// (with its own seq once sent); the target changes when the server has it.
    pub async fn edit(
        &self,
        conversation: &ConversationId,
        target: Seq,
        content: Vec<u8>,
    ) -> Result<ClientMsgId, ClientError> {
        self.send_message(conversation, ContentKind::Edit { target }, content)
            .await
    }

    /// Withdraws this user's message at `target` (its content is cleared, the row stays).
    pub async fn revoke(
        &self,
        conversation: &ConversationId,
        target: Seq,
    ) -> Result<ClientMsgId, ClientError> {
        self.send_message(conversation, ContentKind::Revoke { target }, Vec::new())
            .await
    }

    /// Marks a conversation read up to `seq`, locally at once and then on the server.
    pub async fn mark_read(
        &self,
        conversation: &ConversationId,
        seq: Seq,
    ) -> Result<(), ClientError> {
        let conversation = conversation.clone();
        self.request(|reply| Command::MarkRead {
            conversation,
            seq,
            reply,
        })
        .await
    }

    /// Makes sure the `limit` seqs below `before` are held (with `None`: the newest `limit`
    /// seqs), pulling what is missing, and returns when they are (or when the connection
    /// dropped first: [`HistoryLoaded::complete`] is false then). To page back, pass the
    /// oldest seq the app shows; read the page with [`Client::messages`].
    /// [`Event::HistoryLoaded`] is still emitted, for apps that follow the event stream.
    pub async fn load_history(
        &self,
        conversation: &ConversationId,
        before: Option<Seq>,
        limit: u32,
    ) -> Result<HistoryLoaded, ClientError> {
        let conversation = conversation.clone();
        let done = self
            .request(|reply| Command::LoadHistory {
                conversation,
                before,
                limit,
                reply,
            })
            .await?;
        // The first answer says the request is committed; the second comes with the event.
        done.await.unwrap_or(Err(ClientError::Closed))
    }

    /// Sends a failed message again under the same client id.
    pub async fn retry(
        &self,
        conversation: &ConversationId,
        client_msg_id: &ClientMsgId,
    ) -> Result<(), ClientError> {
        let conversation = conversation.clone();
        let client_msg_id = client_msg_id.clone();
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
        conversation: &ConversationId,
        client_msg_id: &ClientMsgId,
    ) -> Result<(), ClientError> {
        let conversation = conversation.clone();
        let client_msg_id = client_msg_id.clone();
        self.request(|reply| Command::Cancel {
            conversation,
            client_msg_id,
            reply,
        })
        .await
    }

    /// Stops the driver: the connection is closed, the driver future completes and event
    /// streams end. Returns once it has stopped (at once if it is already gone). Every later
    /// command fails with [`ClientError::Closed`]; reads still work, so the store is closed
    /// only when the last clone of the client is dropped too.
    pub async fn shutdown(&self) {
        let (reply, done) = oneshot::channel();
        if self
            .inner
            .commands
            .unbounded_send(Command::Shutdown { reply })
            .is_ok()
        {
            // Cancelled means the driver is gone, which is what we wait for.
            let _ = done.await;
        }
    }

    /// Whether the driver has stopped (commands would fail).
    pub fn is_closed(&self) -> bool {
        self.inner.commands.is_closed()
    }

    // Reads: from the store, which holds everything an event announced before it was emitted.

    /// The signed-in user.
    pub fn user(&self) -> &UserId {
        &self.inner.user
    }

    /// A page of the conversation list, newest activity first. Pass the last entry of a page
    /// as the cursor (`ConversationCursor::from(&conversation)`) for the next one.
    pub async fn conversations(
        &self,
        after: Option<ConversationCursor>,
        limit: usize,
    ) -> Result<Vec<Conversation>, ClientError> {
        Ok(self.inner.storage.conversations_page(after, limit).await?)
    }

    /// One conversation.
    pub async fn conversation(
        &self,
        id: &ConversationId,
    ) -> Result<Option<Conversation>, ClientError> {
        Ok(self.inner.storage.conversation(id).await?)
    }

    /// A page of a conversation's messages, ascending by seq: with [`Direction::Before`] the
    /// newest `limit` below `anchor` (`None`: the newest of all), with [`Direction::After`]
    /// the oldest `limit` above it. Only held messages: page back further with
    /// [`Client::load_history`].
    pub async fn messages(
        &self,
        conversation: &ConversationId,
        anchor: Option<Seq>,
        direction: Direction,
        limit: usize,
    ) -> Result<Vec<Message>, ClientError> {
        Ok(self
            .inner
            .storage
            .messages_page(conversation, anchor, direction, limit)
            .await?)
    }

    /// The message at `seq`, if it is held.
    pub async fn message(
        &self,
        conversation: &ConversationId,
        seq: Seq,
    ) -> Result<Option<Message>, ClientError> {
        // The page just above seq - 1 starts at seq when seq is held (seq 0 is never used).
        let Some(below) = seq.0.checked_sub(1) else {
            return Ok(None);
        };
        let page = self
            .inner
            .storage
            .messages_page(conversation, Some(Seq(below)), Direction::After, 1)
            .await?;
        Ok(page.into_iter().find(|m| m.seq == Some(seq)))
    }

    /// This user's message by its client id: a send that is pending, failed, or sent.
    pub async fn own_message(
        &self,
        conversation: &ConversationId,
        client_msg_id: &ClientMsgId,
    ) -> Result<Option<Message>, ClientError> {
        Ok(self
            .inner
            .storage
            .message_by_client_id(conversation, &self.inner.user, client_msg_id)
            .await?)
    }

    /// This user's messages that have no seq yet (pending or failed), oldest first.
    pub async fn unsent_messages(
        &self,
        conversation: &ConversationId,
    ) -> Result<Vec<Message>, ClientError> {
        Ok(self.inner.storage.unsent_messages(conversation).await?)
    }

    /// The sum of every conversation's unread count, as of the last released event.
    pub fn total_unread(&self) -> u64 {
        lock(&self.inner.hub).status.total_unread
    }

    /// How many of this device's sends are neither acked nor failed yet (the outbox), as of
    /// the last released event. An app about to exit can wait for 0.
    pub fn pending_sends(&self) -> usize {
        lock(&self.inner.hub).status.pending_sends
    }

    /// The connection's state, as of the driver's last step.
    pub fn connection_state(&self) -> ConnectionState {
        lock(&self.inner.hub).status.connection
    }

    /// Where the sync stands, as of the driver's last step.
    pub fn sync_state(&self) -> SyncState {
        lock(&self.inner.hub).status.sync
    }

    // Events.

    /// A stream of every event from now on.
    pub fn events(&self) -> EventStream {
        let (tx, rx) = mpsc::unbounded();
        lock(&self.inner.hub).streams.push(tx);
        EventStream { rx }
    }

    /// Registers a listener that receives every event from now on.
    pub fn add_listener(&self, listener: impl EventListener + 'static) {
        lock(&self.inner.hub).listeners.push(Arc::new(listener));
    }
}
