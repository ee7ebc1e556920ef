//! The native store's writer thread: [`Storage::apply`](tidemark_engine::Storage::apply)
//! hands its batch to it and awaits the commit.
//!
//! rusqlite is synchronous, so without it a batch would run on the thread that polls the
//! apply, which is the driver's: the engine could not reconcile the next server page while
//! SQLite commits this one. With the writer thread the two overlap, on two cores. One thread
//! per store (clones share it) applies batches in the order they were handed over, which is
//! the order the engine emitted them.
//!
//! The thread holds the connection and the store's health, never a [`SqliteStorage`]: when
//! the last clone of the store is dropped, [`Writer`]'s drop closes the queue and waits for
//! the thread to finish what it was given, so the file is closed (and its lock released)
//! when the drop returns, as it was without the thread.
//!
//! [`SqliteStorage`]: crate::SqliteStorage

use std::sync::{mpsc, Arc, Mutex, PoisonError};
use std::thread::JoinHandle;

use futures::channel::oneshot;
use tidemark_engine::{Applied, StorageError, WriteBatch};

/// A batch to apply and where its result goes.
type Job = (WriteBatch, oneshot::Sender<Result<Applied, StorageError>>);

/// The writer thread of one store, shared by its clones.
pub(crate) struct Writer {
    /// `None` once dropped (or when the thread could not be started).
    jobs: Mutex<Option<mpsc::Sender<Job>>>,
    thread: Option<JoinHandle<()>>,
}

impl Writer {
    /// Starts the thread; `apply` is what it runs for every batch. Without a thread (the
    /// platform refused one) every batch is applied by its caller, as before the thread.
    pub(crate) fn start(
        apply: impl Fn(WriteBatch) -> Result<Applied, StorageError> + Send + 'static,
    ) -> Arc<Self> {
        let (tx, rx) = mpsc::channel::<Job>();
        let spawned = std::thread::Builder::new()
            .name("tidemark-store-writer".into())
            .spawn(move || {
                // Ends when every sender is gone: the store was dropped.
                for (batch, reply) in rx {
                    // Whoever awaited the result may have stopped waiting (a dropped
                    // future): the batch is applied all the same, as it would have been
                    // inline had it started.
                    let _ = reply.send(apply(batch));
                }
            });
        let (jobs, thread) = match spawned {
            Ok(thread) => (Some(tx), Some(thread)),
            Err(_) => (None, None),
        };
        Arc::new(Self {
            jobs: Mutex::new(jobs),
            thread,
        })
    }

    /// Hands `batch` to the thread: `Ok` with where its result will arrive, or the batch
    /// back when there is no thread to take it (the caller applies it itself).
    pub(crate) fn submit(
        &self,
        batch: WriteBatch,
    ) -> Result<oneshot::Receiver<Result<Applied, StorageError>>, WriteBatch> {
        let jobs = self.jobs.lock().unwrap_or_else(PoisonError::into_inner);
        let Some(tx) = jobs.as_ref() else {
            return Err(batch);
        };
        let (reply, result) = oneshot::channel();
        match tx.send((batch, reply)) {
            Ok(()) => Ok(result),
            // The thread is gone (it can only have panicked): apply inline from now on.
            Err(mpsc::SendError((batch, _))) => Err(batch),
        }
    }
}

impl Drop for Writer {
    fn drop(&mut self) {
        // Closing the queue ends the thread once it has applied what it holds.
        self.jobs
            .get_mut()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        if let Some(thread) = self.thread.take() {
            // A panic on the thread already failed its batch's caller (the reply was
            // dropped); nothing more to report here.
            let _ = thread.join();
        }
    }
}
