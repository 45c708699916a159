//! The proxy's control loop: watches Services and EndpointSlices and converges addresses, listeners, DNS and LoadBalancer status.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::{Event, ObjectReference, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use kube::api::{Api, Patch, PatchParams, PostParams};
use kube::runtime::reflector::{self, Store};
use kube::runtime::{WatchStreamExt, watcher};
use serde_json::json;
use skiff_client::Client;
use tokio::sync::{Notify, watch};
use tokio::task::JoinHandle;

use crate::balancer::Balancer;
use crate::config::ProxyConfig;
use crate::config::ProxyMode;
use crate::dns::{DnsServer, DnsTable};
use crate::forward;
use crate::iptables::{self, Frontend, Rules, ServiceRules};
use crate::model::{self, Desired, Listen, ListenerKind, PortKey, Protocol};
use crate::netif::ServiceInterface;

/// How soon a failed listen or status write is tried again.
const RETRY: Duration = Duration::from_secs(2);
const COMPONENT: &str = "skiff-proxy";

#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    #[error("service interface: {0}")]
    Interface(#[from] crate::netif::NetError),
    #[error("cluster DNS on {addr}: {source}")]
    Dns {
        addr: SocketAddr,
        source: std::io::Error,
    },
}

/// What the proxy serves right now (for readiness checks, tests and debugging).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ProxyStatus {
    /// Completed syncs with the cluster's state; 0 until the first one.
    pub syncs: u64,
    /// Addresses on the service interface.
    pub addresses: BTreeSet<IpAddr>,
    /// Open TCP listeners and the Service port each forwards to (`ns/name:port`).
    pub listeners: BTreeMap<SocketAddr, String>,
    /// Open UDP sockets and the Service port each forwards to.
    pub udp_listeners: BTreeMap<SocketAddr, String>,
    /// Sockets (`TCP 127.0.0.1:80`) that could not be opened, and why (retried).
    pub failed: BTreeMap<String, String>,
    /// Where cluster DNS answers.
    pub dns: Option<SocketAddr>,
    /// Frontends served by kernel DNAT rules (iptables mode) and their Service port; a
    /// wildcard node port shows as `0.0.0.0:port`. Their listeners stay open (holding the
    /// port) but get no connection while the rules are in place.
    pub dnat: BTreeMap<SocketAddr, String>,
}

/// A running proxy. [`ProxyHandle::shutdown`] removes everything it added to the machine.
pub struct ProxyHandle {
    stop: watch::Sender<bool>,
    status: watch::Receiver<ProxyStatus>,
    engine: Option<JoinHandle<()>>,
    watches: Vec<JoinHandle<()>>,
}

impl ProxyHandle {
    pub fn status(&self) -> ProxyStatus {
        self.status.borrow().clone()
    }

    /// Waits until `check` holds for the status (or the proxy stops).
    pub async fn wait_for(&self, mut check: impl FnMut(&ProxyStatus) -> bool) -> ProxyStatus {
        let mut rx = self.status.clone();
        match rx.wait_for(|s| check(s)).await {
            Ok(s) => s.clone(),
            Err(_) => self.status(),
        }
    }

    /// Waits for the first complete sync with the cluster's Services and EndpointSlices.
    pub async fn synced(&self) -> ProxyStatus {
        self.wait_for(|s| s.syncs > 0).await
    }

    /// Stops listening, ends proxied connections, and removes the addresses (and the
    /// interface, if the proxy created it).
    pub async fn shutdown(mut self) {
        self.stop_watches();
        let _ = self.stop.send(true);
        if let Some(engine) = self.engine.take() {
            let _ = engine.await;
        }
    }

    fn stop_watches(&mut self) {
        for w in self.watches.drain(..) {
            w.abort();
        }
    }
}

impl Drop for ProxyHandle {
    fn drop(&mut self) {
        // Without an awaited shutdown the engine still cleans up on its own once told to stop,
        // as long as the runtime keeps running.
        self.stop_watches();
        let _ = self.stop.send(true);
    }
}

