//! The model-based property tests (`tidemark_conformance::model`) on `MemoryStorage`, and
//! proof that the model finds broken stores and shrinks their failures.
//!
//! `PROPTEST_CASES` sets the number of cases (default 256). Long run:
//! `PROPTEST_CASES=100000 cargo test --release -p tidemark-conformance --test model_memory -- --nocapture`.
//! Failures are persisted to `conformance/proptest-regressions/model_memory.txt` (commit it)
//! and replayed first by every later run.

use tidemark_conformance::model::{self, ModelOptions};
use tidemark_conformance::sim::{MemoryStoreFactory, StoreFactory};
use tidemark_engine::{
    ClientMsgId, Conversation, ConversationCursor, ConversationId, Direction, MemoryStorage,
    Message, OutboxEntry, Seq, SeqRanges, Storage, StorageError, SyncSnapshot, UserId, WriteBatch,
    WriteOp,
};

#[test]
fn model_memory() {
    model::run_model(
        MemoryStoreFactory::new,
        model::config(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/proptest-regressions/model_memory.txt"
        )),
    );
}

/// The model with sends that fail for good (permanent server errors, transient ones past
/// `send_max_attempts`). Its regression file holds the seeds of the engine bug below, fixed
/// since: a send of this device is known by its client id prefix, so its late echo is acked.
#[test]
fn model_memory_failed_sends() {
    model::run_model_with(
        MemoryStoreFactory::new,
        model::config(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/proptest-regressions/model_memory_failed_sends.txt"
        )),
        ModelOptions {
            failed_sends: true,
            ..ModelOptions::default()
        },
    );
}

/// The minimal run `model_memory_failed_sends` first shrank to. Alice's laptop sends in `g1`
/// and its connection drops at once; the request still reaches the server, which stores the
/// message at seq 1, but the ack is lost. After the reconnect the resend is answered with a
/// permanent error, so the engine marks the message failed (`SendFailed`); then the sync
/// pulls seq 1, the echo of that very send, and the engine merges it into the failed row
/// (now sent at seq 1) but announces it in `MessagesReceived`, as a message received from
/// someone else, and never emitted `MessageSent` for it (fixed: the echo now acks it). The same happens when the send gives
/// up after `send_max_attempts` transient errors, and across a crash (the echo is then
/// announced by a process that did not store it first).
#[test]
fn failed_send_echo_is_announced_as_received() {
    use model::Transition::*;
    let case = model::ModelCase {
        seed: 18092169904161839485,
        initial: [0, 0, 0, 0],
        transitions: vec![
            Tick { ms: 40 },
            Send { device: 1, conv: 0 },
            Disconnect { device: 1 },
            Tick { ms: 10 },
            FailSends {
                count: 1,
                permanent: true,
            },
        ],
    };
    let options = ModelOptions {
        failed_sends: true,
        ..ModelOptions::default()
    };
    if let Err(failure) =
        futures::executor::block_on(model::run_case(MemoryStoreFactory::new(), &case, options))
    {
        panic!("{failure}");
    }
}

/// The browser's entry point, natively: a few cases awaited one by one.
#[test]
fn model_memory_async_runner() {
    let result = futures::executor::block_on(model::run_model_async(
        MemoryStoreFactory::new,
        ModelOptions::default(),
        8,
        0x7D3A_11CE,
        500,
    ));
    if let Err(failure) = result {
        panic!("{failure}");
    }
}

// ----- the model finds broken stores -----

/// How a [`BrokenStore`] is broken.
#[derive(Clone, Copy, Debug)]
enum Breakage {
    /// Ignores every revoke: only the end state shows it (the content stays).
    DropsRevokes,
    /// Never stores the message at seq 2 of any conversation, yet its held ranges say so.
    LosesSeq2,
}

/// A `MemoryStorage` that changes the batches it applies.
struct BrokenStore {
    inner: MemoryStorage,
    breakage: Breakage,
}

#[async_trait::async_trait]
impl Storage for BrokenStore {
    async fn load_snapshot(&self) -> Result<SyncSnapshot, StorageError> {
        self.inner.load_snapshot().await
    }

    async fn apply(&self, mut batch: WriteBatch) -> Result<(), StorageError> {
        match self.breakage {
            Breakage::DropsRevokes => batch
                .ops
                .retain(|op| !matches!(op, WriteOp::RevokeMessage { .. })),
            Breakage::LosesSeq2 => {
                for op in &mut batch.ops {
                    if let WriteOp::PutMessages(messages) = op {
                        messages.retain(|m| m.seq != Some(Seq(2)));
                    }
                }
            }
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

struct BrokenStoreFactory {
    inner: MemoryStoreFactory,
    breakage: Breakage,
}

#[async_trait::async_trait]
impl StoreFactory for BrokenStoreFactory {
    type Store = BrokenStore;

    async fn open(&self, device: usize) -> Result<BrokenStore, StorageError> {
        Ok(BrokenStore {
            inner: self.inner.open(device).await?,
            breakage: self.breakage,
        })
    }
}

/// Runs the model on a broken store; returns the shrunk failure.
fn failure_on(breakage: Breakage) -> model::ModelFailure {
    let result = futures::executor::block_on(model::run_model_async(
        || BrokenStoreFactory {
            inner: MemoryStoreFactory::new(),
            breakage,
        },
        ModelOptions::default(),
        256,
        7,
        2_000,
    ));
    match result {
        Ok(()) => panic!("256 cases on a store that is {breakage:?} found nothing"),
        Err(failure) => failure,
    }
}

#[test]
fn model_finds_dropped_revokes_and_shrinks_them() {
    let failure = failure_on(Breakage::DropsRevokes);
    let text = failure.to_string();
    assert!(text.contains("revoked true"), "{text}");
    // A message, its revoke and time to deliver them.
    assert!(failure.case.transitions.len() <= 4, "{text}");
}

#[test]
fn model_finds_a_lost_message_at_once() {
    let failure = failure_on(Breakage::LosesSeq2);
    let text = failure.to_string();
    assert!(text.contains("held claims 2..=2"), "{text}");
    assert!(failure.case.transitions.len() <= 2, "{text}");
}
