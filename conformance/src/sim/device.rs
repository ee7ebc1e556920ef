//! The devices: each an [`Engine`] with its store, driven the way a real driver would
//! (with the shared loop of [`tidemark_engine::testing`]). It owns the app commands (send,
//! mark read, load history, cancel, retry), executing engine outputs (requests onto the
//! links, write batches through the store, events into the log and the [`DispatchOracle`]),
//! crashes and restarts from the store.

use std::collections::VecDeque;
use tidemark_engine::testing::{apply_write, start_from, Drain, Polled, Runaway};

use tidemark_engine::storage::{BatchId, WriteBatch};
use tidemark_engine::{
    ClientMsgId, ContentKind, ConversationId, DeviceId, Engine, EngineConfig, Event, Message,
    Output, Seq, Timestamp, UserId,
};

use super::links::Frame;
use super::{rng, EventRecord, LinkConfig, RequestLog, SendRecord, Sim, SimError, NEVER};
use crate::dispatch::{written_messages, DispatchOracle};
use crate::server::{ConnId, ServerStore};
use crate::Backend;

/// An engine that emits this many outputs in one drain without a timeout is looping.
const MAX_OUTPUTS_PER_DRAIN: usize = 1_000_000;
/// A device that stops again right after this many restarts in one step is failing for good.
const MAX_RESTARTS_PER_STEP: u32 = 8;

type CrashPredicate = Box<dyn FnMut(&Output) -> bool>;

/// A write batch executed but not committed yet ([`SimConfig::commit_latency_ms`]): it
/// commits at `at`.
///
/// [`SimConfig::commit_latency_ms`]: super::SimConfig::commit_latency_ms
pub(super) struct Uncommitted {
    pub(super) at: Timestamp,
    pub(super) id: BatchId,
    pub(super) batch: WriteBatch,
}

pub(super) struct Device<S> {
    pub(super) user: UserId,
    pub(super) id: DeviceId,
    pub(super) config: EngineConfig,
    /// `None` only between a crash and its reopen (the old handle is dropped before the
    /// store is opened again: a browser store is released only then) and after a failed
    /// reopen.
    pub(super) store: Option<S>,
    /// `None` after a failed restart.
    pub(super) engine: Option<Engine>,
    pub(super) process: u32,
    pub(super) wakeup: Timestamp,
    /// The current connection (connecting or connected).
    pub(super) conn: Option<ConnId>,
    pub(super) connected: bool,
    pub(super) to_server: LinkConfig,
    pub(super) to_device: LinkConfig,
    pub(super) partitioned: bool,
    pub(super) crash_before: Option<CrashPredicate>,
    /// Saw [`Event::Kicked`] in the current process.
    pub(super) kicked: bool,
    pub(super) requests: RequestLog,
    /// The dispatch rules, fed what this device's driver executed.
    pub(super) dispatch: DispatchOracle,
    /// Write batches handed to the store and not committed yet, oldest first.
    pub(super) uncommitted: VecDeque<Uncommitted>,
}

pub(super) enum Drained {
    Idle,
    Crashed,
}

impl<F: Backend> Sim<F> {
    // ----- app commands -----

    /// Runs `f` on device `d`'s engine at the current time, then executes its outputs. As
    /// the driver does, every batch emitted before commits first, and the command's own
    /// before it returns.
    pub async fn command<R>(
        &mut self,
        d: usize,
        f: impl FnOnce(&mut Engine, Timestamp) -> R,
    ) -> Result<R, SimError> {
        self.commit_all(d).await?;
        let now = self.now;
        let engine = self.devices[d]
            .engine
            .as_mut()
            .ok_or(SimError::DeviceDown(d))?;
        let result = f(engine, now);
        self.run_device(d).await?;
        self.commit_all(d).await?;
        self.flush_server();
        Ok(result)
    }

