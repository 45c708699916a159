//! The node agent's configuration: data with defaults, filled in by the server or the CLI.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr};
use std::path::PathBuf;
use std::time::Duration;

/// Cluster DNS the agent writes into the resolv.conf of `dnsPolicy: ClusterFirst` pods.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterDns {
    /// The cluster DNS service address(es).
    pub nameservers: Vec<IpAddr>,
    /// Cluster domain, `cluster.local`.
    pub domain: String,
}

/// Everything the node agent can be told.
#[derive(Debug, Clone)]
pub struct AgentConfig {
    /// The Node's name; defaults to the host name.
    pub node_name: String,
    /// `InternalIP` addresses; the first is the pods' `hostIP`.
    pub node_ips: Vec<IpAddr>,
    /// Labels added to the Node (next to the well-known `kubernetes.io/*` ones).
    pub labels: BTreeMap<String, String>,
    /// Capacity entries that replace (or add to) the measured ones, e.g. `cpu` -> `4`.
    pub capacity: BTreeMap<String, String>,
    /// `spec.podCIDR` of the Node.
    pub pod_cidr: Option<String>,
    /// Per-pod directories (volumes, resolv.conf, hosts) go to `<root_dir>/<pod uid>/`.
    pub root_dir: PathBuf,
    /// Cluster DNS for `ClusterFirst` pods; `None` gives pods the host's resolv.conf.
    pub dns: Option<ClusterDns>,
    /// Port reported as `status.daemonEndpoints.kubeletEndpoint` (the streaming server).
    pub kubelet_port: u16,
    /// `containerRuntimeVersion` in nodeInfo; `None` = `<runtime name>://`.
    pub runtime_version: Option<String>,
    /// How often the Lease in `kube-node-lease` is renewed.
    pub lease_renew_interval: Duration,
    pub lease_duration_seconds: i32,
    /// How often node status is computed (and written when it changed).
    pub status_update_interval: Duration,
    /// Node status is written at least this often, even unchanged (heartbeat times).
    pub status_report_interval: Duration,
    /// CrashLoopBackOff: first delay, doubling up to `backoff_max`; reset after the
    /// container ran `backoff_reset` without failing.
    pub backoff_base: Duration,
    pub backoff_max: Duration,
    pub backoff_reset: Duration,
    /// How long before a failed pod preparation (volumes, sandbox) or a missing image is
    /// tried again.
    pub retry_interval: Duration,
    /// How often configMap, secret, downwardAPI and projected volumes are refreshed.
    pub volume_resync_interval: Duration,
}

impl AgentConfig {
    /// Defaults like the kubelet's, with pod directories under `root_dir`.
    pub fn new(root_dir: impl Into<PathBuf>) -> Self {
        AgentConfig {
            node_name: default_node_name(),
            node_ips: vec![IpAddr::V4(Ipv4Addr::LOCALHOST)],
            labels: BTreeMap::new(),
            capacity: BTreeMap::new(),
            pod_cidr: None,
            root_dir: root_dir.into(),
            dns: None,
            kubelet_port: 10250,
            runtime_version: None,
            lease_renew_interval: Duration::from_secs(10),
            lease_duration_seconds: 40,
            status_update_interval: Duration::from_secs(10),
            status_report_interval: Duration::from_secs(60),
            backoff_base: Duration::from_secs(10),
            backoff_max: Duration::from_secs(300),
            backoff_reset: Duration::from_secs(600),
            retry_interval: Duration::from_secs(2),
            volume_resync_interval: Duration::from_secs(60),
        }
    }

    pub(crate) fn host_ip(&self) -> IpAddr {
        self.node_ips
            .first()
            .copied()
            .unwrap_or(IpAddr::V4(Ipv4Addr::LOCALHOST))
    }
}

/// The host name, lower-cased as Kubernetes node names must be.
pub fn default_node_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|h| h.trim().to_lowercase())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "localhost".to_string())
}
