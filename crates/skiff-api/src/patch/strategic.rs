//! Kubernetes strategic merge patch: merge-key lists, primitive-list union and the `$patch`,
//! `$retainKeys`, `$setElementOrder` and `$deleteFromPrimitiveList` directives.
//!
//! Behaviour follows apimachinery's `strategicpatch` package as used by kube-apiserver
//! (merge parallel lists, ignore unmatched nulls). Deliberate differences, all on
//! inputs kubectl never sends: `$patch: merge` is accepted as the default it names
//! (Kubernetes errors), a new map carrying `$patch: replace` is kept instead of
//! dropped, and directive keys or nulls inside newly added values are never stored.

use super::{PatchMeta, PatchMetaLookup};
use crate::error::ApiError;
use serde_json::{Map, Value};

const PATCH_DIRECTIVE: &str = "$patch";
const RETAIN_KEYS: &str = "$retainKeys";
const SET_ELEMENT_ORDER: &str = "$setElementOrder";
const DELETE_FROM_PRIMITIVE_LIST: &str = "$deleteFromPrimitiveList";

/// Why a strategic merge patch could not apply; the wording is apimachinery's.
#[derive(Debug, thiserror::Error)]
enum SmpError {
    #[error("invalid JSON document")]
    BadJsonDoc,
    #[error("lists of lists are not supported")]
    NoListOfLists,
    #[error("invalid patch format of primitive list")]
    BadPrimitiveList,
    #[error("invalid patch format of retainKeys")]
    BadRetainKeys,
    #[error("invalid patch format of setElementOrder list")]
    BadSetElementOrder,
    #[error("unknown patch type: {directive} in map: {map}")]
    BadPatchType { directive: String, map: String },
    #[error("map: {map} does not contain declared merge key: {key}")]
    NoMergeKey { map: String, key: String },
    #[error("The order in patch list:\n{patch}\n doesn't match $setElementOrder list:\n{order}\n")]
    OrderMismatch { patch: String, order: String },
    #[error("cannot merge lists without merge key for {0}")]
    ListWithoutMergeKey(String),
    #[error("list element types are not identical: {0}")]
    MixedList(String),
    #[error("expected a {expected}, but received a {actual}")]
    BadArgType {
        expected: &'static str,
        actual: &'static str,
    },
}

impl From<SmpError> for ApiError {
    fn from(e: SmpError) -> Self {
        match e {
            // kube-apiserver answers these as malformed requests ...
            SmpError::BadJsonDoc
            | SmpError::BadPrimitiveList
            | SmpError::BadRetainKeys
            | SmpError::BadSetElementOrder
            | SmpError::BadPatchType { .. }
            | SmpError::OrderMismatch { .. } => ApiError::bad_request(e.to_string()),
            // ... and these as a patch that does not fit the object.
            SmpError::NoListOfLists
            | SmpError::NoMergeKey { .. }
            | SmpError::ListWithoutMergeKey(_)
            | SmpError::MixedList(_)
            | SmpError::BadArgType { .. } => ApiError::UnprocessableEntity {
                message: e.to_string(),
            },
        }
    }
}

/// Applies a strategic merge patch to `doc`, an object of type `root_schema`,
/// learning list merge keys and strategies from `lookup`.
pub fn strategic_merge_patch_with<L: PatchMetaLookup + ?Sized>(
    lookup: &L,
    root_schema: &str,
    doc: &Value,
    patch: &Value,
) -> Result<Value, ApiError> {
    let (Value::Object(original), Value::Object(patch)) = (doc, patch) else {
        return Err(SmpError::BadJsonDoc.into());
    };
    let merger = Merger { lookup };
    Ok(Value::Object(merger.merge_map(
        Some(root_schema),
        original.clone(),
        patch.clone(),
    )?))
}

struct Merger<'l, L: ?Sized> {
    lookup: &'l L,
}

/// What a field's patch metadata says, resolved for one merge.
struct FieldMeta {
    schema: Option<&'static str>,
    strategy: &'static str,
    merge_key: Option<&'static str>,
}

