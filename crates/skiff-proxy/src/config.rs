//! The proxy's configuration (addresses, interface, DNS) and the resolv.conf pods get.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};

/// Everything the Service proxy and cluster DNS can be told.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProxyConfig {
    /// Where LoadBalancer Services open their `port` (k3s ServiceLB on one machine); also the
    /// address written to `status.loadBalancer.ingress`.
    pub lb_address: IpAddr,
    /// Where NodePort (and LoadBalancer) Services open their `nodePort`.
    pub node_address: IpAddr,
    /// The interface that carries the cluster IPs and the DNS address (a dummy interface,
    /// or a port-less bridge where the kernel has no dummy driver). Created if missing.
    /// Empty: touch no interface (no root needed); cluster IPs are then not served, only
    /// node ports and load balancers, and `dns_address` must already be local (loopback).
    pub service_interface: String,
    /// The cluster DNS server's address; it goes on the service interface.
    pub dns_address: IpAddr,
    pub dns_port: u16,
    pub cluster_domain: String,
    /// Where names outside the cluster domain are forwarded; `None` answers them REFUSED.
    pub dns_upstream: Option<SocketAddr>,
    /// Create the `kube-system/kube-dns` Service with `clusterIP: dns_address` (as k3s does),
    /// which also keeps the API server from handing that address to another Service.
    pub register_dns_service: bool,
    /// The service CIDR (for example `10.43.0.0/16`): when set, it is routed to the service
    /// interface so that traffic to an unallocated service address never leaves the machine.
    pub service_cidr: Option<(Ipv4Addr, u8)>,
    /// How TCP Service ports are forwarded: kernel NAT rules or the userspace proxy.
    pub mode: ProxyMode,
}

/// How the proxy forwards Service ports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProxyMode {
    /// iptables DNAT rules for TCP ports (kube-proxy's iptables mode), the userspace proxy
    /// for UDP and for what the rules cannot express (IPv6); its listeners stay open to hold
    /// the ports and to serve anything the rules miss.
    Iptables,
    /// Every connection through the userspace proxy (no kernel modules, no iptables).
    Userspace,
}

impl ProxyMode {
    /// Iptables when we are root and iptables is installed, else Userspace.
    pub fn detect() -> ProxyMode {
        if crate::iptables::available() {
            ProxyMode::Iptables
        } else {
            ProxyMode::Userspace
        }
    }
}

impl Default for ProxyMode {
    fn default() -> Self {
        ProxyMode::detect()
    }
}

impl Default for ProxyConfig {
    fn default() -> Self {
        ProxyConfig {
            lb_address: IpAddr::V4(Ipv4Addr::LOCALHOST),
            node_address: IpAddr::V4(Ipv4Addr::UNSPECIFIED),
            service_interface: "skiff-svc".into(),
            dns_address: IpAddr::V4(Ipv4Addr::new(10, 43, 0, 10)),
            dns_port: 53,
            cluster_domain: "cluster.local".into(),
            dns_upstream: None,
            register_dns_service: true,
            service_cidr: None,
            mode: ProxyMode::default(),
        }
    }
}

impl ProxyConfig {
    /// The defaults for a cluster whose Services get addresses from `cidr`: the DNS server at
    /// its tenth address (10.43.0.10 for k3s' 10.43.0.0/16) and the range routed to the
    /// service interface.
    pub fn for_service_cidr(cidr: (Ipv4Addr, u8)) -> Self {
        let tenth = Ipv4Addr::from(u32::from(cidr.0).wrapping_add(10));
        ProxyConfig {
            dns_address: IpAddr::V4(tenth),
            service_cidr: Some(cidr),
            ..ProxyConfig::default()
        }
    }

    /// The prefix of this proxy's iptables chains (from the service interface's name), what
    /// [`crate::iptables::cleanup_rules`] takes.
    pub fn rules_prefix(&self) -> String {
        crate::iptables::rules_prefix(&self.service_interface)
    }

    /// The cluster domain in lower case without surrounding dots.
    pub(crate) fn domain(&self) -> String {
        self.cluster_domain.trim_matches('.').to_ascii_lowercase()
    }

    /// The address LoadBalancer Services are reachable at, as written into their status.
    pub(crate) fn lb_ingress_ip(&self) -> IpAddr {
        if self.lb_address.is_unspecified() {
            IpAddr::V4(Ipv4Addr::LOCALHOST)
        } else {
            self.lb_address
        }
    }
}

/// The resolv.conf of a pod in `namespace` (ClusterFirst DNS policy): our DNS server and
/// Kubernetes' search path, so that `svc` and `svc.ns` resolve.
pub fn resolv_conf(namespace: &str, config: &ProxyConfig) -> String {
    let d = config.domain();
    format!(
        "nameserver {}\nsearch {namespace}.svc.{d} svc.{d} {d}\noptions ndots:5\n",
        config.dns_address
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dns_address_follows_the_service_cidr() {
        let c = ProxyConfig::for_service_cidr((Ipv4Addr::new(10, 43, 0, 0), 16));
        assert_eq!(c.dns_address, IpAddr::V4(Ipv4Addr::new(10, 43, 0, 10)));
        assert_eq!(c.service_cidr, Some((Ipv4Addr::new(10, 43, 0, 0), 16)));
        let c = ProxyConfig::for_service_cidr((Ipv4Addr::new(10, 96, 0, 0), 12));
        assert_eq!(c.dns_address, IpAddr::V4(Ipv4Addr::new(10, 96, 0, 10)));
    }

    #[test]
    fn resolv_conf_has_nameserver_and_search_path() {
        assert_eq!(
            resolv_conf("default", &ProxyConfig::default()),
            "nameserver 10.43.0.10\nsearch default.svc.cluster.local svc.cluster.local cluster.local\noptions ndots:5\n"
        );
        let c = ProxyConfig {
            cluster_domain: "Corp.Example.".into(),
            ..ProxyConfig::default()
        };
        assert!(
            resolv_conf("ml", &c)
                .contains("search ml.svc.corp.example svc.corp.example corp.example\n")
        );
    }
}
