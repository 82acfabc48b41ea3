//! Reading fields out of JSON config files with defaults and clear errors.

use serde_json::{Map, Value};

/// A JSON object plus the dotted prefix used to name its fields in errors.
pub(crate) struct Fields<'a> {
    pub obj: &'a Map<String, Value>,
    pub prefix: String,
}

pub(crate) type FieldResult<T> = std::result::Result<T, String>;

impl<'a> Fields<'a> {
    pub fn new(obj: &'a Map<String, Value>, prefix: &str) -> Self {
        Self {
            obj,
            prefix: prefix.to_string(),
        }
    }

    fn name(&self, key: &str) -> String {
        if self.prefix.is_empty() {
            key.to_string()
        } else {
            format!("{}.{key}", self.prefix)
        }
    }

    /// The value of `key`, treating JSON `null` as absent.
    pub fn get(&self, key: &str) -> Option<&'a Value> {
        self.obj.get(key).filter(|v| !v.is_null())
    }

    pub fn usize_or(&self, key: &str, default: usize) -> FieldResult<usize> {
        match self.get(key) {
            None => Ok(default),
            Some(v) => self.as_usize(key, v),
        }
    }

    fn as_usize(&self, key: &str, v: &Value) -> FieldResult<usize> {
        v.as_u64().map(|n| n as usize).ok_or_else(|| {
            format!(
                "field `{}` must be a non-negative integer, got {v}",
                self.name(key)
            )
        })
    }

    /// An integer, or a square `[n, n]` pair (HF allows image and patch sizes as pairs).
    pub fn square_or(&self, key: &str, default: usize) -> FieldResult<usize> {
        match self.get(key) {
            Some(Value::Array(a)) if a.len() == 2 => {
                let (h, w) = (self.as_usize(key, &a[0])?, self.as_usize(key, &a[1])?);
                if h != w {
                    return Err(format!(
                        "field `{}` is {h}x{w}; only square images and patches are supported",
                        self.name(key)
                    ));
                }
                Ok(h)
            }
            _ => self.usize_or(key, default),
        }
    }

    pub fn f64_or(&self, key: &str, default: f64) -> FieldResult<f64> {
        match self.get(key) {
            None => Ok(default),
            Some(v) => v
                .as_f64()
                .ok_or_else(|| format!("field `{}` must be a number, got {v}", self.name(key))),
        }
    }

    pub fn bool_or(&self, key: &str, default: bool) -> FieldResult<bool> {
        match self.get(key) {
            None => Ok(default),
            Some(v) => v.as_bool().ok_or_else(|| {
                format!("field `{}` must be true or false, got {v}", self.name(key))
            }),
        }
    }

    pub fn str_or(&self, key: &str, default: &'a str) -> FieldResult<&'a str> {
        match self.get(key) {
            None => Ok(default),
            Some(v) => v
                .as_str()
                .ok_or_else(|| format!("field `{}` must be a string, got {v}", self.name(key))),
        }
    }

    /// A nested object (absent = empty).
    pub fn object(&self, key: &str) -> FieldResult<Fields<'a>> {
        static EMPTY: std::sync::OnceLock<Map<String, Value>> = std::sync::OnceLock::new();
        match self.get(key) {
            None => Ok(Fields::new(EMPTY.get_or_init(Map::new), &self.name(key))),
            Some(Value::Object(o)) => Ok(Fields::new(o, &self.name(key))),
            Some(v) => Err(format!(
                "field `{}` must be an object, got {v}",
                self.name(key)
            )),
        }
    }

    /// Fails when `key` is present with a value other than the ones vlp implements.
    pub fn reject_unless(
        &self,
        key: &str,
        ok: impl Fn(&Value) -> bool,
        what: &str,
    ) -> FieldResult<()> {
        match self.get(key) {
            Some(v) if !ok(v) => Err(format!(
                "field `{}` = {v} is not supported ({what})",
                self.name(key)
            )),
            _ => Ok(()),
        }
    }
}
