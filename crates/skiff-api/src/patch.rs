//! Patching: JSON patch (RFC 6902), JSON merge patch (RFC 7386) and strategic merge patch.

use crate::error::ApiError;
use crate::registry::ResourceDef;
use serde_json::Value;

pub fn json_patch(doc: &Value, patch: &Value) -> Result<Value, ApiError> {
    let p: json_patch::Patch = serde_json::from_value(patch.clone())
        .map_err(|e| ApiError::bad_request(format!("invalid JSON patch: {e}")))?;
    let mut out = doc.clone();
    json_patch::patch(&mut out, &p).map_err(|e| ApiError::UnprocessableEntity { message: e.to_string() })?;
    Ok(out)
}

pub fn merge_patch(doc: &Value, patch: &Value) -> Result<Value, ApiError> {
    let mut out = doc.clone();
    json_patch::merge(&mut out, patch);
    Ok(out)
}

pub fn strategic_merge_patch(_def: &ResourceDef, doc: &Value, patch: &Value) -> Result<Value, ApiError> {
    merge_patch(doc, patch)
}
