//! Service overhead benchmark: HTTP requests/s and latency through the ClusterIP, the LoadBalancer
//! and the NodePort against the same backend called directly, load from `wrk`.
//!
//! Starts an in-process API server, the proxy (interface `skiff-bench0`, service range
//! 10.96.250.0/24, all on this machine), two tiny HTTP backends on 127.0.0.2/127.0.0.3 behind a
//! LoadBalancer Service, then runs `wrk` against each address with keep-alive connections and
//! with a new connection per request. Needs root.
//!
//! Usage: proxy_bench [DURATION_SECS] [CONNECTIONS,...] [iptables|userspace]
//! (defaults: 5, 1,16,64 and what `ProxyMode::detect` picks)

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::api::{Api, PostParams};
use serde_json::json;
use skiff_proxy::{ProxyConfig, ProxyMode};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

const IFACE: &str = "skiff-bench0";

struct LinkGuard;

impl Drop for LinkGuard {
    fn drop(&mut self) {
        let _ = std::process::Command::new("ip")
            .args(["link", "del", "dev", IFACE])
            .stderr(std::process::Stdio::null())
            .status();
    }
}

/// A minimal HTTP/1.1 server: answers every request with `200 ok`, keeps the connection
/// unless the client asked to close it.
async fn http_backend(l: TcpListener) {
    loop {
        let Ok((mut s, _)) = l.accept().await else {
            continue;
        };
        let _ = s.set_nodelay(true);
        tokio::spawn(async move {
            let mut buf = Vec::with_capacity(4096);
            let mut chunk = [0u8; 4096];
            loop {
                let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") else {
                    match s.read(&mut chunk).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => {
                            buf.extend_from_slice(&chunk[..n]);
                            continue;
                        }
                    }
                };
                let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
                let close = head.contains("connection: close");
                buf.drain(..end + 4);
                let resp: &[u8] = if close {
                    b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok"
                } else {
                    b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"
                };
                if s.write_all(resp).await.is_err() || close {
                    return;
                }
            }
        });
    }
}

struct WrkResult {
    rps: f64,
    p50: String,
    p99: String,
    errors: String,
}

