//! Field schemas of the built-in resources (k8s-openapi via schemars): strict field validation, type checks and patch metadata.
//!
//! The schemas are generated once from k8s-openapi, normalised to the form kube-apiserver publishes
//! (`#/components/schemas/<definition>` references, `allOf` around described references, the
//! strategic-merge and list-type extensions), and compiled into a compact tree that the per-write
//! checks walk without resolving references.

use crate::FieldError;
use crate::registry::{RESOURCES, ResourceDef};
use k8s_openapi::api::{
    admissionregistration, apps, authentication, authorization, autoscaling, batch, certificates,
    coordination, core, discovery, events, networking, node, policy, rbac, scheduling, storage,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1 as meta;
use schemars::generate::SchemaSettings;
use schemars::{JsonSchema, SchemaGenerator};
use serde_json::{Map, Value, json};
use std::collections::HashMap;
use std::fmt::Write as _;
use std::sync::LazyLock;

/// Prefix of every schema reference in the published documents.
pub const REF_PREFIX: &str = "#/components/schemas/";

pub(crate) const QUANTITY: &str = "io.k8s.apimachinery.pkg.api.resource.Quantity";
pub(crate) const INT_OR_STRING: &str = "io.k8s.apimachinery.pkg.util.intstr.IntOrString";
const LIST_META: &str = "io.k8s.apimachinery.pkg.apis.meta.v1.ListMeta";
/// The definition of PATCH request bodies (free-form: its shape depends on the patch type).
pub const PATCH: &str = "io.k8s.apimachinery.pkg.apis.meta.v1.Patch";

/// Strategic-merge-patch metadata of one list or map field (`patchStrategy`/`patchMergeKey` struct tags).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PatchMeta {
    /// `merge`, `retainKeys` or `merge,retainKeys`.
    pub strategy: &'static str,
    /// The key that identifies list items when merging (`name`, `containerPort`, ...).
    pub merge_key: Option<&'static str>,
}

/// What Kubernetes declares about one field's topology: strategic-merge tags and the
/// `+listType`/`+listMapKey`/`+mapType` markers that server-side apply uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FieldMeta {
    pub definition: &'static str,
    pub field: &'static str,
    pub patch_strategy: Option<&'static str>,
    pub patch_merge_key: Option<&'static str>,
    /// `atomic`, `set` or `map`.
    pub list_type: Option<&'static str>,
    pub list_map_keys: &'static [&'static str],
    /// `atomic` or `granular`.
    pub map_type: Option<&'static str>,
}

const fn fm(
    definition: &'static str,
    field: &'static str,
    patch_strategy: Option<&'static str>,
    patch_merge_key: Option<&'static str>,
    list_type: Option<&'static str>,
    list_map_keys: &'static [&'static str],
    map_type: Option<&'static str>,
) -> FieldMeta {
    FieldMeta {
        definition,
        field,
        patch_strategy,
        patch_merge_key,
        list_type,
        list_map_keys,
        map_type,
    }
}

