//! The conformance suite every `Runtime` must pass (start, running, exit codes, stop
//! escalation, logs, removal, listing; bind mounts, OOM kills and exec where the runtime's
//! capabilities say so), shared by the `process` and `oci` runtimes.
//!
//! Commands run `busybox` by absolute path, so the same suite works on the host (`process`)
//! and inside an image holding `/bin/busybox` (see [`crate::testimages::TestImage::busybox`]).
//!
//! With isolation the main process is PID 1 of its namespace, and the kernel drops signals
//! PID 1 has no handler for (SIGKILL aside) — as in Kubernetes, where `sleep` as PID 1 only
//! dies at the end of the grace period. So the SIGTERM checks trap TERM there.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::logs::{LogRecord, Stream, parse_record};
use crate::runtime::{
    ContainerSpec, ContainerState, ExecSpec, Mount, Runtime, RuntimeError, SIGKILL, SIGTERM,
};

/// Lists what a removed container left on the host (mounts, cgroups, runtime state); the
/// suite asserts it is empty after `remove`.
pub type LeftoverCheck = Arc<dyn Fn(&str) -> Vec<String> + Send + Sync>;

/// What the suite needs from the environment a runtime runs containers in.
#[derive(Clone)]
pub struct Fixture {
    /// Image to run (ignored by runtimes without isolation).
    pub image: String,
    /// Absolute path of busybox inside the container.
    pub busybox: String,
    /// A real (non-symlink) directory inside the container, used as working dir.
    pub working_dir: String,
    /// Prefix for container ids so suites can share a runtime.
    pub id_prefix: String,
    /// Runtime-specific check that a removed container left nothing behind.
    pub leftovers: Option<LeftoverCheck>,
}

impl std::fmt::Debug for Fixture {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Fixture")
            .field("image", &self.image)
            .field("busybox", &self.busybox)
            .field("working_dir", &self.working_dir)
            .field("id_prefix", &self.id_prefix)
            .field("leftovers", &self.leftovers.is_some())
            .finish()
    }
}

impl Fixture {
    /// For runtimes that run on the host (Debian's `busybox-static` provides `/bin/busybox`).
    pub fn host() -> Self {
        Fixture {
            image: String::new(),
            busybox: "/bin/busybox".into(),
            working_dir: "/tmp".into(),
            id_prefix: "conf".into(),
            leftovers: None,
        }
    }

    /// A script whose main process ends on SIGTERM (by the signal where it can, else by a
    /// trap exiting 143 — see the module docs), after logging `ready`; and the exit code
    /// and signal `rt` must then report.
    fn sigterm_script(&self, rt: &dyn Runtime) -> (String, (Option<i32>, Option<i32>)) {
        if rt.capabilities().isolation {
            (
                format!(
                    "trap 'exit 143' TERM; echo ready; {} sleep 1000 & wait",
                    self.busybox
                ),
                (Some(128 + SIGTERM), None),
            )
        } else {
            (
                format!("echo ready; exec {} sleep 1000", self.busybox),
                (Some(128 + SIGTERM), Some(SIGTERM)),
            )
        }
    }

    fn assert_no_leftovers(&self, id: &str) {
        if let Some(check) = &self.leftovers {
            let left = check(id);
            assert!(left.is_empty(), "{id} left behind: {left:?}");
        }
    }

    fn spec(&self, name: &str, script: &str) -> ContainerSpec {
        ContainerSpec {
            id: format!("{}-{name}", self.id_prefix),
            image: self.image.clone(),
            command: vec![self.busybox.clone(), "sh".into(), "-c".into()],
            args: vec![script.to_string()],
            ..ContainerSpec::default()
        }
    }
}

/// Runs every check; panics with the first failure (it is a test suite).
pub async fn run_all(rt: &dyn Runtime, fx: &Fixture) {
    lifecycle_and_sigterm(rt, fx).await;
    exit_code_propagates(rt, fx).await;
    stop_escalates_to_sigkill(rt, fx).await;
    logs_env_and_working_dir(rt, fx).await;
    remove_cleans_up(rt, fx).await;
    errors_are_typed(rt, fx).await;
    list_returns_containers(rt, fx).await;
    if rt.capabilities().isolation {
        bind_mounts_and_read_only(rt, fx).await;
    }
    if rt.capabilities().cgroups {
        memory_limit_oom_kills(rt, fx).await;
    }
    if rt.capabilities().exec {
        exec_runs_in_the_container(rt, fx).await;
    }
}

