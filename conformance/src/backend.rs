//! [`Backend`]: the one trait a storage backend implements to run every shared suite (the
//! storage cases, the sync scenarios, the model), and [`crate::backend_suite!`], the one macro
//! that expands them into tests.

use std::collections::BTreeMap;
use std::sync::{Mutex, PoisonError};

use tidemark_engine::storage::{SendOutsideWasm, SyncOutsideWasm};
use tidemark_engine::{MemoryStorage, Storage, StorageError};

/// Opens a backend's stores, one per simulated device.
///
/// Device `i` must get the same durable data on every call of [`Backend::open`]: the first
/// call opens an empty store, later calls reopen it (after a simulated crash, or a close):
/// everything whose `apply` returned `Ok` is there, nothing else. The storage cases use
/// device 0 only; the simulation opens one store per device.
///
/// [`crate::backend_suite!`] evaluates the backend expression afresh for every test (and every
/// model case): a backend value may therefore own its resources (a temporary directory, a
/// database name) and always open the same place.
///
/// ```ignore
/// struct SqliteFiles { dir: tempfile::TempDir }
///
/// #[async_trait::async_trait]
/// impl Backend for SqliteFiles {
///     type Store = SqliteStorage;
///     async fn open(&self, device: usize) -> Result<SqliteStorage, StorageError> {
///         SqliteStorage::open(self.dir.path().join(format!("device-{device}.db")))
///     }
/// }
/// ```
///
/// Not `Send` on wasm32 (see [`SendOutsideWasm`]): the browser's stores live on one thread.
#[cfg_attr(target_family = "wasm", async_trait::async_trait(?Send))]
#[cfg_attr(not(target_family = "wasm"), async_trait::async_trait)]
pub trait Backend: SendOutsideWasm + SyncOutsideWasm {
    /// The store type.
    type Store: Storage;

    /// Opens device `device`'s store (see the trait docs for what it must hold).
    async fn open(&self, device: usize) -> Result<Self::Store, StorageError>;

    /// Closes `store` (device `device`'s) and opens the same durable data again, as a
    /// restarted app would. The default drops the handle and calls [`Backend::open`]; a
    /// backend whose close is asynchronous overrides it.
    async fn reopen(&self, device: usize, store: Self::Store) -> Result<Self::Store, StorageError> {
        drop(store);
        self.open(device).await
    }
}

/// The memory backend: one [`MemoryStorage`] per device, reopened as a clone.
pub type MemoryBackend = SharedBackend<MemoryStorage>;

/// A backend for stores whose clones share their data (an in-memory store behind an `Arc`):
/// it keeps one store per device and hands out clones, so a "reopen" sees exactly what was
/// committed. With the engine's `MemoryStorage` this is [`MemoryBackend`].
#[derive(Debug, Default)]
pub struct SharedBackend<S> {
    stores: Mutex<BTreeMap<usize, S>>,
}

impl<S> SharedBackend<S> {
    /// No store opened yet.
    pub fn new() -> Self {
        Self {
            stores: Mutex::new(BTreeMap::new()),
        }
    }
}

#[cfg_attr(target_family = "wasm", async_trait::async_trait(?Send))]
#[cfg_attr(not(target_family = "wasm"), async_trait::async_trait)]
impl<S> Backend for SharedBackend<S>
where
    S: Storage + Clone + Default + SendOutsideWasm + SyncOutsideWasm + 'static,
{
    type Store = S;

    async fn open(&self, device: usize) -> Result<S, StorageError> {
        // A panic elsewhere while the lock was held cannot leave the map half-changed.
        let mut stores = self.stores.lock().unwrap_or_else(PoisonError::into_inner);
        Ok(stores.entry(device).or_default().clone())
    }
}