    /// Commits every uncommitted batch of device `d` now, running the device after each.
    async fn commit_all(&mut self, d: usize) -> Result<(), SimError> {
        while !self.devices[d].uncommitted.is_empty() {
            self.commit_next(d).await?;
        }
        Ok(())
    }

    /// Sends a message from device `d`; the send is recorded for the invariants.
    pub async fn send(
        &mut self,
        d: usize,
        conversation: impl Into<ConversationId>,
        kind: ContentKind,
        content: impl Into<Vec<u8>>,
    ) -> Result<ClientMsgId, SimError> {
        let conversation = conversation.into();
        self.commit_all(d).await?;
        let now = self.now;
        let dev = &mut self.devices[d];
        let engine = dev.engine.as_mut().ok_or(SimError::DeviceDown(d))?;
        let client_msg_id = engine
            .send_message(now, &conversation, kind, content.into())
            .map_err(|source| SimError::Command { device: d, source })?;
        let conversation_key = conversation.clone();
        self.sends.push(SendRecord {
            device: d,
            process: dev.process,
            conversation,
            client_msg_id: client_msg_id.clone(),
            time: now,
            cancelled: false,
            committed: false,
        });
        self.send_index.insert(
            (d, conversation_key, client_msg_id.clone()),
            self.sends.len() - 1,
        );
        self.run_device(d).await?;
        self.commit_all(d).await?;
        self.flush_server();
        Ok(client_msg_id)
    }

    /// Sends a text message from device `d`.
    pub async fn send_text(
        &mut self,
        d: usize,
        conversation: impl Into<ConversationId>,
        text: &str,
    ) -> Result<ClientMsgId, SimError> {
        self.send(d, conversation, ContentKind::Text, text.as_bytes().to_vec())
            .await
    }

    /// Marks a conversation read up to `seq` on device `d`.
    pub async fn mark_read(
        &mut self,
        d: usize,
        conversation: impl Into<ConversationId>,
        seq: Seq,
    ) -> Result<(), SimError> {
        let conversation = conversation.into();
        self.command(d, |e, now| e.mark_read(now, &conversation, seq))
            .await?
            .map_err(|source| SimError::Command { device: d, source })
    }

    /// Loads history on device `d`; returns the id its `HistoryLoaded` event will carry.
    pub async fn load_history(
        &mut self,
        d: usize,
        conversation: impl Into<ConversationId>,
        before: Option<Seq>,
        limit: u32,
    ) -> Result<u64, SimError> {
        let conversation = conversation.into();
        self.command(d, |e, now| {
            e.load_history(now, &conversation, before, limit)
        })
        .await?
        .map_err(|source| SimError::Command { device: d, source })
    }

    /// Cancels a pending send on device `d` (the invariants then accept it never ending).
    pub async fn cancel(
        &mut self,
        d: usize,
        conversation: impl Into<ConversationId>,
        client_msg_id: &ClientMsgId,
    ) -> Result<(), SimError> {
        let conversation = conversation.into();
        self.command(d, |e, now| e.cancel(now, &conversation, client_msg_id))
            .await?
            .map_err(|source| SimError::Command { device: d, source })?;
        for send in &mut self.sends {
            if send.device == d
                && send.conversation == conversation
                && &send.client_msg_id == client_msg_id
            {
                send.cancelled = true;
            }
        }
        Ok(())
    }

    /// Retries a failed message on device `d`.
    pub async fn retry(&mut self, d: usize, message: &Message) -> Result<(), SimError> {
        self.command(d, |e, now| e.retry(now, message))
            .await?
            .map_err(|source| SimError::Command { device: d, source })
    }

    // ----- crashes -----

    /// Crashes device `d` now: its engine and every output it has not executed are lost
    /// (unapplied writes included), frames on their way to it are dropped, then it restarts
    /// from a freshly opened store's snapshot as a new process. Requests already on the wire
    /// still reach the server, as after a real crash.
    pub async fn crash(&mut self, d: usize) -> Result<(), SimError> {
        self.kill(d);
        self.start_process(d).await?;
        self.run_device(d).await?;
        self.flush_server();
        Ok(())
    }

