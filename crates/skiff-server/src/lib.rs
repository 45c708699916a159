//! Assembles one skiff control plane: opens the store, prepares credentials, serves the API
//! over TLS, bootstraps the built-in namespaces, and starts the controllers — in that order.

pub mod node;

use anyhow::{Context, Result};
use axum::Router;
use serde_json::{Value, json};
use skiff_apiserver::auth::{
    MastersOnly, PeerIdentity, SYSTEM_MASTERS, TokenAuthenticator, UserInfo,
};
use skiff_apiserver::pki::{Pki, write_private};
use skiff_apiserver::{ApiConfig, ApiServer};
use skiff_store::{
    EncryptingStore, EncryptionConfig, EncryptionKey, SqliteOptions, SqliteStore, Store,
};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use tower::ServiceExt;

/// Everything `skiff up` can be told.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    pub data_dir: PathBuf,
    pub bind: IpAddr,
    /// 0 picks a free port (tests).
    pub port: u16,
    /// Extra subject alternative names for the serving certificate.
    pub tls_sans: Vec<String>,
    pub service_cidr: (Ipv4Addr, u8),
    /// Pod addresses of the cluster; each node gets a /24 of it (`spec.podCIDR`).
    pub cluster_cidr: (Ipv4Addr, u8),
    pub node_port_range: (u16, u16),
    /// Start the built-in controllers.
    pub controllers: bool,
    /// Their settings (node monitor grace period, eviction timeout).
    pub controller_config: skiff_controllers::Config,
    /// The node this process also runs (agent, pod network, service proxy and DNS);
    /// `None` = control plane only (`--disable-agent`).
    pub node: Option<NodeOptions>,
}

/// Which container runtime the in-process node uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RuntimeKind {
    /// runc with an image store, cgroups and a network namespace per pod (needs root).
    Oci,
    /// Plain host processes, no isolation (development without root).
    Process,
}

/// Settings of the in-process node.
#[derive(Debug, Clone)]
pub struct NodeOptions {
    pub name: String,
    /// InternalIP of the Node; the API server reaches the node's streaming server there.
    pub ip: IpAddr,
    pub runtime: RuntimeKind,
    /// Pod addresses of the whole cluster; this node takes its first /24.
    pub cluster_cidr: (Ipv4Addr, u8),
    /// The pods' bridge.
    pub bridge: String,
    /// Dummy interface holding the service addresses.
    pub service_interface: String,
    /// Cluster DNS address (in the service CIDR).
    pub cluster_dns: Ipv4Addr,
    /// Where LoadBalancer services listen (k3s ServiceLB style).
    pub lb_address: IpAddr,
    /// Where NodePort services listen.
    pub node_port_address: IpAddr,
    /// Port of the node's streaming server (logs, exec, port-forward); 0 picks one.
    pub kubelet_port: u16,
}

impl NodeOptions {
    /// Defaults like k3s: the host's name, 10.42.0.0/16 pods on `skiff0`, DNS 10.43.0.10.
    pub fn new(runtime: RuntimeKind) -> Self {
        NodeOptions {
            name: hostname().unwrap_or_else(|| "skiff".into()),
            ip: IpAddr::V4(Ipv4Addr::LOCALHOST),
            runtime,
            cluster_cidr: (Ipv4Addr::new(10, 42, 0, 0), 16),
            bridge: "skiff0".into(),
            service_interface: "skiff-svc".into(),
            cluster_dns: Ipv4Addr::new(10, 43, 0, 10),
            lb_address: IpAddr::V4(Ipv4Addr::LOCALHOST),
            node_port_address: IpAddr::V4(Ipv4Addr::UNSPECIFIED),
            kubelet_port: 10250,
        }
    }
}

/// `oci` when running as root with runc installed, else `process`.
pub fn default_runtime() -> RuntimeKind {
    let root = rustix::process::geteuid().is_root();
    let runc = [
        "/usr/sbin/runc",
        "/usr/bin/runc",
        "/usr/local/bin/runc",
        "/usr/local/sbin/runc",
    ]
    .iter()
    .any(|p| Path::new(p).is_file());
    if root && runc {
        RuntimeKind::Oci
    } else {
        RuntimeKind::Process
    }
}

