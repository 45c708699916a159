//! Core (v1) resources other than pods: Service, Endpoints, ConfigMap, Secret, Node,
//! Namespace, ServiceAccount, PersistentVolume and PersistentVolumeClaim.

use super::meta::{self, labels, object_meta};
use super::names;
use super::pod::{nfs_source, protocol, resource_quantity};
use super::{
    NODE_PORT_RANGE, arr, child, get, go_strs, immutable, index, int, key, obj, one_of, opt_str,
    port_num_or_name, quantity, quote, render, s,
};
use crate::error::FieldError;
use base64::Engine;
use serde_json::{Map, Value};
use std::collections::HashSet;

/// ConfigMaps and Secrets hold at most 1 MiB.
pub const MAX_SECRET_SIZE: usize = 1024 * 1024;

pub(crate) fn namespace(o: &Value, errs: &mut Vec<FieldError>) {
    object_meta(o, false, names::dns1123_label, errs);
    if let Some(spec) = get(o, "spec") {
        for f in arr(spec, "finalizers") {
            let f = f.as_str().unwrap_or("");
            for msg in names::qualified_name(f) {
                errs.push(FieldError::invalid("spec.finalizers", quote(f), msg));
            }
            if !f.contains('/') && f != "kubernetes" {
                errs.push(FieldError::invalid(
                    "spec.finalizers",
                    quote(f),
                    "name is neither a standard finalizer name nor is it fully qualified",
                ));
            }
        }
    }
    if let Some(phase) = get(o, "status").and_then(|st| opt_str(st, "phase"))
        && !phase.is_empty()
    {
        one_of(
            "status.phase".into(),
            phase,
            &["Active", "Terminating"],
            errs,
        );
    }
}

pub(crate) fn service_account(o: &Value, errs: &mut Vec<FieldError>) {
    object_meta(o, true, names::dns1123_subdomain, errs);
    for (field, list) in [
        ("secrets", arr(o, "secrets")),
        ("imagePullSecrets", arr(o, "imagePullSecrets")),
    ] {
        for (i, r) in list.iter().enumerate() {
            let n = s(r, "name");
            if !n.is_empty() {
                for msg in names::dns1123_subdomain(n) {
                    errs.push(FieldError::invalid(
                        child(&index(field, i), "name"),
                        quote(n),
                        msg,
                    ));
                }
            }
        }
    }
}

// ---- Service -----------------------------------------------------------------------------

fn is_headless(spec: &Value) -> bool {
    s(spec, "clusterIP") == "None"
}

