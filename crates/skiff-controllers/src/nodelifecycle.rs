//! Node lifecycle controller: marks nodes whose agent stopped heartbeating Unknown, keeps the not-ready/unreachable taints in step with the Ready condition, and evicts pods from NoExecute-tainted nodes when their tolerations run out.
//!
//! Like Kubernetes' node lifecycle and taint-eviction controllers:
//! - a node agent heartbeats by renewing its Lease in `kube-node-lease` (or by posting its
//!   Ready condition with a new `lastHeartbeatTime`). A heartbeat is judged by when this
//!   controller *saw* it change, not by the timestamp in it, so clock skew between machines
//!   does not matter; after a restart every node gets a full grace period again. A node
//!   without a heartbeat for [`Config::grace_period`] gets its Ready (and pressure)
//!   conditions set to Unknown through `nodes/status`, and its pods' Ready condition False;
//! - Ready=Unknown gives the node `node.kubernetes.io/unreachable` taints (NoSchedule and
//!   NoExecute), Ready=False (reported by the agent) `node.kubernetes.io/not-ready` ones;
//!   Ready=True removes both;
//! - a pod on a node with NoExecute taints is deleted at once when it does not tolerate one
//!   of them, otherwise when the taint has been there for the smallest matching
//!   `tolerationSeconds` (never, when no matching toleration has seconds). Pods get
//!   Kubernetes' DefaultTolerationSeconds tolerations (not-ready and unreachable, 300 s)
//!   from the API server's defaulting; [`Config::default_eviction_timeout`] replaces those
//!   300 s (only tolerations exactly as the defaulting writes them), so a laptop cluster can
//!   fail over faster without editing every pod.
//!
//! Unlike Kubernetes, a pod evicted from an unreachable node does not stay `Terminating`
//! forever: nobody is left to confirm its termination, so once its grace period has passed
//! it is force-deleted (its replacement already runs elsewhere; the agent, if it comes back,
//! finds the pod gone and stops it).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{
    Event, EventSource, Node, NodeCondition, ObjectReference, Pod, PodCondition, Taint, Toleration,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Client, ResourceExt};
use serde_json::json;
use tokio::sync::Notify;
use tokio::time::Instant;

use crate::workload::{ReconcileError, is_conflict, is_not_found};

/// Taint of a node whose agent reports Ready=False.
pub const TAINT_NOT_READY: &str = "node.kubernetes.io/not-ready";
/// Taint of a node whose agent stopped reporting (Ready=Unknown).
pub const TAINT_UNREACHABLE: &str = "node.kubernetes.io/unreachable";
/// Where node agents keep their heartbeat Leases (named after the node).
pub const NODE_LEASE_NAMESPACE: &str = "kube-node-lease";
/// The tolerationSeconds the DefaultTolerationSeconds defaulting writes.
const DEFAULTED_TOLERATION_SECONDS: i64 = 300;
/// Event source of node health changes (Kubernetes' node lifecycle controller's name).
const NODE_CONTROLLER: &str = "node-controller";
/// Event source of evictions (Kubernetes' taint eviction controller's name).
const TAINT_EVICTION_CONTROLLER: &str = "taint-eviction-controller";
/// The conditions a silent node gets set to Unknown (Kubernetes' list).
const CONDITIONS: [&str; 4] = ["Ready", "MemoryPressure", "DiskPressure", "PIDPressure"];

/// Settings of the node lifecycle controller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// How long a node may go without a heartbeat before it is marked Unknown (Kubernetes'
    /// `--node-monitor-grace-period`, 40 s).
    pub grace_period: Duration,
    /// How often nodes are checked when nothing else wakes the controller (Kubernetes'
    /// `--node-monitor-period`, 5 s). Grace expiries and eviction deadlines are acted on at
    /// their time regardless.
    pub monitor_period: Duration,
    /// What the 300 s not-ready/unreachable tolerations added to every pod by default stand
    /// for (Kubernetes' `--default-not-ready-toleration-seconds`, 300 s).
    pub default_eviction_timeout: Duration,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            grace_period: Duration::from_secs(40),
            monitor_period: Duration::from_secs(5),
            default_eviction_timeout: Duration::from_secs(DEFAULTED_TOLERATION_SECONDS as u64),
        }
    }
}

