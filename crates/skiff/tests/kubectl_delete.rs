//! End-to-end: `kubectl delete` with each propagation policy, finalizers, and deleting a
//! namespace with objects inside.

use std::time::Duration;

use skiff_testkit::{TestCluster, stderr, stdout, wait_for};

fn cluster() -> TestCluster {
    TestCluster::start(env!("CARGO_BIN_EXE_skiff"))
}

/// Creates Deployment `name` and a ConfigMap `<name>-dep` owned by it (its dependent for the
/// garbage collector).
fn deployment_with_dependent(c: &TestCluster, name: &str) {
    c.kubectl_ok(&["create", "deployment", name, "--image=nginx"]);
    let uid = c.get_json(&["deploy", name])["metadata"]["uid"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert!(!uid.is_empty());
    c.apply(&format!(
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {name}-dep\n  ownerReferences:\n  - apiVersion: apps/v1\n    kind: Deployment\n    name: {name}\n    uid: {uid}\n    blockOwnerDeletion: true\n"
    ));
}

/// The object as JSON, or None once it is gone.
fn get_opt(c: &TestCluster, what: &str) -> Option<serde_json::Value> {
    let out = c.kubectl(&["get", what, "-o", "json", "--ignore-not-found"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let s = stdout(&out);
    if s.trim().is_empty() {
        None
    } else {
        serde_json::from_str(&s).ok()
    }
}

/// Gone, or marked for deletion with finalizer `f` (left for the garbage collector).
fn gone_or_marked(c: &TestCluster, what: &str, f: &str) {
    if let Some(obj) = get_opt(c, what) {
        assert!(obj["metadata"]["deletionTimestamp"].is_string(), "{obj}");
        let fins: Vec<&str> = obj["metadata"]["finalizers"]
            .as_array()
            .map(|a| a.iter().filter_map(|v| v.as_str()).collect())
            .unwrap_or_default();
        assert!(fins.contains(&f), "{what} has no {f} finalizer: {obj}");
    }
}

#[test]
fn delete_background_removes_the_owner_at_once() {
    let c = cluster();
    deployment_with_dependent(&c, "bg");
    let out = c.kubectl_ok(&["delete", "deployment", "bg", "--cascade=background"]);
    assert_eq!(out.trim(), "deployment.apps \"bg\" deleted");
    assert!(get_opt(&c, "deploy/bg").is_none());
    let out = c.kubectl(&["get", "deploy", "bg"]);
    assert!(
        stderr(&out).contains("deployments.apps \"bg\" not found"),
        "{}",
        stderr(&out)
    );
    // The garbage collector deletes the dependent.
    wait_for(Duration::from_secs(10), "dependent deleted", || {
        get_opt(&c, "cm/bg-dep").is_none().then_some(())
    });

    // Deleting what is not there: NotFound, or nothing with --ignore-not-found.
    let out = c.kubectl(&["delete", "deployment", "bg"]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("Error from server (NotFound)"),
        "{}",
        stderr(&out)
    );
    let out = c.kubectl_ok(&["delete", "deployment", "bg", "--ignore-not-found"]);
    assert_eq!(out.trim(), "");
}

#[test]
fn delete_foreground_and_orphan_are_accepted_and_marked() {
    let c = cluster();
    deployment_with_dependent(&c, "fg");
    // --wait=false: finishing a foreground deletion is the garbage collector's job.
    let out = c.kubectl_ok(&[
        "delete",
        "deployment",
        "fg",
        "--cascade=foreground",
        "--wait=false",
    ]);
    assert_eq!(out.trim(), "deployment.apps \"fg\" deleted");
    gone_or_marked(&c, "deploy/fg", "foregroundDeletion");
    if let Some(d) = get_opt(&c, "deploy/fg") {
        // Marking a Deployment for deletion is a spec-level change: generation moves on.
        assert_eq!(d["metadata"]["generation"], 2, "{d}");
    }
    // The dependent is deleted first, then the owner.
    wait_for(Duration::from_secs(10), "foreground deletion", || {
        (get_opt(&c, "cm/fg-dep").is_none() && get_opt(&c, "deploy/fg").is_none()).then_some(())
    });

    deployment_with_dependent(&c, "or");
    let out = c.kubectl_ok(&[
        "delete",
        "deployment",
        "or",
        "--cascade=orphan",
        "--wait=false",
    ]);
    assert_eq!(out.trim(), "deployment.apps \"or\" deleted");
    gone_or_marked(&c, "deploy/or", "orphan");
    // The API server itself never deletes dependents.
    assert!(
        get_opt(&c, "cm/or-dep").is_some(),
        "an orphaned dependent must stay"
    );
    // The owner goes away and the dependent stays, without its ownerReference.
    wait_for(Duration::from_secs(10), "orphan deletion", || {
        get_opt(&c, "deploy/or").is_none().then_some(())
    });
    assert!(get_opt(&c, "cm/or-dep").unwrap()["metadata"]["ownerReferences"].is_null());
}

#[test]
fn finalizers_hold_an_object_until_removed() {
    let c = cluster();
    c.apply("apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: held\n  finalizers: [example.com/hold]\ndata: {a: b}\n");
    let out = c.kubectl_ok(&["delete", "cm", "held", "--wait=false"]);
    assert_eq!(out.trim(), "configmap \"held\" deleted");
    let cm = get_opt(&c, "cm/held").expect("held by its finalizer");
    assert!(cm["metadata"]["deletionTimestamp"].is_string(), "{cm}");
    assert_eq!(cm["metadata"]["deletionGracePeriodSeconds"], 0);
    // A delete already under way can be repeated.
    c.kubectl_ok(&["delete", "cm", "held", "--wait=false"]);
    c.kubectl_ok(&[
        "patch",
        "cm",
        "held",
        "--type=json",
        "-p",
        r#"[{"op":"remove","path":"/metadata/finalizers"}]"#,
    ]);
    wait_for(Duration::from_secs(5), "held cm gone", || {
        get_opt(&c, "cm/held").is_none().then_some(())
    });

    // Deleting by label selector removes exactly the matching objects.
    for (n, tier) in [("a", "x"), ("b", "x"), ("c", "y")] {
        c.kubectl_ok(&["create", "configmap", n]);
        c.kubectl_ok(&["label", "cm", n, &format!("tier={tier}")]);
    }
    let out = c.kubectl_ok(&["delete", "cm", "-l", "tier=x"]);
    assert_eq!(out.lines().count(), 2, "{out}");
    let left = c.kubectl_ok(&["get", "cm", "-l", "tier", "-o", "name"]);
    assert_eq!(left.trim(), "configmap/c");
}

#[test]
fn delete_namespace_marks_it_terminating_and_refuses_new_content() {
    let c = cluster();
    c.kubectl_ok(&["create", "namespace", "doomed"]);
    c.kubectl_ok(&["create", "configmap", "inside", "-n", "doomed"]);
    let out = c.kubectl_ok(&["delete", "namespace", "doomed", "--wait=false"]);
    assert_eq!(out.trim(), "namespace \"doomed\" deleted");
    // What the API server guarantees by itself: the namespace is Terminating (or already gone,
    // once the namespace controller has emptied it), and nothing new can be created in it.
    if let Some(ns) = get_opt(&c, "namespace/doomed") {
        assert_eq!(ns["status"]["phase"], "Terminating", "{ns}");
        assert!(ns["metadata"]["deletionTimestamp"].is_string(), "{ns}");
        let out = c.kubectl(&["create", "configmap", "late", "-n", "doomed"]);
        assert!(!out.status.success());
        // The controller may finish between the GET and the create: then it is gone.
        let err = stderr(&out);
        assert!(
            err.contains(
                "configmaps \"late\" is forbidden: unable to create new content in namespace doomed because it is being terminated"
            ) || err.contains("namespaces \"doomed\" not found"),
            "{err}"
        );
    }
}

// The namespace controller empties a deleted namespace and then removes its `kubernetes`
// finalizer; skiff-controllers has no namespace controller yet, so the namespace stays
// Terminating forever.
#[test]
fn delete_namespace_deletes_what_is_inside() {
    let c = cluster();
    c.kubectl_ok(&["create", "namespace", "doomed"]);
    c.kubectl_ok(&["create", "configmap", "inside", "-n", "doomed"]);
    c.kubectl_ok(&[
        "create",
        "deployment",
        "web",
        "-n",
        "doomed",
        "--image=nginx",
    ]);
    c.kubectl_ok(&[
        "create",
        "secret",
        "generic",
        "s",
        "-n",
        "doomed",
        "--from-literal=a=b",
    ]);
    let out = c.kubectl_ok(&["delete", "namespace", "doomed", "--timeout=20s"]);
    assert_eq!(out.trim(), "namespace \"doomed\" deleted");
    assert!(get_opt(&c, "namespace/doomed").is_none());
    for what in ["cm", "deploy", "secret"] {
        let out = c.kubectl(&["get", what, "-n", "doomed", "-o", "name"]);
        assert_eq!(
            stdout(&out).trim(),
            "",
            "{what} left in a deleted namespace"
        );
    }
    // The name can be used again, for a fresh, empty namespace.
    c.kubectl_ok(&["create", "namespace", "doomed"]);
    assert_eq!(
        c.kubectl_ok(&["get", "cm", "-n", "doomed", "-o", "name"])
            .trim(),
        ""
    );
}
