//! The scheduling loop: watches pods and nodes into the cache and a queue, runs one cycle per
//! pending pod, assumes the pod on its node and binds it through `pods/binding` concurrently.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::{Event, Node, Pod, PodSpec};
use kube::api::{Api, Patch, PatchParams, PostParams};
use kube::runtime::watcher;
use serde_json::json;
use skiff_client::Client;
use tokio::sync::{Semaphore, mpsc};
use tokio::task::JoinHandle;

use crate::cache::Cache;
use crate::framework::{FitError, NodeView, PodInfo, Profile, SchedulerConfig};

/// Event writes in flight at once.
const EVENT_WRITES_IN_FLIGHT: usize = 32;

/// The scheduler name pods ask for by default (and the component events are reported as).
pub const DEFAULT_SCHEDULER: &str = "default-scheduler";

/// How the scheduler runs.
#[derive(Debug, Clone)]
pub struct Options {
    pub config: SchedulerConfig,
    /// Pods whose `spec.schedulerName` is this (or empty) are ours.
    pub scheduler_name: String,
    /// Binding (and event) requests in flight at once.
    pub max_concurrent_binds: usize,
    /// Unschedulable pods are retried at least this often even if nothing changed.
    pub retry_interval: Duration,
    /// Write a `Scheduled` event for every binding (kube-scheduler does; benchmarks may not).
    pub record_scheduled_events: bool,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            config: SchedulerConfig::default(),
            scheduler_name: DEFAULT_SCHEDULER.into(),
            max_concurrent_binds: 64,
            retry_interval: Duration::from_secs(10),
            record_scheduled_events: true,
        }
    }
}

/// Counters for benchmarks and debugging.
#[derive(Debug, Default)]
pub struct Metrics {
    /// Pods the algorithm placed (assumed).
    pub scheduled: AtomicU64,
    /// Bindings the API server accepted.
    pub bound: AtomicU64,
    pub bind_errors: AtomicU64,
    /// Scheduling cycles that found no node.
    pub unschedulable: AtomicU64,
    /// Time spent in scheduling cycles (filter and score), in nanoseconds.
    pub algorithm_nanos: AtomicU64,
    /// Time spent waiting for a free binding slot, in nanoseconds (binding is the bottleneck
    /// when this is large).
    pub bind_wait_nanos: AtomicU64,
}

/// A running scheduler.
pub struct Handle {
    pub task: JoinHandle<()>,
    pub metrics: Arc<Metrics>,
}

/// Starts the default scheduler; abort the handle to stop it.
pub fn start(client: Client) -> JoinHandle<()> {
    start_with(client, Options::default()).task
}

/// Starts a scheduler with explicit options.
pub fn start_with(client: Client, options: Options) -> Handle {
    let metrics = Arc::new(Metrics::default());
    let task = tokio::spawn(run(client, options, metrics.clone()));
    Handle { task, metrics }
}

/// What the watchers and binding tasks tell the loop.
enum Msg {
    PodApplied(Pod),
    PodDeleted(Pod),
    /// A relist finished: pods not in it are gone.
    PodsListed(HashSet<String>),
    NodeApplied(Node),
    NodeDeleted(String),
    NodesListed(HashSet<String>),
    BindFailed {
        key: String,
        conflict: bool,
    },
}

/// Aborts the watcher tasks when the scheduler task stops or is aborted.
struct AbortOnDrop(Vec<JoinHandle<()>>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        for t in &self.0 {
            t.abort();
        }
    }
}

fn pod_key(pod: &Pod) -> String {
    format!(
        "{}/{}",
        pod.metadata.namespace.as_deref().unwrap_or("default"),
        pod.metadata.name.as_deref().unwrap_or_default()
    )
}

