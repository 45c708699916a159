//! What the Endpoints and EndpointSlice controllers share: Service/Pod watches that queue Service keys, a work queue, and the rules for which pod address serves which port.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::future::Future;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::{Endpoints, ObjectReference, Pod, Service, ServicePort};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::api::Api;
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Client, ResourceExt};
use tokio::sync::mpsc::{UnboundedReceiver, UnboundedSender, unbounded_channel};

use crate::workload::ReconcileError;

/// A Service's namespace and name: the unit of work of both controllers.
pub(crate) type Key = (String, String);

/// Periodic re-check of every Service, so that an event lost across a watch restart is
/// corrected eventually.
const RESYNC: Duration = Duration::from_secs(300);

/// The label Kubernetes puts on Endpoints and EndpointSlices of headless Services.
pub(crate) const HEADLESS_LABEL: &str = "service.kubernetes.io/headless";

/// Caches of Services and Pods, and the queue their changes feed.
#[derive(Clone)]
pub(crate) struct Watches {
    pub services: Store<Service>,
    pub pods: Store<Pod>,
    pub queue: UnboundedSender<Key>,
}

/// The consuming end of the queue, and the watch tasks that feed it.
pub(crate) struct Worker {
    watches: Watches,
    rx: UnboundedReceiver<Key>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Watches {
    /// Starts watching Services and Pods. Every Service change queues that Service; every Pod
    /// change queues the Services whose selector matched the pod's labels before or after it;
    /// with `endpoints`, every Endpoints change queues the Service of the same name.
    pub fn start(client: &Client, endpoints: bool) -> (Watches, Worker) {
        let (queue, rx) = unbounded_channel();
        let (services, svc_writer) = reflector::store::<Service>();
        let (pods, pod_writer) = reflector::store::<Pod>();
        let svc_stream = reflector::reflector(
            svc_writer,
            watcher(
                Api::<Service>::all(client.clone()),
                watcher::Config::default(),
            )
            .default_backoff(),
        );
        let tx = queue.clone();
        let svc_task = tokio::spawn(async move {
            let mut events = std::pin::pin!(svc_stream);
            while let Some(ev) = events.next().await {
                let svc = match ev {
                    Ok(watcher::Event::Apply(s) | watcher::Event::InitApply(s)) => s,
                    Ok(watcher::Event::Delete(s)) => s,
                    Ok(_) => continue,
                    Err(e) => {
                        tracing::debug!(error = %e, "service watch");
                        continue;
                    }
                };
                let _ = tx.send(key_of(&svc));
            }
        });
        let pod_stream = reflector::reflector(
            pod_writer,
            watcher(Api::<Pod>::all(client.clone()), watcher::Config::default()).default_backoff(),
        );
        let tx = queue.clone();
        let svc_store = services.clone();
        let pod_task = tokio::spawn(async move {
            // The labels each pod had when last seen: a pod whose labels stop matching a
            // selector must still trigger the Service it leaves.
            let mut last_labels: HashMap<Key, BTreeMap<String, String>> = HashMap::new();
            let mut events = std::pin::pin!(pod_stream);
            while let Some(ev) = events.next().await {
                let (pod, deleted) = match ev {
                    Ok(watcher::Event::Apply(p) | watcher::Event::InitApply(p)) => (p, false),
                    Ok(watcher::Event::Delete(p)) => (p, true),
                    Ok(_) => continue,
                    Err(e) => {
                        tracing::debug!(error = %e, "pod watch");
                        continue;
                    }
                };
                let key = key_of(&pod);
                let new = pod.metadata.labels.clone().unwrap_or_default();
                let old = if deleted {
                    last_labels.remove(&key)
                } else {
                    last_labels.insert(key.clone(), new.clone())
                };
                let mut targets = HashSet::new();
                for svc in svc_store.state() {
                    if svc.namespace().as_deref() != Some(key.0.as_str()) {
                        continue;
                    }
                    let Some(sel) = selector(&svc) else { continue };
                    if selects(sel, &new) || old.as_ref().is_some_and(|o| selects(sel, o)) {
                        targets.insert(key_of(svc.as_ref()));
                    }
                }
                for t in targets {
                    let _ = tx.send(t);
                }
            }
        });
        let tx = queue.clone();
        let svc_store = services.clone();
        let resync_task = tokio::spawn(async move {
            let mut tick = tokio::time::interval(RESYNC);
            tick.tick().await;
            loop {
                tick.tick().await;
                for svc in svc_store.state() {
                    let _ = tx.send(key_of(svc.as_ref()));
                }
            }
        });
        let mut tasks = vec![svc_task, pod_task, resync_task];
        if endpoints {
            let tx = queue.clone();
            let stream = watcher(
                Api::<Endpoints>::all(client.clone()),
                watcher::Config::default(),
            )
            .default_backoff()
            .touched_objects();
            tasks.push(tokio::spawn(async move {
                let mut events = std::pin::pin!(stream);
                while let Some(ev) = events.next().await {
                    match ev {
                        Ok(ep) => {
                            let _ = tx.send(key_of(&ep));
                        }
                        Err(e) => tracing::debug!(error = %e, "endpoints watch"),
                    }
                }
            }));
        }
        let watches = Watches {
            services,
            pods,
            queue,
        };
        let worker = Worker {
            watches: watches.clone(),
            rx,
            tasks,
        };
        (watches, worker)
    }

    /// Waits until both caches hold a full list: reconciling against a half-filled pod cache
    /// would briefly withdraw every endpoint after a restart. Only one task may wait at a
    /// time (kube's store wakes a single waiter).
    pub async fn ready(&self) {
        let _ = self.services.wait_until_ready().await;
        let _ = self.pods.wait_until_ready().await;
    }

    /// The pods of `namespace` that `sel` selects, from the cache, ordered by name.
    pub fn selected_pods(&self, namespace: &str, sel: &BTreeMap<String, String>) -> Vec<Pod> {
        let mut pods: Vec<Pod> = self
            .pods
            .state()
            .into_iter()
            .filter(|p| p.namespace().as_deref() == Some(namespace))
            .filter(|p| selects(sel, p.metadata.labels.as_ref().unwrap_or(&BTreeMap::new())))
            .map(|p| (*p).clone())
            .collect();
        pods.sort_by_key(|p| p.name_any());
        pods
    }

    /// The Service for `key`: from the cache, or with a live GET when the cache does not have
    /// it (a Service created a moment ago, or one that is really gone).
    pub async fn service(
        &self,
        client: &Client,
        key: &Key,
    ) -> Result<Option<Service>, kube::Error> {
        let oref = ObjectRef::<Service>::new(&key.1).within(&key.0);
        if let Some(s) = self.services.get(&oref) {
            return Ok(Some((*s).clone()));
        }
        Api::<Service>::namespaced(client.clone(), &key.0)
            .get_opt(&key.1)
            .await
    }
}

impl Worker {
    /// Runs `reconcile` for queued keys, one at a time and each key once however often it
    /// was queued meanwhile; a failed key is queued again after a growing delay.
    pub async fn run<F, Fut>(mut self, what: &'static str, reconcile: F)
    where
        F: Fn(Key) -> Fut,
        Fut: Future<Output = Result<(), ReconcileError>>,
    {
        tracing::debug!("{what}: waiting for caches");
        self.watches.ready().await;
        tracing::debug!("{what}: caches ready");
        let tasks = std::mem::take(&mut self.tasks);
        let _abort = AbortOnDrop(tasks);
        let mut order: VecDeque<Key> = VecDeque::new();
        let mut queued: HashSet<Key> = HashSet::new();
        let mut failures: HashMap<Key, u32> = HashMap::new();
        loop {
            if order.is_empty() {
                let Some(k) = self.rx.recv().await else {
                    return;
                };
                if queued.insert(k.clone()) {
                    order.push_back(k);
                }
            }
            while let Ok(k) = self.rx.try_recv() {
                if queued.insert(k.clone()) {
                    order.push_back(k);
                }
            }
            let Some(key) = order.pop_front() else {
                continue;
            };
            queued.remove(&key);
            tracing::trace!(?key, "{what}: reconcile");
            match reconcile(key.clone()).await {
                Ok(()) => {
                    failures.remove(&key);
                }
                Err(e) => {
                    let n = failures.entry(key.clone()).or_default();
                    *n = n.saturating_add(1);
                    if !e.is_conflict() {
                        tracing::warn!(error = %e, namespace = %key.0, name = %key.1, "{what} reconcile failed");
                    }
                    let delay =
                        Duration::from_millis(50u64 << (*n).min(9)).min(Duration::from_secs(20));
                    let tx = self.watches.queue.clone();
                    tokio::spawn(async move {
                        tokio::time::sleep(delay).await;
                        let _ = tx.send(key);
                    });
                }
            }
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

pub(crate) fn key_of<K: kube::Resource>(obj: &K) -> Key {
    (obj.namespace().unwrap_or_default(), obj.name_any())
}

/// The Service's selector, if it has a non-empty one (Services without one get their
/// endpoints from somebody else).
pub(crate) fn selector(svc: &Service) -> Option<&BTreeMap<String, String>> {
    svc.spec
        .as_ref()
        .and_then(|s| s.selector.as_ref())
        .filter(|s| !s.is_empty())
}

/// Whether a Service selector (equality on every key) matches `labels`.
pub(crate) fn selects(sel: &BTreeMap<String, String>, labels: &BTreeMap<String, String>) -> bool {
    sel.iter().all(|(k, v)| labels.get(k) == Some(v))
}

/// True for a headless Service (`clusterIP: None`).
pub(crate) fn is_headless(svc: &Service) -> bool {
    svc.spec.as_ref().and_then(|s| s.cluster_ip.as_deref()) == Some("None")
}

/// Whether `spec.publishNotReadyAddresses` is set.
pub(crate) fn publishes_not_ready(svc: &Service) -> bool {
    svc.spec
        .as_ref()
        .and_then(|s| s.publish_not_ready_addresses)
        .unwrap_or(false)
}

/// The pod's primary IP, if it has one.
pub(crate) fn pod_ip(pod: &Pod) -> Option<&str> {
    pod.status
        .as_ref()
        .and_then(|s| s.pod_ip.as_deref())
        .filter(|ip| !ip.is_empty())
}

/// Kubernetes' `ShouldPodBeInEndpoints`: the pod has an IP, is not finished for good, and
/// is not terminating unless `include_terminating`.
pub(crate) fn should_be_in_endpoints(pod: &Pod, include_terminating: bool) -> bool {
    if pod_ip(pod).is_none() {
        return false;
    }
    if !include_terminating && pod.metadata.deletion_timestamp.is_some() {
        return false;
    }
    let phase = pod.status.as_ref().and_then(|s| s.phase.as_deref());
    let restart = pod.spec.as_ref().and_then(|s| s.restart_policy.as_deref());
    match restart {
        Some("Never") => !matches!(phase, Some("Failed" | "Succeeded")),
        Some("OnFailure") => phase != Some("Succeeded"),
        _ => true,
    }
}

/// The pod's hostname for DNS, when its `hostname` is set and its `subdomain` names this
/// Service in the same namespace.
pub(crate) fn hostname_for(pod: &Pod, svc: &Service) -> Option<String> {
    let spec = pod.spec.as_ref()?;
    let host = spec.hostname.as_deref().filter(|h| !h.is_empty())?;
    let same_ns = pod.namespace() == svc.namespace();
    (same_ns && spec.subdomain.as_deref() == Some(svc.name_any().as_str()))
        .then(|| host.to_string())
}

/// The reference from an endpoint to its pod.
pub(crate) fn target_ref(pod: &Pod) -> ObjectReference {
    ObjectReference {
        kind: Some("Pod".into()),
        namespace: pod.namespace(),
        name: Some(pod.name_any()),
        uid: pod.metadata.uid.clone(),
        ..Default::default()
    }
}

/// The pod's node, if it is bound to one.
pub(crate) fn node_name(pod: &Pod) -> Option<String> {
    pod.spec
        .as_ref()
        .and_then(|s| s.node_name.clone())
        .filter(|n| !n.is_empty())
}

/// The protocol of a Service port (TCP when unset).
pub(crate) fn protocol(port: &ServicePort) -> String {
    port.protocol
        .clone()
        .filter(|p| !p.is_empty())
        .unwrap_or_else(|| "TCP".into())
}

/// Kubernetes' `FindPort`: the pod port a Service port's `targetPort` means. A number is
/// taken as is (the port itself when unset); a name is looked up among the pod's container
/// ports with the same protocol, so pods may serve one name on different numbers.
pub(crate) fn find_port(pod: &Pod, port: &ServicePort) -> Option<i32> {
    match &port.target_port {
        None => Some(port.port),
        Some(IntOrString::Int(0)) => Some(port.port),
        Some(IntOrString::Int(n)) => Some(*n),
        Some(IntOrString::String(name)) => {
            if let Ok(n) = name.parse::<i32>() {
                return Some(n);
            }
            let proto = protocol(port);
            pod.spec
                .as_ref()?
                .containers
                .iter()
                .flat_map(|c| c.ports.iter().flatten())
                .find(|p| {
                    p.name.as_deref() == Some(name.as_str())
                        && p.protocol.as_deref().unwrap_or("TCP") == proto
                })
                .map(|p| p.container_port)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{Container, ContainerPort, PodSpec, PodStatus, ServiceSpec};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

    fn pod_with_ports(ports: &[(&str, i32)]) -> Pod {
        Pod {
            spec: Some(PodSpec {
                containers: vec![Container {
                    name: "c".into(),
                    ports: Some(
                        ports
                            .iter()
                            .map(|(n, p)| ContainerPort {
                                name: Some(n.to_string()),
                                container_port: *p,
                                protocol: Some("TCP".into()),
                                ..Default::default()
                            })
                            .collect(),
                    ),
                    ..Default::default()
                }],
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    fn svc_port(port: i32, target: Option<IntOrString>) -> ServicePort {
        ServicePort {
            port,
            target_port: target,
            protocol: Some("TCP".into()),
            ..Default::default()
        }
    }

    #[test]
    fn finds_numbered_and_named_ports() {
        let pod = pod_with_ports(&[("http", 8080), ("metrics", 9090)]);
        assert_eq!(find_port(&pod, &svc_port(80, None)), Some(80));
        assert_eq!(
            find_port(&pod, &svc_port(80, Some(IntOrString::Int(8081)))),
            Some(8081)
        );
        let named = svc_port(80, Some(IntOrString::String("metrics".into())));
        assert_eq!(find_port(&pod, &named), Some(9090));
        let missing = svc_port(80, Some(IntOrString::String("grpc".into())));
        assert_eq!(find_port(&pod, &missing), None);
        let mut udp = named.clone();
        udp.protocol = Some("UDP".into());
        assert_eq!(find_port(&pod, &udp), None, "protocol must match too");
    }

    #[test]
    fn pods_in_endpoints_rules() {
        let mut pod = Pod {
            status: Some(PodStatus {
                pod_ip: Some("10.42.0.5".into()),
                phase: Some("Running".into()),
                ..Default::default()
            }),
            spec: Some(PodSpec::default()),
            ..Default::default()
        };
        assert!(should_be_in_endpoints(&pod, false));
        pod.metadata.deletion_timestamp =
            Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
                k8s_openapi::jiff::Timestamp::now(),
            ));
        assert!(!should_be_in_endpoints(&pod, false));
        assert!(should_be_in_endpoints(&pod, true));
        pod.metadata.deletion_timestamp = None;
        if let Some(s) = pod.spec.as_mut() {
            s.restart_policy = Some("Never".into());
        }
        if let Some(s) = pod.status.as_mut() {
            s.phase = Some("Failed".into());
        }
        assert!(!should_be_in_endpoints(&pod, true));
        if let Some(s) = pod.status.as_mut() {
            s.phase = Some("Running".into());
            s.pod_ip = None;
        }
        assert!(!should_be_in_endpoints(&pod, true), "no IP, no endpoint");
    }

    #[test]
    fn hostname_needs_matching_subdomain() {
        let svc = Service {
            metadata: ObjectMeta {
                name: Some("db".into()),
                namespace: Some("ns".into()),
                ..Default::default()
            },
            spec: Some(ServiceSpec::default()),
            ..Default::default()
        };
        let mut pod = Pod {
            metadata: ObjectMeta {
                namespace: Some("ns".into()),
                ..Default::default()
            },
            spec: Some(PodSpec {
                hostname: Some("db-0".into()),
                subdomain: Some("db".into()),
                ..Default::default()
            }),
            ..Default::default()
        };
        assert_eq!(hostname_for(&pod, &svc).as_deref(), Some("db-0"));
        pod.metadata.namespace = Some("other".into());
        assert_eq!(hostname_for(&pod, &svc), None);
    }
}
