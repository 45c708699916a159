//! The resource registry: every API resource skiff serves, with its group, version, kind and scope.

/// One served resource (what discovery lists and what the URL path names).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResourceDef {
    /// API group; "" is the legacy core group served under `/api/v1`.
    pub group: &'static str,
    pub version: &'static str,
    pub kind: &'static str,
    /// Plural, lower-case resource name used in URLs (`deployments`).
    pub plural: &'static str,
    pub singular: &'static str,
    pub short_names: &'static [&'static str],
    pub namespaced: bool,
    /// Has a `/status` subresource: the main resource ignores status changes,
    /// and `/status` changes only status.
    pub status: bool,
    /// Has a `/scale` subresource (autoscaling/v1 Scale).
    pub scale: bool,
    pub categories: &'static [&'static str],
    /// Fully qualified Rust type name of the k8s-openapi type, as its schemars
    /// schema name (e.g. `io.k8s.api.apps.v1.Deployment`).
    pub schema_name: &'static str,
}

impl ResourceDef {
    /// `apps/v1`, or `v1` for the core group.
    pub fn api_version(&self) -> String {
        if self.group.is_empty() {
            self.version.to_string()
        } else {
            format!("{}/{}", self.group, self.version)
        }
    }

    pub fn list_kind(&self) -> String {
        format!("{}List", self.kind)
    }

    /// The store key prefix for all objects of this resource (ends with `/`).
    pub fn key_prefix(&self) -> String {
        if self.group.is_empty() {
            format!("/registry/{}/", self.plural)
        } else {
            format!("/registry/{}/{}/", self.group, self.plural)
        }
    }

    /// The store key for one object. `namespace` is ignored for cluster-scoped resources.
    pub fn key(&self, namespace: Option<&str>, name: &str) -> String {
        match (self.namespaced, namespace) {
            (true, Some(ns)) => format!("{}{}/{}", self.key_prefix(), ns, name),
            _ => format!("{}{}", self.key_prefix(), name),
        }
    }

    /// The store key prefix of one namespace's objects (ends with `/`).
    pub fn namespace_prefix(&self, namespace: &str) -> String {
        format!("{}{}/", self.key_prefix(), namespace)
    }

    /// Verbs as discovery lists them.
    pub fn verbs(&self) -> &'static [&'static str] {
        &[
            "create",
            "delete",
            "deletecollection",
            "get",
            "list",
            "patch",
            "update",
            "watch",
        ]
    }
}

macro_rules! res {
    ($group:expr, $version:expr, $kind:expr, $plural:expr, $singular:expr, [$($short:expr),*], ns=$ns:expr, status=$status:expr, scale=$scale:expr, [$($cat:expr),*], $schema:expr) => {
        ResourceDef {
            group: $group,
            version: $version,
            kind: $kind,
            plural: $plural,
            singular: $singular,
            short_names: &[$($short),*],
            namespaced: $ns,
            status: $status,
            scale: $scale,
            categories: &[$($cat),*],
            schema_name: $schema,
        }
    };
}

