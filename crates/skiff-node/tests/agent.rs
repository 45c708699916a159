//! The node agent against an in-process control plane, running real host processes through
//! the `process` runtime on the host network (127.0.0.1).

use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{ConfigMap, Event, Node, Pod, Secret};
use kube::Api;
use kube::api::{DeleteParams, ListParams, PostParams};
use serde_json::{Value, json};
use skiff_node::{AgentConfig, AgentHandle};
use skiff_runtime::Runtime;
use skiff_runtime::network::HostNetwork;
use skiff_runtime::process::ProcessRuntime;
use skiff_server::{Running, ServerConfig};

const TIMEOUT: Duration = Duration::from_secs(30);
const NODE: &str = "node-a";

struct Env {
    dir: tempfile::TempDir,
    running: Option<Running>,
    client: kube::Client,
    runtime: Arc<ProcessRuntime>,
    agent: Option<AgentHandle>,
    images: Option<skiff_runtime::images::ImageStore>,
}

/// Kills what a failed test left running (a passing test has removed it already).
impl Drop for Env {
    fn drop(&mut self) {
        let left = futures::executor::block_on(self.runtime.list()).unwrap_or_default();
        for c in left {
            if let Some(pid) = c.pid.and_then(|p| rustix::process::Pid::from_raw(p as i32)) {
                let _ = rustix::process::kill_process_group(pid, rustix::process::Signal::KILL);
            }
        }
    }
}

impl Env {
    async fn start() -> Env {
        Env::start_with(|_| {}).await
    }

    /// Starts with an image store prepared by `images` before the agent starts.
    async fn start_with_images(images: impl FnOnce(&skiff_runtime::images::ImageStore)) -> Env {
        Env::start_with(|env| {
            let store = skiff_runtime::images::ImageStore::open(env.dir.path().join("images"))
                .expect("image store");
            images(&store);
            env.images = Some(store);
        })
        .await
    }

    async fn start_with(before_agent: impl FnOnce(&mut Env)) -> Env {
        let dir = tempfile::tempdir().expect("tempdir");
        let running = skiff_server::start(ServerConfig {
            port: 0,
            controllers: false,
            ..ServerConfig::new(dir.path().join("server"))
        })
        .await
        .expect("server starts");
        let client = running.client.clone();
        let runtime =
            Arc::new(ProcessRuntime::new(dir.path().join("containers")).expect("runtime"));
        let mut env = Env {
            dir,
            running: Some(running),
            client,
            runtime,
            agent: None,
            images: None,
        };
        before_agent(&mut env);
        env.start_agent().await;
        env
    }

    fn config(&self) -> AgentConfig {
        let mut c = AgentConfig::new(self.dir.path().join("pods"));
        c.node_name = NODE.into();
        c.lease_renew_interval = Duration::from_millis(200);
        c.status_update_interval = Duration::from_millis(200);
        c.backoff_base = Duration::from_millis(100);
        c.backoff_max = Duration::from_millis(800);
        c.retry_interval = Duration::from_millis(200);
        c.volume_resync_interval = Duration::from_millis(300);
        c.pod_cidr = Some("10.42.0.0/24".into());
        c
    }

    async fn start_agent(&mut self) {
        let runtime: Arc<dyn Runtime> = self.runtime.clone();
        let handle = skiff_node::run(
            self.client.clone(),
            runtime,
            Arc::new(HostNetwork {
                ip: "127.0.0.1".parse().expect("ip"),
            }),
            self.images.clone(),
            self.config(),
        )
        .await
        .expect("agent starts");
        self.agent = Some(handle);
    }

    fn pods(&self) -> Api<Pod> {
        Api::namespaced(self.client.clone(), "default")
    }

    /// A scratch directory shared with the test's processes.
    fn scratch(&self, name: &str) -> PathBuf {
        let p = self.dir.path().join("scratch").join(name);
        std::fs::create_dir_all(&p).expect("scratch dir");
        p
    }

    async fn create_pod(&self, pod: Value) -> Pod {
        let pod: Pod = serde_json::from_value(pod).expect("pod json");
        self.pods()
            .create(&PostParams::default(), &pod)
            .await
            .expect("create pod")
    }

    async fn pod(&self, name: &str) -> Option<Pod> {
        self.pods().get_opt(name).await.expect("get pod")
    }

    async fn events_of(&self, name: &str) -> Vec<Event> {
        let api: Api<Event> = Api::namespaced(self.client.clone(), "default");
        api.list(&ListParams::default())
            .await
            .expect("events")
            .items
            .into_iter()
            .filter(|e| e.involved_object.name.as_deref() == Some(name))
            .collect()
    }

    /// Waits for an event about pod `pod` with `reason` whose message satisfies `pred`
    /// (events are written in the background).
    async fn event(&self, pod: &str, reason: &str, pred: impl Fn(&str) -> bool) -> Event {
        wait_for(&format!("{reason} event for {pod}"), || async {
            self.events_of(pod).await.into_iter().find(|e| {
                e.reason.as_deref() == Some(reason) && pred(e.message.as_deref().unwrap_or(""))
            })
        })
        .await
    }

    async fn stop(mut self) {
        // Pods first, so no process outlives the test.
        let pods = self
            .pods()
            .list(&ListParams::default())
            .await
            .map(|l| l.items)
            .unwrap_or_default();
        for p in pods {
            let name = p.metadata.name.clone().unwrap_or_default();
            let _ = self.pods().delete(&name, &DeleteParams::default()).await;
        }
        let _ = wait_for("all pods gone", || async {
            let n = self
                .pods()
                .list(&ListParams::default())
                .await
                .map(|l| l.items.len())
                .unwrap_or(0);
            (n == 0).then_some(())
        })
        .await;
        if let Some(a) = self.agent.take() {
            a.shutdown().await;
        }
        for c in self.runtime.list().await.unwrap_or_default() {
            let _ = self.runtime.remove(&c.id).await;
        }
        if let Some(r) = self.running.take() {
            r.shutdown().await;
        }
    }
}

/// Polls `f` until it yields a value, failing the test after [`TIMEOUT`].
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

