//! Pulls images from OCI distribution (v2) registries into the local store: auth, TLS, digests, pull policies.

use std::fmt;
use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode, header};
use hyper_util::rt::TokioIo;
use oci_spec::image::{Descriptor, ImageConfiguration, ImageIndex, ImageManifest, MediaType};
use sha2::{Digest as _, Sha256};
use tokio::io::AsyncWriteExt;
use url::Url;

use super::unpack::{decompressed, remove_nofollow};
use super::{ImageError, ImageStore, Reference, ResolvedImage, host_arch, write_atomic};

/// Manifests (and indexes) larger than this are refused, as containerd does.
pub const MAX_MANIFEST_BYTES: usize = 4 << 20;
/// Redirects followed per request (blob GETs are often redirected to object storage).
pub const MAX_REDIRECTS: usize = 5;
const MAX_TOKEN_BYTES: usize = 1 << 20;
const USER_AGENT: &str = concat!("skiff/", env!("CARGO_PKG_VERSION"));

const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
const DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
const MANIFEST_ACCEPT: &str = "application/vnd.oci.image.index.v1+json, \
     application/vnd.oci.image.manifest.v1+json, \
     application/vnd.docker.distribution.manifest.list.v2+json, \
     application/vnd.docker.distribution.manifest.v2+json";

/// Registry credentials (from a pull secret or the command line).
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    pub username: String,
    pub password: String,
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Credentials")
            .field("username", &self.username)
            .field("password", &"<redacted>")
            .finish()
    }
}

impl Credentials {
    fn basic_header(&self) -> String {
        let raw = format!("{}:{}", self.username, self.password);
        format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(raw)
        )
    }
}

/// How to reach registries.
#[derive(Debug, Clone)]
pub struct PullOptions {
    pub credentials: Option<Credentials>,
    /// Registry hosts (`host` or `host:port`) spoken to over plain HTTP. Loopback registries
    /// (`localhost`, `127.0.0.0/8`, `[::1]`) always are, as Docker treats them.
    pub insecure_registries: Vec<String>,
    /// Speak plain HTTP to loopback registries (default `true`, as Docker does); `false`
    /// makes them use HTTPS like any other.
    pub plain_http_for_loopback: bool,
    /// PEM bundle of extra CA certificates trusted besides the system roots.
    pub ca_file: Option<PathBuf>,
    /// Limit for connecting, for response headers and for each pause in a body.
    pub timeout: Duration,
}

impl Default for PullOptions {
    fn default() -> Self {
        PullOptions {
            credentials: None,
            insecure_registries: Vec::new(),
            plain_http_for_loopback: true,
            ca_file: None,
            timeout: Duration::from_secs(60),
        }
    }
}

/// What a pull stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PulledImage {
    /// The normalised reference now naming the image in the store.
    pub reference: String,
    /// Digest of the (platform) image manifest stored.
    pub manifest_digest: String,
    /// The image ID (config digest).
    pub image_id: String,
    /// Blobs (config and layers) downloaded; the ones already stored are not.
    pub blobs_fetched: usize,
    pub bytes_fetched: u64,
}

/// The pod's `imagePullPolicy`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PullPolicy {
    Always,
    IfNotPresent,
    Never,
}

impl PullPolicy {
    /// Parses the API spelling (`Always`, `IfNotPresent`, `Never`).
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "Always" => Some(PullPolicy::Always),
            "IfNotPresent" => Some(PullPolicy::IfNotPresent),
            "Never" => Some(PullPolicy::Never),
            _ => None,
        }
    }

    /// The API server's default when a container sets none: `Always` for `:latest` (or no
    /// tag and no digest), else `IfNotPresent`.
    pub fn default_for(image: &str) -> Self {
        match Reference::parse(image) {
            Ok(r) if r.digest.is_none() && r.tag.as_deref() == Some(super::DEFAULT_TAG) => {
                PullPolicy::Always
            }
            _ => PullPolicy::IfNotPresent,
        }
    }
}

/// Errors of pulling.
#[derive(Debug, thiserror::Error)]
pub enum PullError {
    #[error("image {reference:?} not found: {message}")]
    NotFound { reference: String, message: String },
    #[error("unauthorized: {0}")]
    Unauthorized(String),
    #[error("container image {0:?} is not present with pull policy of Never")]
    NeverPull(String),
    #[error("registry {registry}: {message}")]
    Registry { registry: String, message: String },
    #[error("connecting to {registry}: {message}")]
    Transport { registry: String, message: String },
    #[error("manifest of {reference} exceeds {limit} bytes")]
    ManifestTooLarge { reference: String, limit: usize },
    #[error("unsupported: {0}")]
    Unsupported(String),
    #[error(transparent)]
    Image(#[from] ImageError),
}

impl PullError {
    /// The container `waiting.reason` the kubelet reports for this error.
    pub fn reason(&self) -> &'static str {
        match self {
            PullError::NeverPull(_) => "ErrImageNeverPull",
            PullError::Image(ImageError::InvalidReference { .. }) => "InvalidImageName",
            _ => "ErrImagePull",
        }
    }
}

