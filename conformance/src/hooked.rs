//! [`HookedStore`]: any [`Storage`] with a hook around `apply`, every other method passed
//! through. One wrapper serves every test that needs a store to fail, break or report its
//! batches (storage faults in the scenarios, deliberately broken stores that the model must
//! catch, the kill test's progress marks).

use tidemark_engine::storage::{SendOutsideWasm, SyncOutsideWasm};
use tidemark_engine::{
    Applied, ClientMsgId, Conversation, ConversationCursor, ConversationId, Direction, Message,
    OutboxEntry, Seq, SeqRanges, Storage, StorageError, SyncSnapshot, UserId, WriteBatch,
};

/// What a [`HookedStore`] does around `apply`.
pub trait ApplyHook: SendOutsideWasm + SyncOutsideWasm {
    /// Runs before the wrapped store's `apply`: may change the batch, or fail it (the wrapped
    /// store is then not called, so nothing changes).
    fn before_apply(&self, batch: &mut WriteBatch) -> Result<(), StorageError> {
        let _ = batch;
        Ok(())
    }

    /// Runs after the wrapped store's `apply`, with its result.
    fn after_apply(&self, result: &Result<Applied, StorageError>) {
        let _ = result;
    }
}

/// A store that runs `hook` around every `apply` of `inner`.
#[derive(Clone, Debug)]
pub struct HookedStore<S, H> {
    inner: S,
    hook: H,
}

impl<S, H> HookedStore<S, H> {
    /// Wraps `inner`.
    pub fn new(inner: S, hook: H) -> Self {
        Self { inner, hook }
    }

    /// The wrapped store.
    pub fn inner(&self) -> &S {
        &self.inner
    }

    /// The hook.
    pub fn hook(&self) -> &H {
        &self.hook
    }
}

#[cfg_attr(target_family = "wasm", async_trait::async_trait(?Send))]
#[cfg_attr(not(target_family = "wasm"), async_trait::async_trait)]
impl<S: Storage, H: ApplyHook> Storage for HookedStore<S, H> {
    async fn load_snapshot(&self) -> Result<SyncSnapshot, StorageError> {
        self.inner.load_snapshot().await
    }

    async fn apply(&self, mut batch: WriteBatch) -> Result<Applied, StorageError> {
        self.hook.before_apply(&mut batch)?;
        let result = self.inner.apply(batch).await;
        self.hook.after_apply(&result);
        result
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
