//! Endpoints and EndpointSlice controllers against the real API server, with the test as the node agent (it sets pod IPs and readiness).

use std::collections::BTreeSet;
use std::fmt::Debug;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::{Endpoints, Pod, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::serde::de::DeserializeOwned;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::runtime::watcher;
use kube::{Client, Resource, ResourceExt};
use serde_json::{Value, json};
use skiff_controllers::{endpoints, endpointslice, garbagecollector};
use skiff_server::{Running, ServerConfig};

const TIMEOUT: Duration = Duration::from_secs(30);

struct Env {
    _dir: tempfile::TempDir,
    running: Running,
    client: Client,
    controllers: Vec<tokio::task::JoinHandle<()>>,
}

impl Env {
    async fn start() -> Env {
        // RUST_LOG=skiff_controllers=debug shows what the controllers did.
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
        let controllers = vec![
            endpoints::start(client.clone()),
            endpointslice::start(client.clone()),
            garbagecollector::start(client.clone()),
        ];
        Env {
            _dir: dir,
            running,
            client,
            controllers,
        }
    }

    fn api<K: Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>>(
        &self,
    ) -> Api<K> {
        Api::namespaced(self.client.clone(), "default")
    }

    /// Runs kubectl against this server (blocking, so on the blocking pool).
    async fn kubectl(&self, args: &[&str]) -> (bool, String) {
        let kubeconfig = self.running.kubeconfig.clone();
        let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
        tokio::task::spawn_blocking(move || {
            let out = std::process::Command::new("kubectl")
                .arg("--kubeconfig")
                .arg(&kubeconfig)
                .arg("-n")
                .arg("default")
                .args(&args)
                .output()
                .expect("kubectl runs");
            let text = format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
            (out.status.success(), text)
        })
        .await
        .expect("kubectl task")
    }

    async fn stop(self) {
        for c in &self.controllers {
            c.abort();
        }
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
    let deadline = tokio::time::Instant::now() + TIMEOUT;
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

fn service(name: &str, selector: Value, ports: Value) -> Service {
    serde_json::from_value(json!({
        "metadata": {"name": name, "labels": {"team": "ml"}},
        "spec": {"selector": selector, "ports": ports},
    }))
    .expect("service")
}

/// A pod serving the named port `http` on `http_port` (and 9100 unnamed).
fn pod(name: &str, app: &str, http_port: i32, node: Option<&str>) -> Pod {
    let mut spec = json!({
        "containers": [{
            "name": "c",
            "image": "x",
            "ports": [
                {"name": "http", "containerPort": http_port},
                {"containerPort": 9100},
            ],
        }],
        "terminationGracePeriodSeconds": 30,
    });
    if let Some(node) = node {
        spec["nodeName"] = json!(node);
    }
    serde_json::from_value(json!({
        "metadata": {"name": name, "labels": {"app": app}},
        "spec": spec,
    }))
    .expect("pod")
}

/// What the node agent would report: an IP, Running, and the Ready condition.
async fn set_status(pods: &Api<Pod>, name: &str, ip: &str, ready: bool) {
    let status = json!({"status": {
        "phase": "Running",
        "podIP": ip,
        "podIPs": [{"ip": ip}],
        "conditions": [{"type": "Ready", "status": if ready { "True" } else { "False" }}],
    }});
    pods.patch_status(name, &PatchParams::default(), &Patch::Merge(&status))
        .await
        .expect("pod status");
}

async fn create_pod(pods: &Api<Pod>, pod: Pod, ip: &str, ready: bool) {
    let name = pod.name_any();
    pods.create(&PostParams::default(), &pod)
        .await
        .expect("create pod");
    set_status(pods, &name, ip, ready).await;
}

/// (ip, port name, port, ready) for every address and port of an Endpoints.
type Flat = BTreeSet<(String, String, i32, bool)>;

fn flatten_endpoints(ep: &Endpoints) -> Flat {
    let mut out = Flat::new();
    for s in ep.subsets.iter().flatten() {
        for (list, ready) in [(&s.addresses, true), (&s.not_ready_addresses, false)] {
            for a in list.iter().flatten() {
                for p in s.ports.iter().flatten() {
                    let name = p.name.clone().unwrap_or_default();
                    out.insert((a.ip.clone(), name, p.port, ready));
                }
            }
        }
    }
    out
}

/// (ip, port name, port, ready, serving, terminating) over all slices.
type FlatSlice = BTreeSet<(String, String, i32, bool, bool, bool)>;

fn flatten_slices(slices: &[EndpointSlice]) -> FlatSlice {
    let mut out = FlatSlice::new();
    for s in slices {
        for e in &s.endpoints {
            let c = e.conditions.clone().unwrap_or_default();
            for ip in &e.addresses {
                for p in s.ports.iter().flatten() {
                    out.insert((
                        ip.clone(),
                        p.name.clone().unwrap_or_default(),
                        p.port.unwrap_or(0),
                        c.ready == Some(true),
                        c.serving == Some(true),
                        c.terminating == Some(true),
                    ));
                }
            }
        }
    }
    out
}

fn flat(rows: &[(&str, &str, i32, bool)]) -> Flat {
    rows.iter()
        .map(|(ip, n, p, r)| (ip.to_string(), n.to_string(), *p, *r))
        .collect()
}

/// Rows of an EndpointSlice for a pod that is not terminating (serving = ready).
fn flat_slices(rows: &[(&str, &str, i32, bool)]) -> FlatSlice {
    rows.iter()
        .map(|(ip, n, p, r)| (ip.to_string(), n.to_string(), *p, *r, *r, false))
        .collect()
}

async fn wait_endpoints(env: &Env, name: &str, want: &Flat) -> Endpoints {
    let api: Api<Endpoints> = env.api();
    eventually(&api, &format!("endpoints {name} = {want:?}"), |eps| {
        eps.iter()
            .find(|e| e.name_any() == name && &flatten_endpoints(e) == want)
            .cloned()
    })
    .await
}

fn slices_of(all: &[EndpointSlice], svc: &str) -> Vec<EndpointSlice> {
    all.iter()
        .filter(|s| {
            s.labels()
                .get("kubernetes.io/service-name")
                .map(String::as_str)
                == Some(svc)
        })
        .cloned()
        .collect()
}

async fn wait_slices(env: &Env, svc: &str, want: &FlatSlice) -> Vec<EndpointSlice> {
    let api: Api<EndpointSlice> = env.api();
    eventually(&api, &format!("slices of {svc} = {want:?}"), |all| {
        let mine = slices_of(all, svc);
        (!mine.is_empty() && &flatten_slices(&mine) == want).then_some(mine)
    })
    .await
}

/// Makes both controllers process a fresh event and waits until they did: a pod for a
/// separate "sentinel" Service. Both controllers handle events in order through one queue,
/// so everything queued before has been reconciled once the sentinel shows up.
async fn barrier(env: &Env, round: u32) {
    let pods: Api<Pod> = env.api();
    let name = format!("sentinel-{round}");
    let ip = format!("10.42.9.{round}");
    create_pod(&pods, pod(&name, "sentinel", 8080, None), &ip, true).await;
    let want = flat(&[(ip.as_str(), "", 8080, true)]);
    wait_endpoints(env, "sentinel", &want).await;
    wait_slices(
        env,
        "sentinel",
        &flat_slices(&[(ip.as_str(), "", 8080, true)]),
    )
    .await;
    pods.delete(&name, &DeleteParams::default())
        .await
        .expect("delete sentinel");
    wait_endpoints(env, "sentinel", &Flat::new()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn endpoints_and_slices_follow_pods_and_services() {
    let env = Env::start().await;
    let svcs: Api<Service> = env.api();
    let pods: Api<Pod> = env.api();
    let pp = PostParams::default();
    let ports = json!([
        {"name": "web", "port": 80, "targetPort": "http"},
        {"name": "metrics", "port": 9100},
    ]);
    svcs.create(&pp, &service("web", json!({"app": "web"}), ports))
        .await
        .expect("service");
    svcs.create(
        &pp,
        &service(
            "sentinel",
            json!({"app": "sentinel"}),
            json!([{"port": 8080}]),
        ),
    )
    .await
    .expect("sentinel service");

    // a and b serve `http` on different numbers; c is not ready; d has no IP yet.
    create_pod(&pods, pod("a", "web", 8080, None), "10.42.0.1", true).await;
    create_pod(&pods, pod("b", "web", 8081, None), "10.42.0.2", true).await;
    create_pod(
        &pods,
        pod("c", "web", 8080, Some("node-1")),
        "10.42.0.3",
        false,
    )
    .await;
    pods.create(&pp, &pod("d", "web", 8080, None))
        .await
        .expect("pod d");
    let rows = [
        ("10.42.0.1", "web", 8080, true),
        ("10.42.0.1", "metrics", 9100, true),
        ("10.42.0.2", "web", 8081, true),
        ("10.42.0.2", "metrics", 9100, true),
        ("10.42.0.3", "web", 8080, false),
        ("10.42.0.3", "metrics", 9100, false),
    ];
    let ep = wait_endpoints(&env, "web", &flat(&rows)).await;
    // Pods that serve `http` on different numbers are in different subsets.
    let subsets = ep.subsets.clone().unwrap_or_default();
    let web_ports: Vec<Vec<i32>> = subsets
        .iter()
        .map(|s| {
            s.ports
                .iter()
                .flatten()
                .filter(|p| p.name.as_deref() == Some("web"))
                .map(|p| p.port)
                .collect()
        })
        .collect();
    assert!(
        web_ports.contains(&vec![8080]) && web_ports.contains(&vec![8081]),
        "{subsets:#?}"
    );
    assert_eq!(ep.labels().get("team").map(String::as_str), Some("ml"));
    let c_addr = subsets
        .iter()
        .flat_map(|s| s.not_ready_addresses.iter().flatten())
        .find(|a| a.ip == "10.42.0.3")
        .expect("c listed as not ready");
    assert_eq!(c_addr.node_name.as_deref(), Some("node-1"));
    let c_ref = c_addr.target_ref.clone().expect("targetRef");
    assert_eq!(
        (
            c_ref.kind.as_deref(),
            c_ref.name.as_deref(),
            c_ref.namespace.as_deref()
        ),
        (Some("Pod"), Some("c"), Some("default"))
    );
    let c_uid = pods.get("c").await.expect("pod c").metadata.uid;
    assert_eq!(c_ref.uid, c_uid);

    let slices = wait_slices(&env, "web", &flat_slices(&rows)).await;
    let svc_uid = svcs.get("web").await.expect("svc").metadata.uid;
    for s in &slices {
        assert!(s.name_any().starts_with("web-"), "{}", s.name_any());
        assert_eq!(s.name_any().len(), "web-".len() + 5);
        assert_eq!(s.address_type, "IPv4");
        assert_eq!(
            s.labels()
                .get("endpointslice.kubernetes.io/managed-by")
                .map(String::as_str),
            Some("endpointslice-controller.k8s.io")
        );
        let owner = s.owner_references().first().cloned().expect("owner");
        assert_eq!(
            (owner.kind.as_str(), owner.name.as_str()),
            ("Service", "web")
        );
        assert_eq!(Some(owner.uid), svc_uid);
        assert_eq!(
            (owner.controller, owner.block_owner_deletion),
            (Some(true), Some(true))
        );
        for e in &s.endpoints {
            let tr = e.target_ref.clone().expect("targetRef");
            assert_eq!(tr.kind.as_deref(), Some("Pod"));
            if tr.name.as_deref() == Some("c") {
                assert_eq!(e.node_name.as_deref(), Some("node-1"));
            }
        }
    }
    assert_eq!(
        slices.len(),
        2,
        "one slice per resolved port set: {slices:#?}"
    );
    // kubectl reads both: `get endpoints` the Endpoints, `describe service` the slices.
    let (ok, out) = env.kubectl(&["get", "endpoints", "web"]).await;
    assert!(
        ok && out.contains("10.42.0.1:8080") && out.contains("more"),
        "{out}"
    );
    let (ok, out) = env.kubectl(&["describe", "service", "web"]).await;
    let line = out
        .lines()
        .find(|l| l.starts_with("Endpoints:"))
        .unwrap_or_default();
    assert!(
        ok && line.contains("10.42.0.1:8080") && line.contains("10.42.0.2:8081"),
        "{out}"
    );
    assert!(
        !line.contains("10.42.0.3"),
        "not-ready pods are not listed: {out}"
    );

    // Nothing relevant changes: neither object is written again.
    let ep_rv = ep.resource_version();
    let slice_rvs: Vec<_> = slices
        .iter()
        .map(|s| (s.name_any(), s.resource_version()))
        .collect();
    pods.patch(
        "a",
        &PatchParams::default(),
        &Patch::Merge(&json!({"metadata": {"annotations": {"touched": "yes"}}})),
    )
    .await
    .expect("touch a");
    barrier(&env, 1).await;
    let eps: Api<Endpoints> = env.api();
    assert_eq!(
        eps.get("web").await.expect("endpoints").resource_version(),
        ep_rv
    );
    let slice_api: Api<EndpointSlice> = env.api();
    for (name, rv) in &slice_rvs {
        assert_eq!(
            &slice_api.get(name).await.expect("slice").resource_version(),
            rv
        );
    }

    // c becomes ready, d gets an IP and is not ready.
    set_status(&pods, "c", "10.42.0.3", true).await;
    set_status(&pods, "d", "10.42.0.4", false).await;
    let rows = [
        ("10.42.0.1", "web", 8080, true),
        ("10.42.0.1", "metrics", 9100, true),
        ("10.42.0.2", "web", 8081, true),
        ("10.42.0.2", "metrics", 9100, true),
        ("10.42.0.3", "web", 8080, true),
        ("10.42.0.3", "metrics", 9100, true),
        ("10.42.0.4", "web", 8080, false),
        ("10.42.0.4", "metrics", 9100, false),
    ];
    wait_endpoints(&env, "web", &flat(&rows)).await;
    let slices_now = wait_slices(&env, "web", &flat_slices(&rows)).await;
    // The slices were updated in place, not replaced.
    let names: BTreeSet<String> = slices_now.iter().map(|s| s.name_any()).collect();
    let before: BTreeSet<String> = slice_rvs.iter().map(|(n, _)| n.clone()).collect();
    assert_eq!(names, before);

    // b is deleted (unbound: at once); c is deleted gracefully (bound to a node, nobody
    // confirms): it leaves the Endpoints but stays in the slice as terminating and serving.
    pods.delete("b", &DeleteParams::default())
        .await
        .expect("delete b");
    pods.delete("c", &DeleteParams::default())
        .await
        .expect("delete c");
    let rows = [
        ("10.42.0.1", "web", 8080, true),
        ("10.42.0.1", "metrics", 9100, true),
        ("10.42.0.4", "web", 8080, false),
        ("10.42.0.4", "metrics", 9100, false),
    ];
    wait_endpoints(&env, "web", &flat(&rows)).await;
    let mut want = flat_slices(&rows);
    want.insert(("10.42.0.3".into(), "web".into(), 8080, false, true, true));
    want.insert((
        "10.42.0.3".into(),
        "metrics".into(),
        9100,
        false,
        true,
        true,
    ));
    wait_slices(&env, "web", &want).await;
    let force = DeleteParams {
        grace_period_seconds: Some(0),
        ..Default::default()
    };
    pods.delete("c", &force).await.expect("force delete c");
    wait_slices(&env, "web", &flat_slices(&rows)).await;

    // The selector changes: the old pods leave, a pod with the new label arrives.
    create_pod(&pods, pod("e", "web-v2", 8080, None), "10.42.0.5", true).await;
    svcs.patch(
        "web",
        &PatchParams::default(),
        &Patch::Merge(&json!({"spec": {"selector": {"app": "web-v2"}}})),
    )
    .await
    .expect("new selector");
    let rows = [
        ("10.42.0.5", "web", 8080, true),
        ("10.42.0.5", "metrics", 9100, true),
    ];
    wait_endpoints(&env, "web", &flat(&rows)).await;
    wait_slices(&env, "web", &flat_slices(&rows)).await;

    // A pod's labels change so that it leaves the Service.
    pods.patch(
        "e",
        &PatchParams::default(),
        &Patch::Merge(&json!({"metadata": {"labels": {"app": "gone"}}})),
    )
    .await
    .expect("relabel e");
    wait_endpoints(&env, "web", &Flat::new()).await;
    // No endpoints: one empty placeholder slice is left.
    let api: Api<EndpointSlice> = env.api();
    eventually(&api, "one empty slice", |all| {
        let mine = slices_of(all, "web");
        (mine.len() == 1 && mine[0].endpoints.is_empty()).then_some(())
    })
    .await;

    // The Service goes: its Endpoints and slices go with it.
    svcs.delete("web", &DeleteParams::default())
        .await
        .expect("delete service");
    eventually(&eps, "endpoints deleted", |all| {
        (!all.iter().any(|e| e.name_any() == "web")).then_some(())
    })
    .await;
    eventually(&api, "slices deleted", |all| {
        slices_of(all, "web").is_empty().then_some(())
    })
    .await;
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn services_without_selector_keep_and_mirror_their_endpoints() {
    let env = Env::start().await;
    let svcs: Api<Service> = env.api();
    let eps: Api<Endpoints> = env.api();
    let pp = PostParams::default();
    svcs.create(
        &pp,
        &service(
            "sentinel",
            json!({"app": "sentinel"}),
            json!([{"port": 8080}]),
        ),
    )
    .await
    .expect("sentinel service");
    let manual: Service = serde_json::from_value(json!({
        "metadata": {"name": "external"},
        "spec": {"ports": [{"port": 5432}]},
    }))
    .expect("service");
    svcs.create(&pp, &manual).await.expect("service");
    let ep: Endpoints = serde_json::from_value(json!({
        "metadata": {"name": "external"},
        "subsets": [{"addresses": [{"ip": "127.0.0.1"}], "ports": [{"port": 5432}]}],
    }))
    .expect("endpoints");
    let created = eps.create(&pp, &ep).await.expect("endpoints");
    barrier(&env, 1).await;
    let now = eps.get("external").await.expect("endpoints");
    assert_eq!(now.resource_version(), created.resource_version());

    // Its Endpoints are mirrored into slices of their own manager.
    let row = |ip: &str, ready: bool| (ip.to_string(), String::new(), 5432, ready, false, false);
    let mirrored = wait_slices(&env, "external", &[row("127.0.0.1", true)].into()).await;
    assert_eq!(
        mirrored[0]
            .labels()
            .get("endpointslice.kubernetes.io/managed-by")
            .map(String::as_str),
        Some("endpointslicemirroring-controller.k8s.io")
    );
    let edit = json!({"subsets": [{
        "addresses": [{"ip": "127.0.0.1"}],
        "notReadyAddresses": [{"ip": "127.0.0.2"}],
        "ports": [{"port": 5432}],
    }]});
    eps.patch("external", &PatchParams::default(), &Patch::Merge(&edit))
        .await
        .expect("edit endpoints");
    let want = [row("127.0.0.1", true), row("127.0.0.2", false)].into();
    let updated = wait_slices(&env, "external", &want).await;
    assert_eq!(
        updated[0].name_any(),
        mirrored[0].name_any(),
        "updated in place"
    );
    let skip = json!({"metadata": {"labels": {"endpointslice.kubernetes.io/skip-mirror": "true"}}});
    eps.patch("external", &PatchParams::default(), &Patch::Merge(&skip))
        .await
        .expect("skip mirror");
    let slices: Api<EndpointSlice> = env.api();
    eventually(&slices, "mirrored slices removed", |all| {
        slices_of(all, "external").is_empty().then_some(())
    })
    .await;

    // The headless variant with a selector and no ports still lists its pods.
    let headless: Service = serde_json::from_value(json!({
        "metadata": {"name": "db"},
        "spec": {"clusterIP": "None", "selector": {"app": "db"}},
    }))
    .expect("service");
    svcs.create(&pp, &headless).await.expect("headless");
    let pods: Api<Pod> = env.api();
    let mut p = pod("db-0", "db", 5432, None);
    if let Some(spec) = p.spec.as_mut() {
        spec.hostname = Some("db-0".into());
        spec.subdomain = Some("db".into());
    }
    create_pod(&pods, p, "10.42.1.1", true).await;
    let ep = eventually(&eps, "headless endpoints", |all| {
        all.iter()
            .find(|e| e.name_any() == "db" && e.subsets.as_ref().is_some_and(|s| !s.is_empty()))
            .cloned()
    })
    .await;
    let subset = &ep.subsets.clone().unwrap_or_default()[0];
    assert!(subset.ports.is_none());
    let addr = &subset.addresses.clone().unwrap_or_default()[0];
    assert_eq!(
        (addr.ip.as_str(), addr.hostname.as_deref()),
        ("10.42.1.1", Some("db-0"))
    );
    assert!(ep.labels().contains_key("service.kubernetes.io/headless"));
    env.stop().await;
}
