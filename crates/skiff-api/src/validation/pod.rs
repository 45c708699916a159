//! Pods and pod specs: containers, ports, env, resources, probes, volumes, scheduling fields.

use super::meta::{self, labels, object_meta};
use super::names;
use super::{
    arr, child, get, index, int, key, nonnegative, obj, one_of, opt_str, port_num_or_name,
    quantity, quote, render, s,
};
use crate::error::FieldError;
use serde_json::{Map, Value};
use std::collections::HashSet;

pub(crate) fn pod(o: &Value, old: Option<&Value>, errs: &mut Vec<FieldError>) {
    object_meta(o, true, names::dns1123_subdomain, errs);
    let null = Value::Null;
    let spec = get(o, "spec").unwrap_or(&null);
    pod_spec(spec, "spec", &[], errs);
    match old {
        None => {
            if !arr(spec, "ephemeralContainers").is_empty() {
                errs.push(FieldError::forbidden(
                    "spec.ephemeralContainers",
                    "cannot be set on create",
                ));
            }
        }
        Some(old) => {
            let deleting =
                get(o, "metadata").is_some_and(|m| !s(m, "deletionTimestamp").is_empty());
            pod_update(spec, get(old, "spec").unwrap_or(&null), deleting, errs)
        }
    }
}

/// ValidatePodUpdate: a running pod's spec is fixed except images, activeDeadlineSeconds,
/// added tolerations and removed scheduling gates. Binding (setting nodeName once) and the
/// ephemeral-containers subresource are allowed through here as well.
/// A graceful delete may shorten `terminationGracePeriodSeconds` to the requested period.
fn pod_update(new: &Value, old: &Value, deleting: bool, errs: &mut Vec<FieldError>) {
    let (Some(n), Some(o)) = (new.as_object(), old.as_object()) else {
        return;
    };
    if arr(new, "containers").len() != arr(old, "containers").len() {
        errs.push(FieldError::forbidden(
            "spec.containers",
            "pod updates may not add or remove containers",
        ));
        return;
    }
    let mut munged: Map<String, Value> = n.clone();
    for k in ["containers", "initContainers"] {
        if let (Some(nc), Some(oc)) = (
            munged.get_mut(k).and_then(Value::as_array_mut),
            o.get(k).and_then(Value::as_array),
        ) {
            for (c, oldc) in nc.iter_mut().zip(oc) {
                if let (Some(c), Some(img)) = (c.as_object_mut(), oldc.get("image")) {
                    c.insert("image".into(), img.clone());
                }
            }
        }
    }
    for k in [
        "activeDeadlineSeconds",
        "ephemeralContainers",
        "schedulingGates",
    ] {
        copy_field(&mut munged, o, k);
    }
    // Tolerations may only be added to.
    let old_tol = arr(old, "tolerations");
    let new_tol = arr(new, "tolerations");
    if old_tol.iter().all(|t| new_tol.contains(t)) {
        copy_field(&mut munged, o, "tolerations");
    }
    if o.get("nodeName")
        .and_then(Value::as_str)
        .unwrap_or("")
        .is_empty()
    {
        copy_field(&mut munged, o, "nodeName");
    }
    if deleting || int(old, "terminationGracePeriodSeconds").is_some_and(|g| g < 0) {
        copy_field(&mut munged, o, "terminationGracePeriodSeconds");
    }
    let strip_nulls = |m: &Map<String, Value>| -> Map<String, Value> {
        m.iter()
            .filter(|(_, v)| !v.is_null())
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect()
    };
    if strip_nulls(&munged) != strip_nulls(o) {
        errs.push(FieldError::forbidden(
            "spec",
            "pod updates may not change fields other than `spec.containers[*].image`,`spec.initContainers[*].image`,`spec.activeDeadlineSeconds`,`spec.tolerations` (only additions to existing tolerations),`spec.terminationGracePeriodSeconds` (allow it to be set to 1 if it was previously negative)",
        ));
    }
}

fn copy_field(dst: &mut Map<String, Value>, src: &Map<String, Value>, k: &str) {
    match src.get(k) {
        Some(v) => {
            dst.insert(k.into(), v.clone());
        }
        None => {
            dst.remove(k);
        }
    }
}

/// A pod template of a workload: template labels/annotations and the pod spec.
pub(crate) fn pod_template(
    template: Option<&Value>,
    path: &str,
    extra_volumes: &[String],
    errs: &mut Vec<FieldError>,
) {
    let Some(t) = template else {
        errs.push(FieldError::required(path, ""));
        return;
    };
    meta::template_meta(t, path, errs);
    let null = Value::Null;
    pod_spec(
        get(t, "spec").unwrap_or(&null),
        &child(path, "spec"),
        extra_volumes,
        errs,
    );
}

