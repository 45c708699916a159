//! JSON patch (RFC 6902): a list of add/remove/replace/move/copy/test operations.

use crate::error::ApiError;
use serde_json::Value;

/// kube-apiserver refuses JSON patches with more operations than this (413).
const MAX_OPERATIONS: usize = 10_000;

/// Applies an RFC 6902 JSON patch. A patch that is not a list of operations is
/// a 400; an operation that cannot apply (missing path, failed `test`) is a 422,
/// and then nothing of the patch is applied.
pub fn json_patch(doc: &Value, patch: &Value) -> Result<Value, ApiError> {
    if !patch.is_array() {
        return Err(ApiError::bad_request(
            "json: cannot unmarshal object into Go value of type jsonpatch.Patch",
        ));
    }
    let ops: json_patch::Patch = serde_json::from_value(patch.clone())
        .map_err(|e| ApiError::bad_request(format!("invalid JSON patch: {e}")))?;
    if ops.0.len() > MAX_OPERATIONS {
        return Err(ApiError::RequestEntityTooLarge);
    }
    let mut out = doc.clone();
    json_patch::patch(&mut out, &ops.0).map_err(|e| ApiError::UnprocessableEntity {
        message: e.to_string(),
    })?;
    if !out.is_object() {
        return Err(ApiError::UnprocessableEntity {
            message: "the patched object is not a JSON object".into(),
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn doc() -> Value {
        json!({"metadata": {"name": "web", "labels": {"app": "web"}}, "spec": {"replicas": 1, "args": ["a", "b"]}})
    }

    #[test]
    fn every_operation_applies_in_order() {
        let patch = json!([
            {"op": "replace", "path": "/spec/replicas", "value": 3},
            {"op": "add", "path": "/spec/args/-", "value": "c"},
            {"op": "add", "path": "/metadata/labels/tier", "value": "front"},
            {"op": "remove", "path": "/spec/args/0"},
            {"op": "copy", "from": "/metadata/labels/app", "path": "/metadata/labels/copy"},
            {"op": "move", "from": "/metadata/labels/copy", "path": "/metadata/labels/moved"},
            {"op": "test", "path": "/spec/replicas", "value": 3},
        ]);
        let out = json_patch(&doc(), &patch).unwrap();
        assert_eq!(out["spec"], json!({"replicas": 3, "args": ["b", "c"]}));
        assert_eq!(
            out["metadata"]["labels"],
            json!({"app": "web", "tier": "front", "moved": "web"})
        );
    }

    #[test]
    fn failed_test_is_422_and_changes_nothing() {
        let patch = json!([
            {"op": "replace", "path": "/spec/replicas", "value": 3},
            {"op": "test", "path": "/spec/replicas", "value": 4},
        ]);
        let err = json_patch(&doc(), &patch).unwrap_err();
        assert_eq!(err.code(), 422);
        assert!(err.to_string().contains("/spec/replicas"), "{err}");
    }

    #[test]
    fn missing_path_is_422() {
        let err = json_patch(&doc(), &json!([{"op": "remove", "path": "/spec/nope"}])).unwrap_err();
        assert_eq!(err.code(), 422);
        let err = json_patch(
            &doc(),
            &json!([{"op": "add", "path": "/nope/deeper", "value": 1}]),
        )
        .unwrap_err();
        assert_eq!(err.code(), 422);
    }

    #[test]
    fn malformed_patch_is_400() {
        assert_eq!(
            json_patch(&doc(), &json!({"op": "add"}))
                .unwrap_err()
                .code(),
            400
        );
        assert_eq!(
            json_patch(&doc(), &json!([{"op": "frobnicate", "path": "/a"}]))
                .unwrap_err()
                .code(),
            400
        );
        assert_eq!(
            json_patch(&doc(), &json!([{"op": "add", "path": "/a"}]))
                .unwrap_err()
                .code(),
            400
        );
    }

    #[test]
    fn replacing_the_root_with_a_scalar_is_refused() {
        let err =
            json_patch(&doc(), &json!([{"op": "replace", "path": "", "value": 5}])).unwrap_err();
        assert_eq!(err.code(), 422);
    }
}