pub(crate) fn service(o: &Value, old: Option<&Value>, errs: &mut Vec<FieldError>) {
    object_meta(o, true, names::dns1035_label, errs);
    let null = Value::Null;
    let spec = get(o, "spec").unwrap_or(&null);
    let ty = s(spec, "type");
    let ports = arr(spec, "ports");
    if ports.is_empty() && !is_headless(spec) && ty != "ExternalName" {
        errs.push(FieldError::required("spec.ports", ""));
    }
    match ty {
        "LoadBalancer" | "NodePort" if is_headless(spec) => errs.push(FieldError::invalid(
            "spec.clusterIPs[0]",
            quote("None"),
            format!("may not be set to 'None' for {ty} services"),
        )),
        "ExternalName" => {
            if !arr(spec, "clusterIPs").is_empty() {
                errs.push(FieldError::forbidden(
                    "spec.clusterIPs",
                    "may not be set for ExternalName services",
                ));
            }
            if !arr(spec, "ipFamilies").is_empty() {
                errs.push(FieldError::forbidden(
                    "spec.ipFamilies",
                    "may not be set for ExternalName services",
                ));
            }
            if get(spec, "ipFamilyPolicy").is_some() {
                errs.push(FieldError::forbidden(
                    "spec.ipFamilyPolicy",
                    "may not be set for ExternalName services",
                ));
            }
            let cname = s(spec, "externalName").trim_end_matches('.');
            if cname.is_empty() {
                errs.push(FieldError::required("spec.externalName", ""));
            } else {
                for msg in names::dns1123_subdomain(cname) {
                    errs.push(FieldError::invalid("spec.externalName", quote(cname), msg));
                }
            }
        }
        _ => {}
    }
    if ty == "LoadBalancer" {
        for (i, p) in ports.iter().enumerate() {
            if int(p, "port") == Some(10250) {
                errs.push(FieldError::invalid(
                    index("spec.ports", i),
                    10250,
                    "may not expose port 10250 externally since it is used by kubelet",
                ));
            }
        }
    }

    let mut port_names = HashSet::new();
    let mut seen_ports = HashSet::new();
    let mut seen_node_ports = HashSet::new();
    for (i, p) in ports.iter().enumerate() {
        let pp = index("spec.ports", i);
        let name = s(p, "name");
        if ports.len() > 1 && name.is_empty() {
            errs.push(FieldError::required(child(&pp, "name"), ""));
        } else if !name.is_empty() {
            for msg in names::dns1123_label(name) {
                errs.push(FieldError::invalid(child(&pp, "name"), quote(name), msg));
            }
            if !port_names.insert(name.to_string()) {
                errs.push(FieldError::duplicate(child(&pp, "name"), quote(name)));
            }
        }
        let port = int(p, "port").unwrap_or(0);
        for msg in names::port_num(port) {
            errs.push(FieldError::invalid(child(&pp, "port"), port, msg));
        }
        let proto = s(p, "protocol");
        protocol(proto, child(&pp, "protocol"), errs);
        port_num_or_name(get(p, "targetPort"), child(&pp, "targetPort"), errs);
        if let Some(ap) = opt_str(p, "appProtocol") {
            for msg in names::qualified_name(ap) {
                errs.push(FieldError::invalid(
                    child(&pp, "appProtocol"),
                    quote(ap),
                    msg,
                ));
            }
        }
        let node_port = int(p, "nodePort").unwrap_or(0);
        if node_port != 0 {
            if ty == "ClusterIP" {
                errs.push(FieldError::forbidden(
                    child(&pp, "nodePort"),
                    "may not be used when `type` is 'ClusterIP'",
                ));
            } else if ty != "ExternalName"
                && !(NODE_PORT_RANGE.0..=NODE_PORT_RANGE.1).contains(&node_port)
            {
                errs.push(FieldError::invalid(
                    child(&pp, "nodePort"),
                    node_port,
                    format!(
                        "provided port is not in the valid range. The range of valid ports is {}-{}",
                        NODE_PORT_RANGE.0, NODE_PORT_RANGE.1
                    ),
                ));
            }
            if !seen_node_ports.insert((proto.to_string(), node_port)) {
                errs.push(FieldError::duplicate(child(&pp, "nodePort"), node_port));
            }
        }
        if !seen_ports.insert((proto.to_string(), port)) {
            errs.push(FieldError::duplicate(
                pp,
                format!(
                    "core.ServicePort{{Name:\"\", Protocol:{}, AppProtocol:(*string)(nil), Port:{}, TargetPort:intstr.IntOrString{{Type:0, IntVal:0, StrVal:\"\"}}, NodePort:0}}",
                    quote(proto),
                    port
                ),
            ));
        }
    }

    if let Some(sel) = obj(spec, "selector") {
        labels(Some(sel), "spec.selector", errs);
    }
    let affinity = s(spec, "sessionAffinity");
    one_of(
        "spec.sessionAffinity".into(),
        affinity,
        &["ClientIP", "None"],
        errs,
    );
    if affinity == "ClientIP" {
        let t = get(spec, "sessionAffinityConfig")
            .and_then(|c| get(c, "clientIP"))
            .and_then(|c| int(c, "timeoutSeconds"));
        match t {
            None => errs.push(FieldError::required(
                "spec.sessionAffinityConfig.clientIP.timeoutSeconds",
                "",
            )),
            Some(t) if !(1..=86400).contains(&t) => errs.push(FieldError::invalid(
                "spec.sessionAffinityConfig.clientIP.timeoutSeconds",
                t,
                "must be greater than 0 and less than 86400",
            )),
            _ => {}
        }
    } else if affinity == "None" && get(spec, "sessionAffinityConfig").is_some() {
        errs.push(FieldError::forbidden(
            "spec.sessionAffinityConfig",
            "must not be set when session affinity is None",
        ));
    }

    if ty != "ExternalName" {
        cluster_ips(spec, errs);
    }
    for (i, ip) in arr(spec, "externalIPs").iter().enumerate() {
        let ip = ip.as_str().unwrap_or("");
        if !names::is_ip(ip) {
            errs.push(FieldError::invalid(
                index("spec.externalIPs", i),
                quote(ip),
                names::IP_MSG,
            ));
        }
    }
    for (i, r) in arr(spec, "loadBalancerSourceRanges").iter().enumerate() {
        let r = r.as_str().unwrap_or("");
        if !names::is_cidr(r.trim()) {
            errs.push(FieldError::invalid(
                index("spec.loadBalancerSourceRanges", i),
                quote(r),
                names::CIDR_MSG,
            ));
        }
    }
    one_of(
        "spec.type".into(),
        ty,
        &["ClusterIP", "ExternalName", "LoadBalancer", "NodePort"],
        errs,
    );

    let externally_accessible = ty == "LoadBalancer"
        || ty == "NodePort"
        || (ty == "ClusterIP" && !arr(spec, "externalIPs").is_empty());
    let etp = s(spec, "externalTrafficPolicy");
    if !externally_accessible {
        if !etp.is_empty() {
            errs.push(FieldError::invalid(
                "spec.externalTrafficPolicy",
                quote(etp),
                "may only be set for externally-accessible services",
            ));
        }
    } else {
        one_of(
            "spec.externalTrafficPolicy".into(),
            etp,
            &["Cluster", "Local"],
            errs,
        );
    }
    if int(spec, "healthCheckNodePort").unwrap_or(0) != 0
        && !(ty == "LoadBalancer" && etp == "Local")
    {
        errs.push(FieldError::invalid(
            "spec.healthCheckNodePort",
            int(spec, "healthCheckNodePort").unwrap_or(0),
            "may only be set when `type` is 'LoadBalancer' and `externalTrafficPolicy` is 'Local'",
        ));
    }
    if let Some(itp) = opt_str(spec, "internalTrafficPolicy") {
        one_of(
            "spec.internalTrafficPolicy".into(),
            itp,
            &["Cluster", "Local"],
            errs,
        );
    } else if matches!(ty, "ClusterIP" | "NodePort" | "LoadBalancer") {
        errs.push(FieldError::required("spec.internalTrafficPolicy", ""));
    }
    if let Some(td) = opt_str(spec, "trafficDistribution") {
        one_of(
            "spec.trafficDistribution".into(),
            td,
            &["PreferClose", "PreferSameZone", "PreferSameNode"],
            errs,
        );
    }
    let lb_class = opt_str(spec, "loadBalancerClass");
    if let Some(class) = lb_class {
        if ty != "LoadBalancer" {
            errs.push(FieldError::forbidden(
                "spec.loadBalancerClass",
                "may only be used when `type` is 'LoadBalancer'",
            ));
        }
        for msg in names::qualified_name(class) {
            errs.push(FieldError::invalid(
                "spec.loadBalancerClass",
                quote(class),
                msg,
            ));
        }
    }

    if let Some(old) = old {
        let old_spec = get(old, "spec").unwrap_or(&null);
        let old_ty = s(old_spec, "type");
        if ty == "LoadBalancer" && old_ty == "LoadBalancer" {
            let old_class = opt_str(old_spec, "loadBalancerClass");
            if old_class != lb_class {
                errs.push(FieldError::invalid(
                    "spec.loadBalancerClass",
                    lb_class.map(quote).unwrap_or_else(|| "null".into()),
                    "may not change once set",
                ));
            }
        }
        if ty != "ExternalName" && old_ty != "ExternalName" {
            let first = |sp: &Value| -> String {
                arr(sp, "clusterIPs")
                    .first()
                    .and_then(Value::as_str)
                    .unwrap_or(s(sp, "clusterIP"))
                    .to_string()
            };
            let (n, o) = (first(spec), first(old_spec));
            if !n.is_empty() && !o.is_empty() && n != o {
                let shown = if arr(spec, "clusterIPs").is_empty() {
                    go_strs(&[Value::String(n.clone())])
                } else {
                    go_strs(arr(spec, "clusterIPs"))
                };
                errs.push(FieldError::invalid(
                    "spec.clusterIPs[0]",
                    shown,
                    "may not change once set",
                ));
            }
            let fam = |sp: &Value| {
                arr(sp, "ipFamilies")
                    .first()
                    .and_then(Value::as_str)
                    .unwrap_or("")
                    .to_string()
            };
            let (nf, of) = (fam(spec), fam(old_spec));
            if !nf.is_empty() && !of.is_empty() && nf != of {
                errs.push(FieldError::invalid(
                    "spec.ipFamilies[0]",
                    go_strs(arr(spec, "ipFamilies")).replace("[]string", "[]core.IPFamily"),
                    "may not change once set",
                ));
            }
        }
    }
}

