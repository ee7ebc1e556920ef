//! The sync scenario suite: short stories over the simulated network and server, generic over
//! the storage backend, so every backend runs the very same scenarios and compares its event
//! logs against the very same snapshots (in [`crate::SNAPSHOT_DIR`]).
//!
//! Every scenario is an `async fn <name><F: Backend>(factory: F) -> ScenarioResult`. It
//! builds a [`Sim`] on the factory, plays its story, ends with the invariant check
//! ([`Sim::check_invariants`]: no message lost or duplicated, held ranges never claim a gap,
//! local max equals server max at quiescence, each message announced as new at most once,
//! every send acked exactly once or failed, unread equals the server's truth), asserts its
//! own end state through the [`tidemark_engine::Storage`] trait and the request log, and
//! returns its [`ScenarioLog`] for the snapshot.
//!
//! A backend runs them all with [`crate::backend_suite!`]. Scenario assertions panic (they
//! are test code); setup and read failures come back as [`ScenarioError`].

mod changes;
mod connection;
mod faults;
mod log;
mod read;
mod send;
mod sync;

use tidemark_engine::{
    Conversation, ConversationId, Direction, Event, Message, Seq, ServerError, Storage,
    StorageError,
};

use crate::invariants::InvariantViolations;
use crate::server::{ServerStore, ServerStoreError};
use crate::sim::{Sim, SimError};
use crate::Backend;

pub use changes::*;
pub use connection::*;
pub use faults::{FailApplies, FaultyBackend, FaultyStore};
pub use log::ScenarioLog;
pub use read::*;
pub use send::*;
pub use sync::*;

/// What a scenario returns: its log for the snapshot, or why it could not run.
pub type ScenarioResult = Result<ScenarioLog, ScenarioError>;

