//! ReplicaSet and Deployment controllers against the real API server, with the test as kubelet.

use std::collections::HashMap;
use std::fmt::Debug;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet};
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use k8s_openapi::serde::de::DeserializeOwned;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::runtime::watcher;
use kube::{Client, Resource, ResourceExt};
use serde_json::{Value, json};
use skiff_controllers::{deployment, replicaset};
use skiff_server::{Running, ServerConfig};

const TIMEOUT: Duration = Duration::from_secs(60);

struct Env {
    _dir: tempfile::TempDir,
    running: Running,
    client: Client,
    controllers: Vec<tokio::task::JoinHandle<()>>,
}

impl Env {
    async fn start() -> Env {
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
            replicaset::start(client.clone()),
            deployment::start(client.clone()),
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

    async fn stop(self) {
        for c in &self.controllers {
            c.abort();
        }
        self.running.shutdown().await;
    }

    /// Runs kubectl against this server (blocking, so on the blocking pool).
    async fn kubectl(&self, args: &[&str]) -> (bool, String) {
        let kubeconfig: PathBuf = self.running.kubeconfig.clone();
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
}

/// Waits (driven by a watch on `api`, no polling) until `check` over the listed objects
/// returns a value.
async fn eventually<K, T>(api: &Api<K>, what: &str, mut check: impl FnMut(&[K]) -> Option<T>) -> T
where
    K: Resource + Clone + DeserializeOwned + Debug + Send + 'static,
    K::DynamicType: Default,
{
    // The watcher's initial list (on first poll) covers changes made before it started.
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

fn active(pods: &[Pod]) -> Vec<&Pod> {
    pods.iter()
        .filter(|p| p.metadata.deletion_timestamp.is_none())
        .collect()
}

fn is_ready(p: &Pod) -> bool {
    p.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

fn image(p: &Pod) -> String {
    p.spec
        .as_ref()
        .and_then(|s| s.containers.first())
        .and_then(|c| c.image.clone())
        .unwrap_or_default()
}

fn owner_name(p: &Pod) -> Option<String> {
    p.metadata
        .owner_references
        .as_ref()?
        .iter()
        .find(|o| o.controller == Some(true))
        .map(|o| o.name.clone())
}

/// The fake kubelet: the pod is Running and Ready from now on.
async fn make_ready(pods: &Api<Pod>, name: &str) {
    let now = serde_json::to_value(Time(Timestamp::now())).expect("time");
    let patch = json!({"status": {"phase": "Running", "conditions": [
        {"type": "Ready", "status": "True", "lastTransitionTime": now}
    ]}});
    match pods
        .patch_status(name, &PatchParams::default(), &Patch::Merge(&patch))
        .await
    {
        Ok(_) => {}
        // The controllers may delete a surplus pod at any moment, as they would a real one.
        Err(kube::Error::Api(s)) if s.code == 404 => {}
        Err(e) => panic!("pod status patch: {e}"),
    }
}

async fn make_all_ready(pods: &Api<Pod>) {
    let list = pods.list(&ListParams::default()).await.expect("list").items;
    for p in active(&list) {
        if !is_ready(p) {
            make_ready(pods, &p.name_any()).await;
        }
    }
}

fn replica_set(name: &str, replicas: i32) -> ReplicaSet {
    serde_json::from_value(json!({
        "apiVersion": "apps/v1", "kind": "ReplicaSet",
        "metadata": {"name": name},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {"labels": {"app": name}},
                "spec": {"containers": [{"name": "c", "image": "nginx:1"}]}
            }
        }
    }))
    .expect("replicaset")
}

fn deployment(name: &str, replicas: i32, image: &str, strategy: Value) -> Deployment {
    serde_json::from_value(json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": name},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": name}},
            "strategy": strategy,
            "template": {
                "metadata": {"labels": {"app": name}},
                "spec": {"containers": [{"name": "c", "image": image}]}
            }
        }
    }))
    .expect("deployment")
}

