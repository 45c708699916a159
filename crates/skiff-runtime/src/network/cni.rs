//! `CniNetwork`: a pinned network namespace per pod sandbox, wired to the node bridge by
//! the standard CNI plugins (loopback; bridge + host-local, firewall, portmap).
//!
//! The runtime side of the CNI 1.0.0 protocol lives here: plugin configs are built from
//! [`CniConfig`], each plugin runs with `CNI_*` variables and its config on stdin, results
//! are chained as `prevResult`, and what ADD returned is saved per sandbox so that DEL gets
//! the same configs and result even after a restart.

use std::collections::HashMap;
use std::fs;
use std::io::{self, Write};
use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex, mpsc};
use std::time::Duration;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::{
    Ipv4Cidr, NetworkError, PodNetwork, PodNetworkStatus, PodRef, PortMapping, host, netns,
};

/// The CNI specification version skiff speaks (plugins 1.1.1 support it).
pub const CNI_VERSION: &str = "1.0.0";

/// The interface name of the pod side of the veth pair.
const POD_IFNAME: &str = "eth0";

/// How long one plugin may run before it is killed.
const PLUGIN_TIMEOUT: Duration = Duration::from_secs(60);

/// Plugins the chain needs; checked at start so a missing package fails early.
const REQUIRED_PLUGINS: [&str; 5] = ["loopback", "bridge", "host-local", "firewall", "portmap"];

/// Where the plugins are, where state lives, and the address plan of this node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CniConfig {
    /// Plugin binaries (`CNI_PATH`); Debian's containernetworking-plugins install here.
    pub plugin_dir: PathBuf,
    /// One `<sandbox id>.json` per sandbox, and host-local's IPAM data under `ipam/`.
    pub state_dir: PathBuf,
    /// Pinned network namespaces, one file per sandbox id.
    pub netns_dir: PathBuf,
    /// The CNI network name (host-local's lease directory, iptables chain names).
    pub network_name: String,
    /// The node bridge; its address is the pod subnet's first host (the pods' gateway).
    pub bridge: String,
    /// This node's pod subnet (inside `cluster_cidr`), e.g. 10.42.0.0/24.
    pub pod_subnet: Ipv4Cidr,
    /// All pod addresses of the cluster; routed nowhere but to our own interfaces.
    pub cluster_cidr: Ipv4Cidr,
    /// Service ClusterIPs; local addresses of the proxy, otherwise unreachable.
    pub service_cidr: Ipv4Cidr,
    /// Pod interface MTU; `None`: the MTU of the host's default-route interface.
    pub mtu: Option<u32>,
}

impl Default for CniConfig {
    fn default() -> Self {
        CniConfig {
            plugin_dir: PathBuf::from("/usr/lib/cni"),
            state_dir: PathBuf::from("/run/skiff/cni"),
            netns_dir: PathBuf::from("/run/skiff/netns"),
            network_name: "skiff".to_string(),
            bridge: "skiff0".to_string(),
            pod_subnet: Ipv4Cidr::new(Ipv4Addr::new(10, 42, 0, 0), 24).expect("valid"),
            cluster_cidr: Ipv4Cidr::new(Ipv4Addr::new(10, 42, 0, 0), 16).expect("valid"),
            service_cidr: Ipv4Cidr::new(Ipv4Addr::new(10, 43, 0, 0), 16).expect("valid"),
            mtu: None,
        }
    }
}

impl CniConfig {
    /// The bridge's address and the pods' default gateway.
    pub fn gateway(&self) -> Ipv4Addr {
        self.pod_subnet.host(1).unwrap_or(self.pod_subnet.network())
    }

    /// host-local's data directory.
    pub fn ipam_dir(&self) -> PathBuf {
        self.state_dir.join("ipam")
    }

    fn validate(&self) -> Result<(), NetworkError> {
        let bad = |message: String| NetworkError::Setup {
            context: "CNI config".to_string(),
            message,
        };
        if self.pod_subnet.prefix() > 30 {
            return Err(bad(format!(
                "pod subnet {} has no room for pods",
                self.pod_subnet
            )));
        }
        if !self.cluster_cidr.contains_cidr(&self.pod_subnet) {
            return Err(bad(format!(
                "pod subnet {} is not inside the cluster CIDR {}",
                self.pod_subnet, self.cluster_cidr
            )));
        }
        if self.cluster_cidr == self.pod_subnet {
            // The catch-all route for the cluster CIDR would replace the bridge's route.
            return Err(bad(format!(
                "the cluster CIDR {} must be larger than the node's pod subnet",
                self.cluster_cidr
            )));
        }
        if self.cluster_cidr.overlaps(&self.service_cidr) {
            return Err(bad(format!(
                "cluster CIDR {} overlaps service CIDR {}",
                self.cluster_cidr, self.service_cidr
            )));
        }
        let ifname_ok = |n: &str| {
            !n.is_empty()
                && n.len() <= 15
                && n.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.')
        };
        if !ifname_ok(&self.bridge) {
            return Err(bad(format!("invalid bridge name {:?}", self.bridge)));
        }
        if !valid_name(&self.network_name) {
            return Err(bad(format!("invalid network name {:?}", self.network_name)));
        }
        if let Some(mtu) = self.mtu
            && !(576..=65535).contains(&mtu)
        {
            return Err(bad(format!("MTU {mtu} out of range")));
        }
        Ok(())
    }
}

