//! Raw requests to the simulation's server core, from a client that does not follow the
//! protocol (a hostile member, or a buggy one), and the rules a correct server applies to
//! them.
//!
//! The model's hostile transitions ([`super::Transition::Hostile`]) and the `server_sync`
//! fuzz target both send through [`RawClient`] and judge every answer with [`judge_send`]
//! and [`judge_other`]: a server that accepts what it must refuse fails the run, whatever
//! the devices make of it afterwards. The rules are the promises issue 9 asks the server to
//! make:
//!
//! - a resend of a stored (sender, client id) in the same conversation is answered with its
//!   original ack, before any other rule;
//! - a client id the sender used in another conversation is refused;
//! - a sender who is not a member is refused;
//! - `created_at` above `i64::MAX` (what not every store can hold) is refused;
//! - an edit or revoke whose target is not an existing message of the conversation (seq 0,
//!   beyond the max, deleted, below the floor), is itself an edit or revoke, or was sent by
//!   someone else, is refused;
//! - content over the server's limit is refused;
//! - a pull of a conversation the user is not a member of is refused.
//!
//! What is judged is only acceptance: a refusal of something valid is not a violation
//! (the model's fault injection may refuse any fresh send).

use tidemark_engine::{
    ClientMsgId, ContentKind, ConversationId, DeviceId, Request, RequestId, Response, Seq,
    ServerMessage, Timestamp, UserId,
};

use crate::server::{ConnId, ServerOutput, ServerStore, ServerStoreError};
use crate::sim::Sim;
use crate::Backend;

/// Connection numbers of raw clients start here, far above those the simulation gives its
/// devices (counted from 0): the simulation drops what the server sends to a connection it
/// does not own, so pushes to a raw client cost nothing.
pub const RAW_CONN_BASE: u64 = 1 << 48;

/// The largest time or seq a correct server accepts: what every store (SQLite's signed
/// 64-bit integers) can hold.
pub const MAX_STORABLE: u64 = i64::MAX as u64;

/// A connection of one user to the simulation's server that sends whatever it is told.
#[derive(Clone, Debug)]
pub struct RawClient {
    /// Its user.
    pub user: UserId,
    conn: ConnId,
    next_id: u64,
}

impl RawClient {
    /// Connects `user` (who must exist on the server) as raw client number `n` (its device is
    /// `raw-n`).
    pub fn connect<F: Backend>(
        sim: &mut Sim<F>,
        n: u64,
        user: impl Into<UserId>,
    ) -> Result<Self, String> {
        let user = user.into();
        let conn = ConnId(RAW_CONN_BASE + n);
        sim.server_mut()
            .connect(
                conn,
                user.clone(),
                DeviceId::from(format!("raw-{n}").as_str()),
            )
            .map_err(|e| format!("connecting raw client {n} ({user}): {e}"))?;
        Ok(Self {
            user,
            conn,
            next_id: 0,
        })
    }

    /// Sends `request` at the simulation's current time and returns the server's answer. The
    /// pushes it causes are routed to the devices at once (their links delay them as usual).
    pub async fn request<F: Backend>(
        &mut self,
        sim: &mut Sim<F>,
        request: Request,
    ) -> Result<Response, String> {
        // Every `Sim` call routes the server's outputs before it returns, so the queue is
        // empty here and the answer is the first output (the core queues it before any push
        // it causes).
        if sim.server().has_output() {
            sim.drive_for(0).await.map_err(|e| e.to_string())?;
        }
        self.next_id += 1;
        let id = RequestId(self.next_id);
        let now = sim.now();
        sim.server_mut().handle_request(now, self.conn, id, request);
        let answer = match sim.server_mut().poll_output() {
            Some(ServerOutput::Respond {
                conn,
                id: got,
                response,
            }) if conn == self.conn && got == id => response,
            other => return Err(format!("raw request {id:?}: the first output is {other:?}")),
        };
        // Routes the pushes (a zero-length drive handles only what is due now).
        sim.drive_for(0).await.map_err(|e| e.to_string())?;
        Ok(answer)
    }
}

/// What a correct server does with a send, judged before it is made.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SendVerdict {
    /// Stores it under the next seq (or refuses it for a reason the rules allow, such as an
    /// injected fault).
    Accept,
    /// A resend: answers with the original ack (this seq) and stores nothing.
    Resend(Seq),
    /// Must refuse it, for this reason.
    Refuse(String),
}

