//! [`FaultyStoreFactory`]: storage fault injection for any backend, so the storage-failure
//! scenario runs the same against memory, SQLite and the browser store.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use tidemark_engine::{
    ClientMsgId, Conversation, ConversationCursor, ConversationId, Direction, Message, OutboxEntry,
    Seq, SeqRanges, Storage, StorageError, SyncSnapshot, UserId, WriteBatch,
};

use crate::sim::StoreFactory;

/// Wraps another factory's stores in [`FaultyStore`]s whose `apply` can be told to fail.
/// The failure budget of a device survives reopening its store (a restart).
#[derive(Debug)]
pub struct FaultyStoreFactory<F> {
    inner: F,
    budgets: Mutex<BTreeMap<usize, Arc<AtomicUsize>>>,
}

impl<F> FaultyStoreFactory<F> {
    /// Wraps `inner`; nothing fails until told to.
    pub fn new(inner: F) -> Self {
        Self {
            inner,
            budgets: Mutex::new(BTreeMap::new()),
        }
    }

    /// The next `n` `apply` calls on device `device`'s store fail with
    /// [`StorageError::Backend`] and change nothing. Replaces any count still pending.
    pub fn fail_next_applies(&self, device: usize, n: usize) {
        self.budget(device).store(n, Ordering::SeqCst);
    }

    fn budget(&self, device: usize) -> Arc<AtomicUsize> {
        let mut budgets = self.budgets.lock().unwrap_or_else(PoisonError::into_inner);
        budgets.entry(device).or_default().clone()
    }
}

#[cfg_attr(target_family = "wasm", async_trait::async_trait(?Send))]
#[cfg_attr(not(target_family = "wasm"), async_trait::async_trait)]
impl<F: StoreFactory> StoreFactory for FaultyStoreFactory<F> {
    type Store = FaultyStore<F::Store>;

    async fn open(&self, device: usize) -> Result<Self::Store, StorageError> {
        let inner = self.inner.open(device).await?;
        Ok(FaultyStore {
            inner,
            fail_applies: self.budget(device),
        })
    }
}

/// A store that fails `apply` while its budget lasts and otherwise passes every call through.
#[derive(Debug)]
pub struct FaultyStore<S> {
    inner: S,
    fail_applies: Arc<AtomicUsize>,
}

impl<S> FaultyStore<S> {
    /// The wrapped store.
    pub fn inner(&self) -> &S {
        &self.inner
    }
}

#[cfg_attr(target_family = "wasm", async_trait::async_trait(?Send))]
#[cfg_attr(not(target_family = "wasm"), async_trait::async_trait)]
impl<S: Storage> Storage for FaultyStore<S> {
    async fn load_snapshot(&self) -> Result<SyncSnapshot, StorageError> {
        self.inner.load_snapshot().await
    }

    async fn apply(&self, batch: WriteBatch) -> Result<(), StorageError> {
        let fail = self
            .fail_applies
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok();
        if fail {
            return Err(StorageError::Backend {
                detail: "injected apply failure".into(),
                source: None,
            });
        }
        self.inner.apply(batch).await
    }

    async fn conversation(
        &self,
        id: &ConversationId,
    ) -> Result<Option<Conversation>, StorageError> {
        self.inner.conversation(id).await
    }

    async fn conversations_page(
        &self,
        after: Option<ConversationCursor>,
        limit: usize,
    ) -> Result<Vec<Conversation>, StorageError> {
        self.inner.conversations_page(after, limit).await
    }

    async fn messages_page(
        &self,
        conversation: &ConversationId,
        anchor: Option<Seq>,
        direction: Direction,
        limit: usize,
    ) -> Result<Vec<Message>, StorageError> {
        self.inner
            .messages_page(conversation, anchor, direction, limit)
            .await
    }

    async fn message_by_client_id(
        &self,
        conversation: &ConversationId,
        sender: &UserId,
        client_msg_id: &ClientMsgId,
    ) -> Result<Option<Message>, StorageError> {
        self.inner
            .message_by_client_id(conversation, sender, client_msg_id)
            .await
    }

    async fn unsent_messages(
        &self,
        conversation: &ConversationId,
    ) -> Result<Vec<Message>, StorageError> {
        self.inner.unsent_messages(conversation).await
    }

    async fn total_unread(&self) -> Result<u64, StorageError> {
        self.inner.total_unread().await
    }

    async fn outbox(&self) -> Result<Vec<OutboxEntry>, StorageError> {
        self.inner.outbox().await
    }

    async fn tombstones(&self, conversation: &ConversationId) -> Result<SeqRanges, StorageError> {
        self.inner.tombstones(conversation).await
    }

    async fn check_integrity(&self) -> Result<(), StorageError> {
        self.inner.check_integrity().await
    }
}