/// Pulls `reference` (tag or digest) into `store` under its normalised name. Blobs already
/// stored are not downloaded; every digest is checked before anything is committed, so a
/// failed pull leaves the store as it was.
pub async fn pull(
    store: &ImageStore,
    reference: &str,
    opts: &PullOptions,
) -> Result<PulledImage, PullError> {
    let r = Reference::parse(reference)?;
    let mut reg = Registry::connect(&r, opts).await?;
    let remote = reg.resolve(&r).await?;
    fetch_and_commit(store, &r, &mut reg, remote).await
}

/// Makes `reference` available locally following `policy`, as the kubelet does before
/// creating a container: `Never` uses only the store, `IfNotPresent` pulls when missing,
/// `Always` asks the registry for the current digest and pulls only when it changed.
pub async fn ensure_image(
    store: &ImageStore,
    reference: &str,
    policy: PullPolicy,
    opts: &PullOptions,
) -> Result<ResolvedImage, PullError> {
    let r = Reference::parse(reference)?;
    let name = r.to_string();
    let local = {
        let store = store.clone();
        let name = name.clone();
        blocking(move || match store.resolve(&name) {
            Ok(img) => Ok(Some(img)),
            Err(ImageError::NotFound(_)) => Ok(None),
            Err(e) => Err(e),
        })
        .await?
    };
    match (policy, local) {
        (PullPolicy::Never, Some(img)) | (PullPolicy::IfNotPresent, Some(img)) => Ok(img),
        (PullPolicy::Never, None) => Err(PullError::NeverPull(reference.to_string())),
        (PullPolicy::Always, Some(img)) => {
            let mut reg = Registry::connect(&r, opts).await?;
            let remote = reg.resolve(&r).await?;
            if remote.digest == img.manifest_digest {
                return Ok(img);
            }
            fetch_and_commit(store, &r, &mut reg, remote).await?;
            resolve_local(store, name).await
        }
        (_, None) => {
            pull(store, &name, opts).await?;
            resolve_local(store, name).await
        }
    }
}

async fn resolve_local(store: &ImageStore, name: String) -> Result<ResolvedImage, PullError> {
    let store = store.clone();
    blocking(move || store.resolve(&name)).await
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, ImageError> + Send + 'static,
) -> Result<T, PullError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| ImageError::io("store task", io::Error::other(e)))?
        .map_err(PullError::from)
}

/// Finds the credentials a `kubernetes.io/dockerconfigjson` Secret's `.dockerconfigjson`
/// (or a legacy `.dockercfg`) holds for `registry_host` (`host[:port]` as in the image
/// reference). Keys match as the kubelet matches them: scheme and path ignored
/// (`https://host/v1/`), ports must agree, `*` globs one DNS label, and the Docker Hub
/// aliases (`docker.io`, `index.docker.io`, `registry-1.docker.io`) are one registry.
pub fn credentials_for(dockerconfigjson: &[u8], registry_host: &str) -> Option<Credentials> {
    let doc: serde_json::Value = serde_json::from_slice(dockerconfigjson).ok()?;
    let auths = doc.get("auths").unwrap_or(&doc).as_object()?;
    let target = canonical_host(registry_host);
    // Exact keys win over globs, like the kubelet's most-specific-first order.
    let mut best: Option<(bool, Credentials)> = None;
    for (key, entry) in auths {
        let Some(host) = key_host(key) else { continue };
        let host = canonical_host(&host);
        let exact = host == target;
        if !exact && !glob_match(&host, &target) {
            continue;
        }
        let Some(creds) = entry_credentials(entry) else {
            continue;
        };
        if exact {
            return Some(creds);
        }
        if best.is_none() {
            best = Some((false, creds));
        }
    }
    best.map(|(_, c)| c)
}

/// The first credentials any of the pull secrets (in `imagePullSecrets` order) holds.
pub fn credentials_from_secrets<'a>(
    dockerconfigjsons: impl IntoIterator<Item = &'a [u8]>,
    registry_host: &str,
) -> Option<Credentials> {
    dockerconfigjsons
        .into_iter()
        .find_map(|d| credentials_for(d, registry_host))
}

fn key_host(key: &str) -> Option<String> {
    let rest = key.split_once("://").map(|(_, r)| r).unwrap_or(key).trim();
    let host = rest.split('/').next()?.to_ascii_lowercase();
    (!host.is_empty()).then_some(host)
}

fn canonical_host(host: &str) -> String {
    let host = host.to_ascii_lowercase();
    match host.as_str() {
        "index.docker.io" | "registry-1.docker.io" | "registry.hub.docker.com" => {
            super::DEFAULT_DOMAIN.to_string()
        }
        _ => host,
    }
}

fn glob_match(pattern: &str, host: &str) -> bool {
    if !pattern.contains('*') {
        return false;
    }
    let (p_name, p_port) = split_port(pattern);
    let (h_name, h_port) = split_port(host);
    if p_port != h_port {
        return false;
    }
    let p: Vec<&str> = p_name.split('.').collect();
    let h: Vec<&str> = h_name.split('.').collect();
    p.len() == h.len()
        && p.iter()
            .zip(&h)
            .all(|(p, h)| label_match(p.as_bytes(), h.as_bytes()))
}

fn split_port(h: &str) -> (&str, Option<&str>) {
    match h.rsplit_once(':') {
        Some((name, port)) if !port.is_empty() && port.bytes().all(|b| b.is_ascii_digit()) => {
            (name, Some(port))
        }
        _ => (h, None),
    }
}