/// ValidatePodSpec. `extra_volumes` are names mounts may use besides `volumes`
/// (a StatefulSet's claim templates).
pub(crate) fn pod_spec(
    spec: &Value,
    path: &str,
    extra_volumes: &[String],
    errs: &mut Vec<FieldError>,
) {
    let mut volume_names: HashSet<String> =
        volumes(arr(spec, "volumes"), &child(path, "volumes"), errs);
    volume_names.extend(extra_volumes.iter().cloned());

    let host_network = spec
        .get("hostNetwork")
        .and_then(Value::as_bool)
        .unwrap_or(false);
    let mut all_names = HashSet::new();
    let containers = arr(spec, "containers");
    if containers.is_empty() {
        errs.push(FieldError::required(child(path, "containers"), ""));
    }
    for key_ in ["initContainers", "containers", "ephemeralContainers"] {
        let list_path = child(path, key_);
        for (i, c) in arr(spec, key_).iter().enumerate() {
            container(
                c,
                &index(&list_path, i),
                key_,
                &volume_names,
                host_network,
                &mut all_names,
                errs,
            );
        }
    }

    one_of(
        child(path, "restartPolicy"),
        s(spec, "restartPolicy"),
        &["Always", "OnFailure", "Never"],
        errs,
    );
    let dns = s(spec, "dnsPolicy");
    one_of(
        child(path, "dnsPolicy"),
        dns,
        &["ClusterFirstWithHostNet", "ClusterFirst", "Default", "None"],
        errs,
    );
    if dns == "None" && get(spec, "dnsConfig").is_none() {
        errs.push(FieldError::required(
            child(path, "dnsConfig"),
            "must provide `dnsConfig` when `dnsPolicy` is None",
        ));
    }
    labels(
        obj(spec, "nodeSelector"),
        &child(path, "nodeSelector"),
        errs,
    );
    for (field, f) in [
        (
            "serviceAccountName",
            names::dns1123_subdomain as fn(&str) -> Vec<String>,
        ),
        ("priorityClassName", names::dns1123_subdomain),
        ("nodeName", names::dns1123_subdomain),
        ("hostname", names::dns1123_label),
        ("subdomain", names::dns1123_label),
    ] {
        let v = s(spec, field);
        if !v.is_empty() {
            for msg in f(v) {
                errs.push(FieldError::invalid(child(path, field), quote(v), msg));
            }
        }
    }
    if let Some(ads) = int(spec, "activeDeadlineSeconds")
        && !(1..=i64::from(i32::MAX)).contains(&ads)
    {
        errs.push(FieldError::invalid(
            child(path, "activeDeadlineSeconds"),
            ads,
            names::inclusive_range(1, i64::from(i32::MAX)),
        ));
    }
    tolerations(arr(spec, "tolerations"), &child(path, "tolerations"), errs);
    for (i, g) in arr(spec, "schedulingGates").iter().enumerate() {
        let n = s(g, "name");
        for msg in names::qualified_name(n) {
            errs.push(FieldError::invalid(
                child(&index(&child(path, "schedulingGates"), i), "name"),
                quote(n),
                msg,
            ));
        }
    }
    topology_spread(
        arr(spec, "topologySpreadConstraints"),
        &child(path, "topologySpreadConstraints"),
        errs,
    );
    if let Some(aff) = get(spec, "affinity") {
        affinity(aff, &child(path, "affinity"), errs);
    }
    if let Some(sc) = get(spec, "securityContext") {
        security_context(sc, &child(path, "securityContext"), false, errs);
    }
    if let Some(dc) = get(spec, "dnsConfig") {
        dns_config(dc, &child(path, "dnsConfig"), errs);
    }
    for (i, alias) in arr(spec, "hostAliases").iter().enumerate() {
        let ip = s(alias, "ip");
        if !names::is_ip(ip) {
            errs.push(FieldError::invalid(
                child(&index(&child(path, "hostAliases"), i), "ip"),
                quote(ip),
                names::IP_MSG,
            ));
        }
    }
    for (i, sec) in arr(spec, "imagePullSecrets").iter().enumerate() {
        let n = s(sec, "name");
        if n.is_empty() {
            errs.push(FieldError::required(
                child(&index(&child(path, "imagePullSecrets"), i), "name"),
                "",
            ));
        }
    }
}

#[allow(clippy::too_many_arguments)]
fn container(
    c: &Value,
    path: &str,
    list: &str,
    volume_names: &HashSet<String>,
    host_network: bool,
    all_names: &mut HashSet<String>,
    errs: &mut Vec<FieldError>,
) {
    let name = s(c, "name");
    let name_path = child(path, "name");
    if name.is_empty() {
        errs.push(FieldError::required(name_path, ""));
    } else {
        for msg in names::dns1123_label(name) {
            errs.push(FieldError::invalid(name_path.clone(), quote(name), msg));
        }
        if !all_names.insert(name.to_string()) {
            errs.push(FieldError::duplicate(name_path, quote(name)));
        }
    }
    let image = s(c, "image");
    if image.is_empty() {
        errs.push(FieldError::required(child(path, "image"), ""));
    } else if image.trim() != image {
        errs.push(FieldError::invalid(
            child(path, "image"),
            quote(image),
            "must not have leading or trailing whitespace",
        ));
    }
    one_of(
        child(path, "imagePullPolicy"),
        s(c, "imagePullPolicy"),
        &["Always", "IfNotPresent", "Never"],
        errs,
    );
    one_of(
        child(path, "terminationMessagePolicy"),
        s(c, "terminationMessagePolicy"),
        &["File", "FallbackToLogsOnError"],
        errs,
    );
    if list == "initContainers"
        && let Some(rp) = opt_str(c, "restartPolicy")
        && rp != "Always"
    {
        errs.push(FieldError::not_supported(
            child(path, "restartPolicy"),
            quote(rp),
            &["Always"],
        ));
    }
    ports(arr(c, "ports"), &child(path, "ports"), host_network, errs);
    env(arr(c, "env"), &child(path, "env"), errs);
    env_from(arr(c, "envFrom"), &child(path, "envFrom"), errs);
    volume_mounts(
        arr(c, "volumeMounts"),
        &child(path, "volumeMounts"),
        volume_names,
        errs,
    );
    if let Some(r) = get(c, "resources") {
        resource_requirements(r, &child(path, "resources"), errs);
    }
    // Init containers run to completion, so only sidecars (restartPolicy Always) may have
    // probes or lifecycle hooks; ephemeral containers may have neither.
    let sidecar = opt_str(c, "restartPolicy") == Some("Always");
    for p in [
        "livenessProbe",
        "readinessProbe",
        "startupProbe",
        "lifecycle",
    ] {
        let Some(v) = get(c, p) else { continue };
        match list {
            "initContainers" if !sidecar => errs.push(FieldError::forbidden(
                child(path, p),
                "may not be set for init containers without restartPolicy=Always",
            )),
            "ephemeralContainers" => errs.push(FieldError::forbidden(
                child(path, p),
                format!("{p} is not allowed for ephemeral containers"),
            )),
            _ if p != "lifecycle" => probe(v, &child(path, p), p, errs),
            _ => {}
        }
    }
    if let Some(sc) = get(c, "securityContext") {
        security_context(sc, &child(path, "securityContext"), true, errs);
    }
    if let Some(lc) = get(c, "lifecycle") {
        for hook in ["postStart", "preStop"] {
            if let Some(h) = get(lc, hook) {
                handler(h, &child(&child(path, "lifecycle"), hook), true, errs);
            }
        }
    }
}

