//! Values crossing between JavaScript and the engine: plain objects built field by field, and
//! arguments read and checked field by field. Written by hand rather than through serde: the
//! shapes are the ones `web/package/index.d.ts` declares (camelCase, `null` for absent,
//! `Uint8Array` for bytes), and every number is checked to be exact.

use js_sys::{Array, Object, Reflect, Uint8Array};
use tidemark::{ClientError, CommandError, Seq};
use wasm_bindgen::{JsCast, JsValue};

/// The largest integer a JavaScript number holds exactly (2^53 - 1).
const MAX_SAFE: u64 = (1 << 53) - 1;

/// A rejection: `{ code, message }`, which the page's proxy turns into a `TidemarkError`.
#[derive(Clone)]
pub(crate) struct Failure {
    pub(crate) code: &'static str,
    pub(crate) message: String,
}

impl Failure {
    pub(crate) fn new(code: &'static str, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
        }
    }

    pub(crate) fn bad_argument(message: impl Into<String>) -> Self {
        Self::new("BadArgument", message)
    }

    pub(crate) fn into_js(self) -> JsValue {
        let mut out = Obj::new();
        out.str("code", self.code).str("message", &self.message);
        out.into()
    }
}

impl From<ClientError> for Failure {
    fn from(err: ClientError) -> Self {
        let code = match &err {
            ClientError::Command(command) => match command {
                CommandError::UnknownConversation(_) => "UnknownConversation",
                CommandError::UnknownMessage(_) => "UnknownMessage",
                CommandError::NotFailed(_) => "NotFailed",
                CommandError::Stopped => "Stopped",
                CommandError::ForeignClientMsgId(_) => "BadArgument",
                _ => "Internal",
            },
            ClientError::Storage(storage) => storage.code(),
            ClientError::Closed => "Closed",
            ClientError::Restarted => "Restarted",
            ClientError::StoreUnusable { .. } => "StoreUnusable",
            _ => "Internal",
        };
        Self::new(code, err.to_string())
    }
}

impl From<tidemark::StorageError> for Failure {
    fn from(err: tidemark::StorageError) -> Self {
        Self::new(err.code(), err.to_string())
    }
}

/// A plain JavaScript object under construction.
pub(crate) struct Obj(Object);

impl Obj {
    pub(crate) fn new() -> Self {
        Self(Object::new())
    }

    pub(crate) fn set(&mut self, key: &str, value: impl Into<JsValue>) -> &mut Self {
        // Setting a data property on a fresh plain object cannot fail (no setters, not frozen).
        let _ = Reflect::set(&self.0, &JsValue::from_str(key), &value.into());
        self
    }

    pub(crate) fn str(&mut self, key: &str, value: &str) -> &mut Self {
        self.set(key, JsValue::from_str(value))
    }

    pub(crate) fn bool(&mut self, key: &str, value: bool) -> &mut Self {
        self.set(key, JsValue::from_bool(value))
    }

    /// An integer field; above 2^53 - 1 it is refused rather than rounded.
    pub(crate) fn num(&mut self, key: &str, value: u64) -> Result<&mut Self, Failure> {
        Ok(self.set(key, number(value)?))
    }

    pub(crate) fn opt_num(&mut self, key: &str, value: Option<u64>) -> Result<&mut Self, Failure> {
        Ok(match value {
            Some(value) => self.set(key, number(value)?),
            None => self.set(key, JsValue::NULL),
        })
    }

    pub(crate) fn opt_str(&mut self, key: &str, value: Option<&str>) -> &mut Self {
        match value {
            Some(value) => self.str(key, value),
            None => self.set(key, JsValue::NULL),
        }
    }

    pub(crate) fn bytes(&mut self, key: &str, value: &[u8]) -> &mut Self {
        self.set(key, Uint8Array::from(value))
    }
}

impl From<Obj> for JsValue {
    fn from(obj: Obj) -> JsValue {
        obj.0.into()
    }
}

