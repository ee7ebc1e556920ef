//! A deterministic simulation of devices syncing with the inbox server, in the manner of
//! quinn-proto's test `Pair` and str0m's netem.
//!
//! A [`Sim`] owns a [`ServerCore`] over a [`MemoryServerStore`], a fake clock, a seeded
//! [`SimRng`], a simulated network ([`Netem`]) with per-device link settings, and devices: an
//! [`Engine`] with the store a [`Backend`] opened for it. The harness executes every
//! engine output the way a real driver would (connect, put requests on the wire, apply write
//! batches through [`Storage`], record events, remember the wakeup), so a seed replays a run
//! exactly. It awaits only `Storage` calls, so it runs natively and in a browser.
//!
//! Time moves only in [`Sim::step`]: to the earliest of the next frame delivery and the next
//! device wakeup. [`Sim::drive`] steps to quiescence (no frame in flight, every device idle and
//! connected, or deliberately offline) under a step and a time budget.
//!
//! While running, the harness feeds each device's [`DispatchOracle`] what only it can see
//! (the batches that committed, the restarts, the events) so the dispatch rules are checked
//! as they happen; [`Sim::dispatch_violations`] reports what broke.
//!
//! ```no_run
//! use tidemark_conformance::sim::{LinkConfig, Sim};
//! use tidemark_conformance::Backend;
//! use tidemark_engine::ConversationKind;
//!
//! async fn scenario<F: Backend>(factory: F) {
//!     let mut sim = Sim::new(factory, 7);
//!     sim.create_conversation("g", ConversationKind::Group, ["alice", "bob"]).unwrap();
//!     let alice = sim.add_device("alice", "phone", |_| {}).await.unwrap();
//!     let bob = sim.add_device("bob", "laptop", |c| c.pull_max_messages = 50).await.unwrap();
//!     sim.drive().await.unwrap();
//!     sim.set_link(bob, LinkConfig::new(30).with_loss(0.2).with_jitter(20));
//!     sim.send_text(alice, "g", "hello").await.unwrap();
//!     sim.drive_for(10_000).await.unwrap();
//!     sim.heal_all().await.unwrap();
//!     sim.drive().await.unwrap();
//!     sim.check_invariants().await.unwrap();
//! }
//! ```

mod error;

mod log;
mod net;
mod rng;

#[cfg(test)]
mod tests;

use std::collections::BTreeMap;

use tidemark_engine::{
    ClientMsgId, ConnectionState, ContentKind, ConversationId, ConversationKind, DeviceId, Engine,
    EngineConfig, Event, Incoming, Message, Output, Request, RequestId, Seq, SeqRanges,
    ServerError, ServerMessage, Storage, Timestamp, UserId,
};

use crate::dispatch::{written_messages, DispatchOracle};
use crate::invariants::InvariantViolations;
use crate::server::{
    ConnId, MemoryServerStore, ServerConfig, ServerCore, ServerOutput, ServerStore,
};
use crate::Backend;

pub use error::SimError;

pub use log::{EventRecord, PullRecord, RequestKind, RequestLog, SendRecord};
pub use net::{LinkConfig, Netem};
pub use rng::SimRng;

/// "No wakeup".
const NEVER: Timestamp = Timestamp(u64::MAX);
/// An engine that emits this many outputs in one drain without a timeout is looping.
const MAX_OUTPUTS_PER_DRAIN: usize = 1_000_000;
/// A device that stops again right after this many restarts in one step is failing for good.
const MAX_RESTARTS_PER_STEP: u32 = 8;

/// Simulation settings.
#[derive(Clone, Debug)]
pub struct SimConfig {
    /// Seeds the network and the devices' engine seeds.
    pub seed: u64,
    /// The clock at start.
    pub start: Timestamp,
    /// Every new device's link, both directions (and what [`Sim::heal_all`] restores).
    pub link: LinkConfig,
    /// The server's limits.
    pub server: ServerConfig,
    /// Most steps one [`Sim::drive`] or [`Sim::drive_for`] takes.
    pub max_steps: u64,
    /// Most simulated time one [`Sim::drive`] covers.
    pub max_drive_ms: u64,
}