fn ports(list: &[Value], path: &str, host_network: bool, errs: &mut Vec<FieldError>) {
    let mut seen = HashSet::new();
    for (i, p) in list.iter().enumerate() {
        let pp = index(path, i);
        let name = s(p, "name");
        if !name.is_empty() {
            for msg in names::port_name(name) {
                errs.push(FieldError::invalid(child(&pp, "name"), quote(name), msg));
            }
            if !seen.insert(name.to_string()) {
                errs.push(FieldError::duplicate(child(&pp, "name"), quote(name)));
            }
        }
        let cp = int(p, "containerPort").unwrap_or(0);
        if cp == 0 {
            errs.push(FieldError::required(child(&pp, "containerPort"), ""));
        } else {
            for msg in names::port_num(cp) {
                errs.push(FieldError::invalid(child(&pp, "containerPort"), cp, msg));
            }
        }
        let hp = int(p, "hostPort").unwrap_or(0);
        if hp != 0 {
            for msg in names::port_num(hp) {
                errs.push(FieldError::invalid(child(&pp, "hostPort"), hp, msg));
            }
            if host_network && hp != cp {
                errs.push(FieldError::invalid(
                    child(&pp, "hostPort"),
                    hp,
                    "must match `containerPort` when `hostNetwork` is true",
                ));
            }
        }
        protocol(s(p, "protocol"), child(&pp, "protocol"), errs);
    }
}

pub(crate) fn protocol(p: &str, path: String, errs: &mut Vec<FieldError>) {
    one_of(path, p, &["SCTP", "TCP", "UDP"], errs);
}

const ENV_FIELD_PATHS: &[&str] = &[
    "metadata.name",
    "metadata.namespace",
    "metadata.uid",
    "spec.nodeName",
    "spec.serviceAccountName",
    "status.hostIP",
    "status.hostIPs",
    "status.podIP",
    "status.podIPs",
];

fn env(list: &[Value], path: &str, errs: &mut Vec<FieldError>) {
    for (i, e) in list.iter().enumerate() {
        let ep = index(path, i);
        let name = s(e, "name");
        if name.is_empty() {
            errs.push(FieldError::required(child(&ep, "name"), ""));
        } else {
            for msg in names::env_var_name(name) {
                errs.push(FieldError::invalid(child(&ep, "name"), quote(name), msg));
            }
        }
        let Some(from) = get(e, "valueFrom") else {
            continue;
        };
        let fp = child(&ep, "valueFrom");
        let mut sources = 0;
        if let Some(f) = get(from, "fieldRef") {
            sources += 1;
            field_selector(f, &child(&fp, "fieldRef"), ENV_FIELD_PATHS, errs);
        }
        if let Some(r) = get(from, "resourceFieldRef") {
            sources += 1;
            resource_field_selector(r, &child(&fp, "resourceFieldRef"), errs);
        }
        for (k, name_field) in [("configMapKeyRef", "name"), ("secretKeyRef", "name")] {
            if let Some(sel) = get(from, k) {
                sources += 1;
                let sp = child(&fp, k);
                if s(sel, name_field).is_empty() {
                    errs.push(FieldError::required(child(&sp, "name"), ""));
                }
                let key_ = s(sel, "key");
                if key_.is_empty() {
                    errs.push(FieldError::required(child(&sp, "key"), ""));
                } else {
                    for msg in names::config_map_key(key_) {
                        errs.push(FieldError::invalid(child(&sp, "key"), quote(key_), msg));
                    }
                }
            }
        }
        if sources == 0 {
            errs.push(FieldError::invalid(
                fp,
                quote(""),
                "must specify one of: `fieldRef`, `resourceFieldRef`, `configMapKeyRef` or `secretKeyRef`",
            ));
        } else if !s(e, "value").is_empty() {
            errs.push(FieldError::invalid(
                fp,
                quote(""),
                "may not be specified when `value` is not empty",
            ));
        } else if sources > 1 {
            errs.push(FieldError::invalid(
                fp,
                quote(""),
                "may not have more than one field specified at a time",
            ));
        }
    }
}

fn field_selector(f: &Value, path: &str, supported: &[&str], errs: &mut Vec<FieldError>) {
    if s(f, "apiVersion").is_empty() {
        errs.push(FieldError::required(child(path, "apiVersion"), ""));
    }
    let fp = s(f, "fieldPath");
    if fp.is_empty() {
        errs.push(FieldError::required(child(path, "fieldPath"), ""));
        return;
    }
    let subscripted = ["metadata.labels['", "metadata.annotations['"]
        .iter()
        .any(|p| fp.starts_with(p) && fp.ends_with("']") && fp.len() > p.len() + 2);
    if !(subscripted || supported.contains(&fp)) {
        errs.push(FieldError::not_supported(
            child(path, "fieldPath"),
            quote(fp),
            supported,
        ));
    }
}

const RESOURCE_FIELD_REFS: &[&str] = &[
    "limits.cpu",
    "limits.ephemeral-storage",
    "limits.memory",
    "requests.cpu",
    "requests.ephemeral-storage",
    "requests.memory",
];

fn resource_field_selector(r: &Value, path: &str, errs: &mut Vec<FieldError>) {
    let res = s(r, "resource");
    if res.is_empty() {
        errs.push(FieldError::required(child(path, "resource"), ""));
    } else if !RESOURCE_FIELD_REFS.contains(&res) && !res.contains("hugepages-") {
        errs.push(FieldError::not_supported(
            child(path, "resource"),
            quote(res),
            RESOURCE_FIELD_REFS,
        ));
    }
    if let Some(d) = get(r, "divisor") {
        quantity(d, &child(path, "divisor"), errs);
    }
}

fn env_from(list: &[Value], path: &str, errs: &mut Vec<FieldError>) {
    for (i, e) in list.iter().enumerate() {
        let ep = index(path, i);
        let prefix = s(e, "prefix");
        if !prefix.is_empty() {
            for msg in names::env_var_name(prefix) {
                errs.push(FieldError::invalid(
                    child(&ep, "prefix"),
                    quote(prefix),
                    msg,
                ));
            }
        }
        let mut sources = 0;
        for k in ["configMapRef", "secretRef"] {
            if let Some(r) = get(e, k) {
                sources += 1;
                let n = s(r, "name");
                if n.is_empty() {
                    errs.push(FieldError::required(child(&child(&ep, k), "name"), ""));
                } else {
                    for msg in names::dns1123_subdomain(n) {
                        errs.push(FieldError::invalid(
                            child(&child(&ep, k), "name"),
                            quote(n),
                            msg,
                        ));
                    }
                }
            }
        }
        if sources == 0 {
            errs.push(FieldError::invalid(
                ep,
                quote(""),
                "must specify one of: `configMapRef` or `secretRef`",
            ));
        } else if sources > 1 {
            errs.push(FieldError::invalid(
                ep,
                quote(""),
                "may not have more than one field specified at a time",
            ));
        }
    }
}

