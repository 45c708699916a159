//! `/portForward/{ns}/{pod}`: TCP connections into a pod's network namespace, carried over
//! SPDY/3.1 (`portforward.k8s.io`) either directly after an HTTP upgrade or tunnelled in
//! WebSocket binary messages (`SPDY/3.1+portforward.k8s.io`, kubectl's first choice since
//! 1.31). Each forwarded connection is a pair of client-initiated streams sharing a
//! `requestid`: an `error` stream (the node writes a message there if it cannot connect)
//! and a `data` stream (the bytes).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use http::{Request, Response, StatusCode, header};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::mpsc;

use super::spdy::{self, Frame, FrameReader, FrameWriter};
use super::websocket::{self, Message};
use super::{Body, Ctx, header_list, header_str, status_response, stream_error, wants_upgrade};

/// `X-Stream-Protocol-Version` of port-forward over SPDY.
pub const PROTOCOL: &str = "portforward.k8s.io";
/// WebSocket subprotocol of SPDY tunnelled in WebSocket.
pub const TUNNEL_PROTOCOL: &str = "SPDY/3.1+portforward.k8s.io";

const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Where the forwarded connections go.
#[derive(Clone)]
struct Target {
    pod: String,
    /// The pod's network namespace; `None` = the host's (host-network pods).
    netns: Option<PathBuf>,
}

pub(super) async fn port_forward(
    ctx: &Ctx,
    ns: &str,
    pod: &str,
    mut req: Request<Incoming>,
) -> Response<Body> {
    let spdy = wants_upgrade(&req, "SPDY/3.1")
        && header_list(&req, "x-stream-protocol-version")
            .iter()
            .any(|p| p == PROTOCOL);
    let tunnel = wants_upgrade(&req, "websocket")
        && header_list(&req, "sec-websocket-protocol")
            .iter()
            .any(|p| p == TUNNEL_PROTOCOL);
    if !spdy && !tunnel {
        return status_response(
            StatusCode::BAD_REQUEST,
            "BadRequest",
            "port-forward needs an upgrade to SPDY/3.1 (portforward.k8s.io)",
        );
    }
    let key = header_str(&req, "sec-websocket-key").map(str::to_string);
    let netns = match ctx.lookup.pod_netns(ns, pod) {
        Ok(n) => n,
        Err(e) => return stream_error(e),
    };
    let target = Target {
        pod: format!("{ns}/{pod}"),
        netns,
    };
    let on_upgrade = hyper::upgrade::on(&mut req);
    let mut r = Response::new(super::full(""));
    *r.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let h = r.headers_mut();
    h.insert(
        header::CONNECTION,
        header::HeaderValue::from_static("Upgrade"),
    );
    if spdy {
        h.insert(
            header::UPGRADE,
            header::HeaderValue::from_static("SPDY/3.1"),
        );
        h.insert(
            "x-stream-protocol-version",
            header::HeaderValue::from_static(PROTOCOL),
        );
        tokio::spawn(async move {
            match on_upgrade.await {
                Ok(up) => session(TokioIo::new(up), target).await,
                Err(e) => tracing::debug!(error = %e, "port-forward upgrade failed"),
            }
        });
    } else {
        let Some(key) = key else {
            return status_response(
                StatusCode::BAD_REQUEST,
                "BadRequest",
                "missing Sec-WebSocket-Key",
            );
        };
        h.insert(
            header::UPGRADE,
            header::HeaderValue::from_static("websocket"),
        );
        if let Ok(v) = header::HeaderValue::from_str(&websocket::accept_key(&key)) {
            h.insert("sec-websocket-accept", v);
        }
        h.insert(
            "sec-websocket-protocol",
            header::HeaderValue::from_static(TUNNEL_PROTOCOL),
        );
        tokio::spawn(async move {
            match on_upgrade.await {
                Ok(up) => {
                    let (ours, theirs) = tokio::io::duplex(256 * 1024);
                    tokio::spawn(bridge_websocket(TokioIo::new(up), theirs));
                    session(ours, target).await;
                }
                Err(e) => tracing::debug!(error = %e, "port-forward upgrade failed"),
            }
        });
    }
    r
}