impl Default for SimConfig {
    fn default() -> Self {
        Self {
            seed: 0,
            start: Timestamp(1_700_000_000_000),
            link: LinkConfig::default(),
            server: ServerConfig::default(),
            max_steps: 1_000_000,
            max_drive_ms: 3_600_000,
        }
    }
}

/// One direction of a device's link.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LinkDir {
    /// Device to server (requests).
    ToServer,
    /// Server to device (responses, pushes).
    ToDevice,
}

/// Something in flight.
#[derive(Clone, Debug)]
enum Frame {
    /// A connect attempt's handshake finished.
    ConnectDone { device: usize, conn: ConnId },
    /// A request on its way to the server.
    Request {
        device: usize,
        conn: ConnId,
        id: RequestId,
        request: Request,
    },
    /// The server learns that the device side closed (or died).
    ServerSideClose { conn: ConnId },
    /// A response or push on its way to a device.
    Incoming {
        device: usize,
        conn: ConnId,
        incoming: Incoming,
    },
    /// The device learns that the server closed the connection.
    DeviceSideClose { device: usize, conn: ConnId },
}

type CrashPredicate = Box<dyn FnMut(&Output) -> bool>;
struct Device<S> {
    user: UserId,
    id: DeviceId,
    config: EngineConfig,
    store: S,
    /// `None` after a failed restart.
    engine: Option<Engine>,
    process: u32,
    wakeup: Timestamp,
    /// The current connection (connecting or connected).
    conn: Option<ConnId>,
    connected: bool,
    to_server: LinkConfig,
    to_device: LinkConfig,
    partitioned: bool,
    crash_before: Option<CrashPredicate>,
    /// Saw [`Event::Kicked`] in the current process.
    kicked: bool,
    requests: RequestLog,
    /// The dispatch rules, fed what this device's driver executed.
    dispatch: DispatchOracle,
}

enum Drained {
    Idle,
    Crashed,
}

/// The simulation. See the module docs.
pub struct Sim<F: Backend> {
    factory: F,
    config: SimConfig,
    server: ServerCore<MemoryServerStore>,
    now: Timestamp,
    rng: SimRng,
    net: Netem<Frame>,
    devices: Vec<Device<F::Store>>,
    conn_owner: BTreeMap<ConnId, usize>,
    next_conn: u64,
    events: Vec<EventRecord>,
    sends: Vec<SendRecord>,
    /// (device, conversation, client id) -> index in `sends`.
    send_index: BTreeMap<(usize, ConversationId, ClientMsgId), usize>,
}

impl<F: Backend> Sim<F> {
    // ----- setup -----

    /// A simulation with default settings and this seed.
    pub fn new(factory: F, seed: u64) -> Self {
        Self::with_config(
            factory,
            SimConfig {
                seed,
                ..SimConfig::default()
            },
        )
    }

    /// A simulation with these settings.
    pub fn with_config(factory: F, config: SimConfig) -> Self {
        Self {
            factory,
            server: ServerCore::new(MemoryServerStore::new(), config.server.clone()),
            now: config.start,
            rng: SimRng::new(config.seed),
            net: Netem::new(),
            devices: Vec::new(),
            conn_owner: BTreeMap::new(),
            next_conn: 0,
            events: Vec::new(),
            sends: Vec::new(),
            send_index: BTreeMap::new(),
            config,
        }
    }

    /// Creates a server user (no-op when it exists).
    pub fn create_user(&mut self, user: impl Into<UserId>) -> Result<(), SimError> {
        Ok(self.server.create_user(&user.into())?)
    }

