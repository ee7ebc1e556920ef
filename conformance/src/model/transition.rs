//! [`Transition`]: one thing that happens to the system, and the proptest strategies that
//! generate runs of them ([`case_strategy`]).
//!
//! A transition names what it acts on by small numbers resolved when it is applied (a device
//! index, the n-th conversation of the device's user, the n-th text message of a
//! conversation, modulo what exists then). Every subsequence of a valid run is therefore a
//! valid run, so proptest's plain `Vec` shrinking (drop transitions, then simplify each one)
//! finds a minimal history without preconditions.

use std::fmt;

use proptest::prelude::*;

use super::topology::{CONVERSATIONS, DEVICES};

/// Most transitions in one generated case.
pub const MAX_TRANSITIONS: usize = 40;

/// Most messages appended to one conversation before the devices start.
pub const MAX_INITIAL: u8 = 12;

/// One generated run: the simulation seed (network randomness, engine seeds), the history
/// each conversation has before the devices start, and the transitions.
///
/// Its `Debug` form is Rust: with `use tidemark_conformance::model::{*, Transition::*,
/// Target::*, CrashPoint::*, Direction::*};` a failure report pastes into a test for
/// [`super::run_case`].
#[derive(Clone, PartialEq, Eq)]
pub struct ModelCase {
    /// Seeds the simulation.
    pub seed: u64,
    /// Messages appended to each conversation of [`CONVERSATIONS`] before any device starts.
    pub initial: [u8; CONVERSATIONS.len()],
    /// What happens, in order.
    pub transitions: Vec<Transition>,
}

impl fmt::Debug for ModelCase {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "ModelCase {{")?;
        writeln!(f, "    seed: {},", self.seed)?;
        writeln!(f, "    initial: {:?},", self.initial)?;
        writeln!(f, "    transitions: vec![")?;
        for t in &self.transitions {
            writeln!(f, "        {t:?},")?;
        }
        write!(f, "    ],\n}}")
    }
}

/// Which direction(s) of a device's link a [`Transition::Link`] sets.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Direction {
    /// Requests and replies alike.
    Both,
    /// Device to server only (lost requests).
    ToServer,
    /// Server to device only (lost acks and pushes).
    ToDevice,
}

/// Where an armed crash ([`crate::sim::Sim::crash_before`]) hits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CrashPoint {
    /// Before the device applies its write batch number `skip` from now (0: the next one):
    /// a crash at a commit boundary, that batch lost.
    BeforeWrite {
        /// Batches applied first.
        skip: u8,
    },
    /// Before request number `skip` from now goes on the wire.
    BeforeRequest {
        /// Requests sent first.
        skip: u8,
    },
    /// Before the next send request: the outbox batch committed, nothing on the wire.
    BeforeSend,
}

/// What the hostile member sends ([`Transition::Hostile`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HostileAct {
    /// Edits (or revokes) the `pick`-th text message someone else sent.
    ChangeOthers {
        /// Which message (modulo their number).
        pick: u8,
        /// Revoke rather than edit.
        revoke: bool,
    },
    /// Edits (or revokes) something that is not a message of the conversation it may change.
    BogusTarget {
        /// What.
        target: BogusTarget,
        /// Revoke rather than edit.
        revoke: bool,
    },
    /// Sends a text with this `created_at`.
    Time {
        /// Which extreme.
        at: ExtremeTime,
    },
    /// Sends a text under the `pick`-th client id it used before (in any conversation).
    ReuseOwnId {
        /// Which id (modulo their number).
        pick: u8,
    },
    /// Sends a text under the client id of the `pick`-th message someone else sent in the
    /// conversation (valid: ids are the sender's own).
    ForeignId {
        /// Which message (modulo their number).
        pick: u8,
    },
    /// Sends a message of a custom kind whose name is `len` times 64 characters long.
    LongKind {
        /// Length, in 64-character units.
        len: u8,
    },
    /// Marks the conversation read at seq `u64::MAX` (`high`) or 0.
    MarkRead {
        /// Which extreme.
        high: bool,
    },
    /// Pulls every seq of the conversation, and of one it is not a member of.
    Pull,
}

