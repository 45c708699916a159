//! The userspace proxy: TCP connections and UDP flows from a Service address to an endpoint.

use std::collections::HashMap;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::net::{TcpListener, TcpSocket, TcpStream, UdpSocket};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::balancer::Balancer;
use crate::model::ListenerKind;

/// How long one endpoint may take to accept before the next one is tried. Endpoints are on
/// this machine's bridge: one that has not answered in a second is gone (its pod deleted, the
/// EndpointSlice not updated yet), and the next one should get the connection.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);
/// Endpoints tried for one connection before it is given up.
const MAX_TRIES: usize = 3;
/// Per direction and connection: big enough for bulk transfers, small enough that many
/// short connections stay cheap.
const BUFFER: usize = 32 * 1024;

/// A UDP flow without a packet either way for this long is forgotten (kube-proxy's
/// conntrack default for unreplied UDP is 30 s).
const UDP_IDLE: Duration = Duration::from_secs(30);

/// Opens a Service's TCP listener. Cluster IPs are ours alone, and a wildcard node or LB
/// address must coexist with them on the same port (`lb_address: 0.0.0.0` and a cluster IP
/// both on port 80): both get SO_REUSEPORT, and the kernel hands each connection to the
/// listener with the most specific address. A specific node or LB address does not, so a
/// port another program holds is reported as taken rather than shared.
pub(crate) fn bind_tcp(addr: SocketAddr, kind: ListenerKind) -> std::io::Result<TcpListener> {
    let socket = if addr.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    if kind == ListenerKind::ClusterIp || addr.ip().is_unspecified() {
        socket.set_reuseport(true)?;
    }
    socket.bind(addr)?;
    socket.listen(1024)
}

/// Serves `listener` until aborted; `stop` ends the connections in flight too (shutdown).
pub(crate) fn spawn(
    listener: TcpListener,
    balancer: Arc<Balancer>,
    stop: watch::Receiver<bool>,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        loop {
            match listener.accept().await {
                Ok((stream, peer)) => {
                    tokio::spawn(proxy_connection(
                        stream,
                        peer,
                        balancer.clone(),
                        stop.clone(),
                    ));
                }
                Err(e) => {
                    // Out of file descriptors and the like: back off instead of spinning.
                    tracing::warn!("accept: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }
    })
}

async fn proxy_connection(
    client: TcpStream,
    peer: SocketAddr,
    balancer: Arc<Balancer>,
    mut stop: watch::Receiver<bool>,
) {
    let mut tried = Vec::new();
    let upstream = loop {
        let Some(ep) = balancer.pick(peer.ip(), &tried, Instant::now()) else {
            // No (more) ready endpoint: reset at once rather than leave the client waiting,
            // the userspace equivalent of kube-proxy's REJECT.
            reject(client);
            return;
        };
        match tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(ep)).await {
            Ok(Ok(s)) => break s,
            Ok(Err(e)) => tracing::debug!("connecting {peer} to endpoint {ep}: {e}"),
            Err(_) => tracing::debug!("connecting {peer} to endpoint {ep}: timed out"),
        }
        // A pod that just went away (its EndpointSlice not yet updated) refuses: try the next.
        balancer.unstick(peer.ip(), ep);
        tried.push(ep);
        if tried.len() >= MAX_TRIES {
            reject(client);
            return;
        }
    };
    let _ = client.set_nodelay(true);
    let _ = upstream.set_nodelay(true);
    let (mut client, mut upstream) = (client, upstream);
    tokio::select! {
        r = tokio::io::copy_bidirectional_with_sizes(&mut client, &mut upstream, BUFFER, BUFFER) => {
            if let Err(e) = r {
                tracing::trace!("connection from {peer}: {e}");
            }
        }
        _ = stop.wait_for(|s| *s) => {}
    }
}

fn reject(client: TcpStream) {
    // SO_LINGER zero: closing sends a reset instead of an orderly FIN.
    let _ = client.set_zero_linger();
    drop(client);
}

/// One client's UDP flow: its own socket connected to the endpoint, so replies can be told
/// apart and sent back from the Service address.
struct Flow {
    endpoint: SocketAddr,
    upstream: Arc<UdpSocket>,
    task: JoinHandle<()>,
}

type Flows = Arc<Mutex<HashMap<SocketAddr, Flow>>>;

fn lock(flows: &Flows) -> std::sync::MutexGuard<'_, HashMap<SocketAddr, Flow>> {
    flows.lock().unwrap_or_else(|e| e.into_inner())
}

