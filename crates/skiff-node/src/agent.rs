//! The node agent itself: registration and heartbeats, adoption of what the runtime already
//! runs, the watch of the pods bound to this node with one worker per pod, and the
//! container lookup the streaming server uses.

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::Pod;
use kube::Api;
use kube::api::ListParams;
use kube::runtime::watcher;
use skiff_client::Client;
use skiff_runtime::images::ImageStore;
use skiff_runtime::network::PodNetwork;
use skiff_runtime::{ContainerStatus, Runtime};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

use crate::config::AgentConfig;
use crate::events::Recorder;
use crate::ids::parse_container_id;
use crate::node::NodeReporter;
use crate::streams::{ContainerLookup, ContainerRef, StreamError};
use crate::worker::{PodUpdate, Worker};

/// Why the agent could not start.
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    #[error("registering node {node}: {source}")]
    Register {
        node: String,
        #[source]
        source: kube::Error,
    },
    #[error("listing the pods bound to node {node}: {source}")]
    ListPods {
        node: String,
        #[source]
        source: kube::Error,
    },
    #[error("creating {path}: {source}")]
    RootDir {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("listing runtime containers: {0}")]
    Runtime(#[from] skiff_runtime::RuntimeError),
}

/// A pod container as the streaming side sees it.
#[derive(Debug, Clone)]
pub struct ContainerView {
    pub name: String,
    pub init: bool,
    pub current: Option<String>,
    pub previous: Option<String>,
    pub waiting: Option<String>,
}

/// A pod as the streaming side sees it.
#[derive(Debug, Clone)]
pub struct PodView {
    pub uid: String,
    pub netns: Option<PathBuf>,
    pub containers: Vec<ContainerView>,
}

/// State shared by the agent's tasks; implements [`ContainerLookup`].
pub struct NodeAgent {
    pub(crate) client: Client,
    pub(crate) runtime: Arc<dyn Runtime>,
    pub(crate) network: Arc<dyn PodNetwork>,
    pub(crate) images: Option<ImageStore>,
    pub(crate) config: AgentConfig,
    pub(crate) recorder: Recorder,
    pub(crate) node_milli_cpu: i128,
    pub(crate) node_memory: i128,
    /// namespace/name -> what runs for it.
    pods: Mutex<HashMap<(String, String), PodView>>,
}

impl NodeAgent {
    pub fn node_name(&self) -> &str {
        &self.config.node_name
    }

    pub fn config(&self) -> &AgentConfig {
        &self.config
    }

    pub(crate) fn publish(&self, namespace: &str, name: &str, view: Option<PodView>) {
        let mut pods = self.pods.lock().unwrap_or_else(|p| p.into_inner());
        let key = (namespace.to_string(), name.to_string());
        match view {
            Some(v) => {
                pods.insert(key, v);
            }
            None => {
                pods.remove(&key);
            }
        }
    }

    fn view(&self, namespace: &str, pod: &str) -> Result<PodView, StreamError> {
        self.pods
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&(namespace.to_string(), pod.to_string()))
            .cloned()
            .ok_or_else(|| StreamError::NotFound(format!("pod \"{pod}\" not found on this node")))
    }
}