impl<L: PatchMetaLookup + ?Sized> Merger<'_, L> {
    fn field(&self, schema: Option<&str>, field: &str) -> FieldMeta {
        let Some(schema) = schema else {
            return FieldMeta {
                schema: None,
                strategy: "",
                merge_key: None,
            };
        };
        let meta: Option<PatchMeta> = self.lookup.patch_meta(schema, field);
        FieldMeta {
            schema: self.lookup.field_schema(schema, field),
            strategy: meta.map(|m| m.main_strategy()).unwrap_or(""),
            merge_key: meta.and_then(|m| m.merge_key),
        }
    }

    fn merge_map(
        &self,
        schema: Option<&str>,
        mut original: Map<String, Value>,
        mut patch: Map<String, Value>,
    ) -> Result<Map<String, Value>, SmpError> {
        if let Some(directive) = patch.get(PATCH_DIRECTIVE) {
            match directive.as_str() {
                Some("replace") => {
                    patch.shift_remove(PATCH_DIRECTIVE);
                    return Ok(clean_map(patch));
                }
                Some("delete") => return Ok(Map::new()),
                Some("merge") => {
                    patch.shift_remove(PATCH_DIRECTIVE);
                }
                _ => {
                    return Err(SmpError::BadPatchType {
                        directive: render(directive),
                        map: render(&Value::Object(patch)),
                    });
                }
            }
        }

        apply_retain_keys(&mut original, &mut patch)?;
        self.merge_ordered_lists(schema, &mut original, &mut patch)?;

        for (key, patch_value) in patch {
            let (key, is_delete_list) = match key.strip_prefix(DELETE_FROM_PRIMITIVE_LIST) {
                Some(rest) => match rest.strip_prefix('/') {
                    Some(field) => (field.to_string(), true),
                    None => return Err(SmpError::BadPrimitiveList),
                },
                None => (key, false),
            };

            if patch_value.is_null() {
                original.shift_remove(&key);
                continue;
            }
            let Some(original_value) = original.get_mut(&key) else {
                if !is_delete_list && let Some(v) = clean(patch_value) {
                    original.insert(key, v);
                }
                continue;
            };
            if json_kind(original_value) != json_kind(&patch_value) {
                if !is_delete_list {
                    match clean(patch_value) {
                        Some(v) => *original_value = v,
                        None => {
                            original.shift_remove(&key);
                        }
                    }
                }
                continue;
            }
            let merged = match (original_value.take(), patch_value) {
                (Value::Object(o), Value::Object(p)) => {
                    let meta = self.field(schema, &key);
                    if meta.strategy == "replace" {
                        Value::Object(clean_map(p))
                    } else {
                        Value::Object(self.merge_map(meta.schema, o, p)?)
                    }
                }
                (Value::Array(o), Value::Array(p)) => {
                    let meta = self.field(schema, &key);
                    Value::Array(self.merge_list_field(&meta, is_delete_list, o, p)?)
                }
                (_, p) => p,
            };
            *original_value = merged;
        }
        Ok(original)
    }

    /// Handles `$setElementOrder/<field>` together with the list it orders: the
    /// merged list follows the directive, then the patch, then the live order.
    fn merge_ordered_lists(
        &self,
        schema: Option<&str>,
        original: &mut Map<String, Value>,
        patch: &mut Map<String, Value>,
    ) -> Result<(), SmpError> {
        let directives: Vec<String> = patch
            .keys()
            .filter(|k| k.starts_with(SET_ELEMENT_ORDER))
            .cloned()
            .collect();
        for directive in directives {
            let Some(order) = patch.shift_remove(&directive) else {
                continue;
            };
            let Value::Array(order) = order else {
                return Err(SmpError::BadArgType {
                    expected: "[]interface {}",
                    actual: go_type(&order),
                });
            };
            let field = directive
                .strip_prefix(SET_ELEMENT_ORDER)
                .and_then(|rest| rest.strip_prefix('/'))
                .ok_or(SmpError::BadSetElementOrder)?
                .to_string();
            let original_list = list_at(original, &field)?;
            let patch_list = list_at(patch, &field)?;
            let meta = self.field(schema, &field);
            validate_set_order(patch_list.as_deref(), &order, meta.merge_key)?;

            let server_order = match (&original_list, &patch_list, meta.merge_key) {
                (Some(o), Some(p), Some(key))
                    if meta.strategy == "merge" && o.iter().all(Value::is_object) =>
                {
                    live_order_seen_by_apimachinery(o, p, key)
                }
                (o, _, _) => o.clone().unwrap_or_default(),
            };
            let merged = match (original_list, patch_list) {
                (Some(o), None) => o,
                (None, Some(p)) => clean_list(p),
                (Some(o), Some(p)) => self.merge_list_field(&meta, false, o, p)?,
                (None, None) => continue,
            };
            let (in_order, server_only) = partition(merged, &order, meta.merge_key)?;
            let ordered = normalize_element_order(
                in_order,
                server_only,
                &order,
                &server_order,
                meta.merge_key,
            )?;
            original.insert(field.clone(), Value::Array(ordered));
            patch.shift_remove(&field);
        }
        Ok(())
    }

    fn merge_list_field(
        &self,
        meta: &FieldMeta,
        is_delete_list: bool,
        original: Vec<Value>,
        patch: Vec<Value>,
    ) -> Result<Vec<Value>, SmpError> {
        if meta.strategy == "merge" || is_delete_list {
            self.merge_list(meta, is_delete_list, original, patch)
        } else {
            Ok(clean_list(patch))
        }
    }

    fn merge_list(
        &self,
        meta: &FieldMeta,
        is_delete_list: bool,
        original: Vec<Value>,
        patch: Vec<Value>,
    ) -> Result<Vec<Value>, SmpError> {
        if original.is_empty() && patch.is_empty() {
            return Ok(original);
        }
        let kind = element_kind(&original, &patch)?;
        if kind != JsonKind::Object {
            if is_delete_list {
                return Ok(original
                    .into_iter()
                    .filter(|v| !patch.contains(v))
                    .collect());
            }
            let server_order = original.clone();
            let mut merged: Vec<Value> = Vec::with_capacity(original.len() + patch.len());
            for v in original.into_iter().chain(patch.iter().cloned()) {
                if !merged.contains(&v) {
                    merged.push(v);
                }
            }
            let (from_patch, server_only) = partition(merged, &patch, None)?;
            return normalize_element_order(from_patch, server_only, &patch, &server_order, None);
        }

        let key = meta
            .merge_key
            .ok_or_else(|| SmpError::ListWithoutMergeKey(meta.schema.unwrap_or("").to_string()))?;
        let (original, patch) = apply_list_directives(original, patch, key)?;
        let server_order = original.clone();
        let mut merged = original;
        for item in &patch {
            let Value::Object(item) = item else { continue };
            let value = item.get(key).ok_or_else(|| no_merge_key(item, key))?;
            match merged.iter().position(|o| o.get(key) == Some(value)) {
                Some(i) => {
                    let Value::Object(existing) = merged[i].take() else {
                        continue;
                    };
                    merged[i] =
                        Value::Object(self.merge_map(meta.schema, existing, item.clone())?);
                }
                None => merged.push(Value::Object(clean_map(item.clone()))),
            }
        }
        let (from_patch, server_only) = partition(merged, &patch, Some(key))?;
        normalize_element_order(from_patch, server_only, &patch, &server_order, Some(key))
    }
}

