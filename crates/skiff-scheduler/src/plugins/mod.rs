//! The built-in filter and score plugins, one module per Kubernetes plugin.

pub mod inter_pod_affinity;
pub mod node_affinity;
pub mod node_resources;
pub mod node_unschedulable;
pub mod taint_toleration;
