//! Translates Services and EndpointSlices into what the proxy serves: routes, listeners, addresses and DNS records.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use k8s_openapi::api::core::v1::{Service, ServicePort};
use k8s_openapi::api::discovery::v1::{Endpoint, EndpointSlice};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use crate::config::ProxyConfig;
use crate::dns::{DnsRecord, DnsTable};

/// The label that ties an EndpointSlice to its Service.
pub const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";
/// Kubernetes' default `sessionAffinityConfig.clientIP.timeoutSeconds` (3 hours).
pub const DEFAULT_AFFINITY_TIMEOUT: Duration = Duration::from_secs(10800);

/// One port of one Service: what a listener forwards to.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PortKey {
    pub namespace: String,
    pub service: String,
    /// The Service port's name ("" when unnamed), which EndpointSlice ports are matched by.
    pub port: String,
}

impl fmt::Display for PortKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.namespace, self.service)?;
        if !self.port.is_empty() {
            write!(f, ":{}", self.port)?;
        }
        Ok(())
    }
}

/// Where a Service port's new connections may go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    pub endpoints: Vec<SocketAddr>,
    /// `Some(timeout)` for `sessionAffinity: ClientIP`.
    pub affinity: Option<Duration>,
}

/// How a listener came to be, for logs and conflict messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ListenerKind {
    ClusterIp,
    NodePort,
    LoadBalancer,
}

impl fmt::Display for ListenerKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ListenerKind::ClusterIp => "ClusterIP",
            ListenerKind::NodePort => "NodePort",
            ListenerKind::LoadBalancer => "LoadBalancer",
        })
    }
}

/// The transport of a Service port the proxy serves (SCTP is not).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Protocol {
    Tcp,
    Udp,
}

impl Protocol {
    fn of(p: &ServicePort) -> Option<Protocol> {
        match p.protocol.as_deref().unwrap_or("TCP") {
            "TCP" => Some(Protocol::Tcp),
            "UDP" => Some(Protocol::Udp),
            _ => None,
        }
    }
}

impl fmt::Display for Protocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Protocol::Tcp => "TCP",
            Protocol::Udp => "UDP",
        })
    }
}

/// A socket: transport and address.
pub type Listen = (Protocol, SocketAddr);

/// One socket the proxy should listen on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListenerSpec {
    pub protocol: Protocol,
    pub addr: SocketAddr,
    pub kind: ListenerKind,
    pub route: PortKey,
}

/// A LoadBalancer Service as ServiceLB sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoadBalancerService {
    pub namespace: String,
    pub name: String,
    /// The sockets its `port`s need on the LB address.
    pub listeners: Vec<Listen>,
    /// Why some port cannot be opened (another Service holds it).
    pub conflicts: Vec<String>,
}

/// Everything the proxy should serve, computed from the cluster's state alone.
#[derive(Debug, Default)]
pub struct Desired {
    pub routes: HashMap<PortKey, Route>,
    /// Each socket is claimed by one Service port only.
    pub listeners: BTreeMap<Listen, ListenerSpec>,
    /// Addresses for the service interface: cluster IPs (and the DNS address).
    pub addresses: BTreeSet<IpAddr>,
    pub load_balancers: Vec<LoadBalancerService>,
    /// Services (namespace, name) that are not LoadBalancers, whose stale ingress we clear.
    pub others: Vec<(String, String)>,
    pub dns: DnsTable,
}

fn service_type(svc: &Service) -> &str {
    svc.spec
        .as_ref()
        .and_then(|s| s.type_.as_deref())
        .unwrap_or("ClusterIP")
}

/// The Service's cluster IPs; empty for headless and ExternalName Services.
pub fn cluster_ips(svc: &Service) -> Vec<IpAddr> {
    let Some(spec) = &svc.spec else {
        return Vec::new();
    };
    if service_type(svc) == "ExternalName" {
        return Vec::new();
    }
    let mut ips: Vec<IpAddr> = spec
        .cluster_ips
        .iter()
        .flatten()
        .chain(spec.cluster_ip.iter())
        .filter_map(|s| s.parse().ok())
        .collect();
    ips.dedup();
    let mut seen = HashSet::new();
    ips.retain(|ip| seen.insert(*ip));
    ips
}