fn volume_mounts(
    list: &[Value],
    path: &str,
    volume_names: &HashSet<String>,
    errs: &mut Vec<FieldError>,
) {
    let mut mount_paths = HashSet::new();
    for (i, m) in list.iter().enumerate() {
        let mp = index(path, i);
        let name = s(m, "name");
        if name.is_empty() {
            errs.push(FieldError::required(child(&mp, "name"), ""));
        } else if !volume_names.contains(name) {
            errs.push(FieldError::not_found(child(&mp, "name"), quote(name)));
        }
        let mount_path = s(m, "mountPath");
        if mount_path.is_empty() {
            errs.push(FieldError::required(child(&mp, "mountPath"), ""));
        } else if !mount_paths.insert(mount_path.to_string()) {
            errs.push(FieldError::invalid(
                child(&mp, "mountPath"),
                quote(mount_path),
                "must be unique",
            ));
        }
        let sub = s(m, "subPath");
        if !sub.is_empty() {
            for msg in names::local_descending_path(sub) {
                errs.push(FieldError::invalid(child(&mp, "subPath"), quote(sub), msg));
            }
        }
        let sub_expr = s(m, "subPathExpr");
        if !sub_expr.is_empty() {
            if !sub.is_empty() {
                errs.push(FieldError::invalid(
                    child(&mp, "subPathExpr"),
                    quote(sub_expr),
                    "subPathExpr and subPath are mutually exclusive",
                ));
            }
            for msg in names::local_descending_path(sub_expr) {
                errs.push(FieldError::invalid(
                    child(&mp, "subPathExpr"),
                    quote(sub_expr),
                    msg,
                ));
            }
        }
        if let Some(p) = opt_str(m, "mountPropagation") {
            one_of(
                child(&mp, "mountPropagation"),
                p,
                &["Bidirectional", "HostToContainer", "None"],
                errs,
            );
        }
    }
}

/// Resources a container may name without a domain.
fn is_standard_container_resource(r: &str) -> bool {
    matches!(r, "cpu" | "memory" | "ephemeral-storage") || r.starts_with("hugepages-")
}

/// Native resources have no domain or the kubernetes.io domain; everything else is an
/// extended resource (a GPU, say), which cannot be overcommitted and comes in whole units.
fn is_native_resource(r: &str) -> bool {
    !r.contains('/') || r.contains("kubernetes.io/")
}

fn overcommit_allowed(r: &str) -> bool {
    is_native_resource(r) && !r.starts_with("hugepages-")
}

/// ValidateResourceRequirements for containers.
pub(crate) fn resource_requirements(r: &Value, path: &str, errs: &mut Vec<FieldError>) {
    let lim_path = child(path, "limits");
    let req_path = child(path, "requests");
    let empty = Map::new();
    let limits = obj(r, "limits").unwrap_or(&empty);
    let requests = obj(r, "requests").unwrap_or(&empty);
    let mut cpu_or_memory = false;
    let mut hugepages = false;
    let mut parsed_limits = std::collections::HashMap::new();
    for (name, v) in limits {
        let p = key(&lim_path, name);
        resource_name(name, &p, errs);
        if let Some(q) = resource_quantity(name, v, &p, errs) {
            parsed_limits.insert(name.as_str(), q);
        }
        hugepages |= name.starts_with("hugepages-");
        cpu_or_memory |= name == "cpu" || name == "memory";
    }
    for (name, v) in requests {
        let p = key(&req_path, name);
        resource_name(name, &p, errs);
        let q = resource_quantity(name, v, &p, errs);
        hugepages |= name.starts_with("hugepages-");
        cpu_or_memory |= name == "cpu" || name == "memory";
        match (q, parsed_limits.get(name.as_str())) {
            (Some(q), Some(lim)) => {
                if q != *lim && !overcommit_allowed(name) {
                    errs.push(FieldError::invalid(
                        req_path.clone(),
                        quote(&q.to_string()),
                        format!("must be equal to {name} limit of {lim}"),
                    ));
                } else if q > *lim {
                    errs.push(FieldError::invalid(
                        req_path.clone(),
                        quote(&q.to_string()),
                        format!("must be less than or equal to {name} limit of {lim}"),
                    ));
                }
            }
            (_, None) if !limits.contains_key(name) && !overcommit_allowed(name) => {
                errs.push(FieldError::required(
                    lim_path.clone(),
                    "Limit must be set for non overcommitable resources",
                ));
            }
            _ => {}
        }
    }
    if hugepages && !cpu_or_memory {
        errs.push(FieldError::forbidden(
            path,
            "HugePages require cpu or memory",
        ));
    }
}

fn resource_name(name: &str, path: &str, errs: &mut Vec<FieldError>) {
    for msg in names::qualified_name(name) {
        errs.push(FieldError::invalid(path, quote(name), msg));
    }
    if !name.contains('/') {
        if !is_standard_container_resource(name) {
            errs.push(FieldError::invalid(
                path,
                quote(name),
                "must be a standard resource for containers",
            ));
        }
    } else if !is_native_resource(name) && name.starts_with("requests.") {
        errs.push(FieldError::invalid(
            path,
            quote(name),
            "doesn't follow extended resource name standard",
        ));
    }
}

/// ValidateResourceQuantityValue: non-negative, and whole for extended resources.
pub(crate) fn resource_quantity(
    name: &str,
    v: &Value,
    path: &str,
    errs: &mut Vec<FieldError>,
) -> Option<crate::quantity::Quantity> {
    let q = quantity(v, path, errs)?;
    if q.is_negative() {
        errs.push(FieldError::invalid(
            path,
            quote(&q.to_string()),
            "must be greater than or equal to 0",
        ));
    }
    if !is_native_resource(name) && !q.is_integer() {
        errs.push(FieldError::invalid(
            path,
            q.to_string(),
            "must be an integer",
        ));
    }
    Some(q)
}

