//! The per-container shim (the job containerd-shim and conmon do): a small detached process
//! that creates the container with `runc create`, holds its stdout/stderr and writes them to
//! the CRI log, reaps the container's main process as child subreaper and records its exit
//! (code, signal, OOM kill) in the state directory, so nothing is lost while the node agent
//! is down.
//!
//! Invoked as `<shim> <container-dir>` (the `skiff` binary: `skiff shim <container-dir>`).
//! That first process only launches the daemon (itself again, marked by [`DAEMON_ENV`]),
//! waits until the container exists (or failed to) and exits: the daemon is then nobody's
//! child but init's, in its own session, and outlives the agent.

use std::ffi::OsString;
use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex, mpsc};
use std::time::Duration;

use rustix::process::WaitOptions;

use super::state::{self, ExitRecord, ShimConfig};
use crate::logs::{MAX_RECORD, Stream, format_record};

/// Set in the daemon's environment by the launcher.
pub const DAEMON_ENV: &str = "SKIFF_SHIM_DAEMON";

/// How long the exit waits for output still in the pipes (a daemonised grandchild could
/// keep them open forever).
const LOG_DRAIN: Duration = Duration::from_secs(2);

/// Entry point of the shim; `args` are what follows the program (or subcommand) name.
/// Returns the process exit code.
pub fn shim_main(args: impl IntoIterator<Item = OsString>) -> i32 {
    let args: Vec<OsString> = args.into_iter().collect();
    let [dir] = args.as_slice() else {
        eprintln!("usage: shim <container-state-dir>");
        return 2;
    };
    let dir = Path::new(dir);
    if std::env::var_os(DAEMON_ENV).is_some() {
        daemon(dir)
    } else {
        launch(dir)
    }
}

/// Starts the daemon and relays its one-line verdict: `ok` or the error.
fn launch(dir: &Path) -> i32 {
    // Our own path names the daemon in `ps`; /proc/self/exe still runs when the binary was
    // replaced on disk (an upgrade).
    let exe = std::env::current_exe()
        .ok()
        .filter(|p| p.exists())
        .unwrap_or_else(|| PathBuf::from("/proc/self/exe"));
    let log = OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join(state::SHIM_LOG));
    let stderr = match log {
        Ok(f) => Stdio::from(f),
        Err(_) => Stdio::null(),
    };
    let child = Command::new(exe)
        .args(std::env::args_os().skip(1))
        .env(DAEMON_ENV, "1")
        .current_dir("/")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(stderr)
        .spawn();
    let mut child = match child {
        Ok(c) => c,
        Err(e) => {
            eprintln!("shim: starting daemon: {e}");
            return 1;
        }
    };
    let mut line = String::new();
    if let Some(out) = child.stdout.take() {
        let _ = BufReader::new(out).read_line(&mut line);
    }
    match line.trim_end().strip_prefix("ok") {
        Some(_) => 0,
        None => {
            let msg = line.trim_end();
            let msg = msg.strip_prefix("error ").unwrap_or(msg);
            eprintln!(
                "{}",
                if msg.is_empty() {
                    "shim exited before the container was created"
                } else {
                    msg
                }
            );
            1
        }
    }
}

fn daemon(dir: &Path) -> i32 {
    // Own session: no signal for the agent's process group or terminal reaches us.
    let _ = rustix::process::setsid();
    match run(dir) {
        Ok(()) => 0,
        Err(e) => {
            // stderr is shim.log.
            eprintln!("shim: {e}");
            report(&format!("error {e}"));
            1
        }
    }
}

/// Tells the launcher (our stdout is its pipe) and lets go of the pipe.
fn report(line: &str) {
    let mut out = std::io::stdout();
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
    if let Ok(null) = File::options().write(true).open("/dev/null") {
        let _ = rustix::stdio::dup2_stdout(&null);
    }
}

