//! The skiff model server: ONNX backends, Open Inference Protocol over REST and gRPC, batching, metrics.

pub mod alloc;
pub mod backend;
pub mod batcher;
pub mod classify;
pub mod grpc;
pub mod http;
mod json_scan;
pub mod metrics;
pub mod model_config;
pub mod pbtxt;
pub mod protocol;
pub mod repository;
pub mod sched;
pub mod service;
pub mod simple;
pub mod statistics;
pub mod tensor;
pub mod triton_config;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;

use crate::backend::Backend;
use crate::backend::ort::OrtBackend;
use crate::metrics::Metrics;
use crate::repository::{Repository, ServingConfig};

/// Flags of `skiff serve`.
#[derive(Debug, Clone, clap::Args)]
pub struct ServeArgs {
    /// Model repository: DIR/<model>/<version>/model.onnx, optional DIR/<model>/model-settings.json.
    #[arg(long, value_name = "DIR")]
    pub model_repository: Option<PathBuf>,
    /// Serve one file as a model (version 1); repeatable.
    #[arg(long = "model", value_name = "NAME=PATH")]
    pub models: Vec<String>,
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1")]
    pub host: String,
    #[arg(long, default_value_t = 8080)]
    pub http_port: u16,
    #[arg(long, default_value_t = 8081)]
    pub grpc_port: u16,
    /// Inference engine: auto (ONNX Runtime if its library is found, else tract when built in),
    /// onnxruntime, or tract (needs the `tract` cargo feature).
    #[arg(long, default_value = "auto")]
    pub backend: String,
    /// Do not start the gRPC endpoint.
    #[arg(long)]
    pub no_grpc: bool,
    /// Inference threads in total (split across instances); default: the cgroup CPU quota.
    #[arg(long, value_parser = at_least_one)]
    pub threads: Option<usize>,
    /// Model instances (sessions with their own inference thread) per model version.
    #[arg(long, default_value_t = 1, value_parser = at_least_one)]
    pub instances: usize,
    /// Most rows merged into one execution, for models whose own settings do not say; 1 (the
    /// default) runs each request alone. Merging is opt-in, as in Triton and MLServer: it is
    /// right only for models whose rows are independent (every scikit-learn model), and it
    /// would mix clients' data in a model that combines rows, such as a softmax over the first
    /// axis.
    #[arg(long, default_value_t = 1, value_parser = at_least_one)]
    pub max_batch_size: usize,
    /// How long a request may wait for others to join its batch; 0 merges only what is already queued.
    #[arg(long, default_value_t = 0.0)]
    pub batch_delay_ms: f64,
    /// Requests waiting per model version before new ones are refused with 503.
    #[arg(long, default_value_t = 4096)]
    pub queue_capacity: usize,
    /// Largest request body accepted.
    #[arg(long, default_value_t = 64 * 1024 * 1024)]
    pub max_body_bytes: usize,
    /// How often the repository is scanned for new or changed versions; 0 disables hot reload.
    #[arg(long, default_value_t = 1000)]
    pub poll_interval_ms: u64,
    /// Exit at start-up when a model fails to load (as Triton does). `false` serves the models
    /// that loaded and reports the others on their ready endpoints and in the repository index.
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set, value_name = "BOOL")]
    pub exit_on_error: bool,
}

fn at_least_one(s: &str) -> Result<usize, String> {
    match s.parse::<usize>() {
        Ok(n) if n >= 1 => Ok(n),
        Ok(_) => Err("must be at least 1".into()),
        Err(e) => Err(e.to_string()),
    }
}

/// Parses `NAME=PATH`.
fn parse_model_flag(s: &str) -> anyhow::Result<(String, PathBuf)> {
    let (name, path) = s
        .split_once('=')
        .filter(|(n, p)| !n.is_empty() && !p.is_empty())
        .with_context(|| format!("--model {s:?}: expected NAME=PATH"))?;
    Ok((name.to_string(), PathBuf::from(path)))
}

/// Picks the inference backend named by `--backend`.
pub fn select_backend(choice: &str) -> anyhow::Result<Arc<dyn Backend>> {
    match choice {
        "onnxruntime" | "ort" => Ok(Arc::new(OrtBackend::new()?)),
        "tract" => tract_backend(),
        "auto" => match OrtBackend::new() {
            Ok(b) => Ok(Arc::new(b)),
            Err(ort_err) => {
                let tract = tract_backend().map_err(|tract_err| {
                    anyhow::anyhow!("no inference backend: {ort_err}; {tract_err}")
                })?;
                // Models tract cannot run fail to load later; say why ONNX Runtime was not used.
                tracing::warn!(reason = %ort_err, "ONNX Runtime is not available; using tract");
                Ok(tract)
            }
        },
        other => anyhow::bail!("unknown --backend {other:?}: expected auto, onnxruntime or tract"),
    }
}

