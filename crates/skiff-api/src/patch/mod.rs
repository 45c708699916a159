//! Patching: JSON patch (RFC 6902), JSON merge patch (RFC 7386), strategic merge patch and server-side apply.
//!
//! Strategic merge patch and server-side apply need to know, per field, how lists merge
//! (by which key, or as a set, or atomically). That knowledge comes from a
//! [`PatchMetaLookup`]; [`SchemaLookup`] is the one used by the API server.

mod apply;
mod fieldset;
mod json;
mod merge;
mod strategic;
mod table;

pub use apply::{
    decode_apply_patch, server_side_apply, server_side_apply_with, update_managed_fields,
    update_managed_fields_with, update_subresource_managed_fields,
};
pub use fieldset::{FieldSet, PathElement};
pub use json::json_patch;
pub use merge::merge_patch;
pub use strategic::strategic_merge_patch_with;
pub use table::BuiltinTable;

use crate::error::ApiError;
use crate::registry::ResourceDef;
use serde_json::Value;

pub use crate::schema::PatchMeta;

impl PatchMeta {
    /// The strategy other than `retainKeys` ("" when there is none).
    pub(crate) fn main_strategy(&self) -> &'static str {
        self.strategy
            .split(',')
            .map(str::trim)
            .find(|s| *s != "retainKeys")
            .unwrap_or("")
    }
}

/// Where patching learns the patch metadata and types of fields. Schemas are
/// named like OpenAPI definitions (`io.k8s.api.core.v1.PodSpec`).
pub trait PatchMetaLookup {
    /// Patch metadata of `field` in an object of type `schema`.
    fn patch_meta(&self, schema: &str, field: &str) -> Option<PatchMeta>;

    /// Type of `field` in `schema`; for arrays and maps, the type of their elements.
    fn field_schema(&self, schema: &str, field: &str) -> Option<&'static str>;

    /// Keys that identify an element of the list `field` for server-side apply
    /// (`x-kubernetes-list-map-keys`). Empty for lists that are not maps.
    /// Kubernetes keys ports by number and protocol although patches merge them
    /// by number alone, hence the extra keys here.
    fn list_map_keys(&self, schema: &str, field: &str) -> Vec<&'static str> {
        let Some(key) = self.patch_meta(schema, field).and_then(|m| m.merge_key) else {
            return Vec::new();
        };
        match key {
            "containerPort" | "port" => vec![key, "protocol"],
            "topologyKey" => vec![key, "whenUnsatisfiable"],
            _ => vec![key],
        }
    }

    /// Whether the map `field` is replaced as a whole by server-side apply
    /// (`x-kubernetes-map-type: atomic`), like label selectors.
    fn is_atomic_map(&self, schema: &str, field: &str) -> bool {
        self.field_schema(schema, field) == Some(table::LABEL_SELECTOR)
    }
}

/// The patch metadata the API server uses.
///
/// Answers from the OpenAPI-derived tables in `crate::schema`, with [`BuiltinTable`] as
/// the fallback for anything they do not describe.
#[derive(Debug, Clone, Copy, Default)]
pub struct SchemaLookup;

impl PatchMetaLookup for SchemaLookup {
    fn patch_meta(&self, schema: &str, field: &str) -> Option<PatchMeta> {
        crate::schema::patch_meta(schema, field).or_else(|| BuiltinTable.patch_meta(schema, field))
    }

    fn field_schema(&self, schema: &str, field: &str) -> Option<&'static str> {
        crate::schema::field_schema_name(schema, field)
            .or_else(|| BuiltinTable.field_schema(schema, field))
    }

    fn is_atomic_map(&self, schema: &str, field: &str) -> bool {
        BuiltinTable.is_atomic_map(schema, field)
            || self.field_schema(schema, field) == Some(table::LABEL_SELECTOR)
    }
}

/// Applies a Kubernetes strategic merge patch to an object of resource `def`.
pub fn strategic_merge_patch(
    def: &ResourceDef,
    doc: &Value,
    patch: &Value,
) -> Result<Value, ApiError> {
    strategic_merge_patch_with(&SchemaLookup, def.schema_name, doc, patch)
}