/// Why a scenario could not run to its end (its own assertions panic instead).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ScenarioError {
    /// A simulation step failed (not quiescent, a command refused, ...).
    #[error("simulation: {0}")]
    Sim(#[from] SimError),
    /// Reading a device store failed.
    #[error("device storage: {0}")]
    Storage(#[from] StorageError),
    /// Reading the server store failed.
    #[error("server store: {0}")]
    Server(#[from] ServerStoreError),
    /// The invariants do not hold.
    #[error("{0}")]
    Invariants(#[from] InvariantViolations),
    /// Something the scenario needs is not there.
    #[error("missing: {0}")]
    Missing(String),
}

/// Runs `scenario` twice, each time on a fresh factory, and asserts that both runs produce
/// the same log: a seed replays a run exactly, whatever the backend.
pub async fn assert_replays_identically<F, Fut>(
    scenario: impl Fn(F) -> Fut,
    first: F,
    second: F,
) -> Result<(), ScenarioError>
where
    F: Backend,
    Fut: std::future::Future<Output = ScenarioResult>,
{
    let a = scenario(first).await?;
    let b = scenario(second).await?;
    assert_eq!(a, b, "two runs of one seed differ");
    Ok(())
}

// ----- helpers shared by the scenarios -----

/// Checks the invariants (every scenario's end).
async fn check<F: Backend>(sim: &Sim<F>) -> Result<(), ScenarioError> {
    Ok(sim.check_invariants().await?)
}

fn cid(id: &str) -> ConversationId {
    ConversationId::from(id)
}

/// Device `d`'s stored record of conversation `id`.
async fn conversation<F: Backend>(
    sim: &Sim<F>,
    d: usize,
    id: &str,
) -> Result<Conversation, ScenarioError> {
    sim.store(d)
        .conversation(&cid(id))
        .await?
        .ok_or_else(|| ScenarioError::Missing(format!("device {d} has no conversation {id}")))
}

/// Device `d`'s stored messages with a seq in conversation `id`, ascending, read page by page.
async fn messages<F: Backend>(
    sim: &Sim<F>,
    d: usize,
    id: &str,
) -> Result<Vec<Message>, ScenarioError> {
    const PAGE: usize = 200;
    let mut out: Vec<Message> = Vec::new();
    let mut anchor = Seq(0);
    loop {
        let page = sim
            .store(d)
            .messages_page(&cid(id), Some(anchor), Direction::After, PAGE)
            .await?;
        let full = page.len() == PAGE;
        let last = page.last().and_then(|m| m.seq);
        out.extend(page);
        match last {
            Some(last) if full && last > anchor => anchor = last,
            _ => return Ok(out),
        }
    }
}

/// The seqs of device `d`'s stored messages in conversation `id`.
async fn stored_seqs<F: Backend>(
    sim: &Sim<F>,
    d: usize,
    id: &str,
) -> Result<Vec<u64>, ScenarioError> {
    Ok(messages(sim, d, id)
        .await?
        .iter()
        .filter_map(|m| m.seq.map(|s| s.0))
        .collect())
}

/// Every seq of conversation `id` device `d` announced as new, in announcement order (all
/// processes).
fn announced<F: Backend>(sim: &Sim<F>, d: usize, id: &str) -> Vec<u64> {
    let id = cid(id);
    sim.device_events(d)
        .into_iter()
        .filter_map(|r| match &r.event {
            Event::MessagesReceived {
                conversation,
                messages,
            } if conversation == &id => Some(messages.iter().filter_map(|m| m.seq.map(|s| s.0))),
            _ => None,
        })
        .flatten()
        .collect()
}

/// How many of device `d`'s events match.
fn count_events<F: Backend>(sim: &Sim<F>, d: usize, pred: impl Fn(&Event) -> bool) -> usize {
    sim.device_events(d)
        .into_iter()
        .filter(|r| pred(&r.event))
        .count()
}

/// A conversation's gaps as `(start, end)` pairs.
fn gaps(conv: &Conversation) -> Vec<(u64, u64)> {
    conv.gaps().iter().map(|r| (r.start.0, r.end.0)).collect()
}

/// The ranges device `d` asked to pull, as `(conversation, from, to)`.
fn pulled<F: Backend>(sim: &Sim<F>, d: usize) -> Vec<(String, u64, u64)> {
    sim.requests(d)
        .pulled()
        .iter()
        .map(|r| (r.conversation.to_string(), r.from.0, r.to.0))
        .collect()
}

/// The server's max seq of conversation `id`.
fn server_max<F: Backend>(sim: &Sim<F>, id: &str) -> Result<u64, ScenarioError> {
    Ok(sim
        .server()
        .store()
        .conversation(&cid(id))?
        .ok_or_else(|| ScenarioError::Missing(format!("server has no conversation {id}")))?
        .max_seq
        .0)
}

/// Takes device `d` offline for good until [`Sim::heal`]: partitioned (connects fail) and
/// disconnected (the engine knows).
async fn go_offline<F: Backend>(sim: &mut Sim<F>, d: usize) -> Result<(), ScenarioError> {
    sim.partition(d);
    sim.disconnect(d).await?;
    Ok(())
}

fn server_error(code: &str, permanent: bool) -> ServerError {
    ServerError {
        code: code.into(),
        message: format!("injected {code}"),
        permanent,
    }
}

/// Every sync scenario, for [`crate::backend_suite!`]: one test per scenario asserting its
/// event log against the shared snapshot in [`crate::SNAPSHOT_DIR`], plus a replay test (one
/// seed, two runs, the same log). `$test` is the bracketed test attribute (empty natively),
/// `$factory` the backend expression.
#[doc(hidden)]
#[macro_export]
macro_rules! __sync_scenario_tests {
    ($test:tt $factory:expr) => {
        $crate::__scenario_names! { __sync_scenario_case_tests $test $factory }

        $crate::__backend_test! {
            $test
            async fn lossy_network_replays_identically() {
                let result = $crate::scenarios::assert_replays_identically(
                    $crate::scenarios::lossy_network_converges,
                    $factory,
                    $factory,
                )
                .await;
                if let Err(err) = result {
                    panic!("{err}");
                }
            }
        }
    };
}

/// The one list of sync scenarios: calls `$crate::$then! { $args ; name, name, ... }`. The
/// tests ([`__sync_scenario_tests!`]) and the snapshots embedded for wasm32
/// (`embedded_snapshot`, wasm32 only) both come from it, so they cannot drift apart. Scenarios known to
/// expose a bug carry their `#[ignore = ...]` here, so every backend ignores them alike.
#[doc(hidden)]
#[macro_export]
macro_rules! __scenario_names {
    ($then:ident $($args:tt)*) => {
        $crate::$then! {
            $($args)*;
            fresh_login_small_account,
            fresh_login_ten_thousand_conversations,
            reconnect_after_offline_with_gaps,
            ten_thousand_conversations_hundred_changed,
            reconnect_with_sync_token_lists_only_changes,
            expired_sync_token_falls_back_to_the_full_listing,
            crash_before_the_sync_token_commits,
            crash_after_the_sync_token_commits,
            full_sync_policy_pulls_everything,
            capped_pull_replies_are_continued,
            background_fill_closes_old_gaps,
            load_history_into_a_gap,
            push_gap_is_pulled,
            duplicate_and_out_of_order_pushes,
            new_conversation_arrives_by_push,
            group_created_after_login_is_a_group,
            conversation_list_stays_current,
            two_users_exchange_messages,
            send_and_ack,
            ack_lost_then_reconnect,
            crash_after_outbox_commit_before_send,
            restart_with_pending_outbox,
            permanent_send_failure_then_retry,
            transient_send_failure_retried_with_backoff,
            transient_send_failure_gives_up_after_max_attempts,
            cancel_pending_send,
            offline_sends_keep_their_order,
            read_on_another_device,
            own_messages_are_never_unread,
            mark_read_offline_is_sent_after_reconnect,
            revoke_before_its_target,
            edit_before_its_target,
            deleted_seqs_become_tombstones,
            deletions_learned_at_login_are_not_announced,
            known_deletions_are_not_announced_again,
            history_floor_raised,
            deletions_and_floors_converge,
            silent_server_leads_to_reconnect,
            kicked_device_stays_offline,
            storage_failure_restarts_from_the_store,
            lossy_network_converges,
        }
    };
}

/// Defines `embedded_snapshot` over the scenario list (expanded in this crate, so the paths
/// are this crate's).
#[doc(hidden)]
#[macro_export]
macro_rules! __embed_snapshots {
    (; $($(#[$attr:meta])* $name:ident),* $(,)?) => {
        /// The committed snapshot of scenario `name` (the whole `.snap` file), built into the
        /// binary: a browser has no file system to read [`crate::SNAPSHOT_DIR`] from.
        pub fn embedded_snapshot(name: &str) -> Option<&'static str> {
            match name {
                $(stringify!($name) => Some(include_str!(concat!(
                    env!("CARGO_MANIFEST_DIR"),
                    "/snapshots/",
                    stringify!($name),
                    ".snap"
                ))),)*
                _ => None,
            }
        }
    };
}

#[cfg(target_family = "wasm")]
crate::__scenario_names! { __embed_snapshots }

/// Asserts that `log` equals the committed snapshot of scenario `name`, as insta would, for
/// targets where insta cannot read snapshot files (wasm32). A difference panics with both
/// texts; there is no snapshot review here: record changes natively with `cargo insta`.
#[cfg(target_family = "wasm")]
pub fn assert_embedded_snapshot<T: serde::Serialize>(name: &str, log: &T) {
    let Some(file) = embedded_snapshot(name) else {
        panic!("scenario {name} has no committed snapshot");
    };
    // A snapshot file is `---`, a metadata header, `---`, then the YAML body.
    let expected = file
        .splitn(3, "---\n")
        .nth(2)
        .unwrap_or_default()
        .trim_end();
    let actual = insta::_macro_support::serialize_value(
        log,
        insta::_macro_support::SerializationFormat::Yaml,
    );
    let actual = actual.trim_start_matches("---\n").trim_end();
    assert!(
        actual == expected,
        "scenario {name}: the event log differs from its snapshot\n--- expected\n{expected}\n--- actual\n{actual}"
    );
}

/// One test per listed scenario; see [`crate::backend_suite!`].
#[doc(hidden)]
#[macro_export]
macro_rules! __sync_scenario_case_tests {
    ($test:tt $factory:expr; $($(#[$attr:meta])* $name:ident),* $(,)?) => {
        $(
            $crate::__backend_test! {
                $test
                $(#[$attr])*
                async fn $name() {
                    let log = match $crate::scenarios::$name($factory).await {
                        Ok(log) => log,
                        Err(err) => panic!("scenario {} failed: {err}", stringify!($name)),
                    };
                    #[cfg(not(target_family = "wasm"))]
                    $crate::insta::with_settings!({
                        snapshot_path => $crate::SNAPSHOT_DIR,
                        prepend_module_to_snapshot => false,
                        omit_expression => true,
                    }, {
                        $crate::insta::assert_yaml_snapshot!(stringify!($name), log);
                    });
                    #[cfg(target_family = "wasm")]
                    $crate::scenarios::assert_embedded_snapshot(stringify!($name), &log);
                }
            }
        )*
    };
}
