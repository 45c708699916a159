//! Service routing (ClusterIP, NodePort, LoadBalancer, headless) and cluster DNS.
//!
//! The proxy does kube-proxy's and CoreDNS' jobs for one machine, seeing the cluster only
//! through the client's watches on Services and EndpointSlices (`discovery.k8s.io/v1`, tied
//! to their Service by the `kubernetes.io/service-name` label):
//!
//! - [`model`] turns those objects into what to serve (pure, unit-tested);
//! - [`netif`] puts the cluster IPs and the DNS address on a dedicated interface
//!   (`skiff-svc`: a dummy link, or a port-less bridge where the kernel has no dummy driver)
//!   and routes the service CIDR to it, so nothing for a service address leaves the machine;
//! - `forward` is a userspace proxy per Service socket (TCP connections, UDP flows): cluster
//!   IP and port, node address and nodePort, LB address and port (k3s ServiceLB's model on
//!   one machine); [`balancer`] picks the endpoint (round-robin, or sticky with
//!   `sessionAffinity: ClientIP`). Only ready endpoints get new connections (serving
//!   terminating ones only when none is ready, as kube-proxy does); an endpoint that leaves
//!   gets no new connection at once while open ones finish; with no endpoint a connection is
//!   reset at once; an endpoint that refuses is skipped for the next one;
//! - [`dns`] answers `<svc>.<ns>.svc.<domain>` (A/AAAA, the cluster IP; for headless
//!   Services the ready endpoints), `<hostname>.<svc>.<ns>.svc.<domain>`, SRV for named
//!   ports, CNAME for ExternalName, `a-b-c-d.<ns>.pod.<domain>`, PTR for cluster IPs; NXDOMAIN
//!   for other names of the domain, REFUSED (or the configured upstream) for the rest; UDP
//!   (truncating to make clients retry) and TCP. [`resolv_conf`] is what pods get;
//! - [`iptables`] is the kernel fast path: per-instance chains (`SK-<hash of the interface>-…`)
//!   rewritten in one `iptables-restore --noflush` batch when they change, removed on
//!   shutdown and, after a crash, on the next start or by [`iptables::cleanup_rules`];
//! - [`proxy`] is the control loop: it converges all of that on every watch event, writes
//!   `status.loadBalancer.ingress` (only when it differs), emits a Warning Event when a port
//!   cannot be had (another LoadBalancer holds it, or another program) and retries, and on
//!   shutdown removes what it added.
//!
//! Two modes ([`ProxyMode`], in [`ProxyConfig::mode`]): by default ([`ProxyMode::detect`]:
//! root and iptables installed) [`iptables`] installs kube-proxy-style DNAT rules for TCP
//! Service ports, so the kernel carries those connections without a userspace hop; the
//! listeners stay open (they hold the ports, detect conflicts, carry UDP, IPv6 and anything
//! the rules miss). [`ProxyMode::Userspace`] needs no kernel NAT at all, works the same in
//! any network namespace, and gives connection-level failover to the next endpoint; it costs
//! one extra local hop. `bench/proxy/run.sh` measures both.

pub mod balancer;
pub mod config;
pub mod dns;
mod forward;
pub mod iptables;
pub mod model;
pub mod netif;
pub mod proxy;

pub use config::{ProxyConfig, ProxyMode, resolv_conf};
pub use proxy::{ProxyError, ProxyHandle, ProxyStatus, run};
