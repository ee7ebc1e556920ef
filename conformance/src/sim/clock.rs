//! The run loop: how simulated time moves. [`Sim::step`] advances to the earliest of the next
//! frame delivery and the next device wakeup; [`Sim::drive`] steps to quiescence under the
//! budgets of [`SimConfig`]; [`Sim::drive_for`] covers a span of time. It owns the notion of
//! "settled" that quiescence rests on.

use tidemark_engine::{ConnectionState, Timestamp};

use super::{Sim, SimError, NEVER};
use crate::Backend;

impl<F: Backend> Sim<F> {
    // ----- time -----

    /// The simulated clock.
    pub fn now(&self) -> Timestamp {
        self.now
    }

    /// Advances to the earliest of the next frame delivery, the next commit of an
    /// uncommitted batch ([`SimConfig::commit_latency_ms`](super::SimConfig::commit_latency_ms))
    /// and the next device wakeup, and processes it. Returns `false` when nothing at all is
    /// scheduled.
    pub async fn step(&mut self) -> Result<bool, SimError> {
        self.flush_server();
        let frame_at = self.net.next_time();
        let commit = self.next_commit();
        let wake = self.next_wakeup();
        // Frames first on ties, then commits: a commit or a wakeup at the same instant sees
        // what arrived, and a wakeup sees what committed.
        let earliest = [
            frame_at.map(|t| (t, 0)),
            commit.map(|(t, _)| (t, 1)),
            wake.map(|(t, _)| (t, 2)),
        ]
        .into_iter()
        .flatten()
        .min();
        let Some((_, source)) = earliest else {
            return Ok(false);
        };
        if source == 0 {
            if let Some((at, frame)) = self.net.pop_next() {
                self.now = self.now.max(at);
                self.deliver(frame).await?;
            }
        } else if let (1, Some((at, d))) = (source, commit) {
            self.now = self.now.max(at);
            self.commit_next(d).await?;
        } else if let Some((at, d)) = wake {
            self.now = self.now.max(at);
            let now = self.now;
            let dev = &mut self.devices[d];
            dev.wakeup = NEVER;
            if let Some(engine) = dev.engine.as_mut() {
                engine.handle_timeout(now);
            }
            self.run_device(d).await?;
        }
        self.flush_server();
        Ok(true)
    }

    /// Steps until quiescent (see [`Sim::is_quiescent`]). Fails, rather than looping, when the
    /// step budget or the simulated-time budget of [`SimConfig`](super::SimConfig) runs out, or when nothing is
    /// scheduled but some device is not settled.
    pub async fn drive(&mut self) -> Result<(), SimError> {
        let deadline = self.now.plus_millis(self.config.max_drive_ms);
        for _ in 0..self.config.max_steps {
            self.flush_server();
            if self.is_quiescent() {
                return Ok(());
            }
            match self.next_due() {
                None => {
                    return Err(SimError::Stuck {
                        now: self.now,
                        pending: self.describe_pending(),
                    })
                }
                Some(at) if at > deadline => {
                    return Err(SimError::TimeCap {
                        deadline,
                        pending: self.describe_pending(),
                    })
                }
                Some(_) => {
                    self.step().await?;
                }
            }
        }
        Err(SimError::StepCap {
            steps: self.config.max_steps,
            now: self.now,
            pending: self.describe_pending(),
        })
    }

    /// Processes everything due in the next `ms` milliseconds (quiescent or not), then sets
    /// the clock to the end of that span.
    pub async fn drive_for(&mut self, ms: u64) -> Result<(), SimError> {
        let end = self.now.plus_millis(ms);
        for _ in 0..self.config.max_steps {
            self.flush_server();
            match self.next_due() {
                Some(at) if at <= end => {
                    self.step().await?;
                }
                _ => {
                    self.now = self.now.max(end);
                    return Ok(());
                }
            }
        }
        Err(SimError::StepCap {
            steps: self.config.max_steps,
            now: self.now,
            pending: self.describe_pending(),
        })
    }

    /// Quiescent: nothing in flight, no server output waiting, and every device settled:
    /// stopped or dead, or idle and either connected (on both ends, with an empty outbox) or
    /// deliberately offline (partitioned, kicked, or with no wakeup asked for). Heartbeat
    /// wakeups of idle connected engines do not count.
    pub fn is_quiescent(&self) -> bool {
        !self.server.has_output()
            && self.net.is_empty()
            && (0..self.devices.len()).all(|d| self.unsettled_reason(d).is_none())
    }

    /// What keeps the simulation from quiescence, for error messages.
    pub fn describe_pending(&self) -> String {
        let mut parts = Vec::new();
        if !self.net.is_empty() {
            parts.push(format!("{} frame(s) in flight", self.net.len()));
        }
        for d in 0..self.devices.len() {
            if let Some(reason) = self.unsettled_reason(d) {
                parts.push(format!("device {d}: {reason}"));
            }
        }
        if parts.is_empty() {
            "nothing".into()
        } else {
            parts.join("; ")
        }
    }

    pub(super) fn unsettled_reason(&self, d: usize) -> Option<String> {
        let dev = &self.devices[d];
        let engine = dev.engine.as_ref()?;
        if engine.is_stopped() {
            return None;
        }
        if !engine.is_idle() {
            return Some("engine busy".into());
        }
        match engine.connection_state() {
            ConnectionState::Connected => {
                let up = dev.connected && dev.conn.is_some_and(|c| self.server.is_connected(c));
                if !up && !dev.partitioned {
                    Some("engine thinks it is connected but the connection is gone".into())
                } else if up && !engine.outbox().is_empty() {
                    // A send waiting for its retry is work in progress even when the engine
                    // counts itself idle.
                    Some(format!("{} send(s) in the outbox", engine.outbox().len()))
                } else {
                    None
                }
            }
            ConnectionState::Connecting => Some("connecting".into()),
            ConnectionState::Disconnected => {
                (!(dev.partitioned || dev.kicked || dev.wakeup == NEVER))
                    .then(|| format!("disconnected, wakeup at {}", dev.wakeup.0))
            }
        }
    }

    pub(super) fn next_wakeup(&self) -> Option<(Timestamp, usize)> {
        self.devices
            .iter()
            .enumerate()
            .filter(|(_, dev)| dev.engine.is_some() && dev.wakeup != NEVER)
            .map(|(d, dev)| (dev.wakeup, d))
            .min()
    }

    pub(super) fn next_due(&self) -> Option<Timestamp> {
        [
            self.net.next_time(),
            self.next_commit().map(|(t, _)| t),
            self.next_wakeup().map(|(t, _)| t),
        ]
        .into_iter()
        .flatten()
        .min()
    }
}
