//! The wire protocol: JSON frames over WebSocket text messages.
//!
//! A connection starts with a handshake: the client's first frame is [`ClientFrame::Hello`]
//! (protocol version, user, device, token); the server answers [`ServerFrame::Welcome`] or
//! [`ServerFrame::Error`] and closes. After it, the client sends [`ClientFrame::Request`]s and
//! the server sends [`ServerFrame::Response`]s (exactly one per request, matched by id) and
//! [`ServerFrame::Push`]es. A frame the server cannot accept gets a [`ServerFrame::Error`] and,
//! when `fatal`, the connection is closed; other connections are never affected.
//!
//! The version is negotiated once, in the handshake: every later frame is in that version.
//! Frames are objects tagged by `"type"`; unknown fields and unknown types are refused, so a
//! peer speaking a newer protocol fails loudly instead of being half understood.
//!
//! ```text
//! → {"type":"hello","version":1,"user":"alice","device":"phone","token":"…"}
//! ← {"type":"welcome","version":1,"server_time":1700000000000}
//! → {"type":"request","id":1,"request":{"GetMaxSeqs":{"after":null,"limit":1000}}}
//! ← {"type":"response","id":1,"response":{"MaxSeqs":{"entries":[…],"has_more":false}}}
//! ← {"type":"push","push":{"Message":{…}}}
//! ```
//!
//! Message content travels as standard base64 (the engine's serde form for content bytes).
//!
//! `docs/protocol.md` defines v1 frame by frame; `tests/golden_frames.rs` holds the document
//! and this codec to the same golden frames, so a change of wire form shows as a snapshot diff.
//!
//! [`decode_client`] and [`decode_server`] check the frame's size before parsing (so a
//! frame's allocations are bounded by [`Limits`]) and validate what serde cannot: id lengths,
//! the number of ranges or conversations in one request, seq ranges, the token's length.

use serde::{Deserialize, Serialize};
use tidemark_engine::{
    ContentKind, ConversationId, DeviceId, Incoming, Push, Request, RequestId, Response,
    ServerMessage, SyncToken, Timestamp, TransportError, UserId,
};

/// The protocol version this crate speaks.
pub const PROTOCOL_VERSION: u32 = 1;

/// What a client sends.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum ClientFrame {
    /// The handshake; the first frame of every connection and only the first.
    Hello {
        /// The protocol version the client speaks.
        version: u32,
        /// Who connects.
        user: UserId,
        /// From which device.
        device: DeviceId,
        /// The user's access token.
        token: String,
    },
    /// A request of the engine.
    Request {
        /// Matches the response.
        id: RequestId,
        /// The request.
        request: Request,
    },
}

/// What the server sends.
///
/// `Deserialize` is written by hand (`server_frame_de.rs`) to read a pull reply without
/// buffering it; it accepts exactly what the derive would.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum ServerFrame {
    /// The handshake was accepted.
    Welcome {
        /// The protocol version of the connection.
        version: u32,
        /// The server's clock.
        server_time: Timestamp,
    },
    /// The answer to request `id`.
    Response {
        /// The request's id.
        id: RequestId,
        /// The answer.
        response: Response,
    },
    /// An unasked message.
    Push {
        /// The message.
        push: Push,
    },
    /// A connection-level refusal: a refused handshake, a malformed frame, a broken limit.
    /// Refusals of one request are [`Response::Error`]s instead.
    Error {
        /// Machine-readable code (see [`error_code`]).
        code: String,
        /// Human-readable detail.
        message: String,
        /// The server closes the connection after a fatal error.
        fatal: bool,
    },
}

/// The codes of [`ServerFrame::Error`]: the wire forms of the connection-level
/// [`ErrorCode`](tidemark_engine::protocol::ErrorCode)s (the one set of codes, which also
/// holds the refusals of single requests).
pub mod error_code {
    use tidemark_engine::protocol::ErrorCode;