/// A target no change may name ([`HostileAct::BogusTarget`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BogusTarget {
    /// Seq 0.
    Zero,
    /// `u64::MAX`.
    Huge,
    /// One beyond the conversation's max seq (the change's own seq, or later).
    Future,
    /// A seq deleted on the server (else [`BogusTarget::Future`]).
    Deleted,
    /// An edit or revoke of the hostile member's own (else the newest change by anyone).
    Change,
}

/// A `created_at` for [`HostileAct::Time`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ExtremeTime {
    /// 0 (valid).
    Zero,
    /// `i64::MAX` (valid: every store holds it).
    I64Max,
    /// `i64::MAX + 1` (must be refused).
    AboveI64,
    /// `u64::MAX` (must be refused).
    U64Max,
}

/// Which text message a [`Transition::Change`] edits or revokes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Target {
    /// The last target changed in this conversation (a repeated change of one message), or
    /// the newest text when there is none.
    Again,
    /// The n-th existing text message (modulo their number).
    Pick(u8),
}

/// One thing that happens. Numbers that pick among existing things are taken modulo their
/// count when the transition is applied; a transition with nothing to act on does nothing.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Transition {
    /// `count` text messages appended on the server to conversation `conv` by its member
    /// number `sender` (as from a device outside the simulation: possibly a second device
    /// of a simulated user).
    Append {
        /// Index into [`CONVERSATIONS`].
        conv: u8,
        /// Which member sends.
        sender: u8,
        /// How many messages (1..).
        count: u8,
    },
    /// Device `device` sends a text to its user's `conv`-th conversation.
    Send {
        /// Device index.
        device: u8,
        /// Which of the user's conversations.
        conv: u8,
    },
    /// Device `device` marks its user's `conv`-th conversation read up to `behind` seqs
    /// below the newest it knows.
    MarkRead {
        /// Device index.
        device: u8,
        /// Which of the user's conversations.
        conv: u8,
        /// How far below the device's known max seq.
        behind: u8,
    },
    /// Device `device` loads `limit` seqs of history of its user's `conv`-th conversation,
    /// below `before` seqs under the newest it knows (`None`: from the newest).
    LoadHistory {
        /// Device index.
        device: u8,
        /// Which of the user's conversations.
        conv: u8,
        /// Anchor, as a distance below the device's known max seq.
        before: Option<u8>,
        /// How many seqs.
        limit: u8,
    },
    /// The server deletes the `pick`-th existing plain (not edit or revoke) message of
    /// `conv`. Changes are never deleted: a device that applied one cannot undo it (a
    /// documented limit).
    Delete {
        /// Index into [`CONVERSATIONS`].
        conv: u8,
        /// Which plain message.
        pick: u8,
    },
    /// The server raises `conv`'s history floor by `by` (at most to max seq + 1).
    RaiseFloor {
        /// Index into [`CONVERSATIONS`].
        conv: u8,
        /// How far (1..).
        by: u8,
    },
    /// The author of a text message of `conv` edits (or revokes) it on the server. (Only
    /// the author may: changes by anyone else are [`Transition::Hostile`].)
    Change {
        /// Index into [`CONVERSATIONS`].
        conv: u8,
        /// Which message.
        target: Target,
        /// Revoke rather than edit.
        revoke: bool,
    },
    /// The hostile member ([`super::topology::HOSTILE`], who has no device) sends a raw
    /// request to the server core concerning `conv`. The server's answer is judged by the
    /// rules of [`super::hostile`]; what it accepts is recorded in the model like any append.
    Hostile {
        /// Index into [`CONVERSATIONS`] (one the hostile member is not in, too).
        conv: u8,
        /// What it sends.
        act: HostileAct,
    },
    /// Sets device `device`'s link: 10 ms plus up to `jitter_ms` (which reorders), with
    /// `loss_pct`% of frames lost and `dup_pct`% duplicated. All zero: a clean link.
    Link {
        /// Device index.
        device: u8,
        /// Which direction(s).
        dir: Direction,
        /// Loss, in percent.
        loss_pct: u8,
        /// Duplication, in percent.
        dup_pct: u8,
        /// Jitter, in ms.
        jitter_ms: u8,
    },
    /// Device `device` is cut off (frames in flight to and from it are lost).
    Partition {
        /// Device index.
        device: u8,
    },
    /// Device `device`'s partition ends.
    Heal {
        /// Device index.
        device: u8,
    },
    /// Device `device`'s connection drops.
    Disconnect {
        /// Device index.
        device: u8,
    },
    /// Device `device` crashes now and restarts from its store.
    Crash {
        /// Device index.
        device: u8,
    },
    /// Arms a crash of device `device` at `point` (replacing one armed before).
    CrashBefore {
        /// Device index.
        device: u8,
        /// Where.
        point: CrashPoint,
    },
    /// The server answers the next `count` send requests (of any device) with an error.
    ///
    /// The server's fault hook models refusals a correct server can give: it skips a resend
    /// of a client id the server stored (issue 9, failure 6). A correct server answers such
    /// a resend with its original ack before any other rule, so it never tells a device that
    /// a message it holds failed; a hook that refused resends (as it did before) modelled a
    /// server that breaks that promise, and the model then saw sends `failed` that the
    /// server holds (`tests/model_memory.rs`: `resend_of_a_stored_send_is_acked_after_its_seq_is_deleted`).
    /// Hence no change to the transition or the reference: the device must end with the send
    /// acked (or its seq deleted), which the final checks demand.
    FailSends {
        /// How many.
        count: u8,
        /// A permanent error (the message fails) rather than a transient one (retried).
        permanent: bool,
    },
    /// Device `device` retries its `pick`-th failed message, if it has one.
    Retry {
        /// Device index.
        device: u8,
        /// Which failed message.
        pick: u8,
    },
    /// `ms` of simulated time pass ([`crate::sim::Sim::drive_for`]).
    Tick {
        /// Milliseconds.
        ms: u32,
    },
}

