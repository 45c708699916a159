//! End-to-end: objects Kubernetes would reject are rejected with 422 Invalid naming every bad
//! field, `kubectl` exits non-zero, and nothing is stored.

use skiff_testkit::{TestCluster, stderr, stdout};

fn cluster() -> TestCluster {
    TestCluster::start(env!("CARGO_BIN_EXE_skiff"))
}

/// Applies `yaml` with `-v=6` (which logs response codes) and checks that it fails with 422
/// and an error naming every path in `paths`.
fn assert_invalid(c: &TestCluster, yaml: &str, kind_name: &str, paths: &[&str]) {
    let out = c.kubectl_stdin(&["apply", "-v=6", "-f", "-"], yaml);
    let err = stderr(&out);
    assert!(!out.status.success(), "accepted: {}", stdout(&out));
    assert!(err.contains("422 Unprocessable Entity"), "{err}");
    assert!(
        err.contains(&format!("The {kind_name} is invalid")),
        "{err}"
    );
    for p in paths {
        assert!(err.contains(p), "{p} not named in:\n{err}");
    }
}

#[test]
fn invalid_objects_fail_with_422_and_are_not_stored() {
    let c = cluster();
    let no_image = r#"apiVersion: apps/v1
kind: Deployment
metadata: {name: bad}
spec:
  replicas: -1
  selector: {matchLabels: {app: bad}}
  template:
    metadata: {labels: {app: bad}}
    spec:
      containers:
      - name: main
      - name: second
        image: ok:v1
"#;
    assert_invalid(
        &c,
        no_image,
        "Deployment \"bad\"",
        &[
            "spec.template.spec.containers[0].image: Required value",
            "spec.replicas: Invalid value: -1",
        ],
    );

    let mismatch = r#"apiVersion: apps/v1
kind: Deployment
metadata: {name: mismatch}
spec:
  selector: {matchLabels: {app: a}}
  template:
    metadata: {labels: {app: b}}
    spec:
      containers: [{name: main, image: x:v1}]
"#;
    assert_invalid(
        &c,
        mismatch,
        "Deployment \"mismatch\"",
        &[
            "spec.template.metadata.labels",
            "`selector` does not match template `labels`",
        ],
    );

    let pvc = r#"apiVersion: v1
kind: PersistentVolumeClaim
metadata: {name: bad}
spec:
  resources: {}
"#;
    assert_invalid(
        &c,
        pvc,
        "PersistentVolumeClaim \"bad\"",
        &[
            "spec.accessModes: Required value",
            "spec.resources[storage]: Required value",
        ],
    );

    let svc = r#"apiVersion: v1
kind: Service
metadata: {name: bad}
spec:
  selector: {app: bad}
  ports:
  - {name: a, port: 70000, targetPort: 8080}
  - {name: b, port: 81, targetPort: 70001}
"#;
    assert_invalid(
        &c,
        svc,
        "Service \"bad\"",
        &[
            "spec.ports[0].port: Invalid value: 70000",
            "spec.ports[1].targetPort: Invalid value: 70001",
        ],
    );

    let out = c.kubectl(&[
        "get",
        "deploy/bad",
        "deploy/mismatch",
        "pvc/bad",
        "svc/bad",
        "--ignore-not-found",
        "-o",
        "name",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(stdout(&out).trim(), "", "an invalid object was stored");
    let out = c.kubectl(&["get", "deploy", "bad"]);
    assert!(stderr(&out).contains("NotFound"), "{}", stderr(&out));
}

#[test]
fn invalid_update_is_rejected_and_the_old_object_stays() {
    let c = cluster();
    c.kubectl_ok(&["create", "service", "clusterip", "api", "--tcp=80:8080"]);
    let out = c.kubectl(&[
        "patch",
        "svc",
        "api",
        "--type=json",
        "-p",
        r#"[{"op":"replace","path":"/spec/ports/0/port","value":70000}]"#,
    ]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("spec.ports[0].port"),
        "{}",
        stderr(&out)
    );
    assert_eq!(c.get_json(&["svc", "api"])["spec"]["ports"][0]["port"], 80);
    // clusterIP is immutable once allocated.
    let out = c.kubectl(&[
        "patch",
        "svc",
        "api",
        "--type=merge",
        "-p",
        r#"{"spec":{"clusterIP":"10.43.99.99"}}"#,
    ]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("spec.clusterIP"), "{}", stderr(&out));
}
