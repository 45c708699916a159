//! Validation: the checks Kubernetes applies to each resource on create and update.
//!
//! One module per API group mirrors `k8s.io/kubernetes/pkg/apis/*/validation`. Every check
//! appends to one list, so a request learns about every problem at once, each named by its
//! full field path and worded the way kube-apiserver words it.

mod apps;
mod autoscaling;
mod batch;
mod core;
mod decode;
mod meta;
pub mod names;
mod other;
mod pod;

use crate::error::FieldError;
use crate::quantity::{Quantity, parse_quantity};
use crate::registry::ResourceDef;
use serde_json::{Map, Value};

/// The NodePort range the apiserver allocates from (`--service-node-port-range`).
pub const NODE_PORT_RANGE: (i64, i64) = (30000, 32767);

/// Validates a (defaulted) object; `old` is the stored object on update.
pub fn validate(def: &ResourceDef, obj: &Value, old: Option<&Value>) -> Vec<FieldError> {
    let mut errs = Vec::new();
    if !obj.is_object() {
        errs.push(FieldError::invalid(
            "",
            "<non-object>",
            "must be a JSON object",
        ));
        return errs;
    }
    if let Some(e) = decode::type_error(def, obj) {
        errs.push(e);
        return errs;
    }
    let old = old.filter(|o| o.is_object());
    let e = &mut errs;
    match (def.group, def.kind) {
        ("", "Namespace") => core::namespace(obj, e),
        ("", "Pod") => pod::pod(obj, old, e),
        ("", "Service") => core::service(obj, old, e),
        ("", "Endpoints") => core::endpoints(obj, e),
        ("", "ConfigMap") => core::config_map(obj, old, e),
        ("", "Secret") => core::secret(obj, old, e),
        ("", "Node") => core::node(obj, old, e),
        ("", "Event") => other::core_event(obj, e),
        ("", "ServiceAccount") => core::service_account(obj, e),
        ("", "PersistentVolume") => core::persistent_volume(obj, old, e),
        ("", "PersistentVolumeClaim") => core::persistent_volume_claim(obj, old, e),
        ("apps", "Deployment") => apps::deployment(obj, old, e),
        ("apps", "ReplicaSet") => apps::replica_set(obj, old, e),
        ("apps", "StatefulSet") => apps::stateful_set(obj, old, e),
        ("apps", "DaemonSet") => apps::daemon_set(obj, old, e),
        ("apps", "ControllerRevision") => other::controller_revision(obj, old, e),
        ("batch", "Job") => batch::job(obj, old, e),
        ("batch", "CronJob") => batch::cron_job(obj, old, e),
        ("autoscaling", "HorizontalPodAutoscaler") => {
            autoscaling::horizontal_pod_autoscaler(obj, e)
        }
        ("coordination.k8s.io", "Lease") => other::lease(obj, e),
        ("discovery.k8s.io", "EndpointSlice") => other::endpoint_slice(obj, old, e),
        ("events.k8s.io", "Event") => other::events_event(obj, old, e),
        _ => meta::object_meta(obj, def.namespaced, names::dns1123_subdomain, e),
    }
    if let Some(old) = old {
        meta::object_meta_update(obj, old, e);
    }
    errs
}

// ---- field paths -------------------------------------------------------------------------

pub(crate) fn child(path: &str, name: &str) -> String {
    if path.is_empty() {
        name.to_string()
    } else {
        format!("{path}.{name}")
    }
}

pub(crate) fn index(path: &str, i: usize) -> String {
    format!("{path}[{i}]")
}

pub(crate) fn key(path: &str, k: &str) -> String {
    format!("{path}[{k}]")
}

// ---- JSON access -------------------------------------------------------------------------

/// A present, non-null field.
pub(crate) fn get<'a>(v: &'a Value, k: &str) -> Option<&'a Value> {
    v.get(k).filter(|x| !x.is_null())
}

/// A string field, "" when absent (Go's zero value).
pub(crate) fn s<'a>(v: &'a Value, k: &str) -> &'a str {
    v.get(k).and_then(Value::as_str).unwrap_or("")
}

pub(crate) fn opt_str<'a>(v: &'a Value, k: &str) -> Option<&'a str> {
    v.get(k).and_then(Value::as_str)
}

pub(crate) fn int(v: &Value, k: &str) -> Option<i64> {
    let x = get(v, k)?;
    x.as_i64()
        .or_else(|| x.as_f64().filter(|f| f.fract() == 0.0).map(|f| f as i64))
}

pub(crate) fn arr<'a>(v: &'a Value, k: &str) -> &'a [Value] {
    v.get(k)
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or(&[])
}

pub(crate) fn obj<'a>(v: &'a Value, k: &str) -> Option<&'a Map<String, Value>> {
    v.get(k).and_then(Value::as_object)
}

// ---- rendering values the way Go's field errors print them -------------------------------

