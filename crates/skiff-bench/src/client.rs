//! A minimal HTTPS client for the benchmark: TLS to 127.0.0.1 with the cluster CA, HTTP/2
//! connections (ALPN h2) multiplexing many requests, spread round-robin over a small pool.

use anyhow::{Context, Result, bail};
use bytes::Bytes;
use http::{Method, Request, Response, StatusCode, header};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::client::conn::http2::SendRequest;
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls::pki_types::{CertificateDer, IpAddr as PkiIp, ServerName};
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

/// TLS settings that trust only the cluster CA and speak HTTP/2.
pub fn tls_config(ca_pem: &[u8]) -> Result<Arc<rustls::ClientConfig>> {
    let mut roots = rustls::RootCertStore::empty();
    let certs: Vec<CertificateDer<'static>> = rustls_pemfile::certs(&mut &ca_pem[..])
        .collect::<std::result::Result<_, _>>()
        .context("parsing the CA certificate")?;
    if certs.is_empty() {
        bail!("no certificate in the CA file");
    }
    for c in certs {
        roots.add(c).context("adding the CA certificate")?;
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"h2".to_vec()];
    Ok(Arc::new(config))
}

/// Where the API is and how to authenticate to it.
#[derive(Clone)]
pub struct Endpoint {
    pub addr: SocketAddr,
    pub tls: Arc<rustls::ClientConfig>,
    /// `Bearer <token>`, or None for anonymous requests (health checks).
    pub authorization: Option<http::HeaderValue>,
}

impl Endpoint {
    /// Reads the CA and the admin token that `skiff up` wrote into its data dir.
    pub fn from_data_dir(addr: SocketAddr, data_dir: &Path) -> Result<Self> {
        let ca = std::fs::read(data_dir.join("pki/ca.crt")).context("reading pki/ca.crt")?;
        let tokens =
            std::fs::read_to_string(data_dir.join("tokens.csv")).context("reading tokens.csv")?;
        let token = tokens
            .lines()
            .map(str::trim)
            .find(|l| !l.is_empty() && !l.starts_with('#'))
            .and_then(|l| l.split(',').next())
            .context("no token in tokens.csv")?;
        Ok(Endpoint {
            addr,
            tls: tls_config(&ca)?,
            authorization: Some(
                format!("Bearer {token}")
                    .parse()
                    .context("token is not a valid header value")?,
            ),
        })
    }

    /// Opens one TLS connection and runs HTTP/2 on it.
    pub async fn connect(&self) -> Result<Conn> {
        let tcp = TcpStream::connect(self.addr).await?;
        tcp.set_nodelay(true)?;
        let name = ServerName::IpAddress(PkiIp::from(self.addr.ip()));
        let tls = TlsConnector::from(self.tls.clone())
            .connect(name, tcp)
            .await
            .context("TLS handshake")?;
        if tls.get_ref().1.alpn_protocol() != Some(b"h2") {
            bail!("the server did not agree to HTTP/2");
        }
        let (send, conn) = hyper::client::conn::http2::Builder::new(TokioExecutor::new())
            .initial_stream_window_size(1 << 20)
            .initial_connection_window_size(8 << 20)
            .handshake(TokioIo::new(tls))
            .await
            .context("HTTP/2 handshake")?;
        tokio::spawn(async move {
            let _ = conn.await;
        });
        Ok(Conn {
            send,
            base: format!("https://{}", self.addr),
            authorization: self.authorization.clone(),
        })
    }
}

/// One HTTP/2 connection; clones share it (each request is its own stream).
#[derive(Clone)]
pub struct Conn {
    send: SendRequest<Full<Bytes>>,
    base: String,
    authorization: Option<http::HeaderValue>,
}

impl Conn {
    /// Starts a request and returns the response head with a streaming body.
    pub async fn start(
        &self,
        method: Method,
        path: &str,
        body: Option<Bytes>,
    ) -> Result<Response<Incoming>> {
        let mut req = Request::builder()
            .method(method)
            .uri(format!("{}{}", self.base, path))
            .header(header::ACCEPT, "application/json");
        if let Some(auth) = &self.authorization {
            req = req.header(header::AUTHORIZATION, auth.clone());
        }
        if body.is_some() {
            req = req.header(header::CONTENT_TYPE, "application/json");
        }
        let req = req.body(Full::new(body.unwrap_or_default()))?;
        let mut send = self.send.clone();
        send.ready().await.context("connection closed")?;
        Ok(send.send_request(req).await?)
    }

    /// A whole request: status and body.
    pub async fn call(
        &self,
        method: Method,
        path: &str,
        body: Option<Bytes>,
    ) -> Result<(StatusCode, Bytes)> {
        let resp = self.start(method, path, body).await?;
        let status = resp.status();
        let body = resp.into_body().collect().await?.to_bytes();
        Ok((status, body))
    }
}

/// Several connections used in turn, so that load spreads over the server's accept and
/// connection tasks as it does with several clients.
#[derive(Clone)]
pub struct Pool {
    conns: Arc<Vec<Conn>>,
    next: Arc<AtomicUsize>,
}

impl Pool {
    pub async fn connect(endpoint: &Endpoint, connections: usize) -> Result<Self> {
        let mut conns = Vec::with_capacity(connections.max(1));
        for _ in 0..connections.max(1) {
            conns.push(endpoint.connect().await?);
        }
        Ok(Pool {
            conns: Arc::new(conns),
            next: Arc::new(AtomicUsize::new(0)),
        })
    }

    /// The connection for the next caller.
    pub fn conn(&self) -> &Conn {
        let i = self.next.fetch_add(1, Ordering::Relaxed) % self.conns.len();
        &self.conns[i]
    }
}
