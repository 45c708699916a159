//! Runs `skiff up` as a child process: start, time to the first good `/readyz`, memory and CPU
//! from /proc, and a clean stop (SIGTERM, then SIGKILL if it hangs).

use crate::client::{self, Endpoint};
use anyhow::{Context, Result, bail};
use http::{Method, StatusCode};
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// How often readiness is polled while the server starts.
const POLL: Duration = Duration::from_millis(2);
/// Longest a start may take before the benchmark gives up.
const START_LIMIT: Duration = Duration::from_secs(30);

/// A running `skiff up`; stopped (killed if need be) when dropped.
pub struct Server {
    child: Child,
    pub addr: SocketAddr,
    pub data_dir: PathBuf,
    /// Spawn to first 200 from `/readyz`, as the benchmark saw it.
    pub ready_after: Duration,
    /// What skiff printed about its own start-up (the "(N ms)" of its ready line).
    pub reported_ms: Option<u64>,
}

/// A free port on 127.0.0.1 (picked by the kernel, then released for skiff to bind).
fn free_port() -> Result<u16> {
    let l = std::net::TcpListener::bind("127.0.0.1:0")?;
    Ok(l.local_addr()?.port())
}

/// Parses "skiff is ready at https://... (123 ms)".
fn reported_ms(line: &str) -> Option<u64> {
    let inside = line.rsplit_once('(')?.1.strip_suffix(" ms)")?;
    inside.trim().parse().ok()
}

impl Server {
    /// Starts skiff on `data_dir` and waits until `/readyz` answers 200.
    pub async fn start(skiff: &Path, data_dir: &Path, log: &Path) -> Result<Server> {
        let port = free_port()?;
        let addr: SocketAddr = ([127, 0, 0, 1], port).into();
        let log_file = std::fs::File::create(log)
            .with_context(|| format!("creating the server log {}", log.display()))?;
        let spawned = Instant::now();
        let mut child = Command::new(skiff)
            .arg("up")
            // The control-plane benchmark measures the API and store, not a node.
            .arg("--disable-agent")
            .arg("--data-dir")
            .arg(data_dir)
            .arg("--port")
            .arg(port.to_string())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(log_file)
            .spawn()
            .with_context(|| format!("starting {}", skiff.display()))?;
        let (line_tx, line_rx) = std::sync::mpsc::channel::<String>();
        if let Some(out) = child.stdout.take() {
            std::thread::spawn(move || {
                for line in BufReader::new(out).lines().map_while(Result::ok) {
                    let _ = line_tx.send(line);
                }
            });
        }
        let mut server = Server {
            child,
            addr,
            data_dir: data_dir.to_path_buf(),
            ready_after: Duration::ZERO,
            reported_ms: None,
        };
        server.ready_after = server.wait_ready(spawned).await?;
        // The ready line is printed as the listener starts, so it is there by now or soon.
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            match line_rx.recv_timeout(Duration::from_millis(100)) {
                Ok(line) if line.contains("is ready at") => {
                    server.reported_ms = reported_ms(&line);
                    break;
                }
                Ok(_) | Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {}
                Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => break,
            }
        }
        // /readyz can answer while start-up is still under way; a start that then fails
        // (or never says it is ready) is no start at all.
        if let Some(status) = server.child.try_wait()? {
            bail!(
                "skiff answered /readyz but then exited ({status}); see {}",
                log.display()
            );
        }
        if server.reported_ms.is_none() {
            bail!("skiff answered /readyz but never printed its ready line");
        }
        Ok(server)
    }

    async fn wait_ready(&mut self, spawned: Instant) -> Result<Duration> {
        let ca_path = self.data_dir.join("pki/ca.crt");
        let mut endpoint: Option<Endpoint> = None;
        loop {
            if spawned.elapsed() > START_LIMIT {
                bail!("skiff was not ready after {START_LIMIT:?}");
            }
            if let Some(status) = self.child.try_wait()? {
                bail!("skiff exited during start-up: {status}");
            }
            if endpoint.is_none() {
                // On a fresh data dir the CA appears during start-up; until then keep polling.
                endpoint = std::fs::read(&ca_path)
                    .ok()
                    .and_then(|pem| client::tls_config(&pem).ok())
                    .map(|tls| Endpoint {
                        addr: self.addr,
                        tls,
                        authorization: None,
                    });
            }
            if let Some(ep) = &endpoint
                && readyz(ep).await
            {
                return Ok(spawned.elapsed());
            }
            tokio::time::sleep(POLL).await;
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The client endpoint with the admin token.
    pub fn endpoint(&self) -> Result<Endpoint> {
        Endpoint::from_data_dir(self.addr, &self.data_dir)
    }

    /// Resident memory in MiB (VmRSS).
    pub fn rss_mib(&self) -> Result<f64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid()))?;
        let kib = status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse::<f64>().ok())
            .context("no VmRSS in /proc/<pid>/status")?;
        Ok(kib / 1024.0)
    }

    /// CPU time (user + system) the server has used so far.
    pub fn cpu_time(&self) -> Result<Duration> {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.pid()))?;
        // Fields after the parenthesised command name; utime and stime are the 14th and 15th.
        let rest = stat.rsplit_once(')').context("malformed stat")?.1;
        let fields: Vec<&str> = rest.split_whitespace().collect();
        let ticks: u64 = fields
            .get(11)
            .and_then(|u| u.parse::<u64>().ok())
            .zip(fields.get(12).and_then(|s| s.parse::<u64>().ok()))
            .map(|(u, s)| u + s)
            .context("no utime/stime in stat")?;
        let hz = rustix::param::clock_ticks_per_second().max(1);
        Ok(Duration::from_secs_f64(ticks as f64 / hz as f64))
    }

    /// SIGTERM and wait for a clean exit; SIGKILL after 10 s.
    pub fn stop(mut self) -> Result<()> {
        self.terminate()
    }

    fn terminate(&mut self) -> Result<()> {
        if self.child.try_wait()?.is_some() {
            return Ok(());
        }
        if let Some(pid) = rustix::process::Pid::from_raw(self.child.id() as i32) {
            let _ = rustix::process::kill_process(pid, rustix::process::Signal::TERM);
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if self.child.try_wait()?.is_some() {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        self.child.kill()?;
        self.child.wait()?;
        bail!("skiff did not stop within 10 s of SIGTERM")
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// One readiness probe on a fresh connection, as a load balancer would.
async fn readyz(ep: &Endpoint) -> bool {
    let probe = async {
        let conn = ep.connect().await?;
        let (status, _) = conn.call(Method::GET, "/readyz", None).await?;
        anyhow::Ok(status == StatusCode::OK)
    };
    matches!(
        tokio::time::timeout(Duration::from_secs(1), probe).await,
        Ok(Ok(true))
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_reported_start_time() {
        assert_eq!(
            reported_ms("skiff is ready at https://127.0.0.1:4431 (87 ms)"),
            Some(87)
        );
        assert_eq!(reported_ms("export KUBECONFIG=/x"), None);
    }
}
