//! `kubectl logs`, `exec` and `port-forward` end to end: the real kubectl against an
//! in-process API server that proxies to this crate's node server, backed by real
//! processes of the `process` runtime.

use std::collections::HashMap;
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use k8s_openapi::api::core::v1::{Node, Pod};
use kube::Api;
use kube::api::{Patch, PatchParams, PostParams};
use serde_json::json;
use skiff_node::server::{NodeServer, NodeServerConfig};
use skiff_node::streams::{ContainerLookup, ContainerRef, StreamError};
use skiff_runtime::process::ProcessRuntime;
use skiff_runtime::{ContainerSpec, Runtime};
use skiff_server::{Running, ServerConfig};

const NODE: &str = "node-a";

/// A pod's containers: name and runtime ids, oldest instance first.
type PodContainers = Vec<(String, Vec<String>)>;

/// Which runtime containers back which pod containers (the agent's job, done by hand).
#[derive(Default)]
struct Pods {
    /// (namespace, pod) -> container name -> runtime ids, oldest first.
    pods: Mutex<HashMap<(String, String), PodContainers>>,
}

struct Lookup {
    runtime: Arc<ProcessRuntime>,
    pods: Arc<Pods>,
}

impl ContainerLookup for Lookup {
    fn container(
        &self,
        namespace: &str,
        pod: &str,
        container: Option<&str>,
        previous: bool,
    ) -> Result<ContainerRef, StreamError> {
        let pods = self.pods.pods.lock().unwrap_or_else(|p| p.into_inner());
        let containers = pods
            .get(&(namespace.to_string(), pod.to_string()))
            .ok_or_else(|| StreamError::NotFound(format!("pod {namespace}/{pod} not found")))?;
        let (name, ids) = match container {
            Some(c) => containers.iter().find(|(n, _)| n == c).ok_or_else(|| {
                StreamError::NotFound(format!("container {c:?} in pod {pod:?} not found"))
            })?,
            None => containers
                .first()
                .ok_or_else(|| StreamError::NotFound("no containers".into()))?,
        };
        let id = if previous {
            ids.len().checked_sub(2).map(|i| &ids[i]).ok_or_else(|| {
                StreamError::BadRequest(format!(
                    "previous terminated container {name:?} in pod {pod:?} not found"
                ))
            })?
        } else {
            ids.last()
                .ok_or_else(|| StreamError::NotFound(format!("container {name:?} not started")))?
        };
        Ok(ContainerRef {
            runtime: self.runtime.clone() as Arc<dyn Runtime>,
            id: id.clone(),
        })
    }

    fn pod_netns(&self, _namespace: &str, _pod: &str) -> Result<Option<PathBuf>, StreamError> {
        Ok(None)
    }
}

struct Env {
    _dir: tempfile::TempDir,
    running: Option<Running>,
    node: Option<NodeServer>,
    runtime: Arc<ProcessRuntime>,
    pods: Arc<Pods>,
}

impl Env {
    async fn start() -> Env {
        let dir = tempfile::tempdir().expect("tempdir");
        let running = skiff_server::start(ServerConfig {
            port: 0,
            controllers: false,
            ..ServerConfig::new(dir.path().join("server"))
        })
        .await
        .expect("server starts");
        let runtime =
            Arc::new(ProcessRuntime::new(dir.path().join("containers")).expect("runtime"));
        let pods = Arc::new(Pods::default());
        let ca = std::fs::read_to_string(dir.path().join("server/pki/ca.crt")).expect("ca");
        let node = NodeServer::start(
            NodeServerConfig {
                bind: "127.0.0.1:0".parse().expect("addr"),
                ..NodeServerConfig::new(ca)
            },
            Arc::new(Lookup {
                runtime: runtime.clone(),
                pods: pods.clone(),
            }),
        )
        .await
        .expect("node server");
        let nodes: Api<Node> = Api::all(running.client.clone());
        nodes
            .create(
                &PostParams::default(),
                &serde_json::from_value(json!({"metadata": {"name": NODE}})).expect("node"),
            )
            .await
            .expect("create node");
        let status = json!({"status": {
            "addresses": [{"type": "InternalIP", "address": "127.0.0.1"},
                          {"type": "Hostname", "address": NODE}],
            "daemonEndpoints": {"kubeletEndpoint": {"Port": node.addr().port()}},
        }});
        nodes
            .patch_status(NODE, &PatchParams::default(), &Patch::Merge(&status))
            .await
            .expect("node status");
        Env {
            _dir: dir,
            running: Some(running),
            node: Some(node),
            runtime,
            pods,
        }
    }

