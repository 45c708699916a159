//! End-to-end: changing live objects with `kubectl label`, `annotate`, `patch` (strategic,
//! merge and JSON patch), `replace -f` and `scale` (the /scale subresource).

use serde_json::json;
use skiff_testkit::{TestCluster, stderr, stdout};

fn cluster() -> TestCluster {
    TestCluster::start(env!("CARGO_BIN_EXE_skiff"))
}

/// A Deployment with two containers, so that list merge semantics are visible.
const TWO_CONTAINERS: &str = r#"apiVersion: apps/v1
kind: Deployment
metadata: {name: web}
spec:
  replicas: 2
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec:
      containers:
      - name: app
        image: app:v1
        env:
        - {name: A, value: "1"}
      - name: sidecar
        image: sidecar:v1
"#;

fn containers(c: &TestCluster) -> Vec<serde_json::Value> {
    c.get_json(&["deploy", "web"])["spec"]["template"]["spec"]["containers"]
        .as_array()
        .cloned()
        .unwrap_or_default()
}

#[test]
fn label_and_annotate() {
    let c = cluster();
    c.kubectl_ok(&["create", "configmap", "cfg", "--from-literal=a=b"]);
    assert_eq!(
        c.kubectl_ok(&["label", "cm", "cfg", "tier=gpu", "team=ml"])
            .trim(),
        "configmap/cfg labeled"
    );
    let cm = c.get_json(&["cm", "cfg"]);
    assert_eq!(
        cm["metadata"]["labels"],
        json!({"tier": "gpu", "team": "ml"})
    );
    // Changing an existing label needs --overwrite.
    let out = c.kubectl(&["label", "cm", "cfg", "tier=cpu"]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("already has a value (gpu)"),
        "{}",
        stderr(&out)
    );
    c.kubectl_ok(&["label", "cm", "cfg", "tier=cpu", "--overwrite"]);
    c.kubectl_ok(&["label", "cm", "cfg", "team-"]);
    assert_eq!(
        c.get_json(&["cm", "cfg"])["metadata"]["labels"],
        json!({"tier": "cpu"})
    );
    let shown = c.kubectl_ok(&["get", "cm", "cfg", "--show-labels"]);
    assert!(
        shown.lines().next().unwrap_or_default().ends_with("LABELS"),
        "{shown}"
    );
    assert!(shown.contains("tier=cpu"), "{shown}");

    assert_eq!(
        c.kubectl_ok(&["annotate", "cm", "cfg", "owner=alice", "note=model v2"])
            .trim(),
        "configmap/cfg annotated"
    );
    let cm = c.get_json(&["cm", "cfg"]);
    assert_eq!(cm["metadata"]["annotations"]["owner"], "alice");
    assert_eq!(cm["metadata"]["annotations"]["note"], "model v2");
    c.kubectl_ok(&["annotate", "cm", "cfg", "owner-"]);
    let cm = c.get_json(&["cm", "cfg"]);
    assert!(cm["metadata"]["annotations"].get("owner").is_none(), "{cm}");
    assert_eq!(
        cm["data"],
        json!({"a": "b"}),
        "labels and annotations leave data alone"
    );
}

#[test]
fn patch_strategic_merge_and_json() {
    let c = cluster();
    c.apply(TWO_CONTAINERS);

    // Strategic merge patch (the default): containers merge by name.
    let out = c.kubectl_ok(&[
        "patch", "deploy", "web", "-p",
        r#"{"spec":{"template":{"spec":{"containers":[{"name":"app","image":"app:v2","env":[{"name":"B","value":"2"}]}]}}}}"#,
    ]);
    assert_eq!(out.trim(), "deployment.apps/web patched");
    let ctrs = containers(&c);
    assert_eq!(ctrs.len(), 2, "{ctrs:?}");
    assert_eq!(ctrs[0]["image"], "app:v2");
    assert_eq!(
        ctrs[0]["env"],
        json!([{"name": "B", "value": "2"}, {"name": "A", "value": "1"}])
    );
    assert_eq!(ctrs[1]["image"], "sidecar:v1");
    assert_eq!(c.get_json(&["deploy", "web"])["metadata"]["generation"], 2);

    // A $patch: delete directive removes one element by its merge key.
    c.kubectl_ok(&[
        "patch",
        "deploy",
        "web",
        "--type",
        "strategic",
        "-p",
        r#"{"spec":{"template":{"spec":{"containers":[{"name":"sidecar","$patch":"delete"}]}}}}"#,
    ]);
    let ctrs = containers(&c);
    assert_eq!(ctrs.len(), 1, "{ctrs:?}");
    assert_eq!(ctrs[0]["name"], "app");

    // A JSON merge patch replaces lists wholesale and deletes with null.
    c.kubectl_ok(&[
        "patch", "deploy", "web", "--type", "merge", "-p",
        r#"{"metadata":{"labels":{"x":"y"}},"spec":{"template":{"spec":{"containers":[{"name":"only","image":"only:v1"}]}}}}"#,
    ]);
    let ctrs = containers(&c);
    assert_eq!(ctrs.len(), 1);
    assert_eq!(ctrs[0]["name"], "only");
    assert!(ctrs[0].get("env").is_none(), "{ctrs:?}");
    assert_eq!(
        ctrs[0]["imagePullPolicy"], "IfNotPresent",
        "the patched object is defaulted again"
    );
    c.kubectl_ok(&[
        "patch",
        "deploy",
        "web",
        "--type=merge",
        "-p",
        r#"{"metadata":{"labels":{"x":null}}}"#,
    ]);
    assert!(
        c.get_json(&["deploy", "web"])["metadata"]["labels"]
            .get("x")
            .is_none()
    );

    // JSON patch: operations on paths; a failing `test` changes nothing.
    c.kubectl_ok(&[
        "patch", "deploy", "web", "--type", "json", "-p",
        r#"[{"op":"replace","path":"/spec/replicas","value":4},{"op":"add","path":"/metadata/annotations","value":{"k":"v"}}]"#,
    ]);
    let d = c.get_json(&["deploy", "web"]);
    assert_eq!(d["spec"]["replicas"], 4);
    assert_eq!(d["metadata"]["annotations"]["k"], "v");
    let out = c.kubectl(&[
        "patch", "deploy", "web", "--type=json", "-p",
        r#"[{"op":"test","path":"/spec/replicas","value":9},{"op":"replace","path":"/spec/replicas","value":1}]"#,
    ]);
    assert!(!out.status.success(), "{}", stdout(&out));
    assert_eq!(c.get_json(&["deploy", "web"])["spec"]["replicas"], 4);

    // A patch that makes the object invalid is refused with 422 and not stored.
    let out = c.kubectl(&[
        "patch",
        "deploy",
        "web",
        "--type=json",
        "-p",
        r#"[{"op":"replace","path":"/spec/replicas","value":-1}]"#,
    ]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("spec.replicas"), "{}", stderr(&out));
    assert_eq!(c.get_json(&["deploy", "web"])["spec"]["replicas"], 4);

    // A patch that changes nothing reports it.
    let out = c.kubectl_ok(&[
        "patch",
        "deploy",
        "web",
        "--type=merge",
        "-p",
        r#"{"spec":{"replicas":4}}"#,
    ]);
    assert_eq!(out.trim(), "deployment.apps/web patched (no change)");
}