fn device() -> impl Strategy<Value = u8> {
    0..DEVICES.len() as u8
}

fn conversation() -> impl Strategy<Value = u8> {
    0..CONVERSATIONS.len() as u8
}

/// A member of a conversation (every one has at most three).
fn member() -> impl Strategy<Value = u8> {
    0u8..3
}

/// One of a device user's conversations (each has three).
fn own_conversation() -> impl Strategy<Value = u8> {
    0u8..3
}

/// One of several existing things (taken modulo their number).
fn pick() -> impl Strategy<Value = u8> {
    0u8..16
}

fn tick() -> impl Strategy<Value = Transition> {
    prop_oneof![
        6 => 0u32..600,
        3 => 600u32..5_000,
        // Long enough for request timeouts, heartbeats and reconnect backoff.
        1 => 15_000u32..40_000,
    ]
    .prop_map(|ms| Transition::Tick { ms })
}

fn link() -> impl Strategy<Value = Transition> {
    let dir = prop_oneof![
        2 => Just(Direction::Both),
        1 => Just(Direction::ToServer),
        1 => Just(Direction::ToDevice),
    ];
    let pct = prop_oneof![2 => Just(0u8), 1 => 1u8..=40];
    let jitter = prop_oneof![1 => Just(0u8), 1 => 1u8..=80];
    (device(), dir, pct.clone(), pct, jitter).prop_map(
        |(device, dir, loss_pct, dup_pct, jitter_ms)| Transition::Link {
            device,
            dir,
            loss_pct,
            dup_pct,
            jitter_ms,
        },
    )
}

