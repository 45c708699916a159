//! Pod networking through the real CNI plugins: namespaces, addresses, reachability,
//! hostPorts, idempotent setup/teardown and the host's catch-all routes. Needs root and
//! the containernetworking-plugins package; each test uses its own bridge, subnets and
//! directories, and removes all of it (Drop guard) even when it fails.

use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;
use std::thread::JoinHandle;
use std::time::Duration;

use skiff_runtime::network::{
    CniConfig, CniNetwork, Ipv4Cidr, NetworkError, PodNetwork, PodNetworkStatus, PodRef,
    PortMapping, connect_in_netns, run_in_netns,
};

const TIMEOUT: Duration = Duration::from_secs(5);

/// A test's own network; tears down its sandboxes and host changes when dropped.
struct TestNet {
    net: CniNetwork,
    sandboxes: Mutex<Vec<String>>,
    prefix: String,
    _dir: tempfile::TempDir,
}

impl TestNet {
    /// `n` picks the bridge and the subnets: pods in 10.199.(2n).0/`subnet_prefix`,
    /// cluster 10.199.(2n).0/23, services 10.198.n.0/24. `None` (test skipped) without
    /// root or plugins.
    fn new(n: u8, subnet_prefix: u8) -> Option<TestNet> {
        if !rustix::process::geteuid().is_root() {
            eprintln!("skipped: pod networking tests need root");
            return None;
        }
        if !Path::new("/usr/lib/cni/bridge").exists() {
            eprintln!("skipped: /usr/lib/cni/bridge missing (containernetworking-plugins)");
            return None;
        }
        let dir = tempfile::tempdir().expect("tempdir");
        let pid = std::process::id() % 100_000;
        let base = Ipv4Addr::new(10, 199, 2 * n, 0);
        let config = CniConfig {
            plugin_dir: PathBuf::from("/usr/lib/cni"),
            state_dir: dir.path().join("state"),
            netns_dir: dir.path().join("netns"),
            network_name: format!("skt{n}"),
            bridge: format!("skt{n}-{pid}"),
            pod_subnet: Ipv4Cidr::new(base, subnet_prefix).expect("subnet"),
            cluster_cidr: Ipv4Cidr::new(base, 23).expect("cluster"),
            service_cidr: Ipv4Cidr::new(Ipv4Addr::new(10, 198, n, 0), 24).expect("service"),
            mtu: None,
        };
        let net = CniNetwork::new(config).expect("CniNetwork::new");
        let test = TestNet {
            net,
            sandboxes: Mutex::new(Vec::new()),
            prefix: format!("t{pid}-{n}"),
            _dir: dir,
        };
        test.net.ensure_host_routes().expect("ensure_host_routes");
        Some(test)
    }

    fn id(&self, name: &str) -> String {
        format!("{}-{name}", self.prefix)
    }

    fn setup(&self, name: &str, ports: &[PortMapping]) -> Result<PodNetworkStatus, NetworkError> {
        let id = self.id(name);
        self.sandboxes.lock().unwrap().push(id.clone());
        let pod = PodRef {
            namespace: "default".into(),
            name: name.into(),
            uid: format!("uid-{name}"),
        };
        self.net.setup_blocking(&id, &pod, ports)
    }

    fn teardown(&self, name: &str) {
        self.net
            .teardown_blocking(&self.id(name))
            .expect("teardown");
    }

    fn bridge_ports(&self) -> usize {
        let brif = Path::new("/sys/class/net")
            .join(&self.net.config().bridge)
            .join("brif");
        std::fs::read_dir(brif).map(|d| d.count()).unwrap_or(0)
    }

    fn ipam_lease_exists(&self, ip: IpAddr) -> bool {
        let c = self.net.config();
        c.ipam_dir()
            .join(&c.network_name)
            .join(ip.to_string())
            .exists()
    }
}

impl Drop for TestNet {
    fn drop(&mut self) {
        let ids = std::mem::take(&mut *self.sandboxes.lock().unwrap_or_else(|p| p.into_inner()));
        for id in ids {
            if let Err(e) = self.net.teardown_blocking(&id) {
                eprintln!("cleanup of {id}: {e}");
            }
        }
        if let Err(e) = self.net.teardown_host() {
            eprintln!("cleanup of host network: {e}");
        }
    }
}

fn v4(status: &PodNetworkStatus) -> Ipv4Addr {
    match status.ip {
        IpAddr::V4(ip) => ip,
        IpAddr::V6(ip) => panic!("expected IPv4, got {ip}"),
    }
}