/// Starts the proxy: the service interface with the DNS address, the DNS server, and the
/// watches that drive everything else. Returns once DNS listens; [`ProxyHandle::synced`]
/// tells when the Services are served.
pub async fn run(client: Client, config: ProxyConfig) -> Result<ProxyHandle, ProxyError> {
    // Without an interface (no root) only node ports and load balancers are served.
    let mut iface = if config.service_interface.is_empty() {
        None
    } else {
        Some(ServiceInterface::ensure(&config.service_interface).await?)
    };
    let started = async {
        if let Some(iface) = &mut iface {
            if let Some(cidr) = config.service_cidr {
                iface.route(cidr).await?;
            }
            if needs_interface(config.dns_address) {
                iface.add(config.dns_address).await?;
            }
        }
        let (dns_tx, dns_rx) = watch::channel(Arc::new(DnsTable::new(&config.domain())));
        let dns_addr = SocketAddr::new(config.dns_address, config.dns_port);
        let dns = DnsServer::start(dns_addr, dns_rx, config.dns_upstream)
            .await
            .map_err(|source| ProxyError::Dns {
                addr: dns_addr,
                source,
            })?;
        Ok::<_, ProxyError>((dns_tx, dns, dns_addr))
    }
    .await;
    let (dns_tx, dns, dns_addr) = match started {
        Ok(x) => x,
        Err(e) => {
            if let Some(iface) = &iface
                && let Err(c) = iface.delete().await
            {
                tracing::warn!("cleaning up {}: {c}", iface.name());
            }
            return Err(e);
        }
    };
    let rules = if config.mode == ProxyMode::Iptables {
        let prefix = config.rules_prefix();
        match tokio::task::spawn_blocking(move || Rules::start(&prefix)).await {
            Ok(Ok(r)) => {
                tracing::info!("iptables mode: chains {}-*", r.prefix());
                Some(r)
            }
            Ok(Err(e)) => {
                tracing::warn!("iptables mode unavailable, using the userspace proxy: {e}");
                None
            }
            Err(e) => {
                tracing::warn!("iptables mode unavailable, using the userspace proxy: {e}");
                None
            }
        }
    } else {
        None
    };
    match &iface {
        Some(i) => tracing::info!(
            "cluster DNS on {dns_addr}, service addresses on {}",
            i.name()
        ),
        None => tracing::info!(
            "cluster DNS on {dns_addr}; no service interface: cluster IPs are not served"
        ),
    }

    if config.register_dns_service {
        register_dns_service(&client, &config).await;
    }

    let notify = Arc::new(Notify::new());
    let ready = Arc::new(AtomicBool::new(false));
    let (services, svc_task) = watch_into_store::<Service>(&client, notify.clone());
    let (slices, slice_task) = watch_into_store::<EndpointSlice>(&client, notify.clone());
    let ready_task = {
        let (services, slices, notify, ready) = (
            services.clone(),
            slices.clone(),
            notify.clone(),
            ready.clone(),
        );
        tokio::spawn(async move {
            if services.wait_until_ready().await.is_ok() && slices.wait_until_ready().await.is_ok()
            {
                ready.store(true, Ordering::SeqCst);
                notify.notify_one();
            }
        })
    };

    let (stop, stop_rx) = watch::channel(false);
    let (status_tx, status_rx) = watch::channel(ProxyStatus {
        dns: Some(dns_addr),
        ..ProxyStatus::default()
    });
    let engine = Engine {
        client,
        config,
        iface,
        dns,
        dns_tx,
        dns_addr,
        services,
        slices,
        balancers: HashMap::new(),
        rules,
        dnat: BTreeMap::new(),
        listeners: BTreeMap::new(),
        failed: BTreeMap::new(),
        warned: HashSet::new(),
        stop: stop_rx,
        status: status_tx,
        syncs: 0,
    };
    let engine = tokio::spawn(engine.run(notify, ready));
    Ok(ProxyHandle {
        stop,
        status: status_rx,
        engine: Some(engine),
        watches: vec![svc_task, slice_task, ready_task],
    })
}