/// Serves a UDP Service socket until aborted: each client address is a flow to one endpoint,
/// re-picked when that endpoint stops being ready or the flow idles out.
pub(crate) fn spawn_udp(
    socket: UdpSocket,
    balancer: Arc<Balancer>,
    stop: watch::Receiver<bool>,
) -> JoinHandle<()> {
    let socket = Arc::new(socket);
    tokio::spawn(async move {
        let flows: Flows = Arc::default();
        // The flows' reply tasks go with the listener.
        let _guard = FlowsGuard(flows.clone());
        let mut buf = vec![0u8; 65536];
        loop {
            let (n, client) = match socket.recv_from(&mut buf).await {
                Ok(x) => x,
                Err(e) => {
                    tracing::debug!("UDP receive: {e}");
                    continue;
                }
            };
            let current = lock(&flows)
                .get(&client)
                .map(|f| (f.endpoint, f.upstream.clone()));
            let upstream = match current {
                Some((ep, up)) if balancer.contains(ep) => up,
                _ => {
                    if let Some(old) = lock(&flows).remove(&client) {
                        old.task.abort();
                    }
                    let Some(ep) = balancer.pick(client.ip(), &[], Instant::now()) else {
                        continue;
                    };
                    match open_flow(ep, client, socket.clone(), flows.clone(), stop.clone()).await {
                        Ok(flow) => {
                            let up = flow.upstream.clone();
                            lock(&flows).insert(client, flow);
                            up
                        }
                        Err(e) => {
                            tracing::debug!("UDP flow from {client} to {ep}: {e}");
                            continue;
                        }
                    }
                }
            };
            if let Err(e) = upstream.send(&buf[..n]).await {
                tracing::debug!("UDP to endpoint for {client}: {e}");
            }
        }
    })
}

struct FlowsGuard(Flows);

impl Drop for FlowsGuard {
    fn drop(&mut self) {
        for (_, f) in lock(&self.0).drain() {
            f.task.abort();
        }
    }
}

async fn open_flow(
    endpoint: SocketAddr,
    client: SocketAddr,
    service: Arc<UdpSocket>,
    flows: Flows,
    mut stop: watch::Receiver<bool>,
) -> std::io::Result<Flow> {
    let bind: SocketAddr = if endpoint.is_ipv4() {
        (Ipv4Addr::UNSPECIFIED, 0).into()
    } else {
        (Ipv6Addr::UNSPECIFIED, 0).into()
    };
    let upstream = Arc::new(UdpSocket::bind(bind).await?);
    upstream.connect(endpoint).await?;
    let replies = upstream.clone();
    let task = tokio::spawn(async move {
        let mut buf = vec![0u8; 65536];
        loop {
            tokio::select! {
                r = tokio::time::timeout(UDP_IDLE, replies.recv(&mut buf)) => match r {
                    Ok(Ok(n)) => {
                        let _ = service.send_to(&buf[..n], client).await;
                    }
                    // An ICMP error from the endpoint: keep the flow until it idles out.
                    Ok(Err(_)) => {}
                    Err(_) => break,
                },
                _ = async { let _ = stop.wait_for(|s| *s).await; } => break,
            }
        }
        let mut f = lock(&flows);
        if f.get(&client).is_some_and(|f| f.endpoint == endpoint) {
            f.remove(&client);
        }
    });
    Ok(Flow {
        endpoint,
        upstream,
        task,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncReadExt;

    #[tokio::test]
    async fn specific_listener_wins_over_a_wildcard_on_the_same_port() {
        // 127.0.0.12 stands in for a cluster IP; the wildcard for `lb_address: 0.0.0.0`.
        let specific = bind_tcp(
            "127.0.0.12:0".parse().expect("addr"),
            ListenerKind::ClusterIp,
        )
        .expect("bind specific");
        let port = specific.local_addr().expect("addr").port();
        let wildcard = bind_tcp(
            SocketAddr::from((Ipv4Addr::UNSPECIFIED, port)),
            ListenerKind::LoadBalancer,
        )
        .expect("the wildcard coexists with the cluster IP");
        let serve = |l: TcpListener, tag: &'static [u8]| {
            tokio::spawn(async move {
                while let Ok((mut s, _)) = l.accept().await {
                    let _ = tokio::io::AsyncWriteExt::write_all(&mut s, tag).await;
                }
            })
        };
        let (a, b) = (serve(specific, b"S"), serve(wildcard, b"W"));
        let read = |ip: &'static str| async move {
            let mut s = TcpStream::connect((ip, port)).await.expect("connect");
            let mut tag = [0u8; 1];
            s.read_exact(&mut tag).await.expect("tag");
            tag[0]
        };
        for _ in 0..5 {
            assert_eq!(read("127.0.0.12").await, b'S');
            assert_eq!(read("127.0.0.1").await, b'W');
        }
        a.abort();
        b.abort();
    }

    #[tokio::test]
    async fn a_port_another_program_holds_is_reported_taken() {
        let other = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = other.local_addr().expect("addr");
        let err = bind_tcp(addr, ListenerKind::LoadBalancer).expect_err("taken");
        assert_eq!(err.kind(), std::io::ErrorKind::AddrInUse);
    }
}
