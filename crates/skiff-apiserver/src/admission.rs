//! Admission: what happens to an object between decoding and storing — field validation,
//! system metadata, defaulting, status handling and validation.

use chrono::{SecondsFormat, Utc};
use serde_json::{Map, Value, json};
use skiff_api::meta;
use skiff_api::registry::ResourceDef;
use skiff_api::{ApiError, defaults, schema, validation};

/// `fieldValidation` query parameter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FieldValidation {
    Ignore,
    Warn,
    Strict,
}

impl FieldValidation {
    pub fn parse(v: Option<&str>) -> Result<Self, ApiError> {
        match v {
            None | Some("Warn") => Ok(FieldValidation::Warn),
            Some("Strict") => Ok(FieldValidation::Strict),
            Some("Ignore") => Ok(FieldValidation::Ignore),
            Some(other) => Err(ApiError::bad_request(format!(
                "fieldValidation parameter unsupported: {other}. Supported values are \"Ignore\", \"Warn\", \"Strict\""
            ))),
        }
    }
}

/// The current time as Kubernetes writes timestamps.
pub fn now() -> String {
    Utc::now().to_rfc3339_opts(SecondsFormat::Secs, true)
}

/// Checks `apiVersion`/`kind` against the resource and fills them in when absent.
pub fn check_type(def: &ResourceDef, obj: &mut Value) -> Result<(), ApiError> {
    let Some(map) = obj.as_object_mut() else {
        return Err(ApiError::bad_request(format!(
            "the body must be a JSON object describing a {}",
            def.kind
        )));
    };
    let want_av = def.api_version();
    match map.get("apiVersion").and_then(Value::as_str) {
        None => {
            map.insert("apiVersion".into(), Value::String(want_av.clone()));
        }
        Some(av) if av == want_av => {}
        Some(av) => {
            return Err(ApiError::bad_request(format!(
                "the API version in the data ({av}) does not match the expected API version ({want_av})"
            )));
        }
    }
    match map.get("kind").and_then(Value::as_str) {
        None => {
            map.insert("kind".into(), Value::String(def.kind.into()));
        }
        Some(k) if k == def.kind => {}
        Some(k) => {
            return Err(ApiError::bad_request(format!(
                "the kind in the data ({k}) does not match the expected kind ({})",
                def.kind
            )));
        }
    }
    if map
        .get("metadata")
        .is_some_and(|m| !m.is_object() && !m.is_null())
    {
        return Err(ApiError::bad_request(format!(
            "{} in version \"{}\" cannot be handled as a {}: metadata must be an object",
            def.kind, def.version, def.kind
        )));
    }
    Ok(())
}

/// Applies `fieldValidation`: unknown fields fail (Strict), warn (Warn) or are dropped
/// silently (Ignore). Returns the warnings.
pub fn field_validation(
    def: &ResourceDef,
    obj: &mut Value,
    mode: FieldValidation,
) -> Result<Vec<String>, ApiError> {
    let report = schema::check_fields(def, obj);
    // A value of the wrong type cannot be decoded at all, whatever the validation mode.
    if !report.type_errors.is_empty() {
        let msgs: Vec<String> = report.type_errors.iter().map(|e| e.message()).collect();
        return Err(ApiError::bad_request(format!(
            "{} in version \"{}\" cannot be handled as a {}: {}",
            def.kind,
            def.version,
            def.kind,
            msgs.join(", ")
        )));
    }
    let warnings: Vec<String> = report
        .unknown
        .iter()
        .map(|p| format!("unknown field \"{p}\""))
        .collect();
    if mode == FieldValidation::Strict && !warnings.is_empty() {
        return Err(ApiError::bad_request(format!(
            "{} in version \"{}\" cannot be handled as a {}: strict decoding error: {}",
            def.kind,
            def.version,
            def.kind,
            warnings.join(", ")
        )));
    }
    if !report.unknown.is_empty() {
        schema::prune_unknown(def, obj);
    }
    Ok(if mode == FieldValidation::Warn {
        warnings
    } else {
        Vec::new()
    })
}

/// Resources whose spec changes bump `metadata.generation`.
pub fn has_generation(def: &ResourceDef) -> bool {
    matches!(def.group, "apps" | "batch" | "autoscaling") && def.kind != "ControllerRevision"
}

