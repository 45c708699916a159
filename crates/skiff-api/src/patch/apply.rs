//! Server-side apply and managed fields: who owns which field, apply merges, conflicts and pruning.
//!
//! This follows structured-merge-diff as kube-apiserver uses it: an apply makes
//! the applied configuration the manager's whole set of fields; fields it applied
//! before and no longer applies are removed unless another manager owns them;
//! changing a field another manager owns is a conflict unless forced. Ordinary
//! writes (`Update`) give their writer the fields they changed.

use super::fieldset::{FieldSet, PathElement, key_element, path_string};
use super::{PatchMetaLookup, SchemaLookup};
use crate::error::ApiError;
use crate::registry::ResourceDef;
use serde_json::{Map, Value, json};

const LAST_APPLIED: &str = "kubectl.kubernetes.io/last-applied-configuration";
const APPLY: &str = "Apply";

/// Metadata fields that belong to the server, never to a manager.
const SERVER_META: &[&str] = &[
    "name",
    "namespace",
    "creationTimestamp",
    "selfLink",
    "uid",
    "clusterName",
    "generation",
    "managedFields",
    "resourceVersion",
];

/// Decodes an `application/apply-patch+yaml` body (JSON is YAML too).
pub fn decode_apply_patch(body: &[u8]) -> Result<Value, ApiError> {
    let v: Value = serde_yaml::from_slice(body)
        .map_err(|e| ApiError::bad_request(format!("error decoding YAML: {e}")))?;
    if !v.is_object() {
        return Err(ApiError::bad_request(
            "error decoding YAML: the apply patch must be an object",
        ));
    }
    Ok(v)
}

/// Server-side apply of `applied` by `manager` onto `live` (None: create).
/// Returns the new object with `metadata.managedFields` updated; a 409 lists
/// the fields other managers own when `force` is not set.
pub fn server_side_apply(
    def: &ResourceDef,
    live: Option<&Value>,
    applied: &Value,
    manager: &str,
    force: bool,
    now: &str,
) -> Result<Value, ApiError> {
    server_side_apply_with(&SchemaLookup, def, live, applied, manager, force, now)
}

/// Records an ordinary write (`operation` is normally "Update") from `old`
/// (None: create) to `new` in `new`'s `metadata.managedFields`.
pub fn update_managed_fields(
    def: &ResourceDef,
    old: Option<&Value>,
    new: &mut Value,
    manager: &str,
    operation: &str,
    now: &str,
) {
    update_managed_fields_with(&SchemaLookup, def, old, new, manager, operation, None, now)
}

/// Records a write to a subresource (`status`, `scale`) of an object of `def`.
pub fn update_subresource_managed_fields(
    def: &ResourceDef,
    old: &Value,
    new: &mut Value,
    manager: &str,
    subresource: &str,
    now: &str,
) {
    update_managed_fields_with(
        &SchemaLookup,
        def,
        Some(old),
        new,
        manager,
        "Update",
        Some(subresource),
        now,
    )
}

/// One `metadata.managedFields` entry.
#[derive(Debug, Clone, PartialEq)]
struct Entry {
    manager: String,
    operation: String,
    api_version: String,
    time: Option<String>,
    subresource: String,
    set: FieldSet,
}

impl Entry {
    /// Entries are one per manager, operation and subresource; updates are
    /// also told apart by the API version they were written in.
    fn same_owner(
        &self,
        manager: &str,
        operation: &str,
        subresource: &str,
        api_version: &str,
    ) -> bool {
        self.manager == manager
            && self.operation == operation
            && self.subresource == subresource
            && (operation == APPLY || self.api_version == api_version)
    }

    /// How conflict messages name the manager.
    fn describe(&self) -> String {
        let mut s = format!("{:?}", self.manager);
        if !self.subresource.is_empty() {
            s.push_str(&format!(" with subresource {:?}", self.subresource));
        }
        if self.operation != APPLY {
            s.push_str(&format!(" using {}", self.api_version));
        }
        s
    }

    fn decode(v: &Value) -> Option<Entry> {
        let operation = v.get("operation")?.as_str()?;
        if operation != APPLY && operation != "Update" {
            return None;
        }
        if v.get("fieldsType").and_then(Value::as_str) != Some("FieldsV1") {
            return None;
        }
        let api_version = v.get("apiVersion")?.as_str()?;
        if api_version.is_empty() {
            return None;
        }
        let set = match v.get("fieldsV1") {
            Some(f) => FieldSet::from_fields_v1(f).ok()?,
            None => FieldSet::new(),
        };
        let text = |k: &str| v.get(k).and_then(Value::as_str).map(str::to_string);
        Some(Entry {
            manager: text("manager").unwrap_or_default(),
            operation: operation.to_string(),
            api_version: api_version.to_string(),
            time: text("time"),
            subresource: text("subresource").unwrap_or_default(),
            set,
        })
    }

    fn encode(&self) -> Value {
        let mut m = Map::new();
        m.insert("manager".into(), Value::String(self.manager.clone()));
        m.insert("operation".into(), Value::String(self.operation.clone()));
        m.insert("apiVersion".into(), Value::String(self.api_version.clone()));
        if let Some(t) = &self.time {
            m.insert("time".into(), Value::String(t.clone()));
        }
        m.insert("fieldsType".into(), Value::String("FieldsV1".into()));
        m.insert("fieldsV1".into(), self.set.to_fields_v1());
        if !self.subresource.is_empty() {
            m.insert(
                "subresource".into(),
                Value::String(self.subresource.clone()),
            );
        }
        Value::Object(m)
    }
}

/// The decodable entries of an object's `metadata.managedFields` (others are dropped,
/// as kube-apiserver resets managed fields it cannot read).
fn decode_entries(obj: &Value) -> Vec<Entry> {
    match obj.pointer("/metadata/managedFields") {
        Some(Value::Array(list)) => list.iter().filter_map(Entry::decode).collect(),
        _ => Vec::new(),
    }
}

/// Writes `entries`, sorted like Kubernetes (Apply first, then by time, manager,
/// version, subresource), into the object; none removes the field.
fn encode_entries(obj: &mut Value, mut entries: Vec<Entry>) {
    entries.retain(|e| !e.set.is_empty());
    entries.sort_by(|a, b| {
        (
            &a.operation,
            &a.time,
            &a.manager,
            &a.api_version,
            &a.subresource,
        )
            .cmp(&(
                &b.operation,
                &b.time,
                &b.manager,
                &b.api_version,
                &b.subresource,
            ))
    });
    let Some(obj) = obj.as_object_mut() else {
        return;
    };
    let meta = obj
        .entry("metadata")
        .or_insert_with(|| Value::Object(Map::new()));
    let Some(meta) = meta.as_object_mut() else {
        return;
    };
    if entries.is_empty() {
        meta.shift_remove("managedFields");
    } else {
        meta.insert(
            "managedFields".into(),
            Value::Array(entries.iter().map(Entry::encode).collect()),
        );
    }
}

/// Which fields of an object a write may own: the server's metadata never,
/// `status` only through the status subresource.
#[derive(Debug, Clone, Copy)]
struct Scope {
    /// The resource has a status subresource, so its main endpoint ignores status.
    status_subresource: bool,
    /// The write goes to the status subresource and owns only status.
    status_only: bool,
}

impl Scope {
    fn new(def: &ResourceDef, subresource: &str) -> Self {
        Scope {
            status_subresource: def.status,
            status_only: subresource == "status",
        }
    }

