//! The client every component uses to reach the API: kube-rs's `Client` over any tower
//! service, so the same controller code runs in-process or against a remote server.

pub use kube;
pub use kube::Client;

use kube::client::Body;
use tower::BoxError;

/// A client over a tower service that speaks the Kubernetes HTTP API (for example the API
/// server's router, called in-process without a network hop).
pub fn from_service<S, B>(service: S) -> Client
where
    S: tower::Service<http::Request<Body>, Response = http::Response<B>> + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Into<BoxError>,
    B: http_body::Body<Data = bytes::Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    Client::new(service, "default")
}

/// Why a remote client could not be built.
#[derive(Debug, thiserror::Error)]
pub enum RemoteError {
    #[error("invalid server URL {0:?}")]
    Url(String),
    #[error("the CA file holds no PEM certificate")]
    NoCertificate,
    #[error(transparent)]
    Kube(#[from] kube::Error),
}

/// A client for a remote API server at `server` (`https://host:port`) that trusts only the
/// cluster CA `ca_pem` and authenticates with a bearer `token` (used by `skiff agent`).
pub fn remote(server: &str, token: &str, ca_pem: &[u8]) -> Result<Client, RemoteError> {
    let url: http::Uri = server
        .parse()
        .map_err(|_| RemoteError::Url(server.to_string()))?;
    let certs: Vec<Vec<u8>> = rustls_pemfile::certs(&mut &ca_pem[..])
        .filter_map(Result::ok)
        .map(|c| c.to_vec())
        .collect();
    if certs.is_empty() {
        return Err(RemoteError::NoCertificate);
    }
    let mut config = kube::Config::new(url);
    config.root_cert = Some(certs);
    config.auth_info.token = Some(token.to_string().into());
    config.default_namespace = "default".into();
    Ok(Client::try_from(config)?)
}