/// Field metadata of the served types, transcribed from the struct tags and markers of
/// Kubernetes' `k8s.io/api` and `k8s.io/apimachinery` types (k8s-openapi does not carry them).
#[rustfmt::skip]
static FIELD_META: &[FieldMeta] = &[
    fm("io.k8s.api.discovery.v1.EndpointSlice", "endpoints", None, None, Some("atomic"), &[], None),
    fm("io.k8s.api.discovery.v1.EndpointSlice", "ports", None, None, Some("atomic"), &[], None),
    fm("io.k8s.api.discovery.v1.Endpoint", "addresses", None, None, Some("set"), &[], None),
    fm("io.k8s.api.discovery.v1.EndpointHints", "forZones", None, None, Some("atomic"), &[], None),
    fm("io.k8s.api.discovery.v1.EndpointHints", "forNodes", None, None, Some("atomic"), &[], None),
    fm("io.k8s.api.autoscaling.v2.HorizontalPodAutoscalerSpec", "metrics", None, None, Some("atomic"), &[], None),
    fm("io.k8s.api.autoscaling.v2.HPAScalingRules", "policies", None, None, Some("atomic"), &[], None),
    fm("io.k8s.api.autoscaling.v2.HorizontalPodAutoscalerStatus", "currentMetrics", None, None, Some("atomic"), &[], None),
    fm("io.k8s.api.autoscaling.v2.HorizontalPodAutoscalerStatus", "conditions", Some("merge"), Some("type"), Some("map"), &["type"], None),
    fm("io.k8s.api.apps.v1.StatefulSetSpec", "volumeClaimTemplates", None, None, Some("atomic"), &[], None),
    fm("io.k8s.api.apps.v1.StatefulSetStatus", "conditions", Some("merge"), Some("type"), Some("map"), &["type"], None),
    fm("io.k8s.api.apps.v1.DeploymentSpec", "strategy", Some("retainKeys"), None, None, &[], None),
    fm("io.k8s.api.apps.v1.DeploymentStatus", "conditions", Some("merge"), Some("type"), Some("map"), &["type"], None),
    fm("io.k8s.api.apps.v1.DaemonSetStatus", "conditions", Some("merge"), Some("type"), Some("map"), &["type"], None),
    fm("io.k8s.api.apps.v1.ReplicaSetStatus", "conditions", Some("merge"), Some("type"), Some("map"), &["type"], None),
    fm("io.k8s.api.batch.v1.PodFailurePolicyOnExitCodesRequirement", "values", None, None, Some("set"), &[], None),
    fm("io.k8s.api.batch.v1.PodFailurePolicyRule", "onPodConditions", None, None, Some("atomic"), &[], None),
    fm("io.k8s.api.batch.v1.PodFailurePolicy", "rules", None, None, Some("atomic"), &[], None),
    fm("io.k8s.api.batch.v1.SuccessPolicy", "rules", None, None, Some("atomic"), &[], None),
    fm("io.k8s.api.batch.v1.JobStatus", "conditions", Some("merge"), Some("type"), Some("atomic"), &[], None),
    fm("io.k8s.api.batch.v1.UncountedTerminatedPods", "succeeded", None, None, Some("set"), &[], None),
    fm("io.k8s.api.batch.v1.UncountedTerminatedPods", "failed", None, None, Some("set"), &[], None),
    fm("io.k8s.api.batch.v1.CronJobStatus", "active", None, None, Some("atomic"), &[], None),
    fm("io.k8s.api.core.v1.PersistentVolumeSpec", "accessModes", None, None, Some("atomic"), &[], None),
    fm("io.k8s.api.core.v1.PersistentVolumeSpec", "claimRef", None, None, None, &[], Some("granular")),
    fm("io.k8s.api.core.v1.PersistentVolumeSpec", "mountOptions", None, None, Some("atomic"), &[], None),
    fm("io.k8s.api.core.v1.PersistentVolumeClaimSpec", "accessModes", None, None, Some("atomic"), &[], None),
    fm("io.k8s.api.core.v1.PersistentVolumeClaimStatus", "accessModes", None, None, Some("atomic"), &[], None),
    fm("io.k8s.api.core.v1.PersistentVolumeClaimStatus", "conditions", Some("merge"), Some("type"), Some("map"), &["type"], None),
    fm("io.k8s.api.core.v1.PersistentVolumeClaimStatus", "allocatedResourceStatuses", None, None, None, &[], Some("granular")),
    fm("io.k8s.api.core.v1.RBDVolumeSource", "monitors", None, None, Some("atomic"), &[], None),
    fm("io.k8s.api.core.v1.RBDPersistentVolumeSource", "monitors", None, None, Some("atomic"), &[], None),
    fm("io.k8s.api.core.v1.CephFSVolumeSource", "monitors", None, None, Some("atomic"), &[], None),
    fm("io.k8s.api.core.v1.CephFSPersistentVolumeSource", "monitors", None, None, Some("atomic"), &[], None),
    fm("io.k8s.api.core.v1.SecretVolumeSource", "items", None, None, Some("atomic"), &[], None),
    fm("io.k8s.api.core.v1.SecretProjection", "items", None, None, Some("atomic"), &[], None),
    fm("io.k8s.api.core.v1.ISCSIVolumeSource", "portals", None, None, Some("atomic"), &[], None),
    fm("io.k8s.api.core.v1.ISCSIPersistentVolumeSource", "portals", None, None, Some("atomic"), &[], None),
    fm("io.k8s.api.core.v1.FCVolumeSource", "targetWWNs", None, None, Some("atomic"), &[], None),
    fm("io.k8s.api.core.v1.FCVolumeSource", "wwids", None, None, Some("atomic"), &[], None),
    fm("io.k8s.api.core.v1.ConfigMapVolumeSource", "items", None, None, Some("atomic"), &[], None),
    fm("io.k8s.api.core.v1.ConfigMapProjection", "items", None, None, Some("atomic"), &[], None),
    fm("io.k8s.api.core.v1.ProjectedVolumeSource", "sources", None, None, Some("atomic"), &[], None),
    fm("io.k8s.api.core.v1.VolumeMount", "bindMountOptions", None, None, Some("set"), &[], None),
    fm("io.k8s.api.core.v1.HTTPGetAction", "httpHeaders", None, None, Some("atomic"), &[], None),
    fm("io.k8s.api.core.v1.ExecAction", "command", None, None, Some("atomic"), &[], None),
    fm("io.k8s.api.core.v1.Capabilities", "add", None, None, Some("atomic"), &[], None),
    fm("io.k8s.api.core.v1.Capabilities", "drop", None, None, Some("atomic"), &[], None),
    fm("io.k8s.api.core.v1.ResourceRequirements", "claims", None, None, Some("map"), &["name"], None),
    fm("io.k8s.api.core.v1.Container", "command", None, None, Some("atomic"), &[], None),
    fm("io.k8s.api.core.v1.Container", "args", None, None, Some("atomic"), &[], None),
    fm("io.k8s.api.core.v1.Container", "ports", Some("merge"), Some("containerPort"), Some("map"), &["containerPort", "protocol"], None),
    fm("io.k8s.api.core.v1.Container", "envFrom", None, None, Some("atomic"), &[], None),
    fm("io.k8s.api.core.v1.Container", "env", Some("merge"), Some("name"), Some("map"), &["name"], None),
    fm("io.k8s.api.core.v1.Container", "resizePolicy", None, None, Some("atomic"), &[], None),
    fm("io.k8s.api.core.v1.Container", "restartPolicyRules", None, None, Some("atomic"), &[], None),
    fm("io.k8s.api.core.v1.Container", "volumeMounts", Some("merge"), Some("mountPath"), Some("map"), &["mountPath"], None),
    fm("io.k8s.api.core.v1.Container", "volumeDevices", Some("merge"), Some("devicePath"), Some("map"), &["devicePath"], None),
    fm("io.k8s.api.core.v1.ContainerStatus", "volumeMounts", Some("merge"), Some("mountPath"), Some("map"), &["mountPath"], None),
    fm("io.k8s.api.core.v1.ContainerStatus", "allocatedResourcesStatus", Some("merge"), Some("name"), Some("map"), &["name"], None),
    fm("io.k8s.api.core.v1.ResourceStatus", "resources", None, None, Some("map"), &["resourceID"], None),
    fm("io.k8s.api.core.v1.LinuxContainerUser", "supplementalGroups", None, None, Some("atomic"), &[], None),
    fm("io.k8s.api.core.v1.NodeSelector", "nodeSelectorTerms", None, None, Some("atomic"), &[], None),
    fm("io.k8s.api.core.v1.NodeSelectorTerm", "matchExpressions", None, None, Some("atomic"), &[], None),
    fm("io.k8s.api.core.v1.NodeSelectorTerm", "matchFields", None, None, Some("atomic"), &[], None),
    fm("io.k8s.api.core.v1.NodeSelectorRequirement", "values", None, None, Some("atomic"), &[], None),
    fm("io.k8s.api.core.v1.TopologySelectorTerm", "matchLabelExpressions", None, None, Some("atomic"), &[], None),
    fm("io.k8s.api.core.v1.TopologySelectorLabelRequirement", "values", None, None, Some("atomic"), &[], None),
    fm("io.k8s.api.core.v1.PodAffinity", "requiredDuringSchedulingIgnoredDuringExecution", None, None, Some("atomic"), &[], None),
    fm("io.k8s.api.core.v1.PodAffinity", "preferredDuringSchedulingIgnoredDuringExecution", None, None, Some("atomic"), &[], None),
    fm("io.k8s.api.core.v1.PodAntiAffinity", "requiredDuringSchedulingIgnoredDuringExecution", None, None, Some("atomic"), &[], None),
    fm("io.k8s.api.core.v1.PodAntiAffinity", "preferredDuringSchedulingIgnoredDuringExecution", None, None, Some("atomic"), &[], None),
    fm("io.k8s.api.core.v1.PodAffinityTerm", "namespaces", None, None, Some("atomic"), &[], None),
    fm("io.k8s.api.core.v1.PodAffinityTerm", "matchLabelKeys", None, None, Some("atomic"), &[], None),
    fm("io.k8s.api.core.v1.PodAffinityTerm", "mismatchLabelKeys", None, None, Some("atomic"), &[], None),
    fm("io.k8s.api.core.v1.NodeAffinity", "preferredDuringSchedulingIgnoredDuringExecution", None, None, Some("atomic"), &[], None),
    fm("io.k8s.api.core.v1.PodSpec", "volumes", Some("merge,retainKeys"), Some("name"), Some("map"), &["name"], None),
    fm("io.k8s.api.core.v1.PodSpec", "initContainers", Some("merge"), Some("name"), Some("map"), &["name"], None),
    fm("io.k8s.api.core.v1.PodSpec", "containers", Some("merge"), Some("name"), Some("map"), &["name"], None),
    fm("io.k8s.api.core.v1.PodSpec", "ephemeralContainers", Some("merge"), Some("name"), Some("map"), &["name"], None),
    fm("io.k8s.api.core.v1.PodSpec", "nodeSelector", None, None, None, &[], Some("atomic")),
    fm("io.k8s.api.core.v1.PodSpec", "imagePullSecrets", Some("merge"), Some("name"), Some("map"), &["name"], None),
    fm("io.k8s.api.core.v1.PodSpec", "tolerations", None, None, Some("atomic"), &[], None),
    fm("io.k8s.api.core.v1.PodSpec", "hostAliases", Some("merge"), Some("ip"), Some("map"), &["ip"], None),
    fm("io.k8s.api.core.v1.PodSpec", "readinessGates", None, None, Some("atomic"), &[], None),
    fm("io.k8s.api.core.v1.PodSpec", "topologySpreadConstraints", Some("merge"), Some("topologyKey"), Some("map"), &["topologyKey", "whenUnsatisfiable"], None),
    fm("io.k8s.api.core.v1.PodSpec", "schedulingGates", Some("merge"), Some("name"), Some("map"), &["name"], None),
    fm("io.k8s.api.core.v1.PodSpec", "resourceClaims", Some("merge,retainKeys"), Some("name"), Some("map"), &["name"], None),
    fm("io.k8s.api.core.v1.PodSpec", "evictionResponders", Some("merge"), Some("name"), Some("map"), &["name"], None),
    fm("io.k8s.api.core.v1.TopologySpreadConstraint", "matchLabelKeys", None, None, Some("atomic"), &[], None),
    fm("io.k8s.api.core.v1.HostAlias", "hostnames", None, None, Some("atomic"), &[], None),
    fm("io.k8s.api.core.v1.PodSecurityContext", "supplementalGroups", None, None, Some("atomic"), &[], None),
    fm("io.k8s.api.core.v1.PodSecurityContext", "sysctls", None, None, Some("atomic"), &[], None),
    fm("io.k8s.api.core.v1.PodDNSConfig", "nameservers", None, None, Some("atomic"), &[], None),
    fm("io.k8s.api.core.v1.PodDNSConfig", "searches", None, None, Some("atomic"), &[], None),
    fm("io.k8s.api.core.v1.PodDNSConfig", "options", None, None, Some("atomic"), &[], None),
    fm("io.k8s.api.core.v1.EphemeralContainer", "command", None, None, Some("atomic"), &[], None),
    fm("io.k8s.api.core.v1.EphemeralContainer", "args", None, None, Some("atomic"), &[], None),
    fm("io.k8s.api.core.v1.EphemeralContainer", "ports", Some("merge"), Some("containerPort"), Some("map"), &["containerPort", "protocol"], None),
    fm("io.k8s.api.core.v1.EphemeralContainer", "envFrom", None, None, Some("atomic"), &[], None),
    fm("io.k8s.api.core.v1.EphemeralContainer", "env", Some("merge"), Some("name"), Some("map"), &["name"], None),
    fm("io.k8s.api.core.v1.EphemeralContainer", "resizePolicy", None, None, Some("atomic"), &[], None),
    fm("io.k8s.api.core.v1.EphemeralContainer", "restartPolicyRules", None, None, Some("atomic"), &[], None),
    fm("io.k8s.api.core.v1.EphemeralContainer", "volumeMounts", Some("merge"), Some("mountPath"), Some("map"), &["mountPath"], None),
    fm("io.k8s.api.core.v1.EphemeralContainer", "volumeDevices", Some("merge"), Some("devicePath"), Some("map"), &["devicePath"], None),
    fm("io.k8s.api.core.v1.PodStatus", "conditions", Some("merge"), Some("type"), Some("map"), &["type"], None),
    fm("io.k8s.api.core.v1.PodStatus", "hostIPs", Some("merge"), Some("ip"), Some("atomic"), &[], None),
    fm("io.k8s.api.core.v1.PodStatus", "podIPs", Some("merge"), Some("ip"), Some("map"), &["ip"], None),
    fm("io.k8s.api.core.v1.PodStatus", "initContainerStatuses", None, None, Some("atomic"), &[], None),
    fm("io.k8s.api.core.v1.PodStatus", "containerStatuses", None, None, Some("atomic"), &[], None),
    fm("io.k8s.api.core.v1.PodStatus", "ephemeralContainerStatuses", None, None, Some("atomic"), &[], None),
    fm("io.k8s.api.core.v1.PodStatus", "resourceClaimStatuses", Some("merge,retainKeys"), Some("name"), Some("map"), &["name"], None),
    fm("io.k8s.api.core.v1.PodStatus", "nodeAllocatableResourceClaimStatuses", Some("merge"), Some("resourceClaimName"), Some("map"), &["resourceClaimName"], None),
    fm("io.k8s.api.core.v1.PodStatus", "volumeHealth", None, None, Some("map"), &["name"], None),
    fm("io.k8s.api.core.v1.ReplicationControllerSpec", "selector", None, None, None, &[], Some("atomic")),
    fm("io.k8s.api.core.v1.ReplicationControllerStatus", "conditions", Some("merge"), Some("type"), Some("map"), &["type"], None),
    fm("io.k8s.api.core.v1.ServiceStatus", "conditions", Some("merge"), Some("type"), Some("map"), &["type"], None),
    fm("io.k8s.api.core.v1.LoadBalancerStatus", "ingress", None, None, Some("atomic"), &[], None),
    fm("io.k8s.api.core.v1.LoadBalancerIngress", "ports", None, None, Some("atomic"), &[], None),
    fm("io.k8s.api.core.v1.ServiceSpec", "ports", Some("merge"), Some("port"), Some("map"), &["port", "protocol"], None),
    fm("io.k8s.api.core.v1.ServiceSpec", "selector", None, None, None, &[], Some("atomic")),
    fm("io.k8s.api.core.v1.ServiceSpec", "clusterIPs", None, None, Some("atomic"), &[], None),
    fm("io.k8s.api.core.v1.ServiceSpec", "externalIPs", None, None, Some("atomic"), &[], None),
    fm("io.k8s.api.core.v1.ServiceSpec", "loadBalancerSourceRanges", None, None, Some("atomic"), &[], None),
    fm("io.k8s.api.core.v1.ServiceSpec", "ipFamilies", None, None, Some("atomic"), &[], None),
    fm("io.k8s.api.core.v1.ServiceAccount", "secrets", Some("merge"), Some("name"), Some("map"), &["name"], None),
    fm("io.k8s.api.core.v1.ServiceAccount", "imagePullSecrets", None, None, Some("atomic"), &[], None),
    fm("io.k8s.api.core.v1.Endpoints", "subsets", None, None, Some("atomic"), &[], None),
    fm("io.k8s.api.core.v1.EndpointSubset", "addresses", None, None, Some("atomic"), &[], None),
    fm("io.k8s.api.core.v1.EndpointSubset", "notReadyAddresses", None, None, Some("atomic"), &[], None),
    fm("io.k8s.api.core.v1.EndpointSubset", "ports", None, None, Some("atomic"), &[], None),
    fm("io.k8s.api.core.v1.NodeSpec", "podCIDRs", Some("merge"), None, Some("set"), &[], None),
    fm("io.k8s.api.core.v1.NodeSpec", "taints", None, None, Some("atomic"), &[], None),
    fm("io.k8s.api.core.v1.NodeStatus", "conditions", Some("merge"), Some("type"), Some("map"), &["type"], None),
    fm("io.k8s.api.core.v1.NodeStatus", "addresses", Some("merge"), Some("type"), Some("map"), &["type"], None),
    fm("io.k8s.api.core.v1.NodeStatus", "images", None, None, Some("atomic"), &[], None),
    fm("io.k8s.api.core.v1.NodeStatus", "volumesInUse", None, None, Some("atomic"), &[], None),
    fm("io.k8s.api.core.v1.NodeStatus", "volumesAttached", None, None, Some("atomic"), &[], None),
    fm("io.k8s.api.core.v1.NodeStatus", "runtimeHandlers", None, None, Some("atomic"), &[], None),
    fm("io.k8s.api.core.v1.NodeStatus", "declaredFeatures", None, None, Some("atomic"), &[], None),
    fm("io.k8s.api.core.v1.ContainerImage", "names", None, None, Some("atomic"), &[], None),
    fm("io.k8s.api.core.v1.NamespaceSpec", "finalizers", None, None, Some("atomic"), &[], None),
    fm("io.k8s.api.core.v1.NamespaceStatus", "conditions", Some("merge"), Some("type"), Some("map"), &["type"], None),
    fm("io.k8s.api.core.v1.LimitRangeSpec", "limits", None, None, Some("atomic"), &[], None),
    fm("io.k8s.api.core.v1.ResourceQuotaSpec", "scopes", None, None, Some("atomic"), &[], None),
    fm("io.k8s.api.core.v1.ScopeSelector", "matchExpressions", None, None, Some("atomic"), &[], None),
    fm("io.k8s.api.core.v1.ScopedResourceSelectorRequirement", "values", None, None, Some("atomic"), &[], None),
    fm("io.k8s.api.core.v1.ComponentStatus", "conditions", Some("merge"), Some("type"), Some("map"), &["type"], None),
    fm("io.k8s.api.core.v1.DownwardAPIVolumeSource", "items", None, None, Some("atomic"), &[], None),
    fm("io.k8s.api.core.v1.DownwardAPIProjection", "items", None, None, Some("atomic"), &[], None),
    fm("io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta", "ownerReferences", Some("merge"), Some("uid"), Some("map"), &["uid"], None),
    fm("io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta", "finalizers", Some("merge"), None, Some("set"), &[], None),
    fm("io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta", "managedFields", None, None, Some("atomic"), &[], None),
    fm("io.k8s.apimachinery.pkg.apis.meta.v1.DeleteOptions", "dryRun", None, None, Some("atomic"), &[], None),
    fm("io.k8s.apimachinery.pkg.apis.meta.v1.StatusDetails", "causes", None, None, Some("atomic"), &[], None),
    fm("io.k8s.apimachinery.pkg.apis.meta.v1.APIVersions", "versions", None, None, Some("atomic"), &[], None),
    fm("io.k8s.apimachinery.pkg.apis.meta.v1.APIVersions", "serverAddressByClientCIDRs", None, None, Some("atomic"), &[], None),
    fm("io.k8s.apimachinery.pkg.apis.meta.v1.APIGroupList", "groups", None, None, Some("atomic"), &[], None),
    fm("io.k8s.apimachinery.pkg.apis.meta.v1.APIGroup", "versions", None, None, Some("atomic"), &[], None),
    fm("io.k8s.apimachinery.pkg.apis.meta.v1.APIGroup", "serverAddressByClientCIDRs", None, None, Some("atomic"), &[], None),
    fm("io.k8s.apimachinery.pkg.apis.meta.v1.APIResource", "shortNames", None, None, Some("atomic"), &[], None),
    fm("io.k8s.apimachinery.pkg.apis.meta.v1.APIResource", "categories", None, None, Some("atomic"), &[], None),
    fm("io.k8s.apimachinery.pkg.apis.meta.v1.APIResourceList", "resources", None, None, Some("atomic"), &[], None),
    fm("io.k8s.apimachinery.pkg.apis.meta.v1.LabelSelector", "matchExpressions", None, None, Some("atomic"), &[], None),
    fm("io.k8s.apimachinery.pkg.apis.meta.v1.LabelSelectorRequirement", "values", None, None, Some("atomic"), &[], None),
    fm("io.k8s.apimachinery.pkg.apis.meta.v1.FieldSelectorRequirement", "values", None, None, Some("atomic"), &[], None),
    fm("io.k8s.api.certificates.v1.CertificateSigningRequestSpec", "usages", None, None, Some("atomic"), &[], None),
    fm("io.k8s.api.certificates.v1.CertificateSigningRequestSpec", "groups", None, None, Some("atomic"), &[], None),
    fm("io.k8s.api.certificates.v1.CertificateSigningRequestStatus", "conditions", None, None, Some("map"), &["type"], None),
    fm("io.k8s.api.node.v1.Scheduling", "nodeSelector", None, None, None, &[], Some("atomic")),
    fm("io.k8s.api.node.v1.Scheduling", "tolerations", None, None, Some("atomic"), &[], None),
    fm("io.k8s.api.networking.v1.NetworkPolicySpec", "ingress", None, None, Some("atomic"), &[], None),
    fm("io.k8s.api.networking.v1.NetworkPolicySpec", "egress", None, None, Some("atomic"), &[], None),
    fm("io.k8s.api.networking.v1.NetworkPolicySpec", "policyTypes", None, None, Some("atomic"), &[], None),
    fm("io.k8s.api.networking.v1.NetworkPolicyIngressRule", "ports", None, None, Some("atomic"), &[], None),
    fm("io.k8s.api.networking.v1.NetworkPolicyIngressRule", "from", None, None, Some("atomic"), &[], None),
    fm("io.k8s.api.networking.v1.NetworkPolicyEgressRule", "ports", None, None, Some("atomic"), &[], None),
    fm("io.k8s.api.networking.v1.NetworkPolicyEgressRule", "to", None, None, Some("atomic"), &[], None),
    fm("io.k8s.api.networking.v1.IPBlock", "except", None, None, Some("atomic"), &[], None),
    fm("io.k8s.api.networking.v1.IngressSpec", "tls", None, None, Some("atomic"), &[], None),
    fm("io.k8s.api.networking.v1.IngressSpec", "rules", None, None, Some("atomic"), &[], None),
    fm("io.k8s.api.networking.v1.IngressTLS", "hosts", None, None, Some("atomic"), &[], None),
    fm("io.k8s.api.networking.v1.IngressLoadBalancerStatus", "ingress", None, None, Some("atomic"), &[], None),
    fm("io.k8s.api.networking.v1.IngressLoadBalancerIngress", "ports", None, None, Some("atomic"), &[], None),
    fm("io.k8s.api.networking.v1.HTTPIngressRuleValue", "paths", None, None, Some("atomic"), &[], None),
    fm("io.k8s.api.networking.v1.ServiceCIDRSpec", "cidrs", None, None, Some("atomic"), &[], None),
    fm("io.k8s.api.networking.v1.ServiceCIDRStatus", "conditions", Some("merge"), Some("type"), Some("map"), &["type"], None),
    fm("io.k8s.api.policy.v1.PodDisruptionBudgetSpec", "selector", Some("replace"), None, None, &[], None),
    fm("io.k8s.api.policy.v1.PodDisruptionBudgetStatus", "conditions", Some("merge"), Some("type"), Some("map"), &["type"], None),
    fm("io.k8s.api.storage.v1.StorageClass", "mountOptions", None, None, Some("atomic"), &[], None),
    fm("io.k8s.api.storage.v1.StorageClass", "allowedTopologies", None, None, Some("atomic"), &[], None),
    fm("io.k8s.api.storage.v1.CSIDriverSpec", "volumeLifecycleModes", None, None, Some("set"), &[], None),
    fm("io.k8s.api.storage.v1.CSIDriverSpec", "tokenRequests", None, None, Some("atomic"), &[], None),
    fm("io.k8s.api.storage.v1.CSINodeSpec", "drivers", Some("merge"), Some("name"), Some("map"), &["name"], None),
    fm("io.k8s.api.storage.v1.CSINodeDriver", "topologyKeys", None, None, Some("atomic"), &[], None),
    fm("io.k8s.api.rbac.v1.PolicyRule", "verbs", None, None, Some("atomic"), &[], None),
    fm("io.k8s.api.rbac.v1.PolicyRule", "apiGroups", None, None, Some("atomic"), &[], None),
    fm("io.k8s.api.rbac.v1.PolicyRule", "resources", None, None, Some("atomic"), &[], None),
    fm("io.k8s.api.rbac.v1.PolicyRule", "resourceNames", None, None, Some("atomic"), &[], None),
    fm("io.k8s.api.rbac.v1.PolicyRule", "nonResourceURLs", None, None, Some("atomic"), &[], None),
    fm("io.k8s.api.rbac.v1.Role", "rules", None, None, Some("atomic"), &[], None),
    fm("io.k8s.api.rbac.v1.RoleBinding", "subjects", None, None, Some("atomic"), &[], None),
    fm("io.k8s.api.rbac.v1.ClusterRole", "rules", None, None, Some("atomic"), &[], None),
    fm("io.k8s.api.rbac.v1.AggregationRule", "clusterRoleSelectors", None, None, Some("atomic"), &[], None),
    fm("io.k8s.api.rbac.v1.ClusterRoleBinding", "subjects", None, None, Some("atomic"), &[], None),
    fm("io.k8s.api.admissionregistration.v1.ValidatingAdmissionPolicyStatus", "conditions", None, None, Some("map"), &["type"], None),
    fm("io.k8s.api.admissionregistration.v1.TypeChecking", "expressionWarnings", None, None, Some("atomic"), &[], None),
    fm("io.k8s.api.admissionregistration.v1.ValidatingAdmissionPolicySpec", "validations", None, None, Some("atomic"), &[], None),
    fm("io.k8s.api.admissionregistration.v1.ValidatingAdmissionPolicySpec", "auditAnnotations", None, None, Some("atomic"), &[], None),
    fm("io.k8s.api.admissionregistration.v1.ValidatingAdmissionPolicySpec", "matchConditions", Some("merge"), Some("name"), Some("map"), &["name"], None),
    fm("io.k8s.api.admissionregistration.v1.ValidatingAdmissionPolicySpec", "variables", Some("merge"), Some("name"), Some("map"), &["name"], None),
    fm("io.k8s.api.admissionregistration.v1.ValidatingAdmissionPolicyBindingSpec", "validationActions", None, None, Some("set"), &[], None),
    fm("io.k8s.api.admissionregistration.v1.MatchResources", "resourceRules", None, None, Some("atomic"), &[], None),
    fm("io.k8s.api.admissionregistration.v1.MatchResources", "excludeResourceRules", None, None, Some("atomic"), &[], None),
    fm("io.k8s.api.admissionregistration.v1.NamedRuleWithOperations", "resourceNames", None, None, Some("atomic"), &[], None),
    fm("io.k8s.api.admissionregistration.v1.ValidatingWebhookConfiguration", "webhooks", Some("merge"), Some("name"), Some("map"), &["name"], None),
    fm("io.k8s.api.admissionregistration.v1.MutatingWebhookConfiguration", "webhooks", Some("merge"), Some("name"), Some("map"), &["name"], None),
    fm("io.k8s.api.admissionregistration.v1.ValidatingWebhook", "rules", None, None, Some("atomic"), &[], None),
    fm("io.k8s.api.admissionregistration.v1.ValidatingWebhook", "admissionReviewVersions", None, None, Some("atomic"), &[], None),
    fm("io.k8s.api.admissionregistration.v1.ValidatingWebhook", "matchConditions", Some("merge"), Some("name"), Some("map"), &["name"], None),
    fm("io.k8s.api.admissionregistration.v1.MutatingWebhook", "rules", None, None, Some("atomic"), &[], None),
    fm("io.k8s.api.admissionregistration.v1.MutatingWebhook", "admissionReviewVersions", None, None, Some("atomic"), &[], None),
    fm("io.k8s.api.admissionregistration.v1.MutatingWebhook", "matchConditions", Some("merge"), Some("name"), Some("map"), &["name"], None),
    fm("io.k8s.api.admissionregistration.v1.RuleWithOperations", "operations", None, None, Some("atomic"), &[], None),
];