/// Carries a byte stream in WebSocket binary messages (both ways) for the SPDY tunnel.
async fn bridge_websocket<W, P>(ws: W, pipe: P)
where
    W: AsyncRead + AsyncWrite + Send + 'static,
    P: AsyncRead + AsyncWrite + Send + 'static,
{
    let (ws_rd, ws_wr) = tokio::io::split(ws);
    let (mut pipe_rd, mut pipe_wr) = tokio::io::split(pipe);
    let (tx, writer) = super::spawn_writer(ws_wr, 64);
    let tx_out = tx.clone();
    let outbound = tokio::spawn(async move {
        let mut buf = vec![0u8; 32 * 1024];
        loop {
            match pipe_rd.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    let frame = websocket::encode_frame(websocket::OP_BINARY, &buf[..n], None);
                    if tx_out.send(frame).await.is_err() {
                        return;
                    }
                }
            }
        }
        let close = websocket::encode_frame(websocket::OP_CLOSE, &1000u16.to_be_bytes(), None);
        let _ = tx_out.send(close).await;
    });
    let mut reader = websocket::Reader::new(ws_rd);
    loop {
        match reader.next().await {
            Ok(Some(Message::Binary(d) | Message::Text(d))) => {
                if pipe_wr.write_all(&d).await.is_err() {
                    break;
                }
            }
            Ok(Some(Message::Ping(p))) => {
                let _ = tx
                    .send(websocket::encode_frame(websocket::OP_PONG, &p, None))
                    .await;
            }
            Ok(Some(Message::Pong(_))) => {}
            Ok(Some(Message::Close(_)) | None) | Err(_) => break,
        }
    }
    let _ = pipe_wr.shutdown().await;
    let _ = outbound.await;
    drop(tx);
    let _ = writer.await;
}

/// The two streams of one forwarded connection, as they arrive.
#[derive(Default)]
struct Pair {
    error: Option<u32>,
    data: Option<u32>,
    port: Option<u16>,
}

/// Serves one SPDY connection until the client goes away.
async fn session<IO>(io: IO, target: Target)
where
    IO: AsyncRead + AsyncWrite + Send + 'static,
{
    let (rd, wr) = tokio::io::split(io);
    let (tx, writer) = super::spawn_writer(wr, 256);
    let mut reader = FrameReader::new(rd);
    let mut frames = FrameWriter::new();
    let mut inbound: HashMap<u32, mpsc::Sender<Vec<u8>>> = HashMap::new();
    let mut pending: HashMap<String, Pair> = HashMap::new();
    let mut inbound_rx: HashMap<u32, mpsc::Receiver<Vec<u8>>> = HashMap::new();
    let mut forwards: HashMap<u32, tokio::task::JoinHandle<()>> = HashMap::new();
    let mut last_stream = 0;
    loop {
        let frame = match reader.next().await {
            Ok(Some(f)) => f,
            Ok(None) => break,
            Err(e) => {
                tracing::debug!(error = %e, "port-forward connection");
                break;
            }
        };
        match frame {
            Frame::SynStream {
                stream_id,
                flags,
                headers,
            } => {
                last_stream = stream_id;
                let kind = Frame::header(&headers, "streamtype").unwrap_or_default();
                let port = Frame::header(&headers, "port").and_then(|p| p.parse::<u16>().ok());
                if !matches!(kind.as_str(), "error" | "data") || port.is_none_or(|p| p == 0) {
                    let _ = tx
                        .send(FrameWriter::rst_stream(stream_id, spdy::RST_PROTOCOL_ERROR))
                        .await;
                    continue;
                }
                if tx.send(frames.syn_reply(stream_id, 0, &[])).await.is_err() {
                    break;
                }
                // Without a requestid, the kubelet pairs a data stream with the error
                // stream created just before it.
                let request = Frame::header(&headers, "requestid").unwrap_or_else(|| {
                    match kind.as_str() {
                        "data" => stream_id.saturating_sub(2),
                        _ => stream_id,
                    }
                    .to_string()
                });
                let pair = pending.entry(request.clone()).or_default();
                pair.port = port;
                if kind == "error" {
                    pair.error = Some(stream_id);
                } else {
                    pair.data = Some(stream_id);
                    let (in_tx, in_rx) = mpsc::channel(16);
                    if flags & spdy::FLAG_FIN == 0 {
                        inbound.insert(stream_id, in_tx);
                    }
                    inbound_rx.insert(stream_id, in_rx);
                }
                if let Some(Pair {
                    error: Some(error),
                    data: Some(data),
                    port: Some(port),
                }) = pending.get(&request)
                {
                    let (error, data, port) = (*error, *data, *port);
                    pending.remove(&request);
                    let Some(in_rx) = inbound_rx.remove(&data) else {
                        continue;
                    };
                    let task = tokio::spawn(forward(
                        target.clone(),
                        port,
                        error,
                        data,
                        in_rx,
                        tx.clone(),
                    ));
                    forwards.retain(|_, t| !t.is_finished());
                    forwards.insert(data, task);
                }
            }
            Frame::Data {
                stream_id,
                flags,
                data,
            } => {
                if !data.is_empty()
                    && let Some(s) = inbound.get(&stream_id)
                    && s.send(data).await.is_err()
                {
                    inbound.remove(&stream_id);
                }
                if flags & spdy::FLAG_FIN != 0 {
                    inbound.remove(&stream_id);
                }
            }
            Frame::RstStream { stream_id, .. } => {
                inbound.remove(&stream_id);
                inbound_rx.remove(&stream_id);
                if let Some(t) = forwards.remove(&stream_id) {
                    t.abort();
                }
            }
            Frame::Ping(id) => {
                let _ = tx.send(FrameWriter::ping(id)).await;
            }
            Frame::GoAway { .. } => break,
            Frame::SynReply { .. } | Frame::Headers { .. } | Frame::Other(_) => {}
        }
    }
    for (_, t) in forwards {
        t.abort();
    }
    let _ = tx.send(FrameWriter::goaway(last_stream)).await;
    drop(tx);
    let _ = writer.await;
}

