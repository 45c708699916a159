//! The `oci` runtime: containers from the image store on overlayfs, run by `runc` under a
//! per-container shim ([`shim`]), with state kept on disk so a restarted agent adopts them.
//!
//! Layout under the runtime root: `containers/<id>/` (see [`state`]) and `runc/` (runc's
//! `--root`). Needs root and runc (Debian's runc 1.1 works with hybrid cgroup v1/v2).

mod exec;
pub mod shim;
pub mod spec;
pub mod state;

use std::collections::HashSet;
use std::ffi::OsString;
use std::io::ErrorKind;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;

use crate::images::ImageStore;
use crate::overlay::mount_rootfs;
use crate::runtime::{
    Capabilities, ContainerSpec, ContainerState, ContainerStatus, ExecProcess, ExecSpec, Runtime,
    RuntimeError, SIGKILL, validate_id,
};
use state::{ExitRecord, Meta, ShimConfig};

pub use shim::shim_main;
pub use spec::ImageDefaults;

/// First poll interval of `wait` (and of `remove` waiting for a shim).
const POLL: Duration = Duration::from_millis(20);
/// Slowest poll of `wait`.
const POLL_MAX: Duration = Duration::from_millis(250);
/// How long `remove` waits for a killed container's shim to record the exit.
const REMOVE_WAIT: Duration = Duration::from_secs(15);

/// Configuration of the OCI runtime.
#[derive(Debug, Clone)]
pub struct OciConfig {
    /// State directory, e.g. `/var/lib/skiff/oci` (not a tmpfs: the containers' overlayfs
    /// upper dirs live in it); containers are adopted from it on restart, and after a reboot
    /// its leftovers report as exited (the boot id differs) until removed.
    pub root: PathBuf,
    /// The `runc` binary.
    pub runc: PathBuf,
    /// The shim program and the arguments before the container directory: by default this
    /// executable with `shim` (the `skiff shim <dir>` subcommand calling [`shim_main`]).
    pub shim: PathBuf,
    pub shim_args: Vec<OsString>,
    /// Container log rotation (kubelet defaults: 10 MiB, 5 files); `None` = never rotate.
    pub log_max_bytes: Option<u64>,
    pub log_max_files: u32,
}

impl OciConfig {
    pub fn new(root: impl Into<PathBuf>, runc: impl Into<PathBuf>) -> Self {
        let (shim, shim_args) = shim::default_shim();
        OciConfig {
            root: root.into(),
            runc: runc.into(),
            shim,
            shim_args,
            log_max_bytes: Some(state::DEFAULT_LOG_MAX_BYTES),
            log_max_files: state::DEFAULT_LOG_MAX_FILES,
        }
    }

    /// Uses `shim` (called as `<shim> <args...> <container-dir>`).
    pub fn with_shim(mut self, shim: impl Into<PathBuf>, args: Vec<OsString>) -> Self {
        self.shim = shim.into();
        self.shim_args = args;
        self
    }
}

/// See the module docs. Cheap to clone; all state is on disk.
#[derive(Clone)]
pub struct OciRuntime {
    inner: Arc<Inner>,
}

struct Inner {
    cfg: OciConfig,
    images: ImageStore,
    /// Ids whose `create` runs in this process right now.
    creating: Mutex<HashSet<String>>,
}

/// Claim on an id being created, released on drop.
struct Creating<'a>(&'a Mutex<HashSet<String>>, String);

impl<'a> Creating<'a> {
    fn claim(set: &'a Mutex<HashSet<String>>, id: &str) -> Option<Self> {
        let mut ids = set.lock().unwrap_or_else(|p| p.into_inner());
        ids.insert(id.to_string())
            .then(|| Creating(set, id.to_string()))
    }
}

impl Drop for Creating<'_> {
    fn drop(&mut self) {
        self.0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&self.1);
    }
}

impl OciRuntime {
    /// Runtime with the default shim (this executable's `shim` subcommand).
    pub fn new(root: PathBuf, images: ImageStore, runc: PathBuf) -> Result<Self, RuntimeError> {
        Self::with_config(OciConfig::new(root, runc), images)
    }

