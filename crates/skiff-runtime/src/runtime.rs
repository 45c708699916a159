//! The `Runtime` trait every container runtime implements, with its capabilities and types.

use std::path::PathBuf;
use std::time::Duration;

use async_trait::async_trait;

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