/// Pod networking through CNI plugins; cheap to clone (shared state).
#[derive(Clone)]
pub struct CniNetwork {
    inner: Arc<Inner>,
}

struct Inner {
    config: CniConfig,
    mtu: u32,
    /// Per-sandbox locks: setup and teardown of one sandbox never interleave.
    locks: Mutex<HashMap<String, Arc<Mutex<()>>>>,
    /// Whether `new` bind-mounted `netns_dir` onto itself (undone by `teardown_host`).
    netns_dir_mounted: bool,
}

/// What ADD produced for a sandbox, saved so DEL can repeat the same configs.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct SandboxState {
    sandbox_id: String,
    netns: PathBuf,
    cni_args: String,
    loopback: Value,
    /// The chain's plugin configs in ADD order (without `prevResult`).
    plugins: Vec<Value>,
    /// The chain's final result; `None` while ADD runs (a crash leaves it so).
    result: Option<Value>,
    ip: Option<IpAddr>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum CniCommand {
    Add,
    Del,
}

impl CniCommand {
    fn as_str(self) -> &'static str {
        match self {
            CniCommand::Add => "ADD",
            CniCommand::Del => "DEL",
        }
    }
}

impl CniNetwork {
    /// Checks the config and the plugins, and prepares the state and namespace directories.
    /// Needs root. Host routes are separate: call [`CniNetwork::ensure_host_routes`] once.
    pub fn new(config: CniConfig) -> Result<Self, NetworkError> {
        config.validate()?;
        for plugin in REQUIRED_PLUGINS {
            let path = config.plugin_dir.join(plugin);
            if !path.is_file() {
                return Err(NetworkError::Setup {
                    context: "CNI plugins".to_string(),
                    message: format!(
                        "{} not found (install the containernetworking-plugins package)",
                        path.display()
                    ),
                });
            }
        }
        let io_ctx = |context: String| move |source| NetworkError::Io { context, source };
        fs::create_dir_all(config.ipam_dir())
            .map_err(io_ctx(format!("create {}", config.ipam_dir().display())))?;
        let netns_dir_mounted = netns::make_shared_dir(&config.netns_dir)
            .map_err(io_ctx(format!("prepare {}", config.netns_dir.display())))?;
        let mtu = config.mtu.unwrap_or_else(host::uplink_mtu);
        Ok(CniNetwork {
            inner: Arc::new(Inner {
                config,
                mtu,
                locks: Mutex::new(HashMap::new()),
                netns_dir_mounted,
            }),
        })
    }

    pub fn config(&self) -> &CniConfig {
        &self.inner.config
    }

    /// The MTU pods get.
    pub fn mtu(&self) -> u32 {
        self.inner.mtu
    }

    /// Makes sure no packet for a pod or service address can leave through the default
    /// gateway: `unreachable` routes for the cluster and service CIDRs (the bridge's subnet
    /// route and the proxy's local service addresses are more specific and win). Also
    /// lets pods reach beyond the node: IPv4 forwarding on, and a masquerade rule for
    /// traffic from the pod subnet leaving the cluster CIDR. Idempotent; call once at
    /// start, before the first `setup`.
    pub fn ensure_host_routes(&self) -> Result<(), NetworkError> {
        let c = &self.inner.config;
        host::route_unreachable(&c.cluster_cidr)?;
        host::route_unreachable(&c.service_cidr)?;
        host::ensure_masquerade(&c.pod_subnet, &c.cluster_cidr, &c.network_name)?;
        host::enable_ip_forward()?;
        Ok(())
    }

    /// Undoes the host changes of this network (for tests): deletes the bridge, the
    /// catch-all routes, the masquerade rule and the namespace directory's bind mount.
    /// Tear sandboxes down first. IPv4 forwarding stays on (other networks on the host
    /// may rely on it).
    pub fn teardown_host(&self) -> Result<(), NetworkError> {
        let c = &self.inner.config;
        host::delete_link(&c.bridge)?;
        host::delete_masquerade(&c.pod_subnet, &c.cluster_cidr, &c.network_name)?;
        host::delete_unreachable(&c.cluster_cidr)?;
        host::delete_unreachable(&c.service_cidr)?;
        if self.inner.netns_dir_mounted {
            netns::unshare_dir(&c.netns_dir).map_err(|source| NetworkError::Io {
                context: format!("unmount {}", c.netns_dir.display()),
                source,
            })?;
        }
        Ok(())
    }

    /// The namespace file a sandbox gets (whether or not it exists yet).
    pub fn netns_path(&self, sandbox_id: &str) -> PathBuf {
        self.inner.config.netns_dir.join(sandbox_id)
    }

    /// Blocking form of [`PodNetwork::setup`] (for threads outside an async runtime).
    pub fn setup_blocking(
        &self,
        sandbox_id: &str,
        pod: &PodRef,
        ports: &[PortMapping],
    ) -> Result<PodNetworkStatus, NetworkError> {
        validate_id(sandbox_id)?;
        let cni_args = cni_args(sandbox_id, pod)?;
        let port_mappings = port_mappings(ports)?;
        let lock = self.lock(sandbox_id);
        let _guard = lock.lock().unwrap_or_else(|p| p.into_inner());
        let result = self.setup_locked(sandbox_id, cni_args, port_mappings);
        drop(_guard);
        self.unlock(sandbox_id, lock);
        result
    }

