//! Liveness, readiness and startup probes (httpGet, tcpSocket, exec) with the Kubernetes
//! defaults, run by one task per container that reports transitions to the pod worker, and
//! lifecycle hooks. One deliberate difference: a readiness probe that has never succeeded
//! is retried sooner than its period (its failures reported only from the kubelet's first
//! regular tick on), so a new pod is Ready as soon as it answers; a startup
//! probe likewise tries early, but counts (and reports) only attempts from the latest time the
//! kubelet's first one could come, so a slow starter gets at least Kubernetes' budget.
//! Liveness waits as long: its first attempt comes a period after the start (or after
//! `initialDelaySeconds`, if longer), never while the server is still binding.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::{Container, Probe};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use skiff_runtime::{ExecSpec, Runtime, RuntimeError};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;

/// Which probe.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProbeKind {
    Startup,
    Liveness,
    Readiness,
}

impl ProbeKind {
    pub fn title(self) -> &'static str {
        match self {
            ProbeKind::Startup => "Startup",
            ProbeKind::Liveness => "Liveness",
            ProbeKind::Readiness => "Readiness",
        }
    }
}

/// One probe attempt's outcome.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Success,
    Failure(String),
    /// The probe cannot run here (e.g. exec on a runtime without exec): treated as absent.
    Unsupported(String),
}

/// What the probe task tells the pod worker.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProbeEvent {
    /// The startup probe succeeded (or there is none): `started`, and the other probes run.
    Started,
    /// Readiness changed.
    Ready(bool),
    /// Liveness or startup failed `failureThreshold` times: the container must be restarted.
    Failed { kind: ProbeKind, message: String },
    /// A failed attempt (an `Unhealthy` event).
    Unhealthy { kind: ProbeKind, message: String },
    /// A probe that cannot run on this runtime was skipped.
    Skipped { kind: ProbeKind, message: String },
}

/// A probe with the Kubernetes defaults filled in.
#[derive(Debug, Clone)]
pub struct Settings {
    pub initial_delay: Duration,
    pub period: Duration,
    pub timeout: Duration,
    pub success_threshold: u32,
    pub failure_threshold: u32,
}

impl Settings {
    pub fn of(p: &Probe) -> Settings {
        let secs = |v: Option<i32>, d: i32| Duration::from_secs(v.unwrap_or(d).max(0) as u64);
        Settings {
            initial_delay: secs(p.initial_delay_seconds, 0),
            period: secs(p.period_seconds, 10).max(Duration::from_secs(1)),
            timeout: secs(p.timeout_seconds, 1).max(Duration::from_secs(1)),
            success_threshold: p.success_threshold.unwrap_or(1).max(1) as u32,
            failure_threshold: p.failure_threshold.unwrap_or(3).max(1) as u32,
        }
    }

    /// The latest the kubelet first probes a container's liveness or startup after its start.
    /// Its probe worker is created with the pod and ticks every `periodSeconds`, skipping
    /// ticks before the container runs and before `initialDelaySeconds` have passed; only
    /// readiness is triggered at once. So its first such probe comes within this long of the
    /// start, and never before `initialDelaySeconds`; waiting this long never probes sooner
    /// than the kubelet could. Probing liveness at the start instead would log a "Liveness
    /// probe failed: connection refused" event for every server that takes a few
    /// milliseconds to bind.
    pub fn first_tick(&self) -> Duration {
        self.initial_delay.max(self.period)
    }
}

/// Where probes go: the pod's IP, and the runtime for exec.
#[derive(Clone)]
pub struct Target {
    pub pod_ip: IpAddr,
    pub runtime: Arc<dyn Runtime>,
    pub container_id: String,
    pub container: Container,
    /// What the last agent reported for an adopted container; false for a new one.
    pub initially_ready: bool,
    pub initially_started: bool,
}