fn hostile_act() -> impl Strategy<Value = HostileAct> {
    let bogus = prop_oneof![
        Just(BogusTarget::Zero),
        Just(BogusTarget::Huge),
        Just(BogusTarget::Future),
        Just(BogusTarget::Deleted),
        Just(BogusTarget::Change),
    ];
    let time = prop_oneof![
        Just(ExtremeTime::Zero),
        Just(ExtremeTime::I64Max),
        Just(ExtremeTime::AboveI64),
        Just(ExtremeTime::U64Max),
    ];
    prop_oneof![
        3 => (pick(), proptest::bool::weighted(0.3))
            .prop_map(|(pick, revoke)| HostileAct::ChangeOthers { pick, revoke }),
        2 => (bogus, proptest::bool::weighted(0.3))
            .prop_map(|(target, revoke)| HostileAct::BogusTarget { target, revoke }),
        2 => time.prop_map(|at| HostileAct::Time { at }),
        2 => pick().prop_map(|pick| HostileAct::ReuseOwnId { pick }),
        1 => pick().prop_map(|pick| HostileAct::ForeignId { pick }),
        1 => (1u8..=64).prop_map(|len| HostileAct::LongKind { len }),
        1 => proptest::bool::ANY.prop_map(|high| HostileAct::MarkRead { high }),
        1 => Just(HostileAct::Pull),
    ]
}

fn crash_point() -> impl Strategy<Value = CrashPoint> {
    prop_oneof![
        (0u8..4).prop_map(|skip| CrashPoint::BeforeWrite { skip }),
        (0u8..4).prop_map(|skip| CrashPoint::BeforeRequest { skip }),
        Just(CrashPoint::BeforeSend),
    ]
}

/// One transition, weighted towards time passing, appends and sends.
pub fn transition_strategy() -> impl Strategy<Value = Transition> {
    prop_oneof![
        8 => tick(),
        4 => (conversation(), member(), 1u8..=4)
            .prop_map(|(conv, sender, count)| Transition::Append { conv, sender, count }),
        4 => (device(), own_conversation())
            .prop_map(|(device, conv)| Transition::Send { device, conv }),
        2 => (device(), own_conversation(), 0u8..3).prop_map(|(device, conv, behind)| {
            Transition::MarkRead { device, conv, behind }
        }),
        1 => (device(), own_conversation(), proptest::option::of(0u8..12), 1u8..=12).prop_map(
            |(device, conv, before, limit)| Transition::LoadHistory {
                device,
                conv,
                before,
                limit,
            }
        ),
        1 => (conversation(), pick())
            .prop_map(|(conv, pick)| Transition::Delete { conv, pick }),
        1 => (conversation(), 1u8..=4).prop_map(|(conv, by)| Transition::RaiseFloor { conv, by }),
        3 => (
            conversation(),
            prop_oneof![1 => Just(Target::Again), 2 => pick().prop_map(Target::Pick)],
            proptest::bool::weighted(0.3),
        )
            .prop_map(|(conv, target, revoke)| Transition::Change {
                conv,
                target,
                revoke,
            }),
        3 => (conversation(), hostile_act())
            .prop_map(|(conv, act)| Transition::Hostile { conv, act }),
        2 => link(),
        1 => device().prop_map(|device| Transition::Partition { device }),
        1 => device().prop_map(|device| Transition::Heal { device }),
        1 => device().prop_map(|device| Transition::Disconnect { device }),
        1 => device().prop_map(|device| Transition::Crash { device }),
        2 => (device(), crash_point())
            .prop_map(|(device, point)| Transition::CrashBefore { device, point }),
        1 => (1u8..=3, proptest::bool::weighted(0.5))
            .prop_map(|(count, permanent)| Transition::FailSends { count, permanent }),
        1 => (device(), pick()).prop_map(|(device, pick)| Transition::Retry { device, pick }),
    ]
}

/// A whole case: a seed, the initial history, and up to `max_transitions` transitions.
pub fn case_strategy(max_transitions: usize) -> impl Strategy<Value = ModelCase> {
    (
        // Shrinking the seed would change every random draw of the run; keep it.
        any::<u64>().no_shrink(),
        proptest::array::uniform(0..=MAX_INITIAL),
        proptest::collection::vec(transition_strategy(), 1..=max_transitions.max(1)),
    )
        .prop_map(|(seed, initial, transitions)| ModelCase {
            seed,
            initial,
            transitions,
        })
}
