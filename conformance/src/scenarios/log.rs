//! [`ScenarioLog`]: a scenario's event log in the form its insta snapshot shows.
//!
//! One line per event, in delivery order: `<ms since start>ms d<device>/<process> <event>`.
//! Message contents are shown as text, client ids of sends made through the simulation as
//! `s1`, `s2`, ... (in the order of [`Sim::sends`]), so a reader can follow the story. Long
//! lists are shortened where the length says all (a page of ten thousand conversation ids), and
//! a burst of more than [`ScenarioLog::BURST`] `MessagesReceived` events of one device at one
//! instant (a pull reply covering hundreds of conversations) becomes one summary line.
//! Everything that matters for order and count stays: which messages, in which seq order, how
//! often, after what.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde::Serialize;
use tidemark_engine::{
    ClientMsgId, ConnectionState, ContentKind, ConversationId, Event, Message, MessageChange,
    MessageStatus, SeqRanges, Timestamp,
};

use crate::sim::{EventRecord, RequestKind, Sim, SimConfig};
use crate::Backend;

/// A scenario's event log, as snapshotted. See the module docs.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ScenarioLog {
    /// One line per event (bursts summarized), in delivery order.
    pub events: Vec<String>,
    /// Requests each device put on the wire over the whole run, by kind. Keys are
    /// `d<index> <user>/<device>`.
    pub requests: BTreeMap<String, BTreeMap<RequestKind, u64>>,
}

impl ScenarioLog {
    /// More `MessagesReceived` events than this from one device at one instant are summarized.
    pub const BURST: usize = 6;
    /// Id lists longer than this are shortened to their ends and count.
    const LIST: usize = 8;
    /// Messages lists longer than this are shortened to their ends and count.
    const MESSAGES: usize = 8;

    /// The log of `sim` so far, with times relative to [`SimConfig::default`]'s start (every
    /// scenario starts there).
    pub fn capture<F: Backend>(sim: &Sim<F>) -> Self {
        let start = SimConfig::default().start;
        let aliases: BTreeMap<&ClientMsgId, String> = sim
            .sends()
            .iter()
            .enumerate()
            .map(|(i, s)| (&s.client_msg_id, format!("s{}", i + 1)))
            .collect();
        let render = Renderer { start, aliases };
        let mut events = Vec::new();
        let records = sim.events();
        let mut i = 0;
        while i < records.len() {
            let burst = burst_len(&records[i..]);
            if burst > Self::BURST {
                events.push(render.burst(&records[i..i + burst]));
                i += burst;
            } else {
                events.push(render.record(&records[i]));
                i += 1;
            }
        }
        let mut requests = BTreeMap::new();
        for d in 0..sim.device_count() {
            let key = format!("d{d} {}/{}", sim.device_user(d), sim.device_id(d));
            requests.insert(key, sim.requests(d).counts().clone());
        }
        Self { events, requests }
    }
}

/// How many records from the start are `MessagesReceived` of one device, process and time.
fn burst_len(records: &[EventRecord]) -> usize {
    let Some(first) = records.first() else {
        return 0;
    };
    if !matches!(first.event, Event::MessagesReceived { .. }) {
        return 0;
    }
    records
        .iter()
        .take_while(|r| {
            matches!(r.event, Event::MessagesReceived { .. })
                && (r.time, r.device, r.process) == (first.time, first.device, first.process)
        })
        .count()
}

struct Renderer<'a> {
    start: Timestamp,
    aliases: BTreeMap<&'a ClientMsgId, String>,
}

