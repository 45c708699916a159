//! A JSON object builder that reproduces Go `encoding/json` output for Kubernetes structs.
//!
//! The protobuf wire form carries every Go field (gogo-protobuf writes zero values of non-pointer
//! fields too), so which fields appear in JSON depends only on the Go field's shape and tag. Each
//! method here is one shape: `omitempty` value, plain value, pointer, slice, map, nested struct.

use std::collections::BTreeMap;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use serde_json::{Map, Value};

use crate::error::ApiError;

/// The field path of a child, as Kubernetes prints it (`spec.template`).
pub(super) fn child(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_string()
    } else {
        format!("{path}.{key}")
    }
}

/// The field path of a list item (`spec.containers[0]`).
pub(super) fn item(path: &str, index: usize) -> String {
    format!("{path}[{index}]")
}

/// The error for a field we do not convert; the client can always fall back to JSON.
pub(super) fn unsupported(path: &str) -> ApiError {
    ApiError::UnsupportedMediaType {
        message: format!("protobuf field {path} is not supported; send JSON"),
    }
}

/// Fails with [`unsupported`] when a field we do not convert was set.
pub(super) fn reject(path: &str, key: &str, present: bool) -> Result<(), ApiError> {
    if present {
        Err(unsupported(&child(path, key)))
    } else {
        Ok(())
    }
}

/// One JSON object under construction, fields in Go declaration order.
#[derive(Default)]
pub(super) struct Fields {
    map: Map<String, Value>,
}

impl Fields {
    pub(super) fn new() -> Self {
        Fields::default()
    }

    /// Go `T json:"key,omitempty"` for scalars: left out when zero.
    pub(super) fn omitempty<T: Into<Value> + Default + PartialEq>(
        &mut self,
        key: &str,
        v: Option<T>,
    ) -> &mut Self {
        if let Some(v) = v.filter(|v| *v != T::default()) {
            self.map.insert(key.to_string(), v.into());
        }
        self
    }

    /// Go `T json:"key"` for scalars: always present, zero when unset.
    pub(super) fn always<T: Into<Value> + Default>(
        &mut self,
        key: &str,
        v: Option<T>,
    ) -> &mut Self {
        self.map
            .insert(key.to_string(), v.unwrap_or_default().into());
        self
    }

    /// Go `*T json:"key,omitempty"`: present whenever set, even to zero.
    pub(super) fn pointer<T: Into<Value>>(&mut self, key: &str, v: Option<T>) -> &mut Self {
        if let Some(v) = v {
            self.map.insert(key.to_string(), v.into());
        }
        self
    }

    /// Go `[]string json:"key,omitempty"`.
    pub(super) fn strings(&mut self, key: &str, v: Vec<String>) -> &mut Self {
        if !v.is_empty() {
            self.map.insert(key.to_string(), Value::from(v));
        }
        self
    }

    /// Go `*T json:"key"` (no omitempty): `null` when unset.
    pub(super) fn pointer_or_null<T: Into<Value>>(&mut self, key: &str, v: Option<T>) -> &mut Self {
        self.map
            .insert(key.to_string(), v.map_or(Value::Null, Into::into));
        self
    }

    /// Go `[]string json:"key"`: an empty list is Go's nil slice, `null`.
    pub(super) fn strings_always(&mut self, key: &str, v: Vec<String>) -> &mut Self {
        let v = if v.is_empty() {
            Value::Null
        } else {
            Value::from(v)
        };
        self.map.insert(key.to_string(), v);
        self
    }

    /// Go `map[string]string json:"key,omitempty"`.
    pub(super) fn string_map(&mut self, key: &str, m: BTreeMap<String, String>) -> &mut Self {
        if !m.is_empty() {
            let obj: Map<String, Value> =
                m.into_iter().map(|(k, v)| (k, Value::String(v))).collect();
            self.map.insert(key.to_string(), Value::Object(obj));
        }
        self
    }

