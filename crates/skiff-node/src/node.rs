//! The Node object: measured capacity, addresses, nodeInfo and conditions, registered at
//! start and kept fresh, and the node's Lease in `kube-node-lease` as its heartbeat.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Instant;

use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::Node;
use kube::Api;
use kube::api::{Patch, PatchParams, PostParams};
use serde_json::{Value, json};
use skiff_client::Client;

use crate::config::AgentConfig;

/// `kubeletVersion` reported in nodeInfo.
pub const KUBELET_VERSION: &str = "v1.32.0-skiff";
/// Pods per node, the kubelet's default `maxPods`.
pub const MAX_PODS: i64 = 110;
pub const LEASE_NAMESPACE: &str = "kube-node-lease";

/// Measured capacity, in Kubernetes quantity strings.
pub fn measure_capacity(root: &Path) -> BTreeMap<String, String> {
    let mut cap = BTreeMap::new();
    // available_parallelism honours the cgroup cpu quota and the affinity mask.
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    cap.insert("cpu".to_string(), cpus.to_string());
    if let Some(kib) = meminfo("MemTotal") {
        cap.insert("memory".to_string(), format!("{kib}Ki"));
    }
    cap.insert("pods".to_string(), MAX_PODS.to_string());
    if let Some(bytes) = filesystem_bytes(root).map(|(total, _)| total) {
        cap.insert(
            "ephemeral-storage".to_string(),
            format!("{}Ki", bytes / 1024),
        );
    }
    let gpus = nvidia_gpus(Path::new("/dev"));
    if gpus > 0 {
        cap.insert("nvidia.com/gpu".to_string(), gpus.to_string());
    }
    cap.insert("hugepages-2Mi".to_string(), "0".to_string());
    cap
}

/// A /proc/meminfo field in KiB.
fn meminfo(field: &str) -> Option<u64> {
    let text = std::fs::read_to_string("/proc/meminfo").ok()?;
    text.lines().find_map(|l| {
        let rest = l.strip_prefix(field)?.strip_prefix(':')?;
        rest.split_whitespace().next()?.parse().ok()
    })
}

/// (total, available) bytes of the filesystem holding `path` (or its nearest existing
/// ancestor).
fn filesystem_bytes(path: &Path) -> Option<(u64, u64)> {
    let mut p = path;
    while !p.exists() {
        p = p.parent()?;
    }
    let s = rustix::fs::statvfs(p).ok()?;
    Some((
        s.f_blocks.saturating_mul(s.f_frsize),
        s.f_bavail.saturating_mul(s.f_frsize),
    ))
}

/// Number of `/dev/nvidia<N>` devices.
pub fn nvidia_gpus(dev: &Path) -> usize {
    std::fs::read_dir(dev)
        .map(|rd| {
            rd.flatten()
                .filter(|e| {
                    let n = e.file_name();
                    let n = n.to_string_lossy();
                    n.strip_prefix("nvidia")
                        .is_some_and(|d| !d.is_empty() && d.chars().all(|c| c.is_ascii_digit()))
                })
                .count()
        })
        .unwrap_or(0)
}

fn read_trim(path: &str) -> String {
    std::fs::read_to_string(path)
        .map(|s| s.trim().to_string())
        .unwrap_or_default()
}

fn os_image() -> String {
    let text = std::fs::read_to_string("/etc/os-release").unwrap_or_default();
    text.lines()
        .find_map(|l| l.strip_prefix("PRETTY_NAME="))
        .map(|v| v.trim_matches('"').to_string())
        .unwrap_or_else(|| "Linux".to_string())
}

/// Go's GOARCH names, which Kubernetes labels and nodeInfo use.
pub fn go_arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "x86" => "386",
        "powerpc64" => "ppc64le",
        other => other,
    }
}

fn now() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

/// What the conditions say, without times: compared to decide whether to write.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Pressure {
    memory: bool,
    disk: bool,
}

fn pressure(root: &Path) -> Pressure {
    // The kubelet's default hard eviction thresholds: memory.available<100Mi,
    // nodefs.available<10%.
    let memory = meminfo("MemAvailable").is_some_and(|kib| kib < 100 * 1024);
    let disk = filesystem_bytes(root).is_some_and(|(total, avail)| total > 0 && avail * 10 < total);
    Pressure { memory, disk }
}

/// Keeps the Node and its Lease fresh.
pub struct NodeReporter {
    client: Client,
    config: AgentConfig,
    runtime_version: String,
    capacity: BTreeMap<String, String>,
    /// Condition type -> (status, lastTransitionTime).
    transitions: BTreeMap<&'static str, (bool, String)>,
    last_written: Option<(Pressure, Instant)>,
}

impl NodeReporter {
    pub fn new(client: Client, config: AgentConfig, runtime_version: String) -> Self {
        let mut capacity = measure_capacity(&config.root_dir);
        for (k, v) in &config.capacity {
            capacity.insert(k.clone(), v.clone());
        }
        NodeReporter {
            client,
            config,
            runtime_version,
            capacity,
            transitions: BTreeMap::new(),
            last_written: None,
        }
    }