    /// Arms a crash of device `d` just before it executes the first output matching
    /// `predicate` (that output is lost); the device then restarts as with [`Sim::crash`].
    /// For example `|o| matches!(o, Output::Request(_, Request::Send { .. }))` crashes after
    /// the outbox batch committed but before the send goes out.
    pub fn crash_before(&mut self, d: usize, predicate: impl FnMut(&Output) -> bool + 'static) {
        self.devices[d].crash_before = Some(Box::new(predicate));
    }

    /// Device `d`'s current process number (0 at start, +1 per restart).
    pub fn process(&self, d: usize) -> u32 {
        self.devices[d].process
    }

    // ----- executing engine outputs -----

    /// Drains device `d`, restarting it after an armed crash or a storage stop.
    pub(super) async fn run_device(&mut self, d: usize) -> Result<(), SimError> {
        let mut restarts = 0;
        loop {
            let crashed = matches!(self.drain(d).await?, Drained::Crashed);
            let stopped = self.devices[d]
                .engine
                .as_ref()
                .is_some_and(Engine::is_stopped);
            if !crashed && !stopped {
                return Ok(());
            }
            // A stopped engine (a batch failed) is restarted by its driver from the store,
            // which is at its last commit boundary.
            if stopped {
                self.kill(d);
            }
            restarts += 1;
            if restarts > MAX_RESTARTS_PER_STEP {
                return Err(SimError::RestartLoop {
                    device: d,
                    restarts,
                });
            }
            self.start_process(d).await?;
        }
    }

    pub(super) async fn drain(&mut self, d: usize) -> Result<Drained, SimError> {
        let mut drain = Drain::new(MAX_OUTPUTS_PER_DRAIN);
        loop {
            let dev = &mut self.devices[d];
            let Some(engine) = dev.engine.as_mut() else {
                return Ok(Drained::Idle);
            };
            let output = match drain.next(engine) {
                Ok(Polled::Execute(output)) => output,
                Ok(Polled::Idle(at)) => {
                    dev.wakeup = at;
                    return Ok(Drained::Idle);
                }
                Err(Runaway { limit }) => {
                    return Err(SimError::RunawayOutputs { device: d, limit })
                }
            };
            if let Some(predicate) = dev.crash_before.as_mut() {
                if predicate(&output) {
                    dev.crash_before = None;
                    self.kill(d);
                    return Ok(Drained::Crashed);
                }
            }
            self.execute(d, output).await;
        }
    }

    pub(super) async fn execute(&mut self, d: usize, output: Output) {
        let now = self.now;
        match output {
            Output::Connect => self.open_connection(d),
            Output::Disconnect { reason } => {
                self.close_connection(d);
                if let Some(engine) = self.devices[d].engine.as_mut() {
                    engine.handle_disconnected(now, &reason);
                }
            }
            Output::Request(id, request) => {
                let dev = &mut self.devices[d];
                dev.requests.record(&request);
                // Without a connection the request is lost; the engine's timeout notices.
                if let (Some(conn), true, false) = (dev.conn, dev.connected, dev.partitioned) {
                    let link = dev.to_server;
                    self.net.send(
                        now,
                        &mut self.rng,
                        &link,
                        Frame::Request {
                            device: d,
                            conn,
                            id,
                            request,
                        },
                    );
                }
            }
            Output::Write(id, batch) => match self.config.commit_latency_ms {
                None => self.commit(d, id, batch).await,
                Some(latency) => {
                    let delay = self.rng.below(latency.saturating_add(1));
                    let dev = &mut self.devices[d];
                    // In order: never before the batch ahead of it.
                    let at = dev
                        .uncommitted
                        .back()
                        .map_or(now, |w| w.at)
                        .max(now.plus_millis(delay));
                    dev.uncommitted.push_back(Uncommitted { at, id, batch });
                }
            },
            Output::Event(event) => self.record_event(d, event),
            Output::Timeout(at) => self.devices[d].wakeup = at,
        }
    }