/// Polls the log until it contains `needle`: the only way to know a shell has installed
/// its traps without a fixed sleep.
pub async fn wait_for_log(rt: &dyn Runtime, id: &str, needle: &str) {
    let path = rt.log_path(id).expect("log path");
    let needle = format!(" {needle}");
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if read(&path).lines().any(|l| l.ends_with(&needle)) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{needle:?} never logged by {id}: {:?}",
            read(&path)
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}

pub async fn lifecycle_and_sigterm(rt: &dyn Runtime, fx: &Fixture) {
    let (script, want) = fx.sigterm_script(rt);
    let spec = fx.spec("lifecycle", &script);
    rt.create(&spec).await.expect("create");
    let st = rt.status(&spec.id).await.expect("status");
    assert_eq!(
        (st.state, st.pid, st.exit_code),
        (ContainerState::Created, None, None)
    );
    rt.start(&spec.id).await.expect("start");
    let st = rt.status(&spec.id).await.expect("status");
    assert_eq!(st.state, ContainerState::Running);
    assert!(st.pid.is_some_and(|p| p > 0), "running without pid: {st:?}");
    assert!(
        st.started_at.is_some() && st.finished_at.is_none(),
        "{st:?}"
    );
    wait_for_log(rt, &spec.id, "ready").await;
    rt.kill(&spec.id, SIGTERM).await.expect("kill");
    let st = rt.wait(&spec.id).await.expect("wait");
    assert_eq!(st.state, ContainerState::Exited);
    assert_eq!((st.exit_code, st.signal), want);
    assert_eq!(st.pid, None);
    assert!(!st.oom_killed);
    assert!(
        st.finished_at.is_some() && st.started_at <= st.finished_at,
        "{st:?}"
    );
    rt.remove(&spec.id).await.expect("remove");
}

pub async fn exit_code_propagates(rt: &dyn Runtime, fx: &Fixture) {
    for code in [0, 3, 255] {
        let spec = fx.spec(&format!("exit{code}"), &format!("exit {code}"));
        rt.create(&spec).await.expect("create");
        rt.start(&spec.id).await.expect("start");
        let st = rt.wait(&spec.id).await.expect("wait");
        assert_eq!(
            (st.state, st.exit_code, st.signal),
            (ContainerState::Exited, Some(code), None)
        );
        // Waiting again returns the same final status.
        assert_eq!(rt.wait(&spec.id).await.expect("wait again"), st);
        rt.remove(&spec.id).await.expect("remove");
    }
}

pub async fn stop_escalates_to_sigkill(rt: &dyn Runtime, fx: &Fixture) {
    // An ignored SIGTERM is inherited by the loop's children, so only SIGKILL ends it.
    let script = format!(
        "trap '' TERM; echo ready; while true; do {} sleep 1; done",
        fx.busybox
    );
    let spec = fx.spec("stubborn", &script);
    rt.create(&spec).await.expect("create");
    rt.start(&spec.id).await.expect("start");
    wait_for_log(rt, &spec.id, "ready").await;
    let st = rt
        .stop(&spec.id, Duration::from_millis(300))
        .await
        .expect("stop");
    assert_eq!(
        (st.exit_code, st.signal),
        (Some(128 + SIGKILL), Some(SIGKILL))
    );
    rt.remove(&spec.id).await.expect("remove");

    // A process that honours SIGTERM is not killed.
    let (script, want) = fx.sigterm_script(rt);
    let spec = fx.spec("polite", &script);
    rt.create(&spec).await.expect("create");
    rt.start(&spec.id).await.expect("start");
    wait_for_log(rt, &spec.id, "ready").await;
    let st = rt
        .stop(&spec.id, Duration::from_secs(30))
        .await
        .expect("stop");
    assert_eq!((st.exit_code, st.signal), want);
    // Stopping an exited container is a no-op.
    assert_eq!(
        rt.stop(&spec.id, Duration::from_secs(1))
            .await
            .expect("stop again"),
        st
    );
    rt.remove(&spec.id).await.expect("remove");
}