fn probe(p: &Value, path: &str, which: &str, errs: &mut Vec<FieldError>) {
    handler(p, path, false, errs);
    for f in [
        "initialDelaySeconds",
        "timeoutSeconds",
        "periodSeconds",
        "successThreshold",
        "failureThreshold",
    ] {
        nonnegative(child(path, f), int(p, f), errs);
    }
    if which != "readinessProbe"
        && let Some(st) = int(p, "successThreshold")
        && st != 1
    {
        errs.push(FieldError::invalid(
            child(path, "successThreshold"),
            st,
            "must be 1",
        ));
    }
    if let Some(g) = int(p, "terminationGracePeriodSeconds") {
        if which == "readinessProbe" {
            errs.push(FieldError::invalid(
                child(path, "terminationGracePeriodSeconds"),
                g,
                "must not be set for readinessProbes",
            ));
        } else if g <= 0 {
            errs.push(FieldError::invalid(
                child(path, "terminationGracePeriodSeconds"),
                g,
                "must be greater than 0",
            ));
        }
    }
}

/// A probe or lifecycle handler: exactly one action.
fn handler(h: &Value, path: &str, lifecycle: bool, errs: &mut Vec<FieldError>) {
    let kinds: &[&str] = if lifecycle {
        &["exec", "httpGet", "tcpSocket", "sleep"]
    } else {
        &["exec", "httpGet", "tcpSocket", "grpc"]
    };
    let mut count = 0;
    for k in kinds {
        let Some(a) = get(h, k) else { continue };
        if count > 0 {
            errs.push(FieldError::forbidden(
                child(path, k),
                "may not specify more than 1 handler type",
            ));
            continue;
        }
        count += 1;
        let ap = child(path, k);
        match *k {
            "exec" if arr(a, "command").is_empty() => {
                errs.push(FieldError::required(child(&ap, "command"), ""));
            }
            "httpGet" => {
                if s(a, "path").is_empty() {
                    errs.push(FieldError::required(child(&ap, "path"), ""));
                }
                port_num_or_name(get(a, "port"), child(&ap, "port"), errs);
                one_of(
                    child(&ap, "scheme"),
                    s(a, "scheme"),
                    &["HTTP", "HTTPS"],
                    errs,
                );
            }
            "tcpSocket" => port_num_or_name(get(a, "port"), child(&ap, "port"), errs),
            "grpc" => {
                let port = int(a, "port").unwrap_or(0);
                for msg in names::port_num(port) {
                    errs.push(FieldError::invalid(child(&ap, "port"), port, msg));
                }
            }
            "sleep" => {
                nonnegative(child(&ap, "seconds"), int(a, "seconds"), errs);
            }
            _ => {}
        }
    }
    if count == 0 {
        errs.push(FieldError::required(path, "must specify a handler type"));
    }
}

fn tolerations(list: &[Value], path: &str, errs: &mut Vec<FieldError>) {
    for (i, t) in list.iter().enumerate() {
        let tp = index(path, i);
        let k = s(t, "key");
        if !k.is_empty() {
            for msg in names::qualified_name(k) {
                errs.push(FieldError::invalid(child(&tp, "key"), quote(k), msg));
            }
        }
        let op = s(t, "operator");
        if k.is_empty() && op != "Exists" {
            errs.push(FieldError::invalid(
                child(&tp, "operator"),
                quote(op),
                "operator must be Exists when `key` is empty, which means \"match all values and all keys\"",
            ));
        }
        let value = s(t, "value");
        match op {
            "" | "Equal" => {
                for msg in names::label_value(value) {
                    errs.push(FieldError::invalid(child(&tp, "value"), quote(value), msg));
                }
            }
            "Exists" => {
                if !value.is_empty() {
                    errs.push(FieldError::invalid(
                        child(&tp, "operator"),
                        quote(value),
                        "value must be empty when `operator` is 'Exists'",
                    ));
                }
            }
            other => errs.push(FieldError::not_supported(
                child(&tp, "operator"),
                quote(other),
                &["Equal", "Exists"],
            )),
        }
        let effect = s(t, "effect");
        if !effect.is_empty() {
            one_of(
                child(&tp, "effect"),
                effect,
                &["NoSchedule", "PreferNoSchedule", "NoExecute"],
                errs,
            );
        }
        if get(t, "tolerationSeconds").is_some() && effect != "NoExecute" {
            errs.push(FieldError::invalid(
                child(&tp, "effect"),
                quote(effect),
                "effect must be 'NoExecute' when `tolerationSeconds` is set",
            ));
        }
    }
}

fn topology_spread(list: &[Value], path: &str, errs: &mut Vec<FieldError>) {
    for (i, c) in list.iter().enumerate() {
        let cp = index(path, i);
        let skew = int(c, "maxSkew").unwrap_or(0);
        if skew <= 0 {
            errs.push(FieldError::invalid(
                child(&cp, "maxSkew"),
                skew,
                "must be greater than zero",
            ));
        }
        if s(c, "topologyKey").is_empty() {
            errs.push(FieldError::required(
                child(&cp, "topologyKey"),
                "can not be empty",
            ));
        }
        let w = s(c, "whenUnsatisfiable");
        one_of(
            child(&cp, "whenUnsatisfiable"),
            w,
            &["DoNotSchedule", "ScheduleAnyway"],
            errs,
        );
        if let Some(sel) = get(c, "labelSelector") {
            meta::label_selector(sel, &child(&cp, "labelSelector"), errs);
        }
    }
}