/// A one-shot echo server listening inside `netns` on `ip`; returns its address.
fn echo_server(netns: &Path, ip: IpAddr) -> (SocketAddr, JoinHandle<()>) {
    let listener = run_in_netns(netns, || TcpListener::bind((ip, 0)))
        .expect("enter netns")
        .expect("bind in netns");
    let addr = listener.local_addr().expect("local addr");
    let handle = std::thread::spawn(move || {
        let (mut conn, _) = listener.accept().expect("accept");
        conn.set_read_timeout(Some(TIMEOUT)).unwrap();
        let mut buf = [0u8; 4];
        conn.read_exact(&mut buf).expect("read");
        conn.write_all(&buf).expect("write");
    });
    (addr, handle)
}

fn ping_pong(mut stream: TcpStream) {
    stream.set_read_timeout(Some(TIMEOUT)).unwrap();
    stream.write_all(b"ping").expect("send");
    let mut buf = [0u8; 4];
    stream.read_exact(&mut buf).expect("echo");
    assert_eq!(&buf, b"ping");
}

/// `ip -o <args>` run inside the namespace.
fn ip_in(netns: &Path, args: &[&str]) -> String {
    let out = Command::new("nsenter")
        .arg(format!("--net={}", netns.display()))
        .args(["ip", "-o"])
        .args(args)
        .output()
        .expect("nsenter");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn link_is_up(links: &str, name: &str) -> bool {
    links.lines().any(|l| {
        l.split(':')
            .nth(1)
            .is_some_and(|n| n.trim().split('@').next() == Some(name))
            && l.split('<')
                .nth(1)
                .and_then(|f| f.split('>').next())
                .is_some_and(|flags| flags.split(',').any(|f| f == "UP"))
    })
}

#[test]
fn sandboxes_get_addresses_and_reach_each_other() {
    let Some(t) = TestNet::new(1, 24) else { return };
    let subnet = t.net.config().pod_subnet;

    // The catch-all route: an address of the cluster CIDR outside this node's subnet is
    // unreachable instead of going to the default gateway.
    let out = Command::new("ip")
        .args(["route", "get", "10.199.3.9"])
        .output()
        .unwrap();
    assert!(
        !out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    let out = Command::new("ip")
        .args(["route", "get", "10.198.1.9"])
        .output()
        .unwrap();
    assert!(!out.status.success(), "service CIDR must be unreachable");
    assert!(
        nat_postrouting().contains("skiff skt1:"),
        "masquerade rule missing"
    );

    let a = t.setup("a", &[]).expect("setup a");
    let b = t.setup("b", &[]).expect("setup b");
    let (ns_a, ns_b) = (a.netns.clone().unwrap(), b.netns.clone().unwrap());
    assert_ne!(a.ip, b.ip);
    for s in [&a, &b] {
        assert!(subnet.contains(v4(s)), "{} not in {subnet}", s.ip);
        assert_ne!(v4(s), t.net.config().gateway());
    }
    assert!(ns_a.exists() && ns_b.exists());
    assert_eq!(t.bridge_ports(), 2);

    // eth0 (with the pod IP) and lo are up, with a default route via the gateway.
    let links = ip_in(&ns_a, &["link", "show"]);
    assert!(link_is_up(&links, "eth0"), "{links}");
    assert!(link_is_up(&links, "lo"), "{links}");
    let addrs = ip_in(&ns_a, &["-4", "addr", "show"]);
    let eth0 = format!("inet {}/24", a.ip);
    assert!(
        addrs
            .lines()
            .any(|l| l.contains(" eth0 ") && l.contains(&eth0)),
        "{addrs}"
    );
    assert!(addrs.contains("inet 127.0.0.1/8"), "{addrs}");
    let routes = ip_in(&ns_a, &["route", "show"]);
    assert!(
        routes.contains(&format!("default via {}", t.net.config().gateway())),
        "{routes}"
    );

    // Loopback works inside the pod.
    let (addr, server) = echo_server(&ns_a, IpAddr::V4(Ipv4Addr::LOCALHOST));
    let stream = run_in_netns(&ns_a, || TcpStream::connect_timeout(&addr, TIMEOUT))
        .unwrap()
        .expect("loopback connect inside the pod");
    ping_pong(stream);
    server.join().unwrap();

    // The host reaches a listener in the pod.
    let (addr, server) = echo_server(&ns_a, a.ip);
    ping_pong(TcpStream::connect_timeout(&addr, TIMEOUT).expect("host -> pod a"));
    server.join().unwrap();

    // Pod a reaches pod b.
    let (addr, server) = echo_server(&ns_b, b.ip);
    let stream = run_in_netns(&ns_a, || TcpStream::connect_timeout(&addr, TIMEOUT))
        .unwrap()
        .expect("pod a -> pod b");
    ping_pong(stream);
    server.join().unwrap();

    // Setup is idempotent.
    assert_eq!(t.setup("a", &[]).expect("setup a again"), a);
    assert_eq!(t.bridge_ports(), 2);
    let list = t.net.list_blocking().unwrap();
    assert!(
        list.contains(&t.id("a")) && list.contains(&t.id("b")),
        "{list:?}"
    );

    // Teardown removes the namespace, the veth and the lease; twice is fine.
    assert!(t.ipam_lease_exists(a.ip));
    t.teardown("a");
    assert!(!ns_a.exists());
    assert_eq!(t.bridge_ports(), 1);
    assert!(!t.ipam_lease_exists(a.ip));
    assert!(!t.net.list_blocking().unwrap().contains(&t.id("a")));
    t.teardown("a");
    t.teardown("never-existed");

    // b is untouched.
    let (addr, server) = echo_server(&ns_b, b.ip);
    ping_pong(TcpStream::connect_timeout(&addr, TIMEOUT).expect("host -> pod b"));
    server.join().unwrap();
    t.teardown("b");
    assert_eq!(t.bridge_ports(), 0);
    assert!(t.net.list_blocking().unwrap().is_empty());

    // The host side goes away too (Drop runs it again: idempotent).
    t.net.teardown_host().expect("teardown_host");
    let bridge = Path::new("/sys/class/net").join(&t.net.config().bridge);
    assert!(!bridge.exists());
    assert!(!nat_postrouting().contains("skiff skt1:"));
    let routes = Command::new("ip").args(["route", "show"]).output().unwrap();
    let routes = String::from_utf8_lossy(&routes.stdout);
    assert!(
        !routes.contains("10.199.2.0/23") && !routes.contains("10.198.1.0/24"),
        "{routes}"
    );
}

fn nat_postrouting() -> String {
    let out = Command::new("iptables")
        .args(["-w", "-t", "nat", "-S", "POSTROUTING"])
        .output()
        .expect("iptables");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn released_address_is_reused_and_failed_setup_leaves_nothing() {
    // A /30 holds exactly one pod address besides the gateway.
    let Some(t) = TestNet::new(2, 30) else { return };
    let a = t.setup("a", &[]).expect("setup a");
    assert_eq!(v4(&a), Ipv4Addr::new(10, 199, 4, 2));

    let err = t.setup("b", &[]).expect_err("the range is full");
    assert!(err.to_string().contains("host-local") || err.to_string().contains("bridge"));
    assert!(!t.net.netns_path(&t.id("b")).exists());
    assert_eq!(t.net.list_blocking().unwrap(), [t.id("a")]);
    assert_eq!(t.bridge_ports(), 1);

    t.teardown("a");
    let b = t
        .setup("b", &[])
        .expect("setup b after a released its address");
    assert_eq!(b.ip, a.ip);
    t.teardown("b");
}

#[test]
fn setup_recovers_a_lost_namespace() {
    let Some(t) = TestNet::new(3, 24) else { return };
    let a = t.setup("a", &[]).expect("setup a");
    let ns = a.netns.clone().unwrap();
    // As after a reboot or a crash: the pinned namespace is gone but the state is not.
    rustix::mount::unmount(&ns, rustix::mount::UnmountFlags::DETACH).unwrap();
    std::fs::remove_file(&ns).unwrap();

    let again = t
        .setup("a", &[])
        .expect("setup after the namespace was lost");
    assert_eq!(again.netns.as_deref(), Some(ns.as_path()));
    assert!(ns.exists());
    let (addr, server) = echo_server(&ns, again.ip);
    ping_pong(TcpStream::connect_timeout(&addr, TIMEOUT).expect("host -> recreated pod"));
    server.join().unwrap();

    // A corrupt state file (a torn write, a bad disk) does not wedge the sandbox: setup
    // starts over and the old lease is released.
    let state_file = t.net.config().state_dir.join(format!("{}.json", t.id("a")));
    std::fs::write(&state_file, b"{ not json").unwrap();
    let third = t.setup("a", &[]).expect("setup over a corrupt state file");
    assert!(ns.exists());
    if third.ip != again.ip {
        assert!(
            !t.ipam_lease_exists(again.ip),
            "old lease of {} kept",
            again.ip
        );
    }
    assert_eq!(t.bridge_ports(), 1);
    std::fs::write(&state_file, b"{ not json").unwrap();
    t.teardown("a");
    assert!(!ns.exists());
    assert!(!state_file.exists());
    assert!(!t.ipam_lease_exists(third.ip));
    assert_eq!(t.bridge_ports(), 0);
}

#[test]
fn host_port_reaches_the_pod() {
    let Some(t) = TestNet::new(4, 24) else { return };
    let host_port = TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .unwrap()
        .port();
    let container_port = 8080;
    let ports = [PortMapping {
        host_ip: None,
        host_port,
        container_port,
        protocol: "TCP".into(),
    }];
    let a = t.setup("a", &ports).expect("setup with hostPort");
    let ns = a.netns.clone().unwrap();
    let listener = run_in_netns(&ns, || TcpListener::bind(("0.0.0.0", container_port)))
        .unwrap()
        .expect("bind in pod");
    let server = std::thread::spawn(move || {
        let (mut conn, _) = listener.accept().expect("accept");
        conn.set_read_timeout(Some(TIMEOUT)).unwrap();
        let mut buf = [0u8; 4];
        conn.read_exact(&mut buf).expect("read");
        conn.write_all(&buf).expect("write");
    });
    let target = SocketAddr::from((Ipv4Addr::LOCALHOST, host_port));
    ping_pong(TcpStream::connect_timeout(&target, TIMEOUT).expect("127.0.0.1:hostPort -> pod"));
    server.join().unwrap();

    let nat = iptables_save("nat");
    assert!(nat.contains(&format!("--dport {host_port}")), "{nat}");
    let filter = iptables_save("filter");
    assert!(filter.contains(&format!("-s {}/32", a.ip)), "{filter}");

    t.teardown("a");
    // The mapping is gone with the pod: nothing answers on the host port any more, and
    // no rule of the pod is left (portmap's and firewall's).
    assert!(TcpStream::connect_timeout(&target, TIMEOUT).is_err());
    let nat = iptables_save("nat");
    assert!(
        !nat.contains(&t.id("a")) && !nat.contains(&format!("--dport {host_port}")),
        "{nat}"
    );
    let filter = iptables_save("filter");
    assert!(!filter.contains(&format!("{}/32", a.ip)), "{filter}");
}

fn iptables_save(table: &str) -> String {
    let out = Command::new("iptables-save")
        .args(["-t", table])
        .output()
        .expect("iptables-save");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// An interface of its own holding one address, like the proxy's service addresses (a
/// port-less bridge: this kernel may lack the dummy driver).
struct AddressLink(String);

impl AddressLink {
    fn new(name: &str, addr: Ipv4Addr) -> AddressLink {
        let link = AddressLink(name.to_string());
        for args in [
            vec!["link", "add", name, "type", "bridge"],
            vec!["addr", "add", &format!("{addr}/32"), "dev", name],
            vec!["link", "set", name, "up"],
        ] {
            let status = Command::new("ip").args(&args).status().expect("ip");
            assert!(status.success(), "ip {args:?}");
        }
        link
    }
}

impl Drop for AddressLink {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["link", "del", &self.0]).status();
    }
}

#[test]
fn pods_reach_the_host_and_service_addresses_but_nothing_else() {
    let Some(t) = TestNet::new(6, 24) else { return };
    let a = t.setup("a", &[]).expect("setup a");
    let ns = a.netns.clone().unwrap();
    let connect_from_pod = |addr: SocketAddr| {
        run_in_netns(&ns, || TcpStream::connect_timeout(&addr, TIMEOUT)).expect("enter netns")
    };

    // The node itself through the gateway address (where node-local services listen).
    let gateway = t.net.config().gateway();
    let listener = TcpListener::bind((gateway, 0)).expect("bind on the gateway address");
    let addr = listener.local_addr().unwrap();
    let server = std::thread::spawn(move || {
        let (mut conn, peer) = listener.accept().expect("accept");
        let mut buf = [0u8; 4];
        conn.read_exact(&mut buf).expect("read");
        conn.write_all(&buf).expect("write");
        peer.ip()
    });
    ping_pong(connect_from_pod(addr).expect("pod -> node"));
    // Not masqueraded: the node sees the pod's own address.
    assert_eq!(server.join().unwrap(), a.ip);

    // A service address on an interface of the node: local routes win over the catch-all.
    let service_ip = Ipv4Addr::new(10, 198, 6, 10);
    let _service_link = AddressLink::new(
        &format!("skd6-{}", std::process::id() % 100_000),
        service_ip,
    );
    let listener = TcpListener::bind((service_ip, 0)).expect("bind on the service address");
    let addr = listener.local_addr().unwrap();
    let server = std::thread::spawn(move || {
        let (mut conn, _) = listener.accept().expect("accept");
        let mut buf = [0u8; 4];
        conn.read_exact(&mut buf).expect("read");
        conn.write_all(&buf).expect("write");
    });
    ping_pong(connect_from_pod(addr).expect("pod -> service address"));
    server.join().unwrap();

    // Unassigned cluster and service addresses are routed nowhere, instead of to the
    // default gateway: the node's forwarding decision for a pod's packet is
    // "unreachable", the pod's connect fails, and so does the node's own (at once).
    let bridge = t.net.config().bridge.clone();
    for ip in [Ipv4Addr::new(10, 199, 13, 9), Ipv4Addr::new(10, 198, 6, 99)] {
        let out = Command::new("ip")
            .args(["route", "get", &ip.to_string(), "from", &a.ip.to_string()])
            .args(["iif", &bridge])
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            !out.status.success() && stderr.contains("No route to host"),
            "{ip}: {} {stderr}",
            String::from_utf8_lossy(&out.stdout)
        );
        let target = SocketAddr::from((ip, 80));
        // The ICMP error the pod gets is rate-limited by the kernel: a timeout is fine too.
        let err = run_in_netns(&ns, || {
            TcpStream::connect_timeout(&target, Duration::from_millis(1500))
        })
        .unwrap()
        .expect_err("pod -> unrouted address");
        assert!(
            matches!(
                err.kind(),
                std::io::ErrorKind::HostUnreachable | std::io::ErrorKind::TimedOut
            ),
            "{ip}: {err}"
        );
        let start = std::time::Instant::now();
        let err = TcpStream::connect_timeout(&target, TIMEOUT).expect_err("host -> unrouted");
        assert_eq!(
            err.kind(),
            std::io::ErrorKind::HostUnreachable,
            "{ip}: {err}"
        );
        assert!(start.elapsed() < Duration::from_secs(1));
    }
    t.teardown("a");
}

#[test]
fn trait_object_over_async_runtime() {
    let Some(t) = TestNet::new(5, 24) else { return };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let id = t.id("x");
    t.sandboxes.lock().unwrap().push(id.clone());
    let net: Box<dyn PodNetwork> = Box::new(t.net.clone());
    rt.block_on(async {
        assert_eq!(net.name(), "cni");
        let pod = PodRef {
            namespace: "ml".into(),
            name: "x".into(),
            uid: "u".into(),
        };
        // Concurrent setups of one sandbox agree on one address.
        let (one, two) = tokio::join!(net.setup(&id, &pod, &[]), net.setup(&id, &pod, &[]));
        let (one, two) = (one.expect("setup"), two.expect("setup"));
        assert_eq!(one, two);
        assert_eq!(net.list().await.unwrap(), std::slice::from_ref(&id));
        assert!(matches!(
            net.setup("../evil", &pod, &[]).await,
            Err(NetworkError::InvalidId(_))
        ));
        // Async connect from inside the pod, to a listener on the pod's loopback.
        let ns = one.netns.clone().expect("netns");
        let listener = run_in_netns(&ns, || TcpListener::bind("127.0.0.1:0"))
            .unwrap()
            .unwrap();
        let addr = listener.local_addr().unwrap();
        let server = std::thread::spawn(move || {
            let (mut conn, _) = listener.accept().expect("accept");
            conn.write_all(b"pong").expect("write");
        });
        let mut stream = connect_in_netns(&ns, addr, TIMEOUT)
            .await
            .expect("connect in netns");
        let mut buf = [0u8; 4];
        tokio::io::AsyncReadExt::read_exact(&mut stream, &mut buf)
            .await
            .expect("read");
        assert_eq!(&buf, b"pong");
        server.join().unwrap();

        net.teardown(&id).await.expect("teardown");
        net.teardown(&id).await.expect("teardown again");
        assert!(net.list().await.unwrap().is_empty());

        // Pods starting together (the bridge is created by whichever comes first) get
        // distinct addresses.
        let ids: Vec<String> = (0..4).map(|i| t.id(&format!("p{i}"))).collect();
        t.sandboxes.lock().unwrap().extend(ids.iter().cloned());
        let setups = ids.iter().map(|id| net.setup(id, &pod, &[]));
        let mut ips: Vec<IpAddr> = futures::future::join_all(setups)
            .await
            .into_iter()
            .map(|r| r.expect("concurrent setup").ip)
            .collect();
        ips.sort();
        ips.dedup();
        assert_eq!(ips.len(), 4, "{ips:?}");
        for id in &ids {
            net.teardown(id).await.expect("teardown");
        }
    });
    assert_eq!(t.bridge_ports(), 0);
}
