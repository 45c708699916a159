//! Defaults of the core (v1) group: pods and pod templates, services, storage, namespaces, nodes.

use super::{
    canonical_quantity, canonical_requirements, canonical_resource_list, default, default_str,
    each_obj, obj_entry, obj_mut, str_field,
};
use serde_json::{Map, Value, json};

/// Pods get the pod-spec defaults plus what only pods (not templates) get: service links,
/// requests copied from limits, and the values Kubernetes' default admission plugins set
/// (service account, priority, not-ready/unreachable tolerations).
pub(super) fn pod(obj: &mut Value) {
    let Some(root) = obj.as_object_mut() else {
        return;
    };
    let Some(spec) = obj_entry(root, "spec") else {
        return;
    };
    pod_spec(spec);
    default(spec, "enableServiceLinks", json!(true));
    default_str(spec, "serviceAccountName", "default");
    if let Some(sa) = spec.get("serviceAccountName").cloned() {
        default(spec, "serviceAccount", sa);
    }
    // The Priority admission plugin: the two built-in classes have fixed values.
    let priority = match str_field(spec, "priorityClassName") {
        "system-node-critical" => 2_000_001_000,
        "system-cluster-critical" => 2_000_000_000,
        _ => 0,
    };
    default(spec, "priority", json!(priority));
    default_str(spec, "preemptionPolicy", "PreemptLowerPriority");
    for key in ["containers", "initContainers"] {
        for c in each_obj(spec, key) {
            requests_from_limits(c);
        }
    }
    default_tolerations(spec);
    let qos = qos_class(spec_of(obj));
    let Some(root) = obj.as_object_mut() else {
        return;
    };
    if let Some(status) = obj_entry(root, "status") {
        default_str(status, "phase", "Pending");
        default_str(status, "qosClass", qos);
    }
}

fn spec_of(obj: &Value) -> &Value {
    obj.get("spec").unwrap_or(&Value::Null)
}

/// The pod's QoS class from its containers' cpu and memory requests and limits.
pub fn qos_class(spec: &Value) -> &'static str {
    let mut any = false;
    let mut guaranteed = true;
    let containers = ["initContainers", "containers"]
        .into_iter()
        .filter_map(|k| spec.get(k).and_then(Value::as_array))
        .flatten();
    for c in containers {
        let res = c.get("resources");
        let requests = res
            .and_then(|r| r.get("requests"))
            .and_then(Value::as_object);
        let limits = res.and_then(|r| r.get("limits")).and_then(Value::as_object);
        for r in ["cpu", "memory"] {
            let req = requests.and_then(|m| m.get(r)).and_then(Value::as_str);
            let lim = limits.and_then(|m| m.get(r)).and_then(Value::as_str);
            let nonzero = |q: Option<&str>| {
                q.and_then(|q| crate::quantity::parse_quantity(q).ok())
                    .is_some_and(|q| !q.is_zero())
            };
            if nonzero(req) || nonzero(lim) {
                any = true;
            }
            let same = match (req, lim) {
                (Some(a), Some(b)) => {
                    let (a, b) = (
                        crate::quantity::parse_quantity(a),
                        crate::quantity::parse_quantity(b),
                    );
                    matches!((a, b), (Ok(a), Ok(b)) if a == b)
                }
                (None, Some(_)) => true,
                _ => false,
            };
            if !nonzero(lim) || !same {
                guaranteed = false;
            }
        }
    }
    if !any {
        "BestEffort"
    } else if guaranteed {
        "Guaranteed"
    } else {
        "Burstable"
    }
}

/// A container that sets limits but not requests gets requests equal to its limits.
fn requests_from_limits(c: &mut Map<String, Value>) {
    let Some(res) = obj_mut(c, "resources") else {
        return;
    };
    let Some(limits) = res.get("limits").and_then(Value::as_object).cloned() else {
        return;
    };
    let Some(requests) = obj_entry(res, "requests") else {
        return;
    };
    for (k, v) in limits {
        requests.entry(k).or_insert(v);
    }
}

/// The DefaultTolerationSeconds admission plugin: tolerate not-ready and unreachable nodes
/// for 300s so pods are evicted from failed nodes after five minutes.
fn default_tolerations(spec: &mut Map<String, Value>) {
    let tolerations = spec.entry("tolerations").or_insert_with(|| json!([]));
    if tolerations.is_null() {
        *tolerations = json!([]);
    }
    let Some(list) = tolerations.as_array_mut() else {
        return;
    };
    for taint in [
        "node.kubernetes.io/not-ready",
        "node.kubernetes.io/unreachable",
    ] {
        let tolerated = list.iter().any(|t| {
            let key = t.get("key").and_then(Value::as_str).unwrap_or("");
            let effect = t.get("effect").and_then(Value::as_str).unwrap_or("");
            let op = t.get("operator").and_then(Value::as_str).unwrap_or("Equal");
            (key == taint || (key.is_empty() && op == "Exists"))
                && (effect.is_empty() || effect == "NoExecute")
        });
        if !tolerated {
            list.push(json!({
                "effect": "NoExecute",
                "key": taint,
                "operator": "Exists",
                "tolerationSeconds": 300,
            }));
        }
    }
}