fn port_of(target: &Target, port: &IntOrString) -> Result<u16, String> {
    match port {
        IntOrString::Int(p) => u16::try_from(*p).map_err(|_| format!("invalid port {p}")),
        IntOrString::String(name) => {
            if let Ok(p) = name.parse::<u16>() {
                return Ok(p);
            }
            target
                .container
                .ports
                .iter()
                .flatten()
                .find(|p| p.name.as_deref() == Some(name.as_str()))
                .and_then(|p| u16::try_from(p.container_port).ok())
                .ok_or_else(|| format!("unknown port name {name:?}"))
        }
    }
}

/// Runs one attempt of `probe`.
pub async fn attempt(probe: &Probe, target: &Target, timeout: Duration) -> Outcome {
    if let Some(h) = &probe.http_get {
        let port = match port_of(target, &h.port) {
            Ok(p) => p,
            Err(e) => return Outcome::Failure(e),
        };
        let host: IpAddr = match h.host.as_deref().filter(|h| !h.is_empty()) {
            Some(h) => match h.parse() {
                Ok(ip) => ip,
                Err(_) => return Outcome::Failure(format!("host {h:?} is not an IP address")),
            },
            None => target.pod_ip,
        };
        if h.scheme.as_deref() == Some("HTTPS") {
            return Outcome::Unsupported("HTTPS probes are not supported by skiff yet".into());
        }
        let path = h.path.clone().unwrap_or_else(|| "/".into());
        let path = if path.starts_with('/') {
            path
        } else {
            format!("/{path}")
        };
        let headers: Vec<(String, String)> = h
            .http_headers
            .iter()
            .flatten()
            .map(|h| (h.name.clone(), h.value.clone()))
            .collect();
        let addr = SocketAddr::new(host, port);
        let url = format!("http://{addr}{path}");
        return match tokio::time::timeout(timeout, http_get(addr, &path, &headers)).await {
            Err(_) => Outcome::Failure(format!(
                "Get \"{url}\": context deadline exceeded (Client.Timeout exceeded while awaiting headers)"
            )),
            Ok(Err(e)) => Outcome::Failure(format!("Get \"{url}\": dial tcp {addr}: {e}")),
            Ok(Ok(code)) if (200..400).contains(&code) => Outcome::Success,
            Ok(Ok(code)) => Outcome::Failure(format!("HTTP probe failed with statuscode: {code}")),
        };
    }
    if let Some(t) = &probe.tcp_socket {
        let port = match port_of(target, &t.port) {
            Ok(p) => p,
            Err(e) => return Outcome::Failure(e),
        };
        let host: IpAddr = t
            .host
            .as_deref()
            .and_then(|h| h.parse().ok())
            .unwrap_or(target.pod_ip);
        let addr = SocketAddr::new(host, port);
        return match tokio::time::timeout(timeout, tokio::net::TcpStream::connect(addr)).await {
            Ok(Ok(_)) => Outcome::Success,
            Ok(Err(e)) => Outcome::Failure(format!("dial tcp {addr}: connect: {}", short_io(&e))),
            Err(_) => Outcome::Failure(format!("dial tcp {addr}: i/o timeout")),
        };
    }
    if let Some(e) = &probe.exec {
        if !target.runtime.capabilities().exec {
            return Outcome::Unsupported(format!(
                "exec probes are not supported by the {} runtime; probe skipped",
                target.runtime.name()
            ));
        }
        let spec = ExecSpec {
            command: e.command.clone().unwrap_or_default(),
            tty: false,
            stdin: false,
        };
        return match tokio::time::timeout(
            timeout,
            exec(&target.runtime, &target.container_id, &spec),
        )
        .await
        {
            Err(_) => Outcome::Failure(format!("command {:?} timed out", spec.command.join(" "))),
            Ok(Err(RuntimeError::Unsupported { .. })) => Outcome::Unsupported(format!(
                "exec probes are not supported by the {} runtime; probe skipped",
                target.runtime.name()
            )),
            Ok(Err(e)) => Outcome::Failure(e.to_string()),
            Ok(Ok((0, _))) => Outcome::Success,
            Ok(Ok((_, output))) => Outcome::Failure(output),
        };
    }
    if probe.grpc.is_some() {
        return Outcome::Unsupported(
            "gRPC probes are not supported by skiff yet; probe skipped".into(),
        );
    }
    Outcome::Unsupported("probe has no handler".into())
}

