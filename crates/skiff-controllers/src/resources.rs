//! Shared plumbing for controllers: registry resources as kube-rs dynamic APIs, and the error type.

use skiff_api::registry::{RESOURCES, ResourceDef, split_api_version};
use skiff_client::Client;
use skiff_client::kube::api::{Api, ApiResource, DynamicObject};

/// Why one reconcile step failed; the step is retried later.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("API request failed: {0}")]
    Kube(#[from] skiff_client::kube::Error),
    #[error("{0}")]
    Invalid(String),
}

/// The kube-rs description of a served resource, for `Api<DynamicObject>`.
pub fn api_resource(def: &ResourceDef) -> ApiResource {
    ApiResource {
        group: def.group.to_string(),
        version: def.version.to_string(),
        api_version: def.api_version(),
        kind: def.kind.to_string(),
        plural: def.plural.to_string(),
    }
}

/// A dynamic API for `def`, scoped to `namespace` when the resource is namespaced.
pub fn dynamic_api(
    client: &Client,
    def: &ResourceDef,
    namespace: Option<&str>,
) -> Api<DynamicObject> {
    let ar = api_resource(def);
    match (def.namespaced, namespace) {
        (true, Some(ns)) => Api::namespaced_with(client.clone(), ns, &ar),
        _ => Api::all_with(client.clone(), &ar),
    }
}

/// The resource an ownerReference points at. Matches group and kind and prefers the exact
/// version, because an owner may be referenced through any served version of its kind.
pub fn resolve_kind(api_version: &str, kind: &str) -> Option<&'static ResourceDef> {
    let (group, version) = split_api_version(api_version);
    let mut same_kind = RESOURCES
        .iter()
        .filter(|r| r.group == group && r.kind == kind);
    let first = same_kind.next()?;
    if first.version == version {
        return Some(first);
    }
    same_kind.find(|r| r.version == version).or(Some(first))
}

/// The HTTP status code of an API error answer, if the error is one.
pub fn status_code(err: &skiff_client::kube::Error) -> Option<u16> {
    match err {
        skiff_client::kube::Error::Api(status) => Some(status.code),
        _ => None,
    }
}

pub fn is_not_found(err: &skiff_client::kube::Error) -> bool {
    status_code(err) == Some(404)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolves_owner_kinds() {
        let rs = resolve_kind("apps/v1", "ReplicaSet").map(|d| d.plural);
        assert_eq!(rs, Some("replicasets"));
        let cm = resolve_kind("v1", "ConfigMap").map(|d| d.plural);
        assert_eq!(cm, Some("configmaps"));
        // Another version of a known kind still finds the kind (the uid decides identity).
        let old = resolve_kind("apps/v1beta1", "Deployment").map(|d| d.plural);
        assert_eq!(old, Some("deployments"));
        // The same kind in two groups must not be confused.
        let ev = resolve_kind("events.k8s.io/v1", "Event").map(|d| d.group);
        assert_eq!(ev, Some("events.k8s.io"));
        assert!(resolve_kind("example.com/v1", "Widget").is_none());
    }

    #[test]
    fn api_resource_uses_core_api_version() {
        let ar = api_resource(resolve_kind("v1", "Pod").expect("pods are served"));
        assert_eq!(ar.api_version, "v1");
        assert_eq!(ar.group, "");
        assert_eq!(ar.plural, "pods");
    }
}
