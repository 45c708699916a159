//! The node agent with the real `oci` runtime (runc) and images from the local store:
//! volumes and /etc files inside the container, exec probes, resource limits (OOMKilled),
//! and nothing left behind. Its own `main` (no libtest harness) because the runtime
//! re-executes this binary as the container shim (`<exe> shim <dir>`). Skipped unless
//! running as root with runc installed.

use std::future::Future;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::{ConfigMap, Event, Pod};
use kube::Api;
use kube::api::{DeleteParams, ListParams, PostParams};
use serde_json::{Value, json};
use skiff_node::AgentConfig;
use skiff_runtime::images::ImageStore;
use skiff_runtime::network::HostNetwork;
use skiff_runtime::testimages::TestImage;
use skiff_runtime::{ExecSpec, OciConfig, OciRuntime, Runtime};
use skiff_server::ServerConfig;

const RUNC: &str = "/usr/sbin/runc";
const IMAGE: &str = "skiff-test/busybox:agent";
const NODE: &str = "oci-node";
const TIMEOUT: Duration = Duration::from_secs(60);

/// The tests of this binary, by name.
const TESTS: [&str; 2] = ["oci_pod_lifecycle", "cni_pod_network"];

/// The test-harness command line that `cargo test` and `cargo nextest` use: `--list` (nextest
/// adds `--format terse`, and `--ignored` for the ignored ones, of which there are none here),
/// name filters, `--skip`, `--exact`; other flags are accepted and ignored.
struct Args {
    list: bool,
    ignored: bool,
    exact: bool,
    filters: Vec<String>,
    skips: Vec<String>,
}

impl Args {
    fn parse(args: impl Iterator<Item = String>) -> Args {
        let mut out = Args {
            list: false,
            ignored: false,
            exact: false,
            filters: Vec::new(),
            skips: Vec::new(),
        };
        let mut args = args.peekable();
        while let Some(a) = args.next() {
            match a.as_str() {
                "--list" => out.list = true,
                "--ignored" => out.ignored = true,
                "--exact" => out.exact = true,
                "--skip" => out.skips.extend(args.next()),
                // Flags that take a value: skip it so that it is not read as a filter.
                "--format" | "--logfile" | "--test-threads" | "--color" | "--shuffle-seed"
                | "-Z" => {
                    args.next();
                }
                f if f.starts_with('-') => {}
                _ => out.filters.push(a),
            }
        }
        out
    }

    fn selects(&self, name: &str) -> bool {
        let matches = |f: &String| {
            if self.exact {
                f == name
            } else {
                name.contains(f.as_str())
            }
        };
        !self.ignored
            && (self.filters.is_empty() || self.filters.iter().any(matches))
            && !self.skips.iter().any(matches)
    }
}