    /// The token is unknown, or not this user's.
    pub const UNAUTHORIZED: &str = ErrorCode::Unauthorized.as_str();
    /// The token has expired.
    pub const TOKEN_EXPIRED: &str = ErrorCode::TokenExpired.as_str();
    /// The client's protocol version is not spoken here.
    pub const UNSUPPORTED_VERSION: &str = ErrorCode::UnsupportedVersion.as_str();
    /// The frame is not valid JSON of a known frame type, or breaks a validation rule.
    pub const MALFORMED: &str = ErrorCode::Malformed.as_str();
    /// The frame is larger than the server accepts.
    pub const TOO_LARGE: &str = ErrorCode::TooLarge.as_str();
    /// The first frame was not a hello, or a hello came twice.
    pub const PROTOCOL: &str = ErrorCode::Protocol.as_str();
    /// No frame arrived within the idle timeout.
    pub const IDLE: &str = ErrorCode::IdleTimeout.as_str();
    /// The connection could not keep up with what the server had to send it.
    pub const SLOW_CONSUMER: &str = ErrorCode::SlowConsumer.as_str();
    /// The server is shutting down.
    pub const SHUTDOWN: &str = ErrorCode::Shutdown.as_str();
    /// The server failed; try again later.
    pub const INTERNAL: &str = ErrorCode::Internal.as_str();
}

/// Sizes a decoder accepts.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Largest frame, in bytes of JSON text.
    pub max_frame_bytes: usize,
    /// Longest user, device, conversation or client message id, in bytes.
    pub max_id_bytes: usize,
    /// Longest token, in bytes.
    pub max_token_bytes: usize,
    /// Most ranges in one pull, conversations in one deletions request, entries in one
    /// max-seq page or messages in one pulled range.
    pub max_items: usize,
}

impl Limits {
    /// What a server accepts from clients: requests are small (a send carries one message).
    pub fn client_frames() -> Self {
        Self {
            max_frame_bytes: 256 * 1024,
            max_id_bytes: 128,
            max_token_bytes: 256,
            max_items: 1_000,
        }
    }

    /// What a client accepts from a server: a pull response carries many messages.
    pub fn server_frames() -> Self {
        Self {
            max_frame_bytes: 64 * 1024 * 1024,
            max_id_bytes: 128,
            max_token_bytes: 256,
            max_items: 100_000,
        }
    }
}

/// Upper bounds of encoded sizes, cheap enough to compute per message: the server caps a
/// pull reply by bytes with them, and checks at start that its limits fit the frame limits.
///
/// Every string is counted as serde_json writes it (quotes, and escapes of up to 6 bytes
/// for a control character), content as its base64 length, numbers at 20 digits.
pub mod size {
    use tidemark_engine::{ContentKind, ConversationId, ServerMessage};

    /// The JSON around a response's payload: `{"type":"response","id":…,"response":…}`.
    pub const RESPONSE_OVERHEAD: usize = 128;

    /// One encoded seq range in a [`tidemark_engine::SeqRanges`] (`{"start":…,"end":…}`
    /// and its comma).
    pub const SEQ_RANGE: usize = 64;

    /// A string as JSON, its quotes included.
    pub fn json_str(s: &str) -> usize {
        2 + s
            .bytes()
            .map(|b| match b {
                b'"' | b'\\' => 2,
                0..=0x1F => 6,
                _ => 1,
            })
            .sum::<usize>()
    }

    /// Standard base64 of `n` bytes, padded.
    pub fn base64(n: usize) -> usize {
        n.div_ceil(3).saturating_mul(4)
    }

    /// A content kind as JSON.
    pub fn kind(kind: &ContentKind) -> usize {
        match kind {
            // {"Custom":"…"}
            ContentKind::Custom(name) => 12 + json_str(name),
            // "Image", {"Revoke":{"target":…}} at most.
            _ => 48,
        }
    }

