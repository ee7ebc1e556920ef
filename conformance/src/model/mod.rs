//! Model-based property tests of engine + storage + simulated server, in the manner of
//! firezone's connlib tests: proptest generates runs of [`Transition`]s, a [`Sim`] executes
//! them next to a [`Reference`] model, and a failure shrinks to a minimal run.
//!
//! Generic over the storage backend ([`Backend`]): memory, SQLite and the browser
//! backend run the very same model.
//!
//! # What runs
//!
//! The participants are fixed ([`topology`]): users `alice` (two devices: newest-first
//! without background fill, and full sync) and `bob` (one device: newest-first with
//! background fill), plus `carol` and `dave` who only append on the server; two groups and
//! two direct conversations. A [`ModelCase`] is a seed, some history per conversation
//! before the devices start, and up to [`MAX_TRANSITIONS`] transitions: server appends by
//! any member, local sends, `mark_read` (on either of alice's devices), `load_history`,
//! per-seq deletions of plain messages, floor raises, edits and revokes by their authors
//! (repeatedly of one target too), raw requests of a hostile member ([`Transition::Hostile`]:
//! `carol`, without a device, edits and revokes others' messages and bogus targets, sends
//! with extreme `created_at`, reused client ids, long custom kinds, marks read at extreme
//! seqs, pulls a conversation she is not in; [`hostile`] judges the server's answers), link
//! faults per device and direction (loss, duplication, jitter that reorders), partitions and
//! heals, disconnects, crashes now or armed before the next write batch / request / send
//! ([`Sim::crash_before`]), server send errors, retries of failed messages, and time passing
//! ([`Sim::drive_for`]). Send errors are transient unless [`ModelOptions::failed_sends`] is
//! on (the default). In the cases with an odd seed every write batch commits 0 to 30 ms
//! after the engine emitted it (`SimConfig::commit_latency_ms`), as with a store that applies
//! on its own thread: the engine handles later answers while batches are in flight, and a
//! crash loses the ones not committed yet.
//!
//! # What is checked
//!
//! After every transition (valid at any moment, so partitioned devices and messages in
//! flight do not matter): the server's inbox equals the model's (messages, deletions,
//! floor; each device send at most once, with its content; no read seq beyond a mark or own
//! message); the server accepted no raw request a correct server refuses and stores no value
//! above `i64::MAX`; every store passes its integrity check, has no duplicate row, never
//! claims a held seq it does not store, stores only messages the server assigned there, with
//! content some subset of their author's changes explains (no device shows text its author
//! did not send); the harness's dispatch rules hold.
//!
//! After the run: [`Sim::heal_all`], [`Sim::drive`] to quiescence (failing to get there is a
//! failure), then [`Sim::check_invariants`] (local equals server, unread equals the server's
//! truth, every send acked exactly once or failed, each message announced as new at most
//! once) and the model's expectations: read seqs within the model's bounds, every device
//! showing the model's max seq, floor, read seq and unread, its policy window held with the
//! model's content, every send ended as the model says, every `load_history` answered once.
//!
//! The reference is not a `proptest-state-machine` `ReferenceStateMachine`: where a device
//! send lands depends on the simulated network, so the model learns it from the server
//! (and checks it) instead of predicting it. Transitions pick their targets by index when
//! applied, so any subsequence of a run is a run, and a plain `Vec` strategy shrinks.
//!
//! # Running, replaying
//!
//! A backend calls [`run_model`] with a factory maker and [`config`]; the test prints its
//! case count first. `PROPTEST_CASES` sets the count (default [`DEFAULT_CASES`]), e.g. the
//! long run for the memory backend:
//!
//! ```text
//! PROPTEST_CASES=100000 cargo test --release -p tidemark-conformance --test backend_memory model:: -- --nocapture
//! ```
//!
//! A failure shrinks, then panics with the minimal [`ModelCase`] (the transition list, in
//! Rust syntax) and the trace of what each transition did; proptest also appends the
//! failing seed to the backend's regression file (`proptest-regressions/*.txt` of the
//! crate that runs it, to be committed), and every later run replays the persisted seeds
//! first. A minimal case can also be pasted into a test and run with [`run_case`] (with
//! the options of the run that found it).
//!
//! [`run_model`] runs each case with `futures::executor::block_on`, which needs a store
//! whose futures complete without waiting on an event loop (memory, SQLite). A browser
//! backend awaits [`run_model_async`] instead: same cases and shrinking, no regression file
//! (it reports the seed to pass again).
//!
//! [`Sim`]: crate::sim::Sim
//! [`Sim::crash_before`]: crate::sim::Sim::crash_before
//! [`Sim::drive_for`]: crate::sim::Sim::drive_for
//! [`Sim::heal_all`]: crate::sim::Sim::heal_all
//! [`Sim::drive`]: crate::sim::Sim::drive
//! [`Sim::check_invariants`]: crate::sim::Sim::check_invariants

