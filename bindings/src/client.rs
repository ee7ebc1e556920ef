//! [`Store`] and [`TidemarkClient`]: the store an app opens by path, and the client started
//! on it against a server.

use std::collections::hash_map::RandomState;
use std::future::Future;
use std::hash::{BuildHasher, Hasher};
use std::sync::Arc;
use std::time::Duration;

use tidemark::{
    Client, ClientMsgId, ConversationId, DeviceId, EngineConfig, Seq, TokioRuntime, UserId,
};
use tidemark_storage_sqlite::SqliteStorage;
use tidemark_transport::native::WsTransport;

use crate::events::{ClientListener, Delivery};
use crate::login::{FirstConnect, LoginState, LoginTransport};
use crate::model::{
    ConnectionState, ContentKind, Conversation, ConversationCursor, Direction, HistoryLoaded,
    Message, SyncPolicy, SyncState,
};
use crate::runtime::{on_runtime, runtime};
use crate::{events, ClientEvent, TidemarkError};

/// A local Tidemark store: one SQLite file per signed-in user and device.
#[derive(uniffi::Object)]
pub struct Store {
    storage: SqliteStorage,
    path: String,
}

/// Opens (or creates) the store at `path` and checks it: a file that is not a Tidemark
/// store, or one found damaged, fails with `TidemarkError.Storage` (code `Corrupt`); one
/// written by a newer build with code `UnsupportedVersion`. The check of an existing file
/// reads all of it (about 1 s for a million messages), on the bindings' runtime.
#[uniffi::export]
pub async fn open_store(path: String) -> Result<Arc<Store>, TidemarkError> {
    if path.is_empty() {
        return Err(TidemarkError::invalid("the store path is empty"));
    }
    on_runtime(async move {
        let opened = tokio::task::spawn_blocking(move || {
            let storage = SqliteStorage::open(&path)?;
            storage.wait_for_open_check()?;
            Ok::<_, TidemarkError>(Store { storage, path })
        })
        .await
        .map_err(|e| TidemarkError::internal(format!("opening the store failed: {e}")))??;
        Ok(Arc::new(opened))
    })
    .await
}

/// What [`recover_store`] did.
#[derive(Clone, Debug, PartialEq, Eq, uniffi::Record)]
pub struct RecoveryReport {
    /// Where the damaged store now lies (renamed, never deleted).
    pub set_aside: String,
    /// Unsent messages carried into the fresh store; they are sent once a client runs on it.
    pub outbox_salvaged: u64,
    /// Unsent messages that could not be read back (lost unless the server has them).
    pub outbox_lost: u64,
    /// Why salvage stopped early or read nothing, if it did.
    pub salvage_problem: Option<String>,
}

/// Sets the store at `path` aside (renamed to `<path>.damaged-<time>`) and creates a fresh one
/// in its place that keeps this device's unsent messages; the next client on it resyncs the
/// rest from the server. For a store that `open_store` refused with `Corrupt`, or that stopped
/// a client with `StoreUnusable` (damaged). Call it with no client and no `Store` open on the
/// path. It does not check for damage itself: a sound store is restarted all the same.
#[uniffi::export]
pub async fn recover_store(path: String) -> Result<RecoveryReport, TidemarkError> {
    on_runtime(async move {
        let report = tokio::task::spawn_blocking(move || tidemark_storage_sqlite::recover(&path))
            .await
            .map_err(|e| TidemarkError::internal(format!("recovering the store failed: {e}")))??;
        Ok(RecoveryReport {
            set_aside: report.set_aside.display().to_string(),
            outbox_salvaged: u64::try_from(report.outbox_salvaged).unwrap_or(u64::MAX),
            outbox_lost: u64::try_from(report.outbox_lost).unwrap_or(u64::MAX),
            salvage_problem: report.salvage_problem,
        })
    })
    .await
}

#[uniffi::export]
impl Store {
    /// The path it was opened at.
    pub fn path(&self) -> String {
        self.path.clone()
    }
}

