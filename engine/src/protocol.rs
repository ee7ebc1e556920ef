//! The abstract protocol the engine speaks. A [`crate::Transport`] carries these; the
//! `tidemark-transport` crate gives them a wire form. Requests get exactly one response, matched by
//! [`RequestId`]; pushes arrive unasked.

use serde::{Deserialize, Serialize};

use crate::model::{
    ClientMsgId, ContentKind, ConversationId, ConversationKind, Seq, ServerMessage, Timestamp,
    UserId,
};
use crate::seq_ranges::SeqRanges;

/// Matches a response to its request. Unique per engine instance.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct RequestId(pub u64);

/// What the engine asks of the server.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Request {
    /// One page of the user's conversations with their max seqs, ordered by conversation id.
    GetMaxSeqs {
        /// Start after this conversation id; `None` for the first page.
        after: Option<ConversationId>,
        /// Page size.
        limit: u32,
        /// The change cursor of an earlier listing: with a token the server knows, only the
        /// conversations whose entry may have changed since it are listed (a delta, paged
        /// with `after` the same way); with none, or one the server does not know (expired,
        /// malformed, another server's), the full listing. Absent on the wire means `None`;
        /// older servers ignore it and list everything, which is still correct.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        since: Option<SyncToken>,
    },
    /// Messages of many conversations in one request.
    Pull {
        /// One inclusive range per conversation.
        ranges: Vec<PullRange>,
        /// The most bytes of encoded messages the client wants in the reply; the server uses
        /// the smaller of this and its own budget, and still sends at least one message when
        /// any is due. `None` (and a frame without the field, from an older client): the
        /// server's budget alone. Older servers ignore the field.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        max_bytes: Option<u64>,
    },
    /// Send a message; idempotent by (sender, client message id): a resend of a stored one is
    /// answered with the original ack, even after that seq was deleted.
    Send {
        /// The conversation.
        conversation: ConversationId,
        /// The sender's id for it.
        client_msg_id: ClientMsgId,
        /// What it is.
        kind: ContentKind,
        /// Payload.
        #[serde(with = "crate::content_serde")]
        content: Vec<u8>,
        /// The sender's clock at creation.
        created_at: Timestamp,
    },
    /// Every seq deleted one by one (not below the floor) in these conversations. Asked when
    /// a max-seq entry's `deleted_count` differs from the one the device last saw, so a
    /// deletion whose push was missed (offline) is still learned.
    GetDeletions {
        /// The conversations.
        conversations: Vec<ConversationId>,
    },
    /// Set this user's read seq (the server keeps the maximum).
    MarkRead {
        /// The conversation.
        conversation: ConversationId,
        /// New read seq.
        seq: Seq,
    },
    /// Keep-alive.
    Ping,
}

/// A per-user change cursor ("sync token"): opaque to the client, which stores the one of
/// its last complete listing and sends it as [`Request::GetMaxSeqs::since`] on the next
/// connect. Only the server that made it can read it; its form is the server's business.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct SyncToken(pub String);

impl SyncToken {
    /// The longest token, in bytes, anyone sends or stores: a longer one is malformed on the
    /// wire and dropped by the engine (`docs/protocol.md`, limits).
    pub const MAX_BYTES: usize = 128;

    /// A token with this text.
    pub fn new(text: impl Into<String>) -> Self {
        Self(text.into())
    }

    /// The token's text.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Whether the token fits [`SyncToken::MAX_BYTES`].
    pub fn fits(&self) -> bool {
        self.0.len() <= Self::MAX_BYTES
    }
}

/// An inclusive seq range of one conversation to pull.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PullRange {
    /// The conversation.
    pub conversation: ConversationId,
    /// First seq wanted.
    pub from: Seq,
    /// Last seq wanted (inclusive).
    pub to: Seq,
}

/// One conversation's entry in a max-seq page.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MaxSeqEntry {
    /// The conversation.
    pub conversation: ConversationId,
    /// Direct or group.
    pub kind: ConversationKind,
    /// Highest seq assigned.
    pub max_seq: Seq,
    /// History floor (seqs below are gone).
    pub min_seq: Seq,
    /// This user's read seq on the server.
    pub read_seq: Seq,
    /// Server time of the newest message (orders what to pull first).
    pub last_activity: Timestamp,
    /// Seqs in `(read_seq, max_seq]` that never count as unread for this user: their own
    /// messages, edits/revokes, deleted seqs. With it the device's unread count is exact even
    /// for seqs it has not pulled (newest-first leaves holes).
    #[serde(default)]
    pub not_unread: SeqRanges,
    /// How many seqs above the floor were deleted one by one. It changes with every
    /// deletion; a device that saw another count asks [`Request::GetDeletions`].
    #[serde(default)]
    pub deleted_count: u64,
}

