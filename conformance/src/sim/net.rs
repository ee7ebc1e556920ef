//! [`Netem`]: a sans-IO network emulator in the manner of str0m's: frames are scheduled for
//! delivery at a simulated time, with per-link latency, jitter (which reorders), loss and
//! duplication drawn from a [`SimRng`].

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use tidemark_engine::Timestamp;

use super::SimRng;

/// How one direction of a link treats frames.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct LinkConfig {
    /// Base one-way delay.
    pub latency_ms: u64,
    /// Extra delay drawn uniformly from `0..=jitter_ms` per frame; frames overtake each other.
    pub jitter_ms: u64,
    /// Probability that a frame is dropped.
    pub loss: f64,
    /// Probability that a delivered frame is delivered twice (the copy with its own delay).
    pub duplicate: f64,
}

impl Default for LinkConfig {
    /// 10 ms, in order, nothing lost or duplicated.
    fn default() -> Self {
        Self::new(10)
    }
}

impl LinkConfig {
    /// A faultless, in-order link with this latency.
    pub const fn new(latency_ms: u64) -> Self {
        Self {
            latency_ms,
            jitter_ms: 0,
            loss: 0.0,
            duplicate: 0.0,
        }
    }

    /// This link with `jitter_ms` of reordering jitter.
    pub const fn with_jitter(mut self, jitter_ms: u64) -> Self {
        self.jitter_ms = jitter_ms;
        self
    }

    /// This link with loss probability `loss`.
    pub const fn with_loss(mut self, loss: f64) -> Self {
        self.loss = loss;
        self
    }

    /// This link with duplication probability `duplicate`.
    pub const fn with_duplicate(mut self, duplicate: f64) -> Self {
        self.duplicate = duplicate;
        self
    }

    /// The longest delay a frame sent now can have.
    pub const fn max_delay_ms(&self) -> u64 {
        self.latency_ms.saturating_add(self.jitter_ms)
    }
}

/// Frames in flight, ordered by delivery time and then by send order (so equal times stay
/// FIFO and every run is deterministic).
#[derive(Clone, Debug)]
pub struct Netem<T> {
    queue: BTreeMap<(Timestamp, u64), T>,
    sent: u64,
}

impl<T> Default for Netem<T> {
    fn default() -> Self {
        Self::new()
    }
}

impl<T> Netem<T> {
    /// Nothing in flight.
    pub fn new() -> Self {
        Self {
            queue: BTreeMap::new(),
            sent: 0,
        }
    }

    /// Schedules `item` at exactly `at`, never lost (connection events, closes).
    pub fn schedule(&mut self, at: Timestamp, item: T) {
        self.sent += 1;
        self.queue.insert((at, self.sent), item);
    }

    /// When the next frame is due.
    pub fn next_time(&self) -> Option<Timestamp> {
        self.queue.keys().next().map(|(t, _)| *t)
    }

    /// Takes the next frame, whatever its time.
    pub fn pop_next(&mut self) -> Option<(Timestamp, T)> {
        self.queue.pop_first().map(|((t, _), item)| (t, item))
    }

    /// Takes the next frame if it is due at or before `now`.
    pub fn pop_due(&mut self, now: Timestamp) -> Option<(Timestamp, T)> {
        match self.next_time() {
            Some(t) if t <= now => self.pop_next(),
            _ => None,
        }
    }

    /// Frames in flight.
    pub fn len(&self) -> usize {
        self.queue.len()
    }

    /// Whether nothing is in flight.
    pub fn is_empty(&self) -> bool {
        self.queue.is_empty()
    }

    /// Drops every frame for which `keep` returns `false`.
    pub fn retain(&mut self, mut keep: impl FnMut(&T) -> bool) {
        self.queue.retain(|_, item| keep(item));
    }

    /// The frames in flight with their delivery times, in delivery order.
    pub fn iter(&self) -> impl Iterator<Item = (Timestamp, &T)> + '_ {
        self.queue.iter().map(|((t, _), item)| (*t, item))
    }
}

impl<T: Clone> Netem<T> {
    /// Sends `item` at `now` over `link`: dropped with its loss probability, else delivered
    /// after latency plus jitter, and possibly once more. Returns how many copies were
    /// scheduled (0, 1 or 2).
    pub fn send(&mut self, now: Timestamp, rng: &mut SimRng, link: &LinkConfig, item: T) -> usize {
        if rng.chance(link.loss) {
            return 0;
        }
        let copies = if rng.chance(link.duplicate) { 2 } else { 1 };
        for _ in 1..copies {
            let at = now.plus_millis(
                link.latency_ms
                    .saturating_add(rng.below(link.jitter_ms.saturating_add(1))),
            );
            self.schedule(at, item.clone());
        }
        let at = now.plus_millis(
            link.latency_ms
                .saturating_add(rng.below(link.jitter_ms.saturating_add(1))),
        );
        self.schedule(at, item);
        copies
    }
}
