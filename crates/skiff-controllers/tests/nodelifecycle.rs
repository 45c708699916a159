//! Node lifecycle controller against the real API server, with the test as the node agent (it renews the Lease and posts the Ready condition).

use std::fmt::Debug;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Event, Node, Pod};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use k8s_openapi::jiff::Timestamp;
use k8s_openapi::serde::de::DeserializeOwned;
use kube::api::{Api, ListParams, Patch, PatchParams, PostParams};
use kube::runtime::watcher;
use kube::{Client, Resource, ResourceExt};
use serde_json::{Value, json};
use skiff_controllers::nodelifecycle::{self, TAINT_NOT_READY, TAINT_UNREACHABLE};
use skiff_server::{Running, ServerConfig};
use tokio::time::Instant;

const TIMEOUT: Duration = Duration::from_secs(30);
const GRACE: Duration = Duration::from_secs(2);

struct Env {
    _dir: tempfile::TempDir,
    running: Running,
    client: Client,
    controller: tokio::task::JoinHandle<()>,
}

impl Env {
    async fn start(config: nodelifecycle::Config) -> Env {
        // RUST_LOG=skiff_controllers=debug shows what the controller did.
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
            .with_test_writer()
            .try_init();
        let dir = tempfile::tempdir().expect("tempdir");
        let running = skiff_server::start(ServerConfig {
            port: 0,
            controllers: false,
            ..ServerConfig::new(dir.path().to_path_buf())
        })
        .await
        .expect("server starts");
        let client = running.client.clone();
        let controller = nodelifecycle::start_with(client.clone(), config);
        Env {
            _dir: dir,
            running,
            client,
            controller,
        }
    }

    async fn stop(self) {
        self.controller.abort();
        self.running.shutdown().await;
    }
}

/// Waits (woken by a watch on `api`) until `check` over the listed objects returns a value.
async fn eventually<K, T>(api: &Api<K>, what: &str, mut check: impl FnMut(&[K]) -> Option<T>) -> T
where
    K: Resource + Clone + DeserializeOwned + Debug + Send + 'static,
    K::DynamicType: Default,
{
    let mut events = watcher(api.clone(), watcher::Config::default()).boxed();
    let deadline = Instant::now() + TIMEOUT;
    loop {
        let items = api.list(&ListParams::default()).await.expect("list").items;
        if let Some(v) = check(&items) {
            return v;
        }
        match tokio::time::timeout_at(deadline, events.next()).await {
            Ok(Some(_)) => {}
            Ok(None) => panic!("watch ended while waiting for {what}"),
            Err(_) => panic!("timed out waiting for {what}; last state: {items:#?}"),
        }
    }
}

/// The node agent's heartbeat: renews the Lease every 200 ms while running.
struct Heartbeat(tokio::task::JoinHandle<()>);