/// One conversation's answer to [`Request::GetDeletions`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeletionsEntry {
    /// The conversation.
    pub conversation: ConversationId,
    /// Every seq deleted one by one above the floor.
    pub seqs: SeqRanges,
    /// The count these seqs make (as in [`MaxSeqEntry::deleted_count`]).
    pub deleted_count: u64,
}

/// What the server returned for one [`PullRange`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PulledRange {
    /// The conversation.
    pub conversation: ConversationId,
    /// First seq covered.
    pub from: Seq,
    /// Last seq covered. May be below the requested end when the server capped the reply;
    /// the rest stays a gap and is asked again.
    pub to: Seq,
    /// The messages that exist in `from..=to`, ascending.
    pub messages: Vec<ServerMessage>,
    /// Seqs in `from..=to` that no longer exist (deleted, expired, below the floor).
    pub missing: SeqRanges,
    /// The conversation's current history floor.
    pub min_seq: Seq,
    /// The conversation's current max seq.
    pub max_seq: Seq,
}

/// Why the server refused a request.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServerError {
    /// Machine-readable code: one of [`ErrorCode`] from a Tidemark server; other servers may
    /// send codes of their own, so the wire form stays a string.
    pub code: String,
    /// Human-readable detail.
    pub message: String,
    /// Permanent errors fail a send for good; others are retried with backoff.
    pub permanent: bool,
}

impl ServerError {
    /// An error with `code`, permanent as [`ErrorCode::is_permanent`] says.
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            code: code.as_str().to_owned(),
            message: message.into(),
            permanent: code.is_permanent(),
        }
    }

    /// The code as an [`ErrorCode`], `None` for a code this build does not know.
    pub fn error_code(&self) -> Option<ErrorCode> {
        ErrorCode::parse(&self.code)
    }
}

/// Every error code of Tidemark, in one place: the codes a Tidemark server sends in
/// [`ServerError::code`] (the refusal of one request) and in the wire protocol's
/// connection-level error frames, and the one the engine gives a request itself
/// (`unexpected_response`). The strings are the wire form and never change;
/// `docs/protocol.md` lists them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[non_exhaustive]
pub enum ErrorCode {
    /// `not_member`: the user is not a member of the conversation (or it does not exist).
    NotMember,
    /// `too_large`: content over the server's limit, or a frame over the frame limit.
    TooLarge,
    /// `invalid_value`: a value no store can hold or a rule forbids: a time above
    /// `i64::MAX`, an id or custom kind name over its length limit.
    InvalidValue,
    /// `invalid_target`: an edit or revoke whose target is not an existing, ordinary
    /// (not an edit or revoke) message of that conversation.
    InvalidTarget,
    /// `not_author`: an edit or revoke by someone other than the target's author.
    NotAuthor,
    /// `client_id_conflict`: the sender already used this client message id in another
    /// conversation.
    ClientIdConflict,
    /// `rate_limited`: too many requests; retry later.
    RateLimited,
    /// `internal`: the server failed; retry later.
    Internal,
    /// `unauthorized`: the token is unknown, or not this user's.
    Unauthorized,
    /// `token_expired`: the token has expired.
    TokenExpired,
    /// `unsupported_version`: the client's protocol version is not spoken here.
    UnsupportedVersion,
    /// `malformed`: a frame that is not valid JSON of a known type, or breaks a validation
    /// rule.
    Malformed,
    /// `protocol`: the first frame was not a hello, or a hello came twice.
    Protocol,
    /// `idle_timeout`: no frame arrived within the idle timeout.
    IdleTimeout,
    /// `slow_consumer`: the connection could not keep up with what the server had to send.
    SlowConsumer,
    /// `shutdown`: the server is shutting down.
    Shutdown,
    /// `unexpected_response`: never sent by a server; the engine's own refusal of a request
    /// the server answered with the wrong kind of response (retried like a transient error).
    UnexpectedResponse,
}

impl ErrorCode {
    /// Every code, for tables and tests.
    pub const ALL: [ErrorCode; 17] = [
        ErrorCode::NotMember,
        ErrorCode::TooLarge,
        ErrorCode::InvalidValue,
        ErrorCode::InvalidTarget,
        ErrorCode::NotAuthor,
        ErrorCode::ClientIdConflict,
        ErrorCode::RateLimited,
        ErrorCode::Internal,
        ErrorCode::Unauthorized,
        ErrorCode::TokenExpired,
        ErrorCode::UnsupportedVersion,
        ErrorCode::Malformed,
        ErrorCode::Protocol,
        ErrorCode::IdleTimeout,
        ErrorCode::SlowConsumer,
        ErrorCode::Shutdown,
        ErrorCode::UnexpectedResponse,
    ];