    /// Blocking form of [`PodNetwork::teardown`].
    pub fn teardown_blocking(&self, sandbox_id: &str) -> Result<(), NetworkError> {
        validate_id(sandbox_id)?;
        let lock = self.lock(sandbox_id);
        let _guard = lock.lock().unwrap_or_else(|p| p.into_inner());
        let result = self.teardown_locked(sandbox_id);
        drop(_guard);
        self.unlock(sandbox_id, lock);
        result
    }

    /// Blocking form of [`PodNetwork::list`]: sandboxes with saved state, sorted.
    pub fn list_blocking(&self) -> Result<Vec<String>, NetworkError> {
        let dir = &self.inner.config.state_dir;
        let entries = match fs::read_dir(dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(source) => {
                return Err(NetworkError::Io {
                    context: format!("list {}", dir.display()),
                    source,
                });
            }
        };
        let mut ids: Vec<String> = entries
            .filter_map(Result::ok)
            .filter_map(|e| {
                let name = e.file_name().into_string().ok()?;
                let id = name.strip_suffix(".json")?;
                (validate_id(id).is_ok()).then(|| id.to_string())
            })
            .collect();
        ids.sort();
        Ok(ids)
    }

    fn setup_locked(
        &self,
        sandbox_id: &str,
        cni_args: String,
        port_mappings: Vec<Value>,
    ) -> Result<PodNetworkStatus, NetworkError> {
        match self.load_state(sandbox_id) {
            Ok(None) => {}
            Ok(Some(state)) => {
                if let Some(ip) = state.ip
                    && state.result.is_some()
                    && netns::is_pinned(&state.netns)
                {
                    return Ok(PodNetworkStatus {
                        netns: Some(state.netns),
                        ip,
                    });
                }
                // Half set up (a crash during ADD, or the namespace vanished): start over.
                tracing::info!(sandbox_id, "redoing incomplete pod network setup");
                self.teardown_locked(sandbox_id)?;
            }
            Err(err) => {
                tracing::warn!(sandbox_id, error = %err, "redoing setup over unreadable state");
                self.teardown_locked(sandbox_id)?;
            }
        }
        let netns_path = self.netns_path(sandbox_id);
        // A namespace without state is a leftover from a crash before the state was saved.
        netns::remove(&netns_path).map_err(|source| NetworkError::Io {
            context: format!("remove stale {}", netns_path.display()),
            source,
        })?;

        let mut state = SandboxState {
            sandbox_id: sandbox_id.to_string(),
            netns: netns_path.clone(),
            cni_args,
            loopback: self.loopback_config(),
            plugins: self.plugin_chain(port_mappings),
            result: None,
            ip: None,
        };
        // Saved before anything is created, so teardown after a crash finds the configs.
        self.save_state(&state)?;
        if let Err(source) = netns::create(&netns_path) {
            self.remove_state(sandbox_id)?;
            return Err(NetworkError::Io {
                context: format!("create network namespace {}", netns_path.display()),
                source,
            });
        }

        match self.add(&state) {
            Ok(result) => {
                let ip = pod_ip(&result);
                state.result = Some(result);
                match ip {
                    Some(ip) => {
                        state.ip = Some(ip);
                        self.save_state(&state)?;
                        Ok(PodNetworkStatus {
                            netns: Some(netns_path),
                            ip,
                        })
                    }
                    None => {
                        let _ = self.save_state(&state);
                        let err = NetworkError::Setup {
                            context: format!("CNI ADD for {sandbox_id}"),
                            message: "the result holds no IPv4 address".to_string(),
                        };
                        self.undo_failed_add(sandbox_id, err)
                    }
                }
            }
            Err((err, partial)) => {
                state.result = partial;
                let _ = self.save_state(&state);
                self.undo_failed_add(sandbox_id, err)
            }
        }
    }

    fn undo_failed_add(
        &self,
        sandbox_id: &str,
        err: NetworkError,
    ) -> Result<PodNetworkStatus, NetworkError> {
        if let Err(cleanup) = self.teardown_locked(sandbox_id) {
            tracing::warn!(sandbox_id, error = %cleanup, "cleanup after failed CNI ADD");
        }
        Err(err)
    }

    /// Runs loopback, then the chain; on failure returns the last result that succeeded
    /// (the `prevResult` DEL needs to undo what was done).
    fn add(&self, state: &SandboxState) -> Result<Value, (NetworkError, Option<Value>)> {
        let netns = Some(state.netns.as_path());
        self.exec(
            CniCommand::Add,
            &state.loopback,
            &state.sandbox_id,
            netns,
            "lo",
            &state.cni_args,
        )
        .map_err(|e| (e, None))?;
        let mut prev: Option<Value> = None;
        for conf in &state.plugins {
            let mut conf = conf.clone();
            if let Some(prev) = &prev {
                conf["prevResult"] = prev.clone();
            }
            let out = self
                .exec(
                    CniCommand::Add,
                    &conf,
                    &state.sandbox_id,
                    netns,
                    POD_IFNAME,
                    &state.cni_args,
                )
                .map_err(|e| (e, prev.clone()))?;
            match out {
                Some(result) => prev = Some(result),
                None => {
                    let err = NetworkError::Setup {
                        context: format!("CNI ADD {}", plugin_type(&conf)),
                        message: "plugin printed no result".to_string(),
                    };
                    return Err((err, prev));
                }
            }
        }
        prev.ok_or_else(|| {
            let err = NetworkError::Setup {
                context: "CNI ADD".to_string(),
                message: "empty plugin chain".to_string(),
            };
            (err, None)
        })
    }

