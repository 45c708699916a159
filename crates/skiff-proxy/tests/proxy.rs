//! The proxy against the real API server: ClusterIP, NodePort and LoadBalancer forwarding, DNS, cleanup.
//!
//! Needs root (the service interface). Backends listen on 127.0.0.x; service addresses come
//! from a per-test /24 of 10.96.0.0/16 that the proxy routes to its own test interface, so
//! no packet ever leaves the machine.

use std::future::Future;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicU8, Ordering};
use std::time::Duration;

use k8s_openapi::api::core::v1::{Event, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::Client;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use serde_json::{Value, json};
use skiff_proxy::dns::{parse_answer, query_bytes};
use skiff_proxy::{ProxyConfig, ProxyHandle, ProxyMode};
use skiff_server::{Running, ServerConfig};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream, UdpSocket};

use hickory_proto::op::ResponseCode;
use hickory_proto::rr::RecordType;

/// Runs a test once per proxy mode: `<test>::iptables` and `<test>::userspace`.
macro_rules! in_both_modes {
    ($($name:ident),* $(,)?) => {$(
        mod $name {
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn iptables() {
                super::$name(skiff_proxy::ProxyMode::Iptables).await
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn userspace() {
                super::$name(skiff_proxy::ProxyMode::Userspace).await
            }
        }
    )*};
}

in_both_modes!(
    routes_cluster_ip_node_port_and_load_balancer,
    cluster_dns,
    load_balancer_port_conflicts_are_reported_and_retried,
    udp_service_ports,
    without_an_interface_load_balancers_and_dns_still_work,
    a_pod_resolves_the_service_by_name_and_calls_its_cluster_ip,
    a_pod_endpoint_from_loopback_and_from_itself,
);

const TIMEOUT: Duration = Duration::from_secs(30);
static NEXT: AtomicU8 = AtomicU8::new(0);

fn is_root() -> bool {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata("/proc/self").is_ok_and(|m| m.uid() == 0)
}

/// Removes the test's interface even when the test fails before the proxy's shutdown.
struct InterfaceGuard(String);

impl Drop for InterfaceGuard {
    fn drop(&mut self) {
        let _ = std::process::Command::new("ip")
            .args(["link", "del", "dev", &self.0])
            .stderr(std::process::Stdio::null())
            .status();
    }
}

fn link_exists(name: &str) -> bool {
    std::process::Command::new("ip")
        .args(["link", "show", "dev", name])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

struct Env {
    _dir: tempfile::TempDir,
    running: Option<Running>,
    client: Client,
    proxy: Option<ProxyHandle>,
    config: ProxyConfig,
    /// The `kubernetes` Service's address (the first of the test's service range).
    kubernetes_ip: Ipv4Addr,
    _guard: InterfaceGuard,
    _subnet_lock: std::fs::File,
}

/// The first /24 index in 1..=250 that no other test process holds (an exclusive `flock`
/// on `/tmp/skiff-proxy-tests/<n>.lock`; the kernel drops it when the process exits).
fn reserve_subnet() -> (u8, std::fs::File) {
    let dir = std::env::temp_dir().join("skiff-proxy-tests");
    std::fs::create_dir_all(&dir).expect("lock dir");
    let start = (std::process::id() % 250) as u8;
    for i in 0..250u8 {
        let subnet = (start.wrapping_add(i) % 250) + 1;
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(dir.join(format!("{subnet}.lock")))
            .expect("lock file");
        if file.try_lock().is_ok() {
            return (subnet, file);
        }
    }
    panic!("all 250 test subnets are taken");
}

/// A port free for both TCP and UDP on 127.0.0.1 (the DNS server binds both).
fn free_dual_port() -> u16 {
    loop {
        let u = std::net::UdpSocket::bind("127.0.0.1:0").expect("udp");
        let port = u.local_addr().expect("addr").port();
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
}

impl Env {
    async fn start(mode: ProxyMode) -> Option<Env> {
        if !is_root() {
            eprintln!("skipped: the proxy's service interface needs root");
            return None;
        }
        Env::start_with(true, mode).await
    }

    /// `interface: false` is the no-root mode: loopback only, no service interface.
    /// `None` (the test is skipped) when `mode` cannot run here.
    async fn start_with(interface: bool, mode: ProxyMode) -> Option<Env> {
        if mode == ProxyMode::Iptables && !skiff_proxy::iptables::available() {
            eprintln!("skipped: iptables mode needs root and iptables-restore");
            return None;
        }
        // A /24 and an interface of our own per test (and per concurrent test process):
        // the subnet is reserved machine-wide with a lock file, held until the process ends.
        let n = NEXT.fetch_add(1, Ordering::SeqCst);
        let pid = std::process::id();
        let (subnet, subnet_lock) = reserve_subnet();
        let iface = format!("skp{}t{n}", pid % 100_000);
        let guard = InterfaceGuard(iface.clone());
        let dir = tempfile::tempdir().expect("tempdir");
        let cidr = (Ipv4Addr::new(10, 96, subnet, 0), 24);
        let running = skiff_server::start(ServerConfig {
            port: 0,
            controllers: false,
            service_cidr: cidr,
            ..ServerConfig::new(dir.path().to_path_buf())
        })
        .await
        .expect("server starts");
        let client = running.client.clone();
        let config = if interface {
            ProxyConfig {
                lb_address: IpAddr::V4(Ipv4Addr::LOCALHOST),
                node_address: IpAddr::V4(Ipv4Addr::LOCALHOST),
                service_interface: iface,
                dns_address: IpAddr::V4(Ipv4Addr::new(10, 96, subnet, 10)),
                service_cidr: Some(cidr),
                mode,
                ..ProxyConfig::default()
            }
        } else {
            ProxyConfig {
                lb_address: IpAddr::V4(Ipv4Addr::LOCALHOST),
                node_address: IpAddr::V4(Ipv4Addr::LOCALHOST),
                service_interface: String::new(),
                dns_address: IpAddr::V4(Ipv4Addr::LOCALHOST),
                dns_port: free_dual_port(),
                register_dns_service: false,
                mode,
                ..ProxyConfig::default()
            }
        };
        let proxy = skiff_proxy::run(client.clone(), config.clone())
            .await
            .expect("proxy starts");
        tokio::time::timeout(TIMEOUT, proxy.synced())
            .await
            .expect("proxy syncs");
        Some(Env {
            _dir: dir,
            running: Some(running),
            client,
            proxy: Some(proxy),
            config,
            kubernetes_ip: Ipv4Addr::new(10, 96, subnet, 1),
            _guard: guard,
            _subnet_lock: subnet_lock,
        })
    }

    fn proxy(&self) -> &ProxyHandle {
        self.proxy.as_ref().expect("proxy running")
    }

    fn services(&self) -> Api<Service> {
        Api::namespaced(self.client.clone(), "default")
    }

    fn slices(&self) -> Api<EndpointSlice> {
        Api::namespaced(self.client.clone(), "default")
    }

    async fn create_service(&self, v: Value) -> Service {
        let svc: Service = serde_json::from_value(v).expect("service");
        self.services()
            .create(&PostParams::default(), &svc)
            .await
            .expect("create service")
    }

    /// Creates or replaces the EndpointSlice `name` of Service `svc`.
    async fn put_slice(&self, name: &str, svc: &str, port: u16, endpoints: Value) {
        let slice: EndpointSlice = serde_json::from_value(json!({
            "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
            "metadata": {"name": name, "labels": {
                "kubernetes.io/service-name": svc,
                "endpointslice.kubernetes.io/managed-by": "skiff-proxy-test"}},
            "addressType": "IPv4",
            "ports": [{"name": "http", "port": port, "protocol": "TCP"}],
            "endpoints": endpoints,
        }))
        .expect("slice");
        let api = self.slices();
        match api.get_opt(name).await.expect("get slice") {
            None => {
                api.create(&PostParams::default(), &slice)
                    .await
                    .expect("create slice");
            }
            Some(old) => {
                let mut slice = slice;
                slice.metadata.resource_version = old.metadata.resource_version;
                api.replace(name, &PostParams::default(), &slice)
                    .await
                    .expect("replace slice");
            }
        }
    }

    /// Waits until the proxy listens on `addr` (which also proves the address is local).
    async fn listening(&self, addr: SocketAddr) {
        let wait = self.proxy().wait_for(|s| s.listeners.contains_key(&addr));
        tokio::time::timeout(TIMEOUT, wait)
            .await
            .unwrap_or_else(|_| panic!("no listener on {addr}: {:#?}", self.proxy().status()));
    }

    async fn stop(mut self) {
        if let Some(p) = self.proxy.take() {
            p.shutdown().await;
        }
        if let Some(r) = self.running.take() {
            r.shutdown().await;
        }
    }
}

/// Polls `f` until it returns a value (no fixed sleeps: a short poll with a deadline).
async fn eventually<T, F, Fut>(what: &str, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + TIMEOUT;
    loop {
        if let Some(v) = f().await {
            return v;
        }
        if tokio::time::Instant::now() > deadline {
            panic!("timed out waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// TCP servers on several 127.0.0.x addresses, all on one port (an EndpointSlice's endpoints
/// share its ports). Each greets with its address, then echoes.
struct Backends {
    port: u16,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Drop for Backends {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

impl Backends {
    async fn start(ips: &[&str]) -> Backends {
        for _ in 0..50 {
            let first = TcpListener::bind((ips[0], 0)).await.expect("bind backend");
            let port = first.local_addr().expect("addr").port();
            let mut listeners = vec![first];
            for ip in &ips[1..] {
                match TcpListener::bind((*ip, port)).await {
                    Ok(l) => listeners.push(l),
                    Err(_) => break,
                }
            }
            if listeners.len() < ips.len() {
                continue;
            }
            let tasks = listeners
                .into_iter()
                .zip(ips)
                .map(|(l, ip)| tokio::spawn(serve_backend(l, ip.to_string())))
                .collect();
            return Backends { port, tasks };
        }
        panic!("no common free port on {ips:?}");
    }
}

async fn serve_backend(l: TcpListener, id: String) {
    loop {
        let Ok((mut s, _)) = l.accept().await else {
            continue;
        };
        let id = id.clone();
        tokio::spawn(async move {
            if s.write_all(format!("{id}\n").as_bytes()).await.is_err() {
                return;
            }
            let mut buf = [0u8; 1024];
            while let Ok(n) = s.read(&mut buf).await {
                if n == 0 || s.write_all(&buf[..n]).await.is_err() {
                    return;
                }
            }
        });
    }
}

/// Connects through the proxy and returns the greeting backend's address, or `None` when
/// the proxy closed the connection.
async fn hello(addr: SocketAddr) -> Option<String> {
    let s = tokio::time::timeout(Duration::from_secs(3), TcpStream::connect(addr))
        .await
        .ok()?
        .ok()?;
    let mut r = BufReader::new(s);
    let mut line = String::new();
    match tokio::time::timeout(Duration::from_secs(3), r.read_line(&mut line)).await {
        Ok(Ok(n)) if n > 0 => Some(line.trim().to_string()),
        _ => None,
    }
}

async fn hellos(addr: SocketAddr, n: usize) -> Vec<Option<String>> {
    let mut out = Vec::new();
    for _ in 0..n {
        out.push(hello(addr).await);
    }
    out
}

/// Everything in the nat and filter tables, with packet counters.
fn iptables_save() -> String {
    let mut out = String::new();
    for table in ["nat", "filter"] {
        if let Ok(o) = std::process::Command::new("iptables-save")
            .args(["-c", "-t", table])
            .output()
        {
            out.push_str(&String::from_utf8_lossy(&o.stdout));
        }
    }
    out
}

/// The lines of the proxy with chain prefix `prefix`.
fn rules_of(prefix: &str) -> Vec<String> {
    let mine = format!("{prefix}-");
    iptables_save()
        .lines()
        .filter(|l| l.contains(&mine))
        .map(str::to_string)
        .collect()
}

/// Connections DNATed by the proxy's rules so far (first packets: the nat table sees no more).
fn dnat_packets(prefix: &str) -> u64 {
    rules_of(prefix)
        .iter()
        .filter(|l| l.contains("-j DNAT"))
        .filter_map(|l| l.strip_prefix('[')?.split(':').next()?.parse::<u64>().ok())
        .sum()
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

fn ready(ip: &str, ready: bool) -> Value {
    json!({"addresses": [ip], "conditions": {"ready": ready}})
}

fn cluster_ip(svc: &Service) -> IpAddr {
    svc.spec
        .as_ref()
        .and_then(|s| s.cluster_ip.as_deref())
        .and_then(|s| s.parse().ok())
        .expect("cluster IP")
}

fn node_port(svc: &Service) -> u16 {
    svc.spec
        .as_ref()
        .and_then(|s| s.ports.as_ref())
        .and_then(|p| p.first())
        .and_then(|p| p.node_port)
        .and_then(|p| u16::try_from(p).ok())
        .expect("node port")
}

fn ingress(svc: &Service) -> Vec<String> {
    svc.status
        .as_ref()
        .and_then(|s| s.load_balancer.as_ref())
        .and_then(|l| l.ingress.as_ref())
        .map(|i| i.iter().filter_map(|x| x.ip.clone()).collect())
        .unwrap_or_default()
}

fn lb_service(name: &str, port: u16) -> Value {
    json!({
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"name": name},
        "spec": {"type": "LoadBalancer",
                 "ports": [{"name": "http", "port": port, "targetPort": "http", "protocol": "TCP"}]}
    })
}

async fn routes_cluster_ip_node_port_and_load_balancer(mode: ProxyMode) {
    let Some(env) = Env::start(mode).await else {
        return;
    };
    let backends = Backends::start(&["127.0.0.2", "127.0.0.3"]).await;
    let lb_port = free_port();
    let svc = env.create_service(lb_service("web", lb_port)).await;
    env.put_slice(
        "web-1",
        "web",
        backends.port,
        json!([ready("127.0.0.2", true), ready("127.0.0.3", true)]),
    )
    .await;
    let cip = SocketAddr::new(cluster_ip(&svc), lb_port);
    let np = SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), node_port(&svc));
    let lb = SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), lb_port);
    for a in [cip, np, lb] {
        env.listening(a).await;
    }
    assert!(env.proxy().status().addresses.contains(&cip.ip()));

    // Every address balances over both endpoints (once the proxy has seen the slice).
    eventually("endpoints", || async { hello(cip).await }).await;
    let prefix = env.config.rules_prefix();
    if mode == ProxyMode::Iptables {
        let wait = env
            .proxy()
            .wait_for(|s| [cip, np, lb].iter().all(|a| s.dnat.contains_key(a)));
        tokio::time::timeout(TIMEOUT, wait)
            .await
            .unwrap_or_else(|_| panic!("no DNAT rules: {:#?}", env.proxy().status()));
    }
    let before = dnat_packets(&prefix);
    for a in [cip, np, lb] {
        if mode == ProxyMode::Userspace {
            let got = hellos(a, 6).await;
            assert!(got.iter().all(Option::is_some), "{a}: {got:?}");
            for ep in ["127.0.0.2", "127.0.0.3"] {
                assert_eq!(
                    got.iter().filter(|h| h.as_deref() == Some(ep)).count(),
                    3,
                    "round-robin through {a}: {got:?}"
                );
            }
        } else {
            // Random with probability 1/2 each: both within 24 connections (p > 1 - 1e-7).
            let got = hellos(a, 24).await;
            assert!(got.iter().all(Option::is_some), "{a}: {got:?}");
            for ep in ["127.0.0.2", "127.0.0.3"] {
                assert!(
                    got.iter().any(|h| h.as_deref() == Some(ep)),
                    "random balancing through {a}: {got:?}"
                );
            }
        }
    }
    if mode == ProxyMode::Iptables {
        // The kernel carried them, not the listeners.
        let after = dnat_packets(&prefix);
        assert!(after >= before + 72, "DNAT counters {before} -> {after}");
    } else {
        assert_eq!(dnat_packets(&prefix), 0);
    }

    // The ServiceLB status says where the service is.
    let services = env.services();
    eventually("status.loadBalancer.ingress", || {
        let services = services.clone();
        async move {
            let s = services.get("web").await.ok()?;
            (ingress(&s) == vec!["127.0.0.1".to_string()]).then_some(())
        }
    })
    .await;

    // kubectl shows where the LoadBalancer is, as with k3s.
    let kubeconfig = env.running.as_ref().expect("server").kubeconfig.clone();
    let out = tokio::task::spawn_blocking(move || {
        std::process::Command::new("kubectl")
            .arg("--kubeconfig")
            .arg(&kubeconfig)
            .args(["get", "service", "web", "--no-headers"])
            .output()
    })
    .await
    .expect("task");
    match out {
        Ok(out) => {
            let text = String::from_utf8_lossy(&out.stdout);
            let cols: Vec<&str> = text.split_whitespace().collect();
            // NAME TYPE CLUSTER-IP EXTERNAL-IP PORT(S) AGE
            assert_eq!(
                cols.get(..4),
                Some(&["web", "LoadBalancer", &cip.ip().to_string(), "127.0.0.1"][..]),
                "{text}{}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Err(e) => eprintln!("kubectl not run ({e}): EXTERNAL-IP column not checked"),
    }

    // A connection through the proxy really carries data both ways.
    let mut held = TcpStream::connect(cip).await.expect("connect");
    let mut greeting = [0u8; 10];
    held.read_exact(&mut greeting).await.expect("greeting");
    let held_ep = String::from_utf8_lossy(&greeting).trim().to_string();

    // A not-ready endpoint gets no new connection.
    env.put_slice(
        "web-1",
        "web",
        backends.port,
        json!([ready("127.0.0.2", true), ready("127.0.0.3", false)]),
    )
    .await;
    // Four hellos that all reach 127.0.0.2 can happen by chance before the rules change
    // (1 in 16), so the wait ends only when every frontend has shown the change.
    eventually("only 127.0.0.2", || async {
        let mut seen = hellos(cip, 10).await;
        seen.extend(hellos(lb, 10).await);
        seen.iter()
            .all(|h| h.as_deref() == Some("127.0.0.2"))
            .then_some(())
    })
    .await;
    let after = hellos(lb, 10).await;
    assert!(
        after.iter().all(|h| h.as_deref() == Some("127.0.0.2")),
        "{after:?}"
    );

    // An endpoint that leaves gets no new connection; one already open goes on.
    env.put_slice(
        "web-1",
        "web",
        backends.port,
        json!([ready("127.0.0.3", true)]),
    )
    .await;
    eventually("only 127.0.0.3", || async {
        let mut seen = hellos(cip, 10).await;
        seen.extend(hellos(np, 10).await);
        seen.iter()
            .all(|h| h.as_deref() == Some("127.0.0.3"))
            .then_some(())
    })
    .await;
    let after = hellos(np, 10).await;
    assert!(
        after.iter().all(|h| h.as_deref() == Some("127.0.0.3")),
        "{after:?}"
    );
    held.write_all(b"still here").await.expect("write");
    let mut echo = [0u8; 10];
    held.read_exact(&mut echo).await.expect("echo");
    assert_eq!(&echo, b"still here", "connection to {held_ep} was kept");

    // No endpoint at all: connections are refused at once (REJECT in iptables mode).
    env.put_slice("web-1", "web", backends.port, json!([]))
        .await;
    if mode == ProxyMode::Iptables {
        eventually("REJECT rules", || async {
            rules_of(&prefix)
                .iter()
                .any(|l| l.contains(&format!("-d {}/32", cip.ip())) && l.contains("REJECT"))
                .then_some(())
        })
        .await;
    }
    eventually("connections refused", || async {
        hello(cip).await.is_none().then_some(())
    })
    .await;
    let t = std::time::Instant::now();
    assert_eq!(hello(lb).await, None);
    assert!(
        t.elapsed() < Duration::from_secs(1),
        "refusal took {:?}",
        t.elapsed()
    );

    // ClientIP affinity keeps a client on one endpoint.
    env.put_slice(
        "web-1",
        "web",
        backends.port,
        json!([ready("127.0.0.2", true), ready("127.0.0.3", true)]),
    )
    .await;
    services
        .patch(
            "web",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"sessionAffinity": "ClientIP"}})),
        )
        .await
        .expect("patch affinity");
    // Once both endpoints are back, every connection goes to the same one.
    eventually("affinity", || async {
        let got = hellos(cip, 10).await;
        (got[0].is_some() && got.iter().all(|h| *h == got[0])).then_some(())
    })
    .await;
    let sticky = hellos(lb, 10).await;
    assert!(
        sticky[0].is_some() && sticky.iter().all(|h| *h == sticky[0]),
        "{sticky:?}"
    );

    // Shutdown removes the listeners, the addresses and the interface it created.
    let iface = env.config.service_interface.clone();
    assert!(link_exists(&iface));
    let mut env = env;
    if let Some(p) = env.proxy.take() {
        p.shutdown().await;
    }
    assert!(!link_exists(&iface), "interface {iface} left behind");
    assert_eq!(
        rules_of(&prefix),
        Vec::<String>::new(),
        "iptables rules left"
    );
    assert!(!skiff_proxy::netif::is_local_address(cip.ip()).await);
    assert!(TcpStream::connect(lb).await.is_err(), "LB port still open");
    assert!(
        TcpStream::connect(np).await.is_err(),
        "node port still open"
    );
    drop(held);
    env.stop().await;
}

/// Resolves `name` the way a pod's libc does with our resolv.conf: names with fewer than
/// `ndots` dots try the search path first.
async fn resolve(
    env: &Env,
    name: &str,
    rtype: RecordType,
    tcp: bool,
) -> (ResponseCode, Vec<String>) {
    let conf = skiff_proxy::resolv_conf("default", &env.config);
    let search: Vec<&str> = conf
        .lines()
        .find_map(|l| l.strip_prefix("search "))
        .map(|s| s.split_whitespace().collect())
        .unwrap_or_default();
    let mut candidates: Vec<String> = search.iter().map(|d| format!("{name}.{d}")).collect();
    candidates.push(name.to_string());
    let server = SocketAddr::new(env.config.dns_address, env.config.dns_port);
    let mut last = (ResponseCode::ServFail, vec![]);
    for c in candidates {
        last = query(server, &c, rtype, tcp).await;
        if last.0 == ResponseCode::NoError {
            return last;
        }
    }
    last
}

async fn query(
    server: SocketAddr,
    name: &str,
    rtype: RecordType,
    tcp: bool,
) -> (ResponseCode, Vec<String>) {
    let q = query_bytes(0x4242, name, rtype).expect("query");
    let answer = if tcp {
        let mut s = TcpStream::connect(server).await.expect("connect DNS");
        let mut msg = (q.len() as u16).to_be_bytes().to_vec();
        msg.extend_from_slice(&q);
        s.write_all(&msg).await.expect("send");
        let mut len = [0u8; 2];
        s.read_exact(&mut len).await.expect("length");
        let mut buf = vec![0u8; u16::from_be_bytes(len) as usize];
        s.read_exact(&mut buf).await.expect("answer");
        buf
    } else {
        let s = UdpSocket::bind("0.0.0.0:0").await.expect("udp");
        s.send_to(&q, server).await.expect("send");
        let mut buf = vec![0u8; 4096];
        let (n, _) = tokio::time::timeout(Duration::from_secs(3), s.recv_from(&mut buf))
            .await
            .expect("DNS answers in time")
            .expect("recv");
        buf.truncate(n);
        buf
    };
    let (code, mut data) = parse_answer(&answer).expect("parse answer");
    data.sort();
    (code, data)
}

async fn cluster_dns(mode: ProxyMode) {
    let Some(env) = Env::start(mode).await else {
        return;
    };
    let dns = SocketAddr::new(env.config.dns_address, env.config.dns_port);
    assert!(env.proxy().status().addresses.contains(&dns.ip()));
    assert_eq!(env.proxy().status().dns, Some(dns));
    // kube-dns holds the DNS address, as in k3s.
    let kube_dns = Api::<Service>::namespaced(env.client.clone(), "kube-system")
        .get("kube-dns")
        .await
        .expect("kube-dns service");
    assert_eq!(cluster_ip(&kube_dns), env.config.dns_address);

    let web = env
        .create_service(json!({
            "apiVersion": "v1", "kind": "Service",
            "metadata": {"name": "ml-api-service"},
            "spec": {"ports": [{"name": "http", "port": 80, "targetPort": 8080}]}
        }))
        .await;
    let web_ip = cluster_ip(&web).to_string();
    env.create_service(json!({
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"name": "db"},
        "spec": {"clusterIP": "None", "ports": [{"name": "http", "port": 5432}]}
    }))
    .await;
    env.put_slice(
        "db-1",
        "db",
        5432,
        json!([
            {"addresses": ["127.0.0.4"], "hostname": "db-0", "conditions": {"ready": true}},
            {"addresses": ["127.0.0.5"]},
            {"addresses": ["127.0.0.6"], "conditions": {"ready": false}}
        ]),
    )
    .await;

    let full = "ml-api-service.default.svc.cluster.local";
    let want = (ResponseCode::NoError, vec![web_ip.clone()]);
    eventually("the Service's DNS name", || async {
        (query(dns, full, RecordType::A, false).await == want).then_some(())
    })
    .await;
    // Short names through the pod's search path, over UDP and TCP.
    for name in [
        "ml-api-service",
        "ml-api-service.default",
        "ml-api-service.default.svc",
        full,
    ] {
        assert_eq!(
            resolve(&env, name, RecordType::A, false).await,
            want,
            "{name}"
        );
        assert_eq!(
            resolve(&env, name, RecordType::A, true).await,
            want,
            "{name} over TCP"
        );
    }
    let reverse = skiff_proxy::dns::reverse_name(cluster_ip(&web));
    assert_eq!(
        query(dns, &reverse, RecordType::PTR, false).await,
        (ResponseCode::NoError, vec![format!("{full}.")])
    );
    assert_eq!(
        query(dns, full, RecordType::AAAA, false).await,
        (ResponseCode::NoError, vec![])
    );
    assert_eq!(
        query(dns, &format!("_http._tcp.{full}"), RecordType::SRV, false).await,
        (ResponseCode::NoError, vec![format!("80 {full}.")])
    );
    assert_eq!(
        query(
            dns,
            "kubernetes.default.svc.cluster.local",
            RecordType::A,
            false
        )
        .await
        .1,
        vec![env.kubernetes_ip.to_string()]
    );

    // Headless: the ready endpoints, and the named one by its hostname.
    eventually("headless records", || async {
        (query(dns, "db.default.svc.cluster.local", RecordType::A, false).await
            == (
                ResponseCode::NoError,
                vec!["127.0.0.4".to_string(), "127.0.0.5".to_string()],
            ))
            .then_some(())
    })
    .await;
    assert_eq!(
        resolve(&env, "db-0.db", RecordType::A, false).await,
        (ResponseCode::NoError, vec!["127.0.0.4".to_string()])
    );

    // Unknown names in the cluster domain do not exist; other names are not ours.
    assert_eq!(
        query(dns, "nope.default.svc.cluster.local", RecordType::A, false)
            .await
            .0,
        ResponseCode::NXDomain
    );
    assert_eq!(
        resolve(&env, "nope", RecordType::A, true).await.0,
        ResponseCode::Refused
    );
    assert_eq!(
        query(dns, "example.com", RecordType::A, false).await.0,
        ResponseCode::Refused
    );

    // A deleted Service's name goes away.
    env.services()
        .delete("ml-api-service", &DeleteParams::default())
        .await
        .expect("delete");
    eventually("NXDOMAIN after delete", || async {
        (query(dns, full, RecordType::A, false).await.0 == ResponseCode::NXDomain).then_some(())
    })
    .await;
    // ... and so do its address and listener.
    let web_listener = SocketAddr::new(cluster_ip(&web), 80);
    let wait = env.proxy().wait_for(|s| {
        !s.addresses.contains(&web_listener.ip()) && !s.listeners.contains_key(&web_listener)
    });
    tokio::time::timeout(TIMEOUT, wait)
        .await
        .expect("address and listener removed");
    assert!(!skiff_proxy::netif::is_local_address(web_listener.ip()).await);

    // Someone deletes the interface: the next sync puts it back, DNS answers again.
    let iface = env.config.service_interface.clone();
    let deleted = std::process::Command::new("ip")
        .args(["link", "del", "dev", &iface])
        .status()
        .expect("ip");
    assert!(deleted.success());
    let again = env
        .create_service(json!({
            "apiVersion": "v1", "kind": "Service",
            "metadata": {"name": "again"},
            "spec": {"ports": [{"port": 80}]}
        }))
        .await;
    let again_ip = cluster_ip(&again);
    let wait = env
        .proxy()
        .wait_for(|s| s.addresses.contains(&again_ip) && s.addresses.contains(&dns.ip()));
    tokio::time::timeout(TIMEOUT, wait)
        .await
        .expect("addresses back");
    assert!(link_exists(&iface));
    assert_eq!(
        query(dns, "again.default.svc.cluster.local", RecordType::A, false).await,
        (ResponseCode::NoError, vec![again_ip.to_string()])
    );
    env.stop().await;
}

async fn warnings(client: &Client, service: &str) -> Vec<String> {
    Api::<Event>::namespaced(client.clone(), "default")
        .list(&Default::default())
        .await
        .expect("events")
        .items
        .into_iter()
        .filter(|e| {
            e.involved_object.name.as_deref() == Some(service)
                && e.type_.as_deref() == Some("Warning")
        })
        .map(|e| {
            format!(
                "{}: {}",
                e.reason.unwrap_or_default(),
                e.message.unwrap_or_default()
            )
        })
        .collect()
}

async fn load_balancer_port_conflicts_are_reported_and_retried(mode: ProxyMode) {
    let Some(env) = Env::start(mode).await else {
        return;
    };
    let backends = Backends::start(&["127.0.0.7"]).await;
    let services = env.services();
    let get_ingress = |name: &'static str| {
        let services = services.clone();
        async move { services.get(name).await.ok().map(|s| ingress(&s)) }
    };

    // A port another program holds: a Warning, no ingress, and the port once it is free.
    let squatter = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let busy_port = squatter.local_addr().expect("addr").port();
    env.create_service(lb_service("busy", busy_port)).await;
    env.put_slice(
        "busy-1",
        "busy",
        backends.port,
        json!([ready("127.0.0.7", true)]),
    )
    .await;
    let w = eventually("a PortInUse warning", || async {
        let w = warnings(&env.client, "busy").await;
        (!w.is_empty()).then_some(w)
    })
    .await;
    assert!(w[0].starts_with("PortInUse"), "{w:?}");
    assert_eq!(get_ingress("busy").await, Some(vec![]));
    drop(squatter);
    eventually("busy gets its port", || async {
        (get_ingress("busy").await == Some(vec!["127.0.0.1".into()])).then_some(())
    })
    .await;
    let lb = SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), busy_port);
    assert_eq!(hello(lb).await.as_deref(), Some("127.0.0.7"));

    // Two LoadBalancers on one port: the older has it, the newer waits with a Warning.
    let shared = free_port();
    env.create_service(lb_service("first", shared)).await;
    eventually("first gets the port", || async {
        (get_ingress("first").await == Some(vec!["127.0.0.1".into()])).then_some(())
    })
    .await;
    env.create_service(lb_service("second", shared)).await;
    let w = eventually("a conflict warning", || async {
        let w = warnings(&env.client, "second").await;
        (!w.is_empty()).then_some(w)
    })
    .await;
    assert!(w[0].contains("default/first"), "{w:?}");
    assert_eq!(get_ingress("second").await, Some(vec![]));
    // Warned once, not on every sync.
    let syncs = env.proxy().status().syncs;
    env.put_slice(
        "busy-1",
        "busy",
        backends.port,
        json!([ready("127.0.0.7", true), ready("127.0.0.8", false)]),
    )
    .await;
    tokio::time::timeout(TIMEOUT, env.proxy().wait_for(|s| s.syncs > syncs))
        .await
        .expect("a sync");
    assert_eq!(warnings(&env.client, "second").await.len(), 1);

    services
        .delete("first", &DeleteParams::default())
        .await
        .expect("delete first");
    eventually("second takes over", || async {
        (get_ingress("second").await == Some(vec!["127.0.0.1".into()])).then_some(())
    })
    .await;
    env.stop().await;
}

