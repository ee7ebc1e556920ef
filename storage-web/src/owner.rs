//! [`OwnerLock`]: one owner per database across every tab and worker of an origin, with the
//! browser's Web Locks.
//!
//! A Web Lock is held for as long as the promise its callback returns is pending, and the
//! browser releases it by itself when the context that holds it goes away (a tab closed or
//! reloaded, a worker terminated, a crash). So a store can never be left locked by an owner
//! that no longer runs, which a flag in storage could not promise.

use std::cell::RefCell;
use std::rc::Rc;

use futures::channel::oneshot;
use futures::future::{self, Either};
use js_sys::{Function, Object, Promise, Reflect};
use tidemark_engine::StorageError;
use wasm_bindgen::prelude::*;
use wasm_bindgen_futures::JsFuture;

use crate::error::JsErrorText;

/// The Web Lock held by the owner of one database; released when dropped or closed.
pub(crate) struct OwnerLock {
    /// Resolves the promise that holds the lock.
    release: Option<Function>,
    /// The browser's request, settled once the lock was released.
    request: Option<JsFuture>,
}

impl std::fmt::Debug for OwnerLock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OwnerLock")
            .field("held", &self.release.is_some())
            .finish()
    }
}

impl OwnerLock {
    /// Takes the lock named `name`. When another context holds it: fails at once with
    /// [`StorageError::InUse`] unless `wait`, in which case this waits until the holder lets
    /// go (closes the store, or its tab or worker goes away).
    pub(crate) async fn acquire(name: &str, wait: bool) -> Result<Self, StorageError> {
        let locks = lock_manager()?;
        let request: Function = Reflect::get(&locks, &"request".into())
            .and_then(JsCast::dyn_into)
            .map_err(|e| unavailable("navigator.locks.request", JsErrorText::from_js(&e)))?;

        // The callback answers with the lock (or null when `ifAvailable` found it taken);
        // holding it means returning a promise that stays pending until we resolve it.
        let (granted_tx, granted_rx) = oneshot::channel::<Option<Function>>();
        let granted_tx = Rc::new(RefCell::new(Some(granted_tx)));
        let callback = Closure::once_into_js(move |lock: JsValue| -> Promise {
            let send = |release| {
                if let Some(tx) = granted_tx.borrow_mut().take() {
                    // The opener may have given up (its future dropped): nothing to tell.
                    let _ = tx.send(release);
                }
            };
            if lock.is_null() {
                send(None);
                return Promise::resolve(&JsValue::UNDEFINED);
            }
            let mut release = None;
            let held = Promise::new(&mut |resolve, _reject| release = Some(resolve));
            send(release);
            held
        });

        let options = Object::new();
        let set = |key: &str, value: JsValue| {
            Reflect::set(&options, &key.into(), &value)
                .map_err(|e| unavailable("building the lock options", JsErrorText::from_js(&e)))
        };
        set("mode", "exclusive".into())?;
        set("ifAvailable", (!wait).into())?;
        let requested = request
            .call3(&locks, &name.into(), &options, &callback)
            .map_err(|e| unavailable("navigator.locks.request", JsErrorText::from_js(&e)))?;
        let mut request = JsFuture::from(Promise::from(requested));

        // Either the callback runs (granted or not available), or the request itself fails
        // (an invalid name, a document without a lock manager) before calling it.
        let granted = match future::select(granted_rx, &mut request).await {
            Either::Left((Ok(granted), _)) => granted,
            Either::Left((Err(oneshot::Canceled), _)) => None,
            Either::Right((Err(e), _)) => {
                return Err(unavailable(
                    "navigator.locks.request",
                    JsErrorText::from_js(&e),
                ))
            }
            // Settled without the callback sending anything: cannot happen by the spec, and
            // would mean we hold nothing.
            Either::Right((Ok(_), _)) => None,
        };
        match granted {
            Some(release) => Ok(Self {
                release: Some(release),
                request: Some(request),
            }),
            None => Err(StorageError::InUse {
                detail: format!(
                    "database lock {name:?} is held by another tab or worker of this origin"
                ),
            }),
        }
    }

    /// Releases the lock and waits until the browser has let it go, so that an open right
    /// after this returns does not find it still held.
    pub(crate) async fn release(mut self) {
        self.let_go();
        if let Some(request) = self.request.take() {
            // The request settles with the held promise's value once released; an error
            // here changes nothing for us: the lock is gone either way.
            let _ = request.await;
        }
    }

    fn let_go(&mut self) {
        if let Some(release) = self.release.take() {
            // Resolving a promise's resolve function does not throw.
            let _ = release.call0(&JsValue::UNDEFINED);
        }
    }
}

impl Drop for OwnerLock {
    fn drop(&mut self) {
        // Released asynchronously by the browser, a moment after this returns.
        self.let_go();
    }
}

/// `navigator.locks` of this context (a window or any worker).
fn lock_manager() -> Result<JsValue, StorageError> {
    let navigator = Reflect::get(&js_sys::global(), &"navigator".into())
        .map_err(|e| unavailable("navigator", JsErrorText::from_js(&e)))?;
    let locks = Reflect::get(&navigator, &"locks".into())
        .map_err(|e| unavailable("navigator.locks", JsErrorText::from_js(&e)))?;
    if locks.is_undefined() || locks.is_null() {
        return Err(unavailable(
            "navigator.locks",
            JsErrorText::new(
                "NotSupportedError",
                "this context has no Web Locks (it needs a secure context: https or localhost)",
            ),
        ));
    }
    Ok(locks)
}

/// Without Web Locks there is no way to keep a second owner out: refuse to open rather than
/// risk two writers.
fn unavailable(doing: &str, failure: JsErrorText) -> StorageError {
    StorageError::Backend {
        detail: format!("cannot take the database's owner lock: {doing}: {failure}"),
        source: Some(Box::new(failure)),
    }
}