pub async fn logs_env_and_working_dir(rt: &dyn Runtime, fx: &Fixture) {
    let mut spec = fx.spec(
        "logs",
        "echo to-stdout; echo to-stderr >&2; echo \"greeting=$GREETING\"; pwd",
    );
    spec.env = vec![("GREETING".into(), "hello world".into())];
    spec.working_dir = Some(fx.working_dir.clone());
    rt.create(&spec).await.expect("create");
    rt.start(&spec.id).await.expect("start");
    let st = rt.wait(&spec.id).await.expect("wait");
    assert_eq!(st.exit_code, Some(0));
    let log = read(&rt.log_path(&spec.id).expect("log path"));
    let records: Vec<LogRecord> = log
        .lines()
        .map(|l| parse_record(l).unwrap_or_else(|| panic!("not a CRI log record: {l:?}")))
        .collect();
    let got: Vec<(Stream, &str)> = records
        .iter()
        .map(|r| (r.stream, r.text.as_str()))
        .collect();
    for want in [
        (Stream::Stdout, "to-stdout"),
        (Stream::Stderr, "to-stderr"),
        (Stream::Stdout, "greeting=hello world"),
        (Stream::Stdout, fx.working_dir.as_str()),
    ] {
        assert!(got.contains(&want), "{want:?} missing from log {log:?}");
    }
    assert!(records.iter().all(|r| !r.partial));
    rt.remove(&spec.id).await.expect("remove");
}

pub async fn remove_cleans_up(rt: &dyn Runtime, fx: &Fixture) {
    let spec = fx.spec("remove", "echo bye");
    rt.create(&spec).await.expect("create");
    rt.start(&spec.id).await.expect("start");
    rt.wait(&spec.id).await.expect("wait");
    let log = rt.log_path(&spec.id).expect("log path");
    assert!(log.exists());
    rt.remove(&spec.id).await.expect("remove");
    assert!(!log.exists(), "log survived remove");
    fx.assert_no_leftovers(&spec.id);
    assert!(matches!(
        rt.status(&spec.id).await,
        Err(RuntimeError::NotFound(_))
    ));

    // Removing a running container kills it.
    let spec = fx.spec("remove-running", &format!("exec {} sleep 1000", fx.busybox));
    rt.create(&spec).await.expect("create");
    rt.start(&spec.id).await.expect("start");
    let pid = rt.status(&spec.id).await.expect("status").pid.expect("pid");
    rt.remove(&spec.id).await.expect("remove running");
    assert!(matches!(
        rt.status(&spec.id).await,
        Err(RuntimeError::NotFound(_))
    ));
    let pid = rustix::process::Pid::from_raw(pid as i32).expect("pid");
    assert!(
        rustix::process::test_kill_process(pid).is_err(),
        "process survived remove"
    );
    fx.assert_no_leftovers(&spec.id);
    // The id can be reused.
    rt.create(&spec).await.expect("re-create");
    rt.remove(&spec.id).await.expect("remove created");
    fx.assert_no_leftovers(&spec.id);
}

pub async fn errors_are_typed(rt: &dyn Runtime, fx: &Fixture) {
    assert!(matches!(
        rt.start("no-such").await,
        Err(RuntimeError::NotFound(_))
    ));
    assert!(matches!(
        rt.kill("no-such", SIGTERM).await,
        Err(RuntimeError::NotFound(_))
    ));
    let spec = fx.spec("errors", "exit 0");
    rt.create(&spec).await.expect("create");
    assert!(matches!(
        rt.create(&spec).await,
        Err(RuntimeError::AlreadyExists(_))
    ));
    rt.start(&spec.id).await.expect("start");
    rt.wait(&spec.id).await.expect("wait");
    assert!(matches!(
        rt.start(&spec.id).await,
        Err(RuntimeError::InvalidState { .. })
    ));
    rt.remove(&spec.id).await.expect("remove");
    let mut bad = fx.spec("x", "exit 0");
    bad.id = "../escape".into();
    assert!(matches!(
        rt.create(&bad).await,
        Err(RuntimeError::InvalidSpec(_))
    ));
}