fn short_io(e: &std::io::Error) -> String {
    match e.kind() {
        std::io::ErrorKind::ConnectionRefused => "connection refused".into(),
        _ => e.to_string(),
    }
}

/// A minimal HTTP/1.1 GET; returns the status code.
async fn http_get(
    addr: SocketAddr,
    path: &str,
    headers: &[(String, String)],
) -> std::io::Result<u16> {
    let mut s = tokio::net::TcpStream::connect(addr).await?;
    let mut req = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
    if !headers
        .iter()
        .any(|(k, _)| k.eq_ignore_ascii_case("user-agent"))
    {
        req.push_str("User-Agent: kube-probe/1.32\r\n");
    }
    if !headers
        .iter()
        .any(|(k, _)| k.eq_ignore_ascii_case("accept"))
    {
        req.push_str("Accept: */*\r\n");
    }
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    s.write_all(req.as_bytes()).await?;
    let mut buf = Vec::with_capacity(256);
    let mut chunk = [0u8; 256];
    // Only the status line matters; stop once it is in.
    while !buf.contains(&b'\n') && buf.len() < 4096 {
        let n = s.read(&mut chunk).await?;
        if n == 0 {
            break;
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    let line = String::from_utf8_lossy(&buf);
    let code = line
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse::<u16>().ok())
        .ok_or_else(|| {
            std::io::Error::new(std::io::ErrorKind::InvalidData, "malformed HTTP response")
        })?;
    Ok(code)
}

/// Runs a command in the container; returns its exit code and (bounded) output.
async fn exec(
    runtime: &Arc<dyn Runtime>,
    id: &str,
    spec: &ExecSpec,
) -> Result<(i32, String), RuntimeError> {
    let mut p = runtime.exec(id, spec).await?;
    drop(p.stdin.take());
    let mut out = Vec::new();
    let mut err = Vec::new();
    let limit = 10 * 1024;
    let read_out = async {
        let _ = (&mut p.stdout).take(limit).read_to_end(&mut out).await;
    };
    let read_err = async {
        if let Some(e) = p.stderr.as_mut() {
            let _ = e.take(limit).read_to_end(&mut err).await;
        }
    };
    tokio::join!(read_out, read_err);
    let code = p.exit.await?;
    out.extend_from_slice(&err);
    Ok((code, String::from_utf8_lossy(&out).trim_end().to_string()))
}

/// Runs a lifecycle hook (postStart / preStop) handler: exec, httpGet or sleep.
pub async fn run_hook(
    h: &k8s_openapi::api::core::v1::LifecycleHandler,
    target: &Target,
    timeout: Duration,
) -> Result<(), String> {
    if let Some(s) = &h.sleep {
        tokio::time::sleep(Duration::from_secs(s.seconds.max(0) as u64).min(timeout)).await;
        return Ok(());
    }
    if h.exec.is_none() && h.http_get.is_none() {
        // tcpSocket hooks are deprecated and do nothing, as in Kubernetes.
        return Ok(());
    }
    let as_probe = Probe {
        exec: h.exec.clone(),
        http_get: h.http_get.clone(),
        ..Probe::default()
    };
    match attempt(&as_probe, target, timeout).await {
        Outcome::Success => Ok(()),
        Outcome::Failure(m) | Outcome::Unsupported(m) => Err(m),
    }
}

/// Stops a container like the kubelet: its preStop hook first (within the grace period),
/// then SIGTERM, then SIGKILL once the rest of the grace period has passed. Returns the
/// hook's error, if it failed, next to the stop's result.
pub async fn kill_container(
    target: &Target,
    grace: Duration,
) -> (
    Option<String>,
    Result<skiff_runtime::ContainerStatus, RuntimeError>,
) {
    let started = std::time::Instant::now();
    let mut hook_error = None;
    if let Some(h) = target
        .container
        .lifecycle
        .as_ref()
        .and_then(|l| l.pre_stop.as_ref())
        && !grace.is_zero()
        && let Err(e) = run_hook(h, target, grace).await
    {
        hook_error = Some(e);
    }
    // Like the kubelet, SIGTERM always gets a short moment even after a long hook.
    let rest = grace
        .saturating_sub(started.elapsed())
        .max(Duration::from_secs(2).min(grace));
    (
        hook_error,
        target.runtime.stop(&target.container_id, rest).await,
    )
}

/// Counts consecutive results against the thresholds.
#[derive(Debug, Default)]
struct Counter {
    successes: u32,
    failures: u32,
}

impl Counter {
    /// Records an attempt; `Some(true/false)` when a threshold is (newly or again) met.
    fn record(&mut self, ok: bool, s: &Settings) -> Option<bool> {
        if ok {
            self.failures = 0;
            self.successes += 1;
            (self.successes >= s.success_threshold).then_some(true)
        } else {
            self.successes = 0;
            self.failures += 1;
            (self.failures >= s.failure_threshold).then_some(false)
        }
    }
}

type Tx = mpsc::UnboundedSender<(String, ProbeEvent)>;

/// First quick retry of a readiness probe that has never succeeded.
const FIRST_RETRY: Duration = Duration::from_millis(25);

fn send(tx: &Tx, id: &str, ev: ProbeEvent) -> bool {
    tx.send((id.to_string(), ev)).is_ok()
}

/// The probe task of one container instance: startup first, then liveness and readiness
/// side by side. Ends when the worker drops the receiver or aborts it.
pub async fn run(target: Target, tx: Tx) {
    // The container has just started (or was adopted); probe delays count from here.
    let start = tokio::time::Instant::now();
    let id = target.container_id.clone();
    let c = target.container.clone();
    if let Some(p) = c
        .startup_probe
        .as_ref()
        .filter(|_| !target.initially_started)
    {
        let s = Settings::of(p);
        let first_tick = start + s.first_tick();
        tokio::time::sleep_until(start + s.initial_delay).await;
        let mut counter = Counter::default();
        let mut fast = FIRST_RETRY;
        loop {
            let outcome = attempt(p, &target, s.timeout).await;
            // Attempts that end before the kubelet's first tick are extra: a success counts,
            // a failure is retried sooner and neither counted nor reported.
            let early = tokio::time::Instant::now() < first_tick;
            match outcome {
                Outcome::Failure(_) if early => {
                    tokio::time::sleep_until(first_tick.min(tokio::time::Instant::now() + fast))
                        .await;
                    fast *= 2;
                    continue;
                }
                Outcome::Unsupported(m) => {
                    send(
                        &tx,
                        &id,
                        ProbeEvent::Skipped {
                            kind: ProbeKind::Startup,
                            message: m,
                        },
                    );
                    break;
                }
                Outcome::Success => {
                    if counter.record(true, &s) == Some(true) {
                        break;
                    }
                }
                Outcome::Failure(m) => {
                    let done = counter.record(false, &s) == Some(false);
                    if !send(
                        &tx,
                        &id,
                        ProbeEvent::Unhealthy {
                            kind: ProbeKind::Startup,
                            message: m.clone(),
                        },
                    ) {
                        return;
                    }
                    if done {
                        send(
                            &tx,
                            &id,
                            ProbeEvent::Failed {
                                kind: ProbeKind::Startup,
                                message: m,
                            },
                        );
                        return;
                    }
                }
            }
            tokio::time::sleep(s.period).await;
        }
    }
    if !send(&tx, &id, ProbeEvent::Started) {
        return;
    }
    let liveness = async {
        let Some(p) = &c.liveness_probe else { return };
        let s = Settings::of(p);
        // From the container's start, as the kubelet counts it: a long startup probe has used
        // up some or all of the wait.
        tokio::time::sleep_until(start + s.first_tick()).await;
        let mut counter = Counter::default();
        loop {
            match attempt(p, &target, s.timeout).await {
                Outcome::Unsupported(m) => {
                    send(
                        &tx,
                        &id,
                        ProbeEvent::Skipped {
                            kind: ProbeKind::Liveness,
                            message: m,
                        },
                    );
                    return;
                }
                Outcome::Success => {
                    counter.record(true, &s);
                }
                Outcome::Failure(m) => {
                    let done = counter.record(false, &s) == Some(false);
                    if !send(
                        &tx,
                        &id,
                        ProbeEvent::Unhealthy {
                            kind: ProbeKind::Liveness,
                            message: m.clone(),
                        },
                    ) {
                        return;
                    }
                    if done {
                        send(
                            &tx,
                            &id,
                            ProbeEvent::Failed {
                                kind: ProbeKind::Liveness,
                                message: m,
                            },
                        );
                        return;
                    }
                }
            }
            tokio::time::sleep(s.period).await;
        }
    };
    let readiness = async {
        let Some(p) = &c.readiness_probe else {
            send(&tx, &id, ProbeEvent::Ready(true));
            return;
        };
        let s = Settings::of(p);
        tokio::time::sleep(s.initial_delay).await;
        let mut counter = Counter::default();
        let mut ready = target.initially_ready;
        // Until the first success, a failed attempt is retried sooner than `periodSeconds`
        // (from 25 ms, doubling): a just-started server is usually listening within
        // milliseconds, and waiting a whole period for its second probe would delay
        // Ready (and rollouts) for nothing. Unhealthy events keep the period's pace.
        let mut warming = !ready;
        let mut fast = FIRST_RETRY;
        let mut last_event: Option<std::time::Instant> = None;
        loop {
            let verdict = match attempt(p, &target, s.timeout).await {
                Outcome::Unsupported(m) => {
                    send(
                        &tx,
                        &id,
                        ProbeEvent::Skipped {
                            kind: ProbeKind::Readiness,
                            message: m,
                        },
                    );
                    send(&tx, &id, ProbeEvent::Ready(true));
                    return;
                }
                Outcome::Success => {
                    warming = false;
                    counter.record(true, &s)
                }
                Outcome::Failure(m) => {
                    // While warming, failures are reported from the kubelet's first regular
                    // tick on, at its pace: a server that binds within milliseconds of its
                    // start logs no "Readiness probe failed" event for the quick retries.
                    let due = !warming
                        || (tokio::time::Instant::now() >= start + s.first_tick()
                            && last_event.is_none_or(|t| t.elapsed() >= s.period));
                    if due {
                        last_event = Some(std::time::Instant::now());
                        if !send(
                            &tx,
                            &id,
                            ProbeEvent::Unhealthy {
                                kind: ProbeKind::Readiness,
                                message: m,
                            },
                        ) {
                            return;
                        }
                    }
                    counter.record(false, &s)
                }
            };
            if let Some(v) = verdict
                && v != ready
            {
                ready = v;
                if !send(&tx, &id, ProbeEvent::Ready(v)) {
                    return;
                }
            }
            if warming && fast < s.period {
                tokio::time::sleep(fast).await;
                fast *= 2;
            } else {
                tokio::time::sleep(s.period).await;
            }
        }
    };
    tokio::join!(liveness, readiness);
    // Keep the task (and so the channel) alive: the worker aborts it with the container.
    std::future::pending::<()>().await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_like_kubernetes() {
        let s = Settings::of(&Probe::default());
        assert_eq!(s.period, Duration::from_secs(10));
        assert_eq!(s.timeout, Duration::from_secs(1));
        assert_eq!((s.success_threshold, s.failure_threshold), (1, 3));
        assert_eq!(s.initial_delay, Duration::ZERO);
    }

    #[test]
    fn first_tick_is_a_period_in() {
        let probe = |v: serde_json::Value| Settings::of(&serde_json::from_value(v).expect("probe"));
        let first = |v| probe(v).first_tick();
        assert_eq!(first(serde_json::json!({})), Duration::from_secs(10));
        assert_eq!(
            first(serde_json::json!({"periodSeconds": 2})),
            Duration::from_secs(2)
        );
        assert_eq!(
            first(serde_json::json!({"initialDelaySeconds": 30, "periodSeconds": 5})),
            Duration::from_secs(30)
        );
        assert_eq!(
            first(serde_json::json!({"initialDelaySeconds": 3, "periodSeconds": 5})),
            Duration::from_secs(5)
        );
    }

    #[test]
    fn counter_thresholds() {
        let s = Settings {
            initial_delay: Duration::ZERO,
            period: Duration::from_secs(1),
            timeout: Duration::from_secs(1),
            success_threshold: 2,
            failure_threshold: 2,
        };
        let mut c = Counter::default();
        assert_eq!(c.record(true, &s), None);
        assert_eq!(c.record(true, &s), Some(true));
        assert_eq!(c.record(false, &s), None);
        assert_eq!(c.record(false, &s), Some(false));
    }

    /// A target on 127.0.0.1 whose container has the given probes (JSON).
    fn target_with(dir: &std::path::Path, probes: serde_json::Value) -> Target {
        let rt: Arc<dyn Runtime> =
            Arc::new(skiff_runtime::process::ProcessRuntime::new(dir).expect("runtime"));
        let mut container = serde_json::json!({"name": "c"});
        container
            .as_object_mut()
            .expect("object")
            .extend(probes.as_object().expect("probes").clone());
        Target {
            pod_ip: "127.0.0.1".parse().expect("ip"),
            runtime: rt,
            container_id: "x".into(),
            initially_ready: false,
            initially_started: false,
            container: serde_json::from_value(container).expect("container"),
        }
    }

    /// What the probe task reports within `window`.
    async fn events_within(target: Target, window: Duration) -> Vec<ProbeEvent> {
        let (tx, mut rx) = mpsc::unbounded_channel();
        let task = tokio::spawn(run(target, tx));
        tokio::time::sleep(window).await;
        task.abort();
        let mut out = Vec::new();
        while let Ok((_, ev)) = rx.try_recv() {
            out.push(ev);
        }
        out
    }

    /// A server on 127.0.0.1:`port` that starts listening after `delay`, as a slow one binds.
    fn listen_after(port: u16, delay: Duration) -> tokio::task::JoinHandle<()> {
        tokio::spawn(async move {
            tokio::time::sleep(delay).await;
            let l = tokio::net::TcpListener::bind(("127.0.0.1", port))
                .await
                .expect("bind");
            loop {
                let _ = l.accept().await;
            }
        })
    }

    fn free_port() -> u16 {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        l.local_addr().expect("addr").port()
    }

    #[tokio::test]
    async fn a_server_that_binds_late_is_started_without_a_counted_failure() {
        let dir = tempfile::tempdir().expect("tempdir");
        let port = free_port();
        // failureThreshold 1: one counted failure would restart the container.
        let target = target_with(
            dir.path(),
            serde_json::json!({"startupProbe": {"tcpSocket": {"port": port}, "periodSeconds": 2,
                "failureThreshold": 1}}),
        );
        let listener = listen_after(port, Duration::from_millis(300));
        let events = events_within(target, Duration::from_millis(1200)).await;
        listener.abort();
        assert_eq!(events, vec![ProbeEvent::Started, ProbeEvent::Ready(true)]);
    }

    #[tokio::test]
    async fn startup_failures_count_from_the_first_tick() {
        let dir = tempfile::tempdir().expect("tempdir");
        let target = target_with(
            dir.path(),
            serde_json::json!({"startupProbe": {"tcpSocket": {"port": free_port()},
                "periodSeconds": 1, "failureThreshold": 1}}),
        );
        let (tx, mut rx) = mpsc::unbounded_channel();
        let started = tokio::time::Instant::now();
        let task = tokio::spawn(run(target, tx));
        let (_, first) = rx.recv().await.expect("an event");
        let at = started.elapsed();
        task.abort();
        assert!(
            matches!(
                first,
                ProbeEvent::Unhealthy {
                    kind: ProbeKind::Startup,
                    ..
                }
            ),
            "{first:?}"
        );
        assert!(
            at >= Duration::from_millis(950),
            "first counted failure after {at:?}"
        );
    }

    #[tokio::test]
    async fn readiness_of_a_late_binder_reports_no_failure() {
        let dir = tempfile::tempdir().expect("tempdir");
        let port = free_port();
        let target = target_with(
            dir.path(),
            serde_json::json!({"readinessProbe": {"tcpSocket": {"port": port}, "periodSeconds": 2}}),
        );
        let listener = listen_after(port, Duration::from_millis(200));
        let events = events_within(target, Duration::from_millis(800)).await;
        listener.abort();
        assert_eq!(events, vec![ProbeEvent::Started, ProbeEvent::Ready(true)]);
    }

    #[tokio::test]
    async fn liveness_is_not_probed_before_a_period() {
        let dir = tempfile::tempdir().expect("tempdir");
        let target = target_with(
            dir.path(),
            serde_json::json!({"livenessProbe": {"tcpSocket": {"port": free_port()},
                "periodSeconds": 1}}),
        );
        let early = events_within(target.clone(), Duration::from_millis(700)).await;
        assert_eq!(early, vec![ProbeEvent::Started, ProbeEvent::Ready(true)]);
        let later = events_within(target, Duration::from_millis(1500)).await;
        assert!(
            later.iter().any(|e| matches!(
                e,
                ProbeEvent::Unhealthy {
                    kind: ProbeKind::Liveness,
                    ..
                }
            )),
            "{later:?}"
        );
    }

    #[tokio::test]
    async fn http_and_tcp_probes() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let server = tokio::spawn(async move {
            loop {
                let Ok((mut s, _)) = listener.accept().await else {
                    return;
                };
                let mut buf = [0u8; 512];
                let n = s.read(&mut buf).await.unwrap_or(0);
                let req = String::from_utf8_lossy(&buf[..n]).to_string();
                let reply = if req.starts_with("GET /ok ") {
                    "200 OK"
                } else {
                    "503 Unavailable"
                };
                let _ = s
                    .write_all(format!("HTTP/1.1 {reply}\r\nContent-Length: 0\r\n\r\n").as_bytes())
                    .await;
            }
        });
        let dir = tempfile::tempdir().expect("tempdir");
        let rt: Arc<dyn Runtime> =
            Arc::new(skiff_runtime::process::ProcessRuntime::new(dir.path()).expect("runtime"));
        let target = Target {
            pod_ip: "127.0.0.1".parse().expect("ip"),
            runtime: rt,
            container_id: "x".into(),
            initially_ready: false,
            initially_started: false,
            container: serde_json::from_value(serde_json::json!({
                "name": "c", "ports": [{"name": "http", "containerPort": port}]
            }))
            .expect("container"),
        };
        let probe = |v: serde_json::Value| -> Probe { serde_json::from_value(v).expect("probe") };
        let t = Duration::from_secs(1);
        let ok = probe(serde_json::json!({"httpGet": {"path": "/ok", "port": "http"}}));
        assert_eq!(attempt(&ok, &target, t).await, Outcome::Success);
        let bad = probe(serde_json::json!({"httpGet": {"path": "/bad", "port": port}}));
        assert_eq!(
            attempt(&bad, &target, t).await,
            Outcome::Failure("HTTP probe failed with statuscode: 503".into())
        );
        let tcp = probe(serde_json::json!({"tcpSocket": {"port": port}}));
        assert_eq!(attempt(&tcp, &target, t).await, Outcome::Success);
        server.abort();
        let _ = server.await;
        let closed = probe(serde_json::json!({"tcpSocket": {"port": port}}));
        assert!(matches!(
            attempt(&closed, &target, t).await,
            Outcome::Failure(_)
        ));
        // Exec needs a runtime that can; the container id here exists in none.
        let exec = probe(serde_json::json!({"exec": {"command": ["true"]}}));
        let out = attempt(&exec, &target, t).await;
        if target.runtime.capabilities().exec {
            assert!(matches!(out, Outcome::Failure(_)), "{out:?}");
        } else {
            assert!(matches!(out, Outcome::Unsupported(_)), "{out:?}");
        }
    }
}