/// Every built-in resource, in discovery order.
pub static RESOURCES: &[ResourceDef] = &[
    res!(
        "",
        "v1",
        "Namespace",
        "namespaces",
        "namespace",
        ["ns"],
        ns = false,
        status = true,
        scale = false,
        [],
        "io.k8s.api.core.v1.Namespace"
    ),
    res!(
        "",
        "v1",
        "Pod",
        "pods",
        "pod",
        ["po"],
        ns = true,
        status = true,
        scale = false,
        ["all"],
        "io.k8s.api.core.v1.Pod"
    ),
    res!(
        "",
        "v1",
        "Service",
        "services",
        "service",
        ["svc"],
        ns = true,
        status = true,
        scale = false,
        ["all"],
        "io.k8s.api.core.v1.Service"
    ),
    res!(
        "",
        "v1",
        "Endpoints",
        "endpoints",
        "endpoints",
        ["ep"],
        ns = true,
        status = false,
        scale = false,
        [],
        "io.k8s.api.core.v1.Endpoints"
    ),
    res!(
        "",
        "v1",
        "ConfigMap",
        "configmaps",
        "configmap",
        ["cm"],
        ns = true,
        status = false,
        scale = false,
        [],
        "io.k8s.api.core.v1.ConfigMap"
    ),
    res!(
        "",
        "v1",
        "Secret",
        "secrets",
        "secret",
        [],
        ns = true,
        status = false,
        scale = false,
        [],
        "io.k8s.api.core.v1.Secret"
    ),
    res!(
        "",
        "v1",
        "Node",
        "nodes",
        "node",
        ["no"],
        ns = false,
        status = true,
        scale = false,
        [],
        "io.k8s.api.core.v1.Node"
    ),
    res!(
        "",
        "v1",
        "Event",
        "events",
        "event",
        ["ev"],
        ns = true,
        status = false,
        scale = false,
        [],
        "io.k8s.api.core.v1.Event"
    ),
    res!(
        "",
        "v1",
        "ServiceAccount",
        "serviceaccounts",
        "serviceaccount",
        ["sa"],
        ns = true,
        status = false,
        scale = false,
        [],
        "io.k8s.api.core.v1.ServiceAccount"
    ),
    res!(
        "",
        "v1",
        "PersistentVolume",
        "persistentvolumes",
        "persistentvolume",
        ["pv"],
        ns = false,
        status = true,
        scale = false,
        [],
        "io.k8s.api.core.v1.PersistentVolume"
    ),
    res!(
        "",
        "v1",
        "PersistentVolumeClaim",
        "persistentvolumeclaims",
        "persistentvolumeclaim",
        ["pvc"],
        ns = true,
        status = true,
        scale = false,
        [],
        "io.k8s.api.core.v1.PersistentVolumeClaim"
    ),
    res!(
        "apps",
        "v1",
        "Deployment",
        "deployments",
        "deployment",
        ["deploy"],
        ns = true,
        status = true,
        scale = true,
        ["all"],
        "io.k8s.api.apps.v1.Deployment"
    ),
    res!(
        "apps",
        "v1",
        "ReplicaSet",
        "replicasets",
        "replicaset",
        ["rs"],
        ns = true,
        status = true,
        scale = true,
        ["all"],
        "io.k8s.api.apps.v1.ReplicaSet"
    ),
    res!(
        "apps",
        "v1",
        "StatefulSet",
        "statefulsets",
        "statefulset",
        ["sts"],
        ns = true,
        status = true,
        scale = true,
        ["all"],
        "io.k8s.api.apps.v1.StatefulSet"
    ),
    res!(
        "apps",
        "v1",
        "DaemonSet",
        "daemonsets",
        "daemonset",
        ["ds"],
        ns = true,
        status = true,
        scale = false,
        ["all"],
        "io.k8s.api.apps.v1.DaemonSet"
    ),
    res!(
        "apps",
        "v1",
        "ControllerRevision",
        "controllerrevisions",
        "controllerrevision",
        [],
        ns = true,
        status = false,
        scale = false,
        [],
        "io.k8s.api.apps.v1.ControllerRevision"
    ),
    res!(
        "batch",
        "v1",
        "Job",
        "jobs",
        "job",
        [],
        ns = true,
        status = true,
        scale = false,
        ["all"],
        "io.k8s.api.batch.v1.Job"
    ),
    res!(
        "batch",
        "v1",
        "CronJob",
        "cronjobs",
        "cronjob",
        ["cj"],
        ns = true,
        status = true,
        scale = false,
        ["all"],
        "io.k8s.api.batch.v1.CronJob"
    ),
    res!(
        "autoscaling",
        "v2",
        "HorizontalPodAutoscaler",
        "horizontalpodautoscalers",
        "horizontalpodautoscaler",
        ["hpa"],
        ns = true,
        status = true,
        scale = false,
        ["all"],
        "io.k8s.api.autoscaling.v2.HorizontalPodAutoscaler"
    ),
    res!(
        "coordination.k8s.io",
        "v1",
        "Lease",
        "leases",
        "lease",
        [],
        ns = true,
        status = false,
        scale = false,
        [],
        "io.k8s.api.coordination.v1.Lease"
    ),
    res!(
        "discovery.k8s.io",
        "v1",
        "EndpointSlice",
        "endpointslices",
        "endpointslice",
        [],
        ns = true,
        status = false,
        scale = false,
        [],
        "io.k8s.api.discovery.v1.EndpointSlice"
    ),
    res!(
        "events.k8s.io",
        "v1",
        "Event",
        "events",
        "event",
        ["ev"],
        ns = true,
        status = false,
        scale = false,
        [],
        "io.k8s.api.events.v1.Event"
    ),
];

/// Group versions in discovery order: (group, version), core first.
pub fn group_versions() -> Vec<(&'static str, &'static str)> {
    let mut out: Vec<(&'static str, &'static str)> = Vec::new();
    for r in RESOURCES {
        if !out.contains(&(r.group, r.version)) {
            out.push((r.group, r.version));
        }
    }
    out
}

/// The resource served at `group/version/plural`.
pub fn lookup(group: &str, version: &str, plural: &str) -> Option<&'static ResourceDef> {
    RESOURCES
        .iter()
        .find(|r| r.group == group && r.version == version && r.plural == plural)
}

/// The resource for an object's `apiVersion` and `kind`.
pub fn lookup_kind(api_version: &str, kind: &str) -> Option<&'static ResourceDef> {
    let (group, version) = split_api_version(api_version);
    RESOURCES
        .iter()
        .find(|r| r.group == group && r.version == version && r.kind == kind)
}

/// Splits `apps/v1` into (`apps`, `v1`) and `v1` into (``, `v1`).
pub fn split_api_version(api_version: &str) -> (&str, &str) {
    match api_version.split_once('/') {
        Some((g, v)) => (g, v),
        None => ("", api_version),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_unique_and_prefixes_do_not_nest() {
        let prefixes: Vec<String> = RESOURCES.iter().map(|r| r.key_prefix()).collect();
        for (i, a) in prefixes.iter().enumerate() {
            for (j, b) in prefixes.iter().enumerate() {
                if i != j {
                    assert!(!a.starts_with(b.as_str()), "{a} nests in {b}");
                }
            }
        }
    }

    #[test]
    fn lookups() {
        let d = lookup("apps", "v1", "deployments").unwrap();
        assert_eq!(d.kind, "Deployment");
        assert_eq!(
            d.key(Some("default"), "web"),
            "/registry/apps/deployments/default/web"
        );
        assert_eq!(lookup_kind("v1", "Pod").unwrap().plural, "pods");
        assert_eq!(
            lookup_kind("events.k8s.io/v1", "Event")
                .unwrap()
                .key_prefix(),
            "/registry/events.k8s.io/events/"
        );
    }
}