    pub fn with_config(cfg: OciConfig, images: ImageStore) -> Result<Self, RuntimeError> {
        for d in [cfg.root.join("containers"), cfg.root.join("runc")] {
            std::fs::create_dir_all(&d)
                .map_err(|e| RuntimeError::io(format!("creating {}", d.display()), e))?;
        }
        // The default shim is this executable's `shim` subcommand. A cargo test binary has
        // none: it would take `shim` for a test filter and run tests recursively.
        let in_test_binary = std::env::current_exe().is_ok_and(|exe| {
            exe == cfg.shim && exe.parent().and_then(Path::file_name) == Some("deps".as_ref())
        });
        if in_test_binary {
            return Err(RuntimeError::InvalidSpec(
                "no shim configured (this is a test binary without a `shim` subcommand): \
                 use OciConfig::with_shim with the skiff or skiff-shim binary"
                    .into(),
            ));
        }
        if !cfg.runc.exists() {
            return Err(RuntimeError::io(
                format!("runc at {}", cfg.runc.display()),
                std::io::Error::from(ErrorKind::NotFound),
            ));
        }
        Ok(OciRuntime {
            inner: Arc::new(Inner {
                cfg,
                images,
                creating: Mutex::new(HashSet::new()),
            }),
        })
    }

    pub fn config(&self) -> &OciConfig {
        &self.inner.cfg
    }

    /// What a container left on the host: its state dir, mounts under it, cgroup dirs (of
    /// `cgroup_parent` `None`), runc state. Empty after a clean `remove` (tests check this).
    pub fn leftovers(&self, id: &str) -> Vec<String> {
        let inner = &self.inner;
        let mut left = Vec::new();
        let dir = inner.dir(id);
        if dir.exists() {
            left.push(format!("state dir {}", dir.display()));
        }
        let prefix = format!("{} ", dir.display());
        let prefix_sub = format!("{}/", dir.display());
        if let Ok(mi) = std::fs::read_to_string("/proc/self/mountinfo") {
            for l in mi.lines() {
                // Field 5 is the mount point.
                if let Some(mp) = l.split(' ').nth(4)
                    && (format!("{mp} ").starts_with(&prefix) || mp.starts_with(&prefix_sub))
                {
                    left.push(format!("mount {mp}"));
                }
            }
        }
        for d in state::cgroup_dirs(&format!("/skiff/{id}")) {
            left.push(format!("cgroup {}", d.display()));
        }
        let runc_state = inner.cfg.root.join("runc").join(id);
        if runc_state.exists() {
            left.push(format!("runc state {}", runc_state.display()));
        }
        left
    }

    /// Removes a container without an async runtime (for `Drop` guards and shutdown paths).
    pub fn remove_blocking(&self, id: &str) -> Result<(), RuntimeError> {
        self.inner.remove(id)
    }

    /// Ids of every container on disk.
    pub fn ids(&self) -> Result<Vec<String>, RuntimeError> {
        self.inner.ids()
    }

    async fn blocking<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Inner) -> Result<T, RuntimeError> + Send + 'static,
    ) -> Result<T, RuntimeError> {
        let rt = self.clone();
        tokio::task::spawn_blocking(move || f(&rt.inner))
            .await
            .map_err(|e| RuntimeError::io("runtime task", std::io::Error::other(e)))?
    }
}

fn io(context: impl Into<String>) -> impl FnOnce(std::io::Error) -> RuntimeError {
    let context = context.into();
    move |e| RuntimeError::io(context, e)
}

impl Inner {
    fn dir(&self, id: &str) -> PathBuf {
        self.cfg.root.join("containers").join(id)
    }

    fn existing_dir(&self, id: &str) -> Result<PathBuf, RuntimeError> {
        validate_id(id).map_err(|_| RuntimeError::NotFound(id.to_string()))?;
        let dir = self.dir(id);
        if dir.join(state::META).exists() {
            Ok(dir)
        } else {
            Err(RuntimeError::NotFound(id.to_string()))
        }
    }

    fn runc(&self) -> Command {
        let mut cmd = Command::new(&self.cfg.runc);
        cmd.arg("--root").arg(self.cfg.root.join("runc"));
        cmd.stdin(Stdio::null());
        cmd
    }

    /// Runs a runc subcommand to completion; its stderr becomes the error message.
    fn runc_run(&self, args: &[&str]) -> Result<(), RuntimeError> {
        let out = self
            .runc()
            .args(args)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .output()
            .map_err(io(format!("running {}", self.cfg.runc.display())))?;
        if out.status.success() {
            Ok(())
        } else {
            Err(RuntimeError::io(
                format!("runc {}", args.join(" ")),
                std::io::Error::other(String::from_utf8_lossy(&out.stderr).trim().to_string()),
            ))
        }
    }

