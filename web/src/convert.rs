//! The engine's model as the JavaScript objects of `web/package/index.d.ts`.

use tidemark::{
    ConnectionState, ContentKind, Conversation, ConversationKind, Event, LatestMessage, Message,
    MessageChange, MessageStatus, Seq, SyncState, UserId,
};
use wasm_bindgen::JsValue;

use crate::js::{array, Args, Failure, Obj};

/// Content as text when it is valid UTF-8.
fn text_of(content: &[u8]) -> Option<&str> {
    std::str::from_utf8(content).ok()
}

pub(crate) fn kind(kind: &ContentKind) -> Result<JsValue, Failure> {
    let mut out = Obj::new();
    match kind {
        ContentKind::Text => out.str("type", "text"),
        ContentKind::Image => out.str("type", "image"),
        ContentKind::File => out.str("type", "file"),
        ContentKind::Custom(name) => out.str("type", "custom").str("name", name),
        ContentKind::Edit { target } => out.str("type", "edit").num("target", target.0)?,
        ContentKind::Revoke { target } => out.str("type", "revoke").num("target", target.0)?,
    };
    Ok(out.into())
}

/// A `MessageKind` from JavaScript.
pub(crate) fn kind_from(args: &Args) -> Result<ContentKind, Failure> {
    let kind = match args.string("type")?.as_str() {
        "text" => ContentKind::Text,
        "image" => ContentKind::Image,
        "file" => ContentKind::File,
        "custom" => ContentKind::Custom(args.id("name")?),
        "edit" => ContentKind::Edit {
            target: args.seq("target")?,
        },
        "revoke" => ContentKind::Revoke {
            target: args.seq("target")?,
        },
        other => {
            return Err(Failure::bad_argument(format!(
                "unknown message kind {other:?}"
            )))
        }
    };
    Ok(kind)
}

pub(crate) fn message(message: &Message, me: &UserId) -> Result<JsValue, Failure> {
    let (status, failure) = match &message.status {
        MessageStatus::Pending => ("pending", None),
        MessageStatus::Sent => ("sent", None),
        MessageStatus::Failed { reason } => ("failed", Some(reason.as_str())),
    };
    let mut out = Obj::new();
    out.str("conversationId", &message.conversation.0)
        .opt_num("seq", message.seq.map(|s| s.0))?
        .str("clientMsgId", &message.client_msg_id.0)
        .str("sender", &message.sender.0)
        .set("kind", kind(&message.kind)?)
        .opt_str("text", text_of(&message.content))
        .bytes("content", &message.content)
        .num("createdAt", message.created_at.0)?
        .opt_num("serverTime", message.server_time.map(|t| t.0))?
        .str("status", status)
        .opt_str("failure", failure)
        .bool("edited", message.edit_seq.is_some())
        .bool("revoked", message.revoked)
        .bool("own", &message.sender == me);
    Ok(out.into())
}

pub(crate) fn messages(list: &[Message], me: &UserId) -> Result<JsValue, Failure> {
    array(list, |m| message(m, me))
}

fn latest(latest: &LatestMessage) -> Result<JsValue, Failure> {
    let mut out = Obj::new();
    out.opt_num("seq", latest.seq.map(|s| s.0))?
        .str("clientMsgId", &latest.client_msg_id.0)
        .str("sender", &latest.sender.0)
        .set("kind", kind(&latest.kind)?)
        .opt_str("preview", preview_text(&latest.preview))
        .num("time", latest.time.0)?;
    Ok(out.into())
}

/// A preview is cut at a byte count, maybe inside a character: keep the valid prefix.
fn preview_text(preview: &[u8]) -> Option<&str> {
    match std::str::from_utf8(preview) {
        Ok(text) => Some(text),
        // Cut inside a character at the end (at most 3 bytes off): the part before it.
        Err(e) if e.error_len().is_none() => std::str::from_utf8(&preview[..e.valid_up_to()]).ok(),
        Err(_) => None,
    }
}