    /// Creates a conversation, creating members that do not exist yet.
    pub fn create_conversation<U: Into<UserId>>(
        &mut self,
        id: impl Into<ConversationId>,
        kind: ConversationKind,
        members: impl IntoIterator<Item = U>,
    ) -> Result<(), SimError> {
        let members: Vec<UserId> = members.into_iter().map(Into::into).collect();
        for user in &members {
            self.server.create_user(user)?;
        }
        Ok(self
            .server
            .create_conversation(&id.into(), kind, &members)?)
    }

    /// Adds a device of `user` (created on the server if needed) and starts its engine from
    /// its store's snapshot. `tweak` adjusts the engine config; the seed is preset from the
    /// simulation seed and the device index. Returns the device index.
    pub async fn add_device(
        &mut self,
        user: impl Into<UserId>,
        device: impl Into<DeviceId>,
        tweak: impl FnOnce(&mut EngineConfig),
    ) -> Result<usize, SimError> {
        let user = user.into();
        let device = device.into();
        self.server.create_user(&user)?;
        let index = self.devices.len();
        let mut config = EngineConfig::new(user.clone(), device.clone());
        config.seed = rng::mix(self.config.seed, index as u64);
        tweak(&mut config);
        let store = self
            .factory
            .open(index)
            .await
            .map_err(|source| SimError::Storage {
                device: index,
                source,
            })?;
        let snapshot = store
            .load_snapshot()
            .await
            .map_err(|source| SimError::Storage {
                device: index,
                source,
            })?;
        let engine = Engine::new(config.clone(), snapshot, self.now);
        self.devices.push(Device {
            user,
            id: device,
            config,
            store,
            engine: Some(engine),
            process: 0,
            wakeup: self.now,
            conn: None,
            connected: false,
            to_server: self.config.link,
            to_device: self.config.link,
            partitioned: false,
            crash_before: None,
            kicked: false,
            requests: RequestLog::default(),
            dispatch: DispatchOracle::new(),
        });
        self.run_device(index).await?;
        Ok(index)
    }

    // ----- time -----

    /// The simulated clock.
    pub fn now(&self) -> Timestamp {
        self.now
    }

