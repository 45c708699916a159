//! ReplicaSet controller: keeps `spec.replicas` pods matching the selector and reports their status.
//!
//! Each reconcile reads the ReplicaSet and its namespace's pods straight from the API (a
//! consistent read, not the watch cache), and the runtime never runs two reconciles of the same
//! ReplicaSet at once. A reconcile therefore always sees the pods its predecessor created, which
//! is what Kubernetes' "expectations" provide: a lagging watch cannot cause duplicate creates.

use std::cmp::Ordering;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::apps::v1::{ReplicaSet, ReplicaSetStatus};
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::reflector::ObjectRef;
use kube::runtime::watcher;
use kube::{Client, ResourceExt};
use serde_json::json;

use crate::workload::{
    ReconcileError, controller_ref, is_not_found, owner_ref, pod_available_in, pod_is_active,
    pod_is_ready, selector_matches,
};

/// Most pods created or deleted in one reconcile (Kubernetes' `burstReplicas`).
const BURST_REPLICAS: usize = 500;

/// Periodic resync, so that a missed event is corrected eventually.
const RESYNC: Duration = Duration::from_secs(300);

struct Ctx {
    client: Client,
}

/// Starts the ReplicaSet controller; aborting the handle stops it.
pub fn start(client: Client) -> tokio::task::JoinHandle<()> {
    tokio::spawn(run(client))
}

async fn run(client: Client) {
    let rs_api: Api<ReplicaSet> = Api::all(client.clone());
    let pod_api: Api<Pod> = Api::all(client.clone());
    let controller = Controller::new(rs_api, watcher::Config::default());
    let store = controller.store();
    controller
        .owns(pod_api.clone(), watcher::Config::default())
        // Orphans (no controller) that a ReplicaSet's selector matches are candidates for adoption.
        .watches(pod_api, watcher::Config::default(), move |pod: Pod| {
            if controller_ref(&pod.metadata).is_some() {
                return Vec::new();
            }
            let ns = pod.namespace();
            store
                .state()
                .into_iter()
                .filter(|rs| rs.namespace() == ns)
                .filter(|rs| {
                    rs.spec.as_ref().is_some_and(|s| {
                        selector_matches(&s.selector, pod.metadata.labels.as_ref())
                    })
                })
                .map(|rs| ObjectRef::from_obj(rs.as_ref()))
                .collect()
        })
        .run(reconcile, error_policy, Arc::new(Ctx { client }))
        .for_each(|res| async move {
            if let Err(e) = res {
                tracing::debug!(error = %e, "replicaset reconcile");
            }
        })
        .await;
}

fn error_policy(_rs: Arc<ReplicaSet>, err: &ReconcileError, _ctx: Arc<Ctx>) -> Action {
    if err.is_conflict() {
        Action::requeue(Duration::from_millis(50))
    } else {
        tracing::warn!(error = %err, "replicaset reconcile failed");
        Action::requeue(Duration::from_secs(1))
    }
}