fn affinity(a: &Value, path: &str, errs: &mut Vec<FieldError>) {
    if let Some(na) = get(a, "nodeAffinity") {
        let np = child(path, "nodeAffinity");
        if let Some(req) = get(na, "requiredDuringSchedulingIgnoredDuringExecution") {
            node_selector(
                req,
                &child(&np, "requiredDuringSchedulingIgnoredDuringExecution"),
                errs,
            );
        }
        for (i, t) in arr(na, "preferredDuringSchedulingIgnoredDuringExecution")
            .iter()
            .enumerate()
        {
            let tp = index(
                &child(&np, "preferredDuringSchedulingIgnoredDuringExecution"),
                i,
            );
            let w = int(t, "weight").unwrap_or(0);
            if !(1..=100).contains(&w) {
                errs.push(FieldError::invalid(
                    child(&tp, "weight"),
                    w,
                    "must be in the range 1-100",
                ));
            }
            if let Some(pref) = get(t, "preference") {
                node_selector_term(pref, &child(&tp, "preference"), errs);
            }
        }
    }
    for kind in ["podAffinity", "podAntiAffinity"] {
        let Some(pa) = get(a, kind) else { continue };
        let pp = child(path, kind);
        for (i, t) in arr(pa, "requiredDuringSchedulingIgnoredDuringExecution")
            .iter()
            .enumerate()
        {
            pod_affinity_term(
                t,
                &index(
                    &child(&pp, "requiredDuringSchedulingIgnoredDuringExecution"),
                    i,
                ),
                errs,
            );
        }
        for (i, t) in arr(pa, "preferredDuringSchedulingIgnoredDuringExecution")
            .iter()
            .enumerate()
        {
            let tp = index(
                &child(&pp, "preferredDuringSchedulingIgnoredDuringExecution"),
                i,
            );
            let w = int(t, "weight").unwrap_or(0);
            if !(1..=100).contains(&w) {
                errs.push(FieldError::invalid(
                    child(&tp, "weight"),
                    w,
                    "must be in the range 1-100",
                ));
            }
            if let Some(term) = get(t, "podAffinityTerm") {
                pod_affinity_term(term, &child(&tp, "podAffinityTerm"), errs);
            }
        }
    }
}

fn pod_affinity_term(t: &Value, path: &str, errs: &mut Vec<FieldError>) {
    let tk = s(t, "topologyKey");
    if tk.is_empty() {
        errs.push(FieldError::required(
            child(path, "topologyKey"),
            "can not be empty",
        ));
    } else {
        for msg in names::qualified_name(tk) {
            errs.push(FieldError::invalid(
                child(path, "topologyKey"),
                quote(tk),
                msg,
            ));
        }
    }
    if let Some(sel) = get(t, "labelSelector") {
        meta::label_selector(sel, &child(path, "labelSelector"), errs);
    }
}

fn node_selector(ns: &Value, path: &str, errs: &mut Vec<FieldError>) {
    let terms = arr(ns, "nodeSelectorTerms");
    if terms.is_empty() {
        errs.push(FieldError::required(
            child(path, "nodeSelectorTerms"),
            "must have at least one node selector term",
        ));
    }
    for (i, t) in terms.iter().enumerate() {
        node_selector_term(t, &index(&child(path, "nodeSelectorTerms"), i), errs);
    }
}

fn node_selector_term(t: &Value, path: &str, errs: &mut Vec<FieldError>) {
    for (i, r) in arr(t, "matchExpressions").iter().enumerate() {
        let rp = index(&child(path, "matchExpressions"), i);
        let values = arr(r, "values");
        match s(r, "operator") {
            "In" | "NotIn" => {
                if values.is_empty() {
                    errs.push(FieldError::required(
                        child(&rp, "values"),
                        "must be specified when `operator` is 'In' or 'NotIn'",
                    ));
                }
            }
            "Exists" | "DoesNotExist" => {
                if !values.is_empty() {
                    errs.push(FieldError::forbidden(
                        child(&rp, "values"),
                        "may not be specified when `operator` is 'Exists' or 'DoesNotExist'",
                    ));
                }
            }
            "Gt" | "Lt" => {
                if values.len() != 1 {
                    errs.push(FieldError::required(
                        child(&rp, "values"),
                        "must be specified single value when `operator` is 'Lt' or 'Gt'",
                    ));
                }
            }
            op => errs.push(FieldError::not_supported(
                child(&rp, "operator"),
                quote(op),
                &["DoesNotExist", "Exists", "Gt", "In", "Lt", "NotIn"],
            )),
        }
        let k = s(r, "key");
        for msg in names::qualified_name(k) {
            errs.push(FieldError::invalid(child(&rp, "key"), quote(k), msg));
        }
    }
}

/// Volume sources in the order Kubernetes checks them (the first one set wins).
const VOLUME_SOURCES: &[&str] = &[
    "hostPath",
    "emptyDir",
    "gitRepo",
    "gcePersistentDisk",
    "awsElasticBlockStore",
    "secret",
    "nfs",
    "iscsi",
    "glusterfs",
    "flocker",
    "persistentVolumeClaim",
    "rbd",
    "quobyte",
    "cephfs",
    "cinder",
    "downwardAPI",
    "fc",
    "flexVolume",
    "configMap",
    "azureFile",
    "vsphereVolume",
    "photonPersistentDisk",
    "portworxVolume",
    "azureDisk",
    "storageos",
    "projected",
    "scaleIO",
    "csi",
    "ephemeral",
    "image",
];

const FILE_MODE_MSG: &str = "must be a number between 0 and 0777 (octal), both inclusive";

/// ValidateVolumes; returns the volume names.
fn volumes(list: &[Value], path: &str, errs: &mut Vec<FieldError>) -> HashSet<String> {
    let mut names_ = HashSet::new();
    for (i, v) in list.iter().enumerate() {
        let vp = index(path, i);
        volume_source(v, &vp, errs);
        let name = s(v, "name");
        let np = child(&vp, "name");
        if name.is_empty() {
            errs.push(FieldError::required(np, ""));
        } else {
            for msg in names::dns1123_label(name) {
                errs.push(FieldError::invalid(np.clone(), quote(name), msg));
            }
            if !names_.insert(name.to_string()) {
                errs.push(FieldError::duplicate(np, quote(name)));
            }
        }
    }
    names_
}

