//! The scheduler against the real API server in-process: bindings, FailedScheduling events and
//! conditions, taints, nodeSelector and no overcommit under a burst.

use std::time::Duration;

use k8s_openapi::api::core::v1::{Event, Node, Pod};
use kube::api::{Api, Patch, PatchParams, PostParams};
use serde_json::json;
use skiff_client::Client;
use skiff_server::{Running, ServerConfig};

struct Cluster {
    running: Option<Running>,
    client: Client,
    scheduler: tokio::task::JoinHandle<()>,
    _dir: tempfile::TempDir,
}

impl Cluster {
    async fn start() -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let running = skiff_server::start(ServerConfig {
            port: 0,
            controllers: false,
            ..ServerConfig::new(dir.path().to_path_buf())
        })
        .await
        .expect("server starts");
        let client = running.client.clone();
        let scheduler = skiff_scheduler::start(client.clone());
        Cluster {
            running: Some(running),
            client,
            scheduler,
            _dir: dir,
        }
    }

    async fn stop(mut self) {
        self.scheduler.abort();
        if let Some(r) = self.running.take() {
            r.shutdown().await;
        }
    }

    /// Creates a Node the way KWOK does: the object, then its status.
    async fn node(
        &self,
        name: &str,
        labels: serde_json::Value,
        spec: serde_json::Value,
        alloc: serde_json::Value,
    ) {
        let nodes: Api<Node> = Api::all(self.client.clone());
        let node: Node = serde_json::from_value(json!({
            "apiVersion": "v1", "kind": "Node",
            "metadata": {"name": name, "labels": labels},
            "spec": spec,
        }))
        .expect("node");
        nodes
            .create(&PostParams::default(), &node)
            .await
            .expect("create node");
        let status = json!({"status": {
            "allocatable": alloc, "capacity": alloc,
            "conditions": [{"type": "Ready", "status": "True", "reason": "KubeletReady",
                            "message": "simulated"}],
        }});
        nodes
            .patch_status(name, &PatchParams::default(), &Patch::Merge(&status))
            .await
            .expect("node status");
    }

    async fn pod(&self, name: &str, spec_extra: serde_json::Value, resources: serde_json::Value) {
        let mut spec = json!({
            "containers": [{"name": "app", "image": "nginx",
                            "resources": resources}],
        });
        if let (Some(s), Some(extra)) = (spec.as_object_mut(), spec_extra.as_object()) {
            for (k, v) in extra {
                s.insert(k.clone(), v.clone());
            }
        }
        let pod: Pod = serde_json::from_value(json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name, "namespace": "default"},
            "spec": spec,
        }))
        .expect("pod");
        Api::<Pod>::namespaced(self.client.clone(), "default")
            .create(&PostParams::default(), &pod)
            .await
            .expect("create pod");
    }

    async fn get_pod(&self, name: &str) -> Pod {
        Api::<Pod>::namespaced(self.client.clone(), "default")
            .get(name)
            .await
            .expect("get pod")
    }

    /// Waits (with a deadline) until the pod is bound and returns its node.
    async fn bound_node(&self, name: &str) -> String {
        wait(|| async {
            self.get_pod(name)
                .await
                .spec
                .and_then(|s| s.node_name)
                .filter(|n| !n.is_empty())
        })
        .await
        .unwrap_or_else(|| panic!("pod {name} was not bound"))
    }

    async fn event(&self, pod: &str, reason: &str) -> Event {
        wait(|| async {
            Api::<Event>::namespaced(self.client.clone(), "default")
                .list(&Default::default())
                .await
                .ok()?
                .items
                .into_iter()
                .find(|e| {
                    e.involved_object.name.as_deref() == Some(pod)
                        && e.reason.as_deref() == Some(reason)
                })
        })
        .await
        .unwrap_or_else(|| panic!("no {reason} event for {pod}"))
    }
}

