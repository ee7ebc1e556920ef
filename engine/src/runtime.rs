//! The driver's runtime seam: the clock and sleeping.
//!
//! [`crate::Client`] depends on `futures` only; whatever else it needs from an executor comes
//! through [`Runtime`], so the same driver runs on tokio ([`TokioRuntime`], feature `tokio`),
//! in a browser, or on a simulated clock ([`ManualRuntime`]) in deterministic tests.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll, Waker};

use crate::model::Timestamp;
use crate::storage::{SendOutsideWasm, SyncOutsideWasm};

/// A boxed future: `Send` on native targets, not on wasm32 (browser futures are not `Send`).
#[cfg(not(target_family = "wasm"))]
pub type BoxFuture<'a, T> = futures::future::BoxFuture<'a, T>;
/// A boxed future: `Send` on native targets, not on wasm32 (browser futures are not `Send`).
#[cfg(target_family = "wasm")]
pub type BoxFuture<'a, T> = futures::future::LocalBoxFuture<'a, T>;

/// The clock and timer the driver uses. The engine itself never reads a clock: the driver
/// reads this one and passes the time in.
pub trait Runtime: Clone + SendOutsideWasm + SyncOutsideWasm + 'static {
    /// The current time, in milliseconds since the Unix epoch.
    fn now(&self) -> Timestamp;

    /// A future that completes at `deadline` (at once if it has passed). Dropping it cancels
    /// the sleep. A deadline far in the future (up to `u64::MAX`) must not overflow.
    fn sleep_until(&self, deadline: Timestamp) -> BoxFuture<'static, ()>;
}

/// [`Runtime`] on tokio: wall clock from [`std::time::SystemTime`], sleeping with
/// `tokio::time::sleep`. The sleep must be polled inside a tokio runtime with time enabled.
#[cfg(feature = "tokio")]
#[derive(Clone, Copy, Debug, Default)]
pub struct TokioRuntime;

#[cfg(feature = "tokio")]
impl TokioRuntime {
    /// The runtime (it holds nothing; tokio's timer is found from the current context).
    pub fn new() -> Self {
        Self
    }
}

#[cfg(feature = "tokio")]
impl Runtime for TokioRuntime {
    fn now(&self) -> Timestamp {
        system_now()
    }

    fn sleep_until(&self, deadline: Timestamp) -> BoxFuture<'static, ()> {
        // Relative to the wall clock read now: if the clock jumps meanwhile the engine just
        // gets an early or late (harmless) timeout.
        let wait = deadline.0.saturating_sub(system_now().0);
        // tokio caps far deadlines itself, so `u64::MAX` is fine here.
        Box::pin(tokio::time::sleep(std::time::Duration::from_millis(wait)))
    }
}

/// Milliseconds since the Unix epoch; 0 if the clock is set before it.
#[cfg(feature = "tokio")]
fn system_now() -> Timestamp {
    let since = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    Timestamp(u64::try_from(since.as_millis()).unwrap_or(u64::MAX))
}

/// A [`Runtime`] whose clock only moves when told to: deterministic tests and simulations
/// advance it and every sleep whose deadline is reached completes. Clones share the clock.
#[derive(Clone, Debug, Default)]
pub struct ManualRuntime {
    inner: Arc<Mutex<ManualInner>>,
}

#[derive(Debug, Default)]
struct ManualInner {
    now: Timestamp,
    /// Sleeps waiting for a deadline, to wake when the clock reaches it.
    sleepers: Vec<(Timestamp, Waker)>,
}

impl ManualRuntime {
    /// A clock showing `start`.
    pub fn new(start: Timestamp) -> Self {
        Self {
            inner: Arc::new(Mutex::new(ManualInner {
                now: start,
                sleepers: Vec::new(),
            })),
        }
    }

    /// Moves the clock forward by `millis` and wakes the sleeps that are due.
    pub fn advance(&self, millis: u64) {
        let now = self.lock().now.plus_millis(millis);
        self.set(now);
    }

    /// Moves the clock to `now` (never backwards) and wakes the sleeps that are due.
    pub fn set(&self, now: Timestamp) {
        let due: Vec<Waker> = {
            let mut inner = self.lock();
            inner.now = inner.now.max(now);
            let now = inner.now;
            let mut due = Vec::new();
            inner.sleepers.retain(|(deadline, waker)| {
                if *deadline <= now {
                    due.push(waker.clone());
                    false
                } else {
                    true
                }
            });
            due
        };
        // Woken outside the lock: a waker may poll (and so lock) right away.
        for waker in due {
            waker.wake();
        }
    }

    /// The earliest deadline a pending sleep waits for, so a simulation can jump to it.
    pub fn next_deadline(&self) -> Option<Timestamp> {
        self.lock().sleepers.iter().map(|(d, _)| *d).min()
    }

    fn lock(&self) -> MutexGuard<'_, ManualInner> {
        // The state is a clock and a waker list, consistent after any panic.
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl Runtime for ManualRuntime {
    fn now(&self) -> Timestamp {
        self.lock().now
    }

    fn sleep_until(&self, deadline: Timestamp) -> BoxFuture<'static, ()> {
        Box::pin(ManualSleep {
            runtime: self.clone(),
            deadline,
        })
    }
}

/// A sleep on a [`ManualRuntime`].
struct ManualSleep {
    runtime: ManualRuntime,
    deadline: Timestamp,
}

impl Future for ManualSleep {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let mut inner = self.runtime.lock();
        if inner.now >= self.deadline {
            return Poll::Ready(());
        }
        let deadline = self.deadline;
        // Replace this sleep's earlier registration rather than piling up wakers.
        match inner
            .sleepers
            .iter_mut()
            .find(|(d, w)| *d == deadline && w.will_wake(cx.waker()))
        {
            Some(_) => {}
            None => inner.sleepers.push((deadline, cx.waker().clone())),
        }
        Poll::Pending
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::FutureExt;

    #[test]
    fn manual_sleep_completes_when_clock_reaches_deadline() {
        let rt = ManualRuntime::new(Timestamp(100));
        let mut sleep = rt.sleep_until(Timestamp(150));
        assert!(sleep.as_mut().now_or_never().is_none());
        assert_eq!(rt.next_deadline(), Some(Timestamp(150)));
        rt.advance(49);
        assert!(sleep.as_mut().now_or_never().is_none());
        rt.clone().advance(1);
        assert_eq!(rt.next_deadline(), None);
        assert!(sleep.now_or_never().is_some());
        // Past deadlines complete at once; the clock never runs backwards.
        assert!(rt.sleep_until(Timestamp(0)).now_or_never().is_some());
        rt.set(Timestamp(10));
        assert_eq!(rt.now(), Timestamp(150));
        // A far deadline just stays pending.
        assert!(rt.sleep_until(Timestamp(u64::MAX)).now_or_never().is_none());
    }

    #[cfg(feature = "tokio")]
    #[tokio::test]
    async fn tokio_runtime_sleeps_and_reads_the_clock() {
        let rt = TokioRuntime::new();
        let start = rt.now();
        assert!(start.0 > 1_600_000_000_000, "wall clock in ms");
        rt.sleep_until(start).await;
        rt.sleep_until(rt.now().plus_millis(5)).await;
        assert!(rt.now() > start);
        // Far deadlines do not overflow.
        let far = rt.sleep_until(Timestamp(u64::MAX));
        assert!(far.now_or_never().is_none());
    }
}