async fn reconcile(obj: Arc<ReplicaSet>, ctx: Arc<Ctx>) -> Result<Action, ReconcileError> {
    let ns = obj.namespace().unwrap_or_default();
    let name = obj.name_any();
    let rs_api: Api<ReplicaSet> = Api::namespaced(ctx.client.clone(), &ns);
    let pod_api: Api<Pod> = Api::namespaced(ctx.client.clone(), &ns);
    let Some(rs) = rs_api.get_opt(&name).await? else {
        return Ok(Action::await_change());
    };
    let Some(spec) = rs.spec.clone() else {
        return Ok(Action::await_change());
    };
    let uid = rs.metadata.uid.clone().unwrap_or_default();
    let deleting = rs.metadata.deletion_timestamp.is_some();
    let pods = pod_api.list(&ListParams::default()).await?.items;

    // Claim: keep our matching pods, release ours that stopped matching, adopt matching orphans.
    let mut owned = Vec::new();
    for pod in pods {
        let matches = selector_matches(&spec.selector, pod.metadata.labels.as_ref());
        match controller_ref(&pod.metadata) {
            Some(r) if r.uid == uid => {
                if matches {
                    owned.push(pod);
                } else {
                    release(&pod_api, &pod, &uid).await?;
                }
            }
            Some(_) => {}
            None if matches && !deleting && pod.metadata.deletion_timestamp.is_none() => {
                owned.push(adopt(&pod_api, pod, &rs).await?);
            }
            None => {}
        }
    }
    let mut active: Vec<Pod> = owned.into_iter().filter(pod_is_active).collect();

    if !deleting {
        let want = spec.replicas.unwrap_or(1).max(0) as usize;
        if active.len() < want {
            let count = (want - active.len()).min(BURST_REPLICAS);
            let created = create_pods(&pod_api, &rs, count).await?;
            active.extend(created);
        } else if active.len() > want {
            let count = (active.len() - want).min(BURST_REPLICAS);
            let victims = pods_to_delete(&active, count);
            for v in &victims {
                match pod_api.delete(v, &DeleteParams::default()).await {
                    Ok(_) => {}
                    Err(e) if is_not_found(&e) => {}
                    Err(e) => return Err(e.into()),
                }
            }
            active.retain(|p| !victims.contains(&p.name_any()));
        }
    }

    // Status, from the pods as they are after this reconcile's creates and deletes.
    let now = Timestamp::now();
    let min_ready = i64::from(spec.min_ready_seconds.unwrap_or(0));
    let template_labels = spec
        .template
        .as_ref()
        .and_then(|t| t.metadata.as_ref())
        .and_then(|m| m.labels.clone())
        .unwrap_or_default();
    let mut next_check: Option<i64> = None;
    let mut available = 0;
    for p in &active {
        match pod_available_in(p, min_ready, now) {
            Some(0) => available += 1,
            Some(ms) => next_check = Some(next_check.map_or(ms, |n| n.min(ms))),
            None => {}
        }
    }
    let fully_labeled = active
        .iter()
        .filter(|p| {
            let l = p.metadata.labels.as_ref();
            template_labels
                .iter()
                .all(|(k, v)| l.and_then(|l| l.get(k)) == Some(v))
        })
        .count();
    let old = rs.status.clone().unwrap_or_default();
    let status = ReplicaSetStatus {
        replicas: active.len() as i32,
        fully_labeled_replicas: Some(fully_labeled as i32),
        ready_replicas: Some(active.iter().filter(|p| pod_is_ready(p)).count() as i32),
        available_replicas: Some(available),
        observed_generation: rs.metadata.generation,
        conditions: old.conditions.clone(),
        terminating_replicas: old.terminating_replicas,
    };
    if status != old {
        let mut updated = rs.clone();
        updated.status = Some(status);
        rs_api
            .replace_status(&name, &PostParams::default(), &updated)
            .await?;
    }
    Ok(match next_check {
        // Re-check when the next ready pod has been ready for minReadySeconds.
        Some(ms) => Action::requeue(Duration::from_millis(ms.max(0) as u64 + 10)),
        None => Action::requeue(RESYNC),
    })
}

/// Removes this ReplicaSet's controller reference from a pod that no longer matches.
async fn release(pods: &Api<Pod>, pod: &Pod, uid: &str) -> Result<(), ReconcileError> {
    let refs: Vec<_> = pod
        .metadata
        .owner_references
        .iter()
        .flatten()
        .filter(|o| o.uid != uid)
        .cloned()
        .collect();
    let patch = json!({"metadata": {
        "resourceVersion": pod.metadata.resource_version,
        "ownerReferences": refs,
    }});
    match pods
        .patch(
            &pod.name_any(),
            &PatchParams::default(),
            &Patch::Merge(&patch),
        )
        .await
    {
        Ok(_) => Ok(()),
        Err(e) if is_not_found(&e) => Ok(()),
        Err(e) => Err(e.into()),
    }
}

/// Makes this ReplicaSet the controller of an orphan pod (resourceVersion-guarded).
async fn adopt(pods: &Api<Pod>, pod: Pod, rs: &ReplicaSet) -> Result<Pod, ReconcileError> {
    let mut refs = pod.metadata.owner_references.clone().unwrap_or_default();
    refs.push(owner_ref(rs));
    let patch = json!({"metadata": {
        "resourceVersion": pod.metadata.resource_version,
        "ownerReferences": refs,
    }});
    Ok(pods
        .patch(
            &pod.name_any(),
            &PatchParams::default(),
            &Patch::Merge(&patch),
        )
        .await?)
}

/// Creates `count` pods from the template in slow-start batches (1, 2, 4, ...), stopping at the
/// first failing batch so a broken template does not produce a flood of failed requests.
async fn create_pods(
    pods: &Api<Pod>,
    rs: &ReplicaSet,
    count: usize,
) -> Result<Vec<Pod>, ReconcileError> {
    let pod = pod_from_template(rs)?;
    let mut created = Vec::new();
    let mut batch = 1;
    let pp = PostParams::default();
    while created.len() < count {
        let n = batch.min(count - created.len());
        let results = futures::future::join_all((0..n).map(|_| pods.create(&pp, &pod))).await;
        let mut first_err = None;
        for r in results {
            match r {
                Ok(p) => created.push(p),
                Err(e) => first_err = first_err.or(Some(e)),
            }
        }
        if let Some(e) = first_err {
            return Err(e.into());
        }
        batch *= 2;
    }
    Ok(created)
}

