//! The `Runtime` trait every container runtime implements, with its capabilities and types.

use std::path::PathBuf;
use std::pin::Pin;
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use tokio::io::{AsyncRead, AsyncWrite};

/// What a runtime can do; callers (the node agent) branch on this instead of on runtime names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Capabilities {
    /// Containers get their own root filesystem, PID and mount namespaces.
    pub isolation: bool,
    /// CPU and memory limits are enforced through cgroups.
    pub cgroups: bool,
    /// Pods get their own network namespace.
    pub network_namespaces: bool,
    /// Commands can be run inside a running container (`kubectl exec`).
    pub exec: bool,
}

/// What to run. Kubernetes vocabulary: `command` is the entrypoint, `args` its arguments;
/// the node agent has already merged them with the image config.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ContainerSpec {
    /// Unique within the runtime; becomes a directory name, so `[A-Za-z0-9_.-]` only.
    pub id: String,
    /// Image reference; runtimes without isolation ignore it.
    pub image: String,
    pub command: Vec<String>,
    pub args: Vec<String>,
    pub env: Vec<(String, String)>,
    pub working_dir: Option<String>,
    /// Bind mounts (volumes, service-account token, /etc/resolv.conf, /etc/hosts).
    pub mounts: Vec<Mount>,
    /// Limits enforced through cgroups by runtimes whose capabilities say `cgroups`.
    pub resources: Resources,
    /// The pod's network namespace to join; `None` = the runtime's default (for `process`,
    /// the host's network; for `oci`, a namespace of the container's own).
    pub network_namespace: Option<PathBuf>,
    /// Hostname inside the container (Kubernetes: the pod name).
    pub hostname: Option<String>,
    /// Parent cgroup relative to each controller's root, e.g. `skiff/pod<uid>`; the runtime
    /// puts the container in `<cgroup_parent>/<id>`. `None` = `skiff`.
    pub cgroup_parent: Option<String>,
    /// `securityContext.runAsUser` / `runAsGroup`; `None` = the image's user (or root).
    pub user: Option<(u32, u32)>,
}

/// A bind mount of a host path into the container.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mount {
    pub source: PathBuf,
    /// Absolute path inside the container.
    pub destination: String,
    pub read_only: bool,
}

/// Resource limits in the units the cgroup files take; derived by the node agent from the
/// container's `resources` like the kubelet does (requests.cpu -> shares, limits.cpu ->
/// quota over a 100 ms period, limits.memory -> memory limit).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Resources {
    /// cpu.shares (cgroup v1 weight; 1024 = one CPU).
    pub cpu_shares: Option<u64>,
    /// cpu.cfs_quota_us with `cpu_period` (microseconds).
    pub cpu_quota: Option<i64>,
    pub cpu_period: Option<u64>,
    /// memory.limit_in_bytes.
    pub memory_limit: Option<i64>,
}

/// Lifecycle state, as in the CRI.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ContainerState {
    Created,
    Running,
    Exited,
}

/// A container's observed status.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContainerStatus {
    pub id: String,
    pub state: ContainerState,
    /// Host PID of the container's main process while it runs.
    pub pid: Option<u32>,
    /// Exit code once exited; a death by signal N is reported as 128+N, like Kubernetes.
    pub exit_code: Option<i32>,
    /// The signal that killed the process, if one did.
    pub signal: Option<i32>,
    /// The kernel's OOM killer ended it for exceeding its memory limit (reason `OOMKilled`).
    pub oom_killed: bool,
    pub started_at: Option<SystemTime>,
    pub finished_at: Option<SystemTime>,
}

/// A command to run inside a running container (`kubectl exec`).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ExecSpec {
    pub command: Vec<String>,
    /// Allocate a terminal (`-t`): stdout and stderr arrive merged on `stdout`.
    pub tty: bool,
    /// Keep stdin open (`-i`).
    pub stdin: bool,
}

pub type BoxedReader = Pin<Box<dyn AsyncRead + Send>>;
pub type BoxedWriter = Pin<Box<dyn AsyncWrite + Send>>;