/// Sets the system metadata of a new object and resets its status the way each resource's
/// create strategy does.
pub fn prepare_create(
    def: &ResourceDef,
    obj: &mut Value,
    namespace: Option<&str>,
) -> Result<(), ApiError> {
    let m = meta::metadata_mut(obj);
    if m.get("resourceVersion")
        .and_then(Value::as_str)
        .is_some_and(|s| !s.is_empty())
    {
        return Err(ApiError::bad_request(
            "resourceVersion should not be set on objects to be created",
        ));
    }
    m.remove("resourceVersion");
    m.insert(
        "uid".into(),
        Value::String(uuid::Uuid::new_v4().to_string()),
    );
    m.insert("creationTimestamp".into(), Value::String(now()));
    m.remove("deletionTimestamp");
    m.remove("deletionGracePeriodSeconds");
    m.remove("selfLink");
    if def.namespaced {
        if let Some(ns) = namespace {
            m.insert("namespace".into(), Value::String(ns.into()));
        }
    } else {
        m.remove("namespace");
    }
    if has_generation(def) {
        m.insert("generation".into(), json!(1));
    } else {
        m.remove("generation");
    }
    reset_status_on_create(def, obj);
    merge_string_data(def, obj);
    Ok(())
}

/// Folds a Secret's write-only `stringData` into `data` (base64), as Kubernetes' Secret
/// strategy does before storing: `stringData` keys win over `data` keys and are never stored.
pub fn merge_string_data(def: &ResourceDef, obj: &mut Value) {
    use base64::Engine;
    if !def.group.is_empty() || def.kind != "Secret" {
        return;
    }
    let Some(map) = obj.as_object_mut() else {
        return;
    };
    let Some(string_data) = map.remove("stringData") else {
        return;
    };
    let Value::Object(string_data) = string_data else {
        return;
    };
    if string_data.is_empty() {
        return;
    }
    let data = map
        .entry("data")
        .or_insert_with(|| Value::Object(Map::new()));
    if !data.is_object() {
        *data = Value::Object(Map::new());
    }
    if let Some(data) = data.as_object_mut() {
        for (k, v) in string_data {
            let text = match v {
                Value::String(s) => s,
                other => other.to_string(),
            };
            let encoded = base64::engine::general_purpose::STANDARD.encode(text.as_bytes());
            data.insert(k, Value::String(encoded));
        }
    }
}

fn reset_status_on_create(def: &ResourceDef, obj: &mut Value) {
    let Some(map) = obj.as_object_mut() else {
        return;
    };
    match (def.group, def.kind) {
        ("", "Pod") => {
            map.insert("status".into(), json!({ "phase": "Pending" }));
        }
        ("", "Namespace") => {
            map.insert("status".into(), json!({ "phase": "Active" }));
        }
        ("", "Service") => {
            map.insert("status".into(), json!({ "loadBalancer": {} }));
        }
        ("", "PersistentVolumeClaim") => {
            map.insert("status".into(), json!({ "phase": "Pending" }));
        }
        ("", "PersistentVolume") => {
            map.insert("status".into(), json!({ "phase": "Pending" }));
        }
        ("apps" | "batch" | "autoscaling", _) if def.status => {
            map.insert("status".into(), json!({}));
        }
        _ => {}
    }
}

/// Carries over what a client may not change on update: identity, creation time, deletion
/// state, and (for the main resource of a type with a status subresource) the status.
/// With `status_only`, only the status of `new` is kept.
pub fn prepare_update(def: &ResourceDef, new: &mut Value, old: &Value, status_only: bool) {
    if status_only {
        let status = new.get("status").cloned();
        *new = old.clone();
        if let Some(map) = new.as_object_mut() {
            match status {
                Some(s) => map.insert("status".into(), s),
                None => map.remove("status"),
            };
        }
        return;
    }
    let old_meta = old
        .get("metadata")
        .and_then(Value::as_object)
        .cloned()
        .unwrap_or_default();
    let m = meta::metadata_mut(new);
    for k in [
        "uid",
        "creationTimestamp",
        "deletionTimestamp",
        "deletionGracePeriodSeconds",
        "namespace",
        "name",
    ] {
        match old_meta.get(k) {
            Some(v) => m.insert(k.into(), v.clone()),
            None => m.remove(k),
        };
    }
    m.remove("selfLink");
    merge_string_data(def, new);
    let m = meta::metadata_mut(new);
    if let Some(g) = old_meta.get("generation") {
        m.insert("generation".into(), g.clone());
    }
    if def.status
        && let Some(map) = new.as_object_mut()
    {
        match old.get("status") {
            Some(s) => map.insert("status".into(), s.clone()),
            None => map.remove("status"),
        };
    }
    if def.group.is_empty() && def.kind == "Service" {
        drop_type_dependent_fields(new, old);
    }
}