impl ContainerLookup for NodeAgent {
    fn container(
        &self,
        namespace: &str,
        pod: &str,
        container: Option<&str>,
        previous: bool,
    ) -> Result<ContainerRef, StreamError> {
        let view = self.view(namespace, pod)?;
        let c = match container {
            Some(name) => view
                .containers
                .iter()
                .find(|c| c.name == name)
                .ok_or_else(|| {
                    StreamError::BadRequest(format!("container {name} is not valid for pod {pod}"))
                })?,
            None => {
                let apps: Vec<&ContainerView> =
                    view.containers.iter().filter(|c| !c.init).collect();
                match apps.as_slice() {
                    [one] => *one,
                    _ => {
                        let names: Vec<&str> = apps.iter().map(|c| c.name.as_str()).collect();
                        return Err(StreamError::BadRequest(format!(
                            "a container name must be specified for pod {pod}, choose one of: [{}]",
                            names.join(" ")
                        )));
                    }
                }
            }
        };
        let id = if previous {
            c.previous.clone().ok_or_else(|| {
                StreamError::BadRequest(format!(
                    "previous terminated container \"{}\" in pod \"{pod}\" not found",
                    c.name
                ))
            })?
        } else {
            c.current.clone().ok_or_else(|| {
                StreamError::BadRequest(format!(
                    "container \"{}\" in pod \"{pod}\" is waiting to start: {}",
                    c.name,
                    c.waiting
                        .clone()
                        .unwrap_or_else(|| "ContainerCreating".into())
                ))
            })?
        };
        Ok(ContainerRef {
            runtime: self.runtime.clone(),
            id,
        })
    }

    fn pod_netns(&self, namespace: &str, pod: &str) -> Result<Option<PathBuf>, StreamError> {
        Ok(self.view(namespace, pod)?.netns)
    }
}

/// A running agent. Dropping it (or [`AgentHandle::shutdown`]) stops the agent's tasks but
/// leaves the containers running, for the next agent to adopt.
pub struct AgentHandle {
    agent: Arc<NodeAgent>,
    tasks: Vec<JoinHandle<()>>,
}

impl AgentHandle {
    /// The agent, e.g. as the streaming server's [`ContainerLookup`].
    pub fn agent(&self) -> Arc<NodeAgent> {
        self.agent.clone()
    }

    pub fn lookup(&self) -> Arc<dyn ContainerLookup> {
        self.agent.clone()
    }

    pub fn node_name(&self) -> &str {
        self.agent.node_name()
    }

    /// Stops the agent's tasks (containers keep running) and waits for them to end.
    pub async fn shutdown(mut self) {
        let tasks = std::mem::take(&mut self.tasks);
        for t in &tasks {
            t.abort();
        }
        for t in tasks {
            let _ = t.await;
        }
    }
}

