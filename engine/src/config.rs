//! [`EngineConfig`]: who the engine syncs for and how.

use serde::{Deserialize, Serialize};

use crate::model::{DeviceId, UserId};

/// What to pull after connecting.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum SyncPolicy {
    /// The newest `per_conversation` messages of every conversation with news, most recently
    /// active first. The hole left between old and new stays an explicit gap, filled by
    /// `load_history` or (when `background_fill` is set) after the sync finishes.
    NewestFirst {
        /// Messages to pull per conversation.
        per_conversation: u32,
        /// Fill the remaining gaps after the newest messages are in.
        background_fill: bool,
    },
    /// Pull every missing seq of every conversation.
    Full,
}

/// Engine settings. Durations are in milliseconds.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct EngineConfig {
    /// The signed-in user.
    pub user: UserId,
    /// This device.
    pub device: DeviceId,
    /// Seeds client message ids and reconnect jitter. An app passes fresh randomness at every
    /// start; tests pass a constant.
    ///
    /// Client ids must never repeat (the server deduplicates sends by client id, so a repeated
    /// id loses the later send). An id is `{device}:{time}-{counter}-{random}-{tag}`, with
    /// the time of the send in milliseconds, a counter that goes on above the highest counter
    /// of this device's ids in the outbox after a restart, a random part drawn from this seed,
    /// the start time and a digest of the snapshot the engine started from, and a tag binding
    /// the id to its conversation. The engine never makes an id already in its outbox. So with
    /// a constant seed, two engines make the same id only if they start in the same
    /// millisecond from snapshots with the same digest and send in the same millisecond in the
    /// same conversation (a send changes its conversation's record, and so the digest, though
    /// a later cancel may change it back; a store restored from a backup is another way).
    /// Fresh randomness rules even that out.
    pub seed: u64,
    /// What to pull after connecting.
    pub policy: SyncPolicy,
    /// Conversations per max-seq page.
    pub max_seqs_page: u32,
    /// Most messages one pull request asks for.
    pub pull_max_messages: u32,
    /// Most bytes of encoded messages one pull reply should carry, sent to the server with
    /// each pull (it uses the smaller of this and its own budget). Keeps every reply far
    /// below the 64 MiB frame limit of the client transports: a reply over it is refused
    /// whole, and asking again would get the same reply. A server always sends at least one
    /// message when any is due, so a budget below one message still makes progress.
    #[serde(default = "default_pull_max_bytes")]
    pub pull_max_bytes: u64,
    /// Most conversations one pull request covers.
    pub pull_max_conversations: u32,
    /// Most pull requests in flight at once.
    pub pulls_in_flight: u32,
    /// Ping interval while connected.
    pub heartbeat_interval_ms: u64,
    /// A request unanswered this long means the connection is dead.
    pub request_timeout_ms: u64,
    /// First reconnect delay; doubles per failure up to `reconnect_max_ms`.
    pub reconnect_min_ms: u64,
    /// Largest reconnect delay.
    pub reconnect_max_ms: u64,
    /// First delay before resending after a transient send error; doubles per attempt.
    pub send_retry_min_ms: u64,
    /// A send that failed transiently this many times fails for good.
    pub send_max_attempts: u32,
    /// Connect as soon as the engine starts.
    pub connect_on_start: bool,
}

impl EngineConfig {
    /// Defaults for `user` on `device`: newest 20 first without background fill.
    pub fn new(user: UserId, device: DeviceId) -> Self {
        Self {
            user,
            device,
            seed: 0,
            policy: SyncPolicy::NewestFirst {
                per_conversation: 20,
                background_fill: false,
            },
            max_seqs_page: 1000,
            pull_max_messages: 2000,
            pull_max_bytes: default_pull_max_bytes(),
            pull_max_conversations: 200,
            pulls_in_flight: 4,
            heartbeat_interval_ms: 25_000,
            request_timeout_ms: 15_000,
            reconnect_min_ms: 500,
            reconnect_max_ms: 30_000,
            send_retry_min_ms: 1_000,
            send_max_attempts: 5,
            connect_on_start: true,
        }
    }
}

/// 4 MiB: a sixteenth of the client transports' 64 MiB frame limit, the reference server's
/// default budget too. Four pulls in flight keep a link of up to 16 MiB in flight busy, a
/// reply takes seconds even on a slow mobile link, and a client holding four decoded replies
/// stays within tens of MiB.
fn default_pull_max_bytes() -> u64 {
    4 * 1024 * 1024
}