    /// One message in a pull reply or push, its separating comma included.
    pub fn message(m: &ServerMessage) -> usize {
        message_parts(
            &m.conversation.0,
            &m.client_msg_id.0,
            &m.sender.0,
            &m.kind,
            m.content.len(),
        )
    }

    /// [`message`] from its parts: for the largest message a configuration allows.
    pub fn message_parts(
        conversation: &str,
        client_msg_id: &str,
        sender: &str,
        kind: &ContentKind,
        content_len: usize,
    ) -> usize {
        // Keys, braces, colons and commas: under 120 bytes; three numbers of 20 digits.
        let fixed = 120 + 3 * 20;
        fixed
            + json_str(conversation)
            + json_str(client_msg_id)
            + json_str(sender)
            + self::kind(kind)
            + base64(content_len)
    }

    /// One pulled range without its messages and missing seqs: the conversation, four
    /// numbers, keys and brackets.
    pub fn pulled_range(conversation: &ConversationId) -> usize {
        // Keys and punctuation: under 100 bytes.
        100 + 4 * 20 + json_str(&conversation.0)
    }
}

/// Why a frame was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum FrameError {
    /// Larger than [`Limits::max_frame_bytes`]; not parsed.
    #[error("frame of {size} bytes exceeds the limit of {limit}")]
    TooLarge {
        /// The frame's size.
        size: usize,
        /// The limit.
        limit: usize,
    },
    /// Not JSON, not a known frame, or a field of the wrong type.
    #[error("malformed frame: {0}")]
    Malformed(String),
    /// Well-formed, but a value breaks a rule (an empty id, too many ranges, `from > to`).
    #[error("invalid frame: {0}")]
    Invalid(String),
}

impl FrameError {
    /// The [`error_code`] a server answers this with.
    pub fn code(&self) -> &'static str {
        match self {
            FrameError::TooLarge { .. } => error_code::TOO_LARGE,
            FrameError::Malformed(_) | FrameError::Invalid(_) => error_code::MALFORMED,
        }
    }
}

/// Encodes a frame as JSON text.
pub fn encode<F: Serialize>(frame: &F) -> String {
    // Frames are plain data (strings, integers, sequences, maps with string keys): serde_json
    // cannot fail on them, and a failure would be a bug in this module's types.
    serde_json::to_string(frame).unwrap_or_else(|err| {
        unreachable!("wire frames always serialize: {err}");
    })
}

/// Decodes and validates a frame a client sent.
pub fn decode_client(bytes: &[u8], limits: &Limits) -> Result<ClientFrame, FrameError> {
    let frame: ClientFrame = parse(bytes, limits)?;
    validate_client(&frame, limits)?;
    Ok(frame)
}

/// Decodes and validates a frame a server sent.
pub fn decode_server(bytes: &[u8], limits: &Limits) -> Result<ServerFrame, FrameError> {
    let frame: ServerFrame = parse(bytes, limits)?;
    validate_server(&frame, limits)?;
    Ok(frame)
}

fn parse<'a, F: Deserialize<'a>>(bytes: &'a [u8], limits: &Limits) -> Result<F, FrameError> {
    if bytes.len() > limits.max_frame_bytes {
        return Err(FrameError::TooLarge {
            size: bytes.len(),
            limit: limits.max_frame_bytes,
        });
    }
    serde_json::from_slice(bytes).map_err(|err| FrameError::Malformed(err.to_string()))
}

/// Checks one string id.
fn check_id(what: &str, id: &str, limits: &Limits) -> Result<(), FrameError> {
    if id.is_empty() {
        return Err(FrameError::Invalid(format!("empty {what}")));
    }
    if id.len() > limits.max_id_bytes {
        return Err(FrameError::Invalid(format!(
            "{what} of {} bytes exceeds {}",
            id.len(),
            limits.max_id_bytes
        )));
    }
    Ok(())
}