    pub fn capacity(&self) -> &BTreeMap<String, String> {
        &self.capacity
    }

    fn labels(&self) -> BTreeMap<String, String> {
        let mut l = BTreeMap::new();
        let name = &self.config.node_name;
        l.insert("kubernetes.io/hostname".to_string(), name.clone());
        l.insert("kubernetes.io/os".to_string(), "linux".to_string());
        l.insert("kubernetes.io/arch".to_string(), go_arch().to_string());
        l.insert("beta.kubernetes.io/os".to_string(), "linux".to_string());
        l.insert("beta.kubernetes.io/arch".to_string(), go_arch().to_string());
        for (k, v) in &self.config.labels {
            l.insert(k.clone(), v.clone());
        }
        l
    }

    /// Creates the Node if it does not exist, or adds our labels and podCIDR to it.
    pub async fn register(&mut self) -> Result<(), kube::Error> {
        let api: Api<Node> = Api::all(self.client.clone());
        let name = self.config.node_name.clone();
        let mut spec = json!({});
        if let Some(cidr) = &self.config.pod_cidr {
            spec = json!({"podCIDR": cidr, "podCIDRs": [cidr]});
        }
        match api.get_opt(&name).await? {
            None => {
                let node: Node = serde_json::from_value(json!({
                    "apiVersion": "v1",
                    "kind": "Node",
                    "metadata": {"name": name, "labels": self.labels(),
                                 "annotations": {"node.alpha.kubernetes.io/ttl": "0"}},
                    "spec": spec,
                }))
                .map_err(kube::Error::SerdeError)?;
                match api.create(&PostParams::default(), &node).await {
                    Ok(_) => {}
                    Err(kube::Error::Api(e)) if e.code == 409 => {}
                    Err(e) => return Err(e),
                }
            }
            Some(existing) => {
                let has_cidr = existing
                    .spec
                    .as_ref()
                    .and_then(|s| s.pod_cidr.as_ref())
                    .is_some();
                let mut patch = json!({"metadata": {"labels": self.labels()}});
                if !has_cidr && self.config.pod_cidr.is_some() {
                    patch["spec"] = spec;
                }
                api.patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
                    .await?;
            }
        }
        self.last_written = None;
        self.update_status().await
    }

    fn condition(
        &mut self,
        type_: &'static str,
        status: bool,
        reason: &str,
        message: &str,
        now: &str,
    ) -> Value {
        let entry = self
            .transitions
            .entry(type_)
            .or_insert_with(|| (status, now.to_string()));
        if entry.0 != status {
            *entry = (status, now.to_string());
        }
        json!({
            "type": type_,
            "status": if status { "True" } else { "False" },
            "reason": reason,
            "message": message,
            "lastHeartbeatTime": now,
            "lastTransitionTime": entry.1,
        })
    }

    /// The full status as it is now.
    fn status(&mut self, p: &Pressure) -> Value {
        let now = now();
        let conditions = vec![
            if p.memory {
                self.condition(
                    "MemoryPressure",
                    true,
                    "KubeletHasInsufficientMemory",
                    "kubelet has insufficient memory available",
                    &now,
                )
            } else {
                self.condition(
                    "MemoryPressure",
                    false,
                    "KubeletHasSufficientMemory",
                    "kubelet has sufficient memory available",
                    &now,
                )
            },
            if p.disk {
                self.condition(
                    "DiskPressure",
                    true,
                    "KubeletHasDiskPressure",
                    "kubelet has disk pressure",
                    &now,
                )
            } else {
                self.condition(
                    "DiskPressure",
                    false,
                    "KubeletHasNoDiskPressure",
                    "kubelet has no disk pressure",
                    &now,
                )
            },
            self.condition(
                "PIDPressure",
                false,
                "KubeletHasSufficientPID",
                "kubelet has sufficient PID available",
                &now,
            ),
            self.condition(
                "Ready",
                true,
                "KubeletReady",
                "kubelet is posting ready status",
                &now,
            ),
        ];
        let mut addresses: Vec<Value> = self
            .config
            .node_ips
            .iter()
            .map(|ip| json!({"type": "InternalIP", "address": ip.to_string()}))
            .collect();
        addresses.push(json!({"type": "Hostname", "address": self.config.node_name}));
        json!({
            "capacity": self.capacity,
            "allocatable": self.capacity,
            "conditions": conditions,
            "addresses": addresses,
            "daemonEndpoints": {"kubeletEndpoint": {"Port": self.config.kubelet_port}},
            "nodeInfo": {
                "machineID": read_trim("/etc/machine-id"),
                "systemUUID": read_trim("/sys/class/dmi/id/product_uuid"),
                "bootID": read_trim("/proc/sys/kernel/random/boot_id"),
                "kernelVersion": read_trim("/proc/sys/kernel/osrelease"),
                "osImage": os_image(),
                "containerRuntimeVersion": self.runtime_version,
                "kubeletVersion": KUBELET_VERSION,
                "kubeProxyVersion": "",
                "operatingSystem": "linux",
                "architecture": go_arch(),
            },
        })
    }

