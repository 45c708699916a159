//! OpenAPI v3 (and v2) documents of the served resources, for kubectl apply, explain and validation.

use serde_json::{Value, json};

/// `GET /openapi/v3`: the index of group-version documents.
pub fn v3_root() -> Value {
    json!({ "paths": {} })
}

/// `GET /openapi/v3/api/v1` or `/openapi/v3/apis/<group>/<version>`.
pub fn v3_group_version(_group: &str, _version: &str) -> Option<Value> {
    None
}