/// The live order apimachinery compares against when it orders a merged
/// merge-key list by `$setElementOrder`. Its merge deletes and appends in place
/// in the live list's backing array, so the order it consults is that array:
/// the live list after deletions, then appended elements, then stale copies.
/// Reproducing this keeps element order identical to Kubernetes when an apply
/// both removes and adds elements.
fn live_order_seen_by_apimachinery(original: &[Value], patch: &[Value], key: &str) -> Vec<Value> {
    let directive = |v: &Value| {
        v.get(PATCH_DIRECTIVE)
            .and_then(Value::as_str)
            .map(str::to_string)
    };
    if patch
        .iter()
        .any(|v| directive(v).as_deref() == Some("replace"))
    {
        return original.to_vec();
    }
    let mut backing = original.to_vec();
    let mut len = backing.len();
    for item in patch
        .iter()
        .filter(|v| directive(v).as_deref() == Some("delete"))
    {
        let Some(wanted) = item.get(key) else {
            continue;
        };
        while let Some(i) = backing[..len]
            .iter()
            .position(|o| o.get(key) == Some(wanted))
        {
            // Go's append(s[:i], s[i+1:]...): the tail moves left, the last slot keeps its value.
            for j in i..len - 1 {
                backing[j] = backing[j + 1].clone();
            }
            len -= 1;
        }
    }
    let mut working: Vec<Value> = backing[..len].to_vec();
    for item in patch.iter().filter(|v| directive(v).is_none()) {
        let Some(wanted) = item.get(key) else {
            continue;
        };
        if working.iter().any(|o| o.get(key) == Some(wanted)) {
            continue;
        }
        if working.len() < backing.len() {
            backing[working.len()] = item.clone();
        }
        working.push(item.clone());
    }
    backing
}

/// Applies `$patch: delete` and `$patch: replace` elements of a merge-key list;
/// returns the original left after that and the patch without those elements.
fn apply_list_directives(
    mut original: Vec<Value>,
    patch: Vec<Value>,
    key: &str,
) -> Result<(Vec<Value>, Vec<Value>), SmpError> {
    let mut plain = Vec::with_capacity(patch.len());
    let mut replace = false;
    for item in patch {
        let Value::Object(map) = &item else {
            plain.push(item);
            continue;
        };
        match map.get(PATCH_DIRECTIVE) {
            None => plain.push(item),
            Some(Value::String(d)) if d == "delete" => {
                let value = map.get(key).ok_or_else(|| no_merge_key(map, key))?;
                original.retain(|o| o.get(key) != Some(value));
            }
            Some(Value::String(d)) if d == "replace" => replace = true,
            // `$patch: merge` on an element names what happens anyway.
            Some(Value::String(d)) if d == "merge" => {}
            Some(other) => {
                return Err(SmpError::BadPatchType {
                    directive: render(other),
                    map: render(&item),
                });
            }
        }
    }
    if replace {
        Ok((clean_list(plain), Vec::new()))
    } else {
        Ok((original, plain))
    }
}

/// `$retainKeys`: keys of the original missing from the list are cleared; every
/// key the patch sets must be listed.
fn apply_retain_keys(
    original: &mut Map<String, Value>,
    patch: &mut Map<String, Value>,
) -> Result<(), SmpError> {
    let Some(retain) = patch.shift_remove(RETAIN_KEYS) else {
        return Ok(());
    };
    let Value::Array(retain) = retain else {
        return Err(SmpError::BadRetainKeys);
    };
    let listed = |k: &str| retain.iter().any(|r| r.as_str() == Some(k));
    for (k, v) in patch.iter() {
        if v.is_null()
            || k.starts_with(DELETE_FROM_PRIMITIVE_LIST)
            || k.starts_with(SET_ELEMENT_ORDER)
        {
            continue;
        }
        if !listed(k) {
            return Err(SmpError::BadRetainKeys);
        }
    }
    original.retain(|k, _| listed(k));
    Ok(())
}

