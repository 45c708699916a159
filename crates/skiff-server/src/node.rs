//! Assembles one node: pod network, container runtime, node agent, its streaming server and
//! the service proxy with cluster DNS — for `skiff up` (in-process) and `skiff agent`.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::Path;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use anyhow::{Context, Result};
use k8s_openapi::api::core::v1::Node;
use skiff_client::Client;
use skiff_client::kube::api::{Api, PostParams};
use skiff_node::streams::{ContainerLookup, ContainerRef, StreamError};
use skiff_node::{AgentConfig, AgentHandle, ClusterDns};
use skiff_runtime::Runtime;
use skiff_runtime::images::ImageStore;
use skiff_runtime::network::Ipv4Cidr;
use skiff_runtime::network::{CniConfig, CniNetwork, HostNetwork, PodNetwork};
use skiff_runtime::oci::{OciConfig, OciRuntime};
use skiff_runtime::process::ProcessRuntime;

use crate::{NodeOptions, RuntimeKind};

/// How long a new node waits for the control plane to give it a pod subnet.
const POD_CIDR_WAIT: Duration = Duration::from_secs(30);

/// Where a node keeps its state under the data directory.
pub struct NodeDirs {
    pub images: std::path::PathBuf,
    pub oci: std::path::PathBuf,
    pub containers: std::path::PathBuf,
    pub pods: std::path::PathBuf,
    pub cni: std::path::PathBuf,
    pub netns: std::path::PathBuf,
}

impl NodeDirs {
    pub fn new(data: &Path) -> Self {
        NodeDirs {
            images: data.join("images"),
            oci: data.join("oci"),
            containers: data.join("containers"),
            pods: data.join("pods"),
            cni: data.join("cni"),
            netns: data.join("netns"),
        }
    }
}

/// A running node; dropping it stops the agent's tasks (containers keep running, as with
/// k3s: `skiff killall` removes them).
pub struct NodeHandle {
    agent: AgentHandle,
    server: skiff_node::server::NodeServer,
    proxy: Option<skiff_proxy::ProxyHandle>,
}

impl NodeHandle {
    pub fn node_name(&self) -> &str {
        self.agent.node_name()
    }

    /// Stops the proxy (its addresses and listeners go), the streaming server and the agent.
    pub async fn shutdown(self) {
        if let Some(p) = self.proxy {
            p.shutdown().await;
        }
        self.server.shutdown().await;
        self.agent.shutdown().await;
    }
}

/// The agent is created after its streaming server (it reports the server's port), so the
/// server resolves containers through this until the agent is there.
#[derive(Default)]
struct LateLookup(OnceLock<Arc<dyn ContainerLookup>>);

impl ContainerLookup for LateLookup {
    fn container(
        &self,
        namespace: &str,
        pod: &str,
        container: Option<&str>,
        previous: bool,
    ) -> Result<ContainerRef, StreamError> {
        self.get()?.container(namespace, pod, container, previous)
    }

    fn pod_netns(
        &self,
        namespace: &str,
        pod: &str,
    ) -> Result<Option<std::path::PathBuf>, StreamError> {
        self.get()?.pod_netns(namespace, pod)
    }
}

impl LateLookup {
    fn get(&self) -> Result<&Arc<dyn ContainerLookup>, StreamError> {
        self.0
            .get()
            .ok_or_else(|| StreamError::Internal("the node agent is still starting".into()))
    }
}

fn cidr(c: (Ipv4Addr, u8)) -> Result<Ipv4Cidr> {
    Ipv4Cidr::new(c.0, c.1).with_context(|| format!("{}/{} is not a valid CIDR", c.0, c.1))
}

