//! [`TidemarkError`]: every failure the foreign side can see, as one exception type with a
//! variant per kind and a stable `code` string in each, so an SDK can branch on the code
//! without parsing messages.

use tidemark::{ClientError, CommandError, StorageError};

/// Why a call failed. Every variant carries `code`, a stable string (the codes never change
/// meaning; new ones may be added), and `detail`, text for logs and people.
#[derive(Debug, thiserror::Error, uniffi::Error)]
pub enum TidemarkError {
    /// The store failed. `code` is the Rust `StorageError::code()`: `Corrupt` (damaged or not
    /// a Tidemark store), `Full`, `UnsupportedVersion` (written by a newer build),
    /// `ReadOnly`, `Gone`, `InUse`, `Rejected` or `Backend`.
    #[error("{code}: {detail}")]
    Storage {
        /// The storage error's code.
        code: String,
        /// What failed.
        detail: String,
    },
    /// The client stopped for good because its store cannot be used (`code`
    /// `StoreUnusable`); set the store aside (`damaged`) or fix its file, then start a new
    /// client.
    #[error("{code}: {detail}")]
    StoreUnusable {
        /// Always `StoreUnusable`.
        code: String,
        /// The store's error.
        detail: String,
        /// Whether the store reported damage, rather than being unwritable.
        damaged: bool,
    },
    /// The engine refused the command. `code`: `UnknownConversation`, `UnknownMessage`,
    /// `NotFailed` (retrying a message that did not fail), `Stopped` (the engine is
    /// restarting after a storage failure: try again) or `ForeignClientMsgId`.
    #[error("{code}: {detail}")]
    Command {
        /// The refusal's code.
        code: String,
        /// What was refused.
        detail: String,
    },
    /// The client is shut down (`code` `Closed`): commands fail, reads still work.
    #[error("{code}: {detail}")]
    Closed {
        /// Always `Closed`.
        code: String,
        /// Detail.
        detail: String,
    },
    /// The engine restarted from the store before a history load finished (`code`
    /// `Restarted`); nothing is lost: ask again.
    #[error("{code}: {detail}")]
    Restarted {
        /// Always `Restarted`.
        code: String,
        /// Detail.
        detail: String,
    },
    /// The server refused the login. `code` is the server's: `unauthorized` (unknown
    /// token, or not this user's), `token_expired` or `unsupported_version`.
    #[error("{code}: {detail}")]
    LoginRefused {
        /// The server's code.
        code: String,
        /// The server's detail.
        detail: String,
    },
    /// An argument no call can accept (`code` `InvalidArgument`), such as a zero page limit
    /// or an empty id.
    #[error("{code}: {detail}")]
    InvalidArgument {
        /// Always `InvalidArgument`.
        code: String,
        /// Which argument, and why.
        detail: String,
    },
    /// A failure inside the bindings (`code` `Internal`): the runtime could not start, or a
    /// task panicked. A bug: report it.
    #[error("{code}: {detail}")]
    Internal {
        /// Always `Internal`.
        code: String,
        /// What failed.
        detail: String,
    },
}

impl TidemarkError {
    /// An [`TidemarkError::InvalidArgument`].
    pub(crate) fn invalid(detail: impl Into<String>) -> Self {
        Self::InvalidArgument {
            code: "InvalidArgument".into(),
            detail: detail.into(),
        }
    }

    /// An [`TidemarkError::Internal`].
    pub(crate) fn internal(detail: impl Into<String>) -> Self {
        Self::Internal {
            code: "Internal".into(),
            detail: detail.into(),
        }
    }

    /// The stable code of any variant.
    pub fn code(&self) -> &str {
        match self {
            Self::Storage { code, .. }
            | Self::StoreUnusable { code, .. }
            | Self::Command { code, .. }
            | Self::Closed { code, .. }
            | Self::Restarted { code, .. }
            | Self::LoginRefused { code, .. }
            | Self::InvalidArgument { code, .. }
            | Self::Internal { code, .. } => code,
        }
    }
}

/// The stable code of an engine refusal (its variant's name).
fn command_code(e: &CommandError) -> &'static str {
    match e {
        CommandError::UnknownConversation(_) => "UnknownConversation",
        CommandError::UnknownMessage(_) => "UnknownMessage",
        CommandError::NotFailed(_) => "NotFailed",
        CommandError::Stopped => "Stopped",
        CommandError::ForeignClientMsgId(_) => "ForeignClientMsgId",
        // The Rust enum is non-exhaustive: a refusal added later still reaches the app, under
        // a code that says this build of the bindings predates it.
        _ => "Command",
    }
}

impl From<StorageError> for TidemarkError {
    fn from(e: StorageError) -> Self {
        Self::Storage {
            code: e.code().to_owned(),
            detail: e.to_string(),
        }
    }
}

impl From<ClientError> for TidemarkError {
    fn from(e: ClientError) -> Self {
        let detail = e.to_string();
        match e {
            ClientError::Command(c) => Self::Command {
                code: command_code(&c).to_owned(),
                detail,
            },
            ClientError::Storage(s) => s.into(),
            ClientError::Closed => Self::Closed {
                code: "Closed".into(),
                detail,
            },
            ClientError::Restarted => Self::Restarted {
                code: "Restarted".into(),
                detail,
            },
            ClientError::StoreUnusable { damaged, .. } => Self::StoreUnusable {
                code: "StoreUnusable".into(),
                detail,
                damaged,
            },
            // Non-exhaustive in Rust; a later kind still arrives with its text.
            _ => Self::internal(detail),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_variant_carries_its_stable_code() {
        let storage: TidemarkError = StorageError::InUse {
            detail: "held".into(),
        }
        .into();
        assert!(matches!(storage, TidemarkError::Storage { .. }));
        assert_eq!(storage.code(), "InUse");
        let refused: TidemarkError =
            ClientError::Command(CommandError::NotFailed("m".into())).into();
        assert!(matches!(refused, TidemarkError::Command { .. }));
        assert_eq!(refused.code(), "NotFailed");
        let closed: TidemarkError = ClientError::Closed.into();
        assert_eq!(closed.code(), "Closed");
        let unusable: TidemarkError = ClientError::StoreUnusable {
            error: "bad page".into(),
            damaged: true,
        }
        .into();
        assert!(matches!(
            unusable,
            TidemarkError::StoreUnusable { damaged: true, .. }
        ));
        assert_eq!(unusable.code(), "StoreUnusable");
        assert_eq!(TidemarkError::invalid("x").code(), "InvalidArgument");
        // The text names the code first, for logs.
        assert!(closed.to_string().starts_with("Closed: "));
    }
}
