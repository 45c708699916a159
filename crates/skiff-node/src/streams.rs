//! What the node's streaming server (logs, exec, port-forward) needs from the agent.

use std::path::PathBuf;
use std::sync::Arc;

use skiff_runtime::Runtime;

/// A container of a pod on this node, resolved for a streaming request.
#[derive(Clone)]
pub struct ContainerRef {
    pub runtime: Arc<dyn Runtime>,
    /// The runtime's container id.
    pub id: String,
}

/// Why a streaming request cannot be served; each maps to one HTTP status.
#[derive(Debug, thiserror::Error)]
pub enum StreamError {
    /// 404: no such pod or container on this node.
    #[error("{0}")]
    NotFound(String),
    /// 400: e.g. a container name is needed, or the container has no previous instance.
    #[error("{0}")]
    BadRequest(String),
    /// 500.
    #[error("{0}")]
    Internal(String),
}

/// Implemented by the agent, which knows which runtime container backs which pod container.
pub trait ContainerLookup: Send + Sync {
    /// The container `container` of pod `namespace/pod` (`None` = the only container, or an
    /// error naming the choices, worded like the kubelet); with `previous`, the instance
    /// before the last restart.
    fn container(
        &self,
        namespace: &str,
        pod: &str,
        container: Option<&str>,
        previous: bool,
    ) -> Result<ContainerRef, StreamError>;

    /// The pod's network namespace (`None` = host network), for port-forward.
    fn pod_netns(&self, namespace: &str, pod: &str) -> Result<Option<PathBuf>, StreamError>;
}
