//! Test support, not for apps: [`ManualRuntime`], a clock that moves only when told.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll, Waker};

use tidemark_engine::Timestamp;

use crate::runtime::{BoxFuture, Runtime};

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
}