/// ValidateServiceClusterIPsRelatedFields (single-stack subset).
fn cluster_ips(spec: &Value, errs: &mut Vec<FieldError>) {
    let ip = s(spec, "clusterIP");
    let ips = arr(spec, "clusterIPs");
    if ip.is_empty() {
        if !ips.is_empty() {
            errs.push(FieldError::invalid(
                "spec.clusterIPs",
                go_strs(ips),
                "must be empty when `clusterIP` is not specified",
            ));
        }
    } else if let Some(first) = ips.first()
        && first.as_str() != Some(ip)
    {
        errs.push(FieldError::invalid(
            "spec.clusterIPs",
            go_strs(ips),
            "first value must match `clusterIP`",
        ));
    }
    let mut seen = HashSet::new();
    for (i, f) in arr(spec, "ipFamilies").iter().enumerate() {
        let f = f.as_str().unwrap_or("");
        let p = index("spec.ipFamilies", i);
        if f != "IPv4" && f != "IPv6" {
            errs.push(FieldError::not_supported(
                p.clone(),
                quote(f),
                &["IPv4", "IPv6"],
            ));
        }
        if !seen.insert(f) {
            errs.push(FieldError::duplicate(p, quote(f)));
        }
    }
    if let Some(policy) = opt_str(spec, "ipFamilyPolicy") {
        one_of(
            "spec.ipFamilyPolicy".into(),
            policy,
            &["PreferDualStack", "RequireDualStack", "SingleStack"],
            errs,
        );
    }
    for (i, v) in ips.iter().enumerate() {
        let v = v.as_str().unwrap_or("");
        if i == 0 && v == "None" {
            if ips.len() > 1 {
                errs.push(FieldError::invalid(
                    "spec.clusterIPs",
                    go_strs(ips),
                    "'None' must be the first and only value",
                ));
            }
            continue;
        }
        if !names::is_ip(v) {
            errs.push(FieldError::invalid(
                index("spec.clusterIPs", i),
                quote(v),
                names::IP_MSG,
            ));
        }
    }
    if ips.len() > 2 {
        errs.push(FieldError::invalid(
            "spec.clusterIPs",
            go_strs(ips),
            "may only hold up to 2 values",
        ));
    }
    if ips.is_empty() && !ip.is_empty() && ip != "None" && !names::is_ip(ip) {
        errs.push(FieldError::invalid(
            "spec.clusterIP",
            quote(ip),
            names::IP_MSG,
        ));
    }
}