/// UDP servers on several 127.0.0.x addresses, one port: each answers `<its address> <payload>`.
async fn udp_backends(ips: &[&str]) -> (u16, Vec<tokio::task::JoinHandle<()>>) {
    'retry: for _ in 0..50 {
        let first = UdpSocket::bind((ips[0], 0)).await.expect("bind");
        let port = first.local_addr().expect("addr").port();
        let mut socks = vec![first];
        for ip in &ips[1..] {
            match UdpSocket::bind((*ip, port)).await {
                Ok(s) => socks.push(s),
                Err(_) => continue 'retry,
            }
        }
        let tasks = socks
            .into_iter()
            .zip(ips)
            .map(|(s, ip)| {
                let ip = ip.to_string();
                tokio::spawn(async move {
                    let mut buf = [0u8; 1500];
                    while let Ok((n, peer)) = s.recv_from(&mut buf).await {
                        let reply = format!("{ip} {}", String::from_utf8_lossy(&buf[..n]));
                        let _ = s.send_to(reply.as_bytes(), peer).await;
                    }
                })
            })
            .collect();
        return (port, tasks);
    }
    panic!("no common free UDP port on {ips:?}");
}

/// Sends `msg` from `sock` to `to` and returns the answering backend's address.
async fn udp_ask(sock: &UdpSocket, to: SocketAddr, msg: &str) -> Option<String> {
    sock.send_to(msg.as_bytes(), to).await.ok()?;
    let mut buf = [0u8; 1500];
    let (n, from) = tokio::time::timeout(Duration::from_millis(500), sock.recv_from(&mut buf))
        .await
        .ok()?
        .ok()?;
    assert_eq!(from, to, "the answer comes from the Service address");
    let text = String::from_utf8_lossy(&buf[..n]).to_string();
    let (ep, echoed) = text.split_once(' ')?;
    assert_eq!(echoed, msg);
    Some(ep.to_string())
}