fn main() {
    let mut raw = std::env::args_os().skip(1);
    if raw.next().is_some_and(|a| a == "shim") {
        std::process::exit(skiff_runtime::shim_main(raw));
    }
    let args = Args::parse(std::env::args().skip(1));
    let selected: Vec<&str> = TESTS.into_iter().filter(|n| args.selects(n)).collect();
    if args.list {
        for n in selected {
            println!("{n}: test");
        }
        return;
    }
    if selected.is_empty() {
        return;
    }
    if !rustix::process::geteuid().is_root() {
        eprintln!("skipping oci test: not running as root");
        return;
    }
    if !Path::new(RUNC).exists() {
        eprintln!("skipping oci test: {RUNC} not installed");
        return;
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio");
    for name in selected {
        match name {
            "oci_pod_lifecycle" => rt.block_on(oci_pod_lifecycle()),
            _ if !Path::new("/usr/lib/cni/bridge").exists() => {
                eprintln!(
                    "skipping cni test: /usr/lib/cni/bridge missing (containernetworking-plugins)"
                );
                continue;
            }
            _ => rt.block_on(cni_pod_network()),
        }
        println!("test {name} ... ok");
    }
}

async fn wait_for<T, F, Fut>(what: &str, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + TIMEOUT;
    loop {
        if let Some(v) = f().await {
            return v;
        }
        if tokio::time::Instant::now() > deadline {
            panic!("timed out waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The runtime's configuration: the shim is this binary (see `main`), called through a
/// symlink because the runtime refuses to treat a cargo test binary as its own shim.
fn oci_config(dir: &Path) -> OciConfig {
    let exe = std::env::current_exe().expect("current exe");
    let shim = dir.join("agent-test-shim");
    std::os::unix::fs::symlink(&exe, &shim).expect("shim symlink");
    OciConfig::new(dir.join("oci"), RUNC).with_shim(shim, vec!["shim".into()])
}

/// Removes every container of the runtime, whatever happened.
struct Cleanup(OciRuntime);

impl Drop for Cleanup {
    fn drop(&mut self) {
        for id in self.0.ids().unwrap_or_default() {
            if let Err(e) = self.0.remove_blocking(&id) {
                eprintln!("cleanup of {id} failed: {e}");
            }
            if let Some(k) = skiff_node::ids::parse_container_id(&id) {
                skiff_node::cgroups::remove_pod(&k.pod_uid);
            }
        }
    }
}

fn status(p: &Pod) -> Value {
    serde_json::to_value(p.status.clone().unwrap_or_default()).expect("status json")
}

fn ready(p: &Pod) -> bool {
    p.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

fn pod_cgroups(uid: &str) -> Vec<std::path::PathBuf> {
    std::fs::read_dir("/sys/fs/cgroup")
        .map(|rd| {
            rd.flatten()
                .map(|e| e.path().join(format!("skiff/pod{uid}")))
                .chain([Path::new("/sys/fs/cgroup").join(format!("skiff/pod{uid}"))])
                .filter(|p| p.exists())
                .collect()
        })
        .unwrap_or_default()
}

async fn oci_pod_lifecycle() {
    let dir = tempfile::tempdir().expect("tempdir");
    let images = ImageStore::open(dir.path().join("images")).expect("image store");
    let archive = TestImage::busybox(IMAGE)
        .expect("busybox image")
        .oci_archive()
        .expect("archive");
    images.import(archive.as_slice()).expect("import");
    let oci = OciRuntime::with_config(oci_config(dir.path()), images.clone()).expect("oci runtime");
    let _cleanup = Cleanup(oci.clone());
    let runtime: Arc<dyn Runtime> = Arc::new(oci.clone());

    let running = skiff_server::start(ServerConfig {
        port: 0,
        controllers: false,
        ..ServerConfig::new(dir.path().join("server"))
    })
    .await
    .expect("server");
    let client = running.client.clone();
    let mut config = AgentConfig::new(dir.path().join("pods"));
    config.node_name = NODE.into();
    config.retry_interval = Duration::from_millis(200);
    config.runtime_version = Some("runc://test".into());
    let agent = skiff_node::run(
        client.clone(),
        runtime.clone(),
        Arc::new(HostNetwork {
            ip: "127.0.0.1".parse().expect("ip"),
        }),
        Some(images),
        config,
    )
    .await
    .expect("agent");

    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), "default");
    let cm: ConfigMap = serde_json::from_value(json!({
        "metadata": {"name": "model"}, "data": {"model.conf": "threshold=0.5\n"}
    }))
    .expect("cm");
    cms.create(&PostParams::default(), &cm)
        .await
        .expect("create cm");
    let out = dir.path().join("out");
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    let bb = "/bin/busybox";
    let script = format!(
        "{bb} cat /etc/model/model.conf > /out/conf; {bb} env > /out/env; \
         {bb} cat /etc/hosts > /out/hosts; {bb} hostname > /out/hostname; \
         {bb} touch /tmp/ready; {bb} touch /cache/x; exec {bb} sleep 1000"
    );
    let pod: Pod = serde_json::from_value(json!({
        "metadata": {"name": "app", "namespace": "default"},
        "spec": {"nodeName": NODE, "terminationGracePeriodSeconds": 2, "containers": [{
            "name": "main", "image": IMAGE, "imagePullPolicy": "Never",
            "command": [bb, "sh", "-c", script],
            "env": [{"name": "FROM_CM", "valueFrom": {"configMapKeyRef": {"name": "model", "key": "model.conf"}}}],
            "resources": {"limits": {"memory": "64Mi", "cpu": "500m"}},
            "readinessProbe": {"exec": {"command": [bb, "cat", "/tmp/ready"]}, "periodSeconds": 1, "failureThreshold": 1},
            "volumeMounts": [
                {"name": "model", "mountPath": "/etc/model"},
                {"name": "out", "mountPath": "/out"},
                {"name": "cache", "mountPath": "/cache"}
            ]
        }], "volumes": [
            {"name": "model", "configMap": {"name": "model"}},
            {"name": "out", "hostPath": {"path": out.display().to_string(), "type": "DirectoryOrCreate"}},
            {"name": "cache", "emptyDir": {"medium": "Memory"}}
        ]}
    }))
    .expect("pod");
    let pod = pods
        .create(&PostParams::default(), &pod)
        .await
        .expect("create pod");
    let uid = pod.metadata.uid.clone().expect("uid");

    let p = wait_for("app Ready", || async {
        pods.get_opt("app").await.ok()?.filter(ready)
    })
    .await;
    let st = status(&p);
    assert_eq!(
        st["containerStatuses"][0]["containerID"],
        format!("oci://{uid}_main_0")
    );
    let image_id = st["containerStatuses"][0]["imageID"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert!(image_id.contains("@sha256:"), "{image_id}");
    let read = |name: &str| std::fs::read_to_string(out.join(name)).unwrap_or_default();
    wait_for("container output", || async {
        (!read("hostname").is_empty()).then_some(())
    })
    .await;
    assert_eq!(
        read("conf"),
        "threshold=0.5\n",
        "configMap volume inside the container"
    );
    assert!(
        read("env").contains("FROM_CM=threshold=0.5"),
        "{}",
        read("env")
    );
    assert!(
        read("hosts").contains("127.0.0.1\tapp"),
        "{}",
        read("hosts")
    );
    assert_eq!(read("hostname"), "app\n");

    // The exec readiness probe follows the file inside the container.
    let id = format!("{uid}_main_0");
    let mut rm = runtime
        .exec(
            &id,
            &ExecSpec {
                command: vec![bb.into(), "rm".into(), "/tmp/ready".into()],
                tty: false,
                stdin: false,
            },
        )
        .await
        .expect("exec");
    drop(rm.stdin.take());
    assert_eq!(rm.exit.await.expect("exit"), 0);
    wait_for("app not ready", || async {
        let p = pods.get_opt("app").await.ok()??;
        (!ready(&p)).then_some(())
    })
    .await;
    let events: Api<Event> = Api::namespaced(client.clone(), "default");
    wait_for("Unhealthy event", || async {
        let list = events.list(&ListParams::default()).await.ok()?;
        list.items
            .iter()
            .any(|e| {
                e.reason.as_deref() == Some("Unhealthy")
                    && e.message
                        .as_deref()
                        .is_some_and(|m| m.starts_with("Readiness probe failed"))
            })
            .then_some(())
    })
    .await;

    // Past its memory limit, a container is OOMKilled.
    let hog: Pod = serde_json::from_value(json!({
        "metadata": {"name": "hog", "namespace": "default"},
        "spec": {"nodeName": NODE, "restartPolicy": "Never", "containers": [{
            "name": "main", "image": IMAGE, "imagePullPolicy": "Never",
            "command": [bb, "sh", "-c", format!("{bb} dd if=/dev/zero of=/dev/null bs=128M count=1")],
            "resources": {"limits": {"memory": "32Mi"}}
        }]}
    }))
    .expect("hog");
    let hog = pods
        .create(&PostParams::default(), &hog)
        .await
        .expect("create hog");
    let hog_uid = hog.metadata.uid.clone().expect("uid");
    let p = wait_for("hog terminated", || async {
        let p = pods.get_opt("hog").await.ok()??;
        (p.status.as_ref()?.phase.as_deref() == Some("Failed")).then_some(p)
    })
    .await;
    let t = &status(&p)["containerStatuses"][0]["state"]["terminated"];
    assert_eq!(t["reason"], "OOMKilled", "{t:#}");
    assert_eq!(t["exitCode"], 137);

    // Deleting leaves nothing: containers, pod directories, mounts, cgroups.
    for name in ["app", "hog"] {
        pods.delete(name, &DeleteParams::default())
            .await
            .expect("delete");
    }
    wait_for("pods removed", || async {
        let n = pods.list(&ListParams::default()).await.ok()?.items.len();
        (n == 0).then_some(())
    })
    .await;
    assert!(oci.ids().expect("ids").is_empty(), "containers left");
    for u in [&uid, &hog_uid] {
        assert!(
            !dir.path().join("pods").join(u).exists(),
            "pod dir of {u} left"
        );
        assert!(
            pod_cgroups(u).is_empty(),
            "cgroups left: {:?}",
            pod_cgroups(u)
        );
    }
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").expect("mountinfo");
    let pods_dir = dir.path().join("pods").display().to_string();
    assert!(!mounts.contains(&pods_dir), "mounts left under {pods_dir}");

    agent.shutdown().await;
    running.shutdown().await;
}

/// The test's own CNI network (bridge, subnets), removed on drop.
struct TestNet(skiff_runtime::network::CniNetwork);

impl Drop for TestNet {
    fn drop(&mut self) {
        for id in self.0.list_blocking().unwrap_or_default() {
            let _ = self.0.teardown_blocking(&id);
        }
        if let Err(e) = self.0.teardown_host() {
            eprintln!("cleanup of the test network: {e}");
        }
    }
}

/// Pods in their own network namespaces through CNI: the pod IP is reported, probes reach
/// the pod there, and deletion removes the namespace.
async fn cni_pod_network() {
    use skiff_runtime::network::{CniConfig, CniNetwork, Ipv4Cidr, PodNetwork};
    use std::net::Ipv4Addr;
    let dir = tempfile::tempdir().expect("tempdir");
    let pid = std::process::id() % 100_000;
    let config = CniConfig {
        plugin_dir: "/usr/lib/cni".into(),
        state_dir: dir.path().join("cni"),
        netns_dir: dir.path().join("netns"),
        network_name: "skn-agent".into(),
        bridge: format!("ska-{pid}"),
        pod_subnet: Ipv4Cidr::new(Ipv4Addr::new(10, 199, 40, 0), 24).expect("subnet"),
        cluster_cidr: Ipv4Cidr::new(Ipv4Addr::new(10, 199, 40, 0), 23).expect("cluster"),
        service_cidr: Ipv4Cidr::new(Ipv4Addr::new(10, 198, 40, 0), 24).expect("services"),
        mtu: None,
    };
    let cni = CniNetwork::new(config).expect("cni");
    let _net = TestNet(cni.clone());
    cni.ensure_host_routes().expect("host routes");
    let network: Arc<dyn PodNetwork> = Arc::new(cni);

    let images = ImageStore::open(dir.path().join("images")).expect("image store");
    let archive = TestImage::busybox(IMAGE)
        .expect("busybox image")
        .oci_archive()
        .expect("archive");
    images.import(archive.as_slice()).expect("import");
    let oci = OciRuntime::with_config(oci_config(dir.path()), images.clone()).expect("oci runtime");
    let _cleanup = Cleanup(oci.clone());
    let running = skiff_server::start(ServerConfig {
        port: 0,
        controllers: false,
        ..ServerConfig::new(dir.path().join("server"))
    })
    .await
    .expect("server");
    let client = running.client.clone();
    let mut config = AgentConfig::new(dir.path().join("pods"));
    config.node_name = NODE.into();
    config.retry_interval = Duration::from_millis(200);
    let agent = skiff_node::run(
        client.clone(),
        Arc::new(oci.clone()),
        network.clone(),
        Some(images),
        config,
    )
    .await
    .expect("agent");

    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    let bb = "/bin/busybox";
    let script = format!(
        "{bb} mkdir -p /www && echo ok > /www/healthz && exec {bb} httpd -f -p 8080 -h /www"
    );
    let pod: Pod = serde_json::from_value(json!({
        "metadata": {"name": "web", "namespace": "default"},
        "spec": {"nodeName": NODE, "terminationGracePeriodSeconds": 2, "containers": [{
            "name": "main", "image": IMAGE, "imagePullPolicy": "Never",
            "command": [bb, "sh", "-c", script],
            "ports": [{"containerPort": 8080}],
            "readinessProbe": {"httpGet": {"path": "/healthz", "port": 8080}, "periodSeconds": 1},
            "livenessProbe": {"tcpSocket": {"port": 8080}, "periodSeconds": 1}
        }]}
    }))
    .expect("pod");
    pods.create(&PostParams::default(), &pod)
        .await
        .expect("create pod");
    let p = wait_for("web Ready through its pod IP", || async {
        pods.get_opt("web").await.ok()?.filter(ready)
    })
    .await;
    let ip = status(&p)["podIP"].as_str().unwrap_or_default().to_string();
    assert!(ip.starts_with("10.199.40."), "pod IP {ip}");
    let uid = p.metadata.uid.clone().expect("uid");
    assert_eq!(network.list().await.expect("sandboxes"), vec![uid.clone()]);
    let netns = agent.lookup().pod_netns("default", "web").expect("lookup");
    assert!(
        netns.is_some_and(|n| n.exists()),
        "pod netns for port-forward"
    );

    pods.delete("web", &DeleteParams::default())
        .await
        .expect("delete");
    wait_for("web removed", || async {
        pods.get_opt("web").await.ok()?.is_none().then_some(())
    })
    .await;
    assert!(
        network.list().await.expect("sandboxes").is_empty(),
        "sandbox left"
    );
    assert!(oci.ids().expect("ids").is_empty(), "containers left");
    agent.shutdown().await;
    running.shutdown().await;
}