/// Loopback and wildcard addresses are already the machine's; everything else goes on the
/// service interface.
fn needs_interface(ip: IpAddr) -> bool {
    !ip.is_loopback() && !ip.is_unspecified()
}

fn watch_into_store<K>(client: &Client, notify: Arc<Notify>) -> (Store<K>, JoinHandle<()>)
where
    K: kube::Resource<DynamicType = ()>
        + Clone
        + std::fmt::Debug
        + k8s_openapi::serde::de::DeserializeOwned
        + Send
        + Sync
        + 'static,
{
    let (store, writer) = reflector::store::<K>();
    let api: Api<K> = Api::all(client.clone());
    let stream = watcher(api, watcher::Config::default())
        .default_backoff()
        .reflect(writer);
    let task = tokio::spawn(async move {
        let mut stream = std::pin::pin!(stream);
        while let Some(ev) = stream.next().await {
            if let Err(e) = ev {
                tracing::warn!("watching {}: {e}", K::plural(&()));
                continue;
            }
            notify.notify_one();
        }
    });
    (store, task)
}

/// Creates `kube-system/kube-dns` with the DNS address as its cluster IP (as k3s does), which
/// reserves the address so the API server never gives it to another Service.
async fn register_dns_service(client: &Client, config: &ProxyConfig) {
    let api: Api<Service> = Api::namespaced(client.clone(), "kube-system");
    let svc: Result<Service, _> = serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"name": "kube-dns", "namespace": "kube-system",
                     "labels": {"k8s-app": "kube-dns", "kubernetes.io/name": "CoreDNS",
                                "kubernetes.io/cluster-service": "true"}},
        "spec": {"clusterIP": config.dns_address.to_string(),
                 "ports": [
                    {"name": "dns", "port": config.dns_port, "protocol": "UDP",
                     "targetPort": config.dns_port},
                    {"name": "dns-tcp", "port": config.dns_port, "protocol": "TCP",
                     "targetPort": config.dns_port}]}
    }));
    let Ok(svc) = svc else { return };
    match api.get_opt("kube-dns").await {
        Ok(Some(existing)) => {
            let ip = existing.spec.as_ref().and_then(|s| s.cluster_ip.clone());
            if ip.as_deref() != Some(config.dns_address.to_string().as_str()) {
                tracing::warn!(
                    "kube-system/kube-dns has cluster IP {ip:?}, not the DNS address {}",
                    config.dns_address
                );
            }
        }
        Ok(None) => {
            if let Err(e) = api.create(&PostParams::default(), &svc).await {
                tracing::warn!("creating kube-system/kube-dns: {e}");
            }
        }
        Err(e) => tracing::warn!("reading kube-system/kube-dns: {e}"),
    }
}

struct RunningListener {
    route: PortKey,
    kind: ListenerKind,
    task: JoinHandle<()>,
}

struct Engine {
    client: Client,
    config: ProxyConfig,
    iface: Option<ServiceInterface>,
    /// The kernel fast path (iptables mode); `None`: everything goes through the listeners.
    rules: Option<Rules>,
    /// What the rules serve, for the status.
    dnat: BTreeMap<SocketAddr, String>,
    dns: DnsServer,
    dns_tx: watch::Sender<Arc<DnsTable>>,
    dns_addr: SocketAddr,
    services: Store<Service>,
    slices: Store<EndpointSlice>,
    balancers: HashMap<PortKey, Arc<Balancer>>,
    listeners: BTreeMap<Listen, RunningListener>,
    failed: BTreeMap<Listen, (PortKey, String)>,
    /// Warning Events already emitted: (namespace, name, message).
    warned: HashSet<(String, String, String)>,
    stop: watch::Receiver<bool>,
    status: watch::Sender<ProxyStatus>,
    syncs: u64,
}

