//! The driver's runtime seam: the clock and sleeping.
//!
//! The [`crate::Driver`] depends on `futures` only; whatever else it needs from an executor
//! comes through [`Runtime`], so the same driver runs on tokio (`TokioRuntime`, feature
//! `tokio`), in a browser (`BrowserRuntime`, on wasm32), or on a simulated clock
//! (`ManualRuntime`, feature `testing`) in deterministic tests.

use tidemark_engine::storage::{SendOutsideWasm, SyncOutsideWasm};
use tidemark_engine::Timestamp;

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

#[cfg(target_family = "wasm")]
pub use browser::BrowserRuntime;

/// [`Runtime`] in a browser (a page or any worker): the clock is `Date.now()`, sleeping is the
/// global `setTimeout`, so the driver runs on the browser's own event loop
/// (`wasm_bindgen_futures::spawn_local(driver)`).
#[cfg(target_family = "wasm")]
mod browser {
    use std::future::Future;
    use std::pin::Pin;
    use std::task::{Context, Poll};

    use futures::channel::oneshot;
    use tidemark_engine::Timestamp;
    use wasm_bindgen::closure::Closure;
    use wasm_bindgen::prelude::wasm_bindgen;
    use wasm_bindgen::{JsCast, JsValue};

    use super::{BoxFuture, Runtime};

    #[wasm_bindgen]
    extern "C" {
        // The global functions, present in windows and in every kind of worker alike.
        #[wasm_bindgen(js_name = setTimeout)]
        fn set_timeout(handler: &js_sys::Function, millis: i32) -> JsValue;
        #[wasm_bindgen(js_name = clearTimeout)]
        fn clear_timeout(id: &JsValue);
    }

    /// [`Runtime`] on the browser's clock and timers. Holds nothing: clones are free.
    #[derive(Clone, Copy, Debug, Default)]
    pub struct BrowserRuntime;

    impl BrowserRuntime {
        /// The runtime.
        pub fn new() -> Self {
            Self
        }
    }

    impl Runtime for BrowserRuntime {
        fn now(&self) -> Timestamp {
            // `Date.now()` is a whole number of milliseconds since the epoch (0 before it).
            let now = js_sys::Date::now();
            Timestamp(if now > 0.0 { now as u64 } else { 0 })
        }

        fn sleep_until(&self, deadline: Timestamp) -> BoxFuture<'static, ()> {
            let wait = deadline.0.saturating_sub(self.now().0);
            // setTimeout takes at most i32::MAX ms (about 24.8 days); a farther deadline wakes
            // the driver early, which only costs it one harmless look at the engine.
            let millis = i32::try_from(wait).unwrap_or(i32::MAX);
            let (tx, rx) = oneshot::channel();
            let mut tx = Some(tx);
            let fire = Closure::<dyn FnMut()>::new(move || {
                if let Some(tx) = tx.take() {
                    let _ = tx.send(());
                }
            });
            let id = set_timeout(fire.as_ref().unchecked_ref(), millis);
            Box::pin(BrowserSleep {
                rx,
                id,
                _fire: fire,
            })
        }
    }

    /// A pending `setTimeout`; dropping it clears the timer.
    struct BrowserSleep {
        rx: oneshot::Receiver<()>,
        id: JsValue,
        /// Kept alive until the timer fired or was cleared.
        _fire: Closure<dyn FnMut()>,
    }

    impl Future for BrowserSleep {
        type Output = ();

        fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
            // A cancelled sender cannot happen while `_fire` lives; ending is the safe answer.
            Pin::new(&mut self.rx).poll(cx).map(|_| ())
        }
    }

    impl Drop for BrowserSleep {
        fn drop(&mut self) {
            clear_timeout(&self.id);
        }
    }
}

#[cfg(all(test, feature = "tokio"))]
mod tests {
    use super::*;
    use futures::FutureExt;

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