async fn udp_service_ports(mode: ProxyMode) {
    let Some(env) = Env::start(mode).await else {
        return;
    };
    let (port, tasks) = udp_backends(&["127.0.0.8", "127.0.0.9"]).await;
    let svc = env
        .create_service(json!({
            "apiVersion": "v1", "kind": "Service",
            "metadata": {"name": "stats"},
            "spec": {"ports": [{"name": "statsd", "port": 8125, "protocol": "UDP"}]}
        }))
        .await;
    let slice = |endpoints: Value| -> EndpointSlice {
        serde_json::from_value(json!({
            "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
            "metadata": {"name": "stats-1", "labels": {
                "kubernetes.io/service-name": "stats",
                "endpointslice.kubernetes.io/managed-by": "skiff-proxy-test"}},
            "addressType": "IPv4",
            "ports": [{"name": "statsd", "port": port, "protocol": "UDP"}],
            "endpoints": endpoints,
        }))
        .expect("slice")
    };
    let slices = env.slices();
    slices
        .create(
            &PostParams::default(),
            &slice(json!([ready("127.0.0.8", true), ready("127.0.0.9", true)])),
        )
        .await
        .expect("create slice");
    let addr = SocketAddr::new(cluster_ip(&svc), 8125);
    let wait = env
        .proxy()
        .wait_for(|s| s.udp_listeners.contains_key(&addr));
    tokio::time::timeout(TIMEOUT, wait)
        .await
        .expect("UDP listener");

    // Each client is one flow to one endpoint; clients are spread over both.
    let a = UdpSocket::bind("0.0.0.0:0").await.expect("bind");
    let first = eventually("a UDP answer", || udp_ask(&a, addr, "x")).await;
    for i in 0..5 {
        assert_eq!(
            udp_ask(&a, addr, &format!("m{i}")).await,
            Some(first.clone())
        );
    }
    let mut seen = std::collections::BTreeSet::new();
    for _ in 0..4 {
        let c = UdpSocket::bind("0.0.0.0:0").await.expect("bind");
        seen.insert(udp_ask(&c, addr, "hello").await.expect("answer"));
    }
    assert_eq!(seen.len(), 2, "{seen:?}");

    // The flow's endpoint becomes not ready: the same client moves to the other one.
    let other = if first == "127.0.0.8" {
        "127.0.0.9"
    } else {
        "127.0.0.8"
    };
    let mut s = slice(json!([ready(&first, false), ready(other, true)]));
    s.metadata.resource_version = slices
        .get("stats-1")
        .await
        .expect("get")
        .metadata
        .resource_version;
    slices
        .replace("stats-1", &PostParams::default(), &s)
        .await
        .expect("replace");
    eventually("the flow moves", || async {
        (udp_ask(&a, addr, "y").await.as_deref() == Some(other)).then_some(())
    })
    .await;
    for t in tasks {
        t.abort();
    }
    env.stop().await;
}

