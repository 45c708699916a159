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
