//! A deterministic simulation of devices syncing with the inbox server, in the manner of
//! quinn-proto's test `Pair` and str0m's netem.
//!
//! A [`Sim`] owns a [`ServerCore`] over a [`MemoryServerStore`], a fake clock, a seeded
//! [`SimRng`], a simulated network ([`Netem`]) with per-device link settings, and devices: an
//! [`Engine`] with the store a [`Backend`] opened for it. The harness executes every
//! engine output the way a real driver would (connect, put requests on the wire, apply write
//! batches through [`tidemark_engine::Storage`], record events, remember the wakeup), so a seed replays a run
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
//! The files, by concern: this one holds [`Sim`], its settings, adding devices and the
//! read-only observations; `clock.rs` the run loop (stepping, driving, quiescence);
//! `device.rs` the devices (app commands, executing engine outputs, crashes and restarts);
//! `links.rs` links, partitions, connections and frame delivery, over `net.rs` ([`Netem`]);
//! `server_side.rs` the server's admin actions and routing its outputs; `log.rs` the records
//! scenarios snapshot; `rng.rs` the seeded PRNG; `error.rs` [`SimError`]. End-state checks
//! live outside, in [`crate::invariants`], which depends on this module and not the other way.
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

mod clock;
mod device;
mod error;
mod links;
mod log;
mod net;
mod rng;
mod server_side;

#[cfg(test)]
mod tests;

use std::collections::BTreeMap;

use tidemark_engine::testing::start_from;
use tidemark_engine::{
    ClientMsgId, ConversationId, ConversationKind, DeviceId, Engine, EngineConfig, Timestamp,
    UserId,
};

use crate::dispatch::DispatchOracle;
use crate::server::{ConnId, MemoryServerStore, ServerConfig, ServerCore};
use crate::Backend;

use device::Device;
use links::Frame;

pub use error::SimError;
pub use links::LinkDir;
pub use log::{EventRecord, PullRecord, RequestKind, RequestLog, SendRecord};
pub use net::{LinkConfig, Netem};
pub use rng::SimRng;

/// "No wakeup".
const NEVER: Timestamp = Timestamp(u64::MAX);

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
    /// `None`: a write batch commits as it is executed, before the device's next output
    /// (a store applying inline, as the memory and browser stores do). `Some(ms)`: it commits
    /// 0 to `ms` ms later (random, in order), as with a store that applies on its own thread
    /// (the native SQLite store): meanwhile the device goes on with its next outputs and
    /// inputs, its requests reach the wire before the batch is durable, and a crash loses
    /// every batch not yet committed.
    pub commit_latency_ms: Option<u64>,
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
            commit_latency_ms: None,
        }
    }
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
        let engine = start_from(&store, config.clone(), self.now)
            .await
            .map_err(|source| SimError::Storage {
                device: index,
                source,
            })?;
        self.devices.push(Device {
            user,
            id: device,
            config,
            store: Some(store),
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
            uncommitted: std::collections::VecDeque::new(),
        });
        self.run_device(index).await?;
        Ok(index)
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

    /// Device `d`'s store, for reads through [`tidemark_engine::Storage`].
    ///
    /// # Panics
    /// If device `d`'s last restart failed to open its store (the step that restarted it
    /// returned that error).
    pub fn store(&self, d: usize) -> &F::Store {
        match &self.devices[d].store {
            Some(store) => store,
            None => panic!("device {d} has no store: its last reopen failed"),
        }
    }

    /// Whether device `d` is connected (on the device side).
    pub fn is_connected(&self, d: usize) -> bool {
        self.devices[d].connected
    }

    /// Whether device `d`'s current process saw [`Event::Kicked`](tidemark_engine::Event::Kicked).
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
}