mod checks;
pub mod hostile;
mod reference;
mod sut;
pub mod topology;
mod transition;

use std::fmt;

use proptest::strategy::{Strategy, ValueTree};
use proptest::test_runner::{
    Config, FileFailurePersistence, RngAlgorithm, TestCaseError, TestRng, TestRunner,
};

pub use reference::{
    ExpectedContent, ReadBounds, RefConversation, RefHistory, RefMessage, RefSend, Reference,
};
pub use transition::{
    case_strategy, transition_strategy, BogusTarget, CrashPoint, Direction, ExtremeTime,
    HostileAct, ModelCase, Target, Transition, MAX_INITIAL, MAX_TRANSITIONS,
};

use crate::Backend;
use sut::ModelRun;

/// What the generated runs may contain.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ModelOptions {
    /// Most transitions per case.
    pub max_transitions: usize,
    /// Let sends fail for good: [`Transition::FailSends`] injects permanent errors as
    /// generated, and transient errors count towards the engine's `send_max_attempts`.
    /// When off, every injected error is transient, and fewer are injected in a whole run
    /// than a send takes to give up (the retry path is exercised, the failed path is not).
    ///
    /// On by default. It found that the late echo of a failed send was announced as a
    /// received message (see `tests/model_memory.rs`), fixed in the engine since.
    pub failed_sends: bool,
}

impl Default for ModelOptions {
    fn default() -> Self {
        Self {
            max_transitions: MAX_TRANSITIONS,
            failed_sends: true,
        }
    }
}

/// Cases per run when `PROPTEST_CASES` is not set.
pub const DEFAULT_CASES: u32 = 256;

/// Shrink steps when `PROPTEST_MAX_SHRINK_ITERS` is not set.
pub const DEFAULT_MAX_SHRINK_ITERS: u32 = 2_000;

/// A proptest config for [`run_model`]: proptest's defaults and environment variables
/// (`PROPTEST_CASES`, `PROPTEST_MAX_SHRINK_ITERS`, ...), [`DEFAULT_CASES`] when
/// `PROPTEST_CASES` is not set, and failures persisted to `regressions` (an absolute path;
/// use `concat!(env!("CARGO_MANIFEST_DIR"), "/proptest-regressions/<test>.txt")`).
pub fn config(regressions: &'static str) -> Config {
    config_with_cases(regressions, DEFAULT_CASES)
}

/// [`config`] with `cases` cases when `PROPTEST_CASES` is not set.
pub fn config_with_cases(regressions: &'static str, cases: u32) -> Config {
    let mut config = Config::default();
    if std::env::var_os("PROPTEST_CASES").is_none() {
        config.cases = cases;
    }
    if std::env::var_os("PROPTEST_MAX_SHRINK_ITERS").is_none() {
        config.max_shrink_iters = DEFAULT_MAX_SHRINK_ITERS;
    }
    config.failure_persistence = Some(Box::new(FileFailurePersistence::Direct(regressions)));
    config
}

/// Why a case failed: every violation found, and what each transition did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CaseFailure {
    /// The violations (or the harness error), one per line.
    pub violations: String,
    /// What each transition did, one per line.
    pub trace: String,
}

impl fmt::Display for CaseFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}\n  trace:\n{}", self.violations, self.trace)
    }
}

impl std::error::Error for CaseFailure {}

