//! JSON merge patch (RFC 7386): objects merge key by key, `null` deletes, everything else replaces.

use crate::error::ApiError;
use serde_json::Value;

/// Applies an RFC 7386 merge patch. Kubernetes objects are JSON objects, so a
/// patch that is not an object (which would replace the whole object) is a 400.
pub fn merge_patch(doc: &Value, patch: &Value) -> Result<Value, ApiError> {
    if !patch.is_object() {
        return Err(ApiError::bad_request(
            "invalid JSON merge patch: the patch must be a JSON object",
        ));
    }
    let mut out = doc.clone();
    json_patch::merge(&mut out, patch);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn merges_objects_replaces_lists_and_deletes_nulls() {
        let doc = json!({
            "metadata": {"labels": {"app": "web", "tier": "front"}},
            "spec": {"replicas": 1, "template": {"spec": {"containers": [{"name": "a"}, {"name": "b"}]}}}
        });
        let patch = json!({
            "metadata": {"labels": {"tier": null, "env": "prod"}},
            "spec": {"replicas": 2, "template": {"spec": {"containers": [{"name": "c"}]}}}
        });
        let out = merge_patch(&doc, &patch).unwrap();
        assert_eq!(
            out["metadata"]["labels"],
            json!({"app": "web", "env": "prod"})
        );
        assert_eq!(out["spec"]["replicas"], 2);
        assert_eq!(
            out["spec"]["template"]["spec"]["containers"],
            json!([{"name": "c"}])
        );
    }

    #[test]
    fn null_for_a_missing_key_is_a_no_op() {
        let out = merge_patch(&json!({"a": 1}), &json!({"b": null})).unwrap();
        assert_eq!(out, json!({"a": 1}));
    }

    #[test]
    fn non_object_patch_is_400() {
        assert_eq!(
            merge_patch(&json!({}), &json!([1])).unwrap_err().code(),
            400
        );
    }
}