fn is_headless(svc: &Service) -> bool {
    svc.spec
        .as_ref()
        .and_then(|s| s.cluster_ip.as_deref())
        .is_some_and(|ip| ip == "None")
}

/// Whether an endpoint takes new connections: Kubernetes treats a missing `ready` as ready.
fn is_ready(ep: &Endpoint) -> bool {
    ep.conditions.as_ref().and_then(|c| c.ready).unwrap_or(true)
}

/// A terminating endpoint that still serves: used only when no endpoint is ready, as
/// kube-proxy does, so a rollout's last old pod can finish its work.
fn is_serving_terminating(ep: &Endpoint) -> bool {
    ep.conditions.as_ref().is_some_and(|c| {
        c.serving == Some(true) && c.terminating == Some(true) && c.ready != Some(true)
    })
}

/// The target port of a Service port, matched against one EndpointSlice's ports.
fn slice_port(slice: &EndpointSlice, port: &ServicePort) -> Option<u16> {
    let want = port.name.as_deref().unwrap_or("");
    let ports = slice.ports.as_deref().unwrap_or_default();
    let proto = port.protocol.as_deref().unwrap_or("TCP");
    let by_name = ports.iter().find(|p| {
        p.name.as_deref().unwrap_or("") == want && p.protocol.as_deref().unwrap_or("TCP") == proto
    });
    if let Some(p) = by_name {
        return p.port.and_then(|n| u16::try_from(n).ok());
    }
    // A hand-written slice without ports: use a numeric targetPort (or the port itself).
    if ports.is_empty() {
        return match &port.target_port {
            Some(IntOrString::Int(n)) => u16::try_from(*n).ok(),
            Some(IntOrString::String(_)) => None,
            None => u16::try_from(port.port).ok(),
        };
    }
    None
}

fn slice_addr(ep: &Endpoint, slice: &EndpointSlice) -> Option<IpAddr> {
    if slice.address_type == "FQDN" {
        return None;
    }
    ep.addresses.first().and_then(|a| a.parse().ok())
}

fn affinity(svc: &Service) -> Option<Duration> {
    let spec = svc.spec.as_ref()?;
    if spec.session_affinity.as_deref() != Some("ClientIP") {
        return None;
    }
    let secs = spec
        .session_affinity_config
        .as_ref()
        .and_then(|c| c.client_ip.as_ref())
        .and_then(|c| c.timeout_seconds)
        .and_then(|s| u64::try_from(s).ok())
        .filter(|s| *s > 0);
    Some(secs.map_or(DEFAULT_AFFINITY_TIMEOUT, Duration::from_secs))
}

fn endpoints_for(slices: &[&EndpointSlice], port: &ServicePort) -> Vec<SocketAddr> {
    let mut ready = Vec::new();
    let mut terminating = Vec::new();
    for slice in slices {
        let Some(target) = slice_port(slice, port) else {
            continue;
        };
        for ep in &slice.endpoints {
            let Some(ip) = slice_addr(ep, slice) else {
                continue;
            };
            let addr = SocketAddr::new(ip, target);
            if is_ready(ep) {
                if !ready.contains(&addr) {
                    ready.push(addr);
                }
            } else if is_serving_terminating(ep) && !terminating.contains(&addr) {
                terminating.push(addr);
            }
        }
    }
    if ready.is_empty() { terminating } else { ready }
}

fn sort_key(svc: &Service) -> (Option<k8s_openapi::jiff::Timestamp>, String, String) {
    (
        svc.metadata.creation_timestamp.as_ref().map(|t| t.0),
        svc.metadata.namespace.clone().unwrap_or_default(),
        svc.metadata.name.clone().unwrap_or_default(),
    )
}

