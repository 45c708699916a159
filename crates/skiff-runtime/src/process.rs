//! The `process` runtime: runs a container's command directly on the host, for development
//! without root.
//!
//! NO ISOLATION: the command sees the host filesystem, network, PIDs and users, the image
//! is not unpacked (`ContainerSpec::image` is ignored) and no resource limits are enforced.
//! What it does give: the spec's environment (only it, plus a default `PATH`), working
//! directory, stdout+stderr captured to a log file in the CRI format (see [`crate::logs`]),
//! its own process group so signals reach the command's children too, and exit codes
//! reported like Kubernetes (128+signal).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use async_trait::async_trait;
use tokio::sync::watch;

use crate::logs::{Stream, pump};
use crate::runtime::{
    BoxedReader, BoxedWriter, Capabilities, ContainerSpec, ContainerState, ContainerStatus,
    ExecProcess, ExecSpec, Runtime, RuntimeError, validate_id,
};

/// `PATH` given to commands whose spec sets none (the one Docker images default to).
pub const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// How long an exit waits for the output still in the pipes to reach the log.
const LOG_DRAIN: std::time::Duration = std::time::Duration::from_secs(2);

/// How the main process ended: (exit code as Kubernetes reports it, killing signal).
type Exit = (i32, Option<i32>);

struct Container {
    spec: ContainerSpec,
    dir: PathBuf,
    state: Mutex<(ContainerState, Option<u32>)>,
    /// When it started and when it exited.
    times: Mutex<(Option<SystemTime>, Option<SystemTime>)>,
    exited: watch::Sender<Option<Exit>>,
}

/// See the module docs: no isolation whatsoever.
pub struct ProcessRuntime {
    root: PathBuf,
    containers: Mutex<HashMap<String, Arc<Container>>>,
}

impl ProcessRuntime {
    /// Keeps per-container state (the log file) under `root/<id>/`.
    pub fn new(root: impl Into<PathBuf>) -> Result<Self, RuntimeError> {
        let root = root.into();
        std::fs::create_dir_all(&root)
            .map_err(|e| RuntimeError::io(format!("creating {}", root.display()), e))?;
        Ok(ProcessRuntime {
            root,
            containers: Mutex::new(HashMap::new()),
        })
    }

    fn get(&self, id: &str) -> Result<Arc<Container>, RuntimeError> {
        self.containers
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(id)
            .cloned()
            .ok_or_else(|| RuntimeError::NotFound(id.to_string()))
    }
}

fn log_file(dir: &Path) -> PathBuf {
    dir.join("container.log")
}

impl Container {
    fn snapshot(&self) -> ContainerStatus {
        let (state, pid) = *self.state.lock().unwrap_or_else(|p| p.into_inner());
        let exit = *self.exited.borrow();
        let times = *self.times.lock().unwrap_or_else(|p| p.into_inner());
        ContainerStatus {
            id: self.spec.id.clone(),
            state,
            pid: if state == ContainerState::Running {
                pid
            } else {
                None
            },
            exit_code: exit.map(|e| e.0),
            signal: exit.and_then(|e| e.1),
            oom_killed: false,
            started_at: times.0,
            finished_at: times.1,
        }
    }
}

/// The containers are this process's children in their own process groups: without this
/// they would outlive the runtime (and a test) as orphans.
impl Drop for ProcessRuntime {
    fn drop(&mut self) {
        let containers = self.containers.lock().unwrap_or_else(|p| p.into_inner());
        for c in containers.values() {
            let (state, pid) = *c.state.lock().unwrap_or_else(|p| p.into_inner());
            if let (ContainerState::Running, Some(pid)) = (state, pid)
                && let Some(pid) = rustix::process::Pid::from_raw(pid as i32)
            {
                let _ = rustix::process::kill_process_group(pid, rustix::process::Signal::KILL);
            }
        }
    }
}