fn rs_status(rs: &ReplicaSet) -> (i32, i32, i32, i32) {
    let s = rs.status.clone().unwrap_or_default();
    (
        s.replicas,
        s.fully_labeled_replicas.unwrap_or(0),
        s.ready_replicas.unwrap_or(0),
        s.available_replicas.unwrap_or(0),
    )
}

async fn set_image(d: &Api<Deployment>, name: &str, image: &str) {
    let patch =
        json!({"spec": {"template": {"spec": {"containers": [{"name": "c", "image": image}]}}}});
    d.patch(name, &PatchParams::default(), &Patch::Strategic(&patch))
        .await
        .expect("image patch");
}

/// `kubectl rollout status`'s success test.
fn rollout_done(d: &Deployment) -> bool {
    let want = d.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1);
    let s = d.status.clone().unwrap_or_default();
    s.observed_generation >= d.metadata.generation
        && s.updated_replicas == Some(want)
        && s.replicas == Some(want)
        && s.available_replicas == Some(want)
}

fn cond(d: &Deployment, type_: &str) -> Option<(String, String)> {
    d.status
        .as_ref()?
        .conditions
        .as_ref()?
        .iter()
        .find(|c| c.type_ == type_)
        .map(|c| (c.status.clone(), c.reason.clone().unwrap_or_default()))
}

fn revision(rs: &ReplicaSet) -> String {
    rs.annotations()
        .get(deployment::REVISION)
        .cloned()
        .unwrap_or_default()
}

fn by_hash<'a>(rss: &'a [ReplicaSet], d: &str) -> Vec<&'a ReplicaSet> {
    rss.iter()
        .filter(|r| r.name_any().starts_with(&format!("{d}-")))
        .collect()
}

/// Fakes readiness one pod at a time until `done` holds for the pods, checking nothing else.
async fn drive_rollout(pods: &Api<Pod>, what: &str, done: impl Fn(&[&Pod]) -> bool) {
    loop {
        let next = eventually(pods, what, |list| {
            let act = active(list);
            if done(&act) {
                return Some(None);
            }
            act.iter()
                .find(|p| !is_ready(p))
                .map(|p| Some(p.name_any()))
        })
        .await;
        match next {
            Some(name) => make_ready(pods, &name).await,
            None => return,
        }
    }
}

#[derive(Default, Debug)]
struct Observed {
    synced: bool,
    max_active: usize,
    min_ready: usize,
    mixed_images: bool,
    events: usize,
}

/// Watches the pods and records, at every change, the active pod count, the ready count and
/// whether two images ran at once.
async fn observe_pods(pods: Api<Pod>) -> Arc<Mutex<Observed>> {
    let obs = Arc::new(Mutex::new(Observed {
        min_ready: usize::MAX,
        ..Default::default()
    }));
    let (synced_tx, mut synced_rx) = tokio::sync::watch::channel(false);
    let o = obs.clone();
    tokio::spawn(async move {
        let mut state: HashMap<String, Pod> = HashMap::new();
        let mut stream = watcher(pods, watcher::Config::default()).boxed();
        while let Some(ev) = stream.next().await {
            let Ok(ev) = ev else { continue };
            match ev {
                watcher::Event::Apply(p) | watcher::Event::InitApply(p) => {
                    state.insert(p.name_any(), p);
                }
                watcher::Event::Delete(p) => {
                    state.remove(&p.name_any());
                }
                watcher::Event::Init => state.clear(),
                watcher::Event::InitDone => {
                    if let Ok(mut o) = o.lock() {
                        o.synced = true;
                    }
                    let _ = synced_tx.send(true);
                }
            }
            let Ok(mut o) = o.lock() else { return };
            if !o.synced {
                continue;
            }
            let act: Vec<&Pod> = state
                .values()
                .filter(|p| p.metadata.deletion_timestamp.is_none())
                .collect();
            let ready = act.iter().filter(|p| is_ready(p)).count();
            let mut images: Vec<String> = act.iter().map(|p| image(p)).collect();
            images.sort();
            images.dedup();
            o.max_active = o.max_active.max(act.len());
            o.min_ready = o.min_ready.min(ready);
            o.mixed_images |= images.len() > 1;
            o.events += 1;
        }
    });
    let _ = tokio::time::timeout(TIMEOUT, synced_rx.wait_for(|s| *s)).await;
    obs
}