/// Feeds watch events of one kind into the loop, turning relists into a "listed" message.
fn spawn_watch<K>(
    api: Api<K>,
    tx: mpsc::UnboundedSender<Msg>,
    applied: fn(K) -> Msg,
    deleted: fn(K) -> Msg,
    listed: fn(HashSet<String>) -> Msg,
    key: fn(&K) -> String,
) -> JoinHandle<()>
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug + Send + 'static,
{
    tokio::spawn(async move {
        let mut seen: HashSet<String> = HashSet::new();
        // The watcher retries by itself after errors (with back-off); an error item only
        // reports them.
        let mut stream = watcher(api, watcher::Config::default())
            .map_err(|e| tracing::debug!(error = %e, "scheduler watch error"))
            .boxed();
        while let Some(item) = stream.next().await {
            let msg = match item {
                Ok(watcher::Event::Init) => {
                    seen.clear();
                    continue;
                }
                Ok(watcher::Event::InitApply(obj)) => {
                    seen.insert(key(&obj));
                    applied(obj)
                }
                Ok(watcher::Event::InitDone) => listed(std::mem::take(&mut seen)),
                Ok(watcher::Event::Apply(obj)) => applied(obj),
                Ok(watcher::Event::Delete(obj)) => deleted(obj),
                Err(()) => {
                    tokio::time::sleep(Duration::from_millis(200)).await;
                    continue;
                }
            };
            if tx.send(msg).is_err() {
                return;
            }
        }
    })
}

/// A pod waiting for a node.
struct Pending {
    info: Arc<PodInfo>,
    uid: String,
    /// What scheduling depends on, to tell a real change from a status update.
    spec: Option<PodSpec>,
    labels: Option<std::collections::BTreeMap<String, String>>,
    /// The last FailedScheduling message reported, so a retry that fails the same way does not
    /// write the same event and condition again.
    last_failure: Option<String>,
}

struct Scheduler {
    client: Client,
    options: Options,
    profile: Profile,
    metrics: Arc<Metrics>,
    cache: Cache,
    pending: HashMap<String, Pending>,
    active: VecDeque<String>,
    queued: HashSet<String>,
    unschedulable: HashSet<String>,
    /// Assumed pods whose binding is in flight.
    binding: HashSet<String>,
    next_start: usize,
    /// Both initial lists are in: until then the cache may miss bound pods, and placing a
    /// pod could overcommit a node (kube-scheduler waits for its informers the same way).
    nodes_synced: bool,
    pods_synced: bool,
    permits: Arc<Semaphore>,
    /// Event writes in flight are bounded separately so they never hold up bindings.
    event_permits: Arc<Semaphore>,
    tx: mpsc::UnboundedSender<Msg>,
}

async fn run(client: Client, options: Options, metrics: Arc<Metrics>) {
    let (tx, mut rx) = mpsc::unbounded_channel();
    let _watchers = AbortOnDrop(vec![
        spawn_watch(
            Api::<Node>::all(client.clone()),
            tx.clone(),
            Msg::NodeApplied,
            |n: Node| Msg::NodeDeleted(n.metadata.name.unwrap_or_default()),
            Msg::NodesListed,
            |n: &Node| n.metadata.name.clone().unwrap_or_default(),
        ),
        spawn_watch(
            Api::<Pod>::all(client.clone()),
            tx.clone(),
            Msg::PodApplied,
            Msg::PodDeleted,
            Msg::PodsListed,
            pod_key,
        ),
    ]);
    let mut s = Scheduler {
        profile: Profile::new(&options.config),
        permits: Arc::new(Semaphore::new(options.max_concurrent_binds.max(1))),
        event_permits: Arc::new(Semaphore::new(EVENT_WRITES_IN_FLIGHT)),
        nodes_synced: false,
        pods_synced: false,
        client,
        metrics,
        cache: Cache::default(),
        pending: HashMap::new(),
        active: VecDeque::new(),
        queued: HashSet::new(),
        unschedulable: HashSet::new(),
        binding: HashSet::new(),
        next_start: 0,
        tx,
        options,
    };
    let mut retry = tokio::time::interval(s.options.retry_interval);
    retry.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last_flush = Instant::now();
    loop {
        // Take in everything that happened before placing the next pod, so the cache is fresh.
        while let Ok(msg) = rx.try_recv() {
            s.handle(msg);
        }
        if last_flush.elapsed() >= s.options.retry_interval {
            s.retry_unschedulable();
            last_flush = Instant::now();
        }
        if s.nodes_synced
            && s.pods_synced
            && let Some(key) = s.active.pop_front()
        {
            s.queued.remove(&key);
            s.schedule(&key).await;
            continue;
        }
        tokio::select! {
            msg = rx.recv() => match msg {
                Some(msg) => s.handle(msg),
                None => return,
            },
            _ = retry.tick() => {
                s.retry_unschedulable();
                last_flush = Instant::now();
            }
        }
    }
}