fn volume_source(v: &Value, path: &str, errs: &mut Vec<FieldError>) {
    let mut count = 0;
    for src in VOLUME_SOURCES {
        let Some(sv) = get(v, src) else { continue };
        let sp = child(path, src);
        if count > 0 {
            errs.push(FieldError::forbidden(
                sp,
                "may not specify more than 1 volume type",
            ));
            continue;
        }
        count += 1;
        match *src {
            "hostPath" => {
                let p = s(sv, "path");
                if p.is_empty() {
                    errs.push(FieldError::required(child(&sp, "path"), ""));
                } else if p.split('/').any(|c| c == "..") {
                    errs.push(FieldError::invalid(
                        child(&sp, "path"),
                        quote(p),
                        "must not contain '..'",
                    ));
                }
                if let Some(t) = opt_str(sv, "type") {
                    let supported = [
                        "",
                        "DirectoryOrCreate",
                        "Directory",
                        "FileOrCreate",
                        "File",
                        "Socket",
                        "CharDevice",
                        "BlockDevice",
                    ];
                    if !supported.contains(&t) {
                        errs.push(FieldError::not_supported(
                            child(&sp, "type"),
                            quote(t),
                            &supported,
                        ));
                    }
                }
            }
            "emptyDir" => {
                if let Some(l) = get(sv, "sizeLimit")
                    && let Some(q) = quantity(l, &child(&sp, "sizeLimit"), errs)
                    && q.is_negative()
                {
                    errs.push(FieldError::forbidden(
                        child(&sp, "sizeLimit"),
                        "SizeLimit field must be a valid resource quantity",
                    ));
                }
                if let Some(m) = opt_str(sv, "medium") {
                    let ok = m.is_empty() || m == "Memory" || m.starts_with("HugePages");
                    if !ok {
                        errs.push(FieldError::not_supported(
                            child(&sp, "medium"),
                            quote(m),
                            &["", "Memory", "HugePages"],
                        ));
                    }
                }
            }
            "secret" => {
                if s(sv, "secretName").is_empty() {
                    errs.push(FieldError::required(child(&sp, "secretName"), ""));
                }
                key_to_paths(sv, &sp, errs);
            }
            "configMap" => {
                if s(sv, "name").is_empty() {
                    errs.push(FieldError::required(child(&sp, "name"), ""));
                }
                key_to_paths(sv, &sp, errs);
            }
            "persistentVolumeClaim" if s(sv, "claimName").is_empty() => {
                errs.push(FieldError::required(child(&sp, "claimName"), ""));
            }
            "nfs" => nfs_source(sv, &sp, errs),
            "downwardAPI" => {
                file_mode(sv, "defaultMode", &sp, errs);
                downward_items(arr(sv, "items"), &child(&sp, "items"), errs);
            }
            "projected" => {
                file_mode(sv, "defaultMode", &sp, errs);
                projected_sources(arr(sv, "sources"), &child(&sp, "sources"), errs);
            }
            "csi" if s(sv, "driver").is_empty() => {
                errs.push(FieldError::required(child(&sp, "driver"), ""));
            }
            "image" if s(sv, "reference").is_empty() => {
                errs.push(FieldError::required(child(&sp, "reference"), ""));
            }
            "ephemeral" => match get(sv, "volumeClaimTemplate") {
                None => errs.push(FieldError::required(child(&sp, "volumeClaimTemplate"), "")),
                Some(t) => {
                    let tp = child(&sp, "volumeClaimTemplate");
                    meta::template_meta(t, &tp, errs);
                    let null = Value::Null;
                    super::core::claim_spec(
                        get(t, "spec").unwrap_or(&null),
                        &child(&tp, "spec"),
                        errs,
                    );
                }
            },
            _ => {}
        }
    }
    if count == 0 {
        errs.push(FieldError::required(path, "must specify a volume type"));
    }
}

fn file_mode(v: &Value, field: &str, path: &str, errs: &mut Vec<FieldError>) {
    if let Some(m) = int(v, field)
        && !(0..=0o777).contains(&m)
    {
        errs.push(FieldError::invalid(child(path, field), m, FILE_MODE_MSG));
    }
}

/// Secret and ConfigMap `items`: keys to file paths inside the volume.
fn key_to_paths(sv: &Value, path: &str, errs: &mut Vec<FieldError>) {
    file_mode(sv, "defaultMode", path, errs);
    for (i, item) in arr(sv, "items").iter().enumerate() {
        let ip = index(&child(path, "items"), i);
        if s(item, "key").is_empty() {
            errs.push(FieldError::required(child(&ip, "key"), ""));
        }
        item_path(item, &ip, errs);
        file_mode(item, "mode", &ip, errs);
    }
}

fn item_path(item: &Value, ip: &str, errs: &mut Vec<FieldError>) {
    let p = s(item, "path");
    if p.is_empty() {
        errs.push(FieldError::required(child(ip, "path"), ""));
        return;
    }
    for msg in names::local_descending_path(p) {
        errs.push(FieldError::invalid(child(ip, "path"), quote(p), msg));
    }
    if p.starts_with("..") {
        errs.push(FieldError::invalid(
            child(ip, "path"),
            quote(p),
            "must not start with '..'",
        ));
    }
}

fn downward_items(items: &[Value], path: &str, errs: &mut Vec<FieldError>) {
    let mut supported: Vec<&str> = ENV_FIELD_PATHS.to_vec();
    supported.extend(["metadata.labels", "metadata.annotations"]);
    supported.retain(|p| !p.starts_with("status.") && !p.starts_with("spec."));
    for (i, item) in items.iter().enumerate() {
        let ip = index(path, i);
        item_path(item, &ip, errs);
        file_mode(item, "mode", &ip, errs);
        let f = get(item, "fieldRef");
        let r = get(item, "resourceFieldRef");
        if let Some(f) = f {
            field_selector(f, &child(&ip, "fieldRef"), &supported, errs);
        }
        if let Some(r) = r {
            resource_field_selector(r, &child(&ip, "resourceFieldRef"), errs);
        }
        if f.is_some() && r.is_some() {
            errs.push(FieldError::invalid(
                ip,
                render(item),
                "fieldRef and resourceFieldRef can not be specified simultaneously",
            ));
        }
    }
}