/// Judges a send of `sender` before it reaches the server. See the module docs.
pub fn send_verdict<St: ServerStore>(
    store: &St,
    max_content_bytes: usize,
    sender: &UserId,
    request: &Request,
) -> Result<SendVerdict, ServerStoreError> {
    let Request::Send {
        conversation,
        client_msg_id,
        kind,
        content,
        created_at,
    } = request
    else {
        return Ok(SendVerdict::Accept);
    };
    if let Some(record) = store.sent_record(sender, client_msg_id)? {
        return Ok(if &record.conversation == conversation {
            SendVerdict::Resend(record.seq)
        } else {
            SendVerdict::Refuse(format!(
                "client id {client_msg_id} of {sender} is taken in {} (seq {})",
                record.conversation, record.seq.0
            ))
        });
    }
    let refuse = |why: String| Ok(SendVerdict::Refuse(why));
    if store.conversation(conversation)?.is_none() || !store.is_member(conversation, sender)? {
        return refuse(format!("{sender} is not a member of {conversation}"));
    }
    if created_at.0 > MAX_STORABLE {
        return refuse(format!("created_at {} is above i64::MAX", created_at.0));
    }
    if content.len() > max_content_bytes {
        return refuse(format!(
            "content of {} bytes is over the limit",
            content.len()
        ));
    }
    if let Some(target) = kind.change_target() {
        match store.message(conversation, target)? {
            None => {
                return refuse(format!(
                    "{kind:?}: seq {} is no existing message of {conversation}",
                    target.0
                ))
            }
            Some(t) if t.kind.change_target().is_some() => {
                return refuse(format!(
                    "{kind:?}: seq {} is itself an edit or revoke",
                    target.0
                ))
            }
            Some(t) if &t.sender != sender => {
                return refuse(format!(
                    "{kind:?} by {sender} of seq {}, which {} sent",
                    target.0, t.sender
                ))
            }
            Some(_) => {}
        }
    }
    Ok(SendVerdict::Accept)
}

/// What a send did, as the caller needs it after [`judge_send`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SendOutcome {
    /// The message the server stored for it, if it stored one.
    pub stored: Option<ServerMessage>,
    /// Every rule the server broke (empty for a correct server).
    pub violations: Vec<String>,
}

/// Judges the server's `answer` to a send judged `verdict` beforehand, given the
/// conversation's max seq before the send (`max_before`) and the store after it.
pub fn judge_send<St: ServerStore>(
    store: &St,
    sender: &UserId,
    request: &Request,
    verdict: &SendVerdict,
    max_before: Seq,
    answer: &Response,
) -> Result<SendOutcome, ServerStoreError> {
    let Request::Send {
        conversation,
        client_msg_id,
        kind,
        content,
        ..
    } = request
    else {
        return Ok(SendOutcome::default());
    };
    let mut out = SendOutcome::default();
    let max_after = store
        .conversation(conversation)?
        .map_or(Seq(0), |c| c.max_seq);
    if max_after > max_before {
        out.stored = store.message(conversation, max_after)?;
        if max_after != max_before.next() {
            out.violations.push(format!(
                "one send moved {conversation}'s max seq from {} to {}",
                max_before.0, max_after.0
            ));
        }
    }
    let what = format!("send {client_msg_id} of {sender} to {conversation} ({kind:?})");
    match (verdict, answer) {
        (SendVerdict::Refuse(why), Response::SendAck { seq, .. }) => out.violations.push(
            format!("{what}: acked at seq {}, but must be refused: {why}", seq.0),
        ),
        (SendVerdict::Refuse(why), _) if out.stored.is_some() => out.violations.push(format!(
            "{what}: refused, but stored at seq {} (it must be refused: {why})",
            max_after.0
        )),
        (SendVerdict::Resend(original), Response::SendAck { seq, .. }) if seq != original => {
            out.violations.push(format!(
                "{what}: a resend acked at seq {}, its original seq is {}",
                seq.0, original.0
            ))
        }
        (SendVerdict::Resend(original), Response::Error(e)) => out.violations.push(format!(
            "{what}: a resend of the message at seq {} refused ({}): a resend gets its original ack",
            original.0, e.code
        )),
        (SendVerdict::Resend(_), _) if out.stored.is_some() => out
            .violations
            .push(format!("{what}: a resend stored again at seq {}", max_after.0)),
        (SendVerdict::Accept, Response::SendAck { seq, .. }) => match &out.stored {
            Some(m)
                if m.seq == *seq
                    && &m.sender == sender
                    && &m.client_msg_id == client_msg_id
                    && &m.kind == kind
                    && &m.content == content => {}
            _ => out.violations.push(format!(
                "{what}: acked at seq {}, but the server stored {:?} there",
                seq.0,
                store.message(conversation, *seq)?
            )),
        },
        (SendVerdict::Accept, _) if out.stored.is_some() => out.violations.push(format!(
            "{what}: refused, but stored at seq {}",
            max_after.0
        )),
        _ => {}
    }
    if let Response::SendAck {
        client_msg_id: acked,
        ..
    } = answer
    {
        if acked != client_msg_id {
            out.violations
                .push(format!("{what}: the ack names client id {acked}"));
        }
    }
    Ok(out)
}