/// Starts the node lifecycle controller with the default [`Config`].
pub fn start(client: Client) -> tokio::task::JoinHandle<()> {
    start_with(client, Config::default())
}

/// Starts the node lifecycle controller; aborting the handle stops it.
pub fn start_with(client: Client, config: Config) -> tokio::task::JoinHandle<()> {
    tokio::spawn(run(client, config))
}

/// The last heartbeat seen of one node, and when this controller saw it change.
struct Health {
    seen: (Option<Timestamp>, Option<Timestamp>),
    probed: Instant,
}

struct Controller {
    client: Client,
    config: Config,
    nodes: Store<Node>,
    leases: Store<Lease>,
    health: HashMap<String, Health>,
    /// When this controller first saw each NoExecute taint (node, key, value). Toleration
    /// time counts from the later of this and the taint's `timeAdded`: `timeAdded` is
    /// stored with whole seconds only, and a taint without one still gets its full time.
    taint_seen: HashMap<(String, String, String), Timestamp>,
}

async fn run(client: Client, config: Config) {
    let notify = Arc::new(Notify::new());
    let (nodes, node_writer) = reflector::store::<Node>();
    let (leases, lease_writer) = reflector::store::<Lease>();
    let node_stream = reflector::reflector(
        node_writer,
        watcher(Api::<Node>::all(client.clone()), watcher::Config::default()).default_backoff(),
    );
    let lease_api = Api::<Lease>::namespaced(client.clone(), NODE_LEASE_NAMESPACE);
    let lease_stream = reflector::reflector(
        lease_writer,
        watcher(lease_api, watcher::Config::default()).default_backoff(),
    );
    let n = notify.clone();
    let node_task = tokio::spawn(async move {
        let mut s = std::pin::pin!(node_stream);
        while s.next().await.is_some() {
            n.notify_one();
        }
    });
    let n = notify.clone();
    let lease_task = tokio::spawn(async move {
        let mut s = std::pin::pin!(lease_stream);
        while s.next().await.is_some() {
            n.notify_one();
        }
    });
    let _guard = AbortOnDrop(vec![node_task, lease_task]);
    let _ = nodes.wait_until_ready().await;
    let _ = leases.wait_until_ready().await;
    let mut ctl = Controller {
        client,
        config,
        nodes,
        leases,
        health: HashMap::new(),
        taint_seen: HashMap::new(),
    };
    loop {
        let mut wake = Instant::now() + ctl.config.monitor_period;
        for node in ctl.nodes.state() {
            match ctl.reconcile(&node).await {
                Ok(Some(at)) => wake = wake.min(at),
                Ok(None) => {}
                Err(e) if e.is_conflict() => {
                    wake = wake.min(Instant::now() + Duration::from_millis(50))
                }
                Err(e) => {
                    tracing::warn!(node = %node.name_any(), error = %e, "node lifecycle");
                    wake = wake.min(Instant::now() + Duration::from_secs(1));
                }
            }
        }
        let names: Vec<String> = ctl.nodes.state().iter().map(|n| n.name_any()).collect();
        ctl.health.retain(|k, _| names.contains(k));
        ctl.taint_seen.retain(|k, _| names.contains(&k.0));
        tokio::select! {
            _ = tokio::time::sleep_until(wake) => {}
            _ = notify.notified() => {}
        }
    }
}

/// Stops the watch tasks when the controller task is aborted.
struct AbortOnDrop(Vec<tokio::task::JoinHandle<()>>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        for t in &self.0 {
            t.abort();
        }
    }
}