#[cfg(feature = "tract")]
fn tract_backend() -> anyhow::Result<Arc<dyn Backend>> {
    Ok(Arc::new(backend::tract::TractBackend::new()))
}

#[cfg(not(feature = "tract"))]
fn tract_backend() -> anyhow::Result<Arc<dyn Backend>> {
    anyhow::bail!("the tract backend is not built in (cargo feature `tract`)")
}

/// Builds the repository for `args` and loads every model once.
pub async fn build_repository(
    args: &ServeArgs,
    backend: Arc<dyn Backend>,
) -> anyhow::Result<Arc<Repository>> {
    let files = args
        .models
        .iter()
        .map(|m| parse_model_flag(m))
        .collect::<anyhow::Result<Vec<_>>>()?;
    for (i, (name, _)) in files.iter().enumerate() {
        anyhow::ensure!(
            !files[..i].iter().any(|(other, _)| other == name),
            "--model {name}=... is given twice; each model needs its own name"
        );
        if let Some(dir) = &args.model_repository {
            anyhow::ensure!(
                !dir.join(name).is_dir(),
                "--model {name}=... names a model that {} also holds; give it another name",
                dir.display()
            );
        }
    }
    if files.is_empty() && args.model_repository.is_none() {
        anyhow::bail!("nothing to serve: give --model-repository DIR or --model NAME=PATH");
    }
    if let Some(dir) = &args.model_repository {
        anyhow::ensure!(
            dir.is_dir(),
            "--model-repository {} is not a directory",
            dir.display()
        );
    }
    let config = ServingConfig {
        // `--threads`, else the CPU quota of the cgroup (a pod's CPU limit), else the CPUs visible.
        intra_op_threads: args.threads.unwrap_or_else(backend::cpu_quota).max(1),
        instances: args.instances.max(1),
        max_batch_size: args.max_batch_size,
        batch_delay: Duration::from_secs_f64((args.batch_delay_ms.max(0.0)) / 1000.0),
        queue_capacity: args.queue_capacity.max(1),
    };
    let repo = Arc::new(Repository::new(
        backend,
        config,
        args.model_repository.clone(),
        files,
        Arc::new(Metrics::new()),
    ));
    let r = repo.clone();
    tokio::task::spawn_blocking(move || r.sync(false)).await?;
    Ok(repo)
}

/// Runs `skiff serve` until Ctrl-C or SIGTERM.
pub async fn run(args: ServeArgs) -> anyhow::Result<()> {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .try_init();
    let choice = args.backend.clone();
    let backend = tokio::task::spawn_blocking(move || select_backend(&choice)).await??;
    tracing::info!(backend = backend.capabilities().name, "inference backend");
    let repo = build_repository(&args, backend).await?;
    let failed = repo.unavailable();
    if args.exit_on_error && !failed.is_empty() {
        let list: Vec<String> = failed
            .iter()
            .map(|(model, reason)| format!("model {model:?}: {reason}"))
            .collect();
        anyhow::bail!(
            "{} of {} models failed to load (--exit-on-error false serves the others):\n  {}",
            failed.len(),
            repo.model_names().len(),
            list.join("\n  ")
        );
    }
    let http_addr: SocketAddr = format!("{}:{}", args.host, args.http_port)
        .parse()
        .with_context(|| format!("bad --host {:?}", args.host))?;
    let http_listener = tokio::net::TcpListener::bind(http_addr)
        .await
        .with_context(|| format!("binding HTTP {http_addr}"))?;
    let grpc_listener = if args.no_grpc {
        None
    } else {
        let addr: SocketAddr = format!("{}:{}", args.host, args.grpc_port).parse()?;
        Some((
            tokio::net::TcpListener::bind(addr)
                .await
                .with_context(|| format!("binding gRPC {addr}"))?,
            addr,
        ))
    };
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    if args.poll_interval_ms > 0 {
        let repo = repo.clone();
        let every = Duration::from_millis(args.poll_interval_ms);
        let mut stop = stop_rx.clone();
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    _ = tokio::time::sleep(every) => {}
                    _ = stop.changed() => return,
                }
                let r = repo.clone();
                if tokio::task::spawn_blocking(move || r.sync(true))
                    .await
                    .is_err()
                {
                    tracing::error!("repository scan panicked");
                }
            }
        });
    }
    let state = http::AppState {
        repo: repo.clone(),
        max_body_bytes: args.max_body_bytes,
    };
    let mut tasks = tokio::task::JoinSet::new();
    {
        let mut stop = stop_rx.clone();
        let app = http::router(state);
        tasks.spawn(async move {
            serve_router(http_listener, app, async move {
                let _ = stop.changed().await;
            })
            .await
            .context("HTTP server")
        });
    }
    if let Some((listener, _)) = grpc_listener {
        let mut stop = stop_rx.clone();
        let app = grpc::router(repo.clone(), args.max_body_bytes);
        tasks.spawn(async move {
            serve_router(listener, app, async move {
                let _ = stop.changed().await;
            })
            .await
            .context("gRPC server")
        });
    }
    tracing::info!(
        http = %http_addr,
        grpc = if args.no_grpc { "off".to_string() } else { format!("{}:{}", args.host, args.grpc_port) },
        models = ?repo.serving_names(),
        unavailable = ?failed.iter().map(|(m, _)| m).collect::<Vec<_>>(),
        threads = repo.config().intra_op_threads,
        "skiff serve ready"
    );
    tokio::select! {
        _ = shutdown_signal() => tracing::info!("shutting down"),
        Some(res) = tasks.join_next() => {
            let _ = stop_tx.send(true);
            return res?.map(|_| ());
        }
    }
    let _ = stop_tx.send(true);
    while let Some(res) = tasks.join_next().await {
        res??;
    }
    Ok(())
}