    fn teardown_locked(&self, sandbox_id: &str) -> Result<(), NetworkError> {
        let netns_path = self.netns_path(sandbox_id);
        let state = match self.load_state(sandbox_id) {
            Ok(state) => state,
            Err(err) => {
                // Unreadable state: DEL with today's configs and no prevResult still
                // removes the pod's interface and releases its lease (by container id).
                tracing::warn!(sandbox_id, error = %err, "unreadable CNI state, using defaults");
                Some(SandboxState {
                    sandbox_id: sandbox_id.to_string(),
                    netns: netns_path.clone(),
                    cni_args: format!("IgnoreUnknown=1;K8S_POD_INFRA_CONTAINER_ID={sandbox_id}"),
                    loopback: self.loopback_config(),
                    plugins: self.plugin_chain(Vec::new()),
                    result: None,
                    ip: None,
                })
            }
        };
        let mut first_err: Option<NetworkError> = None;
        if let Some(state) = &state {
            // Plugins are told the namespace is gone (empty CNI_NETNS) when it is; they
            // then only release what lives outside it (IPAM leases, host rules).
            let netns = netns::is_pinned(&state.netns).then_some(state.netns.as_path());
            for conf in state.plugins.iter().rev() {
                let mut conf = conf.clone();
                if let Some(result) = &state.result {
                    conf["prevResult"] = result.clone();
                }
                if let Err(e) = self.exec(
                    CniCommand::Del,
                    &conf,
                    sandbox_id,
                    netns,
                    POD_IFNAME,
                    &state.cni_args,
                ) {
                    tracing::warn!(sandbox_id, error = %e, "CNI DEL");
                    first_err.get_or_insert(e);
                }
            }
            if netns.is_some()
                && let Err(e) = self.exec(
                    CniCommand::Del,
                    &state.loopback,
                    sandbox_id,
                    netns,
                    "lo",
                    &state.cni_args,
                )
            {
                first_err.get_or_insert(e);
            }
        }
        if let Err(source) = netns::remove(&netns_path) {
            first_err.get_or_insert(NetworkError::Io {
                context: format!("remove network namespace {}", netns_path.display()),
                source,
            });
        }
        match first_err {
            // The state stays so that a retry runs DEL again (DEL is idempotent).
            Some(err) => Err(err),
            None => self.remove_state(sandbox_id),
        }
    }

    fn loopback_config(&self) -> Value {
        json!({
            "cniVersion": CNI_VERSION,
            "name": format!("{}-loopback", self.inner.config.network_name),
            "type": "loopback",
        })
    }

    /// bridge (+ host-local), firewall, and portmap when there are host ports.
    fn plugin_chain(&self, port_mappings: Vec<Value>) -> Vec<Value> {
        let c = &self.inner.config;
        let gateway = c.gateway().to_string();
        let name = &c.network_name;
        let mut chain = vec![
            json!({
                "cniVersion": CNI_VERSION,
                "name": name,
                "type": "bridge",
                "bridge": c.bridge,
                "isGateway": true,
                // Not bridge's ipMasq: it masquerades everything leaving the node subnet
                // (other nodes' pods too) with a rule per pod that DEL can only remove
                // while the namespace exists. One node-wide rule from ensure_host_routes
                // masquerades only what leaves the cluster CIDR.
                "ipMasq": false,
                // A pod reaching itself through a Service address comes back on its port.
                "hairpinMode": true,
                "mtu": self.inner.mtu,
                "ipam": {
                    "type": "host-local",
                    "ranges": [[{ "subnet": c.pod_subnet.to_string(), "gateway": gateway }]],
                    "routes": [{ "dst": "0.0.0.0/0", "gw": gateway }],
                    "dataDir": c.ipam_dir(),
                },
            }),
            // Accepts the pod's traffic in FORWARD: without it a host whose FORWARD policy
            // is DROP (Docker sets that), with br_netfilter loaded, drops even pod-to-pod
            // traffic on the bridge.
            json!({
                "cniVersion": CNI_VERSION,
                "name": name,
                "type": "firewall",
                "backend": "iptables",
            }),
        ];
        if !port_mappings.is_empty() {
            chain.push(json!({
                "cniVersion": CNI_VERSION,
                "name": name,
                "type": "portmap",
                "capabilities": { "portMappings": true },
                "snat": true,
                "runtimeConfig": { "portMappings": port_mappings },
            }));
        }
        chain
    }