/// Computes what to serve. Services are considered oldest first, so when two claim the same
/// address (two LoadBalancers on one port) the older keeps it, as with ServiceLB.
pub fn desired(services: &[&Service], slices: &[&EndpointSlice], config: &ProxyConfig) -> Desired {
    let mut by_service: HashMap<(&str, &str), Vec<&EndpointSlice>> = HashMap::new();
    for s in slices {
        let ns = s.metadata.namespace.as_deref().unwrap_or("");
        if let Some(svc) = s
            .metadata
            .labels
            .as_ref()
            .and_then(|l| l.get(SERVICE_NAME_LABEL))
        {
            by_service.entry((ns, svc.as_str())).or_default().push(s);
        }
    }
    let mut services: Vec<&Service> = services.to_vec();
    services.sort_by_key(|s| sort_key(s));

    let mut d = Desired::default();
    let mut dns = DnsTable::new(&config.domain());
    d.addresses.insert(config.dns_address);
    let lb_bind = config.lb_address;

    for svc in services {
        let (Some(ns), Some(name)) = (&svc.metadata.namespace, &svc.metadata.name) else {
            continue;
        };
        if svc.metadata.deletion_timestamp.is_some() {
            continue;
        }
        let Some(spec) = &svc.spec else { continue };
        let my_slices = by_service
            .get(&(ns.as_str(), name.as_str()))
            .cloned()
            .unwrap_or_default();
        let ty = service_type(svc);
        let ports = spec.ports.as_deref().unwrap_or_default();

        // DNS first: every Service has a name, whatever it proxies.
        dns_records(&mut dns, svc, ns, name, &my_slices);

        let ips = cluster_ips(svc);
        // The DNS Service's address is served by our DNS server, not proxied.
        if ips.contains(&config.dns_address) {
            d.others.push((ns.clone(), name.clone()));
            continue;
        }
        let mut lb = (ty == "LoadBalancer" && spec.load_balancer_class.is_none()).then(|| {
            LoadBalancerService {
                namespace: ns.clone(),
                name: name.clone(),
                listeners: Vec::new(),
                conflicts: Vec::new(),
            }
        });
        if lb.is_none() {
            d.others.push((ns.clone(), name.clone()));
        }
        if is_headless(svc) || ips.is_empty() {
            if let Some(lb) = lb {
                d.load_balancers.push(lb);
            }
            continue;
        }
        d.addresses.extend(ips.iter().copied());
        let aff = affinity(svc);
        for p in ports {
            let (Some(proto), Ok(port)) = (Protocol::of(p), u16::try_from(p.port)) else {
                continue;
            };
            let key = PortKey {
                namespace: ns.clone(),
                service: name.clone(),
                port: p.name.clone().unwrap_or_default(),
            };
            d.routes.insert(
                key.clone(),
                Route {
                    endpoints: endpoints_for(&my_slices, p),
                    affinity: aff,
                },
            );
            let mut claim = |addr: SocketAddr, kind: ListenerKind| -> Option<String> {
                match d.listeners.get(&(proto, addr)) {
                    Some(held) if held.route != key => Some(format!(
                        "{kind} port {addr}/{proto} is already used by Service {}",
                        held.route
                    )),
                    Some(_) => None,
                    None => {
                        d.listeners.insert(
                            (proto, addr),
                            ListenerSpec {
                                protocol: proto,
                                addr,
                                kind,
                                route: key.clone(),
                            },
                        );
                        None
                    }
                }
            };
            for ip in &ips {
                if let Some(c) = claim(SocketAddr::new(*ip, port), ListenerKind::ClusterIp) {
                    tracing::debug!("{c}");
                }
            }
            if matches!(ty, "NodePort" | "LoadBalancer")
                && let Some(np) = p.node_port.and_then(|n| u16::try_from(n).ok())
                && let Some(c) = claim(
                    SocketAddr::new(config.node_address, np),
                    ListenerKind::NodePort,
                )
            {
                tracing::debug!("{c}");
            }
            if let Some(lb) = &mut lb {
                let addr = SocketAddr::new(lb_bind, port);
                lb.listeners.push((proto, addr));
                if let Some(c) = claim(addr, ListenerKind::LoadBalancer) {
                    lb.conflicts.push(c);
                }
            }
        }
        if let Some(lb) = lb {
            d.load_balancers.push(lb);
        }
    }
    d.dns = dns;
    d
}