impl Renderer<'_> {
    fn prefix(&self, r: &EventRecord) -> String {
        format!(
            "{}ms d{}/{}",
            r.time.0.saturating_sub(self.start.0),
            r.device,
            r.process
        )
    }

    fn record(&self, r: &EventRecord) -> String {
        format!("{} {}", self.prefix(r), self.event(&r.event))
    }

    fn burst(&self, records: &[EventRecord]) -> String {
        let mut conversations = Vec::new();
        let mut messages = 0;
        for r in records {
            if let Event::MessagesReceived {
                conversation,
                messages: m,
            } = &r.event
            {
                conversations.push(conversation.clone());
                messages += m.len();
            }
        }
        format!(
            "{} MessagesReceived x{}: {} message(s) of {}",
            self.prefix(&records[0]),
            records.len(),
            messages,
            ids(&conversations, ScenarioLog::LIST)
        )
    }

    fn client_id(&self, id: &ClientMsgId) -> String {
        self.aliases
            .get(id)
            .cloned()
            .unwrap_or_else(|| id.to_string())
    }

    fn event(&self, event: &Event) -> String {
        match event {
            Event::MessagesReceived {
                conversation,
                messages,
            } => {
                let shown = if messages.len() > ScenarioLog::MESSAGES {
                    let first = self.message(&messages[0]);
                    let last = self.message(&messages[messages.len() - 1]);
                    format!("{first} ... {last} ({} messages)", messages.len())
                } else {
                    messages
                        .iter()
                        .map(|m| self.message(m))
                        .collect::<Vec<_>>()
                        .join(", ")
                };
                format!("MessagesReceived {conversation}: {shown}")
            }
            Event::MessageUpdated {
                conversation,
                seq,
                change,
            } => match change {
                MessageChange::Edited { edit_seq, content } => format!(
                    "MessageUpdated {conversation}#{} edited by #{} {}",
                    seq.0,
                    edit_seq.0,
                    text(content)
                ),
                MessageChange::Revoked => {
                    format!("MessageUpdated {conversation}#{} revoked", seq.0)
                }
            },
            Event::MessagesDeleted { conversation, seqs } => {
                format!("MessagesDeleted {conversation} {}", ranges(seqs))
            }
            Event::MessageContained {
                conversation,
                seq,
                containment,
            } => format!("MessageContained {conversation}#{} {containment:?}", seq.0),
            Event::MessageSent {
                conversation,
                client_msg_id,
                seq,
            } => format!(
                "MessageSent {conversation} {} at #{}",
                self.client_id(client_msg_id),
                seq.0
            ),
            Event::SendFailed {
                conversation,
                client_msg_id,
                error,
            } => format!(
                "SendFailed {conversation} {}: {} ({}{})",
                self.client_id(client_msg_id),
                error.code,
                error.message,
                if error.permanent { ", permanent" } else { "" }
            ),
            Event::ConversationsChanged { conversations } => {
                format!(
                    "ConversationsChanged {}",
                    ids(conversations, ScenarioLog::LIST)
                )
            }
            Event::TotalUnreadChanged { total } => format!("TotalUnreadChanged {total}"),
            Event::SyncStarted => "SyncStarted".into(),
            Event::SyncProgress { done, total } => format!("SyncProgress {done}/{total}"),
            Event::SyncFinished => "SyncFinished".into(),
            Event::ConnectionChanged { state } => format!(
                "ConnectionChanged {}",
                match state {
                    ConnectionState::Disconnected => "Disconnected",
                    ConnectionState::Connecting => "Connecting",
                    ConnectionState::Connected => "Connected",
                }
            ),
            Event::HistoryLoaded {
                id,
                conversation,
                complete,
            } => format!(
                "HistoryLoaded {conversation} request {id} {}",
                if *complete { "complete" } else { "incomplete" }
            ),
            Event::Kicked { reason } => format!("Kicked {reason:?}"),
            Event::StorageFailed { error } => format!("StorageFailed {error:?}"),
            Event::StoreUnusable { error, damaged } => {
                format!("StoreUnusable {error:?} damaged {damaged}")
            }
        }
    }

    fn message(&self, m: &Message) -> String {
        let mut s = match m.seq {
            Some(seq) => format!("#{}", seq.0),
            None => "#-".to_owned(),
        };
        let _ = write!(s, " {} {}", m.sender, self.client_id(&m.client_msg_id));
        match &m.kind {
            ContentKind::Text => {}
            ContentKind::Image => s.push_str(" image"),
            ContentKind::File => s.push_str(" file"),
            ContentKind::Custom(kind) => {
                let _ = write!(s, " custom:{kind}");
            }
            ContentKind::Edit { target } => {
                let _ = write!(s, " edit of #{}", target.0);
            }
            ContentKind::Revoke { target } => {
                let _ = write!(s, " revoke of #{}", target.0);
            }
        }
        let _ = write!(s, " {}", text(&m.content));
        if let Some(edit) = m.edit_seq {
            let _ = write!(s, " (edited by #{})", edit.0);
        }
        if m.revoked {
            s.push_str(" (revoked)");
        }
        match &m.status {
            MessageStatus::Sent => {}
            MessageStatus::Pending => s.push_str(" [pending]"),
            MessageStatus::Failed { reason } => {
                let _ = write!(s, " [failed: {reason}]");
            }
        }
        s
    }
}

/// Content as a quoted string (lossy UTF-8, escaped).
fn text(content: &[u8]) -> String {
    format!("{:?}", String::from_utf8_lossy(content))
}

/// `1..=3, 5` style.
fn ranges(seqs: &SeqRanges) -> String {
    let parts: Vec<String> = seqs
        .ranges()
        .iter()
        .map(|r| {
            if r.start == r.end {
                r.start.0.to_string()
            } else {
                format!("{}..={}", r.start.0, r.end.0)
            }
        })
        .collect();
    format!("[{}]", parts.join(", "))
}

/// `[a, b, c]`, or `[a, b, c, ... (N in all) ..., y, z]` when longer than `max`.
fn ids(list: &[ConversationId], max: usize) -> String {
    if list.len() <= max {
        let all: Vec<&str> = list.iter().map(ConversationId::as_str).collect();
        return format!("[{}]", all.join(", "));
    }
    let head: Vec<&str> = list[..3].iter().map(ConversationId::as_str).collect();
    let tail: Vec<&str> = list[list.len() - 2..]
        .iter()
        .map(ConversationId::as_str)
        .collect();
    format!(
        "[{}, ... ({} in all) ..., {}]",
        head.join(", "),
        list.len(),
        tail.join(", ")
    )
}
