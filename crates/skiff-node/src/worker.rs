//! One pod's worker: drives the pod through its lifecycle (a typed state machine with its
//! transitions in [`Stage::can_become`]), runs and restarts its containers, reacts to exits
//! and probes, and writes the pod's status and events.

use std::collections::{HashMap, HashSet};
use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use k8s_openapi::api::core::v1::{Container, Pod, PodSpec};
use kube::Api;
use kube::api::{DeleteParams, Patch, PatchParams, Preconditions};
use serde_json::{Value, json};
use skiff_runtime::network::{PodNetworkStatus, PodRef, PortMapping};
use skiff_runtime::{ContainerSpec, ContainerState, ContainerStatus, RuntimeError};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

use crate::agent::{ContainerView, NodeAgent, PodView};
use crate::backoff::{Backoff, go_duration};
use crate::env::{PodFacts, Sources};
use crate::events::Involved;
use crate::ids::{container_id, parse_container_id};
use crate::probe::{self, ProbeEvent, ProbeKind};
use crate::volumes::{self, PodFiles};

/// The pod's lifecycle. Every change goes through [`Worker::transition`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    /// Seen, nothing done yet.
    Pending,
    /// Volumes, network sandbox and pod files being set up.
    Preparing,
    /// Containers (init, then app) being created; some app container never ran yet.
    Creating,
    /// Every app container was started; some have not passed their startup probe.
    Starting,
    /// Every app container is started (restarts happen within this stage).
    Running,
    /// All containers are done for good (phase Succeeded or Failed); kept until deleted.
    Finished,
    /// Deletion requested: containers stopping, sandbox and volumes being removed.
    Terminating,
    /// Cleaned up and deleted; the worker ends.
    Terminated,
}

impl Stage {
    /// The allowed transitions.
    pub fn can_become(self, to: Stage) -> bool {
        use Stage::*;
        match (self, to) {
            (Terminated, _) => false,
            (_, Terminating) => self != Terminating,
            (Terminating, Terminated) => true,
            (Pending, Preparing | Finished) => true,
            (Preparing, Creating | Finished) => true,
            (Creating, Starting | Running | Finished) => true,
            (Starting, Running | Creating | Finished) => true,
            (Running, Starting | Finished) => true,
            _ => false,
        }
    }
}

/// What the dispatcher tells a worker.
#[derive(Debug, Clone)]
pub enum PodUpdate {
    /// The pod as last seen in the API.
    Present(Box<Pod>),
    /// The pod is gone from the API (deleted with grace 0, or while we were not watching).
    Gone(Box<Pod>),
}

/// How a container instance ended.
#[derive(Debug, Clone)]
struct Exit {
    code: i32,
    signal: Option<i32>,
    reason: String,
    message: Option<String>,
    finished_at: SystemTime,
    finished: Instant,
}

/// One run of a container: runtime id `<uid>_<name>_<restart>`.
#[derive(Debug, Clone)]
struct Instance {
    id: String,
    restart: u32,
    started_at: Option<SystemTime>,
    exit: Option<Exit>,
    /// The spec image it runs (`None` for adopted instances: whatever the spec says).
    image: Option<String>,
}

/// A container of the pod across its restarts.
struct Slot {
    name: String,
    init: bool,
    /// An init container with `restartPolicy: Always` (a sidecar): it keeps running next
    /// to the app containers, is restarted whenever it exits, and has probes.
    sidecar: bool,
    current: Option<Instance>,
    previous: Option<Instance>,
    /// Why it is not running (shown as `state.waiting` while no instance runs).
    waiting: Option<(String, String)>,
    retry_at: Option<Instant>,
    backoff: Backoff,
    /// Restart count the status last reported (seeds numbering when nothing is adopted).
    seen_restarts: u32,
    seen_ran: bool,
    ready: bool,
    started: bool,
    /// The spec changed under a running instance: it is being stopped and starts again
    /// at once, whatever the restart policy.
    respec: bool,
    image_id: String,
    probes: Option<JoinHandle<()>>,
    waiter: Option<JoinHandle<()>>,
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.stop_tasks();
    }
}

impl Slot {
    fn stop_tasks(&mut self) {
        if let Some(p) = self.probes.take() {
            p.abort();
        }
        if let Some(w) = self.waiter.take() {
            w.abort();
        }
    }

    fn running(&self) -> bool {
        self.current.as_ref().is_some_and(|i| i.exit.is_none())
    }

    fn exited(&self) -> Option<&Exit> {
        self.current.as_ref().and_then(|i| i.exit.as_ref())
    }

    /// Restart count as Kubernetes reports it.
    fn restart_count(&self) -> u32 {
        self.current
            .as_ref()
            .map_or(self.seen_restarts, |i| i.restart)
    }
}