impl ServerConfig {
    pub fn new(data_dir: PathBuf) -> Self {
        ServerConfig {
            data_dir,
            bind: IpAddr::V4(Ipv4Addr::LOCALHOST),
            port: 6443,
            tls_sans: Vec::new(),
            service_cidr: (Ipv4Addr::new(10, 43, 0, 0), 16),
            cluster_cidr: (Ipv4Addr::new(10, 42, 0, 0), 16),
            node_port_range: (30000, 32767),
            controllers: true,
            controller_config: skiff_controllers::Config::default(),
            // The library default is a control plane only (in-process tests run side by
            // side); `skiff up` adds the node unless told `--disable-agent`.
            node: None,
        }
    }
}

/// The default data directory: `/var/lib/skiff` for root, else `~/.local/share/skiff`.
pub fn default_data_dir() -> PathBuf {
    let is_root = std::fs::metadata("/proc/self").map(|m| {
        use std::os::unix::fs::MetadataExt;
        m.uid() == 0
    });
    if is_root.unwrap_or(false) {
        return PathBuf::from("/var/lib/skiff");
    }
    match std::env::var_os("HOME") {
        Some(h) => PathBuf::from(h).join(".local/share/skiff"),
        None => PathBuf::from(".skiff"),
    }
}

pub fn kubeconfig_path(data_dir: &Path) -> PathBuf {
    data_dir.join("kubeconfig.yaml")
}