async fn without_an_interface_load_balancers_and_dns_still_work(mode: ProxyMode) {
    // No root needed: nothing but loopback sockets.
    let Some(env) = Env::start_with(false, mode).await else {
        return;
    };
    let backends = Backends::start(&["127.0.0.10"]).await;
    let lb_port = free_port();
    let svc = env.create_service(lb_service("plain", lb_port)).await;
    env.put_slice(
        "plain-1",
        "plain",
        backends.port,
        json!([ready("127.0.0.10", true)]),
    )
    .await;
    let lb = SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), lb_port);
    env.listening(lb).await;
    eventually("LB forwards", || async {
        (hello(lb).await.as_deref() == Some("127.0.0.10")).then_some(())
    })
    .await;
    let status = env.proxy().status();
    assert!(status.addresses.is_empty(), "{status:?}");
    assert!(
        !status
            .listeners
            .contains_key(&SocketAddr::new(cluster_ip(&svc), lb_port)),
        "{status:?}"
    );
    let dns = SocketAddr::new(env.config.dns_address, env.config.dns_port);
    assert_eq!(
        query(dns, "plain.default.svc.cluster.local", RecordType::A, false).await,
        (ResponseCode::NoError, vec![cluster_ip(&svc).to_string()])
    );
    env.stop().await;
}