    /// Runs one plugin; ADD returns its result, DEL `None`.
    fn exec(
        &self,
        command: CniCommand,
        conf: &Value,
        container_id: &str,
        netns: Option<&Path>,
        ifname: &str,
        cni_args: &str,
    ) -> Result<Option<Value>, NetworkError> {
        let plugin = plugin_type(conf);
        let context = format!("CNI {} {plugin} for {container_id}", command.as_str());
        if !valid_name(plugin) {
            return Err(NetworkError::Setup {
                context,
                message: format!("invalid plugin type {plugin:?}"),
            });
        }
        let io_err = |source| NetworkError::Io {
            context: context.clone(),
            source,
        };
        let stdin = serde_json::to_vec(conf).map_err(|e| io_err(io::Error::other(e)))?;
        let c = &self.inner.config;
        let mut child = Command::new(c.plugin_dir.join(plugin))
            .env("CNI_COMMAND", command.as_str())
            .env("CNI_CONTAINERID", container_id)
            .env("CNI_NETNS", netns.map(Path::as_os_str).unwrap_or_default())
            .env("CNI_IFNAME", ifname)
            .env("CNI_ARGS", cni_args)
            .env("CNI_PATH", &c.plugin_dir)
            // Plugins run iptables and find it through PATH.
            .env("PATH", plugin_path_env())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(io_err)?;
        if let Some(mut pipe) = child.stdin.take() {
            // A plugin that exits without reading its stdin reports its own error below.
            let _ = pipe.write_all(&stdin);
        }
        let out = wait_with_deadline(child, PLUGIN_TIMEOUT).map_err(io_err)?;
        if out.timed_out {
            return Err(NetworkError::Setup {
                context,
                message: format!("killed after {} s", PLUGIN_TIMEOUT.as_secs()),
            });
        }
        let out = out.output;
        if !out.status.success() {
            return Err(NetworkError::Setup {
                context,
                message: plugin_error(&out.stdout, &out.stderr, out.status),
            });
        }
        match command {
            CniCommand::Del => Ok(None),
            CniCommand::Add => {
                serde_json::from_slice(&out.stdout)
                    .map(Some)
                    .map_err(|e| NetworkError::Setup {
                        context,
                        message: format!("unreadable result: {e}"),
                    })
            }
        }
    }

    fn state_path(&self, sandbox_id: &str) -> PathBuf {
        self.inner
            .config
            .state_dir
            .join(format!("{sandbox_id}.json"))
    }

    fn load_state(&self, sandbox_id: &str) -> Result<Option<SandboxState>, NetworkError> {
        let path = self.state_path(sandbox_id);
        let data = match fs::read(&path) {
            Ok(data) => data,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(source) => {
                return Err(NetworkError::Io {
                    context: format!("read {}", path.display()),
                    source,
                });
            }
        };
        serde_json::from_slice(&data)
            .map(Some)
            .map_err(|e| NetworkError::Setup {
                context: format!("read {}", path.display()),
                message: e.to_string(),
            })
    }

    fn save_state(&self, state: &SandboxState) -> Result<(), NetworkError> {
        let path = self.state_path(&state.sandbox_id);
        let tmp = path.with_extension("json.tmp");
        let io_err = |source| NetworkError::Io {
            context: format!("write {}", path.display()),
            source,
        };
        let data = serde_json::to_vec_pretty(state).map_err(|e| io_err(io::Error::other(e)))?;
        fs::write(&tmp, data).map_err(io_err)?;
        fs::rename(&tmp, &path).map_err(io_err)
    }

    fn remove_state(&self, sandbox_id: &str) -> Result<(), NetworkError> {
        let path = self.state_path(sandbox_id);
        match fs::remove_file(&path) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => Err(NetworkError::Io {
                context: format!("remove {}", path.display()),
                source: e,
            }),
            _ => Ok(()),
        }
    }

    fn lock(&self, sandbox_id: &str) -> Arc<Mutex<()>> {
        let mut locks = self.inner.locks.lock().unwrap_or_else(|p| p.into_inner());
        locks.entry(sandbox_id.to_string()).or_default().clone()
    }

    fn unlock(&self, sandbox_id: &str, lock: Arc<Mutex<()>>) {
        let mut locks = self.inner.locks.lock().unwrap_or_else(|p| p.into_inner());
        // Two references (the map's and ours) mean nobody else waits: forget the entry.
        if Arc::strong_count(&lock) == 2 {
            locks.remove(sandbox_id);
        }
    }
}

#[async_trait]
impl PodNetwork for CniNetwork {
    fn name(&self) -> &'static str {
        "cni"
    }

    async fn setup(
        &self,
        sandbox_id: &str,
        pod: &PodRef,
        ports: &[PortMapping],
    ) -> Result<PodNetworkStatus, NetworkError> {
        let (this, id, pod, ports) = (
            self.clone(),
            sandbox_id.to_string(),
            pod.clone(),
            ports.to_vec(),
        );
        blocking(move || this.setup_blocking(&id, &pod, &ports)).await
    }

    async fn teardown(&self, sandbox_id: &str) -> Result<(), NetworkError> {
        let (this, id) = (self.clone(), sandbox_id.to_string());
        blocking(move || this.teardown_blocking(&id)).await
    }

    async fn list(&self) -> Result<Vec<String>, NetworkError> {
        let this = self.clone();
        blocking(move || this.list_blocking()).await
    }
}

/// Plugins fork, exec and wait: keep that off the async workers.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, NetworkError> + Send + 'static,
) -> Result<T, NetworkError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| NetworkError::Setup {
            context: "pod network task".to_string(),
            message: e.to_string(),
        })?
}

struct PluginOutput {
    output: std::process::Output,
    timed_out: bool,
}

/// Waits for a plugin; one that hangs (an iptables lock held forever, a stuck netlink
/// call) is killed at the deadline so the sandbox's setup fails instead of hanging.
fn wait_with_deadline(child: Child, timeout: Duration) -> io::Result<PluginOutput> {
    // A pidfd names this very process even after it is reaped: no pid-reuse race.
    let pidfd = rustix::process::pidfd_open(
        rustix::process::Pid::from_child(&child),
        rustix::process::PidfdFlags::empty(),
    )
    .ok();
    let (done_tx, done_rx) = mpsc::channel::<()>();
    let waiter = std::thread::Builder::new()
        .name("cni-plugin-wait".into())
        .spawn(move || {
            let out = child.wait_with_output();
            let _ = done_tx.send(());
            out
        })?;
    let timed_out = matches!(
        done_rx.recv_timeout(timeout),
        Err(mpsc::RecvTimeoutError::Timeout)
    );
    if timed_out && let Some(pidfd) = &pidfd {
        let _ = rustix::process::pidfd_send_signal(pidfd, rustix::process::Signal::KILL);
    }
    let output = waiter
        .join()
        .unwrap_or_else(|_| Err(io::Error::other("plugin wait thread panicked")))?;
    Ok(PluginOutput { output, timed_out })
}