/// A running control plane.
pub struct Running {
    pub addr: SocketAddr,
    pub kubeconfig: PathBuf,
    pub api: Arc<ApiServer>,
    /// A client that calls the API in-process as the controllers' identity.
    pub client: skiff_client::Client,
    /// The in-process node, if any.
    pub node: Option<node::NodeHandle>,
    shutdown: tokio::sync::watch::Sender<bool>,
    serve: tokio::task::JoinHandle<()>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Running {
    /// Stops accepting connections and stops the controllers.
    pub async fn shutdown(self) {
        if let Some(node) = self.node {
            node.shutdown().await;
        }
        let _ = self.shutdown.send(true);
        for t in &self.tasks {
            t.abort();
        }
        let _ = self.serve.await;
    }
}

/// Starts the control plane and returns once it is ready (`/readyz` answers).
pub async fn start(config: ServerConfig) -> Result<Running> {
    let data = &config.data_dir;
    std::fs::create_dir_all(data)
        .with_context(|| format!("creating the data directory {}", data.display()))?;
    restrict_dir(data)?;

    // 1. The store: nothing is served before it is open.
    let db_path = data.join("state.db");
    let sqlite =
        tokio::task::spawn_blocking(move || SqliteStore::open(&db_path, SqliteOptions::default()))
            .await?
            .context("opening the store (is another skiff using this data directory?)")?;
    skiff_store::spawn_auto_compaction(&sqlite, skiff_store::AutoCompaction::default());
    let key = EncryptionKey::load_or_create(&data.join("encryption.key"))
        .context("loading the encryption key")?;
    let store: Arc<dyn Store> =
        Arc::new(EncryptingStore::new(sqlite, EncryptionConfig::secrets(key)));

    // 2. Credentials.
    let admin_token = load_or_create_admin_token(data)?;
    load_or_create_node_token(data)?;
    let tokens = TokenAuthenticator::parse(&std::fs::read_to_string(data.join("tokens.csv"))?);
    let mut sans: Vec<String> = vec![
        "localhost".into(),
        "127.0.0.1".into(),
        "kubernetes".into(),
        "kubernetes.default".into(),
        "kubernetes.default.svc".into(),
        "kubernetes.default.svc.cluster.local".into(),
        skiff_apiserver::alloc::first_service_ip(config.service_cidr).to_string(),
    ];
    if let Some(h) = hostname() {
        sans.push(h);
    }
    if !config.bind.is_unspecified() {
        sans.push(config.bind.to_string());
    }
    for s in &config.tls_sans {
        if !sans.contains(s) {
            sans.push(s.clone());
        }
    }
    let pki = Pki::load_or_create(&data.join("pki"), &sans)?;
    if !data.join("pki/admin.crt").exists() {
        let admin = pki.issue_client("admin", &[SYSTEM_MASTERS])?;
        write_private(&data.join("pki"), "admin.key", &admin.key_pem)?;
        write_private(&data.join("pki"), "admin.crt", &admin.cert_pem)?;
    }
    let tls = skiff_apiserver::serve::tls_config(&pki)?;

    // 3. The API.
    let listener = tokio::net::TcpListener::bind((config.bind, config.port))
        .await
        .with_context(|| format!("listening on {}:{}", config.bind, config.port))?;
    let addr = listener.local_addr()?;
    let client_host = if config.bind.is_unspecified() {
        IpAddr::V4(Ipv4Addr::LOCALHOST)
    } else {
        config.bind
    };
    let advertise = SocketAddr::new(client_host, addr.port());
    let api_config = ApiConfig {
        service_cidr: config.service_cidr,
        node_port_range: config.node_port_range,
        advertise_address: advertise.to_string(),
        kubelet_client: Some(pki.issue_kubelet_client()?),
        ..ApiConfig::default()
    };
    let api = ApiServer::new(store, tokens, Arc::new(MastersOnly), api_config);
    let router = skiff_apiserver::router(api.clone());
    let (shutdown, mut shutdown_rx) = tokio::sync::watch::channel(false);
    let serve = tokio::spawn(skiff_apiserver::serve::serve_tls(
        listener,
        tls,
        router.clone(),
        async move {
            let _ = shutdown_rx.wait_for(|s| *s).await;
        },
    ));

    // 4. Built-in objects, written through the API like any client would.
    let client = in_process_client(
        router.clone(),
        UserInfo::new("system:skiff-controller-manager", &[SYSTEM_MASTERS]),
    );
    bootstrap(&client, advertise, config.service_cidr).await?;

    // 5. Controllers.
    let mut tasks = Vec::new();
    if config.controllers {
        tasks.extend(skiff_controllers::start_with(
            client.clone(),
            config.controller_config.clone(),
        ));
        tasks.push(skiff_scheduler::start(client.clone()));
        tasks.push(skiff_controllers::nodeipam::start(
            client.clone(),
            config.cluster_cidr,
        ));
    }

    // 6. The node next to the control plane: it talks to the API in-process, as a node.
    let node = match &config.node {
        Some(options) => {
            let node_client = in_process_client(
                router,
                UserInfo::new(
                    &format!("system:node:{}", options.name),
                    &[SYSTEM_MASTERS, "system:nodes"],
                ),
            );
            Some(
                node::start_node(
                    node_client,
                    options,
                    config.service_cidr,
                    data,
                    &pki.ca.cert_pem,
                )
                .await?,
            )
        }
        None => None,
    };

    let kubeconfig = kubeconfig_path(data);
    let kc = kubeconfig_yaml(
        &format!("https://{advertise}"),
        &pki.ca.cert_pem,
        &admin_token,
    );
    write_private(data, "kubeconfig.yaml", &kc)?;
    Ok(Running {
        addr,
        kubeconfig,
        api,
        client,
        node,
        shutdown,
        serve,
        tasks,
    })
}

fn restrict_dir(dir: &Path) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
        .with_context(|| format!("restricting {}", dir.display()))
}

fn hostname() -> Option<String> {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|h| h.trim().to_lowercase())
        .filter(|h| !h.is_empty())
}

/// The admin bearer token, created on first start and listed in `tokens.csv`.
fn load_or_create_admin_token(data: &Path) -> Result<String> {
    let path = data.join("tokens.csv");
    if let Ok(contents) = std::fs::read_to_string(&path) {
        for line in contents.lines() {
            let mut parts = line.splitn(3, ',');
            if let (Some(token), Some("admin")) = (parts.next(), parts.next()) {
                return Ok(token.to_string());
            }
        }
    }
    let mut bytes = [0u8; 32];
    rand::fill(&mut bytes);
    let token = hex::encode(bytes);
    let line = format!("{token},admin,admin,\"{SYSTEM_MASTERS}\"\n");
    write_private(data, "tokens.csv", &line)?;
    Ok(token)
}

