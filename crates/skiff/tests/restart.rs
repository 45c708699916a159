//! End-to-end lifecycle of `skiff up`: quick readiness, clean SIGTERM, a restart that keeps
//! everything (Secrets still decrypt), and `skiff kubeconfig`.

use base64::Engine;
use skiff_testkit::{TestCluster, stderr, stdout};
use std::process::Command;
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_skiff");

#[test]
fn up_is_ready_quickly_and_sigterm_exits_cleanly() {
    let spawned = Instant::now();
    let mut c = TestCluster::start(BIN);
    let ready = spawned.elapsed();
    // The real target (< 1 s) is measured by the benchmark; here only a generous bound, since
    // tests share the machine with builds.
    assert!(
        ready < Duration::from_secs(5),
        "skiff up took {ready:?} to be ready"
    );
    let readyz = c.kubectl_ok(&["get", "--raw", "/readyz"]);
    assert_eq!(readyz.trim(), "ok");
    // A client streaming a watch must not hold the shutdown up.
    let mut watcher = c
        .kubectl_cmd()
        .args(["get", "configmaps", "-A", "-w"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("kubectl get -w");
    c.kubectl_ok(&["create", "configmap", "during-watch", "--from-literal=a=b"]);
    let asked = Instant::now();
    assert!(c.terminate(), "skiff did not exit 0 on SIGTERM");
    assert!(
        asked.elapsed() < Duration::from_secs(5),
        "shutdown took {:?}",
        asked.elapsed()
    );
    let _ = watcher.kill();
    let _ = watcher.wait();
    // The port is closed once it has exited.
    assert!(
        std::net::TcpStream::connect(("127.0.0.1", c.port)).is_err(),
        "still listening after SIGTERM"
    );
    // Starting again on an existing data dir is as quick (nothing is regenerated).
    let again = Instant::now();
    c.restart();
    assert!(
        again.elapsed() < Duration::from_secs(5),
        "restart took {:?}",
        again.elapsed()
    );
    assert_eq!(
        c.kubectl_ok(&[
            "get",
            "configmap",
            "during-watch",
            "-o",
            "jsonpath={.data.a}"
        ]),
        "b"
    );
}

const DEPLOYMENT: &str = "apiVersion: apps/v1
kind: Deployment
metadata:
  name: model-api
  namespace: ml
  labels: {app: model-api}
spec:
  replicas: 3
  selector: {matchLabels: {app: model-api}}
  template:
    metadata: {labels: {app: model-api}}
    spec:
      containers:
      - name: api
        image: registry.example/model-api:v1
        env: [{name: MODEL, value: resnet50}]
        resources: {limits: {cpu: 500m, memory: 512Mi}}
";

#[test]
fn restart_keeps_namespaces_deployments_and_secrets() {
    let mut c = TestCluster::start(BIN);
    c.kubectl_ok(&["create", "namespace", "ml"]);
    c.apply(DEPLOYMENT);
    let password = "restart-canary-4d1f";
    c.kubectl_ok(&[
        "-n",
        "ml",
        "create",
        "secret",
        "generic",
        "db",
        &format!("--from-literal=password={password}"),
    ]);
    let before = c.get_json(&["-n", "ml", "deployment", "model-api"]);

    for how in ["SIGTERM", "kill -9"] {
        if how == "SIGTERM" {
            assert!(c.terminate(), "SIGTERM did not exit 0");
        } else {
            c.kill9();
        }
        c.restart();
        let ns = c.kubectl_ok(&["get", "namespaces", "-o", "name"]);
        for n in [
            "default",
            "kube-system",
            "kube-public",
            "kube-node-lease",
            "ml",
        ] {
            assert!(
                ns.contains(&format!("namespace/{n}\n")),
                "after {how}: namespace {n} missing:\n{ns}"
            );
        }
        let after = c.get_json(&["-n", "ml", "deployment", "model-api"]);
        assert_eq!(
            after["metadata"]["uid"], before["metadata"]["uid"],
            "after {how}"
        );
        assert_eq!(
            after["metadata"]["creationTimestamp"],
            before["metadata"]["creationTimestamp"]
        );
        assert_eq!(
            after["spec"], before["spec"],
            "after {how}: the Deployment spec changed"
        );
        let data = c.kubectl_ok(&[
            "-n",
            "ml",
            "get",
            "secret",
            "db",
            "-o",
            "jsonpath={.data.password}",
        ]);
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(data.trim())
            .unwrap_or_else(|e| panic!("after {how}: secret data {data:?} is not base64: {e}"));
        assert_eq!(
            decoded,
            password.as_bytes(),
            "after {how}: the Secret did not decrypt to its value"
        );
        // Still writable: the store reopened read-write.
        c.kubectl_ok(&[
            "-n",
            "ml",
            "annotate",
            "deployment",
            "model-api",
            "--overwrite",
            &format!("restarted={}", how.replace(' ', "")),
        ]);
    }
}

#[test]
fn kubeconfig_command_prints_export_line_and_raw_config() {
    let mut c = TestCluster::start(BIN);
    let dir = c.data_dir().to_path_buf();
    let run = |args: &[&str]| {
        Command::new(BIN)
            .args(args)
            .arg("--data-dir")
            .arg(&dir)
            .output()
            .expect("running skiff")
    };
    let out = run(&["kubeconfig"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(
        stdout(&out),
        format!(
            "export KUBECONFIG={}\n",
            dir.join("kubeconfig.yaml").display()
        )
    );
    let out = run(&["kubeconfig", "--raw"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let raw = stdout(&out);
    assert_eq!(
        raw,
        std::fs::read_to_string(c.kubeconfig()).expect("kubeconfig file")
    );
    assert!(raw.contains(&format!("server: {}", c.server)), "{raw}");
    assert!(
        raw.contains(&c.token()),
        "the raw kubeconfig lacks the admin token"
    );
    // Works while the cluster is down too, and the printed file is usable once it is back.
    assert!(c.terminate());
    assert!(run(&["kubeconfig"]).status.success());
    c.restart();
    let path = dir.join("kubeconfig.yaml");
    let out = Command::new(skiff_testkit::kubectl_bin())
        .env("KUBECONFIG", &path)
        .args(["get", "ns", "default", "-o", "name"])
        .output()
        .expect("kubectl");
    assert_eq!(stdout(&out).trim(), "namespace/default", "{}", stderr(&out));

    let missing = tempfile_dir();
    let out = Command::new(BIN)
        .args(["kubeconfig", "--data-dir"])
        .arg(&missing)
        .output()
        .expect("running skiff");
    assert!(
        !out.status.success(),
        "kubeconfig for a data dir without a cluster succeeded"
    );
    assert!(stderr(&out).contains("skiff up"), "{}", stderr(&out));
}

/// A directory path that does not exist.
fn tempfile_dir() -> std::path::PathBuf {
    std::env::temp_dir().join(format!("skiff-no-cluster-{}", std::process::id()))
}