/// When a Service changes `type`, wipes the fields that only the old type used and that the
/// client left as they were (so were most likely defaulted or allocated), as Kubernetes'
/// Service strategy does — otherwise `LoadBalancer` -> `ClusterIP` would fail validation on
/// the defaulted `externalTrafficPolicy`.
pub fn drop_type_dependent_fields(new: &mut Value, old: &Value) {
    let spec_type = |o: &Value| {
        o.pointer("/spec/type")
            .and_then(Value::as_str)
            .unwrap_or("ClusterIP")
            .to_string()
    };
    let (old_type, new_type) = (spec_type(old), spec_type(new));
    let externally_accessible = |o: &Value, t: &str| {
        matches!(t, "NodePort" | "LoadBalancer")
            || (t == "ClusterIP"
                && o.pointer("/spec/externalIPs")
                    .and_then(Value::as_array)
                    .is_some_and(|a| !a.is_empty()))
    };
    let old_ext = externally_accessible(old, &old_type);
    let new_ext = externally_accessible(new, &new_type);
    let needs_hc = |o: &Value, t: &str| {
        t == "LoadBalancer"
            && o.pointer("/spec/externalTrafficPolicy")
                .and_then(Value::as_str)
                == Some("Local")
    };
    let old_hc = needs_hc(old, &old_type);
    let new_hc = needs_hc(new, &new_type);
    let old_spec = old.get("spec").cloned().unwrap_or(Value::Null);
    let Some(spec) = new.get_mut("spec").and_then(Value::as_object_mut) else {
        return;
    };
    let mut drop_if_same = |field: &str, when: bool| {
        if when && spec.get(field) == old_spec.get(field) {
            spec.remove(field);
        }
    };
    if old_type != "ExternalName" && new_type == "ExternalName" {
        for f in ["clusterIP", "clusterIPs", "ipFamilies", "ipFamilyPolicy"] {
            drop_if_same(f, true);
        }
    }
    let was_lb = old_type == "LoadBalancer" && new_type != "LoadBalancer";
    drop_if_same("allocateLoadBalancerNodePorts", was_lb);
    drop_if_same("loadBalancerClass", was_lb);
    drop_if_same("externalTrafficPolicy", old_ext && !new_ext);
    drop_if_same("healthCheckNodePort", old_hc && !new_hc);
    if new_type != "LoadBalancer"
        && let Some(status) = new.get_mut("status").and_then(Value::as_object_mut)
        && status.contains_key("loadBalancer")
    {
        status.insert("loadBalancer".into(), json!({}));
    }
}

/// Defaults, bumps generation on spec change and validates. `old` is the stored object on
/// update.
pub fn finish(def: &ResourceDef, obj: &mut Value, old: Option<&Value>) -> Result<(), ApiError> {
    defaults::apply(def, obj);
    if has_generation(def)
        && let Some(old) = old
        && spec_of(old) != spec_of(obj)
    {
        let g = old
            .get("metadata")
            .and_then(|m| m.get("generation"))
            .and_then(Value::as_i64)
            .unwrap_or(0);
        meta::set_meta(obj, "generation", json!(g + 1));
    }
    let errors = validation::validate(def, obj, old);
    if !errors.is_empty() {
        let name = meta::name(obj).unwrap_or_default().to_string();
        return Err(ApiError::invalid(def.group, def.kind, &name, errors));
    }
    Ok(())
}

fn spec_of(obj: &Value) -> Value {
    match obj.as_object() {
        Some(map) => {
            let mut rest: Map<String, Value> = map.clone();
            rest.remove("metadata");
            rest.remove("status");
            Value::Object(rest)
        }
        None => Value::Null,
    }
}

