//! The sans-IO [`Engine`]. (Skeleton: bodies are being written.)

use crate::config::EngineConfig;
use crate::model::{
    ClientMsgId, ContentKind, Conversation, ConversationId, Message, Seq, Timestamp,
};
use crate::output::{ConnectionState, Output};
use crate::protocol::{Push, RequestId, Response};
use crate::storage::{BatchId, StorageError, SyncSnapshot};

/// A command the engine refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CommandError {
    /// No such conversation is known.
    #[error("unknown conversation {0}")]
    UnknownConversation(ConversationId),
    /// No such message is pending or failed.
    #[error("unknown message {0}")]
    UnknownMessage(ClientMsgId),
    /// The engine stopped after a storage failure; restart it from a snapshot.
    #[error("engine stopped after a storage failure")]
    Stopped,
}

/// The sync state machine. See the crate docs for the driver rule.
#[derive(Debug)]
pub struct Engine {
    config: EngineConfig,
}

impl Engine {
    /// Starts from a snapshot loaded with [`crate::Storage::load_snapshot`].
    pub fn new(config: EngineConfig, snapshot: SyncSnapshot, now: Timestamp) -> Self {
        let _ = (snapshot, now);
        Self { config }
    }
    /// The configuration.
    pub fn config(&self) -> &EngineConfig {
        &self.config
    }
    /// Connection state.
    pub fn connection_state(&self) -> ConnectionState {
        ConnectionState::Disconnected
    }
    /// A conversation's in-memory state.
    pub fn conversation(&self, id: &ConversationId) -> Option<&Conversation> {
        let _ = id;
        None
    }
    /// Sum of unread counts.
    pub fn total_unread(&self) -> u64 {
        0
    }
    /// Whether the engine stopped after a storage failure.
    pub fn is_stopped(&self) -> bool {
        false
    }
    /// Whether nothing is in flight: no request, batch, pull or send pending.
    pub fn is_idle(&self) -> bool {
        true
    }
    /// The connection is up.
    pub fn handle_connected(&mut self, now: Timestamp) {
        let _ = now;
    }
    /// The connection is down (or a connect failed).
    pub fn handle_disconnected(&mut self, now: Timestamp, reason: &str) {
        let _ = (now, reason);
    }
    /// The response to request `id`.
    pub fn handle_response(&mut self, now: Timestamp, id: RequestId, response: Response) {
        let _ = (now, id, response);
    }
    /// A push from the server.
    pub fn handle_push(&mut self, now: Timestamp, push: Push) {
        let _ = (now, push);
    }
    /// Batch `id` committed.
    pub fn handle_batch_committed(&mut self, now: Timestamp, id: BatchId) {
        let _ = (now, id);
    }
    /// Batch `id` failed; the engine stops.
    pub fn handle_batch_failed(&mut self, now: Timestamp, id: BatchId, error: &StorageError) {
        let _ = (now, id, error);
    }
    /// Time passed.
    pub fn handle_timeout(&mut self, now: Timestamp) {
        let _ = now;
    }
    /// Sends a message.
    pub fn send_message(
        &mut self,
        now: Timestamp,
        conversation: &ConversationId,
        kind: ContentKind,
        content: Vec<u8>,
    ) -> Result<ClientMsgId, CommandError> {
        let _ = (now, conversation, kind, content);
        Err(CommandError::Stopped)
    }
    /// Marks read.
    pub fn mark_read(
        &mut self,
        now: Timestamp,
        conversation: &ConversationId,
        seq: Seq,
    ) -> Result<(), CommandError> {
        let _ = (now, conversation, seq);
        Err(CommandError::Stopped)
    }
    /// Loads history.
    pub fn load_history(
        &mut self,
        now: Timestamp,
        conversation: &ConversationId,
        before: Option<Seq>,
        limit: u32,
    ) -> Result<u64, CommandError> {
        let _ = (now, conversation, before, limit);
        Err(CommandError::Stopped)
    }
    /// Retries a failed message.
    pub fn retry(&mut self, now: Timestamp, message: &Message) -> Result<(), CommandError> {
        let _ = (now, message);
        Err(CommandError::Stopped)
    }
    /// Cancels a pending send.
    pub fn cancel(
        &mut self,
        now: Timestamp,
        conversation: &ConversationId,
        client_msg_id: &ClientMsgId,
    ) -> Result<(), CommandError> {
        let _ = (now, conversation, client_msg_id);
        Err(CommandError::Stopped)
    }
    /// Next output.
    pub fn poll_output(&mut self) -> Output {
        Output::Timeout(Timestamp(u64::MAX))
    }
}