/// `*` matches any run of characters within one label.
fn label_match(p: &[u8], h: &[u8]) -> bool {
    match p.split_first() {
        None => h.is_empty(),
        Some((b'*', rest)) => (0..=h.len()).any(|i| label_match(rest, &h[i..])),
        Some((c, rest)) => h.first() == Some(c) && label_match(rest, &h[1..]),
    }
}

fn entry_credentials(entry: &serde_json::Value) -> Option<Credentials> {
    let field = |k: &str| entry.get(k).and_then(|v| v.as_str()).unwrap_or("");
    let (user, pass) = (field("username"), field("password"));
    if !user.is_empty() || !pass.is_empty() {
        return Some(Credentials {
            username: user.to_string(),
            password: pass.to_string(),
        });
    }
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(field("auth").trim())
        .ok()?;
    let decoded = String::from_utf8(decoded).ok()?;
    let (user, pass) = decoded.split_once(':')?;
    Some(Credentials {
        username: user.to_string(),
        password: pass.to_string(),
    })
}

/// A manifest as the registry serves it, for this machine's platform.
struct RemoteManifest {
    digest: String,
    bytes: Vec<u8>,
    manifest: ImageManifest,
}

/// One registry repository and the session state (the token) of talking to it.
struct Registry {
    /// Registry as named in references, for messages.
    name: String,
    base: Url,
    repository: String,
    tls: tokio_rustls::TlsConnector,
    credentials: Option<Credentials>,
    authorization: Option<String>,
    timeout: Duration,
}