impl Drop for AgentHandle {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

fn parse_cpu(cap: &std::collections::BTreeMap<String, String>) -> i128 {
    cap.get("cpu")
        .and_then(|q| skiff_api::quantity::parse_quantity(q).ok())
        .map_or(1000, |q| q.milli_value())
}

fn parse_memory(cap: &std::collections::BTreeMap<String, String>) -> i128 {
    cap.get("memory")
        .and_then(|q| skiff_api::quantity::parse_quantity(q).ok())
        .map_or(0, |q| q.value())
}

/// Starts the node agent: registers the Node and its Lease, cleans up what belongs to pods
/// that no longer exist, adopts the containers of pods that do, and runs the pods bound to
/// this node until the handle is dropped.
pub async fn run(
    client: Client,
    runtime: Arc<dyn Runtime>,
    network: Arc<dyn PodNetwork>,
    images: Option<ImageStore>,
    config: AgentConfig,
) -> Result<AgentHandle, AgentError> {
    let node = config.node_name.clone();
    std::fs::create_dir_all(&config.root_dir).map_err(|source| AgentError::RootDir {
        path: config.root_dir.clone(),
        source,
    })?;
    let runtime_version = config
        .runtime_version
        .clone()
        .unwrap_or_else(|| format!("{}://", runtime.name()));
    let mut reporter = NodeReporter::new(client.clone(), config.clone(), runtime_version);
    reporter
        .register()
        .await
        .map_err(|source| AgentError::Register {
            node: node.clone(),
            source,
        })?;
    if let Err(e) = reporter.renew_lease().await {
        tracing::warn!(error = %e, "creating the node lease");
    }
    let agent = Arc::new(NodeAgent {
        recorder: Recorder::new(client.clone(), &node),
        node_milli_cpu: parse_cpu(reporter.capacity()),
        node_memory: parse_memory(reporter.capacity()),
        client: client.clone(),
        runtime,
        network,
        images,
        config,
        pods: Mutex::new(HashMap::new()),
    });

    let adopt = clean_up_and_adopt(&agent).await?;
    let heartbeat = tokio::spawn(reporter.run());
    let dispatcher = tokio::spawn(dispatch(agent.clone(), adopt));
    Ok(AgentHandle {
        agent,
        tasks: vec![heartbeat, dispatcher],
    })
}

/// Looks like a pod uid (what the agent names per-pod directories after).
fn looks_like_uid(s: &str) -> bool {
    s.len() >= 8 && s.chars().all(|c| c.is_ascii_hexdigit() || c == '-') && s.contains('-')
}

/// Removes containers, sandboxes and directories of pods that are gone; returns the
/// containers of pods that still exist, by pod uid, for their workers to adopt.
async fn clean_up_and_adopt(
    agent: &Arc<NodeAgent>,
) -> Result<HashMap<String, Vec<ContainerStatus>>, AgentError> {
    let node = agent.config.node_name.clone();
    let api: Api<Pod> = Api::all(agent.client.clone());
    let pods = api
        .list(&ListParams::default().fields(&format!("spec.nodeName={node}")))
        .await
        .map_err(|source| AgentError::ListPods {
            node: node.clone(),
            source,
        })?;
    let known: HashSet<String> = pods
        .items
        .iter()
        .filter_map(|p| p.metadata.uid.clone())
        .collect();
    let mut adopt: HashMap<String, Vec<ContainerStatus>> = HashMap::new();
    for c in agent.runtime.list().await? {
        let Some(key) = parse_container_id(&c.id) else {
            continue;
        };
        if known.contains(&key.pod_uid) {
            if c.state == skiff_runtime::ContainerState::Created {
                // Created but never started: the worker creates it again.
                let _ = agent.runtime.remove(&c.id).await;
                continue;
            }
            adopt.entry(key.pod_uid).or_default().push(c);
        } else {
            tracing::info!(id = %c.id, "removing the container of a pod that no longer exists");
            crate::worker::remove_container(&*agent.runtime, &c.id).await;
        }
    }
    match agent.network.list().await {
        Ok(sandboxes) => {
            for s in sandboxes.into_iter().filter(|s| !known.contains(s)) {
                if let Err(e) = agent.network.teardown(&s).await {
                    tracing::warn!(sandbox = %s, error = %e, "removing an orphaned sandbox");
                }
            }
        }
        Err(e) => tracing::warn!(error = %e, "listing pod sandboxes"),
    }
    let root = agent.config.root_dir.clone();
    let known2 = known.clone();
    let cgroups = agent.runtime.capabilities().cgroups;
    let _ = tokio::task::spawn_blocking(move || {
        // Only runtimes that use cgroups make pod cgroups.
        if cgroups {
            crate::cgroups::remove_orphans(&known2);
        }
        for e in std::fs::read_dir(&root).into_iter().flatten().flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if looks_like_uid(&name)
                && !known2.contains(&name)
                && e.path().is_dir()
                && let Err(err) = crate::volumes::cleanup(&root, &name)
            {
                tracing::warn!(pod = %name, error = %err, "removing an orphaned pod directory");
            }
        }
    })
    .await;
    Ok(adopt)
}

/// Removes the containers, sandbox and directories of a pod the agent will not run.
async fn remove_leftovers(agent: &Arc<NodeAgent>, uid: &str, containers: Vec<ContainerStatus>) {
    for c in containers {
        crate::worker::remove_container(&*agent.runtime, &c.id).await;
    }
    if let Err(e) = agent.network.teardown(uid).await {
        tracing::warn!(pod = %uid, error = %e, "removing the sandbox of a deleted pod");
    }
    let root = agent.config.root_dir.clone();
    let uid = uid.to_string();
    let cgroups = agent.runtime.capabilities().cgroups;
    let _ = tokio::task::spawn_blocking(move || {
        if cgroups {
            crate::cgroups::remove_pod(&uid);
        }
        crate::volumes::cleanup(&root, &uid)
    })
    .await;
}