impl Scheduler {
    fn is_ours(&self, pod: &Pod) -> bool {
        let name = pod
            .spec
            .as_ref()
            .and_then(|s| s.scheduler_name.as_deref())
            .unwrap_or("");
        name.is_empty() || name == self.options.scheduler_name
    }

    fn enqueue(&mut self, key: String) {
        self.unschedulable.remove(&key);
        if self.queued.insert(key.clone()) {
            self.active.push_back(key);
        }
    }

    /// Something that may make unschedulable pods fit happened: try them all again.
    fn retry_unschedulable(&mut self) {
        let keys: Vec<String> = self.unschedulable.drain().collect();
        for k in keys {
            self.enqueue(k);
        }
    }

    /// A pod was placed by someone else: pods waiting for pod affinity may fit now.
    fn retry_waiting_for_pods(&mut self) {
        let keys: Vec<String> = self
            .unschedulable
            .iter()
            .filter(|k| {
                self.pending
                    .get(*k)
                    .is_some_and(|p| !p.info.affinity.is_empty())
            })
            .cloned()
            .collect();
        for k in keys {
            self.enqueue(k);
        }
    }

    fn forget_pod(&mut self, key: &str) {
        self.pending.remove(key);
        self.unschedulable.remove(key);
        if self.cache.remove_pod(key) {
            // Freed resources (or anti-affinity) may let others in.
            self.retry_unschedulable();
        }
    }

    fn handle(&mut self, msg: Msg) {
        match msg {
            Msg::PodApplied(pod) => self.pod_applied(pod),
            Msg::PodDeleted(pod) => self.forget_pod(&pod_key(&pod)),
            Msg::PodsListed(keys) => {
                self.pods_synced = true;
                let gone: Vec<String> = self
                    .pending
                    .keys()
                    .cloned()
                    .chain(self.cache.placed_keys())
                    .filter(|k| !keys.contains(k) && !self.binding.contains(k))
                    .collect();
                for k in gone {
                    self.forget_pod(&k);
                }
            }
            Msg::NodeApplied(node) => {
                let name = node.metadata.name.clone().unwrap_or_default();
                if self.cache.upsert_node(&name, NodeView::from_node(&node)) {
                    self.retry_unschedulable();
                }
            }
            Msg::NodeDeleted(name) => self.cache.remove_node(&name),
            Msg::NodesListed(names) => {
                self.nodes_synced = true;
                let gone: Vec<String> = self
                    .cache
                    .nodes()
                    .iter()
                    .filter(|n| n.node.is_some() && !names.contains(&n.name))
                    .map(|n| n.name.clone())
                    .collect();
                for n in gone {
                    self.cache.remove_node(&n);
                }
            }
            Msg::BindFailed { key, conflict } => {
                self.binding.remove(&key);
                self.cache.remove_pod(&key);
                // A conflict means someone else bound it: the watch brings the real placement.
                if !conflict && self.pending.contains_key(&key) {
                    self.unschedulable.insert(key);
                }
            }
        }
    }