    /// A copy of `obj` holding only what managers can own.
    fn trackable(&self, obj: &Value) -> Value {
        let Value::Object(map) = obj else {
            return Value::Object(Map::new());
        };
        let mut out = Map::new();
        for (k, v) in map {
            let keep = match k.as_str() {
                "apiVersion" | "kind" => false,
                "status" => self.status_only || !self.status_subresource,
                _ => !self.status_only,
            };
            if !keep {
                continue;
            }
            if k == "metadata" {
                let Value::Object(meta) = v else { continue };
                let meta: Map<String, Value> = meta
                    .iter()
                    .filter(|(k, _)| !SERVER_META.contains(&k.as_str()))
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect();
                if !meta.is_empty() {
                    out.insert(k.clone(), Value::Object(meta));
                }
                continue;
            }
            out.insert(k.clone(), v.clone());
        }
        Value::Object(out)
    }
}

/// How a field's value is structured for ownership.
#[derive(Debug, Clone, PartialEq)]
struct FieldType {
    schema: Option<&'static str>,
    list: ListType,
    atomic_map: bool,
}

#[derive(Debug, Clone, PartialEq)]
enum ListType {
    /// Elements are identified by these key fields (`x-kubernetes-list-type: map`).
    Map(Vec<&'static str>),
    /// Scalar elements identified by value (`x-kubernetes-list-type: set`).
    Set,
    Atomic,
}

/// Added, changed and removed paths between two versions of an object.
#[derive(Debug, Default)]
struct Comparison {
    added: FieldSet,
    modified: FieldSet,
    removed: FieldSet,
}

impl Comparison {
    fn changed(&self) -> FieldSet {
        self.added.union(&self.modified)
    }

    fn is_same(&self) -> bool {
        self.added.is_empty() && self.modified.is_empty() && self.removed.is_empty()
    }
}

struct Tracker<'l, L: ?Sized> {
    lookup: &'l L,
    root: &'static str,
}