/// The token nodes join with (`skiff agent --token`), kept in `node-token` and listed in
/// `tokens.csv`. Nodes are cluster admins until RBAC lands (the authorizer is MastersOnly).
fn load_or_create_node_token(data: &Path) -> Result<String> {
    let path = data.join("tokens.csv");
    let contents = std::fs::read_to_string(&path).unwrap_or_default();
    for line in contents.lines() {
        let mut parts = line.splitn(3, ',');
        if let (Some(token), Some(NODE_USER)) = (parts.next(), parts.next()) {
            write_private(data, "node-token", &format!("{token}\n"))?;
            return Ok(token.to_string());
        }
    }
    let mut bytes = [0u8; 32];
    rand::fill(&mut bytes);
    let token = hex::encode(bytes);
    let line = format!("{token},{NODE_USER},node,\"{SYSTEM_MASTERS},system:nodes\"\n");
    write_private(data, "tokens.csv", &format!("{contents}{line}"))?;
    write_private(data, "node-token", &format!("{token}\n"))?;
    Ok(token)
}

/// The user joined nodes authenticate as.
const NODE_USER: &str = "system:node-agent";

/// The kubeconfig for the admin user.
pub fn kubeconfig_yaml(server: &str, ca_pem: &str, token: &str) -> String {
    use base64::Engine;
    let ca = base64::engine::general_purpose::STANDARD.encode(ca_pem);
    format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: skiff\n  cluster:\n    server: {server}\n    certificate-authority-data: {ca}\nusers:\n- name: skiff-admin\n  user:\n    token: {token}\ncontexts:\n- name: skiff\n  context:\n    cluster: skiff\n    user: skiff-admin\n    namespace: default\ncurrent-context: skiff\npreferences: {{}}\n"
    )
}

/// A kube-rs client that calls the router directly as `user`.
pub fn in_process_client(router: Router, user: UserInfo) -> skiff_client::Client {
    let identity = PeerIdentity(Some(user));
    let svc = router.map_request(
        move |mut req: http::Request<skiff_client::kube::client::Body>| {
            req.extensions_mut().insert(identity.clone());
            req
        },
    );
    skiff_client::from_service(svc)
}

/// Creates the built-in namespaces and the `kubernetes` Service if they are missing.
async fn bootstrap(
    client: &skiff_client::Client,
    advertise: SocketAddr,
    cidr: (Ipv4Addr, u8),
) -> Result<()> {
    for ns in ["default", "kube-system", "kube-public", "kube-node-lease"] {
        create_if_missing(
            client,
            "/api/v1/namespaces",
            json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}}),
        )
        .await?;
    }
    let ip = skiff_apiserver::alloc::first_service_ip(cidr).to_string();
    create_if_missing(
        client,
        "/api/v1/namespaces/default/services",
        json!({
            "apiVersion": "v1", "kind": "Service",
            "metadata": {"name": "kubernetes", "labels": {"component": "apiserver", "provider": "kubernetes"}},
            "spec": {"clusterIP": ip, "ports": [{"name": "https", "port": 443, "protocol": "TCP", "targetPort": advertise.port() as i64}]},
        }),
    )
    .await?;
    Ok(())
}

async fn create_if_missing(client: &skiff_client::Client, path: &str, obj: Value) -> Result<()> {
    // Look first: on a restart a create can fail for reasons other than 409 (the `kubernetes`
    // Service's fixed cluster IP is already allocated — to itself).
    if let Some(name) = obj["metadata"]["name"].as_str() {
        let get = http::Request::get(format!("{path}/{name}")).body(Vec::new())?;
        match client.request_text(get).await {
            Ok(_) => return Ok(()),
            Err(skiff_client::kube::Error::Api(e)) if e.code == 404 => {}
            Err(e) => return Err(anyhow::anyhow!("bootstrapping {path}/{name}: {e}")),
        }
    }
    let body = serde_json::to_vec(&obj)?;
    let req = http::Request::post(path)
        .header(http::header::CONTENT_TYPE, "application/json")
        .body(body)?;
    match client.request_text(req).await {
        Ok(_) => Ok(()),
        Err(skiff_client::kube::Error::Api(e)) if e.code == 409 => Ok(()),
        Err(e) => Err(anyhow::anyhow!("bootstrapping {path}: {e}")),
    }
}