impl Engine {
    async fn run(mut self, notify: Arc<Notify>, ready: Arc<AtomicBool>) {
        let mut retry = false;
        loop {
            let mut stop = self.stop.clone();
            tokio::select! {
                _ = stop.wait_for(|s| *s) => break,
                _ = notify.notified() => {}
                _ = tokio::time::sleep(RETRY), if retry => {}
            }
            if !ready.load(Ordering::SeqCst) {
                continue;
            }
            retry = self.sync().await;
        }
        self.cleanup().await;
    }

    /// One pass: converges everything on the cluster's current state. Returns whether
    /// something failed and should be retried.
    async fn sync(&mut self) -> bool {
        let services = self.services.state();
        let slices = self.slices.state();
        let svc_refs: Vec<&Service> = services.iter().map(|s| s.as_ref()).collect();
        let slice_refs: Vec<&EndpointSlice> = slices.iter().map(|s| s.as_ref()).collect();
        let mut d = model::desired(&svc_refs, &slice_refs, &self.config);
        d.addresses.retain(|ip| needs_interface(*ip));
        let mut retry = false;

        // Addresses first: a listener can only bind once its address is local.
        let mut have = BTreeSet::new();
        if self.iface.is_some() {
            let (h, failed) = self.add_addresses(&d.addresses).await;
            have = h;
            retry |= failed;
        } else {
            d.addresses.clear();
            d.listeners
                .retain(|_, l| l.kind != model::ListenerKind::ClusterIp);
        }

        // Endpoints: new connections follow the EndpointSlices from now on.
        for (key, route) in &d.routes {
            match self.balancers.get(key) {
                Some(b) => b.update(route.endpoints.clone(), route.affinity),
                None => {
                    self.balancers.insert(
                        key.clone(),
                        Arc::new(Balancer::new(route.endpoints.clone(), route.affinity)),
                    );
                }
            }
        }
        self.balancers.retain(|k, _| d.routes.contains_key(k));

        retry |= self.converge_listeners(&d).await;
        retry |= self.converge_rules(&d).await;

        if let Some(iface) = &self.iface {
            let extra: Vec<IpAddr> = have.difference(&d.addresses).copied().collect();
            for ip in extra {
                match iface.remove(ip).await {
                    Ok(()) => {
                        have.remove(&ip);
                    }
                    Err(e) => tracing::warn!("removing {ip}: {e}"),
                }
            }
        }

        self.dns_tx
            .send_replace(Arc::new(std::mem::take(&mut d.dns)));
        retry |= self.converge_load_balancers(&d, &services).await;

        self.syncs += 1;
        let status = ProxyStatus {
            syncs: self.syncs,
            addresses: have,
            listeners: self.listening(Protocol::Tcp),
            udp_listeners: self.listening(Protocol::Udp),
            failed: self
                .failed
                .iter()
                .map(|((p, a), (_, why))| (format!("{p} {a}"), why.clone()))
                .collect(),
            dns: Some(self.dns_addr),
            dnat: self.dnat.clone(),
        };
        self.status.send_replace(status);
        retry
    }

