//! Helpers shared by the ReplicaSet and Deployment controllers: selectors, controller references, pod readiness, errors.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta, OwnerReference};
use k8s_openapi::jiff::Timestamp;
use kube::Resource;

/// Why a reconcile failed; conflicts are expected under concurrency and retried quickly.
#[derive(Debug, thiserror::Error)]
pub enum ReconcileError {
    #[error("kubernetes API: {0}")]
    Kube(#[from] kube::Error),
    #[error("serialization: {0}")]
    Json(#[from] serde_json::Error),
    #[error("{0}")]
    Invalid(String),
}

impl ReconcileError {
    /// True when the API answered 409 (a stale resourceVersion or a name taken).
    pub fn is_conflict(&self) -> bool {
        matches!(self, ReconcileError::Kube(kube::Error::Api(s)) if s.code == 409)
    }
}

/// True when the API error is a 404.
pub fn is_not_found(e: &kube::Error) -> bool {
    matches!(e, kube::Error::Api(s) if s.code == 404)
}

/// True when the API error is a 409 (AlreadyExists or Conflict).
pub fn is_conflict(e: &kube::Error) -> bool {
    matches!(e, kube::Error::Api(s) if s.code == 409)
}

/// Whether `labels` satisfy a `metav1.LabelSelector`. An empty selector selects nothing here:
/// a workload controller must never claim every object in a namespace.
pub fn selector_matches(sel: &LabelSelector, labels: Option<&BTreeMap<String, String>>) -> bool {
    let empty = BTreeMap::new();
    let labels = labels.unwrap_or(&empty);
    let ml = sel.match_labels.as_ref();
    let me = sel.match_expressions.as_ref();
    if ml.is_none_or(|m| m.is_empty()) && me.is_none_or(|m| m.is_empty()) {
        return false;
    }
    let labels_ok = ml.is_none_or(|m| m.iter().all(|(k, v)| labels.get(k) == Some(v)));
    let exprs_ok = me.is_none_or(|exprs| {
        exprs.iter().all(|e| {
            let values = e.values.as_deref().unwrap_or_default();
            let got = labels.get(&e.key);
            match e.operator.as_str() {
                "In" => got.is_some_and(|g| values.contains(g)),
                "NotIn" => got.is_none_or(|g| !values.contains(g)),
                "Exists" => got.is_some(),
                "DoesNotExist" => got.is_none(),
                _ => false,
            }
        })
    });
    labels_ok && exprs_ok
}

/// The controller reference (`controller: true`) of an object, if any.
pub fn controller_ref(meta: &ObjectMeta) -> Option<&OwnerReference> {
    meta.owner_references
        .as_ref()?
        .iter()
        .find(|o| o.controller == Some(true))
}

/// A controller reference pointing at `owner`, as Kubernetes' workload controllers write it.
pub fn owner_ref<K: Resource<DynamicType = ()>>(owner: &K) -> OwnerReference {
    OwnerReference {
        api_version: K::api_version(&()).into_owned(),
        kind: K::kind(&()).into_owned(),
        name: owner.meta().name.clone().unwrap_or_default(),
        uid: owner.meta().uid.clone().unwrap_or_default(),
        controller: Some(true),
        block_owner_deletion: Some(true),
    }
}

/// True when the pod still counts towards its controller (not finished, not being deleted).
pub fn pod_is_active(pod: &Pod) -> bool {
    let phase = pod.status.as_ref().and_then(|s| s.phase.as_deref());
    pod.metadata.deletion_timestamp.is_none() && !matches!(phase, Some("Succeeded" | "Failed"))
}

/// The time the pod's Ready condition became True, if it is ready.
pub fn pod_ready_since(pod: &Pod) -> Option<Option<Timestamp>> {
    let cond = pod
        .status
        .as_ref()?
        .conditions
        .as_ref()?
        .iter()
        .find(|c| c.type_ == "Ready")?;
    (cond.status == "True").then(|| cond.last_transition_time.as_ref().map(|t| t.0))
}

/// True when the pod's Ready condition is True.
pub fn pod_is_ready(pod: &Pod) -> bool {
    pod_ready_since(pod).is_some()
}

/// How long until a ready pod counts as available (`None`: not ready; zero: available now).
/// A Ready condition without a transition time counts as ready since forever.
pub fn pod_available_in(pod: &Pod, min_ready_seconds: i64, now: Timestamp) -> Option<i64> {
    let since = pod_ready_since(pod)?;
    if min_ready_seconds <= 0 {
        return Some(0);
    }
    let Some(since) = since else { return Some(0) };
    let elapsed_ms = since.duration_until(now).as_millis() as i64;
    Some((min_ready_seconds * 1000 - elapsed_ms).max(0))
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelectorRequirement;

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn selector_match_labels_and_expressions() {
        let sel = LabelSelector {
            match_labels: Some(labels(&[("app", "web")])),
            match_expressions: Some(vec![LabelSelectorRequirement {
                key: "tier".into(),
                operator: "In".into(),
                values: Some(vec!["a".into(), "b".into()]),
            }]),
        };
        assert!(selector_matches(
            &sel,
            Some(&labels(&[("app", "web"), ("tier", "a")]))
        ));
        assert!(!selector_matches(
            &sel,
            Some(&labels(&[("app", "web"), ("tier", "c")]))
        ));
        assert!(!selector_matches(&sel, Some(&labels(&[("tier", "a")]))));
        assert!(!selector_matches(&sel, None));
    }

    #[test]
    fn empty_selector_selects_nothing() {
        assert!(!selector_matches(
            &LabelSelector::default(),
            Some(&labels(&[("a", "b")]))
        ));
    }
}