    fn running(&self) -> &Running {
        self.running.as_ref().expect("running")
    }

    /// Creates the pod object (bound to our node unless `node` is None) and runs its
    /// containers: (name, shell script) each, with `restarts` earlier instances first.
    async fn pod(
        &self,
        name: &str,
        node: Option<&str>,
        containers: &[(&str, &str)],
        restarts: usize,
    ) {
        let spec_containers: Vec<_> = containers
            .iter()
            .map(|(c, _)| json!({"name": c, "image": "busybox"}))
            .collect();
        let mut spec = json!({"containers": spec_containers});
        if let Some(n) = node {
            spec["nodeName"] = json!(n);
        }
        let pods: Api<Pod> = Api::namespaced(self.running().client.clone(), "default");
        pods.create(
            &PostParams::default(),
            &serde_json::from_value(
                json!({"metadata": {"name": name, "labels": {"app": name}}, "spec": spec}),
            )
            .expect("pod"),
        )
        .await
        .expect("create pod");
        let mut entries = Vec::new();
        for (c, script) in containers {
            let mut ids = Vec::new();
            for attempt in 0..=restarts {
                let id = format!("{name}_{c}_{attempt}");
                let script = if attempt < restarts {
                    format!("echo 'attempt {attempt}'")
                } else {
                    script.to_string()
                };
                self.runtime
                    .create(&ContainerSpec {
                        id: id.clone(),
                        command: vec!["sh".into(), "-c".into(), script],
                        ..Default::default()
                    })
                    .await
                    .expect("create container");
                self.runtime.start(&id).await.expect("start container");
                if attempt < restarts {
                    self.runtime.wait(&id).await.expect("earlier instance ends");
                }
                ids.push(id);
            }
            entries.push((c.to_string(), ids));
        }
        self.pods
            .pods
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(("default".into(), name.into()), entries);
    }

    /// Runs kubectl (on the blocking pool) with a deadline; (exit code, stdout, stderr).
    async fn kubectl(&self, args: &[&str]) -> (i32, String, String) {
        self.kubectl_with(args, None, &[]).await
    }

    /// Like `kubectl`, with `stdin` fed to it and extra environment variables.
    async fn kubectl_with(
        &self,
        args: &[&str],
        stdin: Option<&str>,
        env: &[(&str, &str)],
    ) -> (i32, String, String) {
        let kubeconfig = self.running().kubeconfig.clone();
        let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
        let stdin = stdin.map(str::to_string);
        let env: Vec<(String, String)> = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        tokio::task::spawn_blocking(move || {
            use std::io::Write;
            let mut child = std::process::Command::new("timeout")
                .arg("60")
                .arg("kubectl")
                .arg("--kubeconfig")
                .arg(&kubeconfig)
                .arg("-n")
                .arg("default")
                .args(&args)
                .envs(env)
                .stdin(if stdin.is_some() {
                    Stdio::piped()
                } else {
                    Stdio::null()
                })
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .expect("kubectl runs");
            if let (Some(text), Some(mut pipe)) = (stdin, child.stdin.take()) {
                pipe.write_all(text.as_bytes()).expect("kubectl stdin");
            }
            let out = child.wait_with_output().expect("kubectl ends");
            (
                out.status.code().unwrap_or(-1),
                String::from_utf8_lossy(&out.stdout).into_owned(),
                String::from_utf8_lossy(&out.stderr).into_owned(),
            )
        })
        .await
        .expect("kubectl task")
    }

    async fn stop(mut self) {
        self.cleanup().await;
    }