    /// Installs DNAT rules for the TCP ports whose listeners we hold (so a port another
    /// program has is never taken from it), with the endpoints the balancers have. Ports with
    /// IPv6 endpoints stay on the userspace listeners. Returns whether to retry.
    async fn converge_rules(&mut self, d: &Desired) -> bool {
        let Some(mut rules) = self.rules.take() else {
            return false;
        };
        let mut fronts: BTreeMap<&PortKey, Vec<Frontend>> = BTreeMap::new();
        for ((proto, addr), l) in &self.listeners {
            if *proto != Protocol::Tcp || !addr.is_ipv4() {
                continue;
            }
            let f = if addr.ip().is_unspecified() && l.kind != ListenerKind::ClusterIp {
                Frontend::AnyLocal(addr.port())
            } else {
                Frontend::Addr(*addr)
            };
            fronts.entry(&l.route).or_default().push(f);
        }
        let specs: Vec<ServiceRules> = fronts
            .into_iter()
            .filter_map(|(key, frontends)| {
                let route = d.routes.get(key)?;
                if route.endpoints.iter().any(|e| !e.is_ipv4()) {
                    return None;
                }
                Some(ServiceRules {
                    name: key.to_string(),
                    frontends,
                    endpoints: route.endpoints.clone(),
                    affinity: route.affinity,
                })
            })
            .collect();
        let served: BTreeMap<SocketAddr, String> = specs
            .iter()
            .filter(|s| !s.endpoints.is_empty())
            .flat_map(|s| {
                s.frontends
                    .iter()
                    .map(|f| (iptables::frontend_addr(f), s.name.clone()))
            })
            .collect();
        let done = tokio::task::spawn_blocking(move || {
            let r = rules.sync(&specs);
            (rules, r)
        })
        .await;
        match done {
            Ok((rules, result)) => {
                self.rules = Some(rules);
                match result {
                    Ok(changed) => {
                        if changed {
                            tracing::debug!("iptables rules updated: {} frontends", served.len());
                        }
                        self.dnat = served;
                        false
                    }
                    Err(e) => {
                        tracing::warn!("applying iptables rules (retrying): {e}");
                        true
                    }
                }
            }
            Err(e) => {
                // The sync panicked: the rules are in an unknown state; the listeners serve.
                tracing::error!("iptables sync: {e}; falling back to the userspace proxy");
                self.dnat.clear();
                false
            }
        }
    }

    /// Puts `wanted` on the interface (recreating it if it was removed). Returns what is on
    /// it and whether something failed.
    async fn add_addresses(&mut self, wanted: &BTreeSet<IpAddr>) -> (BTreeSet<IpAddr>, bool) {
        let Some(iface) = &mut self.iface else {
            return (BTreeSet::new(), false);
        };
        let mut retry = false;
        let mut have = match iface.addresses().await {
            Ok(a) => a,
            Err(e) => {
                match iface.repair().await {
                    Ok(true) => tracing::warn!("{} had been removed: recreated it", iface.name()),
                    Ok(false) => {
                        tracing::warn!("{e}");
                        retry = true;
                    }
                    Err(e) => {
                        tracing::warn!("{e}");
                        retry = true;
                    }
                }
                BTreeSet::new()
            }
        };
        for ip in wanted.difference(&have.clone()) {
            match iface.add(*ip).await {
                Ok(()) => {
                    have.insert(*ip);
                }
                Err(e) => {
                    tracing::warn!("adding {ip}: {e}");
                    retry = true;
                }
            }
        }
        (have, retry)
    }

    fn listening(&self, protocol: Protocol) -> BTreeMap<SocketAddr, String> {
        self.listeners
            .iter()
            .filter(|((p, _), _)| *p == protocol)
            .map(|((_, a), l)| (*a, l.route.to_string()))
            .collect()
    }