fn is_loopback_host(host: &str) -> bool {
    let (name, _) = split_port(host);
    let name = name.trim_start_matches('[').trim_end_matches(']');
    name == "localhost"
        || name
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

fn tls_connector(ca_file: Option<&Path>) -> Result<tokio_rustls::TlsConnector, PullError> {
    // Read once per process: the system bundle is large and pulls are frequent.
    static SYSTEM_ROOTS: std::sync::OnceLock<rustls::RootCertStore> = std::sync::OnceLock::new();
    let mut roots = SYSTEM_ROOTS
        .get_or_init(|| {
            let mut roots = rustls::RootCertStore::empty();
            // Unreadable system certificates only narrow what we trust.
            for cert in rustls_native_certs::load_native_certs().certs {
                let _ = roots.add(cert);
            }
            roots
        })
        .clone();
    if let Some(path) = ca_file {
        let f = File::open(path)
            .map_err(|e| ImageError::io(format!("opening CA bundle {}", path.display()), e))?;
        for cert in rustls_pemfile::certs(&mut io::BufReader::new(f)) {
            let cert =
                cert.map_err(|e| ImageError::io(format!("reading {}", path.display()), e))?;
            roots
                .add(cert)
                .map_err(|e| ImageError::malformed(format!("CA in {}", path.display()), e))?;
        }
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| PullError::Unsupported(format!("TLS configuration: {e}")))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(tokio_rustls::TlsConnector::from(Arc::new(config)))
}

impl Registry {
    /// Builds the client off the async runtime: it reads certificate files.
    async fn connect(r: &Reference, opts: &PullOptions) -> Result<Self, PullError> {
        let (r, opts) = (r.clone(), opts.clone());
        tokio::task::spawn_blocking(move || Registry::new(&r, &opts))
            .await
            .map_err(|e| ImageError::io("registry client task", io::Error::other(e)))?
    }

    fn new(r: &Reference, opts: &PullOptions) -> Result<Self, PullError> {
        let insecure = (opts.plain_http_for_loopback && is_loopback_host(&r.domain))
            || opts
                .insecure_registries
                .iter()
                .any(|h| h.eq_ignore_ascii_case(&r.domain));
        // Docker Hub's API lives on another host than its name.
        let api_host = if r.domain == super::DEFAULT_DOMAIN {
            "registry-1.docker.io"
        } else {
            r.domain.as_str()
        };
        let scheme = if insecure { "http" } else { "https" };
        let base = Url::parse(&format!("{scheme}://{api_host}/")).map_err(|e| {
            ImageError::InvalidReference {
                reference: r.to_string(),
                reason: format!("registry host: {e}"),
            }
        })?;
        Ok(Registry {
            name: r.domain.clone(),
            base,
            repository: r.path.clone(),
            tls: tls_connector(opts.ca_file.as_deref())?,
            credentials: opts.credentials.clone(),
            authorization: None,
            timeout: opts.timeout,
        })
    }

    fn transport(&self, message: impl ToString) -> PullError {
        PullError::Transport {
            registry: self.name.clone(),
            message: message.to_string(),
        }
    }

    fn registry_error(&self, message: impl ToString) -> PullError {
        PullError::Registry {
            registry: self.name.clone(),
            message: message.to_string(),
        }
    }

    fn url(&self, path: &str) -> Result<Url, PullError> {
        self.base
            .join(path)
            .map_err(|e| self.registry_error(format!("bad URL {path}: {e}")))
    }

    /// One HTTP/1.1 exchange on a fresh connection (pulls are a few large transfers, so
    /// connection reuse buys little).
    async fn send(
        &self,
        url: &Url,
        accept: Option<&str>,
        authorization: Option<&str>,
    ) -> Result<Response<Incoming>, PullError> {
        let host = url
            .host_str()
            .ok_or_else(|| self.registry_error(format!("URL {url} has no host")))?
            .to_string();
        let port = url
            .port_or_known_default()
            .ok_or_else(|| self.registry_error(format!("URL {url} has no port")))?;
        let host_header = match url.port() {
            Some(p) => format!("{host}:{p}"),
            None => host.clone(),
        };
        let mut path = url.path().to_string();
        if let Some(q) = url.query() {
            path.push('?');
            path.push_str(q);
        }
        let mut req = Request::get(path)
            .header(header::HOST, host_header)
            .header(header::USER_AGENT, USER_AGENT);
        if let Some(a) = accept {
            req = req.header(header::ACCEPT, a);
        }
        if let Some(a) = authorization {
            req = req.header(header::AUTHORIZATION, a);
        }
        let req = req
            .body(Empty::<Bytes>::new())
            .map_err(|e| self.registry_error(format!("building request: {e}")))?;
        let https = match url.scheme() {
            "https" => true,
            "http" => false,
            other => return Err(self.registry_error(format!("unsupported scheme {other}"))),
        };
        let exchange = async {
            let dial_host = host.trim_start_matches('[').trim_end_matches(']');
            let tcp = tokio::net::TcpStream::connect((dial_host, port))
                .await
                .map_err(|e| self.transport(format!("{host}:{port}: {e}")))?;
            if https {
                let name = rustls::pki_types::ServerName::try_from(dial_host.to_string())
                    .map_err(|e| self.transport(format!("server name {host}: {e}")))?;
                let tls = self
                    .tls
                    .connect(name, tcp)
                    .await
                    .map_err(|e| self.transport(format!("TLS with {host}: {e}")))?;
                self.exchange(TokioIo::new(tls), req).await
            } else {
                self.exchange(TokioIo::new(tcp), req).await
            }
        };
        tokio::time::timeout(self.timeout, exchange)
            .await
            .map_err(|_| self.transport(format!("{url}: timed out after {:?}", self.timeout)))?
    }

    async fn exchange<T>(
        &self,
        io: T,
        req: Request<Empty<Bytes>>,
    ) -> Result<Response<Incoming>, PullError>
    where
        T: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
    {
        let (mut sender, conn) = hyper::client::conn::http1::handshake(io)
            .await
            .map_err(|e| self.transport(e))?;
        // The connection task ends when the response body is done or dropped.
        tokio::spawn(async move {
            let _ = conn.await;
        });
        sender
            .send_request(req)
            .await
            .map_err(|e| self.transport(e))
    }

    /// GET following redirects (credentials only go to the registry itself) and answering
    /// one authentication challenge.
    async fn get(
        &mut self,
        url: Url,
        accept: Option<&str>,
    ) -> Result<Response<Incoming>, PullError> {
        let mut url = url;
        let mut redirects = 0;
        let mut authenticated = false;
        loop {
            let same_origin = url.origin() == self.base.origin();
            let authorization = if same_origin {
                self.authorization.clone()
            } else {
                None
            };
            let resp = self.send(&url, accept, authorization.as_deref()).await?;
            let status = resp.status();
            if status.is_redirection() && status != StatusCode::NOT_MODIFIED {
                redirects += 1;
                if redirects > MAX_REDIRECTS {
                    return Err(self.registry_error(format!("more than {MAX_REDIRECTS} redirects")));
                }
                let location = resp
                    .headers()
                    .get(header::LOCATION)
                    .and_then(|l| l.to_str().ok())
                    .ok_or_else(|| self.registry_error("redirect without Location"))?;
                let next = url
                    .join(location)
                    .map_err(|e| self.registry_error(format!("bad redirect {location:?}: {e}")))?;
                if url.scheme() == "https" && next.scheme() != "https" {
                    return Err(self.registry_error(format!("refusing redirect to {next}")));
                }
                url = next;
                continue;
            }
            if status == StatusCode::UNAUTHORIZED && same_origin && !authenticated {
                authenticated = true;
                let challenge = resp
                    .headers()
                    .get(header::WWW_AUTHENTICATE)
                    .and_then(|c| c.to_str().ok())
                    .unwrap_or("")
                    .to_string();
                self.authenticate(&challenge).await?;
                continue;
            }
            return Ok(resp);
        }
    }

    /// Answers a `WWW-Authenticate` challenge: Basic with the credentials, or the Bearer
    /// token flow (GET the realm with the credentials, use the token it returns).
    async fn authenticate(&mut self, challenge: &str) -> Result<(), PullError> {
        let (scheme, params) = parse_challenge(challenge);
        match scheme.to_ascii_lowercase().as_str() {
            "basic" => {
                let creds = self.credentials.as_ref().ok_or_else(|| {
                    PullError::Unauthorized(format!(
                        "{} requires credentials (no pull secret matched)",
                        self.name
                    ))
                })?;
                self.authorization = Some(creds.basic_header());
                Ok(())
            }
            "bearer" => {
                let param = |k: &str| {
                    params
                        .iter()
                        .find(|(n, _)| n.eq_ignore_ascii_case(k))
                        .map(|(_, v)| v.as_str())
                };
                let realm = param("realm")
                    .ok_or_else(|| self.registry_error("Bearer challenge without realm"))?;
                let mut url = Url::parse(realm)
                    .map_err(|e| self.registry_error(format!("bad realm {realm:?}: {e}")))?;
                if self.base.scheme() == "https" && url.scheme() != "https" {
                    return Err(self.registry_error(format!("refusing token realm {realm}")));
                }
                let scope = param("scope")
                    .map(str::to_string)
                    .unwrap_or_else(|| format!("repository:{}:pull", self.repository));
                {
                    let mut q = url.query_pairs_mut();
                    if let Some(service) = param("service") {
                        q.append_pair("service", service);
                    }
                    q.append_pair("scope", &scope);
                }
                let basic = self.credentials.as_ref().map(Credentials::basic_header);
                let resp = self.send(&url, None, basic.as_deref()).await?;
                let status = resp.status();
                if status == StatusCode::UNAUTHORIZED || status == StatusCode::FORBIDDEN {
                    return Err(PullError::Unauthorized(format!(
                        "token service {} refused the credentials ({status})",
                        url.origin().ascii_serialization()
                    )));
                }
                if !status.is_success() {
                    return Err(self.registry_error(format!("token service answered {status}")));
                }
                let body = self.read_limited(resp, MAX_TOKEN_BYTES, "token").await?;
                let doc: serde_json::Value = serde_json::from_slice(&body)
                    .map_err(|e| self.registry_error(format!("token response: {e}")))?;
                let token = doc
                    .get("token")
                    .or_else(|| doc.get("access_token"))
                    .and_then(|t| t.as_str())
                    .filter(|t| !t.is_empty())
                    .ok_or_else(|| self.registry_error("token response without a token"))?;
                self.authorization = Some(format!("Bearer {token}"));
                Ok(())
            }
            _ => Err(PullError::Unauthorized(format!(
                "{} answered 401 with challenge {challenge:?}",
                self.name
            ))),
        }
    }

    async fn read_limited(
        &self,
        resp: Response<Incoming>,
        limit: usize,
        what: &str,
    ) -> Result<Vec<u8>, PullError> {
        let mut body = resp.into_body();
        let mut out = Vec::new();
        while let Some(frame) = tokio::time::timeout(self.timeout, body.frame())
            .await
            .map_err(|_| self.transport(format!("reading {what}: timed out")))?
        {
            let frame = frame.map_err(|e| self.transport(format!("reading {what}: {e}")))?;
            if let Ok(data) = frame.into_data() {
                if out.len() + data.len() > limit {
                    return Err(self.registry_error(format!("{what} exceeds {limit} bytes")));
                }
                out.extend_from_slice(&data);
            }
        }
        Ok(out)
    }

    /// Error for an unexpected answer, with the registry's error message when it sent one.
    async fn status_error(&self, resp: Response<Incoming>, what: &str) -> PullError {
        let status = resp.status();
        let body = self
            .read_limited(resp, 64 * 1024, what)
            .await
            .unwrap_or_default();
        let detail = registry_message(&body);
        if status == StatusCode::UNAUTHORIZED || status == StatusCode::FORBIDDEN {
            return PullError::Unauthorized(format!("{what}: {status}{detail}"));
        }
        self.registry_error(format!("{what}: {status}{detail}"))
    }

    /// GETs a manifest (or index) by tag or digest; returns its bytes and media type.
    async fn get_manifest(
        &mut self,
        reference: &Reference,
        target: &str,
    ) -> Result<(Vec<u8>, String, Option<String>), PullError> {
        let url = self.url(&format!("v2/{}/manifests/{target}", self.repository))?;
        let resp = self.get(url, Some(MANIFEST_ACCEPT)).await?;
        let status = resp.status();
        if status == StatusCode::NOT_FOUND {
            let body = self
                .read_limited(resp, 64 * 1024, "manifest")
                .await
                .unwrap_or_default();
            return Err(PullError::NotFound {
                reference: reference.to_string(),
                message: format!("manifest unknown{}", registry_message(&body)),
            });
        }
        if !status.is_success() {
            return Err(self.status_error(resp, "fetching manifest").await);
        }
        let too_large = || PullError::ManifestTooLarge {
            reference: reference.to_string(),
            limit: MAX_MANIFEST_BYTES,
        };
        let length = resp
            .headers()
            .get(header::CONTENT_LENGTH)
            .and_then(|l| l.to_str().ok())
            .and_then(|l| l.parse::<u64>().ok());
        if length.is_some_and(|l| l > MAX_MANIFEST_BYTES as u64) {
            return Err(too_large());
        }
        let header_str = |h: &str| {
            resp.headers()
                .get(h)
                .and_then(|v| v.to_str().ok())
                .map(|v| v.split(';').next().unwrap_or("").trim().to_string())
        };
        let content_type = header_str("content-type").unwrap_or_default();
        let served_digest = header_str("docker-content-digest");
        let body = match self
            .read_limited(resp, MAX_MANIFEST_BYTES, "manifest")
            .await
        {
            Err(PullError::Registry { message, .. }) if message.contains("exceeds") => {
                return Err(too_large());
            }
            other => other?,
        };
        // The body's own mediaType is authoritative; some registries send a generic type.
        let media_type = serde_json::from_slice::<serde_json::Value>(&body)
            .ok()
            .and_then(|v| {
                v.get("mediaType")
                    .and_then(|m| m.as_str())
                    .map(str::to_string)
            })
            .unwrap_or(content_type);
        Ok((body, media_type, served_digest))
    }

    /// Resolves a reference to this platform's manifest, verifying digests on the way.
    async fn resolve(&mut self, reference: &Reference) -> Result<RemoteManifest, PullError> {
        let target = reference
            .digest
            .clone()
            .or_else(|| reference.tag.clone())
            .unwrap_or_else(|| super::DEFAULT_TAG.to_string());
        let (bytes, media_type, served) = self.get_manifest(reference, &target).await?;
        let digest = sha256_digest(&bytes);
        let expected = reference.digest.clone().or(served);
        if let Some(expected) = expected
            && expected.starts_with("sha256:")
            && expected != digest
        {
            return Err(ImageError::DigestMismatch {
                what: format!("manifest of {reference}"),
                expected,
                actual: digest,
            }
            .into());
        }
        match media_type.as_str() {
            OCI_INDEX | DOCKER_LIST => {
                let index = ImageIndex::from_reader(bytes.as_slice())
                    .map_err(|e| ImageError::malformed("image index", e))?;
                let chosen = pick_platform(&index).ok_or_else(|| PullError::NotFound {
                    reference: reference.to_string(),
                    message: format!("no manifest for linux/{} in the image index", host_arch()),
                })?;
                let want = chosen.digest().to_string();
                let (bytes, media_type, _) = self.get_manifest(reference, &want).await?;
                let digest = sha256_digest(&bytes);
                if digest != want {
                    return Err(ImageError::DigestMismatch {
                        what: format!("platform manifest of {reference}"),
                        expected: want,
                        actual: digest,
                    }
                    .into());
                }
                if media_type != OCI_MANIFEST && media_type != DOCKER_MANIFEST {
                    return Err(PullError::Unsupported(format!(
                        "platform manifest of media type {media_type:?}"
                    )));
                }
                let manifest = parse_manifest(&bytes)?;
                Ok(RemoteManifest {
                    digest,
                    bytes,
                    manifest,
                })
            }
            OCI_MANIFEST | DOCKER_MANIFEST => {
                let manifest = parse_manifest(&bytes)?;
                Ok(RemoteManifest {
                    digest,
                    bytes,
                    manifest,
                })
            }
            other => Err(PullError::Unsupported(format!(
                "manifest media type {other:?} (Docker schema 1 images must be re-pushed)"
            ))),
        }
    }

    /// Downloads a blob to `dest`, checking size and digest on the way.
    async fn fetch_blob(&mut self, d: &Descriptor, dest: &Path) -> Result<u64, PullError> {
        let digest = d.digest().to_string();
        let url = self.url(&format!("v2/{}/blobs/{digest}", self.repository))?;
        let resp = self.get(url, None).await?;
        if !resp.status().is_success() {
            return Err(self
                .status_error(resp, &format!("fetching blob {digest}"))
                .await);
        }
        let mut file = tokio::fs::File::create(dest)
            .await
            .map_err(|e| ImageError::io(format!("creating {}", dest.display()), e))?;
        let mut hasher = Sha256::new();
        let mut total = 0u64;
        let mut body = resp.into_body();
        while let Some(frame) = tokio::time::timeout(self.timeout, body.frame())
            .await
            .map_err(|_| self.transport(format!("reading blob {digest}: timed out")))?
        {
            let frame = frame.map_err(|e| self.transport(format!("reading blob {digest}: {e}")))?;
            let Ok(data) = frame.into_data() else {
                continue;
            };
            total += data.len() as u64;
            if total > d.size() {
                return Err(self.registry_error(format!(
                    "blob {digest} is larger than the {} bytes its descriptor says",
                    d.size()
                )));
            }
            hasher.update(&data);
            file.write_all(&data)
                .await
                .map_err(|e| ImageError::io(format!("writing {}", dest.display()), e))?;
        }
        file.sync_all()
            .await
            .map_err(|e| ImageError::io(format!("writing {}", dest.display()), e))?;
        let actual = format!("sha256:{}", hex::encode(hasher.finalize()));
        if actual != digest || total != d.size() {
            return Err(ImageError::DigestMismatch {
                what: format!("blob ({total} of {} bytes)", d.size()),
                expected: digest,
                actual,
            }
            .into());
        }
        Ok(total)
    }
}

fn sha256_digest(bytes: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(bytes)))
}

