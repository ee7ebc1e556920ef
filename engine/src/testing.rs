//! Test support, behind the `testing` feature: the pieces of a driver loop that the
//! simulation (`tidemark-conformance`), the fuzz harnesses and the engine's own tests share.
//! Not for apps: an app runs the `tidemark` crate's `Client`, whose driver is the real one.
//!
//! A test driver of an [`Engine`] does three things, and these are the shared rules for each:
//! - drain [`Engine::poll_output`] until it returns [`Output::Timeout`], calling it a livelock
//!   after a bound ([`Drain`]);
//! - apply each write batch to the store in order and report it committed or failed
//!   ([`apply_write`]);
//! - when the engine stopped (a batch failed), drop whatever it still asks to write ([`Drain`]
//!   does) and, to go on, start a new engine from the store, which is at its last commit
//!   boundary ([`start_from`]).
//!
//! What a driver does with requests, connects and events is its own business.

use crate::{Applied, BatchId, Engine, EngineConfig, Output, Storage, StorageError, Timestamp};

/// One output to execute, or the end of a drain.
#[derive(Clone, Debug, PartialEq)]
pub enum Polled {
    /// An output other than [`Output::Timeout`]: the driver executes it, then polls again.
    Execute(Output),
    /// The engine asked to be woken at this time: the drain is over.
    Idle(Timestamp),
}

/// The engine gave more outputs than a drain allows without asking for a timeout.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("poll_output gave {limit} outputs without a timeout")]
pub struct Runaway {
    /// The bound that was reached.
    pub limit: usize,
}

/// One drain of [`Engine::poll_output`]: call [`Drain::next`] until it returns
/// [`Polled::Idle`], executing every [`Polled::Execute`] in between. The engine is passed to
/// each call, so the driver may hold it wherever it likes between polls.
#[derive(Clone, Copy, Debug)]
pub struct Drain {
    limit: usize,
    polled: usize,
}

impl Drain {
    /// A drain that gives up after `limit` polls without a timeout.
    pub fn new(limit: usize) -> Self {
        Self { limit, polled: 0 }
    }

    /// The next output to execute. A stopped engine's writes are skipped: its driver
    /// restarts it from the store, so they must never commit (as the `tidemark` driver does).
    pub fn next(&mut self, engine: &mut Engine) -> Result<Polled, Runaway> {
        loop {
            if self.polled >= self.limit {
                return Err(Runaway { limit: self.limit });
            }
            self.polled += 1;
            match engine.poll_output() {
                Output::Timeout(at) => return Ok(Polled::Idle(at)),
                Output::Write(..) if engine.is_stopped() => {}
                output => return Ok(Polled::Execute(output)),
            }
        }
    }
}

/// Applies write batch `id` to `store` and tells the engine how it went: committed (with what
/// the store refused, in [`Applied`]) or failed (the engine then stops). Returns the store's
/// answer for the driver's own bookkeeping.
pub async fn apply_write<S: Storage + ?Sized>(
    engine: &mut Engine,
    store: &S,
    now: Timestamp,
    id: BatchId,
    batch: crate::WriteBatch,
) -> Result<Applied, StorageError> {
    match store.apply(batch).await {
        Ok(applied) => {
            engine.handle_batch_committed(now, id, &applied);
            Ok(applied)
        }
        Err(err) => {
            engine.handle_batch_failed(now, id, &err);
            Err(err)
        }
    }
}

/// A new engine from `store`'s snapshot: how a driver starts, and restarts a stopped engine.
pub async fn start_from<S: Storage + ?Sized>(
    store: &S,
    config: EngineConfig,
    now: Timestamp,
) -> Result<Engine, StorageError> {
    let snapshot = store.load_snapshot().await?;
    Ok(Engine::new(config, snapshot, now))
}
