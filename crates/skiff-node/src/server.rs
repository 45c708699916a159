//! The node's streaming HTTPS server (the kubelet's port 10250): container logs, exec and
//! port-forward for the API server, which authenticates with a client certificate.
//!
//! - [`tls`]: serving certificate and the client-certificate check.
//! - [`logs`]: `GET /containerLogs/{ns}/{pod}/{container}`.
//! - [`exec`]: `/exec/...` and `/attach/{ns}/{pod}/{container}` over WebSocket
//!   (`v5`/`v4.channel.k8s.io`) or SPDY/3.1.
//! - [`portforward`]: `/portForward/{ns}/{pod}` over SPDY/3.1 ([`spdy`]).
//! - [`websocket`]: the RFC 6455 framing the exec protocol rides on.

mod exec;
mod logs;
mod portforward;
pub mod spdy;
mod tls;
pub mod websocket;

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response, StatusCode, header};
use http_body_util::BodyExt;
use http_body_util::combinators::BoxBody;
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use serde_json::json;
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;

use crate::streams::{ContainerLookup, StreamError};

pub use tls::{ClientIdentity, ServingCert};

/// The kubelet's default port for this server.
pub const DEFAULT_PORT: u16 = 10250;

/// Common name of the client certificate the API server presents (`--kubelet-client-certificate`).
pub const API_SERVER_CLIENT_CN: &str = "kube-apiserver-kubelet-client";

/// Group whose members may use every endpoint (as Kubernetes' `system:masters`).
pub const SYSTEM_MASTERS: &str = "system:masters";

/// Response bodies of this server.
pub type Body = BoxBody<Bytes, std::io::Error>;

/// Configuration of the node server (data, not behaviour).
#[derive(Clone)]
pub struct NodeServerConfig {
    /// Where to listen; port 0 picks a free one (tests). Default `0.0.0.0:10250`.
    pub bind: SocketAddr,
    /// PEM of the CA whose client certificates are accepted: the cluster CA, which signs
    /// the API server's kubelet client certificate.
    pub client_ca_pem: String,
    /// Serving certificate; `None` issues a self-signed one for `sans` (the API server does
    /// not verify it, like kube-apiserver without `--kubelet-certificate-authority`).
    pub serving: Option<ServingCert>,
    /// Names and addresses of the node for a self-signed serving certificate.
    pub sans: Vec<String>,
}

impl NodeServerConfig {
    pub fn new(client_ca_pem: impl Into<String>) -> Self {
        NodeServerConfig {
            bind: SocketAddr::from(([0, 0, 0, 0], DEFAULT_PORT)),
            client_ca_pem: client_ca_pem.into(),
            serving: None,
            sans: vec!["localhost".into(), "127.0.0.1".into()],
        }
    }
}

/// Why the server could not start.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error("TLS setup: {0}")]
    Tls(String),
    #[error("listening on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
}