fn parse_manifest(bytes: &[u8]) -> Result<ImageManifest, PullError> {
    let m = ImageManifest::from_reader(bytes)
        .map_err(|e| ImageError::malformed("image manifest", e))?;
    // Only sha256 is stored; refuse other algorithms up front.
    for d in std::iter::once(m.config()).chain(m.layers()) {
        if d.as_digest_sha256().is_none() {
            return Err(PullError::Unsupported(format!("digest {}", d.digest())));
        }
    }
    Ok(m)
}

fn pick_platform(index: &ImageIndex) -> Option<&Descriptor> {
    index.manifests().iter().find(|m| {
        m.platform().as_ref().is_some_and(|p| {
            p.os().to_string() == "linux" && p.architecture().to_string() == host_arch()
        })
    })
}

/// The `errors[].message` of a registry error body, as ` (message)`.
fn registry_message(body: &[u8]) -> String {
    let doc: serde_json::Value = match serde_json::from_slice(body) {
        Ok(d) => d,
        Err(_) => return String::new(),
    };
    let msgs: Vec<String> = doc
        .get("errors")
        .and_then(|e| e.as_array())
        .into_iter()
        .flatten()
        .filter_map(|e| {
            let code = e.get("code").and_then(|c| c.as_str()).unwrap_or("");
            let msg = e.get("message").and_then(|m| m.as_str()).unwrap_or("");
            (!code.is_empty() || !msg.is_empty()).then(|| format!("{code}: {msg}"))
        })
        .collect();
    if msgs.is_empty() {
        String::new()
    } else {
        format!(" ({})", msgs.join("; "))
    }
}