pub(crate) fn endpoints(o: &Value, errs: &mut Vec<FieldError>) {
    object_meta(o, true, names::dns1123_subdomain, errs);
    for (i, ss) in arr(o, "subsets").iter().enumerate() {
        let sp = index("subsets", i);
        if arr(ss, "addresses").is_empty() && arr(ss, "notReadyAddresses").is_empty() {
            errs.push(FieldError::required(
                sp.clone(),
                "must specify `addresses` or `notReadyAddresses`",
            ));
        }
        for list in ["addresses", "notReadyAddresses"] {
            for (j, a) in arr(ss, list).iter().enumerate() {
                let ap = index(&child(&sp, list), j);
                let ip = s(a, "ip");
                if !names::is_ip(ip) {
                    errs.push(FieldError::invalid(
                        child(&ap, "ip"),
                        quote(ip),
                        names::IP_MSG,
                    ));
                } else if ip == "0.0.0.0" || ip == "::" {
                    errs.push(FieldError::invalid(
                        child(&ap, "ip"),
                        quote(ip),
                        "may not be unspecified (0.0.0.0)",
                    ));
                }
                let h = s(a, "hostname");
                if !h.is_empty() {
                    for msg in names::dns1123_label(h) {
                        errs.push(FieldError::invalid(child(&ap, "hostname"), quote(h), msg));
                    }
                }
                if let Some(n) = opt_str(a, "nodeName") {
                    for msg in names::dns1123_subdomain(n) {
                        errs.push(FieldError::invalid(child(&ap, "nodeName"), quote(n), msg));
                    }
                }
            }
        }
        let ports = arr(ss, "ports");
        for (j, p) in ports.iter().enumerate() {
            let pp = index(&child(&sp, "ports"), j);
            let name = s(p, "name");
            if ports.len() > 1 && name.is_empty() {
                errs.push(FieldError::required(child(&pp, "name"), ""));
            } else if !name.is_empty() {
                for msg in names::dns1123_label(name) {
                    errs.push(FieldError::invalid(child(&pp, "name"), quote(name), msg));
                }
            }
            let port = int(p, "port").unwrap_or(0);
            for msg in names::port_num(port) {
                errs.push(FieldError::invalid(child(&pp, "port"), port, msg));
            }
            protocol(s(p, "protocol"), child(&pp, "protocol"), errs);
        }
    }
}

// ---- ConfigMap and Secret ------------------------------------------------------------------

pub(crate) fn config_map(o: &Value, old: Option<&Value>, errs: &mut Vec<FieldError>) {
    object_meta(o, true, names::dns1123_subdomain, errs);
    let mut total = 0;
    let binary = obj(o, "binaryData");
    if let Some(data) = obj(o, "data") {
        for (k, v) in data {
            for msg in names::config_map_key(k) {
                errs.push(FieldError::invalid(key("data", k), quote(k), msg));
            }
            if binary.is_some_and(|b| b.contains_key(k)) {
                errs.push(FieldError::invalid(
                    key("data", k),
                    quote(k),
                    "duplicate of key present in binaryData",
                ));
            }
            total += v.as_str().map(str::len).unwrap_or(0);
        }
    }
    if let Some(b) = binary {
        for (k, v) in b {
            for msg in names::config_map_key(k) {
                errs.push(FieldError::invalid(key("binaryData", k), quote(k), msg));
            }
            total += decoded_len(v, &key("binaryData", k), errs);
        }
    }
    if total > MAX_SECRET_SIZE {
        errs.push(FieldError::too_long("[]", MAX_SECRET_SIZE));
    }
    if let Some(old) = old {
        immutable_data(o, old, &["data", "binaryData"], errs);
    }
}

