//! Controllers: idempotent reconcilers driven by watches, talking to the API only through skiff-client.
//!
//! # The controllers
//!
//! [`start_all`] starts each controller as a task that sees the cluster only through the
//! client and watches, so every controller can be run twice, restarted after a crash, or run
//! on another machine, and converges on the same result.
//!
//! - [`namespace`] — when a namespace is deleted (it gets a `deletionTimestamp` and phase
//!   `Terminating`), deletes every namespaced object in it with Background propagation,
//!   waits until none is left (objects with finalizers hold the namespace, as in Kubernetes),
//!   then removes the `kubernetes` finalizer through `PUT /api/v1/namespaces/<ns>/finalize`
//!   and the API server removes the namespace. Meanwhile `status.conditions` carries
//!   Kubernetes' `NamespaceContentRemaining`, `NamespaceFinalizersRemaining` and
//!   `NamespaceDeletionContentFailure`, so `kubectl describe namespace` shows what a stuck
//!   namespace waits for. `default`, `kube-system` and `kube-public`
//!   cannot be deleted (the API server answers 403 Forbidden).
//! - [`garbagecollector`] — follows `metadata.ownerReferences` like Kubernetes' garbage
//!   collector:
//!   - an object whose owners are all gone is deleted (Background); if some owner remains,
//!     only the references to the gone owners are removed. "Gone" is always confirmed by a
//!     live GET of the owner with its uid compared, never taken from the cache alone;
//!   - `propagationPolicy: Orphan` (finalizer `orphan`): the owner's reference is removed
//!     from every dependent, then the finalizer, and the owner goes;
//!   - `propagationPolicy: Foreground` (finalizer `foregroundDeletion`): the dependents are
//!     deleted first (themselves in the foreground when their reference has
//!     `blockOwnerDeletion`, so grandchildren go before children); once no dependent is
//!     left, the finalizer is removed and the owner goes. Unlike Kubernetes, which waits only
//!     for dependents with `blockOwnerDeletion`, skiff waits for every dependent, so a
//!     foreground delete returns only when the whole tree is gone.
//!
//!   It watches every served resource into an ownership graph (uid → owners and
//!   dependents), reconciles the uids a change touches, and re-checks every owned object
//!   every 30 s as a safety net; those checks are answered from the graph, so an idle
//!   cluster costs no API calls.
//! - [`replicaset`] — keeps `spec.replicas` pods matching the selector (adopting and releasing
//!   pods, deleting surplus in Kubernetes' order) and reports status.
//! - [`deployment`] — RollingUpdate (maxSurge/maxUnavailable, readiness, minReadySeconds) and
//!   Recreate through ReplicaSets named `<deployment>-<pod-template-hash>`, revisions for
//!   `kubectl rollout history/undo`, pause/resume/restart, progress deadline.
//! - [`nodeipam`] — gives each Node a /24 pod subnet (`spec.podCIDR`) of the cluster CIDR;
//!   started by skiff-server, which knows the CIDR.
//! - [`endpoints`] — the core/v1 Endpoints of every Service with a selector: ready and
//!   not-ready pod addresses, `targetPort` names resolved per pod; written only on change.
//! - [`endpointslice`] — the discovery.k8s.io/v1 EndpointSlices of the same Services (100
//!   endpoints a slice, `ready`/`serving`/`terminating` conditions), updated in place;
//!   the hand-written Endpoints of Services without a selector are mirrored into slices.
//! - [`nodelifecycle`] — nodes without a heartbeat (Lease or Ready condition) for the grace
//!   period become Ready=Unknown, not-ready/unreachable nodes are tainted, and pods on
//!   NoExecute-tainted nodes are evicted when their tolerations run out.

pub mod deployment;
pub mod endpoints;
pub mod endpointslice;
pub mod garbagecollector;
pub mod namespace;
pub mod nodeipam;
pub mod nodelifecycle;
pub mod replicaset;
pub mod resources;
mod servicepods;
mod workload;

use skiff_client::Client;

/// Settings of the controllers that have any (the rest need none).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Config {
    pub node_lifecycle: nodelifecycle::Config,
}

/// Starts every built-in controller with the default [`Config`]; the handles stop them
/// when aborted.
pub fn start_all(client: Client) -> Vec<tokio::task::JoinHandle<()>> {
    start_with(client, Config::default())
}

/// Starts every built-in controller with `config`; the handles stop them when aborted.
pub fn start_with(client: Client, config: Config) -> Vec<tokio::task::JoinHandle<()>> {
    vec![
        namespace::start(client.clone()),
        garbagecollector::start(client.clone()),
        replicaset::start(client.clone()),
        deployment::start(client.clone()),
        endpoints::start(client.clone()),
        endpointslice::start(client.clone()),
        nodelifecycle::start_with(client, config.node_lifecycle),
    ]
}