impl<L: PatchMetaLookup + ?Sized> Tracker<'_, L> {
    fn root_type(&self) -> FieldType {
        FieldType {
            schema: Some(self.root),
            list: ListType::Atomic,
            atomic_map: false,
        }
    }

    fn field_type(&self, parent: &FieldType, field: &str) -> FieldType {
        let Some(schema) = parent.schema else {
            return FieldType {
                schema: None,
                list: ListType::Atomic,
                atomic_map: false,
            };
        };
        let keys = self.lookup.list_map_keys(schema, field);
        let list = if !keys.is_empty() {
            ListType::Map(keys)
        } else if self
            .lookup
            .patch_meta(schema, field)
            .is_some_and(|m| m.main_strategy() == "merge")
        {
            ListType::Set
        } else {
            ListType::Atomic
        };
        FieldType {
            schema: self.lookup.field_schema(schema, field),
            list,
            atomic_map: self.lookup.is_atomic_map(schema, field),
        }
    }

    /// The type of the elements of a list of type `list`: the same schema (the
    /// lookup names element types), never a list itself.
    fn element_type(list: &FieldType) -> FieldType {
        FieldType {
            schema: list.schema,
            list: ListType::Atomic,
            atomic_map: false,
        }
    }

    /// The path element naming `item` in a list of type `ty`; None for lists
    /// that are atomic or elements without their keys.
    fn element(ty: &FieldType, item: &Value) -> Option<PathElement> {
        match &ty.list {
            ListType::Map(keys) => {
                let map = item.as_object()?;
                let mut fields = Vec::with_capacity(keys.len());
                for key in keys {
                    match map.get(*key) {
                        Some(v) if !v.is_null() => fields.push((*key, v)),
                        // Kubernetes defaults a port's protocol, so the key has it too.
                        _ if *key == "protocol" => fields.push((*key, &*TCP)),
                        _ => return None,
                    }
                }
                Some(key_element(fields.into_iter()))
            }
            ListType::Set if !item.is_object() && !item.is_array() => {
                Some(PathElement::Value(item.to_string()))
            }
            _ => None,
        }
    }

    /// Whether every element of `list` can be named; otherwise it is handled as atomic.
    fn granular(ty: &FieldType, list: &[Value]) -> bool {
        ty.list != ListType::Atomic && list.iter().all(|v| Self::element(ty, v).is_some())
    }

    /// The fields set in an applied configuration (structured-merge-diff's ToFieldSet).
    fn field_set(
        &self,
        ty: &FieldType,
        v: &Value,
        path: &mut Vec<PathElement>,
        out: &mut FieldSet,
    ) {
        match v {
            Value::Object(map) if !ty.atomic_map => {
                for (k, child) in map {
                    let child_ty = self.field_type(ty, k);
                    path.push(PathElement::Field(k.clone()));
                    let empty_map = child.as_object().is_some_and(|m| m.is_empty());
                    if child.is_null() || empty_map {
                        out.insert(path);
                    } else {
                        self.field_set(&child_ty, child, path, out);
                    }
                    path.pop();
                }
            }
            Value::Array(list) if Self::granular(ty, list) => {
                let elem_ty = Self::element_type(ty);
                let mut seen = Vec::new();
                for item in list {
                    let Some(pe) = Self::element(ty, item) else {
                        continue;
                    };
                    path.push(pe.clone());
                    out.insert(path);
                    if !seen.contains(&pe) {
                        if item.is_object() {
                            self.field_set(&elem_ty, item, path, out);
                        }
                        seen.push(pe);
                    }
                    path.pop();
                }
            }
            _ => out.insert(path),
        }
    }

    /// Compares two versions of a value (structured-merge-diff's Compare).
    fn compare(
        &self,
        ty: &FieldType,
        lhs: Option<&Value>,
        rhs: Option<&Value>,
        path: &mut Vec<PathElement>,
        out: &mut Comparison,
    ) {
        let lhs = lhs.filter(|v| !v.is_null());
        let rhs = rhs.filter(|v| !v.is_null());
        if lhs.is_none() && rhs.is_none() {
            return;
        }
        let leaf = match (lhs, rhs) {
            (l, r)
                if !ty.atomic_map
                    && l.is_none_or(Value::is_object)
                    && r.is_none_or(Value::is_object) =>
            {
                let l = lhs.and_then(Value::as_object);
                let r = rhs.and_then(Value::as_object);
                if l.is_none_or(Map::is_empty) && r.is_none_or(Map::is_empty) {
                    true
                } else {
                    let mut keys: Vec<&String> = l.map(|m| m.keys().collect()).unwrap_or_default();
                    for k in r.into_iter().flat_map(|m| m.keys()) {
                        if !keys.contains(&k) {
                            keys.push(k);
                        }
                    }
                    for k in keys {
                        let child_ty = self.field_type(ty, k);
                        path.push(PathElement::Field(k.clone()));
                        self.compare(
                            &child_ty,
                            l.and_then(|m| m.get(k)),
                            r.and_then(|m| m.get(k)),
                            path,
                            out,
                        );
                        path.pop();
                    }
                    false
                }
            }
            (l, r) if l.is_none_or(Value::is_array) && r.is_none_or(Value::is_array) => {
                let l: &[Value] = lhs
                    .and_then(Value::as_array)
                    .map(Vec::as_slice)
                    .unwrap_or_default();
                let r: &[Value] = rhs
                    .and_then(Value::as_array)
                    .map(Vec::as_slice)
                    .unwrap_or_default();
                if (l.is_empty() && r.is_empty())
                    || !Self::granular(ty, l)
                    || !Self::granular(ty, r)
                {
                    true
                } else {
                    let elem_ty = Self::element_type(ty);
                    let named = |list: &[Value]| -> Vec<(PathElement, Value)> {
                        let mut out: Vec<(PathElement, Value)> = Vec::new();
                        for item in list {
                            if let Some(pe) = Self::element(ty, item)
                                && !out.iter().any(|(p, _)| *p == pe)
                            {
                                out.push((pe, item.clone()));
                            }
                        }
                        out
                    };
                    let (l, r) = (named(l), named(r));
                    let mut pes: Vec<&PathElement> = l.iter().map(|(p, _)| p).collect();
                    for (p, _) in &r {
                        if !pes.contains(&p) {
                            pes.push(p);
                        }
                    }
                    let find = |list: &'_ [(PathElement, Value)], pe: &PathElement| {
                        list.iter().find(|(p, _)| p == pe).map(|(_, v)| v.clone())
                    };
                    for pe in pes {
                        let (li, ri) = (find(&l, pe), find(&r, pe));
                        path.push(pe.clone());
                        self.compare(&elem_ty, li.as_ref(), ri.as_ref(), path, out);
                        path.pop();
                    }
                    false
                }
            }
            _ => true,
        };
        if leaf {
            match (lhs, rhs) {
                (None, Some(_)) => out.added.insert(path),
                (Some(_), None) => out.removed.insert(path),
                (Some(l), Some(r)) if l != r => out.modified.insert(path),
                _ => {}
            }
        } else if Self::is_struct_field(ty, path, lhs.or(rhs)) {
            // Kubernetes' typed objects always hold their (non-pointer) structs,
            // so adding one never makes its writer own the struct itself.
        } else if lhs.is_none() {
            out.added.insert(path);
        } else if rhs.is_none() {
            out.removed.insert(path);
        }
    }

    /// A field whose value is an object of a known type (a struct, as opposed
    /// to a map like labels or a list element).
    fn is_struct_field(ty: &FieldType, path: &[PathElement], v: Option<&Value>) -> bool {
        ty.schema.is_some()
            && matches!(path.last(), Some(PathElement::Field(_)))
            && v.is_some_and(Value::is_object)
    }

    /// Merges an applied configuration into the live value (structured-merge-diff's Merge):
    /// maps and keyed lists merge, everything else takes the applied value.
    fn merge(&self, ty: &FieldType, live: Option<&Value>, applied: &Value) -> Option<Value> {
        match (live, applied) {
            (_, Value::Null) => None,
            (Some(Value::Object(live)), Value::Object(applied)) if !ty.atomic_map => {
                let mut out = live.clone();
                for (k, v) in applied {
                    let child_ty = self.field_type(ty, k);
                    match self.merge(&child_ty, live.get(k), v) {
                        Some(m) => {
                            out.insert(k.clone(), m);
                        }
                        None => {
                            out.shift_remove(k);
                        }
                    }
                }
                Some(Value::Object(out))
            }
            (Some(Value::Array(live)), Value::Array(applied))
                if Self::granular(ty, live) && Self::granular(ty, applied) =>
            {
                Some(Value::Array(self.merge_list(ty, live, applied)))
            }
            _ => Some(without_nulls(applied)),
        }
    }

    /// Keyed-list merge, ordered like structured-merge-diff: applied elements
    /// in their order, live-only elements kept where they were relative to the
    /// elements both lists share.
    fn merge_list(&self, ty: &FieldType, live: &[Value], applied: &[Value]) -> Vec<Value> {
        let elem_ty = Self::element_type(ty);
        let named = |list: &[Value]| -> Vec<(PathElement, Value)> {
            let mut out: Vec<(PathElement, Value)> = Vec::with_capacity(list.len());
            for v in list {
                if let Some(pe) = Self::element(ty, v)
                    && !out.iter().any(|(p, _)| *p == pe)
                {
                    out.push((pe, v.clone()));
                }
            }
            out
        };
        let (lhs, rhs) = (named(live), named(applied));
        let in_rhs = |pe: &PathElement| rhs.iter().any(|(p, _)| p == pe);
        let live_of = |pe: &PathElement| lhs.iter().find(|(p, _)| p == pe).map(|(_, v)| v);
        let mut shared: std::collections::VecDeque<&PathElement> = rhs
            .iter()
            .map(|(p, _)| p)
            .filter(|p| live_of(p).is_some())
            .collect();
        let mut next_shared = shared.pop_front();
        let mut merged_rhs: Vec<&PathElement> = Vec::new();
        let mut out = Vec::with_capacity(lhs.len() + rhs.len());
        let (mut li, mut ri) = (0, 0);
        while li < lhs.len() || ri < rhs.len() {
            if li < lhs.len() && ri < rhs.len() {
                let pe = &lhs[li].0;
                if *pe == rhs[ri].0 {
                    merged_rhs.push(pe);
                    out.extend(self.merge(&elem_ty, Some(&lhs[li].1), &rhs[ri].1));
                    li += 1;
                    ri += 1;
                    next_shared = shared.pop_front();
                    continue;
                }
                // A shared element out of the applied order waits for its turn.
                if in_rhs(pe) && next_shared.is_some_and(|n| n != pe) {
                    li += 1;
                    continue;
                }
            }
            if li < lhs.len() {
                let pe = &lhs[li].0;
                if !in_rhs(pe) {
                    out.push(lhs[li].1.clone());
                    li += 1;
                    continue;
                } else if merged_rhs.contains(&pe) {
                    li += 1;
                }
            }
            if ri < rhs.len() {
                let pe = &rhs[ri].0;
                merged_rhs.push(pe);
                out.extend(self.merge(&elem_ty, live_of(pe), &rhs[ri].1));
                ri += 1;
                if next_shared == Some(pe) {
                    next_shared = shared.pop_front();
                }
            }
        }
        out
    }

    /// Removes the paths in `remove` from `v`; maps and lists left empty by a
    /// removal go too.
    fn remove(&self, ty: &FieldType, v: &mut Value, remove: &FieldSet) {
        match v {
            Value::Object(map) if !ty.atomic_map => {
                let keys: Vec<String> = map.keys().cloned().collect();
                for k in keys {
                    let pe = PathElement::Field(k.clone());
                    if remove.has(std::slice::from_ref(&pe)) {
                        map.shift_remove(&k);
                    } else if let Some(sub) = remove.child(&pe) {
                        let child_ty = self.field_type(ty, &k);
                        if let Some(child) = map.get_mut(&k) {
                            self.remove(&child_ty, child, sub);
                            if is_empty_container(child) {
                                map.shift_remove(&k);
                            }
                        }
                    }
                }
            }
            Value::Array(list) if Self::granular(ty, list) => {
                let elem_ty = Self::element_type(ty);
                let mut kept = Vec::with_capacity(list.len());
                for mut item in std::mem::take(list) {
                    let Some(pe) = Self::element(ty, &item) else {
                        kept.push(item);
                        continue;
                    };
                    if remove.has(std::slice::from_ref(&pe)) {
                        continue;
                    }
                    if let Some(sub) = remove.child(&pe) {
                        self.remove(&elem_ty, &mut item, sub);
                    }
                    kept.push(item);
                }
                *list = kept;
            }
            _ => {}
        }
    }

    /// Refuses applied configurations kube-apiserver cannot type: keyed-list
    /// elements without their keys, or twice the same key.
    fn validate(
        &self,
        ty: &FieldType,
        v: &Value,
        path: &mut Vec<PathElement>,
    ) -> Result<(), ApiError> {
        match v {
            Value::Object(map) if !ty.atomic_map => {
                for (k, child) in map {
                    path.push(PathElement::Field(k.clone()));
                    self.validate(&self.field_type(ty, k), child, path)?;
                    path.pop();
                }
            }
            Value::Array(list) if matches!(ty.list, ListType::Map(_)) => {
                let ListType::Map(keys) = &ty.list else {
                    return Ok(());
                };
                let elem_ty = Self::element_type(ty);
                let mut seen = Vec::new();
                for (i, item) in list.iter().enumerate() {
                    let Some(pe) = Self::element(ty, item) else {
                        return Err(ApiError::UnprocessableEntity {
                            message: format!(
                                "{}: element {i}: associative list with keys has an element that omits key field {:?} (and doesn't have default value)",
                                path_string(path),
                                keys.iter()
                                    .find(|k| item.get(**k).is_none_or(Value::is_null))
                                    .copied()
                                    .unwrap_or(""),
                            ),
                        });
                    };
                    if seen.contains(&pe) {
                        return Err(ApiError::UnprocessableEntity {
                            message: format!(
                                "{}: duplicate entries for key {pe}",
                                path_string(path)
                            ),
                        });
                    }
                    path.push(pe.clone());
                    self.validate(&elem_ty, item, path)?;
                    path.pop();
                    seen.push(pe);
                }
            }
            _ => {}
        }
        Ok(())
    }

    fn field_set_of(&self, v: &Value) -> FieldSet {
        let mut out = FieldSet::new();
        self.field_set(&self.root_type(), v, &mut Vec::new(), &mut out);
        out
    }

    fn compare_objects(&self, old: &Value, new: &Value) -> Comparison {
        let mut out = Comparison::default();
        self.compare(
            &self.root_type(),
            Some(old),
            Some(new),
            &mut Vec::new(),
            &mut out,
        );
        out
    }
}