    /// Advances to the earliest of the next frame delivery and the next device wakeup and
    /// processes it. Returns `false` when nothing at all is scheduled.
    pub async fn step(&mut self) -> Result<bool, SimError> {
        self.flush_server();
        let frame_at = self.net.next_time();
        let wake = self.next_wakeup();
        let take_frame = match (frame_at, wake) {
            (None, None) => return Ok(false),
            (Some(_), None) => true,
            (None, Some(_)) => false,
            // Frames first on ties: a wakeup at the same instant sees what arrived.
            (Some(f), Some((w, _))) => f <= w,
        };
        if take_frame {
            if let Some((at, frame)) = self.net.pop_next() {
                self.now = self.now.max(at);
                self.deliver(frame).await?;
            }
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
    /// step budget or the simulated-time budget of [`SimConfig`] runs out, or when nothing is
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

    fn unsettled_reason(&self, d: usize) -> Option<String> {
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

    fn next_wakeup(&self) -> Option<(Timestamp, usize)> {
        self.devices
            .iter()
            .enumerate()
            .filter(|(_, dev)| dev.engine.is_some() && dev.wakeup != NEVER)
            .map(|(d, dev)| (dev.wakeup, d))
            .min()
    }

    fn next_due(&self) -> Option<Timestamp> {
        let wake = self.next_wakeup().map(|(t, _)| t);
        match (self.net.next_time(), wake) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    // ----- app commands -----

    /// Runs `f` on device `d`'s engine at the current time, then executes its outputs.
    pub async fn command<R>(
        &mut self,
        d: usize,
        f: impl FnOnce(&mut Engine, Timestamp) -> R,
    ) -> Result<R, SimError> {
        let now = self.now;
        let engine = self.devices[d]
            .engine
            .as_mut()
            .ok_or(SimError::DeviceDown(d))?;
        let result = f(engine, now);
        self.run_device(d).await?;
        self.flush_server();
        Ok(result)
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

    // ----- server -----

    /// The server, for reads.
    pub fn server(&self) -> &ServerCore<MemoryServerStore> {
        &self.server
    }

    /// The server, for admin actions not wrapped here. Its outputs are routed at the next
    /// step (or any `Sim` call that runs devices).
    pub fn server_mut(&mut self) -> &mut ServerCore<MemoryServerStore> {
        &mut self.server
    }

    /// Appends a message by `user` (as from a device that is not connected) and routes its
    /// fan-out.
    pub fn append_as(
        &mut self,
        user: impl Into<UserId>,
        conversation: impl Into<ConversationId>,
        kind: ContentKind,
        content: impl Into<Vec<u8>>,
    ) -> Result<ServerMessage, SimError> {
        let message = self.server.append_as(
            self.now,
            &user.into(),
            &conversation.into(),
            kind,
            content.into(),
        )?;
        self.flush_server();
        Ok(message)
    }

    /// Appends a text message by `user`.
    pub fn append_text(
        &mut self,
        user: impl Into<UserId>,
        conversation: impl Into<ConversationId>,
        text: &str,
    ) -> Result<ServerMessage, SimError> {
        self.append_as(
            user,
            conversation,
            ContentKind::Text,
            text.as_bytes().to_vec(),
        )
    }

    /// Deletes seqs on the server (pushing the deletion to online members).
    pub fn delete_seqs(
        &mut self,
        conversation: impl Into<ConversationId>,
        seqs: &SeqRanges,
    ) -> Result<SeqRanges, SimError> {
        let newly = self.server.delete_seqs(&conversation.into(), seqs)?;
        self.flush_server();
        Ok(newly)
    }

    /// Raises a conversation's history floor on the server (pushing it to online members).
    pub fn set_min_seq(
        &mut self,
        conversation: impl Into<ConversationId>,
        seq: Seq,
    ) -> Result<Seq, SimError> {
        let floor = self.server.set_min_seq(&conversation.into(), seq)?;
        self.flush_server();
        Ok(floor)
    }

    /// Makes the server answer the next `n` sends with `error`.
    pub fn fail_next_sends(&mut self, n: usize, error: ServerError) {
        self.server.fail_next_sends(n, error);
    }

    /// Has the server kick device `d`'s connection. Returns whether it was connected.
    pub fn kick(&mut self, d: usize, reason: &str) -> bool {
        let dev = &self.devices[d];
        let kicked = match (dev.conn, dev.connected) {
            (Some(conn), true) => self.server.kick(conn, reason),
            _ => false,
        };
        self.flush_server();
        kicked
    }

    // ----- network -----

    /// Sets both directions of device `d`'s link.
    pub fn set_link(&mut self, d: usize, link: LinkConfig) {
        self.devices[d].to_server = link;
        self.devices[d].to_device = link;
    }

    /// Sets one direction of device `d`'s link (for example lose only responses).
    pub fn set_link_dir(&mut self, d: usize, dir: LinkDir, link: LinkConfig) {
        match dir {
            LinkDir::ToServer => self.devices[d].to_server = link,
            LinkDir::ToDevice => self.devices[d].to_device = link,
        }
    }

    /// Sets every device's link.
    pub fn set_all_links(&mut self, link: LinkConfig) {
        for d in 0..self.devices.len() {
            self.set_link(d, link);
        }
    }

    /// Cuts device `d` off: every frame to or from it is lost, including those in flight, and
    /// connects fail. The connection is not closed: the engine notices by its own timeouts.
    pub fn partition(&mut self, d: usize) {
        self.devices[d].partitioned = true;
    }

    /// Ends device `d`'s partition.
    pub fn heal(&mut self, d: usize) {
        self.devices[d].partitioned = false;
    }

    /// Whether device `d` is partitioned.
    pub fn is_partitioned(&self, d: usize) -> bool {
        self.devices[d].partitioned
    }

    /// Drops device `d`'s connection now: the engine is told at once, the server after the
    /// frames already on their way to it (which still arrive).
    pub async fn disconnect(&mut self, d: usize) -> Result<(), SimError> {
        if self.devices[d].conn.is_none() {
            return Ok(());
        }
        self.close_connection(d);
        let now = self.now;
        if let Some(engine) = self.devices[d].engine.as_mut() {
            engine.handle_disconnected(now, "connection dropped");
        }
        self.run_device(d).await?;
        self.flush_server();
        Ok(())
    }

    /// Restores every link to [`SimConfig::link`], ends every partition, and drops every
    /// open connection so each engine reconnects and resyncs. Pushes have no retry, so what
    /// a lossy phase lost (a read seq, a deletion) is only learned again by a resync; call
    /// this before checking end-state invariants after faults.
    pub async fn heal_all(&mut self) -> Result<(), SimError> {
        let link = self.config.link;
        for d in 0..self.devices.len() {
            self.set_link(d, link);
            self.heal(d);
        }
        for d in 0..self.devices.len() {
            if self.devices[d].conn.is_some() {
                self.disconnect(d).await?;
            }
        }
        Ok(())
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

    // ----- observations -----

    /// Number of devices.
    pub fn device_count(&self) -> usize {
        self.devices.len()
    }

    /// Device `d`'s user.
    pub fn device_user(&self, d: usize) -> &UserId {
        &self.devices[d].user
    }

    /// Device `d`'s device id.
    pub fn device_id(&self, d: usize) -> &DeviceId {
        &self.devices[d].id
    }

    /// Device `d`'s engine (`None` only after a failed restart).
    pub fn engine(&self, d: usize) -> Option<&Engine> {
        self.devices[d].engine.as_ref()
    }

    /// Device `d`'s store, for reads through [`Storage`].
    pub fn store(&self, d: usize) -> &F::Store {
        &self.devices[d].store
    }

    /// Whether device `d` is connected (on the device side).
    pub fn is_connected(&self, d: usize) -> bool {
        self.devices[d].connected
    }

    /// Whether device `d`'s current process saw [`Event::Kicked`].
    pub fn is_kicked(&self, d: usize) -> bool {
        self.devices[d].kicked
    }

    /// Every event of every device, in delivery order. Deterministic for a seed; snapshot it
    /// with `insta::assert_yaml_snapshot!(sim.events())`.
    pub fn events(&self) -> &[EventRecord] {
        &self.events
    }

    /// Device `d`'s events.
    pub fn device_events(&self, d: usize) -> Vec<&EventRecord> {
        self.events.iter().filter(|e| e.device == d).collect()
    }

    /// The requests device `d` made so far.
    pub fn requests(&self, d: usize) -> &RequestLog {
        &self.devices[d].requests
    }

    /// Takes device `d`'s request log, starting a fresh one (to count one phase).
    pub fn take_requests(&mut self, d: usize) -> RequestLog {
        std::mem::take(&mut self.devices[d].requests)
    }

    /// Every send made through [`Sim::send`].
    pub fn sends(&self) -> &[SendRecord] {
        &self.sends
    }

    /// Dispatch rules broken while running (see [`crate::dispatch`]), device by device.
    pub fn dispatch_violations(&self) -> Vec<String> {
        self.devices
            .iter()
            .flat_map(|dev| dev.dispatch.violations().iter().cloned())
            .collect()
    }

    /// The store factory.
    pub fn factory(&self) -> &F {
        &self.factory
    }

    /// Runs [`crate::invariants::check`].
    pub async fn check_invariants(&self) -> Result<(), InvariantViolations> {
        crate::invariants::check(self).await
    }

    // ----- executing engine outputs -----

    /// Drains device `d`, restarting it after an armed crash or a storage stop.
    async fn run_device(&mut self, d: usize) -> Result<(), SimError> {
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

    async fn drain(&mut self, d: usize) -> Result<Drained, SimError> {
        for _ in 0..MAX_OUTPUTS_PER_DRAIN {
            let dev = &mut self.devices[d];
            let Some(engine) = dev.engine.as_mut() else {
                return Ok(Drained::Idle);
            };
            let output = engine.poll_output();
            if let Output::Timeout(at) = output {
                dev.wakeup = at;
                return Ok(Drained::Idle);
            }
            if let Some(predicate) = dev.crash_before.as_mut() {
                if predicate(&output) {
                    dev.crash_before = None;
                    self.kill(d);
                    return Ok(Drained::Crashed);
                }
            }
            self.execute(d, output).await;
        }
        Err(SimError::RunawayOutputs {
            device: d,
            limit: MAX_OUTPUTS_PER_DRAIN,
        })
    }

    async fn execute(&mut self, d: usize, output: Output) {
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
            Output::Write(id, batch) => {
                let written = written_messages(&batch);
                let dev = &mut self.devices[d];
                let result = dev.store.apply(batch).await;
                match result {
                    Ok(applied) => {
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
                        if let Some(engine) = dev.engine.as_mut() {
                            engine.handle_batch_committed(now, id, &applied);
                        }
                    }
                    Err(err) => {
                        if let Some(engine) = dev.engine.as_mut() {
                            engine.handle_batch_failed(now, id, &err);
                        }
                    }
                }
            }
            Output::Event(event) => self.record_event(d, event),
            Output::Timeout(at) => self.devices[d].wakeup = at,
        }
    }

    fn record_event(&mut self, d: usize, event: Event) {
        let now = self.now;
        let dev = &mut self.devices[d];
        let whence = format!("device {d} process {} at {}", dev.process, now.0);
        let server = &self.server;
        // An ack for a seq already deleted on the server has no row to store.
        dev.dispatch
            .event(&whence, &dev.user, &event, |conversation, seq| {
                matches!(server.store().message(conversation, seq), Ok(None))
            });
        match &event {
            Event::Kicked { .. } => dev.kicked = true,
            _ => {}
        }
        self.events.push(EventRecord {
            time: now,
            device: d,
            process: dev.process,
            event,
        });
    }

    fn kill(&mut self, d: usize) {
        self.close_connection(d);
        let dev = &mut self.devices[d];
        dev.engine = None;
        dev.wakeup = NEVER;
    }

    /// Opens the store again and starts a new process from its snapshot.
    async fn start_process(&mut self, d: usize) -> Result<(), SimError> {
        let store = self
            .factory
            .open(d)
            .await
            .map_err(|source| SimError::Storage { device: d, source })?;
        let snapshot = store
            .load_snapshot()
            .await
            .map_err(|source| SimError::Storage { device: d, source })?;
        let now = self.now;
        let dev = &mut self.devices[d];
        dev.store = store;
        dev.process += 1;
        dev.dispatch.restarted();
        dev.kicked = false;
        let mut config = dev.config.clone();
        // A fresh seed per process: client ids must not repeat those of the last run.
        config.seed = rng::mix(config.seed, u64::from(dev.process));
        dev.engine = Some(Engine::new(config, snapshot, now));
        dev.wakeup = now;
        Ok(())
    }

    // ----- network plumbing -----

    fn open_connection(&mut self, d: usize) {
        self.close_connection(d);
        self.next_conn += 1;
        let conn = ConnId(self.next_conn);
        self.conn_owner.insert(conn, d);
        let dev = &mut self.devices[d];
        dev.conn = Some(conn);
        dev.connected = false;
        // The handshake takes a round trip.
        let handshake = dev
            .to_server
            .latency_ms
            .saturating_add(dev.to_device.latency_ms);
        self.net.schedule(
            self.now.plus_millis(handshake),
            Frame::ConnectDone { device: d, conn },
        );
    }

    /// Forgets device `d`'s connection on the device side; the server learns of it after the
    /// frames already on their way to it.
    fn close_connection(&mut self, d: usize) {
        let dev = &mut self.devices[d];
        let Some(conn) = dev.conn.take() else {
            return;
        };
        if std::mem::replace(&mut dev.connected, false) {
            let at = self
                .now
                .plus_millis(dev.to_server.max_delay_ms().saturating_add(1));
            self.net.schedule(at, Frame::ServerSideClose { conn });
        } else {
            self.conn_owner.remove(&conn);
        }
    }

    async fn deliver(&mut self, frame: Frame) -> Result<(), SimError> {
        let now = self.now;
        match frame {
            Frame::ConnectDone { device: d, conn } => {
                let dev = &mut self.devices[d];
                if dev.conn != Some(conn) {
                    return Ok(());
                }
                let Some(engine) = dev.engine.as_mut() else {
                    return Ok(());
                };
                let accepted = !dev.partitioned
                    && self
                        .server
                        .connect(conn, dev.user.clone(), dev.id.clone())
                        .is_ok();
                if accepted {
                    dev.connected = true;
                    engine.handle_connected(now);
                } else {
                    let reason = if dev.partitioned {
                        "server unreachable"
                    } else {
                        "server refused the connection"
                    };
                    dev.conn = None;
                    self.conn_owner.remove(&conn);
                    engine.handle_disconnected(now, reason);
                }
                self.run_device(d).await
            }
            Frame::Request {
                device: d,
                conn,
                id,
                request,
            } => {
                if !self.devices[d].partitioned && self.server.is_connected(conn) {
                    self.server.handle_request(now, conn, id, request);
                    self.flush_server();
                }
                Ok(())
            }
            Frame::ServerSideClose { conn } => {
                self.server.disconnect(conn);
                self.conn_owner.remove(&conn);
                Ok(())
            }
            Frame::Incoming {
                device: d,
                conn,
                incoming,
            } => {
                let dev = &mut self.devices[d];
                if dev.partitioned || dev.conn != Some(conn) || !dev.connected {
                    return Ok(());
                }
                let Some(engine) = dev.engine.as_mut() else {
                    return Ok(());
                };
                match incoming {
                    Incoming::Response(id, response) => engine.handle_response(now, id, response),
                    Incoming::Push(push) => engine.handle_push(now, push),
                }
                self.run_device(d).await
            }
            Frame::DeviceSideClose { device: d, conn } => {
                let dev = &mut self.devices[d];
                // A close does not cross a partition either.
                if dev.partitioned || dev.conn != Some(conn) {
                    return Ok(());
                }
                dev.conn = None;
                dev.connected = false;
                self.conn_owner.remove(&conn);
                if let Some(engine) = dev.engine.as_mut() {
                    engine.handle_disconnected(now, "closed by the server");
                }
                self.run_device(d).await
            }
        }
    }

    /// Puts the server's outputs on the network.
    fn flush_server(&mut self) {
        while let Some(output) = self.server.poll_output() {
            match output {
                ServerOutput::Respond { conn, id, response } => {
                    self.send_to_device(conn, Incoming::Response(id, response));
                }
                ServerOutput::Push { conn, push } => {
                    self.send_to_device(conn, Incoming::Push(push))
                }
                ServerOutput::Close { conn } => {
                    if let Some(&d) = self.conn_owner.get(&conn) {
                        // After everything already sent on the connection.
                        let delay = self.devices[d].to_device.max_delay_ms().saturating_add(1);
                        self.net.schedule(
                            self.now.plus_millis(delay),
                            Frame::DeviceSideClose { device: d, conn },
                        );
                    }
                }
            }
        }
    }

    fn send_to_device(&mut self, conn: ConnId, incoming: Incoming) {
        let Some(&d) = self.conn_owner.get(&conn) else {
            return;
        };
        let dev = &self.devices[d];
        if dev.partitioned {
            return;
        }
        let link = dev.to_device;
        self.net.send(
            self.now,
            &mut self.rng,
            &link,
            Frame::Incoming {
                device: d,
                conn,
                incoming,
            },
        );
    }
}