/// `value` as a JavaScript number, if it is exact there.
pub(crate) fn number(value: u64) -> Result<JsValue, Failure> {
    if value > MAX_SAFE {
        return Err(Failure::new(
            "OutOfRange",
            format!("{value} does not fit a JavaScript number exactly (above 2^53 - 1)"),
        ));
    }
    Ok(JsValue::from_f64(value as f64))
}

/// An array of what `items` make.
pub(crate) fn array<T>(
    items: impl IntoIterator<Item = T>,
    make: impl Fn(T) -> Result<JsValue, Failure>,
) -> Result<JsValue, Failure> {
    let out = Array::new();
    for item in items {
        out.push(&make(item)?);
    }
    Ok(out.into())
}

/// The arguments of one call: a plain object whose fields are read by name.
pub(crate) struct Args(JsValue);

impl Args {
    pub(crate) fn new(value: JsValue) -> Self {
        Self(value)
    }

    /// The field, or `None` when it is absent, `undefined` or `null`.
    fn field(&self, key: &str) -> Option<JsValue> {
        if !self.0.is_object() {
            return None;
        }
        Reflect::get(&self.0, &JsValue::from_str(key))
            .ok()
            .filter(|v| !v.is_undefined() && !v.is_null())
    }

    pub(crate) fn opt_string(&self, key: &str) -> Result<Option<String>, Failure> {
        match self.field(key) {
            None => Ok(None),
            Some(v) => v
                .as_string()
                .map(Some)
                .ok_or_else(|| Failure::bad_argument(format!("{key} must be a string"))),
        }
    }

    pub(crate) fn string(&self, key: &str) -> Result<String, Failure> {
        self.opt_string(key)?
            .ok_or_else(|| Failure::bad_argument(format!("{key} is required")))
    }

    /// A non-empty string.
    pub(crate) fn id(&self, key: &str) -> Result<String, Failure> {
        let value = self.string(key)?;
        if value.is_empty() {
            return Err(Failure::bad_argument(format!("{key} must not be empty")));
        }
        Ok(value)
    }

    /// A non-negative integer that a JavaScript number holds exactly.
    pub(crate) fn opt_u64(&self, key: &str) -> Result<Option<u64>, Failure> {
        let Some(value) = self.field(key) else {
            return Ok(None);
        };
        let bad = || Failure::bad_argument(format!("{key} must be a non-negative safe integer"));
        let number = value.as_f64().ok_or_else(bad)?;
        if !(number.fract() == 0.0 && (0.0..=MAX_SAFE as f64).contains(&number)) {
            return Err(bad());
        }
        Ok(Some(number as u64))
    }

    pub(crate) fn opt_seq(&self, key: &str) -> Result<Option<Seq>, Failure> {
        Ok(self.opt_u64(key)?.map(Seq))
    }

    pub(crate) fn seq(&self, key: &str) -> Result<Seq, Failure> {
        self.opt_seq(key)?
            .ok_or_else(|| Failure::bad_argument(format!("{key} is required")))
    }

    /// A limit: `fallback` when absent, else 1 to `max`.
    pub(crate) fn limit(&self, key: &str, fallback: u32, max: u32) -> Result<u32, Failure> {
        match self.opt_u64(key)? {
            None => Ok(fallback),
            Some(n) if (1..=u64::from(max)).contains(&n) => Ok(n as u32),
            Some(n) => Err(Failure::bad_argument(format!(
                "{key} must be 1 to {max}, not {n}"
            ))),
        }
    }

    pub(crate) fn opt_bytes(&self, key: &str) -> Result<Option<Vec<u8>>, Failure> {
        match self.field(key) {
            None => Ok(None),
            Some(v) if v.has_type::<Uint8Array>() => Ok(Some(Uint8Array::new(&v).to_vec())),
            Some(_) => Err(Failure::bad_argument(format!("{key} must be a Uint8Array"))),
        }
    }

    /// A nested object's arguments.
    pub(crate) fn opt_object(&self, key: &str) -> Result<Option<Args>, Failure> {
        match self.field(key) {
            None => Ok(None),
            Some(v) if v.is_object() => Ok(Some(Args(v))),
            Some(_) => Err(Failure::bad_argument(format!("{key} must be an object"))),
        }
    }
}
