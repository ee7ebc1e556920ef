//! What the `tidemark-server` binary does, as functions over any server store, so the binary
//! is only argument parsing and the choice of store.
//!
//! The admin functions work on a store directly (no server running): they are for an
//! operator's command line, where nobody is online to be told.

use std::future::Future;

use tidemark_engine::{ConversationId, ConversationKind, UserId};

use super::{wall_clock, HostError, Server, ServerOptions};
use crate::{issue_token, AccountStore, ServerStore, ServerStoreError};

/// Why an operation of the command line failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum OpsError {
    /// The store refused or failed.
    #[error(transparent)]
    Store(#[from] ServerStoreError),
    /// The server could not bind its address.
    #[error("cannot start the server: {0}")]
    Io(#[from] std::io::Error),
    /// The running server failed.
    #[error(transparent)]
    Host(#[from] HostError),
}

/// Creates a user and returns a new token for it, valid for `ttl_secs` (`None`: forever).
/// Fails with [`ServerStoreError::AlreadyExists`] when the user exists (use [`token`] to get
/// another token).
pub fn create_user<St>(
    store: &mut St,
    user: &UserId,
    ttl_secs: Option<u64>,
) -> Result<String, ServerStoreError>
where
    St: ServerStore + AccountStore,
{
    if !store.create_user(user)? {
        return Err(ServerStoreError::AlreadyExists(format!("user {user}")));
    }
    token(store, user, ttl_secs)
}

/// Issues another token for an existing user, valid for `ttl_secs` (`None`: forever).
/// Earlier tokens stay valid.
pub fn token<St>(
    store: &mut St,
    user: &UserId,
    ttl_secs: Option<u64>,
) -> Result<String, ServerStoreError>
where
    St: ServerStore + AccountStore,
{
    issue_token(
        store,
        user,
        wall_clock(),
        ttl_secs.map(|secs| secs.saturating_mul(1_000)),
    )
}

/// Creates a conversation of existing users.
pub fn create_conversation<St>(
    store: &mut St,
    id: &ConversationId,
    kind: ConversationKind,
    members: &[UserId],
) -> Result<(), ServerStoreError>
where
    St: ServerStore,
{
    store.create_conversation(id, kind, members)
}

/// Expires every sync token older than the last change (see
/// [`ServerStore::raise_change_floor`]); returns the new floor.
pub fn expire_sync_tokens<St>(store: &mut St) -> Result<u64, ServerStoreError>
where
    St: ServerStore,
{
    let counter = store.change_clock()?.counter;
    store.raise_change_floor(counter)
}

/// Adds an existing user to an existing conversation.
pub fn add_member<St>(
    store: &mut St,
    conversation: &ConversationId,
    user: &UserId,
) -> Result<(), ServerStoreError>
where
    St: ServerStore,
{
    if store.conversation(conversation)?.is_none() {
        return Err(ServerStoreError::UnknownConversation(conversation.clone()));
    }
    if !store.user_exists(user)? {
        return Err(ServerStoreError::UnknownUser(user.clone()));
    }
    store.add_member(conversation, user)
}

/// Serves `store` until `stop` resolves (the binary passes ctrl-c), then shuts down cleanly
/// and returns the store. `on_listening` is told the address once bound (port 0 picks one).
pub async fn serve<St, F>(
    store: St,
    options: ServerOptions,
    on_listening: impl FnOnce(std::net::SocketAddr),
    stop: F,
) -> Result<St, OpsError>
where
    St: ServerStore + AccountStore + Send + 'static,
    F: Future<Output = ()>,
{
    let server = Server::start(store, options).await?;
    on_listening(server.local_addr());
    stop.await;
    tracing::info!("stop requested; shutting down");
    Ok(server.shutdown().await?)
}
