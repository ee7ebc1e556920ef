//! Errors of the server store and of the admin API.

use tidemark_engine::{ConversationId, UserId};

/// A [`crate::ServerStore`] failure.
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
    /// The store's file is not a server store, or is damaged: not an SQLite database, a
    /// database of something else, or a value that no write of the store produces. Found
    /// before anything is written, so the file is left as it was.
    #[error("server store corrupt: {detail}")]
    Corrupt {
        /// What was found.
        detail: String,
        /// The backend's error, when it reported the damage.
        #[source]
        source: Option<Box<dyn std::error::Error + Send + Sync>>,
    },
    /// The store was written by a newer build (its schema version is above this build's).
    /// Refused before anything is written, so the newer build can still open it.
    #[error("server store schema version {found} is newer than this build supports ({supported})")]
    UnsupportedVersion {
        /// The store's schema version.
        found: u64,
        /// The highest version this build opens.
        supported: u64,
    },
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

/// Why an admin action of [`crate::ServerCore`] was refused.
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