    /// Applies batch `id` to device `d`'s store and tells its engine how that went.
    async fn commit(&mut self, d: usize, id: BatchId, batch: WriteBatch) {
        let now = self.now;
        let written = written_messages(&batch);
        let dev = &mut self.devices[d];
        // Only a running engine has outputs to execute.
        let (Some(engine), Some(store)) = (dev.engine.as_mut(), dev.store.as_ref()) else {
            return;
        };
        if apply_write(engine, store, now, id, batch).await.is_ok() {
            for ((conversation, sender, client_msg_id), _) in &written {
                if sender != &dev.user {
                    continue;
                }
                let k = (d, conversation.clone(), client_msg_id.clone());
                if let Some(&i) = self.send_index.get(&k) {
                    self.sends[i].committed = true;
                }
            }
            dev.dispatch.committed(&written);
        } else {
            // The batches behind it were built on it: a driver drops them unapplied.
            dev.uncommitted.clear();
        }
    }

    /// Commits device `d`'s oldest uncommitted batch, then runs the device (the commit
    /// releases events and sends; a failed one stops the engine, which restarts).
    pub(super) async fn commit_next(&mut self, d: usize) -> Result<(), SimError> {
        if let Some(write) = self.devices[d].uncommitted.pop_front() {
            self.commit(d, write.id, write.batch).await;
        }
        self.run_device(d).await
    }

    /// The earliest uncommitted batch of any device: when it commits, and whose it is.
    pub(super) fn next_commit(&self) -> Option<(Timestamp, usize)> {
        self.devices
            .iter()
            .enumerate()
            .filter_map(|(d, dev)| dev.uncommitted.front().map(|w| (w.at, d)))
            .min()
    }

    pub(super) fn record_event(&mut self, d: usize, event: Event) {
        let now = self.now;
        let dev = &mut self.devices[d];
        let whence = format!("device {d} process {} at {}", dev.process, now.0);
        let server = &self.server;
        // An ack for a seq already deleted on the server has no row to store.
        dev.dispatch
            .event(&whence, &dev.user, &event, |(conversation, _, _), seq| {
                matches!(server.store().message(conversation, seq), Ok(None))
            });
        if let Event::Kicked { .. } = &event {
            dev.kicked = true;
        }
        self.events.push(EventRecord {
            time: now,
            device: d,
            process: dev.process,
            event,
        });
    }

    pub(super) fn kill(&mut self, d: usize) {
        self.close_connection(d);
        let dev = &mut self.devices[d];
        dev.engine = None;
        // What the store had not committed is lost with the process.
        dev.uncommitted.clear();
        dev.wakeup = NEVER;
    }

    /// Opens the store again and starts a new process from its snapshot.
    pub(super) async fn start_process(&mut self, d: usize) -> Result<(), SimError> {
        // As after a real crash, the old process's handle is gone before the store opens.
        drop(self.devices[d].store.take());
        let store = self
            .factory
            .open(d)
            .await
            .map_err(|source| SimError::Storage { device: d, source })?;
        let now = self.now;
        let process = self.devices[d].process + 1;
        let mut config = self.devices[d].config.clone();
        // A fresh seed per process: client ids must not repeat those of the last run.
        config.seed = rng::mix(config.seed, u64::from(process));
        let engine = start_from(&store, config, now)
            .await
            .map_err(|source| SimError::Storage { device: d, source })?;
        let dev = &mut self.devices[d];
        dev.store = Some(store);
        dev.process = process;
        dev.dispatch.restarted();
        dev.kicked = false;
        dev.engine = Some(engine);
        dev.wakeup = now;
        Ok(())
    }
}