fn dns_records(dns: &mut DnsTable, svc: &Service, ns: &str, name: &str, slices: &[&EndpointSlice]) {
    let Some(spec) = &svc.spec else { return };
    let fqdn = dns.service_name(ns, name);
    dns.add_name(&fqdn);
    let ports = spec.ports.as_deref().unwrap_or_default();
    if service_type(svc) == "ExternalName" {
        if let Some(target) = &spec.external_name {
            dns.add(
                &fqdn,
                DnsRecord::Cname(target.trim_end_matches('.').to_string()),
            );
        }
        return;
    }
    if !is_headless(svc) {
        for ip in cluster_ips(svc) {
            dns.add(&fqdn, DnsRecord::address(ip));
            dns.add_reverse(ip, &fqdn);
        }
        for p in ports {
            if let (Some(pn), Ok(port)) = (&p.name, u16::try_from(p.port)) {
                let proto = p.protocol.as_deref().unwrap_or("TCP").to_ascii_lowercase();
                dns.add(
                    &format!("_{pn}._{proto}.{fqdn}"),
                    DnsRecord::Srv {
                        port,
                        target: fqdn.clone(),
                    },
                );
            }
        }
        return;
    }
    // Headless: the endpoints themselves, with per-endpoint names for those with a hostname.
    let publish_all = spec.publish_not_ready_addresses == Some(true);
    let mut seen = HashSet::new();
    for slice in slices {
        for ep in &slice.endpoints {
            if !(publish_all || is_ready(ep)) {
                continue;
            }
            let Some(ip) = slice_addr(ep, slice) else {
                continue;
            };
            let host = ep
                .hostname
                .clone()
                .unwrap_or_else(|| ip.to_string().replace(['.', ':'], "-"));
            let host_fqdn = format!("{}.{fqdn}", host.to_ascii_lowercase());
            if ep.hostname.is_some() {
                dns.add(&host_fqdn, DnsRecord::address(ip));
                dns.add_reverse(ip, &host_fqdn);
            }
            if seen.insert(ip) {
                dns.add(&fqdn, DnsRecord::address(ip));
            }
            for p in slice.ports.iter().flatten() {
                if let (Some(pn), Some(port)) =
                    (&p.name, p.port.and_then(|n| u16::try_from(n).ok()))
                {
                    let proto = p.protocol.as_deref().unwrap_or("TCP").to_ascii_lowercase();
                    dns.add(
                        &format!("_{pn}._{proto}.{fqdn}"),
                        DnsRecord::Srv {
                            port,
                            target: host_fqdn.clone(),
                        },
                    );
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn svc(v: serde_json::Value) -> Service {
        serde_json::from_value(v).expect("service")
    }

    fn slice(v: serde_json::Value) -> EndpointSlice {
        serde_json::from_value(v).expect("slice")
    }

    fn config() -> ProxyConfig {
        ProxyConfig::default()
    }

    fn web() -> Service {
        svc(json!({
            "metadata": {"name": "web", "namespace": "default"},
            "spec": {"type": "LoadBalancer", "clusterIP": "10.43.0.5", "clusterIPs": ["10.43.0.5"],
                     "ports": [{"name": "http", "port": 80, "targetPort": "http", "nodePort": 30080, "protocol": "TCP"}]}
        }))
    }

    fn web_slice() -> EndpointSlice {
        slice(json!({
            "metadata": {"name": "web-abc", "namespace": "default",
                         "labels": {"kubernetes.io/service-name": "web"}},
            "addressType": "IPv4",
            "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}],
            "endpoints": [
                {"addresses": ["10.42.0.2"], "conditions": {"ready": true}},
                {"addresses": ["10.42.0.3"]},
                {"addresses": ["10.42.0.4"], "conditions": {"ready": false}},
                {"addresses": ["10.42.0.5"], "conditions": {"ready": false, "serving": true, "terminating": true}}
            ]
        }))
    }

    #[test]
    fn load_balancer_service_gets_all_three_listeners_and_ready_endpoints() {
        let (s, e) = (web(), web_slice());
        let d = desired(&[&s], &[&e], &config());
        let key = PortKey {
            namespace: "default".into(),
            service: "web".into(),
            port: "http".into(),
        };
        assert_eq!(
            d.routes[&key].endpoints,
            vec![
                "10.42.0.2:8080".parse().expect("addr"),
                "10.42.0.3:8080".parse().expect("addr")
            ]
        );
        assert_eq!(d.routes[&key].affinity, None);
        let addrs: Vec<String> = d.listeners.keys().map(|(_, a)| a.to_string()).collect();
        assert_eq!(addrs, vec!["0.0.0.0:30080", "10.43.0.5:80", "127.0.0.1:80"]);
        assert!(
            d.addresses
                .contains(&"10.43.0.5".parse::<IpAddr>().expect("ip"))
        );
        assert!(
            d.addresses
                .contains(&"10.43.0.10".parse::<IpAddr>().expect("ip"))
        );
        assert_eq!(d.load_balancers.len(), 1);
        assert!(d.load_balancers[0].conflicts.is_empty());
    }

    #[test]
    fn only_serving_terminating_endpoints_are_used_when_none_is_ready() {
        let s = web();
        let e = slice(json!({
            "metadata": {"name": "web-abc", "namespace": "default",
                         "labels": {"kubernetes.io/service-name": "web"}},
            "addressType": "IPv4",
            "ports": [{"name": "http", "port": 8080}],
            "endpoints": [
                {"addresses": ["10.42.0.4"], "conditions": {"ready": false}},
                {"addresses": ["10.42.0.5"], "conditions": {"ready": false, "serving": true, "terminating": true}}
            ]
        }));
        let d = desired(&[&s], &[&e], &config());
        let r = d.routes.values().next().expect("route");
        assert_eq!(r.endpoints, vec!["10.42.0.5:8080".parse().expect("addr")]);
    }

    #[test]
    fn slices_of_other_services_and_ports_are_ignored() {
        let s = web();
        let mut other = web_slice();
        other
            .metadata
            .labels
            .as_mut()
            .expect("labels")
            .insert(SERVICE_NAME_LABEL.into(), "db".into());
        let wrong_port = slice(json!({
            "metadata": {"name": "web-x", "namespace": "default",
                         "labels": {"kubernetes.io/service-name": "web"}},
            "addressType": "IPv4",
            "ports": [{"name": "metrics", "port": 9090}],
            "endpoints": [{"addresses": ["10.42.0.9"]}]
        }));
        let d = desired(&[&s], &[&other, &wrong_port], &config());
        assert!(d.routes.values().all(|r| r.endpoints.is_empty()));
    }

    #[test]
    fn second_load_balancer_on_a_port_is_a_conflict_and_the_older_wins() {
        let older = web();
        let mut newer = svc(json!({
            "metadata": {"name": "web2", "namespace": "default"},
            "spec": {"type": "LoadBalancer", "clusterIP": "10.43.0.6",
                     "ports": [{"port": 80, "nodePort": 30081}]}
        }));
        let mut older = older;
        older.metadata.creation_timestamp =
            Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
                "2024-01-01T00:00:00Z".parse().expect("ts"),
            ));
        newer.metadata.creation_timestamp =
            Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
                "2024-01-02T00:00:00Z".parse().expect("ts"),
            ));
        let d = desired(&[&newer, &older], &[], &config());
        let lb: SocketAddr = "127.0.0.1:80".parse().expect("addr");
        assert_eq!(d.listeners[&(Protocol::Tcp, lb)].route.service, "web");
        let web2 = d
            .load_balancers
            .iter()
            .find(|l| l.name == "web2")
            .expect("web2");
        assert_eq!(web2.conflicts.len(), 1);
        assert!(
            web2.conflicts[0].contains("default/web:http"),
            "{:?}",
            web2.conflicts
        );
    }

    #[test]
    fn tcp_and_udp_ports_on_one_number_are_two_listeners() {
        let s = svc(json!({
            "metadata": {"name": "dns", "namespace": "default"},
            "spec": {"clusterIP": "10.43.0.53", "ports": [
                {"name": "dns", "port": 53, "protocol": "UDP"},
                {"name": "dns-tcp", "port": 53, "protocol": "TCP"},
                {"name": "sctp", "port": 99, "protocol": "SCTP"}]}
        }));
        let e = slice(json!({
            "metadata": {"name": "dns-1", "namespace": "default",
                         "labels": {"kubernetes.io/service-name": "dns"}},
            "addressType": "IPv4",
            "ports": [{"name": "dns", "port": 5353, "protocol": "UDP"},
                      {"name": "dns-tcp", "port": 5354, "protocol": "TCP"}],
            "endpoints": [{"addresses": ["10.42.0.2"]}]
        }));
        let d = desired(&[&s], &[&e], &config());
        let addr: SocketAddr = "10.43.0.53:53".parse().expect("addr");
        assert_eq!(d.listeners.len(), 2);
        let udp = &d.listeners[&(Protocol::Udp, addr)].route;
        let tcp = &d.listeners[&(Protocol::Tcp, addr)].route;
        assert_eq!(
            d.routes[udp].endpoints,
            vec!["10.42.0.2:5353".parse().expect("addr")]
        );
        assert_eq!(
            d.routes[tcp].endpoints,
            vec!["10.42.0.2:5354".parse().expect("addr")]
        );
    }

    #[test]
    fn session_affinity_defaults_to_three_hours() {
        let mut s = web();
        let spec = s.spec.as_mut().expect("spec");
        spec.session_affinity = Some("ClientIP".into());
        let d = desired(&[&s], &[], &config());
        assert_eq!(
            d.routes.values().next().expect("route").affinity,
            Some(DEFAULT_AFFINITY_TIMEOUT)
        );
        let spec = s.spec.as_mut().expect("spec");
        spec.session_affinity_config =
            serde_json::from_value(json!({"clientIP": {"timeoutSeconds": 60}})).expect("config");
        let d = desired(&[&s], &[], &config());
        assert_eq!(
            d.routes.values().next().expect("route").affinity,
            Some(Duration::from_secs(60))
        );
    }

    #[test]
    fn headless_and_dns_service_are_not_proxied() {
        let headless = svc(json!({
            "metadata": {"name": "db", "namespace": "default"},
            "spec": {"clusterIP": "None", "clusterIPs": ["None"], "ports": [{"port": 5432}]}
        }));
        let dns = svc(json!({
            "metadata": {"name": "kube-dns", "namespace": "kube-system"},
            "spec": {"clusterIP": "10.43.0.10", "ports": [{"name": "dns-tcp", "port": 53}]}
        }));
        let d = desired(&[&headless, &dns], &[], &config());
        assert!(d.listeners.is_empty());
        assert!(d.routes.is_empty());
        assert_eq!(d.addresses.len(), 1);
    }

    #[test]
    fn slice_without_ports_uses_numeric_target_port() {
        let s = svc(json!({
            "metadata": {"name": "web", "namespace": "default"},
            "spec": {"clusterIP": "10.43.0.5", "ports": [{"port": 80, "targetPort": 8080}]}
        }));
        let e = slice(json!({
            "metadata": {"name": "web-abc", "namespace": "default",
                         "labels": {"kubernetes.io/service-name": "web"}},
            "addressType": "IPv4",
            "endpoints": [{"addresses": ["10.42.0.2"]}]
        }));
        let d = desired(&[&s], &[&e], &config());
        assert_eq!(
            d.routes.values().next().expect("route").endpoints,
            vec!["10.42.0.2:8080".parse().expect("addr")]
        );
    }
}
