//! Node IPAM: gives every Node a pod subnet (`spec.podCIDR`, one /24 of the cluster CIDR).
//!
//! Like kube-controller-manager with `--allocate-node-cidrs`: a node without `podCIDR` gets
//! the lowest /24 no other node holds; a podCIDR once set is never changed (Kubernetes makes
//! it immutable), so a restart of the controller or of the node changes nothing.

use std::net::Ipv4Addr;

use futures::StreamExt;
use k8s_openapi::api::core::v1::Node;
use serde_json::json;
use skiff_client::Client;
use skiff_client::kube::api::{Api, ListParams, Patch, PatchParams};
use skiff_client::kube::runtime::{WatchStreamExt, watcher};

/// Prefix length of each node's subnet.
pub const NODE_PREFIX: u8 = 24;

/// Starts the controller for pods in `cluster_cidr` (address, prefix length).
pub fn start(client: Client, cluster_cidr: (Ipv4Addr, u8)) -> tokio::task::JoinHandle<()> {
    tokio::spawn(run(client, cluster_cidr))
}

async fn run(client: Client, cluster: (Ipv4Addr, u8)) {
    let nodes: Api<Node> = Api::all(client);
    let stream = watcher(nodes.clone(), watcher::Config::default())
        .default_backoff()
        .applied_objects();
    futures::pin_mut!(stream);
    while let Some(event) = stream.next().await {
        let node = match event {
            Ok(n) => n,
            Err(e) => {
                tracing::debug!(error = %e, "node watch failed; backing off");
                continue;
            }
        };
        if pod_cidr(&node).is_some() || node.metadata.deletion_timestamp.is_some() {
            continue;
        }
        let Some(name) = node.metadata.name.clone() else {
            continue;
        };
        // A live list, not the watch's view: two nodes registering together must not get
        // the same subnet.
        let taken: Vec<String> = match nodes.list(&ListParams::default()).await {
            Ok(list) => list.items.iter().filter_map(pod_cidr).collect(),
            Err(e) => {
                tracing::warn!(error = %e, "listing nodes for IPAM");
                continue;
            }
        };
        let Some(subnet) = allocate(cluster, &taken) else {
            tracing::warn!(node = %name, "no free /{NODE_PREFIX} left in the cluster CIDR");
            continue;
        };
        let patch = json!({"spec": {"podCIDR": subnet, "podCIDRs": [subnet]}});
        if let Err(e) = nodes
            .patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
        {
            tracing::warn!(node = %name, error = %e, "setting podCIDR");
        }
    }
}

fn pod_cidr(node: &Node) -> Option<String> {
    node.spec
        .as_ref()
        .and_then(|s| s.pod_cidr.clone())
        .filter(|c| !c.is_empty())
}

/// The lowest /24 of `cluster` that is not in `taken` (which may hold foreign strings).
pub fn allocate(cluster: (Ipv4Addr, u8), taken: &[String]) -> Option<String> {
    let (base, len) = cluster;
    if len > NODE_PREFIX {
        return None;
    }
    let mask = if len == 0 { 0 } else { u32::MAX << (32 - len) };
    let start = u32::from(base) & mask;
    let count = 1u32 << (NODE_PREFIX - len);
    (0..count)
        .map(|i| {
            format!(
                "{}/{NODE_PREFIX}",
                Ipv4Addr::from(start + (i << (32 - NODE_PREFIX)))
            )
        })
        .find(|c| !taken.iter().any(|t| t == c))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allocates_the_lowest_free_subnet() {
        let cluster = (Ipv4Addr::new(10, 42, 0, 0), 16);
        assert_eq!(allocate(cluster, &[]).as_deref(), Some("10.42.0.0/24"));
        let taken = vec!["10.42.0.0/24".to_string(), "10.42.2.0/24".into()];
        assert_eq!(allocate(cluster, &taken).as_deref(), Some("10.42.1.0/24"));
        // Host bits in the configured CIDR are ignored.
        assert_eq!(
            allocate((Ipv4Addr::new(10, 42, 7, 9), 16), &[]).as_deref(),
            Some("10.42.0.0/24")
        );
        let full = vec!["10.9.9.0/24".to_string()];
        assert_eq!(allocate((Ipv4Addr::new(10, 9, 9, 0), 24), &full), None);
        assert_eq!(allocate((Ipv4Addr::new(10, 9, 9, 0), 25), &[]), None);
    }
}