/// A network namespace with a veth to the host, standing in for a pod, and its resolv.conf
/// (which `ip netns exec` mounts over /etc/resolv.conf). Removed on drop.
struct PodNetns {
    name: String,
    host_veth: String,
}

impl PodNetns {
    fn create(subnet: u8, resolv_conf: &str) -> PodNetns {
        let id = std::process::id() % 100_000;
        let ns = PodNetns {
            name: format!("skpn{id}s{subnet}"),
            host_veth: format!("skv{id}s{subnet}a"),
        };
        let peer = format!("skv{id}s{subnet}b");
        let host_ip = format!("10.97.{subnet}.1/30");
        let pod_ip = format!("10.97.{subnet}.2/30");
        let via = format!("10.97.{subnet}.1");
        let dir = format!("/etc/netns/{}", ns.name);
        std::fs::create_dir_all(&dir).expect("netns dir");
        std::fs::write(format!("{dir}/resolv.conf"), resolv_conf).expect("resolv.conf");
        let n = ns.name.as_str();
        let steps: Vec<Vec<&str>> = vec![
            vec!["netns", "add", n],
            vec![
                "link",
                "add",
                &ns.host_veth,
                "type",
                "veth",
                "peer",
                "name",
                &peer,
            ],
            vec!["link", "set", &peer, "netns", n],
            vec!["addr", "add", &host_ip, "dev", &ns.host_veth],
            vec!["link", "set", &ns.host_veth, "up"],
            vec!["-n", n, "addr", "add", &pod_ip, "dev", &peer],
            vec!["-n", n, "link", "set", &peer, "up"],
            vec!["-n", n, "link", "set", "lo", "up"],
            vec!["-n", n, "route", "add", "default", "via", &via],
        ];
        for args in steps {
            let ok = std::process::Command::new("ip")
                .args(&args)
                .status()
                .is_ok_and(|s| s.success());
            assert!(ok, "ip {args:?}");
        }
        ns
    }