    fn create(&self, spec: &ContainerSpec) -> Result<(), RuntimeError> {
        validate_id(&spec.id)?;
        let cgroup_path = spec::cgroup_path(spec)?;
        if spec.command.is_empty() && spec.args.is_empty() {
            return Err(RuntimeError::InvalidSpec("no command".into()));
        }
        let Some(_claim) = Creating::claim(&self.creating, &spec.id) else {
            return Err(RuntimeError::AlreadyExists(spec.id.clone()));
        };
        let dir = self.dir(&spec.id);
        match std::fs::create_dir(&dir) {
            Ok(()) => {}
            Err(e) if e.kind() == ErrorKind::AlreadyExists => {
                if dir.join(state::META).exists() {
                    return Err(RuntimeError::AlreadyExists(spec.id.clone()));
                }
                // Left by a create interrupted before it recorded anything (the agent died):
                // nobody else knows it, so clear it and start over.
                self.teardown(&spec.id, &dir)?;
                std::fs::create_dir(&dir).map_err(io(format!("creating {}", dir.display())))?;
            }
            Err(e) => return Err(RuntimeError::io(format!("creating {}", dir.display()), e)),
        }
        let result = self.prepare_and_launch(spec, &dir, cgroup_path);
        if result.is_err() {
            let _ = self.teardown(&spec.id, &dir);
        }
        result
    }

    fn prepare_and_launch(
        &self,
        spec: &ContainerSpec,
        dir: &Path,
        cgroup_path: String,
    ) -> Result<(), RuntimeError> {
        let image = self.images.resolve(&spec.image)?;
        let defaults = ImageDefaults::from_config(&image.config);
        let lowers = self.images.extract_layers(&spec.image)?;
        let rootfs = mount_rootfs(&lowers, dir)?;
        let user = match (spec.user, &defaults.user) {
            (Some(u), _) => u,
            (None, Some(u)) => spec::resolve_user(u, rootfs.rootfs())?,
            (None, None) => (0, 0),
        };
        // The mount belongs to the container from now on (undone by `remove`), not to this
        // function: forget the guard that would unmount it.
        std::mem::forget(rootfs);
        let config = spec::runtime_spec(spec, &defaults, user)?;
        state::write_atomic(&dir.join(state::CONFIG), &to_json(&config)?)
            .map_err(io("writing config.json"))?;
        let shim_cfg = ShimConfig {
            id: spec.id.clone(),
            runc: self.cfg.runc.clone(),
            runc_root: self.cfg.root.join("runc"),
            cgroup_path: cgroup_path.clone(),
            log_max_bytes: self.cfg.log_max_bytes,
            log_max_files: self.cfg.log_max_files,
        };
        state::write_atomic(&dir.join(state::SHIM_CONFIG), &to_json(&shim_cfg)?)
            .map_err(io("writing shim.json"))?;
        std::fs::File::create(dir.join(state::LOG)).map_err(io("creating log file"))?;
        let meta = Meta {
            image: spec.image.clone(),
            created_at_ns: state::now_ns(),
            cgroup_path,
            boot_id: state::boot_id(),
        };
        state::write_atomic(&dir.join(state::META), &to_json(&meta)?)
            .map_err(io("writing meta.json"))?;
        let out = shim::command(&self.cfg.shim, &self.cfg.shim_args, dir)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .output()
            .map_err(io(format!("running shim {}", self.cfg.shim.display())))?;
        if !out.status.success() {
            let msg = String::from_utf8_lossy(&out.stderr).trim().to_string();
            return Err(RuntimeError::io(
                format!("creating container {}", spec.id),
                std::io::Error::other(msg),
            ));
        }
        Ok(())
    }

    fn exit_record(&self, dir: &Path) -> Result<Option<ExitRecord>, RuntimeError> {
        state::read_json(&dir.join(state::EXIT)).map_err(io("reading exit.json"))
    }

    fn shim_alive(&self, dir: &Path) -> bool {
        self.pid_alive(dir, state::SHIM_PID)
    }

    /// Whether the process of a pid file lives; never after a reboot (the pid is reused).
    fn pid_alive(&self, dir: &Path, pid_file: &str) -> bool {
        let meta: Option<Meta> = state::read_json(&dir.join(state::META)).ok().flatten();
        let same_boot = meta.is_none_or(|m| m.boot_id.is_empty() || m.boot_id == state::boot_id());
        same_boot && state::read_pid(&dir.join(pid_file)).is_some_and(state::alive)
    }

