//! The Kubernetes HTTP(S) API server: routing, authentication, discovery, OpenAPI and the
//! generic REST handlers over the store.

pub mod admission;
pub mod alloc;
pub mod auth;
pub mod discovery;
pub mod handlers;
pub mod pki;
pub mod proxy;
pub mod request;
pub mod response;
pub mod serve;
pub mod storage;
pub mod watch;

use auth::{PeerIdentity, SharedAuthorizer, TokenAuthenticator, UserInfo};
use axum::Router;
use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use skiff_api::ApiError;
use skiff_store::Store;
use std::net::Ipv4Addr;
use std::sync::Arc;
use std::time::Duration;

/// Configuration of the API server (data, not behaviour).
#[derive(Debug, Clone)]
pub struct ApiConfig {
    /// Service ClusterIP range (first address is the `kubernetes` Service).
    pub service_cidr: (Ipv4Addr, u8),
    /// NodePort range, inclusive.
    pub node_port_range: (u16, u16),
    /// Address clients should use, advertised in discovery (`host:port`).
    pub advertise_address: String,
    /// Largest request body accepted.
    pub max_body_bytes: usize,
    /// How often a watch with `allowWatchBookmarks` gets a BOOKMARK.
    pub bookmark_interval: Duration,
    /// Default and upper bound of watch duration when the client gives no `timeoutSeconds`.
    pub max_watch: Duration,
    /// The client certificate presented to nodes for logs/exec/port-forward (CN
    /// `kube-apiserver-kubelet-client`, see `Pki::issue_kubelet_client`); `None` answers
    /// those subresources with 503.
    pub kubelet_client: Option<pki::CertAndKey>,
}

impl Default for ApiConfig {
    fn default() -> Self {
        ApiConfig {
            service_cidr: (Ipv4Addr::new(10, 43, 0, 0), 16),
            node_port_range: (30000, 32767),
            advertise_address: "127.0.0.1:6443".into(),
            max_body_bytes: 3 * 1024 * 1024,
            bookmark_interval: Duration::from_secs(10),
            max_watch: Duration::from_secs(1800),
            kubelet_client: None,
        }
    }
}

/// Shared state of the API server.
pub struct ApiServer {
    pub store: Arc<dyn Store>,
    pub tokens: TokenAuthenticator,
    pub authorizer: SharedAuthorizer,
    pub config: ApiConfig,
    /// Serialises ClusterIP / NodePort allocation.
    pub alloc_lock: tokio::sync::Mutex<()>,
    /// Encoded watch events shared by all watchers.
    pub watch_encoded: Arc<watch::EncodedEvents>,
    /// TLS client configuration towards nodes, built from `config.kubelet_client` on first use.
    kubelet_tls: std::sync::OnceLock<Result<Arc<rustls::ClientConfig>, String>>,
}

impl ApiServer {
    pub fn new(
        store: Arc<dyn Store>,
        tokens: TokenAuthenticator,
        authorizer: SharedAuthorizer,
        config: ApiConfig,
    ) -> Arc<Self> {
        Arc::new(ApiServer {
            store,
            tokens,
            authorizer,
            config,
            alloc_lock: tokio::sync::Mutex::new(()),
            watch_encoded: Arc::default(),
            kubelet_tls: std::sync::OnceLock::new(),
        })
    }

    /// The TLS client configuration for talking to nodes.
    pub fn kubelet_tls(&self) -> Result<Arc<rustls::ClientConfig>, ApiError> {
        let Some(cert) = &self.config.kubelet_client else {
            return Err(ApiError::ServiceUnavailable {
                message: "the API server has no client certificate for nodes".into(),
            });
        };
        self.kubelet_tls
            .get_or_init(|| proxy::kubelet_client_config(cert))
            .clone()
            .map_err(ApiError::internal)
    }
}

/// The API's HTTP routes; transport (TLS, client certificates) is added by `serve`.
pub fn router(api: Arc<ApiServer>) -> Router {
    Router::new()
        .route("/healthz", get(health))
        .route("/livez", get(health))
        .route("/readyz", get(health))
        .route("/version", get(discovery::version))
        .route("/api", get(discovery::api_versions))
        .route("/apis", get(discovery::api_groups))
        .route("/openapi/v3", get(discovery::openapi_v3_root))
        .route("/openapi/v3/{*path}", get(discovery::openapi_v3_doc))
        .route("/openapi/v2", get(discovery::openapi_v2))
        .fallback(handlers::resource)
        .layer(axum::middleware::from_fn_with_state(
            api.clone(),
            authenticate,
        ))
        .with_state(api)
}

async fn health() -> &'static str {
    "ok"
}

/// Paths anonymous clients may read (as Kubernetes' `system:public-info-viewer`).
fn is_public(path: &str) -> bool {
    matches!(path, "/healthz" | "/livez" | "/readyz")
}

async fn authenticate(State(api): State<Arc<ApiServer>>, mut req: Request, next: Next) -> Response {
    let path = req.uri().path().to_string();
    let user = bearer_user(&api, &req).or_else(|| {
        req.extensions()
            .get::<PeerIdentity>()
            .and_then(|p| p.0.clone())
    });
    match user {
        Some(u) => {
            req.extensions_mut().insert(u);
            next.run(req).await
        }
        None if is_public(&path) => next.run(req).await,
        None => response::error(ApiError::Unauthorized),
    }
}

fn bearer_user(api: &ApiServer, req: &Request) -> Option<UserInfo> {
    let header = req
        .headers()
        .get(http::header::AUTHORIZATION)?
        .to_str()
        .ok()?;
    let token = header
        .strip_prefix("Bearer ")
        .or_else(|| header.strip_prefix("bearer "))?;
    api.tokens.authenticate(token.trim())
}

impl IntoResponse for response::Failure {
    fn into_response(self) -> Response {
        response::error(self.0)
    }
}