/// Judges the answer to a request other than a send: a pull of a conversation the user is
/// not a member of must be refused, and no answer carries a seq or time above
/// [`MAX_STORABLE`]. Returns the rules broken.
pub fn judge_other<St: ServerStore>(
    store: &St,
    user: &UserId,
    request: &Request,
    answer: &Response,
) -> Result<Vec<String>, ServerStoreError> {
    let mut out = Vec::new();
    if let (Request::Pull { ranges, .. }, Response::Pulled { .. }) = (request, answer) {
        for r in ranges {
            if !store.is_member(&r.conversation, user)? {
                out.push(format!(
                    "a pull by {user} of {}, which {user} is not a member of, was answered",
                    r.conversation
                ));
            }
        }
    }
    match answer {
        Response::ReadAck { seq, .. } if seq.0 > MAX_STORABLE => {
            out.push(format!("a read ack at seq {} above i64::MAX", seq.0));
        }
        Response::Pulled { ranges } => {
            for r in ranges {
                if r.max_seq.0 > MAX_STORABLE || r.to.0 > MAX_STORABLE {
                    out.push(format!(
                        "a pulled range of {} up to {} (max {}), above i64::MAX",
                        r.conversation, r.to.0, r.max_seq.0
                    ));
                }
            }
        }
        _ => {}
    }
    Ok(out)
}

/// Every message in the server's store that breaks a promise about stored values: a seq,
/// `created_at` or server time above [`MAX_STORABLE`], or an edit or revoke whose target is
/// not below it. (Who may change what is judged when the change is sent, by
/// [`send_verdict`]: its target may be deleted later.)
pub fn stored_value_violations<St: ServerStore>(
    store: &St,
    conversations: &[ConversationId],
) -> Result<Vec<String>, ServerStoreError> {
    let mut out = Vec::new();
    for id in conversations {
        let Some(info) = store.conversation(id)? else {
            continue;
        };
        if info.max_seq.0 > MAX_STORABLE {
            out.push(format!("{id}: max seq {} above i64::MAX", info.max_seq.0));
        }
        for m in store.messages(id, Seq(1), info.max_seq, usize::MAX)? {
            if m.created_at.0 > MAX_STORABLE || m.server_time.0 > MAX_STORABLE {
                out.push(format!(
                    "{id} seq {}: created_at {} / server time {} above i64::MAX",
                    m.seq.0, m.created_at.0, m.server_time.0
                ));
            }
            if m.kind.change_target().is_some_and(|t| t >= m.seq) {
                out.push(format!(
                    "{id} seq {}: {:?} does not change an earlier message",
                    m.seq.0, m.kind
                ));
            }
        }
    }
    Ok(out)
}

/// A send request (a convenience for the callers).
pub fn send_request(
    conversation: impl Into<ConversationId>,
    client_msg_id: impl Into<ClientMsgId>,
    kind: ContentKind,
    content: Vec<u8>,
    created_at: Timestamp,
) -> Request {
    Request::Send {
        conversation: conversation.into(),
        client_msg_id: client_msg_id.into(),
        kind,
        content,
        created_at,
    }
}
