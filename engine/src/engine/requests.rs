//! Requests and timers: request ids, the requests in flight and their deadlines, the
//! heartbeat and the reconnect backoff.
//!
//! Owns what ties the engine to the clock it is given: when each request times out, when the
//! next ping is due, when to reconnect and how many reconnects failed in a row. It never
//! builds a request or emits an output (the engine does, with the id it gets here), never
//! reads a clock (every method takes `now`) and never draws randomness of its own (the
//! engine's generator is passed in for jitter).

use std::collections::{BTreeSet, HashMap};

use crate::model::{ClientMsgId, ConversationId, Seq, Timestamp};
use crate::protocol::RequestId;
use crate::rng::SplitMix64;

use super::pulls::PullChunk;

/// What a request in flight was for.
#[derive(Clone, Debug)]
pub(super) enum InFlight {
    MaxSeqs,
    Pull(Vec<PullChunk>),
    Send(ClientMsgId),
    MarkRead(ConversationId, Seq),
    Deletions,
    Ping,
}

#[derive(Clone, Debug)]
struct RequestState {
    what: InFlight,
    deadline: Timestamp,
}

/// The requests in flight and the connection's timers.
#[derive(Debug)]
pub(super) struct Requests {
    next_id: u64,
    in_flight: HashMap<RequestId, RequestState>,
    next_ping_at: Option<Timestamp>,
    reconnect_at: Option<Timestamp>,
    reconnect_failures: u32,
}

impl Requests {
    /// No request made yet, no timer set.
    pub(super) fn new() -> Self {
        Self {
            next_id: 1,
            in_flight: HashMap::new(),
            next_ping_at: None,
            reconnect_at: None,
            reconnect_failures: 0,
        }
    }

    /// Records a request for `what` that times out `timeout_ms` after `now`; returns its id.
    pub(super) fn start(&mut self, now: Timestamp, timeout_ms: u64, what: InFlight) -> RequestId {
        let id = RequestId(self.next_id);
        self.next_id += 1;
        self.in_flight.insert(
            id,
            RequestState {
                what,
                deadline: now.plus_millis(timeout_ms),
            },
        );
        id
    }

    /// The reply to `id` arrived: what it was for, or `None` for a request of an earlier
    /// connection (or one never made).
    pub(super) fn finish(&mut self, id: RequestId) -> Option<InFlight> {
        self.in_flight.remove(&id).map(|r| r.what)
    }

    /// Whether no request is in flight.
    pub(super) fn is_empty(&self) -> bool {
        self.in_flight.is_empty()
    }

    /// Whether a request in flight passed its deadline.
    pub(super) fn timed_out(&self, now: Timestamp) -> bool {
        self.in_flight.values().any(|r| r.deadline <= now)
    }

    /// The conversations a read mark is in flight for.
    pub(super) fn marking_read(&self) -> BTreeSet<ConversationId> {
        self.in_flight
            .values()
            .filter_map(|r| match &r.what {
                InFlight::MarkRead(c, _) => Some(c.clone()),
                _ => None,
            })
            .collect()
    }

    /// Forgets every request in flight: late replies to them are ignored.
    pub(super) fn forget_all(&mut self) {
        self.in_flight.clear();
    }

    /// The connection is up: the reconnect backoff starts over and the heartbeat starts.
    pub(super) fn connected(&mut self, now: Timestamp, heartbeat_ms: u64) {
        self.reconnect_at = None;
        self.reconnect_failures = 0;
        self.next_ping_at = Some(now.plus_millis(heartbeat_ms));
    }

    /// The connection is gone: its requests are forgotten and the heartbeat stops.
    pub(super) fn disconnected(&mut self) {
        self.in_flight.clear();
        self.next_ping_at = None;
    }

    /// Whether a ping is due at `now`; if so, the next one is scheduled `heartbeat_ms` later.
    pub(super) fn ping_due(&mut self, now: Timestamp, heartbeat_ms: u64) -> bool {
        if self.next_ping_at.is_some_and(|t| t <= now) {
            self.next_ping_at = Some(now.plus_millis(heartbeat_ms));
            return true;
        }
        false
    }

    /// Connect at `now` (on start).
    pub(super) fn reconnect_at_once(&mut self, now: Timestamp) {
        self.reconnect_at = Some(now);
    }

    /// Schedules the next connect attempt: exponential backoff from `min_ms`, capped at
    /// `max_ms`, with up to 25% jitter drawn from `rng` so a fleet of clients does not
    /// reconnect in lockstep.
    pub(super) fn schedule_reconnect(
        &mut self,
        now: Timestamp,
        min_ms: u64,
        max_ms: u64,
        rng: &mut SplitMix64,
    ) {
        let exp = self.reconnect_failures.min(16);
        let base = min_ms.saturating_mul(1 << exp).min(max_ms);
        let jitter = if base >= 4 {
            rng.next_u64() % (base / 4)
        } else {
            0
        };
        let delay = base + jitter;
        self.reconnect_at = Some(now.plus_millis(delay));
        self.reconnect_failures = self.reconnect_failures.saturating_add(1);
        tracing::debug!(
            delay_ms = delay,
            failures = self.reconnect_failures,
            "reconnect scheduled"
        );
    }

    /// Whether a scheduled reconnect is due at `now`; if so it is taken (not due again).
    pub(super) fn take_reconnect_due(&mut self, now: Timestamp) -> bool {
        if self.reconnect_at.is_some_and(|t| t <= now) {
            self.reconnect_at = None;
            return true;
        }
        false
    }

    /// When the scheduled reconnect is due.
    pub(super) fn reconnect_deadline(&self) -> Option<Timestamp> {
        self.reconnect_at
    }

    /// The earliest of the next ping and the request deadlines.
    pub(super) fn connected_deadline(&self) -> Option<Timestamp> {
        let requests = self.in_flight.values().map(|r| r.deadline).min();
        match (self.next_ping_at, requests) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }
}