#[async_trait]
impl Runtime for ProcessRuntime {
    fn name(&self) -> &'static str {
        "process"
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities {
            isolation: false,
            cgroups: false,
            network_namespaces: false,
            // On the host, like the container itself.
            exec: true,
        }
    }

    async fn create(&self, spec: &ContainerSpec) -> Result<(), RuntimeError> {
        validate_id(&spec.id)?;
        if spec.command.is_empty() && spec.args.is_empty() {
            return Err(RuntimeError::InvalidSpec("no command".into()));
        }
        let mut containers = self.containers.lock().unwrap_or_else(|p| p.into_inner());
        if containers.contains_key(&spec.id) {
            return Err(RuntimeError::AlreadyExists(spec.id.clone()));
        }
        let dir = self.root.join(&spec.id);
        std::fs::create_dir_all(&dir)
            .map_err(|e| RuntimeError::io(format!("creating {}", dir.display()), e))?;
        std::fs::File::create(log_file(&dir))
            .map_err(|e| RuntimeError::io("creating log file", e))?;
        let (exited, _) = watch::channel(None);
        containers.insert(
            spec.id.clone(),
            Arc::new(Container {
                spec: spec.clone(),
                dir,
                state: Mutex::new((ContainerState::Created, None)),
                times: Mutex::new((None, None)),
                exited,
            }),
        );
        Ok(())
    }

    async fn start(&self, id: &str) -> Result<(), RuntimeError> {
        let c = self.get(id)?;
        let mut state = c.state.lock().unwrap_or_else(|p| p.into_inner());
        if state.0 != ContainerState::Created {
            return Err(RuntimeError::InvalidState {
                id: id.to_string(),
                state: state.0,
                action: "start",
            });
        }
        let argv: Vec<&String> = c.spec.command.iter().chain(&c.spec.args).collect();
        let log = std::fs::OpenOptions::new()
            .append(true)
            .open(log_file(&c.dir))
            .map_err(|e| RuntimeError::io("opening log file", e))?;
        let log = Arc::new(Mutex::new(log));
        let mut cmd = tokio::process::Command::new(argv[0]);
        cmd.args(&argv[1..])
            .env_clear()
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0);
        if !c.spec.env.iter().any(|(k, _)| k == "PATH") {
            cmd.env("PATH", DEFAULT_PATH);
        }
        cmd.envs(c.spec.env.iter().map(|(k, v)| (k, v)));
        if let Some(wd) = &c.spec.working_dir {
            cmd.current_dir(wd);
        }
        let mut child = cmd
            .spawn()
            .map_err(|e| RuntimeError::io(format!("starting {:?}", argv[0]), e))?;
        *state = (ContainerState::Running, child.id());
        c.times.lock().unwrap_or_else(|p| p.into_inner()).0 = Some(SystemTime::now());
        drop(state);
        let mut pumps = Vec::new();
        if let Some(out) = child.stdout.take() {
            pumps.push(tokio::spawn(pump(out, Stream::Stdout, Arc::clone(&log))));
        }
        if let Some(err) = child.stderr.take() {
            pumps.push(tokio::spawn(pump(err, Stream::Stderr, Arc::clone(&log))));
        }
        let c2 = Arc::clone(&c);
        tokio::spawn(async move {
            use std::os::unix::process::ExitStatusExt;
            let exit = match child.wait().await {
                Ok(s) => match (s.code(), s.signal()) {
                    (Some(code), _) => (code, None),
                    (None, Some(sig)) => (128 + sig, Some(sig)),
                    (None, None) => (255, None),
                },
                Err(_) => (255, None),
            };
            // The last output is logged before the exit is published; a daemonised child
            // keeping the pipes open must not hold the exit back for long, though.
            let _ = tokio::time::timeout(LOG_DRAIN, async {
                for p in pumps {
                    let _ = p.await;
                }
            })
            .await;
            c2.times.lock().unwrap_or_else(|p| p.into_inner()).1 = Some(SystemTime::now());
            // State first, then the watch: a waiter woken by the watch sees Exited.
            *c2.state.lock().unwrap_or_else(|p| p.into_inner()) = (ContainerState::Exited, None);
            c2.exited.send_replace(Some(exit));
        });
        Ok(())
    }

    async fn kill(&self, id: &str, signal: i32) -> Result<(), RuntimeError> {
        let c = self.get(id)?;
        let (state, pid) = *c.state.lock().unwrap_or_else(|p| p.into_inner());
        match (state, pid) {
            (ContainerState::Running, Some(pid)) => {
                let sig = rustix::process::Signal::from_named_raw(signal)
                    .ok_or_else(|| RuntimeError::InvalidSpec(format!("signal {signal}")))?;
                let pid = rustix::process::Pid::from_raw(pid as i32)
                    .ok_or_else(|| RuntimeError::InvalidSpec(format!("pid {pid}")))?;
                match rustix::process::kill_process_group(pid, sig) {
                    // Already gone: the reaper task is about to record the exit.
                    Ok(()) | Err(rustix::io::Errno::SRCH) => Ok(()),
                    Err(e) => Err(RuntimeError::io("sending signal", e.into())),
                }
            }
            // Signalling a finished container is a no-op, as for CRI StopContainer.
            (ContainerState::Exited, _) => Ok(()),
            (state, _) => Err(RuntimeError::InvalidState {
                id: id.to_string(),
                state,
                action: "kill",
            }),
        }
    }

    async fn wait(&self, id: &str) -> Result<ContainerStatus, RuntimeError> {
        let c = self.get(id)?;
        let mut rx = c.exited.subscribe();
        if c.snapshot().state == ContainerState::Created {
            return Err(RuntimeError::InvalidState {
                id: id.to_string(),
                state: ContainerState::Created,
                action: "wait",
            });
        }
        // The sender lives in `c`, which we hold, so the channel cannot close under us.
        let _ = rx.wait_for(Option::is_some).await;
        Ok(c.snapshot())
    }

    async fn status(&self, id: &str) -> Result<ContainerStatus, RuntimeError> {
        Ok(self.get(id)?.snapshot())
    }

    async fn remove(&self, id: &str) -> Result<(), RuntimeError> {
        let c = self.get(id)?;
        if c.snapshot().state == ContainerState::Running {
            self.kill(id, crate::runtime::SIGKILL).await?;
            self.wait(id).await?;
        }
        self.containers
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(id);
        match std::fs::remove_dir_all(&c.dir) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(RuntimeError::io(format!("removing {}", c.dir.display()), e)),
        }
    }

    fn log_path(&self, id: &str) -> Result<PathBuf, RuntimeError> {
        Ok(log_file(&self.get(id)?.dir))
    }

    /// Runs the command on the host with the container's environment and working
    /// directory (no terminals: there is no isolation to give one a meaning).
    async fn exec(&self, id: &str, spec: &ExecSpec) -> Result<ExecProcess, RuntimeError> {
        use std::os::unix::process::ExitStatusExt;
        let c = self.get(id)?;
        let state = c.state.lock().unwrap_or_else(|p| p.into_inner()).0;
        if state != ContainerState::Running {
            return Err(RuntimeError::InvalidState {
                id: id.to_string(),
                state,
                action: "exec",
            });
        }
        if spec.tty {
            return Err(RuntimeError::Unsupported {
                runtime: "process",
                what: "terminals",
            });
        }
        let (program, args) = spec
            .command
            .split_first()
            .ok_or_else(|| RuntimeError::InvalidSpec("empty exec command".into()))?;
        let mut cmd = tokio::process::Command::new(program);
        cmd.args(args)
            .env_clear()
            .stdin(if spec.stdin {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        if !c.spec.env.iter().any(|(k, _)| k == "PATH") {
            cmd.env("PATH", DEFAULT_PATH);
        }
        cmd.envs(c.spec.env.iter().map(|(k, v)| (k, v)));
        if let Some(wd) = &c.spec.working_dir {
            cmd.current_dir(wd);
        }
        let mut child = cmd
            .spawn()
            .map_err(|e| RuntimeError::io(format!("starting {program:?}"), e))?;
        let stdin = child.stdin.take().map(|s| Box::pin(s) as BoxedWriter);
        let stdout = child
            .stdout
            .take()
            .ok_or_else(|| RuntimeError::InvalidSpec("exec without stdout".into()))?;
        let stderr = child.stderr.take().map(|s| Box::pin(s) as BoxedReader);
        Ok(ExecProcess {
            stdin,
            stdout: Box::pin(stdout),
            stderr,
            exit: Box::pin(async move {
                let status = child
                    .wait()
                    .await
                    .map_err(|e| RuntimeError::io("waiting for the exec", e))?;
                Ok(match (status.code(), status.signal()) {
                    (Some(code), _) => code,
                    (None, Some(sig)) => 128 + sig,
                    (None, None) => 255,
                })
            }),
            resize: None,
        })
    }

    /// Only this process's containers: they die with it, there is nothing to adopt.
    async fn list(&self) -> Result<Vec<ContainerStatus>, RuntimeError> {
        let containers: Vec<Arc<Container>> = self
            .containers
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .values()
            .cloned()
            .collect();
        Ok(containers.iter().map(|c| c.snapshot()).collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn passes_conformance() {
        let dir = tempfile::tempdir().expect("tempdir");
        let rt = ProcessRuntime::new(dir.path().join("containers")).expect("runtime");
        crate::conformance::run_all(&rt, &crate::conformance::Fixture::host()).await;
    }
}