impl Heartbeat {
    fn start(leases: Api<Lease>, node: &str) -> Heartbeat {
        let node = node.to_string();
        Heartbeat(tokio::spawn(async move {
            loop {
                let patch = json!({"spec": {"renewTime": MicroTime(Timestamp::now())}});
                leases
                    .patch(&node, &PatchParams::default(), &Patch::Merge(&patch))
                    .await
                    .expect("renew lease");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }))
    }
}

impl Drop for Heartbeat {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Posts the node's Ready condition as the agent would, with a fresh heartbeat.
async fn post_ready(nodes: &Api<Node>, name: &str, status: &str) {
    let now = Timestamp::now().to_string();
    let patch = json!({"status": {"conditions": [{
        "type": "Ready",
        "status": status,
        "reason": if status == "True" { "KubeletReady" } else { "KubeletNotReady" },
        "lastHeartbeatTime": now,
        "lastTransitionTime": now,
    }]}});
    nodes
        .patch_status(name, &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .expect("node status");
}

fn ready_status(n: &Node) -> Option<String> {
    n.status
        .as_ref()?
        .conditions
        .as_ref()?
        .iter()
        .find(|c| c.type_ == "Ready")
        .map(|c| c.status.clone())
}

/// The node's (key, effect) taints, sorted.
fn taints(n: &Node) -> Vec<(String, String)> {
    let mut t: Vec<(String, String)> = n
        .spec
        .as_ref()
        .and_then(|s| s.taints.clone())
        .unwrap_or_default()
        .into_iter()
        .map(|t| (t.key, t.effect))
        .collect();
    t.sort();
    t
}

fn both(key: &str) -> Vec<(String, String)> {
    vec![
        (key.to_string(), "NoExecute".to_string()),
        (key.to_string(), "NoSchedule".to_string()),
    ]
}

fn pod(name: &str, node: &str, tolerations: Value) -> Pod {
    serde_json::from_value(json!({
        "metadata": {"name": name},
        "spec": {
            "nodeName": node,
            "containers": [{"name": "c", "image": "x"}],
            "terminationGracePeriodSeconds": 1,
            "tolerations": tolerations,
        },
    }))
    .expect("pod")
}

fn pod_ready(p: &Pod) -> Option<String> {
    p.status
        .as_ref()?
        .conditions
        .as_ref()?
        .iter()
        .find(|c| c.type_ == "Ready")
        .map(|c| c.status.clone())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_node_is_marked_unknown_tainted_and_drained() {
    let env = Env::start(nodelifecycle::Config {
        grace_period: GRACE,
        monitor_period: Duration::from_millis(500),
        default_eviction_timeout: Duration::from_secs(3),
    })
    .await;
    let nodes: Api<Node> = Api::all(env.client.clone());
    let leases: Api<Lease> = Api::namespaced(env.client.clone(), "kube-node-lease");
    let pods: Api<Pod> = Api::namespaced(env.client.clone(), "default");
    let pp = PostParams::default();

    let node: Node = serde_json::from_value(json!({"metadata": {"name": "n1"}})).expect("node");
    nodes.create(&pp, &node).await.expect("create node");
    post_ready(&nodes, "n1", "True").await;
    let lease: Lease = serde_json::from_value(json!({
        "metadata": {"name": "n1"},
        "spec": {"holderIdentity": "n1", "leaseDurationSeconds": 40,
                 "renewTime": MicroTime(Timestamp::now())},
    }))
    .expect("lease");
    leases.create(&pp, &lease).await.expect("create lease");
    let heartbeat = Heartbeat::start(leases.clone(), "n1");

    // fast: tolerates unreachable for 1 s; default: the defaulted 300 s, which the config
    // turns into 3 s; forever: tolerates unreachable without a limit.
    let unreachable = |secs: Option<i64>| {
        let mut t = json!({"key": TAINT_UNREACHABLE, "operator": "Exists", "effect": "NoExecute"});
        if let Some(s) = secs {
            t["tolerationSeconds"] = json!(s);
        }
        json!([t])
    };
    for (name, tol) in [
        ("fast", unreachable(Some(1))),
        ("default", json!([])),
        ("forever", unreachable(None)),
    ] {
        pods.create(&pp, &pod(name, "n1", tol)).await.expect("pod");
        let status = json!({"status": {"phase": "Running", "podIP": "10.42.0.9",
            "conditions": [{"type": "Ready", "status": "True"}]}});
        pods.patch_status(name, &PatchParams::default(), &Patch::Merge(&status))
            .await
            .expect("pod status");
    }
    let defaulted = pods.get("default").await.expect("pod");
    let tols = defaulted
        .spec
        .and_then(|s| s.tolerations)
        .unwrap_or_default();
    assert!(
        tols.iter()
            .any(|t| t.key.as_deref() == Some(TAINT_UNREACHABLE)
                && t.toleration_seconds == Some(300)),
        "the API server adds DefaultTolerationSeconds: {tols:?}"
    );

    // With a fresh Lease the node stays Ready through more than a grace period.
    let window = tokio::time::timeout(GRACE * 2, async {
        let mut events = watcher(nodes.clone(), watcher::Config::default()).boxed();
        while let Some(ev) = events.next().await {
            if let Ok(watcher::Event::Apply(n) | watcher::Event::InitApply(n)) = ev
                && (ready_status(&n).as_deref() != Some("True") || !taints(&n).is_empty())
            {
                return n;
            }
        }
        panic!("node watch ended");
    })
    .await;
    if let Ok(n) = window {
        panic!("a heartbeating node changed: {n:#?}");
    }

    // The agent goes silent: within the grace period (plus a little) the node is Unknown
    // and tainted unreachable.
    drop(heartbeat);
    let silent = Instant::now();
    let n = eventually(&nodes, "n1 Unknown and tainted", |ns| {
        ns.iter()
            .find(|n| {
                n.name_any() == "n1"
                    && ready_status(n).as_deref() == Some("Unknown")
                    && taints(n) == both(TAINT_UNREACHABLE)
            })
            .cloned()
    })
    .await;
    let tainted = Instant::now();
    let took = tainted - silent;
    assert!(
        took >= GRACE - Duration::from_millis(300),
        "too early: {took:?}"
    );
    assert!(took <= GRACE + Duration::from_secs(2), "too late: {took:?}");
    let cond = n
        .status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .and_then(|c| c.iter().find(|c| c.type_ == "Ready"))
        .cloned()
        .expect("Ready");
    assert_eq!(cond.reason.as_deref(), Some("NodeStatusUnknown"));
    assert_eq!(
        cond.message.as_deref(),
        Some("Kubelet stopped posting node status.")
    );

    // Its pods are no longer ready; "fast" goes after ~1 s (and, as nobody confirms its
    // termination, is force-deleted after its 1 s grace period), "default" after ~3 s.
    eventually(&pods, "pods not ready", |ps| {
        ps.iter()
            .filter(|p| p.name_any() == "forever")
            .all(|p| pod_ready(p).as_deref() == Some("False"))
            .then_some(())
    })
    .await;
    let mut evicted: std::collections::HashMap<String, Duration> = Default::default();
    eventually(&pods, "fast and default evicted", |ps| {
        for name in ["fast", "default"] {
            let deleting = ps
                .iter()
                .find(|p| p.name_any() == name)
                .is_none_or(|p| p.metadata.deletion_timestamp.is_some());
            if deleting {
                evicted
                    .entry(name.into())
                    .or_insert_with(|| tainted.elapsed());
            }
        }
        (evicted.len() == 2).then_some(())
    })
    .await;
    let slack = Duration::from_millis(300);
    assert!(
        evicted["fast"] >= Duration::from_secs(1) - slack,
        "{evicted:?}"
    );
    assert!(evicted["fast"] <= Duration::from_secs(3), "{evicted:?}");
    assert!(
        evicted["default"] >= Duration::from_secs(3) - slack,
        "{evicted:?}"
    );
    assert!(evicted["default"] <= Duration::from_secs(5), "{evicted:?}");
    eventually(&pods, "evicted pods force-deleted", |ps| {
        ps.iter().all(|p| p.name_any() == "forever").then_some(())
    })
    .await;
    let forever = pods.get("forever").await.expect("forever stays");
    assert!(forever.metadata.deletion_timestamp.is_none());
    let dt = pods.get_opt("fast").await.expect("get");
    assert!(dt.is_none());
    // `kubectl describe` shows why.
    let events: Api<Event> = Api::namespaced(env.client.clone(), "default");
    let evs = events
        .list(&ListParams::default())
        .await
        .expect("events")
        .items;
    let has = |obj: &str, reason: &str| {
        evs.iter().any(|e| {
            e.involved_object.name.as_deref() == Some(obj) && e.reason.as_deref() == Some(reason)
        })
    };
    assert!(has("fast", "TaintManagerEviction"), "{evs:#?}");
    assert!(has("forever", "NodeNotReady"), "{evs:#?}");
    assert!(has("n1", "NodeNotReady"), "{evs:#?}");

    // The agent comes back: heartbeat and Ready=True remove the taints.
    let _heartbeat = Heartbeat::start(leases.clone(), "n1");
    post_ready(&nodes, "n1", "True").await;
    eventually(&nodes, "n1 Ready and untainted", |ns| {
        ns.iter()
            .any(|n| {
                n.name_any() == "n1"
                    && ready_status(n).as_deref() == Some("True")
                    && taints(n).is_empty()
            })
            .then_some(())
    })
    .await;

    // The agent reports NotReady itself: not-ready taints instead.
    post_ready(&nodes, "n1", "False").await;
    eventually(&nodes, "n1 tainted not-ready", |ns| {
        ns.iter()
            .any(|n| n.name_any() == "n1" && taints(n) == both(TAINT_NOT_READY))
            .then_some(())
    })
    .await;
    post_ready(&nodes, "n1", "True").await;
    eventually(&nodes, "n1 untainted again", |ns| {
        ns.iter()
            .any(|n| n.name_any() == "n1" && taints(n).is_empty())
            .then_some(())
    })
    .await;
    env.stop().await;
}