    /// Go `map[string][]byte json:"key,omitempty"`: values in standard base64.
    pub(super) fn bytes_map(&mut self, key: &str, m: BTreeMap<String, Vec<u8>>) -> &mut Self {
        if !m.is_empty() {
            let obj: Map<String, Value> = m
                .into_iter()
                .map(|(k, v)| (k, Value::String(STANDARD.encode(v))))
                .collect();
            self.map.insert(key.to_string(), Value::Object(obj));
        }
        self
    }

    /// A Go non-pointer struct (or a value already converted): always present.
    pub(super) fn value(&mut self, key: &str, v: Value) -> &mut Self {
        self.map.insert(key.to_string(), v);
        self
    }

    /// A converted Go pointer struct with `omitempty`: present when set.
    pub(super) fn opt_value(&mut self, key: &str, v: Option<Value>) -> &mut Self {
        if let Some(v) = v {
            self.map.insert(key.to_string(), v);
        }
        self
    }

    /// Go `[]T json:"key,omitempty"` for structs, each item converted by `f` with its path.
    pub(super) fn list<T>(
        &mut self,
        path: &str,
        key: &str,
        items: Vec<T>,
        f: impl Fn(T, &str) -> Result<Value, ApiError>,
    ) -> Result<&mut Self, ApiError> {
        if !items.is_empty() {
            let v = convert_list(path, key, items, f)?;
            self.map.insert(key.to_string(), Value::Array(v));
        }
        Ok(self)
    }

    /// Go `[]T json:"key"` for structs: an empty list is Go's nil slice, `null`.
    pub(super) fn list_always<T>(
        &mut self,
        path: &str,
        key: &str,
        items: Vec<T>,
        f: impl Fn(T, &str) -> Result<Value, ApiError>,
    ) -> Result<&mut Self, ApiError> {
        let v = if items.is_empty() {
            Value::Null
        } else {
            Value::Array(convert_list(path, key, items, f)?)
        };
        self.map.insert(key.to_string(), v);
        Ok(self)
    }

    pub(super) fn finish(&mut self) -> Value {
        Value::Object(std::mem::take(&mut self.map))
    }
}

fn convert_list<T>(
    path: &str,
    key: &str,
    items: Vec<T>,
    f: impl Fn(T, &str) -> Result<Value, ApiError>,
) -> Result<Vec<Value>, ApiError> {
    let list_path = child(path, key);
    items
        .into_iter()
        .enumerate()
        .map(|(i, it)| f(it, &item(&list_path, i)))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn shapes_follow_go_encoding_json() {
        let v = Fields::new()
            .omitempty("a", Some(String::new()))
            .omitempty("b", Some(0i32))
            .omitempty("c", Some(3i32))
            .always("d", None::<String>)
            .always("e", Some(0i64))
            .pointer("f", Some(false))
            .pointer("g", None::<bool>)
            .strings("h", vec![])
            .strings_always("h2", vec![])
            .pointer_or_null("h3", None::<i64>)
            .string_map("i", BTreeMap::new())
            .bytes_map(
                "j",
                BTreeMap::from([("k".to_string(), vec![0u8, 255, 254])]),
            )
            .finish();
        assert_eq!(
            v,
            json!({"c": 3, "d": "", "e": 0, "f": false, "h2": null, "h3": null, "j": {"k": "AP/+"}})
        );
    }

    #[test]
    fn list_paths_name_the_item() {
        let err = Fields::new()
            .list("spec", "ports", vec![1, 2], |n, p| {
                if n == 2 {
                    Err(unsupported(p))
                } else {
                    Ok(json!(n))
                }
            })
            .err();
        assert_eq!(
            err.map(|e| e.to_string()),
            Some("protobuf field spec.ports[1] is not supported; send JSON".into())
        );
        let v = Fields::new()
            .list_always("", "containers", Vec::<i32>::new(), |n, _| Ok(json!(n)))
            .map(|f| f.finish());
        assert_eq!(v.ok(), Some(json!({"containers": null})));
    }
}