/// Structs marked `+structType=atomic`: published as `x-kubernetes-map-type: atomic`.
static ATOMIC_STRUCTS: &[&str] = &[
    "io.k8s.api.discovery.v1.EndpointPort",
    "io.k8s.api.core.v1.SecretReference",
    "io.k8s.api.core.v1.ObjectFieldSelector",
    "io.k8s.api.core.v1.ResourceFieldSelector",
    "io.k8s.api.core.v1.ConfigMapKeySelector",
    "io.k8s.api.core.v1.SecretKeySelector",
    "io.k8s.api.core.v1.NodeSelector",
    "io.k8s.api.core.v1.NodeSelectorTerm",
    "io.k8s.api.core.v1.TopologySelectorTerm",
    "io.k8s.api.core.v1.EndpointAddress",
    "io.k8s.api.core.v1.EndpointPort",
    "io.k8s.api.core.v1.ObjectReference",
    "io.k8s.api.core.v1.LocalObjectReference",
    "io.k8s.api.core.v1.TypedLocalObjectReference",
    "io.k8s.api.core.v1.ScopeSelector",
    "io.k8s.apimachinery.pkg.apis.meta.v1.OwnerReference",
    "io.k8s.apimachinery.pkg.apis.meta.v1.LabelSelector",
    "io.k8s.api.networking.v1.ServiceBackendPort",
    "io.k8s.api.rbac.v1.Subject",
    "io.k8s.api.rbac.v1.RoleRef",
    "io.k8s.api.autoscaling.v1.CrossVersionObjectReference",
    "io.k8s.api.admissionregistration.v1.ParamKind",
    "io.k8s.api.admissionregistration.v1.Variable",
    "io.k8s.api.admissionregistration.v1.ParamRef",
    "io.k8s.api.admissionregistration.v1.MatchResources",
    "io.k8s.api.admissionregistration.v1.NamedRuleWithOperations",
];

