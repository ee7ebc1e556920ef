//! How the browser's failures become [`StorageError`](tidemark_engine::StorageError)s.

use std::fmt;

use wasm_bindgen::{JsCast, JsValue};
use web_sys::DomException;

/// A JS error reduced to its name and message: JS values are neither `Send` nor `Sync`,
/// and `StorageError` sources must be.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct JsErrorText {
    /// The error's name (`QuotaExceededError`, `AbortError`, ...).
    pub(crate) name: String,
    /// The error's message.
    pub(crate) message: String,
}

impl JsErrorText {
    pub(crate) fn new(name: &str, message: &str) -> Self {
        Self {
            name: name.to_owned(),
            message: message.to_owned(),
        }
    }

    /// Reads the name and message of a DOMException, an Error, or anything else thrown.
    pub(crate) fn from_js(value: &JsValue) -> Self {
        if let Some(exception) = value.dyn_ref::<DomException>() {
            return Self::new(&exception.name(), &exception.message());
        }
        if let Some(error) = value.dyn_ref::<js_sys::Error>() {
            return Self::new(&String::from(error.name()), &String::from(error.message()));
        }
        Self::new(
            "Error",
            &value.as_string().unwrap_or_else(|| format!("{value:?}")),
        )
    }

    pub(crate) fn from_exception(exception: Option<DomException>, fallback: &str) -> Self {
        exception.map_or_else(
            || Self::new("AbortError", fallback),
            |exception| Self::from_js(&exception),
        )
    }
}

impl fmt::Display for JsErrorText {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.name, self.message)
    }
}

impl std::error::Error for JsErrorText {}