/// A started exec session: its streams and a future for its exit code.
pub struct ExecProcess {
    pub stdin: Option<BoxedWriter>,
    pub stdout: BoxedReader,
    /// `None` with a terminal.
    pub stderr: Option<BoxedReader>,
    /// Exit code as Kubernetes reports it (128+signal for a death by signal).
    pub exit: Pin<Box<dyn std::future::Future<Output = Result<i32, RuntimeError>> + Send>>,
    /// Terminal resizes (columns, rows); `None` without a terminal.
    pub resize: Option<tokio::sync::mpsc::Sender<(u16, u16)>>,
}

/// Errors of the runtimes.
#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    #[error("container {0:?} not found")]
    NotFound(String),
    #[error("container {0:?} already exists")]
    AlreadyExists(String),
    #[error("container {id:?} is {state:?}, cannot {action}")]
    InvalidState {
        id: String,
        state: ContainerState,
        action: &'static str,
    },
    #[error("invalid container spec: {0}")]
    InvalidSpec(String),
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
    #[error("the {runtime} runtime does not support {what}")]
    Unsupported {
        runtime: &'static str,
        what: &'static str,
    },
    #[error(transparent)]
    Image(#[from] crate::images::ImageError),
}

impl RuntimeError {
    pub(crate) fn io(context: impl Into<String>, source: std::io::Error) -> Self {
        RuntimeError::Io {
            context: context.into(),
            source,
        }
    }
}

/// A container runtime. Every implementation must pass [`crate::conformance`].
#[async_trait]
pub trait Runtime: Send + Sync {
    /// Short name (`process`, `oci`).
    fn name(&self) -> &'static str;
    fn capabilities(&self) -> Capabilities;
    /// Prepares a container without starting it.
    async fn create(&self, spec: &ContainerSpec) -> Result<(), RuntimeError>;
    /// Starts a created container.
    async fn start(&self, id: &str) -> Result<(), RuntimeError>;
    /// Sends `signal` (e.g. `libc` numbering: 15 = SIGTERM) to the running container.
    async fn kill(&self, id: &str, signal: i32) -> Result<(), RuntimeError>;
    /// Waits until the container has exited and returns its final status.
    async fn wait(&self, id: &str) -> Result<ContainerStatus, RuntimeError>;
    async fn status(&self, id: &str) -> Result<ContainerStatus, RuntimeError>;
    /// Deletes the container and everything the runtime kept for it (logs included),
    /// killing it first if it still runs.
    async fn remove(&self, id: &str) -> Result<(), RuntimeError>;
    /// File holding the container's stdout and stderr in the CRI format ([`crate::logs`]).
    fn log_path(&self, id: &str) -> Result<PathBuf, RuntimeError>;
    /// Every container the runtime knows, including those created before this process
    /// started (a restarted node agent adopts them instead of starting duplicates).
    async fn list(&self) -> Result<Vec<ContainerStatus>, RuntimeError>;

    /// Runs a command inside a running container.
    async fn exec(&self, id: &str, spec: &ExecSpec) -> Result<ExecProcess, RuntimeError> {
        let _ = (id, spec);
        Err(RuntimeError::Unsupported {
            runtime: self.name(),
            what: "exec",
        })
    }

    /// Stops like the kubelet: SIGTERM, then SIGKILL once `grace` has passed.
    async fn stop(&self, id: &str, grace: Duration) -> Result<ContainerStatus, RuntimeError> {
        let status = self.status(id).await?;
        if status.state != ContainerState::Running {
            return Ok(status);
        }
        self.kill(id, SIGTERM).await?;
        match tokio::time::timeout(grace, self.wait(id)).await {
            Ok(result) => result,
            Err(_) => {
                self.kill(id, SIGKILL).await?;
                self.wait(id).await
            }
        }
    }
}

pub const SIGTERM: i32 = 15;
pub const SIGKILL: i32 = 9;

/// Container ids become directory names: keep them to a safe alphabet.
pub(crate) fn validate_id(id: &str) -> Result<(), RuntimeError> {
    let ok = !id.is_empty()
        && id.len() <= 128
        && id != "."
        && id != ".."
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    if ok {
        Ok(())
    } else {
        Err(RuntimeError::InvalidSpec(format!("container id {id:?}")))
    }
}