/// The strategic-merge-patch metadata of `field` in the definition `schema_name`, if the field
/// merges (None: the field is replaced as a whole).
pub fn patch_meta(schema_name: &str, field: &str) -> Option<PatchMeta> {
    let meta = field_meta(schema_name, field)?;
    Some(PatchMeta {
        strategy: meta.patch_strategy?,
        merge_key: meta.patch_merge_key,
    })
}

/// Everything known about the topology of `field` in the definition `schema_name`.
pub fn field_meta(schema_name: &str, field: &str) -> Option<&'static FieldMeta> {
    static INDEX: LazyLock<HashMap<(&'static str, &'static str), &'static FieldMeta>> =
        LazyLock::new(|| {
            FIELD_META
                .iter()
                .map(|m| ((m.definition, m.field), m))
                .collect()
        });
    INDEX.get(&(schema_name, field)).copied()
}

/// The definition name of a field's type (of its items for lists, of its values for maps),
/// so that a walker can descend: (`io.k8s.api.core.v1.PodSpec`, `containers`) ->
/// `io.k8s.api.core.v1.Container`. None for scalars, free-form fields and unknown names.
pub fn field_schema_name(parent_schema_name: &str, field: &str) -> Option<&'static str> {
    let defs = definitions();
    let prop = defs
        .get(parent_schema_name)?
        .get("properties")?
        .get(field)?;
    referenced_definition(prop)
        .and_then(|name| defs.get_key_value(name))
        .map(|(k, _)| k.as_str())
}

/// The definition a schema refers to: directly, through a single `allOf`, or through the
/// items of an array or the values of a map.
fn referenced_definition(schema: &Value) -> Option<&str> {
    if let Some(r) = schema.get("$ref").and_then(Value::as_str) {
        return r.strip_prefix(REF_PREFIX);
    }
    if let Some([only]) = schema
        .get("allOf")
        .and_then(Value::as_array)
        .map(Vec::as_slice)
    {
        return referenced_definition(only);
    }
    if let Some(items) = schema.get("items") {
        return referenced_definition(items);
    }
    match schema.get("additionalProperties") {
        Some(values @ Value::Object(_)) => referenced_definition(values),
        _ => None,
    }
}

// ---------------------------------------------------------------------------------------------
// Definitions: generated once from k8s-openapi, normalised to kube-apiserver's OpenAPI v3 form.
// ---------------------------------------------------------------------------------------------

type Root = fn(&mut SchemaGenerator);

fn root<T: JsonSchema>(generator: &mut SchemaGenerator) {
    // Only the side effect matters: the type and everything it uses land in the definitions.
    let _ = generator.subschema_for::<T>();
}

/// The k8s-openapi type of every kind skiff serves or may serve, by definition name. Only the
/// registry's kinds are generated; the others are ready for when the registry grows.
static KINDS: &[(&str, Root)] = &[
    ("io.k8s.api.core.v1.Namespace", root::<core::v1::Namespace>),
    ("io.k8s.api.core.v1.Pod", root::<core::v1::Pod>),
    ("io.k8s.api.core.v1.Service", root::<core::v1::Service>),
    ("io.k8s.api.core.v1.Endpoints", root::<core::v1::Endpoints>),
    ("io.k8s.api.core.v1.ConfigMap", root::<core::v1::ConfigMap>),
    ("io.k8s.api.core.v1.Secret", root::<core::v1::Secret>),
    ("io.k8s.api.core.v1.Node", root::<core::v1::Node>),
    ("io.k8s.api.core.v1.Event", root::<core::v1::Event>),
    ("io.k8s.api.core.v1.ServiceAccount", root::<core::v1::ServiceAccount>),
    ("io.k8s.api.core.v1.PersistentVolume", root::<core::v1::PersistentVolume>),
    ("io.k8s.api.core.v1.PersistentVolumeClaim", root::<core::v1::PersistentVolumeClaim>),
    ("io.k8s.api.core.v1.Binding", root::<core::v1::Binding>),
    ("io.k8s.api.core.v1.ReplicationController", root::<core::v1::ReplicationController>),
    ("io.k8s.api.core.v1.PodTemplate", root::<core::v1::PodTemplate>),
    ("io.k8s.api.core.v1.LimitRange", root::<core::v1::LimitRange>),
    ("io.k8s.api.core.v1.ResourceQuota", root::<core::v1::ResourceQuota>),
    ("io.k8s.api.core.v1.ComponentStatus", root::<core::v1::ComponentStatus>),
    ("io.k8s.api.apps.v1.Deployment", root::<apps::v1::Deployment>),
    ("io.k8s.api.apps.v1.ReplicaSet", root::<apps::v1::ReplicaSet>),
    ("io.k8s.api.apps.v1.StatefulSet", root::<apps::v1::StatefulSet>),
    ("io.k8s.api.apps.v1.DaemonSet", root::<apps::v1::DaemonSet>),
    ("io.k8s.api.apps.v1.ControllerRevision", root::<apps::v1::ControllerRevision>),
    ("io.k8s.api.batch.v1.Job", root::<batch::v1::Job>),
    ("io.k8s.api.batch.v1.CronJob", root::<batch::v1::CronJob>),
    ("io.k8s.api.autoscaling.v1.Scale", root::<autoscaling::v1::Scale>),
    ("io.k8s.api.autoscaling.v1.HorizontalPodAutoscaler", root::<autoscaling::v1::HorizontalPodAutoscaler>),
    ("io.k8s.api.autoscaling.v2.HorizontalPodAutoscaler", root::<autoscaling::v2::HorizontalPodAutoscaler>),
    ("io.k8s.api.coordination.v1.Lease", root::<coordination::v1::Lease>),
    ("io.k8s.api.discovery.v1.EndpointSlice", root::<discovery::v1::EndpointSlice>),
    ("io.k8s.api.events.v1.Event", root::<events::v1::Event>),
    ("io.k8s.api.networking.v1.Ingress", root::<networking::v1::Ingress>),
    ("io.k8s.api.networking.v1.IngressClass", root::<networking::v1::IngressClass>),
    ("io.k8s.api.networking.v1.NetworkPolicy", root::<networking::v1::NetworkPolicy>),
    ("io.k8s.api.policy.v1.PodDisruptionBudget", root::<policy::v1::PodDisruptionBudget>),
    ("io.k8s.api.policy.v1.Eviction", root::<policy::v1::Eviction>),
    ("io.k8s.api.rbac.v1.Role", root::<rbac::v1::Role>),
    ("io.k8s.api.rbac.v1.RoleBinding", root::<rbac::v1::RoleBinding>),
    ("io.k8s.api.rbac.v1.ClusterRole", root::<rbac::v1::ClusterRole>),
    ("io.k8s.api.rbac.v1.ClusterRoleBinding", root::<rbac::v1::ClusterRoleBinding>),
    ("io.k8s.api.storage.v1.StorageClass", root::<storage::v1::StorageClass>),
    ("io.k8s.api.storage.v1.CSIDriver", root::<storage::v1::CSIDriver>),
    ("io.k8s.api.storage.v1.CSINode", root::<storage::v1::CSINode>),
    ("io.k8s.api.storage.v1.VolumeAttachment", root::<storage::v1::VolumeAttachment>),
    ("io.k8s.api.scheduling.v1.PriorityClass", root::<scheduling::v1::PriorityClass>),
    ("io.k8s.api.node.v1.RuntimeClass", root::<node::v1::RuntimeClass>),
    ("io.k8s.api.certificates.v1.CertificateSigningRequest", root::<certificates::v1::CertificateSigningRequest>),
    ("io.k8s.api.authentication.v1.TokenReview", root::<authentication::v1::TokenReview>),
    ("io.k8s.api.authorization.v1.SelfSubjectAccessReview", root::<authorization::v1::SelfSubjectAccessReview>),
    ("io.k8s.api.authorization.v1.SubjectAccessReview", root::<authorization::v1::SubjectAccessReview>),
    ("io.k8s.api.admissionregistration.v1.MutatingWebhookConfiguration", root::<admissionregistration::v1::MutatingWebhookConfiguration>),
    ("io.k8s.api.admissionregistration.v1.ValidatingWebhookConfiguration", root::<admissionregistration::v1::ValidatingWebhookConfiguration>),
    ("io.k8s.apiextensions-apiserver.pkg.apis.apiextensions.v1.CustomResourceDefinition", root::<k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition>),
    ("io.k8s.kube-aggregator.pkg.apis.apiregistration.v1.APIService", root::<k8s_openapi::kube_aggregator::pkg::apis::apiregistration::v1::APIService>),
];

