//! [`FaultyBackend`]: storage fault injection for any backend, so the storage-failure
//! scenario runs the same against memory, SQLite and the browser store.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use tidemark_engine::{StorageError, WriteBatch};

use crate::hooked::{ApplyHook, HookedStore};
use crate::Backend;

/// Wraps another factory's stores in [`FaultyStore`]s whose `apply` can be told to fail.
/// The failure budget of a device survives reopening its store (a restart).
#[derive(Debug)]
pub struct FaultyBackend<F> {
    inner: F,
    budgets: Mutex<BTreeMap<usize, Arc<AtomicUsize>>>,
}

impl<F> FaultyBackend<F> {
    /// Wraps `inner`; nothing fails until told to.
    pub fn new(inner: F) -> Self {
        Self {
            inner,
            budgets: Mutex::new(BTreeMap::new()),
        }
    }

    /// The next `n` `apply` calls on device `device`'s store fail with
    /// [`StorageError::Backend`] and change nothing. Replaces any count still pending.
    pub fn fail_next_applies(&self, device: usize, n: usize) {
        self.budget(device).store(n, Ordering::SeqCst);
    }

    fn budget(&self, device: usize) -> Arc<AtomicUsize> {
        let mut budgets = self.budgets.lock().unwrap_or_else(PoisonError::into_inner);
        budgets.entry(device).or_default().clone()
    }
}

#[cfg_attr(target_family = "wasm", async_trait::async_trait(?Send))]
#[cfg_attr(not(target_family = "wasm"), async_trait::async_trait)]
impl<F: Backend> Backend for FaultyBackend<F> {
    type Store = FaultyStore<F::Store>;

    async fn open(&self, device: usize) -> Result<Self::Store, StorageError> {
        let inner = self.inner.open(device).await?;
        Ok(HookedStore::new(inner, FailApplies(self.budget(device))))
    }
}

/// A store whose `apply` fails while its budget lasts; every other call passes through.
pub type FaultyStore<S> = HookedStore<S, FailApplies>;

/// The [`ApplyHook`] of a [`FaultyStore`]: fails `apply` (changing nothing) while the
/// device's budget lasts.
#[derive(Debug)]
pub struct FailApplies(Arc<AtomicUsize>);

impl ApplyHook for FailApplies {
    fn before_apply(&self, _batch: &mut WriteBatch) -> Result<(), StorageError> {
        let fail = self
            .0
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok();
        if fail {
            return Err(StorageError::Backend {
                detail: "injected apply failure".into(),
                source: None,
            });
        }
        Ok(())
    }
}