/// Checks that the patch list's elements appear in the `$setElementOrder` list
/// in the same relative order.
fn validate_set_order(
    patch: Option<&[Value]>,
    order: &[Value],
    key: Option<&str>,
) -> Result<(), SmpError> {
    let Some(patch) = patch else { return Ok(()) };
    if order.is_empty() || patch.is_empty() {
        return Ok(());
    }
    let mut items: Vec<&Value> = Vec::with_capacity(patch.len());
    for item in patch {
        if key.is_some() {
            let Value::Object(map) = item else {
                return Err(SmpError::BadArgType {
                    expected: "map[string]interface {}",
                    actual: go_type(item),
                });
            };
            if map.get(PATCH_DIRECTIVE).and_then(Value::as_str) == Some("delete") {
                continue;
            }
        }
        items.push(item);
    }
    let (mut pi, mut oi) = (0, 0);
    while pi < items.len() && oi < order.len() {
        if items[pi].get(PATCH_DIRECTIVE).is_some() {
            pi += 1;
            continue;
        }
        if merge_key_equal(items[pi], &order[oi], key)? {
            pi += 1;
        }
        oi += 1;
    }
    if pi < items.len() && oi >= order.len() {
        return Err(SmpError::OrderMismatch {
            patch: render(&Value::Array(patch.to_vec())),
            order: render(&Value::Array(order.to_vec())),
        });
    }
    Ok(())
}

fn merge_key_equal(left: &Value, right: &Value, key: Option<&str>) -> Result<bool, SmpError> {
    let Some(key) = key else {
        return Ok(left == right);
    };
    let (Value::Object(l), Value::Object(r)) = (left, right) else {
        let odd = if left.is_object() { right } else { left };
        return Err(SmpError::BadArgType {
            expected: "map[string]interface {}",
            actual: go_type(odd),
        });
    };
    let lv = l.get(key).ok_or_else(|| no_merge_key(l, key))?;
    let rv = r.get(key).ok_or_else(|| no_merge_key(r, key))?;
    Ok(lv == rv)
}

/// Splits `list` into the elements present in `by` and the others, keeping order.
fn partition(
    list: Vec<Value>,
    by: &[Value],
    key: Option<&str>,
) -> Result<(Vec<Value>, Vec<Value>), SmpError> {
    let mut present = Vec::with_capacity(list.len());
    let mut absent = Vec::new();
    for v in list {
        let found = match key {
            None => by.contains(&v),
            Some(key) => {
                let Value::Object(map) = &v else {
                    return Err(SmpError::BadArgType {
                        expected: "map[string]interface {}",
                        actual: go_type(&v),
                    });
                };
                let value = map.get(key).ok_or_else(|| no_merge_key(map, key))?;
                by.iter().any(|b| b.get(key) == Some(value))
            }
        };
        if found {
            present.push(v)
        } else {
            absent.push(v)
        }
    }
    Ok((present, absent))
}

/// Sorts the patch's elements by `patch_order` and the server-only ones by
/// `server_order`, then interleaves them keeping the server-only elements near
/// their live neighbours.
fn normalize_element_order(
    from_patch: Vec<Value>,
    server_only: Vec<Value>,
    patch_order: &[Value],
    server_order: &[Value],
    key: Option<&str>,
) -> Result<Vec<Value>, SmpError> {
    let from_patch = sort_by_order(from_patch, patch_order, key)?;
    let server_only = sort_by_order(server_only, server_order, key)?;
    Ok(merge_sorted(server_only, from_patch, server_order, key))
}

fn sort_by_order(
    mut list: Vec<Value>,
    order: &[Value],
    key: Option<&str>,
) -> Result<Vec<Value>, SmpError> {
    let mut deletions = Vec::new();
    if let Some(key) = key {
        for v in list.iter().chain(order) {
            let Value::Object(map) = v else {
                return Err(SmpError::BadArgType {
                    expected: "map[string]interface {}",
                    actual: go_type(v),
                });
            };
            if !map.contains_key(key) {
                return Err(no_merge_key(map, key));
            }
        }
        let (keep, delete): (Vec<Value>, Vec<Value>) = list
            .into_iter()
            .partition(|v| v.get(PATCH_DIRECTIVE).and_then(Value::as_str) != Some("delete"));
        list = keep;
        deletions = delete;
    }
    list.sort_by_key(|v| index_of(order, v, key).unwrap_or(usize::MAX));
    list.extend(deletions);
    Ok(list)
}

/// Inserts each element of `left` into `right` before the first element of
/// `right` that comes after it in `server_order`; both keep their own order.
fn merge_sorted(
    left: Vec<Value>,
    right: Vec<Value>,
    server_order: &[Value],
    key: Option<&str>,
) -> Vec<Value> {
    let mut out = Vec::with_capacity(left.len() + right.len());
    let mut left = left.into_iter().peekable();
    let mut right = right.into_iter().peekable();
    loop {
        match (left.peek(), right.peek()) {
            (None, None) => break,
            (Some(_), None) => out.extend(left.next()),
            (None, Some(_)) => out.extend(right.next()),
            (Some(l), Some(r)) => {
                let before = match (
                    index_of(server_order, l, key),
                    index_of(server_order, r, key),
                ) {
                    (Some(li), Some(ri)) => li < ri,
                    _ => false,
                };
                if before {
                    out.extend(left.next())
                } else {
                    out.extend(right.next())
                }
            }
        }
    }
    out
}