/// What [`start_client`] connects to, and as whom.
#[derive(Clone, Debug, uniffi::Record)]
pub struct ClientConfig {
    /// The server's WebSocket URL (`ws://host:port` or `wss://...`).
    pub server_url: String,
    /// The signed-in user.
    pub user_id: String,
    /// This device (one login of the user; its store is this device's).
    pub device_id: String,
    /// The user's token, as the server issued it.
    pub token: String,
    /// What to pull after connecting (none: the newest 20 messages of each conversation).
    #[uniffi(default = None)]
    pub sync_policy: Option<SyncPolicy>,
    /// How long `start_client` waits for the first connect to tell whether the login is
    /// refused. A server that cannot be reached does not fail the start: the client runs
    /// offline and reconnects.
    #[uniffi(default = 10000)]
    pub login_timeout_ms: u64,
}

/// Starts a client on `store` against the server in `config`, with `listener` receiving
/// every event from the first one on. Waits for the first connect (up to
/// `login_timeout_ms`): a refused login fails with `TidemarkError.LoginRefused` and the
/// client is shut down; an unreachable server does not fail (the client reads its store and
/// reconnects with backoff). At most one client may run on a store at a time.
#[uniffi::export]
pub async fn start_client(
    store: Arc<Store>,
    config: ClientConfig,
    listener: Arc<dyn ClientListener>,
) -> Result<Arc<TidemarkClient>, TidemarkError> {
    for (name, value) in [
        ("server_url", &config.server_url),
        ("user_id", &config.user_id),
        ("device_id", &config.device_id),
    ] {
        if value.is_empty() {
            return Err(TidemarkError::invalid(format!("{name} is empty")));
        }
    }
    let storage = store.storage.clone();
    on_runtime(async move {
        let deliveries = events::start(listener)?;
        let (user, device) = (
            UserId::from(config.user_id.as_str()),
            DeviceId::from(config.device_id.as_str()),
        );
        let mut engine = EngineConfig::new(user.clone(), device.clone());
        engine.seed = fresh_seed();
        if let Some(policy) = config.sync_policy {
            engine.policy = policy.into();
        }
        let to_listener = deliveries.clone();
        let (login, first_connect) = LoginState::new(move |event| {
            let _ = to_listener.send(Delivery::Event(event));
        });
        let transport = LoginTransport::new(
            WsTransport::new(config.server_url, user, device, config.token),
            Arc::clone(&login),
        );
        let (client, driver) = Client::start(engine, storage, transport, TokioRuntime).await?;
        let to_listener = deliveries.clone();
        client.add_listener(move |event: &tidemark::Event| {
            // The delivery thread only ends after the driver stopped: a failed send means
            // nobody listens any more.
            let _ = to_listener.send(Delivery::Event(ClientEvent::from_event(event)));
        });
        runtime()?.spawn(async move {
            driver.await;
            let _ = deliveries.send(Delivery::Stop);
        });
        let wait = Duration::from_millis(config.login_timeout_ms);
        if let Ok(Ok(FirstConnect::Refused { code, detail })) =
            tokio::time::timeout(wait, first_connect).await
        {
            client.shutdown().await;
            return Err(TidemarkError::LoginRefused { code, detail });
        }
        Ok(Arc::new(TidemarkClient { client, login }))
    })
    .await
}

/// Fresh randomness for client ids and reconnect jitter (std's hasher keys are random per
/// process and per `RandomState`).
fn fresh_seed() -> u64 {
    let mut hasher = RandomState::new().build_hasher();
    hasher.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos()),
    );
    hasher.finish()
}

/// Tidemark for one signed-in user on one device: commands, reads and state. Made by
/// [`start_client`].
///
/// Commands return once their effect is committed to the store, not after the network round
/// trip: a send's fate arrives as `MessageSent` or `SendFailed`. Reads come from the store,
/// which holds everything an event announced before it was delivered. After `shutdown` the
/// commands fail with `Closed` and the reads still work.
#[derive(uniffi::Object)]
pub struct TidemarkClient {
    client: Client,
    login: Arc<LoginState>,
}

/// A conversation id from the foreign side.
fn conversation_id(id: String) -> ConversationId {
    ConversationId::from(id)
}

