//! The "deploy your ML API" lesson end to end, with the real kubectl and the tutorial's
//! manifests (examples/ml-api): real containers (runc), a network namespace per pod, the
//! LoadBalancer/ClusterIP/NodePort proxy and cluster DNS; and the `skiff serve` image run by
//! the Deployment of the serving README. Needs root, runc and the CNI plugins (`make test`
//! installs them); skipped otherwise.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use skiff_runtime::binimage::{ImageConfig, image_from_binary};
use skiff_runtime::testimages::{Layer, TestImage};
use skiff_testkit::{TestCluster, wait_for};

const DEPLOYMENT: &str = include_str!("../../../examples/ml-api/deployment.yaml");
const SERVICE: &str = include_str!("../../../examples/ml-api/service.yaml");
/// Its "Container image" section holds the Deployment and Service of the model server.
const SERVING_README: &str = include_str!("../../skiff-serving/README.md");

fn skiff() -> &'static str {
    env!("CARGO_BIN_EXE_skiff")
}

/// `skiff up` running real containers, on the pod and service ranges `10.<net>.0.0/16` and
/// `10.<net + 1>.0.0/16` and on interfaces named after `bridge`, so that the tests of this file
/// can run side by side; `extra` are more `skiff up` flags.
fn oci_cluster(net: u8, bridge: &str, extra: &[&str]) -> TestCluster {
    let pods = format!("10.{net}.0.0/16");
    let services = format!("10.{}.0.0/16", net + 1);
    let service_interface = format!("{bridge}-svc");
    let mut args = vec![
        "--runtime",
        "oci",
        "--cluster-cidr",
        &pods,
        "--service-cidr",
        &services,
        "--bridge",
        bridge,
        "--service-interface",
        &service_interface,
        "--kubelet-port",
        "0",
    ];
    args.extend_from_slice(extra);
    TestCluster::start_with(skiff(), &args)
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
    // busybox with the applets the steps use linked into /bin, like the real image.
    let mut tools = Layer::new();
    for applet in [
        "env", "wget", "nslookup", "head", "tail", "sleep", "cat", "echo", "ls", "hostname",
    ] {
        tools = tools.symlink(&format!("bin/{applet}"), "busybox");
    }
    archives.push(
        TestImage::busybox("busybox:latest")
            .expect("busybox image")
            .layer(tools)
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

/// One HTTP/1.1 request with a JSON body on a new connection: (status line and headers, body).
fn request(addr: &str, method: &str, path: &str, body: &str) -> Result<(String, String), String> {
    let mut conn = TcpStream::connect_timeout(
        &addr.parse().map_err(|e| format!("{addr}: {e}"))?,
        Duration::from_secs(2),
    )
    .map_err(|e| format!("connect {addr}: {e}"))?;
    // Slow is not failed: on a loaded machine an answer may take a while.
    conn.set_read_timeout(Some(Duration::from_secs(30)))
        .map_err(|e| e.to_string())?;
    write!(
        conn,
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
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
    Ok((head.to_string(), body.to_string()))
}

/// One `POST /predict` on a new connection: (model_version, pod that answered).
fn predict(addr: &str) -> Result<(String, String), String> {
    let (head, body) = request(addr, "POST", "/predict", r#"{"features":[1.5,2.5,3]}"#)?;
    let pod = head
        .lines()
        .find_map(|l| l.strip_prefix("X-Pod: "))
        .unwrap_or_default()
        .to_string();
    let v: serde_json::Value =
        serde_json::from_str(&body).map_err(|e| format!("body {body:?}: {e}"))?;
    if v["prediction"].as_f64() != Some(7.0) {
        return Err(format!("wrong prediction: {body}"));
    }
    Ok((
        v["model_version"].as_str().unwrap_or_default().to_string(),
        pod,
    ))
}

/// Waits until 20 answers in a row through `addr` come from `version`.
///
/// `rollout status` returns once the Deployment's status says so; the EndpointSlices and
/// the proxy's rules follow on their own watch, as in Kubernetes, so a request sent at that
/// moment may still reach a pod that is shutting down (and answer, since it drains).
fn only_version_answers(addr: &str, version: &str) {
    let mut in_a_row = 0;
    wait_for(
        Duration::from_secs(15),
        &format!("only {version} answering"),
        || {
            match predict(addr) {
                Ok((v, _)) if v == version => in_a_row += 1,
                _ => in_a_row = 0,
            }
            (in_a_row >= 20).then_some(())
        },
    );
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

/// The pods of the later steps: a memory hog (32 MiB limit), a crasher, a pod whose output
/// is followed, and one with ConfigMap and Secret values in its environment.
const LAB: &str = r#"
apiVersion: v1
kind: ConfigMap
metadata: {name: model-config, namespace: lab}
data: {MODEL_NAME: iris}
---
apiVersion: v1
kind: Secret
metadata: {name: api-secret, namespace: lab}
stringData: {API_KEY: s3cret}
---
apiVersion: v1
kind: Pod
metadata: {name: hog, namespace: lab}
spec:
  restartPolicy: Never
  containers:
  - name: hog
    image: busybox:latest
    imagePullPolicy: Never
    command: ["sh", "-c", "head -c 400m /dev/zero | tail"]
    resources: {limits: {memory: 32Mi}}
---
apiVersion: v1
kind: Pod
metadata: {name: crasher, namespace: lab}
spec:
  containers:
  - name: crasher
    image: busybox:latest
    imagePullPolicy: Never
    command: ["sh", "-c", "echo failing; exit 1"]
---
apiVersion: v1
kind: Pod
metadata: {name: talker, namespace: lab}
spec:
  restartPolicy: Never
  containers:
  - name: talker
    image: busybox:latest
    imagePullPolicy: Never
    command: ["sh", "-c", "echo one; sleep 2; echo two"]
---
apiVersion: v1
kind: Pod
metadata: {name: envpod, namespace: lab}
spec:
  containers:
  - name: shell
    image: busybox:latest
    imagePullPolicy: Never
    command: ["sleep", "3600"]
    envFrom:
    - configMapRef: {name: model-config}
    env:
    - name: API_KEY
      valueFrom: {secretKeyRef: {name: api-secret, key: API_KEY}}
"#;

/// Host PIDs of a running pod's container, from its cgroup.
fn container_pids(pod: &serde_json::Value) -> Vec<u32> {
    let uid = pod["metadata"]["uid"].as_str().expect("uid");
    let id = pod["status"]["containerStatuses"][0]["containerID"]
        .as_str()
        .and_then(|c| c.split("://").nth(1))
        .expect("containerID");
    let procs = format!("/sys/fs/cgroup/pids/skiff/pod{uid}/{id}/cgroup.procs");
    std::fs::read_to_string(&procs)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.trim().parse().ok())
        .collect()
}

/// `kubectl port-forward pod/<name> <local>:8080`, then GET /health through it.
fn port_forward_works(cluster: &TestCluster, pod: &str) {
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("free port");
        l.local_addr().expect("addr").port()
    };
    let mut child = cluster
        .kubectl_cmd()
        .args([
            "port-forward",
            &format!("pod/{pod}"),
            &format!("{port}:8080"),
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("kubectl port-forward");
    let addr = format!("127.0.0.1:{port}");
    let got = wait_for(Duration::from_secs(20), "port-forward answers", || {
        predict(&addr).ok()
    });
    let _ = child.kill();
    let _ = child.wait();
    assert_eq!(got.0, "v1.0");
}

/// What the node left behind for pods `uids`: cgroups, mounts, namespaces, veths.
fn leftovers(data: &Path, uids: &[String]) -> Vec<String> {
    let mut left = Vec::new();
    for uid in uids {
        for ctl in ["memory", "cpu", "pids"] {
            let dir = format!("/sys/fs/cgroup/{ctl}/skiff/pod{uid}");
            if Path::new(&dir).exists() {
                left.push(dir);
            }
        }
    }
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let pods = data.join("pods").to_string_lossy().into_owned();
    let oci = data.join("oci").to_string_lossy().into_owned();
    let netns = data.join("netns").to_string_lossy().into_owned();
    for mp in mounts.lines().filter_map(|l| l.split(' ').nth(4)) {
        if mp.starts_with(&pods) || mp.starts_with(&oci) || mp.starts_with(&format!("{netns}/")) {
            left.push(format!("mount {mp}"));
        }
    }
    if let Ok(entries) = std::fs::read_dir(data.join("netns")) {
        for e in entries.flatten() {
            left.push(format!("netns {}", e.path().display()));
        }
    }
    let links = Command::new("ip")
        .args(["-o", "link", "show", "master", "skt0"])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default();
    for l in links.lines() {
        left.push(format!("interface {l}"));
    }
    left
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
    let cluster = oci_cluster(
        77,
        "skt0",
        &[
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
    // Pods of later steps that take their time (back-off) start now, in their own namespace.
    cluster.kubectl_ok(&["create", "namespace", "lab"]);
    cluster.apply(LAB);
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
    only_version_answers(&lb, "v2.0");
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

    // 4. history has two revisions; undo goes back to v1 without a failed request.
    let history = cluster.kubectl_ok(&["rollout", "history", "deployment/ml-api"]);
    assert!(
        history.contains("\n1 ") && history.contains("\n2 "),
        "{history}"
    );
    let load = Load::start(&lb);
    cluster.kubectl_ok(&["rollout", "undo", "deployment/ml-api"]);
    cluster.kubectl_ok(&["rollout", "status", "deployment/ml-api", "--timeout=120s"]);
    only_version_answers(&lb, "v1.0");
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

    // 5b. kill -9 of a container's process: restarted, RESTARTS 1.
    let pod = ready_pods(&cluster, "app=ml-api")[0].clone();
    let name = pod["metadata"]["name"].as_str().expect("name").to_string();
    let pids = container_pids(&pod);
    assert!(!pids.is_empty(), "no process found for {name}");
    for pid in pids {
        let _ = Command::new("kill").args(["-9", &pid.to_string()]).status();
    }
    wait_for(
        Duration::from_secs(30),
        "RESTARTS 1 and ready again",
        || {
            let p = cluster.get_json(&["pod", &name]);
            let cs = &p["status"]["containerStatuses"][0];
            (cs["restartCount"] == 1 && cs["ready"] == true).then_some(())
        },
    );
    let row = cluster.kubectl_ok(&["get", "pod", &name, "--no-headers"]);
    assert!(
        row.split_whitespace().nth(3) == Some("1"),
        "RESTARTS column: {row}"
    );

    // OOMKilled past the memory limit; CrashLoopBackOff with a growing delay.
    let oom = wait_for(Duration::from_secs(60), "OOMKilled", || {
        let p = cluster.get_json(&["pod", "hog", "-n", "lab"]);
        let t = &p["status"]["containerStatuses"][0]["state"]["terminated"];
        (t["reason"] == "OOMKilled").then(|| t.clone())
    });
    assert_eq!(oom["exitCode"], 137, "{oom}");
    wait_for(Duration::from_secs(90), "CrashLoopBackOff at 20 s", || {
        let p = cluster.get_json(&["pod", "crasher", "-n", "lab"]);
        let w = &p["status"]["containerStatuses"][0]["state"]["waiting"];
        (w["reason"] == "CrashLoopBackOff"
            && w["message"]
                .as_str()
                .is_some_and(|m| m.contains("back-off 20s")))
        .then_some(())
    });
    let events = cluster.kubectl_ok(&["get", "events", "-n", "lab"]);
    assert!(events.contains("BackOff"), "{events}");

    // 6. logs, logs -f, describe with events, exec showing ConfigMap/Secret values,
    //    port-forward.
    let logs = cluster.kubectl_ok(&["logs", &name]);
    assert!(logs.contains("listening on 0.0.0.0:8080"), "{logs}");
    let follow = cluster.kubectl_ok(&["logs", "-f", "talker", "-n", "lab"]);
    assert_eq!(follow, "one\ntwo\n");
    let describe = cluster.kubectl_ok(&["describe", "pod", &name]);
    for needle in ["Events:", "Scheduled", "Started", "Node:", "IP:"] {
        assert!(
            describe.contains(needle),
            "describe lacks {needle}: {describe}"
        );
    }
    wait_for(Duration::from_secs(30), "env pod running", || {
        let p = cluster.get_json(&["pod", "envpod", "-n", "lab"]);
        (p["status"]["phase"] == "Running").then_some(())
    });
    let env = cluster.kubectl_ok(&["exec", "envpod", "-n", "lab", "--", "env"]);
    assert!(env.contains("MODEL_NAME=iris"), "{env}");
    assert!(env.contains("API_KEY=s3cret"), "{env}");
    port_forward_works(&cluster, &name);

    // 7. a pod resolves the Service by DNS and calls it by its ClusterIP.
    let svc = cluster.get_json(&["service", "ml-api-service"]);
    let cluster_ip = svc["spec"]["clusterIP"]
        .as_str()
        .expect("clusterIP")
        .to_string();
    let lookup = cluster.kubectl_ok(&[
        "exec",
        "envpod",
        "-n",
        "lab",
        "--",
        "nslookup",
        "ml-api-service.default.svc.cluster.local",
    ]);
    assert!(lookup.contains(&cluster_ip), "{lookup}");
    let answer = cluster.kubectl_ok(&[
        "exec",
        "envpod",
        "-n",
        "lab",
        "--",
        "wget",
        "-q",
        "-O",
        "-",
        "--header",
        "Content-Type: application/json",
        "--post-data",
        r#"{"features":[1,2,3]}"#,
        "http://ml-api-service.default/predict",
    ]);
    assert!(answer.contains(r#""prediction":6"#), "{answer}");

    // 8. a NodePort Service answers on 127.0.0.1:<nodePort>.
    cluster.kubectl_ok(&[
        "expose",
        "deployment",
        "ml-api",
        "--name",
        "ml-api-np",
        "--type",
        "NodePort",
        "--port",
        "8080",
    ]);
    let np = cluster.get_json(&["service", "ml-api-np"]);
    let node_port = np["spec"]["ports"][0]["nodePort"]
        .as_i64()
        .expect("nodePort");
    let (version, _) = wait_for(Duration::from_secs(20), "an answer on the NodePort", || {
        predict(&format!("127.0.0.1:{node_port}")).ok()
    });
    assert_eq!(version, "v1.0");

    // kill -9 of skiff itself: the containers keep running, and the restarted node adopts
    // them (same container IDs, no restarts, no duplicates); traffic flows again.
    let containers = |c: &TestCluster| -> std::collections::BTreeMap<String, (String, i64)> {
        ready_pods(c, "app=ml-api")
            .iter()
            .map(|p| {
                let cs = &p["status"]["containerStatuses"][0];
                (
                    p["metadata"]["name"]
                        .as_str()
                        .unwrap_or_default()
                        .to_string(),
                    (
                        cs["containerID"].as_str().unwrap_or_default().to_string(),
                        cs["restartCount"].as_i64().unwrap_or(-1),
                    ),
                )
            })
            .collect()
    };
    let before = containers(&cluster);
    let mut cluster = cluster;
    cluster.restart();
    let (version, _) = wait_for(
        Duration::from_secs(20),
        "an answer after the restart",
        || predict(&lb).ok(),
    );
    assert_eq!(version, "v1.0");
    wait_ready(&cluster, "app=ml-api", 5, Duration::from_secs(30));
    assert_eq!(
        containers(&cluster),
        before,
        "containers changed across a restart"
    );

    // 10. deleting everything leaves no process, mount, cgroup, namespace or interface.
    let uids: Vec<String> = cluster.get_json(&["pods", "-A"])["items"]
        .as_array()
        .expect("pods")
        .iter()
        .filter_map(|p| p["metadata"]["uid"].as_str().map(String::from))
        .collect();
    cluster.kubectl_ok(&["delete", "-f", &deployment, "-f", &service]);
    cluster.kubectl_ok(&["delete", "service", "ml-api-np"]);
    cluster.kubectl_ok(&["delete", "namespace", "lab", "--wait=false"]);
    wait_for(Duration::from_secs(90), "pods gone", || {
        let all = cluster.get_json(&["pods", "-A"]);
        all["items"]
            .as_array()
            .is_some_and(Vec::is_empty)
            .then_some(())
    });
    let data = cluster.data_dir().to_path_buf();
    wait_for(Duration::from_secs(20), "nothing left on the host", || {
        let left = leftovers(&data, &uids);
        if !left.is_empty() {
            eprintln!("still left: {left:?}");
        }
        left.is_empty().then_some(())
    });
}

/// A network namespace with a veth pair to the host, removed on drop.
struct NetnsHost {
    name: String,
    host_if: String,
}

impl NetnsHost {
    fn create(name: &str, host_if: &str, ns_if: &str, host_ip: &str, ns_ip: &str) -> NetnsHost {
        let ip = |args: &[&str]| {
            let out = Command::new("ip").args(args).output().expect("ip");
            assert!(
                out.status.success(),
                "ip {args:?}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        };
        // Leftovers of an earlier, killed run.
        let _ = Command::new("ip").args(["netns", "del", name]).output();
        let _ = Command::new("ip").args(["link", "del", host_if]).output();
        ip(&["netns", "add", name]);
        let guard = NetnsHost {
            name: name.into(),
            host_if: host_if.into(),
        };
        ip(&[
            "link", "add", host_if, "type", "veth", "peer", "name", ns_if,
        ]);
        ip(&["link", "set", ns_if, "netns", name]);
        ip(&["addr", "add", &format!("{host_ip}/24"), "dev", host_if]);
        ip(&["link", "set", host_if, "up"]);
        for args in [
            vec!["addr", "add", &format!("{ns_ip}/24"), "dev", ns_if],
            vec!["link", "set", ns_if, "up"],
            vec!["link", "set", "lo", "up"],
        ] {
            let mut full = vec!["netns", "exec", name, "ip"];
            full.extend(args.iter().copied());
            ip(&full);
        }
        guard
    }

    /// `nsenter --net`: only the network namespace changes (cgroups and mounts stay the
    /// host's, as for a node on another machine that shares nothing but the wire).
    fn command(&self, program: &str) -> Command {
        let mut c = Command::new("nsenter");
        c.arg(format!("--net=/run/netns/{}", self.name))
            .arg("--")
            .arg(program);
        c
    }
}

impl Drop for NetnsHost {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["link", "del", &self.host_if])
            .output();
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .output();
    }
}

/// A `skiff agent` process in a network namespace; killed (and its node cleaned) on drop.
struct Agent {
    child: Option<std::process::Child>,
    data: tempfile::TempDir,
    netns: String,
}

impl Agent {
    fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        self.kill9();
        let _ = Command::new("nsenter")
            .arg(format!("--net=/run/netns/{}", self.netns))
            .arg("--")
            .arg(skiff())
            .args(["killall", "--data-dir"])
            .arg(self.data.path())
            .stdout(Stdio::null())
            .status();
    }
}

#[test]
fn second_node_joins_and_its_pods_come_back_when_it_dies() {
    if let Some(why) = unsupported() {
        eprintln!("skipping: {why}");
        return;
    }
    if !Path::new("/usr/bin/nsenter").exists() {
        eprintln!("skipping: nsenter missing");
        return;
    }
    let net = NetnsHost::create("skt-node2", "skv2h", "skv2n", "10.79.0.1", "10.79.0.2");
    let cluster = oci_cluster(
        80,
        "skt2",
        &[
            "--bind",
            "10.79.0.1",
            "--node-ip",
            "10.79.0.1",
            "--lb-address",
            "10.79.0.1",
            "--node-port-address",
            "10.79.0.1",
            "--node-monitor-grace-period",
            "3",
            "--pod-eviction-timeout",
            "2",
        ],
    );
    import_images(&cluster);
    let token = std::fs::read_to_string(cluster.data_dir().join("node-token")).expect("token");
    let mut agent = Agent {
        child: None,
        data: tempfile::Builder::new()
            .prefix("skiff-agent-")
            .tempdir()
            .expect("tempdir"),
        netns: net.name.clone(),
    };
    // The second node has its own image store (like another machine) with the same images.
    copy_image_store(cluster.data_dir(), agent.data.path());
    agent.child = Some(
        net.command(skiff())
            .args([
                "agent",
                "--server",
                &format!("https://10.79.0.1:{}", cluster.port),
            ])
            .args(["--token", token.trim(), "--ca-file"])
            .arg(cluster.ca_path())
            .arg("--data-dir")
            .arg(agent.data.path())
            .args([
                "--node-name",
                "node2",
                "--node-ip",
                "10.79.0.2",
                "--runtime",
                "oci",
                "--cluster-cidr",
                "10.80.0.0/16",
                "--service-cidr",
                "10.81.0.0/16",
                "--bridge",
                "skt3",
                "--service-interface",
                "skt3-svc",
                "--kubelet-port",
                "0",
                "--lb-address",
                "10.79.0.2",
                "--node-port-address",
                "10.79.0.2",
            ])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .spawn()
            .expect("skiff agent"),
    );
    wait_for(Duration::from_secs(30), "node2 Ready", || {
        let n = cluster.get_json(&["nodes"]);
        let ready = n["items"]
            .as_array()?
            .iter()
            .filter(|n| {
                n["status"]["conditions"].as_array().is_some_and(|cs| {
                    cs.iter()
                        .any(|c| c["type"] == "Ready" && c["status"] == "True")
                })
            })
            .count();
        (ready == 2).then_some(())
    });

    cluster.apply(SPREAD);
    wait_ready(&cluster, "app=spread", 4, Duration::from_secs(60));
    let on = |node: &str| {
        ready_pods(&cluster, "app=spread")
            .iter()
            .filter(|p| p["spec"]["nodeName"] == node)
            .count()
    };
    assert!(
        on("node2") > 0,
        "no pod on node2: {}",
        cluster.kubectl_ok(&["get", "pods", "-o", "wide"])
    );
    // A pod on node2 answers logs through its agent.
    let pod2 = ready_pods(&cluster, "app=spread")
        .into_iter()
        .find(|p| p["spec"]["nodeName"] == "node2")
        .expect("pod on node2");
    let name2 = pod2["metadata"]["name"].as_str().expect("name").to_string();
    cluster.kubectl_ok(&["logs", &name2]);

    // kill -9 of the agent: node2 goes NotReady, its pods come back on the first node.
    agent.kill9();
    wait_for(Duration::from_secs(30), "node2 NotReady", || {
        let n = cluster.get_json(&["node", "node2"]);
        n["status"]["conditions"]
            .as_array()?
            .iter()
            .any(|c| c["type"] == "Ready" && c["status"] != "True")
            .then_some(())
    });
    let first = cluster.get_json(&["nodes"])["items"]
        .as_array()
        .expect("nodes")
        .iter()
        .filter_map(|n| n["metadata"]["name"].as_str().map(String::from))
        .find(|n| n != "node2")
        .expect("first node");
    wait_for(
        Duration::from_secs(60),
        "4 ready pods on the first node",
        || (on(&first) == 4).then_some(()),
    );

    // The dead agent's containers and sandboxes are removed like after a crash of a
    // real node: `skiff killall` in its namespace.
    let out = net
        .command(skiff())
        .args(["killall", "--data-dir"])
        .arg(agent.data.path())
        .output()
        .expect("killall");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    cluster.kubectl_ok(&["delete", "deployment", "spread"]);
}

const SPREAD: &str = r#"
apiVersion: apps/v1
kind: Deployment
metadata: {name: spread}
spec:
  replicas: 4
  selector: {matchLabels: {app: spread}}
  template:
    metadata: {labels: {app: spread}}
    spec:
      containers:
      - name: sleeper
        image: busybox:latest
        imagePullPolicy: Never
        command: ["sh", "-c", "echo started; sleep 3600"]
        resources: {requests: {cpu: 100m, memory: 32Mi}}
"#;

/// The second node's image store starts as a copy of the first one's (like loading the
/// same image on both machines).
fn copy_image_store(from: &Path, to: &Path) {
    let status = Command::new("cp")
        .arg("-a")
        .arg(from.join("images"))
        .arg(to.join("images"))
        .status()
        .expect("cp");
    assert!(status.success());
}

/// A `docker-registry` on a free loopback port behind htpasswd Basic auth; killed on drop.
struct Registry {
    child: std::process::Child,
    port: u16,
    dir: tempfile::TempDir,
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Registry {
    fn start(user: &str, password: &str) -> Registry {
        let dir = tempfile::tempdir().expect("tempdir");
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("free port")
            .port();
        let htpasswd = Command::new("htpasswd")
            .args(["-Bbn", user, password])
            .output()
            .expect("htpasswd");
        assert!(htpasswd.status.success());
        std::fs::write(dir.path().join("htpasswd"), &htpasswd.stdout).expect("htpasswd file");
        let config = format!(
            "version: 0.1\nlog:\n  level: warn\n  accesslog:\n    disabled: true\nstorage:\n  filesystem:\n    rootdirectory: {}\nhttp:\n  addr: 127.0.0.1:{port}\nauth:\n  htpasswd:\n    realm: skiff\n    path: {}\n",
            dir.path().join("storage").display(),
            dir.path().join("htpasswd").display()
        );
        std::fs::write(dir.path().join("config.yml"), config).expect("config");
        let child = Command::new("docker-registry")
            .arg("serve")
            .arg(dir.path().join("config.yml"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("docker-registry");
        let reg = Registry { child, port, dir };
        wait_for(Duration::from_secs(20), "the registry listening", || {
            TcpStream::connect(("127.0.0.1", port)).ok().map(|_| ())
        });
        reg
    }

    /// `skopeo copy` of an OCI archive to `<registry>/<name>`.
    fn push(&self, archive: &[u8], name: &str, creds: &str) {
        let file = self.dir.path().join("push.tar");
        std::fs::write(&file, archive).expect("archive");
        let out = Command::new("skopeo")
            .args([
                "--insecure-policy",
                "copy",
                "--quiet",
                "--dest-tls-verify=false",
            ])
            .arg(format!("--dest-creds={creds}"))
            .arg(format!("oci-archive:{}", file.display()))
            .arg(format!("docker://127.0.0.1:{}/{name}", self.port))
            .output()
            .expect("skopeo");
        assert!(
            out.status.success(),
            "skopeo: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

#[test]
fn pods_pull_their_image_from_a_registry_with_a_pull_secret() {
    if let Some(why) = unsupported() {
        eprintln!("skipping: {why}");
        return;
    }
    for tool in [
        "/usr/bin/docker-registry",
        "/usr/bin/skopeo",
        "/usr/bin/htpasswd",
    ] {
        if !Path::new(tool).exists() {
            eprintln!("skipping: {tool} missing (make test installs it)");
            return;
        }
    }
    let registry = Registry::start("ml", "s3cret-pw");
    let image = TestImage::busybox("shell:v1")
        .expect("busybox")
        .cmd(&["/bin/busybox", "sleep", "3600"])
        .oci_archive()
        .expect("archive");
    registry.push(&image, "tools/shell:v1", "ml:s3cret-pw");
    // A tag nobody pulls with credentials (a pulled image is local afterwards, and
    // IfNotPresent would use it without asking the registry, as on Kubernetes).
    registry.push(&image, "tools/shell:v2", "ml:s3cret-pw");
    let cluster = oci_cluster(
        82,
        "skt4",
        &[
            "--lb-address",
            "127.0.0.1",
            "--node-port-address",
            "127.0.0.1",
        ],
    );
    let server = format!("127.0.0.1:{}", registry.port);
    cluster.kubectl_ok(&[
        "create",
        "secret",
        "docker-registry",
        "regcred",
        &format!("--docker-server={server}"),
        "--docker-username=ml",
        "--docker-password=s3cret-pw",
    ]);
    let pod = |name: &str, secret: bool, tag: &str| {
        let secrets = if secret {
            "\n  imagePullSecrets: [{name: regcred}]"
        } else {
            ""
        };
        format!(
            "apiVersion: v1\nkind: Pod\nmetadata: {{name: {name}}}\nspec:{secrets}\n  containers:\n  - name: shell\n    image: {server}/tools/shell:{tag}\n"
        )
    };
    cluster.apply(&pod("with-secret", true, "v1"));
    cluster.apply(&pod("without-secret", false, "v2"));
    wait_for(Duration::from_secs(60), "the pulled pod running", || {
        let p = cluster.get_json(&["pod", "with-secret"]);
        (p["status"]["phase"] == "Running").then_some(())
    });
    let events = cluster.kubectl_ok(&[
        "get",
        "events",
        "--field-selector",
        "involvedObject.name=with-secret",
    ]);
    assert!(events.contains("Successfully pulled image"), "{events}");
    let waiting = wait_for(
        Duration::from_secs(60),
        "ImagePullBackOff without the secret",
        || {
            let p = cluster.get_json(&["pod", "without-secret"]);
            let w = p["status"]["containerStatuses"][0]["state"]["waiting"].clone();
            (w["reason"] == "ImagePullBackOff").then_some(w)
        },
    );
    assert!(
        waiting["message"]
            .as_str()
            .is_some_and(|m| m.contains("unauthorized")),
        "{waiting}"
    );
    cluster.kubectl_ok(&["delete", "pod", "--all", "--grace-period=1"]);
}

/// The `yaml` block of the serving README's "Container image" section.
fn serving_readme_manifests() -> &'static str {
    let section = SERVING_README
        .split("## Container image")
        .nth(1)
        .expect("the README's Container image section");
    let start = section.find("```yaml\n").expect("a yaml block") + "```yaml\n".len();
    let len = section[start..]
        .find("```")
        .expect("the end of the yaml block");
    &section[start..start + len]
}

/// `POST /v2/models/add/infer` of a 2x2 FP32 tensor: the whole answer.
fn infer_add(addr: &str) -> Result<serde_json::Value, String> {
    let body = r#"{"inputs":[{"name":"x","shape":[2,2],"datatype":"FP32","data":[1,2,3,4]}]}"#;
    let (_, answer) = request(addr, "POST", "/v2/models/add/infer", body)?;
    serde_json::from_str(&answer).map_err(|e| format!("body {answer:?}: {e}"))
}

/// What a user does with the model server once the cluster runs images: `skiff images
/// build-serve --import`, then the Deployment and Service of crates/skiff-serving/README.md
/// with a model directory of the node. The server runs from its own image in a pod, answers
/// through the Service, sizes its threads by the container's CPU limit, and serves a version
/// copied into the directory without a restart.
#[test]
fn skiff_serve_image_runs_the_readme_deployment() {
    if let Some(why) = unsupported() {
        eprintln!("skipping: {why}");
        return;
    }
    let cluster = oci_cluster(84, "skt5", &[]);
    let out = Command::new(skiff())
        .args(["images", "build-serve", "--import", "--data-dir"])
        .arg(cluster.data_dir())
        .output()
        .expect("skiff images build-serve");
    assert!(
        out.status.success(),
        "build-serve failed (it needs the venv's onnxruntime, which make test installs): {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let models = tempfile::tempdir().expect("tempdir");
    let model = skiff_serving::backend::conformance::add_model();
    // A version appears whole (a rename), as a deployment tool would publish it.
    let publish = |version: u32| {
        let staging =
            tempfile::tempdir_in(models.path().parent().expect("parent")).expect("staging dir");
        std::fs::write(staging.path().join("model.onnx"), &model).expect("model file");
        let dir = models.path().join("add");
        std::fs::create_dir_all(&dir).expect("model dir");
        std::fs::rename(staging.keep(), dir.join(version.to_string())).expect("publishing");
    };
    publish(1);
    let manifests =
        serving_readme_manifests().replace("/srv/models", &models.path().to_string_lossy());
    cluster.apply(&manifests);
    wait_ready(&cluster, "app=iris", 1, Duration::from_secs(90));

    let service = cluster.get_json(&["service", "iris"]);
    let ip = service["spec"]["clusterIP"].as_str().expect("clusterIP");
    let addr = format!("{ip}:80");
    let answer = wait_for(
        Duration::from_secs(20),
        "an answer through the Service",
        || infer_add(&addr).ok(),
    );
    assert_eq!(answer["model_name"], "add", "{answer}");
    assert_eq!(answer["model_version"], "1", "{answer}");
    let output = |a: &serde_json::Value, name: &str| {
        a["outputs"]
            .as_array()
            .and_then(|o| o.iter().find(|t| t["name"] == name))
            .map(|t| t["data"].clone())
    };
    assert_eq!(
        output(&answer, "sum"),
        Some(serde_json::json!([11.0, 22.0, 13.0, 24.0])),
        "{answer}"
    );
    assert_eq!(
        output(&answer, "double"),
        Some(serde_json::json!([2.0, 4.0, 6.0, 8.0])),
        "{answer}"
    );

    // The container's limit is one CPU: one inference thread, whatever the node has. The log
    // reaches `kubectl logs` as plain text.
    let logs = cluster.kubectl_ok(&["logs", "deployment/iris"]);
    assert!(
        logs.lines()
            .any(|l| l.contains("skiff serve ready") && l.contains("threads=1")),
        "{logs}"
    );
    assert!(!logs.contains('\x1b'), "escape codes in the log: {logs:?}");

    // A new version in the node's directory is served without a restart.
    publish(2);
    wait_for(Duration::from_secs(30), "version 2 served", || {
        infer_add(&addr).ok().filter(|a| a["model_version"] == "2")
    });
    let pod = &ready_pods(&cluster, "app=iris")[0];
    assert_eq!(pod["status"]["containerStatuses"][0]["restartCount"], 0);
}
