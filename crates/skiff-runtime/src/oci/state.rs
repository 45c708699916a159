//! The files a container's state directory holds, shared by the runtime and its shim: the
//! runtime survives restarts because everything it knows about a container is in them.
//!
//! `<root>/containers/<id>/`: `config.json` + `rootfs/` (the runc bundle; `upper/`, `work/`
//! for overlayfs), `shim.json` (what the shim needs), `meta.json` (creation), `container.log`,
//! `shim.pid`, `init.pid` (written by runc), `started` (start time), `exit.json` (written once
//! by the shim when the container's main process has been reaped), `shim.log`, `runc.log`.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

pub const CONFIG: &str = "config.json";
pub const SHIM_CONFIG: &str = "shim.json";
pub const META: &str = "meta.json";
pub const LOG: &str = "container.log";
pub const SHIM_PID: &str = "shim.pid";
pub const INIT_PID: &str = "init.pid";
pub const STARTED: &str = "started";
pub const EXIT: &str = "exit.json";
pub const SHIM_LOG: &str = "shim.log";
pub const RUNC_LOG: &str = "runc.log";

/// What the shim is told (a file rather than arguments, so the command line stays
/// `<shim> <container-dir>` whatever is added later).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShimConfig {
    pub id: String,
    pub runc: PathBuf,
    /// runc's `--root` (its state directory).
    pub runc_root: PathBuf,
    /// The container's cgroup, absolute from each controller's root.
    pub cgroup_path: String,
    /// Rotate `container.log` beyond this size (`None`: never).
    #[serde(default)]
    pub log_max_bytes: Option<u64>,
    /// Log files kept, the current one included.
    #[serde(default = "default_log_max_files")]
    pub log_max_files: u32,
}

fn default_log_max_files() -> u32 {
    DEFAULT_LOG_MAX_FILES
}

/// The kubelet's defaults (`containerLogMaxSize`, `containerLogMaxFiles`).
pub const DEFAULT_LOG_MAX_BYTES: u64 = 10 << 20;
pub const DEFAULT_LOG_MAX_FILES: u32 = 5;

/// Written by the runtime at creation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Meta {
    pub image: String,
    pub created_at_ns: u64,
    pub cgroup_path: String,
    /// The boot the container was created in: after a reboot, recorded pids mean nothing.
    #[serde(default)]
    pub boot_id: String,
}

/// How the main process ended, written once by the shim.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExitRecord {
    /// As Kubernetes reports it: 128+signal for a death by signal.
    pub exit_code: i32,
    pub signal: Option<i32>,
    pub oom_killed: bool,
    pub finished_at_ns: u64,
    /// Why the exit is not the process's own (e.g. the shim was lost), if so.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

/// This boot's id (`/proc/sys/kernel/random/boot_id`); empty if unreadable.
pub fn boot_id() -> String {
    std::fs::read_to_string("/proc/sys/kernel/random/boot_id")
        .map(|s| s.trim().to_string())
        .unwrap_or_default()
}

pub fn now_ns() -> u64 {
    to_ns(SystemTime::now())
}

pub fn to_ns(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0)
}

pub fn from_ns(ns: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_nanos(ns)
}

/// Writes `data` to `path` through a temporary file and a rename, so readers see all or nothing.
pub fn write_atomic(path: &Path, data: &[u8]) -> std::io::Result<()> {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = path.with_file_name(format!(".{name}.tmp{}", std::process::id()));
    let mut f = std::fs::File::create(&tmp)?;
    f.write_all(data)?;
    f.sync_all()?;
    drop(f);
    std::fs::rename(&tmp, path)
}

/// Reads a JSON state file; `Ok(None)` when it does not exist.
pub fn read_json<T: for<'de> Deserialize<'de>>(path: &Path) -> std::io::Result<Option<T>> {
    match std::fs::read(path) {
        Ok(data) => serde_json::from_slice(&data)
            .map(Some)
            .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

/// Reads a pid file (runc's has no newline; ours may).
pub fn read_pid(path: &Path) -> Option<i32> {
    std::fs::read_to_string(path)
        .ok()?
        .trim()
        .parse()
        .ok()
        .filter(|p| *p > 0)
}

/// Whether `pid` is a live (not zombie) process.
pub fn alive(pid: i32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        // `pid (comm) S ...`: comm may hold spaces and parens, the state follows the last `)`.
        Ok(stat) => stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.trim_start().chars().next())
            .is_some_and(|state| state != 'Z' && state != 'X'),
        Err(_) => false,
    }
}

/// The OOM killer's kill count of a cgroup: cgroup v1 `memory.oom_control` (`oom_kill`,
/// kernel 4.13+) or cgroup v2 `memory.events`; 0 when neither is readable.
pub fn oom_kills(cgroup_path: &str) -> u64 {
    let rel = cgroup_path.trim_start_matches('/');
    let candidates = [
        Path::new("/sys/fs/cgroup/memory")
            .join(rel)
            .join("memory.oom_control"),
        Path::new("/sys/fs/cgroup").join(rel).join("memory.events"),
    ];
    for file in candidates {
        if let Ok(text) = std::fs::read_to_string(&file) {
            return text
                .lines()
                .find_map(|l| l.strip_prefix("oom_kill "))
                .and_then(|n| n.trim().parse().ok())
                .unwrap_or(0);
        }
    }
    0
}

/// Every directory the container's cgroup has across the mounted hierarchies.
pub fn cgroup_dirs(cgroup_path: &str) -> Vec<PathBuf> {
    let rel = cgroup_path.trim_start_matches('/');
    let mut dirs = Vec::new();
    let root = Path::new("/sys/fs/cgroup");
    if root.join("cgroup.controllers").exists() {
        // Pure cgroup v2.
        dirs.push(root.join(rel));
    } else if let Ok(entries) = std::fs::read_dir(root) {
        for e in entries.flatten() {
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                dirs.push(e.path().join(rel));
            }
        }
    }
    dirs.retain(|d| d.exists());
    dirs
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn state_files_round_trip() {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = dir.path().join(EXIT);
        assert_eq!(read_json::<ExitRecord>(&p).expect("missing"), None);
        let rec = ExitRecord {
            exit_code: 137,
            signal: Some(9),
            oom_killed: true,
            finished_at_ns: now_ns(),
            note: None,
        };
        write_atomic(&p, &serde_json::to_vec(&rec).expect("json")).expect("write");
        assert_eq!(read_json::<ExitRecord>(&p).expect("read"), Some(rec));
        std::fs::write(&p, "{not json").expect("garbage");
        assert!(read_json::<ExitRecord>(&p).is_err());
        std::fs::write(dir.path().join("pid"), "42").expect("pid");
        assert_eq!(read_pid(&dir.path().join("pid")), Some(42));
        assert!(alive(std::process::id() as i32));
        assert!(!alive(i32::MAX));
    }
}
