//! End-to-end: the real kubectl against `skiff up` — version, discovery, explain, apply.

use skiff_testkit::{TestCluster, stderr, stdout};

fn cluster() -> TestCluster {
    TestCluster::start(env!("CARGO_BIN_EXE_skiff"))
}

#[test]
fn version_cluster_info_api_resources_explain() {
    let c = cluster();
    let v = c.kubectl_ok(&["version", "-o", "json"]);
    let v: serde_json::Value = serde_json::from_str(&v).unwrap();
    assert_eq!(v["serverVersion"]["major"], "1");
    let info = c.kubectl_ok(&["cluster-info"]);
    assert!(info.contains(&c.server), "{info}");
    let res = c.kubectl_ok(&["api-resources"]);
    for r in [
        "deployments",
        "persistentvolumeclaims",
        "horizontalpodautoscalers",
        "endpointslices",
        "leases",
    ] {
        assert!(res.contains(r), "{r} missing from:\n{res}");
    }
    let explain = c.kubectl_ok(&["explain", "deployment.spec.template"]);
    assert!(
        explain.contains("PodTemplateSpec") || explain.contains("FIELDS"),
        "{explain}"
    );
}

#[test]
fn field_typos_are_rejected_and_nothing_is_stored() {
    let c = cluster();
    let deploy = "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: typo}\nspec:\n  selector: {matchLabels: {app: t}}\n  template:\n    metadata: {labels: {app: t}}\n    spec:\n      containers:\n      - name: t\n        images: nginx\n";
    let out = c.kubectl_stdin(&["apply", "-f", "-"], deploy);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("spec.template.spec.containers[0].images"),
        "{}",
        stderr(&out)
    );
    let pvc = "apiVersion: v1\nkind: PersistentVolumeClaim\nmetadata: {name: typo}\nspec:\n  accessModes: [ReadWriteOnce]\n  resources:\n    requests: {storages: 1Gi}\n";
    let out = c.kubectl_stdin(&["apply", "-f", "-"], pvc);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("storage"), "{}", stderr(&out));
    let out = c.kubectl(&["get", "deploy,pvc", "-o", "name"]);
    assert_eq!(stdout(&out).trim(), "", "something was stored");
}
