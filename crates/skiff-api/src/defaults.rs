//! Defaulting: fills in the fields Kubernetes fills in when an object is created or updated.

use crate::registry::ResourceDef;
use serde_json::Value;

/// Applies Kubernetes defaulting for `def` to `obj` in place.
pub fn apply(_def: &ResourceDef, _obj: &mut Value) {}
