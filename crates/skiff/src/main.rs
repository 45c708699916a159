//! The `skiff` command line: `up` starts a cluster, `kubeconfig` tells how to reach it.

use anyhow::{Context, Result};
use clap::{Args, Parser, Subcommand};
use std::net::{IpAddr, Ipv4Addr};
use std::path::PathBuf;

/// glibc's malloc for the control plane, mimalloc once the process turns out to be `skiff serve`
/// (see skiff_serving::alloc for why and the figures).
#[global_allocator]
static ALLOCATOR: skiff_serving::alloc::ServingAllocator = skiff_serving::alloc::ServingAllocator;

#[derive(Parser)]
#[command(
    name = "skiff",
    version,
    about = "A Kubernetes-compatible cluster for ML workloads in one binary"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Start a single-node cluster (API server, store, controllers) in the foreground.
    Up(UpArgs),
    /// Alias of `up`.
    #[command(hide = true)]
    Server(UpArgs),
    /// Print the `export KUBECONFIG=...` line for a cluster (or the kubeconfig itself with --raw).
    Kubeconfig(KubeconfigArgs),
    /// Serve ONNX models over the Open Inference Protocol (REST + gRPC) and `/predict`.
    Serve(skiff_serving::ServeArgs),
    /// Manage the node's local images (`docker save app:v1 | skiff images import -`).
    Images(ImagesArgs),
    /// Join this machine (or network namespace) to a cluster as a node.
    Agent(AgentArgs),
    /// Remove every container, pod network namespace, mount and interface a node of this
    /// data directory created (like k3s-killall.sh); the cluster's state is kept.
    Killall(KillallArgs),
    /// Per-container shim of the oci runtime (started by the node, not by hand).
    #[command(hide = true)]
    Shim {
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<std::ffi::OsString>,
    },
}

#[derive(Args)]
struct AgentArgs {
    /// The API server, e.g. https://10.0.0.1:6443.
    #[arg(long, env = "SKIFF_SERVER")]
    server: String,
    /// The cluster's node token (`node-token` in the server's data directory).
    #[arg(long, env = "SKIFF_TOKEN")]
    token: String,
    /// The cluster CA certificate (`pki/ca.crt` in the server's data directory).
    #[arg(long)]
    ca_file: PathBuf,
    /// Where this node keeps images, containers and pod volumes.
    #[arg(long, env = "SKIFF_DATA_DIR")]
    data_dir: Option<PathBuf>,
    /// Pod addresses of the cluster (as given to `skiff up`).
    #[arg(long, default_value = "10.42.0.0/16", value_parser = parse_cidr)]
    cluster_cidr: (Ipv4Addr, u8),
    /// Service addresses of the cluster (as given to `skiff up`).
    #[arg(long, default_value = "10.43.0.0/16", value_parser = parse_cidr)]
    service_cidr: (Ipv4Addr, u8),
    #[command(flatten)]
    node: NodeArgs,
}

#[derive(Args)]
struct KillallArgs {
    /// The data directory of the `skiff up` or `skiff agent` whose node is to be cleaned.
    #[arg(long, env = "SKIFF_DATA_DIR")]
    data_dir: Option<PathBuf>,
}

#[derive(Args)]
struct ImagesArgs {
    #[arg(long, env = "SKIFF_DATA_DIR", global = true)]
    data_dir: Option<PathBuf>,
    #[command(subcommand)]
    command: skiff_runtime::cli::ImagesCommand,
}

#[derive(Args)]
struct UpArgs {
    /// Where the cluster keeps its state (default /var/lib/skiff as root, else ~/.local/share/skiff).
    #[arg(long, env = "SKIFF_DATA_DIR")]
    data_dir: Option<PathBuf>,
    /// Address the API listens on.
    #[arg(long, default_value = "127.0.0.1")]
    bind: IpAddr,
    /// HTTPS port of the API (0 picks a free one).
    #[arg(long, default_value_t = 6443)]
    port: u16,
    /// Extra names or addresses for the API's serving certificate (repeatable).
    #[arg(long = "tls-san")]
    tls_san: Vec<String>,
    /// Pod addresses of the cluster; this node takes the first /24.
    #[arg(long, default_value = "10.42.0.0/16", value_parser = parse_cidr)]
    cluster_cidr: (Ipv4Addr, u8),
    /// Service (ClusterIP) addresses.
    #[arg(long, default_value = "10.43.0.0/16", value_parser = parse_cidr)]
    service_cidr: (Ipv4Addr, u8),
    /// Seconds without a heartbeat before a node is marked NotReady (Unknown).
    #[arg(long, default_value_t = 40)]
    node_monitor_grace_period: u64,
    /// Seconds pods stay on a NotReady/unreachable node before they are evicted (what the
    /// default 300 s tolerations stand for).
    #[arg(long, default_value_t = 300)]
    pod_eviction_timeout: u64,
    #[command(flatten)]
    node: NodeArgs,
}

