//! Defaulting: fills in the fields Kubernetes fills in when an object is created or updated.
//!
//! Each API group has its own module mirroring kube-apiserver's `SetDefaults_*` functions
//! (plus the few values its registry strategies and default admission plugins set, so that
//! `kubectl get -o yaml` shows what it shows on a real cluster). Every function only fills
//! what is missing, so defaulting an already defaulted object changes nothing.

mod apps;
mod autoscaling;
mod batch;
mod core;
mod discovery;

pub use batch::{
    CONTROLLER_UID_LABEL, JOB_NAME_LABEL, LEGACY_CONTROLLER_UID_LABEL, LEGACY_JOB_NAME_LABEL,
};
pub use core::qos_class;

use crate::registry::ResourceDef;
use serde_json::{Map, Value};

/// Applies Kubernetes defaulting for `def` to `obj` in place.
pub fn apply(def: &ResourceDef, obj: &mut Value) {
    if !obj.is_object() {
        return;
    }
    match (def.group, def.kind) {
        ("", "Pod") => core::pod(obj),
        ("", "Service") => core::service(obj),
        ("", "Endpoints") => core::endpoints(obj),
        ("", "Secret") => core::secret(obj),
        ("", "Namespace") => core::namespace(obj),
        ("", "Node") => core::node(obj),
        ("", "PersistentVolume") => core::persistent_volume(obj),
        ("", "PersistentVolumeClaim") => core::persistent_volume_claim(obj),
        ("apps", "Deployment") => apps::deployment(obj),
        ("apps", "ReplicaSet") => apps::replica_set(obj),
        ("apps", "StatefulSet") => apps::stateful_set(obj),
        ("apps", "DaemonSet") => apps::daemon_set(obj),
        ("batch", "Job") => batch::job(obj),
        ("batch", "CronJob") => batch::cron_job(obj),
        ("autoscaling", "HorizontalPodAutoscaler") => autoscaling::horizontal_pod_autoscaler(obj),
        ("discovery.k8s.io", "EndpointSlice") => discovery::endpoint_slice(obj),
        // ConfigMap, ServiceAccount, ControllerRevision, Lease and Events
        // have no defaults in Kubernetes.
        _ => {}
    }
}

/// Sets `map[key] = value` when the key is absent or null.
fn default(map: &mut Map<String, Value>, key: &str, value: Value) {
    match map.get(key) {
        Some(v) if !v.is_null() => {}
        _ => {
            map.insert(key.to_string(), value);
        }
    }
}

/// Sets a string field when it is absent, null or empty (Go's zero value).
fn default_str(map: &mut Map<String, Value>, key: &str, value: &str) {
    match map.get(key) {
        Some(Value::String(s)) if !s.is_empty() => {}
        Some(v) if !v.is_null() && !v.is_string() => {}
        _ => {
            map.insert(key.to_string(), Value::String(value.to_string()));
        }
    }
}

/// The object at `map[key]`, created when absent or null. Returns None when the field
/// holds something else (a malformed object that validation will report).
fn obj_entry<'a>(map: &'a mut Map<String, Value>, key: &str) -> Option<&'a mut Map<String, Value>> {
    let entry = map
        .entry(key.to_string())
        .or_insert_with(|| Value::Object(Map::new()));
    if entry.is_null() {
        *entry = Value::Object(Map::new());
    }
    entry.as_object_mut()
}

/// The object at `map[key]` if present.
fn obj_mut<'a>(map: &'a mut Map<String, Value>, key: &str) -> Option<&'a mut Map<String, Value>> {
    map.get_mut(key).and_then(Value::as_object_mut)
}

/// Each object element of the array at `map[key]`.
fn each_obj<'a>(
    map: &'a mut Map<String, Value>,
    key: &str,
) -> impl Iterator<Item = &'a mut Map<String, Value>> {
    map.get_mut(key)
        .and_then(Value::as_array_mut)
        .into_iter()
        .flat_map(|a| a.iter_mut())
        .filter_map(Value::as_object_mut)
}

/// Rewrites a quantity in the canonical form Kubernetes stores (`0.5` -> `500m`,
/// `1024Mi` -> `1Gi`, the number 2 -> `"2"`). Unparseable values are left for validation.
fn canonical_quantity(v: &mut Value, round_to_milli: bool) {
    let parsed = match v {
        Value::String(s) => crate::quantity::parse_quantity(s),
        Value::Number(n) => crate::quantity::parse_quantity(&n.to_string()),
        _ => return,
    };
    if let Ok(q) = parsed {
        let q = if round_to_milli {
            q.round_up_to_milli()
        } else {
            q
        };
        *v = Value::String(q.to_string());
    }
}

/// Canonicalizes every quantity of the resource list at `map[key]` (rounded up to milli
/// units, as SetDefaults_ResourceList does).
fn canonical_resource_list(map: &mut Map<String, Value>, key: &str) {
    if let Some(list) = obj_mut(map, key) {
        for v in list.values_mut() {
            canonical_quantity(v, true);
        }
    }
}

/// `requests` and `limits` of a ResourceRequirements object at `map[key]`.
fn canonical_requirements(map: &mut Map<String, Value>, key: &str) {
    if let Some(r) = obj_mut(map, key) {
        canonical_resource_list(r, "requests");
        canonical_resource_list(r, "limits");
    }
}

fn str_field<'a>(map: &'a Map<String, Value>, key: &str) -> &'a str {
    map.get(key).and_then(Value::as_str).unwrap_or("")
}

#[cfg(test)]
mod tests;
