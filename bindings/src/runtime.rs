//! The tokio runtime the bindings own: one per process, made on first use and never shut
//! down (dropping a runtime from one of its own threads, which a foreign GC may do, panics).
//! Every client's driver is a task on it, and every call from the foreign side runs on it, so
//! the foreign executor only ever waits for a join handle and never runs Tidemark's work.

use std::future::Future;
use std::sync::OnceLock;

use tokio::runtime::{Builder, Runtime};

use crate::TidemarkError;

/// Worker threads: the driver of a client is mostly waiting for the network and SQLite; two
/// keep a phone's cores free for the app while a read never waits behind a sync's write.
const WORKER_THREADS: usize = 2;

/// The process's runtime, made on first use.
pub(crate) fn runtime() -> Result<&'static Runtime, TidemarkError> {
    static RUNTIME: OnceLock<Result<Runtime, String>> = OnceLock::new();
    RUNTIME
        .get_or_init(|| {
            Builder::new_multi_thread()
                .worker_threads(WORKER_THREADS)
                .thread_name("tidemark-runtime")
                .enable_all()
                .build()
                .map_err(|e| e.to_string())
        })
        .as_ref()
        .map_err(|e| TidemarkError::internal(format!("cannot start the tokio runtime: {e}")))
}

/// Runs `work` on the runtime and waits for it from whatever executor polls this (the
/// foreign language's event loop or coroutine scope).
pub(crate) async fn on_runtime<T, F>(work: F) -> Result<T, TidemarkError>
where
    T: Send + 'static,
    F: Future<Output = Result<T, TidemarkError>> + Send + 'static,
{
    runtime()?
        .spawn(work)
        .await
        .map_err(|e| TidemarkError::internal(format!("a Tidemark task failed: {e}")))?
}