/// Makes sure the Node object exists and waits until the control plane's IPAM gave it a pod
/// subnet (the node agent fills in the rest of the Node).
async fn pod_subnet(client: &Client, name: &str) -> Result<Ipv4Cidr> {
    let nodes: Api<Node> = Api::all(client.clone());
    if nodes.get_opt(name).await?.is_none() {
        let node: Node = serde_json::from_value(serde_json::json!({
            "metadata": {"name": name, "labels": {"kubernetes.io/hostname": name}}
        }))?;
        match nodes.create(&PostParams::default(), &node).await {
            Ok(_) => {}
            Err(skiff_client::kube::Error::Api(e)) if e.code == 409 => {}
            Err(e) => return Err(e).context("registering the node"),
        }
    }
    let deadline = tokio::time::Instant::now() + POD_CIDR_WAIT;
    loop {
        let node = nodes.get(name).await.context("reading the node")?;
        if let Some(c) = node.spec.and_then(|s| s.pod_cidr).filter(|c| !c.is_empty()) {
            return c
                .parse::<Ipv4Cidr>()
                .map_err(|e| anyhow::anyhow!("the node's podCIDR {c:?}: {e}"));
        }
        anyhow::ensure!(
            tokio::time::Instant::now() < deadline,
            "node {name} got no spec.podCIDR within {POD_CIDR_WAIT:?} (is the control plane's node IPAM running?)"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn find_runc() -> Option<std::path::PathBuf> {
    [
        "/usr/sbin/runc",
        "/usr/bin/runc",
        "/usr/local/sbin/runc",
        "/usr/local/bin/runc",
    ]
    .iter()
    .map(std::path::PathBuf::from)
    .find(|p| p.is_file())
}

/// Starts the node: see the module docs. `client_ca_pem` is the cluster CA, whose client
/// certificates (the API server's) the streaming server accepts.
pub async fn start_node(
    client: Client,
    options: &NodeOptions,
    service_cidr: (Ipv4Addr, u8),
    data: &Path,
    client_ca_pem: &str,
) -> Result<NodeHandle> {
    let dirs = NodeDirs::new(data);
    let name = options.name.clone();

    // The streaming server first: the agent reports its port.
    let late = Arc::new(LateLookup::default());
    let mut server_config = skiff_node::server::NodeServerConfig::new(client_ca_pem);
    server_config.bind = SocketAddr::new(options.ip, options.kubelet_port);
    server_config.sans.push(options.ip.to_string());
    server_config.sans.push(name.clone());
    let server = skiff_node::server::NodeServer::start(server_config, late.clone())
        .await
        .with_context(|| {
            format!(
                "starting the node's streaming server on {}:{}",
                options.ip, options.kubelet_port
            )
        })?;

    let images = ImageStore::open(&dirs.images).context("opening the image store")?;
    let (runtime, network): (Arc<dyn Runtime>, Arc<dyn PodNetwork>) = match options.runtime {
        RuntimeKind::Oci => {
            let runc = match &options.oci_binary {
                Some(p) => p.clone(),
                None => find_runc().context("the oci runtime needs runc (apt-get install runc)")?,
            };
            let subnet = pod_subnet(&client, &name).await?;
            let state = NodeState {
                bridge: options.bridge.clone(),
                service_interface: options.service_interface.clone(),
                pod_subnet: subnet.to_string(),
                cluster_cidr: cidr(options.cluster_cidr)?.to_string(),
                service_cidr: cidr(service_cidr)?.to_string(),
            };
            std::fs::write(data.join(NODE_STATE), serde_json::to_vec_pretty(&state)?)
                .context("writing the node state")?;
            let cni = CniNetwork::new(cni_config(&dirs, &state)?)
                .context("setting up the pod network")?;
            let cni = Arc::new(cni);
            {
                let cni = cni.clone();
                tokio::task::spawn_blocking(move || cni.ensure_host_routes())
                    .await?
                    .context("routing the pod and service ranges")?;
            }
            let oci = OciRuntime::with_config(OciConfig::new(&dirs.oci, runc), images.clone())
                .context("starting the oci runtime")?;
            (Arc::new(oci), cni)
        }
        RuntimeKind::Process => {
            let rt = ProcessRuntime::new(&dirs.containers).context("process runtime")?;
            (Arc::new(rt), Arc::new(HostNetwork { ip: options.ip }))
        }
    };

    let mut config = AgentConfig::new(&dirs.pods);
    config.node_name = name.clone();
    config.node_ips = vec![options.ip];
    config.kubelet_port = server.addr().port();
    config.dns = Some(ClusterDns {
        nameservers: vec![IpAddr::V4(options.cluster_dns)],
        domain: "cluster.local".into(),
    });
    let agent = skiff_node::run(client.clone(), runtime, network, Some(images), config)
        .await
        .context("starting the node agent")?;
    let _ = late.0.set(agent.lookup());

    // The proxy needs root (service addresses on an interface of ours).
    let proxy = if rustix::process::geteuid().is_root() {
        let proxy_config = skiff_proxy::ProxyConfig {
            lb_address: options.lb_address,
            node_address: options.node_port_address,
            service_interface: options.service_interface.clone(),
            dns_address: IpAddr::V4(options.cluster_dns),
            service_cidr: Some(service_cidr),
            ..skiff_proxy::ProxyConfig::default()
        };
        Some(
            skiff_proxy::run(client, proxy_config)
                .await
                .context("starting the service proxy")?,
        )
    } else {
        tracing::warn!("not root: no service proxy or cluster DNS on this node");
        None
    };
    Ok(NodeHandle {
        agent,
        server,
        proxy,
    })
}

/// What `skiff killall` needs to undo a node's host changes, written when the node starts.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
struct NodeState {
    bridge: String,
    service_interface: String,
    pod_subnet: String,
    cluster_cidr: String,
    service_cidr: String,
}

const NODE_STATE: &str = "node.json";

fn cni_config(dirs: &NodeDirs, state: &NodeState) -> Result<CniConfig> {
    let parse = |s: &str| {
        s.parse::<Ipv4Cidr>()
            .map_err(|e| anyhow::anyhow!("{s:?} in {NODE_STATE}: {e}"))
    };
    Ok(CniConfig {
        state_dir: dirs.cni.clone(),
        netns_dir: dirs.netns.clone(),
        bridge: state.bridge.clone(),
        network_name: format!("skiff-{}", state.bridge),
        pod_subnet: parse(&state.pod_subnet)?,
        cluster_cidr: parse(&state.cluster_cidr)?,
        service_cidr: parse(&state.service_cidr)?,
        ..CniConfig::default()
    })
}

/// Removes every container, pod sandbox, pod mount and cgroup, the bridge and the service
/// interface of the node that ran on `data` (after `kill -9`, or to leave a machine clean),
/// keeping the cluster state and the images. Returns a summary.
pub fn killall(data: &Path) -> Result<String> {
    let dirs = NodeDirs::new(data);
    let mut report = Vec::new();
    if dirs.oci.exists()
        && let Some(runc) = find_runc()
    {
        let images = ImageStore::open(&dirs.images).context("opening the image store")?;
        let oci = OciRuntime::with_config(OciConfig::new(&dirs.oci, runc), images)
            .context("opening the oci runtime state")?;
        let ids = oci.ids().context("listing containers")?;
        for id in &ids {
            if let Err(e) = oci.remove_blocking(id) {
                report.push(format!("container {id}: {e}"));
            }
        }
        report.push(format!("{} containers removed", ids.len()));
    }
    if let Ok(entries) = std::fs::read_dir(&dirs.pods) {
        let mut pods = 0;
        for e in entries.flatten() {
            let uid = e.file_name().to_string_lossy().into_owned();
            unmount_under(&e.path());
            skiff_node::cgroups::remove_pod(&uid);
            if let Err(err) = std::fs::remove_dir_all(e.path()) {
                report.push(format!("pod dir {}: {err}", e.path().display()));
            }
            pods += 1;
        }
        report.push(format!("{pods} pod directories removed"));
    }
    if let Ok(text) = std::fs::read_to_string(data.join(NODE_STATE)) {
        let state: NodeState = serde_json::from_str(&text)
            .with_context(|| format!("reading {}", data.join(NODE_STATE).display()))?;
        if dirs.cni.exists() {
            let cni = CniNetwork::new(cni_config(&dirs, &state)?)?;
            let sandboxes = cni.list_blocking()?;
            for id in &sandboxes {
                if let Err(e) = cni.teardown_blocking(id) {
                    report.push(format!("sandbox {id}: {e}"));
                }
            }
            cni.teardown_host()?;
            // The namespace directory is a bind mount of its own (so that namespace files
            // can be mounted in it); it goes too.
            unmount_under(&dirs.netns);
            report.push(format!(
                "{} pod networks and bridge {} removed",
                sandboxes.len(),
                state.bridge
            ));
        }
        let prefix = skiff_proxy::iptables::rules_prefix(&state.service_interface);
        match skiff_proxy::iptables::cleanup_rules(&prefix) {
            Ok(true) => report.push(format!("service rules {prefix}-* removed")),
            Ok(false) => {}
            Err(e) => report.push(format!("service rules {prefix}-*: {e}")),
        }
        let del = std::process::Command::new("ip")
            .args(["link", "del", &state.service_interface])
            .stderr(std::process::Stdio::null())
            .status();
        if del.is_ok_and(|s| s.success()) {
            report.push(format!("interface {} removed", state.service_interface));
        }
    }
    Ok(report.join("\n"))
}

/// Unmounts everything mounted at or below `dir`, deepest first.
fn unmount_under(dir: &Path) {
    let Ok(info) = std::fs::read_to_string("/proc/self/mountinfo") else {
        return;
    };
    let prefix = dir.to_string_lossy().into_owned();
    let mut points: Vec<&str> = info
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .filter(|mp| *mp == prefix || mp.starts_with(&format!("{prefix}/")))
        .collect();
    points.sort_by_key(|p| std::cmp::Reverse(p.len()));
    for mp in points {
        if let Err(e) = rustix::mount::unmount(mp, rustix::mount::UnmountFlags::DETACH) {
            tracing::warn!(mount = mp, error = %e, "unmounting");
        }
    }
}
