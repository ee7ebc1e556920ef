//! How the browser's failures become [`StorageError`](tidemark_engine::StorageError)s.
//!
//! A JavaScript error value is neither `Send` nor `Sync`, so it cannot be kept as the source
//! of a `StorageError`: [`JsFailure`] keeps what identifies it (the `DOMException` name, which
//! is what a caller matches on, and the message) as text.

use std::fmt;

use wasm_bindgen::{JsCast, JsValue};

/// A failed browser call: what we were doing, the error's name and its message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JsFailure {
    /// What was being done (`"navigator.locks.request"`, `"opening the OPFS pool"`).
    pub operation: String,
    /// The error's name (`"QuotaExceededError"`, `"InvalidStateError"`), or `"Error"`.
    pub name: String,
    /// The error's message.
    pub message: String,
}

impl JsFailure {
    /// A failure from its parts.
    pub fn new(
        operation: impl Into<String>,
        name: impl Into<String>,
        message: impl Into<String>,
    ) -> Self {
        Self {
            operation: operation.into(),
            name: name.into(),
            message: message.into(),
        }
    }
}

impl fmt::Display for JsFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}: {}", self.operation, self.name, self.message)
    }
}

impl std::error::Error for JsFailure {}

/// Reads the name and message of any thrown value (an `Error`, a `DOMException`, or not an
/// error at all).
pub(crate) fn js_failure(operation: &str, value: &JsValue) -> JsFailure {
    if let Some(error) = value.dyn_ref::<js_sys::Error>() {
        return JsFailure::new(
            operation,
            String::from(error.name()),
            String::from(error.message()),
        );
    }
    let text = |key: &str| {
        js_sys::Reflect::get(value, &key.into())
            .ok()
            .and_then(|v| v.as_string())
    };
    match (text("name"), text("message")) {
        (Some(name), Some(message)) => JsFailure::new(operation, name, message),
        _ => JsFailure::new(operation, "Error", format!("{value:?}")),
    }
}