/// Polls until `f` yields a value, for at most ten seconds.
async fn wait<T, F, Fut>(mut f: F) -> Option<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        if let Some(v) = f().await {
            return Some(v);
        }
        if tokio::time::Instant::now() > deadline {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn alloc(cpu: &str, memory: &str, pods: &str) -> serde_json::Value {
    json!({"cpu": cpu, "memory": memory, "pods": pods})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn binds_pods_and_reports_insufficient_memory_until_a_node_fits() {
    let c = Cluster::start().await;
    c.node("node1", json!({}), json!({}), alloc("4", "8Gi", "110"))
        .await;
    c.pod(
        "web-1",
        json!({}),
        json!({"requests": {"cpu": "500m", "memory": "1Gi"}}),
    )
    .await;
    assert_eq!(c.bound_node("web-1").await, "node1");
    let scheduled = c.event("web-1", "Scheduled").await;
    assert_eq!(
        scheduled.message.as_deref(),
        Some("Successfully assigned default/web-1 to node1")
    );
    assert_eq!(scheduled.type_.as_deref(), Some("Normal"));
    let pod = c.get_pod("web-1").await;
    let cond = pod.status.and_then(|s| s.conditions).unwrap_or_default();
    assert!(
        cond.iter()
            .any(|c| c.type_ == "PodScheduled" && c.status == "True")
    );

    c.pod("big", json!({}), json!({"requests": {"memory": "64Gi"}}))
        .await;
    let failed = c.event("big", "FailedScheduling").await;
    assert_eq!(
        failed.message.as_deref(),
        Some("0/1 nodes are available: 1 Insufficient memory.")
    );
    assert_eq!(failed.type_.as_deref(), Some("Warning"));
    assert_eq!(
        failed.source.and_then(|s| s.component).as_deref(),
        Some("default-scheduler")
    );
    assert_eq!(
        failed.reporting_component.as_deref(),
        Some("default-scheduler")
    );
    let condition = wait(|| async {
        c.get_pod("big")
            .await
            .status
            .and_then(|s| s.conditions)
            .unwrap_or_default()
            .into_iter()
            .find(|c| c.type_ == "PodScheduled")
    })
    .await
    .expect("PodScheduled condition");
    assert_eq!(condition.status, "False");
    assert_eq!(condition.reason.as_deref(), Some("Unschedulable"));
    assert_eq!(
        condition.message.as_deref(),
        Some("0/1 nodes are available: 1 Insufficient memory.")
    );

    // A new node that fits makes the scheduler retry.
    c.node("node2", json!({}), json!({}), alloc("4", "128Gi", "110"))
        .await;
    assert_eq!(c.bound_node("big").await, "node2");
    c.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn taints_and_node_selector_steer_pods() {
    let c = Cluster::start().await;
    c.node(
        "gpu",
        json!({"accel": "gpu"}),
        json!({"taints": [{"key": "gpu", "value": "true", "effect": "NoSchedule"}]}),
        json!({"cpu": "8", "memory": "32Gi", "pods": "110", "nvidia.com/gpu": "1"}),
    )
    .await;
    c.node("cpu", json!({}), json!({}), alloc("8", "32Gi", "110"))
        .await;

    c.pod("plain", json!({}), json!({"requests": {"cpu": "100m"}}))
        .await;
    assert_eq!(c.bound_node("plain").await, "cpu");

    c.pod(
        "picky",
        json!({"nodeSelector": {"accel": "gpu"}}),
        json!({}),
    )
    .await;
    let failed = c.event("picky", "FailedScheduling").await;
    assert_eq!(
        failed.message.as_deref(),
        Some(
            "0/2 nodes are available: 1 node(s) didn't match Pod's node affinity/selector, \
             1 node(s) had untolerated taint {gpu: true}."
        )
    );

    c.pod(
        "trainer",
        json!({
            "nodeSelector": {"accel": "gpu"},
            "tolerations": [{"key": "gpu", "operator": "Equal", "value": "true", "effect": "NoSchedule"}],
        }),
        json!({"limits": {"nvidia.com/gpu": "1"}}),
    )
    .await;
    assert_eq!(c.bound_node("trainer").await, "gpu");

    // The only GPU is taken now.
    c.pod(
        "trainer-2",
        json!({"tolerations": [{"key": "gpu", "operator": "Exists"}]}),
        json!({"limits": {"nvidia.com/gpu": "1"}}),
    )
    .await;
    let failed = c.event("trainer-2", "FailedScheduling").await;
    assert_eq!(
        failed.message.as_deref(),
        Some("0/2 nodes are available: 2 Insufficient nvidia.com/gpu.")
    );
    c.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_does_not_overcommit_a_node() {
    let c = Cluster::start().await;
    c.node("small", json!({}), json!({}), alloc("1", "1Gi", "3"))
        .await;
    for i in 0..5 {
        c.pod(
            &format!("p{i}"),
            json!({}),
            json!({"requests": {"cpu": "100m"}}),
        )
        .await;
    }
    let names: Vec<String> = (0..5).map(|i| format!("p{i}")).collect();
    let counts = wait(|| async {
        let mut bound = 0;
        let mut failed = 0;
        for n in &names {
            let pod = c.get_pod(n).await;
            if pod
                .spec
                .as_ref()
                .and_then(|s| s.node_name.as_ref())
                .is_some()
            {
                bound += 1;
            }
            let unschedulable = pod
                .status
                .and_then(|s| s.conditions)
                .unwrap_or_default()
                .iter()
                .any(|c| c.type_ == "PodScheduled" && c.status == "False");
            if unschedulable {
                failed += 1;
            }
        }
        (bound + failed == 5).then_some((bound, failed))
    })
    .await
    .expect("every pod decided");
    assert_eq!(counts, (3, 2));
    for n in &names {
        if c.get_pod(n).await.spec.and_then(|s| s.node_name).is_none() {
            let failed = c.event(n, "FailedScheduling").await;
            assert_eq!(
                failed.message.as_deref(),
                Some("0/1 nodes are available: 1 Too many pods.")
            );
        }
    }
    c.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn anti_affinity_and_cordoned_nodes() {
    let c = Cluster::start().await;
    c.node("n1", json!({}), json!({}), alloc("4", "8Gi", "110"))
        .await;
    c.node(
        "n2",
        json!({}),
        json!({"unschedulable": true}),
        alloc("4", "8Gi", "110"),
    )
    .await;
    let spread = json!({"affinity": {"podAntiAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [{
        "labelSelector": {"matchLabels": {"app": "web"}},
        "topologyKey": "kubernetes.io/hostname",
    }]}}});
    for name in ["web-0", "web-1"] {
        let pod: Pod = serde_json::from_value(json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name, "namespace": "default", "labels": {"app": "web"}},
            "spec": {"containers": [{"name": "app", "image": "nginx"}],
                     "affinity": spread["affinity"].clone()},
        }))
        .expect("pod");
        Api::<Pod>::namespaced(c.client.clone(), "default")
            .create(&PostParams::default(), &pod)
            .await
            .expect("create pod");
        if name == "web-0" {
            assert_eq!(c.bound_node("web-0").await, "n1");
        }
    }
    // web-0's own anti-affinity is checked first, as kube-scheduler does.
    let failed = c.event("web-1", "FailedScheduling").await;
    assert_eq!(
        failed.message.as_deref(),
        Some(
            "0/2 nodes are available: 1 node(s) didn't satisfy existing pods anti-affinity rules, \
             1 node(s) were unschedulable."
        )
    );
    // Uncordoning the second node lets the replica in.
    Api::<Node>::all(c.client.clone())
        .patch(
            "n2",
            &PatchParams::default(),
            &Patch::Merge(&json!({"spec": {"unschedulable": false}})),
        )
        .await
        .expect("uncordon");
    assert_eq!(c.bound_node("web-1").await, "n2");
    c.stop().await;
}
