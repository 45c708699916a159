//! A built-in table of patch metadata for the common built-in types (fallback to the OpenAPI-derived schema).

use super::{PatchMeta, PatchMetaLookup};

pub(crate) const OBJECT_META: &str = "io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta";
pub(crate) const LABEL_SELECTOR: &str = "io.k8s.apimachinery.pkg.apis.meta.v1.LabelSelector";

macro_rules! core {
    ($t:literal) => {
        concat!("io.k8s.api.core.v1.", $t)
    };
}
macro_rules! apps {
    ($t:literal) => {
        concat!("io.k8s.api.apps.v1.", $t)
    };
}
macro_rules! batch {
    ($t:literal) => {
        concat!("io.k8s.api.batch.v1.", $t)
    };
}
macro_rules! meta {
    ($t:literal) => {
        concat!("io.k8s.apimachinery.pkg.apis.meta.v1.", $t)
    };
}

/// (parent type, field, type of the field or of its elements).
#[rustfmt::skip]
static FIELD_TYPES: &[(&str, &str, &str)] = &[
    // workloads
    (apps!("Deployment"), "spec", apps!("DeploymentSpec")),
    (apps!("Deployment"), "status", apps!("DeploymentStatus")),
    (apps!("DeploymentSpec"), "template", core!("PodTemplateSpec")),
    (apps!("DeploymentSpec"), "selector", meta!("LabelSelector")),
    (apps!("DeploymentSpec"), "strategy", apps!("DeploymentStrategy")),
    (apps!("DeploymentStrategy"), "rollingUpdate", apps!("RollingUpdateDeployment")),
    (apps!("DeploymentStatus"), "conditions", apps!("DeploymentCondition")),
    (apps!("ReplicaSet"), "spec", apps!("ReplicaSetSpec")),
    (apps!("ReplicaSet"), "status", apps!("ReplicaSetStatus")),
    (apps!("ReplicaSetSpec"), "template", core!("PodTemplateSpec")),
    (apps!("ReplicaSetSpec"), "selector", meta!("LabelSelector")),
    (apps!("ReplicaSetStatus"), "conditions", apps!("ReplicaSetCondition")),
    (apps!("StatefulSet"), "spec", apps!("StatefulSetSpec")),
    (apps!("StatefulSet"), "status", apps!("StatefulSetStatus")),
    (apps!("StatefulSetSpec"), "template", core!("PodTemplateSpec")),
    (apps!("StatefulSetSpec"), "selector", meta!("LabelSelector")),
    (apps!("StatefulSetSpec"), "volumeClaimTemplates", core!("PersistentVolumeClaim")),
    (apps!("StatefulSetStatus"), "conditions", apps!("StatefulSetCondition")),
    (apps!("DaemonSet"), "spec", apps!("DaemonSetSpec")),
    (apps!("DaemonSet"), "status", apps!("DaemonSetStatus")),
    (apps!("DaemonSetSpec"), "template", core!("PodTemplateSpec")),
    (apps!("DaemonSetSpec"), "selector", meta!("LabelSelector")),
    (apps!("DaemonSetStatus"), "conditions", apps!("DaemonSetCondition")),
    (batch!("Job"), "spec", batch!("JobSpec")),
    (batch!("Job"), "status", batch!("JobStatus")),
    (batch!("JobSpec"), "template", core!("PodTemplateSpec")),
    (batch!("JobSpec"), "selector", meta!("LabelSelector")),
    (batch!("JobStatus"), "conditions", batch!("JobCondition")),
    (batch!("CronJob"), "spec", batch!("CronJobSpec")),
    (batch!("CronJobSpec"), "jobTemplate", batch!("JobTemplateSpec")),
    (batch!("JobTemplateSpec"), "spec", batch!("JobSpec")),
    // pods
    (core!("PodTemplateSpec"), "spec", core!("PodSpec")),
    (core!("Pod"), "spec", core!("PodSpec")),
    (core!("Pod"), "status", core!("PodStatus")),
    (core!("PodSpec"), "containers", core!("Container")),
    (core!("PodSpec"), "initContainers", core!("Container")),
    (core!("PodSpec"), "ephemeralContainers", core!("EphemeralContainer")),
    (core!("PodSpec"), "volumes", core!("Volume")),
    (core!("PodSpec"), "imagePullSecrets", core!("LocalObjectReference")),
    (core!("PodSpec"), "hostAliases", core!("HostAlias")),
    (core!("PodSpec"), "tolerations", core!("Toleration")),
    (core!("PodSpec"), "topologySpreadConstraints", core!("TopologySpreadConstraint")),
    (core!("PodSpec"), "schedulingGates", core!("PodSchedulingGate")),
    (core!("PodSpec"), "resourceClaims", core!("PodResourceClaim")),
    (core!("PodSpec"), "securityContext", core!("PodSecurityContext")),
    (core!("PodSpec"), "affinity", core!("Affinity")),
    (core!("Container"), "ports", core!("ContainerPort")),
    (core!("Container"), "env", core!("EnvVar")),
    (core!("Container"), "envFrom", core!("EnvFromSource")),
    (core!("Container"), "volumeMounts", core!("VolumeMount")),
    (core!("Container"), "volumeDevices", core!("VolumeDevice")),
    (core!("Container"), "resources", core!("ResourceRequirements")),
    (core!("Container"), "livenessProbe", core!("Probe")),
    (core!("Container"), "readinessProbe", core!("Probe")),
    (core!("Container"), "startupProbe", core!("Probe")),
    (core!("Container"), "securityContext", core!("SecurityContext")),
    (core!("EphemeralContainer"), "ports", core!("ContainerPort")),
    (core!("EphemeralContainer"), "env", core!("EnvVar")),
    (core!("EphemeralContainer"), "envFrom", core!("EnvFromSource")),
    (core!("EphemeralContainer"), "volumeMounts", core!("VolumeMount")),
    (core!("EphemeralContainer"), "volumeDevices", core!("VolumeDevice")),
    (core!("EphemeralContainer"), "resources", core!("ResourceRequirements")),
    (core!("PodStatus"), "conditions", core!("PodCondition")),
    (core!("PodStatus"), "containerStatuses", core!("ContainerStatus")),
    (core!("PodStatus"), "initContainerStatuses", core!("ContainerStatus")),
    (core!("PodStatus"), "podIPs", core!("PodIP")),
    (core!("PodStatus"), "hostIPs", core!("HostIP")),
    // services and friends
    (core!("Service"), "spec", core!("ServiceSpec")),
    (core!("Service"), "status", core!("ServiceStatus")),
    (core!("ServiceSpec"), "ports", core!("ServicePort")),
    (core!("ServiceStatus"), "conditions", meta!("Condition")),
    (core!("Node"), "spec", core!("NodeSpec")),
    (core!("Node"), "status", core!("NodeStatus")),
    (core!("NodeSpec"), "taints", core!("Taint")),
    (core!("NodeStatus"), "conditions", core!("NodeCondition")),
    (core!("NodeStatus"), "addresses", core!("NodeAddress")),
    (core!("Namespace"), "status", core!("NamespaceStatus")),
    (core!("NamespaceStatus"), "conditions", core!("NamespaceCondition")),
    (core!("PersistentVolumeClaim"), "spec", core!("PersistentVolumeClaimSpec")),
    (core!("PersistentVolumeClaimSpec"), "selector", meta!("LabelSelector")),
    // object metadata
    (meta!("ObjectMeta"), "ownerReferences", meta!("OwnerReference")),
    (meta!("ObjectMeta"), "managedFields", meta!("ManagedFieldsEntry")),
];