/// A message of this user from the foreign side: its conversation and client id.
fn own_message_key(conversation: String, client_msg_id: String) -> (ConversationId, ClientMsgId) {
    (
        conversation_id(conversation),
        ClientMsgId::from(client_msg_id),
    )
}

/// A page size from the foreign side.
fn page_limit(limit: u32) -> Result<usize, TidemarkError> {
    if limit == 0 {
        return Err(TidemarkError::invalid("a page limit must be at least 1"));
    }
    usize::try_from(limit).map_err(|_| TidemarkError::invalid("page limit too large"))
}

impl TidemarkClient {
    /// Runs `work` on a clone of the client, on the bindings' runtime.
    async fn run<T, F, W>(&self, work: W) -> Result<T, TidemarkError>
    where
        T: Send + 'static,
        F: Future<Output = Result<T, TidemarkError>> + Send + 'static,
        W: FnOnce(Client) -> F,
    {
        on_runtime(work(self.client.clone())).await
    }
}

#[uniffi::export]
impl TidemarkClient {
    /// Sends a text message; returns its client id once it is stored as pending.
    pub async fn send_text(
        &self,
        conversation: String,
        text: String,
    ) -> Result<String, TidemarkError> {
        self.run(|c| async move { Ok(c.send_text(&conversation_id(conversation), &text).await?.0) })
            .await
    }

    /// Sends a message of any kind; returns its client id once it is stored as pending.
    pub async fn send_message(
        &self,
        conversation: String,
        kind: ContentKind,
        content: Vec<u8>,
    ) -> Result<String, TidemarkError> {
        let conversation = conversation_id(conversation);
        self.run(
            |c| async move { Ok(c.send_message(&conversation, kind.into(), content).await?.0) },
        )
        .await
    }

    /// Replaces the content of this user's message at `target`; returns the edit's client id.
    pub async fn edit(
        &self,
        conversation: String,
        target: u64,
        content: Vec<u8>,
    ) -> Result<String, TidemarkError> {
        let conversation = conversation_id(conversation);
        self.run(|c| async move { Ok(c.edit(&conversation, Seq(target), content).await?.0) })
            .await
    }

    /// Withdraws this user's message at `target`; returns the revoke's client id.
    pub async fn revoke(&self, conversation: String, target: u64) -> Result<String, TidemarkError> {
        let conversation = conversation_id(conversation);
        self.run(|c| async move { Ok(c.revoke(&conversation, Seq(target)).await?.0) })
            .await
    }

    /// Marks a conversation read up to `seq`, locally at once and then on the server.
    pub async fn mark_read(&self, conversation: String, seq: u64) -> Result<(), TidemarkError> {
        let conversation = conversation_id(conversation);
        self.run(|c| async move { Ok(c.mark_read(&conversation, Seq(seq)).await?) })
            .await
    }

    /// Sends a failed message again under its client id.
    pub async fn retry(
        &self,
        conversation: String,
        client_msg_id: String,
    ) -> Result<(), TidemarkError> {
        let (conversation, id) = own_message_key(conversation, client_msg_id);
        self.run(|c| async move { Ok(c.retry(&conversation, &id).await?) })
            .await
    }

    /// Cancels a send that has not been acked.
    pub async fn cancel(
        &self,
        conversation: String,
        client_msg_id: String,
    ) -> Result<(), TidemarkError> {
        let (conversation, id) = own_message_key(conversation, client_msg_id);
        self.run(|c| async move { Ok(c.cancel(&conversation, &id).await?) })
            .await
    }

    /// Makes sure the `limit` seqs below `before` (none: the newest `limit`) are held,
    /// pulling what is missing; returns when they are, or when the connection dropped first
    /// (`complete` false). Read the page with `messages`.
    pub async fn load_history(
        &self,
        conversation: String,
        before: Option<u64>,
        limit: u32,
    ) -> Result<HistoryLoaded, TidemarkError> {
        let conversation = conversation_id(conversation);
        self.run(|c| async move {
            Ok(c.load_history(&conversation, before.map(Seq), limit)
                .await?
                .into())
        })
        .await
    }