    fn status(&self, id: &str) -> Result<ContainerStatus, RuntimeError> {
        let dir = self.existing_dir(id)?;
        let marker = dir.join(state::STARTED);
        let started = match std::fs::read_to_string(&marker) {
            Ok(s) => match s.trim().parse::<u64>() {
                Ok(ns) => Some(state::from_ns(ns)),
                // Caught between creation and write (see `start`).
                Err(_) => Some(
                    std::fs::metadata(&marker)
                        .and_then(|m| m.modified())
                        .unwrap_or_else(|_| std::time::SystemTime::now()),
                ),
            },
            Err(_) => None,
        };
        let mut st = ContainerStatus {
            id: id.to_string(),
            state: ContainerState::Created,
            pid: None,
            exit_code: None,
            signal: None,
            oom_killed: false,
            started_at: started,
            finished_at: None,
        };
        let mut exit = self.exit_record(&dir)?;
        if exit.is_none() && !self.shim_alive(&dir) {
            // Look again: the shim may have written the file just before exiting.
            exit = self.exit_record(&dir)?;
            let init_alive = self.pid_alive(&dir, state::INIT_PID);
            if exit.is_none() && dir.join(state::SHIM_PID).exists() && !init_alive {
                // The shim was killed and the container is gone too: nobody can learn the
                // real exit any more. (While the container lives it is still reported as
                // running, so the agent does not start a duplicate.)
                let rec = ExitRecord {
                    exit_code: 255,
                    signal: None,
                    oom_killed: false,
                    finished_at_ns: state::now_ns(),
                    note: Some("the container's shim died".into()),
                };
                state::write_atomic(&dir.join(state::EXIT), &to_json(&rec)?)
                    .map_err(io("writing exit.json"))?;
                exit = Some(rec);
            }
        }
        match exit {
            Some(rec) => {
                st.state = ContainerState::Exited;
                st.exit_code = Some(rec.exit_code);
                st.signal = rec.signal;
                st.oom_killed = rec.oom_killed;
                st.finished_at = Some(state::from_ns(rec.finished_at_ns));
            }
            None if started.is_some() => {
                st.state = ContainerState::Running;
                st.pid = state::read_pid(&dir.join(state::INIT_PID)).map(|p| p as u32);
            }
            None => {}
        }
        Ok(st)
    }

