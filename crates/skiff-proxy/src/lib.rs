//! Service routing (ClusterIP, NodePort, LoadBalancer, headless) and cluster DNS.
//!
//! The proxy does kube-proxy's and CoreDNS' jobs for one machine, seeing the cluster only
//! through the client's watches on Services and EndpointSlices:
//!
//! - [`model`] turns those objects into what to serve (pure, unit-tested);
//! - [`netif`] puts the cluster IPs and the DNS address on a dedicated interface
//!   (`skiff-svc`: a dummy link, or a port-less bridge where there is no dummy driver);
//! - [`forward`] is a userspace TCP proxy per Service address: cluster IP and port, node
//!   address and nodePort, LB address and port (k3s ServiceLB's model on one machine);
//!   [`balancer`] picks the endpoint (round-robin, ClientIP affinity), ready ones only;
//! - [`dns`] answers `<svc>.<ns>.svc.<domain>`, headless endpoints, SRV for named ports and
//!   `a-b-c-d.<ns>.pod.<domain>`, over UDP and TCP;
//! - [`proxy`] is the control loop that converges all of that and writes
//!   `status.loadBalancer.ingress`.

pub mod balancer;
pub mod config;
pub mod dns;
mod forward;
pub mod model;
pub mod netif;
pub mod proxy;

pub use config::{ProxyConfig, resolv_conf};
pub use proxy::{ProxyError, ProxyHandle, ProxyStatus, run};
