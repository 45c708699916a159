//! Field schemas of the built-in resources: unknown-field detection for strict field validation.

use crate::registry::ResourceDef;
use serde_json::Value;

/// Paths of the fields in `obj` that the resource's schema does not know
/// (`spec.template.spec.containers[0].images`).
pub fn unknown_fields(_def: &ResourceDef, _obj: &Value) -> Vec<String> {
    Vec::new()
}

/// Removes unknown fields (what `fieldValidation=Ignore` / `Warn` store).
pub fn prune_unknown(_def: &ResourceDef, _obj: &mut Value) {}
