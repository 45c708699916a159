//! Defaults of the apps/v1 group: Deployment, ReplicaSet, StatefulSet, DaemonSet.

use super::core::{claim_spec, pod_template};
use super::{default, default_str, each_obj, obj_entry, obj_mut, str_field};
use serde_json::{Map, Value, json};

/// The spec of a workload with its pod template defaulted.
fn workload_spec(obj: &mut Value) -> Option<&mut Map<String, Value>> {
    let spec = obj_entry(obj.as_object_mut()?, "spec")?;
    if let Some(t) = obj_entry(spec, "template") {
        pod_template(t);
    }
    Some(spec)
}

pub(super) fn deployment(obj: &mut Value) {
    let Some(spec) = workload_spec(obj) else {
        return;
    };
    default(spec, "replicas", json!(1));
    if let Some(strategy) = obj_entry(spec, "strategy") {
        default_str(strategy, "type", "RollingUpdate");
        if str_field(strategy, "type") == "RollingUpdate"
            && let Some(ru) = obj_entry(strategy, "rollingUpdate")
        {
            default(ru, "maxUnavailable", json!("25%"));
            default(ru, "maxSurge", json!("25%"));
        }
    }
    default(spec, "revisionHistoryLimit", json!(10));
    default(spec, "progressDeadlineSeconds", json!(600));
}

pub(super) fn replica_set(obj: &mut Value) {
    let Some(spec) = workload_spec(obj) else {
        return;
    };
    default(spec, "replicas", json!(1));
}

pub(super) fn stateful_set(obj: &mut Value) {
    let Some(spec) = workload_spec(obj) else {
        return;
    };
    default_str(spec, "podManagementPolicy", "OrderedReady");
    if let Some(strategy) = obj_entry(spec, "updateStrategy") {
        // Kubernetes only creates rollingUpdate (and so the partition) when it also
        // defaulted the type; an explicit RollingUpdate without it stays as written.
        if str_field(strategy, "type").is_empty() {
            strategy.insert("type".into(), json!("RollingUpdate"));
            default(strategy, "rollingUpdate", json!({}));
        }
        if str_field(strategy, "type") == "RollingUpdate"
            && let Some(ru) = obj_mut(strategy, "rollingUpdate")
        {
            default(ru, "partition", json!(0));
        }
    }
    if let Some(policy) = obj_entry(spec, "persistentVolumeClaimRetentionPolicy") {
        default_str(policy, "whenDeleted", "Retain");
        default_str(policy, "whenScaled", "Retain");
    }
    default(spec, "replicas", json!(1));
    default(spec, "revisionHistoryLimit", json!(10));
    for claim in each_obj(spec, "volumeClaimTemplates") {
        default_str(claim, "apiVersion", "v1");
        default_str(claim, "kind", "PersistentVolumeClaim");
        if let Some(s) = obj_entry(claim, "spec") {
            claim_spec(s);
        }
        if let Some(status) = obj_entry(claim, "status") {
            default_str(status, "phase", "Pending");
        }
    }
}

pub(super) fn daemon_set(obj: &mut Value) {
    let Some(spec) = workload_spec(obj) else {
        return;
    };
    if let Some(strategy) = obj_entry(spec, "updateStrategy") {
        default_str(strategy, "type", "RollingUpdate");
        if str_field(strategy, "type") == "RollingUpdate"
            && let Some(ru) = obj_entry(strategy, "rollingUpdate")
        {
            default(ru, "maxUnavailable", json!(1));
            default(ru, "maxSurge", json!(0));
        }
    }
    default(spec, "revisionHistoryLimit", json!(10));
}
