//! Objects in the store: JSON encoding, resourceVersion from revisions, and store errors as
//! API errors.

use serde_json::Value;
use skiff_api::ApiError;
use skiff_api::meta;
use skiff_api::registry::ResourceDef;
use skiff_store::{KeyValue, Revision, StoreError};

/// Turns a stored value into the API object, with `resourceVersion` from its mod revision.
pub fn decode(kv: &KeyValue) -> Result<Value, ApiError> {
    let mut obj: Value = serde_json::from_slice(&kv.value)
        .map_err(|e| ApiError::internal(format!("corrupt object at {}: {e}", kv.key)))?;
    meta::set_meta(
        &mut obj,
        "resourceVersion",
        Value::String(kv.mod_revision.to_string()),
    );
    Ok(obj)
}

/// The bytes stored for an object: its JSON without `resourceVersion` (the revision is the
/// version).
pub fn encode(obj: &Value) -> Result<Vec<u8>, ApiError> {
    let mut copy = obj.clone();
    if let Some(m) = copy.get_mut("metadata").and_then(Value::as_object_mut) {
        m.remove("resourceVersion");
    }
    serde_json::to_vec(&copy).map_err(ApiError::internal)
}

/// Parses a client-supplied resourceVersion.
pub fn parse_rv(rv: &str) -> Result<Revision, ApiError> {
    rv.parse::<Revision>()
        .ok()
        .filter(|r| *r >= 0)
        .ok_or_else(|| ApiError::bad_request(format!("invalid resource version: {rv:?}")))
}

/// Maps a store error for a request about `name` of `def`.
pub fn store_error(def: &ResourceDef, name: &str, e: StoreError) -> ApiError {
    match e {
        StoreError::AlreadyExists(_) => ApiError::already_exists(def.group, def.plural, name),
        StoreError::NotFound(_) => ApiError::not_found(def.group, def.plural, name),
        StoreError::Conflict { .. } => ApiError::conflict(def.group, def.plural, name),
        StoreError::Compacted { requested, oldest } => ApiError::Gone {
            message: format!("too old resource version: {requested} ({oldest})"),
        },
        StoreError::FutureRevision(r) => ApiError::Gone {
            message: format!("Too large resource version: {r}"),
        },
        StoreError::Backend(m) => ApiError::internal(m),
        StoreError::Closed => ApiError::ServiceUnavailable {
            message: "the store is shutting down".into(),
        },
    }
}