struct WorkerHandle {
    tx: watch::Sender<PodUpdate>,
    task: JoinHandle<()>,
}

impl Drop for WorkerHandle {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Watches the pods bound to this node and feeds them to their workers.
async fn dispatch(agent: Arc<NodeAgent>, mut adopt: HashMap<String, Vec<ContainerStatus>>) {
    let node = agent.config.node_name.clone();
    let api: Api<Pod> = Api::all(agent.client.clone());
    let cfg = watcher::Config::default().fields(&format!("spec.nodeName={node}"));
    let mut stream = watcher(api, cfg).boxed();
    let mut workers: HashMap<String, WorkerHandle> = HashMap::new();
    // Pods whose worker finished (deleted): late events about them are ignored.
    let mut finished: HashSet<String> = HashSet::new();
    let (done_tx, mut done_rx) = mpsc::unbounded_channel::<String>();
    let mut listed: HashSet<String> = HashSet::new();

    let apply = |pod: Pod,
                 workers: &mut HashMap<String, WorkerHandle>,
                 finished: &HashSet<String>,
                 adopt: &mut HashMap<String, Vec<ContainerStatus>>| {
        let Some(uid) = pod.metadata.uid.clone() else {
            return;
        };
        if let Some(w) = workers.get(&uid) {
            w.tx.send_replace(PodUpdate::Present(Box::new(pod)));
            return;
        }
        if finished.contains(&uid) {
            return;
        }
        let adopted = adopt.remove(&uid).unwrap_or_default();
        let worker = Worker::new(agent.clone(), pod.clone(), adopted);
        let (tx, rx) = watch::channel(PodUpdate::Present(Box::new(pod)));
        let done = done_tx.clone();
        let u = uid.clone();
        let task = tokio::spawn(async move {
            worker.run(rx).await;
            let _ = done.send(u);
        });
        workers.insert(uid, WorkerHandle { tx, task });
    };

    loop {
        tokio::select! {
            item = stream.next() => {
                let Some(item) = item else { return };
                match item {
                    Ok(watcher::Event::Init) => listed.clear(),
                    Ok(watcher::Event::InitApply(p)) => {
                        if let Some(uid) = &p.metadata.uid {
                            listed.insert(uid.clone());
                        }
                        apply(p, &mut workers, &finished, &mut adopt);
                    }
                    Ok(watcher::Event::InitDone) => {
                        // Adopted containers whose pod went away between the start-up list
                        // and the watch's.
                        for (uid, containers) in adopt.drain() {
                            remove_leftovers(&agent, &uid, containers).await;
                        }
                        // Pods deleted while the watch was down.
                        for (uid, w) in &workers {
                            if !listed.contains(uid) {
                                let pod = match &*w.tx.borrow() {
                                    PodUpdate::Present(p) | PodUpdate::Gone(p) => p.clone(),
                                };
                                w.tx.send_replace(PodUpdate::Gone(pod));
                            }
                        }
                    }
                    Ok(watcher::Event::Apply(p)) => apply(p, &mut workers, &finished, &mut adopt),
                    Ok(watcher::Event::Delete(p)) => {
                        if let Some(w) = p.metadata.uid.as_ref().and_then(|u| workers.get(u)) {
                            w.tx.send_replace(PodUpdate::Gone(Box::new(p)));
                        }
                    }
                    Err(e) => {
                        tracing::debug!(error = %e, "pod watch error");
                        tokio::time::sleep(Duration::from_millis(200)).await;
                    }
                }
            }
            Some(uid) = done_rx.recv() => {
                if let Some(w) = workers.remove(&uid) {
                    // The task has ended; dropping the handle aborts nothing of value.
                    drop(w);
                }
                if finished.len() > 10_000 {
                    finished.clear();
                }
                finished.insert(uid);
            }
        }
    }
}