fn rfc3339(t: SystemTime) -> String {
    chrono::DateTime::<chrono::Utc>::from(t).to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

fn now_str() -> String {
    rfc3339(SystemTime::now())
}

/// An `Instant` for a past `SystemTime`.
fn instant_of(t: SystemTime) -> Instant {
    let ago = SystemTime::now().duration_since(t).unwrap_or_default();
    Instant::now().checked_sub(ago).unwrap_or_else(Instant::now)
}

fn exit_of(st: &ContainerStatus) -> Exit {
    let code = st.exit_code.unwrap_or(255);
    let reason = if st.oom_killed {
        "OOMKilled"
    } else if code == 0 {
        "Completed"
    } else {
        "Error"
    };
    let finished_at = st.finished_at.unwrap_or_else(SystemTime::now);
    Exit {
        code,
        signal: st.signal,
        reason: reason.to_string(),
        message: None,
        finished_at,
        finished: instant_of(finished_at),
    }
}

/// Longest grace period for the containers of a pod removed from the API without one.
const GONE_GRACE: Duration = Duration::from_secs(2);

/// How long a postStart hook may take.
const POST_START_TIMEOUT: Duration = Duration::from_secs(30);

type ExitMsg = (String, Result<ContainerStatus, String>);
type ProbeMsg = (String, ProbeEvent);

pub(crate) struct Worker {
    agent: Arc<NodeAgent>,
    pod: Pod,
    uid: String,
    namespace: String,
    name: String,
    stage: Stage,
    sandbox: Option<PodNetworkStatus>,
    volumes: HashMap<String, PathBuf>,
    files: Option<PodFiles>,
    inits: Vec<Slot>,
    apps: Vec<Slot>,
    initialized: bool,
    /// Phase once Succeeded/Failed: final, nothing runs any more.
    terminal: Option<&'static str>,
    start_time: Option<String>,
    /// Condition type -> (status, lastTransitionTime).
    transitions: HashMap<String, (bool, String)>,
    last_status: Option<Value>,
    status_retry: Option<Instant>,
    prepare_retry: Option<Instant>,
    prepare_error: Option<String>,
    volumes_resync: Option<Instant>,
    /// `activeDeadlineSeconds` ran out (status reason `DeadlineExceeded`).
    deadline_exceeded: bool,
    warned: HashSet<String>,
    /// The pod had finished before this worker started: its status is history, not ours.
    frozen: bool,
    exit_tx: mpsc::UnboundedSender<ExitMsg>,
    exit_rx: mpsc::UnboundedReceiver<ExitMsg>,
    probe_tx: mpsc::UnboundedSender<ProbeMsg>,
    probe_rx: mpsc::UnboundedReceiver<ProbeMsg>,
}

impl Worker {
    pub(crate) fn new(agent: Arc<NodeAgent>, pod: Pod, adopted: Vec<ContainerStatus>) -> Worker {
        let uid = pod.metadata.uid.clone().unwrap_or_default();
        let namespace = pod.metadata.namespace.clone().unwrap_or_default();
        let name = pod.metadata.name.clone().unwrap_or_default();
        let spec = pod.spec.clone().unwrap_or_default();
        let status = pod.status.clone().unwrap_or_default();
        let cfg = &agent.config;
        let seen = |init: bool, n: &str| {
            let list = if init {
                status.init_container_statuses.as_ref()
            } else {
                status.container_statuses.as_ref()
            };
            list.and_then(|l| l.iter().find(|s| s.name == n))
        };
        let runtime_name = agent.runtime.name();
        let make = |c: &Container, init: bool| {
            let reported = seen(init, &c.name);
            let (seen_restarts, seen_ran, image_id) = reported
                .map(|s| {
                    (
                        s.restart_count.max(0) as u32,
                        s.container_id.is_some(),
                        s.image_id.clone(),
                    )
                })
                .unwrap_or((0, false, String::new()));
            let mut slot = Slot {
                name: c.name.clone(),
                init,
                sidecar: init && c.restart_policy.as_deref() == Some("Always"),
                current: None,
                previous: None,
                waiting: None,
                retry_at: None,
                backoff: Backoff::new(cfg.backoff_base, cfg.backoff_max, cfg.backoff_reset),
                seen_restarts,
                seen_ran,
                ready: false,
                started: false,
                respec: false,
                image_id,
                probes: None,
                waiter: None,
            };
            // Adopted instances of this container, newest first.
            let mut mine: Vec<(u32, &ContainerStatus)> = adopted
                .iter()
                .filter_map(|st| {
                    let key = parse_container_id(&st.id)?;
                    (key.container == c.name).then_some((key.restart, st))
                })
                .collect();
            mine.sort_by_key(|(r, _)| std::cmp::Reverse(*r));
            let instance = |(restart, st): (u32, &ContainerStatus)| Instance {
                id: st.id.clone(),
                restart,
                started_at: st.started_at,
                exit: (st.state == ContainerState::Exited).then(|| exit_of(st)),
                image: None,
            };
            slot.current = mine.first().copied().map(instance);
            slot.previous = mine.get(1).copied().map(instance);
            // An adopted running container keeps the readiness it had: an agent restart
            // must not take the pod out of its Services until a probe says so.
            if let (Some(cur), Some(r)) = (&slot.current, reported)
                && cur.exit.is_none()
                && r.container_id.as_deref() == Some(&format!("{runtime_name}://{}", cur.id))
            {
                slot.ready = r.ready;
                slot.started = r.started.unwrap_or(r.ready);
            }
            if slot.current.is_some() {
                // Back-off continues where it was rather than restarting at once.
                for _ in 0..slot.restart_count().min(8) {
                    slot.backoff.restarted();
                }
            }
            slot
        };
        let inits: Vec<Slot> = spec
            .init_containers
            .iter()
            .flatten()
            .map(|c| make(c, true))
            .collect();
        let apps: Vec<Slot> = spec.containers.iter().map(|c| make(c, false)).collect();
        let mut transitions = HashMap::new();
        for c in status.conditions.iter().flatten() {
            if let Some(t) = &c.last_transition_time {
                transitions.insert(c.type_.clone(), (c.status == "True", t.0.to_string()));
            }
        }
        let already_initialized = status
            .conditions
            .iter()
            .flatten()
            .any(|c| c.type_ == "Initialized" && c.status == "True")
            || apps.iter().any(|s| s.current.is_some())
            || inits.is_empty();
        let terminal = match status.phase.as_deref() {
            Some("Succeeded") => Some("Succeeded"),
            Some("Failed") => Some("Failed"),
            _ => None,
        };
        let (exit_tx, exit_rx) = mpsc::unbounded_channel();
        let (probe_tx, probe_rx) = mpsc::unbounded_channel();
        Worker {
            start_time: status.start_time.map(|t| t.0.to_string()),
            agent,
            pod,
            uid,
            namespace,
            name,
            stage: Stage::Pending,
            sandbox: None,
            volumes: HashMap::new(),
            files: None,
            inits,
            apps,
            initialized: already_initialized,
            terminal,
            transitions,
            last_status: None,
            status_retry: None,
            prepare_retry: None,
            prepare_error: None,
            volumes_resync: None,
            deadline_exceeded: false,
            warned: HashSet::new(),
            frozen: terminal.is_some(),
            exit_tx,
            exit_rx,
            probe_tx,
            probe_rx,
        }
    }

    fn transition(&mut self, to: Stage) {
        if self.stage == to {
            return;
        }
        if !self.stage.can_become(to) {
            tracing::warn!(pod = %self.key(), from = ?self.stage, ?to, "invalid pod stage transition");
            return;
        }
        tracing::debug!(pod = %self.key(), from = ?self.stage, ?to, "pod stage");
        self.stage = to;
    }

    fn key(&self) -> String {
        format!("{}/{}", self.namespace, self.name)
    }

    fn spec(&self) -> PodSpec {
        self.pod.spec.clone().unwrap_or_default()
    }

    fn involved(&self, container: Option<(&str, bool)>) -> Involved {
        Involved {
            namespace: self.namespace.clone(),
            name: self.name.clone(),
            uid: self.uid.clone(),
            field_path: container.map(|(c, init)| {
                if init {
                    format!("spec.initContainers{{{c}}}")
                } else {
                    format!("spec.containers{{{c}}}")
                }
            }),
        }
    }

    fn pod_label(&self) -> String {
        format!("{}_{}({})", self.name, self.namespace, self.uid)
    }

    /// Runs until the pod is deleted and cleaned up, or the agent stops (`rx` closes).
    pub(crate) async fn run(mut self, mut rx: watch::Receiver<PodUpdate>) {
        if self.terminal.is_some() {
            // A pod that finished before (e.g. before an agent restart) never runs again.
            self.transition(Stage::Finished);
        }
        self.publish_view();
        loop {
            let gone = match &*rx.borrow_and_update() {
                PodUpdate::Present(p) => {
                    self.pod = (**p).clone();
                    false
                }
                PodUpdate::Gone(p) => {
                    self.pod = (**p).clone();
                    true
                }
            };
            if gone || self.pod.metadata.deletion_timestamp.is_some() {
                self.terminate(gone).await;
                return;
            }
            self.sync().await;
            self.write_status().await;
            self.publish_view();
            let deadline = self.next_wake();
            tokio::select! {
                changed = rx.changed() => {
                    if changed.is_err() {
                        // The agent is stopping: leave the containers for the next agent.
                        return;
                    }
                }
                Some((id, st)) = self.exit_rx.recv() => self.on_exit(&id, st),
                Some((id, ev)) = self.probe_rx.recv() => self.on_probe(&id, ev).await,
                _ = sleep_until(deadline) => {}
            }
        }
    }

    fn slot(&self, i: usize) -> &Slot {
        if i < self.inits.len() {
            &self.inits[i]
        } else {
            &self.apps[i - self.inits.len()]
        }
    }

    fn slot_mut(&mut self, i: usize) -> &mut Slot {
        let n = self.inits.len();
        if i < n {
            &mut self.inits[i]
        } else {
            &mut self.apps[i - n]
        }
    }

    fn container(&self, i: usize) -> Option<Container> {
        let spec = self.spec();
        let n = self.inits.len();
        if i < n {
            spec.init_containers.and_then(|c| c.get(i).cloned())
        } else {
            spec.containers.get(i - n).cloned()
        }
    }

    fn find_instance(&self, id: &str) -> Option<usize> {
        (0..self.inits.len() + self.apps.len())
            .find(|&i| self.slot(i).current.as_ref().is_some_and(|c| c.id == id))
    }

    fn next_wake(&self) -> Option<Instant> {
        let slots = self.inits.iter().chain(self.apps.iter());
        slots
            .filter_map(|s| s.retry_at)
            .chain(self.prepare_retry)
            .chain(self.status_retry)
            .chain(self.volumes_resync.filter(|_| self.terminal.is_none()))
            .chain(self.active_deadline().filter(|_| self.terminal.is_none()))
            .min()
    }

    /// When `activeDeadlineSeconds` (counted from `startTime`) runs out.
    fn active_deadline(&self) -> Option<Instant> {
        let secs = self.pod.spec.as_ref()?.active_deadline_seconds?;
        let start = chrono::DateTime::parse_from_rfc3339(self.start_time.as_deref()?).ok()?;
        let end = SystemTime::from(start) + Duration::from_secs(secs.max(0) as u64);
        Some(match end.duration_since(SystemTime::now()) {
            Ok(left) => Instant::now() + left,
            Err(_) => Instant::now(),
        })
    }

    /// The pod outlived its `activeDeadlineSeconds`: every container is stopped and the pod
    /// fails with reason `DeadlineExceeded`, as the kubelet does.
    async fn enforce_deadline(&mut self) {
        let message = "Pod was active on the node longer than the specified deadline";
        self.agent
            .recorder
            .warning(&self.involved(None), "DeadlineExceeded", message);
        let grace = self.grace_period(None);
        let mut stops = Vec::new();
        for i in 0..self.inits.len() + self.apps.len() {
            if let (true, Some(target)) = (self.slot(i).running(), self.target(i)) {
                stops.push(async move {
                    let id = target.container_id.clone();
                    (id, probe::kill_container(&target, grace).await.1)
                });
            }
        }
        for (id, st) in futures::future::join_all(stops).await {
            self.on_exit(&id, st.map_err(|e| e.to_string()));
        }
        for s in self.inits.iter_mut().chain(self.apps.iter_mut()) {
            s.stop_tasks();
            s.ready = false;
            s.waiting = None;
            s.retry_at = None;
        }
        self.terminal = Some("Failed");
        self.deadline_exceeded = true;
        self.transition(Stage::Finished);
    }

    /// One pass of the state machine: does what the current stage calls for.
    async fn sync(&mut self) {
        if self.terminal.is_some() {
            return;
        }
        if self.active_deadline().is_some_and(|t| Instant::now() >= t) {
            self.enforce_deadline().await;
            return;
        }
        if self.stage == Stage::Pending {
            self.transition(Stage::Preparing);
        }
        if self.stage == Stage::Preparing {
            if self.prepare_retry.is_some_and(|t| Instant::now() < t) {
                return;
            }
            match self.prepare().await {
                Ok(()) => {
                    self.prepare_retry = None;
                    self.prepare_error = None;
                    self.volumes_resync =
                        Some(Instant::now() + self.agent.config.volume_resync_interval);
                    self.transition(Stage::Creating);
                    // Adopted running instances need their exit waiters and probes again,
                    // now that the pod IP is known.
                    for i in 0..self.inits.len() + self.apps.len() {
                        if self.slot(i).running() && self.slot(i).waiter.is_none() {
                            self.watch_instance(i);
                        }
                    }
                }
                Err((reason, message)) => {
                    if self.prepare_error.as_deref() != Some(message.as_str()) {
                        self.agent
                            .recorder
                            .warning(&self.involved(None), &reason, message.clone());
                        self.prepare_error = Some(message);
                    }
                    self.prepare_retry = Some(Instant::now() + self.agent.config.retry_interval);
                    return;
                }
            }
        }
        if self.volumes_resync.is_some_and(|t| Instant::now() >= t) {
            self.resync_volumes().await;
        }
        if !self.initialized {
            self.sync_inits().await;
        }
        if self.initialized {
            // Sidecars keep running (and restarting) next to the app containers.
            for i in 0..self.inits.len() {
                if self.inits[i].sidecar {
                    self.sync_slot(i).await;
                }
            }
            for i in self.inits.len()..self.inits.len() + self.apps.len() {
                self.sync_slot(i).await;
            }
        }
        let phase = self.phase();
        if matches!(phase, "Succeeded" | "Failed") {
            // The app containers are done: the sidecars go too.
            self.stop_sidecars().await;
            self.terminal = Some(phase);
            for s in self.inits.iter_mut().chain(self.apps.iter_mut()) {
                s.stop_tasks();
                s.ready = false;
                s.retry_at = None;
            }
            self.transition(Stage::Finished);
            return;
        }
        let all_ran = self.initialized && self.apps.iter().all(|s| s.current.is_some());
        let all_started = all_ran && self.apps.iter().all(|s| s.started || s.exited().is_some());
        let next = match (all_ran, all_started) {
            (false, _) => Stage::Creating,
            (true, false) => Stage::Starting,
            (true, true) => Stage::Running,
        };
        if next != Stage::Creating || self.stage == Stage::Starting {
            self.transition(next);
        }
    }

    /// Rewrites configMap, secret, downwardAPI and projected volumes from the current
    /// objects, as the kubelet does periodically (files change atomically under the app).
    async fn resync_volumes(&mut self) {
        self.volumes_resync = Some(Instant::now() + self.agent.config.volume_resync_interval);
        let pod_ip = self.sandbox.as_ref().map(|s| s.ip);
        let root = self.agent.config.root_dir.clone();
        let client = self.agent.client.clone();
        let mut sources = Sources::new(&client, &self.namespace);
        let facts = self.facts(pod_ip);
        if let Err(e) = volumes::prepare(&root, &mut sources, &facts).await {
            tracing::debug!(pod = %self.key(), error = %e, "refreshing volumes");
        }
    }

    /// Volumes, the network sandbox and the pod's /etc files.
    async fn prepare(&mut self) -> Result<(), (String, String)> {
        let spec = self.spec();
        let ports: Vec<PortMapping> = spec
            .containers
            .iter()
            .flat_map(|c| c.ports.iter().flatten())
            .filter_map(|p| {
                let host_port = u16::try_from(p.host_port?).ok().filter(|p| *p > 0)?;
                Some(PortMapping {
                    host_ip: p.host_ip.as_deref().and_then(|h| h.parse().ok()),
                    host_port,
                    container_port: u16::try_from(p.container_port).ok()?,
                    protocol: p
                        .protocol
                        .clone()
                        .unwrap_or_else(|| "TCP".into())
                        .to_lowercase(),
                })
            })
            .collect();
        if self.sandbox.is_none() {
            let pod_ref = PodRef {
                namespace: self.namespace.clone(),
                name: self.name.clone(),
                uid: self.uid.clone(),
            };
            let net = if spec.host_network == Some(true) {
                Ok(PodNetworkStatus {
                    netns: None,
                    ip: self.agent.config.host_ip(),
                })
            } else {
                self.agent.network.setup(&self.uid, &pod_ref, &ports).await
            };
            match net {
                Ok(s) => self.sandbox = Some(s),
                Err(e) => {
                    return Err((
                        "FailedCreatePodSandBox".into(),
                        format!("Failed to create pod sandbox: {e}"),
                    ));
                }
            }
        }
        let pod_ip = self.sandbox.as_ref().map(|s| s.ip);
        let root = self.agent.config.root_dir.clone();
        let client = self.agent.client.clone();
        let mut sources = Sources::new(&client, &self.namespace);
        let facts = self.facts(pod_ip);
        let volumes = volumes::prepare(&root, &mut sources, &facts)
            .await
            .map_err(|e| ("FailedMount".to_string(), e.to_string()))?;
        self.volumes = volumes;
        let pod = self.pod.clone();
        let dns = self.agent.config.dns.clone();
        let files = tokio::task::spawn_blocking(move || {
            volumes::write_pod_files(&root, &pod, pod_ip, dns.as_ref())
        })
        .await
        .map_err(|e| ("FailedMount".to_string(), e.to_string()))?
        .map_err(|e| ("FailedMount".to_string(), e.to_string()))?;
        self.files = Some(files);
        Ok(())
    }

    fn facts(&self, pod_ip: Option<IpAddr>) -> PodFacts<'_> {
        PodFacts {
            pod: &self.pod,
            pod_ip,
            host_ip: self.agent.config.host_ip(),
            node_milli_cpu: self.agent.node_milli_cpu,
            node_memory: self.agent.node_memory,
        }
    }

    /// Init containers one after the other; each must succeed before the next starts.
    async fn sync_inits(&mut self) {
        for i in 0..self.inits.len() {
            let s = &self.inits[i];
            // A sidecar lets the next one start once it has started (startup probe).
            let done = if s.sidecar {
                s.running() && s.started
            } else {
                s.exited().is_some_and(|e| e.code == 0)
            };
            if done {
                continue;
            }
            self.sync_slot(i).await;
            return;
        }
        self.initialized = true;
    }

    /// Stops the running sidecars (their preStop hooks first), waiting for them.
    async fn stop_sidecars(&mut self) {
        let grace = self.grace_period(None);
        let mut stops = Vec::new();
        for i in 0..self.inits.len() {
            if self.inits[i].sidecar
                && self.inits[i].running()
                && let Some(target) = self.target(i)
            {
                stops.push(async move {
                    let id = target.container_id.clone();
                    (id, probe::kill_container(&target, grace).await.1)
                });
            }
        }
        for (id, st) in futures::future::join_all(stops).await {
            self.on_exit(&id, st.map_err(|e| e.to_string()));
        }
    }

    /// Whether an exited container of this slot is to run again.
    fn wants_restart(&self, i: usize, exit: &Exit) -> bool {
        if self.slot(i).respec {
            return true;
        }
        let policy = self
            .spec()
            .restart_policy
            .unwrap_or_else(|| "Always".into());
        if self.slot(i).sidecar {
            return self.terminal.is_none();
        }
        if self.slot(i).init {
            return exit.code != 0 && policy != "Never";
        }
        match policy.as_str() {
            "Never" => false,
            "OnFailure" => exit.code != 0,
            _ => true,
        }
    }

    /// Starts, restarts (after back-off) or leaves alone one container.
    async fn sync_slot(&mut self, i: usize) {
        let now = Instant::now();
        let slot = self.slot(i);
        if slot.running() {
            self.check_spec_change(i);
            return;
        }
        if slot.respec && slot.exited().is_some() {
            self.slot_mut(i).respec = false;
            self.start_instance(i).await;
            return;
        }
        if let Some(exit) = slot.exited().cloned() {
            if !self.wants_restart(i, &exit) {
                let s = self.slot_mut(i);
                s.waiting = None;
                s.retry_at = None;
                return;
            }
            let at = slot.backoff.restart_at(exit.finished);
            if now < at {
                let delay = go_duration(slot.backoff.delay());
                let name = slot.name.clone();
                let init = slot.init;
                let newly = slot
                    .waiting
                    .as_ref()
                    .is_none_or(|(r, _)| r != "CrashLoopBackOff")
                    || slot.retry_at != Some(at);
                let message = format!(
                    "back-off {delay} restarting failed container={name} pod={}",
                    self.pod_label()
                );
                if newly {
                    self.agent.recorder.warning(
                        &self.involved(Some((&name, init))),
                        "BackOff",
                        format!(
                            "Back-off restarting failed container {name} in pod {}",
                            self.pod_label()
                        ),
                    );
                }
                let s = self.slot_mut(i);
                s.waiting = Some(("CrashLoopBackOff".into(), message));
                s.retry_at = Some(at);
                return;
            }
        } else if slot.retry_at.is_some_and(|t| now < t) {
            return;
        }
        self.start_instance(i).await;
    }

    /// A new image for a running container (e.g. `kubectl set image pod/...`): the kubelet
    /// kills it and starts the new one.
    fn check_spec_change(&mut self, i: usize) {
        let slot = self.slot(i);
        if slot.respec {
            return;
        }
        let want = self.container(i).and_then(|c| c.image);
        let have = slot.current.as_ref().and_then(|c| c.image.clone());
        let (Some(want), Some(have)) = (want, have) else {
            return;
        };
        if want == have {
            return;
        }
        let (name, init) = (slot.name.clone(), slot.init);
        let who = self.involved(Some((&name, init)));
        self.agent.recorder.normal(
            &who,
            "Killing",
            format!("Container {name} definition changed, will be restarted"),
        );
        let grace = self.grace_period(None);
        if let Some(target) = self.target(i) {
            tokio::spawn(async move {
                let _ = probe::kill_container(&target, grace).await;
            });
        }
        let s = self.slot_mut(i);
        s.respec = true;
        s.ready = false;
    }

    /// Sets a waiting reason and schedules another attempt.
    fn wait_and_retry(
        &mut self,
        i: usize,
        reason: &str,
        message: String,
        event: Option<(&str, String)>,
    ) {
        let (name, init) = (self.slot(i).name.clone(), self.slot(i).init);
        let changed = self
            .slot(i)
            .waiting
            .as_ref()
            .is_none_or(|(_, m)| *m != message);
        if changed && let Some((r, m)) = event {
            self.agent
                .recorder
                .warning(&self.involved(Some((&name, init))), r, m);
        }
        let retry = self.agent.config.retry_interval;
        let s = self.slot_mut(i);
        s.waiting = Some((reason.to_string(), message));
        s.retry_at = Some(Instant::now() + retry);
    }

    /// Registry credentials for `image` from the pod's `imagePullSecrets` (dockerconfigjson
    /// and dockercfg Secrets, in order), like the kubelet.
    async fn pull_credentials(
        &self,
        image: &str,
    ) -> Option<skiff_runtime::images::pull::Credentials> {
        use k8s_openapi::api::core::v1::Secret;
        let names: Vec<String> = self
            .spec()
            .image_pull_secrets
            .unwrap_or_default()
            .into_iter()
            .map(|r| r.name)
            .filter(|n| !n.is_empty())
            .collect();
        if names.is_empty() {
            return None;
        }
        let domain = skiff_runtime::images::Reference::parse(image).ok()?.domain;
        let ns = self.pod.metadata.namespace.clone().unwrap_or_default();
        let api: kube::Api<Secret> = kube::Api::namespaced(self.agent.client.clone(), &ns);
        let mut configs = Vec::new();
        for name in names {
            let Ok(Some(secret)) = api.get_opt(&name).await else {
                continue;
            };
            let data = secret.data.unwrap_or_default();
            for key in [".dockerconfigjson", ".dockercfg"] {
                if let Some(v) = data.get(key) {
                    configs.push(v.0.clone());
                }
            }
        }
        skiff_runtime::images::pull::credentials_from_secrets(
            configs.iter().map(Vec::as_slice),
            &domain,
        )
    }

    /// Image, configuration, create, start: one new instance of container `i`.
    async fn start_instance(&mut self, i: usize) {
        let Some(c) = self.container(i) else { return };
        let (name, init) = (c.name.clone(), self.slot(i).init);
        let who = self.involved(Some((&name, init)));
        let image = c.image.clone().unwrap_or_default();
        let policy = c.image_pull_policy.clone().unwrap_or_else(|| {
            if image.ends_with(":latest") || !image.rsplit('/').next().unwrap_or("").contains(':') {
                "Always".into()
            } else {
                "IfNotPresent".into()
            }
        });

        // 1. The image: from the local store, or pulled from its registry per the policy.
        let mut resolved = None;
        if let Some(store) = self.agent.images.clone() {
            use skiff_runtime::images::pull::{PullOptions, PullPolicy, ensure_image};
            let policy = PullPolicy::parse(&policy).unwrap_or(PullPolicy::IfNotPresent);
            let present = {
                let (store, img) = (store.clone(), image.clone());
                tokio::task::spawn_blocking(move || store.resolve(&img).is_ok())
                    .await
                    .unwrap_or(false)
            };
            if !(present && policy != PullPolicy::Always) && policy != PullPolicy::Never {
                self.agent
                    .recorder
                    .normal(&who, "Pulling", format!("Pulling image \"{image}\""));
            }
            let opts = PullOptions {
                credentials: self.pull_credentials(&image).await,
                ..PullOptions::default()
            };
            let started = std::time::Instant::now();
            match ensure_image(&store, &image, policy, &opts).await {
                Ok(r) => {
                    let message = if present && policy != PullPolicy::Always {
                        format!("Container image \"{image}\" already present on machine")
                    } else {
                        format!(
                            "Successfully pulled image \"{image}\" in {:.3}s",
                            started.elapsed().as_secs_f64()
                        )
                    };
                    self.agent.recorder.normal(&who, "Pulled", message);
                    resolved = Some(r);
                }
                Err(e) if e.reason() == "ErrImageNeverPull" => {
                    let m = format!(
                        "Container image \"{image}\" is not present with pull policy of Never"
                    );
                    self.wait_and_retry(
                        i,
                        "ErrImageNeverPull",
                        m.clone(),
                        Some(("ErrImageNeverPull", m)),
                    );
                    return;
                }
                Err(e) => {
                    let reason = match e.reason() {
                        "InvalidImageName" => "InvalidImageName",
                        _ => "ImagePullBackOff",
                    };
                    self.wait_and_retry(
                        i,
                        reason,
                        format!("Back-off pulling image \"{image}\": {e}"),
                        Some(("Failed", format!("Failed to pull image \"{image}\": {e}"))),
                    );
                    return;
                }
            }
        }

        // 2. Configuration: environment, command, mounts, resources.
        let pod_ip = self.sandbox.as_ref().map(|s| s.ip);
        let client = self.agent.client.clone();
        let links = self.spec().enable_service_links.unwrap_or(true);
        let services = crate::env::service_env(&client, &self.namespace, links).await;
        let env = {
            let mut sources = Sources::new(&client, &self.namespace);
            let facts = self.facts(pod_ip);
            crate::env::container_env(&mut sources, &facts, &c, services).await
        };
        let env = match env {
            Ok(e) => e,
            Err(e) => {
                let m = e.to_string();
                self.wait_and_retry(
                    i,
                    "CreateContainerConfigError",
                    m.clone(),
                    Some(("Failed", format!("Error: {m}"))),
                );
                return;
            }
        };
        let image_cfg = resolved.as_ref().and_then(|r| r.config.config().clone());
        let mut full_env: Vec<(String, String)> = Vec::new();
        for kv in image_cfg
            .as_ref()
            .and_then(|c| c.env().clone())
            .unwrap_or_default()
        {
            if let Some((k, v)) = kv.split_once('=') {
                full_env.push((k.to_string(), v.to_string()));
            }
        }
        for (k, v) in &env {
            match full_env.iter_mut().find(|(n, _)| n == k) {
                Some(slot) => slot.1 = v.clone(),
                None => full_env.push((k.clone(), v.clone())),
            }
        }
        let vars: HashMap<&str, &str> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        let expand = |v: &Vec<String>| -> Vec<String> {
            v.iter().map(|s| crate::env::expand(s, &vars)).collect()
        };
        let (command, args) = {
            let cmd = c.command.clone().unwrap_or_default();
            let args = c.args.clone().unwrap_or_default();
            let entry = image_cfg
                .as_ref()
                .and_then(|c| c.entrypoint().clone())
                .unwrap_or_default();
            let image_cmd = image_cfg
                .as_ref()
                .and_then(|c| c.cmd().clone())
                .unwrap_or_default();
            // Kubernetes: command replaces the entrypoint (and drops the image's Cmd);
            // args replace the Cmd.
            match (cmd.is_empty(), args.is_empty()) {
                (false, _) => (expand(&cmd), expand(&args)),
                (true, false) => (entry, expand(&args)),
                (true, true) => (entry, image_cmd),
            }
        };
        if command.is_empty() && args.is_empty() {
            let m = "no command specified".to_string();
            self.wait_and_retry(
                i,
                "CreateContainerError",
                m.clone(),
                Some(("Failed", format!("Error: {m}"))),
            );
            return;
        }
        let spec_pod = self.spec();
        let ro = volumes::read_only_volumes(&spec_pod);
        let mounts = match &self.files {
            Some(files) => volumes::container_mounts(&c, &self.volumes, files, &ro),
            None => Err("pod files are not prepared".to_string()),
        };
        let mounts = match mounts {
            Ok(m) => m,
            Err(m) => {
                self.wait_and_retry(
                    i,
                    "CreateContainerConfigError",
                    m.clone(),
                    Some(("Failed", format!("Error: {m}"))),
                );
                return;
            }
        };
        let sc = c.security_context.as_ref();
        let psc = spec_pod.security_context.as_ref();
        let user = sc
            .and_then(|s| s.run_as_user)
            .or_else(|| psc.and_then(|s| s.run_as_user))
            .map(|u| {
                let g = sc
                    .and_then(|s| s.run_as_group)
                    .or_else(|| psc.and_then(|s| s.run_as_group))
                    .unwrap_or(0);
                (u.max(0) as u32, g.max(0) as u32)
            });
        let working_dir = c
            .working_dir
            .clone()
            .or_else(|| image_cfg.as_ref().and_then(|c| c.working_dir().clone()))
            .filter(|w| !w.is_empty());
        let restart = match self.slot(i).current.as_ref() {
            Some(cur) => cur.restart + 1,
            None if self.slot(i).seen_ran => self.slot(i).seen_restarts + 1,
            None => self.slot(i).seen_restarts,
        };
        let id = container_id(&self.uid, &name, restart);
        let spec = ContainerSpec {
            id: id.clone(),
            image: resolved
                .as_ref()
                .map(|r| r.reference.clone())
                .filter(|r| !r.is_empty())
                .unwrap_or_else(|| image.clone()),
            command,
            args,
            env: full_env,
            working_dir,
            mounts,
            resources: crate::resources::container_resources(&c),
            network_namespace: self.sandbox.as_ref().and_then(|s| s.netns.clone()),
            hostname: Some(
                spec_pod
                    .hostname
                    .clone()
                    .unwrap_or_else(|| self.name.clone()),
            ),
            cgroup_parent: Some(crate::cgroups::pod_cgroup(&self.uid)),
            user,
        };

        // 3. Create and start.
        let runtime = self.agent.runtime.clone();
        // A leftover from an attempt that died half-way would collide.
        match runtime.remove(&id).await {
            Ok(()) | Err(RuntimeError::NotFound(_)) => {}
            Err(e) => tracing::debug!(%id, error = %e, "removing a stale container"),
        }
        if let Err(e) = runtime.create(&spec).await {
            let m = e.to_string();
            self.wait_and_retry(
                i,
                "CreateContainerError",
                m.clone(),
                Some(("Failed", format!("Error: {m}"))),
            );
            return;
        }
        self.agent
            .recorder
            .normal(&who, "Created", format!("Created container: {name}"));
        let started = runtime.start(&id).await;
        if let Some(r) = &resolved {
            let s = self.slot_mut(i);
            s.image_id = format!("{}@{}", r.reference, r.manifest_digest);
        }
        let now = SystemTime::now();
        let instance = Instance {
            id: id.clone(),
            restart,
            started_at: Some(now),
            exit: None,
            image: Some(image.clone()),
        };
        {
            let s = self.slot_mut(i);
            if s.current.is_some() {
                s.backoff.restarted();
            } else {
                // The first run: a crash right away restarts at once, then backs off.
            }
            let old_previous = s.previous.take();
            s.previous = s.current.take();
            s.current = Some(instance);
            s.waiting = None;
            s.retry_at = None;
            s.ready = false;
            s.started = false;
            if let Some(old) = old_previous {
                let rt = runtime.clone();
                tokio::spawn(async move {
                    let _ = rt.remove(&old.id).await;
                });
            }
        }
        match started {
            Ok(()) => {
                self.agent
                    .recorder
                    .normal(&who, "Started", format!("Started container {name}"));
                self.watch_instance(i);
                self.post_start(i).await;
            }
            Err(e) => {
                let m = e.to_string();
                self.agent
                    .recorder
                    .warning(&who, "Failed", format!("Error: {m}"));
                let s = self.slot_mut(i);
                if let Some(cur) = s.current.as_mut() {
                    cur.exit = Some(Exit {
                        code: 128,
                        signal: None,
                        reason: "StartError".into(),
                        message: Some(m),
                        finished_at: now,
                        finished: Instant::now(),
                    });
                }
            }
        }
    }

    /// Runs the postStart hook; a failure kills the container (the restart policy decides).
    async fn post_start(&mut self, i: usize) {
        let Some(target) = self.target(i) else { return };
        let Some(hook) = target
            .container
            .lifecycle
            .as_ref()
            .and_then(|l| l.post_start.clone())
        else {
            return;
        };
        let grace = self.grace_period(None);
        let Err(e) = probe::run_hook(&hook, &target, POST_START_TIMEOUT).await else {
            return;
        };
        let (name, init) = (self.slot(i).name.clone(), self.slot(i).init);
        let who = self.involved(Some((&name, init)));
        self.agent.recorder.warning(
            &who,
            "FailedPostStartHook",
            format!("PostStartHook failed: {e}"),
        );
        self.agent.recorder.normal(
            &who,
            "Killing",
            format!("FailedPostStartHook: container {name} will be restarted"),
        );
        let runtime = self.agent.runtime.clone();
        let id = target.container_id.clone();
        tokio::spawn(async move {
            let _ = runtime.stop(&id, grace).await;
        });
    }

    /// Where probes and hooks of container `i`'s current instance go.
    fn target(&self, i: usize) -> Option<probe::Target> {
        let id = self.slot(i).current.as_ref()?.id.clone();
        Some(probe::Target {
            pod_ip: self
                .sandbox
                .as_ref()
                .map(|s| s.ip)
                .unwrap_or(self.agent.config.host_ip()),
            runtime: self.agent.runtime.clone(),
            container_id: id,
            container: self.container(i)?,
            initially_ready: self.slot(i).ready,
            initially_started: self.slot(i).started,
        })
    }

    /// Starts the exit waiter and the probes of container `i`'s running instance.
    fn watch_instance(&mut self, i: usize) {
        let Some(id) = self.slot(i).current.as_ref().map(|c| c.id.clone()) else {
            return;
        };
        let runtime = self.agent.runtime.clone();
        let tx = self.exit_tx.clone();
        let wid = id.clone();
        let waiter = tokio::spawn(async move {
            // A failed wait on a container that still runs must not count as an exit
            // (a restart would then run two instances): look again, then wait again.
            let r = loop {
                match runtime.wait(&wid).await {
                    Ok(st) => break Ok(st),
                    Err(e @ RuntimeError::NotFound(_)) => break Err(e.to_string()),
                    Err(e) => {
                        tokio::time::sleep(Duration::from_secs(1)).await;
                        match runtime.status(&wid).await {
                            Ok(st) if st.state == ContainerState::Running => {
                                tracing::debug!(id = %wid, error = %e, "waiting again");
                            }
                            Ok(st) if st.state == ContainerState::Exited => break Ok(st),
                            _ => break Err(e.to_string()),
                        }
                    }
                }
            };
            let _ = tx.send((wid, r));
        });
        let init = self.slot(i).init && !self.slot(i).sidecar;
        let container = self.container(i);
        let pod_ip = self
            .sandbox
            .as_ref()
            .map(|s| s.ip)
            .unwrap_or(self.agent.config.host_ip());
        let probes = match (init, container) {
            (false, Some(container)) => {
                let target = probe::Target {
                    pod_ip,
                    runtime: self.agent.runtime.clone(),
                    container_id: id,
                    container,
                    initially_ready: self.slot(i).ready,
                    initially_started: self.slot(i).started,
                };
                Some(tokio::spawn(probe::run(target, self.probe_tx.clone())))
            }
            _ => None,
        };
        let s = self.slot_mut(i);
        s.stop_tasks();
        s.waiter = Some(waiter);
        s.probes = probes;
        if init {
            s.started = true;
        }
    }

    fn on_exit(&mut self, id: &str, st: Result<ContainerStatus, String>) {
        let Some(i) = self.find_instance(id) else {
            return;
        };
        let exit = match st {
            Ok(st) => exit_of(&st),
            Err(message) => Exit {
                code: 255,
                signal: None,
                reason: "Error".into(),
                message: Some(message),
                finished_at: SystemTime::now(),
                finished: Instant::now(),
            },
        };
        let s = self.slot_mut(i);
        if let Some(p) = s.probes.take() {
            p.abort();
        }
        s.waiter = None;
        s.ready = false;
        if let Some(cur) = s.current.as_mut() {
            let ran = cur
                .started_at
                .and_then(|t| exit.finished_at.duration_since(t).ok())
                .unwrap_or_default();
            s.backoff.exited(ran);
            cur.exit = Some(exit);
        }
    }

    async fn on_probe(&mut self, id: &str, ev: ProbeEvent) {
        let Some(i) = self.find_instance(id) else {
            return;
        };
        if !self.slot(i).running() {
            return;
        }
        let (name, init) = (self.slot(i).name.clone(), self.slot(i).init);
        let who = self.involved(Some((&name, init)));
        match ev {
            ProbeEvent::Started => self.slot_mut(i).started = true,
            ProbeEvent::Ready(r) => self.slot_mut(i).ready = r,
            ProbeEvent::Unhealthy { kind, message } => {
                self.agent.recorder.warning(
                    &who,
                    "Unhealthy",
                    format!("{} probe failed: {message}", kind.title()),
                );
            }
            ProbeEvent::Skipped { kind, message } => {
                if self.warned.insert(format!("{name}/{kind:?}")) {
                    self.agent.recorder.warning(
                        &who,
                        "ProbeWarning",
                        format!("{} probe: {message}", kind.title()),
                    );
                }
            }
            ProbeEvent::Failed { kind, .. } => {
                let what = match kind {
                    ProbeKind::Startup => "startup",
                    _ => "liveness",
                };
                self.agent.recorder.normal(
                    &who,
                    "Killing",
                    format!("Container {name} failed {what} probe, will be restarted"),
                );
                let Some(target) = self.target(i) else { return };
                // A probe may carry its own grace period (probe-level
                // terminationGracePeriodSeconds); else the pod's applies.
                let probe = match kind {
                    ProbeKind::Startup => target.container.startup_probe.as_ref(),
                    _ => target.container.liveness_probe.as_ref(),
                };
                let grace = probe
                    .and_then(|p| p.termination_grace_period_seconds)
                    .map(|s| Duration::from_secs(s.max(0) as u64))
                    .unwrap_or_else(|| self.grace_period(None));
                let recorder = self.agent.recorder.clone();
                // The exit arrives through the waiter, and the restart policy decides.
                tokio::spawn(async move {
                    let (hook, stopped) = probe::kill_container(&target, grace).await;
                    if let Some(e) = hook {
                        recorder.warning(
                            &who,
                            "FailedPreStopHook",
                            format!("PreStopHook failed: {e}"),
                        );
                    }
                    if let Err(e) = stopped {
                        tracing::warn!(id = %target.container_id, error = %e, "stopping an unhealthy container");
                    }
                });
                self.slot_mut(i).ready = false;
            }
        }
    }

    /// The grace period for stopping containers: the delete's, else the pod's
    /// `terminationGracePeriodSeconds`. A pod already gone from the API (force-deleted)
    /// gets at most [`GONE_GRACE`]: nobody waits for it any more.
    fn grace_period(&self, deleted: Option<&Pod>) -> Duration {
        let meta = deleted.map(|p| &p.metadata).unwrap_or(&self.pod.metadata);
        let spec = self
            .pod
            .spec
            .as_ref()
            .and_then(|s| s.termination_grace_period_seconds)
            .unwrap_or(30);
        let secs = match (meta.deletion_grace_period_seconds, deleted) {
            (Some(g), _) => g,
            (None, Some(_)) => spec.min(GONE_GRACE.as_secs() as i64),
            (None, None) => spec,
        };
        Duration::from_secs(secs.max(0) as u64)
    }

    /// Pod phase from the containers, like the kubelet's getPhase.
    fn phase(&self) -> &'static str {
        if let Some(t) = self.terminal {
            return t;
        }
        let policy = self
            .spec()
            .restart_policy
            .unwrap_or_else(|| "Always".into());
        if !self.initialized {
            let failed_init = self.inits.iter().any(|s| {
                !s.sidecar && s.exited().is_some_and(|e| e.code != 0) && policy == "Never"
            });
            return if failed_init { "Failed" } else { "Pending" };
        }
        let (mut running, mut waiting, mut stopped, mut succeeded) = (0, 0, 0, 0);
        for (idx, s) in self.apps.iter().enumerate() {
            let i = self.inits.len() + idx;
            match (&s.current, s.exited()) {
                (None, _) => waiting += 1,
                (Some(_), None) => running += 1,
                (Some(_), Some(e)) => {
                    stopped += 1;
                    if e.code == 0 {
                        succeeded += 1;
                    }
                    // A container about to restart is still part of a running pod.
                    if self.wants_restart(i, e) {
                        running += 1;
                        stopped -= 1;
                        if e.code == 0 {
                            succeeded -= 1;
                        }
                    }
                }
            }
        }
        if waiting > 0 {
            "Pending"
        } else if running > 0 {
            "Running"
        } else if stopped > 0 {
            if succeeded == stopped {
                "Succeeded"
            } else {
                "Failed"
            }
        } else {
            "Pending"
        }
    }

    fn condition(
        &mut self,
        type_: &str,
        ok: bool,
        reason: Option<&str>,
        message: Option<String>,
    ) -> Value {
        let now = now_str();
        let entry = self
            .transitions
            .entry(type_.to_string())
            .or_insert_with(|| (ok, now.clone()));
        if entry.0 != ok {
            *entry = (ok, now);
        }
        let mut c = json!({
            "type": type_,
            "status": if ok { "True" } else { "False" },
            "lastProbeTime": null,
            "lastTransitionTime": entry.1,
        });
        if let Some(r) = reason {
            c["reason"] = json!(r);
        }
        if let Some(m) = message {
            c["message"] = json!(m);
        }
        c
    }

    fn container_status(&self, s: &Slot, image: &str) -> Value {
        let terminated = |inst: &Instance, e: &Exit| {
            let mut t = json!({
                "exitCode": e.code,
                "reason": e.reason,
                "startedAt": inst.started_at.map(rfc3339),
                "finishedAt": rfc3339(e.finished_at),
                "containerID": format!("{}://{}", self.agent.runtime.name(), inst.id),
            });
            if let Some(sig) = e.signal {
                t["signal"] = json!(sig);
            }
            if let Some(m) = &e.message {
                t["message"] = json!(m);
            }
            json!({"terminated": t})
        };
        let waiting = |reason: &str, message: Option<&str>| {
            let mut w = json!({"reason": reason});
            if let Some(m) = message {
                w["message"] = json!(m);
            }
            json!({"waiting": w})
        };
        let default_waiting = if s.init || self.initialized {
            "ContainerCreating"
        } else {
            "PodInitializing"
        };
        let (state, last) = match (&s.current, s.exited()) {
            (None, _) => (
                match &s.waiting {
                    Some((r, m)) => waiting(r, Some(m)),
                    None => waiting(default_waiting, None),
                },
                json!({}),
            ),
            (Some(inst), None) => (
                json!({"running": {"startedAt": inst.started_at.map(rfc3339)}}),
                match s
                    .previous
                    .as_ref()
                    .and_then(|p| p.exit.as_ref().map(|e| (p, e)))
                {
                    Some((p, e)) => terminated(p, e),
                    None => json!({}),
                },
            ),
            (Some(inst), Some(e)) => match &s.waiting {
                Some((r, m)) => (waiting(r, Some(m)), terminated(inst, e)),
                None => (
                    terminated(inst, e),
                    match s
                        .previous
                        .as_ref()
                        .and_then(|p| p.exit.as_ref().map(|e| (p, e)))
                    {
                        Some((p, e)) => terminated(p, e),
                        None => json!({}),
                    },
                ),
            },
        };
        let mut st = json!({
            "name": s.name,
            "image": image,
            "imageID": s.image_id,
            "state": state,
            "lastState": last,
            "ready": s.ready && s.running(),
            "started": s.running() && s.started,
            "restartCount": s.restart_count(),
        });
        if let Some(inst) = &s.current {
            st["containerID"] = json!(format!("{}://{}", self.agent.runtime.name(), inst.id));
        }
        st
    }

    fn build_status(&mut self) -> Value {
        let spec = self.spec();
        let phase = self.phase();
        let host_ip = self.agent.config.host_ip().to_string();
        let image_of = |cs: &[Container], name: &str| {
            cs.iter()
                .find(|c| c.name == name)
                .and_then(|c| c.image.clone())
                .unwrap_or_default()
        };
        let init_specs = spec.init_containers.clone().unwrap_or_default();
        let init_statuses: Vec<Value> = self
            .inits
            .iter()
            .map(|s| self.container_status(s, &image_of(&init_specs, &s.name)))
            .collect();
        let app_statuses: Vec<Value> = self
            .apps
            .iter()
            .map(|s| self.container_status(s, &image_of(&spec.containers, &s.name)))
            .collect();
        let unready: Vec<String> = self
            .inits
            .iter()
            .filter(|s| s.sidecar)
            .chain(self.apps.iter())
            .filter(|s| !(s.ready && s.running()))
            .map(|s| s.name.clone())
            .collect();
        let incomplete: Vec<String> = self
            .inits
            .iter()
            .filter(|s| {
                if s.sidecar {
                    !(s.running() && s.started)
                } else {
                    s.exited().is_none_or(|e| e.code != 0)
                }
            })
            .map(|s| s.name.clone())
            .collect();
        let terminal = matches!(phase, "Succeeded" | "Failed");
        let ready = unready.is_empty() && !terminal;
        let (ready_reason, ready_msg) = if terminal {
            (Some("PodCompleted"), None)
        } else if ready {
            (None, None)
        } else {
            (
                Some("ContainersNotReady"),
                Some(format!(
                    "containers with unready status: [{}]",
                    unready.join(" ")
                )),
            )
        };
        let sandbox_ready = self.sandbox.is_some() && !terminal;
        let mut conditions =
            vec![self.condition("PodReadyToStartContainers", sandbox_ready, None, None)];
        let init_ok = self.initialized || incomplete.is_empty();
        conditions.push(if init_ok {
            self.condition("Initialized", true, None, None)
        } else {
            self.condition(
                "Initialized",
                false,
                Some("ContainersNotInitialized"),
                Some(format!(
                    "containers with incomplete status: [{}]",
                    incomplete.join(" ")
                )),
            )
        });
        conditions.push(self.condition("Ready", ready, ready_reason, ready_msg.clone()));
        conditions.push(self.condition("ContainersReady", ready, ready_reason, ready_msg));
        conditions.push(self.condition("PodScheduled", true, None, None));
        if self.start_time.is_none() {
            self.start_time = Some(now_str());
        }
        let mut status = json!({
            "phase": phase,
            "conditions": conditions,
            "hostIP": host_ip,
            "hostIPs": [{"ip": host_ip}],
            "startTime": self.start_time,
            "qosClass": crate::resources::qos_class(&spec),
            "containerStatuses": app_statuses,
        });
        if self.deadline_exceeded {
            status["reason"] = json!("DeadlineExceeded");
            status["message"] =
                json!("Pod was active on the node longer than the specified deadline");
        }
        if !init_statuses.is_empty() {
            status["initContainerStatuses"] = json!(init_statuses);
        }
        if let Some(s) = &self.sandbox {
            status["podIP"] = json!(s.ip.to_string());
            status["podIPs"] = json!([{"ip": s.ip.to_string()}]);
        }
        status
    }

    /// Writes the status through `pods/status` when it differs from what was written last.
    async fn write_status(&mut self) {
        if self.stage == Stage::Pending || self.frozen {
            return;
        }
        let status = self.build_status();
        if self.last_status.as_ref() == Some(&status) && self.status_retry.is_none() {
            return;
        }
        let api: Api<Pod> = Api::namespaced(self.agent.client.clone(), &self.namespace);
        let patch = json!({"status": status});
        match api
            .patch_status(&self.name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
        {
            Ok(_) => {
                self.last_status = Some(status);
                self.status_retry = None;
            }
            Err(kube::Error::Api(e)) if e.code == 404 => {
                self.last_status = Some(status);
                self.status_retry = None;
            }
            Err(e) => {
                tracing::warn!(pod = %self.key(), error = %e, "writing pod status");
                self.status_retry = Some(Instant::now() + self.agent.config.retry_interval);
            }
        }
    }

    /// Tells the streaming side which runtime containers back this pod.
    fn publish_view(&self) {
        let view = PodView {
            uid: self.uid.clone(),
            netns: self.sandbox.as_ref().and_then(|s| s.netns.clone()),
            containers: self
                .inits
                .iter()
                .chain(self.apps.iter())
                .map(|s| ContainerView {
                    name: s.name.clone(),
                    init: s.init,
                    current: s.current.as_ref().map(|c| c.id.clone()),
                    previous: s.previous.as_ref().map(|c| c.id.clone()),
                    waiting: s.waiting.as_ref().map(|(r, _)| r.clone()),
                })
                .collect(),
        };
        self.agent.publish(&self.namespace, &self.name, Some(view));
    }

    /// Graceful termination: Killing events, SIGTERM, SIGKILL after the grace period,
    /// cleanup, then the final delete that lets the API server forget the pod.
    async fn terminate(&mut self, gone: bool) {
        self.transition(Stage::Terminating);
        let deleted = gone.then(|| self.pod.clone());
        let grace = self.grace_period(deleted.as_ref());
        let runtime = self.agent.runtime.clone();
        let mut stops = Vec::new();
        for i in 0..self.inits.len() + self.apps.len() {
            let s = self.slot_mut(i);
            if let Some(p) = s.probes.take() {
                p.abort();
            }
            s.ready = false;
            if s.running() {
                let id = s.current.as_ref().map(|c| c.id.clone()).unwrap_or_default();
                let (name, init) = (s.name.clone(), s.init);
                self.agent.recorder.normal(
                    &self.involved(Some((&name, init))),
                    "Killing",
                    format!("Stopping container {name}"),
                );
                let Some(target) = self.target(i) else {
                    continue;
                };
                let recorder = self.agent.recorder.clone();
                let who = self.involved(Some((&name, init)));
                stops.push(async move {
                    let (hook, stopped) = probe::kill_container(&target, grace).await;
                    if let Some(e) = hook {
                        recorder.warning(
                            &who,
                            "FailedPreStopHook",
                            format!("PreStopHook failed: {e}"),
                        );
                    }
                    match stopped {
                        Ok(st) => Some((id, st)),
                        Err(e) => {
                            tracing::warn!(%id, error = %e, "stopping a container");
                            None
                        }
                    }
                });
            }
        }
        for (id, st) in futures::future::join_all(stops).await.into_iter().flatten() {
            self.on_exit(&id, Ok(st));
        }
        // Every instance the runtime still has for this pod goes, adopted ones included.
        let mut ids: Vec<String> = runtime
            .list()
            .await
            .map(|l| {
                l.into_iter()
                    .map(|c| c.id)
                    .filter(|id| parse_container_id(id).is_some_and(|k| k.pod_uid == self.uid))
                    .collect()
            })
            .unwrap_or_default();
        for s in self.inits.iter().chain(self.apps.iter()) {
            for inst in s.current.iter().chain(s.previous.iter()) {
                if !ids.contains(&inst.id) {
                    ids.push(inst.id.clone());
                }
            }
        }
        for id in ids {
            remove_container(&*runtime, &id).await;
        }
        for s in self.inits.iter_mut().chain(self.apps.iter_mut()) {
            s.stop_tasks();
        }
        if let Err(e) = self.agent.network.teardown(&self.uid).await {
            tracing::warn!(pod = %self.key(), error = %e, "tearing down the pod network");
        }
        let root = self.agent.config.root_dir.clone();
        let uid = self.uid.clone();
        let cgroups = self.agent.runtime.capabilities().cgroups;
        let cleanup = move || {
            if cgroups {
                crate::cgroups::remove_pod(&uid);
            }
            volumes::cleanup(&root, &uid)
        };
        match tokio::task::spawn_blocking(cleanup).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::warn!(pod = %self.key(), error = %e, "removing pod volumes"),
            Err(e) => tracing::warn!(pod = %self.key(), error = %e, "removing pod volumes"),
        }
        self.agent.publish(&self.namespace, &self.name, None);
        if !gone {
            let api: Api<Pod> = Api::namespaced(self.agent.client.clone(), &self.namespace);
            let dp = DeleteParams {
                grace_period_seconds: Some(0),
                preconditions: Some(Preconditions {
                    uid: Some(self.uid.clone()),
                    resource_version: None,
                }),
                ..DeleteParams::default()
            };
            match api.delete(&self.name, &dp).await {
                Ok(_) => {}
                Err(kube::Error::Api(e)) if e.code == 404 || e.code == 409 => {}
                Err(e) => tracing::warn!(pod = %self.key(), error = %e, "final pod delete"),
            }
        }
        self.transition(Stage::Terminated);
    }
}

