//! Errors of the server store and of the admin API.

use tidemark_engine::{ConversationId, UserId};

/// A [`super::ServerStore`] failure.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ServerStoreError {
    /// No such user.
    #[error("unknown user {0}")]
    UnknownUser(UserId),
    /// No such conversation.
    #[error("unknown conversation {0}")]
    UnknownConversation(ConversationId),
    /// A user or conversation with this id exists already.
    #[error("{0} already exists")]
    AlreadyExists(String),
    /// Any other backend failure (an SQLite store keeps its error as the source).
    #[error("server store backend error: {detail}")]
    Backend {
        /// What failed.
        detail: String,
        /// The backend's error.
        #[source]
        source: Option<Box<dyn std::error::Error + Send + Sync>>,
    },
}

/// Why an admin action of [`super::ServerCore`] was refused.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AdminError {
    /// The user is not a member of the conversation.
    #[error("{user} is not a member of {conversation}")]
    NotMember {
        /// The user.
        user: UserId,
        /// The conversation.
        conversation: ConversationId,
    },
    /// The store failed (unknown ids included).
    #[error(transparent)]
    Store(#[from] ServerStoreError),
}