    /// Runs a shell command inside the namespace (on the blocking pool).
    async fn sh(&self, script: &str) -> (bool, String) {
        let (name, script) = (self.name.clone(), script.to_string());
        tokio::task::spawn_blocking(move || {
            let out = std::process::Command::new("ip")
                .args([
                    "netns", "exec", &name, "timeout", "10", "bash", "-c", &script,
                ])
                .output()
                .expect("ip netns exec");
            (
                out.status.success(),
                format!(
                    "{}{}",
                    String::from_utf8_lossy(&out.stdout),
                    String::from_utf8_lossy(&out.stderr)
                ),
            )
        })
        .await
        .expect("task")
    }
}

impl Drop for PodNetns {
    fn drop(&mut self) {
        for args in [
            vec!["netns", "del", self.name.as_str()],
            vec!["link", "del", "dev", self.host_veth.as_str()],
        ] {
            let _ = std::process::Command::new("ip")
                .args(&args)
                .stderr(std::process::Stdio::null())
                .status();
        }
        let _ = std::fs::remove_dir_all(format!("/etc/netns/{}", self.name));
    }
}

async fn a_pod_resolves_the_service_by_name_and_calls_its_cluster_ip(mode: ProxyMode) {
    let Some(env) = Env::start(mode).await else {
        return;
    };
    let backends = Backends::start(&["127.0.0.11"]).await;
    let svc = env
        .create_service(json!({
            "apiVersion": "v1", "kind": "Service",
            "metadata": {"name": "ml-api-service"},
            "spec": {"ports": [{"name": "http", "port": 80, "targetPort": "http"}]}
        }))
        .await;
    env.put_slice(
        "ml-api-1",
        "ml-api-service",
        backends.port,
        json!([ready("127.0.0.11", true)]),
    )
    .await;
    let cip = SocketAddr::new(cluster_ip(&svc), 80);
    env.listening(cip).await;
    eventually("endpoints", || async { hello(cip).await }).await;

    let subnet = match env.kubernetes_ip.octets() {
        [_, _, s, _] => s,
    };
    let pod = PodNetns::create(subnet, &skiff_proxy::resolv_conf("default", &env.config));
    // glibc's resolver with the pod's resolv.conf: search path, our DNS, the cluster IP.
    let (ok, out) = pod.sh("getent hosts ml-api-service").await;
    assert!(ok, "{out}");
    assert!(
        out.starts_with(&format!("{} ", cip.ip()))
            && out.contains("ml-api-service.default.svc.cluster.local"),
        "{out}"
    );
    if mode == ProxyMode::Iptables {
        let wait = env.proxy().wait_for(|s| s.dnat.contains_key(&cip));
        tokio::time::timeout(TIMEOUT, wait)
            .await
            .expect("DNAT rules");
    }
    let before = dnat_packets(&env.config.rules_prefix());
    // And a connection by name goes through the cluster IP to the endpoint.
    let (ok, out) = pod
        .sh("exec 3<>/dev/tcp/ml-api-service/80 && head -1 <&3")
        .await;
    assert!(ok, "{out}");
    assert_eq!(out.trim(), "127.0.0.11");
    if mode == ProxyMode::Iptables {
        // From the pod's namespace, DNATed in PREROUTING (not through the listener).
        assert!(dnat_packets(&env.config.rules_prefix()) > before);
    }
    drop(pod);
    env.stop().await;
}