/// The k8s-openapi type of a registry resource, by its definition name.
fn resource_root(schema_name: &str) -> Option<Root> {
    KINDS
        .iter()
        .find(|(name, _)| *name == schema_name)
        .map(|(_, root)| *root)
}

/// Types every group-version document refers to besides the resources themselves.
static SUPPORT_ROOTS: &[Root] = &[
    root::<autoscaling::v1::Scale>,
    root::<meta::ListMeta>,
    root::<meta::DeleteOptions>,
    root::<meta::Status>,
    root::<meta::APIResourceList>,
    root::<k8s_openapi::apimachinery::pkg::runtime::RawExtension>,
];

/// Every definition (`io.k8s.api.apps.v1.Deployment` -> schema) in kube-apiserver's OpenAPI v3
/// form, sorted by name, with the group-version-kind, patch and list-type extensions.
pub fn definitions() -> &'static Map<String, Value> {
    static DEFINITIONS: LazyLock<Map<String, Value>> = LazyLock::new(build_definitions);
    &DEFINITIONS
}

fn build_definitions() -> Map<String, Value> {
    let mut generator = SchemaSettings::draft2020_12().into_generator();
    for def in RESOURCES {
        if let Some(root) = resource_root(def.schema_name) {
            root(&mut generator);
        }
    }
    for root in SUPPORT_ROOTS {
        root(&mut generator);
    }
    let mut defs = generator.take_definitions(true);
    for schema in defs.values_mut() {
        normalize_refs(schema);
    }

    // kube-apiserver publishes these two as one-of schemas; k8s-openapi marks both int-or-string.
    if let Some(Value::Object(q)) = defs.get_mut(QUANTITY) {
        let description = q.remove("description").unwrap_or(Value::Null);
        *q = object(
            json!({ "description": description, "oneOf": [{ "type": "string" }, { "type": "number" }] }),
        );
    }
    if let Some(Value::Object(q)) = defs.get_mut(INT_OR_STRING) {
        let description = q.remove("description").unwrap_or(Value::Null);
        *q = object(json!({
            "description": description,
            "format": "int-or-string",
            "oneOf": [{ "type": "integer" }, { "type": "string" }],
        }));
    }

    for meta in FIELD_META {
        let Some(prop) = defs
            .get_mut(meta.definition)
            .and_then(|d| d.get_mut("properties"))
            .and_then(|p| p.get_mut(meta.field))
            .and_then(Value::as_object_mut)
        else {
            continue;
        };
        if !meta.list_map_keys.is_empty() {
            prop.insert(
                "x-kubernetes-list-map-keys".into(),
                json!(meta.list_map_keys),
            );
        }
        if let Some(t) = meta.list_type {
            prop.insert("x-kubernetes-list-type".into(), json!(t));
        }
        if let Some(t) = meta.map_type {
            prop.insert("x-kubernetes-map-type".into(), json!(t));
        }
        if let Some(k) = meta.patch_merge_key {
            prop.insert("x-kubernetes-patch-merge-key".into(), json!(k));
        }
        if let Some(s) = meta.patch_strategy {
            prop.insert("x-kubernetes-patch-strategy".into(), json!(s));
        }
    }
    for name in ATOMIC_STRUCTS {
        if let Some(Value::Object(d)) = defs.get_mut(*name) {
            d.insert("x-kubernetes-map-type".into(), json!("atomic"));
        }
    }

    for def in RESOURCES {
        if !defs.contains_key(def.schema_name) {
            // A kind without a k8s-openapi type still gets a (permissive) schema, so that the
            // documents stay consistent and kubectl finds its paths.
            defs.insert(def.schema_name.to_string(), free_form_kind(def));
        }
        if let Some(Value::Object(d)) = defs.get_mut(def.schema_name) {
            d.insert(
                "x-kubernetes-group-version-kind".into(),
                json!([gvk(def.group, def.version, def.kind)]),
            );
        }
        let list = list_definition(def);
        defs.insert(format!("{}List", def.schema_name), list);
    }
    if let Some(Value::Object(d)) = defs.get_mut("io.k8s.api.autoscaling.v1.Scale") {
        d.insert(
            "x-kubernetes-group-version-kind".into(),
            json!([gvk("autoscaling", "v1", "Scale")]),
        );
    }
    let every_gv = |kind: &str| -> Value {
        let mut gvs = vec![("", "v1")];
        for gv in crate::registry::group_versions() {
            if !gvs.contains(&gv) {
                gvs.push(gv);
            }
        }
        Value::Array(gvs.into_iter().map(|(g, v)| gvk(g, v, kind)).collect())
    };
    if let Some(Value::Object(d)) =
        defs.get_mut("io.k8s.apimachinery.pkg.apis.meta.v1.DeleteOptions")
    {
        d.insert(
            "x-kubernetes-group-version-kind".into(),
            every_gv("DeleteOptions"),
        );
    }
    if let Some(Value::Object(d)) = defs.get_mut("io.k8s.apimachinery.pkg.apis.meta.v1.Status") {
        d.insert(
            "x-kubernetes-group-version-kind".into(),
            json!([gvk("", "v1", "Status")]),
        );
    }
    defs.insert(
        PATCH.into(),
        json!({
            "description": "Patch is provided to give a concrete name and type to the Kubernetes PATCH request body.",
            "type": "object",
        }),
    );
    let mut watch_event = json!({
        "description": "Event represents a single event to a watched resource.",
        "type": "object",
        "required": ["type", "object"],
        "properties": {
            "object": {
                "allOf": [{ "$ref": format!("{REF_PREFIX}io.k8s.apimachinery.pkg.runtime.RawExtension") }],
                "description": "Object is:\n * If Type is Added or Modified: the new state of the object.\n * If Type is Deleted: the state of the object immediately before deletion.\n * If Type is Error: *Status is recommended; other types may make sense\n   depending on context.",
            },
            "type": { "type": "string" },
        },
    });
    watch_event["x-kubernetes-group-version-kind"] = every_gv("WatchEvent");
    defs.insert(
        "io.k8s.apimachinery.pkg.apis.meta.v1.WatchEvent".into(),
        watch_event,
    );

    let mut sorted: Vec<(String, Value)> = defs.into_iter().collect();
    sorted.sort_by(|a, b| a.0.cmp(&b.0));
    sorted.into_iter().collect()
}

fn gvk(group: &str, version: &str, kind: &str) -> Value {
    json!({ "group": group, "kind": kind, "version": version })
}

fn object(v: Value) -> Map<String, Value> {
    match v {
        Value::Object(m) => m,
        _ => Map::new(),
    }
}

/// A kind whose fields are unknown: only the object metadata is described.
fn free_form_kind(def: &ResourceDef) -> Value {
    json!({
        "description": format!("{} (fields not described by this server).", def.kind),
        "type": "object",
        "properties": {
            "apiVersion": { "type": "string" },
            "kind": { "type": "string" },
            "metadata": { "$ref": format!("{REF_PREFIX}io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta") },
        },
        "x-kubernetes-preserve-unknown-fields": true,
    })
}

/// The `<Kind>List` definition kube-apiserver publishes next to every kind.
fn list_definition(def: &ResourceDef) -> Value {
    json!({
        "description": format!("{}List is a list of {} objects.", def.kind, def.kind),
        "type": "object",
        "required": ["items"],
        "properties": {
            "apiVersion": {
                "description": "APIVersion defines the versioned schema of this representation of an object. Servers should convert recognized schemas to the latest internal value, and may reject unrecognized values.",
                "type": "string",
            },
            "items": {
                "description": format!("Items is the list of {} objects.", def.kind),
                "type": "array",
                "items": { "$ref": format!("{REF_PREFIX}{}", def.schema_name) },
            },
            "kind": {
                "description": "Kind is a string value representing the REST resource this object represents. Servers may infer this from the endpoint the client submits requests to.",
                "type": "string",
            },
            "metadata": {
                "allOf": [{ "$ref": format!("{REF_PREFIX}{LIST_META}") }],
                "description": "Standard list metadata.",
            },
        },
        "x-kubernetes-group-version-kind": [gvk(def.group, def.version, &def.list_kind())],
    })
}

/// Rewrites schemars' `#/$defs/<name>` references to `#/components/schemas/<name>`, and wraps
/// a reference that has siblings (a description) in `allOf`, as OpenAPI 3.0 ignores `$ref`
/// siblings and kube-apiserver publishes it that way.
fn normalize_refs(schema: &mut Value) {
    match schema {
        Value::Object(map) => {
            if let Some(Value::String(r)) = map.get_mut("$ref")
                && let Some(name) = r.strip_prefix("#/$defs/")
            {
                *r = format!("{REF_PREFIX}{name}");
            }
            if map.len() > 1
                && let Some(r) = map.remove("$ref")
            {
                let rest = std::mem::take(map);
                map.insert("allOf".into(), json!([{ "$ref": r }]));
                map.extend(rest);
            }
            for child in map.values_mut() {
                normalize_refs(child);
            }
        }
        Value::Array(items) => items.iter_mut().for_each(normalize_refs),
        _ => {}
    }
}

// ---------------------------------------------------------------------------------------------
// The compiled tree: one node per definition plus inline nodes, references resolved to indices.
// ---------------------------------------------------------------------------------------------

type NodeId = u32;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Scalar {
    String,
    /// `format: byte`: base64 in JSON.
    Bytes,
    /// `format: date-time` (metav1.Time, MicroTime).
    DateTime,
    Int32,
    Int64,
    Number,
    Boolean,
    IntOrString,
    /// resource.Quantity: a string, or a bare number.
    Quantity,
}