fn index_of(list: &[Value], item: &Value, key: Option<&str>) -> Option<usize> {
    match key {
        Some(key) => {
            let wanted = item.as_object().and_then(|m| m.get(key));
            list.iter()
                .position(|v| v.as_object().and_then(|m| m.get(key)) == wanted)
        }
        None => list.iter().position(|v| v == item),
    }
}

fn list_at(map: &Map<String, Value>, field: &str) -> Result<Option<Vec<Value>>, SmpError> {
    match map.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Array(list)) => Ok(Some(list.clone())),
        Some(other) => Err(SmpError::BadArgType {
            expected: "[]interface {}",
            actual: go_type(other),
        }),
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum JsonKind {
    Null,
    Bool,
    Number,
    String,
    Array,
    Object,
}

fn json_kind(v: &Value) -> JsonKind {
    match v {
        Value::Null => JsonKind::Null,
        Value::Bool(_) => JsonKind::Bool,
        Value::Number(_) => JsonKind::Number,
        Value::String(_) => JsonKind::String,
        Value::Array(_) => JsonKind::Array,
        Value::Object(_) => JsonKind::Object,
    }
}

/// The one kind shared by every element of both lists (lists of lists are refused).
fn element_kind(original: &[Value], patch: &[Value]) -> Result<JsonKind, SmpError> {
    let mut kind = None;
    for v in original.iter().chain(patch) {
        let k = json_kind(v);
        match kind {
            None if k == JsonKind::Array => return Err(SmpError::NoListOfLists),
            None => kind = Some(k),
            Some(prev) if prev != k => {
                let all: Vec<Value> = original.iter().chain(patch).cloned().collect();
                return Err(SmpError::MixedList(render(&Value::Array(all))));
            }
            Some(_) => {}
        }
    }
    Ok(kind.unwrap_or(JsonKind::Null))
}

/// A patch value about to be stored as is: drops `null` fields, elements and
/// maps marked `$patch: delete`, and directive keys.
fn clean(v: Value) -> Option<Value> {
    match v {
        Value::Object(mut map) => {
            match map.get(PATCH_DIRECTIVE).map(|d| d.as_str()) {
                None => {}
                Some(Some("replace" | "merge")) => {
                    map.shift_remove(PATCH_DIRECTIVE);
                }
                Some(_) => return None,
            }
            Some(Value::Object(clean_map(map)))
        }
        Value::Array(list) => Some(Value::Array(clean_list(list))),
        other => Some(other),
    }
}

fn clean_map(map: Map<String, Value>) -> Map<String, Value> {
    map.into_iter()
        .filter(|(k, v)| !v.is_null() && !is_directive_key(k))
        .filter_map(|(k, v)| clean(v).map(|v| (k, v)))
        .collect()
}

fn clean_list(list: Vec<Value>) -> Vec<Value> {
    list.into_iter().filter_map(clean).collect()
}

fn is_directive_key(k: &str) -> bool {
    k == PATCH_DIRECTIVE
        || k == RETAIN_KEYS
        || k.starts_with(SET_ELEMENT_ORDER)
        || k.starts_with(DELETE_FROM_PRIMITIVE_LIST)
}

fn no_merge_key(map: &Map<String, Value>, key: &str) -> SmpError {
    SmpError::NoMergeKey {
        map: render(&Value::Object(map.clone())),
        key: key.to_string(),
    }
}