/// Removes a container, retrying a few times: a runtime may still be finishing up after
/// the container's exit (e.g. a shim writing its last log lines).
pub(crate) async fn remove_container(runtime: &dyn skiff_runtime::Runtime, id: &str) {
    let mut delay = Duration::from_millis(50);
    for attempt in 0..6 {
        match runtime.remove(id).await {
            Ok(()) | Err(RuntimeError::NotFound(_)) => return,
            Err(e) if attempt == 5 => {
                tracing::warn!(%id, error = %e, "removing a container");
                return;
            }
            Err(e) => {
                tracing::debug!(%id, error = %e, "removing a container, will retry");
                tokio::time::sleep(delay).await;
                delay *= 2;
            }
        }
    }
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(t) => tokio::time::sleep_until(tokio::time::Instant::from_std(t)).await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use super::Stage::*;

    #[test]
    fn stage_transitions() {
        assert!(Pending.can_become(Preparing));
        assert!(Preparing.can_become(Creating));
        assert!(Creating.can_become(Starting));
        assert!(Starting.can_become(Running));
        assert!(Running.can_become(Terminating));
        assert!(Finished.can_become(Terminating));
        assert!(Terminating.can_become(Terminated));
        assert!(!Terminated.can_become(Running));
        assert!(!Running.can_become(Preparing));
        assert!(!Terminating.can_become(Running));
        assert!(!Terminating.can_become(Terminating));
    }
}