/// The protocol Kubernetes defaults on ports, used when a port key omits it.
static TCP: std::sync::LazyLock<Value> = std::sync::LazyLock::new(|| Value::String("TCP".into()));

fn is_empty_container(v: &Value) -> bool {
    match v {
        Value::Object(m) => m.is_empty(),
        Value::Array(l) => l.is_empty(),
        _ => false,
    }
}

fn without_nulls(v: &Value) -> Value {
    match v {
        Value::Object(m) => Value::Object(
            m.iter()
                .filter(|(_, v)| !v.is_null())
                .map(|(k, v)| (k.clone(), without_nulls(v)))
                .collect(),
        ),
        Value::Array(l) => Value::Array(l.iter().map(without_nulls).collect()),
        other => other.clone(),
    }
}

/// [`server_side_apply`] with patch metadata from `lookup`.
pub fn server_side_apply_with<L: PatchMetaLookup + ?Sized>(
    lookup: &L,
    def: &ResourceDef,
    live: Option<&Value>,
    applied: &Value,
    manager: &str,
    force: bool,
    now: &str,
) -> Result<Value, ApiError> {
    let api_version = def.api_version();
    check_applied(def, &api_version, applied, manager)?;
    let tracker = Tracker {
        lookup,
        root: def.schema_name,
    };
    let root = tracker.root_type();
    let scope = Scope::new(def, "");
    let empty = json!({});
    let live_obj = live.unwrap_or(&empty);

    let config = scope.trackable(applied);
    tracker.validate(&root, &config, &mut Vec::new())?;
    let applied_set = tracker.field_set_of(&config);

    let mut entries = decode_entries(live_obj);
    if live.is_some() && entries.is_empty() {
        // Fields of an object nobody owns yet belong to "before-first-apply",
        // so applying over them is a conflict like any other.
        let existing = tracker.compare_objects(&json!({}), &scope.trackable(live_obj));
        entries.push(Entry {
            manager: "before-first-apply".into(),
            operation: "Update".into(),
            api_version: api_version.clone(),
            time: Some(now.to_string()),
            subresource: String::new(),
            set: existing.added,
        });
    }
    let mine = entries
        .iter()
        .position(|e| e.same_owner(manager, APPLY, "", &api_version));
    let last_set = mine.map(|i| entries[i].set.clone()).unwrap_or_default();

    let mut to_merge = applied.clone();
    if let Some(obj) = to_merge.as_object_mut() {
        if def.status {
            obj.shift_remove("status");
        }
        if let Some(meta) = obj.get_mut("metadata").and_then(Value::as_object_mut) {
            meta.shift_remove("managedFields");
        }
    }
    let mut merged = tracker
        .merge(&root, Some(live_obj), &to_merge)
        .unwrap_or_else(|| json!({}));

    // Fields this manager applied last time and no longer applies go, unless
    // someone else (or this apply) still owns them.
    let mut keep = applied_set.clone();
    for (i, e) in entries.iter().enumerate() {
        if Some(i) != mine {
            keep = keep.union(&e.set);
        }
    }
    let mut to_remove = FieldSet::new();
    for path in last_set.difference(&applied_set).paths() {
        let named_field = matches!(path.last(), Some(PathElement::Field(_)));
        if !(keep.has(&path) || (named_field && keep.has_below(&path))) {
            to_remove.insert(&path);
        }
    }
    tracker.remove(&root, &mut merged, &to_remove);

    let cmp = tracker.compare_objects(&scope.trackable(live_obj), &scope.trackable(&merged));
    let changed = cmp.changed();
    let conflicts: Vec<(usize, FieldSet)> = entries
        .iter()
        .enumerate()
        .filter(|(i, _)| Some(*i) != mine)
        .map(|(i, e)| (i, e.set.intersection(&changed)))
        .filter(|(_, c)| !c.is_empty())
        .collect();
    if !conflicts.is_empty() && !force {
        // kubectl moving from client-side to server-side apply may take over
        // the fields whose live values are still what it applied last time.
        let allowed = if manager == "kubectl" {
            tracker.unchanged_since_last_applied(&scope, live_obj, &api_version)
        } else {
            None
        };
        let unresolved: Vec<(&Entry, FieldSet)> = conflicts
            .iter()
            .map(|(i, c)| {
                (
                    &entries[*i],
                    allowed
                        .as_ref()
                        .map_or_else(|| c.clone(), |a| c.difference(a)),
                )
            })
            .filter(|(_, c)| !c.is_empty())
            .collect();
        if !unresolved.is_empty() {
            let name = applied
                .pointer("/metadata/name")
                .and_then(Value::as_str)
                .unwrap_or("");
            return Err(conflict_error(def, name, &unresolved));
        }
    }
    for (i, c) in &conflicts {
        entries[*i].set = entries[*i].set.difference(c);
    }
    for (i, e) in entries.iter_mut().enumerate() {
        if Some(i) != mine {
            e.set = e.set.difference(&cmp.removed);
        }
    }

    let object_changed = live.is_none() || !cmp.is_same();
    let entry = Entry {
        manager: manager.to_string(),
        operation: APPLY.to_string(),
        api_version: api_version.clone(),
        time: match mine {
            Some(i) if !object_changed && entries[i].set == applied_set => entries[i].time.clone(),
            _ => Some(now.to_string()),
        },
        subresource: String::new(),
        set: applied_set,
    };
    match mine {
        Some(i) => entries[i] = entry,
        None => entries.push(entry),
    }

    if manager == "kubectl" && has_last_applied(&merged) {
        let last = last_applied_of(applied);
        if let Some(annotations) = merged
            .pointer_mut("/metadata/annotations")
            .and_then(Value::as_object_mut)
        {
            annotations.insert(LAST_APPLIED.into(), Value::String(last));
        }
    }
    encode_entries(&mut merged, entries);
    Ok(merged)
}