/// The node `skiff up` runs next to the control plane.
#[derive(Args)]
struct NodeArgs {
    /// Run only the control plane: no node agent, pod network, service proxy or DNS.
    #[arg(long)]
    disable_agent: bool,
    /// Node name (default: the host name).
    #[arg(long)]
    node_name: Option<String>,
    /// The node's InternalIP; the API server reaches the node's streaming server there.
    #[arg(long, default_value = "127.0.0.1")]
    node_ip: IpAddr,
    /// Container runtime: `oci` (runc; needs root) or `process` (no isolation).
    #[arg(long, value_parser = ["oci", "process"])]
    runtime: Option<String>,
    /// Bridge of the pod network.
    #[arg(long, default_value = "skiff0")]
    bridge: String,
    /// Dummy interface holding the service addresses.
    #[arg(long, default_value = "skiff-svc")]
    service_interface: String,
    /// Cluster DNS address (default: the 10th address of the service CIDR).
    #[arg(long)]
    cluster_dns: Option<Ipv4Addr>,
    /// Address LoadBalancer services listen on (k3s ServiceLB style).
    #[arg(long, default_value = "127.0.0.1")]
    lb_address: IpAddr,
    /// Address NodePort services listen on.
    #[arg(long, default_value = "0.0.0.0")]
    node_port_address: IpAddr,
    /// Port of the node's streaming server (logs, exec, port-forward); 0 picks one.
    #[arg(long, default_value_t = 10250)]
    kubelet_port: u16,
    /// OCI runtime program for `--runtime oci` (default: runc from the PATH's usual places;
    /// crun works where it accepts the machine's cgroup layout).
    #[arg(long)]
    oci_runtime_binary: Option<PathBuf>,
}

fn parse_cidr(s: &str) -> Result<(Ipv4Addr, u8), String> {
    let (ip, len) = s
        .split_once('/')
        .ok_or_else(|| format!("{s:?} is not a CIDR like 10.42.0.0/16"))?;
    let ip: Ipv4Addr = ip.parse().map_err(|e| format!("{ip:?}: {e}"))?;
    let len: u8 = len
        .parse()
        .ok()
        .filter(|l| (8..=24).contains(l))
        .ok_or_else(|| format!("prefix length {len:?} must be 8..=24"))?;
    Ok((ip, len))
}

impl NodeArgs {
    fn options(
        &self,
        service_cidr: (Ipv4Addr, u8),
        cluster_cidr: (Ipv4Addr, u8),
    ) -> Option<skiff_server::NodeOptions> {
        use skiff_server::RuntimeKind;
        if self.disable_agent {
            return None;
        }
        let runtime = match self.runtime.as_deref() {
            Some("oci") => RuntimeKind::Oci,
            Some(_) => RuntimeKind::Process,
            None => skiff_server::default_runtime(),
        };
        let mut o = skiff_server::NodeOptions::new(runtime);
        if let Some(n) = &self.node_name {
            o.name = n.clone();
        }
        o.ip = self.node_ip;
        o.cluster_cidr = cluster_cidr;
        o.bridge = self.bridge.clone();
        o.service_interface = self.service_interface.clone();
        o.cluster_dns = self
            .cluster_dns
            .unwrap_or_else(|| Ipv4Addr::from(u32::from(service_cidr.0).wrapping_add(10)));
        o.lb_address = self.lb_address;
        o.node_port_address = self.node_port_address;
        o.kubelet_port = self.kubelet_port;
        o.oci_binary = self.oci_runtime_binary.clone();
        Some(o)
    }
}

#[derive(Args)]
struct KubeconfigArgs {
    #[arg(long, env = "SKIFF_DATA_DIR")]
    data_dir: Option<PathBuf>,
    /// Print the kubeconfig file's contents instead of the export line.
    #[arg(long)]
    raw: bool,
}