    /// Stops the client: the connection closes, the last events are delivered, later
    /// commands fail with `Closed`. Returns once the driver has stopped. Reads still work;
    /// the store closes when the client and the store objects are both released.
    pub async fn shutdown(&self) {
        let client = self.client.clone();
        // The runtime exists (this client runs on it); if it could not, there is nothing to
        // stop.
        let _ = on_runtime(async move {
            client.shutdown().await;
            Ok(())
        })
        .await;
    }

    /// Uses `token` from the next connect on (after `LoginRefused`, or before the old token
    /// expires). The current connection, if any, stays.
    pub fn set_token(&self, token: String) {
        self.login.set_token(token);
    }

    /// Whether the client has stopped (commands would fail).
    pub fn is_closed(&self) -> bool {
        self.client.is_closed()
    }

    /// The signed-in user.
    pub fn user_id(&self) -> String {
        self.client.user().0.clone()
    }

    /// A page of the conversation list, newest activity first; pass the last entry's
    /// `last_activity` and `id` as `after` for the next page.
    pub async fn conversations(
        &self,
        after: Option<ConversationCursor>,
        limit: u32,
    ) -> Result<Vec<Conversation>, TidemarkError> {
        let limit = page_limit(limit)?;
        self.run(|c| async move {
            let page = c.conversations(after.map(Into::into), limit).await?;
            Ok(page.into_iter().map(Into::into).collect())
        })
        .await
    }

    /// One conversation, if known.
    pub async fn conversation(&self, id: String) -> Result<Option<Conversation>, TidemarkError> {
        let id = conversation_id(id);
        self.run(|c| async move { Ok(c.conversation(&id).await?.map(Into::into)) })
            .await
    }

    /// A page of held messages, ascending by seq: with `Before` the newest `limit` below
    /// `anchor` (none: the newest of all), with `After` the oldest `limit` above it.
    pub async fn messages(
        &self,
        conversation: String,
        anchor: Option<u64>,
        direction: Direction,
        limit: u32,
    ) -> Result<Vec<Message>, TidemarkError> {
        let (conversation, limit) = (conversation_id(conversation), page_limit(limit)?);
        self.run(|c| async move {
            let page = c
                .messages(&conversation, anchor.map(Seq), direction.into(), limit)
                .await?;
            Ok(page.into_iter().map(Into::into).collect())
        })
        .await
    }

    /// The message at `seq`, if held.
    pub async fn message(
        &self,
        conversation: String,
        seq: u64,
    ) -> Result<Option<Message>, TidemarkError> {
        let conversation = conversation_id(conversation);
        self.run(|c| async move { Ok(c.message(&conversation, Seq(seq)).await?.map(Into::into)) })
            .await
    }

    /// This user's message by its client id (pending, failed or sent).
    pub async fn own_message(
        &self,
        conversation: String,
        client_msg_id: String,
    ) -> Result<Option<Message>, TidemarkError> {
        let (conversation, id) = own_message_key(conversation, client_msg_id);
        self.run(|c| async move { Ok(c.own_message(&conversation, &id).await?.map(Into::into)) })
            .await
    }

    /// This user's messages without a seq yet (pending or failed), oldest first.
    pub async fn unsent_messages(
        &self,
        conversation: String,
    ) -> Result<Vec<Message>, TidemarkError> {
        let conversation = conversation_id(conversation);
        self.run(|c| async move {
            let unsent = c.unsent_messages(&conversation).await?;
            Ok(unsent.into_iter().map(Into::into).collect())
        })
        .await
    }

    /// The sum of every conversation's unread count, as of the driver's last released event
    /// (it may be ahead of the event the listener is handling).
    pub fn total_unread(&self) -> u64 {
        self.client.total_unread()
    }

    /// This device's sends neither acked nor failed yet; an app about to exit can wait for 0.
    pub fn pending_sends(&self) -> u64 {
        u64::try_from(self.client.pending_sends()).unwrap_or(u64::MAX)
    }

    /// The connection's state, as of the driver's last step.
    pub fn connection_state(&self) -> ConnectionState {
        self.client.connection_state().into()
    }

    /// Where the sync stands, as of the driver's last step.
    pub fn sync_state(&self) -> SyncState {
        self.client.sync_state().into()
    }
}
