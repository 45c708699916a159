//! The "deploy your ML API" lesson end to end, with the real kubectl and the tutorial's
//! manifests (examples/ml-api): real containers (runc), a network namespace per pod, the
//! LoadBalancer/ClusterIP/NodePort proxy and cluster DNS. Needs root, runc and the CNI
//! plugins (`make test` installs them); skipped otherwise.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use skiff_runtime::binimage::{ImageConfig, image_from_binary};
use skiff_runtime::testimages::TestImage;
use skiff_testkit::{TestCluster, wait_for};

const DEPLOYMENT: &str = include_str!("../../../examples/ml-api/deployment.yaml");
const SERVICE: &str = include_str!("../../../examples/ml-api/service.yaml");

fn skiff() -> &'static str {
    env!("CARGO_BIN_EXE_skiff")
}

/// Why the environment cannot run real containers, if it cannot.
fn unsupported() -> Option<String> {
    if !rustix::process::geteuid().is_root() {
        return Some("not root".into());
    }
    for p in ["/usr/sbin/runc", "/usr/lib/cni/bridge", "/bin/busybox"] {
        if !Path::new(p).exists() {
            return Some(format!("{p} missing (make test installs it)"));
        }
    }
    None
}

/// Builds the lesson's images from the `ml-api` binary of this workspace (v1 and v2 differ
/// in MODEL_VERSION only) and a busybox image for shell tools, and imports them into the
/// node's store the way a user would: `skiff images import -`.
fn import_images(cluster: &TestCluster) {
    let ml_api = PathBuf::from(env!("CARGO_BIN_EXE_ml-api"));
    let mut archives = Vec::new();
    for (tag, version) in [("ml-api:v1", "v1.0"), ("ml-api:v2", "v2.0")] {
        let archive = image_from_binary(
            tag,
            &ml_api,
            &[],
            ImageConfig {
                entrypoint: vec!["/usr/bin/ml-api".into()],
                env: vec![format!("MODEL_VERSION={version}"), "PORT=8080".into()],
                exposed_ports: vec!["8080/tcp".into()],
                ..ImageConfig::default()
            },
        )
        .expect("building the ml-api image");
        archives.push(archive);
    }
    archives.push(
        TestImage::busybox("busybox:latest")
            .expect("busybox image")
            .cmd(&["sh"])
            .oci_archive()
            .expect("busybox archive"),
    );
    for archive in archives {
        let mut child = Command::new(skiff())
            .args(["images", "import", "-", "--data-dir"])
            .arg(cluster.data_dir())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("skiff images import");
        child
            .stdin
            .take()
            .expect("stdin")
            .write_all(&archive)
            .expect("writing the archive");
        let out = child.wait_with_output().expect("import output");
        assert!(
            out.status.success(),
            "import failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

/// One `POST /predict` on a new connection: (model_version, pod that answered).
fn predict(addr: &str) -> Result<(String, String), String> {
    let mut conn = TcpStream::connect_timeout(
        &addr.parse().map_err(|e| format!("{addr}: {e}"))?,
        Duration::from_secs(2),
    )
    .map_err(|e| format!("connect {addr}: {e}"))?;
    conn.set_read_timeout(Some(Duration::from_secs(5)))
        .map_err(|e| e.to_string())?;
    let body = r#"{"features":[1.5,2.5,3]}"#;
    write!(
        conn,
        "POST /predict HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .map_err(|e| format!("send: {e}"))?;
    let mut resp = String::new();
    conn.read_to_string(&mut resp)
        .map_err(|e| format!("read: {e}"))?;
    let (head, body) = resp
        .split_once("\r\n\r\n")
        .ok_or_else(|| format!("no HTTP response: {resp:?}"))?;
    if !head.starts_with("HTTP/1.1 200") {
        return Err(format!("status: {head}"));
    }
    let pod = head
        .lines()
        .find_map(|l| l.strip_prefix("X-Pod: "))
        .unwrap_or_default()
        .to_string();
    let v: serde_json::Value =
        serde_json::from_str(body).map_err(|e| format!("body {body:?}: {e}"))?;
    if v["prediction"].as_f64() != Some(7.0) {
        return Err(format!("wrong prediction: {body}"));
    }
    Ok((
        v["model_version"].as_str().unwrap_or_default().to_string(),
        pod,
    ))
}

/// A client sending requests without pause until stopped; counts failures.
struct Load {
    stop: Arc<AtomicBool>,
    handle: std::thread::JoinHandle<(usize, Vec<String>, Vec<String>)>,
}

impl Load {
    fn start(addr: &str) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let s = Arc::clone(&stop);
        let addr = addr.to_string();
        let handle = std::thread::spawn(move || {
            let (mut ok, mut failures, mut versions) = (0, Vec::new(), Vec::new());
            while !s.load(Ordering::SeqCst) {
                match predict(&addr) {
                    Ok((v, _)) => {
                        ok += 1;
                        versions.push(v);
                    }
                    Err(e) => failures.push(e),
                }
            }
            (ok, failures, versions)
        });
        Load { stop, handle }
    }

    /// Stops and returns (successes, failures, versions in order).
    fn finish(self) -> (usize, Vec<String>, Vec<String>) {
        self.stop.store(true, Ordering::SeqCst);
        self.handle.join().expect("load thread")
    }
}

fn ready_pods(cluster: &TestCluster, selector: &str) -> Vec<serde_json::Value> {
    let list = cluster.get_json(&["pods", "-l", selector]);
    list["items"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .into_iter()
        .filter(|p| {
            p["metadata"]["deletionTimestamp"].is_null()
                && p["status"]["conditions"]
                    .as_array()
                    .map(|cs| {
                        cs.iter()
                            .any(|c| c["type"] == "Ready" && c["status"] == "True")
                    })
                    .unwrap_or(false)
        })
        .collect()
}

fn wait_ready(cluster: &TestCluster, selector: &str, n: usize, timeout: Duration) {
    wait_for(timeout, &format!("{n} ready pods for {selector}"), || {
        let pods = ready_pods(cluster, selector);
        let all = cluster.get_json(&["pods", "-l", selector]);
        let total = all["items"].as_array().map(Vec::len).unwrap_or(0);
        (pods.len() == n && total == n).then_some(())
    });
}

fn write(dir: &Path, name: &str, text: &str) -> String {
    let p = dir.join(name);
    std::fs::write(&p, text).expect("writing manifest");
    p.to_string_lossy().into_owned()
}

#[test]
fn ml_api_lesson() {
    if let Some(why) = unsupported() {
        eprintln!("skipping: {why}");
        return;
    }
    let cluster = TestCluster::start_with(
        skiff(),
        &[
            "--runtime",
            "oci",
            "--cluster-cidr",
            "10.77.0.0/16",
            "--service-cidr",
            "10.78.0.0/16",
            "--bridge",
            "skt0",
            "--service-interface",
            "skt-svc",
            "--kubelet-port",
            "0",
            "--lb-address",
            "127.0.0.1",
            "--node-port-address",
            "127.0.0.1",
        ],
    );
    import_images(&cluster);
    let dir = tempfile::tempdir().expect("tempdir");
    let deployment = write(dir.path(), "deployment.yaml", DEPLOYMENT);
    let service = write(dir.path(), "service.yaml", SERVICE);

    // 1. apply; 3/3 Running with IPs and the node; /predict through the LoadBalancer.
    cluster.kubectl_ok(&["apply", "-f", &deployment, "-f", &service]);
    wait_ready(&cluster, "app=ml-api", 3, Duration::from_secs(60));
    let wide = cluster.kubectl_ok(&["get", "pods", "-o", "wide"]);
    assert_eq!(wide.matches("Running").count(), 3, "{wide}");
    assert!(
        wide.contains("10.77."),
        "pod IPs in the cluster CIDR: {wide}"
    );
    let lb_ip = wait_for(Duration::from_secs(20), "LoadBalancer ingress", || {
        let svc = cluster.get_json(&["service", "ml-api-service"]);
        svc["status"]["loadBalancer"]["ingress"][0]["ip"]
            .as_str()
            .map(String::from)
    });
    let lb = format!("{lb_ip}:80");
    let (version, _) = wait_for(Duration::from_secs(10), "an answer via the LB", || {
        predict(&lb).ok()
    });
    assert_eq!(version, "v1.0");

    // 2. scale to 5: all five get traffic.
    cluster.kubectl_ok(&["scale", "deployment", "ml-api", "--replicas=5"]);
    wait_ready(&cluster, "app=ml-api", 5, Duration::from_secs(60));
    let names: std::collections::BTreeSet<String> = ready_pods(&cluster, "app=ml-api")
        .iter()
        .filter_map(|p| p["metadata"]["name"].as_str().map(String::from))
        .collect();
    let mut seen = std::collections::BTreeSet::new();
    wait_for(Duration::from_secs(20), "traffic on all 5 pods", || {
        if let Ok((_, pod)) = predict(&lb) {
            seen.insert(pod);
        }
        names.is_subset(&seen).then_some(())
    });

    // 3. rolling update to v2 under load: not one failed request.
    let load = Load::start(&lb);
    cluster.kubectl_ok(&["set", "image", "deployment/ml-api", "ml-api=ml-api:v2"]);
    cluster.kubectl_ok(&["rollout", "status", "deployment/ml-api", "--timeout=120s"]);
    let settle = Instant::now();
    while settle.elapsed() < Duration::from_millis(500) {
        std::thread::sleep(Duration::from_millis(50));
    }
    let (ok, failures, versions) = load.finish();
    assert!(
        failures.is_empty(),
        "{} failed of {}: {:?}",
        failures.len(),
        ok + failures.len(),
        &failures[..failures.len().min(5)]
    );
    assert!(ok > 50, "only {ok} requests during the rollout");
    assert_eq!(versions.last().map(String::as_str), Some("v2.0"));
    for _ in 0..20 {
        assert_eq!(predict(&lb).expect("after rollout").0, "v2.0");
    }

    // 4. history has two revisions; undo goes back to v1 without a failed request.
    let history = cluster.kubectl_ok(&["rollout", "history", "deployment/ml-api"]);
    assert!(
        history.contains("\n1 ") && history.contains("\n2 "),
        "{history}"
    );
    let load = Load::start(&lb);
    cluster.kubectl_ok(&["rollout", "undo", "deployment/ml-api"]);
    cluster.kubectl_ok(&["rollout", "status", "deployment/ml-api", "--timeout=120s"]);
    let (ok, failures, versions) = load.finish();
    assert!(
        failures.is_empty(),
        "{} failed of {}: {:?}",
        failures.len(),
        ok + failures.len(),
        &failures[..failures.len().min(5)]
    );
    assert_eq!(versions.last().map(String::as_str), Some("v1.0"));

    // 5. a deleted pod is replaced and Ready within 2 s.
    let victim = ready_pods(&cluster, "app=ml-api")[0]["metadata"]["name"]
        .as_str()
        .expect("pod name")
        .to_string();
    let started = Instant::now();
    cluster.kubectl_ok(&["delete", "pod", &victim, "--wait=false"]);
    // The victim drains for a while; its replacement is created at once.
    wait_for(Duration::from_secs(30), "a ready replacement", || {
        let ready = ready_pods(&cluster, "app=ml-api");
        (ready.len() == 5
            && ready
                .iter()
                .all(|p| p["metadata"]["name"] != victim.as_str()))
        .then_some(())
    });
    let replaced_in = started.elapsed();
    assert!(
        replaced_in < Duration::from_secs(2),
        "replacement ready after {replaced_in:?}"
    );

    // 10 (partial). Deleting the manifests leaves no pods behind.
    cluster.kubectl_ok(&["delete", "-f", &deployment, "-f", &service]);
    wait_for(Duration::from_secs(60), "pods gone", || {
        let all = cluster.get_json(&["pods"]);
        all["items"]
            .as_array()
            .is_some_and(Vec::is_empty)
            .then_some(())
    });
}