/// The size of a base64 value as stored (Secret `data`, ConfigMap `binaryData`).
fn decoded_len(v: &Value, path: &str, errs: &mut Vec<FieldError>) -> usize {
    let Some(text) = v.as_str() else {
        errs.push(FieldError::invalid(
            path,
            render(v),
            "must be a base64-encoded string",
        ));
        return 0;
    };
    match base64::engine::general_purpose::STANDARD.decode(text) {
        Ok(bytes) => bytes.len(),
        Err(_) => {
            errs.push(FieldError::invalid(
                path,
                "<secret contents redacted>",
                "illegal base64 data",
            ));
            0
        }
    }
}

/// Objects marked `immutable: true` keep their data and the mark.
fn immutable_data(new: &Value, old: &Value, fields: &[&str], errs: &mut Vec<FieldError>) {
    if old.get("immutable").and_then(Value::as_bool) != Some(true) {
        return;
    }
    if new.get("immutable").and_then(Value::as_bool) != Some(true) {
        errs.push(FieldError::forbidden(
            "immutable",
            "field is immutable when `immutable` is set",
        ));
    }
    for f in fields {
        let norm = |v: &Value| {
            get(v, f)
                .cloned()
                .filter(|x| x.as_object().is_none_or(|m| !m.is_empty()))
        };
        if norm(new) != norm(old) {
            errs.push(FieldError::forbidden(
                *f,
                "field is immutable when `immutable` is set",
            ));
        }
    }
}

pub(crate) fn secret(o: &Value, old: Option<&Value>, errs: &mut Vec<FieldError>) {
    object_meta(o, true, names::dns1123_subdomain, errs);
    let empty = Map::new();
    let data = obj(o, "data").unwrap_or(&empty);
    let string_data = obj(o, "stringData").unwrap_or(&empty);
    let mut total = 0;
    for (k, v) in data {
        for msg in names::config_map_key(k) {
            errs.push(FieldError::invalid(key("data", k), quote(k), msg));
        }
        total += decoded_len(v, &key("data", k), errs);
    }
    for (k, v) in string_data {
        for msg in names::config_map_key(k) {
            errs.push(FieldError::invalid(key("stringData", k), quote(k), msg));
        }
        total += v.as_str().map(str::len).unwrap_or(0);
    }
    if total > MAX_SECRET_SIZE {
        errs.push(FieldError::too_long("data", MAX_SECRET_SIZE));
    }
    let has = |k: &str| data.contains_key(k) || string_data.contains_key(k);
    let value_of = |k: &str| -> Option<Vec<u8>> {
        if let Some(v) = string_data.get(k).and_then(Value::as_str) {
            return Some(v.as_bytes().to_vec());
        }
        data.get(k)
            .and_then(Value::as_str)
            .and_then(|t| base64::engine::general_purpose::STANDARD.decode(t).ok())
    };
    match s(o, "type") {
        "kubernetes.io/service-account-token" => {
            let sa = get(o, "metadata")
                .and_then(|m| obj(m, "annotations"))
                .and_then(|a| a.get("kubernetes.io/service-account.name"))
                .and_then(Value::as_str)
                .unwrap_or("");
            if sa.is_empty() {
                errs.push(FieldError::required(
                    "metadata.annotations[kubernetes.io/service-account.name]",
                    "",
                ));
            }
        }
        t @ ("kubernetes.io/dockercfg" | "kubernetes.io/dockerconfigjson") => {
            let k = if t == "kubernetes.io/dockercfg" {
                ".dockercfg"
            } else {
                ".dockerconfigjson"
            };
            match value_of(k) {
                None if !has(k) => errs.push(FieldError::required(key("data", k), "")),
                v => {
                    let ok = v
                        .and_then(|b| serde_json::from_slice::<Map<String, Value>>(&b).ok())
                        .is_some();
                    if !ok {
                        errs.push(FieldError::invalid(
                            key("data", k),
                            "<secret contents redacted>",
                            "must be a valid JSON object",
                        ));
                    }
                }
            }
        }
        "kubernetes.io/basic-auth" if !has("username") && !has("password") => {
            errs.push(FieldError::required("data[username]", ""));
            errs.push(FieldError::required("data[password]", ""));
        }
        "kubernetes.io/ssh-auth" if value_of("ssh-privatekey").is_none_or(|v| v.is_empty()) => {
            errs.push(FieldError::required("data[ssh-privatekey]", ""));
        }
        "kubernetes.io/tls" => {
            for k in ["tls.crt", "tls.key"] {
                if !has(k) {
                    errs.push(FieldError::required(key("data", k), ""));
                }
            }
        }
        _ => {}
    }
    if let Some(old) = old {
        if s(o, "type") != s(old, "type") {
            errs.push(FieldError::invalid(
                "type",
                quote(s(o, "type")),
                "field is immutable",
            ));
        }
        immutable_data(o, old, &["data"], errs);
    }
}