fn projected_sources(sources: &[Value], path: &str, errs: &mut Vec<FieldError>) {
    for (i, src) in sources.iter().enumerate() {
        let sp = index(path, i);
        let kinds = [
            "secret",
            "configMap",
            "downwardAPI",
            "serviceAccountToken",
            "clusterTrustBundle",
        ];
        let set: Vec<&str> = kinds
            .iter()
            .copied()
            .filter(|k| get(src, k).is_some())
            .collect();
        if set.is_empty() {
            errs.push(FieldError::required(sp.clone(), "must specify exactly 1 of secret, configMap, downwardAPI, serviceAccountToken, clusterTrustBundle"));
        }
        for extra in set.iter().skip(1) {
            errs.push(FieldError::forbidden(
                child(&sp, extra),
                "may not specify more than 1 volume type per source",
            ));
        }
        if let Some(sec) = get(src, "secret") {
            for (j, item) in arr(sec, "items").iter().enumerate() {
                item_path(
                    item,
                    &index(&child(&child(&sp, "secret"), "items"), j),
                    errs,
                );
            }
        }
        if let Some(cm) = get(src, "configMap") {
            for (j, item) in arr(cm, "items").iter().enumerate() {
                item_path(
                    item,
                    &index(&child(&child(&sp, "configMap"), "items"), j),
                    errs,
                );
            }
        }
        if let Some(d) = get(src, "downwardAPI") {
            downward_items(
                arr(d, "items"),
                &child(&child(&sp, "downwardAPI"), "items"),
                errs,
            );
        }
        if let Some(t) = get(src, "serviceAccountToken") {
            let tp = child(&sp, "serviceAccountToken");
            if s(t, "path").is_empty() {
                errs.push(FieldError::required(child(&tp, "path"), ""));
            }
            if let Some(e) = int(t, "expirationSeconds") {
                if e < 600 {
                    errs.push(FieldError::invalid(
                        child(&tp, "expirationSeconds"),
                        e,
                        "may not specify a duration less than 10 minutes",
                    ));
                } else if e > 1 << 32 {
                    errs.push(FieldError::invalid(
                        child(&tp, "expirationSeconds"),
                        e,
                        "may not specify a duration larger than 2^32 seconds",
                    ));
                }
            }
        }
    }
}

/// Pod and container security contexts: ids in range, known seccomp profiles, and no
/// privileged container that forbids privilege escalation.
fn security_context(sc: &Value, path: &str, container: bool, errs: &mut Vec<FieldError>) {
    let id_fields: &[&str] = if container {
        &["runAsUser", "runAsGroup"]
    } else {
        &["runAsUser", "runAsGroup", "fsGroup"]
    };
    for f in id_fields {
        if let Some(id) = int(sc, f)
            && !(0..=i64::from(i32::MAX)).contains(&id)
        {
            errs.push(FieldError::invalid(
                child(path, f),
                id,
                names::inclusive_range(0, i64::from(i32::MAX)),
            ));
        }
    }
    for (i, g) in arr(sc, "supplementalGroups").iter().enumerate() {
        let g = g.as_i64().unwrap_or(-1);
        if !(0..=i64::from(i32::MAX)).contains(&g) {
            errs.push(FieldError::invalid(
                index(&child(path, "supplementalGroups"), i),
                g,
                names::inclusive_range(0, i64::from(i32::MAX)),
            ));
        }
    }
    if let Some(sp) = get(sc, "seccompProfile") {
        let ty = s(sp, "type");
        let sp_path = child(path, "seccompProfile");
        one_of(
            child(&sp_path, "type"),
            ty,
            &["Localhost", "RuntimeDefault", "Unconfined"],
            errs,
        );
        let localhost = s(sp, "localhostProfile");
        if ty == "Localhost" && localhost.is_empty() {
            errs.push(FieldError::required(
                child(&sp_path, "localhostProfile"),
                "must be set when seccomp type is Localhost",
            ));
        } else if ty != "Localhost" && !localhost.is_empty() {
            errs.push(FieldError::invalid(
                child(&sp_path, "localhostProfile"),
                quote(localhost),
                "can only be set when seccomp type is Localhost",
            ));
        }
    }
    if container
        && sc.get("privileged").and_then(Value::as_bool) == Some(true)
        && sc.get("allowPrivilegeEscalation").and_then(Value::as_bool) == Some(false)
    {
        errs.push(FieldError::invalid(
            path,
            "<security context>",
            "cannot set `allowPrivilegeEscalation` to false and `privileged` to true",
        ));
    }
    if let Some(pm) = opt_str(sc, "procMount") {
        one_of(child(path, "procMount"), pm, &["Default", "Unmasked"], errs);
    }
}

/// At most 3 nameservers (valid IPs) and 32 search domains.
fn dns_config(dc: &Value, path: &str, errs: &mut Vec<FieldError>) {
    let servers = arr(dc, "nameservers");
    if servers.len() > 3 {
        errs.push(FieldError::invalid(
            child(path, "nameservers"),
            super::go_strs(servers),
            "must not have more than 3 nameservers",
        ));
    }
    for (i, ns) in servers.iter().enumerate() {
        let ns = ns.as_str().unwrap_or("");
        if !names::is_ip(ns) {
            errs.push(FieldError::invalid(
                index(&child(path, "nameservers"), i),
                quote(ns),
                "must be valid IP address",
            ));
        }
    }
    let searches = arr(dc, "searches");
    if searches.len() > 32 {
        errs.push(FieldError::invalid(
            child(path, "searches"),
            super::go_strs(searches),
            "must not have more than 32 search paths",
        ));
    }
    for (i, d) in searches.iter().enumerate() {
        let d = d.as_str().unwrap_or("");
        let d = d.strip_suffix('.').unwrap_or(d);
        for msg in names::dns1123_subdomain(d) {
            errs.push(FieldError::invalid(
                index(&child(path, "searches"), i),
                quote(d),
                msg,
            ));
        }
    }
}

/// An NFS source (in a pod volume or a PersistentVolume): server and an absolute path.
pub(crate) fn nfs_source(sv: &Value, sp: &str, errs: &mut Vec<FieldError>) {
    if s(sv, "server").is_empty() {
        errs.push(FieldError::required(child(sp, "server"), ""));
    }
    let p = s(sv, "path");
    if p.is_empty() {
        errs.push(FieldError::required(child(sp, "path"), ""));
    } else if !p.starts_with('/') {
        errs.push(FieldError::invalid(
            child(sp, "path"),
            quote(p),
            "must be an absolute path",
        ));
    }
}