fn check_count(what: &str, n: usize, limits: &Limits) -> Result<(), FrameError> {
    if n > limits.max_items {
        return Err(FrameError::Invalid(format!(
            "{n} {what} exceed the limit of {}",
            limits.max_items
        )));
    }
    Ok(())
}

fn check_conversation(id: &ConversationId, limits: &Limits) -> Result<(), FrameError> {
    check_id("conversation id", &id.0, limits)
}

fn check_message(message: &ServerMessage, limits: &Limits) -> Result<(), FrameError> {
    check_conversation(&message.conversation, limits)?;
    check_id("sender", &message.sender.0, limits)?;
    check_id("client message id", &message.client_msg_id.0, limits)
}

fn validate_client(frame: &ClientFrame, limits: &Limits) -> Result<(), FrameError> {
    match frame {
        ClientFrame::Hello {
            user,
            device,
            token,
            ..
        } => {
            check_id("user id", &user.0, limits)?;
            check_id("device id", &device.0, limits)?;
            if token.len() > limits.max_token_bytes {
                return Err(FrameError::Invalid(format!(
                    "token of {} bytes exceeds {}",
                    token.len(),
                    limits.max_token_bytes
                )));
            }
            Ok(())
        }
        ClientFrame::Request { request, .. } => validate_request(request, limits),
    }
}

/// Checks a request's values.
pub fn validate_request(request: &Request, limits: &Limits) -> Result<(), FrameError> {
    match request {
        Request::GetMaxSeqs {
            after,
            limit,
            since,
        } => {
            if let Some(after) = after {
                check_conversation(after, limits)?;
            }
            if let Some(since) = since {
                check_sync_token(since)?;
            }
            if *limit == 0 {
                return Err(FrameError::Invalid("max-seq page limit of 0".into()));
            }
            Ok(())
        }
        Request::Pull { ranges, .. } => {
            check_count("pull ranges", ranges.len(), limits)?;
            for range in ranges {
                check_conversation(&range.conversation, limits)?;
                if range.from > range.to {
                    return Err(FrameError::Invalid(format!(
                        "pull range {}..={} of {} is reversed",
                        range.from.0, range.to.0, range.conversation
                    )));
                }
            }
            Ok(())
        }
        Request::Send {
            conversation,
            client_msg_id,
            kind,
            ..
        } => {
            check_conversation(conversation, limits)?;
            check_id("client message id", &client_msg_id.0, limits)?;
            // A kind name is an identifier, bounded like one: a name repeated in every
            // message must not make a conversation's replies huge.
            if let ContentKind::Custom(name) = kind {
                check_id("custom kind name", name, limits)?;
            }
            Ok(())
        }
        Request::GetDeletions { conversations } => {
            check_count("conversations", conversations.len(), limits)?;
            conversations
                .iter()
                .try_for_each(|c| check_conversation(c, limits))
        }
        Request::MarkRead { conversation, .. } => check_conversation(conversation, limits),
        Request::Ping => Ok(()),
    }
}

/// A sync token longer than [`SyncToken::MAX_BYTES`] is malformed. Its content is the
/// server's business: one it cannot read is answered with the full listing, not refused.
fn check_sync_token(token: &SyncToken) -> Result<(), FrameError> {
    if token.fits() {
        Ok(())
    } else {
        Err(FrameError::Invalid(format!(
            "sync token of {} bytes exceeds {}",
            token.as_str().len(),
            SyncToken::MAX_BYTES
        )))
    }
}

