//! The userspace TCP proxy: accepts on a Service address and splices each connection to an endpoint.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::balancer::Balancer;

/// How long one endpoint may take to accept before the next one is tried.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
/// Endpoints tried for one connection before it is given up.
const MAX_TRIES: usize = 3;
/// Per direction and connection: big enough for bulk transfers, small enough that many
/// short connections stay cheap.
const BUFFER: usize = 32 * 1024;

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