    /// The wire form.
    pub const fn as_str(self) -> &'static str {
        match self {
            ErrorCode::NotMember => "not_member",
            ErrorCode::TooLarge => "too_large",
            ErrorCode::InvalidValue => "invalid_value",
            ErrorCode::InvalidTarget => "invalid_target",
            ErrorCode::NotAuthor => "not_author",
            ErrorCode::ClientIdConflict => "client_id_conflict",
            ErrorCode::RateLimited => "rate_limited",
            ErrorCode::Internal => "internal",
            ErrorCode::Unauthorized => "unauthorized",
            ErrorCode::TokenExpired => "token_expired",
            ErrorCode::UnsupportedVersion => "unsupported_version",
            ErrorCode::Malformed => "malformed",
            ErrorCode::Protocol => "protocol",
            ErrorCode::IdleTimeout => "idle_timeout",
            ErrorCode::SlowConsumer => "slow_consumer",
            ErrorCode::Shutdown => "shutdown",
            ErrorCode::UnexpectedResponse => "unexpected_response",
        }
    }

    /// The code with this wire form, if any.
    pub fn parse(code: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|c| c.as_str() == code)
    }

    /// Whether a request refused with this code fails for good (the same request can never
    /// succeed) rather than being retried. Only `rate_limited`, `internal` and the engine's
    /// own `unexpected_response` are retried; the connection-level codes end a connection
    /// and are not request refusals.
    pub const fn is_permanent(self) -> bool {
        !matches!(
            self,
            ErrorCode::RateLimited | ErrorCode::Internal | ErrorCode::UnexpectedResponse
        )
    }
}

impl std::fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The server's answer to a [`Request`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Response {
    /// Answer to [`Request::GetMaxSeqs`].
    MaxSeqs {
        /// This page.
        entries: Vec<MaxSeqEntry>,
        /// Whether more pages follow.
        has_more: bool,
        /// The cursor to send as `since` next time: it covers everything this listing run
        /// reports. With several pages the client keeps the first page's (the lowest), so
        /// what changed between pages is listed again next time. Absent (an older server,
        /// or one without cursors): keep the cursor held.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        token: Option<SyncToken>,
        /// `true`: every conversation of the user is listed (no `since`, or one the server
        /// did not know). `false`: only those whose entry may have changed since `since`;
        /// the others are as the client last saw them. Absent on the wire means `true` (an
        /// older server always lists everything), so it is only written when `false`.
        #[serde(default = "listing_is_full", skip_serializing_if = "is_true")]
        full: bool,
    },
    /// Answer to [`Request::Pull`]: one entry per requested range the user may read.
    Pulled {
        /// The ranges.
        ranges: Vec<PulledRange>,
    },
    /// Answer to [`Request::Send`].
    SendAck {
        /// The message's id.
        client_msg_id: ClientMsgId,
        /// Its seq.
        seq: Seq,
        /// The server's time of acceptance.
        server_time: Timestamp,
    },
    /// Answer to [`Request::GetDeletions`], for the conversations the user is a member of.
    Deletions {
        /// One entry per conversation.
        entries: Vec<DeletionsEntry>,
    },
    /// Answer to [`Request::MarkRead`].
    ReadAck {
        /// The conversation.
        conversation: ConversationId,
        /// The server's read seq after the update.
        seq: Seq,
    },
    /// Answer to [`Request::Ping`].
    Pong {
        /// The server's clock.
        server_time: Timestamp,
    },
    /// The request was refused.
    Error(ServerError),
}

/// The default of [`Response::MaxSeqs::full`] for a frame without it.
fn listing_is_full() -> bool {
    true
}

/// Leaves `full: true` (the default) out of the wire form.
fn is_true(full: &bool) -> bool {
    *full
}

/// What the server sends unasked.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Push {
    /// A new message in a conversation the user is a member of (their own included).
    Message(ServerMessage),
    /// The user's read seq moved, on another device or this one.
    ReadSeq {
        /// The conversation.
        conversation: ConversationId,
        /// New read seq.
        seq: Seq,
    },
    /// Seqs were deleted on the server, or the history floor rose.
    Deleted {
        /// The conversation.
        conversation: ConversationId,
        /// Seqs that no longer exist.
        seqs: SeqRanges,
        /// The new floor.
        min_seq: Seq,
    },
    /// The user became a member of a conversation (it was created, or they were added).
    Conversation {
        /// The conversation.
        conversation: ConversationId,
        /// Direct or group.
        kind: ConversationKind,
    },
    /// This device's session was ended by the server (logged in elsewhere, token revoked).
    Kicked {
        /// Why.
        reason: String,
    },
}

/// Who is asking: the identity a transport authenticates with.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Identity {
    /// The user.
    pub user: UserId,
    /// This device.
    pub device: crate::model::DeviceId,
}