fn validate_server(frame: &ServerFrame, limits: &Limits) -> Result<(), FrameError> {
    match frame {
        ServerFrame::Welcome { .. } | ServerFrame::Error { .. } => Ok(()),
        ServerFrame::Response { response, .. } => match response {
            Response::MaxSeqs { entries, token, .. } => {
                check_count("max-seq entries", entries.len(), limits)?;
                if let Some(token) = token {
                    check_sync_token(token)?;
                }
                entries
                    .iter()
                    .try_for_each(|e| check_conversation(&e.conversation, limits))
            }
            Response::Pulled { ranges } => {
                check_count("pulled ranges", ranges.len(), limits)?;
                for range in ranges {
                    check_conversation(&range.conversation, limits)?;
                    if range.from > range.to {
                        return Err(FrameError::Invalid("a pulled range is reversed".into()));
                    }
                    check_count("pulled messages", range.messages.len(), limits)?;
                    range
                        .messages
                        .iter()
                        .try_for_each(|m| check_message(m, limits))?;
                }
                Ok(())
            }
            Response::Deletions { entries } => {
                check_count("deletion entries", entries.len(), limits)?;
                entries
                    .iter()
                    .try_for_each(|e| check_conversation(&e.conversation, limits))
            }
            Response::SendAck { client_msg_id, .. } => {
                check_id("client message id", &client_msg_id.0, limits)
            }
            Response::ReadAck { conversation, .. } => check_conversation(conversation, limits),
            Response::Pong { .. } | Response::Error(_) => Ok(()),
        },
        ServerFrame::Push { push } => match push {
            Push::Message(message) => check_message(message, limits),
            Push::ReadSeq { conversation, .. }
            | Push::Deleted { conversation, .. }
            | Push::Conversation { conversation, .. } => check_conversation(conversation, limits),
            Push::Kicked { .. } => Ok(()),
        },
    }
}

/// A hello for `user` on `device`.
pub fn hello(user: &UserId, device: &DeviceId, token: &str) -> ClientFrame {
    ClientFrame::Hello {
        version: PROTOCOL_VERSION,
        user: user.clone(),
        device: device.clone(),
        token: token.to_owned(),
    }
}

/// What a server frame received after the handshake means to the engine: a response or a
/// push, or an error that ends the connection (a second welcome, a connection-level error).
pub fn incoming(frame: ServerFrame) -> Result<Incoming, TransportError> {
    match frame {
        ServerFrame::Response { id, response } => Ok(Incoming::Response(id, response)),
        ServerFrame::Push { push } => Ok(Incoming::Push(push)),
        ServerFrame::Welcome { .. } => Err(TransportError::Protocol(
            "a welcome after the handshake".into(),
        )),
        // Even a non-fatal error means the server dropped one of our frames, whose request
        // would then never be answered: starting over is the only safe reaction.
        ServerFrame::Error { code, message, .. } => {
            Err(TransportError::Connection(error_text(&code, &message)))
        }
    }
}

/// How a server's error frame reads inside a [`TransportError`]: `"<code>: <message>"`, so
/// that [`refusal_code`] can read the code back.
pub fn error_text(code: &str, message: &str) -> String {
    format!("{code}: {message}")
}

/// The error code inside a [`TransportError`] made from a server's
/// [`ServerFrame::Error`]: a refused handshake ([`TransportError::Refused`], e.g.
/// [`error_code::UNAUTHORIZED`], [`error_code::TOKEN_EXPIRED`],
/// [`error_code::UNSUPPORTED_VERSION`]) or an error that ended a connection
/// ([`TransportError::Connection`], e.g. [`error_code::SHUTDOWN`]). `None` for errors that
/// did not come from the server.
pub fn refusal_code(err: &TransportError) -> Option<&str> {
    let text = match err {
        TransportError::Refused(text) | TransportError::Connection(text) => text,
        _ => return None,
    };
    let (code, _) = text.split_once(": ")?;
    // Errors of the client transports that did not come from the server never start with a
    // bare snake_case word and a colon; the server's codes always do.
    let is_code = !code.is_empty() && code.bytes().all(|b| b.is_ascii_lowercase() || b == b'_');
    is_code.then_some(code)
}

mod server_frame_de;

#[cfg(test)]
mod tests;