fn plugin_type(conf: &Value) -> &str {
    conf.get("type").and_then(Value::as_str).unwrap_or("")
}

/// Names that are safe as file names and iptables comments.
fn valid_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 64
        && !s.starts_with('.')
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.')
}

/// Sandbox ids become file names: letters, digits, `-`, `_`, `.`, at most 128.
fn validate_id(id: &str) -> Result<(), NetworkError> {
    let ok = !id.is_empty()
        && id.len() <= 128
        && !id.starts_with('.')
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.');
    if ok {
        Ok(())
    } else {
        Err(NetworkError::InvalidId(id.to_string()))
    }
}

/// `CNI_ARGS` with the pod's identity, like kubelet passes it.
fn cni_args(sandbox_id: &str, pod: &PodRef) -> Result<String, NetworkError> {
    let mut args = vec!["IgnoreUnknown=1".to_string()];
    for (key, value) in [
        ("K8S_POD_NAMESPACE", pod.namespace.as_str()),
        ("K8S_POD_NAME", pod.name.as_str()),
        ("K8S_POD_INFRA_CONTAINER_ID", sandbox_id),
        ("K8S_POD_UID", pod.uid.as_str()),
    ] {
        if value.is_empty() {
            continue;
        }
        // `;` and `=` delimit CNI_ARGS; Kubernetes names never contain them.
        if value
            .chars()
            .any(|c| c == ';' || c == '=' || c.is_whitespace() || c.is_control())
        {
            return Err(NetworkError::Setup {
                context: "CNI_ARGS".to_string(),
                message: format!("{key} value {value:?} contains a reserved character"),
            });
        }
        args.push(format!("{key}={value}"));
    }
    Ok(args.join(";"))
}

/// portmap's `runtimeConfig.portMappings`.
fn port_mappings(ports: &[PortMapping]) -> Result<Vec<Value>, NetworkError> {
    ports
        .iter()
        .map(|p| {
            let protocol = p.protocol.to_ascii_lowercase();
            if !matches!(protocol.as_str(), "tcp" | "udp" | "sctp") {
                return Err(NetworkError::Setup {
                    context: "hostPort".to_string(),
                    message: format!("unsupported protocol {:?}", p.protocol),
                });
            }
            if p.host_port == 0 || p.container_port == 0 {
                return Err(NetworkError::Setup {
                    context: "hostPort".to_string(),
                    message: format!("port 0 in mapping {}:{}", p.host_port, p.container_port),
                });
            }
            let mut m = json!({
                "hostPort": p.host_port,
                "containerPort": p.container_port,
                "protocol": protocol,
            });
            if let Some(ip) = p.host_ip
                && !ip.is_unspecified()
            {
                m["hostIP"] = json!(ip.to_string());
            }
            Ok(m)
        })
        .collect()
}

/// The pod's IPv4 address from a CNI 1.0 result: the one on the pod's `eth0` if the
/// result says which interface it is on, otherwise the first IPv4 address.
fn pod_ip(result: &Value) -> Option<IpAddr> {
    let ips = result.get("ips")?.as_array()?;
    let interfaces = result.get("interfaces").and_then(Value::as_array);
    let address = |entry: &Value| -> Option<IpAddr> {
        let addr = entry.get("address")?.as_str()?;
        let ip: IpAddr = addr.split('/').next()?.parse().ok()?;
        ip.is_ipv4().then_some(ip)
    };
    let on_pod_if = |entry: &Value| -> bool {
        let Some(index) = entry.get("interface").and_then(Value::as_u64) else {
            return false;
        };
        interfaces
            .and_then(|ifs| ifs.get(usize::try_from(index).ok()?))
            .is_some_and(|iface| {
                iface.get("name").and_then(Value::as_str) == Some(POD_IFNAME)
                    && iface
                        .get("sandbox")
                        .and_then(Value::as_str)
                        .is_some_and(|s| !s.is_empty())
            })
    };
    ips.iter()
        .filter(|e| on_pod_if(e))
        .find_map(address)
        .or_else(|| ips.iter().find_map(address))
}

/// A plugin's failure as text: the CNI error object on stdout if any, plus stderr.
fn plugin_error(stdout: &[u8], stderr: &[u8], status: std::process::ExitStatus) -> String {
    let mut message = match serde_json::from_slice::<Value>(stdout) {
        Ok(err) if err.get("msg").is_some() => {
            let code = err.get("code").and_then(Value::as_u64).unwrap_or(0);
            let msg = err.get("msg").and_then(Value::as_str).unwrap_or("");
            match err.get("details").and_then(Value::as_str) {
                Some(details) if !details.is_empty() => {
                    format!("{msg}: {details} (code {code})")
                }
                _ => format!("{msg} (code {code})"),
            }
        }
        _ => {
            let out = String::from_utf8_lossy(stdout);
            format!("{status}; {}", out.trim())
        }
    };
    let stderr = String::from_utf8_lossy(stderr);
    if !stderr.trim().is_empty() {
        message.push_str("; stderr: ");
        message.push_str(stderr.trim());
    }
    message
}