    async fn converge_listeners(&mut self, d: &Desired) -> bool {
        // Stop what is no longer wanted (or now belongs to another Service port).
        let stale: Vec<Listen> = self
            .listeners
            .iter()
            .filter(|(a, l)| d.listeners.get(a).is_none_or(|s| s.route != l.route))
            .map(|(a, _)| *a)
            .collect();
        for a in stale {
            if let Some(l) = self.listeners.remove(&a) {
                l.task.abort();
                tracing::info!("stopped listening on {} {} for {}", a.0, a.1, l.route);
            }
        }
        let previous = std::mem::take(&mut self.failed);
        for (key, spec) in &d.listeners {
            if self.listeners.contains_key(key) {
                continue;
            }
            let Some(balancer) = self.balancers.get(&spec.route) else {
                continue;
            };
            let addr = &spec.addr;
            let bound = match spec.protocol {
                Protocol::Tcp => forward::bind_tcp(*addr, spec.kind)
                    .map(|l| forward::spawn(l, balancer.clone(), self.stop.clone())),
                Protocol::Udp => tokio::net::UdpSocket::bind(addr)
                    .await
                    .map(|s| forward::spawn_udp(s, balancer.clone(), self.stop.clone())),
            };
            match bound {
                Ok(task) => {
                    tracing::info!("{} {addr}/{} -> {}", spec.kind, spec.protocol, spec.route);
                    self.listeners.insert(
                        *key,
                        RunningListener {
                            route: spec.route.clone(),
                            kind: spec.kind,
                            task,
                        },
                    );
                }
                Err(e) => {
                    let p = spec.protocol;
                    let why = if e.kind() == std::io::ErrorKind::AddrInUse {
                        format!(
                            "{} port {addr}/{p} is already in use on the host",
                            spec.kind
                        )
                    } else {
                        format!("cannot listen on {} port {addr}/{p}: {e}", spec.kind)
                    };
                    // Retried every few seconds: say it once, not on every retry.
                    if previous.get(key).is_some_and(|(_, w)| *w == why) {
                        tracing::debug!("{}: {why}", spec.route);
                    } else {
                        tracing::warn!("{}: {why} (retrying)", spec.route);
                    }
                    self.failed.insert(*key, (spec.route.clone(), why));
                }
            }
        }
        !self.failed.is_empty()
    }