/// (parent type, field, patch strategy, merge key).
#[rustfmt::skip]
static PATCH_META: &[(&str, &str, &str, Option<&str>)] = &[
    (meta!("ObjectMeta"), "finalizers", "merge", None),
    (meta!("ObjectMeta"), "ownerReferences", "merge", Some("uid")),
    (apps!("DeploymentSpec"), "strategy", "retainKeys", None),
    (apps!("DeploymentStatus"), "conditions", "merge", Some("type")),
    (apps!("ReplicaSetStatus"), "conditions", "merge", Some("type")),
    (apps!("StatefulSetStatus"), "conditions", "merge", Some("type")),
    (apps!("DaemonSetStatus"), "conditions", "merge", Some("type")),
    (batch!("JobStatus"), "conditions", "merge", Some("type")),
    (core!("PodSpec"), "volumes", "merge,retainKeys", Some("name")),
    (core!("PodSpec"), "containers", "merge", Some("name")),
    (core!("PodSpec"), "initContainers", "merge", Some("name")),
    (core!("PodSpec"), "ephemeralContainers", "merge", Some("name")),
    (core!("PodSpec"), "imagePullSecrets", "merge", Some("name")),
    (core!("PodSpec"), "hostAliases", "merge", Some("ip")),
    (core!("PodSpec"), "topologySpreadConstraints", "merge", Some("topologyKey")),
    (core!("PodSpec"), "schedulingGates", "merge", Some("name")),
    (core!("PodSpec"), "resourceClaims", "merge,retainKeys", Some("name")),
    (core!("Container"), "ports", "merge", Some("containerPort")),
    (core!("Container"), "env", "merge", Some("name")),
    (core!("Container"), "volumeMounts", "merge", Some("mountPath")),
    (core!("Container"), "volumeDevices", "merge", Some("devicePath")),
    (core!("EphemeralContainer"), "ports", "merge", Some("containerPort")),
    (core!("EphemeralContainer"), "env", "merge", Some("name")),
    (core!("EphemeralContainer"), "volumeMounts", "merge", Some("mountPath")),
    (core!("EphemeralContainer"), "volumeDevices", "merge", Some("devicePath")),
    (core!("PodStatus"), "conditions", "merge", Some("type")),
    (core!("PodStatus"), "podIPs", "merge", Some("ip")),
    (core!("PodStatus"), "hostIPs", "merge", Some("ip")),
    (core!("ServiceSpec"), "ports", "merge", Some("port")),
    (core!("ServiceStatus"), "conditions", "merge", Some("type")),
    (core!("NodeSpec"), "podCIDRs", "merge", None),
    (core!("NodeStatus"), "conditions", "merge", Some("type")),
    (core!("NodeStatus"), "addresses", "merge", Some("type")),
    (core!("NamespaceStatus"), "conditions", "merge", Some("type")),
];