/// PATH for plugins: ours plus the sbin directories where iptables lives.
fn plugin_path_env() -> String {
    let mut path = std::env::var("PATH").unwrap_or_default();
    for dir in ["/usr/local/sbin", "/usr/sbin", "/sbin", "/usr/bin", "/bin"] {
        if !path.split(':').any(|p| p == dir) {
            if !path.is_empty() {
                path.push(':');
            }
            path.push_str(dir);
        }
    }
    path
}

#[cfg(test)]
mod tests {
    use super::*;

    fn test_network(plugin_dir: &Path, state: &Path) -> CniNetwork {
        CniNetwork {
            inner: Arc::new(Inner {
                config: CniConfig {
                    plugin_dir: plugin_dir.to_path_buf(),
                    state_dir: state.to_path_buf(),
                    netns_dir: state.join("netns"),
                    ..CniConfig::default()
                },
                mtu: 1400,
                locks: Mutex::new(HashMap::new()),
                netns_dir_mounted: false,
            }),
        }
    }

    #[test]
    fn default_config_is_valid() {
        let c = CniConfig::default();
        c.validate().unwrap();
        assert_eq!(c.gateway(), Ipv4Addr::new(10, 42, 0, 1));
        assert_eq!(c.ipam_dir(), Path::new("/run/skiff/cni/ipam"));
    }

    #[test]
    fn bad_configs_are_refused() {
        let cidr = |s: &str| s.parse::<Ipv4Cidr>().unwrap();
        let base = CniConfig::default();
        let cases = [
            CniConfig {
                pod_subnet: cidr("10.50.0.0/24"),
                ..base.clone()
            },
            CniConfig {
                pod_subnet: cidr("10.42.0.0/16"),
                ..base.clone()
            },
            CniConfig {
                service_cidr: cidr("10.42.128.0/20"),
                ..base.clone()
            },
            CniConfig {
                pod_subnet: cidr("10.42.0.0/31"),
                ..base.clone()
            },
            CniConfig {
                bridge: "a-very-long-bridge-name".into(),
                ..base.clone()
            },
            CniConfig {
                bridge: "br/0".into(),
                ..base.clone()
            },
            CniConfig {
                network_name: "../x".into(),
                ..base.clone()
            },
            CniConfig {
                mtu: Some(10),
                ..base.clone()
            },
        ];
        for c in cases {
            assert!(c.validate().is_err(), "{c:?}");
        }
    }

    #[test]
    fn missing_plugins_fail_early() {
        let dir = tempfile::tempdir().unwrap();
        let err = CniNetwork::new(CniConfig {
            plugin_dir: dir.path().join("none"),
            state_dir: dir.path().join("state"),
            netns_dir: dir.path().join("netns"),
            ..CniConfig::default()
        })
        .err()
        .expect("no plugins");
        assert!(
            err.to_string().contains("containernetworking-plugins"),
            "{err}"
        );
    }