    fn pod_applied(&mut self, pod: Pod) {
        let key = pod_key(&pod);
        let phase = pod.status.as_ref().and_then(|s| s.phase.as_deref());
        if matches!(phase, Some("Succeeded" | "Failed")) {
            // Finished pods hold no resources.
            self.forget_pod(&key);
            return;
        }
        let node = pod.spec.as_ref().and_then(|s| s.node_name.clone());
        if let Some(node) = node.filter(|n| !n.is_empty()) {
            if self.binding.remove(&key) && self.cache.node_of(&key) == Some(node.as_str()) {
                // Our own binding confirmed: the assumed pod is already charged there.
                self.pending.remove(&key);
                return;
            }
            self.pending.remove(&key);
            self.unschedulable.remove(&key);
            let newly_placed = self.cache.node_of(&key).is_none();
            self.cache.add_pod(&node, Arc::new(PodInfo::from_pod(&pod)));
            if newly_placed {
                self.retry_waiting_for_pods();
            }
            return;
        }
        if pod.metadata.deletion_timestamp.is_some() || !self.is_ours(&pod) {
            self.forget_pod(&key);
            return;
        }
        if self.binding.contains(&key) || self.cache.node_of(&key).is_some() {
            // Assumed; the binding's own watch event is on its way.
            return;
        }
        let uid = pod.metadata.uid.clone().unwrap_or_default();
        if let Some(p) = self.pending.get(&key)
            && p.uid == uid
            && p.spec == pod.spec
            && p.labels == pod.metadata.labels
        {
            // Only the status changed (for example our own PodScheduled condition).
            return;
        }
        let last_failure = self
            .pending
            .remove(&key)
            .filter(|p| p.uid == uid)
            .and_then(|p| p.last_failure);
        self.pending.insert(
            key.clone(),
            Pending {
                info: Arc::new(PodInfo::from_pod(&pod)),
                uid,
                spec: pod.spec,
                labels: pod.metadata.labels,
                last_failure,
            },
        );
        self.enqueue(key);
    }

    async fn schedule(&mut self, key: &str) {
        let Some(pending) = self.pending.get(key) else {
            return;
        };
        let info = pending.info.clone();
        let started = Instant::now();
        let result = self
            .profile
            .schedule(&info, self.cache.nodes(), self.next_start);
        self.metrics
            .algorithm_nanos
            .fetch_add(started.elapsed().as_nanos() as u64, Ordering::Relaxed);
        match result {
            Ok(placement) => {
                let len = self.cache.nodes().len().max(1);
                self.next_start = (self.next_start + placement.examined) % len;
                let node = self.cache.nodes()[placement.node_index].name.clone();
                self.metrics.scheduled.fetch_add(1, Ordering::Relaxed);
                // Assume before binding so the next cycle already sees the pod there.
                self.cache.add_pod(&node, info.clone());
                self.binding.insert(key.to_string());
                let waited = Instant::now();
                let Ok(permit) = self.permits.clone().acquire_owned().await else {
                    return;
                };
                self.metrics
                    .bind_wait_nanos
                    .fetch_add(waited.elapsed().as_nanos() as u64, Ordering::Relaxed);
                let client = self.client.clone();
                let tx = self.tx.clone();
                let metrics = self.metrics.clone();
                let event_permits = self.event_permits.clone();
                let key = key.to_string();
                let record = self.options.record_scheduled_events;
                tokio::spawn(async move {
                    let outcome = bind(&client, &info, &node).await;
                    drop(permit);
                    match outcome {
                        Ok(()) => {
                            metrics.bound.fetch_add(1, Ordering::Relaxed);
                            if !record {
                                return;
                            }
                            let msg = format!(
                                "Successfully assigned {}/{} to {node}",
                                info.namespace, info.name
                            );
                            let Ok(_permit) = event_permits.acquire_owned().await else {
                                return;
                            };
                            record_event(&client, &info, "Normal", "Scheduled", &msg).await;
                        }
                        Err(e) => {
                            metrics.bind_errors.fetch_add(1, Ordering::Relaxed);
                            let conflict = matches!(&e, kube::Error::Api(s) if s.code == 409);
                            tracing::debug!(pod = %key, error = %e, "binding failed");
                            let _ = tx.send(Msg::BindFailed { key, conflict });
                        }
                    }
                });
            }
            Err(fit) => {
                self.metrics.unschedulable.fetch_add(1, Ordering::Relaxed);
                self.unschedulable.insert(key.to_string());
                self.report_unschedulable(key, &fit).await;
            }
        }
    }