fn run(dir: &Path) -> Result<(), String> {
    let cfg: ShimConfig = state::read_json(&dir.join(state::SHIM_CONFIG))
        .map_err(|e| format!("reading shim config: {e}"))?
        .ok_or("no shim config")?;
    // runc create's init is reparented to us when runc exits: we reap it and see its status.
    rustix::process::set_child_subreaper(Some(rustix::process::getpid()))
        .map_err(|e| format!("becoming child subreaper: {e}"))?;
    state::write_atomic(
        &dir.join(state::SHIM_PID),
        std::process::id().to_string().as_bytes(),
    )
    .map_err(|e| format!("writing shim pid: {e}"))?;

    let log = LogFile::open(dir.join(state::LOG), cfg.log_max_bytes, cfg.log_max_files)
        .map_err(|e| format!("opening container log: {e}"))?;
    let log = Arc::new(Mutex::new(log));
    let (out_r, out_w) = std::io::pipe().map_err(|e| format!("pipe: {e}"))?;
    let (err_r, err_w) = std::io::pipe().map_err(|e| format!("pipe: {e}"))?;
    let runc_log = dir.join(state::RUNC_LOG);
    let mut cmd = Command::new(&cfg.runc);
    cmd.arg("--root")
        .arg(&cfg.runc_root)
        .arg("--log")
        .arg(&runc_log)
        .args(["--log-format", "json", "create", "--bundle"])
        .arg(dir)
        .arg("--pid-file")
        .arg(dir.join(state::INIT_PID))
        .arg(&cfg.id)
        .env_remove(DAEMON_ENV)
        .stdin(Stdio::null())
        .stdout(out_w)
        .stderr(err_w);
    let runc = cmd
        .spawn()
        .map_err(|e| format!("running runc create: {e}"))?;
    // The Command holds our copies of the write ends: drop it, or the log never sees EOF.
    drop(cmd);
    let (done_tx, done_rx) = mpsc::channel();
    for (reader, stream) in [(out_r, Stream::Stdout), (err_r, Stream::Stderr)] {
        let (log, done) = (Arc::clone(&log), done_tx.clone());
        std::thread::spawn(move || {
            pump(reader, stream, &log);
            let _ = done.send(());
        });
    }
    drop(done_tx);

    let runc_pid = runc.id() as i32;
    let mut init: Option<i32> = None;
    loop {
        let (pid, status) = match rustix::process::wait(WaitOptions::empty()) {
            Ok(Some(r)) => r,
            Ok(None) => continue,
            Err(rustix::io::Errno::INTR) => continue,
            Err(e) => {
                // No child left without having seen the container exit: nothing to wait for.
                let rec = ExitRecord {
                    exit_code: 255,
                    signal: None,
                    oom_killed: false,
                    finished_at_ns: state::now_ns(),
                    note: Some(format!("shim lost the container: {e}")),
                };
                write_exit(dir, &rec)?;
                return Ok(());
            }
        };
        let pid = pid.as_raw_nonzero().get();
        if pid == runc_pid {
            if status.exit_status() != Some(0) {
                return Err(runc_error(&runc_log)
                    .unwrap_or_else(|| format!("runc create failed ({status:?}) for {}", cfg.id)));
            }
            let p = state::read_pid(&dir.join(state::INIT_PID))
                .ok_or("runc create wrote no pid file")?;
            init = Some(p);
            report("ok");
            continue;
        }
        if Some(pid) != init {
            continue;
        }
        let (exit_code, signal) = match (status.exit_status(), status.terminating_signal()) {
            (Some(code), _) => (code, None),
            (None, Some(sig)) => (128 + sig, Some(sig)),
            (None, None) => (255, None),
        };
        // Read before anyone runs `runc delete`, which removes the cgroup.
        let oom_killed = state::oom_kills(&cfg.cgroup_path) > 0;
        let finished_at_ns = state::now_ns();
        let deadline = std::time::Instant::now() + LOG_DRAIN;
        for _ in 0..2 {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            if done_rx.recv_timeout(left).is_err() {
                break;
            }
        }
        let rec = ExitRecord {
            exit_code,
            signal,
            oom_killed,
            finished_at_ns,
            note: None,
        };
        write_exit(dir, &rec)?;
        return Ok(());
    }
}

fn write_exit(dir: &Path, rec: &ExitRecord) -> Result<(), String> {
    let data = serde_json::to_vec(rec).map_err(|e| e.to_string())?;
    state::write_atomic(&dir.join(state::EXIT), &data).map_err(|e| format!("writing exit: {e}"))
}

/// The last error runc logged (`--log-format json`: one object per line with `level`, `msg`).
pub(crate) fn runc_error(log: &Path) -> Option<String> {
    let text = std::fs::read_to_string(log).ok()?;
    text.lines().rev().find_map(|l| {
        let v: serde_json::Value = serde_json::from_str(l).ok()?;
        matches!(v["level"].as_str(), Some("error" | "fatal"))
            .then(|| v["msg"].as_str().map(str::to_string))?
    })
}

/// The container log with size-based rotation like the kubelet's (`containerLogMaxSize`,
/// `containerLogMaxFiles`): the full file becomes `container.log.1`, older ones shift up,
/// and the oldest beyond the limit is deleted. Readers follow the current file.
struct LogFile {
    path: PathBuf,
    file: File,
    size: u64,
    max_bytes: Option<u64>,
    /// Files kept in all, the current one included.
    max_files: u32,
}

impl LogFile {
    fn open(path: PathBuf, max_bytes: Option<u64>, max_files: u32) -> std::io::Result<Self> {
        let file = OpenOptions::new().create(true).append(true).open(&path)?;
        let size = file.metadata()?.len();
        Ok(LogFile {
            path,
            file,
            size,
            max_bytes,
            max_files: max_files.max(1),
        })
    }