/// Maps that server-side apply treats as one value (`x-kubernetes-map-type: atomic` on the field).
#[rustfmt::skip]
static ATOMIC_MAPS: &[(&str, &str)] = &[(core!("PodSpec"), "nodeSelector"), (core!("ServiceSpec"), "selector")];

/// Patch metadata for Deployments, ReplicaSets, StatefulSets, DaemonSets, Jobs,
/// CronJobs, Pods, Services, ConfigMaps, Nodes and object metadata, written
/// after the Kubernetes API types' struct tags.
#[derive(Debug, Clone, Copy, Default)]
pub struct BuiltinTable;

impl PatchMetaLookup for BuiltinTable {
    fn patch_meta(&self, schema: &str, field: &str) -> Option<PatchMeta> {
        PATCH_META
            .iter()
            .find(|(p, f, _, _)| *f == field && *p == schema)
            .map(|(_, _, strategy, merge_key)| PatchMeta {
                strategy,
                merge_key: *merge_key,
            })
    }

    fn field_schema(&self, schema: &str, field: &str) -> Option<&'static str> {
        if field == "metadata" && schema != OBJECT_META {
            // Every top-level kind and every template has object metadata here.
            return Some(OBJECT_META);
        }
        FIELD_TYPES
            .iter()
            .find(|(p, f, _)| *f == field && *p == schema)
            .map(|(_, _, t)| *t)
    }

    fn is_atomic_map(&self, schema: &str, field: &str) -> bool {
        ATOMIC_MAPS.iter().any(|(p, f)| *f == field && *p == schema)
            || self.field_schema(schema, field) == Some(LABEL_SELECTOR)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deployment_paths_resolve() {
        let t = BuiltinTable;
        let spec = t
            .field_schema("io.k8s.api.apps.v1.Deployment", "spec")
            .unwrap();
        assert_eq!(spec, "io.k8s.api.apps.v1.DeploymentSpec");
        let tmpl = t.field_schema(spec, "template").unwrap();
        let pod = t.field_schema(tmpl, "spec").unwrap();
        assert_eq!(pod, "io.k8s.api.core.v1.PodSpec");
        assert_eq!(
            t.field_schema(pod, "containers"),
            Some("io.k8s.api.core.v1.Container")
        );
        assert_eq!(
            t.patch_meta(pod, "containers").unwrap().merge_key,
            Some("name")
        );
        assert_eq!(t.field_schema(tmpl, "metadata"), Some(OBJECT_META));
        assert_eq!(
            t.patch_meta(OBJECT_META, "finalizers").unwrap().strategy,
            "merge"
        );
        assert!(t.is_atomic_map(spec, "selector"));
        assert!(!t.is_atomic_map(OBJECT_META, "labels"));
        assert_eq!(
            t.list_map_keys("io.k8s.api.core.v1.Container", "ports"),
            vec!["containerPort", "protocol"]
        );
    }
}