/// A pod template (`spec.template` of workloads): defaults its pod spec.
pub(super) fn pod_template(template: &mut Map<String, Value>) {
    if let Some(spec) = obj_entry(template, "spec") {
        pod_spec(spec);
    }
}

/// SetDefaults_PodSpec and everything nested in it.
pub(super) fn pod_spec(spec: &mut Map<String, Value>) {
    default_str(spec, "dnsPolicy", "ClusterFirst");
    default_str(spec, "restartPolicy", "Always");
    default(spec, "securityContext", json!({}));
    default(spec, "terminationGracePeriodSeconds", json!(30));
    default_str(spec, "schedulerName", "default-scheduler");
    canonical_resource_list(spec, "overhead");
    canonical_requirements(spec, "resources");
    let host_network = spec
        .get("hostNetwork")
        .and_then(Value::as_bool)
        .unwrap_or(false);
    for key in ["containers", "initContainers", "ephemeralContainers"] {
        for c in each_obj(spec, key) {
            container(c, host_network);
        }
    }
    for v in each_obj(spec, "volumes") {
        volume(v);
    }
}

fn container(c: &mut Map<String, Value>, host_network: bool) {
    if !matches!(c.get("imagePullPolicy").and_then(Value::as_str), Some(p) if !p.is_empty()) {
        let policy = image_pull_policy(str_field(c, "image"));
        c.insert("imagePullPolicy".into(), json!(policy));
    }
    // Kubernetes always shows `resources: {}` on a container that sets none.
    default(c, "resources", json!({}));
    canonical_requirements(c, "resources");
    default_str(c, "terminationMessagePath", "/dev/termination-log");
    default_str(c, "terminationMessagePolicy", "File");
    for p in each_obj(c, "ports") {
        default_str(p, "protocol", "TCP");
        if host_network
            && p.get("hostPort").and_then(Value::as_i64).unwrap_or(0) == 0
            && let Some(cp) = p.get("containerPort").cloned()
        {
            p.insert("hostPort".into(), cp);
        }
    }
    for env in each_obj(c, "env") {
        if let Some(from) = obj_mut(env, "valueFrom") {
            if let Some(f) = obj_mut(from, "fieldRef") {
                default_str(f, "apiVersion", "v1");
            }
            if let Some(r) = obj_mut(from, "resourceFieldRef") {
                default(r, "divisor", json!("0"));
                if let Some(d) = r.get_mut("divisor") {
                    canonical_quantity(d, false);
                }
            }
        }
    }
    for probe in ["livenessProbe", "readinessProbe", "startupProbe"] {
        if let Some(p) = obj_mut(c, probe) {
            default(p, "timeoutSeconds", json!(1));
            default(p, "periodSeconds", json!(10));
            default(p, "successThreshold", json!(1));
            default(p, "failureThreshold", json!(3));
            handler(p);
        }
    }
    if let Some(lc) = obj_mut(c, "lifecycle") {
        for hook in ["postStart", "preStop"] {
            if let Some(h) = obj_mut(lc, hook) {
                handler(h);
            }
        }
    }
}

/// Always for `:latest` or untagged images (they may change under the same name),
/// IfNotPresent for tagged or digest-pinned ones.
fn image_pull_policy(image: &str) -> &'static str {
    if image.contains('@') {
        return "IfNotPresent";
    }
    // The tag is after the last ':' that follows the last '/' (a registry may have a port).
    let last = image.rsplit('/').next().unwrap_or(image);
    match last.rsplit_once(':') {
        Some((_, "latest")) | None => "Always",
        Some(_) => "IfNotPresent",
    }
}

fn handler(h: &mut Map<String, Value>) {
    if let Some(http) = obj_mut(h, "httpGet") {
        default_str(http, "path", "/");
        default_str(http, "scheme", "HTTP");
    }
}