/// Connects to `port` in the pod and copies both ways; a failure is reported on the error
/// stream, worded like the kubelet.
async fn forward(
    target: Target,
    port: u16,
    error_stream: u32,
    data_stream: u32,
    mut inbound: mpsc::Receiver<Vec<u8>>,
    tx: mpsc::Sender<Vec<u8>>,
) {
    let conn = match connect(&target, port).await {
        Ok(c) => c,
        Err(e) => {
            let message = format!(
                "error forwarding port {port} to pod {}: failed to connect to localhost:{port} inside the pod's network namespace: {e}",
                target.pod
            );
            let _ = tx
                .send(FrameWriter::data(error_stream, 0, message.as_bytes()))
                .await;
            let _ = tx
                .send(FrameWriter::data(error_stream, spdy::FLAG_FIN, &[]))
                .await;
            let _ = tx
                .send(FrameWriter::data(data_stream, spdy::FLAG_FIN, &[]))
                .await;
            return;
        }
    };
    let (mut from_pod, mut to_pod) = conn.into_split();
    let upstream = tokio::spawn(async move {
        while let Some(chunk) = inbound.recv().await {
            if to_pod.write_all(&chunk).await.is_err() {
                return;
            }
        }
        // The client closed its side: pass the half-close on.
        let _ = to_pod.shutdown().await;
    });
    let mut buf = vec![0u8; 32 * 1024];
    loop {
        match from_pod.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                if tx
                    .send(FrameWriter::data(data_stream, 0, &buf[..n]))
                    .await
                    .is_err()
                {
                    upstream.abort();
                    return;
                }
            }
        }
    }
    let _ = tx
        .send(FrameWriter::data(data_stream, spdy::FLAG_FIN, &[]))
        .await;
    // kubectl waits for the error stream to end before it closes its local connection.
    let _ = tx
        .send(FrameWriter::data(error_stream, spdy::FLAG_FIN, &[]))
        .await;
    let _ = upstream.await;
}

/// A TCP connection to `localhost:port` as the pod sees it.
async fn connect(target: &Target, port: u16) -> std::io::Result<TcpStream> {
    let v4 = SocketAddr::from(([127, 0, 0, 1], port));
    let v6 = SocketAddr::from((std::net::Ipv6Addr::LOCALHOST, port));
    let Some(netns) = target.netns.clone() else {
        return match tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(v4)).await {
            Ok(Ok(s)) => Ok(s),
            _ => tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(v6))
                .await
                .map_err(|_| std::io::Error::from(std::io::ErrorKind::TimedOut))?,
        };
    };
    // A socket stays in the namespace it was created in: create it on a thread of its own
    // that enters the pod's namespace and then ends (never on a pooled thread).
    let (done, result) = tokio::sync::oneshot::channel();
    std::thread::Builder::new()
        .name("portforward-netns".into())
        .spawn(move || {
            let connect = || -> std::io::Result<std::net::TcpStream> {
                let ns = std::fs::File::open(&netns)?;
                rustix::thread::move_into_link_name_space(
                    std::os::fd::AsFd::as_fd(&ns),
                    Some(rustix::thread::LinkNameSpaceType::Network),
                )?;
                std::net::TcpStream::connect_timeout(&v4, CONNECT_TIMEOUT)
                    .or_else(|_| std::net::TcpStream::connect_timeout(&v6, CONNECT_TIMEOUT))
            };
            let _ = done.send(connect());
        })?;
    let stream = result
        .await
        .map_err(|_| std::io::Error::other("port-forward connect thread ended"))??;
    stream.set_nonblocking(true)?;
    TcpStream::from_std(stream)
}