    fn rotated(&self, n: u32) -> PathBuf {
        let mut name = self.path.clone().into_os_string();
        name.push(format!(".{n}"));
        PathBuf::from(name)
    }

    fn write(&mut self, record: &[u8]) {
        if let Some(max) = self.max_bytes
            && self.size > 0
            && self.size + record.len() as u64 > max
        {
            let _ = self.rotate();
        }
        // A full disk must not kill the container; the output is lost, as with the kubelet.
        if self.file.write_all(record).is_ok() {
            self.size += record.len() as u64;
        }
    }

    fn rotate(&mut self) -> std::io::Result<()> {
        if self.max_files == 1 {
            self.file.set_len(0)?;
            self.size = 0;
            return Ok(());
        }
        let _ = std::fs::remove_file(self.rotated(self.max_files - 1));
        for n in (1..self.max_files - 1).rev() {
            let _ = std::fs::rename(self.rotated(n), self.rotated(n + 1));
        }
        std::fs::rename(&self.path, self.rotated(1))?;
        *self = LogFile::open(self.path.clone(), self.max_bytes, self.max_files)?;
        Ok(())
    }
}

/// Copies one output stream into the log, one CRI record per line (blocking twin of
/// [`crate::logs`]' async pump).
fn pump(reader: impl Read, stream: Stream, log: &Mutex<LogFile>) {
    let mut reader = BufReader::new(reader);
    let mut buf = Vec::new();
    loop {
        buf.clear();
        match (&mut reader)
            .take(MAX_RECORD as u64)
            .read_until(b'\n', &mut buf)
        {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
        let (text, partial) = match buf.strip_suffix(b"\n") {
            Some(text) => (text, false),
            None => (&buf[..], buf.len() == MAX_RECORD),
        };
        let record = format_record(chrono::Utc::now(), stream, partial, text);
        log.lock().unwrap_or_else(|p| p.into_inner()).write(&record);
    }
}

/// The shim's command line for a container directory.
pub(crate) fn command(shim: &Path, shim_args: &[OsString], dir: &Path) -> Command {
    let mut cmd = Command::new(shim);
    cmd.args(shim_args).arg(dir);
    cmd
}

/// Default shim: this executable's `shim` subcommand (how the `skiff` binary runs it).
pub(crate) fn default_shim() -> (PathBuf, Vec<OsString>) {
    let exe = std::env::current_exe().unwrap_or_else(|_| PathBuf::from("skiff"));
    (exe, vec![OsString::from("shim")])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pump_writes_cri_records() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("log");
        let log = Mutex::new(LogFile::open(path.clone(), None, 5).expect("log"));
        pump(&b"one\ntwo"[..], Stream::Stderr, &log);
        let text = std::fs::read_to_string(&path).expect("read");
        let recs: Vec<(Stream, bool, String)> = text
            .lines()
            .map(|l| crate::logs::parse_record(l).expect("record"))
            .map(|r| (r.stream, r.partial, r.text))
            .collect();
        assert_eq!(
            recs,
            [
                (Stream::Stderr, false, "one".to_string()),
                (Stream::Stderr, false, "two".to_string())
            ]
        );
    }

    #[test]
    fn logs_rotate_by_size_keeping_max_files() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("container.log");
        let mut log = LogFile::open(path.clone(), Some(100), 3).expect("log");
        for i in 0..10u8 {
            // 40-byte records: two fit in 100 bytes, the third rotates.
            log.write(&[b'0' + i; 40]);
        }
        let read = |p: &Path| std::fs::read(p).unwrap_or_default();
        assert_eq!(read(&path), [[b'8'; 40], [b'9'; 40]].concat());
        assert_eq!(read(&log.rotated(1)), [[b'6'; 40], [b'7'; 40]].concat());
        assert_eq!(read(&log.rotated(2)), [[b'4'; 40], [b'5'; 40]].concat());
        assert!(!log.rotated(3).exists(), "more files kept than allowed");
        // A record larger than the limit still gets written, alone.
        log.write(&[b'x'; 150]);
        assert_eq!(read(&path).len(), 150);

        let mut single = LogFile::open(dir.path().join("one.log"), Some(50), 1).expect("log");
        single.write(&[b'a'; 40]);
        single.write(&[b'b'; 40]);
        assert_eq!(read(&dir.path().join("one.log")), [b'b'; 40]);
    }

    #[test]
    fn runc_errors_are_read_from_its_json_log() {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = dir.path().join("runc.log");
        std::fs::write(
            &p,
            "{\"level\":\"info\",\"msg\":\"x\"}\nnot json\n{\"level\":\"error\",\"msg\":\"exec: \\\"nope\\\": not found\"}\n",
        )
        .expect("write");
        assert_eq!(runc_error(&p).as_deref(), Some("exec: \"nope\": not found"));
        assert_eq!(runc_error(&dir.path().join("missing")), None);
    }
}