    fn start(&self, id: &str) -> Result<(), RuntimeError> {
        let st = self.status(id)?;
        if st.state != ContainerState::Created || st.started_at.is_some() {
            return Err(RuntimeError::InvalidState {
                id: id.to_string(),
                state: st.state,
                action: "start",
            });
        }
        let dir = self.dir(id);
        // Recorded first: a restarted agent must see a container that may be running as
        // started, never a running one as created.
        // Created exclusively: of two concurrent starts, only one gets past here (the other
        // must not remove the marker of a container the first one started).
        let marker = dir.join(state::STARTED);
        let mut f = match std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&marker)
        {
            Ok(f) => f,
            Err(e) if e.kind() == ErrorKind::AlreadyExists => {
                return Err(RuntimeError::InvalidState {
                    id: id.to_string(),
                    state: ContainerState::Running,
                    action: "start",
                });
            }
            Err(e) => return Err(RuntimeError::io("writing start time", e)),
        };
        std::io::Write::write_all(&mut f, state::now_ns().to_string().as_bytes())
            .map_err(io("writing start time"))?;
        drop(f);
        if let Err(e) = self.runc_run(&["start", id]) {
            let _ = std::fs::remove_file(&marker);
            return Err(e);
        }
        Ok(())
    }

    fn kill(&self, id: &str, signal: i32) -> Result<(), RuntimeError> {
        let st = self.status(id)?;
        match st.state {
            // Signalling a finished container is a no-op, as for CRI StopContainer.
            ContainerState::Exited => return Ok(()),
            ContainerState::Created => {
                return Err(RuntimeError::InvalidState {
                    id: id.to_string(),
                    state: st.state,
                    action: "kill",
                });
            }
            ContainerState::Running => {}
        }
        if !(1..=64).contains(&signal) {
            return Err(RuntimeError::InvalidSpec(format!("signal {signal}")));
        }
        match self.runc_run(&["kill", id, &signal.to_string()]) {
            Ok(()) => Ok(()),
            // It exited meanwhile.
            Err(_) if self.status(id)?.state == ContainerState::Exited => Ok(()),
            Err(e) => Err(e),
        }
    }

    fn ids(&self) -> Result<Vec<String>, RuntimeError> {
        let dir = self.cfg.root.join("containers");
        let entries = std::fs::read_dir(&dir).map_err(io(format!("listing {}", dir.display())))?;
        let mut ids: Vec<String> = entries
            .flatten()
            .filter_map(|e| e.file_name().to_str().map(str::to_string))
            .filter(|id| validate_id(id).is_ok())
            .collect();
        ids.sort();
        Ok(ids)
    }

    fn list(&self) -> Result<Vec<ContainerStatus>, RuntimeError> {
        let mut out = Vec::new();
        for id in self.ids()? {
            match self.status(&id) {
                Ok(st) => out.push(st),
                // Being created or removed right now.
                Err(RuntimeError::NotFound(_)) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(out)
    }

    fn remove(&self, id: &str) -> Result<(), RuntimeError> {
        validate_id(id).map_err(|_| RuntimeError::NotFound(id.to_string()))?;
        let dir = self.dir(id);
        if !dir.exists() {
            return Err(RuntimeError::NotFound(id.to_string()));
        }
        self.teardown(id, &dir)
    }

    /// Kills, deletes and unmounts whatever of the container exists; safe to repeat.
    fn teardown(&self, id: &str, dir: &Path) -> Result<(), RuntimeError> {
        if self.shim_alive(dir) {
            // `runc kill` reaches created containers too (their init waits on a fifo).
            let _ = self.runc_run(&["kill", id, &SIGKILL.to_string()]);
            let deadline = Instant::now() + REMOVE_WAIT;
            while self.shim_alive(dir) && Instant::now() < deadline {
                std::thread::sleep(POLL);
            }
        }
        // `delete -f` also kills what the shim did not get to (a shim killed with -9).
        if let Err(e) = self.runc_run(&["delete", "--force", id]) {
            let gone = !self.cfg.root.join("runc").join(id).exists();
            if !gone {
                return Err(e);
            }
        }
        let rootfs = dir.join("rootfs");
        match rustix::mount::unmount(&rootfs, rustix::mount::UnmountFlags::empty()) {
            Ok(()) | Err(rustix::io::Errno::INVAL) | Err(rustix::io::Errno::NOENT) => {}
            Err(rustix::io::Errno::BUSY) => {
                // Something (an exec leftover, a shell in the dir) holds it: detach lazily.
                let _ = rustix::mount::unmount(&rootfs, rustix::mount::UnmountFlags::DETACH);
            }
            Err(e) => {
                return Err(RuntimeError::io(
                    format!("unmounting {}", rootfs.display()),
                    e.into(),
                ));
            }
        }
        // runc delete removes the cgroups; an interrupted delete may leave empty ones.
        let meta: Option<Meta> = state::read_json(&dir.join(state::META)).ok().flatten();
        if let Some(meta) = meta {
            for d in state::cgroup_dirs(&meta.cgroup_path) {
                let _ = std::fs::remove_dir(&d);
            }
        }
        match std::fs::remove_dir_all(dir) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == ErrorKind::NotFound => Ok(()),
            Err(e) => Err(RuntimeError::io(format!("removing {}", dir.display()), e)),
        }
    }

    /// Writes the process JSON of an exec: the container's process with other args.
    fn exec_process_file(&self, id: &str, spec: &ExecSpec) -> Result<PathBuf, RuntimeError> {
        let dir = self.existing_dir(id)?;
        let st = self.status(id)?;
        if st.state != ContainerState::Running {
            return Err(RuntimeError::InvalidState {
                id: id.to_string(),
                state: st.state,
                action: "exec",
            });
        }
        if spec.command.is_empty() {
            return Err(RuntimeError::InvalidSpec("exec without a command".into()));
        }
        let config: serde_json::Value = state::read_json(&dir.join(state::CONFIG))
            .map_err(io("reading config.json"))?
            .ok_or_else(|| RuntimeError::NotFound(id.to_string()))?;
        let mut process = config["process"].clone();
        process["args"] = serde_json::json!(spec.command);
        process["terminal"] = serde_json::json!(spec.tty);
        if spec.tty {
            // What `docker exec -t` gives: shells and editors need a terminal type.
            if let Some(env) = process["env"].as_array_mut()
                && !env
                    .iter()
                    .any(|e| e.as_str().is_some_and(|e| e.starts_with("TERM=")))
            {
                env.push(serde_json::json!("TERM=xterm"));
            }
        }
        let path = dir.join(format!("exec-{:016x}.json", rand::random::<u64>()));
        let data = serde_json::to_vec(&process)
            .map_err(|e| RuntimeError::io("exec process", std::io::Error::other(e)))?;
        std::fs::write(&path, data).map_err(io("writing exec process"))?;
        Ok(path)
    }
}