/// A process killed on drop.
struct ChildGuard(std::process::Child);

impl Drop for ChildGuard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// An endpoint on a pod IP (not loopback): the LoadBalancer on 127.0.0.1 reaches it (the
/// source masqueraded: the pod could not answer 127.0.0.1), and the pod reaches itself
/// through its own cluster IP (hairpin, masqueraded too).
async fn a_pod_endpoint_from_loopback_and_from_itself(mode: ProxyMode) {
    let Some(env) = Env::start(mode).await else {
        return;
    };
    let has_python = std::process::Command::new("python3")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if !has_python {
        eprintln!("skipped: the pod's server is a python3 one-liner");
        return env.stop().await;
    }
    let subnet = match env.kubernetes_ip.octets() {
        [_, _, s, _] => s,
    };
    let pod = PodNetns::create(subnet, &skiff_proxy::resolv_conf("default", &env.config));
    let pod_ip: IpAddr = format!("10.97.{subnet}.2").parse().expect("ip");
    let host_ip = format!("10.97.{subnet}.1");
    // Answers every connection with the client's address as the pod sees it.
    let server = "import socket\ns=socket.socket()\ns.setsockopt(socket.SOL_SOCKET,socket.SO_REUSEADDR,1)\ns.bind(('0.0.0.0',8080))\ns.listen(64)\nwhile True:\n c,a=s.accept()\n c.sendall((a[0]+'\\n').encode())\n c.close()\n";
    let _server = ChildGuard(
        std::process::Command::new("ip")
            .args(["netns", "exec", &pod.name, "python3", "-c", server])
            .spawn()
            .expect("pod server"),
    );
    eventually("pod server", || async {
        hello(SocketAddr::new(pod_ip, 8080)).await
    })
    .await;

    let lb_port = free_port();
    let svc = env.create_service(lb_service("podweb", lb_port)).await;
    env.put_slice(
        "podweb-1",
        "podweb",
        8080,
        json!([ready(&pod_ip.to_string(), true)]),
    )
    .await;
    let lb = SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), lb_port);
    let cip = SocketAddr::new(cluster_ip(&svc), lb_port);
    env.listening(lb).await;
    if mode == ProxyMode::Iptables {
        let wait = env
            .proxy()
            .wait_for(|s| s.dnat.contains_key(&lb) && s.dnat.contains_key(&cip));
        tokio::time::timeout(TIMEOUT, wait)
            .await
            .expect("DNAT rules");
    }
    let seen = eventually("LB to the pod", || async { hello(lb).await }).await;
    assert_eq!(seen, host_ip, "the pod saw the client as {seen}");

    let before = dnat_packets(&env.config.rules_prefix());
    let (ok, out) = pod
        .sh(&format!(
            "exec 3<>/dev/tcp/{}/{} && head -1 <&3",
            cip.ip(),
            cip.port()
        ))
        .await;
    assert!(ok, "{out}");
    assert_eq!(out.trim(), host_ip, "hairpin");
    if mode == ProxyMode::Iptables {
        assert!(dnat_packets(&env.config.rules_prefix()) > before);
    }
    drop(pod);
    env.stop().await;
}