impl Controller {
    /// One pass over one node; returns when it needs to be looked at again, if sooner than
    /// the monitor period.
    async fn reconcile(&mut self, node: &Node) -> Result<Option<Instant>, ReconcileError> {
        let name = node.name_any();
        let lease = self
            .leases
            .get(&ObjectRef::new(&name).within(NODE_LEASE_NAMESPACE));
        let renew = lease
            .as_ref()
            .and_then(|l| l.spec.as_ref())
            .and_then(|s| s.renew_time.as_ref())
            .map(|t| t.0);
        let heartbeat = condition(node, "Ready")
            .and_then(|c| c.last_heartbeat_time.as_ref())
            .map(|t| t.0);
        let seen = (heartbeat, renew);
        let now = Instant::now();
        let h = self
            .health
            .entry(name.clone())
            .or_insert(Health { seen, probed: now });
        if h.seen != seen {
            h.seen = seen;
            h.probed = now;
        }
        let expires = h.probed + self.config.grace_period;
        let mut wake = None;
        let mut node = node.clone();
        if now >= expires {
            if let Some(updated) = self.mark_unknown(&node).await? {
                node = updated;
            }
        } else {
            wake = Some(expires);
        }
        if let Some(updated) = self.update_taints(&node).await? {
            node = updated;
        }
        let at = self.handle_pods(&node).await?;
        Ok(match (wake, at) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        })
    }

    /// Sets the node's conditions to Unknown (adding those the agent never posted).
    async fn mark_unknown(&self, node: &Node) -> Result<Option<Node>, ReconcileError> {
        let Some(conditions) = unknown_conditions(node, Timestamp::now()) else {
            return Ok(None);
        };
        tracing::info!(node = %node.name_any(), "node stopped posting status: Ready=Unknown");
        let patch = json!({
            "metadata": {"resourceVersion": node.resource_version()},
            "status": {"conditions": conditions},
        });
        let api: Api<Node> = Api::all(self.client.clone());
        match api
            .patch_status(
                &node.name_any(),
                &PatchParams::default(),
                &Patch::Merge(&patch),
            )
            .await
        {
            Ok(n) => {
                let message = format!("Node {} status is now: NodeNotReady", n.name_any());
                let involved = ObjectReference {
                    kind: Some("Node".into()),
                    name: Some(n.name_any()),
                    uid: n.uid(),
                    ..Default::default()
                };
                record_event(
                    &self.client,
                    "default",
                    involved,
                    "Normal",
                    "NodeNotReady",
                    &message,
                    NODE_CONTROLLER,
                )
                .await;
                Ok(Some(n))
            }
            Err(e) if is_not_found(&e) => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    /// Brings the not-ready/unreachable taints in step with the Ready condition.
    async fn update_taints(&mut self, node: &Node) -> Result<Option<Node>, ReconcileError> {
        let ready = condition(node, "Ready").map(|c| c.status.as_str());
        let current = node
            .spec
            .as_ref()
            .and_then(|s| s.taints.clone())
            .unwrap_or_default();
        let Some(taints) = desired_taints(&current, ready, Timestamp::now()) else {
            return Ok(None);
        };
        tracing::info!(node = %node.name_any(), ready = ?ready, "updating node taints");
        for t in taints.iter().filter(|t| t.effect == "NoExecute") {
            if let Some(added) = &t.time_added {
                let key = (
                    node.name_any(),
                    t.key.clone(),
                    t.value.clone().unwrap_or_default(),
                );
                self.taint_seen.entry(key).or_insert(added.0);
            }
        }
        let patch = json!({
            "metadata": {"resourceVersion": node.resource_version()},
            "spec": {"taints": taints},
        });
        let api: Api<Node> = Api::all(self.client.clone());
        match api
            .patch(
                &node.name_any(),
                &PatchParams::default(),
                &Patch::Merge(&patch),
            )
            .await
        {
            Ok(n) => Ok(Some(n)),
            Err(e) if is_not_found(&e) => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    /// Marks the pods of an unreachable node not ready and evicts the pods of a
    /// NoExecute-tainted node whose tolerations ran out; returns the next deadline.
    async fn handle_pods(&mut self, node: &Node) -> Result<Option<Instant>, ReconcileError> {
        let name = node.name_any();
        let unreachable = condition(node, "Ready").is_some_and(|c| c.status == "Unknown");
        let now = Timestamp::now();
        let taints: Vec<Taint> = node
            .spec
            .as_ref()
            .and_then(|s| s.taints.clone())
            .unwrap_or_default()
            .into_iter()
            .filter(|t| t.effect == "NoExecute")
            .map(|mut t| {
                let key = (
                    name.clone(),
                    t.key.clone(),
                    t.value.clone().unwrap_or_default(),
                );
                let seen = *self.taint_seen.entry(key).or_insert(now);
                let added = t.time_added.as_ref().map_or(seen, |a| a.0.max(seen));
                t.time_added = Some(Time(added));
                t
            })
            .collect();
        self.taint_seen.retain(|(node, key, value), _| {
            node != &name
                || taints
                    .iter()
                    .any(|t| &t.key == key && t.value.as_deref().unwrap_or("") == value)
        });
        if taints.is_empty() && !unreachable {
            return Ok(None);
        }
        let api: Api<Pod> = Api::all(self.client.clone());
        let lp = ListParams::default().fields(&format!("spec.nodeName={name}"));
        let pods = api.list(&lp).await?.items;
        let mut next: Option<Timestamp> = None;
        let mut soonest = |t: Timestamp| next = Some(next.map_or(t, |n: Timestamp| n.min(t)));
        for pod in pods {
            let ns = pod.namespace().unwrap_or_default();
            let pods: Api<Pod> = Api::namespaced(self.client.clone(), &ns);
            if let Some(deleting) = pod.metadata.deletion_timestamp.as_ref().map(|t| t.0) {
                // Nobody on an unreachable node confirms termination: finish it ourselves
                // once the grace period is over.
                // deletionTimestamp has whole seconds only: allow one more.
                let deadline = deleting
                    .checked_add(SignedDuration::from_secs(1))
                    .unwrap_or(deleting);
                if unreachable {
                    if deadline <= now {
                        tracing::info!(pod = %pod.name_any(), node = %name, "force-deleting pod on unreachable node");
                        let dp = DeleteParams {
                            grace_period_seconds: Some(0),
                            ..Default::default()
                        };
                        ignore_gone(pods.delete(&pod.name_any(), &dp).await.map(|_| ()))?;
                    } else {
                        soonest(deadline);
                    }
                }
                continue;
            }
            if unreachable && mark_pod_not_ready(&pods, &pod).await? {
                let involved = pod_ref(&pod);
                record_event(
                    &self.client,
                    &ns,
                    involved,
                    "Warning",
                    "NodeNotReady",
                    "Node is not ready",
                    NODE_CONTROLLER,
                )
                .await;
            }
            let tolerations = pod
                .spec
                .as_ref()
                .and_then(|s| s.tolerations.clone())
                .unwrap_or_default();
            match eviction_time(&tolerations, &taints, &self.config, now) {
                Some(at) if at <= now => {
                    evict(&pods, &pod, &name).await?;
                    let message = format!("Marking for deletion Pod {ns}/{}", pod.name_any());
                    record_event(
                        &self.client,
                        &ns,
                        pod_ref(&pod),
                        "Normal",
                        "TaintManagerEviction",
                        &message,
                        TAINT_EVICTION_CONTROLLER,
                    )
                    .await;
                }
                Some(at) => soonest(at),
                None => {}
            }
        }
        Ok(next.map(|t| {
            let ms = now.duration_until(t).as_millis().max(0) as u64;
            Instant::now() + Duration::from_millis(ms)
        }))
    }
}

fn condition<'a>(node: &'a Node, type_: &str) -> Option<&'a NodeCondition> {
    node.status
        .as_ref()?
        .conditions
        .as_ref()?
        .iter()
        .find(|c| c.type_ == type_)
}

/// The node's conditions with Ready and the pressure conditions Unknown, or `None` when they
/// already are.
fn unknown_conditions(node: &Node, now: Timestamp) -> Option<Vec<NodeCondition>> {
    let mut conditions = node
        .status
        .as_ref()
        .and_then(|s| s.conditions.clone())
        .unwrap_or_default();
    let mut changed = false;
    for type_ in CONDITIONS {
        match conditions.iter_mut().find(|c| c.type_ == type_) {
            Some(c) if c.status == "Unknown" => {}
            Some(c) => {
                c.status = "Unknown".into();
                c.reason = Some("NodeStatusUnknown".into());
                c.message = Some("Kubelet stopped posting node status.".into());
                c.last_transition_time = Some(Time(now));
                changed = true;
            }
            None => {
                conditions.push(NodeCondition {
                    type_: type_.into(),
                    status: "Unknown".into(),
                    reason: Some("NodeStatusNeverUpdated".into()),
                    message: Some("Kubelet never posted node status.".into()),
                    last_heartbeat_time: node.metadata.creation_timestamp.clone(),
                    last_transition_time: Some(Time(now)),
                });
                changed = true;
            }
        }
    }
    changed.then_some(conditions)
}

/// The node's taints with the not-ready/unreachable ones matching `ready` (the Ready
/// condition's status), or `None` when nothing changes. A node that never posted a Ready
/// condition keeps its taints until it does or its grace period runs out.
fn desired_taints(current: &[Taint], ready: Option<&str>, now: Timestamp) -> Option<Vec<Taint>> {
    let want = match ready? {
        "True" => None,
        "False" => Some(TAINT_NOT_READY),
        _ => Some(TAINT_UNREACHABLE),
    };
    let managed = |t: &Taint| {
        (t.key == TAINT_NOT_READY || t.key == TAINT_UNREACHABLE)
            && (t.effect == "NoExecute" || t.effect == "NoSchedule")
    };
    let mut taints: Vec<Taint> = current
        .iter()
        .filter(|t| !managed(t) || Some(t.key.as_str()) == want)
        .cloned()
        .collect();
    if let Some(key) = want {
        for effect in ["NoSchedule", "NoExecute"] {
            if !taints.iter().any(|t| t.key == key && t.effect == effect) {
                taints.push(Taint {
                    key: key.into(),
                    effect: effect.into(),
                    time_added: Some(Time(now)),
                    value: None,
                });
            }
        }
    }
    (taints != current).then_some(taints)
}

/// Kubernetes' `ToleratesTaint`.
fn tolerates(t: &Toleration, taint: &Taint) -> bool {
    let effect = t.effect.as_deref().unwrap_or("");
    if !effect.is_empty() && effect != taint.effect {
        return false;
    }
    let key = t.key.as_deref().unwrap_or("");
    if !key.is_empty() && key != taint.key {
        return false;
    }
    match t.operator.as_deref().unwrap_or("Equal") {
        "Exists" => true,
        "Equal" | "" => t.value.as_deref().unwrap_or("") == taint.value.as_deref().unwrap_or(""),
        _ => false,
    }
}

/// How long a toleration lets a pod stay, with the defaulted 300 s standing for the
/// configured default eviction timeout.
fn toleration_seconds(t: &Toleration, config: &Config) -> Option<i64> {
    let secs = t.toleration_seconds?;
    let defaulted = secs == DEFAULTED_TOLERATION_SECONDS
        && t.operator.as_deref() == Some("Exists")
        && t.effect.as_deref() == Some("NoExecute")
        && t.value.as_deref().unwrap_or("").is_empty()
        && matches!(t.key.as_deref(), Some(TAINT_NOT_READY | TAINT_UNREACHABLE));
    if defaulted {
        return Some(config.default_eviction_timeout.as_secs() as i64);
    }
    Some(secs.max(0))
}

/// When a pod with `tolerations` must leave a node with these NoExecute `taints` (each with
/// its `timeAdded`): `now` when some taint is not tolerated, `None` when every taint is
/// tolerated for ever.
fn eviction_time(
    tolerations: &[Toleration],
    taints: &[Taint],
    config: &Config,
    now: Timestamp,
) -> Option<Timestamp> {
    let mut earliest: Option<Timestamp> = None;
    for taint in taints {
        let matching: Vec<&Toleration> =
            tolerations.iter().filter(|t| tolerates(t, taint)).collect();
        if matching.is_empty() {
            return Some(now);
        }
        let Some(secs) = matching
            .iter()
            .filter_map(|t| toleration_seconds(t, config))
            .min()
        else {
            continue;
        };
        let added = taint.time_added.as_ref().map_or(now, |t| t.0);
        // Absurdly large tolerationSeconds overflow the timestamp: that is "for ever".
        let Ok(at) = added.checked_add(SignedDuration::from_secs(secs)) else {
            continue;
        };
        earliest = Some(earliest.map_or(at, |e| e.min(at)));
    }
    earliest
}

/// Sets the pod's Ready condition False (its node can no longer vouch for it); true when
/// it was written.
async fn mark_pod_not_ready(pods: &Api<Pod>, pod: &Pod) -> Result<bool, ReconcileError> {
    let mut conditions = pod
        .status
        .as_ref()
        .and_then(|s| s.conditions.clone())
        .unwrap_or_default();
    let Some(ready) = conditions.iter_mut().find(|c| c.type_ == "Ready") else {
        return Ok(false);
    };
    if ready.status == "False" {
        return Ok(false);
    }
    ready.status = "False".into();
    ready.last_transition_time = Some(Time(Timestamp::now()));
    write_pod_conditions(pods, pod, conditions).await?;
    Ok(true)
}

fn pod_ref(pod: &Pod) -> ObjectReference {
    ObjectReference {
        api_version: Some("v1".into()),
        kind: Some("Pod".into()),
        namespace: pod.namespace(),
        name: Some(pod.name_any()),
        uid: pod.uid(),
        ..Default::default()
    }
}

/// Writes a core/v1 Event (best effort: a lost event must not stop an eviction).
async fn record_event(
    client: &Client,
    namespace: &str,
    involved: ObjectReference,
    type_: &str,
    reason: &str,
    message: &str,
    component: &str,
) {
    let now = Timestamp::now();
    let name = format!(
        "{}.{:x}",
        involved.name.as_deref().unwrap_or("object"),
        now.as_nanosecond()
    );
    let event = Event {
        metadata: ObjectMeta {
            name: Some(name),
            namespace: Some(namespace.to_string()),
            ..Default::default()
        },
        involved_object: involved,
        reason: Some(reason.into()),
        message: Some(message.into()),
        type_: Some(type_.into()),
        source: Some(EventSource {
            component: Some(component.into()),
            host: None,
        }),
        reporting_component: Some(component.into()),
        reporting_instance: Some(component.into()),
        first_timestamp: Some(Time(now)),
        last_timestamp: Some(Time(now)),
        count: Some(1),
        ..Default::default()
    };
    let api: Api<Event> = Api::namespaced(client.clone(), namespace);
    if let Err(e) = api.create(&PostParams::default(), &event).await {
        tracing::debug!(error = %e, reason, "writing an event failed");
    }
}

/// Deletes a pod because of a NoExecute taint, first recording why in a DisruptionTarget
/// condition (as Kubernetes' taint eviction does).
async fn evict(pods: &Api<Pod>, pod: &Pod, node: &str) -> Result<(), ReconcileError> {
    tracing::info!(pod = %pod.name_any(), node, "evicting pod from tainted node");
    let mut conditions = pod
        .status
        .as_ref()
        .and_then(|s| s.conditions.clone())
        .unwrap_or_default();
    conditions.retain(|c| c.type_ != "DisruptionTarget");
    conditions.push(PodCondition {
        type_: "DisruptionTarget".into(),
        status: "True".into(),
        reason: Some("DeletionByTaintManager".into()),
        message: Some("Taint manager: deleting due to NoExecute taint".into()),
        last_transition_time: Some(Time(Timestamp::now())),
        ..Default::default()
    });
    write_pod_conditions(pods, pod, conditions).await?;
    ignore_gone(
        pods.delete(&pod.name_any(), &DeleteParams::default())
            .await
            .map(|_| ()),
    )
}

async fn write_pod_conditions(
    pods: &Api<Pod>,
    pod: &Pod,
    conditions: Vec<PodCondition>,
) -> Result<(), ReconcileError> {
    let patch = json!({
        "metadata": {"resourceVersion": pod.resource_version()},
        "status": {"conditions": conditions},
    });
    let res = pods
        .patch_status(
            &pod.name_any(),
            &PatchParams::default(),
            &Patch::Merge(&patch),
        )
        .await;
    match res {
        Ok(_) => Ok(()),
        Err(e) if is_not_found(&e) => Ok(()),
        Err(e) if is_conflict(&e) => Err(e.into()),
        Err(e) => Err(e.into()),
    }
}

fn ignore_gone(res: Result<(), kube::Error>) -> Result<(), ReconcileError> {
    match res {
        Err(e) if !is_not_found(&e) => Err(e.into()),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::NodeStatus;

    fn toleration(key: &str, op: &str, effect: &str, secs: Option<i64>) -> Toleration {
        Toleration {
            key: (!key.is_empty()).then(|| key.to_string()),
            operator: Some(op.into()),
            effect: (!effect.is_empty()).then(|| effect.to_string()),
            toleration_seconds: secs,
            value: None,
        }
    }

    fn taint(key: &str, added: Timestamp) -> Taint {
        Taint {
            key: key.into(),
            effect: "NoExecute".into(),
            time_added: Some(Time(added)),
            value: None,
        }
    }

    #[test]
    fn eviction_follows_the_smallest_matching_toleration() {
        let config = Config::default();
        let now = Timestamp::now();
        let added = now - SignedDuration::from_secs(10);
        let taints = [taint(TAINT_UNREACHABLE, added)];
        // Not tolerated: at once.
        assert_eq!(eviction_time(&[], &taints, &config, now), Some(now));
        // Tolerated for 30 s and for 5 s: the smaller wins, counted from timeAdded.
        let tols = [
            toleration(TAINT_UNREACHABLE, "Exists", "NoExecute", Some(30)),
            toleration("", "Exists", "", Some(5)),
        ];
        assert_eq!(
            eviction_time(&tols, &taints, &config, now),
            Some(added + SignedDuration::from_secs(5))
        );
        // Tolerated without seconds: never.
        let forever = [toleration(TAINT_UNREACHABLE, "Exists", "NoExecute", None)];
        assert_eq!(eviction_time(&forever, &taints, &config, now), None);
        // A toleration for another taint does not help.
        let other = [toleration(TAINT_NOT_READY, "Exists", "NoExecute", None)];
        assert_eq!(eviction_time(&other, &taints, &config, now), Some(now));
        // Huge values do not overflow.
        let huge = [toleration(
            TAINT_UNREACHABLE,
            "Exists",
            "NoExecute",
            Some(i64::MAX),
        )];
        assert_eq!(eviction_time(&huge, &taints, &config, now), None);
    }

    #[test]
    fn defaulted_tolerations_follow_the_configured_timeout() {
        let config = Config {
            default_eviction_timeout: Duration::from_secs(7),
            ..Config::default()
        };
        let now = Timestamp::now();
        let taints = [taint(TAINT_UNREACHABLE, now)];
        let defaulted = [toleration(
            TAINT_UNREACHABLE,
            "Exists",
            "NoExecute",
            Some(300),
        )];
        assert_eq!(
            eviction_time(&defaulted, &taints, &config, now),
            Some(now + SignedDuration::from_secs(7))
        );
        let own = [toleration(
            TAINT_UNREACHABLE,
            "Exists",
            "NoExecute",
            Some(301),
        )];
        assert_eq!(
            eviction_time(&own, &taints, &config, now),
            Some(now + SignedDuration::from_secs(301))
        );
    }

    #[test]
    fn taints_follow_ready() {
        let now = Timestamp::now();
        let user = Taint {
            key: "gpu".into(),
            effect: "NoSchedule".into(),
            ..Default::default()
        };
        let t = desired_taints(std::slice::from_ref(&user), Some("Unknown"), now).expect("changes");
        let keys: Vec<(&str, &str)> = t
            .iter()
            .map(|t| (t.key.as_str(), t.effect.as_str()))
            .collect();
        assert_eq!(
            keys,
            vec![
                ("gpu", "NoSchedule"),
                (TAINT_UNREACHABLE, "NoSchedule"),
                (TAINT_UNREACHABLE, "NoExecute")
            ]
        );
        assert_eq!(desired_taints(&t, Some("Unknown"), now), None, "idempotent");
        let nr = desired_taints(&t, Some("False"), now).expect("swap");
        assert!(nr.iter().all(|t| t.key != TAINT_UNREACHABLE));
        assert_eq!(nr.iter().filter(|t| t.key == TAINT_NOT_READY).count(), 2);
        assert_eq!(
            desired_taints(&t, Some("True"), now),
            Some(vec![user.clone()])
        );
        assert_eq!(desired_taints(&t, None, now), None);
    }

    #[test]
    fn silent_node_conditions_become_unknown() {
        let now = Timestamp::now();
        let node = Node {
            status: Some(NodeStatus {
                conditions: Some(vec![NodeCondition {
                    type_: "Ready".into(),
                    status: "True".into(),
                    ..Default::default()
                }]),
                ..Default::default()
            }),
            ..Default::default()
        };
        let conds = unknown_conditions(&node, now).expect("changes");
        assert_eq!(conds.len(), 4);
        assert!(conds.iter().all(|c| c.status == "Unknown"));
        assert_eq!(conds[0].reason.as_deref(), Some("NodeStatusUnknown"));
        assert_eq!(
            conds[0].message.as_deref(),
            Some("Kubelet stopped posting node status.")
        );
        assert_eq!(
            conds[1].message.as_deref(),
            Some("Kubelet never posted node status.")
        );
        let mut again = node.clone();
        if let Some(s) = again.status.as_mut() {
            s.conditions = Some(conds);
        }
        assert_eq!(unknown_conditions(&again, now), None);
    }
}