/// Expands every shared suite for one [`Backend`]: module `storage` (one test per storage
/// conformance case, [`crate::storage_suite`]), module `scenarios` (one test per sync
/// scenario, each comparing its event log with the shared snapshot in [`crate::SNAPSHOT_DIR`],
/// plus a replay test) and module `model` (test `run`: the model-based property tests,
/// [`crate::model`], for [`crate::model::DEFAULT_CASES`] cases unless `PROPTEST_CASES` says
/// otherwise).
///
/// `backend` is an expression evaluated afresh in every test and for every model case, so each
/// gets its own stores. `model_regressions` is where proptest persists the model's failures
/// (an absolute path; commit the file). `sections` (optional, default all three, in any
/// order) expands only some suites, for a backend that splits them over several test files.
///
/// Natively the storage and scenario tests are `#[tokio::test]`s (the calling crate needs
/// `tokio` with `rt` and `macros` as a dev-dependency) and the model is a plain `#[test]` that
/// blocks on each case. A caller that needs another test attribute (the browser backend on
/// wasm32, `#[wasm_bindgen_test]`) writes it first: every test is then an `async fn` under
/// that attribute, and the model awaits [`crate::model::run_model_async`] (seed 0, nothing
/// persisted, so `model_regressions` is unused).
///
/// Cases and scenarios known to expose a bug carry their `#[ignore = ...]` here, so every
/// backend ignores them alike.
///
/// ```ignore
/// // conformance/tests/backend_memory.rs
/// tidemark_conformance::backend_suite! {
///     backend: tidemark_conformance::MemoryBackend::new(),
///     model_regressions: concat!(env!("CARGO_MANIFEST_DIR"), "/proptest-regressions/model_memory.txt"),
/// }
/// // a browser test
/// tidemark_conformance::backend_suite! {
///     #[wasm_bindgen_test::wasm_bindgen_test]
///     backend: BrowserBackend::new(),
///     model_regressions: "",
///     sections: [storage, scenarios],
/// }
/// ```
#[macro_export]
macro_rules! backend_suite {
    (
        $(#[$test:meta])?
        backend: $backend:expr,
        model_regressions: $regressions:expr
        $(,)?
    ) => {
        $crate::__backend_sections! {
            [$($test)?] [$backend] [$regressions] storage scenarios model
        }
    };
    (
        $(#[$test:meta])?
        backend: $backend:expr,
        model_regressions: $regressions:expr,
        sections: [$($section:ident),+ $(,)?]
        $(,)?
    ) => {
        $crate::__backend_sections! {
            [$($test)?] [$backend] [$regressions] $($section)+
        }
    };
}

/// One module per section of [`backend_suite!`].
#[doc(hidden)]
#[macro_export]
macro_rules! __backend_sections {
    ([$($test:meta)?] [$backend:expr] [$regressions:expr]) => {};
    ([$($test:meta)?] [$backend:expr] [$regressions:expr] storage $($rest:ident)*) => {
        /// The storage conformance cases.
        mod storage {
            #[allow(unused_imports, reason = "the backend expression may name the caller's items")]
            use super::*;
            $crate::__storage_suite_tests! { [$($test)?] $backend }
        }
        $crate::__backend_sections! { [$($test)?] [$backend] [$regressions] $($rest)* }
    };
    ([$($test:meta)?] [$backend:expr] [$regressions:expr] scenarios $($rest:ident)*) => {
        /// The sync scenarios.
        mod scenarios {
            #[allow(unused_imports, reason = "the backend expression may name the caller's items")]
            use super::*;
            $crate::__sync_scenario_tests! { [$($test)?] $backend }
        }
        $crate::__backend_sections! { [$($test)?] [$backend] [$regressions] $($rest)* }
    };
    ([] [$backend:expr] [$regressions:expr] model $($rest:ident)*) => {
        /// The model-based property tests.
        mod model {
            #[allow(unused_imports, reason = "the backend expression may name the caller's items")]
            use super::*;
            #[test]
            fn run() {
                $crate::model::run_model(|| $backend, $crate::model::config($regressions));
            }
        }
        $crate::__backend_sections! { [] [$backend] [$regressions] $($rest)* }
    };
    ([$test:meta] [$backend:expr] [$regressions:expr] model $($rest:ident)*) => {
        /// The model-based property tests.
        mod model {
            #[allow(unused_imports, reason = "the backend expression may name the caller's items")]
            use super::*;
            #[$test]
            async fn run() {
                let result = $crate::model::run_model_async(
                    || $backend,
                    $crate::model::ModelOptions::default(),
                    $crate::model::DEFAULT_CASES,
                    0,
                    $crate::model::DEFAULT_MAX_SHRINK_ITERS,
                )
                .await;
                if let Err(failure) = result {
                    panic!("{failure}");
                }
            }
        }
        $crate::__backend_sections! { [$test] [$backend] [$regressions] $($rest)* }
    };
}

/// One async test under the caller's attribute, or natively `#[tokio::test]` without one.
#[doc(hidden)]
#[macro_export]
macro_rules! __backend_test {
    ([] $(#[$attr:meta])* async fn $name:ident() $body:block) => {
        $(#[$attr])*
        #[cfg_attr(not(target_family = "wasm"), ::tokio::test)]
        async fn $name() $body
    };
    ([$test:meta] $(#[$attr:meta])* async fn $name:ident() $body:block) => {
        $(#[$attr])*
        #[$test]
        async fn $name() $body
    };
}