/// True when two versions of an object differ in more than their resourceVersion and
/// managedFields timestamps — an update that changes nothing is not written (as Kubernetes).
pub fn changed(old: &Value, new: &Value) -> bool {
    strip_volatile(old) != strip_volatile(new)
}

fn strip_volatile(obj: &Value) -> Value {
    let mut o = obj.clone();
    if let Some(m) = o.get_mut("metadata").and_then(Value::as_object_mut) {
        m.remove("resourceVersion");
        if let Some(Value::Array(mf)) = m.get_mut("managedFields") {
            for e in mf.iter_mut() {
                if let Some(e) = e.as_object_mut() {
                    e.remove("time");
                }
            }
        }
    }
    o
}

/// Random suffix for `generateName`, from Kubernetes' alphabet (no vowels, no look-alikes).
pub fn random_suffix() -> String {
    use rand::Rng;
    const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    let mut rng = rand::rng();
    (0..5)
        .map(|_| ALPHABET[rng.random_range(0..ALPHABET.len())] as char)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use skiff_api::registry;

    fn secret_def() -> &'static ResourceDef {
        registry::lookup("", "v1", "secrets").expect("secrets are served")
    }

    #[test]
    fn string_data_is_merged_into_data_on_create() {
        let mut obj = json!({
            "metadata": {"name": "s"},
            "data": {"a": "eA==", "b": "eQ=="},
            "stringData": {"b": "two", "c": "three"}
        });
        prepare_create(secret_def(), &mut obj, Some("default")).unwrap();
        assert!(obj.get("stringData").is_none());
        assert_eq!(
            obj["data"],
            json!({"a": "eA==", "b": "dHdv", "c": "dGhyZWU="})
        );
    }

    #[test]
    fn service_type_change_drops_what_only_the_old_type_used() {
        let def = registry::lookup("", "v1", "services").expect("services are served");
        let old = json!({
            "metadata": {"name": "s"},
            "spec": {"type": "LoadBalancer", "clusterIP": "10.43.0.9", "externalTrafficPolicy": "Cluster",
                     "allocateLoadBalancerNodePorts": true, "ports": [{"port": 80, "nodePort": 30001}]},
            "status": {"loadBalancer": {"ingress": [{"ip": "127.0.0.1"}]}}
        });
        let mut new = old.clone();
        new["spec"]["type"] = json!("ClusterIP");
        prepare_update(def, &mut new, &old, false);
        assert!(new["spec"].get("externalTrafficPolicy").is_none(), "{new}");
        assert!(
            new["spec"].get("allocateLoadBalancerNodePorts").is_none(),
            "{new}"
        );
        assert_eq!(new["spec"]["clusterIP"], "10.43.0.9");
        assert_eq!(new["status"]["loadBalancer"], json!({}));

        // A field the client changed along with the type is kept (and validated).
        let mut new = old.clone();
        new["spec"]["type"] = json!("ClusterIP");
        new["spec"]["externalTrafficPolicy"] = json!("Local");
        prepare_update(def, &mut new, &old, false);
        assert_eq!(new["spec"]["externalTrafficPolicy"], "Local");

        // LoadBalancer -> NodePort keeps the traffic policy, drops the LB-only field.
        let mut new = old.clone();
        new["spec"]["type"] = json!("NodePort");
        prepare_update(def, &mut new, &old, false);
        assert_eq!(new["spec"]["externalTrafficPolicy"], "Cluster");
        assert!(
            new["spec"].get("allocateLoadBalancerNodePorts").is_none(),
            "{new}"
        );
    }

    #[test]
    fn string_data_is_merged_into_data_on_update() {
        let old = json!({"metadata": {"name": "s", "uid": "u"}, "data": {"a": "eA=="}});
        let mut new =
            json!({"metadata": {"name": "s"}, "data": {"a": "eA=="}, "stringData": {"a": "z"}});
        prepare_update(secret_def(), &mut new, &old, false);
        assert!(new.get("stringData").is_none());
        assert_eq!(new["data"], json!({"a": "eg=="}));
        assert_eq!(new["metadata"]["uid"], "u");
    }
}