fn status(p: &Pod) -> Value {
    serde_json::to_value(p.status.clone().unwrap_or_default()).expect("status json")
}

fn condition(p: &Pod, type_: &str) -> Option<String> {
    p.status
        .as_ref()?
        .conditions
        .as_ref()?
        .iter()
        .find(|c| c.type_ == type_)
        .map(|c| c.status.clone())
}

fn phase(p: &Pod) -> String {
    p.status
        .as_ref()
        .and_then(|s| s.phase.clone())
        .unwrap_or_default()
}

fn pod_json(name: &str, script: &str, extra: Value) -> Value {
    let mut pod = json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": "default", "labels": {"app": name}},
        "spec": {
            "nodeName": NODE,
            "terminationGracePeriodSeconds": 10,
            "containers": [{
                "name": "main",
                "image": "busybox:1.36",
                "command": ["/bin/busybox", "sh", "-c", script],
            }],
        },
    });
    merge(&mut pod, extra);
    pod
}

/// JSON merge (objects recursively, everything else replaced).
fn merge(a: &mut Value, b: Value) {
    match (a, b) {
        (Value::Object(a), Value::Object(b)) => {
            for (k, v) in b {
                merge(a.entry(k).or_insert(Value::Null), v);
            }
        }
        (a, b) => *a = b,
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

fn mounted(path: &Path) -> bool {
    let info = std::fs::read_to_string("/proc/self/mountinfo").expect("mountinfo");
    let p = path.display().to_string();
    info.lines()
        .any(|l| l.split(' ').nth(4) == Some(p.as_str()))
}

fn pid_alive(pid: &str) -> bool {
    Path::new("/proc").join(pid.trim()).exists()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_registers_with_capacity_and_renews_its_lease() {
    let env = Env::start().await;
    let nodes: Api<Node> = Api::all(env.client.clone());
    let node = wait_for("node status", || async {
        let n = nodes.get_opt(NODE).await.expect("get node")?;
        n.status.as_ref()?.capacity.as_ref()?;
        Some(n)
    })
    .await;
    let st = serde_json::to_value(node.status.clone().expect("status")).expect("json");
    for k in ["cpu", "memory", "pods", "ephemeral-storage"] {
        assert!(st["capacity"].get(k).is_some(), "capacity {k}: {st:#}");
        assert!(st["allocatable"].get(k).is_some(), "allocatable {k}");
    }
    assert_eq!(st["capacity"]["pods"], "110");
    assert_eq!(st["nodeInfo"]["kubeletVersion"], "v1.32.0-skiff");
    assert_eq!(st["nodeInfo"]["containerRuntimeVersion"], "process://");
    assert_eq!(st["nodeInfo"]["operatingSystem"], "linux");
    assert_eq!(st["daemonEndpoints"]["kubeletEndpoint"]["Port"], 10250);
    let ready = st["conditions"]
        .as_array()
        .expect("conditions")
        .iter()
        .find(|c| c["type"] == "Ready")
        .cloned();
    assert_eq!(ready.expect("Ready")["status"], "True");
    let addrs = st["addresses"].as_array().expect("addresses");
    assert!(
        addrs
            .iter()
            .any(|a| a["type"] == "InternalIP" && a["address"] == "127.0.0.1")
    );
    assert!(
        addrs
            .iter()
            .any(|a| a["type"] == "Hostname" && a["address"] == NODE)
    );
    let labels = node.metadata.labels.clone().unwrap_or_default();
    assert_eq!(
        labels.get("kubernetes.io/hostname").map(String::as_str),
        Some(NODE)
    );
    assert_eq!(
        node.spec.and_then(|s| s.pod_cidr).as_deref(),
        Some("10.42.0.0/24")
    );

    // The node lifecycle controller marks a silent node Unknown; the agent corrects it
    // on its next status check, not a minute later.
    let unknown = json!({"status": {"conditions": [{"type": "Ready", "status": "Unknown",
        "reason": "NodeStatusUnknown", "message": "Kubelet stopped posting node status."}]}});
    nodes
        .patch_status(
            NODE,
            &kube::api::PatchParams::default(),
            &kube::api::Patch::Strategic(&unknown),
        )
        .await
        .expect("mark Unknown");
    wait_for("Ready again", || async {
        let n = nodes.get(NODE).await.ok()?;
        let c = n.status?.conditions?;
        c.iter()
            .any(|c| c.type_ == "Ready" && c.status == "True")
            .then_some(())
    })
    .await;

    let leases: Api<Lease> = Api::namespaced(env.client.clone(), "kube-node-lease");
    let first = wait_for("lease", || async {
        let l = leases.get_opt(NODE).await.expect("get lease")?;
        l.spec?.renew_time
    })
    .await;
    let lease = leases.get(NODE).await.expect("lease");
    let spec = lease.spec.expect("lease spec");
    assert_eq!(spec.holder_identity.as_deref(), Some(NODE));
    assert_eq!(spec.lease_duration_seconds, Some(40));
    wait_for("lease renewal", || async {
        let t = leases.get(NODE).await.ok()?.spec?.renew_time?;
        (t != first).then_some(())
    })
    .await;
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pod_runs_with_env_volumes_and_events_then_terminates_gracefully() {
    let env = Env::start().await;
    let cms: Api<ConfigMap> = Api::namespaced(env.client.clone(), "default");
    let cm: ConfigMap = serde_json::from_value(json!({
        "metadata": {"name": "settings"},
        "data": {"greeting": "hello", "model.conf": "threshold=0.5\n"}
    }))
    .expect("cm");
    cms.create(&PostParams::default(), &cm)
        .await
        .expect("create cm");
    let secrets: Api<Secret> = Api::namespaced(env.client.clone(), "default");
    let secret: Secret = serde_json::from_value(json!({
        "metadata": {"name": "creds"},
        "data": {"password": "czNjcjN0"}
    }))
    .expect("secret");
    secrets
        .create(&PostParams::default(), &secret)
        .await
        .expect("create secret");

    let scratch = env.scratch("web");
    // `$$$$` reaches the shell as `$$` (its pid): Kubernetes' expansion turns `$$` into `$`.
    let script = format!(
        "env > {d}/env.tmp && mv {d}/env.tmp {d}/env; echo $$$$ > {d}/pid; \
         trap 'echo bye > {d}/term; exit 0' TERM; while true; do /bin/busybox sleep 0.1; done",
        d = scratch.display()
    );
    let pod = env
        .create_pod(pod_json(
            "web",
            &script,
            json!({"spec": {
                "containers": [{
                    "name": "main",
                    "image": "busybox:1.36",
                    "command": ["/bin/busybox", "sh", "-c", script],
                    "env": [
                        {"name": "GREETING", "valueFrom": {"configMapKeyRef": {"name": "settings", "key": "greeting"}}},
                        {"name": "PASSWORD", "valueFrom": {"secretKeyRef": {"name": "creds", "key": "password"}}},
                        {"name": "MISSING", "valueFrom": {"secretKeyRef": {"name": "nope", "key": "x", "optional": true}}},
                        {"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
                        {"name": "POD_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}},
                        {"name": "APP", "valueFrom": {"fieldRef": {"fieldPath": "metadata.labels['app']"}}},
                        {"name": "MEM_MI", "valueFrom": {"resourceFieldRef": {"resource": "limits.memory", "divisor": "1Mi"}}},
                        {"name": "MESSAGE", "value": "$(GREETING) from $(POD_NAME), $$(GREETING)"}
                    ],
                    "envFrom": [{"prefix": "CFG_", "configMapRef": {"name": "settings"}}],
                    "resources": {"limits": {"memory": "64Mi", "cpu": "200m"}},
                    "volumeMounts": [{"name": "conf", "mountPath": "/etc/model"}]
                }],
                "volumes": [
                    {"name": "conf", "configMap": {"name": "settings", "items": [{"key": "model.conf", "path": "model.conf"}]}},
                    {"name": "scratch", "emptyDir": {}},
                    {"name": "mem", "emptyDir": {"medium": "Memory", "sizeLimit": "16Mi"}}
                ]
            }}),
        ))
        .await;
    let uid = pod.metadata.uid.clone().expect("uid");

    let running = wait_for("pod Running and Ready", || async {
        let p = env.pod("web").await?;
        (phase(&p) == "Running" && condition(&p, "Ready").as_deref() == Some("True")).then_some(p)
    })
    .await;
    let st = status(&running);
    assert_eq!(st["podIP"], "127.0.0.1");
    assert_eq!(st["hostIP"], "127.0.0.1");
    assert!(st["startTime"].is_string());
    assert_eq!(st["qosClass"], "Guaranteed");
    for c in ["Initialized", "ContainersReady", "PodScheduled"] {
        assert_eq!(condition(&running, c).as_deref(), Some("True"), "{c}");
    }
    let cs = &st["containerStatuses"][0];
    assert_eq!(cs["name"], "main");
    assert_eq!(cs["ready"], true);
    assert_eq!(cs["started"], true);
    assert_eq!(cs["restartCount"], 0);
    assert_eq!(cs["containerID"], format!("process://{uid}_main_0"));
    assert!(cs["state"]["running"]["startedAt"].is_string());

    let env_file = scratch.join("env");
    let vars = wait_for("env file", || async {
        std::fs::read_to_string(&env_file).ok()
    })
    .await;
    for want in [
        "GREETING=hello",
        "PASSWORD=s3cr3t",
        "POD_NAME=web",
        "POD_IP=127.0.0.1",
        "APP=web",
        "MEM_MI=64",
        "MESSAGE=hello from web, $(GREETING)",
        "CFG_greeting=hello",
        "KUBERNETES_SERVICE_HOST=10.43.0.1",
        "KUBERNETES_SERVICE_PORT=443",
        "KUBERNETES_PORT_443_TCP=tcp://10.43.0.1:443",
    ] {
        assert!(
            vars.lines().any(|l| l == want),
            "{want} missing in:\n{vars}"
        );
    }
    assert!(
        !vars.contains("MISSING="),
        "optional missing secret must be skipped"
    );

    let vol = env.dir.path().join("pods").join(&uid).join("volumes");
    assert_eq!(
        std::fs::read_to_string(vol.join("conf/model.conf")).expect("configMap file"),
        "threshold=0.5\n"
    );
    assert!(!vol.join("conf/greeting").exists(), "only the listed items");
    // An updated ConfigMap reaches the running pod's volume.
    let patch = json!({"data": {"model.conf": "threshold=0.9\n"}});
    cms.patch(
        "settings",
        &kube::api::PatchParams::default(),
        &kube::api::Patch::Merge(&patch),
    )
    .await
    .expect("update cm");
    wait_for("volume refreshed", || async {
        (std::fs::read_to_string(vol.join("conf/model.conf")).ok()? == "threshold=0.9\n")
            .then_some(())
    })
    .await;
    assert!(vol.join("scratch").is_dir());
    let mem = vol.join("mem");
    assert!(mounted(&mem), "emptyDir medium Memory is a tmpfs");

    // What the streaming server asks the agent.
    let lookup = env.agent.as_ref().expect("agent").lookup();
    let c = lookup
        .container("default", "web", None, false)
        .expect("lookup");
    assert_eq!(c.id, format!("{uid}_main_0"));
    assert_eq!(lookup.pod_netns("default", "web").expect("netns"), None);
    assert!(matches!(
        lookup.container("default", "web", Some("nope"), false),
        Err(skiff_node::streams::StreamError::BadRequest(_))
    ));
    assert!(matches!(
        lookup.container("default", "web", None, true),
        Err(skiff_node::streams::StreamError::BadRequest(_))
    ));
    assert!(matches!(
        lookup.container("default", "absent", None, false),
        Err(skiff_node::streams::StreamError::NotFound(_))
    ));
    let hosts = std::fs::read_to_string(env.dir.path().join("pods").join(&uid).join("etc-hosts"))
        .expect("hosts");
    assert!(hosts.contains("127.0.0.1\tweb"), "{hosts}");

    env.event("web", "Created", |m| m == "Created container: main")
        .await;
    let started = env.event("web", "Started", |_| true).await;
    assert_eq!(
        started.source.as_ref().and_then(|s| s.component.as_deref()),
        Some("kubelet")
    );
    assert_eq!(
        started.source.as_ref().and_then(|s| s.host.as_deref()),
        Some(NODE)
    );
    assert_eq!(started.message.as_deref(), Some("Started container main"));

    // Graceful deletion: SIGTERM reaches the process, which exits; the agent deletes the pod.
    let pid = std::fs::read_to_string(scratch.join("pid")).expect("pid");
    assert!(pid_alive(&pid));
    env.pods()
        .delete("web", &DeleteParams::default())
        .await
        .expect("delete");
    wait_for("pod removed", || async {
        env.pod("web").await.is_none().then_some(())
    })
    .await;
    assert_eq!(
        std::fs::read_to_string(scratch.join("term")).expect("TERM trapped"),
        "bye\n"
    );
    assert!(!pid_alive(&pid), "process {pid} still alive");
    assert!(
        env.runtime.list().await.expect("list").is_empty(),
        "containers left"
    );
    assert!(
        !env.dir.path().join("pods").join(&uid).exists(),
        "pod directory left"
    );
    env.event("web", "Killing", |m| m == "Stopping container main")
        .await;
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_config_map_is_a_create_container_config_error() {
    let env = Env::start().await;
    env.create_pod(pod_json(
        "needs-cm",
        "sleep 100",
        json!({"spec": {"containers": [{
            "name": "main", "image": "busybox:1.36",
            "command": ["/bin/busybox", "sleep", "100"],
            "env": [{"name": "X", "valueFrom": {"configMapKeyRef": {"name": "absent", "key": "k"}}}]
        }]}}),
    ))
    .await;
    let p = wait_for("CreateContainerConfigError", || async {
        let p = env.pod("needs-cm").await?;
        let st = status(&p);
        (st["containerStatuses"][0]["state"]["waiting"]["reason"] == "CreateContainerConfigError")
            .then_some(p)
    })
    .await;
    let st = status(&p);
    assert_eq!(
        st["containerStatuses"][0]["state"]["waiting"]["message"],
        "configmap \"absent\" not found"
    );
    assert_eq!(phase(&p), "Pending");
    // Creating the ConfigMap lets the pod start.
    let cms: Api<ConfigMap> = Api::namespaced(env.client.clone(), "default");
    let cm: ConfigMap =
        serde_json::from_value(json!({"metadata": {"name": "absent"}, "data": {"k": "v"}}))
            .expect("cm");
    cms.create(&PostParams::default(), &cm)
        .await
        .expect("create cm");
    wait_for("pod running", || async {
        let p = env.pod("needs-cm").await?;
        (phase(&p) == "Running").then_some(())
    })
    .await;
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exit_zero_with_restart_never_succeeds() {
    let env = Env::start().await;
    env.create_pod(pod_json(
        "job",
        "echo done",
        json!({"spec": {"restartPolicy": "Never"}}),
    ))
    .await;
    let p = wait_for("Succeeded", || async {
        let p = env.pod("job").await?;
        (phase(&p) == "Succeeded").then_some(p)
    })
    .await;
    let st = status(&p);
    let t = &st["containerStatuses"][0]["state"]["terminated"];
    assert_eq!(t["exitCode"], 0);
    assert_eq!(t["reason"], "Completed");
    assert!(t["finishedAt"].is_string());
    assert_eq!(st["containerStatuses"][0]["restartCount"], 0);
    assert_eq!(condition(&p, "Ready").as_deref(), Some("False"));
    // A failing one under Never fails the pod.
    env.create_pod(pod_json(
        "job-fail",
        "exit 3",
        json!({"spec": {"restartPolicy": "Never"}}),
    ))
    .await;
    let p = wait_for("Failed", || async {
        let p = env.pod("job-fail").await?;
        (phase(&p) == "Failed").then_some(p)
    })
    .await;
    let st = status(&p);
    assert_eq!(
        st["containerStatuses"][0]["state"]["terminated"]["exitCode"],
        3
    );
    assert_eq!(
        st["containerStatuses"][0]["state"]["terminated"]["reason"],
        "Error"
    );
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crashing_container_backs_off_with_growing_delay() {
    let env = Env::start().await;
    env.create_pod(pod_json("crash", "exit 1", json!({}))).await;
    let messages: std::cell::RefCell<Vec<String>> = std::cell::RefCell::new(Vec::new());
    let p = wait_for("restartCount >= 5 with back-off", || {
        let messages = &messages;
        let env = &env;
        async move {
            let p = env.pod("crash").await?;
            let st = status(&p);
            let cs = &st["containerStatuses"][0];
            if cs["state"]["waiting"]["reason"] == "CrashLoopBackOff"
                && let Some(m) = cs["state"]["waiting"]["message"].as_str()
                && !messages.borrow().iter().any(|x| x == m)
            {
                messages.borrow_mut().push(m.to_string());
            }
            (cs["restartCount"].as_i64().unwrap_or(0) >= 5 && messages.borrow().len() >= 2)
                .then_some(p)
        }
    })
    .await;
    let st = status(&p);
    let cs = &st["containerStatuses"][0];
    assert_eq!(cs["lastState"]["terminated"]["exitCode"], 1);
    assert_eq!(cs["lastState"]["terminated"]["reason"], "Error");
    assert_eq!(phase(&p), "Running");
    let uid = p.metadata.uid.clone().expect("uid");
    let messages = messages.into_inner();
    // The delays seen (a poll may miss a short window, but never sees them shrink).
    let suffix = format!(" restarting failed container=main pod=crash_default({uid})");
    let delays: Vec<u64> = messages
        .iter()
        .map(|m| {
            let d = m
                .strip_prefix("back-off ")
                .and_then(|m| m.strip_suffix(suffix.as_str()))
                .unwrap_or_else(|| panic!("unexpected message {m:?}"));
            match d.strip_suffix("ms") {
                Some(ms) => ms.parse().expect("ms"),
                None => {
                    let s: f64 = d.trim_end_matches('s').parse().expect("seconds");
                    (s * 1000.0) as u64
                }
            }
        })
        .collect();
    assert!(delays.windows(2).all(|w| w[0] < w[1]), "{messages:?}");
    assert!(
        delays.iter().all(|d| [100, 200, 400, 800].contains(d)),
        "{messages:?}"
    );
    let lookup = env.agent.as_ref().expect("agent").lookup();
    let prev = lookup
        .container("default", "crash", Some("main"), true)
        .expect("previous");
    assert!(prev.id.starts_with(&format!("{uid}_main_")), "{}", prev.id);
    env.event("crash", "BackOff", |m| {
        m.starts_with("Back-off restarting failed container main")
    })
    .await;
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readiness_probe_toggles_ready() {
    let env = Env::start().await;
    let www = env.scratch("www");
    std::fs::write(www.join("ready"), "ok").expect("ready file");
    let port = free_port();
    let script = format!(
        "exec /bin/busybox httpd -f -p 127.0.0.1:{port} -h {}",
        www.display()
    );
    env.create_pod(pod_json(
        "probed",
        &script,
        json!({"spec": {"containers": [{
            "name": "main", "image": "busybox:1.36",
            "command": ["/bin/busybox", "sh", "-c", script],
            "ports": [{"name": "http", "containerPort": port}],
            "readinessProbe": {"httpGet": {"path": "/ready", "port": "http"}, "periodSeconds": 1, "failureThreshold": 1}
        }]}}),
    ))
    .await;
    let ready = |want: &'static str| {
        let env = &env;
        async move {
            wait_for(&format!("Ready={want}"), || async {
                let p = env.pod("probed").await?;
                (condition(&p, "Ready").as_deref() == Some(want)
                    && condition(&p, "ContainersReady").as_deref() == Some(want)
                    && phase(&p) == "Running")
                    .then_some(p)
            })
            .await
        }
    };
    ready("True").await;
    std::fs::remove_file(www.join("ready")).expect("remove ready file");
    let p = ready("False").await;
    assert_eq!(status(&p)["containerStatuses"][0]["ready"], false);
    env.event("probed", "Unhealthy", |m| {
        m == "Readiness probe failed: HTTP probe failed with statuscode: 404"
    })
    .await;
    std::fs::write(www.join("ready"), "ok").expect("ready file");
    ready("True").await;

    // tcpSocket readiness against the same server.
    let port2 = free_port();
    let script2 = format!(
        "exec /bin/busybox httpd -f -p 127.0.0.1:{port2} -h {}",
        www.display()
    );
    env.create_pod(pod_json(
        "tcp-probed",
        &script2,
        json!({"spec": {"containers": [{
            "name": "main", "image": "busybox:1.36",
            "command": ["/bin/busybox", "sh", "-c", script2],
            "readinessProbe": {"tcpSocket": {"port": port2}, "periodSeconds": 1}
        }]}}),
    ))
    .await;
    wait_for("tcp probe ready", || async {
        let p = env.pod("tcp-probed").await?;
        (condition(&p, "Ready").as_deref() == Some("True")).then_some(())
    })
    .await;

    // Exec probes: run in the container when the runtime can exec; otherwise skipped with
    // a warning (and the pod counts as ready).
    let can_exec = env.runtime.capabilities().exec;
    for (name, command, want) in [
        ("exec-ok", "true", "True"),
        (
            "exec-fail",
            "false",
            if can_exec { "False" } else { "True" },
        ),
    ] {
        env.create_pod(pod_json(
            name,
            "sleep 1000",
            json!({"spec": {"containers": [{
                "name": "main", "image": "busybox:1.36",
                "command": ["/bin/busybox", "sleep", "1000"],
                "readinessProbe": {"exec": {"command": ["/bin/busybox", command]}, "periodSeconds": 1}
            }]}}),
        ))
        .await;
        wait_for(&format!("{name} Ready={want}"), || async {
            let p = env.pod(name).await?;
            (phase(&p) == "Running" && condition(&p, "Ready").as_deref() == Some(want))
                .then_some(())
        })
        .await;
    }
    if can_exec {
        env.event("exec-fail", "Unhealthy", |m| {
            m.starts_with("Readiness probe failed")
        })
        .await;
    } else {
        let e = env
            .event("exec-ok", "ProbeWarning", |m| {
                m == "Readiness probe: exec probes are not supported by the process runtime; probe skipped"
            })
            .await;
        assert_eq!(e.type_.as_deref(), Some("Warning"));
    }
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn liveness_failure_restarts_the_container() {
    let env = Env::start().await;
    let port = free_port();
    env.create_pod(pod_json(
        "unhealthy",
        "while true; do /bin/busybox sleep 0.1; done",
        json!({"spec": {"containers": [{
            "name": "main", "image": "busybox:1.36",
            "command": ["/bin/busybox", "sh", "-c", "while true; do /bin/busybox sleep 0.1; done"],
            "livenessProbe": {"tcpSocket": {"port": port}, "periodSeconds": 1, "failureThreshold": 2}
        }]}}),
    ))
    .await;
    let p = wait_for("restart after liveness failure", || async {
        let p = env.pod("unhealthy").await?;
        (status(&p)["containerStatuses"][0]["restartCount"]
            .as_i64()
            .unwrap_or(0)
            >= 1)
            .then_some(p)
    })
    .await;
    let st = status(&p);
    assert_eq!(
        st["containerStatuses"][0]["lastState"]["terminated"]["exitCode"],
        143
    );
    env.event("unhealthy", "Killing", |m| {
        m == "Container main failed liveness probe, will be restarted"
    })
    .await;
    env.event("unhealthy", "Unhealthy", |m| {
        m.starts_with("Liveness probe failed: dial tcp 127.0.0.1:")
    })
    .await;
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restarted_agent_adopts_running_pods_and_removes_orphans() {
    let mut env = Env::start().await;
    let scratch = env.scratch("adopt");
    let script = format!(
        "echo $$$$ >> {}/pids; while true; do /bin/busybox sleep 0.1; done",
        scratch.display()
    );
    let pod = env.create_pod(pod_json("long", &script, json!({}))).await;
    let uid = pod.metadata.uid.clone().expect("uid");
    wait_for("Running", || async {
        let p = env.pod("long").await?;
        (condition(&p, "Ready").as_deref() == Some("True")).then_some(())
    })
    .await;
    let pids = wait_for("pid", || async {
        std::fs::read_to_string(scratch.join("pids")).ok()
    })
    .await;

    // The agent goes away; its containers stay. Meanwhile a pod it ran is deleted for good
    // (a container of an unknown pod is what it left behind).
    env.agent.take().expect("agent").shutdown().await;
    let orphan = skiff_runtime::ContainerSpec {
        id: "0000aaaa-1111-2222-3333-444455556666_ghost_0".into(),
        command: vec!["/bin/busybox".into(), "sleep".into(), "1000".into()],
        ..Default::default()
    };
    env.runtime.create(&orphan).await.expect("create orphan");
    env.runtime.start(&orphan.id).await.expect("start orphan");
    let orphan_dir = env
        .dir
        .path()
        .join("pods")
        .join("0000aaaa-1111-2222-3333-444455556666");
    std::fs::create_dir_all(orphan_dir.join("volumes")).expect("orphan dir");

    env.start_agent().await;
    let ids: Vec<String> = env
        .runtime
        .list()
        .await
        .expect("list")
        .into_iter()
        .map(|c| c.id)
        .collect();
    assert_eq!(
        ids,
        vec![format!("{uid}_main_0")],
        "adopted container only, orphan removed"
    );
    assert!(!orphan_dir.exists(), "orphaned pod directory removed");
    // The adopted pod stays Running and Ready with the same process, not restarted.
    let before = env.pod("long").await.expect("pod");
    let rv = before.metadata.resource_version.clone();
    wait_for("status after adoption", || async {
        let p = env.pod("long").await?;
        let st = status(&p);
        (st["containerStatuses"][0]["ready"] == true).then_some(())
    })
    .await;
    let p = env.pod("long").await.expect("pod");
    let st = status(&p);
    assert_eq!(st["containerStatuses"][0]["restartCount"], 0);
    assert_eq!(
        st["containerStatuses"][0]["containerID"],
        format!("process://{uid}_main_0")
    );
    assert_eq!(
        std::fs::read_to_string(scratch.join("pids")).expect("pids"),
        pids,
        "no second process"
    );
    let stat = env
        .runtime
        .status(&format!("{uid}_main_0"))
        .await
        .expect("status");
    assert!(
        pid_alive(pids.lines().next().expect("pid")),
        "{stat:?} {pids}"
    );
    let _ = rv;
    // The new agent handles its deletion.
    env.pods()
        .delete("long", &DeleteParams::default())
        .await
        .expect("delete");
    wait_for("pod removed", || async {
        env.pod("long").await.is_none().then_some(())
    })
    .await;
    assert!(!pid_alive(pids.lines().next().expect("pid")));
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn image_config_is_merged_and_pull_policies_are_honoured() {
    let env = Env::start_with_images(|store| {
        let image = skiff_runtime::testimages::TestImage::new("tool:v1")
            .cmd(&[
                "/bin/busybox",
                "sh",
                "-c",
                "env > $OUT.tmp; pwd >> $OUT.tmp; mv $OUT.tmp $OUT; sleep 1000",
            ])
            .env("IMG_VAR=from-image")
            .env("SHARED=image")
            .working_dir("/tmp");
        let archive = image.docker_archive().expect("archive");
        store.import(&archive[..]).expect("import");
    })
    .await;
    let scratch = env.scratch("img");
    let out = scratch.join("out");
    env.create_pod(json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "from-image", "namespace": "default"},
        "spec": {"nodeName": NODE, "terminationGracePeriodSeconds": 1, "containers": [{
            "name": "main", "image": "tool:v1", "imagePullPolicy": "IfNotPresent",
            "env": [{"name": "OUT", "value": out.display().to_string()}, {"name": "SHARED", "value": "pod"}]
        }]}
    }))
    .await;
    let text = wait_for("image command output", || async {
        std::fs::read_to_string(&out).ok()
    })
    .await;
    assert!(text.lines().any(|l| l == "IMG_VAR=from-image"), "{text}");
    assert!(
        text.lines().any(|l| l == "SHARED=pod"),
        "pod env overrides image env: {text}"
    );
    assert!(
        text.lines().any(|l| l == "/tmp"),
        "image working dir: {text}"
    );
    let p = wait_for("Running", || async {
        let p = env.pod("from-image").await?;
        (phase(&p) == "Running").then_some(p)
    })
    .await;
    let image_id = status(&p)["containerStatuses"][0]["imageID"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert!(
        image_id.starts_with("docker.io/library/tool:v1@sha256:"),
        "{image_id}"
    );
    env.event("from-image", "Pulled", |m| {
        m == "Container image \"tool:v1\" already present on machine"
    })
    .await;

    for (name, policy, reason) in [
        ("never", "Never", "ErrImageNeverPull"),
        ("ifnotpresent", "IfNotPresent", "ImagePullBackOff"),
    ] {
        env.create_pod(json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name, "namespace": "default"},
            "spec": {"nodeName": NODE, "containers": [{
                "name": "main", "image": "absent:v1", "imagePullPolicy": policy
            }]}
        }))
        .await;
        let p = wait_for(reason, || async {
            let p = env.pod(name).await?;
            (status(&p)["containerStatuses"][0]["state"]["waiting"]["reason"] == reason)
                .then_some(p)
        })
        .await;
        assert_eq!(phase(&p), "Pending");
    }
    let p = env.pod("never").await.expect("pod");
    assert_eq!(
        status(&p)["containerStatuses"][0]["state"]["waiting"]["message"],
        "Container image \"absent:v1\" is not present with pull policy of Never"
    );
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn init_containers_run_in_order_before_app_containers() {
    let env = Env::start().await;
    let scratch = env.scratch("init");
    let log = scratch.join("order");
    let step = |name: &str| {
        json!({"name": name, "image": "busybox:1.36",
               "command": ["/bin/busybox", "sh", "-c", format!("echo {name} >> {}", log.display())]})
    };
    env.create_pod(json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "with-init", "namespace": "default"},
        "spec": {"nodeName": NODE, "terminationGracePeriodSeconds": 1,
            "initContainers": [step("first"), step("second")],
            "containers": [{"name": "main", "image": "busybox:1.36",
                "command": ["/bin/busybox", "sh", "-c", format!("echo main >> {}; sleep 1000", log.display())]}]}
    }))
    .await;
    let p = wait_for("Running after init", || async {
        let p = env.pod("with-init").await?;
        (phase(&p) == "Running" && condition(&p, "Ready").as_deref() == Some("True")).then_some(p)
    })
    .await;
    assert_eq!(condition(&p, "Initialized").as_deref(), Some("True"));
    let st = status(&p);
    for i in 0..2 {
        assert_eq!(
            st["initContainerStatuses"][i]["state"]["terminated"]["reason"], "Completed",
            "{st:#}"
        );
    }
    assert_eq!(
        std::fs::read_to_string(&log).expect("order"),
        "first\nsecond\nmain\n"
    );

    // A failing init container under restartPolicy Never fails the pod; the app never runs.
    env.create_pod(json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "bad-init", "namespace": "default"},
        "spec": {"nodeName": NODE, "restartPolicy": "Never",
            "initContainers": [{"name": "fail", "image": "busybox:1.36", "command": ["/bin/busybox", "false"]}],
            "containers": [{"name": "main", "image": "busybox:1.36", "command": ["/bin/busybox", "sleep", "1000"]}]}
    }))
    .await;
    let p = wait_for("Failed", || async {
        let p = env.pod("bad-init").await?;
        (phase(&p) == "Failed").then_some(p)
    })
    .await;
    let st = status(&p);
    assert_eq!(
        st["containerStatuses"][0]["state"]["waiting"]["reason"],
        "PodInitializing"
    );
    assert_eq!(condition(&p, "Initialized").as_deref(), Some("False"));
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lifecycle_hooks_run_after_start_and_before_sigterm() {
    let env = Env::start().await;
    // The hooks call back into the test: it records which paths arrive, in order.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let seen: Arc<std::sync::Mutex<Vec<String>>> = Arc::default();
    let seen2 = seen.clone();
    let server = tokio::spawn(async move {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        loop {
            let Ok((mut s, _)) = listener.accept().await else {
                return;
            };
            let mut buf = [0u8; 1024];
            let n = s.read(&mut buf).await.unwrap_or(0);
            let req = String::from_utf8_lossy(&buf[..n]).to_string();
            if let Some(path) = req.split_whitespace().nth(1) {
                seen2.lock().expect("seen").push(path.to_string());
            }
            let _ = s
                .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
                .await;
        }
    });
    let scratch = env.scratch("hooks");
    let script = format!(
        "trap 'echo term > {d}/term; exit 0' TERM; while true; do /bin/busybox sleep 0.1; done",
        d = scratch.display()
    );
    env.create_pod(pod_json(
        "hooked",
        &script,
        json!({"spec": {"containers": [{
            "name": "main", "image": "busybox:1.36",
            "command": ["/bin/busybox", "sh", "-c", script],
            "lifecycle": {
                "postStart": {"httpGet": {"path": "/started", "port": port, "host": "127.0.0.1"}},
                "preStop": {"httpGet": {"path": "/draining", "port": port, "host": "127.0.0.1"}}
            }
        }]}}),
    ))
    .await;
    wait_for("Running", || async {
        let p = env.pod("hooked").await?;
        (phase(&p) == "Running").then_some(())
    })
    .await;
    assert_eq!(*seen.lock().expect("seen"), vec!["/started".to_string()]);
    assert!(!scratch.join("term").exists());
    env.pods()
        .delete("hooked", &DeleteParams::default())
        .await
        .expect("delete");
    wait_for("pod removed", || async {
        env.pod("hooked").await.is_none().then_some(())
    })
    .await;
    assert_eq!(
        *seen.lock().expect("seen"),
        vec!["/started".to_string(), "/draining".to_string()]
    );
    assert!(
        scratch.join("term").exists(),
        "SIGTERM after the preStop hook"
    );
    server.abort();
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn new_image_restarts_the_container() {
    let env = Env::start().await;
    env.create_pod(pod_json(
        "upgrade",
        "while true; do /bin/busybox sleep 0.1; done",
        json!({"spec": {"restartPolicy": "Never", "terminationGracePeriodSeconds": 1}}),
    ))
    .await;
    wait_for("Running", || async {
        let p = env.pod("upgrade").await?;
        (phase(&p) == "Running").then_some(())
    })
    .await;
    let patch = json!({"spec": {"containers": [{"name": "main", "image": "busybox:1.37"}]}});
    env.pods()
        .patch(
            "upgrade",
            &kube::api::PatchParams::default(),
            &kube::api::Patch::Strategic(&patch),
        )
        .await
        .expect("set image");
    let p = wait_for("restarted with the new image", || async {
        let p = env.pod("upgrade").await?;
        let st = status(&p);
        let cs = &st["containerStatuses"][0];
        (cs["restartCount"] == 1 && cs["state"]["running"].is_object()).then_some(p)
    })
    .await;
    assert_eq!(status(&p)["containerStatuses"][0]["image"], "busybox:1.37");
    env.event("upgrade", "Killing", |m| {
        m == "Container main definition changed, will be restarted"
    })
    .await;
    env.stop().await;
}

/// Create -> Ready latency of pods on this agent (process runtime, host network): a quick
/// figure for the agent's own overhead. `cargo test -p skiff-node --test agent -- --ignored`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore]
async fn pod_start_latency() {
    let env = Env::start().await;
    let n = 50;
    let mut latencies = Vec::new();
    for i in 0..n {
        let name = format!("lat-{i}");
        let t = std::time::Instant::now();
        env.create_pod(pod_json(
            &name,
            "exec /bin/busybox sleep 1000",
            json!({"spec": {"terminationGracePeriodSeconds": 1}}),
        ))
        .await;
        wait_for("Ready", || async {
            let p = env.pod(&name).await?;
            (condition(&p, "Ready").as_deref() == Some("True")).then_some(())
        })
        .await;
        latencies.push(t.elapsed());
    }
    latencies.sort();
    let p50 = latencies[n / 2];
    let p99 = latencies[(n * 99 / 100).min(n - 1)];
    println!("pod start latency over {n} pods: p50 {p50:?}, p99 {p99:?}");
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_ignored_means_sigkill_after_the_grace_period() {
    let env = Env::start().await;
    let scratch = env.scratch("stubborn");
    let script = format!(
        "echo $$$$ > {}/pid; trap '' TERM; while true; do /bin/busybox sleep 0.1; done",
        scratch.display()
    );
    env.create_pod(pod_json(
        "stubborn",
        &script,
        json!({"spec": {"terminationGracePeriodSeconds": 1}}),
    ))
    .await;
    let pid = wait_for("pid", || async {
        std::fs::read_to_string(scratch.join("pid")).ok()
    })
    .await;
    wait_for("Running", || async {
        let p = env.pod("stubborn").await?;
        (phase(&p) == "Running").then_some(())
    })
    .await;
    let t = std::time::Instant::now();
    env.pods()
        .delete("stubborn", &DeleteParams::default())
        .await
        .expect("delete");
    wait_for("pod removed", || async {
        env.pod("stubborn").await.is_none().then_some(())
    })
    .await;
    // SIGTERM did nothing, so only SIGKILL at the end of the grace period ended it.
    assert!(t.elapsed() >= Duration::from_secs(1), "{:?}", t.elapsed());
    assert!(!pid_alive(&pid));

    // Force deletion (grace 0): the API forgets the pod at once; the agent still stops it,
    // without waiting out the pod's 30 s.
    std::fs::remove_file(scratch.join("pid")).expect("rm pid");
    env.create_pod(pod_json(
        "forced",
        &script,
        json!({"spec": {"terminationGracePeriodSeconds": 30}}),
    ))
    .await;
    let pid = wait_for("pid", || async {
        std::fs::read_to_string(scratch.join("pid")).ok()
    })
    .await;
    let t = std::time::Instant::now();
    let force = DeleteParams {
        grace_period_seconds: Some(0),
        ..DeleteParams::default()
    };
    env.pods()
        .delete("forced", &force)
        .await
        .expect("force delete");
    assert!(env.pod("forced").await.is_none());
    wait_for("process killed", || async {
        (!pid_alive(&pid)).then_some(())
    })
    .await;
    assert!(t.elapsed() < Duration::from_secs(10), "{:?}", t.elapsed());
    wait_for("containers removed", || async {
        env.runtime.list().await.ok()?.is_empty().then_some(())
    })
    .await;
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn active_deadline_fails_the_pod() {
    let env = Env::start().await;
    env.create_pod(pod_json(
        "deadline",
        "while true; do /bin/busybox sleep 0.1; done",
        json!({"spec": {"activeDeadlineSeconds": 1, "terminationGracePeriodSeconds": 1}}),
    ))
    .await;
    let p = wait_for("DeadlineExceeded", || async {
        let p = env.pod("deadline").await?;
        (phase(&p) == "Failed").then_some(p)
    })
    .await;
    let st = status(&p);
    assert_eq!(st["reason"], "DeadlineExceeded");
    assert!(
        st["containerStatuses"][0]["state"]["terminated"].is_object(),
        "{st:#}"
    );
    assert!(
        env.runtime
            .list()
            .await
            .expect("list")
            .iter()
            .all(|c| c.state != skiff_runtime::ContainerState::Running),
        "nothing runs after the deadline"
    );
    env.event("deadline", "DeadlineExceeded", |_| true).await;
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sidecar_init_containers_run_beside_the_app() {
    let env = Env::start().await;
    let scratch = env.scratch("sidecar");
    let log = scratch.join("order");
    let sh = |script: String| json!(["/bin/busybox", "sh", "-c", script]);
    env.create_pod(json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "with-sidecar", "namespace": "default"},
        "spec": {"nodeName": NODE, "restartPolicy": "Never", "terminationGracePeriodSeconds": 1,
            "initContainers": [
                {"name": "proxy", "image": "busybox:1.36", "restartPolicy": "Always",
                 "command": sh(format!("echo proxy >> {}; while true; do /bin/busybox sleep 0.1; done", log.display()))},
                {"name": "setup", "image": "busybox:1.36",
                 "command": sh(format!("echo setup >> {}", log.display()))}
            ],
            "containers": [{"name": "main", "image": "busybox:1.36",
                "command": sh(format!("echo main >> {}; /bin/busybox sleep 0.5", log.display()))}]}
    }))
    .await;
    let p = wait_for("main running beside the sidecar", || async {
        let p = env.pod("with-sidecar").await?;
        let st = status(&p);
        (st["containerStatuses"][0]["state"]["running"].is_object()
            && st["initContainerStatuses"][0]["state"]["running"].is_object())
        .then_some(p)
    })
    .await;
    assert_eq!(condition(&p, "Initialized").as_deref(), Some("True"));
    let p = wait_for("Succeeded", || async {
        let p = env.pod("with-sidecar").await?;
        (phase(&p) == "Succeeded").then_some(p)
    })
    .await;
    let st = status(&p);
    assert!(
        st["initContainerStatuses"][0]["state"]["terminated"].is_object(),
        "sidecar stopped: {st:#}"
    );
    assert_eq!(
        std::fs::read_to_string(&log).expect("order"),
        "proxy\nsetup\nmain\n"
    );
    assert!(
        env.runtime
            .list()
            .await
            .expect("list")
            .iter()
            .all(|c| c.state != skiff_runtime::ContainerState::Running),
        "nothing runs once the pod succeeded"
    );
    env.stop().await;
}