// ---- Node ----------------------------------------------------------------------------------

pub(crate) fn node(o: &Value, old: Option<&Value>, errs: &mut Vec<FieldError>) {
    object_meta(o, false, names::dns1123_subdomain, errs);
    let null = Value::Null;
    let spec = get(o, "spec").unwrap_or(&null);
    let cidrs = arr(spec, "podCIDRs");
    for (i, c) in cidrs.iter().enumerate() {
        let c = c.as_str().unwrap_or("");
        if !names::is_cidr(c) {
            errs.push(FieldError::invalid(
                index("spec.podCIDRs", i),
                quote(c),
                names::CIDR_MSG,
            ));
        }
    }
    if cidrs.len() > 2 {
        errs.push(FieldError::invalid(
            "spec.podCIDRs",
            go_strs(cidrs),
            "may specify no more than one CIDR for each IP family",
        ));
    }
    let pod_cidr = s(spec, "podCIDR");
    if !pod_cidr.is_empty() && !names::is_cidr(pod_cidr) {
        errs.push(FieldError::invalid(
            "spec.podCIDR",
            quote(pod_cidr),
            names::CIDR_MSG,
        ));
    }
    let mut seen = HashSet::new();
    for (i, t) in arr(spec, "taints").iter().enumerate() {
        let tp = index("spec.taints", i);
        let k = s(t, "key");
        if k.is_empty() {
            errs.push(FieldError::required(child(&tp, "key"), ""));
        }
        for msg in names::qualified_name(k)
            .into_iter()
            .filter(|_| !k.is_empty())
        {
            errs.push(FieldError::invalid(child(&tp, "key"), quote(k), msg));
        }
        let v = s(t, "value");
        for msg in names::label_value(v) {
            errs.push(FieldError::invalid(child(&tp, "value"), quote(v), msg));
        }
        let effect = s(t, "effect");
        one_of(
            child(&tp, "effect"),
            effect,
            &["NoSchedule", "PreferNoSchedule", "NoExecute"],
            errs,
        );
        if !seen.insert((k.to_string(), effect.to_string())) {
            errs.push(FieldError::duplicate(
                tp,
                format!("{}:{}", quote(k), quote(effect)),
            ));
        }
    }
    if let Some(status) = get(o, "status") {
        for f in ["capacity", "allocatable"] {
            if let Some(m) = obj(status, f) {
                for (r, v) in m {
                    resource_quantity(r, v, &key(&child("status", f), r), errs);
                }
            }
        }
    }
    if let Some(old) = old {
        let old_spec = get(old, "spec").unwrap_or(&null);
        let old_cidrs = arr(old_spec, "podCIDRs");
        if !old_cidrs.is_empty() && old_cidrs != cidrs {
            errs.push(FieldError::forbidden(
                "spec.podCIDRs",
                "node updates may not change podCIDR except from \"\" to valid",
            ));
        }
        let old_provider = s(old_spec, "providerID");
        if !old_provider.is_empty() && old_provider != s(spec, "providerID") {
            errs.push(FieldError::forbidden(
                "spec.providerID",
                "node updates may not change providerID except from \"\" to valid",
            ));
        }
    }
}

// ---- PersistentVolume and PersistentVolumeClaim -------------------------------------------

const ACCESS_MODES: &[&str] = &[
    "ReadOnlyMany",
    "ReadWriteMany",
    "ReadWriteOnce",
    "ReadWriteOncePod",
];

fn access_modes(spec: &Value, path: &str, detail: &str, errs: &mut Vec<FieldError>) {
    let modes = arr(spec, "accessModes");
    let ap = child(path, "accessModes");
    if modes.is_empty() {
        errs.push(FieldError::required(ap.clone(), detail));
    }
    let mut rwop = false;
    for m in modes {
        let m = m.as_str().unwrap_or("");
        if !ACCESS_MODES.contains(&m) {
            errs.push(FieldError::not_supported(
                ap.clone(),
                quote(m),
                ACCESS_MODES,
            ));
        }
        rwop |= m == "ReadWriteOncePod";
    }
    if rwop && modes.len() > 1 {
        errs.push(FieldError::forbidden(
            ap,
            "may not use ReadWriteOncePod with other access modes",
        ));
    }
}