/// [`update_managed_fields`] with patch metadata from `lookup`, for writes to a
/// subresource too (`status`, `scale`).
#[allow(clippy::too_many_arguments)]
pub fn update_managed_fields_with<L: PatchMetaLookup + ?Sized>(
    lookup: &L,
    def: &ResourceDef,
    old: Option<&Value>,
    new: &mut Value,
    manager: &str,
    operation: &str,
    subresource: Option<&str>,
    now: &str,
) {
    let subresource = subresource.unwrap_or("");
    let api_version = def.api_version();
    let tracker = Tracker {
        lookup,
        root: def.schema_name,
    };
    let scope = Scope::new(def, subresource);
    let empty = json!({});
    let old_obj = old.unwrap_or(&empty);

    let mut entries = entries_for_update(old_obj, new, subresource);
    if old.is_some() && entries.is_empty() {
        // Like kube-apiserver, objects without managed fields are not tracked
        // again until someone applies.
        encode_entries(new, entries);
        return;
    }
    let cmp = tracker.compare_objects(&scope.trackable(old_obj), &scope.trackable(new));
    let changed = cmp.changed();

    let mine = entries
        .iter()
        .position(|e| e.same_owner(manager, operation, subresource, &api_version));
    for (i, e) in entries.iter_mut().enumerate() {
        if Some(i) != mine {
            e.set = e.set.difference(&changed).difference(&cmp.removed);
        }
    }
    match mine {
        Some(i) => {
            let e = &mut entries[i];
            e.set = e.set.difference(&cmp.removed).union(&changed);
            if !changed.is_empty() {
                e.time = Some(now.to_string());
            }
        }
        None if !changed.is_empty() => entries.push(Entry {
            manager: manager.to_string(),
            operation: operation.to_string(),
            api_version,
            time: Some(now.to_string()),
            subresource: subresource.to_string(),
            set: changed,
        }),
        None => {}
    }
    cap_update_managers(&mut entries);
    encode_entries(new, entries);
}

/// The managed fields an update starts from: those the request carries (an
/// empty list or `[{}]` clears them), else the live object's. Subresource
/// writes cannot set managed fields.
fn entries_for_update(old: &Value, new: &Value, subresource: &str) -> Vec<Entry> {
    let live = decode_entries(old);
    if !subresource.is_empty() {
        return live;
    }
    let Some(Value::Array(sent)) = new.pointer("/metadata/managedFields") else {
        return live;
    };
    let reset =
        sent.is_empty() || (sent.len() == 1 && sent[0].as_object().is_some_and(Map::is_empty));
    if reset {
        return Vec::new();
    }
    let decoded: Vec<Entry> = sent.iter().filter_map(Entry::decode).collect();
    if decoded.len() == sent.len() {
        decoded
    } else {
        live
    }
}

/// Kubernetes keeps at most this many `Update` entries; older ones are merged
/// into an `ancient-changes` entry per API version.
const MAX_UPDATE_MANAGERS: usize = 10;
const ANCIENT_CHANGES: &str = "ancient-changes";

fn cap_update_managers(entries: &mut Vec<Entry>) {
    let mut updaters: Vec<usize> = (0..entries.len())
        .filter(|i| entries[*i].operation != APPLY)
        .collect();
    if updaters.len() <= MAX_UPDATE_MANAGERS {
        return;
    }
    updaters.sort_by(|a, b| {
        let (a, b) = (&entries[*a], &entries[*b]);
        (&a.time, &a.manager, &a.api_version, &a.subresource).cmp(&(
            &b.time,
            &b.manager,
            &b.api_version,
            &b.subresource,
        ))
    });
    let mut remaining = updaters.len();
    let mut first_of_version: Vec<(String, usize)> = Vec::new();
    let mut merged_away: Vec<usize> = Vec::new();
    for i in updaters {
        if remaining <= MAX_UPDATE_MANAGERS {
            break;
        }
        let version = entries[i].api_version.clone();
        let Some(first) = first_of_version
            .iter()
            .find(|(v, _)| *v == version)
            .map(|(_, f)| *f)
        else {
            first_of_version.push((version, i));
            continue;
        };
        let bucket = match entries.iter().position(|e| {
            e.manager == ANCIENT_CHANGES
                && e.operation != APPLY
                && e.api_version == version
                && e.subresource.is_empty()
        }) {
            Some(b) => b,
            None => {
                entries[first].manager = ANCIENT_CHANGES.to_string();
                entries[first].subresource.clear();
                first
            }
        };
        if bucket == i {
            continue;
        }
        entries[bucket].set = entries[i].set.union(&entries[bucket].set);
        entries[bucket].time = entries[i].time.clone();
        merged_away.push(i);
        remaining -= 1;
    }
    merged_away.sort_unstable();
    for i in merged_away.into_iter().rev() {
        entries.remove(i);
    }
}

fn check_applied(
    def: &ResourceDef,
    api_version: &str,
    applied: &Value,
    manager: &str,
) -> Result<(), ApiError> {
    if !applied.is_object() {
        return Err(ApiError::bad_request("the apply patch must be an object"));
    }
    if manager.is_empty() {
        return Err(ApiError::bad_request(
            "PATCH with apply requires a fieldManager",
        ));
    }
    match applied.get("apiVersion").and_then(Value::as_str) {
        Some(v) if v == api_version => {}
        Some(v) => {
            return Err(ApiError::bad_request(format!(
                "Incorrect version specified in apply patch. Specified patch version: {v}, expected: {api_version}"
            )));
        }
        None => {
            return Err(ApiError::bad_request(
                "Object 'apiVersion' is missing in the apply patch",
            ));
        }
    }
    match applied.get("kind").and_then(Value::as_str) {
        Some(k) if k == def.kind => {}
        Some(k) => {
            return Err(ApiError::bad_request(format!(
                "the apply patch is a {k}, but the resource holds {}",
                def.kind
            )));
        }
        None => {
            return Err(ApiError::bad_request(
                "Object 'Kind' is missing in the apply patch",
            ));
        }
    }
    if applied
        .pointer("/metadata/managedFields")
        .is_some_and(|v| !v.is_null())
    {
        return Err(ApiError::bad_request("metadata.managedFields must be nil"));
    }
    Ok(())
}

fn conflict_error(def: &ResourceDef, name: &str, conflicts: &[(&Entry, FieldSet)]) -> ApiError {
    let mut by_manager: Vec<(&Entry, Vec<String>)> = conflicts
        .iter()
        .map(|(e, set)| (*e, set.paths().iter().map(|p| path_string(p)).collect()))
        .collect();
    by_manager.sort_by(|a, b| {
        (&a.0.manager, &a.0.operation, &a.0.subresource).cmp(&(
            &b.0.manager,
            &b.0.operation,
            &b.0.subresource,
        ))
    });
    let all: Vec<(String, &String)> = by_manager
        .iter()
        .flat_map(|(e, paths)| paths.iter().map(|p| (e.describe(), p)))
        .collect();
    let message = match all.as_slice() {
        [(manager, path)] => {
            format!("Apply failed with 1 conflict: conflict with {manager}: {path}")
        }
        _ => {
            let mut lines = Vec::new();
            for (e, paths) in &by_manager {
                lines.push(format!("conflicts with {}:", e.describe()));
                lines.extend(paths.iter().map(|p| format!("- {p}")));
            }
            format!(
                "Apply failed with {} conflicts: {}",
                all.len(),
                lines.join("\n")
            )
        }
    };
    ApiError::Conflict {
        group: def.group.to_string(),
        resource: def.plural.to_string(),
        name: name.to_string(),
        message,
    }
}