fn volume(v: &mut Map<String, Value>) {
    const SOURCES: &[&str] = &[
        "hostPath",
        "emptyDir",
        "gcePersistentDisk",
        "awsElasticBlockStore",
        "gitRepo",
        "secret",
        "nfs",
        "iscsi",
        "glusterfs",
        "persistentVolumeClaim",
        "rbd",
        "flexVolume",
        "cinder",
        "cephfs",
        "flocker",
        "downwardAPI",
        "fc",
        "azureFile",
        "configMap",
        "vsphereVolume",
        "quobyte",
        "azureDisk",
        "photonPersistentDisk",
        "projected",
        "portworxVolume",
        "scaleIO",
        "storageos",
        "csi",
        "ephemeral",
        "image",
    ];
    if !SOURCES
        .iter()
        .any(|s| v.get(*s).is_some_and(|x| !x.is_null()))
    {
        v.insert("emptyDir".into(), json!({}));
    }
    for src in ["secret", "configMap", "downwardAPI", "projected"] {
        if let Some(s) = obj_mut(v, src) {
            default(s, "defaultMode", json!(420));
        }
    }
    if let Some(hp) = obj_mut(v, "hostPath") {
        default(hp, "type", json!(""));
    }
    if let Some(e) = obj_mut(v, "emptyDir")
        && let Some(limit) = e.get_mut("sizeLimit")
    {
        canonical_quantity(limit, false);
    }
    if let Some(d) = obj_mut(v, "downwardAPI") {
        downward_items(d);
    }
    if let Some(p) = obj_mut(v, "projected") {
        for s in each_obj(p, "sources") {
            if let Some(d) = obj_mut(s, "downwardAPI") {
                downward_items(d);
            }
            if let Some(t) = obj_mut(s, "serviceAccountToken") {
                default(t, "expirationSeconds", json!(3600));
            }
        }
    }
    if let Some(e) = obj_mut(v, "ephemeral")
        && let Some(t) = obj_mut(e, "volumeClaimTemplate")
        && let Some(spec) = obj_mut(t, "spec")
    {
        claim_spec(spec);
    }
    if let Some(i) = obj_mut(v, "iscsi") {
        default_str(i, "iscsiInterface", "default");
    }
}

fn downward_items(d: &mut Map<String, Value>) {
    for item in each_obj(d, "items") {
        if let Some(f) = obj_mut(item, "fieldRef") {
            default_str(f, "apiVersion", "v1");
        }
        if let Some(r) = obj_mut(item, "resourceFieldRef") {
            default(r, "divisor", json!("0"));
            if let Some(d) = r.get_mut("divisor") {
                canonical_quantity(d, false);
            }
        }
    }
}

/// SetDefaults_Service. ClusterIP and NodePort allocation is the REST layer's job, not this.
pub(super) fn service(obj: &mut Value) {
    let Some(root) = obj.as_object_mut() else {
        return;
    };
    let Some(spec) = obj_entry(root, "spec") else {
        return;
    };
    default_str(spec, "sessionAffinity", "None");
    if str_field(spec, "sessionAffinity") == "None" {
        spec.remove("sessionAffinityConfig");
    }
    if str_field(spec, "sessionAffinity") == "ClientIP"
        && let Some(cfg) = obj_entry(spec, "sessionAffinityConfig")
        && let Some(ip) = obj_entry(cfg, "clientIP")
    {
        default(ip, "timeoutSeconds", json!(10800));
    }
    default_str(spec, "type", "ClusterIP");
    let ty = str_field(spec, "type").to_string();
    for p in each_obj(spec, "ports") {
        default_str(p, "protocol", "TCP");
        let missing = match p.get("targetPort") {
            None | Some(Value::Null) => true,
            Some(Value::Number(n)) => n.as_i64() == Some(0),
            Some(Value::String(s)) => s.is_empty(),
            _ => false,
        };
        if missing && let Some(port) = p.get("port").cloned() {
            p.insert("targetPort".into(), port);
        }
    }
    let has_external_ips = spec
        .get("externalIPs")
        .and_then(Value::as_array)
        .is_some_and(|a| !a.is_empty());
    let externally_accessible =
        ty == "NodePort" || ty == "LoadBalancer" || (ty == "ClusterIP" && has_external_ips);
    if externally_accessible {
        default_str(spec, "externalTrafficPolicy", "Cluster");
    }
    if matches!(ty.as_str(), "ClusterIP" | "NodePort" | "LoadBalancer") {
        default_str(spec, "internalTrafficPolicy", "Cluster");
        // skiff is single-stack IPv4; the REST layer would otherwise choose these.
        default_str(spec, "ipFamilyPolicy", "SingleStack");
        let empty = spec
            .get("ipFamilies")
            .and_then(Value::as_array)
            .is_none_or(|a| a.is_empty());
        if empty {
            spec.insert("ipFamilies".into(), json!(["IPv4"]));
        }
        // clusterIPs mirrors clusterIP once one is known.
        let ip = str_field(spec, "clusterIP").to_string();
        let ips_empty = spec
            .get("clusterIPs")
            .and_then(Value::as_array)
            .is_none_or(|a| a.is_empty());
        if !ip.is_empty() && ips_empty {
            spec.insert("clusterIPs".into(), json!([ip]));
        }
    }
    if ty == "LoadBalancer" {
        default(spec, "allocateLoadBalancerNodePorts", json!(true));
    }
    if ty == "LoadBalancer"
        && let Some(status) = obj_mut(root, "status")
        && let Some(lb) = obj_mut(status, "loadBalancer")
    {
        for ing in each_obj(lb, "ingress") {
            if ing
                .get("ip")
                .and_then(Value::as_str)
                .is_some_and(|s| !s.is_empty())
            {
                default_str(ing, "ipMode", "VIP");
            }
        }
    }
}