#[tokio::test]
async fn replicaset_scales_replaces_adopts_and_releases() {
    let env = Env::start().await;
    let rss: Api<ReplicaSet> = env.api();
    let pods: Api<Pod> = env.api();
    let rs = rss
        .create(&PostParams::default(), &replica_set("web", 3))
        .await
        .expect("create rs");
    let uid = rs.metadata.uid.clone().unwrap_or_default();

    let names = eventually(&pods, "3 pods", |p| {
        let act = active(p);
        (act.len() == 3).then(|| act.iter().map(|p| p.name_any()).collect::<Vec<_>>())
    })
    .await;
    let list = pods.list(&ListParams::default()).await.expect("list").items;
    for p in &list {
        let name = p.name_any();
        let suffix = name.strip_prefix("web-").expect("named after the rs");
        assert_eq!(suffix.len(), 5, "{name}");
        let r = &p.metadata.owner_references.as_ref().expect("owned")[0];
        assert_eq!(
            (r.uid.as_str(), r.controller, r.block_owner_deletion),
            (uid.as_str(), Some(true), Some(true))
        );
        assert_eq!(p.labels().get("app").map(String::as_str), Some("web"));
    }

    // Status follows readiness.
    eventually(&rss, "status replicas 3", |r| {
        (rs_status(&r[0]) == (3, 3, 0, 0)).then_some(())
    })
    .await;
    make_all_ready(&pods).await;
    eventually(&rss, "3 ready", |r| {
        let s = r[0].status.clone().unwrap_or_default();
        (rs_status(&r[0]) == (3, 3, 3, 3) && s.observed_generation == r[0].metadata.generation)
            .then_some(())
    })
    .await;

    // Scale up to 5, then down to 3: the two new (not ready) pods go first.
    let scale = |n: i32| json!({"spec": {"replicas": n}});
    rss.patch_scale("web", &PatchParams::default(), &Patch::Merge(&scale(5)))
        .await
        .expect("scale");
    eventually(&pods, "5 pods", |p| (active(p).len() == 5).then_some(())).await;
    rss.patch_scale("web", &PatchParams::default(), &Patch::Merge(&scale(3)))
        .await
        .expect("scale");
    let left = eventually(&pods, "3 pods again", |p| {
        let act = active(p);
        (act.len() == 3).then(|| {
            let mut n: Vec<String> = act.iter().map(|p| p.name_any()).collect();
            n.sort();
            n
        })
    })
    .await;
    let mut original = names.clone();
    original.sort();
    assert_eq!(
        left, original,
        "the not-ready surplus pods are deleted first"
    );

    // A deleted pod is replaced.
    pods.delete(&names[0], &DeleteParams::default())
        .await
        .expect("delete pod");
    eventually(&pods, "a replacement", |p| {
        let act = active(p);
        (act.len() == 3 && act.iter().all(|p| p.name_any() != names[0])).then_some(())
    })
    .await;

    // A pod that stops matching is released (and replaced).
    let relabel = json!({"metadata": {"labels": {"app": "other"}}});
    pods.patch(&names[1], &PatchParams::default(), &Patch::Merge(&relabel))
        .await
        .expect("relabel");
    eventually(&pods, "release and replacement", |p| {
        let released = p
            .iter()
            .find(|p| p.name_any() == names[1])
            .is_some_and(|p| owner_name(p).is_none());
        let owned = active(p)
            .iter()
            .filter(|p| owner_name(p).as_deref() == Some("web"))
            .count();
        (released && owned == 3).then_some(())
    })
    .await;

    // A matching orphan is adopted; being surplus and not ready, it is the one deleted.
    make_all_ready(&pods).await;
    let mut orphan: Pod = serde_json::from_value(json!({
        "metadata": {"name": "stray", "labels": {"app": "web"}},
        "spec": {"containers": [{"name": "c", "image": "nginx:1"}]}
    }))
    .expect("pod");
    orphan = pods
        .create(&PostParams::default(), &orphan)
        .await
        .expect("orphan");
    assert!(owner_name(&orphan).is_none());
    eventually(&pods, "orphan adopted and trimmed", |p| {
        let owned = active(p)
            .iter()
            .filter(|p| owner_name(p).as_deref() == Some("web"))
            .count();
        (owned == 3 && !p.iter().any(|p| p.name_any() == "stray")).then_some(())
    })
    .await;
    env.stop().await;
}

