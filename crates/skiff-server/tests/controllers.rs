//! Behaviour of the namespace controller and garbage collector against a real in-process server.

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use serde_json::json;
use skiff_client::Client;
use skiff_client::kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use skiff_server::{Running, ServerConfig};
use std::future::Future;
use std::time::Duration;

const DEADLINE: Duration = Duration::from_secs(20);
const POLL: Duration = Duration::from_millis(50);
const HOLD: &str = "example.com/hold";

async fn start() -> (Running, tempfile::TempDir) {
    let dir = tempfile::tempdir().expect("tempdir");
    let running = skiff_server::start(ServerConfig {
        port: 0,
        ..ServerConfig::new(dir.path().join("data"))
    })
    .await
    .expect("server starts");
    (running, dir)
}

/// Polls `check` until it yields a value or the deadline passes.
async fn wait_for<T, F, Fut>(what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + DEADLINE;
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(POLL).await;
    }
}

async fn wait_gone<K>(api: &Api<K>, name: &str)
where
    K: Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    wait_for(&format!("{name} to be gone"), || async {
        match api.get_opt(name).await.expect("get") {
            None => Some(()),
            Some(_) => None,
        }
    })
    .await
}

fn configmap(name: &str, owners: Vec<OwnerReference>, finalizers: &[&str]) -> ConfigMap {
    ConfigMap {
        metadata: ObjectMeta {
            name: Some(name.into()),
            owner_references: (!owners.is_empty()).then_some(owners),
            finalizers: (!finalizers.is_empty())
                .then(|| finalizers.iter().map(|f| f.to_string()).collect()),
            ..ObjectMeta::default()
        },
        data: Some([("k".to_string(), "v".to_string())].into()),
        ..ConfigMap::default()
    }
}

fn owned_by(owner: &ConfigMap, block: bool) -> OwnerReference {
    OwnerReference {
        api_version: "v1".into(),
        kind: "ConfigMap".into(),
        name: owner.metadata.name.clone().unwrap_or_default(),
        uid: owner.metadata.uid.clone().unwrap_or_default(),
        block_owner_deletion: block.then_some(true),
        controller: None,
    }
}

async fn create(api: &Api<ConfigMap>, cm: ConfigMap) -> ConfigMap {
    api.create(&PostParams::default(), &cm)
        .await
        .expect("create")
}

async fn release(api: &Api<ConfigMap>, name: &str) {
    let patch = json!({"metadata": {"finalizers": null}});
    api.patch(name, &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .expect("remove finalizers");
}

fn deployment(name: &str) -> Deployment {
    serde_json::from_value(json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": name},
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {"labels": {"app": name}},
                "spec": {"containers": [{"name": "model", "image": "example/model:1"}]}
            }
        }
    }))
    .expect("deployment json")
}