fn main() -> Result<()> {
    // The shim is tiny and synchronous: no logging set-up, no async runtime.
    let mut argv = std::env::args_os();
    if argv.nth(1).as_deref() == Some(std::ffi::OsStr::new("shim")) {
        std::process::exit(skiff_runtime::oci::shim_main(argv));
    }
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("SKIFF_LOG")
                .unwrap_or_else(|_| "warn,skiff=info".into()),
        )
        .with_writer(std::io::stderr)
        // Colours only for a terminal: `kubectl logs` and log files would show the escapes.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let cli = Cli::parse();
    match cli.command {
        Command::Up(a) | Command::Server(a) => up(a),
        Command::Kubeconfig(a) => kubeconfig(a),
        Command::Serve(a) => {
            skiff_serving::alloc::serve_with_mimalloc();
            serve(a)
        }
        Command::Agent(a) => agent(a),
        Command::Killall(a) => killall(a),
        Command::Shim { args } => std::process::exit(skiff_runtime::oci::shim_main(args)),
        Command::Images(a) => {
            let dir = a.data_dir.unwrap_or_else(skiff_server::default_data_dir);
            skiff_runtime::cli::run_images(&dir.join("images"), a.command)
        }
    }
}

fn up(args: UpArgs) -> Result<()> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    rt.block_on(async move {
        let started = std::time::Instant::now();
        let mut config = skiff_server::ServerConfig::new(
            args.data_dir.unwrap_or_else(skiff_server::default_data_dir),
        );
        config.bind = args.bind;
        config.port = args.port;
        config.tls_sans = args.tls_san;
        config.service_cidr = args.service_cidr;
        config.cluster_cidr = args.cluster_cidr;
        config.node = args.node.options(args.service_cidr, args.cluster_cidr);
        config.controller_config.node_lifecycle.grace_period =
            std::time::Duration::from_secs(args.node_monitor_grace_period.max(1));
        config
            .controller_config
            .node_lifecycle
            .default_eviction_timeout = std::time::Duration::from_secs(args.pod_eviction_timeout);
        let running = skiff_server::start(config).await?;
        println!(
            "skiff is ready at https://{} ({} ms)\nexport KUBECONFIG={}",
            running.addr,
            started.elapsed().as_millis(),
            running.kubeconfig.display()
        );
        wait_for_signal().await?;
        eprintln!("shutting down");
        running.shutdown().await;
        Ok(())
    })
}

fn agent(args: AgentArgs) -> Result<()> {
    let mut options = args
        .node
        .options(args.service_cidr, args.cluster_cidr)
        .context("--disable-agent makes no sense for `skiff agent`")?;
    options.cluster_cidr = args.cluster_cidr;
    let data = args
        .data_dir
        .unwrap_or_else(|| skiff_server::default_data_dir().join("agent"));
    std::fs::create_dir_all(&data).with_context(|| format!("creating {}", data.display()))?;
    let ca = std::fs::read_to_string(&args.ca_file)
        .with_context(|| format!("reading the CA certificate {}", args.ca_file.display()))?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    rt.block_on(async move {
        let client = skiff_client::remote(&args.server, args.token.trim(), ca.as_bytes())
            .context("building the API client")?;
        client
            .apiserver_version()
            .await
            .with_context(|| format!("reaching the API server at {}", args.server))?;
        let node =
            skiff_server::node::start_node(client, &options, args.service_cidr, &data, &ca).await?;
        println!("node {} joined {}", node.node_name(), args.server);
        wait_for_signal().await?;
        eprintln!("shutting down (containers keep running; `skiff killall` removes them)");
        node.shutdown().await;
        Ok(())
    })
}

fn killall(args: KillallArgs) -> Result<()> {
    let data = args.data_dir.unwrap_or_else(skiff_server::default_data_dir);
    let report = skiff_server::node::killall(&data)?;
    println!("{report}");
    Ok(())
}

async fn wait_for_signal() -> Result<()> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).context("installing the SIGTERM handler")?;
    tokio::select! {
        r = tokio::signal::ctrl_c() => r.context("waiting for Ctrl-C")?,
        _ = term.recv() => {}
    }
    Ok(())
}

fn serve(args: skiff_serving::ServeArgs) -> Result<()> {
    let rt = skiff_serving::sched::runtime()?;
    rt.block_on(skiff_serving::run(args))
}

fn kubeconfig(args: KubeconfigArgs) -> Result<()> {
    let dir = args.data_dir.unwrap_or_else(skiff_server::default_data_dir);
    let path = skiff_server::kubeconfig_path(&dir);
    if !path.exists() {
        anyhow::bail!(
            "no kubeconfig at {}: start the cluster first with `skiff up`",
            path.display()
        );
    }
    if args.raw {
        print!(
            "{}",
            std::fs::read_to_string(&path)
                .with_context(|| format!("reading {}", path.display()))?
        );
    } else {
        println!("export KUBECONFIG={}", path.display());
    }
    Ok(())
}
