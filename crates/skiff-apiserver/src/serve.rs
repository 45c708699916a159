//! The HTTPS listener: TLS with optional client certificates, HTTP/1.1 and HTTP/2 (ALPN),
//! and a clear answer to plain HTTP on the TLS port.

use crate::auth::{PeerIdentity, UserInfo};
use crate::pki::Pki;
use anyhow::{Context, Result};
use axum::Router;
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls::RootCertStore;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;
use tower::ServiceExt;

/// Builds the TLS configuration: the serving certificate, and client certificates signed by
/// the cluster CA accepted (but not required: bearer tokens are the other way in).
pub fn tls_config(pki: &Pki) -> Result<Arc<rustls::ServerConfig>> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let certs: Vec<CertificateDer<'static>> =
        rustls_pemfile::certs(&mut pki.serving.cert_pem.as_bytes())
            .collect::<std::result::Result<_, _>>()
            .context("parsing the serving certificate")?;
    let key: PrivateKeyDer<'static> =
        rustls_pemfile::private_key(&mut pki.serving.key_pem.as_bytes())
            .context("parsing the serving key")?
            .context("no private key in the serving key file")?;
    let mut roots = RootCertStore::empty();
    for c in rustls_pemfile::certs(&mut pki.ca.cert_pem.as_bytes()) {
        roots.add(c.context("parsing the CA certificate")?)?;
    }
    let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone())
        .allow_unauthenticated()
        .build()
        .context("building the client certificate verifier")?;
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_client_cert_verifier(verifier)
        .with_single_cert(certs, key)
        .context("loading the serving certificate")?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// The user named by a verified client certificate: CN is the user, each O a group.
pub fn identity_from_cert(der: &[u8]) -> Option<UserInfo> {
    let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
    let subject = cert.subject();
    let name = subject
        .iter_common_name()
        .next()?
        .as_str()
        .ok()?
        .to_string();
    let groups = subject
        .iter_organization()
        .filter_map(|o| o.as_str().ok().map(String::from))
        .collect();
    Some(UserInfo {
        name,
        uid: String::new(),
        groups,
    })
}

/// Serves `router` over TLS on `listener` until `shutdown` resolves.
pub async fn serve_tls(
    listener: TcpListener,
    tls: Arc<rustls::ServerConfig>,
    router: Router,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) {
    let acceptor = TlsAcceptor::from(tls);
    tokio::pin!(shutdown);
    loop {
        let (tcp, _peer) = tokio::select! {
            _ = &mut shutdown => return,
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let _ = tcp.set_nodelay(true);
        let acceptor = acceptor.clone();
        let router = router.clone();
        tokio::spawn(async move {
            if let Err(e) = serve_connection(tcp, acceptor, router).await {
                tracing::debug!(error = %e, "connection ended");
            }
        });
    }
}

async fn serve_connection(
    mut tcp: tokio::net::TcpStream,
    acceptor: TlsAcceptor,
    router: Router,
) -> Result<()> {
    // A TLS ClientHello starts with the handshake record type 0x16; anything else is a
    // client speaking plain HTTP to the HTTPS port.
    let mut first = [0u8; 1];
    let n = tokio::time::timeout(Duration::from_secs(10), tcp.peek(&mut first)).await??;
    if n == 1 && first[0] != 0x16 {
        tcp.write_all(
            b"HTTP/1.0 400 Bad Request\r\n\r\nClient sent an HTTP request to an HTTPS server.\n",
        )
        .await?;
        // Closing with the request still unread would make the kernel send a reset, which
        // can destroy the answer before the client reads it: end our side, then drain theirs.
        tcp.shutdown().await?;
        let mut sink = [0u8; 4096];
        let drain = async {
            let mut total = 0usize;
            while let Ok(n) = tcp.read(&mut sink).await {
                total += n;
                if n == 0 || total > 64 * 1024 {
                    break;
                }
            }
        };
        let _ = tokio::time::timeout(Duration::from_secs(1), drain).await;
        return Ok(());
    }
    let tls = tokio::time::timeout(Duration::from_secs(10), acceptor.accept(tcp)).await??;
    let identity = PeerIdentity(
        tls.get_ref()
            .1
            .peer_certificates()
            .and_then(|c| c.first())
            .and_then(|c| identity_from_cert(c.as_ref())),
    );
    let svc = router.map_request(move |mut req: http::Request<hyper::body::Incoming>| {
        req.extensions_mut().insert(identity.clone());
        req
    });
    let svc = hyper_util::service::TowerToHyperService::new(svc);
    hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
        .serve_connection_with_upgrades(TokioIo::new(tls), svc)
        .await
        .map_err(|e| anyhow::anyhow!(e))?;
    Ok(())
}