/// Splits `Bearer realm="...",service="...",scope="a,b"` into the scheme and its parameters
/// (quoted values may hold commas).
fn parse_challenge(challenge: &str) -> (String, Vec<(String, String)>) {
    let challenge = challenge.trim();
    let (scheme, rest) = challenge.split_once(' ').unwrap_or((challenge, ""));
    let mut params = Vec::new();
    let mut chars = rest.chars().peekable();
    loop {
        while chars.peek().is_some_and(|c| *c == ',' || c.is_whitespace()) {
            chars.next();
        }
        let mut key = String::new();
        while let Some(&c) = chars.peek() {
            if c == '=' {
                break;
            }
            key.push(c);
            chars.next();
        }
        if chars.next().is_none() {
            break;
        }
        let mut value = String::new();
        if chars.peek() == Some(&'"') {
            chars.next();
            while let Some(c) = chars.next() {
                match c {
                    '\\' => {
                        if let Some(n) = chars.next() {
                            value.push(n);
                        }
                    }
                    '"' => break,
                    c => value.push(c),
                }
            }
        } else {
            while let Some(&c) = chars.peek() {
                if c == ',' {
                    break;
                }
                value.push(c);
                chars.next();
            }
        }
        params.push((key.trim().to_string(), value.trim().to_string()));
    }
    (scheme.to_string(), params)
}