#[tokio::test]
async fn rolling_update_history_undo_and_kubectl() {
    let env = Env::start().await;
    let deps: Api<Deployment> = env.api();
    let rss: Api<ReplicaSet> = env.api();
    let pods: Api<Pod> = env.api();
    let strategy =
        json!({"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0}});
    deps.create(
        &PostParams::default(),
        &deployment("web", 3, "model:v1", strategy),
    )
    .await
    .expect("create deployment");

    let rs1 = eventually(&rss, "first replicaset", |r| {
        (r.len() == 1 && r[0].spec.as_ref().and_then(|s| s.replicas) == Some(3))
            .then(|| r[0].clone())
    })
    .await;
    let hash = rs1
        .labels()
        .get(deployment::POD_TEMPLATE_HASH)
        .cloned()
        .expect("hash label");
    assert_eq!(rs1.name_any(), format!("web-{hash}"));
    let rs1_spec = rs1.spec.clone().expect("spec");
    assert_eq!(
        rs1_spec
            .selector
            .match_labels
            .as_ref()
            .and_then(|l| l.get("pod-template-hash")),
        Some(&hash)
    );
    assert_eq!(revision(&rs1), "1");
    let ann = rs1.annotations();
    assert_eq!(
        ann.get(deployment::DESIRED_REPLICAS).map(String::as_str),
        Some("3")
    );
    assert_eq!(
        ann.get(deployment::MAX_REPLICAS).map(String::as_str),
        Some("4")
    );
    eventually(&pods, "3 pods", |p| (active(p).len() == 3).then_some(())).await;

    // `kubectl rollout status` waits while we play kubelet, then exits 0.
    let status = {
        let kubeconfig = env.running.kubeconfig.clone();
        tokio::task::spawn_blocking(move || {
            std::process::Command::new("kubectl")
                .arg("--kubeconfig")
                .arg(kubeconfig)
                .args([
                    "-n",
                    "default",
                    "rollout",
                    "status",
                    "deployment/web",
                    "--timeout=60s",
                ])
                .output()
                .expect("kubectl")
        })
    };
    make_all_ready(&pods).await;
    let out = status.await.expect("join");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("successfully rolled out"));

    let d = eventually(&deps, "complete", |d| {
        rollout_done(&d[0]).then(|| d[0].clone())
    })
    .await;
    let s = d.status.clone().expect("status");
    assert_eq!(
        (
            s.replicas,
            s.updated_replicas,
            s.ready_replicas,
            s.available_replicas,
            s.unavailable_replicas
        ),
        (Some(3), Some(3), Some(3), Some(3), Some(0))
    );
    assert_eq!(
        cond(&d, "Available"),
        Some(("True".into(), "MinimumReplicasAvailable".into()))
    );
    assert_eq!(
        cond(&d, "Progressing"),
        Some(("True".into(), "NewReplicaSetAvailable".into()))
    );
    assert_eq!(
        d.annotations()
            .get(deployment::REVISION)
            .map(String::as_str),
        Some("1")
    );

    // Update the image; at every pod change at most 4 pods exist and at least 3 are ready.
    let obs = observe_pods(pods.clone()).await;
    set_image(&deps, "web", "model:v2").await;
    drive_rollout(&pods, "rolling update to v2", |act| {
        act.len() == 3 && act.iter().all(|p| image(p) == "model:v2" && is_ready(p))
    })
    .await;
    eventually(&deps, "v2 complete", |d| rollout_done(&d[0]).then_some(())).await;
    {
        let o = obs.lock().expect("observed");
        assert!(o.events > 0, "{o:?}");
        assert_eq!(
            o.max_active, 4,
            "maxSurge 1 is used but not exceeded: {o:?}"
        );
        assert_eq!(o.min_ready, 3, "maxUnavailable 0: {o:?}");
    }

    // History: two ReplicaSets, revisions 1 and 2, the old one scaled to 0.
    let list = rss.list(&ListParams::default()).await.expect("list").items;
    let both = by_hash(&list, "web");
    assert_eq!(both.len(), 2);
    let old = both
        .iter()
        .find(|r| r.name_any() == rs1.name_any())
        .expect("rs1");
    let new = both
        .iter()
        .find(|r| r.name_any() != rs1.name_any())
        .expect("rs2");
    assert_eq!((revision(old).as_str(), revision(new).as_str()), ("1", "2"));
    assert_eq!(old.spec.as_ref().and_then(|s| s.replicas), Some(0));
    let (ok, history) = env.kubectl(&["rollout", "history", "deployment/web"]).await;
    assert!(
        ok && history.contains('1') && history.contains('2'),
        "{history}"
    );

    // Undo: kubectl copies rs1's template back; rs1 becomes revision 3 and scales up.
    let (ok, text) = env.kubectl(&["rollout", "undo", "deployment/web"]).await;
    assert!(ok, "{text}");
    let rs1_name = rs1.name_any();
    eventually(&rss, "rs1 revision 3", |r| {
        r.iter()
            .find(|r| r.name_any() == rs1_name)
            .is_some_and(|r| {
                revision(r) == "3" && r.spec.as_ref().and_then(|s| s.replicas) > Some(0)
            })
            .then_some(())
    })
    .await;
    drive_rollout(&pods, "rollback to v1", |act| {
        act.len() == 3 && act.iter().all(|p| image(p) == "model:v1" && is_ready(p))
    })
    .await;
    let rs1_now = rss.get(&rs1_name).await.expect("rs1");
    assert_eq!(
        rs1_now
            .annotations()
            .get(deployment::REVISION_HISTORY)
            .map(String::as_str),
        Some("1")
    );
    let d = eventually(&deps, "rollback complete", |d| {
        rollout_done(&d[0]).then(|| d[0].clone())
    })
    .await;
    assert_eq!(
        d.annotations()
            .get(deployment::REVISION)
            .map(String::as_str),
        Some("3")
    );
    assert_eq!(
        rss.list(&ListParams::default())
            .await
            .expect("list")
            .items
            .len(),
        2
    );

    // Restart: a template annotation change is a new revision.
    let (ok, text) = env.kubectl(&["rollout", "restart", "deployment/web"]).await;
    assert!(ok, "{text}");
    eventually(&rss, "restart replicaset", |r| (r.len() == 3).then_some(())).await;
    drive_rollout(&pods, "restart", |act| {
        act.len() == 3
            && act.iter().all(|p| {
                is_ready(p)
                    && p.annotations()
                        .contains_key("kubectl.kubernetes.io/restartedAt")
            })
    })
    .await;
    let (ok, text) = env
        .kubectl(&["rollout", "status", "deployment/web", "--timeout=60s"])
        .await;
    assert!(ok, "{text}");
    let list = rss.list(&ListParams::default()).await.expect("list").items;
    let mut revs: Vec<String> = list.iter().map(revision).collect();
    revs.sort();
    assert_eq!(revs, vec!["2", "3", "4"]);
    env.stop().await;
}

#[tokio::test]
async fn recreate_never_mixes_versions() {
    let env = Env::start().await;
    let deps: Api<Deployment> = env.api();
    let pods: Api<Pod> = env.api();
    deps.create(
        &PostParams::default(),
        &deployment("batch", 2, "job:v1", json!({"type": "Recreate"})),
    )
    .await
    .expect("create");
    drive_rollout(&pods, "v1 ready", |act| {
        act.len() == 2 && act.iter().all(|p| is_ready(p))
    })
    .await;
    eventually(&deps, "v1 complete", |d| rollout_done(&d[0]).then_some(())).await;
    let obs = observe_pods(pods.clone()).await;
    set_image(&deps, "batch", "job:v2").await;
    drive_rollout(&pods, "recreate to v2", |act| {
        act.len() == 2 && act.iter().all(|p| image(p) == "job:v2" && is_ready(p))
    })
    .await;
    eventually(&deps, "v2 complete", |d| rollout_done(&d[0]).then_some(())).await;
    {
        let o = obs.lock().expect("observed");
        assert!(!o.mixed_images, "old and new pods overlapped: {o:?}");
        assert_eq!(o.min_ready, 0, "recreate goes through zero pods: {o:?}");
        assert_eq!(o.max_active, 2, "{o:?}");
    }
    env.stop().await;
}

#[tokio::test]
async fn paused_deployment_scales_but_does_not_roll_out() {
    let env = Env::start().await;
    let deps: Api<Deployment> = env.api();
    let rss: Api<ReplicaSet> = env.api();
    let pods: Api<Pod> = env.api();
    deps.create(
        &PostParams::default(),
        &deployment("api", 2, "api:v1", json!({"type": "RollingUpdate"})),
    )
    .await
    .expect("create");
    drive_rollout(&pods, "v1 ready", |act| {
        act.len() == 2 && act.iter().all(|p| is_ready(p))
    })
    .await;
    eventually(&deps, "v1 complete", |d| rollout_done(&d[0]).then_some(())).await;

    let pause = json!({"spec": {"paused": true}});
    deps.patch("api", &PatchParams::default(), &Patch::Merge(&pause))
        .await
        .expect("pause");
    set_image(&deps, "api", "api:v2").await;
    let scale = json!({"spec": {"replicas": 4}});
    deps.patch("api", &PatchParams::default(), &Patch::Merge(&scale))
        .await
        .expect("scale");
    let d = eventually(&deps, "paused and observed", |d| {
        let s = d[0].status.clone().unwrap_or_default();
        (s.observed_generation == d[0].metadata.generation && s.replicas == Some(4))
            .then(|| d[0].clone())
    })
    .await;
    assert_eq!(
        cond(&d, "Progressing"),
        Some(("Unknown".into(), "DeploymentPaused".into()))
    );
    let list = rss.list(&ListParams::default()).await.expect("list").items;
    assert_eq!(list.len(), 1, "no rollout while paused");
    assert_eq!(list[0].spec.as_ref().and_then(|s| s.replicas), Some(4));
    let act_pods = pods.list(&ListParams::default()).await.expect("list").items;
    assert!(active(&act_pods).iter().all(|p| image(p) == "api:v1"));

    let resume = json!({"spec": {"paused": false}});
    deps.patch("api", &PatchParams::default(), &Patch::Merge(&resume))
        .await
        .expect("resume");
    drive_rollout(&pods, "v2 after resume", |act| {
        act.len() == 4 && act.iter().all(|p| image(p) == "api:v2" && is_ready(p))
    })
    .await;
    let d = eventually(&deps, "v2 complete", |d| {
        rollout_done(&d[0]).then(|| d[0].clone())
    })
    .await;
    assert_eq!(
        d.annotations()
            .get(deployment::REVISION)
            .map(String::as_str),
        Some("2")
    );
    env.stop().await;
}

#[tokio::test]
async fn progress_deadline_exceeded_and_min_ready_seconds() {
    let env = Env::start().await;
    let deps: Api<Deployment> = env.api();
    let pods: Api<Pod> = env.api();
    let mut d = deployment("slow", 2, "slow:v1", json!({"type": "RollingUpdate"}));
    if let Some(s) = d.spec.as_mut() {
        s.progress_deadline_seconds = Some(1);
    }
    deps.create(&PostParams::default(), &d)
        .await
        .expect("create");
    // Nobody makes the pods ready: the deadline passes.
    let d = eventually(&deps, "ProgressDeadlineExceeded", |d| {
        (cond(&d[0], "Progressing") == Some(("False".into(), "ProgressDeadlineExceeded".into())))
            .then(|| d[0].clone())
    })
    .await;
    assert_eq!(
        cond(&d, "Available"),
        Some(("False".into(), "MinimumReplicasUnavailable".into()))
    );
    assert_eq!(
        d.status.as_ref().and_then(|s| s.unavailable_replicas),
        Some(2)
    );
    let (ok, text) = env
        .kubectl(&["rollout", "status", "deployment/slow", "--timeout=20s"])
        .await;
    assert!(
        !ok && text.contains("exceeded its progress deadline"),
        "{text}"
    );

    // minReadySeconds: ready pods become available only after it has passed.
    let patch = json!({"spec": {"minReadySeconds": 3, "progressDeadlineSeconds": 600}});
    deps.patch("slow", &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .expect("patch");
    make_all_ready(&pods).await;
    let started = tokio::time::Instant::now();
    eventually(&deps, "available after minReadySeconds", |d| {
        rollout_done(&d[0]).then_some(())
    })
    .await;
    // Ready times have second precision, so up to one of the three seconds may be lost.
    assert!(started.elapsed() >= Duration::from_millis(1900));
    env.stop().await;
}

#[tokio::test]
async fn controllers_restart_mid_rollout_and_scale_proportionally() {
    let mut env = Env::start().await;
    let deps: Api<Deployment> = env.api();
    let rss: Api<ReplicaSet> = env.api();
    let pods: Api<Pod> = env.api();
    let strategy =
        json!({"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 2, "maxUnavailable": 0}});
    deps.create(
        &PostParams::default(),
        &deployment("svc", 4, "svc:v1", strategy),
    )
    .await
    .expect("create");
    drive_rollout(&pods, "v1 ready", |act| {
        act.len() == 4 && act.iter().all(|p| is_ready(p))
    })
    .await;
    eventually(&deps, "v1 complete", |d| rollout_done(&d[0]).then_some(())).await;

    // Mid-rollout: the new ReplicaSet has surged to 2 pods that never become ready.
    set_image(&deps, "svc", "svc:v2").await;
    eventually(&pods, "surge pods", |p| {
        (active(p).len() == 6).then_some(())
    })
    .await;

    // Scaling to 8 while two ReplicaSets are active splits the change by their sizes
    // (4 old, 2 new, max 6 -> allowed 10): old 4 -> 7 would exceed, so 4*10/6=7 and 2*10/6=3.
    let scale = json!({"spec": {"replicas": 8}});
    deps.patch("svc", &PatchParams::default(), &Patch::Merge(&scale))
        .await
        .expect("scale");
    let sizes = eventually(&rss, "proportional scaling", |r| {
        let mut s: Vec<i32> = r
            .iter()
            .map(|r| r.spec.as_ref().and_then(|s| s.replicas).unwrap_or(0))
            .collect();
        s.sort();
        let annotated = r.iter().all(|r| {
            r.annotations()
                .get(deployment::DESIRED_REPLICAS)
                .map(String::as_str)
                == Some("8")
        });
        (annotated && s.iter().sum::<i32>() == 10).then_some(s)
    })
    .await;
    assert_eq!(sizes, vec![3, 7]);

    // Controllers stop; meanwhile a pod dies and nothing replaces it.
    for c in env.controllers.drain(..) {
        c.abort();
    }
    let list = pods.list(&ListParams::default()).await.expect("list").items;
    let victim = active(&list)[0].name_any();
    pods.delete(&victim, &DeleteParams::default())
        .await
        .expect("delete");
    // New controllers pick up from the stored state alone.
    env.controllers = vec![
        replicaset::start(env.client.clone()),
        deployment::start(env.client.clone()),
    ];
    drive_rollout(&pods, "v2 after restart", |act| {
        act.len() == 8 && act.iter().all(|p| image(p) == "svc:v2" && is_ready(p))
    })
    .await;
    let d = eventually(&deps, "v2 complete", |d| {
        rollout_done(&d[0]).then(|| d[0].clone())
    })
    .await;
    assert_eq!(
        d.annotations()
            .get(deployment::REVISION)
            .map(String::as_str),
        Some("2")
    );
    let list = rss.list(&ListParams::default()).await.expect("list").items;
    assert_eq!(list.len(), 2);
    env.stop().await;
}

#[tokio::test]
async fn revision_history_limit_deletes_old_replica_sets() {
    let env = Env::start().await;
    let deps: Api<Deployment> = env.api();
    let rss: Api<ReplicaSet> = env.api();
    let pods: Api<Pod> = env.api();
    let mut d = deployment("hist", 1, "h:1", json!({"type": "RollingUpdate"}));
    if let Some(s) = d.spec.as_mut() {
        s.revision_history_limit = Some(1);
    }
    deps.create(&PostParams::default(), &d)
        .await
        .expect("create");
    for v in 1..=4 {
        if v > 1 {
            set_image(&deps, "hist", &format!("h:{v}")).await;
        }
        let want = format!("h:{v}");
        drive_rollout(&pods, "ready", |act| {
            act.len() == 1 && act.iter().all(|p| image(p) == want && is_ready(p))
        })
        .await;
        eventually(&deps, "complete", |d| rollout_done(&d[0]).then_some(())).await;
    }
    let revs = eventually(&rss, "old replica sets cleaned up", |r| {
        let mut revs: Vec<String> = r.iter().map(revision).collect();
        revs.sort();
        (r.len() == 2).then_some(revs)
    })
    .await;
    assert_eq!(revs, vec!["3", "4"]);
    env.stop().await;
}

#[tokio::test]
async fn a_burst_of_creates_is_never_duplicated() {
    let env = Env::start().await;
    let rss: Api<ReplicaSet> = env.api();
    let pods: Api<Pod> = env.api();
    let obs = observe_pods(pods.clone()).await;
    rss.create(&PostParams::default(), &replica_set("burst", 40))
        .await
        .expect("create rs");
    eventually(&rss, "40 pods reported", |r| {
        (rs_status(&r[0]).0 == 40).then_some(())
    })
    .await;
    let n = pods
        .list(&ListParams::default())
        .await
        .expect("list")
        .items
        .len();
    assert_eq!(n, 40);
    // Every pod event meanwhile re-triggered the ReplicaSet; none may cause an extra pod.
    {
        let o = obs.lock().expect("observed");
        assert!(o.events > 0, "{o:?}");
        assert!(o.max_active <= 40, "{o:?}");
    }
    env.stop().await;
}

#[tokio::test]
async fn a_hash_collision_bumps_collision_count() {
    let env = Env::start().await;
    let deps: Api<Deployment> = env.api();
    let rss: Api<ReplicaSet> = env.api();
    // Paused, the controller creates no ReplicaSet, so the test can take its name first.
    let mut d = deployment("col", 1, "c:1", json!({"type": "RollingUpdate"}));
    if let Some(s) = d.spec.as_mut() {
        s.paused = Some(true);
    }
    let d = deps
        .create(&PostParams::default(), &d)
        .await
        .expect("create");
    let template = d.spec.clone().expect("spec").template;
    let hash = deployment::pod_template_hash(&template, 0).expect("hash");
    let squatter = format!("col-{hash}");
    rss.create(&PostParams::default(), &replica_set(&squatter, 0))
        .await
        .expect("squatter");

    let resume = json!({"spec": {"paused": false}});
    deps.patch("col", &PatchParams::default(), &Patch::Merge(&resume))
        .await
        .expect("resume");
    let d = eventually(&deps, "collision counted", |d| {
        d[0].status
            .as_ref()
            .and_then(|s| s.collision_count)
            .filter(|c| *c >= 1)
            .map(|_| d[0].clone())
    })
    .await;
    let count = d.status.and_then(|s| s.collision_count).unwrap_or(0);
    let other = deployment::pod_template_hash(&template, count).expect("hash");
    assert_ne!(other, hash);
    eventually(&rss, "replicaset under the new hash", |r| {
        r.iter()
            .any(|r| r.name_any() == format!("col-{other}"))
            .then_some(())
    })
    .await;
    let squat = rss.get(&squatter).await.expect("squatter stays");
    assert!(squat.owner_references().is_empty());
    env.stop().await;
}