async fn create_namespace(client: &Client, name: &str) {
    let nss: Api<Namespace> = Api::all(client.clone());
    let ns = Namespace {
        metadata: ObjectMeta {
            name: Some(name.into()),
            ..ObjectMeta::default()
        },
        ..Namespace::default()
    };
    nss.create(&PostParams::default(), &ns)
        .await
        .expect("create namespace");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleting_a_namespace_deletes_its_content_then_the_namespace() {
    let (running, _dir) = start().await;
    let client = running.client.clone();
    create_namespace(&client, "ml").await;
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), "ml");
    let deps: Api<Deployment> = Api::namespaced(client.clone(), "ml");
    create(&cms, configmap("settings", vec![], &[])).await;
    create(&cms, configmap("held", vec![], &[HOLD])).await;
    deps.create(&PostParams::default(), &deployment("web"))
        .await
        .expect("create deployment");

    let nss: Api<Namespace> = Api::all(client.clone());
    nss.delete("ml", &DeleteParams::default())
        .await
        .expect("delete namespace");
    wait_gone(&deps, "web").await;
    wait_gone(&cms, "settings").await;

    // An object with a finalizer holds the namespace, which stays Terminating meanwhile.
    wait_for("the held configmap to be marked for deletion", || async {
        let cm = cms.get("held").await.expect("held configmap exists");
        cm.metadata.deletion_timestamp.map(|_| ())
    })
    .await;
    let ns = nss.get("ml").await.expect("namespace still exists");
    let phase = ns.status.and_then(|s| s.phase);
    assert_eq!(phase.as_deref(), Some("Terminating"));
    // The conditions tell `kubectl describe` what the namespace waits for.
    wait_for("the finalizers condition", || async {
        let ns = nss.get("ml").await.expect("namespace still exists");
        let conds = ns.status.and_then(|s| s.conditions).unwrap_or_default();
        conds
            .iter()
            .find(|c| c.type_ == "NamespaceFinalizersRemaining" && c.status == "True")
            .filter(|c| c.message.as_deref().unwrap_or("").contains(HOLD))
            .map(|_| ())
    })
    .await;
    let refused = cms
        .create(&PostParams::default(), &configmap("late", vec![], &[]))
        .await;
    assert!(
        refused.is_err(),
        "creating in a terminating namespace must fail"
    );

    release(&cms, "held").await;
    wait_gone(&cms, "held").await;
    wait_gone(&nss, "ml").await;
    running.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn protected_namespaces_cannot_be_deleted() {
    let (running, _dir) = start().await;
    let nss: Api<Namespace> = Api::all(running.client.clone());
    for name in ["default", "kube-system", "kube-public"] {
        match nss.delete(name, &DeleteParams::default()).await {
            Err(skiff_client::kube::Error::Api(status)) => {
                assert_eq!(status.code, 403, "{name}");
                assert_eq!(status.reason, "Forbidden", "{name}");
                assert!(
                    status.message.contains("may not be deleted"),
                    "{name}: {}",
                    status.message
                );
            }
            other => panic!("deleting {name} should be forbidden, got {other:?}"),
        }
        let ns = nss.get(name).await.expect("namespace still exists");
        assert!(ns.metadata.deletion_timestamp.is_none(), "{name}");
    }
    running.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn background_deletion_collects_dependents_but_keeps_those_with_a_live_owner() {
    let (running, _dir) = start().await;
    let cms: Api<ConfigMap> = Api::namespaced(running.client.clone(), "default");
    let owner = create(&cms, configmap("owner", vec![], &[])).await;
    let other = create(&cms, configmap("other-owner", vec![], &[])).await;
    create(
        &cms,
        configmap("child-a", vec![owned_by(&owner, false)], &[]),
    )
    .await;
    create(
        &cms,
        configmap("child-b", vec![owned_by(&owner, true)], &[]),
    )
    .await;
    create(
        &cms,
        configmap(
            "shared",
            vec![owned_by(&owner, false), owned_by(&other, false)],
            &[],
        ),
    )
    .await;
    create(&cms, configmap("kept", vec![owned_by(&other, false)], &[])).await;

    cms.delete("owner", &DeleteParams::background())
        .await
        .expect("delete owner");
    wait_gone(&cms, "child-a").await;
    wait_gone(&cms, "child-b").await;
    // A dependent with another existing owner stays; only the dangling reference goes.
    let refs = wait_for("the dangling reference to be removed", || async {
        let cm = cms.get("shared").await.expect("shared dependent stays");
        let refs = cm.metadata.owner_references.unwrap_or_default();
        (refs.len() == 1).then_some(refs)
    })
    .await;
    assert_eq!(refs[0].uid, other.metadata.uid.clone().unwrap_or_default());
    let kept = cms
        .get("kept")
        .await
        .expect("dependent of a live owner stays");
    assert!(kept.metadata.deletion_timestamp.is_none());

    // An owner recreated under the same name is a different object (uid): the old
    // dependents are still orphaned and collected.
    let first = create(&cms, configmap("reborn", vec![], &[])).await;
    cms.delete("reborn", &DeleteParams::background())
        .await
        .expect("delete");
    wait_gone(&cms, "reborn").await;
    create(&cms, configmap("reborn", vec![], &[])).await;
    create(
        &cms,
        configmap("stale-child", vec![owned_by(&first, false)], &[]),
    )
    .await;
    wait_gone(&cms, "stale-child").await;
    assert!(cms.get_opt("reborn").await.expect("get").is_some());
    running.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn foreground_deletion_keeps_the_owner_until_its_dependents_are_gone() {
    let (running, _dir) = start().await;
    let cms: Api<ConfigMap> = Api::namespaced(running.client.clone(), "default");
    let owner = create(&cms, configmap("owner", vec![], &[])).await;
    let child = create(&cms, configmap("child", vec![owned_by(&owner, true)], &[])).await;
    create(
        &cms,
        configmap("grandchild", vec![owned_by(&child, true)], &[HOLD]),
    )
    .await;
    create(
        &cms,
        configmap("plain-child", vec![owned_by(&owner, false)], &[]),
    )
    .await;

    cms.delete("owner", &DeleteParams::foreground())
        .await
        .expect("delete owner");
    // The held grandchild is marked for deletion, and everything above it waits.
    wait_for("the grandchild to be marked for deletion", || async {
        let cm = cms.get("grandchild").await.expect("grandchild exists");
        cm.metadata.deletion_timestamp.map(|_| ())
    })
    .await;
    wait_gone(&cms, "plain-child").await;
    for name in ["owner", "child"] {
        let cm = cms.get(name).await.expect("still waiting for dependents");
        assert!(cm.metadata.deletion_timestamp.is_some(), "{name}");
        let finalizers = cm.metadata.finalizers.unwrap_or_default();
        assert!(
            finalizers.iter().any(|f| f == "foregroundDeletion"),
            "{name}: {finalizers:?}"
        );
    }

    release(&cms, "grandchild").await;
    wait_gone(&cms, "grandchild").await;
    wait_gone(&cms, "child").await;
    wait_gone(&cms, "owner").await;

    // An owner without dependents goes at once.
    create(&cms, configmap("lonely", vec![], &[])).await;
    cms.delete("lonely", &DeleteParams::foreground())
        .await
        .expect("delete");
    wait_gone(&cms, "lonely").await;
    running.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn orphan_deletion_keeps_dependents_without_the_reference() {
    let (running, _dir) = start().await;
    let cms: Api<ConfigMap> = Api::namespaced(running.client.clone(), "default");
    let owner = create(&cms, configmap("owner", vec![], &[])).await;
    let other = create(&cms, configmap("other-owner", vec![], &[])).await;
    create(
        &cms,
        configmap("child-a", vec![owned_by(&owner, true)], &[]),
    )
    .await;
    create(
        &cms,
        configmap(
            "child-b",
            vec![owned_by(&owner, false), owned_by(&other, false)],
            &[],
        ),
    )
    .await;

    cms.delete("owner", &DeleteParams::orphan())
        .await
        .expect("delete owner");
    wait_gone(&cms, "owner").await;
    let a = cms.get("child-a").await.expect("orphan stays");
    assert!(a.metadata.deletion_timestamp.is_none());
    assert!(a.metadata.owner_references.unwrap_or_default().is_empty());
    let b = cms.get("child-b").await.expect("orphan stays");
    let refs = b.metadata.owner_references.unwrap_or_default();
    assert_eq!(refs.len(), 1);
    assert_eq!(refs[0].uid, other.metadata.uid.clone().unwrap_or_default());
    running.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn controllers_started_late_and_twice_converge_on_work_left_behind() {
    // No controllers at start-up: deletions pile up as if the controller manager had crashed.
    let dir = tempfile::tempdir().expect("tempdir");
    let running = skiff_server::start(ServerConfig {
        port: 0,
        controllers: false,
        ..ServerConfig::new(dir.path().join("data"))
    })
    .await
    .expect("server starts");
    let client = running.client.clone();
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), "default");
    let dangling_owner = create(&cms, configmap("gone-owner", vec![], &[])).await;
    create(
        &cms,
        configmap("dangling", vec![owned_by(&dangling_owner, false)], &[]),
    )
    .await;
    let fg_owner = create(&cms, configmap("fg-owner", vec![], &[])).await;
    create(
        &cms,
        configmap("fg-child", vec![owned_by(&fg_owner, true)], &[]),
    )
    .await;
    let orphan_owner = create(&cms, configmap("orphan-owner", vec![], &[])).await;
    create(
        &cms,
        configmap("orphan-child", vec![owned_by(&orphan_owner, false)], &[]),
    )
    .await;
    create_namespace(&client, "ml").await;
    let ml: Api<ConfigMap> = Api::namespaced(client.clone(), "ml");
    create(&ml, configmap("settings", vec![], &[])).await;

    cms.delete("gone-owner", &DeleteParams::background())
        .await
        .expect("delete");
    cms.delete("fg-owner", &DeleteParams::foreground())
        .await
        .expect("delete");
    cms.delete("orphan-owner", &DeleteParams::orphan())
        .await
        .expect("delete");
    let nss: Api<Namespace> = Api::all(client.clone());
    nss.delete("ml", &DeleteParams::default())
        .await
        .expect("delete");
    // Without controllers nothing but the API server's own part happens.
    for name in [
        "dangling",
        "fg-owner",
        "fg-child",
        "orphan-owner",
        "orphan-child",
    ] {
        assert!(cms.get_opt(name).await.expect("get").is_some(), "{name}");
    }
    assert!(nss.get_opt("ml").await.expect("get").is_some());

    // Two controller managers at once must not fight, and must finish the work.
    let mut handles = skiff_controllers::start_all(client.clone());
    handles.extend(skiff_controllers::start_all(client.clone()));
    for name in ["dangling", "fg-child", "fg-owner", "orphan-owner"] {
        wait_gone(&cms, name).await;
    }
    wait_gone(&nss, "ml").await;
    let orphan = cms.get("orphan-child").await.expect("orphan stays");
    assert!(
        orphan
            .metadata
            .owner_references
            .unwrap_or_default()
            .is_empty()
    );
    for h in handles {
        h.abort();
    }
    running.shutdown().await;
}

#[tokio::test]
async fn nodes_get_distinct_pod_subnets() {
    let (running, _dir) = start().await;
    let nodes: Api<k8s_openapi::api::core::v1::Node> = Api::all(running.client.clone());
    for name in ["n1", "n2"] {
        let node = serde_json::from_value(json!({"metadata": {"name": name}})).expect("node");
        nodes
            .create(&PostParams::default(), &node)
            .await
            .expect("create node");
    }
    let mut cidrs = Vec::new();
    for name in ["n1", "n2"] {
        let cidr = wait_for(&format!("podCIDR of {name}"), || async {
            let n = nodes.get(name).await.expect("get node");
            n.spec.and_then(|s| s.pod_cidr)
        })
        .await;
        cidrs.push(cidr);
    }
    cidrs.sort();
    assert_eq!(cidrs, ["10.42.0.0/24", "10.42.1.0/24"]);
    running.shutdown().await;
}