    async fn cleanup(&mut self) {
        if let Ok(list) = self.runtime.list().await {
            for c in list {
                let _ = self.runtime.remove(&c.id).await;
            }
        }
        if let Some(n) = self.node.take() {
            n.shutdown().await;
        }
        if let Some(r) = self.running.take() {
            r.shutdown().await;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_logs_exec_through_the_api_server() {
    let env = Env::start().await;
    let result = std::panic::AssertUnwindSafe(scenarios(&env));
    let outcome = futures::FutureExt::catch_unwind(result).await;
    env.stop().await;
    if let Err(panic) = outcome {
        std::panic::resume_unwind(panic);
    }
}

async fn scenarios(env: &Env) {
    env.pod(
        "done",
        Some(NODE),
        &[("main", "echo one; echo two; echo three")],
        1,
    )
    .await;
    env.runtime
        .wait("done_main_1")
        .await
        .expect("container ends");

    let (code, out, err) = env.kubectl(&["logs", "done"]).await;
    assert_eq!((code, out.as_str()), (0, "one\ntwo\nthree\n"), "{err}");

    let (code, out, err) = env.kubectl(&["logs", "done", "--tail=1"]).await;
    assert_eq!((code, out.as_str()), (0, "three\n"), "{err}");

    let (code, out, err) = env.kubectl(&["logs", "done", "--timestamps"]).await;
    assert_eq!(code, 0, "{err}");
    assert!(
        out.lines().count() == 3 && out.lines().all(|l| l.contains("Z ")),
        "{out}"
    );

    let (code, out, err) = env.kubectl(&["logs", "done", "--since=1h"]).await;
    assert_eq!((code, out.as_str()), (0, "one\ntwo\nthree\n"), "{err}");
    let (code, out, err) = env
        .kubectl(&["logs", "done", "--since-time=2999-01-01T00:00:00Z"])
        .await;
    assert_eq!((code, out.as_str()), (0, ""), "{err}");
    let (code, out, err) = env.kubectl(&["logs", "-l", "app=done"]).await;
    assert_eq!((code, out.as_str()), (0, "one\ntwo\nthree\n"), "{err}");

    let (code, out, err) = env.kubectl(&["logs", "done", "--limit-bytes=5"]).await;
    assert_eq!((code, out.as_str()), (0, "one\nt"), "{err}");

    let (code, out, err) = env.kubectl(&["logs", "done", "-p"]).await;
    assert_eq!((code, out.as_str()), (0, "attempt 0\n"), "{err}");

    // Follow: lines arrive while the container runs, and kubectl ends when it exits.
    let stop_dir = tempfile::tempdir().expect("tempdir");
    let stop = stop_dir.path().join("stop-ticker");
    env.pod("ticker", Some(NODE), &[("main", &ticker_script(&stop))], 0)
        .await;
    let (code, first, rest, err) =
        stream_until_stopped(env, &["logs", "-f", "ticker"], &stop).await;
    assert_eq!(code, Some(0), "{err}");
    // stdout and stderr are logged by separate pumps: either may come first.
    assert!(first == "tick 1\n" || first == "tock 1\n", "{first}");
    assert!(
        rest.ends_with("done-out\ndone-err\n") || rest.ends_with("done-err\ndone-out\n"),
        "{rest}"
    );

    // No earlier instance.
    let (code, _, err) = env.kubectl(&["logs", "ticker", "--previous"]).await;
    assert_eq!(code, 1);
    assert!(
        err.contains("previous terminated container \"main\" in pod \"ticker\" not found"),
        "{err}"
    );

    // Two containers: -c picks one; an unknown one is refused by the API server.
    env.pod(
        "two",
        Some(NODE),
        &[("a", "echo from-a"), ("b", "echo from-b")],
        0,
    )
    .await;
    env.runtime.wait("two_b_0").await.expect("b ends");
    let (code, out, err) = env.kubectl(&["logs", "two", "-c", "b"]).await;
    assert_eq!((code, out.as_str()), (0, "from-b\n"), "{err}");
    let (code, _, err) = env.kubectl(&["logs", "two", "-c", "nope"]).await;
    assert_eq!(code, 1);
    assert!(
        err.contains("container nope is not valid for pod two"),
        "{err}"
    );

    // Unknown pod and an unscheduled pod.
    let (code, _, err) = env.kubectl(&["logs", "missing"]).await;
    assert_eq!(code, 1);
    assert!(err.contains("pods \"missing\" not found"), "{err}");
    env.pod("pending", None, &[("main", "true")], 0).await;
    let (code, _, err) = env.kubectl(&["logs", "pending"]).await;
    assert_eq!(code, 1);
    assert!(
        err.contains("pod pending does not have a host assigned"),
        "{err}"
    );

    // exec over WebSocket, exit codes passed through.
    env.pod("sleeper", Some(NODE), &[("main", "sleep 120")], 0)
        .await;
    let (code, out, err) = env.kubectl(&["exec", "sleeper", "--", "echo", "hi"]).await;
    assert_eq!((code, out.as_str()), (0, "hi\n"), "{err}");
    let (code, _, err) = env
        .kubectl(&["exec", "sleeper", "--", "sh", "-c", "echo oops >&2; exit 3"])
        .await;
    assert_eq!(code, 3, "{err}");
    assert!(err.contains("oops"), "{err}");
    let (code, _, err) = env
        .kubectl(&["exec", "sleeper", "--", "/nonexistent/cmd"])
        .await;
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains("error executing command in container"),
        "{err}"
    );
    // stdin reaches the command and its end closes it (v5 close signal).
    let (code, out, err) = env
        .kubectl_with(
            &["exec", "-i", "sleeper", "--", "tr", "a-z", "A-Z"],
            Some("hello\nworld\n"),
            &[],
        )
        .await;
    assert_eq!((code, out.as_str()), (0, "HELLO\nWORLD\n"), "{err}");
    // The SPDY/3.1 protocol kubectl used before WebSockets (and falls back to).
    let spdy = [("KUBECTL_REMOTE_COMMAND_WEBSOCKETS", "false")];
    let (code, out, err) = env
        .kubectl_with(&["exec", "sleeper", "--", "echo", "hi"], None, &spdy)
        .await;
    assert_eq!((code, out.as_str()), (0, "hi\n"), "{err}");
    let (code, _, err) = env
        .kubectl_with(
            &["exec", "sleeper", "--", "sh", "-c", "exit 7"],
            None,
            &spdy,
        )
        .await;
    assert_eq!(code, 7, "{err}");
    let (code, out, err) = env
        .kubectl_with(
            &["exec", "-i", "sleeper", "--", "cat"],
            Some("piped\n"),
            &spdy,
        )
        .await;
    assert_eq!((code, out.as_str()), (0, "piped\n"), "{err}");

    // kubectl cp: tar through exec both ways, binary and bigger than any buffer.
    let dir = tempfile::tempdir().expect("tempdir");
    let data: Vec<u8> = (0..1_500_000u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    std::fs::write(dir.path().join("src.bin"), &data).expect("write src");
    let remote = dir.path().join("remote");
    std::fs::create_dir(&remote).expect("remote dir");
    let src = dir.path().join("src.bin").display().to_string();
    let dest = format!("sleeper:{}/copied.bin", remote.display());
    let (code, _, err) = env.kubectl(&["cp", &src, &dest]).await;
    assert_eq!(code, 0, "{err}");
    assert!(
        std::fs::read(remote.join("copied.bin")).expect("copied") == data,
        "upload differs"
    );
    let back = dir.path().join("back.bin").display().to_string();
    let (code, _, err) = env.kubectl(&["cp", &dest, &back]).await;
    assert_eq!(code, 0, "{err}");
    assert!(
        std::fs::read(&back).expect("back") == data,
        "download differs"
    );

    // attach: the main process's output from now on, until it exits.
    let stop = dir.path().join("stop-attach");
    env.pod("chatty", Some(NODE), &[("main", &ticker_script(&stop))], 0)
        .await;
    let pods: Api<Pod> = Api::namespaced(env.running().client.clone(), "default");
    pods.patch_status(
        "chatty",
        &PatchParams::default(),
        &Patch::Merge(&json!({"status": {"phase": "Running"}})),
    )
    .await
    .expect("pod running");
    let (code, first, rest, err) = stream_until_stopped(env, &["attach", "chatty"], &stop).await;
    assert_eq!(code, Some(0), "{err}");
    assert!(first.starts_with("tick "), "{first}");
    assert!(
        rest.ends_with("done-out\n") && !rest.contains("tock"),
        "{rest}"
    );
    assert!(err.contains("done-err\n"), "{err}");

    // kubectl 1.32 tunnels SPDY in WebSocket; without the feature it upgrades to SPDY.
    port_forward(env, true).await;
    port_forward(env, false).await;
}

/// Runs a streaming kubectl command (`logs -f`, `attach`) against a container that ticks
/// until `stop` exists: reads the first line (so the stream is live), creates `stop`, and
/// reads the rest until kubectl ends with the container. (exit code, first line, rest, stderr)
async fn stream_until_stopped(
    env: &Env,
    args: &[&str],
    stop: &std::path::Path,
) -> (Option<i32>, String, String, String) {
    use tokio::io::{AsyncBufReadExt, AsyncReadExt};
    let mut child = tokio::process::Command::new("kubectl")
        .arg("--kubeconfig")
        .arg(&env.running().kubeconfig)
        .args(["-n", "default"])
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("kubectl");
    let mut stdout = tokio::io::BufReader::new(child.stdout.take().expect("stdout"));
    let mut first = String::new();
    tokio::time::timeout(Duration::from_secs(30), stdout.read_line(&mut first))
        .await
        .expect("first line in time")
        .expect("read kubectl output");
    std::fs::write(stop, "").expect("stop file");
    let mut rest = String::new();
    tokio::time::timeout(Duration::from_secs(30), stdout.read_to_string(&mut rest))
        .await
        .expect("kubectl ends with the container")
        .expect("read kubectl output");
    let out = child.wait_with_output().await.expect("kubectl ends");
    (
        out.status.code(),
        first,
        rest,
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// A shell loop printing `tick N` (and `tock N` on stderr) until `stop` exists, then
/// `done-out` / `done-err`.
fn ticker_script(stop: &std::path::Path) -> String {
    format!(
        "i=0; while [ ! -e {} ]; do i=$((i+1)); echo tick $i; echo tock $i >&2; sleep 0.1; done; echo done-out; echo done-err >&2",
        stop.display()
    )
}

/// `kubectl port-forward` to a TCP echo server "in the pod" (host network here).
async fn port_forward(env: &Env, websockets: bool) {
    use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt};
    let echo = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("echo listener");
    let echo_port = echo.local_addr().expect("addr").port();
    let echo_task = tokio::spawn(async move {
        while let Ok((mut conn, _)) = echo.accept().await {
            tokio::spawn(async move {
                let (mut r, mut w) = conn.split();
                let _ = tokio::io::copy(&mut r, &mut w).await;
            });
        }
    });
    let pods: Api<Pod> = Api::namespaced(env.running().client.clone(), "default");
    pods.patch_status(
        "sleeper",
        &PatchParams::default(),
        &Patch::Merge(&json!({"status": {"phase": "Running"}})),
    )
    .await
    .expect("pod running");

    let mut kubectl = tokio::process::Command::new("kubectl")
        .arg("--kubeconfig")
        .arg(&env.running().kubeconfig)
        .args(["-n", "default", "port-forward", "pod/sleeper"])
        .env(
            "KUBECTL_PORT_FORWARD_WEBSOCKETS",
            if websockets { "true" } else { "false" },
        )
        .arg(format!(":{echo_port}"))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("kubectl port-forward");
    let stdout = kubectl.stdout.take().expect("stdout");
    let mut lines = tokio::io::BufReader::new(stdout).lines();
    let local_port = tokio::time::timeout(Duration::from_secs(30), async {
        while let Some(line) = lines.next_line().await.expect("read kubectl") {
            // "Forwarding from 127.0.0.1:41234 -> 8080"
            if let Some(rest) = line.strip_prefix("Forwarding from 127.0.0.1:") {
                return rest.split(' ').next().and_then(|p| p.parse::<u16>().ok());
            }
        }
        None
    })
    .await
    .ok()
    .flatten();
    let Some(local_port) = local_port else {
        let _ = kubectl.kill().await;
        let out = kubectl.wait_with_output().await.expect("kubectl output");
        panic!(
            "port-forward did not start: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };

    // Connections one after the other and side by side, some with more than a SPDY
    // flow-control window of data.
    let echo_through = |size: usize| async move {
        let payload: Vec<u8> = (0..size).map(|i| (i % 251) as u8).collect();
        let mut conn = tokio::net::TcpStream::connect(("127.0.0.1", local_port))
            .await
            .expect("connect to the forwarded port");
        let (mut r, mut w) = conn.split();
        let send = async {
            w.write_all(&payload).await.expect("send");
        };
        let mut got = vec![0u8; size];
        let recv = async {
            r.read_exact(&mut got).await.expect("echo back");
        };
        tokio::time::timeout(Duration::from_secs(30), async { tokio::join!(send, recv) })
            .await
            .expect("echo in time");
        assert!(got == payload, "echoed bytes differ for {size} bytes");
    };
    echo_through(5).await;
    echo_through(300_000).await;
    futures::future::join_all([1, 70_000, 200_000, 12].map(echo_through)).await;
    let _ = kubectl.kill().await;
    echo_task.abort();
}