    async fn report_unschedulable(&mut self, key: &str, fit: &FitError) {
        let message = fit.to_string();
        let Some(pending) = self.pending.get_mut(key) else {
            return;
        };
        if pending.last_failure.as_deref() == Some(message.as_str()) {
            return;
        }
        pending.last_failure = Some(message.clone());
        let info = pending.info.clone();
        let Ok(permit) = self.permits.clone().acquire_owned().await else {
            return;
        };
        let client = self.client.clone();
        tokio::spawn(async move {
            record_event(&client, &info, "Warning", "FailedScheduling", &message).await;
            set_unschedulable_condition(&client, &info, &message).await;
            drop(permit);
        });
    }
}

/// Posts the pod's Binding to its node.
async fn bind(client: &Client, pod: &PodInfo, node: &str) -> Result<(), kube::Error> {
    let api: Api<Pod> = Api::namespaced(client.clone(), &pod.namespace);
    let binding = json!({
        "apiVersion": "v1",
        "kind": "Binding",
        "metadata": {"name": pod.name, "namespace": pod.namespace, "uid": pod.uid},
        "target": {"apiVersion": "v1", "kind": "Node", "name": node},
    });
    api.create_subresource::<_, serde_json::Value>(
        "binding",
        &pod.name,
        &PostParams::default(),
        &binding,
    )
    .await
    .map(|_| ())
}

/// Writes a core/v1 Event about the pod, as kube-scheduler reports it.
async fn record_event(client: &Client, pod: &PodInfo, type_: &str, reason: &str, message: &str) {
    let now = chrono::Utc::now();
    let stamp = now.to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    let event = json!({
        "apiVersion": "v1",
        "kind": "Event",
        "metadata": {
            "name": format!("{}.{:x}", pod.name, now.timestamp_nanos_opt().unwrap_or_default()),
            "namespace": pod.namespace,
        },
        "involvedObject": {
            "apiVersion": "v1",
            "kind": "Pod",
            "namespace": pod.namespace,
            "name": pod.name,
            "uid": pod.uid,
        },
        "reason": reason,
        "message": message,
        "type": type_,
        "source": {"component": DEFAULT_SCHEDULER},
        "reportingComponent": DEFAULT_SCHEDULER,
        "reportingInstance": DEFAULT_SCHEDULER,
        "action": if reason == "Scheduled" { "Binding" } else { "Scheduling" },
        "firstTimestamp": stamp,
        "lastTimestamp": stamp,
        "count": 1,
    });
    let event: Event = match serde_json::from_value(event) {
        Ok(e) => e,
        Err(e) => {
            tracing::warn!(error = %e, "building a scheduler event");
            return;
        }
    };
    let api: Api<Event> = Api::namespaced(client.clone(), &pod.namespace);
    if let Err(e) = api.create(&PostParams::default(), &event).await {
        tracing::debug!(pod = %pod.key(), error = %e, "writing a scheduler event failed");
    }
}

/// Sets `PodScheduled=False, reason Unschedulable` with the fit error (status subresource).
async fn set_unschedulable_condition(client: &Client, pod: &PodInfo, message: &str) {
    let now = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    let patch = json!({
        "status": {"conditions": [{
            "type": "PodScheduled",
            "status": "False",
            "reason": "Unschedulable",
            "message": message,
            "lastProbeTime": null,
            "lastTransitionTime": now,
        }]}
    });
    let api: Api<Pod> = Api::namespaced(client.clone(), &pod.namespace);
    if let Err(e) = api
        .patch_status(
            &pod.name,
            &PatchParams::default(),
            &Patch::Strategic(&patch),
        )
        .await
    {
        tracing::debug!(pod = %pod.key(), error = %e, "setting PodScheduled=False failed");
    }
}