fn storage_class_and_mode(spec: &Value, path: &str, errs: &mut Vec<FieldError>) {
    if let Some(sc) = opt_str(spec, "storageClassName")
        && !sc.is_empty()
    {
        for msg in names::dns1123_subdomain(sc) {
            errs.push(FieldError::invalid(
                child(path, "storageClassName"),
                quote(sc),
                msg,
            ));
        }
    }
    if let Some(m) = opt_str(spec, "volumeMode")
        && !["Block", "Filesystem"].contains(&m)
    {
        errs.push(FieldError::not_supported(
            child(path, "volumeMode"),
            quote(m),
            &["Block", "Filesystem"],
        ));
    }
}

/// ValidatePersistentVolumeClaimSpec (claims, claim templates, ephemeral volumes).
pub(crate) fn claim_spec(spec: &Value, path: &str, errs: &mut Vec<FieldError>) {
    access_modes(spec, path, "at least 1 access mode is required", errs);
    if let Some(sel) = get(spec, "selector") {
        meta::label_selector(sel, &child(path, "selector"), errs);
    }
    // Kubernetes names the storage request `spec.resources[storage]`.
    let storage_path = key(&child(path, "resources"), "storage");
    match get(spec, "resources")
        .and_then(|r| get(r, "requests"))
        .and_then(|r| get(r, "storage"))
    {
        None => errs.push(FieldError::required(storage_path, "")),
        Some(v) => {
            if let Some(q) = quantity(v, &storage_path, errs)
                && q.nanos() <= 0
            {
                errs.push(FieldError::invalid(
                    storage_path,
                    quote(&q.to_string()),
                    "must be greater than zero",
                ));
            }
        }
    }
    if let Some(res) = get(spec, "resources") {
        for f in ["requests", "limits"] {
            if let Some(m) = obj(res, f) {
                for (r, v) in m
                    .iter()
                    .filter(|(r, _)| r.as_str() != "storage" || f == "limits")
                {
                    resource_quantity(r, v, &key(&child(&child(path, "resources"), f), r), errs);
                }
            }
        }
    }
    storage_class_and_mode(spec, path, errs);
    for ds in ["dataSource", "dataSourceRef"] {
        if let Some(d) = get(spec, ds) {
            let dp = child(path, ds);
            if s(d, "name").is_empty() {
                errs.push(FieldError::required(child(&dp, "name"), ""));
            }
            if s(d, "kind").is_empty() {
                errs.push(FieldError::required(child(&dp, "kind"), ""));
            }
        }
    }
}

pub(crate) fn persistent_volume_claim(o: &Value, old: Option<&Value>, errs: &mut Vec<FieldError>) {
    object_meta(o, true, names::dns1123_subdomain, errs);
    let null = Value::Null;
    let spec = get(o, "spec").unwrap_or(&null);
    claim_spec(spec, "spec", errs);
    let Some(old) = old else { return };
    let old_spec = get(old, "spec").unwrap_or(&null);
    let (Some(mut new_clone), Some(mut old_clone)) =
        (spec.as_object().cloned(), old_spec.as_object().cloned())
    else {
        return;
    };
    // The binder sets volumeName once; a bound claim may change its storage request.
    if s(old_spec, "volumeName").is_empty() {
        match new_clone.get("volumeName") {
            Some(v) => old_clone.insert("volumeName".into(), v.clone()),
            None => old_clone.remove("volumeName"),
        };
    }
    match new_clone.get("volumeAttributesClassName") {
        Some(v) => old_clone.insert("volumeAttributesClassName".into(), v.clone()),
        None => old_clone.remove("volumeAttributesClassName"),
    };
    let old_storage = get(old_spec, "resources")
        .and_then(|r| get(r, "requests"))
        .and_then(|r| get(r, "storage"))
        .cloned();
    let bound = get(o, "status").map(|st| s(st, "phase")) == Some("Bound");
    if bound
        && let Some(req) = new_clone
            .get_mut("resources")
            .and_then(|r| r.get_mut("requests"))
            .and_then(Value::as_object_mut)
        && let Some(os) = &old_storage
    {
        req.insert("storage".into(), os.clone());
    }
    if Value::Object(new_clone) != Value::Object(old_clone) {
        errs.push(FieldError::forbidden(
            "spec",
            "spec is immutable after creation except resources.requests and volumeAttributesClassName for bound claims",
        ));
    }
    let new_storage = get(spec, "resources")
        .and_then(|r| get(r, "requests"))
        .and_then(|r| get(r, "storage"));
    let parse = |v: Option<&Value>| {
        v.and_then(Value::as_str)
            .and_then(|t| crate::quantity::parse_quantity(t).ok())
    };
    if let (Some(n), Some(o_)) = (parse(new_storage), parse(old_storage.as_ref()))
        && n < o_
    {
        let capacity = get(old, "status")
            .and_then(|st| get(st, "capacity"))
            .and_then(|c| get(c, "storage"));
        if parse(capacity).is_some_and(|c| n <= c) {
            errs.push(FieldError::forbidden(
                "spec.resources.requests.storage",
                "field can not be less than status.capacity",
            ));
        }
    }
    immutable(
        "volumeMode".into(),
        get(spec, "volumeMode"),
        get(old_spec, "volumeMode"),
        errs,
    );
}