    /// Writes the status when something changed or the report interval has passed.
    pub async fn update_status(&mut self) -> Result<(), kube::Error> {
        let root = self.config.root_dir.clone();
        let p = tokio::task::spawn_blocking(move || pressure(&root))
            .await
            .unwrap_or(Pressure {
                memory: false,
                disk: false,
            });
        let api: Api<Node> = Api::all(self.client.clone());
        let due = match &self.last_written {
            None => true,
            Some((old, at)) => {
                *old != p
                    || at.elapsed() >= self.config.status_report_interval
                    || !self.conditions_match(&api, &p).await?
            }
        };
        if !due {
            return Ok(());
        }
        let status = self.status(&p);
        api.patch_status(
            &self.config.node_name,
            &PatchParams::default(),
            &Patch::Merge(&json!({"status": status})),
        )
        .await?;
        self.last_written = Some((p, Instant::now()));
        Ok(())
    }

    /// Whether the Node's conditions still say what we last wrote: the node lifecycle
    /// controller sets `Ready=Unknown` when heartbeats stop, and a recovered agent must
    /// correct that at once rather than at the next report.
    async fn conditions_match(&self, api: &Api<Node>, p: &Pressure) -> Result<bool, kube::Error> {
        let node = api.get(&self.config.node_name).await?;
        let conditions = node.status.and_then(|s| s.conditions).unwrap_or_default();
        let status_of = |t: &str| {
            conditions
                .iter()
                .find(|c| c.type_ == t)
                .map(|c| c.status.clone())
        };
        let want = |b: bool| Some(if b { "True" } else { "False" }.to_string());
        Ok(status_of("Ready") == want(true)
            && status_of("MemoryPressure") == want(p.memory)
            && status_of("DiskPressure") == want(p.disk)
            && status_of("PIDPressure") == want(false))
    }

    /// Creates or renews the node's Lease.
    pub async fn renew_lease(&self) -> Result<(), kube::Error> {
        let api: Api<Lease> = Api::namespaced(self.client.clone(), LEASE_NAMESPACE);
        let name = &self.config.node_name;
        let micro = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Micros, true);
        match api.get_opt(name).await? {
            Some(_) => {
                let patch = json!({"spec": {
                    "holderIdentity": name,
                    "leaseDurationSeconds": self.config.lease_duration_seconds,
                    "renewTime": micro,
                }});
                api.patch(name, &PatchParams::default(), &Patch::Merge(&patch))
                    .await?;
            }
            None => {
                let node_uid = Api::<Node>::all(self.client.clone())
                    .get_opt(name)
                    .await?
                    .and_then(|n| n.metadata.uid);
                let mut meta = json!({"name": name, "namespace": LEASE_NAMESPACE});
                if let Some(uid) = node_uid {
                    meta["ownerReferences"] = json!([{
                        "apiVersion": "v1", "kind": "Node", "name": name, "uid": uid
                    }]);
                }
                let lease: Lease = serde_json::from_value(json!({
                    "apiVersion": "coordination.k8s.io/v1",
                    "kind": "Lease",
                    "metadata": meta,
                    "spec": {
                        "holderIdentity": name,
                        "leaseDurationSeconds": self.config.lease_duration_seconds,
                        "renewTime": micro,
                    },
                }))
                .map_err(kube::Error::SerdeError)?;
                match api.create(&PostParams::default(), &lease).await {
                    Ok(_) => {}
                    Err(kube::Error::Api(e)) if e.code == 409 => {}
                    Err(e) => return Err(e),
                }
            }
        }
        Ok(())
    }

    /// The heartbeat loop: Lease renewals and status updates on their own intervals.
    pub async fn run(mut self) {
        let mut lease = tokio::time::interval(self.config.lease_renew_interval);
        let mut status = tokio::time::interval(self.config.status_update_interval);
        lease.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        status.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = lease.tick() => {
                    if let Err(e) = self.renew_lease().await {
                        tracing::warn!(error = %e, "renewing the node lease");
                    }
                }
                _ = status.tick() => {
                    let r = self.update_status().await;
                    if let Err(kube::Error::Api(e)) = &r
                        && e.code == 404
                    {
                        // Someone deleted our Node: register again, as the kubelet does.
                        if let Err(e) = self.register().await {
                            tracing::warn!(error = %e, "re-registering the node");
                        }
                    } else if let Err(e) = r {
                        tracing::warn!(error = %e, "updating node status");
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_gpus() {
        let dir = tempfile::tempdir().expect("tempdir");
        for n in ["nvidia0", "nvidia1", "nvidiactl", "nvidia-uvm", "null"] {
            std::fs::write(dir.path().join(n), "").expect("write");
        }
        assert_eq!(nvidia_gpus(dir.path()), 2);
    }

    #[test]
    fn measures_this_machine() {
        let cap = measure_capacity(Path::new("/"));
        assert!(
            cap.get("cpu")
                .is_some_and(|c| c.parse::<u32>().is_ok_and(|n| n >= 1))
        );
        assert!(cap.get("memory").is_some_and(|m| m.ends_with("Ki")));
        assert_eq!(cap.get("pods").map(String::as_str), Some("110"));
        assert!(cap.contains_key("ephemeral-storage"));
    }
}
