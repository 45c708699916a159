//! Discovery (legacy and aggregated), `/version` and the OpenAPI documents.

use crate::ApiServer;
use crate::response;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::Response;
use serde_json::{Value, json};
use skiff_api::registry::{self, RESOURCES, ResourceDef};
use skiff_api::{ApiError, openapi};
use std::sync::Arc;

const AGGREGATED_V2: &str = "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList";
const AGGREGATED_V2BETA1: &str =
    "application/json;g=apidiscovery.k8s.io;v=v2beta1;as=APIGroupDiscoveryList";

pub async fn version() -> Response {
    response::json(
        StatusCode::OK,
        &json!({
            "major": skiff_api::KUBE_MAJOR,
            "minor": skiff_api::KUBE_MINOR,
            "gitVersion": skiff_api::KUBE_GIT_VERSION,
            "gitCommit": env!("CARGO_PKG_VERSION"),
            "gitTreeState": "clean",
            "buildDate": "2026-01-01T00:00:00Z",
            "goVersion": "rust",
            "compiler": "rustc",
            "platform": format!("{}/{}", std::env::consts::OS, goarch()),
        }),
    )
}

fn goarch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        other => other,
    }
}

/// Which aggregated discovery version the client asked for, if any.
fn aggregated(headers: &HeaderMap) -> Option<&'static str> {
    let accept = headers.get(header::ACCEPT)?.to_str().ok()?;
    for part in accept.split(',') {
        let p = part.replace(' ', "");
        if p.contains("as=APIGroupDiscoveryList") && p.contains("g=apidiscovery.k8s.io") {
            if p.contains("v=v2beta1") {
                return Some("v2beta1");
            }
            if p.contains("v=v2") {
                return Some("v2");
            }
        }
    }
    None
}

pub async fn api_versions(State(api): State<Arc<ApiServer>>, headers: HeaderMap) -> Response {
    if let Some(v) = aggregated(&headers) {
        return aggregated_list(v, true);
    }
    response::json(
        StatusCode::OK,
        &json!({
            "kind": "APIVersions",
            "versions": ["v1"],
            "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": api.config.advertise_address}],
        }),
    )
}

fn groups() -> Vec<(&'static str, Vec<&'static str>)> {
    let mut out: Vec<(&'static str, Vec<&'static str>)> = Vec::new();
    for (g, v) in registry::group_versions() {
        if g.is_empty() {
            continue;
        }
        match out.iter_mut().find(|(name, _)| *name == g) {
            Some((_, vs)) => vs.push(v),
            None => out.push((g, vec![v])),
        }
    }
    out
}

fn group_json(name: &str, versions: &[&str]) -> Value {
    let vs: Vec<Value> = versions
        .iter()
        .map(|v| json!({"groupVersion": format!("{name}/{v}"), "version": v}))
        .collect();
    json!({
        "name": name,
        "versions": vs,
        "preferredVersion": {"groupVersion": format!("{name}/{}", versions[0]), "version": versions[0]},
    })
}

pub async fn api_groups(headers: HeaderMap) -> Response {
    if let Some(v) = aggregated(&headers) {
        return aggregated_list(v, false);
    }
    let gs: Vec<Value> = groups().iter().map(|(n, vs)| group_json(n, vs)).collect();
    response::json(
        StatusCode::OK,
        &json!({"kind": "APIGroupList", "apiVersion": "v1", "groups": gs}),
    )
}

/// `GET /apis/<group>`.
pub fn group(name: &str) -> Result<Response, ApiError> {
    let (n, vs) = groups()
        .into_iter()
        .find(|(n, _)| *n == name)
        .ok_or(ApiError::NoRoute)?;
    let mut g = group_json(n, &vs);
    g["kind"] = json!("APIGroup");
    g["apiVersion"] = json!("v1");
    Ok(response::json(StatusCode::OK, &g))
}

fn resources_of(group: &str, version: &str) -> impl Iterator<Item = &'static ResourceDef> {
    RESOURCES
        .iter()
        .filter(move |r| r.group == group && r.version == version)
}

fn storage_version_hash(r: &ResourceDef) -> String {
    use base64::Engine;
    use sha2::Digest;
    let d = sha2::Sha256::digest(format!("{}/{}/{}", r.group, r.version, r.kind));
    base64::engine::general_purpose::STANDARD.encode(&d[..8])
}

/// `GET /api/v1` or `/apis/<group>/<version>`: the APIResourceList.
pub fn resource_list(group: &str, version: &str) -> Response {
    let mut list = Vec::new();
    for r in resources_of(group, version) {
        let mut e = json!({
            "name": r.plural,
            "singularName": r.singular,
            "namespaced": r.namespaced,
            "kind": r.kind,
            "verbs": r.verbs(),
            "storageVersionHash": storage_version_hash(r),
        });
        if !r.short_names.is_empty() {
            e["shortNames"] = json!(r.short_names);
        }
        if !r.categories.is_empty() {
            e["categories"] = json!(r.categories);
        }
        list.push(e);
        for (sub, kind, g, v) in subresources(r) {
            let mut s = json!({
                "name": format!("{}/{}", r.plural, sub),
                "singularName": "",
                "namespaced": r.namespaced,
                "kind": kind,
                "verbs": sub_verbs(sub),
            });
            if !g.is_empty() || v != r.version {
                s["group"] = json!(g);
                s["version"] = json!(v);
            }
            list.push(s);
        }
    }
    let gv = if group.is_empty() {
        version.to_string()
    } else {
        format!("{group}/{version}")
    };
    response::json(
        StatusCode::OK,
        &json!({"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": gv, "resources": list}),
    )
}