#[test]
fn replace_from_file_and_stale_resource_version_conflicts() {
    let c = cluster();
    c.kubectl_ok(&["create", "configmap", "cfg", "--from-literal=a=1"]);
    let live = c.kubectl_ok(&["get", "cm", "cfg", "-o", "yaml"]);
    let edited = live.replace("a: \"1\"", "a: \"2\"");
    assert_ne!(live, edited, "{live}");
    let out = c.kubectl_stdin(&["replace", "-f", "-"], &edited);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(stdout(&out).trim(), "configmap/cfg replaced");
    assert_eq!(c.get_json(&["cm", "cfg"])["data"]["a"], "2");

    // The same (now stale) resourceVersion again is a conflict.
    let out = c.kubectl_stdin(
        &["replace", "-f", "-"],
        &edited.replace("a: \"2\"", "a: \"3\""),
    );
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(
        err.contains("(Conflict)") && err.contains("the object has been modified"),
        "{err}"
    );
    assert_eq!(c.get_json(&["cm", "cfg"])["data"]["a"], "2");

    // Without a resourceVersion, replace is unconditional; of a missing object, NotFound.
    let out = c.kubectl_stdin(
        &["replace", "-f", "-"],
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: cfg}\ndata: {b: x}\n",
    );
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(c.get_json(&["cm", "cfg"])["data"], json!({"b": "x"}));
    let out = c.kubectl_stdin(
        &["replace", "-f", "-"],
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: ghost}\n",
    );
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("configmaps \"ghost\" not found"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn scale_uses_the_scale_subresource() {
    let c = cluster();
    c.apply(TWO_CONTAINERS);
    let out = c.kubectl_ok(&["scale", "deployment", "web", "--replicas=5"]);
    assert_eq!(out.trim(), "deployment.apps/web scaled");
    let d = c.get_json(&["deploy", "web"]);
    assert_eq!(d["spec"]["replicas"], 5);
    assert_eq!(d["metadata"]["generation"], 2);
    // The rest of the spec is untouched.
    assert_eq!(
        d["spec"]["template"]["spec"]["containers"]
            .as_array()
            .map(Vec::len),
        Some(2)
    );

    // --current-replicas is a precondition.
    let out = c.kubectl(&[
        "scale",
        "deployment",
        "web",
        "--current-replicas=3",
        "--replicas=1",
    ]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("Expected replicas to be 3, was 5"),
        "{}",
        stderr(&out)
    );
    c.kubectl_ok(&[
        "scale",
        "deployment",
        "web",
        "--current-replicas=5",
        "--replicas=0",
    ]);
    assert_eq!(c.get_json(&["deploy", "web"])["spec"]["replicas"], 0);

    let scale: serde_json::Value = serde_json::from_str(&c.kubectl_ok(&[
        "get",
        "--raw",
        "/apis/apps/v1/namespaces/default/deployments/web/scale",
    ]))
    .unwrap();
    assert_eq!(scale["kind"], "Scale");
    assert_eq!(scale["apiVersion"], "autoscaling/v1");
    assert_eq!(scale["spec"]["replicas"], 0);
    assert_eq!(scale["status"]["selector"], "app=web");

    let out = c.kubectl(&["scale", "deployment", "web", "--replicas=-2"]);
    assert!(!out.status.success());
}