fn render(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// Go's name for the type a JSON value decodes to, for error messages.
fn go_type(v: &Value) -> &'static str {
    match v {
        Value::Null => "<nil>",
        Value::Bool(_) => "bool",
        Value::Number(_) => "float64",
        Value::String(_) => "string",
        Value::Array(_) => "[]interface {}",
        Value::Object(_) => "map[string]interface {}",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::patch::BuiltinTable;
    use serde_json::json;

    const DEPLOYMENT: &str = "io.k8s.api.apps.v1.Deployment";
    const POD: &str = "io.k8s.api.core.v1.Pod";
    const SERVICE: &str = "io.k8s.api.core.v1.Service";
    const CONFIGMAP: &str = "io.k8s.api.core.v1.ConfigMap";

    fn smp(schema: &str, doc: Value, patch: Value) -> Value {
        strategic_merge_patch_with(&BuiltinTable, schema, &doc, &patch).unwrap()
    }

    fn smp_err(schema: &str, doc: Value, patch: Value) -> ApiError {
        strategic_merge_patch_with(&BuiltinTable, schema, &doc, &patch).unwrap_err()
    }

    fn deployment() -> Value {
        json!({
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {
                "name": "ml-api",
                "annotations": {"kubectl.kubernetes.io/last-applied-configuration": "{\"old\":true}\n"},
                "labels": {"app": "ml-api"}
            },
            "spec": {
                "replicas": 2,
                "selector": {"matchLabels": {"app": "ml-api"}},
                "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": "25%", "maxUnavailable": "25%"}},
                "template": {
                    "metadata": {"labels": {"app": "ml-api"}},
                    "spec": {
                        "containers": [{
                            "name": "ml-api",
                            "image": "ml-api:v1",
                            "args": ["--port", "8080"],
                            "env": [{"name": "A", "value": "1"}, {"name": "B", "value": "1"}],
                            "ports": [{"containerPort": 8080, "protocol": "TCP"}]
                        }]
                    }
                }
            }
        })
    }

    fn containers(v: &Value) -> &Value {
        &v["spec"]["template"]["spec"]["containers"]
    }

    #[test]
    fn kubectl_apply_three_way_patch() {
        let patch = json!({
            "metadata": {"annotations": {"kubectl.kubernetes.io/last-applied-configuration": "{\"new\":true}\n"}},
            "spec": {"replicas": 5, "template": {"spec": {
                "$setElementOrder/containers": [{"name": "ml-api"}],
                "containers": [{
                    "$setElementOrder/env": [{"name": "A"}, {"name": "B"}],
                    "env": [{"name": "B", "value": "2"}],
                    "name": "ml-api"
                }]
            }}}
        });
        let out = smp(DEPLOYMENT, deployment(), patch);
        let mut want = deployment();
        want["spec"]["replicas"] = json!(5);
        want["spec"]["template"]["spec"]["containers"][0]["env"][1]["value"] = json!("2");
        want["metadata"]["annotations"]["kubectl.kubernetes.io/last-applied-configuration"] =
            json!("{\"new\":true}\n");
        assert_eq!(out, want);
    }

    #[test]
    fn merge_key_list_adds_updates_and_deletes_elements() {
        let patch = json!({"spec": {"template": {"spec": {"containers": [
            {"name": "ml-api", "env": [
                {"name": "A", "$patch": "delete"},
                {"name": "C", "value": "3"},
                {"name": "B", "value": "9"}
            ]},
            {"name": "sidecar", "image": "proxy:1"}
        ]}}}});
        let out = smp(DEPLOYMENT, deployment(), patch);
        assert_eq!(
            containers(&out)[0]["env"],
            json!([{"name": "C", "value": "3"}, {"name": "B", "value": "9"}])
        );
        assert_eq!(containers(&out)[0]["image"], "ml-api:v1");
        assert_eq!(
            containers(&out)[1],
            json!({"name": "sidecar", "image": "proxy:1"})
        );

        let deleted = smp(
            DEPLOYMENT,
            out,
            json!({"spec": {"template": {"spec": {"containers": [
                {"name": "sidecar", "$patch": "delete"}
            ]}}}}),
        );
        assert_eq!(containers(&deleted).as_array().unwrap().len(), 1);
    }

    #[test]
    fn kubectl_apply_removal_and_reorder() {
        // The live object has a container kubectl does not know (server-only);
        // kubectl deletes "b" and reorders the rest.
        let doc = json!({"spec": {"containers": [
            {"name": "a", "image": "a"}, {"name": "b", "image": "b"}, {"name": "s", "image": "s"}, {"name": "c", "image": "c"}
        ]}});
        let patch = json!({"spec": {
            "$setElementOrder/containers": [{"name": "c"}, {"name": "a"}],
            "containers": [{"name": "b", "$patch": "delete"}]
        }});
        let out = smp(POD, doc, patch);
        let names: Vec<&str> = out["spec"]["containers"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["name"].as_str().unwrap())
            .collect();
        // Like apimachinery: the server-only "s" stays before "c", its live successor.
        assert_eq!(names, vec!["s", "c", "a"]);
    }

    #[test]
    fn set_element_order_with_server_only_items_follows_apimachinery() {
        let doc = json!({"spec": {"containers": [
            {"name": "1", "image": "x"}, {"name": "2"}, {"name": "7"}, {"name": "9"}, {"name": "8"}, {"name": "3"}, {"name": "4"}
        ]}});
        let patch = json!({"spec": {"$setElementOrder/containers": [{"name": "2"}, {"name": "1"}, {"name": "4"}, {"name": "3"}]}});
        let out = smp(POD, doc, patch);
        let names: Vec<&str> = out["spec"]["containers"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["name"].as_str().unwrap())
            .collect();
        assert_eq!(names, vec!["2", "1", "7", "9", "8", "4", "3"]);
    }

    #[test]
    fn set_element_order_ignores_items_missing_from_the_list() {
        let doc = json!({"spec": {"containers": [{"name": "1"}, {"name": "3"}]}});
        let patch = json!({"spec": {
            "$setElementOrder/containers": [{"name": "3"}, {"name": "2"}, {"name": "1"}],
            "containers": [{"name": "3", "image": "x"}, {"name": "1", "image": "y"}]
        }});
        let out = smp(POD, doc, patch);
        assert_eq!(
            out["spec"]["containers"],
            json!([{"name": "3", "image": "x"}, {"name": "1", "image": "y"}])
        );
    }

    #[test]
    fn set_element_order_must_agree_with_the_patch_list() {
        let doc = json!({"spec": {"containers": [{"name": "1"}, {"name": "3"}, {"name": "2"}]}});
        let patch = json!({"spec": {
            "$setElementOrder/containers": [{"name": "1"}, {"name": "2"}, {"name": "3"}],
            "containers": [{"name": "3", "image": "x"}, {"name": "1", "image": "y"}]
        }});
        let err = smp_err(POD, doc, patch);
        assert_eq!(err.code(), 400);
        assert!(err.to_string().contains("doesn't match"), "{err}");
    }

    #[test]
    fn primitive_merge_lists_union_and_delete() {
        let doc = json!({"metadata": {"name": "p", "finalizers": ["a", "b"]}});
        // Patch elements keep the patch's order; "b" (server-only) goes after "a", its live predecessor.
        let out = smp(
            POD,
            doc.clone(),
            json!({"metadata": {"finalizers": ["c", "a"]}}),
        );
        assert_eq!(out["metadata"]["finalizers"], json!(["c", "a", "b"]));

        let out = smp(
            POD,
            doc.clone(),
            json!({"metadata": {"$deleteFromPrimitiveList/finalizers": ["a", "zzz"]}}),
        );
        assert_eq!(out["metadata"]["finalizers"], json!(["b"]));

        // kubectl apply: delete one, keep order of the rest.
        let out = smp(
            POD,
            json!({"metadata": {"finalizers": ["a", "b", "c"]}}),
            json!({"metadata": {
                "$setElementOrder/finalizers": ["c", "a"],
                "$deleteFromPrimitiveList/finalizers": ["b"]
            }}),
        );
        assert_eq!(out["metadata"]["finalizers"], json!(["c", "a"]));

        // Deleting from a list that does not exist adds nothing.
        let out = smp(
            POD,
            json!({"metadata": {}}),
            json!({"metadata": {"$deleteFromPrimitiveList/finalizers": ["x"]}}),
        );
        assert_eq!(out, json!({"metadata": {}}));
    }

    #[test]
    fn lists_without_merge_strategy_are_replaced() {
        let patch = json!({"spec": {"template": {"spec": {"containers": [{"name": "ml-api", "args": ["--port", "9090"]}]}}}});
        let out = smp(DEPLOYMENT, deployment(), patch);
        assert_eq!(containers(&out)[0]["args"], json!(["--port", "9090"]));
    }

    #[test]
    fn null_deletes_a_key_and_is_never_stored() {
        let patch = json!({
            "metadata": {"labels": {"app": null, "tier": "gpu"}},
            "spec": {"paused": null, "template": {"spec": {"containers": [
                {"name": "new", "image": "x", "command": null}
            ]}}}
        });
        let out = smp(DEPLOYMENT, deployment(), patch);
        assert_eq!(out["metadata"]["labels"], json!({"tier": "gpu"}));
        assert!(out["spec"].get("paused").is_none());
        // Without $setElementOrder, new elements go first (as in Kubernetes).
        assert_eq!(containers(&out)[0], json!({"name": "new", "image": "x"}));
    }

    #[test]
    fn patch_directives_on_maps() {
        let out = smp(
            DEPLOYMENT,
            deployment(),
            json!({"metadata": {"labels": {"$patch": "replace", "only": "this"}}}),
        );
        assert_eq!(out["metadata"]["labels"], json!({"only": "this"}));

        let out = smp(
            DEPLOYMENT,
            deployment(),
            json!({"metadata": {"labels": {"$patch": "delete"}}}),
        );
        assert_eq!(out["metadata"]["labels"], json!({}));

        let out = smp(
            DEPLOYMENT,
            deployment(),
            json!({"metadata": {"labels": {"$patch": "merge", "x": "y"}}}),
        );
        assert_eq!(
            out["metadata"]["labels"],
            json!({"app": "ml-api", "x": "y"})
        );

        let err = smp_err(
            DEPLOYMENT,
            deployment(),
            json!({"metadata": {"labels": {"$patch": "explode"}}}),
        );
        assert_eq!(err.code(), 400);
        assert!(
            err.to_string().contains("unknown patch type: explode"),
            "{err}"
        );
    }

    #[test]
    fn patch_replace_on_a_list() {
        let patch = json!({"spec": {"template": {"spec": {"containers": [
            {"name": "ml-api", "env": [{"$patch": "replace"}, {"name": "Z", "value": "26"}]}
        ]}}}});
        let out = smp(DEPLOYMENT, deployment(), patch);
        assert_eq!(
            containers(&out)[0]["env"],
            json!([{"name": "Z", "value": "26"}])
        );

        let patch = json!({"spec": {"template": {"spec": {"containers": [{"$patch": "replace"}, {"name": "only", "image": "o"}]}}}});
        let out = smp(DEPLOYMENT, deployment(), patch);
        assert_eq!(containers(&out), &json!([{"name": "only", "image": "o"}]));
    }

    #[test]
    fn retain_keys_switches_rolling_update_to_recreate() {
        // What kubectl apply sends when the manifest changes strategy to Recreate.
        let patch = json!({"spec": {"strategy": {"$retainKeys": ["type"], "type": "Recreate", "rollingUpdate": null}}});
        let out = smp(DEPLOYMENT, deployment(), patch);
        assert_eq!(out["spec"]["strategy"], json!({"type": "Recreate"}));

        // Even without the explicit null, keys not retained are cleared.
        let out = smp(
            DEPLOYMENT,
            deployment(),
            json!({"spec": {"strategy": {"$retainKeys": ["type"], "type": "Recreate"}}}),
        );
        assert_eq!(out["spec"]["strategy"], json!({"type": "Recreate"}));

        // A key set by the patch must be retained.
        let err = smp_err(
            DEPLOYMENT,
            deployment(),
            json!({"spec": {"strategy": {"$retainKeys": ["type"], "rollingUpdate": {}}}}),
        );
        assert_eq!(err.code(), 400);
        assert!(err.to_string().contains("retainKeys"), "{err}");
    }

    #[test]
    fn retain_keys_on_volume_elements() {
        let doc = json!({"spec": {"volumes": [{"name": "data", "emptyDir": {}}, {"name": "cfg", "configMap": {"name": "c"}}]}});
        let patch = json!({"spec": {"volumes": [{"$retainKeys": ["hostPath", "name"], "name": "data", "hostPath": {"path": "/d"}}]}});
        let out = smp(POD, doc, patch);
        assert_eq!(
            out["spec"]["volumes"],
            json!([{"name": "data", "hostPath": {"path": "/d"}}, {"name": "cfg", "configMap": {"name": "c"}}])
        );
    }

    #[test]
    fn kubectl_set_image() {
        let patch = json!({"spec": {"template": {"spec": {"containers": [{"name": "ml-api", "image": "ml-api:v2"}]}}}});
        let out = smp(DEPLOYMENT, deployment(), patch);
        let mut want = deployment();
        want["spec"]["template"]["spec"]["containers"][0]["image"] = json!("ml-api:v2");
        assert_eq!(out, want);
    }

    #[test]
    fn kubectl_label_annotate_and_rollout_restart() {
        let out = smp(
            DEPLOYMENT,
            deployment(),
            json!({"metadata": {"labels": {"team": "ml"}, "annotations": {"note": "hi"}}}),
        );
        assert_eq!(
            out["metadata"]["labels"],
            json!({"app": "ml-api", "team": "ml"})
        );
        assert_eq!(out["metadata"]["annotations"]["note"], "hi");

        let restart = json!({"spec": {"template": {"metadata": {"annotations": {"kubectl.kubernetes.io/restartedAt": "2026-11-23T07:00:00Z"}}}}});
        let out = smp(DEPLOYMENT, deployment(), restart);
        assert_eq!(
            out["spec"]["template"]["metadata"],
            json!({"labels": {"app": "ml-api"}, "annotations": {"kubectl.kubernetes.io/restartedAt": "2026-11-23T07:00:00Z"}})
        );
    }

    #[test]
    fn service_ports_merge_by_port() {
        let doc = json!({"spec": {"type": "ClusterIP", "ports": [{"port": 80, "targetPort": 8080}, {"port": 443, "targetPort": 8443}]}});
        let patch = json!({"spec": {"ports": [{"port": 443, "targetPort": 9443}, {"port": 9000}]}});
        let out = smp(SERVICE, doc, patch);
        assert_eq!(
            out["spec"]["ports"],
            json!([{"port": 80, "targetPort": 8080}, {"port": 443, "targetPort": 9443}, {"port": 9000}])
        );
    }

    #[test]
    fn configmap_data_merges() {
        let doc = json!({"data": {"a": "1", "b": "2"}});
        let out = smp(CONFIGMAP, doc, json!({"data": {"b": null, "c": "3"}}));
        assert_eq!(out["data"], json!({"a": "1", "c": "3"}));
    }

    #[test]
    fn type_changes_take_the_patch_value() {
        let out = smp(
            DEPLOYMENT,
            deployment(),
            json!({"spec": {"strategy": "oops"}}),
        );
        assert_eq!(out["spec"]["strategy"], "oops");
    }

    #[test]
    fn malformed_patches_are_refused() {
        let err = smp_err(
            POD,
            json!({"spec": {"containers": [{"name": "a"}]}}),
            json!({"spec": {"containers": [{"image": "b"}]}}),
        );
        assert_eq!(err.code(), 422);
        assert!(
            err.to_string()
                .contains("does not contain declared merge key: name"),
            "{err}"
        );

        assert_eq!(smp_err(POD, json!({}), json!([1])).code(), 400);
        let err = smp_err(
            POD,
            json!({"metadata": {"finalizers": [["a"]]}}),
            json!({"metadata": {"finalizers": [["b"]]}}),
        );
        assert_eq!(err.code(), 422);
        let err = smp_err(
            POD,
            json!({"metadata": {}}),
            json!({"metadata": {"$deleteFromPrimitiveList": ["x"]}}),
        );
        assert_eq!(err.code(), 400);
    }

    #[test]
    fn directives_inside_new_values_are_not_stored() {
        let doc = json!({"spec": {}});
        let patch = json!({"spec": {"containers": [
            {"name": "a", "$setElementOrder/env": [{"name": "X"}], "env": [{"name": "X", "value": "1"}, {"name": "Y", "$patch": "delete"}]}
        ]}});
        let out = smp(POD, doc, patch);
        assert_eq!(
            out["spec"]["containers"],
            json!([{"name": "a", "env": [{"name": "X", "value": "1"}]}])
        );
    }
}