fn has_last_applied(obj: &Value) -> bool {
    obj.pointer("/metadata/annotations")
        .and_then(|a| a.get(LAST_APPLIED))
        .and_then(Value::as_str)
        .is_some_and(|s| !s.is_empty())
}

/// The last-applied annotation value kubectl would write for `applied`.
fn last_applied_of(applied: &Value) -> String {
    let mut obj = applied.clone();
    if let Some(annotations) = obj
        .pointer_mut("/metadata/annotations")
        .and_then(Value::as_object_mut)
    {
        annotations.shift_remove(LAST_APPLIED);
    }
    format!("{obj}\n")
}

impl<L: PatchMetaLookup + ?Sized> Tracker<'_, L> {
    /// The fields of the live object's last-applied annotation whose live values
    /// are still the applied ones.
    fn unchanged_since_last_applied(
        &self,
        scope: &Scope,
        live: &Value,
        api_version: &str,
    ) -> Option<FieldSet> {
        let text = live
            .pointer("/metadata/annotations")?
            .get(LAST_APPLIED)?
            .as_str()?;
        let last: Value = serde_json::from_str(text).ok()?;
        if last.get("apiVersion").and_then(Value::as_str) != Some(api_version) {
            return None;
        }
        let last = scope.trackable(&last);
        let set = self.field_set_of(&last);
        let cmp = self.compare_objects(&last, &scope.trackable(live));
        Some(
            set.difference(&cmp.modified)
                .difference(&cmp.added)
                .difference(&cmp.removed),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::patch::BuiltinTable;
    use crate::registry::lookup;

    const T0: &str = "2026-11-23T07:00:00Z";
    const T1: &str = "2026-11-23T08:00:00Z";
    const T2: &str = "2026-11-23T09:00:00Z";

    fn deployments() -> &'static ResourceDef {
        lookup("apps", "v1", "deployments").unwrap()
    }

    fn manifest(replicas: i64, image: &str) -> Value {
        json!({
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {"name": "web", "namespace": "default", "labels": {"app": "web"}},
            "spec": {
                "replicas": replicas,
                "selector": {"matchLabels": {"app": "web"}},
                "template": {
                    "metadata": {"labels": {"app": "web"}},
                    "spec": {"containers": [{"name": "web", "image": image, "ports": [{"containerPort": 80}]}]}
                }
            }
        })
    }

    fn apply(
        live: Option<&Value>,
        applied: &Value,
        manager: &str,
        force: bool,
        now: &str,
    ) -> Result<Value, ApiError> {
        server_side_apply_with(
            &BuiltinTable,
            deployments(),
            live,
            applied,
            manager,
            force,
            now,
        )
    }

    fn update(old: Option<&Value>, new: &mut Value, manager: &str, now: &str) {
        update_managed_fields_with(
            &BuiltinTable,
            deployments(),
            old,
            new,
            manager,
            "Update",
            None,
            now,
        )
    }

    fn entry<'a>(obj: &'a Value, manager: &str) -> Option<&'a Value> {
        obj["metadata"]["managedFields"]
            .as_array()?
            .iter()
            .find(|e| e["manager"] == manager)
    }

    fn owns(obj: &Value, manager: &str, path: &[PathElement]) -> bool {
        entry(obj, manager)
            .is_some_and(|e| FieldSet::from_fields_v1(&e["fieldsV1"]).unwrap().has(path))
    }

    fn f(name: &str) -> PathElement {
        PathElement::field(name)
    }

    fn replicas_path() -> Vec<PathElement> {
        vec![f("spec"), f("replicas")]
    }

    #[test]
    fn create_via_apply_records_the_applied_fields() {
        let out = apply(None, &manifest(2, "nginx:1"), "kubectl", false, T0).unwrap();
        assert_eq!(out["spec"]["replicas"], 2);
        assert_eq!(out["metadata"]["name"], "web");
        let entries = out["metadata"]["managedFields"].as_array().unwrap();
        assert_eq!(entries.len(), 1);
        let e = &entries[0];
        assert_eq!(e["manager"], "kubectl");
        assert_eq!(e["operation"], "Apply");
        assert_eq!(e["apiVersion"], "apps/v1");
        assert_eq!(e["time"], T0);
        assert_eq!(e["fieldsType"], "FieldsV1");
        assert_eq!(
            e["fieldsV1"],
            json!({
                "f:metadata": {"f:labels": {"f:app": {}}},
                "f:spec": {
                    "f:replicas": {},
                    "f:selector": {},
                    "f:template": {
                        "f:metadata": {"f:labels": {"f:app": {}}},
                        "f:spec": {"f:containers": {"k:{\"name\":\"web\"}": {
                            ".": {},
                            "f:image": {},
                            "f:name": {},
                            "f:ports": {"k:{\"containerPort\":80,\"protocol\":\"TCP\"}": {".": {}, "f:containerPort": {}}}
                        }}}
                    }
                }
            })
        );
    }

    #[test]
    fn reapply_removes_fields_no_longer_applied_but_keeps_others() {
        let mut first = manifest(2, "nginx:1");
        first["metadata"]["labels"]["tier"] = json!("front");
        first["spec"]["template"]["spec"]["containers"]
            .as_array_mut()
            .unwrap()
            .push(json!({"name": "sidecar", "image": "proxy:1"}));
        let live = apply(None, &first, "kubectl", false, T0).unwrap();

        // Someone else labels the object; that label is theirs.
        let mut labelled = live.clone();
        labelled["metadata"]["labels"]["team"] = json!("ml");
        update(Some(&live), &mut labelled, "kubectl-label", T1);
        assert!(owns(
            &labelled,
            "kubectl-label",
            &[f("metadata"), f("labels"), f("team")]
        ));

        let second = manifest(2, "nginx:1");
        let out = apply(Some(&labelled), &second, "kubectl", false, T2).unwrap();
        assert_eq!(
            out["metadata"]["labels"],
            json!({"app": "web", "team": "ml"})
        );
        let names: Vec<&str> = out["spec"]["template"]["spec"]["containers"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["name"].as_str().unwrap())
            .collect();
        assert_eq!(names, vec!["web"]);
        assert!(!owns(
            &out,
            "kubectl",
            &[f("metadata"), f("labels"), f("tier")]
        ));
        assert!(owns(
            &out,
            "kubectl-label",
            &[f("metadata"), f("labels"), f("team")]
        ));
    }

    #[test]
    fn a_field_another_manager_also_owns_survives_removal() {
        let live = apply(None, &manifest(2, "nginx:1"), "kubectl", false, T0).unwrap();
        // A second applier applies the same replicas: shared ownership, no conflict.
        let other = json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web"}, "spec": {"replicas": 2}});
        let shared = apply(Some(&live), &other, "autoscaler", false, T1).unwrap();
        assert!(
            owns(&shared, "kubectl", &replicas_path())
                && owns(&shared, "autoscaler", &replicas_path())
        );

        let mut without = manifest(2, "nginx:1");
        without["spec"]
            .as_object_mut()
            .unwrap()
            .shift_remove("replicas");
        let out = apply(Some(&shared), &without, "kubectl", false, T2).unwrap();
        assert_eq!(out["spec"]["replicas"], 2);
        assert!(!owns(&out, "kubectl", &replicas_path()));
        assert!(owns(&out, "autoscaler", &replicas_path()));

        // When its last owner stops applying it, the field goes.
        let gone = apply(
            Some(&out),
            &json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web"}}),
            "autoscaler",
            false,
            T2,
        )
        .unwrap();
        assert!(gone["spec"].get("replicas").is_none());
        assert!(entry(&gone, "autoscaler").is_none());
    }

    #[test]
    fn conflict_with_client_side_apply_is_409() {
        let mut created = manifest(2, "nginx:1");
        update(None, &mut created, "kubectl-client-side-apply", T0);
        let e = entry(&created, "kubectl-client-side-apply").unwrap();
        assert_eq!(e["operation"], "Update");
        assert!(owns(
            &created,
            "kubectl-client-side-apply",
            &replicas_path()
        ));

        let err = apply(Some(&created), &manifest(5, "nginx:1"), "ci-bot", false, T1).unwrap_err();
        assert_eq!(err.code(), 409);
        assert_eq!(err.reason(), "Conflict");
        assert_eq!(
            err.to_string(),
            "Apply failed with 1 conflict: conflict with \"kubectl-client-side-apply\" using apps/v1: .spec.replicas"
        );

        // Same values are not conflicts: both own them.
        let same = apply(Some(&created), &manifest(2, "nginx:1"), "ci-bot", false, T1).unwrap();
        assert!(owns(&same, "ci-bot", &replicas_path()));
        assert!(owns(&same, "kubectl-client-side-apply", &replicas_path()));
    }

    #[test]
    fn several_conflicts_are_listed_per_manager() {
        let mut created = manifest(2, "nginx:1");
        update(None, &mut created, "kubectl-client-side-apply", T0);
        let err = apply(Some(&created), &manifest(5, "nginx:2"), "ci-bot", false, T1).unwrap_err();
        assert_eq!(
            err.to_string(),
            "Apply failed with 2 conflicts: conflicts with \"kubectl-client-side-apply\" using apps/v1:\n\
             - .spec.replicas\n\
             - .spec.template.spec.containers[name=\"web\"].image"
        );
    }

    #[test]
    fn force_takes_ownership() {
        let mut created = manifest(2, "nginx:1");
        update(None, &mut created, "kubectl-client-side-apply", T0);
        let out = apply(Some(&created), &manifest(5, "nginx:1"), "ci-bot", true, T1).unwrap();
        assert_eq!(out["spec"]["replicas"], 5);
        assert!(owns(&out, "ci-bot", &replicas_path()));
        assert!(!owns(&out, "kubectl-client-side-apply", &replicas_path()));
        // Fields with equal values stay shared.
        assert!(owns(
            &out,
            "kubectl-client-side-apply",
            &[f("metadata"), f("labels"), f("app")]
        ));
        // Apply entries come first.
        assert_eq!(out["metadata"]["managedFields"][0]["operation"], "Apply");
    }

    #[test]
    fn kubectl_may_take_over_fields_it_applied_client_side() {
        let mut created = manifest(2, "nginx:1");
        let last = format!("{}\n", manifest(2, "nginx:1"));
        created["metadata"]["annotations"] = json!({LAST_APPLIED: last});
        update(None, &mut created, "kubectl-client-side-apply", T0);

        let out = apply(
            Some(&created),
            &manifest(2, "nginx:2"),
            "kubectl",
            false,
            T1,
        )
        .unwrap();
        assert_eq!(
            out["spec"]["template"]["spec"]["containers"][0]["image"],
            "nginx:2"
        );
        // The annotation follows the applied configuration.
        let annotation = out["metadata"]["annotations"][LAST_APPLIED]
            .as_str()
            .unwrap();
        let parsed: Value = serde_json::from_str(annotation).unwrap();
        assert_eq!(
            parsed["spec"]["template"]["spec"]["containers"][0]["image"],
            "nginx:2"
        );

        // But not fields changed since by someone else.
        let mut scaled = created.clone();
        scaled["spec"]["replicas"] = json!(7);
        update(Some(&created), &mut scaled, "hpa", T1);
        let err = apply(Some(&scaled), &manifest(2, "nginx:1"), "kubectl", false, T2).unwrap_err();
        assert_eq!(
            err.to_string(),
            "Apply failed with 1 conflict: conflict with \"hpa\" using apps/v1: .spec.replicas"
        );
    }

    #[test]
    fn noop_apply_keeps_the_time() {
        let live = apply(None, &manifest(2, "nginx:1"), "kubectl", false, T0).unwrap();
        let again = apply(Some(&live), &manifest(2, "nginx:1"), "kubectl", false, T1).unwrap();
        assert_eq!(again, live);
        let changed = apply(Some(&live), &manifest(3, "nginx:1"), "kubectl", false, T1).unwrap();
        assert_eq!(entry(&changed, "kubectl").unwrap()["time"], T1);
    }

    #[test]
    fn apply_ignores_status_and_server_metadata() {
        let mut live = apply(None, &manifest(2, "nginx:1"), "kubectl", false, T0).unwrap();
        live["status"] = json!({"replicas": 2});
        live["metadata"]["uid"] = json!("u-1");
        let mut applied = manifest(2, "nginx:1");
        applied["status"] = json!({"replicas": 99});
        let out = apply(Some(&live), &applied, "kubectl", false, T1).unwrap();
        assert_eq!(out["status"], json!({"replicas": 2}));
        assert_eq!(out["metadata"]["uid"], "u-1");
        let fields = &entry(&out, "kubectl").unwrap()["fieldsV1"];
        assert!(fields.get("f:status").is_none());
        assert!(fields["f:metadata"].get("f:name").is_none());
    }

    #[test]
    fn invalid_apply_patches_are_refused() {
        let mut wrong_version = manifest(1, "x");
        wrong_version["apiVersion"] = json!("apps/v1beta1");
        assert_eq!(
            apply(None, &wrong_version, "kubectl", false, T0)
                .unwrap_err()
                .code(),
            400
        );

        let mut with_managed = manifest(1, "x");
        with_managed["metadata"]["managedFields"] = json!([]);
        let err = apply(None, &with_managed, "kubectl", false, T0).unwrap_err();
        assert_eq!(err.to_string(), "metadata.managedFields must be nil");

        let mut no_key = manifest(1, "x");
        no_key["spec"]["template"]["spec"]["containers"] = json!([{"image": "x"}]);
        assert_eq!(
            apply(None, &no_key, "kubectl", false, T0)
                .unwrap_err()
                .code(),
            422
        );

        let mut dup = manifest(1, "x");
        dup["spec"]["template"]["spec"]["containers"] = json!([{"name": "a"}, {"name": "a"}]);
        let err = apply(None, &dup, "kubectl", false, T0).unwrap_err();
        assert!(
            err.to_string()
                .contains("duplicate entries for key [name=\"a\"]"),
            "{err}"
        );
    }

    #[test]
    fn updates_take_ownership_of_what_they_change() {
        let mut created = manifest(2, "nginx:1");
        update(None, &mut created, "kubectl-create", T0);
        let e = entry(&created, "kubectl-create").unwrap();
        assert_eq!(e["operation"], "Update");
        assert_eq!(e["time"], T0);
        // Structs are not owned as a whole, maps (labels) and list elements are.
        assert!(e["fieldsV1"]["f:spec"].get(".").is_none());
        assert!(e["fieldsV1"]["f:spec"]["f:template"].get(".").is_none());
        assert_eq!(
            e["fieldsV1"]["f:metadata"]["f:labels"],
            json!({".": {}, "f:app": {}})
        );
        assert_eq!(
            e["fieldsV1"]["f:spec"]["f:template"]["f:spec"]["f:containers"]["k:{\"name\":\"web\"}"]
                ["."],
            json!({})
        );

        let mut edited = created.clone();
        edited["spec"]["template"]["spec"]["containers"][0]["image"] = json!("nginx:2");
        edited["metadata"]["labels"]
            .as_object_mut()
            .unwrap()
            .shift_remove("app");
        update(Some(&created), &mut edited, "kubectl-edit", T1);
        let image = [
            f("spec"),
            f("template"),
            f("spec"),
            f("containers"),
            key_element([("name", &json!("web"))].into_iter()),
            f("image"),
        ];
        assert!(owns(&edited, "kubectl-edit", &image));
        assert!(!owns(&edited, "kubectl-create", &image));
        assert!(!owns(
            &edited,
            "kubectl-create",
            &[f("metadata"), f("labels"), f("app")]
        ));
        assert!(owns(&edited, "kubectl-create", &replicas_path()));
        assert_eq!(entry(&edited, "kubectl-create").unwrap()["time"], T0);

        // A write that changes nothing leaves managed fields alone.
        let mut same = edited.clone();
        update(Some(&edited), &mut same, "someone", T2);
        assert_eq!(same, edited);
    }

    #[test]
    fn managed_fields_sent_as_a_single_empty_entry_are_cleared() {
        let mut created = manifest(2, "nginx:1");
        update(None, &mut created, "kubectl-create", T0);
        let mut cleared = created.clone();
        cleared["metadata"]["managedFields"] = json!([{}]);
        update(Some(&created), &mut cleared, "kubectl-edit", T1);
        assert!(cleared["metadata"].get("managedFields").is_none());
    }

    #[test]
    fn status_subresource_writes_own_only_status() {
        let mut created = manifest(2, "nginx:1");
        update(None, &mut created, "kubectl-create", T0);
        let mut with_status = created.clone();
        with_status["status"] =
            json!({"replicas": 2, "conditions": [{"type": "Available", "status": "True"}]});
        update_managed_fields_with(
            &BuiltinTable,
            deployments(),
            Some(&created),
            &mut with_status,
            "controller",
            "Update",
            Some("status"),
            T1,
        );
        let e = entry(&with_status, "controller").unwrap();
        assert_eq!(e["subresource"], "status");
        assert_eq!(
            e["fieldsV1"]["f:status"]["f:conditions"]["k:{\"type\":\"Available\"}"],
            json!({".": {}, "f:status": {}, "f:type": {}})
        );
        assert!(e["fieldsV1"].get("f:spec").is_none());
    }

    #[test]
    fn finalizers_are_owned_per_value() {
        let mut applied = manifest(1, "x");
        applied["metadata"]["finalizers"] = json!(["example.com/a"]);
        let live = apply(None, &applied, "kubectl", false, T0).unwrap();
        assert!(owns(
            &live,
            "kubectl",
            &[
                f("metadata"),
                f("finalizers"),
                PathElement::Value("\"example.com/a\"".into())
            ]
        ));

        let mut other = json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web", "finalizers": ["example.com/b"]}});
        let both = apply(Some(&live), &other, "operator", false, T1).unwrap();
        assert_eq!(
            both["metadata"]["finalizers"],
            json!(["example.com/a", "example.com/b"])
        );

        other["metadata"]["finalizers"] = json!([]);
        let one = apply(Some(&both), &other, "operator", false, T2).unwrap();
        assert_eq!(one["metadata"]["finalizers"], json!(["example.com/a"]));
    }

    #[test]
    fn applying_over_untracked_fields_conflicts_with_before_first_apply() {
        let live = manifest(2, "nginx:1");
        let err = apply(Some(&live), &manifest(3, "nginx:1"), "ci-bot", false, T1).unwrap_err();
        assert_eq!(
            err.to_string(),
            "Apply failed with 1 conflict: conflict with \"before-first-apply\" using apps/v1: .spec.replicas"
        );
        let out = apply(Some(&live), &manifest(2, "nginx:1"), "ci-bot", false, T1).unwrap();
        assert!(owns(&out, "before-first-apply", &replicas_path()));
        assert!(owns(&out, "ci-bot", &replicas_path()));
    }

    #[test]
    fn untracked_objects_stay_untracked_on_update() {
        let live = manifest(2, "nginx:1");
        let mut new = manifest(3, "nginx:1");
        update(Some(&live), &mut new, "kubectl-edit", T1);
        assert!(new["metadata"].get("managedFields").is_none());
    }

    #[test]
    fn update_managers_are_capped_at_ten() {
        let mut obj = manifest(0, "nginx:1");
        update(None, &mut obj, "creator", T0);
        for i in 1..=12 {
            let mut next = obj.clone();
            next["metadata"]["labels"][format!("l{i}")] = json!("x");
            update(
                Some(&obj),
                &mut next,
                &format!("writer-{i:02}"),
                &format!("2026-11-23T07:{i:02}:00Z"),
            );
            obj = next;
        }
        let entries = obj["metadata"]["managedFields"].as_array().unwrap();
        assert_eq!(entries.len(), 10);
        let ancient = entry(&obj, "ancient-changes").unwrap();
        let set = FieldSet::from_fields_v1(&ancient["fieldsV1"]).unwrap();
        assert!(set.has(&replicas_path()));
        assert!(set.has(&[f("metadata"), f("labels"), f("l1")]));
        assert!(entry(&obj, "creator").is_none());
        assert!(entry(&obj, "writer-12").is_some());
    }

    #[test]
    fn keyed_lists_merge_in_applied_order_keeping_live_only_elements() {
        let with_containers = |names: &[&str]| {
            let mut m = manifest(1, "x");
            m["spec"]["template"]["spec"]["containers"] = Value::Array(
                names
                    .iter()
                    .map(|n| json!({"name": n, "image": n}))
                    .collect(),
            );
            m
        };
        let live = apply(
            None,
            &with_containers(&["a", "b", "c"]),
            "kubectl",
            false,
            T0,
        )
        .unwrap();
        // Another manager's container "s" sits between "b" and "c".
        let mut edited = live.clone();
        edited["spec"]["template"]["spec"]["containers"]
            .as_array_mut()
            .unwrap()
            .insert(2, json!({"name": "s", "image": "s"}));
        update(Some(&live), &mut edited, "injector", T1);

        let out = apply(
            Some(&edited),
            &with_containers(&["c", "a", "b", "d"]),
            "kubectl",
            false,
            T2,
        )
        .unwrap();
        let names: Vec<&str> = out["spec"]["template"]["spec"]["containers"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["name"].as_str().unwrap())
            .collect();
        // As structured-merge-diff orders it: "s" keeps its place before "c",
        // its live successor, and the applied elements follow in applied order.
        assert_eq!(names, vec!["s", "c", "a", "b", "d"]);
    }

    #[test]
    fn apply_patch_bodies_are_yaml_or_json() {
        let yaml = b"apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: web\nspec:\n  replicas: 3\n";
        let v = decode_apply_patch(yaml).unwrap();
        assert_eq!(v["spec"]["replicas"], 3);
        let v = decode_apply_patch(br#"{"apiVersion":"v1","kind":"ConfigMap","data":{"a":"1"}}"#)
            .unwrap();
        assert_eq!(v["data"]["a"], "1");
        assert_eq!(decode_apply_patch(b"- a\n- b\n").unwrap_err().code(), 400);
        assert_eq!(decode_apply_patch(b"a: [unclosed").unwrap_err().code(), 400);
    }
}