/// A Go `%q` string.
pub(crate) fn quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            '\r' => out.push_str("\\r"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\x{:02x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// `map[string]string{"a":"b"}` with sorted keys, as Go's `%#v` prints labels.
pub(crate) fn go_map(m: Option<&Map<String, Value>>) -> String {
    let Some(m) = m else {
        return "map[string]string(nil)".into();
    };
    let mut pairs: Vec<(&String, String)> = m
        .iter()
        .map(|(k, v)| (k, v.as_str().map(quote).unwrap_or_else(|| v.to_string())))
        .collect();
    pairs.sort();
    let body: Vec<String> = pairs
        .into_iter()
        .map(|(k, v)| format!("{}:{}", quote(k), v))
        .collect();
    format!("map[string]string{{{}}}", body.join(", "))
}

/// `[]string{"a", "b"}`.
pub(crate) fn go_strs(items: &[Value]) -> String {
    let body: Vec<String> = items
        .iter()
        .map(|v| v.as_str().map(quote).unwrap_or_else(|| v.to_string()))
        .collect();
    format!("[]string{{{}}}", body.join(", "))
}

/// A label selector as Go prints `*metav1.LabelSelector`.
pub(crate) fn go_selector(sel: Option<&Value>) -> String {
    let Some(sel) = sel else { return "null".into() };
    let exprs = arr(sel, "matchExpressions");
    let exprs = if exprs.is_empty() {
        "[]v1.LabelSelectorRequirement(nil)".to_string()
    } else {
        let items: Vec<String> = exprs
            .iter()
            .map(|e| {
                format!(
                    "v1.LabelSelectorRequirement{{Key:{}, Operator:{}, Values:{}}}",
                    quote(s(e, "key")),
                    quote(s(e, "operator")),
                    go_strs(arr(e, "values"))
                )
            })
            .collect();
        format!("[]v1.LabelSelectorRequirement{{{}}}", items.join(", "))
    };
    format!(
        "v1.LabelSelector{{MatchLabels:{}, MatchExpressions:{}}}",
        go_map(obj(sel, "matchLabels")),
        exprs
    )
}

/// Any other value: strings quoted, numbers and booleans bare, objects as compact JSON.
pub(crate) fn render(v: &Value) -> String {
    match v {
        Value::String(s) => quote(s),
        Value::Null => "null".into(),
        other => other.to_string(),
    }
}

/// An int-or-string field as Go prints `intstr.IntOrString` (its String(): unquoted).
pub(crate) fn render_int_or_string(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

// ---- shared checks -----------------------------------------------------------------------

pub(crate) fn nonnegative(path: String, v: Option<i64>, errs: &mut Vec<FieldError>) {
    if let Some(v) = v
        && v < 0
    {
        errs.push(FieldError::invalid(
            path,
            v,
            "must be greater than or equal to 0",
        ));
    }
}

/// `field is immutable` when the value changed.
pub(crate) fn immutable(
    path: String,
    new: Option<&Value>,
    old: Option<&Value>,
    errs: &mut Vec<FieldError>,
) {
    let norm = |v: Option<&Value>| v.filter(|x| !x.is_null()).cloned();
    let (n, o) = (norm(new), norm(old));
    if n != o {
        let shown = n.as_ref().map(render).unwrap_or_else(|| "null".into());
        errs.push(FieldError::invalid(path, shown, "field is immutable"));
    }
}

/// Parses a quantity field, reporting it when it is not one.
pub(crate) fn quantity(v: &Value, path: &str, errs: &mut Vec<FieldError>) -> Option<Quantity> {
    let parsed = match v {
        Value::String(s) => parse_quantity(s),
        Value::Number(n) => parse_quantity(&n.to_string()),
        _ => Err(crate::quantity::QuantityError::Format),
    };
    match parsed {
        Ok(q) => Some(q),
        Err(e) => {
            errs.push(FieldError::invalid(path, render(v), e.to_string()));
            None
        }
    }
}

/// An enum field: Required when empty, NotSupported (listing `supported` in order) otherwise.
pub(crate) fn one_of(path: String, value: &str, supported: &[&str], errs: &mut Vec<FieldError>) {
    if value.is_empty() {
        errs.push(FieldError::required(path, ""));
    } else if !supported.contains(&value) {
        errs.push(FieldError::not_supported(path, quote(value), supported));
    }
}

/// `port` as number (1-65535) or IANA name.
pub(crate) fn port_num_or_name(v: Option<&Value>, path: String, errs: &mut Vec<FieldError>) {
    match v {
        None | Some(Value::Null) => errs.push(FieldError::required(path, "")),
        Some(Value::Number(n)) => {
            let p = n.as_i64().unwrap_or(0);
            for msg in names::port_num(p) {
                errs.push(FieldError::invalid(path.clone(), p, msg));
            }
        }
        Some(Value::String(s)) if s.is_empty() => errs.push(FieldError::required(path, "")),
        Some(Value::String(s)) => {
            for msg in names::port_name(s) {
                errs.push(FieldError::invalid(path.clone(), quote(s), msg));
            }
        }
        Some(other) => errs.push(FieldError::invalid(
            path,
            render(other),
            "must be an integer or a string",
        )),
    }
}

/// Int-or-percent rolling update values: non-negative ints or `N%`.
pub(crate) fn positive_int_or_percent(v: Option<&Value>, path: String, errs: &mut Vec<FieldError>) {
    match v {
        Some(Value::String(s)) => {
            for msg in names::percent(s) {
                errs.push(FieldError::invalid(path.clone(), s, msg));
            }
        }
        Some(Value::Number(n)) => nonnegative(path, n.as_i64(), errs),
        _ => {}
    }
}

/// The numeric value of an int-or-percent (percent as its number), 0 when unparseable.
pub(crate) fn int_or_percent_value(v: Option<&Value>) -> i64 {
    match v {
        // A bare numeric string counts as its number, as intstr's IntValue reads it.
        Some(Value::String(s)) => s.strip_suffix('%').unwrap_or(s).parse().unwrap_or(0),
        Some(Value::Number(n)) => n.as_i64().unwrap_or(0),
        _ => 0,
    }
}

pub(crate) fn not_more_than_100_percent(
    v: Option<&Value>,
    path: String,
    errs: &mut Vec<FieldError>,
) {
    if let Some(Value::String(s)) = v
        && let Some(n) = s.strip_suffix('%').and_then(|n| n.parse::<i64>().ok())
        && n > 100
    {
        errs.push(FieldError::invalid(
            path,
            s,
            "must not be greater than 100%",
        ));
    }
}

#[cfg(test)]
mod tests;