/// Runs one case on stores from `factory`: the transitions with the per-step checks, then
/// heal, drive to quiescence and the final checks.
pub async fn run_case<F: Backend>(
    factory: F,
    case: &ModelCase,
    options: ModelOptions,
) -> Result<(), CaseFailure> {
    let mut run = ModelRun::start(factory, case, options)
        .await
        .map_err(|violations| CaseFailure {
            violations,
            trace: String::new(),
        })?;
    let mut result = Ok(());
    for (i, transition) in case.transitions.iter().enumerate() {
        result = run.step(i, transition).await;
        if result.is_err() {
            break;
        }
    }
    if result.is_ok() {
        result = run.finish().await;
    }
    result.map_err(|violations| CaseFailure {
        violations,
        trace: run.trace().to_owned(),
    })
}

/// Runs the model for `config.cases` cases on stores from `make_factory` (a fresh factory
/// per case), with the default [`ModelOptions`], shrinking and persisting a failure as
/// [`config`] says; panics with the minimal case. See the module docs.
pub fn run_model<F: Backend>(make_factory: impl Fn() -> F, config: Config) {
    run_model_with(make_factory, config, ModelOptions::default());
}

/// [`run_model`] with these options.
pub fn run_model_with<F: Backend>(
    make_factory: impl Fn() -> F,
    config: Config,
    options: ModelOptions,
) {
    println!(
        "model: {} cases of up to {} transitions (PROPTEST_CASES sets the count); {options:?}",
        config.cases, options.max_transitions
    );
    let mut runner = TestRunner::new(config);
    let result = runner.run(&case_strategy(options.max_transitions), |case| {
        futures::executor::block_on(run_case(make_factory(), &case, options))
            .map_err(|failure| TestCaseError::fail(failure.to_string()))
    });
    if let Err(e) = result {
        panic!("{e}");
    }
}

/// A failure found by [`run_model_async`], shrunk.
#[derive(Clone, Debug)]
pub struct ModelFailure {
    /// The seed of the run that found it ([`run_model_async`] with it replays the run).
    pub seed: u64,
    /// The minimal failing case.
    pub case: ModelCase,
    /// Why it fails.
    pub failure: CaseFailure,
}

impl fmt::Display for ModelFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "model failure (run seed {}); minimal case: {:?}\n{}",
            self.seed, self.case, self.failure
        )
    }
}

impl std::error::Error for ModelFailure {}

/// [`run_model`] for backends whose store futures must be awaited on the host's event loop
/// (the browser): `cases` cases generated from `seed`, each awaited, a failure shrunk (at
/// most `max_shrink_iters` steps) and returned. Nothing is persisted: the same `seed`
/// replays the run.
pub async fn run_model_async<F: Backend>(
    make_factory: impl Fn() -> F,
    options: ModelOptions,
    cases: u32,
    seed: u64,
    max_shrink_iters: u32,
) -> Result<(), ModelFailure> {
    let mut bytes = [0u8; 32];
    bytes[..8].copy_from_slice(&seed.to_le_bytes());
    let mut runner = TestRunner::new_with_rng(
        Config::default(),
        TestRng::from_seed(RngAlgorithm::ChaCha, &bytes),
    );
    let strategy = case_strategy(options.max_transitions);
    for _ in 0..cases {
        let mut tree = match strategy.new_tree(&mut runner) {
            Ok(tree) => tree,
            // The strategy has no filters: generation cannot be rejected.
            Err(reason) => unreachable!("case generation rejected: {reason}"),
        };
        let Err(failure) = run_case(make_factory(), &tree.current(), options).await else {
            continue;
        };
        let mut minimal = (tree.current(), failure);
        let mut iterations = 0;
        let mut more = tree.simplify();
        while more && iterations < max_shrink_iters {
            iterations += 1;
            match run_case(make_factory(), &tree.current(), options).await {
                Err(failure) => {
                    minimal = (tree.current(), failure);
                    more = tree.simplify();
                }
                Ok(()) => more = tree.complicate(),
            }
        }
        return Err(ModelFailure {
            seed,
            case: minimal.0,
            failure: minimal.1,
        });
    }
    Ok(())
}