/// The pod a ReplicaSet creates: the template, named `<rs>-<random>`, controlled by the RS.
fn pod_from_template(rs: &ReplicaSet) -> Result<Pod, ReconcileError> {
    let template = rs
        .spec
        .as_ref()
        .and_then(|s| s.template.clone())
        .ok_or_else(|| ReconcileError::Invalid("replicaset has no pod template".into()))?;
    let tm = template.metadata.unwrap_or_default();
    Ok(Pod {
        metadata: ObjectMeta {
            generate_name: Some(format!("{}-", rs.name_any())),
            namespace: rs.namespace(),
            labels: tm.labels,
            annotations: tm.annotations,
            finalizers: tm.finalizers,
            owner_references: Some(vec![owner_ref(rs)]),
            ..Default::default()
        },
        spec: template.spec,
        status: None,
    })
}

/// Names of the `count` pods to delete first, in Kubernetes' order: unscheduled before
/// scheduled, Pending < Unknown < Running, not ready before ready, pods on crowded nodes
/// first, recently ready before long ready, more restarts first, newer before older.
pub(crate) fn pods_to_delete(pods: &[Pod], count: usize) -> Vec<String> {
    let mut per_node: HashMap<String, usize> = HashMap::new();
    for p in pods {
        if let Some(n) = p.spec.as_ref().and_then(|s| s.node_name.clone()) {
            *per_node.entry(n).or_default() += 1;
        }
    }
    let rank = |p: &Pod| {
        p.spec
            .as_ref()
            .and_then(|s| s.node_name.as_ref())
            .and_then(|n| per_node.get(n).copied())
            .unwrap_or(0)
    };
    let mut sorted: Vec<&Pod> = pods.iter().collect();
    sorted.sort_by(|a, b| deletion_order(a, b, rank(a), rank(b)));
    sorted
        .into_iter()
        .take(count)
        .map(|p| p.name_any())
        .collect()
}

fn deletion_order(a: &Pod, b: &Pod, rank_a: usize, rank_b: usize) -> Ordering {
    let assigned = |p: &Pod| {
        p.spec
            .as_ref()
            .and_then(|s| s.node_name.as_deref())
            .is_some_and(|n| !n.is_empty())
    };
    let phase = |p: &Pod| match p.status.as_ref().and_then(|s| s.phase.as_deref()) {
        Some("Pending") | None => 0,
        Some("Unknown") => 1,
        Some("Running") => 2,
        _ => 3,
    };
    let restarts = |p: &Pod| {
        p.status
            .as_ref()
            .and_then(|s| s.container_statuses.as_ref())
            .map(|cs| cs.iter().map(|c| c.restart_count).max().unwrap_or(0))
            .unwrap_or(0)
    };
    let created = |p: &Pod| p.metadata.creation_timestamp.as_ref().map(|t| t.0);
    let ready_since = |p: &Pod| crate::workload::pod_ready_since(p).flatten();
    assigned(a)
        .cmp(&assigned(b))
        .then(phase(a).cmp(&phase(b)))
        .then(pod_is_ready(a).cmp(&pod_is_ready(b)))
        .then(rank_b.cmp(&rank_a))
        .then_with(|| {
            if pod_is_ready(a) && pod_is_ready(b) {
                ready_since(b).cmp(&ready_since(a))
            } else {
                Ordering::Equal
            }
        })
        .then(restarts(b).cmp(&restarts(a)))
        .then(created(b).cmp(&created(a)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{PodCondition, PodSpec, PodStatus};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
    use k8s_openapi::jiff::SignedDuration;

    fn pod(name: &str, node: Option<&str>, phase: &str, ready: bool, age_s: i64) -> Pod {
        Pod {
            metadata: ObjectMeta {
                name: Some(name.into()),
                creation_timestamp: Some(Time(Timestamp::now() - SignedDuration::from_secs(age_s))),
                ..Default::default()
            },
            spec: Some(PodSpec {
                node_name: node.map(String::from),
                ..Default::default()
            }),
            status: Some(PodStatus {
                phase: Some(phase.into()),
                conditions: Some(vec![PodCondition {
                    type_: "Ready".into(),
                    status: if ready { "True" } else { "False" }.into(),
                    ..Default::default()
                }]),
                ..Default::default()
            }),
        }
    }

    #[test]
    fn deletes_unscheduled_then_not_ready_then_newest() {
        let pods = vec![
            pod("old-ready", Some("n"), "Running", true, 100),
            pod("new-ready", Some("n"), "Running", true, 10),
            pod("not-ready", Some("n"), "Running", false, 50),
            pod("pending", Some("n"), "Pending", false, 200),
            pod("unscheduled", None, "Pending", false, 300),
        ];
        assert_eq!(
            pods_to_delete(&pods, 5),
            vec![
                "unscheduled",
                "pending",
                "not-ready",
                "new-ready",
                "old-ready"
            ]
        );
        assert_eq!(pods_to_delete(&pods, 1), vec!["unscheduled"]);
    }
}