pub(crate) fn conversation(conversation: &Conversation) -> Result<JsValue, Failure> {
    let kind = match conversation.kind {
        ConversationKind::Direct => "direct",
        ConversationKind::Group => "group",
    };
    let mut out = Obj::new();
    out.str("id", &conversation.id.0)
        .str("kind", kind)
        .num("unread", conversation.unread)?
        .num("readSeq", conversation.read_seq.0)?
        .num("maxSeq", conversation.server_max_seq.0)?
        .num("minSeq", conversation.server_min_seq.0)?
        .set(
            "latest",
            match &conversation.latest {
                Some(l) => latest(l)?,
                None => JsValue::NULL,
            },
        )
        .num("lastActivity", conversation.last_activity.0)?;
    Ok(out.into())
}

pub(crate) fn connection_state(state: ConnectionState) -> &'static str {
    match state {
        ConnectionState::Disconnected => "disconnected",
        ConnectionState::Connecting => "connecting",
        ConnectionState::Connected => "connected",
    }
}

pub(crate) fn sync_state(state: SyncState) -> &'static str {
    match state {
        SyncState::Offline => "offline",
        SyncState::Syncing => "syncing",
        SyncState::Synced => "synced",
        SyncState::StoreUnusable { .. } => "storeUnusable",
    }
}

/// An event as `[name, payload]`, or `None` for events the web API does not carry
/// (`HistoryLoaded` answers `loadHistory` itself; `MessageContained` is for logs).
pub(crate) fn event(
    event: &Event,
    me: &UserId,
) -> Result<Option<(&'static str, JsValue)>, Failure> {
    let mut out = Obj::new();
    let name = match event {
        Event::MessagesReceived {
            conversation,
            messages: list,
        } => {
            out.str("conversationId", &conversation.0)
                .set("messages", messages(list, me)?);
            "messages"
        }
        Event::MessageUpdated {
            conversation,
            seq,
            change,
        } => {
            let mut what = Obj::new();
            match change {
                MessageChange::Edited { edit_seq, content } => {
                    what.str("type", "edited")
                        .num("editSeq", edit_seq.0)?
                        .opt_str("text", text_of(content));
                }
                MessageChange::Revoked => {
                    what.str("type", "revoked");
                }
            }
            out.str("conversationId", &conversation.0)
                .num("seq", seq.0)?
                .set("change", what);
            "messageUpdated"
        }
        Event::MessagesDeleted { conversation, seqs } => {
            let ranges = array(seqs.ranges(), |r| {
                array([r.start, r.end], |s: Seq| crate::js::number(s.0))
            })?;
            out.str("conversationId", &conversation.0)
                .set("seqs", ranges);
            "messagesDeleted"
        }
        Event::MessageSent {
            conversation,
            client_msg_id,
            seq,
        } => {
            out.str("conversationId", &conversation.0)
                .str("clientMsgId", &client_msg_id.0)
                .num("seq", seq.0)?;
            "messageSent"
        }
        Event::SendFailed {
            conversation,
            client_msg_id,
            error,
        } => {
            out.str("conversationId", &conversation.0)
                .str("clientMsgId", &client_msg_id.0)
                .str("code", &error.code)
                .str("reason", &error.message);
            "sendFailed"
        }
        Event::ConversationsChanged { conversations } => {
            out.set(
                "conversationIds",
                array(conversations, |c| Ok(JsValue::from_str(&c.0)))?,
            );
            "conversationsChanged"
        }
        Event::TotalUnreadChanged { total } => {
            out.num("total", *total)?;
            "totalUnreadChanged"
        }
        Event::SyncStarted => "syncStarted",
        Event::SyncProgress { done, total } => {
            out.num("done", *done)?.num("total", *total)?;
            "syncProgress"
        }
        Event::SyncFinished => "syncFinished",
        Event::ConnectionChanged { state } => {
            out.str("state", connection_state(*state));
            "connectionChanged"
        }
        Event::Kicked { reason } => {
            out.str("reason", reason);
            "kicked"
        }
        Event::StorageFailed { error } => {
            out.str("error", error);
            "storageFailed"
        }
        Event::StoreUnusable { error, damaged } => {
            out.str("error", error).bool("damaged", *damaged);
            "storeUnusable"
        }
        _ => return Ok(None),
    };
    Ok(Some((name, out.into())))
}
