//! Scheduler throughput benchmark: an in-process API server with simulated (KWOK-like) nodes,
//! a backlog of pending pods, and the time until the scheduler has bound them all.
//!
//! Usage: `scheduler_bench [NODES] [PODS] [--no-events] [--binds=N]` (defaults 1000 and 10000).

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use futures::StreamExt;
use k8s_openapi::api::core::v1::{Node, Pod};
use kube::api::{Api, ListParams, Patch, PatchParams, PostParams};
use serde_json::json;
use skiff_scheduler::{Options, start_with};
use skiff_server::ServerConfig;

/// Requests in flight while setting the cluster up.
const SETUP_CONCURRENCY: usize = 64;

fn defaults_binds() -> usize {
    Options::default().max_concurrent_binds
}

fn arg(n: usize, default: usize) -> usize {
    std::env::args()
        .nth(n)
        .and_then(|a| a.parse().ok())
        .unwrap_or(default)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let num_nodes = arg(1, 1000);
    let num_pods = arg(2, 10_000);
    let dir = tempfile::tempdir()?;
    let running = skiff_server::start(ServerConfig {
        port: 0,
        controllers: false,
        ..ServerConfig::new(dir.path().to_path_buf())
    })
    .await?;
    let client = running.client.clone();

    // Simulated nodes: a Node object and its status, as KWOK writes them.
    let started = Instant::now();
    let nodes: Api<Node> = Api::all(client.clone());
    let results: Vec<anyhow::Result<()>> = futures::stream::iter(0..num_nodes)
        .map(|i| {
            let nodes = nodes.clone();
            async move {
                let name = format!("node-{i:04}");
                let node: Node = serde_json::from_value(json!({
                    "apiVersion": "v1", "kind": "Node",
                    "metadata": {"name": name, "labels": {"type": "kwok", "kubernetes.io/hostname": name}},
                }))?;
                nodes.create(&PostParams::default(), &node).await?;
                let alloc = json!({"cpu": "32", "memory": "128Gi", "pods": "110"});
                let status = json!({"status": {
                    "allocatable": alloc, "capacity": alloc,
                    "conditions": [{"type": "Ready", "status": "True", "reason": "KubeletReady"}],
                }});
                nodes
                    .patch_status(&name, &PatchParams::default(), &Patch::Merge(&status))
                    .await?;
                Ok(())
            }
        })
        .buffer_unordered(SETUP_CONCURRENCY)
        .collect()
        .await;
    results.into_iter().collect::<anyhow::Result<Vec<()>>>()?;
    let nodes_secs = started.elapsed().as_secs_f64();

    // The backlog: pending pods created before the scheduler starts.
    let started = Instant::now();
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    let results: Vec<anyhow::Result<()>> = futures::stream::iter(0..num_pods)
        .map(|i| {
            let pods = pods.clone();
            async move {
                let pod: Pod = serde_json::from_value(json!({
                    "apiVersion": "v1", "kind": "Pod",
                    "metadata": {"name": format!("pod-{i:05}"), "labels": {"app": "bench"}},
                    "spec": {"containers": [{"name": "app", "image": "registry.k8s.io/pause:3.10",
                        "resources": {"requests": {"cpu": "100m", "memory": "128Mi"}}}]},
                }))?;
                pods.create(&PostParams::default(), &pod).await?;
                Ok(())
            }
        })
        .buffer_unordered(SETUP_CONCURRENCY)
        .collect()
        .await;
    results.into_iter().collect::<anyhow::Result<Vec<()>>>()?;
    let pods_secs = started.elapsed().as_secs_f64();

    // Schedule the backlog.
    let started = Instant::now();
    // `--no-events` leaves out the Scheduled events, to show what they cost.
    let record_scheduled_events = !std::env::args().any(|a| a == "--no-events");
    // `--binds=N` changes how many bindings are in flight at once.
    let defaults = Options::default();
    let max_concurrent_binds = std::env::args()
        .find_map(|a| a.strip_prefix("--binds=").and_then(|n| n.parse().ok()))
        .unwrap_or(defaults.max_concurrent_binds);
    println!("bindings in flight at most: {max_concurrent_binds}");
    let handle = start_with(
        client.clone(),
        Options {
            record_scheduled_events,
            max_concurrent_binds,
            ..defaults
        },
    );
    let metrics = Arc::clone(&handle.metrics);
    let deadline = started + Duration::from_secs(150);
    let mut all_scheduled_at = None;
    let mut first_scheduled_at = None;
    loop {
        if first_scheduled_at.is_none() && metrics.scheduled.load(Ordering::Relaxed) > 0 {
            first_scheduled_at = Some(started.elapsed());
        }
        let scheduled = metrics.scheduled.load(Ordering::Relaxed) as usize;
        if all_scheduled_at.is_none() && scheduled >= num_pods {
            all_scheduled_at = Some(started.elapsed());
        }
        if metrics.bound.load(Ordering::Relaxed) as usize >= num_pods || Instant::now() > deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let elapsed = started.elapsed();

    // Check the outcome through the API, not the scheduler's own counters.
    let listed = pods.list(&ListParams::default()).await?;
    let mut per_node: std::collections::HashMap<String, usize> = Default::default();
    for p in &listed.items {
        if let Some(n) = p.spec.as_ref().and_then(|s| s.node_name.clone()) {
            *per_node.entry(n).or_default() += 1;
        }
    }
    let bound: usize = per_node.values().sum();
    let max_per_node = per_node.values().copied().max().unwrap_or(0);
    let algo = Duration::from_nanos(metrics.algorithm_nanos.load(Ordering::Relaxed));
    let secs = elapsed.as_secs_f64();

    println!("nodes: {num_nodes} (created in {nodes_secs:.2} s)");
    println!(
        "pods: {num_pods} (created in {pods_secs:.2} s, {:.0} creates/s)",
        num_pods as f64 / pods_secs
    );
    println!(
        "bound (listed from the API): {bound}; nodes used: {}; most pods on one node: {max_per_node}",
        per_node.len()
    );
    println!(
        "bind errors: {}; unschedulable cycles: {}",
        metrics.bind_errors.load(Ordering::Relaxed),
        metrics.unschedulable.load(Ordering::Relaxed)
    );
    if let Some(t) = first_scheduled_at {
        println!(
            "first pod placed after {:.2} s (initial list of nodes and pods)",
            t.as_secs_f64()
        );
    }
    if let Some(t) = all_scheduled_at {
        println!(
            "all pods placed by the algorithm after {:.2} s (includes the initial list/watch)",
            t.as_secs_f64()
        );
    }
    println!(
        "scheduling algorithm (filter+score) total: {:.3} s = {:.1} us/pod = {:.0} pods/s",
        algo.as_secs_f64(),
        algo.as_secs_f64() * 1e6 / num_pods as f64,
        num_pods as f64 / algo.as_secs_f64().max(1e-9)
    );
    println!(
        "scheduling loop waiting for a free binding slot: {:.2} s",
        Duration::from_nanos(metrics.bind_wait_nanos.load(Ordering::Relaxed)).as_secs_f64()
    );
    println!(
        "END-TO-END: {bound} pods bound in {secs:.2} s = {:.0} pods/s ({})",
        bound as f64 / secs,
        if record_scheduled_events {
            "bind + Scheduled event per pod"
        } else {
            "bind only, no Scheduled events"
        }
    );

    // The ceiling the API server sets: bindings posted directly at the same concurrency, while
    // the (now idle) scheduler still watches every pod, as it would in a cluster.
    let extra = (num_pods / 5).max(1);
    let results: Vec<anyhow::Result<()>> = futures::stream::iter(0..extra)
        .map(|i| {
            let pods = pods.clone();
            async move {
                let pod: Pod = serde_json::from_value(json!({
                    "apiVersion": "v1", "kind": "Pod",
                    "metadata": {"name": format!("direct-{i:05}")},
                    "spec": {"schedulerName": "nobody",
                             "containers": [{"name": "app", "image": "registry.k8s.io/pause:3.10"}]},
                }))?;
                pods.create(&PostParams::default(), &pod).await?;
                Ok(())
            }
        })
        .buffer_unordered(SETUP_CONCURRENCY)
        .collect()
        .await;
    results.into_iter().collect::<anyhow::Result<Vec<()>>>()?;
    let started = Instant::now();
    let results: Vec<anyhow::Result<()>> = futures::stream::iter(0..extra)
        .map(|i| {
            let pods = pods.clone();
            async move {
                let name = format!("direct-{i:05}");
                let binding = json!({
                    "apiVersion": "v1", "kind": "Binding",
                    "metadata": {"name": name},
                    "target": {"apiVersion": "v1", "kind": "Node", "name": format!("node-{:04}", i % num_nodes.max(1))},
                });
                pods.create_subresource::<_, serde_json::Value>(
                    "binding",
                    &name,
                    &PostParams::default(),
                    &binding,
                )
                .await?;
                Ok(())
            }
        })
        .buffer_unordered(defaults_binds())
        .collect()
        .await;
    results.into_iter().collect::<anyhow::Result<Vec<()>>>()?;
    let direct = started.elapsed().as_secs_f64();
    handle.task.abort();
    println!(
        "API ceiling: {extra} bindings posted directly (scheduler idle but watching, no events) in {direct:.2} s = {:.0} binds/s",
        extra as f64 / direct
    );

    running.shutdown().await;
    if bound < num_pods {
        anyhow::bail!("only {bound} of {num_pods} pods were bound");
    }
    Ok(())
}