pub(super) fn endpoints(obj: &mut Value) {
    let Some(root) = obj.as_object_mut() else {
        return;
    };
    for subset in each_obj(root, "subsets") {
        for p in each_obj(subset, "ports") {
            default_str(p, "protocol", "TCP");
        }
    }
}

pub(super) fn secret(obj: &mut Value) {
    if let Some(root) = obj.as_object_mut() {
        default_str(root, "type", "Opaque");
    }
}

/// SetDefaults_Namespace (the immutable name label), the namespace strategy's
/// `kubernetes` finalizer, and phase Active.
pub(super) fn namespace(obj: &mut Value) {
    let Some(root) = obj.as_object_mut() else {
        return;
    };
    let name = root
        .get("metadata")
        .and_then(|m| m.get("name"))
        .and_then(Value::as_str)
        .map(str::to_string);
    if let Some(name) = name
        && !name.is_empty()
        && let Some(meta) = obj_entry(root, "metadata")
        && let Some(labels) = obj_entry(meta, "labels")
    {
        labels.insert("kubernetes.io/metadata.name".into(), json!(name));
    }
    if let Some(spec) = obj_entry(root, "spec") {
        default(spec, "finalizers", json!(["kubernetes"]));
    }
    if let Some(status) = obj_entry(root, "status") {
        default_str(status, "phase", "Active");
    }
}

/// A node that reports capacity but not allocatable can allocate all of it.
pub(super) fn node(obj: &mut Value) {
    let Some(root) = obj.as_object_mut() else {
        return;
    };
    if let Some(status) = obj_mut(root, "status") {
        canonical_resource_list(status, "capacity");
        canonical_resource_list(status, "allocatable");
        if let Some(cap) = status.get("capacity").cloned() {
            default(status, "allocatable", cap);
        }
    }
}

pub(super) fn persistent_volume(obj: &mut Value) {
    let Some(root) = obj.as_object_mut() else {
        return;
    };
    if let Some(spec) = obj_entry(root, "spec") {
        canonical_resource_list(spec, "capacity");
        default_str(spec, "persistentVolumeReclaimPolicy", "Retain");
        default_str(spec, "volumeMode", "Filesystem");
        if let Some(hp) = obj_mut(spec, "hostPath") {
            default(hp, "type", json!(""));
        }
    }
    if let Some(status) = obj_entry(root, "status") {
        default_str(status, "phase", "Pending");
    }
}

pub(super) fn persistent_volume_claim(obj: &mut Value) {
    let Some(root) = obj.as_object_mut() else {
        return;
    };
    if let Some(spec) = obj_entry(root, "spec") {
        claim_spec(spec);
    }
    if let Some(status) = obj_entry(root, "status") {
        default_str(status, "phase", "Pending");
        canonical_resource_list(status, "capacity");
        canonical_resource_list(status, "allocatedResources");
    }
}

/// SetDefaults_PersistentVolumeClaimSpec (also used by claim templates).
pub(super) fn claim_spec(spec: &mut Map<String, Value>) {
    default_str(spec, "volumeMode", "Filesystem");
    canonical_requirements(spec, "resources");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pull_policy_follows_the_tag() {
        assert_eq!(image_pull_policy("nginx"), "Always");
        assert_eq!(image_pull_policy("nginx:latest"), "Always");
        assert_eq!(image_pull_policy("nginx:1.27"), "IfNotPresent");
        assert_eq!(image_pull_policy("localhost:5000/model"), "Always");
        assert_eq!(image_pull_policy("localhost:5000/model:v2"), "IfNotPresent");
        assert_eq!(image_pull_policy("nginx@sha256:abcd"), "IfNotPresent");
    }
}