/// A running node server.
pub struct NodeServer {
    addr: SocketAddr,
    shutdown: tokio::sync::watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

/// What every request handler shares.
struct Ctx {
    lookup: Arc<dyn ContainerLookup>,
}

impl NodeServer {
    /// Listens and serves until [`NodeServer::shutdown`]; returns once the port is bound.
    /// The agent publishes `addr().port()` as `Node.status.daemonEndpoints.kubeletEndpoint.Port`.
    pub async fn start(
        config: NodeServerConfig,
        lookup: Arc<dyn ContainerLookup>,
    ) -> Result<NodeServer, ServerError> {
        let tls = tls::server_config(&config)?;
        let listener =
            TcpListener::bind(config.bind)
                .await
                .map_err(|source| ServerError::Bind {
                    addr: config.bind,
                    source,
                })?;
        let addr = listener.local_addr().map_err(|source| ServerError::Bind {
            addr: config.bind,
            source,
        })?;
        let (shutdown, mut stop) = tokio::sync::watch::channel(false);
        let ctx = Arc::new(Ctx { lookup });
        let acceptor = TlsAcceptor::from(tls);
        let task = tokio::spawn(async move {
            loop {
                let (tcp, _) = tokio::select! {
                    _ = async { let _ = stop.wait_for(|s| *s).await; } => return,
                    accepted = listener.accept() => match accepted {
                        Ok(a) => a,
                        Err(e) => {
                            tracing::warn!(error = %e, "node server accept failed");
                            tokio::time::sleep(Duration::from_millis(50)).await;
                            continue;
                        }
                    },
                };
                let _ = tcp.set_nodelay(true);
                let (acceptor, ctx) = (acceptor.clone(), ctx.clone());
                tokio::spawn(async move {
                    if let Err(e) = serve_connection(tcp, acceptor, ctx).await {
                        tracing::debug!(error = %e, "node server connection ended");
                    }
                });
            }
        });
        Ok(NodeServer {
            addr,
            shutdown,
            task,
        })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Stops accepting connections (streams already open run to their end).
    pub async fn shutdown(self) {
        let _ = self.shutdown.send(true);
        let _ = self.task.await;
    }
}

async fn serve_connection(
    tcp: tokio::net::TcpStream,
    acceptor: TlsAcceptor,
    ctx: Arc<Ctx>,
) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    let stream = tokio::time::timeout(Duration::from_secs(10), acceptor.accept(tcp)).await??;
    let identity = stream
        .get_ref()
        .1
        .peer_certificates()
        .and_then(|c| c.first())
        .and_then(|c| tls::identity_from_cert(c.as_ref()));
    let service = hyper::service::service_fn(move |req: Request<Incoming>| {
        let (ctx, identity) = (ctx.clone(), identity.clone());
        async move { Ok::<_, Infallible>(handle(ctx, identity, req).await) }
    });
    // A client that never finishes its request head must not hold a connection forever.
    hyper::server::conn::http1::Builder::new()
        .timer(hyper_util::rt::TokioTimer::new())
        .header_read_timeout(Duration::from_secs(30))
        .serve_connection(TokioIo::new(stream), service)
        .with_upgrades()
        .await?;
    Ok(())
}

async fn handle(
    ctx: Arc<Ctx>,
    identity: Option<ClientIdentity>,
    req: Request<Incoming>,
) -> Response<Body> {
    let Some(who) = identity else {
        return status_response(StatusCode::UNAUTHORIZED, "Unauthorized", "Unauthorized");
    };
    if !who.may_stream() {
        return status_response(
            StatusCode::FORBIDDEN,
            "Forbidden",
            &format!(
                "Forbidden (user={}, verb={}, resource=nodes, subresource=proxy)",
                who.name,
                req.method().as_str().to_lowercase()
            ),
        );
    }
    let path = req.uri().path().to_string();
    let segs: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    if segs.iter().any(|s| !valid_segment(s)) {
        return status_response(StatusCode::NOT_FOUND, "NotFound", "404 page not found");
    }
    let query = Query::parse(req.uri().query());
    let method = req.method().clone();
    match (method.as_str(), segs.as_slice()) {
        ("GET", ["healthz"]) => text_response(StatusCode::OK, "ok"),
        ("GET", ["containerLogs", ns, pod, container]) => {
            logs::container_logs(&ctx, ns, pod, container, &query).await
        }
        ("GET" | "POST", ["exec", ns, pod, container]) => {
            let (ns, pod, container) = (ns.to_string(), pod.to_string(), container.to_string());
            exec::exec(&ctx, &ns, &pod, &container, &query, req, false).await
        }
        ("GET" | "POST", ["attach", ns, pod, container]) => {
            let (ns, pod, container) = (ns.to_string(), pod.to_string(), container.to_string());
            exec::exec(&ctx, &ns, &pod, &container, &query, req, true).await
        }
        ("GET" | "POST", ["portForward", ns, pod]) => {
            let (ns, pod) = (ns.to_string(), pod.to_string());
            portforward::port_forward(&ctx, &ns, &pod, req).await
        }
        (_, ["containerLogs" | "exec" | "attach" | "portForward", ..])
            if !matches!(segs.len(), 3 | 4) =>
        {
            status_response(StatusCode::NOT_FOUND, "NotFound", "404 page not found")
        }
        (_, ["containerLogs" | "exec" | "attach" | "portForward", ..]) => status_response(
            StatusCode::METHOD_NOT_ALLOWED,
            "MethodNotAllowed",
            "method not allowed",
        ),
        _ => status_response(StatusCode::NOT_FOUND, "NotFound", "404 page not found"),
    }
}

/// Path segments are Kubernetes names: nothing that could escape or confuse a lookup.
fn valid_segment(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 253
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '_'))
        && s != "."
        && s != ".."
}

