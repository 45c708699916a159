//! Validation: the checks Kubernetes applies to each resource on create and update.

use crate::error::FieldError;
use crate::registry::ResourceDef;
use serde_json::Value;

/// Validates a (defaulted) object; `old` is the stored object on update.
pub fn validate(_def: &ResourceDef, _obj: &Value, _old: Option<&Value>) -> Vec<FieldError> {
    Vec::new()
}
