//! [`SimError`]: why a simulation step could not go on.

use tidemark_engine::{CommandError, StorageError, Timestamp};

use crate::server::{AdminError, ServerStoreError};

/// Why a simulation call failed. Invariant violations are not errors of the harness: they
/// come from [`crate::invariants::check`].
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SimError {
    /// A store could not be opened or its snapshot loaded.
    #[error("device {device}: storage error: {source}")]
    Storage {
        /// Device index.
        device: usize,
        /// The error.
        #[source]
        source: StorageError,
    },
    /// The engine refused a command.
    #[error("device {device}: command refused: {source}")]
    Command {
        /// Device index.
        device: usize,
        /// The error.
        #[source]
        source: CommandError,
    },
    /// The device has no running engine (its restart failed).
    #[error("device {0} has no running engine")]
    DeviceDown(usize),
    /// A server admin action failed.
    #[error("server admin action failed: {0}")]
    Admin(#[from] AdminError),
    /// The server store failed.
    #[error("server store failed: {0}")]
    ServerStore(#[from] ServerStoreError),
    /// `drive` took its whole step budget without reaching quiescence.
    #[error("not quiescent after {steps} steps at {now:?}: {pending}")]
    StepCap {
        /// Steps taken.
        steps: u64,
        /// Simulated time.
        now: Timestamp,
        /// What was still pending.
        pending: String,
    },
    /// `drive` reached its simulated-time budget without reaching quiescence.
    #[error("not quiescent by {deadline:?}: {pending}")]
    TimeCap {
        /// The time budget's end.
        deadline: Timestamp,
        /// What was still pending.
        pending: String,
    },
    /// Nothing is scheduled, yet some device is not settled (an engine that is busy without
    /// asking for a wakeup).
    #[error("stuck at {now:?}: nothing scheduled but {pending}")]
    Stuck {
        /// Simulated time.
        now: Timestamp,
        /// What was still pending.
        pending: String,
    },
    /// An engine kept producing outputs without ever returning a timeout.
    #[error("device {device}: more than {limit} outputs without a timeout")]
    RunawayOutputs {
        /// Device index.
        device: usize,
        /// The limit.
        limit: usize,
    },
    /// A device kept stopping right after restarts.
    #[error("device {device}: restarted {restarts} times in one step")]
    RestartLoop {
        /// Device index.
        device: usize,
        /// Restarts.
        restarts: u32,
    },
}
