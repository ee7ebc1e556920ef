//! IndexedDB's callbacks as futures, and its errors as text typed into `StorageError`.

use crate::error::JsErrorText;
use js_sys::{Function, Promise, Reflect};
use tidemark_engine::StorageError;
use wasm_bindgen::{JsCast, JsValue};
use wasm_bindgen_futures::JsFuture;
use web_sys::{IdbFactory, IdbOpenDbRequest, IdbRequest, IdbTransaction};

/// How a failed IndexedDB operation is reported to the store.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum FailureKind {
    /// Out of quota: `StorageError::Full`.
    Full,
    /// The database was deleted, evicted or closed under us: `StorageError::Gone`.
    Gone,
    /// Anything else: `StorageError::Backend`.
    Backend,
}

/// Classifies a failure by the JS error's name and what the connection was told.
/// `gone`: IndexedDB announced the database's end (versionchange or close event).
/// `closed_by_owner`: our own `close` ended the connection (then it is not a vanishing).
pub(crate) fn classify(name: &str, gone: bool, closed_by_owner: bool) -> FailureKind {
    match name {
        "QuotaExceededError" => FailureKind::Full,
        _ if gone => FailureKind::Gone,
        // A connection closed without our asking: the browser closed it (eviction, site
        // data cleared) and its close event has not been delivered yet.
        "InvalidStateError" if !closed_by_owner => FailureKind::Gone,
        _ => FailureKind::Backend,
    }
}

/// Builds the typed error for a failure of `what` (for example "flush of tidemark-x").
pub(crate) fn storage_error(
    what: &str,
    error: JsErrorText,
    gone: Option<&str>,
    closed_by_owner: bool,
) -> StorageError {
    match classify(&error.name, gone.is_some(), closed_by_owner) {
        FailureKind::Full => StorageError::Full {
            source: Some(Box::new(error)),
        },
        FailureKind::Gone => StorageError::Gone {
            detail: match gone {
                Some(reason) => format!("{what}: {reason} ({error})"),
                None => format!("{what}: the IndexedDB connection was closed ({error})"),
            },
            source: Some(Box::new(error)),
        },
        FailureKind::Backend => StorageError::Backend {
            detail: format!("{what}: {error}"),
            source: Some(Box::new(error)),
        },
    }
}

/// The `indexedDB` of this context: a page or any worker.
pub(crate) fn indexed_db() -> Result<IdbFactory, JsErrorText> {
    let factory = Reflect::get(&js_sys::global(), &JsValue::from_str("indexedDB"))
        .map_err(|error| JsErrorText::from_js(&error))?;
    factory.dyn_into::<IdbFactory>().map_err(|_| {
        JsErrorText::new(
            "NotSupportedError",
            "IndexedDB is not available in this context",
        )
    })
}

/// A future settled by JS callbacks: `attach` hands the resolve and reject functions to
/// the event handlers that settle it.
fn settled_by(attach: impl FnOnce(&Function, &Function)) -> JsFuture {
    let mut attach = Some(attach);
    JsFuture::from(Promise::new(&mut |resolve: Function, reject: Function| {
        if let Some(attach) = attach.take() {
            attach(&resolve, &reject);
        }
    }))
}

/// A request whose outcome is being watched from the moment it was issued, so no event
/// can be missed while other requests are awaited.
pub(crate) struct Watched {
    request: IdbRequest,
    outcome: JsFuture,
}

impl Watched {
    /// Watches `request`'s success and error.
    pub(crate) fn new(request: &IdbRequest) -> Self {
        Self {
            request: request.clone(),
            outcome: settled_by(|resolve, reject| {
                request.set_onsuccess(Some(resolve));
                request.set_onerror(Some(reject));
            }),
        }
    }

    /// The request's result, or its error.
    pub(crate) async fn result(self) -> Result<JsValue, JsErrorText> {
        let outcome = self.outcome.await;
        self.request.set_onsuccess(None);
        self.request.set_onerror(None);
        match outcome {
            Ok(_) => self
                .request
                .result()
                .map_err(|error| JsErrorText::from_js(&error)),
            Err(_) => Err(JsErrorText::from_exception(
                self.request.error().ok().flatten(),
                "the request failed",
            )),
        }
    }
}

/// Watches a transaction from the moment it was created until it completes or aborts.
pub(crate) struct Completion {
    transaction: IdbTransaction,
    outcome: JsFuture,
}

impl Completion {
    pub(crate) fn new(transaction: &IdbTransaction) -> Self {
        Self {
            transaction: transaction.clone(),
            outcome: settled_by(|resolve, reject| {
                transaction.set_oncomplete(Some(resolve));
                transaction.set_onabort(Some(reject));
            }),
        }
    }

    /// Resolves on the `complete` event; the abort's error otherwise.
    pub(crate) async fn done(self) -> Result<(), JsErrorText> {
        let outcome = self.outcome.await;
        self.transaction.set_oncomplete(None);
        self.transaction.set_onabort(None);
        outcome.map(drop).map_err(|_| {
            JsErrorText::from_exception(self.transaction.error(), "the transaction was aborted")
        })
    }
}

/// Resolves when an open or delete request is `blocked` by connections that stay open.
pub(crate) fn blocked(request: &IdbOpenDbRequest) -> JsFuture {
    settled_by(|resolve, _reject| request.set_onblocked(Some(resolve)))
}

/// Waits `ms` milliseconds (0: the next task of the event loop, which lets events already
/// queued, such as a database's `close` after its transactions aborted, be delivered).
pub(crate) async fn sleep(ms: u32) {
    let global = js_sys::global();
    let Ok(set_timeout) = Reflect::get(&global, &JsValue::from_str("setTimeout")) else {
        return;
    };
    let Some(set_timeout) = set_timeout.dyn_ref::<Function>() else {
        return;
    };
    let promise = Promise::new(&mut |resolve: Function, _reject: Function| {
        // Without a timer there is nothing to wait for; the caller classifies at once.
        let _ = set_timeout.call2(&global, &resolve, &JsValue::from(ms));
    });
    // The promise never rejects.
    let _ = JsFuture::from(promise).await;
}

#[cfg(test)]
mod tests {
    use super::{classify, FailureKind};
    use wasm_bindgen_test::wasm_bindgen_test;

    #[wasm_bindgen_test]
    fn quota_errors_are_full_even_when_gone() {
        assert_eq!(
            classify("QuotaExceededError", false, false),
            FailureKind::Full
        );
        assert_eq!(
            classify("QuotaExceededError", true, false),
            FailureKind::Full
        );
    }

    #[wasm_bindgen_test]
    fn a_database_closed_under_us_is_gone() {
        assert_eq!(classify("AbortError", true, false), FailureKind::Gone);
        assert_eq!(
            classify("InvalidStateError", false, false),
            FailureKind::Gone
        );
        assert_eq!(
            classify("InvalidStateError", false, true),
            FailureKind::Backend
        );
        assert_eq!(classify("UnknownError", false, false), FailureKind::Backend);
        assert_eq!(classify("AbortError", false, false), FailureKind::Backend);
    }
}
