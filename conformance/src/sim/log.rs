//! What a simulation records: the event log, requests per device, and the sends it was told
//! to make.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};
use tidemark_engine::{ClientMsgId, ConversationId, Event, Request, Seq, Timestamp};

/// One event as a device's app saw it. A log of these is deterministic for a seed and
/// serializable, for insta snapshots.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct EventRecord {
    /// Simulated time of delivery.
    pub time: Timestamp,
    /// Device index.
    pub device: usize,
    /// Which run of the device's engine: 0 at start, +1 per crash or restart.
    pub process: u32,
    /// The event.
    pub event: Event,
}

/// A request's kind, for counting.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum RequestKind {
    /// [`Request::GetMaxSeqs`].
    GetMaxSeqs,
    /// [`Request::Pull`].
    Pull,
    /// [`Request::Send`].
    Send,
    /// [`Request::MarkRead`].
    MarkRead,
    /// [`Request::GetDeletions`].
    GetDeletions,
    /// [`Request::Ping`].
    Ping,
}

impl RequestKind {
    /// The kind of `request`.
    pub fn of(request: &Request) -> Self {
        match request {
            Request::GetMaxSeqs { .. } => Self::GetMaxSeqs,
            Request::Pull { .. } => Self::Pull,
            Request::Send { .. } => Self::Send,
            Request::MarkRead { .. } => Self::MarkRead,
            Request::GetDeletions { .. } => Self::GetDeletions,
            Request::Ping => Self::Ping,
        }
    }
}

/// One range a device asked to pull.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct PullRecord {
    /// The conversation.
    pub conversation: ConversationId,
    /// First seq asked for.
    pub from: Seq,
    /// Last seq asked for.
    pub to: Seq,
}

/// The requests one device put on the wire (counted when the engine emitted them, whether or
/// not the network delivered them).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RequestLog {
    counts: BTreeMap<RequestKind, u64>,
    pulled: Vec<PullRecord>,
}

impl RequestLog {
    pub(crate) fn record(&mut self, request: &Request) {
        *self.counts.entry(RequestKind::of(request)).or_default() += 1;
        if let Request::Pull { ranges, .. } = request {
            self.pulled.extend(ranges.iter().map(|r| PullRecord {
                conversation: r.conversation.clone(),
                from: r.from,
                to: r.to,
            }));
        }
    }

    /// How many requests of `kind` were made.
    pub fn count(&self, kind: RequestKind) -> u64 {
        self.counts.get(&kind).copied().unwrap_or(0)
    }

    /// Every count, by kind.
    pub fn counts(&self) -> &BTreeMap<RequestKind, u64> {
        &self.counts
    }

    /// Every range asked for, in request order.
    pub fn pulled(&self) -> &[PullRecord] {
        &self.pulled
    }

    /// The conversations any pull asked for.
    pub fn pulled_conversations(&self) -> BTreeSet<ConversationId> {
        self.pulled.iter().map(|r| r.conversation.clone()).collect()
    }
}

/// A send the simulation made on a device's engine (the invariants check how it ended).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SendRecord {
    /// Device index.
    pub device: usize,
    /// The device's process at the time.
    pub process: u32,
    /// The conversation.
    pub conversation: ConversationId,
    /// The id the engine gave it.
    pub client_msg_id: ClientMsgId,
    /// Simulated time of the send.
    pub time: Timestamp,
    /// Whether it was cancelled later through [`super::Sim::cancel`].
    pub cancelled: bool,
    /// Whether a committed batch stored it. A crash before that loses the send for good, as
    /// in a real app: nothing of it was durable.
    pub committed: bool,
}