/// Runs wrk against `addr` (on the blocking pool: it is a child process we wait for).
async fn wrk(
    addr: SocketAddr,
    connections: u32,
    secs: u64,
    close: bool,
) -> anyhow::Result<WrkResult> {
    let mut args = vec![
        "-t".to_string(),
        connections.clamp(1, 2).to_string(),
        "-c".into(),
        connections.to_string(),
        "-d".into(),
        format!("{secs}s"),
        "--latency".into(),
    ];
    if close {
        args.extend(["-H".into(), "Connection: close".into()]);
    }
    args.push(format!("http://{addr}/"));
    let out =
        tokio::task::spawn_blocking(move || std::process::Command::new("wrk").args(&args).output())
            .await??;
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let field = |prefix: &str| -> Option<String> {
        text.lines()
            .map(str::trim)
            .find(|l| l.starts_with(prefix))
            .and_then(|l| l.split_whitespace().nth(1))
            .map(str::to_string)
    };
    let rps = field("Requests/sec:")
        .and_then(|v| v.parse().ok())
        .ok_or_else(|| anyhow::anyhow!("no result from wrk: {text}"))?;
    let errors = text
        .lines()
        .find(|l| l.contains("Socket errors") || l.contains("Non-2xx"))
        .map(|l| l.trim().to_string())
        .unwrap_or_else(|| "0".into());
    Ok(WrkResult {
        rps,
        p50: field("50%").unwrap_or_default(),
        p99: field("99%").unwrap_or_default(),
        errors,
    })
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    use std::os::unix::fs::MetadataExt;
    if std::fs::metadata("/proc/self")?.uid() != 0 {
        anyhow::bail!("needs root (the proxy's service interface)");
    }
    let mut args = std::env::args().skip(1);
    let secs: u64 = args.next().and_then(|a| a.parse().ok()).unwrap_or(5);
    let levels: Vec<u32> = args
        .next()
        .map(|a| a.split(',').filter_map(|x| x.parse().ok()).collect())
        .unwrap_or_else(|| vec![1, 16, 64]);
    let mode = match args.next().as_deref() {
        None => ProxyMode::detect(),
        Some("iptables") => ProxyMode::Iptables,
        Some("userspace") => ProxyMode::Userspace,
        Some(other) => anyhow::bail!("unknown mode {other:?}: iptables or userspace"),
    };

    let _guard = LinkGuard;
    let dir = tempfile::tempdir()?;
    let cidr = (Ipv4Addr::new(10, 96, 250, 0), 24);
    let running = skiff_server::start(skiff_server::ServerConfig {
        port: 0,
        controllers: false,
        service_cidr: cidr,
        ..skiff_server::ServerConfig::new(dir.path().to_path_buf())
    })
    .await?;
    let client = running.client.clone();
    let proxy = skiff_proxy::run(
        client.clone(),
        ProxyConfig {
            node_address: IpAddr::V4(Ipv4Addr::LOCALHOST),
            service_interface: IFACE.into(),
            dns_address: IpAddr::V4(Ipv4Addr::new(10, 96, 250, 10)),
            service_cidr: Some(cidr),
            mode,
            ..ProxyConfig::default()
        },
    )
    .await?;
    proxy.synced().await;

    // Two endpoints on one port.
    let (a, port) = loop {
        let a = TcpListener::bind("127.0.0.2:0").await?;
        let port = a.local_addr()?.port();
        if let Ok(b) = TcpListener::bind(("127.0.0.3", port)).await {
            tokio::spawn(http_backend(b));
            break (a, port);
        }
    };
    tokio::spawn(http_backend(a));
    let lb_port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    let svc: Service = serde_json::from_value(json!({
        "metadata": {"name": "bench"},
        "spec": {"type": "LoadBalancer", "ports": [{"name": "http", "port": lb_port, "targetPort": "http"}]}
    }))?;
    let svc = Api::<Service>::namespaced(client.clone(), "default")
        .create(&PostParams::default(), &svc)
        .await?;
    let slice: EndpointSlice = serde_json::from_value(json!({
        "metadata": {"name": "bench-1", "labels": {"kubernetes.io/service-name": "bench",
                     "endpointslice.kubernetes.io/managed-by": "proxy-bench"}},
        "addressType": "IPv4",
        "ports": [{"name": "http", "port": port}],
        "endpoints": [{"addresses": ["127.0.0.2"]}, {"addresses": ["127.0.0.3"]}]
    }))?;
    Api::<EndpointSlice>::namespaced(client.clone(), "default")
        .create(&PostParams::default(), &slice)
        .await?;
    let spec = svc.spec.unwrap_or_default();
    let cip: IpAddr = spec.cluster_ip.unwrap_or_default().parse()?;
    let node_port = spec
        .ports
        .unwrap_or_default()
        .first()
        .and_then(|p| p.node_port)
        .unwrap_or_default();
    let targets = [
        (
            "direct 127.0.0.2",
            SocketAddr::new(IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2)), port),
        ),
        ("ClusterIP", SocketAddr::new(cip, lb_port)),
        (
            "LoadBalancer",
            SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), lb_port),
        ),
        (
            "NodePort",
            SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), node_port as u16),
        ),
    ];
    let wait = proxy.wait_for(|s| {
        targets[1..]
            .iter()
            .all(|(_, a)| s.listeners.contains_key(a))
    });
    tokio::time::timeout(Duration::from_secs(30), wait).await?;
    // The endpoints must be in place too: one successful request through the proxy.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while wrk(targets[1].1, 1, 1, true)
        .await
        .map(|r| r.errors != "0")
        .unwrap_or(true)
    {
        if tokio::time::Instant::now() > deadline {
            anyhow::bail!("the proxy does not forward");
        }
    }

    if mode == ProxyMode::Iptables {
        let wait = proxy.wait_for(|s| targets[1..].iter().all(|(_, a)| s.dnat.contains_key(a)));
        tokio::time::timeout(Duration::from_secs(30), wait).await?;
    }
    println!("proxy mode: {mode:?}");
    println!(
        "machine: {} cores; load average: {}",
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        std::fs::read_to_string("/proc/loadavg")
            .unwrap_or_default()
            .trim()
    );
    println!("| mode | connections | target | requests/s | vs direct | p50 | p99 | errors |");
    println!("|---|---|---|---|---|---|---|---|");
    for close in [false, true] {
        let mode = if close {
            "new connection per request"
        } else {
            "keep-alive"
        };
        for &c in &levels {
            let mut direct = 0.0;
            for (name, addr) in &targets {
                let r = wrk(*addr, c, secs, close).await?;
                if direct == 0.0 {
                    direct = r.rps;
                }
                println!(
                    "| {mode} | {c} | {name} | {:.0} | {:+.1} % | {} | {} | {} |",
                    r.rps,
                    (r.rps / direct - 1.0) * 100.0,
                    r.p50,
                    r.p99,
                    r.errors
                );
            }
        }
    }
    proxy.shutdown().await;
    running.shutdown().await;
    Ok(())
}