    #[test]
    fn sandbox_ids_are_checked() {
        for ok in ["abc", "0123456789abcdef", "pod_1.sandbox-x"] {
            validate_id(ok).unwrap();
        }
        for bad in [
            "",
            ".",
            "..",
            "../etc",
            "a/b",
            "a b",
            "x;y",
            &"a".repeat(129),
        ] {
            assert!(
                matches!(validate_id(bad), Err(NetworkError::InvalidId(_))),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn cni_args_name_the_pod() {
        let pod = PodRef {
            namespace: "default".into(),
            name: "web-1".into(),
            uid: "u-1".into(),
        };
        assert_eq!(
            cni_args("sb1", &pod).unwrap(),
            "IgnoreUnknown=1;K8S_POD_NAMESPACE=default;K8S_POD_NAME=web-1;\
             K8S_POD_INFRA_CONTAINER_ID=sb1;K8S_POD_UID=u-1"
        );
        let bad = PodRef {
            name: "x;K8S_POD_UID=evil".into(),
            ..pod
        };
        assert!(cni_args("sb1", &bad).is_err());
        assert_eq!(
            cni_args("sb1", &PodRef::default()).unwrap(),
            "IgnoreUnknown=1;K8S_POD_INFRA_CONTAINER_ID=sb1"
        );
    }

    #[test]
    fn port_mappings_for_portmap() {
        let ports = [
            PortMapping {
                host_ip: None,
                host_port: 8080,
                container_port: 80,
                protocol: "TCP".into(),
            },
            PortMapping {
                host_ip: Some("127.0.0.1".parse().unwrap()),
                host_port: 5353,
                container_port: 53,
                protocol: "udp".into(),
            },
        ];
        assert_eq!(
            Value::Array(port_mappings(&ports).unwrap()),
            json!([
                {"hostPort": 8080, "containerPort": 80, "protocol": "tcp"},
                {"hostPort": 5353, "containerPort": 53, "protocol": "udp", "hostIP": "127.0.0.1"},
            ])
        );
        let bad = PortMapping {
            protocol: "icmp".into(),
            ..ports[0].clone()
        };
        assert!(port_mappings(&[bad]).is_err());
        let zero = PortMapping {
            host_port: 0,
            ..ports[0].clone()
        };
        assert!(port_mappings(&[zero]).is_err());
    }

    #[test]
    fn plugin_chain_configs() {
        let dir = tempfile::tempdir().unwrap();
        let net = test_network(Path::new("/usr/lib/cni"), dir.path());
        let chain = net.plugin_chain(Vec::new());
        let types: Vec<&str> = chain.iter().map(plugin_type).collect();
        assert_eq!(types, ["bridge", "firewall"]);
        let bridge = &chain[0];
        assert_eq!(bridge["cniVersion"], "1.0.0");
        assert_eq!(bridge["name"], "skiff");
        assert_eq!(bridge["bridge"], "skiff0");
        assert_eq!(bridge["isGateway"], true);
        assert_eq!(bridge["ipMasq"], false);
        assert_eq!(bridge["mtu"], 1400);
        assert_eq!(
            bridge["ipam"]["ranges"],
            json!([[{"subnet": "10.42.0.0/24", "gateway": "10.42.0.1"}]])
        );
        assert_eq!(
            bridge["ipam"]["routes"],
            json!([{"dst": "0.0.0.0/0", "gw": "10.42.0.1"}])
        );
        assert_eq!(
            bridge["ipam"]["dataDir"],
            json!(dir.path().join("ipam").to_str().unwrap())
        );

        let chain = net.plugin_chain(vec![json!({"hostPort": 1, "containerPort": 2})]);
        let portmap = chain.last().unwrap();
        assert_eq!(plugin_type(portmap), "portmap");
        assert_eq!(portmap["capabilities"]["portMappings"], true);
        assert_eq!(
            portmap["runtimeConfig"]["portMappings"],
            json!([{"hostPort": 1, "containerPort": 2}])
        );
        assert_eq!(net.loopback_config()["type"], "loopback");
    }

    #[test]
    fn pod_ip_prefers_the_pod_interface() {
        let result = json!({
            "cniVersion": "1.0.0",
            "interfaces": [
                {"name": "skiff0", "mac": "aa"},
                {"name": "veth1", "mac": "bb"},
                {"name": "eth0", "mac": "cc", "sandbox": "/run/skiff/netns/x"},
            ],
            "ips": [
                {"address": "fd00::2/64", "interface": 2},
                {"address": "192.168.9.9/24", "interface": 0},
                {"address": "10.42.0.7/24", "gateway": "10.42.0.1", "interface": 2},
            ],
        });
        assert_eq!(pod_ip(&result), Some("10.42.0.7".parse().unwrap()));
        let no_index = json!({"ips": [{"address": "fd00::3/64"}, {"address": "10.42.0.3/24"}]});
        assert_eq!(pod_ip(&no_index), Some("10.42.0.3".parse().unwrap()));
        for bad in [
            json!({}),
            json!({"ips": "x"}),
            json!({"ips": [{"address": "garbage"}]}),
            json!({"ips": [{"address": 5, "interface": 99}]}),
        ] {
            assert_eq!(pod_ip(&bad), None, "{bad}");
        }
    }

    #[test]
    fn plugin_errors_are_readable() {
        let status = std::process::Command::new("false").status().unwrap();
        let msg = plugin_error(
            br#"{"cniVersion":"1.0.0","code":11,"msg":"failed to allocate","details":"range full"}"#,
            b"",
            status,
        );
        assert_eq!(msg, "failed to allocate: range full (code 11)");
        let msg = plugin_error(b"boom", b"some stderr\n", status);
        assert!(
            msg.contains("boom") && msg.ends_with("stderr: some stderr"),
            "{msg}"
        );
    }

    #[test]
    fn state_round_trip_and_list() {
        let dir = tempfile::tempdir().unwrap();
        let net = test_network(Path::new("/usr/lib/cni"), dir.path());
        assert!(net.list_blocking().unwrap().is_empty());
        let state = SandboxState {
            sandbox_id: "sb-1".into(),
            netns: dir.path().join("netns/sb-1"),
            cni_args: "IgnoreUnknown=1".into(),
            loopback: net.loopback_config(),
            plugins: net.plugin_chain(Vec::new()),
            result: Some(json!({"ips": []})),
            ip: Some("10.42.0.2".parse().unwrap()),
        };
        net.save_state(&state).unwrap();
        fs::write(dir.path().join("not-a-state.txt"), b"").unwrap();
        fs::write(dir.path().join(".hidden.json"), b"").unwrap();
        assert_eq!(net.list_blocking().unwrap(), ["sb-1"]);
        let back = net.load_state("sb-1").unwrap().unwrap();
        assert_eq!(back.ip, state.ip);
        assert_eq!(back.plugins, state.plugins);
        assert!(net.load_state("other").unwrap().is_none());
        fs::write(net.state_path("broken"), b"{").unwrap();
        assert!(net.load_state("broken").is_err());
        net.remove_state("sb-1").unwrap();
        net.remove_state("sb-1").unwrap();
    }

    #[test]
    fn hung_plugin_is_killed() {
        let child = Command::new("sleep")
            .arg("30")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let start = std::time::Instant::now();
        let out = wait_with_deadline(child, Duration::from_millis(100)).unwrap();
        assert!(out.timed_out);
        assert!(!out.output.status.success());
        assert!(start.elapsed() < Duration::from_secs(10));

        let child = Command::new("echo")
            .arg("{}")
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let out = wait_with_deadline(child, Duration::from_secs(30)).unwrap();
        assert!(!out.timed_out && out.output.status.success());
        assert_eq!(out.output.stdout, b"{}\n");
    }

    #[test]
    fn plugin_path_has_sbin() {
        let path = plugin_path_env();
        assert!(path.split(':').any(|p| p == "/usr/sbin"), "{path}");
    }
}