    async fn converge_load_balancers(&mut self, d: &Desired, services: &[Arc<Service>]) -> bool {
        let mut retry = false;
        let by_name: HashMap<(&str, &str), &Service> = services
            .iter()
            .filter_map(|s| {
                Some((
                    (
                        s.metadata.namespace.as_deref()?,
                        s.metadata.name.as_deref()?,
                    ),
                    s.as_ref(),
                ))
            })
            .collect();
        let ingress_ip = self.config.lb_ingress_ip().to_string();

        // Warnings for every Service with a port it cannot have.
        let mut problems: Vec<(String, String, String, &'static str)> = Vec::new();
        for lb in &d.load_balancers {
            for c in &lb.conflicts {
                problems.push((
                    lb.namespace.clone(),
                    lb.name.clone(),
                    c.clone(),
                    "PortInUse",
                ));
            }
        }
        for (route, why) in self.failed.values() {
            let reason = if why.contains("already in use") {
                "PortInUse"
            } else {
                "ListenFailed"
            };
            problems.push((
                route.namespace.clone(),
                route.service.clone(),
                why.clone(),
                reason,
            ));
        }
        let mut current = HashSet::new();
        for (ns, name, msg, reason) in problems {
            let key = (ns.clone(), name.clone(), msg.clone());
            current.insert(key.clone());
            if self.warned.contains(&key) {
                continue;
            }
            if let Some(svc) = by_name.get(&(ns.as_str(), name.as_str())) {
                match self.warn(svc, reason, &msg).await {
                    Ok(()) => {
                        self.warned.insert(key);
                    }
                    Err(e) => {
                        tracing::warn!("recording an Event for {ns}/{name}: {e}");
                        retry = true;
                    }
                }
            }
        }
        // A problem that went away may come back: warn again then.
        self.warned.retain(|k| current.contains(k));

        for lb in &d.load_balancers {
            let Some(svc) = by_name.get(&(lb.namespace.as_str(), lb.name.as_str())) else {
                continue;
            };
            let serving = !lb.listeners.is_empty()
                && lb.conflicts.is_empty()
                && lb.listeners.iter().all(|a| {
                    self.listeners.get(a).is_some_and(|l| {
                        l.route.namespace == lb.namespace && l.route.service == lb.name
                    })
                });
            let want: Vec<String> = if serving {
                vec![ingress_ip.clone()]
            } else {
                Vec::new()
            };
            retry |= !self.set_ingress(svc, &want).await;
        }
        for (ns, name) in &d.others {
            if let Some(svc) = by_name.get(&(ns.as_str(), name.as_str()))
                && ingress_ips(svc).contains(&ingress_ip)
            {
                retry |= !self.set_ingress(svc, &[]).await;
            }
        }
        retry
    }

    /// Writes `status.loadBalancer.ingress` when it differs. Returns false on failure.
    async fn set_ingress(&self, svc: &Service, want: &[String]) -> bool {
        if ingress_ips(svc) == want {
            return true;
        }
        let (Some(ns), Some(name)) = (&svc.metadata.namespace, &svc.metadata.name) else {
            return true;
        };
        let api: Api<Service> = Api::namespaced(self.client.clone(), ns);
        let ingress: Vec<_> = want
            .iter()
            .map(|ip| json!({"ip": ip, "ipMode": "VIP"}))
            .collect();
        // A merge patch replaces the list whole; null removes it.
        let ingress = if ingress.is_empty() {
            serde_json::Value::Null
        } else {
            json!(ingress)
        };
        let patch = json!({"status": {"loadBalancer": {"ingress": ingress}}});
        match api
            .patch_status(name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
        {
            Ok(_) => {
                tracing::info!("{ns}/{name}: load balancer ingress {want:?}");
                true
            }
            Err(kube::Error::Api(s)) if s.code == 404 => true,
            Err(e) => {
                tracing::warn!("updating {ns}/{name} status: {e}");
                false
            }
        }
    }

    async fn warn(&self, svc: &Service, reason: &str, message: &str) -> Result<(), kube::Error> {
        let ns = svc.metadata.namespace.clone().unwrap_or_default();
        let name = svc.metadata.name.clone().unwrap_or_default();
        let now = k8s_openapi::jiff::Timestamp::now();
        let event = Event {
            metadata: ObjectMeta {
                name: Some(format!("{name}.{:x}", now.as_nanosecond())),
                namespace: Some(ns.clone()),
                ..ObjectMeta::default()
            },
            involved_object: ObjectReference {
                api_version: Some("v1".into()),
                kind: Some("Service".into()),
                name: Some(name.clone()),
                namespace: Some(ns.clone()),
                uid: svc.metadata.uid.clone(),
                resource_version: svc.metadata.resource_version.clone(),
                ..ObjectReference::default()
            },
            reason: Some(reason.into()),
            message: Some(message.into()),
            type_: Some("Warning".into()),
            source: Some(k8s_openapi::api::core::v1::EventSource {
                component: Some(COMPONENT.into()),
                host: None,
            }),
            reporting_component: Some(COMPONENT.into()),
            reporting_instance: Some(COMPONENT.into()),
            first_timestamp: Some(Time(now)),
            last_timestamp: Some(Time(now)),
            count: Some(1),
            ..Event::default()
        };
        tracing::warn!("{ns}/{name}: {reason}: {message}");
        Api::<Event>::namespaced(self.client.clone(), &ns)
            .create(&PostParams::default(), &event)
            .await
            .map(drop)
    }

    async fn cleanup(mut self) {
        for (_, l) in std::mem::take(&mut self.listeners) {
            l.task.abort();
        }
        self.dns.abort();
        if let Some(mut rules) = self.rules.take() {
            match tokio::task::spawn_blocking(move || rules.cleanup()).await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => tracing::warn!("removing iptables rules: {e}"),
                Err(e) => tracing::warn!("removing iptables rules: {e}"),
            }
        }
        if let Some(iface) = &self.iface
            && let Err(e) = iface.delete().await
        {
            tracing::warn!("cleaning up {}: {e}", iface.name());
        }
        let mut status = self.status.borrow().clone();
        status.addresses.clear();
        status.listeners.clear();
        status.dnat.clear();
        status.dns = None;
        self.status.send_replace(status);
    }
}

fn ingress_ips(svc: &Service) -> Vec<String> {
    svc.status
        .as_ref()
        .and_then(|s| s.load_balancer.as_ref())
        .and_then(|lb| lb.ingress.as_ref())
        .map(|i| i.iter().filter_map(|x| x.ip.clone()).collect())
        .unwrap_or_default()
}