/// Staging directory of one pull, removed on drop (commit moves the blobs out first).
struct Staging(PathBuf);

impl Drop for Staging {
    fn drop(&mut self) {
        let _ = remove_nofollow(&self.0);
    }
}

async fn fetch_and_commit(
    store: &ImageStore,
    reference: &Reference,
    reg: &mut Registry,
    remote: RemoteManifest,
) -> Result<PulledImage, PullError> {
    let staging = Staging(
        store
            .root()
            .join("tmp")
            .join(format!("pull-{:016x}", rand::random::<u64>())),
    );
    tokio::fs::create_dir_all(&staging.0)
        .await
        .map_err(|e| ImageError::io("creating pull staging dir", e))?;
    let wanted: Vec<Descriptor> = std::iter::once(remote.manifest.config().clone())
        .chain(remote.manifest.layers().iter().cloned())
        .collect();
    let mut fetched: Vec<(String, PathBuf)> = Vec::new();
    let mut bytes_fetched = 0;
    let stored: Vec<bool> = {
        let (store, digests) = (
            store.clone(),
            wanted
                .iter()
                .map(|d| d.digest().to_string())
                .collect::<Vec<_>>(),
        );
        blocking(move || {
            digests
                .iter()
                .map(|d| Ok(store.blob_path(d)?.exists()))
                .collect()
        })
        .await?
    };
    for (d, stored) in wanted.iter().zip(stored) {
        let digest = d.digest().to_string();
        if stored || fetched.iter().any(|(f, _)| *f == digest) {
            continue;
        }
        let dest = staging.0.join(d.digest().digest());
        bytes_fetched += reg.fetch_blob(d, &dest).await?;
        fetched.push((digest, dest));
    }
    let store = store.clone();
    let name = reference.to_string();
    let blobs_fetched = fetched.len();
    let image_id = remote.manifest.config().digest().to_string();
    let manifest_digest = remote.digest.clone();
    blocking(move || {
        let staging = staging;
        let located = |digest: &str| -> Result<PathBuf, ImageError> {
            match fetched.iter().find(|(f, _)| f == digest) {
                Some((_, p)) => Ok(p.clone()),
                None => store.blob_path(digest),
            }
        };
        verify_image(&remote.manifest, &located)?;
        let _lock = store.lock()?;
        for d in &wanted {
            let digest = d.digest().to_string();
            let dest = store.blob_path(&digest)?;
            if dest.exists() {
                continue;
            }
            match fetched.iter().find(|(f, _)| *f == digest) {
                Some((_, p)) => std::fs::rename(p, &dest)
                    .map_err(|e| ImageError::io(format!("storing blob {digest}"), e))?,
                // Collected by a concurrent `gc` after we checked: the pull must be retried.
                None => {
                    return Err(ImageError::io(
                        format!("blob {digest} vanished from the store during the pull"),
                        io::Error::from(io::ErrorKind::NotFound),
                    ));
                }
            }
        }
        let manifest_path = store.blob_path(&remote.digest)?;
        if !manifest_path.exists() {
            write_atomic(&manifest_path, &remote.bytes)?;
        }
        let mut index = store.read_index()?;
        let digest = remote
            .digest
            .parse::<oci_spec::image::Digest>()
            .map_err(|e| ImageError::malformed("manifest digest", e))?;
        let descriptor =
            Descriptor::new(MediaType::ImageManifest, remote.bytes.len() as u64, digest);
        store.tag(&mut index, &name, &descriptor);
        store.write_index(&index)?;
        drop(staging);
        Ok(PulledImage {
            reference: name,
            manifest_digest,
            image_id,
            blobs_fetched,
            bytes_fetched,
        })
    })
    .await
}