/// Serves `app` on `listener` as `skiff serve` serves its REST and gRPC routers, until
/// `shutdown` completes; the benchmark's HTTP floor (`examples/http_floor.rs`) uses it too, so
/// that the floor measures exactly this stack.
pub async fn serve_router(
    listener: tokio::net::TcpListener,
    app: axum::Router,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    serve_router_with(listener, app, shutdown, HEADER_READ_TIMEOUT).await
}

/// [`serve_router`] with another header-read timeout (tests use a short one).
pub async fn serve_router_with(
    listener: tokio::net::TcpListener,
    app: axum::Router,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
    header_read_timeout: Duration,
) -> std::io::Result<()> {
    use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
    use hyper_util::server::conn::auto::Builder;
    use hyper_util::server::graceful::GracefulShutdown;
    use hyper_util::service::TowerToHyperService;

    let mut builder = Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(header_read_timeout);
    let graceful = GracefulShutdown::new();
    // Connections still waiting for their first byte are dropped at shutdown (they hold no
    // request), so that they do not hold it up for the timeout.
    let (closing, closed) = tokio::sync::watch::channel(false);
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let tcp = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((tcp, _)) => tcp,
                Err(e) => {
                    // Out of file handles and the like: wait rather than spin; the
                    // connections already open go on.
                    tracing::warn!(error = %e, "cannot accept a connection");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let (builder, app, watcher) = (builder.clone(), app.clone(), graceful.watcher());
        let mut closed = closed.clone();
        tokio::spawn(async move {
            let mut tcp = tcp;
            // hyper's header timeout starts once the protocol is known; telling HTTP/1 from
            // HTTP/2 needs the first bytes, and a connection that never sends one would wait
            // there forever.
            let mut first = [0u8; 1];
            tokio::select! {
                got = tokio::time::timeout(header_read_timeout, tcp.peek(&mut first)) => {
                    if !matches!(got, Ok(Ok(n)) if n > 0) {
                        return;
                    }
                }
                _ = closed.wait_for(|&c| c) => return,
            }
            no_delay(&mut tcp);
            let conn = builder
                .serve_connection_with_upgrades(TokioIo::new(tcp), TowerToHyperService::new(app))
                .into_owned();
            if let Err(e) = watcher.watch(conn).await {
                tracing::debug!(error = %e, "connection ended with an error");
            }
        });
    }
    drop(listener);
    let _ = closing.send(true);
    // Requests in flight finish; idle connections are closed.
    graceful.shutdown().await;
    Ok(())
}

/// How long a client has to send a request's headers once its connection is ready for one.
/// A connection that sends nothing, or half its headers, for this long is closed (idle
/// keep-alive connections included), as nginx does after 60 s: otherwise idle sockets pile up
/// without bound, each holding buffers, until the pod's memory or file-handle limit stops the
/// server.
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(60);

/// Answers go out as soon as they are written: an HTTP/2 (gRPC) answer is several frames
/// (headers, data, trailers), and Nagle would hold the later ones back for the client's
/// delayed ACK.
fn no_delay(tcp: &mut tokio::net::TcpStream) {
    if let Err(e) = tcp.set_nodelay(true) {
        tracing::debug!(error = %e, "cannot set TCP_NODELAY");
    }
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = ctrl_c => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = ctrl_c.await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = ctrl_c.await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn model_flag_parsing() {
        assert_eq!(
            parse_model_flag("iris=/m/iris.onnx").unwrap(),
            ("iris".to_string(), PathBuf::from("/m/iris.onnx"))
        );
        assert!(parse_model_flag("iris").is_err());
        assert!(parse_model_flag("=x").is_err());
        assert!(parse_model_flag("a=").is_err());
    }
}