/// Subresources of a resource: (name, kind, group, version).
fn subresources(r: &ResourceDef) -> Vec<(&'static str, &'static str, &'static str, &'static str)> {
    let mut out = Vec::new();
    if r.status {
        out.push(("status", r.kind, r.group, r.version));
    }
    if r.scale {
        out.push(("scale", "Scale", "autoscaling", "v1"));
    }
    if r.kind == "Namespace" {
        out.push(("finalize", "Namespace", "", "v1"));
    }
    if r.kind == "Pod" {
        out.push(("binding", "Binding", "", "v1"));
        out.push(("eviction", "Eviction", "policy", "v1"));
        out.push(("log", "Pod", "", "v1"));
        out.push(("exec", "PodExecOptions", "", "v1"));
        out.push(("attach", "PodAttachOptions", "", "v1"));
        out.push(("portforward", "PodPortForwardOptions", "", "v1"));
    }
    out
}

fn sub_verbs(sub: &str) -> Vec<&'static str> {
    match sub {
        "finalize" => vec!["update"],
        "binding" | "eviction" => vec!["create"],
        "log" => vec!["get"],
        "exec" | "attach" | "portforward" => vec!["create", "get"],
        _ => vec!["get", "patch", "update"],
    }
}

fn aggregated_list(version: &'static str, core: bool) -> Response {
    let mut items = Vec::new();
    let group_names: Vec<(&str, Vec<&str>)> = if core {
        vec![("", vec!["v1"])]
    } else {
        groups()
    };
    for (g, vs) in group_names {
        let versions: Vec<Value> = vs
            .iter()
            .map(|v| {
                let resources: Vec<Value> = resources_of(g, v)
                    .map(|r| {
                        let subs: Vec<Value> = subresources(r)
                            .into_iter()
                            .map(|(s, kind, sg, sv)| {
                                json!({
                                    "subresource": s,
                                    "responseKind": {"group": sg, "version": sv, "kind": kind},
                                    "verbs": sub_verbs(s),
                                })
                            })
                            .collect();
                        let mut e = json!({
                            "resource": r.plural,
                            "responseKind": {"group": r.group, "version": r.version, "kind": r.kind},
                            "scope": if r.namespaced { "Namespaced" } else { "Cluster" },
                            "singularResource": r.singular,
                            "verbs": r.verbs(),
                        });
                        if !r.short_names.is_empty() {
                            e["shortNames"] = json!(r.short_names);
                        }
                        if !r.categories.is_empty() {
                            e["categories"] = json!(r.categories);
                        }
                        if !subs.is_empty() {
                            e["subresources"] = json!(subs);
                        }
                        e
                    })
                    .collect();
                json!({"version": v, "resources": resources, "freshness": "Current"})
            })
            .collect();
        items.push(
            json!({"metadata": {"name": g, "creationTimestamp": null}, "versions": versions}),
        );
    }
    let ct = if version == "v2" {
        AGGREGATED_V2
    } else {
        AGGREGATED_V2BETA1
    };
    let body = json!({
        "kind": "APIGroupDiscoveryList",
        "apiVersion": format!("apidiscovery.k8s.io/{version}"),
        "metadata": {},
        "items": items,
    });
    response::bytes(
        StatusCode::OK,
        ct,
        serde_json::to_vec(&body).unwrap_or_default(),
    )
}

pub async fn openapi_v3_root() -> Response {
    response::json(StatusCode::OK, &openapi::v3_root())
}

pub async fn openapi_v3_doc(Path(path): Path<String>) -> Response {
    let parts: Vec<&str> = path.split('/').collect();
    let gv = match parts.as_slice() {
        ["api", v] => Some(("", *v)),
        ["apis", g, v] => Some((*g, *v)),
        _ => None,
    };
    match gv.and_then(|(g, v)| openapi::v3_group_version_bytes(g, v)) {
        Some(doc) => response::bytes(StatusCode::OK, "application/json", doc.as_ref().clone()),
        None => response::error(ApiError::NoRoute),
    }
}

pub async fn openapi_v2(headers: HeaderMap) -> Response {
    // kubectl asks for protobuf first; we only have JSON, and 406 makes it use v3.
    let accept = headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("application/json");
    let json_ok = accept.split(',').any(|a| {
        let m = a.split(';').next().unwrap_or_default().trim();
        matches!(m, "application/json" | "*/*" | "application/*")
    });
    if !json_ok {
        return response::error(ApiError::NotAcceptable {
            message: "only application/json is available for /openapi/v2".into(),
        });
    }
    response::bytes(
        StatusCode::OK,
        "application/json",
        openapi::v2().as_ref().clone(),
    )
}