/// Checks the config's `rootfs.diff_ids` against the layers' uncompressed content: the
/// overlay layer cache is keyed by diff_id, so a lying config must not get in.
fn verify_image(
    manifest: &ImageManifest,
    located: &dyn Fn(&str) -> Result<PathBuf, ImageError>,
) -> Result<(), ImageError> {
    let config_path = located(manifest.config().digest().as_ref())?;
    let f = File::open(&config_path).map_err(|e| ImageError::io("reading image config", e))?;
    let config = ImageConfiguration::from_reader(io::BufReader::new(f))
        .map_err(|e| ImageError::malformed("image config", e))?;
    let want = config.rootfs().diff_ids();
    if want.len() != manifest.layers().len() {
        return Err(ImageError::malformed(
            "image",
            format!(
                "config lists {} layers, manifest {}",
                want.len(),
                manifest.layers().len()
            ),
        ));
    }
    for (i, (w, l)) in want.iter().zip(manifest.layers()).enumerate() {
        let path = located(l.digest().as_ref())?;
        let f = File::open(&path).map_err(|e| ImageError::io("reading layer", e))?;
        let mut reader = decompressed(f)?;
        let mut hasher = Sha256::new();
        io::copy(&mut reader, &mut hasher)
            .map_err(|e| ImageError::malformed(format!("layer {}", l.digest()), e))?;
        let got = format!("sha256:{}", hex::encode(hasher.finalize()));
        if *w != got {
            return Err(ImageError::DigestMismatch {
                what: format!("layer {i} (diff_id)"),
                expected: w.clone(),
                actual: got,
            });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b64(s: &str) -> String {
        base64::engine::general_purpose::STANDARD.encode(s)
    }

    #[test]
    fn credentials_match_like_the_kubelet() {
        let cfg = serde_json::json!({"auths": {
            "https://index.docker.io/v1/": {"auth": b64("hub:pw")},
            "registry.example.com:5000": {"username": "u", "password": "p"},
            "*.corp.example": {"auth": b64("glob:pw:with:colons")},
            "exact.corp.example": {"auth": b64("exact:pw")},
        }})
        .to_string();
        let get = |h: &str| credentials_for(cfg.as_bytes(), h).map(|c| (c.username, c.password));
        assert_eq!(get("docker.io"), Some(("hub".into(), "pw".into())));
        assert_eq!(
            get("registry.example.com:5000"),
            Some(("u".into(), "p".into()))
        );
        assert_eq!(get("registry.example.com"), None, "ports must agree");
        assert_eq!(
            get("a.corp.example"),
            Some(("glob".into(), "pw:with:colons".into()))
        );
        assert_eq!(
            get("exact.corp.example"),
            Some(("exact".into(), "pw".into()))
        );
        assert_eq!(get("a.b.corp.example"), None, "* is one label");
        assert_eq!(get("other.example"), None);
        assert_eq!(credentials_for(b"not json", "docker.io"), None);
        // Legacy .dockercfg: the same map without "auths".
        let legacy = serde_json::json!({"quay.io": {"auth": b64("q:r")}}).to_string();
        assert_eq!(
            credentials_for(legacy.as_bytes(), "quay.io").map(|c| c.username),
            Some("q".into())
        );
    }

    #[test]
    fn parses_bearer_challenges() {
        let (scheme, params) = parse_challenge(
            r#"Bearer realm="https://auth.example/token",service="registry.example",scope="repository:a/b:pull,push""#,
        );
        assert_eq!(scheme, "Bearer");
        assert_eq!(
            params,
            vec![
                ("realm".into(), "https://auth.example/token".into()),
                ("service".into(), "registry.example".into()),
                ("scope".into(), "repository:a/b:pull,push".into()),
            ]
        );
        let (scheme, params) = parse_challenge(r#"Basic realm="basic-realm""#);
        assert_eq!((scheme.as_str(), params.len()), ("Basic", 1));
        assert_eq!(parse_challenge("").1, vec![]);
    }

    #[test]
    fn default_policy_and_loopback() {
        assert_eq!(PullPolicy::default_for("nginx"), PullPolicy::Always);
        assert_eq!(PullPolicy::default_for("nginx:latest"), PullPolicy::Always);
        assert_eq!(
            PullPolicy::default_for("nginx:1.27"),
            PullPolicy::IfNotPresent
        );
        let d = format!("nginx@sha256:{}", "a".repeat(64));
        assert_eq!(PullPolicy::default_for(&d), PullPolicy::IfNotPresent);
        assert_eq!(PullPolicy::parse("Never"), Some(PullPolicy::Never));
        assert!(is_loopback_host("127.0.0.1:5000"));
        assert!(is_loopback_host("localhost:5000"));
        assert!(is_loopback_host("[::1]:5000"));
        assert!(!is_loopback_host("registry.example:5000"));
    }
}