pub async fn list_returns_containers(rt: &dyn Runtime, fx: &Fixture) {
    let created = fx.spec("list-created", "exit 0");
    let exited = fx.spec("list-exited", "exit 4");
    rt.create(&created).await.expect("create");
    rt.create(&exited).await.expect("create");
    rt.start(&exited.id).await.expect("start");
    rt.wait(&exited.id).await.expect("wait");
    let all = rt.list().await.expect("list");
    let find = |id: &str| all.iter().find(|s| s.id == id).cloned();
    let c = find(&created.id).expect("created container listed");
    assert_eq!((c.state, c.exit_code), (ContainerState::Created, None));
    let e = find(&exited.id).expect("exited container listed");
    assert_eq!((e.state, e.exit_code), (ContainerState::Exited, Some(4)));
    rt.remove(&created.id).await.expect("remove");
    rt.remove(&exited.id).await.expect("remove");
    let all = rt.list().await.expect("list");
    assert!(
        !all.iter().any(|s| s.id == created.id || s.id == exited.id),
        "removed containers still listed: {all:?}"
    );
}

/// A host directory for one check, removed on drop.
struct HostDir(PathBuf);

impl HostDir {
    fn new(fx: &Fixture, name: &str) -> Self {
        let dir = std::env::temp_dir().join(format!(
            "skiff-conformance-{}-{name}-{:08x}",
            fx.id_prefix,
            rand::random::<u32>()
        ));
        std::fs::create_dir_all(&dir).expect("host dir");
        HostDir(dir)
    }
}

impl Drop for HostDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Runs a script to completion and returns its exit status and output lines.
async fn run_to_exit(
    rt: &dyn Runtime,
    spec: &ContainerSpec,
) -> (crate::runtime::ContainerStatus, Vec<String>) {
    rt.create(spec).await.expect("create");
    rt.start(&spec.id).await.expect("start");
    let st = rt.wait(&spec.id).await.expect("wait");
    let log = read(&rt.log_path(&spec.id).expect("log path"));
    let lines = log
        .lines()
        .filter_map(parse_record)
        .map(|r| r.text)
        .collect();
    rt.remove(&spec.id).await.expect("remove");
    (st, lines)
}

pub async fn bind_mounts_and_read_only(rt: &dyn Runtime, fx: &Fixture) {
    let rw = HostDir::new(fx, "rw");
    let ro = HostDir::new(fx, "ro");
    std::fs::write(rw.0.join("hello"), "from-rw").expect("write");
    std::fs::write(ro.0.join("hello"), "from-ro").expect("write");
    let bb = &fx.busybox;
    let mut spec = fx.spec(
        "mounts",
        &format!(
            "{bb} cat /data/hello; echo; {bb} cat /config/hello; echo; \
             echo written > /data/out && echo rw-ok; \
             if echo x > /config/x; then echo ro-writable; else echo ro-refused; fi; \
             echo \"env=$MODE\"; pwd"
        ),
    );
    spec.env = vec![("MODE".into(), "mounted".into())];
    spec.working_dir = Some("/data".into());
    spec.mounts = vec![
        Mount {
            source: rw.0.clone(),
            destination: "/data".into(),
            read_only: false,
        },
        Mount {
            source: ro.0.clone(),
            destination: "/config".into(),
            read_only: true,
        },
    ];
    let (st, lines) = run_to_exit(rt, &spec).await;
    assert_eq!(st.exit_code, Some(0), "{lines:?}");
    for want in [
        "from-rw",
        "from-ro",
        "rw-ok",
        "ro-refused",
        "env=mounted",
        "/data",
    ] {
        assert!(lines.iter().any(|l| l == want), "{want:?} not in {lines:?}");
    }
    assert_eq!(
        std::fs::read_to_string(rw.0.join("out")).expect("written through the mount"),
        "written\n"
    );
    assert!(!ro.0.join("x").exists(), "read-only mount was written");
}

