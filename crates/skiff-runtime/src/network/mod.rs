//! Pod networking: the `PodNetwork` trait (one network namespace and IP per pod sandbox)
//! and the host-network implementation used with the `process` runtime.
//!
//! [`CniNetwork`] is the real implementation: a named network namespace per sandbox wired
//! to a node bridge by the standard CNI plugins; [`run_in_netns`] runs code (connects,
//! listens) inside a pod's namespace, [`connect_in_netns`] is its async TCP connect.

mod cidr;
mod cni;
mod host;
mod netns;

pub use cidr::Ipv4Cidr;
pub use cni::{CniConfig, CniNetwork};
pub use netns::{connect_in_netns, run_in_netns};

use std::net::IpAddr;
use std::path::PathBuf;

use async_trait::async_trait;

/// The pod a sandbox belongs to; CNI passes these to plugins as `K8S_POD_*` arguments.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PodRef {
    pub namespace: String,
    pub name: String,
    pub uid: String,
}

/// A `hostPort` of a container: traffic to `host_ip:host_port` goes to the pod's
/// `container_port`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PortMapping {
    pub host_ip: Option<IpAddr>,
    pub host_port: u16,
    pub container_port: u16,
    /// `tcp` or `udp`.
    pub protocol: String,
}

/// What a set-up sandbox got.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodNetworkStatus {
    /// The namespace the pod's containers join (`ContainerSpec::network_namespace`);
    /// `None` for host networking.
    pub netns: Option<PathBuf>,
    /// `status.podIP`.
    pub ip: IpAddr,
}

#[derive(Debug, thiserror::Error)]
pub enum NetworkError {
    #[error("invalid sandbox id {0:?}")]
    InvalidId(String),
    #[error("{context}: {message}")]
    Setup { context: String, message: String },
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
}

/// One network namespace per pod sandbox. Implementations must make `setup` and
/// `teardown` idempotent: the node agent calls them again after a crash.
#[async_trait]
pub trait PodNetwork: Send + Sync {
    /// Short name (`host`, `cni`).
    fn name(&self) -> &'static str;
    /// Creates (or finds, if it exists) the sandbox's namespace and address.
    async fn setup(
        &self,
        sandbox_id: &str,
        pod: &PodRef,
        ports: &[PortMapping],
    ) -> Result<PodNetworkStatus, NetworkError>;
    /// Removes the namespace, its interfaces, address and port mappings; a sandbox that
    /// does not exist is not an error.
    async fn teardown(&self, sandbox_id: &str) -> Result<(), NetworkError>;
    /// Sandboxes that exist (to adopt or clean up after a restart).
    async fn list(&self) -> Result<Vec<String>, NetworkError>;
}

/// `hostNetwork`-style: every pod shares the host's network and reports `ip`.
pub struct HostNetwork {
    pub ip: IpAddr,
}

#[async_trait]
impl PodNetwork for HostNetwork {
    fn name(&self) -> &'static str {
        "host"
    }

    async fn setup(
        &self,
        _sandbox_id: &str,
        _pod: &PodRef,
        _ports: &[PortMapping],
    ) -> Result<PodNetworkStatus, NetworkError> {
        Ok(PodNetworkStatus {
            netns: None,
            ip: self.ip,
        })
    }

    async fn teardown(&self, _sandbox_id: &str) -> Result<(), NetworkError> {
        Ok(())
    }

    async fn list(&self) -> Result<Vec<String>, NetworkError> {
        Ok(Vec::new())
    }
}