fn to_json(v: &impl serde::Serialize) -> Result<Vec<u8>, RuntimeError> {
    serde_json::to_vec_pretty(v)
        .map_err(|e| RuntimeError::io("serialising state", std::io::Error::other(e)))
}

#[async_trait]
impl Runtime for OciRuntime {
    fn name(&self) -> &'static str {
        "oci"
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities {
            isolation: true,
            cgroups: true,
            network_namespaces: true,
            exec: true,
        }
    }

    async fn create(&self, spec: &ContainerSpec) -> Result<(), RuntimeError> {
        let spec = spec.clone();
        self.blocking(move |i| i.create(&spec)).await
    }

    async fn start(&self, id: &str) -> Result<(), RuntimeError> {
        let id = id.to_string();
        self.blocking(move |i| i.start(&id)).await
    }

    async fn kill(&self, id: &str, signal: i32) -> Result<(), RuntimeError> {
        let id = id.to_string();
        self.blocking(move |i| i.kill(&id, signal)).await
    }

    /// Polls the exit file the shim writes, quickly at first (short-lived containers, stop
    /// escalation), then every 250 ms, so many waiting pods stay cheap.
    async fn wait(&self, id: &str) -> Result<ContainerStatus, RuntimeError> {
        let mut interval = POLL;
        loop {
            let st = self.status(id).await?;
            match (st.state, st.started_at) {
                (ContainerState::Exited, _) => return Ok(st),
                (ContainerState::Created, None) => {
                    return Err(RuntimeError::InvalidState {
                        id: id.to_string(),
                        state: st.state,
                        action: "wait",
                    });
                }
                _ => {
                    tokio::time::sleep(interval).await;
                    interval = (interval * 5 / 4).min(POLL_MAX);
                }
            }
        }
    }

    async fn status(&self, id: &str) -> Result<ContainerStatus, RuntimeError> {
        let id = id.to_string();
        self.blocking(move |i| i.status(&id)).await
    }

    async fn remove(&self, id: &str) -> Result<(), RuntimeError> {
        let id = id.to_string();
        self.blocking(move |i| i.remove(&id)).await
    }

    fn log_path(&self, id: &str) -> Result<PathBuf, RuntimeError> {
        Ok(self.inner.existing_dir(id)?.join(state::LOG))
    }

    /// Every container under the root, including those of an earlier agent process.
    async fn list(&self) -> Result<Vec<ContainerStatus>, RuntimeError> {
        self.blocking(|i| i.list()).await
    }

    async fn exec(&self, id: &str, spec: &ExecSpec) -> Result<ExecProcess, RuntimeError> {
        let (id, spec) = (id.to_string(), spec.clone());
        let (process_file, id) = {
            let spec = spec.clone();
            self.blocking(move |i| Ok((i.exec_process_file(&id, &spec)?, id)))
                .await?
        };
        let mut cmd = tokio::process::Command::new(&self.inner.cfg.runc);
        cmd.arg("--root")
            .arg(self.inner.cfg.root.join("runc"))
            .arg("exec")
            .arg("--process")
            .arg(&process_file)
            .arg(&id);
        let spawned = if spec.tty {
            exec::spawn_tty(cmd, spec.stdin)
        } else {
            exec::spawn_pipes(cmd, spec.stdin)
        };
        let (mut child, mut process) = match spawned {
            Ok(r) => r,
            Err(e) => {
                let _ = std::fs::remove_file(&process_file);
                return Err(RuntimeError::io("running runc exec", e));
            }
        };
        process.exit = Box::pin(async move {
            use std::os::unix::process::ExitStatusExt;
            let status = child.wait().await;
            let _ = tokio::fs::remove_file(&process_file).await;
            let status = status.map_err(|e| RuntimeError::io("waiting for runc exec", e))?;
            Ok(match (status.code(), status.signal()) {
                (Some(code), _) => code,
                (None, Some(sig)) => 128 + sig,
                (None, None) => 255,
            })
        });
        Ok(process)
    }
}