pub async fn memory_limit_oom_kills(rt: &dyn Runtime, fx: &Fixture) {
    // `tail` keeps the last lines; 300 MiB without a newline is one line it must hold.
    let bb = &fx.busybox;
    let mut spec = fx.spec(
        "oom",
        &format!("{bb} head -c 300m /dev/zero | {bb} tail > /dev/null"),
    );
    spec.resources.memory_limit = Some(32 << 20);
    let (st, lines) = run_to_exit(rt, &spec).await;
    assert_eq!(st.exit_code, Some(137), "{st:?} {lines:?}");
    assert!(st.oom_killed, "not reported as OOMKilled: {st:?}");
    fx.assert_no_leftovers(&spec.id);

    // The same work without a limit is not OOM-killed.
    let mut spec = fx.spec(
        "no-oom",
        &format!("{bb} head -c 1m /dev/zero | {bb} tail > /dev/null"),
    );
    spec.resources.memory_limit = Some(32 << 20);
    let (st, _) = run_to_exit(rt, &spec).await;
    assert_eq!((st.exit_code, st.oom_killed), (Some(0), false));
}

async fn read_all(r: &mut crate::runtime::BoxedReader) -> String {
    let mut buf = Vec::new();
    r.read_to_end(&mut buf).await.expect("read exec output");
    String::from_utf8_lossy(&buf).into_owned()
}

pub async fn exec_runs_in_the_container(rt: &dyn Runtime, fx: &Fixture) {
    let (script, _) = fx.sigterm_script(rt);
    let mut spec = fx.spec("exec", &script);
    spec.env = vec![("FROM_SPEC".into(), "yes".into())];
    rt.create(&spec).await.expect("create");
    let not_running = rt
        .exec(
            &spec.id,
            &ExecSpec {
                command: vec![fx.busybox.clone(), "true".into()],
                ..ExecSpec::default()
            },
        )
        .await;
    assert!(
        matches!(not_running, Err(RuntimeError::InvalidState { .. })),
        "exec in a created container"
    );
    rt.start(&spec.id).await.expect("start");
    wait_for_log(rt, &spec.id, "ready").await;

    let bb = &fx.busybox;
    let mut p = rt
        .exec(
            &spec.id,
            &ExecSpec {
                command: vec![
                    bb.clone(),
                    "sh".into(),
                    "-c".into(),
                    "echo out-$FROM_SPEC; echo err >&2; exit 7".into(),
                ],
                ..ExecSpec::default()
            },
        )
        .await
        .expect("exec");
    assert!(p.stdin.is_none());
    let out = read_all(&mut p.stdout).await;
    let err = read_all(p.stderr.as_mut().expect("stderr")).await;
    assert_eq!((out.as_str(), err.as_str()), ("out-yes\n", "err\n"));
    assert_eq!(p.exit.await.expect("exit"), 7);

    // stdin reaches the command; the exec sees the container's filesystem, not the host's.
    let marker = format!("/tmp/exec-marker-{:08x}", rand::random::<u32>());
    let mut p = rt
        .exec(
            &spec.id,
            &ExecSpec {
                command: vec![
                    bb.clone(),
                    "sh".into(),
                    "-c".into(),
                    format!("{bb} cat > {marker}; {bb} cat {marker}"),
                ],
                stdin: true,
                ..ExecSpec::default()
            },
        )
        .await
        .expect("exec with stdin");
    let mut stdin = p.stdin.take().expect("stdin");
    stdin.write_all(b"ping\n").await.expect("write stdin");
    stdin.shutdown().await.expect("close stdin");
    drop(stdin);
    assert_eq!(read_all(&mut p.stdout).await, "ping\n");
    assert_eq!(p.exit.await.expect("exit"), 0);
    if rt.capabilities().isolation {
        assert!(!Path::new(&marker).exists(), "exec wrote to the host");
    }
    let _ = std::fs::remove_file(&marker);

    // A command killed by a signal reports 128+signal.
    let p = rt
        .exec(
            &spec.id,
            &ExecSpec {
                command: vec![bb.clone(), "sh".into(), "-c".into(), "kill -9 $$".into()],
                ..ExecSpec::default()
            },
        )
        .await
        .expect("exec");
    assert_eq!(p.exit.await.expect("exit"), 128 + SIGKILL);

    rt.remove(&spec.id).await.expect("remove");
    fx.assert_no_leftovers(&spec.id);
}