/// Volume sources a PersistentVolume may use.
const PV_SOURCES: &[&str] = &[
    "hostPath",
    "gcePersistentDisk",
    "awsElasticBlockStore",
    "glusterfs",
    "flocker",
    "nfs",
    "rbd",
    "quobyte",
    "cephfs",
    "iscsi",
    "cinder",
    "fc",
    "flexVolume",
    "azureFile",
    "vsphereVolume",
    "photonPersistentDisk",
    "portworxVolume",
    "azureDisk",
    "scaleIO",
    "local",
    "storageos",
    "csi",
];

pub(crate) fn persistent_volume(o: &Value, old: Option<&Value>, errs: &mut Vec<FieldError>) {
    object_meta(o, false, names::dns1123_subdomain, errs);
    let null = Value::Null;
    let spec = get(o, "spec").unwrap_or(&null);
    access_modes(spec, "spec", "", errs);
    let cap = obj(spec, "capacity");
    match cap {
        None => errs.push(FieldError::required("spec.capacity", "")),
        Some(c) if c.is_empty() => errs.push(FieldError::required("spec.capacity", "")),
        _ => {}
    }
    if let Some(c) = cap {
        if !c.contains_key("storage") || c.len() > 1 {
            let keys: Vec<String> = c.keys().cloned().collect();
            errs.push(FieldError::not_supported(
                "spec.capacity",
                format!("{keys:?}"),
                &["storage"],
            ));
        }
        for (r, v) in c {
            let p = key("spec.capacity", r);
            if let Some(q) = quantity(v, &p, errs)
                && q.nanos() <= 0
            {
                errs.push(FieldError::invalid(
                    p,
                    quote(&q.to_string()),
                    "must be greater than zero",
                ));
            }
        }
    }
    if let Some(p) = opt_str(spec, "persistentVolumeReclaimPolicy")
        && !p.is_empty()
        && !["Delete", "Recycle", "Retain"].contains(&p)
    {
        errs.push(FieldError::not_supported(
            "spec.persistentVolumeReclaimPolicy",
            quote(p),
            &["Delete", "Recycle", "Retain"],
        ));
    }
    storage_class_and_mode(spec, "spec", errs);
    let mut count = 0;
    for src in PV_SOURCES {
        let Some(sv) = get(spec, src) else { continue };
        let sp = child("spec", src);
        if count > 0 {
            errs.push(FieldError::forbidden(
                sp,
                "may not specify more than 1 volume type",
            ));
            continue;
        }
        count += 1;
        match *src {
            "hostPath" | "local" => {
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
                if *src == "local" && get(spec, "nodeAffinity").is_none() {
                    errs.push(FieldError::required(
                        "spec.nodeAffinity",
                        "Local volume requires node affinity",
                    ));
                }
                if *src == "hostPath"
                    && p.trim_end_matches('/').is_empty()
                    && !p.is_empty()
                    && s(spec, "persistentVolumeReclaimPolicy") == "Recycle"
                {
                    errs.push(FieldError::forbidden(
                        "spec.persistentVolumeReclaimPolicy",
                        "may not be 'recycle' for a hostPath mount of '/'",
                    ));
                }
            }
            "nfs" => nfs_source(sv, &sp, errs),
            "csi" => {
                if s(sv, "driver").is_empty() {
                    errs.push(FieldError::required(child(&sp, "driver"), ""));
                }
                if s(sv, "volumeHandle").is_empty() {
                    errs.push(FieldError::required(child(&sp, "volumeHandle"), ""));
                }
            }
            _ => {}
        }
    }
    if count == 0 {
        errs.push(FieldError::required("spec", "must specify a volume type"));
    }
    if let Some(old) = old {
        let old_spec = get(old, "spec").unwrap_or(&null);
        let source = |sp: &Value| -> Vec<(String, Value)> {
            PV_SOURCES
                .iter()
                .filter_map(|k| get(sp, k).map(|v| (k.to_string(), v.clone())))
                .collect()
        };
        if source(spec) != source(old_spec) {
            errs.push(FieldError::forbidden(
                "spec.persistentvolumesource",
                "spec.persistentvolumesource is immutable after creation",
            ));
        }
        immutable(
            "volumeMode".into(),
            get(spec, "volumeMode"),
            get(old_spec, "volumeMode"),
            errs,
        );
        if get(old_spec, "nodeAffinity").is_some() {
            immutable(
                "nodeAffinity".into(),
                get(spec, "nodeAffinity"),
                get(old_spec, "nodeAffinity"),
                errs,
            );
        }
    }
}