/// Query parameters; `command` repeats.
pub(crate) struct Query(HashMap<String, Vec<String>>);

impl Query {
    fn parse(q: Option<&str>) -> Query {
        let mut map: HashMap<String, Vec<String>> = HashMap::new();
        for (k, v) in url::form_urlencoded::parse(q.unwrap_or_default().as_bytes()) {
            map.entry(k.into_owned()).or_default().push(v.into_owned());
        }
        Query(map)
    }
    fn get(&self, k: &str) -> Option<&str> {
        self.0
            .get(k)
            .and_then(|v| v.first())
            .map(String::as_str)
            .filter(|v| !v.is_empty())
    }
    fn all(&self, k: &str) -> &[String] {
        self.0.get(k).map(Vec::as_slice).unwrap_or_default()
    }
    /// Like Go's strconv.ParseBool; a bare `?follow` counts as true, as the kubelet's decoder does.
    fn flag(&self, k: &str) -> bool {
        match self.0.get(k).and_then(|v| v.first()) {
            Some(v) => matches!(v.as_str(), "" | "1" | "t" | "T" | "true" | "TRUE" | "True"),
            None => false,
        }
    }
    fn int(&self, k: &str) -> Result<Option<i64>, String> {
        self.get(k)
            .map(|v| {
                v.parse::<i64>()
                    .map_err(|_| format!("invalid value for {k}: {v:?}"))
            })
            .transpose()
    }
}

fn full(bytes: impl Into<Bytes>) -> Body {
    http_body_util::Full::new(bytes.into())
        .map_err(|never| match never {})
        .boxed()
}

fn text_response(code: StatusCode, text: &str) -> Response<Body> {
    let mut r = Response::new(full(text.to_string()));
    *r.status_mut() = code;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    r
}

/// A `metav1.Status` failure: the API server passes it on to the client as it is.
pub(crate) fn status_response(code: StatusCode, reason: &str, message: &str) -> Response<Body> {
    let body = json!({
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": message,
        "reason": reason,
        "code": code.as_u16(),
    });
    let mut r = Response::new(full(serde_json::to_vec(&body).unwrap_or_default()));
    *r.status_mut() = code;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("application/json"),
    );
    r
}

fn stream_error(e: StreamError) -> Response<Body> {
    match e {
        StreamError::NotFound(m) => status_response(StatusCode::NOT_FOUND, "NotFound", &m),
        StreamError::BadRequest(m) => status_response(StatusCode::BAD_REQUEST, "BadRequest", &m),
        StreamError::Internal(m) => {
            status_response(StatusCode::INTERNAL_SERVER_ERROR, "InternalError", &m)
        }
    }
}

/// The value of a request header, if it is text.
fn header_str<'a>(req: &'a Request<Incoming>, name: &str) -> Option<&'a str> {
    req.headers().get(name).and_then(|v| v.to_str().ok())
}

/// Whether the request asks to switch to `protocol` (`websocket`, `SPDY/3.1`).
fn wants_upgrade(req: &Request<Incoming>, protocol: &str) -> bool {
    let connection_upgrade = req
        .headers()
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| t.trim().eq_ignore_ascii_case("upgrade"));
    connection_upgrade
        && header_str(req, "upgrade").is_some_and(|u| {
            u.split(',')
                .any(|p| p.trim().eq_ignore_ascii_case(protocol))
        })
}

/// One task owns the write half of an upgraded connection: frames from every stream are
/// queued to it (bounded, so a slow client slows the producers) and written whole; when
/// every sender is gone the connection is shut down.
fn spawn_writer<W>(
    mut wr: W,
    queue: usize,
) -> (
    tokio::sync::mpsc::Sender<Vec<u8>>,
    tokio::task::JoinHandle<()>,
)
where
    W: tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    use tokio::io::AsyncWriteExt;
    let (tx, mut rx) = tokio::sync::mpsc::channel::<Vec<u8>>(queue);
    let task = tokio::spawn(async move {
        while let Some(frame) = rx.recv().await {
            if wr.write_all(&frame).await.is_err() || wr.flush().await.is_err() {
                return;
            }
        }
        let _ = wr.shutdown().await;
    });
    (tx, task)
}

/// Every value of a comma-separated, possibly repeated header.
fn header_list(req: &Request<Incoming>, name: &str) -> Vec<String> {
    req.headers()
        .get_all(name)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .collect()
}

#[cfg(test)]
mod tests;