#[derive(Debug, Clone)]
enum Node {
    /// Free-form (RawExtension, FieldsV1, preserve-unknown-fields): nothing is checked below.
    Any,
    Scalar(Scalar),
    /// A struct: its fields sorted by name.
    Object(Box<[(&'static str, NodeId)]>),
    Array(NodeId),
    /// A map with free-form keys (labels, data, resources.requests).
    Map(NodeId),
}

struct Tree {
    nodes: Vec<Node>,
    /// Definition name -> node.
    roots: HashMap<&'static str, NodeId>,
}

fn tree() -> &'static Tree {
    static TREE: LazyLock<Tree> = LazyLock::new(|| Tree::compile(definitions()));
    &TREE
}

impl Tree {
    fn compile(defs: &'static Map<String, Value>) -> Tree {
        let roots: HashMap<&'static str, NodeId> = defs
            .keys()
            .enumerate()
            .map(|(i, name)| (name.as_str(), i as NodeId))
            .collect();
        let mut tree = Tree {
            nodes: vec![Node::Any; defs.len()],
            roots,
        };
        for (i, (name, schema)) in defs.iter().enumerate() {
            let node = match name.as_str() {
                QUANTITY => Node::Scalar(Scalar::Quantity),
                INT_OR_STRING => Node::Scalar(Scalar::IntOrString),
                _ => tree.node_for(schema),
            };
            tree.nodes[i] = node;
        }
        tree
    }

    /// The node of a field's schema: the referenced definition, or a new inline node.
    fn child(&mut self, schema: &'static Value) -> NodeId {
        if let Some(name) = schema
            .get("$ref")
            .and_then(Value::as_str)
            .and_then(|r| r.strip_prefix(REF_PREFIX))
        {
            return self
                .roots
                .get(name)
                .copied()
                .unwrap_or_else(|| self.push(Node::Any));
        }
        if let Some([only]) = schema
            .get("allOf")
            .and_then(Value::as_array)
            .map(Vec::as_slice)
        {
            return self.child(only);
        }
        let node = self.node_for(schema);
        self.push(node)
    }

    fn push(&mut self, node: Node) -> NodeId {
        self.nodes.push(node);
        (self.nodes.len() - 1) as NodeId
    }

    fn node_for(&mut self, schema: &'static Value) -> Node {
        if schema.get("x-kubernetes-preserve-unknown-fields") == Some(&Value::Bool(true)) {
            return Node::Any;
        }
        if schema.get("x-kubernetes-int-or-string") == Some(&Value::Bool(true)) {
            return Node::Scalar(Scalar::IntOrString);
        }
        let format = schema.get("format").and_then(Value::as_str).unwrap_or("");
        match schema.get("type").and_then(Value::as_str) {
            Some("string") => Node::Scalar(match format {
                "byte" => Scalar::Bytes,
                "date-time" => Scalar::DateTime,
                _ => Scalar::String,
            }),
            Some("integer") => Node::Scalar(if format == "int32" {
                Scalar::Int32
            } else {
                Scalar::Int64
            }),
            Some("number") => Node::Scalar(Scalar::Number),
            Some("boolean") => Node::Scalar(Scalar::Boolean),
            Some("array") => match schema.get("items") {
                Some(items) => Node::Array(self.child(items)),
                None => Node::Any,
            },
            _ => {
                if let Some(props) = schema.get("properties").and_then(Value::as_object)
                    && !props.is_empty()
                {
                    let mut fields: Vec<(&'static str, NodeId)> = props
                        .iter()
                        .map(|(k, v)| (k.as_str(), self.child(v)))
                        .collect();
                    fields.sort_by(|a, b| a.0.cmp(b.0));
                    return Node::Object(fields.into_boxed_slice());
                }
                match schema.get("additionalProperties") {
                    Some(values @ Value::Object(_)) => Node::Map(self.child(values)),
                    _ => Node::Any,
                }
            }
        }
    }

    fn root_of(&self, schema_name: &str) -> Option<NodeId> {
        self.roots.get(schema_name).copied()
    }

    fn node(&self, id: NodeId) -> &Node {
        self.nodes.get(id as usize).unwrap_or(&Node::Any)
    }
}

impl Node {
    fn field(&self, name: &str) -> Option<NodeId> {
        match self {
            Node::Object(fields) => fields
                .binary_search_by(|(k, _)| (*k).cmp(name))
                .ok()
                .map(|i| fields[i].1),
            _ => None,
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Walking objects against the tree.
// ---------------------------------------------------------------------------------------------

/// What one pass over an object found.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct FieldReport {
    /// Paths of fields the schema does not know (`spec.template.spec.containers[0].images`).
    pub unknown: Vec<String>,
    /// Values of the wrong JSON type (a string where an integer belongs, ...).
    pub type_errors: Vec<FieldError>,
}

/// Paths of the fields in `obj` that the resource's schema does not know
/// (`spec.template.spec.containers[0].images`), in document order. `apiVersion`, `kind` and
/// `metadata.managedFields` are not checked; map keys (labels, data, resources.requests) are free.
pub fn unknown_fields(def: &ResourceDef, obj: &Value) -> Vec<String> {
    walk(def.schema_name, obj, true, false).unknown
}

/// Values in `obj` of the wrong JSON type, each naming its path, e.g.
/// `spec.replicas: Invalid value: "3": must be of type int32, not string`.
pub fn type_errors(def: &ResourceDef, obj: &Value) -> Vec<FieldError> {
    walk(def.schema_name, obj, false, true).type_errors
}

/// Unknown fields and type errors in one pass (what a write needs).
pub fn check_fields(def: &ResourceDef, obj: &Value) -> FieldReport {
    walk(def.schema_name, obj, true, true)
}

/// [`check_fields`] for any definition by name, e.g. `io.k8s.api.autoscaling.v1.Scale` for a
/// `/scale` body. An unknown name finds nothing.
pub fn check_fields_by_name(schema_name: &str, obj: &Value) -> FieldReport {
    walk(schema_name, obj, true, true)
}

/// Whether the resource has a compiled schema (every registry resource should).
pub fn has_schema(def: &ResourceDef) -> bool {
    tree().root_of(def.schema_name).is_some()
}

fn walk(schema_name: &str, obj: &Value, unknown: bool, types: bool) -> FieldReport {
    let mut walker = Walker {
        tree: tree(),
        unknown,
        types,
        report: FieldReport::default(),
        path: String::new(),
    };
    if let Some(root) = walker.tree.root_of(schema_name) {
        walker.visit_root(root, obj);
    }
    walker.report
}

struct Walker {
    tree: &'static Tree,
    unknown: bool,
    types: bool,
    report: FieldReport,
    path: String,
}

impl Walker {
    fn visit_root(&mut self, root: NodeId, obj: &Value) {
        let Value::Object(map) = obj else {
            if self.types {
                self.type_error(obj, "object");
            }
            return;
        };
        for (key, value) in map {
            if key == "apiVersion" || key == "kind" {
                continue;
            }
            self.visit_field(root, key, value);
        }
    }

    fn visit_field(&mut self, parent: NodeId, key: &str, value: &Value) {
        let len = self.path.len();
        if !self.path.is_empty() {
            self.path.push('.');
        }
        self.path.push_str(key);
        match self.tree.node(parent).field(key) {
            // Server-side apply bookkeeping: validated by its own code, never by schema.
            Some(_) if self.path == "metadata.managedFields" => {}
            Some(child) => self.visit(child, value),
            None => {
                if self.unknown {
                    self.report.unknown.push(self.path.clone());
                }
            }
        }
        self.path.truncate(len);
    }

    fn visit(&mut self, id: NodeId, value: &Value) {
        if value.is_null() {
            // Go's decoder leaves the zero value for null, whatever the field's type.
            return;
        }
        match self.tree.node(id) {
            Node::Any => {}
            Node::Scalar(scalar) => {
                if self.types {
                    self.check_scalar(*scalar, value);
                }
            }
            Node::Object(_) => match value {
                Value::Object(map) => {
                    for (key, child) in map {
                        self.visit_field(id, key, child);
                    }
                }
                _ => self.type_error(value, "object"),
            },
            Node::Map(values) => match value {
                Value::Object(map) => {
                    let values = *values;
                    for (key, child) in map {
                        let len = self.path.len();
                        self.path.push('.');
                        self.path.push_str(key);
                        self.visit(values, child);
                        self.path.truncate(len);
                    }
                }
                _ => self.type_error(value, "object"),
            },
            Node::Array(items) => match value {
                Value::Array(list) => {
                    let items = *items;
                    for (i, child) in list.iter().enumerate() {
                        let len = self.path.len();
                        let _ = write!(self.path, "[{i}]");
                        self.visit(items, child);
                        self.path.truncate(len);
                    }
                }
                _ => self.type_error(value, "array"),
            },
        }
    }

    fn check_scalar(&mut self, scalar: Scalar, value: &Value) {
        let ok = match scalar {
            Scalar::String => value.is_string(),
            Scalar::Bytes => match value {
                Value::String(s) => {
                    if !is_base64(s) {
                        let detail = "must be base64-encoded data";
                        self.report.type_errors.push(FieldError::invalid(
                            &self.path,
                            render(value),
                            detail,
                        ));
                    }
                    true
                }
                _ => false,
            },
            Scalar::DateTime => match value {
                Value::String(s) => {
                    if chrono::DateTime::parse_from_rfc3339(s).is_err() {
                        let detail = "must be an RFC 3339 date-time (2006-01-02T15:04:05Z)";
                        self.report.type_errors.push(FieldError::invalid(
                            &self.path,
                            render(value),
                            detail,
                        ));
                    }
                    true
                }
                _ => false,
            },
            Scalar::Int32 => value.as_i64().is_some_and(|n| i32::try_from(n).is_ok()),
            Scalar::Int64 => value.is_i64(),
            Scalar::Number => value.is_number(),
            Scalar::Boolean => value.is_boolean(),
            Scalar::IntOrString => {
                value.is_string() || value.as_i64().is_some_and(|n| i32::try_from(n).is_ok())
            }
            Scalar::Quantity => match value {
                Value::String(s) => {
                    if !is_quantity(s) {
                        let detail = "quantities must match the regular expression '^([+-]?[0-9.]+)([eEinumkKMGTP]*[-+]?[0-9]*)$'";
                        self.report.type_errors.push(FieldError::invalid(
                            &self.path,
                            render(value),
                            detail,
                        ));
                    }
                    true
                }
                Value::Number(_) => true,
                _ => false,
            },
        };
        if !ok {
            let expected = match scalar {
                Scalar::String | Scalar::Bytes | Scalar::DateTime => "string",
                Scalar::Int32 => "int32",
                Scalar::Int64 => "int64",
                Scalar::Number => "number",
                Scalar::Boolean => "boolean",
                Scalar::IntOrString => "integer or string",
                Scalar::Quantity => "quantity (string or number)",
            };
            self.type_error(value, expected);
        }
    }

    fn type_error(&mut self, value: &Value, expected: &str) {
        let actual = match value {
            Value::Null => "null",
            Value::Bool(_) => "boolean",
            Value::Number(n) if n.is_f64() => "number with a fraction or exponent",
            Value::Number(_) => "integer out of range",
            Value::String(_) => "string",
            Value::Array(_) => "array",
            Value::Object(_) => "object",
        };
        let detail = format!("must be of type {expected}, not {actual}");
        self.report
            .type_errors
            .push(FieldError::invalid(&self.path, render(value), detail));
    }
}

/// A value as an error message shows it, cut short for big objects.
fn render(value: &Value) -> String {
    let mut s = value.to_string();
    if s.len() > 64 {
        let mut cut = 61;
        while !s.is_char_boundary(cut) {
            cut -= 1;
        }
        s.truncate(cut);
        s.push_str("...");
    }
    s
}

/// The syntax `resource.Quantity` accepts: a signed decimal number, then nothing, an SI
/// suffix (`m`, `k`, `M`, ...), a binary suffix (`Ki`, `Mi`, ...) or a decimal exponent (`e3`).
fn is_quantity(s: &str) -> bool {
    let unsigned = s.strip_prefix(['+', '-']).unwrap_or(s);
    let number_len = unsigned
        .find(|c: char| !c.is_ascii_digit() && c != '.')
        .unwrap_or(unsigned.len());
    let (number, suffix) = unsigned.split_at(number_len);
    let digits = number.chars().filter(char::is_ascii_digit).count();
    if digits == 0 || number.matches('.').count() > 1 {
        return false;
    }
    match suffix {
        "" | "n" | "u" | "m" | "k" | "M" | "G" | "T" | "P" | "E" => true,
        "Ki" | "Mi" | "Gi" | "Ti" | "Pi" | "Ei" => true,
        _ => match suffix.strip_prefix(['e', 'E']) {
            Some(exponent) => {
                let exponent = exponent.strip_prefix(['+', '-']).unwrap_or(exponent);
                !exponent.is_empty() && exponent.chars().all(|c| c.is_ascii_digit())
            }
            None => false,
        },
    }
}

/// Go's `[]byte` JSON decoding: standard base64 with padding; line breaks are ignored.
fn is_base64(s: &str) -> bool {
    use base64::Engine;
    let compact: String = s.chars().filter(|c| *c != '\n' && *c != '\r').collect();
    base64::engine::general_purpose::STANDARD
        .decode(compact.as_bytes())
        .is_ok()
}

/// Removes the fields the schema does not know (what `fieldValidation=Ignore`/`Warn` store).
/// `apiVersion`, `kind` and `metadata.managedFields` are kept.
pub fn prune_unknown(def: &ResourceDef, obj: &mut Value) {
    let tree = tree();
    let Some(root) = tree.root_of(def.schema_name) else {
        return;
    };
    if let Value::Object(map) = obj {
        map.retain(|k, _| k == "apiVersion" || k == "kind" || tree.node(root).field(k).is_some());
        for (key, value) in map.iter_mut() {
            if key == "metadata" {
                if let (Some(meta_id), Value::Object(meta)) =
                    (tree.node(root).field("metadata"), &mut *value)
                {
                    meta.retain(|k, _| {
                        k == "managedFields" || tree.node(meta_id).field(k).is_some()
                    });
                    for (k, v) in meta.iter_mut() {
                        if k != "managedFields"
                            && let Some(child) = tree.node(meta_id).field(k)
                        {
                            prune(tree, child, v);
                        }
                    }
                }
            } else if let Some(child) = tree.node(root).field(key) {
                prune(tree, child, value);
            }
        }
    }
}

fn prune(tree: &Tree, id: NodeId, value: &mut Value) {
    match (tree.node(id), value) {
        (Node::Object(_), Value::Object(map)) => {
            map.retain(|k, _| tree.node(id).field(k).is_some());
            for (k, v) in map.iter_mut() {
                if let Some(child) = tree.node(id).field(k) {
                    prune(tree, child, v);
                }
            }
        }
        (Node::Map(values), Value::Object(map)) => {
            map.values_mut().for_each(|v| prune(tree, *values, v))
        }
        (Node::Array(items), Value::Array(list)) => {
            list.iter_mut().for_each(|v| prune(tree, *items, v))
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registry::lookup_kind;

    fn def(api_version: &str, kind: &str) -> &'static ResourceDef {
        lookup_kind(api_version, kind).expect("registered kind")
    }

    fn pod_spec() -> Value {
        json!({
            "restartPolicy": "Always",
            "terminationGracePeriodSeconds": 30,
            "nodeSelector": { "kubernetes.io/os": "linux" },
            "imagePullSecrets": [{ "name": "regcred" }],
            "initContainers": [{ "name": "fetch", "image": "busybox:1.36", "command": ["sh", "-c", "true"] }],
            "containers": [{
                "name": "model",
                "image": "ghcr.io/acme/model:v2",
                "imagePullPolicy": "IfNotPresent",
                "args": ["--port", "8080"],
                "ports": [{ "name": "http", "containerPort": 8080, "protocol": "TCP" }],
                "env": [
                    { "name": "MODEL", "value": "resnet" },
                    { "name": "POD_IP", "valueFrom": { "fieldRef": { "fieldPath": "status.podIP" } } },
                ],
                "envFrom": [{ "configMapRef": { "name": "cfg" } }],
                "resources": {
                    "requests": { "cpu": "500m", "memory": "1Gi" },
                    "limits": { "cpu": 2, "memory": "2Gi", "nvidia.com/gpu": 1 },
                },
                "readinessProbe": { "httpGet": { "path": "/ready", "port": "http" }, "periodSeconds": 5 },
                "livenessProbe": { "tcpSocket": { "port": 8080 }, "initialDelaySeconds": 10 },
                "volumeMounts": [{ "name": "models", "mountPath": "/models", "readOnly": true }],
                "securityContext": { "runAsNonRoot": true, "capabilities": { "drop": ["ALL"] } },
            }],
            "volumes": [
                { "name": "models", "persistentVolumeClaim": { "claimName": "models" } },
                { "name": "cache", "emptyDir": { "sizeLimit": "1Gi" } },
                { "name": "cfg", "configMap": { "name": "cfg", "items": [{ "key": "a", "path": "a.txt" }] } },
            ],
            "tolerations": [{ "key": "gpu", "operator": "Exists", "effect": "NoSchedule" }],
            "affinity": { "nodeAffinity": { "requiredDuringSchedulingIgnoredDuringExecution": {
                "nodeSelectorTerms": [{ "matchExpressions": [{ "key": "gpu", "operator": "In", "values": ["a100"] }] }],
            }}},
        })
    }

    fn metadata() -> Value {
        json!({
            "name": "web",
            "namespace": "default",
            "labels": { "app": "web", "tier": "frontend" },
            "annotations": { "kubectl.kubernetes.io/last-applied-configuration": "{}" },
            "creationTimestamp": null,
            "managedFields": [{ "manager": "kubectl", "operation": "Apply", "fieldsV1": { "f:metadata": {} }, "bogus": 1 }],
        })
    }

    fn deployment() -> Value {
        json!({
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": metadata(),
            "spec": {
                "replicas": 3,
                "revisionHistoryLimit": 10,
                "selector": { "matchLabels": { "app": "web" } },
                "strategy": { "type": "RollingUpdate", "rollingUpdate": { "maxSurge": "25%", "maxUnavailable": 0 } },
                "template": {
                    "metadata": { "labels": { "app": "web" } },
                    "spec": pod_spec(),
                },
            },
            "status": {
                "observedGeneration": 2,
                "replicas": 3,
                "conditions": [{ "type": "Available", "status": "True", "lastTransitionTime": "2024-05-01T10:00:00Z" }],
            },
        })
    }

    #[test]
    fn kind_table_names_match_k8s_openapi() {
        for (name, root) in KINDS {
            let mut generator = SchemaSettings::draft2020_12().into_generator();
            root(&mut generator);
            assert!(generator.definitions().contains_key(*name), "{name}");
        }
    }

    #[test]
    fn every_registry_resource_has_a_schema() {
        for def in RESOURCES {
            assert!(
                resource_root(def.schema_name).is_some(),
                "{} has no k8s-openapi type",
                def.schema_name
            );
            assert!(has_schema(def), "{} has no schema", def.schema_name);
            let schema = &definitions()[def.schema_name];
            assert_eq!(
                schema["x-kubernetes-group-version-kind"][0]["kind"],
                def.kind
            );
            assert!(
                schema["properties"]["metadata"].is_object(),
                "{}",
                def.schema_name
            );
        }
    }

    #[test]
    fn misspelled_container_field_is_named_by_its_path() {
        let d = def("apps/v1", "Deployment");
        let mut obj = deployment();
        obj["spec"]["template"]["spec"]["containers"][0]["images"] = json!("nginx");
        assert_eq!(
            unknown_fields(d, &obj),
            vec!["spec.template.spec.containers[0].images".to_string()]
        );
    }

    #[test]
    fn map_keys_are_free_but_struct_fields_are_not() {
        let d = def("v1", "PersistentVolumeClaim");
        let mut pvc = json!({
            "apiVersion": "v1",
            "kind": "PersistentVolumeClaim",
            "metadata": { "name": "models" },
            "spec": {
                "accessModes": ["ReadWriteOnce"],
                "storageClassName": "local-path",
                "resources": { "requests": { "storage": "10Gi" } },
            },
        });
        assert!(unknown_fields(d, &pvc).is_empty());
        pvc["spec"]["resources"]["requests"]["storages"] = json!("1Gi");
        assert!(unknown_fields(d, &pvc).is_empty(), "requests is a map");
        pvc["spec"]["accessModesL"] = json!(["ReadWriteOnce"]);
        pvc["spec"]["resources"]["request"] = json!({});
        pvc["kinds"] = json!("PersistentVolumeClaim");
        assert_eq!(
            unknown_fields(d, &pvc),
            vec!["spec.resources.request", "spec.accessModesL", "kinds"]
        );
    }

    #[test]
    fn valid_objects_have_no_unknown_fields_or_type_errors() {
        let objects = [
            (def("apps/v1", "Deployment"), deployment()),
            (
                def("v1", "Service"),
                json!({
                    "apiVersion": "v1", "kind": "Service", "metadata": metadata(),
                    "spec": {
                        "type": "LoadBalancer",
                        "selector": { "app": "web" },
                        "ports": [{ "name": "http", "port": 80, "targetPort": "http", "protocol": "TCP", "nodePort": 30080 }],
                        "sessionAffinity": "None",
                        "clusterIP": "10.43.0.10",
                        "clusterIPs": ["10.43.0.10"],
                        "ipFamilies": ["IPv4"],
                    },
                    "status": { "loadBalancer": { "ingress": [{ "ip": "127.0.0.1" }] } },
                }),
            ),
            (
                def("v1", "ConfigMap"),
                json!({
                    "apiVersion": "v1", "kind": "ConfigMap", "metadata": metadata(),
                    "data": { "config.yaml": "a: 1\n" }, "binaryData": { "blob": "AAEC" }, "immutable": false,
                }),
            ),
            (
                def("v1", "Secret"),
                json!({
                    "apiVersion": "v1", "kind": "Secret", "metadata": metadata(), "type": "Opaque",
                    "data": { "password": "czNjcjN0" }, "stringData": { "user": "admin" },
                }),
            ),
            (
                def("v1", "Pod"),
                json!({
                    "apiVersion": "v1", "kind": "Pod", "metadata": metadata(), "spec": pod_spec(),
                    "status": {
                        "phase": "Running", "podIP": "10.42.0.5", "podIPs": [{ "ip": "10.42.0.5" }],
                        "startTime": "2024-05-01T10:00:00Z",
                        "containerStatuses": [{
                            "name": "model", "ready": true, "restartCount": 0, "image": "x", "imageID": "", "started": true,
                            "state": { "running": { "startedAt": "2024-05-01T10:00:01Z" } },
                        }],
                    },
                }),
            ),
            (
                def("batch/v1", "Job"),
                json!({
                    "apiVersion": "batch/v1", "kind": "Job", "metadata": metadata(),
                    "spec": {
                        "backoffLimit": 4, "completions": 1, "parallelism": 1, "ttlSecondsAfterFinished": 100,
                        "template": { "spec": {
                            "restartPolicy": "Never",
                            "containers": [{ "name": "train", "image": "trainer:v1", "command": ["python", "train.py"] }],
                        }},
                    },
                }),
            ),
            (
                def("batch/v1", "CronJob"),
                json!({
                    "apiVersion": "batch/v1", "kind": "CronJob", "metadata": metadata(),
                    "spec": {
                        "schedule": "*/5 * * * *", "concurrencyPolicy": "Forbid", "successfulJobsHistoryLimit": 3,
                        "jobTemplate": { "spec": { "template": { "spec": {
                            "restartPolicy": "OnFailure",
                            "containers": [{ "name": "eval", "image": "eval:v1" }],
                        }}}},
                    },
                }),
            ),
            (
                def("v1", "PersistentVolumeClaim"),
                json!({
                    "apiVersion": "v1", "kind": "PersistentVolumeClaim", "metadata": metadata(),
                    "spec": { "accessModes": ["ReadWriteOnce"], "volumeMode": "Filesystem",
                              "resources": { "requests": { "storage": "10Gi" } } },
                    "status": { "phase": "Bound", "capacity": { "storage": "10Gi" } },
                }),
            ),
        ];
        for (d, obj) in objects {
            assert_eq!(unknown_fields(d, &obj), Vec::<String>::new(), "{}", d.kind);
            assert_eq!(type_errors(d, &obj), Vec::<FieldError>::new(), "{}", d.kind);
        }
    }

    #[test]
    fn wrong_types_are_reported_with_their_path() {
        let d = def("apps/v1", "Deployment");
        let mut obj = deployment();
        obj["spec"]["replicas"] = json!("3");
        obj["spec"]["template"]["spec"]["containers"][0]["ports"][0]["containerPort"] =
            json!(8080.5);
        obj["spec"]["template"]["spec"]["containers"][0]["args"] = json!("--port 8080");
        obj["metadata"]["labels"]["version"] = json!(2);
        obj["spec"]["paused"] = json!("yes");
        let errors = type_errors(d, &obj);
        let paths: Vec<&str> = errors.iter().map(|e| e.path.as_str()).collect();
        assert_eq!(
            paths,
            vec![
                "metadata.labels.version",
                "spec.replicas",
                "spec.template.spec.containers[0].args",
                "spec.template.spec.containers[0].ports[0].containerPort",
                "spec.paused",
            ]
        );
        assert_eq!(
            errors[1].message(),
            "spec.replicas: Invalid value: \"3\": must be of type int32, not string"
        );
    }

    #[test]
    fn int_or_string_quantity_bytes_and_time() {
        let d = def("apps/v1", "Deployment");
        let mut obj = deployment();
        obj["spec"]["strategy"]["rollingUpdate"]["maxSurge"] = json!(true);
        obj["spec"]["template"]["spec"]["containers"][0]["resources"]["limits"]["cpu"] =
            json!(["2"]);
        obj["status"]["conditions"][0]["lastTransitionTime"] = json!("yesterday");
        let paths: Vec<String> = type_errors(d, &obj).into_iter().map(|e| e.path).collect();
        assert_eq!(
            paths,
            vec![
                "spec.strategy.rollingUpdate.maxSurge",
                "spec.template.spec.containers[0].resources.limits.cpu",
                "status.conditions[0].lastTransitionTime",
            ]
        );
        let mut obj = deployment();
        obj["spec"]["template"]["spec"]["containers"][0]["resources"]["requests"]["memory"] =
            json!("1 GB");
        obj["spec"]["strategy"]["rollingUpdate"]["maxSurge"] = json!(3_000_000_000_i64);
        let paths: Vec<String> = type_errors(d, &obj).into_iter().map(|e| e.path).collect();
        assert_eq!(
            paths,
            vec![
                "spec.strategy.rollingUpdate.maxSurge",
                "spec.template.spec.containers[0].resources.requests.memory"
            ]
        );
        let secret = json!({ "apiVersion": "v1", "kind": "Secret", "metadata": { "name": "s" }, "data": { "k": "not base64!" } });
        let errors = type_errors(def("v1", "Secret"), &secret);
        assert_eq!(errors.len(), 1);
        assert_eq!(errors[0].path, "data.k");
    }

    #[test]
    fn quantity_syntax() {
        for ok in [
            "1", "500m", "1.5Gi", "+2", "-1", ".5", "1.", "1e3", "2E-2", "10Ki", "0",
        ] {
            assert!(is_quantity(ok), "{ok}");
        }
        for bad in ["", "Gi", "1 GB", "1GB", "1.2.3", "1e", "abc", "1Kix", "--1"] {
            assert!(!is_quantity(bad), "{bad}");
        }
    }

    #[test]
    fn subresource_bodies_are_checked_by_definition_name() {
        let scale = json!({
            "apiVersion": "autoscaling/v1", "kind": "Scale", "metadata": { "name": "web" },
            "spec": { "replica": 3 },
        });
        let report = check_fields_by_name("io.k8s.api.autoscaling.v1.Scale", &scale);
        assert_eq!(report.unknown, vec!["spec.replica"]);
        assert_eq!(
            check_fields_by_name("no.such.Kind", &scale),
            FieldReport::default()
        );
    }

    #[test]
    fn prune_keeps_known_fields_only() {
        let d = def("apps/v1", "Deployment");
        let mut obj = deployment();
        let clean = obj.clone();
        obj["spec"]["template"]["spec"]["containers"][0]["images"] = json!("nginx");
        obj["spec"]["bogus"] = json!({ "a": 1 });
        obj["metadata"]["labelz"] = json!({});
        prune_unknown(d, &mut obj);
        assert_eq!(obj, clean);
        assert!(unknown_fields(d, &obj).is_empty());
    }

    #[test]
    fn patch_metadata_of_well_known_fields() {
        let merge_by = |key| {
            Some(PatchMeta {
                strategy: "merge",
                merge_key: Some(key),
            })
        };
        assert_eq!(
            patch_meta("io.k8s.api.core.v1.PodSpec", "containers"),
            merge_by("name")
        );
        assert_eq!(
            patch_meta("io.k8s.api.core.v1.Container", "ports"),
            merge_by("containerPort")
        );
        assert_eq!(
            patch_meta("io.k8s.api.core.v1.Container", "env"),
            merge_by("name")
        );
        assert_eq!(
            patch_meta("io.k8s.api.core.v1.Container", "volumeMounts"),
            merge_by("mountPath")
        );
        assert_eq!(
            patch_meta("io.k8s.api.core.v1.ServiceSpec", "ports"),
            merge_by("port")
        );
        assert_eq!(
            patch_meta("io.k8s.api.core.v1.EphemeralContainer", "env"),
            merge_by("name")
        );
        assert_eq!(
            patch_meta("io.k8s.api.core.v1.PodSpec", "volumes"),
            Some(PatchMeta {
                strategy: "merge,retainKeys",
                merge_key: Some("name")
            })
        );
        assert_eq!(
            patch_meta("io.k8s.api.apps.v1.DeploymentSpec", "strategy"),
            Some(PatchMeta {
                strategy: "retainKeys",
                merge_key: None
            })
        );
        assert_eq!(
            patch_meta(
                "io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta",
                "finalizers"
            ),
            Some(PatchMeta {
                strategy: "merge",
                merge_key: None
            })
        );
        assert_eq!(
            patch_meta(
                "io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta",
                "ownerReferences"
            ),
            merge_by("uid")
        );
        assert_eq!(
            patch_meta("io.k8s.api.core.v1.PodSpec", "tolerations"),
            None
        );
        assert_eq!(
            field_meta("io.k8s.api.core.v1.PodSpec", "tolerations").and_then(|m| m.list_type),
            Some("atomic")
        );
    }

    #[test]
    fn field_schema_names_let_a_walker_descend() {
        let steps = [
            (
                "io.k8s.api.apps.v1.Deployment",
                "spec",
                Some("io.k8s.api.apps.v1.DeploymentSpec"),
            ),
            (
                "io.k8s.api.apps.v1.DeploymentSpec",
                "template",
                Some("io.k8s.api.core.v1.PodTemplateSpec"),
            ),
            (
                "io.k8s.api.core.v1.PodTemplateSpec",
                "spec",
                Some("io.k8s.api.core.v1.PodSpec"),
            ),
            (
                "io.k8s.api.core.v1.PodSpec",
                "containers",
                Some("io.k8s.api.core.v1.Container"),
            ),
            (
                "io.k8s.api.core.v1.Container",
                "ports",
                Some("io.k8s.api.core.v1.ContainerPort"),
            ),
            (
                "io.k8s.api.core.v1.ResourceRequirements",
                "limits",
                Some(QUANTITY),
            ),
            ("io.k8s.api.core.v1.Container", "image", None),
            ("io.k8s.api.core.v1.Container", "nope", None),
        ];
        for (parent, field, expected) in steps {
            assert_eq!(
                field_schema_name(parent, field),
                expected,
                "{parent}.{field}"
            );
        }
    }

    #[test]
    fn definitions_use_openapi_v3_references() {
        let dep = &definitions()["io.k8s.api.apps.v1.Deployment"];
        let spec = &dep["properties"]["spec"];
        assert_eq!(
            spec["allOf"][0]["$ref"],
            "#/components/schemas/io.k8s.api.apps.v1.DeploymentSpec"
        );
        assert!(spec["description"].is_string());
        let text = serde_json::to_string(definitions()).unwrap_or_default();
        assert!(!text.contains("#/$defs/"));
        let containers = &definitions()["io.k8s.api.core.v1.PodSpec"]["properties"]["containers"];
        assert_eq!(containers["x-kubernetes-patch-merge-key"], "name");
        assert_eq!(containers["x-kubernetes-patch-strategy"], "merge");
        assert_eq!(containers["x-kubernetes-list-type"], "map");
        assert_eq!(
            definitions()["io.k8s.apimachinery.pkg.apis.meta.v1.LabelSelector"]["x-kubernetes-map-type"],
            "atomic"
        );
    }
}
